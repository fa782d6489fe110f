//! `/v1/accounts…` and `/v1/ledger/summary`.

use std::collections::HashMap;

use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::StatusCode;
use axum::Json;
use ledger::{
    AccountId, AccountKind, Answer, Command, Currency, NewAccount, Outcome, Query, ShardId, Summary,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::json::ApiJson;
use super::App;
use crate::limits::{ACCOUNTS_PAGE_MAX, STATEMENT_LIMIT_DEFAULT, STATEMENT_LIMIT_MAX};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAccountBody {
    id: String,
    kind: String,
    name: String,
    currency: Option<String>,
}

pub fn parse_account_id(text: &str) -> Result<AccountId, ApiError> {
    AccountId::parse(text)
        .map_err(|e| ApiError::new("invalid_account_id", format!("{text:?}: {e}")))
}

pub fn parse_currency(text: Option<&str>, default: Currency) -> Result<Currency, ApiError> {
    match text {
        None => Ok(default),
        Some(text) => {
            Currency::parse(text).map_err(|e| ApiError::new("invalid_currency", e.to_string()))
        }
    }
}

fn parse_limit(
    params: &HashMap<String, String>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    let Some(text) = params.get("limit") else {
        return Ok(default);
    };
    match text.parse::<usize>() {
        Ok(limit) if (1..=max).contains(&limit) => Ok(limit),
        _ => Err(ApiError::new(
            "invalid_request",
            format!("limit must be an integer from 1 to {max}"),
        )),
    }
}

pub async fn create(
    State(app): State<App>,
    ApiJson(body): ApiJson<CreateAccountBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = parse_account_id(&body.id)?;
    let kind = match body.kind.as_str() {
        "customer" => AccountKind::Customer,
        "merchant" => AccountKind::Merchant,
        "agent" => AccountKind::Agent,
        _ => {
            return Err(ApiError::new(
                "invalid_request",
                "kind must be customer, merchant or agent",
            ))
        }
    };
    if body.name.len() > ledger::limits::TEXT_BYTES_MAX {
        return Err(ApiError::new("invalid_request", "name is too long"));
    }
    let currency = parse_currency(body.currency.as_deref(), app.currency)?;
    let shard = app.shards.shard_of(&id);
    let new = NewAccount {
        id,
        kind,
        name: body.name,
        currency,
    };
    match app.shards.write(shard, Command::CreateAccount(new)).await? {
        Outcome::Account(Ok(view)) => Ok((StatusCode::CREATED, Json(json!(view)))),
        Outcome::Account(Err(code)) => Err(ApiError::from_code(code)),
        other => Err(ApiError::new(
            "internal",
            format!("unexpected outcome {other:?}"),
        )),
    }
}

pub async fn get(State(app): State<App>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = parse_account_id(&id)?;
    let shard = app.shards.shard_of(&id);
    match app.shards.read_at(shard, Query::Account(id)).await? {
        (Answer::Account(Some(view)), applied) => {
            // Extra fields beyond the contract: where in the shard's log this state stands.
            let mut body = json!(view);
            body["shard"] = json!(shard.0);
            body["log_index"] = json!(applied);
            Ok(Json(body))
        }
        (Answer::Account(None), _) => Err(ApiError::from_code(ledger::Code::AccountNotFound)),
        (other, _) => Err(ApiError::new(
            "internal",
            format!("unexpected answer {other:?}"),
        )),
    }
}

pub async fn statement(
    State(app): State<App>,
    Path(id): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_account_id(&id)?;
    let limit = parse_limit(&params, STATEMENT_LIMIT_DEFAULT, STATEMENT_LIMIT_MAX)?;
    match app
        .shards
        .read(app.shards.shard_of(&id), Query::Statement { id, limit })
        .await?
    {
        Answer::Statement(Some(entries)) => Ok(Json(json!({ "entries": entries }))),
        Answer::Statement(None) => Err(ApiError::from_code(ledger::Code::AccountNotFound)),
        other => Err(ApiError::new(
            "internal",
            format!("unexpected answer {other:?}"),
        )),
    }
}

/// Shards that stand for each Raft group: one representative shard per group.
fn group_shards(app: &App) -> Vec<ShardId> {
    let groups = u32::try_from(app.shards.groups().len()).expect("group count fits u32");
    (0..groups).map(ShardId).collect()
}

/// All accounts in id order, a page at a time, merged over every group.
pub async fn list(
    State(app): State<App>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let limit = parse_limit(&params, ACCOUNTS_PAGE_MAX, ACCOUNTS_PAGE_MAX)?;
    let after = params
        .get("after")
        .map(|text| parse_account_id(text))
        .transpose()?;
    let mut accounts = Vec::new();
    for shard in group_shards(&app) {
        match app
            .shards
            .read(
                shard,
                Query::Accounts {
                    after: after.clone(),
                    limit,
                },
            )
            .await?
        {
            Answer::Accounts(page) => accounts.extend(page),
            other => {
                return Err(ApiError::new(
                    "internal",
                    format!("unexpected answer {other:?}"),
                ))
            }
        }
    }
    accounts.sort_by(|a, b| a.id.cmp(&b.id));
    accounts.truncate(limit);
    let next = if accounts.len() == limit {
        accounts.last().map(|a| a.id.to_string())
    } else {
        None
    };
    Ok(Json(json!({ "accounts": accounts, "next": next })))
}

/// Totals over every group; `balance_sum` is 0 whenever the ledger is right.
pub async fn summary(State(app): State<App>) -> Result<Json<Value>, ApiError> {
    let mut total = Summary {
        accounts: 0,
        transfers: 0,
        pending: 0,
        balance_sum: 0,
        float_balance: 0,
        fees_balance: 0,
    };
    for shard in group_shards(&app) {
        let Answer::Summary(part) = app.shards.read(shard, Query::Summary).await? else {
            return Err(ApiError::new(
                "internal",
                "unexpected answer to a summary query",
            ));
        };
        total.accounts = total.accounts.saturating_add(part.accounts);
        total.transfers = total.transfers.saturating_add(part.transfers);
        total.pending = total.pending.saturating_add(part.pending);
        total.balance_sum = total.balance_sum.saturating_add(part.balance_sum);
        total.float_balance = total.float_balance.saturating_add(part.float_balance);
        total.fees_balance = total.fees_balance.saturating_add(part.fees_balance);
    }
    Ok(Json(json!(total)))
}

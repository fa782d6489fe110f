//! `/v1/accounts…` and `/v1/ledger/summary`.

use std::collections::HashMap;

use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::StatusCode;
use axum::Json;
use ledger::{
    AccountId, AccountKind, AccountView, Answer, Command, Currency, NewAccount, Outcome, Query,
    ShardId, Summary,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::json::ApiJson;
use super::App;
use crate::limits::{ACCOUNTS_PAGE_MAX, BATCH_MAX, STATEMENT_LIMIT_DEFAULT, STATEMENT_LIMIT_MAX};

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

/// Checks a body into the account it opens (nothing is written when it fails).
fn new_account(app: &App, body: CreateAccountBody) -> Result<NewAccount, ApiError> {
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
    Ok(NewAccount {
        id,
        kind,
        name: body.name,
        currency,
    })
}

pub async fn create(
    State(app): State<App>,
    ApiJson(body): ApiJson<CreateAccountBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let new = new_account(&app, body)?;
    let shard = app.shards.shard_of(&new.id);
    match app.shards.write(shard, Command::CreateAccount(new)).await? {
        Outcome::Account(Ok(view)) => Ok((StatusCode::CREATED, Json(json!(view)))),
        Outcome::Account(Err(code)) => Err(ApiError::from_code(code)),
        other => Err(ApiError::new(
            "internal",
            format!("unexpected outcome {other:?}"),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAccountsBody {
    accounts: Vec<Value>,
}

/// `POST /v1/accounts/batch`: opens up to `BATCH_MAX` accounts (a subscriber base moving in).
/// Each item is checked and answered on its own, in order, exactly as `POST /v1/accounts`
/// would answer it (the account's view, or `{"error":…}`); the valid ones go out as one
/// `Command::Many` per shard, the shards written concurrently. A shard that does not answer
/// fails its items with `unavailable` (opening is idempotent per id: a retry of the whole
/// batch answers `account_exists` for the ones that landed).
pub async fn create_many(
    State(app): State<App>,
    ApiJson(body): ApiJson<CreateAccountsBody>,
) -> Result<Json<Value>, ApiError> {
    use std::collections::BTreeMap;
    if body.accounts.len() > BATCH_MAX {
        return Err(ApiError::new(
            "batch_too_large",
            format!("a batch opens at most {BATCH_MAX} accounts"),
        ));
    }
    let mut results: Vec<Value> = vec![Value::Null; body.accounts.len()];
    let mut by_shard: BTreeMap<ShardId, (Vec<usize>, Vec<Command>)> = BTreeMap::new();
    for (index, item) in body.accounts.into_iter().enumerate() {
        let checked = serde_json::from_value::<CreateAccountBody>(item)
            .map_err(|e| ApiError::new("invalid_request", e.to_string()))
            .and_then(|body| new_account(&app, body));
        match checked {
            Ok(new) => {
                let (indexes, commands) = by_shard.entry(app.shards.shard_of(&new.id)).or_default();
                indexes.push(index);
                commands.push(Command::CreateAccount(new));
            }
            Err(error) => results[index] = error.body(),
        }
    }
    let writes = by_shard.into_iter().map(|(shard, (indexes, commands))| {
        let app = app.clone();
        async move {
            let count = commands.len();
            let outcome = app.shards.write(shard, Command::Many(commands)).await;
            let answers: Vec<Value> = match outcome {
                Ok(Outcome::Many(outcomes)) if outcomes.len() == count => outcomes
                    .into_iter()
                    .map(|outcome| match outcome {
                        Outcome::Account(Ok(view)) => json!(view),
                        Outcome::Account(Err(code)) => ApiError::from_code(code).body(),
                        other => ApiError::new("internal", format!("unexpected outcome {other:?}"))
                            .body(),
                    })
                    .collect(),
                Ok(other) => {
                    let error =
                        ApiError::new("internal", format!("unexpected outcome {other:?}")).body();
                    vec![error; count]
                }
                Err(error) => vec![ApiError::from(error).body(); count],
            };
            (indexes, answers)
        }
    });
    for (indexes, answers) in futures::future::join_all(writes).await {
        for (index, answer) in indexes.into_iter().zip(answers) {
            results[index] = answer;
        }
    }
    Ok(Json(json!({ "results": results })))
}

pub async fn get(State(app): State<App>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = parse_account_id(&id)?;
    if id.is_system() {
        return Ok(Json(json!(system_account(&app, &id).await?)));
    }
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

/// A system account as the sum of its slices on every shard (each read linearizably on its
/// shard; the sum is not one snapshot of the whole cluster, but each shard's part is exact).
async fn system_account(app: &App, id: &AccountId) -> Result<AccountView, ApiError> {
    let mut total: Option<AccountView> = None;
    for (shard, answer) in read_every_group(app, |_| Query::Account(id.clone())).await? {
        match answer {
            Answer::Account(Some(slice)) => match &mut total {
                Some(total) => total.add_slice(&slice),
                None => total = Some(slice),
            },
            Answer::Account(None) => {
                return Err(ApiError::new(
                    "internal",
                    format!("shard {} has no slice of {id}", shard.0),
                ))
            }
            other => return Err(unexpected(&other)),
        }
    }
    total.ok_or_else(|| ApiError::new("internal", "no shard answered"))
}

/// One linearizable read on every group, all at once; answers in group order.
pub(super) async fn read_every_group(
    app: &App,
    query: impl Fn(ShardId) -> Query,
) -> Result<Vec<(ShardId, Answer)>, ApiError> {
    let reads = group_shards(app).into_iter().map(|shard| {
        let query = query(shard);
        async move { (shard, app.shards.read(shard, query).await) }
    });
    futures::future::join_all(reads)
        .await
        .into_iter()
        .map(|(shard, answer)| Ok((shard, answer?)))
        .collect()
}

fn unexpected(answer: &Answer) -> ApiError {
    ApiError::new("internal", format!("unexpected answer {answer:?}"))
}

pub async fn statement(
    State(app): State<App>,
    Path(id): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_account_id(&id)?;
    let limit = parse_limit(&params, STATEMENT_LIMIT_DEFAULT, STATEMENT_LIMIT_MAX)?;
    if id.is_system() {
        // Every shard's slice has its own lines: merged newest first.
        let mut entries = Vec::new();
        let query = |_| Query::Statement {
            id: id.clone(),
            limit,
        };
        for (_, answer) in read_every_group(&app, query).await? {
            match answer {
                Answer::Statement(Some(part)) => entries.extend(part),
                other => return Err(unexpected(&other)),
            }
        }
        entries.sort_by(|a, b| b.at.cmp(&a.at));
        entries.truncate(limit);
        return Ok(Json(json!({ "entries": entries })));
    }
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
    // Below this id every shard's page is complete: the smallest last id of a full page.
    let mut complete_to: Option<AccountId> = None;
    for shard in group_shards(&app) {
        let query = Query::Accounts {
            after: after.clone(),
            limit,
        };
        match app.shards.read(shard, query).await? {
            Answer::Accounts(page) => {
                if page.len() == limit {
                    let last = page.last().map(|a| a.id.clone());
                    complete_to = complete_to.min(last.clone()).or(last);
                }
                accounts.extend(page);
            }
            other => return Err(unexpected(&other)),
        }
    }
    accounts.sort_by(|a, b| a.id.cmp(&b.id));
    // System accounts come once per shard: one line each, the sum of the slices.
    let mut merged: Vec<AccountView> = Vec::with_capacity(accounts.len());
    for account in accounts {
        match merged.last_mut() {
            Some(last) if last.id == account.id => last.add_slice(&account),
            _ => merged.push(account),
        }
    }
    if let Some(bound) = &complete_to {
        merged.retain(|a| a.id <= *bound);
    }
    let more = complete_to.is_some() || merged.len() > limit;
    merged.truncate(limit);
    let next = if more {
        merged.last().map(|a| a.id.to_string())
    } else {
        None
    };
    let accounts = merged;
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
        sagas_running: 0,
        legs_held: 0,
    };
    let parts = read_every_group(&app, |_| Query::Summary).await?;
    let groups = parts.len() as u64;
    for (_, answer) in parts {
        let Answer::Summary(part) = answer else {
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
        total.sagas_running = total.sagas_running.saturating_add(part.sagas_running);
        total.legs_held = total.legs_held.saturating_add(part.legs_held);
    }
    // Each shard counts its own slices of `float` and `fees`: the cluster has one of each.
    let extra_slices = 2 * groups.saturating_sub(1);
    total.accounts = total.accounts.saturating_sub(extra_slices);
    Ok(Json(json!(total)))
}

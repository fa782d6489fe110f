//! `/v1/transfers…`: single and batch transfers, lookups, post/void of pending transfers and
//! reversal (redress). Validation here is the first check; the ledger checks shape again.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use cluster::saga::{self, Route};
use ledger::limits::{AMOUNT_MAX, TEXT_BYTES_MAX, TIMEOUT_S_DEFAULT, TIMEOUT_S_MAX, TIMEOUT_S_MIN};
use ledger::{
    Answer, Command, Currency, Outcome, Query, ReversalRequest, Reverses, ShardId, TransferId,
    TransferKind, TransferStatus,
};
use ledger::{TransferOutcome, TransferRequest, TransferView};
use serde::Deserialize;
use serde_json::{json, Value};

use super::accounts::{parse_account_id, parse_currency};
use super::error::ApiError;
use super::json::ApiJson;
use super::App;
use crate::limits::{BATCH_MAX, BATCH_SAGAS_CONCURRENCY, SETTLE_ON_READ_MAX};
use crate::telemetry;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    id: String,
    kind: String,
    from: String,
    to: String,
    amount: Value,
    currency: Option<String>,
    memo: Option<String>,
    pending: Option<bool>,
    timeout_s: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    transfers: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReverseBody {
    id: String,
    reason: Option<String>,
}

fn parse_transfer_id(text: &str) -> Result<TransferId, ApiError> {
    TransferId::parse(text).map_err(|e| ApiError::new("invalid_transfer_id", e.to_string()))
}

fn parse_kind(text: &str) -> Result<TransferKind, ApiError> {
    TransferKind::CLIENT_KINDS
        .into_iter()
        .find(|kind| kind.as_str() == text)
        .ok_or_else(|| ApiError::new("invalid_kind", format!("unknown transfer kind {text:?}")))
}

fn parse_amount(value: &Value) -> Result<u64, ApiError> {
    match value.as_u64() {
        Some(amount) if amount > 0 && amount <= AMOUNT_MAX => Ok(amount),
        _ => Err(ApiError::new(
            "invalid_amount",
            format!("amount must be an integer from 1 to {AMOUNT_MAX} (minor units)"),
        )),
    }
}

/// Turns a body into a ledger request, or the error the client gets.
fn validate(body: TransferBody, default_currency: Currency) -> Result<TransferRequest, ApiError> {
    let id = parse_transfer_id(&body.id)?;
    let kind = parse_kind(&body.kind)?;
    let from = parse_account_id(&body.from)?;
    let to = parse_account_id(&body.to)?;
    let amount = parse_amount(&body.amount)?;
    let currency = parse_currency(body.currency.as_deref(), default_currency)?;
    let memo = body.memo.unwrap_or_default();
    if memo.len() > TEXT_BYTES_MAX {
        return Err(ApiError::new(
            "invalid_request",
            format!("memo is longer than {TEXT_BYTES_MAX} bytes"),
        ));
    }
    let timeout_s = body.timeout_s.unwrap_or(TIMEOUT_S_DEFAULT);
    if !(TIMEOUT_S_MIN..=TIMEOUT_S_MAX).contains(&timeout_s) {
        return Err(ApiError::new(
            "invalid_request",
            format!("timeout_s must be {TIMEOUT_S_MIN}..={TIMEOUT_S_MAX}"),
        ));
    }
    if from == to {
        return Err(ApiError::from_code(ledger::Code::SameAccount));
    }
    Ok(TransferRequest {
        id,
        kind,
        from,
        to,
        amount,
        currency,
        memo,
        pending: body.pending.unwrap_or(false),
        timeout_s,
    })
}

/// The status and body a transfer outcome answers. Beyond the contract, a recorded outcome says
/// where it was first applied: `shard`, `log_index`, `log_pos` (a retry gets the original).
fn answer(outcome: &TransferOutcome, shard: ShardId) -> (StatusCode, Value) {
    match outcome {
        TransferOutcome::Accepted(accepted) => {
            let mut body = json!(accepted);
            body["shard"] = json!(shard.0);
            (StatusCode::CREATED, body)
        }
        TransferOutcome::Rejected {
            id,
            code,
            log_index,
            log_pos,
        } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"id": id, "status": "rejected", "code": code,
                "shard": shard.0, "log_index": log_index, "log_pos": log_pos}),
        ),
        TransferOutcome::Refused { code, .. } => {
            let error = ApiError::from_code(*code);
            (error.status(), error.body())
        }
    }
}

fn outcome_label(outcome: &TransferOutcome) -> &'static str {
    match outcome {
        TransferOutcome::Accepted(a) => a.status.as_str(),
        TransferOutcome::Rejected { code, .. } | TransferOutcome::Refused { code, .. } => {
            code.as_str()
        }
    }
}

pub async fn create(
    State(app): State<App>,
    ApiJson(body): ApiJson<TransferBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request = validate(body, app.currency)?;
    let kind = request.kind;
    let route = sharded(&app, &request)?;
    let outcome = app.accounts.transfer(request).await?;
    telemetry::record_transfer(kind.as_str(), outcome_label(&outcome));
    let (status, body) = answer(&outcome, route.payer);
    Ok((status, Json(body)))
}

/// The transfer's route over the shards: local when the id, the payer and the payee live on
/// one shard, else a saga (pending transfers included: their post, void and expiry are saga
/// steps too).
fn sharded(app: &App, request: &TransferRequest) -> Result<Route, ApiError> {
    Ok(Route::of(request, app.shards.shard_count()))
}

/// Up to 8190 transfers; each item gets exactly the answer its single call would have got.
/// Valid items go to the ledger as one command per Raft group (one log entry, one fsync).
pub async fn batch(
    State(app): State<App>,
    ApiJson(body): ApiJson<BatchBody>,
) -> Result<Json<Value>, ApiError> {
    if body.transfers.len() > BATCH_MAX {
        return Err(ApiError::new(
            "batch_too_large",
            format!("a batch holds at most {BATCH_MAX} transfers"),
        ));
    }
    let mut results: Vec<Value> = vec![Value::Null; body.transfers.len()];
    let mut by_group: BTreeMap<u32, (ShardId, Vec<(usize, TransferRequest)>)> = BTreeMap::new();
    let mut sagas: Vec<(usize, Route, TransferRequest)> = Vec::new();
    for (index, item) in body.transfers.into_iter().enumerate() {
        let parsed = serde_json::from_value::<TransferBody>(item)
            .map_err(|e| ApiError::new("invalid_request", e.to_string()))
            .and_then(|body| validate(body, app.currency))
            .and_then(|request| Ok((sharded(&app, &request)?, request)));
        match parsed {
            // Items one shard can do alone go out as one batch command per shard.
            Ok((route, request)) if route.is_local() => {
                let group = app.shards.group_of(route.home);
                by_group
                    .entry(group)
                    .or_insert_with(|| (route.home, Vec::new()))
                    .1
                    .push((index, request));
            }
            Ok((route, request)) => sagas.push((index, route, request)),
            Err(error) => results[index] = error.body(),
        }
    }
    // The rest run as sagas in lockstep: each step of all of them is one command per shard
    // (an item that strays is driven alone; each answers like its single call). The local
    // items' batch commands go out at the same time.
    let (routes, saga_requests): (Vec<(usize, Route, TransferKind)>, Vec<TransferRequest>) = sagas
        .into_iter()
        .map(|(index, route, request)| ((index, route, request.kind), request))
        .unzip();
    let writes = by_group.into_values().map(|(shard, items)| {
        let app = app.clone();
        async move {
            let (indexes, requests): (Vec<usize>, Vec<TransferRequest>) = items.into_iter().unzip();
            let kinds: Vec<TransferKind> = requests.iter().map(|r| r.kind).collect();
            let outcome = app.shards.write(shard, Command::Batch(requests)).await;
            (shard, indexes, kinds, outcome)
        }
    });
    let (saga_outcomes, local_outcomes) = futures::future::join(
        saga::transfers(&app.shards, saga_requests, BATCH_SAGAS_CONCURRENCY),
        futures::future::join_all(writes),
    )
    .await;
    telemetry::record_batch_sagas(
        saga_outcomes
            .answers
            .len()
            .saturating_sub(saga_outcomes.alone),
        saga_outcomes.alone,
    );
    for ((index, route, kind), outcome) in routes.into_iter().zip(saga_outcomes.answers) {
        results[index] = match outcome.map_err(ApiError::from) {
            Ok(outcome) => {
                telemetry::record_transfer(kind.as_str(), outcome_label(&outcome));
                answer(&outcome, route.payer).1
            }
            Err(error) => error.body(),
        };
    }
    for (shard, indexes, kinds, outcome) in local_outcomes {
        let outcomes = match outcome? {
            Outcome::Batch(outcomes) if outcomes.len() == indexes.len() => outcomes,
            other => {
                return Err(ApiError::new(
                    "internal",
                    format!("unexpected outcome {other:?}"),
                ))
            }
        };
        for ((index, kind), outcome) in indexes.into_iter().zip(kinds).zip(outcomes) {
            telemetry::record_transfer(kind.as_str(), outcome_label(&outcome));
            results[index] = answer(&outcome, shard).1;
        }
    }
    Ok(Json(json!({ "results": results })))
}

/// Finds a transfer's record and the shard holding it: the id's home shard first (its record
/// is authoritative, a saga's included), then every other group. A saga still running at home
/// is driven to its answer and recorded first (see [`settle_running`]), so a transfer a client
/// was answered for reads as answered.
async fn locate(app: &App, id: &TransferId) -> Result<(ShardId, TransferView), ApiError> {
    let groups = u32::try_from(app.shards.groups().len()).expect("group count fits u32");
    let home = ledger::home_of(id, app.shards.shard_count());
    let others = (0..groups).map(ShardId).filter(|shard| *shard != home);
    for shard in std::iter::once(home).chain(others) {
        if let Answer::Transfer(Some(view)) =
            app.shards.read(shard, Query::Transfer(id.clone())).await?
        {
            if shard == home && view.status == TransferStatus::Pending {
                if let Some(view) = settle_running(app, home, id).await? {
                    return Ok((home, view));
                }
            }
            return Ok((shard, view));
        }
    }
    Err(ApiError::from_code(ledger::Code::TransferNotFound))
}

/// A saga at `home` without its answer yet — in flight, or answered to its client with the
/// record still queued on the coordinator's node (`cluster::finisher`) — is driven to its
/// answer, which is recorded, and its record read again. Every step is idempotent, so this
/// reader is one more coordinator and reaches the answer the client got. A saga that has its
/// answer by now is read as it is. `None` when there is no saga under the id, and when it
/// cannot be settled within `SETTLE_ON_READ_MAX` (its shards unreachable): the caller shows
/// the record as it stood.
async fn settle_running(
    app: &App,
    home: ShardId,
    id: &TransferId,
) -> Result<Option<TransferView>, ApiError> {
    let saga = match app.shards.read(home, Query::Saga(id.clone())).await? {
        Answer::Saga(Some(saga)) => saga,
        _ => return Ok(None),
    };
    if saga.answer.is_some() {
        // Recorded between the two reads (or waiting for its post or void): read as it is now.
        return Ok(Some(TransferView::of_saga(&saga)));
    }
    let settled = tokio::time::timeout(
        SETTLE_ON_READ_MAX,
        saga::drive_and_record(&app.shards, &saga),
    )
    .await;
    match settled {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::debug!(%id, %error, "a running saga read as it stands");
            return Ok(None);
        }
        Err(_) => return Ok(None),
    }
    match app.shards.read(home, Query::Transfer(id.clone())).await? {
        Answer::Transfer(Some(view)) => Ok(Some(view)),
        _ => Ok(None),
    }
}

pub async fn get(State(app): State<App>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = parse_transfer_id(&id)?;
    let (shard, view) = locate(&app, &id).await?;
    let mut body = json!(view);
    body["shard"] = json!(shard.0);
    Ok(Json(body))
}

/// Is the record `locate` found a saga's (a cross-shard transfer, or one whose id lives on
/// another shard than its money)?
async fn is_saga(app: &App, shard: ShardId, id: &TransferId) -> Result<bool, ApiError> {
    Ok(matches!(
        app.shards.read(shard, Query::Saga(id.clone())).await?,
        Answer::Saga(Some(_))
    ))
}

async fn finish(app: &App, id: &str, post: bool) -> Result<Json<Value>, ApiError> {
    let id = parse_transfer_id(id)?;
    let (shard, _) = locate(app, &id).await?;
    if is_saga(app, shard, &id).await? {
        // The decision is recorded on the id's home shard, then the money settles.
        let saga = saga::decide(&app.shards, &id, post)
            .await?
            .map_err(ApiError::from_code)?;
        let (status, code) = saga.status();
        let wanted = if post {
            TransferStatus::Completed
        } else {
            TransferStatus::Voided
        };
        return match code {
            _ if status == wanted => Ok(Json(json!(TransferView::of_saga(&saga)))),
            // The payee's side refused the credit: the hold was released.
            Some(code) if post => Err(ApiError::from_code(code)),
            _ => Err(ApiError::from_code(ledger::Code::TransferNotPending)),
        };
    }
    let command = if post {
        Command::Post(id)
    } else {
        Command::Void(id)
    };
    match app.shards.write(shard, command).await? {
        Outcome::Record(Ok(view)) => Ok(Json(json!(view))),
        Outcome::Record(Err(code)) => Err(ApiError::from_code(code)),
        other => Err(ApiError::new(
            "internal",
            format!("unexpected outcome {other:?}"),
        )),
    }
}

pub async fn post(State(app): State<App>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    finish(&app, &id, true).await
}

pub async fn void(State(app): State<App>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    finish(&app, &id, false).await
}

/// Redress: moves a completed transfer's amount back as a new transfer linked to it.
pub async fn reverse(
    State(app): State<App>,
    Path(original): Path<String>,
    ApiJson(body): ApiJson<ReverseBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let original = parse_transfer_id(&original)?;
    let id = parse_transfer_id(&body.id)?;
    let reason = body.reason.unwrap_or_default();
    if reason.len() > TEXT_BYTES_MAX {
        return Err(ApiError::new(
            "invalid_request",
            format!("reason is longer than {TEXT_BYTES_MAX} bytes"),
        ));
    }
    let (shard, view) = locate(&app, &original).await?;
    let request = ReversalRequest {
        id,
        original,
        reason,
    };
    let claim = is_saga(&app, shard, &request.original).await?;
    if !claim && ledger::home_of(&request.id, app.shards.shard_count()) == shard {
        // The original's record, its money and the reversal's id share one shard: one command
        // claims the original and moves the money back.
        return match app.shards.write(shard, Command::Reverse(request)).await? {
            Outcome::Transfer(outcome) => {
                telemetry::record_transfer("reversal", outcome_label(&outcome));
                let (status, body) = answer(&outcome, shard);
                Ok((status, Json(body)))
            }
            other => Err(ApiError::new(
                "internal",
                format!("unexpected outcome {other:?}"),
            )),
        };
    }
    // Otherwise a saga homed at the reversal id's shard: it claims the original (when that is
    // a saga), moves the money back (one command where the money is on one shard, legs where
    // it is not), and settles the claim.
    let transfer = TransferRequest {
        id: request.id.clone(),
        kind: TransferKind::Reversal,
        from: view.to,
        to: view.from,
        amount: view.amount,
        currency: view.currency,
        memo: String::new(),
        pending: false,
        timeout_s: TIMEOUT_S_DEFAULT,
    };
    let route = Route::of(&transfer, app.shards.shard_count());
    let reverses = Reverses {
        request,
        record_shard: shard,
        claim,
    };
    let outcome = saga::reverse(&app.shards, transfer, reverses).await?;
    telemetry::record_transfer("reversal", outcome_label(&outcome));
    let (status, body) = answer(&outcome, route.payer);
    Ok((status, Json(body)))
}

//! Operations routes: `/health`, `/metrics`, `/v1/cluster`, and the admin routes for the tariff
//! and account status.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use ledger::{AccountStatus, Command, Outcome, ShardId, Tariff};
use serde::Deserialize;
use serde_json::{json, Value};

use super::accounts::parse_account_id;
use super::error::ApiError;
use super::json::ApiJson;
use super::App;

/// 200 when every Raft group on this node knows its leader (the node can serve), else 503.
pub async fn health(State(app): State<App>) -> impl IntoResponse {
    let serving = app
        .shards
        .groups()
        .iter()
        .all(|g| g.raft.metrics().borrow().current_leader.is_some());
    if serving {
        (
            StatusCode::OK,
            Json(json!({"status": "ok", "node_id": app.config.node_id})),
        )
    } else {
        let error = ApiError::new("unavailable", "no leader known yet");
        (error.status(), Json(error.body()))
    }
}

pub async fn metrics(State(app): State<App>) -> impl IntoResponse {
    crate::telemetry::refresh_raft_gauges(&app.shards);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.prometheus.render(),
    )
}

/// Nodes with reachability, and every shard with its Raft state as this node sees it.
pub async fn cluster(State(app): State<App>) -> Json<Value> {
    let mut nodes = Vec::new();
    for peer in &app.config.peers {
        let up = peer.id == app.config.node_id || app.shards.ping(peer.id).await;
        nodes.push(json!({"id": peer.id, "addr": peer.http_addr.to_string(), "up": up}));
    }
    let mut shards = Vec::new();
    for shard in 0..app.shards.shard_count() {
        let group = app.shards.group_of(ShardId(shard));
        let Some(g) = app
            .shards
            .groups()
            .get(usize::try_from(group).unwrap_or(usize::MAX))
        else {
            continue;
        };
        let m = g.raft.metrics().borrow().clone();
        let members: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        shards.push(json!({
            "id": shard,
            "group": group,
            "leader": m.current_leader,
            "term": m.current_term,
            "members": members,
            "commit_index": g.commit_index(),
            "applied_index": m.last_applied.map(|id| id.index),
            "last_log_index": m.last_log_index,
            "snapshot_index": m.snapshot.map(|id| id.index),
            "purged_index": m.purged.map(|id| id.index),
            "state": format!("{:?}", m.state),
        }));
    }
    Json(json!({"node_id": app.config.node_id, "nodes": nodes, "shards": shards}))
}

/// Sets the fee bands and per-kind limits (replicated; applies to transfers after it).
pub async fn set_tariff(
    State(app): State<App>,
    ApiJson(tariff): ApiJson<Tariff>,
) -> Result<Json<Value>, ApiError> {
    tariff
        .validate()
        .map_err(|e| ApiError::new("invalid_request", e.to_string()))?;
    // The tariff is the same on every group: write it to each.
    write_every_shard(&app, &Command::SetTariff(tariff.clone())).await?;
    Ok(Json(json!(tariff)))
}

/// Writes a status command (tariff, schedule) to every shard, in order; the first refusal
/// stops it.
pub(super) async fn write_every_shard(app: &App, command: &Command) -> Result<(), ApiError> {
    for shard in 0..app.shards.shard_count() {
        match app.shards.write(ShardId(shard), command.clone()).await? {
            Outcome::Status(Ok(())) => {}
            Outcome::Status(Err(code)) => return Err(ApiError::from_code(code)),
            other => {
                return Err(ApiError::new(
                    "internal",
                    format!("unexpected outcome {other:?}"),
                ))
            }
        }
    }
    Ok(())
}

pub async fn get_tariff(State(app): State<App>) -> Json<Value> {
    let tariff = app.shards.groups()[0].reader.read().ledger.tariff().clone();
    Json(json!(tariff))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    status: AccountStatus,
}

/// Freezes, unfreezes or closes an account.
pub async fn set_account_status(
    State(app): State<App>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<StatusBody>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_account_id(&id)?;
    let shard = app.shards.shard_of(&id);
    match app
        .shards
        .write(
            shard,
            Command::SetAccountStatus {
                id: id.clone(),
                status: body.status,
            },
        )
        .await?
    {
        Outcome::Status(Ok(())) => Ok(Json(json!({"id": id, "status": body.status}))),
        Outcome::Status(Err(code)) => Err(ApiError::from_code(code)),
        other => Err(ApiError::new(
            "internal",
            format!("unexpected outcome {other:?}"),
        )),
    }
}

/// The committed log of a group, for auditors and the chaos checker: every entry's index, the
/// leader's time, and which transfers it carried, in application order. Entries behind the last
/// snapshot may have been purged; `first` says where the answer starts.
pub async fn log(
    State(app): State<App>,
    axum::extract::Query(params): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let number = |key: &str, default: u64| -> Result<u64, ApiError> {
        match params.get(key) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| ApiError::new("invalid_request", format!("{key} must be an integer"))),
        }
    };
    let group = number("group", 0)?;
    let from = number("from", 1)?;
    let limit = number("limit", 1000)?.clamp(1, 10_000);
    let Some(g) = app
        .shards
        .groups()
        .get(usize::try_from(group).unwrap_or(usize::MAX))
    else {
        return Err(ApiError::new("invalid_request", "no such group"));
    };
    let entries = g
        .committed_entries(from, limit)
        .await
        .map_err(|e| ApiError::new("unavailable", e))?;
    let rendered: Vec<Value> = entries
        .into_iter()
        .map(|(index, at_ms, command)| {
            let kind = command.name();
            let transfers: Vec<String> = command
                .transfer_ids()
                .iter()
                .map(|id| id.to_string())
                .collect();
            json!({"index": index, "at_ms": at_ms, "command": kind, "transfers": transfers})
        })
        .collect();
    Ok(Json(
        json!({"group": group, "commit_index": g.commit_index(), "entries": rendered}),
    ))
}

/// This node's own replica of every group, read locally with no leader round trip (so it may
/// lag): applied index, state digest and every account's balance. For operators comparing
/// replicas and for the chaos checker's convergence invariant; not linearizable.
pub async fn replica(State(app): State<App>) -> Json<Value> {
    let mut groups = Vec::new();
    for (index, group) in app.shards.groups().iter().enumerate() {
        let state = group.reader.read();
        let balances: serde_json::Map<String, Value> = state
            .ledger
            .accounts()
            .map(|a| (a.id.to_string(), json!(a.balance)))
            .collect();
        groups.push(json!({
            "group": index,
            "applied_index": state.last_applied.map_or(0, |id| id.index),
            "digest": format!("{:016x}", state.ledger.digest()),
            "balances": balances,
        }));
    }
    Json(json!({"node_id": app.config.node_id, "groups": groups}))
}

#[cfg(feature = "chaos")]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailPointBody {
    actions: String,
}

/// Configures a fail point (chaos builds only): `{"actions": "return"}`, `"sleep(200)"`, `"off"`.
#[cfg(feature = "chaos")]
pub async fn set_fail_point(
    Path(name): Path<String>,
    ApiJson(body): ApiJson<FailPointBody>,
) -> Result<Json<Value>, ApiError> {
    fail::cfg(name.clone(), &body.actions).map_err(|e| ApiError::new("invalid_request", e))?;
    tracing::warn!(%name, actions = %body.actions, "fail point configured");
    Ok(Json(json!({"name": name, "actions": body.actions})))
}

/// The transport fault switch (chaos builds only): `PUT /v1/admin/chaos/peers/{id}` with
/// `{"drop": true, "delay_ms": 200}` affects this node's calls to that peer; `DELETE
/// /v1/admin/chaos` heals; `GET` shows the switch.
#[cfg(feature = "chaos")]
pub async fn set_peer_fault(
    Path(peer): Path<u64>,
    ApiJson(fault): ApiJson<cluster::chaos::PeerFault>,
) -> Json<Value> {
    cluster::chaos::set(peer, fault);
    tracing::warn!(peer, ?fault, "transport fault set");
    Json(json!(cluster::chaos::current()))
}

#[cfg(feature = "chaos")]
pub async fn peer_faults() -> Json<Value> {
    Json(json!(cluster::chaos::current()))
}

#[cfg(feature = "chaos")]
pub async fn heal_peer_faults() -> Json<Value> {
    cluster::chaos::heal();
    Json(json!(cluster::chaos::current()))
}

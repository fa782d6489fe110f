//! `/v1/admin/days` and `/v1/admin/schedule`: the business days and the end-of-day cut-off.
//!
//! Every shard closes its own days at the same cut-offs (see `ledger::day`); the cluster's
//! day is the sum of its shards' closes with the same cut-off. The schedule is replicated:
//! written to every shard, it takes effect from each shard's next cut-off.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use ledger::time::rfc3339;
use ledger::{Answer, Command, DayClose, Query, Schedule};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::json::ApiJson;
use super::App;
use crate::limits::DAYS_LIMIT_MAX;

/// One cut-off's closes summed over the shards that closed it.
#[derive(Default)]
struct ClusterClose {
    from_ms: u64,
    shards: u32,
    transfers: u64,
    volume: u128,
    fees: u128,
    float_balance: i64,
    fees_balance: i64,
}

impl ClusterClose {
    fn add(&mut self, close: &DayClose) {
        self.from_ms = self.from_ms.min(close.from_ms);
        self.shards = self.shards.saturating_add(1);
        self.transfers = self.transfers.saturating_add(close.transfers);
        self.volume = self.volume.saturating_add(close.volume);
        self.fees = self.fees.saturating_add(close.fees);
        self.float_balance = self.float_balance.saturating_add(close.float_balance);
        self.fees_balance = self.fees_balance.saturating_add(close.fees_balance);
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    /// The cut-off time of day, UTC, `HH:MM` or `HH:MM:SS` (for periods shorter than a day:
    /// the offset into each period).
    cutoff: String,
    /// The business day's length in seconds (default 86400).
    period_s: Option<u64>,
}

fn parse_cutoff(text: &str) -> Result<u64, ApiError> {
    let invalid = || {
        ApiError::new(
            "invalid_request",
            format!("cutoff must be HH:MM or HH:MM:SS (UTC), not {text:?}"),
        )
    };
    let parts: Vec<&str> = text.split(':').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.len() != 2) {
        return Err(invalid());
    }
    let mut values = [0u64; 3];
    for (value, part) in values.iter_mut().zip(&parts) {
        *value = part.parse().map_err(|_| invalid())?;
    }
    let [hours, minutes, seconds] = values;
    if hours > 23 || minutes > 59 || seconds > 59 {
        return Err(invalid());
    }
    Ok((hours * 3600 + minutes * 60 + seconds) * 1000)
}

/// A sum of minor units: a JSON integer, or a string past 2^64 (a JSON reader's integers
/// would lose it).
fn big(value: u128) -> Value {
    u64::try_from(value).map_or_else(|_| Value::from(value.to_string()), Value::from)
}

fn render_schedule(schedule: &Schedule) -> Value {
    let seconds = schedule.offset_ms / 1000;
    json!({
        "cutoff": format!("{:02}:{:02}:{:02}", seconds / 3600, seconds / 60 % 60, seconds % 60),
        "period_s": schedule.period_ms / 1000,
    })
}

/// Sets the cut-off on every shard.
pub async fn set_schedule(
    State(app): State<App>,
    ApiJson(body): ApiJson<ScheduleBody>,
) -> Result<Json<Value>, ApiError> {
    let offset_ms = parse_cutoff(&body.cutoff)?;
    let period_ms = body
        .period_s
        .unwrap_or(86_400)
        .checked_mul(1000)
        .ok_or_else(|| ApiError::new("invalid_request", "period_s is too large"))?;
    let schedule = Schedule {
        // A cut-off past the period's end wraps into it (a 60 s period cut at 00:00:30).
        offset_ms: offset_ms % period_ms.max(1),
        period_ms,
    };
    schedule.validate().map_err(|_| {
        ApiError::new(
            "invalid_request",
            "period_s must be from 1 to 604800 seconds",
        )
    })?;
    super::ops::write_every_shard(&app, &Command::SetSchedule(schedule)).await?;
    Ok(Json(render_schedule(&schedule)))
}

/// The schedule, the open day and the closed days (newest first), each summed over the
/// shards; each shard read linearizably.
pub async fn days(
    State(app): State<App>,
    axum::extract::Query(params): axum::extract::Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let limit = match params.get("limit") {
        None => 30,
        Some(text) => text
            .parse::<usize>()
            .map_err(|_| ApiError::new("invalid_request", "limit must be an integer"))?,
    }
    .clamp(1, DAYS_LIMIT_MAX);
    let mut schedule = None;
    let mut open = (0u64, 0u128, 0u128, u64::MAX);
    let mut closes: BTreeMap<u64, ClusterClose> = BTreeMap::new();
    for (_, answer) in super::accounts::read_every_group(&app, |_| Query::Days { limit }).await? {
        let Answer::Days {
            schedule: s,
            open: day,
            closes: shard_closes,
        } = answer
        else {
            return Err(ApiError::new("internal", "unexpected answer"));
        };
        schedule.get_or_insert(s);
        open.0 = open.0.saturating_add(day.transfers);
        open.1 = open.1.saturating_add(day.volume);
        open.2 = open.2.saturating_add(day.fees);
        if day.until_ms > 0 {
            open.3 = open.3.min(day.until_ms);
        }
        for close in shard_closes {
            closes
                .entry(close.until_ms)
                .or_insert_with(|| ClusterClose {
                    from_ms: close.from_ms,
                    ..ClusterClose::default()
                })
                .add(&close);
        }
    }
    let rendered: Vec<Value> = closes
        .into_iter()
        .rev()
        .take(limit)
        .map(|(until, c)| {
            json!({
                "from": rfc3339(c.from_ms), "until": rfc3339(until),
                "from_ms": c.from_ms, "until_ms": until, "shards": c.shards,
                "transfers": c.transfers, "volume": big(c.volume), "fees": big(c.fees),
                "float_balance": c.float_balance, "fees_balance": c.fees_balance,
            })
        })
        .collect();
    let schedule = schedule.unwrap_or_default();
    Ok(Json(json!({
        "schedule": render_schedule(&schedule),
        "open": {
            "until": (open.3 != u64::MAX).then(|| rfc3339(open.3)),
            "transfers": open.0, "volume": big(open.1), "fees": big(open.2),
        },
        "closed": rendered,
    })))
}

//! Invariant 4, **replay**: a sequential model of the bank, starting from `initial` and
//! applying every applied transfer (final status `completed`: `amount` from `from` to `to`;
//! fees are 0 in the workload) in log order, reproduces every acknowledged answer.
//!
//! Order: `(log_index, log_pos)` within a shard when both transfers report it; otherwise the
//! real-time order the history proves (see [`super::model`]); where neither decides, every
//! order is allowed, so only answers no order can produce are flagged. Rules:
//! 1. an acknowledged `completed` answer's `from_balance` and `to_balance` are the model's
//!    balances of `from` and `to` right after that transfer;
//! 2. an acknowledged `rejected` / `insufficient_funds` (payer not `float`) had, in the model,
//!    a payer balance below `amount` right before it;
//! 3. an acknowledged `rejected` / `account_not_found` names an account missing from `initial`
//!    (the workload creates no accounts while it runs);
//! 4. the model never completes a transfer that overdraws a payer other than `float`: for an
//!    applied transfer without a `from_balance` answer, some order leaves its payer at >= 0
//!    (answered ones are covered by rule 1 and [`super::floor`]).
//!
//! The model's end state is `initial` plus every applied transfer once, whatever the order; it
//! is compared with every node's final read in [`super::exactly_once`] (rule 5).

use super::model::{Applied, Ctx, Outcome, Point, TransferInfo};
use super::Violation;
use crate::history::Op;

const NAME: &str = "replay";

/// Checks the rules above.
pub fn check(ctx: &Ctx<'_>) -> Vec<Violation> {
    let mut out = Vec::new();
    for (id, info) in &ctx.transfers {
        match info.outcome {
            Outcome::Acked(ack) => match ack.status.as_deref() {
                Some("completed") => completed_answer(ctx, id, info, ack, &mut out),
                Some("rejected") => rejection(ctx, id, info, ack, &mut out),
                _ => {}
            },
            Outcome::Failed | Outcome::Unknown => {}
        }
        if info.applied() == Applied::Yes && !answered_from_balance(info) {
            overdraw(ctx, id, info, &mut out);
        }
    }
    out
}

fn answered_from_balance(info: &TransferInfo<'_>) -> bool {
    matches!(info.outcome, Outcome::Acked(op) if op.from_balance.is_some())
}

/// The point of `info`'s answer `ack`.
fn point_of(info: &TransferInfo<'_>, complete_ns: u64) -> Point {
    Point {
        key: info.key,
        invoke_ns: info.lower_ns,
        complete_ns,
    }
}

/// Rule 1.
fn completed_answer(
    ctx: &Ctx<'_>,
    id: &str,
    info: &TransferInfo<'_>,
    ack: &Op,
    out: &mut Vec<Violation>,
) {
    let t = info.transfer;
    let point = point_of(info, ack.time_ns);
    let sides = [
        ("from_balance", t.from.as_str(), ack.from_balance),
        ("to_balance", t.to.as_str(), ack.to_balance),
    ];
    for (what, account, answered) in sides {
        let Some(answered) = answered else { continue };
        let model = ctx
            .possible(account, &point, Some(id))
            .shift(info.delta(account));
        if !model.contains(i128::from(answered)) {
            out.push(Violation::new(
                NAME,
                format!(
                    "transfer {id} answered {what} {answered} for {account}, but the model \
                     after it in log order gives {model}"
                ),
                Some(ack),
            ));
        }
    }
}

/// Rules 2 and 3.
fn rejection(ctx: &Ctx<'_>, id: &str, info: &TransferInfo<'_>, ack: &Op, out: &mut Vec<Violation>) {
    let t = info.transfer;
    match ack.code.as_deref() {
        Some("insufficient_funds") if !Ctx::is_float(&t.from) => {
            let model = ctx.possible(&t.from, &point_of(info, ack.time_ns), Some(id));
            if model.min() >= i128::from(t.amount) {
                out.push(Violation::new(
                    NAME,
                    format!(
                        "transfer {id} of {} was rejected insufficient_funds, but the model \
                         gives payer {} a balance of {model} before it",
                        t.amount, t.from
                    ),
                    Some(ack),
                ));
            }
        }
        Some("account_not_found") => {
            let initial = &ctx.history.initial;
            if initial.contains_key(&t.from) && initial.contains_key(&t.to) {
                out.push(Violation::new(
                    NAME,
                    format!(
                        "transfer {id} was rejected account_not_found, but {} and {} both exist",
                        t.from, t.to
                    ),
                    Some(ack),
                ));
            }
        }
        _ => {}
    }
}

/// Rule 4.
fn overdraw(ctx: &Ctx<'_>, id: &str, info: &TransferInfo<'_>, out: &mut Vec<Violation>) {
    let t = info.transfer;
    if Ctx::is_float(&t.from) {
        return;
    }
    let point = point_of(info, info.upper_ns.unwrap_or(u64::MAX));
    let model = ctx
        .possible(&t.from, &point, Some(id))
        .shift(info.delta(&t.from));
    if model.max() < 0 {
        out.push(Violation::new(
            NAME,
            format!(
                "transfer {id} of {} is completed, but in every order the model leaves payer {} \
                 at {model} after it",
                t.amount, t.from
            ),
            Some(info.first_invoke()),
        ));
    }
}

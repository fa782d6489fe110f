//! Invariant 5, **linearizable reads**: a read never misses a write acknowledged before it
//! began, and the view never goes back.
//!
//! A *read* is an `ok` single-account `Read` (or read `Probe`); a lookup's `log_index` is the
//! transfer's own position, not a read point, so lookups only obey rule 5. Rules:
//! 1. **index after acknowledged writes**: a read reporting `log_index` i on a shard was invoked
//!    after no acknowledged transfer (201 or 422) on that shard whose reported `log_index` is
//!    greater than i — it was committed before the read began, so the read point covers it;
//! 2. **index never goes back**: a read reporting `log_index` i on a shard began after no other
//!    read on that shard completed with a greater index (per process in particular: a client's
//!    successive reads never go back);
//! 3. **value**: a single-account read's `balance` is one the bank model allows at that read
//!    (see [`super::model`]): with a `log_index`, exactly the applied transfers at or below it
//!    (per shard); otherwise at least every transfer applied before the read began and none
//!    first sent after it ended — a stale read shows an old balance;
//! 4. the same value rule for every account of an `ok` `ReadAll` (by real time only);
//! 5. **lookups**: a `Lookup` invoked after a transfer was acknowledged (or seen completed) does
//!    not answer `not_found`.

use std::collections::BTreeMap;

use super::model::{Ctx, LogKey, Outcome, Point};
use super::Violation;
use crate::history::{Func, Op, Pair};

const NAME: &str = "linearizable";

/// `(time, index, op)` sorted by time, with the running maximum of `index`.
struct Timeline<'a> {
    entries: Vec<(u64, u64, &'a Op)>,
    max: Vec<(u64, &'a Op)>,
}

impl<'a> Timeline<'a> {
    fn new(mut entries: Vec<(u64, u64, &'a Op)>) -> Self {
        entries.sort_by_key(|e| e.0);
        let mut max: Vec<(u64, &'a Op)> = Vec::with_capacity(entries.len());
        for (_, index, op) in &entries {
            let next = match max.last() {
                Some(&(m, o)) if m >= *index => (m, o),
                _ => (*index, *op),
            };
            max.push(next);
        }
        Self { entries, max }
    }

    /// The greatest index among entries strictly before `time`.
    fn max_before(&self, time: u64) -> Option<(u64, &'a Op)> {
        let n = self.entries.partition_point(|e| e.0 < time);
        n.checked_sub(1).map(|i| self.max[i])
    }
}

fn timelines<'a>(
    entries: Vec<(Option<u32>, u64, u64, &'a Op)>,
) -> BTreeMap<Option<u32>, Timeline<'a>> {
    let mut by_shard: BTreeMap<Option<u32>, Vec<(u64, u64, &'a Op)>> = BTreeMap::new();
    for (shard, time, index, op) in entries {
        by_shard.entry(shard).or_default().push((time, index, op));
    }
    by_shard
        .into_iter()
        .map(|(s, e)| (s, Timeline::new(e)))
        .collect()
}

/// Checks the rules above.
pub fn check(ctx: &Ctx<'_>) -> Vec<Violation> {
    let mut out = Vec::new();
    indices(ctx, &mut out);
    for pair in &ctx.pairs {
        let Some(ok) = pair.ok() else { continue };
        if pair.invoke.is_read() {
            read_value(ctx, pair, ok, &mut out);
        } else if pair.f() == Func::ReadAll {
            read_all_values(ctx, pair, ok, &mut out);
        } else if pair.f() == Func::Lookup {
            lookup(ctx, pair, ok, &mut out);
        }
    }
    out
}

/// Rules 1 and 2.
fn indices(ctx: &Ctx<'_>, out: &mut Vec<Violation>) {
    let writes = timelines(
        ctx.pairs
            .iter()
            .filter(|p| p.invoke.is_transfer())
            .filter_map(|p| p.ok())
            .filter_map(|ok| LogKey::of_write(ok).map(|k| (k.shard, ok.time_ns, k.index, ok)))
            .collect(),
    );
    let reads: Vec<(&Pair<'_>, &Op, LogKey)> = ctx
        .pairs
        .iter()
        .filter(|p| p.invoke.is_read())
        .filter_map(|p| {
            p.ok()
                .and_then(|ok| LogKey::of_read(ok).map(|k| (p, ok, k)))
        })
        .collect();
    let completed_reads = timelines(
        reads
            .iter()
            .map(|(_, ok, k)| (k.shard, ok.time_ns, k.index, *ok))
            .collect(),
    );
    for (pair, ok, key) in &reads {
        let began = pair.invoke.time_ns;
        if let Some((index, w)) = writes.get(&key.shard).and_then(|t| t.max_before(began)) {
            if index > key.index {
                let id = w.transfer.as_ref().map_or("?", |t| t.id.as_str());
                out.push(Violation::new(
                    NAME,
                    format!(
                        "{} began at {} ms after transfer {id} was acknowledged at {} ms at {}, \
                         but read at {key} (stale read)",
                        ok.f,
                        began / 1_000_000,
                        w.time_ns / 1_000_000,
                        LogKey::of_write(w).map_or_else(String::new, |k| k.to_string()),
                    ),
                    Some(ok),
                ));
            }
        }
        if let Some((index, r)) = completed_reads
            .get(&key.shard)
            .and_then(|t| t.max_before(began))
        {
            if index > key.index {
                out.push(Violation::new(
                    NAME,
                    format!(
                        "{} read at {key}, but a read by process {} on node {} that completed \
                         before it began had already read index {index} (view went back)",
                        ok.f, r.process, r.node
                    ),
                    Some(ok),
                ));
            }
        }
    }
}

/// Rule 3.
fn read_value(ctx: &Ctx<'_>, pair: &Pair<'_>, ok: &Op, out: &mut Vec<Violation>) {
    let (Some(account), Some(balance)) = (pair.invoke.account.as_deref(), ok.balance) else {
        return;
    };
    let point = Point {
        key: LogKey::of_read(ok),
        invoke_ns: pair.invoke.time_ns,
        complete_ns: ok.time_ns,
    };
    let model = ctx.possible(account, &point, None);
    if !model.contains(i128::from(balance)) {
        let at = point
            .key
            .map_or_else(|| "by real time".to_owned(), |k| format!("at {k}"));
        out.push(Violation::new(
            NAME,
            format!(
                "{} of {account} on node {} returned {balance}, but the model {at} gives {model} \
                 (stale or phantom read)",
                ok.f, ok.node
            ),
            Some(ok),
        ));
    }
}

/// Rule 4.
fn read_all_values(ctx: &Ctx<'_>, pair: &Pair<'_>, ok: &Op, out: &mut Vec<Violation>) {
    let point = Point {
        key: None,
        invoke_ns: pair.invoke.time_ns,
        complete_ns: ok.time_ns,
    };
    let mut wrong = Vec::new();
    for (account, balance) in ok.balances.iter().flatten() {
        let model = ctx.possible(account, &point, None);
        if !model.contains(i128::from(*balance)) {
            wrong.push(format!("{account} {balance} (model: {model})"));
        }
    }
    if !wrong.is_empty() {
        out.push(Violation::new(
            NAME,
            format!(
                "read_all from node {} is not linearizable: {}",
                ok.node,
                wrong.join(", ")
            ),
            Some(ok),
        ));
    }
}

/// Rule 5.
fn lookup(ctx: &Ctx<'_>, pair: &Pair<'_>, ok: &Op, out: &mut Vec<Violation>) {
    if ok.status.as_deref() != Some("not_found") {
        return;
    }
    let Some(info) = pair
        .transfer()
        .and_then(|t| ctx.transfers.get(t.id.as_str()))
    else {
        return;
    };
    let acked = match info.outcome {
        Outcome::Acked(ack) => Some(ack.time_ns),
        _ => None,
    };
    let known = [acked, info.upper_ns].into_iter().flatten().min();
    if let Some(at) = known.filter(|at| *at < pair.invoke.time_ns) {
        out.push(Violation::new(
            NAME,
            format!(
                "lookup of transfer {} on node {} answered not_found, but it was acknowledged \
                 at {} ms, before the lookup began at {} ms",
                info.transfer.id,
                ok.node,
                at / 1_000_000,
                pair.invoke.time_ns / 1_000_000
            ),
            Some(ok),
        ));
    }
}

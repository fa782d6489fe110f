//! Invariant 7, **recovery**: after healing, every shard serves a transfer and a read within
//! [`RECOVERY_DEADLINE_MS`]; and the unavailability windows during the run, for the report.
//!
//! Recovery rules. *Healing* is the history's `healed_ns`, or, when unrecorded, the first probe's
//! invoke; with neither (a run without faults) there is nothing to check. The shards to probe
//! are every `shard` recorded on a `Transfer`, `Read` or `Probe` (or one unnamed shard when
//! none is recorded). For each of them, a `Probe` transfer and a `Probe` read must each complete
//! `ok` no later than 10 s after healing: the first `ok` one's completion time is the recovery
//! time (reported per shard in the stats); none, or a later one, is a violation.
//!
//! Unavailability windows (no violation, reported as p50/p99/max). The non-probe `Transfer` and
//! `Read` ops of each shard form a stream, ordered by completion time (an op that never
//! completed counts as failing at its invoke). A window opens with the earliest invoke among
//! the `fail`/`info` ops since the stream's last `ok` (but not before that `ok`) and closes at
//! the next `ok`'s completion. Failures after the stream's last `ok` leave the window *open*; it
//! is measured up to the stream's last completion. Gaps between `ok`s without a failure in
//! between are idle time, not unavailability.

use std::collections::{BTreeMap, BTreeSet};

use super::model::Ctx;
use super::Violation;
use crate::history::{Func, Op, OpKind, Pair};

const NAME: &str = "recovery";

/// How soon after healing every shard must serve again.
pub const RECOVERY_DEADLINE_MS: u64 = 10_000;

/// Time from healing to the first successful probe of each kind, in ms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    pub transfer_ms: Option<u64>,
    pub read_ms: Option<u64>,
}

/// One stretch of time during which a stream's requests failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub f: Func,
    pub shard: Option<u32>,
    pub start_ns: u64,
    pub end_ns: u64,
    /// The stream never succeeded again.
    pub open: bool,
}

impl Window {
    pub fn duration_ms(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns) / 1_000_000
    }
}

/// What [`check`] finds.
#[derive(Clone, Debug, Default)]
pub struct RecoveryOutcome {
    pub violations: Vec<Violation>,
    pub windows: Vec<Window>,
    pub recovery: BTreeMap<Option<u32>, Recovery>,
}

/// The nearest-rank `p`-th percentile.
pub fn percentile(values: &[u64], p: u32) -> Option<u64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = (usize::try_from(p).unwrap_or(100) * n)
        .div_ceil(100)
        .clamp(1, n);
    sorted.get(rank - 1).copied()
}

fn shard_of(pair: &Pair<'_>) -> Option<u32> {
    pair.invoke.shard.or(pair.completion.and_then(|c| c.shard))
}

/// Checks the rules above and measures the windows.
pub fn check(ctx: &Ctx<'_>) -> RecoveryOutcome {
    let mut outcome = RecoveryOutcome {
        windows: windows(ctx),
        ..RecoveryOutcome::default()
    };
    let probes: Vec<&Pair<'_>> = ctx.pairs.iter().filter(|p| p.f() == Func::Probe).collect();
    let first_probe = probes.iter().map(|p| p.invoke.time_ns).min();
    let Some(healed) = ctx.history.healed_ns.or(first_probe) else {
        return outcome;
    };
    let mut shards: BTreeSet<Option<u32>> = ctx
        .pairs
        .iter()
        .filter(|p| matches!(p.f(), Func::Transfer | Func::Read | Func::Probe))
        .map(shard_of)
        .collect();
    if shards.iter().any(Option::is_some) || shards.is_empty() {
        shards.remove(&None);
    }
    if shards.is_empty() {
        shards.insert(None);
    }
    for shard in shards {
        let of_shard: Vec<&Pair<'_>> = probes
            .iter()
            .copied()
            .filter(|p| shard_of(p) == shard)
            .collect();
        let transfer = probe(
            &of_shard,
            healed,
            shard,
            "transfer",
            &mut outcome.violations,
        );
        let read = probe(&of_shard, healed, shard, "read", &mut outcome.violations);
        outcome.recovery.insert(
            shard,
            Recovery {
                transfer_ms: transfer,
                read_ms: read,
            },
        );
    }
    outcome
}

/// The recovery time of one probe kind on one shard; a violation when missing or late.
fn probe(
    probes: &[&Pair<'_>],
    healed: u64,
    shard: Option<u32>,
    what: &str,
    out: &mut Vec<Violation>,
) -> Option<u64> {
    let of_kind: Vec<&Pair<'_>> = probes
        .iter()
        .copied()
        .filter(|p| (what == "transfer") == p.invoke.is_transfer())
        .collect();
    let first_ok: Option<&Op> = of_kind
        .iter()
        .filter_map(|p| p.ok())
        .min_by_key(|ok| ok.time_ns);
    let shard_name = shard.map_or_else(|| "-".to_owned(), |s| s.to_string());
    let Some(ok) = first_ok else {
        let last = of_kind
            .iter()
            .filter_map(|p| p.completion.or(Some(p.invoke)))
            .max_by_key(|op| op.time_ns);
        out.push(Violation::new(
            NAME,
            format!(
                "shard {shard_name} served no probe {what} after healing ({} attempts)",
                of_kind.len()
            ),
            last,
        ));
        return None;
    };
    let elapsed = ok.time_ns.saturating_sub(healed) / 1_000_000;
    if elapsed > RECOVERY_DEADLINE_MS {
        out.push(Violation::new(
            NAME,
            format!(
                "shard {shard_name} first served a probe {what} {elapsed} ms after healing \
                 (limit {RECOVERY_DEADLINE_MS} ms)"
            ),
            Some(ok),
        ));
    }
    Some(elapsed)
}

/// `(completion or invoke time, invoke time, ok)` of each op of a stream.
type Events = Vec<(u64, u64, bool)>;

/// The unavailability windows of every stream.
fn windows(ctx: &Ctx<'_>) -> Vec<Window> {
    let mut streams: BTreeMap<(Func, Option<u32>), Events> = BTreeMap::new();
    for pair in &ctx.pairs {
        if !matches!(pair.f(), Func::Transfer | Func::Read) {
            continue;
        }
        let end = pair.completion.map_or(pair.invoke.time_ns, |c| c.time_ns);
        let ok = pair.outcome() == OpKind::Ok;
        streams
            .entry((pair.f(), shard_of(pair)))
            .or_default()
            .push((end, pair.invoke.time_ns, ok));
    }
    let mut out = Vec::new();
    for ((f, shard), mut events) in streams {
        events.sort_unstable();
        let mut last_ok: Option<u64> = None;
        let mut failing_since: Option<u64> = None;
        let window = |since: u64, last_ok: Option<u64>, end: u64, open: bool| Window {
            f,
            shard,
            start_ns: last_ok.map_or(since, |l| since.max(l)),
            end_ns: end,
            open,
        };
        for &(end, invoked, ok) in &events {
            if ok {
                if let Some(since) = failing_since.take() {
                    out.push(window(since, last_ok, end, false));
                }
                last_ok = Some(end);
            } else {
                failing_since = Some(failing_since.map_or(invoked, |s| s.min(invoked)));
            }
        }
        if let (Some(since), Some(&(end, _, _))) = (failing_since, events.last()) {
            out.push(window(since, last_ok, end, true));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 99), Some(7));
        let v: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentile(&v, 50), Some(50));
        assert_eq!(percentile(&v, 99), Some(99));
        assert_eq!(percentile(&[1, 2, 3], 50), Some(2));
    }
}

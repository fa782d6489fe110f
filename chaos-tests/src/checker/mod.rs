//! The history checker: one invariant per module, each a pure function of the history.
//!
//! [`check`] runs them all and returns a [`Report`]; its `Display` prints every violation with
//! the op that shows it and the run's seed. The invariants:
//!
//! | module | invariant |
//! |---|---|
//! | (here) `history` | the history is well formed (process discipline, one body per transfer id) |
//! | [`conservation`] | every consistent read of all accounts sums to 0 |
//! | [`floor`] | no account but `float` is ever seen below 0 |
//! | [`exactly_once`] | acknowledged transfers applied exactly once, failed ones never, unknown at most once |
//! | [`replay`] | a sequential model replaying applied transfers in log order explains every answer |
//! | [`linearizable`] | reads never miss a write acknowledged before they began, never go back |
//! | [`convergence`] | after healing every replica holds the same state |
//! | [`recovery`] | after healing every shard serves a transfer and a read within 10 s |
//!
//! The shared index and the bank model are in [`model`].

use std::collections::BTreeMap;
use std::fmt;

use crate::history::{History, Op, OpKind};

pub mod conservation;
pub mod convergence;
pub mod exactly_once;
pub mod floor;
pub mod linearizable;
pub mod model;
pub mod recovery;
pub mod replay;

use model::{Ctx, Outcome};

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The module name of the invariant (`"conservation"`, …, or `"history"`).
    pub invariant: &'static str,
    /// What is wrong, with the ids, accounts, nodes and values involved.
    pub message: String,
    /// The op that shows it best, when there is one.
    pub op: Option<Op>,
}

impl Violation {
    /// A violation pointing at `op`.
    pub fn new(invariant: &'static str, message: String, op: Option<&Op>) -> Self {
        Self {
            invariant,
            message,
            op: op.cloned(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.invariant, self.message)?;
        if let Some(op) = &self.op {
            write!(f, "\n    op: {op}")?;
        }
        Ok(())
    }
}

/// Counts and latencies of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records in the history.
    pub ops: usize,
    /// Distinct transfer ids (probes included) and their outcome over all attempts.
    pub transfers: usize,
    pub transfers_ok: usize,
    pub transfers_fail: usize,
    pub transfers_info: usize,
    /// Transfer attempts (retries included).
    pub transfer_attempts: usize,
    /// Single-account reads (probes included) and how many answered.
    pub reads: usize,
    pub reads_ok: usize,
    /// Unavailability windows during the run (see [`recovery`]).
    pub unavailability_windows: usize,
    pub unavailability_p50_ms: Option<u64>,
    pub unavailability_p99_ms: Option<u64>,
    pub unavailability_max_ms: Option<u64>,
    /// Per shard (`None`: unrecorded), the time from healing to the first successful probe
    /// transfer and read, in ms.
    pub recovery_ms: BTreeMap<Option<u32>, recovery::Recovery>,
}

/// The checker's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub seed: u64,
    pub violations: Vec<Violation>,
    pub stats: Stats,
    /// Every unavailability window found (see [`recovery`]).
    pub windows: Vec<recovery::Window>,
}

impl Report {
    /// No violation.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The violations of one invariant.
    pub fn of(&self, invariant: &str) -> Vec<&Violation> {
        self.violations
            .iter()
            .filter(|v| v.invariant == invariant)
            .collect()
    }
}

fn ms(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v} ms"))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        writeln!(
            f,
            "seed {}: {} ops; transfers {} (ok {}, fail {}, info {}; {} attempts); reads {} ({} ok)",
            self.seed,
            s.ops,
            s.transfers,
            s.transfers_ok,
            s.transfers_fail,
            s.transfers_info,
            s.transfer_attempts,
            s.reads,
            s.reads_ok
        )?;
        writeln!(
            f,
            "unavailability: {} windows, p50 {}, p99 {}, max {}",
            s.unavailability_windows,
            ms(s.unavailability_p50_ms),
            ms(s.unavailability_p99_ms),
            ms(s.unavailability_max_ms)
        )?;
        for (shard, r) in &s.recovery_ms {
            let shard = shard.map_or_else(|| "-".to_owned(), |s| s.to_string());
            writeln!(
                f,
                "recovery of shard {shard}: transfer {}, read {}",
                ms(r.transfer_ms),
                ms(r.read_ms)
            )?;
        }
        if self.violations.is_empty() {
            return writeln!(f, "OK: no violation (seed {})", self.seed);
        }
        writeln!(f, "FAILED: {} violation(s)", self.violations.len())?;
        for v in &self.violations {
            writeln!(f, "{v}\n    seed: {}", self.seed)?;
        }
        Ok(())
    }
}

/// Checks every invariant.
pub fn check(history: &History) -> Report {
    let ctx = Ctx::new(history);
    let mut violations = well_formed(&ctx);
    violations.extend(conservation::check(&ctx));
    violations.extend(floor::check(&ctx));
    violations.extend(exactly_once::check(&ctx));
    violations.extend(replay::check(&ctx));
    violations.extend(linearizable::check(&ctx));
    violations.extend(convergence::check(&ctx));
    let recovery = recovery::check(&ctx);
    violations.extend(recovery.violations);
    let mut stats = stats(&ctx);
    let durations: Vec<u64> = recovery.windows.iter().map(|w| w.duration_ms()).collect();
    stats.unavailability_windows = durations.len();
    stats.unavailability_p50_ms = recovery::percentile(&durations, 50);
    stats.unavailability_p99_ms = recovery::percentile(&durations, 99);
    stats.unavailability_max_ms = durations.iter().max().copied();
    stats.recovery_ms = recovery.recovery;
    Report {
        seed: history.seed,
        violations,
        stats,
        windows: recovery.windows,
    }
}

/// Rule `history`: the pairing problems of [`History::pairs`], a transfer or lookup invoke
/// without its `transfer`, a read without its `account`, and one transfer id sent with two
/// different bodies (the runner must retry with the same body).
fn well_formed(ctx: &Ctx<'_>) -> Vec<Violation> {
    let mut out: Vec<Violation> = ctx
        .problems
        .iter()
        .map(|p| Violation::new("history", p.message.clone(), Some(p.op)))
        .collect();
    for pair in &ctx.pairs {
        let op = pair.invoke;
        use crate::history::Func::*;
        let missing = match op.f {
            Transfer | Lookup | FinalLookup if op.transfer.is_none() => "a transfer",
            Read if op.account.is_none() => "an account",
            Probe if op.transfer.is_none() && op.account.is_none() => "a transfer or an account",
            _ => continue,
        };
        out.push(Violation::new(
            "history",
            format!("{} invoke without {missing}", op.f),
            Some(op),
        ));
    }
    for (id, info) in &ctx.transfers {
        if let Some(other) = info
            .attempts
            .iter()
            .find(|p| p.transfer() != Some(info.transfer))
        {
            out.push(Violation::new(
                "history",
                format!("transfer {id} was sent with two different bodies"),
                Some(other.invoke),
            ));
        }
    }
    out
}

fn stats(ctx: &Ctx<'_>) -> Stats {
    let mut s = Stats {
        ops: ctx.history.ops.len(),
        transfers: ctx.transfers.len(),
        ..Stats::default()
    };
    for info in ctx.transfers.values() {
        s.transfer_attempts += info.attempts.len();
        match info.outcome {
            Outcome::Acked(_) => s.transfers_ok += 1,
            Outcome::Failed => s.transfers_fail += 1,
            Outcome::Unknown => s.transfers_info += 1,
        }
    }
    for pair in ctx.pairs.iter().filter(|p| p.invoke.is_read()) {
        s.reads += 1;
        if pair.outcome() == OpKind::Ok {
            s.reads_ok += 1;
        }
    }
    s
}

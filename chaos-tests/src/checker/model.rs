//! What the invariants share: every transfer id with its attempts, outcome, log position and
//! settled status; the final reads and lookups per node; and the sequential bank model that says
//! which balances an account may show at a given point of the history.
//!
//! # Positions
//! An applied transfer X is placed relative to an observation point P (a read, or another
//! transfer's own answer) as follows:
//! * both carry a log position on the same shard → exact: X is before P when
//!   `(X.log_index, X.log_pos) <= (P.log_index, P.log_pos)` (a read is at `(log_index, ∞)`:
//!   it sees its whole entry);
//! * otherwise by real time: X is before P when X was known to be applied (an `ok` answer, or a
//!   lookup that saw it `completed`) before P was invoked; after P when X was first invoked after
//!   P completed; else the order is unknown.
//!
//! # Possible balances
//! An account's balance at P is `initial + Σ(transfers before P)`, plus any subset of the
//! transfers whose order (or whose applying, for unsettled ids) is unknown. The set of such values
//! is computed exactly while it stays small and as a `[min, max]` range beyond that, so every
//! check built on it is sound: it flags only balances no order of the history can explain.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::history::{Func, History, OpKind, Pair, Problem, TransferOp};
use crate::history::{Op, FLOAT};

/// Above this many distinct possible values, [`Possible`] degrades to a range.
const EXACT_VALUES_MAX: usize = 4096;
/// Above this many transfers of unknown order, [`Possible`] is a range from the start (keeps
/// every check linear in the history when many answers were lost).
const EXACT_DELTAS_MAX: usize = 20;

/// A place in one shard's Raft log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogKey {
    pub shard: Option<u32>,
    pub index: u64,
    pub pos: u32,
}

impl LogKey {
    /// The position a write reported, if it did.
    pub fn of_write(op: &Op) -> Option<Self> {
        op.log_index.map(|index| Self {
            shard: op.shard,
            index,
            pos: op.log_pos.unwrap_or(0),
        })
    }

    /// The point a read reported: after the whole entry at its index.
    pub fn of_read(op: &Op) -> Option<Self> {
        op.log_index.map(|index| Self {
            shard: op.shard,
            index,
            pos: u32::MAX,
        })
    }

    /// `(index, pos)`: the order within one shard.
    pub fn order(&self) -> (u64, u32) {
        (self.index, self.pos)
    }
}

impl fmt::Display for LogKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shard {
            Some(s) => write!(f, "shard {s} index {}", self.index)?,
            None => write!(f, "index {}", self.index)?,
        }
        if self.pos != u32::MAX {
            write!(f, " pos {}", self.pos)?;
        }
        Ok(())
    }
}

/// What the clients learned about a transfer id, over all its attempts.
#[derive(Clone, Copy, Debug)]
pub enum Outcome<'a> {
    /// Some attempt got a definite answer (the first such completion).
    Acked(&'a Op),
    /// Every attempt definitely failed.
    Failed,
    /// No definite answer and at least one unknown outcome.
    Unknown,
}

/// Whether a transfer moved money, as far as the history settles it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Yes,
    No,
    Maybe,
}

/// Everything about one transfer id.
#[derive(Clone, Debug)]
pub struct TransferInfo<'a> {
    pub transfer: &'a TransferOp,
    pub attempts: Vec<Pair<'a>>,
    pub outcome: Outcome<'a>,
    /// Its log position: the first one reported by an answer or a lookup, on the first shard
    /// any of its records names.
    pub key: Option<LogKey>,
    /// Earliest invoke of any attempt: it cannot have been applied before.
    pub lower_ns: u64,
    /// Earliest moment it was known applied (an `ok` completed, or a lookup saw it
    /// completed); `None` when never.
    pub upper_ns: Option<u64>,
    /// The status final lookups settled on: the one most nodes report (ties: lowest node).
    pub final_status: Option<&'a str>,
}

impl<'a> TransferInfo<'a> {
    /// The acknowledged status, if any.
    pub fn acked_status(&self) -> Option<&'a str> {
        match self.outcome {
            Outcome::Acked(op) => op.status.as_deref(),
            _ => None,
        }
    }

    /// Whether it moved money, by its final status (or, unsettled, by its answer).
    pub fn applied(&self) -> Applied {
        match self.final_status {
            Some("completed") => Applied::Yes,
            Some(_) => Applied::No,
            None => match (self.outcome, self.acked_status()) {
                (Outcome::Acked(_), Some("completed")) => Applied::Yes,
                (Outcome::Acked(_), _) | (Outcome::Failed, _) => Applied::No,
                (Outcome::Unknown, _) => Applied::Maybe,
            },
        }
    }

    /// The change it makes to `account` when applied.
    pub fn delta(&self, account: &str) -> i128 {
        let amount = i128::from(self.transfer.amount);
        if account == self.transfer.from {
            -amount
        } else if account == self.transfer.to {
            amount
        } else {
            0
        }
    }

    /// The first invoke, to print with a violation.
    pub fn first_invoke(&self) -> &'a Op {
        self.attempts[0].invoke
    }
}

/// An observation point: where a read or an answer sits in the history.
#[derive(Clone, Copy, Debug)]
pub struct Point {
    pub key: Option<LogKey>,
    pub invoke_ns: u64,
    pub complete_ns: u64,
}

/// Where a transfer sits relative to a [`Point`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rel {
    Before,
    After,
    Unknown,
}

/// The balances an account may show at a point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Possible {
    Exact(BTreeSet<i128>),
    Range(i128, i128),
}

impl Possible {
    pub fn contains(&self, value: i128) -> bool {
        match self {
            Possible::Exact(set) => set.contains(&value),
            Possible::Range(lo, hi) => (*lo..=*hi).contains(&value),
        }
    }

    /// The largest possible value.
    pub fn max(&self) -> i128 {
        match self {
            Possible::Exact(set) => set.last().copied().unwrap_or(i128::MIN),
            Possible::Range(_, hi) => *hi,
        }
    }

    /// The smallest possible value.
    pub fn min(&self) -> i128 {
        match self {
            Possible::Exact(set) => set.first().copied().unwrap_or(i128::MAX),
            Possible::Range(lo, _) => *lo,
        }
    }

    /// Adds `d` to every value.
    pub fn shift(self, d: i128) -> Self {
        match self {
            Possible::Exact(set) => Possible::Exact(set.into_iter().map(|v| v + d).collect()),
            Possible::Range(lo, hi) => Possible::Range(lo + d, hi + d),
        }
    }
}

impl fmt::Display for Possible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Possible::Exact(set) if set.len() == 1 => write!(f, "{}", self.min()),
            Possible::Exact(set) if set.len() <= 6 => {
                let values: Vec<String> = set.iter().map(i128::to_string).collect();
                write!(f, "one of {{{}}}", values.join(", "))
            }
            _ => write!(f, "between {} and {}", self.min(), self.max()),
        }
    }
}

/// The shared view of a history that every invariant reads.
#[derive(Debug)]
pub struct Ctx<'a> {
    pub history: &'a History,
    pub pairs: Vec<Pair<'a>>,
    pub problems: Vec<Problem<'a>>,
    pub transfers: BTreeMap<&'a str, TransferInfo<'a>>,
    /// Last `ok` FinalRead per node.
    pub final_reads: BTreeMap<u64, &'a Op>,
    /// Nodes that were asked for a FinalRead.
    pub final_read_nodes: BTreeSet<u64>,
    /// Last `ok` FinalLookup per transfer id and node.
    pub lookups: BTreeMap<&'a str, BTreeMap<u64, &'a Op>>,
    /// Nodes that were asked for any FinalLookup.
    pub lookup_nodes: BTreeSet<u64>,
    /// The transfers touching each account.
    pub by_account: BTreeMap<&'a str, Vec<Touch<'a>>>,
    /// Per account, the same transfers split for fast lookups (see [`AccountIndex`]).
    index: BTreeMap<&'a str, AccountIndex<'a>>,
}

/// One account's transfers arranged so that [`Ctx::possible`] at a point with a log position
/// costs a binary search, not a scan of the whole history: the applied transfers with a
/// position, per shard, sorted by it with running sums; everything else (no position, not
/// surely applied) in a short list scanned as before.
#[derive(Default, Debug)]
struct AccountIndex<'a> {
    shards: BTreeMap<Option<u32>, Ordered<'a>>,
    rest: Vec<Touch<'a>>,
}

#[derive(Default, Debug)]
struct Ordered<'a> {
    touches: Vec<Touch<'a>>,
    /// `sums[i]` = the deltas of `touches[..=i]`.
    sums: Vec<i128>,
    position: std::collections::HashMap<&'a str, usize>,
}

impl<'a> AccountIndex<'a> {
    fn build(touches: &[Touch<'a>]) -> Self {
        let mut index = AccountIndex::default();
        for touch in touches {
            match (touch.applied, touch.key) {
                (Applied::Yes, Some(key)) => index
                    .shards
                    .entry(key.shard)
                    .or_default()
                    .touches
                    .push(*touch),
                (Applied::No, _) => {}
                _ => index.rest.push(*touch),
            }
        }
        for ordered in index.shards.values_mut() {
            ordered
                .touches
                .sort_by_key(|t| t.key.map(|k| k.order()).unwrap_or_default());
            let mut sum = 0i128;
            for (i, touch) in ordered.touches.iter().enumerate() {
                sum += touch.delta;
                ordered.sums.push(sum);
                ordered.position.insert(touch.id, i);
            }
        }
        index
    }
}

/// A transfer as one account sees it (a copy of what [`Ctx::possible`] needs).
#[derive(Clone, Copy, Debug)]
pub struct Touch<'a> {
    pub id: &'a str,
    pub delta: i128,
    pub applied: Applied,
    pub key: Option<LogKey>,
    pub lower_ns: u64,
    pub upper_ns: Option<u64>,
}

impl<'a> Ctx<'a> {
    /// Indexes a history.
    pub fn new(history: &'a History) -> Self {
        let pairing = history.pairs();
        let mut ctx = Ctx {
            history,
            pairs: pairing.pairs,
            problems: pairing.problems,
            transfers: BTreeMap::new(),
            final_reads: BTreeMap::new(),
            final_read_nodes: BTreeSet::new(),
            lookups: BTreeMap::new(),
            lookup_nodes: BTreeSet::new(),
            by_account: BTreeMap::new(),
            index: BTreeMap::new(),
        };
        ctx.index_finals();
        ctx.index_transfers();
        ctx.index = ctx
            .by_account
            .iter()
            .map(|(account, touches)| (*account, AccountIndex::build(touches)))
            .collect();
        ctx
    }

    fn index_finals(&mut self) {
        for pair in &self.pairs {
            let node = pair.invoke.node;
            match pair.f() {
                Func::FinalRead => {
                    self.final_read_nodes.insert(node);
                    if let Some(ok) = pair.ok().filter(|ok| ok.balances.is_some()) {
                        self.final_reads.insert(node, ok);
                    }
                }
                Func::FinalLookup => {
                    self.lookup_nodes.insert(node);
                    let ok = pair.ok().filter(|ok| ok.status.is_some());
                    if let (Some(ok), Some(t)) = (ok, pair.transfer()) {
                        self.lookups
                            .entry(t.id.as_str())
                            .or_default()
                            .insert(node, ok);
                    }
                }
                _ => {}
            }
        }
    }

    fn index_transfers(&mut self) {
        let mut attempts: BTreeMap<&'a str, Vec<Pair<'a>>> = BTreeMap::new();
        for pair in &self.pairs {
            if let Some(t) = pair.transfer().filter(|_| pair.invoke.is_transfer()) {
                attempts.entry(t.id.as_str()).or_default().push(*pair);
            }
        }
        let seen = self.runtime_completed();
        for (id, attempts) in attempts {
            let info = self.transfer_info(attempts, seen.get(id).copied());
            for account in [info.transfer.from.as_str(), info.transfer.to.as_str()] {
                self.by_account.entry(account).or_default().push(Touch {
                    id,
                    delta: info.delta(account),
                    applied: info.applied(),
                    key: info.key,
                    lower_ns: info.lower_ns,
                    upper_ns: info.upper_ns,
                });
            }
            self.transfers.insert(id, info);
        }
    }

    /// Per id, the earliest completion of a run-time lookup that saw it `completed`.
    fn runtime_completed(&self) -> BTreeMap<&'a str, u64> {
        let mut seen: BTreeMap<&'a str, u64> = BTreeMap::new();
        for pair in self.pairs.iter().filter(|p| p.f() == Func::Lookup) {
            let (Some(ok), Some(t)) = (pair.ok(), pair.transfer()) else {
                continue;
            };
            if ok.status.as_deref() == Some("completed") {
                let at = seen.entry(t.id.as_str()).or_insert(ok.time_ns);
                *at = (*at).min(ok.time_ns);
            }
        }
        seen
    }

    fn transfer_info(&self, attempts: Vec<Pair<'a>>, seen_ns: Option<u64>) -> TransferInfo<'a> {
        let first = attempts[0];
        let transfer = first.transfer().expect("indexed attempts carry a transfer");
        let acked = attempts
            .iter()
            .filter_map(Pair::ok)
            .min_by_key(|ok| ok.time_ns);
        let outcome = match acked {
            Some(op) => Outcome::Acked(op),
            None if attempts.iter().all(|p| p.outcome() == OpKind::Fail) => Outcome::Failed,
            None => Outcome::Unknown,
        };
        let lookups = self.lookups.get(transfer.id.as_str());
        let reports = || {
            let answers = attempts.iter().filter_map(Pair::ok);
            answers.chain(lookups.into_iter().flat_map(|m| m.values().copied()))
        };
        // A lookup need not name the shard: the transfer's is the first any record names.
        let shard = attempts
            .iter()
            .flat_map(|p| [Some(p.invoke), p.completion])
            .flatten()
            .chain(reports())
            .find_map(|op| op.shard);
        let key = reports()
            .find_map(LogKey::of_write)
            .map(|k| LogKey { shard, ..k });
        let completed_ack = acked
            .filter(|op| op.status.as_deref() == Some("completed"))
            .map(|op| op.time_ns);
        let upper_ns = match (completed_ack, seen_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        TransferInfo {
            transfer,
            lower_ns: attempts.iter().map(|p| p.invoke.time_ns).min().unwrap_or(0),
            attempts,
            outcome,
            key,
            upper_ns,
            final_status: lookups.and_then(|m| settled_status(m)),
        }
    }

    /// Where transfer `x` sits relative to `p`.
    pub fn relation(x: &TransferInfo<'_>, p: &Point) -> Rel {
        place(x.key, x.lower_ns, x.upper_ns, p)
    }

    /// The balances `account` may show at `p`, leaving out transfer `exclude`.
    pub fn possible(&self, account: &str, p: &Point, exclude: Option<&str>) -> Possible {
        let mut base = i128::from(self.initial(account));
        let mut exact = 0i128;
        let mut unsure = Vec::new();
        let mut consider = |x: &Touch<'_>| {
            if Some(x.id) == exclude || x.applied == Applied::No {
                return;
            }
            match (place(x.key, x.lower_ns, x.upper_ns, p), x.applied) {
                (Rel::After, _) => {}
                (Rel::Before, Applied::Yes) => base += x.delta,
                _ => unsure.push(x.delta),
            }
        };
        let Some(index) = self.index.get(account) else {
            return subset_sums(&unsure).shift(base);
        };
        for x in &index.rest {
            consider(x);
        }
        for (shard, ordered) in &index.shards {
            match p.key {
                // Same shard: exactly the transfers at or before the point's position.
                Some(pk) if pk.shard == *shard => {
                    let before = ordered
                        .touches
                        .partition_point(|t| t.key.is_some_and(|k| k.order() <= pk.order()));
                    if before > 0 {
                        exact += ordered.sums[before - 1];
                    }
                    if let Some(i) = exclude.and_then(|id| ordered.position.get(id)) {
                        if *i < before {
                            exact -= ordered.touches[*i].delta;
                        }
                    }
                }
                _ => ordered.touches.iter().for_each(&mut consider),
            }
        }
        subset_sums(&unsure).shift(base + exact)
    }

    /// The balance an account had when the workload started (0 when absent).
    pub fn initial(&self, account: &str) -> i64 {
        self.history.initial.get(account).copied().unwrap_or(0)
    }

    /// Whether `account` may go below zero.
    pub fn is_float(account: &str) -> bool {
        account == FLOAT
    }
}

/// Where a transfer at `key`, first sent at `lower_ns` and known applied at `upper_ns`, sits
/// relative to `p` (the rules in the module documentation).
fn place(key: Option<LogKey>, lower_ns: u64, upper_ns: Option<u64>, p: &Point) -> Rel {
    if let (Some(xk), Some(pk)) = (key, p.key) {
        if xk.shard == pk.shard {
            return if xk.order() <= pk.order() {
                Rel::Before
            } else {
                Rel::After
            };
        }
    }
    if upper_ns.is_some_and(|u| u < p.invoke_ns) {
        Rel::Before
    } else if lower_ns > p.complete_ns {
        Rel::After
    } else {
        Rel::Unknown
    }
}

/// The status most nodes report; ties go to the lowest node id.
fn settled_status<'a>(by_node: &BTreeMap<u64, &'a Op>) -> Option<&'a str> {
    let mut counts: Vec<(&'a str, usize)> = Vec::new();
    for op in by_node.values() {
        let Some(status) = op.status.as_deref() else {
            continue;
        };
        match counts.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => counts.push((status, 1)),
        }
    }
    let best = counts.iter().map(|(_, n)| *n).max()?;
    counts.into_iter().find(|(_, n)| *n == best).map(|(s, _)| s)
}

/// Every sum of a subset of `deltas` (exact while small, else a range).
fn subset_sums(deltas: &[i128]) -> Possible {
    if deltas.len() > EXACT_DELTAS_MAX {
        let lo = deltas.iter().filter(|d| **d < 0).sum::<i128>();
        let hi = deltas.iter().filter(|d| **d > 0).sum::<i128>();
        return Possible::Range(lo, hi);
    }
    let mut set = BTreeSet::from([0_i128]);
    for (i, d) in deltas.iter().enumerate() {
        let shifted: Vec<i128> = set.iter().map(|v| v + d).collect();
        set.extend(shifted);
        if set.len() > EXACT_VALUES_MAX {
            let rest = &deltas[i + 1..];
            let lo =
                set.first().copied().unwrap_or(0) + rest.iter().filter(|d| **d < 0).sum::<i128>();
            let hi =
                set.last().copied().unwrap_or(0) + rest.iter().filter(|d| **d > 0).sum::<i128>();
            return Possible::Range(lo, hi);
        }
    }
    Possible::Exact(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_sums_are_exact_then_ranges() {
        let p = subset_sums(&[5, -3]);
        assert_eq!(p, Possible::Exact(BTreeSet::from([-3, 0, 2, 5])));
        let many: Vec<i128> = (0..16).map(|i| 1_i128 << i).collect();
        let r = subset_sums(&many);
        assert!(matches!(r, Possible::Range(0, _)), "{r:?}");
        assert_eq!(r.max(), many.iter().sum::<i128>());
        assert!(r.contains(1001));
        assert!(!r.contains(-1));
        let lots: Vec<i128> = (0..30).map(|i| if i % 2 == 0 { 5 } else { -3 }).collect();
        assert_eq!(subset_sums(&lots), Possible::Range(-45, 75));
        assert_eq!(format!("{}", subset_sums(&[])), "0");
    }
}

//! The operation history of a chaos run: what every client asked, when, of which node, and what
//! it heard back.
//!
//! # Format
//! JSON lines. The first line is a header object
//! `{"format": "cellpay-history/1", "seed": 42, "initial": {"float": -1000, "+2547…": 1000},
//! "healed_ns": 61000000000}`; every further line is one [`Op`]. Enum values are `snake_case`;
//! absent optional fields are left out.
//!
//! # Processes
//! A *process* is one logical client with at most one operation in flight. Each operation is an
//! [`OpKind::Invoke`] followed, later in the file, by exactly one completion of the same process
//! and [`Func`]: [`OpKind::Ok`], [`OpKind::Fail`] or [`OpKind::Info`]. An invoke with no
//! completion (the runner stopped waiting) counts as `info`. [`History::pairs`] matches them.
//!
//! # Meaning of the completions
//! * [`Func::Transfer`] (and a [`Func::Probe`] carrying a `transfer`): `ok` = a definite answer,
//!   201 `completed` (with `from_balance`/`to_balance`) or 422 `rejected` (with `code`), in
//!   `status`; `fail` = definitely not applied (400 validation error, connection refused before
//!   the request was sent, 429 `overloaded`); `info` = unknown outcome (timeout, 5xx, reset).
//!   A retry after `info` is a new invoke with the *same* transfer id and body (it may go to
//!   another node, from the same or another process).
//! * [`Func::Read`] (and a [`Func::Probe`] carrying `account` but no `transfer`): `ok` carries
//!   `account`, `balance`, `available` and, when the server reports it, `shard` + `log_index`:
//!   the applied index of the state that was actually read (not merely the read index).
//! * [`Func::Lookup`] / [`Func::FinalLookup`]: the transfer id in `transfer`; `ok` carries
//!   `status` (`completed|pending|rejected|voided|reversed|not_found`), from the node in `node`,
//!   and, when the server reports it, the *transfer's* log position in `log_index`/`log_pos`
//!   (this places a transfer whose answer was lost exactly in the log).
//! * [`Func::ReadAll`] / [`Func::FinalRead`]: `ok` carries `balances` of every account (system
//!   accounts included). A `ReadAll` must be a consistent snapshot (the checker asserts that its
//!   sum is 0); a `FinalRead` is taken per node after healing and quiescence, and may carry the
//!   replica's applied index in `log_index` and a state digest in `digest`.
//! * Writes report their place in the Raft log as `shard` + `log_index` + `log_pos` (position of
//!   the transfer inside a batched entry) when the server tells it. `shard` names the Raft log
//!   `log_index` counts in; indices of different shards are never compared.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// The `format` value of the header line.
pub const FORMAT: &str = "cellpay-history/1";
/// The one account allowed below zero.
pub const FLOAT: &str = "float";

/// Which step of an operation a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// The request is about to be sent.
    Invoke,
    /// A definite answer arrived.
    Ok,
    /// Definitely had no effect.
    Fail,
    /// Unknown outcome.
    Info,
}

/// What an operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Func {
    /// `POST /v1/transfers`.
    Transfer,
    /// `GET /v1/accounts/{id}`.
    Read,
    /// `GET /v1/transfers/{id}` during the run.
    Lookup,
    /// A consistent read of every account during the run.
    ReadAll,
    /// Every account, from one node, after healing.
    FinalRead,
    /// One transfer id, from one node, after healing.
    FinalLookup,
    /// The post-healing availability probe: a transfer (`transfer` set) or a read (`account`).
    Probe,
}

impl fmt::Display for Func {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Func::Transfer => "transfer",
            Func::Read => "read",
            Func::Lookup => "lookup",
            Func::ReadAll => "read_all",
            Func::FinalRead => "final_read",
            Func::FinalLookup => "final_lookup",
            Func::Probe => "probe",
        };
        f.write_str(name)
    }
}

/// The body of a transfer request (the fields the checker models; fees are 0 in the workload).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TransferOp {
    /// The client's idempotency key.
    pub id: String,
    /// `p2p`, `issue`, …
    pub kind: String,
    /// Payer account.
    pub from: String,
    /// Payee account.
    pub to: String,
    /// Minor units.
    pub amount: u64,
}

impl TransferOp {
    /// A transfer body.
    pub fn new(id: &str, kind: &str, from: &str, to: &str, amount: u64) -> Self {
        Self {
            id: id.to_owned(),
            kind: kind.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
            amount,
        }
    }
}

/// One record of the history. See the module documentation for what each field means per
/// [`Func`] and [`OpKind`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub process: u64,
    pub kind: OpKind,
    pub f: Func,
    /// Nanoseconds since the run started (monotonic clock).
    pub time_ns: u64,
    /// The node the request was sent to.
    pub node: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_pos: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferOp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balances: Option<BTreeMap<String, i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_balance: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_balance: Option<i64>,
    /// A replica's state digest (on `FinalRead`), when the server exposes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Op {
    /// A record with every optional field empty.
    pub fn new(process: u64, kind: OpKind, f: Func, time_ns: u64, node: u64) -> Self {
        Self {
            process,
            kind,
            f,
            time_ns,
            node,
            shard: None,
            log_index: None,
            log_pos: None,
            transfer: None,
            account: None,
            balance: None,
            available: None,
            balances: None,
            status: None,
            code: None,
            from_balance: None,
            to_balance: None,
            digest: None,
            error: None,
        }
    }

    /// An invoke record.
    pub fn invoke(process: u64, f: Func, time_ns: u64, node: u64) -> Self {
        Self::new(process, OpKind::Invoke, f, time_ns, node)
    }

    /// The completion of this invoke: same process, function, node, shard, transfer and
    /// account; the answer's fields are left for the caller to fill in.
    pub fn complete(&self, kind: OpKind, time_ns: u64) -> Self {
        let mut op = Self::new(self.process, kind, self.f, time_ns, self.node);
        op.shard = self.shard;
        op.transfer = self.transfer.clone();
        op.account = self.account.clone();
        op
    }

    pub fn with_transfer(mut self, transfer: TransferOp) -> Self {
        self.transfer = Some(transfer);
        self
    }

    pub fn with_account(mut self, account: &str) -> Self {
        self.account = Some(account.to_owned());
        self
    }

    pub fn with_shard(mut self, shard: u32) -> Self {
        self.shard = Some(shard);
        self
    }

    /// The Raft log position the server reported.
    pub fn with_log(mut self, index: u64, pos: Option<u32>) -> Self {
        self.log_index = Some(index);
        self.log_pos = pos;
        self
    }

    pub fn with_status(mut self, status: &str) -> Self {
        self.status = Some(status.to_owned());
        self
    }

    pub fn with_code(mut self, code: &str) -> Self {
        self.code = Some(code.to_owned());
        self
    }

    /// A single-account read's answer.
    pub fn with_balance(mut self, balance: i64, available: i64) -> Self {
        self.balance = Some(balance);
        self.available = Some(available);
        self
    }

    /// A completed transfer's answer.
    pub fn with_transfer_balances(mut self, from_balance: i64, to_balance: i64) -> Self {
        self.from_balance = Some(from_balance);
        self.to_balance = Some(to_balance);
        self
    }

    pub fn with_balances(mut self, balances: BTreeMap<String, i64>) -> Self {
        self.balances = Some(balances);
        self
    }

    pub fn with_digest(mut self, digest: &str) -> Self {
        self.digest = Some(digest.to_owned());
        self
    }

    pub fn with_error(mut self, error: &str) -> Self {
        self.error = Some(error.to_owned());
        self
    }

    /// A money movement: a `Transfer`, or a `Probe` carrying a transfer.
    pub fn is_transfer(&self) -> bool {
        self.transfer.is_some() && matches!(self.f, Func::Transfer | Func::Probe)
    }

    /// A single-account read: a `Read`, or a `Probe` carrying an account and no transfer.
    pub fn is_read(&self) -> bool {
        match self.f {
            Func::Read => true,
            Func::Probe => self.transfer.is_none() && self.account.is_some(),
            _ => false,
        }
    }

    /// The record as one JSON line (no newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"unserialisable\": \"{e}\"}}"))
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

/// The first line of a history file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Header {
    format: String,
    seed: u64,
    initial: BTreeMap<String, i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    healed_ns: Option<u64>,
}

/// A whole run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    /// The seed that drove the run (printed with every violation).
    pub seed: u64,
    /// Balances when the workload started, `float` and `fees` included (they sum to 0).
    pub initial: BTreeMap<String, i64>,
    /// When the nemesis healed every fault (ns since start); `None` when unknown.
    pub healed_ns: Option<u64>,
    /// Every record, in the order they were recorded.
    pub ops: Vec<Op>,
}

impl History {
    /// An empty history.
    pub fn new(seed: u64, initial: BTreeMap<String, i64>) -> Self {
        Self {
            seed,
            initial,
            healed_ns: None,
            ops: Vec::new(),
        }
    }

    /// Appends a record.
    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    /// Writes the header line and one line per op.
    pub fn write_to(&self, out: &mut impl Write) -> anyhow::Result<()> {
        let header = Header {
            format: FORMAT.to_owned(),
            seed: self.seed,
            initial: self.initial.clone(),
            healed_ns: self.healed_ns,
        };
        serde_json::to_writer(&mut *out, &header).context("writing the history header")?;
        out.write_all(b"\n")?;
        for op in &self.ops {
            serde_json::to_writer(&mut *out, op).context("writing a history op")?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        Ok(())
    }

    /// Reads what [`History::write_to`] wrote. Blank lines are skipped.
    pub fn read_from(input: impl BufRead) -> anyhow::Result<Self> {
        let mut history: Option<History> = None;
        for (number, line) in input.lines().enumerate() {
            let line = line.with_context(|| format!("reading history line {}", number + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            match history.as_mut() {
                None => {
                    let header: Header = serde_json::from_str(&line)
                        .with_context(|| format!("history line {}: bad header", number + 1))?;
                    if header.format != FORMAT {
                        bail!("history format {:?}, expected {FORMAT:?}", header.format);
                    }
                    let mut h = History::new(header.seed, header.initial);
                    h.healed_ns = header.healed_ns;
                    history = Some(h);
                }
                Some(h) => h.ops.push(
                    serde_json::from_str(&line)
                        .with_context(|| format!("history line {}: bad op", number + 1))?,
                ),
            }
        }
        history.context("empty history: no header line")
    }

    /// Writes the history to `path` as JSON lines.
    pub fn write_jsonl(&self, path: &Path) -> anyhow::Result<()> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        self.write_to(&mut BufWriter::new(file))
    }

    /// Reads a history written by [`History::write_jsonl`].
    pub fn read_jsonl(path: &Path) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Self::read_from(BufReader::new(file)).with_context(|| format!("in {}", path.display()))
    }

    /// Matches every invoke with its completion. See [`Pairing`].
    pub fn pairs(&self) -> Pairing<'_> {
        let mut pairs: Vec<Pair<'_>> = Vec::new();
        let mut problems = Vec::new();
        let mut in_flight: BTreeMap<u64, usize> = BTreeMap::new();
        for op in &self.ops {
            if op.kind == OpKind::Invoke {
                if let Some(previous) = in_flight.insert(op.process, pairs.len()) {
                    let earlier = pairs[previous].invoke;
                    problems.push(Problem {
                        op: earlier,
                        message: format!(
                            "process {} invoked a new op before this one completed",
                            op.process
                        ),
                    });
                }
                pairs.push(Pair {
                    invoke: op,
                    completion: None,
                });
                continue;
            }
            let Some(slot) = in_flight.remove(&op.process) else {
                problems.push(Problem {
                    op,
                    message: format!("completion of process {} without an invoke", op.process),
                });
                continue;
            };
            let pair = &mut pairs[slot];
            if pair.invoke.f != op.f {
                problems.push(Problem {
                    op,
                    message: format!("completes a {} invoke with a {}", pair.invoke.f, op.f),
                });
            }
            if op.time_ns < pair.invoke.time_ns {
                problems.push(Problem {
                    op,
                    message: "completion is earlier than its invoke".to_owned(),
                });
            }
            pair.completion = Some(op);
        }
        Pairing { pairs, problems }
    }
}

/// One operation: an invoke and its completion (`None` when it never completed).
#[derive(Clone, Copy, Debug)]
pub struct Pair<'a> {
    pub invoke: &'a Op,
    pub completion: Option<&'a Op>,
}

impl<'a> Pair<'a> {
    /// The outcome; a missing completion is `Info`.
    pub fn outcome(&self) -> OpKind {
        self.completion.map_or(OpKind::Info, |c| c.kind)
    }

    /// The completion when it is `Ok`.
    pub fn ok(&self) -> Option<&'a Op> {
        self.completion.filter(|c| c.kind == OpKind::Ok)
    }

    /// The transfer this op is about (from the invoke).
    pub fn transfer(&self) -> Option<&'a TransferOp> {
        self.invoke.transfer.as_ref()
    }

    pub fn f(&self) -> Func {
        self.invoke.f
    }
}

/// A well-formedness problem found while pairing.
#[derive(Clone, Debug)]
pub struct Problem<'a> {
    pub op: &'a Op,
    pub message: String,
}

/// The result of [`History::pairs`]: operations in invoke order, and the records that break
/// the process discipline (a second invoke while one is in flight — the first is then left
/// without completion; a completion without invoke or of another function; a completion
/// earlier than its invoke).
#[derive(Clone, Debug)]
pub struct Pairing<'a> {
    pub pairs: Vec<Pair<'a>>,
    pub problems: Vec<Problem<'a>>,
}

/// Collects ops from many tasks during a run, stamping each with the time since
/// [`Recorder::new`] under one lock, so the recorded order is the time order.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    state: Mutex<RecorderState>,
}

#[derive(Debug, Default)]
struct RecorderState {
    ops: Vec<Op>,
    healed_ns: Option<u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// Starts the run's clock.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            state: Mutex::new(RecorderState::default()),
        }
    }

    /// Nanoseconds since the run started.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Stamps `op.time_ns` with the current time, records it and returns the stamped copy
    /// (keep an invoke's copy to build its completion with [`Op::complete`]).
    pub fn record(&self, mut op: Op) -> Op {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        op.time_ns = self.now_ns();
        state.ops.push(op.clone());
        op
    }

    /// Notes that every fault is healed now; returns the time.
    pub fn mark_healed(&self) -> u64 {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = self.now_ns();
        state.healed_ns = Some(now);
        now
    }

    /// Everything recorded so far, moved out (the recorder is left empty).
    pub fn take(&self, seed: u64, initial: BTreeMap<String, i64>) -> History {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        History {
            seed,
            initial,
            healed_ns: state.healed_ns,
            ops: std::mem::take(&mut state.ops),
        }
    }

    /// How `process`'s latest record ended (or `Invoke` while in flight).
    pub fn last_of(&self, process: u64) -> Option<OpKind> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state
            .ops
            .iter()
            .rev()
            .find(|op| op.process == process)
            .map(|op| op.kind)
    }

    /// Every transfer id sent so far (by clients or probes).
    pub fn transfer_ids(&self) -> std::collections::BTreeSet<String> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state
            .ops
            .iter()
            .filter(|op| matches!(op.f, Func::Transfer | Func::Probe))
            .filter_map(|op| op.transfer.as_ref().map(|t| t.id.clone()))
            .collect()
    }

    /// A copy of everything recorded so far.
    pub fn snapshot(&self, seed: u64, initial: BTreeMap<String, i64>) -> History {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        History {
            seed,
            initial,
            healed_ns: state.healed_ns,
            ops: state.ops.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> History {
        let mut initial = BTreeMap::new();
        initial.insert(FLOAT.to_owned(), -100);
        initial.insert("+254700000001".to_owned(), 100);
        let mut h = History::new(7, initial);
        h.healed_ns = Some(5);
        let t = TransferOp::new("t1", "p2p", "+254700000001", "+254700000002", 10);
        let inv = Op::invoke(1, Func::Transfer, 1, 2).with_transfer(t);
        let ok = inv
            .complete(OpKind::Ok, 3)
            .with_status("completed")
            .with_transfer_balances(90, 10)
            .with_log(4, Some(0));
        h.push(inv);
        h.push(ok);
        h
    }

    #[test]
    fn round_trips_through_json_lines() {
        let h = sample();
        let mut bytes = Vec::new();
        h.write_to(&mut bytes).expect("write");
        let text = String::from_utf8(bytes.clone()).expect("utf8");
        assert!(text.starts_with("{\"format\":\"cellpay-history/1\""));
        assert!(text.contains("\"kind\":\"invoke\""));
        assert!(!text.contains("null"), "absent fields are left out: {text}");
        let back = History::read_from(&bytes[..]).expect("read");
        assert_eq!(back, h);
    }

    #[test]
    fn rejects_a_foreign_header_and_reports_the_line() {
        let err = History::read_from(&b"{\"format\":\"x\",\"seed\":1,\"initial\":{}}\n"[..])
            .expect_err("bad format");
        assert!(err.to_string().contains("format"));
        let text = "{\"format\":\"cellpay-history/1\",\"seed\":1,\"initial\":{}}\n{\"bogus\":1}\n";
        let err = History::read_from(text.as_bytes()).expect_err("bad op");
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        assert!(History::read_from(&b""[..]).is_err());
    }

    #[test]
    fn pairs_invokes_with_completions_and_flags_breaches() {
        let mut h = sample();
        h.push(Op::invoke(2, Func::Read, 6, 1).with_account(FLOAT));
        h.push(Op::invoke(2, Func::Read, 7, 1).with_account(FLOAT));
        h.push(Op::new(9, OpKind::Ok, Func::Read, 8, 1));
        let pairing = h.pairs();
        assert_eq!(pairing.pairs.len(), 3);
        assert_eq!(pairing.pairs[0].outcome(), OpKind::Ok);
        assert_eq!(pairing.pairs[1].outcome(), OpKind::Info);
        assert_eq!(pairing.problems.len(), 2, "{:?}", pairing.problems);
    }

    #[test]
    fn recorder_stamps_in_order() {
        let r = Recorder::new();
        let a = r.record(Op::invoke(1, Func::Read, 0, 1));
        let b = r.record(a.complete(OpKind::Ok, 0));
        r.mark_healed();
        let h = r.snapshot(3, BTreeMap::new());
        assert_eq!(h.ops.len(), 2);
        assert!(a.time_ns <= b.time_ns);
        assert!(h.healed_ns.is_some());
    }
}

//! The checker's self-test: clean histories pass with no violation; histories with planted bugs
//! are caught by the right invariant. Also a JSON-lines round trip, and a property test that
//! simulates a correct cluster under concurrency, retries and lost answers (the checker must
//! never flag it) and then plants a bug in it (the checker must always flag it).

use std::collections::BTreeMap;

use chaos_tests::checker::{check, Report};
use chaos_tests::history::{Func, History, Op, OpKind, TransferOp, FLOAT};
use proptest::prelude::*;

const A: &str = "+254700000001";
const B: &str = "+254700000002";
const C: &str = "+254700000003";
const FEES: &str = "fees";
const NODES: [u64; 3] = [1, 2, 3];
const MS: u64 = 1_000_000;

/// Builds histories of a correct single-shard cluster step by step; tests then plant bugs.
struct Builder {
    h: History,
    now: u64,
    index: u64,
    truth: BTreeMap<String, i64>,
    status: BTreeMap<String, &'static str>,
    bodies: BTreeMap<String, TransferOp>,
    /// Log position of every transfer the "cluster" recorded.
    keys: BTreeMap<String, (u64, u32)>,
    next_process: u64,
}

impl Builder {
    fn new() -> Self {
        let initial: BTreeMap<String, i64> =
            [(FLOAT, -3000), (FEES, 0), (A, 1000), (B, 1000), (C, 1000)]
                .into_iter()
                .map(|(a, b)| (a.to_owned(), b))
                .collect();
        Self {
            h: History::new(42, initial.clone()),
            now: 0,
            index: 0,
            truth: initial,
            status: BTreeMap::new(),
            bodies: BTreeMap::new(),
            keys: BTreeMap::new(),
            // Above the simulation's client processes.
            next_process: 1000,
        }
    }

    fn tick(&mut self) -> u64 {
        self.now += MS;
        self.now
    }

    fn process(&mut self) -> u64 {
        self.next_process += 1;
        self.next_process
    }

    fn body(&mut self, id: &str, from: &str, to: &str, amount: u64) -> TransferOp {
        let t = TransferOp::new(id, "p2p", from, to, amount);
        self.bodies.insert(id.to_owned(), t.clone());
        self.status.entry(id.to_owned()).or_insert("not_found");
        t
    }

    /// Moves the money in the "cluster"; returns the payer's and payee's balances after.
    fn apply(&mut self, id: &str) -> (i64, i64) {
        let t = self.bodies[id].clone();
        let amount = i64::try_from(t.amount).expect("small amount");
        *self.truth.entry(t.from.clone()).or_insert(0) -= amount;
        *self.truth.entry(t.to.clone()).or_insert(0) += amount;
        self.status.insert(id.to_owned(), "completed");
        (self.truth[&t.from], self.truth[&t.to])
    }

    fn invoke(&mut self, f: Func, node: u64) -> Op {
        let p = self.process();
        Op::invoke(p, f, self.tick(), node).with_shard(0)
    }

    fn transfer_ok(&mut self, id: &str, from: &str, to: &str, amount: u64) -> Op {
        let t = self.body(id, from, to, amount);
        let inv = self.invoke(Func::Transfer, 1).with_transfer(t);
        self.h.push(inv.clone());
        let (fb, tb) = self.apply(id);
        self.index += 1;
        self.keys.insert(id.to_owned(), (self.index, 0));
        let ok = inv
            .complete(OpKind::Ok, self.tick())
            .with_status("completed")
            .with_transfer_balances(fb, tb)
            .with_log(self.index, Some(0));
        self.h.push(ok.clone());
        ok
    }

    fn transfer_rejected(&mut self, id: &str, from: &str, to: &str, amount: u64) {
        let t = self.body(id, from, to, amount);
        let inv = self.invoke(Func::Transfer, 2).with_transfer(t);
        self.h.push(inv.clone());
        self.index += 1;
        self.keys.insert(id.to_owned(), (self.index, 0));
        self.status.insert(id.to_owned(), "rejected");
        let ok = inv
            .complete(OpKind::Ok, self.tick())
            .with_status("rejected")
            .with_code("insufficient_funds")
            .with_log(self.index, Some(0));
        self.h.push(ok);
    }

    /// A lost answer; the cluster applied it or not.
    fn transfer_info(&mut self, id: &str, from: &str, to: &str, amount: u64, applied: bool) {
        let t = self.body(id, from, to, amount);
        let inv = self.invoke(Func::Transfer, 3).with_transfer(t);
        self.h.push(inv.clone());
        if applied {
            self.apply(id);
            self.index += 1;
            self.keys.insert(id.to_owned(), (self.index, 0));
        }
        let info = inv
            .complete(OpKind::Info, self.tick())
            .with_error("timeout");
        self.h.push(info);
    }

    fn transfer_fail(&mut self, id: &str, from: &str, to: &str, amount: u64) {
        let t = self.body(id, from, to, amount);
        let inv = self.invoke(Func::Transfer, 1).with_transfer(t);
        self.h.push(inv.clone());
        let fail = inv
            .complete(OpKind::Fail, self.tick())
            .with_error("connection refused");
        self.h.push(fail);
    }

    /// A read of `account` answered `balance` at `index`.
    fn read_as(&mut self, account: &str, balance: i64, index: u64) -> Op {
        let inv = self.invoke(Func::Read, 2).with_account(account);
        self.h.push(inv.clone());
        let ok = inv
            .complete(OpKind::Ok, self.tick())
            .with_balance(balance, balance)
            .with_log(index, None);
        self.h.push(ok.clone());
        ok
    }

    fn read(&mut self, account: &str) -> Op {
        let balance = self.truth[account];
        self.read_as(account, balance, self.index)
    }

    fn lookup(&mut self, id: &str) {
        let inv = self
            .invoke(Func::Lookup, 3)
            .with_transfer(TransferOp::new(id, "", "", "", 0));
        self.h.push(inv.clone());
        let mut ok = inv
            .complete(OpKind::Ok, self.tick())
            .with_status(self.status[id]);
        if let Some(&(index, pos)) = self.keys.get(id) {
            ok = ok.with_log(index, Some(pos));
        }
        self.h.push(ok);
    }

    fn read_all(&mut self) {
        let inv = self.invoke(Func::ReadAll, 1);
        self.h.push(inv.clone());
        let ok = inv
            .complete(OpKind::Ok, self.tick())
            .with_balances(self.truth.clone());
        self.h.push(ok);
    }

    /// Heals, probes after `probe_ms`, then reads everything from every node.
    fn finish_with(mut self, probe_ms: u64) -> History {
        self.h.healed_ns = Some(self.tick());
        self.now += probe_ms * MS;
        let t = self.body("probe-1", FLOAT, C, 1);
        let inv = self.invoke(Func::Probe, 1).with_transfer(t);
        self.h.push(inv.clone());
        let (fb, tb) = self.apply("probe-1");
        self.index += 1;
        self.keys.insert("probe-1".to_owned(), (self.index, 0));
        let ok = inv
            .complete(OpKind::Ok, self.tick())
            .with_status("completed")
            .with_transfer_balances(fb, tb)
            .with_log(self.index, Some(0));
        self.h.push(ok);
        let inv = self.invoke(Func::Probe, 2).with_account(C);
        self.h.push(inv.clone());
        let ok = inv
            .complete(OpKind::Ok, self.tick())
            .with_balance(self.truth[C], self.truth[C])
            .with_log(self.index, None);
        self.h.push(ok);
        self.finals();
        self.h
    }

    fn finals(&mut self) {
        let ids: Vec<String> = self.status.keys().cloned().collect();
        for node in NODES {
            let p = self.process();
            let inv = Op::invoke(p, Func::FinalRead, self.tick(), node).with_shard(0);
            self.h.push(inv.clone());
            let ok = inv
                .complete(OpKind::Ok, self.tick())
                .with_balances(self.truth.clone())
                .with_log(self.index, None)
                .with_digest("d1");
            self.h.push(ok);
            for id in &ids {
                let inv = Op::invoke(p, Func::FinalLookup, self.tick(), node)
                    .with_transfer(TransferOp::new(id, "", "", "", 0));
                self.h.push(inv.clone());
                let mut ok = inv
                    .complete(OpKind::Ok, self.tick())
                    .with_status(self.status[id.as_str()]);
                if let Some(&(index, pos)) = self.keys.get(id) {
                    ok = ok.with_log(index, Some(pos));
                }
                self.h.push(ok);
            }
        }
    }

    fn finish(self) -> History {
        self.finish_with(500)
    }
}

/// Changes `account` by `delta` in the final read of `node` (every node when `None`).
fn edit_final_balance(h: &mut History, node: Option<u64>, account: &str, delta: i64) {
    for op in &mut h.ops {
        if op.f == Func::FinalRead && op.kind == OpKind::Ok && node.is_none_or(|n| n == op.node) {
            let balances = op.balances.as_mut().expect("final reads carry balances");
            *balances.get_mut(account).expect("known account") += delta;
        }
    }
}

/// Sets the final lookup status of `id` on every node.
fn set_final_status(h: &mut History, id: &str, status: &str) {
    for op in &mut h.ops {
        let is_it = op.transfer.as_ref().is_some_and(|t| t.id == id);
        if op.f == Func::FinalLookup && op.kind == OpKind::Ok && is_it {
            op.status = Some(status.to_owned());
        }
    }
}

/// Asserts `invariant` flagged the history, printing the report.
fn caught(h: &History, invariant: &str, fragment: &str) -> Report {
    let report = check(h);
    let text = report.to_string();
    println!("{text}");
    let hits = report.of(invariant);
    assert!(
        !hits.is_empty(),
        "{invariant} missed the planted bug:\n{text}"
    );
    assert!(
        hits.iter().any(|v| v.message.contains(fragment)),
        "no {invariant} violation mentions {fragment:?}:\n{text}"
    );
    assert!(text.contains("seed: 42"), "violations print the seed");
    if invariant != "recovery" || !fragment.contains("no probe") {
        assert!(text.contains("op: {"), "violations print their op");
    }
    report
}

/// A history with every kind of op, all correct.
fn clean() -> History {
    let mut b = Builder::new();
    b.transfer_ok("t1", A, B, 100);
    b.read(B);
    b.transfer_rejected("t2", C, A, 5000);
    b.transfer_info("t3", B, C, 50, true);
    b.transfer_info("t4", C, A, 70, false);
    b.transfer_fail("t5", A, C, 10);
    b.lookup("t1");
    b.lookup("t4");
    b.transfer_ok("t6", FLOAT, A, 300);
    b.read_all();
    b.read(A);
    b.read(C);
    // t4's retry succeeds: the same id, now applied once.
    b.transfer_ok("t4", C, A, 70);
    b.read(A);
    b.finish()
}

#[test]
fn a_clean_history_passes() {
    let report = check(&clean());
    println!("{report}");
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.stats.transfers, 7);
    assert_eq!(report.stats.transfers_ok, 5);
    assert_eq!(report.stats.transfers_fail, 1);
    assert_eq!(report.stats.transfers_info, 1);
    assert_eq!(report.stats.transfer_attempts, 8);
    assert_eq!(report.stats.recovery_ms[&Some(0)].transfer_ms, Some(502));
    assert!(report.to_string().contains("OK: no violation (seed 42)"));
}

#[test]
fn a_history_round_trips_through_json_lines() {
    let h = clean();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("history.jsonl");
    h.write_jsonl(&path).expect("write");
    let text = std::fs::read_to_string(&path).expect("read text");
    assert_eq!(text.lines().count(), h.ops.len() + 1);
    let back = History::read_jsonl(&path).expect("read");
    assert_eq!(back, h);
    assert_eq!(check(&back), check(&h));
}

#[test]
fn planted_lost_acknowledged_write() {
    let mut b = Builder::new();
    b.transfer_ok("t1", A, B, 100);
    // The cluster forgets it: not found anywhere, balances as if it never happened.
    b.truth.insert(A.to_owned(), 1000);
    b.truth.insert(B.to_owned(), 1000);
    b.status.insert("t1".to_owned(), "not_found");
    caught(&b.finish(), "exactly_once", "lost acknowledged write");
}

#[test]
fn planted_double_apply() {
    let mut b = Builder::new();
    b.transfer_ok("t1", A, B, 100);
    b.apply("t1");
    caught(
        &b.finish(),
        "exactly_once",
        "transfer t1 (acknowledged, final status completed) applied +1",
    );
}

#[test]
fn planted_stale_read() {
    let mut b = Builder::new();
    b.transfer_ok("t1", A, B, 100);
    b.read_as(B, 1000, 0);
    // The balance is right for index 0; the index is what is stale.
    caught(&b.finish(), "linearizable", "stale read");
}

#[test]
fn planted_stale_read_without_log_indices() {
    let mut b = Builder::new();
    b.transfer_ok("t1", A, B, 100);
    b.read_as(B, 1000, 0);
    let mut h = b.finish();
    for op in &mut h.ops {
        op.log_index = None;
        op.log_pos = None;
    }
    caught(&h, "linearizable", "model by real time gives 1100");
}

#[test]
fn planted_money_creation() {
    let mut h = clean();
    edit_final_balance(&mut h, None, A, 100);
    caught(&h, "conservation", "sum to 100, not 0");
}

#[test]
fn planted_negative_balance() {
    let mut b = Builder::new();
    b.transfer_ok("t1", A, B, 1500);
    caught(&b.finish(), "floor", "+254700000001 from_balance -500");
}

#[test]
fn planted_replica_divergence() {
    let mut h = clean();
    edit_final_balance(&mut h, Some(2), A, 10);
    edit_final_balance(&mut h, Some(2), B, -10);
    caught(&h, "convergence", "replicas diverge after healing");
}

#[test]
fn planted_unknown_transfer_applied_twice() {
    let mut b = Builder::new();
    b.transfer_info("t1", A, B, 100, true);
    b.apply("t1");
    caught(
        &b.finish(),
        "exactly_once",
        "transfer t1 (unknown outcome, final status completed) applied +1",
    );
}

#[test]
fn planted_failed_transfer_applied() {
    let mut b = Builder::new();
    b.transfer_fail("t1", A, B, 100);
    b.apply("t1");
    caught(
        &b.finish(),
        "exactly_once",
        "definitely failed, is completed on node 1",
    );
}

#[test]
fn planted_failed_transfer_moving_money_while_not_found() {
    let mut b = Builder::new();
    b.transfer_fail("t1", A, B, 100);
    b.apply("t1");
    let mut h = b.finish();
    set_final_status(&mut h, "t1", "not_found");
    caught(
        &h,
        "exactly_once",
        "(definitely failed, final status not_found) applied +1",
    );
}

#[test]
fn planted_slow_recovery() {
    let mut b = Builder::new();
    b.transfer_ok("t1", A, B, 100);
    caught(
        &b.finish_with(15_000),
        "recovery",
        "probe transfer 15002 ms after healing",
    );
}

#[test]
fn planted_missing_probe() {
    let mut h = clean();
    h.ops
        .retain(|op| !(op.f == Func::Probe && op.account.is_some()));
    caught(&h, "recovery", "served no probe read");
}

#[test]
fn planted_wrong_answer_balance() {
    let mut b = Builder::new();
    b.transfer_ok("t1", A, B, 100);
    let ok = b.h.ops.last_mut().expect("an op");
    ok.from_balance = Some(950);
    caught(&b.finish(), "replay", "answered from_balance 950");
}

#[test]
fn planted_rejection_with_ample_funds() {
    let mut b = Builder::new();
    b.transfer_rejected("t1", A, B, 100);
    caught(&b.finish(), "replay", "rejected insufficient_funds");
}

#[test]
fn planted_view_going_back() {
    let mut b = Builder::new();
    b.transfer_ok("t1", A, B, 100);
    b.transfer_ok("t2", A, B, 100);
    b.read(B);
    b.read_as(A, 900, 1);
    caught(&b.finish(), "linearizable", "view went back");
}

#[test]
fn planted_lookup_missing_an_acknowledged_transfer() {
    let mut b = Builder::new();
    b.transfer_ok("t1", A, B, 100);
    b.status.insert("t1".to_owned(), "not_found");
    b.lookup("t1");
    b.status.insert("t1".to_owned(), "completed");
    caught(&b.finish(), "linearizable", "answered not_found");
}

#[test]
fn planted_inconsistent_retry_answers() {
    let mut b = Builder::new();
    let ok = b.transfer_ok("t1", A, B, 100);
    let inv = b
        .invoke(Func::Transfer, 2)
        .with_transfer(ok.transfer.clone().expect("body"));
    b.h.push(inv.clone());
    b.h.push(
        inv.complete(OpKind::Ok, b.now + MS)
            .with_status("rejected")
            .with_code("insufficient_funds"),
    );
    caught(
        &b.finish(),
        "exactly_once",
        "answered differently to retries",
    );
}

#[test]
fn planted_non_zero_read_all() {
    let mut b = Builder::new();
    b.transfer_ok("t1", A, B, 100);
    b.read_all();
    let ok = b.h.ops.last_mut().expect("an op");
    ok.balances
        .as_mut()
        .expect("balances")
        .insert(C.to_owned(), 1001);
    caught(&b.finish(), "conservation", "read_all from node 1");
}

#[test]
fn planted_malformed_history() {
    let mut h = clean();
    let extra = Op::new(999, OpKind::Ok, Func::Read, 1, 1);
    h.ops.push(extra);
    caught(&h, "history", "without an invoke");
}

#[test]
fn unavailability_windows_are_measured() {
    let mut b = Builder::new();
    b.transfer_ok("t1", A, B, 1);
    b.now += 1000 * MS;
    b.transfer_info("t2", A, B, 1, false);
    b.now += 2000 * MS;
    b.transfer_ok("t3", A, B, 1);
    let report = check(&b.finish());
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.stats.unavailability_windows, 1);
    assert_eq!(report.stats.unavailability_p50_ms, Some(2003));
    assert_eq!(report.stats.unavailability_p99_ms, Some(2003));
}

// ---- A simulated correct cluster, for the property tests ----

/// One simulated client's operation in flight.
#[derive(Clone, Debug)]
enum Flight {
    Transfer {
        inv: Op,
        id: String,
    },
    Read {
        inv: Op,
        account: String,
        seen: Option<(i64, u64)>,
    },
}

/// A linearizable single-shard bank: transfers take effect at a random moment between their
/// invoke and completion (or never, or late, when the answer is lost), possibly in batches.
struct Sim {
    b: Builder,
    flights: BTreeMap<u64, Flight>,
    /// Transfers sent but not yet applied, with their process.
    queued: Vec<String>,
    answers: BTreeMap<String, Op>,
    unknown: Vec<String>,
    counter: u64,
}

const ACCOUNTS: [&str; 4] = [FLOAT, A, B, C];

impl Sim {
    fn new() -> Self {
        Self {
            b: Builder::new(),
            flights: BTreeMap::new(),
            queued: Vec::new(),
            answers: BTreeMap::new(),
            unknown: Vec::new(),
            counter: 0,
        }
    }

    fn step(&mut self, choice: u8, pick: usize, process: u64) {
        match choice % 4 {
            0 | 1 => self.start_or_finish(process, pick),
            2 => self.apply_batch(pick % 3 + 1),
            _ => self.serve_reads(),
        }
    }

    fn start_or_finish(&mut self, process: u64, pick: usize) {
        match self.flights.remove(&process) {
            None => self.start(process, pick),
            Some(flight) => self.finish_flight(flight, pick),
        }
    }

    fn start(&mut self, process: u64, pick: usize) {
        if pick % 11 == 2 && !self.b.status.is_empty() {
            // Another client looks a transfer up (answered at once).
            let id = self
                .b
                .status
                .keys()
                .nth(pick % self.b.status.len())
                .cloned();
            self.b.lookup(&id.expect("an id"));
        }
        let node = (pick % 3) as u64 + 1;
        let now = self.b.tick();
        if pick.is_multiple_of(3) {
            let account = ACCOUNTS[pick % 4].to_owned();
            let inv = Op::invoke(process, Func::Read, now, node)
                .with_account(&account)
                .with_shard(0);
            self.b.h.push(inv.clone());
            self.flights.insert(
                process,
                Flight::Read {
                    inv,
                    account,
                    seen: None,
                },
            );
            return;
        }
        // Retry an unknown transfer now and then; otherwise a new one.
        let id = if pick % 5 == 1 && !self.unknown.is_empty() {
            self.unknown.remove(pick % self.unknown.len())
        } else {
            self.counter += 1;
            let from = ACCOUNTS[pick % 4];
            let to = ACCOUNTS[(pick / 4 % 3 + 1 + pick % 4) % 4];
            let id = format!("t{}", self.counter);
            self.b.body(&id, from, to, (pick % 7 * 150 + 1) as u64);
            id
        };
        let inv = Op::invoke(process, Func::Transfer, now, node)
            .with_transfer(self.b.bodies[&id].clone())
            .with_shard(0);
        self.b.h.push(inv.clone());
        if !self.answers.contains_key(&id) && !self.queued.contains(&id) {
            self.queued.push(id.clone());
        }
        self.flights.insert(process, Flight::Transfer { inv, id });
    }

    /// Applies up to `n` queued transfers as one log entry.
    fn apply_batch(&mut self, n: usize) {
        if self.queued.is_empty() {
            return;
        }
        self.b.index += 1;
        let take = n.min(self.queued.len());
        let batch: Vec<String> = self.queued.drain(..take).collect();
        let now = self.b.tick();
        for (pos, id) in batch.into_iter().enumerate() {
            let pos = u32::try_from(pos).expect("small");
            self.b.keys.insert(id.clone(), (self.b.index, pos));
            let t = self.b.bodies[&id].clone();
            let amount = i64::try_from(t.amount).expect("small");
            let funded = t.from == FLOAT || self.b.truth[&t.from] >= amount;
            let probe =
                Op::new(0, OpKind::Ok, Func::Transfer, now, 1).with_log(self.b.index, Some(pos));
            let answer = if funded {
                let (fb, tb) = self.b.apply(&id);
                probe
                    .with_status("completed")
                    .with_transfer_balances(fb, tb)
            } else {
                self.b.status.insert(id.clone(), "rejected");
                probe
                    .with_status("rejected")
                    .with_code("insufficient_funds")
            };
            self.answers.insert(id, answer);
        }
    }

    fn serve_reads(&mut self) {
        for flight in self.flights.values_mut() {
            if let Flight::Read {
                account,
                seen: seen @ None,
                ..
            } = flight
            {
                *seen = Some((self.b.truth[account.as_str()], self.b.index));
            }
        }
    }

    fn finish_flight(&mut self, flight: Flight, pick: usize) {
        let now = self.b.tick();
        let op = match flight {
            Flight::Read {
                inv,
                seen: Some((balance, index)),
                ..
            } if !pick.is_multiple_of(4) => inv
                .complete(OpKind::Ok, now)
                .with_balance(balance, balance)
                .with_log(index, None),
            Flight::Read { inv, .. } => inv.complete(OpKind::Info, now).with_error("timeout"),
            Flight::Transfer { inv, id } => match self.answers.get(&id) {
                Some(answer) if !pick.is_multiple_of(4) => {
                    let mut ok = inv.complete(OpKind::Ok, now);
                    ok.status.clone_from(&answer.status);
                    ok.code.clone_from(&answer.code);
                    ok.from_balance = answer.from_balance;
                    ok.to_balance = answer.to_balance;
                    ok.log_index = answer.log_index;
                    ok.log_pos = answer.log_pos;
                    ok
                }
                None if pick % 4 == 1 && self.queued.contains(&id) => {
                    // Refused before it was sent anywhere: it will never be applied.
                    self.queued.retain(|q| *q != id);
                    inv.complete(OpKind::Fail, now).with_code("overloaded")
                }
                _ => {
                    self.unknown.push(id);
                    inv.complete(OpKind::Info, now).with_error("timeout")
                }
            },
        };
        self.b.h.push(op);
    }

    /// Ends the run: lost answers resolve (applied late or never), then heal, probe, finals.
    fn end(mut self, late: bool, strip_indices: bool) -> History {
        for (process, flight) in std::mem::take(&mut self.flights) {
            let _ = process;
            self.finish_flight(flight, 0);
        }
        if late {
            self.apply_batch(usize::MAX);
        }
        let mut h = self.b.finish();
        if strip_indices {
            for op in &mut h.ops {
                op.log_index = None;
                op.log_pos = None;
            }
        }
        h
    }
}

fn simulate(steps: &[(u8, usize, u64)], late: bool, strip: bool) -> History {
    let mut sim = Sim::new();
    for &(choice, pick, process) in steps {
        sim.step(choice, pick, process);
    }
    sim.end(late, strip)
}

fn steps() -> impl Strategy<Value = Vec<(u8, usize, u64)>> {
    proptest::collection::vec((any::<u8>(), 0usize..10_000, 1u64..8), 20..300)
}

proptest! {
    #![proptest_config(config())]

    /// Soundness: a correct cluster is never flagged, with or without log positions.
    #[test]
    fn a_correct_cluster_is_never_flagged(steps in steps(), late: bool, strip: bool) {
        let h = simulate(&steps, late, strip);
        let report = check(&h);
        prop_assert!(report.is_ok(), "{}\n{}", report, history_text(&h));
    }

    /// Completeness for money: any change to a final read is caught.
    #[test]
    fn a_tampered_final_read_is_always_flagged(steps in steps(), delta in 1i64..500, pick in 0usize..4) {
        let mut h = simulate(&steps, true, false);
        edit_final_balance(&mut h, Some(3), ACCOUNTS[pick], delta);
        let report = check(&h);
        prop_assert!(!report.of("conservation").is_empty(), "{}", report);
        prop_assert!(!report.of("convergence").is_empty(), "{}", report);
        prop_assert!(!report.of("exactly_once").is_empty(), "{}", report);
    }

    /// Completeness for durability: forgetting any acknowledged completed transfer is caught.
    #[test]
    fn a_forgotten_acknowledged_transfer_is_always_flagged(steps in steps(), pick in any::<usize>()) {
        let mut h = simulate(&steps, true, false);
        let acked: Vec<String> = h
            .ops
            .iter()
            .filter(|op| op.f == Func::Transfer && op.kind == OpKind::Ok)
            .filter(|op| op.status.as_deref() == Some("completed"))
            .filter_map(|op| op.transfer.as_ref().map(|t| t.id.clone()))
            .collect();
        prop_assume!(!acked.is_empty());
        set_final_status(&mut h, &acked[pick % acked.len()], "not_found");
        let report = check(&h);
        prop_assert!(
            report.of("exactly_once").iter().any(|v| v.message.contains("lost acknowledged write")),
            "{}",
            report
        );
    }
}

proptest! {
    #![proptest_config(config())]

    /// Completeness for reads: with log positions, a read showing any other balance is caught.
    #[test]
    fn a_wrong_read_is_always_flagged(steps in steps(), delta in 1i64..500, pick in any::<usize>()) {
        let mut h = simulate(&steps, true, false);
        let reads: Vec<usize> = (0..h.ops.len())
            .filter(|i| h.ops[*i].f == Func::Read && h.ops[*i].kind == OpKind::Ok)
            .collect();
        prop_assume!(!reads.is_empty());
        let op = &mut h.ops[reads[pick % reads.len()]];
        op.balance = op.balance.map(|b| b + delta);
        let report = check(&h);
        prop_assert!(
            report.of("linearizable").iter().any(|v| v.message.contains("stale or phantom read")),
            "{}",
            report
        );
    }
}

/// A long, busy run (20 clients, thousands of transfers, many lost answers) passes too, with
/// and without log positions.
#[test]
fn a_long_correct_run_passes() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let steps: Vec<(u8, usize, u64)> = (0..20_000)
        .map(|_| {
            (
                rng.random(),
                rng.random_range(0..10_000),
                rng.random_range(1..21),
            )
        })
        .collect();
    for strip in [false, true] {
        let report = check(&simulate(&steps, true, strip));
        assert!(report.is_ok(), "{report}");
        assert!(report.stats.transfers > 2000, "{report}");
    }
}

/// 96 cases; failures are printed, not saved into the source tree.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn history_text(h: &History) -> String {
    let mut bytes = Vec::new();
    h.write_to(&mut bytes).expect("write");
    String::from_utf8(bytes).expect("utf8")
}

/// The property tests are only as good as the histories they see: over a few deterministic
/// runs the simulation produces rejections, batches, lost answers, retries, refusals and reads.
#[test]
fn the_simulation_exercises_every_path() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen = BTreeMap::new();
    for _ in 0..30 {
        let s = steps().new_tree(&mut runner).expect("tree").current();
        let h = simulate(&s, true, false);
        let report = check(&h);
        assert!(report.is_ok(), "{report}");
        let mut count = |name: &'static str, n: usize| *seen.entry(name).or_insert(0) += n;
        let ops = &h.ops;
        count(
            "rejected",
            ops.iter()
                .filter(|o| o.code.as_deref() == Some("insufficient_funds"))
                .count(),
        );
        count(
            "batched",
            ops.iter()
                .filter(|o| o.log_pos.is_some_and(|p| p > 0))
                .count(),
        );
        count(
            "reads",
            ops.iter()
                .filter(|o| o.f == Func::Read && o.kind == OpKind::Ok)
                .count(),
        );
        count(
            "lookups",
            ops.iter()
                .filter(|o| o.f == Func::Lookup && o.log_index.is_some())
                .count(),
        );
        count("fail", report.stats.transfers_fail);
        count("info", report.stats.transfers_info);
        count(
            "retries",
            report.stats.transfer_attempts - report.stats.transfers,
        );
        count("windows", report.stats.unavailability_windows);
    }
    assert!(seen.values().all(|n| *n > 0), "{seen:?}");
}

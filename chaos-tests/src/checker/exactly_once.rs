//! Invariant 3, **exactly once**: every acknowledged transfer is applied exactly once, every
//! definitely failed one never, every unknown one at most once — settled by the final lookups
//! of every transfer id on every node and by the final balances.
//!
//! An id's *outcome* over all its attempts (retries included): `acked` when any attempt got a
//! definite answer (201 `completed` / 422 `rejected`), else `failed` when every attempt
//! definitely failed, else `unknown`. Rules, per id:
//! 1. **idempotent answers**: every `ok` answer for the id is the same (`status`, `code`,
//!    `from_balance`, `to_balance`), no attempt is answered `id_conflict` (the runner retries
//!    with the same body), and every reported log position is the same one;
//! 2. **settled**: every node asked for final lookups answered one for the id;
//! 3. **status per node**: acked → the acked status on every node (`not_found` there is a lost
//!    acknowledged write); failed → `not_found` on every node; unknown → `completed`, `rejected`
//!    or `not_found`. The workload sends immediate transfers only, so `pending`, `voided` and
//!    `reversed` are never expected;
//! 4. **durable observations**: a run-time `Lookup` that saw `completed` or `rejected` is the
//!    final status on every node;
//! 5. **money moved once**: on each node whose lookups are complete, the final read equals
//!    `initial` plus the movement of every id that node reports `completed`, each exactly once.
//!    A difference that equals `k` times one transfer's movement is reported as that transfer
//!    applied `k` extra times (a double apply, or a failed/lost one that did move money).
//!    This is also the end state of the [`super::replay`] model (order does not change a sum),
//!    so it is where "replay reproduces every final balance" is checked.

use std::collections::BTreeMap;

use super::model::{Ctx, Outcome, TransferInfo};
use super::Violation;
use crate::history::{Func, Op};

const NAME: &str = "exactly_once";
const KNOWN: [&str; 6] = [
    "completed",
    "pending",
    "rejected",
    "voided",
    "reversed",
    "not_found",
];

/// Checks the rules above.
pub fn check(ctx: &Ctx<'_>) -> Vec<Violation> {
    let mut out = Vec::new();
    for (id, info) in &ctx.transfers {
        idempotent_answers(ctx, id, info, &mut out);
    }
    if ctx.lookup_nodes.is_empty() {
        if let Some(info) = ctx.transfers.values().next() {
            out.push(Violation::new(
                NAME,
                format!(
                    "no final lookups in the history: {} transfer ids are unsettled",
                    ctx.transfers.len()
                ),
                Some(info.first_invoke()),
            ));
        }
        return out;
    }
    for (id, info) in &ctx.transfers {
        statuses(ctx, id, info, &mut out);
    }
    runtime_lookups(ctx, &mut out);
    money(ctx, &mut out);
    out
}

/// Rule 1.
fn idempotent_answers(ctx: &Ctx<'_>, id: &str, info: &TransferInfo<'_>, out: &mut Vec<Violation>) {
    let answer = |op: &Op| {
        (
            op.status.clone(),
            op.code.clone(),
            op.from_balance,
            op.to_balance,
        )
    };
    let oks: Vec<&Op> = info.attempts.iter().filter_map(|p| p.ok()).collect();
    if let Some(other) = oks.iter().find(|op| answer(op) != answer(oks[0])) {
        out.push(Violation::new(
            NAME,
            format!(
                "transfer {id} answered differently to retries: {:?} then {:?}",
                answer(oks[0]),
                answer(other)
            ),
            Some(other),
        ));
    }
    let conflict = info
        .attempts
        .iter()
        .filter_map(|p| p.completion)
        .find(|c| c.code.as_deref() == Some("id_conflict"));
    if let Some(c) = conflict {
        out.push(Violation::new(
            NAME,
            format!("a retry of transfer {id} with the same body was answered id_conflict"),
            Some(c),
        ));
    }
    let lookups = ctx
        .lookups
        .get(id)
        .into_iter()
        .flat_map(|m| m.values().copied());
    let positioned = oks.iter().copied().chain(lookups);
    for op in positioned {
        let key = super::model::LogKey::of_write(op);
        if key.is_some() && key.map(|k| k.order()) != info.key.map(|k| k.order()) {
            let first = info.key.map_or_else(String::new, |k| k.to_string());
            let this = key.map_or_else(String::new, |k| k.to_string());
            out.push(Violation::new(
                NAME,
                format!("transfer {id} reported at two log positions: {first} and {this}"),
                Some(op),
            ));
            break;
        }
    }
}

/// Rules 2 and 3.
fn statuses(ctx: &Ctx<'_>, id: &str, info: &TransferInfo<'_>, out: &mut Vec<Violation>) {
    let by_node = ctx.lookups.get(id);
    let status_on = |node: u64| {
        by_node
            .and_then(|m| m.get(&node))
            .and_then(|op| op.status.as_deref())
    };
    let missing: Vec<u64> = ctx
        .lookup_nodes
        .iter()
        .copied()
        .filter(|n| status_on(*n).is_none())
        .collect();
    if !missing.is_empty() {
        out.push(Violation::new(
            NAME,
            format!("transfer {id} is unsettled: no final lookup answer from nodes {missing:?}"),
            Some(info.first_invoke()),
        ));
    }
    let (expected, what): (&[&str], String) = match info.outcome {
        Outcome::Acked(op) => {
            let status = op.status.as_deref().unwrap_or("?");
            let allowed: &[&str] = match status {
                "completed" => &["completed"],
                "rejected" => &["rejected"],
                _ => &[],
            };
            (allowed, format!("acknowledged {status}"))
        }
        Outcome::Failed => (&["not_found"], "definitely failed".to_owned()),
        Outcome::Unknown => (
            &["completed", "rejected", "not_found"],
            "of unknown outcome".to_owned(),
        ),
    };
    let wrong: Vec<String> = ctx
        .lookup_nodes
        .iter()
        .filter_map(|n| status_on(*n).map(|s| (*n, s)))
        .filter(|(_, s)| !expected.contains(s))
        .map(|(n, s)| describe(n, s))
        .collect();
    if !wrong.is_empty() {
        let op = match info.outcome {
            Outcome::Acked(op) => op,
            _ => info.first_invoke(),
        };
        let lost = if wrong.iter().any(|w| w.contains("not_found"))
            && matches!(info.outcome, Outcome::Acked(_))
        {
            " (lost acknowledged write)"
        } else {
            ""
        };
        out.push(Violation::new(
            NAME,
            format!(
                "transfer {id}, {what}, is {} in the final lookups{lost}",
                wrong.join(", ")
            ),
            Some(op),
        ));
    }
}

fn describe(node: u64, status: &str) -> String {
    if KNOWN.contains(&status) {
        format!("{status} on node {node}")
    } else {
        format!("{status:?} (not a status) on node {node}")
    }
}

/// Rule 4.
fn runtime_lookups(ctx: &Ctx<'_>, out: &mut Vec<Violation>) {
    for pair in ctx.pairs.iter().filter(|p| p.f() == Func::Lookup) {
        let (Some(ok), Some(t)) = (pair.ok(), pair.transfer()) else {
            continue;
        };
        let Some(seen) = ok.status.as_deref().filter(|s| *s != "not_found") else {
            continue;
        };
        let finals = ctx.lookups.get(t.id.as_str());
        let differ: Vec<String> = finals
            .into_iter()
            .flatten()
            .filter_map(|(n, op)| op.status.as_deref().map(|s| (*n, s)))
            .filter(|(_, s)| *s != seen)
            .map(|(n, s)| describe(n, s))
            .collect();
        if !differ.is_empty() {
            out.push(Violation::new(
                NAME,
                format!(
                    "transfer {} was seen {seen} by a lookup during the run, but is {} at the end",
                    t.id,
                    differ.join(", ")
                ),
                Some(ok),
            ));
        }
    }
}

/// Rule 5.
fn money(ctx: &Ctx<'_>, out: &mut Vec<Violation>) {
    let mut by_diff: BTreeMap<BTreeMap<String, i128>, Vec<u64>> = BTreeMap::new();
    for (node, read) in &ctx.final_reads {
        if let Some(diff) = node_diff(ctx, *node, read) {
            if !diff.is_empty() {
                by_diff.entry(diff).or_default().push(*node);
            }
        }
    }
    for (diff, nodes) in by_diff {
        let read = nodes.first().and_then(|n| ctx.final_reads.get(n)).copied();
        let (explained, op) = attribute(ctx, &diff, nodes[0]);
        let shown: Vec<String> = diff.iter().map(|(a, d)| format!("{a} {d:+}")).collect();
        out.push(Violation::new(
            NAME,
            format!(
                "final balances on nodes {nodes:?} differ from initial + every transfer they \
                 report completed, applied once: {}{explained}",
                shown.join(", ")
            ),
            op.or(read),
        ));
    }
}

/// `actual - expected` per account on `node` (zero entries left out), or `None` when some id
/// is unsettled there (rule 2 reports it).
fn node_diff(ctx: &Ctx<'_>, node: u64, read: &Op) -> Option<BTreeMap<String, i128>> {
    let balances = read.balances.as_ref()?;
    let mut expected: BTreeMap<&str, i128> = ctx
        .history
        .initial
        .iter()
        .map(|(a, b)| (a.as_str(), i128::from(*b)))
        .collect();
    for (id, info) in &ctx.transfers {
        let status = ctx.lookups.get(id)?.get(&node)?.status.as_deref()?;
        if status == "completed" {
            let t = info.transfer;
            for account in [t.from.as_str(), t.to.as_str()] {
                *expected.entry(account).or_insert(0) += info.delta(account);
            }
        }
    }
    let mut diff = BTreeMap::new();
    for (account, actual) in balances {
        let want = expected.get(account.as_str()).copied().unwrap_or(0);
        let d = i128::from(*actual) - want;
        if d != 0 {
            diff.insert(account.clone(), d);
        }
    }
    Some(diff)
}

/// Names the transfer whose movement, times k, is exactly `diff`.
fn attribute<'a>(
    ctx: &Ctx<'a>,
    diff: &BTreeMap<String, i128>,
    node: u64,
) -> (String, Option<&'a Op>) {
    if diff.len() != 2 {
        return (String::new(), None);
    }
    for (id, info) in &ctx.transfers {
        let t = info.transfer;
        let amount = i128::from(t.amount);
        let (Some(to), Some(from)) = (diff.get(&t.to), diff.get(&t.from)) else {
            continue;
        };
        if amount == 0 || to % amount != 0 || *from != -to {
            continue;
        }
        let k = to / amount;
        let status = ctx
            .lookups
            .get(id)
            .and_then(|m| m.get(&node))
            .and_then(|op| op.status.as_deref())
            .unwrap_or("unknown");
        let outcome = match info.outcome {
            Outcome::Acked(_) => "acknowledged",
            Outcome::Failed => "definitely failed",
            Outcome::Unknown => "unknown outcome",
        };
        let text = format!(
            "; consistent with transfer {id} ({outcome}, final status {status}) applied {k:+} \
             time(s) more than its status says"
        );
        return (text, Some(info.first_invoke()));
    }
    (String::new(), None)
}

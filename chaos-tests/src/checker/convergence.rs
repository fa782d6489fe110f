//! Invariant 6, **convergence**: after healing, every replica holds the same state.
//!
//! Rules (over the last `ok` answer per node):
//! 1. every node asked for a `FinalRead` answered one;
//! 2. every node's `FinalRead` shows the same balance for every account (compared with the
//!    lowest node id's; an account one node lists and another lacks is a difference);
//! 3. where `FinalRead` answers carry the replica's applied index (`log_index`) or a state
//!    `digest`, those are equal on every node of the same shard;
//! 4. every node's `FinalLookup` gives the same status for every transfer id.

use std::collections::{BTreeMap, BTreeSet};

use super::model::Ctx;
use super::Violation;
use crate::history::Op;

const NAME: &str = "convergence";

/// Checks the rules above.
pub fn check(ctx: &Ctx<'_>) -> Vec<Violation> {
    let mut out = Vec::new();
    let silent: Vec<u64> = ctx
        .final_read_nodes
        .iter()
        .copied()
        .filter(|n| !ctx.final_reads.contains_key(n))
        .collect();
    if !silent.is_empty() {
        out.push(Violation::new(
            NAME,
            format!("nodes {silent:?} never answered the final read after healing"),
            None,
        ));
    }
    balances(ctx, &mut out);
    replica_marks(ctx, &mut out);
    lookups(ctx, &mut out);
    out
}

/// Rule 2.
fn balances(ctx: &Ctx<'_>, out: &mut Vec<Violation>) {
    let mut reads = ctx.final_reads.iter();
    let Some((ref_node, reference)) = reads.next() else {
        return;
    };
    let empty = BTreeMap::new();
    let ref_balances = reference.balances.as_ref().unwrap_or(&empty);
    for (node, read) in reads {
        let balances = read.balances.as_ref().unwrap_or(&empty);
        let accounts: BTreeSet<&String> = ref_balances.keys().chain(balances.keys()).collect();
        let show = |b: Option<&i64>| b.map_or_else(|| "absent".to_owned(), i64::to_string);
        let differ: Vec<String> = accounts
            .into_iter()
            .filter(|a| ref_balances.get(*a) != balances.get(*a))
            .map(|a| {
                format!(
                    "{a}: {} on node {ref_node}, {} on node {node}",
                    show(ref_balances.get(a)),
                    show(balances.get(a))
                )
            })
            .collect();
        if !differ.is_empty() {
            out.push(Violation::new(
                NAME,
                format!("replicas diverge after healing: {}", differ.join("; ")),
                Some(read),
            ));
        }
    }
}

/// Rule 3.
fn replica_marks(ctx: &Ctx<'_>, out: &mut Vec<Violation>) {
    type Mark = (&'static str, fn(&Op) -> Option<String>);
    let marks: [Mark; 2] = [
        ("applied index", |op| op.log_index.map(|i| i.to_string())),
        ("state digest", |op| op.digest.clone()),
    ];
    for (what, get) in marks {
        let mut by_shard: BTreeMap<Option<u32>, Vec<(u64, String, &Op)>> = BTreeMap::new();
        for (node, read) in &ctx.final_reads {
            if let Some(value) = get(read) {
                by_shard
                    .entry(read.shard)
                    .or_default()
                    .push((*node, value, read));
            }
        }
        for (shard, values) in by_shard {
            let Some((_, first, _)) = values.first() else {
                continue;
            };
            if let Some((_, _, read)) = values.iter().find(|(_, v, _)| v != first) {
                let all: Vec<String> = values
                    .iter()
                    .map(|(n, v, _)| format!("node {n}: {v}"))
                    .collect();
                let shard = shard.map_or_else(|| "-".to_owned(), |s| s.to_string());
                out.push(Violation::new(
                    NAME,
                    format!(
                        "replicas of shard {shard} differ in {what}: {}",
                        all.join(", ")
                    ),
                    Some(read),
                ));
            }
        }
    }
}

/// Rule 4.
fn lookups(ctx: &Ctx<'_>, out: &mut Vec<Violation>) {
    for (id, by_node) in &ctx.lookups {
        let statuses: BTreeSet<&str> = by_node
            .values()
            .filter_map(|op| op.status.as_deref())
            .collect();
        if statuses.len() > 1 {
            let all: Vec<String> = by_node
                .iter()
                .map(|(n, op)| format!("node {n}: {}", op.status.as_deref().unwrap_or("?")))
                .collect();
            let op = by_node.values().next().copied();
            out.push(Violation::new(
                NAME,
                format!("replicas disagree on transfer {id}: {}", all.join(", ")),
                op,
            ));
        }
    }
}

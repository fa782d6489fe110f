//! Invariant 1, **conservation**: money is neither created nor destroyed.
//!
//! Rules:
//! * the history's `initial` balances (`float` and `fees` included) sum to exactly 0;
//! * the `balances` of every `ok` [`Func::ReadAll`] and [`Func::FinalRead`] sum to exactly 0
//!   (a `ReadAll` is recorded only for a consistent snapshot, see [`crate::history`]);
//! * a `FinalRead` lists every account of `initial`: a sum over a partial read proves nothing,
//!   so a missing account is a violation too.
//!
//! Sums are taken in `i128`, so no set of `i64` balances overflows.

use std::collections::BTreeMap;

use super::model::Ctx;
use super::Violation;
use crate::history::Func;

const NAME: &str = "conservation";

fn sum(balances: &BTreeMap<String, i64>) -> i128 {
    balances.values().map(|b| i128::from(*b)).sum()
}

/// Checks the rules above.
pub fn check(ctx: &Ctx<'_>) -> Vec<Violation> {
    let mut out = Vec::new();
    let initial = sum(&ctx.history.initial);
    if initial != 0 {
        out.push(Violation::new(
            NAME,
            format!("the initial balances sum to {initial}, not 0"),
            None,
        ));
    }
    for pair in &ctx.pairs {
        if !matches!(pair.f(), Func::ReadAll | Func::FinalRead) {
            continue;
        }
        let Some(ok) = pair.ok() else { continue };
        let Some(balances) = &ok.balances else {
            out.push(Violation::new(
                NAME,
                format!("{} ok without balances", ok.f),
                Some(ok),
            ));
            continue;
        };
        let total = sum(balances);
        if total != 0 {
            out.push(Violation::new(
                NAME,
                format!(
                    "{} from node {} at {} ms: balances of {} accounts sum to {total}, not 0",
                    ok.f,
                    ok.node,
                    ok.time_ns / 1_000_000,
                    balances.len()
                ),
                Some(ok),
            ));
        }
        if ok.f == Func::FinalRead {
            let missing: Vec<&str> = ctx
                .history
                .initial
                .keys()
                .filter(|a| !balances.contains_key(*a))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                out.push(Violation::new(
                    NAME,
                    format!(
                        "final read from node {} lacks accounts {missing:?}",
                        ok.node
                    ),
                    Some(ok),
                ));
            }
        }
    }
    out
}

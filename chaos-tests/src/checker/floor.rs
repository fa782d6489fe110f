//! Invariant 2, **floor**: no account but `float` is ever seen below 0.
//!
//! Every balance the history shows is checked: `initial`; `balance` and `available` of each
//! `ok` single-account read (probes included); every account of an `ok` `ReadAll` or
//! `FinalRead`; and `from_balance`/`to_balance` of each `ok` transfer answer (the payer's and
//! payee's balances right after it). One violation per op, naming every account below 0.

use super::model::Ctx;
use super::Violation;
use crate::history::{Func, Op};

const NAME: &str = "floor";

/// `(account, what, value)` for every balance the answer `op` to `invoke` shows.
fn observed<'a>(invoke: &'a Op, op: &'a Op) -> Vec<(&'a str, &'static str, i64)> {
    let mut seen = Vec::new();
    if invoke.is_read() {
        if let Some(account) = invoke.account.as_deref() {
            seen.extend(op.balance.map(|b| (account, "balance", b)));
            seen.extend(op.available.map(|b| (account, "available", b)));
        }
    }
    if matches!(op.f, Func::ReadAll | Func::FinalRead) {
        for (account, b) in op.balances.iter().flatten() {
            seen.push((account.as_str(), "balance", *b));
        }
    }
    if let Some(t) = invoke.transfer.as_ref().filter(|_| invoke.is_transfer()) {
        seen.extend(
            op.from_balance
                .map(|b| (t.from.as_str(), "from_balance", b)),
        );
        seen.extend(op.to_balance.map(|b| (t.to.as_str(), "to_balance", b)));
    }
    seen
}

/// Checks the rule above.
pub fn check(ctx: &Ctx<'_>) -> Vec<Violation> {
    let mut out = Vec::new();
    for (account, b) in &ctx.history.initial {
        if *b < 0 && !Ctx::is_float(account) {
            out.push(Violation::new(
                NAME,
                format!("initial balance of {account} is {b}"),
                None,
            ));
        }
    }
    for pair in &ctx.pairs {
        let Some(ok) = pair.ok() else { continue };
        let below: Vec<String> = observed(pair.invoke, ok)
            .into_iter()
            .filter(|(account, _, b)| *b < 0 && !Ctx::is_float(account))
            .map(|(account, what, b)| format!("{account} {what} {b}"))
            .collect();
        if !below.is_empty() {
            out.push(Violation::new(
                NAME,
                format!(
                    "{} from node {} shows a non-float account below 0: {}",
                    ok.f,
                    ok.node,
                    below.join(", ")
                ),
                Some(ok),
            ));
        }
    }
    out
}

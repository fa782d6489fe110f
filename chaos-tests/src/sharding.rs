//! What a run over several shards changes in a history before it is checked.
//!
//! The checker places a transfer exactly when its answer names a log position on a shard: a
//! read of that shard at index `i` then shows exactly the transfers at or before `i`. That holds
//! for a transfer one shard does alone (its id, payer and payee on one shard: one command, one
//! position). A cross-shard transfer is a saga: its money moves at several positions on two or
//! three shards (the hold, the credit, the post), and the one position its answer names cannot
//! place all of them. So [`prepare`] keeps the positions of one-shard transfers and removes the
//! others' (from their answers and from every lookup of their ids): those transfers are placed
//! by real time only, which every check treats soundly (an unknown order allows every order).
//! It also names the shard of every transfer, read and probe the server answered without one
//! (failures, unknown outcomes), by the node's own routing, so each shard's stream is complete.

use std::collections::BTreeSet;

use cluster::saga::Route;
use ledger::{AccountId, Currency, TransferId, TransferKind, TransferRequest};

use crate::history::{Func, History};

/// The shards a transfer touches, by the node's own routing: its id's home, the payer's side
/// and the payee's side; `None` when an id does not parse (refused before routing).
pub fn route(id: &str, from: &str, to: &str, shards: u32) -> Option<(u32, u32, u32)> {
    let request = TransferRequest {
        id: TransferId::parse(id).ok()?,
        kind: TransferKind::P2p,
        from: AccountId::parse(from).ok()?,
        to: AccountId::parse(to).ok()?,
        amount: 1,
        currency: Currency::parse("KES").ok()?,
        memo: String::new(),
        pending: false,
        timeout_s: 60,
    };
    let route = Route::of(&request, shards);
    Some((route.home.0, route.payer.0, route.payee.0))
}

/// The shard an account lives on (a system account: shard 0's slice, for reads).
pub fn shard_of_account(account: &str, shards: u32) -> Option<u32> {
    let account = AccountId::parse(account).ok()?;
    Some(if account.is_system() {
        0
    } else {
        ledger::shard_of(&account, shards).0
    })
}

/// Names missing shards and removes the positions of cross-shard transfers (see the module
/// docs). With one shard every transfer is local: only the missing shards are named (0).
pub fn prepare(history: &mut History, shards: u32) {
    let mut sagas: BTreeSet<String> = BTreeSet::new();
    for op in &mut history.ops {
        match op.f {
            Func::Transfer | Func::Probe if op.transfer.is_some() => {
                let t = op.transfer.as_ref().expect("checked above");
                let Some((home, payer, payee)) = route(&t.id, &t.from, &t.to, shards) else {
                    continue;
                };
                if op.shard.is_none() {
                    op.shard = Some(payer);
                }
                if !(home == payer && payer == payee) {
                    sagas.insert(t.id.clone());
                }
            }
            Func::Read | Func::Probe if op.shard.is_none() => {
                op.shard = op
                    .account
                    .as_deref()
                    .and_then(|a| shard_of_account(a, shards));
            }
            _ => {}
        }
    }
    if sagas.is_empty() {
        return;
    }
    for op in &mut history.ops {
        let is_saga = op.transfer.as_ref().is_some_and(|t| sagas.contains(&t.id));
        if is_saga {
            op.log_index = None;
            op.log_pos = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Op, OpKind, TransferOp};
    use ledger::ShardId;

    fn customers_on(shards: u32) -> (String, String, String) {
        let ids: Vec<String> = (0..200).map(|i| format!("+25479900{i:04}")).collect();
        let on = |s: u32| {
            ids.iter()
                .filter(|a| shard_of_account(a, shards) == Some(s))
                .cloned()
                .collect::<Vec<_>>()
        };
        let zero = on(0);
        (zero[0].clone(), zero[1].clone(), on(1)[0].clone())
    }

    fn id_homed(shards: u32, home: u32) -> String {
        (0..)
            .map(|n| format!("t-{n}"))
            .find(|id| {
                ledger::home_of(&TransferId::parse(id).expect("id"), shards) == ShardId(home)
            })
            .expect("an id homed there")
    }

    fn answered(id: &str, from: &str, to: &str) -> Vec<Op> {
        let transfer = TransferOp::new(id, "p2p", from, to, 5);
        let invoke = Op::invoke(1, Func::Transfer, 0, 1).with_transfer(transfer.clone());
        let ok = invoke
            .complete(OpKind::Ok, 0)
            .with_status("completed")
            .with_shard(0)
            .with_log(7, Some(1));
        let lookup = Op::invoke(2, Func::Lookup, 0, 1)
            .with_transfer(TransferOp::new(id, "", "", "", 0))
            .complete(OpKind::Ok, 0)
            .with_status("completed")
            .with_log(9, Some(0));
        vec![invoke, ok, lookup]
    }

    #[test]
    fn one_shard_transfers_keep_their_positions_sagas_lose_theirs() {
        let shards = 8;
        let (a, b, c) = customers_on(shards);
        let local = id_homed(shards, 0);
        let elsewhere = id_homed(shards, 3);
        let mut history = History::new(1, Default::default());
        history.ops.extend(answered(&local, &a, &b));
        // Payer and payee on one shard, the id's record on another: a saga.
        history.ops.extend(answered(&elsewhere, &a, &b));
        // Payee on another shard: a saga, wherever its id lives.
        let across = "u-1".to_string();
        history.ops.extend(answered(&across, &a, &c));
        prepare(&mut history, shards);
        let positions = |id: &str| -> Vec<Option<u64>> {
            history
                .ops
                .iter()
                .filter(|op| op.transfer.as_ref().is_some_and(|t| t.id == id))
                .filter(|op| op.kind == OpKind::Ok)
                .map(|op| op.log_index)
                .collect()
        };
        assert_eq!(positions(&local), vec![Some(7), Some(9)]);
        assert_eq!(positions(&elsewhere), vec![None, None]);
        assert_eq!(positions(&across), vec![None, None]);
    }

    #[test]
    fn unanswered_ops_get_their_shard_from_the_routing() {
        let shards = 8;
        let (_, _, c) = customers_on(shards);
        let mut history = History::new(1, Default::default());
        let transfer = TransferOp::new(&id_homed(shards, 1), "p2p", &c, "float", 5);
        history
            .ops
            .push(Op::invoke(1, Func::Transfer, 0, 1).with_transfer(transfer));
        history
            .ops
            .push(Op::invoke(2, Func::Read, 0, 1).with_account(&c));
        prepare(&mut history, shards);
        assert_eq!(history.ops[0].shard, Some(1));
        assert_eq!(history.ops[1].shard, Some(1));
    }

    #[test]
    fn with_one_shard_everything_is_local_on_shard_zero() {
        let (a, _, c) = customers_on(8);
        let mut history = History::new(1, Default::default());
        history.ops.extend(answered("x-1", &a, &c));
        history
            .ops
            .push(Op::invoke(3, Func::Read, 0, 1).with_account(&a));
        prepare(&mut history, 1);
        assert_eq!(history.ops[1].log_index, Some(7));
        assert_eq!(history.ops[3].shard, Some(0));
    }
}

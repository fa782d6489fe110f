//! Read models: what clients see of accounts, transfers and statements (JSON via serde).
//! They also cross the cluster in postcard frames, which cannot skip fields: no
//! `skip_serializing_if` here.

use serde::{Deserialize, Serialize};

use crate::account::{Account, AccountKind, AccountStatus, Direction, Entry};
use crate::codes::Code;
use crate::ids::{AccountId, Currency, TransferId};
use crate::saga::Saga;
use crate::time::rfc3339;
use crate::transfer::{Transfer, TransferKind, TransferOutcome, TransferStatus};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    pub id: AccountId,
    pub kind: AccountKind,
    pub name: String,
    pub currency: Currency,
    pub status: AccountStatus,
    pub balance: i64,
    pub available: i64,
    pub pending_out: i64,
    pub pending_in: i64,
}

impl AccountView {
    /// Adds another shard's slice of the same system account (`float`, `fees`): the account
    /// the API shows is the sum of its slices. Saturating: a display sum, never money moved.
    pub fn add_slice(&mut self, slice: &AccountView) {
        debug_assert_eq!(self.id, slice.id);
        self.balance = self.balance.saturating_add(slice.balance);
        self.available = self.available.saturating_add(slice.available);
        self.pending_out = self.pending_out.saturating_add(slice.pending_out);
        self.pending_in = self.pending_in.saturating_add(slice.pending_in);
    }

    pub fn of(account: &Account) -> AccountView {
        AccountView {
            id: account.id.clone(),
            kind: account.kind,
            name: account.name.to_string(),
            currency: account.currency,
            status: account.status,
            balance: account.balance,
            available: account.available(),
            pending_out: account.pending_out,
            pending_in: account.pending_in,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferView {
    pub id: TransferId,
    pub kind: TransferKind,
    pub from: AccountId,
    pub to: AccountId,
    pub amount: u64,
    pub fee: u64,
    pub currency: Currency,
    pub status: TransferStatus,
    pub code: Option<Code>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub reversed_by: Option<TransferId>,
    pub reverses: Option<TransferId>,
    /// Where in its shard's Raft log the transfer was first applied (extra to the contract).
    pub log_index: u64,
    pub log_pos: u32,
}

impl TransferView {
    pub fn of(transfer: &Transfer) -> TransferView {
        TransferView {
            id: transfer.id.clone(),
            kind: transfer.kind,
            from: transfer.from.clone(),
            to: transfer.to.clone(),
            amount: transfer.amount,
            fee: transfer.fee,
            currency: transfer.currency,
            status: transfer.status,
            code: transfer.code,
            created_at: rfc3339(transfer.created_at_ms),
            expires_at: transfer.expires_at_ms.map(rfc3339),
            reversed_by: transfer.reversed_by.clone(),
            reverses: transfer.reverses.clone(),
            log_index: transfer.log_index,
            log_pos: transfer.log_pos,
        }
    }

    /// A cross-shard transfer as its home shard sees it: `pending` while the saga runs, then
    /// what its answer says.
    pub fn of_saga(saga: &Saga) -> TransferView {
        let request = &saga.request;
        let (status, code) = saga.status();
        let fee = match &saga.answer {
            Some(TransferOutcome::Accepted(accepted)) => accepted.fee,
            _ => 0,
        };
        TransferView {
            id: request.id.clone(),
            kind: request.kind,
            from: request.from.clone(),
            to: request.to.clone(),
            amount: request.amount,
            fee,
            currency: request.currency,
            status,
            code,
            created_at: rfc3339(saga.begun_at_ms),
            expires_at: saga.expires_at_ms.map(rfc3339),
            reversed_by: saga
                .reversal
                .as_ref()
                .and_then(|(by, applied)| applied.then(|| by.clone())),
            reverses: saga.reverses.as_ref().map(|r| r.request.original.clone()),
            log_index: saga.log_index,
            log_pos: saga.log_pos,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryView {
    pub transfer_id: TransferId,
    pub direction: Direction,
    pub amount: u64,
    pub fee: u64,
    pub balance_after: i64,
    pub kind: TransferKind,
    pub counterparty: AccountId,
    pub at: String,
}

impl EntryView {
    pub fn of(entry: &Entry) -> EntryView {
        EntryView {
            transfer_id: entry.transfer_id.clone(),
            direction: entry.direction,
            amount: entry.amount,
            fee: entry.fee,
            balance_after: entry.balance_after,
            kind: entry.kind,
            counterparty: entry.counterparty.clone(),
            at: rfc3339(entry.at_ms),
        }
    }
}

/// Totals over the whole ledger, for conservation checks by operators and tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub accounts: u64,
    pub transfers: u64,
    pub pending: u64,
    /// Sum of every account's posted balance: always exactly 0.
    pub balance_sum: i64,
    pub float_balance: i64,
    pub fees_balance: i64,
    /// Cross-shard transfers whose home is here and that have not finished.
    pub sagas_running: u64,
    /// Holds of cross-shard transfers still held here (neither posted nor voided).
    pub legs_held: u64,
}

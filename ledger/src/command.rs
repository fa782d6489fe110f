//! Commands: the only way the replicated ledger changes, and what each one answers.

use serde::{Deserialize, Serialize};

use crate::account::{AccountStatus, NewAccount};
use crate::codes::Code;
use crate::ids::{AccountId, TransferId};
use crate::tariff::Tariff;
use crate::transfer::{ReversalRequest, TransferOutcome, TransferRequest};
use crate::views::{AccountView, TransferView};

/// One replicated command. Persisted in the Raft log: variants are only ever appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    CreateAccount(NewAccount),
    Transfer(TransferRequest),
    /// Up to `BATCH_MAX` transfers applied in order, each on its own.
    Batch(Vec<TransferRequest>),
    Post(TransferId),
    Void(TransferId),
    Reverse(ReversalRequest),
    /// Voids every pending transfer whose deadline is at or before the command's time.
    ExpirePending,
    SetTariff(Tariff),
    SetAccountStatus {
        id: AccountId,
        status: AccountStatus,
    },
}

/// What a command answered. Deterministic: every replica computes the same value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Account(Result<AccountView, Code>),
    Transfer(TransferOutcome),
    Batch(Vec<TransferOutcome>),
    /// Post, void: the transfer's record afterwards.
    Record(Result<TransferView, Code>),
    Expired {
        voided: u32,
    },
    /// Tariff and account-status changes.
    Status(Result<(), Code>),
}

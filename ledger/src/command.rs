//! Commands: the only way the replicated ledger changes, and what each one answers.

use serde::{Deserialize, Serialize};

use crate::account::{AccountStatus, NewAccount};
use crate::codes::Code;
use crate::day::Schedule;
use crate::ids::{AccountId, ShardId, TransferId};
use crate::saga::{LegOutcome, Reverses, SagaOutcome};
use crate::tariff::Tariff;
use crate::transfer::{ReversalRequest, TransferOutcome, TransferRequest, TransferStatus};
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
    /// Home shard of a cross-shard transfer: records the saga (see [`crate::saga`]).
    SagaBegin {
        request: TransferRequest,
        payer_shard: ShardId,
        payee_shard: ShardId,
    },
    /// Home shard: records the saga's answer (the first recorded stays).
    SagaFinish {
        id: TransferId,
        answer: TransferOutcome,
    },
    /// Payer's shard: check the payer's side, hold `amount + fee`.
    Hold(TransferRequest),
    /// Payer's shard: the hold becomes a debit.
    PostHold(TransferId),
    /// Payer's shard: release the hold, or fence one that has not arrived.
    VoidHold(TransferId),
    /// Payee's shard: check the payee's side, credit it.
    Credit(TransferRequest),
    /// Payee's shard: fence a credit that has not arrived.
    CancelCredit(TransferId),
    /// Up to `BATCH_MAX` commands of one shard, applied in order, each on its own (the
    /// leader's group commit). `Batch` and `Many` do not nest in it.
    Many(Vec<Command>),
    /// Home shard of a reversal that needs a saga: records it like `SagaBegin`, with what it
    /// reverses.
    ReversalBegin {
        request: TransferRequest,
        payer_shard: ShardId,
        payee_shard: ShardId,
        reverses: Reverses,
    },
    /// Home shard of a cross-shard pending transfer: post (`true`) or void it.
    SagaDecide {
        id: TransferId,
        post: bool,
    },
    /// Home shard: where a decided pending transfer's money ended (completed or voided).
    SagaClose {
        id: TransferId,
        status: TransferStatus,
        code: Option<Code>,
    },
    /// Home shard of an original that is a saga: claim it for reversal `by`.
    ClaimReversal {
        original: TransferId,
        by: TransferId,
    },
    /// Home shard of an original that is a saga: reversal `by` moved the money or did not.
    SettleReversal {
        original: TransferId,
        by: TransferId,
        applied: bool,
    },
    /// When business days end, from the next cut-off on (see [`crate::day`]).
    SetSchedule(Schedule),
    /// Lets the business day's cut-off pass on a shard with no other entry (the timer's).
    CloseDay,
}

impl Command {
    /// How many commands this is: the items of a `Batch` or `Many`, else 1.
    pub fn count(&self) -> usize {
        match self {
            Command::Batch(requests) => requests.len(),
            Command::Many(commands) => commands.iter().map(Command::count).sum(),
            _ => 1,
        }
    }

    /// The command's name, for logs and the admin log view.
    pub fn name(&self) -> &'static str {
        match self {
            Command::CreateAccount(_) => "create_account",
            Command::Transfer(_) => "transfer",
            Command::Batch(_) => "batch",
            Command::Post(_) => "post",
            Command::Void(_) => "void",
            Command::Reverse(_) => "reverse",
            Command::ExpirePending => "expire_pending",
            Command::SetTariff(_) => "set_tariff",
            Command::SetAccountStatus { .. } => "set_account_status",
            Command::SagaBegin { .. } => "saga_begin",
            Command::SagaFinish { .. } => "saga_finish",
            Command::Hold(_) => "hold",
            Command::PostHold(_) => "post_hold",
            Command::VoidHold(_) => "void_hold",
            Command::Credit(_) => "credit",
            Command::CancelCredit(_) => "cancel_credit",
            Command::Many(_) => "many",
            Command::ReversalBegin { .. } => "reversal_begin",
            Command::SagaDecide { .. } => "saga_decide",
            Command::SagaClose { .. } => "saga_close",
            Command::ClaimReversal { .. } => "claim_reversal",
            Command::SettleReversal { .. } => "settle_reversal",
            Command::SetSchedule(_) => "set_schedule",
            Command::CloseDay => "close_day",
        }
    }

    /// The transfer ids the command names, in order (a `Many` lists its commands' ids).
    pub fn transfer_ids(&self) -> Vec<&TransferId> {
        match self {
            Command::Transfer(t) | Command::Hold(t) | Command::Credit(t) => vec![&t.id],
            Command::SagaBegin { request, .. } | Command::ReversalBegin { request, .. } => {
                vec![&request.id]
            }
            Command::SagaDecide { id, .. } | Command::SagaClose { id, .. } => vec![id],
            Command::ClaimReversal { original, by }
            | Command::SettleReversal { original, by, .. } => {
                vec![by, original]
            }
            Command::Batch(items) => items.iter().map(|t| &t.id).collect(),
            Command::Post(id)
            | Command::Void(id)
            | Command::PostHold(id)
            | Command::VoidHold(id)
            | Command::CancelCredit(id)
            | Command::SagaFinish { id, .. } => vec![id],
            Command::Reverse(r) => vec![&r.id],
            Command::Many(commands) => commands.iter().flat_map(Command::transfer_ids).collect(),
            Command::CreateAccount(_)
            | Command::ExpirePending
            | Command::SetTariff(_)
            | Command::SetAccountStatus { .. }
            | Command::SetSchedule(_)
            | Command::CloseDay => Vec::new(),
        }
    }
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
    Saga(SagaOutcome),
    Leg(LegOutcome),
    /// One outcome per command of a `Many`, in order (none when it was refused whole).
    Many(Vec<Outcome>),
}

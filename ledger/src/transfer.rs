//! Transfers: the requests that move money, their records and the answers they get.

use serde::{Deserialize, Serialize};

use crate::codes::Code;
use crate::ids::{AccountId, Currency, TransferId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferKind {
    P2p,
    MerchantPayment,
    BillPayment,
    CashIn,
    CashOut,
    Issue,
    Redeem,
    /// Made by the ledger when a transfer is reversed; clients cannot ask for it directly.
    Reversal,
}

impl TransferKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferKind::P2p => "p2p",
            TransferKind::MerchantPayment => "merchant_payment",
            TransferKind::BillPayment => "bill_payment",
            TransferKind::CashIn => "cash_in",
            TransferKind::CashOut => "cash_out",
            TransferKind::Issue => "issue",
            TransferKind::Redeem => "redeem",
            TransferKind::Reversal => "reversal",
        }
    }

    pub const CLIENT_KINDS: [TransferKind; 7] = [
        TransferKind::P2p,
        TransferKind::MerchantPayment,
        TransferKind::BillPayment,
        TransferKind::CashIn,
        TransferKind::CashOut,
        TransferKind::Issue,
        TransferKind::Redeem,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferStatus {
    Completed,
    Pending,
    Rejected,
    Voided,
    Reversed,
}

impl TransferStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferStatus::Completed => "completed",
            TransferStatus::Pending => "pending",
            TransferStatus::Rejected => "rejected",
            TransferStatus::Voided => "voided",
            TransferStatus::Reversed => "reversed",
        }
    }
}

/// A client's transfer request, validated for shape (ids, amount range) by whoever built it.
/// Two requests under one id are "the same body" exactly when they are equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRequest {
    pub id: TransferId,
    pub kind: TransferKind,
    pub from: AccountId,
    pub to: AccountId,
    pub amount: u64,
    pub currency: Currency,
    pub memo: String,
    pub pending: bool,
    pub timeout_s: u64,
}

/// A request to reverse a completed transfer: moves its amount back as a new, linked transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReversalRequest {
    pub id: TransferId,
    pub original: TransferId,
    pub reason: String,
}

/// What made a transfer record: a client's request or a reversal. Kept for idempotency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    Request(TransferRequest),
    Reversal(ReversalRequest),
}

/// The answer a transfer got when it was first applied, replayed verbatim for retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferOutcome {
    /// HTTP 201: completed or pending.
    Accepted(Accepted),
    /// HTTP 422: a business rejection, recorded under the id.
    Rejected {
        id: TransferId,
        code: Code,
        log_index: u64,
        log_pos: u32,
    },
    /// Refused without recording anything (`id_conflict`, `same_account`, `transfer_not_found`…).
    Refused { id: TransferId, code: Code },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub id: TransferId,
    pub status: TransferStatus,
    pub amount: u64,
    pub fee: u64,
    pub from_balance: i64,
    pub to_balance: i64,
    /// What the payer may still send in this business day under its daily limit, right after
    /// this transfer (`None`: its kind has no daily limit, or the transfer is a reversal).
    pub daily_room: Option<u64>,
    /// Where the transfer was first applied: see [`At`].
    pub log_index: u64,
    pub log_pos: u32,
}

/// When and where a command is applied: the leader-assigned time and the command's place in its
/// shard's Raft log (the entry's index, and the position within a batch entry, 0 otherwise).
/// Transfer records and answers keep the place they were first applied at, so a retry is told
/// the original position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct At {
    pub ms: u64,
    pub log_index: u64,
    pub log_pos: u32,
}

impl At {
    /// At time `ms`, at the head of log entry 0 (tests and tools outside a log).
    pub fn ms(ms: u64) -> At {
        At {
            ms,
            ..At::default()
        }
    }
}

/// A transfer as the replicated state holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub id: TransferId,
    pub kind: TransferKind,
    pub from: AccountId,
    pub to: AccountId,
    pub amount: u64,
    pub fee: u64,
    pub currency: Currency,
    pub status: TransferStatus,
    pub code: Option<Code>,
    pub created_at_ms: u64,
    /// When a pending transfer voids itself.
    pub expires_at_ms: Option<u64>,
    pub reversed_by: Option<TransferId>,
    pub reverses: Option<TransferId>,
    /// The place in the shard's log where the record was made (see [`At`]).
    pub log_index: u64,
    pub log_pos: u32,
    /// The business day whose daily-limit counter this transfer counts in (its payer's
    /// `out_day_ms` when it was accepted); `None` for rejections and reversals. A void gives the
    /// count back if the payer's counter still counts that day.
    pub counted_day_ms: Option<u64>,
    pub origin: Origin,
    pub answer: TransferOutcome,
}

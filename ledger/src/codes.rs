//! Outcome codes: every way the ledger can say no. Each has a stable snake_case name that
//! clients see; the HTTP status for each lives in the node's one error table.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    // Business rejections of a transfer: recorded under the transfer id (HTTP 422).
    InsufficientFunds,
    AccountNotFound,
    AccountFrozen,
    AccountClosed,
    LimitExceeded,
    CurrencyMismatch,
    KindNotAllowed,
    /// A cross-shard transfer whose payee's shard did not answer before the saga's deadline:
    /// the payer's hold was released, nothing moved.
    PayeeUnreachable,
    // Refusals that record nothing.
    SameAccount,
    IdConflict,
    AccountExists,
    TransferNotFound,
    TransferNotPending,
    NotReversible,
    AlreadyReversed,
    /// A malformed command that reached the ledger despite the API's checks.
    InvalidRequest,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InsufficientFunds => "insufficient_funds",
            Code::AccountNotFound => "account_not_found",
            Code::AccountFrozen => "account_frozen",
            Code::AccountClosed => "account_closed",
            Code::LimitExceeded => "limit_exceeded",
            Code::CurrencyMismatch => "currency_mismatch",
            Code::KindNotAllowed => "kind_not_allowed",
            Code::PayeeUnreachable => "payee_unreachable",
            Code::SameAccount => "same_account",
            Code::IdConflict => "id_conflict",
            Code::AccountExists => "account_exists",
            Code::TransferNotFound => "transfer_not_found",
            Code::TransferNotPending => "transfer_not_pending",
            Code::NotReversible => "not_reversible",
            Code::AlreadyReversed => "already_reversed",
            Code::InvalidRequest => "invalid_request",
        }
    }

    /// Every code, for golden tests and documentation.
    pub const ALL: [Code; 16] = [
        Code::InsufficientFunds,
        Code::AccountNotFound,
        Code::AccountFrozen,
        Code::AccountClosed,
        Code::LimitExceeded,
        Code::CurrencyMismatch,
        Code::KindNotAllowed,
        Code::PayeeUnreachable,
        Code::SameAccount,
        Code::IdConflict,
        Code::AccountExists,
        Code::TransferNotFound,
        Code::TransferNotPending,
        Code::NotReversible,
        Code::AlreadyReversed,
        Code::InvalidRequest,
    ];
}

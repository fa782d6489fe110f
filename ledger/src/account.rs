//! Accounts: who holds money, and the per-account statement.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, Currency, TransferId};
use crate::transfer::TransferKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    Customer,
    Merchant,
    Agent,
    System,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Customer => "customer",
            AccountKind::Merchant => "merchant",
            AccountKind::Agent => "agent",
            AccountKind::System => "system",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Active,
    Frozen,
    Closed,
}

/// What a client asks for when opening an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAccount {
    pub id: AccountId,
    pub kind: AccountKind,
    pub name: String,
    pub currency: Currency,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Debit,
    Credit,
}

/// One line of an account's statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub transfer_id: TransferId,
    pub direction: Direction,
    pub amount: u64,
    pub fee: u64,
    pub balance_after: i64,
    pub kind: TransferKind,
    pub counterparty: AccountId,
    pub at_ms: u64,
}

/// An account as the replicated state holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub kind: AccountKind,
    pub name: String,
    pub currency: Currency,
    pub status: AccountStatus,
    /// Posted money only.
    pub balance: i64,
    /// Held by pending transfers leaving this account (amount plus fee).
    pub pending_out: i64,
    /// Promised by pending transfers arriving here.
    pub pending_in: i64,
    /// Newest last; bounded by `STATEMENT_KEEP_MAX`.
    pub entries: VecDeque<Entry>,
    pub created_at_ms: u64,
    /// The business day (its opening cut-off, see [`crate::day`]) that `out_today` counts.
    pub out_day_ms: u64,
    /// What this account has sent (amount plus fee, holds included) in that day: the counter
    /// the tariff's daily limit is checked against.
    pub out_today: u64,
}

impl Account {
    pub fn status_name(&self) -> &'static str {
        match self.status {
            AccountStatus::Active => "active",
            AccountStatus::Frozen => "frozen",
            AccountStatus::Closed => "closed",
        }
    }

    /// What can be spent now: posted balance minus holds.
    pub fn available(&self) -> i64 {
        self.balance
            .checked_sub(self.pending_out)
            .expect("balance and holds are bounded by BALANCE_MAX")
    }
}

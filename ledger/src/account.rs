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
    /// A boxed `str`, not a `String`: 16 bytes in the account instead of 24.
    pub name: Box<str>,
    pub currency: Currency,
    pub status: AccountStatus,
    /// Posted money only.
    pub balance: i64,
    /// Held by pending transfers leaving this account (amount plus fee).
    pub pending_out: i64,
    /// Promised by pending transfers arriving here.
    pub pending_in: i64,
    /// Newest last; bounded by `STATEMENT_KEEP_MAX`.
    pub entries: Statement,
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

/// An account's statement lines, newest last. An account that never moved money (most of a
/// large subscriber base at any time) holds no lines, and then costs one pointer here instead of
/// an empty `VecDeque`'s 32 bytes. Encoded as the sequence of its lines, like a `VecDeque`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(
    clippy::box_collection,
    reason = "one pointer in every account instead of a 32-byte empty deque"
)]
pub struct Statement(Option<Box<VecDeque<Entry>>>);

impl Statement {
    /// Appends `entry`, dropping the oldest lines past `keep`.
    pub fn push(&mut self, entry: Entry, keep: usize) {
        let lines = self.0.get_or_insert_with(Box::default);
        lines.push_back(entry);
        while lines.len() > keep {
            lines.pop_front();
        }
    }

    /// Oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Entry> {
        self.0.iter().flat_map(|lines| lines.iter())
    }

    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |lines| lines.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Serialize for Statement {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(lines) => lines.serialize(serializer),
            None => serializer.collect_seq(std::iter::empty::<&Entry>()),
        }
    }
}

impl<'de> Deserialize<'de> for Statement {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let lines = VecDeque::<Entry>::deserialize(deserializer)?;
        Ok(Statement((!lines.is_empty()).then(|| Box::new(lines))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: u64) -> Entry {
        Entry {
            transfer_id: TransferId::parse(&format!("t-{n}")).expect("id"),
            direction: Direction::Credit,
            amount: n,
            fee: 0,
            balance_after: 0,
            kind: TransferKind::P2p,
            counterparty: AccountId::float(),
            at_ms: n,
        }
    }

    /// Goal: a statement keeps the newest `keep` lines and encodes exactly as the `VecDeque`
    /// it replaced, so snapshots written before it still read.
    #[test]
    fn a_statement_is_bounded_and_encodes_as_a_deque() {
        let mut statement = Statement::default();
        let empty: VecDeque<Entry> = VecDeque::new();
        assert_eq!(
            postcard::to_allocvec(&statement).expect("encode"),
            postcard::to_allocvec(&empty).expect("encode")
        );
        for n in 1..=3 {
            statement.push(line(n), 2);
        }
        let amounts: Vec<u64> = statement.iter().map(|entry| entry.amount).collect();
        assert_eq!(amounts, [2, 3]);
        let deque: VecDeque<Entry> = [line(2), line(3)].into();
        let bytes = postcard::to_allocvec(&statement).expect("encode");
        assert_eq!(bytes, postcard::to_allocvec(&deque).expect("encode"));
        assert_eq!(
            postcard::from_bytes::<Statement>(&bytes).expect("decode"),
            statement
        );
        let none = postcard::to_allocvec(&empty).expect("encode");
        assert_eq!(
            postcard::from_bytes::<Statement>(&none).expect("decode"),
            Statement::default()
        );
    }
}

//! # ledger — cellpay's money rules
//!
//! Pure and deterministic: no async, no I/O, no clock, no randomness. The replicated state
//! machine calls [`Ledger::apply`] with a command and the leader-assigned time; every replica
//! computes the same outcome and the same next state.
//!
//! Modules: [`ids`] (E.164 account ids, transfer ids, currencies, shards), [`account`],
//! [`transfer`] (requests, records, answers), [`tariff`] (fees and limits from configuration),
//! [`command`] (what can change the ledger), [`state`] (the ledger and `apply`), [`saga`]
//! (cross-shard transfers: home record and per-shard legs), [`day`] (business days and the
//! end-of-day cut-off), [`daily`] (per-account daily limits), [`views`]
//! (read models), [`codes`] (every rejection code), [`limits`], [`time`].
//!
//! Business rejections are values ([`TransferOutcome::Rejected`]), never `Err`.
//!
//! Must never depend on: openraft, tokio, storage, HTTP, actors — or any crate of this workspace.
#![deny(clippy::arithmetic_side_effects)]

pub mod account;
pub mod codes;
pub mod command;
pub mod daily;
pub mod day;
pub mod ids;
pub mod limits;
pub mod query;
pub mod saga;
pub mod state;
pub mod tariff;
#[allow(clippy::arithmetic_side_effects)] // calendar arithmetic on bounded u64, not money
pub mod time;
pub mod transfer;
pub mod views;

pub use account::{Account, AccountKind, AccountStatus, Direction, Entry, NewAccount, Statement};
pub use codes::Code;
pub use command::{Command, Outcome};
pub use day::{Day, DayClose, Schedule};
pub use ids::{home_of, shard_of, AccountId, Currency, IdError, ShardId, TransferId};
pub use query::{Answer, Query};
pub use saga::{Leg, LegOutcome, LegState, Reverses, Saga, SagaOutcome, SAGA_DEADLINE_MS};
pub use state::{Ledger, LEDGER_FORMAT_VERSION};
pub use tariff::{FeeBand, Tariff};
pub use transfer::{
    Accepted, At, Origin, ReversalRequest, Transfer, TransferKind, TransferOutcome,
};
pub use transfer::{TransferRequest, TransferStatus};
pub use views::{AccountView, EntryView, Summary, TransferView};

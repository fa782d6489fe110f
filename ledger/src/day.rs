//! The business day and its end-of-day cut-off.
//!
//! Days are cut at `offset_ms` past each multiple of `period_ms` (UTC): by default midnight
//! UTC every 24 hours, changed live with [`crate::Command::SetSchedule`]. The boundaries are
//! decided by the time the leader stamped on each log entry, so every replica closes the same
//! day at the same entry: before a command whose time is at or past the open day's cut-off is
//! applied, the day is closed ([`DayClose`]: the day's transfers, volume and fees on this
//! shard, and the system slices' balances at the close) and the next one opens. An idle shard
//! has no entries to carry the close: its leader's timer proposes
//! [`crate::Command::CloseDay`], which does nothing but let the boundary pass. Days with no
//! entry at all between two cut-offs leave no close (they had nothing to report).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::codes::Code;
use crate::ids::AccountId;
use crate::limits::{CLOSES_KEPT, PERIOD_MS_MAX, PERIOD_MS_MIN};
use crate::state::Ledger;
use crate::transfer::At;

/// When business days end: at `offset_ms` past every multiple of `period_ms` since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub offset_ms: u64,
    pub period_ms: u64,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            offset_ms: 0,
            period_ms: 86_400_000,
        }
    }
}

impl Schedule {
    pub fn validate(&self) -> Result<(), Code> {
        let period_ok = (PERIOD_MS_MIN..=PERIOD_MS_MAX).contains(&self.period_ms);
        if !period_ok || self.offset_ms >= self.period_ms {
            return Err(Code::InvalidRequest);
        }
        Ok(())
    }

    /// The last cut-off at or before `ms`.
    pub fn cutoff_at_or_before(&self, ms: u64) -> u64 {
        let shifted = ms.saturating_sub(self.offset_ms);
        let periods = shifted.checked_div(self.period_ms).expect("period > 0");
        periods
            .checked_mul(self.period_ms)
            .and_then(|start| start.checked_add(self.offset_ms))
            .expect("below ms")
    }
}

/// The open business day on one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Day {
    /// The cut-off that opened it (0 before the shard's first timed entry).
    pub from_ms: u64,
    /// Its cut-off.
    pub until_ms: u64,
    pub transfers: u64,
    pub volume: u128,
    pub fees: u128,
}

/// A closed business day on one shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayClose {
    pub from_ms: u64,
    pub until_ms: u64,
    /// Money movements completed on this shard that day (a cross-shard transfer counts on its
    /// payer's shard), their amounts and their fees.
    pub transfers: u64,
    pub volume: u128,
    pub fees: u128,
    /// This shard's `float` and `fees` slices at the close.
    pub float_balance: i64,
    pub fees_balance: i64,
    /// The log entry that closed the day.
    pub closed_at_index: u64,
}

impl Ledger {
    pub fn schedule(&self) -> Schedule {
        self.schedule
    }

    pub fn day(&self) -> &Day {
        &self.day
    }

    /// Closed days, oldest first (at most `CLOSES_KEPT`).
    pub fn closes(&self) -> &VecDeque<DayClose> {
        &self.closes
    }

    /// The open day's cut-off, for the timer (none before the first timed entry).
    pub fn next_cutoff_ms(&self) -> Option<u64> {
        (self.day.until_ms > 0).then_some(self.day.until_ms)
    }

    /// Closes the open day if `at` is at or past its cut-off, and opens the day `at` falls in.
    pub(crate) fn roll_day(&mut self, at: At) {
        if at.ms == 0 {
            return;
        }
        if self.day.until_ms == 0 {
            self.open_day(at.ms);
            return;
        }
        if at.ms < self.day.until_ms {
            return;
        }
        let balance = |id: AccountId| self.accounts.get(&id).map_or(0, |a| a.balance);
        let close = DayClose {
            from_ms: self.day.from_ms,
            until_ms: self.day.until_ms,
            transfers: self.day.transfers,
            volume: self.day.volume,
            fees: self.day.fees,
            float_balance: balance(AccountId::float()),
            fees_balance: balance(AccountId::fees()),
            closed_at_index: at.log_index,
        };
        if self.closes.len() >= CLOSES_KEPT {
            self.closes.pop_front();
        }
        self.closes.push_back(close);
        self.open_day(at.ms);
    }

    fn open_day(&mut self, ms: u64) {
        let from_ms = self.schedule.cutoff_at_or_before(ms);
        let until_ms = from_ms
            .checked_add(self.schedule.period_ms)
            .expect("times are far below u64::MAX");
        self.day = Day {
            from_ms,
            until_ms,
            ..Day::default()
        };
    }

    /// Counts a completed money movement in the open day.
    pub(crate) fn count_in_day(&mut self, amount: u64, fee: u64) {
        let day = &mut self.day;
        day.transfers = day.transfers.checked_add(1).expect("u64 counts");
        day.volume = day
            .volume
            .checked_add(u128::from(amount))
            .expect("u128 sums");
        day.fees = day.fees.checked_add(u128::from(fee)).expect("u128 sums");
    }

    /// A new schedule from the next cut-off on; the open day keeps its start and ends at the
    /// new schedule's next cut-off after `at`.
    pub(crate) fn set_schedule(&mut self, schedule: Schedule, at: At) -> Result<(), Code> {
        schedule.validate()?;
        self.schedule = schedule;
        if self.day.until_ms > 0 {
            let next = schedule
                .cutoff_at_or_before(at.ms)
                .checked_add(schedule.period_ms)
                .expect("times are far below u64::MAX");
            self.day.until_ms = next;
        }
        Ok(())
    }
}

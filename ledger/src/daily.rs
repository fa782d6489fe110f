//! Daily limits: what an account may send in one business day.
//!
//! The tariff's `daily_out_max` caps, per account kind, the amounts plus fees an account sends
//! in one business day ([`crate::day`]). Each account keeps one counter, `out_today`, stamped
//! with the day it counts (`out_day_ms`, the day's opening cut-off): a counter stamped with an
//! older day reads as 0, so the cut-off resets every counter without touching any account.
//!
//! A transfer counts when it is accepted — a pending one when it is held, since the hold is
//! money the payer can no longer send — and a void or expiry gives the count back if the
//! payer's counter still counts the transfer's day. A post counts nothing more. Reversals are
//! outside limits: they neither count nor are refused by one. System accounts (`float`,
//! `fees`) have no counter ([`crate::tariff::Tariff::validate`] refuses a limit for them).
//! Counting never depends on a limit being set, so a limit set mid-day sees the whole day.

use crate::account::Account;
use crate::codes::Code;
use crate::ids::AccountId;
use crate::state::Ledger;

impl Ledger {
    /// What `account` has sent in the open business day.
    pub fn out_today(&self, account: &Account) -> u64 {
        if account.out_day_ms == self.day.from_ms {
            account.out_today
        } else {
            0
        }
    }

    /// What `account` may still send today (`None`: its kind has no daily limit). A limit
    /// lowered below what was already sent leaves no room.
    pub fn daily_room(&self, account: &Account) -> Option<u64> {
        let max = self.tariff.daily_out_max(account.kind)?;
        Some(max.saturating_sub(self.out_today(account)))
    }

    /// Refuses a debit of `total` (amount plus fee) beyond the payer's room today.
    pub(crate) fn daily_check(&self, from: &Account, total: u64) -> Result<(), Code> {
        match self.daily_room(from) {
            Some(room) if total > room => Err(Code::LimitExceeded),
            _ => Ok(()),
        }
    }

    /// Counts an accepted debit of `total` against the payer's day; returns the day counted
    /// (`None` for system accounts, which keep no counter).
    pub(crate) fn count_out(&mut self, id: &AccountId, total: u64) -> Option<u64> {
        if id.is_system() {
            return None;
        }
        let day = self.day.from_ms;
        let account = self.accounts.get_mut(id).expect("the payer was checked");
        if account.out_day_ms != day {
            account.out_day_ms = day;
            account.out_today = 0;
        }
        // Bounded: each count passed `daily_check` or is at most AMOUNT_MAX, and a day holds
        // far fewer than u64::MAX / AMOUNT_MAX transfers; saturating would hide a fault.
        account.out_today = account
            .out_today
            .checked_add(total)
            .expect("a day's debits fit in u64");
        Some(day)
    }

    /// Gives back a voided debit's count if the payer's counter still counts `day`.
    pub(crate) fn uncount_out(&mut self, id: &AccountId, total: u64, day: Option<u64>) {
        let Some(day) = day else { return };
        let account = self
            .accounts
            .get_mut(id)
            .expect("accounts are never deleted");
        if account.out_day_ms == day {
            account.out_today = account
                .out_today
                .checked_sub(total)
                .expect("a count is given back once, to the day that holds it");
        }
    }
}

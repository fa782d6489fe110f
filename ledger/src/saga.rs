//! Cross-shard transfers, as sagas.
//!
//! Every transfer id has a **home shard**, `shard_of(id)`, which keeps the id's one record: the
//! idempotency key and the answer. Money lives on the shards of the accounts it moves between
//! (system accounts `float` and `fees` have a slice on every shard, so an issue, a redeem or a
//! fee never leaves the customer's shard). When the home, the payer's and the payee's shard
//! are one shard, a transfer is one local command ([`crate::Command::Transfer`]). Otherwise
//! the home shard's leader coordinates a saga, each step a replicated, idempotent command:
//!
//! 1. home: [`crate::Command::SagaBegin`] records the request (or answers a retry, or refuses an
//!    id used by another body);
//! 2. payer and payee on one shard: that shard applies the transfer as a local command; else
//!    payer's shard: [`crate::Command::Hold`] checks the payer's side of the rules and holds
//!    `amount + fee` (in-flight money is visible as a hold);
//! 3. payee's shard: [`crate::Command::Credit`] checks the payee's side and credits the payee
//!    from that shard's float slice;
//! 4. payer's shard: [`crate::Command::PostHold`] turns the hold into a debit, crediting the
//!    float slice and the fees slice there — or, when the credit was refused,
//!    [`crate::Command::VoidHold`] releases it (**redress**);
//! 5. home: [`crate::Command::SagaFinish`] records the answer the client gets.
//!
//! Every shard's balances sum to 0 after every command, so the whole cluster's do too, at any
//! moment: no step creates money. A step that timed out is retried with the same id, which
//! answers as the first time. A coordinator that gives up on a credit (past the saga's
//! deadline) sends [`crate::Command::CancelCredit`], which fences a late credit, then voids the
//! hold; a hold that never arrived is fenced the same way by `VoidHold`. A coordinator voids a
//! hold only after the payee's leg is fenced or rejected: voiding first would let a second
//! coordinator, which saw the hold, credit the payee with nobody paying. The saga's state is in
//! the home shard's log, so a new leader finishes or redresses every saga the old one started.
//!
//! **Pending** (two-phase) sagas stop after the hold: `SagaFinish` records the `pending` answer
//! and the saga waits on its home shard until [`crate::Command::SagaDecide`] (post or void; the
//! first decision stays, and expiry — `ExpirePending` on the home shard — decides void). The
//! decided saga runs again: credit and post the hold, or void it; [`crate::Command::SagaClose`]
//! records where the money ended. No coordinator credits a payee unless the recorded decision
//! is post, so a void decision may release the hold at once.
//!
//! **Reversals** whose id, original and money are not on one shard are sagas homed at the
//! reversal's id ([`crate::Command::ReversalBegin`]): [`crate::Command::ClaimReversal`] on the
//! original's home (when the original is a saga) makes the reversal the only one, the money
//! moves back (a local `Reverse` where the original's money is on one shard, legs where it is
//! not, with the reversal's rules: no fee), and [`crate::Command::SettleReversal`] marks the
//! original reversed or releases the claim.

use serde::{Deserialize, Serialize};

use crate::account::{AccountStatus, Direction, Entry};
use crate::codes::Code;
use crate::ids::{AccountId, ShardId, TransferId};
use crate::limits::{AMOUNT_MAX, BALANCE_MAX, TEXT_BYTES_MAX};
use crate::state::{add, payee_allows, payer_allows, push_entry, shape_check, signed, sub, Ledger};
use crate::transfer::{
    At, ReversalRequest, TransferKind, TransferOutcome, TransferRequest, TransferStatus,
};
use crate::views::TransferView;

pub use crate::limits::SAGA_DEADLINE_MS;

/// A saga as its home shard keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saga {
    pub request: TransferRequest,
    pub payer_shard: ShardId,
    pub payee_shard: ShardId,
    pub begun_at_ms: u64,
    /// Past it, the coordinator stops pushing forward and redresses.
    pub deadline_ms: u64,
    /// `None` while running; then the answer every retry gets.
    pub answer: Option<TransferOutcome>,
    /// Where `SagaBegin` was applied in the home shard's log.
    pub log_index: u64,
    pub log_pos: u32,
    /// A pending transfer: when it voids itself unless posted first.
    pub expires_at_ms: Option<u64>,
    /// A pending transfer: post (`true`) or void (`false`); the first decision recorded stays.
    pub decision: Option<bool>,
    /// A decided pending transfer once its money moved (or was released): the record's final
    /// status, and the code when the payee's side refused the post.
    pub settled: Option<(TransferStatus, Option<Code>)>,
    /// A reversal: what it reverses (see [`Reverses`]).
    pub reverses: Option<Reverses>,
    /// This transfer as an original: the reversal that claimed it, and whether that reversal
    /// moved the money (`true`: the transfer reads `reversed`).
    pub reversal: Option<(TransferId, bool)>,
}

/// What a reversal saga reverses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reverses {
    pub request: ReversalRequest,
    /// The shard holding the original's authoritative record.
    pub record_shard: ShardId,
    /// The original is itself a saga on `record_shard`: claim it first (one reversal per
    /// original), settle the claim after. Otherwise the original is a local transfer on the
    /// shard holding the money, whose `Reverse` command claims and moves atomically.
    pub claim: bool,
}

impl Saga {
    /// Still to be driven: the transfer is not answered yet, or a pending transfer was decided
    /// and its money has not settled.
    pub fn is_running(&self) -> bool {
        self.answer.is_none() || (self.decision.is_some() && self.settled.is_none())
    }

    /// Answered pending and not decided yet: waits for post, void or expiry.
    pub fn is_waiting(&self) -> bool {
        matches!(
            &self.answer,
            Some(TransferOutcome::Accepted(a)) if a.status == TransferStatus::Pending
        ) && self.decision.is_none()
    }

    /// The record's status as clients see it.
    pub fn status(&self) -> (TransferStatus, Option<Code>) {
        match (&self.answer, self.settled) {
            (None, _) => (TransferStatus::Pending, None),
            (Some(_), Some(settled)) => settled,
            (Some(TransferOutcome::Accepted(accepted)), None) => {
                if self.reversal.as_ref().is_some_and(|(_, applied)| *applied) {
                    (TransferStatus::Reversed, None)
                } else {
                    (accepted.status, None)
                }
            }
            (
                Some(
                    TransferOutcome::Rejected { code, .. } | TransferOutcome::Refused { code, .. },
                ),
                None,
            ) => (TransferStatus::Rejected, Some(*code)),
        }
    }
}

/// What `SagaBegin` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SagaOutcome {
    /// The saga runs (begun now, or earlier and not finished): the caller drives it.
    Running(Saga),
    /// It finished earlier: the answer it recorded.
    Finished(TransferOutcome),
    /// Nothing recorded: the id names another body (`id_conflict`), or the request's shape is
    /// wrong, or `SagaFinish` named no saga.
    Refused(Code),
    /// A pending transfer's saga after `SagaDecide` or `SagaClose`.
    Decided(Saga),
}

/// Where a leg stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LegState {
    /// Payer side: `amount + fee` held.
    Held,
    /// Payer side: debited (the hold released into the payer's balance).
    Posted,
    /// Payer side: released without effect — or fenced before any hold arrived.
    Voided,
    /// Payee side: credited.
    Credited,
    /// Payee side: fenced before any credit arrived; a later credit is refused.
    Cancelled,
    /// The side's rules refused it; recorded so a retry gets the same code.
    Rejected(Code),
}

/// One side of a cross-shard transfer on one shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    /// `None` for a fence (`VoidHold` or `CancelCredit` before the hold or credit).
    pub request: Option<TransferRequest>,
    pub fee: u64,
    pub state: LegState,
    /// The account's balance right after this leg moved money (post or credit).
    pub balance_after: i64,
    pub at_ms: u64,
    /// Where the leg last moved money (or was recorded) in this shard's log.
    pub log_index: u64,
    pub log_pos: u32,
    /// Payer side: the day the hold counted in the payer's daily-limit counter (see
    /// [`crate::daily`]), and the payer's room left right after it.
    pub counted_day_ms: Option<u64>,
    pub daily_room: Option<u64>,
}

/// What a leg command answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LegOutcome {
    Held {
        fee: u64,
        /// The payer's balance (unchanged by a hold) and where the hold was applied.
        from_balance: i64,
        /// The payer's daily room right after the hold (see [`crate::daily`]).
        daily_room: Option<u64>,
        log_index: u64,
        log_pos: u32,
    },
    Posted {
        fee: u64,
        from_balance: i64,
        /// The payer's daily room right after the hold (see [`crate::daily`]).
        daily_room: Option<u64>,
        log_index: u64,
        log_pos: u32,
    },
    Voided,
    Credited {
        to_balance: i64,
        log_index: u64,
        log_pos: u32,
    },
    Cancelled,
    /// The side's business rules said no (recorded).
    Rejected(Code),
    /// Not applicable: unknown leg, wrong state, or the id names another body.
    Refused(Code),
}

impl Leg {
    /// The answer this leg gives now (retries of any leg command that already took effect).
    pub fn outcome(&self) -> LegOutcome {
        match self.state {
            LegState::Held => LegOutcome::Held {
                fee: self.fee,
                from_balance: self.balance_after,
                daily_room: self.daily_room,
                log_index: self.log_index,
                log_pos: self.log_pos,
            },
            LegState::Posted => LegOutcome::Posted {
                fee: self.fee,
                from_balance: self.balance_after,
                daily_room: self.daily_room,
                log_index: self.log_index,
                log_pos: self.log_pos,
            },
            LegState::Voided => LegOutcome::Voided,
            LegState::Credited => LegOutcome::Credited {
                to_balance: self.balance_after,
                log_index: self.log_index,
                log_pos: self.log_pos,
            },
            LegState::Cancelled => LegOutcome::Cancelled,
            LegState::Rejected(code) => LegOutcome::Rejected(code),
        }
    }
}

impl Ledger {
    pub fn saga(&self, id: &TransferId) -> Option<&Saga> {
        self.sagas.get(id).map(|saga| &**saga)
    }

    pub fn leg(&self, id: &TransferId) -> Option<&Leg> {
        self.legs.get(id).map(|leg| &**leg)
    }

    /// Running sagas, earliest deadline first (a new leader's coordinator drives them all).
    pub fn running_sagas(&self) -> impl Iterator<Item = &Saga> {
        self.saga_deadlines
            .iter()
            .filter_map(|(_, id)| self.sagas.get(id).map(|saga| &**saga))
    }

    /// The earliest deadline of a running saga.
    pub fn next_saga_deadline_ms(&self) -> Option<u64> {
        self.saga_deadlines.first().map(|(at_ms, _)| *at_ms)
    }

    pub(crate) fn saga_begin(
        &mut self,
        request: &TransferRequest,
        (payer_shard, payee_shard): (ShardId, ShardId),
        reverses: Option<&Reverses>,
        at: At,
    ) -> SagaOutcome {
        if let Some(saga) = self.sagas.get(&request.id) {
            if saga.request != *request || saga.reverses.as_ref() != reverses {
                return SagaOutcome::Refused(Code::IdConflict);
            }
            return match &saga.answer {
                Some(answer) => SagaOutcome::Finished(answer.clone()),
                None => SagaOutcome::Running(Saga::clone(saga)),
            };
        }
        if self.transfers.contains_key(&request.id) {
            // A local transfer owns the id: a saga never has the same body (routing is fixed).
            return SagaOutcome::Refused(Code::IdConflict);
        }
        if let Err(code) = saga_shape(request, reverses) {
            return SagaOutcome::Refused(code);
        }
        let deadline_ms = at.ms.saturating_add(SAGA_DEADLINE_MS);
        let expires_at_ms = request.pending.then(|| {
            let timeout_ms = request
                .timeout_s
                .checked_mul(1000)
                .expect("timeout bounded by TIMEOUT_S_MAX");
            at.ms.saturating_add(timeout_ms)
        });
        let saga = Saga {
            request: request.clone(),
            payer_shard,
            payee_shard,
            begun_at_ms: at.ms,
            deadline_ms,
            answer: None,
            log_index: at.log_index,
            log_pos: at.log_pos,
            expires_at_ms,
            decision: None,
            settled: None,
            reverses: reverses.cloned(),
            reversal: None,
        };
        self.saga_deadlines
            .insert((deadline_ms, request.id.clone()));
        self.sagas
            .insert(request.id.clone(), Box::new(saga.clone()));
        SagaOutcome::Running(saga)
    }

    /// Records the saga's answer; the first answer recorded stays. A pending answer starts the
    /// wait for post, void or expiry.
    pub(crate) fn saga_finish(&mut self, id: &TransferId, answer: &TransferOutcome) -> SagaOutcome {
        let Some(saga) = self.sagas.get_mut(id) else {
            return SagaOutcome::Refused(Code::TransferNotFound);
        };
        if let Some(existing) = &saga.answer {
            return SagaOutcome::Finished(existing.clone());
        }
        saga.answer = Some(answer.clone());
        let removed = self.saga_deadlines.remove(&(saga.deadline_ms, id.clone()));
        assert!(removed, "running saga {id} had no deadline entry");
        if saga.is_waiting() {
            let expires = saga.expires_at_ms.expect("a pending saga has a deadline");
            self.saga_expiries.insert((expires, id.clone()));
        }
        SagaOutcome::Finished(answer.clone())
    }

    /// Home shard: records a pending transfer's post or void (the first decision stays; a post
    /// at or past the deadline becomes a void: expiry wins). The saga runs again until its
    /// money settles.
    pub(crate) fn saga_decide(&mut self, id: &TransferId, post: bool, at: At) -> SagaOutcome {
        let Some(saga) = self.sagas.get_mut(id) else {
            return SagaOutcome::Refused(Code::TransferNotFound);
        };
        if saga.decision.is_some() {
            return SagaOutcome::Decided(Saga::clone(saga));
        }
        if !saga.is_waiting() {
            return SagaOutcome::Refused(Code::TransferNotPending);
        }
        let expires = saga.expires_at_ms.expect("a pending saga has a deadline");
        saga.decision = Some(post && at.ms < expires);
        saga.deadline_ms = at.ms.saturating_add(SAGA_DEADLINE_MS);
        let removed = self.saga_expiries.remove(&(expires, id.clone()));
        assert!(removed, "waiting saga {id} had no expiry entry");
        self.saga_deadlines.insert((saga.deadline_ms, id.clone()));
        SagaOutcome::Decided(Saga::clone(saga))
    }

    /// Home shard: records where a decided pending transfer's money ended; the first stays.
    pub(crate) fn saga_close(
        &mut self,
        id: &TransferId,
        status: TransferStatus,
        code: Option<Code>,
    ) -> SagaOutcome {
        let Some(saga) = self.sagas.get_mut(id) else {
            return SagaOutcome::Refused(Code::TransferNotFound);
        };
        if saga.decision.is_none() {
            return SagaOutcome::Refused(Code::TransferNotPending);
        }
        if !matches!(status, TransferStatus::Completed | TransferStatus::Voided) {
            return SagaOutcome::Refused(Code::InvalidRequest);
        }
        if saga.settled.is_none() {
            saga.settled = Some((status, code));
            let removed = self.saga_deadlines.remove(&(saga.deadline_ms, id.clone()));
            assert!(removed, "decided saga {id} had no deadline entry");
        }
        SagaOutcome::Decided(Saga::clone(saga))
    }

    /// Voids (decides) waiting pending sagas whose deadline is at or before `at`, at most
    /// `budget` of them; returns how many.
    pub(crate) fn expire_sagas(&mut self, at: At, budget: usize) -> usize {
        let due: Vec<TransferId> = self
            .saga_expiries
            .iter()
            .take_while(|(deadline, _)| *deadline <= at.ms)
            .take(budget)
            .map(|(_, id)| id.clone())
            .collect();
        for id in &due {
            let outcome = self.saga_decide(id, false, at);
            assert!(
                matches!(outcome, SagaOutcome::Decided(_)),
                "an expiry entry names a waiting saga"
            );
        }
        due.len()
    }

    /// The earliest expiry of a waiting pending saga.
    pub(crate) fn next_saga_expiry_ms(&self) -> Option<u64> {
        self.saga_expiries.first().map(|(at_ms, _)| *at_ms)
    }

    /// Home shard of an original that is a saga: claims it for reversal `by` (one reversal
    /// per original). Answers the original's record, or why it cannot be reversed.
    pub(crate) fn claim_reversal(
        &mut self,
        original: &TransferId,
        by: &TransferId,
    ) -> Result<TransferView, Code> {
        let saga = self.sagas.get_mut(original).ok_or(Code::TransferNotFound)?;
        match &saga.reversal {
            Some((claimed, _)) if claimed == by => return Ok(TransferView::of_saga(saga)),
            Some(_) => return Err(Code::AlreadyReversed),
            None => {}
        }
        let completed = saga.status() == (TransferStatus::Completed, None);
        if !completed || saga.request.kind == TransferKind::Reversal {
            return Err(Code::NotReversible);
        }
        saga.reversal = Some((by.clone(), false));
        Ok(TransferView::of_saga(saga))
    }

    /// Home shard of an original that is a saga: the claiming reversal `by` moved the money
    /// (`applied`: the original reads `reversed`) or did not (the claim is released).
    pub(crate) fn settle_reversal(
        &mut self,
        original: &TransferId,
        by: &TransferId,
        applied: bool,
    ) -> Result<TransferView, Code> {
        let saga = self.sagas.get_mut(original).ok_or(Code::TransferNotFound)?;
        match &saga.reversal {
            Some((claimed, done)) if claimed == by => {
                if !*done {
                    saga.reversal = applied.then(|| (by.clone(), true));
                }
            }
            // Released earlier (a retry after a rejected reversal), or another's claim.
            _ if !applied => {}
            _ => return Err(Code::AlreadyReversed),
        }
        Ok(TransferView::of_saga(saga))
    }

    /// An existing leg under this id answers for itself (a retry), or the id is taken.
    fn existing_leg(&self, request: &TransferRequest) -> Option<LegOutcome> {
        let leg = self.legs.get(&request.id)?;
        Some(match &leg.request {
            Some(first) if first != request => LegOutcome::Refused(Code::IdConflict),
            _ => leg.outcome(),
        })
    }

    /// Legs move money between customer-like accounts only: system accounts have a slice on
    /// every shard, so a transfer touching one never needs a saga.
    fn leg_shape(request: &TransferRequest) -> Result<(), Code> {
        if request.from.is_system() || request.to.is_system() {
            return Err(Code::InvalidRequest);
        }
        if request.kind == TransferKind::Reversal {
            return reversal_shape(request);
        }
        shape_check(request)
    }

    fn record_leg(&mut self, request: Option<&TransferRequest>, id: &TransferId, leg: Leg) {
        debug_assert!(request.is_none_or(|r| r.id == *id));
        self.legs.insert(id.clone(), Box::new(leg));
    }

    fn new_leg(request: Option<&TransferRequest>, fee: u64, state: LegState, at: At) -> Leg {
        Leg {
            request: request.cloned(),
            fee,
            state,
            balance_after: 0,
            at_ms: at.ms,
            log_index: at.log_index,
            log_pos: at.log_pos,
            counted_day_ms: None,
            daily_room: None,
        }
    }

    /// The payer's side of the rules (see `business_check`); the fee on success.
    fn payer_check(&self, request: &TransferRequest) -> Result<u64, Code> {
        let from = self
            .accounts
            .get(&request.from)
            .ok_or(Code::AccountNotFound)?;
        // A reversal undoes a mistake: no fee, no kind or tariff rule, and a frozen account
        // may still give back what it was paid by mistake (as the one-shard reversal).
        let reversal = request.kind == TransferKind::Reversal;
        match from.status {
            AccountStatus::Active => {}
            AccountStatus::Frozen if reversal => {}
            AccountStatus::Frozen => return Err(Code::AccountFrozen),
            AccountStatus::Closed => return Err(Code::AccountClosed),
        }
        if request.currency != from.currency {
            return Err(Code::CurrencyMismatch);
        }
        if !reversal && !payer_allows(request.kind, from) {
            return Err(Code::KindNotAllowed);
        }
        if !reversal && request.amount > self.tariff.amount_max(request.kind) {
            return Err(Code::LimitExceeded);
        }
        let fee = if reversal {
            0
        } else {
            self.tariff.fee(request.kind, request.amount)
        };
        let total = request.amount.checked_add(fee).ok_or(Code::LimitExceeded)?;
        if total > AMOUNT_MAX {
            return Err(Code::LimitExceeded);
        }
        if !reversal {
            self.daily_check(from, total)?;
        }
        if from.available() < signed(total) {
            return Err(Code::InsufficientFunds);
        }
        // The slices the post credits must stay bounded, counting what is promised to them.
        for (slice, amount) in [
            (AccountId::float(), request.amount),
            (AccountId::fees(), fee),
        ] {
            let account = self.accounts.get(&slice).expect("system slices exist");
            if add(add(account.balance, account.pending_in), signed(amount)) > BALANCE_MAX {
                return Err(Code::LimitExceeded);
            }
        }
        Ok(fee)
    }

    /// The payee's side of the rules.
    fn payee_check(&self, request: &TransferRequest) -> Result<(), Code> {
        let to = self
            .accounts
            .get(&request.to)
            .ok_or(Code::AccountNotFound)?;
        let reversal = request.kind == TransferKind::Reversal;
        match to.status {
            AccountStatus::Active => {}
            AccountStatus::Frozen if reversal => {}
            AccountStatus::Frozen => return Err(Code::AccountFrozen),
            AccountStatus::Closed => return Err(Code::AccountClosed),
        }
        if request.currency != to.currency {
            return Err(Code::CurrencyMismatch);
        }
        if !reversal && !payee_allows(request.kind, to) {
            return Err(Code::KindNotAllowed);
        }
        if add(add(to.balance, to.pending_in), signed(request.amount)) > BALANCE_MAX {
            return Err(Code::LimitExceeded);
        }
        let float = self
            .accounts
            .get(&AccountId::float())
            .expect("system slices exist");
        if sub(float.available(), signed(request.amount)) < -BALANCE_MAX {
            return Err(Code::LimitExceeded);
        }
        Ok(())
    }

    /// Payer's shard: checks the payer's side and holds `amount + fee`.
    pub(crate) fn leg_hold(&mut self, request: &TransferRequest, at: At) -> LegOutcome {
        if let Some(existing) = self.existing_leg(request) {
            return existing;
        }
        if let Err(code) = Self::leg_shape(request) {
            return LegOutcome::Refused(code);
        }
        let fee = match self.payer_check(request) {
            Ok(fee) => fee,
            Err(code) => {
                let leg = Self::new_leg(Some(request), 0, LegState::Rejected(code), at);
                self.record_leg(Some(request), &request.id, leg);
                return LegOutcome::Rejected(code);
            }
        };
        let total = request.amount.checked_add(fee).expect("checked");
        let counted = if request.kind == TransferKind::Reversal {
            None
        } else {
            self.count_out(&request.from, total)
        };
        let from = self
            .accounts
            .get_mut(&request.from)
            .expect("checked in payer_check");
        from.pending_out = add(from.pending_out, signed(total));
        assert!(from.available() >= 0, "hold overdrew {}", from.id);
        let from_balance = from.balance;
        self.promise(request.amount, fee, true);
        let mut leg = Self::new_leg(Some(request), fee, LegState::Held, at);
        leg.balance_after = from_balance;
        leg.counted_day_ms = counted;
        if counted.is_some() {
            let from = self.accounts.get(&request.from).expect("checked above");
            leg.daily_room = self.daily_room(from);
        }
        let outcome = leg.outcome();
        self.record_leg(Some(request), &request.id, leg);
        outcome
    }

    /// Counts (or releases) what a held leg will credit to this shard's float and fees slices.
    fn promise(&mut self, amount: u64, fee: u64, hold: bool) {
        for (slice, value) in [(AccountId::float(), amount), (AccountId::fees(), fee)] {
            let account = self.accounts.get_mut(&slice).expect("system slices exist");
            account.pending_in = if hold {
                add(account.pending_in, signed(value))
            } else {
                sub(account.pending_in, signed(value))
            };
        }
    }

    /// Releases a held leg's hold and promises (before posting or voiding it).
    fn release_leg(&mut self, request: &TransferRequest, fee: u64) {
        let total = signed(request.amount.checked_add(fee).expect("bounded"));
        let from = self
            .accounts
            .get_mut(&request.from)
            .expect("accounts are never deleted");
        from.pending_out = sub(from.pending_out, total);
        assert!(
            from.pending_out >= 0,
            "leg hold released twice on {}",
            from.id
        );
        self.promise(request.amount, fee, false);
    }

    /// Payer's shard: the held amount leaves the payer for this shard's float slice (the
    /// payee was credited from the float slice of its shard) and the fee goes to `fees`.
    pub(crate) fn leg_post(&mut self, id: &TransferId, at: At) -> LegOutcome {
        let Some(leg) = self.legs.get(id) else {
            return LegOutcome::Refused(Code::TransferNotFound);
        };
        match leg.state {
            LegState::Held => {}
            LegState::Posted => return leg.outcome(),
            _ => return LegOutcome::Refused(Code::TransferNotPending),
        }
        let request = leg.request.clone().expect("a held leg has its request");
        let fee = leg.fee;
        self.release_leg(&request, fee);
        // A cross-shard transfer counts in its payer's shard's business day.
        self.count_in_day(request.amount, fee);
        let total = signed(request.amount.checked_add(fee).expect("bounded"));
        let from = self
            .accounts
            .get_mut(&request.from)
            .expect("accounts are never deleted");
        from.balance = sub(from.balance, total);
        assert!(
            from.balance >= 0 && from.available() >= 0,
            "payer {} overdrawn",
            from.id
        );
        let from_balance = from.balance;
        push_entry(
            from,
            Entry {
                transfer_id: id.clone(),
                direction: Direction::Debit,
                amount: request.amount,
                fee,
                balance_after: from_balance,
                kind: request.kind,
                counterparty: request.to.clone(),
                at_ms: at.ms,
            },
        );
        for (slice, value) in [
            (AccountId::float(), request.amount),
            (AccountId::fees(), fee),
        ] {
            if value == 0 {
                continue;
            }
            let account = self.accounts.get_mut(&slice).expect("system slices exist");
            account.balance = add(account.balance, signed(value));
            let balance_after = account.balance;
            push_entry(
                account,
                Entry {
                    transfer_id: id.clone(),
                    direction: Direction::Credit,
                    amount: value,
                    fee: 0,
                    balance_after,
                    kind: request.kind,
                    counterparty: request.from.clone(),
                    at_ms: at.ms,
                },
            );
        }
        let leg = self.legs.get_mut(id).expect("found above");
        leg.state = LegState::Posted;
        leg.balance_after = from_balance;
        leg.at_ms = at.ms;
        leg.log_index = at.log_index;
        leg.log_pos = at.log_pos;
        leg.outcome()
    }

    /// Payer's shard: releases the hold (redress), or fences a hold that has not arrived.
    pub(crate) fn leg_void(&mut self, id: &TransferId, at: At) -> LegOutcome {
        let Some(leg) = self.legs.get(id) else {
            let fence = Self::new_leg(None, 0, LegState::Voided, at);
            self.record_leg(None, id, fence);
            return LegOutcome::Voided;
        };
        match leg.state {
            LegState::Held => {}
            LegState::Posted => return LegOutcome::Refused(Code::TransferNotPending),
            _ => return leg.outcome(),
        }
        let request = leg.request.clone().expect("a held leg has its request");
        let (fee, day) = (leg.fee, leg.counted_day_ms);
        self.release_leg(&request, fee);
        let total = request.amount.checked_add(fee).expect("bounded");
        self.uncount_out(&request.from, total, day);
        let leg = self.legs.get_mut(id).expect("found above");
        leg.state = LegState::Voided;
        LegOutcome::Voided
    }

    /// Payee's shard: checks the payee's side and credits it from this shard's float slice.
    pub(crate) fn leg_credit(&mut self, request: &TransferRequest, at: At) -> LegOutcome {
        if let Some(existing) = self.existing_leg(request) {
            return existing;
        }
        if let Err(code) = Self::leg_shape(request) {
            return LegOutcome::Refused(code);
        }
        if let Err(code) = self.payee_check(request) {
            let leg = Self::new_leg(Some(request), 0, LegState::Rejected(code), at);
            self.record_leg(Some(request), &request.id, leg);
            return LegOutcome::Rejected(code);
        }
        let amount = signed(request.amount);
        let float = self
            .accounts
            .get_mut(&AccountId::float())
            .expect("system slices exist");
        float.balance = sub(float.balance, amount);
        let float_balance = float.balance;
        push_entry(
            float,
            Entry {
                transfer_id: request.id.clone(),
                direction: Direction::Debit,
                amount: request.amount,
                fee: 0,
                balance_after: float_balance,
                kind: request.kind,
                counterparty: request.to.clone(),
                at_ms: at.ms,
            },
        );
        let to = self
            .accounts
            .get_mut(&request.to)
            .expect("checked in payee_check");
        to.balance = add(to.balance, amount);
        let to_balance = to.balance;
        push_entry(
            to,
            Entry {
                transfer_id: request.id.clone(),
                direction: Direction::Credit,
                amount: request.amount,
                fee: 0,
                balance_after: to_balance,
                kind: request.kind,
                counterparty: request.from.clone(),
                at_ms: at.ms,
            },
        );
        let mut leg = Self::new_leg(Some(request), 0, LegState::Credited, at);
        leg.balance_after = to_balance;
        self.record_leg(Some(request), &request.id, leg);
        LegOutcome::Credited {
            to_balance,
            log_index: at.log_index,
            log_pos: at.log_pos,
        }
    }

    /// Payee's shard: fences a credit that has not arrived; a credit that has answers for
    /// itself (the coordinator must then post, not void).
    pub(crate) fn leg_cancel(&mut self, id: &TransferId, at: At) -> LegOutcome {
        match self.legs.get(id) {
            Some(leg) => leg.outcome(),
            None => {
                let fence = Self::new_leg(None, 0, LegState::Cancelled, at);
                self.record_leg(None, id, fence);
                LegOutcome::Cancelled
            }
        }
    }

    /// What the held legs owe: `(held from payers, promised to the float and fees slices)`.
    pub(crate) fn leg_totals(&self) -> (i128, i128) {
        let mut held: i128 = 0;
        for leg in self.legs.values() {
            if leg.state == LegState::Held {
                let request = leg.request.as_ref().expect("a held leg has its request");
                let total = i128::from(request.amount)
                    .checked_add(i128::from(leg.fee))
                    .expect("bounded");
                held = held.checked_add(total).expect("bounded");
            }
        }
        (held, held)
    }
}

/// A saga's request shape: a client's transfer, or the transfer a reversal makes.
fn saga_shape(request: &TransferRequest, reverses: Option<&Reverses>) -> Result<(), Code> {
    match reverses {
        None => shape_check(request),
        Some(reverses) if reverses.request.id == request.id => {
            if reverses.request.reason.len() > TEXT_BYTES_MAX {
                return Err(Code::InvalidRequest);
            }
            reversal_shape(request)
        }
        Some(_) => Err(Code::InvalidRequest),
    }
}

/// The transfer a reversal makes: kind `reversal`, never pending, an amount in range.
fn reversal_shape(request: &TransferRequest) -> Result<(), Code> {
    if request.from == request.to {
        return Err(Code::SameAccount);
    }
    let amount_ok = request.amount > 0 && request.amount <= AMOUNT_MAX;
    if request.kind != TransferKind::Reversal || request.pending || !amount_ok {
        return Err(Code::InvalidRequest);
    }
    Ok(())
}

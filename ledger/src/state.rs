//! The ledger state and its one deterministic `apply`.
//!
//! **Invariant:** the sum of all balances is 0 after every command; no account but `float` has a
//! negative balance or available amount. Both are asserted (in release too): a broken money
//! invariant stops the node instead of spreading.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::account::{Account, AccountKind, AccountStatus, Direction, Entry, NewAccount};
use crate::codes::Code;
use crate::command::{Command, Outcome};
use crate::day::{Day, DayClose, Schedule};
use crate::ids::{AccountId, Currency, TransferId};
use crate::limits::{
    AMOUNT_MAX, BALANCE_MAX, BATCH_MAX, EXPIRE_BATCH_MAX, STATEMENT_KEEP_MAX, TEXT_BYTES_MAX,
};
use crate::limits::{TIMEOUT_S_MAX, TIMEOUT_S_MIN};
use crate::saga::{Leg, Saga};
use crate::tariff::Tariff;
use crate::transfer::{
    Accepted, At, Origin, ReversalRequest, Transfer, TransferKind, TransferOutcome,
};
use crate::transfer::{TransferRequest, TransferStatus};
use crate::views::{AccountView, EntryView, Summary, TransferView};

/// Version of the snapshot encoding of [`Ledger`]; bump on any change of its fields.
pub const LEDGER_FORMAT_VERSION: u32 = 5;

/// The records of transfers, sagas and legs are boxed in their maps: a B-tree leaf then holds
/// eleven keys and pointers instead of eleven 176–376-byte records, so an insert at a scattered
/// key shifts bytes, not records, and leaves left partly empty waste pointers, not records
/// (`tests/transfer_memory.rs`: 975 → 818 resident bytes per completed transfer). serde encodes
/// a `Box<T>` as its `T`: the snapshot encoding is the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub(crate) currency: Currency,
    #[serde(deserialize_with = "dense_map")]
    pub(crate) accounts: BTreeMap<AccountId, Account>,
    #[serde(deserialize_with = "dense_map")]
    pub(crate) transfers: BTreeMap<TransferId, Box<Transfer>>,
    /// Pending transfers by deadline.
    pub(crate) expiries: BTreeSet<(u64, TransferId)>,
    pub(crate) tariff: Tariff,
    /// Cross-shard transfers whose home is this shard (see [`crate::saga`]).
    #[serde(deserialize_with = "dense_map")]
    pub(crate) sagas: BTreeMap<TransferId, Box<Saga>>,
    /// Running sagas by deadline.
    pub(crate) saga_deadlines: BTreeSet<(u64, TransferId)>,
    /// Pending sagas waiting for post or void, by expiry.
    pub(crate) saga_expiries: BTreeSet<(u64, TransferId)>,
    /// This shard's legs of cross-shard transfers.
    #[serde(deserialize_with = "dense_map")]
    pub(crate) legs: BTreeMap<TransferId, Box<Leg>>,
    /// When business days end (see [`crate::day`]).
    pub(crate) schedule: Schedule,
    /// The open business day's totals.
    pub(crate) day: Day,
    /// Closed business days, oldest first.
    pub(crate) closes: VecDeque<DayClose>,
}

/// Reads a map of a snapshot into a `BTreeMap` built in bulk from its sorted pairs, so every
/// node is full: inserted one by one in key order (serde's way), each node would be left
/// about half full, and a large ledger would take nearly twice the memory after a restart.
fn dense_map<'de, D, K, V>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    K: Deserialize<'de> + Ord,
    V: Deserialize<'de>,
{
    struct Pairs<K, V>(std::marker::PhantomData<(K, V)>);
    impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> serde::de::Visitor<'de> for Pairs<K, V> {
        type Value = BTreeMap<K, V>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a map")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            // The length prefix is untrusted: reserve at most a bounded number up front.
            let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(pair) = map.next_entry()? {
                pairs.push(pair);
            }
            Ok(pairs.into_iter().collect())
        }
    }
    deserializer.deserialize_map(Pairs(std::marker::PhantomData))
}

pub(crate) fn add(a: i64, b: i64) -> i64 {
    a.checked_add(b)
        .expect("operands are bounded by BALANCE_MAX")
}

pub(crate) fn sub(a: i64, b: i64) -> i64 {
    a.checked_sub(b)
        .expect("operands are bounded by BALANCE_MAX")
}

pub(crate) fn signed(amount: u64) -> i64 {
    i64::try_from(amount).expect("amounts are bounded by AMOUNT_MAX")
}

fn system_account(id: AccountId, name: &str, currency: Currency) -> Account {
    Account {
        id,
        kind: AccountKind::System,
        name: name.into(),
        currency,
        status: AccountStatus::Active,
        balance: 0,
        pending_out: 0,
        pending_in: 0,
        entries: Default::default(),
        created_at_ms: 0,
        out_day_ms: 0,
        out_today: 0,
    }
}

/// Which account kinds a transfer kind may connect.
/// Which account kinds a transfer kind may move money between. The rule is one condition on
/// the payer and one on the payee, so a cross-shard transfer checks each side on its shard.
fn kind_allows(kind: TransferKind, from: &Account, to: &Account) -> bool {
    payer_allows(kind, from) && payee_allows(kind, to)
}

pub(crate) fn payer_allows(kind: TransferKind, from: &Account) -> bool {
    use AccountKind::{Agent, Customer};
    match kind {
        TransferKind::P2p
        | TransferKind::MerchantPayment
        | TransferKind::BillPayment
        | TransferKind::CashOut => from.kind == Customer,
        TransferKind::CashIn => from.kind == Agent,
        TransferKind::Issue => from.id.is_float(),
        // Anyone but the float may hand e-money back to it, `fees` included (revenue recognised).
        TransferKind::Redeem => !from.id.is_float(),
        TransferKind::Reversal => false,
    }
}

pub(crate) fn payee_allows(kind: TransferKind, to: &Account) -> bool {
    use AccountKind::{Agent, Customer, Merchant};
    match kind {
        TransferKind::P2p | TransferKind::CashIn => to.kind == Customer,
        TransferKind::MerchantPayment | TransferKind::BillPayment => to.kind == Merchant,
        TransferKind::CashOut => to.kind == Agent,
        TransferKind::Issue => to.kind != AccountKind::System,
        TransferKind::Redeem => to.id.is_float(),
        TransferKind::Reversal => false,
    }
}

impl Ledger {
    /// A fresh ledger holding only the system accounts `float` and `fees`.
    pub fn new(currency: Currency) -> Ledger {
        let mut accounts = BTreeMap::new();
        accounts.insert(
            AccountId::float(),
            system_account(AccountId::float(), "e-money float", currency),
        );
        accounts.insert(
            AccountId::fees(),
            system_account(AccountId::fees(), "collected fees", currency),
        );
        Ledger {
            currency,
            accounts,
            transfers: BTreeMap::new(),
            expiries: BTreeSet::new(),
            tariff: Tariff::default(),
            sagas: BTreeMap::new(),
            saga_deadlines: BTreeSet::new(),
            saga_expiries: BTreeSet::new(),
            schedule: Schedule::default(),
            day: Day::default(),
            closes: VecDeque::new(),
            legs: BTreeMap::new(),
        }
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    pub fn account(&self, id: &AccountId) -> Option<&Account> {
        self.accounts.get(id)
    }

    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values()
    }

    /// Accounts in id order, strictly after `after` when given.
    pub fn accounts_after(&self, after: Option<&AccountId>) -> impl Iterator<Item = &Account> {
        let start = match after {
            Some(id) => std::ops::Bound::Excluded(id.clone()),
            None => std::ops::Bound::Unbounded,
        };
        self.accounts
            .range((start, std::ops::Bound::Unbounded))
            .map(|(_, account)| account)
    }

    pub fn transfer(&self, id: &TransferId) -> Option<&Transfer> {
        self.transfers.get(id).map(|transfer| &**transfer)
    }

    pub fn tariff(&self) -> &Tariff {
        &self.tariff
    }

    /// Newest first, at most `limit` entries.
    pub fn statement(&self, id: &AccountId, limit: usize) -> Option<Vec<EntryView>> {
        let account = self.accounts.get(id)?;
        Some(
            account
                .entries
                .iter()
                .rev()
                .take(limit)
                .map(EntryView::of)
                .collect(),
        )
    }

    /// The earliest deadline of a pending transfer, for the expiry timer.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        let local = self.expiries.first().map(|(at_ms, _)| *at_ms);
        match (local, self.next_saga_expiry_ms()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A fingerprint of the whole state (accounts, holds, statuses, every transfer's status and
    /// the tariff), equal on replicas that applied the same log. FNV-1a, stable across builds;
    /// O(state), so computed on demand only.
    pub fn digest(&self) -> u64 {
        let mut hash = Fnv::default();
        for account in self.accounts.values() {
            hash.bytes(account.id.as_str().as_bytes());
            hash.bytes(&account.balance.to_le_bytes());
            hash.bytes(&account.pending_out.to_le_bytes());
            hash.bytes(&account.pending_in.to_le_bytes());
            hash.bytes(account.status_name().as_bytes());
        }
        for transfer in self.transfers.values() {
            hash.bytes(transfer.id.as_str().as_bytes());
            hash.bytes(transfer.status.as_str().as_bytes());
            hash.bytes(&transfer.amount.to_le_bytes());
        }
        for (id, saga) in &self.sagas {
            hash.bytes(id.as_str().as_bytes());
            hash.bytes(&[u8::from(saga.answer.is_some())]);
            hash.bytes(
                format!("{:?}{:?}{:?}", saga.decision, saga.settled, saga.reversal).as_bytes(),
            );
        }
        for (id, leg) in &self.legs {
            hash.bytes(id.as_str().as_bytes());
            hash.bytes(format!("{:?}", leg.state).as_bytes());
        }
        hash.bytes(format!("{:?}{:?}{}", self.schedule, self.day, self.closes.len()).as_bytes());
        for (kind, bands) in &self.tariff.fees {
            hash.bytes(kind.as_str().as_bytes());
            for band in bands {
                hash.bytes(&band.min.to_le_bytes());
                hash.bytes(&band.max.to_le_bytes());
                hash.bytes(&band.fee.to_le_bytes());
            }
        }
        hash.finish()
    }

    pub fn summary(&self) -> Summary {
        let mut balance_sum: i128 = 0;
        for account in self.accounts.values() {
            balance_sum = balance_sum
                .checked_add(i128::from(account.balance))
                .expect("i128 holds any sum of i64");
        }
        let balance_of = |id: AccountId| self.accounts.get(&id).map_or(0, |a| a.balance);
        Summary {
            accounts: self.accounts.len() as u64,
            transfers: self.transfers.len() as u64,
            pending: self.expiries.len().saturating_add(self.saga_expiries.len()) as u64,
            balance_sum: i64::try_from(balance_sum).expect("the sum is asserted to be 0"),
            float_balance: balance_of(AccountId::float()),
            fees_balance: balance_of(AccountId::fees()),
            sagas_running: self.saga_deadlines.len() as u64,
            legs_held: self
                .legs
                .values()
                .filter(|leg| leg.state == crate::saga::LegState::Held)
                .count() as u64,
        }
    }

    /// Full scan of the money invariants. Panics when one is broken.
    pub fn check_invariants(&self) {
        let mut sum: i128 = 0;
        let mut pending_out: i128 = 0;
        let mut pending_in: i128 = 0;
        for account in self.accounts.values() {
            sum = sum
                .checked_add(i128::from(account.balance))
                .expect("i128 holds any sum of i64");
            pending_out = pending_out
                .checked_add(i128::from(account.pending_out))
                .expect("bounded");
            pending_in = pending_in
                .checked_add(i128::from(account.pending_in))
                .expect("bounded");
            if !account.id.is_float() {
                assert!(account.balance >= 0, "account {} below zero", account.id);
                assert!(
                    account.available() >= 0,
                    "account {} available below zero",
                    account.id
                );
            }
            assert!(
                account.pending_out >= 0 && account.pending_in >= 0,
                "negative hold on {}",
                account.id
            );
            let bounded = (-BALANCE_MAX..=BALANCE_MAX).contains(&account.balance);
            assert!(bounded, "account {} beyond BALANCE_MAX", account.id);
        }
        assert_eq!(sum, 0, "money created or destroyed: balances sum to {sum}");
        let mut held: i128 = 0;
        let mut promised: i128 = 0;
        for (_, id) in &self.expiries {
            let transfer = self
                .transfers
                .get(id)
                .expect("every expiry names a transfer");
            assert_eq!(
                transfer.status,
                TransferStatus::Pending,
                "expiry for non-pending {id}"
            );
            let total = i128::from(transfer.amount)
                .checked_add(i128::from(transfer.fee))
                .expect("bounded");
            held = held.checked_add(total).expect("bounded");
            promised = promised
                .checked_add(i128::from(transfer.amount))
                .expect("bounded");
        }
        let (leg_held, leg_promised) = self.leg_totals();
        let held = held.checked_add(leg_held).expect("bounded");
        let promised = promised.checked_add(leg_promised).expect("bounded");
        assert_eq!(held, pending_out, "holds do not match pending transfers");
        for (deadline, id) in &self.saga_deadlines {
            let saga = self
                .sagas
                .get(id)
                .expect("every saga deadline names a saga");
            assert!(
                saga.is_running() && saga.deadline_ms == *deadline,
                "deadline entry for finished saga {id}"
            );
        }
        let running = self.sagas.values().filter(|s| s.is_running()).count();
        assert_eq!(
            running,
            self.saga_deadlines.len(),
            "running sagas without deadline"
        );
        for (expiry, id) in &self.saga_expiries {
            let saga = self.sagas.get(id).expect("every saga expiry names a saga");
            assert!(
                saga.is_waiting() && saga.expires_at_ms == Some(*expiry),
                "expiry entry for saga {id}, which does not wait"
            );
        }
        let waiting = self.sagas.values().filter(|s| s.is_waiting()).count();
        assert_eq!(
            waiting,
            self.saga_expiries.len(),
            "waiting sagas without expiry"
        );
        assert_eq!(
            promised, pending_in,
            "pending credits do not match pending transfers"
        );
    }

    /// [`Ledger::apply_at`] at time `at_ms`, as if at the head of log entry 0 (tests, tools).
    pub fn apply(&mut self, command: &Command, at_ms: u64) -> Outcome {
        self.apply_at(command, At::ms(at_ms))
    }

    /// Applies one command at `at` (leader-assigned time and log entry). Deterministic: the same state and
    /// command give the same outcome and the same next state on every replica.
    pub fn apply_at(&mut self, command: &Command, at: At) -> Outcome {
        // A command stamped at or past the cut-off first closes the business day.
        // (A batch rolls at its first item: it is exactly its items applied one by one.)
        if !matches!(command, Command::Batch(_)) {
            self.roll_day(at);
        }
        match command {
            Command::CreateAccount(new) => Outcome::Account(self.create_account(new, at)),
            Command::Transfer(request) => Outcome::Transfer(self.transfer_once(request, at)),
            Command::Batch(requests) => {
                if requests.len() > BATCH_MAX {
                    return Outcome::Batch(Vec::new());
                }
                let results = requests
                    .iter()
                    .enumerate()
                    .map(|(pos, request)| {
                        let log_pos = u32::try_from(pos).expect("bounded by BATCH_MAX");
                        let at = At { log_pos, ..at };
                        self.roll_day(at);
                        self.transfer_once(request, at)
                    })
                    .collect();
                Outcome::Batch(results)
            }
            Command::Post(id) => Outcome::Record(self.post(id, at)),
            Command::Void(id) => Outcome::Record(self.void(id)),
            Command::Reverse(request) => Outcome::Transfer(self.reverse(request, at)),
            Command::ExpirePending => Outcome::Expired {
                voided: self.expire(at),
            },
            Command::SetSchedule(schedule) => Outcome::Status(self.set_schedule(*schedule, at)),
            // The day rolled above, if its cut-off had come.
            Command::CloseDay => Outcome::Status(Ok(())),
            Command::SetTariff(tariff) => {
                if tariff.validate().is_err() {
                    return Outcome::Status(Err(Code::InvalidRequest));
                }
                self.tariff = tariff.clone();
                Outcome::Status(Ok(()))
            }
            Command::SetAccountStatus { id, status } => {
                Outcome::Status(self.set_status(id, *status))
            }
            Command::SagaBegin {
                request,
                payer_shard,
                payee_shard,
            } => Outcome::Saga(self.saga_begin(request, (*payer_shard, *payee_shard), None, at)),
            Command::ReversalBegin {
                request,
                payer_shard,
                payee_shard,
                reverses,
            } => Outcome::Saga(self.saga_begin(
                request,
                (*payer_shard, *payee_shard),
                Some(reverses),
                at,
            )),
            Command::SagaDecide { id, post } => Outcome::Saga(self.saga_decide(id, *post, at)),
            Command::SagaClose { id, status, code } => {
                Outcome::Saga(self.saga_close(id, *status, *code))
            }
            Command::ClaimReversal { original, by } => {
                Outcome::Record(self.claim_reversal(original, by))
            }
            Command::SettleReversal {
                original,
                by,
                applied,
            } => Outcome::Record(self.settle_reversal(original, by, *applied)),
            Command::SagaFinish { id, answer } => Outcome::Saga(self.saga_finish(id, answer)),
            Command::Hold(request) => Outcome::Leg(self.leg_hold(request, at)),
            Command::PostHold(id) => Outcome::Leg(self.leg_post(id, at)),
            Command::VoidHold(id) => Outcome::Leg(self.leg_void(id, at)),
            Command::Credit(request) => Outcome::Leg(self.leg_credit(request, at)),
            Command::CancelCredit(id) => Outcome::Leg(self.leg_cancel(id, at)),
            Command::Many(commands) => {
                let nested = commands
                    .iter()
                    .any(|c| matches!(c, Command::Batch(_) | Command::Many(_)));
                if commands.len() > BATCH_MAX || nested {
                    return Outcome::Many(Vec::new());
                }
                let outcomes = commands
                    .iter()
                    .enumerate()
                    .map(|(pos, command)| {
                        let log_pos = u32::try_from(pos).expect("bounded by BATCH_MAX");
                        self.apply_at(command, At { log_pos, ..at })
                    })
                    .collect();
                Outcome::Many(outcomes)
            }
        }
    }

    fn create_account(&mut self, new: &NewAccount, at: At) -> Result<AccountView, Code> {
        if new.kind == AccountKind::System || new.name.len() > TEXT_BYTES_MAX {
            return Err(Code::InvalidRequest);
        }
        if self.accounts.contains_key(&new.id) || new.id.is_system() {
            return Err(Code::AccountExists);
        }
        let account = Account {
            id: new.id.clone(),
            kind: new.kind,
            name: new.name.as_str().into(),
            currency: new.currency,
            status: AccountStatus::Active,
            balance: 0,
            pending_out: 0,
            pending_in: 0,
            entries: Default::default(),
            created_at_ms: at.ms,
            out_day_ms: 0,
            out_today: 0,
        };
        let view = AccountView::of(&account);
        self.accounts.insert(new.id.clone(), account);
        Ok(view)
    }

    fn set_status(&mut self, id: &AccountId, status: AccountStatus) -> Result<(), Code> {
        if id.is_system() {
            return Err(Code::KindNotAllowed);
        }
        let account = self.accounts.get_mut(id).ok_or(Code::AccountNotFound)?;
        account.status = status;
        Ok(())
    }

    /// Idempotent by id: a retry with an equal request gets the first answer back.
    fn transfer_once(&mut self, request: &TransferRequest, at: At) -> TransferOutcome {
        if let Some(existing) = self.transfers.get(&request.id) {
            if existing.origin == Origin::Request(request.clone()) {
                return existing.answer.clone();
            }
            return TransferOutcome::Refused {
                id: request.id.clone(),
                code: Code::IdConflict,
            };
        }
        if self.sagas.contains_key(&request.id) {
            // A saga owns the id: a local transfer never has the same body (routing is fixed).
            return TransferOutcome::Refused {
                id: request.id.clone(),
                code: Code::IdConflict,
            };
        }
        if let Err(code) = shape_check(request) {
            return TransferOutcome::Refused {
                id: request.id.clone(),
                code,
            };
        }
        let fee = match self.business_check(request) {
            Ok(fee) => fee,
            Err(code) => {
                return self.record_rejection(
                    Origin::Request(request.clone()),
                    request.kind,
                    (&request.from, &request.to),
                    request.amount,
                    code,
                    at,
                );
            }
        };
        let total = request
            .amount
            .checked_add(fee)
            .expect("checked in business_check");
        let counted = self.count_out(&request.from, total);
        let answer = if request.pending {
            self.hold(request, fee, at)
        } else {
            self.complete(request, fee, at)
        };
        let transfer = self.transfers.get_mut(&request.id).expect("just recorded");
        transfer.counted_day_ms = counted;
        answer
    }

    /// The business rules; returns the fee on success.
    fn business_check(&self, request: &TransferRequest) -> Result<u64, Code> {
        let from = self
            .accounts
            .get(&request.from)
            .ok_or(Code::AccountNotFound)?;
        let to = self
            .accounts
            .get(&request.to)
            .ok_or(Code::AccountNotFound)?;
        for account in [from, to] {
            match account.status {
                AccountStatus::Active => {}
                AccountStatus::Frozen => return Err(Code::AccountFrozen),
                AccountStatus::Closed => return Err(Code::AccountClosed),
            }
        }
        if request.currency != from.currency || request.currency != to.currency {
            return Err(Code::CurrencyMismatch);
        }
        if !kind_allows(request.kind, from, to) {
            return Err(Code::KindNotAllowed);
        }
        if request.amount > self.tariff.amount_max(request.kind) {
            return Err(Code::LimitExceeded);
        }
        let fee = self.tariff.fee(request.kind, request.amount);
        let total = request.amount.checked_add(fee).ok_or(Code::LimitExceeded)?;
        if total > AMOUNT_MAX {
            return Err(Code::LimitExceeded);
        }
        self.daily_check(from, total)?;
        if from.id.is_float() {
            if sub(from.available(), signed(total)) < -BALANCE_MAX {
                return Err(Code::LimitExceeded);
            }
        } else if from.available() < signed(total) {
            return Err(Code::InsufficientFunds);
        }
        let to_after = add(add(to.balance, to.pending_in), signed(request.amount));
        if to_after > BALANCE_MAX {
            return Err(Code::LimitExceeded);
        }
        let fees = self
            .accounts
            .get(&AccountId::fees())
            .expect("fees exists from the first start");
        if add(add(fees.balance, fees.pending_in), signed(fee)) > BALANCE_MAX {
            return Err(Code::LimitExceeded);
        }
        Ok(fee)
    }

    fn record_rejection(
        &mut self,
        origin: Origin,
        kind: TransferKind,
        (from, to): (&AccountId, &AccountId),
        amount: u64,
        code: Code,
        at: At,
    ) -> TransferOutcome {
        let id = match &origin {
            Origin::Request(request) => request.id.clone(),
            Origin::Reversal(request) => request.id.clone(),
        };
        let answer = TransferOutcome::Rejected {
            id: id.clone(),
            code,
            log_index: at.log_index,
            log_pos: at.log_pos,
        };
        let currency = match &origin {
            Origin::Request(request) => request.currency,
            Origin::Reversal(_) => self
                .accounts
                .get(from)
                .map_or(self.currency, |a| a.currency),
        };
        let transfer = Transfer {
            id: id.clone(),
            kind,
            from: from.clone(),
            to: to.clone(),
            amount,
            fee: 0,
            currency,
            status: TransferStatus::Rejected,
            code: Some(code),
            created_at_ms: at.ms,
            expires_at_ms: None,
            reversed_by: None,
            reverses: None,
            log_index: at.log_index,
            log_pos: at.log_pos,
            counted_day_ms: None,
            origin,
            answer: answer.clone(),
        };
        self.transfers.insert(id, Box::new(transfer));
        answer
    }

    fn complete(&mut self, request: &TransferRequest, fee: u64, at: At) -> TransferOutcome {
        let moved = self.move_money(
            &request.id,
            request.kind,
            (&request.from, &request.to),
            (request.amount, fee),
            at,
        );
        let answer = TransferOutcome::Accepted(Accepted {
            id: request.id.clone(),
            status: TransferStatus::Completed,
            amount: request.amount,
            fee,
            from_balance: moved.0,
            to_balance: moved.1,
            daily_room: self.daily_room(self.accounts.get(&request.from).expect("payer exists")),
            log_index: at.log_index,
            log_pos: at.log_pos,
        });
        self.insert_transfer(
            Origin::Request(request.clone()),
            request,
            fee,
            TransferStatus::Completed,
            at,
            answer.clone(),
        );
        answer
    }

    fn hold(&mut self, request: &TransferRequest, fee: u64, at: At) -> TransferOutcome {
        let total = signed(
            request
                .amount
                .checked_add(fee)
                .expect("checked in business_check"),
        );
        let from = self
            .accounts
            .get_mut(&request.from)
            .expect("checked in business_check");
        from.pending_out = add(from.pending_out, total);
        let from_balance = from.balance;
        if !from.id.is_float() {
            assert!(from.available() >= 0, "hold overdrew {}", from.id);
        }
        let to = self
            .accounts
            .get_mut(&request.to)
            .expect("checked in business_check");
        to.pending_in = add(to.pending_in, signed(request.amount));
        let to_balance = to.balance;
        let answer = TransferOutcome::Accepted(Accepted {
            id: request.id.clone(),
            status: TransferStatus::Pending,
            amount: request.amount,
            fee,
            from_balance,
            to_balance,
            daily_room: self.daily_room(self.accounts.get(&request.from).expect("payer exists")),
            log_index: at.log_index,
            log_pos: at.log_pos,
        });
        self.insert_transfer(
            Origin::Request(request.clone()),
            request,
            fee,
            TransferStatus::Pending,
            at,
            answer.clone(),
        );
        answer
    }

    fn insert_transfer(
        &mut self,
        origin: Origin,
        request: &TransferRequest,
        fee: u64,
        status: TransferStatus,
        at: At,
        answer: TransferOutcome,
    ) {
        let expires_at_ms = if status == TransferStatus::Pending {
            let timeout_ms = request
                .timeout_s
                .checked_mul(1000)
                .expect("timeout bounded by TIMEOUT_S_MAX");
            let deadline = at.ms.saturating_add(timeout_ms);
            self.expiries.insert((deadline, request.id.clone()));
            Some(deadline)
        } else {
            None
        };
        let transfer = Transfer {
            id: request.id.clone(),
            kind: request.kind,
            from: request.from.clone(),
            to: request.to.clone(),
            amount: request.amount,
            fee,
            currency: request.currency,
            status,
            code: None,
            created_at_ms: at.ms,
            expires_at_ms,
            reversed_by: None,
            reverses: None,
            log_index: at.log_index,
            log_pos: at.log_pos,
            counted_day_ms: None,
            origin,
            answer,
        };
        self.transfers
            .insert(request.id.clone(), Box::new(transfer));
    }

    /// Posts `amount + fee` out of `from`, `amount` into `to` and `fee` into `fees`, writes the
    /// statement lines, and returns the balances of `from` and `to` afterwards.
    fn move_money(
        &mut self,
        id: &TransferId,
        kind: TransferKind,
        (from_id, to_id): (&AccountId, &AccountId),
        (amount, fee): (u64, u64),
        at: At,
    ) -> (i64, i64) {
        assert_ne!(
            from_id, to_id,
            "a transfer moves money between two accounts"
        );
        self.count_in_day(amount, fee);
        let total = signed(amount.checked_add(fee).expect("bounded by AMOUNT_MAX"));
        let debited = total;
        let credited = add(signed(amount), signed(fee));
        assert_eq!(debited, credited, "debits equal credits");

        let from = self.accounts.get_mut(from_id).expect("payer exists");
        from.balance = sub(from.balance, total);
        if !from.id.is_float() {
            assert!(
                from.balance >= 0 && from.available() >= 0,
                "payer {} overdrawn",
                from.id
            );
        }
        let from_balance = from.balance;
        push_entry(
            from,
            Entry {
                transfer_id: id.clone(),
                direction: Direction::Debit,
                amount,
                fee,
                balance_after: from_balance,
                kind,
                counterparty: to_id.clone(),
                at_ms: at.ms,
            },
        );

        let to = self.accounts.get_mut(to_id).expect("payee exists");
        to.balance = add(to.balance, signed(amount));
        let to_balance = to.balance;
        push_entry(
            to,
            Entry {
                transfer_id: id.clone(),
                direction: Direction::Credit,
                amount,
                fee: 0,
                balance_after: to_balance,
                kind,
                counterparty: from_id.clone(),
                at_ms: at.ms,
            },
        );

        if fee > 0 {
            let fees = self
                .accounts
                .get_mut(&AccountId::fees())
                .expect("fees exists from the first start");
            fees.balance = add(fees.balance, signed(fee));
            let fees_balance = fees.balance;
            push_entry(
                fees,
                Entry {
                    transfer_id: id.clone(),
                    direction: Direction::Credit,
                    amount: fee,
                    fee: 0,
                    balance_after: fees_balance,
                    kind,
                    counterparty: from_id.clone(),
                    at_ms: at.ms,
                },
            );
        }
        let from_balance = self.accounts.get(from_id).map_or(0, |a| a.balance);
        let to_balance = self.accounts.get(to_id).map_or(0, |a| a.balance);
        (from_balance, to_balance)
    }

    /// Releases the holds of a pending transfer (before posting or voiding it).
    fn release(&mut self, id: &TransferId) {
        let transfer = self.transfers.get(id).expect("caller found it");
        assert_eq!(transfer.status, TransferStatus::Pending);
        let total = signed(transfer.amount.checked_add(transfer.fee).expect("bounded"));
        let amount = signed(transfer.amount);
        let deadline = transfer
            .expires_at_ms
            .expect("pending transfers have a deadline");
        let (from_id, to_id) = (transfer.from.clone(), transfer.to.clone());
        let removed = self.expiries.remove(&(deadline, id.clone()));
        assert!(removed, "pending transfer {id} had no expiry entry");
        let from = self.accounts.get_mut(&from_id).expect("payer exists");
        from.pending_out = sub(from.pending_out, total);
        assert!(from.pending_out >= 0, "hold released twice on {from_id}");
        let to = self.accounts.get_mut(&to_id).expect("payee exists");
        to.pending_in = sub(to.pending_in, amount);
        assert!(
            to.pending_in >= 0,
            "pending credit released twice on {to_id}"
        );
    }

    fn post(&mut self, id: &TransferId, at: At) -> Result<TransferView, Code> {
        let transfer = self.transfers.get(id).ok_or(Code::TransferNotFound)?;
        match transfer.status {
            TransferStatus::Completed | TransferStatus::Reversed => {
                return Ok(TransferView::of(transfer))
            }
            TransferStatus::Rejected | TransferStatus::Voided => {
                return Err(Code::TransferNotPending)
            }
            TransferStatus::Pending => {}
        }
        if transfer
            .expires_at_ms
            .is_some_and(|deadline| deadline <= at.ms)
        {
            // The deadline passed before the post arrived: expiry wins.
            self.void(id)?;
            return Err(Code::TransferNotPending);
        }
        let (kind, from, to, amount, fee) = (
            transfer.kind,
            transfer.from.clone(),
            transfer.to.clone(),
            transfer.amount,
            transfer.fee,
        );
        self.release(id);
        self.move_money(id, kind, (&from, &to), (amount, fee), at);
        let transfer = self.transfers.get_mut(id).expect("found above");
        transfer.status = TransferStatus::Completed;
        Ok(TransferView::of(transfer))
    }

    fn void(&mut self, id: &TransferId) -> Result<TransferView, Code> {
        let transfer = self.transfers.get(id).ok_or(Code::TransferNotFound)?;
        match transfer.status {
            TransferStatus::Voided => return Ok(TransferView::of(transfer)),
            TransferStatus::Pending => {}
            _ => return Err(Code::TransferNotPending),
        }
        let (from, day) = (transfer.from.clone(), transfer.counted_day_ms);
        let total = transfer.amount.checked_add(transfer.fee).expect("bounded");
        self.release(id);
        self.uncount_out(&from, total, day);
        let transfer = self.transfers.get_mut(id).expect("found above");
        transfer.status = TransferStatus::Voided;
        Ok(TransferView::of(transfer))
    }

    fn expire(&mut self, at: At) -> u32 {
        let due: Vec<TransferId> = self
            .expiries
            .iter()
            .take_while(|(deadline, _)| *deadline <= at.ms)
            .take(EXPIRE_BATCH_MAX)
            .map(|(_, id)| id.clone())
            .collect();
        for id in &due {
            self.void(id)
                .expect("an expiry entry names a pending transfer");
        }
        // Pending sagas homed here are decided void; their coordinators release the holds.
        let sagas = self.expire_sagas(at, EXPIRE_BATCH_MAX.saturating_sub(due.len()));
        u32::try_from(due.len().saturating_add(sagas)).expect("bounded by EXPIRE_BATCH_MAX")
    }

    fn reverse(&mut self, request: &ReversalRequest, at: At) -> TransferOutcome {
        let refused = |code| TransferOutcome::Refused {
            id: request.id.clone(),
            code,
        };
        if let Some(existing) = self.transfers.get(&request.id) {
            if existing.origin == Origin::Reversal(request.clone()) {
                return existing.answer.clone();
            }
            return refused(Code::IdConflict);
        }
        if let Some(saga) = self.sagas.get(&request.id) {
            // The reversal's own saga may send its money step here (see `crate::saga`).
            let own = saga
                .reverses
                .as_ref()
                .is_some_and(|r| r.request == *request);
            if !own {
                return refused(Code::IdConflict);
            }
        }
        if request.reason.len() > TEXT_BYTES_MAX {
            return refused(Code::InvalidRequest);
        }
        let Some(original) = self.transfers.get(&request.original) else {
            return refused(Code::TransferNotFound);
        };
        match original.status {
            TransferStatus::Reversed => return refused(Code::AlreadyReversed),
            TransferStatus::Completed if original.kind != TransferKind::Reversal => {}
            _ => return refused(Code::NotReversible),
        }
        // The money goes back the way it came: from the original payee to the original payer.
        let (payer, payee, amount) = (original.to.clone(), original.from.clone(), original.amount);
        let origin = Origin::Reversal(request.clone());
        let payer_account = self
            .accounts
            .get(&payer)
            .expect("accounts are never deleted");
        let payee_account = self
            .accounts
            .get(&payee)
            .expect("accounts are never deleted");
        // The same floors and caps as any transfer (see `business_check`).
        let payee_after = add(
            add(payee_account.balance, payee_account.pending_in),
            signed(amount),
        );
        let rejection = if payer_account.status == AccountStatus::Closed
            || payee_account.status == AccountStatus::Closed
        {
            Some(Code::AccountClosed)
        } else if payer.is_float() && sub(payer_account.available(), signed(amount)) < -BALANCE_MAX
        {
            Some(Code::LimitExceeded)
        } else if !payer.is_float() && payer_account.available() < signed(amount) {
            Some(Code::InsufficientFunds)
        } else if payee_after > BALANCE_MAX {
            Some(Code::LimitExceeded)
        } else {
            None
        };
        if let Some(code) = rejection {
            return self.record_rejection(
                origin,
                TransferKind::Reversal,
                (&payer, &payee),
                amount,
                code,
                at,
            );
        }
        let (from_balance, to_balance) = self.move_money(
            &request.id,
            TransferKind::Reversal,
            (&payer, &payee),
            (amount, 0),
            at,
        );
        let answer = TransferOutcome::Accepted(Accepted {
            id: request.id.clone(),
            status: TransferStatus::Completed,
            amount,
            fee: 0,
            from_balance,
            to_balance,
            daily_room: None,
            log_index: at.log_index,
            log_pos: at.log_pos,
        });
        let currency = self
            .accounts
            .get(&payer)
            .map_or(self.currency, |a| a.currency);
        let reversal = Transfer {
            id: request.id.clone(),
            kind: TransferKind::Reversal,
            from: payer,
            to: payee,
            amount,
            fee: 0,
            currency,
            status: TransferStatus::Completed,
            code: None,
            created_at_ms: at.ms,
            expires_at_ms: None,
            reversed_by: None,
            reverses: Some(request.original.clone()),
            log_index: at.log_index,
            log_pos: at.log_pos,
            counted_day_ms: None,
            origin,
            answer: answer.clone(),
        };
        self.transfers
            .insert(request.id.clone(), Box::new(reversal));
        let original = self
            .transfers
            .get_mut(&request.original)
            .expect("found above");
        original.status = TransferStatus::Reversed;
        original.reversed_by = Some(request.id.clone());
        answer
    }
}

/// Checks a request's shape: what the API validates, checked again before it touches state.
pub(crate) fn shape_check(request: &TransferRequest) -> Result<(), Code> {
    if request.from == request.to {
        return Err(Code::SameAccount);
    }
    let amount_ok = request.amount > 0 && request.amount <= AMOUNT_MAX;
    let timeout_ok = (TIMEOUT_S_MIN..=TIMEOUT_S_MAX).contains(&request.timeout_s);
    let kind_ok = request.kind != TransferKind::Reversal;
    if !amount_ok || !timeout_ok || !kind_ok || request.memo.len() > TEXT_BYTES_MAX {
        return Err(Code::InvalidRequest);
    }
    Ok(())
}

pub(crate) fn push_entry(account: &mut Account, entry: Entry) {
    account.entries.push(entry, STATEMENT_KEEP_MAX);
}

/// FNV-1a, 64 bits: simple, stable, good enough to tell replicas apart.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn bytes(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so ("ab","c") and ("a","bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

//! Property tests: random command sequences over a small fixed world (4 customers, 2 merchants,
//! 2 agents, a USD customer, an account that does not exist yet, plus float and fees) with
//! transfer ids from a small pool, so that retries, id conflicts, holds, expiries and
//! reversals collide often.
//!
//! Properties: (a) conservation and the ledger's own invariants after every command, (b) only
//! the float ever goes below zero, (c) applying a command twice equals applying it once,
//! (d) an independent reference model agrees on every answer and every balance, plus batch ==
//! single calls, snapshot round trips and replay determinism.

use std::collections::HashMap;

use ledger::limits::{
    AMOUNT_MAX, BALANCE_MAX, FEE_BANDS_MAX, TEXT_BYTES_MAX, TIMEOUT_S_MAX, TIMEOUT_S_MIN,
};
use ledger::*;
use proptest::prelude::*;

const T0: u64 = 1_795_640_645_000;

/// The fixed world: id, kind, currency, created before the sequence starts.
const WORLD: [(&str, AccountKind, &str, bool); 12] = [
    ("float", AccountKind::System, "KES", true),
    ("fees", AccountKind::System, "KES", true),
    ("+254700000001", AccountKind::Customer, "KES", true),
    ("+254700000002", AccountKind::Customer, "KES", true),
    ("+254700000003", AccountKind::Customer, "KES", true),
    ("+254700000004", AccountKind::Customer, "KES", true),
    ("+254711000001", AccountKind::Merchant, "KES", true),
    ("+254711000002", AccountKind::Merchant, "KES", true),
    ("+254722000001", AccountKind::Agent, "KES", true),
    ("+254722000002", AccountKind::Agent, "KES", true),
    ("+12025550123", AccountKind::Customer, "USD", true),
    ("+254799999999", AccountKind::Customer, "KES", false),
];
const FLOAT: usize = 0;
const FEES: usize = 1;
const CUSTOMERS: [usize; 4] = [2, 3, 4, 5];
const MERCHANTS: [usize; 2] = [6, 7];
const AGENTS: [usize; 2] = [8, 9];
const CLIENTS: [usize; 8] = [2, 3, 4, 5, 6, 7, 8, 9];

const ID_POOL: usize = 40;

/// A pool index, skewed towards the first few so that retries and conflicts are common.
fn pool_index() -> impl Strategy<Value = usize> {
    prop_oneof![1 => 0..6usize, 3 => 0..ID_POOL]
}

fn cur(text: &str) -> Currency {
    Currency::parse(text).expect("valid currency")
}

fn acc(index: usize) -> AccountId {
    AccountId::parse(WORLD[index].0).expect("valid account id")
}

fn tid(index: usize) -> TransferId {
    TransferId::parse(&format!("t{index}")).expect("valid transfer id")
}

fn pool() -> impl Iterator<Item = TransferId> {
    (0..ID_POOL).map(tid)
}

fn fresh_ledger() -> Ledger {
    let mut ledger = Ledger::new(cur("KES"));
    for command in setup_commands() {
        let outcome = ledger.apply(&command, T0);
        assert!(matches!(outcome, Outcome::Account(Ok(_))), "{outcome:?}");
    }
    ledger
}

fn setup_commands() -> Vec<Command> {
    WORLD
        .iter()
        .enumerate()
        .filter(|(_, (_, kind, _, created))| *created && *kind != AccountKind::System)
        .map(|(index, _)| create_command(index, WORLD[index].1))
        .collect()
}

fn create_command(index: usize, kind: AccountKind) -> Command {
    Command::CreateAccount(NewAccount {
        id: acc(index),
        kind,
        name: format!("account {index}"),
        currency: cur(WORLD[index].2),
    })
}

// --- strategies -----------------------------------------------------------------------------

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        40 => 1..=10_000u64,
        2 => 10_001..=AMOUNT_MAX,
        2 => (AMOUNT_MAX - 3)..=AMOUNT_MAX,
        1 => Just(0u64),
        1 => Just(AMOUNT_MAX + 1),
    ]
}

fn timeout_s() -> impl Strategy<Value = u64> {
    prop_oneof![
        30 => TIMEOUT_S_MIN..=600u64,
        1 => Just(0u64),
        1 => Just(TIMEOUT_S_MAX),
        1 => Just(TIMEOUT_S_MAX + 1),
    ]
}

fn client_kind() -> impl Strategy<Value = TransferKind> {
    prop_oneof![
        3 => Just(TransferKind::Issue),
        1 => prop::sample::select(TransferKind::CLIENT_KINDS.to_vec()),
    ]
    .prop_flat_map(|kind| prop_oneof![40 => Just(kind), 1 => Just(TransferKind::Reversal)])
}

/// Payer and payee candidates that suit a kind.
fn suits(kind: TransferKind) -> (Vec<usize>, Vec<usize>) {
    let mut payees = CLIENTS.to_vec();
    let mut payers = CLIENTS.to_vec();
    payers.push(FEES);
    match kind {
        TransferKind::P2p => (CUSTOMERS.to_vec(), CUSTOMERS.to_vec()),
        TransferKind::MerchantPayment | TransferKind::BillPayment => {
            (CUSTOMERS.to_vec(), MERCHANTS.to_vec())
        }
        TransferKind::CashIn => (AGENTS.to_vec(), CUSTOMERS.to_vec()),
        TransferKind::CashOut => (CUSTOMERS.to_vec(), AGENTS.to_vec()),
        TransferKind::Issue => {
            payees.push(10);
            (vec![FLOAT], payees)
        }
        TransferKind::Redeem => (payers, vec![FLOAT]),
        TransferKind::Reversal => ((0..WORLD.len()).collect(), (0..WORLD.len()).collect()),
    }
}

fn request() -> impl Strategy<Value = TransferRequest> {
    let parties = (
        client_kind(),
        prop::bool::weighted(0.85),
        0..WORLD.len(),
        0..WORLD.len(),
    );
    let body = (
        pool_index(),
        amount(),
        prop::bool::weighted(0.03),
        prop::bool::weighted(0.1),
    );
    let hold = (prop::bool::weighted(0.3), timeout_s());
    (parties, body, hold).prop_map(
        |((kind, suited, a, b), (id, amount, usd, memo), (pending, timeout_s))| {
            let (from, to) = if suited {
                let (payers, payees) = suits(kind);
                (payers[a % payers.len()], payees[b % payees.len()])
            } else {
                (a, b)
            };
            TransferRequest {
                id: tid(id),
                kind,
                from: acc(from),
                to: acc(to),
                amount,
                currency: cur(if usd { "USD" } else { "KES" }),
                memo: if memo {
                    "note".to_string()
                } else {
                    String::new()
                },
                pending,
                timeout_s,
            }
        },
    )
}

fn any_kind() -> impl Strategy<Value = TransferKind> {
    prop_oneof![
        8 => prop::sample::select(TransferKind::CLIENT_KINDS.to_vec()),
        1 => Just(TransferKind::Reversal),
    ]
}

fn band() -> impl Strategy<Value = FeeBand> {
    let range = prop_oneof![
        10 => (0u64..3_000, 0u64..3_000).prop_map(|(min, len)| (min, min + len)),
        1 => Just((AMOUNT_MAX - 10, AMOUNT_MAX)),
        1 => (1u64..100, 1u64..50).prop_map(|(max, less)| (max + less, max)),
    ];
    let fee = prop_oneof![20 => 0u64..300, 1 => Just(AMOUNT_MAX), 1 => Just(AMOUNT_MAX + 1)];
    (range, fee).prop_map(|((min, max), fee)| FeeBand { min, max, fee })
}

fn tariff() -> impl Strategy<Value = Tariff> {
    let fees = prop::collection::vec((any_kind(), band()), 0..6);
    let maxes = prop::collection::vec((any_kind(), 1u64..20_000), 0..2);
    let many = prop::bool::weighted(0.05);
    let account_kind = prop::sample::select(vec![
        AccountKind::Customer,
        AccountKind::Merchant,
        AccountKind::Agent,
        AccountKind::System,
    ]);
    let daily = prop::collection::vec((account_kind, 1u64..30_000), 0..3);
    (fees, maxes, many, daily).prop_map(|(fees, maxes, many, daily)| {
        let mut tariff = Tariff::default();
        for (kind, band) in fees {
            tariff.fees.entry(kind).or_default().push(band);
        }
        for (kind, max) in maxes {
            tariff.amount_max.insert(kind, max);
        }
        for (kind, max) in daily {
            tariff.daily_out_max.insert(kind, max);
        }
        if many {
            let bands = (0..=FEE_BANDS_MAX as u64)
                .map(|i| FeeBand {
                    min: i * 10,
                    max: i * 10 + 1,
                    fee: 1,
                })
                .collect();
            tariff.fees.insert(TransferKind::CashIn, bands);
        }
        tariff
    })
}

fn status() -> impl Strategy<Value = AccountStatus> {
    prop_oneof![
        3 => Just(AccountStatus::Active),
        1 => Just(AccountStatus::Frozen),
        1 => Just(AccountStatus::Closed),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        40 => request().prop_map(Command::Transfer),
        4 => prop::collection::vec(request(), 0..6).prop_map(Command::Batch),
        8 => pool_index().prop_map(|i| Command::Post(tid(i))),
        5 => pool_index().prop_map(|i| Command::Void(tid(i))),
        6 => (pool_index(), pool_index(), any::<bool>()).prop_map(|(id, original, why)| {
            let reason = if why { "dispute".to_string() } else { String::new() };
            Command::Reverse(ReversalRequest { id: tid(id), original: tid(original), reason })
        }),
        5 => Just(Command::ExpirePending),
        2 => tariff().prop_map(Command::SetTariff),
        2 => (0..WORLD.len(), status()).prop_map(|(i, status)| Command::SetAccountStatus { id: acc(i), status }),
        1 => (0..WORLD.len(), prop::sample::select(vec![AccountKind::Customer, AccountKind::Agent, AccountKind::System]))
            .prop_map(|(i, kind)| create_command(i, kind)),
    ]
}

/// Time steps in milliseconds: often none, often small, sometimes past every deadline.
fn delta_ms() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => Just(0u64),
        6 => 1..=2_000u64,
        3 => 1..=400_000u64,
        1 => Just(700_000u64),
    ]
}

fn steps() -> impl Strategy<Value = Vec<(u64, Command)>> {
    prop::collection::vec((delta_ms(), command()), 1..100)
}

// --- checks on the real ledger ---------------------------------------------------------------

/// (a) and (b): conservation, the ledger's own scan, non-negative clients, statement chains.
fn check_money(ledger: &Ledger) {
    ledger.check_invariants();
    let summary = ledger.summary();
    assert_eq!(summary.balance_sum, 0, "money created or destroyed");
    let mut pending = 0;
    for id in pool() {
        if ledger
            .transfer(&id)
            .is_some_and(|t| t.status == TransferStatus::Pending)
        {
            pending += 1;
        }
    }
    assert_eq!(summary.pending, pending);
    for account in ledger.accounts() {
        if !account.id.is_float() {
            assert!(
                account.balance >= 0,
                "{} has balance {}",
                account.id,
                account.balance
            );
            assert!(
                account.available() >= 0,
                "{} has available {}",
                account.id,
                account.available()
            );
        }
        assert!(account.pending_out >= 0 && account.pending_in >= 0);
        check_statement(account);
    }
}

/// Every statement line follows from the previous one, and the last one is the balance.
fn check_statement(account: &Account) {
    let mut previous: Option<i64> = None;
    for entry in account.entries.iter() {
        let change = i64::try_from(entry.amount).expect("bounded");
        if let Some(before) = previous {
            let expected = match entry.direction {
                Direction::Credit => before + change,
                Direction::Debit => before - change - i64::try_from(entry.fee).expect("bounded"),
            };
            assert_eq!(
                entry.balance_after, expected,
                "statement chain of {}",
                account.id
            );
        }
        previous = Some(entry.balance_after);
    }
    assert_eq!(
        previous.unwrap_or(0),
        account.balance,
        "last statement line of {}",
        account.id
    );
}

fn transfer_outcomes(outcome: &Outcome) -> Vec<TransferOutcome> {
    match outcome {
        Outcome::Transfer(one) => vec![one.clone()],
        Outcome::Batch(many) => many.clone(),
        _ => Vec::new(),
    }
}

// --- the reference model --------------------------------------------------------------------

/// Who may pay whom, by role: an independent restatement of the product rules.
const KIND_TABLE: [(TransferKind, &str, &str); 12] = [
    (TransferKind::P2p, "customer", "customer"),
    (TransferKind::MerchantPayment, "customer", "merchant"),
    (TransferKind::BillPayment, "customer", "merchant"),
    (TransferKind::CashIn, "agent", "customer"),
    (TransferKind::CashOut, "customer", "agent"),
    (TransferKind::Issue, "float", "customer"),
    (TransferKind::Issue, "float", "merchant"),
    (TransferKind::Issue, "float", "agent"),
    (TransferKind::Redeem, "customer", "float"),
    (TransferKind::Redeem, "merchant", "float"),
    (TransferKind::Redeem, "agent", "float"),
    (TransferKind::Redeem, "fees", "float"),
];

#[derive(Debug, Clone)]
struct MAccount {
    role: &'static str,
    currency: Currency,
    status: AccountStatus,
    balance: i128,
    held: i128,
    promised: i128,
    /// The daily-limit counter: the day (its midnight, UTC) and what was sent in it.
    out: (u64, u64),
}

#[derive(Debug, Clone, PartialEq)]
enum MOrigin {
    Request(TransferRequest),
    Reversal(ReversalRequest),
}

#[derive(Debug, Clone)]
struct MTransfer {
    origin: MOrigin,
    answer: TransferOutcome,
    kind: TransferKind,
    from: String,
    to: String,
    amount: u64,
    fee: u64,
    status: TransferStatus,
    deadline: Option<u64>,
    place: (u64, u32),
    /// The day this transfer counted in its payer's daily counter.
    counted: Option<u64>,
}

#[derive(Debug, Clone, Default)]
struct Model {
    accounts: HashMap<String, MAccount>,
    transfers: HashMap<String, MTransfer>,
    fees: HashMap<TransferKind, Vec<FeeBand>>,
    amount_max: HashMap<TransferKind, u64>,
    /// Daily limits by the payer's role ("customer", "merchant", "agent").
    daily_max: HashMap<&'static str, u64>,
    /// The day (midnight UTC, the default schedule) of the command being applied.
    day: u64,
    /// The log entry and batch position of the command being applied.
    place: (u64, u32),
}

fn role_of(id: &str, kind: AccountKind) -> &'static str {
    match (id, kind) {
        ("float", _) => "float",
        ("fees", _) => "fees",
        (_, AccountKind::Customer) => "customer",
        (_, AccountKind::Merchant) => "merchant",
        (_, AccountKind::Agent) => "agent",
        (_, AccountKind::System) => "system",
    }
}

fn wide(amount: u64) -> i128 {
    i128::from(amount)
}

const MAX: i128 = BALANCE_MAX as i128;

impl Model {
    fn new() -> Model {
        let mut model = Model::default();
        for id in ["float", "fees"] {
            model.open(id, AccountKind::System, cur("KES"));
        }
        model
    }

    fn open(&mut self, id: &str, kind: AccountKind, currency: Currency) {
        let account = MAccount {
            role: role_of(id, kind),
            currency,
            status: AccountStatus::Active,
            balance: 0,
            held: 0,
            promised: 0,
            out: (0, 0),
        };
        self.accounts.insert(id.to_string(), account);
    }

    fn get(&mut self, id: &str) -> &mut MAccount {
        self.accounts.get_mut(id).expect("model account exists")
    }

    fn apply(&mut self, command: &Command, now: u64, log_index: u64) -> Outcome {
        self.place = (log_index, 0);
        self.day = now - now % 86_400_000;
        match command {
            Command::CreateAccount(new) => Outcome::Account(self.create(new)),
            Command::Transfer(request) => Outcome::Transfer(self.transfer(request, now)),
            Command::Batch(requests) => {
                let mut answers = Vec::new();
                for (pos, r) in requests.iter().enumerate() {
                    self.place = (log_index, u32::try_from(pos).expect("small"));
                    answers.push(self.transfer(r, now));
                }
                Outcome::Batch(answers)
            }
            Command::Post(id) => record_outcome(self.post(id.as_str(), now), id),
            Command::Void(id) => record_outcome(self.void(id.as_str()), id),
            Command::Reverse(request) => Outcome::Transfer(self.reverse(request, now)),
            Command::ExpirePending => Outcome::Expired {
                voided: self.expire(now),
            },
            Command::SetTariff(tariff) => Outcome::Status(self.set_tariff(tariff)),
            Command::SetAccountStatus { id, status } => {
                Outcome::Status(self.set_status(id.as_str(), *status))
            }
            // Saga commands span shards; tests/saga.rs checks them against their own model.
            other => unreachable!("the generator makes no saga command: {other:?}"),
        }
    }

    /// The account view is compared by its id, kind and status only.
    fn create(&mut self, new: &NewAccount) -> Result<AccountView, Code> {
        if new.kind == AccountKind::System || new.name.len() > TEXT_BYTES_MAX {
            return Err(Code::InvalidRequest);
        }
        let id = new.id.as_str();
        if self.accounts.contains_key(id) || id == "float" || id == "fees" {
            return Err(Code::AccountExists);
        }
        self.open(id, new.kind, new.currency);
        Ok(AccountView {
            id: new.id.clone(),
            kind: new.kind,
            name: new.name.clone(),
            currency: new.currency,
            status: AccountStatus::Active,
            balance: 0,
            available: 0,
            pending_out: 0,
            pending_in: 0,
        })
    }

    fn set_status(&mut self, id: &str, status: AccountStatus) -> Result<(), Code> {
        if id == "float" || id == "fees" {
            return Err(Code::KindNotAllowed);
        }
        let account = self.accounts.get_mut(id).ok_or(Code::AccountNotFound)?;
        account.status = status;
        Ok(())
    }

    fn set_tariff(&mut self, tariff: &Tariff) -> Result<(), Code> {
        for bands in tariff.fees.values() {
            let bad_band = bands.iter().any(|b| b.min > b.max || b.fee > AMOUNT_MAX);
            let mut overlap = false;
            for (x, a) in bands.iter().enumerate() {
                for b in &bands[x + 1..] {
                    overlap |= a.min <= b.max && b.min <= a.max;
                }
            }
            if bands.len() > FEE_BANDS_MAX || bad_band || overlap {
                return Err(Code::InvalidRequest);
            }
        }
        if tariff.daily_out_max.contains_key(&AccountKind::System) {
            return Err(Code::InvalidRequest);
        }
        self.fees = tariff.fees.iter().map(|(k, v)| (*k, v.clone())).collect();
        self.amount_max = tariff.amount_max.iter().map(|(k, v)| (*k, *v)).collect();
        self.daily_max = tariff
            .daily_out_max
            .iter()
            .map(|(kind, max)| (role_of("", *kind), *max))
            .collect();
        Ok(())
    }

    fn fee(&self, kind: TransferKind, amount: u64) -> u64 {
        let bands = self.fees.get(&kind).map_or(&[][..], Vec::as_slice);
        bands
            .iter()
            .find(|b| (b.min..=b.max).contains(&amount))
            .map_or(0, |b| b.fee)
    }

    fn transfer(&mut self, r: &TransferRequest, now: u64) -> TransferOutcome {
        let key = r.id.as_str().to_string();
        let refused = |code| TransferOutcome::Refused {
            id: r.id.clone(),
            code,
        };
        if let Some(existing) = self.transfers.get(&key) {
            if existing.origin == MOrigin::Request(r.clone()) {
                return existing.answer.clone();
            }
            return refused(Code::IdConflict);
        }
        if r.from == r.to {
            return refused(Code::SameAccount);
        }
        let shape_ok = r.amount >= 1
            && r.amount <= AMOUNT_MAX
            && (TIMEOUT_S_MIN..=TIMEOUT_S_MAX).contains(&r.timeout_s)
            && r.kind != TransferKind::Reversal
            && r.memo.len() <= TEXT_BYTES_MAX;
        if !shape_ok {
            return refused(Code::InvalidRequest);
        }
        let (from, to) = (r.from.as_str().to_string(), r.to.as_str().to_string());
        let (fee, status) = match self.judge(r) {
            Err(code) => {
                let answer = TransferOutcome::Rejected {
                    id: r.id.clone(),
                    code,
                    log_index: self.place.0,
                    log_pos: self.place.1,
                };
                self.record(
                    &key,
                    MOrigin::Request(r.clone()),
                    answer.clone(),
                    r.kind,
                    (from, to),
                    (r.amount, 0),
                );
                return answer;
            }
            Ok(fee) if r.pending => (fee, TransferStatus::Pending),
            Ok(fee) => (fee, TransferStatus::Completed),
        };
        let counted = self.count(&from, r.amount + fee);
        if r.pending {
            self.get(&from).held += wide(r.amount) + wide(fee);
            self.get(&to).promised += wide(r.amount);
        } else {
            self.move_money(&from, &to, r.amount, fee);
        }
        let daily_room = self.room(&self.accounts[&from]);
        let answer = TransferOutcome::Accepted(Accepted {
            id: r.id.clone(),
            status,
            amount: r.amount,
            fee,
            from_balance: i64::try_from(self.get(&from).balance).expect("bounded"),
            to_balance: i64::try_from(self.get(&to).balance).expect("bounded"),
            daily_room,
            log_index: self.place.0,
            log_pos: self.place.1,
        });
        self.record(
            &key,
            MOrigin::Request(r.clone()),
            answer.clone(),
            r.kind,
            (from, to),
            (r.amount, fee),
        );
        let transfer = self.transfers.get_mut(&key).expect("just recorded");
        transfer.status = status;
        transfer.counted = counted;
        if r.pending {
            transfer.deadline = Some(now + r.timeout_s * 1000);
        }
        answer
    }

    /// The business rules, in the order the product specifies them; the fee on success.
    fn judge(&self, r: &TransferRequest) -> Result<u64, Code> {
        let from = self
            .accounts
            .get(r.from.as_str())
            .ok_or(Code::AccountNotFound)?;
        let to = self
            .accounts
            .get(r.to.as_str())
            .ok_or(Code::AccountNotFound)?;
        for account in [from, to] {
            match account.status {
                AccountStatus::Frozen => return Err(Code::AccountFrozen),
                AccountStatus::Closed => return Err(Code::AccountClosed),
                AccountStatus::Active => {}
            }
        }
        if r.currency != from.currency || r.currency != to.currency {
            return Err(Code::CurrencyMismatch);
        }
        if !KIND_TABLE.contains(&(r.kind, from.role, to.role)) {
            return Err(Code::KindNotAllowed);
        }
        if r.amount > self.amount_max.get(&r.kind).copied().unwrap_or(AMOUNT_MAX) {
            return Err(Code::LimitExceeded);
        }
        let fee = self.fee(r.kind, r.amount);
        let total = wide(r.amount) + wide(fee);
        if total > wide(AMOUNT_MAX) {
            return Err(Code::LimitExceeded);
        }
        if let Some(max) = self.daily_max.get(from.role) {
            if wide(self.sent_today(from)) + total > wide(*max) {
                return Err(Code::LimitExceeded);
            }
        }
        let available = from.balance - from.held;
        if from.role == "float" {
            if available - total < -MAX {
                return Err(Code::LimitExceeded);
            }
        } else if available < total {
            return Err(Code::InsufficientFunds);
        }
        if to.balance + to.promised + wide(r.amount) > MAX {
            return Err(Code::LimitExceeded);
        }
        let fees = &self.accounts["fees"];
        if fees.balance + fees.promised + wide(fee) > MAX {
            return Err(Code::LimitExceeded);
        }
        Ok(fee)
    }

    fn record(
        &mut self,
        key: &str,
        origin: MOrigin,
        answer: TransferOutcome,
        kind: TransferKind,
        (from, to): (String, String),
        (amount, fee): (u64, u64),
    ) {
        let status = match answer {
            TransferOutcome::Rejected { .. } => TransferStatus::Rejected,
            _ => TransferStatus::Completed,
        };
        let transfer = MTransfer {
            origin,
            answer,
            kind,
            from,
            to,
            amount,
            fee,
            status,
            deadline: None,
            place: self.place,
            counted: None,
        };
        self.transfers.insert(key.to_string(), transfer);
    }

    /// What `account` sent in the current day (a counter of an older day reads 0).
    fn sent_today(&self, account: &MAccount) -> u64 {
        if account.out.0 == self.day {
            account.out.1
        } else {
            0
        }
    }

    fn room(&self, account: &MAccount) -> Option<u64> {
        let max = self.daily_max.get(account.role)?;
        Some(max.saturating_sub(self.sent_today(account)))
    }

    /// Counts an accepted debit against its payer's day (system accounts keep no counter).
    fn count(&mut self, from: &str, total: u64) -> Option<u64> {
        if from == "float" || from == "fees" {
            return None;
        }
        let day = self.day;
        let account = self.get(from);
        if account.out.0 != day {
            account.out = (day, 0);
        }
        account.out.1 += total;
        Some(day)
    }

    /// Gives back a voided transfer's count if its payer's counter still counts its day.
    fn uncount(&mut self, key: &str) {
        let t = self.transfers[key].clone();
        if let Some(day) = t.counted {
            let account = self.get(&t.from);
            if account.out.0 == day {
                account.out.1 -= t.amount + t.fee;
            }
        }
    }

    fn move_money(&mut self, from: &str, to: &str, amount: u64, fee: u64) {
        self.get(from).balance -= wide(amount) + wide(fee);
        self.get(to).balance += wide(amount);
        self.get("fees").balance += wide(fee);
    }

    fn release(&mut self, key: &str) {
        let t = self.transfers[key].clone();
        self.get(&t.from).held -= wide(t.amount) + wide(t.fee);
        self.get(&t.to).promised -= wide(t.amount);
        self.transfers.get_mut(key).expect("exists").deadline = None;
    }

    fn set_transfer_status(&mut self, key: &str, status: TransferStatus) -> TransferStatus {
        self.transfers.get_mut(key).expect("exists").status = status;
        status
    }

    fn post(&mut self, key: &str, now: u64) -> Result<TransferStatus, Code> {
        let t = self
            .transfers
            .get(key)
            .ok_or(Code::TransferNotFound)?
            .clone();
        match t.status {
            TransferStatus::Completed | TransferStatus::Reversed => Ok(t.status),
            TransferStatus::Rejected | TransferStatus::Voided => Err(Code::TransferNotPending),
            TransferStatus::Pending if t.deadline.is_some_and(|d| d <= now) => {
                self.release(key);
                self.uncount(key);
                self.set_transfer_status(key, TransferStatus::Voided);
                Err(Code::TransferNotPending)
            }
            TransferStatus::Pending => {
                self.release(key);
                self.move_money(&t.from, &t.to, t.amount, t.fee);
                Ok(self.set_transfer_status(key, TransferStatus::Completed))
            }
        }
    }

    fn void(&mut self, key: &str) -> Result<TransferStatus, Code> {
        let t = self.transfers.get(key).ok_or(Code::TransferNotFound)?;
        match t.status {
            TransferStatus::Voided => Ok(TransferStatus::Voided),
            TransferStatus::Pending => {
                self.release(key);
                self.uncount(key);
                Ok(self.set_transfer_status(key, TransferStatus::Voided))
            }
            _ => Err(Code::TransferNotPending),
        }
    }

    fn expire(&mut self, now: u64) -> u32 {
        let due: Vec<String> = self
            .transfers
            .iter()
            .filter(|(_, t)| {
                t.status == TransferStatus::Pending && t.deadline.is_some_and(|d| d <= now)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in &due {
            self.void(key).expect("due transfers are pending");
        }
        u32::try_from(due.len()).expect("small")
    }

    fn reverse(&mut self, r: &ReversalRequest, _now: u64) -> TransferOutcome {
        let key = r.id.as_str().to_string();
        let refused = |code| TransferOutcome::Refused {
            id: r.id.clone(),
            code,
        };
        if let Some(existing) = self.transfers.get(&key) {
            if existing.origin == MOrigin::Reversal(r.clone()) {
                return existing.answer.clone();
            }
            return refused(Code::IdConflict);
        }
        if r.reason.len() > TEXT_BYTES_MAX {
            return refused(Code::InvalidRequest);
        }
        let Some(original) = self.transfers.get(r.original.as_str()).cloned() else {
            return refused(Code::TransferNotFound);
        };
        match original.status {
            TransferStatus::Reversed => return refused(Code::AlreadyReversed),
            TransferStatus::Completed if original.kind != TransferKind::Reversal => {}
            _ => return refused(Code::NotReversible),
        }
        let (payer, payee) = (original.to.clone(), original.from.clone());
        let payer_account = &self.accounts[&payer];
        // Money never moves out of or into a closed account, a reversal's neither.
        let rejection = if payer_account.status == AccountStatus::Closed
            || self.accounts[&payee].status == AccountStatus::Closed
        {
            Some(Code::AccountClosed)
        } else if payer_account.role != "float"
            && payer_account.balance - payer_account.held < wide(original.amount)
        {
            Some(Code::InsufficientFunds)
        } else {
            None
        };
        let origin = MOrigin::Reversal(r.clone());
        let parties = (payer.clone(), payee.clone());
        if let Some(code) = rejection {
            let answer = TransferOutcome::Rejected {
                id: r.id.clone(),
                code,
                log_index: self.place.0,
                log_pos: self.place.1,
            };
            self.record(
                &key,
                origin,
                answer.clone(),
                TransferKind::Reversal,
                parties,
                (original.amount, 0),
            );
            return answer;
        }
        self.move_money(&payer, &payee, original.amount, 0);
        let answer = TransferOutcome::Accepted(Accepted {
            id: r.id.clone(),
            status: TransferStatus::Completed,
            amount: original.amount,
            fee: 0,
            from_balance: i64::try_from(self.get(&payer).balance)
                .expect("test amounts stay in i64"),
            to_balance: i64::try_from(self.get(&payee).balance).expect("test amounts stay in i64"),
            daily_room: None,
            log_index: self.place.0,
            log_pos: self.place.1,
        });
        self.record(
            &key,
            origin,
            answer.clone(),
            TransferKind::Reversal,
            parties,
            (original.amount, 0),
        );
        self.set_transfer_status(r.original.as_str(), TransferStatus::Reversed);
        answer
    }
}

/// Compares the answers of the ledger and the model, in the detail the model keeps.
fn same_answer(real: &Outcome, model: &Outcome) -> bool {
    match (real, model) {
        (Outcome::Record(a), Outcome::Record(b)) => {
            a.as_ref().map(|v| v.status) == b.as_ref().map(|v| v.status)
        }
        (Outcome::Account(a), Outcome::Account(b)) => {
            a.as_ref().map(|v| (v.id.clone(), v.kind, v.status))
                == b.as_ref().map(|v| (v.id.clone(), v.kind, v.status))
        }
        _ => real == model,
    }
}

/// The model's post/void answer, shaped like the ledger's (only the status is compared).
fn record_outcome(result: Result<TransferStatus, Code>, id: &TransferId) -> Outcome {
    Outcome::Record(result.map(|status| TransferView {
        id: id.clone(),
        kind: TransferKind::P2p,
        from: AccountId::float(),
        to: AccountId::fees(),
        amount: 0,
        fee: 0,
        currency: cur("KES"),
        status,
        code: None,
        created_at: String::new(),
        expires_at: None,
        log_index: 0,
        log_pos: 0,
        reversed_by: None,
        reverses: None,
    }))
}

/// Every account's balance, holds and status, and every pool transfer's record, agree.
fn assert_same_state(ledger: &Ledger, model: &Model, step: usize) {
    for index in 0..WORLD.len() {
        let id = acc(index);
        let real = ledger.account(&id).map(|a| {
            (
                a.status,
                i128::from(a.balance),
                i128::from(a.pending_out),
                i128::from(a.pending_in),
            )
        });
        let expected = model
            .accounts
            .get(id.as_str())
            .map(|a| (a.status, a.balance, a.held, a.promised));
        assert_eq!(real, expected, "account {id} after step {step}");
    }
    for id in pool() {
        let real = ledger.transfer(&id).map(|t| {
            (
                t.kind,
                t.from.to_string(),
                t.to.to_string(),
                t.amount,
                t.fee,
                t.status,
                (t.log_index, t.log_pos),
            )
        });
        let expected = model.transfers.get(id.as_str()).map(|t| {
            (
                t.kind,
                t.from.clone(),
                t.to.clone(),
                t.amount,
                t.fee,
                t.status,
                t.place,
            )
        });
        assert_eq!(real, expected, "transfer {id} after step {step}");
    }
}

/// The one sanctioned difference on a batch retry: a request that was refused (so recorded
/// nothing) under an id that a *later, different* request of the same batch then recorded,
/// answers IdConflict on the retry. Both answers are refusals; the state is the same.
fn refusal_taken_later(
    requests: &[TransferRequest],
    n: usize,
    first: &TransferOutcome,
    second: &TransferOutcome,
) -> bool {
    let was_refused =
        matches!(first, TransferOutcome::Refused { code, .. } if *code != Code::IdConflict);
    let now_conflict = matches!(
        second,
        TransferOutcome::Refused {
            code: Code::IdConflict,
            ..
        }
    );
    let taken_later = requests[n + 1..]
        .iter()
        .any(|r| r.id == requests[n].id && *r != requests[n]);
    was_refused && now_conflict && taken_later
}

fn config() -> ProptestConfig {
    // No regression files: this crate keeps its tests to two files.
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(256)
    }
}

proptest! {
    #![proptest_config(config())]

    /// (a) + (b): balances always sum to 0, the ledger's invariant scan passes, only the float
    /// goes below zero, statements chain; batches equal single calls; snapshots round-trip;
    /// replaying the log gives the same state.
    #[test]
    fn money_is_conserved(steps in steps()) {
        let mut ledger = fresh_ledger();
        let mut now = T0;
        let mut log = Vec::new();
        check_money(&ledger);
        for (delta, command) in &steps {
            now += delta;
            if let Command::Batch(requests) = command {
                let mut singles = ledger.clone();
                let answers: Vec<Outcome> =
                    requests.iter().enumerate().map(|(pos, r)| {
                        // Item i of a batch answers as a single call at position i of its entry.
                        let at = At { ms: now, log_index: 0, log_pos: u32::try_from(pos).expect("small") };
                        singles.apply_at(&Command::Transfer(r.clone()), at)
                    }).collect();
                let outcome = ledger.apply(command, now);
                let singles_answers: Vec<TransferOutcome> = answers.iter().flat_map(transfer_outcomes).collect();
                prop_assert_eq!(transfer_outcomes(&outcome), singles_answers);
                prop_assert_eq!(&ledger, &singles);
            } else {
                ledger.apply(command, now);
            }
            log.push((now, command.clone()));
            check_money(&ledger);
        }
        let bytes = postcard::to_allocvec(&ledger).expect("encodes");
        let restored: Ledger = postcard::from_bytes(&bytes).expect("decodes");
        prop_assert_eq!(&restored, &ledger);
        let mut replay = fresh_ledger();
        for (at, command) in &log {
            replay.apply(command, *at);
        }
        prop_assert_eq!(&replay, &ledger);
    }

    /// (c): applying any command twice in a row equals applying it once, and the second answer
    /// equals the first (except ExpirePending, which voids nothing the second time, and a
    /// successful CreateAccount, which answers AccountExists the second time).
    #[test]
    fn commands_are_idempotent(steps in steps()) {
        let mut ledger = fresh_ledger();
        let mut now = T0;
        for (delta, command) in &steps {
            now += delta;
            let first = ledger.apply(command, now);
            let once = ledger.clone();
            let second = ledger.apply(command, now);
            prop_assert_eq!(&ledger, &once, "second apply of {:?} changed the state", command);
            match (command, &first) {
                (Command::ExpirePending, _) => prop_assert_eq!(second, Outcome::Expired { voided: 0 }),
                (Command::CreateAccount(_), Outcome::Account(Ok(_))) => {
                    prop_assert_eq!(second, Outcome::Account(Err(Code::AccountExists)));
                }
                (Command::Batch(requests), Outcome::Batch(answers)) => {
                    let Outcome::Batch(again) = &second else { panic!("a batch answers a batch") };
                    prop_assert_eq!(again.len(), answers.len());
                    for (n, (a, b)) in answers.iter().zip(again).enumerate() {
                        prop_assert!(a == b || refusal_taken_later(requests, n, a, b), "{:?} then {:?}", a, b);
                    }
                }
                _ => prop_assert_eq!(&second, &first, "second answer of {:?}", command),
            }
            ledger.check_invariants();
        }
    }

    /// (d): an independent reference model gives the same answers, balances, holds, statuses
    /// and transfer records after every command.
    #[test]
    fn ledger_matches_reference_model(steps in steps()) {
        let mut ledger = Ledger::new(cur("KES"));
        let mut model = Model::new();
        for command in setup_commands() {
            let real = ledger.apply(&command, T0);
            let expected = model.apply(&command, T0, 0);
            prop_assert!(same_answer(&real, &expected));
        }
        let mut now = T0;
        for (step, (delta, command)) in steps.iter().enumerate() {
            now += delta;
            // Log index = step + 1, so a retry's answer must carry its first application's place.
            let log_index = u64::try_from(step).expect("small") + 1;
            let real = ledger.apply_at(command, At { ms: now, log_index, log_pos: 0 });
            let expected = model.apply(command, now, log_index);
            prop_assert!(same_answer(&real, &expected), "step {}: {:?}\nledger: {:?}\nmodel:  {:?}", step, command, real, expected);
            assert_same_state(&ledger, &model, step);
            ledger.check_invariants();
        }
    }
}

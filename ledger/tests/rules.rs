//! Example-based tests of the ledger's money rules: one scenario per test, with the invariants
//! (`check_invariants`, `summary().balance_sum == 0`) checked after every single command.

use ledger::limits::{
    AMOUNT_MAX, BALANCE_MAX, BATCH_MAX, FEE_BANDS_MAX, TEXT_BYTES_MAX, TIMEOUT_S_MAX,
};
use ledger::*;

const C1: &str = "+254700000001";
const C2: &str = "+254700000002";
const C3: &str = "+254700000003";
const M1: &str = "+254711000001";
const A1: &str = "+254722000001";
const USD1: &str = "+12025550123";
const NOBODY: &str = "+254799999999";
const T0: u64 = 1_795_640_645_000;

fn kes() -> Currency {
    Currency::parse("KES").expect("valid currency")
}

fn acc(text: &str) -> AccountId {
    AccountId::parse(text).expect("valid account id")
}

fn tid(text: &str) -> TransferId {
    TransferId::parse(text).expect("valid transfer id")
}

fn req(id: &str, kind: TransferKind, from: &str, to: &str, amount: u64) -> TransferRequest {
    TransferRequest {
        id: tid(id),
        kind,
        from: acc(from),
        to: acc(to),
        amount,
        currency: kes(),
        memo: String::new(),
        pending: false,
        timeout_s: 300,
    }
}

fn pending(
    id: &str,
    kind: TransferKind,
    from: &str,
    to: &str,
    amount: u64,
    timeout_s: u64,
) -> TransferRequest {
    TransferRequest {
        pending: true,
        timeout_s,
        ..req(id, kind, from, to, amount)
    }
}

fn reversal(id: &str, original: &str) -> ReversalRequest {
    ReversalRequest {
        id: tid(id),
        original: tid(original),
        reason: "customer complaint".to_string(),
    }
}

fn accepted(outcome: TransferOutcome) -> Accepted {
    match outcome {
        TransferOutcome::Accepted(accepted) => accepted,
        other => panic!("expected Accepted, got {other:?}"),
    }
}

fn rejected(id: &str, code: Code) -> TransferOutcome {
    TransferOutcome::Rejected {
        id: tid(id),
        code,
        log_index: 0,
        log_pos: 0,
    }
}

/// A rejection recorded at position `log_pos` of log entry 0 (an item of a batch).
fn rejected_at(id: &str, code: Code, log_pos: u32) -> TransferOutcome {
    TransferOutcome::Rejected {
        id: tid(id),
        code,
        log_index: 0,
        log_pos,
    }
}

fn refused(id: &str, code: Code) -> TransferOutcome {
    TransferOutcome::Refused { id: tid(id), code }
}

fn bands(list: &[(u64, u64, u64)]) -> Vec<FeeBand> {
    list.iter()
        .map(|&(min, max, fee)| FeeBand { min, max, fee })
        .collect()
}

/// A ledger plus a clock; every command goes through `apply`, which checks the invariants.
struct World {
    ledger: Ledger,
    now: u64,
}

impl World {
    fn new() -> World {
        let world = World {
            ledger: Ledger::new(kes()),
            now: T0,
        };
        world.check();
        world
    }

    /// A ledger with customers C1..C3, merchant M1, agent A1 and a USD customer.
    fn populated() -> World {
        let mut world = World::new();
        for (id, kind) in [
            (C1, AccountKind::Customer),
            (C2, AccountKind::Customer),
            (C3, AccountKind::Customer),
            (M1, AccountKind::Merchant),
            (A1, AccountKind::Agent),
        ] {
            world.open(id, kind).expect("fresh account");
        }
        let usd = NewAccount {
            id: acc(USD1),
            kind: AccountKind::Customer,
            name: "usd".into(),
            currency: Currency::parse("USD").expect("valid"),
        };
        world.apply(Command::CreateAccount(usd));
        world
    }

    /// The kind `populated` gives each of its accounts.
    fn new_kind_of(id: &str) -> AccountKind {
        match id {
            M1 => AccountKind::Merchant,
            A1 => AccountKind::Agent,
            _ => AccountKind::Customer,
        }
    }

    fn check(&self) {
        self.ledger.check_invariants();
        assert_eq!(self.ledger.summary().balance_sum, 0);
    }

    fn apply(&mut self, command: Command) -> Outcome {
        let outcome = self.ledger.apply(&command, self.now);
        self.check();
        outcome
    }

    fn apply_at(&mut self, at_ms: u64, command: Command) -> Outcome {
        self.now = at_ms;
        self.apply(command)
    }

    fn open(&mut self, id: &str, kind: AccountKind) -> Result<AccountView, Code> {
        let new = NewAccount {
            id: acc(id),
            kind,
            name: format!("{} {id}", kind.as_str()),
            currency: kes(),
        };
        match self.apply(Command::CreateAccount(new)) {
            Outcome::Account(result) => result,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn transfer(&mut self, request: &TransferRequest) -> TransferOutcome {
        match self.apply(Command::Transfer(request.clone())) {
            Outcome::Transfer(outcome) => outcome,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn reverse(&mut self, request: &ReversalRequest) -> TransferOutcome {
        match self.apply(Command::Reverse(request.clone())) {
            Outcome::Transfer(outcome) => outcome,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn post(&mut self, id: &str) -> Result<TransferView, Code> {
        match self.apply(Command::Post(tid(id))) {
            Outcome::Record(result) => result,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn void(&mut self, id: &str) -> Result<TransferView, Code> {
        match self.apply(Command::Void(tid(id))) {
            Outcome::Record(result) => result,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn expire_at(&mut self, at_ms: u64) -> u32 {
        match self.apply_at(at_ms, Command::ExpirePending) {
            Outcome::Expired { voided } => voided,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn status(&mut self, command: Command) -> Result<(), Code> {
        match self.apply(command) {
            Outcome::Status(result) => result,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn issue(&mut self, id: &str, to: &str, amount: u64) -> Accepted {
        accepted(self.transfer(&req(id, TransferKind::Issue, "float", to, amount)))
    }

    fn set_fees(&mut self, kind: TransferKind, list: &[(u64, u64, u64)]) {
        let mut tariff = Tariff::default();
        tariff.fees.insert(kind, bands(list));
        assert_eq!(self.status(Command::SetTariff(tariff)), Ok(()));
    }

    fn account(&self, id: &str) -> &Account {
        self.ledger.account(&acc(id)).expect("account exists")
    }

    fn balance(&self, id: &str) -> i64 {
        self.account(id).balance
    }

    fn available(&self, id: &str) -> i64 {
        self.account(id).available()
    }

    fn view(&self, id: &str) -> TransferView {
        TransferView::of(self.ledger.transfer(&tid(id)).expect("transfer recorded"))
    }
}

// --- accounts -------------------------------------------------------------------------------

#[test]
fn new_ledger_holds_float_and_fees() {
    // Goal: a fresh ledger has exactly the two empty, active system accounts.
    let world = World::new();
    let ids: Vec<&str> = world.ledger.accounts().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, vec!["fees", "float"]);
    for id in ["float", "fees"] {
        let account = world.account(id);
        assert_eq!(account.kind, AccountKind::System);
        assert_eq!(account.status, AccountStatus::Active);
        assert_eq!(
            (account.balance, account.pending_out, account.pending_in),
            (0, 0, 0)
        );
        assert_eq!(account.currency, kes());
    }
    assert_eq!(world.ledger.currency(), kes());
    assert_eq!(world.ledger.tariff(), &Tariff::default());
    assert_eq!(world.ledger.next_expiry_ms(), None);
    let summary = world.ledger.summary();
    assert_eq!(
        summary,
        Summary {
            accounts: 2,
            transfers: 0,
            pending: 0,
            balance_sum: 0,
            float_balance: 0,
            fees_balance: 0,
            sagas_running: 0,
            legs_held: 0,
        }
    );
}

#[test]
fn create_account_returns_its_view() {
    // Goal: creating an account stores it active and empty, and answers its view.
    let mut world = World::new();
    world.now = T0 + 5;
    let view = world.open(C1, AccountKind::Customer).unwrap();
    assert_eq!(view.id, acc(C1));
    assert_eq!(view.kind, AccountKind::Customer);
    assert_eq!(view.status, AccountStatus::Active);
    assert_eq!(
        (
            view.balance,
            view.available,
            view.pending_out,
            view.pending_in
        ),
        (0, 0, 0, 0)
    );
    let account = world.account(C1);
    assert_eq!(account.created_at_ms, T0 + 5);
    assert_eq!(AccountView::of(account), view);
    assert_eq!(world.ledger.summary().accounts, 3);
}

#[test]
fn duplicate_account_is_refused() {
    // Goal: a second create under an existing id, or under a system name, answers AccountExists.
    let mut world = World::new();
    world.open(C1, AccountKind::Customer).unwrap();
    let before = world.ledger.clone();
    assert_eq!(
        world.open(C1, AccountKind::Merchant),
        Err(Code::AccountExists)
    );
    assert_eq!(
        world.open("float", AccountKind::Customer),
        Err(Code::AccountExists)
    );
    assert_eq!(
        world.open("fees", AccountKind::Agent),
        Err(Code::AccountExists)
    );
    assert_eq!(world.ledger, before, "refused creates change nothing");
    assert_eq!(world.account(C1).kind, AccountKind::Customer);
}

#[test]
fn system_kind_and_long_names_are_refused() {
    // Goal: clients cannot create system accounts or names above TEXT_BYTES_MAX.
    let mut world = World::new();
    assert_eq!(
        world.open(C1, AccountKind::System),
        Err(Code::InvalidRequest)
    );
    let long = NewAccount {
        id: acc(C2),
        kind: AccountKind::Customer,
        name: "n".repeat(TEXT_BYTES_MAX + 1),
        currency: kes(),
    };
    assert_eq!(
        world.apply(Command::CreateAccount(long)),
        Outcome::Account(Err(Code::InvalidRequest))
    );
    let edge = NewAccount {
        id: acc(C2),
        kind: AccountKind::Customer,
        name: "n".repeat(TEXT_BYTES_MAX),
        currency: kes(),
    };
    assert!(matches!(
        world.apply(Command::CreateAccount(edge)),
        Outcome::Account(Ok(_))
    ));
    assert!(world.ledger.account(&acc(C1)).is_none());
}

// --- the transfer kinds ---------------------------------------------------------------------

#[test]
fn issue_takes_float_below_zero() {
    // Goal: issuing e-money debits the float (which may go negative) and credits the customer.
    let mut world = World::populated();
    let answer = world.issue("i1", C1, 5_000);
    assert_eq!(
        answer,
        Accepted {
            id: tid("i1"),
            status: TransferStatus::Completed,
            amount: 5_000,
            fee: 0,
            from_balance: -5_000,
            to_balance: 5_000,
            daily_room: None,
            log_index: 0,
            log_pos: 0,
        }
    );
    assert_eq!(world.balance("float"), -5_000);
    assert_eq!(world.balance(C1), 5_000);
    let summary = world.ledger.summary();
    assert_eq!(
        (
            summary.balance_sum,
            summary.float_balance,
            summary.transfers
        ),
        (0, -5_000, 1)
    );
    let view = world.view("i1");
    assert_eq!(
        (view.kind, view.status, view.code),
        (TransferKind::Issue, TransferStatus::Completed, None)
    );
    // Issue may also fund merchants and agents.
    world.issue("i2", M1, 1);
    world.issue("i3", A1, 1);
    assert_eq!(world.balance("float"), -5_002);
}

#[test]
fn p2p_moves_money_between_customers() {
    // Goal: p2p debits the payer, credits the payee and answers both balances.
    let mut world = World::populated();
    world.issue("i1", C1, 1_000);
    let answer = accepted(world.transfer(&req("p1", TransferKind::P2p, C1, C2, 300)));
    assert_eq!(
        (answer.status, answer.amount, answer.fee),
        (TransferStatus::Completed, 300, 0)
    );
    assert_eq!((answer.from_balance, answer.to_balance), (700, 300));
    assert_eq!((world.balance(C1), world.balance(C2)), (700, 300));
}

#[test]
fn merchant_payment_moves_money_to_merchant() {
    // Goal: merchant_payment goes from a customer to a merchant.
    let mut world = World::populated();
    world.issue("i1", C1, 1_000);
    let answer = accepted(world.transfer(&req("m1", TransferKind::MerchantPayment, C1, M1, 250)));
    assert_eq!((answer.from_balance, answer.to_balance), (750, 250));
    assert_eq!(world.view("m1").kind, TransferKind::MerchantPayment);
}

#[test]
fn bill_payment_moves_money_to_merchant() {
    // Goal: bill_payment goes from a customer to a merchant (the biller).
    let mut world = World::populated();
    world.issue("i1", C1, 1_000);
    let answer = accepted(world.transfer(&req("b1", TransferKind::BillPayment, C1, M1, 1_000)));
    assert_eq!((answer.from_balance, answer.to_balance), (0, 1_000));
}

#[test]
fn cash_in_goes_from_agent_to_customer() {
    // Goal: cash_in spends the agent's e-money into a customer's wallet.
    let mut world = World::populated();
    world.issue("i1", A1, 10_000);
    let answer = accepted(world.transfer(&req("ci", TransferKind::CashIn, A1, C1, 4_000)));
    assert_eq!((answer.from_balance, answer.to_balance), (6_000, 4_000));
}

#[test]
fn cash_out_goes_from_customer_to_agent() {
    // Goal: cash_out hands a customer's e-money to the agent who pays out cash.
    let mut world = World::populated();
    world.issue("i1", C1, 10_000);
    let answer = accepted(world.transfer(&req("co", TransferKind::CashOut, C1, A1, 2_500)));
    assert_eq!((answer.from_balance, answer.to_balance), (7_500, 2_500));
}

#[test]
fn redeem_returns_money_to_float() {
    // Goal: redeem hands e-money back to the float, from any non-float account including fees.
    let mut world = World::populated();
    world.issue("i1", M1, 10_000);
    let answer = accepted(world.transfer(&req("r1", TransferKind::Redeem, M1, "float", 4_000)));
    assert_eq!((answer.from_balance, answer.to_balance), (6_000, -6_000));
    // Collect a fee, then redeem it from the fees account.
    world.issue("i2", C1, 1_000);
    world.set_fees(TransferKind::P2p, &[(1, 1_000, 10)]);
    world.transfer(&req("p1", TransferKind::P2p, C1, C2, 100));
    assert_eq!(world.balance("fees"), 10);
    accepted(world.transfer(&req("r2", TransferKind::Redeem, "fees", "float", 10)));
    assert_eq!(world.balance("fees"), 0);
    // The float cannot redeem to itself (and float -> float is refused as same account first).
    assert_eq!(
        world.transfer(&req("r3", TransferKind::Redeem, "float", "float", 1)),
        refused("r3", Code::SameAccount)
    );
}

#[test]
fn kind_rules_table() {
    // Goal: each kind connects only the account kinds it is for; the rest are KindNotAllowed.
    use TransferKind::*;
    // The table, by role of payer and payee.
    let allowed: &[(TransferKind, &str, &str)] = &[
        (P2p, "customer", "customer"),
        (MerchantPayment, "customer", "merchant"),
        (BillPayment, "customer", "merchant"),
        (CashIn, "agent", "customer"),
        (CashOut, "customer", "agent"),
        (Issue, "float", "customer"),
        (Issue, "float", "merchant"),
        (Issue, "float", "agent"),
        (Redeem, "customer", "float"),
        (Redeem, "merchant", "float"),
        (Redeem, "agent", "float"),
        (Redeem, "fees", "float"),
    ];
    let role = |id: &str| match id {
        "float" | "fees" => id.to_string(),
        _ => World::new_kind_of(id).as_str().to_string(),
    };
    let everyone = ["float", "fees", C1, C2, M1, A1];
    let mut world = World::populated();
    // Put 100 into the fees account through a fee band that the 50-unit probes never hit.
    world.set_fees(P2p, &[(1, 10, 100)]);
    world.issue("seed", C3, 101);
    accepted(world.transfer(&req("seed-fee", P2p, C3, C2, 1)));
    assert_eq!(world.balance("fees"), 100);
    let mut n = 0;
    for kind in TransferKind::CLIENT_KINDS {
        for from in everyone {
            for to in everyone {
                if from == to {
                    continue;
                }
                // Fund the payer so that only the kind rule can say no.
                let mut probe = world.ledger.clone();
                if from != "float" && from != "fees" {
                    let fund = req("fund", Issue, "float", from, 100);
                    let funded = probe.apply(&Command::Transfer(fund), T0);
                    assert!(matches!(
                        funded,
                        Outcome::Transfer(TransferOutcome::Accepted(_))
                    ));
                }
                n += 1;
                let id = format!("k{n}");
                let outcome = probe.apply(&Command::Transfer(req(&id, kind, from, to, 50)), T0);
                probe.check_invariants();
                let Outcome::Transfer(outcome) = outcome else {
                    panic!("transfer answers a transfer")
                };
                if allowed.contains(&(kind, role(from).as_str(), role(to).as_str())) {
                    assert!(
                        matches!(outcome, TransferOutcome::Accepted(_)),
                        "{kind:?} {from}->{to}: {outcome:?}"
                    );
                } else {
                    assert_eq!(
                        outcome,
                        rejected(&id, Code::KindNotAllowed),
                        "{kind:?} {from}->{to}"
                    );
                }
            }
        }
    }
    assert_eq!(n, 7 * 30);
    // A rejection is recorded: the transfer view says rejected with the code.
    let answer = world.transfer(&req("bad", P2p, C1, M1, 1));
    assert_eq!(answer, rejected("bad", Code::KindNotAllowed));
    let view = world.view("bad");
    assert_eq!(
        (view.status, view.code, view.fee),
        (TransferStatus::Rejected, Some(Code::KindNotAllowed), 0)
    );
    assert_eq!(
        world.ledger.transfer(&tid("bad")).unwrap().status,
        TransferStatus::Rejected
    );
}

// --- rejections and refusals ----------------------------------------------------------------

#[test]
fn insufficient_funds_is_recorded_and_replayed() {
    // Goal: an overdraft is rejected and recorded; a retry replays the rejection even once funded.
    let mut world = World::populated();
    world.issue("i1", C1, 100);
    let request = req("p1", TransferKind::P2p, C1, C2, 101);
    assert_eq!(
        world.transfer(&request),
        rejected("p1", Code::InsufficientFunds)
    );
    let view = world.view("p1");
    assert_eq!(
        (view.status, view.code),
        (TransferStatus::Rejected, Some(Code::InsufficientFunds))
    );
    assert_eq!((world.balance(C1), world.balance(C2)), (100, 0));
    world.issue("i2", C1, 1_000);
    let before = world.ledger.clone();
    assert_eq!(
        world.transfer(&request),
        rejected("p1", Code::InsufficientFunds),
        "retry replays the first answer"
    );
    assert_eq!(world.ledger, before);
    // A new id with the same body goes through now.
    accepted(world.transfer(&TransferRequest {
        id: tid("p2"),
        ..request
    }));
    assert_eq!(world.balance(C2), 101);
    // Exactly the balance is fine.
    accepted(world.transfer(&req("p3", TransferKind::P2p, C1, C2, 999)));
    assert_eq!(world.balance(C1), 0);
}

#[test]
fn unknown_accounts_are_rejected() {
    // Goal: a transfer naming an account that does not exist is rejected (and recorded).
    let mut world = World::populated();
    world.issue("i1", C1, 100);
    assert_eq!(
        world.transfer(&req("x1", TransferKind::P2p, C1, NOBODY, 1)),
        rejected("x1", Code::AccountNotFound)
    );
    assert_eq!(
        world.transfer(&req("x2", TransferKind::P2p, NOBODY, C1, 1)),
        rejected("x2", Code::AccountNotFound)
    );
    assert_eq!(world.view("x1").status, TransferStatus::Rejected);
    assert_eq!(world.view("x2").code, Some(Code::AccountNotFound));
    assert_eq!(world.balance(C1), 100);
}

#[test]
fn frozen_and_closed_accounts() {
    // Goal: SetAccountStatus freezes/closes accounts, which then cannot pay or be paid.
    let mut world = World::populated();
    world.issue("i1", C1, 1_000);
    let freeze = |id: &str, status| Command::SetAccountStatus {
        id: acc(id),
        status,
    };
    assert_eq!(world.status(freeze(C1, AccountStatus::Frozen)), Ok(()));
    assert_eq!(world.account(C1).status, AccountStatus::Frozen);
    assert_eq!(
        world.transfer(&req("f1", TransferKind::P2p, C1, C2, 1)),
        rejected("f1", Code::AccountFrozen)
    );
    assert_eq!(
        world.transfer(&req("f2", TransferKind::P2p, C2, C1, 1)),
        rejected("f2", Code::AccountFrozen)
    );
    assert_eq!(
        world.transfer(&req("f3", TransferKind::Issue, "float", C1, 1)),
        rejected("f3", Code::AccountFrozen)
    );
    assert_eq!(world.balance(C1), 1_000);
    // Thawing restores service.
    assert_eq!(world.status(freeze(C1, AccountStatus::Active)), Ok(()));
    accepted(world.transfer(&req("f4", TransferKind::P2p, C1, C2, 1)));
    // Closed accounts answer AccountClosed.
    assert_eq!(world.status(freeze(C2, AccountStatus::Closed)), Ok(()));
    assert_eq!(
        world.transfer(&req("f5", TransferKind::P2p, C1, C2, 1)),
        rejected("f5", Code::AccountClosed)
    );
    // The status of system accounts cannot change; unknown accounts are not found.
    assert_eq!(
        world.status(freeze("float", AccountStatus::Frozen)),
        Err(Code::KindNotAllowed)
    );
    assert_eq!(
        world.status(freeze("fees", AccountStatus::Closed)),
        Err(Code::KindNotAllowed)
    );
    assert_eq!(
        world.status(freeze(NOBODY, AccountStatus::Frozen)),
        Err(Code::AccountNotFound)
    );
    assert_eq!(world.account("float").status, AccountStatus::Active);
}

#[test]
fn currency_mismatch_is_rejected() {
    // Goal: the request currency must match both accounts' currencies.
    let mut world = World::populated();
    world.issue("i1", C1, 1_000);
    assert_eq!(
        world.transfer(&req("c1", TransferKind::P2p, C1, USD1, 10)),
        rejected("c1", Code::CurrencyMismatch)
    );
    let usd = TransferRequest {
        currency: Currency::parse("USD").unwrap(),
        ..req("c2", TransferKind::P2p, C1, C2, 10)
    };
    assert_eq!(world.transfer(&usd), rejected("c2", Code::CurrencyMismatch));
    assert_eq!(world.view("c1").code, Some(Code::CurrencyMismatch));
    assert_eq!((world.balance(C1), world.balance(USD1)), (1_000, 0));
}

#[test]
fn same_account_is_refused_and_not_recorded() {
    // Goal: from == to is refused without a record, so the id stays free.
    let mut world = World::populated();
    world.issue("i1", C1, 100);
    let before = world.ledger.clone();
    assert_eq!(
        world.transfer(&req("s1", TransferKind::P2p, C1, C1, 10)),
        refused("s1", Code::SameAccount)
    );
    assert!(world.ledger.transfer(&tid("s1")).is_none());
    assert_eq!(world.ledger, before);
    accepted(world.transfer(&req("s1", TransferKind::P2p, C1, C2, 10)));
}

#[test]
fn malformed_requests_are_refused_and_not_recorded() {
    // Goal: shape errors (amount, timeout, reversal kind, memo length) are refused, not recorded.
    let mut world = World::populated();
    world.issue("i1", C1, 100);
    let base = req("bad", TransferKind::P2p, C1, C2, 10);
    let bad = [
        TransferRequest {
            amount: 0,
            ..base.clone()
        },
        TransferRequest {
            amount: AMOUNT_MAX + 1,
            ..base.clone()
        },
        TransferRequest {
            timeout_s: 0,
            ..base.clone()
        },
        TransferRequest {
            timeout_s: TIMEOUT_S_MAX + 1,
            ..base.clone()
        },
        TransferRequest {
            kind: TransferKind::Reversal,
            ..base.clone()
        },
        TransferRequest {
            memo: "m".repeat(TEXT_BYTES_MAX + 1),
            ..base.clone()
        },
    ];
    let before = world.ledger.clone();
    for request in &bad {
        assert_eq!(
            world.transfer(request),
            refused("bad", Code::InvalidRequest),
            "{request:?}"
        );
    }
    assert_eq!(world.ledger, before);
    assert!(world.ledger.transfer(&tid("bad")).is_none());
    let edge = TransferRequest {
        memo: "m".repeat(TEXT_BYTES_MAX),
        timeout_s: TIMEOUT_S_MAX,
        ..base
    };
    accepted(world.transfer(&edge));
}

// --- idempotency ----------------------------------------------------------------------------

#[test]
fn retry_with_same_request_has_no_second_effect() {
    // Goal: the same id and the same request answer identically and move money once.
    let mut world = World::populated();
    world.issue("i1", C1, 1_000);
    let request = req("p1", TransferKind::P2p, C1, C2, 300);
    let first = world.transfer(&request);
    let after_first = world.ledger.clone();
    world.now += 60_000;
    let second = world.transfer(&request);
    assert_eq!(first, second);
    assert_eq!(world.ledger, after_first, "a retry changes nothing");
    assert_eq!((world.balance(C1), world.balance(C2)), (700, 300));
    // The answer is replayed verbatim even after later transfers changed the balances.
    world.issue("i2", C1, 50);
    assert_eq!(world.transfer(&request), first);
}

#[test]
fn same_id_with_different_request_is_an_id_conflict() {
    // Goal: reusing an id for a different body is refused and changes nothing.
    let mut world = World::populated();
    world.issue("i1", C1, 1_000);
    let request = req("p1", TransferKind::P2p, C1, C2, 300);
    accepted(world.transfer(&request));
    let before = world.ledger.clone();
    let variants = [
        TransferRequest {
            amount: 301,
            ..request.clone()
        },
        TransferRequest {
            to: acc(C3),
            ..request.clone()
        },
        TransferRequest {
            memo: "other".into(),
            ..request.clone()
        },
        TransferRequest {
            pending: true,
            ..request.clone()
        },
        TransferRequest {
            kind: TransferKind::CashOut,
            to: acc(A1),
            ..request.clone()
        },
        // Even a malformed or same-account body under a used id is a conflict first.
        TransferRequest {
            to: acc(C1),
            ..request.clone()
        },
        req("i1", TransferKind::Issue, "float", C1, 999),
    ];
    for variant in &variants {
        let id = variant.id.as_str().to_string();
        assert_eq!(
            world.transfer(variant),
            refused(&id, Code::IdConflict),
            "{variant:?}"
        );
    }
    assert_eq!(world.ledger, before);
    // A rejected id is also taken.
    assert_eq!(
        world.transfer(&req("r1", TransferKind::P2p, C2, C1, 5_000)),
        rejected("r1", Code::InsufficientFunds)
    );
    assert_eq!(
        world.transfer(&req("r1", TransferKind::P2p, C2, C1, 6)),
        refused("r1", Code::IdConflict)
    );
    // A reversal cannot reuse a transfer's id either.
    assert_eq!(
        world.reverse(&reversal("p1", "i1")),
        refused("p1", Code::IdConflict)
    );
}

// --- tariff ---------------------------------------------------------------------------------

#[test]
fn fee_is_charged_on_top_and_credited_to_fees() {
    // Goal: with fee bands set, the payer pays amount + fee, the payee gets amount, fees gets fee.
    let mut world = World::populated();
    world.issue("i1", C1, 10_000);
    world.set_fees(
        TransferKind::P2p,
        &[(1, 100, 1), (101, 1_000, 10), (1_001, 5_000, 25)],
    );
    let answer = accepted(world.transfer(&req("p1", TransferKind::P2p, C1, C2, 500)));
    assert_eq!(
        (
            answer.amount,
            answer.fee,
            answer.from_balance,
            answer.to_balance
        ),
        (500, 10, 9_490, 500)
    );
    assert_eq!(world.balance("fees"), 10);
    assert_eq!(world.view("p1").fee, 10);
    assert_eq!(world.ledger.summary().fees_balance, 10);
    // Other kinds are free.
    let cash_out = accepted(world.transfer(&req("c1", TransferKind::CashOut, C1, A1, 500)));
    assert_eq!(cash_out.fee, 0);
    assert_eq!(world.balance("fees"), 10);
}

#[test]
fn fee_band_selection() {
    // Goal: the band containing the amount gives the fee (bounds inclusive); no band means 0.
    let mut world = World::populated();
    world.issue("i1", C1, 1_000_000);
    world.set_fees(
        TransferKind::P2p,
        &[(1_001, 5_000, 25), (1, 100, 1), (101, 1_000, 10)],
    );
    let cases = [
        (1, 1),
        (100, 1),
        (101, 10),
        (1_000, 10),
        (1_001, 25),
        (5_000, 25),
        (5_001, 0),
        (70_000, 0),
    ];
    for (n, (amount, fee)) in cases.into_iter().enumerate() {
        assert_eq!(world.ledger.tariff().fee(TransferKind::P2p, amount), fee);
        let fees_before = world.balance("fees");
        let payer_before = world.balance(C1);
        let answer =
            accepted(world.transfer(&req(&format!("p{n}"), TransferKind::P2p, C1, C2, amount)));
        assert_eq!(answer.fee, fee, "amount {amount}");
        assert_eq!(world.balance("fees") - fees_before, fee as i64);
        assert_eq!(payer_before - world.balance(C1), (amount + fee) as i64);
    }
}

#[test]
fn fee_counts_against_funds() {
    // Goal: the payer needs amount + fee; a rejected transfer charges no fee.
    let mut world = World::populated();
    world.issue("i1", C1, 100);
    world.set_fees(TransferKind::P2p, &[(1, 1_000, 5)]);
    assert_eq!(
        world.transfer(&req("p1", TransferKind::P2p, C1, C2, 96)),
        rejected("p1", Code::InsufficientFunds)
    );
    assert_eq!(world.view("p1").fee, 0);
    assert_eq!(world.balance("fees"), 0);
    let ok = accepted(world.transfer(&req("p2", TransferKind::P2p, C1, C2, 95)));
    assert_eq!((ok.from_balance, ok.to_balance), (0, 95));
    assert_eq!(world.balance("fees"), 5);
}

#[test]
fn invalid_tariffs_are_refused() {
    // Goal: overlapping, inverted or too many bands are refused and the old tariff stays.
    let mut world = World::populated();
    world.set_fees(TransferKind::P2p, &[(1, 100, 1)]);
    let good = world.ledger.tariff().clone();
    let mut overlap = Tariff::default();
    overlap
        .fees
        .insert(TransferKind::P2p, bands(&[(1, 100, 1), (100, 200, 2)]));
    let mut inverted = Tariff::default();
    inverted
        .fees
        .insert(TransferKind::P2p, bands(&[(10, 9, 1)]));
    let mut huge_fee = Tariff::default();
    huge_fee
        .fees
        .insert(TransferKind::P2p, bands(&[(1, 9, AMOUNT_MAX + 1)]));
    let mut many = Tariff::default();
    let too_many: Vec<(u64, u64, u64)> = (0..=FEE_BANDS_MAX as u64)
        .map(|i| (i * 10, i * 10 + 5, 1))
        .collect();
    many.fees.insert(TransferKind::P2p, bands(&too_many));
    for tariff in [overlap, inverted, huge_fee, many] {
        assert_eq!(
            world.status(Command::SetTariff(tariff)),
            Err(Code::InvalidRequest)
        );
        assert_eq!(world.ledger.tariff(), &good);
    }
    // Resetting to the default tariff removes fees.
    assert_eq!(world.status(Command::SetTariff(Tariff::default())), Ok(()));
    assert_eq!(world.ledger.tariff(), &Tariff::default());
}

#[test]
fn amount_max_limit() {
    // Goal: a per-kind amount_max rejects larger amounts with LimitExceeded, other kinds unaffected.
    let mut world = World::populated();
    world.issue("i1", C1, 100_000);
    let mut tariff = Tariff::default();
    tariff.amount_max.insert(TransferKind::P2p, 1_000);
    assert_eq!(world.status(Command::SetTariff(tariff)), Ok(()));
    accepted(world.transfer(&req("p1", TransferKind::P2p, C1, C2, 1_000)));
    assert_eq!(
        world.transfer(&req("p2", TransferKind::P2p, C1, C2, 1_001)),
        rejected("p2", Code::LimitExceeded)
    );
    assert_eq!(world.view("p2").status, TransferStatus::Rejected);
    accepted(world.transfer(&req("c1", TransferKind::CashOut, C1, A1, 5_000)));
    assert_eq!(world.balance(C2), 1_000);
}

#[test]
fn balance_bounds_are_enforced_on_client_transfers() {
    // Goal: the float cannot go below -BALANCE_MAX and no payee above BALANCE_MAX via transfers.
    let mut world = World::populated();
    let per = AMOUNT_MAX;
    let steps = (BALANCE_MAX as u64) / per;
    for n in 0..steps {
        world.issue(&format!("i{n}"), C1, per);
    }
    assert_eq!(world.balance("float"), -BALANCE_MAX);
    assert_eq!(world.balance(C1), BALANCE_MAX);
    assert_eq!(
        world.transfer(&req("over", TransferKind::Issue, "float", C2, 1)),
        rejected("over", Code::LimitExceeded)
    );
    // A pending issue counts against the float's floor as well.
    accepted(world.transfer(&req("r1", TransferKind::Redeem, C1, "float", 10)));
    accepted(world.transfer(&pending("h1", TransferKind::Issue, "float", C2, 4, 60)));
    assert_eq!(
        world.transfer(&req("over2", TransferKind::Issue, "float", C2, 7)),
        rejected("over2", Code::LimitExceeded)
    );
    world.void("h1").unwrap();
    world.issue("fill", C1, 10);
    assert_eq!(world.balance(C1), BALANCE_MAX);
}

// --- pending transfers ----------------------------------------------------------------------

#[test]
fn pending_hold_then_post() {
    // Goal: a pending transfer holds funds (pending_out/in, available) and post moves the money.
    let mut world = World::populated();
    world.issue("i1", C1, 1_000);
    let answer = accepted(world.transfer(&pending("h1", TransferKind::P2p, C1, C2, 400, 60)));
    assert_eq!(
        (answer.status, answer.from_balance, answer.to_balance),
        (TransferStatus::Pending, 1_000, 0)
    );
    let c1 = world.account(C1);
    assert_eq!(
        (c1.balance, c1.pending_out, c1.available()),
        (1_000, 400, 600)
    );
    let c2 = world.account(C2);
    assert_eq!((c2.balance, c2.pending_in, c2.available()), (0, 400, 0));
    let view = world.view("h1");
    assert_eq!(view.status, TransferStatus::Pending);
    assert_eq!(view.expires_at.as_deref(), Some("2026-11-25T21:05:05.000Z"));
    assert_eq!(world.ledger.summary().pending, 1);
    // The hold blocks spending beyond the available amount.
    assert_eq!(
        world.transfer(&req("p1", TransferKind::P2p, C1, C3, 601)),
        rejected("p1", Code::InsufficientFunds)
    );
    // The promised money is not spendable yet.
    assert_eq!(
        world.transfer(&req("p2", TransferKind::P2p, C2, C3, 1)),
        rejected("p2", Code::InsufficientFunds)
    );
    world.now += 1_000;
    let posted = world.post("h1").unwrap();
    assert_eq!(posted.status, TransferStatus::Completed);
    let c1 = world.account(C1);
    assert_eq!((c1.balance, c1.pending_out, c1.available()), (600, 0, 600));
    let c2 = world.account(C2);
    assert_eq!((c2.balance, c2.pending_in), (400, 0));
    assert_eq!(world.ledger.next_expiry_ms(), None);
    // Posting again is idempotent; voiding a completed transfer is not possible.
    let before = world.ledger.clone();
    assert_eq!(world.post("h1"), Ok(posted));
    assert_eq!(world.void("h1"), Err(Code::TransferNotPending));
    assert_eq!(world.ledger, before);
    // The retry of the original request replays the pending answer.
    assert_eq!(
        world.transfer(&pending("h1", TransferKind::P2p, C1, C2, 400, 60)),
        TransferOutcome::Accepted(answer)
    );
}

#[test]
fn pending_void_releases_the_hold() {
    // Goal: void releases the hold; post after void fails; void twice is idempotent.
    let mut world = World::populated();
    world.issue("i1", C1, 1_000);
    accepted(world.transfer(&pending(
        "h1",
        TransferKind::MerchantPayment,
        C1,
        M1,
        700,
        60,
    )));
    assert_eq!(world.available(C1), 300);
    let voided = world.void("h1").unwrap();
    assert_eq!(voided.status, TransferStatus::Voided);
    let c1 = world.account(C1);
    assert_eq!(
        (c1.balance, c1.pending_out, c1.available()),
        (1_000, 0, 1_000)
    );
    assert_eq!(world.account(M1).pending_in, 0);
    assert_eq!(world.post("h1"), Err(Code::TransferNotPending));
    let before = world.ledger.clone();
    assert_eq!(world.void("h1"), Ok(voided));
    assert_eq!(world.ledger, before);
    assert_eq!(world.balance(M1), 0);
    // Unknown ids and non-pending records.
    assert_eq!(world.post("nope"), Err(Code::TransferNotFound));
    assert_eq!(world.void("nope"), Err(Code::TransferNotFound));
    world.transfer(&req("rej", TransferKind::P2p, C1, M1, 1));
    assert_eq!(world.post("rej"), Err(Code::TransferNotPending));
    assert_eq!(world.void("rej"), Err(Code::TransferNotPending));
}

#[test]
fn pending_with_fee_holds_amount_plus_fee() {
    // Goal: the hold covers amount + fee; posting credits the fee, voiding charges nothing.
    let mut world = World::populated();
    world.issue("i1", C1, 1_000);
    world.set_fees(TransferKind::CashOut, &[(1, 10_000, 20)]);
    let answer = accepted(world.transfer(&pending("h1", TransferKind::CashOut, C1, A1, 500, 60)));
    assert_eq!(answer.fee, 20);
    assert_eq!(
        (world.account(C1).pending_out, world.account(A1).pending_in),
        (520, 500)
    );
    assert_eq!(world.available(C1), 480);
    accepted(world.transfer(&pending("h2", TransferKind::CashOut, C1, A1, 100, 60)));
    assert_eq!(world.available(C1), 360);
    world.post("h1").unwrap();
    assert_eq!(
        (world.balance(C1), world.balance(A1), world.balance("fees")),
        (480, 500, 20)
    );
    world.void("h2").unwrap();
    assert_eq!(
        (
            world.balance(C1),
            world.available(C1),
            world.balance("fees")
        ),
        (480, 480, 20)
    );
}

#[test]
fn pending_issue_from_float() {
    // Goal: the float can hold pending issues too; its available goes negative.
    let mut world = World::populated();
    accepted(world.transfer(&pending("h1", TransferKind::Issue, "float", C1, 500, 60)));
    assert_eq!(
        (world.balance("float"), world.available("float")),
        (0, -500)
    );
    assert_eq!(world.account(C1).pending_in, 500);
    world.post("h1").unwrap();
    assert_eq!((world.balance("float"), world.balance(C1)), (-500, 500));
}

#[test]
fn expire_pending_voids_due_transfers_exactly_once() {
    // Goal: ExpirePending voids transfers whose deadline (created + timeout) has come, once.
    let mut world = World::populated();
    world.issue("i1", C1, 1_000);
    accepted(world.transfer(&pending("h1", TransferKind::P2p, C1, C2, 100, 10)));
    world.now += 5;
    accepted(world.transfer(&pending("h2", TransferKind::P2p, C1, C2, 200, 20)));
    let d1 = T0 + 10_000;
    let d2 = T0 + 5 + 20_000;
    assert_eq!(
        world.ledger.transfer(&tid("h1")).unwrap().expires_at_ms,
        Some(d1)
    );
    assert_eq!(world.ledger.next_expiry_ms(), Some(d1));
    assert_eq!(world.expire_at(d1 - 1), 0);
    assert_eq!(world.view("h1").status, TransferStatus::Pending);
    assert_eq!(world.expire_at(d1), 1);
    assert_eq!(world.view("h1").status, TransferStatus::Voided);
    assert_eq!(world.available(C1), 800);
    assert_eq!(world.ledger.next_expiry_ms(), Some(d2));
    assert_eq!(
        world.expire_at(d1),
        0,
        "a second expiry at the same time voids nothing"
    );
    assert_eq!(world.expire_at(d2 + 1_000_000), 1);
    assert_eq!(world.expire_at(d2 + 1_000_000), 0);
    assert_eq!(world.ledger.next_expiry_ms(), None);
    let c1 = world.account(C1);
    assert_eq!(
        (c1.balance, c1.pending_out, c1.available()),
        (1_000, 0, 1_000)
    );
    assert_eq!(world.account(C2).pending_in, 0);
    // A voided-by-expiry transfer cannot be posted.
    assert_eq!(world.post("h2"), Err(Code::TransferNotPending));
}

#[test]
fn post_after_deadline_loses_to_expiry() {
    // Goal: a post arriving at or after the deadline voids the transfer and fails.
    let mut world = World::populated();
    world.issue("i1", C1, 1_000);
    accepted(world.transfer(&pending("h1", TransferKind::P2p, C1, C2, 100, 30)));
    accepted(world.transfer(&pending("h2", TransferKind::P2p, C1, C2, 100, 30)));
    world.now = T0 + 30_000 - 1;
    assert_eq!(
        world.post("h2").unwrap().status,
        TransferStatus::Completed,
        "just before the deadline posts"
    );
    world.now = T0 + 30_000;
    assert_eq!(world.post("h1"), Err(Code::TransferNotPending));
    assert_eq!(world.view("h1").status, TransferStatus::Voided);
    assert_eq!(
        (world.balance(C1), world.available(C1), world.balance(C2)),
        (900, 900, 100)
    );
    assert_eq!(world.ledger.next_expiry_ms(), None);
    assert_eq!(
        world.expire_at(T0 + 31_000),
        0,
        "expiry does not void it a second time"
    );
    assert_eq!(world.post("h1"), Err(Code::TransferNotPending));
}

// --- reversals ------------------------------------------------------------------------------

#[test]
fn reversal_moves_the_amount_back() {
    // Goal: a reversal is a new completed transfer linked both ways to the original.
    let mut world = World::populated();
    world.issue("i1", C1, 1_000);
    accepted(world.transfer(&req("m1", TransferKind::MerchantPayment, C1, M1, 400)));
    world.now += 1_000;
    let answer = accepted(world.reverse(&reversal("rv1", "m1")));
    assert_eq!(
        answer,
        Accepted {
            id: tid("rv1"),
            status: TransferStatus::Completed,
            amount: 400,
            fee: 0,
            from_balance: 0,
            to_balance: 1_000,
            daily_room: None,
            log_index: 0,
            log_pos: 0,
        }
    );
    let original = world.view("m1");
    assert_eq!(
        (original.status, original.reversed_by.clone()),
        (TransferStatus::Reversed, Some(tid("rv1")))
    );
    let back = world.view("rv1");
    assert_eq!(
        (back.kind, back.status),
        (TransferKind::Reversal, TransferStatus::Completed)
    );
    assert_eq!(
        (back.from.as_str(), back.to.as_str(), back.amount),
        (M1, C1, 400)
    );
    assert_eq!(back.reverses, Some(tid("m1")));
    // Posting a reversed transfer reports it; voiding is impossible.
    assert_eq!(
        world.post("m1").map(|v| v.status),
        Ok(TransferStatus::Reversed)
    );
    assert_eq!(world.void("m1"), Err(Code::TransferNotPending));
}

#[test]
fn reversal_rules() {
    // Goal: second reversal -> AlreadyReversed; same reversal retried -> same answer; others refused.
    let mut world = World::populated();
    world.issue("i1", C1, 1_000);
    accepted(world.transfer(&req("p1", TransferKind::P2p, C1, C2, 100)));
    let first = world.reverse(&reversal("rv1", "p1"));
    accepted(first.clone());
    let after = world.ledger.clone();
    assert_eq!(
        world.reverse(&reversal("rv1", "p1")),
        first,
        "a retry replays the answer"
    );
    assert_eq!(world.ledger, after);
    assert_eq!(
        world.reverse(&reversal("rv2", "p1")),
        refused("rv2", Code::AlreadyReversed)
    );
    let other_reason = ReversalRequest {
        reason: "other".into(),
        ..reversal("rv1", "p1")
    };
    assert_eq!(
        world.reverse(&other_reason),
        refused("rv1", Code::IdConflict)
    );
    assert_eq!(
        world.reverse(&reversal("rv3", "nope")),
        refused("rv3", Code::TransferNotFound)
    );
    assert_eq!(
        world.reverse(&reversal("rv4", "rv1")),
        refused("rv4", Code::NotReversible),
        "no reversal of a reversal"
    );
    // Rejected, pending and voided transfers are not reversible.
    world.transfer(&req("rej", TransferKind::P2p, C1, M1, 1));
    accepted(world.transfer(&pending("pen", TransferKind::P2p, C1, C2, 1, 60)));
    accepted(world.transfer(&pending("voi", TransferKind::P2p, C1, C2, 1, 60)));
    world.void("voi").unwrap();
    for (n, original) in ["rej", "pen", "voi"].into_iter().enumerate() {
        let id = format!("rn{n}");
        assert_eq!(
            world.reverse(&reversal(&id, original)),
            refused(&id, Code::NotReversible)
        );
        assert!(world.ledger.transfer(&tid(&id)).is_none());
    }
    let long = ReversalRequest {
        reason: "r".repeat(TEXT_BYTES_MAX + 1),
        ..reversal("rv5", "i1")
    };
    assert_eq!(world.reverse(&long), refused("rv5", Code::InvalidRequest));
    // A posted pending transfer is reversible.
    world.post("pen").unwrap();
    accepted(world.reverse(&reversal("rv6", "pen")));
    assert_eq!((world.balance(C1), world.balance(C2)), (1_000, 0));
}

#[test]
fn reversal_when_payee_spent_the_money() {
    // Goal: reversing money the payee no longer has is rejected and recorded; retry replays it.
    let mut world = World::populated();
    world.issue("i1", C1, 1_000);
    accepted(world.transfer(&req("p1", TransferKind::P2p, C1, C2, 500)));
    accepted(world.transfer(&req("p2", TransferKind::P2p, C2, C3, 450)));
    let answer = world.reverse(&reversal("rv1", "p1"));
    assert_eq!(answer, rejected("rv1", Code::InsufficientFunds));
    let view = world.view("rv1");
    assert_eq!(
        (view.status, view.code, view.kind),
        (
            TransferStatus::Rejected,
            Some(Code::InsufficientFunds),
            TransferKind::Reversal
        )
    );
    assert_eq!(world.view("p1").status, TransferStatus::Completed);
    assert_eq!((world.balance(C1), world.balance(C2)), (500, 50));
    // Money back at the payee does not change the recorded answer; a new reversal id works.
    accepted(world.transfer(&req("p3", TransferKind::P2p, C3, C2, 450)));
    assert_eq!(world.reverse(&reversal("rv1", "p1")), answer);
    accepted(world.reverse(&reversal("rv2", "p1")));
    assert_eq!((world.balance(C1), world.balance(C2)), (1_000, 0));
    // A hold also makes the money unavailable for a reversal.
    accepted(world.transfer(&req("p4", TransferKind::P2p, C1, C2, 100)));
    accepted(world.transfer(&pending("h1", TransferKind::P2p, C2, C3, 100, 60)));
    assert_eq!(
        world.reverse(&reversal("rv3", "p4")),
        rejected("rv3", Code::InsufficientFunds)
    );
}

#[test]
fn reversal_keeps_the_fee() {
    // Goal: a reversal returns the amount but not the fee, and charges no fee itself.
    let mut world = World::populated();
    world.issue("i1", C1, 1_000);
    let mut tariff = Tariff::default();
    tariff
        .fees
        .insert(TransferKind::P2p, bands(&[(1, 1_000, 10)]));
    tariff
        .fees
        .insert(TransferKind::Reversal, bands(&[(1, 1_000, 99)]));
    assert_eq!(world.status(Command::SetTariff(tariff)), Ok(()));
    accepted(world.transfer(&req("p1", TransferKind::P2p, C1, C2, 100)));
    let back = accepted(world.reverse(&reversal("rv1", "p1")));
    assert_eq!(back.fee, 0);
    assert_eq!(
        (world.balance(C1), world.balance(C2), world.balance("fees")),
        (990, 0, 10)
    );
}

#[test]
fn reversal_of_issue_and_redeem_with_the_float() {
    // Goal: reversals involving the float: an issue comes back to the float; a redeem is re-credited.
    let mut world = World::populated();
    world.issue("i1", C1, 1_000);
    accepted(world.reverse(&reversal("rv1", "i1")));
    assert_eq!((world.balance("float"), world.balance(C1)), (0, 0));
    world.issue("i2", C1, 1_000);
    accepted(world.transfer(&req("r1", TransferKind::Redeem, C1, "float", 600)));
    accepted(world.reverse(&reversal("rv2", "r1")));
    assert_eq!((world.balance("float"), world.balance(C1)), (-1_000, 1_000));
}

#[test]
fn reversal_from_frozen_account_allowed_but_not_from_closed() {
    // Goal: reversals ignore a frozen payer (operator action) but refuse a closed one.
    let mut world = World::populated();
    world.issue("i1", C1, 1_000);
    accepted(world.transfer(&req("m1", TransferKind::MerchantPayment, C1, M1, 100)));
    accepted(world.transfer(&req("m2", TransferKind::MerchantPayment, C1, M1, 100)));
    let set = |status| Command::SetAccountStatus {
        id: acc(M1),
        status,
    };
    world.status(set(AccountStatus::Frozen)).unwrap();
    accepted(world.reverse(&reversal("rv1", "m1")));
    world.status(set(AccountStatus::Closed)).unwrap();
    assert_eq!(
        world.reverse(&reversal("rv2", "m2")),
        rejected("rv2", Code::AccountClosed)
    );
    assert_eq!((world.balance(C1), world.balance(M1)), (900, 100));
}

/// BUG (ledger/src/state.rs, `Ledger::reverse`): a reversal moves money with no BALANCE_MAX
/// check on either side. `business_check` keeps the float at or above -BALANCE_MAX and every
/// payee at or below BALANCE_MAX, but reversing a *redeem* debits the float unchecked (and
/// credits the customer unchecked), so both bounds that `limits.rs` promises ("Largest absolute
/// balance an account may reach. Keeps every sum far from i64 overflow.") can be broken.
/// Repeating the pattern (redeem, re-issue up to the floor, reverse the redeems) pushes further
/// past the bounds that the "no sum in apply can overflow" argument in `limits.rs` relies on.
/// `check_invariants` does not check these bounds, so nothing notices.
/// Regression: `reverse` now applies the same bound checks as transfers.
#[test]
fn regression_reversal_of_redeem_keeps_balance_bounds() {
    // Goal: no sequence of commands takes any account's |balance| above BALANCE_MAX.
    let mut world = World::populated();
    let steps = (BALANCE_MAX as u64) / AMOUNT_MAX;
    for n in 0..steps {
        world.issue(&format!("i{n}"), C1, AMOUNT_MAX);
    }
    accepted(world.transfer(&req("r1", TransferKind::Redeem, C1, "float", AMOUNT_MAX)));
    world.issue("again", C1, AMOUNT_MAX);
    assert_eq!(
        (world.balance("float"), world.balance(C1)),
        (-BALANCE_MAX, BALANCE_MAX)
    );
    let outcome = world.reverse(&reversal("rv1", "r1"));
    for account in world.ledger.accounts() {
        assert!(
            account.balance.abs() <= BALANCE_MAX,
            "{} holds {} after reversal {outcome:?}; BALANCE_MAX is {BALANCE_MAX}",
            account.id,
            account.balance
        );
    }
}

// --- batches --------------------------------------------------------------------------------

#[test]
fn batch_answers_in_order_like_single_calls() {
    // Goal: a batch applies its transfers in order; each answer equals what a single call gives
    // at the same position of the log entry.
    let mut world = World::populated();
    world.issue("i1", C1, 1_000);
    world.set_fees(TransferKind::P2p, &[(1, 1_000, 3)]);
    let requests = vec![
        req("b1", TransferKind::P2p, C1, C2, 500),
        req("b2", TransferKind::P2p, C2, C3, 400),
        req("b3", TransferKind::P2p, C1, C1, 1),
        req("b4", TransferKind::P2p, C1, M1, 1),
        req("b5", TransferKind::P2p, C1, C2, 5_000),
        req("b1", TransferKind::P2p, C1, C2, 500),
        req("b1", TransferKind::P2p, C1, C2, 501),
        pending("b6", TransferKind::CashOut, C3, A1, 100, 60),
        req("i1", TransferKind::Issue, "float", C1, 1_000),
    ];
    let mut singles = world.ledger.clone();
    let expected: Vec<TransferOutcome> = requests
        .iter()
        .enumerate()
        .map(|(pos, r)| {
            let at = At {
                ms: world.now,
                log_index: 0,
                log_pos: u32::try_from(pos).expect("small"),
            };
            match singles.apply_at(&Command::Transfer(r.clone()), at) {
                Outcome::Transfer(outcome) => outcome,
                other => panic!("unexpected {other:?}"),
            }
        })
        .collect();
    let Outcome::Batch(results) = world.apply(Command::Batch(requests)) else {
        panic!("batch answers a batch")
    };
    assert_eq!(results, expected);
    assert_eq!(world.ledger, singles, "same state as single calls");
    assert!(matches!(results[0], TransferOutcome::Accepted(_)));
    assert!(
        matches!(results[1], TransferOutcome::Accepted(_)),
        "sees the effect of b1"
    );
    assert_eq!(results[2], refused("b3", Code::SameAccount));
    assert_eq!(results[3], rejected_at("b4", Code::KindNotAllowed, 3));
    assert_eq!(results[4], rejected_at("b5", Code::InsufficientFunds, 4));
    assert_eq!(results[5], results[0]);
    assert_eq!(results[6], refused("b1", Code::IdConflict));
    assert_eq!(accepted(results[7].clone()).status, TransferStatus::Pending);
    assert_eq!(world.balance(C1), 497);
}

#[test]
fn refused_requests_do_not_reserve_their_id() {
    // Goal: pin down that a refusal records nothing, so a retry can meet a later owner of the id.
    let mut world = World::populated();
    world.issue("i1", C1, 1_000);
    let bad = req("t1", TransferKind::P2p, C1, C1, 10);
    let good = req("t1", TransferKind::P2p, C1, C2, 10);
    let batch = Command::Batch(vec![bad.clone(), good.clone()]);
    let first = world.apply(batch.clone());
    assert_eq!(
        first,
        Outcome::Batch(vec![
            refused("t1", Code::SameAccount),
            world.transfer(&good)
        ])
    );
    let after = world.ledger.clone();
    // Retrying the very same batch: no effect, but the first element now meets t1's owner.
    let second = world.apply(batch);
    assert_eq!(world.ledger, after);
    let Outcome::Batch(second) = second else {
        panic!("a batch answers a batch")
    };
    assert_eq!(second[0], refused("t1", Code::IdConflict));
    assert_eq!(world.transfer(&bad), refused("t1", Code::IdConflict));
    assert_eq!(world.balance(C2), 10);
}

#[test]
fn oversized_and_empty_batches_do_nothing() {
    // Goal: more than BATCH_MAX requests answers an empty list and changes nothing; empty is fine.
    let mut world = World::populated();
    world.issue("i1", C1, 100_000);
    let before = world.ledger.clone();
    let requests: Vec<TransferRequest> = (0..=BATCH_MAX)
        .map(|n| req(&format!("b{n}"), TransferKind::P2p, C1, C2, 1))
        .collect();
    assert_eq!(
        world.apply(Command::Batch(requests)),
        Outcome::Batch(Vec::new())
    );
    assert_eq!(world.ledger, before);
    assert_eq!(
        world.apply(Command::Batch(Vec::new())),
        Outcome::Batch(Vec::new())
    );
    assert_eq!(world.ledger, before);
}

// --- statements, summary, snapshots ---------------------------------------------------------

#[test]
fn statement_newest_first_with_balances() {
    // Goal: statements list entries newest first, honour the limit and carry balance_after.
    let mut world = World::populated();
    world.set_fees(TransferKind::P2p, &[(1, 1_000, 2)]);
    world.issue("i1", C1, 1_000);
    world.now += 1_000;
    accepted(world.transfer(&req("p1", TransferKind::P2p, C1, C2, 100)));
    world.now += 1_000;
    accepted(world.transfer(&req("p2", TransferKind::P2p, C2, C1, 40)));
    let all = world.ledger.statement(&acc(C1), 10).unwrap();
    let ids: Vec<&str> = all.iter().map(|e| e.transfer_id.as_str()).collect();
    assert_eq!(ids, vec!["p2", "p1", "i1"]);
    assert_eq!(
        all.iter().map(|e| e.balance_after).collect::<Vec<_>>(),
        vec![938, 898, 1_000]
    );
    assert_eq!(
        all.iter().map(|e| e.direction).collect::<Vec<_>>(),
        vec![Direction::Credit, Direction::Debit, Direction::Credit]
    );
    let p1 = &all[1];
    assert_eq!(
        (p1.amount, p1.fee, p1.kind, p1.counterparty.as_str()),
        (100, 2, TransferKind::P2p, C2)
    );
    assert_eq!(p1.at, "2026-11-25T21:04:06.000Z");
    assert_eq!(
        world.ledger.statement(&acc(C1), 1).unwrap(),
        all[..1].to_vec()
    );
    assert_eq!(world.ledger.statement(&acc(C1), 0).unwrap(), Vec::new());
    assert_eq!(world.ledger.statement(&acc(NOBODY), 10), None);
    let fees = world.ledger.statement(&acc("fees"), 10).unwrap();
    assert_eq!(fees.len(), 2);
    assert_eq!(
        (
            fees[0].amount,
            fees[0].balance_after,
            fees[0].counterparty.as_str()
        ),
        (2, 4, C2)
    );
    // Holds write no statement line; posting does.
    accepted(world.transfer(&pending("h1", TransferKind::P2p, C1, C3, 10, 60)));
    assert_eq!(world.ledger.statement(&acc(C1), 10).unwrap().len(), 3);
    world.post("h1").unwrap();
    assert_eq!(
        world.ledger.statement(&acc(C1), 1).unwrap()[0].balance_after,
        926
    );
}

#[test]
fn summary_totals() {
    // Goal: the summary counts accounts, transfers and pending holds; balances sum to 0.
    let mut world = World::populated();
    world.set_fees(TransferKind::P2p, &[(1, 1_000, 1)]);
    world.issue("i1", C1, 1_000);
    world.transfer(&req("p1", TransferKind::P2p, C1, C2, 10));
    world.transfer(&req("x", TransferKind::P2p, C1, M1, 10));
    world.transfer(&pending("h1", TransferKind::P2p, C1, C2, 10, 60));
    world.transfer(&req("same", TransferKind::P2p, C1, C1, 10));
    assert_eq!(
        world.ledger.summary(),
        Summary {
            accounts: 8,
            transfers: 4,
            pending: 1,
            balance_sum: 0,
            float_balance: -1_000,
            fees_balance: 1,
            sagas_running: 0,
            legs_held: 0,
        }
    );
}

#[test]
fn snapshot_round_trip() {
    // Goal: a postcard snapshot of a busy ledger decodes to an equal ledger that behaves the same.
    let mut world = World::populated();
    world.set_fees(TransferKind::P2p, &[(1, 1_000, 1)]);
    world.issue("i1", C1, 1_000);
    world.transfer(&req("p1", TransferKind::P2p, C1, C2, 10));
    world.transfer(&req("x", TransferKind::P2p, C1, M1, 10));
    world.transfer(&pending("h1", TransferKind::P2p, C1, C2, 10, 60));
    world.reverse(&reversal("rv1", "p1"));
    world
        .status(Command::SetAccountStatus {
            id: acc(C3),
            status: AccountStatus::Frozen,
        })
        .unwrap();
    let bytes = postcard::to_allocvec(&world.ledger).unwrap();
    let mut restored: Ledger = postcard::from_bytes(&bytes).unwrap();
    restored.check_invariants();
    assert_eq!(restored, world.ledger);
    let command = Command::Post(tid("h1"));
    assert_eq!(restored.apply(&command, world.now), world.apply(command));
    assert_eq!(restored, world.ledger);
    assert_eq!(LEDGER_FORMAT_VERSION, 5);
}

#[test]
fn records_and_retries_keep_the_first_log_position() {
    // Goal: a transfer's answer and record say where in the log it was first applied (entry
    // and position in a batch entry); a retry applied later is told that first place.
    let mut world = World::populated();
    world.issue("i1", C1, 1_000);
    let at = |log_index, log_pos| At {
        ms: T0,
        log_index,
        log_pos,
    };
    let batch = Command::Batch(vec![
        req("b1", TransferKind::P2p, C1, C2, 10),
        req("b2", TransferKind::P2p, C1, C2, 5_000),
    ]);
    let Outcome::Batch(first) = world.ledger.apply_at(&batch, at(7, 0)) else {
        panic!("batch outcome")
    };
    assert!(
        matches!(&first[0], TransferOutcome::Accepted(a) if (a.log_index, a.log_pos) == (7, 0))
    );
    assert!(matches!(
        &first[1],
        TransferOutcome::Rejected {
            log_index: 7,
            log_pos: 1,
            ..
        }
    ));
    let retry = Command::Transfer(req("b2", TransferKind::P2p, C1, C2, 5_000));
    let Outcome::Transfer(again) = world.ledger.apply_at(&retry, at(9, 0)) else {
        panic!("transfer outcome")
    };
    assert_eq!(again, first[1]);
    let view = world.view("b1");
    assert_eq!((view.log_index, view.log_pos), (7, 0));
    world.ledger.check_invariants();
}

fn daily_tariff(kind: AccountKind, max: u64) -> Tariff {
    let mut tariff = Tariff::default();
    tariff.daily_out_max.insert(kind, max);
    tariff
}

#[test]
fn a_daily_limit_counts_amounts_and_fees_and_resets_at_the_cut_off() {
    // Goal: a customer's daily limit counts amount + fee of everything sent that business day;
    // the debit that would pass it is rejected LimitExceeded (recorded, nothing moves); each
    // answer tells the room left; the next day starts from 0; other kinds are not limited.
    let mut world = World::populated();
    world.issue("i1", C1, 100_000);
    world.set_fees(TransferKind::P2p, &[(1, 100_000, 10)]);
    let mut tariff = world.ledger.tariff().clone();
    tariff.daily_out_max.insert(AccountKind::Customer, 1_000);
    assert_eq!(world.status(Command::SetTariff(tariff)), Ok(()));
    let first = accepted(world.transfer(&req("p1", TransferKind::P2p, C1, C2, 590)));
    assert_eq!(first.daily_room, Some(400), "1000 - (590 + 10)");
    assert_eq!(
        world.transfer(&req("p2", TransferKind::P2p, C1, C2, 391)),
        rejected("p2", Code::LimitExceeded),
        "391 + 10 > 400"
    );
    assert_eq!(
        world.balance(C1),
        100_000 - 600,
        "the rejection moved nothing"
    );
    let second = accepted(world.transfer(&req("p3", TransferKind::P2p, C1, C2, 390)));
    assert_eq!(second.daily_room, Some(0));
    assert_eq!(
        world.transfer(&req("p4", TransferKind::CashOut, C1, A1, 1)),
        rejected("p4", Code::LimitExceeded),
        "the limit covers every kind the customer pays"
    );
    // The agent has no limit of its own kind.
    world.issue("i2", A1, 5_000);
    let agent = accepted(world.transfer(&req("a1", TransferKind::CashIn, A1, C3, 5_000)));
    assert_eq!(agent.daily_room, None);
    // Past midnight UTC (the default cut-off) the counter starts again.
    let next_day = (T0 / 86_400_000 + 1) * 86_400_000;
    world.now = next_day + 1;
    let third = accepted(world.transfer(&req("p5", TransferKind::P2p, C1, C2, 990)));
    assert_eq!(third.daily_room, Some(0));
    // A retry answers as recorded, counting nothing again.
    assert_eq!(
        world.transfer(&req("p5", TransferKind::P2p, C1, C2, 990)),
        TransferOutcome::Accepted(third)
    );
    assert_eq!(world.ledger.out_today(world.account(C1)), 1_000);
}

#[test]
fn a_hold_counts_in_the_day_and_a_void_gives_it_back() {
    // Goal: a pending transfer uses the day's room when it is held; its void (or expiry) gives
    // the room back on the same day; a post counts nothing more; a reversal neither counts nor
    // is refused by the limit.
    let mut world = World::populated();
    world.issue("i1", C1, 100_000);
    assert_eq!(
        world.status(Command::SetTariff(daily_tariff(
            AccountKind::Customer,
            1_000
        ))),
        Ok(())
    );
    let held = accepted(world.transfer(&pending("h1", TransferKind::P2p, C1, C2, 700, 60)));
    assert_eq!(held.daily_room, Some(300));
    assert_eq!(
        world.transfer(&req("p1", TransferKind::P2p, C1, C2, 301)),
        rejected("p1", Code::LimitExceeded)
    );
    world.void("h1").expect("pending");
    assert_eq!(
        world.ledger.out_today(world.account(C1)),
        0,
        "the void gave it back"
    );
    let held = accepted(world.transfer(&pending("h2", TransferKind::P2p, C1, C2, 600, 60)));
    assert_eq!(held.daily_room, Some(400));
    world.post("h2").expect("pending");
    assert_eq!(
        world.ledger.out_today(world.account(C1)),
        600,
        "a post counts nothing more"
    );
    let expiring = accepted(world.transfer(&pending("h3", TransferKind::P2p, C1, C2, 400, 5)));
    assert_eq!(expiring.daily_room, Some(0));
    assert_eq!(world.expire_at(world.now + 5_000), 1);
    assert_eq!(
        world.ledger.out_today(world.account(C1)),
        600,
        "the expiry gave it back"
    );
    // C2 (also a customer, room 1000) gives back the 600 by reversal: no count, no refusal.
    accepted(world.reverse(&reversal("rv1", "h2")));
    assert_eq!(world.ledger.out_today(world.account(C2)), 0);
    assert_eq!(world.ledger.out_today(world.account(C1)), 600);
}

#[test]
fn a_void_on_a_later_day_gives_nothing_back_to_the_new_day() {
    // Goal: a hold counted yesterday and voided today leaves today's counter alone (its count
    // belonged to a day that is closed), and today's room is whole.
    let mut world = World::populated();
    world.issue("i1", C1, 100_000);
    assert_eq!(
        world.status(Command::SetTariff(daily_tariff(
            AccountKind::Customer,
            1_000
        ))),
        Ok(())
    );
    let next_day = (T0 / 86_400_000 + 1) * 86_400_000;
    world.now = next_day - 1_000;
    accepted(world.transfer(&pending("h1", TransferKind::P2p, C1, C2, 800, 3_600)));
    world.now = next_day + 1;
    let today = accepted(world.transfer(&req("p1", TransferKind::P2p, C1, C2, 900)));
    assert_eq!(today.daily_room, Some(100));
    world.void("h1").expect("pending");
    assert_eq!(world.ledger.out_today(world.account(C1)), 900);
}

#[test]
fn a_tariff_cannot_limit_system_accounts() {
    // Goal: the float issues e-money without a cap: a daily limit for system accounts is refused.
    let mut world = World::populated();
    assert_eq!(
        world.status(Command::SetTariff(daily_tariff(AccountKind::System, 1_000))),
        Err(Code::InvalidRequest)
    );
    assert!(world.ledger.tariff().daily_out_max.is_empty());
}

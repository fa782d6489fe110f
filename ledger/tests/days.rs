//! Business days: the cut-off closes the open day at the first entry stamped at or past it,
//! once, with the day's totals; idle periods leave no close; a new schedule takes effect from
//! the next cut-off; replicas applying the same log close the same days.

use ledger::*;

/// 2026-11-26T00:00:00Z.
const MIDNIGHT: u64 = 1_795_651_200_000;
const HOUR: u64 = 3_600_000;

fn kes() -> Currency {
    Currency::parse("KES").expect("valid currency")
}

fn acc(text: &str) -> AccountId {
    AccountId::parse(text).expect("valid account id")
}

fn issue(id: &str, to: &str, amount: u64) -> Command {
    Command::Transfer(TransferRequest {
        id: TransferId::parse(id).expect("valid id"),
        kind: TransferKind::Issue,
        from: AccountId::float(),
        to: acc(to),
        amount,
        currency: kes(),
        memo: String::new(),
        pending: false,
        timeout_s: 60,
    })
}

fn ledger_with_customer() -> Ledger {
    let mut ledger = Ledger::new(kes());
    let new = NewAccount {
        id: acc("+254700000001"),
        kind: AccountKind::Customer,
        name: String::new(),
        currency: kes(),
    };
    ledger.apply(&Command::CreateAccount(new), MIDNIGHT + HOUR);
    ledger
}

#[test]
fn the_cut_off_closes_the_day_once_with_its_totals() {
    let mut ledger = ledger_with_customer();
    assert_eq!(ledger.next_cutoff_ms(), Some(MIDNIGHT + 24 * HOUR));
    ledger.apply(&issue("a", "+254700000001", 500), MIDNIGHT + 2 * HOUR);
    ledger.apply(&issue("b", "+254700000001", 700), MIDNIGHT + 3 * HOUR);
    assert!(ledger.closes().is_empty());
    assert_eq!((ledger.day().transfers, ledger.day().volume), (2, 1_200));
    // The timer's CloseDay, stamped just past midnight, closes the day.
    ledger.apply(&Command::CloseDay, MIDNIGHT + 24 * HOUR + 5);
    assert_eq!(ledger.closes().len(), 1);
    let close = &ledger.closes()[0];
    assert_eq!(
        (close.from_ms, close.until_ms, close.transfers, close.volume),
        (MIDNIGHT, MIDNIGHT + 24 * HOUR, 2, 1_200)
    );
    assert_eq!(close.float_balance, -1_200);
    assert_eq!(ledger.day().transfers, 0);
    assert_eq!(ledger.next_cutoff_ms(), Some(MIDNIGHT + 48 * HOUR));
    // A second CloseDay in the same day closes nothing more.
    ledger.apply(&Command::CloseDay, MIDNIGHT + 24 * HOUR + 9);
    assert_eq!(ledger.closes().len(), 1);
    ledger.check_invariants();
}

#[test]
fn idle_days_leave_no_close_and_a_transfer_carries_the_cut_off() {
    let mut ledger = ledger_with_customer();
    ledger.apply(&issue("a", "+254700000001", 100), MIDNIGHT + 2 * HOUR);
    // Three days later the next transfer closes the first day and opens its own.
    ledger.apply(&issue("b", "+254700000001", 300), MIDNIGHT + 74 * HOUR);
    assert_eq!(ledger.closes().len(), 1);
    assert_eq!(ledger.closes()[0].transfers, 1);
    assert_eq!(ledger.day().from_ms, MIDNIGHT + 72 * HOUR);
    assert_eq!(ledger.day().transfers, 1);
}

#[test]
fn a_new_schedule_applies_from_the_next_cut_off() {
    let mut ledger = ledger_with_customer();
    let schedule = Schedule {
        offset_ms: 20 * HOUR,
        period_ms: 24 * HOUR,
    };
    let set = ledger.apply(&Command::SetSchedule(schedule), MIDNIGHT + 2 * HOUR);
    assert_eq!(set, Outcome::Status(Ok(())));
    assert_eq!(ledger.next_cutoff_ms(), Some(MIDNIGHT + 20 * HOUR));
    ledger.apply(&Command::CloseDay, MIDNIGHT + 20 * HOUR);
    assert_eq!(ledger.closes().len(), 1);
    assert_eq!(ledger.next_cutoff_ms(), Some(MIDNIGHT + 44 * HOUR));
    let bad = Schedule {
        offset_ms: 5,
        period_ms: 1,
    };
    assert_eq!(
        ledger.apply(&Command::SetSchedule(bad), MIDNIGHT + 21 * HOUR),
        Outcome::Status(Err(Code::InvalidRequest))
    );
}

#[test]
fn replicas_close_the_same_days() {
    let commands: Vec<(Command, u64)> = (0..40u64)
        .map(|i| {
            (
                issue(&format!("t{i}"), "+254700000001", 10 + i),
                MIDNIGHT + HOUR + i * 7 * HOUR,
            )
        })
        .collect();
    let mut a = ledger_with_customer();
    let mut b = ledger_with_customer();
    for (command, at) in &commands {
        a.apply(command, *at);
        b.apply(command, *at);
    }
    assert_eq!(a.closes(), b.closes());
    assert_eq!(a.digest(), b.digest());
    let total: u64 = a.closes().iter().map(|c| c.transfers).sum::<u64>() + a.day().transfers;
    assert_eq!(total, 40, "every transfer counted in exactly one day");
}

//! Goal: an idle account — opened, never moved money, most of a large subscriber base at any
//! moment — stays small in a replica's memory: at most `OPENED_BYTES_MAX` as opened, and at
//! most `RELOADED_BYTES_MAX` once the ledger is read back from its snapshot encoding (what a
//! restarted node holds). Method: open `ACCOUNTS` accounts in a scattered order in a ledger of
//! its own process (this file holds one test, so nothing else allocates meanwhile) and read
//! the process's resident memory (`/proc/self/statm`) before and after; then encode it, decode
//! it beside it, and measure the copy the same way. Linux only.

mod common;

use ledger::{AccountKind, Command, Currency, Ledger, NewAccount, Outcome};

const ACCOUNTS: u64 = 200_000;
/// Bytes per idle account, as opened through `apply` (B-tree nodes are left partly empty by
/// inserts) and after a reload (nodes built full).
const OPENED_BYTES_MAX: u64 = 260;
const RELOADED_BYTES_MAX: u64 = 180;

use common::resident_bytes;

#[test]
fn an_idle_account_stays_small_as_opened_and_after_a_reload() {
    let currency = Currency::parse("KES").expect("currency");
    let before = resident_bytes();
    let mut ledger = Ledger::new(currency);
    for n in 0..ACCOUNTS {
        // A scattered order over the id space (7919 is prime to the modulus).
        let number = (n * 7919) % 100_000_000;
        let new = NewAccount {
            id: ledger::AccountId::parse(&format!("+2547{number:08}")).expect("id"),
            kind: AccountKind::Customer,
            name: format!("Subscriber {number}"),
            currency,
        };
        let outcome = ledger.apply(&Command::CreateAccount(new), 1);
        assert!(matches!(outcome, Outcome::Account(Ok(_))), "{outcome:?}");
    }
    let opened = resident_bytes().saturating_sub(before) / ACCOUNTS;

    let bytes = postcard::to_allocvec(&ledger).expect("encode");
    let encoded = resident_bytes();
    let decoding = std::time::Instant::now();
    let reloaded: Ledger = postcard::from_bytes(&bytes).expect("decode");
    // Printed for whoever looks, never asserted (speed is measured in benchmarks).
    println!("decoded in {:?}", decoding.elapsed());
    let read_back = resident_bytes().saturating_sub(encoded) / ACCOUNTS;
    println!("resident bytes per idle account: opened {opened}, reloaded {read_back}");
    assert_eq!(reloaded, ledger, "the reload is the same ledger");
    assert_eq!(reloaded.digest(), ledger.digest());
    assert!(
        opened <= OPENED_BYTES_MAX,
        "opened: {opened} bytes per idle account"
    );
    assert!(
        read_back <= RELOADED_BYTES_MAX,
        "reloaded: {read_back} bytes per idle account"
    );
}

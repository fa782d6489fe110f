//! Goal: a completed transfer costs a replica a bounded number of resident bytes (its record,
//! kept for idempotency, with its answer and origin; and a statement line on each side), since
//! every byte a busy node keeps is also a fresh page the kernel zeroes (bench/RESULTS.md,
//! session 10: a quarter of the CPU of a batch run). The bound is `TRANSFER_BYTES_MAX`.
//! Method: in a ledger of its own process (this file holds one test, so nothing else allocates
//! meanwhile) open and fund accounts, then read the resident memory (`/proc/self/statm`)
//! before and after `TRANSFERS` transfers with scattered ids. Linux only.

mod common;

use ledger::{
    AccountId, AccountKind, Command, Currency, Ledger, NewAccount, Outcome, TransferId,
    TransferKind, TransferOutcome, TransferRequest,
};

const ACCOUNTS: u64 = 1_000;
const TRANSFERS: u64 = 200_000;
/// Measured 818 bytes with the records boxed in the ledger's maps (session 11), 975 with them
/// inline, where every B-tree leaf holds eleven 376-byte records, left partly empty by inserts
/// at scattered keys. About a third of it is the two statement lines.
const TRANSFER_BYTES_MAX: u64 = 880;

use common::resident_bytes;

fn account_id(n: u64) -> AccountId {
    AccountId::parse(&format!("+2547{:08}", (n * 7919) % 100_000_000)).expect("id")
}

fn transfer(
    id: String,
    kind: TransferKind,
    from: AccountId,
    to: AccountId,
    amount: u64,
) -> Command {
    Command::Transfer(TransferRequest {
        id: TransferId::parse(&id).expect("id"),
        kind,
        from,
        to,
        amount,
        currency: Currency::parse("KES").expect("currency"),
        memo: String::new(),
        pending: false,
        timeout_s: 60,
    })
}

fn completed(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Transfer(TransferOutcome::Accepted(_)))
}

#[test]
fn a_completed_transfer_costs_a_replica_a_bounded_number_of_bytes() {
    let currency = Currency::parse("KES").expect("currency");
    let mut ledger = Ledger::new(currency);
    for n in 0..ACCOUNTS {
        let new = NewAccount {
            id: account_id(n),
            kind: AccountKind::Customer,
            name: format!("Subscriber {n}"),
            currency,
        };
        let outcome = ledger.apply(&Command::CreateAccount(new), 1);
        assert!(matches!(outcome, Outcome::Account(Ok(_))), "{outcome:?}");
        let issue = transfer(
            format!("issue-{n}"),
            TransferKind::Issue,
            AccountId::float(),
            account_id(n),
            1_000_000,
        );
        assert!(completed(&ledger.apply(&issue, 2)));
    }
    let before = resident_bytes();
    for n in 0..TRANSFERS {
        // Scattered ids (as clients' keys are) between scattered pairs of accounts.
        let id = format!("t-{:016x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let from = account_id(n % ACCOUNTS);
        let to = account_id((n * 7 + 1) % ACCOUNTS);
        let from_is_to = from == to;
        let outcome = ledger.apply(&transfer(id, TransferKind::P2p, from, to, 1), 3 + n);
        assert!(from_is_to || completed(&outcome), "{outcome:?}");
    }
    let per_transfer = resident_bytes().saturating_sub(before) / TRANSFERS;
    println!("resident bytes per completed transfer: {per_transfer}");
    assert!(
        per_transfer <= TRANSFER_BYTES_MAX,
        "{per_transfer} bytes per completed transfer"
    );
}

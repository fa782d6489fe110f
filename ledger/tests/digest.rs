//! Goal: the state digest tells replicas apart exactly when their states differ.
//! Method: two ledgers fed the same commands have equal digests; one more transfer, a hold, a
//! status change or a tariff change each move the digest; a snapshot round trip keeps it.

use ledger::{
    AccountId, AccountKind, AccountStatus, Command, Currency, FeeBand, Ledger, NewAccount, Tariff,
};
use ledger::{TransferId, TransferKind, TransferRequest};

fn account(id: &str) -> Command {
    let id = AccountId::parse(id).expect("valid");
    Command::CreateAccount(NewAccount {
        id,
        kind: AccountKind::Customer,
        name: "x".into(),
        currency: kes(),
    })
}

fn kes() -> Currency {
    Currency::parse("KES").expect("valid")
}

fn transfer(
    id: &str,
    kind: TransferKind,
    from: &str,
    to: &str,
    amount: u64,
    pending: bool,
) -> Command {
    Command::Transfer(TransferRequest {
        id: TransferId::parse(id).expect("valid"),
        kind,
        from: AccountId::parse(from).expect("valid"),
        to: AccountId::parse(to).expect("valid"),
        amount,
        currency: kes(),
        memo: String::new(),
        pending,
        timeout_s: 60,
    })
}

#[test]
fn digest_follows_the_state() {
    let commands = [
        account("+254700000001"),
        account("+254700000002"),
        transfer(
            "i1",
            TransferKind::Issue,
            "float",
            "+254700000001",
            1_000,
            false,
        ),
    ];
    let mut a = Ledger::new(kes());
    let mut b = Ledger::new(kes());
    for command in &commands {
        a.apply(command, 1);
        b.apply(command, 1);
    }
    assert_eq!(a.digest(), b.digest());
    let before = a.digest();

    a.apply(
        &transfer(
            "p1",
            TransferKind::P2p,
            "+254700000001",
            "+254700000002",
            10,
            false,
        ),
        2,
    );
    assert_ne!(a.digest(), before, "a posted transfer changes the digest");
    let posted = a.digest();
    a.apply(
        &transfer(
            "p2",
            TransferKind::P2p,
            "+254700000001",
            "+254700000002",
            10,
            true,
        ),
        3,
    );
    assert_ne!(a.digest(), posted, "a hold changes the digest");
    let held = a.digest();
    let id = AccountId::parse("+254700000002").expect("valid");
    a.apply(
        &Command::SetAccountStatus {
            id,
            status: AccountStatus::Frozen,
        },
        4,
    );
    assert_ne!(a.digest(), held, "a status change changes the digest");
    let frozen = a.digest();
    let mut tariff = Tariff::default();
    tariff.fees.insert(
        TransferKind::P2p,
        vec![FeeBand {
            min: 1,
            max: 100,
            fee: 1,
        }],
    );
    a.apply(&Command::SetTariff(tariff), 5);
    assert_ne!(a.digest(), frozen, "a tariff change changes the digest");

    let bytes = postcard::to_allocvec(&a).expect("encodes");
    let restored: Ledger = postcard::from_bytes(&bytes).expect("decodes");
    assert_eq!(restored.digest(), a.digest(), "a snapshot keeps the digest");
}

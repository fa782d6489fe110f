//! The ledger in isolation (`cargo bench -p ledger --features bench`): applying transfers (single, a batch of
//! 100, a cross-shard hold) to a ledger of 10,000 funded accounts, and the codecs every
//! command crosses — postcard (Raft log, cluster frames, snapshots) and JSON (the HTTP API).
//! A regression here shows without a cluster's noise.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ledger::{
    AccountId, AccountKind, At, Command, Currency, Ledger, NewAccount, TransferId, TransferKind,
    TransferRequest,
};

const ACCOUNTS: usize = 10_000;
const T0: u64 = 1_795_640_645_000;

fn kes() -> Currency {
    Currency::parse("KES").expect("valid currency")
}

fn account(n: usize) -> AccountId {
    AccountId::parse(&format!("+2547{n:08}")).expect("valid id")
}

fn p2p(id: u64, from: usize, to: usize) -> TransferRequest {
    TransferRequest {
        id: TransferId::parse(&format!("t{id}")).expect("valid id"),
        kind: TransferKind::P2p,
        from: account(from),
        to: account(to),
        amount: 1 + id % 100,
        currency: kes(),
        memo: String::new(),
        pending: false,
        timeout_s: 300,
    }
}

/// A ledger with `ACCOUNTS` customers holding 1,000,000 each.
fn funded() -> Ledger {
    let mut ledger = Ledger::new(kes());
    for n in 0..ACCOUNTS {
        let new = NewAccount {
            id: account(n),
            kind: AccountKind::Customer,
            name: format!("customer {n}"),
            currency: kes(),
        };
        ledger.apply(&Command::CreateAccount(new), T0);
        let fund = TransferRequest {
            id: TransferId::parse(&format!("fund{n}")).expect("valid id"),
            kind: TransferKind::Issue,
            from: AccountId::float(),
            amount: 1_000_000,
            ..p2p(0, 0, n)
        };
        ledger.apply(&Command::Transfer(fund), T0);
    }
    ledger
}

/// Payer and payee of the n-th transfer: spread over all accounts, never the same.
fn pair(n: u64) -> (usize, usize) {
    let from = (n.wrapping_mul(7_919) % ACCOUNTS as u64) as usize;
    let to = (from + 1 + (n % 97) as usize) % ACCOUNTS;
    (from, to)
}

fn apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply");
    let mut ledger = funded();
    let mut n = 0u64;
    group.throughput(Throughput::Elements(1));
    group.bench_function("transfer", |b| {
        b.iter(|| {
            n += 1;
            let (from, to) = pair(n);
            let at = At {
                ms: T0 + n,
                log_index: n,
                log_pos: 0,
            };
            black_box(ledger.apply_at(&Command::Transfer(p2p(n, from, to)), at))
        })
    });
    group.throughput(Throughput::Elements(100));
    group.bench_function("batch_100", |b| {
        b.iter_batched(
            || {
                let requests = (0..100)
                    .map(|_| {
                        n += 1;
                        let (from, to) = pair(n);
                        p2p(n, from, to)
                    })
                    .collect();
                (Command::Batch(requests), n)
            },
            |(command, n)| {
                let at = At {
                    ms: T0 + n,
                    log_index: n,
                    log_pos: 0,
                };
                black_box(ledger.apply_at(&command, at))
            },
            BatchSize::SmallInput,
        )
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("cross_shard_hold", |b| {
        b.iter(|| {
            n += 1;
            let (from, to) = pair(n);
            let at = At {
                ms: T0 + n,
                log_index: n,
                log_pos: 0,
            };
            black_box(ledger.apply_at(&Command::Hold(p2p(n, from, to)), at))
        })
    });
    group.finish();
}

fn codecs(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    let batch = Command::Batch(
        (0..100)
            .map(|n| {
                let (from, to) = pair(n);
                p2p(n, from, to)
            })
            .collect(),
    );
    let bytes = postcard::to_allocvec(&batch).expect("encodes");
    group.throughput(Throughput::Elements(100));
    group.bench_function("postcard_encode_batch_100", |b| {
        b.iter(|| black_box(postcard::to_allocvec(black_box(&batch)).expect("encodes")))
    });
    group.bench_function("postcard_decode_batch_100", |b| {
        b.iter(|| black_box(postcard::from_bytes::<Command>(black_box(&bytes)).expect("decodes")))
    });
    let request = p2p(42, 1, 2);
    let json = serde_json::to_vec(&request).expect("encodes");
    group.throughput(Throughput::Elements(1));
    group.bench_function("json_encode_transfer", |b| {
        b.iter(|| black_box(serde_json::to_vec(black_box(&request)).expect("encodes")))
    });
    group.bench_function("json_decode_transfer", |b| {
        b.iter(|| {
            black_box(serde_json::from_slice::<TransferRequest>(black_box(&json)).expect("decodes"))
        })
    });
    group.finish();
}

criterion_group!(benches, apply, codecs);
criterion_main!(benches);

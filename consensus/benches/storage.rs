//! The storage write path in isolation (`cargo bench -p consensus --features bench`): appending Raft entries to
//! the redb log and waiting for their fsync — one entry per commit, and 16 entries sharing
//! one commit (group commit) — on a real file in a temporary directory.

use std::hint::black_box;

use consensus::{open_log_db, LogStore, ShardRequest};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ledger::{AccountId, Command, Currency, ShardId, TransferId, TransferKind, TransferRequest};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

fn entry(index: u64) -> Entry<consensus::TypeConfig> {
    let kes = Currency::parse("KES").expect("valid currency");
    let requests = (0..10)
        .map(|n| TransferRequest {
            id: TransferId::parse(&format!("t{index}-{n}")).expect("valid id"),
            kind: TransferKind::P2p,
            from: AccountId::parse("+254700000001").expect("valid id"),
            to: AccountId::parse("+254700000002").expect("valid id"),
            amount: 100,
            currency: kes,
            memo: String::new(),
            pending: false,
            timeout_s: 300,
        })
        .collect();
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(ShardRequest {
            shard: ShardId(0),
            at_ms: 1_795_640_645_000,
            command: Command::Batch(requests),
        }),
    }
}

fn append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let db = open_log_db(&dir.path().join("log.redb")).expect("log db");
    let mut store = LogStore::new(db, 0);
    let mut next = 1u64;
    let mut group = c.benchmark_group("log");
    for per_commit in [1u64, 16] {
        group.throughput(Throughput::Elements(per_commit));
        group.bench_function(format!("append_fsync_{per_commit}_entries"), |b| {
            b.iter(|| {
                let entries: Vec<_> = (next..next + per_commit).map(entry).collect();
                next += per_commit;
                runtime
                    .block_on(store.append_and_wait(entries))
                    .expect("appended");
                black_box(next)
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // An fsync takes milliseconds: fewer samples keep the run short.
    config = Criterion::default().sample_size(30);
    targets = append
}
criterion_main!(benches);

//! End-to-end tests of a sharded cluster: 3 nodes, 8 shards, each shard its own Raft group.
//! Accounts spread over every shard; transfers within a shard and across shards (sagas);
//! system accounts as the sum of their per-shard slices; redress when the payee's side
//! refuses; and a kill -9 of the node leading most shards during a burst of cross-shard
//! transfers, after which no saga is left running, no hold is left, every acknowledged transfer
//! is there once, the balances sum to 0, and the returned node gets its leaderships back;
//! pending transfers and reversals whose id and accounts live on different shards; a daily
//! limit counted on the payer's shard for local and cross-shard debits alike; batches whose
//! cross-shard items run in lockstep, each item answered as its single call would be (also
//! through the leader kill).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ledger::{shard_of, AccountId};
use serde_json::{json, Value};

const SHARDS: u32 = 8;
const ALL: [u64; 3] = [1, 2, 3];

fn sharded() -> Options {
    Options {
        shards: Some(SHARDS),
        ..Options::nodes(3)
    }
}

fn shard(id: &str) -> u32 {
    shard_of(&AccountId::parse(id).expect("valid id"), SHARDS).0
}

/// `per_shard` customer ids on every shard.
fn customers_on_every_shard(per_shard: usize) -> Vec<String> {
    let mut by_shard: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut n = 0u32;
    while by_shard.len() < SHARDS as usize || by_shard.values().any(|ids| ids.len() < per_shard) {
        let id = format!("+2547100{n:05}");
        let ids = by_shard.entry(shard(&id)).or_default();
        if ids.len() < per_shard {
            ids.push(id);
        }
        n += 1;
    }
    by_shard.into_values().flatten().collect()
}

/// Opens and funds the accounts; returns their balances.
async fn open_and_fund(
    cluster: &TestCluster,
    ids: &[String],
    amount: u64,
) -> BTreeMap<String, i64> {
    let mut balances = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        cluster.create_account(ALL[i % 3], id, "customer").await;
        cluster
            .issue(ALL[(i + 1) % 3], &format!("fund-{i}"), id, amount)
            .await;
        balances.insert(id.clone(), i64::try_from(amount).expect("small"));
    }
    balances
}

/// Waits until node `node` counts no running saga (answers may still be on their way to their
/// home records, and redress takes its time); fails after `within`.
async fn wait_until_no_saga_runs(cluster: &TestCluster, node: u64, within: Duration) {
    let deadline = Instant::now() + within;
    while summary_field(cluster, node, "sagas_running").await > 0 {
        assert!(
            Instant::now() < deadline,
            "node {node}: sagas still running after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn summary_field(cluster: &TestCluster, node: u64, field: &str) -> u64 {
    cluster.summary(node).await[field]
        .as_u64()
        .unwrap_or_else(|| panic!("summary has no {field}"))
}

/// Goal: money moves within and across shards exactly as single-group transfers do; every
/// node agrees; `float` is the sum of its slices; a refused credit leaves no hold; retries
/// answer as the first time and another body under a used id is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_within_and_across_shards() {
    let cluster = TestCluster::start(sharded()).await;
    let info = cluster.cluster_info(1).await.expect("cluster view");
    assert_eq!(
        info["shards"].as_array().map(Vec::len),
        Some(SHARDS as usize),
        "{info}"
    );
    // Leaders start spread over the nodes (each shard's preferred leader initialises it).
    let mut led: BTreeMap<u64, usize> = BTreeMap::new();
    for shard in info["shards"].as_array().expect("shards") {
        *led.entry(shard["leader"].as_u64().expect("leader"))
            .or_default() += 1;
    }
    assert!(
        led.len() == 3 && led.values().all(|count| *count >= 2),
        "leaders not spread: {led:?} in {info}"
    );
    let ids = customers_on_every_shard(2);
    let mut expected = open_and_fund(&cluster, &ids, 10_000).await;
    let total = 10_000 * ids.len() as i64;
    let (status, float) = cluster.api.get(2, "/v1/accounts/float").await;
    assert_eq!(status, 200, "{float}");
    assert_eq!(
        float["balance"],
        json!(-total),
        "float is the sum of its slices: {float}"
    );

    // Every ordered pair of a few accounts: same shard and cross shard, varied amounts.
    let mut n = 0;
    let mut crossed = 0;
    for (a, from) in ids.iter().enumerate().step_by(3) {
        for (b, to) in ids.iter().enumerate().step_by(2) {
            if a == b {
                continue;
            }
            n += 1;
            crossed += usize::from(shard(from) != shard(to));
            let amount = 10 + (a * 7 + b * 3) as u64;
            let body = transfer_body(&format!("x{n}"), "p2p", from, to, amount);
            let answer = cluster.transfer_ok(ALL[n % 3], &body).await;
            *expected.get_mut(from).expect("from") -= amount as i64;
            *expected.get_mut(to).expect("to") += amount as i64;
            assert_eq!(answer["from_balance"], json!(expected[from]), "{answer}");
            assert_eq!(answer["to_balance"], json!(expected[to]), "{answer}");
        }
    }
    assert!(
        crossed > n / 2,
        "most pairs cross shards ({crossed} of {n})"
    );

    for node in ALL {
        let balances = cluster.assert_invariants(node).await;
        for (id, balance) in &expected {
            assert_eq!(balances.get(id), Some(balance), "node {node}: {id}");
        }
        assert_eq!(balances["float"], -total, "node {node}");
        // The last answers may still be on their way to their home records (`finisher`).
        wait_until_no_saga_runs(&cluster, node, Duration::from_secs(10)).await;
        assert_eq!(summary_field(&cluster, node, "legs_held").await, 0);
    }

    // Lookups of a cross-shard transfer from every node; its statement lines on both shards.
    let (from, to) = ids
        .iter()
        .flat_map(|a| ids.iter().map(move |b| (a, b)))
        .find(|(a, b)| shard(a) != shard(b))
        .expect("a cross-shard pair");
    let body = transfer_body("cross-look", "p2p", from, to, 55);
    let first = cluster.transfer_ok(1, &body).await;
    for node in ALL {
        let (status, record) = cluster.get_transfer(node, "cross-look").await;
        assert_eq!(status, 200, "{record}");
        assert_eq!(record["status"], "completed", "{record}");
        assert_eq!(record["amount"], 55, "{record}");
        // A retry anywhere answers as the first time; another body under the id is refused.
        assert_eq!(cluster.transfer(node, &body).await, (201, first.clone()));
        let other = transfer_body("cross-look", "p2p", from, to, 56);
        let (status, refused) = cluster.transfer(node, &other).await;
        assert_eq!(
            (status, error_code(&refused)),
            (409, "id_conflict"),
            "{refused}"
        );
    }
    for (account, direction) in [(from, "debit"), (to, "credit")] {
        let (_, statement) = cluster
            .api
            .get(
                2,
                &format!("/v1/accounts/{}/statement?limit=1", enc(account)),
            )
            .await;
        let line = &statement["entries"][0];
        assert_eq!(
            (line["transfer_id"].as_str(), line["direction"].as_str()),
            (Some("cross-look"), Some(direction)),
            "{statement}"
        );
    }

    // The payee's side refuses (no such account on its shard): the payer's hold is voided.
    let payer = &ids[0];
    let before = cluster.account(3, payer).await;
    let nobody = (0..)
        .map(|i| format!("+2547999{i:05}"))
        .find(|id| shard(id) != shard(payer))
        .expect("an id on another shard");
    let body = transfer_body("to-nobody", "p2p", payer, &nobody, 100);
    let (status, answer) = cluster.transfer(2, &body).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (422, Some("account_not_found")),
        "{answer}"
    );
    let after = cluster.account(3, payer).await;
    assert_eq!(after["balance"], before["balance"], "{after}");
    assert_eq!(
        after["available"], before["available"],
        "no hold left: {after}"
    );
    assert_eq!(cluster.transfer(1, &body).await, (status, answer));
    for node in ALL {
        cluster.assert_invariants(node).await;
    }

    // A daily limit set once through the API binds every shard: the payer's shard counts
    // cross-shard holds and local debits alike, and each answer tells the room left.
    let (status, tariff) = cluster
        .put(
            2,
            "/v1/admin/tariff",
            &json!({"daily_out_max": {"customer": 1_000}}),
        )
        .await;
    assert_eq!(status, 200, "{tariff}");
    let limited = (0..)
        .map(|i| format!("+2547300{i:05}"))
        .find(|id| shard(id) == shard(&ids[0]))
        .expect("an id on the first account's shard");
    cluster.create_account(1, &limited, "customer").await;
    cluster.issue(3, "fund-limited", &limited, 5_000).await;
    let away = ids
        .iter()
        .find(|id| shard(id) != shard(&limited))
        .expect("another shard");
    let near = ids
        .iter()
        .find(|id| shard(id) == shard(&limited))
        .expect("the same shard");
    let across = cluster
        .transfer_ok(1, &transfer_body("daily-1", "p2p", &limited, away, 600))
        .await;
    assert_eq!(across["daily_room"], 400, "{across}");
    let (status, refused) = cluster
        .transfer(2, &transfer_body("daily-2", "p2p", &limited, near, 401))
        .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (422, Some("limit_exceeded")),
        "{refused}"
    );
    let (status, refused) = cluster
        .transfer(3, &transfer_body("daily-3", "p2p", &limited, away, 401))
        .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (422, Some("limit_exceeded")),
        "{refused}"
    );
    let last = cluster
        .transfer_ok(3, &transfer_body("daily-4", "p2p", &limited, near, 400))
        .await;
    assert_eq!(last["daily_room"], 0, "{last}");
    let account = cluster.account(2, &limited).await;
    assert_eq!(account["balance"], 4_000, "{account}");
    let (_, tariff) = cluster.get(1, "/v1/admin/tariff").await;
    assert_eq!(tariff["daily_out_max"]["customer"], 1_000, "{tariff}");
}

/// Goal: the node leading the most shards is killed -9 during a burst of cross-shard
/// transfers and restarted: afterwards no saga is left running past its deadline, no hold is
/// left, every acknowledged transfer is there exactly once with the answer it was given, and
/// the balances sum to 0 on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_the_busiest_leader_during_cross_shard_burst() {
    let cluster = TestCluster::start(sharded()).await;
    let ids = customers_on_every_shard(2);
    let initial = open_and_fund(&cluster, &ids, 1_000_000).await;

    // The node leading most shards.
    let info = cluster.cluster_info(1).await.expect("cluster view");
    let mut led: BTreeMap<u64, usize> = BTreeMap::new();
    for shard in info["shards"].as_array().expect("shards") {
        *led.entry(shard["leader"].as_u64().expect("leader"))
            .or_default() += 1;
    }
    let victim = led
        .iter()
        .max_by_key(|(_, count)| **count)
        .map(|(node, _)| *node)
        .expect("a leader");

    // Clients on every node send cross-shard transfers until stopped; every answer is kept.
    let stop = Arc::new(AtomicBool::new(false));
    let answers: Arc<Mutex<Vec<(String, u16, Value)>>> = Arc::default();
    let mut tasks = Vec::new();
    for client in 0..8usize {
        let api = cluster.api.clone();
        let ids = ids.clone();
        let stop = stop.clone();
        let answers = answers.clone();
        // The victim coordinates some sagas too: those die with it, mid-way, and must be
        // finished by the home shards' leaders.
        let nodes: Vec<u64> = ALL.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let from = &ids[(client * 5 + n) % ids.len()];
                let to = ids
                    .iter()
                    .cycle()
                    .skip(client + n * 3)
                    .find(|to| shard(to) != shard(from))
                    .expect("a payee on another shard");
                let id = format!("burst-{client}-{n}");
                let body = transfer_body(&id, "p2p", from, to, 1 + (n % 50) as u64);
                let node = nodes[n % nodes.len()];
                let (status, answer) = match api
                    .try_post(node, "/v1/transfers", &body, Duration::from_secs(20))
                    .await
                {
                    Ok(reply) => reply,
                    Err(_) => (0, Value::Null),
                };
                answers.lock().expect("lock").push((id, status, answer));
            }
        }));
    }
    // Two clients send batches of cross-shard items (run in lockstep, a round cut short by the
    // kill leaves its items to be driven alone); each item's answer is kept like a single's.
    for client in 8..10usize {
        let api = cluster.api.clone();
        let ids = ids.clone();
        let stop = stop.clone();
        let answers = answers.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let mut items = Vec::new();
                for k in 0..16usize {
                    let from = &ids[(client * 3 + n + k) % ids.len()];
                    let to = ids
                        .iter()
                        .cycle()
                        .skip(client + n + k * 5)
                        .find(|to| shard(to) != shard(from))
                        .expect("a payee on another shard");
                    let id = format!("burstb-{client}-{n}-{k}");
                    items.push(transfer_body(&id, "p2p", from, to, 1 + (k % 7) as u64));
                }
                let node = ALL[n % ALL.len()];
                let batch = json!({ "transfers": items });
                let reply = api
                    .try_post(node, "/v1/transfers/batch", &batch, Duration::from_secs(20))
                    .await;
                let results = match &reply {
                    Ok((200, body)) => body["results"].as_array().cloned(),
                    _ => None,
                };
                let mut answers = answers.lock().expect("lock");
                for (k, item) in items.iter().enumerate() {
                    let id = item["id"].as_str().expect("id").to_string();
                    let result = results.as_ref().and_then(|r| r.get(k)).cloned();
                    let status = match result.as_ref().map(|r| &r["status"]) {
                        Some(Value::String(s)) if s == "completed" => 201,
                        Some(Value::String(s)) if s == "rejected" => 422,
                        _ => 0,
                    };
                    answers.push((id, status, result.unwrap_or(Value::Null)));
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.kill_node(victim);
    // The survivors take over every shard it led before it comes back.
    let survivor = ALL.into_iter().find(|n| *n != victim).expect("survivor");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = cluster.cluster_info(survivor).await.expect("cluster view");
        let leaders: Vec<Option<u64>> = info["shards"]
            .as_array()
            .expect("shards")
            .iter()
            .map(|shard| shard["leader"].as_u64())
            .collect();
        if leaders.iter().all(|l| l.is_some() && *l != Some(victim)) {
            eprintln!("node {victim} killed; leaders now {leaders:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "shards of node {victim} not taken over in 30 s: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    cluster.start_node(victim);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("client task");
    }
    cluster.wait_for_leader().await;

    // Every saga finishes (the home leaders' sweep redresses or completes what the burst left).
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let running = summary_field(&cluster, 1, "sagas_running").await;
        let held = summary_field(&cluster, 1, "legs_held").await;
        if running == 0 && held == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{running} sagas still running, {held} holds still held"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Each transfer's final record decides its effect; acknowledged ones kept their answer.
    let answers = answers.lock().expect("lock").clone();
    let acked = answers.iter().filter(|(_, s, _)| *s == 201).count();
    assert!(
        acked > 20,
        "the burst got few answers ({acked} of {})",
        answers.len()
    );
    let mut expected = initial.clone();
    for (id, status, answer) in &answers {
        let (found, record) = cluster.get_transfer(ALL[id.len() % 3], id).await;
        match *status {
            201 => {
                assert_eq!(found, 200, "acknowledged {id} is missing: {record}");
                assert_eq!(record["status"], "completed", "{id}: {record}");
                let (retry_status, retry) = cluster
                    .transfer(
                        1,
                        &json!({
                            "id": id, "kind": "p2p", "from": record["from"], "to": record["to"],
                            "amount": record["amount"]
                        }),
                    )
                    .await;
                assert_eq!(
                    (retry_status, &retry),
                    (201, answer),
                    "{id}: a retry answers the same"
                );
            }
            422 => assert_eq!(record["status"], "rejected", "{id}: {record}"),
            _ => {}
        }
        if found == 200 && record["status"] == "completed" {
            let amount = record["amount"].as_i64().expect("amount");
            *expected
                .get_mut(record["from"].as_str().expect("from"))
                .expect("from") -= amount;
            *expected
                .get_mut(record["to"].as_str().expect("to"))
                .expect("to") += amount;
        }
    }
    for node in ALL {
        let balances = cluster.assert_invariants(node).await;
        for (id, balance) in &expected {
            assert_eq!(balances.get(id), Some(balance), "node {node}: {id}");
        }
        for id in &ids {
            let account = cluster.account(node, id).await;
            assert_eq!(
                account["pending_out"], 0,
                "node {node}: hold left: {account}"
            );
        }
    }

    // The returned node gets its shards back: every shard ends led by its preferred node
    // (dealt round-robin: shard i by node i % 3 + 1), handed over one at a time.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = cluster.cluster_info(victim).await.expect("cluster view");
        let leaders: Vec<Option<u64>> = info["shards"]
            .as_array()
            .expect("shards")
            .iter()
            .map(|shard| shard["leader"].as_u64())
            .collect();
        let preferred: Vec<Option<u64>> = (0..SHARDS).map(|i| Some(u64::from(i % 3) + 1)).collect();
        if leaders == preferred {
            eprintln!("leaders back on their preferred nodes: {leaders:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leaders not back on their preferred nodes 60 s after node {victim} returned: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let body = transfer_body("after-rebalance", "p2p", &ids[0], &ids[1], 1);
    cluster.transfer_ok(victim, &body).await;
}

/// A transfer id whose home shard satisfies `want`.
fn id_homed(prefix: &str, want: impl Fn(u32) -> bool) -> String {
    (0..)
        .map(|n| format!("{prefix}-{n}"))
        .find(|id| {
            let parsed = ledger::TransferId::parse(id).expect("valid transfer id");
            want(ledger::home_of(&parsed, SHARDS).0)
        })
        .expect("some id is homed there")
}

fn pending_body(id: &str, from: &str, to: &str, amount: u64, timeout_s: u64) -> Value {
    json!({"id": id, "kind": "p2p", "from": from, "to": to, "amount": amount,
           "pending": true, "timeout_s": timeout_s})
}

/// Creates a pending transfer that must be accepted.
async fn pending_ok(cluster: &TestCluster, node: u64, body: &Value) -> Value {
    let (status, answer) = cluster.transfer(node, body).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (201, Some("pending")),
        "{body}: {answer}"
    );
    answer
}

async fn wait_for_status(cluster: &TestCluster, node: u64, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (found, record) = cluster.get_transfer(node, id).await;
        if found == 200 && record["status"] == status {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "{id} did not become {status} within 30 s: {found} {record}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Goal: pending transfers and reversals work whatever shards their id and accounts live on:
/// a cross-shard pending transfer holds on the payer's shard, posts, voids and expires once
/// (also when the leader of its home shard is killed before its deadline); a pending transfer
/// whose money is on one shard and id on another posts; a cross-shard transfer is reversed
/// once (a second reversal is refused), a reversal that finds the money spent is rejected and
/// frees the original for a later one, and a local transfer is reversed with an id homed
/// elsewhere. Every node agrees and the balances sum to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_and_reversals_across_shards() {
    let cluster = TestCluster::start(sharded()).await;
    let ids = customers_on_every_shard(2);
    open_and_fund(&cluster, &ids, 10_000).await;
    let a = &ids[0];
    let b = ids
        .iter()
        .find(|id| shard(id) != shard(a))
        .expect("b on another shard");
    let a2 = ids
        .iter()
        .find(|id| *id != a && shard(id) == shard(a))
        .expect("a2 on a's shard");
    let (sa, sb) = (shard(a), shard(b));
    let foreign = |prefix: &str| id_homed(prefix, |home| home != sa && home != sb);

    // Cross-shard pending, posted: the hold shows on the payer until the post moves the money.
    let p1 = foreign("pend-post");
    let (status, created) = cluster
        .transfer(1, &pending_body(&p1, a, b, 3_000, 120))
        .await;
    assert_eq!(
        (status, created["status"].as_str()),
        (201, Some("pending")),
        "{created}"
    );
    let payer = cluster.account(2, a).await;
    assert_eq!(
        (payer["balance"].clone(), payer["available"].clone()),
        (json!(10_000), json!(7_000)),
        "{payer}"
    );
    let (_, record) = cluster.get_transfer(3, &p1).await;
    assert_eq!(record["status"], "pending", "{record}");
    assert!(record["expires_at"].is_string(), "{record}");
    let (status, posted) = cluster
        .post(2, &format!("/v1/transfers/{p1}/post"), &json!({}))
        .await;
    assert_eq!(
        (status, posted["status"].as_str()),
        (200, Some("completed")),
        "{posted}"
    );
    let (status, again) = cluster
        .post(3, &format!("/v1/transfers/{p1}/post"), &json!({}))
        .await;
    assert_eq!(
        (status, again["status"].as_str()),
        (200, Some("completed")),
        "{again}"
    );
    let (status, late_void) = cluster
        .post(1, &format!("/v1/transfers/{p1}/void"), &json!({}))
        .await;
    assert_eq!(
        error_code(&late_void),
        "transfer_not_pending",
        "{status} {late_void}"
    );
    assert_eq!(cluster.balance(1, a).await, 7_000);
    assert_eq!(cluster.balance(1, b).await, 13_000);

    // Cross-shard pending, voided.
    let p2 = foreign("pend-void");
    pending_ok(&cluster, 2, &pending_body(&p2, a, b, 1_000, 120)).await;
    let (status, voided) = cluster
        .post(1, &format!("/v1/transfers/{p2}/void"), &json!({}))
        .await;
    assert_eq!(
        (status, voided["status"].as_str()),
        (200, Some("voided")),
        "{voided}"
    );
    let (_, late_post) = cluster
        .post(3, &format!("/v1/transfers/{p2}/post"), &json!({}))
        .await;
    assert_eq!(
        error_code(&late_post),
        "transfer_not_pending",
        "{late_post}"
    );

    // Money on one shard, id on another: the pending transfer posts there.
    let p3 = id_homed("pend-local", |home| home != sa);
    pending_ok(&cluster, 3, &pending_body(&p3, a, a2, 500, 120)).await;
    let (status, posted) = cluster
        .post(1, &format!("/v1/transfers/{p3}/post"), &json!({}))
        .await;
    assert_eq!(
        (status, posted["status"].as_str()),
        (200, Some("completed")),
        "{posted}"
    );
    assert_eq!(cluster.balance(2, a).await, 6_500);
    assert_eq!(cluster.balance(2, a2).await, 10_500);

    // Cross-shard pending whose deadline passes while its home shard's leader is killed.
    let p4 = foreign("pend-expire");
    let home = ledger::home_of(&ledger::TransferId::parse(&p4).expect("id"), SHARDS).0;
    pending_ok(&cluster, 1, &pending_body(&p4, a, b, 700, 2)).await;
    let info = cluster.cluster_info(1).await.expect("cluster view");
    let victim = info["shards"][home as usize]["leader"]
        .as_u64()
        .expect("home shard leader");
    cluster.kill_node(victim);
    let survivor = ALL.into_iter().find(|n| *n != victim).expect("survivor");
    wait_for_status(&cluster, survivor, &p4, "voided").await;
    let payer = cluster.account(survivor, a).await;
    assert_eq!(
        (payer["balance"].clone(), payer["available"].clone()),
        (json!(6_500), json!(6_500)),
        "the expired hold is released once: {payer}"
    );
    let (_, late_post) = cluster
        .post(survivor, &format!("/v1/transfers/{p4}/post"), &json!({}))
        .await;
    assert_eq!(
        error_code(&late_post),
        "transfer_not_pending",
        "{late_post}"
    );
    cluster.start_node(victim);
    cluster.wait_for_leader().await;

    // Reversal of a cross-shard transfer, with an id homed on a third shard.
    let t1 = foreign("rev-orig");
    cluster
        .transfer_ok(2, &transfer_body(&t1, "p2p", a, b, 2_000))
        .await;
    let r1 = foreign("rev-one");
    let (status, reversed) = cluster
        .post(
            3,
            &format!("/v1/transfers/{t1}/reverse"),
            &json!({"id": r1, "reason": "wrong number"}),
        )
        .await;
    assert_eq!(
        (status, reversed["status"].as_str()),
        (201, Some("completed")),
        "{reversed}"
    );
    let (status, retried) = cluster
        .post(
            1,
            &format!("/v1/transfers/{t1}/reverse"),
            &json!({"id": r1, "reason": "wrong number"}),
        )
        .await;
    assert_eq!(
        (status, &retried),
        (201, &reversed),
        "a retry answers the same"
    );
    let r2 = foreign("rev-two");
    let (_, second) = cluster
        .post(
            2,
            &format!("/v1/transfers/{t1}/reverse"),
            &json!({"id": r2}),
        )
        .await;
    assert_eq!(error_code(&second), "already_reversed", "{second}");
    let (_, original) = cluster.get_transfer(1, &t1).await;
    assert_eq!(
        (
            original["status"].as_str(),
            original["reversed_by"].as_str()
        ),
        (Some("reversed"), Some(r1.as_str())),
        "{original}"
    );
    let (_, reversal) = cluster.get_transfer(2, &r1).await;
    assert_eq!(
        reversal["reverses"].as_str(),
        Some(t1.as_str()),
        "{reversal}"
    );
    assert_eq!(cluster.balance(3, a).await, 6_500);
    assert_eq!(cluster.balance(3, b).await, 13_000);

    // A reversal that finds the money spent is rejected and frees the original.
    let t2 = foreign("rev-spent");
    cluster
        .transfer_ok(1, &transfer_body(&t2, "p2p", a, b, 1_000))
        .await;
    let spend = cluster
        .transfer_ok(2, &transfer_body("spend-b", "redeem", b, "float", 13_500))
        .await;
    assert_eq!(spend["status"], "completed", "{spend}");
    let r3 = foreign("rev-poor");
    let (status, poor) = cluster
        .post(
            3,
            &format!("/v1/transfers/{t2}/reverse"),
            &json!({"id": r3}),
        )
        .await;
    assert_eq!(
        (status, poor["code"].as_str()),
        (422, Some("insufficient_funds")),
        "{poor}"
    );
    cluster.issue(1, "refill-b", b, 1_000).await;
    let r4 = foreign("rev-rich");
    let (status, rich) = cluster
        .post(
            1,
            &format!("/v1/transfers/{t2}/reverse"),
            &json!({"id": r4}),
        )
        .await;
    assert_eq!(
        (status, rich["status"].as_str()),
        (201, Some("completed")),
        "{rich}"
    );

    // A local transfer reversed with an id homed on another shard.
    let t3 = id_homed("rev-local", |home| home == sa);
    cluster
        .transfer_ok(2, &transfer_body(&t3, "p2p", a, a2, 300))
        .await;
    let r5 = id_homed("rev-away", |home| home != sa);
    let (status, local) = cluster
        .post(
            3,
            &format!("/v1/transfers/{t3}/reverse"),
            &json!({"id": r5}),
        )
        .await;
    assert_eq!(
        (status, local["status"].as_str()),
        (201, Some("completed")),
        "{local}"
    );
    let (_, original) = cluster.get_transfer(1, &t3).await;
    assert_eq!(original["status"], "reversed", "{original}");
    let r6 = id_homed("rev-again", |home| home != sa);
    let (_, again) = cluster
        .post(
            2,
            &format!("/v1/transfers/{t3}/reverse"),
            &json!({"id": r6}),
        )
        .await;
    assert_eq!(error_code(&again), "already_reversed", "{again}");

    for node in ALL {
        let balances = cluster.assert_invariants(node).await;
        assert_eq!(balances[a.as_str()], 6_500, "node {node}");
        assert_eq!(balances[a2.as_str()], 10_500, "node {node}");
        assert_eq!(balances[b.as_str()], 500, "node {node}");
        wait_until_no_saga_runs(&cluster, node, Duration::from_secs(20)).await;
        assert_eq!(summary_field(&cluster, node, "legs_held").await, 0);
        assert_eq!(summary_field(&cluster, node, "pending").await, 0);
    }
}

/// Goal: a batch whose items cross shards (their sagas run in lockstep: each step of all of
/// them one command per shard) answers every item exactly as its single call would: completed
/// transfers across and within shards, a hold refused for funds, a credit refused on the
/// payee's shard (its hold released), a pending transfer, one id twice with one body and one
/// id with two bodies (the first item wins). The batch retried on other nodes, and each item
/// sent alone, get the same answers; the money is where the answers say on every node; no
/// saga or hold is left once the pending transfer is voided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_across_shards_answers_each_item_like_its_single_call() {
    let cluster = TestCluster::start(sharded()).await;
    let ids = customers_on_every_shard(2);
    let mut expected = open_and_fund(&cluster, &ids, 10_000).await;
    let mut items: Vec<Value> = Vec::new();
    let mut moves: Vec<(String, String, i64)> = Vec::new();
    let mut crossed = 0;
    for (a, from) in ids.iter().enumerate() {
        for (b, to) in ids.iter().enumerate().skip(a % 3).step_by(3) {
            if a == b {
                continue;
            }
            crossed += usize::from(shard(from) != shard(to));
            let amount = 1 + (a * 5 + b) as i64;
            items.push(transfer_body(
                &format!("lock-{a}-{b}"),
                "p2p",
                from,
                to,
                amount as u64,
            ));
            moves.push((from.clone(), to.clone(), amount));
        }
    }
    assert!(crossed > items.len() / 2, "most items cross shards");
    let plain = items.len();
    // Within one shard, id included: one local command.
    let (x, y) = (&ids[0], &ids[1]);
    assert_eq!(
        shard(x),
        shard(y),
        "customers_on_every_shard lists by shard"
    );
    let local_id = id_homed("lock-local", |home| home == shard(x));
    items.push(transfer_body(&local_id, "p2p", x, y, 3));
    moves.push((x.clone(), y.clone(), 3));
    // Payer and payee on one shard, the id homed on another: a saga whose money moves in one
    // local transfer (begin, transfer, finish), in lockstep as well.
    let split_id = id_homed("lock-split", |home| home != shard(x));
    items.push(transfer_body(&split_id, "p2p", x, y, 4));
    moves.push((x.clone(), y.clone(), 4));
    // Cross-shard: more than the payer has (refused at the hold).
    let (p, q) = (&ids[2], &ids[9]);
    assert_ne!(shard(p), shard(q));
    items.push(transfer_body("lock-broke", "p2p", p, q, 1_000_000));
    // Cross-shard: the payee does not exist (refused at the credit, the hold voided).
    let nobody = (0..)
        .map(|i| format!("+2547999{i:05}"))
        .find(|id| shard(id) != shard(p))
        .expect("an id on another shard");
    items.push(transfer_body("lock-nobody", "p2p", p, &nobody, 10));
    // Cross-shard pending: held, not moved.
    items.push(pending_body("lock-pending", &ids[4], &ids[12], 50, 600));
    // One id twice with one body (moves once), one id with two bodies (the first wins).
    let twice = transfer_body("lock-twice", "p2p", &ids[5], &ids[14], 7);
    items.push(twice.clone());
    items.push(twice);
    moves.push((ids[5].clone(), ids[14].clone(), 7));
    items.push(transfer_body("lock-conflict", "p2p", &ids[6], &ids[15], 8));
    items.push(transfer_body("lock-conflict", "p2p", &ids[6], &ids[15], 9));
    moves.push((ids[6].clone(), ids[15].clone(), 8));

    let batch = json!({ "transfers": items });
    let (status, first) = cluster.post(1, "/v1/transfers/batch", &batch).await;
    assert_eq!(status, 200, "{first}");
    let results = first["results"].as_array().expect("results").clone();
    assert_eq!(results.len(), items.len(), "{first}");
    for (item, result) in items.iter().zip(&results).take(plain + 2) {
        assert_eq!(result["status"], "completed", "{item}: {result}");
        assert_eq!(result["id"], item["id"], "{result}");
    }
    let named = |id: &str| -> Vec<&Value> {
        items
            .iter()
            .zip(&results)
            .filter(|(item, _)| item["id"] == id)
            .map(|(_, result)| result)
            .collect()
    };
    assert_eq!(named("lock-broke")[0]["code"], "insufficient_funds");
    assert_eq!(named("lock-nobody")[0]["code"], "account_not_found");
    assert_eq!(named("lock-pending")[0]["status"], "pending");
    let twice = named("lock-twice");
    assert_eq!(twice[0]["status"], "completed", "{}", twice[0]);
    assert_eq!(twice[0], twice[1], "one id, one body: one answer");
    let conflict = named("lock-conflict");
    assert_eq!(conflict[0]["status"], "completed", "{}", conflict[0]);
    assert_eq!(error_code(conflict[1]), "id_conflict", "{}", conflict[1]);

    // The node that took the batch ran its cross-shard items in lockstep (the split one
    // included); the credit refused on the payee's shard and the pending transfer were driven
    // alone.
    let metrics = cluster.metrics(1).await;
    let path_count = |path: &str| -> u64 {
        let prefix = format!("cellpay_batch_saga_items_total{{path=\"{path}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&prefix)?.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} sample in {metrics}"))
    };
    let sagas = items
        .iter()
        .filter(|item| {
            let id = item["id"].as_str().expect("id");
            let home = ledger::home_of(&ledger::TransferId::parse(id).expect("id"), SHARDS).0;
            let (from, to) = (item["from"].as_str(), item["to"].as_str());
            let (from, to) = (from.expect("from"), to.expect("to"));
            !(home == shard(from) && shard(from) == shard(to))
        })
        .count() as u64;
    assert_eq!(
        path_count("lockstep") + path_count("alone"),
        sagas,
        "{metrics}"
    );
    assert_eq!(path_count("alone"), 2, "{metrics}");

    // Retried whole on the other nodes, and item by item: the same answers.
    for node in [2, 3] {
        let again = cluster.post(node, "/v1/transfers/batch", &batch).await;
        assert_eq!(again, (200, first.clone()), "batch retried on node {node}");
    }
    for (i, (item, result)) in items.iter().zip(&results).enumerate() {
        if item["id"] == "lock-conflict" && i + 1 == items.len() {
            continue; // its single call would conflict with the first body, as it did
        }
        let (_, alone) = cluster.transfer(ALL[i % 3], item).await;
        assert_eq!(&alone, result, "{item} sent alone");
    }

    for (from, to, amount) in &moves {
        *expected.get_mut(from).expect("from") -= amount;
        *expected.get_mut(to).expect("to") += amount;
    }
    let (status, voided) = cluster
        .post(2, "/v1/transfers/lock-pending/void", &json!({}))
        .await;
    assert_eq!(status, 200, "{voided}");
    for node in ALL {
        let balances = cluster.assert_invariants(node).await;
        for (id, balance) in &expected {
            assert_eq!(balances.get(id), Some(balance), "node {node}: {id}");
        }
        wait_until_no_saga_runs(&cluster, node, Duration::from_secs(20)).await;
        assert_eq!(summary_field(&cluster, node, "legs_held").await, 0);
    }
}

/// Goal: `POST /v1/accounts/batch` opens many accounts across shards, answering each item
/// as `POST /v1/accounts` would, writing nothing for a refused item, and idempotently.
/// Method: one batch with accounts on every shard, malformed items, an id given twice and an
/// id already open; every account read back on every node; the batch retried on another node;
/// a batch over the limit refused whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_accounts_in_a_batch_answers_each_like_its_single_call() {
    let cluster = TestCluster::start(sharded()).await;
    let ids = customers_on_every_shard(4);
    let already = "+254710900001";
    cluster.create_account(3, already, "customer").await;
    let open = |id: &str| json!({"id": id, "kind": "merchant", "name": format!("shop {id}")});
    let mut items: Vec<Value> = ids.iter().map(|id| open(id)).collect();
    items.push(open(&ids[0]));
    items.push(open(already));
    items.push(json!({"id": "+0123", "kind": "customer", "name": "bad id"}));
    items.push(json!({"id": "+254710900002", "kind": "bank", "name": "bad kind"}));
    items.push(json!({"id": "+254710900003", "kind": "customer", "name": "x", "currency": "kes"}));
    items.push(json!(42));
    let (status, first) = cluster
        .post(1, "/v1/accounts/batch", &json!({ "accounts": items }))
        .await;
    assert_eq!(status, 200, "{first}");
    let results = first["results"].as_array().expect("results").clone();
    assert_eq!(results.len(), items.len(), "{first}");
    for (id, result) in ids.iter().zip(&results) {
        assert_eq!(result["id"], id.as_str(), "{result}");
        assert_eq!(result["kind"], "merchant", "{result}");
        assert_eq!(result["balance"], 0, "{result}");
    }
    let rest: Vec<&str> = results[ids.len()..].iter().map(error_code).collect();
    assert_eq!(
        rest,
        [
            "account_exists",
            "account_exists",
            "invalid_account_id",
            "invalid_request",
            "invalid_currency",
            "invalid_request"
        ],
        "{first}"
    );
    for node in ALL {
        for id in &ids {
            let account = cluster.account(node, id).await;
            assert_eq!(
                account["name"],
                format!("shop {id}"),
                "node {node}: {account}"
            );
        }
        for refused in ["+254710900002", "+254710900003"] {
            let (status, body) = cluster.get(node, &format!("/v1/accounts/{refused}")).await;
            assert_eq!(status, 404, "a refused item opens nothing: {body}");
        }
    }
    let (status, again) = cluster
        .post(2, "/v1/accounts/batch", &json!({ "accounts": items }))
        .await;
    assert_eq!(status, 200, "{again}");
    let again = again["results"].as_array().expect("results").clone();
    for result in &again[..ids.len() + 2] {
        assert_eq!(error_code(result), "account_exists", "{result}");
    }
    assert_eq!(again[ids.len() + 2..], results[ids.len() + 2..]);

    let too_many: Vec<Value> = (0..8191)
        .map(|n| open(&format!("+25471200{n:04}")))
        .collect();
    let (status, body) = cluster
        .post(1, "/v1/accounts/batch", &json!({ "accounts": too_many }))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "batch_too_large"),
        "{body}"
    );
    let (status, _) = cluster.get(1, "/v1/accounts/+254712000000").await;
    assert_eq!(status, 404, "a refused batch opens nothing");
}

/// Goal: a group is snapshotted once it has applied `snapshot_commands` commands, however few
/// entries carried them (openraft's policy counts entries; one entry of a batch carries
/// thousands of commands, and a restart replays every command behind the last snapshot).
/// Method: a cluster that snapshots after 100 commands (and after the default 20,000
/// entries) opens 2,400 accounts in three batch requests, a few entries per shard; every
/// shard on every node then reports a snapshot. A node killed and restarted from its
/// snapshots serves every account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_snapshot_after_many_commands_in_few_entries() {
    let cluster = TestCluster::start(Options {
        snapshot_commands: Some(100),
        ..sharded()
    })
    .await;
    let ids: Vec<String> = (0..2400).map(|n| format!("+25472{n:07}")).collect();
    for chunk in ids.chunks(800) {
        let items: Vec<Value> = chunk
            .iter()
            .map(|id| json!({"id": id, "kind": "customer", "name": "bulk"}))
            .collect();
        let (status, body) = cluster
            .post(1, "/v1/accounts/batch", &json!({ "accounts": items }))
            .await;
        assert_eq!(status, 200, "{body}");
        let results = body["results"].as_array().expect("results");
        assert!(results.iter().all(|r| r["id"].is_string()), "{body}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in ALL {
        loop {
            let info = cluster.cluster_info(node).await.expect("cluster info");
            let shards = info["shards"].as_array().expect("shards");
            let snapshotted = shards
                .iter()
                .filter(|shard| shard["snapshot_index"].as_u64().is_some_and(|i| i > 0))
                .count();
            if snapshotted == SHARDS as usize {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {node}: {snapshotted} of {SHARDS} shards snapshotted: {info}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // What an SRE sees of them: per shard, how many this node built and the last one's size
    // and times.
    let metrics = cluster.metrics(1).await;
    let value = |name: &str, shard: u32| -> Option<f64> {
        let prefix = format!("{name}{{shard=\"{shard}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
    };
    let built: Vec<u32> = (0..SHARDS)
        .filter(|&shard| {
            value("cellpay_raft_snapshots_built_total", shard).is_some_and(|n| n >= 1.0)
                && value("cellpay_raft_snapshot_bytes", shard).is_some_and(|b| b > 0.0)
        })
        .collect();
    assert!(
        !built.is_empty(),
        "no shard reports a built snapshot: {metrics}"
    );
    for shard in built {
        for name in [
            "cellpay_raft_snapshot_encode_seconds",
            "cellpay_raft_snapshot_persist_seconds",
        ] {
            assert!(value(name, shard).is_some(), "{name} for shard {shard}");
        }
    }
    cluster.kill_node(2);
    cluster.restart_node(2).await;
    cluster.wait_for_leader().await;
    for id in ids.iter().step_by(7) {
        let account = cluster.account(2, id).await;
        assert_eq!(account["name"], "bulk", "{account}");
    }
}

/// Goal: a cross-shard transfer answers its client before its home shard records the answer,
/// and no reader can tell: the record reads final at once on every node (a read drives the
/// saga and records it first), the transfer can be reversed at once, a retry answers the same,
/// and the queued answers are recorded at home in bulk on their own. The nodes hold every
/// queued answer 1.5 s (`sagas.record_linger_ms`), so every read here comes while it waits.
/// Fails if the answer waits for its record (the counter of answers recorded later stays 0)
/// or if a read shows the saga as it stands (`pending`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_shard_answer_is_recorded_after_the_reply_and_reads_final_at_once() {
    let cluster = TestCluster::create(sharded());
    for node in ALL {
        let path = cluster.dir.join(format!("node-{node}")).join("config.toml");
        let text = std::fs::read_to_string(&path).expect("read config");
        assert!(text.contains("record_linger_ms = 0"), "{text}");
        let text = text.replace("record_linger_ms = 0", "record_linger_ms = 1500");
        std::fs::write(&path, text).expect("write config");
        cluster.start_node(node);
    }
    cluster.wait_for_leader().await;
    let ids = customers_on_every_shard(1);
    open_and_fund(&cluster, &ids, 10_000).await;
    let (a, b) = (&ids[0], &ids[1]);
    let (sa, sb) = (shard(a), shard(b));
    assert_ne!(sa, sb);
    let foreign = |prefix: &str| id_homed(prefix, |home| home != sa && home != sb);

    let t1 = foreign("later-read");
    let body = transfer_body(&t1, "p2p", a, b, 1_000);
    let (status, answer) = cluster.transfer(1, &body).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (201, Some("completed")),
        "{answer}"
    );
    let (found, record) = cluster.get_transfer(2, &t1).await;
    assert_eq!(
        (found, record["status"].as_str(), record["fee"].clone()),
        (200, Some("completed"), answer["fee"].clone()),
        "{record}"
    );
    let (status, again) = cluster.transfer(3, &body).await;
    assert_eq!((status, &again), (201, &answer), "a retry answers the same");

    let t2 = foreign("later-reverse");
    let (status, answer) = cluster
        .transfer(2, &transfer_body(&t2, "p2p", a, b, 500))
        .await;
    assert_eq!(status, 201, "{answer}");
    let (status, reversed) = cluster
        .post(
            3,
            &format!("/v1/transfers/{t2}/reverse"),
            &json!({"id": "later-reverse-back", "reason": "mistake"}),
        )
        .await;
    assert_eq!(
        (status, reversed["status"].as_str()),
        (201, Some("completed")),
        "{reversed}"
    );

    let t3 = foreign("later-unread");
    let (status, answer) = cluster
        .transfer(3, &transfer_body(&t3, "p2p", b, a, 200))
        .await;
    assert_eq!(status, 201, "{answer}");
    // Every coordinator queued its answer; the queues record them (three at least).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut recorded = 0.0;
        for node in ALL {
            let text = cluster.metrics(node).await;
            recorded += text
                .lines()
                .find_map(|line| line.strip_prefix("cellpay_saga_answers_recorded_later_total "))
                .and_then(|value| value.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
        }
        if recorded >= 3.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {recorded} answers recorded later"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, record) = cluster.get_transfer(1, &t3).await;
    assert_eq!(record["status"], "completed", "{record}");
    let (_, record) = cluster.get_transfer(1, &t2).await;
    assert_eq!(record["status"], "reversed", "{record}");
    // The last money moved was t3's: the balances are the ones its answer gave.
    assert_eq!(json!(cluster.balance(1, b).await), answer["from_balance"]);
    assert_eq!(json!(cluster.balance(2, a).await), answer["to_balance"]);
}

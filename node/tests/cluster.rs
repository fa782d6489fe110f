//! End-to-end tests of a real three-node cellpay cluster: money movement, idempotent retries,
//! leader failure under traffic, catch-up by snapshot, whole-cluster restarts and pending
//! transfers. Every test drives real `cellpay node` processes through the public HTTP API only
//! (see `common::TestCluster`).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{as_i64, error_code, transfer_body, Api, Options, TestCluster};
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};

const ALL: [u64; 3] = [1, 2, 3];

/// Expected balances and statements, updated from the answers of acknowledged transfers.
#[derive(Default)]
struct Model {
    balances: BTreeMap<String, i64>,
    /// Expected statement lines per account, oldest first.
    statements: BTreeMap<String, Vec<Value>>,
}

impl Model {
    fn open(&mut self, id: &str) {
        self.balances.insert(id.to_string(), 0);
        self.statements.insert(id.to_string(), Vec::new());
    }

    fn balance(&self, id: &str) -> i64 {
        *self.balances.get(id).unwrap_or(&0)
    }

    /// Applies a completed transfer `body` whose answer was `answer`; checks the answer's
    /// balances against the model.
    fn apply(&mut self, body: &Value, answer: &Value) {
        let id = body["id"].as_str().expect("id");
        let kind = body["kind"].as_str().expect("kind");
        let from = body["from"].as_str().expect("from").to_string();
        let to = body["to"].as_str().expect("to").to_string();
        let amount = body["amount"].as_i64().expect("amount");
        let fee = as_i64(&answer["fee"], "fee");
        assert_eq!(
            fee, 0,
            "a cluster without fee bands charged a fee: {answer}"
        );
        assert_eq!(
            answer["amount"], body["amount"],
            "answer amount differs from the request: {answer}"
        );
        *self.balances.entry(from.clone()).or_insert(0) -= amount + fee;
        *self.balances.entry(to.clone()).or_insert(0) += amount;
        *self.balances.entry("fees".into()).or_insert(0) += fee;
        let from_after = self.balance(&from);
        let to_after = self.balance(&to);
        assert_eq!(
            as_i64(&answer["from_balance"], "from_balance"),
            from_after,
            "{id}: from_balance: {answer}"
        );
        assert_eq!(
            as_i64(&answer["to_balance"], "to_balance"),
            to_after,
            "{id}: to_balance: {answer}"
        );
        self.statements
            .entry(from.clone())
            .or_default()
            .push(json!({
                "transfer_id": id, "direction": "debit", "amount": amount, "fee": fee,
                "balance_after": from_after, "kind": kind, "counterparty": to,
            }));
        self.statements.entry(to.clone()).or_default().push(json!({
            "transfer_id": id, "direction": "credit", "amount": amount, "fee": 0,
            "balance_after": to_after, "kind": kind, "counterparty": from,
        }));
    }

    /// Every modelled balance, read from `node`.
    async fn assert_balances(&self, api: &Api, node: u64, step: &str) {
        for (id, expected) in &self.balances {
            let account = api.account(node, id).await;
            assert_eq!(
                account["balance"].as_i64(),
                Some(*expected),
                "after {step}: node {node}: {account}"
            );
            if id != "float" {
                assert_eq!(
                    account["available"].as_i64(),
                    Some(*expected),
                    "after {step}: node {node}: {account}"
                );
                assert_eq!(
                    account["pending_out"],
                    json!(0),
                    "after {step}: node {node}: {account}"
                );
                assert_eq!(
                    account["pending_in"],
                    json!(0),
                    "after {step}: node {node}: {account}"
                );
            }
        }
    }

    /// Statements on `node`: newest first, lines as modelled.
    async fn assert_statements(&self, api: &Api, node: u64, step: &str) {
        for (id, expected) in &self.statements {
            let (status, answer) = api
                .get(node, &format!("/v1/accounts/{id}/statement?limit=100"))
                .await;
            assert_eq!(
                status, 200,
                "after {step}: statement of {id} on node {node}: {answer}"
            );
            let entries = answer["entries"]
                .as_array()
                .unwrap_or_else(|| panic!("no entries: {answer}"));
            assert_eq!(
                entries.len(),
                expected.len(),
                "after {step}: statement of {id} on node {node}: {answer}"
            );
            for (got, want) in entries.iter().zip(expected.iter().rev()) {
                for field in [
                    "transfer_id",
                    "direction",
                    "amount",
                    "fee",
                    "balance_after",
                    "kind",
                    "counterparty",
                ] {
                    assert_eq!(
                        got[field], want[field],
                        "after {step}: {id} on node {node}: line {got}, expected {want}"
                    );
                }
                assert!(got["at"].is_string(), "statement line without at: {got}");
            }
            for pair in entries.windows(2) {
                let (newer, older) = (
                    pair[0]["at"].as_str().unwrap_or(""),
                    pair[1]["at"].as_str().unwrap_or(""),
                );
                assert!(
                    newer >= older,
                    "after {step}: statement of {id} on node {node} is not newest first: {answer}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Goal: every kind of money movement does what the contract says, and every node (followers
/// included) reads the acknowledged result at once (linearizable reads).
/// Method: open customers, a merchant and an agent; issue float; then p2p, merchant_payment,
/// bill_payment, cash_in, cash_out and redeem. After each step read every balance, the transfer
/// record and the invariants (sum 0, only `float` negative) on all three nodes; at the end
/// compare statements (newest first) on every node, and check two business rejections change
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_moves_and_reads_agree_on_every_node() {
    let cluster = TestCluster::start(Options::nodes(3)).await;
    let (c1, c2, m1, a1) = (
        "+254700000001",
        "+254700000002",
        "+254711000001",
        "+254722000001",
    );
    let mut model = Model::default();
    model.open("float");
    model.open("fees");
    for (i, (id, kind)) in [
        (c1, "customer"),
        (c2, "customer"),
        (m1, "merchant"),
        (a1, "agent"),
    ]
    .into_iter()
    .enumerate()
    {
        // Create through a different node each time: followers forward.
        let node = ALL[i % 3];
        let account = cluster.create_account(node, id, kind).await;
        assert_eq!(account["id"], id);
        assert_eq!(account["kind"], kind);
        assert_eq!(account["currency"], "KES");
        assert_eq!(account["status"], "active");
        assert_eq!(account["balance"], json!(0));
        assert_eq!(account["available"], json!(0));
        model.open(id);
    }
    // Every node knows who it is and lists the three members.
    for node in ALL {
        let info = cluster
            .cluster_info(node)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(info["node_id"], json!(node), "{info}");
        let ids: Vec<u64> = info["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .filter_map(|n| n["id"].as_u64())
            .collect();
        assert_eq!(ids, vec![1, 2, 3], "node {node}: {info}");
        assert!(
            info["nodes"]
                .as_array()
                .expect("nodes")
                .iter()
                .all(|n| n["up"] == json!(true)),
            "node {node}: {info}"
        );
        let shard = &info["shards"][0];
        assert_eq!(shard["members"], json!([1, 2, 3]), "node {node}: {info}");
        assert!(
            shard["term"].as_u64().is_some_and(|t| t >= 1),
            "node {node}: {info}"
        );
        assert!(shard["applied_index"].is_u64(), "node {node}: {info}");
    }
    // Both spellings of '+' in a path reach the same account, on every node.
    for node in ALL {
        let literal = cluster.account(node, c1).await;
        let (status, encoded) = cluster
            .get(node, &format!("/v1/accounts/%2B{}", &c1[1..]))
            .await;
        assert_eq!(status, 200, "GET with %2B on node {node}: {encoded}");
        assert_eq!(literal, encoded, "node {node}");
    }

    let steps: [(&str, &str, &str, &str, u64); 9] = [
        ("s1-issue-c1", "issue", "float", c1, 100_000),
        ("s2-issue-c2", "issue", "float", c2, 10_000),
        ("s3-issue-a1", "issue", "float", a1, 50_000),
        ("s4-p2p", "p2p", c1, c2, 2_500),
        ("s5-merchant", "merchant_payment", c1, m1, 1_200),
        ("s6-bill", "bill_payment", c2, m1, 300),
        ("s7-cash-in", "cash_in", a1, c2, 5_000),
        ("s8-cash-out", "cash_out", c1, a1, 4_000),
        ("s9-redeem", "redeem", m1, "float", 1_000),
    ];
    for (i, (id, kind, from, to, amount)) in steps.into_iter().enumerate() {
        let body = transfer_body(id, kind, from, to, amount);
        let node = ALL[i % 3];
        let answer = cluster.transfer_ok(node, &body).await;
        assert_eq!(answer["id"], id, "{answer}");
        model.apply(&body, &answer);
        for read in ALL {
            model.assert_balances(&cluster, read, id).await;
            let (status, record) = cluster.get_transfer(read, id).await;
            assert_eq!(
                status, 200,
                "GET /v1/transfers/{id} on node {read}: {record}"
            );
            for (field, want) in [
                ("id", json!(id)),
                ("kind", json!(kind)),
                ("from", json!(from)),
                ("to", json!(to)),
                ("amount", json!(amount)),
                ("fee", json!(0)),
                ("currency", json!("KES")),
                ("status", json!("completed")),
            ] {
                assert_eq!(
                    record[field], want,
                    "GET /v1/transfers/{id} on node {read}: field {field}: {record}"
                );
            }
            assert!(record["created_at"].is_string(), "{record}");
            let balances = cluster.assert_invariants(read).await;
            let negative: Vec<_> = balances
                .iter()
                .filter(|(_, b)| **b < 0)
                .map(|(id, _)| id.clone())
                .collect();
            assert_eq!(
                negative,
                vec!["float".to_string()],
                "after {id}: node {read}: negative accounts"
            );
        }
    }
    let float = model.balance("float");
    assert_eq!(float, -(100_000 + 10_000 + 50_000 - 1_000));

    for node in ALL {
        model.assert_statements(&cluster, node, "all steps").await;
        // limit=N gives the N newest lines.
        let (status, answer) = cluster
            .get(node, &format!("/v1/accounts/{c1}/statement?limit=2"))
            .await;
        assert_eq!(status, 200, "{answer}");
        let ids: Vec<&str> = answer["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e["transfer_id"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(
            ids,
            vec!["s8-cash-out", "s5-merchant"],
            "node {node}: {answer}"
        );
    }

    // Business rejections: 422, recorded, and no money moves.
    let rejections = [
        (
            transfer_body("r1-broke", "p2p", c2, c1, 1_000_000),
            "insufficient_funds",
        ),
        (
            transfer_body("r2-kind", "p2p", c1, m1, 10),
            "kind_not_allowed",
        ),
        (
            transfer_body("r3-cash-in-from-customer", "cash_in", c1, c2, 10),
            "kind_not_allowed",
        ),
    ];
    for (i, (body, code)) in rejections.iter().enumerate() {
        let node = ALL[i % 3];
        let (status, answer) = cluster.transfer(node, body).await;
        assert_eq!(status, 422, "POST {body} on node {node}: {answer}");
        assert_eq!(answer["status"], "rejected", "{answer}");
        assert_eq!(answer["code"], *code, "{answer}");
        assert_eq!(answer["id"], body["id"], "{answer}");
        for read in ALL {
            let (status, record) = cluster
                .get_transfer(read, body["id"].as_str().expect("id"))
                .await;
            assert_eq!(
                status, 200,
                "rejections are recorded: node {read}: {record}"
            );
            assert_eq!(record["status"], "rejected", "{record}");
            assert_eq!(record["code"], *code, "{record}");
        }
    }
    for node in ALL {
        model.assert_balances(&cluster, node, "rejections").await;
        model.assert_statements(&cluster, node, "rejections").await;
        let summary = cluster.summary(node).await;
        assert_eq!(summary["float_balance"].as_i64(), Some(float), "{summary}");
        assert_eq!(summary["fees_balance"], json!(0), "{summary}");
        assert_eq!(
            summary["accounts"],
            json!(6),
            "4 accounts + float + fees: {summary}"
        );
        assert_eq!(
            summary["transfers"],
            json!(12),
            "9 completed + 3 rejected: {summary}"
        );
        assert_eq!(summary["pending"], json!(0), "{summary}");
    }
    // Paging through the account list with a small page sees every account once, in id order.
    for node in ALL {
        let ids: Vec<String> = cluster
            .accounts_paged(node, 2)
            .await
            .iter()
            .map(|a| a["id"].as_str().expect("id").to_string())
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            ids, sorted,
            "node {node}: accounts not in id order or repeated"
        );
        assert_eq!(ids.len(), 6, "node {node}: {ids:?}");
    }
}

// ---------------------------------------------------------------------------------------------

/// Goal: a transfer id takes effect at most once wherever and however often it is retried, and
/// every retry gets the first answer back (status and body); another body under a used id is
/// refused with 409 id_conflict.
/// Method: send one transfer 10 times round-robin over the three nodes, then 9 times at once
/// (3 per node); likewise for a rejected transfer; then reuse the ids with different bodies. Check
/// balances on every node after each round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_across_nodes_take_effect_once() {
    let cluster = TestCluster::start(Options::nodes(3)).await;
    let (c1, c2) = ("+254700000011", "+254700000012");
    cluster.create_account(1, c1, "customer").await;
    cluster.create_account(2, c2, "customer").await;
    cluster.issue(3, "fund-c1", c1, 10_000).await;

    // Sequential retries, round-robin.
    let body = transfer_body("retry-1", "p2p", c1, c2, 700);
    let mut answers = Vec::new();
    for i in 0..10 {
        answers.push(cluster.transfer(ALL[i % 3], &body).await);
    }
    assert_eq!(answers[0].0, 201, "{:?}", answers[0]);
    assert_eq!(answers[0].1["status"], "completed", "{:?}", answers[0]);
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(
            *answer,
            answers[0],
            "retry {i} (node {}) answered differently",
            ALL[i % 3]
        );
    }
    for node in ALL {
        assert_eq!(cluster.balance(node, c1).await, 9_300, "node {node}");
        assert_eq!(cluster.balance(node, c2).await, 700, "node {node}");
    }

    let retry1_answer = answers[0].1.clone();
    // Beyond the contract: the answer says where in the log the transfer was first applied, every
    // retry is told that same place, and so is every node's lookup of the record.
    let place = |v: &Value| {
        (
            v["shard"].as_u64(),
            v["log_index"].as_u64(),
            v["log_pos"].as_u64(),
        )
    };
    let first_place = place(&retry1_answer);
    assert!(
        matches!(first_place, (Some(_), Some(index), Some(_)) if index > 0),
        "{retry1_answer}"
    );
    for node in ALL {
        let (status, record) = cluster.api.get(node, "/v1/transfers/retry-1").await;
        assert_eq!(status, 200, "{record}");
        assert_eq!(place(&record), first_place, "node {node}: {record}");
    }

    // Concurrent retries of a fresh id: 3 at once on each node.
    let body = transfer_body("retry-2", "p2p", c1, c2, 1_100);
    let answers: Vec<(u16, Value)> =
        futures::future::join_all((0..9).map(|i| cluster.api.transfer(ALL[i % 3], &body))).await;
    assert_eq!(answers[0].0, 201, "{:?}", answers[0]);
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(
            *answer,
            answers[0],
            "concurrent retry {i} (node {}) answered differently",
            ALL[i % 3]
        );
    }
    for node in ALL {
        assert_eq!(cluster.balance(node, c1).await, 8_200, "node {node}");
        assert_eq!(cluster.balance(node, c2).await, 1_800, "node {node}");
    }

    // A rejection is an answer too: retries get the same 422, even once funds would suffice.
    let broke = transfer_body("retry-broke", "p2p", c2, c1, 5_000);
    let first = cluster.transfer(1, &broke).await;
    assert_eq!(first.0, 422, "{first:?}");
    assert_eq!(first.1["code"], "insufficient_funds", "{first:?}");
    cluster.issue(2, "fund-c2", c2, 10_000).await;
    for i in 0..6 {
        let again = cluster.transfer(ALL[i % 3], &broke).await;
        assert_eq!(
            again,
            first,
            "retry {i} of a rejected transfer (node {}) answered differently",
            ALL[i % 3]
        );
    }
    for node in ALL {
        assert_eq!(cluster.balance(node, c1).await, 8_200, "node {node}");
        assert_eq!(cluster.balance(node, c2).await, 11_800, "node {node}");
    }

    // A batch retried on every node: the same results each time, one effect.
    let batch = json!({"transfers": [
        transfer_body("batch-a", "p2p", c1, c2, 100),
        transfer_body("batch-b", "p2p", c2, c1, 40),
        transfer_body("batch-c", "p2p", c1, c2, 1_000_000),
        transfer_body("retry-1", "p2p", c1, c2, 700),
        transfer_body("retry-1", "p2p", c1, c2, 999),
    ]});
    let first = cluster.post(1, "/v1/transfers/batch", &batch).await;
    assert_eq!(first.0, 200, "{first:?}");
    let results = first.1["results"].as_array().expect("results");
    assert_eq!(results.len(), 5, "{first:?}");
    assert_eq!(results[0]["status"], "completed", "{first:?}");
    assert_eq!(results[1]["status"], "completed", "{first:?}");
    assert_eq!(results[2]["code"], "insufficient_funds", "{first:?}");
    assert_eq!(
        results[3], retry1_answer,
        "an old id in a batch gets its first answer"
    );
    assert_eq!(error_code(&results[4]), "id_conflict", "{first:?}");
    for node in ALL {
        let again = cluster.post(node, "/v1/transfers/batch", &batch).await;
        assert_eq!(again, first, "batch retried on node {node}");
    }
    for node in ALL {
        assert_eq!(cluster.balance(node, c1).await, 8_140, "node {node}");
        assert_eq!(cluster.balance(node, c2).await, 11_860, "node {node}");
    }

    // Same id, different body: 409 id_conflict on every node, nothing moves.
    let summary_before = cluster.summary(1).await;
    let variants = [
        transfer_body("retry-1", "p2p", c1, c2, 701),
        transfer_body("retry-1", "p2p", c2, c1, 700),
        json!({"id": "retry-1", "kind": "p2p", "from": c1, "to": c2, "amount": 700, "currency": "KES", "memo": "other"}),
        transfer_body("retry-broke", "p2p", c2, c1, 4_999),
    ];
    for (i, variant) in variants.iter().enumerate() {
        for node in ALL {
            let (status, answer) = cluster.transfer(node, variant).await;
            assert_eq!(
                status, 409,
                "variant {i} {variant} on node {node}: {answer}"
            );
            assert_eq!(
                error_code(&answer),
                "id_conflict",
                "variant {i} on node {node}: {answer}"
            );
        }
    }
    for node in ALL {
        assert_eq!(cluster.balance(node, c1).await, 8_140, "node {node}");
        assert_eq!(cluster.balance(node, c2).await, 11_860, "node {node}");
        assert_eq!(
            cluster.summary(node).await,
            summary_before,
            "node {node}: summary changed by id conflicts"
        );
        let (status, record) = cluster.get_transfer(node, "retry-1").await;
        assert_eq!(status, 200, "{record}");
        assert_eq!(record["amount"], json!(700), "{record}");
        assert_eq!(record["status"], "completed", "{record}");
        assert_eq!(cluster.sum_of_balances(node).await, 0);
    }
}

// ---------------------------------------------------------------------------------------------

/// What one traffic worker learned about one transfer.
struct Sent {
    body: Value,
    /// The final answer (status, body), or None when every attempt failed.
    answer: Option<(u16, Value)>,
}

/// Sends `body` until a node gives a final answer (201, 422 or another 4xx), moving to the next
/// node after a transport error, a timeout or a 5xx/429; at most `attempts` tries.
async fn send_until_answered(
    api: &Api,
    body: &Value,
    first_node: u64,
    attempts: usize,
) -> Option<(u16, Value)> {
    let n = api.nodes();
    for attempt in 0..attempts {
        let node = (first_node - 1 + attempt as u64) % n + 1;
        match api
            .try_post(node, "/v1/transfers", body, Duration::from_secs(3))
            .await
        {
            Ok((status, answer)) if status == 429 || status >= 500 => {
                let _ = answer;
            }
            Ok(final_answer) => return Some(final_answer),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Goal: losing the leader mid-traffic loses no acknowledged transfer and applies none twice;
/// a new leader takes over and transfers keep succeeding.
/// Method: three background workers send p2p transfers continuously (unique ids; on error or
/// timeout the same id is retried on the next node, bounded attempts). After 30
/// acknowledgements the leader is killed with SIGKILL; the test waits for a new leader and 30
/// more acknowledgements, stops the traffic, settles any unanswered id by retrying it, then
/// checks on both survivors (and later on the restarted node) that every 201 transfer is
/// present and completed and that balances equal what the acknowledged transfers imply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_mid_traffic() {
    let cluster = TestCluster::start(Options::nodes(3)).await;
    let customers: Vec<String> = (0..6).map(|i| format!("+2547000001{i:02}")).collect();
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for (i, id) in customers.iter().enumerate() {
        cluster.create_account(ALL[i % 3], id, "customer").await;
        cluster
            .issue(ALL[i % 3], &format!("fund-{i}"), id, 1_000_000)
            .await;
        expected.insert(id.clone(), 1_000_000);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..3usize {
        let api = cluster.api.clone();
        let (stop, acked) = (stop.clone(), acked.clone());
        let (from, to) = (customers[2 * w].clone(), customers[2 * w + 1].clone());
        workers.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let (a, b) = if i.is_multiple_of(2) {
                    (&from, &to)
                } else {
                    (&to, &from)
                };
                let body = transfer_body(&format!("w{w}-t{i}"), "p2p", a, b, 1 + i % 9);
                let answer = send_until_answered(&api, &body, (w as u64 + i) % 3 + 1, 40).await;
                if matches!(answer, Some((201, _))) {
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                sent.push(Sent { body, answer });
                i += 1;
            }
            sent
        }));
    }

    let wait_acked = |target: usize, within: Duration, what: &'static str| {
        let acked = acked.clone();
        async move {
            let deadline = Instant::now() + within;
            while acked.load(Ordering::SeqCst) < target {
                assert!(
                    Instant::now() < deadline,
                    "{what}: only {} of {target} acknowledgements",
                    acked.load(Ordering::SeqCst)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // Two failovers: kill the leader, see a new one elected and traffic flow again; bring the
    // killed node back and kill the next leader, so that the restarted node must take part.
    let mut down = 0;
    for round in 1..=2 {
        let before = acked.load(Ordering::SeqCst);
        wait_acked(before + 40, Duration::from_secs(30), "before the kill").await;
        let old_leader = cluster.leader().await;
        cluster.kill_node(old_leader);
        let killed = Instant::now();
        let acked_at_kill = acked.load(Ordering::SeqCst);
        let new_leader = cluster.wait_for_leader().await;
        assert_ne!(new_leader, old_leader, "the killed node cannot lead");
        eprintln!(
            "round {round}: leader {old_leader} killed; node {new_leader} leads after {:?}",
            killed.elapsed()
        );
        wait_acked(
            acked_at_kill + 40,
            Duration::from_secs(30),
            "after the kill",
        )
        .await;
        eprintln!(
            "round {round}: {} acknowledgements, {} after the kill",
            acked.load(Ordering::SeqCst),
            acked.load(Ordering::SeqCst) - acked_at_kill
        );
        wait_up_flag(&cluster, old_leader, false).await;
        if round == 1 {
            cluster.start_node(old_leader);
            cluster.wait_for_leader().await;
            wait_up_flag(&cluster, old_leader, true).await;
        } else {
            down = old_leader;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let mut sent: Vec<Sent> = Vec::new();
    for worker in workers {
        sent.extend(worker.await.expect("traffic worker"));
    }

    // Settle unanswered ids: retrying is safe, that is the point of idempotency.
    for item in sent.iter_mut().filter(|s| s.answer.is_none()) {
        item.answer = send_until_answered(&cluster.api, &item.body, 1, 60).await;
        assert!(
            item.answer.is_some(),
            "no node answers {} any more",
            item.body
        );
    }
    let mut completed = Vec::new();
    for item in &sent {
        let (status, answer) = item.answer.as_ref().expect("settled");
        match status {
            201 => {
                assert_eq!(answer["status"], "completed", "{}: {answer}", item.body);
                assert_eq!(answer["fee"], json!(0), "{answer}");
                let amount = item.body["amount"].as_i64().expect("amount");
                *expected
                    .get_mut(item.body["from"].as_str().expect("from"))
                    .expect("known") -= amount;
                *expected
                    .get_mut(item.body["to"].as_str().expect("to"))
                    .expect("known") += amount;
                completed.push(item.body["id"].as_str().expect("id").to_string());
            }
            _ => panic!(
                "transfer {} got a non-201 final answer {status}: {answer}",
                item.body
            ),
        }
    }
    eprintln!("{} transfers sent, all acknowledged", completed.len());

    let verify = |node: u64| {
        let api = cluster.api.clone();
        let completed = completed.clone();
        let expected = expected.clone();
        async move {
            let missing: Vec<String> = stream::iter(completed.iter().cloned())
                .map(|id| {
                    let api = api.clone();
                    async move {
                        let (status, record) = api.get_transfer(node, &id).await;
                        if status == 200 && record["status"] == "completed" {
                            None
                        } else {
                            Some(format!("{id}: {status} {record}"))
                        }
                    }
                })
                .buffer_unordered(16)
                .filter_map(|x| async move { x })
                .collect()
                .await;
            assert!(
                missing.is_empty(),
                "node {node}: {} of {} acknowledged transfers missing or not completed; the first: {:?}",
                missing.len(),
                completed.len(),
                &missing[..missing.len().min(5)]
            );
            for (id, balance) in &expected {
                assert_eq!(
                    api.balance(node, id).await,
                    *balance,
                    "node {node}: balance of {id}"
                );
            }
            assert_eq!(api.sum_of_balances(node).await, 0, "node {node}");
        }
    };
    for node in ALL.into_iter().filter(|&n| n != down) {
        verify(node).await;
    }
    // The last killed node comes back, catches up and agrees.
    cluster.start_node(down);
    cluster.wait_for_leader().await;
    verify(down).await;
}

/// Waits (bounded, 15 s) until every live node's GET /v1/cluster lists `node` with `up` equal to
/// `up`.
async fn wait_up_flag(cluster: &TestCluster, node: u64, up: bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut seen = Vec::new();
        for asked in cluster.live_nodes().into_iter().filter(|&n| n != node) {
            let info = cluster
                .cluster_info(asked)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let entry = info["nodes"]
                .as_array()
                .and_then(|nodes| {
                    nodes
                        .iter()
                        .find(|n| n["id"].as_u64() == Some(node))
                        .cloned()
                })
                .unwrap_or_else(|| {
                    panic!("node {asked}: /v1/cluster does not list node {node}: {info}")
                });
            seen.push((asked, entry["up"].clone()));
        }
        if seen.iter().all(|(_, flag)| *flag == json!(up)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {node} should be listed with up={up} within 15 s; seen {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------

/// Goal: a node that was down while the others purged their logs catches up by installing a
/// snapshot, then serves correct data as part of a majority.
/// Method: a cluster snapshotting every 20 entries and keeping 5 log entries behind a snapshot;
/// SIGKILL one follower (noting its applied index), run 300 transfers, check the leader's
/// purged_index is past the follower's applied index (log catch-up impossible), restart the
/// follower, wait until its own applied_index reaches the leader's, then kill the leader (or the
/// other node, should the follower lead) so that the restarted node is needed for every commit,
/// and check balances, transfer records and a new transfer through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_catches_up_by_snapshot() {
    let cluster = TestCluster::start(Options {
        nodes: 3,
        snapshot_logs: Some(20),
        logs_to_keep: Some(5),
        ..Options::nodes(3)
    })
    .await;
    let customers: Vec<String> = (0..10).map(|i| format!("+2547000002{i:02}")).collect();
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for (i, id) in customers.iter().enumerate() {
        cluster.create_account(1, id, "customer").await;
        cluster.issue(1, &format!("fund-{i}"), id, 1_000_000).await;
        expected.insert(id.clone(), 1_000_000);
    }
    let leader = cluster.leader().await;
    let follower = ALL.into_iter().find(|&n| n != leader).expect("a follower");
    let other = ALL
        .into_iter()
        .find(|&n| n != leader && n != follower)
        .expect("the other follower");
    // Let the follower apply everything so far, then note where it stands.
    let leader_applied = cluster
        .shard_field(leader, "applied_index")
        .await
        .expect("leader applied_index");
    let deadline = Instant::now() + Duration::from_secs(10);
    let follower_applied = loop {
        let applied = cluster
            .shard_field(follower, "applied_index")
            .await
            .unwrap_or(0);
        if applied >= leader_applied {
            break applied;
        }
        assert!(
            Instant::now() < deadline,
            "follower {follower} stuck at {applied} < {leader_applied}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    cluster.kill_node(follower);
    eprintln!("killed follower {follower} at applied index {follower_applied}; leader {leader}");

    let api = cluster.api.clone();
    let bodies: Vec<Value> = (0..300usize)
        .map(|i| {
            transfer_body(
                &format!("snap-{i}"),
                "p2p",
                &customers[i % 10],
                &customers[(i + 3) % 10],
                (i % 50 + 1) as u64,
            )
        })
        .collect();
    let answers: Vec<(usize, Option<(u16, Value)>)> = stream::iter(bodies.iter().enumerate())
        .map(|(i, body)| {
            let api = api.clone();
            let node = if i % 2 == 0 { leader } else { other };
            async move { (i, send_until_answered(&api, body, node, 20).await) }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for (i, answer) in &answers {
        let body = &bodies[*i];
        match answer {
            Some((201, answer)) if answer["status"] == "completed" => {
                let amount = body["amount"].as_i64().expect("amount");
                *expected
                    .get_mut(body["from"].as_str().expect("from"))
                    .expect("known") -= amount;
                *expected
                    .get_mut(body["to"].as_str().expect("to"))
                    .expect("known") += amount;
            }
            other => panic!("transfer {body} with one node down: {other:?}"),
        }
    }
    let current = cluster.wait_for_leader().await;
    // openraft purges behind a snapshot only between replication attempts: while the dead
    // follower's retry holds a log range in flight, the purge waits for its next failure
    // (one backoff period). Poll, bounded, for the purge to pass the follower's position.
    let purge_deadline = Instant::now() + Duration::from_secs(20);
    let mut purged = cluster.shard_field(current, "purged_index").await;
    while purged.is_none_or(|p| p <= follower_applied) && Instant::now() < purge_deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        purged = cluster.shard_field(current, "purged_index").await;
    }
    let target = cluster
        .shard_field(current, "applied_index")
        .await
        .expect("leader applied_index");
    eprintln!(
        "leader {current}: applied {target}, purged {purged:?}, snapshot {:?}",
        cluster.shard_field(current, "snapshot_index").await
    );
    assert!(
        purged.is_some_and(|p| p > follower_applied),
        "leader {current} purged its log only up to {purged:?}, not past the follower's applied index {follower_applied}: the follower could catch up from the log, so this test would not exercise snapshots"
    );

    cluster.start_node(follower);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let applied = match cluster.cluster_info(follower).await {
            Ok(info) => info["shards"][0]["applied_index"].as_u64(),
            Err(_) => None,
        };
        if applied.is_some_and(|a| a >= target) {
            break;
        }
        assert!(Instant::now() < deadline, "restarted follower {follower} reached applied_index {applied:?}, not {target}, within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let snapshot = cluster.shard_field(follower, "snapshot_index").await;
    assert!(
        snapshot.is_some_and(|s| s > follower_applied),
        "restarted follower {follower} caught up without a snapshot past {follower_applied}: snapshot_index {snapshot:?}"
    );

    let current = cluster.wait_for_leader().await;
    let victim = if current != follower { current } else { other };
    cluster.kill_node(victim);
    let survivor = ALL
        .into_iter()
        .find(|&n| n != victim && n != follower)
        .expect("survivor");
    let new_leader = cluster.wait_for_leader().await;
    eprintln!("killed {victim}; leader now {new_leader}; follower {follower} and {survivor} form the majority");
    for (id, balance) in &expected {
        assert_eq!(
            cluster.balance(follower, id).await,
            *balance,
            "restarted node {follower}: balance of {id}"
        );
    }
    assert_eq!(cluster.sum_of_balances(follower).await, 0);
    for i in [0usize, 1, 150, 299] {
        let (status, record) = cluster.get_transfer(follower, &format!("snap-{i}")).await;
        assert_eq!(status, 200, "restarted node {follower}: snap-{i}: {record}");
        assert_eq!(record["status"], "completed", "{record}");
    }
    // Every commit now needs the restarted node.
    let body = transfer_body("after-catch-up", "p2p", &customers[0], &customers[1], 77);
    let answer = send_until_answered(&cluster.api, &body, follower, 20).await;
    assert!(
        matches!(&answer, Some((201, a)) if a["status"] == "completed"),
        "transfer through restarted node {follower}: {answer:?}"
    );
    for node in [follower, survivor] {
        assert_eq!(
            cluster.balance(node, &customers[0]).await,
            expected[&customers[0]] - 77,
            "node {node}"
        );
        assert_eq!(
            cluster.balance(node, &customers[1]).await,
            expected[&customers[1]] + 77,
            "node {node}"
        );
        assert_eq!(cluster.sum_of_balances(node).await, 0);
    }
}

// ---------------------------------------------------------------------------------------------

/// One acknowledged transfer: the request, its answer, and its record right after.
struct Acked {
    body: Value,
    status: u16,
    answer: Value,
}

async fn run_transfers(
    cluster: &TestCluster,
    prefix: &str,
    customers: &[String],
    merchant: &str,
    count: usize,
) -> Vec<Acked> {
    let mut acked = Vec::new();
    for i in 0..count {
        let from = &customers[i % customers.len()];
        let body = match i % 5 {
            // Sometimes more than anyone holds: recorded as a 422 rejection.
            0 => transfer_body(
                &format!("{prefix}-{i}"),
                "p2p",
                from,
                &customers[(i + 1) % customers.len()],
                400_000,
            ),
            1 => transfer_body(
                &format!("{prefix}-{i}"),
                "merchant_payment",
                from,
                merchant,
                1_000 + i as u64,
            ),
            2 => json!({"id": format!("{prefix}-{i}"), "kind": "p2p", "from": from,
                        "to": customers[(i + 2) % customers.len()], "amount": 500, "pending": true, "timeout_s": 3600}),
            _ => transfer_body(
                &format!("{prefix}-{i}"),
                "p2p",
                from,
                &customers[(i + 3) % customers.len()],
                2_000 + i as u64,
            ),
        };
        let (status, answer) = cluster.transfer(ALL[i % 3], &body).await;
        assert!(
            status == 201 || status == 422,
            "{body} on node {}: {status} {answer}",
            ALL[i % 3]
        );
        acked.push(Acked {
            body,
            status,
            answer,
        });
    }
    acked
}

/// Everything a client can see of the given transfers and of every account, read from `node`.
async fn observe(cluster: &TestCluster, node: u64, acked: &[Acked]) -> (Vec<Value>, Vec<Value>) {
    let accounts = cluster.accounts(node).await;
    let mut records = Vec::new();
    for item in acked {
        let id = item.body["id"].as_str().expect("id");
        let (status, record) = cluster.get_transfer(node, id).await;
        assert_eq!(
            status, 200,
            "node {node}: acknowledged transfer {id} missing: {record}"
        );
        records.push(record);
    }
    (accounts, records)
}

/// After a restart: every node shows exactly what was seen before, and retries of every
/// acknowledged transfer still get their first answer.
async fn assert_unchanged(
    cluster: &TestCluster,
    before: &(Vec<Value>, Vec<Value>),
    acked: &[Acked],
    when: &str,
) {
    // First the newest acknowledged transfer, at once on every node: the entries a crash leaves
    // uncommitted-as-far-as-the-new-leader-knows are the newest ones.
    let last = acked.last().expect("some transfers");
    let last_id = last.body["id"].as_str().expect("id");
    for node in ALL {
        let (status, record) = cluster.get_transfer(node, last_id).await;
        assert_eq!(
            (status, &record),
            (200, before.1.last().expect("records")),
            "{when}: node {node}: the newest acknowledged transfer {last_id}, read right after the restart"
        );
    }
    for node in ALL {
        let now = observe(cluster, node, acked).await;
        assert_eq!(now.0, before.0, "{when}: node {node}: accounts differ");
        for (got, want) in now.1.iter().zip(before.1.iter()) {
            assert_eq!(got, want, "{when}: node {node}: transfer record differs");
        }
        assert_eq!(
            cluster.sum_of_balances(node).await,
            0,
            "{when}: node {node}"
        );
    }
    for (i, item) in acked.iter().enumerate() {
        let node = ALL[i % 3];
        let again = cluster.transfer(node, &item.body).await;
        assert_eq!(
            again,
            (item.status, item.answer.clone()),
            "{when}: retry of {} on node {node}",
            item.body
        );
    }
    // The retries changed nothing.
    assert_eq!(
        cluster.accounts(1).await,
        before.0,
        "{when}: retries changed balances"
    );
}

/// Goal: acknowledged transfers (201 and 422) and balances survive a restart of the whole
/// cluster, graceful or not.
/// Method: run a mix of completed, rejected and pending transfers and record their answers,
/// their records and every account; SIGTERM all three nodes, restart them and compare everything
/// on every node (and retry every transfer: same answer, no effect); then run more transfers,
/// SIGKILL all three right after the last acknowledgement, restart and compare again (twice). The
/// newest acknowledged transfer is read first, on every node, as soon as a leader is agreed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_cluster_restart_keeps_everything() {
    let cluster = TestCluster::start(Options::nodes(3)).await;
    let customers: Vec<String> = (0..5).map(|i| format!("+2547000003{i:02}")).collect();
    let merchant = "+254711000301";
    cluster.create_account(1, merchant, "merchant").await;
    for (i, id) in customers.iter().enumerate() {
        cluster.create_account(ALL[i % 3], id, "customer").await;
        cluster
            .issue(ALL[i % 3], &format!("fund-{i}"), id, 300_000)
            .await;
    }
    let mut acked = run_transfers(&cluster, "a", &customers, merchant, 40).await;
    assert!(
        acked.iter().any(|a| a.status == 422),
        "the mix includes rejections"
    );
    assert!(
        acked.iter().any(|a| a.answer["status"] == "pending"),
        "the mix includes pending transfers"
    );
    let before = observe(&cluster, 1, &acked).await;

    // Graceful: SIGTERM all three at once, wait for clean exits, restart.
    for node in ALL {
        cluster.sigterm_node(node).await;
    }
    for node in ALL {
        cluster.wait_exit(node).await;
    }
    for node in ALL {
        cluster.start_node(node);
    }
    cluster.wait_for_leader().await;
    assert_unchanged(&cluster, &before, &acked, "after a graceful restart").await;

    // Crash, twice: SIGKILL all three right after the last acknowledgement.
    for round in 1..=2 {
        acked.extend(
            run_transfers(&cluster, &format!("crash{round}"), &customers, merchant, 30).await,
        );
        let before = observe(&cluster, 2, &acked).await;
        // The old leader comes back first (openraft lets it resume as leader), the others a
        // moment later.
        let leader = cluster.leader().await;
        for node in ALL {
            cluster.kill_node(node);
        }
        cluster.start_node(leader);
        tokio::time::sleep(Duration::from_millis(300)).await;
        for node in ALL.into_iter().filter(|&n| n != leader) {
            cluster.start_node(node);
        }
        cluster.wait_for_leader().await;
        let when = format!("after kill -9 of every node (round {round})");
        assert_unchanged(&cluster, &before, &acked, &when).await;
    }
}

// ---------------------------------------------------------------------------------------------

/// Goal: a pending transfer holds money until posted, voided, or its timeout passes, and then
/// releases it exactly; a voided transfer cannot be posted.
/// Method: hold 3000 with timeout_s 2 and check the holds on every node; poll until the record
/// says voided (not before ~1.5 s) and check the holds are gone and balances untouched; posting
/// it now gives 409 transfer_not_pending. Then hold with a long timeout and post it (money moves),
/// and hold and void one explicitly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_transfer_expires() {
    let cluster = TestCluster::start(Options::nodes(3)).await;
    let (c1, c2) = ("+254700000401", "+254700000402");
    cluster.create_account(1, c1, "customer").await;
    cluster.create_account(2, c2, "customer").await;
    cluster.issue(3, "fund", c1, 10_000).await;

    let expect_account = |node: u64,
                          id: &'static str,
                          balance: i64,
                          pending_out: i64,
                          pending_in: i64,
                          when: &'static str| {
        let api = cluster.api.clone();
        async move {
            let account = api.account(node, id).await;
            let want = json!({"balance": balance, "available": balance - pending_out, "pending_out": pending_out, "pending_in": pending_in});
            for field in ["balance", "available", "pending_out", "pending_in"] {
                assert_eq!(
                    account[field], want[field],
                    "{when}: node {node}: {id}.{field}: {account}"
                );
            }
        }
    };

    let hold = json!({"id": "hold-1", "kind": "p2p", "from": c1, "to": c2, "amount": 3_000, "pending": true, "timeout_s": 2});
    let (status, answer) = cluster.transfer(2, &hold).await;
    let created = Instant::now();
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["status"], "pending", "{answer}");
    assert_eq!(answer["id"], "hold-1", "{answer}");
    for node in ALL {
        expect_account(node, c1, 10_000, 3_000, 0, "while held").await;
        expect_account(node, c2, 0, 0, 3_000, "while held").await;
        let (status, record) = cluster.get_transfer(node, "hold-1").await;
        assert_eq!(status, 200, "{record}");
        assert_eq!(record["status"], "pending", "node {node}: {record}");
        assert_eq!(
            cluster.summary(node).await["pending"],
            json!(1),
            "node {node}"
        );
    }
    // A retry while pending gets the first answer.
    assert_eq!(cluster.transfer(3, &hold).await, (status, answer.clone()));

    let deadline = created + Duration::from_secs(15);
    loop {
        let (status, record) = cluster.get_transfer(1, "hold-1").await;
        assert_eq!(status, 200, "{record}");
        if record["status"] == "voided" {
            break;
        }
        assert_eq!(record["status"], "pending", "{record}");
        assert!(
            Instant::now() < deadline,
            "hold-1 (timeout_s 2) still pending after 15 s: {record}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let voided_after = created.elapsed();
    eprintln!("hold-1 voided after {voided_after:?}");
    assert!(
        voided_after >= Duration::from_millis(1_500),
        "hold-1 (timeout_s 2) voided after only {voided_after:?}"
    );
    for node in ALL {
        expect_account(node, c1, 10_000, 0, 0, "after expiry").await;
        expect_account(node, c2, 0, 0, 0, "after expiry").await;
        let (_, record) = cluster.get_transfer(node, "hold-1").await;
        assert_eq!(record["status"], "voided", "node {node}: {record}");
        assert_eq!(
            cluster.summary(node).await["pending"],
            json!(0),
            "node {node}"
        );
        assert_eq!(cluster.sum_of_balances(node).await, 0);
    }
    let (status, answer) = cluster
        .post(3, "/v1/transfers/hold-1/post", &json!({}))
        .await;
    assert_eq!(status, 409, "posting an expired transfer: {answer}");
    assert_eq!(error_code(&answer), "transfer_not_pending", "{answer}");
    expect_account(1, c1, 10_000, 0, 0, "after a refused post").await;
    expect_account(1, c2, 0, 0, 0, "after a refused post").await;

    // Posted in time: the money moves.
    let hold2 = json!({"id": "hold-2", "kind": "p2p", "from": c1, "to": c2, "amount": 2_500, "pending": true, "timeout_s": 60});
    let (status, answer) = cluster.transfer(1, &hold2).await;
    assert_eq!(
        (status, answer["status"].clone()),
        (201, json!("pending")),
        "{answer}"
    );
    expect_account(3, c1, 10_000, 2_500, 0, "hold-2 held").await;
    let (status, record) = cluster
        .post(2, "/v1/transfers/hold-2/post", &json!({}))
        .await;
    assert_eq!(status, 200, "posting hold-2: {record}");
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["id"], "hold-2", "{record}");
    for node in ALL {
        expect_account(node, c1, 7_500, 0, 0, "hold-2 posted").await;
        expect_account(node, c2, 2_500, 0, 0, "hold-2 posted").await;
        let (_, record) = cluster.get_transfer(node, "hold-2").await;
        assert_eq!(record["status"], "completed", "node {node}: {record}");
    }

    // Voided by hand: the hold goes, a later post is refused.
    let hold3 = json!({"id": "hold-3", "kind": "p2p", "from": c1, "to": c2, "amount": 1_000, "pending": true, "timeout_s": 60});
    let (status, answer) = cluster.transfer(3, &hold3).await;
    assert_eq!(
        (status, answer["status"].clone()),
        (201, json!("pending")),
        "{answer}"
    );
    let (status, record) = cluster
        .post(1, "/v1/transfers/hold-3/void", &json!({}))
        .await;
    assert_eq!(status, 200, "voiding hold-3: {record}");
    assert_eq!(record["status"], "voided", "{record}");
    let (status, answer) = cluster
        .post(2, "/v1/transfers/hold-3/post", &json!({}))
        .await;
    assert_eq!(status, 409, "posting a voided transfer: {answer}");
    assert_eq!(error_code(&answer), "transfer_not_pending", "{answer}");
    for node in ALL {
        expect_account(node, c1, 7_500, 0, 0, "hold-3 voided").await;
        expect_account(node, c2, 2_500, 0, 0, "hold-3 voided").await;
        assert_eq!(cluster.sum_of_balances(node).await, 0);
    }
}

// ---------------------------------------------------------------------------------------------

/// Goal: pending transfers survive the loss of the leader: the new leader voids the expired ones
/// (the expiry timer runs wherever the leadership goes) and can post the others.
/// Method: through a follower, hold 3000 with timeout_s 3 and 2000 with timeout_s 120; SIGKILL
/// the leader at once; on the survivors wait for the short hold to read voided with its holds
/// released, post the long one (money moves), and check the restarted old leader agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_transfers_survive_leader_loss() {
    let cluster = TestCluster::start(Options::nodes(3)).await;
    let (c1, c2) = ("+254700000601", "+254700000602");
    cluster.create_account(1, c1, "customer").await;
    cluster.create_account(2, c2, "customer").await;
    cluster.issue(3, "fund", c1, 10_000).await;
    let leader = cluster.leader().await;
    let follower = ALL.into_iter().find(|&n| n != leader).expect("follower");
    for (id, amount, timeout_s) in [("short", 3_000, 3), ("long", 2_000, 120)] {
        let body = json!({"id": id, "kind": "p2p", "from": c1, "to": c2, "amount": amount, "pending": true, "timeout_s": timeout_s});
        let (status, answer) = cluster.transfer(follower, &body).await;
        assert_eq!(
            (status, answer["status"].clone()),
            (201, json!("pending")),
            "{body}: {answer}"
        );
    }
    let created = Instant::now();
    cluster.kill_node(leader);
    let new_leader = cluster.wait_for_leader().await;
    let survivors: Vec<u64> = ALL.into_iter().filter(|&n| n != leader).collect();
    eprintln!("leader {leader} killed with two holds pending; node {new_leader} leads");

    let deadline = created + Duration::from_secs(20);
    loop {
        let (status, record) = cluster.get_transfer(new_leader, "short").await;
        assert_eq!(status, 200, "{record}");
        if record["status"] == "voided" {
            break;
        }
        assert_eq!(record["status"], "pending", "{record}");
        assert!(
            Instant::now() < deadline,
            "'short' (timeout_s 3) still pending 20 s after the leader was lost: {record}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("'short' voided {:?} after its creation", created.elapsed());
    for &node in &survivors {
        let account = cluster.account(node, c1).await;
        assert_eq!(
            (
                account["balance"].clone(),
                account["pending_out"].clone(),
                account["available"].clone()
            ),
            (json!(10_000), json!(2_000), json!(8_000)),
            "node {node}: only 'long' still holds money: {account}"
        );
        let (_, record) = cluster.get_transfer(node, "long").await;
        assert_eq!(record["status"], "pending", "node {node}: {record}");
    }
    let (status, record) = cluster
        .post(survivors[0], "/v1/transfers/long/post", &json!({}))
        .await;
    assert_eq!(
        (status, record["status"].clone()),
        (200, json!("completed")),
        "posting 'long' after the failover: {record}"
    );

    cluster.start_node(leader);
    cluster.wait_for_leader().await;
    for node in ALL {
        let c1_account = cluster.account(node, c1).await;
        let c2_account = cluster.account(node, c2).await;
        assert_eq!(
            (
                c1_account["balance"].clone(),
                c1_account["pending_out"].clone()
            ),
            (json!(8_000), json!(0)),
            "node {node}: {c1_account}"
        );
        assert_eq!(
            (
                c2_account["balance"].clone(),
                c2_account["pending_in"].clone()
            ),
            (json!(2_000), json!(0)),
            "node {node}: {c2_account}"
        );
        for (id, status) in [("short", "voided"), ("long", "completed")] {
            let (_, record) = cluster.get_transfer(node, id).await;
            assert_eq!(record["status"], status, "node {node}: {record}");
        }
        assert_eq!(cluster.sum_of_balances(node).await, 0);
    }
}

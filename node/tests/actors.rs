//! The actor layer end to end: a flood of transfers from one hot account meets the account
//! actor's bounded mailbox — some callers get 429 `overloaded` at once — and nothing is lost
//! or applied twice: every 201 is in the ledger once, every 429 never. The actor metrics are
//! exported.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_on_one_account_is_bounded_and_exact() {
    // Small account mailboxes (the operator's `[actors]` knobs), so the flood meets them on
    // any machine speed: 8 transfers accepted per account, 2 of them in flight.
    let cluster = TestCluster::create(Options::nodes(3));
    for node in 1..=3 {
        let path = cluster.node_dir(node).join("config.toml");
        let text = std::fs::read_to_string(&path).expect("config");
        let text = text
            .replace("account_mailbox_max = 256", "account_mailbox_max = 8")
            .replace("account_inflight_max = 64", "account_inflight_max = 2");
        assert!(text.contains("account_mailbox_max = 8"), "{text}");
        std::fs::write(&path, text).expect("config written");
        cluster.start_node(node);
    }
    cluster.wait_for_leader().await;
    let payer = "+254700000100";
    let payees: Vec<String> = (0..4).map(|i| format!("+25470000020{i}")).collect();
    cluster.create_account(1, payer, "customer").await;
    for payee in &payees {
        cluster.create_account(2, payee, "customer").await;
    }
    cluster.issue(1, "flood-fund", payer, 1_000_000).await;
    let leader = cluster.leader().await;

    // 600 transfers from one account at once, all on the leader (where its actor lives).
    let api = cluster.api.clone();
    let sends = (0..600).map(|n| {
        let api = api.clone();
        let body = transfer_body(&format!("flood-{n}"), "p2p", payer, &payees[n % 4], 1);
        async move { (n, api.transfer(leader, &body).await) }
    });
    let answers: Vec<(usize, (u16, Value))> = futures::future::join_all(sends).await;
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for (_, (status, _)) in &answers {
        *by_status.entry(*status).or_default() += 1;
    }
    let overloaded = by_status.get(&429).copied().unwrap_or(0);
    let accepted = by_status.get(&201).copied().unwrap_or(0);
    assert!(
        overloaded > 0,
        "a flood must meet the bounded mailbox: {by_status:?}"
    );
    assert!(accepted > 0, "{by_status:?}");
    assert_eq!(overloaded + accepted, answers.len(), "{by_status:?}");

    for (n, (status, answer)) in &answers {
        let (found, record) = cluster
            .get_transfer(1 + (*n as u64 % 3), &format!("flood-{n}"))
            .await;
        match status {
            201 => assert_eq!(
                (found, record["status"].as_str()),
                (200, Some("completed")),
                "{answer}"
            ),
            429 => {
                assert_eq!(error_code(answer), "overloaded", "{answer}");
                assert_eq!(found, 404, "an overloaded transfer was applied: {record}");
            }
            other => panic!("unexpected status {other}: {answer}"),
        }
    }
    for node in [1, 2, 3] {
        assert_eq!(
            cluster.balance(node, payer).await,
            1_000_000 - accepted as i64,
            "node {node}"
        );
        cluster.assert_invariants(node).await;
    }
    // The monitor exports the actor gauges (it samples every second).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = reqwest::get(cluster.url(leader, "/metrics"))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("metrics text");
        let missing: Vec<&str> = [
            "cellpay_actor_accounts_resident",
            "cellpay_actor_mailbox_depth",
            "cellpay_raft_commands_per_proposal",
        ]
        .into_iter()
        .filter(|name| !text.contains(name))
        .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{missing:?} missing from /metrics"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

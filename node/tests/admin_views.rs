//! Goal: operators can compare replicas and audit the log: `/v1/admin/replica` shows each
//! node's own applied index and state digest (equal on all nodes once they caught up), and
//! `/v1/admin/log` lists committed entries with the transfers they carried, in order.
//! Method: a real 3-node cluster; a few transfers; poll every node's replica view until the
//! applied indexes match, then compare digests and balances; read the log from a follower.
//!
//! Also: the end-of-day cut-off, a time trigger whose deadline is replicated state, closes
//! business days at the configured schedule across a leader failover, each day once.

mod common;

use std::time::{Duration, Instant};

use common::{error_code, transfer_body, Options, TestCluster};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_converge_and_the_log_is_auditable() {
    let cluster = TestCluster::start(Options::nodes(3)).await;
    let leader = cluster.wait_for_leader().await;
    cluster
        .create_account(leader, "+254700000201", "customer")
        .await;
    cluster
        .create_account(leader, "+254700000202", "customer")
        .await;
    cluster
        .issue(leader, "adm-issue", "+254700000201", 700)
        .await;
    let p2p = transfer_body("adm-p2p", "p2p", "+254700000201", "+254700000202", 200);
    cluster.transfer_ok(leader, &p2p).await;

    let deadline = Instant::now() + Duration::from_secs(15);
    let views = loop {
        let mut views = Vec::new();
        for node in 1..=3 {
            let (status, body) = cluster.get(node, "/v1/admin/replica").await;
            assert_eq!(status, 200, "{body}");
            views.push(body["groups"][0].clone());
        }
        if views
            .iter()
            .all(|v| v["applied_index"] == views[0]["applied_index"])
        {
            break views;
        }
        assert!(
            Instant::now() < deadline,
            "replicas did not catch up: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for view in &views {
        assert_eq!(view["digest"], views[0]["digest"], "{views:?}");
        assert_eq!(view["balances"]["+254700000202"], 200);
    }

    let follower = (1..=3).find(|n| *n != leader).expect("a follower");
    let (status, log) = cluster
        .get(follower, "/v1/admin/log?from=1&limit=100")
        .await;
    assert_eq!(status, 200, "{log}");
    let carried: Vec<String> = log["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .flat_map(|e| e["transfers"].as_array().cloned().unwrap_or_default())
        .filter_map(|id| id.as_str().map(String::from))
        .collect();
    let issue = carried
        .iter()
        .position(|id| id == "adm-issue")
        .expect("issue in the log");
    let p2p = carried
        .iter()
        .position(|id| id == "adm-p2p")
        .expect("p2p in the log");
    assert!(issue < p2p, "the log keeps application order: {carried:?}");
    let (status, _) = cluster.get(follower, "/v1/admin/log?from=abc").await;
    assert_eq!(status, 400);
}

/// The closed days a node reports, newest first.
async fn closed_days(cluster: &TestCluster, node: u64) -> Vec<Value> {
    let (status, body) = cluster.get(node, "/v1/admin/days?limit=366").await;
    assert_eq!(status, 200, "{body}");
    body["closed"].as_array().cloned().unwrap_or_default()
}

fn closed_transfers(days: &[Value]) -> u64 {
    days.iter()
        .map(|d| d["transfers"].as_u64().unwrap_or(0))
        .sum()
}

/// Goal: with a 2-second business day, the timer closes each day at its cut-off with the day's
/// transfers, also after the leader is killed (the new leader re-arms the cut-off from its
/// replica); no day is closed twice and every transfer is counted in exactly one day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn business_days_close_at_the_cut_off_across_a_failover() {
    let cluster = TestCluster::start(Options::nodes(3)).await;
    let (status, schedule) = cluster
        .put(
            1,
            "/v1/admin/schedule",
            &json!({"cutoff": "00:00:00", "period_s": 2}),
        )
        .await;
    assert_eq!(status, 200, "{schedule}");
    assert_eq!(schedule, json!({"cutoff": "00:00:00", "period_s": 2}));
    let (status, bad) = cluster
        .put(1, "/v1/admin/schedule", &json!({"cutoff": "25:00"}))
        .await;
    assert_eq!(
        (status, error_code(&bad)),
        (400, "invalid_request"),
        "{bad}"
    );
    let customer = "+254700000301";
    cluster.create_account(2, customer, "customer").await;
    for i in 0..3 {
        cluster.issue(3, &format!("day-a{i}"), customer, 100).await;
    }
    let cluster_ref = &cluster;
    let wait_for = |node: u64, want: u64| async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let days = closed_days(cluster_ref, node).await;
            if closed_transfers(&days) >= want {
                return days;
            }
            assert!(
                Instant::now() < deadline,
                "closed days do not count {want} transfers after 30 s: {days:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    let days = wait_for(1, 3).await;
    assert_eq!(closed_transfers(&days), 3, "{days:?}");

    let leader = cluster.wait_for_leader().await;
    cluster.kill_node(leader);
    let survivor = (1..=3).find(|n| *n != leader).expect("survivor");
    cluster.wait_for_leader().await;
    for i in 0..2 {
        cluster
            .issue(survivor, &format!("day-b{i}"), customer, 100)
            .await;
    }
    cluster.start_node(leader);
    let before = wait_for(survivor, 5).await.len();
    // The days keep closing on an idle cluster (the timer's CloseDay carries the cut-off).
    let deadline = Instant::now() + Duration::from_secs(20);
    let days = loop {
        let days = closed_days(&cluster, leader).await;
        if days.len() >= before + 2 {
            break days;
        }
        assert!(
            Instant::now() < deadline,
            "no new close on an idle cluster: {days:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        closed_transfers(&days),
        5,
        "each transfer in one day: {days:?}"
    );
    let ends: Vec<u64> = days
        .iter()
        .map(|d| d["until_ms"].as_u64().expect("until_ms"))
        .collect();
    for pair in ends.windows(2) {
        assert!(
            pair[0] > pair[1],
            "days closed once each, newest first: {ends:?}"
        );
        assert_eq!(pair[0] % 2000, 0, "cut-offs on the schedule: {ends:?}");
    }
    for day in &days {
        let span = day["until_ms"].as_u64().unwrap_or(0) - day["from_ms"].as_u64().unwrap_or(0);
        assert!(span > 0 && span % 2000 == 0, "{day}");
    }
}

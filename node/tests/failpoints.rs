//! Goal: a node whose Raft log cannot be made durable stops instead of lying, and the cluster
//! loses nothing: the leader's fsync fails (fail point `raft-log-commit`), the leader exits,
//! the others elect a new leader and keep serving, and after the node comes back every
//! acknowledged transfer and balance is intact.
//! Method: a real 3-node cluster built with the `chaos` feature (run with
//! `cargo test -p node --features chaos --test failpoints`); the fail point is switched on over
//! the admin route of the leader; the test waits for the process to exit by itself.
#![cfg(feature = "chaos")]

mod common;

use std::time::Duration;

use common::{transfer_body, Options, TestCluster};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_fsync_stops_the_node_and_loses_nothing() {
    let cluster = TestCluster::start(Options::nodes(3)).await;
    let leader = cluster.wait_for_leader().await;
    cluster
        .create_account(leader, "+254700000401", "customer")
        .await;
    cluster
        .create_account(leader, "+254700000402", "customer")
        .await;
    cluster
        .issue(leader, "fp-issue", "+254700000401", 10_000)
        .await;
    for i in 0..20 {
        let body = transfer_body(
            &format!("fp-{i}"),
            "p2p",
            "+254700000401",
            "+254700000402",
            10,
        );
        cluster.transfer_ok(leader, &body).await;
    }

    let (status, body) = cluster
        .put(
            leader,
            "/v1/admin/failpoints/raft-log-commit",
            &json!({"actions": "return"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The next write makes the leader's log commit fail; its answer must not be a success.
    let doomed = transfer_body("fp-doomed", "p2p", "+254700000401", "+254700000402", 10);
    let bytes = serde_json::to_vec(&doomed).expect("json");
    let answer = cluster
        .try_request(
            reqwest::Method::POST,
            leader,
            "/v1/transfers",
            Some(bytes),
            &common::Auth::Token,
            None,
        )
        .await;
    // Either the connection dies with the node or an error comes back; never a 201.
    if let Ok((status, body)) = &answer {
        assert_ne!(
            *status, 201,
            "a write the leader could not persist was acknowledged: {body}"
        );
    }
    let exit = cluster
        .exit_within(leader, Duration::from_secs(20))
        .await
        .expect("the leader stops by itself");
    assert!(!exit.success(), "exit status {exit:?}");

    let new_leader = cluster.wait_for_leader().await;
    assert_ne!(new_leader, leader);
    let after = transfer_body("fp-after", "p2p", "+254700000401", "+254700000402", 10);
    cluster.transfer_ok(new_leader, &after).await;

    cluster.start_node(leader);
    cluster.wait_for_leader().await;
    for i in 0..20 {
        let (status, record) = cluster.get_transfer(leader, &format!("fp-{i}")).await;
        assert_eq!(
            (status, record["status"].as_str()),
            (200, Some("completed")),
            "{record}"
        );
    }
    let payee = cluster.balance(leader, "+254700000402").await;
    let (doomed_status, _) = cluster.get_transfer(leader, "fp-doomed").await;
    // The doomed transfer may have been committed by the other two (it reached them before the
    // leader died) or not at all; either way it counts at most once.
    let expected = if doomed_status == 200 { 220 } else { 210 };
    assert_eq!(payee, expected);
    cluster.assert_invariants(leader).await;
}

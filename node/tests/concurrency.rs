//! Goal: single transfers that a leader gathers into batch proposals still behave one by one:
//! each caller gets its own transfer's answer, funds are never overspent, duplicates take
//! effect once and conflicting reuses of an id are refused.
//! Method: a real 3-node cluster; hundreds of concurrent single transfers spread over every node
//! (so forwarded and local ones share batches), from one payer whose funds cover only some of
//! them; then every answer is checked against the stored record and the balances.

mod common;

use common::{transfer_body, Options, TestCluster};
use futures::future::join_all;

const PAYER: &str = "+254700000301";
const PAYEE: &str = "+254700000302";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_singles_are_batched_without_overspending() {
    let cluster = TestCluster::start(Options::nodes(3)).await;
    let leader = cluster.wait_for_leader().await;
    cluster.create_account(leader, PAYER, "customer").await;
    cluster.create_account(leader, PAYEE, "customer").await;
    // Funds for exactly 120 transfers of 10.
    cluster.issue(leader, "conc-fund", PAYER, 1_200).await;

    let bodies: Vec<_> = (0..300)
        .map(|i| transfer_body(&format!("conc-{i}"), "p2p", PAYER, PAYEE, 10))
        .collect();
    let sends = bodies.iter().enumerate().map(|(i, body)| {
        let cluster = &cluster;
        async move { cluster.transfer(1 + (i as u64 % 3), body).await }
    });
    let answers = join_all(sends).await;

    let mut completed = 0;
    for ((status, answer), body) in answers.iter().zip(&bodies) {
        assert_eq!(
            answer["id"], body["id"],
            "each caller gets its own transfer's answer"
        );
        match status {
            201 => {
                assert_eq!(answer["status"], "completed");
                completed += 1;
            }
            422 => assert_eq!(answer["code"], "insufficient_funds", "{answer}"),
            other => panic!("unexpected {other}: {answer}"),
        }
        let id = body["id"].as_str().expect("id");
        let (found, record) = cluster.get_transfer(leader, id).await;
        assert_eq!(found, 200);
        let expected = if *status == 201 {
            "completed"
        } else {
            "rejected"
        };
        assert_eq!(record["status"], expected, "{record}");
    }
    assert_eq!(completed, 120, "exactly the funded transfers complete");
    assert_eq!(cluster.balance(leader, PAYER).await, 0);
    assert_eq!(cluster.balance(leader, PAYEE).await, 1_200);

    // The same id sent concurrently many times: one effect, identical answers.
    cluster.issue(leader, "conc-fund-2", PAYER, 50).await;
    let dup = transfer_body("conc-dup", "p2p", PAYER, PAYEE, 50);
    let dups = join_all((0..30).map(|i| {
        let cluster = &cluster;
        let dup = &dup;
        async move { cluster.transfer(1 + (i % 3), dup).await }
    }))
    .await;
    assert!(dups.iter().all(|answer| *answer == dups[0]), "{dups:?}");
    assert_eq!(dups[0].0, 201);
    assert_eq!(cluster.balance(leader, PAYEE).await, 1_250);
    // Same id, other body, sent concurrently with a good one: refused with id_conflict.
    let other = transfer_body("conc-dup", "p2p", PAYER, PAYEE, 1);
    let (status, answer) = cluster.transfer(2, &other).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("id_conflict"))
    );
    cluster.assert_invariants(leader).await;
}

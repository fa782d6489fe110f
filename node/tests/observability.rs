//! Goal: an SRE's Prometheus scrape sees every metric the node promises (requests by route and
//! status with latency histograms, transfers by kind and outcome, Raft term/commit/applied per
//! shard), with values that move when money moves.
//! Method: a real 3-node cluster; transfers through the HTTP API; then scrape `/metrics` on the
//! leader as Prometheus would (plain GET, text format) and parse the sample lines.

mod common;

use common::{transfer_body, Options, TestCluster};

fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.starts_with(name))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .find_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_requests_transfers_and_raft() {
    let cluster = TestCluster::start(Options::nodes(3)).await;
    let leader = cluster.wait_for_leader().await;
    cluster
        .create_account(leader, "+254700000101", "customer")
        .await;
    cluster
        .create_account(leader, "+254700000102", "customer")
        .await;
    cluster
        .issue(leader, "obs-issue", "+254700000101", 5_000)
        .await;
    let p2p = transfer_body("obs-p2p", "p2p", "+254700000101", "+254700000102", 100);
    cluster.transfer_ok(leader, &p2p).await;
    let too_much = transfer_body(
        "obs-nsf",
        "p2p",
        "+254700000102",
        "+254700000101",
        1_000_000,
    );
    let (status, _) = cluster.transfer(leader, &too_much).await;
    assert_eq!(status, 422);

    let response = reqwest::get(cluster.url(leader, "/metrics"))
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.expect("text");

    let transfers = r#"route="/v1/transfers""#;
    assert!(sample(
        &text,
        "cellpay_http_requests_total",
        &[transfers, r#"status="201""#]
    )
    .is_some_and(|v| v >= 2.0));
    assert!(sample(
        &text,
        "cellpay_http_requests_total",
        &[transfers, r#"status="422""#]
    )
    .is_some_and(|v| v >= 1.0));
    assert!(
        sample(
            &text,
            "cellpay_http_request_duration_seconds_bucket",
            &[transfers]
        )
        .is_some(),
        "{text}"
    );
    let count = |status: &str| {
        sample(
            &text,
            "cellpay_http_request_duration_seconds_count",
            &[transfers, status],
        )
    };
    assert!(count(r#"status="201""#).is_some_and(|v| v >= 2.0), "{text}");
    assert!(count(r#"status="422""#).is_some_and(|v| v >= 1.0), "{text}");
    let p2p_ok = [r#"kind="p2p""#, r#"outcome="completed""#];
    assert!(
        sample(&text, "cellpay_transfers_total", &p2p_ok).is_some_and(|v| v >= 1.0),
        "{text}"
    );
    let p2p_nsf = [r#"kind="p2p""#, r#"outcome="insufficient_funds""#];
    assert!(sample(&text, "cellpay_transfers_total", &p2p_nsf).is_some_and(|v| v >= 1.0));
    let shard = [r#"shard="0""#];
    assert!(sample(&text, "cellpay_raft_term", &shard).is_some_and(|v| v >= 1.0));
    let commit = sample(&text, "cellpay_raft_commit_index", &shard).expect("commit index");
    let applied = sample(&text, "cellpay_raft_applied_index", &shard).expect("applied index");
    assert!(
        commit >= 5.0 && applied >= 5.0,
        "commit {commit} applied {applied}"
    );
    assert_eq!(sample(&text, "cellpay_raft_is_leader", &shard), Some(1.0));
    assert_eq!(sample(&text, "cellpay_build_info", &[]), Some(1.0));
    // Phone numbers never become label values.
    assert!(
        !text.contains("+2547"),
        "a phone number leaked into metrics"
    );
}

/// Goal: a node runs with one glibc malloc arena (`MALLOC_ARENA_MAX=1`), which cut resident
/// memory per account by a third at the same throughput, and with a larger per-thread cache of
/// freed blocks (`GLIBC_TUNABLES=glibc.malloc.tcache_count=2000`), which made batches 8-12%
/// faster; both set by the node for itself (see `main.rs`). Method: read `/proc/PID/environ` of
/// a started node (the pid it wrote itself, so the restart kept them).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_runs_with_its_malloc_settings() {
    let cluster = TestCluster::start(Options::nodes(1)).await;
    cluster.wait_for_leader().await;
    let pid = cluster.pid_of(1).await;
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("the node's environment");
    for wanted in [
        &b"MALLOC_ARENA_MAX=1"[..],
        &b"GLIBC_TUNABLES=glibc.malloc.tcache_count=2000"[..],
    ] {
        assert!(
            environ
                .split(|byte| *byte == 0)
                .any(|variable| variable == wanted),
            "the node's malloc settings: {:?}",
            String::from_utf8_lossy(&environ)
                .split('\0')
                .filter(|variable| variable.starts_with("MALLOC_") || variable.starts_with("GLIBC_"))
                .collect::<Vec<_>>()
        );
    }
}

//! Goal: `cellpay bench` works against a real 3-node, 8-shard cluster in both load shapes — the
//! closed loop (workers) and the open loop (`--rate`, a fixed schedule) — reports latency
//! percentiles up to p999 and errors by code, checks conservation, and writes its report as
//! JSON (`--json`) for tracking; `--open-only` opens accounts in bulk and does nothing else.

mod common;

use common::*;
use serde_json::Value;

async fn bench(cluster: &TestCluster, extra: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("report.json");
    let targets: Vec<String> = (1..=3).map(|node| cluster.api.url(node, "")).collect();
    let mut args = vec![
        "bench".to_string(),
        "--target".to_string(),
        targets.join(","),
        "--token".to_string(),
        TOKEN.to_string(),
        "--accounts".to_string(),
        "20".to_string(),
        "--duration".to_string(),
        "2s".to_string(),
        "--json".to_string(),
        json.display().to_string(),
    ];
    args.extend(extra.iter().map(|arg| arg.to_string()));
    let output = tokio::process::Command::new(BIN)
        .args(&args)
        .output()
        .await
        .expect("cellpay bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench {extra:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("conservation: OK"), "{stdout}");
    assert!(stdout.contains("latency p999"), "{stdout}");
    let text = std::fs::read_to_string(&json).expect("the JSON report was written");
    serde_json::from_str(&text).expect("the report is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_closed_and_open_loop_and_writes_json() {
    let cluster = TestCluster::start(Options {
        shards: Some(8),
        ..Options::nodes(3)
    })
    .await;
    let closed = bench(&cluster, &["--concurrency", "4"]).await;
    assert_eq!(closed["load"], "closed loop", "{closed}");
    assert_eq!(closed["conservation_ok"], true, "{closed}");
    assert!(closed["completed"].as_u64().unwrap_or(0) > 0, "{closed}");
    for key in ["p50", "p99", "p999", "max"] {
        assert!(closed["latency_ms"][key].as_f64().is_some(), "{closed}");
    }
    assert!(closed["errors"].is_object(), "{closed}");

    // 40 requests/s for 2 s: about 80 transfers, on schedule, whatever the answers.
    let open = bench(&cluster, &["--concurrency", "8", "--rate", "40"]).await;
    assert_eq!(open["load"], "open loop, 40 requests/s", "{open}");
    assert_eq!(open["conservation_ok"], true, "{open}");
    let transfers = open["transfers"].as_u64().unwrap_or(0);
    assert!((70..=81).contains(&transfers), "{open}");

    let batched = bench(&cluster, &["--concurrency", "2", "--batch", "10"]).await;
    assert_eq!(batched["mode"], "batch", "{batched}");
    assert_eq!(batched["conservation_ok"], true, "{batched}");
    for node in 1..=3 {
        cluster.assert_invariants(node).await;
    }

    // --open-only: opens the accounts (through POST /v1/accounts/batch) and nothing else.
    let before = cluster.accounts(1).await.len();
    let targets: Vec<String> = (1..=3).map(|node| cluster.api.url(node, "")).collect();
    let output = tokio::process::Command::new(BIN)
        .args(["bench", "--target", &targets.join(","), "--token", TOKEN])
        .args(["--accounts", "9000", "--open-only"])
        .output()
        .await
        .expect("cellpay bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("opened 9000 accounts in "), "{stdout}");
    let accounts = cluster.accounts(2).await;
    assert_eq!(accounts.len(), before + 9000);
    let opened = accounts.iter().filter(|account| account["balance"] == 0);
    assert!(opened.count() >= 9000, "the opened accounts hold nothing");
}

//! Goal: the README's first command works: `cellpay dev` starts a local 3-node cluster as child
//! processes, seeds the demo accounts, prints where to look, keeps pid files while running, and
//! stops every node gracefully on Ctrl-C (SIGINT).
//! Method: run the real binary with a temporary data directory and free ports, read its output
//! until the banner, check the cluster over HTTP, then send SIGINT and wait for a clean exit.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_runs_a_seeded_cluster_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("cluster");
    let port = common::pick_base_port(3);
    let mut child = Command::new(env!("CARGO_BIN_EXE_cellpay"))
        .args([
            "dev",
            "--data",
            data.to_str().expect("utf-8"),
            "--http-port",
            &port.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cellpay dev");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut banner = String::new();
    while !banner.contains("Ctrl-C stops the cluster") {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines_rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no banner in time:\n{banner}"));
        banner.push_str(&line);
        banner.push('\n');
    }
    let token = std::fs::read_to_string(data.join("admin.token"))
        .expect("admin.token")
        .trim()
        .to_string();
    assert!(banner.contains(&token), "the banner prints the admin token");
    assert!(
        banner.contains(&format!("http://127.0.0.1:{port}")),
        "{banner}"
    );
    assert!(banner.contains("curl"), "{banner}");
    for node in 1..=3 {
        let pid = std::fs::read_to_string(data.join(format!("node-{node}/pid")))
            .expect("pid file while running");
        assert!(pid.trim().parse::<u32>().is_ok(), "node {node} pid {pid:?}");
    }
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}/v1/accounts/%2B254700000001", port + 1);
    let account: serde_json::Value = client
        .get(url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(
        account["balance"], 100_000,
        "demo account seeded: {account}"
    );

    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "cellpay dev did not stop after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "cellpay dev exit: {exit:?}");
    for node in 1..=3 {
        assert!(
            !data.join(format!("node-{node}/pid")).exists(),
            "node {node} pid file left behind"
        );
    }
}

//! `cellpay dev`: creates (if absent) and runs a local cluster of N nodes as separate child
//! processes, seeds a few demo accounts once, prints how to reach the cluster and stops every node
//! gracefully on Ctrl-C (SIGINT), SIGTERM or SIGHUP.
//!
//! Children run in their own process group, so a terminal's Ctrl-C reaches only this process,
//! which then stops the nodes itself: `kill -TERM` to each, up to [`STOP_GRACE`] to finish, then a
//! hard kill for the rest.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::cluster_new::{config_path, write_cluster};
use crate::config::{Config, RaftTuning};

/// How long the cluster may take to serve and elect leaders.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the nodes may take to stop after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(250);
/// Attempts of one seeding request while the cluster settles (429, 5xx, transport errors).
const SEED_ATTEMPTS: u32 = 40;
const LOG_TAIL_LINES: usize = 30;
const LOG_TAIL_BYTES: u64 = 64 * 1024;

/// Demo accounts: id, kind, name, amount issued to it at seeding.
const DEMO_ACCOUNTS: [(&str, &str, &str, u64); 5] = [
    ("+254700000001", "customer", "Amina", 100_000),
    ("+254700000002", "customer", "Baraka", 100_000),
    ("+254700000003", "customer", "Chebet", 100_000),
    ("+254711000001", "merchant", "Duka Mart", 0),
    ("+254722000001", "agent", "Agent Eldoret", 1_000_000),
];

#[derive(clap::Args)]
pub struct DevArgs {
    /// Number of nodes (used when the cluster is created).
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// The cluster's directory: configurations, data, logs, the admin token.
    #[arg(long, default_value = "./cellpay-dev")]
    pub data: PathBuf,
    /// HTTP port of node 1; node k serves on http-port + k - 1 (used when the cluster is created).
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// Admin token (at least 16 characters); default: random. An existing cluster keeps its own.
    #[arg(long)]
    pub token: Option<String>,
    /// Shards, one Raft group each (used when the cluster is created).
    #[arg(long, default_value_t = 8)]
    pub shards: u32,
}

/// What the command works with once the cluster's files exist.
struct Setup {
    dir: PathBuf,
    token: String,
    token_path: PathBuf,
    currency: String,
    configs: Vec<Config>,
}

/// One running child process.
struct Node {
    id: u64,
    url: String,
    dir: PathBuf,
    log: PathBuf,
    child: Child,
    pid: u32,
    /// Set once its exit was reported.
    exit_reported: bool,
}

impl Node {
    fn pid_path(&self) -> PathBuf {
        self.dir.join("pid")
    }

    /// `Some(status)` once the process has exited (the status is kept after the first reap).
    fn exit_status(&mut self) -> Option<ExitStatus> {
        match self.child.try_wait() {
            Ok(status) => status,
            Err(error) => {
                eprintln!("node {}: cannot query the process: {error}", self.id);
                None
            }
        }
    }
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    // Handlers first, so an early Ctrl-C cannot kill this process without stopping its children.
    let mut signals = Signals::new()?;
    let setup = prepare(&args)?;
    check_ports_free(&setup.configs)?;
    let mut nodes = spawn_all(&setup)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let started = tokio::select! {
        result = start(&mut nodes, &setup, &client) => Some(result),
        name = signals.recv() => {
            eprintln!("{name} during start-up: stopping the nodes");
            None
        }
    };
    let outcome = match started {
        Some(Ok(())) => {
            print_banner(&nodes, &setup);
            supervise(&mut nodes, &mut signals).await
        }
        Some(Err(error)) => Err(error),
        None => Ok(()),
    };
    stop_all(&mut nodes).await;
    outcome
}

/// Waits for the cluster to serve, makes sure every node has a pid file, seeds the demo accounts.
async fn start(nodes: &mut [Node], setup: &Setup, client: &reqwest::Client) -> anyhow::Result<()> {
    wait_ready(nodes, client, &setup.token).await?;
    for node in nodes.iter() {
        ensure_pid_file(node)?;
    }
    seed(&nodes[0].url, setup, client).await
}

/// SIGINT, SIGTERM and SIGHUP all mean: stop the cluster.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            hangup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.hangup.recv() => "SIGHUP",
        }
    }
}

/// Creates the cluster's files if absent and loads every node's configuration.
fn prepare(args: &DevArgs) -> anyhow::Result<Setup> {
    let created = !config_path(&args.data, 1).exists();
    if created {
        write_cluster(
            args.nodes,
            &args.data,
            args.http_port,
            args.token.clone(),
            RaftTuning::default(),
            args.shards,
        )
        .with_context(|| format!("creating a cluster in {}", args.data.display()))?;
    }
    let dir = args
        .data
        .canonicalize()
        .with_context(|| format!("resolving {}", args.data.display()))?;
    let first = Config::load(&config_path(&dir, 1))?;
    let configs = first
        .peers
        .iter()
        .map(|peer| Config::load(&config_path(&dir, peer.id)).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<Vec<Config>>>()?;
    let token_path = dir.join("admin.token");
    let token = first.token.clone();
    let stored = std::fs::read_to_string(&token_path)
        .ok()
        .map(|text| text.trim().to_string());
    match stored {
        Some(stored) if stored != token => eprintln!(
            "warning: {} differs from the nodes' configured token; using the configured one",
            token_path.display()
        ),
        Some(_) => {}
        None => write_token(&token_path, &token)?,
    }
    if created {
        println!(
            "created a {}-node cluster in {}",
            configs.len(),
            dir.display()
        );
    } else {
        report_existing(args, &configs, &token, &dir);
    }
    Ok(Setup {
        dir,
        token,
        token_path,
        currency: first.currency,
        configs,
    })
}

/// Tells how an existing cluster differs from the command line (which only applies on creation).
fn report_existing(args: &DevArgs, configs: &[Config], token: &str, dir: &Path) {
    println!(
        "using the existing {}-node cluster in {}",
        configs.len(),
        dir.display()
    );
    if args.token.as_deref().is_some_and(|given| given != token) {
        eprintln!(
            "warning: --token differs from the existing cluster's token; using {}",
            dir.join("admin.token").display()
        );
    }
    let first_port = configs.first().map(|config| config.http_addr.port());
    let nodes = u64::try_from(configs.len()).unwrap_or(u64::MAX);
    if nodes != args.nodes || first_port != Some(args.http_port) {
        eprintln!("note: --nodes and --http-port apply only when a cluster is created; the existing one is kept");
    }
}

fn write_token(path: &Path, token: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, token).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// Refuses to start when a node's port is taken (most often: another `cellpay dev` on this DIR).
fn check_ports_free(configs: &[Config]) -> anyhow::Result<()> {
    for config in configs {
        for addr in [config.http_addr, config.raft_addr] {
            if let Err(error) = std::net::TcpListener::bind(addr) {
                bail!(
                    "node {}: cannot use {addr}: {error}; is this cluster already running? (see {})",
                    config.node_id,
                    config.data_dir.join("pid").display()
                );
            }
        }
    }
    Ok(())
}

fn spawn_all(setup: &Setup) -> anyhow::Result<Vec<Node>> {
    let exe = std::env::current_exe().context("locating the cellpay binary")?;
    let mut nodes = Vec::with_capacity(setup.configs.len());
    for config in &setup.configs {
        // On an error the nodes started so far are killed when `nodes` drops (kill_on_drop).
        nodes.push(spawn_node(&exe, &setup.dir, config)?);
    }
    Ok(nodes)
}

fn spawn_node(exe: &Path, dir: &Path, config: &Config) -> anyhow::Result<Node> {
    let id = config.node_id;
    let node_dir = dir.join(format!("node-{id}"));
    let log = node_dir.join("node.log");
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("opening {}", log.display()))?;
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    writeln!(
        out,
        "==== cellpay dev: starting node {id} (unix time {since_epoch}) ===="
    )?;
    let err = out.try_clone()?;
    let child = Command::new(exe)
        .arg("node")
        .arg("--config")
        .arg(config_path(dir, id))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting node {id}"))?;
    let pid = child.id().context("a just-started child has a pid")?;
    let url = format!("http://{}", config.http_addr);
    Ok(Node {
        id,
        url,
        dir: node_dir,
        log,
        child,
        pid,
        exit_reported: false,
    })
}

/// Waits until every node answers `/health`, node 1 reports a leader for every shard and the
/// cluster answers a linearizable read (`/v1/ledger/summary`).
async fn wait_ready(
    nodes: &mut [Node],
    client: &reqwest::Client,
    token: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    println!(
        "waiting for {} nodes to serve and elect a leader ...",
        nodes.len()
    );
    loop {
        for node in nodes.iter_mut() {
            if let Some(status) = node.exit_status() {
                node.exit_reported = true;
                remove_pid_file(node);
                bail!(
                    "node {} exited during start-up ({status}); {}",
                    node.id,
                    log_tail_message(&node.log)
                );
            }
        }
        let missing = match readiness(nodes, client, token).await {
            Ok(()) => return Ok(()),
            Err(missing) => missing,
        };
        if Instant::now() >= deadline {
            let logs: Vec<String> = nodes
                .iter()
                .map(|node| node.log.display().to_string())
                .collect();
            bail!(
                "the cluster was not ready after {} s ({missing}); see {}",
                READY_TIMEOUT.as_secs(),
                logs.join(", ")
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `Err(what is missing)` until the cluster serves.
async fn readiness(nodes: &[Node], client: &reqwest::Client, token: &str) -> Result<(), String> {
    let checks = nodes
        .iter()
        .map(|node| client.get(format!("{}/health", node.url)).send());
    let replies = futures::future::join_all(checks).await;
    for (node, reply) in nodes.iter().zip(replies) {
        if !reply.is_ok_and(|response| response.status() == reqwest::StatusCode::OK) {
            return Err(format!(
                "node {} does not answer {}/health with 200",
                node.id, node.url
            ));
        }
    }
    let url = &nodes[0].url;
    let state = get_json(client, &format!("{url}/v1/cluster"), token).await;
    if !state.as_ref().is_some_and(every_shard_led) {
        return Err(format!("{url}/v1/cluster shows no leader"));
    }
    if get_json(client, &format!("{url}/v1/ledger/summary"), token)
        .await
        .is_none()
    {
        return Err(format!("{url}/v1/ledger/summary does not answer"));
    }
    Ok(())
}

/// The JSON body of a successful authenticated GET, or None.
async fn get_json(client: &reqwest::Client, url: &str, token: &str) -> Option<Value> {
    let response = client.get(url).bearer_auth(token).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json::<Value>().await.ok()
}

/// `true` when `/v1/cluster` lists at least one shard and each has a leader.
fn every_shard_led(state: &Value) -> bool {
    state["shards"].as_array().is_some_and(|shards| {
        !shards.is_empty() && shards.iter().all(|shard| !shard["leader"].is_null())
    })
}

/// Writes the child's pid when the node has not written its own pid file.
fn ensure_pid_file(node: &Node) -> anyhow::Result<()> {
    let path = node.pid_path();
    if !path.exists() {
        std::fs::write(&path, format!("{}\n", node.pid))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Removes the pid file of an exited node when it still names that node's process.
fn remove_pid_file(node: &Node) {
    let path = node.pid_path();
    let names_child =
        std::fs::read_to_string(&path).is_ok_and(|text| text.trim() == node.pid.to_string());
    if names_child {
        if let Err(error) = std::fs::remove_file(&path) {
            eprintln!("cannot remove {}: {error}", path.display());
        }
    }
}

/// Creates the demo accounts and funds them, once per cluster (marker file `DIR/seeded`).
/// Every request is idempotent, so an interrupted seeding is simply done again.
async fn seed(url: &str, setup: &Setup, client: &reqwest::Client) -> anyhow::Result<()> {
    let marker = setup.dir.join("seeded");
    if marker.exists() {
        return Ok(());
    }
    let mut issue_number = 0;
    for (id, kind, name, amount) in DEMO_ACCOUNTS {
        let account = json!({"id": id, "kind": kind, "name": name, "currency": setup.currency});
        let (status, body) = post_settled(
            client,
            &format!("{url}/v1/accounts"),
            &setup.token,
            &account,
        )
        .await?;
        let exists = status == 409 && body["error"]["code"] == "account_exists";
        if status != 201 && !exists {
            bail!("seeding: creating {id} answered {status}: {body}");
        }
        if amount == 0 {
            continue;
        }
        issue_number += 1;
        let transfer = json!({
            "id": format!("seed-issue-{issue_number}"), "kind": "issue", "from": "float", "to": id,
            "amount": amount, "currency": setup.currency, "memo": "cellpay dev demo funds",
        });
        let (status, body) = post_settled(
            client,
            &format!("{url}/v1/transfers"),
            &setup.token,
            &transfer,
        )
        .await?;
        if status != 201 {
            bail!("seeding: issuing {amount} to {id} answered {status}: {body}");
        }
    }
    std::fs::write(&marker, "demo accounts created and funded\n")
        .with_context(|| format!("writing {}", marker.display()))?;
    println!("seeded the demo accounts");
    Ok(())
}

/// POSTs `body`, retrying while the cluster settles (transport errors, 429, 5xx). Returns the
/// final status and JSON body.
async fn post_settled(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
) -> anyhow::Result<(u16, Value)> {
    let mut last = String::new();
    for _ in 0..SEED_ATTEMPTS {
        match client.post(url).bearer_auth(token).json(body).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                let answer = serde_json::from_str(&text).unwrap_or(Value::String(text));
                if status != 429 && status < 500 {
                    return Ok((status, answer));
                }
                last = format!("{status}: {answer}");
            }
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("POST {url} kept failing ({SEED_ATTEMPTS} attempts); last answer {last}")
}

fn print_banner(nodes: &[Node], setup: &Setup) {
    let url = &nodes[0].url;
    let token = &setup.token;
    let auth = format!("-H 'Authorization: Bearer {token}'");
    println!();
    println!("cellpay dev: {} nodes running", nodes.len());
    for node in nodes {
        println!(
            "  node {}  {}  (pid {}, log {})",
            node.id,
            node.url,
            node.pid,
            node.log.display()
        );
    }
    println!("admin token: {token}");
    println!("  stored in  {}", setup.token_path.display());
    println!("data dir:    {}", setup.dir.display());
    println!("metrics:     {url}/metrics");
    println!("demo accounts ({}, minor units):", setup.currency);
    for (id, kind, name, amount) in DEMO_ACCOUNTS {
        println!("  {id}  {kind:<8}  {name:<14} {amount}");
    }
    println!();
    println!("try:");
    println!("  # balance inquiry (Amina)");
    println!("  curl -s {auth} {url}/v1/accounts/%2B254700000001");
    println!(
        "  # p2p transfer: 1500 from Amina to Baraka (send it twice: the same id is applied once)"
    );
    println!(
        "  curl -s -X POST {auth} -H 'Content-Type: application/json' -d '{{\"id\":\"demo-1\",\"kind\":\"p2p\",\
         \"from\":\"+254700000001\",\"to\":\"+254700000002\",\"amount\":1500}}' {url}/v1/transfers"
    );
    println!("  # statement (Amina)");
    println!("  curl -s {auth} '{url}/v1/accounts/%2B254700000001/statement?limit=10'");
    println!("  # cluster state");
    println!("  curl -s {auth} {url}/v1/cluster");
    println!("  # ledger summary (balance_sum is always 0)");
    println!("  curl -s {auth} {url}/v1/ledger/summary");
    println!();
    println!("Ctrl-C stops the cluster.");
}

/// Runs until a stop signal, reporting nodes that exit meanwhile (the others keep running).
async fn supervise(nodes: &mut [Node], signals: &mut Signals) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            name = signals.recv() => {
                println!("{name}: stopping the cluster ...");
                return Ok(());
            }
            () = tokio::time::sleep(POLL) => {}
        }
        for node in nodes.iter_mut() {
            if node.exit_reported {
                continue;
            }
            if let Some(status) = node.exit_status() {
                node.exit_reported = true;
                remove_pid_file(node);
                eprintln!(
                    "node {} (pid {}) exited: {status}; {}",
                    node.id,
                    node.pid,
                    log_tail_message(&node.log)
                );
            }
        }
        if nodes.iter().all(|node| node.exit_reported) {
            bail!("every node has exited");
        }
    }
}

/// SIGTERM to every running node, up to [`STOP_GRACE`] to exit, then a hard kill.
async fn stop_all(nodes: &mut [Node]) {
    for node in nodes.iter_mut() {
        if node.exit_status().is_none() {
            // The child is not reaped yet, so its pid cannot have been reused.
            let sent = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(node.pid.to_string())
                .status();
            if !sent.is_ok_and(|status| status.success()) {
                eprintln!(
                    "node {}: could not send SIGTERM to pid {}",
                    node.id, node.pid
                );
            }
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline && nodes.iter_mut().any(|node| node.exit_status().is_none()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for node in nodes.iter_mut() {
        let status = match node.exit_status() {
            Some(status) => status.to_string(),
            None => {
                eprintln!(
                    "node {} did not stop within {} s: killing it",
                    node.id,
                    STOP_GRACE.as_secs()
                );
                match node.child.kill().await {
                    Ok(()) => "killed".to_string(),
                    Err(error) => format!("kill failed: {error}"),
                }
            }
        };
        remove_pid_file(node);
        if !node.exit_reported {
            println!("node {} stopped ({status})", node.id);
        }
    }
}

/// "last lines of LOG:\n..." for error messages.
fn log_tail_message(log: &Path) -> String {
    match log_tail(log, LOG_TAIL_LINES) {
        Ok(tail) => format!("last lines of {}:\n{tail}", log.display()),
        Err(error) => format!("cannot read {}: {error}", log.display()),
    }
}

/// The last `lines` lines of a file (reading at most its last [`LOG_TAIL_BYTES`]).
fn log_tail(path: &Path, lines: usize) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let length = file.metadata()?.len();
    file.seek(SeekFrom::Start(length.saturating_sub(LOG_TAIL_BYTES)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(last_lines(&String::from_utf8_lossy(&bytes), lines))
}

fn last_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_keeps_the_tail() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a\nb", 5), "a\nb");
        assert_eq!(last_lines("", 3), "");
    }

    #[test]
    fn leader_detection() {
        assert!(every_shard_led(
            &json!({"nodes": [], "shards": [{"id": 0, "leader": 2}]})
        ));
        assert!(!every_shard_led(
            &json!({"shards": [{"id": 0, "leader": 2}, {"id": 1, "leader": null}]})
        ));
        assert!(!every_shard_led(&json!({"shards": []})));
        assert!(!every_shard_led(&json!({"nodes": []})));
    }

    #[test]
    fn log_tail_reads_the_end_of_a_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("node.log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).expect("write log");
        assert_eq!(log_tail(&path, 2).expect("tail"), "line 98\nline 99");
    }
}

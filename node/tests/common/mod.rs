//! Test harness: a real cellpay cluster of N `cellpay node` processes on 127.0.0.1.
//!
//! Goal: let black-box tests drive the binary the way an operator does — `cellpay cluster new`
//! writes the configuration, `cellpay node --config …` runs each member — and observe it only
//! through its public HTTP API.
//!
//! Method: [`TestCluster`] owns a temporary data directory and one child process per running
//! node. Node k can be started, stopped gracefully (SIGTERM sent with the `kill` command to the pid
//! the node wrote to `DIR/node-k/pid`), killed with SIGKILL (`Child::kill`) and restarted on its
//! data directory. Every node appends its stdout and stderr to `DIR/node-k/node.log`; when a test
//! panics, dropping the cluster prints the tail of every log and keeps the directory. Waits are
//! bounded and poll. [`Api`] is the cloneable HTTP client (usable from background tasks).
//!
//! At most `CELLPAY_TEST_CLUSTERS` (default 2) clusters run at once per test binary, so that the
//! parallel tests of one binary do not starve each other's Raft timers on a small machine.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_cellpay");
pub const TOKEN: &str = "cellpay-test-token-0123456789abcdef";
/// Bound on waiting for a leader that every live node agrees on.
pub const LEADER_WAIT: Duration = Duration::from_secs(30);
/// Raft ports sit this far above HTTP ports (see `cellpay cluster new`).
pub const RAFT_PORT_OFFSET: u16 = 1000;

// ---------------------------------------------------------------------------------------------
// Limiting how many clusters run at once.

struct Slots {
    used: Mutex<usize>,
    freed: Condvar,
}

static SLOTS: Slots = Slots {
    used: Mutex::new(0),
    freed: Condvar::new(),
};

/// Holds one of the cluster slots until dropped.
pub struct SlotGuard(());

fn acquire_slot() -> SlotGuard {
    let max = std::env::var("CELLPAY_TEST_CLUSTERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(2)
        .max(1);
    let mut used = SLOTS.used.lock().unwrap_or_else(|e| e.into_inner());
    while *used >= max {
        used = SLOTS.freed.wait(used).unwrap_or_else(|e| e.into_inner());
    }
    *used += 1;
    SlotGuard(())
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut used = SLOTS.used.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(1);
        SLOTS.freed.notify_one();
    }
}

// ---------------------------------------------------------------------------------------------
// Ports.

static BASES_TAKEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A random base port in 20000..49000 whose N HTTP ports and N Raft ports are all free, and which
/// no other cluster of this process uses.
pub fn pick_base_port(nodes: u16) -> u16 {
    for _ in 0..500 {
        let base: u16 = rand::random_range(20000..49000);
        let mut taken = BASES_TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        if taken.iter().any(|&other| base.abs_diff(other) < 16) {
            continue;
        }
        let all_free =
            (0..nodes).all(|i| port_free(base + i) && port_free(base + RAFT_PORT_OFFSET + i));
        if all_free {
            taken.push(base);
            return base;
        }
    }
    panic!("no free port range found after 500 tries");
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

/// Percent-encodes the `+` of an account id for use in a query string (or a path).
pub fn enc(id: &str) -> String {
    id.replace('+', "%2B")
}

/// The body of a plain (completed) transfer.
pub fn transfer_body(id: &str, kind: &str, from: &str, to: &str, amount: u64) -> Value {
    json!({"id": id, "kind": kind, "from": from, "to": to, "amount": amount, "currency": "KES"})
}

/// The `error.code` of an error answer, or "" when there is none.
pub fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

pub fn as_i64(value: &Value, what: &str) -> i64 {
    value
        .as_i64()
        .unwrap_or_else(|| panic!("{what}: expected an integer, got {value}"))
}

pub fn last_lines(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP.

/// How a request authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    /// `Authorization: Bearer <the cluster's token>`.
    Token,
    /// No Authorization header.
    Missing,
    /// This exact Authorization header value.
    Header(String),
}

/// The cluster's HTTP API: cheap to clone, usable from spawned tasks.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    /// HTTP port of node k at index k-1.
    pub ports: Vec<u16>,
    pub token: String,
}

impl Api {
    pub fn new(ports: Vec<u16>, token: &str) -> Api {
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(20))
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .expect("http client");
        Api {
            client,
            ports,
            token: token.to_string(),
        }
    }

    /// The same API through a client that never reuses a connection (one request each).
    pub fn without_pooling(&self) -> Api {
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(20))
            .pool_max_idle_per_host(0)
            .build()
            .expect("http client");
        Api {
            client,
            ports: self.ports.clone(),
            token: self.token.clone(),
        }
    }

    pub fn nodes(&self) -> u64 {
        self.ports.len() as u64
    }

    /// Node `node`'s `/metrics`, as Prometheus text.
    pub async fn metrics(&self, node: u64) -> String {
        reqwest::get(self.url(node, "/metrics"))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("metrics text")
    }

    pub fn url(&self, node: u64, path: &str) -> String {
        let index = usize::try_from(node)
            .expect("node id")
            .checked_sub(1)
            .expect("node ids start at 1");
        format!("http://127.0.0.1:{}{}", self.ports[index], path)
    }

    /// One request; transport errors (refused, timed out…) are `Err`.
    pub async fn try_request(
        &self,
        method: reqwest::Method,
        node: u64,
        path: &str,
        body: Option<Vec<u8>>,
        auth: &Auth,
        timeout: Option<Duration>,
    ) -> Result<(u16, Value), String> {
        let mut request = self.client.request(method.clone(), self.url(node, path));
        match auth {
            Auth::Token => {
                request = request.header("authorization", format!("Bearer {}", self.token))
            }
            Auth::Missing => {}
            Auth::Header(value) => request = request.header("authorization", value.clone()),
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("{method} {path} on node {node}: {e:?}"))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("{method} {path} on node {node}: body: {e:?}"))?;
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, value))
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        node: u64,
        path: &str,
        body: Option<Vec<u8>>,
        auth: &Auth,
    ) -> (u16, Value) {
        self.try_request(method, node, path, body, auth, None)
            .await
            .unwrap_or_else(|e| panic!("transport error: {e}"))
    }

    pub async fn try_get(
        &self,
        node: u64,
        path: &str,
        timeout: Duration,
    ) -> Result<(u16, Value), String> {
        self.try_request(
            reqwest::Method::GET,
            node,
            path,
            None,
            &Auth::Token,
            Some(timeout),
        )
        .await
    }

    pub async fn try_post(
        &self,
        node: u64,
        path: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<(u16, Value), String> {
        let bytes = serde_json::to_vec(body).expect("json");
        self.try_request(
            reqwest::Method::POST,
            node,
            path,
            Some(bytes),
            &Auth::Token,
            Some(timeout),
        )
        .await
    }

    pub async fn get(&self, node: u64, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::GET, node, path, None, &Auth::Token)
            .await
    }

    pub async fn post(&self, node: u64, path: &str, body: &Value) -> (u16, Value) {
        let bytes = serde_json::to_vec(body).expect("json");
        self.request(reqwest::Method::POST, node, path, Some(bytes), &Auth::Token)
            .await
    }

    pub async fn put(&self, node: u64, path: &str, body: &Value) -> (u16, Value) {
        let bytes = serde_json::to_vec(body).expect("json");
        self.request(reqwest::Method::PUT, node, path, Some(bytes), &Auth::Token)
            .await
    }

    pub async fn post_raw(&self, node: u64, path: &str, bytes: Vec<u8>) -> (u16, Value) {
        self.request(reqwest::Method::POST, node, path, Some(bytes), &Auth::Token)
            .await
    }

    // --- accounts ------------------------------------------------------------------------

    pub async fn create_account(&self, node: u64, id: &str, kind: &str) -> Value {
        let body =
            json!({"id": id, "kind": kind, "name": format!("{kind} {id}"), "currency": "KES"});
        let (status, answer) = self.post(node, "/v1/accounts", &body).await;
        assert_eq!(
            status, 201,
            "POST /v1/accounts {body} on node {node}: {answer}"
        );
        answer
    }

    /// GET /v1/accounts/{id}; the `+` travels literally.
    pub async fn account(&self, node: u64, id: &str) -> Value {
        let (status, answer) = self.get(node, &format!("/v1/accounts/{id}")).await;
        assert_eq!(
            status, 200,
            "GET /v1/accounts/{id} on node {node}: {answer}"
        );
        answer
    }

    pub async fn balance(&self, node: u64, id: &str) -> i64 {
        let account = self.account(node, id).await;
        as_i64(
            &account["balance"],
            &format!("balance of {id} on node {node}"),
        )
    }

    /// Every account (system ones included), paging through GET /v1/accounts.
    pub async fn accounts_paged(&self, node: u64, page: usize) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..100_000 {
            let path = match &after {
                Some(id) => format!("/v1/accounts?limit={page}&after={}", enc(id)),
                None => format!("/v1/accounts?limit={page}"),
            };
            let (status, answer) = self.get(node, &path).await;
            assert_eq!(status, 200, "GET {path} on node {node}: {answer}");
            let accounts = answer["accounts"]
                .as_array()
                .unwrap_or_else(|| panic!("GET {path}: no accounts array: {answer}"));
            assert!(
                accounts.len() <= page,
                "GET {path}: {} accounts on a page of {page}",
                accounts.len()
            );
            all.extend(accounts.iter().cloned());
            match answer["next"].as_str() {
                Some(next) => {
                    assert!(
                        !accounts.is_empty(),
                        "GET {path}: empty page with next={next}"
                    );
                    after = Some(next.to_string());
                }
                None => {
                    assert!(
                        answer["next"].is_null(),
                        "GET {path}: next is neither an id nor null: {answer}"
                    );
                    return all;
                }
            }
        }
        panic!("GET /v1/accounts on node {node}: paging does not end");
    }

    pub async fn accounts(&self, node: u64) -> Vec<Value> {
        self.accounts_paged(node, 100).await
    }

    /// Every account's balance by id.
    pub async fn balances(&self, node: u64) -> BTreeMap<String, i64> {
        let mut map = BTreeMap::new();
        for account in self.accounts(node).await {
            let id = account["id"].as_str().expect("account id").to_string();
            let balance = as_i64(&account["balance"], &format!("balance of {id}"));
            assert!(
                map.insert(id.clone(), balance).is_none(),
                "account {id} listed twice on node {node}"
            );
        }
        map
    }

    pub async fn summary(&self, node: u64) -> Value {
        let (status, answer) = self.get(node, "/v1/ledger/summary").await;
        assert_eq!(
            status, 200,
            "GET /v1/ledger/summary on node {node}: {answer}"
        );
        answer
    }

    /// Pages through every account on `node` and returns the sum of `balance`; also asserts that
    /// the node's summary says `balance_sum == 0` and counts the same accounts.
    pub async fn sum_of_balances(&self, node: u64) -> i64 {
        let accounts = self.accounts(node).await;
        let mut sum: i64 = 0;
        for account in &accounts {
            sum = sum
                .checked_add(as_i64(&account["balance"], "balance"))
                .expect("sum overflows i64");
        }
        let summary = self.summary(node).await;
        assert_eq!(
            summary["balance_sum"],
            json!(0),
            "node {node}: summary balance_sum is not 0: {summary}"
        );
        assert_eq!(
            summary["accounts"].as_u64(),
            Some(accounts.len() as u64),
            "node {node}: summary counts other accounts than the listing: {summary}"
        );
        sum
    }

    /// Invariants 1 and 2 as seen by `node`: balances sum to 0 and no account but `float` is
    /// below zero (balance or available). Returns the balances.
    pub async fn assert_invariants(&self, node: u64) -> BTreeMap<String, i64> {
        assert_eq!(
            self.sum_of_balances(node).await,
            0,
            "node {node}: balances do not sum to 0"
        );
        let mut balances = BTreeMap::new();
        for account in self.accounts(node).await {
            let id = account["id"].as_str().expect("id").to_string();
            let balance = as_i64(&account["balance"], "balance");
            let available = as_i64(&account["available"], "available");
            let pending_out = as_i64(&account["pending_out"], "pending_out");
            assert_eq!(
                available,
                balance - pending_out,
                "node {node}: available != balance - pending_out: {account}"
            );
            if id != "float" {
                assert!(
                    balance >= 0 && available >= 0,
                    "node {node}: account below zero: {account}"
                );
            }
            balances.insert(id, balance);
        }
        balances
    }

    // --- transfers -----------------------------------------------------------------------

    pub async fn transfer(&self, node: u64, body: &Value) -> (u16, Value) {
        self.post(node, "/v1/transfers", body).await
    }

    /// A transfer that must complete: asserts 201 completed and returns the answer.
    pub async fn transfer_ok(&self, node: u64, body: &Value) -> Value {
        let (status, answer) = self.transfer(node, body).await;
        assert_eq!(
            status, 201,
            "POST /v1/transfers {body} on node {node}: {answer}"
        );
        assert_eq!(
            answer["status"], "completed",
            "POST /v1/transfers {body} on node {node}: {answer}"
        );
        answer
    }

    pub async fn get_transfer(&self, node: u64, id: &str) -> (u16, Value) {
        self.get(node, &format!("/v1/transfers/{id}")).await
    }

    /// Issues `amount` of e-money to `to`.
    pub async fn issue(&self, node: u64, id: &str, to: &str, amount: u64) -> Value {
        self.transfer_ok(node, &transfer_body(id, "issue", "float", to, amount))
            .await
    }

    // --- cluster state -------------------------------------------------------------------

    pub async fn cluster_info(&self, node: u64) -> Result<Value, String> {
        match self
            .try_get(node, "/v1/cluster", Duration::from_secs(3))
            .await?
        {
            (200, value) => Ok(value),
            (status, value) => Err(format!("GET /v1/cluster on node {node}: {status} {value}")),
        }
    }

    /// A numeric field of shard 0 as `node` sees it (`null` → None).
    pub async fn shard_field(&self, node: u64, field: &str) -> Option<u64> {
        let info = self
            .cluster_info(node)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let value = &info["shards"][0][field];
        assert!(
            value.is_u64() || value.is_null(),
            "node {node}: shard field {field} is {value} in {info}"
        );
        value.as_u64()
    }
}

// ---------------------------------------------------------------------------------------------
// The cluster.

#[derive(Clone, Debug)]
pub struct Options {
    pub nodes: u64,
    pub snapshot_logs: Option<u64>,
    pub snapshot_commands: Option<u64>,
    pub logs_to_keep: Option<u64>,
    pub shards: Option<u32>,
}

impl Options {
    pub fn nodes(nodes: u64) -> Options {
        Options {
            nodes,
            snapshot_logs: None,
            snapshot_commands: None,
            logs_to_keep: None,
            // The single-group suite; tests of a sharded cluster ask for more.
            shards: Some(1),
        }
    }
}

pub struct TestCluster {
    pub api: Api,
    pub dir: PathBuf,
    pub base_port: u16,
    tempdir: Option<tempfile::TempDir>,
    children: Mutex<Vec<Option<Child>>>,
    _slot: SlotGuard,
}

impl std::ops::Deref for TestCluster {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl TestCluster {
    /// Writes a cluster with `cellpay cluster new`, starts every node and waits for a leader.
    pub async fn start(options: Options) -> TestCluster {
        let cluster = TestCluster::create(options);
        for node in 1..=cluster.api.nodes() {
            cluster.start_node(node);
        }
        cluster.wait_for_leader().await;
        cluster
    }

    /// Writes the cluster's configuration; starts nothing.
    pub fn create(options: Options) -> TestCluster {
        let slot = acquire_slot();
        let tempdir = tempfile::Builder::new()
            .prefix("cellpay-test-")
            .tempdir()
            .expect("tempdir");
        let dir = tempdir.path().to_path_buf();
        let n = u16::try_from(options.nodes).expect("node count");
        let base_port = pick_base_port(n);
        let mut command = Command::new(BIN);
        command
            .args(["cluster", "new", "--nodes", &options.nodes.to_string()])
            .arg("--data")
            .arg(&dir)
            .args(["--http-port", &base_port.to_string(), "--token", TOKEN]);
        if let Some(n) = options.snapshot_commands {
            command.args(["--snapshot-commands", &n.to_string()]);
        }
        if let Some(n) = options.snapshot_logs {
            command.args(["--snapshot-logs", &n.to_string()]);
        }
        if let Some(n) = options.shards {
            command.args(["--shards", &n.to_string()]);
        }
        if let Some(n) = options.logs_to_keep {
            command.args(["--logs-to-keep", &n.to_string()]);
        }
        let output = command.output().expect("run cellpay cluster new");
        assert!(
            output.status.success(),
            "cellpay cluster new failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for node in 1..=options.nodes {
            let config = dir.join(format!("node-{node}")).join("config.toml");
            assert!(
                config.exists(),
                "cluster new did not write {}",
                config.display()
            );
        }
        let token = std::fs::read_to_string(dir.join("admin.token")).expect("admin.token");
        assert_eq!(token.trim(), TOKEN, "admin.token holds another token");
        let ports = (0..n).map(|i| base_port + i).collect();
        let children = (0..options.nodes).map(|_| None).collect();
        TestCluster {
            api: Api::new(ports, TOKEN),
            dir,
            base_port,
            tempdir: Some(tempdir),
            children: Mutex::new(children),
            _slot: slot,
        }
    }

    fn children(&self) -> std::sync::MutexGuard<'_, Vec<Option<Child>>> {
        self.children.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn index(node: u64) -> usize {
        usize::try_from(node)
            .expect("node")
            .checked_sub(1)
            .expect("node ids start at 1")
    }

    pub fn node_dir(&self, node: u64) -> PathBuf {
        self.dir.join(format!("node-{node}"))
    }

    pub fn log_path(&self, node: u64) -> PathBuf {
        self.node_dir(node).join("node.log")
    }

    /// Starts node k on its data directory (first start or restart).
    pub fn start_node(&self, node: u64) {
        let mut children = self.children();
        let slot = &mut children[Self::index(node)];
        assert!(slot.is_none(), "node {node} is already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(node))
            .expect("open node.log");
        let log2 = log.try_clone().expect("clone log handle");
        let child = Command::new(BIN)
            .arg("node")
            .arg("--config")
            .arg(self.node_dir(node).join("config.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .expect("spawn cellpay node");
        *slot = Some(child);
    }

    /// Waits up to `within` for node k to exit by itself; returns its exit status and forgets
    /// the process (so it can be started again), or None if it is still running.
    pub async fn exit_within(
        &self,
        node: u64,
        within: Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            {
                let mut children = self.children();
                let slot = &mut children[Self::index(node)];
                if let Some(child) = slot.as_mut() {
                    if let Ok(Some(status)) = child.try_wait() {
                        *slot = None;
                        return Some(status);
                    }
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL (`kill -9`) node k and reap it.
    pub fn kill_node(&self, node: u64) {
        let mut children = self.children();
        let mut child = children[Self::index(node)]
            .take()
            .unwrap_or_else(|| panic!("node {node} is not running"));
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The pid node k wrote to `DIR/node-k/pid`, waiting up to 10 s for the file; asserts it is
    /// the pid of the process we started.
    pub async fn pid_of(&self, node: u64) -> u32 {
        let expected = {
            let children = self.children();
            children[Self::index(node)]
                .as_ref()
                .unwrap_or_else(|| panic!("node {node} is not running"))
                .id()
        };
        let path = self.node_dir(node).join("pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                if let Ok(pid) = text.trim().parse::<u32>() {
                    if pid == expected {
                        return pid;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {node}: {} does not hold the running node's pid {expected}",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM (with the `kill` command, to the pid in the pid file) without waiting.
    pub async fn sigterm_node(&self, node: u64) {
        let pid = self.pid_of(node).await;
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Waits (bounded) for node k to exit after a SIGTERM; asserts it exits on its own, with
    /// success, within 20 s.
    pub async fn wait_exit(&self, node: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            {
                let mut children = self.children();
                let slot = &mut children[Self::index(node)];
                let child = slot
                    .as_mut()
                    .unwrap_or_else(|| panic!("node {node} is not running"));
                match child.try_wait().expect("try_wait") {
                    Some(status) => {
                        *slot = None;
                        drop(children);
                        assert!(
                            status.success(),
                            "node {node} exited with {status} after SIGTERM"
                        );
                        return;
                    }
                    None if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        *slot = None;
                        drop(children);
                        panic!("node {node} did not stop within 20 s of SIGTERM");
                    }
                    None => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Graceful stop of node k: SIGTERM, then wait for a clean exit.
    pub async fn stop_node(&self, node: u64) {
        self.sigterm_node(node).await;
        self.wait_exit(node).await;
    }

    pub async fn restart_node(&self, node: u64) {
        self.start_node(node);
    }

    /// Node ids whose process we started and that have not been stopped. Panics if one of them
    /// exited on its own (a crash).
    pub fn live_nodes(&self) -> Vec<u64> {
        let mut children = self.children();
        let mut live = Vec::new();
        let mut crashed = Vec::new();
        for (index, slot) in children.iter_mut().enumerate() {
            let node = index as u64 + 1;
            if let Some(child) = slot {
                match child.try_wait() {
                    Ok(None) => live.push(node),
                    Ok(Some(status)) => crashed.push((node, status.to_string())),
                    Err(e) => crashed.push((node, e.to_string())),
                }
            }
        }
        drop(children);
        if !crashed.is_empty() {
            let mut message = String::new();
            for (node, status) in &crashed {
                message.push_str(&format!(
                    "\nnode {node} exited unexpectedly ({status}); log tail:\n{}",
                    last_lines(&self.log_path(*node), 40)
                ));
            }
            panic!("{message}");
        }
        live
    }

    /// Polls GET /v1/cluster and GET /health on every live node until every shard has a leader
    /// that is live and that every live node names; bounded by [`LEADER_WAIT`]. Returns shard
    /// 0's leader.
    pub async fn wait_for_leader(&self) -> u64 {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let live = self.live_nodes();
            let why = match self.agreed_leader(&live).await {
                Ok(leader) => return leader,
                Err(why) => why,
            };
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {LEADER_WAIT:?} (live nodes {live:?}): {why}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn agreed_leader(&self, live: &[u64]) -> Result<u64, String> {
        let mut views: Vec<Vec<Option<u64>>> = Vec::new();
        for &node in live {
            let info = self.api.cluster_info(node).await?;
            let shards = info["shards"]
                .as_array()
                .ok_or_else(|| format!("node {node}: no shards in {info}"))?;
            if shards.is_empty() {
                return Err(format!("node {node}: empty shards in {info}"));
            }
            views.push(shards.iter().map(|s| s["leader"].as_u64()).collect());
            let health = self
                .api
                .try_request(
                    reqwest::Method::GET,
                    node,
                    "/health",
                    None,
                    &Auth::Missing,
                    Some(Duration::from_secs(3)),
                )
                .await?;
            if health.0 != 200 {
                return Err(format!("node {node}: /health {} {}", health.0, health.1));
            }
        }
        let first = views.first().ok_or("no live node")?.clone();
        if views.iter().any(|v| *v != first) {
            return Err(format!("nodes {live:?} disagree on leaders: {views:?}"));
        }
        for leader in &first {
            match leader {
                Some(id) if live.contains(id) => {}
                other => {
                    return Err(format!(
                        "a shard's leader is {other:?}, live nodes {live:?}"
                    ))
                }
            }
        }
        Ok(first[0].expect("checked"))
    }

    /// The current leader of shard 0 (waits for one).
    pub async fn leader(&self) -> u64 {
        self.wait_for_leader().await
    }

    /// Prints the tail of every node's log.
    pub fn dump_logs(&self, lines: usize) {
        for node in 1..=self.api.nodes() {
            eprintln!(
                "===== node {node} log tail ({}) =====",
                self.log_path(node).display()
            );
            eprintln!("{}", last_lines(&self.log_path(node), lines));
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        for child in children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        children.iter_mut().for_each(|slot| *slot = None);
        drop(children);
        if std::thread::panicking() {
            self.dump_logs(60);
            if let Some(mut tempdir) = self.tempdir.take() {
                tempdir.disable_cleanup(true);
                eprintln!("cluster data kept in {}", self.dir.display());
            }
        }
        let mut taken = BASES_TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        taken.retain(|&base| base != self.base_port);
    }
}

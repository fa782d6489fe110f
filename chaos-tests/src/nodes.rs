//! The cluster under test: real `cellpay node` processes, each in its own network namespace
//! (lab mode) or all on 127.0.0.1 (loopback mode, when namespaces cannot be made).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::net::Lab;

/// How nodes are networked.
pub enum Mode {
    /// One namespace per node, faults by nftables.
    Lab(Lab),
    /// Everything on 127.0.0.1: process faults only.
    Loopback,
}

pub struct Node {
    pub id: u64,
    pub http: SocketAddr,
    child: Option<Child>,
    pub paused: bool,
}

pub struct Cluster {
    pub dir: PathBuf,
    pub bin: PathBuf,
    pub token: String,
    pub mode: Mode,
    pub nodes: Vec<Node>,
    pub client: reqwest::Client,
}

/// The `cellpay` binary: `$CELLPAY_BIN`, or beside this executable.
pub fn cellpay_bin() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("CELLPAY_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("executable has a folder")?;
    for candidate in [dir.join("cellpay"), dir.join("../cellpay")] {
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!(
        "cannot find the cellpay binary next to {}; set CELLPAY_BIN",
        exe.display()
    )
}

fn free_base_port() -> u16 {
    for _ in 0..200 {
        let base: u16 = rand::random_range(20_000..40_000);
        let free = (0..9u16).all(|i| {
            std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", base + 1000 + i)).is_ok()
        });
        if free {
            return base;
        }
    }
    20_000
}

impl Cluster {
    /// Writes the configuration of an `n`-node cluster under `dir` (and, in lab mode, moves each
    /// node onto its namespace's address).
    /// `shards` Raft groups, each on every node (`cellpay cluster new --shards`).
    pub fn create(n: usize, shards: u32, dir: &Path, mode: Mode) -> anyhow::Result<Cluster> {
        let bin = cellpay_bin()?;
        let base = free_base_port();
        let status = Command::new(&bin)
            .args(["cluster", "new", "--nodes", &n.to_string(), "--data"])
            .arg(dir)
            .args([
                "--http-port",
                &base.to_string(),
                "--snapshot-logs",
                "2000",
                "--logs-to-keep",
                "500",
                "--shards",
                &shards.to_string(),
            ])
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("cellpay cluster new failed: {status}");
        }
        let ips: Vec<Ipv4Addr> = (1..=n)
            .map(|k| match &mode {
                Mode::Lab(lab) => lab.node_ip(k),
                Mode::Loopback => Ipv4Addr::LOCALHOST,
            })
            .collect();
        let port = |k: usize, offset: u16| base + offset + u16::try_from(k - 1).expect("few nodes");
        if let Mode::Lab(_) = mode {
            for k in 1..=n {
                let path = dir.join(format!("node-{k}/config.toml"));
                let mut text = std::fs::read_to_string(&path)?;
                for (j, ip) in ips.iter().enumerate() {
                    for offset in [0, 1000] {
                        let from = format!("127.0.0.1:{}", port(j + 1, offset));
                        text = text.replace(&from, &format!("{ip}:{}", port(j + 1, offset)));
                    }
                }
                std::fs::write(&path, text)?;
            }
        }
        let token = std::fs::read_to_string(dir.join("admin.token"))?
            .trim()
            .to_string();
        let nodes = (1..=n)
            .map(|k| Node {
                id: k as u64,
                http: SocketAddr::from((ips[k - 1], port(k, 0))),
                child: None,
                paused: false,
            })
            .collect();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .connect_timeout(Duration::from_secs(1))
            .pool_idle_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Cluster {
            dir: dir.to_path_buf(),
            bin,
            token,
            mode,
            nodes,
            client,
        })
    }

    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            Mode::Lab(_) => "lab (network namespaces + nftables)",
            Mode::Loopback => "loopback (127.0.0.1; network faults only by the transport switch)",
        }
    }

    pub fn url(&self, k: u64, path: &str) -> String {
        format!("http://{}{path}", self.node(k).http)
    }

    fn node(&self, k: u64) -> &Node {
        &self.nodes[usize::try_from(k - 1).expect("node ids are small")]
    }

    fn node_mut(&mut self, k: u64) -> &mut Node {
        &mut self.nodes[usize::try_from(k - 1).expect("node ids are small")]
    }

    pub fn is_up(&self, k: u64) -> bool {
        self.node(k).child.is_some()
    }

    /// Starts node `k` on its data directory (a restart keeps its data).
    pub fn start(&mut self, k: u64) -> anyhow::Result<()> {
        if self.is_up(k) {
            return Ok(());
        }
        let node_dir = self.dir.join(format!("node-{k}"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node_dir.join("node.log"))?;
        let mut command = match &self.mode {
            Mode::Lab(lab) => lab.command(usize::try_from(k).expect("small"), &self.bin),
            Mode::Loopback => Command::new(&self.bin),
        };
        command
            .args(["node", "--config"])
            .arg(node_dir.join("config.toml"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null());
        let child = command
            .spawn()
            .with_context(|| format!("starting node {k}"))?;
        let node = self.node_mut(k);
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// SIGKILL: the node dies at once, with whatever it had not fsync'd lost.
    pub fn kill(&mut self, k: u64) {
        let node = self.node_mut(k);
        if let Some(mut child) = node.child.take() {
            if node.paused {
                signal(child.id(), "CONT");
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    pub fn pause(&mut self, k: u64) {
        let node = self.node_mut(k);
        if let (Some(child), false) = (&node.child, node.paused) {
            signal(child.id(), "STOP");
            node.paused = true;
        }
    }

    pub fn resume(&mut self, k: u64) {
        let node = self.node_mut(k);
        if let (Some(child), true) = (&node.child, node.paused) {
            signal(child.id(), "CONT");
            node.paused = false;
        }
    }

    /// If node `k` exited by itself, forgets its process and returns how it ended.
    pub fn reap(&mut self, k: u64) -> Option<std::process::ExitStatus> {
        let node = self.node_mut(k);
        let status = node
            .child
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())?;
        node.child = None;
        node.paused = false;
        Some(status)
    }

    /// Ends every fault of processes: resumes paused nodes, starts stopped ones.
    pub fn heal_processes(&mut self) -> anyhow::Result<()> {
        for k in 1..=self.nodes.len() as u64 {
            self.reap(k);
            self.resume(k);
            self.start(k)?;
        }
        Ok(())
    }

    /// The leader every live node agrees on, waiting up to `within`.
    pub async fn wait_for_leader(&self, within: Duration) -> Option<u64> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(leader) = self.agreed_leader().await {
                return Some(leader);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    async fn agreed_leader(&self) -> Option<u64> {
        let mut agreed = None;
        for node in self.nodes.iter().filter(|n| n.child.is_some() && !n.paused) {
            let url = self.url(node.id, "/v1/cluster");
            let answer = self
                .client
                .get(url)
                .bearer_auth(&self.token)
                .send()
                .await
                .ok()?;
            let body: serde_json::Value = answer.json().await.ok()?;
            let leader = body["shards"][0]["leader"].as_u64()?;
            if agreed.is_some_and(|a| a != leader) {
                return None;
            }
            agreed = Some(leader);
        }
        agreed
    }

    /// The last lines of every node's log, for failure reports.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let path = self.dir.join(format!("node-{}/node.log", node.id));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            out.push_str(&format!(
                "===== node {} ({}) =====\n",
                node.id,
                path.display()
            ));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for k in 1..=self.nodes.len() as u64 {
            self.kill(k);
        }
    }
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status();
}

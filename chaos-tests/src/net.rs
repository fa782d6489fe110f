//! # net — the chaos suite's network lab
//!
//! Runs every `cellpay node` in its own Linux network namespace and cuts links between them with
//! nftables, so faults look to the nodes like a real network misbehaving (packets vanish; no
//! process is paused, no socket is closed).
//!
//! ## Topology (run id `R`, a number 1..=239 claimed per lab)
//!
//! ```text
//!  root namespace (workload driver)            namespace cpxR-hub            namespace cpxR-nK
//!  cpxR-h  10.213.R.254/24  <── veth ──>  up0 ─┐
//!                                              br0 (bridge) ── vK <── veth ──> eth0 10.213.R.K/24
//!                                                                                default via .254
//! ```
//!
//! The bridge lives in a namespace of its own (`cpxR-hub`) rather than in the root namespace:
//! with `br_netfilter` loaded and `net.bridge.bridge-nf-call-iptables = 1` (Docker's setting),
//! frames bridged in the root namespace traverse the root namespace's IPv4 FORWARD hook, and a
//! `policy drop` there (Docker again) silently eats all node-to-node traffic. The hub namespace
//! has no rules, so bridging there works whatever the host firewall is, and the lab never edits
//! the host's firewall. The driver still sits on the /24 (`.254`, on the root end of the veth)
//! and reaches every node directly.
//!
//! ## Faults
//!
//! The lab keeps a matrix of directed links (`from → to`, where an end is a node or the driver)
//! that are cut or lossy. Each fault first clears every link touching the nodes it affects (so it
//! replaces earlier faults on those nodes), then cuts links. The matrix is rendered into a table
//! `inet cellpay_chaos` in each node's namespace:
//!
//! * a link `a → b` between nodes is cut in **b's input chain** (`ip saddr a drop`), Jepsen-style.
//!   Dropping at the receiver keeps the sender's kernel ignorant: dropping in the sender's output
//!   hook would make `sendto` on UDP sockets fail with `EPERM`, which no real network does;
//! * a link `driver → k` is cut in k's input chain; `k → driver` in k's output chain (the root
//!   namespace is never touched);
//! * loss is `numgen random mod 100 < P drop` on the same chains.
//!
//! Rules are stateless (no conntrack), so established TCP connections stall and retransmit
//! rather than reset, as under a real partition; ARP is not filtered (the `inet` family does not
//! see it), so healing takes effect immediately. Only IPv4 is filtered: address nodes by
//! [`Lab::node_ip`]. All calls are synchronous and spawn `ip`/`nft` processes (a few ms each):
//! from async code use `tokio::task::spawn_blocking`.
//!
//! ## Clean-up
//!
//! A run id is claimed with an exclusive `flock` on `/run/cellpay-netlab/R.lock`, held for the
//! lab's lifetime, so parallel labs (threads or processes) never share names or subnets. Before
//! building, [`Lab::create`] sweeps leftovers (`cpx<id>-*` namespaces, `cpx<id>-h` links) whose
//! lock nobody holds, i.e. labs of crashed runs. [`Drop`] kills any process still running in the
//! lab's namespaces, deletes the root-side veth and the namespaces (which takes the bridge and
//! every other veth with it), and waits briefly for the kernel's asynchronous namespace teardown.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// Prefix of every name the lab creates (namespaces, the root-side link).
pub const NAME_PREFIX: &str = "cpx";
/// Nodes live on `10.213.R.0/24`.
const SUBNET: [u8; 2] = [10, 213];
/// Host part of the driver's address (the root end of the hub veth).
const DRIVER_HOST: u8 = 254;
/// Run ids handed out by [`Lab::create`]; 240..=254 stay free for tests of the sweeper.
const RUN_IDS: std::ops::RangeInclusive<u8> = 1..=239;
/// Largest lab [`Lab::create`] accepts.
pub const MAX_NODES: usize = 64;
/// nftables table (family `inet`) holding the fault rules in each node's namespace.
pub const NFT_TABLE: &str = "cellpay_chaos";
/// nftables table (family `inet`) in each node's namespace that keeps IPv4 inside the lab;
/// installed by [`Lab::create`], untouched by faults and [`Lab::heal`].
pub const FENCE_TABLE: &str = "cellpay_fence";
/// Where run-id locks live (root-only tmpfs; shared by every process on the machine).
const LOCK_DIR: &str = "/run/cellpay-netlab";
/// How long [`Drop`] waits for the kernel to finish tearing namespaces down.
const TEARDOWN_WAIT: Duration = Duration::from_secs(3);

/// Checks that the lab can run here: root, `ip` and `nft` present, and a throw-away namespace with
/// a bridge, a veth pair and an nftables table can be created. `Err` says why not (the runner then
/// falls back to 127.0.0.x mode).
pub fn lab_available() -> Result<(), String> {
    if !is_root() {
        return Err("not running as root (namespaces and nftables need root)".into());
    }
    for (tool, arg, package) in [("ip", "-V", "iproute2"), ("nft", "--version", "nftables")] {
        run(Command::new(tool).arg(arg))
            .map_err(|e| format!("`{tool}` unusable (install {package}): {e:#}"))?;
    }
    if let Err(e) = std::fs::create_dir_all(LOCK_DIR) {
        return Err(format!("cannot create {LOCK_DIR}: {e}"));
    }
    static PROBES: AtomicU32 = AtomicU32::new(0);
    let ns = format!(
        "{NAME_PREFIX}probe{}x{}",
        std::process::id(),
        PROBES.fetch_add(1, Ordering::Relaxed)
    );
    let result = probe_namespace(&ns);
    let _ = run(Command::new("ip").args(["netns", "del", &ns]));
    result.map_err(|e| format!("cannot build a test namespace: {e:#}"))
}

fn probe_namespace(ns: &str) -> Result<()> {
    ip(&["netns", "add", ns])?;
    ip(&["-n", ns, "link", "add", "b0", "type", "bridge"])?;
    ip(&[
        "-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
    ])?;
    ip(&["-n", ns, "link", "set", "v0", "master", "b0"])?;
    let script = format!(
        "table inet {NFT_TABLE} {{\n  chain input {{\n    type filter hook input priority filter; \
         policy accept;\n    ip saddr {{ 10.213.0.1 }} numgen random mod 100 < 5 drop\n  }}\n}}\n"
    );
    nft_in(ns, &script)
}

fn is_root() -> bool {
    // Effective uid is the second field of `Uid:` in /proc/self/status.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// One end of a directed link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum End {
    Driver,
    Node(usize),
}

/// What happens to packets on a directed link (absent from the matrix: delivered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkFault {
    Drop,
    Loss(u8),
}

#[derive(Debug)]
struct Faults {
    /// Cut or lossy directed links.
    links: BTreeMap<(End, End), LinkFault>,
    /// Per node (index k-1): the ruleset last installed successfully (`""` = no table), or
    /// `None` when unknown (never applied, or the last attempt failed).
    applied: Vec<Option<String>>,
    /// Per node: the fault call that last affected it, for [`Lab::describe`].
    notes: BTreeMap<usize, String>,
}

/// A network lab: one namespace per node on a private /24, reachable from the root namespace.
/// See the [module docs](self).
#[derive(Debug)]
pub struct Lab {
    run: u8,
    nodes: usize,
    hub: String,
    host_link: String,
    netns: Vec<String>,
    faults: Mutex<Faults>,
    /// Holds the run id's flock until the lab is gone (released after `Drop::drop`).
    _lock: File,
}

impl Lab {
    /// Builds a lab of `nodes` (1..=[`MAX_NODES`]) namespaces. Node k (1-based) gets
    /// `10.213.R.k/24`; the root namespace gets `10.213.R.254/24`.
    pub fn create(nodes: usize) -> Result<Lab> {
        if nodes == 0 || nodes > MAX_NODES {
            bail!("a lab has 1..={MAX_NODES} nodes, not {nodes}");
        }
        sweep_stale();
        let (run, lock) = claim_run_id()?;
        let prefix = format!("{NAME_PREFIX}{run}");
        let lab = Lab {
            run,
            nodes,
            hub: format!("{prefix}-hub"),
            host_link: format!("{prefix}-h"),
            netns: (1..=nodes).map(|k| format!("{prefix}-n{k}")).collect(),
            faults: Mutex::new(Faults {
                links: BTreeMap::new(),
                applied: vec![Some(String::new()); nodes],
                notes: BTreeMap::new(),
            }),
            _lock: lock,
        };
        // From here on, an error drops `lab`, which removes whatever was built.
        lab.build()
            .with_context(|| format!("building network lab {prefix}"))?;
        Ok(lab)
    }

    fn build(&self) -> Result<()> {
        let hub = self.hub.as_str();
        ip(&["netns", "add", hub])?;
        ip(&["-n", hub, "link", "set", "lo", "up"])?;
        ip(&["-n", hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", hub, "link", "set", "br0", "up"])?;
        let host = self.host_link.as_str();
        ip(&[
            "link", "add", host, "type", "veth", "peer", "name", "up0", "netns", hub,
        ])?;
        let driver = format!("{}/24", self.driver_ip());
        ip(&["addr", "add", &driver, "dev", host])?;
        ip(&["link", "set", host, "up"])?;
        ip(&["-n", hub, "link", "set", "up0", "master", "br0", "up"])?;
        let gateway = self.driver_ip().to_string();
        for k in 1..=self.nodes {
            let ns = self.netns(k);
            let port = format!("v{k}");
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                ns,
            ])?;
            ip(&["-n", hub, "link", "set", &port, "master", "br0", "up"])?;
            let addr = format!("{}/24", self.node_ip(k));
            ip(&["-n", ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", ns, "route", "add", "default", "via", &gateway])?;
            nft_in(ns, &self.fence())?;
        }
        Ok(())
    }

    /// Permanent rules of every node namespace: IPv4 may only go to loopback and the lab's /24.
    /// The default route points at the root namespace, which may forward; this keeps a node
    /// configured with a wrong address from sending anything off the lab.
    fn fence(&self) -> String {
        format!(
            "table inet {FENCE_TABLE} {{\n  chain output {{\n    \
             type filter hook output priority filter; policy accept;\n    \
             ip daddr != {{ 127.0.0.0/8, {}.{}.{}.0/24 }} drop\n  }}\n}}\n",
            SUBNET[0], SUBNET[1], self.run
        )
    }

    /// Number of nodes.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// The run id `R` (names `cpxR-*`, subnet `10.213.R.0/24`).
    pub fn run_id(&self) -> u8 {
        self.run
    }

    /// Address of node `k` (1-based). Panics if `k` is not a node of this lab.
    pub fn node_ip(&self, k: usize) -> Ipv4Addr {
        self.check_node(k);
        let host = u8::try_from(k).expect("node index fits the /24 (checked at create)");
        Ipv4Addr::new(SUBNET[0], SUBNET[1], self.run, host)
    }

    /// Address of the workload driver (root namespace), `10.213.R.254`.
    pub fn driver_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET[0], SUBNET[1], self.run, DRIVER_HOST)
    }

    /// Name of node `k`'s namespace (for `ip netns exec`). Panics if `k` is not a node.
    pub fn netns(&self, k: usize) -> &str {
        self.check_node(k);
        &self.netns[k - 1]
    }

    /// Every namespace of the lab: the nodes' and the hub's (which holds the bridge).
    pub fn all_netns(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self.netns.iter().map(String::as_str).collect();
        all.push(&self.hub);
        all
    }

    /// Name of the root-namespace end of the hub veth (holds the driver's address).
    pub fn host_link(&self) -> &str {
        &self.host_link
    }

    /// `ip netns exec <netns(k)> <program>`: add arguments and spawn to run `program` inside
    /// node k's namespace. Panics if `k` is not a node.
    pub fn command(&self, k: usize, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.netns(k)]).arg(program);
        cmd
    }

    fn check_node(&self, k: usize) {
        assert!(
            (1..=self.nodes).contains(&k),
            "node {k} is not in this lab (nodes are 1..={})",
            self.nodes
        );
    }

    fn check_nodes(&self, nodes: impl IntoIterator<Item = usize>) -> Result<()> {
        for k in nodes {
            if !(1..=self.nodes).contains(&k) {
                bail!("node {k} is not in this lab (nodes are 1..={})", self.nodes);
            }
        }
        Ok(())
    }

    fn lock_faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cuts node `k` off from every other node, both ways. With `include_driver` the driver is
    /// cut off too; without, the driver still reaches k (a client on another network path).
    pub fn isolate(&self, k: usize, include_driver: bool) -> Result<()> {
        self.check_nodes([k])?;
        let note = format!("isolate({k}, include_driver={include_driver})");
        self.change(&[k], note, |links| {
            for j in self.peers(k) {
                links.insert((End::Node(j), End::Node(k)), LinkFault::Drop);
                links.insert((End::Node(k), End::Node(j)), LinkFault::Drop);
            }
            if include_driver {
                links.insert((End::Driver, End::Node(k)), LinkFault::Drop);
                links.insert((End::Node(k), End::Driver), LinkFault::Drop);
            }
        })
    }

    /// Nodes in different groups cannot talk; nodes in the same group can. Replaces all earlier
    /// rules between the listed nodes (and their driver links); nodes listed in no group keep
    /// their rules and talk to everyone listed (Jepsen's "bridge" node). A node may appear once.
    pub fn partition(&self, groups: &[Vec<usize>]) -> Result<()> {
        let mut seen = BTreeSet::new();
        for &k in groups.iter().flatten() {
            self.check_nodes([k])?;
            if !seen.insert(k) {
                bail!("node {k} is in more than one group of {groups:?}");
            }
        }
        let affected: Vec<usize> = seen.into_iter().collect();
        self.change(&affected, format!("partition({groups:?})"), |links| {
            for (i, a_group) in groups.iter().enumerate() {
                for (j, b_group) in groups.iter().enumerate() {
                    if i == j {
                        continue;
                    }
                    for &a in a_group {
                        for &b in b_group {
                            links.insert((End::Node(a), End::Node(b)), LinkFault::Drop);
                        }
                    }
                }
            }
        })
    }

    /// Node `k` still sends to the other nodes but receives nothing from them (dropped in k's
    /// input). TCP between k and its peers therefore fails both ways (handshakes cannot
    /// complete); only datagrams from k get through. The driver is unaffected.
    pub fn one_way(&self, k: usize) -> Result<()> {
        self.check_nodes([k])?;
        self.change(&[k], format!("one_way({k})"), |links| {
            for j in self.peers(k) {
                links.insert((End::Node(j), End::Node(k)), LinkFault::Drop);
            }
        })
    }

    /// Each packet between node `k` and another node (either direction) is dropped with
    /// probability `percent`% (1..=99). A round trip thus loses about `1-(1-p)^2`. The driver is
    /// unaffected.
    pub fn loss(&self, k: usize, percent: u8) -> Result<()> {
        self.check_nodes([k])?;
        if !(1..=99).contains(&percent) {
            bail!("loss percent must be 1..=99, not {percent}");
        }
        self.change(&[k], format!("loss({k}, {percent}%)"), |links| {
            for j in self.peers(k) {
                links.insert((End::Node(j), End::Node(k)), LinkFault::Loss(percent));
                links.insert((End::Node(k), End::Node(j)), LinkFault::Loss(percent));
            }
        })
    }

    /// Removes every rule from every node (deletes the nftables table in each namespace).
    pub fn heal(&self) -> Result<()> {
        let mut faults = self.lock_faults();
        faults.links.clear();
        faults.notes.clear();
        faults.applied.iter_mut().for_each(|a| *a = None);
        self.apply(&mut faults)
    }

    /// The current faults and the rules rendered for each node, for logs.
    pub fn describe(&self) -> String {
        let faults = self.lock_faults();
        let mut out = format!(
            "network lab {NAME_PREFIX}{}: {} nodes on 10.213.{}.0/24, driver {} (root ns, {})\n",
            self.run,
            self.nodes,
            self.run,
            self.driver_ip(),
            self.host_link
        );
        if faults.links.is_empty() {
            out.push_str("  no faults\n");
            return out;
        }
        for k in 1..=self.nodes {
            let note = faults
                .notes
                .get(&k)
                .map_or(String::new(), |n| format!(" [{n}]"));
            let _ = writeln!(out, "  n{k} {} {}{note}:", self.netns(k), self.node_ip(k));
            let (input, output) = self.rules_for(&faults.links, k);
            if input.is_empty() && output.is_empty() {
                out.push_str("    no rules\n");
            }
            for rule in &input {
                let _ = writeln!(out, "    input:  {rule}");
            }
            for rule in &output {
                let _ = writeln!(out, "    output: {rule}");
            }
        }
        out
    }

    /// The rules as the kernel has them (`nft list table` in each node's namespace).
    pub fn describe_live(&self) -> Result<String> {
        let mut out = String::new();
        for k in 1..=self.nodes {
            let listed = run(self
                .command(k, "nft")
                .args(["list", "table", "inet", NFT_TABLE]))
            .unwrap_or_else(|_| "(no table)\n".into());
            let _ = write!(out, "n{k} {}:\n{listed}", self.netns(k));
        }
        Ok(out)
    }

    fn peers(&self, k: usize) -> impl Iterator<Item = usize> {
        (1..=self.nodes).filter(move |&j| j != k)
    }

    /// Clears the links touching `affected`, lets `cut` add new ones, installs the result.
    fn change(
        &self,
        affected: &[usize],
        note: String,
        cut: impl FnOnce(&mut BTreeMap<(End, End), LinkFault>),
    ) -> Result<()> {
        let mut faults = self.lock_faults();
        let touches = |end: &End| matches!(end, End::Node(n) if affected.contains(n));
        faults.links.retain(|(a, b), _| !touches(a) && !touches(b));
        cut(&mut faults.links);
        for &k in affected {
            faults.notes.insert(k, note.clone());
        }
        self.apply(&mut faults)
    }

    /// Input and output rules (nft syntax) for node `k` under `links`.
    fn rules_for(
        &self,
        links: &BTreeMap<(End, End), LinkFault>,
        k: usize,
    ) -> (Vec<String>, Vec<String>) {
        let addr = |end: End| match end {
            End::Driver => self.driver_ip(),
            End::Node(n) => self.node_ip(n),
        };
        // Grouped by fault, so each kind of drop is one rule with an address set.
        let mut inbound: BTreeMap<Option<u8>, Vec<String>> = BTreeMap::new();
        let mut outbound: BTreeMap<Option<u8>, Vec<String>> = BTreeMap::new();
        for (&(from, to), &fault) in links {
            let pct = match fault {
                LinkFault::Drop => None,
                LinkFault::Loss(p) => Some(p),
            };
            if to == End::Node(k) {
                inbound.entry(pct).or_default().push(addr(from).to_string());
            } else if from == End::Node(k) && to == End::Driver {
                // The driver's namespace is the host's: cut k's replies at k instead.
                outbound.entry(pct).or_default().push(addr(to).to_string());
            }
        }
        let render = |dir: &str, groups: BTreeMap<Option<u8>, Vec<String>>| -> Vec<String> {
            groups
                .into_iter()
                .map(|(pct, addrs)| {
                    let chance =
                        pct.map_or(String::new(), |p| format!("numgen random mod 100 < {p} "));
                    format!("ip {dir} {{ {} }} {chance}drop", addrs.join(", "))
                })
                .collect()
        };
        (render("saddr", inbound), render("daddr", outbound))
    }

    /// The full nft script for node `k` ("" = no rules, no table).
    fn ruleset_for(&self, links: &BTreeMap<(End, End), LinkFault>, k: usize) -> String {
        let (input, output) = self.rules_for(links, k);
        if input.is_empty() && output.is_empty() {
            return String::new();
        }
        let chain = |name: &str, rules: &[String]| {
            let mut s = format!(
                "  chain {name} {{\n    type filter hook {name} priority filter; policy accept;\n"
            );
            for rule in rules {
                let _ = writeln!(s, "    {rule}");
            }
            s.push_str("  }\n");
            s
        };
        format!(
            "table inet {NFT_TABLE} {{\n{}{}}}\n",
            chain("input", &input),
            chain("output", &output)
        )
    }

    /// Installs the rendered rules on every node whose rules changed (or are unknown).
    fn apply(&self, faults: &mut Faults) -> Result<()> {
        let mut errors = Vec::new();
        for k in 1..=self.nodes {
            let wanted = self.ruleset_for(&faults.links, k);
            if faults.applied[k - 1].as_deref() == Some(wanted.as_str()) {
                continue;
            }
            // "add table; delete table" makes the delete succeed whether or not the table exists,
            // and the whole script is one transaction: the node never runs without its rules.
            let script =
                format!("table inet {NFT_TABLE} {{}}\ndelete table inet {NFT_TABLE}\n{wanted}");
            match nft_in(self.netns(k), &script) {
                Ok(()) => faults.applied[k - 1] = Some(wanted),
                Err(e) => {
                    faults.applied[k - 1] = None;
                    errors.push(format!("node {k}: {e:#}"));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(anyhow!(
                "installing fault rules failed: {}",
                errors.join("; ")
            ))
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for problem in teardown_run(self.run) {
            eprintln!("network lab {NAME_PREFIX}{}: clean-up: {problem}", self.run);
        }
    }
}

/// Removes leftovers of labs whose run id nobody holds (crashed runs): `cpx<id>-*` namespaces
/// and `cpx<id>-h` links. Returns the names removed. Best effort; called by [`Lab::create`].
pub fn sweep_stale() -> Vec<String> {
    let mut ids = BTreeSet::new();
    let names = list_netns().into_iter().chain(list_root_links());
    for name in names {
        if let Some(id) = run_id_of(&name) {
            ids.insert(id);
        }
    }
    let mut removed = Vec::new();
    // Probe namespaces of `lab_available` whose process is gone.
    for ns in list_netns() {
        let Some(rest) = ns.strip_prefix(&format!("{NAME_PREFIX}probe")) else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('x') else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() && ip(&["netns", "del", &ns]).is_ok() {
            removed.push(ns);
        }
    }
    for id in ids {
        // Holding the lock proves no live lab uses the id; it is released at the end of the loop.
        let Ok(lock) = open_lock(id) else { continue };
        if lock.try_lock().is_err() {
            continue;
        }
        let prefix = format!("{NAME_PREFIX}{id}-");
        removed.extend(list_netns().into_iter().filter(|n| n.starts_with(&prefix)));
        removed.extend(
            list_root_links()
                .into_iter()
                .filter(|n| n.starts_with(&prefix)),
        );
        for problem in teardown_run(id) {
            eprintln!("network lab sweep: {problem}");
        }
    }
    removed
}

/// `cpx17-n3` → 17 (names of the form `cpx<digits>-...`).
fn run_id_of(name: &str) -> Option<u8> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let (digits, _) = rest.split_once('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn lock_path(id: u8) -> PathBuf {
    Path::new(LOCK_DIR).join(format!("{id}.lock"))
}

fn open_lock(id: u8) -> Result<File> {
    std::fs::create_dir_all(LOCK_DIR).with_context(|| format!("creating {LOCK_DIR}"))?;
    let path = lock_path(id);
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Claims a free run id: its lock taken, its leftovers removed, its /24 unused by the host.
fn claim_run_id() -> Result<(u8, File)> {
    let ids: Vec<u8> = RUN_IDS.collect();
    let start = rand::random_range(0..ids.len());
    for i in 0..ids.len() {
        let id = ids[(start + i) % ids.len()];
        let lock = open_lock(id)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => continue,
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", lock_path(id).display()))
            }
        }
        for problem in teardown_run(id) {
            eprintln!("network lab {NAME_PREFIX}{id}: removing leftovers: {problem}");
        }
        if subnet_in_use(id) {
            continue;
        }
        return Ok((id, lock));
    }
    bail!("no free network lab id in {RUN_IDS:?} (all locked or their subnets in use)")
}

/// Whether the host already has an address or route in 10.213.id.0/24.
fn subnet_in_use(id: u8) -> bool {
    let net = format!("{}.{}.{id}.0/24", SUBNET[0], SUBNET[1]);
    let addrs = run(Command::new("ip").args(["-4", "-o", "addr", "show", "to", &net]));
    let routes = run(Command::new("ip").args(["-4", "route", "show", "to", "match", &net]));
    let busy = |r: Result<String>| r.map_or(true, |s| !s.trim().is_empty());
    // `route show to match` also lists the default route; only a route inside the /24 counts.
    let routes = routes.map(|s| {
        s.lines()
            .filter(|l| l.starts_with(&format!("{}.{}.{id}.", SUBNET[0], SUBNET[1])))
            .collect::<Vec<_>>()
            .join("\n")
    });
    busy(addrs) || busy(routes)
}

/// Kills processes in, and deletes, everything named `cpx<id>-*`; waits for the kernel to finish.
/// Returns problems (never panics).
fn teardown_run(id: u8) -> Vec<String> {
    let prefix = format!("{NAME_PREFIX}{id}-");
    let mut problems = Vec::new();
    let namespaces: Vec<String> = list_netns()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    for ns in &namespaces {
        kill_processes_in(ns, &mut problems);
    }
    for link in list_root_links()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
    {
        if let Err(e) = ip(&["link", "del", &link]) {
            problems.push(format!("{e:#}"));
        }
    }
    for ns in &namespaces {
        if let Err(e) = ip(&["netns", "del", ns]) {
            problems.push(format!("{e:#}"));
        }
    }
    // Namespace teardown is asynchronous in the kernel; links linger briefly.
    let deadline = Instant::now() + TEARDOWN_WAIT;
    loop {
        let left: Vec<String> = list_netns()
            .into_iter()
            .chain(list_root_links())
            .filter(|n| n.starts_with(&prefix))
            .collect();
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            problems.push(format!("still present after {TEARDOWN_WAIT:?}: {left:?}"));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    problems
}

fn kill_processes_in(ns: &str, problems: &mut Vec<String>) {
    let pids = match run(Command::new("ip").args(["netns", "pids", ns])) {
        Ok(out) => out,
        Err(e) => {
            problems.push(format!("{e:#}"));
            return;
        }
    };
    let pids: Vec<&str> = pids.split_whitespace().collect();
    if pids.is_empty() {
        return;
    }
    if let Err(e) = run(Command::new("kill").arg("-KILL").args(&pids)) {
        problems.push(format!("killing processes in {ns}: {e:#}"));
    }
}

/// Names from `ip netns list` (lines like `cpx17-n1 (id: 3)`).
fn list_netns() -> Vec<String> {
    run(Command::new("ip").args(["netns", "list"]))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Names of links in the root namespace (`ip -o link show`: `5: cpx17-h@if2: <...`).
fn list_root_links() -> Vec<String> {
    run(Command::new("ip").args(["-o", "link", "show"]))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let name = l.split(": ").nth(1)?;
            Some(name.split('@').next().unwrap_or(name).to_owned())
        })
        .collect()
}

/// Runs `ip ARGS`.
fn ip(args: &[&str]) -> Result<()> {
    run(Command::new("ip").args(args)).map(drop)
}

/// Runs `nft -f -` inside namespace `ns` with `script` on stdin.
fn nft_in(ns: &str, script: &str) -> Result<()> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "nft", "-f", "-"]);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    let mut stdin = child.stdin.take().context("nft stdin")?;
    let written = stdin.write_all(script.as_bytes());
    drop(stdin);
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {cmd:?}"))?;
    written.with_context(|| format!("writing the script to {cmd:?}"))?;
    check(&cmd, &out).with_context(|| format!("script:\n{script}"))
}

/// Runs `cmd`, returns stdout; a non-zero exit becomes an error carrying stderr.
fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawning {cmd:?}"))?;
    check(cmd, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check(cmd: &Command, out: &std::process::Output) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    bail!(
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_parse_only_lab_names() {
        assert_eq!(run_id_of("cpx17-n3"), Some(17));
        assert_eq!(run_id_of("cpx239-h"), Some(239));
        assert_eq!(run_id_of("cpxprobe12x0"), None);
        assert_eq!(run_id_of("cpx-n1"), None);
        assert_eq!(run_id_of("cpx999-n1"), None);
        assert_eq!(run_id_of("eth0"), None);
    }
}

//! Tests of the chaos suite's network lab (`chaos_tests::net`): real namespaces, a real bridge,
//! real nftables rules, probed with tiny python3 TCP/UDP programs run inside the namespaces.
//!
//! Every test skips (prints `skipped: <reason>` and passes) when the lab cannot run here (not
//! root, `ip`/`nft`/`python3` missing). Tests run in parallel safely: each lab claims its own run
//! id (names `cpxR-*`, subnet 10.213.R.0/24).

use std::io::{BufRead, BufReader, Read};
use std::net::Ipv4Addr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use chaos_tests::net::{lab_available, sweep_stale, Lab};

/// TCP echo server: `PORT`; prints `ready` once listening; exits by itself after 60 s.
const TCP_SERVER: &str = r#"
import os, socket, sys, threading
threading.Timer(60, os._exit, (0,)).start()
s = socket.create_server(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
def echo(c):
    try:
        c.settimeout(5)
        c.sendall(c.recv(64))
    except OSError:
        pass
    finally:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=echo, args=(c,), daemon=True).start()
"#;

/// TCP client: `IP PORT TIMEOUT`; exit 0 iff the echo came back within the timeout.
const TCP_CLIENT: &str = r#"
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    c.sendall(b"ping")
    sys.exit(0 if c.recv(64) == b"ping" else 2)
except OSError as e:
    print(e)
    sys.exit(1)
"#;

/// UDP receiver: `PORT`; prints `ready`, counts datagrams until 1.5 s pass without one (3 s
/// before the first), prints the count. Exits by itself after 60 s.
const UDP_RECEIVER: &str = r#"
import os, socket, sys, threading
threading.Timer(60, os._exit, (3,)).start()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
n = 0
s.settimeout(3.0)
while True:
    try:
        s.recv(2048)
        n += 1
        s.settimeout(1.5)
    except socket.timeout:
        break
print(n, flush=True)
os._exit(0)
"#;

/// UDP sender: `IP PORT COUNT`; sends COUNT datagrams 2 ms apart, prints `sent errors`.
const UDP_SENDER: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sent = errors = 0
for i in range(int(sys.argv[3])):
    try:
        s.sendto(b"d%d" % i, (sys.argv[1], int(sys.argv[2])))
        sent += 1
    except OSError:
        errors += 1
    time.sleep(0.002)
print(sent, errors)
"#;

const TCP_PORT: &str = "7000";
const UDP_PORT: &str = "7001";
/// The driver (root namespace) in the helpers' `from` arguments; nodes are 1-based.
const DRIVER: usize = 0;

/// Opens a lab of `$nodes` nodes, or prints `skipped: <reason>` and returns from the test.
macro_rules! lab_or_skip {
    ($nodes:expr) => {
        match skip_reason() {
            Some(reason) => {
                println!("skipped: {reason}");
                return;
            }
            None => Lab::create($nodes).expect("create the network lab"),
        }
    };
}

fn skip_reason() -> Option<String> {
    if let Err(reason) = lab_available() {
        return Some(reason);
    }
    let python = Command::new("python3").arg("--version").output();
    match python {
        Ok(out) if out.status.success() => None,
        _ => Some("python3 not available".into()),
    }
}

/// `python3 -c SCRIPT` in node `at`'s namespace, or in the root namespace for [`DRIVER`].
fn python(lab: &Lab, at: usize, script: &str) -> Command {
    let mut cmd = if at == DRIVER {
        Command::new("python3")
    } else {
        lab.command(at, "python3")
    };
    cmd.args(["-c", script]);
    cmd
}

/// A python server inside a namespace; killed (by its pid, via the Child) when dropped.
struct Server {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Server {
    fn start(lab: &Lab, at: usize, script: &str, port: &str) -> Server {
        let mut child = python(lab, at, script)
            .arg(port)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn python3 server");
        let mut stdout = BufReader::new(child.stdout.take().expect("server stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read server banner");
        assert_eq!(line.trim(), "ready", "server in node {at} did not start");
        Server { child, stdout }
    }

    /// Waits for the server to exit by itself and returns the rest of its output.
    fn finish(mut self) -> String {
        let mut rest = String::new();
        self.stdout
            .read_to_string(&mut rest)
            .expect("read server output");
        let _ = self.child.wait();
        rest
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a TCP echo server on every node.
fn echo_servers(lab: &Lab) -> Vec<Server> {
    (1..=lab.nodes())
        .map(|k| Server::start(lab, k, TCP_SERVER, TCP_PORT))
        .collect()
}

/// For each `(from, to)`: does a TCP echo from `from` (a node or [`DRIVER`]) to node `to`
/// succeed within 1 s? Probes run concurrently.
fn tcp_probes(lab: &Lab, pairs: &[(usize, usize)]) -> Vec<bool> {
    let children: Vec<Child> = pairs
        .iter()
        .map(|&(from, to)| {
            python(lab, from, TCP_CLIENT)
                .args([&lab.node_ip(to).to_string(), TCP_PORT, "1.0"])
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn python3 client")
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            c.wait_with_output()
                .expect("wait for client")
                .status
                .success()
        })
        .collect()
}

/// Asserts which TCP probes succeed: `expect` lists `(from, to, reachable)`.
fn assert_tcp(lab: &Lab, what: &str, expect: &[(usize, usize, bool)]) {
    let pairs: Vec<(usize, usize)> = expect.iter().map(|&(f, t, _)| (f, t)).collect();
    let got = tcp_probes(lab, &pairs);
    let mut wrong = Vec::new();
    for (&(from, to, want), &ok) in expect.iter().zip(&got) {
        if want != ok {
            let from = if from == DRIVER {
                "driver".to_string()
            } else {
                format!("n{from}")
            };
            wrong.push(format!("{from}->n{to}: expected {want}, got {ok}"));
        }
    }
    assert!(wrong.is_empty(), "{what}: {wrong:?}\n{}", lab.describe());
}

/// Every directed pair of distinct nodes plus driver→node, all expected `reachable`.
fn all_pairs(lab: &Lab, reachable: bool) -> Vec<(usize, usize, bool)> {
    let n = lab.nodes();
    let mut pairs = Vec::new();
    for from in 0..=n {
        for to in 1..=n {
            if from != to {
                pairs.push((from, to, reachable));
            }
        }
    }
    pairs
}

/// Sends `count` UDP datagrams from node `from` to node `to`; returns (received, send errors).
fn udp_transfer(lab: &Lab, from: usize, to: usize, count: usize) -> (usize, usize) {
    let receiver = Server::start(lab, to, UDP_RECEIVER, UDP_PORT);
    let out = python(lab, from, UDP_SENDER)
        .args([&lab.node_ip(to).to_string(), UDP_PORT, &count.to_string()])
        .output()
        .expect("run python3 UDP sender");
    assert!(out.status.success(), "UDP sender failed: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let errors: usize = stdout
        .split_whitespace()
        .nth(1)
        .and_then(|e| e.parse().ok())
        .expect("sender prints `sent errors`");
    let received = receiver
        .finish()
        .trim()
        .parse()
        .expect("receiver prints a count");
    (received, errors)
}

fn netns_list() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn link_list() -> String {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link show");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// Goal: a fresh lab is a working network: every node reaches every other node and the driver
// (root namespace) reaches every node, with the addresses the API reports.
// Method: 3 nodes, a TCP echo server in each, concurrent echo probes over all 9 directed pairs;
// then check the fence table is in place.
#[test]
fn all_nodes_and_driver_reach_each_other() {
    let lab = lab_or_skip!(3);
    let run = lab.run_id();
    assert_eq!(lab.node_ip(2), Ipv4Addr::new(10, 213, run, 2));
    assert_eq!(lab.driver_ip(), Ipv4Addr::new(10, 213, run, 254));
    assert_eq!(lab.netns(3), format!("cpx{run}-n3"));
    let _servers = echo_servers(&lab);
    assert_tcp(&lab, "fresh lab", &all_pairs(&lab, true));
    assert!(lab.describe().contains("no faults"), "{}", lab.describe());
    // The fence (IPv4 only to loopback and the lab's /24) is installed; it is not exercised with
    // real traffic, which would have to aim outside the lab.
    let fence = lab
        .command(1, "nft")
        .args(["list", "table", "inet", "cellpay_fence"])
        .output()
        .expect("nft list");
    let fence = String::from_utf8_lossy(&fence.stdout);
    assert!(
        fence.contains(&format!("10.213.{run}.0/24")),
        "fence: {fence}"
    );
}

// Goal: isolate(k) cuts k off from the other nodes but, with include_driver=false, not from the
// driver; include_driver=true cuts the driver too; heal restores everything.
// Method: TCP echo probes 1<->2, 3<->2, 1<->3, driver->2 after each step.
#[test]
fn isolate_cuts_a_node_off_and_heal_restores() {
    let lab = lab_or_skip!(3);
    let _servers = echo_servers(&lab);
    lab.isolate(2, false).expect("isolate(2)");
    let isolated = [
        (1, 2, false),
        (2, 1, false),
        (3, 2, false),
        (2, 3, false),
        (1, 3, true),
        (3, 1, true),
        (DRIVER, 2, true),
        (DRIVER, 1, true),
    ];
    assert_tcp(&lab, "isolate(2, false)", &isolated);
    assert!(lab.describe().contains("isolate(2"), "{}", lab.describe());

    lab.isolate(2, true).expect("isolate(2, include_driver)");
    let mut without_driver = isolated;
    without_driver[6] = (DRIVER, 2, false);
    assert_tcp(&lab, "isolate(2, true)", &without_driver);

    lab.heal().expect("heal");
    assert_tcp(&lab, "after heal", &all_pairs(&lab, true));
    assert!(lab.describe().contains("no faults"), "{}", lab.describe());
}

// Goal: partition([[1],[2,3]]) splits the nodes into groups that cannot talk across, while the
// driver still reaches everyone; a later fault replaces the rules of the nodes it affects; bad
// groups are rejected.
// Method: TCP echo probes on all pairs; then partition([[1,2],[3]]) replaces the first one.
#[test]
fn partition_separates_groups() {
    let lab = lab_or_skip!(3);
    let _servers = echo_servers(&lab);
    lab.partition(&[vec![1], vec![2, 3]]).expect("partition");
    let expect = [
        (1, 2, false),
        (2, 1, false),
        (1, 3, false),
        (3, 1, false),
        (2, 3, true),
        (3, 2, true),
        (DRIVER, 1, true),
        (DRIVER, 2, true),
        (DRIVER, 3, true),
    ];
    assert_tcp(&lab, "partition [[1],[2,3]]", &expect);

    lab.partition(&[vec![1, 2], vec![3]])
        .expect("second partition");
    let expect = [(1, 2, true), (2, 1, true), (1, 3, false), (3, 2, false)];
    assert_tcp(&lab, "partition [[1,2],[3]]", &expect);

    assert!(
        lab.partition(&[vec![1], vec![1, 2]]).is_err(),
        "node in two groups"
    );
    assert!(lab.partition(&[vec![4]]).is_err(), "node out of range");
    lab.heal().expect("heal");
    assert_tcp(&lab, "after heal", &all_pairs(&lab, true));
}

// Goal: one_way(1): node 1's packets reach its peers, theirs never reach node 1; the driver is
// unaffected. TCP cannot show this (1's SYN arrives, the SYN-ACK is dropped), so UDP does.
// Method: 50 datagrams 1->2 all arrive; 50 datagrams 2->1 none arrive; TCP 1->2 fails,
// driver->1 works; after heal 2->1 datagrams arrive again.
#[test]
fn one_way_drops_only_inbound() {
    let lab = lab_or_skip!(3);
    let _servers = echo_servers(&lab);
    lab.one_way(1).expect("one_way(1)");
    let (received, errors) = udp_transfer(&lab, 1, 2, 50);
    assert_eq!(
        (received, errors),
        (50, 0),
        "1->2 should all arrive\n{}",
        lab.describe()
    );
    let (received, errors) = udp_transfer(&lab, 2, 1, 50);
    assert_eq!(
        received,
        0,
        "2->1 should all be dropped\n{}",
        lab.describe()
    );
    assert_eq!(errors, 0, "drops are silent for the sender");
    assert_tcp(
        &lab,
        "one_way(1)",
        &[(1, 2, false), (DRIVER, 1, true), (2, 3, true)],
    );

    lab.heal().expect("heal");
    let (received, _) = udp_transfer(&lab, 2, 1, 50);
    assert_eq!(received, 50, "after heal 2->1 should arrive");
}

// Goal: loss(1, 30) drops about 30% of the packets between node 1 and its peers, silently for
// the sender, and leaves other links alone; out-of-range percentages are rejected.
// Method: 200 datagrams 1->2 (accept 10%..55% lost, zero send errors), 100 datagrams 2->3 (none
// lost).
#[test]
fn loss_drops_a_fraction() {
    let lab = lab_or_skip!(3);
    lab.loss(1, 30).expect("loss(1, 30)");
    assert!(
        lab.describe().contains("numgen random mod 100 < 30"),
        "{}",
        lab.describe()
    );
    let sent = 200;
    let (received, errors) = udp_transfer(&lab, 1, 2, sent);
    let lost = sent - received;
    println!("loss(1, 30): {lost} of {sent} datagrams lost");
    assert!(
        (20..=110).contains(&lost),
        "lost {lost} of {sent}\n{}",
        lab.describe()
    );
    assert_eq!(errors, 0, "drops are silent for the sender");
    let (received, _) = udp_transfer(&lab, 2, 3, 100);
    assert_eq!(received, 100, "2->3 is not lossy");
    assert!(lab.loss(1, 0).is_err() && lab.loss(1, 100).is_err());
    lab.heal().expect("heal");
}

// Goal: dropping a lab removes everything it created: its namespaces (nodes and hub, which holds
// the bridge), the root-namespace veth, and any process still running inside.
// Method: create a 2-node lab, start a server in node 1, drop the lab; check `ip netns list`,
// `ip link show` and the server's exit.
#[test]
fn drop_removes_namespaces_bridge_and_links() {
    let lab = lab_or_skip!(2);
    let namespaces: Vec<String> = lab.all_netns().iter().map(|s| s.to_string()).collect();
    let host_link = lab.host_link().to_string();
    assert_eq!(namespaces.len(), 3);
    let listed = netns_list();
    for ns in &namespaces {
        assert!(
            listed.contains(ns.as_str()),
            "{ns} missing before drop: {listed}"
        );
    }
    assert!(link_list().contains(&format!("{host_link}@")));
    let mut server = Server::start(&lab, 1, TCP_SERVER, TCP_PORT);

    drop(lab);
    let listed = netns_list();
    for ns in &namespaces {
        assert!(
            !listed.contains(ns.as_str()),
            "{ns} still there after drop: {listed}"
        );
    }
    let links = link_list();
    assert!(
        !links.contains(&format!("{host_link}@")),
        "{host_link} remains: {links}"
    );
    let status = server.child.wait().expect("wait for server");
    assert!(
        !status.success(),
        "server should have been killed, got {status}"
    );
}

// Goal: leftovers of a crashed run (namespaces and links named cpx<id>-*, no lock held) are
// removed by the sweep that every Lab::create runs first.
// Method: fake leftovers with id 251 (never handed out), sweep, check they are gone.
#[test]
fn stale_leftovers_are_swept() {
    if let Some(reason) = skip_reason() {
        println!("skipped: {reason}");
        return;
    }
    let run = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    };
    sweep_stale(); // in case an earlier run of this test died half-way
                   // Independent of each other, so a concurrent sweep removing one does not break the other.
    run(&["netns", "add", "cpx251-n1"]);
    run(&[
        "link", "add", "cpx251-h", "type", "veth", "peer", "name", "c251peer",
    ]);
    let removed = sweep_stale();
    println!("swept: {removed:?}");
    // A concurrent Lab::create may be sweeping them at the same time (holding id 251's lock, so
    // ours skipped it): give it a moment; either way they must go.
    let deadline = Instant::now() + Duration::from_secs(5);
    while (netns_list().contains("cpx251-n1") || link_list().contains("cpx251-h"))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !netns_list().contains("cpx251-n1"),
        "namespace left: {}",
        netns_list()
    );
    assert!(!link_list().contains("cpx251-h"), "link left");
}

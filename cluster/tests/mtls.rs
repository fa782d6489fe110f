//! The node-to-node transport is mutually authenticated and survives peers coming and going.
//!
//! Every test runs a real `cluster::transport::serve` on 127.0.0.1 with certificates made by
//! `cluster::tls` in a temporary directory. A server runs on its own thread and its own tokio
//! runtime, so stopping it drops every task it spawned, exactly as a crashed node would.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::frame::{encode, read_frame};
use cluster::rpc::{Request, RequestFrame, Response, ResponseFrame};
use cluster::tls::{client_config, generate_ca, generate_node_cert, server_config, TlsFiles};
use cluster::transport::{serve, CallError, Handler};
use cluster::PeerClient;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const DEADLINE: Duration = Duration::from_secs(5);
/// A refusal must arrive well before the call's deadline, not by running into it.
const REFUSAL_MAX: Duration = Duration::from_secs(3);
/// A `Read` for this group sleeps far longer than any test waits.
const SLOW_GROUP: u32 = u32::MAX;

// ---------------------------------------------------------------- certificates

/// A cluster CA in a temporary directory, able to issue node certificates.
struct Pki {
    dir: tempfile::TempDir,
    ca_cert: std::path::PathBuf,
    ca_key: String,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (ca_cert_pem, ca_key) = generate_ca().expect("a CA");
        let ca_cert = dir.path().join("ca.pem");
        std::fs::write(&ca_cert, ca_cert_pem).expect("ca.pem written");
        Pki {
            dir,
            ca_cert,
            ca_key,
        }
    }

    /// Issues a certificate for `node_id`; the files trust this CA.
    fn node(&self, node_id: u64) -> TlsFiles {
        let (cert, key) = generate_node_cert(node_id, &self.ca_key).expect("a node cert");
        let cert_path = self.dir.path().join(format!("node-{node_id}.pem"));
        let key_path = self.dir.path().join(format!("node-{node_id}.key"));
        std::fs::write(&cert_path, cert).expect("cert written");
        std::fs::write(&key_path, key).expect("key written");
        TlsFiles {
            ca_cert: self.ca_cert.clone(),
            cert: cert_path,
            key: key_path,
        }
    }
}

fn read_ca_roots(ca_cert: &Path) -> rustls::RootCertStore {
    let pem = std::fs::read(ca_cert).expect("ca.pem readable");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots
            .add(cert.expect("a PEM certificate"))
            .expect("a usable root");
    }
    roots
}

fn read_identity(files: &TlsFiles) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let cert_pem = std::fs::read(&files.cert).expect("cert readable");
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .map(|c| c.expect("a PEM certificate"))
        .collect();
    let key_pem = std::fs::read(&files.key).expect("key readable");
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .expect("a PEM key file")
        .expect("a private key");
    (certs, key)
}

/// A hand-built rustls client (ring provider) that trusts `ca_cert` and presents `identity`,
/// or no certificate at all.
fn raw_client_config(ca_cert: &Path, identity: Option<&TlsFiles>) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the safe defaults")
    .with_root_certificates(read_ca_roots(ca_cert));
    let config = match identity {
        Some(files) => {
            let (certs, key) = read_identity(files);
            builder
                .with_client_auth_cert(certs, key)
                .expect("a usable client identity")
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

// ---------------------------------------------------------------- server

/// Answers `Ping` with `Pong { node }`; answers `Read { group, .. }` with `Failed("group N")`
/// after a delay that depends on the group, so answers come back out of order.
struct TestHandler {
    node: u64,
    inflight: AtomicUsize,
    inflight_peak: AtomicUsize,
}

impl TestHandler {
    fn new(node: u64) -> Arc<TestHandler> {
        Arc::new(TestHandler {
            node,
            inflight: AtomicUsize::new(0),
            inflight_peak: AtomicUsize::new(0),
        })
    }
}

impl Handler for TestHandler {
    async fn handle(self: Arc<Self>, request: Request) -> Response {
        match request {
            Request::Ping => Response::Pong { node: self.node },
            Request::Read { group, .. } => {
                let now = self.inflight.fetch_add(1, Ordering::SeqCst) + 1;
                self.inflight_peak.fetch_max(now, Ordering::SeqCst);
                let delay = if group == SLOW_GROUP {
                    Duration::from_secs(600)
                } else {
                    Duration::from_millis(u64::from(group.wrapping_mul(7) % 23))
                };
                tokio::time::sleep(delay).await;
                self.inflight.fetch_sub(1, Ordering::SeqCst);
                Response::Failed(format!("group {group}"))
            }
            _ => Response::Failed("unsupported in this test".to_string()),
        }
    }
}

/// A server node on its own thread and runtime; `stop` drops the runtime and with it the
/// listener and every connection task, like a process that died.
struct ServerNode {
    addr: SocketAddr,
    handler: Arc<TestHandler>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerNode {
    fn start(bind: SocketAddr, files: &TlsFiles, node: u64) -> ServerNode {
        let tls = server_config(files).expect("server TLS");
        let listener = std::net::TcpListener::bind(bind).expect("the port is free");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("a bound address");
        let handler = TestHandler::new(node);
        let served = handler.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a server runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("a tokio listener");
                tokio::select! {
                    () = serve(listener, tls, served) => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime here cancels every connection task the server spawned.
            drop(runtime);
        });
        ServerNode {
            addr,
            handler,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join().expect("the server thread ends"))
                .await
                .expect("the join task ends");
        }
    }
}

impl Drop for ServerNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn localhost_any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn ping(client: &PeerClient) -> Result<Response, CallError> {
    client.call(Request::Ping, DEADLINE).await
}

fn assert_pong(result: Result<Response, CallError>, node: u64) {
    match result {
        Ok(Response::Pong { node: answered }) => assert_eq!(answered, node),
        other => panic!("expected Pong from node {node}, got {other:?}"),
    }
}

/// The call failed, promptly, and not by running into its own deadline.
fn assert_refused(result: Result<Response, CallError>, started: Instant) {
    match result {
        Ok(response) => panic!("expected a refusal, got {response:?}"),
        Err(CallError::Timeout(_)) => panic!("refusal ran into the call deadline"),
        Err(_) => {}
    }
    assert!(
        started.elapsed() < REFUSAL_MAX,
        "refusal took {:?}",
        started.elapsed()
    );
}

/// Opens a TLS session to `addr` with a hand-built config, sends one Ping frame and reads one
/// answer. `Ok(Some(_))` means the server answered.
async fn raw_ping(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    server_node: u64,
) -> std::io::Result<Option<ResponseFrame>> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let mut tls = connector
        .connect(cluster::tls::server_name(server_node), tcp)
        .await?;
    let frame = encode(&RequestFrame {
        id: 7,
        body: Request::Ping,
    })
    .expect("a Ping encodes");
    tls.write_all(&frame).await?;
    tls.flush().await?;
    read_frame::<_, ResponseFrame>(&mut tls)
        .await
        .map_err(std::io::Error::other)
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn same_ca_client_gets_pong() {
    // Goal: two nodes holding certificates from the same cluster CA talk to each other.
    // Method: node 1 serves; a PeerClient built from node 2's files pings it.
    let pki = Pki::new();
    let server = ServerNode::start(localhost_any_port(), &pki.node(1), 1);
    let client = PeerClient::new(
        1,
        server.addr.to_string(),
        client_config(&pki.node(2)).unwrap(),
    );
    assert_pong(ping(&client).await, 1);
    assert_pong(ping(&client).await, 1);
    server.stop().await;
}

#[tokio::test]
async fn client_cert_from_another_ca_is_refused() {
    // Goal: the server refuses a client whose certificate another CA signed.
    // Method: the client trusts the right CA (so its own check of the server passes) but
    // presents a node certificate issued by a foreign CA; the call must fail without a Pong.
    let pki = Pki::new();
    let foreign = Pki::new();
    let server = ServerNode::start(localhost_any_port(), &pki.node(1), 1);
    let foreign_identity = foreign.node(2);
    let files = TlsFiles {
        ca_cert: pki.ca_cert.clone(),
        cert: foreign_identity.cert,
        key: foreign_identity.key,
    };
    let client = PeerClient::new(1, server.addr.to_string(), client_config(&files).unwrap());
    for _ in 0..3 {
        let started = Instant::now();
        assert_refused(ping(&client).await, started);
    }
    // Control: a genuine client still gets through.
    let genuine = PeerClient::new(
        1,
        server.addr.to_string(),
        client_config(&pki.node(2)).unwrap(),
    );
    assert_pong(ping(&genuine).await, 1);
    server.stop().await;
}

#[tokio::test]
async fn server_cert_from_another_ca_is_refused() {
    // Goal: a client refuses an impostor server that holds a certificate from a foreign CA,
    // even one carrying the expected node name.
    // Method: the impostor serves node-1.cellpay from a foreign CA; a genuine client calls it.
    let pki = Pki::new();
    let foreign = Pki::new();
    let impostor = ServerNode::start(localhost_any_port(), &foreign.node(1), 1);
    let client = PeerClient::new(
        1,
        impostor.addr.to_string(),
        client_config(&pki.node(2)).unwrap(),
    );
    let started = Instant::now();
    let result = ping(&client).await;
    assert!(
        matches!(result, Err(CallError::Connect { .. })),
        "expected a connect refusal, got {result:?}"
    );
    assert_refused(result, started);
    impostor.stop().await;
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    // Goal: a client that trusts the CA but presents no certificate gets no service.
    // Method: a hand-built tokio-rustls client with `with_no_client_auth` sends a Ping frame;
    // the handshake or the first read must fail (TLS 1.3 reports the refusal after the
    // client's side of the handshake). Control: the same rig with a certificate gets Pong.
    let pki = Pki::new();
    let server = ServerNode::start(localhost_any_port(), &pki.node(1), 1);

    let anonymous = raw_client_config(&pki.ca_cert, None);
    let result = tokio::time::timeout(DEADLINE, raw_ping(server.addr, anonymous, 1))
        .await
        .expect("the server must refuse promptly, not hang");
    eprintln!("anonymous client: {result:?}");
    assert!(
        !matches!(result, Ok(Some(_))),
        "an anonymous client was answered: {result:?}"
    );

    let identified = raw_client_config(&pki.ca_cert, Some(&pki.node(2)));
    let answer = tokio::time::timeout(DEADLINE, raw_ping(server.addr, identified, 1))
        .await
        .unwrap()
        .unwrap()
        .expect("an answer");
    assert_eq!(answer.id, 7);
    assert!(matches!(answer.body, Response::Pong { node: 1 }));
    server.stop().await;
}

#[tokio::test]
async fn server_name_mismatch_is_refused() {
    // Goal: a client that expects node 2 refuses to talk to node 1, even though node 1's
    // certificate is genuine (the name `node-N.cellpay` binds the address to a node id).
    // Method: PeerClient for node 2 pointed at node 1's address; control with node id 1.
    let pki = Pki::new();
    let server = ServerNode::start(localhost_any_port(), &pki.node(1), 1);
    let tls = client_config(&pki.node(3)).unwrap();
    let wrong = PeerClient::new(2, server.addr.to_string(), tls.clone());
    let started = Instant::now();
    let result = ping(&wrong).await;
    assert!(
        matches!(result, Err(CallError::Connect { .. })),
        "expected a connect refusal, got {result:?}"
    );
    assert_refused(result, started);
    let right = PeerClient::new(1, server.addr.to_string(), tls);
    assert_pong(ping(&right).await, 1);
    server.stop().await;
}

/// Forwards TCP connections to `target`, counting them.
async fn counting_proxy(target: SocketAddr) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind(localhost_any_port())
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("a bound address");
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_calls_share_one_connection() {
    // Goal: one PeerClient multiplexes many calls on one connection and matches every answer
    // to its caller even when answers arrive out of order.
    // Method: 500 concurrent `Read { group: i }` calls through a TCP proxy that counts
    // connections; the handler answers `Failed("group i")` after a group-dependent delay.
    // Each caller must get its own group back, the server must have seen calls overlap, and
    // the proxy must have carried exactly one connection.
    let pki = Pki::new();
    let server = ServerNode::start(localhost_any_port(), &pki.node(1), 1);
    let (proxy, connections) = counting_proxy(server.addr).await;
    let client = Arc::new(PeerClient::new(
        1,
        proxy.to_string(),
        client_config(&pki.node(2)).unwrap(),
    ));
    assert_pong(ping(&client).await, 1);

    let calls: u32 = 500;
    let mut tasks = tokio::task::JoinSet::new();
    for group in 0..calls {
        let client = client.clone();
        tasks.spawn(async move {
            let request = Request::Read {
                group,
                query: ledger::Query::Summary,
            };
            (group, client.call(request, Duration::from_secs(20)).await)
        });
    }
    let mut answered = 0u32;
    while let Some(joined) = tasks.join_next().await {
        let (group, result) = joined.unwrap();
        match result {
            Ok(Response::Failed(text)) => assert_eq!(text, format!("group {group}")),
            other => panic!("call for group {group} got {other:?}"),
        }
        answered += 1;
    }
    assert_eq!(answered, calls);
    assert_eq!(connections.load(Ordering::SeqCst), 1, "one connection");
    let peak = server.handler.inflight_peak.load(Ordering::SeqCst);
    assert!(
        peak > 1,
        "calls never overlapped on the server (peak {peak})"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_fails_fast_when_server_dies_and_reconnects_after_restart() {
    // Goal: when a peer dies, calls in flight and new calls fail promptly instead of waiting
    // out their deadlines, and the same PeerClient recovers once the peer is back.
    // Method: a slow call is in flight when the server's runtime is dropped; it must fail
    // well before its deadline. New calls must fail fast while nothing listens. Then a new
    // server starts on the same port and the same PeerClient must get Pong again.
    let pki = Pki::new();
    let files = pki.node(1);
    let server = ServerNode::start(localhost_any_port(), &files, 1);
    let addr = server.addr;
    let client = Arc::new(PeerClient::new(
        1,
        addr.to_string(),
        client_config(&pki.node(2)).unwrap(),
    ));
    assert_pong(ping(&client).await, 1);

    let slow_client = client.clone();
    let slow = tokio::spawn(async move {
        let request = Request::Read {
            group: SLOW_GROUP,
            query: ledger::Query::Summary,
        };
        let started = Instant::now();
        let result = slow_client.call(request, Duration::from_secs(30)).await;
        (result, started.elapsed())
    });
    // Wait until the slow call is being served.
    while server.handler.inflight.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.stop().await;

    let (result, elapsed) = slow.await.unwrap();
    assert!(
        matches!(result, Err(CallError::Closed)),
        "in-flight call: {result:?}"
    );
    assert!(
        elapsed < REFUSAL_MAX,
        "in-flight call failed after {elapsed:?}"
    );

    for _ in 0..5 {
        let started = Instant::now();
        assert_refused(ping(&client).await, started);
    }

    let restarted = ServerNode::start(addr, &files, 1);
    assert_eq!(restarted.addr, addr);
    assert_pong(ping(&client).await, 1);
    assert_pong(ping(&client).await, 1);
    restarted.stop().await;
}

/// Accepts mTLS sessions, reads one request frame and hangs up without answering.
async fn hang_up_server(files: &TlsFiles) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(files).expect("server TLS"));
    let listener = TcpListener::bind(localhost_any_port())
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("a bound address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = read_frame::<_, RequestFrame>(&mut tls).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_on_a_dying_connection_fail_fast() {
    // Goal: a call made while its connection is being torn down fails with Closed (or a
    // connect error), never by waiting out its deadline.
    // Method: a server that reads one request per connection and hangs up; 16 tasks call
    // through one PeerClient in a loop, so connections die constantly while calls are being
    // registered. Any Timeout means a call was orphaned: `PeerClient::call_inner` inserts into
    // `pending` after `connection()` saw `alive == true`, but the reader task may already have
    // stored `alive = false` and cleared `pending`, so nothing ever drops that sender.
    // Regression: before the fix, 1-3 timeouts per 16,000 calls on a 2-core machine.
    let pki = Pki::new();
    let addr = hang_up_server(&pki.node(1)).await;
    let client = Arc::new(PeerClient::new(
        1,
        addr.to_string(),
        client_config(&pki.node(2)).unwrap(),
    ));
    let deadline = Duration::from_millis(500);
    let mut orphaned = 0u32;
    let mut calls = 0u32;
    for _round in 0..4 {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let client = client.clone();
            tasks.spawn(async move {
                let mut timeouts = 0u32;
                for _ in 0..1000 {
                    let result = client.call(Request::Ping, deadline).await;
                    assert!(result.is_err(), "the server never answers");
                    if matches!(result, Err(CallError::Timeout(_))) {
                        timeouts += 1;
                    }
                }
                timeouts
            });
        }
        while let Some(timeouts) = tasks.join_next().await {
            orphaned += timeouts.unwrap();
            calls += 1000;
        }
        if orphaned > 0 {
            break;
        }
    }
    assert_eq!(
        orphaned, 0,
        "{orphaned} of {calls} calls waited out their deadline"
    );
}

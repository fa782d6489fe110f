//! Garbage on the wire never crashes a node and never costs more than one connection.
//!
//! Part one checks the frame decoder with generated input (proptest). Part two throws bytes
//! at a real `cluster::transport::serve`: raw TCP that is not TLS, silent connections, and
//! malformed frames inside a properly authenticated mTLS session. After each attack a genuine
//! `PeerClient` must still get `Pong`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::frame::{encode, read_frame, FrameError};
use cluster::limits::{CONNECT_TIMEOUT, FRAME_BYTES_MAX, INBOUND_CONNECTIONS_MAX};
use cluster::rpc::{Request, RequestFrame, Response, ResponseFrame};
use cluster::tls::{client_config, generate_ca, generate_node_cert, server_config, TlsFiles};
use cluster::transport::{serve, Handler};
use cluster::PeerClient;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DEADLINE: Duration = Duration::from_secs(5);
/// How long a server may take to hang up on garbage (a stalled handshake waits out
/// `CONNECT_TIMEOUT`).
const CLOSE_MAX: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------- part one: the decoder

/// What `read_frame` made of `bytes`, and how many bytes it left unread.
fn decode(bytes: &[u8]) -> (Result<Option<RequestFrame>, FrameError>, usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let mut reader = bytes;
    let result = runtime.block_on(read_frame::<_, RequestFrame>(&mut reader));
    (result, reader.len())
}

fn prefixed(length: u32, body: &[u8]) -> Vec<u8> {
    let mut bytes = length.to_be_bytes().to_vec();
    bytes.extend_from_slice(body);
    bytes
}

fn frame_limit() -> u32 {
    u32::try_from(FRAME_BYTES_MAX).expect("the limit fits u32")
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    // Goal: arbitrary bytes never panic the decoder, and a short input is never a frame.
    // Method: fully random input; anything under 5 bytes cannot hold a prefix and a body.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let (result, _) = decode(&bytes);
        if bytes.len() < 5 {
            prop_assert!(!matches!(result, Ok(Some(_))));
        }
        if bytes.is_empty() {
            prop_assert!(matches!(result, Ok(None)));
        }
    }

    // Goal: whatever the length prefix says, the decoder either refuses it before reading
    // (and so before allocating) or reads exactly that many bytes and decodes them as postcard
    // would. A prefix above FRAME_BYTES_MAX always errors out with TooLarge.
    // Method: an arbitrary u32 prefix followed by an arbitrary short body.
    #[test]
    fn any_prefix_is_bounded(length in any::<u32>(),
                             body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let bytes = prefixed(length, &body);
        let (result, unread) = decode(&bytes);
        let wanted = usize::try_from(length).unwrap();
        if length > frame_limit() {
            prop_assert!(matches!(result, Err(FrameError::TooLarge(n)) if n == wanted));
            prop_assert_eq!(unread, body.len(), "the body must not be read");
        } else if wanted > body.len() {
            prop_assert!(matches!(result, Err(FrameError::Io(_))), "{:?}", result);
        } else {
            let expected = postcard::from_bytes::<RequestFrame>(&body[..wanted]);
            prop_assert_eq!(result.is_ok(), expected.is_ok());
            prop_assert_eq!(unread, body.len() - wanted);
        }
    }

    // Goal: the limit itself is honoured for every oversized prefix, not only 0xFFFFFFFF.
    // Method: prefixes drawn from (FRAME_BYTES_MAX, u32::MAX] with a body that is never read.
    #[test]
    fn oversized_prefix_is_refused(length in (frame_limit() + 1)..=u32::MAX,
                                   body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let (result, unread) = decode(&prefixed(length, &body));
        prop_assert!(matches!(result, Err(FrameError::TooLarge(_))), "{:?}", result);
        prop_assert_eq!(unread, body.len());
    }

    // Goal: a truthful prefix around arbitrary bytes decodes exactly as postcard decodes the
    // body, and never panics (postcard must not trust length fields inside the body either).
    // Method: random bodies framed with their real length.
    #[test]
    fn framed_random_body_matches_postcard(body in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let length = u32::try_from(body.len()).unwrap();
        let (result, unread) = decode(&prefixed(length, &body));
        let expected = postcard::from_bytes::<RequestFrame>(&body);
        prop_assert_eq!(result.is_ok(), expected.is_ok());
        prop_assert_eq!(unread, 0);
    }

    // Goal: encode then read_frame gives the value back, and consumes exactly one frame.
    // Method: two arbitrary (String, u64, Vec<u8>) values written back to back.
    #[test]
    fn round_trip(first in (any::<String>(), any::<u64>(), proptest::collection::vec(any::<u8>(), 0..1024)),
                  second in (any::<String>(), any::<u64>(), proptest::collection::vec(any::<u8>(), 0..64))) {
        let mut bytes = encode(&first).unwrap();
        bytes.extend(encode(&second).unwrap());
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut reader = bytes.as_slice();
        let got_first: Option<(String, u64, Vec<u8>)> =
            runtime.block_on(read_frame(&mut reader)).unwrap();
        let got_second: Option<(String, u64, Vec<u8>)> =
            runtime.block_on(read_frame(&mut reader)).unwrap();
        let got_end: Option<(String, u64, Vec<u8>)> =
            runtime.block_on(read_frame(&mut reader)).unwrap();
        prop_assert_eq!(got_first, Some(first));
        prop_assert_eq!(got_second, Some(second));
        prop_assert_eq!(got_end, None);
    }

    // Goal: the real protocol type survives the trip too.
    // Method: RequestFrame with arbitrary ids and groups; compared by Debug text because the
    // protocol types do not implement PartialEq.
    #[test]
    fn request_frame_round_trip(id in any::<u64>(), group in any::<u32>(), ping in any::<bool>()) {
        let body = if ping {
            Request::Ping
        } else {
            Request::Read { group, query: ledger::Query::Summary }
        };
        let frame = RequestFrame { id, body };
        let bytes = encode(&frame).unwrap();
        let (result, unread) = decode(&bytes);
        let decoded = result.unwrap().unwrap();
        prop_assert_eq!(format!("{decoded:?}"), format!("{frame:?}"));
        prop_assert_eq!(unread, 0);
    }
}

#[test]
fn limit_boundary() {
    // Goal: FRAME_BYTES_MAX is allowed on both sides of the wire and one byte more is not.
    // Method: prefixes at the limit (the body is missing, so an i/o error, not TooLarge) and
    // one above it; encode refuses a value whose encoding exceeds the limit.
    let (at_limit, _) = decode(&prefixed(frame_limit(), &[]));
    assert!(matches!(at_limit, Err(FrameError::Io(_))), "{at_limit:?}");
    let (above, _) = decode(&prefixed(frame_limit() + 1, &[]));
    assert!(
        matches!(above, Err(FrameError::TooLarge(n)) if n == FRAME_BYTES_MAX + 1),
        "{above:?}"
    );
    let oversized = vec![0u8; FRAME_BYTES_MAX];
    assert!(matches!(encode(&oversized), Err(FrameError::TooLarge(_))));
}

// ---------------------------------------------------------------- part two: a live server

struct PingHandler;

impl Handler for PingHandler {
    async fn handle(self: Arc<Self>, request: Request) -> Response {
        match request {
            Request::Ping => Response::Pong { node: 1 },
            _ => Response::Failed("unsupported in this test".to_string()),
        }
    }
}

/// A CA, node 1 serving on 127.0.0.1 and node 2's client files.
struct Rig {
    _dir: tempfile::TempDir,
    addr: SocketAddr,
    client_files: TlsFiles,
    server: tokio::task::JoinHandle<()>,
}

impl Rig {
    async fn start() -> Rig {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (ca_cert, ca_key) = generate_ca().expect("a CA");
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca_cert).expect("ca.pem written");
        let files = |node: u64| {
            let (cert, key) = generate_node_cert(node, &ca_key).expect("a node cert");
            let cert_path = dir.path().join(format!("node-{node}.pem"));
            let key_path = dir.path().join(format!("node-{node}.key"));
            std::fs::write(&cert_path, cert).expect("cert written");
            std::fs::write(&key_path, key).expect("key written");
            TlsFiles {
                ca_cert: ca_path.clone(),
                cert: cert_path,
                key: key_path,
            }
        };
        let server_files = files(1);
        let client_files = files(2);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("a bound address");
        let tls = server_config(&server_files).expect("server TLS");
        let server = tokio::spawn(serve(listener, tls, Arc::new(PingHandler)));
        Rig {
            _dir: dir,
            addr,
            client_files,
            server,
        }
    }

    /// A fresh PeerClient (new connection) must get Pong.
    async fn assert_serves(&self) {
        let client = PeerClient::new(
            1,
            self.addr.to_string(),
            client_config(&self.client_files).expect("client TLS"),
        );
        let answer = client.call(Request::Ping, DEADLINE).await;
        assert!(
            matches!(answer, Ok(Response::Pong { node: 1 })),
            "server stopped serving: {answer:?}"
        );
        assert!(!self.server.is_finished(), "serve() returned");
    }

    /// A tokio-rustls session authenticated with node 2's certificate, outside PeerClient.
    async fn raw_session(&self) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.addr).await.expect("TCP connect");
        let connector = tokio_rustls::TlsConnector::from(
            client_config(&self.client_files).expect("client TLS"),
        );
        connector
            .connect(cluster::tls::server_name(1), tcp)
            .await
            .expect("an mTLS handshake")
    }
}

/// Deterministic pseudo-random bytes (xorshift64).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.max(1);
    let mut bytes = Vec::with_capacity(len);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// Reads until the peer hangs up; returns the bytes it sent first. Panics if it does not hang
/// up within `CLOSE_MAX`.
async fn until_closed<R: tokio::io::AsyncRead + Unpin>(stream: &mut R) -> Vec<u8> {
    let mut received = Vec::new();
    let outcome = tokio::time::timeout(CLOSE_MAX, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(outcome.is_ok(), "the server kept the connection open");
    received
}

#[tokio::test]
async fn raw_tcp_garbage_is_dropped() {
    // Goal: bytes that are not TLS cost the server one connection, briefly, and nothing more.
    // Method: several kinds of plaintext garbage on fresh TCP connections; each connection
    // must be closed by the server, no frame may come back, and a genuine client still gets
    // Pong afterwards.
    let rig = Rig::start().await;
    let plaintext_ping = encode(&RequestFrame {
        id: 1,
        body: Request::Ping,
    })
    .unwrap();
    let mut fake_hello = vec![0x16, 0x03, 0x01, 0xff, 0xff];
    fake_hello.extend(noise(3, 512));
    let attacks: Vec<(&str, Vec<u8>)> = vec![
        ("random", noise(1, 4096)),
        ("random-large", noise(2, 256 * 1024)),
        ("oversized TLS record", fake_hello),
        (
            "http",
            b"GET / HTTP/1.1\r\nHost: node-1.cellpay\r\n\r\n".to_vec(),
        ),
        ("plaintext frame", plaintext_ping),
        ("huge prefix", vec![0xff; 4]),
        ("zeros", vec![0; 1024]),
    ];
    for (name, bytes) in attacks {
        let mut tcp = TcpStream::connect(rig.addr).await.unwrap();
        // The server may hang up mid-write; that is fine.
        let _ = tcp.write_all(&bytes).await;
        let received = until_closed(&mut tcp).await;
        let frame = read_frame::<_, ResponseFrame>(&mut received.as_slice()).await;
        assert!(
            !matches!(frame, Ok(Some(_))),
            "{name}: the server answered plaintext"
        );
        rig.assert_serves().await;
    }
    // Connect-and-close, many times over.
    for _ in 0..50 {
        drop(TcpStream::connect(rig.addr).await.unwrap());
    }
    rig.assert_serves().await;
}

#[tokio::test]
async fn silent_connection_is_cut_at_the_handshake_deadline() {
    // Goal: a TCP connection that never starts a handshake is closed after CONNECT_TIMEOUT,
    // so it cannot hold an inbound slot forever.
    // Method: connect, send nothing, time how long until the server hangs up.
    let rig = Rig::start().await;
    let mut tcp = TcpStream::connect(rig.addr).await.unwrap();
    let started = Instant::now();
    until_closed(&mut tcp).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= CONNECT_TIMEOUT - Duration::from_millis(200),
        "closed too early: {elapsed:?}"
    );
    rig.assert_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_slots_recover_after_a_silent_flood() {
    // Goal: filling every inbound slot with silent connections is a bounded outage: once the
    // handshake deadline passes, the server serves genuine peers again.
    // Method: open INBOUND_CONNECTIONS_MAX silent TCP connections, record whether a genuine
    // call gets through meanwhile (reported, not asserted), then require Pong within
    // CONNECT_TIMEOUT plus a margin.
    let rig = Rig::start().await;
    let mut silent = Vec::new();
    for _ in 0..INBOUND_CONNECTIONS_MAX {
        silent.push(TcpStream::connect(rig.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = PeerClient::new(
        1,
        rig.addr.to_string(),
        client_config(&rig.client_files).unwrap(),
    );
    let during = client.call(Request::Ping, Duration::from_secs(1)).await;
    eprintln!("genuine call while every inbound slot is held: {during:?}");

    let started = Instant::now();
    let recovered = loop {
        let answer = client.call(Request::Ping, Duration::from_secs(1)).await;
        if matches!(answer, Ok(Response::Pong { node: 1 })) {
            break true;
        }
        if started.elapsed() > CONNECT_TIMEOUT + Duration::from_secs(5) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(recovered, "the server did not recover after the flood");
    drop(silent);
    rig.assert_serves().await;
}

#[tokio::test]
async fn huge_length_prefix_inside_mtls_closes_the_connection() {
    // Goal: an authenticated peer that sends a length prefix above FRAME_BYTES_MAX loses its
    // connection (without the server allocating it), and other peers are unaffected.
    // Method: a raw mTLS session first gets a proper Pong (control), then sends 0xFFFFFFFF as
    // a length prefix; the server must hang up; a fresh PeerClient then gets Pong.
    let rig = Rig::start().await;
    let mut session = rig.raw_session().await;
    let ping = encode(&RequestFrame {
        id: 41,
        body: Request::Ping,
    })
    .unwrap();
    session.write_all(&ping).await.unwrap();
    session.flush().await.unwrap();
    let answer = read_frame::<_, ResponseFrame>(&mut session)
        .await
        .unwrap()
        .expect("a Pong");
    assert_eq!(answer.id, 41);
    assert!(matches!(answer.body, Response::Pong { node: 1 }));

    session.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
    session.write_all(&noise(4, 1024)).await.unwrap();
    session.flush().await.unwrap();
    let trailing = until_closed(&mut session).await;
    assert!(trailing.is_empty(), "the server answered garbage");
    rig.assert_serves().await;
}

#[tokio::test]
async fn undecodable_frame_inside_mtls_closes_the_connection() {
    // Goal: an authenticated peer that sends a well-sized frame of garbage loses its
    // connection, and other peers are unaffected.
    // Method: frames of random bytes whose postcard decoding fails (checked first) on fresh
    // raw mTLS sessions; each must be hung up on; a fresh PeerClient then gets Pong.
    let rig = Rig::start().await;
    let mut sent = 0;
    for seed in 10..40u64 {
        let mut body = noise(seed, 64 + usize::try_from(seed).unwrap() * 13);
        // An id, then an enum variant far past the last one.
        body[0] = 1;
        body[1] = 0x7f;
        assert!(postcard::from_bytes::<RequestFrame>(&body).is_err());
        let length = u32::try_from(body.len()).unwrap();
        let mut session = rig.raw_session().await;
        session.write_all(&prefixed(length, &body)).await.unwrap();
        session.flush().await.unwrap();
        let trailing = until_closed(&mut session).await;
        assert!(trailing.is_empty(), "the server answered garbage");
        sent += 1;
    }
    assert_eq!(sent, 30);
    rig.assert_serves().await;
}

#[tokio::test]
async fn garbage_after_good_frames_does_not_lose_their_answers() {
    // Goal: a peer that sends good requests followed by garbage still receives the answers
    // to the good ones before the server hangs up (the writer drains before closing).
    // Method: three Ping frames then a garbage frame in one write; read frames until the
    // server closes; all three Pongs must be there.
    let rig = Rig::start().await;
    let mut session = rig.raw_session().await;
    let mut bytes = Vec::new();
    for id in 1..=3u64 {
        bytes.extend(
            encode(&RequestFrame {
                id,
                body: Request::Ping,
            })
            .unwrap(),
        );
    }
    bytes.extend(prefixed(3, &[1, 0x7f, 0x7f]));
    session.write_all(&bytes).await.unwrap();
    session.flush().await.unwrap();
    let received = until_closed(&mut session).await;
    let mut reader = received.as_slice();
    let mut ids = Vec::new();
    while let Some(frame) = read_frame::<_, ResponseFrame>(&mut reader).await.unwrap() {
        assert!(matches!(frame.body, Response::Pong { node: 1 }));
        ids.push(frame.id);
    }
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2, 3]);
    rig.assert_serves().await;
}

//! TCP + mutual TLS transport. A [`PeerClient`] keeps one multiplexed connection to a peer:
//! requests carry ids, many are in flight at once, responses are matched by id. The server side
//! reads request frames, serves each on its own task and writes responses back in any order.
//! Every call has a deadline; a broken connection fails its in-flight calls and is redialled by
//! the next call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::frame::{encode, read_frame, FrameError};
use crate::limits::{
    CONNECT_TIMEOUT, INBOUND_CONNECTIONS_MAX, INFLIGHT_PER_PEER_MAX, WRITE_QUEUE_MAX,
};
use crate::rpc::{Request, RequestFrame, Response, ResponseFrame};

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot connect to node {node} at {addr}: {reason}")]
    Connect {
        node: u64,
        addr: String,
        reason: String,
    },
    #[error("connection closed before the answer")]
    Closed,
    #[error("deadline of {0:?} passed")]
    Timeout(Duration),
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>>;

struct Connection {
    writer: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    alive: Arc<AtomicBool>,
}

/// A client for one peer node.
pub struct PeerClient {
    node: u64,
    addr: String,
    connector: TlsConnector,
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
    next_id: AtomicU64,
    inflight: Semaphore,
}

/// Removes a call's pending slot however the call ends (answer, timeout, cancellation).
struct PendingSlot {
    pending: Pending,
    id: u64,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(&self.id);
        }
    }
}

impl PeerClient {
    pub fn new(node: u64, addr: String, tls: Arc<rustls::ClientConfig>) -> PeerClient {
        PeerClient {
            node,
            addr,
            connector: TlsConnector::from(tls),
            connection: tokio::sync::Mutex::new(None),
            next_id: AtomicU64::new(1),
            inflight: Semaphore::new(INFLIGHT_PER_PEER_MAX),
        }
    }

    pub fn node(&self) -> u64 {
        self.node
    }

    /// Sends one request and waits for its answer, at most `deadline` in all.
    pub async fn call(&self, body: Request, deadline: Duration) -> Result<Response, CallError> {
        match tokio::time::timeout(deadline, self.call_inner(body)).await {
            Ok(result) => result,
            Err(_) => Err(CallError::Timeout(deadline)),
        }
    }

    async fn call_inner(&self, body: Request) -> Result<Response, CallError> {
        #[cfg(feature = "chaos")]
        if crate::chaos::before_call(self.node).await {
            // Dropped by the fault switch: the caller sees what a cut link gives, no answer.
            std::future::pending::<()>().await;
        }
        let _permit = self
            .inflight
            .acquire()
            .await
            .map_err(|_| CallError::Closed)?;
        let connection = self.connection().await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        connection
            .pending
            .lock()
            .map_err(|_| CallError::Closed)?
            .insert(id, sender);
        let _slot = PendingSlot {
            pending: connection.pending.clone(),
            id,
        };
        // The reader marks a connection dead before it fails the pending calls, so a call that
        // registered after that sweep must notice here instead of waiting out its deadline.
        if !connection.alive.load(Ordering::Acquire) {
            return Err(CallError::Closed);
        }
        let frame = encode(&RequestFrame { id, body })?;
        connection
            .writer
            .send(frame)
            .await
            .map_err(|_| CallError::Closed)?;
        receiver.await.map_err(|_| CallError::Closed)
    }

    async fn connection(&self) -> Result<Arc<Connection>, CallError> {
        let mut guard = self.connection.lock().await;
        if let Some(connection) = guard.as_ref() {
            if connection.alive.load(Ordering::Acquire) {
                return Ok(connection.clone());
            }
        }
        let connect_error = |reason: String| CallError::Connect {
            node: self.node,
            addr: self.addr.clone(),
            reason,
        };
        let connection = match tokio::time::timeout(CONNECT_TIMEOUT, self.connect()).await {
            Ok(Ok(connection)) => Arc::new(connection),
            Ok(Err(e)) => return Err(connect_error(e.to_string())),
            Err(_) => return Err(connect_error("connect timed out".to_string())),
        };
        *guard = Some(connection.clone());
        Ok(connection)
    }

    async fn connect(&self) -> std::io::Result<Connection> {
        let tcp = TcpStream::connect(&self.addr).await?;
        tcp.set_nodelay(true)?;
        let tls = self
            .connector
            .connect(crate::tls::server_name(self.node), tcp)
            .await?;
        let (mut reader, writer) = tokio::io::split(tls);
        let (frames, queue) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE_MAX);
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let alive = Arc::new(AtomicBool::new(true));
        tokio::spawn(write_loop(writer, queue, alive.clone()));
        let reader_pending = pending.clone();
        let reader_alive = alive.clone();
        tokio::spawn(async move {
            while let Ok(Some(frame)) = read_frame::<_, ResponseFrame>(&mut reader).await {
                let sender = reader_pending
                    .lock()
                    .ok()
                    .and_then(|mut p| p.remove(&frame.id));
                if let Some(sender) = sender {
                    let _ = sender.send(frame.body);
                }
            }
            reader_alive.store(false, Ordering::Release);
            // Dropping the senders fails every call still waiting on this connection.
            if let Ok(mut pending) = reader_pending.lock() {
                pending.clear();
            }
        });
        Ok(Connection {
            writer: frames,
            pending,
            alive,
        })
    }
}

/// Writes queued frames, flushing when the queue runs dry (many frames per syscall under load).
async fn write_loop<W: tokio::io::AsyncWrite + Unpin>(
    writer: W,
    mut queue: mpsc::Receiver<Vec<u8>>,
    alive: Arc<AtomicBool>,
) {
    let mut writer = BufWriter::with_capacity(256 * 1024, writer);
    while let Some(frame) = queue.recv().await {
        if writer.write_all(&frame).await.is_err() {
            break;
        }
        let mut failed = false;
        while let Ok(frame) = queue.try_recv() {
            if writer.write_all(&frame).await.is_err() {
                failed = true;
                break;
            }
        }
        if failed || writer.flush().await.is_err() {
            break;
        }
    }
    alive.store(false, Ordering::Release);
    let _ = writer.shutdown().await;
}

/// What serves requests arriving at this node.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        self: Arc<Self>,
        request: Request,
    ) -> impl std::future::Future<Output = Response> + Send;
}

/// Accepts peer connections until the listener fails; each connection is served concurrently.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    handler: Arc<H>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let connections = Arc::new(Semaphore::new(INBOUND_CONNECTIONS_MAX));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accepting a peer connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "inbound connection limit reached; refusing");
            continue;
        };
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(CONNECT_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => return,
            };
            serve_connection(tls, handler).await;
        });
    }
}

async fn serve_connection<H: Handler>(
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    handler: Arc<H>,
) {
    let (mut reader, writer) = tokio::io::split(tls);
    let (frames, queue) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE_MAX);
    let alive = Arc::new(AtomicBool::new(true));
    tokio::spawn(write_loop(writer, queue, alive));
    let inflight = Arc::new(Semaphore::new(INFLIGHT_PER_PEER_MAX));
    loop {
        let frame = match read_frame::<_, RequestFrame>(&mut reader).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "closing peer connection after a bad frame");
                break;
            }
        };
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            break;
        };
        let handler = handler.clone();
        let frames = frames.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let body = handler.handle(frame.body).await;
            if let Ok(bytes) = encode(&ResponseFrame { id: frame.id, body }) {
                let _ = frames.send(bytes).await;
            }
        });
    }
}

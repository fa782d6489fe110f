//! Bounds of the node-to-node transport.

use std::time::Duration;

/// Largest frame on the wire (a batch of 8190 transfers is ~2 MiB; snapshot chunks are 3 MiB).
pub const FRAME_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Transfers carried by one AppendEntries RPC (about 70 bytes each on the wire); a larger
/// backlog goes out in several RPCs.
pub const APPEND_WEIGHT_MAX: usize = 32 * 1024;
/// Single transfers waiting to join a proposal on one group; past it, `overloaded`.
pub const BATCH_QUEUE_MAX: usize = 32 * 1024;
/// Batch proposals of one group in flight at once (Raft pipelines them). Few, so that commands
/// arriving meanwhile gather into the next proposal: measured on 2 cores, 3 nodes, 64 clients,
/// 1 shard: 8 in flight gave 4,454 transfers/s (p99 26 ms), 2 gave 5,900–6,900/s (p99 16–18 ms);
/// 8 shards, 256 clients: 1,284/s with 8, 2,037–2,397/s with 1 or 2.
pub const PROPOSALS_INFLIGHT_MAX: usize = 2;
/// A group's ShardActor may fail and be restarted this many times within
/// `SHARD_ACTOR_RESTART_WINDOW`; one more and the node refuses the group's writes.
pub const SHARD_ACTOR_RESTARTS_MAX: usize = 3;
pub const SHARD_ACTOR_RESTART_WINDOW: Duration = Duration::from_secs(60);
/// Requests in flight on one peer connection; further callers wait for a slot.
pub const INFLIGHT_PER_PEER_MAX: usize = 4096;
/// Frames queued for one connection's writer.
pub const WRITE_QUEUE_MAX: usize = 1024;
/// Inbound connections a node serves at once.
pub const INBOUND_CONNECTIONS_MAX: usize = 256;
/// Deadline for connecting and completing the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline for a forwarded client write or read (includes the leader's commit).
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for a liveness ping.
pub const PING_TIMEOUT: Duration = Duration::from_millis(500);
/// Times a write or read is re-routed when leadership moves under it.
pub const ROUTE_ATTEMPTS_MAX: u32 = 20;
/// How long the other members wait before initialising a group whose preferred leader has
/// not (it may be down at the cluster's first start).
pub const BOOTSTRAP_DEFER: Duration = Duration::from_secs(3);
/// Pause between routing attempts while no leader is known.
pub const ROUTE_BACKOFF: Duration = Duration::from_millis(100);

/// Saga steps: first and largest pause between attempts (exponential, with jitter), and the
/// attempts of a step that has no deadline before the coordinator leaves the saga to the sweep.
pub const STEP_BACKOFF_MIN: Duration = Duration::from_millis(20);
pub const STEP_BACKOFF_MAX: Duration = Duration::from_secs(1);
pub const STEP_ATTEMPTS_MAX: u32 = 8;
/// Cross-shard answers waiting on one node to be recorded at their home shards (see
/// `finisher`); past it, a coordinator records its answer before answering.
pub const RECORD_QUEUE_MAX: usize = 16 * 1024;
/// Answers recorded by one round of the finisher (one `Command::Many` per home shard).
pub const RECORD_BATCH_MAX: usize = 4096;
/// How long the finisher waits for one round's homes to answer before it takes the next
/// round (what did not answer is left to the homes' sweeps, 3 s after the saga began).
pub const RECORD_ROUND_TIMEOUT: Duration = Duration::from_secs(2);
/// Running sagas one sweep of a home shard drives at most (the rest wait for the next sweep).
pub const SWEEP_BATCH_MAX: usize = 1024;
/// Sagas one sweep drives at once.
pub const SWEEP_CONCURRENCY: usize = 64;

/// The largest delay the chaos transport switch may add to a call.
pub const DELAY_MS_MAX: u64 = 10_000;

const _: () = assert!(WRITE_QUEUE_MAX <= INFLIGHT_PER_PEER_MAX);
// A full AppendEntries frame stays far below the frame limit.
const _: () = assert!(APPEND_WEIGHT_MAX * 256 <= FRAME_BYTES_MAX);

/// How long a leader stays quiet to hand a group over before it gives up and leads on (the
/// followers' lease is the election timeout, 2 s by default, plus the preferred node's
/// election).
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(8);
/// A preferred node at most this many entries behind the leader is handed the leadership.
pub const HANDOVER_LAG_MAX: u64 = 1024;
/// How often a handing-over leader looks whether the new leader is elected.
pub const HANDOVER_POLL: Duration = Duration::from_millis(50);
/// After a handover that did not land, the group is not tried again for this long.
pub const HANDOVER_RETRY_AFTER: Duration = Duration::from_secs(60);

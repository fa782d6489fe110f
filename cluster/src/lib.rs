//! # cluster — how cellpay nodes talk to each other
//!
//! Node-to-node transport over TCP with rustls mutual TLS ([`tls`], one CA per cluster),
//! length-prefixed postcard frames ([`frame`]), a multiplexed request/response protocol
//! ([`rpc`], [`transport`]) that carries every Raft group's RPCs ([`network`]) and forwarded
//! client writes and reads, and the shard map with leader routing ([`shards`]).
//!
//! Depends on `consensus` and `ledger`. Must never depend on HTTP, actors or the node binary.

pub mod batcher;
#[cfg(feature = "chaos")]
pub mod chaos;
mod finisher;
pub mod frame;
pub mod limits;
pub mod network;
pub mod rebalance;
pub mod rpc;
pub mod saga;
pub mod shards;
pub mod tls;
pub mod transport;

pub use network::{NetworkFactory, Peers};
pub use rpc::RouteError;
pub use shards::{Group, Shards, TransferHook};
pub use tls::TlsFiles;
pub use transport::PeerClient;

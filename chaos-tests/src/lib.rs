//! # chaos-tests — cellpay's chaos harness and history checker
//!
//! Starts real clusters of `cellpay node` processes, drives a bank workload through the public
//! HTTP API while a seeded nemesis injects faults, records every operation as a JSON-lines
//! history, and checks the history against the ledger's invariants. Modelled on Jepsen's bank
//! test and TigerBeetle's VOPR: every run is driven by a printed seed and can be replayed.
//!
//! Modules: [`history`] (the operation records), [`checker`] (one invariant per file),
//! [`net`] (network namespaces, veth, nftables faults), [`nodes`] (the node processes),
//! [`workload`] (the bank clients), [`nemesis`] (faults by seed), [`runner`] (one run),
//! [`sharding`] (what a run over several shards changes in a history before the check).
//!
//! Dev-only. It drives the `cellpay` binary; of the workspace it uses only the routing
//! (`cluster::saga::Route`, `ledger::shard_of`: which transfers of a sharded run are sagas);
//! nothing depends on it.

pub mod checker;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod nodes;
pub mod runner;
pub mod sharding;
pub mod workload;

//! # actors — cellpay's actor layer (ractor)
//!
//! * [`account`]: one **AccountActor** per active account, on the node leading the account's
//!   shard: the door for its single transfers (arrival order, bounded mailbox, pipelined
//!   proposals, passivation when idle, stop when leadership moves), and the [`Accounts`]
//!   registry that finds, starts, bounds and supervises them.
//! * [`session`]: one **SessionActor** per live user session, with an idle timeout.
//! * [`supervisor`]: the **TimerSupervisor** (every time trigger, derived from replicated
//!   state), the **RedressSupervisor** (saga sweeps with bounded backoff), and the root that
//!   restarts them.
//! * [`monitor`]: the **MonitorActor**, actor and shard statistics as Prometheus gauges.
//!
//! The shard actor of the design — one per Raft group on its leader, batching the commands of
//! many accounts into proposals — is `cluster::batcher` (a task rather than a ractor actor:
//! it sits under the transport, which must not depend on this crate).
//!
//! Depends on `cluster` and `ledger`. Must never depend on HTTP or the node binary.

pub mod account;
pub mod limits;
pub mod monitor;
pub mod session;
pub mod supervisor;

use std::sync::Arc;

use cluster::{RouteError, Shards};
use futures::future::BoxFuture;
use ledger::{AccountId, ShardId, TransferOutcome, TransferRequest};

pub use account::{AccountLimits, AccountStats, Accounts, Backend};
pub use session::{SessionError, SessionView, Sessions};

/// The cluster as the account actors see it.
pub struct ShardsBackend(pub Arc<Shards>);

impl Backend for ShardsBackend {
    fn shard_of(&self, account: &AccountId) -> ShardId {
        self.0.shard_of(account)
    }

    fn leads(&self, shard: ShardId) -> bool {
        self.0.leads(shard)
    }

    fn run(
        &self,
        request: TransferRequest,
    ) -> BoxFuture<'static, Result<TransferOutcome, RouteError>> {
        let shards = self.0.clone();
        Box::pin(async move { cluster::saga::transfer(&shards, request).await })
    }

    fn forward(
        &self,
        shard: ShardId,
        request: TransferRequest,
    ) -> BoxFuture<'static, Result<TransferOutcome, RouteError>> {
        let shards = self.0.clone();
        Box::pin(async move { shards.forward_transfer(shard, request).await })
    }
}

/// Lets the cluster transport hand a forwarded client transfer to this node's account actors.
impl cluster::TransferHook for Accounts {
    fn transfer_here(
        &self,
        request: TransferRequest,
    ) -> BoxFuture<'static, Result<TransferOutcome, RouteError>> {
        let accounts = self.clone();
        Box::pin(async move { accounts.transfer_here(request).await })
    }
}

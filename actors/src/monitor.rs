//! The monitor actor: every `MONITOR_TICK` it gathers actor and shard statistics and sets them
//! as Prometheus gauges (the node's `/metrics` exports them).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cluster::Shards;
use ledger::ShardId;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::account::Accounts;
use crate::limits::MONITOR_TICK;
use crate::session::Sessions;

pub const ACCOUNTS_RESIDENT: &str = "cellpay_actor_accounts_resident";
pub const MAILBOX_DEPTH: &str = "cellpay_actor_mailbox_depth";
pub const SESSIONS_LIVE: &str = "cellpay_actor_sessions_live";
pub const FENCED_SHARDS: &str = "cellpay_actor_fenced_shards";
pub const SAGAS_RUNNING: &str = "cellpay_saga_running";
pub const TIMER_LAG: &str = "cellpay_timer_lag_seconds";
pub const COMMANDS_PER_PROPOSAL: &str = "cellpay_raft_commands_per_proposal";
pub const SHARD_QUEUE: &str = "cellpay_shard_queue_depth";
pub const SAGA_ANSWERS_RECORDED_LATER: &str = "cellpay_saga_answers_recorded_later_total";

/// Every metric the actor layer exports.
pub const METRIC_NAMES: &[&str] = &[
    ACCOUNTS_RESIDENT,
    MAILBOX_DEPTH,
    SESSIONS_LIVE,
    FENCED_SHARDS,
    SAGAS_RUNNING,
    TIMER_LAG,
    COMMANDS_PER_PROPOSAL,
    SHARD_QUEUE,
    SAGA_ANSWERS_RECORDED_LATER,
];

/// What the timer supervisor measured on its last tick.
#[derive(Clone, Copy, Debug, Default)]
pub struct TimerStats {
    /// How long past its deadline the oldest due trigger was found.
    pub lag: Duration,
}

pub struct MonitorArgs {
    pub shards: Arc<Shards>,
    pub accounts: Accounts,
    pub sessions: Sessions,
    pub timers: Arc<Mutex<TimerStats>>,
}

pub struct MonitorState {
    args: MonitorArgs,
    /// (proposals, commands) batched so far, per shard, at the previous sample.
    batched: Vec<(u64, u64)>,
}

pub struct MonitorActor;

impl Actor for MonitorActor {
    type Msg = ();
    type State = MonitorState;
    type Arguments = MonitorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<()>,
        args: MonitorArgs,
    ) -> Result<MonitorState, ActorProcessingErr> {
        myself.send_interval(MONITOR_TICK, || ());
        let shard_count = usize::try_from(args.shards.shard_count()).unwrap_or(0);
        Ok(MonitorState {
            args,
            batched: vec![(0, 0); shard_count],
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<()>,
        _tick: (),
        state: &mut MonitorState,
    ) -> Result<(), ActorProcessingErr> {
        let accounts = state.args.accounts.stats();
        metrics::gauge!(ACCOUNTS_RESIDENT).set(accounts.resident as f64);
        metrics::gauge!(MAILBOX_DEPTH).set(accounts.mailbox_depth as f64);
        metrics::gauge!(FENCED_SHARDS).set(accounts.fenced_shards as f64);
        metrics::gauge!(SESSIONS_LIVE).set(state.args.sessions.live() as f64);
        let lag = state
            .args
            .timers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .lag;
        metrics::gauge!(TIMER_LAG).set(lag.as_secs_f64());
        metrics::counter!(SAGA_ANSWERS_RECORDED_LATER)
            .absolute(state.args.shards.answers_recorded_later());
        for (index, previous) in state.batched.iter_mut().enumerate() {
            let shard = ShardId(u32::try_from(index).unwrap_or(u32::MAX));
            let label = shard.0.to_string();
            let running = state.args.shards.running_saga_count(shard);
            metrics::gauge!(SAGAS_RUNNING, "shard" => label.clone()).set(running as f64);
            let queued = state.args.shards.queued(shard);
            metrics::gauge!(SHARD_QUEUE, "shard" => label.clone()).set(queued as f64);
            let now = state.args.shards.batched(shard);
            let proposals = now.0.saturating_sub(previous.0);
            let commands = now.1.saturating_sub(previous.1);
            if proposals > 0 {
                metrics::gauge!(COMMANDS_PER_PROPOSAL, "shard" => label)
                    .set(commands as f64 / proposals as f64);
            }
            *previous = now;
        }
        Ok(())
    }
}

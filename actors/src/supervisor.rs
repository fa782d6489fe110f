//! The supervisors: time triggers, redress, the monitor, under one root that restarts them.
//!
//! * **TimerSupervisor** owns every time trigger. Each deadline lives in the replicated state
//!   (pending transfers' expiries, running sagas' deadlines, the business day's cut-off), so a
//!   new leader re-arms them by reading its own state — nothing is handed over in memory. On each tick it proposes
//!   `ExpirePending` on every shard it leads whose earliest expiry has passed (`CloseDay` when
//!   the business day's cut-off has, on a shard with no entry to carry it), and asks the
//!   redress supervisor to sweep a shard with a saga past its deadline. It records how late it
//!   found the oldest due deadline (timer lag). Every `REBALANCE_EVERY` it hands a leadership
//!   back to its preferred node if one is due (`cluster::rebalance`).
//! * **RedressSupervisor** sweeps, on every shard this node leads, the sagas whose first
//!   coordinator has not finished them (older than `REDRESS_AGE_MS`): each is driven to its
//!   end, its steps retried with bounded exponential backoff and jitter
//!   (`cluster::saga`), redressed past its deadline. One sweep per shard at a time.
//! * **MonitorActor** (`crate::monitor`) samples actor and shard statistics into metrics.
//!
//! The root restarts a failed child; `CRASHES_MAX` failures within `CRASH_WINDOW` and it gives
//! up on that child and says so loudly (a node whose timers are gone serves no expiry rather
//! than a wrong one; the other nodes take over as leaders time out).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cluster::Shards;
use ledger::{Command, ShardId};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::account::Accounts;
use crate::limits::{
    CRASHES_MAX, CRASH_WINDOW, REBALANCE_EVERY, REDRESS_AGE_MS, REDRESS_TICK, TIMER_TICK,
};
use crate::monitor::{MonitorActor, MonitorArgs, TimerStats};
use crate::session::Sessions;

fn now_ms() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(now.as_millis()).unwrap_or(u64::MAX)
}

// --- redress --------------------------------------------------------------------------------

pub enum RedressMsg {
    Tick,
    /// Sweep this shard now (a saga passed its deadline).
    Sweep(ShardId),
    Done(ShardId),
}

pub struct RedressSupervisor;

pub struct RedressState {
    shards: Arc<Shards>,
    sweeping: HashSet<ShardId>,
}

impl Actor for RedressSupervisor {
    type Msg = RedressMsg;
    type State = RedressState;
    type Arguments = Arc<Shards>;

    async fn pre_start(
        &self,
        myself: ActorRef<RedressMsg>,
        shards: Arc<Shards>,
    ) -> Result<RedressState, ActorProcessingErr> {
        myself.send_interval(REDRESS_TICK, || RedressMsg::Tick);
        Ok(RedressState {
            shards,
            sweeping: HashSet::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<RedressMsg>,
        message: RedressMsg,
        state: &mut RedressState,
    ) -> Result<(), ActorProcessingErr> {
        let targets: Vec<(ShardId, u64)> = match message {
            RedressMsg::Tick => (0..state.shards.shard_count())
                .map(|s| (ShardId(s), REDRESS_AGE_MS))
                .collect(),
            RedressMsg::Sweep(shard) => vec![(shard, 0)],
            RedressMsg::Done(shard) => {
                state.sweeping.remove(&shard);
                return Ok(());
            }
        };
        for (shard, age) in targets {
            if !state.shards.leads(shard) || !state.sweeping.insert(shard) {
                continue;
            }
            let shards = state.shards.clone();
            let myself = myself.clone();
            tokio::spawn(async move {
                let finished = cluster::saga::sweep(&shards, shard, age).await;
                if finished > 0 {
                    tracing::info!(shard = shard.0, finished, "redress sweep finished sagas");
                }
                let _ = myself.send_message(RedressMsg::Done(shard));
            });
        }
        Ok(())
    }
}

// --- timers ---------------------------------------------------------------------------------

pub enum TimerMsg {
    Tick,
    Done(ShardId),
    /// Every `REBALANCE_EVERY`: hand a leadership back to its preferred node if one is due.
    Rebalance,
    RebalanceDone,
}

pub struct TimerSupervisor;

pub struct TimerArgs {
    pub shards: Arc<Shards>,
    pub redress: ActorRef<RedressMsg>,
    pub stats: Arc<Mutex<TimerStats>>,
}

pub struct TimerState {
    args: TimerArgs,
    expiring: HashSet<ShardId>,
    rebalancing: bool,
}

impl Actor for TimerSupervisor {
    type Msg = TimerMsg;
    type State = TimerState;
    type Arguments = TimerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TimerMsg>,
        args: TimerArgs,
    ) -> Result<TimerState, ActorProcessingErr> {
        myself.send_interval(TIMER_TICK, || TimerMsg::Tick);
        myself.send_interval(REBALANCE_EVERY, || TimerMsg::Rebalance);
        Ok(TimerState {
            args,
            expiring: HashSet::new(),
            rebalancing: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<TimerMsg>,
        message: TimerMsg,
        state: &mut TimerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TimerMsg::Tick => {}
            TimerMsg::Done(shard) => {
                state.expiring.remove(&shard);
                return Ok(());
            }
            TimerMsg::Rebalance => {
                // One handover at a time; it runs outside the actor (it waits for an election).
                if !state.rebalancing {
                    state.rebalancing = true;
                    let shards = state.args.shards.clone();
                    let myself = myself.clone();
                    tokio::spawn(async move {
                        shards.rebalance_once().await;
                        let _ = myself.send_message(TimerMsg::RebalanceDone);
                    });
                }
                return Ok(());
            }
            TimerMsg::RebalanceDone => {
                state.rebalancing = false;
                return Ok(());
            }
        }
        let now = now_ms();
        let mut lag_ms = 0u64;
        for shard in (0..state.args.shards.shard_count()).map(ShardId) {
            if !state.args.shards.leads(shard) {
                continue;
            }
            let deadlines = state.args.shards.next_deadlines(shard);
            // Expiries and the business-day cut-off: one timer write per shard at a time.
            let expiry = deadlines.expiry.filter(|due| *due <= now);
            let cutoff = deadlines.cutoff.filter(|due| *due <= now);
            let command = match (expiry, cutoff) {
                (Some(due), _) => Some((due, Command::ExpirePending)),
                (None, Some(due)) => Some((due, Command::CloseDay)),
                (None, None) => None,
            };
            if let Some((due, command)) = command {
                lag_ms = lag_ms.max(now - due);
                if state.expiring.insert(shard) {
                    let shards = state.args.shards.clone();
                    let myself = myself.clone();
                    tokio::spawn(async move {
                        let name = command.name();
                        if let Err(error) = shards.write(shard, command).await {
                            tracing::warn!(%error, shard = shard.0, name, "timer write failed; will retry");
                        }
                        let _ = myself.send_message(TimerMsg::Done(shard));
                    });
                }
            }
            if let Some(due) = deadlines.saga.filter(|due| *due <= now) {
                lag_ms = lag_ms.max(now - due);
                let _ = state.args.redress.send_message(RedressMsg::Sweep(shard));
            }
        }
        state
            .args
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .lag = Duration::from_millis(lag_ms);
        Ok(())
    }
}

// --- the root -------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Child {
    Redress,
    Timer,
    Monitor,
}

pub struct RootArgs {
    pub shards: Arc<Shards>,
    pub accounts: Accounts,
    pub sessions: Sessions,
}

pub struct RootState {
    args: RootArgs,
    stats: Arc<Mutex<TimerStats>>,
    children: Vec<(Child, ActorCell)>,
    redress: Option<ActorRef<RedressMsg>>,
    failures: Vec<(Child, Instant)>,
}

/// Parent of the timer, redress and monitor actors.
pub struct RootSupervisor;

impl RootSupervisor {
    async fn start_child(
        myself: &ActorRef<()>,
        state: &mut RootState,
        child: Child,
    ) -> Result<(), ActorProcessingErr> {
        let cell = myself.get_cell();
        let started = match child {
            Child::Redress => {
                let (actor, _) =
                    Actor::spawn_linked(None, RedressSupervisor, state.args.shards.clone(), cell)
                        .await?;
                state.redress = Some(actor.clone());
                actor.get_cell()
            }
            Child::Timer => {
                let redress = state
                    .redress
                    .clone()
                    .ok_or("the redress supervisor starts before the timers")?;
                let args = TimerArgs {
                    shards: state.args.shards.clone(),
                    redress,
                    stats: state.stats.clone(),
                };
                Actor::spawn_linked(None, TimerSupervisor, args, cell)
                    .await?
                    .0
                    .get_cell()
            }
            Child::Monitor => {
                let args = MonitorArgs {
                    shards: state.args.shards.clone(),
                    accounts: state.args.accounts.clone(),
                    sessions: state.args.sessions.clone(),
                    timers: state.stats.clone(),
                };
                Actor::spawn_linked(None, MonitorActor, args, cell)
                    .await?
                    .0
                    .get_cell()
            }
        };
        state.children.retain(|(c, _)| *c != child);
        state.children.push((child, started));
        Ok(())
    }
}

impl Actor for RootSupervisor {
    type Msg = ();
    type State = RootState;
    type Arguments = RootArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        args: RootArgs,
    ) -> Result<RootState, ActorProcessingErr> {
        Ok(RootState {
            args,
            stats: Arc::default(),
            children: Vec::new(),
            redress: None,
            failures: Vec::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<()>,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        for child in [Child::Redress, Child::Timer, Child::Monitor] {
            Self::start_child(&myself, state, child).await?;
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        event: SupervisionEvent,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        let SupervisionEvent::ActorFailed(cell, error) = event else {
            return Ok(());
        };
        let Some(child) = state
            .children
            .iter()
            .find(|(_, c)| c.get_id() == cell.get_id())
            .map(|(child, _)| *child)
        else {
            return Ok(());
        };
        state.failures.retain(|(_, at)| at.elapsed() < CRASH_WINDOW);
        state.failures.push((child, Instant::now()));
        let recent = state.failures.iter().filter(|(c, _)| *c == child).count();
        if recent > CRASHES_MAX {
            tracing::error!(?child, %error, "supervisor child crashes in a loop; not restarting it");
            return Ok(());
        }
        tracing::error!(?child, %error, "supervisor child failed; restarting it");
        Self::start_child(&myself, state, child).await
    }
}

/// Starts the supervision tree of a node.
pub async fn start(args: RootArgs) -> Result<ActorRef<()>, ActorProcessingErr> {
    let (root, _) = Actor::spawn(None, RootSupervisor, args).await?;
    Ok(root)
}

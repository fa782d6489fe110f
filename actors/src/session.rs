//! Session actors: one per live user session (a USSD dialogue, or a phone's API session), keyed
//! by session id, stopped after `SESSION_IDLE` without a touch. This layer gives the actor, its
//! bounds and its supervision; the channels give it menus (it keeps the dialogue's step and a
//! few named values meanwhile).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::limits::{SESSIONS_MAX, SESSION_CALL_TIMEOUT_MS, SESSION_IDLE};

/// What a session remembers between the messages of one dialogue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionView {
    pub id: String,
    /// The phone (E.164) the session belongs to.
    pub phone: String,
    /// Where the dialogue stands (a menu position, for the channels).
    pub step: u32,
    pub values: BTreeMap<String, String>,
    /// Messages handled in this session.
    pub touches: u64,
}

pub enum SessionMsg {
    /// The dialogue moved on: set its step and values; answers the session as it now is.
    Touch {
        step: u32,
        values: BTreeMap<String, String>,
        reply: RpcReplyPort<SessionView>,
    },
    Get(RpcReplyPort<SessionView>),
    /// The user ended the dialogue.
    End,
    Tick,
}

struct SessionActor;

struct SessionArgs {
    view: SessionView,
    idle: Duration,
    registry: Arc<Mutex<HashMap<String, ActorRef<SessionMsg>>>>,
}

struct SessionState {
    view: SessionView,
    idle: Duration,
    last: Instant,
    registry: Arc<Mutex<HashMap<String, ActorRef<SessionMsg>>>>,
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        let tick = (args.idle / 4).max(Duration::from_millis(10));
        myself.send_interval(tick, || SessionMsg::Tick);
        Ok(SessionState {
            view: args.view,
            idle: args.idle,
            last: Instant::now(),
            registry: args.registry,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        message: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SessionMsg::Touch {
                step,
                values,
                reply,
            } => {
                state.last = Instant::now();
                state.view.step = step;
                state.view.values.extend(values);
                state.view.touches += 1;
                let _ = reply.send(state.view.clone());
            }
            SessionMsg::Get(reply) => {
                let _ = reply.send(state.view.clone());
            }
            SessionMsg::End => myself.stop(Some("ended".into())),
            SessionMsg::Tick => {
                if state.last.elapsed() >= state.idle {
                    myself.stop(Some("idle".into()));
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        let mut registry = state
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if registry
            .get(&state.view.id)
            .is_some_and(|r| r.get_id() == myself.get_id())
        {
            registry.remove(&state.view.id);
        }
        Ok(())
    }
}

/// Why a session could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// `SESSIONS_MAX` sessions are live: `overloaded`.
    TooMany,
    /// The session belongs to another phone.
    NotYours,
    /// The actor stopped while asked.
    Gone,
}

/// The node's live sessions.
#[derive(Clone)]
pub struct Sessions {
    registry: Arc<Mutex<HashMap<String, ActorRef<SessionMsg>>>>,
    max: usize,
    idle: Duration,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new(SESSIONS_MAX, SESSION_IDLE)
    }
}

impl Sessions {
    pub fn new(max: usize, idle: Duration) -> Sessions {
        Sessions {
            registry: Arc::default(),
            max,
            idle,
        }
    }

    /// Moves session `id` of `phone` to `step` (starting the session if new).
    pub async fn touch(
        &self,
        id: &str,
        phone: &str,
        step: u32,
        values: BTreeMap<String, String>,
    ) -> Result<SessionView, SessionError> {
        let actor = self.actor(id, phone).await?;
        let touch = |reply| SessionMsg::Touch {
            step,
            values,
            reply,
        };
        let view = ractor::call_t!(actor, touch, SESSION_CALL_TIMEOUT_MS)
            .map_err(|_| SessionError::Gone)?;
        if view.phone != phone {
            return Err(SessionError::NotYours);
        }
        Ok(view)
    }

    pub async fn get(&self, id: &str) -> Option<SessionView> {
        let actor = self
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()?;
        ractor::call_t!(actor, SessionMsg::Get, SESSION_CALL_TIMEOUT_MS).ok()
    }

    pub fn end(&self, id: &str) {
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(actor) = registry.get(id) {
            let _ = actor.send_message(SessionMsg::End);
        }
    }

    pub fn live(&self) -> usize {
        self.registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    async fn actor(&self, id: &str, phone: &str) -> Result<ActorRef<SessionMsg>, SessionError> {
        {
            let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(actor) = registry.get(id) {
                return Ok(actor.clone());
            }
            if registry.len() >= self.max {
                return Err(SessionError::TooMany);
            }
        }
        let args = SessionArgs {
            view: SessionView {
                id: id.to_string(),
                phone: phone.to_string(),
                ..SessionView::default()
            },
            idle: self.idle,
            registry: self.registry.clone(),
        };
        let (actor, _) = Actor::spawn(None, SessionActor, args)
            .await
            .map_err(|_| SessionError::Gone)?;
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = registry.get(id) {
            actor.stop(None);
            return Ok(existing.clone());
        }
        registry.insert(id.to_string(), actor.clone());
        Ok(actor)
    }
}

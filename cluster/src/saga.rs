//! The saga coordinator: runs a transfer whose id, payer and payee are not all on one shard
//! (see `ledger::saga` for the steps and why no step can create money).
//!
//! Any node may coordinate: every step is a replicated, idempotent command routed to its
//! shard's leader, so two coordinators of one saga (a client's retry on another node, and the
//! home leader's redress sweep) drive it to the same end. A step that does not answer is
//! retried with bounded exponential backoff and jitter until the saga's deadline; past it, the
//! coordinator redresses: it fences the credit and voids the hold, or, if the credit had
//! landed, posts. A saga whose shards stay unreachable is left running and is finished by
//! [`sweep`] on the home shard's leader later.
//!
//! **The one ordering rule**: a hold is voided only once the payee's leg can no longer be
//! credited (its credit was rejected, or `CancelCredit` fenced it). Otherwise two coordinators
//! could race — one voiding the hold after its own step timed out while the other, having seen
//! the hold, credits the payee — and the payee would be paid from the float with nobody
//! debited. Every path to `VoidHold` below goes through a rejected or fenced credit.

use std::time::Duration;

use ledger::{
    Accepted, AccountId, Answer, Code, Command, LegOutcome, Outcome, Query, Reverses, Saga,
    SagaOutcome, ShardId, TransferId, TransferOutcome, TransferRequest, TransferStatus,
};

use crate::limits::{
    STEP_ATTEMPTS_MAX, STEP_BACKOFF_MAX, STEP_BACKOFF_MIN, SWEEP_BATCH_MAX, SWEEP_CONCURRENCY,
};
use crate::rpc::RouteError;
use crate::shards::Shards;

/// The shards a transfer touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Where the id's record lives.
    pub home: ShardId,
    pub payer: ShardId,
    pub payee: ShardId,
}

impl Route {
    /// System accounts have a slice on every shard: their side is served where the other
    /// account lives (or, when both are system accounts, on the home shard).
    pub fn of(request: &TransferRequest, shard_count: u32) -> Route {
        let home = ledger::home_of(&request.id, shard_count);
        let side =
            |account: &AccountId, other: &AccountId| match (account.is_system(), other.is_system())
            {
                (true, true) => home,
                (true, false) => ledger::shard_of(other, shard_count),
                (false, _) => ledger::shard_of(account, shard_count),
            };
        Route {
            home,
            payer: side(&request.from, &request.to),
            payee: side(&request.to, &request.from),
        }
    }

    /// One shard does it all: one local command.
    pub fn is_local(&self) -> bool {
        self.home == self.payer && self.payer == self.payee
    }
}

/// The account whose actor takes a transfer: the payer, or the payee when the payer is a
/// system account (`float` issuing e-money to a customer).
pub fn owner(request: &TransferRequest) -> &AccountId {
    if request.from.is_system() && !request.to.is_system() {
        &request.to
    } else {
        &request.from
    }
}

/// Runs one transfer to its answer: locally when its route is, else as a saga.
pub async fn transfer(
    shards: &Shards,
    request: TransferRequest,
) -> Result<TransferOutcome, RouteError> {
    let route = Route::of(&request, shards.shard_count());
    if route.is_local() {
        return match shards.write(route.home, Command::Transfer(request)).await? {
            Outcome::Transfer(outcome) => Ok(outcome),
            other => Err(unexpected(&other)),
        };
    }
    let id = request.id.clone();
    let begin = Command::SagaBegin {
        request,
        payer_shard: route.payer,
        payee_shard: route.payee,
    };
    begin_and_drive(shards, route.home, id, begin).await
}

/// Reverses `reverses.request.original` as a saga homed at the reversal id's shard;
/// `request` is the transfer the reversal makes (the original's payee pays its payer back).
pub async fn reverse(
    shards: &Shards,
    request: TransferRequest,
    reverses: Reverses,
) -> Result<TransferOutcome, RouteError> {
    let route = Route::of(&request, shards.shard_count());
    let id = request.id.clone();
    let begin = Command::ReversalBegin {
        request,
        payer_shard: route.payer,
        payee_shard: route.payee,
        reverses,
    };
    begin_and_drive(shards, route.home, id, begin).await
}

/// Runs many transfers as sagas in lockstep (a batch request's cross-shard items): each step
/// of all of them goes out as one `Command::Many` per shard — one RPC, one log entry, one
/// apply call — instead of one command per transfer. Four rounds carry the whole batch when
/// every step answers as expected, and the answers are recorded at home after the reply (a
/// fifth round when the finisher's queue is full); an item that meets anything else (a
/// rejected credit, a step that did not answer, a pending transfer, a reversal) leaves the
/// lockstep and is driven alone by [`drive`], from the same idempotent steps, so its answer is
/// the one its single call would have got. Answers come back in the order of `requests`.
pub async fn transfers(
    shards: &Shards,
    requests: Vec<TransferRequest>,
    concurrency: usize,
) -> Lockstep {
    use futures::StreamExt;
    let count = requests.len();
    let mut answers: Vec<Option<Result<TransferOutcome, RouteError>>> = vec![None; count];
    // Items to run alone: begun (or not) and why.
    let mut alone: Vec<(usize, Alone)> = Vec::new();

    // Round 1: begin every saga at its id's home shard.
    let begins = requests
        .iter()
        .map(|request| {
            let route = Route::of(request, shards.shard_count());
            let begin = Command::SagaBegin {
                request: request.clone(),
                payer_shard: route.payer,
                payee_shard: route.payee,
            };
            (route.home, begin)
        })
        .collect();
    let mut running: Vec<(usize, Saga)> = Vec::new();
    for (index, outcome) in round(shards, begins).await.into_iter().enumerate() {
        let id = requests[index].id.clone();
        match outcome {
            Some(Outcome::Saga(SagaOutcome::Running(saga))) if in_lockstep(&saga) => {
                running.push((index, saga));
            }
            Some(Outcome::Saga(SagaOutcome::Running(saga))) => {
                alone.push((index, Alone::Drive(Box::new(saga))));
            }
            Some(Outcome::Saga(SagaOutcome::Finished(answer))) => answers[index] = Some(Ok(answer)),
            Some(Outcome::Saga(SagaOutcome::Refused(code))) => {
                answers[index] = Some(Ok(TransferOutcome::Refused { id, code }));
            }
            _ => alone.push((index, Alone::Transfer(requests[index].clone()))),
        }
    }

    // Round 2: hold on the payers' shards. A refusal here ends the saga (recorded at home in
    // round 5); nothing was held, so nothing is to be credited. A saga whose payer and payee
    // share a shard (only its id is homed elsewhere) is one local transfer there instead, and
    // goes straight to round 5.
    let mut held = Vec::new();
    let mut finishing: Vec<(usize, Saga, TransferOutcome)> = Vec::new();
    let mut outcomes = round_of(shards, running.iter().map(|(_, saga)| saga), |saga| {
        let command = if saga.payer_shard == saga.payee_shard {
            Command::Transfer(saga.request.clone())
        } else {
            Command::Hold(saga.request.clone())
        };
        (saga.payer_shard, command)
    })
    .await;
    for (index, saga) in running {
        let id = saga.request.id.clone();
        match outcomes.next().flatten() {
            Some(Outcome::Transfer(answer)) if saga.payer_shard == saga.payee_shard => {
                finishing.push((index, saga, answer));
            }
            Some(Outcome::Leg(LegOutcome::Held { .. } | LegOutcome::Posted { .. }))
                if saga.payer_shard != saga.payee_shard =>
            {
                held.push((index, saga));
            }
            Some(Outcome::Leg(LegOutcome::Rejected(code))) => {
                finishing.push((index, saga, rejected(id, code)));
            }
            Some(Outcome::Leg(LegOutcome::Refused(code))) => {
                finishing.push((index, saga, TransferOutcome::Refused { id, code }));
            }
            _ => alone.push((index, Alone::Drive(Box::new(saga)))),
        }
    }

    // Round 3: credit the payees. Anything but a credit (a rejection must void the hold, in
    // order) is driven alone.
    let mut credited = Vec::new();
    let mut outcomes = round_of(shards, held.iter().map(|(_, saga)| saga), |saga| {
        (saga.payee_shard, Command::Credit(saga.request.clone()))
    })
    .await;
    for (index, saga) in held {
        match outcomes.next().flatten() {
            Some(Outcome::Leg(LegOutcome::Credited { to_balance, .. })) => {
                credited.push((index, saga, to_balance));
            }
            _ => alone.push((index, Alone::Drive(Box::new(saga)))),
        }
    }

    // Round 4: post the holds.
    let mut outcomes = round_of(shards, credited.iter().map(|(_, saga, _)| saga), |saga| {
        (saga.payer_shard, Command::PostHold(saga.request.id.clone()))
    })
    .await;
    for (index, saga, to_balance) in credited {
        let answer = outcomes
            .next()
            .flatten()
            .and_then(|outcome| completed(&saga.request, &outcome, to_balance));
        match answer {
            Some(answer) => finishing.push((index, saga, answer)),
            None => alone.push((index, Alone::Drive(Box::new(saga)))),
        }
    }

    // The answers are settled (see `drive_to`): each goes to the finisher to be recorded at
    // its home after the reply; those it cannot take are recorded now, in round 5.
    let finishing: Vec<(usize, Saga, TransferOutcome)> = finishing
        .into_iter()
        .filter_map(|(index, saga, answer)| {
            let home = ledger::home_of(&saga.request.id, shards.shard_count());
            if shards.record_later(home, saga.request.id.clone(), answer.clone()) {
                answers[index] = Some(Ok(answer));
                None
            } else {
                Some((index, saga, answer))
            }
        })
        .collect();

    // Round 5: record the rest of the answers at their home shards.
    let finishes = finishing
        .iter()
        .map(|(_, saga, answer)| {
            let id = saga.request.id.clone();
            let home = ledger::home_of(&id, shards.shard_count());
            let finish = Command::SagaFinish {
                id,
                answer: answer.clone(),
            };
            (home, finish)
        })
        .collect();
    let mut outcomes = round(shards, finishes).await.into_iter();
    for (index, saga, _) in finishing {
        match outcomes.next().flatten() {
            Some(Outcome::Saga(SagaOutcome::Finished(answer))) => answers[index] = Some(Ok(answer)),
            _ => alone.push((index, Alone::Drive(Box::new(saga)))),
        }
    }

    // The rest, one by one (a bounded number at once).
    let alone_count = alone.len();
    let driven: Vec<(usize, Result<TransferOutcome, RouteError>)> = futures::stream::iter(alone)
        .map(|(index, item)| async move {
            let result = match item {
                Alone::Transfer(request) => transfer(shards, request).await,
                Alone::Drive(saga) => drive(shards, &saga).await,
            };
            (index, result)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    for (index, result) in driven {
        answers[index] = Some(result);
    }
    let answers = answers
        .into_iter()
        .map(|answer| answer.expect("every item is answered in lockstep or alone"))
        .collect();
    Lockstep {
        answers,
        alone: alone_count,
    }
}

/// What [`transfers`] answered.
pub struct Lockstep {
    /// One answer per request, in order.
    pub answers: Vec<Result<TransferOutcome, RouteError>>,
    /// How many of them left the lockstep and were driven alone.
    pub alone: usize,
}

/// An item that left the lockstep.
enum Alone {
    /// Its saga may not have begun: run it from the start.
    Transfer(TransferRequest),
    /// Begun: drive it from where it stands.
    Drive(Box<Saga>),
}

/// A plain cross-shard transfer, begun now and not yet anywhere: what the lockstep runs.
fn in_lockstep(saga: &Saga) -> bool {
    saga.answer.is_none()
        && saga.decision.is_none()
        && saga.reverses.is_none()
        && !saga.request.pending
}

/// One lockstep round of one step per saga: `step` names each saga's shard and command.
/// Returns the outcomes in the order of `sagas` (see [`round`]).
async fn round_of<'a>(
    shards: &Shards,
    sagas: impl Iterator<Item = &'a Saga>,
    step: impl Fn(&Saga) -> (ShardId, Command),
) -> std::vec::IntoIter<Option<Outcome>> {
    round(shards, sagas.map(step).collect()).await.into_iter()
}

/// One lockstep round: the commands grouped per shard into one `Command::Many` each, the
/// shards written concurrently. Returns each command's outcome in the order given (`None` where
/// its shard did not answer, or answered out of shape).
async fn round(shards: &Shards, items: Vec<(ShardId, Command)>) -> Vec<Option<Outcome>> {
    use std::collections::BTreeMap;
    let order: Vec<ShardId> = items.iter().map(|(shard, _)| *shard).collect();
    let mut by_shard: BTreeMap<ShardId, Vec<Command>> = BTreeMap::new();
    for (shard, command) in items {
        by_shard.entry(shard).or_default().push(command);
    }
    let writes = by_shard.into_iter().map(|(shard, commands)| async move {
        let count = commands.len();
        let outcomes = match shards.write(shard, Command::Many(commands)).await {
            Ok(Outcome::Many(outcomes)) if outcomes.len() == count => outcomes,
            Ok(other) => {
                tracing::warn!(?shard, outcome = ?other, "lockstep round: unexpected outcome");
                Vec::new()
            }
            Err(error) => {
                tracing::debug!(?shard, %error, "lockstep round: shard did not answer");
                Vec::new()
            }
        };
        (shard, outcomes.into_iter())
    });
    let mut per_shard: BTreeMap<ShardId, std::vec::IntoIter<Outcome>> =
        futures::future::join_all(writes)
            .await
            .into_iter()
            .collect();
    order
        .into_iter()
        .map(|shard| per_shard.get_mut(&shard).and_then(Iterator::next))
        .collect()
}

/// The answer of a completed transfer: its hold posted (`Posted`), its payee credited to
/// `to_balance`. `None` for any other outcome.
fn completed(
    request: &TransferRequest,
    posted: &Outcome,
    to_balance: i64,
) -> Option<TransferOutcome> {
    match *posted {
        Outcome::Leg(LegOutcome::Posted {
            fee,
            from_balance,
            daily_room,
            log_index,
            log_pos,
        }) => Some(TransferOutcome::Accepted(Accepted {
            id: request.id.clone(),
            status: TransferStatus::Completed,
            amount: request.amount,
            fee,
            from_balance,
            to_balance,
            daily_room,
            log_index,
            log_pos,
        })),
        _ => None,
    }
}

async fn begin_and_drive(
    shards: &Shards,
    home: ShardId,
    id: TransferId,
    begin: Command,
) -> Result<TransferOutcome, RouteError> {
    match shards.write(home, begin).await? {
        Outcome::Saga(SagaOutcome::Running(saga)) => drive(shards, &saga).await,
        Outcome::Saga(SagaOutcome::Finished(answer)) => Ok(answer),
        Outcome::Saga(SagaOutcome::Refused(code)) => Ok(TransferOutcome::Refused { id, code }),
        other => Err(unexpected(&other)),
    }
}

/// Posts (`post`) or voids a pending saga: records the decision on the home shard (the first
/// stays; expiry wins over a late post), then settles the money. Returns the saga as settled.
pub async fn decide(
    shards: &Shards,
    id: &TransferId,
    post: bool,
) -> Result<Result<Saga, Code>, RouteError> {
    let home = ledger::home_of(id, shards.shard_count());
    let decide = Command::SagaDecide {
        id: id.clone(),
        post,
    };
    let saga = match shards.write(home, decide).await? {
        Outcome::Saga(SagaOutcome::Decided(saga)) => saga,
        Outcome::Saga(SagaOutcome::Refused(code)) => return Ok(Err(code)),
        other => return Err(unexpected(&other)),
    };
    if saga.settled.is_some() {
        return Ok(Ok(saga));
    }
    settle(shards, &saga).await.map(Ok)
}

/// Drives a running saga to its end and answers. The answer of a plain transfer (not pending,
/// not a reversal) is recorded on its home shard after this returns, with others queued on
/// this node (see `finisher`); any other is recorded before (and a decided pending transfer's
/// money is settled).
pub async fn drive(shards: &Shards, saga: &Saga) -> Result<TransferOutcome, RouteError> {
    drive_to(shards, saga, Record::Later).await
}

/// Drives a running saga like [`drive`], recording its answer on the home shard before it
/// answers: for a reader of the saga's record, which must find it final.
pub async fn drive_and_record(shards: &Shards, saga: &Saga) -> Result<TransferOutcome, RouteError> {
    drive_to(shards, saga, Record::Now).await
}

/// When [`drive_to`] records a plain transfer's answer at home.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Record {
    /// Before answering.
    Now,
    /// After, in bulk, when the finisher can take it.
    Later,
}

async fn drive_to(
    shards: &Shards,
    saga: &Saga,
    record: Record,
) -> Result<TransferOutcome, RouteError> {
    if let Some(answer) = &saga.answer {
        if saga.decision.is_some() && saga.settled.is_none() {
            settle(shards, saga).await?;
        }
        return Ok(answer.clone());
    }
    let answer = if let Some(reverses) = &saga.reverses {
        reversal(shards, saga, reverses).await?
    } else if saga.payer_shard == saga.payee_shard {
        // The money stays on one shard; only the id lives elsewhere.
        let command = Command::Transfer(saga.request.clone());
        match step(shards, saga.payer_shard, command).await? {
            Outcome::Transfer(outcome) => outcome,
            other => return Err(unexpected(&other)),
        }
    } else if saga.request.pending {
        hold(shards, saga).await?
    } else {
        legs(shards, saga).await?
    };
    let home = ledger::home_of(&saga.request.id, shards.shard_count());
    // Settled: every step behind this answer is recorded on its shard, so whoever drives the
    // saga again reaches this answer; the home record only closes it.
    let plain = saga.reverses.is_none() && !saga.request.pending;
    if plain
        && record == Record::Later
        && shards.record_later(home, saga.request.id.clone(), answer.clone())
    {
        return Ok(answer);
    }
    let finish = Command::SagaFinish {
        id: saga.request.id.clone(),
        answer,
    };
    match step(shards, home, finish).await? {
        Outcome::Saga(SagaOutcome::Finished(answer)) => Ok(answer),
        other => Err(unexpected(&other)),
    }
}

/// A reversal's steps: claim the original (when it is a saga), move the money back, settle
/// the claim. The answer is the reversal's.
async fn reversal(
    shards: &Shards,
    saga: &Saga,
    reverses: &Reverses,
) -> Result<TransferOutcome, RouteError> {
    let id = saga.request.id.clone();
    let original = reverses.request.original.clone();
    if reverses.claim {
        let claim = Command::ClaimReversal {
            original: original.clone(),
            by: id.clone(),
        };
        match step(shards, reverses.record_shard, claim).await? {
            Outcome::Record(Ok(_)) => {}
            Outcome::Record(Err(code)) => return Ok(TransferOutcome::Refused { id, code }),
            other => return Err(unexpected(&other)),
        }
    }
    // An original that is a local transfer has its record and its money on `record_shard`; one
    // that is a saga with both sides on one shard has a local record there too. Either way the
    // reversal there is one command that claims that record and moves the money at once.
    let local = if !reverses.claim {
        Some(reverses.record_shard)
    } else {
        (saga.payer_shard == saga.payee_shard).then_some(saga.payer_shard)
    };
    let answer = if let Some(shard) = local {
        let command = Command::Reverse(reverses.request.clone());
        match step(shards, shard, command).await? {
            Outcome::Transfer(outcome) => outcome,
            other => return Err(unexpected(&other)),
        }
    } else {
        legs(shards, saga).await?
    };
    if reverses.claim {
        let settle = Command::SettleReversal {
            original,
            by: id,
            applied: matches!(answer, TransferOutcome::Accepted(_)),
        };
        match step(shards, reverses.record_shard, settle).await? {
            Outcome::Record(_) => {}
            other => return Err(unexpected(&other)),
        }
    }
    Ok(answer)
}

/// A pending transfer's first phase: hold on the payer's shard; the credit waits for a post.
async fn hold(shards: &Shards, saga: &Saga) -> Result<TransferOutcome, RouteError> {
    let request = &saga.request;
    let id = request.id.clone();
    let hold = leg_step(
        shards,
        saga.payer_shard,
        Command::Hold(request.clone()),
        saga.deadline_ms,
    )
    .await?;
    match hold {
        Some(LegOutcome::Held {
            fee,
            from_balance,
            daily_room,
            log_index,
            log_pos,
        }) => {
            // The payee's balance as its shard reads it now (a hold does not change it).
            let to_balance = match shards
                .read(saga.payee_shard, Query::Account(request.to.clone()))
                .await?
            {
                Answer::Account(Some(view)) => view.balance,
                _ => 0,
            };
            Ok(TransferOutcome::Accepted(Accepted {
                id,
                status: TransferStatus::Pending,
                amount: request.amount,
                fee,
                from_balance,
                to_balance,
                daily_room,
                log_index,
                log_pos,
            }))
        }
        Some(LegOutcome::Rejected(code)) => Ok(rejected(id, code)),
        Some(LegOutcome::Refused(code)) => Ok(TransferOutcome::Refused { id, code }),
        Some(LegOutcome::Voided) | None => redress(shards, saga).await,
        Some(other) => Err(unexpected_leg(&other)),
    }
}

/// A decided pending saga: post (credit the payee, post the hold) or void (release the hold),
/// then record where the money ended on the home shard.
async fn settle(shards: &Shards, saga: &Saga) -> Result<Saga, RouteError> {
    let id = saga.request.id.clone();
    let post = saga.decision.expect("only decided sagas settle");
    let (status, code) = if saga.payer_shard == saga.payee_shard {
        // The pending transfer is a local record on the money's shard: post or void it there.
        let command = if post {
            Command::Post(id.clone())
        } else {
            Command::Void(id.clone())
        };
        match step(shards, saga.payer_shard, command).await? {
            Outcome::Record(Ok(view)) => (view.status, None),
            // Not pending there any more: its own expiry voided it first.
            Outcome::Record(Err(Code::TransferNotPending)) => (TransferStatus::Voided, None),
            other => return Err(unexpected(&other)),
        }
    } else {
        let outcome = if post {
            credit_and_post(shards, saga).await?
        } else {
            redress(shards, saga).await?
        };
        match outcome {
            TransferOutcome::Accepted(accepted) => (accepted.status, None),
            TransferOutcome::Rejected { code, .. } if post => (TransferStatus::Voided, Some(code)),
            TransferOutcome::Rejected { .. } => (TransferStatus::Voided, None),
            TransferOutcome::Refused { code, .. } => (TransferStatus::Voided, Some(code)),
        }
    };
    let home = ledger::home_of(&id, shards.shard_count());
    let close = Command::SagaClose { id, status, code };
    match step(shards, home, close).await? {
        Outcome::Saga(SagaOutcome::Decided(saga)) => Ok(saga),
        other => Err(unexpected(&other)),
    }
}

/// Hold, credit, post — or redress.
async fn legs(shards: &Shards, saga: &Saga) -> Result<TransferOutcome, RouteError> {
    let request = &saga.request;
    let id = request.id.clone();
    let deadline = saga.deadline_ms;
    let hold = leg_step(
        shards,
        saga.payer_shard,
        Command::Hold(request.clone()),
        deadline,
    )
    .await?;
    match hold {
        Some(LegOutcome::Held { .. }) => {}
        // Nothing was held, so nothing can be credited (credits follow holds).
        Some(LegOutcome::Rejected(code)) => return Ok(rejected(id, code)),
        Some(LegOutcome::Refused(code)) => return Ok(TransferOutcome::Refused { id, code }),
        // A hold that was posted already (another coordinator got further): carry on.
        Some(LegOutcome::Posted { .. }) => {}
        // Fenced by an earlier redress, or past the deadline without an answer.
        Some(LegOutcome::Voided) | None => return redress(shards, saga).await,
        Some(other) => return Err(unexpected_leg(&other)),
    }
    credit_and_post(shards, saga).await
}

/// The payer's hold is in place: credit the payee, then post the hold — or redress.
async fn credit_and_post(shards: &Shards, saga: &Saga) -> Result<TransferOutcome, RouteError> {
    let request = &saga.request;
    let credit = leg_step(
        shards,
        saga.payee_shard,
        Command::Credit(request.clone()),
        saga.deadline_ms,
    )
    .await?;
    let credited = match credit {
        Some(LegOutcome::Credited { to_balance, .. }) => to_balance,
        // Recorded: this credit can never happen now.
        Some(LegOutcome::Rejected(code)) => {
            void(shards, saga).await?;
            return Ok(rejected(request.id.clone(), code));
        }
        Some(LegOutcome::Cancelled) | None => return redress(shards, saga).await,
        Some(other) => return Err(unexpected_leg(&other)),
    };
    post(shards, saga, credited).await
}

/// The payee's leg is credited: the hold becomes a debit.
async fn post(
    shards: &Shards,
    saga: &Saga,
    to_balance: i64,
) -> Result<TransferOutcome, RouteError> {
    let post = Command::PostHold(saga.request.id.clone());
    let outcome = step(shards, saga.payer_shard, post).await?;
    completed(&saga.request, &outcome, to_balance).ok_or_else(|| unexpected(&outcome))
}

/// Redress: fences the payee's leg first; a credit that landed after all is posted, anything
/// else releases (or fences) the hold.
async fn redress(shards: &Shards, saga: &Saga) -> Result<TransferOutcome, RouteError> {
    let id = saga.request.id.clone();
    let cancel = Command::CancelCredit(id.clone());
    let code = match step(shards, saga.payee_shard, cancel).await? {
        Outcome::Leg(LegOutcome::Credited { to_balance, .. }) => {
            return post(shards, saga, to_balance).await;
        }
        Outcome::Leg(LegOutcome::Rejected(code)) => code,
        Outcome::Leg(LegOutcome::Cancelled) => Code::PayeeUnreachable,
        other => return Err(unexpected(&other)),
    };
    void(shards, saga).await?;
    Ok(rejected(id, code))
}

/// Releases (or fences) the payer's hold. Only once the payee's leg is fenced or rejected.
async fn void(shards: &Shards, saga: &Saga) -> Result<(), RouteError> {
    let command = Command::VoidHold(saga.request.id.clone());
    match step(shards, saga.payer_shard, command).await? {
        Outcome::Leg(LegOutcome::Voided | LegOutcome::Rejected(_)) => Ok(()),
        other => Err(unexpected(&other)),
    }
}

/// A business rejection recorded on a leg (no log position of its own).
fn rejected(id: TransferId, code: Code) -> TransferOutcome {
    TransferOutcome::Rejected {
        id,
        code,
        log_index: 0,
        log_pos: 0,
    }
}

/// Sends a leg command until its shard answers or `deadline_ms` passes (`None`).
async fn leg_step(
    shards: &Shards,
    shard: ShardId,
    command: Command,
    deadline_ms: u64,
) -> Result<Option<LegOutcome>, RouteError> {
    match step_until(shards, shard, command, deadline_ms).await? {
        Some(Outcome::Leg(outcome)) => Ok(Some(outcome)),
        Some(other) => Err(unexpected(&other)),
        None => Ok(None),
    }
}

/// Sends one step until its shard answers, or until `deadline_ms` (leader clock) has passed:
/// then `Ok(None)`.
async fn step_until(
    shards: &Shards,
    shard: ShardId,
    command: Command,
    deadline_ms: u64,
) -> Result<Option<Outcome>, RouteError> {
    retry(shards, shard, command, Some(deadline_ms)).await
}

/// Sends one step until its shard answers; after `STEP_ATTEMPTS_MAX` attempts, the last error
/// (the saga stays running for [`sweep`]).
async fn step(shards: &Shards, shard: ShardId, command: Command) -> Result<Outcome, RouteError> {
    match retry(shards, shard, command, None).await? {
        Some(outcome) => Ok(outcome),
        None => Err(RouteError::Unavailable("no deadline, no answer".into())),
    }
}

/// Bounded exponential backoff with jitter between attempts.
async fn retry(
    shards: &Shards,
    shard: ShardId,
    command: Command,
    deadline_ms: Option<u64>,
) -> Result<Option<Outcome>, RouteError> {
    let mut backoff = STEP_BACKOFF_MIN;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match shards.write(shard, command.clone()).await {
            Ok(outcome) => return Ok(Some(outcome)),
            Err(error) => {
                match deadline_ms {
                    Some(deadline) if shards.now_ms() >= deadline => return Ok(None),
                    None if attempts >= STEP_ATTEMPTS_MAX => return Err(error),
                    _ => {}
                }
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(STEP_BACKOFF_MAX);
            }
        }
    }
}

/// Up to half the delay again, from the clock's low bits (enough to spread retries apart).
fn jitter(delay: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let extra = delay.as_millis() as u64 / 2;
    delay + Duration::from_millis(u64::from(nanos) % extra.max(1))
}

/// Finishes (or redresses) every running saga whose home is `home` and that began at least
/// `older_than_ms` ago; run by the home shard's leader. Returns how many it finished.
pub async fn sweep(shards: &Shards, home: ShardId, older_than_ms: u64) -> usize {
    use futures::StreamExt;
    let now = shards.now_ms();
    let due: Vec<Saga> = shards
        .running_sagas(home, SWEEP_BATCH_MAX)
        .into_iter()
        // Started (or, for a decided pending transfer, restarted) that long ago.
        .filter(|saga| {
            let started = saga.deadline_ms.saturating_sub(ledger::SAGA_DEADLINE_MS);
            started.saturating_add(older_than_ms) <= now
        })
        .collect();
    futures::stream::iter(due)
        .map(|saga| async move {
            let result = drive(shards, &saga).await;
            if let Err(error) = &result {
                tracing::warn!(id = %saga.request.id, %error, "saga still not finished");
            }
            result.is_ok()
        })
        .buffer_unordered(SWEEP_CONCURRENCY)
        .filter(|finished| std::future::ready(*finished))
        .count()
        .await
}

fn unexpected(outcome: &Outcome) -> RouteError {
    RouteError::Unavailable(format!("unexpected outcome {outcome:?}"))
}

fn unexpected_leg(outcome: &LegOutcome) -> RouteError {
    RouteError::Unavailable(format!("unexpected leg outcome {outcome:?}"))
}

//! Cross-shard transfers as sagas over separate ledgers (one per shard): the happy path,
//! redress when the payee's side refuses, fences against late steps, idempotent retries, and a
//! property: whatever order, duplication and loss the steps suffer, no money is created, every
//! shard balances, and every finished saga took effect exactly as its answer says.

use std::collections::BTreeMap;

use ledger::*;
use proptest::prelude::*;

const T0: u64 = 1_795_640_645_000;
/// Shard 0 holds the payers, shard 1 the payees, shard 2 is the home of the ids.
const PAYER: &str = "+254700000001";
const PAYEE: &str = "+254700000002";
const NOBODY: &str = "+254799999999";

fn kes() -> Currency {
    Currency::parse("KES").expect("valid currency")
}

fn acc(text: &str) -> AccountId {
    AccountId::parse(text).expect("valid account id")
}

fn tid(text: &str) -> TransferId {
    TransferId::parse(text).expect("valid transfer id")
}

fn p2p(id: &str, from: &str, to: &str, amount: u64) -> TransferRequest {
    TransferRequest {
        id: tid(id),
        kind: TransferKind::P2p,
        from: acc(from),
        to: acc(to),
        amount,
        currency: kes(),
        memo: String::new(),
        pending: false,
        timeout_s: 300,
    }
}

/// Three shards: payer's, payee's and home; accounts opened and funded on their shard.
struct World {
    shards: [Ledger; 3],
    index: u64,
}

impl World {
    fn new(payers: &[&str], payees: &[&str], funds: u64) -> World {
        let mut world = World {
            shards: [Ledger::new(kes()), Ledger::new(kes()), Ledger::new(kes())],
            index: 0,
        };
        for (shard, ids) in [(0, payers), (1, payees)] {
            for id in ids {
                let new = NewAccount {
                    id: acc(id),
                    kind: AccountKind::Customer,
                    name: String::new(),
                    currency: kes(),
                };
                world.apply(shard, Command::CreateAccount(new));
                let fund = TransferRequest {
                    kind: TransferKind::Issue,
                    ..p2p(
                        &format!("fund-{}", id.trim_start_matches('+')),
                        "float",
                        id,
                        funds,
                    )
                };
                world.apply(shard, Command::Transfer(fund));
            }
        }
        world
    }

    fn apply(&mut self, shard: usize, command: Command) -> Outcome {
        self.index += 1;
        let at = At {
            ms: T0 + self.index,
            log_index: self.index,
            log_pos: 0,
        };
        let outcome = self.shards[shard].apply_at(&command, at);
        self.shards[shard].check_invariants();
        outcome
    }

    fn leg(&mut self, shard: usize, command: Command) -> LegOutcome {
        match self.apply(shard, command) {
            Outcome::Leg(outcome) => outcome,
            other => panic!("a leg command answers a leg outcome, not {other:?}"),
        }
    }

    fn saga(&mut self, command: Command) -> SagaOutcome {
        match self.apply(2, command) {
            Outcome::Saga(outcome) => outcome,
            other => panic!("a saga command answers a saga outcome, not {other:?}"),
        }
    }

    fn begin(&mut self, request: &TransferRequest) -> SagaOutcome {
        self.saga(Command::SagaBegin {
            request: request.clone(),
            payer_shard: ShardId(0),
            payee_shard: ShardId(1),
        })
    }

    fn account(&self, shard: usize, id: &str) -> Account {
        self.shards[shard]
            .account(&acc(id))
            .expect("account exists")
            .clone()
    }

    /// Every shard balances, so the cluster does; returns the sum of the float slices.
    fn float_total(&self) -> i64 {
        let mut total = 0;
        for shard in &self.shards {
            assert_eq!(shard.summary().balance_sum, 0);
            total += shard.account(&AccountId::float()).expect("float").balance;
        }
        total
    }
}

#[test]
fn a_hold_counts_in_the_payers_daily_limit_and_its_void_gives_it_back() {
    // Goal: the payer's shard applies the daily limit to a cross-shard transfer when it holds
    // (and tells the room left); a hold past the room is rejected; a redress void gives the
    // room back; a post counts nothing more.
    let mut world = World::new(&[PAYER], &[PAYEE], 10_000);
    let mut tariff = Tariff::default();
    tariff.daily_out_max.insert(AccountKind::Customer, 3_000);
    world.apply(0, Command::SetTariff(tariff));
    let first = p2p("d1", PAYER, PAYEE, 2_000);
    assert!(matches!(
        world.leg(0, Command::Hold(first.clone())),
        LegOutcome::Held {
            daily_room: Some(1_000),
            ..
        }
    ));
    let second = p2p("d2", PAYER, PAYEE, 1_500);
    assert_eq!(
        world.leg(0, Command::Hold(second)),
        LegOutcome::Rejected(Code::LimitExceeded)
    );
    assert_eq!(
        world.leg(0, Command::VoidHold(tid("d1"))),
        LegOutcome::Voided
    );
    let third = p2p("d3", PAYER, PAYEE, 2_500);
    assert!(matches!(
        world.leg(0, Command::Hold(third)),
        LegOutcome::Held {
            daily_room: Some(500),
            ..
        }
    ));
    assert!(matches!(
        world.leg(0, Command::PostHold(tid("d3"))),
        LegOutcome::Posted {
            daily_room: Some(500),
            ..
        }
    ));
    let payer = world.account(0, PAYER);
    assert_eq!(world.shards[0].out_today(&payer), 2_500);
}

#[test]
fn cross_shard_transfer_moves_money_once_through_the_float_slices() {
    // Goal: hold, credit, post, finish; each shard sums to 0 after every step, the payer is
    // debited amount + fee on its shard, the payee credited on its shard, the float slices
    // carry the amount between them, and the answer matches what the legs reported.
    let mut world = World::new(&[PAYER], &[PAYEE], 10_000);
    let mut tariff = Tariff::default();
    tariff.fees.insert(
        TransferKind::P2p,
        vec![FeeBand {
            min: 1,
            max: 1_000_000,
            fee: 7,
        }],
    );
    world.apply(0, Command::SetTariff(tariff));
    let floats_before = world.float_total();
    let request = p2p("x1", PAYER, PAYEE, 2_500);
    assert!(matches!(world.begin(&request), SagaOutcome::Running(_)));
    assert!(matches!(
        world.leg(0, Command::Hold(request.clone())),
        LegOutcome::Held { fee: 7, .. }
    ));
    let payer = world.account(0, PAYER);
    assert_eq!(
        (payer.balance, payer.pending_out, payer.available()),
        (10_000, 2_507, 7_493)
    );
    let credited = world.leg(1, Command::Credit(request.clone()));
    let LegOutcome::Credited { to_balance, .. } = credited else {
        panic!("credit answered {credited:?}")
    };
    assert_eq!(to_balance, 12_500);
    let posted = world.leg(0, Command::PostHold(tid("x1")));
    let LegOutcome::Posted {
        from_balance, fee, ..
    } = posted
    else {
        panic!("post answered {posted:?}")
    };
    assert_eq!((from_balance, fee), (7_493, 7));
    let payer = world.account(0, PAYER);
    assert_eq!((payer.balance, payer.pending_out), (7_493, 0));
    assert_eq!(world.account(0, "fees").balance, 7);
    assert_eq!(
        world.float_total(),
        floats_before,
        "the float slices only carry money"
    );
    let answer = TransferOutcome::Accepted(Accepted {
        id: tid("x1"),
        status: TransferStatus::Completed,
        amount: 2_500,
        fee,
        from_balance,
        to_balance,
        daily_room: None,
        log_index: 0,
        log_pos: 0,
    });
    let finished = world.saga(Command::SagaFinish {
        id: tid("x1"),
        answer: answer.clone(),
    });
    assert_eq!(finished, SagaOutcome::Finished(answer.clone()));
    // A retry of the whole request now gets the recorded answer; the record reads completed.
    assert_eq!(world.begin(&request), SagaOutcome::Finished(answer));
    let view = match world.shards[2].query(&Query::Transfer(tid("x1"))) {
        Answer::Transfer(Some(view)) => view,
        other => panic!("lookup answered {other:?}"),
    };
    assert_eq!((view.status, view.fee), (TransferStatus::Completed, 7));
    assert_eq!(world.shards[2].running_sagas().count(), 0);
}

#[test]
fn refused_credit_is_redressed_by_voiding_the_hold() {
    // Goal: the payee's side refuses (no such account): the hold is voided, nothing moved.
    let mut world = World::new(&[PAYER], &[PAYEE], 10_000);
    let request = p2p("x2", PAYER, NOBODY, 900);
    world.begin(&request);
    assert!(matches!(
        world.leg(0, Command::Hold(request.clone())),
        LegOutcome::Held { fee: 0, .. }
    ));
    assert_eq!(
        world.leg(1, Command::Credit(request.clone())),
        LegOutcome::Rejected(Code::AccountNotFound)
    );
    assert_eq!(
        world.leg(0, Command::VoidHold(tid("x2"))),
        LegOutcome::Voided
    );
    let payer = world.account(0, PAYER);
    assert_eq!((payer.balance, payer.pending_out), (10_000, 0));
    // Retried steps answer as before; a post after the void is refused.
    assert_eq!(
        world.leg(1, Command::Credit(request.clone())),
        LegOutcome::Rejected(Code::AccountNotFound)
    );
    assert_eq!(
        world.leg(0, Command::VoidHold(tid("x2"))),
        LegOutcome::Voided
    );
    assert_eq!(
        world.leg(0, Command::PostHold(tid("x2"))),
        LegOutcome::Refused(Code::TransferNotPending)
    );
    assert_eq!(world.leg(0, Command::Hold(request)), LegOutcome::Voided);
}

#[test]
fn fences_stop_late_steps() {
    // Goal: a coordinator that gave up fences the legs; a hold or credit arriving afterwards
    // (a proposal that timed out but committed later) takes no effect.
    let mut world = World::new(&[PAYER], &[PAYEE], 10_000);
    let request = p2p("x3", PAYER, PAYEE, 500);
    world.begin(&request);
    assert_eq!(
        world.leg(1, Command::CancelCredit(tid("x3"))),
        LegOutcome::Cancelled
    );
    assert_eq!(
        world.leg(0, Command::VoidHold(tid("x3"))),
        LegOutcome::Voided
    );
    assert_eq!(
        world.leg(1, Command::Credit(request.clone())),
        LegOutcome::Cancelled
    );
    assert_eq!(world.leg(0, Command::Hold(request)), LegOutcome::Voided);
    assert_eq!(world.account(0, PAYER).available(), 10_000);
    assert_eq!(world.account(1, PAYEE).balance, 10_000);
    // A cancel after the credit reports the credit: the coordinator must post, not void.
    let request = p2p("x4", PAYER, PAYEE, 500);
    world.begin(&request);
    world.leg(0, Command::Hold(request.clone()));
    world.leg(1, Command::Credit(request));
    assert!(matches!(
        world.leg(1, Command::CancelCredit(tid("x4"))),
        LegOutcome::Credited {
            to_balance: 10_500,
            ..
        }
    ));
}

#[test]
fn ids_are_claimed_by_their_home_shard() {
    // Goal: the home shard refuses another body under a used id, and a leg refuses a body that
    // differs from the one it recorded; insufficient funds is recorded on the payer's shard.
    let mut world = World::new(&[PAYER], &[PAYEE], 1_000);
    let request = p2p("x5", PAYER, PAYEE, 5_000);
    world.begin(&request);
    let other = p2p("x5", PAYER, PAYEE, 6_000);
    assert_eq!(world.begin(&other), SagaOutcome::Refused(Code::IdConflict));
    assert_eq!(
        world.leg(0, Command::Hold(request.clone())),
        LegOutcome::Rejected(Code::InsufficientFunds)
    );
    assert_eq!(
        world.leg(0, Command::Hold(other)),
        LegOutcome::Refused(Code::IdConflict)
    );
    assert_eq!(
        world.saga(Command::SagaFinish {
            id: tid("nope"),
            answer: TransferOutcome::Refused {
                id: tid("nope"),
                code: Code::IdConflict
            }
        }),
        SagaOutcome::Refused(Code::TransferNotFound)
    );
    // A local transfer on the home shard cannot take a saga's id either.
    let local = TransferRequest {
        kind: TransferKind::Issue,
        ..p2p("x5", "float", PAYER, 1)
    };
    assert!(matches!(
        world.apply(2, Command::Transfer(local)),
        Outcome::Transfer(TransferOutcome::Refused {
            code: Code::IdConflict,
            ..
        })
    ));
}

/// What can happen to one saga step: applied once, applied twice (lost answer, retried),
/// or not applied in time (the coordinator gives up and redresses; the step may land later).
#[derive(Debug, Clone, Copy)]
enum Fate {
    Once,
    Twice,
    Late,
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![6 => Just(Fate::Once), 2 => Just(Fate::Twice), 1 => Just(Fate::Late)]
}

const PAYERS: [&str; 3] = ["+254700000011", "+254700000012", "+254700000013"];
const PAYEES: [&str; 3] = ["+254700000021", "+254700000022", "+254799999998"];

/// Runs one saga the way a coordinator does, with the given fates for (hold, credit, post).
/// Returns whether the money moved (the answer it recorded).
fn drive(world: &mut World, request: &TransferRequest, fates: [Fate; 3]) -> bool {
    let id = request.id.clone();
    let mut late = Vec::new();
    world.begin(request);
    let mut step = |world: &mut World, shard: usize, command: Command, fate: Fate| match fate {
        Fate::Once => Some(world.leg(shard, command)),
        Fate::Twice => {
            let first = world.leg(shard, command.clone());
            let again = world.leg(shard, command);
            assert_eq!(first, again, "a retried step answers as the first time");
            Some(again)
        }
        Fate::Late => {
            late.push((shard, command));
            None
        }
    };
    let held = step(world, 0, Command::Hold(request.clone()), fates[0]);
    let moved = match held {
        Some(LegOutcome::Held { .. }) => {
            match step(world, 1, Command::Credit(request.clone()), fates[1]) {
                Some(LegOutcome::Credited { .. }) => {
                    // Posting must eventually happen: a lost post is simply retried.
                    let fate = match fates[2] {
                        Fate::Late => Fate::Twice,
                        other => other,
                    };
                    let posted = step(world, 0, Command::PostHold(id.clone()), fate);
                    assert!(matches!(posted, Some(LegOutcome::Posted { .. })));
                    true
                }
                Some(_) => {
                    assert_eq!(
                        world.leg(0, Command::VoidHold(id.clone())),
                        LegOutcome::Voided
                    );
                    false
                }
                None => {
                    // Gave up on the credit: fence it; if it had landed, post instead.
                    match world.leg(1, Command::CancelCredit(id.clone())) {
                        LegOutcome::Credited { .. } => {
                            world.leg(0, Command::PostHold(id.clone()));
                            true
                        }
                        _ => {
                            world.leg(0, Command::VoidHold(id.clone()));
                            false
                        }
                    }
                }
            }
        }
        Some(_) => false,
        None => {
            // Gave up on the hold: fence the credit first, then the hold (a hold that landed
            // is released by the void).
            assert_eq!(
                world.leg(1, Command::CancelCredit(id.clone())),
                LegOutcome::Cancelled
            );
            world.leg(0, Command::VoidHold(id.clone()));
            false
        }
    };
    // The answer's content is the coordinator's business; here only finishing matters.
    let answer = TransferOutcome::Rejected {
        id: id.clone(),
        code: Code::PayeeUnreachable,
        log_index: 0,
        log_pos: 0,
    };
    world.saga(Command::SagaFinish { id, answer });
    // The late steps land after the coordinator finished; they must change nothing.
    for (shard, command) in late {
        world.leg(shard, command);
    }
    moved
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sagas_never_create_money(
        sagas in proptest::collection::vec((0..3usize, 0..3usize, 1..3_000u64, [fate(), fate(), fate()]), 1..40)
    ) {
        let mut world = World::new(&PAYERS, &PAYEES[..2], 5_000);
        let floats = world.float_total();
        let mut expected: BTreeMap<String, i64> = BTreeMap::new();
        for id in PAYERS.iter().chain(&PAYEES[..2]) {
            expected.insert((*id).to_string(), 5_000);
        }
        for (n, (payer, payee, amount, fates)) in sagas.into_iter().enumerate() {
            let request = p2p(&format!("s{n}"), PAYERS[payer], PAYEES[payee], amount);
            if drive(&mut world, &request, fates) {
                *expected.get_mut(PAYERS[payer]).expect("payer") -= i64::try_from(amount).unwrap();
                *expected.get_mut(PAYEES[payee]).expect("payee") += i64::try_from(amount).unwrap();
            }
        }
        for (id, balance) in &expected {
            let shard = usize::from(!PAYERS.contains(&id.as_str()));
            let account = world.account(shard, id);
            prop_assert_eq!(account.balance, *balance, "balance of {}", id);
            prop_assert_eq!(account.pending_out, 0, "hold left on {}", id);
        }
        prop_assert_eq!(world.float_total(), floats);
        prop_assert_eq!(world.shards[2].running_sagas().count(), 0);
        for shard in &world.shards {
            shard.check_invariants();
            let bytes = postcard::to_allocvec(shard).expect("encodes");
            let restored: Ledger = postcard::from_bytes(&bytes).expect("decodes");
            prop_assert_eq!(&restored, shard);
        }
    }
}

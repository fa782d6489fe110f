//! Cross-shard pending transfers and reversals as sagas, over separate ledgers (one per
//! shard): a pending saga holds, waits, and settles by post, void or expiry exactly once; a
//! reversal claims its original once, moves the money back, and releases the claim when it
//! cannot.

use ledger::*;

const T0: u64 = 1_795_640_645_000;
/// Shard 0 holds the payers, shard 1 the payees, shard 2 is the home of the ids.
const PAYER: &str = "+254700000001";
const PAYEE: &str = "+254700000002";
const HOME: usize = 2;

fn kes() -> Currency {
    Currency::parse("KES").expect("valid currency")
}

fn acc(text: &str) -> AccountId {
    AccountId::parse(text).expect("valid account id")
}

fn tid(text: &str) -> TransferId {
    TransferId::parse(text).expect("valid transfer id")
}

fn p2p(id: &str, amount: u64, pending: bool) -> TransferRequest {
    TransferRequest {
        id: tid(id),
        kind: TransferKind::P2p,
        from: acc(PAYER),
        to: acc(PAYEE),
        amount,
        currency: kes(),
        memo: String::new(),
        pending,
        timeout_s: 60,
    }
}

struct World {
    shards: [Ledger; 3],
    index: u64,
    /// Ledger time, ms past T0.
    clock: u64,
}

impl World {
    fn new(funds: u64) -> World {
        let mut world = World {
            shards: [Ledger::new(kes()), Ledger::new(kes()), Ledger::new(kes())],
            index: 0,
            clock: 0,
        };
        for (shard, id) in [(0, PAYER), (1, PAYEE)] {
            let new = NewAccount {
                id: acc(id),
                kind: AccountKind::Customer,
                name: String::new(),
                currency: kes(),
            };
            world.apply(shard, Command::CreateAccount(new));
            let fund = TransferRequest {
                kind: TransferKind::Issue,
                from: AccountId::float(),
                to: acc(id),
                ..p2p(&format!("fund-{shard}"), funds, false)
            };
            world.apply(shard, Command::Transfer(fund));
        }
        world
    }

    fn apply(&mut self, shard: usize, command: Command) -> Outcome {
        self.index += 1;
        self.clock += 1;
        let at = At {
            ms: T0 + self.clock,
            log_index: self.index,
            log_pos: 0,
        };
        let outcome = self.shards[shard].apply_at(&command, at);
        for ledger in &self.shards {
            ledger.check_invariants();
        }
        outcome
    }

    fn saga(&mut self, command: Command) -> SagaOutcome {
        match self.apply(HOME, command) {
            Outcome::Saga(outcome) => outcome,
            other => panic!("a saga command answers a saga outcome, not {other:?}"),
        }
    }

    fn leg(&mut self, shard: usize, command: Command) -> LegOutcome {
        match self.apply(shard, command) {
            Outcome::Leg(outcome) => outcome,
            other => panic!("a leg command answers a leg outcome, not {other:?}"),
        }
    }

    fn record(&mut self, shard: usize, command: Command) -> Result<TransferView, Code> {
        match self.apply(shard, command) {
            Outcome::Record(record) => record,
            other => panic!("answers a record, not {other:?}"),
        }
    }

    fn view(&self, id: &str) -> TransferView {
        match self.shards[HOME].query(&Query::Transfer(tid(id))) {
            Answer::Transfer(Some(view)) => view,
            other => panic!("lookup of {id} answered {other:?}"),
        }
    }

    fn balances(&self) -> (i64, i64, i64, i64) {
        let payer = self.shards[0].account(&acc(PAYER)).expect("payer");
        let payee = self.shards[1].account(&acc(PAYEE)).expect("payee");
        (
            payer.balance,
            payer.pending_out,
            payee.balance,
            payee.pending_in,
        )
    }

    fn total(&self) -> i64 {
        self.shards.iter().map(|s| s.summary().balance_sum).sum()
    }

    /// Begins a pending saga, holds on the payer's shard, and records the pending answer.
    fn pending(&mut self, id: &str, amount: u64) -> Saga {
        let request = p2p(id, amount, true);
        let begun = self.saga(Command::SagaBegin {
            request: request.clone(),
            payer_shard: ShardId(0),
            payee_shard: ShardId(1),
        });
        assert!(matches!(begun, SagaOutcome::Running(_)), "{begun:?}");
        let held = self.leg(0, Command::Hold(request.clone()));
        let LegOutcome::Held {
            fee, from_balance, ..
        } = held
        else {
            panic!("hold answered {held:?}")
        };
        let answer = TransferOutcome::Accepted(Accepted {
            id: tid(id),
            status: TransferStatus::Pending,
            amount,
            fee,
            from_balance,
            to_balance: 0,
            daily_room: None,
            log_index: 0,
            log_pos: 0,
        });
        self.saga(Command::SagaFinish {
            id: tid(id),
            answer,
        });
        match self.shards[HOME].query(&Query::Saga(tid(id))) {
            Answer::Saga(Some(saga)) => saga,
            other => panic!("{other:?}"),
        }
    }

    /// A completed cross-shard transfer: begin, hold, credit, post, finish.
    fn completed(&mut self, id: &str, amount: u64) {
        let request = p2p(id, amount, false);
        self.saga(Command::SagaBegin {
            request: request.clone(),
            payer_shard: ShardId(0),
            payee_shard: ShardId(1),
        });
        self.leg(0, Command::Hold(request.clone()));
        self.leg(1, Command::Credit(request));
        let posted = self.leg(0, Command::PostHold(tid(id)));
        let LegOutcome::Posted {
            fee, from_balance, ..
        } = posted
        else {
            panic!("{posted:?}")
        };
        let answer = TransferOutcome::Accepted(Accepted {
            id: tid(id),
            status: TransferStatus::Completed,
            amount,
            fee,
            from_balance,
            to_balance: 0,
            daily_room: None,
            log_index: 0,
            log_pos: 0,
        });
        self.saga(Command::SagaFinish {
            id: tid(id),
            answer,
        });
    }
}

#[test]
fn pending_saga_holds_waits_and_posts_once() {
    // Goal: the hold shows on the payer, the record reads pending with its deadline until a
    // post is decided; the post credits and debits once; a later void finds it decided.
    let mut world = World::new(10_000);
    let saga = world.pending("p1", 3_000);
    assert!(saga.is_waiting() && !saga.is_running());
    assert_eq!(world.balances(), (10_000, 3_000, 10_000, 0));
    let view = world.view("p1");
    assert_eq!(view.status, TransferStatus::Pending);
    assert!(view.expires_at.is_some(), "{view:?}");
    assert_eq!(world.shards[HOME].summary().pending, 1);
    assert_eq!(world.shards[HOME].summary().sagas_running, 0);

    let decided = world.saga(Command::SagaDecide {
        id: tid("p1"),
        post: true,
    });
    let SagaOutcome::Decided(saga) = decided else {
        panic!("{decided:?}")
    };
    assert_eq!(saga.decision, Some(true));
    assert!(saga.is_running(), "a decided saga runs until it settles");
    assert_eq!(world.shards[HOME].summary().sagas_running, 1);
    // A void after the post decision changes nothing.
    let again = world.saga(Command::SagaDecide {
        id: tid("p1"),
        post: false,
    });
    assert!(matches!(again, SagaOutcome::Decided(ref s) if s.decision == Some(true)));

    let request = p2p("p1", 3_000, true);
    assert!(matches!(
        world.leg(1, Command::Credit(request)),
        LegOutcome::Credited { .. }
    ));
    assert!(matches!(
        world.leg(0, Command::PostHold(tid("p1"))),
        LegOutcome::Posted { .. }
    ));
    let closed = world.saga(Command::SagaClose {
        id: tid("p1"),
        status: TransferStatus::Completed,
        code: None,
    });
    assert!(matches!(closed, SagaOutcome::Decided(ref s) if !s.is_running()));
    assert_eq!(world.balances(), (7_000, 0, 13_000, 0));
    assert_eq!(world.view("p1").status, TransferStatus::Completed);
    assert_eq!(world.shards[HOME].summary().sagas_running, 0);
    assert_eq!(world.shards[HOME].summary().pending, 0);
    // The first close stays.
    let reclosed = world.saga(Command::SagaClose {
        id: tid("p1"),
        status: TransferStatus::Voided,
        code: None,
    });
    assert!(matches!(reclosed, SagaOutcome::Decided(ref s)
        if s.settled == Some((TransferStatus::Completed, None))));
    assert_eq!(world.total(), 0);
}

#[test]
fn pending_saga_expires_into_a_void_once_and_a_late_post_loses() {
    // Goal: the home shard's expiry (the timer's ExpirePending) decides void once; a post
    // after it finds the void; a post at the deadline itself loses to expiry too.
    let mut world = World::new(10_000);
    world.pending("p2", 2_000);
    world.pending("p3", 1_000);
    assert_eq!(world.shards[HOME].summary().pending, 2);
    let next = world.shards[HOME]
        .next_expiry_ms()
        .expect("the pending sagas' deadline drives the timer");
    // Before the deadline nothing expires.
    let early = world.apply(HOME, Command::ExpirePending);
    assert_eq!(early, Outcome::Expired { voided: 0 });
    // Jump to the deadline of both.
    world.clock = next - T0 + 60_000;
    let expired = world.apply(HOME, Command::ExpirePending);
    assert_eq!(expired, Outcome::Expired { voided: 2 });
    let again = world.apply(HOME, Command::ExpirePending);
    assert_eq!(again, Outcome::Expired { voided: 0 }, "expiry decides once");
    let late = world.saga(Command::SagaDecide {
        id: tid("p2"),
        post: true,
    });
    assert!(matches!(late, SagaOutcome::Decided(ref s) if s.decision == Some(false)));
    assert_eq!(world.shards[HOME].summary().sagas_running, 2);
    for id in ["p2", "p3"] {
        assert_eq!(
            world.leg(1, Command::CancelCredit(tid(id))),
            LegOutcome::Cancelled
        );
        assert_eq!(world.leg(0, Command::VoidHold(tid(id))), LegOutcome::Voided);
        world.saga(Command::SagaClose {
            id: tid(id),
            status: TransferStatus::Voided,
            code: None,
        });
        assert_eq!(world.view(id).status, TransferStatus::Voided);
    }
    assert_eq!(world.balances(), (10_000, 0, 10_000, 0));
    assert_eq!(world.shards[HOME].summary().sagas_running, 0);

    // A post that arrives at the deadline: expiry wins.
    let saga = world.pending("p4", 500);
    world.clock = saga.expires_at_ms.expect("pending") - T0 - 1;
    let at_deadline = world.saga(Command::SagaDecide {
        id: tid("p4"),
        post: true,
    });
    assert!(matches!(at_deadline, SagaOutcome::Decided(ref s) if s.decision == Some(false)));
    assert_eq!(world.total(), 0);
}

#[test]
fn decisions_need_a_waiting_pending_saga() {
    // Goal: no saga, a completed saga, or a saga not yet answered cannot be decided.
    let mut world = World::new(10_000);
    assert_eq!(
        world.saga(Command::SagaDecide {
            id: tid("nope"),
            post: true
        }),
        SagaOutcome::Refused(Code::TransferNotFound)
    );
    world.completed("c1", 100);
    assert_eq!(
        world.saga(Command::SagaDecide {
            id: tid("c1"),
            post: true
        }),
        SagaOutcome::Refused(Code::TransferNotPending)
    );
    world.saga(Command::SagaBegin {
        request: p2p("r1", 100, true),
        payer_shard: ShardId(0),
        payee_shard: ShardId(1),
    });
    assert_eq!(
        world.saga(Command::SagaDecide {
            id: tid("r1"),
            post: false
        }),
        SagaOutcome::Refused(Code::TransferNotPending)
    );
    assert_eq!(
        world.saga(Command::SagaClose {
            id: tid("c1"),
            status: TransferStatus::Completed,
            code: None
        }),
        SagaOutcome::Refused(Code::TransferNotPending)
    );
}

fn reversal(id: &str, original: &str, amount: u64) -> (TransferRequest, Reverses) {
    let request = TransferRequest {
        id: tid(id),
        kind: TransferKind::Reversal,
        from: acc(PAYEE),
        to: acc(PAYER),
        amount,
        currency: kes(),
        memo: String::new(),
        pending: false,
        timeout_s: 300,
    };
    let reverses = Reverses {
        request: ReversalRequest {
            id: tid(id),
            original: tid(original),
            reason: "mistaken payment".into(),
        },
        record_shard: ShardId(HOME as u32),
        claim: true,
    };
    (request, reverses)
}

#[test]
fn reversal_of_a_cross_shard_transfer_claims_once_and_moves_the_money_back() {
    // Goal: the reversal claims the original on its home shard (a second reversal is refused
    // already_reversed), the legs move the amount back (the fee stays with `fees`), and after
    // the settle the original reads reversed, linked both ways.
    let mut world = World::new(10_000);
    world.completed("t1", 4_000);
    assert_eq!(world.balances(), (6_000, 0, 14_000, 0));
    let (request, reverses) = reversal("rv1", "t1", 4_000);
    let begun = world.saga(Command::ReversalBegin {
        request: request.clone(),
        payer_shard: ShardId(1),
        payee_shard: ShardId(0),
        reverses: reverses.clone(),
    });
    assert!(matches!(begun, SagaOutcome::Running(_)), "{begun:?}");
    // The same id with another original is another body.
    let (_, other) = reversal("rv1", "t9", 4_000);
    assert_eq!(
        world.saga(Command::ReversalBegin {
            request: request.clone(),
            payer_shard: ShardId(1),
            payee_shard: ShardId(0),
            reverses: other,
        }),
        SagaOutcome::Refused(Code::IdConflict)
    );
    let claim = |by: &str| Command::ClaimReversal {
        original: tid("t1"),
        by: tid(by),
    };
    assert!(world.record(HOME, claim("rv1")).is_ok());
    assert!(
        world.record(HOME, claim("rv1")).is_ok(),
        "a claim is idempotent"
    );
    assert_eq!(world.record(HOME, claim("rv2")), Err(Code::AlreadyReversed));
    assert!(matches!(
        world.leg(1, Command::Hold(request.clone())),
        LegOutcome::Held { fee: 0, .. }
    ));
    assert!(matches!(
        world.leg(0, Command::Credit(request.clone())),
        LegOutcome::Credited { .. }
    ));
    assert!(matches!(
        world.leg(1, Command::PostHold(tid("rv1"))),
        LegOutcome::Posted { fee: 0, .. }
    ));
    let settled = world
        .record(
            HOME,
            Command::SettleReversal {
                original: tid("t1"),
                by: tid("rv1"),
                applied: true,
            },
        )
        .expect("settled");
    assert_eq!(settled.status, TransferStatus::Reversed);
    assert_eq!(settled.reversed_by, Some(tid("rv1")));
    assert_eq!(world.balances(), (10_000, 0, 10_000, 0));
    assert_eq!(world.record(HOME, claim("rv2")), Err(Code::AlreadyReversed));
    let answer = TransferOutcome::Accepted(Accepted {
        id: tid("rv1"),
        status: TransferStatus::Completed,
        amount: 4_000,
        fee: 0,
        from_balance: 10_000,
        to_balance: 10_000,
        daily_room: None,
        log_index: 0,
        log_pos: 0,
    });
    world.saga(Command::SagaFinish {
        id: tid("rv1"),
        answer,
    });
    let view = world.view("rv1");
    assert_eq!(
        (view.kind, view.status, view.reverses),
        (
            TransferKind::Reversal,
            TransferStatus::Completed,
            Some(tid("t1"))
        )
    );
    // A reversal of a reversal is not allowed.
    let (_, _) = reversal("rv3", "rv1", 4_000);
    assert_eq!(
        world.record(
            HOME,
            Command::ClaimReversal {
                original: tid("rv1"),
                by: tid("rv3")
            }
        ),
        Err(Code::NotReversible)
    );
    assert_eq!(world.total(), 0);
}

#[test]
fn a_reversal_that_cannot_move_the_money_releases_its_claim() {
    // Goal: the payee spent the money, so the reversal's hold is rejected; settling it as not
    // applied frees the original for a later reversal, which then succeeds.
    let mut world = World::new(1_000);
    world.completed("t2", 900);
    // The payee pays 1_800 of its 1_900 away on its own shard.
    let spend = TransferRequest {
        kind: TransferKind::Redeem,
        from: acc(PAYEE),
        to: AccountId::float(),
        ..p2p("spend", 1_800, false)
    };
    world.apply(1, Command::Transfer(spend));
    let (request, reverses) = reversal("rv4", "t2", 900);
    world.saga(Command::ReversalBegin {
        request: request.clone(),
        payer_shard: ShardId(1),
        payee_shard: ShardId(0),
        reverses,
    });
    let claim = Command::ClaimReversal {
        original: tid("t2"),
        by: tid("rv4"),
    };
    assert!(world.record(HOME, claim).is_ok());
    assert_eq!(
        world.leg(1, Command::Hold(request)),
        LegOutcome::Rejected(Code::InsufficientFunds)
    );
    let released = world
        .record(
            HOME,
            Command::SettleReversal {
                original: tid("t2"),
                by: tid("rv4"),
                applied: false,
            },
        )
        .expect("released");
    assert_eq!(
        (released.status, released.reversed_by),
        (TransferStatus::Completed, None)
    );
    let again = Command::ClaimReversal {
        original: tid("t2"),
        by: tid("rv5"),
    };
    assert!(world.record(HOME, again).is_ok(), "the claim was released");
    assert_eq!(world.total(), 0);
}

#[test]
fn a_local_reverse_may_carry_its_own_saga_id_but_no_other() {
    // Goal: when a reversal's id lives on the shard holding the original's money, the saga's
    // money step (a local Reverse under the same id) is accepted; any other body under that
    // id is refused id_conflict.
    let mut world = World::new(10_000);
    // A transfer local to shard 1 (float issues to the payee), reversed with an id homed
    // there as well.
    let issue = TransferRequest {
        kind: TransferKind::Issue,
        from: AccountId::float(),
        to: acc(PAYEE),
        ..p2p("i1", 700, false)
    };
    world.apply(1, Command::Transfer(issue));
    let request = TransferRequest {
        id: tid("rv6"),
        kind: TransferKind::Reversal,
        from: acc(PAYEE),
        to: AccountId::float(),
        amount: 700,
        currency: kes(),
        memo: String::new(),
        pending: false,
        timeout_s: 300,
    };
    let reverses = Reverses {
        request: ReversalRequest {
            id: tid("rv6"),
            original: tid("i1"),
            reason: String::new(),
        },
        record_shard: ShardId(1),
        claim: false,
    };
    let begun = world.apply(
        1,
        Command::ReversalBegin {
            request,
            payer_shard: ShardId(1),
            payee_shard: ShardId(1),
            reverses: reverses.clone(),
        },
    );
    assert!(
        matches!(begun, Outcome::Saga(SagaOutcome::Running(_))),
        "{begun:?}"
    );
    let other = ReversalRequest {
        reason: "another body".into(),
        ..reverses.request.clone()
    };
    assert!(matches!(
        world.apply(1, Command::Reverse(other)),
        Outcome::Transfer(TransferOutcome::Refused {
            code: Code::IdConflict,
            ..
        })
    ));
    assert!(matches!(
        world.apply(1, Command::Reverse(reverses.request)),
        Outcome::Transfer(TransferOutcome::Accepted(_))
    ));
    assert_eq!(world.balances().2, 10_000);
    assert_eq!(world.total(), 0);
}

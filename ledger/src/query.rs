//! Read queries against the ledger, answered from one replica's applied state (the node runs
//! them after a linearizable barrier on the shard's leader).

use serde::{Deserialize, Serialize};

use crate::day::{Day, DayClose, Schedule};
use crate::ids::{AccountId, TransferId};
use crate::limits::STATEMENT_LIMIT_MAX;
use crate::saga::{Leg, Saga};
use crate::state::Ledger;
use crate::views::{AccountView, EntryView, Summary, TransferView};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    Account(AccountId),
    Statement {
        id: AccountId,
        limit: usize,
    },
    Transfer(TransferId),
    Summary,
    /// Accounts in id order after `after`, at most `limit`.
    Accounts {
        after: Option<AccountId>,
        limit: usize,
    },
    /// A saga whose home is this shard.
    Saga(TransferId),
    /// This shard's leg of a cross-shard transfer.
    Leg(TransferId),
    /// The business-day schedule, the open day and the last `limit` closed days (newest
    /// first).
    Days {
        limit: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    Account(Option<AccountView>),
    Statement(Option<Vec<EntryView>>),
    Transfer(Option<TransferView>),
    Summary(Summary),
    Accounts(Vec<AccountView>),
    Saga(Option<Saga>),
    Leg(Option<Leg>),
    Days {
        schedule: Schedule,
        open: Day,
        closes: Vec<DayClose>,
    },
}

impl Ledger {
    pub fn query(&self, query: &Query) -> Answer {
        match query {
            Query::Account(id) => Answer::Account(self.account(id).map(AccountView::of)),
            Query::Statement { id, limit } => {
                Answer::Statement(self.statement(id, (*limit).min(STATEMENT_LIMIT_MAX)))
            }
            Query::Transfer(id) => Answer::Transfer(
                self.transfer(id)
                    .map(TransferView::of)
                    .or_else(|| self.saga(id).map(TransferView::of_saga)),
            ),
            Query::Saga(id) => Answer::Saga(self.saga(id).cloned()),
            Query::Leg(id) => Answer::Leg(self.leg(id).cloned()),
            Query::Days { limit } => Answer::Days {
                schedule: self.schedule(),
                open: self.day().clone(),
                closes: self.closes().iter().rev().take(*limit).cloned().collect(),
            },
            Query::Summary => Answer::Summary(self.summary()),
            Query::Accounts { after, limit } => {
                let limit = (*limit).min(STATEMENT_LIMIT_MAX);
                let views = self
                    .accounts_after(after.as_ref())
                    .take(limit)
                    .map(AccountView::of)
                    .collect();
                Answer::Accounts(views)
            }
        }
    }
}

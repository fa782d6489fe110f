//! Read queries against the ledger, answered from one replica's applied state (the node runs
//! them after a linearizable barrier on the shard's leader).

use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, TransferId};
use crate::limits::STATEMENT_LIMIT_MAX;
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    Account(Option<AccountView>),
    Statement(Option<Vec<EntryView>>),
    Transfer(Option<TransferView>),
    Summary(Summary),
    Accounts(Vec<AccountView>),
}

impl Ledger {
    pub fn query(&self, query: &Query) -> Answer {
        match query {
            Query::Account(id) => Answer::Account(self.account(id).map(AccountView::of)),
            Query::Statement { id, limit } => {
                Answer::Statement(self.statement(id, (*limit).min(STATEMENT_LIMIT_MAX)))
            }
            Query::Transfer(id) => Answer::Transfer(self.transfer(id).map(TransferView::of)),
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

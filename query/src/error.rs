//! The query error type. Variants say who caused them: the caller (unknown record, a limit or
//! cursor out of range) or the ledger underneath (storage, corruption).

use provledger_ledger::LedgerError;
use provledger_signer::Hash;

/// Everything a lineage or listing query can refuse or fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The caller named a record that is not in the log as of the tree size asked for, or that
    /// belongs to another tenant.
    #[error("record {id} not found in the first {tree_size} entries of the log")]
    NotFound {
        /// The id asked for.
        id: Hash,
        /// The tree size the query ran against.
        tree_size: u64,
    },
    /// The caller asked for more than a query may return or walk.
    #[error("{what} is {value}, at most {max} is allowed")]
    LimitTooLarge {
        /// Which parameter (`depth`, `max_nodes`, `first`).
        what: &'static str,
        /// The value asked for.
        value: u64,
        /// The largest accepted value.
        max: u64,
    },
    /// The caller asked for the log as of a tree size it has not reached yet.
    #[error("as-of tree size {as_of} is beyond the current tree size {tree_size}")]
    AsOfAhead {
        /// The tree size asked for.
        as_of: u64,
        /// The current tree size.
        tree_size: u64,
    },
    /// The caller sent a cursor this API did not hand out.
    #[error("invalid cursor {0:?}: pass an edge cursor or endCursor from a previous page")]
    InvalidCursor(String),
    /// A stored record cites a hash that is not an earlier record of the log: the store is
    /// damaged (`provledger verify` tells where).
    #[error(
        "corrupt lineage: record {citing} cites {cited}, which is not an earlier record of the log"
    )]
    BrokenLink {
        /// Index of the citing record.
        citing: u64,
        /// The cited hash.
        cited: Hash,
    },
    /// The ledger failed underneath the query.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

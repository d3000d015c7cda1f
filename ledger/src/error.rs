//! The ledger's error type. Variants say who caused them: the caller (bad input), the
//! system (overload, poisoning) or the disk (corruption, I/O).

/// Everything the ledger can refuse or fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The caller sent a record that breaks a rule; the message names the field.
    #[error("invalid record: {field}: {reason}")]
    InvalidRecord {
        /// Dotted path of the offending field, e.g. `records[2].refs[0].ref`.
        field: String,
        /// What is wrong with it, in words a person can act on.
        reason: String,
    },
    /// A `ref` names no record or entity visible to the writer's tenant.
    #[error("unknown reference {reference:?} in {field}: no record or entity of this tenant has that id or name")]
    UnknownRef {
        /// Where the reference sits in the request.
        field: String,
        /// The reference as the caller gave it.
        reference: String,
    },
    /// The encoded leaf would not fit the 65,535-byte entry framing of tlog-tiles.
    #[error("record too large: its leaf encodes to {size} bytes, the limit is {limit}; move content into the payload")]
    LeafTooLarge {
        /// Encoded size.
        size: usize,
        /// Maximum encoded size.
        limit: usize,
    },
    /// The idempotency key was used before with a different record.
    #[error("idempotency key {key:?} was already used for a different record (index {index})")]
    IdempotencyConflict {
        /// The reused key.
        key: String,
        /// Index of the record first appended under it.
        index: u64,
    },
    /// No record has that id (or it belongs to another tenant).
    #[error("record not found")]
    NotFound,
    /// An erasure named a record that was written without a payload: there is nothing to
    /// destroy, and its leaf already holds no content beyond metadata.
    #[error("the record has no payload to erase")]
    NothingToErase,
    /// A leaf index or tree size is outside the current log.
    #[error("{what} {value} is out of range: the tree has {tree_size} entries")]
    OutOfRange {
        /// Which parameter.
        what: &'static str,
        /// The value asked for.
        value: u64,
        /// The current tree size.
        tree_size: u64,
    },
    /// Parameters that are individually fine but inconsistent with each other.
    #[error("invalid range: {0}")]
    InvalidRange(String),
    /// The append queue is full; retry after a short wait.
    #[error("the append queue is full; retry shortly")]
    Pushback,
    /// A previous fsync failed; the ledger refuses writes until it is restarted.
    #[error(
        "the ledger is poisoned after a failed write to disk and refuses appends until restart"
    )]
    Poisoned,
    /// The ledger is shutting down.
    #[error("the ledger is shutting down")]
    ShuttingDown,
    /// A read found a change (an erasure, an approval) whose batch was not published in time.
    #[error("a change this read depends on was not published within {0:?}; retry shortly")]
    NotPublished(std::time::Duration),
    /// Another process holds the data directory.
    #[error("data directory {0} is in use by another process (is the server running?)")]
    InUse(String),
    /// Stored data does not match what it must be.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The ledger could not be set up in this process (not a fault of the data), e.g. its
    /// metrics clash with names already in the caller's registry.
    #[error("set-up failed: {0}")]
    Setup(String),
    /// A key rotation or retirement that would break the chain of keys.
    #[error("key rotation refused: {0}")]
    KeyRotation(String),
    /// The signing step failed.
    #[error("signing failed: {0}")]
    Signing(String),
    /// The data directory's indexes have a layout this build does not know (a newer
    /// provledger wrote them).
    #[error("the data directory's index layout is version {found}, this provledger reads versions up to {supported}: run a newer provledger")]
    IndexLayout {
        /// Layout version stored in the data directory.
        found: u8,
        /// Newest layout version this build reads.
        supported: u8,
    },
    /// The storage engine failed.
    #[error("storage error: {0}")]
    Storage(#[from] fjall::Error),
    /// A file could not be read or written.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl LedgerError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidRecord {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<fjall::LsmError> for LedgerError {
    fn from(e: fjall::LsmError) -> Self {
        Self::Storage(fjall::Error::from(e))
    }
}

//! provledger lineage queries.
//!
//! This crate owns lineage traversal over the ledger's record DAG — upstream to the sources a
//! record cites, downstream to the records that cite it, bounded by depth and node count,
//! filtered by kind and role, as of a tree size — and the filtered, cursor-paginated listings
//! the API serves (records, citations, entity versions), and what changed between two versions
//! of an entity.
//!
//! It must not sign or serve: proofs and checkpoints come from `provledger-ledger` and
//! `provledger-signer`, the wire from `provledger-graphql`. Every function here reads storage
//! and blocks; async callers run it on a blocking pool.
//!
//! ```
//! use provledger_ledger::{Ledger, LedgerConfig, PreparedRecord, RecordInput};
//! use provledger_query::{trace, Direction, TraceOptions};
//! use provledger_signer::SigningKey;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let key = SigningKey::generate("example.com/log")?;
//! let ledger = Ledger::open(&LedgerConfig::new(dir.path()), key, &prometheus::Registry::new())?;
//! let record = |json: &str| -> Result<PreparedRecord, Box<dyn std::error::Error>> {
//!     Ok(PreparedRecord::prepare(serde_json::from_str::<RecordInput>(json)?, "record")?)
//! };
//! ledger.append_blocking(vec![
//!     record(r#"{"kind":"policy","entity":"policy:refunds","actor":{"type":"human","id":"ana"}}"#)?,
//!     record(r#"{"kind":"decision","actor":{"type":"agent","id":"a1"},
//!                "refs":[{"role":"policy","ref":"policy:refunds"}]}"#)?,
//! ])?;
//! let decision = ledger.record_at(1)?.id;
//! let lineage = trace(&ledger, &decision, &TraceOptions::new(Direction::Upstream))?;
//! assert_eq!(lineage.nodes.len(), 2); // the decision itself, then its policy
//! assert_eq!(lineage.edges[0].from, decision);
//! assert_eq!(lineage.edges[0].role, "policy");
//! # Ok(()) }
//! ```

mod approvals;
mod diff;
mod error;
mod lineage;
mod page;
mod records;

// The public surface: traversal, listings, their paging types and the error.
pub use crate::approvals::{
    intervention_stats, pending_approvals, Figures, InterventionStats, STATS_MAX_DECISIONS,
};
pub use crate::diff::{
    changes, diff, json_patch, previous_version, AttributeChange, Changes, PatchKind, PatchOp,
    PayloadChange,
};
pub use crate::error::QueryError;
pub use crate::lineage::{
    trace, Direction, Edge, Limits, Lineage, Node, PayloadState, TraceOptions, DEFAULT_DEPTH,
    DEFAULT_MAX_NODES, MAX_DEPTH, MAX_MAX_NODES,
};
pub use crate::page::{Connection, Cursor, Page, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
pub use crate::records::{cited_by, records, versions, RecordFilter, SCAN_BUDGET};

//! Integration tests of the query crate against the real ledger (fjall in a temp dir, the real
//! writer thread): lineage traversal on a realistic scenario, listings and their paging, and the
//! property that lineage is acyclic because every reference points to an earlier leaf.
//!
//! Modules live in `tests/<name>/mod.rs` so that Cargo builds one test binary.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report

mod scenario;

mod approvals;
mod dag;
mod indexes;
mod lineage;
mod listings;

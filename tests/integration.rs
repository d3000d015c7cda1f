//! End-to-end tests of the `provledger` binary: one test binary with a module per area. Each
//! test starts the real binary on a temporary data directory and talks to it over HTTP or runs
//! its subcommands; checks use independent code (tests/common, tests/verify_receipt.py).
//!
//! Modules live in `tests/<name>/mod.rs` so that Cargo does not build each as a test binary of
//! its own.

mod common;

mod api;
mod approvals;
mod auth;
mod console;
mod crash;
mod diffs;
mod docs;
mod erasure;
mod errors;
mod export;
mod formats;
mod graphql;
mod independent;
mod keys;
mod redaction;
mod subscriptions;
mod verify_cmd;

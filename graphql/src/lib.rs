//! The provledger HTTP server (actix-web).
//!
//! This crate owns the wire: the ingestion endpoint (`POST /v1/records`), proofs, record
//! lookup, the C2SP tlog-tiles static read API (`/checkpoint`, `/tile/…`), health and
//! Prometheus metrics, and the single table that maps library errors to HTTP status codes
//! and JSON error bodies. GraphQL joins it in a later step.
//!
//! It must not hold business logic: validation of records, hashing, proofs and storage
//! belong to `provledger-ledger`; signing to `provledger-signer`.
//!
//! ```no_run
//! use actix_web::{App, HttpServer};
//! use provledger_graphql::{configure, AppState, ServerSettings};
//! # async fn run(ledger: provledger_ledger::Ledger) -> std::io::Result<()> {
//! let state = AppState { ledger, registry: prometheus::Registry::new(), settings: ServerSettings::default().into() };
//! HttpServer::new(move || App::new().configure(configure(state.clone())))
//!     .bind(("127.0.0.1", 8080))?
//!     .run()
//!     .await
//! # }
//! ```

mod error;
mod server;
mod tiles;

// The public surface: the app factory, its state, and the error type handlers return.
pub use crate::error::ApiError;
pub use crate::server::{
    configure, AppState, ReceiptJson, ServerSettings, MAX_RECORDS_PER_REQUEST,
};
pub use crate::tiles::{encode_index, TilePath};

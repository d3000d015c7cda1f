//! The provledger HTTP server (actix-web).
//!
//! This crate owns the wire: the ingestion endpoint (`POST /v1/records`), proofs, record
//! lookup, the C2SP tlog-tiles static read API (`/checkpoint`, `/tile/…`), health and
//! Prometheus metrics, the GraphQL API (`POST /graphql`: records, listings, lineage with
//! proofs against one checkpoint, appends; `GET /graphql`: the GraphiQL console, served from
//! vendored assets; `/graphql/ws`: live subscriptions over graphql-transport-ws), exports
//! streamed from the server (`POST /v1/exports`: bundle, PROV-JSON, DSSE, written by
//! `provledger-exporters`), OpenLineage run events (`POST /api/v1/lineage`), tokens and keys
//! (`/v1/tokens`, `/v1/keys`), erasure (`/v1/records/{id}/erase`, `/v1/erasures`), the one table
//! of who may call what (`auth`: every route and GraphQL root field, checked before routing),
//! and the single place that maps library errors to HTTP status codes and JSON error bodies,
//! and to GraphQL `extensions.code`s.
//!
//! It must not hold business logic: validation of records, hashing, proofs and storage
//! belong to `provledger-ledger`; lineage traversal, filters and paging to
//! `provledger-query`; signing to `provledger-signer`.
//!
//! ```no_run
//! use actix_web::{middleware::from_fn, App, HttpServer};
//! use provledger_graphql::{configure, observe, AppState, HttpMetrics, ServerSettings};
//! # async fn run(ledger: provledger_ledger::Ledger) -> Result<(), Box<dyn std::error::Error>> {
//! let registry = prometheus::Registry::new();
//! let http = HttpMetrics::register(&registry)?;
//! let tokens = provledger_ledger::TokenStore::open(std::path::Path::new("./data"))?.into();
//! let state = AppState { ledger, http, registry, settings: ServerSettings::default().into(), tokens };
//! HttpServer::new(move || App::new().wrap(from_fn(observe)).configure(configure(state.clone())))
//!     .bind(("127.0.0.1", 8080))?
//!     .run()
//!     .await?;
//! # Ok(()) }
//! ```

mod auth;
mod changes;
mod console;
mod erasure;
mod error;
mod exports;
mod hitl;
mod keys;
mod observe;
mod openlineage;
mod receipts;
mod schema;
mod server;
mod subscription;
mod tiles;
mod tokens;

// The public surface: the app factory, its state, and the error type handlers return.
pub use crate::auth::{authorize, Access, Caller, RouteRule, FIELDS, ROUTES};
pub use crate::error::ApiError;
pub use crate::observe::{observe, HttpMetrics};
pub use crate::server::{
    configure, AppState, ReceiptJson, ServerSettings, MAX_RECORDS_PER_REQUEST,
};
pub use crate::tiles::{encode_index, TilePath};

// GraphQL: the schema, its limits, and how a request runs (codes on every error).
pub use crate::schema::{
    build as build_schema, execute as execute_graphql, ProvSchema, MAX_QUERY_COMPLEXITY,
    MAX_QUERY_DEPTH, REFS_COST,
};

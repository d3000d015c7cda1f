//! provledger exports: what leaves the log for someone who does not trust it.
//!
//! This crate owns
//! - **export bundles**: one self-contained JSON file holding a scope of the log (an entity's
//!   versions, an index or time range, chosen records with their upstream lineage), each record
//!   with its leaf, inclusion proof, payload and salt, all proven against one signed checkpoint,
//!   and a manifest signed by the log key that binds the scope, the checkpoint and a digest of
//!   the records' indexes and leaf hashes. Written streaming, in memory that does not grow with
//!   the number of records (a lineage's indexes and a DSSE statement spill to anonymous
//!   temporary files);
//! - **offline verification** of a bundle ([`verify_bundle`]): signatures, every inclusion
//!   proof and payload commitment, refs between the records, the manifest, and optionally
//!   consistency with a later checkpoint. It needs nothing but the bundle and a verifier key;
//! - standard provenance formats: W3C PROV-JSON of a scope ([`export_prov_json`]), and a DSSE
//!   envelope ([`export_dsse`]) carrying an in-toto Statement v1 whose subjects are the records
//!   and whose predicate is the bundle, verified offline by [`verify_dsse`]. [`export_as`]
//!   writes any of the three ([`ExportFormat`]).
//!
//! It must not serve: no HTTP, no GraphQL. The server and the command line call it. The bundle
//! format is documented field by field in `docs/export-format.md`, so that a regulator can write
//! an independent verifier from the document alone.
//!
//! ```
//! use provledger_exporters::{export, verify_bundle, KeyTrust, Scope};
//! use provledger_ledger::{Ledger, LedgerConfig, PreparedRecord, RecordInput};
//! use provledger_signer::SigningKey;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let key = SigningKey::generate("example.com/log")?;
//! let log_key = SigningKey::from_skey(&key.to_skey())?; // the ledger takes its own copy
//! let ledger = Ledger::open(&LedgerConfig::new(dir.path()), log_key, &prometheus::Registry::new())?;
//! let input: RecordInput = serde_json::from_str(
//!     r#"{"kind":"policy","entity":"policy:refunds","actor":{"type":"human","id":"ana"},"payload":{"max":100}}"#,
//! )?;
//! ledger.append_blocking(vec![PreparedRecord::prepare(input, "record")?])?;
//!
//! // Export every version of the entity, then check the bundle as a regulator would.
//! let mut bundle = Vec::new();
//! export(&ledger, &key, &Scope::entity(None, "policy:refunds"), &mut bundle, &mut |_, _| {})?;
//! let report = verify_bundle(bundle.as_slice(), &[key.verifier()], None)?;
//! assert_eq!(report.records(), 1);
//! assert_eq!(report.payloads(), 1);
//! assert!(matches!(report.key(), KeyTrust::Trusted(_)));
//! # Ok(()) }
//! ```

mod dsse;
mod error;
mod export;
mod format;
mod framer;
mod output;
mod prov;
mod verify;

#[cfg(test)]
mod formats_tests;
#[cfg(test)]
mod tests;

// Writing bundles: what to export, and what was written.
pub use crate::export::{export, export_to_file, ExportSummary, RangeScope, Scope};

// Verifying bundles offline, and what a verified bundle holds.
pub use crate::verify::{verify_bundle, BundleReport, ConsistencyProof, KeyTrust, LaterCheckpoint};

// Standard formats: choosing one, PROV-JSON, and DSSE envelopes (written and verified).
pub use crate::dsse::{
    export_dsse, looks_like_envelope, pae, verify_dsse, BUNDLE_PREDICATE_TYPE, DSSE_PAYLOAD_TYPE,
    STATEMENT_TYPE,
};
pub use crate::output::{export_as, export_as_file, ExportFormat};
pub use crate::prov::{export_prov_json, is_activity, ACTIVITY_KINDS, PROV_NAMESPACE};

// The format's name and version, as written in every bundle.
pub use crate::format::{counted, BUNDLE_FORMAT, BUNDLE_VERSION, READABLE_VERSIONS};

// Errors: of exporting, of a bundle that does not verify, and of one of its records.
pub use crate::error::{BundleError, ExportError, RecordFault};

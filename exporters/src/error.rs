//! Errors of exporting ([`ExportError`]) and of verifying a bundle ([`BundleError`]). Variants
//! say who caused them: the caller (a bad scope), the data directory (corruption), or the
//! bundle (tampering, truncation, a key nobody trusts).

use provledger_ledger::LedgerError;
use provledger_signer::{CheckpointError, Hash, KeyError, ProofError};

/// An export could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The caller asked for something that cannot be exported; the message says why.
    #[error("invalid export scope: {0}")]
    InvalidScope(String),
    /// A requested record id is not in the log.
    #[error("record {0} is not in the log")]
    UnknownRecord(Hash),
    /// A requested record belongs to another tenant than the one the scope names.
    #[error("record {id} belongs to tenant {actual:?}, not to {wanted:?}")]
    OtherTenant {
        /// The record id.
        id: Hash,
        /// Its tenant.
        actual: String,
        /// The tenant the scope names.
        wanted: String,
    },
    /// The export format is not one this crate writes.
    #[error("export format {0:?} is unknown: use bundle, prov-json or dsse")]
    UnknownFormat(String),
    /// The entity has no versions.
    #[error("entity {entity:?} has no versions in tenant {tenant:?}")]
    UnknownEntity {
        /// The tenant searched.
        tenant: String,
        /// The entity name.
        entity: String,
    },
    /// The signing key is not the one the log's checkpoints are signed with.
    #[error("signing key {key} is not the log's key {log}: sign exports with the data directory's own key")]
    ForeignKey {
        /// The key given.
        key: String,
        /// The log's key.
        log: String,
    },
    /// Stored data does not hold together; `provledger verify` will say more.
    #[error("record {index}: {reason}; run `provledger verify` on the data directory")]
    Corrupt {
        /// Leaf index.
        index: u64,
        /// What does not hold.
        reason: String,
    },
    /// The ledger refused or failed a read.
    #[error("reading the log failed: {0}")]
    Ledger(#[from] LedgerError),
    /// Writing the bundle failed.
    #[error("cannot write the bundle: {0}")]
    Io(#[from] std::io::Error),
}

/// A bundle does not verify. The first problem found, in file order; record problems name the
/// record's index in the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Reading the bundle failed.
    #[error("cannot read the bundle: {0}")]
    Io(#[from] std::io::Error),
    /// Not the JSON document a bundle is, or a top-level field is out of place; `offset` is the
    /// byte where reading stopped.
    #[error("not a valid provledger bundle (at byte {offset}): {reason}")]
    Malformed {
        /// Byte offset in the file.
        offset: u64,
        /// What was expected.
        reason: String,
    },
    /// `format` is not `provledger-bundle`.
    #[error("format {found:?} is not \"provledger-bundle\"")]
    Format {
        /// The format found.
        found: String,
    },
    /// A version this verifier does not read.
    #[error("bundle version {found} is not supported: this verifier reads versions 1 and 2")]
    Version {
        /// The version found.
        found: u64,
    },
    /// An entry of `keys` is not a verifier key.
    #[error("keys[{position}] is not a verifier key: {source}")]
    Key {
        /// Position in `keys`.
        position: usize,
        /// Why it does not parse.
        source: KeyError,
    },
    /// The caller trusts keys, and the bundle names none of them.
    #[error("the bundle's keys ({bundle}) include none of the trusted keys ({trusted}): it does not claim to come from the log you trust")]
    UntrustedKeys {
        /// The bundle's keys.
        bundle: String,
        /// The trusted keys.
        trusted: String,
    },
    /// The checkpoint does not parse or carries no valid signature by a key in use.
    #[error("the checkpoint does not verify: {0}")]
    Checkpoint(#[source] CheckpointError),
    /// A record fails a check.
    #[error("record {index} (position {position} in the bundle): {fault}")]
    Record {
        /// The record's index in the log, as the bundle states it.
        index: u64,
        /// Its position in `records`, from 0.
        position: u64,
        /// What is wrong.
        fault: RecordFault,
    },
    /// A record is not a valid record object, so its index may be unknown.
    #[error("record at position {position} in the bundle is malformed: {reason}")]
    MalformedRecord {
        /// Position in `records`, from 0.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// The manifest signature is not a valid signature of the manifest by the log key.
    #[error("the manifest signature does not verify with the log key {key}: the manifest was altered, or signed by another key")]
    ManifestSignature {
        /// The key it was checked with.
        key: String,
    },
    /// The signed manifest says something else than the rest of the bundle.
    #[error("the signed manifest's {field} does not match the bundle: {detail}")]
    ManifestMismatch {
        /// The manifest field.
        field: &'static str,
        /// How they differ.
        detail: String,
    },
    /// The bundle holds more or fewer records than the (version 2) manifest was signed for.
    #[error("the signed manifest covers {signed} records but the bundle holds {found}: records were removed or added after it was signed")]
    RecordCount {
        /// `record_count` of the manifest.
        signed: u64,
        /// Records in the bundle.
        found: u64,
    },
    /// The records' indexes and leaf hashes are not the ones the (version 2) manifest binds.
    #[error("the records are not the ones the signed manifest covers (records_sha256 differs): a record was replaced by another, or the records were reordered")]
    RecordsDigest,
    /// The manifest lists a record the bundle does not hold (version 1).
    #[error("record {index} is missing: the signed manifest lists it at position {position} (leaf hash {leaf_hash}) but the bundle's records do not hold it")]
    MissingRecord {
        /// Its index in the log, as the manifest lists it.
        index: u64,
        /// Its position in the manifest, from 0.
        position: u64,
        /// Its leaf hash, as the manifest lists it.
        leaf_hash: Hash,
    },
    /// The bundle holds a record the manifest does not list at that position (version 1).
    #[error("record {index} (position {position} in the bundle) is not the record the signed manifest lists at that position{listed}")]
    UnlistedRecord {
        /// Its index in the log.
        index: u64,
        /// Its position in `records`, from 0.
        position: u64,
        /// What the manifest lists there, if anything (` (record N)`).
        listed: String,
    },
    /// The records do not cover what the scope promises.
    #[error("the records are incomplete for the bundle's scope: {0}")]
    Incomplete(String),
    /// Not a DSSE envelope carrying an in-toto statement of a provledger bundle; says why.
    #[error("not a valid DSSE envelope of a provledger bundle: {0}")]
    Envelope(String),
    /// No signature of the envelope verifies over its PAE with the log key.
    #[error("the DSSE envelope signature does not verify over its PAE with {keys}: the statement was altered, or signed by another key")]
    EnvelopeSignature {
        /// The keys it was checked with.
        keys: String,
    },
    /// The statement's subjects are not the bundle's records.
    #[error("in-toto subject {position}: {reason}")]
    Subject {
        /// Position in `subject`, from 0.
        position: usize,
        /// What does not match.
        reason: String,
    },
    /// The later checkpoint given to check consistency with does not verify.
    #[error("the later checkpoint does not verify: {0}")]
    LaterCheckpoint(#[source] CheckpointError),
    /// The consistency proof does not show the bundle's log to be a prefix of the later one.
    #[error("the bundle's checkpoint is not proven to be a prefix of the later checkpoint: {0}")]
    Consistency(String),
}

/// What is wrong with one record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordFault {
    /// Records must be in ascending index order, each once.
    #[error("its index is not greater than the previous record's ({previous}): records must be in ascending index order, each once")]
    NotAscending {
        /// The previous record's index.
        previous: u64,
    },
    /// The index is beyond the checkpoint's tree.
    #[error("its index is outside the checkpoint's tree of size {tree_size}")]
    OutsideTree {
        /// The checkpoint's tree size.
        tree_size: u64,
    },
    /// `leaf` is not base64.
    #[error("leaf is not standard base64")]
    LeafEncoding,
    /// A proof hash is not base64 of 32 bytes.
    #[error("inclusion_proof[{position}] is not a SHA-256 hash in standard base64")]
    ProofEncoding {
        /// Position in the proof.
        position: usize,
    },
    /// The leaf, its proof and its index do not lead to the checkpoint's root.
    #[error("its leaf and inclusion proof do not lead to the checkpoint's root ({0}): the leaf, the proof or the index was altered")]
    Inclusion(ProofError),
    /// The leaf is in the log but is not a leaf this verifier can read.
    #[error("its leaf does not decode as a provledger leaf: {0}")]
    LeafDecode(String),
    /// The leaf names another index.
    #[error("its leaf says it is record {leaf_index}")]
    IndexMismatch {
        /// The index inside the leaf.
        leaf_index: u64,
    },
    /// `salt` is not 32 bytes of base64.
    #[error("salt is not 32 bytes of standard base64")]
    SaltEncoding,
    /// One of payload and salt is present without the other.
    #[error("payload and salt must be both present or both null")]
    PayloadSaltPair,
    /// A payload for a leaf that commits to none.
    #[error("it has a payload but its leaf commits to none")]
    NoCommitment,
    /// The payload cannot be put in RFC 8785 form.
    #[error("its payload cannot be canonicalized (RFC 8785): {0}")]
    PayloadCanonical(String),
    /// SHA-256(salt ‖ RFC 8785 payload) is not the leaf's commitment.
    #[error("its payload does not match the commitment in its leaf: SHA-256(salt ‖ RFC 8785 payload) differs, so the payload or the salt was altered")]
    PayloadMismatch,
    /// The record is not one the scope selects.
    #[error("it is outside the bundle's scope: {0}")]
    OutOfScope(String),
    /// The record cites one that comes later in the bundle.
    #[error("it cites record {cited}, which comes later in the log: a record can only cite earlier ones")]
    ForwardRef {
        /// The cited record's index.
        cited: u64,
    },
}

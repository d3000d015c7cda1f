//! provledger-signer: the cryptography of the ledger, and nothing else.
//!
//! This crate owns:
//! - **Ed25519 keys** for a log, named after its origin, in the text formats of
//!   Go's `golang.org/x/mod/sumdb/note` (private key files, `vkey` strings);
//! - **signed notes** (c2sp.org/signed-note): signing, strict parsing, and
//!   verification against a set of known keys;
//! - **checkpoint bodies** (c2sp.org/tlog-checkpoint), and [`VerifiedCheckpoint`],
//!   which only [`verify_checkpoint`] can build;
//! - **RFC 6962 / RFC 9162 hashing** (leaf, node, tree root) and verification of
//!   inclusion and consistency proofs.
//!
//! It must not touch storage beyond its own key file, and knows nothing about
//! HTTP or GraphQL. Building proofs from the on-disk tree belongs to the ledger.
//!
//! ```
//! use provledger_signer::{
//!     leaf_hash, node_hash, root_of, verify_checkpoint, verify_inclusion, Checkpoint, SigningKey,
//! };
//!
//! let key = SigningKey::generate("example.com/log")?;
//! let leaves: Vec<_> = ["a", "b", "c"].iter().map(|l| leaf_hash(l.as_bytes())).collect();
//! let checkpoint = Checkpoint {
//!     origin: "example.com/log".to_owned(),
//!     size: 3,
//!     root: root_of(&leaves),
//!     extensions: vec![],
//! };
//! let note = key.sign_checkpoint(&checkpoint);
//!
//! // A verifier holds only the public key, as a vkey string.
//! let vkey = key.verifier().to_string();
//! let verified = verify_checkpoint(&note, &[provledger_signer::VerifierKey::parse(&vkey)?])?;
//!
//! // Leaf 2 of 3: its audit path is the hash of the subtree holding leaves 0 and 1.
//! let proof = [node_hash(&leaves[0], &leaves[1])];
//! verify_inclusion(&leaves[2], 2, 3, &proof, &verified.checkpoint().root)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod checkpoint;
mod hash;
mod key;
mod merkle;
mod note;

// Tree hashes and RFC 6962 / RFC 9162 proof verification.
pub use hash::{EncodingError, Hash, HexBuf};
pub use merkle::{
    empty_root, leaf_hash, node_hash, root_from_inclusion_proof, root_of, verify_consistency,
    verify_inclusion, ProofError,
};

// Ed25519 keys: Go sumdb/note private key and vkey formats.
pub use key::{key_id, KeyError, MessageFeed, SigningKey, VerifierKey};

// Signed notes (c2sp.org/signed-note).
pub use note::{open_note, Note, NoteError, NoteSignature};

// Checkpoints (c2sp.org/tlog-checkpoint) and the proof that one was verified.
pub use checkpoint::{verify_checkpoint, Checkpoint, CheckpointError, VerifiedCheckpoint};

//! Shared by the fuzz targets and the seed maker: the log key the seeds are signed with.
//!
//! A fixed key made for fuzzing only (it signs nothing but the seed corpus), so that a mutated
//! bundle or note is checked against the key that signed its seed and the fuzzer reaches the
//! checks behind the signatures.

use provledger_signer::{SigningKey, VerifierKey};

/// The seeds' signing key (C2SP signed-note private key format).
pub const SEED_SKEY: &str =
    "PRIVATE+KEY+fuzz.example/log+136abfd7+ARdjzcgFnRa+DRIJuMNKu/a+3BAuJfpKYgWkZpcKncGf";

/// The seeds' signing key.
pub fn seed_key() -> SigningKey {
    SigningKey::from_skey(SEED_SKEY).expect("SEED_SKEY is a valid signing key")
}

/// Its verifier key, which the targets trust: derived once per process, not once per input.
pub fn seed_verifier() -> &'static VerifierKey {
    static VERIFIER: std::sync::LazyLock<VerifierKey> =
        std::sync::LazyLock::new(|| seed_key().verifier());
    &VERIFIER
}

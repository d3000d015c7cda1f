//! The files of a data directory that `serve` and the offline commands read, and the key texts
//! they are built from: `signing.key` (a C2SP signed-note private key), verifier keys (`GET
//! /v1/key`, `--trusted-key`, `keys.json`), `tokenization.key`, `tokens.json` and `keys.json`.
//! The first byte picks the file, the rest is its content. Each parses or is refused with an
//! error; a verifier key that parses has one spelling (it prints as it was read: `keys.json`
//! finds the current key by comparing that text), and a signing key that parses signs what its
//! verifier accepts.
#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use provledger_ledger::{KeyRing, TokenKey, TokenStore, KEYS_FILE, TOKENS_FILE};
use provledger_signer::{SigningKey, VerifierKey};

/// One directory per process, rewritten for each input (the targets run one input at a time).
static DIR: LazyLock<tempfile::TempDir> =
    LazyLock::new(|| tempfile::tempdir().expect("a temporary directory"));

fn write(name: &str, content: &[u8]) -> std::path::PathBuf {
    let path = DIR.path().join(name);
    std::fs::write(&path, content).expect("the temporary directory is writable");
    path
}

fn signing_key_file(path: &Path) {
    // `SigningKey::load` refuses a key file that others may read, as the server does.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .expect("the temporary file's mode can be set");
    let Ok(key) = SigningKey::load(path) else {
        return;
    };
    let again = SigningKey::from_skey(&key.to_skey()).expect("a loaded key prints as a valid key");
    assert_eq!(again.verifier(), key.verifier());
    let sig = key.sign_raw(b"fuzz");
    assert!(key.verifier().verify_raw(b"fuzz", &sig));
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, content)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => signing_key_file(&write("signing.key", content)),
        1 => {
            let Ok(text) = std::str::from_utf8(content) else {
                return;
            };
            if let Ok(key) = VerifierKey::parse(text) {
                assert_eq!(key.to_string(), text, "a verifier key has one spelling");
            }
        }
        2 => {
            if let Ok(key) = TokenKey::load(&write("tokenization.key", content)) {
                assert_eq!(key.id().len(), 16);
            }
        }
        3 => {
            write(TOKENS_FILE, content);
            if let Ok(store) = TokenStore::open(DIR.path()) {
                assert_eq!(store.is_empty(), store.list().is_empty());
            }
        }
        _ => {
            write(KEYS_FILE, content);
            if let Ok(ring) = KeyRing::load(DIR.path()) {
                for entry in ring.entries() {
                    let key = VerifierKey::parse(&entry.vkey).expect("load checked every key");
                    assert_eq!(key.to_string(), entry.vkey);
                }
            }
        }
    }
});

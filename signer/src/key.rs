//! Ed25519 keys in the text formats of golang.org/x/mod/sumdb/note.
//!
//! - verifier key: `<name>+<key id, 8 hex>+<base64(0x01 ‖ public key)>`
//! - signing key:  `PRIVATE+KEY+<name>+<key id, 8 hex>+<base64(0x01 ‖ 32-byte seed)>`
//!
//! The key name is the log origin. The base64 part may itself contain `+`.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::Signer as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::checkpoint::Checkpoint;
use crate::note::{self, NoteError};

/// Signature type byte for Ed25519 in c2sp.org/signed-note.
const ALG_ED25519: u8 = 0x01;
const SKEY_PREFIX: &str = "PRIVATE+KEY+";
/// A signing key file is about 100 bytes; anything much larger is not one.
const MAX_KEY_FILE_LEN: usize = 4096;

/// The key ID: the first 4 bytes of SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key).
pub fn key_id(name: &str, pubkey: &[u8; 32]) -> [u8; 4] {
    let digest: [u8; 32] = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update(b"\n")
        .chain_update([ALG_ED25519])
        .chain_update(pubkey)
        .finalize()
        .into();
    let [a, b, c, d, ..] = digest;
    [a, b, c, d]
}

/// Hands a whole message to a sink, in pieces: [`SigningKey::sign_raw_streamed`].
pub type MessageFeed<'a> = dyn Fn(&mut dyn FnMut(&[u8])) -> io::Result<()> + 'a;

/// A log's Ed25519 signing key, named after the log origin.
///
/// The secret is zeroized on drop (by `ed25519_dalek`) and never printed by `Debug`. Clones
/// are zeroized too; the ledger hands one to whatever signs beside checkpoints (exports).
#[derive(Clone)]
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
    verifier: VerifierKey,
}

impl SigningKey {
    /// A fresh random key from the operating system's generator.
    pub fn generate(name: &str) -> Result<SigningKey, KeyError> {
        let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
        SigningKey::from_dalek(name, key)
    }

    /// Parses `PRIVATE+KEY+<name>+<key id>+<base64(0x01 ‖ seed)>` and checks the key id.
    pub fn from_skey(text: &str) -> Result<SigningKey, KeyError> {
        let rest = text
            .strip_prefix(SKEY_PREFIX)
            .ok_or(KeyError::MalformedSigningKey)?;
        let (name, id, encoded) = split_key_text(rest).ok_or(KeyError::MalformedSigningKey)?;
        check_name(name)?;
        let id = parse_key_id(id).ok_or(KeyError::MalformedSigningKey)?;
        let raw = Zeroizing::new(
            STANDARD
                .decode(encoded)
                .map_err(|_| KeyError::MalformedSigningKey)?,
        );
        let seed = match raw.split_first() {
            Some((&ALG_ED25519, seed)) if seed.len() == 32 => seed,
            Some((&ALG_ED25519, _)) | None => return Err(KeyError::MalformedSigningKey),
            Some((&alg, _)) => return Err(KeyError::UnsupportedAlgorithm { alg }),
        };
        let mut bytes = Zeroizing::new([0u8; 32]);
        bytes.copy_from_slice(seed);
        let key = SigningKey::from_dalek(name, ed25519_dalek::SigningKey::from_bytes(&bytes))?;
        if key.verifier.id != id {
            return Err(KeyError::KeyIdMismatch {
                name: name.to_owned(),
            });
        }
        Ok(key)
    }

    /// Reads a signing key file written by [`SigningKey::create_new`] (or Go's
    /// `note.GenerateKey`). Refuses a file that group or others may read.
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let read_error = |source| KeyError::Read {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(read_error)?;
        check_private(path, &file)?;
        // Reserved up front so the secret is not copied around by reallocation.
        let mut text = Zeroizing::new(String::with_capacity(MAX_KEY_FILE_LEN + 1));
        file.take(MAX_KEY_FILE_LEN as u64 + 1)
            .read_to_string(&mut text)
            .map_err(read_error)?;
        if text.len() > MAX_KEY_FILE_LEN {
            return Err(KeyError::MalformedSigningKey);
        }
        SigningKey::from_skey(text.trim_end_matches(['\n', '\r']))
    }

    /// Generates a key and writes it to a new file with mode 0600, then fsyncs
    /// the file and its directory. Never overwrites an existing file.
    pub fn create_new(path: &Path, name: &str) -> Result<SigningKey, KeyError> {
        let key = SigningKey::generate(name)?;
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => KeyError::AlreadyExists {
                path: path.to_owned(),
            },
            _ => KeyError::Write {
                path: path.to_owned(),
                source,
            },
        })?;
        let mut text = key.to_skey();
        text.push('\n');
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .and_then(|()| sync_parent_dir(path));
        if let Err(source) = written {
            // Best effort: a half-written key file is worse than none, and the
            // write error is the one worth reporting.
            let _ = std::fs::remove_file(path);
            return Err(KeyError::Write {
                path: path.to_owned(),
                source,
            });
        }
        Ok(key)
    }

    /// The key name, which is the log origin.
    pub fn name(&self) -> &str {
        self.verifier.name()
    }

    /// The matching public key.
    pub fn verifier(&self) -> VerifierKey {
        self.verifier.clone()
    }

    /// The key in Go's private key format. Keep it secret.
    pub fn to_skey(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new([0u8; 33]);
        let [alg, seed @ ..] = &mut *raw;
        *alg = ALG_ED25519;
        seed.copy_from_slice(self.key.as_bytes());
        // Sized up front so the secret is not copied around by reallocation.
        let mut text = Zeroizing::new(String::with_capacity(
            SKEY_PREFIX.len() + self.name().len() + 10 + 44 + 1,
        ));
        text.push_str(SKEY_PREFIX);
        text.push_str(self.name());
        text.push('+');
        text.push_str(&hex_key_id(self.verifier.id));
        text.push('+');
        STANDARD.encode_string(&raw[..], &mut text);
        text
    }

    /// Signs `body` as a c2sp.org/signed-note and returns the whole note text:
    /// the body, a blank line and one signature line. The body must be
    /// non-empty, end with a newline and contain no other control characters.
    pub fn sign_note(&self, body: &str) -> Result<String, NoteError> {
        note::check_body(body)?;
        let text = self.sign_body(body);
        note::check_len(&text)?;
        Ok(text)
    }

    /// Signs a checkpoint body. Its origin should be this key's name (what
    /// [`crate::verify_checkpoint`] looks for) and it should pass
    /// [`Checkpoint::validate`]; otherwise the note will not verify.
    pub fn sign_checkpoint(&self, cp: &Checkpoint) -> String {
        self.sign_body(&cp.to_body())
    }

    /// A plain Ed25519 signature over `msg`, for formats other than notes.
    pub fn sign_raw(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }

    /// The same signature as [`SigningKey::sign_raw`] over a message too large to hold in
    /// memory. Ed25519 (RFC 8032, not prehashed) reads its message twice, so `feed` is called
    /// twice, each time handing the whole message to its sink in pieces; it must hand over the
    /// same bytes both times (re-reading a file, say). An error from `feed` is returned as is.
    pub fn sign_raw_streamed(&self, feed: &MessageFeed<'_>) -> io::Result<[u8; 64]> {
        use ed25519_dalek::hazmat::{raw_sign_byupdate, ExpandedSecretKey};
        use sha2::Sha512;
        let expanded = ExpandedSecretKey::from(self.key.as_bytes());
        let failure = std::cell::RefCell::new(None);
        let signed = raw_sign_byupdate::<Sha512, _>(
            &expanded,
            |hasher: &mut Sha512| {
                feed(&mut |piece: &[u8]| hasher.update(piece)).map_err(|e| {
                    *failure.borrow_mut() = Some(e);
                    ed25519_dalek::SignatureError::new()
                })
            },
            &self.key.verifying_key(),
        );
        match (signed, failure.into_inner()) {
            (Ok(signature), None) => Ok(signature.to_bytes()),
            (_, Some(e)) => Err(e),
            (Err(e), None) => Err(io::Error::other(e)),
        }
    }

    /// The signed note for a body that ends with a newline.
    fn sign_body(&self, body: &str) -> String {
        let sig = [&self.verifier.id[..], &self.sign_raw(body.as_bytes())[..]].concat();
        format!(
            "{body}\n{}{} {}\n",
            note::SIGNATURE_PREFIX,
            self.name(),
            STANDARD.encode(sig)
        )
    }

    fn from_dalek(name: &str, key: ed25519_dalek::SigningKey) -> Result<SigningKey, KeyError> {
        let verifier = VerifierKey::new(name, key.verifying_key().as_bytes())?;
        Ok(SigningKey { key, verifier })
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("verifier", &self.verifier.to_string())
            .finish_non_exhaustive()
    }
}

/// A public Ed25519 key with its name, as printed in a vkey.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VerifierKey {
    name: String,
    id: [u8; 4],
    key: ed25519_dalek::VerifyingKey,
}

impl VerifierKey {
    /// Parses `<name>+<key id>+<base64(0x01 ‖ public key)>` and checks the key id.
    pub fn parse(vkey: &str) -> Result<VerifierKey, KeyError> {
        let (name, id, encoded) = split_key_text(vkey).ok_or(KeyError::MalformedVerifierKey)?;
        check_name(name)?;
        let id = parse_key_id(id).ok_or(KeyError::MalformedVerifierKey)?;
        let raw = STANDARD
            .decode(encoded)
            .map_err(|_| KeyError::MalformedVerifierKey)?;
        let pubkey = match raw.split_first() {
            Some((&ALG_ED25519, pubkey)) => {
                <&[u8; 32]>::try_from(pubkey).map_err(|_| KeyError::MalformedVerifierKey)?
            }
            Some((&alg, _)) => return Err(KeyError::UnsupportedAlgorithm { alg }),
            None => return Err(KeyError::MalformedVerifierKey),
        };
        let key = VerifierKey::new(name, pubkey)?;
        if key.id != id {
            return Err(KeyError::KeyIdMismatch {
                name: name.to_owned(),
            });
        }
        Ok(key)
    }

    /// A verifier for a raw 32-byte Ed25519 public key (e.g. taken from a
    /// trusted root) under the given key name.
    pub fn new(name: &str, pubkey: &[u8; 32]) -> Result<VerifierKey, KeyError> {
        check_name(name)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(pubkey)
            .map_err(|_| KeyError::InvalidPublicKey)?;
        Ok(VerifierKey {
            name: name.to_owned(),
            id: key_id(name, pubkey),
            key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key ID that signature lines carry.
    pub fn key_id(&self) -> [u8; 4] {
        self.id
    }

    /// The raw public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Checks a plain Ed25519 signature with `verify_strict`: small-order keys
    /// and `R` values, non-canonical `R` and `s`, and signatures that only hold
    /// under the cofactored equation are all rejected.
    pub fn verify_raw(&self, msg: &[u8], sig: &[u8; 64]) -> bool {
        self.key
            .verify_strict(msg, &ed25519_dalek::Signature::from_bytes(sig))
            .is_ok()
    }

    /// [`VerifierKey::verify_raw`] over a message too large to hold in memory: `feed` hands the
    /// whole message to its sink once, in pieces. The same rules hold: `verify_strict`'s refusal
    /// of small-order keys and `R` values is checked first, then the cofactorless equation with
    /// `R` compared as bytes. An error from `feed` is returned as is.
    pub fn verify_raw_streamed(&self, sig: &[u8; 64], feed: &MessageFeed<'_>) -> io::Result<bool> {
        if self.key.is_weak() {
            return Ok(false);
        }
        let mut r = [0u8; 32];
        r.copy_from_slice(sig.first_chunk::<32>().unwrap_or(&[0; 32]));
        match curve25519_dalek::edwards::CompressedEdwardsY(r).decompress() {
            Some(point) if !point.is_small_order() => {}
            _ => return Ok(false),
        }
        let Ok(mut verifier) = self
            .key
            .verify_stream(&ed25519_dalek::Signature::from_bytes(sig))
        else {
            // A non-canonical `s`.
            return Ok(false);
        };
        feed(&mut |piece: &[u8]| verifier.update(piece))?;
        Ok(verifier.finalize_and_verify().is_ok())
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = [0u8; 33];
        let [alg, key @ ..] = &mut raw;
        *alg = ALG_ED25519;
        key.copy_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex_key_id(self.id),
            STANDARD.encode(raw)
        )
    }
}

/// Key names must be non-empty, without `+`, whitespace or control characters.
pub(crate) fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c == '+' || c.is_whitespace() || c.is_control())
}

fn check_name(name: &str) -> Result<(), KeyError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(KeyError::InvalidName {
            name: name.to_owned(),
        })
    }
}

/// Splits on the first two `+` only: names have none, base64 may.
fn split_key_text(text: &str) -> Option<(&str, &str, &str)> {
    let mut parts = text.splitn(3, '+');
    Some((parts.next()?, parts.next()?, parts.next()?))
}

/// Exactly 8 lowercase hex digits, as Go prints them.
fn parse_key_id(text: &str) -> Option<[u8; 4]> {
    let canonical = text.len() == 8
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !canonical {
        return None;
    }
    u32::from_str_radix(text, 16).ok().map(u32::to_be_bytes)
}

fn hex_key_id(id: [u8; 4]) -> String {
    format!("{:08x}", u32::from_be_bytes(id))
}

#[cfg(unix)]
fn check_private(path: &Path, file: &File) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = file
        .metadata()
        .map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(KeyError::InsecurePermissions {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _file: &File) -> Result<(), KeyError> {
    Ok(())
}

/// Makes the new directory entry durable.
fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// A key could not be parsed, loaded or stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key name breaks the signed-note rules.
    #[error("key name {name:?} is invalid: it must be non-empty and contain no '+', whitespace or control characters")]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// A verifier key string does not have the expected shape.
    #[error("verifier key is malformed: expected <name>+<8 hex digit key id>+<base64 of 0x01 and a 32-byte Ed25519 public key>")]
    MalformedVerifierKey,
    /// A signing key does not have the expected shape (its text is never echoed).
    #[error("signing key is malformed: expected PRIVATE+KEY+<name>+<8 hex digit key id>+<base64 of 0x01 and a 32-byte Ed25519 seed>")]
    MalformedSigningKey,
    /// The key is not Ed25519.
    #[error("key algorithm {alg:#04x} is not supported: only Ed25519 (0x01) keys are")]
    UnsupportedAlgorithm {
        /// The algorithm byte found.
        alg: u8,
    },
    /// The key id in the text does not match the name and key.
    #[error(
        "key id does not match the name {name:?} and key: the key text was altered or mistyped"
    )]
    KeyIdMismatch {
        /// The key name.
        name: String,
    },
    /// The public key bytes are not an Ed25519 point.
    #[error("public key is not a valid Ed25519 point")]
    InvalidPublicKey,
    /// The key file is readable by group or others.
    #[error("signing key file {} is readable by group or others (mode {mode:o}); run `chmod 600` on it", path.display())]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// `create_new` found a file already there.
    #[error("signing key file {} already exists; refusing to overwrite it", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// The key file could not be read.
    #[error("cannot read signing key file {}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The key file could not be written and synced.
    #[error("cannot write signing key file {}", path.display())]
    Write {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

#[cfg(test)]
// Tests unwrap results they just built; a panic is a test failure.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn skey_and_vkey_round_trip() {
        let key = SigningKey::generate("example.com/log").unwrap();
        let again = SigningKey::from_skey(&key.to_skey()).unwrap();
        assert_eq!(again.verifier(), key.verifier());
        let vkey = key.verifier().to_string();
        assert_eq!(VerifierKey::parse(&vkey).unwrap(), key.verifier());
        assert_eq!(
            key.verifier().key_id(),
            key_id(key.name(), &key.verifier().public_key())
        );
    }

    proptest::proptest! {
        /// Ed25519 is deterministic: the streamed signature is the one-piece signature,
        /// however the message is cut.
        #[test]
        fn streamed_signatures_equal_one_piece_signatures(
            msg in proptest::collection::vec(proptest::num::u8::ANY, 0..3000),
            piece in 1usize..700,
        ) {
            let key = SigningKey::generate("example.com/log").unwrap();
            let streamed = key
                .sign_raw_streamed(&|sink| {
                    msg.chunks(piece).for_each(&mut *sink);
                    Ok(())
                })
                .unwrap();
            proptest::prop_assert_eq!(streamed, key.sign_raw(&msg));
            proptest::prop_assert!(key.verifier().verify_raw(&msg, &streamed));
        }
    }

    #[test]
    fn a_failing_feed_fails_the_streamed_signature() {
        let key = SigningKey::generate("example.com/log").unwrap();
        let calls = std::cell::Cell::new(0);
        let err = key
            .sign_raw_streamed(&|sink| {
                calls.set(calls.get() + 1);
                sink(b"first pass");
                if calls.get() == 2 {
                    return Err(io::Error::other("disk went away"));
                }
                Ok(())
            })
            .unwrap_err();
        assert_eq!(err.to_string(), "disk went away");
    }

    #[test]
    fn debug_hides_the_secret() {
        let key = SigningKey::generate("example.com/log").unwrap();
        let debug = format!("{key:?}");
        let skey = key.to_skey();
        // PRIVATE+KEY+<name>+<key id>+<base64>: the base64 may itself hold `+`, so split off
        // the four fields before it rather than taking the text after the last `+`.
        let secret = skey.splitn(5, '+').nth(4).unwrap();
        assert_eq!(secret.len(), 44, "a base64 seed of 33 bytes");
        assert!(!debug.contains(secret), "{debug}");
        assert!(debug.contains("example.com/log"));
    }

    #[test]
    fn rejects_bad_names() {
        for name in ["", "a+b", "a b", "a\nb", "a\u{a0}b", "a\u{7}b"] {
            assert!(
                matches!(
                    SigningKey::generate(name),
                    Err(KeyError::InvalidName { .. })
                ),
                "{name:?}"
            );
        }
    }

    #[test]
    fn raw_signatures_verify() {
        let key = SigningKey::generate("k").unwrap();
        let sig = key.sign_raw(b"msg");
        assert!(key.verifier().verify_raw(b"msg", &sig));
        assert!(!key.verifier().verify_raw(b"msh", &sig));
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.skey");
        let key = SigningKey::create_new(&path, "example.com/log").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(SigningKey::load(&path).unwrap().verifier(), key.verifier());
        assert!(matches!(
            SigningKey::create_new(&path, "example.com/log"),
            Err(KeyError::AlreadyExists { .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = SigningKey::load(&path).unwrap_err();
        assert!(matches!(
            err,
            KeyError::InsecurePermissions { mode: 0o640, .. }
        ));
        assert!(err.to_string().contains("chmod 600"));
        assert!(matches!(
            SigningKey::load(&dir.path().join("missing")),
            Err(KeyError::Read { .. })
        ));
    }
}

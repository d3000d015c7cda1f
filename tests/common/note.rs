//! C2SP `signed-note` and `tlog-checkpoint` parsing, and the C2SP verifier-key format, written
//! from the specs for the tests. Signatures are verified by the Python checker
//! (`tests/verify_receipt.py`), which uses an Ed25519 implementation nobody here wrote.

use sha2::{Digest, Sha256};

/// A signed checkpoint, parsed strictly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The whole note as served.
    pub text: String,
    /// The signed body: the checkpoint lines with their newlines.
    pub body: String,
    /// First line.
    pub origin: String,
    /// Second line.
    pub size: u64,
    /// Third line, decoded.
    pub root: [u8; 32],
    /// Signature lines.
    pub signatures: Vec<Signature>,
}

/// One `— <name> <base64(key hash ‖ signature)>` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub name: String,
    pub key_hash: [u8; 4],
    pub signature: Vec<u8>,
}

impl Checkpoint {
    /// Parses a signed note holding a checkpoint; fails the test on any deviation from the
    /// C2SP formats.
    pub fn parse(text: &str) -> Checkpoint {
        let split = text
            .find("\n\n")
            .unwrap_or_else(|| panic!("a signed note has a blank line: {text:?}"));
        let body = &text[..=split];
        let sigs = &text[split + 2..];
        let lines: Vec<&str> = body
            .strip_suffix('\n')
            .expect("ends in \\n")
            .split('\n')
            .collect();
        assert!(lines.len() >= 3, "a checkpoint body has 3 lines: {body:?}");
        let origin = lines[0].to_owned();
        assert!(!origin.is_empty(), "empty origin");
        let size_line = lines[1];
        assert!(
            !size_line.is_empty()
                && size_line.bytes().all(|b| b.is_ascii_digit())
                && (size_line == "0" || !size_line.starts_with('0')),
            "tree size line {size_line:?} is not a canonical decimal"
        );
        let size: u64 = size_line.parse().expect("tree size fits in u64");
        let root = super::hash32(lines[2]);
        assert!(
            sigs.ends_with('\n') && !sigs.is_empty(),
            "signature lines end in a newline: {sigs:?}"
        );
        let signatures = sigs
            .strip_suffix('\n')
            .expect("checked")
            .split('\n')
            .map(|line| {
                let rest = line
                    .strip_prefix("\u{2014} ")
                    .unwrap_or_else(|| panic!("signature line {line:?} starts with an em dash"));
                let (name, b64) = rest
                    .rsplit_once(' ')
                    .unwrap_or_else(|| panic!("signature line {line:?} has name and signature"));
                let raw = super::b64(b64);
                assert!(raw.len() > 4, "signature line {line:?} is too short");
                Signature {
                    name: name.to_owned(),
                    key_hash: raw[..4].try_into().expect("4 bytes"),
                    signature: raw[4..].to_vec(),
                }
            })
            .collect();
        Checkpoint {
            text: text.to_owned(),
            body: body.to_owned(),
            origin,
            size,
            root,
            signatures,
        }
    }
}

/// A C2SP verifier key `<name>+<key hash hex>+<base64(0x01 ‖ public key)>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierKey {
    pub name: String,
    pub key_hash: [u8; 4],
    pub public_key: [u8; 32],
}

impl VerifierKey {
    /// Parses a verifier key and checks that its key hash is the one the spec defines:
    /// the first 4 bytes of SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key).
    pub fn parse(s: &str) -> VerifierKey {
        // The name holds no '+', the key hash is hex; the base64 key may hold '+'.
        let parts: Vec<&str> = s.splitn(3, '+').collect();
        assert_eq!(parts.len(), 3, "verifier key {s:?} has three + parts");
        let (name, hash_hex, key_b64) = (parts[0], parts[1], parts[2]);
        assert!(
            hash_hex.len() == 8 && hash_hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "key hash {hash_hex:?} is 8 hex digits"
        );
        let key_hash: [u8; 4] = hex::decode(hash_hex)
            .expect("hex")
            .try_into()
            .expect("4 bytes");
        let raw = super::b64(key_b64);
        assert_eq!(raw.len(), 33, "an Ed25519 vkey holds 0x01 and 32 bytes");
        assert_eq!(raw[0], 0x01, "Ed25519 algorithm byte");
        let public_key: [u8; 32] = raw[1..].try_into().expect("32 bytes");
        let mut h = Sha256::new();
        h.update(name.as_bytes());
        h.update(b"\n");
        h.update(&raw);
        let want: [u8; 32] = h.finalize().into();
        assert_eq!(
            key_hash,
            want[..4],
            "key hash of {s:?} is not SHA-256(name ‖ \\n ‖ 0x01 ‖ key)[:4]"
        );
        VerifierKey {
            name: name.to_owned(),
            key_hash,
            public_key,
        }
    }
}

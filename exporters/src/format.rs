//! The bundle format as it sits in the file: the names, the order of the top-level fields, the
//! scope object, and the manifest (version 2 binds the records through a running digest;
//! version 1 listed every record, and is still read). `docs/export-format.md` documents every
//! field; keep the two in step.

use std::fmt;

use provledger_signer::Hash;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// `format` of a bundle.
pub const BUNDLE_FORMAT: &str = "provledger-bundle";
/// `version` of the bundles this crate writes.
pub const BUNDLE_VERSION: u64 = 2;
/// Every `version` the verifier reads: 1, whose manifest lists each record's index and leaf
/// hash (about 80 bytes a record, held in memory to sign it), and 2, whose manifest binds them
/// through [`RecordsDigest`] so that a bundle of any size is written in bounded memory.
pub const READABLE_VERSIONS: [u64; 2] = [1, 2];
/// `format` inside the manifest: keeps a manifest signature from being read as any other
/// JSON document the log key might sign one day.
pub(crate) const MANIFEST_FORMAT: &str = "provledger-bundle-manifest";

/// `records_sha256` of a version 2 manifest, computed as the records go by: SHA-256 over, for
/// each record in bundle order, its index (8 bytes, big-endian) followed by its 32-byte leaf
/// hash. Also counts them (`record_count`).
#[derive(Clone, Default)]
pub(crate) struct RecordsDigest {
    hasher: Sha256,
    count: u64,
}

impl RecordsDigest {
    pub(crate) fn add(&mut self, index: u64, leaf_hash: &Hash) {
        self.hasher.update(index.to_be_bytes());
        self.hasher.update(leaf_hash.as_bytes());
        self.count += 1;
    }

    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// `(record_count, records_sha256)`.
    pub(crate) fn finish(self) -> (u64, Hash) {
        (self.count, Hash(self.hasher.finalize().into()))
    }
}

/// The top-level fields, in the order a bundle must list them. Streaming verifiers rely on it:
/// the checkpoint and keys come before the records they check, the manifest after them.
pub(crate) const FIELDS: [&str; 8] = [
    "format",
    "version",
    "scope",
    "checkpoint",
    "keys",
    "records",
    "manifest",
    "manifest_signature",
];

/// The scope object of a bundle (top-level `scope`, and `manifest.scope`): what was asked for
/// and, for ranges, which index span was scanned. Tagged by `type`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ScopeDoc {
    /// Every version of one entity of one tenant, oldest first.
    Entity { tenant: String, entity: String },
    /// Every record with `scanned_from_index <= index < scanned_to_index` that matches the
    /// filters; the time bounds are half-open too.
    Range {
        tenant: Option<String>,
        kind: Option<String>,
        from_index: Option<u64>,
        to_index: Option<u64>,
        from_time: Option<u64>,
        to_time: Option<u64>,
        scanned_from_index: u64,
        scanned_to_index: u64,
    },
    /// The listed records and everything they cite, transitively, up to `depth` hops upstream.
    Records {
        tenant: Option<String>,
        ids: Vec<HexHash>,
        depth: u32,
    },
}

impl fmt::Display for ScopeDoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeDoc::Entity { tenant, entity } => {
                write!(f, "every version of entity {entity:?} of tenant {tenant:?}")
            }
            ScopeDoc::Range {
                tenant,
                kind,
                from_time,
                to_time,
                scanned_from_index,
                scanned_to_index,
                ..
            } => {
                write!(f, "index range [{scanned_from_index}, {scanned_to_index})")?;
                if from_time.is_some() || to_time.is_some() {
                    let show = |t: &Option<u64>| t.map_or("-".to_owned(), |t| t.to_string());
                    write!(f, ", time [{}, {}) ms", show(from_time), show(to_time))?;
                }
                if let Some(k) = kind {
                    write!(f, ", kind {k:?}")?;
                }
                if let Some(t) = tenant {
                    write!(f, ", tenant {t:?}")?;
                }
                Ok(())
            }
            ScopeDoc::Records { ids, depth, .. } => {
                let n = ids.len() as u64;
                write!(f, "{}", counted(n, "record"))?;
                if *depth > 0 {
                    let whose = if n == 1 { "its" } else { "their" };
                    write!(f, " with {whose} upstream lineage to depth {depth}")?;
                }
                Ok(())
            }
        }
    }
}

/// `n` and `noun`, plural unless `n` is 1: "1 record", "3 records", "2 entries", "2 keys".
pub fn counted(n: u64, noun: &str) -> String {
    // A consonant before a final `y` makes `-ies` (entry, entries); a vowel keeps it (key, keys).
    let consonant_y = noun
        .strip_suffix('y')
        .filter(|stem| stem.ends_with(|c: char| c.is_ascii_alphabetic() && !"aeiou".contains(c)));
    match (n, consonant_y) {
        (1, _) => format!("{n} {noun}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        (_, None) => format!("{n} {noun}s"),
    }
}

/// A record's entry in `records`, as the exporter writes it.
#[derive(Serialize)]
pub(crate) struct RecordOut<'a> {
    pub index: u64,
    pub leaf: Base64<'a>,
    pub inclusion_proof: Vec<B64Hash>,
    pub payload: Option<&'a serde_json::Value>,
    pub salt: Option<Base64<'a>>,
}

/// A record's entry in `records`, as the verifier reads it. `payload` and `salt` may be absent
/// or null (erased or withheld payloads).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecordIn<'a> {
    pub index: u64,
    #[serde(borrow)]
    pub leaf: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub inclusion_proof: Vec<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
    #[serde(default, borrow)]
    pub salt: Option<std::borrow::Cow<'a, str>>,
}

/// The version 2 manifest, as the exporter writes it (RFC 8785 canonical JSON, which is what is
/// signed).
#[derive(Serialize)]
pub(crate) struct ManifestOut<'a> {
    pub format: &'static str,
    pub version: u64,
    pub scope: &'a ScopeDoc,
    pub checkpoint_sha256: HexHash,
    pub tree_size: u64,
    pub root: B64Hash,
    pub record_count: u64,
    pub records_sha256: HexHash,
}

/// A manifest of either version, as the verifier reads it (after checking its signature):
/// version 1 holds `indexes` and `leaf_hashes`, version 2 `record_count` and `records_sha256`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ManifestIn {
    pub format: String,
    pub version: u64,
    pub scope: serde_json::Value,
    pub checkpoint_sha256: HexHash,
    pub tree_size: u64,
    pub root: B64Hash,
    #[serde(default)]
    pub indexes: Option<Vec<u64>>,
    #[serde(default)]
    pub leaf_hashes: Option<Vec<HexHash>>,
    #[serde(default)]
    pub record_count: Option<u64>,
    #[serde(default)]
    pub records_sha256: Option<HexHash>,
}

/// A hash written as 64 lowercase hex digits; reading accepts exactly that form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HexHash(pub Hash);

impl Serialize for HexHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        // Writing 32 bytes into 64 cannot fail; fall back to the allocating form regardless.
        match hex::encode_to_slice(self.0.as_bytes(), &mut buf) {
            Ok(()) => s.serialize_str(std::str::from_utf8(&buf).unwrap_or_default()),
            Err(_) => s.serialize_str(&self.0.to_hex()),
        }
    }
}

impl<'de> Deserialize<'de> for HexHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HexHash;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a hash as 64 lowercase hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<HexHash, E> {
                parse_hex_hash(s)
                    .ok_or_else(|| E::custom(format!("{s:?} is not 64 lowercase hex digits")))
            }
        }
        d.deserialize_str(V)
    }
}

/// Exactly 64 lowercase hex digits.
pub(crate) fn parse_hex_hash(s: &str) -> Option<HexHash> {
    if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(HexHash(Hash(out)))
}

/// A hash written as standard base64 (44 characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct B64Hash(pub Hash);

impl Serialize for B64Hash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_base64())
    }
}

impl<'de> Deserialize<'de> for B64Hash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = B64Hash;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a hash as standard base64")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<B64Hash, E> {
                Hash::from_base64(s).map(B64Hash).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// Bytes written as standard base64.
pub(crate) struct Base64<'a>(pub &'a [u8]);

impl Serialize for Base64<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(self.0))
    }
}

#[cfg(test)]
// Tests unwrap and index what they just built; a panic is a test failure.
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_singular_only_for_one() {
        assert_eq!(counted(1, "record"), "1 record");
        assert_eq!(counted(0, "record"), "0 records");
        assert_eq!(counted(3, "record"), "3 records");
        assert_eq!(counted(1, "entry"), "1 entry");
        assert_eq!(counted(2, "entry"), "2 entries");
        assert_eq!(counted(2, "key"), "2 keys");
    }

    #[test]
    fn scope_json_is_tagged_and_strict() {
        let scope = ScopeDoc::Records {
            tenant: None,
            ids: vec![HexHash(Hash([0xab; 32]))],
            depth: 2,
        };
        let json = serde_json::to_value(&scope).unwrap();
        assert_eq!(json["type"], "records");
        assert_eq!(json["ids"][0], "ab".repeat(32));
        assert_eq!(serde_json::from_value::<ScopeDoc>(json).unwrap(), scope);

        let extra = serde_json::json!({"type": "entity", "tenant": "t", "entity": "e", "x": 1});
        assert!(serde_json::from_value::<ScopeDoc>(extra).is_err());
        let upper = serde_json::json!({"type": "records", "tenant": null, "ids": ["AB".repeat(32)], "depth": 0});
        assert!(serde_json::from_value::<ScopeDoc>(upper).is_err());
    }

    #[test]
    fn hex_hashes_are_lowercase_64_digits() {
        assert!(parse_hex_hash(&"0f".repeat(32)).is_some());
        assert!(parse_hex_hash(&"0F".repeat(32)).is_none());
        assert!(parse_hex_hash(&"0f".repeat(31)).is_none());
        assert!(parse_hex_hash(&"zz".repeat(32)).is_none());
    }
}

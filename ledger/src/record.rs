//! The record model: what a client submits ([`RecordInput`]), what the log commits to
//! ([`Leaf`], canonical MessagePack), and the salted payload commitment.

use std::collections::BTreeMap;

use provledger_signer::Hash;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::policy::{RedactionStamp, Redactor, POLICY_ENTITY};

/// The entity of the key-rotation records the ledger appends (`Ledger::rotate_key`).
pub const LOG_KEY_ENTITY: &str = "log-key";

/// Entities only the ledger writes, in the default tenant, about the log as a whole: the
/// redaction policy and key rotations. Clients may not append to them, and every tenant may
/// read them (each tenant's records name the policy that scrubbed them).
pub const LOG_ENTITIES: [&str; 2] = [POLICY_ENTITY, LOG_KEY_ENTITY];
use crate::redact::first_finding;
use crate::versions::EntityName;
use crate::LedgerError;

/// Version of the leaf encoding written in every leaf's `v` field.
pub const LEAF_FORMAT_VERSION: u8 = 1;
/// tlog-tiles frames every entry with a 2-byte length, so a leaf can be at most this long.
pub const MAX_LEAF_BYTES: usize = u16::MAX as usize;
/// Classification given to records that do not name one.
pub const DEFAULT_CLASSIFICATION: &str = "internal";
/// Tenant of records that do not name one.
pub const DEFAULT_TENANT: &str = "default";

const MAX_REFS: usize = 1024;
const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;

/// A record as a client submits it (JSON or MessagePack). Unknown fields are refused.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecordInput {
    /// `input`, `model`, `policy`, `decision`, `output`, `approval`, `erasure`, …
    pub kind: String,
    /// Whose record it is; `default` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The logical thing this record is a version of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    /// Who wrote it.
    pub actor: Actor,
    /// The sources this record cites.
    #[serde(default)]
    pub refs: Vec<RefInput>,
    /// Small, non-sensitive metadata.
    #[serde(default)]
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// The content; stored beside the tree and committed by a salted digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
    /// Data class; `internal` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<String>,
    /// A retried append with the same key returns the first receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Who wrote a record.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// `agent`, `human`, `service`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Identifier of the actor within its type.
    pub id: String,
}

/// A source cited by a record, as submitted.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RefInput {
    /// `input`, `model`, `policy`, `prompt`, `tool`, `approval`, `parent`, …
    pub role: String,
    /// A record id (64 lowercase hex digits) or an entity name (its latest version).
    #[serde(rename = "ref")]
    pub target: String,
}

/// A resolved reference inside a leaf: the cited record's leaf hash.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct LeafRef {
    /// Role of the source.
    pub role: String,
    /// Leaf hash of the exact version cited.
    #[serde(with = "serde_bytes")]
    pub hash: [u8; 32],
}

/// What the log commits to. Its canonical MessagePack encoding (string keys, fields in
/// this order, attribute keys sorted) is the leaf; `docs/format.md` documents it field by field.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Leaf {
    /// Leaf format version ([`LEAF_FORMAT_VERSION`]).
    pub v: u8,
    /// Position in the log.
    pub index: u64,
    /// Integration time, milliseconds since the Unix epoch, assigned by the ledger.
    pub time: u64,
    /// Owning tenant.
    pub tenant: String,
    /// Record kind.
    pub kind: String,
    /// Entity this record is a version of.
    pub entity: Option<String>,
    /// Writer.
    pub actor: Actor,
    /// Resolved sources.
    pub refs: Vec<LeafRef>,
    /// Metadata, keys sorted.
    #[serde(serialize_with = "sorted_map")]
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// Data class.
    pub classification: String,
    /// SHA-256(salt ‖ RFC 8785 JSON of the payload), or nil without a payload.
    #[serde(with = "serde_bytes")]
    pub commitment: Option<[u8; 32]>,
    /// The redaction policy that scrubbed the record. Absent (not nil) in leaves written before
    /// policies were recorded, so those leaves decode and re-encode to the same bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redaction: Option<RedactionStamp>,
}

impl Leaf {
    /// The canonical leaf bytes.
    pub fn encode(&self) -> Result<Vec<u8>, LedgerError> {
        // Most leaves are 200-400 bytes: one allocation, not a doubling from 8 bytes up.
        let mut bytes = Vec::with_capacity(512);
        rmp_serde::encode::write_named(&mut bytes, self)
            .map_err(|e| LedgerError::invalid("record", format!("cannot be encoded: {e}")))?;
        if bytes.len() > MAX_LEAF_BYTES {
            return Err(LedgerError::LeafTooLarge {
                size: bytes.len(),
                limit: MAX_LEAF_BYTES,
            });
        }
        Ok(bytes)
    }

    /// Decodes leaf bytes read from storage or from a bundle.
    pub fn decode(bytes: &[u8]) -> Result<Leaf, LedgerError> {
        let leaf: Leaf = rmp_serde::from_slice(bytes)
            .map_err(|e| LedgerError::Corrupt(format!("leaf does not decode: {e}")))?;
        if leaf.v != LEAF_FORMAT_VERSION {
            return Err(LedgerError::Corrupt(format!(
                "unknown leaf format version {}",
                leaf.v
            )));
        }
        Ok(leaf)
    }
}

/// Serializes a JSON map with keys in byte order at every depth, whatever map type
/// serde_json was built with.
fn sorted_map<S: serde::Serializer>(
    map: &BTreeMap<String, serde_json::Value>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(map.len()))?;
    for (k, v) in map {
        m.serialize_entry(k, &Sorted(v))?;
    }
    m.end()
}

struct Sorted<'a>(&'a serde_json::Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            serde_json::Value::Object(obj) => {
                let mut keys: Vec<&String> = obj.keys().collect();
                keys.sort();
                let mut m = s.serialize_map(Some(keys.len()))?;
                for k in keys {
                    if let Some(v) = obj.get(k) {
                        m.serialize_entry(k, &Sorted(v))?;
                    }
                }
                m.end()
            }
            serde_json::Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    seq.serialize_element(&Sorted(v))?;
                }
                seq.end()
            }
            other => other.serialize(s),
        }
    }
}

/// A payload ready to store: its RFC 8785 bytes, the random salt and the commitment.
#[derive(Clone, Debug)]
pub struct SealedPayload {
    /// 32 random bytes.
    pub salt: [u8; 32],
    /// RFC 8785 (JCS) canonical JSON of the payload.
    pub canonical: Vec<u8>,
    /// SHA-256(salt ‖ canonical).
    pub commitment: [u8; 32],
}

/// The longest canonical payload: a payload run stores its length as a u32, and `u32::MAX`
/// marks an empty slot (`payloads.rs`).
const MAX_PAYLOAD_BYTES: usize = (u32::MAX - 1) as usize;

impl SealedPayload {
    /// Canonicalizes and commits to a payload with a fresh random salt.
    pub fn seal(payload: &serde_json::Value) -> Result<SealedPayload, LedgerError> {
        check_exact_numbers(payload, "payload")?;
        let canonical = canonical_json(payload).map_err(|e| {
            LedgerError::invalid("payload", format!("cannot be canonicalized: {e}"))
        })?;
        if canonical.len() > MAX_PAYLOAD_BYTES {
            // A payload run stores each length as a u32 (`payloads.rs`).
            return Err(LedgerError::invalid(
                "payload",
                format!(
                    "is {} bytes in canonical form; at most {} can be stored",
                    canonical.len(),
                    MAX_PAYLOAD_BYTES
                ),
            ));
        }
        let salt = fresh_salt();
        let commitment = commitment(&salt, &canonical);
        Ok(SealedPayload {
            salt,
            canonical,
            commitment,
        })
    }
}

/// Salts drawn from the operating system's CSPRNG 128 at a time (one `getrandom` call instead
/// of one per record), each handed out once and wiped from the buffer as it is taken.
fn fresh_salt() -> [u8; 32] {
    const SALTS: usize = 128;
    thread_local! {
        static POOL: std::cell::RefCell<(Box<[[u8; 32]; SALTS]>, usize)> =
            std::cell::RefCell::new((Box::new([[0u8; 32]; SALTS]), SALTS));
    }
    POOL.with_borrow_mut(|(pool, used)| {
        if *used >= SALTS {
            OsRng.fill_bytes(pool.as_flattened_mut());
            *used = 0;
        }
        let slot = pool.get_mut(*used).map(std::mem::take).unwrap_or_default();
        *used += 1;
        slot
    })
}

/// RFC 8785 (JCS) canonical JSON of `v`.
///
/// `serde_json_canonicalizer` buffers every member of every object and parses each key again to
/// sort by UTF-16 code units; on batch ingest that was ~5 % of the server's CPU. For the values
/// most payloads are, `serde_json` itself already writes the JCS bytes (checked against the
/// crate by a property test), so it is used for them:
/// - a `Value::Object` iterates its keys in UTF-8 byte order, which is code point order, which
///   is UTF-16 order as long as no key holds a character from U+E000 up (UTF-16 puts the
///   surrogates of U+10000 and above before U+E000–U+FFFF); such characters start with a
///   UTF-8 byte of 0xEE or more;
/// - integers (at most 2^53 in size, see [`check_exact_numbers`]) are written in decimal by
///   both, but a float such as `1.0` is `1.0` to serde_json and `1` to JCS;
/// - strings are escaped the same way: `\"`, `\\`, `\b \f \n \r \t`, other controls as
///   `\u00xx` in lower case, everything else as it is.
///
/// Anything else (a float, such a key) goes to `serde_json_canonicalizer`.
pub(crate) fn canonical_json(v: &serde_json::Value) -> serde_json::Result<Vec<u8>> {
    fn plain(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Number(n) => n.is_i64() || n.is_u64(),
            serde_json::Value::Array(items) => items.iter().all(plain),
            serde_json::Value::Object(map) => map
                .iter()
                .all(|(k, x)| k.bytes().all(|b| b < 0xEE) && plain(x)),
            serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::String(_) => {
                true
            }
        }
    }
    if plain(v) {
        serde_json::to_vec(v)
    } else {
        serde_json_canonicalizer::to_vec(v)
    }
}

/// RFC 8785 writes numbers as IEEE 754 doubles; an integer beyond ±2^53 would be silently
/// rounded, so it is refused instead.
fn check_exact_numbers(v: &serde_json::Value, path: &str) -> Result<(), LedgerError> {
    match inexact_number(v) {
        None => Ok(()),
        Some((at, n)) => Err(LedgerError::invalid(
            format!("{path}{at}"),
            format!("integer {n} is beyond ±2^53 and cannot be represented exactly in RFC 8785 JSON; send it as a string"),
        )),
    }
}

/// The first integer beyond ±2^53 in `v` and its path below `v` (`.key`, `[i]`), which is
/// only written out when there is one.
fn inexact_number(v: &serde_json::Value) -> Option<(String, &serde_json::Number)> {
    const MAX_EXACT: u64 = 1 << 53;
    match v {
        serde_json::Value::Number(n) => {
            let exact = match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => u <= MAX_EXACT,
                (None, Some(i)) => i.unsigned_abs() <= MAX_EXACT,
                (None, None) => true,
            };
            (!exact).then(|| (String::new(), n))
        }
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, x)| inexact_number(x).map(|(at, n)| (format!("[{i}]{at}"), n))),
        serde_json::Value::Object(map) => map
            .iter()
            .find_map(|(k, x)| inexact_number(x).map(|(at, n)| (format!(".{k}{at}"), n))),
        _ => None,
    }
}

/// SHA-256(salt ‖ canonical payload bytes).
pub fn commitment(salt: &[u8], canonical: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(canonical);
    h.finalize().into()
}

/// A reference as given: a record id, or an entity name with its place in the entity index
/// (digested here, off the writer thread).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RefTarget {
    Id(Hash),
    Entity(String, EntityName),
}

impl RefTarget {
    /// `s` as cited by a record of `tenant` (an entity name resolves within the tenant).
    pub(crate) fn parse(s: &str, tenant: &str) -> RefTarget {
        if is_record_id(s) {
            if let Ok(h) = Hash::from_hex(s) {
                return RefTarget::Id(h);
            }
        }
        RefTarget::Entity(s.to_owned(), EntityName::new(tenant, s))
    }
}

fn is_record_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A submitted record after validation, with its payload sealed. Built off the writer thread.
#[derive(Clone, Debug)]
pub struct PreparedRecord {
    pub(crate) tenant: String,
    pub(crate) kind: String,
    pub(crate) entity: Option<String>,
    /// The entity's place in the entity index, digested here so the writer thread need not.
    pub(crate) version: Option<EntityName>,
    pub(crate) actor: Actor,
    pub(crate) refs: Vec<(String, RefTarget)>,
    pub(crate) attributes: BTreeMap<String, serde_json::Value>,
    pub(crate) classification: String,
    pub(crate) payload: Option<SealedPayload>,
    pub(crate) idempotency_key: Option<String>,
    /// SHA-256 of the submitted record (payload included), to tell a retry from a conflict;
    /// computed only for records that carry an idempotency key.
    pub(crate) fingerprint: [u8; 32],
    /// The redaction policy that scrubbed the payload, written into the leaf.
    pub(crate) redaction: RedactionStamp,
    /// Where the record sat in its request, for error messages (`record`, `records[3]`).
    pub(crate) field: String,
}

impl PreparedRecord {
    /// Validates a submitted record and scrubs its payload with the built-in redaction policy.
    /// `field` is its position in the request, for messages. Servers use [`Ledger::prepare`],
    /// which applies the configured policy.
    ///
    /// [`Ledger::prepare`]: crate::Ledger::prepare
    pub fn prepare(input: RecordInput, field: &str) -> Result<PreparedRecord, LedgerError> {
        PreparedRecord::prepare_with(input, field, Redactor::builtin())
    }

    /// Validates a submitted record and scrubs its payload with `redactor`; the leaf will name
    /// the policy ([`RedactionStamp`]). The entity [`POLICY_ENTITY`] is reserved for the
    /// ledger's own policy records and refused.
    pub fn prepare_with(
        mut input: RecordInput,
        field: &str,
        redactor: &Redactor,
    ) -> Result<PreparedRecord, LedgerError> {
        if let Some(reserved) = input.entity.as_deref().filter(|e| LOG_ENTITIES.contains(e)) {
            return Err(LedgerError::invalid(
                format!("{field}.entity"),
                format!("{reserved:?} is reserved for records the ledger writes itself (the redaction policy, key rotations)"),
            ));
        }
        // Stage `scrub`: raw PII must reach neither the commitment, the store, the journal nor
        // the idempotency fingerprint. Scrubbing is deterministic (tokens are keyed hashes), so
        // retries still match.
        if let Some(p) = input.payload.as_mut() {
            let classification = input
                .classification
                .as_deref()
                .unwrap_or(DEFAULT_CLASSIFICATION);
            redactor.apply(p, classification);
        }
        PreparedRecord::validate(input, field, redactor.stamp())
    }

    /// A record the ledger writes about itself (a key rotation): scrubbed and validated like
    /// any other, but allowed to use a reserved entity ([`LOG_ENTITIES`]).
    pub(crate) fn prepare_own_record(
        mut input: RecordInput,
        field: &str,
        redactor: &Redactor,
    ) -> Result<PreparedRecord, LedgerError> {
        if let Some(p) = input.payload.as_mut() {
            redactor.apply(p, DEFAULT_CLASSIFICATION);
        }
        PreparedRecord::validate(input, field, redactor.stamp())
    }

    /// The ledger's own `policy` record: its payload is the operator's policy document, stored
    /// as written (not scrubbed by itself), so that its digest can be recomputed from it.
    pub(crate) fn prepare_policy_record(
        input: RecordInput,
        stamp: RedactionStamp,
    ) -> Result<PreparedRecord, LedgerError> {
        PreparedRecord::validate(input, "record", stamp)
    }

    fn validate(
        input: RecordInput,
        field: &str,
        redaction: RedactionStamp,
    ) -> Result<PreparedRecord, LedgerError> {
        // Field paths are only built when an error names them.
        let at = |name: &str| format!("{field}.{name}");
        let fingerprint = match input.idempotency_key {
            None => [0u8; 32],
            Some(_) => {
                let bytes = serde_json_canonicalizer::to_vec(&input).map_err(|e| {
                    LedgerError::invalid(field, format!("cannot be canonicalized: {e}"))
                })?;
                Sha256::digest(&bytes).into()
            }
        };
        let tenant = input.tenant.unwrap_or_else(|| DEFAULT_TENANT.to_owned());
        check_token(&tenant, &|| at("tenant"), 128)?;
        check_token(&input.kind, &|| at("kind"), 64)?;
        if let Some(entity) = &input.entity {
            check_text(entity, &|| at("entity"), 512)?;
            if is_record_id(entity) {
                return Err(LedgerError::invalid(
                    at("entity"),
                    "must not be 64 hex digits: that form is reserved for record ids",
                ));
            }
        }
        check_text(&input.actor.kind, &|| at("actor.type"), 64)?;
        check_text(&input.actor.id, &|| at("actor.id"), 256)?;
        if let Some(entity) = &input.entity {
            check_no_pii(entity, &|| at("entity"))?;
        }
        check_no_pii(&input.actor.kind, &|| at("actor.type"))?;
        check_no_pii(&input.actor.id, &|| at("actor.id"))?;
        if input.refs.len() > MAX_REFS {
            return Err(LedgerError::invalid(
                at("refs"),
                format!(
                    "has {} entries, at most {MAX_REFS} are allowed",
                    input.refs.len()
                ),
            ));
        }
        let mut refs = Vec::with_capacity(input.refs.len());
        for (i, r) in input.refs.into_iter().enumerate() {
            let role = || at(&format!("refs[{i}].role"));
            let target = || at(&format!("refs[{i}].ref"));
            check_token(&r.role, &role, 64)?;
            check_text(&r.target, &target, 512)?;
            check_no_pii(&r.role, &role)?;
            check_no_pii(&r.target, &target)?;
            let target = RefTarget::parse(&r.target, &tenant);
            refs.push((r.role, target));
        }
        let attributes_size = rmp_serde::to_vec(&input.attributes)
            .map(|b| b.len())
            .unwrap_or(0);
        if attributes_size > MAX_ATTRIBUTES_BYTES {
            return Err(LedgerError::invalid(
                at("attributes"),
                format!("encode to {attributes_size} bytes, at most {MAX_ATTRIBUTES_BYTES} are allowed; put large content in the payload"),
            ));
        }
        for (k, v) in &input.attributes {
            check_attribute_pii(k, v, &|| at("attributes"))?;
        }
        let classification = input
            .classification
            .unwrap_or_else(|| DEFAULT_CLASSIFICATION.to_owned());
        check_token(&classification, &|| at("classification"), 64)?;
        if let Some(key) = &input.idempotency_key {
            check_text(key, &|| at("idempotency_key"), 256)?;
        }
        let payload = match &input.payload {
            None | Some(serde_json::Value::Null) => None,
            Some(p) => Some(SealedPayload::seal(p).map_err(|e| match e {
                LedgerError::InvalidRecord { field: f, reason } => LedgerError::InvalidRecord {
                    field: format!("{field}.{f}"),
                    reason,
                },
                other => other,
            })?),
        };
        let version = input.entity.as_deref().map(|e| EntityName::new(&tenant, e));
        Ok(PreparedRecord {
            tenant,
            kind: input.kind,
            entity: input.entity,
            version,
            actor: input.actor,
            refs,
            attributes: input.attributes,
            classification,
            payload,
            idempotency_key: input.idempotency_key,
            fingerprint,
            redaction,
            field: field.to_owned(),
        })
    }

    /// Approximate memory the record holds while queued, for the queue's byte bound.
    pub fn approx_bytes(&self) -> usize {
        512 + self.payload.as_ref().map_or(0, |p| p.canonical.len())
            + self.refs.iter().map(|(r, _)| r.len() + 64).sum::<usize>()
    }

    /// Tenant the record will be stored under.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }
}

/// Leaves are permanent, so a leaf text field holding PII is refused (stage `validate`).
/// The message names the field and the kind found, never the value.
fn check_no_pii(s: &str, field: &dyn Fn() -> String) -> Result<(), LedgerError> {
    match first_finding(s) {
        None => Ok(()),
        Some(kind) => Err(LedgerError::invalid(
            field(),
            format!(
                "holds {}; leaves are permanent, so PII is refused here: move it into the payload, where it is scrubbed",
                kind.description()
            ),
        )),
    }
}

/// Scans an attribute key and its value at any depth. A key that holds PII is reported at its
/// parent's path, so the message does not echo it.
fn check_attribute_pii(
    key: &str,
    v: &serde_json::Value,
    parent: &dyn Fn() -> String,
) -> Result<(), LedgerError> {
    if let Some(kind) = first_finding(key) {
        return Err(LedgerError::invalid(
            parent(),
            format!(
                "has a key that holds {}; leaves are permanent, so PII is refused here: move it into the payload, where it is scrubbed",
                kind.description()
            ),
        ));
    }
    check_json_pii(v, &|| format!("{}.{key}", parent()))
}

fn check_json_pii(v: &serde_json::Value, path: &dyn Fn() -> String) -> Result<(), LedgerError> {
    match v {
        serde_json::Value::String(s) => check_no_pii(s, path),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, x)| check_json_pii(x, &|| format!("{}[{i}]", path()))),
        serde_json::Value::Object(map) => map
            .iter()
            .try_for_each(|(k, x)| check_attribute_pii(k, x, path)),
        _ => Ok(()),
    }
}

/// Identifiers: 1..=max bytes of ASCII letters, digits, `_`, `-`, `.`, `:`.
pub(crate) fn check_token(
    s: &str,
    field: &dyn Fn() -> String,
    max: usize,
) -> Result<(), LedgerError> {
    check_len(s, field, max)?;
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    {
        return Err(LedgerError::invalid(
            field(),
            "may only hold ASCII letters, digits and _ - . :",
        ));
    }
    Ok(())
}

/// Free text: 1..=max bytes, no control characters.
fn check_text(s: &str, field: &dyn Fn() -> String, max: usize) -> Result<(), LedgerError> {
    check_len(s, field, max)?;
    if s.chars().any(char::is_control) {
        return Err(LedgerError::invalid(
            field(),
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn check_len(s: &str, field: &dyn Fn() -> String, max: usize) -> Result<(), LedgerError> {
    if s.is_empty() {
        return Err(LedgerError::invalid(field(), "must not be empty"));
    }
    if s.len() > max {
        return Err(LedgerError::invalid(
            field(),
            format!("is {} bytes long, at most {max} are allowed", s.len()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// JSON values with the characters that matter to JCS in keys and strings: controls,
    /// quotes and backslashes, U+007F, U+E000–U+FFFF and supplementary characters, and numbers
    /// that are integers (mostly) or floats.
    fn json() -> impl Strategy<Value = serde_json::Value> {
        let text = proptest::collection::vec(
            prop_oneof![
                4 => proptest::char::range('a', 'z'),
                1 => proptest::char::range('\u{0}', '\u{7f}'),
                1 => proptest::char::range('\u{80}', '\u{d7ff}'),
                1 => proptest::char::range('\u{e000}', '\u{ffff}'),
                1 => proptest::char::range('\u{10000}', '\u{10ffff}'),
            ],
            0..6,
        )
        .prop_map(|cs| cs.into_iter().collect::<String>());
        let max = 1i64 << 53;
        let leaf = prop_oneof![
            1 => Just(serde_json::Value::Null),
            1 => any::<bool>().prop_map(serde_json::Value::Bool),
            4 => (-max..=max).prop_map(serde_json::Value::from),
            1 => any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            3 => text.clone().prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(4, 40, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map(text.clone(), inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// The fast path writes exactly what `serde_json_canonicalizer` writes.
        #[test]
        fn canonical_json_is_what_the_jcs_crate_writes(v in json()) {
            let want = serde_json_canonicalizer::to_vec(&v).expect("the crate canonicalizes");
            prop_assert_eq!(canonical_json(&v).expect("canonical"), want);
        }
    }

    #[test]
    fn canonical_json_sorts_by_utf16_and_writes_numbers_as_jcs_does() {
        // U+FF61 sorts after U+1F600 in UTF-16 (0xFF61 > 0xD83D) but before it in UTF-8.
        let v = serde_json::json!({"\u{ff61}": 1, "\u{1f600}": 2, "a": [1.0, 1e21, -0.0, 5]});
        let got = canonical_json(&v).expect("canonical");
        assert_eq!(
            String::from_utf8(got).expect("utf-8"),
            "{\"a\":[1,1e+21,0,5],\"\u{1f600}\":2,\"\u{ff61}\":1}"
        );
        let plain = serde_json::json!({"b": "x\u{1}\"\\\n", "a": -9007199254740992_i64});
        assert_eq!(
            canonical_json(&plain).expect("canonical"),
            serde_json_canonicalizer::to_vec(&plain).expect("the crate canonicalizes")
        );
    }

    #[test]
    fn salts_are_never_handed_out_twice() {
        // Several refills of the pool, on two threads.
        let draw = || (0..1000).map(|_| fresh_salt()).collect::<Vec<_>>();
        let other = std::thread::spawn(draw);
        let mut all = draw();
        all.extend(other.join().unwrap_or_default());
        assert_eq!(all.len(), 2000);
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), 2000);
        assert!(all.iter().all(|s| s != &[0u8; 32]));
    }
}

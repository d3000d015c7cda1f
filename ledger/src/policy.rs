//! Redaction policies: the versioned document an operator configures (which built-in detectors
//! run, and per-field rules that drop, mask, tokenize or keep values), the keyed tokenization,
//! and the [`Redactor`] that applies a policy to payloads at stage `scrub`.
//!
//! A policy is identified by its `version` and by the SHA-256 of its canonical JSON
//! ([`Redactor::digest`]); the server records it in the log as a `policy` record of the entity
//! [`POLICY_ENTITY`] ([`Ledger::install_redaction_policy`]) and every leaf names the policy that
//! scrubbed it ([`RedactionStamp`]). `docs/api.md` documents the file format.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use hmac::{Hmac, Mac};
use provledger_signer::Hash;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::record::{Actor, PreparedRecord, RecordInput, DEFAULT_TENANT};
use crate::redact::{mask_json, mask_keys, PiiKind, DETECTORS_REVISION};
use crate::{Ledger, LedgerError};

/// Version of the built-in policy, used when no policy file is configured.
pub const BUILTIN_POLICY_VERSION: &str = "builtin-v1";
/// Entity of the `policy` records that hold the redaction policy (tenant `default`). Clients
/// may not append to it.
pub const POLICY_ENTITY: &str = "redaction-policy";
/// `format` member of a policy's canonical JSON.
pub const POLICY_FORMAT: &str = "provledger-redaction-policy/1";
/// Text that replaces a value masked by a field rule.
pub const FIELD_MASK: &str = "[REDACTED:field]";
/// Prefix of a token; `tok_` is followed by [`TOKEN_BYTES`] bytes of HMAC in lowercase hex.
pub const TOKENIZED_PREFIX: &str = "tok_";
/// Bytes of HMAC-SHA-256 kept in a token (128 bits: collisions stay out of reach).
pub const TOKEN_BYTES: usize = 16;

const MAX_VERSION_LEN: usize = 64;
const MAX_RULES: usize = 1024;
const KEY_ID_CONTEXT: &[u8] = b"provledger tokenization key id\n";

/// A policy file or tokenization key that cannot be used; the message names the file and the
/// field (or the line and column of a syntax error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The policy file could not be read.
    #[error("cannot read redaction policy {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or JSON, or has unknown or mistyped keys.
    #[error("redaction policy {path} does not parse: {message}")]
    Syntax {
        /// The file (`<inline>` for text that came from no file).
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value breaks a rule; `field` is its place in the document, e.g. `rules[2].field`.
    #[error("redaction policy: {field}: {reason}")]
    Invalid {
        /// Place in the document.
        field: String,
        /// What is wrong, in words a person can act on.
        reason: String,
    },
    /// The tokenization key file could not be read, created or parsed.
    #[error("tokenization key {path}: {reason}")]
    TokenKey {
        /// The key file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The policy tokenizes but no tokenization key was given.
    #[error("redaction policy {version:?} has tokenize rules but no tokenization key was given")]
    NoTokenKey {
        /// The policy's version.
        version: String,
    },
}

impl PolicyError {
    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> PolicyError {
        PolicyError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// What a field rule does with the value it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FieldAction {
    /// Remove the field (or array element).
    Drop,
    /// Replace the whole value with [`FIELD_MASK`].
    Mask,
    /// Replace the value with `tok_<hex>`, a keyed hash of its RFC 8785 JSON ([`TokenKey`]), so
    /// equal values give equal tokens across records.
    Tokenize,
    /// Leave the value as it is: detectors do not run on it (known-safe fields).
    Keep,
}

/// One per-field rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRule {
    field: String,
    action: FieldAction,
    classifications: Vec<String>,
    path: FieldPath,
}

impl FieldRule {
    /// The path as written in the policy.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What the rule does.
    pub fn action(&self) -> FieldAction {
        self.action
    }

    /// Classifications the rule is limited to (sorted); empty means every record.
    pub fn classifications(&self) -> &[String] {
        &self.classifications
    }

    fn applies_to(&self, classification: &str) -> bool {
        self.classifications.is_empty() || self.classifications.iter().any(|c| c == classification)
    }
}

/// A parsed, validated redaction policy document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedactionPolicy {
    version: String,
    detectors: Vec<PiiKind>,
    rules: Vec<FieldRule>,
}

/// The document as written (TOML or JSON); see `docs/api.md`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyDocument {
    version: String,
    #[serde(default)]
    detectors: Option<Vec<String>>,
    #[serde(default)]
    rules: Vec<RuleDocument>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDocument {
    field: String,
    action: FieldAction,
    #[serde(default)]
    classifications: Vec<String>,
}

impl RedactionPolicy {
    /// The built-in policy [`BUILTIN_POLICY_VERSION`]: every detector masks, no field rules.
    pub fn builtin() -> RedactionPolicy {
        RedactionPolicy {
            version: BUILTIN_POLICY_VERSION.to_owned(),
            detectors: PiiKind::ALL.to_vec(),
            rules: Vec::new(),
        }
    }

    /// Reads a policy file: JSON when its name ends in `.json`, TOML otherwise.
    pub fn from_file(path: &Path) -> Result<RedactionPolicy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let doc = if json {
            serde_json::from_str::<PolicyDocument>(&text).map_err(|e| e.to_string())
        } else {
            toml::from_str::<PolicyDocument>(&text).map_err(|e| e.to_string())
        };
        let doc = doc.map_err(|message| PolicyError::Syntax {
            path: path.to_owned(),
            message: message.trim_end().to_owned(),
        })?;
        RedactionPolicy::from_document(doc)
    }

    /// Parses a policy from TOML text.
    pub fn from_toml(text: &str) -> Result<RedactionPolicy, PolicyError> {
        let doc = toml::from_str::<PolicyDocument>(text).map_err(|e| PolicyError::Syntax {
            path: PathBuf::from("<inline>"),
            message: e.to_string().trim_end().to_owned(),
        })?;
        RedactionPolicy::from_document(doc)
    }

    fn from_document(doc: PolicyDocument) -> Result<RedactionPolicy, PolicyError> {
        if doc.version.is_empty() || doc.version.len() > MAX_VERSION_LEN {
            return Err(PolicyError::invalid(
                "version",
                format!("must be 1 to {MAX_VERSION_LEN} characters"),
            ));
        }
        if !doc
            .version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
        {
            return Err(PolicyError::invalid(
                "version",
                "may only hold ASCII letters, digits and _ - . :",
            ));
        }
        let detectors = match doc.detectors {
            None => PiiKind::ALL.to_vec(),
            Some(names) => {
                let mut kinds = Vec::new();
                for (i, name) in names.iter().enumerate() {
                    let kind = PiiKind::from_name(name).ok_or_else(|| {
                        let known: Vec<&str> = PiiKind::ALL.iter().map(|k| k.name()).collect();
                        PolicyError::invalid(
                            format!("detectors[{i}]"),
                            format!("unknown detector {name:?}; known: {}", known.join(", ")),
                        )
                    })?;
                    kinds.push(kind);
                }
                // Canonical order: the order detectors claim overlapping text.
                PiiKind::ALL
                    .into_iter()
                    .filter(|k| kinds.contains(k))
                    .collect()
            }
        };
        if doc.rules.len() > MAX_RULES {
            return Err(PolicyError::invalid(
                "rules",
                format!(
                    "has {} rules, at most {MAX_RULES} are allowed",
                    doc.rules.len()
                ),
            ));
        }
        let mut rules = Vec::with_capacity(doc.rules.len());
        for (i, r) in doc.rules.into_iter().enumerate() {
            let path = FieldPath::parse(&r.field)
                .map_err(|reason| PolicyError::invalid(format!("rules[{i}].field"), reason))?;
            let mut classifications = r.classifications;
            for (j, c) in classifications.iter().enumerate() {
                if c.is_empty()
                    || !c.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':')
                    })
                {
                    return Err(PolicyError::invalid(
                        format!("rules[{i}].classifications[{j}]"),
                        "must be a classification name: ASCII letters, digits and _ - . :",
                    ));
                }
            }
            classifications.sort();
            classifications.dedup();
            rules.push(FieldRule {
                field: r.field,
                action: r.action,
                classifications,
                path,
            });
        }
        Ok(RedactionPolicy {
            version: doc.version,
            detectors,
            rules,
        })
    }

    /// The policy's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Detectors that run over every value no rule matched, in canonical order.
    pub fn detectors(&self) -> &[PiiKind] {
        &self.detectors
    }

    /// Field rules in document order (the first that matches a value decides).
    pub fn rules(&self) -> &[FieldRule] {
        &self.rules
    }

    /// True when a rule tokenizes, so a [`TokenKey`] is needed.
    pub fn tokenizes(&self) -> bool {
        self.rules.iter().any(|r| r.action == FieldAction::Tokenize)
    }

    /// The canonical JSON of the policy: the payload of its `policy` record, and what
    /// [`Redactor::digest`] hashes (in RFC 8785 form). Detectors in canonical order, rules in
    /// document order, classifications sorted; `detectors_revision` is this build's
    /// [`DETECTORS_REVISION`], so the same file run by detectors that mask differently has
    /// another digest and is recorded again.
    pub fn canonical(&self) -> serde_json::Value {
        let rules: Vec<serde_json::Value> = self
            .rules
            .iter()
            .map(|r| {
                serde_json::json!({
                    "field": r.field,
                    "action": r.action,
                    "classifications": r.classifications,
                })
            })
            .collect();
        serde_json::json!({
            "format": POLICY_FORMAT,
            "detectors_revision": DETECTORS_REVISION,
            "version": self.version,
            "detectors": self.detectors.iter().map(|k| k.name()).collect::<Vec<_>>(),
            "rules": rules,
        })
    }
}

/// A path in a payload, compiled from a rule's `field`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldPath {
    segments: Vec<Segment>,
    /// Dotted paths walk through arrays without naming an index; JSON pointers name it (or `*`).
    arrays_transparent: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// A name with `*` wildcards, e.g. `*_email` (dotted form only).
    Glob(String),
    /// `*`: any one key or array element.
    AnyOne,
    /// `**`: any number of levels, none included.
    AnyDepth,
}

impl Segment {
    fn matches(&self, key: &str) -> bool {
        match self {
            Segment::Literal(s) => s == key,
            Segment::Glob(p) => glob(p.as_bytes(), key.as_bytes()),
            Segment::AnyOne => true,
            Segment::AnyDepth => false,
        }
    }
}

impl FieldPath {
    /// `/a/b/0` (RFC 6901 JSON pointer, `*` and `**` segments as wildcards) or `a.b` (dotted,
    /// from the payload root, arrays walked through; `*` globs within a name, `**` any depth).
    fn parse(field: &str) -> Result<FieldPath, String> {
        if field.is_empty() {
            return Err("must not be empty".to_owned());
        }
        let (segments, arrays_transparent) = if let Some(pointer) = field.strip_prefix('/') {
            let mut segs = Vec::new();
            for raw in pointer.split('/') {
                segs.push(match raw {
                    "" => return Err(format!("{field:?} has an empty segment")),
                    "*" => Segment::AnyOne,
                    "**" => Segment::AnyDepth,
                    _ => Segment::Literal(unescape_pointer(raw).ok_or_else(|| {
                        format!("{field:?}: `~` must be followed by 0 or 1 (RFC 6901)")
                    })?),
                });
            }
            (segs, false)
        } else {
            let mut segs = Vec::new();
            for raw in field.split('.') {
                segs.push(match raw {
                    "" => return Err(format!("{field:?} has an empty segment (`..` or a dot at an end); use a JSON pointer for keys with dots")),
                    "*" => Segment::AnyOne,
                    "**" => Segment::AnyDepth,
                    _ if raw.contains('*') => Segment::Glob(raw.to_owned()),
                    _ => Segment::Literal(raw.to_owned()),
                });
            }
            (segs, true)
        };
        if segments.iter().all(|s| *s == Segment::AnyDepth) {
            return Err(format!("{field:?} names no field"));
        }
        Ok(FieldPath {
            segments,
            arrays_transparent,
        })
    }

    /// Start state: positions reachable before any key is consumed.
    fn start(&self) -> Vec<usize> {
        self.closure(vec![0])
    }

    /// Positions after consuming one key from `states`.
    fn step(&self, states: &[usize], key: &str) -> Vec<usize> {
        let mut next = Vec::new();
        for &i in states {
            match self.segments.get(i) {
                Some(Segment::AnyDepth) => next.push(i),
                Some(s) if s.matches(key) => next.push(i + 1),
                _ => {}
            }
        }
        self.closure(next)
    }

    fn closure(&self, mut states: Vec<usize>) -> Vec<usize> {
        let mut k = 0;
        while let Some(&i) = states.get(k) {
            if matches!(self.segments.get(i), Some(Segment::AnyDepth)) && !states.contains(&(i + 1))
            {
                states.push(i + 1);
            }
            k += 1;
        }
        states.sort_unstable();
        states.dedup();
        states
    }

    fn accepts(&self, states: &[usize]) -> bool {
        states.contains(&self.segments.len())
    }
}

fn unescape_pointer(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// `*` matches any run of bytes; everything else matches itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(c) if Some(c) == text.get(t) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

/// The per-log secret of tokenization: 32 random bytes in `<data-dir>/tokenization.key` (64 hex
/// digits, mode 0600). Its [`TokenKey::id`] may be published; the key itself is never logged
/// (`Debug` shows only the id).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKey([u8; 32]);

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenKey({})", self.id())
    }
}

impl TokenKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> TokenKey {
        TokenKey(bytes)
    }

    /// A fresh random key.
    pub fn generate() -> TokenKey {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        TokenKey(bytes)
    }

    /// Reads the key file, or creates it (mode 0600, fsynced) when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<TokenKey, PolicyError> {
        if path.exists() {
            return TokenKey::load(path);
        }
        let key = TokenKey::generate();
        let fail = |reason: String| PolicyError::TokenKey {
            path: path.to_owned(),
            reason,
        };
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(path)
            .map_err(|e| fail(format!("cannot create: {e}")))?;
        let written = file
            .write_all(format!("{}\n", hex::encode(key.0)).as_bytes())
            .and_then(|()| file.sync_all())
            .and_then(|()| match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => {
                    std::fs::File::open(dir).and_then(|d| d.sync_all())
                }
                _ => Ok(()),
            });
        if let Err(e) = written {
            // A half-written key is worse than none.
            let _ = std::fs::remove_file(path);
            return Err(fail(format!("cannot write: {e}")));
        }
        Ok(key)
    }

    /// Reads a key file: 64 hex digits and an optional newline.
    pub fn load(path: &Path) -> Result<TokenKey, PolicyError> {
        let fail = |reason: String| PolicyError::TokenKey {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let bytes = hex::decode(text.trim_end_matches(['\n', '\r']))
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| fail("must hold 64 hex digits (32 bytes)".to_owned()))?;
        Ok(TokenKey(bytes))
    }

    /// Public identifier of the key: the first 8 bytes of SHA-256("provledger tokenization key
    /// id\n" ‖ key), 16 hex digits. Recorded in the policy record, so a key change is visible.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(KEY_ID_CONTEXT);
        h.update(self.0);
        let d: [u8; 32] = h.finalize().into();
        hex::encode(d.get(..8).unwrap_or_default())
    }

    /// `tok_` + the first [`TOKEN_BYTES`] bytes of HMAC-SHA-256(key, RFC 8785 JSON of `value`)
    /// in hex. A string is hashed with its JSON quotes, so `"1"` and `1` differ.
    pub fn token(&self, value: &serde_json::Value) -> String {
        // RFC 8785 of a value already accepted as JSON fails only for non-finite numbers, which
        // serde_json cannot hold; fall back to serde_json's compact form all the same.
        let bytes = serde_json_canonicalizer::to_vec(value)
            .unwrap_or_else(|_| value.to_string().into_bytes());
        #[allow(clippy::expect_used)] // HMAC accepts keys of any length; this cannot fail
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(&bytes);
        let out = mac.finalize().into_bytes();
        format!(
            "{TOKENIZED_PREFIX}{}",
            hex::encode(out.get(..TOKEN_BYTES).unwrap_or_default())
        )
    }
}

/// What every leaf says about the redaction policy that scrubbed its record (leaf key
/// `redaction`, `docs/format.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionStamp {
    /// The policy's version.
    pub version: String,
    /// SHA-256 of the policy's canonical JSON in RFC 8785 form.
    #[serde(with = "serde_bytes")]
    pub digest: [u8; 32],
    /// Record id of the `policy` record holding the policy; nil for the built-in policy and
    /// for the policy record itself (it cannot cite its own id).
    #[serde(with = "serde_bytes")]
    pub policy: Option<[u8; 32]>,
}

/// A policy ready to scrub: the policy, its digest, the tokenization key, and the id of the
/// `policy` record that holds it once recorded.
#[derive(Clone, Debug)]
pub struct Redactor {
    policy: RedactionPolicy,
    digest: [u8; 32],
    key: Option<TokenKey>,
    record: Option<Hash>,
}

impl Redactor {
    /// A redactor for a policy. Refuses a policy that tokenizes without a key.
    pub fn new(policy: RedactionPolicy, key: Option<TokenKey>) -> Result<Redactor, PolicyError> {
        if policy.tokenizes() && key.is_none() {
            return Err(PolicyError::NoTokenKey {
                version: policy.version,
            });
        }
        let canonical = serde_json_canonicalizer::to_vec(&policy.canonical())
            .map_err(|e| PolicyError::invalid("policy", format!("cannot be canonicalized: {e}")))?;
        Ok(Redactor {
            digest: Sha256::digest(&canonical).into(),
            policy,
            key,
            record: None,
        })
    }

    /// The built-in policy, not recorded in the log.
    pub fn builtin() -> &'static Redactor {
        static BUILTIN: LazyLock<Redactor> = LazyLock::new(|| {
            let policy = RedactionPolicy::builtin();
            // The canonical JSON of the built-in policy holds only fixed ASCII strings.
            let canonical =
                serde_json_canonicalizer::to_vec(&policy.canonical()).unwrap_or_default();
            Redactor {
                digest: Sha256::digest(&canonical).into(),
                policy,
                key: None,
                record: None,
            }
        });
        &BUILTIN
    }

    /// The policy.
    pub fn policy(&self) -> &RedactionPolicy {
        &self.policy
    }

    /// SHA-256 of the policy's canonical JSON (RFC 8785).
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// The tokenization key, when one was given.
    pub fn token_key(&self) -> Option<&TokenKey> {
        self.key.as_ref()
    }

    /// Id of the `policy` record holding this policy, once recorded.
    pub fn record(&self) -> Option<Hash> {
        self.record
    }

    /// What a leaf scrubbed by this redactor says.
    pub fn stamp(&self) -> RedactionStamp {
        RedactionStamp {
            version: self.policy.version.clone(),
            digest: self.digest,
            policy: self.record.map(|h| *h.as_bytes()),
        }
    }

    /// Scrubs a payload in place for a record of `classification`: the first field rule that
    /// matches a value decides what happens to it (and nothing below it is looked at again);
    /// detectors run over every other string, object key and integer. Returns how many values
    /// were dropped, masked or tokenized.
    pub fn apply(&self, payload: &mut serde_json::Value, classification: &str) -> usize {
        let rules: Vec<&FieldRule> = self
            .policy
            .rules
            .iter()
            .filter(|r| r.applies_to(classification))
            .collect();
        let detectors = self.policy.detectors.as_slice();
        if rules.is_empty() {
            return mask_json(payload, detectors);
        }
        let states: Vec<Vec<usize>> = rules.iter().map(|r| r.path.start()).collect();
        let walk = Walk {
            rules: &rules,
            detectors,
            key: self.key.as_ref(),
        };
        walk.value(payload, &states)
    }
}

struct Walk<'a> {
    rules: &'a [&'a FieldRule],
    detectors: &'a [PiiKind],
    key: Option<&'a TokenKey>,
}

enum Step {
    Rule(FieldAction),
    Descend(Vec<Vec<usize>>),
}

impl Walk<'_> {
    fn value(&self, v: &mut serde_json::Value, states: &[Vec<usize>]) -> usize {
        if states.iter().all(Vec::is_empty) {
            return mask_json(v, self.detectors);
        }
        match v {
            serde_json::Value::Object(map) => {
                let mut count = 0;
                let mut drop = Vec::new();
                let mut exempt = Vec::new();
                for (k, child) in map.iter_mut() {
                    match self.decide(states, k, false) {
                        Step::Rule(FieldAction::Drop) => drop.push(k.clone()),
                        Step::Rule(action) => {
                            count += self.act(child, action);
                            exempt.push(k.clone());
                        }
                        Step::Descend(next) => count += self.value(child, &next),
                    }
                }
                for k in &drop {
                    map.remove(k);
                }
                count
                    + drop.len()
                    + mask_keys(map, self.detectors, |k| exempt.iter().any(|e| e == k))
            }
            serde_json::Value::Array(items) => {
                let mut count = 0;
                let old = std::mem::take(items);
                for (i, mut child) in old.into_iter().enumerate() {
                    match self.decide(states, &i.to_string(), true) {
                        Step::Rule(FieldAction::Drop) => {
                            count += 1;
                            continue;
                        }
                        Step::Rule(action) => count += self.act(&mut child, action),
                        Step::Descend(next) => count += self.value(&mut child, &next),
                    }
                    items.push(child);
                }
                count
            }
            scalar => mask_json(scalar, self.detectors),
        }
    }

    /// The first rule that matches the child named `key`, or the states to descend with.
    fn decide(&self, states: &[Vec<usize>], key: &str, array: bool) -> Step {
        let mut next = Vec::with_capacity(states.len());
        for (rule, s) in self.rules.iter().zip(states) {
            let n = if array && rule.path.arrays_transparent {
                // Dotted paths walk through arrays: the element stands where the array stood.
                s.clone()
            } else {
                rule.path.step(s, key)
            };
            if !(array && rule.path.arrays_transparent) && rule.path.accepts(&n) {
                return Step::Rule(rule.action);
            }
            next.push(n);
        }
        Step::Descend(next)
    }

    fn act(&self, v: &mut serde_json::Value, action: FieldAction) -> usize {
        match (action, self.key) {
            (FieldAction::Keep, _) => 0,
            (FieldAction::Tokenize, Some(key)) => {
                *v = serde_json::Value::String(key.token(v));
                1
            }
            // Drop is handled by the caller; Redactor::new refuses Tokenize without a key, so
            // the fallback only keeps the value from leaking if that ever changes.
            (FieldAction::Mask | FieldAction::Tokenize | FieldAction::Drop, _) => {
                *v = serde_json::Value::String(FIELD_MASK.to_owned());
                1
            }
        }
    }
}

/// What [`Ledger::install_redaction_policy`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyInstall {
    /// The policy was already the latest recorded version: its record is reused.
    AlreadyRecorded {
        /// The existing `policy` record.
        record: Hash,
    },
    /// A new `policy` record was appended.
    Recorded {
        /// The new record.
        record: Hash,
        /// Its leaf index.
        index: u64,
    },
}

impl PolicyInstall {
    /// The `policy` record in use.
    pub fn record(&self) -> Hash {
        match self {
            PolicyInstall::AlreadyRecorded { record } | PolicyInstall::Recorded { record, .. } => {
                *record
            }
        }
    }
}

impl Ledger {
    /// Makes `redactor` the policy that scrubs every record prepared with [`Ledger::prepare`]
    /// from now on, after making sure it is recorded in the log: unless the latest version of
    /// the entity [`POLICY_ENTITY`] (tenant `default`) already holds this version, digest and
    /// tokenization key id, a `policy` record is appended with attributes `version`, `digest`
    /// (`sha256:<hex>`) and `token_key`, and the canonical policy as payload. Blocking: call it
    /// at start-up, before serving.
    pub fn install_redaction_policy(
        &self,
        redactor: Redactor,
    ) -> Result<PolicyInstall, LedgerError> {
        let digest = format!("sha256:{}", hex::encode(redactor.digest));
        let key_id = redactor.key.as_ref().map(TokenKey::id);
        let outcome = match self.latest_policy_record()? {
            Some(id)
                if self.policy_record_matches(&id, &redactor, &digest, key_id.as_deref())? =>
            {
                PolicyInstall::AlreadyRecorded { record: id }
            }
            _ => {
                let mut attributes = std::collections::BTreeMap::new();
                attributes.insert("version".to_owned(), redactor.policy.version.clone().into());
                attributes.insert("digest".to_owned(), digest.into());
                if let Some(id) = &key_id {
                    attributes.insert("token_key".to_owned(), id.clone().into());
                }
                let input = RecordInput {
                    kind: "policy".to_owned(),
                    tenant: Some(DEFAULT_TENANT.to_owned()),
                    entity: Some(POLICY_ENTITY.to_owned()),
                    actor: Actor {
                        kind: "service".to_owned(),
                        id: "provledger".to_owned(),
                    },
                    refs: Vec::new(),
                    attributes,
                    payload: Some(redactor.policy.canonical()),
                    classification: None,
                    idempotency_key: None,
                };
                let prepared = PreparedRecord::prepare_policy_record(input, redactor.stamp())?;
                let receipt = self.append_blocking(vec![prepared])?.pop().ok_or_else(|| {
                    LedgerError::Corrupt("an append answered with no receipt".to_owned())
                })?;
                PolicyInstall::Recorded {
                    record: receipt.id,
                    index: receipt.index,
                }
            }
        };
        let mut redactor = redactor;
        redactor.record = Some(outcome.record());
        self.set_redactor(Arc::new(redactor));
        Ok(outcome)
    }

    fn latest_policy_record(&self) -> Result<Option<Hash>, LedgerError> {
        let mut after = None;
        let mut latest = None;
        loop {
            let page = self.entity_versions(DEFAULT_TENANT, POLICY_ENTITY, after, 1000)?;
            match page.last() {
                None => return Ok(latest),
                Some(&(index, id)) => {
                    after = Some(index);
                    latest = Some(id);
                }
            }
        }
    }

    /// The recorded policy matches when its attributes name this version, digest and key id,
    /// and its payload (unless erased) hashes to the digest.
    fn policy_record_matches(
        &self,
        id: &Hash,
        redactor: &Redactor,
        digest: &str,
        key_id: Option<&str>,
    ) -> Result<bool, LedgerError> {
        let r = self.record(id, Some(DEFAULT_TENANT))?;
        let attr = |name: &str| r.leaf.attributes.get(name).and_then(|v| v.as_str());
        let payload_ok = match &r.payload {
            None => true,
            Some(p) => serde_json_canonicalizer::to_vec(p)
                .map(|bytes| <[u8; 32]>::from(Sha256::digest(&bytes)) == redactor.digest)
                .unwrap_or(false),
        };
        Ok(r.leaf.kind == "policy"
            && attr("version") == Some(redactor.policy.version.as_str())
            && attr("digest") == Some(digest)
            && attr("token_key") == key_id
            && payload_ok)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report
mod tests {
    use serde_json::json;

    use super::*;
    use crate::record::Leaf;
    use crate::redact::scan;

    fn key(byte: u8) -> TokenKey {
        TokenKey::from_bytes([byte; 32])
    }

    fn redactor(toml: &str) -> Redactor {
        Redactor::new(RedactionPolicy::from_toml(toml).unwrap(), Some(key(7))).unwrap()
    }

    fn rule(field: &str, action: &str) -> String {
        format!("[[rules]]\nfield = {field:?}\naction = {action:?}\n")
    }

    fn scrub(r: &Redactor, mut v: serde_json::Value) -> serde_json::Value {
        r.apply(&mut v, "internal");
        v
    }

    #[test]
    fn drop_removes_the_field_and_nothing_else() {
        let r = redactor(&format!(
            "version = \"t1\"\n{}",
            rule("/customer/ssn", "drop")
        ));
        let mut v = json!({"customer": {"ssn": "123-45-6789", "name": "Ana"}, "ssn": "kept"});
        assert_eq!(r.apply(&mut v, "internal"), 1);
        assert_eq!(v, json!({"customer": {"name": "Ana"}, "ssn": "kept"}));
    }

    #[test]
    fn mask_replaces_the_whole_value_even_an_object() {
        let r = redactor(&format!(
            "version = \"t1\"\n{}{}",
            rule("/customer/address", "mask"),
            rule("/notes", "mask")
        ));
        let v = scrub(
            &r,
            json!({"customer": {"address": {"street": "Main St 1", "city": "Lisbon"}}, "notes": 42}),
        );
        assert_eq!(
            v,
            json!({"customer": {"address": FIELD_MASK}, "notes": FIELD_MASK})
        );
    }

    #[test]
    fn tokenize_is_deterministic_and_keyed() {
        let doc = format!("version = \"t1\"\n{}", rule("**.email", "tokenize"));
        let policy = RedactionPolicy::from_toml(&doc).unwrap();
        let a = Redactor::new(policy.clone(), Some(key(1))).unwrap();
        let b = Redactor::new(policy, Some(key(2))).unwrap();
        let payload =
            json!({"email": "ana@example.com", "deep": {"x": [{"email": "ana@example.com"}]}});
        let va = scrub(&a, payload.clone());
        let token = va["email"].as_str().unwrap().to_owned();
        assert_eq!(
            va["deep"]["x"][0]["email"],
            token.as_str(),
            "equal values join"
        );
        assert!(token.starts_with(TOKENIZED_PREFIX));
        assert_eq!(token.len(), TOKENIZED_PREFIX.len() + 2 * TOKEN_BYTES);
        assert!(token[4..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        // Same key, same value, another record: the same token.
        assert_eq!(scrub(&a, payload.clone())["email"], token.as_str());
        // Another key: another token.
        let vb = scrub(&b, payload);
        assert_ne!(vb["email"], token.as_str());
        // Known answer: HMAC-SHA-256(key 0x01 × 32, "\"ana@example.com\"") truncated.
        let mut mac = Hmac::<Sha256>::new_from_slice(&[1u8; 32]).unwrap();
        mac.update(b"\"ana@example.com\"");
        let want = hex::encode(&mac.finalize().into_bytes()[..TOKEN_BYTES]);
        assert_eq!(token, format!("tok_{want}"));
        // The value's JSON type counts: "1" and 1 differ.
        assert_ne!(key(1).token(&json!("1")), key(1).token(&json!(1)));
        // Tokens are not mistaken for secrets or other PII by the detectors.
        assert!(scan(&token, &PiiKind::ALL).is_empty(), "{token}");
    }

    #[test]
    fn keep_exempts_a_field_from_the_detectors() {
        let r = redactor(&format!(
            "version = \"t1\"\n{}",
            rule("/support_address", "keep")
        ));
        let v = scrub(
            &r,
            json!({"support_address": "help@example.com", "from": "bob@example.com"}),
        );
        assert_eq!(
            v,
            json!({"support_address": "help@example.com", "from": "[REDACTED:email]"})
        );
    }

    #[test]
    fn dotted_paths_walk_arrays_and_pointers_name_elements() {
        let r = redactor(&format!(
            "version = \"t1\"\n{}{}{}",
            rule("items.card_holder", "mask"),
            rule("/lines/1", "drop"),
            rule("/rows/*/secret", "drop"),
        ));
        let v = scrub(
            &r,
            json!({
                "items": [{"card_holder": "Ana", "n": 1}, [{"card_holder": "Bo"}]],
                "lines": ["a", "b", "c"],
                "rows": [{"secret": 1, "ok": 2}, {"ok": 3}],
            }),
        );
        assert_eq!(
            v,
            json!({
                "items": [{"card_holder": FIELD_MASK, "n": 1}, [{"card_holder": FIELD_MASK}]],
                "lines": ["a", "c"],
                "rows": [{"ok": 2}, {"ok": 3}],
            })
        );
        // A pointer without a wildcard does not walk into arrays.
        let r = redactor(&format!(
            "version = \"t1\"\n{}",
            rule("/rows/secret", "drop")
        ));
        let v = json!({"rows": [{"secret": 1}]});
        assert_eq!(scrub(&r, v.clone()), v);
    }

    #[test]
    fn near_misses_are_not_matched() {
        let r = redactor(&format!(
            "version = \"t1\"\n{}{}{}",
            rule("/customer/email", "drop"),
            rule("customer.phone", "drop"),
            rule("**.*_token", "mask"),
        ));
        let v = json!({
            "customer": {"emails": 1, "email_verified": true, "phone_type": "mobile", "x": {"email": 2}},
            "customer_email": 3,
            "email": 4,
            "token": "t",
            "tokens": {"token_count": 5},
            "a": {"refresh_token": "r", "token_": 6},
        });
        let want = json!({
            "customer": {"emails": 1, "email_verified": true, "phone_type": "mobile", "x": {"email": 2}},
            "customer_email": 3,
            "email": 4,
            "token": "t",
            "tokens": {"token_count": 5},
            "a": {"refresh_token": FIELD_MASK, "token_": 6},
        });
        assert_eq!(scrub(&r, v), want);
    }

    #[test]
    fn the_first_matching_rule_decides_and_pointer_escapes_work() {
        let r = redactor(&format!(
            "version = \"t1\"\n{}{}{}",
            rule("/a/b", "keep"),
            rule("**.b", "drop"),
            rule("/k~1v/x~0y", "mask"),
        ));
        let v = scrub(
            &r,
            json!({"a": {"b": "ip 10.1.2.3"}, "c": {"b": 1}, "k/v": {"x~y": 2}}),
        );
        assert_eq!(
            v,
            json!({"a": {"b": "ip 10.1.2.3"}, "c": {}, "k/v": {"x~y": FIELD_MASK}})
        );
    }

    #[test]
    fn rules_limited_to_classifications_and_detector_selection() {
        let r = redactor(
            "version = \"t1\"\ndetectors = [\"email\"]\n[[rules]]\nfield = \"name\"\naction = \"mask\"\nclassifications = [\"pii\"]\n",
        );
        let payload = json!({"name": "Ana", "mail": "ana@example.com", "ip": "10.1.2.3"});
        let mut internal = payload.clone();
        r.apply(&mut internal, "internal");
        assert_eq!(
            internal,
            json!({"name": "Ana", "mail": "[REDACTED:email]", "ip": "10.1.2.3"}),
            "only the e-mail detector runs"
        );
        let mut pii = payload;
        r.apply(&mut pii, "pii");
        assert_eq!(
            pii,
            json!({"name": FIELD_MASK, "mail": "[REDACTED:email]", "ip": "10.1.2.3"})
        );
    }

    #[test]
    fn detectors_still_run_below_unmatched_fields_and_on_keys() {
        let r = redactor(&format!("version = \"t1\"\n{}", rule("/x", "drop")));
        let v = scrub(
            &r,
            json!({"x": 1, "y": {"bob@example.com": "call +14155552671", "n": 4111111111111111u64}}),
        );
        assert_eq!(
            v,
            json!({"y": {"[REDACTED:email]": "call [REDACTED:phone]", "n": "[REDACTED:card]"}})
        );
    }

    #[test]
    fn the_builtin_policy_masks_every_detector_and_has_a_fixed_digest() {
        let b = Redactor::builtin();
        assert_eq!(b.policy().version(), BUILTIN_POLICY_VERSION);
        assert_eq!(b.policy().detectors(), PiiKind::ALL);
        assert!(b.policy().rules().is_empty());
        let canonical = serde_json_canonicalizer::to_vec(&b.policy().canonical()).unwrap();
        assert_eq!(
            String::from_utf8(canonical.clone()).unwrap(),
            r#"{"detectors":["secret","email","iban","card","national-id","ip","phone"],"detectors_revision":2,"format":"provledger-redaction-policy/1","rules":[],"version":"builtin-v1"}"#
        );
        assert_eq!(b.digest(), <[u8; 32]>::from(Sha256::digest(&canonical)));
        let stamp = b.stamp();
        assert_eq!(stamp.version, BUILTIN_POLICY_VERSION);
        assert_eq!(stamp.policy, None);
        let v = scrub(b, json!({"t": "mail bob@example.org"}));
        assert_eq!(v, json!({"t": "mail [REDACTED:email]"}));
    }

    #[test]
    fn the_digest_ignores_detector_order_but_not_rule_order() {
        let a = redactor("version = \"t1\"\ndetectors = [\"ip\", \"email\"]\n");
        let b = redactor("version = \"t1\"\ndetectors = [\"email\", \"ip\", \"email\"]\n");
        assert_eq!(a.digest(), b.digest());
        let c = redactor(&format!(
            "version = \"t1\"\n{}{}",
            rule("/a", "drop"),
            rule("/b", "mask")
        ));
        let d = redactor(&format!(
            "version = \"t1\"\n{}{}",
            rule("/b", "mask"),
            rule("/a", "drop")
        ));
        assert_ne!(c.digest(), d.digest());
        let e = redactor("version = \"t2\"\ndetectors = [\"ip\", \"email\"]\n");
        assert_ne!(a.digest(), e.digest());
    }

    fn parse_err(toml: &str) -> String {
        RedactionPolicy::from_toml(toml).unwrap_err().to_string()
    }

    #[test]
    fn invalid_policies_are_refused_naming_the_field_or_line() {
        assert_eq!(
            parse_err("version = \"v1\"\ndetectors = [\"email\", \"passport\"]\n"),
            "redaction policy: detectors[1]: unknown detector \"passport\"; known: secret, email, iban, card, national-id, ip, phone"
        );
        assert_eq!(
            parse_err(&format!("version = \"v1\"\n{}{}", rule("/a", "drop"), rule("a..b", "drop"))),
            "redaction policy: rules[1].field: \"a..b\" has an empty segment (`..` or a dot at an end); use a JSON pointer for keys with dots"
        );
        assert_eq!(
            parse_err(&format!("version = \"v1\"\n{}", rule("/a//b", "drop"))),
            "redaction policy: rules[0].field: \"/a//b\" has an empty segment"
        );
        assert_eq!(
            parse_err(&format!("version = \"v1\"\n{}", rule("/a~2", "drop"))),
            "redaction policy: rules[0].field: \"/a~2\": `~` must be followed by 0 or 1 (RFC 6901)"
        );
        assert_eq!(
            parse_err(&format!("version = \"v1\"\n{}", rule("**", "drop"))),
            "redaction policy: rules[0].field: \"**\" names no field"
        );
        assert_eq!(
            parse_err(&format!("version = \"v1\"\n{}", rule("", "drop"))),
            "redaction policy: rules[0].field: must not be empty"
        );
        assert_eq!(
            parse_err("version = \"\"\n"),
            "redaction policy: version: must be 1 to 64 characters"
        );
        assert_eq!(
            parse_err("version = \"v 1\"\n"),
            "redaction policy: version: may only hold ASCII letters, digits and _ - . :"
        );
        assert_eq!(
            parse_err(&format!(
                "version = \"v1\"\n{}classifications = [\"p i\"]\n",
                rule("/a", "drop")
            )),
            "redaction policy: rules[0].classifications[0]: must be a classification name: ASCII letters, digits and _ - . :"
        );
        // Syntax and unknown keys or actions: the parser names the line and column.
        let e = parse_err("version = \"v1\"\n[[rules]]\nfield = \"/a\"\naction = \"hash\"\n");
        assert!(e.contains("line 4, column 10"), "{e}");
        assert!(e.contains("unknown variant `hash`"), "{e}");
        let e = parse_err("version = \"v1\"\ndetector = []\n");
        assert!(
            e.contains("line 2") && e.contains("unknown field `detector`"),
            "{e}"
        );
        let e = parse_err("version = \"v1\"\n[[rules]\n");
        assert!(e.contains("line 2"), "{e}");
        let e = parse_err("detectors = []\n");
        assert!(e.contains("missing field `version`"), "{e}");
    }

    #[test]
    fn json_policy_files_parse_like_toml_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let json_path = dir.path().join("p.json");
        std::fs::write(
            &json_path,
            r#"{"version": "v1", "rules": [{"field": "/a", "action": "tokenize"}]}"#,
        )
        .unwrap();
        let toml_path = dir.path().join("p.toml");
        std::fs::write(
            &toml_path,
            format!("version = \"v1\"\n{}", rule("/a", "tokenize")),
        )
        .unwrap();
        let a = RedactionPolicy::from_file(&json_path).unwrap();
        assert_eq!(a, RedactionPolicy::from_file(&toml_path).unwrap());
        assert!(a.tokenizes());
        std::fs::write(&json_path, "{\"version\": \"v1\",\n \"rules\": 3}").unwrap();
        let e = RedactionPolicy::from_file(&json_path)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "redaction policy {} does not parse",
                json_path.display()
            )),
            "{e}"
        );
        assert!(e.contains("line 2"), "{e}");
        let e = RedactionPolicy::from_file(&dir.path().join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cannot read redaction policy"), "{e}");
        // Tokenizing needs a key.
        assert!(matches!(
            Redactor::new(a, None),
            Err(PolicyError::NoTokenKey { .. })
        ));
    }

    #[test]
    fn the_token_key_file_is_created_once_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenization.key");
        let k1 = TokenKey::load_or_create(&path).unwrap();
        let k2 = TokenKey::load_or_create(&path).unwrap();
        assert_eq!(k1, k2);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 65);
        assert_eq!(TokenKey::load(&path).unwrap(), k1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // The Debug form shows the public id only.
        let debug = format!("{k1:?}");
        assert_eq!(debug, format!("TokenKey({})", k1.id()));
        assert!(!debug.contains(text.trim()));
        assert_eq!(k1.id().len(), 16);
        std::fs::write(&path, "abcd\n").unwrap();
        let e = TokenKey::load(&path).unwrap_err().to_string();
        assert!(e.ends_with("must hold 64 hex digits (32 bytes)"), "{e}");
    }

    #[test]
    fn leaves_without_a_stamp_still_decode_to_the_same_bytes() {
        let mut leaf = Leaf {
            v: 1,
            index: 3,
            time: 1_764_028_800_000,
            tenant: "default".to_owned(),
            kind: "input".to_owned(),
            entity: None,
            actor: Actor {
                kind: "agent".to_owned(),
                id: "a1".to_owned(),
            },
            refs: Vec::new(),
            attributes: Default::default(),
            classification: "internal".to_owned(),
            commitment: None,
            redaction: None,
        };
        let old = leaf.encode().unwrap();
        assert!(!old.windows(9).any(|w| w == b"redaction"));
        assert_eq!(Leaf::decode(&old).unwrap().encode().unwrap(), old);
        leaf.redaction = Some(RedactionStamp {
            version: "v1".to_owned(),
            digest: [0xab; 32],
            policy: Some([0xcd; 32]),
        });
        let new = leaf.encode().unwrap();
        // The stamp is the last key: old bytes, map size + 1, then `redaction` → {version,
        // digest, policy}.
        let mut want = old.clone();
        want[0] += 1;
        want.extend_from_slice(b"\xa9redaction\x83\xa7version\xa2v1\xa6digest\xc4\x20");
        want.extend_from_slice(&[0xab; 32]);
        want.extend_from_slice(b"\xa6policy\xc4\x20");
        want.extend_from_slice(&[0xcd; 32]);
        assert_eq!(new, want);
        assert_eq!(Leaf::decode(&new).unwrap(), leaf);
    }

    /// The example of `docs/api.md` ("Redaction policy files") does what the text says.
    #[test]
    fn the_documented_example_policy_works_as_documented() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md"))
            .unwrap();
        let section = &doc[doc.find("#### Redaction policy files").unwrap()..];
        let block = |lang: &str, nth: usize| -> String {
            let fence = format!("```{lang}\n");
            let start = section.match_indices(&fence).nth(nth).unwrap().0 + fence.len();
            let len = section[start..].find("```").unwrap();
            section[start..start + len].to_owned()
        };
        let r = redactor(&block("toml", 0));
        assert_eq!(r.policy().version(), "acme-2026-11");
        let mut payload: serde_json::Value = serde_json::from_str(&block("json", 0)).unwrap();
        r.apply(&mut payload, "pii");
        let mut stored: serde_json::Value = serde_json::from_str(&block("json", 1)).unwrap();
        // The documented token is made up: put in the real one.
        stored["customer"]["email"] = key(7).token(&json!("ana@example.com")).into();
        assert_eq!(payload, stored);
    }

    fn open(dir: &Path) -> Ledger {
        let key = provledger_signer::SigningKey::generate("example.com/log").unwrap();
        Ledger::open(
            &crate::LedgerConfig::new(dir),
            key,
            &prometheus::Registry::new(),
        )
        .unwrap()
    }

    fn input(v: serde_json::Value) -> RecordInput {
        serde_json::from_value(v).unwrap()
    }

    /// A policy recorded by a build whose detectors were revision 1 (its payload has no
    /// `detectors_revision`, so its digest differs) is recorded again by this build, even when
    /// the file is the same: leaves must not name the old detectors for what the new ones mask.
    #[test]
    fn a_policy_recorded_under_other_detectors_is_recorded_again() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = open(dir.path());
        let policy = RedactionPolicy::from_toml("version = \"v1\"\n").unwrap();
        let mut old = policy.canonical();
        old.as_object_mut().unwrap().remove("detectors_revision");
        let old_digest: [u8; 32] =
            Sha256::digest(serde_json_canonicalizer::to_vec(&old).unwrap()).into();
        let record = input(json!({
            "kind": "policy", "tenant": DEFAULT_TENANT, "entity": POLICY_ENTITY,
            "actor": {"type": "service", "id": "provledger"},
            "attributes": {"version": "v1", "digest": format!("sha256:{}", hex::encode(old_digest))},
            "payload": old,
        }));
        let stamp = RedactionStamp {
            version: "v1".to_owned(),
            digest: old_digest,
            policy: None,
        };
        let prepared = PreparedRecord::prepare_policy_record(record, stamp).unwrap();
        let old_id = ledger.append_blocking(vec![prepared]).unwrap()[0].id;

        let installed = ledger
            .install_redaction_policy(Redactor::new(policy.clone(), None).unwrap())
            .unwrap();
        let PolicyInstall::Recorded { record, index: 1 } = installed else {
            panic!("{installed:?}");
        };
        assert_ne!(record, old_id);
        let stored = ledger.record(&record, None).unwrap();
        assert_eq!(
            stored.payload.unwrap()["detectors_revision"],
            DETECTORS_REVISION
        );
        // And once recorded under this revision, not again.
        let again = ledger
            .install_redaction_policy(Redactor::new(policy, None).unwrap())
            .unwrap();
        assert_eq!(again, PolicyInstall::AlreadyRecorded { record });
    }

    #[test]
    fn installing_records_a_policy_once_per_version_digest_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let doc = format!("version = \"v1\"\n{}", rule("/email", "tokenize"));
        let policy = RedactionPolicy::from_toml(&doc).unwrap();
        let ledger = open(dir.path());
        // Before installation: the built-in policy, stamped without a policy record.
        let r0 = ledger
            .append_blocking(vec![ledger
                .prepare(input(json!({"kind": "input", "actor": {"type": "a", "id": "b"}, "payload": {"email": "x@example.com"}})), "record")
                .unwrap()])
            .unwrap();
        let leaf0 = Leaf::decode(&r0[0].leaf).unwrap();
        assert_eq!(leaf0.redaction, Some(Redactor::builtin().stamp()));

        let first = ledger
            .install_redaction_policy(Redactor::new(policy.clone(), Some(key(1))).unwrap())
            .unwrap();
        let PolicyInstall::Recorded { record, index } = first else {
            panic!("{first:?}");
        };
        assert_eq!(index, 1);
        let stored = ledger.record(&record, None).unwrap();
        let r = Redactor::new(policy.clone(), Some(key(1))).unwrap();
        assert_eq!(stored.leaf.kind, "policy");
        assert_eq!(stored.leaf.entity.as_deref(), Some(POLICY_ENTITY));
        assert_eq!(stored.leaf.attributes["version"], "v1");
        assert_eq!(
            stored.leaf.attributes["digest"],
            format!("sha256:{}", hex::encode(r.digest()))
        );
        assert_eq!(stored.leaf.attributes["token_key"], key(1).id());
        assert_eq!(stored.payload, Some(policy.canonical()));
        // The policy record says its own version, but cannot cite itself.
        assert_eq!(stored.leaf.redaction, Some(r.stamp()));

        // Records now name the recorded policy, and are tokenized with its key.
        let rec = ledger
            .prepare(input(json!({"kind": "input", "actor": {"type": "a", "id": "b"}, "payload": {"email": "x@example.com"}})), "record")
            .unwrap();
        let r1 = ledger.append_blocking(vec![rec]).unwrap();
        let stored1 = ledger.record(&r1[0].id, None).unwrap();
        let stamp = stored1.leaf.redaction.unwrap();
        assert_eq!(stamp.version, "v1");
        assert_eq!(stamp.digest, r.digest());
        assert_eq!(stamp.policy, Some(*record.as_bytes()));
        assert_eq!(
            stored1.payload.unwrap()["email"],
            key(1).token(&json!("x@example.com"))
        );

        // The same policy and key again: nothing appended.
        let size = ledger.head().size;
        let again = ledger
            .install_redaction_policy(Redactor::new(policy.clone(), Some(key(1))).unwrap())
            .unwrap();
        assert_eq!(again, PolicyInstall::AlreadyRecorded { record });
        assert_eq!(ledger.head().size, size);
        // A new key, or a changed policy: a new version each.
        let rotated = ledger
            .install_redaction_policy(Redactor::new(policy, Some(key(2))).unwrap())
            .unwrap();
        assert!(matches!(rotated, PolicyInstall::Recorded { index, .. } if index == size));
        let v2 =
            RedactionPolicy::from_toml(&format!("version = \"v2\"\n{}", rule("/email", "drop")))
                .unwrap();
        let changed = ledger
            .install_redaction_policy(Redactor::new(v2, None).unwrap())
            .unwrap();
        assert!(matches!(changed, PolicyInstall::Recorded { index, .. } if index == size + 1));
        assert_eq!(
            ledger
                .entity_versions(DEFAULT_TENANT, POLICY_ENTITY, None, 10)
                .unwrap()
                .len(),
            3
        );
        assert_eq!(ledger.redactor().policy().version(), "v2");

        // Clients cannot write the policy entity, in any tenant.
        let err = ledger
            .prepare(input(json!({"kind": "policy", "tenant": "acme", "entity": POLICY_ENTITY, "actor": {"type": "a", "id": "b"}})), "record")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid record: record.entity: \"redaction-policy\" is reserved for records the ledger writes itself (the redaction policy, key rotations)"
        );
    }
}

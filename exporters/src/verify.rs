//! The offline verifier: one pass over a bundle, in file order. The header (format, version,
//! scope, checkpoint, keys) is checked first, then each record as it is read, then the signed
//! manifest against what was read, and last, when given, consistency with a later checkpoint.
//! The first problem found is the answer. Reads bundle versions 1 (the manifest lists every
//! record) and 2 (the manifest binds a digest of them).

use std::io::Read;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use provledger_ledger::{commitment, Leaf};
use provledger_signer::{
    leaf_hash, open_note, verify_checkpoint, verify_consistency, verify_inclusion, Hash,
    VerifierKey,
};
use rustc_hash::{FxHashMap, FxHashSet};
use sha2::{Digest, Sha256};

use crate::error::{BundleError, RecordFault};
use crate::format::{
    B64Hash, HexHash, ManifestIn, RecordIn, RecordsDigest, ScopeDoc, BUNDLE_FORMAT, FIELDS,
    MANIFEST_FORMAT, READABLE_VERSIONS,
};
use crate::framer::{FrameError, Framer};

/// Records framed before a batch is checked, and the most bytes a batch holds (a bigger record
/// makes a batch of one).
const BATCH_RECORDS: usize = 4096;
const BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Fewest records worth a thread of their own, and the most threads used.
const MIN_CHUNK: usize = 256;
const MAX_WORKERS: usize = 8;
/// Largest record object accepted (its payload included).
const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;
/// Largest header value (scope, checkpoint, keys) accepted.
const MAX_HEADER_BYTES: usize = 64 * 1024 * 1024;
/// Largest manifest accepted: a version 1 manifest takes about 80 bytes per record, so some 50
/// million records (a version 2 manifest is a few hundred bytes).
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024 * 1024;

/// A checkpoint the verifier already trusts, later than the bundle's, and the consistency proof
/// between the two (`GET /v1/proofs/consistency?from=<bundle size>&to=<later size>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaterCheckpoint {
    /// The later signed checkpoint note.
    pub checkpoint: String,
    /// The consistency proof from the bundle's tree size to the later one.
    pub proof: ConsistencyProof,
}

/// An RFC 6962 consistency proof between two tree sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsistencyProof {
    /// The older tree size.
    pub from: u64,
    /// The newer tree size.
    pub to: u64,
    /// The proof hashes.
    pub hashes: Vec<Hash>,
}

impl ConsistencyProof {
    /// Parses the JSON answer of `GET /v1/proofs/consistency`:
    /// `{"from": M, "to": N, "hashes": [<base64>…]}`.
    pub fn from_json(text: &str) -> Result<ConsistencyProof, BundleError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Wire {
            from: u64,
            to: u64,
            hashes: Vec<crate::format::B64Hash>,
        }
        let wire: Wire = serde_json::from_str(text).map_err(|e| {
            BundleError::Consistency(format!(
                "the consistency proof is not {{\"from\", \"to\", \"hashes\"}} JSON: {e}"
            ))
        })?;
        Ok(ConsistencyProof {
            from: wire.from,
            to: wire.to,
            hashes: wire.hashes.into_iter().map(|h| h.0).collect(),
        })
    }
}

/// Where the key that verified the bundle came from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyTrust {
    /// A key the caller trusts signed the checkpoint and the manifest.
    Trusted(VerifierKey),
    /// No key was given: the bundle's own key signed both, which proves the bundle is intact
    /// but not who made it. Compare the key with one obtained independently.
    BundleOnly(VerifierKey),
}

/// What a bundle that verified holds. Only [`verify_bundle`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleReport {
    origin: String,
    tree_size: u64,
    root: Hash,
    scope: String,
    records: u64,
    payloads: u64,
    payloads_absent: u64,
    internal_refs: u64,
    external_refs: u64,
    external_records: u64,
    key: KeyTrust,
    later: Option<(u64, Hash)>,
}

impl BundleReport {
    /// The log's origin (its checkpoint's first line).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Tree size of the checkpoint every proof is against.
    pub fn tree_size(&self) -> u64 {
        self.tree_size
    }

    /// Root hash of that checkpoint.
    pub fn root(&self) -> &Hash {
        &self.root
    }

    /// The bundle's scope, in words.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// Records verified (inclusion, leaf, scope).
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Payloads checked against their leaf's commitment.
    pub fn payloads(&self) -> u64 {
        self.payloads
    }

    /// Records whose leaf commits to a payload the bundle does not hold (erased or withheld).
    pub fn payloads_absent(&self) -> u64 {
        self.payloads_absent
    }

    /// Refs that cite a record of the bundle.
    pub fn internal_refs(&self) -> u64 {
        self.internal_refs
    }

    /// Refs that cite a record outside the bundle.
    pub fn external_refs(&self) -> u64 {
        self.external_refs
    }

    /// Distinct records outside the bundle that its records cite.
    pub fn external_records(&self) -> u64 {
        self.external_records
    }

    /// The key that verified the bundle, and whether the caller trusted it.
    pub fn key(&self) -> &KeyTrust {
        &self.key
    }

    /// Size and root of the later checkpoint the bundle was proven consistent with.
    pub fn later(&self) -> Option<(u64, &Hash)> {
        self.later.as_ref().map(|(s, r)| (*s, r))
    }
}

/// Verifies a bundle read from `reader`, offline.
///
/// With `trusted` keys, the bundle's `keys` must include one of them and the checkpoint and
/// manifest must be signed by it; with none, the bundle's own keys are used and the report
/// says so ([`KeyTrust::BundleOnly`]). With `later`, the bundle's checkpoint must be proven a
/// prefix of the later checkpoint, which must verify with the same keys.
pub fn verify_bundle<R: Read>(
    reader: R,
    trusted: &[VerifierKey],
    later: Option<&LaterCheckpoint>,
) -> Result<BundleReport, BundleError> {
    verify_bundle_observed(reader, trusted, later, None)
}

/// Called with each record's leaf hash and the SHA-256 of its leaf bytes, in bundle order, as
/// the records pass their own checks.
pub(crate) type LeafObserver<'a> = dyn FnMut(&Hash, &[u8; 32]) + 'a;

/// [`verify_bundle`], handing each record's leaf hash and leaf-bytes SHA-256 to `observe`
/// (what a DSSE statement's subjects are checked against).
pub(crate) fn verify_bundle_observed<R: Read>(
    reader: R,
    trusted: &[VerifierKey],
    later: Option<&LaterCheckpoint>,
    mut observe: Option<&mut LeafObserver<'_>>,
) -> Result<BundleReport, BundleError> {
    let mut f = Framer::new(reader);
    let mut buf = Vec::new();
    f.expect(b'{', "at the start of the bundle")?;

    let format: String = header_value(&mut f, &mut buf, 0)?;
    if format != BUNDLE_FORMAT {
        return Err(BundleError::Format { found: format });
    }
    let version: u64 = header_value(&mut f, &mut buf, 1)?;
    if !READABLE_VERSIONS.contains(&version) {
        return Err(BundleError::Version { found: version });
    }
    let scope_json: serde_json::Value = header_value(&mut f, &mut buf, 2)?;
    let scope: ScopeDoc =
        serde_json::from_value(scope_json.clone()).map_err(|e| BundleError::Malformed {
            offset: f.offset(),
            reason: format!("scope is not a bundle scope: {e}"),
        })?;
    let checkpoint: String = header_value(&mut f, &mut buf, 3)?;
    let keys: Vec<String> = header_value(&mut f, &mut buf, 4)?;
    let trust = Trust::establish(&checkpoint, &keys, trusted)?;

    let ctx = Context {
        tree_size: trust.tree_size,
        root: trust.root,
        scope,
        digest_leaves: observe.is_some(),
    };
    let mut state = State::new(
        matches!(ctx.scope, ScopeDoc::Records { depth, .. } if depth > 0),
        version == 1,
    );
    field_name(&mut f, &mut buf, 5)?;
    f.expect(b'[', "to open records")?;
    if f.peek()? == Some(b']') {
        f.expect(b']', "")?;
    } else {
        check_records(&mut f, &ctx, &mut state, &mut observe)?;
    }

    field_name(&mut f, &mut buf, 6)?;
    let manifest_offset = f.offset();
    f.value(&mut buf, MAX_MANIFEST_BYTES)?;
    let manifest_bytes = std::mem::take(&mut buf);
    let signature: String = header_value(&mut f, &mut buf, 7)?;
    f.expect(b'}', "to close the bundle")?;
    if let Some(b) = f.peek()? {
        return Err(BundleError::Malformed {
            offset: f.offset(),
            reason: format!("unexpected data after the bundle, starting with byte {b:#04x}"),
        });
    }

    let manifest = trust.open_manifest(&manifest_bytes, manifest_offset, &signature)?;
    drop(manifest_bytes);
    state.check_manifest(version, manifest, &scope_json, &checkpoint, &ctx)?;
    state.check_refs()?;
    state.check_scope(&ctx.scope)?;
    let later = later.map(|l| trust.check_later(l)).transpose()?;

    Ok(BundleReport {
        origin: trust.origin,
        tree_size: ctx.tree_size,
        root: ctx.root,
        scope: ctx.scope.to_string(),
        records: state.count,
        payloads: state.payloads,
        payloads_absent: state.payloads_absent,
        internal_refs: state.internal_refs,
        external_refs: state.external_refs,
        external_records: state.unresolved.len() as u64,
        key: trust.key,
        later,
    })
}

impl From<FrameError> for BundleError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => BundleError::Io(e),
            FrameError::Syntax { offset, reason } => BundleError::Malformed { offset, reason },
        }
    }
}

/// Reads the records up to the closing `]`, in batches: a batch is framed in file order, its
/// records are checked on all cores, and the results are taken in file order, so the error
/// reported is always the first one in the file.
fn check_records<R: Read>(
    f: &mut Framer<R>,
    ctx: &Context,
    state: &mut State,
    observe: &mut Option<&mut LeafObserver<'_>>,
) -> Result<(), BundleError> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_WORKERS);
    let mut batch: Vec<Vec<u8>> = Vec::new();
    loop {
        let (mut count, mut bytes, mut end, mut framing) = (0, 0, false, None);
        while count < BATCH_RECORDS && bytes < BATCH_BYTES {
            if batch.len() == count {
                batch.push(Vec::new());
            }
            let Some(slot) = batch.get_mut(count) else {
                break;
            };
            if let Err(e) = f.value(slot, MAX_RECORD_BYTES) {
                framing = Some(e);
                break;
            }
            bytes += slot.len();
            count += 1;
            match f.one_of(b",]", "after a record") {
                Ok(b']') => {
                    end = true;
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    framing = Some(e);
                    break;
                }
            }
        }
        let first = state.count;
        let records = batch.get(..count).unwrap_or_default();
        for (position, result) in check_batch(records, first, ctx, workers) {
            let checked = result?;
            if let (Some(observe), Some(digest)) = (observe.as_mut(), &checked.leaf_sha256) {
                observe(&checked.leaf_hash, digest);
            }
            state.accept(checked, position)?;
        }
        if let Some(e) = framing {
            return Err(e.into());
        }
        if end {
            return Ok(());
        }
    }
}

/// Checks records on up to `workers` threads; results in order, each chunk stopping at its
/// first error (nothing after an error is needed).
fn check_batch(
    records: &[Vec<u8>],
    first: u64,
    ctx: &Context,
    workers: usize,
) -> Vec<(u64, Result<Checked, BundleError>)> {
    let run = |chunk: &[Vec<u8>], start: u64| {
        let mut out = Vec::with_capacity(chunk.len());
        for (position, raw) in (start..).zip(chunk) {
            let result = check_record(raw, position, ctx);
            let failed = result.is_err();
            out.push((position, result));
            if failed {
                break;
            }
        }
        out
    };
    if workers <= 1 || records.len() < 2 * MIN_CHUNK {
        return run(records, first);
    }
    let size = records.len().div_ceil(workers).max(MIN_CHUNK);
    std::thread::scope(|scope| {
        let mut chunks = records.chunks(size).zip((first..).step_by(size));
        let own = chunks.next();
        let others: Vec<_> = chunks
            .map(|(chunk, start)| scope.spawn(move || run(chunk, start)))
            .collect();
        let mut out = own
            .map(|(chunk, start)| run(chunk, start))
            .unwrap_or_default();
        for handle in others {
            let stopped = out.last().is_some_and(|(_, r)| r.is_err());
            // A panic in a check is a bug; report it as the failure of that chunk.
            let chunk = handle.join().unwrap_or_else(|_| {
                vec![(
                    first,
                    Err(BundleError::Malformed {
                        offset: 0,
                        reason: "a record check panicked".into(),
                    }),
                )]
            });
            if !stopped {
                out.extend(chunk);
            }
        }
        out
    })
}

/// Reads `"<FIELDS[n]>":` (after a `,` unless it is the first field), refusing other names.
fn field_name<R: Read>(f: &mut Framer<R>, buf: &mut Vec<u8>, n: usize) -> Result<(), BundleError> {
    let want = FIELDS.get(n).copied().unwrap_or_default();
    if n > 0 {
        f.one_of(b",", &format!("before field {want:?}"))?;
    }
    let offset = f.offset();
    f.value(buf, 4096)?;
    let name: String = serde_json::from_slice(buf).map_err(|e| BundleError::Malformed {
        offset,
        reason: format!("expected the field name {want:?}: {e}"),
    })?;
    if name != want {
        let reason = if FIELDS.contains(&name.as_str()) {
            format!(
                "field {name:?} is out of order: a bundle lists {} in this order, and {want:?} comes here",
                FIELDS.join(", ")
            )
        } else {
            format!("unknown field {name:?} where {want:?} belongs")
        };
        return Err(BundleError::Malformed { offset, reason });
    }
    Ok(f.expect(b':', &format!("after {want:?}"))?)
}

/// Reads field `FIELDS[n]` and parses its value.
fn header_value<R: Read, T: serde::de::DeserializeOwned>(
    f: &mut Framer<R>,
    buf: &mut Vec<u8>,
    n: usize,
) -> Result<T, BundleError> {
    field_name(f, buf, n)?;
    let offset = f.offset();
    f.value(buf, MAX_HEADER_BYTES)?;
    serde_json::from_slice(buf).map_err(|e| BundleError::Malformed {
        offset,
        reason: format!(
            "{} is not valid: {e}",
            FIELDS.get(n).copied().unwrap_or_default()
        ),
    })
}

/// The keys and checkpoint, once verified.
struct Trust {
    origin: String,
    tree_size: u64,
    root: Hash,
    /// Keys named after the origin that verified the checkpoint.
    log_keys: Vec<VerifierKey>,
    /// Every key in use (trusted, or the bundle's own).
    pool: Vec<VerifierKey>,
    key: KeyTrust,
}

impl Trust {
    fn establish(
        checkpoint: &str,
        keys: &[String],
        trusted: &[VerifierKey],
    ) -> Result<Trust, BundleError> {
        let bundle_keys = keys
            .iter()
            .enumerate()
            .map(|(position, k)| {
                VerifierKey::parse(k).map_err(|source| BundleError::Key { position, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let pool = if trusted.is_empty() {
            bundle_keys.clone()
        } else {
            if !bundle_keys.iter().any(|k| trusted.contains(k)) {
                let list = |ks: &[VerifierKey]| {
                    let names: Vec<String> = ks.iter().map(ToString::to_string).collect();
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                };
                return Err(BundleError::UntrustedKeys {
                    bundle: list(&bundle_keys),
                    trusted: list(trusted),
                });
            }
            trusted.to_vec()
        };
        let verified = verify_checkpoint(checkpoint, &pool).map_err(BundleError::Checkpoint)?;
        let cp = verified.checkpoint();
        let named: Vec<VerifierKey> = pool
            .iter()
            .filter(|k| k.name() == cp.origin)
            .cloned()
            .collect();
        let (_, log_keys) =
            open_note(checkpoint, &named).map_err(|e| BundleError::Checkpoint(e.into()))?;
        let first = log_keys.first().cloned().ok_or(BundleError::Checkpoint(
            provledger_signer::CheckpointError::Note(
                provledger_signer::NoteError::NoKnownSignature,
            ),
        ))?;
        let key = if trusted.is_empty() {
            KeyTrust::BundleOnly(first)
        } else {
            KeyTrust::Trusted(first)
        };
        Ok(Trust {
            origin: cp.origin.clone(),
            tree_size: cp.size,
            root: cp.root,
            log_keys,
            pool,
            key,
        })
    }

    /// Checks the manifest signature over the RFC 8785 form of the manifest, then parses it.
    fn open_manifest(
        &self,
        bytes: &[u8],
        offset: u64,
        signature: &str,
    ) -> Result<ManifestIn, BundleError> {
        let malformed = |reason: String| BundleError::Malformed { offset, reason };
        let key_name = self
            .log_keys
            .first()
            .map(ToString::to_string)
            .unwrap_or_default();
        let bad_signature = || BundleError::ManifestSignature {
            key: key_name.clone(),
        };
        let mut sig = [0u8; 64];
        match STANDARD.decode(signature) {
            Ok(raw) if raw.len() == 64 => sig.copy_from_slice(&raw),
            _ => return Err(bad_signature()),
        }
        // A manifest as the exporter writes it is already canonical; anything else (a bundle
        // re-indented by a tool, say) is canonicalized from its parsed value.
        let parsed: Option<ManifestIn> = serde_json::from_slice(bytes).ok();
        let fast = parsed
            .as_ref()
            .is_some_and(|m| canonical_manifest(m).is_ok_and(|c| c == bytes));
        let canonical = if fast {
            bytes.to_vec()
        } else {
            let value: serde_json::Value = serde_json::from_slice(bytes)
                .map_err(|e| malformed(format!("manifest is not JSON: {e}")))?;
            serde_json_canonicalizer::to_vec(&value)
                .map_err(|e| malformed(format!("manifest cannot be canonicalized: {e}")))?
        };
        if !self.log_keys.iter().any(|k| k.verify_raw(&canonical, &sig)) {
            return Err(bad_signature());
        }
        match parsed {
            Some(m) => Ok(m),
            None => serde_json::from_slice(bytes)
                .map_err(|e| malformed(format!("manifest is not a bundle manifest: {e}"))),
        }
    }

    fn check_later(&self, later: &LaterCheckpoint) -> Result<(u64, Hash), BundleError> {
        let verified = verify_checkpoint(&later.checkpoint, &self.pool)
            .map_err(BundleError::LaterCheckpoint)?;
        let cp = verified.checkpoint();
        let fail = |s: String| Err(BundleError::Consistency(s));
        if cp.origin != self.origin {
            return fail(format!(
                "the later checkpoint is of log {:?}, the bundle's of {:?}",
                cp.origin, self.origin
            ));
        }
        let proof = &later.proof;
        if proof.from != self.tree_size || proof.to != cp.size {
            return fail(format!(
                "the proof is from size {} to {}, but the bundle's checkpoint has size {} and the later one {}: fetch /v1/proofs/consistency?from={}&to={}",
                proof.from, proof.to, self.tree_size, cp.size, self.tree_size, cp.size
            ));
        }
        if self.tree_size == 0 {
            // The empty tree is a prefix of every tree.
            return Ok((cp.size, cp.root));
        }
        verify_consistency(self.tree_size, cp.size, &self.root, &cp.root, &proof.hashes)
            .map_err(|e| BundleError::Consistency(e.to_string()))?;
        Ok((cp.size, cp.root))
    }
}

/// The RFC 8785 form of a parsed manifest, without copying its lists.
fn canonical_manifest(m: &ManifestIn) -> serde_json::Result<Vec<u8>> {
    #[derive(serde::Serialize)]
    struct View<'a> {
        format: &'a str,
        version: u64,
        scope: &'a serde_json::Value,
        checkpoint_sha256: HexHash,
        tree_size: u64,
        root: B64Hash,
        #[serde(skip_serializing_if = "Option::is_none")]
        indexes: Option<&'a [u64]>,
        #[serde(skip_serializing_if = "Option::is_none")]
        leaf_hashes: Option<&'a [HexHash]>,
        #[serde(skip_serializing_if = "Option::is_none")]
        record_count: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        records_sha256: Option<HexHash>,
    }
    serde_json_canonicalizer::to_vec(&View {
        format: &m.format,
        version: m.version,
        scope: &m.scope,
        checkpoint_sha256: m.checkpoint_sha256,
        tree_size: m.tree_size,
        root: m.root,
        indexes: m.indexes.as_deref(),
        leaf_hashes: m.leaf_hashes.as_deref(),
        record_count: m.record_count,
        records_sha256: m.records_sha256,
    })
}

/// What every record is checked against.
struct Context {
    tree_size: u64,
    root: Hash,
    scope: ScopeDoc,
    /// Whether to compute each record's SHA-256 of its leaf bytes (for an observer).
    digest_leaves: bool,
}

/// What one record contributes once its own checks passed.
struct Checked {
    index: u64,
    leaf_hash: Hash,
    /// SHA-256 of the leaf bytes, when the context asks for it.
    leaf_sha256: Option<[u8; 32]>,
    refs: Vec<Hash>,
    payload: PayloadState,
}

enum PayloadState {
    /// No payload was ever committed.
    None,
    /// Payload and salt match the commitment.
    Verified,
    /// The leaf commits to a payload the bundle does not carry.
    Absent,
}

/// Checks one record on its own: inclusion, leaf, payload, scope.
fn check_record(raw: &[u8], position: u64, ctx: &Context) -> Result<Checked, BundleError> {
    let rec: RecordIn<'_> =
        serde_json::from_slice(raw).map_err(|e| BundleError::MalformedRecord {
            position,
            reason: e.to_string(),
        })?;
    let index = rec.index;
    let fail = |fault: RecordFault| BundleError::Record {
        index,
        position,
        fault,
    };
    if index >= ctx.tree_size {
        return Err(fail(RecordFault::OutsideTree {
            tree_size: ctx.tree_size,
        }));
    }
    let leaf = STANDARD
        .decode(rec.leaf.as_bytes())
        .map_err(|_| fail(RecordFault::LeafEncoding))?;
    let mut proof = Vec::with_capacity(rec.inclusion_proof.len());
    for (i, h) in rec.inclusion_proof.iter().enumerate() {
        proof.push(decode_hash(h).ok_or_else(|| fail(RecordFault::ProofEncoding { position: i }))?);
    }
    let hash = leaf_hash(&leaf);
    verify_inclusion(&hash, index, ctx.tree_size, &proof, &ctx.root)
        .map_err(|e| fail(RecordFault::Inclusion(e)))?;
    let decoded = Leaf::decode(&leaf).map_err(|e| fail(RecordFault::LeafDecode(e.to_string())))?;
    if decoded.index != index {
        return Err(fail(RecordFault::IndexMismatch {
            leaf_index: decoded.index,
        }));
    }
    let payload = match (&rec.payload, &rec.salt) {
        (None, None) if decoded.commitment.is_some() => PayloadState::Absent,
        (None, None) => PayloadState::None,
        (Some(payload), Some(salt)) => {
            let salt = decode_salt(salt).ok_or_else(|| fail(RecordFault::SaltEncoding))?;
            let committed = decoded
                .commitment
                .ok_or_else(|| fail(RecordFault::NoCommitment))?;
            let canonical = serde_json_canonicalizer::to_vec(payload)
                .map_err(|e| fail(RecordFault::PayloadCanonical(e.to_string())))?;
            if commitment(&salt, &canonical) != committed {
                return Err(fail(RecordFault::PayloadMismatch));
            }
            PayloadState::Verified
        }
        _ => return Err(fail(RecordFault::PayloadSaltPair)),
    };
    if let Some(why) = outside_scope(&ctx.scope, index, &decoded) {
        return Err(fail(RecordFault::OutOfScope(why)));
    }
    Ok(Checked {
        index,
        leaf_hash: hash,
        leaf_sha256: ctx.digest_leaves.then(|| Sha256::digest(&leaf).into()),
        refs: decoded.refs.iter().map(|r| Hash(r.hash)).collect(),
        payload,
    })
}

/// Why a record is not one the scope selects, if it is not.
fn outside_scope(scope: &ScopeDoc, index: u64, leaf: &Leaf) -> Option<String> {
    match scope {
        ScopeDoc::Entity { tenant, entity } => {
            if leaf.tenant != *tenant || leaf.entity.as_deref() != Some(entity.as_str()) {
                return Some(format!(
                    "it is a version of entity {:?} of tenant {:?}, the scope is entity {entity:?} of tenant {tenant:?}",
                    leaf.entity.as_deref().unwrap_or(""),
                    leaf.tenant
                ));
            }
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
            if index < *scanned_from_index || index >= *scanned_to_index {
                return Some(format!(
                    "the scope covers indexes [{scanned_from_index}, {scanned_to_index})"
                ));
            }
            if from_time.is_some_and(|t| leaf.time < t) || to_time.is_some_and(|t| leaf.time >= t) {
                return Some(format!(
                    "its time {} is outside the scope's time range",
                    leaf.time
                ));
            }
            if kind.as_ref().is_some_and(|k| *k != leaf.kind) {
                return Some(format!("its kind is {:?}", leaf.kind));
            }
            if tenant.as_ref().is_some_and(|t| *t != leaf.tenant) {
                return Some(format!("its tenant is {:?}", leaf.tenant));
            }
        }
        ScopeDoc::Records { tenant, .. } => {
            if tenant.as_ref().is_some_and(|t| *t != leaf.tenant) {
                return Some(format!("its tenant is {:?}", leaf.tenant));
            }
        }
    }
    None
}

/// Standard base64 of exactly 32 bytes, without allocating.
fn decode_hash(s: &str) -> Option<Hash> {
    decode_32(s).map(Hash)
}

fn decode_salt(s: &str) -> Option<[u8; 32]> {
    decode_32(s)
}

fn decode_32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 44 {
        return None;
    }
    // 44 characters decode to at most 33 bytes; the padding makes it exactly 32.
    let mut out = [0u8; 33];
    match STANDARD.decode_slice(s.as_bytes(), &mut out) {
        Ok(32) => out.first_chunk::<32>().copied(),
        _ => None,
    }
}

/// What the records read so far add up to.
struct State {
    previous: Option<u64>,
    /// Records read.
    count: u64,
    /// Their indexes and leaf hashes, as a version 2 manifest binds them.
    digest: RecordsDigest,
    /// Their indexes and leaf hashes in order, kept only for a version 1 manifest, which lists
    /// them.
    listed: Option<(Vec<u64>, Vec<Hash>)>,
    /// Leaf hash → position and index, for every record read.
    seen: FxHashMap<Hash, (u64, u64)>,
    /// Cited hashes not (yet) in the bundle → position and index of the first record citing
    /// them.
    unresolved: FxHashMap<Hash, (u64, u64)>,
    /// Each record's refs, kept only when the scope's completeness depends on them.
    refs_of: Option<FxHashMap<Hash, Vec<Hash>>>,
    payloads: u64,
    payloads_absent: u64,
    internal_refs: u64,
    external_refs: u64,
}

impl State {
    fn new(keep_refs: bool, keep_list: bool) -> State {
        State {
            previous: None,
            count: 0,
            digest: RecordsDigest::default(),
            listed: keep_list.then(Default::default),
            seen: FxHashMap::default(),
            unresolved: FxHashMap::default(),
            refs_of: keep_refs.then(FxHashMap::default),
            payloads: 0,
            payloads_absent: 0,
            internal_refs: 0,
            external_refs: 0,
        }
    }

    fn accept(&mut self, c: Checked, position: u64) -> Result<(), BundleError> {
        if let Some(previous) = self.previous.filter(|p| c.index <= *p) {
            return Err(BundleError::Record {
                index: c.index,
                position,
                fault: RecordFault::NotAscending { previous },
            });
        }
        self.previous = Some(c.index);
        for r in &c.refs {
            if self.seen.contains_key(r) {
                self.internal_refs += 1;
            } else {
                self.external_refs += 1;
                self.unresolved.entry(*r).or_insert((position, c.index));
            }
        }
        match c.payload {
            PayloadState::Verified => self.payloads += 1,
            PayloadState::Absent => self.payloads_absent += 1,
            PayloadState::None => {}
        }
        self.seen.insert(c.leaf_hash, (position, c.index));
        self.count += 1;
        self.digest.add(c.index, &c.leaf_hash);
        if let Some((indexes, leaf_hashes)) = &mut self.listed {
            indexes.push(c.index);
            leaf_hashes.push(c.leaf_hash);
        }
        if let Some(refs_of) = &mut self.refs_of {
            refs_of.insert(c.leaf_hash, c.refs);
        }
        Ok(())
    }

    /// The signed manifest must describe exactly the bundle that was read.
    fn check_manifest(
        &mut self,
        version: u64,
        m: ManifestIn,
        scope: &serde_json::Value,
        checkpoint: &str,
        ctx: &Context,
    ) -> Result<(), BundleError> {
        let mismatch = |field: &'static str, detail: String| {
            Err(BundleError::ManifestMismatch { field, detail })
        };
        if m.format != MANIFEST_FORMAT || m.version != version {
            return mismatch(
                "format",
                format!(
                    "it is {:?} version {}, expected {MANIFEST_FORMAT:?} version {version} (the bundle's)",
                    m.format, m.version
                ),
            );
        }
        if m.scope != *scope {
            return mismatch("scope", "the bundle's scope was altered".into());
        }
        let digest = Hash(Sha256::digest(checkpoint.as_bytes()).into());
        if m.checkpoint_sha256.0 != digest {
            return mismatch(
                "checkpoint_sha256",
                "the bundle's checkpoint is not the one the manifest was signed for".into(),
            );
        }
        if m.tree_size != ctx.tree_size || m.root.0 != ctx.root {
            return mismatch(
                "tree_size and root",
                format!(
                    "the manifest says size {}, the checkpoint {}",
                    m.tree_size, ctx.tree_size
                ),
            );
        }
        match (m.indexes, m.leaf_hashes, m.record_count, m.records_sha256) {
            (None, None, Some(signed), Some(records_sha256)) if version == 2 => {
                if signed != self.count {
                    return Err(BundleError::RecordCount {
                        signed,
                        found: self.count,
                    });
                }
                let (_, read) = std::mem::take(&mut self.digest).finish();
                if read != records_sha256.0 {
                    return Err(BundleError::RecordsDigest);
                }
                Ok(())
            }
            (Some(indexes), Some(leaf_hashes), None, None) if version == 1 => {
                self.check_listed(&indexes, &leaf_hashes)
            }
            _ => mismatch(
                "members",
                format!(
                    "a version {version} manifest holds {}",
                    if version == 1 {
                        "indexes and leaf_hashes"
                    } else {
                        "record_count and records_sha256"
                    }
                ),
            ),
        }
    }

    /// Version 1: the manifest lists every record's index and leaf hash, in order.
    fn check_listed(&self, indexes: &[u64], leaf_hashes: &[HexHash]) -> Result<(), BundleError> {
        let (read_indexes, read_hashes) = self
            .listed
            .as_ref()
            .map_or((&[][..], &[][..]), |(i, h)| (i.as_slice(), h.as_slice()));
        if indexes.len() != leaf_hashes.len() {
            return Err(BundleError::ManifestMismatch {
                field: "indexes",
                detail: format!(
                    "it lists {} indexes but {} leaf hashes",
                    indexes.len(),
                    leaf_hashes.len()
                ),
            });
        }
        let listed = leaf_hashes.iter().map(|h| &h.0);
        let first_difference = read_hashes
            .iter()
            .zip(listed)
            .position(|(a, b)| a != b)
            .or_else(|| {
                (read_hashes.len() != leaf_hashes.len())
                    .then(|| read_hashes.len().min(leaf_hashes.len()))
            });
        if let Some(p) = first_difference {
            let listed = leaf_hashes.get(p).map(|h| h.0);
            let index_listed = indexes.get(p).copied();
            // A listed record the bundle does not hold anywhere is missing; otherwise the
            // bundle's record at p is the odd one out.
            if let (Some(h), Some(index)) = (listed, index_listed) {
                if !self.seen.contains_key(&h) {
                    return Err(BundleError::MissingRecord {
                        index,
                        position: p as u64,
                        leaf_hash: h,
                    });
                }
            }
            let index = read_indexes.get(p).copied().unwrap_or_default();
            return Err(BundleError::UnlistedRecord {
                index,
                position: p as u64,
                listed: index_listed.map_or(String::new(), |i| format!(" (record {i})")),
            });
        }
        if let Some(p) = read_indexes.iter().zip(indexes).position(|(a, b)| a != b) {
            return Err(BundleError::ManifestMismatch {
                field: "indexes",
                detail: format!("position {p} lists index {:?}", indexes.get(p)),
            });
        }
        Ok(())
    }

    /// A ref to a record of the bundle must cite an earlier one; the rest cite records outside.
    fn check_refs(&mut self) -> Result<(), BundleError> {
        let forward = self
            .unresolved
            .iter()
            .filter_map(|(hash, citing)| self.seen.get(hash).map(|cited| (*citing, *cited)))
            .min();
        if let Some(((position, index), (_, cited))) = forward {
            return Err(BundleError::Record {
                index,
                position,
                fault: RecordFault::ForwardRef { cited },
            });
        }
        Ok(())
    }

    /// A records scope must hold the requested records and their lineage to its depth, and
    /// nothing else.
    fn check_scope(&self, scope: &ScopeDoc) -> Result<(), BundleError> {
        let ScopeDoc::Records { ids, depth, .. } = scope else {
            return Ok(());
        };
        let mut reached: FxHashSet<Hash> = FxHashSet::default();
        let mut frontier = Vec::new();
        for id in ids {
            if !self.seen.contains_key(&id.0) {
                return Err(BundleError::Incomplete(format!(
                    "requested record {} is not in the bundle",
                    id.0
                )));
            }
            if reached.insert(id.0) {
                frontier.push(id.0);
            }
        }
        let empty = FxHashMap::default();
        let refs_of = self.refs_of.as_ref().unwrap_or(&empty);
        for hop in 0..*depth {
            let mut next = Vec::new();
            for h in frontier {
                for r in refs_of.get(&h).into_iter().flatten() {
                    if !self.seen.contains_key(r) {
                        return Err(BundleError::Incomplete(format!(
                            "record {} cites {r}, {} hop(s) upstream of the requested records and within depth {depth}, which is not in the bundle",
                            self.index_of(&h),
                            hop + 1
                        )));
                    }
                    if reached.insert(*r) {
                        next.push(*r);
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        if reached.len() as u64 != self.count {
            let (position, index) = self
                .seen
                .iter()
                .filter(|(h, _)| !reached.contains(*h))
                .map(|(_, at)| *at)
                .min()
                .unwrap_or_default();
            return Err(BundleError::Record {
                index,
                position,
                fault: RecordFault::OutOfScope(format!(
                    "it is not within {depth} hop(s) upstream of the requested records"
                )),
            });
        }
        Ok(())
    }

    fn index_of(&self, h: &Hash) -> u64 {
        self.seen
            .get(h)
            .map(|(_, index)| *index)
            .unwrap_or_default()
    }
}

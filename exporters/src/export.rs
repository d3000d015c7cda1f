//! Writing a bundle: resolve the scope against one signed head, stream the records with their
//! inclusion proofs as they are read, then write the manifest and sign it. Nothing in memory
//! grows with the number of records: the manifest binds them through a running digest
//! ([`RecordsDigest`]), and a lineage scope's indexes are found in descending order and spilled
//! to an anonymous temporary file ([`Spilled`]), 8 bytes each, then read back ascending.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use provledger_ledger::{commitment, Head, Leaf, Ledger, StoredRecord, DEFAULT_TENANT};
use provledger_signer::{Hash, SigningKey};
use sha2::{Digest, Sha256};

use crate::error::ExportError;
use crate::format::{
    B64Hash, Base64, HexHash, ManifestOut, RecordOut, RecordsDigest, ScopeDoc, BUNDLE_FORMAT,
    BUNDLE_VERSION, MANIFEST_FORMAT,
};

/// Versions of an entity read per page.
const PAGE: usize = 1024;

/// What to export.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scope {
    /// Every version of an entity, oldest first.
    Entity {
        /// The entity's tenant.
        tenant: String,
        /// The entity name.
        entity: String,
    },
    /// Records in an index range and/or a time range, optionally of one kind and tenant.
    Range(RangeScope),
    /// Chosen records, with their upstream lineage to `depth` hops (0: the records alone).
    Records {
        /// When set, every chosen record must belong to this tenant.
        tenant: Option<String>,
        /// Record ids.
        ids: Vec<Hash>,
        /// How many hops of `refs` to follow upstream.
        depth: u32,
    },
}

impl Scope {
    /// Every version of `entity` in `tenant` (the default tenant when `None`).
    pub fn entity(tenant: Option<&str>, entity: &str) -> Scope {
        Scope::Entity {
            tenant: tenant.unwrap_or(DEFAULT_TENANT).to_owned(),
            entity: entity.to_owned(),
        }
    }
}

/// A half-open index range `[from_index, to_index)` and/or time range `[from_time, to_time)`
/// (milliseconds since the Unix epoch, the leaves' integration time), with optional filters.
/// Unset bounds are open; an index range beyond the log is cut at the log's size.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeScope {
    /// First index.
    pub from_index: Option<u64>,
    /// Index after the last.
    pub to_index: Option<u64>,
    /// Earliest integration time, inclusive.
    pub from_time: Option<u64>,
    /// Latest integration time, exclusive.
    pub to_time: Option<u64>,
    /// Only records of this kind.
    pub kind: Option<String>,
    /// Only records of this tenant.
    pub tenant: Option<String>,
}

/// What an export wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportSummary {
    /// Records written.
    pub records: u64,
    /// Tree size of the checkpoint every proof is against.
    pub tree_size: u64,
    /// The scope, in words.
    pub scope: String,
}

/// Writes a bundle of `scope` to `out`. Every proof is against the ledger's head when the
/// export starts; `key` must be the log's signing key (it signs the manifest). `progress` is
/// called with (records or entries done, total when known).
pub fn export<W: Write>(
    ledger: &Ledger,
    key: &SigningKey,
    scope: &Scope,
    out: W,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<ExportSummary, ExportError> {
    export_observed(ledger, key, scope, out, progress, &mut |_, _| Ok(()))
}

/// Called with each record's id and leaf bytes as it is written.
pub(crate) type Observer<'a> = dyn FnMut(&Hash, &[u8]) -> Result<(), ExportError> + 'a;

/// [`export`], calling `observe` with each record's id and leaf bytes as it is written.
pub(crate) fn export_observed<W: Write>(
    ledger: &Ledger,
    key: &SigningKey,
    scope: &Scope,
    out: W,
    progress: &mut dyn FnMut(u64, Option<u64>),
    observe: &mut Observer<'_>,
) -> Result<ExportSummary, ExportError> {
    ensure_log_key(ledger, key)?;
    let head = ledger.head();
    let (doc, plan) = resolve(ledger, &head, scope)?;
    let mut writer = BundleWriter::start(out, &doc, &head, key)?;
    walk(ledger, &head, &plan, progress, &mut |index| {
        writer.record(ledger, index, observe)
    })?;
    let records = writer.count();
    writer.finish(key)?;
    Ok(ExportSummary {
        records,
        tree_size: head.size,
        scope: doc.to_string(),
    })
}

/// Writes the bundle to `path` through a temporary file in the same directory, renamed into
/// place only once complete and on disk: a failed export leaves no partial bundle behind.
pub fn export_to_file(
    ledger: &Ledger,
    key: &SigningKey,
    scope: &Scope,
    path: &Path,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<ExportSummary, ExportError> {
    write_atomically(path, &mut |file| export(ledger, key, scope, file, progress))
}

/// Runs `write` on a temporary file beside `path`, then syncs it and renames it into place;
/// on any failure the temporary file is removed and `path` is untouched.
pub(crate) fn write_atomically(
    path: &Path,
    write: &mut dyn FnMut(&File) -> Result<ExportSummary, ExportError>,
) -> Result<ExportSummary, ExportError> {
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a file name", path.display()),
        )
    })?;
    let tmp = path.with_file_name(format!(".{}.partial", name.to_string_lossy()));
    let result = (|| {
        let file = File::create(&tmp)?;
        let summary = write(&file)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(summary)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Calls `visit` with the index of every record of `plan`, in ascending index order (entity
/// versions oldest first), reporting progress as [`export`] does. Returns how many were visited.
pub(crate) fn walk(
    ledger: &Ledger,
    head: &Head,
    plan: &Plan,
    progress: &mut dyn FnMut(u64, Option<u64>),
    visit: &mut dyn FnMut(u64) -> Result<(), ExportError>,
) -> Result<u64, ExportError> {
    let mut count = 0u64;
    match plan {
        Plan::Entity { tenant, entity } => {
            let mut after = None;
            loop {
                let page = ledger.entity_versions(tenant, entity, after, PAGE)?;
                let Some(&(last, _)) = page.last() else { break };
                for (index, _) in page.into_iter().filter(|(i, _)| *i < head.size) {
                    visit(index)?;
                    count += 1;
                    progress(count, None);
                }
                after = Some(last);
            }
        }
        Plan::Scan {
            from,
            to,
            kind,
            tenant,
        } => {
            for index in *from..*to {
                let leaf = decode(ledger, index)?;
                let wanted = kind.as_ref().is_none_or(|k| *k == leaf.kind)
                    && tenant.as_ref().is_none_or(|t| *t == leaf.tenant);
                if wanted {
                    visit(index)?;
                    count += 1;
                }
                progress(index - from + 1, Some(to - from));
            }
        }
        Plan::Indexes(spilled) => {
            let total = spilled.count;
            spilled.ascending(&mut |index| {
                visit(index)?;
                count += 1;
                progress(count, Some(total));
                Ok(())
            })?;
        }
    }
    Ok(count)
}

/// How the records of a scope are found.
pub(crate) enum Plan {
    Entity {
        tenant: String,
        entity: String,
    },
    Scan {
        from: u64,
        to: u64,
        kind: Option<String>,
        tenant: Option<String>,
    },
    /// A lineage: its indexes, spilled to a temporary file.
    Indexes(Spilled),
}

/// Record indexes in a temporary file, written in descending order and read back ascending:
/// 8 bytes (big-endian) each, so memory holds none of them. The file is anonymous (unlinked
/// as soon as it is made), so nothing is left behind however the export ends.
pub(crate) struct Spilled {
    file: File,
    count: u64,
}

impl Spilled {
    /// Indexes read back per read.
    const CHUNK: u64 = 8192;

    /// Calls `visit` with every index, ascending.
    fn ascending(
        &self,
        visit: &mut dyn FnMut(u64) -> Result<(), ExportError>,
    ) -> Result<(), ExportError> {
        let mut buf = Vec::new();
        let mut end = self.count;
        while end > 0 {
            let start = end.saturating_sub(Self::CHUNK);
            buf.resize(((end - start) * 8) as usize, 0);
            self.file.read_exact_at(&mut buf, start * 8)?;
            for raw in buf.chunks_exact(8).rev() {
                let mut be = [0u8; 8];
                be.copy_from_slice(raw);
                visit(u64::from_be_bytes(be))?;
            }
            end = start;
        }
        Ok(())
    }
}

pub(crate) fn resolve(
    ledger: &Ledger,
    head: &Head,
    scope: &Scope,
) -> Result<(ScopeDoc, Plan), ExportError> {
    match scope {
        Scope::Entity { tenant, entity } => {
            let first = ledger.entity_versions(tenant, entity, None, 1)?;
            if first.first().is_none_or(|(i, _)| *i >= head.size) {
                return Err(ExportError::UnknownEntity {
                    tenant: tenant.clone(),
                    entity: entity.clone(),
                });
            }
            let doc = ScopeDoc::Entity {
                tenant: tenant.clone(),
                entity: entity.clone(),
            };
            let plan = Plan::Entity {
                tenant: tenant.clone(),
                entity: entity.clone(),
            };
            Ok((doc, plan))
        }
        Scope::Range(r) => {
            let mut from = r.from_index.unwrap_or(0).min(head.size);
            let mut to = r.to_index.unwrap_or(head.size).min(head.size);
            if let (Some(a), Some(b)) = (r.from_index, r.to_index) {
                if a > b {
                    return Err(ExportError::InvalidScope(format!(
                        "from index {a} is after to index {b}"
                    )));
                }
            }
            if let (Some(a), Some(b)) = (r.from_time, r.to_time) {
                if a > b {
                    return Err(ExportError::InvalidScope(format!(
                        "from time {a} is after to time {b}"
                    )));
                }
            }
            // Integration time never decreases with the index, so time bounds are index bounds.
            if let Some(t) = r.from_time {
                from = ledger.first_index_at_or_after(t, from, to)?;
            }
            if let Some(t) = r.to_time {
                to = ledger.first_index_at_or_after(t, from, to)?;
            }
            let doc = ScopeDoc::Range {
                tenant: r.tenant.clone(),
                kind: r.kind.clone(),
                from_index: r.from_index,
                to_index: r.to_index,
                from_time: r.from_time,
                to_time: r.to_time,
                scanned_from_index: from,
                scanned_to_index: to,
            };
            let plan = Plan::Scan {
                from,
                to,
                kind: r.kind.clone(),
                tenant: r.tenant.clone(),
            };
            Ok((doc, plan))
        }
        Scope::Records { tenant, ids, depth } => {
            if ids.is_empty() {
                return Err(ExportError::InvalidScope("no record ids given".into()));
            }
            let indexes = upstream(ledger, head, tenant.as_deref(), ids, *depth)?;
            let doc = ScopeDoc::Records {
                tenant: tenant.clone(),
                ids: ids.iter().map(|h| HexHash(*h)).collect(),
                depth: *depth,
            };
            Ok((doc, Plan::Indexes(indexes)))
        }
    }
}

/// The chosen records and everything they cite up to `depth` hops, as indexes.
///
/// A ref always cites an earlier record, so a traversal that always expands the highest index
/// not yet expanded meets each record once, in descending order, after every record of the
/// lineage that cites it: by then it knows the fewest hops to it, which decides whether its
/// own refs are followed. Memory holds the frontier (found, not yet expanded) only; the
/// indexes found go to a [`Spilled`] file.
fn upstream(
    ledger: &Ledger,
    head: &Head,
    tenant: Option<&str>,
    ids: &[Hash],
    depth: u32,
) -> Result<Spilled, ExportError> {
    // Index → fewest hops from a chosen record.
    let mut frontier: BTreeMap<u64, u32> = BTreeMap::new();
    for id in ids {
        let (index, owner) = ledger
            .locate(id)?
            .filter(|(i, _)| *i < head.size)
            .ok_or(ExportError::UnknownRecord(*id))?;
        if let Some(wanted) = tenant.filter(|t| *t != owner) {
            return Err(ExportError::OtherTenant {
                id: *id,
                actual: owner,
                wanted: wanted.to_owned(),
            });
        }
        frontier.insert(index, 0);
    }
    let mut out = BufWriter::with_capacity(64 * 1024, tempfile::tempfile()?);
    let mut count = 0u64;
    while let Some((index, hops)) = frontier.pop_last() {
        out.write_all(&index.to_be_bytes())?;
        count += 1;
        if hops >= depth {
            continue;
        }
        for r in decode(ledger, index)?.refs {
            let cited = Hash(r.hash);
            let (at, _) = ledger
                .locate(&cited)?
                .filter(|(i, _)| *i < index)
                .ok_or_else(|| ExportError::Corrupt {
                    index,
                    reason: format!("it cites {cited}, which is not an earlier record of the log"),
                })?;
            let fewest = frontier.entry(at).or_insert(hops + 1);
            *fewest = (*fewest).min(hops + 1);
        }
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    Ok(Spilled { file, count })
}

pub(crate) fn decode(ledger: &Ledger, index: u64) -> Result<Leaf, ExportError> {
    Leaf::decode(&ledger.leaf(index)?).map_err(ExportError::from)
}

/// Streams a bundle: the header on start, one line per record, the manifest on finish.
struct BundleWriter<'a, W: Write> {
    out: BufWriter<W>,
    scope: &'a ScopeDoc,
    head: &'a Head,
    digest: RecordsDigest,
}

impl<'a, W: Write> BundleWriter<'a, W> {
    fn start(
        out: W,
        scope: &'a ScopeDoc,
        head: &'a Head,
        key: &SigningKey,
    ) -> Result<Self, ExportError> {
        let mut out = BufWriter::with_capacity(256 * 1024, out);
        write!(out, "{{\"format\":")?;
        serde_json::to_writer(&mut out, BUNDLE_FORMAT).map_err(std::io::Error::from)?;
        write!(out, ",\"version\":{BUNDLE_VERSION},\n\"scope\":")?;
        serde_json::to_writer(&mut out, scope).map_err(std::io::Error::from)?;
        write!(out, ",\n\"checkpoint\":")?;
        serde_json::to_writer(&mut out, &head.checkpoint).map_err(std::io::Error::from)?;
        write!(out, ",\n\"keys\":")?;
        serde_json::to_writer(&mut out, &[key.verifier().to_string()])
            .map_err(std::io::Error::from)?;
        write!(out, ",\n\"records\":[")?;
        Ok(BundleWriter {
            out,
            scope,
            head,
            digest: RecordsDigest::default(),
        })
    }

    fn count(&self) -> u64 {
        self.digest.count()
    }

    fn record(
        &mut self,
        ledger: &Ledger,
        index: u64,
        observe: &mut Observer<'_>,
    ) -> Result<(), ExportError> {
        let rec = ledger.record_at(index)?;
        check_commitment(&rec)?;
        let proof = ledger.inclusion_proof(index, Some(self.head.size))?;
        if proof.leaf_hash != rec.id {
            return Err(ExportError::Corrupt {
                index,
                reason: "its tree hash is not the hash of its entry".into(),
            });
        }
        let entry = RecordOut {
            index,
            leaf: Base64(&rec.leaf_bytes),
            inclusion_proof: proof.hashes.iter().map(|h| B64Hash(*h)).collect(),
            payload: rec.payload.as_ref(),
            salt: rec.salt.as_ref().map(|s| Base64(s)),
        };
        let sep = if self.count() == 0 { "\n" } else { ",\n" };
        self.out.write_all(sep.as_bytes())?;
        serde_json::to_writer(&mut self.out, &entry).map_err(std::io::Error::from)?;
        self.digest.add(index, &rec.id);
        observe(&rec.id, &rec.leaf_bytes)
    }

    fn finish(mut self, key: &SigningKey) -> Result<(), ExportError> {
        let (record_count, records_sha256) = self.digest.finish();
        let manifest = ManifestOut {
            format: MANIFEST_FORMAT,
            version: BUNDLE_VERSION,
            scope: self.scope,
            checkpoint_sha256: HexHash(Hash(
                Sha256::digest(self.head.checkpoint.as_bytes()).into(),
            )),
            tree_size: self.head.size,
            root: B64Hash(self.head.root),
            record_count,
            records_sha256: HexHash(records_sha256),
        };
        let canonical =
            serde_json_canonicalizer::to_vec(&manifest).map_err(std::io::Error::from)?;
        let signature = key.sign_raw(&canonical);
        write!(self.out, "\n],\n\"manifest\":")?;
        self.out.write_all(&canonical)?;
        write!(self.out, ",\n\"manifest_signature\":")?;
        serde_json::to_writer(&mut self.out, &Base64(&signature)).map_err(std::io::Error::from)?;
        writeln!(self.out, "}}")?;
        self.out.flush()?;
        Ok(())
    }
}

/// Refuses to export a payload that the leaf does not commit to (a damaged store, or a payload
/// whose JSON does not survive a round trip), so a bundle never fails for the exporter's fault.
fn check_commitment(rec: &StoredRecord) -> Result<(), ExportError> {
    let corrupt = |reason: &str| ExportError::Corrupt {
        index: rec.index,
        reason: reason.to_owned(),
    };
    match (&rec.payload, &rec.salt, &rec.leaf.commitment) {
        (None, None, _) => Ok(()),
        (Some(payload), Some(salt), Some(committed)) => {
            let canonical = serde_json_canonicalizer::to_vec(payload)
                .map_err(|e| corrupt(&format!("its payload cannot be canonicalized: {e}")))?;
            if commitment(salt, &canonical) == *committed {
                Ok(())
            } else {
                Err(corrupt(
                    "its stored payload does not match the commitment in its leaf",
                ))
            }
        }
        (Some(_), Some(_), None) => Err(corrupt(
            "it has a stored payload but its leaf commits to none",
        )),
        _ => Err(corrupt("its payload is stored without its salt")),
    }
}

/// Refuses a signing key that is not the log's current one: an export signed by another key
/// would prove nothing about this log.
pub(crate) fn ensure_log_key(ledger: &Ledger, key: &SigningKey) -> Result<(), ExportError> {
    if key.verifier() != ledger.verifier() {
        return Err(ExportError::ForeignKey {
            key: key.verifier().to_string(),
            log: ledger.verifier().to_string(),
        });
    }
    Ok(())
}

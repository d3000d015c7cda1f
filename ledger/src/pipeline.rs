//! The append pipeline. One writer thread owns the tree's right edge and runs each group
//! commit through the stages named in `docs/life-of-a-record.md`:
//!
//! sequence → resolve → encode → integrate → sign → commit (write + fsync) → answer.
//!
//! Requests arrive over a bounded channel; when it is full the caller gets
//! [`LedgerError::Pushback`] instead of an unbounded queue. A failed commit poisons the ledger.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use fjall::PersistMode;
use provledger_signer::{leaf_hash, Checkpoint, Hash, SigningKey};
use tokio::sync::oneshot;
use tracing::{debug, debug_span, error};

use crate::metrics::Metrics;
use crate::record::{Leaf, LeafRef, PreparedRecord, RefTarget, SealedPayload, LEAF_FORMAT_VERSION};
use crate::store::{self, State, Store};
use crate::tiles::{TileKind, TileRows};
use crate::tree::Frontier;
use crate::watermark::Watermark;
use crate::LedgerError;

/// The latest signed tree head.
#[derive(Clone, Debug)]
pub struct Head {
    /// Entries in the tree.
    pub size: u64,
    /// RFC 6962 root hash.
    pub root: Hash,
    /// The C2SP signed note of the checkpoint for `size`.
    pub checkpoint: String,
}

/// What [`crate::Ledger::subscribe`] receivers get after each batch: the records
/// `[first_index, head.size)` are fsynced and covered by `head`, which is already published.
#[derive(Clone, Debug)]
pub struct Appended {
    /// Index of the batch's first new record.
    pub first_index: u64,
    /// The signed head the batch was committed under.
    pub head: Arc<Head>,
}

/// State shared between the writer and readers.
pub(crate) struct Shared {
    pub(crate) head: RwLock<Arc<Head>>,
    /// Tells subscribers about each committed batch, after it is durable and published.
    pub(crate) appended: tokio::sync::broadcast::Sender<Appended>,
    pub(crate) poisoned: AtomicBool,
    /// Bytes of records waiting for the writer.
    pub(crate) queued_bytes: AtomicUsize,
    /// Payloads destroyed by committed erasures since the ledger was opened.
    pub(crate) erased_payloads: std::sync::atomic::AtomicU64,
}

impl Shared {
    pub(crate) fn head(&self) -> Arc<Head> {
        match self.head.read() {
            Ok(h) => Arc::clone(&h),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn set_head(&self, head: Head) {
        let head = Arc::new(head);
        match self.head.write() {
            Ok(mut h) => *h = head,
            Err(poisoned) => *poisoned.into_inner() = head,
        }
    }
}

/// One append request: all of its records land in the same batch, or none do.
pub(crate) struct Job {
    pub(crate) records: Vec<PreparedRecord>,
    /// Approximate bytes held, released from [`Shared::queued_bytes`] once processed.
    pub(crate) bytes: usize,
    pub(crate) reply: oneshot::Sender<Result<Committed, LedgerError>>,
    /// An erasure request instead of records (`crate::erase`): planned on this thread.
    pub(crate) erasure: Option<crate::erase::ErasureRequest>,
}

/// What the writer answers for a job: where each record landed, under which head.
pub(crate) struct Committed {
    /// Per record: its index and, when it was appended by this job, its leaf bytes.
    pub(crate) entries: Vec<(u64, Option<Vec<u8>>)>,
    pub(crate) head: Arc<Head>,
}

pub(crate) struct Writer {
    store: Store,
    watermark: Watermark,
    /// The current signing key, shared with [`crate::Ledger`] so a rotation takes effect at
    /// the next batch.
    key: Arc<std::sync::RwLock<SigningKey>>,
    origin: String,
    frontier: Frontier,
    tiles: TileRows,
    time: u64,
    shared: Arc<Shared>,
    metrics: Metrics,
    max_batch_records: usize,
}

/// Index entries created by staged records that are not in the store yet.
#[derive(Default)]
struct Overlay {
    /// Keyed by leaf hash: SHA-256 output, which no client can steer into collisions, so the
    /// fast non-keyed hasher is safe here (names keep the default, keyed one).
    ids: rustc_hash::FxHashMap<Hash, (u64, String)>,
    latest: HashMap<(String, String), (u64, Hash)>,
    idem: HashMap<(String, String), (u64, [u8; 32])>,
    /// Records erased by erasure records staged in this batch: target → erasure index.
    erased: HashMap<Hash, u64>,
    /// Kind, actor and decision index writes of the staged records (`crate::indexes`).
    indexes: crate::indexes::Staging,
}

impl Overlay {
    fn absorb(&mut self, other: Overlay) {
        self.ids.extend(other.ids);
        self.latest.extend(other.latest);
        self.idem.extend(other.idem);
        self.erased.extend(other.erased);
        self.indexes.absorb(other.indexes);
    }
}

enum Staged {
    New(Box<NewEntry>),
    Existing { index: u64 },
}

/// A sequenced, encoded record waiting to be integrated: the leaf plus what goes beside it.
struct NewEntry {
    index: u64,
    hash: Hash,
    leaf: Vec<u8>,
    tenant: String,
    entity: Option<String>,
    refs: Vec<LeafRef>,
    payload: Option<SealedPayload>,
    idempotency: Option<(String, [u8; 32])>,
    /// The `subject` attribute, indexed for erasure by subject.
    subject: Option<String>,
}

impl Writer {
    pub(crate) fn new(
        store: Store,
        watermark: Watermark,
        key: Arc<std::sync::RwLock<SigningKey>>,
        state: &State,
        shared: Arc<Shared>,
        metrics: Metrics,
        max_batch_records: usize,
    ) -> Result<Writer, LedgerError> {
        let hashes = state
            .frontier
            .iter()
            .map(|b| {
                Hash::from_slice(b).map_err(|e| LedgerError::Corrupt(format!("frontier: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let frontier = Frontier::from_parts(state.size, hashes)?;
        let tiles = TileRows::load(&store, state.size)?;
        Ok(Writer {
            origin: key.read().map_or_else(
                |p| p.into_inner().name().to_owned(),
                |k| k.name().to_owned(),
            ),
            store,
            watermark,
            key,
            frontier,
            tiles,
            time: state.time,
            shared,
            metrics,
            max_batch_records,
        })
    }

    /// Runs until every sender is dropped.
    pub(crate) fn run(mut self, rx: Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut count = first.records.len();
            let mut jobs = vec![first];
            while count < self.max_batch_records {
                match rx.try_recv() {
                    Ok(job) => {
                        count += job.records.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.process(jobs);
        }
        debug!("append pipeline stopped");
    }

    fn process(&mut self, jobs: Vec<Job>) {
        let bytes: usize = jobs.iter().map(|j| j.bytes).sum();
        self.shared.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        if self.shared.poisoned.load(Ordering::Acquire) {
            for job in jobs {
                let _ = job.reply.send(Err(LedgerError::Poisoned));
            }
            return;
        }
        let span = debug_span!(
            "batch",
            jobs = jobs.len(),
            first_index = self.frontier.size()
        );
        let _enter = span.enter();
        let start_size = self.frontier.size();
        self.time = self.time.max(now_ms());
        let mut batch = self
            .store
            .keyspace
            .batch()
            .durability(Some(PersistMode::SyncAll));
        let mut overlay = Overlay::default();
        let mut outcomes = Vec::with_capacity(jobs.len());
        let mut erased_payloads = 0u64;
        for job in jobs {
            let result =
                debug_span!("stage", records = job.records.len()).in_scope(|| match job.erasure {
                    Some(req) => self.stage_erasure(&req, &overlay),
                    None => self
                        .stage(job.records, &overlay)
                        .map(|(staged, local)| (staged, local, Vec::new())),
                });
            match result {
                Ok((staged, local, erased)) => {
                    overlay.absorb(local);
                    let entries =
                        debug_span!("integrate").in_scope(|| self.integrate(&mut batch, staged));
                    // Erasure: the payloads go in the same atomic batch as the erasure records.
                    for index in erased {
                        batch.remove(&self.store.payloads, index.to_be_bytes());
                        erased_payloads += 1;
                    }
                    outcomes.push((job.reply, Ok(entries)));
                }
                Err(e) => {
                    self.metrics.rejected_jobs.inc();
                    outcomes.push((job.reply, Err(e)));
                }
            }
        }
        let appended = self.frontier.size() - start_size;
        let head = if appended == 0 {
            self.shared.head()
        } else {
            let indexed = overlay.indexes.write(&self.store, &mut batch);
            match indexed.and_then(|()| self.sign_and_commit(batch)) {
                Ok(head) => {
                    if erased_payloads > 0 {
                        // Before any compaction sees the tombstones (see `compact.rs`).
                        crate::compact::advance_gc_watermark(&self.store);
                        self.shared
                            .erased_payloads
                            .fetch_add(erased_payloads, Ordering::AcqRel);
                    }
                    // Durable and published: tell subscribers (none listening is fine).
                    let _ = self.shared.appended.send(Appended {
                        first_index: start_size,
                        head: Arc::clone(&head),
                    });
                    self.metrics.records_appended.inc_by(appended);
                    self.metrics.hitl.observe(&overlay.indexes.events);
                    self.metrics.batch_records.observe(appended as f64);
                    self.metrics
                        .tree_size
                        .set(i64::try_from(head.size).unwrap_or(i64::MAX));
                    head
                }
                Err(e) => {
                    error!(error = %e, "batch commit failed; the ledger is poisoned until restart");
                    self.shared.poisoned.store(true, Ordering::Release);
                    self.metrics.poisoned.set(1);
                    for (reply, _) in outcomes {
                        let _ = reply.send(Err(LedgerError::Poisoned));
                    }
                    return;
                }
            }
        };
        for (reply, outcome) in outcomes {
            let _ = reply.send(outcome.map(|entries| Committed {
                entries,
                head: Arc::clone(&head),
            }));
        }
    }

    /// Sequences, resolves and encodes one job's records without touching the tree, so a job
    /// with one bad record leaves no trace.
    fn stage(
        &self,
        records: Vec<PreparedRecord>,
        batch_overlay: &Overlay,
    ) -> Result<(Vec<Staged>, Overlay), LedgerError> {
        let mut local = Overlay::default();
        local.ids.reserve(records.len());
        let mut staged = Vec::with_capacity(records.len());
        let mut next = self.frontier.size();
        for record in records {
            if let Some(key) = &record.idempotency_key {
                let k = (record.tenant.clone(), key.clone());
                if local
                    .idem
                    .get(&k)
                    .is_some_and(|(_, f)| *f != record.fingerprint)
                {
                    return Err(LedgerError::invalid(
                        format!("{}.idempotency_key", record.field),
                        format!("{key:?} is used by two different records in this request"),
                    ));
                }
                let seen = match local.idem.get(&k).or_else(|| batch_overlay.idem.get(&k)) {
                    Some(hit) => Some(*hit),
                    None => self.store.idempotent(&record.tenant, key)?,
                };
                if let Some((index, fingerprint)) = seen {
                    if fingerprint != record.fingerprint {
                        return Err(LedgerError::IdempotencyConflict {
                            key: key.clone(),
                            index,
                        });
                    }
                    self.metrics.idempotent_hits.inc();
                    staged.push(Staged::Existing { index });
                    continue;
                }
            }
            let mut refs = Vec::with_capacity(record.refs.len());
            for (j, (role, target)) in record.refs.iter().enumerate() {
                let hash = self
                    .resolve(&record.tenant, target, &local, batch_overlay)?
                    .ok_or_else(|| LedgerError::UnknownRef {
                        field: format!("{}.refs[{j}].ref", record.field),
                        reference: match target {
                            RefTarget::Id(h) => h.to_hex(),
                            RefTarget::Entity(e) => e.clone(),
                        },
                    })?;
                refs.push(LeafRef {
                    role: role.clone(),
                    hash: *hash.as_bytes(),
                });
            }
            let PreparedRecord {
                tenant,
                kind,
                entity,
                actor,
                attributes,
                classification,
                payload,
                idempotency_key,
                fingerprint,
                redaction,
                ..
            } = record;
            let leaf = Leaf {
                v: LEAF_FORMAT_VERSION,
                index: next,
                time: self.time,
                tenant,
                kind,
                entity,
                actor,
                refs,
                attributes,
                classification,
                commitment: payload.as_ref().map(|p| p.commitment),
                redaction: Some(redaction),
            };
            let bytes = leaf.encode()?;
            let hash = leaf_hash(&bytes);
            crate::indexes::stage(
                &self.store,
                &leaf,
                hash,
                &mut local.indexes,
                &batch_overlay.indexes,
            )?;
            let subject = crate::erase::subject_of(&leaf.attributes);
            let Leaf {
                tenant,
                entity,
                refs,
                ..
            } = leaf;
            local.ids.insert(hash, (next, tenant.clone()));
            if let Some(entity) = &entity {
                local
                    .latest
                    .insert((tenant.clone(), entity.clone()), (next, hash));
            }
            if let Some(key) = &idempotency_key {
                local
                    .idem
                    .insert((tenant.clone(), key.clone()), (next, fingerprint));
            }
            staged.push(Staged::New(Box::new(NewEntry {
                index: next,
                hash,
                leaf: bytes,
                tenant,
                entity,
                refs,
                payload,
                idempotency: idempotency_key.map(|k| (k, fingerprint)),
                subject,
            })));
            next += 1;
        }
        Ok((staged, local))
    }

    /// Stages an erasure request: its erasure records as [`Writer::stage`] would, answers for
    /// targets erased before, and the payload indices to delete in the same batch.
    #[allow(clippy::type_complexity)] // private plumbing of the writer loop
    fn stage_erasure(
        &self,
        req: &crate::erase::ErasureRequest,
        batch_overlay: &Overlay,
    ) -> Result<(Vec<Staged>, Overlay, Vec<u64>), LedgerError> {
        use crate::erase::Step;
        let plan = crate::erase::plan(&self.store, req, &batch_overlay.erased)?;
        let mut records = Vec::new();
        for step in &plan.steps {
            if let Step::New(record, _) = step {
                records.push((**record).clone());
            }
        }
        let (new, mut local) = self.stage(records, batch_overlay)?;
        let mut new = new.into_iter();
        let mut staged = Vec::with_capacity(plan.steps.len());
        for step in plan.steps {
            match step {
                Step::Existing(index) => staged.push(Staged::Existing { index }),
                Step::New(_, target) => {
                    let Some(s) = new.next() else { break };
                    if let Staged::New(entry) = &s {
                        local.erased.insert(target, entry.index);
                    }
                    staged.push(s);
                }
            }
        }
        Ok((staged, local, plan.deletes))
    }

    fn resolve(
        &self,
        tenant: &str,
        target: &RefTarget,
        local: &Overlay,
        batch: &Overlay,
    ) -> Result<Option<Hash>, LedgerError> {
        match target {
            RefTarget::Id(id) => {
                let found = match local.ids.get(id).or_else(|| batch.ids.get(id)) {
                    Some((_, t)) => Some(t.clone()),
                    None => self.store.lookup_id(id)?.map(|(_, t)| t),
                };
                Ok(found.filter(|t| t == tenant).map(|_| *id))
            }
            RefTarget::Entity(entity) => {
                let k = (tenant.to_owned(), entity.clone());
                if let Some((_, h)) = local.latest.get(&k).or_else(|| batch.latest.get(&k)) {
                    return Ok(Some(*h));
                }
                Ok(self.store.latest_version(tenant, entity)?.map(|(_, h)| h))
            }
        }
    }

    /// Extends the tree with a job's staged records and adds their writes to the batch.
    fn integrate(
        &mut self,
        batch: &mut fjall::Batch,
        staged: Vec<Staged>,
    ) -> Vec<(u64, Option<Vec<u8>>)> {
        let mut entries = Vec::with_capacity(staged.len());
        for s in staged {
            match s {
                Staged::Existing { index } => entries.push((index, None)),
                Staged::New(entry) => {
                    let NewEntry {
                        index,
                        hash,
                        leaf,
                        tenant,
                        entity,
                        refs,
                        payload,
                        idempotency,
                        subject,
                    } = *entry;
                    let tiles = &mut self.tiles;
                    self.frontier.push(hash, |h, i, x| tiles.on_node(h, i, x));
                    let key = index.to_be_bytes();
                    batch.insert(&self.store.entries, key, leaf.as_slice());
                    if let Some(p) = &payload {
                        let mut v = Vec::with_capacity(32 + p.canonical.len());
                        v.extend_from_slice(&p.salt);
                        v.extend_from_slice(&p.canonical);
                        batch.insert(&self.store.payloads, key, v);
                    }
                    batch.insert(
                        &self.store.ids,
                        hash.as_bytes().to_vec(),
                        store::index_and(index, tenant.as_bytes()),
                    );
                    if let Some(entity) = &entity {
                        batch.insert(
                            &self.store.versions,
                            store::version_key(&tenant, entity, index),
                            hash.as_bytes().to_vec(),
                        );
                    }
                    for (position, r) in (0u16..).zip(&refs) {
                        batch.insert(
                            &self.store.cites,
                            store::cites_key(&r.hash, index, position),
                            r.role.as_bytes().to_vec(),
                        );
                    }
                    if let Some(subject) = &subject {
                        batch.insert(
                            &self.store.subjects,
                            store::subject_key(&tenant, subject, index),
                            hash.as_bytes().to_vec(),
                        );
                    }
                    if let Some((k, fingerprint)) = &idempotency {
                        batch.insert(
                            &self.store.idem,
                            store::idem_key(&tenant, k),
                            store::index_and(index, fingerprint),
                        );
                    }
                    entries.push((index, Some(leaf)));
                }
            }
        }
        entries
    }

    /// Signs the new checkpoint, writes tiles and state, and commits the batch with fsync.
    fn sign_and_commit(&mut self, mut batch: fjall::Batch) -> Result<Arc<Head>, LedgerError> {
        let size = self.frontier.size();
        let root = self.frontier.root();
        let checkpoint = Checkpoint {
            origin: self.origin.clone(),
            size,
            root,
            extensions: Vec::new(),
        };
        let note = debug_span!("sign", size).in_scope(|| {
            self.key
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .sign_checkpoint(&checkpoint)
        });
        for (kind, level, index, bytes) in self.tiles.take_dirty() {
            let partition = match kind {
                TileKind::Row => &self.store.tiles,
                TileKind::Inner => &self.store.inner,
            };
            batch.insert(partition, store::tile_key(level, index), bytes);
        }
        let state = State {
            size,
            time: self.time,
            frontier: self
                .frontier
                .hashes()
                .iter()
                .map(|h| serde_bytes::ByteBuf::from(h.as_bytes().to_vec()))
                .collect(),
            checkpoint: note.clone(),
        };
        self.store.put_state(&mut batch, &state)?;
        batch.insert(&self.store.checkpoints, size.to_be_bytes(), note.clone());
        let started = Instant::now();
        debug_span!("commit", size).in_scope(|| -> Result<(), LedgerError> {
            batch.commit()?;
            self.watermark.record(&note)?;
            Ok(())
        })?;
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        self.shared.set_head(Head {
            size,
            root,
            checkpoint: note,
        });
        Ok(self.shared.head())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

//! [`Ledger`]: the handle the server and the command line use. Appends go to the writer
//! thread; reads are blocking fjall calls that async callers must run off the executor.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use provledger_signer::{leaf_hash, Checkpoint, Hash, SigningKey, VerifierKey};
use tokio::sync::oneshot;

use crate::keyring::{KeyEntry, KeyRing};
use crate::metrics::{Metrics, StoreCollector, StoreSlot};
use crate::pipeline::{
    Appended, Committed, Head, Inbox, Job, NotQueued, Shared, Writer, PUBLISH_WAIT,
};
use crate::policy::Redactor;
use crate::record::{Leaf, PreparedRecord, RecordInput};
use crate::store::{Store, TileReader};
use crate::tiles::row_len;
use crate::tree::{self, Memo, HASH_LEN, TILE_WIDTH};
use crate::LedgerError;

/// Committed batches a [`Ledger::subscribe`] receiver may fall behind before it is told it
/// lagged.
pub const SUBSCRIBER_BACKLOG: usize = 1024;

/// Default cap on a group commit's records. Large enough that a batch's fixed costs (two
/// fsyncs, a signature) are a small share of its records' (~1.5 µs a record at 2,000), small
/// enough that several large appends arriving together form at least two batches: one is
/// written and fsynced while the writer stages the next. A cap above their sum puts them all in
/// one batch, and they then wait, are answered and come back together, leaving the committer
/// idle in between (in-process, 4 callers × 1,000 records: 69k–72k records/s with a cap of
/// 10,000, 89k–100k with 2,000; `docs/benchmarks.md`, session 8).
pub const DEFAULT_MAX_BATCH_RECORDS: usize = 2_000;

/// How to open a ledger.
#[derive(Clone, Debug)]
pub struct LedgerConfig {
    /// Directory holding the fjall keyspace (`<data_dir>/fjall`).
    pub data_dir: PathBuf,
    /// Append requests that may wait for the writer before callers get [`LedgerError::Pushback`].
    pub queue_depth: usize,
    /// Most records the writer puts in one group commit (a single larger request still goes
    /// whole into one). See [`DEFAULT_MAX_BATCH_RECORDS`].
    pub max_batch_records: usize,
    /// fjall block cache size in bytes.
    pub cache_bytes: u64,
    /// Most bytes of records that may wait for the writer before callers get
    /// [`LedgerError::Pushback`]; bounds memory independently of request sizes.
    pub max_queued_bytes: usize,
    /// Longest a small group commit waits for more appends while they keep coming, measured
    /// from the batch before; zero turns the wait off. See [`DEFAULT_COMMIT_LINGER`].
    pub commit_linger: Duration,
}

/// Default [`LedgerConfig::commit_linger`]: at 10,000 single-record appends a second it cut the
/// server's CPU per append by 11–20 % for ~1 ms more median latency (`docs/benchmarks.md`).
pub const DEFAULT_COMMIT_LINGER: Duration = Duration::from_millis(2);

impl LedgerConfig {
    /// Defaults for a data directory: queue of 1,024 requests, batches of up to
    /// [`DEFAULT_MAX_BATCH_RECORDS`] records, 32 MiB block cache.
    pub fn new(data_dir: impl Into<PathBuf>) -> LedgerConfig {
        LedgerConfig {
            data_dir: data_dir.into(),
            queue_depth: 1024,
            max_batch_records: DEFAULT_MAX_BATCH_RECORDS,
            cache_bytes: 32 * 1024 * 1024,
            max_queued_bytes: 256 * 1024 * 1024,
            commit_linger: DEFAULT_COMMIT_LINGER,
        }
    }
}

/// A signed receipt: where a record landed and the proof that it is in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// Record id: the leaf hash.
    pub id: Hash,
    /// Leaf index.
    pub index: u64,
    /// Leaf bytes (canonical MessagePack).
    pub leaf: Vec<u8>,
    /// Tree size of the checkpoint the proof is against.
    pub tree_size: u64,
    /// RFC 6962 audit path, leaf side first.
    pub inclusion_proof: Vec<Hash>,
    /// The C2SP signed checkpoint note.
    pub checkpoint: String,
}

/// A record as stored: the decoded leaf and its payload.
#[derive(Clone, Debug)]
pub struct StoredRecord {
    /// Record id: the leaf hash.
    pub id: Hash,
    /// Leaf index.
    pub index: u64,
    /// Leaf bytes.
    pub leaf_bytes: Vec<u8>,
    /// Decoded leaf.
    pub leaf: Leaf,
    /// Payload as JSON, when present and not erased.
    pub payload: Option<serde_json::Value>,
    /// Salt of the payload commitment.
    pub salt: Option<[u8; 32]>,
}

/// An inclusion proof for one leaf against one tree size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InclusionProof {
    /// Leaf index.
    pub index: u64,
    /// Tree size the proof is against.
    pub tree_size: u64,
    /// The leaf's hash.
    pub leaf_hash: Hash,
    /// Audit path, leaf side first.
    pub hashes: Vec<Hash>,
}

/// Most records whose receipts [`Ledger::append`] builds on the calling task instead of the
/// blocking pool.
const INLINE_RECEIPTS: usize = 4;

/// The ledger: an append-only RFC 6962 log on fjall with a single writer thread.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    shared: Arc<Shared>,
    /// The key that signs checkpoints now; the writer reads it for every batch.
    signing: Arc<RwLock<SigningKey>>,
    /// Every key the log has used (`keys.json`), and the lock that serializes rotations.
    keys: Mutex<KeyRing>,
    data_dir: PathBuf,
    /// The background thread that records segment digests (`crate::seal`), and its stop flag.
    sealer: Mutex<Option<(Arc<std::sync::atomic::AtomicBool>, JoinHandle<()>)>>,
    /// The thread that merges small `entries` segments (`coalesce.rs`).
    coalescer: Mutex<Option<(Arc<std::sync::atomic::AtomicBool>, JoinHandle<()>)>>,
    metrics: Metrics,
    /// The store the `/metrics` storage gauges read; emptied on close.
    store_gauges: StoreSlot,
    tx: Mutex<Option<Inbox>>,
    max_queued_bytes: usize,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The redaction policy [`Ledger::prepare`] applies (the built-in one until installed).
    redactor: RwLock<Arc<Redactor>>,
}

/// Fills a slot of a ledger being opened (nothing else can hold its lock yet).
fn set<T>(slot: &Mutex<Option<T>>, value: T) {
    if let Ok(mut s) = slot.lock() {
        *s = Some(value);
    }
}

/// A progress callback for a move of an earlier build's layout: logs `what` with the count moved
/// each time it passes another million, whatever the step size of the move.
fn every_million(what: &'static str) -> impl FnMut(u64) {
    let mut logged = 0;
    move |moved| {
        if moved / 1_000_000 > logged {
            logged = moved / 1_000_000;
            tracing::info!(moved, "{what}");
        }
    }
}

fn registration_failed(e: prometheus::Error) -> LedgerError {
    LedgerError::Setup(format!("metrics registration failed: {e}"))
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut slot) = self.store_gauges.lock() {
            slot.take();
        }
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Ok(mut w) = self.writer.lock() {
            if let Some(handle) = w.take() {
                let _ = handle.join();
            }
        }
        // A merge under way finishes first (it reads at most 64 MiB).
        for slot in [&self.sealer, &self.coalescer] {
            if let Ok(mut thread) = slot.lock() {
                if let Some((stop, handle)) = thread.take() {
                    stop.store(true, Ordering::Release);
                    handle.thread().unpark();
                    let _ = handle.join();
                }
            }
        }
        // The last word on segment digests, now that no batch is in flight.
        if let Err(e) = crate::seal::seal_settled(&self.data_dir, &self.store) {
            tracing::warn!(error = %e, "cannot record segment digests at close");
        }
    }
}

/// How often the upkeep thread looks for fjall threads to give a lower priority.
const RENICE_EVERY: Duration = Duration::from_secs(10);

/// The ledger's upkeep thread, until `stop` is set: unblocks stalled flushes
/// ([`crate::store::unstall_flushes`]), frees journals pinned by small partitions
/// ([`crate::store::free_journals`]), flushes the memtables of a quiet ledger
/// ([`crate::store::flush_when_quiet`]), records segment digests every
/// [`crate::seal::SEAL_EVERY`] and keeps fjall's flush and compaction threads at a lower CPU
/// priority ([`crate::store::lower_background_priority`], on its first tick and every
/// [`RENICE_EVERY`]).
fn spawn_sealer(
    dir: PathBuf,
    store: Store,
) -> std::io::Result<(Arc<std::sync::atomic::AtomicBool>, JoinHandle<()>)> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let handle = std::thread::Builder::new()
        .name("provledger-sealer".into())
        .spawn(move || {
            let tick = std::time::Duration::from_millis(100);
            let mut since_seal = std::time::Duration::ZERO;
            let mut journals_freed = None;
            let mut quiet = crate::store::Quiet::default();
            let mut since_renice = RENICE_EVERY;
            loop {
                std::thread::park_timeout(tick);
                if flag.load(Ordering::Acquire) {
                    return;
                }
                since_renice += tick;
                if since_renice >= RENICE_EVERY {
                    since_renice = Duration::ZERO;
                    match crate::store::lower_background_priority() {
                        Ok(0) => {}
                        Ok(threads) => tracing::debug!(
                            threads,
                            nice = crate::store::BACKGROUND_NICE,
                            "lowered the priority of fjall's flush and compaction threads"
                        ),
                        Err(e) => tracing::warn!(error = %e, "cannot lower the priority of fjall's threads"),
                    }
                }
                match crate::store::unstall_flushes(&store) {
                    Ok(true) => tracing::debug!("rotated a memtable to unblock stalled flushes"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot rotate a memtable"),
                }
                match crate::store::free_journals(&store, &mut journals_freed) {
                    Ok(true) => tracing::debug!("rotated memtables to free old journals"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot rotate a memtable"),
                }
                match crate::store::flush_when_quiet(&store, &mut quiet) {
                    Ok(true) => tracing::debug!("flushed the memtables of a quiet ledger"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot rotate a memtable"),
                }
                since_seal += tick;
                if since_seal >= crate::seal::SEAL_EVERY {
                    since_seal = std::time::Duration::ZERO;
                    if let Err(e) = crate::seal::seal(&dir, &store) {
                        tracing::warn!(error = %e, "cannot record segment digests");
                    }
                }
            }
        })?;
    Ok((stop, handle))
}

impl Ledger {
    /// Opens (or creates) the ledger in `config.data_dir`, signing with `key`. Start-up reads the
    /// persisted tree state; it does not replay the log.
    pub fn open(
        config: &LedgerConfig,
        key: SigningKey,
        registry: &prometheus::Registry,
    ) -> Result<Ledger, LedgerError> {
        let mut store = Store::open(&config.data_dir, config.cache_bytes)?;
        let moved = store.move_upper_tiles()?;
        if moved > 0 {
            tracing::info!(
                moved,
                "moved the tiles above level 0 to the `upper` partition (layout of earlier builds)"
            );
        }
        let migrated = store.migrate_payloads(every_million(
            "moving payloads into runs (layout of earlier builds)",
        ))?;
        if migrated > 0 {
            tracing::info!(
                migrated,
                "payloads moved into runs of 16 (layout of earlier builds)"
            );
        }
        let migrated = store.migrate_versions(every_million(
            "moving the entity version index to its new layout (of earlier builds)",
        ))?;
        if migrated > 0 {
            tracing::info!(
                migrated,
                "entity version index moved to entity_versions (layout of earlier builds)"
            );
        }
        let state = store.state()?;
        store.mark_leaf_runs(state.size)?;
        store.mark_cited_by(state.size)?;
        let mut ring = KeyRing::load(&config.data_dir)?;
        if ring.entries().is_empty() {
            ring = KeyRing::first(&key.verifier());
            ring.save(&config.data_dir)?;
        }
        // The signing key and every key joined to it by signed rotation statements.
        let trusted = ring.trusted_from(std::slice::from_ref(&key.verifier()));
        crate::watermark::check(&config.data_dir, &trusted, state.size)?;
        let metrics = Metrics::register(registry).map_err(registration_failed)?;
        let head = if state.checkpoint.is_empty() {
            let cp = Checkpoint {
                origin: key.name().to_owned(),
                size: 0,
                root: provledger_signer::empty_root(),
                extensions: Vec::new(),
            };
            Head {
                size: 0,
                root: cp.root,
                checkpoint: key.sign_checkpoint(&cp),
                edge: Default::default(),
            }
        } else {
            let verified = provledger_signer::verify_checkpoint(&state.checkpoint, &trusted)
            .map_err(|e| {
                LedgerError::Corrupt(format!(
                    "the log's latest checkpoint does not verify with signing key {}: {e}; start with the key this log was created with",
                    key.verifier()
                ))
            })?;
            let cp = verified.checkpoint().clone();
            if cp.size != state.size {
                return Err(LedgerError::Corrupt(format!(
                    "stored checkpoint is for size {}, the tree state for size {}",
                    cp.size, state.size
                )));
            }
            if cp.origin != key.name() {
                return Err(LedgerError::Corrupt(format!(
                    "the log's origin is {:?} but the signing key is named {:?}; use the key this log was created with",
                    cp.origin,
                    key.name()
                )));
            }
            Head {
                size: cp.size,
                root: cp.root,
                checkpoint: state.checkpoint.clone(),
                // Filled by the writer when it has loaded the right edge.
                edge: Default::default(),
            }
        };
        if !ring.is_current(&key.verifier()) {
            return Err(LedgerError::KeyRotation(format!(
                "signing key {} is not this log's current key ({}); start with the current key file",
                key.verifier(),
                ring.current().map_or("none", |k| k.vkey.as_str())
            )));
        }
        metrics
            .tree_size
            .set(i64::try_from(head.size).unwrap_or(i64::MAX));
        let shared = Arc::new(Shared {
            head: RwLock::new(Arc::new(head)),
            poisoned: Default::default(),
            queued_bytes: Default::default(),
            erased_payloads: Default::default(),
            unpublished: Default::default(),
            settled: Default::default(),
            appended: tokio::sync::broadcast::channel(SUBSCRIBER_BACKLOG).0,
        });
        let signing = Arc::new(RwLock::new(key));
        // Data directories from before the kind/actor/decision indexes: build them once.
        crate::indexes::backfill(&store, state.size)?;
        let writer = Writer::new(
            store.clone(),
            Arc::clone(&signing),
            &state,
            Arc::clone(&shared),
            metrics.clone(),
            config.max_batch_records.max(1),
            config.commit_linger,
        )?;
        let store_gauges =
            StoreCollector::register(store.clone(), registry).map_err(registration_failed)?;
        // The threads start last, each recorded in `inner` as it starts: if a later step fails,
        // dropping `inner` stops the ones already running and empties the gauges' slot, so that
        // nothing keeps the store (and the data dir's lock) past a failed open.
        let inner = Inner {
            store,
            shared,
            signing,
            keys: Mutex::new(ring),
            sealer: Mutex::new(None),
            coalescer: Mutex::new(None),
            data_dir: config.data_dir.clone(),
            metrics,
            store_gauges,
            tx: Mutex::new(None),
            max_queued_bytes: config.max_queued_bytes.max(1),
            writer: Mutex::new(None),
            redactor: RwLock::new(Arc::new(Redactor::builtin().clone())),
        };
        let sealer = spawn_sealer(config.data_dir.clone(), inner.store.clone())?;
        set(&inner.sealer, sealer);
        set(
            &inner.coalescer,
            crate::coalesce::spawn(inner.store.clone())?,
        );
        let (tx, rx) = crate::pipeline::inbox(config.queue_depth);
        let watermark = crate::watermark::Watermark::new(&config.data_dir);
        let handle = std::thread::Builder::new()
            .name("provledger-writer".into())
            .spawn(move || writer.run(rx, watermark))?;
        set(&inner.writer, handle);
        set(&inner.tx, tx);
        Ok(Ledger {
            inner: Arc::new(inner),
        })
    }

    /// Appends records atomically (all or none) and answers once they are fsynced and covered
    /// by a signed checkpoint, with one receipt per record in order.
    pub async fn append(&self, records: Vec<PreparedRecord>) -> Result<Vec<Receipt>, LedgerError> {
        let started = Instant::now();
        if self.is_poisoned() {
            return Err(LedgerError::Poisoned);
        }
        crate::erase::check_append(&records)?;
        let (reply, rx) = oneshot::channel();
        let bytes = records.iter().map(PreparedRecord::approx_bytes).sum();
        let queued = &self.inner.shared.queued_bytes;
        let before = queued.fetch_add(bytes, Ordering::AcqRel);
        if before > 0 && before + bytes > self.inner.max_queued_bytes {
            queued.fetch_sub(bytes, Ordering::AcqRel);
            self.inner.metrics.pushback.inc();
            return Err(LedgerError::Pushback);
        }
        let job = Job {
            records,
            bytes,
            reply,
            erasure: None,
        };
        let sent = match self.inner.tx.lock() {
            Ok(guard) => match guard.as_ref() {
                Some(tx) => tx.try_send(job),
                None => Err(NotQueued::WriterGone),
            },
            Err(_) => Err(NotQueued::WriterGone),
        };
        if let Err(e) = sent {
            queued.fetch_sub(bytes, Ordering::AcqRel);
            return Err(self.not_queued(e));
        }
        let committed = rx.await.map_err(|_| LedgerError::ShuttingDown)??;
        // A few receipts are a few tile reads, mostly from the block cache: building them here
        // costs less than a hop to the blocking pool and back. Larger requests go there.
        let receipts = if committed.entries.len() <= INLINE_RECEIPTS {
            self.receipts(committed)?
        } else {
            let this = self.clone();
            tokio::task::spawn_blocking(move || this.receipts(committed))
                .await
                .map_err(|_| LedgerError::ShuttingDown)??
        };
        self.inner
            .metrics
            .append_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(receipts)
    }

    /// Appends from synchronous code (benchmarks, tools); blocks the calling thread.
    pub fn append_blocking(
        &self,
        records: Vec<PreparedRecord>,
    ) -> Result<Vec<Receipt>, LedgerError> {
        crate::erase::check_append(&records)?;
        let (reply, rx) = oneshot::channel();
        let bytes = records.iter().map(PreparedRecord::approx_bytes).sum();
        self.inner
            .shared
            .queued_bytes
            .fetch_add(bytes, Ordering::AcqRel);
        let job = Job {
            records,
            bytes,
            reply,
            erasure: None,
        };
        let sent = match self.inner.tx.lock() {
            Ok(guard) => guard
                .as_ref()
                .map(|tx| tx.send(job).is_ok())
                .unwrap_or(false),
            Err(_) => false,
        };
        if !sent {
            // The writer is gone: release what this job reserved in the queue bound.
            self.inner
                .shared
                .queued_bytes
                .fetch_sub(bytes, Ordering::AcqRel);
            return Err(LedgerError::ShuttingDown);
        }
        let committed = rx
            .blocking_recv()
            .map_err(|_| LedgerError::ShuttingDown)??;
        self.receipts(committed)
    }

    /// The storage handles (erasure, retention and compaction read them).
    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// State shared with the pipeline (the published head, changes not yet published).
    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Hands a job that reserves no queue bytes (erasures) to the writer: waiting for room
    /// when `block`, else answering [`LedgerError::Pushback`] when the queue is full.
    pub(crate) fn submit(&self, job: Job, block: bool) -> Result<(), LedgerError> {
        if self.is_poisoned() {
            return Err(LedgerError::Poisoned);
        }
        let guard = self
            .inner
            .tx
            .lock()
            .map_err(|_| LedgerError::ShuttingDown)?;
        let tx = guard.as_ref().ok_or(LedgerError::ShuttingDown)?;
        let sent = if block {
            tx.send(job)
        } else {
            tx.try_send(job)
        };
        sent.map_err(|e| self.not_queued(e))
    }

    /// The error for a job the writer's queue did not take.
    fn not_queued(&self, e: NotQueued) -> LedgerError {
        match e {
            NotQueued::Full => {
                self.inner.metrics.pushback.inc();
                LedgerError::Pushback
            }
            NotQueued::WriterGone => LedgerError::ShuttingDown,
        }
    }

    pub(crate) fn receipts(&self, committed: Committed) -> Result<Vec<Receipt>, LedgerError> {
        let head = committed.head;
        let mut nodes = Memo::new(TileReader::new(&self.inner.store, &head.edge));
        let mut out: Vec<Receipt> = Vec::with_capacity(committed.entries.len());
        for (index, leaf) in committed.entries {
            let (id, leaf, tree_size, checkpoint) = match leaf {
                // The writer hashed the leaf already: that hash went into the tree.
                Some((id, leaf)) => (id, leaf, head.size, head.checkpoint.clone()),
                // An idempotent retry: the first receipt, against the checkpoint that first
                // covered the record.
                None => {
                    let (size, note) =
                        self.inner
                            .store
                            .covering_checkpoint(index)?
                            .ok_or_else(|| {
                                LedgerError::Corrupt(format!(
                                    "no stored checkpoint covers entry {index}"
                                ))
                            })?;
                    let leaf = self.leaf(index)?;
                    (leaf_hash(&leaf), leaf, size, note)
                }
            };
            // Consecutive receipts against the same head share most of their paths.
            let inclusion_proof = match out.last() {
                Some(p) if p.tree_size == tree_size => tree::inclusion_path_after(
                    &mut nodes,
                    index,
                    tree_size,
                    (p.index, &p.inclusion_proof),
                )?,
                _ => tree::inclusion_path(&mut nodes, index, tree_size)?,
            };
            out.push(Receipt {
                id,
                index,
                leaf,
                tree_size,
                inclusion_proof,
                checkpoint,
            });
        }
        Ok(out)
    }

    /// Subscribes to the log's growth: one [`Appended`] per committed batch, sent only after
    /// the batch is fsynced and its signed head is published (so [`Ledger::head`] and reads
    /// already cover it). A receiver more than [`SUBSCRIBER_BACKLOG`] batches behind gets
    /// `RecvError::Lagged`; the records are still in the log, so resume by reading the indices
    /// it missed with [`Ledger::record_at`] up to the next message's `head.size`.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Appended> {
        self.inner.shared.appended.subscribe()
    }

    /// Payloads destroyed by erasures committed since the ledger was opened (a background
    /// compaction runs when this grows).
    pub fn erased_payloads(&self) -> u64 {
        self.inner.shared.erased_payloads.load(Ordering::Acquire)
    }

    /// Validates a submitted record and scrubs its payload with the installed redaction policy
    /// ([`Ledger::install_redaction_policy`]; the built-in one until then). `field` is its
    /// position in the request, for messages.
    pub fn prepare(&self, input: RecordInput, field: &str) -> Result<PreparedRecord, LedgerError> {
        PreparedRecord::prepare_with(input, field, &self.redactor())
    }

    /// The installed redaction policy.
    pub fn redactor(&self) -> Arc<Redactor> {
        match self.inner.redactor.read() {
            Ok(r) => Arc::clone(&r),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub(crate) fn set_redactor(&self, redactor: Arc<Redactor>) {
        match self.inner.redactor.write() {
            Ok(mut r) => *r = redactor,
            Err(poisoned) => *poisoned.into_inner() = redactor,
        }
    }

    /// The latest signed tree head.
    pub fn head(&self) -> Arc<Head> {
        self.inner.shared.head()
    }

    /// The verifier key of the current signing key.
    pub fn verifier(&self) -> VerifierKey {
        self.signing_key().verifier()
    }

    /// A copy of the current signing key, for signing what the log vouches for beside
    /// checkpoints (export manifests). It changes when the key is rotated.
    pub fn signing_key(&self) -> SigningKey {
        self.inner
            .signing
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every key the log has used, oldest first (the current one last), with when each
    /// signed and the rotation statements that chain them (see `keys.json` in
    /// `docs/format.md`).
    pub fn keys(&self) -> KeyRing {
        self.inner
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Rotates the signing key: `new` signs every checkpoint from now on; the outgoing key
    /// stays listed (old checkpoints and receipts still verify) and its private half is
    /// deleted. Durable before it returns: the new key replaces `key_file` and `keys.json`
    /// holds the rotation statement signed by both keys. Blocking.
    ///
    /// The rotation is also recorded in the log, as the next version of the entity `log-key`
    /// (kind `key-rotation`, attributes `old_key`, `new_key`: key hashes, `size`), written by
    /// `actor` and signed by the new key. Batches already being signed when the rotation
    /// happens may still carry the old key's signature; the recorded size marks where the
    /// rotation began.
    pub fn rotate_key(
        &self,
        new: SigningKey,
        key_file: &Path,
        actor: crate::Actor,
    ) -> Result<KeyEntry, LedgerError> {
        let mut ring = self.inner.keys.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.signing_key();
        let mut next = ring.clone();
        next.rotate(&old, &new, self.head().size)?;
        // 1. the incoming key beside the key file; 2. the ring naming it (the commit point);
        // 3. the key file replaced. `finish_interrupted_rotation` mends a crash in between.
        let pending = crate::keyring::pending_key_path(key_file);
        crate::access::write_private_atomically(&pending, new.to_skey().as_bytes())?;
        next.save(&self.inner.data_dir)?;
        std::fs::rename(&pending, key_file)?;
        if let Some(dir) = key_file.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        *self
            .inner
            .signing
            .write()
            .unwrap_or_else(|p| p.into_inner()) = new;
        *ring = next;
        let current = ring
            .current()
            .cloned()
            .ok_or_else(|| LedgerError::KeyRotation("the key list is empty".into()))?;
        drop(ring);
        tracing::info!(key = %current.vkey, size = current.first_size, "rotated the signing key");
        let hash = |v: &VerifierKey| hex::encode(v.key_id());
        let input: crate::RecordInput = serde_json::from_value(serde_json::json!({
            "kind": "key-rotation",
            "entity": crate::record::LOG_KEY_ENTITY,
            "actor": actor,
            "attributes": {
                "old_key": hash(&old.verifier()),
                "new_key": hash(&self.verifier()),
                "size": current.first_size,
            },
        }))
        .map_err(|e| LedgerError::invalid("key rotation", e.to_string()))?;
        let record = PreparedRecord::prepare_own_record(input, "key rotation", &self.redactor())?;
        self.append_blocking(vec![record])?;
        Ok(current)
    }

    /// Records the SHA-256 of every segment file the storage engine has registered, so that
    /// `provledger verify` can tell a damaged byte anywhere in them (see `docs/verifying.md`).
    /// A background thread does this every few seconds and the ledger once more when dropped;
    /// call it when shutting down while other handles may outlive this one. Blocking.
    pub fn seal(&self) -> Result<usize, LedgerError> {
        crate::seal::seal_settled(&self.inner.data_dir, &self.inner.store)
    }

    /// Retires a key that no longer signs (by vkey or key hash): still listed, no longer
    /// published as a verifier key. Blocking.
    pub fn retire_key(&self, which: &str) -> Result<KeyEntry, LedgerError> {
        let mut ring = self.inner.keys.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = ring.clone();
        let retired = next.retire(which)?;
        next.save(&self.inner.data_dir)?;
        *ring = next;
        Ok(retired)
    }

    /// True after a failed fsync; appends are refused until restart.
    pub fn is_poisoned(&self) -> bool {
        self.inner.shared.poisoned.load(Ordering::Acquire)
    }

    /// Leaf bytes at an index of the current tree.
    pub fn leaf(&self, index: u64) -> Result<Vec<u8>, LedgerError> {
        let size = self.head().size;
        if index >= size {
            return Err(LedgerError::OutOfRange {
                what: "index",
                value: index,
                tree_size: size,
            });
        }
        let bytes = self
            .inner
            .store
            .entry(index)?
            .ok_or_else(|| LedgerError::Corrupt(format!("entry {index} is missing")))?;
        Ok(bytes.to_vec())
    }

    /// A record by id, with its payload. Ids of other tenants are [`LedgerError::NotFound`] when
    /// `tenant` is given.
    pub fn record(&self, id: &Hash, tenant: Option<&str>) -> Result<StoredRecord, LedgerError> {
        let (index, owner) = self
            .inner
            .store
            .lookup_id(id)?
            .ok_or(LedgerError::NotFound)?;
        if index >= self.head().size {
            return Err(LedgerError::NotFound);
        }
        let record = self.record_at(index)?;
        if tenant.is_some_and(|t| t != owner) {
            // The log's own records (policy, key rotations) are every tenant's to read.
            let shared = owner == crate::DEFAULT_TENANT
                && record
                    .leaf
                    .entity
                    .as_deref()
                    .is_some_and(|e| crate::record::LOG_ENTITIES.contains(&e));
            if !shared {
                return Err(LedgerError::NotFound);
            }
        }
        Ok(record)
    }

    /// [`Ledger::inclusion_proof`] for a caller that may see only `tenant` (`None`: every
    /// tenant): another tenant's leaf answers [`LedgerError::NotFound`], like an index that
    /// holds nothing of the caller's. Reads the leaf, not its payload. Blocking.
    pub fn tenant_inclusion_proof(
        &self,
        index: u64,
        tree_size: Option<u64>,
        tenant: Option<&str>,
    ) -> Result<InclusionProof, LedgerError> {
        if let Some(t) = tenant {
            if Leaf::decode(&self.leaf(index)?)?.tenant != t {
                return Err(LedgerError::NotFound);
            }
        }
        self.inclusion_proof(index, tree_size)
    }

    /// Index and tenant of a record id in the current tree, without reading the record.
    pub fn locate(&self, id: &Hash) -> Result<Option<(u64, String)>, LedgerError> {
        let size = self.head().size;
        Ok(self.inner.store.lookup_id(id)?.filter(|(i, _)| *i < size))
    }

    /// Records that cite `id`, oldest first: `(index, role)` for each reference of up to
    /// `limit` entries with citing index > `after` (all when `None`) and below `before` (the
    /// current size when `None`). A record citing `id` twice appears twice, once per role.
    /// Reads the reverse-reference index; it never scans the log.
    pub fn cited_by(
        &self,
        id: &Hash,
        after: Option<u64>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, LedgerError> {
        let end = before.unwrap_or(u64::MAX).min(self.head().size);
        let start = after.map_or(0, |a| a.saturating_add(1));
        let mut out = Vec::new();
        if start >= end || limit == 0 {
            return Ok(out);
        }
        self.inner
            .store
            .each_citing(id, start, end, |index, role| {
                out.push((index, String::from_utf8_lossy(&role).into_owned()));
                out.len() < limit
            })?;
        Ok(out)
    }

    /// The first index in `[from, to)` whose integration time is at least `time_ms` (`to` when
    /// none is), by binary search: leaf times never decrease along the log.
    pub fn first_index_at_or_after(
        &self,
        time_ms: u64,
        from: u64,
        to: u64,
    ) -> Result<u64, LedgerError> {
        let (mut lo, mut hi) = (from, to.min(self.head().size));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if Leaf::decode(&self.leaf(mid)?)?.time < time_ms {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// The archived signed checkpoint for exactly `tree_size`, when a batch ended at that size
    /// (every size a receipt was ever given for).
    pub fn checkpoint_at(&self, tree_size: u64) -> Result<Option<String>, LedgerError> {
        if tree_size > self.head().size {
            return Ok(None);
        }
        self.inner.store.checkpoint_at(tree_size)
    }

    /// Versions of an entity, oldest first: `(index, id)` for up to `limit` versions with
    /// index > `after`, in the current tree.
    pub fn entity_versions(
        &self,
        tenant: &str,
        entity: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Hash)>, LedgerError> {
        let size = self.head().size;
        let start = after.map_or(0, |a| a.saturating_add(1));
        self.inner
            .store
            .versions_of(tenant, entity, start, size)
            .take(limit)
            .collect()
    }

    /// The record at an index.
    pub fn record_at(&self, index: u64) -> Result<StoredRecord, LedgerError> {
        let leaf_bytes = self.leaf(index)?;
        let leaf = Leaf::decode(&leaf_bytes)?;
        let (payload, salt) = match self.inner.store.payload(index)? {
            None => {
                // Erased by a batch that is not published yet: wait for its erasure record.
                self.inner
                    .shared
                    .await_published(|u| u.erased.contains_key(&index), PUBLISH_WAIT)?;
                (None, None)
            }
            Some(v) => {
                let (salt, json) = v.split_at_checked(32).ok_or_else(|| {
                    LedgerError::Corrupt(format!("payload {index} is shorter than its salt"))
                })?;
                let salt: [u8; 32] = salt
                    .try_into()
                    .map_err(|_| LedgerError::Corrupt(format!("payload {index}: bad salt")))?;
                let payload = serde_json::from_slice(json).map_err(|e| {
                    LedgerError::Corrupt(format!("payload {index} is not JSON: {e}"))
                })?;
                (Some(payload), Some(salt))
            }
        };
        Ok(StoredRecord {
            id: leaf_hash(&leaf_bytes),
            index,
            leaf_bytes,
            leaf,
            payload,
            salt,
        })
    }

    /// Inclusion proof of `index` against `tree_size` (the current size when `None`).
    pub fn inclusion_proof(
        &self,
        index: u64,
        tree_size: Option<u64>,
    ) -> Result<InclusionProof, LedgerError> {
        let head = self.head();
        let current = head.size;
        let tree_size = tree_size.unwrap_or(current);
        if tree_size > current {
            return Err(LedgerError::OutOfRange {
                what: "tree_size",
                value: tree_size,
                tree_size: current,
            });
        }
        if index >= tree_size {
            return Err(LedgerError::OutOfRange {
                what: "index",
                value: index,
                tree_size,
            });
        }
        let mut nodes = Memo::new(TileReader::new(&self.inner.store, &head.edge));
        let hashes = tree::inclusion_path(&mut nodes, index, tree_size)?;
        let leaf_hash = nodes.perfect(0, index)?;
        Ok(InclusionProof {
            index,
            tree_size,
            leaf_hash,
            hashes,
        })
    }

    /// Consistency proof between two tree sizes, both at most the current size.
    pub fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, LedgerError> {
        let head = self.head();
        let current = head.size;
        if to > current {
            return Err(LedgerError::OutOfRange {
                what: "to",
                value: to,
                tree_size: current,
            });
        }
        let mut nodes = Memo::new(TileReader::new(&self.inner.store, &head.edge));
        tree::consistency_path(&mut nodes, from, to)
    }

    /// Root hash of the tree at an earlier size.
    pub fn root_at(&self, tree_size: u64) -> Result<Hash, LedgerError> {
        let head = self.head();
        let current = head.size;
        if tree_size > current {
            return Err(LedgerError::OutOfRange {
                what: "tree_size",
                value: tree_size,
                tree_size: current,
            });
        }
        let mut nodes = Memo::new(TileReader::new(&self.inner.store, &head.edge));
        tree::subtree_hash(&mut nodes, 0, tree_size)
    }

    /// A tlog-tiles hash tile: level `level`, index `index`, the full tile when `width` is `None`.
    /// `None` when the current tree does not have that many hashes there.
    pub fn tile(
        &self,
        level: u8,
        index: u64,
        width: Option<u16>,
    ) -> Result<Option<Vec<u8>>, LedgerError> {
        let head = self.head();
        let count = row_len(head.size, level);
        let Some(want) = tile_width(count, index, width) else {
            return Ok(None);
        };
        let want_bytes = want as usize * HASH_LEN;
        // The right edge as published: level 0's tile there is not stored.
        if let Some(bytes) = head
            .edge
            .row(level, index)
            .and_then(|r| r.get(..want_bytes))
        {
            return Ok(Some(bytes.to_vec()));
        }
        let Some(stored) = self.inner.store.tile(level, index)? else {
            return Err(LedgerError::Corrupt(format!(
                "tile {level}/{index} is missing"
            )));
        };
        let bytes = stored.get(..want_bytes).ok_or_else(|| {
            LedgerError::Corrupt(format!(
                "tile {level}/{index} is shorter than the tree needs"
            ))
        })?;
        Ok(Some(bytes.to_vec()))
    }

    /// A tlog-tiles entry bundle: each leaf prefixed by its 2-byte big-endian length.
    pub fn entry_bundle(
        &self,
        index: u64,
        width: Option<u16>,
    ) -> Result<Option<Vec<u8>>, LedgerError> {
        let count = self.head().size;
        let Some(want) = tile_width(count, index, width) else {
            return Ok(None);
        };
        let start = index * TILE_WIDTH;
        let end = start + want;
        let mut out = Vec::new();
        self.inner.store.each_leaf(start, end, |i, leaf| {
            let len = u16::try_from(leaf.len()).map_err(|_| {
                LedgerError::Corrupt(format!("entry {i} is longer than 65535 bytes"))
            })?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(leaf);
            Ok(())
        })?;
        Ok(Some(out))
    }
}

/// Width of tile `index` of a row with `count` hashes, if it can serve `width` (full when None).
fn tile_width(count: u64, index: u64, width: Option<u16>) -> Option<u64> {
    let available = count
        .checked_sub(index.checked_mul(TILE_WIDTH)?)?
        .min(TILE_WIDTH);
    match width {
        None if available == TILE_WIDTH => Some(TILE_WIDTH),
        None => None,
        Some(w) if w == 0 || u64::from(w) >= TILE_WIDTH => None,
        Some(w) if u64::from(w) <= available => Some(u64::from(w)),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report

    use super::*;
    use crate::store::tile_key;
    use crate::LedgerConfig;

    fn record(i: u64) -> PreparedRecord {
        let input: RecordInput = serde_json::from_value(serde_json::json!({
            "kind": "input",
            "entity": format!("doc:{}", i % 5),
            "actor": {"type": "agent", "id": "a1"},
            "payload": {"i": i},
        }))
        .unwrap();
        PreparedRecord::prepare(input, "record").unwrap()
    }

    /// A data directory, its verifier key, and a way to open a ledger on it again and again.
    fn reopenable() -> (tempfile::TempDir, VerifierKey, impl Fn() -> Ledger) {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate("test.example/log").unwrap();
        let vkey = key.verifier();
        let skey = key.to_skey().to_string();
        let path = dir.path().to_path_buf();
        let open = move || {
            let key = SigningKey::from_skey(&skey).unwrap();
            Ledger::open(&LedgerConfig::new(&path), key, &prometheus::Registry::new()).unwrap()
        };
        (dir, vkey, open)
    }

    /// Until session 10 the writer stored level 0's right-edge tile and the right edge's
    /// interiors after every batch. A data directory it left holds them as of its last batch;
    /// appending to it with this version makes them stale prefixes, which must read as such.
    #[test]
    fn a_right_edge_stored_by_an_earlier_version_is_read_as_a_prefix() {
        let (dir, vkey, open) = reopenable();
        open()
            .append_blocking((0..100).map(record).collect())
            .unwrap();
        {
            // What the earlier version left after its batch of records 0–59.
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            let row: Vec<u8> = (0..60u64)
                .flat_map(|i| leaf_hash(&store.entry(i).unwrap().unwrap()).0)
                .collect();
            store.tiles.insert(tile_key(0, 0), &row).unwrap();
            let inner = tree::inner_nodes(&row);
            store.inner.insert(tile_key(0, 0), inner).unwrap();
            store.keyspace.persist(fjall::PersistMode::SyncAll).unwrap();
        }
        let ledger = open();
        ledger
            .append_blocking((100..150).map(record).collect())
            .unwrap();
        let hashes: Vec<Hash> = (0..150)
            .map(|i| leaf_hash(&ledger.leaf(i).unwrap()))
            .collect();
        let head = ledger.head();
        assert_eq!(head.root, provledger_signer::root_of(&hashes));
        for index in 0..150 {
            let p = ledger.inclusion_proof(index, None).unwrap();
            assert_eq!(p.leaf_hash, hashes[index as usize]);
            provledger_signer::verify_inclusion(&p.leaf_hash, index, 150, &p.hashes, &head.root)
                .unwrap();
        }
        let row: Vec<u8> = hashes.iter().flat_map(|h| h.0).collect();
        assert_eq!(ledger.tile(0, 0, Some(150)).unwrap().unwrap(), row);
        assert_eq!(
            ledger.tile(0, 0, Some(60)).unwrap().unwrap(),
            &row[..60 * 32]
        );
        drop(ledger);
        crate::verify_data_dir(dir.path(), &vkey, |_, _| {}).unwrap();
    }

    /// The keys of a partition.
    fn keys(p: &fjall::PartitionHandle) -> Vec<Vec<u8>> {
        p.keys().map(|k| k.unwrap().to_vec()).collect()
    }

    /// Checks proofs over the whole tree against its root and a few consistency proofs.
    fn check_proofs(ledger: &Ledger, hashes: &[Hash]) {
        let size = hashes.len() as u64;
        let head = ledger.head();
        assert_eq!(head.size, size);
        assert_eq!(head.root, provledger_signer::root_of(hashes));
        for index in [0, 1, 255, 256, 65_535, 65_536, 65_537, size / 3, size - 1] {
            let p = ledger.inclusion_proof(index, None).unwrap();
            assert_eq!(p.leaf_hash, hashes[index as usize]);
            provledger_signer::verify_inclusion(&p.leaf_hash, index, size, &p.hashes, &head.root)
                .unwrap();
        }
        for from in [1, 300, 65_536, 65_537, size - 1] {
            let old = provledger_signer::root_of(&hashes[..from as usize]);
            let proof = ledger.consistency_proof(from, size).unwrap();
            provledger_signer::verify_consistency(from, size, &old, &head.root, &proof).unwrap();
        }
        let level1: Vec<u8> = (0..256)
            .flat_map(|t| provledger_signer::root_of(&hashes[t * 256..(t + 1) * 256]).0)
            .collect();
        assert_eq!(ledger.tile(1, 0, None).unwrap().unwrap(), level1);
    }

    /// `tiles` and `inner` hold level 0 alone, so that their keys only grow (see `store.rs`);
    /// the levels above live in `upper`. A directory in the earlier layout (every level in
    /// `tiles` and `inner`) verifies as it is, and opening it moves the upper tiles.
    #[test]
    fn tiles_above_level_zero_live_in_upper_and_move_there_from_the_earlier_layout() {
        let (dir, vkey, open) = reopenable();
        // Level 1's tile 0 full, its tile 1 and level 2's tile 0 partial (one hash each).
        let size = 65_536 + 300;
        let ledger = open();
        let mut next = 0;
        while next < size {
            let end = (next + 4096).min(size);
            ledger
                .append_blocking((next..end).map(record).collect())
                .unwrap();
            next = end;
        }
        let hashes: Vec<Hash> = (0..size)
            .map(|i| leaf_hash(&ledger.leaf(i).unwrap()))
            .collect();
        check_proofs(&ledger, &hashes);
        drop(ledger);

        let upper = vec![
            [&[0u8][..], &tile_key(1, 0)].concat(),
            [&[0u8][..], &tile_key(1, 1)].concat(),
            [&[0u8][..], &tile_key(2, 0)].concat(),
            [&[1u8][..], &tile_key(1, 0)].concat(),
        ];
        let layout = || {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            let level0 = |p| keys(p).iter().all(|k| k[0] == 0);
            assert!(level0(&store.tiles) && level0(&store.inner));
            assert_eq!(keys(&store.tiles).len(), 257);
            assert_eq!(keys(&store.upper), upper);
            assert_eq!(store.interior(1, 0).unwrap().unwrap().len(), 254 * 32);
            assert!(!store.upper_in_old_place);
        };
        layout();
        crate::verify_data_dir(dir.path(), &vkey, |_, _| {}).unwrap();

        // Back to the earlier layout: every level under (level, index) in `tiles` / `inner`.
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            for k in keys(&store.upper) {
                let v = store.upper.get(&k).unwrap().unwrap();
                let to = if k[0] == 0 {
                    &store.tiles
                } else {
                    &store.inner
                };
                to.insert(&k[1..], v).unwrap();
                store.upper.remove(&k).unwrap();
            }
            store.keyspace.persist(fjall::PersistMode::SyncAll).unwrap();
            assert!(keys(&store.upper).is_empty());
        }
        assert!(Store::open(dir.path(), 1 << 20).unwrap().upper_in_old_place);
        crate::verify_data_dir(dir.path(), &vkey, |_, _| {}).unwrap();
        let ledger = open();
        check_proofs(&ledger, &hashes);
        drop(ledger);
        layout();
        let ledger = open();
        ledger
            .append_blocking((size..size + 100).map(record).collect())
            .unwrap();
        drop(ledger);
        crate::verify_data_dir(dir.path(), &vkey, |_, _| {}).unwrap();
    }
}

//! The append pipeline. One writer thread owns the tree's right edge and runs each group
//! commit through the stages named in `docs/life-of-a-record.md`:
//!
//! sequence → resolve → encode → integrate → sign → commit (write + fsync) → answer.
//!
//! The last two stages run on a second thread, the committer, so that the writer sequences
//! and signs batch N+1 while batch N is written and fsynced. Batches reach the committer in
//! order over a channel of one, are committed in that order, and a batch is answered only
//! after it and every batch before it is durable and published. Until the committer reports a
//! batch committed, the writer keeps that batch's index entries (its [`Overlay`]) and looks
//! there before the store, so the next batch resolves references to it.
//!
//! Requests arrive over a bounded channel; when it is full the caller gets
//! [`LedgerError::Pushback`] instead of an unbounded queue. A failed commit poisons the ledger:
//! the batches behind it are refused, not committed.

use crossbeam_channel::{Receiver, Sender};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fjall::{PersistMode, Slice};
use provledger_signer::{leaf_hash, Checkpoint, Hash, SigningKey};
use tokio::sync::oneshot;
use tracing::{debug, debug_span, error};

use crate::idle::{Quiet, IDLE_AFTER};
use crate::metrics::Metrics;
use crate::recent::{Recent, RECENT_PER_GENERATION};
use crate::record::{Leaf, LeafRef, PreparedRecord, RefTarget, SealedPayload, LEAF_FORMAT_VERSION};
use crate::store::{self, State, Store};
use crate::tiles::TileRows;
use crate::tree::Frontier;
use crate::versions::EntityName;
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
    /// The right-edge tiles at `size` (hashes and interiors), part of which the store does not
    /// hold: level 0's partial tile and every partial tile's interior.
    pub(crate) edge: crate::tiles::Edge,
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
    /// Changes to published records made by batches not yet published (see [`Unpublished`]).
    pub(crate) unpublished: Mutex<Unpublished>,
    /// Signalled whenever batches leave `unpublished`.
    pub(crate) settled: Condvar,
}

/// Changes that batches on their way through the committer and publisher make to records
/// *already* in the published log: payloads erased and approvals taken off the queue. Each is
/// keyed by the record's index and holds the tree size its batch ends at.
///
/// A batch's store writes are visible from its commit on, a moment before its head is
/// published; reads are bounded by the published head, but these two changes alter records
/// below it. A reader that sees one of them waits here until the batch that made it is
/// published ([`Shared::await_published`]), so an effect is never seen before its cause is in
/// the log. The writer adds a batch's changes before handing it to the committer, and the
/// publisher removes them once the batch is published or refused.
#[derive(Debug, Default)]
pub(crate) struct Unpublished {
    pub(crate) erased: BTreeMap<u64, u64>,
    pub(crate) resolved: BTreeMap<u64, u64>,
}

impl Unpublished {
    fn is_empty(&self) -> bool {
        self.erased.is_empty() && self.resolved.is_empty()
    }
}

/// How often a reader waiting in [`Shared::await_published`] checks for a poisoned ledger.
const POISON_CHECK: Duration = Duration::from_millis(50);
/// How long a reader waits there at most. A batch is published one fsync after its commit, so
/// this is reached only when the disk hangs or a pipeline thread died; the reader then gets
/// [`LedgerError::NotPublished`] instead of holding its thread forever.
pub(crate) const PUBLISH_WAIT: Duration = Duration::from_secs(30);

impl Shared {
    pub(crate) fn head(&self) -> Arc<Head> {
        match self.head.read() {
            Ok(h) => Arc::clone(&h),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Refuses every append until restart, after `what` failed with `e`.
    fn poison(&self, metrics: &Metrics, what: &str, e: &dyn std::fmt::Display) {
        error!(error = %e, "{what}; the ledger is poisoned until restart");
        self.poisoned.store(true, Ordering::Release);
        metrics.poisoned.set(1);
    }

    fn unpublished(&self) -> std::sync::MutexGuard<'_, Unpublished> {
        self.unpublished
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records the changes a batch ending at `end` makes to published records.
    fn announce(&self, end: u64, erased: &[u64], resolved: &[u64]) {
        if erased.is_empty() && resolved.is_empty() {
            return;
        }
        let mut u = self.unpublished();
        u.erased.extend(erased.iter().map(|&i| (i, end)));
        u.resolved.extend(resolved.iter().map(|&i| (i, end)));
    }

    /// Forgets the changes of batches ending at or before `end`: published, or refused.
    fn settle(&self, end: u64) {
        let mut u = self.unpublished();
        if u.is_empty() {
            return;
        }
        u.erased.retain(|_, e| *e > end);
        u.resolved.retain(|_, e| *e > end);
        drop(u);
        self.settled.notify_all();
    }

    /// Waits while `pending` says that a change the caller has read comes from a batch that is
    /// not published yet, for at most `limit`. Returns at once when there is none (the usual
    /// case); tells whether it waited.
    pub(crate) fn await_published(
        &self,
        pending: impl Fn(&Unpublished) -> bool,
        limit: Duration,
    ) -> Result<bool, LedgerError> {
        let mut u = self.unpublished();
        let mut waited = false;
        let deadline = Instant::now() + limit;
        while pending(&u) {
            if self.poisoned.load(Ordering::Acquire) {
                return Err(LedgerError::Poisoned);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(LedgerError::NotPublished(limit));
            }
            waited = true;
            u = match self.settled.wait_timeout(u, left.min(POISON_CHECK)) {
                Ok((u, _)) => u,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        Ok(waited)
    }

    /// Publishes `head` to readers and returns it.
    fn set_head(&self, head: Head) -> Arc<Head> {
        let head = Arc::new(head);
        match self.head.write() {
            Ok(mut h) => *h = Arc::clone(&head),
            Err(poisoned) => *poisoned.into_inner() = Arc::clone(&head),
        }
        head
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

impl Job {
    /// Whether the writer should be woken for this job while a batch is with the committer
    /// (see [`Inbox`]).
    fn urgent(&self) -> bool {
        self.erasure.is_some() || self.records.len() >= EAGER_RECORDS
    }
}

/// Jobs of at least this many records wake the writer while a batch is being committed: staging
/// them then (tens of µs a record) overlaps the commit, which is worth a wake-up. Smaller jobs
/// wait in the queue until the commit is done.
pub(crate) const EAGER_RECORDS: usize = 32;

/// The writer's inbox: a bounded queue of jobs and a doorbell.
///
/// While a batch is with the committer, the writer sleeps until the committer is done or the
/// doorbell rings, not at every job: under many small concurrent requests, a wake-up per request
/// cost more CPU than staging it (`docs/benchmarks.md`). Senders ring for jobs worth staging at
/// once ([`EAGER_RECORDS`], erasures); the rest are staged together when the commit is done.
pub(crate) struct Inbox {
    jobs: Sender<Job>,
    bell: Sender<()>,
}

/// The writer's end of an [`Inbox`].
pub(crate) struct Mailbox {
    jobs: Receiver<Job>,
    bell: Receiver<()>,
}

/// An inbox holding at most `depth` jobs, and the writer's end of it.
pub(crate) fn inbox(depth: usize) -> (Inbox, Mailbox) {
    let (jobs, jobs_rx) = crossbeam_channel::bounded(depth.max(1));
    // One pending ring is enough: the writer drains every queued job when it answers one.
    let (bell, bell_rx) = crossbeam_channel::bounded(1);
    (
        Inbox { jobs, bell },
        Mailbox {
            jobs: jobs_rx,
            bell: bell_rx,
        },
    )
}

/// Why a job was not queued; the job is dropped, and with it its reply channel.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NotQueued {
    /// The queue holds `queue_depth` jobs already.
    Full,
    /// The writer has stopped.
    WriterGone,
}

impl Inbox {
    /// Queues `job` if there is room.
    pub(crate) fn try_send(&self, job: Job) -> Result<(), NotQueued> {
        let urgent = job.urgent();
        self.jobs.try_send(job).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => NotQueued::Full,
            crossbeam_channel::TrySendError::Disconnected(_) => NotQueued::WriterGone,
        })?;
        self.ring(urgent);
        Ok(())
    }

    /// Queues `job`, waiting for room.
    pub(crate) fn send(&self, job: Job) -> Result<(), NotQueued> {
        let urgent = job.urgent();
        self.jobs.send(job).map_err(|_| NotQueued::WriterGone)?;
        self.ring(urgent);
        Ok(())
    }

    fn ring(&self, urgent: bool) {
        if urgent {
            // Full means a ring is already pending, which covers this job too: the writer
            // takes the ring before it drains the queue.
            let _ = self.bell.try_send(());
        }
    }
}

/// A leaf appended by a job: its hash (the record's id) and its bytes.
pub(crate) type NewLeaf = (Hash, Vec<u8>);

/// What the writer answers for a job: where each record landed, under which head.
pub(crate) struct Committed {
    /// Per record: its index and, when it was appended by this job, its leaf.
    pub(crate) entries: Vec<(u64, Option<NewLeaf>)>,
    pub(crate) head: Arc<Head>,
}

pub(crate) struct Writer {
    store: Store,
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
    /// Batches handed to the committer and not yet reported committed: the tree size each
    /// ends at and the index entries it created, newest last.
    inflight: VecDeque<(u64, Overlay)>,
    /// How the open batch may wait for more jobs before it goes to an idle committer.
    linger: Linger,
    /// Writes in the last batch sealed (at most [`MAX_BATCH_WRITES_HINT`]).
    last_batch_writes: usize,
    /// What refs to recently committed records resolve to (`crate::recent`). A `RefCell`
    /// because staging reads through `&self` while the overlays are borrowed; only this
    /// thread uses it.
    recent: std::cell::RefCell<Recents>,
}

/// What the writer keeps of committed batches for refs to their records: the committed
/// counterparts of an [`Overlay`]'s `ids` and `latest`.
struct Recents {
    /// The `ids` maps of the last [`KEPT_ID_MAPS`] large batches committed, newest last: kept
    /// whole, so that a batch's ids cost nothing to keep.
    id_maps: VecDeque<rustc_hash::FxHashMap<Hash, (u64, String)>>,
    /// Record id → index and tenant: the ids of smaller batches, and ids read from the store.
    ids: Recent<Hash, (u64, String)>,
    /// Entity name → its latest committed version: index and leaf hash.
    latest: Recent<EntityName, (u64, Hash)>,
}

/// A committed batch with at least this many new records keeps its `ids` map as it is; the
/// ids of a smaller one are copied into [`Recents::ids`].
const LARGE_BATCH_IDS: usize = 256;
/// How many large batches' `ids` maps are kept (up to [`crate::DEFAULT_MAX_BATCH_RECORDS`]
/// records each).
const KEPT_ID_MAPS: usize = 8;

impl Recents {
    fn new() -> Recents {
        Recents {
            id_maps: VecDeque::with_capacity(KEPT_ID_MAPS + 1),
            ids: Recent::new(RECENT_PER_GENERATION),
            latest: Recent::new(RECENT_PER_GENERATION),
        }
    }

    /// Keeps what a committed batch's overlay knows; batches come oldest first, so an entity's
    /// latest version wins.
    fn keep(&mut self, overlay: Overlay) {
        if overlay.ids.len() >= LARGE_BATCH_IDS {
            self.id_maps.push_back(overlay.ids);
            if self.id_maps.len() > KEPT_ID_MAPS {
                self.id_maps.pop_front();
            }
        } else {
            for (id, entry) in overlay.ids {
                self.ids.insert(id, entry);
            }
        }
        for (name, version) in overlay.latest {
            self.latest.insert(name, version);
        }
    }

    /// The index of the committed record `id` and whether it belongs to `tenant` (`None`:
    /// there is no such record): from what is kept, else from the store, whose answer is then
    /// kept.
    fn locate(
        &mut self,
        store: &Store,
        id: &Hash,
        tenant: &str,
    ) -> Result<Option<(u64, bool)>, LedgerError> {
        if let Some((at, t)) = self.id_maps.iter().rev().find_map(|m| m.get(id)) {
            return Ok(Some((*at, t == tenant)));
        }
        if let Some((at, t)) = self.ids.get(id) {
            return Ok(Some((at, t == tenant)));
        }
        let Some(entry) = store.lookup_id(id)? else {
            return Ok(None);
        };
        let found = (entry.0, entry.1 == tenant);
        self.ids.insert(*id, entry);
        Ok(Some(found))
    }

    /// The index and leaf hash of the latest committed version of `name`, when it has one:
    /// from what is kept, else from the store, whose answer is then kept. Only for a name with
    /// no version in flight, so that the store's latest is the latest.
    fn latest(
        &mut self,
        store: &Store,
        name: &EntityName,
    ) -> Result<Option<(u64, Hash)>, LedgerError> {
        if let Some(version) = self.latest.get(name) {
            return Ok(Some(version));
        }
        let stored = store.latest_version(name)?;
        if let Some(version) = stored {
            self.latest.insert(*name, version);
        }
        Ok(stored)
    }
}

/// The most writes a new batch makes room for up front.
const MAX_BATCH_WRITES_HINT: usize = 1 << 16;

/// The commit linger: under a steady stream of small appends, an idle committer would take a
/// batch of a few records after every fsync, so each record paid for most of an fsync, a
/// high-water mark write and a signature. Instead, the open batch waits for more jobs while
/// they keep coming, at most `max` after the previous batch was handed over. A lone request
/// (no batch handed over within `max`), a caller appending one request at a time (the previous
/// batch held one job) and a batch of [`LINGER_RECORDS`] or more go at once. Like PostgreSQL's
/// `commit_delay` with `commit_siblings`.
#[derive(Debug)]
struct Linger {
    max: Duration,
    /// When the previous batch was handed to the committer, and how many jobs it held.
    last_sent: Instant,
    last_jobs: usize,
    /// When the last job was staged.
    last_job: Instant,
}

/// A batch this large goes to an idle committer without lingering: the fsync is already shared.
const LINGER_RECORDS: u64 = 32;

impl Linger {
    fn new(max: Duration) -> Linger {
        let now = Instant::now();
        Linger {
            max,
            last_sent: now,
            last_jobs: 0,
            last_job: now,
        }
    }

    /// How much longer an open batch of `records` records should wait for more jobs at `now`;
    /// `None`: hand it over now. The wait ends `max` after the previous batch was handed over,
    /// or a quarter of `max` after the last job came, whichever is first.
    fn left(&self, now: Instant, records: u64) -> Option<Duration> {
        if self.max.is_zero() || self.last_jobs < 2 || records >= LINGER_RECORDS {
            return None;
        }
        let until = (self.last_sent + self.max).min(self.last_job + self.max / 4);
        until.checked_duration_since(now).filter(|d| !d.is_zero())
    }
}

/// The batch the writer is filling: staged jobs, their writes and their answers.
struct Open {
    batch: fjall::Batch,
    overlay: Overlay,
    outcomes: Vec<Outcome>,
    /// Indexes of the records whose payloads the batch erases.
    erased: Vec<u64>,
    /// Tree size when the batch was opened: the index of its first record.
    start_size: u64,
    /// Index writes added to `batch` in key order when it is sealed, and the open runs.
    scattered: Scattered,
}

/// A batch's writes to the partitions whose keys land all over their key space: `ids` (leaf
/// hashes), `entity_versions` (entities interleave), `cited_by` (cited indexes) and `subjects`.
/// They are held back until the batch is sealed and then added to it in key order.
///
/// fjall inserts a batch into its memtables in the order the batch holds its items, and each
/// insertion searches the memtable's skiplist from the top. In random order nearly every
/// search misses the cache below the top levels; in key order, consecutive searches share most
/// of their path. `append_profile 300 4`, nine alternated pairs: commits 9–28 % shorter, 5–28 %
/// more records/s (`docs/benchmarks.md`, session 9). Every key of a batch is distinct (each
/// holds its record's hash or index), so the order changes nothing else.
///
/// Keys and values are fjall's own `Slice`s, made once: a `Vec` would be copied into one.
///
/// The batch's leaves and payloads are built here too, in runs (`leaves.rs`, `payloads.rs`):
/// each run goes into the batch as soon as it is complete (their keys are indexes, in order
/// already), and the last leaf run and payload run as the batch is sealed. The committer waits
/// for the seal (`docs/benchmarks.md`, session 18), so the less is left for it the better.
#[derive(Default)]
struct Scattered {
    ids: Vec<Held>,
    versions: Vec<Held>,
    cites: Vec<Held>,
    subjects: Vec<Held>,
    run: crate::payloads::RunBuilder,
    leaves: crate::leaves::LeafRunBuilder,
}

/// A write held back in [`Scattered`]: key, value, and the key's first eight bytes as a
/// big-endian integer (zero-padded), so that sorting compares integers and reads the keys
/// themselves (most of them behind a pointer) only on a tie. Ordering by (prefix, key) is the
/// keys' byte order: a key shorter than eight bytes pads with zeros, which sort below any byte
/// that could follow it, and equal prefixes fall back to the keys.
type Held = (u64, Slice, Slice);

fn held(key: Slice, value: Slice) -> Held {
    let mut prefix = [0u8; 8];
    for (to, from) in prefix.iter_mut().zip(key.iter()) {
        *to = *from;
    }
    (u64::from_be_bytes(prefix), key, value)
}

impl Scattered {
    /// Adds the writes to `batch`, each partition's in key order.
    fn write(self, store: &Store, batch: &mut fjall::Batch) {
        let Scattered {
            ids,
            versions,
            cites,
            subjects,
            mut run,
            mut leaves,
        } = self;
        if let Some((start, bytes)) = leaves.finish() {
            batch.insert(&store.entries, start.to_be_bytes(), bytes);
        }
        if let Some((start, bytes)) = run.finish() {
            batch.insert(&store.payloads, start.to_be_bytes(), bytes);
        }
        for (partition, mut writes) in [
            (&store.ids, ids),
            (&store.versions, versions),
            (&store.cited_by, cites),
            (&store.subjects, subjects),
        ] {
            writes.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            for (_, key, value) in writes {
                batch.insert(partition, key, value);
            }
        }
    }
}

/// The payloads an erasure removes and the runs rewritten without them (first index, run).
type ErasedPayloads = (Vec<u64>, Vec<(u64, Vec<u8>)>);

/// A signed batch on its way from the writer to the committer, then to the publisher.
///
/// A batch that appended nothing (idempotent retries and refused jobs only) has neither writes
/// nor head: it still goes through both stages so that it is answered after the batches
/// before it, which may hold the records its retries point at.
struct Sealed {
    /// The writes, until the committer takes them.
    batch: Option<fjall::Batch>,
    /// The signed head the batch ends at, published once the batch is durable.
    head: Option<Head>,
    first_index: u64,
    outcomes: Vec<Outcome>,
    /// Payloads the batch erased.
    erased_payloads: u64,
    events: Vec<crate::indexes::Event>,
}

type Outcome = (
    oneshot::Sender<Result<Committed, LedgerError>>,
    Result<Vec<(u64, Option<NewLeaf>)>, LedgerError>,
);

/// The second stage: writes sealed batches to the store in order, with fsync.
struct Committer {
    store: Store,
    watermark: Watermark,
    shared: Arc<Shared>,
    metrics: Metrics,
}

/// Index entries created by staged records that are not in the store yet.
#[derive(Default)]
struct Overlay {
    /// Keyed by leaf hash: SHA-256 output, which no client can steer into collisions, so the
    /// fast non-keyed hasher is safe here (names take a seeded one, [`crate::NameMap`]).
    ids: rustc_hash::FxHashMap<Hash, (u64, String)>,
    /// Keyed by the digest of the entity's name, not steerable either.
    latest: rustc_hash::FxHashMap<EntityName, (u64, Hash)>,
    idem: crate::NameMap<(String, String), (u64, [u8; 32])>,
    /// Records erased by erasure records staged in this batch: target → erasure index.
    erased: HashMap<Hash, u64>,
    /// Kind, actor and decision index writes of the staged records (`crate::indexes`).
    indexes: crate::indexes::Staging,
}

/// Where staging looks for records that are not in the store yet: the batch being built, then
/// the batches with the committer, newest first.
struct Prior<'a> {
    batch: &'a Overlay,
    inflight: &'a VecDeque<(u64, Overlay)>,
}

impl Prior<'_> {
    fn overlays(&self) -> impl Iterator<Item = &Overlay> {
        std::iter::once(self.batch).chain(self.inflight.iter().rev().map(|(_, o)| o))
    }

    fn idem(&self, k: &(String, String)) -> Option<(u64, [u8; 32])> {
        self.overlays().find_map(|o| o.idem.get(k).copied())
    }

    fn id(&self, h: &Hash) -> Option<&(u64, String)> {
        self.overlays().find_map(|o| o.ids.get(h))
    }

    fn latest(&self, k: &EntityName) -> Option<&(u64, Hash)> {
        self.overlays().find_map(|o| o.latest.get(k))
    }

    fn indexes(&self) -> Vec<&crate::indexes::Staging> {
        self.overlays().map(|o| &o.indexes).collect()
    }
}

impl Overlay {
    /// Adds the changes of a later job. Into an empty map (the batch's first job) the job's
    /// map moves whole instead of being hashed into it again.
    fn absorb(&mut self, other: Overlay) {
        fn join<K, V, S>(into: &mut HashMap<K, V, S>, from: HashMap<K, V, S>)
        where
            K: Eq + std::hash::Hash,
            S: std::hash::BuildHasher,
        {
            if into.is_empty() {
                *into = from;
            } else {
                into.extend(from);
            }
        }
        join(&mut self.ids, other.ids);
        join(&mut self.latest, other.latest);
        join(&mut self.idem, other.idem);
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
    /// The record's entity, if it names one.
    version: Option<EntityName>,
    refs: Vec<LeafRef>,
    /// The index of the record each ref cites (the cited-by index's keys).
    cited: Vec<u64>,
    payload: Option<SealedPayload>,
    idempotency: Option<(String, [u8; 32])>,
    /// The `subject` attribute, indexed for erasure by subject.
    subject: Option<String>,
}

impl Writer {
    pub(crate) fn new(
        store: Store,
        key: Arc<std::sync::RwLock<SigningKey>>,
        state: &State,
        shared: Arc<Shared>,
        metrics: Metrics,
        max_batch_records: usize,
        linger: Duration,
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
        // The opening head gets the right edge, level 0's hashed again from the entries.
        let head = shared.head();
        if head.size == state.size {
            shared.set_head(Head {
                edge: tiles.edge(),
                ..(*head).clone()
            });
        }
        Ok(Writer {
            origin: key.read().map_or_else(
                |p| p.into_inner().name().to_owned(),
                |k| k.name().to_owned(),
            ),
            store,
            key,
            frontier,
            tiles,
            time: state.time,
            shared,
            metrics,
            max_batch_records,
            inflight: VecDeque::new(),
            linger: Linger::new(linger),
            last_batch_writes: 0,
            recent: std::cell::RefCell::new(Recents::new()),
        })
    }

    /// Runs until every sender is dropped, then waits for the committer to finish.
    ///
    /// Jobs are staged into the open batch: at once when the committer is idle or the job is
    /// large, else when the committer is done with the batch before (see [`Inbox`]). The batch
    /// is sealed and handed to the committer as soon as the committer has finished with the one
    /// before and the [`Linger`] is over (at once when it is idle and nothing else is coming),
    /// or when it holds `max_batch_records`: so the batch grows while the previous one is being
    /// fsynced, and a lone request is not held back.
    pub(crate) fn run(mut self, mailbox: Mailbox, watermark: Watermark) {
        let Mailbox { jobs: rx, mut bell } = mailbox;
        let committer = Committer {
            store: self.store.clone(),
            watermark,
            shared: Arc::clone(&self.shared),
            metrics: self.metrics.clone(),
        };
        let (to_commit, sealed) = crossbeam_channel::bounded::<Sealed>(1);
        let (done_tx, mut done) = crossbeam_channel::unbounded::<u64>();
        let handle = match std::thread::Builder::new()
            .name("provledger-committer".into())
            .spawn(move || committer.run(sealed, done_tx))
        {
            Ok(h) => h,
            Err(e) => {
                self.shared
                    .poison(&self.metrics, "cannot start the committer thread", &e);
                while let Ok(job) = rx.recv() {
                    let _ = job.reply.send(Err(LedgerError::Poisoned));
                }
                return;
            }
        };
        let mut open: Option<Open> = None;
        let mut quiet = Quiet::default();
        loop {
            // While the committer is idle, how long the open batch may still wait for more.
            let mut linger = None;
            if let Some(o) = &open {
                let records = self.frontier.size() - o.start_size;
                let full = records >= self.max_batch_records as u64;
                if self.inflight.is_empty() {
                    linger = self.linger.left(Instant::now(), records);
                }
                if full || (self.inflight.is_empty() && linger.is_none()) {
                    if let Some(o) = open.take() {
                        self.send(o, &to_commit);
                    }
                    continue;
                }
            }
            if !self.inflight.is_empty() {
                // A batch is with the committer: small jobs wait in the queue until it is
                // done (see `Inbox`), then go into the open batch together.
                crossbeam_channel::select! {
                    recv(done) -> size => match size {
                        Ok(size) => self.forget(size),
                        Err(_) => self.lost_committer(&mut done),
                    },
                    recv(bell) -> rung => if rung.is_err() {
                        bell = crossbeam_channel::never();
                    },
                    default(IDLE_AFTER) => {
                        quiet.waited();
                        continue;
                    }
                }
                quiet.busy();
                self.drain(&rx, &mut open, &to_commit, &mut done);
                continue;
            }
            crossbeam_channel::select! {
                recv(rx) -> job => match job {
                    Ok(job) => {
                        quiet.busy();
                        self.take(job, &mut open, &to_commit, &mut done);
                        // Whatever else is queued goes into the same batch.
                        self.drain(&rx, &mut open, &to_commit, &mut done);
                    }
                    Err(_) => break,
                },
                recv(done) -> size => match size {
                    Ok(size) => self.forget(size),
                    Err(_) => self.lost_committer(&mut done),
                },
                // A ring for a job already staged: nothing left to do for it.
                recv(bell) -> rung => if rung.is_err() {
                    bell = crossbeam_channel::never();
                },
                default(linger.unwrap_or(IDLE_AFTER)) => if linger.is_none() {
                    quiet.waited();
                },
            }
        }
        if let Some(o) = open.take() {
            self.send(o, &to_commit);
        }
        drop(to_commit);
        let _ = handle.join();
        debug!("append pipeline stopped");
    }

    /// Stages the jobs already queued, without waiting, until the open batch is full.
    fn drain(
        &mut self,
        rx: &Receiver<Job>,
        open: &mut Option<Open>,
        to_commit: &Sender<Sealed>,
        done: &mut Receiver<u64>,
    ) {
        while open
            .as_ref()
            .is_none_or(|o| self.frontier.size() - o.start_size < self.max_batch_records as u64)
        {
            match rx.try_recv() {
                Ok(job) => self.take(job, open, to_commit, done),
                Err(_) => return,
            }
        }
    }

    /// Forgets the overlays of the batches that are in the store once it holds `size` entries,
    /// keeping their ids and entity versions among the recent ones (oldest batch first, so an
    /// entity's latest version wins). A poisoned ledger keeps nothing: its last batch may not
    /// be stored.
    fn forget(&mut self, size: u64) {
        let keep = !self.shared.poisoned.load(Ordering::Acquire);
        let recent = self.recent.get_mut();
        while self.inflight.front().is_some_and(|(end, _)| *end <= size) {
            if let Some((_, overlay)) = self.inflight.pop_front() {
                if keep {
                    recent.keep(overlay);
                }
            }
        }
    }

    /// The committer is gone (only after a panic): nothing will be committed any more.
    fn lost_committer(&mut self, done: &mut Receiver<u64>) {
        self.shared.poison(
            &self.metrics,
            "the committer thread is gone",
            &"it panicked",
        );
        self.inflight.clear();
        *done = crossbeam_channel::never();
    }

    /// Stages a job into the open batch, opening one if needed.
    fn take(
        &mut self,
        job: Job,
        open: &mut Option<Open>,
        to_commit: &Sender<Sealed>,
        done: &mut Receiver<u64>,
    ) {
        self.shared
            .queued_bytes
            .fetch_sub(job.bytes, Ordering::AcqRel);
        self.linger.last_job = Instant::now();
        if job.erasure.is_some() {
            // An erasure is planned against the store itself: every earlier batch goes first
            // and lands before it is staged.
            if let Some(o) = open.take() {
                self.send(o, to_commit);
            }
            while !self.inflight.is_empty() {
                match done.recv() {
                    Ok(size) => self.forget(size),
                    Err(_) => self.lost_committer(done),
                }
            }
        }
        if self.shared.poisoned.load(Ordering::Acquire) {
            let _ = job.reply.send(Err(LedgerError::Poisoned));
            return;
        }
        let o = open.get_or_insert_with(|| {
            self.time = self.time.max(now_ms());
            Open {
                // Room for as many writes as the last batch held, so that a large batch does
                // not grow its list of writes by doubling, copying each time.
                batch: fjall::Batch::with_capacity(
                    self.store.keyspace.clone(),
                    self.last_batch_writes,
                )
                .durability(Some(PersistMode::SyncAll)),
                overlay: Overlay::default(),
                outcomes: Vec::new(),
                erased: Vec::new(),
                start_size: self.frontier.size(),
                scattered: Scattered::default(),
            }
        });
        let result = debug_span!("stage", records = job.records.len()).in_scope(|| {
            let prior = Prior {
                batch: &o.overlay,
                inflight: &self.inflight,
            };
            match job.erasure {
                Some(req) => self.stage_erasure(&req, &prior),
                None => self
                    .stage(job.records, &prior)
                    .map(|(staged, local)| (staged, local, Default::default())),
            }
        });
        match result {
            Ok((staged, local, erased)) => {
                o.overlay.absorb(local);
                let entries = debug_span!("integrate")
                    .in_scope(|| self.integrate(&mut o.batch, &mut o.scattered, staged));
                // Erasure: the payloads go in the same atomic batch as the erasure records.
                let (erased, rewritten_runs) = erased;
                for (start, run) in rewritten_runs {
                    o.batch
                        .insert(&self.store.payloads, start.to_be_bytes(), run);
                }
                o.erased.extend(erased);
                o.outcomes.push((job.reply, Ok(entries)));
            }
            Err(e) => {
                self.metrics.rejected_jobs.inc();
                o.outcomes.push((job.reply, Err(e)));
            }
        }
    }

    /// Seals the open batch (index writes, tiles, state, signed checkpoint) and hands it to
    /// the committer, waiting while the committer still holds a batch in its queue.
    fn send(&mut self, o: Open, to_commit: &Sender<Sealed>) {
        let Open {
            mut batch,
            mut overlay,
            outcomes,
            erased,
            start_size,
            scattered,
        } = o;
        self.linger.last_sent = Instant::now();
        self.linger.last_jobs = outcomes.len();
        let appended = self.frontier.size() - start_size;
        let (batch, head) = if appended == 0 {
            (None, None)
        } else {
            let sealed = debug_span!("seal", first_index = start_size, records = appended)
                .in_scope(|| {
                    let resolved = overlay.indexes.write(&self.store, &mut batch)?;
                    scattered.write(&self.store, &mut batch);
                    self.seal(batch).map(|sealed| (sealed, resolved))
                });
            match sealed {
                Ok(((batch, head), resolved)) => {
                    // Before the committer can make them visible.
                    self.shared.announce(head.size, &erased, &resolved);
                    (Some(batch), Some(head))
                }
                Err(e) => {
                    self.shared
                        .poison(&self.metrics, "a batch could not be sealed", &e);
                    return refuse(outcomes);
                }
            }
        };
        let events = std::mem::take(&mut overlay.indexes.events);
        self.inflight.push_back((self.frontier.size(), overlay));
        let sealed = Sealed {
            batch,
            head,
            first_index: start_size,
            outcomes,
            erased_payloads: erased.len() as u64,
            events,
        };
        if let Err(crossbeam_channel::SendError(sealed)) = to_commit.send(sealed) {
            // The committer is gone (only after a panic): nothing more will be committed.
            self.shared.poison(
                &self.metrics,
                "the committer thread is gone",
                &"it panicked",
            );
            self.shared.settle(sealed.end());
            refuse(sealed.outcomes);
        }
    }

    /// Sequences, resolves and encodes one job's records without touching the tree, so a job
    /// with one bad record leaves no trace.
    fn stage(
        &self,
        records: Vec<PreparedRecord>,
        prior: &Prior<'_>,
    ) -> Result<(Vec<Staged>, Overlay), LedgerError> {
        let mut local = Overlay::default();
        local.ids.reserve(records.len());
        let mut staged = Vec::with_capacity(records.len());
        let mut next = self.frontier.size();
        let earlier = prior.indexes();
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
                let seen = match local.idem.get(&k).copied().or_else(|| prior.idem(&k)) {
                    Some(hit) => Some(hit),
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
            let mut cited = Vec::with_capacity(record.refs.len());
            for (j, (role, target)) in record.refs.iter().enumerate() {
                let (at, hash) = self
                    .resolve(&record.tenant, target, &local, prior)?
                    .ok_or_else(|| LedgerError::UnknownRef {
                        field: format!("{}.refs[{j}].ref", record.field),
                        reference: match target {
                            RefTarget::Id(h) => h.to_hex(),
                            RefTarget::Entity(e, _) => e.clone(),
                        },
                    })?;
                refs.push(LeafRef {
                    role: role.clone(),
                    hash: *hash.as_bytes(),
                });
                cited.push(at);
            }
            let PreparedRecord {
                tenant,
                kind,
                entity,
                version,
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
            crate::indexes::stage(&self.store, &leaf, hash, &mut local.indexes, &earlier)?;
            let subject = crate::erase::subject_of(&leaf.attributes);
            let Leaf { tenant, refs, .. } = leaf;
            local.ids.insert(hash, (next, tenant.clone()));
            if let Some(name) = version {
                local.latest.insert(name, (next, hash));
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
                version,
                refs,
                cited,
                payload,
                idempotency: idempotency_key.map(|k| (k, fingerprint)),
                subject,
            })));
            next += 1;
        }
        Ok((staged, local))
    }

    /// Stages an erasure request: its erasure records as [`Writer::stage`] would, answers for
    /// targets erased before, and the payload indices to delete in the same batch with the
    /// payload runs that holds them, rewritten without them.
    #[allow(clippy::type_complexity)] // private plumbing of the writer loop
    fn stage_erasure(
        &self,
        req: &crate::erase::ErasureRequest,
        prior: &Prior<'_>,
    ) -> Result<(Vec<Staged>, Overlay, ErasedPayloads), LedgerError> {
        use crate::erase::Step;
        // Planned against the store: `process` lets every earlier batch commit first.
        let plan = crate::erase::plan(&self.store, req, &prior.batch.erased)?;
        let mut records = Vec::new();
        for step in &plan.steps {
            if let Step::New(record, _) = step {
                records.push((**record).clone());
            }
        }
        let (new, mut local) = self.stage(records, prior)?;
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
        let runs = self.store.payload_removals(&plan.deletes)?;
        Ok((staged, local, (plan.deletes, runs)))
    }

    /// The index and leaf hash of the record a ref cites, if it names one of the citing
    /// record's tenant.
    fn resolve(
        &self,
        tenant: &str,
        target: &RefTarget,
        local: &Overlay,
        prior: &Prior<'_>,
    ) -> Result<Option<(u64, Hash)>, LedgerError> {
        match target {
            RefTarget::Id(id) => {
                let found = match local.ids.get(id).or_else(|| prior.id(id)) {
                    Some((at, t)) => Some((*at, t == tenant)),
                    None => self.recent.borrow_mut().locate(&self.store, id, tenant)?,
                };
                Ok(found.and_then(|(at, same)| same.then_some((at, *id))))
            }
            RefTarget::Entity(_, name) => {
                match local.latest.get(name).or_else(|| prior.latest(name)) {
                    Some(version) => Ok(Some(*version)),
                    // Not in flight, so the store's latest is the latest.
                    None => self.recent.borrow_mut().latest(&self.store, name),
                }
            }
        }
    }

    /// Extends the tree with a job's staged records and adds their writes to the batch.
    fn integrate(
        &mut self,
        batch: &mut fjall::Batch,
        scattered: &mut Scattered,
        staged: Vec<Staged>,
    ) -> Vec<(u64, Option<NewLeaf>)> {
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
                        version,
                        refs,
                        cited,
                        payload,
                        idempotency,
                        subject,
                    } = *entry;
                    let tiles = &mut self.tiles;
                    self.frontier.push(hash, |h, i, x| tiles.on_node(h, i, x));
                    if let Some((start, run)) = scattered.leaves.push(index, &leaf) {
                        batch.insert(&self.store.entries, start.to_be_bytes(), run);
                    }
                    let slot = payload.as_ref().map(|p| (&p.salt[..], &p.canonical[..]));
                    if let Some((start, run)) = scattered.run.push(index, slot) {
                        batch.insert(&self.store.payloads, start.to_be_bytes(), run);
                    }
                    let id = Slice::new(hash.as_bytes());
                    scattered
                        .ids
                        .push(held(id.clone(), store::index_and(index, tenant.as_bytes())));
                    if let Some(name) = version {
                        scattered.versions.push(held(
                            Slice::new(&name.key(index)),
                            Slice::new(&name.value()),
                        ));
                    }
                    for ((position, r), cited) in (0u16..).zip(&refs).zip(cited) {
                        scattered.cites.push(held(
                            Slice::new(&crate::cites::key(cited, index, position)),
                            Slice::new(r.role.as_bytes()),
                        ));
                    }
                    if let Some(subject) = &subject {
                        scattered
                            .subjects
                            .push(held(store::subject_key(&tenant, subject, index).into(), id));
                    }
                    if let Some((k, fingerprint)) = &idempotency {
                        batch.insert(
                            &self.store.idem,
                            store::idem_key(&tenant, k),
                            store::index_and(index, fingerprint),
                        );
                    }
                    entries.push((index, Some((hash, leaf))));
                }
            }
        }
        entries
    }

    /// Signs the new checkpoint and adds tiles, state and checkpoint to the batch.
    fn seal(&mut self, mut batch: fjall::Batch) -> Result<(fjall::Batch, Head), LedgerError> {
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
            self.store.put_tile(&mut batch, kind, level, index, bytes);
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
        self.last_batch_writes = batch.len().min(MAX_BATCH_WRITES_HINT);
        Ok((
            batch,
            Head {
                size,
                root,
                checkpoint: note,
                edge: self.tiles.edge(),
            },
        ))
    }
}

impl Committer {
    /// Commits what the writer sends, in order, until it hangs up, and hands each batch to
    /// the publisher. Reports each batch's end (the tree size after it) on `done` once its
    /// writes are in the store (or it was refused): the writer may then look there for them.
    fn run(self, sealed: Receiver<Sealed>, done: Sender<u64>) {
        let Committer {
            store,
            watermark,
            shared,
            metrics,
        } = self;
        let (to_publish, committed) = crossbeam_channel::bounded::<Sealed>(1);
        let publisher = Publisher {
            watermark,
            shared: Arc::clone(&shared),
            metrics: metrics.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("provledger-publisher".into())
            .spawn(move || publisher.run(committed));
        let handle = match handle {
            Ok(h) => h,
            Err(e) => {
                shared.poison(&metrics, "cannot start the publisher thread", &e);
                while let Ok(s) = sealed.recv() {
                    let end = s.end();
                    refuse(s.outcomes);
                    let _ = done.send(end);
                }
                return;
            }
        };
        let mut quiet = Quiet::default();
        while let Some(mut s) = next(&sealed, &mut quiet) {
            let end = s.end();
            if shared.poisoned.load(Ordering::Acquire) {
                refuse(std::mem::take(&mut s.outcomes));
            } else if let Some(batch) = s.batch.take() {
                let started = Instant::now();
                let written = debug_span!("commit", size = end).in_scope(|| {
                    let _gate = store.commit_gate.lock().unwrap_or_else(|p| p.into_inner());
                    batch.commit()
                });
                metrics
                    .commit_seconds
                    .observe(started.elapsed().as_secs_f64());
                match written {
                    Ok(()) => {
                        if s.erased_payloads > 0 {
                            // Before any compaction sees the rewritten runs (`compact.rs`).
                            crate::compact::advance_gc_watermark(&store);
                        }
                    }
                    Err(e) => {
                        shared.poison(&metrics, "a batch commit failed", &e);
                        refuse(std::mem::take(&mut s.outcomes));
                    }
                }
            }
            let _ = done.send(end);
            if let Err(crossbeam_channel::SendError(s)) = to_publish.send(s) {
                shared.poison(&metrics, "the publisher thread is gone", &"it panicked");
                refuse(s.outcomes);
            }
            // After this batch is on its way: a wait holds up the next commit, not these receipts.
            // A poisoned ledger writes nothing more, so there is nothing to make room for.
            if !shared.poisoned.load(Ordering::Acquire) {
                match crate::store::relieve_write_buffer(&store) {
                    Ok(waited) if waited >= Duration::from_millis(1) => {
                        metrics.write_buffer_wait.inc_by(waited.as_secs_f64());
                    }
                    Ok(_) => {}
                    Err(e) => shared.poison(&metrics, "cannot seal a memtable", &e),
                }
            }
        }
        drop(to_publish);
        let _ = handle.join();
    }
}

impl Sealed {
    /// The tree size after this batch.
    fn end(&self) -> u64 {
        self.head.as_ref().map_or(self.first_index, |h| h.size)
    }
}

/// The next batch for a stage, or `None` once the stage before it hung up; calls the idle hook
/// when the stage falls quiet.
fn next(from: &Receiver<Sealed>, quiet: &mut Quiet) -> Option<Sealed> {
    loop {
        match from.recv_timeout(IDLE_AFTER) {
            Ok(s) => {
                quiet.busy();
                return Some(s);
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => quiet.waited(),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// Answers every job of a batch that will not be committed.
fn refuse(outcomes: Vec<Outcome>) {
    for (reply, _) in outcomes {
        let _ = reply.send(Err(LedgerError::Poisoned));
    }
}

/// The third stage: records each committed batch's checkpoint as handed out (the high-water
/// mark), publishes it, and answers the batch, while the committer writes the next one.
struct Publisher {
    watermark: Watermark,
    shared: Arc<Shared>,
    metrics: Metrics,
}

impl Publisher {
    fn run(mut self, committed: Receiver<Sealed>) {
        let mut quiet = Quiet::default();
        while let Some(s) = next(&committed, &mut quiet) {
            let end = s.end();
            self.publish(s);
            self.shared.settle(end);
        }
    }

    fn publish(&mut self, s: Sealed) {
        let Sealed {
            head,
            first_index,
            outcomes,
            erased_payloads,
            events,
            ..
        } = s;
        // A refused batch has no outcomes left. A batch committed before a later one poisoned
        // the ledger is durable: it is still published and answered.
        if outcomes.is_empty() {
            return;
        }
        let head = match head {
            None => self.shared.head(),
            Some(head) => {
                let recorded = debug_span!("high-water mark", size = head.size)
                    .in_scope(|| self.watermark.record(&head.checkpoint));
                if let Err(e) = recorded {
                    self.shared
                        .poison(&self.metrics, "recording the high-water mark failed", &e);
                    return refuse(outcomes);
                }
                let head = self.shared.set_head(head);
                let appended = head.size - first_index;
                if erased_payloads > 0 {
                    self.shared
                        .erased_payloads
                        .fetch_add(erased_payloads, Ordering::AcqRel);
                }
                // Durable and published: tell subscribers (none listening is fine).
                let _ = self.shared.appended.send(Appended {
                    first_index,
                    head: Arc::clone(&head),
                });
                self.metrics.records_appended.inc_by(appended);
                self.metrics.hitl.observe(&events);
                self.metrics.batch_records.observe(appended as f64);
                self.metrics
                    .tree_size
                    .set(i64::try_from(head.size).unwrap_or(i64::MAX));
                head
            }
        };
        for (reply, outcome) in outcomes {
            let _ = reply.send(outcome.map(|entries| Committed {
                entries,
                head: Arc::clone(&head),
            }));
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A linger of 2 ms whose previous batch went `sent_ago` ago with `jobs` jobs and whose
    /// last job came `job_ago` ago, asked at `now`.
    fn linger(now: Instant, sent_ago: u64, jobs: usize, job_ago: u64) -> Linger {
        Linger {
            max: Duration::from_millis(2),
            last_sent: now - Duration::from_micros(sent_ago),
            last_jobs: jobs,
            last_job: now - Duration::from_micros(job_ago),
        }
    }

    #[test]
    fn a_small_batch_lingers_only_while_appends_keep_coming() {
        let now = Instant::now();
        let us = Duration::from_micros;
        // A steady stream: the batch waits for the earlier of 2 ms after the previous batch
        // and 0.5 ms after the last job.
        assert_eq!(linger(now, 300, 7, 50).left(now, 3), Some(us(450)));
        assert_eq!(linger(now, 1_800, 7, 0).left(now, 3), Some(us(200)));
        // No job for a quarter of the linger: the stream has paused, go.
        assert_eq!(linger(now, 1_000, 7, 500).left(now, 3), None);
        // The previous batch went 2 ms ago or more: a lone request is not held back.
        assert_eq!(linger(now, 2_000, 7, 0).left(now, 1), None);
        assert_eq!(linger(now, 60_000, 7, 0).left(now, 1), None);
        // A caller appending one request at a time (the previous batch held one job).
        assert_eq!(linger(now, 300, 1, 0).left(now, 1), None);
        // Enough records to share the fsync already.
        assert_eq!(
            linger(now, 300, 7, 0).left(now, LINGER_RECORDS - 1),
            Some(us(500))
        );
        assert_eq!(linger(now, 300, 7, 0).left(now, LINGER_RECORDS), None);
        // Turned off.
        let mut off = linger(now, 300, 7, 0);
        off.max = Duration::ZERO;
        assert_eq!(off.left(now, 1), None);
    }

    fn shared() -> Shared {
        Shared {
            head: RwLock::new(Arc::new(Head {
                size: 0,
                root: Hash([0; 32]),
                checkpoint: String::new(),
                edge: Default::default(),
            })),
            appended: tokio::sync::broadcast::channel(1).0,
            poisoned: AtomicBool::new(false),
            queued_bytes: AtomicUsize::new(0),
            erased_payloads: Default::default(),
            unpublished: Default::default(),
            settled: Condvar::new(),
        }
    }

    #[test]
    fn a_reader_waits_for_an_announced_change_until_its_batch_settles_and_never_forever() {
        let shared = Arc::new(shared());
        let erased = |i: u64| move |u: &Unpublished| u.erased.contains_key(&i);
        shared.announce(10, &[3], &[]);
        // Nothing announced for this record: no wait.
        assert!(!shared
            .await_published(erased(4), PUBLISH_WAIT)
            .expect("no wait"));
        // An earlier batch settling does not release a later batch's change.
        shared.settle(9);
        assert!(shared.unpublished().erased.contains_key(&3));
        // Never settled: the reader gives up after its limit with a clear error.
        let limit = Duration::from_millis(120);
        assert!(matches!(
            shared.await_published(erased(3), limit),
            Err(LedgerError::NotPublished(l)) if l == limit
        ));
        // Settled by the publisher while the reader waits: it returns, having waited.
        let publisher = Arc::clone(&shared);
        let settler = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            publisher.settle(10);
        });
        assert!(shared
            .await_published(erased(3), PUBLISH_WAIT)
            .expect("settled"));
        settler.join().expect("settler");
        assert!(shared.unpublished().is_empty());
        // A poisoned ledger never publishes: the reader is told so instead of waiting.
        shared.announce(20, &[], &[5]);
        shared.poisoned.store(true, Ordering::Release);
        assert!(matches!(
            shared.await_published(|u| u.resolved.contains_key(&5), PUBLISH_WAIT),
            Err(LedgerError::Poisoned)
        ));
    }

    fn job(records: usize) -> Job {
        let input: crate::RecordInput =
            serde_json::from_str(r#"{"kind":"input","actor":{"type":"agent","id":"a"}}"#)
                .expect("record");
        let record = PreparedRecord::prepare(input, "record").expect("prepare");
        Job {
            records: vec![record; records],
            bytes: 0,
            reply: oneshot::channel().0,
            erasure: None,
        }
    }

    #[test]
    fn only_large_jobs_ring_the_doorbell() {
        let (inbox, mailbox) = inbox(8);
        inbox.try_send(job(1)).expect("queued");
        inbox.send(job(EAGER_RECORDS - 1)).expect("queued");
        assert!(mailbox.bell.try_recv().is_err(), "small jobs do not ring");
        inbox.try_send(job(EAGER_RECORDS)).expect("queued");
        // A second ring while one is pending is absorbed, not an error.
        inbox.send(job(EAGER_RECORDS + 1)).expect("queued");
        assert!(mailbox.bell.try_recv().is_ok(), "a large job rings");
        assert!(mailbox.bell.try_recv().is_err(), "one pending ring at most");
        assert_eq!(mailbox.jobs.len(), 4, "every job is queued");
        // A full queue hands the job back and does not ring.
        let (inbox, mailbox) = super::inbox(1);
        inbox.try_send(job(1)).expect("queued");
        assert_eq!(inbox.try_send(job(EAGER_RECORDS)), Err(NotQueued::Full));
        assert!(mailbox.bell.try_recv().is_err());
    }
}

//! Storage on fjall: partitions, key layouts and the persisted tree state. Private to the crate;
//! `docs/format.md` describes the layout for operators.
//!
//! | partition  | key                                   | value                                 |
//! |------------|---------------------------------------|---------------------------------------|
//! | `entries`  | first index of a run (u64 BE); below `leaf_runs_from`, the index | up to 64 leaves, each len (u16 BE) ‖ leaf bytes (see `leaves.rs`); below `leaf_runs_from`, the leaf bytes |
//! | `payloads` | first index of a run (u64 BE)         | up to 16 slots: len (u32 BE) ‖ salt (32) ‖ RFC 8785 payload, or `FFFFFFFF` (see `payloads.rs`) |
//! | `tiles`    | 0 ‖ tile index (u64 BE)               | level 0's full tiles: 256 concatenated 32-byte hashes (the partial tile is in the head) |
//! | `inner`    | 0 ‖ tile index (u64 BE)               | a full level-0 tile's 254 interior hashes (the right edge's are in the head) |
//! | `upper`    | kind (0 row, 1 interior) ‖ level (u8 ≥ 1) ‖ tile index (u64 BE) | the tiles above level 0 (full, and each level's partial tile) and their full tiles' interiors |
//! | `ids`      | leaf hash (32)                        | index (u64 BE) ‖ tenant               |
//! | `entity_versions` | SHA-256(tenant ‖ 0 ‖ entity ‖ 0)[..12] ‖ index (u64 BE) | the digest's other 20 bytes; before session 23 (and when moved from `versions`), leaf hash (32) ‖ those (see `versions.rs`) |
//! | `idem`     | tenant ‖ 0 ‖ idempotency key          | index (u64 BE) ‖ fingerprint (32)     |
//! | `cited_by` | cited index (u64 BE) ‖ citing index (u64 BE) ‖ ref position (u16 BE) | role (see `cites.rs`) |
//! | `cites`    | before session 23: cited leaf hash (32) ‖ citing index (u64 BE) ‖ ref position (u16 BE) | role |
//! | `checkpoints` | tree size (u64 BE)                 | the signed checkpoint note for that size |
//! | `subjects` | tenant ‖ 0 ‖ subject ‖ 0 ‖ index (BE) | leaf hash (32)                        |
//! | `meta`     | `state`                               | MessagePack [`State`]                 |
//! | `meta`     | `payload_runs_below`                  | u64 BE: `payloads` holds runs below it (`u64::MAX`: everywhere) |
//! | `meta`     | `leaf_runs_from`                      | u64 BE: `entries` holds runs from it on (0: everywhere) |
//! | `meta`     | `cited_by_from`                       | u64 BE: refs of records from it on are in `cited_by`, below it in `cites` |
//! | `meta`     | `indexes`                             | layout version (u8, now 2) of the four indexes below; absent → rebuilt on open, older → upgraded on open |
//! | `kinds`    | scope ‖ str(kind) ‖ first index (u64 BE) | posting chunk: LEB128 gaps to the batch's further indexes of that kind |
//! | `actors`   | scope ‖ str(actor type) ‖ str(actor id) ‖ first index (u64 BE) | posting chunk, as in `kinds` |
//! | `decisions`| scope ‖ index (u64 BE)                | MessagePack `Decision` (agent, policy version, escalated, resolution) |
//! | `pending`  | scope ‖ index (u64 BE)                | empty: escalated decisions not yet approved or rejected |
//!
//! In the last four, `scope` is `0x00` (all tenants) or `0x01 ‖ str(tenant)`, every record is
//! written under both, and `str(s)` is `len(s)` (u32 BE) ‖ the bytes of `s`: names may hold any
//! byte, and the length prefix keeps one name's keys from sharing a prefix with another's.
//! `kinds` and `actors` hold one chunk per value, scope and batch, not one key per record. There
//! is no separate time index: integration time never decreases along the log (each batch takes
//! `max(now, previous time)`), so a time range is an index range found by binary search
//! (`Ledger::first_index_at_or_after`). `indexes.rs` owns these layouts.
//!
//! Every append batch writes all of these in one atomic fjall batch, fsynced before it is
//! acknowledged, so a crash leaves either the whole batch or none of it.
//!
//! `tiles` and `inner` hold level 0 alone so that their keys only ever grow: each flush then
//! writes a segment that overlaps no other, which compaction moves down whole instead of
//! merging it with the rest. With the levels above mixed in (their keys sort after every level-0
//! key, and level 1's partial tile is rewritten by nearly every batch), every segment overlapped
//! every other and compaction wrote these two partitions ~6 times over (`docs/benchmarks.md`,
//! session 12). Directories from earlier builds are moved to this layout on open
//! ([`Store::move_upper_tiles`]); until then, readers find an upper tile under its old key.

use std::path::Path;

use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, Slice};
use provledger_signer::Hash;
use serde::{Deserialize, Serialize};

use crate::tiles::TileKind;
use crate::tree::{NodeReader, HASH_LEN, TILE_HEIGHT, TILE_WIDTH};
use crate::LedgerError;

const STATE_KEY: &[u8] = b"state";

/// The tree state persisted with every batch: enough to resume appending without replay.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct State {
    pub(crate) size: u64,
    /// Last integration time handed out (ms since epoch), so time never runs backwards.
    pub(crate) time: u64,
    /// Frontier hashes, largest subtree first.
    pub(crate) frontier: Vec<serde_bytes::ByteBuf>,
    /// The signed checkpoint (C2SP signed note) for `size`; empty before the first batch.
    pub(crate) checkpoint: String,
}

/// The write buffer (fjall's active and sealed memtables) the committer keeps within: see
/// [`relieve_write_buffer`].
pub(crate) const WRITE_BUFFER_BYTES: u64 = 32 * 1024 * 1024;

/// fjall's own limit on the write buffer, a safety net four times ours. Above its limit fjall
/// halts the write in 10 ms sleeps and, once below, sleeps 100 ms more while above 90 %: inside
/// the batch commit, where each sleep holds up every batch behind it.
const FJALL_WRITE_BUFFER_BYTES: u64 = 4 * WRITE_BUFFER_BYTES;

/// [`relieve_write_buffer`] and [`unstall_flushes`] seal `entries` only once its memtable holds
/// this much (fjall seals it at 16 MiB itself). fjall never merges its segments
/// ([`entries_compaction`]), so every seal is one more segment until the coalescer merges it
/// with its neighbours (`coalesce.rs`, from 128 small ones on), and lsm-tree 2.10 opens a level
/// in time cubic in its segment count (each segment it adds re-checks every pair of the level
/// for overlap): before the coalescer, 10 M entries made 1,021 segments, which took 1.08 s to
/// open, and 389 with this floor (`docs/benchmarks.md`, session 17). The floor still keeps the
/// segments (and so the merges and files between them) two and a half times fewer.
const ENTRIES_SEAL_FLOOR: u64 = 8 * 1024 * 1024;

/// Sealed memtables fjall 2.11's flusher takes per round (its `flush_workers`; the default is
/// the number of CPUs up to 4, so 2 on a 2-core machine).
///
/// fjall grants a round per memtable rotation and, when it opens a keyspace, one per partition
/// with memtables recovered from the journals — not one per memtable. A crash under load leaves
/// a dozen journals or more, each holding a memtable's worth of most partitions: ~130 sealed
/// memtables against ~10 rounds of 2, so most stayed in memory, and their journals on disk,
/// until enough appends came to rotate memtables again ([`unstall_flushes`] grants rounds while
/// the buffer is nearly full). Meanwhile anything that waited for the flusher waited in vain: a
/// server stopped after restarting idle on such a directory took 32 s to exit (the final seal's
/// 30 s wait, [`crate::seal::settle`]) and left 24 journals, `provledger verify` of it took 53 s
/// instead of 20. With 64 a round (enough for five dozen journals of a dozen partitions), the
/// same directory: stopped in 2.0 s with one journal left, verified in 21 s. Under load a round
/// flushes what is queued, one thread per partition, as before; batch ingest, open-loop latency,
/// in-process appends and `reopen_under_load` did not change (`docs/benchmarks.md`, session 18).
const FLUSH_TASKS_PER_ROUND: usize = 64;

/// Longest the committer waits for flushes in [`relieve_write_buffer`] before it goes on (fjall's
/// own limit still holds).
const WRITE_BUFFER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Keeps the write buffer within [`WRITE_BUFFER_BYTES`]; the committer calls it after each
/// batch and returns the time it waited. Seals the largest active memtable (`entries` only from
/// [`ENTRIES_SEAL_FLOOR`]) once the active memtables hold more than half of it: fjall's
/// monitor does that only every 250 ms, in which batch ingest fills the whole buffer (a record
/// adds ~650 bytes across the partitions, and
/// the per-partition limits, 16 MiB each, add up to more than the buffer), and fjall then
/// halted commits for 10–100 ms at a time, 20–40 times per 300,000 records in process
/// (`docs/benchmarks.md`, session 16). Then, while the buffer is over, waits for the flusher
/// in 1 ms steps.
pub(crate) fn relieve_write_buffer(store: &Store) -> Result<std::time::Duration, LedgerError> {
    use fjall::AbstractTree as _;
    let started = std::time::Instant::now();
    loop {
        let mut active = 0u64;
        let mut largest: Option<(&PartitionHandle, u64)> = None;
        for (name, partition) in store.partitions() {
            let size = u64::from(partition.tree.active_memtable_size());
            active += size;
            if name == "entries" && size < ENTRIES_SEAL_FLOOR {
                continue;
            }
            if largest.is_none_or(|(_, l)| size > l) {
                largest = Some((partition, size));
            }
        }
        if active > WRITE_BUFFER_BYTES / 2 {
            if let Some((partition, _)) = largest {
                partition.rotate_memtable()?;
            }
        }
        if store.keyspace.write_buffer_size() <= WRITE_BUFFER_BYTES
            || started.elapsed() >= WRITE_BUFFER_WAIT
        {
            return Ok(started.elapsed());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Works around flush-permit starvation in fjall 2.11: on recovery the flusher gets one permit
/// per partition with queued memtables, not one per memtable, and a round flushes at most a
/// few; the memtables left queued hold the write buffer above its limit, the committer then
/// waits ([`relieve_write_buffer`]), and fjall's monitor will not rotate (which is what would
/// grant more rounds) a partition that still has queued memtables. Each rotation of a
/// non-empty memtable grants the flusher one more round. Called every 100 ms by the ledger's
/// upkeep thread; does nothing while the write buffer is below 90 % of its limit.
///
/// Under batch ingest the buffer sits there most of the time while the flusher keeps up, so
/// this rotates every 100 ms: `entries` only from [`ENTRIES_SEAL_FLOOR`] on. Rotated each
/// time (as up to session 16), its segments held ~8,000 leaves: 1,408 segments at 11.4 M
/// entries, whose opening took 3 s (`docs/benchmarks.md`, session 17).
pub(crate) fn unstall_flushes(store: &Store) -> Result<bool, LedgerError> {
    if store.keyspace.write_buffer_size() < WRITE_BUFFER_BYTES / 10 * 9 {
        return Ok(false);
    }
    // Every rotation is one more flush round; queued memtables of several partitions need
    // several, so rotate every partition that holds something.
    rotate_all(store, ENTRIES_SEAL_FLOOR)
}

/// Seals the active memtable of every partition that holds something (`entries` only from
/// `entries_floor` bytes on), queueing it for a flush.
fn rotate_all(store: &Store, entries_floor: u64) -> Result<bool, LedgerError> {
    use fjall::AbstractTree as _;
    let mut rotated = false;
    for (name, partition) in store.partitions() {
        let size = u64::from(partition.tree.active_memtable_size());
        if size > 0 && (name != "entries" || size >= entries_floor) {
            rotated |= partition.rotate_memtable()?;
        }
    }
    Ok(rotated)
}

/// Journal files at which [`free_journals`] steps in (fjall halts every write once its journals
/// pass `max_journaling_size`, 128 MiB here, which is four or five journals).
pub(crate) const JOURNALS_TO_FREE: usize = 3;

/// Works around slow journal release in fjall 2.11: a journal file is deleted only once every
/// partition has flushed what it holds, and the small partitions (tiles, checkpoints, state,
/// postings) fill their memtables so slowly that they pin old journals. fjall's monitor then
/// rotates one partition per 250 ms tick, and none at all while that partition has a flush
/// queued, so under load the journals reach their limit and fjall halts every write for
/// seconds ("write halt because of too many journals"). With [`JOURNALS_TO_FREE`] journals or
/// more, this rotates every partition that holds something, so that once the flusher has
/// written them all the old journals go. Called by the upkeep thread every 100 ms; `last` is
/// when it last rotated, and it waits a second between rotations so as not to cut the
/// memtables into slivers while the flusher catches up.
///
/// Each rotation seals the shared journal and starts a new one. The round holds
/// [`Store::commit_gate`], so no batch is committed between its rotations: the journals it
/// seals stay empty and go as soon as the flusher is done. Without the gate, every partition
/// rotated early in the round took writes from the journals sealed after it, pinning them
/// until its next rotation, and the round repeated every second, each time stalling commits
/// for the ~15 ms its dozen journal rotations take (`docs/benchmarks.md`, session 10). It
/// skips a tick rather than wait for the gate: a commit halted by fjall waits for the flushes
/// that [`unstall_flushes`], on the same thread, may have to unblock.
pub(crate) fn free_journals(
    store: &Store,
    last: &mut Option<std::time::Instant>,
) -> Result<bool, LedgerError> {
    if store.keyspace.journal_count() < JOURNALS_TO_FREE
        || last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1))
    {
        return Ok(false);
    }
    let Some(_gate) = try_gate(store) else {
        return Ok(false);
    };
    *last = Some(std::time::Instant::now());
    // `entries` too, whatever it holds: journals it pins would otherwise pile up at low ingest
    // rates, one a second, until its memtable reached the floor. At most once a second, so
    // under load its segments still hold a second of appends or its full 16 MiB.
    rotate_all(store, 0)
}

/// Memtable bytes below which [`flush_when_quiet`] leaves the write buffer alone: a ledger
/// that takes a record now and then would otherwise cut a segment per partition per quiet
/// second, for little memory.
pub(crate) const QUIET_FLUSH_BYTES: u64 = 4 * 1024 * 1024;

/// How long no write may land before [`flush_when_quiet`] flushes the memtables.
pub(crate) const QUIET_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// What [`flush_when_quiet`] last saw: fjall's sequence number and since when it has not moved.
#[derive(Default)]
pub(crate) struct Quiet {
    seqno: u64,
    since: Option<std::time::Instant>,
    flushed: bool,
}

/// Flushes the memtables once writes have stopped for [`QUIET_AFTER`] and they hold at least
/// [`QUIET_FLUSH_BYTES`]: otherwise the last burst's memtables (up to the 32 MiB write buffer)
/// stay in memory for as long as the ledger is idle. Once per quiet spell; the pipeline's idle
/// hook (`crate::idle`) then lets the allocator return the memory. Called by the upkeep thread
/// every 100 ms; like [`free_journals`] it skips a tick while a batch is being committed.
pub(crate) fn flush_when_quiet(store: &Store, quiet: &mut Quiet) -> Result<bool, LedgerError> {
    let seqno = store.keyspace.instant();
    if quiet.since.is_none() || seqno != quiet.seqno {
        *quiet = Quiet {
            seqno,
            since: Some(std::time::Instant::now()),
            flushed: false,
        };
        return Ok(false);
    }
    if quiet.flushed
        || quiet.since.is_some_and(|t| t.elapsed() < QUIET_AFTER)
        || store.keyspace.write_buffer_size() < QUIET_FLUSH_BYTES
    {
        return Ok(false);
    }
    let Some(_gate) = try_gate(store) else {
        return Ok(false);
    };
    quiet.flushed = true;
    rotate_all(store, 0)
}

/// [`Store::commit_gate`] if no batch is being committed (a poisoned gate is still a gate).
fn try_gate(store: &Store) -> Option<std::sync::MutexGuard<'_, ()>> {
    match store.commit_gate.try_lock() {
        Ok(gate) => Some(gate),
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// How much lower than the server's own the CPU priority of fjall's flush and compaction
/// threads is (a nice value added to the server's, at most 19).
///
/// Flushes and compactions come in bursts of tens of milliseconds of CPU each; on two cores
/// they took the CPU from the HTTP workers and the committer exactly when appends were waiting
/// (RocksDB lowers its compaction threads' priority for the same reason). Open loop at 10,000
/// appends/s: client p99 8.1–13.4 ms in nine of eleven runs with the two reniced (34.6 and
/// 37.8 ms in the others, machine-wide stalls), 11.9–27.7 ms in nine runs without (median
/// 16.3 ms); lowering the compactor alone did not help. Under batch ingest, where the CPU is
/// saturated, the flusher gets less of it and fjall pauses writes more often for a full write
/// buffer, but records/s did not fall (`docs/benchmarks.md`, session 14).
pub(crate) const BACKGROUND_NICE: i32 = 10;

/// Names fjall 2.11 gives its flush and compaction worker threads.
const BACKGROUND_THREADS: [&str; 2] = ["flusher", "compactor"];

/// Gives every fjall flush and compaction thread of this process the priority
/// [`BACKGROUND_NICE`] below the calling thread's, and returns how many it changed (0 when all
/// already have it). A thread someone set lower still is left as it is: this only ever lowers.
/// fjall starts those threads when it opens a keyspace, and it names them in the thread itself,
/// so the upkeep thread calls this now and then rather than once right after opening. On Linux
/// only, where the nice value is per thread; elsewhere it does nothing.
#[cfg(target_os = "linux")]
pub(crate) fn lower_background_priority() -> std::io::Result<usize> {
    use rustix::process::{getpriority_process, setpriority_process, Pid};
    let target = background_nice()?;
    let mut changed = 0;
    for task in std::fs::read_dir("/proc/self/task")? {
        // A thread may end between listing and reading: skip what is gone.
        let Ok(task) = task else { continue };
        let Ok(name) = std::fs::read_to_string(task.path().join("comm")) else {
            continue;
        };
        if !BACKGROUND_THREADS.contains(&name.trim_end()) {
            continue;
        }
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse().ok())
            .and_then(Pid::from_raw)
        else {
            continue;
        };
        if getpriority_process(Some(tid)).is_ok_and(|nice| nice < target)
            && setpriority_process(Some(tid), target).is_ok()
        {
            changed += 1;
        }
    }
    Ok(changed)
}

/// See the Linux version: elsewhere the nice value is not per thread.
#[cfg(not(target_os = "linux"))]
pub(crate) fn lower_background_priority() -> std::io::Result<usize> {
    Ok(0)
}

/// Gives the calling thread the priority [`BACKGROUND_NICE`] below its own, as
/// [`lower_background_priority`] does for fjall's threads (Linux only).
#[cfg(target_os = "linux")]
pub(crate) fn lower_own_priority() -> std::io::Result<()> {
    // On Linux the "process" priority of pid 0 is the calling thread's.
    rustix::process::setpriority_process(None, background_nice()?)?;
    Ok(())
}

/// The nice value for background work, seen from the calling thread: [`BACKGROUND_NICE`] above
/// its own, at most 19.
#[cfg(target_os = "linux")]
fn background_nice() -> std::io::Result<i32> {
    Ok((rustix::process::getpriority_process(None)? + BACKGROUND_NICE).min(19))
}

/// See the Linux version.
#[cfg(not(target_os = "linux"))]
pub(crate) fn lower_own_priority() -> std::io::Result<()> {
    Ok(())
}

/// Takes the exclusive lock on `<dir>/provledger.lock` (creating `dir`): one process at a time
/// owns a data directory. The lock lasts as long as the returned file is open.
pub(crate) fn lock_data_dir(dir: &Path) -> Result<std::fs::File, LedgerError> {
    std::fs::create_dir_all(dir)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("provledger.lock"))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(LedgerError::InUse(dir.display().to_string()))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

/// The compaction strategy of `entries` in directories created by this build: fjall's FIFO
/// strategy with neither a size limit nor a TTL, so it never drops a segment, and it merges
/// none while the segments' key ranges are disjoint, which they stay: `entries` is written
/// once per index, in index order, and never deleted or overwritten. Each flush leaves one
/// segment, which fjall never rewrites; the ledger merges runs of small ones itself
/// (`coalesce.rs`).
///
/// Under the default leveled strategy fjall merges disjoint segments anyway (level 0 into
/// level 1 once it holds 64 MiB, and always on the way into level 2), so every leaf was
/// written ~2.7 times; that was a third of all compaction under batch ingest, ~1 ms of CPU per
/// 1,000 records (`docs/benchmarks.md`, session 14). The cost is more, smaller segment files
/// (one per flush, ≤ 16 MiB before compression), until the coalescer merges them once into
/// segments of up to 64 MiB: lookups find the segment by binary search over the disjoint level
/// either way.
///
/// fjall stores a partition's strategy when it creates it: directories created before session
/// 14 keep the leveled one, which is correct, only slower.
///
/// Segments that stay in level 0 keep their whole block index in memory (one handle per data
/// block), which fjall otherwise does only for levels 0 and 1; hence [`ENTRIES_BLOCK_BYTES`].
fn entries_compaction() -> fjall::compaction::Strategy {
    fjall::compaction::Strategy::Fifo(fjall::compaction::Fifo::new(u64::MAX, None))
}

/// Data and index block size of `entries` in directories created by this build (fjall's default
/// is 4 KiB). Every `entries` segment stays in level 0 ([`entries_compaction`]), where fjall
/// pins one block handle per data block in memory: with 4 KiB blocks that took ~60 MB of RSS at
/// 11.6 M entries (168.8 MB at rest, against 104.6 MB with leveled compaction), with 32 KiB an
/// eighth of it. Leaves are read one at a time only to answer `GET /v1/records/{id}`, and in
/// runs (entry bundles of 256, exports, `verify`), which larger blocks suit; they also compress
/// better.
const ENTRIES_BLOCK_BYTES: u32 = 32 * 1024;

/// The size of level 1 in the partitions that merge more than 4 segments of level 0 at once:
/// fjall's default (64 MiB × 4).
const LEVEL_1_BYTES: u32 = 256 * 1024 * 1024;

/// File descriptors left to everything but fjall's cache of open segment files: sockets,
/// journals, the key and token files.
const RESERVED_FILES: u64 = 1024;

/// fjall's own size for its cache of open segment files, kept when the process may not open
/// more files than that leaves room for.
const FJALL_OPEN_FILES: usize = 900;

/// The most segment files the store keeps open.
const MAX_OPEN_FILES: usize = 16_384;

/// How many segment files fjall may keep open, given the process's soft limit on open files
/// (`None`: unlimited). `entries` gains a segment per flush and never merges them
/// ([`entries_compaction`]): ~38 per million entries, so at ~18 M entries a log has more
/// segments than fjall's default cache of 900, and reads of older leaves start reopening files.
/// The server raises its soft limit to the hard one first (`src/main.rs`).
fn open_files_budget(soft_limit: Option<u64>) -> usize {
    soft_limit.map_or(MAX_OPEN_FILES, |soft| {
        usize::try_from(soft.saturating_sub(RESERVED_FILES))
            .unwrap_or(MAX_OPEN_FILES)
            .clamp(FJALL_OPEN_FILES, MAX_OPEN_FILES)
    })
}

/// The process's soft limit on open files (`None`: unlimited).
#[cfg(target_os = "linux")]
fn open_files_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Elsewhere: as if the limit were the usual 1,024, which keeps fjall's default.
#[cfg(not(target_os = "linux"))]
fn open_files_limit() -> Option<u64> {
    Some(1024)
}

/// Handles to the keyspace and its partitions.
#[derive(Clone)]
pub(crate) struct Store {
    /// Exclusive lock on `<dir>/provledger.lock`, held while any handle lives.
    _lock: std::sync::Arc<std::fs::File>,
    pub(crate) keyspace: Keyspace,
    pub(crate) entries: PartitionHandle,
    pub(crate) payloads: PartitionHandle,
    pub(crate) tiles: PartitionHandle,
    pub(crate) inner: PartitionHandle,
    /// Tiles and interiors above level 0 (see the module comment).
    pub(crate) upper: PartitionHandle,
    pub(crate) ids: PartitionHandle,
    /// `entity_versions` (`versions.rs`).
    pub(crate) versions: PartitionHandle,
    /// `versions`, the entity version index of builds before session 17, until a ledger
    /// moves it into `entity_versions` ([`Store::migrate_versions`]).
    pub(crate) legacy_versions: Option<PartitionHandle>,
    pub(crate) idem: PartitionHandle,
    /// `cited_by` (`cites.rs`).
    pub(crate) cited_by: PartitionHandle,
    /// `cites`, the cited-by index of builds before session 23 (keyed by the cited leaf hash),
    /// for refs of records below [`Store::cited_by_from`]; never rewritten.
    pub(crate) legacy_cites: Option<PartitionHandle>,
    pub(crate) checkpoints: PartitionHandle,
    pub(crate) meta: PartitionHandle,
    /// Records by the data subject their `subject` attribute names (erasure by subject).
    pub(crate) subjects: PartitionHandle,
    /// Secondary indexes of `indexes.rs`: by kind, by actor, decisions, the approval queue.
    pub(crate) kinds: PartitionHandle,
    pub(crate) actors: PartitionHandle,
    pub(crate) decisions: PartitionHandle,
    pub(crate) pending: PartitionHandle,
    /// Held by the committer while it commits a batch, and by [`free_journals`] while it
    /// rotates every partition, so that no write lands between those rotations.
    pub(crate) commit_gate: std::sync::Arc<std::sync::Mutex<()>>,
    /// Whether `tiles` or `inner` hold tiles above level 0, as builds before session 12 wrote
    /// them; read once at open and cleared by [`Store::move_upper_tiles`]. Only then does a
    /// read that misses in `upper` look under the old key.
    pub(crate) upper_in_old_place: bool,
    /// `payloads` holds runs for the indexes below this and one key per index from it on
    /// (directories of earlier builds, until [`Store::migrate_payloads`] is done: then
    /// `u64::MAX`). See `payloads.rs`.
    pub(crate) payload_runs_below: u64,
    /// `entries` holds one leaf per key below this and runs from it on (`leaves.rs`):
    /// `u64::MAX` in a directory of an earlier build until a ledger opens it.
    pub(crate) leaf_runs_from: u64,
    /// Refs of records from this index on are in `cited_by`, below it in the legacy `cites`
    /// (`cites.rs`): `u64::MAX` in a directory of an earlier build until a ledger opens it.
    pub(crate) cited_by_from: u64,
}

impl Store {
    pub(crate) fn open(dir: &Path, cache_bytes: u64) -> Result<Store, LedgerError> {
        let lock = lock_data_dir(dir)?;
        let keyspace = Config::new(dir.join("fjall"))
            .max_open_files(open_files_budget(open_files_limit()))
            .cache_size(cache_bytes)
            .max_write_buffer_size(FJALL_WRITE_BUFFER_BYTES)
            .max_journaling_size(128 * 1024 * 1024)
            .flush_workers(FLUSH_TASKS_PER_ROUND)
            .open()?;
        // Per partition, chosen by how it is read (these are fixed when a partition is created):
        // - hashes (tiles, interiors, ids) do not compress: no compression, no wasted CPU;
        // - bloom filters only help lookups of absent keys, which only `ids` and `idem` see
        //   (refs and retries); elsewhere they would cost memory for nothing;
        // - 16 MiB memtables for the partitions every append writes, bounded in total by the
        //   keyspace's write buffer;
        // - `ids` (random keys, read only by point lookups, which its bloom filter answers
        //   without opening a segment) lets 32 segments gather in level 0 before merging them,
        //   not 4: every flush of random keys overlaps all of level 0 and 1, so each merge
        //   rewrites everything there. 16 instead of 4 saved ~1.5 ms of compaction per 1,000
        //   records under batch ingest (session 11), 32 another ~0.65 ms (−14 % compactor CPU,
        //   session 15), and id lookups did not slow down (`docs/benchmarks.md`). Directories
        //   created before keep the threshold they were created with.
        // - `entity_versions` (keys clustered by entity, written all over the key space) merges
        //   at 8:
        //   ~25 % less compaction than at 4 (session 16). Its reads are key ranges, which
        //   visit every level-0 segment: with 16 they took twice as long, with 8 the next
        //   version of an entity p50 +6 µs.
        // - `entries` (written once, in index order, never deleted or overwritten) is never
        //   compacted: see [`entries_compaction`].
        let open = |name: &str, hashes: bool, bloom: bool| {
            let mut o = PartitionCreateOptions::default()
                .max_memtable_size(16 * 1024 * 1024)
                .bloom_filter_bits(bloom.then_some(10));
            if hashes {
                o = o.compression(fjall::CompressionType::None);
            }
            if name == "entries" {
                o = o
                    .compaction_strategy(entries_compaction())
                    .block_size(ENTRIES_BLOCK_BYTES);
            }
            // Level 1's size is `target_size` × `l0_threshold`: both keep it at the default
            // 256 MiB. 64 MiB × 16 made the id index's 1 GiB, and level 1 keeps denser bloom
            // filters and its whole block index in memory: the id index's filters took 23.0 MB
            // at 11.2 M entries, 17.2 MB at 10.9 M with 16 MiB × 16 (`docs/benchmarks.md`,
            // session 11).
            let l0_threshold = match name {
                "ids" => Some(32),
                "entity_versions" | "versions" => Some(8),
                _ => None,
            };
            if let Some(l0_threshold) = l0_threshold {
                o = o.compaction_strategy(fjall::compaction::Strategy::Leveled(
                    fjall::compaction::Leveled {
                        l0_threshold,
                        target_size: LEVEL_1_BYTES / u32::from(l0_threshold),
                        ..Default::default()
                    },
                ));
            }
            keyspace.open_partition(name, o)
        };
        let tiles = open("tiles", true, false)?;
        let inner = open("inner", true, false)?;
        let mut upper_in_old_place = false;
        for p in [&tiles, &inner] {
            upper_in_old_place |= p.range(tile_key(1, 0)..).next().transpose()?.is_some();
        }
        let meta = open("meta", false, false)?;
        let payloads = open("payloads", false, false)?;
        // A directory without a layout mark is new (nothing stored yet: all runs) or from an
        // earlier build (one key per payload, one per leaf).
        let entries = open("entries", false, false)?;
        let fresh = meta.get(STATE_KEY)?.is_none() && entries.is_empty()? && payloads.is_empty()?;
        let payload_runs_below = match meta.get(crate::payloads::RUNS_BELOW_KEY)? {
            Some(v) => be_u64(&v)?,
            None if fresh => u64::MAX,
            None => 0,
        };
        let leaf_runs_from = match meta.get(crate::leaves::RUNS_FROM_KEY)? {
            Some(v) => be_u64(&v)?,
            None if fresh => 0,
            None => u64::MAX,
        };
        let cited_by_from = match meta.get(crate::cites::CITED_BY_FROM_KEY)? {
            Some(v) => be_u64(&v)?,
            None if fresh => 0,
            None => u64::MAX,
        };
        Ok(Store {
            entries,
            payloads,
            tiles,
            inner,
            upper: open("upper", true, false)?,
            ids: open("ids", true, true)?,
            versions: open("entity_versions", false, false)?,
            legacy_versions: match keyspace.partition_exists("versions") {
                true => Some(open("versions", false, false)?),
                false => None,
            },
            idem: open("idem", false, true)?,
            cited_by: open("cited_by", false, false)?,
            legacy_cites: match keyspace.partition_exists("cites") {
                true => Some(open("cites", false, false)?),
                false => None,
            },
            checkpoints: open("checkpoints", false, false)?,
            meta,
            subjects: open("subjects", false, false)?,
            kinds: open("kinds", false, false)?,
            actors: open("actors", false, false)?,
            decisions: open("decisions", false, false)?,
            pending: open("pending", false, false)?,
            keyspace,
            _lock: std::sync::Arc::new(lock),
            commit_gate: Default::default(),
            upper_in_old_place,
            payload_runs_below,
            leaf_runs_from,
            cited_by_from,
        })
    }

    pub(crate) fn partitions(&self) -> [(&'static str, &PartitionHandle); 16] {
        [
            ("entries", &self.entries),
            ("payloads", &self.payloads),
            ("tiles", &self.tiles),
            ("inner", &self.inner),
            ("upper", &self.upper),
            ("ids", &self.ids),
            ("entity_versions", &self.versions),
            ("idem", &self.idem),
            ("cited_by", &self.cited_by),
            ("checkpoints", &self.checkpoints),
            ("meta", &self.meta),
            ("subjects", &self.subjects),
            ("kinds", &self.kinds),
            ("actors", &self.actors),
            ("decisions", &self.decisions),
            ("pending", &self.pending),
        ]
    }

    pub(crate) fn state(&self) -> Result<State, LedgerError> {
        match self.meta.get(STATE_KEY)? {
            None => Ok(State::default()),
            Some(bytes) => rmp_serde::from_slice(&bytes)
                .map_err(|e| LedgerError::Corrupt(format!("tree state does not decode: {e}"))),
        }
    }

    pub(crate) fn put_state(
        &self,
        batch: &mut fjall::Batch,
        state: &State,
    ) -> Result<(), LedgerError> {
        let bytes = rmp_serde::to_vec_named(state)
            .map_err(|e| LedgerError::Corrupt(format!("tree state does not encode: {e}")))?;
        batch.insert(&self.meta, STATE_KEY, bytes);
        Ok(())
    }

    /// The archived signed checkpoint for exactly `size`, if a batch ended there.
    pub(crate) fn checkpoint_at(&self, size: u64) -> Result<Option<String>, LedgerError> {
        let Some(v) = self.checkpoints.get(size.to_be_bytes())? else {
            return Ok(None);
        };
        String::from_utf8(v.to_vec())
            .map(Some)
            .map_err(|_| LedgerError::Corrupt("stored checkpoint is not UTF-8".into()))
    }

    /// The first checkpoint that covered `index`: its tree size and signed note.
    pub(crate) fn covering_checkpoint(
        &self,
        index: u64,
    ) -> Result<Option<(u64, String)>, LedgerError> {
        let Some(kv) = self.checkpoints.range((index + 1).to_be_bytes()..).next() else {
            return Ok(None);
        };
        let (k, v) = kv?;
        let note = String::from_utf8(v.to_vec())
            .map_err(|_| LedgerError::Corrupt("stored checkpoint is not UTF-8".into()))?;
        Ok(Some((be_u64(&k)?, note)))
    }

    /// The stored row of hashes of tile `index` at `level` (full, or above level 0 partial).
    pub(crate) fn tile(&self, level: u8, index: u64) -> Result<Option<Slice>, LedgerError> {
        self.tile_of(TileKind::Row, level, index)
    }

    /// The stored interior of full tile `index` at `level`.
    pub(crate) fn interior(&self, level: u8, index: u64) -> Result<Option<Slice>, LedgerError> {
        self.tile_of(TileKind::Inner, level, index)
    }

    fn tile_of(&self, kind: TileKind, level: u8, index: u64) -> Result<Option<Slice>, LedgerError> {
        let (partition, key) = self.tile_place(kind, level, index);
        if let Some(found) = partition.get(key)? {
            return Ok(Some(found));
        }
        // An earlier build kept every level in `tiles` / `inner`; `move_upper_tiles` moves them
        // when a ledger opens the directory, but `verify` reads it as it is.
        if level > 0 && self.upper_in_old_place {
            return Ok(self.level_zero(kind).get(tile_key(level, index))?);
        }
        Ok(None)
    }

    /// The partition of level 0's rows or interiors (and of every level's, before session 12).
    fn level_zero(&self, kind: TileKind) -> &PartitionHandle {
        match kind {
            TileKind::Row => &self.tiles,
            TileKind::Inner => &self.inner,
        }
    }

    /// Where a tile or interior is stored: its partition and key.
    fn tile_place(&self, kind: TileKind, level: u8, index: u64) -> (&PartitionHandle, Vec<u8>) {
        match level {
            0 => (self.level_zero(kind), tile_key(0, index).to_vec()),
            _ => {
                let mut key = Vec::with_capacity(10);
                key.push(match kind {
                    TileKind::Row => 0,
                    TileKind::Inner => 1,
                });
                key.extend_from_slice(&tile_key(level, index));
                (&self.upper, key)
            }
        }
    }

    /// Adds a tile or an interior to an append batch.
    pub(crate) fn put_tile(
        &self,
        batch: &mut fjall::Batch,
        kind: TileKind,
        level: u8,
        index: u64,
        bytes: Vec<u8>,
    ) {
        let (partition, key) = self.tile_place(kind, level, index);
        batch.insert(partition, key, bytes);
    }

    /// Moves the tiles and interiors above level 0 that an earlier build kept in `tiles` and
    /// `inner` to `upper`, in one fsynced batch; returns how many moved. They are 1/255 of the
    /// tiles (a few MB at ten million entries), so this is quick, and it runs before the ledger
    /// reads the tree.
    pub(crate) fn move_upper_tiles(&mut self) -> Result<u64, LedgerError> {
        if !self.upper_in_old_place {
            return Ok(0);
        }
        let mut batch = self
            .keyspace
            .batch()
            .durability(Some(fjall::PersistMode::SyncAll));
        let mut moved = 0u64;
        for kind in [TileKind::Row, TileKind::Inner] {
            let from = self.level_zero(kind);
            for kv in from.range(tile_key(1, 0)..) {
                let (k, v) = kv?;
                let Some((&level, index)) = k.split_first() else {
                    return Err(LedgerError::Corrupt("empty tile key".into()));
                };
                let (partition, key) = self.tile_place(kind, level, be_u64(index)?);
                batch.insert(partition, key, v);
                batch.remove(from, k);
                moved += 1;
            }
        }
        batch.commit()?;
        self.upper_in_old_place = false;
        Ok(moved)
    }

    /// Stores `size` (u64 BE) under `key` in `meta`, fsynced, unless a value is there already
    /// (a layout mark: where a newer layout starts); whether it stored it.
    pub(crate) fn mark_once(&self, key: &[u8], size: u64) -> Result<bool, LedgerError> {
        if self.meta.get(key)?.is_some() {
            return Ok(false);
        }
        let mut batch = self
            .keyspace
            .batch()
            .durability(Some(fjall::PersistMode::SyncAll));
        batch.insert(&self.meta, key, size.to_be_bytes());
        batch.commit()?;
        Ok(true)
    }

    /// Index and tenant of a record id.
    pub(crate) fn lookup_id(&self, id: &Hash) -> Result<Option<(u64, String)>, LedgerError> {
        let Some(v) = self.ids.get(id.as_bytes())? else {
            return Ok(None);
        };
        let (index, tenant) = split_index(&v)?;
        let tenant = String::from_utf8(tenant.to_vec())
            .map_err(|_| LedgerError::Corrupt("tenant in id index is not UTF-8".into()))?;
        Ok(Some((index, tenant)))
    }

    /// Index and request fingerprint recorded under an idempotency key.
    pub(crate) fn idempotent(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<(u64, [u8; 32])>, LedgerError> {
        let Some(v) = self.idem.get(idem_key(tenant, key))? else {
            return Ok(None);
        };
        let (index, fp) = split_index(&v)?;
        let fp: [u8; 32] = fp
            .try_into()
            .map_err(|_| LedgerError::Corrupt("bad fingerprint in idempotency index".into()))?;
        Ok(Some((index, fp)))
    }
}

pub(crate) fn tile_key(level: u8, index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    let (l, rest) = k.split_at_mut(1);
    l.copy_from_slice(&[level]);
    rest.copy_from_slice(&index.to_be_bytes());
    k
}

pub(crate) fn entity_prefix(tenant: &str, entity: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + entity.len() + 2);
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(entity.as_bytes());
    k.push(0);
    k
}

/// Prefix of a subject's records in the `subjects` index.
pub(crate) fn subject_prefix(tenant: &str, subject: &str) -> Vec<u8> {
    entity_prefix(tenant, subject)
}

/// Key of the `subjects` index: tenant ‖ 0 ‖ subject ‖ 0 ‖ index (BE).
pub(crate) fn subject_key(tenant: &str, subject: &str, index: u64) -> Vec<u8> {
    let mut k = subject_prefix(tenant, subject);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

pub(crate) fn idem_key(tenant: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + key.len() + 1);
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

pub(crate) fn index_and(index: u64, rest: &[u8]) -> Slice {
    // Made as fjall's own slice: a `Vec` would be copied into one.
    Slice::fused(&index.to_be_bytes(), rest)
}

fn split_index(v: &[u8]) -> Result<(u64, &[u8]), LedgerError> {
    if v.len() < 8 {
        return Err(LedgerError::Corrupt("short index value".into()));
    }
    let (a, b) = v.split_at(8);
    Ok((be_u64(a)?, b))
}

pub(crate) fn be_u64(b: &[u8]) -> Result<u64, LedgerError> {
    let arr: [u8; 8] = b
        .try_into()
        .map_err(|_| LedgerError::Corrupt(format!("expected 8 bytes, found {}", b.len())))?;
    Ok(u64::from_be_bytes(arr))
}

/// Hash number `pos` inside a tile's bytes.
pub(crate) fn hash_at(tile: &[u8], pos: usize) -> Option<Hash> {
    let bytes = tile.get(pos * HASH_LEN..(pos + 1) * HASH_LEN)?;
    Hash::from_slice(bytes).ok()
}

/// Reads stored nodes: tile rows (heights 0, 8, 16, …) and tile interiors, keeping the last
/// row and interior read. What the store does not hold of the right edge (level 0's tile, the
/// interiors) comes from `edge`, the reader's head.
pub(crate) struct TileReader<'a> {
    store: &'a Store,
    edge: &'a crate::tiles::Edge,
    row: Option<((u8, u64), Option<Slice>)>,
    inner: Option<((u8, u64), Option<Slice>)>,
}

impl<'a> TileReader<'a> {
    pub(crate) fn new(store: &'a Store, edge: &'a crate::tiles::Edge) -> TileReader<'a> {
        TileReader {
            store,
            edge,
            row: None,
            inner: None,
        }
    }

    fn row_node(&mut self, level: u8, index: u64) -> Result<Hash, LedgerError> {
        let tile_index = index / TILE_WIDTH;
        let pos = (index % TILE_WIDTH) as usize;
        // The right edge first: level 0's tile there is not stored at all, and the tiles above
        // are rewritten by nearly every batch, so a store read would be a miss or a memtable
        // search for what the head already holds.
        if let Some(h) = self
            .edge
            .row(level, tile_index)
            .and_then(|t| hash_at(t, pos))
        {
            return Ok(h);
        }
        let key = (level, tile_index);
        let tile = match &self.row {
            Some((k, t)) if *k == key => t,
            _ => {
                let t = self.store.tile(level, tile_index)?;
                &self.row.insert((key, t)).1
            }
        };
        tile.as_deref()
            .and_then(|t| hash_at(t, pos))
            .ok_or_else(|| {
                LedgerError::Corrupt(format!(
                    "tile {level}/{tile_index} does not hold node {pos} (stored: {} hashes)",
                    tile.as_ref().map_or(0, |t| t.len() / HASH_LEN)
                ))
            })
    }
}

impl NodeReader for TileReader<'_> {
    fn stored(&mut self, height: u8, index: u64) -> Result<Option<Hash>, LedgerError> {
        let level = height / TILE_HEIGHT;
        let j = height % TILE_HEIGHT;
        if j == 0 {
            return self.row_node(level, index).map(Some);
        }
        let tile_index = (index << j) / TILE_WIDTH;
        let pos = index - tile_index * (TILE_WIDTH >> j);
        let slot = crate::tree::inner_slot(j, pos);
        // Right-edge interiors are never stored: the head holds them.
        if let Some(h) = self.edge.node(level, tile_index, slot) {
            return Ok(Some(h));
        }
        let key = (level, tile_index);
        let inner = match &self.inner {
            Some((k, t)) if *k == key => t,
            _ => {
                let t = self.store.interior(level, tile_index)?;
                &self.inner.insert((key, t)).1
            }
        };
        // An all-zero slot is a node that was not complete when the interior was written (a
        // right-edge interior written by a version before the edge was published instead).
        Ok(inner
            .as_ref()
            .and_then(|t| hash_at(t, slot))
            .filter(|h| h.0 != [0u8; 32]))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failure report

    use super::*;

    #[test]
    fn a_quiet_ledger_flushes_its_memtables_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let mut quiet = Quiet::default();
        // Small writes stay in memory however long the ledger is quiet.
        store
            .entries
            .insert(0u64.to_be_bytes(), [7u8; 300])
            .unwrap();
        assert!(!flush_when_quiet(&store, &mut quiet).unwrap());
        std::thread::sleep(QUIET_AFTER + std::time::Duration::from_millis(50));
        assert!(!flush_when_quiet(&store, &mut quiet).unwrap());
        // A burst of writes: not flushed while writes keep landing, nor right after the last.
        for i in 1..20_000u64 {
            store.entries.insert(i.to_be_bytes(), [7u8; 300]).unwrap();
        }
        assert!(store.keyspace.write_buffer_size() >= QUIET_FLUSH_BYTES);
        assert!(!flush_when_quiet(&store, &mut quiet).unwrap());
        assert!(!flush_when_quiet(&store, &mut quiet).unwrap());
        std::thread::sleep(QUIET_AFTER + std::time::Duration::from_millis(50));
        assert!(flush_when_quiet(&store, &mut quiet).unwrap());
        // Once per quiet spell.
        assert!(!flush_when_quiet(&store, &mut quiet).unwrap());
        assert!(crate::seal::settle(
            &store,
            std::time::Duration::from_secs(30)
        ));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.keyspace.write_buffer_size() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(store.keyspace.write_buffer_size(), 0);
        let last = store.entries.get(19_999u64.to_be_bytes()).unwrap();
        assert_eq!(last.map(|v| v.len()), Some(300));
    }

    /// Writes `flushes × per` entries with keys 0, 1, … (as `entries` holds them, big-endian)
    /// and `value(index)`, flushing `entries` after every `per`: one segment each.
    pub(crate) fn write_entry_segments(
        store: &Store,
        flushes: u64,
        per: u64,
        value: impl Fn(u64) -> Vec<u8>,
    ) {
        for round in 0..flushes {
            for i in 0..per {
                let index = round * per + i;
                store
                    .entries
                    .insert(index.to_be_bytes(), value(index))
                    .unwrap();
            }
            store.entries.rotate_memtable_and_wait().unwrap();
        }
    }

    #[test]
    fn memtables_recovered_from_many_journals_are_all_flushed_on_open() {
        use fjall::AbstractTree as _;
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            // As a crash under load leaves it: a dozen journals (each `entries` rotation seals
            // one), each holding writes to a dozen partitions that were never flushed.
            for round in 0..12u64 {
                for (_, partition) in store.partitions().iter().skip(1).take(12) {
                    partition.insert(round.to_be_bytes(), [1u8; 64]).unwrap();
                }
                store
                    .entries
                    .insert(round.to_be_bytes(), [2u8; 64])
                    .unwrap();
                store.entries.rotate_memtable_and_wait().unwrap();
            }
            assert!(store.keyspace.journal_count() >= 12);
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        // Nothing writes now, so nothing grants the flusher more rounds than it got on open.
        assert!(
            crate::seal::settle(&store, std::time::Duration::from_secs(10)),
            "sealed memtables left: {:?}",
            store
                .partitions()
                .iter()
                .map(|(n, p)| (*n, p.tree.sealed_memtable_count()))
                .filter(|(_, c)| *c > 0)
                .collect::<Vec<_>>()
        );
        for (_, partition) in store.partitions().iter().skip(1).take(12) {
            assert_eq!(partition.tree.sealed_memtable_count(), 0);
            assert!(partition.get(11u64.to_be_bytes()).unwrap().is_some());
        }
    }

    #[test]
    fn entries_keep_every_segment_they_are_flushed_to_and_every_leaf() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.entries.config.data_block_size, ENTRIES_BLOCK_BYTES);
        // Nothing is ever dropped: no size limit, no TTL.
        match &store.entries.config.compaction_strategy {
            fjall::compaction::Strategy::Fifo(f) => {
                assert_eq!((f.limit, f.ttl_seconds), (u64::MAX, None));
            }
            other => panic!("entries compact with {other:?}"),
        }
        // Forty flushes of disjoint index ranges. The leveled strategy merges small disjoint
        // segments once 32 gather in level 0; here every one stays as it was written.
        let (flushes, per) = (40u64, 50u64);
        write_entry_segments(&store, flushes, per, |index| index.to_le_bytes().to_vec());
        assert!(crate::seal::settle(
            &store,
            std::time::Duration::from_secs(30)
        ));
        assert_eq!(store.entries.segment_count(), flushes as usize);
        drop(store);
        // The strategy is the partition's own, kept across a restart, and so is every leaf.
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert!(matches!(
            store.entries.config.compaction_strategy,
            fjall::compaction::Strategy::Fifo(_)
        ));
        for index in 0..flushes * per {
            let leaf = store.entries.get(index.to_be_bytes()).unwrap().unwrap();
            assert_eq!(&*leaf, index.to_le_bytes(), "entry {index}");
        }
    }

    /// Rotations for stalled flushes leave a small `entries` memtable alone: each would be one
    /// more small segment to merge. (Freeing journals and a quiet flush take it: see above.)
    #[test]
    fn upkeep_rotations_leave_entries_until_its_floor() {
        use fjall::AbstractTree as _;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        for i in 0..96u64 {
            store
                .entries
                .insert(i.to_be_bytes(), vec![7u8; 64 * 1024])
                .unwrap();
        }
        for p in [&store.ids, &store.payloads] {
            for i in 0..224u64 {
                p.insert(i.to_be_bytes(), vec![7u8; 64 * 1024]).unwrap();
            }
        }
        assert!(store.keyspace.write_buffer_size() >= WRITE_BUFFER_BYTES / 10 * 9);
        assert!(unstall_flushes(&store).unwrap());
        assert_eq!(store.ids.tree.active_memtable_size(), 0);
        assert_eq!(store.payloads.tree.active_memtable_size(), 0);
        assert!(
            store.entries.tree.active_memtable_size() > 0,
            "6 MiB: under the floor"
        );
    }

    #[test]
    fn the_committer_seals_the_largest_memtable_and_waits_for_the_flusher() {
        use fjall::AbstractTree as _;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let fill = |partition: &PartitionHandle, mib: u64| {
            for i in 0..mib * 16 {
                partition
                    .insert(i.to_be_bytes(), vec![7u8; 64 * 1024])
                    .unwrap();
            }
        };
        // Under half of the buffer: nothing sealed, nothing to wait for.
        fill(&store.payloads, 6);
        fill(&store.entries, 4);
        relieve_write_buffer(&store).unwrap();
        assert!(store.payloads.tree.active_memtable_size() > 0);
        assert!(store.entries.tree.active_memtable_size() > 0);
        // Over half, the largest being `entries` under its floor: the next largest is sealed.
        fill(&store.entries, 3);
        fill(&store.ids, 4);
        relieve_write_buffer(&store).unwrap();
        assert_eq!(store.payloads.tree.active_memtable_size(), 0);
        assert!(store.entries.tree.active_memtable_size() > 0);
        assert!(store.ids.tree.active_memtable_size() > 0);
        // Over half: the largest is sealed (and queued for a flush), the others stay.
        fill(&store.versions, 6);
        relieve_write_buffer(&store).unwrap();
        assert_eq!(store.versions.tree.active_memtable_size(), 0);
        assert!(store.ids.tree.active_memtable_size() > 0);
        assert!(store.entries.tree.active_memtable_size() > 0);
        // `entries` from its floor on is sealed like any other.
        fill(&store.entries, 2);
        fill(&store.cited_by, 4);
        relieve_write_buffer(&store).unwrap();
        assert_eq!(store.entries.tree.active_memtable_size(), 0);
        assert!(store.ids.tree.active_memtable_size() > 0);
        // Over the whole buffer in active memtables alone (fjall's own limit is four times as
        // much, so it lets these writes through): the call seals memtables until the active
        // ones hold at most half, and returns once the flusher has brought the rest under.
        for p in [&store.kinds, &store.actors, &store.subjects] {
            fill(p, 12);
        }
        assert!(store.keyspace.write_buffer_size() > WRITE_BUFFER_BYTES);
        relieve_write_buffer(&store).unwrap();
        assert!(store.keyspace.write_buffer_size() <= WRITE_BUFFER_BYTES);
        let active: u64 = store
            .partitions()
            .iter()
            .map(|(_, p)| u64::from(p.tree.active_memtable_size()))
            .sum();
        assert!(active <= WRITE_BUFFER_BYTES / 2, "{active} bytes active");
    }

    #[test]
    fn scattered_indexes_merge_level_0_late_and_keep_level_1_at_256_mib() {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..2 {
            // On the new directory and again on reopening it.
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            for (partition, threshold) in [(&store.ids, 32), (&store.versions, 8)] {
                match &partition.config.compaction_strategy {
                    fjall::compaction::Strategy::Leveled(l) => {
                        assert_eq!(l.l0_threshold, threshold);
                        let level_1 = u64::from(l.target_size) * u64::from(l.l0_threshold);
                        assert_eq!(level_1, 256 * 1024 * 1024);
                    }
                    other => panic!("compacts with {other:?}"),
                }
            }
        }
    }

    #[test]
    fn the_segment_file_cache_grows_with_the_open_files_limit() {
        // The common default soft limit leaves fjall its own size, and so does anything lower.
        assert_eq!(open_files_budget(Some(1024)), FJALL_OPEN_FILES);
        assert_eq!(open_files_budget(Some(256)), FJALL_OPEN_FILES);
        // Above it, all but the reserve, up to the cap.
        assert_eq!(open_files_budget(Some(4096)), 3072);
        assert_eq!(open_files_budget(Some(1 << 20)), MAX_OPEN_FILES);
        assert_eq!(open_files_budget(None), MAX_OPEN_FILES);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn fjall_background_threads_run_at_a_lower_priority() {
        use rustix::process::{getpriority_process, Pid};
        let dir = tempfile::tempdir().unwrap();
        let _store = Store::open(dir.path(), 1 << 20).unwrap();
        let own = getpriority_process(None).unwrap();
        let target = (own + BACKGROUND_NICE).min(19);
        // fjall names its threads from inside them: wait until they have their names.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let nice_by_name = || {
            let mut seen = Vec::new();
            for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
                let Ok(name) = std::fs::read_to_string(task.path().join("comm")) else {
                    continue;
                };
                let tid: i32 = task.file_name().to_str().unwrap().parse().unwrap();
                if let Ok(nice) = getpriority_process(Pid::from_raw(tid)) {
                    seen.push((name.trim_end().to_owned(), nice));
                }
            }
            seen
        };
        while !nice_by_name().iter().any(|(n, _)| n == "compactor")
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = lower_background_priority().unwrap();
        let seen = nice_by_name();
        for name in BACKGROUND_THREADS {
            let found: Vec<i32> = seen
                .iter()
                .filter(|(n, _)| n == name)
                .map(|s| s.1)
                .collect();
            // Other tests of this process may have opened stores since: their new threads
            // wait for the next pass, so look for this store's, which are reniced.
            assert!(found.contains(&target), "{name}: {found:?} among {seen:?}");
        }
        // Nothing else: fjall's monitor, the test threads and every other thread keep the
        // priority they had (no test of this process lowers any but these two kinds).
        let others: Vec<_> = seen
            .iter()
            .filter(|(n, _)| !BACKGROUND_THREADS.contains(&n.as_str()))
            .collect();
        assert!(others.iter().any(|(n, _)| n == "monitor"), "{seen:?}");
        assert!(others.iter().all(|(_, nice)| *nice == own), "{others:?}");
        // It only lowers: a thread set lower still stays there.
        if target < 19 {
            let compactor = std::fs::read_dir("/proc/self/task")
                .unwrap()
                .flatten()
                .find(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|n| n.trim_end() == "compactor")
                })
                .and_then(|t| Pid::from_raw(t.file_name().to_str().unwrap().parse().unwrap()))
                .unwrap();
            rustix::process::setpriority_process(Some(compactor), 19).unwrap();
            let _ = lower_background_priority().unwrap();
            assert_eq!(getpriority_process(Some(compactor)).unwrap(), 19);
        }
    }

    #[test]
    fn journals_pinned_by_a_small_partition_are_freed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        // Small writes that nothing else flushes: they pin the first journal.
        for p in [&store.meta, &store.checkpoints, &store.tiles, &store.kinds] {
            p.insert("pin", "x").unwrap();
        }
        for round in 0u64..5 {
            for i in 0..100u64 {
                store
                    .entries
                    .insert((round * 100 + i).to_be_bytes(), [7u8; 300])
                    .unwrap();
            }
            // Every rotation seals the journal and starts a new one.
            store.entries.rotate_memtable().unwrap();
        }
        assert!(crate::seal::settle(
            &store,
            std::time::Duration::from_secs(30)
        ));
        let pinned = store.keyspace.journal_count();
        assert!(pinned >= JOURNALS_TO_FREE, "{pinned} journals");

        let mut last = None;
        assert!(free_journals(&store, &mut last).unwrap());
        // Every partition's writes are on their way to disk, not just one per monitor tick.
        for (name, p) in store.partitions() {
            use fjall::AbstractTree as _;
            assert_eq!(p.tree.active_memtable_size(), 0, "{name}");
        }
        // Within a second of a rotation it does not rotate again.
        assert!(!free_journals(&store, &mut last).unwrap());
        assert!(crate::seal::settle(
            &store,
            std::time::Duration::from_secs(30)
        ));
        // Flushes drop the journals they emptied as they finish; give the last one a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.keyspace.journal_count() >= JOURNALS_TO_FREE
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let left = store.keyspace.journal_count();
        assert!(
            left < JOURNALS_TO_FREE,
            "{pinned} journals before, {left} after"
        );
        assert_eq!(store.meta.get("pin").unwrap().as_deref(), Some(&b"x"[..]));
    }
}

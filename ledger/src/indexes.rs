//! Secondary indexes maintained in the append batch: records by kind and by actor, decisions
//! with their approval outcome, and the queue of decisions still waiting for a human.
//!
//! Every key starts with a *scope*, so that one tenant's listing never walks another tenant's
//! records and an unscoped (all-tenant) listing needs no merge:
//!
//! ```text
//! scope   = 0x00                          all tenants
//!         | 0x01 ‖ str(tenant)            one tenant
//! str(s)  = len(s) as u32 BE ‖ bytes of s (names may hold any byte, 0x00 included; a length
//!           prefix keeps every prefix unambiguous)
//! kinds     key: scope ‖ str(kind) ‖ first (u64 BE)                   value: chunk
//! actors    key: scope ‖ str(actor type) ‖ str(actor id) ‖ first      value: chunk
//! decisions key: scope ‖ index                                         value: MessagePack Decision
//! pending   key: scope ‖ index                                         value: empty
//! chunk   = varint(i₁ − i₀) ‖ varint(i₂ − i₁) ‖ …   (LEB128; i₀ = first; every gap ≥ 1)
//! ```
//!
//! Every record is written under both scopes. The `kinds` and `actors` postings are *packed*:
//! one key per (scope, value) per append batch, named by the first index of the batch that
//! holds that value, whose value lists the batch's other indexes with that value as gaps. A
//! batch covers a contiguous range of indexes, so a chunk's indexes all lie below the next
//! chunk's first index and a listing that starts at index `i` starts in the last chunk whose
//! first index is ≤ `i` (see [`Ledger::postings`]). An empty chunk is a posting of one index:
//! layout version 1 (one key per record, empty value) is layout 2 with one-index chunks, so a
//! version-1 data directory needs no rewrite, only its marker bumped (see [`backfill`]). A *decision* is a record of kind `decision` or
//! any record whose attribute `requires_approval` is JSON `true` (it is then *escalated*). An
//! escalated decision is pending until a record of kind `approval` or `rejection` cites it (in
//! any role; `decision` is the documented one): the first such record resolves it, its outcome,
//! index and latency are stored in the decision's value and its `pending` key is deleted, in the
//! same batch. Later approvals of a resolved decision change nothing.
//!
//! Data directories written before these indexes existed are backfilled once when the ledger
//! opens, and older layouts are brought up to [`LAYOUT_VERSION`] (meta key `indexes`, see
//! [`backfill`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use provledger_signer::{leaf_hash, Hash};
use serde::{Deserialize, Serialize};

use crate::ledger::Ledger;
use crate::pipeline::Unpublished;
use crate::record::Leaf;
use crate::store::{self, Store};
use crate::verify::VerifyError;
use crate::LedgerError;

/// Meta key whose presence says the secondary indexes cover every record.
const MARKER_KEY: &[u8] = b"indexes";
/// Version of the index layout written under [`MARKER_KEY`]: 2 packs the `kinds` and `actors`
/// postings per batch; 1 wrote one key per record and index (a special case of 2).
const LAYOUT_VERSION: u8 = 2;
/// Records per committed batch while backfilling an old data directory.
const BACKFILL_CHUNK: u64 = 4096;

/// Kind of the records that approve a decision.
pub const APPROVAL_KIND: &str = "approval";
/// Kind of the records that reject a decision.
pub const REJECTION_KIND: &str = "rejection";
/// Kind of the records counted as decisions (besides any record that requires approval).
pub const DECISION_KIND: &str = "decision";
/// Attribute that escalates a record to a human: JSON `true` makes it pending.
pub const REQUIRES_APPROVAL: &str = "requires_approval";
/// Role of the reference from a decision to the policy version it applied.
pub const POLICY_ROLE: &str = "policy";

/// A field a record listing can look up in an index instead of scanning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Posting<'a> {
    /// Records of this kind.
    Kind(&'a str),
    /// Records written by this actor (type and id).
    Actor {
        /// Actor type (`agent`, `human`, …).
        kind: &'a str,
        /// Actor id.
        id: &'a str,
    },
}

/// How a human answered an escalated decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Outcome {
    /// A record of kind `approval` cited it first.
    Approved,
    /// A record of kind `rejection` cited it first.
    Rejected,
}

impl Outcome {
    fn of_kind(kind: &str) -> Option<Outcome> {
        match kind {
            APPROVAL_KIND => Some(Outcome::Approved),
            REJECTION_KIND => Some(Outcome::Rejected),
            _ => None,
        }
    }

    /// `approved` or `rejected`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Approved => "approved",
            Outcome::Rejected => "rejected",
        }
    }
}

/// The policy version a decision cites (its first `policy` reference).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// Entity of the cited policy record, when it names one.
    pub entity: Option<String>,
    /// Index of the cited policy record.
    pub index: u64,
}

impl fmt::Display for PolicyVersion {
    /// `entity@index`, or `@index` for a policy record without an entity.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.entity.as_deref().unwrap_or(""), self.index)
    }
}

/// How and when an escalated decision was resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// Index of the approval or rejection record.
    pub by: u64,
    /// Approved or rejected.
    pub outcome: Outcome,
    /// Its ledger time minus the decision's, in milliseconds.
    pub latency_ms: u64,
}

/// A decision as the `decisions` index holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Leaf index of the decision (the key, not stored in the value).
    #[serde(skip)]
    pub index: u64,
    /// Owning tenant.
    pub tenant: String,
    /// Ledger time of the decision, ms since the Unix epoch.
    pub time: u64,
    /// Id of the actor that made it.
    pub agent: String,
    /// The policy version it cites, if any.
    pub policy: Option<PolicyVersion>,
    /// True when it required approval.
    pub escalated: bool,
    /// Set once an approval or rejection cites it (escalated decisions only).
    pub resolution: Option<Resolution>,
}

/// What one committed batch did to decisions, for the Prometheus counters.
#[derive(Clone, Debug)]
pub(crate) enum Event {
    Decided {
        agent: String,
        policy: String,
        escalated: bool,
    },
    Resolved {
        agent: String,
        policy: String,
        outcome: Outcome,
        latency_ms: u64,
    },
}

/// Index writes staged by records that are not committed yet: per job, then per batch.
#[derive(Default)]
pub(crate) struct Staging {
    /// Posting prefix (scope ‖ kind) → the staged indexes with it, ascending.
    kinds: crate::NameMap<Vec<u8>, Vec<u64>>,
    /// Posting prefix (scope ‖ actor type ‖ actor id) → the staged indexes with it, ascending.
    actors: crate::NameMap<Vec<u8>, Vec<u64>>,
    /// Decisions created or resolved by staged records, by index, with whether the decision
    /// itself is staged (`true`) or already stored.
    decisions: BTreeMap<u64, (Decision, bool)>,
    /// Index and entity of every staged record, for references to records of the same batch
    /// (keyed by leaf hash, which no client can steer into collisions: the fast hasher is safe).
    staged: rustc_hash::FxHashMap<Hash, (u64, Option<String>)>,
    /// Scratch space for building posting prefixes without allocating per record.
    scratch: Vec<u8>,
    pub(crate) events: Vec<Event>,
}

impl Staging {
    /// Takes over a successful job's staging.
    pub(crate) fn absorb(&mut self, other: Staging) {
        // Jobs are absorbed in log order, so appending keeps every list ascending.
        for (mine, theirs) in [
            (&mut self.kinds, other.kinds),
            (&mut self.actors, other.actors),
        ] {
            for (prefix, indexes) in theirs {
                mine.entry(prefix).or_default().extend(indexes);
            }
        }
        self.decisions.extend(other.decisions);
        self.staged.extend(other.staged);
        self.events.extend(other.events);
    }

    /// Adds the staged index writes to the batch: one packed posting chunk per (scope, kind)
    /// and (scope, actor). Decisions are written once, in their final state, so a decision and
    /// its approval in the same batch never insert and delete the same key. Returns the indexes
    /// of decisions from earlier batches that this one takes off the approval queue.
    pub(crate) fn write(
        &mut self,
        store: &Store,
        batch: &mut fjall::Batch,
    ) -> Result<Vec<u64>, LedgerError> {
        for (partition, postings) in [
            (&store.kinds, std::mem::take(&mut self.kinds)),
            (&store.actors, std::mem::take(&mut self.actors)),
        ] {
            for (mut prefix, indexes) in postings {
                let Some((first, chunk)) = encode_chunk(&indexes) else {
                    continue;
                };
                prefix.extend_from_slice(&first.to_be_bytes());
                batch.insert(partition, prefix, chunk);
            }
        }
        let mut resolved = Vec::new();
        for (index, (d, staged)) in &self.decisions {
            let value = encode_decision(d)?;
            let pending = d.escalated && d.resolution.is_none();
            if !pending && !staged {
                resolved.push(*index);
            }
            for scope in scopes(&d.tenant) {
                let key = index_key(scope, *index);
                batch.insert(&store.decisions, key.clone(), value.clone());
                if pending {
                    batch.insert(&store.pending, key, Vec::new());
                } else if !staged {
                    batch.remove(&store.pending, key);
                }
            }
        }
        Ok(resolved)
    }
}

/// Stages the index entries of one sequenced leaf (its index, time and resolved refs set).
/// `earlier` holds the stagings of records not in the store yet, newest first: the batch
/// being built, then the batches being committed.
pub(crate) fn stage(
    store: &Store,
    leaf: &Leaf,
    hash: Hash,
    local: &mut Staging,
    earlier: &[&Staging],
) -> Result<(), LedgerError> {
    let staged = |h: &Hash| earlier.iter().find_map(|s| s.staged.get(h));
    let index = leaf.index;
    let actor = Posting::Actor {
        kind: &leaf.actor.kind,
        id: &leaf.actor.id,
    };
    for scope in scopes(&leaf.tenant) {
        for (postings, posting) in [
            (&mut local.kinds, Posting::Kind(&leaf.kind)),
            (&mut local.actors, actor),
        ] {
            local.scratch.clear();
            write_posting_prefix(&mut local.scratch, scope, &posting);
            match postings.get_mut(local.scratch.as_slice()) {
                Some(list) => list.push(index),
                None => {
                    postings.insert(local.scratch.clone(), vec![index]);
                }
            }
        }
    }
    local.staged.insert(hash, (index, leaf.entity.clone()));
    if let Some(decision) = derive_decision(leaf, |h| {
        Ok(match local.staged.get(h).or_else(|| staged(h)) {
            Some(hit) => Some(hit.clone()),
            None => stored_record(store, h)?,
        })
    })? {
        local.events.push(Event::Decided {
            agent: decision.agent.clone(),
            policy: policy_label(decision.policy.as_ref()),
            escalated: decision.escalated,
        });
        local.decisions.insert(index, (decision, true));
    }
    let Some(outcome) = Outcome::of_kind(&leaf.kind) else {
        return Ok(());
    };
    for r in &leaf.refs {
        let h = Hash(r.hash);
        let cited = match local.staged.get(&h).or_else(|| staged(&h)) {
            Some((i, _)) => Some(*i),
            None => store.lookup_id(&h)?.map(|(i, _)| i),
        };
        let Some(cited) = cited else { continue };
        // A decision staged by a batch that is being committed is written by then: only one
        // staged in this batch is still `staged` (its pending key never written).
        let in_batch = local.decisions.get(&cited).or_else(|| {
            earlier
                .first()
                .and_then(|batch| batch.decisions.get(&cited))
        });
        let current = match in_batch {
            Some(hit) => Some(hit.clone()),
            None => match earlier.iter().skip(1).find_map(|s| s.decisions.get(&cited)) {
                Some((d, _)) => Some((d.clone(), false)),
                None => stored_decision(store, Some(&leaf.tenant), cited)?.map(|d| (d, false)),
            },
        };
        let Some((mut decision, staged)) = current else {
            continue;
        };
        if !decision.escalated || decision.resolution.is_some() || decision.tenant != leaf.tenant {
            continue;
        }
        let latency_ms = leaf.time.saturating_sub(decision.time);
        decision.resolution = Some(Resolution {
            by: index,
            outcome,
            latency_ms,
        });
        local.events.push(Event::Resolved {
            agent: decision.agent.clone(),
            policy: policy_label(decision.policy.as_ref()),
            outcome,
            latency_ms,
        });
        local.decisions.insert(cited, (decision, staged));
    }
    Ok(())
}

/// Label of a policy version in metrics: `entity@index`, or `none`.
pub(crate) fn policy_label(p: Option<&PolicyVersion>) -> String {
    p.map_or_else(|| "none".to_owned(), ToString::to_string)
}

/// The decision a leaf is, if any, with its policy looked up through `find` (hash → index and
/// entity of the cited record).
fn derive_decision(
    leaf: &Leaf,
    find: impl Fn(&Hash) -> Result<Option<(u64, Option<String>)>, LedgerError>,
) -> Result<Option<Decision>, LedgerError> {
    let escalated = leaf.attributes.get(REQUIRES_APPROVAL) == Some(&serde_json::Value::Bool(true));
    if leaf.kind != DECISION_KIND && !escalated {
        return Ok(None);
    }
    let policy = match leaf.refs.iter().find(|r| r.role == POLICY_ROLE) {
        Some(r) => find(&Hash(r.hash))?.map(|(index, entity)| PolicyVersion { entity, index }),
        None => None,
    };
    Ok(Some(Decision {
        index: leaf.index,
        tenant: leaf.tenant.clone(),
        time: leaf.time,
        agent: leaf.actor.id.clone(),
        policy,
        escalated,
        resolution: None,
    }))
}

/// Index and entity of a stored record.
fn stored_record(store: &Store, h: &Hash) -> Result<Option<(u64, Option<String>)>, LedgerError> {
    let Some((index, _)) = store.lookup_id(h)? else {
        return Ok(None);
    };
    let bytes = store
        .entry(index)?
        .ok_or_else(|| LedgerError::Corrupt(format!("entry {index} is missing")))?;
    Ok(Some((index, Leaf::decode(&bytes)?.entity)))
}

fn stored_decision(
    store: &Store,
    tenant: Option<&str>,
    index: u64,
) -> Result<Option<Decision>, LedgerError> {
    let Some(v) = store.decisions.get(index_key(Scope(tenant), index))? else {
        return Ok(None);
    };
    decode_decision(index, &v).map(Some)
}

fn encode_decision(d: &Decision) -> Result<Vec<u8>, LedgerError> {
    rmp_serde::to_vec_named(d)
        .map_err(|e| LedgerError::Corrupt(format!("decision {} does not encode: {e}", d.index)))
}

fn decode_decision(index: u64, bytes: &[u8]) -> Result<Decision, LedgerError> {
    let mut d: Decision = rmp_serde::from_slice(bytes).map_err(|e| {
        LedgerError::Corrupt(format!("decision index entry {index} does not decode: {e}"))
    })?;
    d.index = index;
    Ok(d)
}

// ---- keys ----

/// Whose records a key lists: one tenant's, or all (`None`).
#[derive(Clone, Copy, Debug)]
struct Scope<'a>(Option<&'a str>);

fn scopes(tenant: &str) -> [Scope<'_>; 2] {
    [Scope(None), Scope(Some(tenant))]
}

fn push_str(k: &mut Vec<u8>, s: &str) {
    // A leaf is at most 65,535 bytes, so every name fits a u32.
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(s.as_bytes());
}

fn write_scope_prefix(k: &mut Vec<u8>, scope: Scope<'_>) {
    match scope.0 {
        None => k.push(0),
        Some(t) => {
            k.push(1);
            push_str(k, t);
        }
    }
}

fn scope_prefix(scope: Scope<'_>) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + scope.0.map_or(0, str::len) + 32);
    write_scope_prefix(&mut k, scope);
    k
}

/// Appends the key prefix of `posting`'s list in `scope` to `k`.
fn write_posting_prefix(k: &mut Vec<u8>, scope: Scope<'_>, posting: &Posting<'_>) {
    write_scope_prefix(k, scope);
    match posting {
        Posting::Kind(kind) => push_str(k, kind),
        Posting::Actor { kind, id } => {
            push_str(k, kind);
            push_str(k, id);
        }
    }
}

fn posting_prefix(scope: Scope<'_>, posting: &Posting<'_>) -> Vec<u8> {
    let mut k = Vec::with_capacity(64);
    write_posting_prefix(&mut k, scope, posting);
    k
}

fn index_key(scope: Scope<'_>, index: u64) -> Vec<u8> {
    let mut k = scope_prefix(scope);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// The index at the end of a key.
fn key_index(k: &[u8]) -> Result<u64, LedgerError> {
    store::be_u64(k.get(k.len().saturating_sub(8)..).unwrap_or_default())
}

// ---- packed posting chunks ----

/// Most bytes of one LEB128 varint holding a u64.
const MAX_VARINT: usize = 10;

/// Encodes an ascending list of indexes as a chunk: its first index (the key's end) and the
/// gaps to the others. `None` for an empty list; a list that is not strictly ascending never
/// comes from staging (indexes are handed out in order), and its out-of-order gaps would be
/// refused when read.
fn encode_chunk(indexes: &[u64]) -> Option<(u64, Vec<u8>)> {
    let (&first, rest) = indexes.split_first()?;
    let mut out = Vec::with_capacity(rest.len());
    let mut prev = first;
    for &i in rest {
        let mut gap = i.wrapping_sub(prev);
        prev = i;
        loop {
            let byte = (gap & 0x7f) as u8;
            gap >>= 7;
            if gap == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }
    Some((first, out))
}

/// Why a stored chunk is unreadable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
enum ChunkError {
    #[error("a gap does not fit 64 bits")]
    LongVarint,
    #[error("the last gap is cut short")]
    Truncated,
    #[error("a gap of 0 repeats an index")]
    ZeroGap,
    #[error("a gap is encoded in more bytes than it needs")]
    Overlong,
    #[error("an index passes 2^64")]
    Overflow,
}

/// The indexes of the chunk stored under a key ending in `first`, ascending.
fn decode_chunk(first: u64, bytes: &[u8]) -> Result<Vec<u64>, ChunkError> {
    let mut out = Vec::with_capacity(bytes.len() + 1);
    out.push(first);
    let mut prev = first;
    let mut gap = 0u64;
    let mut shift = 0u32;
    let mut len = 0usize;
    for &b in bytes {
        len += 1;
        if len > MAX_VARINT || (len == MAX_VARINT && b > 1) {
            return Err(ChunkError::LongVarint);
        }
        gap |= u64::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            if b == 0 && len > 1 {
                return Err(ChunkError::Overlong);
            }
            if gap == 0 {
                return Err(ChunkError::ZeroGap);
            }
            prev = prev.checked_add(gap).ok_or(ChunkError::Overflow)?;
            out.push(prev);
            (gap, shift, len) = (0, 0, 0);
        }
    }
    if len > 0 {
        return Err(ChunkError::Truncated);
    }
    Ok(out)
}

/// Decodes the chunk stored under `key`, naming the partition when it is unreadable.
fn stored_chunk(name: &str, key: &[u8], value: &[u8]) -> Result<Vec<u64>, LedgerError> {
    let first = key_index(key)?;
    decode_chunk(first, value).map_err(|e| {
        LedgerError::Corrupt(format!(
            "posting chunk at index {first} of the {name} does not decode: {e}"
        ))
    })
}

/// Up to `limit` indexes in `[from, to)` from the chunks of the posting list `prefix`: the
/// chunk that holds `from` is the last one starting at or before it, later chunks start after.
fn read_postings(
    partition: &fjall::PartitionHandle,
    name: &str,
    prefix: &[u8],
    from: u64,
    to: u64,
    limit: usize,
) -> Result<Vec<u64>, LedgerError> {
    let mut out = Vec::new();
    if from >= to || limit == 0 {
        return Ok(out);
    }
    let key = |i: u64| {
        let mut k = Vec::with_capacity(prefix.len() + 8);
        k.extend_from_slice(prefix);
        k.extend_from_slice(&i.to_be_bytes());
        k
    };
    let mut take = |chunk: Vec<u64>| {
        for i in chunk {
            if out.len() >= limit || i >= to {
                return false;
            }
            if i >= from {
                out.push(i);
            }
        }
        true
    };
    if let Some(kv) = partition.range(key(0)..=key(from)).next_back() {
        let (k, v) = kv?;
        if !take(stored_chunk(name, &k, &v)?) {
            return Ok(out);
        }
    }
    // `from < to`, so `from + 1` does not overflow.
    for kv in partition.range(key(from + 1)..key(to)) {
        let (k, v) = kv?;
        if !take(stored_chunk(name, &k, &v)?) {
            break;
        }
    }
    Ok(out)
}

// ---- reads ----

impl Ledger {
    /// Indexes of the records of `tenant` (all tenants when `None`) matching `posting`, in log
    /// order: up to `limit` of them in `[from, to)`, `to` capped at the current tree size. Reads
    /// the `kinds` or `actors` index; it never scans the log.
    pub fn postings(
        &self,
        tenant: Option<&str>,
        posting: &Posting<'_>,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<u64>, LedgerError> {
        let to = to.min(self.head().size);
        if from >= to {
            return Ok(Vec::new());
        }
        let store = self.store();
        let (partition, name) = match posting {
            Posting::Kind(_) => (&store.kinds, "kind index (kinds)"),
            Posting::Actor { .. } => (&store.actors, "actor index (actors)"),
        };
        let prefix = posting_prefix(Scope(tenant), posting);
        read_postings(partition, name, &prefix, from, to, limit)
    }

    /// Escalated decisions still waiting for an approval or rejection, oldest first: indexes of
    /// up to `limit` of them after `after`, of `tenant` (all tenants when `None`).
    pub fn pending_approvals(
        &self,
        tenant: Option<&str>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<u64>, LedgerError> {
        let shared = self.shared();
        loop {
            let size = self.head().size;
            let start = after.map_or(0, |a| a.saturating_add(1));
            if start >= size {
                return Ok(Vec::new());
            }
            let scope = Scope(tenant);
            let found = self
                .store()
                .pending
                .range(index_key(scope, start)..index_key(scope, size))
                .take(limit)
                .map(|kv| key_index(&kv?.0))
                .collect::<Result<Vec<u64>, LedgerError>>()?;
            // A batch not published yet may have taken some off the queue: then wait for it
            // and read again, so no approval is missed before its cause is in the log.
            let resolving = |u: &Unpublished| u.resolved.range(start..size).next().is_some();
            if !shared.await_published(resolving, crate::pipeline::PUBLISH_WAIT)? {
                return Ok(found);
            }
        }
    }

    /// Decisions with index in `[from, to)` (capped at the current tree size), oldest first, of
    /// `tenant` (all tenants when `None`), at most `limit`. A resolution recorded beyond the
    /// current tree size is not reported yet.
    pub fn decisions(
        &self,
        tenant: Option<&str>,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<Decision>, LedgerError> {
        let size = self.head().size;
        let to = to.min(size);
        if from >= to {
            return Ok(Vec::new());
        }
        let scope = Scope(tenant);
        let mut out = Vec::new();
        for kv in self
            .store()
            .decisions
            .range(index_key(scope, from)..index_key(scope, to))
            .take(limit)
        {
            let (k, v) = kv?;
            let mut d = decode_decision(key_index(&k)?, &v)?;
            if d.resolution.as_ref().is_some_and(|r| r.by >= size) {
                d.resolution = None;
            }
            out.push(d);
        }
        Ok(out)
    }
}

// ---- backfill ----

/// Layout version of the data directory's indexes: `None` when they were never built; an
/// error for a version newer than [`LAYOUT_VERSION`].
fn layout_version(store: &Store) -> Result<Option<u8>, LedgerError> {
    let Some(v) = store.meta.get(MARKER_KEY)? else {
        return Ok(None);
    };
    match *v {
        [found] if (1..=LAYOUT_VERSION).contains(&found) => Ok(Some(found)),
        [found] if found > LAYOUT_VERSION => Err(LedgerError::IndexLayout {
            found,
            supported: LAYOUT_VERSION,
        }),
        _ => Err(LedgerError::Corrupt(
            "the index layout marker (meta/indexes) is not a known version byte".into(),
        )),
    }
}

/// Brings the secondary indexes up to [`LAYOUT_VERSION`] when the ledger opens.
///
/// - Layout 1 (one `kinds`/`actors` key per record, empty value) reads as layout 2 with
///   one-index chunks, so only the marker is rewritten; new batches write packed chunks after
///   the old keys.
/// - No marker (a data directory from before the indexes): every stored entry is staged in
///   order, committed in chunks of [`BACKFILL_CHUNK`] records (so postings are packed per
///   chunk), and the marker is written last. Re-running after a crash rewrites the same keys
///   with the same values (chunk boundaries are fixed, and each decision is rewritten before
///   any later record resolves it), so an interrupted backfill simply runs again.
pub(crate) fn backfill(store: &Store, size: u64) -> Result<(), LedgerError> {
    match layout_version(store)? {
        Some(LAYOUT_VERSION) => return Ok(()),
        Some(old) => {
            tracing::info!(
                from = old,
                to = LAYOUT_VERSION,
                "upgrading the index layout"
            );
            return write_marker(store);
        }
        None => {}
    }
    if size > 0 {
        tracing::info!(
            records = size,
            "building the kind, actor and decision indexes"
        );
    }
    let mut start = 0;
    while start < size {
        let end = size.min(start + BACKFILL_CHUNK);
        let mut staging = Staging::default();
        for kv in store.leaves(start, end) {
            let (_, v) = kv?;
            let leaf = Leaf::decode(&v)?;
            stage(store, &leaf, leaf_hash(&v), &mut staging, &[])?;
        }
        let mut batch = store
            .keyspace
            .batch()
            .durability(Some(fjall::PersistMode::SyncAll));
        staging.write(store, &mut batch)?;
        batch.commit()?;
        start = end;
    }
    write_marker(store)
}

/// Records, durably, that the indexes cover every record in the current layout.
fn write_marker(store: &Store) -> Result<(), LedgerError> {
    let mut batch = store
        .keyspace
        .batch()
        .durability(Some(fjall::PersistMode::SyncAll));
    batch.insert(&store.meta, MARKER_KEY, vec![LAYOUT_VERSION]);
    batch.commit()?;
    Ok(())
}

// ---- verification ----

/// Index entries the records account for, counted while verifying.
#[derive(Default)]
pub(crate) struct Expected {
    kinds: u64,
    actors: u64,
    decisions: u64,
    pending: u64,
    /// False for a data directory whose indexes were never built (the ledger builds them when
    /// it next opens): nothing is checked then.
    active: bool,
    /// Posting chunks read while checking records.
    chunks: ChunkCache,
}

impl Expected {
    pub(crate) fn new(store: &Store) -> Result<Expected, LedgerError> {
        Ok(Expected {
            active: layout_version(store)?.is_some(),
            ..Expected::default()
        })
    }
}

/// The posting chunks `verify` decoded last, per posting list, so that checking the records of
/// one batch reads each of their chunks once.
#[derive(Default)]
pub(crate) struct ChunkCache {
    /// (partition is `actors`, posting prefix) → the chunk's indexes.
    chunks: HashMap<(bool, Vec<u8>), Vec<u64>>,
}

/// Posting lists the cache remembers before it starts over (bounds `verify`'s memory when a
/// log has many actors).
const CHUNK_CACHE_LISTS: usize = 4096;

impl ChunkCache {
    /// True when the posting list `prefix` of `partition` holds `index`.
    fn contains(
        &mut self,
        partition: &fjall::PartitionHandle,
        actors: bool,
        prefix: Vec<u8>,
        index: u64,
    ) -> Result<bool, LedgerError> {
        let cache_key = (actors, prefix);
        if let Some(chunk) = self.chunks.get(&cache_key) {
            let covers = chunk.first().is_some_and(|f| *f <= index)
                && chunk.last().is_some_and(|l| *l >= index);
            if covers {
                return Ok(chunk.binary_search(&index).is_ok());
            }
        }
        let (_, prefix) = &cache_key;
        let key = |i: u64| [prefix.as_slice(), &i.to_be_bytes()].concat();
        let Some(kv) = partition.range(key(0)..=key(index)).next_back() else {
            return Ok(false);
        };
        let (k, v) = kv?;
        let name = if actors {
            "actor index (actors)"
        } else {
            "kind index (kinds)"
        };
        let chunk = stored_chunk(name, &k, &v)?;
        let found = chunk.binary_search(&index).is_ok();
        if self.chunks.len() >= CHUNK_CACHE_LISTS {
            self.chunks.clear();
        }
        self.chunks.insert(cache_key, chunk);
        Ok(found)
    }
}

/// Checks that the indexes hold exactly what entry `leaf` (with hash `hash`) implies; the
/// reason names the index. `size` is the signed tree size.
pub(crate) fn verify_record(
    store: &Store,
    leaf: &Leaf,
    hash: &Hash,
    size: u64,
    expected: &mut Expected,
) -> Result<(), String> {
    if !expected.active {
        return Ok(());
    }
    let e = |x: LedgerError| x.to_string();
    let index = leaf.index;
    for scope in scopes(&leaf.tenant) {
        let kind = posting_prefix(scope, &Posting::Kind(&leaf.kind));
        if !expected
            .chunks
            .contains(&store.kinds, false, kind, index)
            .map_err(e)?
        {
            return Err("missing from the kind index (kinds)".into());
        }
        let actor = posting_prefix(
            scope,
            &Posting::Actor {
                kind: &leaf.actor.kind,
                id: &leaf.actor.id,
            },
        );
        if !expected
            .chunks
            .contains(&store.actors, true, actor, index)
            .map_err(e)?
        {
            return Err("missing from the actor index (actors)".into());
        }
    }
    expected.kinds += 2;
    expected.actors += 2;
    let want = derive_decision(leaf, |h| stored_record(store, h)).map_err(e)?;
    if let Some(want) = want {
        expected.decisions += 2;
        let mut stored = None;
        for scope in scopes(&leaf.tenant) {
            let got = match store.decisions.get(index_key(scope, index)) {
                Ok(Some(v)) => decode_decision(index, &v).map_err(e)?,
                Ok(None) => return Err("missing from the decision index (decisions)".into()),
                Err(x) => return Err(e(x.into())),
            };
            if stored.as_ref().is_some_and(|s| *s != got) {
                return Err("the decision index (decisions) differs between scopes".into());
            }
            stored = Some(got);
        }
        let Some(got) = stored else {
            return Err("missing from the decision index (decisions)".into());
        };
        let resolution = got.resolution.clone();
        let pending_wanted = want.escalated && resolution.is_none();
        if (Decision {
            resolution: None,
            ..got
        }) != want
        {
            return Err("the decision index (decisions) differs from what the record says".into());
        }
        match resolution {
            Some(_) if !want.escalated => {
                return Err(
                    "the decision index (decisions) says a decision that needs no approval was resolved"
                        .into(),
                )
            }
            Some(r) => check_resolution(store, leaf, hash, &r, size)?,
            None if want.escalated => expected.pending += 2,
            None => {}
        }
        for scope in scopes(&leaf.tenant) {
            let present = store
                .pending
                .get(index_key(scope, index))
                .map_err(|x| e(x.into()))?
                .is_some();
            if present != pending_wanted {
                return Err(if present {
                    "the approval queue (pending) holds a decision that is resolved or needs no approval".into()
                } else {
                    "missing from the approval queue (pending)".into()
                });
            }
        }
    }
    if Outcome::of_kind(&leaf.kind).is_some() {
        for r in &leaf.refs {
            let Some((cited, _)) = store.lookup_id(&Hash(r.hash)).map_err(e)? else {
                continue;
            };
            let Some(d) = stored_decision(store, Some(&leaf.tenant), cited).map_err(e)? else {
                continue;
            };
            if d.escalated && d.resolution.as_ref().is_none_or(|x| x.by > index) {
                return Err(format!(
                    "resolves decision {cited}, but the decision index (decisions) does not say so"
                ));
            }
        }
    }
    Ok(())
}

/// A stored resolution must name a later approval or rejection of the tree that cites the
/// decision, with the right outcome and latency.
fn check_resolution(
    store: &Store,
    leaf: &Leaf,
    hash: &Hash,
    r: &Resolution,
    size: u64,
) -> Result<(), String> {
    let bad = |why: &str| {
        format!(
            "the decision index (decisions) says it was resolved by entry {}, {why}",
            r.by
        )
    };
    if r.by <= leaf.index || r.by >= size {
        return Err(bad("which is not a later entry of the tree"));
    }
    let bytes = store
        .entry(r.by)
        .map_err(|x| x.to_string())?
        .ok_or_else(|| bad("which is missing"))?;
    let by = Leaf::decode(&bytes).map_err(|x| x.to_string())?;
    if Outcome::of_kind(&by.kind) != Some(r.outcome) {
        return Err(bad(&format!("a record of kind {:?}", by.kind)));
    }
    if !by.refs.iter().any(|x| x.hash == hash.0) {
        return Err(bad("which does not cite it"));
    }
    if by.time.saturating_sub(leaf.time) != r.latency_ms {
        return Err(bad(
            "with a latency that differs from the two records' times",
        ));
    }
    Ok(())
}

/// After every entry was checked: the indexes hold nothing the records do not account for.
/// Posting chunks are counted index by index, and each must decode and lie wholly below the
/// next chunk of its list (a reader starting inside a chunk relies on it).
pub(crate) fn verify_totals(store: &Store, expected: &Expected) -> Result<(), VerifyError> {
    if !expected.active {
        return Ok(());
    }
    let have = |name: &str, partition: &fjall::PartitionHandle| -> Result<u64, VerifyError> {
        let mut count = 0u64;
        let mut last: Option<(Vec<u8>, u64)> = None;
        for kv in partition.iter() {
            let (k, v) = kv.map_err(LedgerError::from)?;
            let chunk = stored_chunk(name, &k, &v)?;
            let prefix = k.get(..k.len().saturating_sub(8)).unwrap_or_default();
            if let (Some((p, end)), Some(first)) = (&last, chunk.first()) {
                if p.as_slice() == prefix && first <= end {
                    return Err(VerifyError::Storage(format!(
                        "the {name} has a posting chunk at index {first} that overlaps the one before it"
                    )));
                }
            }
            if let Some(end) = chunk.last() {
                last = Some((prefix.to_vec(), *end));
            }
            count += chunk.len() as u64;
        }
        Ok(count)
    };
    let counts = [
        (
            "kind index (kinds)",
            have("kind index (kinds)", &store.kinds)?,
            expected.kinds,
        ),
        (
            "actor index (actors)",
            have("actor index (actors)", &store.actors)?,
            expected.actors,
        ),
        (
            "decision index (decisions)",
            store.decisions.len().map_err(LedgerError::from)? as u64,
            expected.decisions,
        ),
        (
            "approval queue (pending)",
            store.pending.len().map_err(LedgerError::from)? as u64,
            expected.pending,
        ),
    ];
    for (name, have, want) in counts {
        if have != want {
            return Err(VerifyError::Storage(format!(
                "the {name} holds {have} entries, the records account for {want}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)] // tests index the fixtures they built

    use super::*;

    use crate::record::{PreparedRecord, RecordInput};
    use crate::LedgerConfig;
    use proptest::prelude::*;
    use provledger_signer::SigningKey;

    /// Key of the posting chunk of `posting` in `scope` that starts at index `first`.
    fn posting_key(scope: Scope<'_>, posting: &Posting<'_>, first: u64) -> Vec<u8> {
        let mut k = posting_prefix(scope, posting);
        k.extend_from_slice(&first.to_be_bytes());
        k
    }

    /// A ledger in a temp dir, reopenable with the same key.
    struct Fixture {
        dir: tempfile::TempDir,
        key: String,
        registry: prometheus::Registry,
    }

    impl Fixture {
        fn new() -> Result<Fixture, Box<dyn std::error::Error>> {
            Ok(Fixture {
                dir: tempfile::tempdir()?,
                key: SigningKey::generate("test.example/log")?
                    .to_skey()
                    .to_string(),
                registry: prometheus::Registry::new(),
            })
        }

        fn open(&self) -> Result<Ledger, Box<dyn std::error::Error>> {
            let key = SigningKey::from_skey(&self.key)?;
            Ok(Ledger::open(
                &LedgerConfig::new(self.dir.path()),
                key,
                &self.registry,
            )?)
        }

        fn verify(&self) -> Result<crate::VerifyReport, VerifyError> {
            let key = SigningKey::from_skey(&self.key)
                .map_err(|e| VerifyError::Storage(e.to_string()))?
                .verifier();
            crate::verify_data_dir(self.dir.path(), &key, |_, _| {})
        }
    }

    fn rec(v: serde_json::Value) -> Result<PreparedRecord, Box<dyn std::error::Error>> {
        let input: RecordInput = serde_json::from_value(v)?;
        Ok(PreparedRecord::prepare(input, "record")?)
    }

    fn decision(
        agent: &str,
        escalate: bool,
        policy: Option<&str>,
    ) -> Result<PreparedRecord, Box<dyn std::error::Error>> {
        let refs: Vec<_> = policy
            .map(|p| serde_json::json!({"role": "policy", "ref": p}))
            .into_iter()
            .collect();
        rec(serde_json::json!({
            "kind": "decision",
            "actor": {"type": "agent", "id": agent},
            "refs": refs,
            "attributes": {"requires_approval": escalate},
        }))
    }

    fn answer(kind: &str, target: &str) -> Result<PreparedRecord, Box<dyn std::error::Error>> {
        rec(serde_json::json!({
            "kind": kind,
            "actor": {"type": "human", "id": "ana"},
            "refs": [{"role": "decision", "ref": target}],
        }))
    }

    fn named(entity: &str, kind: &str) -> Result<PreparedRecord, Box<dyn std::error::Error>> {
        rec(serde_json::json!({
            "kind": kind, "entity": entity, "actor": {"type": "human", "id": "ana"},
        }))
    }

    /// The ledger's view of the decisions: (index, escalated, outcome and resolver).
    type Outcomes = Vec<(u64, bool, Option<(Outcome, u64)>)>;

    fn outcomes(l: &Ledger) -> Result<Outcomes, LedgerError> {
        Ok(l.decisions(None, 0, u64::MAX, 1000)?
            .into_iter()
            .map(|d| {
                (
                    d.index,
                    d.escalated,
                    d.resolution.map(|r| (r.outcome, r.by)),
                )
            })
            .collect())
    }

    fn metric(registry: &prometheus::Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
        registry
            .gather()
            .iter()
            .filter(|f| f.get_name() == name)
            .flat_map(|f| f.get_metric().to_vec())
            .filter(|m| {
                labels.iter().all(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.get_name() == *k && l.get_value() == *v)
                })
            })
            .map(|m| m.get_counter().get_value())
            .sum()
    }

    #[test]
    fn the_approval_queue_follows_decisions_and_their_answers_even_in_one_batch(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let f = Fixture::new()?;
        let l = f.open()?;
        // 0 policy v1, 1 escalated decision citing it, 2 plain decision, 3 escalated, 4 input.
        l.append_blocking(vec![
            named("policy:refunds", "policy")?,
            decision("a1", true, Some("policy:refunds"))?,
            decision("a1", false, None)?,
            decision("a2", true, None)?,
            named("doc:1", "input")?,
        ])?;
        let id = |i: u64| -> Result<String, LedgerError> { Ok(l.record_at(i)?.id.to_hex()) };
        assert_eq!(l.pending_approvals(None, None, 10)?, [1, 3]);
        assert_eq!(l.pending_approvals(Some("default"), Some(1), 10)?, [3]);
        assert_eq!(
            l.pending_approvals(Some("other"), None, 10)?,
            Vec::<u64>::new()
        );
        // 5 an escalated decision and 6 its approval in the same job (citing it by entity), and 7
        // the approval of decision 1.
        let (d1, d3) = (id(1)?, id(3)?);
        let d5 = rec(serde_json::json!({
            "kind": "decision",
            "entity": "refund:5",
            "actor": {"type": "agent", "id": "a2"},
            "refs": [{"role": "policy", "ref": "policy:refunds"}],
            "attributes": {"requires_approval": true},
        }))?;
        l.append_blocking(vec![
            d5,
            answer("approval", "refund:5")?,
            answer("approval", &d1)?,
        ])?;
        assert_eq!(l.pending_approvals(None, None, 10)?, [3]);
        // 8 rejects 3; 9 approves 3 again, which changes nothing.
        l.append_blocking(vec![answer("rejection", &d3)?])?;
        l.append_blocking(vec![answer("approval", &d3)?])?;
        assert_eq!(l.pending_approvals(None, None, 10)?, Vec::<u64>::new());
        assert_eq!(
            outcomes(&l)?,
            [
                (1, true, Some((Outcome::Approved, 7))),
                (2, false, None),
                (3, true, Some((Outcome::Rejected, 8))),
                (5, true, Some((Outcome::Approved, 6))),
            ]
        );
        let ds = l.decisions(Some("default"), 0, 100, 100)?;
        assert_eq!(
            ds.first().and_then(|d| d.policy.clone()),
            Some(PolicyVersion {
                entity: Some("policy:refunds".into()),
                index: 0
            })
        );
        assert_eq!(ds.first().map(|d| d.agent.as_str()), Some("a1"));
        let latency = ds
            .first()
            .and_then(|d| d.resolution.as_ref())
            .map(|r| r.latency_ms);
        let t = |i: u64| -> Result<u64, LedgerError> { Ok(l.record_at(i)?.leaf.time) };
        assert_eq!(latency, Some(t(7)? - t(1)?));
        // Counters, by agent and policy version.
        let r = &f.registry;
        let p = "policy:refunds@0";
        assert_eq!(
            metric(r, "provledger_decisions_total", &[("agent", "a1")]),
            2.0
        );
        assert_eq!(
            metric(
                r,
                "provledger_decisions_total",
                &[("agent", "a2"), ("policy", p)]
            ),
            1.0
        );
        assert_eq!(metric(r, "provledger_escalations_total", &[]), 3.0);
        assert_eq!(
            metric(r, "provledger_approvals_total", &[("outcome", "approved")]),
            2.0
        );
        assert_eq!(
            metric(
                r,
                "provledger_approvals_total",
                &[("outcome", "rejected"), ("agent", "a2")]
            ),
            1.0
        );
        drop(l);
        f.verify()?;
        Ok(())
    }

    #[test]
    fn kind_and_actor_postings_are_tenant_scoped_and_in_log_order(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let f = Fixture::new()?;
        let l = f.open()?;
        let mut batch = Vec::new();
        for i in 0..6 {
            batch.push(rec(serde_json::json!({
                "kind": if i % 2 == 0 { "input" } else { "out.put" },
                "tenant": if i < 3 { "t1" } else { "t2" },
                "actor": {"type": "agent", "id": format!("a{}", i % 3)},
            }))?);
        }
        l.append_blocking(batch)?;
        assert_eq!(
            l.postings(None, &Posting::Kind("input"), 0, 99, 99)?,
            [0, 2, 4]
        );
        assert_eq!(
            l.postings(Some("t1"), &Posting::Kind("input"), 0, 99, 99)?,
            [0, 2]
        );
        assert_eq!(
            l.postings(Some("t2"), &Posting::Kind("out.put"), 0, 99, 99)?,
            [3, 5]
        );
        assert_eq!(l.postings(None, &Posting::Kind("input"), 1, 4, 99)?, [2]);
        assert_eq!(l.postings(None, &Posting::Kind("input"), 0, 99, 2)?, [0, 2]);
        let a0 = Posting::Actor {
            kind: "agent",
            id: "a0",
        };
        assert_eq!(l.postings(None, &a0, 0, 99, 99)?, [0, 3]);
        assert_eq!(l.postings(Some("t2"), &a0, 0, 99, 99)?, [3]);
        assert_eq!(l.postings(Some("t"), &a0, 0, 99, 99)?, Vec::<u64>::new());
        Ok(())
    }

    /// Removes one key of a partition, or inserts one, with the ledger closed.
    fn tamper(f: &Fixture, partition: &str, extra: bool) -> Result<(), Box<dyn std::error::Error>> {
        let store = Store::open(f.dir.path(), 1 << 20)?;
        let p = store
            .partitions()
            .into_iter()
            .find(|(n, _)| *n == partition)
            .map(|(_, p)| p.clone())
            .ok_or("no such partition")?;
        if extra {
            p.insert(index_key(Scope(None), 999), b"".to_vec())?;
        } else {
            let (k, _) = p.first_key_value()?.ok_or("empty partition")?;
            p.remove(k)?;
        }
        store.keyspace.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }

    #[test]
    fn verify_names_the_index_with_a_missing_or_extra_entry(
    ) -> Result<(), Box<dyn std::error::Error>> {
        for (partition, extra, want) in [
            ("kinds", false, "(kinds)"),
            ("kinds", true, "(kinds)"),
            ("actors", false, "(actors)"),
            ("actors", true, "(actors)"),
            ("decisions", false, "(decisions)"),
            ("decisions", true, "(decisions)"),
            ("pending", false, "(pending)"),
            ("pending", true, "(pending)"),
        ] {
            let f = Fixture::new()?;
            let l = f.open()?;
            l.append_blocking(vec![
                decision("a1", true, None)?,
                decision("a1", true, None)?,
            ])?;
            let d0 = l.record_at(0)?.id.to_hex();
            l.append_blocking(vec![answer("approval", &d0)?])?;
            drop(l);
            f.verify()?;
            tamper(&f, partition, extra)?;
            let err = f.verify().err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                err.contains(want),
                "{partition} extra={extra}: verify said {err:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn an_old_data_dir_is_backfilled_once_on_open() -> Result<(), Box<dyn std::error::Error>> {
        let f = Fixture::new()?;
        let l = f.open()?;
        l.append_blocking(vec![
            named("policy:p", "policy")?,
            decision("a1", true, Some("policy:p"))?,
            decision("a2", true, None)?,
        ])?;
        let d1 = l.record_at(1)?.id.to_hex();
        l.append_blocking(vec![answer("rejection", &d1)?])?;
        let before = outcomes(&l)?;
        drop(l);
        // Make it look like a data dir from before the indexes: empty partitions, no marker.
        {
            let store = Store::open(f.dir.path(), 1 << 20)?;
            for p in [
                &store.kinds,
                &store.actors,
                &store.decisions,
                &store.pending,
            ] {
                let keys: Vec<_> = p.keys().collect::<Result<_, _>>()?;
                for k in keys {
                    p.remove(k)?;
                }
            }
            store.meta.remove(MARKER_KEY)?;
            store.keyspace.persist(fjall::PersistMode::SyncAll)?;
        }
        f.verify()?; // nothing to check yet: the indexes were never built
        let f2 = Fixture {
            registry: prometheus::Registry::new(),
            ..f
        };
        let l = f2.open()?;
        assert_eq!(outcomes(&l)?, before);
        assert_eq!(l.pending_approvals(None, None, 10)?, [2]);
        assert_eq!(
            l.postings(None, &Posting::Kind("decision"), 0, 99, 99)?,
            [1, 2]
        );
        drop(l);
        f2.verify()?;
        Ok(())
    }

    /// Strictly ascending index lists, with gaps from 1 to far beyond one varint byte.
    fn ascending() -> impl Strategy<Value = Vec<u64>> {
        (
            any::<u64>(),
            prop::collection::vec(prop_oneof![1u64..4, 1u64..300, 1u64..(1 << 40)], 0..200),
        )
            .prop_map(|(start, gaps)| {
                let mut out = vec![start >> 2];
                for g in gaps {
                    match out.last().and_then(|l| l.checked_add(g)) {
                        Some(next) => out.push(next),
                        None => break,
                    }
                }
                out
            })
    }

    /// A log in posting-chunk form: per batch (a contiguous index range), each record's kind
    /// in {0, 1, 2}, and whether that batch is stored the layout-1 way (one key per index).
    fn batches() -> impl Strategy<Value = Vec<(Vec<u8>, bool)>> {
        prop::collection::vec((prop::collection::vec(0u8..3, 1..40), any::<bool>()), 0..12)
    }

    proptest! {
        #[test]
        fn posting_chunks_round_trip(indexes in ascending()) {
            let (first, bytes) = encode_chunk(&indexes).ok_or_else(|| TestCaseError::fail("empty"))?;
            prop_assert_eq!(Some(&first), indexes.first());
            prop_assert_eq!(decode_chunk(first, &bytes), Ok(indexes.clone()));
            // Same-kind batches are one byte per record.
            if indexes.windows(2).all(|w| w[1] - w[0] < 128) {
                prop_assert_eq!(bytes.len(), indexes.len() - 1);
            }
        }

        #[test]
        fn any_chunk_bytes_decode_or_fail_cleanly(first in any::<u64>(), bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(got) = decode_chunk(first, &bytes) {
                prop_assert_eq!(got.first(), Some(&first));
                prop_assert!(got.windows(2).all(|w| w[0] < w[1]));
                prop_assert_eq!(encode_chunk(&got).map(|(_, b)| b), Some(bytes));
            }
        }
    }

    proptest! {
        // Each case opens a keyspace: fewer cases than the pure tests above.
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Paging through packed (and layout-1) chunks with a cursor, from anywhere, gives
        /// exactly what filtering the plain list gives.
        #[test]
        fn cursor_paging_over_chunks_equals_a_plain_reference(
            log in batches(),
            from in 0u64..300,
            span in 0u64..300,
            page in 1usize..9,
        ) {
            let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let store = Store::open(dir.path(), 1 << 20).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let prefix = |k: u8| posting_prefix(Scope(Some("t")), &Posting::Kind(["a", "b", "c"][usize::from(k)]));
            let mut reference: [Vec<u64>; 3] = Default::default();
            let mut next = 0u64;
            for (kinds, layout1) in &log {
                let mut staged: [Vec<u64>; 3] = Default::default();
                for k in kinds {
                    staged[usize::from(*k)].push(next);
                    reference[usize::from(*k)].push(next);
                    next += 1;
                }
                for (k, indexes) in (0u8..).zip(&staged) {
                    let singles: Vec<Vec<u64>> = if *layout1 {
                        indexes.iter().map(|i| vec![*i]).collect()
                    } else {
                        vec![indexes.clone()]
                    };
                    for chunk in singles {
                        if let Some((first, bytes)) = encode_chunk(&chunk) {
                            let key = [prefix(k), first.to_be_bytes().to_vec()].concat();
                            store.kinds.insert(key, bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
                        }
                    }
                }
            }
            let to = from + span;
            for k in 0u8..3 {
                let want: Vec<u64> = reference[usize::from(k)].iter().copied().filter(|i| (from..to).contains(i)).collect();
                let read = |a: u64, n: usize| read_postings(&store.kinds, "kinds", &prefix(k), a, to, n)
                    .map_err(|e| TestCaseError::fail(e.to_string()));
                prop_assert_eq!(&read(from, usize::MAX)?, &want);
                let mut paged = Vec::new();
                let mut cursor = from;
                loop {
                    let got = read(cursor, page)?;
                    prop_assert!(got.len() <= page);
                    let Some(last) = got.last().copied() else { break };
                    paged.extend(got);
                    cursor = last + 1;
                }
                prop_assert_eq!(&paged, &want);
            }
        }
    }

    #[test]
    fn chunk_decoding_refuses_damage() {
        assert_eq!(decode_chunk(5, &[]), Ok(vec![5]));
        assert_eq!(decode_chunk(5, &[1, 0x82, 0x01]), Ok(vec![5, 6, 136]));
        assert_eq!(decode_chunk(5, &[0]), Err(ChunkError::ZeroGap));
        assert_eq!(decode_chunk(5, &[0x80]), Err(ChunkError::Truncated));
        assert_eq!(decode_chunk(5, &[0x81, 0]), Err(ChunkError::Overlong));
        assert_eq!(decode_chunk(5, &[0xff; 11]), Err(ChunkError::LongVarint));
        assert_eq!(decode_chunk(u64::MAX - 1, &[2]), Err(ChunkError::Overflow));
    }

    /// Rewrites the `kinds` and `actors` postings the way layout 1 stored them (one key per
    /// record and scope, empty value) and marks the directory as layout 1.
    fn downgrade_to_layout_1(f: &Fixture) -> Result<u64, Box<dyn std::error::Error>> {
        let store = Store::open(f.dir.path(), 1 << 20)?;
        let mut keys = 0;
        for p in [&store.kinds, &store.actors] {
            let chunks: Vec<_> = p.iter().collect::<Result<_, _>>()?;
            for (k, v) in chunks {
                p.remove(k.clone())?;
                let prefix = k.get(..k.len() - 8).ok_or("short key")?;
                for i in stored_chunk("test", &k, &v)? {
                    p.insert([prefix, &i.to_be_bytes()].concat(), b"".to_vec())?;
                    keys += 1;
                }
            }
        }
        store.meta.insert(MARKER_KEY, [1u8])?;
        store.keyspace.persist(fjall::PersistMode::SyncAll)?;
        Ok(keys)
    }

    #[test]
    fn a_layout_1_data_dir_is_upgraded_on_open_and_reads_the_same(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let f = Fixture::new()?;
        let l = f.open()?;
        let rec_of = |kind: &str, actor: &str| {
            rec(serde_json::json!({"kind": kind, "actor": {"type": "agent", "id": actor}}))
        };
        for b in 0..3 {
            let batch = (0..5)
                .map(|i| rec_of(if (b + i) % 2 == 0 { "input" } else { "output" }, "a1"))
                .collect::<Result<Vec<_>, _>>()?;
            l.append_blocking(batch)?;
        }
        let inputs = l.postings(None, &Posting::Kind("input"), 0, 99, 99)?;
        drop(l);
        // Packed: one chunk per batch, kind and scope (3 × 2 × 2), and per actor (3 × 2).
        let store = Store::open(f.dir.path(), 1 << 20)?;
        assert_eq!(store.kinds.len()?, 12);
        assert_eq!(store.actors.len()?, 6);
        drop(store);
        assert_eq!(downgrade_to_layout_1(&f)?, 60);
        f.verify()?; // layout 1 verifies as it is
        let f2 = Fixture {
            registry: prometheus::Registry::new(),
            ..f
        };
        let l = f2.open()?;
        assert_eq!(l.store().meta.get(MARKER_KEY)?.as_deref(), Some(&[2u8][..]));
        assert_eq!(
            l.postings(None, &Posting::Kind("input"), 0, 99, 99)?,
            inputs
        );
        // New batches are packed after the old one-index keys; paging crosses both.
        l.append_blocking(vec![rec_of("input", "a1")?, rec_of("input", "a1")?])?;
        let mut want = inputs.clone();
        want.extend([15, 16]);
        assert_eq!(l.postings(None, &Posting::Kind("input"), 0, 99, 99)?, want);
        assert_eq!(
            l.postings(Some("default"), &Posting::Kind("input"), 13, 99, 2)?,
            [14, 15]
        );
        assert_eq!(
            l.postings(
                None,
                &Posting::Actor {
                    kind: "agent",
                    id: "a1"
                },
                10,
                99,
                99
            )?,
            (10..17).collect::<Vec<_>>()
        );
        drop(l);
        f2.verify()?;
        Ok(())
    }

    #[test]
    fn a_newer_index_layout_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let f = Fixture::new()?;
        drop(f.open()?);
        {
            let store = Store::open(f.dir.path(), 1 << 20)?;
            store.meta.insert(MARKER_KEY, [LAYOUT_VERSION + 1])?;
            store.keyspace.persist(fjall::PersistMode::SyncAll)?;
        }
        let f2 = Fixture {
            registry: prometheus::Registry::new(),
            ..f
        };
        let err = f2.open().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("index layout is version 3"), "{err}");
        Ok(())
    }

    #[test]
    fn verify_refuses_damaged_or_overlapping_posting_chunks(
    ) -> Result<(), Box<dyn std::error::Error>> {
        for damage in ["undecodable", "overlap"] {
            let f = Fixture::new()?;
            let l = f.open()?;
            l.append_blocking(vec![named("doc:1", "input")?, named("doc:2", "input")?])?;
            l.append_blocking(vec![named("doc:3", "input")?])?;
            drop(l);
            f.verify()?;
            {
                let store = Store::open(f.dir.path(), 1 << 20)?;
                let key = posting_key(Scope(None), &Posting::Kind("input"), 0);
                match damage {
                    // A gap cut short.
                    "undecodable" => store.kinds.insert(key, [0x81u8])?,
                    // 0, 1, 2 while the next chunk starts at 2.
                    _ => store.kinds.insert(key, [1u8, 1])?,
                }
                store.keyspace.persist(fjall::PersistMode::SyncAll)?;
            }
            let err = f.verify().err().map(|e| e.to_string()).unwrap_or_default();
            let want = if damage == "overlap" {
                "overlaps"
            } else {
                "does not decode"
            };
            assert!(
                err.contains("(kinds)") && err.contains(want),
                "{damage}: verify said {err:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn length_prefixes_keep_names_with_any_byte_apart() {
        // With separator bytes, ("a\0b", "c") and ("a", "b\0c") would share a prefix.
        let one = posting_prefix(
            Scope(Some("t")),
            &Posting::Actor {
                kind: "a\0b",
                id: "c",
            },
        );
        let two = posting_prefix(
            Scope(Some("t")),
            &Posting::Actor {
                kind: "a",
                id: "b\0c",
            },
        );
        assert!(!one.starts_with(&two) && !two.starts_with(&one));
        assert_eq!(
            posting_key(Scope(Some("t")), &Posting::Kind("decision"), 7),
            [
                &[1u8, 0, 0, 0, 1, b't', 0, 0, 0, 8][..],
                b"decision",
                &7u64.to_be_bytes()
            ]
            .concat()
        );
        assert_eq!(
            index_key(Scope(None), 258),
            [&[0u8][..], &258u64.to_be_bytes()].concat()
        );
        // A tenant named like another's prefix does not see its keys.
        let ab = posting_key(Scope(Some("ab")), &Posting::Kind("k"), 0);
        assert!(!ab.starts_with(&posting_prefix(Scope(Some("a")), &Posting::Kind("k"))));
    }

    #[test]
    fn policy_labels_name_entity_and_index() {
        let p = PolicyVersion {
            entity: Some("policy:refunds".into()),
            index: 3,
        };
        assert_eq!(policy_label(Some(&p)), "policy:refunds@3");
        assert_eq!(
            policy_label(Some(&PolicyVersion {
                entity: None,
                index: 9
            })),
            "@9"
        );
        assert_eq!(policy_label(None), "none");
    }

    /// An approval's store writes are visible a moment before its batch is published: the
    /// queue must not drop a decision before the approval that answers it is in the log.
    #[test]
    fn the_queue_never_drops_a_decision_before_its_approval_is_published(
    ) -> Result<(), Box<dyn std::error::Error>> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let f = Fixture::new()?;
        let l = f.open()?;
        let records = (0..60)
            .map(|_| decision("a1", true, None))
            .collect::<Result<Vec<_>, _>>()?;
        let ids: Vec<Hash> = l.append_blocking(records)?.iter().map(|r| r.id).collect();
        let current = AtomicUsize::new(0);
        let dropped_seen = AtomicUsize::new(0);
        let approvals = ids
            .iter()
            .map(|id| answer("approval", &id.to_hex()))
            .collect::<Result<Vec<_>, _>>()?;
        std::thread::scope(|s| {
            s.spawn(|| {
                for (i, approval) in approvals.into_iter().enumerate() {
                    current.store(i, Ordering::Release);
                    l.append_blocking(vec![approval])
                        .expect("approval appended");
                }
                current.store(ids.len(), Ordering::Release);
            });
            loop {
                let i = current.load(Ordering::Acquire);
                let Some(id) = ids.get(i) else { break };
                let queue = l.pending_approvals(None, None, 1000)?;
                if !queue.contains(&(i as u64)) {
                    dropped_seen.fetch_add(1, Ordering::Relaxed);
                    assert!(
                        !l.cited_by(id, None, None, 10)?.is_empty(),
                        "decision {i} left the queue before its approval was published"
                    );
                }
            }
            Ok::<(), LedgerError>(())
        })?;
        assert!(dropped_seen.into_inner() > 0);
        assert_eq!(l.pending_approvals(None, None, 1000)?, Vec::<u64>::new());
        Ok(())
    }
}

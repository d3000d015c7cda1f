//! Erasure: destroying a record's payload and salt without touching its leaf.
//!
//! An erasure runs as a job on the writer thread. In one atomic batch it removes the payload
//! (salt ‖ RFC 8785 JSON) of every target from the `payloads` partition (rewriting each run
//! that holds one, `payloads.rs`) and appends one
//! `erasure` record per target, citing it with the reserved ref role [`ERASED_ROLE`]. The
//! leaves stay, so every inclusion and consistency proof still verifies; the commitment in the
//! leaf can no longer be opened. `provledger verify` accepts a missing payload only when such
//! an erasure record cites it (`docs/verifying.md`).
//!
//! Erasing an already erased record answers with the existing erasure record's receipt and
//! appends nothing. A record without a payload cannot be erased ([`LedgerError::NothingToErase`]);
//! erasure by entity or subject skips such records.

use std::collections::{BTreeMap, HashMap, HashSet};

use provledger_signer::Hash;
use tokio::sync::oneshot;

use crate::ledger::{Ledger, Receipt};
use crate::pipeline::{Committed, Job};
use crate::record::{Actor, PreparedRecord, RecordInput, RefInput, DEFAULT_TENANT};
use crate::store::{self, Store};
use crate::LedgerError;

/// Kind of the records an erasure appends.
pub const ERASURE_KIND: &str = "erasure";
/// Ref role with which an erasure record cites the record whose payload it destroyed. Reserved:
/// client appends may not use it.
pub const ERASED_ROLE: &str = "erased";
/// Attribute naming the data subject a record is about (an opaque id such as `customer-42`);
/// indexed so that every record of a subject can be erased together.
pub const SUBJECT_ATTRIBUTE: &str = "subject";

const MAX_REASON_BYTES: usize = 1024;
const MAX_SUBJECT_BYTES: usize = 256;

/// Which records to erase.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErasureTarget {
    /// One record by id. It must have a payload (or have been erased already).
    Record(Hash),
    /// Several records by id; those without a payload are skipped. Used by retention.
    Records(Vec<Hash>),
    /// Every version of an entity of the request's tenant (`default` when none is given).
    Entity(String),
    /// Every record whose `subject` attribute is this id, in the request's tenant.
    Subject(String),
}

/// Why a payload is erased; recorded in the erasure record's `erasure_policy` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErasurePolicy {
    /// Someone asked for it (a data subject's request, an operator).
    Requested,
    /// The record's classification has a retention period and it expired.
    Retention,
}

impl ErasurePolicy {
    /// The attribute value: `requested` or `retention`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErasurePolicy::Requested => "requested",
            ErasurePolicy::Retention => "retention",
        }
    }
}

/// An erasure request.
#[derive(Clone, Debug)]
pub struct ErasureRequest {
    /// What to erase.
    pub target: ErasureTarget,
    /// The caller's tenant: records of other tenants are not found. `None` (an admin) reaches
    /// any tenant by record id, and the `default` tenant by entity or subject.
    pub tenant: Option<String>,
    /// Why. Stored in the permanent leaf of the erasure record, so it is scanned for PII.
    pub reason: String,
    /// Under which policy.
    pub policy: ErasurePolicy,
    /// Who erases: the erasure record's actor.
    pub actor: Actor,
}

/// What the writer does for one erasure request, in the order receipts are answered.
pub(crate) enum Step {
    /// Append this erasure record; it destroys the payload of the target (its leaf hash).
    New(Box<PreparedRecord>, Hash),
    /// The target was erased before: answer with this erasure record's index.
    Existing(u64),
}

/// The writer's plan for a request: steps, and the entry indices whose payloads to delete.
pub(crate) struct Plan {
    pub(crate) steps: Vec<Step>,
    pub(crate) deletes: Vec<u64>,
}

/// Refuses what only the ledger itself may write: the [`ERASED_ROLE`] ref role, and a
/// `subject` attribute that is not a short non-empty string (it keys an index).
pub(crate) fn check_append(records: &[PreparedRecord]) -> Result<(), LedgerError> {
    for r in records {
        for (j, (role, _)) in r.refs.iter().enumerate() {
            if role == ERASED_ROLE {
                return Err(LedgerError::invalid(
                    format!("{}.refs[{j}].role", r.field),
                    "\"erased\" is reserved for erasure records, which the ledger writes itself (POST /v1/records/{id}/erase)",
                ));
            }
        }
        if let Some(v) = r.attributes.get(SUBJECT_ATTRIBUTE) {
            let ok = v.as_str().is_some_and(|s| {
                !s.is_empty() && s.len() <= MAX_SUBJECT_BYTES && !s.contains('\0')
            });
            if !ok {
                return Err(LedgerError::invalid(
                    format!("{}.attributes.{SUBJECT_ATTRIBUTE}", r.field),
                    format!("must be a non-empty string of at most {MAX_SUBJECT_BYTES} bytes (an opaque subject id such as \"customer-42\")"),
                ));
            }
        }
    }
    Ok(())
}

/// The subject a record's attributes name, if any.
pub(crate) fn subject_of(attributes: &BTreeMap<String, serde_json::Value>) -> Option<String> {
    attributes
        .get(SUBJECT_ATTRIBUTE)
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

/// Index of the erasure record that cites `id` with the [`ERASED_ROLE`], if one exists.
pub(crate) fn erased_by(store: &Store, id: &Hash) -> Result<Option<u64>, LedgerError> {
    let mut by = None;
    store.each_citing(id, 0, u64::MAX, |index, role| {
        if role.as_ref() == ERASED_ROLE.as_bytes() {
            by = Some(index);
        }
        by.is_none()
    })?;
    Ok(by)
}

/// Plans a request against the committed store and the erasures staged earlier in the same
/// batch (`staged`: target → erasure index). Runs on the writer thread, so two requests for
/// the same record cannot both append an erasure.
pub(crate) fn plan(
    store: &Store,
    req: &ErasureRequest,
    staged: &HashMap<Hash, u64>,
) -> Result<Plan, LedgerError> {
    check_reason(&req.reason)?;
    let (targets, strict) = targets(store, req)?;
    let mut steps = Vec::with_capacity(targets.len());
    let mut deletes = Vec::new();
    let mut seen = HashSet::new();
    for Target { index, id, tenant } in targets {
        if !seen.insert(id) {
            continue;
        }
        if let Some(&by) = staged.get(&id) {
            steps.push(Step::Existing(by));
            continue;
        }
        if let Some(by) = erased_by(store, &id)? {
            steps.push(Step::Existing(by));
            continue;
        }
        if store.payload(index)?.is_none() {
            if strict {
                return Err(LedgerError::NothingToErase);
            }
            continue;
        }
        let input = RecordInput {
            kind: ERASURE_KIND.to_owned(),
            tenant: Some(tenant),
            entity: None,
            actor: req.actor.clone(),
            refs: vec![RefInput {
                role: ERASED_ROLE.to_owned(),
                target: id.to_hex(),
            }],
            attributes: BTreeMap::from([
                (
                    "reason".to_owned(),
                    serde_json::Value::from(req.reason.clone()),
                ),
                (
                    "erasure_policy".to_owned(),
                    serde_json::Value::from(req.policy.as_str()),
                ),
            ]),
            payload: None,
            classification: None,
            idempotency_key: None,
        };
        let record = PreparedRecord::prepare(input, "erasure")?;
        steps.push(Step::New(Box::new(record), id));
        deletes.push(index);
    }
    Ok(Plan { steps, deletes })
}

fn check_reason(reason: &str) -> Result<(), LedgerError> {
    if reason.trim().is_empty() {
        return Err(LedgerError::invalid("reason", "must not be empty"));
    }
    if reason.len() > MAX_REASON_BYTES {
        return Err(LedgerError::invalid(
            "reason",
            format!(
                "is {} bytes long, at most {MAX_REASON_BYTES} are allowed",
                reason.len()
            ),
        ));
    }
    Ok(())
}

/// A record an erasure request names.
struct Target {
    index: u64,
    id: Hash,
    tenant: String,
}

/// The records a request names, oldest first, and whether a target without a payload is an
/// error.
fn targets(store: &Store, req: &ErasureRequest) -> Result<(Vec<Target>, bool), LedgerError> {
    let size = store.state()?.size;
    let visible = |owner: &str| req.tenant.as_deref().is_none_or(|t| t == owner);
    let by_id = |id: &Hash| -> Result<Target, LedgerError> {
        match store.lookup_id(id)? {
            Some((index, owner)) if index < size && visible(&owner) => Ok(Target {
                index,
                id: *id,
                tenant: owner,
            }),
            _ => Err(LedgerError::NotFound),
        }
    };
    let tenant = req.tenant.as_deref().unwrap_or(DEFAULT_TENANT);
    let out = match &req.target {
        ErasureTarget::Record(id) => return Ok((vec![by_id(id)?], true)),
        ErasureTarget::Records(ids) => ids.iter().map(by_id).collect::<Result<Vec<_>, _>>()?,
        ErasureTarget::Entity(entity) => store
            .versions_of(tenant, entity, 0, size)
            .map(|v| {
                v.map(|(index, id)| Target {
                    index,
                    id,
                    tenant: tenant.to_owned(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        ErasureTarget::Subject(subject) => {
            let prefix = store::subject_prefix(tenant, subject);
            indexed(&store.subjects, &prefix, tenant, size)?
        }
    };
    if out.is_empty() {
        return Err(LedgerError::NotFound);
    }
    Ok((out, false))
}

/// Reads an index whose keys are `prefix ‖ index (u64 BE)` and values leaf hashes.
fn indexed(
    partition: &fjall::PartitionHandle,
    prefix: &[u8],
    tenant: &str,
    size: u64,
) -> Result<Vec<Target>, LedgerError> {
    let mut out = Vec::new();
    for kv in partition.prefix(prefix) {
        let (k, v) = kv?;
        let index = store::be_u64(k.get(prefix.len()..).unwrap_or_default())?;
        if index >= size {
            continue;
        }
        let id = Hash::from_slice(&v).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
        out.push(Target {
            index,
            id,
            tenant: tenant.to_owned(),
        });
    }
    Ok(out)
}

impl Ledger {
    /// Erases payloads (see the module docs): answers one receipt per target record, oldest
    /// first — of the new erasure record, or of the existing one when it was erased before —
    /// once the batch is fsynced and signed.
    ///
    /// Errors: [`LedgerError::NotFound`] for an unknown id (or one of another tenant) and for
    /// an entity or subject without records; [`LedgerError::NothingToErase`] when a single
    /// record has no payload; [`LedgerError::InvalidRecord`] for an empty or PII-holding
    /// reason.
    pub async fn erase(&self, request: ErasureRequest) -> Result<Vec<Receipt>, LedgerError> {
        let (reply, rx) = oneshot::channel();
        self.submit(erasure_job(request, reply), false)?;
        let committed = rx.await.map_err(|_| LedgerError::ShuttingDown)??;
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.receipts(committed))
            .await
            .map_err(|_| LedgerError::ShuttingDown)?
    }

    /// [`Ledger::erase`] from synchronous code; blocks the calling thread (waiting for room in
    /// the queue rather than answering [`LedgerError::Pushback`]).
    pub fn erase_blocking(&self, request: ErasureRequest) -> Result<Vec<Receipt>, LedgerError> {
        let (reply, rx) = oneshot::channel();
        self.submit(erasure_job(request, reply), true)?;
        let committed: Committed = rx
            .blocking_recv()
            .map_err(|_| LedgerError::ShuttingDown)??;
        self.receipts(committed)
    }

    /// True when an erasure record in the published log cites record `id`: its payload was
    /// destroyed.
    pub fn is_erased(&self, id: &Hash) -> Result<bool, LedgerError> {
        let size = self.head().size;
        Ok(erased_by(self.store(), id)?.is_some_and(|by| by < size))
    }
}

fn erasure_job(
    request: ErasureRequest,
    reply: oneshot::Sender<Result<Committed, LedgerError>>,
) -> Job {
    Job {
        records: Vec::new(),
        bytes: 0,
        reply,
        erasure: Some(request),
    }
}

/// `verify`: a leaf commits to a payload that is not stored. That is an erasure only when an
/// erasure record cites the leaf; otherwise the payload was lost.
pub(crate) fn verify_missing_payload(store: &Store, id: &Hash) -> Result<(), String> {
    match erased_by(store, id) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err("payload is missing and no erasure record cites this record".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// `verify`: only erasure records use the [`ERASED_ROLE`], and the payload of every record
/// they cite with it must be gone (else the erasure did not happen).
pub(crate) fn verify_erasure_refs(store: &Store, leaf: &crate::record::Leaf) -> Result<(), String> {
    for r in leaf.refs.iter().filter(|r| r.role == ERASED_ROLE) {
        if leaf.kind != ERASURE_KIND {
            return Err(format!(
                "a {:?} record cites {} with the reserved role \"erased\"",
                leaf.kind,
                hex::encode(r.hash)
            ));
        }
        let target = Hash(r.hash);
        let Some((index, _)) = store.lookup_id(&target).map_err(|e| e.to_string())? else {
            return Err(format!(
                "erases {}, which is not in the log",
                target.to_hex()
            ));
        };
        let stored = store.payload(index).map_err(|e| e.to_string())?;
        if stored.is_some() {
            return Err(format!(
                "erases entry {index}, but that entry's payload is still stored: the erasure did not happen"
            ));
        }
    }
    Ok(())
}

/// `verify`: a record with a `subject` attribute must be in the subject index. Answers whether
/// it was (for the total count check).
pub(crate) fn verify_subject(
    store: &Store,
    leaf: &crate::record::Leaf,
    id: &Hash,
) -> Result<bool, String> {
    let Some(subject) = subject_of(&leaf.attributes) else {
        return Ok(false);
    };
    let stored = store
        .subjects
        .get(store::subject_key(&leaf.tenant, &subject, leaf.index))
        .map_err(|e| e.to_string())?;
    if stored.as_deref() != Some(id.as_bytes().as_slice()) {
        return Err("missing from the subject index".into());
    }
    Ok(true)
}

#[cfg(test)]
mod tests;

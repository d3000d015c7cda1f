//! `Record.changes`: what changed from the previous version of the same entity, as GraphQL
//! types over [`provledger_query::Changes`] (which does the comparing).

use std::sync::Arc;

use async_graphql::{Enum, Json, Object, SimpleObject};
use provledger_query::{Changes, PatchOp, PayloadChange};
use provledger_signer::Hash;

use crate::schema::{Actor, Record, Ref, REFS_COST};

/// How a version of an entity differs from the version before it.
pub(crate) struct RecordChanges(pub(crate) Changes);

#[Object]
impl RecordChanges {
    /// The previous version of the entity.
    async fn previous(&self) -> Record {
        Record(Arc::new(self.0.previous.clone()))
    }

    /// Set when the kind changed.
    async fn kind(&self) -> Option<StringChange> {
        self.0.kind.clone().map(StringChange::from)
    }

    /// Set when the writer changed.
    async fn actor(&self) -> Option<ActorChange> {
        self.0.actor.clone().map(|(old, new)| ActorChange {
            old: Actor {
                kind: old.kind,
                id: old.id,
            },
            new: Actor {
                kind: new.kind,
                id: new.id,
            },
        })
    }

    /// Set when the data class changed.
    async fn classification(&self) -> Option<StringChange> {
        self.0.classification.clone().map(StringChange::from)
    }

    /// Attributes added, removed or changed, by name.
    async fn attributes(&self) -> Vec<AttributeChange> {
        self.0
            .attributes
            .iter()
            .map(|a| AttributeChange {
                key: a.key.clone(),
                change: match (&a.old, &a.new) {
                    (None, _) => Change::Added,
                    (_, None) => Change::Removed,
                    _ => Change::Changed,
                },
                old: a.old.clone().map(Json),
                new: a.new.clone().map(Json),
            })
            .collect()
    }

    /// Sources this version cites that the previous one did not (role and exact version).
    #[graphql(complexity = "REFS_COST.saturating_mul(child_complexity).saturating_add(1)")]
    async fn refs_added(&self) -> Vec<Ref> {
        refs(&self.0.refs_added)
    }

    /// Sources the previous version cited that this one does not.
    #[graphql(complexity = "REFS_COST.saturating_mul(child_complexity).saturating_add(1)")]
    async fn refs_removed(&self) -> Vec<Ref> {
        refs(&self.0.refs_removed)
    }

    /// What happened to the payload.
    async fn payload(&self) -> PayloadDiff {
        let (state, ops): (PayloadDiffState, &[PatchOp]) = match &self.0.payload {
            PayloadChange::Added => (PayloadDiffState::Added, &[]),
            PayloadChange::Removed => (PayloadDiffState::Removed, &[]),
            PayloadChange::Unchanged => (PayloadDiffState::Unchanged, &[]),
            PayloadChange::Changed(ops) => (PayloadDiffState::Changed, ops),
            PayloadChange::Erased => (PayloadDiffState::Erased, &[]),
            _ => (PayloadDiffState::None, &[]),
        };
        let comparable = matches!(
            state,
            PayloadDiffState::Changed | PayloadDiffState::Unchanged
        );
        PayloadDiff {
            state,
            patch: comparable.then(|| {
                Json(serde_json::Value::Array(
                    ops.iter().map(PatchOp::to_json).collect(),
                ))
            }),
            paths: ops.iter().map(|op| op.path.clone()).collect(),
        }
    }
}

fn refs(refs: &[provledger_ledger::LeafRef]) -> Vec<Ref> {
    refs.iter()
        .map(|r| Ref {
            role: r.role.clone(),
            hash: Hash(r.hash),
        })
        .collect()
}

/// A string field's old and new value.
#[derive(SimpleObject)]
struct StringChange {
    old: String,
    new: String,
}

impl From<(String, String)> for StringChange {
    fn from((old, new): (String, String)) -> Self {
        StringChange { old, new }
    }
}

/// The writer of the previous version and of this one.
#[derive(SimpleObject)]
struct ActorChange {
    old: Actor,
    new: Actor,
}

/// How an attribute or reference changed.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// Only in this version.
    Added,
    /// Only in the previous version.
    Removed,
    /// In both, with different values.
    Changed,
}

/// One attribute that differs between the versions.
#[derive(SimpleObject)]
struct AttributeChange {
    /// Attribute name.
    key: String,
    change: Change,
    /// Value in the previous version; null when added.
    old: Option<Json<serde_json::Value>>,
    /// Value in this version; null when removed.
    new: Option<Json<serde_json::Value>>,
}

/// The payload's change between the versions.
#[derive(SimpleObject)]
struct PayloadDiff {
    state: PayloadDiffState,
    /// RFC 6902 JSON Patch turning the previous payload into this one (`[]` when
    /// `UNCHANGED`); null unless both payloads are stored (`CHANGED`, `UNCHANGED`).
    patch: Option<Json<serde_json::Value>>,
    /// RFC 6901 pointers of the locations the patch touches, in its order.
    paths: Vec<String>,
}

/// What happened to the payload. Payloads are committed by salted digests, so only stored
/// payloads can be compared.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
enum PayloadDiffState {
    /// Neither version has a payload.
    None,
    /// Only this version has a payload.
    Added,
    /// Only the previous version had one.
    Removed,
    /// Both payloads are stored and equal.
    Unchanged,
    /// Both payloads are stored and differ: see `patch`.
    Changed,
    /// Both versions have a payload but at least one was erased: they cannot be compared.
    Erased,
}

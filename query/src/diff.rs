//! What changed between two versions of an entity: kind, actor, classification, attributes
//! (added, removed, changed, with old and new values), references (added, removed), and the
//! payload as an RFC 6902 JSON Patch when both versions still hold theirs.
//!
//! Entity history lists every version oldest first; [`changes`] compares one version with the
//! version of the same entity (and tenant) just before it in the log.

use std::collections::BTreeSet;

use provledger_ledger::{Actor, LeafRef, Ledger, StoredRecord};
use serde_json::Value;

use crate::QueryError;

/// Version-index entries read per storage call while looking for a previous version.
const BATCH: usize = 256;

/// How one version of an entity differs from the one before it.
#[derive(Clone, Debug)]
pub struct Changes {
    /// The previous version of the entity.
    pub previous: StoredRecord,
    /// `(old, new)` when the kind changed.
    pub kind: Option<(String, String)>,
    /// `(old, new)` when the writer changed.
    pub actor: Option<(Actor, Actor)>,
    /// `(old, new)` when the data class changed.
    pub classification: Option<(String, String)>,
    /// Attributes added, removed or changed, by key in sorted order.
    pub attributes: Vec<AttributeChange>,
    /// References of this version that the previous one did not have (role and exact version
    /// cited), in this version's order.
    pub refs_added: Vec<LeafRef>,
    /// References of the previous version that this one no longer has, in that version's
    /// order.
    pub refs_removed: Vec<LeafRef>,
    /// What happened to the payload.
    pub payload: PayloadChange,
}

/// One attribute that differs: `old` is absent when it was added, `new` when it was removed.
#[derive(Clone, Debug, PartialEq)]
pub struct AttributeChange {
    /// Attribute name.
    pub key: String,
    /// Value in the previous version.
    pub old: Option<Value>,
    /// Value in this version.
    pub new: Option<Value>,
}

/// What happened to the payload between two versions. Payloads are committed by salted
/// digests, so only stored payloads can be compared.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum PayloadChange {
    /// Neither version has a payload.
    None,
    /// Only this version has a payload.
    Added,
    /// Only the previous version had a payload.
    Removed,
    /// Both payloads are stored and equal.
    Unchanged,
    /// Both payloads are stored and differ: the RFC 6902 operations that turn the previous
    /// payload into this one, applied in order.
    Changed(Vec<PatchOp>),
    /// Both versions have a payload, but at least one was erased: they cannot be compared.
    Erased,
}

/// One RFC 6902 JSON Patch operation. Only `add`, `remove` and `replace` are produced.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchOp {
    /// The operation.
    pub op: PatchKind,
    /// RFC 6901 JSON Pointer of the target location.
    pub path: String,
    /// The value to add or replace with; `None` for `remove`.
    pub value: Option<Value>,
}

/// The operations [`json_patch`] produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PatchKind {
    /// `add`: a new member, or an element appended to an array.
    Add,
    /// `remove`: a member or element that is gone.
    Remove,
    /// `replace`: a value that differs.
    Replace,
}

impl PatchKind {
    /// The RFC 6902 name of the operation.
    pub fn as_str(self) -> &'static str {
        match self {
            PatchKind::Add => "add",
            PatchKind::Remove => "remove",
            PatchKind::Replace => "replace",
        }
    }
}

impl PatchOp {
    /// The operation as an RFC 6902 JSON object: `{"op", "path"}` plus `"value"` for `add`
    /// and `replace`.
    pub fn to_json(&self) -> Value {
        let mut op = serde_json::Map::new();
        op.insert("op".into(), Value::from(self.op.as_str()));
        op.insert("path".into(), Value::from(self.path.as_str()));
        if let Some(v) = &self.value {
            op.insert("value".into(), v.clone());
        }
        Value::Object(op)
    }
}

/// What changed from the previous version of `record`'s entity (in its tenant) to `record`;
/// `None` when the record names no entity or is the entity's first version. Reads the
/// entity's version index up to the record, then the previous version. Blocking: run it off
/// the async executor.
pub fn changes(ledger: &Ledger, record: &StoredRecord) -> Result<Option<Changes>, QueryError> {
    let Some(entity) = &record.leaf.entity else {
        return Ok(None);
    };
    let Some(index) = previous_version(ledger, &record.leaf.tenant, entity, record.index)? else {
        return Ok(None);
    };
    let previous = ledger.record_at(index)?;
    Ok(Some(diff(previous, record)))
}

/// Index of the version of `entity` (in `tenant`) just before index `before`, if any.
pub fn previous_version(
    ledger: &Ledger,
    tenant: &str,
    entity: &str,
    before: u64,
) -> Result<Option<u64>, QueryError> {
    let mut previous = None;
    let mut after = None;
    loop {
        let batch = ledger.entity_versions(tenant, entity, after, BATCH)?;
        let Some((last, _)) = batch.last() else {
            return Ok(previous);
        };
        let last = *last;
        for (index, _) in batch {
            if index >= before {
                return Ok(previous);
            }
            previous = Some(index);
        }
        after = Some(last);
    }
}

/// Compares two records, `previous` being the older version.
pub fn diff(previous: StoredRecord, current: &StoredRecord) -> Changes {
    let (old, new) = (&previous.leaf, &current.leaf);
    let changed = |a: &String, b: &String| (a != b).then(|| (a.clone(), b.clone()));
    let keys: BTreeSet<&String> = old.attributes.keys().chain(new.attributes.keys()).collect();
    let attributes = keys
        .into_iter()
        .filter_map(|key| {
            let (o, n) = (old.attributes.get(key), new.attributes.get(key));
            (o != n).then(|| AttributeChange {
                key: key.clone(),
                old: o.cloned(),
                new: n.cloned(),
            })
        })
        .collect();
    let payload = match (old.commitment, new.commitment) {
        (None, None) => PayloadChange::None,
        (None, Some(_)) => PayloadChange::Added,
        (Some(_), None) => PayloadChange::Removed,
        (Some(_), Some(_)) => match (&previous.payload, &current.payload) {
            (Some(a), Some(b)) => {
                let ops = json_patch(a, b);
                if ops.is_empty() {
                    PayloadChange::Unchanged
                } else {
                    PayloadChange::Changed(ops)
                }
            }
            _ => PayloadChange::Erased,
        },
    };
    Changes {
        kind: changed(&old.kind, &new.kind),
        actor: (old.actor != new.actor).then(|| (old.actor.clone(), new.actor.clone())),
        classification: changed(&old.classification, &new.classification),
        attributes,
        refs_added: missing_from(&new.refs, &old.refs),
        refs_removed: missing_from(&old.refs, &new.refs),
        payload,
        previous,
    }
}

/// The references of `these` not matched one for one in `others` (a multiset difference), in
/// `these`' order.
fn missing_from(these: &[LeafRef], others: &[LeafRef]) -> Vec<LeafRef> {
    let mut unmatched: Vec<Option<&LeafRef>> = others.iter().map(Some).collect();
    these
        .iter()
        .filter(|r| {
            match unmatched
                .iter_mut()
                .find(|slot| slot.is_some_and(|o| o == *r))
            {
                Some(slot) => {
                    *slot = None;
                    false
                }
                None => true,
            }
        })
        .cloned()
        .collect()
}

/// RFC 6902 operations that turn `old` into `new`, applied in order: objects are compared
/// member by member, arrays element by element (extra elements removed from the end, new
/// ones appended), anything else that differs is replaced. Empty when the values are equal.
pub fn json_patch(old: &Value, new: &Value) -> Vec<PatchOp> {
    let mut ops = Vec::new();
    let mut path = String::new();
    diff_value(&mut path, old, new, &mut ops);
    ops
}

fn diff_value(path: &mut String, old: &Value, new: &Value, ops: &mut Vec<PatchOp>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys().filter(|k| !b.contains_key(*k)) {
                with_token(path, key, |p| ops.push(op(PatchKind::Remove, p, None)));
            }
            for (key, vb) in b {
                with_token(path, key, |p| match a.get(key) {
                    Some(va) => diff_value(p, va, vb, ops),
                    None => ops.push(op(PatchKind::Add, p, Some(vb))),
                });
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (va, vb)) in a.iter().zip(b).enumerate() {
                with_token(path, &i.to_string(), |p| diff_value(p, va, vb, ops));
            }
            for i in (b.len()..a.len()).rev() {
                with_token(path, &i.to_string(), |p| {
                    ops.push(op(PatchKind::Remove, p, None))
                });
            }
            for (i, vb) in b.iter().enumerate().skip(a.len()) {
                with_token(path, &i.to_string(), |p| {
                    ops.push(op(PatchKind::Add, p, Some(vb)))
                });
            }
        }
        _ if old == new => {}
        _ => ops.push(op(PatchKind::Replace, path, Some(new))),
    }
}

fn op(kind: PatchKind, path: &str, value: Option<&Value>) -> PatchOp {
    PatchOp {
        op: kind,
        path: path.to_owned(),
        value: value.cloned(),
    }
}

/// Runs `f` with `path` extended by one RFC 6901 reference token (`~` → `~0`, `/` → `~1`).
fn with_token(path: &mut String, token: &str, f: impl FnOnce(&mut String)) {
    let len = path.len();
    path.push('/');
    path.push_str(&token.replace('~', "~0").replace('/', "~1"));
    f(path);
    path.truncate(len);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use provledger_ledger::Leaf;
    use serde_json::json;

    use super::*;

    fn patch_json(old: &Value, new: &Value) -> Value {
        Value::Array(json_patch(old, new).iter().map(PatchOp::to_json).collect())
    }

    #[test]
    fn equal_values_need_no_operations() {
        let v = json!({"a": [1, {"b": null}], "c": "x"});
        assert!(json_patch(&v, &v).is_empty());
    }

    #[test]
    fn objects_diff_member_by_member() {
        let old = json!({"keep": 1, "gone": true, "change": {"deep": "old", "same": 2}});
        let new = json!({"keep": 1, "change": {"deep": "new", "same": 2}, "added": [1]});
        assert_eq!(
            patch_json(&old, &new),
            json!([
                {"op": "remove", "path": "/gone"},
                {"op": "add", "path": "/added", "value": [1]},
                {"op": "replace", "path": "/change/deep", "value": "new"},
            ])
        );
    }

    #[test]
    fn arrays_shrink_from_the_end_and_grow_by_appending() {
        assert_eq!(
            patch_json(&json!([1, 2, 3, 4]), &json!([1, 9])),
            json!([
                {"op": "replace", "path": "/1", "value": 9},
                {"op": "remove", "path": "/3"},
                {"op": "remove", "path": "/2"},
            ])
        );
        assert_eq!(
            patch_json(&json!([1]), &json!([1, 2, [3]])),
            json!([
                {"op": "add", "path": "/1", "value": 2},
                {"op": "add", "path": "/2", "value": [3]},
            ])
        );
    }

    #[test]
    fn pointer_tokens_are_escaped_per_rfc_6901() {
        // RFC 6901 §3: "~" is written "~0" and "/" is written "~1".
        assert_eq!(
            patch_json(&json!({"a/b": 1, "m~n": 1}), &json!({"a/b": 2, "m~n": 3})),
            json!([
                {"op": "replace", "path": "/a~1b", "value": 2},
                {"op": "replace", "path": "/m~0n", "value": 3},
            ])
        );
    }

    #[test]
    fn a_change_of_type_replaces_the_whole_value() {
        assert_eq!(
            patch_json(&json!({"a": 1}), &json!([1])),
            json!([{"op": "replace", "path": "", "value": [1]}])
        );
        assert_eq!(
            patch_json(&json!({"a": {"b": 1}}), &json!({"a": "flat"})),
            json!([{"op": "replace", "path": "/a", "value": "flat"}])
        );
    }

    fn stored(
        index: u64,
        attributes: Value,
        refs: &[(&str, u8)],
        payload: Option<Value>,
        committed: bool,
    ) -> StoredRecord {
        let attributes: BTreeMap<String, Value> = match attributes {
            Value::Object(m) => m.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        // Built from JSON so that leaf fields added later (with defaults) need no change here.
        let mut leaf: Leaf = serde_json::from_value(json!({
            "v": 1, "index": index, "time": 1_000 + index, "tenant": "default",
            "kind": "policy", "entity": "policy:refunds",
            "actor": {"type": "human", "id": "ana"}, "refs": [], "attributes": {},
            "classification": "internal", "commitment": null,
        }))
        .unwrap_or_else(|e| panic!("test leaf: {e}"));
        leaf.attributes = attributes;
        leaf.commitment = committed.then_some([7; 32]);
        leaf.refs = refs
            .iter()
            .map(|(role, b)| LeafRef {
                role: (*role).into(),
                hash: [*b; 32],
            })
            .collect();
        StoredRecord {
            id: provledger_signer::Hash([index as u8; 32]),
            index,
            leaf_bytes: Vec::new(),
            leaf,
            payload,
            salt: None,
        }
    }

    #[test]
    fn attributes_refs_and_payload_are_compared() {
        let old = stored(
            0,
            json!({"version": "v2", "owner": "ana", "stale": 1}),
            &[("parent", 1), ("input", 2), ("input", 2)],
            Some(json!({"limit": 100, "regions": ["eu"]})),
            true,
        );
        let mut new = stored(
            5,
            json!({"version": "v3", "owner": "ana", "fresh": true}),
            &[("input", 2), ("parent", 3)],
            Some(json!({"limit": 250, "regions": ["eu", "us"]})),
            true,
        );
        new.leaf.classification = "confidential".into();
        new.leaf.actor.id = "bo".into();
        let c = diff(old, &new);
        assert_eq!(c.previous.index, 0);
        assert_eq!(c.kind, None);
        assert_eq!(
            c.classification,
            Some(("internal".into(), "confidential".into()))
        );
        assert_eq!(
            c.actor.map(|(a, b)| (a.id, b.id)),
            Some(("ana".into(), "bo".into()))
        );
        assert_eq!(
            c.attributes,
            vec![
                AttributeChange {
                    key: "fresh".into(),
                    old: None,
                    new: Some(json!(true))
                },
                AttributeChange {
                    key: "stale".into(),
                    old: Some(json!(1)),
                    new: None
                },
                AttributeChange {
                    key: "version".into(),
                    old: Some(json!("v2")),
                    new: Some(json!("v3"))
                },
            ]
        );
        // A multiset difference: one of the two identical input refs went away.
        let pairs = |refs: &[LeafRef]| -> Vec<(String, u8)> {
            refs.iter().map(|r| (r.role.clone(), r.hash[0])).collect()
        };
        assert_eq!(pairs(&c.refs_added), vec![("parent".into(), 3)]);
        assert_eq!(
            pairs(&c.refs_removed),
            vec![("parent".into(), 1), ("input".into(), 2)]
        );
        let PayloadChange::Changed(ops) = c.payload else {
            panic!("payload should have changed: {:?}", c.payload);
        };
        assert_eq!(
            Value::Array(ops.iter().map(PatchOp::to_json).collect()),
            json!([
                {"op": "replace", "path": "/limit", "value": 250},
                {"op": "add", "path": "/regions/1", "value": "us"},
            ])
        );
    }

    #[test]
    fn payload_states() {
        let with =
            |payload: Option<Value>, committed| stored(0, json!({}), &[], payload, committed);
        let state = |a: StoredRecord, b: StoredRecord| diff(a, &b).payload;
        assert_eq!(
            state(with(None, false), with(None, false)),
            PayloadChange::None
        );
        assert_eq!(
            state(with(None, false), with(Some(json!(1)), true)),
            PayloadChange::Added
        );
        assert_eq!(
            state(with(Some(json!(1)), true), with(None, false)),
            PayloadChange::Removed
        );
        assert_eq!(
            state(with(Some(json!(1)), true), with(Some(json!(1)), true)),
            PayloadChange::Unchanged
        );
        // Committed but no longer stored: erased, on either side.
        assert_eq!(
            state(with(None, true), with(Some(json!(1)), true)),
            PayloadChange::Erased
        );
        assert_eq!(
            state(with(Some(json!(1)), true), with(None, true)),
            PayloadChange::Erased
        );
    }

    #[test]
    fn an_unchanged_version_has_no_changes() {
        let a = stored(0, json!({"x": 1}), &[("input", 1)], None, false);
        let b = stored(1, json!({"x": 1}), &[("input", 1)], None, false);
        let c = diff(a, &b);
        assert!(c.attributes.is_empty() && c.refs_added.is_empty() && c.refs_removed.is_empty());
        assert_eq!((c.kind, c.classification), (None, None));
        assert!(c.actor.is_none());
        assert_eq!(c.payload, PayloadChange::None);
    }

    #[test]
    fn changes_compare_with_the_previous_version_in_the_log(
    ) -> Result<(), Box<dyn std::error::Error>> {
        use provledger_ledger::{LedgerConfig, PreparedRecord, RecordInput};
        let dir = tempfile::tempdir()?;
        let key = provledger_signer::SigningKey::generate("example.com/log")?;
        let ledger = Ledger::open(
            &LedgerConfig::new(dir.path()),
            key,
            &prometheus::Registry::new(),
        )?;
        let record = |json: Value| -> Result<PreparedRecord, Box<dyn std::error::Error>> {
            let input: RecordInput = serde_json::from_value(json)?;
            Ok(PreparedRecord::prepare(input, "record")?)
        };
        let policy = |v: &str, limit: u32| {
            record(json!({"kind": "policy", "entity": "policy:refunds",
                "actor": {"type": "human", "id": "ana"},
                "attributes": {"version": v}, "payload": {"limit": limit}}))
        };
        let other = record(json!({"kind": "input", "entity": "doc:1",
            "actor": {"type": "agent", "id": "a1"}}))?;
        // Versions at 0, 2 and 3; another entity at 1, and the same name in another tenant at 4.
        let foreign = record(
            json!({"kind": "policy", "entity": "policy:refunds", "tenant": "acme",
            "actor": {"type": "human", "id": "ana"}}),
        )?;
        ledger.append_blocking(vec![
            policy("v1", 100)?,
            other,
            policy("v2", 100)?,
            policy("v3", 250)?,
            foreign,
        ])?;
        assert_eq!(
            previous_version(&ledger, "default", "policy:refunds", 0)?,
            None
        );
        assert_eq!(
            previous_version(&ledger, "default", "policy:refunds", 3)?,
            Some(2)
        );
        assert_eq!(
            previous_version(&ledger, "default", "policy:refunds", 9)?,
            Some(3)
        );
        assert_eq!(
            changes(&ledger, &ledger.record_at(0)?)?.map(|c| c.previous.index),
            None
        );
        assert!(changes(&ledger, &ledger.record_at(1)?)?.is_none());
        assert!(
            changes(&ledger, &ledger.record_at(4)?)?.is_none(),
            "no v1 in tenant acme"
        );
        let v2 = changes(&ledger, &ledger.record_at(2)?)?.ok_or("v2 has a predecessor")?;
        assert_eq!(v2.previous.index, 0);
        assert_eq!(v2.payload, PayloadChange::Unchanged);
        let v3 = changes(&ledger, &ledger.record_at(3)?)?.ok_or("v3 has a predecessor")?;
        assert_eq!(v3.previous.index, 2);
        assert_eq!(
            v3.attributes,
            vec![AttributeChange {
                key: "version".into(),
                old: Some(json!("v2")),
                new: Some(json!("v3")),
            }]
        );
        assert_eq!(
            v3.payload,
            PayloadChange::Changed(vec![PatchOp {
                op: PatchKind::Replace,
                path: "/limit".into(),
                value: Some(json!(250)),
            }])
        );
        Ok(())
    }

    /// An RFC 6902 applier for `add`, `remove` and `replace`, independent of [`json_patch`].
    fn apply(doc: &mut Value, ops: &[PatchOp]) -> Result<(), String> {
        for op in ops {
            if op.path.is_empty() {
                match op.op {
                    PatchKind::Replace | PatchKind::Add => {
                        *doc = op.value.clone().ok_or("no value")?;
                        continue;
                    }
                    _ => return Err("cannot remove the root".into()),
                }
            }
            let (parent, last) = op.path.rsplit_once('/').ok_or("bad path")?;
            let last = last.replace("~1", "/").replace("~0", "~");
            let target = doc.pointer_mut(parent).ok_or("no parent")?;
            match (target, op.op) {
                (Value::Object(m), PatchKind::Remove) => {
                    m.remove(&last).ok_or("remove: no member")?;
                }
                (Value::Object(m), PatchKind::Add) => {
                    m.insert(last, op.value.clone().ok_or("no value")?);
                }
                (Value::Object(m), PatchKind::Replace) => {
                    let slot = m.get_mut(&last).ok_or("replace: no member")?;
                    *slot = op.value.clone().ok_or("no value")?;
                }
                (Value::Array(a), kind) => {
                    let i: usize = last.parse().map_err(|_| "bad index")?;
                    match kind {
                        PatchKind::Remove if i < a.len() => {
                            a.remove(i);
                        }
                        PatchKind::Add if i <= a.len() => {
                            a.insert(i, op.value.clone().ok_or("no value")?);
                        }
                        PatchKind::Replace => {
                            let slot = a.get_mut(i).ok_or("replace: no element")?;
                            *slot = op.value.clone().ok_or("no value")?;
                        }
                        _ => return Err(format!("index {i} out of range")),
                    }
                }
                _ => return Err("parent is not a container".into()),
            }
        }
        Ok(())
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-5i64..5).prop_map(Value::from),
            "[a-c/~]{0,3}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-c/~]{0,2}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn the_patch_turns_old_into_new(old in json_value(), new in json_value()) {
            let ops = json_patch(&old, &new);
            let mut doc = old.clone();
            apply(&mut doc, &ops).map_err(TestCaseError::fail)?;
            prop_assert_eq!(&doc, &new);
            prop_assert_eq!(ops.is_empty(), old == new);
        }
    }
}

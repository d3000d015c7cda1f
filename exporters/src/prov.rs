//! W3C PROV-JSON (<https://www.w3.org/submission/prov-json/>) of an export scope: records become
//! PROV entities or activities, their actors agents, and their refs PROV relations, with the
//! record id, index, leaf hash, kind and entity name kept as `provledger:` attributes.
//!
//! The document is written streaming, one section at a time: each section is one pass over the
//! scope's records (read again from the log), so memory holds the scope's indexes (as a bundle
//! export does) and the set of distinct actors, nothing per record. PROV-JSON is not signed and
//! holds no payloads; `docs/export-format.md` documents the mapping.

use std::collections::HashSet;
use std::io::{BufWriter, Write};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use provledger_ledger::{Head, Leaf, Ledger};
use provledger_signer::{leaf_hash, Hash};
use serde_json::{json, Map, Value};

use crate::error::ExportError;
use crate::export::{decode, resolve, walk, ExportSummary, Plan, Scope};

/// The namespace the `provledger:` prefix stands for in every PROV-JSON export.
pub const PROV_NAMESPACE: &str = "https://provledger.dev/ns/prov#";

/// Record kinds that are PROV activities (something that happened); every other kind is a PROV
/// entity (a thing: an input, a model, a policy, an output, a dataset, a job, …).
pub const ACTIVITY_KINDS: [&str; 6] = [
    "decision",
    "approval",
    "rejection",
    "run",
    "action",
    "tool_call",
];

/// Writes the PROV-JSON document of `scope` to `out`, against the ledger's head when the export
/// starts. `progress` is called as for [`crate::export`] during the first pass.
pub fn export_prov_json<W: Write>(
    ledger: &Ledger,
    scope: &Scope,
    out: W,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<ExportSummary, ExportError> {
    let head = ledger.head();
    let (doc, plan) = resolve(ledger, &head, scope)?;
    let mut w = Writer {
        out: BufWriter::with_capacity(256 * 1024, out),
        first: true,
    };
    let pass = Pass {
        ledger,
        head: &head,
        plan: &plan,
    };

    w.raw("{\"prefix\":")?;
    w.value(&json!({ "provledger": PROV_NAMESPACE }))?;

    w.open("entity")?;
    w.entry(&checkpoint_id(&head), &checkpoint_node(&head))?;
    let records = pass.run(progress, &mut |id, leaf| {
        if !is_activity(&leaf.kind) {
            w.entry(&record_id(&id), &record_node(&id, leaf))?;
        }
        Ok(())
    })?;
    w.close()?;

    w.open("activity")?;
    pass.run(&mut |_, _| {}, &mut |id, leaf| {
        if is_activity(&leaf.kind) {
            w.entry(&record_id(&id), &record_node(&id, leaf))?;
        }
        Ok(())
    })?;
    w.close()?;

    w.open("agent")?;
    let mut seen = HashSet::new();
    pass.run(&mut |_, _| {}, &mut |_, leaf| {
        let key = (leaf.actor.kind.clone(), leaf.actor.id.clone());
        if !seen.contains(&key) {
            w.entry(&agent_id(leaf), &agent_node(leaf))?;
            seen.insert(key);
        }
        Ok(())
    })?;
    drop(seen);
    w.close()?;

    for relation in Relation::ALL {
        w.open(relation.section())?;
        pass.run(&mut |_, _| {}, &mut |id, leaf| {
            let subject_is_activity = is_activity(&leaf.kind);
            for (j, r) in leaf.refs.iter().enumerate() {
                let cited = Hash(r.hash);
                let cited_is_activity = is_activity(&kind_of(ledger, &cited, leaf.index)?);
                if Relation::of(subject_is_activity, cited_is_activity) != relation {
                    continue;
                }
                let key = format!("_:{}{}.{j}", relation.abbrev(), leaf.index);
                w.entry(
                    &key,
                    &relation.json(&record_id(&id), &record_id(&cited), &r.role),
                )?;
            }
            Ok(())
        })?;
        w.close()?;
    }

    for (section, abbrev, subject_field, activities) in [
        ("wasAttributedTo", "at", "prov:entity", false),
        ("wasAssociatedWith", "as", "prov:activity", true),
    ] {
        w.open(section)?;
        pass.run(&mut |_, _| {}, &mut |id, leaf| {
            if is_activity(&leaf.kind) == activities {
                let key = format!("_:{abbrev}{}", leaf.index);
                let rel = json!({ subject_field: record_id(&id), "prov:agent": agent_id(leaf) });
                w.entry(&key, &rel)?;
            }
            Ok(())
        })?;
        w.close()?;
    }
    w.raw("\n}\n")?;
    w.out.flush()?;
    Ok(ExportSummary {
        records,
        tree_size: head.size,
        scope: doc.to_string(),
    })
}

/// Whether records of `kind` are PROV activities.
pub fn is_activity(kind: &str) -> bool {
    ACTIVITY_KINDS.contains(&kind)
}

/// One pass over the scope's records.
struct Pass<'a> {
    ledger: &'a Ledger,
    head: &'a Head,
    plan: &'a Plan,
}

impl Pass<'_> {
    fn run(
        &self,
        progress: &mut dyn FnMut(u64, Option<u64>),
        visit: &mut dyn FnMut(Hash, &Leaf) -> Result<(), ExportError>,
    ) -> Result<u64, ExportError> {
        walk(self.ledger, self.head, self.plan, progress, &mut |index| {
            let bytes = self.ledger.leaf(index)?;
            let leaf = Leaf::decode(&bytes)?;
            visit(leaf_hash(&bytes), &leaf)
        })
    }
}

/// The PROV relation a ref becomes, by what cites (subject) and what is cited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Relation {
    /// An activity cites an entity: the activity used it.
    Used,
    /// An entity cites an activity: the activity generated it.
    WasGeneratedBy,
    /// An entity cites an entity: derived from it.
    WasDerivedFrom,
    /// An activity cites an activity: informed by it.
    WasInformedBy,
}

impl Relation {
    const ALL: [Relation; 4] = [
        Relation::Used,
        Relation::WasGeneratedBy,
        Relation::WasDerivedFrom,
        Relation::WasInformedBy,
    ];

    fn of(subject_is_activity: bool, cited_is_activity: bool) -> Relation {
        match (subject_is_activity, cited_is_activity) {
            (true, false) => Relation::Used,
            (false, true) => Relation::WasGeneratedBy,
            (false, false) => Relation::WasDerivedFrom,
            (true, true) => Relation::WasInformedBy,
        }
    }

    fn section(self) -> &'static str {
        match self {
            Relation::Used => "used",
            Relation::WasGeneratedBy => "wasGeneratedBy",
            Relation::WasDerivedFrom => "wasDerivedFrom",
            Relation::WasInformedBy => "wasInformedBy",
        }
    }

    fn abbrev(self) -> &'static str {
        match self {
            Relation::Used => "u",
            Relation::WasGeneratedBy => "g",
            Relation::WasDerivedFrom => "d",
            Relation::WasInformedBy => "i",
        }
    }

    fn json(self, subject: &str, cited: &str, role: &str) -> Value {
        let (s, c) = match self {
            Relation::Used => ("prov:activity", "prov:entity"),
            Relation::WasGeneratedBy => ("prov:entity", "prov:activity"),
            Relation::WasDerivedFrom => ("prov:generatedEntity", "prov:usedEntity"),
            Relation::WasInformedBy => ("prov:informed", "prov:informant"),
        };
        json!({ s: subject, c: cited, "provledger:role": role })
    }
}

/// The kind of the record `cited`, cited by record `by` (which must come later).
fn kind_of(ledger: &Ledger, cited: &Hash, by: u64) -> Result<String, ExportError> {
    let (index, _) = ledger
        .locate(cited)?
        .filter(|(i, _)| *i < by)
        .ok_or_else(|| ExportError::Corrupt {
            index: by,
            reason: format!("it cites {cited}, which is not an earlier record of the log"),
        })?;
    Ok(decode(ledger, index)?.kind)
}

fn record_id(id: &Hash) -> String {
    format!("provledger:{}", id.to_hex())
}

fn checkpoint_id(head: &Head) -> String {
    format!("provledger:checkpoint-{}", head.size)
}

fn agent_id(leaf: &Leaf) -> String {
    format!(
        "provledger:agent/{}/{}",
        local_part(&leaf.actor.kind),
        local_part(&leaf.actor.id)
    )
}

/// A qualified-name local part: ASCII letters, digits, `-`, `.` and `_` as they are, every
/// other byte percent-encoded (so any actor id makes a valid, reversible name).
fn local_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn qualified(name: &str) -> Value {
    json!({ "$": name, "type": "prov:QUALIFIED_NAME" })
}

fn record_node(id: &Hash, leaf: &Leaf) -> Value {
    let mut m = Map::new();
    m.insert(
        "prov:type".into(),
        qualified(&format!("provledger:{}", local_part(&leaf.kind))),
    );
    let label = match &leaf.entity {
        Some(e) => format!("{e} ({}, record {})", leaf.kind, leaf.index),
        None => format!("{} record {}", leaf.kind, leaf.index),
    };
    m.insert("prov:label".into(), label.into());
    m.insert("provledger:id".into(), id.to_hex().into());
    m.insert("provledger:index".into(), leaf.index.into());
    m.insert("provledger:leafHash".into(), id.to_base64().into());
    m.insert("provledger:kind".into(), leaf.kind.clone().into());
    if let Some(e) = &leaf.entity {
        m.insert("provledger:entity".into(), e.clone().into());
    }
    m.insert("provledger:tenant".into(), leaf.tenant.clone().into());
    m.insert(
        "provledger:classification".into(),
        leaf.classification.clone().into(),
    );
    m.insert(
        "provledger:time".into(),
        json!({ "$": rfc3339_millis(leaf.time), "type": "xsd:dateTime" }),
    );
    if !leaf.attributes.is_empty() {
        // Attributes are open-ended JSON; PROV literals are not, so they travel as JSON text.
        let text = serde_json::to_string(&leaf.attributes).unwrap_or_default();
        m.insert("provledger:attributes".into(), text.into());
    }
    if let Some(c) = &leaf.commitment {
        m.insert(
            "provledger:payloadCommitment".into(),
            STANDARD.encode(c).into(),
        );
    }
    Value::Object(m)
}

fn agent_node(leaf: &Leaf) -> Value {
    let mut m = Map::new();
    match leaf.actor.kind.as_str() {
        "human" => {
            m.insert("prov:type".into(), qualified("prov:Person"));
        }
        "agent" | "service" => {
            m.insert("prov:type".into(), qualified("prov:SoftwareAgent"));
        }
        _ => {}
    }
    m.insert(
        "prov:label".into(),
        format!("{} {}", leaf.actor.kind, leaf.actor.id).into(),
    );
    m.insert(
        "provledger:actorType".into(),
        leaf.actor.kind.clone().into(),
    );
    m.insert("provledger:actorId".into(), leaf.actor.id.clone().into());
    Value::Object(m)
}

fn checkpoint_node(head: &Head) -> Value {
    let origin = head.checkpoint.lines().next().unwrap_or_default();
    json!({
        "prov:type": qualified("provledger:checkpoint"),
        "prov:label": format!("signed checkpoint of {origin} at tree size {}", head.size),
        "provledger:origin": origin,
        "provledger:treeSize": head.size,
        "provledger:rootHash": head.root.to_base64(),
        "provledger:note": head.checkpoint,
    })
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds since the Unix epoch (proleptic Gregorian, UTC).
pub(crate) fn rfc3339_millis(ms: u64) -> String {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Days to civil date (Howard Hinnant's algorithm), for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Writes the document's sections: `"name": {` entries `}`, one entry per line.
struct Writer<W: Write> {
    out: BufWriter<W>,
    first: bool,
}

impl<W: Write> Writer<W> {
    fn raw(&mut self, s: &str) -> Result<(), ExportError> {
        self.out.write_all(s.as_bytes())?;
        Ok(())
    }

    fn value(&mut self, v: &Value) -> Result<(), ExportError> {
        serde_json::to_writer(&mut self.out, v).map_err(std::io::Error::from)?;
        Ok(())
    }

    fn open(&mut self, section: &str) -> Result<(), ExportError> {
        self.raw(",\n")?;
        self.value(&Value::from(section))?;
        self.raw(": {")?;
        self.first = true;
        Ok(())
    }

    fn entry(&mut self, key: &str, v: &Value) -> Result<(), ExportError> {
        self.raw(if self.first { "\n" } else { ",\n" })?;
        self.first = false;
        self.value(&Value::from(key))?;
        self.raw(": ")?;
        self.value(v)
    }

    fn close(&mut self) -> Result<(), ExportError> {
        self.raw(if self.first { "}" } else { "\n}" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(1_764_104_486_123),
            "2025-11-25T21:01:26.123Z"
        );
    }

    #[test]
    fn local_parts_escape_everything_but_safe_ascii() {
        assert_eq!(local_part("claims-bot_1.2"), "claims-bot_1.2");
        assert_eq!(local_part("ana maría/x"), "ana%20mar%C3%ADa%2Fx");
    }

    #[test]
    fn refs_map_to_the_relation_their_ends_imply() {
        assert_eq!(Relation::of(true, false), Relation::Used);
        assert_eq!(Relation::of(false, true), Relation::WasGeneratedBy);
        assert_eq!(Relation::of(false, false), Relation::WasDerivedFrom);
        assert_eq!(Relation::of(true, true), Relation::WasInformedBy);
        assert!(is_activity("decision") && !is_activity("input"));
    }
}

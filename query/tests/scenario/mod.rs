//! A refund desk as agents would record it: customer messages (inputs), versions of a model and
//! of a policy, decisions by two agents each citing five messages, the model and the policy,
//! human approvals and a rejection, and the outputs sent to customers.

use std::collections::BTreeMap;

use provledger_ledger::{Ledger, LedgerConfig, PreparedRecord, RecordInput, StoredRecord};
use provledger_signer::{Hash, SigningKey};
use serde_json::{json, Value};

/// A ledger in a temporary directory, with the names of the records appended to it.
pub struct Scenario {
    pub ledger: Ledger,
    names: BTreeMap<String, Hash>,
    /// Tree size after each batch, in order.
    pub sizes: Vec<u64>,
    _dir: tempfile::TempDir,
}

impl Scenario {
    /// An empty ledger.
    pub fn empty() -> Scenario {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate("test.example/log").unwrap();
        let ledger = Ledger::open(
            &LedgerConfig::new(dir.path()),
            key,
            &prometheus::Registry::new(),
        )
        .unwrap();
        Scenario {
            ledger,
            names: BTreeMap::new(),
            sizes: Vec::new(),
            _dir: dir,
        }
    }

    /// The refund desk: see the module doc and the batches below.
    pub fn refund_desk() -> Scenario {
        let mut s = Scenario::empty();
        let mut setup = vec![
            (
                "model-v1",
                rec("model", "model:refund-llm", ("service", "registry"), &[]),
            ),
            (
                "policy-v1",
                rec("policy", "policy:refunds", ("human", "alice"), &[]),
            ),
            (
                "policy-v2",
                rec(
                    "policy",
                    "policy:refunds",
                    ("human", "alice"),
                    &[("parent", "policy:refunds")],
                ),
            ),
        ];
        for i in 0..30 {
            let name = format!("msg-{i}");
            let entity = format!("msg:{i}");
            setup.push((leak(name), rec("input", &entity, ("service", "inbox"), &[])));
        }
        s.append(setup);
        s.append(decisions(0..3, "agent-a"));
        s.append(vec![
            (
                "policy-v3",
                rec(
                    "policy",
                    "policy:refunds",
                    ("human", "alice"),
                    &[("parent", "policy:refunds")],
                ),
            ),
            (
                "model-v2",
                rec("model", "model:refund-llm", ("service", "registry"), &[]),
            ),
        ]);
        s.append(decisions(3..6, "agent-b"));
        let approvals = [("d0", true), ("d1", true), ("d2", false), ("d3", true)]
            .into_iter()
            .map(|(d, ok)| {
                let mut r = rec("approval", &format!("approval:{d}"), ("human", "bob"), &[]);
                r["refs"] = json!([{"role": "decision", "ref": s.id(d).to_hex()}]);
                r["attributes"] = json!({"outcome": if ok { "approved" } else { "rejected" }});
                (leak(format!("a{}", &d[1..])), r)
            })
            .collect();
        s.append(approvals);
        let outputs = ["0", "1", "3"]
            .into_iter()
            .map(|n| {
                let mut r = rec("output", &format!("reply:{n}"), ("agent", "mailer"), &[]);
                r["refs"] = json!([
                    {"role": "decision", "ref": s.id(&format!("d{n}")).to_hex()},
                    {"role": "approval", "ref": s.id(&format!("a{n}")).to_hex()},
                ]);
                (leak(format!("o{n}")), r)
            })
            .collect();
        s.append(outputs);
        s
    }

    /// Appends named records as one batch (one atomic append).
    pub fn append(&mut self, records: Vec<(&str, Value)>) {
        let prepared = records
            .iter()
            .map(|(_, v)| {
                let input: RecordInput = serde_json::from_value(v.clone()).unwrap();
                PreparedRecord::prepare(input, "record").unwrap()
            })
            .collect();
        let receipts = self.ledger.append_blocking(prepared).unwrap();
        for ((name, _), r) in records.iter().zip(&receipts) {
            self.names.insert((*name).to_owned(), r.id);
        }
        self.sizes.push(self.ledger.head().size);
    }

    /// Id of a named record.
    pub fn id(&self, name: &str) -> Hash {
        *self
            .names
            .get(name)
            .unwrap_or_else(|| panic!("no record named {name}"))
    }

    /// A named record as stored.
    pub fn record(&self, name: &str) -> StoredRecord {
        self.ledger.record(&self.id(name), None).unwrap()
    }

    /// Name of a record id (for readable assertions).
    pub fn name(&self, id: &Hash) -> String {
        self.names
            .iter()
            .find(|(_, h)| *h == id)
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| id.to_hex())
    }
}

/// Decision `d<i>` for each i, citing messages 5i..5i+5, the latest model and policy.
fn decisions(range: std::ops::Range<usize>, agent: &str) -> Vec<(&'static str, Value)> {
    range
        .map(|i| {
            let mut refs: Vec<(&str, String)> = (5 * i..5 * i + 5)
                .map(|m| ("input", format!("msg:{m}")))
                .collect();
            refs.push(("model", "model:refund-llm".into()));
            refs.push(("policy", "policy:refunds".into()));
            let refs: Vec<(&str, &str)> = refs.iter().map(|(r, t)| (*r, t.as_str())).collect();
            let mut r = rec("decision", &format!("refund:{i}"), ("agent", agent), &refs);
            r["attributes"] = json!({"requires_approval": true, "amount_eur": 40 + i});
            (leak(format!("d{i}")), r)
        })
        .collect()
}

/// A record as a client submits it.
pub fn rec(kind: &str, entity: &str, actor: (&str, &str), refs: &[(&str, &str)]) -> Value {
    json!({
        "kind": kind,
        "entity": entity,
        "actor": {"type": actor.0, "id": actor.1},
        "refs": refs.iter().map(|(role, r)| json!({"role": role, "ref": r})).collect::<Vec<_>>(),
        "payload": {"text": format!("{kind} {entity}")},
    })
}

/// Scenario names live as long as the test; leaking a few short strings keeps the helpers simple.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

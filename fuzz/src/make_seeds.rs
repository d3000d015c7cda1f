//! Writes a seed corpus for every target into `corpus/<target>/`: a small real log (a policy,
//! inputs, a decision citing them by name and by id, a human approval, the erasure of the
//! input's payload at its subject's request), its leaves and checkpoints, bundles of three
//! scopes and their DSSE envelopes, the records as sent, tile paths, texts holding PII,
//! api.md's redaction policy file, and the data directory's key and token files.
//! `cargo run --release --manifest-path fuzz/Cargo.toml --bin make_seeds` (docs/fuzzing.md).

use std::path::Path;

use provledger_exporters::{export, export_dsse, RangeScope, Scope};
use provledger_ledger::{
    Actor, ErasurePolicy, ErasureRequest, ErasureTarget, Ledger, LedgerConfig, NewToken,
    PreparedRecord, Receipt, RecordInput, Role, TokenStore, KEYS_FILE, TOKENS_FILE,
};
use provledger_signer::Hash;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let dir = tempfile::tempdir()?;
    let ledger = Ledger::open(
        &LedgerConfig::new(dir.path()),
        provledger_fuzz::seed_key(),
        &prometheus::Registry::new(),
    )?;
    let key = provledger_fuzz::seed_key();
    let mut records = vec![
        serde_json::json!({"kind": "policy", "entity": "policy:refunds",
            "actor": {"type": "human", "id": "ana"}, "payload": {"max": 100}}),
        serde_json::json!({"kind": "input", "entity": "ticket:7",
            "actor": {"type": "system", "id": "crm"}, "classification": "personal",
            "attributes": {"subject": "customer-42"},
            "payload": {"email": "jo@example.com", "text": "refund please"}}),
        serde_json::json!({"kind": "model", "entity": "model:triage",
            "actor": {"type": "system", "id": "registry"}, "attributes": {"version": "3.1"}}),
    ];
    let mut log = Receipts::default();
    for r in &records {
        log.append(&ledger, r)?;
    }
    let decision = serde_json::json!({"kind": "decision", "entity": "decision:7",
        "actor": {"type": "agent", "id": "refund-bot"},
        "refs": [{"role": "input", "ref": "ticket:7"}, {"role": "policy", "ref": "policy:refunds"},
                 {"role": "model", "ref": log.ids[2].to_string()}],
        "attributes": {"decision": "approve", "confidence": 0.93},
        "payload": {"amount": 40}, "idempotency_key": "decide-7"});
    let approval = serde_json::json!({"kind": "approval", "actor": {"type": "human", "id": "lee"},
        "refs": [{"role": "approval", "ref": "decision:7"}], "attributes": {"verdict": "approved"}});
    for r in [decision, approval] {
        log.append(&ledger, &r)?;
        records.push(r);
    }
    // The data subject asks for erasure: the input's payload goes, its leaf stays, and the
    // erasure record cites it.
    let erasure = ErasureRequest {
        target: ErasureTarget::Subject("customer-42".into()),
        tenant: None,
        reason: "data subject request".into(),
        policy: ErasurePolicy::Requested,
        actor: Actor {
            kind: "human".into(),
            id: "dpo".into(),
        },
    };
    log.keep(ledger.erase_blocking(erasure)?);
    let Receipts { ids, leaves, notes } = log;
    write_all(&out.join("leaf"), leaves)?;
    write_all(&out.join("note"), notes.into_iter().map(String::into_bytes))?;
    write_all(
        &out.join("record"),
        records.iter().map(|r| r.to_string().into_bytes()),
    )?;
    // The policy file of docs/api.md, as written there.
    let api = include_str!("../../docs/api.md");
    let policy = api
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .ok_or("docs/api.md has no toml block")?;
    write_all(&out.join("policy"), [policy.as_bytes().to_vec()])?;
    write_all(
        &out.join("pii"),
        [
            "write to jo.doe+refunds@example.co.uk or call +44 20 7946 0958",
            "card 4111 1111 1111 1111, IBAN GB82 WEST 1234 5698 7654 32",
            "from 192.168.10.7 and 2001:db8::1, SSN 078-05-1120",
            "key AKIAIOSFODNN7EXAMPLE secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----",
            "order 7 of 2026-11-28: 3 items, sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        ]
        .map(|t| t.as_bytes().to_vec()),
    )?;
    write_all(
        &out.join("tile_path"),
        [
            "0/000",
            "1/x001/x234/067.p/8",
            "entries/000.p/5",
            "0/x001/000",
        ]
        .map(|p| p.as_bytes().to_vec()),
    )?;
    let scopes = [
        Scope::entity(None, "policy:refunds"),
        Scope::Range(RangeScope::default()),
        Scope::Records {
            tenant: None,
            ids: vec![ids[4]],
            depth: 3,
        },
    ];
    let mut bundles = Vec::new();
    let mut envelopes = Vec::new();
    for scope in &scopes {
        let mut bundle = Vec::new();
        export(&ledger, &key, scope, &mut bundle, &mut |_, _| {})?;
        bundles.push(bundle);
        let mut envelope = Vec::new();
        export_dsse(&ledger, &key, scope, &mut envelope, &mut |_, _| {})?;
        envelopes.push(envelope);
    }
    write_all(&out.join("bundle"), bundles)?;
    // The data directory's files, each behind the byte that picks it (`data_files`).
    let tokens = TokenStore::open(dir.path())?;
    tokens.create(NewToken {
        role: Role::Auditor,
        tenant: "default".into(),
        kinds: Some(vec!["decision".into()]),
        expires: None,
        label: Some("seed".into()),
    })?;
    let file = |which: u8, content: &[u8]| [&[which][..], content].concat();
    write_all(
        &out.join("data_files"),
        [
            file(0, format!("{}\n", provledger_fuzz::SEED_SKEY).as_bytes()),
            file(1, provledger_fuzz::seed_verifier().to_string().as_bytes()),
            file(2, format!("{}\n", "07".repeat(32)).as_bytes()),
            file(3, &std::fs::read(dir.path().join(TOKENS_FILE))?),
            file(4, &std::fs::read(dir.path().join(KEYS_FILE))?),
        ],
    )?;
    write_all(&out.join("dsse"), envelopes)?;
    println!("seeds written under {}", out.display());
    Ok(())
}

/// What the seeds keep of each receipt: ids (for refs and scopes), leaves, checkpoints.
#[derive(Default)]
struct Receipts {
    ids: Vec<Hash>,
    leaves: Vec<Vec<u8>>,
    notes: Vec<String>,
}

impl Receipts {
    fn append(
        &mut self,
        ledger: &Ledger,
        record: &serde_json::Value,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let input: RecordInput = serde_json::from_value(record.clone())?;
        self.keep(ledger.append_blocking(vec![PreparedRecord::prepare(input, "record")?])?);
        Ok(())
    }

    fn keep(&mut self, receipts: Vec<Receipt>) {
        for r in receipts {
            self.ids.push(r.id);
            self.leaves.push(r.leaf);
            self.notes.push(r.checkpoint);
        }
    }
}

fn write_all(dir: &Path, seeds: impl IntoIterator<Item = Vec<u8>>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (n, seed) in seeds.into_iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{n}")), seed)?;
    }
    Ok(())
}

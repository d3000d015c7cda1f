//! Redaction policy files (TOML), as `serve --redaction-policy` loads them: a policy parses or is
//! refused with an error, and a policy that parses scrubs a record without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provledger_ledger::{PreparedRecord, RecordInput, RedactionPolicy, Redactor, TokenKey};

fuzz_target!(|text: &str| {
    let Ok(policy) = RedactionPolicy::from_toml(text) else {
        return;
    };
    let Ok(redactor) = Redactor::new(policy, Some(TokenKey::from_bytes([7; 32]))) else {
        return;
    };
    for classification in ["pii", "internal"] {
        let input: RecordInput = serde_json::from_value(serde_json::json!({
            "kind": "input",
            "actor": {"type": "system", "id": "crm"},
            "classification": classification,
            "payload": {
                "customer": {"email": "jo@example.com", "name": "Jo Doe", "password": "hunter2"},
                "support_address": "help@example.com",
                "note": "call +44 20 7946 0958",
                "items": [{"holder": "Jo Doe", "sku": "A-1"}, [1, {"password": "x"}]],
            },
        }))
        .expect("a valid record");
        let _ = PreparedRecord::prepare_with(input, "record", &redactor);
    }
});

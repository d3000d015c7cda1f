//! A record as `POST /v1/records` receives it: parsed, validated, scrubbed and sealed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provledger_ledger::{PreparedRecord, RecordInput};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(input) = serde_json::from_slice::<RecordInput>(bytes) {
        let _ = PreparedRecord::prepare(input, "record");
    }
});

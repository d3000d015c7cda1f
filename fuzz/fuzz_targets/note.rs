//! Signed notes and checkpoint bodies, as a verifier reads them from a server or a bundle.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provledger_signer::{open_note, Checkpoint, Note};

fuzz_target!(|text: &str| {
    let key = provledger_fuzz::seed_verifier();
    let _ = Note::parse(text);
    let _ = Checkpoint::parse_body(text);
    if let Ok((note, _)) = open_note(text, std::slice::from_ref(key)) {
        let _ = Checkpoint::parse_body(&note.body);
    }
});

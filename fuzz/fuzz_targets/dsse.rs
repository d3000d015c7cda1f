//! DSSE envelopes (in-toto statements carrying a bundle), as `verify-bundle` reads them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let key = provledger_fuzz::seed_verifier();
    let _ = provledger_exporters::verify_dsse(bytes, std::slice::from_ref(key), None);
});

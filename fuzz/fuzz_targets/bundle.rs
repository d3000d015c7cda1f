//! Export bundles, as a regulator's `verify-bundle` reads them: any input is refused with an
//! error or accepted, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let key = provledger_fuzz::seed_verifier();
    let _ = provledger_exporters::verify_bundle(bytes, std::slice::from_ref(key), None);
});

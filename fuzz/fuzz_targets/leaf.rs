//! Leaf bytes, as `verify` and the bundle verifier decode them from disk or a bundle: any input
//! decodes or is refused, never a panic; and what decodes re-encodes to canonical bytes that are
//! a fixed point (decoding them gives the same leaf, encoding that the same bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use provledger_ledger::Leaf;

fuzz_target!(|bytes: &[u8]| {
    let Ok(leaf) = Leaf::decode(bytes) else {
        return;
    };
    // Encoding may refuse a leaf over the size limit; one that encodes must round-trip.
    let Ok(canonical) = leaf.encode() else {
        return;
    };
    let again = Leaf::decode(&canonical).expect("canonical leaf bytes decode");
    assert_eq!(again, leaf, "decode(encode(leaf)) differs from leaf");
    assert_eq!(
        again
            .encode()
            .expect("a leaf that encoded once encodes again"),
        canonical,
        "canonical encoding is not a fixed point"
    );
});

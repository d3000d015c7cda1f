//! The path of `GET /tile/...`, C2SP tlog-tiles' encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|rest: &str| {
    let _ = provledger_graphql::TilePath::parse(rest);
});

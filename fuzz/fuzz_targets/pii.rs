//! The PII detectors that scrub every record at ingress, on raw text: findings are sorted, do
//! not overlap and fall on character boundaries, and no part of any detector's match stays in
//! clear (each match, found by its detector alone, lies inside one finding of the full scan).
#![no_main]

use libfuzzer_sys::fuzz_target;
use provledger_ledger::{mask_text, scan, PiiKind};

fuzz_target!(|text: &str| {
    let findings = scan(text, &PiiKind::ALL);
    let mut at = 0;
    for f in &findings {
        assert!(
            f.start >= at && f.start < f.end && f.end <= text.len(),
            "{findings:?}"
        );
        assert!(text.is_char_boundary(f.start) && text.is_char_boundary(f.end));
        at = f.end;
    }
    for kind in PiiKind::ALL {
        for m in scan(text, &[kind]) {
            assert!(
                findings
                    .iter()
                    .any(|f| f.start <= m.start && m.end <= f.end),
                "{text:?}: {:?} ({kind:?}) is not inside one of {findings:?}",
                &text[m.start..m.end]
            );
        }
    }
    let (_, count) = mask_text(text, &PiiKind::ALL);
    assert_eq!(count, findings.len());
});

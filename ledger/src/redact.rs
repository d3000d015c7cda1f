//! Ingress PII scrubbing: the built-in detectors that a redaction policy (`policy.rs`) runs over
//! every payload before it is canonicalized, committed and stored (stage `scrub`), and over leaf
//! fields, where PII is refused.
//!
//! Detectors find candidates with a regular expression and then validate them (Luhn, mod-97,
//! octet ranges, area numbers, entropy), so near-misses such as dates, version strings, UUIDs
//! and record ids are left alone. Every rule is documented on [`PiiKind`] and in `docs/api.md`.
//!
//! Per-field rules (drop, mask, tokenize, keep), the policy document and its versioning live in
//! `policy.rs`.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// Minimum length of a token the high-entropy secret detector looks at.
pub const SECRET_MIN_LEN: usize = 32;

/// The shortest prefixed key the secret detector knows (`xoxb-` and 10 characters).
const PREFIXED_KEY_MIN_LEN: usize = 15;

/// The shortest IBAN (Norway's).
const IBAN_MIN_LEN: usize = 15;
/// Minimum Shannon entropy, in bits per character, of a mixed-alphabet secret token.
const SECRET_MIN_ENTROPY: f64 = 3.5;
/// Minimum Shannon entropy of a hex-only secret token (hex has at most 4 bits per character).
const HEX_SECRET_MIN_ENTROPY: f64 = 3.0;

/// Revision of the detectors' implementation, recorded in every policy's canonical JSON
/// (`detectors_revision`) and so in its digest, which every leaf's `redaction` stamp carries: a
/// change to what the detectors mask gets a new revision, so an auditor can tell which records
/// were scrubbed before it.
///
/// - 1: the first detectors. Where two detectors' matches overlapped, the earlier in
///   [`PiiKind::ALL`] was masked and the other dropped, so its part outside the overlap stayed
///   in clear (`2001:db8::178-05-1120` kept `2001:db8::`). Policies of this revision have no
///   `detectors_revision` member.
/// - 2: overlapping matches are masked as one, over their union.
pub const DETECTORS_REVISION: u32 = 2;

/// What a detector found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum PiiKind {
    /// `local@domain.tld`, the domain with at least one dot and a 2+ letter top-level label.
    Email,
    /// `+` and 8–15 digits (E.164, separators allowed), or a national format with separators
    /// (`(555) 123-4567`, `030 1234 5678`, `0151-1234-5678`) of 8–15 digits; dates
    /// (`2026-11-25`, `25.11.2026`) and thousands groupings (`10 000 000`) are not phones.
    Phone,
    /// 13–19 digits, optionally grouped by single spaces or dashes, starting with 2–6 (the
    /// issuer ranges in use) and passing the Luhn check. Bare JSON integers of 15–19 digits are
    /// checked the same way.
    Card,
    /// Two letters, two check digits and a BBAN, 15–34 characters, with or without spaces,
    /// passing the ISO 13616 mod-97 check.
    Iban,
    /// US SSN `ddd-dd-dddd` (area not 000, 666 or 9xx; group not 00; serial not 0000), and the
    /// UK National Insurance number `AB 12 34 56 C` (spaces optional; prefix letters per HMRC:
    /// first not D F I Q U V, second not D F I O Q U V, prefixes BG GB KN NK NT TN ZZ unused;
    /// suffix A–D).
    NationalId,
    /// IPv4 with every octet 0–255 and no leading zeros, or an IPv6 address that parses and
    /// holds at least one digit.
    IpAddress,
    /// API keys and secrets: `sk-…`/`sk_live_…`/`sk_test_…`/`rk_live_…`, `AKIA` + 16, `ghp_`/
    /// `gho_`/`ghu_`/`ghs_`/`ghr_`, `xoxb-`/`xoxp-`, PEM private-key blocks, and high-entropy
    /// tokens of at least [`SECRET_MIN_LEN`] characters of the base64/hex alphabet (see
    /// [`is_high_entropy_secret`] for the thresholds). 64-character lowercase hex (record ids,
    /// SHA-256 digests), 40-character lowercase hex (SHA-1) and UUIDs are not secrets.
    Secret,
}

impl PiiKind {
    /// Every built-in detector, in the order they claim overlapping text.
    pub const ALL: [PiiKind; 7] = [
        PiiKind::Secret,
        PiiKind::Email,
        PiiKind::Iban,
        PiiKind::Card,
        PiiKind::NationalId,
        PiiKind::IpAddress,
        PiiKind::Phone,
    ];

    /// Short name used in masks: `[REDACTED:<name>]`.
    pub fn name(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::Card => "card",
            PiiKind::Iban => "iban",
            PiiKind::NationalId => "national-id",
            PiiKind::IpAddress => "ip",
            PiiKind::Secret => "secret",
        }
    }

    /// The detector whose [`PiiKind::name`] is `name`.
    pub fn from_name(name: &str) -> Option<PiiKind> {
        PiiKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The kind in words, for error messages: "an e-mail address".
    pub fn description(self) -> &'static str {
        match self {
            PiiKind::Email => "an e-mail address",
            PiiKind::Phone => "a phone number",
            PiiKind::Card => "a payment card number",
            PiiKind::Iban => "an IBAN",
            PiiKind::NationalId => "a national identification number",
            PiiKind::IpAddress => "an IP address",
            PiiKind::Secret => "an API key or secret",
        }
    }

    /// The mask that replaces a match.
    pub fn mask(self) -> String {
        format!("[REDACTED:{}]", self.name())
    }
}

/// One detector hit: a byte range of the scanned text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finding {
    /// What was found.
    pub kind: PiiKind,
    /// Byte offset of the first byte.
    pub start: usize,
    /// Byte offset one past the last byte.
    pub end: usize,
}

/// Masks every detector match in a JSON value at any depth: string values, object keys, and
/// bare integers that are card numbers. Returns how many replacements were made. Objects are
/// rebuilt only when one of their keys must be masked (rare).
pub(crate) fn mask_json(v: &mut serde_json::Value, kinds: &[PiiKind]) -> usize {
    match v {
        serde_json::Value::String(s) => {
            // Most strings are clean: scan first, so that those are not copied.
            let findings = scan(s, kinds);
            if !findings.is_empty() {
                *s = masked(s, &findings);
            }
            findings.len()
        }
        serde_json::Value::Number(n)
            if kinds.contains(&PiiKind::Card) && n.as_u64().is_some_and(is_card_integer) =>
        {
            *v = serde_json::Value::String(PiiKind::Card.mask());
            1
        }
        serde_json::Value::Array(items) => items.iter_mut().map(|x| mask_json(x, kinds)).sum(),
        serde_json::Value::Object(map) => {
            let count: usize = map.values_mut().map(|x| mask_json(x, kinds)).sum();
            count + mask_keys(map, kinds, |_| false)
        }
        _ => 0,
    }
}

/// Masks detector matches in the keys of an object, except keys for which `exempt` holds; two
/// keys masked to the same text get `#2`, `#3`, … so neither overwrites the other. The map is
/// rebuilt only when some key must change. Returns how many replacements were made.
pub(crate) fn mask_keys(
    map: &mut serde_json::Map<String, serde_json::Value>,
    kinds: &[PiiKind],
    exempt: impl Fn(&str) -> bool,
) -> usize {
    if map.keys().all(|k| exempt(k) || scan(k, kinds).is_empty()) {
        return 0;
    }
    let mut count = 0;
    let old = std::mem::take(map);
    for (k, x) in old {
        let (mut key, n) = if exempt(&k) {
            (k, 0)
        } else {
            mask_text(&k, kinds)
        };
        count += n;
        if map.contains_key(&key) {
            let base = key.clone();
            let mut i = 2;
            while map.contains_key(&key) {
                key = format!("{base}#{i}");
                i += 1;
            }
        }
        map.insert(key, x);
    }
    count
}

/// Replaces every match of the given detectors by its mask; returns the text and the count.
pub fn mask_text(text: &str, kinds: &[PiiKind]) -> (String, usize) {
    let findings = scan(text, kinds);
    (masked(text, &findings), findings.len())
}

/// The text with each of `findings` (sorted, not overlapping, as [`scan`] returns them)
/// replaced by its mask.
fn masked(text: &str, findings: &[Finding]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for f in findings {
        out.push_str(text.get(at..f.start).unwrap_or_default());
        out.push_str(&f.kind.mask());
        at = f.end;
    }
    out.push_str(text.get(at..).unwrap_or_default());
    out
}

/// Every detector needs a digit, an `@`, or at least 15 characters (the shortest prefixed key
/// is `xoxb-` + 10; `AKIA` + 16, PEM headers and high-entropy tokens are longer): text with
/// none of these is skipped without running the detectors — most short attribute values.
fn cannot_hold_pii(text: &str) -> bool {
    text.len() < PREFIXED_KEY_MIN_LEN && !text.bytes().any(|b| b.is_ascii_digit() || b == b'@')
}

/// Runs the given detectors over a text; findings are sorted and never overlap. Matches of
/// different detectors that overlap become one finding spanning all of them, of the kind
/// earliest in [`PiiKind::ALL`]: masking it leaves no part of either match in clear (keeping
/// only the first detector's match left `2001:db8::` of `2001:db8::178-05-1120` once its
/// national-id tail was masked; found by the `pii` fuzz target).
pub fn scan(text: &str, kinds: &[PiiKind]) -> Vec<Finding> {
    scan_shaped(text, kinds, true)
}

/// [`scan`], optionally without skipping the detectors the text's [`Shape`] rules out.
fn scan_shaped(text: &str, kinds: &[PiiKind], shortcut: bool) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    if shortcut && cannot_hold_pii(text) {
        return out;
    }
    let shape = Shape::of(text);
    for kind in PiiKind::ALL {
        if !kinds.contains(&kind) || (shortcut && !shape.may_hold(kind)) {
            continue;
        }
        for (start, end) in detect(kind, text, shortcut.then_some(&shape)) {
            claim(&mut out, Finding { kind, start, end });
        }
    }
    out.sort_by_key(|f| f.start);
    out
}

/// Adds a match to `findings` (which do not overlap), merging it with every finding it
/// overlaps: the merged finding spans them all and has the kind earliest in [`PiiKind::ALL`].
/// One pass is enough: the findings are disjoint, so a finding the match does not overlap
/// cannot overlap the union of the match with the ones it does.
fn claim(findings: &mut Vec<Finding>, new: Finding) {
    let rank = |k: PiiKind| PiiKind::ALL.iter().position(|&x| x == k);
    let mut merged = new;
    findings.retain(|f| {
        let overlaps = f.start < new.end && new.start < f.end;
        if overlaps {
            merged.start = merged.start.min(f.start);
            merged.end = merged.end.max(f.end);
            if rank(f.kind) < rank(merged.kind) {
                merged.kind = f.kind;
            }
        }
        !overlaps
    });
    findings.push(merged);
}

/// The first finding of any built-in detector, for refusing PII in leaf fields.
pub(crate) fn first_finding(text: &str) -> Option<PiiKind> {
    scan(text, &PiiKind::ALL).first().map(|f| f.kind)
}

/// What one pass over a text learns, enough to skip the detectors that cannot match it: each
/// condition in [`Shape::may_hold`] is one that every match of that detector (regex and
/// checks) satisfies. A test compares scans with and without the shortcut.
#[derive(Default, Debug, PartialEq, Eq)]
struct Shape {
    digits: usize,
    at: bool,
    dot: bool,
    colons: usize,
    /// Longest run of `[A-Za-z0-9+/_-]`: what tokens and prefixed keys are made of.
    token_run: usize,
    /// Longest such run that holds a digit: every high-entropy token does.
    digit_token_run: usize,
    pem: bool,
    len: usize,
}

/// Byte classes for [`Shape::of`]: one table lookup a byte instead of a chain of comparisons.
const TOKEN_BYTE: u8 = 1;
const DIGIT_BYTE: u8 = 2;
const AT_BYTE: u8 = 4;
const DOT_BYTE: u8 = 8;
const COLON_BYTE: u8 = 16;

#[allow(clippy::indexing_slicing)] // `b` < 256 by the loop condition
static BYTE_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'_' | b'-') {
            t[b] |= TOKEN_BYTE;
        }
        t[b] |= match c {
            b'0'..=b'9' => DIGIT_BYTE,
            b'@' => AT_BYTE,
            b'.' => DOT_BYTE,
            b':' => COLON_BYTE,
            _ => 0,
        };
        b += 1;
    }
    t
};

impl Shape {
    fn of(text: &str) -> Shape {
        // One pass, its state in plain locals so that the loop keeps them in registers (two
        // passes that the compiler vectorizes for the counts measured slower: `ingress` bench).
        let (mut digits, mut colons, mut seen) = (0usize, 0usize, 0u8);
        let (mut run, mut run_has_digit) = (0usize, false);
        let (mut token_run, mut digit_token_run) = (0usize, 0usize);
        for &b in text.as_bytes() {
            #[allow(clippy::indexing_slicing)] // a byte indexes a 256-entry table
            let class = BYTE_CLASS[usize::from(b)];
            seen |= class;
            digits += usize::from(class & DIGIT_BYTE != 0);
            colons += usize::from(class & COLON_BYTE != 0);
            if class & TOKEN_BYTE != 0 {
                run += 1;
                run_has_digit |= class & DIGIT_BYTE != 0;
            } else {
                // A run's length is taken when it ends, and after the last byte.
                token_run = token_run.max(run);
                if run_has_digit {
                    digit_token_run = digit_token_run.max(run);
                }
                (run, run_has_digit) = (0, false);
            }
        }
        token_run = token_run.max(run);
        if run_has_digit {
            digit_token_run = digit_token_run.max(run);
        }
        Shape {
            digits,
            at: seen & AT_BYTE != 0,
            dot: seen & DOT_BYTE != 0,
            colons,
            token_run,
            digit_token_run,
            pem: text.contains("-----BEGIN "),
            len: text.len(),
        }
    }

    fn may_hold(&self, kind: PiiKind) -> bool {
        match kind {
            PiiKind::Email => self.at,
            // Country code, two check digits, then at least 11 more characters.
            PiiKind::Iban => self.digits >= 2 && self.len >= IBAN_MIN_LEN,
            PiiKind::Card => self.digits >= 13,
            // NINO: six digits; SSN: nine.
            PiiKind::NationalId => self.digits >= 6,
            // IPv4: four numbers and dots; IPv6: at least two colons and a digit.
            PiiKind::IpAddress => {
                (self.digits >= 4 && self.dot) || (self.colons >= 2 && self.digits >= 1)
            }
            // Both phone forms need 8 to 15 digits.
            PiiKind::Phone => self.digits >= 8,
            // The shortest prefixed key is `xoxb-` + 10, tokens are 32 or more.
            PiiKind::Secret => self.pem || self.token_run >= PREFIXED_KEY_MIN_LEN,
        }
    }
}

fn re(pattern: &str) -> Regex {
    #[allow(clippy::unwrap_used)] // constant patterns, checked by every test that scans
    Regex::new(pattern).unwrap()
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}\b",
    )
});
static CARD: LazyLock<Regex> = LazyLock::new(|| re(r"\b\d(?:[ \-]?\d){12,18}\b"));
static IBAN: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"));
static SSN: LazyLock<Regex> = LazyLock::new(|| re(r"\b(\d{3})-(\d{2})-(\d{4})\b"));
static NINO: LazyLock<Regex> =
    LazyLock::new(|| re(r"\b([A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]) ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"));
static IPV4: LazyLock<Regex> = LazyLock::new(|| re(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"));
static IPV6: LazyLock<Regex> =
    LazyLock::new(|| re(r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.\d{1,3}){0,3}"));
static PHONE_INTL: LazyLock<Regex> =
    LazyLock::new(|| re(r"\+\d{1,3}(?:[ .\-]?\(?\d{1,5}\)?){1,6}\b"));
static PHONE_NATIONAL: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?:\(\d{2,5}\) ?|\b\d{2,5}[ .\-])\d{2,5}(?:[ .\-]\d{2,5}){0,3}\b"));
static SECRET_PREFIXED: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\b(?:sk-[A-Za-z0-9_\-]{20,}|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[bp]-[A-Za-z0-9\-]{10,})",
    )
});
static PRIVATE_KEY: LazyLock<Regex> = LazyLock::new(|| {
    re(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?s:.*?)(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|$)")
});
static TOKEN: LazyLock<Regex> = LazyLock::new(|| re(r"[A-Za-z0-9+/_\-]{32,}={0,2}"));
static UUID: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")
});

/// The spans of `text` that the detector of `kind` finds. Given the text's [`Shape`], the
/// secret detector also skips those of its three patterns that the shape rules out.
fn detect(kind: PiiKind, text: &str, shape: Option<&Shape>) -> Vec<(usize, usize)> {
    let spans = |r: &Regex, ok: &dyn Fn(&str, usize, usize) -> bool| -> Vec<(usize, usize)> {
        r.find_iter(text)
            .filter(|m| ok(m.as_str(), m.start(), m.end()))
            .map(|m| (m.start(), m.end()))
            .collect()
    };
    match kind {
        PiiKind::Email => spans(&EMAIL, &|_, _, _| true),
        PiiKind::Card => spans(&CARD, &|s, start, _| {
            !preceded_by(text, start, |c| c == '+') && is_card(s)
        }),
        PiiKind::Iban => IBAN
            .find_iter(text)
            .filter_map(|m| iban_prefix(m.as_str()).map(|len| (m.start(), m.start() + len)))
            .collect(),
        PiiKind::NationalId => {
            let mut v: Vec<(usize, usize)> = SSN
                .captures_iter(text)
                .filter(|c| {
                    let g = |i| c.get(i).map_or("", |m| m.as_str());
                    let area = g(1);
                    area != "000"
                        && area != "666"
                        && !area.starts_with('9')
                        && g(2) != "00"
                        && g(3) != "0000"
                })
                .filter_map(|c| c.get(0).map(|m| (m.start(), m.end())))
                .collect();
            v.extend(
                NINO.captures_iter(text)
                    .filter(|c| {
                        let prefix = c.get(1).map_or("", |m| m.as_str());
                        !["BG", "GB", "KN", "NK", "NT", "TN", "ZZ"].contains(&prefix)
                    })
                    .filter_map(|c| c.get(0).map(|m| (m.start(), m.end()))),
            );
            v
        }
        PiiKind::IpAddress => {
            let mut v = spans(&IPV4, &|s, start, end| {
                !preceded_by(text, start, |c| c == '.')
                    && !followed_by_dot_digit(text, end)
                    && s.split('.').all(valid_octet)
            });
            v.extend(spans(&IPV6, &|s, start, end| {
                !preceded_by(text, start, |c| c.is_ascii_alphanumeric() || c == ':')
                    && !text
                        .get(end..)
                        .and_then(|r| r.chars().next())
                        .is_some_and(|c| c.is_ascii_alphanumeric())
                    && s.bytes().any(|b| b.is_ascii_digit())
                    && s.parse::<std::net::Ipv6Addr>().is_ok()
            }));
            v
        }
        PiiKind::Phone => {
            let mut v = spans(&PHONE_INTL, &|s, start, _| {
                !preceded_by(text, start, |c| c.is_ascii_alphanumeric())
                    && (8..=15).contains(&digit_count(s))
            });
            v.extend(spans(&PHONE_NATIONAL, &|s, start, end| {
                !preceded_by(text, start, |c| {
                    c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-' | ':' | '/')
                }) && !followed_by_dot_digit(text, end)
                    && is_national_phone(s)
            }));
            v
        }
        PiiKind::Secret => {
            let may = |holds: fn(&Shape) -> bool| shape.is_none_or(holds);
            let mut v = Vec::new();
            if may(|s| s.pem) {
                v.extend(spans(&PRIVATE_KEY, &|_, _, _| true));
            }
            if may(|s| s.token_run >= PREFIXED_KEY_MIN_LEN) {
                v.extend(spans(&SECRET_PREFIXED, &|_, _, _| true));
            }
            if !may(|s| s.digit_token_run >= SECRET_MIN_LEN) {
                return v;
            }
            v.extend(spans(&TOKEN, &|s, start, end| {
                !preceded_by(text, start, |c| c.is_ascii_alphanumeric())
                    && !text
                        .get(end..)
                        .and_then(|r| r.chars().next())
                        .is_some_and(|c| c.is_ascii_alphanumeric())
                    && is_high_entropy_secret(s)
            }));
            v
        }
    }
}

fn preceded_by(text: &str, start: usize, pred: impl Fn(char) -> bool) -> bool {
    text.get(..start)
        .and_then(|s| s.chars().next_back())
        .is_some_and(pred)
}

fn followed_by_dot_digit(text: &str, end: usize) -> bool {
    let mut rest = text.get(end..).unwrap_or_default().chars();
    matches!(rest.next(), Some('.' | '-')) && rest.next().is_some_and(|c| c.is_ascii_digit())
}

fn digit_count(s: &str) -> usize {
    s.bytes().filter(u8::is_ascii_digit).count()
}

fn digits(s: &str) -> Vec<u8> {
    s.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

/// Luhn check over decimal digits.
fn luhn(ds: &[u8]) -> bool {
    let sum: u32 = ds
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn is_card(s: &str) -> bool {
    // Separators, if any, must be all spaces or all dashes.
    if s.contains(' ') && s.contains('-') {
        return false;
    }
    let ds = digits(s);
    (13..=19).contains(&ds.len()) && ds.first().is_some_and(|d| (2..=6).contains(d)) && luhn(&ds)
}

fn is_card_integer(n: u64) -> bool {
    let s = n.to_string();
    s.len() >= 15 && is_card(&s)
}

/// Length in bytes of the longest prefix of `s` (ending at a space or at the end) that is a
/// valid IBAN, if any.
fn iban_prefix(s: &str) -> Option<usize> {
    let mut compact = String::new();
    let mut best = None;
    for (i, c) in s.char_indices() {
        if c == ' ' {
            continue;
        }
        compact.push(c.to_ascii_uppercase());
        let end = i + c.len_utf8();
        let at_boundary = s
            .get(end..)
            .is_none_or(|r| r.is_empty() || r.starts_with(' '));
        if at_boundary && (15..=34).contains(&compact.len()) && iban_valid(&compact) {
            best = Some(end);
        }
    }
    best
}

/// ISO 13616: move the first four characters to the end, letters to 10..35, mod 97 == 1.
fn iban_valid(iban: &str) -> bool {
    let (head, tail) = iban.split_at(4.min(iban.len()));
    let mut rem: u32 = 0;
    for c in tail.chars().chain(head.chars()) {
        let v = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        rem = if v < 10 {
            (rem * 10 + v) % 97
        } else {
            (rem * 100 + v) % 97
        };
    }
    rem == 1
}

fn valid_octet(s: &str) -> bool {
    (s == "0" || !s.starts_with('0')) && s.parse::<u16>().is_ok_and(|n| n <= 255)
}

fn is_national_phone(s: &str) -> bool {
    let n = digit_count(s);
    if !(8..=15).contains(&n) {
        return false;
    }
    let groups: Vec<&str> = s
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .collect();
    let seps: Vec<char> = s.chars().filter(|c| matches!(c, ' ' | '.' | '-')).collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    // Dates: 2026-11-25, 25.11.2026, 2026 11 25, also followed by a time.
    if lens.starts_with(&[4, 2, 2]) || lens.starts_with(&[2, 2, 4]) {
        return false;
    }
    // SSN-shaped (ddd-dd-dddd): a valid one is a national id, an invalid one is not PII.
    if lens == [3, 2, 4] && !s.contains(' ') {
        return false;
    }
    // Thousands groupings: 10 000 000, 1.234.567.
    let parens = s.contains('(');
    if !parens
        && groups
            .first()
            .is_some_and(|g| !g.starts_with('0') && g.len() <= 3)
        && groups.iter().skip(1).all(|g| g.len() == 3)
    {
        return false;
    }
    // Dotted numbers with a single separator are decimals or versions, not phones.
    if seps.iter().all(|&c| c == '.') && groups.len() < 3 {
        return false;
    }
    true
}

/// The high-entropy token rule. A token of at least [`SECRET_MIN_LEN`] characters from
/// `[A-Za-z0-9+/_-]` (with up to two `=` of padding) is a secret when either
/// - it is hex only, holds both digits and letters, has Shannon entropy ≥ 3.0 bits per
///   character, and is not 40 or 64 lowercase hex digits (SHA-1, SHA-256, record ids); or
/// - it mixes upper case, lower case and digits (digits in at least two places, which random
///   base64 of this length nearly always has and identifiers rarely do), has entropy ≥ 3.5
///   bits per character, and changes character class (upper/lower/digit/other) between at least 30 % of adjacent
///   pairs — random base64 changes class about 60 % of the time, CamelCase identifiers and
///   slugs far less.
///
/// UUIDs are never secrets.
pub fn is_high_entropy_secret(token: &str) -> bool {
    let t = token.trim_end_matches('=');
    if t.len() < SECRET_MIN_LEN || UUID.is_match(t) {
        return false;
    }
    let has_digit = t.bytes().any(|b| b.is_ascii_digit());
    let is_hex = t.bytes().all(|b| b.is_ascii_hexdigit());
    if is_hex {
        let lower = t.bytes().all(|b| !b.is_ascii_uppercase());
        if lower && (t.len() == 40 || t.len() == 64) {
            return false;
        }
        return has_digit
            && t.bytes().any(|b| b.is_ascii_alphabetic())
            && entropy(t) >= HEX_SECRET_MIN_ENTROPY;
    }
    let has_upper = t.bytes().any(|b| b.is_ascii_uppercase());
    let has_lower = t.bytes().any(|b| b.is_ascii_lowercase());
    let digit_runs = t
        .as_bytes()
        .split(|b| !b.is_ascii_digit())
        .filter(|r| !r.is_empty())
        .count();
    if !(digit_runs >= 2 && has_upper && has_lower) || entropy(t) < SECRET_MIN_ENTROPY {
        return false;
    }
    let class = |b: u8| {
        if b.is_ascii_uppercase() {
            0
        } else if b.is_ascii_lowercase() {
            1
        } else if b.is_ascii_digit() {
            2
        } else {
            3
        }
    };
    let bytes = t.as_bytes();
    let changes = bytes
        .windows(2)
        .filter(|w| match w {
            [a, b] => class(*a) != class(*b),
            _ => false,
        })
        .count();
    changes * 10 >= (bytes.len() - 1) * 3
}

fn entropy(s: &str) -> f64 {
    let mut counts = [0usize; 256];
    for b in s.bytes() {
        if let Some(c) = counts.get_mut(usize::from(b)) {
            *c += 1;
        }
    }
    #[allow(clippy::cast_precision_loss)] // lengths are far below 2^52
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            #[allow(clippy::cast_precision_loss)]
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Pieces of PII and near misses, cut anywhere, in any order, with noise between them.
    fn piiish() -> impl Strategy<Value = String> {
        const PIECES: &[&str] = &[
            "alice@example.com",
            "a.b+c@mail.example.co.uk",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "5500000000000004",
            "GB82 WEST 1234 5698 7654 32",
            "DE89370400440532013000",
            "NO9386011117947",
            "123-45-6789",
            "QQ 12 34 56 C",
            "AB123456C",
            "192.168.1.10",
            "10.0.0.1",
            "2001:db8::8a2e:370:7334",
            "::1",
            "fe80::1",
            "+44 20 7946 0958",
            "+1 (415) 555-2671",
            "(020) 7946 0958",
            "030 1234 5678",
            "sk-abcdefghijklmnopqrstuvwx",
            "sk_live_abcdefghijklmnop",
            "AKIAIOSFODNN7EXAMPLE",
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            "xoxb-1234567890",
            "xoxp-12345-abcde",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----",
            "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdo",
            "2026-11-25 10:00",
            "v1.2.3.4",
        ];
        let whole = prop::sample::select(PIECES).prop_map(str::to_owned);
        let cut = (prop::sample::select(PIECES), 0usize..64, 0usize..64).prop_map(|(p, a, b)| {
            let (a, b) = (a.min(p.len()), b.min(p.len()));
            p.get(a.min(b)..a.max(b)).unwrap_or_default().to_owned()
        });
        let noise = "[0-9 .:@+/_()A-Za-z-]{0,12}".prop_map(|s: String| s);
        // Near the edges of what each detector needs: few digits, short runs.
        let shaped = prop::sample::select(
            &[
                r"[0-9]{1,3}(\.[0-9]{1,3}){3}",
                r"\+?[0-9]{1,4}([ .-]?\(?[0-9]{1,5}\)?){1,5}",
                r"\(?[0-9]{2,5}\)? ?[0-9]{2,5}([ .-][0-9]{2,5}){0,3}",
                r"[2-6][0-9]{12,18}",
                r"[0-9]{3}-[0-9]{2}-[0-9]{4}",
                r"[A-Z]{2} ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D]",
                r"[0-9a-f]{0,4}(:[0-9a-f]{0,4}){2,7}",
                r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}",
                r"xox[bp]-[A-Za-z0-9]{8,12}",
                r"[A-Za-z0-9+/]{28,36}",
                // Long runs with one digit or none: only the first can be a token.
                r"[A-Za-z]{12,40}[0-9]?[A-Za-z0-9]{0,6}[A-Za-z]{0,30}",
            ][..],
        )
        .prop_flat_map(|re| {
            proptest::string::string_regex(re).unwrap_or_else(|_| {
                proptest::string::string_regex("").unwrap_or_else(|_| unreachable!())
            })
        });
        let separator = prop::sample::select(&[" ", "", ", ", "\n", "-", "."][..]);
        prop::collection::vec(
            (
                prop_oneof![3 => whole, 2 => cut, 1 => noise, 4 => shaped],
                separator,
            ),
            1..4,
        )
        .prop_map(|parts| parts.into_iter().map(|(p, s)| p + s).collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]
        /// Skipping the detectors a text's shape rules out never changes what a scan finds.
        #[test]
        fn the_shape_shortcut_finds_what_every_detector_finds(text in piiish()) {
            prop_assert_eq!(
                scan_shaped(&text, &PiiKind::ALL, true),
                scan_shaped(&text, &PiiKind::ALL, false)
            );
        }

        /// No part of any detector's match stays in clear: each match, found by its detector
        /// alone, lies inside one finding of the full scan, however the detectors' matches
        /// overlap.
        #[test]
        fn every_match_lies_inside_one_finding(text in piiish()) {
            let all = scan(&text, &PiiKind::ALL);
            for kind in PiiKind::ALL {
                for m in scan(&text, &[kind]) {
                    prop_assert!(
                        all.iter().any(|f| f.start <= m.start && m.end <= f.end),
                        "{:?}: {:?} ({:?}) is not inside one of {:?}",
                        text, &text[m.start..m.end], kind, all
                    );
                }
            }
        }

        /// The table-driven shape equals one taken character class by character class.
        #[test]
        fn the_shape_table_agrees_with_plain_comparisons(
            text in prop_oneof![piiish(), any::<String>(), "[a-z0-9@.:+/_ -]{0,80}"]
        ) {
            prop_assert_eq!(Shape::of(&text), plain_shape(&text));
        }
    }

    fn plain_shape(text: &str) -> Shape {
        let mut s = Shape {
            len: text.len(),
            ..Shape::default()
        };
        let (mut run, mut run_has_digit) = (0, false);
        for b in text.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'_' | b'-') {
                run += 1;
                run_has_digit |= b.is_ascii_digit();
                s.token_run = s.token_run.max(run);
                if run_has_digit {
                    s.digit_token_run = s.digit_token_run.max(run);
                }
            } else {
                (run, run_has_digit) = (0, false);
            }
            match b {
                b'0'..=b'9' => s.digits += 1,
                b'@' => s.at = true,
                b'.' => s.dot = true,
                b':' => s.colons += 1,
                _ => {}
            }
        }
        s.pem = text.contains("-----BEGIN ");
        s
    }

    /// Each example must be found whole, as exactly this kind.
    fn assert_found(kind: PiiKind, examples: &[&str]) {
        for ex in examples {
            let text = format!("see {ex} here");
            let f = scan(&text, &PiiKind::ALL);
            assert_eq!(f.len(), 1, "{kind:?} in {text:?}: {f:?}");
            assert_eq!(f[0].kind, kind, "{text:?}");
            assert_eq!(&text[f[0].start..f[0].end], *ex, "{text:?}");
        }
    }

    /// No detector may fire on these.
    fn assert_clean(examples: &[&str]) {
        for ex in examples {
            let f = scan(ex, &PiiKind::ALL);
            assert!(f.is_empty(), "{ex:?} flagged: {f:?}");
        }
    }

    /// An IPv6 address whose tail reads as a US SSN: the national-id detector claims the tail
    /// first; the address's head used to stay in clear (found by the `pii` fuzz target).
    #[test]
    fn overlapping_matches_are_masked_as_one() {
        let text = "from 2001:db8::178-05-1120 today";
        let f = scan(text, &PiiKind::ALL);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].kind, PiiKind::NationalId);
        assert_eq!(&text[f[0].start..f[0].end], "2001:db8::178-05-1120");
        let (masked, n) = mask_text(text, &PiiKind::ALL);
        assert_eq!(
            (masked.as_str(), n),
            ("from [REDACTED:national-id] today", 1)
        );
    }

    #[test]
    fn emails() {
        assert_found(
            PiiKind::Email,
            &["alice@example.com", "alice.smith+tag@mail.example.co.uk"],
        );
        assert_clean(&["ana@acme", "user@localhost", "@example.com", "a @ b.com"]);
    }

    #[test]
    fn phones() {
        assert_found(
            PiiKind::Phone,
            &[
                "+49 151 12345678",
                "+14155552671",
                "+1 (555) 123-4567",
                "+33 1 23 45 67 89",
                "(555) 123-4567",
                "555-123-4567",
                "030 1234 5678",
                "0151-1234-5678",
            ],
        );
        assert_clean(&[
            "2026-11-25",
            "25.11.2026",
            "2026-11-25T12:30:45Z",
            "2026-11-25 12:30:45",
            "version 1.2.3",
            "12345",
            "order 42 of 1000",
            "10 000 000",
            "1,234,567",
            "3.14159",
            "+1234",
            "12:30:45",
        ]);
    }

    #[test]
    fn cards() {
        assert_found(
            PiiKind::Card,
            &[
                "4111111111111111",
                "4111 1111 1111 1111",
                "5500-0000-0000-0004",
                "378282246310005",
                "6011 0009 9013 9424",
            ],
        );
        // Luhn fails, issuer digit out of range, too short, mixed separators.
        assert_clean(&[
            "4111111111111112",
            "4111 1111 1111 1112",
            "9111111111111111",
            "411111111111",
            "4111 1111-1111 1111",
        ]);
        let mut v = serde_json::json!({"n": 4_111_111_111_111_111u64, "t": 1_764_100_000_000u64});
        mask_json(&mut v, &PiiKind::ALL);
        assert_eq!(
            v,
            serde_json::json!({"n": "[REDACTED:card]", "t": 1_764_100_000_000u64})
        );
    }

    #[test]
    fn ibans() {
        assert_found(
            PiiKind::Iban,
            &[
                "DE89 3704 0044 0532 0130 00",
                "DE89370400440532013000",
                "GB82WEST12345698765432",
                "GB82 WEST 1234 5698 7654 32",
                "FR1420041010050500013M02606",
                // The shortest (Norway, 15 characters).
                "NO9386011117947",
            ],
        );
        let text = "pay DE89 3704 0044 0532 0130 00 THEN stop";
        let f = scan(text, &PiiKind::ALL);
        assert_eq!(&text[f[0].start..f[0].end], "DE89 3704 0044 0532 0130 00");
        // Bad check digits.
        assert_clean(&["DE88 3704 0044 0532 0130 00", "GB83WEST12345698765432"]);
    }

    #[test]
    fn national_ids() {
        assert_found(
            PiiKind::NationalId,
            &["123-45-6789", "AB 12 34 56 C", "AB123456C"],
        );
        assert_clean(&[
            "000-12-3456",
            "666-12-3456",
            "912-34-5678",
            "123-00-6789",
            "123-45-0000",
            "QQ123456C",
            "GB123456A",
            "AB123456E",
        ]);
    }

    #[test]
    fn ip_addresses() {
        assert_found(
            PiiKind::IpAddress,
            &[
                "192.168.1.10",
                "8.8.8.8",
                "2001:db8::1",
                "fe80::1ff:fe23:4567:890a",
                "::1",
            ],
        );
        assert_clean(&[
            "999.1.1.1",
            "1.2.256.4",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.5",
            "12:30:45",
            "std::vec::Vec",
            "a::b",
            "00:1A:2B:3C:4D:5E",
        ]);
    }

    #[test]
    fn secrets() {
        assert_found(
            PiiKind::Secret,
            &[
                "sk-proj-abcdefghijklmnopqrstuvwx1234",
                "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
                "AKIAIOSFODNN7EXAMPLE",
                "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
                "xoxb-123456789012-abcdefghij",
                "xoxb-abcdefghij",
                "q8Zr3vT9LmX2pK7wN4sY1bH6dF0gJ5cA",
                "9f86d081884c7d659a2feaa0c55ad015",
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
            ],
        );
        let id = "a3f1c2e4b5d6978812345678901234567890abcdefabcdefabcdef0123456789";
        assert_eq!(id.len(), 64);
        assert_clean(&[
            id,
            "da39a3ee5e6b4b0d3255bfef95601890afd80709",
            "123e4567-e89b-12d3-a456-426614174000",
            "customer-support-agent-deployment-v2",
            "MyVeryLongClassNameForThingHandler2",
            "task-management-service-for-enterprise",
            "abcdefghijklmnopqrstuvwxyzabcdefgh",
            "sk-learn",
        ]);
    }

    #[test]
    fn detectors_mask_text_and_names_round_trip() {
        for kind in PiiKind::ALL {
            assert_eq!(PiiKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(PiiKind::from_name("ip-address"), None);
        let (masked, n) = mask_text(
            "mail bob@example.org or call +1 555 123 4567",
            &PiiKind::ALL,
        );
        assert_eq!(n, 2);
        assert_eq!(masked, "mail [REDACTED:email] or call [REDACTED:phone]");
    }
}

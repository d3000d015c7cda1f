//! c2sp.org/signed-note: a text, a blank line, then `— <name> <base64(key id ‖ signature)>` lines.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::key::{self, VerifierKey};

/// Em dash and space: how every signature line starts.
pub(crate) const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// Largest note accepted, signatures included.
pub(crate) const MAX_NOTE_LEN: usize = 1 << 20;
/// Most signature lines accepted (the spec asks for at least 16; Go allows 100).
pub(crate) const MAX_SIGNATURES: usize = 100;

/// A parsed signed note. Parsing checks the format, not the signatures: use
/// [`open_note`] before trusting the body.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Note {
    /// The signed text, ending with a newline.
    pub body: String,
    /// The signature lines, in order.
    pub signatures: Vec<NoteSignature>,
}

/// One signature line.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NoteSignature {
    /// The key name.
    pub name: String,
    /// The key ID: the first 4 bytes of the base64 payload.
    pub key_id: [u8; 4],
    /// The signature bytes after the key ID.
    pub signature: Vec<u8>,
}

impl Note {
    /// Parses a signed note strictly: valid UTF-8 with no control characters
    /// but newline, at most 1 MiB, the body ending at the last blank line, then
    /// 1 to 100 well-formed signature lines, each ending with a newline.
    pub fn parse(text: &str) -> Result<Note, NoteError> {
        check_len(text)?;
        check_control(text)?;
        let split = text.rfind("\n\n").ok_or(NoteError::MissingSignatureBlock)?;
        let (Some(body), Some(block)) = (text.get(..=split), text.get(split + 2..)) else {
            return Err(NoteError::MissingSignatureBlock);
        };
        if block.is_empty() {
            return Err(NoteError::NoSignatures);
        }
        let lines = block
            .strip_suffix('\n')
            .ok_or(NoteError::UnterminatedSignature)?;
        let mut signatures = Vec::new();
        for (number, line) in (1..).zip(lines.split('\n')) {
            if number > MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures {
                    max: MAX_SIGNATURES,
                });
            }
            let signature =
                parse_signature_line(line).ok_or(NoteError::MalformedSignatureLine { number })?;
            signatures.push(signature);
        }
        Ok(Note {
            body: body.to_owned(),
            signatures,
        })
    }
}

/// Parses a note and checks its signatures against `known` keys.
///
/// Signatures whose name and key ID do not both match a known key are ignored.
/// A signature that does match a known key must verify, or the whole note is
/// rejected. At least one must verify. Returns the note and the keys that
/// verified it (each once).
pub fn open_note(text: &str, known: &[VerifierKey]) -> Result<(Note, Vec<VerifierKey>), NoteError> {
    let note = Note::parse(text)?;
    let verified = verify_note(&note, known)?;
    Ok((note, verified))
}

pub(crate) fn verify_note(
    note: &Note,
    known: &[VerifierKey],
) -> Result<Vec<VerifierKey>, NoteError> {
    let mut verified: Vec<VerifierKey> = Vec::new();
    for sig in &note.signatures {
        let Some(key) = known
            .iter()
            .find(|k| k.name() == sig.name && k.key_id() == sig.key_id)
        else {
            continue;
        };
        let valid = <&[u8; 64]>::try_from(sig.signature.as_slice())
            .is_ok_and(|bytes| key.verify_raw(note.body.as_bytes(), bytes));
        if !valid {
            return Err(NoteError::InvalidSignature {
                name: sig.name.clone(),
                key_id: format!("{:08x}", u32::from_be_bytes(sig.key_id)),
            });
        }
        if !verified.contains(key) {
            verified.push(key.clone());
        }
    }
    if verified.is_empty() {
        return Err(NoteError::NoKnownSignature);
    }
    Ok(verified)
}

/// A body that can be signed: non-empty, ends with a newline, no other controls.
pub(crate) fn check_body(body: &str) -> Result<(), NoteError> {
    if !body.ends_with('\n') {
        return Err(NoteError::UnterminatedBody);
    }
    check_control(body)
}

pub(crate) fn check_len(text: &str) -> Result<(), NoteError> {
    if text.len() > MAX_NOTE_LEN {
        return Err(NoteError::TooLarge {
            len: text.len(),
            max: MAX_NOTE_LEN,
        });
    }
    Ok(())
}

fn check_control(text: &str) -> Result<(), NoteError> {
    if text.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::ControlCharacter);
    }
    Ok(())
}

fn parse_signature_line(line: &str) -> Option<NoteSignature> {
    let (name, encoded) = line.strip_prefix(SIGNATURE_PREFIX)?.split_once(' ')?;
    if !key::is_valid_name(name) {
        return None;
    }
    let raw = STANDARD.decode(encoded).ok()?;
    let (key_id, signature) = raw.split_first_chunk::<4>()?;
    if signature.is_empty() {
        return None;
    }
    Some(NoteSignature {
        name: name.to_owned(),
        key_id: *key_id,
        signature: signature.to_vec(),
    })
}

/// A signed note is malformed or its signatures do not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// The note is larger than this crate accepts.
    #[error("note is {len} bytes, more than the {max} accepted")]
    TooLarge {
        /// The note's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A control character other than newline.
    #[error("note contains a control character other than newline")]
    ControlCharacter,
    /// No blank line separates the text from the signatures.
    #[error("note has no blank line separating its text from the signature lines")]
    MissingSignatureBlock,
    /// Nothing after the blank line.
    #[error("note has no signature lines")]
    NoSignatures,
    /// The signature block does not end with a newline.
    #[error("note's last signature line does not end with a newline")]
    UnterminatedSignature,
    /// A signature line is not `— <name> <base64>`.
    #[error("signature line {number} is malformed: expected an em dash, a space, a key name, a space and base64 of a 4-byte key id and a signature")]
    MalformedSignatureLine {
        /// 1-based line number within the signature block.
        number: usize,
    },
    /// More signature lines than accepted.
    #[error("note has more than {max} signature lines")]
    TooManySignatures {
        /// The limit.
        max: usize,
    },
    /// A body to sign is empty or does not end with a newline.
    #[error("note text must be non-empty and end with a newline")]
    UnterminatedBody,
    /// A signature from a known key does not verify.
    #[error("signature by known key {name} ({key_id}) does not verify: the note was altered or the key is wrong")]
    InvalidSignature {
        /// The key name.
        name: String,
        /// The key ID in hex.
        key_id: String,
    },
    /// No signature is from a known key.
    #[error(
        "note has no signature from a known key: check that the right verifier key is configured"
    )]
    NoKnownSignature,
}

#[cfg(test)]
// Tests unwrap and slice values they just built; a panic is a test failure.
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::key::SigningKey;

    fn key(name: &str) -> SigningKey {
        SigningKey::generate(name).unwrap()
    }

    #[test]
    fn sign_and_open() {
        let k = key("example.com/log");
        let text = k.sign_note("hello\n").unwrap();
        assert!(text.starts_with("hello\n\n\u{2014} example.com/log "));
        let (note, verified) = open_note(&text, &[k.verifier()]).unwrap();
        assert_eq!(note.body, "hello\n");
        assert_eq!(verified, vec![k.verifier()]);
    }

    #[test]
    fn refuses_unsignable_bodies() {
        let k = key("k");
        assert_eq!(k.sign_note(""), Err(NoteError::UnterminatedBody));
        assert_eq!(k.sign_note("no newline"), Err(NoteError::UnterminatedBody));
        assert_eq!(k.sign_note("tab\there\n"), Err(NoteError::ControlCharacter));
        assert!(matches!(
            k.sign_note(&format!("{}\n", "x".repeat(MAX_NOTE_LEN))),
            Err(NoteError::TooLarge { .. })
        ));
    }

    #[test]
    fn unknown_keys_are_ignored_and_known_bad_ones_fail() {
        let k = key("example.com/log");
        let other = key("example.com/log"); // same name, other key id
        let text = k.sign_note("body\n").unwrap();
        assert_eq!(
            open_note(&text, &[other.verifier()]),
            Err(NoteError::NoKnownSignature)
        );
        assert_eq!(open_note(&text, &[]), Err(NoteError::NoKnownSignature));

        // A second signature line: known key (name and id) over another body.
        let forged = other.sign_note("other\n").unwrap();
        let forged_line = forged.split_once("\n\n").unwrap().1;
        let both = format!("{text}{forged_line}");
        assert!(open_note(&both, &[k.verifier()]).is_ok());
        assert!(matches!(
            open_note(&both, &[k.verifier(), other.verifier()]),
            Err(NoteError::InvalidSignature { .. })
        ));
    }

    #[test]
    fn rejects_malformed_notes() {
        let k = key("k");
        let good = k.sign_note("body\n").unwrap();
        let (body, line) = good.split_once("\n\n").unwrap();
        let line = line.trim_end_matches('\n');
        let cases = [
            (
                format!("{body}\n{line}\n"),
                NoteError::MissingSignatureBlock,
            ),
            (format!("{body}\n\n"), NoteError::NoSignatures),
            (
                format!("{body}\n\n{line}"),
                NoteError::UnterminatedSignature,
            ),
            (format!("{body}\r\n\n{line}\n"), NoteError::ControlCharacter),
            (
                format!("{body}\n\n{}\n", line.replacen('\u{2014}', "-", 1)),
                NoteError::MalformedSignatureLine { number: 1 },
            ),
            (
                format!("{body}\n\n{line}\n\u{2014} k  AAAAAAA=\n"),
                NoteError::MalformedSignatureLine { number: 2 },
            ),
            // Key id but no signature bytes.
            (
                format!("{body}\n\n\u{2014} k AAAAAA==\n"),
                NoteError::MalformedSignatureLine { number: 1 },
            ),
            (
                format!("{body}\n\n\u{2014} a+b AAAAAAA=\n"),
                NoteError::MalformedSignatureLine { number: 1 },
            ),
            (
                format!(
                    "{body}\n\n{}",
                    format!("{line}\n").repeat(MAX_SIGNATURES + 1)
                ),
                NoteError::TooManySignatures {
                    max: MAX_SIGNATURES,
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(Note::parse(&text), Err(want), "{text:?}");
        }
        // Exactly the limit is fine, and duplicates verify once.
        let many = format!("{body}\n\n{}", format!("{line}\n").repeat(MAX_SIGNATURES));
        let (note, verified) = open_note(&many, &[k.verifier()]).unwrap();
        assert_eq!((note.signatures.len(), verified.len()), (MAX_SIGNATURES, 1));
    }

    #[test]
    fn body_may_contain_blank_lines() {
        let k = key("k");
        for body in ["\n", "a\n\nb\n", "a\n\n", "\u{2014} k AAAA\n\n"] {
            let (note, _) = open_note(&k.sign_note(body).unwrap(), &[k.verifier()]).unwrap();
            assert_eq!(note.body, body);
        }
    }

    proptest! {
        #[test]
        fn sign_open_round_trip(lines in proptest::collection::vec("[^\\x00-\\x1f]{0,40}", 1..6)) {
            let k = key("example.com/prop");
            let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
            let text = k.sign_note(&body).unwrap();
            let (note, verified) = open_note(&text, &[k.verifier()]).unwrap();
            prop_assert_eq!(note.body, body.clone());
            prop_assert_eq!(verified, vec![k.verifier()]);
            // The same note under a body changed by one appended line fails.
            let tampered = format!("{body}x\n{}", &text[body.len()..]);
            prop_assert!(open_note(&tampered, &[k.verifier()]).is_err());
        }
    }
}

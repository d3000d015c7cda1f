//! c2sp.org/tlog-checkpoint: the body of a log's signed note.
//!
//! ```text
//! <origin>\n<tree size, decimal>\n<root hash, standard base64>\n[<extension line>\n]...
//! ```

use crate::hash::{EncodingError, Hash};
use crate::key::VerifierKey;
use crate::note::{self, Note, NoteError};

/// A checkpoint body: which log, how many leaves, which root.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Checkpoint {
    /// The log's origin line, which is also the name of its key.
    pub origin: String,
    /// The number of leaves in the tree.
    pub size: u64,
    /// The root hash of the tree of that size.
    pub root: Hash,
    /// Extra lines after the root, without their newlines; usually none.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The note body: origin, size and base64 root, then extension lines, each ending in `\n`.
    pub fn to_body(&self) -> String {
        let mut body = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            self.root.to_base64()
        );
        for line in &self.extensions {
            body.push_str(line);
            body.push('\n');
        }
        body
    }

    /// Parses a checkpoint body. This checks the format only: use
    /// [`verify_checkpoint`] on the signed note before trusting it.
    pub fn parse_body(body: &str) -> Result<Checkpoint, CheckpointError> {
        if body.chars().any(|c| c < ' ' && c != '\n') {
            return Err(CheckpointError::ControlCharacter);
        }
        let mut lines = body
            .strip_suffix('\n')
            .ok_or(CheckpointError::UnterminatedBody)?
            .split('\n');
        let origin = lines
            .next()
            .filter(|origin| !origin.is_empty())
            .ok_or(CheckpointError::MissingOrigin)?;
        let size = parse_size(lines.next().ok_or(CheckpointError::MissingSize)?)?;
        let root = Hash::from_base64(lines.next().ok_or(CheckpointError::MissingRoot)?)
            .map_err(|source| CheckpointError::InvalidRoot { source })?;
        let extensions = lines
            .map(|line| match line {
                "" => Err(CheckpointError::EmptyExtension),
                line => Ok(line.to_owned()),
            })
            .collect::<Result<_, _>>()?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// Checks that [`Checkpoint::to_body`] will produce a body that parses back
    /// to this checkpoint: a non-empty origin, non-empty extension lines, and
    /// no newlines or other control characters in either.
    pub fn validate(&self) -> Result<(), CheckpointError> {
        let has_control = |line: &str| line.chars().any(|c| c < ' ');
        if self.origin.is_empty() {
            return Err(CheckpointError::MissingOrigin);
        }
        if self.extensions.iter().any(String::is_empty) {
            return Err(CheckpointError::EmptyExtension);
        }
        if has_control(&self.origin) || self.extensions.iter().any(|line| has_control(line)) {
            return Err(CheckpointError::ControlCharacter);
        }
        Ok(())
    }
}

/// A checkpoint whose log signature has been checked. Only
/// [`verify_checkpoint`] makes one, so holding it is proof of verification.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VerifiedCheckpoint {
    checkpoint: Checkpoint,
    note_text: String,
}

impl VerifiedCheckpoint {
    /// The verified checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The signed note it came from, byte for byte.
    pub fn note_text(&self) -> &str {
        &self.note_text
    }
}

/// Verifies a signed checkpoint: it must parse, and carry a valid signature by
/// a key in `known` whose name is the checkpoint's origin (the log's own key).
///
/// Only the known keys named after the origin are consulted; other signature
/// lines (witness cosignatures, other logs' keys) are ignored.
pub fn verify_checkpoint(
    note_text: &str,
    known: &[VerifierKey],
) -> Result<VerifiedCheckpoint, CheckpointError> {
    let note = Note::parse(note_text)?;
    let checkpoint = Checkpoint::parse_body(&note.body)?;
    let log_keys: Vec<VerifierKey> = known
        .iter()
        .filter(|key| key.name() == checkpoint.origin)
        .cloned()
        .collect();
    if log_keys.is_empty() {
        return Err(CheckpointError::UnknownOrigin {
            origin: checkpoint.origin,
        });
    }
    note::verify_note(&note, &log_keys)?;
    Ok(VerifiedCheckpoint {
        checkpoint,
        note_text: note_text.to_owned(),
    })
}

/// Decimal, no sign, no leading zeros (except "0" itself), fits in u64.
fn parse_size(line: &str) -> Result<u64, CheckpointError> {
    let canonical = !line.is_empty()
        && line.bytes().all(|b| b.is_ascii_digit())
        && (line == "0" || !line.starts_with('0'));
    canonical
        .then(|| line.parse().ok())
        .flatten()
        .ok_or_else(|| CheckpointError::InvalidSize {
            line: line.to_owned(),
        })
}

/// A checkpoint is malformed or not signed by its log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The signed note around the checkpoint is malformed or does not verify.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The body does not end with a newline.
    #[error("checkpoint body must end with a newline")]
    UnterminatedBody,
    /// A control character other than the line-ending newlines.
    #[error("checkpoint contains a control character")]
    ControlCharacter,
    /// The first line is empty.
    #[error("checkpoint has no origin line")]
    MissingOrigin,
    /// No second line.
    #[error("checkpoint has no tree size line")]
    MissingSize,
    /// The second line is not a canonical decimal u64.
    #[error("checkpoint tree size {line:?} is not a decimal number without leading zeros that fits in 64 bits")]
    InvalidSize {
        /// The offending line.
        line: String,
    },
    /// No third line.
    #[error("checkpoint has no root hash line")]
    MissingRoot,
    /// The third line is not a base64 SHA-256 hash.
    #[error("checkpoint root hash line is invalid")]
    InvalidRoot {
        /// What was wrong with it.
        source: EncodingError,
    },
    /// An empty line among the extension lines.
    #[error("checkpoint extension lines must not be empty")]
    EmptyExtension,
    /// None of the known keys is named after this log.
    #[error("no known verifier key is named after checkpoint origin {origin:?}: configure that log's verifier key")]
    UnknownOrigin {
        /// The checkpoint's origin.
        origin: String,
    },
}

#[cfg(test)]
// Tests unwrap results they just built; a panic is a test failure.
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::key::SigningKey;
    use crate::merkle::empty_root;

    fn checkpoint(origin: &str) -> Checkpoint {
        Checkpoint {
            origin: origin.to_owned(),
            size: 0,
            root: empty_root(),
            extensions: vec![],
        }
    }

    #[test]
    fn sign_and_verify() {
        let key = SigningKey::generate("example.com/log").unwrap();
        let cp = checkpoint("example.com/log");
        let text = key.sign_checkpoint(&cp);
        let verified = verify_checkpoint(&text, &[key.verifier()]).unwrap();
        assert_eq!(verified.checkpoint(), &cp);
        assert_eq!(verified.note_text(), text);
    }

    #[test]
    fn needs_the_origin_key() {
        let log = SigningKey::generate("example.com/log").unwrap();
        let witness = SigningKey::generate("example.com/witness").unwrap();
        let cp = checkpoint("example.com/log");
        // Signed by the witness only: the log's signature is missing.
        let text = witness.sign_note(&cp.to_body()).unwrap();
        assert_eq!(
            verify_checkpoint(&text, &[witness.verifier()]),
            Err(CheckpointError::UnknownOrigin {
                origin: "example.com/log".into()
            })
        );
        assert_eq!(
            verify_checkpoint(&text, &[witness.verifier(), log.verifier()]),
            Err(CheckpointError::Note(NoteError::NoKnownSignature))
        );
        // Log signature plus a witness line that is ignored.
        let signed = log.sign_checkpoint(&cp);
        let witness_line = text.split_once("\n\n").unwrap().1;
        let both = format!("{signed}{witness_line}");
        assert!(verify_checkpoint(&both, &[log.verifier(), witness.verifier()]).is_ok());
    }

    #[test]
    fn rejects_malformed_bodies() {
        let root = empty_root().to_base64();
        let cases = [
            (format!("o\n1\n{root}"), CheckpointError::UnterminatedBody),
            (format!("\n1\n{root}\n"), CheckpointError::MissingOrigin),
            ("o\n".to_owned(), CheckpointError::MissingSize),
            ("o\n1\n".to_owned(), CheckpointError::MissingRoot),
            (format!("o\n1\n{root}\n\n"), CheckpointError::EmptyExtension),
            (
                format!("o\t\n1\n{root}\n"),
                CheckpointError::ControlCharacter,
            ),
        ];
        for (body, want) in cases {
            assert_eq!(Checkpoint::parse_body(&body), Err(want), "{body:?}");
        }
        for size in ["", "01", "+1", "-1", " 1", "1.0", "18446744073709551616"] {
            assert!(
                matches!(
                    Checkpoint::parse_body(&format!("o\n{size}\n{root}\n")),
                    Err(CheckpointError::InvalidSize { .. })
                ),
                "{size:?}"
            );
        }
        assert!(matches!(
            Checkpoint::parse_body("o\n1\nAAAA\n"),
            Err(CheckpointError::InvalidRoot { .. })
        ));
        let max = Checkpoint::parse_body(&format!("o\n18446744073709551615\n{root}\n")).unwrap();
        assert_eq!(max.size, u64::MAX);
    }

    #[test]
    fn validate_catches_unrepresentable_fields() {
        assert_eq!(checkpoint("o").validate(), Ok(()));
        assert_eq!(
            checkpoint("").validate(),
            Err(CheckpointError::MissingOrigin)
        );
        assert_eq!(
            checkpoint("a\nb").validate(),
            Err(CheckpointError::ControlCharacter)
        );
        let mut cp = checkpoint("o");
        cp.extensions.push(String::new());
        assert_eq!(cp.validate(), Err(CheckpointError::EmptyExtension));
    }

    proptest! {
        #[test]
        fn body_round_trip(
            origin in "[^\\p{Cc}]{1,40}",
            size: u64,
            root: [u8; 32],
            extensions in proptest::collection::vec("[^\\p{Cc}]{1,40}", 0..4),
        ) {
            let cp = Checkpoint { origin, size, root: Hash(root), extensions };
            prop_assert_eq!(cp.validate(), Ok(()));
            prop_assert_eq!(Checkpoint::parse_body(&cp.to_body()), Ok(cp));
        }
    }
}

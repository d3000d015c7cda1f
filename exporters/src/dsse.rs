//! DSSE (<https://github.com/secure-systems-lab/dsse>): an export bundle wrapped as the
//! predicate of an in-toto Statement v1 whose subjects are the exported records, in an envelope
//! signed by the log key over the DSSE pre-authentication encoding (PAE), so that supply-chain
//! tooling that verifies DSSE can check it.
//!
//! An envelope base64-encodes its whole statement and signs it in one piece. The writer still
//! streams: the statement goes to an anonymous temporary file (the bundle as predicate, written
//! as it is exported, then the subjects, gathered in a second temporary file meanwhile), is
//! signed by reading that file twice (Ed25519 reads its message twice,
//! [`SigningKey::sign_raw_streamed`]), and is base64-encoded into the envelope from the file.
//! Memory does not grow with the export; the temporary files take about the bundle's size. The
//! verifier, [`verify_dsse`], streams the same way: the payload is decoded into a temporary
//! file, which is read for the signature and then verified as a bundle.

use std::fs::File;
use std::io::{BufWriter, Read, Seek as _, SeekFrom, Write};
use std::os::unix::fs::FileExt as _;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use provledger_ledger::Ledger;
use provledger_signer::{Hash, SigningKey, VerifierKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{BundleError, ExportError};
use crate::export::{export_observed, ExportSummary, Scope};
use crate::framer::{FrameError, Framer};
use crate::verify::{verify_bundle_observed, BundleReport, LaterCheckpoint};

/// `payloadType` of the envelope: an in-toto statement.
pub const DSSE_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// `_type` of the statement.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// `predicateType` of the statements written: the predicate is a provledger bundle, version 2
/// (`docs/export-format.md`).
pub const BUNDLE_PREDICATE_TYPE: &str = "https://provledger.dev/attestation/export-bundle/v2";
/// `predicateType` of envelopes written before bundle version 2 (a version 1 bundle), still
/// verified.
const BUNDLE_PREDICATE_TYPE_V1: &str = "https://provledger.dev/attestation/export-bundle/v1";

/// Writes a DSSE envelope of `scope` to `out`: the bundle [`crate::export`] writes, as the
/// predicate of an in-toto statement, signed with `key` (the log's key) over the PAE. Memory
/// does not grow with the scope; two anonymous temporary files hold the statement meanwhile.
pub fn export_dsse<W: Write>(
    ledger: &Ledger,
    key: &SigningKey,
    scope: &Scope,
    mut out: W,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<ExportSummary, ExportError> {
    let (statement, summary) = write_statement(ledger, key, scope, progress)?;
    let len = statement.metadata()?.len();
    let prefix = format!(
        "DSSEv1 {} {DSSE_PAYLOAD_TYPE} {len} ",
        DSSE_PAYLOAD_TYPE.len()
    );
    let signature = key.sign_raw_streamed(&|sink| {
        sink(prefix.as_bytes());
        read_chunks(&statement, len, &mut |chunk| {
            sink(chunk);
            Ok(())
        })
    })?;
    let signatures = [SignatureOut {
        keyid: key.verifier().to_string(),
        sig: STANDARD.encode(signature),
    }];
    out.write_all(b"{\"payloadType\":")?;
    serde_json::to_writer(&mut out, DSSE_PAYLOAD_TYPE).map_err(std::io::Error::from)?;
    out.write_all(b",\"payload\":\"")?;
    let mut block = String::with_capacity(BASE64_BLOCK / 3 * 4);
    read_chunks(&statement, len, &mut |chunk| {
        block.clear();
        STANDARD.encode_string(chunk, &mut block);
        out.write_all(block.as_bytes())
    })?;
    out.write_all(b"\",\"signatures\":")?;
    serde_json::to_writer(&mut out, &signatures).map_err(std::io::Error::from)?;
    out.write_all(b"}\n")?;
    out.flush()?;
    Ok(summary)
}

/// The in-toto statement of `scope`, in an anonymous temporary file: `_type`, `predicateType`,
/// the bundle as `predicate` (streamed as it is exported), then `subject` (each record's id and
/// the SHA-256 of its leaf bytes, gathered in a second temporary file meanwhile).
fn write_statement(
    ledger: &Ledger,
    key: &SigningKey,
    scope: &Scope,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<(File, ExportSummary), ExportError> {
    let mut statement = BufWriter::with_capacity(256 * 1024, tempfile::tempfile()?);
    let mut subjects = BufWriter::with_capacity(64 * 1024, tempfile::tempfile()?);
    statement.write_all(b"{\"_type\":")?;
    serde_json::to_writer(&mut statement, STATEMENT_TYPE).map_err(std::io::Error::from)?;
    statement.write_all(b",\"predicateType\":")?;
    serde_json::to_writer(&mut statement, BUNDLE_PREDICATE_TYPE).map_err(std::io::Error::from)?;
    statement.write_all(b",\"predicate\":")?;
    let mut first = true;
    let summary = export_observed(
        ledger,
        key,
        scope,
        &mut statement,
        progress,
        &mut |id, leaf| {
            if !std::mem::take(&mut first) {
                subjects.write_all(b",")?;
            }
            let subject = SubjectOut {
                name: id.to_hex(),
                digest: DigestOut {
                    sha256: hex::encode(Sha256::digest(leaf)),
                },
            };
            serde_json::to_writer(&mut subjects, &subject).map_err(std::io::Error::from)?;
            Ok(())
        },
    )?;
    statement.write_all(b",\"subject\":[")?;
    let mut subjects = subjects.into_inner().map_err(|e| e.into_error())?;
    subjects.seek(SeekFrom::Start(0))?;
    std::io::copy(&mut subjects, &mut statement)?;
    drop(subjects);
    statement.write_all(b"]}")?;
    let statement = statement.into_inner().map_err(|e| e.into_error())?;
    Ok((statement, summary))
}

/// Calls `each` with the first `len` bytes of `file`, a block at a time (positioned reads: the
/// file's cursor is not used).
fn read_chunks(
    file: &File,
    len: u64,
    each: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; BASE64_BLOCK];
    let mut at = 0u64;
    while at < len {
        let n = usize::try_from(len - at).map_or(buf.len(), |rest| rest.min(buf.len()));
        let chunk = buf.get_mut(..n).unwrap_or_default();
        file.read_exact_at(chunk, at)?;
        each(chunk)?;
        at += n as u64;
    }
    Ok(())
}

/// Bytes of payload base64-encoded at a time: a multiple of 3, so blocks join without padding.
const BASE64_BLOCK: usize = 3 * 64 * 1024;

/// The DSSE v1 pre-authentication encoding that is signed:
/// `"DSSEv1" SP len(type) SP type SP len(body) SP body`, lengths in ASCII decimal.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + payload_type.len() + 32);
    out.extend_from_slice(
        format!(
            "DSSEv1 {} {payload_type} {} ",
            payload_type.len(),
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(body);
    out
}

/// Whether `head` (the first bytes of a file) starts like a DSSE envelope rather than a bundle:
/// a JSON object whose first key is one of the envelope's.
pub fn looks_like_envelope(head: &[u8]) -> bool {
    let mut rest = head.iter().skip_while(|b| b.is_ascii_whitespace());
    if rest.next() != Some(&b'{') {
        return false;
    }
    let rest: Vec<u8> = rest
        .skip_while(|b| b.is_ascii_whitespace())
        .take(16)
        .copied()
        .collect();
    [&b"\"payloadType\""[..], b"\"payload\"", b"\"signatures\""]
        .iter()
        .any(|k| rest.starts_with(k))
}

/// Verifies a DSSE envelope written by [`export_dsse`], offline: the envelope's type and
/// statement, a signature over the PAE by the log key (a `trusted` key, or with none the
/// bundle's own key), the bundle inside as [`verify_bundle`] does, and that the statement's
/// subjects are exactly the bundle's records (name = record id, `digest.sha256` = SHA-256 of
/// the leaf bytes), in order.
///
/// Streams: the payload is base64-decoded into an anonymous temporary file as it is read, the
/// signature is checked by reading that file once, and the bundle inside is verified from it as
/// a bundle file is, so memory holds what [`verify_bundle`] holds plus 64 bytes per record (the
/// ids and digests the subjects are compared with). The envelope's and the statement's members
/// may come in any order.
pub fn verify_dsse<R: Read>(
    reader: R,
    trusted: &[VerifierKey],
    later: Option<&LaterCheckpoint>,
) -> Result<BundleReport, BundleError> {
    let env = read_envelope(reader)?;
    if env.payload_type != DSSE_PAYLOAD_TYPE {
        return Err(envelope(format!(
            "payloadType is {:?}, expected {DSSE_PAYLOAD_TYPE:?}",
            env.payload_type
        )));
    }
    let (statement, len) = (&env.statement, env.statement_len);
    let st = StatementLayout::scan(statement, len)?;
    if st.kind != STATEMENT_TYPE {
        return Err(envelope(format!(
            "statement _type is {:?}, expected {STATEMENT_TYPE:?}",
            st.kind
        )));
    }
    if st.predicate_type != BUNDLE_PREDICATE_TYPE && st.predicate_type != BUNDLE_PREDICATE_TYPE_V1 {
        return Err(envelope(format!(
            "predicateType is {:?}, expected {BUNDLE_PREDICATE_TYPE:?}",
            st.predicate_type
        )));
    }

    // The signature first: nothing inside counts unless the log key signed it.
    let keys: Vec<VerifierKey> = if trusted.is_empty() {
        bundle_keys(statement, st.predicate)?
    } else {
        trusted.to_vec()
    };
    let prefix = format!(
        "DSSEv1 {} {} {len} ",
        env.payload_type.len(),
        env.payload_type
    );
    let mut signed = false;
    'signatures: for s in &env.signatures {
        let Some(sig) = STANDARD
            .decode(s.sig.as_bytes())
            .ok()
            .and_then(|sig| <[u8; 64]>::try_from(sig.as_slice()).ok())
        else {
            continue;
        };
        for key in &keys {
            let valid = key.verify_raw_streamed(&sig, &|sink| {
                sink(prefix.as_bytes());
                read_chunks(statement, len, &mut |chunk| {
                    sink(chunk);
                    Ok(())
                })
            })?;
            if valid {
                signed = true;
                break 'signatures;
            }
        }
    }
    if !signed {
        let names: Vec<String> = keys.iter().map(ToString::to_string).collect();
        return Err(BundleError::EnvelopeSignature {
            keys: names.join(", "),
        });
    }

    let mut leaves: Vec<(Hash, [u8; 32])> = Vec::new();
    let report = verify_bundle_observed(
        FileRange::new(statement, st.predicate),
        trusted,
        later,
        Some(&mut |id: &Hash, digest: &[u8; 32]| leaves.push((*id, *digest))),
    )?;
    check_subjects(statement, st.subject, &leaves)?;
    Ok(report)
}

/// Largest envelope member other than `payload` (a name, `payloadType`, `signatures`), and
/// largest statement member other than `predicate` and `subject`, or one subject.
const MAX_SMALL_VALUE: usize = 1024 * 1024;

/// An envelope as read: the statement (the decoded payload) is in an anonymous temporary file.
struct EnvelopeRead {
    payload_type: String,
    statement: File,
    statement_len: u64,
    signatures: Vec<SignatureIn>,
}

/// Reads the envelope object, member by member in any order, decoding `payload` into a
/// temporary file as it goes. Unknown members are skipped; a repeated one is refused.
fn read_envelope<R: Read>(reader: R) -> Result<EnvelopeRead, BundleError> {
    let shape = |reason: String| {
        envelope(format!(
            "not {{payloadType, payload, signatures}} JSON: {reason}"
        ))
    };
    let (mut payload_type, mut payload, mut signatures) = (None, None, None);
    let mut buf = Vec::new();
    walk_object(
        &mut Framer::new(reader),
        "envelope",
        &shape,
        &mut |f, name| {
            Ok(match name {
                "payloadType" => payload_type
                    .replace(small_value::<String, _>(f, &mut buf, name, &shape)?)
                    .is_none(),
                "signatures" => signatures
                    .replace(small_value::<Vec<SignatureIn>, _>(
                        f, &mut buf, name, &shape,
                    )?)
                    .is_none(),
                "payload" => payload.replace(decode_payload(f)?).is_none(),
                _ => {
                    f.skip_value().map_err(|e| framing(e, &shape))?;
                    true
                }
            })
        },
    )?;
    let missing = |field: &str| shape(format!("missing field `{field}`"));
    let (statement, statement_len) = payload.ok_or_else(|| missing("payload"))?;
    Ok(EnvelopeRead {
        payload_type: payload_type.ok_or_else(|| missing("payloadType"))?,
        statement,
        statement_len,
        signatures: signatures.ok_or_else(|| missing("signatures"))?,
    })
}

/// A framing error as an envelope error worded by `shape` (an I/O error stays one).
fn framing(e: FrameError, shape: &dyn Fn(String) -> BundleError) -> BundleError {
    match e {
        FrameError::Io(e) => BundleError::Io(e),
        FrameError::Syntax { offset, reason } => shape(format!("at byte {offset}: {reason}")),
    }
}

/// Consumes one member's value, given its name; false when the name was seen before.
type MemberReader<'a, R> = dyn FnMut(&mut Framer<R>, &str) -> Result<bool, BundleError> + 'a;

/// Reads one JSON object member by member, in any order, and then checks that nothing follows
/// it: `each` gets each member's name and must consume its value, answering false when the name
/// was already seen (refused as a duplicate). Errors are worded by `shape`.
fn walk_object<R: Read>(
    f: &mut Framer<R>,
    what: &str,
    shape: &dyn Fn(String) -> BundleError,
    each: &mut MemberReader<'_, R>,
) -> Result<(), BundleError> {
    let mut buf = Vec::new();
    f.expect(b'{', &format!("at the start of the {what}"))
        .map_err(|e| framing(e, shape))?;
    if f.peek().map_err(|e| framing(e, shape))? == Some(b'}') {
        f.expect(b'}', "").map_err(|e| framing(e, shape))?;
    } else {
        loop {
            f.value(&mut buf, MAX_SMALL_VALUE)
                .map_err(|e| framing(e, shape))?;
            let name: String = serde_json::from_slice(&buf)
                .map_err(|e| shape(format!("a member name is not a string: {e}")))?;
            f.expect(b':', "after a member name")
                .map_err(|e| framing(e, shape))?;
            if !each(f, &name)? {
                return Err(shape(format!("duplicate field `{name}`")));
            }
            let next = f
                .one_of(b",}", &format!("after a member of the {what}"))
                .map_err(|e| framing(e, shape))?;
            if next == b'}' {
                break;
            }
        }
    }
    if let Some(b) = f.peek().map_err(|e| framing(e, shape))? {
        return Err(shape(format!(
            "unexpected data after the {what}, starting with byte {b:#04x}"
        )));
    }
    Ok(())
}

/// Reads a member's value of at most [`MAX_SMALL_VALUE`] bytes as a `T`.
fn small_value<T: serde::de::DeserializeOwned, R: Read>(
    f: &mut Framer<R>,
    buf: &mut Vec<u8>,
    name: &str,
    shape: &dyn Fn(String) -> BundleError,
) -> Result<T, BundleError> {
    f.value(buf, MAX_SMALL_VALUE)
        .map_err(|e| framing(e, shape))?;
    serde_json::from_slice(buf).map_err(|e| shape(format!("{name}: {e}")))
}

/// Base64 characters decoded at a time: a multiple of 4, so blocks join without padding.
const DECODE_BLOCK: usize = 4 * 64 * 1024;

/// Decodes the `payload` string (standard base64) into an anonymous temporary file as it is
/// read; returns the file and the decoded length.
fn decode_payload<R: Read>(f: &mut Framer<R>) -> Result<(File, u64), BundleError> {
    let invalid = |reason: String| envelope(format!("payload is not standard base64: {reason}"));
    if f.peek()? != Some(b'"') {
        return Err(invalid("it is not a string".into()));
    }
    let mut out = BufWriter::with_capacity(256 * 1024, tempfile::tempfile()?);
    let mut pending: Vec<u8> = Vec::with_capacity(DECODE_BLOCK + 4096);
    let mut decoded = Vec::with_capacity(DECODE_BLOCK / 4 * 3);
    let mut written = 0u64;
    let (mut opened, mut escaped) = (false, false);
    let mut failure: Option<BundleError> = None;
    let mut flush = |pending: &mut Vec<u8>, all: bool| -> Result<(), BundleError> {
        let take = if all {
            pending.len()
        } else {
            pending.len() / 4 * 4
        };
        decoded.clear();
        STANDARD
            .decode_vec(pending.get(..take).unwrap_or_default(), &mut decoded)
            .map_err(|e| invalid(e.to_string()))?;
        out.write_all(&decoded)?;
        written += decoded.len() as u64;
        pending.drain(..take);
        Ok(())
    };
    f.value_chunks(&mut |chunk| {
        for &b in chunk {
            if !opened {
                opened = true;
            } else if escaped {
                escaped = false;
                if b != b'/' {
                    failure = Some(invalid(format!(
                        "it holds the escape \\{}, which no base64 character needs",
                        b as char
                    )));
                    return false;
                }
                pending.push(b'/');
            } else if b == b'\\' {
                escaped = true;
            } else if b != b'"' {
                pending.push(b);
            }
        }
        if pending.len() >= DECODE_BLOCK {
            if let Err(e) = flush(&mut pending, false) {
                failure = Some(e);
                return false;
            }
        }
        true
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    flush(&mut pending, true)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    Ok((file, written))
}

/// Where the members of a statement are in its file; `_type` and `predicateType` read.
struct StatementLayout {
    kind: String,
    predicate_type: String,
    predicate: (u64, u64),
    subject: (u64, u64),
}

impl StatementLayout {
    fn scan(file: &File, len: u64) -> Result<StatementLayout, BundleError> {
        let shape =
            |reason: String| envelope(format!("payload is not an in-toto statement: {reason}"));
        let (mut kind, mut predicate_type, mut predicate, mut subject) = (None, None, None, None);
        let mut buf = Vec::new();
        let mut f = Framer::new(FileRange::new(file, (0, len)));
        walk_object(&mut f, "statement", &shape, &mut |f, name| {
            let skip =
                |f: &mut Framer<FileRange<'_>>| f.skip_value().map_err(|e| framing(e, &shape));
            Ok(match name {
                "_type" => kind
                    .replace(small_value::<String, _>(f, &mut buf, name, &shape)?)
                    .is_none(),
                "predicateType" => predicate_type
                    .replace(small_value::<String, _>(f, &mut buf, name, &shape)?)
                    .is_none(),
                "predicate" => predicate.replace(skip(f)?).is_none(),
                "subject" => subject.replace(skip(f)?).is_none(),
                _ => {
                    skip(f)?;
                    true
                }
            })
        })?;
        let missing = |field: &str| shape(format!("missing field `{field}`"));
        Ok(StatementLayout {
            kind: kind.ok_or_else(|| missing("_type"))?,
            predicate_type: predicate_type.ok_or_else(|| missing("predicateType"))?,
            predicate: predicate.ok_or_else(|| missing("predicate"))?,
            subject: subject.ok_or_else(|| missing("subject"))?,
        })
    }
}

/// The verifier keys a bundle lists (its `keys` member), read from the predicate's bytes.
fn bundle_keys(file: &File, predicate: (u64, u64)) -> Result<Vec<VerifierKey>, BundleError> {
    let not_bundle = |reason: String| {
        envelope(format!(
            "the predicate is not a provledger bundle: {reason}"
        ))
    };
    let framing = |e: FrameError| match e {
        FrameError::Io(e) => BundleError::Io(e),
        FrameError::Syntax { offset, reason } => not_bundle(format!("at byte {offset}: {reason}")),
    };
    let mut f = Framer::new(FileRange::new(file, predicate));
    let mut buf = Vec::new();
    f.expect(b'{', "at the start of the bundle")
        .map_err(framing)?;
    loop {
        if f.peek().map_err(framing)? == Some(b'}') {
            return Err(not_bundle("it lists no keys".into()));
        }
        f.value(&mut buf, MAX_SMALL_VALUE).map_err(framing)?;
        let name: String = serde_json::from_slice(&buf)
            .map_err(|e| not_bundle(format!("a member name is not a string: {e}")))?;
        f.expect(b':', "after a member name").map_err(framing)?;
        if name == "keys" {
            f.value(&mut buf, MAX_SMALL_VALUE).map_err(framing)?;
            let keys: Vec<String> =
                serde_json::from_slice(&buf).map_err(|e| not_bundle(format!("keys: {e}")))?;
            return keys
                .iter()
                .enumerate()
                .map(|(position, k)| {
                    VerifierKey::parse(k).map_err(|source| BundleError::Key { position, source })
                })
                .collect();
        }
        f.skip_value().map_err(framing)?;
        f.one_of(b",}", "after a bundle member").map_err(framing)?;
    }
}

/// The statement's `subject` array must list the bundle's records, in order: each record's id
/// as `name` and the SHA-256 of its leaf bytes as `digest.sha256`.
fn check_subjects(
    file: &File,
    range: (u64, u64),
    leaves: &[(Hash, [u8; 32])],
) -> Result<(), BundleError> {
    let framing = |e: FrameError| match e {
        FrameError::Io(e) => BundleError::Io(e),
        FrameError::Syntax { offset, reason } => envelope(format!(
            "payload is not an in-toto statement: subject, at byte {offset}: {reason}"
        )),
    };
    let mut f = Framer::new(FileRange::new(file, range));
    let mut buf = Vec::new();
    f.expect(b'[', "to open subject").map_err(framing)?;
    let mut count = 0usize;
    if f.peek().map_err(framing)? == Some(b']') {
        f.expect(b']', "").map_err(framing)?;
    } else {
        loop {
            let position = count;
            let fail = |reason: String| BundleError::Subject { position, reason };
            f.value(&mut buf, MAX_SMALL_VALUE).map_err(framing)?;
            let subject: SubjectIn = serde_json::from_slice(&buf)
                .map_err(|e| fail(format!("not an in-toto subject: {e}")))?;
            let Some((id, digest)) = leaves.get(position) else {
                return Err(fail(format!(
                    "the statement has more subjects than the bundle's {} records",
                    leaves.len()
                )));
            };
            let id = id.to_hex();
            if subject.name != id {
                return Err(fail(format!(
                    "name is {:?} but the record at that position is {id}",
                    subject.name
                )));
            }
            let digest = hex::encode(digest);
            if subject.digest.sha256 != digest {
                return Err(fail(format!(
                    "digest.sha256 is {:?} but SHA-256 of record {id}'s leaf bytes is {digest}",
                    subject.digest.sha256
                )));
            }
            count += 1;
            if f.one_of(b",]", "after a subject").map_err(framing)? == b']' {
                break;
            }
        }
    }
    if count != leaves.len() {
        return Err(BundleError::Subject {
            position: count,
            reason: format!(
                "the statement has {count} subjects but the bundle {} records",
                leaves.len()
            ),
        });
    }
    Ok(())
}

/// Reads bytes `start..end` of a file with positioned reads (the file's cursor is not used).
struct FileRange<'a> {
    file: &'a File,
    at: u64,
    end: u64,
}

impl<'a> FileRange<'a> {
    fn new(file: &'a File, (start, end): (u64, u64)) -> FileRange<'a> {
        FileRange {
            file,
            at: start,
            end,
        }
    }
}

impl Read for FileRange<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let room = usize::try_from(self.end.saturating_sub(self.at)).unwrap_or(usize::MAX);
        let want = buf.len().min(room);
        let n = self
            .file
            .read_at(buf.get_mut(..want).unwrap_or_default(), self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

fn envelope(reason: String) -> BundleError {
    BundleError::Envelope(reason)
}

#[derive(Serialize)]
struct SignatureOut {
    keyid: String,
    sig: String,
}

#[derive(Serialize)]
struct SubjectOut {
    name: String,
    digest: DigestOut,
}

#[derive(Serialize)]
struct DigestOut {
    sha256: String,
}

#[derive(Deserialize)]
struct SignatureIn {
    sig: String,
}

#[derive(Deserialize)]
struct SubjectIn {
    name: String,
    digest: DigestIn,
}

#[derive(Deserialize)]
struct DigestIn {
    sha256: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // The example in the DSSE protocol document (protocol.md, "Test vectors").
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn base64_in_blocks_is_base64_of_the_whole() {
        let data: Vec<u8> = (0..BASE64_BLOCK * 2 + 7)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let mut file = tempfile::tempfile().expect("temporary file");
        file.write_all(&data).expect("write");
        let mut out = String::new();
        let mut block = String::new();
        read_chunks(&file, data.len() as u64, &mut |chunk| {
            block.clear();
            STANDARD.encode_string(chunk, &mut block);
            out.push_str(&block);
            Ok(())
        })
        .expect("read back");
        assert_eq!(out, STANDARD.encode(&data));
    }

    /// The payload is decoded in blocks as it is read: across block edges, with a JSON escape
    /// (`\/`) some writers put in strings, the result is the whole string's decoding.
    #[test]
    fn payloads_decode_in_blocks_into_the_statement_file() {
        let data: Vec<u8> = (0..DECODE_BLOCK + 12_345)
            .map(|i| (i * 131 % 251) as u8)
            .collect();
        let encoded = STANDARD.encode(&data).replace('/', "\\/");
        let text = format!(
            "{{\"signatures\": [], \"x\": {{\"nested\": [1, \"}}\"]}}, \"payload\": \"{encoded}\", \"payloadType\": \"t\"}}"
        );
        let env = read_envelope(text.as_bytes()).expect("an envelope");
        assert_eq!(env.payload_type, "t");
        assert_eq!(env.statement_len, data.len() as u64);
        let mut back = vec![0u8; data.len()];
        env.statement
            .read_exact_at(&mut back, 0)
            .expect("read back");
        assert_eq!(back, data);

        let refuse = |text: &str, why: &str| {
            let err = read_envelope(text.as_bytes()).err().expect("refused");
            assert!(err.to_string().contains(why), "{err}");
        };
        refuse(
            r#"{"payload": "YQ==", "payload": "YQ==", "payloadType": "t", "signatures": []}"#,
            "duplicate field `payload`",
        );
        refuse(
            r#"{"payload": "YQ\n==", "payloadType": "t", "signatures": []}"#,
            "no base64 character needs",
        );
        refuse(
            r#"{"payload": "YQ=", "payloadType": "t", "signatures": []}"#,
            "payload is not standard base64",
        );
        refuse(
            r#"{"payload": 12, "payloadType": "t", "signatures": []}"#,
            "it is not a string",
        );
        refuse(
            r#"{"payloadType": "t", "signatures": []}"#,
            "missing field `payload`",
        );
        refuse(
            r#"{"payload": "", "payloadType": "t", "signatures": []} x"#,
            "unexpected data after the envelope",
        );
    }

    #[test]
    fn envelopes_are_told_from_bundles_by_their_first_key() {
        assert!(looks_like_envelope(b" {\"payloadType\":\"x\"}"));
        assert!(looks_like_envelope(b"{\n  \"signatures\": []}"));
        assert!(!looks_like_envelope(b"{\"format\":\"provledger-bundle\""));
        assert!(!looks_like_envelope(b"[]"));
    }
}

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
//! verifier, [`verify_dsse`], holds the envelope in memory: check large exports as bundles.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Read, Seek as _, SeekFrom, Write};
use std::os::unix::fs::FileExt as _;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use provledger_ledger::Ledger;
use provledger_signer::{leaf_hash, SigningKey, VerifierKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{BundleError, ExportError};
use crate::export::{export_observed, ExportSummary, Scope};
use crate::verify::{verify_bundle, BundleReport, LaterCheckpoint};

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

/// Largest envelope [`verify_dsse`] reads.
const MAX_ENVELOPE_BYTES: u64 = 4 * 1024 * 1024 * 1024;

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
pub fn verify_dsse<R: Read>(
    reader: R,
    trusted: &[VerifierKey],
    later: Option<&LaterCheckpoint>,
) -> Result<BundleReport, BundleError> {
    let mut text = Vec::new();
    reader.take(MAX_ENVELOPE_BYTES + 1).read_to_end(&mut text)?;
    if text.len() as u64 > MAX_ENVELOPE_BYTES {
        return Err(envelope(format!(
            "it is larger than {MAX_ENVELOPE_BYTES} bytes"
        )));
    }
    let env: EnvelopeIn = serde_json::from_slice(&text).map_err(|e| {
        envelope(format!(
            "not {{payloadType, payload, signatures}} JSON: {e}"
        ))
    })?;
    drop(text);
    if env.payload_type != DSSE_PAYLOAD_TYPE {
        return Err(envelope(format!(
            "payloadType is {:?}, expected {DSSE_PAYLOAD_TYPE:?}",
            env.payload_type
        )));
    }
    let statement = STANDARD
        .decode(env.payload.as_bytes())
        .map_err(|e| envelope(format!("payload is not standard base64: {e}")))?;
    let st: StatementIn = serde_json::from_slice(&statement)
        .map_err(|e| envelope(format!("payload is not an in-toto statement: {e}")))?;
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
    let predicate = st.predicate.get().as_bytes();
    let inner: PredicateIn = serde_json::from_slice(predicate)
        .map_err(|e| envelope(format!("the predicate is not a provledger bundle: {e}")))?;

    // The signature first: nothing inside counts unless the log key signed it.
    let keys: Vec<VerifierKey> = if trusted.is_empty() {
        inner
            .keys
            .iter()
            .enumerate()
            .map(|(position, k)| {
                VerifierKey::parse(k).map_err(|source| BundleError::Key { position, source })
            })
            .collect::<Result<_, _>>()?
    } else {
        trusted.to_vec()
    };
    let message = pae(&env.payload_type, &statement);
    let signed = env.signatures.iter().any(|s| {
        let Ok(sig) = STANDARD.decode(s.sig.as_bytes()) else {
            return false;
        };
        let Ok(sig) = <[u8; 64]>::try_from(sig.as_slice()) else {
            return false;
        };
        keys.iter().any(|k| k.verify_raw(&message, &sig))
    });
    if !signed {
        let names: Vec<String> = keys.iter().map(ToString::to_string).collect();
        return Err(BundleError::EnvelopeSignature {
            keys: names.join(", "),
        });
    }

    let report = verify_bundle(predicate, trusted, later)?;

    if st.subject.len() != inner.records.len() {
        return Err(BundleError::Subject {
            position: st.subject.len().min(inner.records.len()),
            reason: format!(
                "the statement has {} subjects but the bundle {} records",
                st.subject.len(),
                inner.records.len()
            ),
        });
    }
    for (position, (subject, record)) in st.subject.iter().zip(&inner.records).enumerate() {
        let fail = |reason: String| BundleError::Subject { position, reason };
        let leaf = STANDARD
            .decode(record.leaf.as_bytes())
            .map_err(|_| fail("its record's leaf is not base64".into()))?;
        let id = leaf_hash(&leaf).to_hex();
        if subject.name != id {
            return Err(fail(format!(
                "name is {:?} but the record at that position is {id}",
                subject.name
            )));
        }
        let digest = hex::encode(Sha256::digest(&leaf));
        if subject.digest.sha256 != digest {
            return Err(fail(format!(
                "digest.sha256 is {:?} but SHA-256 of record {id}'s leaf bytes is {digest}",
                subject.digest.sha256
            )));
        }
    }
    Ok(report)
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
struct EnvelopeIn {
    #[serde(rename = "payloadType")]
    payload_type: String,
    payload: String,
    signatures: Vec<SignatureIn>,
}

#[derive(Deserialize)]
struct SignatureIn {
    sig: String,
}

#[derive(Deserialize)]
struct StatementIn<'a> {
    #[serde(rename = "_type")]
    kind: String,
    subject: Vec<SubjectIn>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
    #[serde(borrow)]
    predicate: &'a serde_json::value::RawValue,
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

/// The parts of a bundle the envelope needs: its keys and its records' leaves.
#[derive(Deserialize)]
struct PredicateIn<'a> {
    keys: Vec<String>,
    #[serde(borrow)]
    records: Vec<LeafIn<'a>>,
}

#[derive(Deserialize)]
struct LeafIn<'a> {
    #[serde(borrow)]
    leaf: Cow<'a, str>,
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

    #[test]
    fn envelopes_are_told_from_bundles_by_their_first_key() {
        assert!(looks_like_envelope(b" {\"payloadType\":\"x\"}"));
        assert!(looks_like_envelope(b"{\n  \"signatures\": []}"));
        assert!(!looks_like_envelope(b"{\"format\":\"provledger-bundle\""));
        assert!(!looks_like_envelope(b"[]"));
    }
}

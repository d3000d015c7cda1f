//! Receipts as JSON. [`ReceiptJson`] is the shape, serialized by serde where a receipt is part
//! of a larger answer; [`body`] writes the answer of an append straight into one buffer, byte
//! for byte what serde would write (a property test holds the two together).
//!
//! `body` exists for speed: a batch of 500 receipts is ~600 kB of JSON, and serde spent most of
//! the HTTP workers' time scanning base64 and hex (which never need escaping) for characters to
//! escape, escaping the same checkpoint note once per receipt, and allocating a `String` per
//! hash. Here the note is escaped once per distinct note, base64 and hex are encoded in place,
//! and a proof hash the previous receipt has at the same position is copied from its text.

use actix_web::http::header::ContentType;
use actix_web::HttpResponse;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use provledger_ledger::Receipt;
use provledger_signer::Hash;
use serde::Serialize;

/// A receipt as JSON: hex id, base64 leaf and hashes.
#[derive(Serialize)]
pub struct ReceiptJson {
    id: String,
    index: u64,
    leaf: String,
    tree_size: u64,
    inclusion_proof: Vec<String>,
    checkpoint: String,
}

impl From<Receipt> for ReceiptJson {
    fn from(r: Receipt) -> Self {
        ReceiptJson {
            id: r.id.to_hex(),
            index: r.index,
            leaf: B64.encode(&r.leaf),
            tree_size: r.tree_size,
            inclusion_proof: r.inclusion_proof.iter().map(Hash::to_base64).collect(),
            checkpoint: r.checkpoint,
        }
    }
}

/// The `200` answer of an append: one receipt object when `single`, else an array of them.
pub(crate) fn response(receipts: &[Receipt], single: bool) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(body(receipts, single))
}

/// The JSON text of [`response`], as UTF-8 bytes.
pub(crate) fn body(receipts: &[Receipt], single: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(receipts.iter().map(room).sum::<usize>() + 2);
    let mut proof = ProofText::default();
    if single {
        if let Some(r) = receipts.first() {
            write(
                &mut out,
                r,
                json_string(&r.checkpoint).as_bytes(),
                &mut proof,
            );
            return out;
        }
    }
    // Receipts of one append share their checkpoint, so the note is escaped once, not per receipt.
    let mut note: (Option<&str>, String) = (None, String::new());
    out.push(b'[');
    for (i, r) in receipts.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if note.0 != Some(r.checkpoint.as_str()) {
            note = (Some(&r.checkpoint), json_string(&r.checkpoint));
        }
        write(&mut out, r, note.1.as_bytes(), &mut proof);
    }
    out.push(b']');
    out
}

/// Bytes that one receipt of [`body`] takes at most, for a note that escapes no more than one
/// character in 16 (a checkpoint note escapes only its ~6 newlines). Reserving less made the
/// buffer of a 500-receipt answer grow, and copy ~600 kB, once per request.
fn room(r: &Receipt) -> usize {
    // Field names, punctuation and the separating comma (79), two u64s, the hex id.
    const FIXED: usize = 79 + 2 * 20 + 64;
    let proof = r.inclusion_proof.len() * (HASH_B64 + 3);
    let note = r.checkpoint.len() + r.checkpoint.len() / 16 + 2;
    FIXED + r.leaf.len().div_ceil(3) * 4 + proof + note
}

/// A string as a JSON string literal, escaped as serde_json escapes it.
fn json_string(s: &str) -> String {
    // Serializing a `&str` cannot fail; the fallback keeps the answer valid JSON regardless.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// Length of a 32-byte hash in padded standard base64.
const HASH_B64: usize = 44;

/// The previous receipt's proof hashes with their base64 text. Receipts of one append are in
/// index order, and neighbours' proofs differ only below the level where their paths join: a
/// hash equal to the one at the same position of the previous proof is copied, not encoded
/// again (of the ~20 hashes of each proof in a batch of 500, one or two are new).
#[derive(Default)]
struct ProofText {
    hashes: Vec<(Hash, [u8; HASH_B64])>,
}

impl ProofText {
    /// Appends `proof` as the elements of a JSON array of base64 strings.
    fn write(&mut self, out: &mut Vec<u8>, proof: &[Hash]) {
        self.hashes.truncate(proof.len());
        for (i, h) in proof.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'"');
            match self.hashes.get_mut(i) {
                Some((prev, text)) if prev == h => out.extend_from_slice(text),
                slot => {
                    let mut text = [0u8; HASH_B64];
                    // 32 bytes always encode to 44; the fallback cannot be reached.
                    let n = B64.encode_slice(h.as_bytes(), &mut text).unwrap_or(0);
                    out.extend_from_slice(&text[..n]);
                    match slot {
                        Some(s) => *s = (*h, text),
                        None => self.hashes.push((*h, text)),
                    }
                }
            }
            out.push(b'"');
        }
    }
}

/// Appends the standard base64 of `bytes`, encoded in place.
fn push_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    out.resize(
        start + base64::encoded_len(bytes.len(), true).unwrap_or(0),
        0,
    );
    // The buffer was sized by `encoded_len`; should that ever disagree, the text is cut there.
    let n = B64.encode_slice(bytes, &mut out[start..]).unwrap_or(0);
    out.truncate(start + n);
}

/// One receipt object, fields in [`ReceiptJson`]'s order. Hex and standard base64 hold no
/// character JSON escapes, so they go in between quotes as they are.
fn write(out: &mut Vec<u8>, r: &Receipt, checkpoint_json: &[u8], proof: &mut ProofText) {
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(b"{\"id\":\"");
    out.extend_from_slice(r.id.hex().as_bytes());
    out.extend_from_slice(b"\",\"index\":");
    out.extend_from_slice(num.format(r.index).as_bytes());
    out.extend_from_slice(b",\"leaf\":\"");
    push_base64(out, &r.leaf);
    out.extend_from_slice(b"\",\"tree_size\":");
    out.extend_from_slice(num.format(r.tree_size).as_bytes());
    out.extend_from_slice(b",\"inclusion_proof\":[");
    proof.write(out, &r.inclusion_proof);
    out.extend_from_slice(b"],\"checkpoint\":");
    out.extend_from_slice(checkpoint_json);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn receipt() -> impl Strategy<Value = Receipt> {
        (
            any::<[u8; 32]>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..300),
            any::<u64>(),
            proptest::collection::vec(any::<[u8; 32]>(), 0..24),
            // Any text: control characters, quotes, backslashes, non-ASCII.
            any::<String>(),
        )
            .prop_map(|(id, index, leaf, tree_size, proof, checkpoint)| Receipt {
                id: Hash(id),
                index,
                leaf,
                tree_size,
                inclusion_proof: proof.into_iter().map(Hash).collect(),
                checkpoint,
            })
    }

    fn text(receipts: &[Receipt], single: bool) -> String {
        String::from_utf8(body(receipts, single)).unwrap_or_else(|e| panic!("not UTF-8: {e}"))
    }

    fn by_serde(receipts: &[Receipt], single: bool) -> String {
        let json: Vec<ReceiptJson> = receipts.iter().cloned().map(ReceiptJson::from).collect();
        let text = if single {
            serde_json::to_string(&json[0])
        } else {
            serde_json::to_string(&json)
        };
        text.unwrap_or_else(|e| panic!("serde: {e}"))
    }

    proptest! {
        #[test]
        fn the_body_is_what_serde_writes(
            mut receipts in proptest::collection::vec(receipt(), 1..6),
            shared in any::<bool>(),
            overlap in any::<bool>(),
            single in any::<bool>(),
        ) {
            // Receipts of one append share their note; those of several batches do not.
            if shared {
                let note = receipts[0].checkpoint.clone();
                for r in &mut receipts {
                    r.checkpoint = note.clone();
                }
            }
            // Neighbours in one append share the upper part of their proofs: every other
            // position copied from the previous receipt, so text is reused and replaced.
            if overlap {
                for k in 1..receipts.len() {
                    let prev = receipts[k - 1].inclusion_proof.clone();
                    for (j, h) in receipts[k].inclusion_proof.iter_mut().enumerate() {
                        if (j + k) % 2 == 0 {
                            if let Some(p) = prev.get(j) {
                                *h = *p;
                            }
                        }
                    }
                }
            }
            prop_assert_eq!(text(&receipts, single), by_serde(&receipts, single));
        }
    }

    #[test]
    fn an_answer_fits_in_the_room_reserved_for_it() {
        // A checkpoint note as the server signs it: three lines, a blank one, two signatures.
        let note = "provledger.example/log\n10000000\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\
                    — provledger.example/log AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n\
                    — witness.example AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n";
        let receipts: Vec<Receipt> = (0..500u64)
            .map(|i| Receipt {
                id: Hash([9; 32]),
                index: u64::MAX - i,
                leaf: vec![0xa5; 299 + (i as usize % 3)],
                tree_size: u64::MAX,
                // Distinct hashes: none is copied from the previous receipt's text.
                inclusion_proof: (0..24u8).map(|j| Hash([j ^ i as u8; 32])).collect(),
                checkpoint: note.to_owned(),
            })
            .collect();
        for (batch, single) in [(&receipts[..], false), (&receipts[..1], true)] {
            let reserved = batch.iter().map(room).sum::<usize>() + 2;
            let out = body(batch, single);
            assert!(out.len() <= reserved, "{} > {reserved}", out.len());
            // Not wastefully more either: within a tenth.
            assert!(
                reserved - out.len() < out.len() / 10,
                "{reserved} for {}",
                out.len()
            );
        }
    }

    #[test]
    fn a_note_that_changes_midway_is_escaped_again() {
        let mut a = Receipt {
            id: Hash([7; 32]),
            index: 3,
            leaf: vec![1, 2, 3],
            tree_size: 5,
            inclusion_proof: vec![Hash([1; 32])],
            checkpoint: "log\n5\nroot=\n\n— sig\n".to_owned(),
        };
        let b = Receipt {
            checkpoint: "log\n6\n\"quoted\"\n".to_owned(),
            ..a.clone()
        };
        let json = text(&[a.clone(), b.clone(), a.clone()], false);
        assert_eq!(json, by_serde(&[a.clone(), b, a.clone()], false));
        let parsed: serde_json::Value =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed[1]["checkpoint"], "log\n6\n\"quoted\"\n");
        a.inclusion_proof.clear();
        assert!(text(&[a], true).contains("\"inclusion_proof\":[],"));
    }
}

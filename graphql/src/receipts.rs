//! Receipts as JSON. [`ReceiptJson`] is the shape, serialized by serde where a receipt is part
//! of a larger answer; [`body`] writes the answer of an append straight into one buffer, byte
//! for byte what serde would write (a property test holds the two together).
//!
//! `body` exists for speed: a batch of 500 receipts is ~600 kB of JSON, and serde spent most of
//! the HTTP workers' time scanning base64 and hex (which never need escaping) for characters to
//! escape, escaping the same checkpoint note once per receipt, and allocating a `String` per
//! hash. Here the note is escaped once per distinct note, and base64 and hex are encoded in place.

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

/// The JSON text of [`response`].
pub(crate) fn body(receipts: &[Receipt], single: bool) -> String {
    // ~64 bytes of names and numbers, the hex id, the base64 leaf and hashes, the note.
    let estimate = |r: &Receipt| {
        64 + 64 + r.leaf.len() * 4 / 3 + r.inclusion_proof.len() * 47 + r.checkpoint.len() + 16
    };
    let mut out = String::with_capacity(receipts.iter().map(estimate).sum::<usize>() + 2);
    if single {
        if let Some(r) = receipts.first() {
            write(&mut out, r, &json_string(&r.checkpoint));
            return out;
        }
    }
    // Receipts of one append share their checkpoint, so the note is escaped once, not per receipt.
    let mut note: (Option<&str>, String) = (None, String::new());
    out.push('[');
    for (i, r) in receipts.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if note.0 != Some(r.checkpoint.as_str()) {
            note = (Some(&r.checkpoint), json_string(&r.checkpoint));
        }
        write(&mut out, r, &note.1);
    }
    out.push(']');
    out
}

/// A string as a JSON string literal, escaped as serde_json escapes it.
fn json_string(s: &str) -> String {
    // Serializing a `&str` cannot fail; the fallback keeps the answer valid JSON regardless.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// One receipt object, fields in [`ReceiptJson`]'s order. Hex and standard base64 hold no
/// character JSON escapes, so they go in between quotes as they are.
fn write(out: &mut String, r: &Receipt, checkpoint_json: &str) {
    let mut num = itoa::Buffer::new();
    out.push_str("{\"id\":\"");
    out.push_str(&r.id.hex());
    out.push_str("\",\"index\":");
    out.push_str(num.format(r.index));
    out.push_str(",\"leaf\":\"");
    B64.encode_string(&r.leaf, out);
    out.push_str("\",\"tree_size\":");
    out.push_str(num.format(r.tree_size));
    out.push_str(",\"inclusion_proof\":[");
    for (i, h) in r.inclusion_proof.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        B64.encode_string(h.as_bytes(), out);
        out.push('"');
    }
    out.push_str("],\"checkpoint\":");
    out.push_str(checkpoint_json);
    out.push('}');
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
            single in any::<bool>(),
        ) {
            // Receipts of one append share their note; those of several batches do not.
            if shared {
                let note = receipts[0].checkpoint.clone();
                for r in &mut receipts {
                    r.checkpoint = note.clone();
                }
            }
            prop_assert_eq!(body(&receipts, single), by_serde(&receipts, single));
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
        let text = body(&[a.clone(), b.clone(), a.clone()], false);
        assert_eq!(text, by_serde(&[a.clone(), b, a.clone()], false));
        let parsed: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed[1]["checkpoint"], "log\n6\n\"quoted\"\n");
        a.inclusion_proof.clear();
        assert!(body(&[a], true).contains("\"inclusion_proof\":[],"));
    }
}

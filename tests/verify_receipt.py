#!/usr/bin/env python3
"""Verify a provledger receipt with code that shares nothing with provledger.

Usage: verify_receipt.py RECEIPT_JSON_FILE VERIFIER_KEY

Checks, from the public specs only:
  * the C2SP verifier key: <name>+<key hash, 8 hex>+<base64(0x01 || Ed25519 public key)>,
    key hash = SHA-256(name || "\\n" || 0x01 || public key)[:4];
  * the C2SP signed note: a signature line by that key whose Ed25519 signature covers the
    note body (the checkpoint lines with their newlines);
  * the C2SP tlog-checkpoint body: origin (= the key name), tree size (= the receipt's
    tree_size), root hash;
  * the receipt id = hex(SHA-256(0x00 || leaf));
  * the RFC 9162 section 2.1.3.2 inclusion proof from that leaf to the checkpoint's root.

Prints "OK" and exits 0, or prints "FAIL: <reason>" and exits 1. Exits 2 when the
`cryptography` package is missing.
"""

import base64
import binascii
import hashlib
import json
import sys

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"ERROR: the Python package 'cryptography' is required ({e})")
    sys.exit(2)


class Fail(Exception):
    pass


def b64(s):
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as e:
        raise Fail(f"{s!r} is not standard base64: {e}")


def sha256(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


def parse_vkey(vkey):
    # The name holds no "+", the key hash is hex; the base64 key may hold "+".
    parts = vkey.strip().split("+", 2)
    if len(parts) != 3:
        raise Fail("verifier key must be <name>+<hash>+<key>")
    name, key_hash_hex, key_b64 = parts
    raw = b64(key_b64)
    if len(raw) != 33 or raw[0] != 0x01:
        raise Fail("verifier key is not an Ed25519 key (0x01 || 32 bytes)")
    want = sha256(name.encode(), b"\n", raw)[:4]
    if len(key_hash_hex) != 8 or bytes.fromhex(key_hash_hex) != want:
        raise Fail("verifier key hash does not match its name and key")
    return name, want, Ed25519PublicKey.from_public_bytes(raw[1:])


def verify_note(text, name, key_hash, public_key):
    """Returns the verified body lines."""
    sep = text.find("\n\n")
    if sep < 0:
        raise Fail("checkpoint is not a signed note (no blank line)")
    body = text[: sep + 1]
    sigs = text[sep + 2 :]
    if not sigs.endswith("\n"):
        raise Fail("signature lines must end in a newline")
    verified = False
    for line in sigs[:-1].split("\n"):
        if not line.startswith("\u2014 "):
            raise Fail(f"malformed signature line {line!r}")
        sig_name, _, sig_b64 = line[2:].rpartition(" ")
        raw = b64(sig_b64)
        if sig_name != name or raw[:4] != key_hash:
            continue  # another signer (witness, rotated key)
        try:
            public_key.verify(raw[4:], body.encode())
        except InvalidSignature:
            raise Fail("checkpoint signature does not verify over the note body")
        verified = True
    if not verified:
        raise Fail("no signature line by the verifier key")
    lines = body[:-1].split("\n")
    if len(lines) < 3:
        raise Fail("checkpoint body has fewer than 3 lines")
    return lines


def node(left, right):
    return sha256(b"\x01", left, right)


def verify_inclusion(leaf_hash, index, size, proof, root):
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def check(receipt, vkey):
    name, key_hash, public_key = parse_vkey(vkey)
    lines = verify_note(receipt["checkpoint"], name, key_hash, public_key)
    origin, size_line, root_b64 = lines[0], lines[1], lines[2]
    if origin != name:
        raise Fail(f"checkpoint origin {origin!r} is not the key name {name!r}")
    if not size_line.isdigit() or (size_line != "0" and size_line.startswith("0")):
        raise Fail(f"tree size {size_line!r} is not a canonical decimal")
    size = int(size_line)
    root = b64(root_b64)
    if len(root) != 32:
        raise Fail("root hash is not 32 bytes")
    if receipt["tree_size"] != size:
        raise Fail("receipt tree_size differs from the checkpoint's")
    leaf = b64(receipt["leaf"])
    leaf_hash = sha256(b"\x00", leaf)
    if receipt["id"] != leaf_hash.hex():
        raise Fail("receipt id is not SHA-256(0x00 || leaf)")
    proof = [b64(h) for h in receipt["inclusion_proof"]]
    if any(len(h) != 32 for h in proof):
        raise Fail("a proof hash is not 32 bytes")
    if not verify_inclusion(leaf_hash, receipt["index"], size, proof, root):
        raise Fail("inclusion proof does not lead to the checkpoint root")


def main(argv):
    if len(argv) != 3:
        print(__doc__)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        receipt = json.load(f)
    try:
        check(receipt, argv[2])
    except (Fail, KeyError, TypeError, ValueError) as e:
        print(f"FAIL: {e}")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

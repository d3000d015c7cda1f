//! The tree hash value and its text encodings (hex for people, base64 for C2SP formats).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use subtle::ConstantTimeEq as _;

/// A SHA-256 tree hash: a leaf hash, an interior node or a tree root.
///
/// `Display` prints lowercase hex. Checkpoints and proofs on the wire use
/// [`Hash::to_base64`]. Compare a root you were given with one you computed
/// using [`Hash::ct_eq`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

/// A hash in lowercase hex, from [`Hash::hex`].
#[derive(Clone, Copy)]
pub struct HexBuf([u8; 64]);

impl std::ops::Deref for HexBuf {
    type Target = str;

    fn deref(&self) -> &str {
        // Hex digits are ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl Hash {
    /// Copies a hash out of a slice that must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Hash, EncodingError> {
        <[u8; 32]>::try_from(bytes)
            .map(Hash)
            .map_err(|_| EncodingError::WrongLength {
                actual: bytes.len(),
            })
    }

    /// Parses standard base64 with padding (RFC 4648 §4), as used in checkpoints.
    pub fn from_base64(s: &str) -> Result<Hash, EncodingError> {
        let bytes = STANDARD
            .decode(s)
            .map_err(|_| EncodingError::InvalidBase64)?;
        Hash::from_slice(&bytes)
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(s: &str) -> Result<Hash, EncodingError> {
        if !s.len().is_multiple_of(2) {
            return Err(EncodingError::InvalidHex);
        }
        let bytes = s
            .as_bytes()
            .chunks_exact(2)
            .map(|pair| match pair {
                [hi, lo] => Some((nibble(*hi)? << 4) | nibble(*lo)?),
                _ => None,
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or(EncodingError::InvalidHex)?;
        Hash::from_slice(&bytes)
    }

    /// Standard base64 with padding, the encoding of checkpoints and proofs.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Lowercase hex, the same as `Display`.
    pub fn to_hex(&self) -> String {
        (*self.hex()).to_owned()
    }

    /// Lowercase hex in a buffer on the stack (`hex::encode` builds its `String` a `char` at a
    /// time; receipts write one id each).
    pub fn hex(&self) -> HexBuf {
        let mut out = [0u8; 64];
        // 32 bytes always fit 64 hex digits.
        let _ = hex::encode_to_slice(self.0, &mut out);
        HexBuf(out)
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Compares in constant time; use it for roots and proofs received from elsewhere.
    pub fn ct_eq(&self, other: &Hash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A hash given as text or bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodingError {
    /// Not standard base64 with padding.
    #[error("hash is not standard base64 with padding (RFC 4648 section 4)")]
    InvalidBase64,
    /// Not hex digits.
    #[error("hash is not hex: expected 64 hex digits")]
    InvalidHex,
    /// Decoded fine, but not to 32 bytes.
    #[error("hash is {actual} bytes long; a SHA-256 hash is 32 bytes")]
    WrongLength {
        /// The length that was decoded.
        actual: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_round_trip() {
        let hash = Hash(core::array::from_fn(|i| i as u8 * 7));
        assert_eq!(Hash::from_hex(&hash.to_hex()), Ok(hash));
        assert_eq!(Hash::from_hex(&hash.to_hex().to_uppercase()), Ok(hash));
        assert_eq!(Hash::from_base64(&hash.to_base64()), Ok(hash));
        assert_eq!(hash.to_string(), hash.to_hex());
        assert_eq!(hash.to_hex().len(), 64);
        assert!(hash.ct_eq(&hash));
        assert!(!hash.ct_eq(&Hash([0; 32])));
    }

    proptest::proptest! {
        /// The stack buffer, `to_hex` and `Display` all write what `hex::encode` writes.
        #[test]
        fn hex_is_lowercase_hex_of_the_bytes(bytes in proptest::array::uniform32(proptest::num::u8::ANY)) {
            let hash = Hash(bytes);
            let want = hex::encode(bytes);
            proptest::prop_assert_eq!(&*hash.hex(), want.as_str());
            proptest::prop_assert_eq!(hash.to_hex(), want.clone());
            proptest::prop_assert_eq!(hash.to_string(), want);
        }
    }

    #[test]
    fn rejects_bad_text() {
        assert_eq!(Hash::from_hex("abc"), Err(EncodingError::InvalidHex));
        assert_eq!(
            Hash::from_hex(&"zz".repeat(32)),
            Err(EncodingError::InvalidHex)
        );
        assert_eq!(
            Hash::from_hex("abcd"),
            Err(EncodingError::WrongLength { actual: 2 })
        );
        // Missing padding, and 33 bytes.
        assert_eq!(
            Hash::from_base64("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"),
            Err(EncodingError::InvalidBase64)
        );
        assert_eq!(
            Hash::from_base64(&STANDARD.encode([0u8; 33])),
            Err(EncodingError::WrongLength { actual: 33 })
        );
    }
}

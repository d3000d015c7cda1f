//! The log's signing keys over time: which key signs now, which signed before, and the signed
//! rotation statements that chain them.
//!
//! `<data-dir>/keys.json` lists every verifier key the log has used, oldest first; the last
//! entry is the current key. A rotation is a C2SP signed note signed by **both** the outgoing
//! and the incoming key:
//!
//! ```text
//! provledger key rotation
//! <origin>
//! <tree size at rotation>
//! <old verifier key>
//! <new verifier key>
//!
//! — <origin> <old key's signature>
//! — <origin> <new key's signature>
//! ```
//!
//! so whoever trusts either key can come to trust the other ([`KeyRing::trusted_from`]): an
//! auditor holding last year's key follows the chain forward; one holding today's key follows
//! it back to verify old checkpoints. The file itself is not trusted: a key enters the trusted
//! set only through such a statement.
//!
//! Private keys are not here: the current one is the key file (`signing.key`); an outgoing key is
//! deleted once the rotation is durable. [`finish_interrupted_rotation`] completes a rotation
//! that a crash cut short, so the key file and this list never disagree for long.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use provledger_signer::{open_note, SigningKey, VerifierKey};
use serde::{Deserialize, Serialize};

use crate::LedgerError;

/// File name of the key list inside a data directory.
pub const KEYS_FILE: &str = "keys.json";
const FORMAT: &str = "provledger-keys/v1";
const ROTATION_HEADER: &str = "provledger key rotation";

/// One verifier key of the log and when it signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// The verifier key (C2SP vkey: `<name>+<hash>+<base64>`).
    pub vkey: String,
    /// The first tree size it signed (or may sign).
    pub first_size: u64,
    /// The last tree size it signed, once rotated out; `None` for the current key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_size: Option<u64>,
    /// When it was added, ms since the Unix epoch.
    pub created: u64,
    /// When it was retired (no longer published in `GET /v1/key`), ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<u64>,
    /// The rotation statement that introduced it (none for the log's first key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    format: String,
    keys: Vec<KeyEntry>,
}

/// The keys of one data directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRing {
    keys: Vec<KeyEntry>,
}

impl KeyRing {
    /// Reads `<data-dir>/keys.json`; a missing file is an empty ring.
    pub fn load(data_dir: &Path) -> Result<KeyRing, LedgerError> {
        let path = data_dir.join(KEYS_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(KeyRing::default()),
            Err(e) => return Err(e.into()),
        };
        let corrupt = |why: String| LedgerError::Corrupt(format!("{}: {why}", path.display()));
        let file: KeysFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if file.format != FORMAT {
            return Err(corrupt(format!(
                "format {:?} is not {FORMAT:?}",
                file.format
            )));
        }
        for k in &file.keys {
            VerifierKey::parse(&k.vkey).map_err(|e| corrupt(format!("key {:?}: {e}", k.vkey)))?;
        }
        Ok(KeyRing { keys: file.keys })
    }

    /// Writes the ring durably (temporary file, fsync, rename, directory fsync).
    pub fn save(&self, data_dir: &Path) -> Result<(), LedgerError> {
        let file = KeysFile {
            format: FORMAT.to_owned(),
            keys: self.keys.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file)
            .map_err(|e| LedgerError::Corrupt(format!("cannot encode the key list: {e}")))?;
        crate::access::write_private_atomically(&data_dir.join(KEYS_FILE), &bytes)?;
        Ok(())
    }

    /// A ring holding only `key`, the log's first key.
    pub fn first(key: &VerifierKey) -> KeyRing {
        KeyRing {
            keys: vec![KeyEntry {
                vkey: key.to_string(),
                first_size: 0,
                last_size: None,
                created: now_ms(),
                retired: None,
                rotation: None,
            }],
        }
    }

    /// Every key, oldest first (the current one last).
    pub fn entries(&self) -> &[KeyEntry] {
        &self.keys
    }

    /// The current key's entry.
    pub fn current(&self) -> Option<&KeyEntry> {
        self.keys.last()
    }

    /// Whether `key` is the current key.
    pub fn is_current(&self, key: &VerifierKey) -> bool {
        self.current().is_some_and(|c| c.vkey == key.to_string())
    }

    /// The keys that `anchors` vouch for: the anchors, plus every key joined to a trusted key
    /// by a rotation statement that both keys signed.
    pub fn trusted_from(&self, anchors: &[VerifierKey]) -> Vec<VerifierKey> {
        let mut trusted = anchors.to_vec();
        let statements: Vec<(VerifierKey, VerifierKey)> = self
            .keys
            .iter()
            .filter_map(|k| k.rotation.as_deref())
            .filter_map(parse_rotation)
            .collect();
        loop {
            let mut grew = false;
            for (old, new) in &statements {
                let knows_old = trusted.contains(old);
                let knows_new = trusted.contains(new);
                if knows_old != knows_new {
                    trusted.push(if knows_old { new.clone() } else { old.clone() });
                    grew = true;
                }
            }
            if !grew {
                return trusted;
            }
        }
    }

    /// Makes `new` the current key from tree size `size` on, with a rotation statement
    /// signed by `old` (the current key) and `new`. The caller saves the ring.
    pub fn rotate(
        &mut self,
        old: &SigningKey,
        new: &SigningKey,
        size: u64,
    ) -> Result<(), LedgerError> {
        if !self.is_current(&old.verifier()) {
            return Err(LedgerError::KeyRotation(
                "the outgoing key is not the log's current key".into(),
            ));
        }
        if new.name() != old.name() {
            return Err(LedgerError::KeyRotation(format!(
                "the new key is named {:?}, the log's origin is {:?}: a log keeps its origin",
                new.name(),
                old.name()
            )));
        }
        if self
            .keys
            .iter()
            .any(|k| k.vkey == new.verifier().to_string())
        {
            return Err(LedgerError::KeyRotation(
                "the new key was used by this log before".into(),
            ));
        }
        let body = format!(
            "{ROTATION_HEADER}\n{}\n{size}\n{}\n{}\n",
            old.name(),
            old.verifier(),
            new.verifier()
        );
        let signing = |k: &SigningKey| {
            k.sign_note(&body)
                .map_err(|e| LedgerError::Signing(e.to_string()))
        };
        let by_old = signing(old)?;
        let by_new = signing(new)?;
        // Both notes share the body; the statement carries both signature lines.
        let new_line = by_new.get(body.len() + 1..).unwrap_or_default();
        let statement = format!("{by_old}{new_line}");
        if let Some(current) = self.keys.last_mut() {
            current.last_size = Some(size);
        }
        self.keys.push(KeyEntry {
            vkey: new.verifier().to_string(),
            first_size: size,
            last_size: None,
            created: now_ms(),
            retired: None,
            rotation: Some(statement),
        });
        Ok(())
    }

    /// Retires a key that no longer signs: it stays in the list (old checkpoints name it) but
    /// is no longer published as a verifier key. `which` is the vkey or its 8-hex-digit hash.
    pub fn retire(&mut self, which: &str) -> Result<KeyEntry, LedgerError> {
        let last = self.keys.len().saturating_sub(1);
        let Some((i, entry)) = self
            .keys
            .iter_mut()
            .enumerate()
            .find(|(_, k)| k.vkey == which || key_hash(&k.vkey) == Some(which))
        else {
            return Err(LedgerError::KeyRotation(format!(
                "no key of this log is {which:?}"
            )));
        };
        if i == last {
            return Err(LedgerError::KeyRotation(
                "the current key cannot be retired; rotate first".into(),
            ));
        }
        entry.retired.get_or_insert_with(now_ms);
        Ok(entry.clone())
    }
}

/// Retires a key of a data directory that no server is using (takes its lock).
pub fn retire_offline(data_dir: &Path, which: &str) -> Result<KeyEntry, LedgerError> {
    let _lock = crate::store::lock_data_dir(data_dir)?;
    let mut ring = KeyRing::load(data_dir)?;
    let retired = ring.retire(which)?;
    ring.save(data_dir)?;
    Ok(retired)
}

/// The 8 hex digits of key hash in a vkey (`name+hash+key`).
pub fn key_hash(vkey: &str) -> Option<&str> {
    vkey.split('+').nth(1)
}

/// The keys of a rotation statement that both of them signed.
fn parse_rotation(text: &str) -> Option<(VerifierKey, VerifierKey)> {
    let body = text.get(..text.find("\n\n")? + 1)?;
    let mut lines = body.lines();
    if lines.next()? != ROTATION_HEADER {
        return None;
    }
    let (_origin, _size) = (lines.next()?, lines.next()?);
    let old = VerifierKey::parse(lines.next()?).ok()?;
    let new = VerifierKey::parse(lines.next()?).ok()?;
    let (_, signers) = open_note(text, &[old.clone(), new.clone()]).ok()?;
    (signers.contains(&old) && signers.contains(&new)).then_some((old, new))
}

/// The path a rotation writes the incoming private key to before it is made current.
pub fn pending_key_path(key_file: &Path) -> PathBuf {
    let mut name = key_file.file_name().unwrap_or_default().to_owned();
    name.push(".next");
    key_file.with_file_name(name)
}

/// Completes or undoes a rotation that a crash interrupted, before the key is loaded: a
/// pending key the ring already names as current replaces the key file; one it does not
/// name is discarded (the rotation never happened).
pub fn finish_interrupted_rotation(data_dir: &Path, key_file: &Path) -> Result<(), LedgerError> {
    let pending = pending_key_path(key_file);
    if !pending.exists() {
        return Ok(());
    }
    let key = SigningKey::load(&pending)
        .map_err(|e| LedgerError::Corrupt(format!("{}: {e}", pending.display())))?;
    if KeyRing::load(data_dir)?.is_current(&key.verifier()) {
        std::fs::rename(&pending, key_file)?;
        tracing::warn!(key = %key.verifier(), "completed a key rotation interrupted by a crash");
    } else {
        std::fs::remove_file(&pending)?;
        tracing::warn!("discarded the key of a rotation interrupted before it took effect");
    }
    if let Some(dir) = key_file.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::generate("example.com/log").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn trust_flows_both_ways_along_signed_rotations_only() -> Result<(), LedgerError> {
        let (a, b, c) = (key(), key(), key());
        let mut ring = KeyRing::first(&a.verifier());
        ring.rotate(&a, &b, 10)?;
        ring.rotate(&b, &c, 25)?;
        let all = vec![a.verifier(), b.verifier(), c.verifier()];
        let mut from_c = ring.trusted_from(&[c.verifier()]);
        let mut from_a = ring.trusted_from(&[a.verifier()]);
        for v in [&mut from_c, &mut from_a] {
            v.sort_by_key(|k| k.to_string());
        }
        let mut sorted = all.clone();
        sorted.sort_by_key(|k| k.to_string());
        assert_eq!(from_c, sorted);
        assert_eq!(from_a, sorted);
        assert_eq!(ring.entries()[0].last_size, Some(10));
        assert_eq!(ring.entries()[1].first_size, 10);
        assert_eq!(ring.entries()[1].last_size, Some(25));
        assert!(ring.is_current(&c.verifier()));

        // A key slipped into the file without a statement both keys signed is not trusted.
        let intruder = key();
        let mut forged = ring.clone();
        forged.keys.push(KeyEntry {
            vkey: intruder.verifier().to_string(),
            first_size: 30,
            last_size: None,
            created: 0,
            retired: None,
            rotation: Some(
                intruder
                    .sign_note(&format!(
                        "{ROTATION_HEADER}\nexample.com/log\n30\n{}\n{}\n",
                        c.verifier(),
                        intruder.verifier()
                    ))
                    .map_err(|e| LedgerError::Signing(e.to_string()))?,
            ),
        });
        assert!(!forged
            .trusted_from(&[c.verifier()])
            .contains(&intruder.verifier()));
        Ok(())
    }

    #[test]
    fn rotations_are_refused_when_they_would_break_the_chain() -> Result<(), LedgerError> {
        let (a, b) = (key(), key());
        let mut ring = KeyRing::first(&a.verifier());
        assert!(ring.rotate(&b, &a, 1).is_err(), "b is not current");
        let renamed = SigningKey::generate("other.example/log").unwrap_or_else(|e| panic!("{e}"));
        assert!(ring.rotate(&a, &renamed, 1).is_err(), "origin changes");
        ring.rotate(&a, &b, 1)?;
        assert!(ring.rotate(&b, &a, 2).is_err(), "a key comes back");
        assert!(ring.retire(&b.verifier().to_string()).is_err(), "current");
        let hash = key_hash(&ring.entries()[0].vkey)
            .unwrap_or_default()
            .to_owned();
        assert!(ring.retire(&hash)?.retired.is_some());
        Ok(())
    }

    #[test]
    fn the_ring_survives_a_save_and_load() -> Result<(), LedgerError> {
        let dir = tempfile::tempdir()?;
        let (a, b) = (key(), key());
        let mut ring = KeyRing::first(&a.verifier());
        ring.rotate(&a, &b, 7)?;
        ring.save(dir.path())?;
        assert_eq!(KeyRing::load(dir.path())?, ring);
        std::fs::write(dir.path().join(KEYS_FILE), b"[]")?;
        assert!(matches!(
            KeyRing::load(dir.path()),
            Err(LedgerError::Corrupt(_))
        ));
        Ok(())
    }

    #[test]
    fn an_interrupted_rotation_is_finished_or_undone() -> Result<(), LedgerError> {
        let dir = tempfile::tempdir()?;
        let key_file = dir.path().join("signing.key");
        let a = SigningKey::create_new(&key_file, "example.com/log")
            .map_err(|e| LedgerError::Signing(e.to_string()))?;
        let _b = SigningKey::create_new(&pending_key_path(&key_file), "example.com/log")
            .map_err(|e| LedgerError::Signing(e.to_string()))?;
        // Crash before the ring named b: b is dropped, a stays.
        KeyRing::first(&a.verifier()).save(dir.path())?;
        finish_interrupted_rotation(dir.path(), &key_file)?;
        assert!(!pending_key_path(&key_file).exists());
        let loaded =
            SigningKey::load(&key_file).map_err(|e| LedgerError::Signing(e.to_string()))?;
        assert_eq!(loaded.verifier(), a.verifier());

        // Crash after the ring named c: c replaces a.
        let c = SigningKey::create_new(&pending_key_path(&key_file), "example.com/log")
            .map_err(|e| LedgerError::Signing(e.to_string()))?;
        let mut ring = KeyRing::first(&a.verifier());
        ring.rotate(&a, &c, 3)?;
        ring.save(dir.path())?;
        finish_interrupted_rotation(dir.path(), &key_file)?;
        let loaded =
            SigningKey::load(&key_file).map_err(|e| LedgerError::Signing(e.to_string()))?;
        assert_eq!(loaded.verifier(), c.verifier());
        Ok(())
    }
}

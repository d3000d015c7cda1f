//! Access tokens: who may call the API, in which role and for which tenant.
//!
//! Tokens are random bearer secrets (`plt_` + 43 base64url characters, 256 bits). Only their
//! SHA-256 is stored, in `<data-dir>/tokens.json` (mode 0600, replaced atomically), so a copy
//! of the data directory does not hand out working tokens. The file is not part of the log:
//! tokens are mutable configuration, not provenance.
//!
//! This module decides who a bearer is ([`TokenStore::authenticate`]); what each role may do
//! is the server's table (it knows the endpoints), built on [`Role`].

use std::collections::HashMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::LedgerError;

/// File name of the token store inside a data directory.
pub const TOKENS_FILE: &str = "tokens.json";
/// File name of the admin token written on first start.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// Every token starts with this, so secret scanners and people recognise one.
pub const TOKEN_PREFIX: &str = "plt_";
const FORMAT: &str = "provledger-tokens/v1";

/// What a token may do. The server maps each endpoint and GraphQL field to the roles allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Role {
    /// Manages tokens, keys, erasure and retention; reads and writes every tenant.
    Admin,
    /// Appends to its own tenant.
    Writer,
    /// Reads its own tenant: records, lineage, proofs, exports.
    Auditor,
    /// Exports of its own tenant only.
    Regulator,
}

impl Role {
    /// Every role, in a fixed order (for listings and test matrices).
    pub const ALL: [Role; 4] = [Role::Admin, Role::Writer, Role::Auditor, Role::Regulator];

    /// The role's name as written in tokens, flags and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Writer => "writer",
            Role::Auditor => "auditor",
            Role::Regulator => "regulator",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = AccessError;

    fn from_str(s: &str) -> Result<Role, AccessError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| AccessError::Invalid {
                field: "role",
                reason: format!(
                    "{s:?} is not a role; expected admin, writer, auditor or regulator"
                ),
            })
    }
}

/// Why token management failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// A request to create a token breaks a rule; the message names the field.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// No token has that id.
    #[error("no token has id {0:?}")]
    UnknownToken(String),
    /// The token file does not parse or breaks its own rules.
    #[error("token file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The data directory could not be locked or the file could not be read or written.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl From<std::io::Error> for AccessError {
    fn from(e: std::io::Error) -> Self {
        AccessError::Ledger(LedgerError::Io(e))
    }
}

/// Why a bearer was not let in. Deliberately coarse: the answer must not help a guesser.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No such token (never issued, revoked, or mistyped).
    #[error("the bearer token is not valid")]
    Unknown,
    /// The token was valid until its expiry.
    #[error("the bearer token expired")]
    Expired,
}

/// What the store knows about a token (never the secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenInfo {
    /// Public id: the first 16 hex digits of the token's SHA-256. Used to list and revoke.
    pub id: String,
    /// What the token may do.
    pub role: Role,
    /// The tenant it acts for (admins: the default tenant of their appends).
    pub tenant: String,
    /// When set, the record kinds the token may append and read directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinds: Option<Vec<String>>,
    /// Expiry, ms since the Unix epoch; `None` never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// Creation time, ms since the Unix epoch.
    pub created: u64,
    /// A note for people ("ci pipeline", "alice").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl TokenInfo {
    /// Whether the token's kind limit (if any) allows `kind`.
    pub fn allows_kind(&self, kind: &str) -> bool {
        self.kinds
            .as_ref()
            .is_none_or(|kinds| kinds.iter().any(|k| k == kind))
    }
}

/// What a new token should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewToken {
    /// Its role.
    pub role: Role,
    /// Its tenant.
    pub tenant: String,
    /// Optional limit to these record kinds.
    pub kinds: Option<Vec<String>>,
    /// Optional expiry, ms since the Unix epoch (must be in the future).
    pub expires: Option<u64>,
    /// Optional note.
    pub label: Option<String>,
}

/// A freshly made token: the secret is shown once and never stored.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    /// The bearer secret.
    pub token: String,
    /// What the store keeps about it.
    pub info: TokenInfo,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    format: String,
    tokens: Vec<StoredToken>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredToken {
    /// Hex SHA-256 of the token.
    sha256: String,
    #[serde(flatten)]
    info: TokenInfo,
}

/// The token store of one data directory. Cheap to read (an in-memory map); writes replace
/// the file atomically and fsync it before they return.
pub struct TokenStore {
    path: PathBuf,
    tokens: RwLock<HashMap<[u8; 32], TokenInfo>>,
    /// Held by offline users (the command line) so that no server changes the file meanwhile.
    _lock: Option<File>,
}

impl TokenStore {
    /// Opens the store of a data directory that this process already owns (a server that has
    /// opened the ledger there). A missing file is an empty store.
    pub fn open(data_dir: &Path) -> Result<TokenStore, AccessError> {
        Self::load(data_dir, None)
    }

    /// Opens the store for offline use, taking the data directory's lock: fails with
    /// [`LedgerError::InUse`] while a server runs on it.
    pub fn open_offline(data_dir: &Path) -> Result<TokenStore, AccessError> {
        let lock = crate::store::lock_data_dir(data_dir)?;
        Self::load(data_dir, Some(lock))
    }

    fn load(data_dir: &Path, lock: Option<File>) -> Result<TokenStore, AccessError> {
        let path = data_dir.join(TOKENS_FILE);
        let corrupt = |reason: String| AccessError::Corrupt {
            path: path.display().to_string(),
            reason,
        };
        let mut tokens = HashMap::new();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let file: TokenFile =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
                if file.format != FORMAT {
                    return Err(corrupt(format!(
                        "format {:?} is not {FORMAT:?}",
                        file.format
                    )));
                }
                for t in file.tokens {
                    let mut hash = [0u8; 32];
                    hex::decode_to_slice(&t.sha256, &mut hash).map_err(|_| {
                        corrupt(format!("token {}: sha256 is not 64 hex digits", t.info.id))
                    })?;
                    if id_of(&hash) != t.info.id {
                        return Err(corrupt(format!(
                            "token {}: id does not match its hash",
                            t.info.id
                        )));
                    }
                    tokens.insert(hash, t.info);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        Ok(TokenStore {
            path,
            tokens: RwLock::new(tokens),
            _lock: lock,
        })
    }

    /// Whether any token exists (a data directory's first start has none).
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Makes a token, stores its hash durably, and returns the secret (shown once).
    pub fn create(&self, new: NewToken) -> Result<IssuedToken, AccessError> {
        check_new(&new)?;
        let now = now_ms();
        if new.expires.is_some_and(|e| e <= now) {
            return Err(AccessError::Invalid {
                field: "expires",
                reason: "the expiry is in the past".into(),
            });
        }
        let mut secret = [0u8; 32];
        OsRng.fill_bytes(&mut secret);
        let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
        let hash = sha256(&token);
        let info = TokenInfo {
            id: id_of(&hash),
            role: new.role,
            tenant: new.tenant,
            kinds: new.kinds,
            expires: new.expires,
            created: now,
            label: new.label,
        };
        let mut tokens = self.write();
        let mut next = tokens.clone();
        next.insert(hash, info.clone());
        self.persist(&next)?;
        *tokens = next;
        Ok(IssuedToken { token, info })
    }

    /// Every token, oldest first.
    pub fn list(&self) -> Vec<TokenInfo> {
        let mut all: Vec<TokenInfo> = self.read().values().cloned().collect();
        all.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        all
    }

    /// Revokes a token by id, durably; it stops working for the next request.
    pub fn revoke(&self, id: &str) -> Result<TokenInfo, AccessError> {
        let mut tokens = self.write();
        let Some(hash) = tokens.iter().find(|(_, t)| t.id == id).map(|(h, _)| *h) else {
            return Err(AccessError::UnknownToken(id.to_owned()));
        };
        let mut next = tokens.clone();
        let removed = next.remove(&hash);
        self.persist(&next)?;
        *tokens = next;
        removed.ok_or_else(|| AccessError::UnknownToken(id.to_owned()))
    }

    /// Who holds `token`, if it is valid now.
    pub fn authenticate(&self, token: &str) -> Result<TokenInfo, AuthError> {
        let info = self
            .read()
            .get(&sha256(token))
            .cloned()
            .ok_or(AuthError::Unknown)?;
        if info.expires.is_some_and(|e| e <= now_ms()) {
            return Err(AuthError::Expired);
        }
        Ok(info)
    }

    /// Whether a token authenticated earlier (by its [`TokenInfo`]) is still valid now: not
    /// revoked and not expired. Long-lived connections (subscriptions) ask before each message.
    pub fn still_valid(&self, token: &TokenInfo) -> bool {
        let now = now_ms();
        self.read()
            .values()
            .any(|t| t.id == token.id && t.expires.is_none_or(|e| e > now))
    }

    fn persist(&self, tokens: &HashMap<[u8; 32], TokenInfo>) -> Result<(), AccessError> {
        let mut list: Vec<StoredToken> = tokens
            .iter()
            .map(|(hash, info)| StoredToken {
                sha256: hex::encode(hash),
                info: info.clone(),
            })
            .collect();
        list.sort_by(|a, b| {
            a.info
                .created
                .cmp(&b.info.created)
                .then_with(|| a.info.id.cmp(&b.info.id))
        });
        let file = TokenFile {
            format: FORMAT.to_owned(),
            tokens: list,
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| AccessError::Corrupt {
            path: self.path.display().to_string(),
            reason: format!("cannot encode: {e}"),
        })?;
        write_private_atomically(&self.path, &bytes)?;
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<[u8; 32], TokenInfo>> {
        // A panic while holding the lock cannot leave the map half-updated (it is swapped whole).
        self.tokens.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<[u8; 32], TokenInfo>> {
        self.tokens.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Parses an expiry given by a person: a duration from now (`30d`, `12h`, `90min`) or an
/// RFC 3339 time (`2027-01-31T00:00:00Z`). Returns ms since the Unix epoch.
pub fn parse_expiry(s: &str) -> Result<u64, AccessError> {
    let invalid = |reason: String| AccessError::Invalid {
        field: "expires",
        reason,
    };
    let at = match humantime::parse_duration(s) {
        Ok(d) => SystemTime::now() + d,
        Err(_) => humantime::parse_rfc3339_weak(s).map_err(|_| {
            invalid(format!(
                "{s:?} is neither a duration (30d, 12h) nor an RFC 3339 time"
            ))
        })?,
    };
    let ms = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis();
    u64::try_from(ms).map_err(|_| invalid(format!("{s:?} is too far in the future")))
}

/// Writes `bytes` to `path` with mode 0600: a temporary file, fsync, rename over the old
/// file, fsync of the directory. Readers see the old or the new content, never a mix.
pub(crate) fn write_private_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

fn check_new(new: &NewToken) -> Result<(), AccessError> {
    let invalid = |field: &'static str, e: LedgerError| AccessError::Invalid {
        field,
        reason: match e {
            LedgerError::InvalidRecord { reason, .. } => reason,
            other => other.to_string(),
        },
    };
    crate::record::check_token(&new.tenant, &|| "tenant".into(), 128)
        .map_err(|e| invalid("tenant", e))?;
    if let Some(kinds) = &new.kinds {
        if kinds.is_empty() {
            return Err(AccessError::Invalid {
                field: "kinds",
                reason: "an empty list would allow nothing; leave it out to allow every kind"
                    .into(),
            });
        }
        for k in kinds {
            crate::record::check_token(k, &|| "kinds".into(), 64)
                .map_err(|e| invalid("kinds", e))?;
        }
    }
    if let Some(label) = &new.label {
        if label.len() > 200 || label.chars().any(char::is_control) {
            return Err(AccessError::Invalid {
                field: "label",
                reason: "at most 200 bytes, no control characters".into(),
            });
        }
    }
    Ok(())
}

fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn id_of(hash: &[u8; 32]) -> String {
    hex::encode(hash.get(..8).unwrap_or_default())
}

fn now_ms() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(tenant: &str) -> NewToken {
        NewToken {
            role: Role::Writer,
            tenant: tenant.into(),
            kinds: None,
            expires: None,
            label: None,
        }
    }

    #[test]
    fn a_token_authenticates_until_revoked_and_survives_reopening() -> Result<(), AccessError> {
        let dir = tempfile::tempdir()?;
        let store = TokenStore::open(dir.path())?;
        assert!(store.is_empty());
        let issued = store.create(writer("acme"))?;
        assert!(issued.token.starts_with(TOKEN_PREFIX));
        assert_eq!(issued.token.len(), TOKEN_PREFIX.len() + 43);
        assert_eq!(store.authenticate(&issued.token), Ok(issued.info.clone()));
        assert_eq!(store.authenticate("plt_nope"), Err(AuthError::Unknown));

        let reopened = TokenStore::open(dir.path())?;
        assert_eq!(reopened.list(), vec![issued.info.clone()]);
        assert_eq!(
            reopened.authenticate(&issued.token),
            Ok(issued.info.clone())
        );

        reopened.revoke(&issued.info.id)?;
        assert_eq!(
            reopened.authenticate(&issued.token),
            Err(AuthError::Unknown)
        );
        assert!(TokenStore::open(dir.path())?.is_empty());
        assert!(matches!(
            reopened.revoke(&issued.info.id),
            Err(AccessError::UnknownToken(_))
        ));
        Ok(())
    }

    #[test]
    fn the_file_holds_hashes_not_secrets_and_is_private() -> Result<(), AccessError> {
        let dir = tempfile::tempdir()?;
        let store = TokenStore::open(dir.path())?;
        let issued = store.create(writer("acme"))?;
        let text = std::fs::read_to_string(dir.path().join(TOKENS_FILE))?;
        let secret = issued.token.trim_start_matches(TOKEN_PREFIX);
        assert!(!text.contains(secret), "the secret is in the token file");
        assert!(text.contains(&hex::encode(sha256(&issued.token))));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(TOKENS_FILE))?
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        Ok(())
    }

    #[test]
    fn expired_tokens_and_bad_requests_are_refused() -> Result<(), AccessError> {
        let dir = tempfile::tempdir()?;
        let store = TokenStore::open(dir.path())?;
        let mut past = writer("acme");
        past.expires = Some(1);
        assert!(matches!(
            store.create(past),
            Err(AccessError::Invalid {
                field: "expires",
                ..
            })
        ));
        assert!(matches!(
            store.create(writer("no spaces")),
            Err(AccessError::Invalid {
                field: "tenant",
                ..
            })
        ));
        let mut empty_kinds = writer("acme");
        empty_kinds.kinds = Some(vec![]);
        assert!(matches!(
            store.create(empty_kinds),
            Err(AccessError::Invalid { field: "kinds", .. })
        ));

        // Expiry is checked at use: forge a short-lived token by editing the stored expiry.
        let mut soon = writer("acme");
        soon.expires = Some(now_ms() + 60_000);
        let issued = store.create(soon)?;
        assert!(store.authenticate(&issued.token).is_ok());
        if let Some(info) = store.write().get_mut(&sha256(&issued.token)) {
            info.expires = Some(now_ms().saturating_sub(1));
        }
        assert_eq!(store.authenticate(&issued.token), Err(AuthError::Expired));
        Ok(())
    }

    #[test]
    fn a_corrupt_file_is_named_not_ignored() -> Result<(), AccessError> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join(TOKENS_FILE), b"{\"format\":")?;
        assert!(matches!(
            TokenStore::open(dir.path()),
            Err(AccessError::Corrupt { .. })
        ));
        Ok(())
    }

    #[test]
    fn offline_use_is_refused_while_the_directory_is_owned() -> Result<(), AccessError> {
        let dir = tempfile::tempdir()?;
        let _owner = crate::store::lock_data_dir(dir.path())?;
        assert!(matches!(
            TokenStore::open_offline(dir.path()),
            Err(AccessError::Ledger(LedgerError::InUse(_)))
        ));
        Ok(())
    }

    #[test]
    fn expiries_parse_as_durations_or_times() -> Result<(), AccessError> {
        let in_a_day = parse_expiry("1d")?;
        let now = now_ms();
        assert!(in_a_day > now + 86_000_000 && in_a_day <= now + 86_400_000);
        assert_eq!(parse_expiry("2030-01-01T00:00:00Z")?, 1_893_456_000_000);
        assert!(parse_expiry("soon").is_err());
        Ok(())
    }
}

//! Settings of `provledger serve`: one struct, from an optional TOML file, then `PROVLEDGER_*`
//! environment variables, then flags (each later source wins). Unknown file keys are refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use provledger_ledger::RedactionPolicy;
use serde::Deserialize;

/// Flags (and their environment variables) of `provledger serve`.
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (snake_case keys).
    #[arg(long, env = "PROVLEDGER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (fjall keyspace, signing key).
    #[arg(long, env = "PROVLEDGER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "PROVLEDGER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Log origin (checkpoint first line and key name) used when the key is first made.
    #[arg(long, env = "PROVLEDGER_ORIGIN")]
    pub origin: Option<String>,
    /// Signing key file (Go note private key format); default `<data-dir>/signing.key`.
    #[arg(long, env = "PROVLEDGER_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Largest request body in bytes.
    #[arg(long, env = "PROVLEDGER_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Append requests that may wait for the writer before new ones get 503.
    #[arg(long, env = "PROVLEDGER_QUEUE_DEPTH")]
    pub queue_depth: Option<usize>,
    /// Most records in one group commit.
    #[arg(long, env = "PROVLEDGER_MAX_BATCH_RECORDS")]
    pub max_batch_records: Option<usize>,
    /// Longest a small group commit waits for more appends while they keep coming (default
    /// 2ms; `0s` turns it off; at most 100ms).
    #[arg(long, env = "PROVLEDGER_COMMIT_LINGER")]
    pub commit_linger: Option<String>,
    /// Most MiB of records waiting for the writer before new appends get 503.
    #[arg(long, env = "PROVLEDGER_MAX_QUEUED_MB")]
    pub max_queued_mb: Option<usize>,
    /// Storage block cache in MiB.
    #[arg(long, env = "PROVLEDGER_CACHE_MB")]
    pub cache_mb: Option<u64>,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "PROVLEDGER_WORKERS")]
    pub workers: Option<usize>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "PROVLEDGER_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Retention and compaction (see `upkeep.rs`).
    #[command(flatten)]
    pub upkeep: crate::upkeep::UpkeepArgs,
    /// Declare the log public: serve entry bundles (`/tile/entries/…`, every tenant's leaf
    /// metadata) without a token. Hash tiles and checkpoints are always public.
    #[arg(long, env = "PROVLEDGER_PUBLIC_LOG")]
    pub public_log: bool,
    /// Redaction policy file (TOML, or JSON when it ends in `.json`; docs/api.md); default: the
    /// built-in policy. Read and checked at start-up.
    #[arg(long, env = "PROVLEDGER_REDACTION_POLICY")]
    pub redaction_policy: Option<PathBuf>,
}

/// How logs are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    origin: Option<String>,
    key_file: Option<PathBuf>,
    max_body_bytes: Option<usize>,
    queue_depth: Option<usize>,
    max_batch_records: Option<usize>,
    commit_linger: Option<String>,
    max_queued_mb: Option<usize>,
    cache_mb: Option<u64>,
    workers: Option<usize>,
    log_format: Option<LogFormat>,
    /// `[retention]`: classification → period (`pii = "30d"`).
    retention: Option<std::collections::BTreeMap<String, String>>,
    retention_check_interval: Option<String>,
    compact_interval: Option<String>,
    compact_delay: Option<String>,
    public_log: Option<bool>,
    redaction_policy: Option<PathBuf>,
}

/// Longest commit linger accepted: every append under load may wait this long.
const MAX_COMMIT_LINGER: std::time::Duration = std::time::Duration::from_millis(100);

/// Validated settings the wiring uses.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub origin: Option<String>,
    pub key_file: PathBuf,
    pub max_body_bytes: usize,
    pub queue_depth: usize,
    pub max_batch_records: usize,
    pub commit_linger: std::time::Duration,
    pub max_queued_mb: usize,
    pub cache_mb: u64,
    pub workers: usize,
    pub log_format: LogFormat,
    pub upkeep: crate::upkeep::Upkeep,
    pub public_log: bool,
    /// The redaction policy file and its parsed policy; `None`: the built-in policy.
    pub redaction_policy: Option<(PathBuf, RedactionPolicy)>,
}

impl Settings {
    /// Merges file < env < flags (clap already merged env and flags) and validates once.
    pub fn resolve(args: ServeArgs) -> Result<Settings> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./data"));
        let key_file = args
            .key_file
            .or(file.key_file)
            .unwrap_or_else(|| data_dir.join("signing.key"));
        let settings = Settings {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            origin: args.origin.or(file.origin),
            key_file,
            max_body_bytes: args
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(16 * 1024 * 1024),
            queue_depth: args.queue_depth.or(file.queue_depth).unwrap_or(1024),
            max_batch_records: args
                .max_batch_records
                .or(file.max_batch_records)
                .unwrap_or(provledger_ledger::DEFAULT_MAX_BATCH_RECORDS),
            commit_linger: match args.commit_linger.or(file.commit_linger) {
                None => provledger_ledger::DEFAULT_COMMIT_LINGER,
                Some(text) => crate::upkeep::parse(&text, "commit_linger")?,
            },
            max_queued_mb: args.max_queued_mb.or(file.max_queued_mb).unwrap_or(256),
            cache_mb: args.cache_mb.or(file.cache_mb).unwrap_or(32),
            workers: args.workers.or(file.workers).unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            }),
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            upkeep: crate::upkeep::Upkeep::resolve(
                args.upkeep,
                crate::upkeep::UpkeepFile {
                    retention: file.retention,
                    retention_check_interval: file.retention_check_interval,
                    compact_interval: file.compact_interval,
                    compact_delay: file.compact_delay,
                },
            )?,
            public_log: args.public_log || file.public_log.unwrap_or(false),
            redaction_policy: match args.redaction_policy.or(file.redaction_policy) {
                None => None,
                Some(path) => {
                    let policy = RedactionPolicy::from_file(&path)?;
                    Some((path, policy))
                }
            },
            data_dir,
        };
        if settings.commit_linger > MAX_COMMIT_LINGER {
            bail!(
                "commit_linger must be at most {}",
                humantime::format_duration(MAX_COMMIT_LINGER)
            );
        }
        if settings.max_body_bytes < 1024 {
            bail!("max_body_bytes must be at least 1024");
        }
        if settings.queue_depth == 0
            || settings.max_batch_records == 0
            || settings.workers == 0
            || settings.max_queued_mb == 0
        {
            bail!("queue_depth, max_batch_records, max_queued_mb and workers must be at least 1");
        }
        Ok(settings)
    }
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {} is invalid", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_and_unknown_keys_are_refused() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\ncache_mb = 8\n")?;
        let args = ServeArgs {
            config: Some(path.clone()),
            cache_mb: Some(64),
            ..ServeArgs::default()
        };
        let s = Settings::resolve(args)?;
        assert_eq!(s.listen, SocketAddr::from(([127, 0, 0, 1], 9000)));
        assert_eq!(s.cache_mb, 64);
        assert_eq!(s.key_file, PathBuf::from("./data/signing.key"));

        std::fs::write(&path, "lisen = \"127.0.0.1:9000\"\n")?;
        let err = Settings::resolve(ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
        assert!(err.contains("unknown field `lisen`"), "{err}");
        Ok(())
    }

    #[test]
    fn the_redaction_policy_is_read_from_the_file_setting_and_checked() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let policy = dir.path().join("p.toml");
        std::fs::write(&policy, "version = \"p1\"\n")?;
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            format!("redaction_policy = {:?}\n", policy.display().to_string()),
        )?;
        let s = Settings::resolve(ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        })?;
        let (file, parsed) = s.redaction_policy.unwrap_or_else(|| panic!("no policy"));
        assert_eq!(file, policy);
        assert_eq!(parsed.version(), "p1");
        assert!(Settings::resolve(ServeArgs::default())?
            .redaction_policy
            .is_none());

        std::fs::write(&policy, "version = \"p1\"\ndetectors = [\"dna\"]\n")?;
        let err = Settings::resolve(ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
        assert!(
            err.starts_with("redaction policy: detectors[0]: unknown detector \"dna\""),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn the_commit_linger_is_a_duration_from_file_or_flag_and_bounded() -> Result<()> {
        use std::time::Duration;
        assert_eq!(
            Settings::resolve(ServeArgs::default())?.commit_linger,
            provledger_ledger::DEFAULT_COMMIT_LINGER
        );
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "commit_linger = \"500us\"\n")?;
        let with = |flag: Option<&str>| {
            Settings::resolve(ServeArgs {
                config: Some(path.clone()),
                commit_linger: flag.map(str::to_owned),
                ..ServeArgs::default()
            })
        };
        assert_eq!(with(None)?.commit_linger, Duration::from_micros(500));
        assert_eq!(with(Some("0s"))?.commit_linger, Duration::ZERO);
        let err = |flag| {
            with(Some(flag))
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default()
        };
        assert_eq!(err("101ms"), "commit_linger must be at most 100ms");
        assert!(
            err("soon").starts_with("commit_linger: \"soon\" is not a duration"),
            "{}",
            err("soon")
        );
        Ok(())
    }
}

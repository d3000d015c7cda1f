//! Background upkeep of `provledger serve`: retention (erasing expired payloads) and
//! compaction (making erased bytes disappear from the files). Settings and wiring only; the
//! work is `provledger_ledger::Retention` and `Ledger::compact`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use provledger_ledger::{Clock, Ledger, Retention, RetentionRule};
use tracing::{info, warn};

/// Retention and compaction flags of `provledger serve`.
#[derive(Args, Debug, Default)]
pub struct UpkeepArgs {
    /// Retention rule `CLASS=PERIOD` (e.g. `pii=30d`), repeatable or comma-separated; payloads
    /// of that classification are erased once older than PERIOD. Overrides the file's
    /// `[retention]` entry for the same class.
    #[arg(
        long = "retention",
        env = "PROVLEDGER_RETENTION",
        value_delimiter = ',',
        value_name = "CLASS=PERIOD"
    )]
    pub retention: Vec<String>,
    /// How often the retention task looks for expired payloads (default 60s).
    #[arg(long, env = "PROVLEDGER_RETENTION_CHECK_INTERVAL", hide = true)]
    pub retention_check_interval: Option<String>,
    /// Compact at least this often (default 24h; `0s` turns periodic compaction off).
    #[arg(long, env = "PROVLEDGER_COMPACT_INTERVAL")]
    pub compact_interval: Option<String>,
    /// Compact this long after payloads were erased (default 60s), so erasures close together
    /// share one compaction.
    #[arg(long, env = "PROVLEDGER_COMPACT_DELAY", hide = true)]
    pub compact_delay: Option<String>,
}

/// The upkeep keys of the TOML config file.
#[derive(Debug, Default)]
pub struct UpkeepFile {
    /// `[retention]`: class → period.
    pub retention: Option<BTreeMap<String, String>>,
    /// `retention_check_interval`.
    pub retention_check_interval: Option<String>,
    /// `compact_interval`.
    pub compact_interval: Option<String>,
    /// `compact_delay`.
    pub compact_delay: Option<String>,
}

/// Validated upkeep settings.
#[derive(Clone, Debug)]
pub struct Upkeep {
    pub retention: Vec<RetentionRule>,
    pub retention_check_interval: Duration,
    /// `None`: no periodic compaction (compaction after erasures still runs).
    pub compact_interval: Option<Duration>,
    pub compact_delay: Duration,
}

impl Upkeep {
    /// Merges the file's settings with flags/env (which win) and parses the durations.
    pub fn resolve(args: UpkeepArgs, file: UpkeepFile) -> Result<Upkeep> {
        let mut rules: BTreeMap<String, String> = file.retention.unwrap_or_default();
        for rule in &args.retention {
            let Some((class, period)) = rule.split_once('=') else {
                bail!("--retention {rule:?} must look like CLASS=PERIOD, e.g. pii=30d");
            };
            rules.insert(class.trim().to_owned(), period.trim().to_owned());
        }
        let mut retention = Vec::with_capacity(rules.len());
        for (class, label) in rules {
            if class.is_empty()
                || !class
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
            {
                bail!("retention class {class:?} is not a classification name");
            }
            let period = parse(&label, &format!("retention period of {class:?}"))?;
            if period.is_zero() {
                bail!("retention period of {class:?} must be longer than 0");
            }
            retention.push(RetentionRule {
                classification: class,
                period,
                label,
            });
        }
        let duration = |flag: Option<String>, file: Option<String>, default: &str, what: &str| {
            parse(flag.or(file).as_deref().unwrap_or(default), what)
        };
        let check = duration(
            args.retention_check_interval,
            file.retention_check_interval,
            "60s",
            "retention_check_interval",
        )?;
        if check.is_zero() {
            bail!("retention_check_interval must be longer than 0");
        }
        let interval = duration(
            args.compact_interval,
            file.compact_interval,
            "24h",
            "compact_interval",
        )?;
        Ok(Upkeep {
            retention,
            retention_check_interval: check,
            compact_interval: (!interval.is_zero()).then_some(interval),
            compact_delay: duration(
                args.compact_delay,
                file.compact_delay,
                "60s",
                "compact_delay",
            )?,
        })
    }

    /// Starts the retention thread (when there are rules) and the compaction thread. They run
    /// until the process ends; every step they take is durable on its own.
    pub fn spawn(&self, ledger: &Ledger) -> Result<()> {
        if !self.retention.is_empty() {
            let mut retention = Retention::new(self.retention.clone());
            let every = self.retention_check_interval;
            let ledger = ledger.clone();
            let clock = Clock::system();
            info!(rules = ?self.retention, every = ?every, "retention enabled");
            std::thread::Builder::new()
                .name("provledger-retention".into())
                .spawn(move || loop {
                    std::thread::sleep(every);
                    match retention.run_once(&ledger, clock.now_ms()) {
                        Ok(0) => {}
                        Ok(n) => info!(erased = n, "retention erased expired payloads"),
                        Err(e) => {
                            warn!(error = %e, "retention pass failed; retrying next interval")
                        }
                    }
                })
                .context("cannot start the retention thread")?;
        }
        let (interval, delay) = (self.compact_interval, self.compact_delay);
        let ledger = ledger.clone();
        std::thread::Builder::new()
            .name("provledger-compact".into())
            .spawn(move || compaction_loop(&ledger, interval, delay))
            .context("cannot start the compaction thread")?;
        Ok(())
    }
}

/// Compacts `delay` after new erasures, and every `interval` regardless.
fn compaction_loop(ledger: &Ledger, interval: Option<Duration>, delay: Duration) {
    let tick = delay.clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut last = Instant::now();
    let mut seen = ledger.erased_payloads();
    let mut pending: Option<Instant> = None;
    loop {
        std::thread::sleep(tick);
        let erased = ledger.erased_payloads();
        if erased != seen && pending.is_none() {
            pending = Some(Instant::now());
        }
        let after_erasure = pending.is_some_and(|t| t.elapsed() >= delay);
        let periodic = interval.is_some_and(|i| last.elapsed() >= i);
        if !(after_erasure || periodic) {
            continue;
        }
        pending = None;
        seen = erased;
        last = Instant::now();
        match ledger.compact() {
            // fjall had not released the old journals yet: nothing was compacted, retry.
            Ok(report) if report.journals_left > 0 => pending = Some(Instant::now()),
            Ok(report) => info!(
                erased_since_start = erased,
                journals_removed = report.journals_removed,
                journals_left = report.journals_left,
                seconds = last.elapsed().as_secs_f64(),
                "compaction done"
            ),
            Err(e) => warn!(error = %e, "compaction failed; retrying at the next trigger"),
        }
    }
}

/// A duration setting (`30d`, `12h`, `500ms`, …); `what` names it in the error.
pub(crate) fn parse(text: &str, what: &str) -> Result<Duration> {
    humantime::parse_duration(text)
        .with_context(|| format!("{what}: {text:?} is not a duration (e.g. 30d, 12h, 1y, 500ms)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ServeArgs, Settings};

    #[test]
    fn retention_from_the_file_is_overridden_by_flags_class_by_class() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "compact_interval = \"0s\"\n[retention]\npii = \"30d\"\ninternal = \"1y\"\n",
        )?;
        let s = Settings::resolve(ServeArgs {
            config: Some(path),
            upkeep: UpkeepArgs {
                retention: vec!["pii=7d".into(), "chat=12h".into()],
                retention_check_interval: Some("250ms".into()),
                ..UpkeepArgs::default()
            },
            ..ServeArgs::default()
        })?;
        let rules: Vec<(&str, u64, &str)> = s
            .upkeep
            .retention
            .iter()
            .map(|r| {
                (
                    r.classification.as_str(),
                    r.period.as_secs(),
                    r.label.as_str(),
                )
            })
            .collect();
        assert_eq!(
            rules,
            [
                ("chat", 12 * 3600, "12h"),
                ("internal", 31_557_600, "1y"),
                ("pii", 7 * 86_400, "7d"),
            ]
        );
        assert_eq!(
            s.upkeep.retention_check_interval,
            Duration::from_millis(250)
        );
        assert_eq!(s.upkeep.compact_interval, None);
        assert_eq!(s.upkeep.compact_delay, Duration::from_secs(60));
        Ok(())
    }

    #[test]
    fn bad_retention_settings_are_refused_with_the_setting_named() {
        let err = |args: UpkeepArgs| {
            Upkeep::resolve(args, UpkeepFile::default())
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default()
        };
        let rule = |r: &str| UpkeepArgs {
            retention: vec![r.to_owned()],
            ..UpkeepArgs::default()
        };
        assert_eq!(
            err(rule("pii")),
            "--retention \"pii\" must look like CLASS=PERIOD, e.g. pii=30d"
        );
        assert!(
            err(rule("pii=soon")).starts_with(
                "retention period of \"pii\": \"soon\" is not a duration (e.g. 30d, 12h, 1y, 500ms)"
            ),
            "{}",
            err(rule("pii=soon"))
        );
        assert_eq!(
            err(rule("pii=0s")),
            "retention period of \"pii\" must be longer than 0"
        );
        assert_eq!(
            err(rule("p ii=1d")),
            "retention class \"p ii\" is not a classification name"
        );
        assert_eq!(
            err(UpkeepArgs {
                retention_check_interval: Some("0s".into()),
                ..UpkeepArgs::default()
            }),
            "retention_check_interval must be longer than 0"
        );
    }
}

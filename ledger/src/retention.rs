//! Retention: payloads of a classification are erased once they are older than the period
//! configured for it (`[retention] pii = "30d"`). Each expiry is an ordinary erasure record
//! with actor `service:retention`, policy `retention` and reason `retention: <class> <period>`.
//!
//! A pass never rescans the log: integration times never decrease along the log, so the
//! records expired at `now` for a class are exactly those below the first index whose time is
//! at least `now - period` (a binary search). Each class keeps a cursor past the records it
//! has already looked at, and a pass reads only the `payloads` partition between the cursor
//! and that bound (erased records have no payload left, so they are not read again).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use provledger_signer::leaf_hash;

use crate::erase::{ErasurePolicy, ErasureRequest, ErasureTarget};
use crate::ledger::Ledger;
use crate::record::{Actor, Leaf};
use crate::LedgerError;

/// Records erased per erasure job (one atomic batch).
const CHUNK: usize = 1000;

/// The time retention measures against, in milliseconds since the Unix epoch. The system
/// clock in production; tests move a manual one.
#[derive(Clone)]
pub struct Clock(ClockKind);

#[derive(Clone)]
enum ClockKind {
    System,
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock(ClockKind::System)
    }

    /// A clock that reads `now` (ms since the epoch); store into it to move time.
    pub fn manual(now: Arc<AtomicU64>) -> Clock {
        Clock(ClockKind::Manual(now))
    }

    /// The current time in ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        match &self.0 {
            ClockKind::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            ClockKind::Manual(now) => now.load(Ordering::Acquire),
        }
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            ClockKind::System => f.write_str("Clock::system"),
            ClockKind::Manual(n) => write!(f, "Clock::manual({})", n.load(Ordering::Acquire)),
        }
    }
}

/// How long payloads of one classification are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionRule {
    /// The classification (`pii`, `internal`, …).
    pub classification: String,
    /// How long after integration the payload is erased.
    pub period: Duration,
    /// The period as configured (`30d`), quoted in the erasure reason.
    pub label: String,
}

/// Applies retention rules; keeps a cursor per classification between passes.
#[derive(Debug)]
pub struct Retention {
    rules: Vec<RetentionRule>,
    cursors: HashMap<String, u64>,
}

impl Retention {
    /// Retention with these rules, starting from the beginning of the log.
    pub fn new(rules: Vec<RetentionRule>) -> Retention {
        Retention {
            rules,
            cursors: HashMap::new(),
        }
    }

    /// The rules applied.
    pub fn rules(&self) -> &[RetentionRule] {
        &self.rules
    }

    /// One pass at time `now_ms`: erases the payloads whose retention period has expired and
    /// answers how many it erased. Blocking: run it on a thread of its own.
    pub fn run_once(&mut self, ledger: &Ledger, now_ms: u64) -> Result<usize, LedgerError> {
        let mut erased = 0;
        for rule in &self.rules {
            let period_ms = u64::try_from(rule.period.as_millis()).unwrap_or(u64::MAX);
            let cutoff = now_ms.saturating_sub(period_ms);
            let cursor = self.cursors.get(&rule.classification).copied().unwrap_or(0);
            let size = ledger.head().size;
            let end = ledger.first_index_at_or_after(cutoff, cursor, size)?;
            if end <= cursor {
                continue;
            }
            // In chunks: no read iterator stays open across an erasure, memory stays bounded,
            // and the cursor advances with each committed chunk.
            let mut from = cursor;
            while from < end {
                let mut expired = Vec::new();
                let mut next = end;
                ledger.store().payload_indexes(from, end, |index| {
                    let bytes = ledger.leaf(index)?;
                    if Leaf::decode(&bytes)?.classification == rule.classification {
                        expired.push(leaf_hash(&bytes));
                        if expired.len() == CHUNK {
                            next = index + 1;
                            return Ok(false);
                        }
                    }
                    Ok(true)
                })?;
                if !expired.is_empty() {
                    let receipts = ledger.erase_blocking(ErasureRequest {
                        target: ErasureTarget::Records(expired),
                        tenant: None,
                        reason: format!("retention: {} {}", rule.classification, rule.label),
                        policy: ErasurePolicy::Retention,
                        actor: Actor {
                            kind: "service".into(),
                            id: "retention".into(),
                        },
                    })?;
                    erased += receipts.len();
                }
                self.cursors.insert(rule.classification.clone(), next);
                from = next;
            }
            tracing::debug!(
                classification = %rule.classification,
                from = cursor,
                to = end,
                erased,
                "retention pass"
            );
            self.cursors.insert(rule.classification.clone(), end);
        }
        Ok(erased)
    }
}

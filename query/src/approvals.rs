//! Human in the loop: the queue of decisions waiting for an approval, and the intervention
//! figures governance teams track (escalation share, approval rate, time to approval), in total,
//! per agent and per policy version.
//!
//! Both read the ledger's `pending` and `decisions` indexes, which the append batch maintains;
//! nothing here scans the log. Figures cover the decisions made in a time range (by the
//! decision's ledger time) with their outcomes as known now, and refuse a range holding more
//! than [`STATS_MAX_DECISIONS`] decisions rather than answer slowly or partially.

use std::collections::BTreeMap;

use provledger_ledger::{Decision, Ledger, Outcome, PolicyVersion, StoredRecord};

use crate::page::{Connection, Page};
use crate::records::{collect, BATCH};
use crate::QueryError;

/// Most decisions one `intervention_stats` call reads; a wider range is refused with
/// [`QueryError::LimitTooLarge`] (narrow `from`/`to`).
pub const STATS_MAX_DECISIONS: usize = 100_000;

/// One page of the escalated decisions still waiting for an approval or rejection, oldest
/// first. `tenant`, when given, lists only its decisions. Blocking.
pub fn pending_approvals(
    ledger: &Ledger,
    page: &Page,
    tenant: Option<&str>,
) -> Result<Connection<StoredRecord>, QueryError> {
    let next = |after: Option<u64>| -> Result<Vec<(u64, ())>, QueryError> {
        Ok(ledger
            .pending_approvals(tenant, after, BATCH)?
            .into_iter()
            .map(|i| (i, ()))
            .collect())
    };
    collect(page, next, |index, ()| Ok(Some(ledger.record_at(index)?)))
}

/// Intervention figures of a set of decisions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// Decisions made.
    pub decisions: u64,
    /// Of them, escalated to a human (`requires_approval: true`).
    pub escalated: u64,
    /// Escalated decisions approved.
    pub approvals: u64,
    /// Escalated decisions rejected.
    pub rejections: u64,
    /// Escalated decisions still waiting.
    pub pending: u64,
    /// Median ledger time from decision to approval, ms (nearest rank); `None` without approvals.
    pub time_to_approval_p50_ms: Option<u64>,
    /// 95th percentile of the same (nearest rank).
    pub time_to_approval_p95_ms: Option<u64>,
    latencies: Vec<u64>,
}

impl Figures {
    /// `escalated / decisions`; `None` without decisions.
    pub fn escalation_rate(&self) -> Option<f64> {
        ratio(self.escalated, self.decisions)
    }

    /// `approvals / (approvals + rejections)`; `None` before any outcome.
    pub fn approval_rate(&self) -> Option<f64> {
        ratio(self.approvals, self.approvals + self.rejections)
    }

    fn add(&mut self, d: &Decision) {
        self.decisions += 1;
        if !d.escalated {
            return;
        }
        self.escalated += 1;
        match &d.resolution {
            None => self.pending += 1,
            Some(r) if r.outcome == Outcome::Approved => {
                self.approvals += 1;
                self.latencies.push(r.latency_ms);
            }
            Some(_) => self.rejections += 1,
        }
    }

    fn finish(mut self) -> Figures {
        self.latencies.sort_unstable();
        self.time_to_approval_p50_ms = nearest_rank(&self.latencies, 50);
        self.time_to_approval_p95_ms = nearest_rank(&self.latencies, 95);
        self.latencies = Vec::new();
        self
    }
}

/// Intervention figures over a time range: in total, per agent, per policy version.
#[derive(Clone, Debug, PartialEq)]
pub struct InterventionStats {
    /// Every decision in the range.
    pub total: Figures,
    /// Per deciding actor id, in id order.
    pub by_agent: Vec<(String, Figures)>,
    /// Per cited policy version (`None`: decisions citing no policy), in (entity, index) order.
    pub by_policy: Vec<(Option<PolicyVersion>, Figures)>,
}

/// Intervention figures of the decisions made in `[from, to)` (ledger time, ms since the Unix
/// epoch; open ends when `None`), of `tenant` (all tenants when `None`). Blocking.
pub fn intervention_stats(
    ledger: &Ledger,
    from: Option<u64>,
    to: Option<u64>,
    tenant: Option<&str>,
) -> Result<InterventionStats, QueryError> {
    stats_within(ledger, from, to, tenant, STATS_MAX_DECISIONS)
}

/// [`intervention_stats`] reading at most `cap` decisions.
fn stats_within(
    ledger: &Ledger,
    from: Option<u64>,
    to: Option<u64>,
    tenant: Option<&str>,
    cap: usize,
) -> Result<InterventionStats, QueryError> {
    let size = ledger.head().size;
    let lo = match from {
        Some(t) => ledger.first_index_at_or_after(t, 0, size)?,
        None => 0,
    };
    let hi = match to {
        Some(t) => ledger.first_index_at_or_after(t, lo, size)?,
        None => size,
    };
    let decisions = ledger.decisions(tenant, lo, hi, cap.saturating_add(1))?;
    if decisions.len() > cap {
        return Err(QueryError::LimitTooLarge {
            what: "decisions in the time range (narrow from/to)",
            value: decisions.len() as u64,
            max: cap as u64,
        });
    }
    let mut total = Figures::default();
    let mut by_agent: BTreeMap<&str, Figures> = BTreeMap::new();
    let mut by_policy: BTreeMap<Option<&PolicyVersion>, Figures> = BTreeMap::new();
    for d in &decisions {
        total.add(d);
        by_agent.entry(&d.agent).or_default().add(d);
        by_policy.entry(d.policy.as_ref()).or_default().add(d);
    }
    Ok(InterventionStats {
        total: total.finish(),
        by_agent: by_agent
            .into_iter()
            .map(|(a, f)| (a.to_owned(), f.finish()))
            .collect(),
        by_policy: by_policy
            .into_iter()
            .map(|(p, f)| (p.cloned(), f.finish()))
            .collect(),
    })
}

fn ratio(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

/// The nearest-rank percentile of sorted values: the value at rank ⌈p/100 · n⌉.
fn nearest_rank(sorted: &[u64], p: u64) -> Option<u64> {
    let n = sorted.len() as u64;
    if n == 0 {
        return None;
    }
    let rank = (p * n).div_ceil(100).max(1);
    sorted.get(usize::try_from(rank - 1).ok()?).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_with_more_decisions_than_the_cap_is_refused(
    ) -> Result<(), Box<dyn std::error::Error>> {
        use provledger_ledger::{LedgerConfig, PreparedRecord, RecordInput};
        let dir = tempfile::tempdir()?;
        let key = provledger_signer::SigningKey::generate("test.example/log")?;
        let ledger = Ledger::open(
            &LedgerConfig::new(dir.path()),
            key,
            &prometheus::Registry::new(),
        )?;
        let decision = || -> Result<PreparedRecord, Box<dyn std::error::Error>> {
            let input: RecordInput = serde_json::from_value(serde_json::json!({
                "kind": "decision", "actor": {"type": "agent", "id": "a"},
            }))?;
            Ok(PreparedRecord::prepare(input, "record")?)
        };
        ledger.append_blocking(vec![decision()?, decision()?, decision()?])?;
        assert_eq!(
            stats_within(&ledger, None, None, None, 3)?.total.decisions,
            3
        );
        match stats_within(&ledger, None, None, None, 2) {
            Err(QueryError::LimitTooLarge {
                value: 3, max: 2, ..
            }) => {}
            other => panic!("expected the cap to refuse the range, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(nearest_rank(&[], 50), None);
        assert_eq!(nearest_rank(&[7], 95), Some(7));
        let v: Vec<u64> = (1..=20).collect();
        assert_eq!(nearest_rank(&v, 50), Some(10));
        assert_eq!(nearest_rank(&v, 95), Some(19));
        assert_eq!(nearest_rank(&[1, 2, 3], 50), Some(2));
        assert_eq!(nearest_rank(&[1, 2, 3], 95), Some(3));
    }
}

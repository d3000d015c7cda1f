//! Prometheus metrics of the append pipeline, registered into the caller's registry.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

/// Counters and histograms named after the pipeline stages.
#[derive(Clone)]
pub(crate) struct Metrics {
    pub(crate) records_appended: IntCounter,
    pub(crate) idempotent_hits: IntCounter,
    pub(crate) rejected_jobs: IntCounter,
    pub(crate) pushback: IntCounter,
    pub(crate) batch_records: Histogram,
    pub(crate) commit_seconds: Histogram,
    pub(crate) append_seconds: Histogram,
    pub(crate) tree_size: IntGauge,
    pub(crate) poisoned: IntGauge,
}

impl Metrics {
    pub(crate) fn register(registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let latency = vec![
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
        ];
        let m = Metrics {
            records_appended: IntCounter::new(
                "provledger_records_appended_total",
                "Records appended to the log (acknowledged, fsynced and signed).",
            )?,
            idempotent_hits: IntCounter::new(
                "provledger_idempotent_replays_total",
                "Appends answered with an earlier receipt because their idempotency key was used before.",
            )?,
            rejected_jobs: IntCounter::new(
                "provledger_append_rejected_total",
                "Append requests refused by the writer (unknown refs, idempotency conflicts, oversize leaves).",
            )?,
            pushback: IntCounter::new(
                "provledger_append_pushback_total",
                "Append requests refused because the queue was full (HTTP 503).",
            )?,
            batch_records: Histogram::with_opts(
                HistogramOpts::new(
                    "provledger_batch_records",
                    "Records per group-commit batch.",
                )
                .buckets(vec![
                    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
                    10000.0,
                ]),
            )?,
            commit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "provledger_commit_seconds",
                    "Time to write and fsync one batch (the fsync stage).",
                )
                .buckets(latency.clone()),
            )?,
            append_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "provledger_append_seconds",
                    "Time from enqueueing an append to its receipts being ready.",
                )
                .buckets(latency),
            )?,
            tree_size: IntGauge::new("provledger_tree_size", "Entries in the log.")?,
            poisoned: IntGauge::new(
                "provledger_poisoned",
                "1 when a failed fsync has poisoned the ledger until restart.",
            )?,
        };
        registry.register(Box::new(m.records_appended.clone()))?;
        registry.register(Box::new(m.idempotent_hits.clone()))?;
        registry.register(Box::new(m.rejected_jobs.clone()))?;
        registry.register(Box::new(m.pushback.clone()))?;
        registry.register(Box::new(m.batch_records.clone()))?;
        registry.register(Box::new(m.commit_seconds.clone()))?;
        registry.register(Box::new(m.append_seconds.clone()))?;
        registry.register(Box::new(m.tree_size.clone()))?;
        registry.register(Box::new(m.poisoned.clone()))?;
        Ok(m)
    }
}

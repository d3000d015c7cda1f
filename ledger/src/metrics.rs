//! Prometheus metrics of the append pipeline, registered into the caller's registry.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Counter, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::indexes::Event;
use crate::store::Store;

/// Counters and histograms named after the pipeline stages.
#[derive(Clone)]
pub(crate) struct Metrics {
    pub(crate) records_appended: IntCounter,
    pub(crate) idempotent_hits: IntCounter,
    pub(crate) rejected_jobs: IntCounter,
    pub(crate) pushback: IntCounter,
    pub(crate) batch_records: Histogram,
    pub(crate) commit_seconds: Histogram,
    pub(crate) write_buffer_wait: Counter,
    pub(crate) append_seconds: Histogram,
    pub(crate) tree_size: IntGauge,
    pub(crate) poisoned: IntGauge,
    /// Decisions, escalations and approvals (human in the loop).
    pub(crate) hitl: HitlMetrics,
}

impl Metrics {
    pub(crate) fn register(registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let latency = vec![
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
        ];
        let hitl = HitlMetrics::register(registry)?;
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
            write_buffer_wait: Counter::new(
                "provledger_write_buffer_wait_seconds_total",
                "Time the committer waited for memtable flushes before its next batch (write buffer full).",
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
            hitl,
        };
        registry.register(Box::new(m.records_appended.clone()))?;
        registry.register(Box::new(m.idempotent_hits.clone()))?;
        registry.register(Box::new(m.rejected_jobs.clone()))?;
        registry.register(Box::new(m.pushback.clone()))?;
        registry.register(Box::new(m.batch_records.clone()))?;
        registry.register(Box::new(m.commit_seconds.clone()))?;
        registry.register(Box::new(m.write_buffer_wait.clone()))?;
        registry.register(Box::new(m.append_seconds.clone()))?;
        registry.register(Box::new(m.tree_size.clone()))?;
        registry.register(Box::new(m.poisoned.clone()))?;
        Ok(m)
    }
}

/// Most distinct `(agent, policy)` label pairs the decision metrics take; later pairs are
/// counted under `agent="_other", policy="_other"`, so a flood of agent ids or policy versions
/// cannot grow the registry without bound.
pub(crate) const MAX_HITL_LABEL_PAIRS: usize = 1000;

/// Human-in-the-loop counters, updated by the writer after each batch commits.
#[derive(Clone)]
pub(crate) struct HitlMetrics {
    decisions: IntCounterVec,
    escalations: IntCounterVec,
    approvals: IntCounterVec,
    latency: Histogram,
    /// Label pairs admitted so far (see [`MAX_HITL_LABEL_PAIRS`]).
    admitted: Arc<Mutex<HashSet<(String, String)>>>,
}

impl HitlMetrics {
    fn register(registry: &Registry) -> Result<HitlMetrics, prometheus::Error> {
        let labels = ["agent", "policy"];
        let m = HitlMetrics {
            decisions: IntCounterVec::new(
                Opts::new(
                    "provledger_decisions_total",
                    "Decisions appended (kind decision, or requires_approval: true), by agent and policy version.",
                ),
                &labels,
            )?,
            escalations: IntCounterVec::new(
                Opts::new(
                    "provledger_escalations_total",
                    "Decisions appended with requires_approval: true (escalated to a human).",
                ),
                &labels,
            )?,
            approvals: IntCounterVec::new(
                Opts::new(
                    "provledger_approvals_total",
                    "Escalated decisions resolved, by outcome (approved, rejected), agent and policy version.",
                ),
                &["outcome", "agent", "policy"],
            )?,
            latency: Histogram::with_opts(
                HistogramOpts::new(
                    "provledger_approval_latency_seconds",
                    "Ledger time from an escalated decision to the approval or rejection that resolved it.",
                )
                .buckets(vec![
                    1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4.0 * 3600.0, 86400.0,
                    7.0 * 86400.0,
                ]),
            )?,
            admitted: Arc::default(),
        };
        registry.register(Box::new(m.decisions.clone()))?;
        registry.register(Box::new(m.escalations.clone()))?;
        registry.register(Box::new(m.approvals.clone()))?;
        registry.register(Box::new(m.latency.clone()))?;
        Ok(m)
    }

    /// Counts what a committed batch did.
    pub(crate) fn observe(&self, events: &[Event]) {
        for e in events {
            match e {
                Event::Decided {
                    agent,
                    policy,
                    escalated,
                } => {
                    let (agent, policy) = self.labels(agent, policy);
                    self.decisions.with_label_values(&[&agent, &policy]).inc();
                    if *escalated {
                        self.escalations.with_label_values(&[&agent, &policy]).inc();
                    }
                }
                Event::Resolved {
                    agent,
                    policy,
                    outcome,
                    latency_ms,
                } => {
                    let (agent, policy) = self.labels(agent, policy);
                    self.approvals
                        .with_label_values(&[outcome.as_str(), &agent, &policy])
                        .inc();
                    self.latency.observe(*latency_ms as f64 / 1000.0);
                }
            }
        }
    }

    fn labels(&self, agent: &str, policy: &str) -> (String, String) {
        let pair = (agent.to_owned(), policy.to_owned());
        let Ok(mut admitted) = self.admitted.lock() else {
            return ("_other".into(), "_other".into());
        };
        if admitted.contains(&pair) {
            return pair;
        }
        if admitted.len() < MAX_HITL_LABEL_PAIRS {
            admitted.insert(pair.clone());
            return pair;
        }
        ("_other".into(), "_other".into())
    }
}

/// The store a [`StoreCollector`] reads, until the ledger closes and empties it.
pub(crate) type StoreSlot = Arc<Mutex<Option<Store>>>;

/// Storage gauges read from fjall at scrape time, so an operator can see where memory and disk
/// go: the memtables (write buffer), the block cache, the bloom filters that stay in memory,
/// and each partition's segments and bytes on disk.
///
/// The registry may outlive the ledger (a caller's registry), so the collector holds the store
/// through a slot the ledger empties when it closes: it must not keep the keyspace and the data
/// directory's lock alive.
pub(crate) struct StoreCollector {
    store: StoreSlot,
    write_buffer: IntGauge,
    cache_capacity: IntGauge,
    journal: IntGauge,
    bloom: IntGaugeVec,
    segments: IntGaugeVec,
    disk: IntGaugeVec,
}

impl StoreCollector {
    pub(crate) fn register(
        store: Store,
        registry: &Registry,
    ) -> Result<StoreSlot, prometheus::Error> {
        let slot: StoreSlot = Arc::new(Mutex::new(Some(store)));
        let by_partition =
            |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), &["partition"]);
        let collector = StoreCollector {
            store: slot.clone(),
            write_buffer: IntGauge::new(
                "provledger_store_write_buffer_bytes",
                "Bytes in fjall's memtables (active and sealed), all partitions; capped at 32 MiB.",
            )?,
            cache_capacity: IntGauge::new(
                "provledger_store_block_cache_capacity_bytes",
                "Capacity of fjall's block cache (--cache-mb).",
            )?,
            journal: IntGauge::new(
                "provledger_store_journal_bytes",
                "Bytes of fjall's write-ahead journals on disk.",
            )?,
            bloom: by_partition(
                "provledger_store_bloom_filter_bytes",
                "Bytes of bloom filters held in memory, by partition.",
            )?,
            segments: by_partition(
                "provledger_store_segments",
                "On-disk segments (SSTables), by partition.",
            )?,
            disk: by_partition(
                "provledger_store_disk_bytes",
                "Bytes of segments on disk, by partition.",
            )?,
        };
        registry.register(Box::new(collector))?;
        Ok(slot)
    }
}

impl Collector for StoreCollector {
    fn desc(&self) -> Vec<&Desc> {
        [
            self.write_buffer.desc(),
            self.cache_capacity.desc(),
            self.journal.desc(),
            self.bloom.desc(),
            self.segments.desc(),
            self.disk.desc(),
        ]
        .concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        use fjall::AbstractTree;
        let Ok(slot) = self.store.lock() else {
            return Vec::new();
        };
        let Some(store) = slot.as_ref() else {
            return Vec::new();
        };
        let keyspace = &store.keyspace;
        self.write_buffer
            .set(i64::try_from(keyspace.write_buffer_size()).unwrap_or(i64::MAX));
        self.cache_capacity
            .set(i64::try_from(keyspace.cache_capacity()).unwrap_or(i64::MAX));
        self.journal
            .set(i64::try_from(keyspace.journal_disk_space()).unwrap_or(i64::MAX));
        for (name, partition) in store.partitions() {
            let bloom = partition.tree.bloom_filter_size();
            self.bloom
                .with_label_values(&[name])
                .set(i64::try_from(bloom).unwrap_or(i64::MAX));
            let segments = partition.segment_count();
            self.segments
                .with_label_values(&[name])
                .set(i64::try_from(segments).unwrap_or(i64::MAX));
            self.disk
                .with_label_values(&[name])
                .set(i64::try_from(partition.disk_space()).unwrap_or(i64::MAX));
        }
        [
            self.write_buffer.collect(),
            self.cache_capacity.collect(),
            self.journal.collect(),
            self.bloom.collect(),
            self.segments.collect(),
            self.disk.collect(),
        ]
        .concat()
    }
}

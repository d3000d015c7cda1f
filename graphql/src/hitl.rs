//! GraphQL types of the human-in-the-loop figures (`Query.stats`); the figures themselves are
//! computed by `provledger_query::intervention_stats`.

use async_graphql::SimpleObject;
use provledger_ledger::PolicyVersion as LedgerPolicyVersion;
use provledger_query::{Figures, InterventionStats as QueryStats};

/// Intervention figures of the decisions made in a time range: escalation to humans, approval
/// outcomes and time to approval, in total, per agent and per policy version.
#[derive(SimpleObject)]
pub(crate) struct InterventionStats {
    /// Start of the range (ledger time, ms since the Unix epoch, inclusive); null: the start of
    /// the log.
    from: Option<u64>,
    /// End of the range (exclusive); null: now.
    to: Option<u64>,
    /// Every decision in the range.
    total: InterventionFigures,
    /// Per deciding actor id, in id order.
    by_agent: Vec<AgentFigures>,
    /// Per policy version the decisions cite (role `policy`), in (entity, index) order; a null
    /// `policy` groups decisions that cite none.
    by_policy: Vec<PolicyFigures>,
}

impl InterventionStats {
    pub(crate) fn new(from: Option<u64>, to: Option<u64>, s: QueryStats) -> InterventionStats {
        InterventionStats {
            from,
            to,
            total: s.total.into(),
            by_agent: s
                .by_agent
                .into_iter()
                .map(|(agent, f)| AgentFigures {
                    agent,
                    stats: f.into(),
                })
                .collect(),
            by_policy: s
                .by_policy
                .into_iter()
                .map(|(p, f)| PolicyFigures {
                    policy: p.map(Into::into),
                    stats: f.into(),
                })
                .collect(),
        }
    }
}

/// Counts and rates of a set of decisions.
#[derive(SimpleObject)]
struct InterventionFigures {
    /// Decisions made (kind `decision`, or any record with `requires_approval: true`).
    decisions: u64,
    /// Of them, escalated to a human (`requires_approval: true`).
    escalated: u64,
    /// `escalated / decisions`; null without decisions.
    escalation_rate: Option<f64>,
    /// Escalated decisions an `approval` resolved.
    approvals: u64,
    /// Escalated decisions a `rejection` resolved.
    rejections: u64,
    /// Escalated decisions still waiting.
    pending: u64,
    /// `approvals / (approvals + rejections)`; null before any outcome.
    approval_rate: Option<f64>,
    /// Median ledger time from decision to approval, ms (nearest rank); null without approvals.
    time_to_approval_p50_ms: Option<u64>,
    /// 95th percentile of the same, ms (nearest rank).
    time_to_approval_p95_ms: Option<u64>,
}

impl From<Figures> for InterventionFigures {
    fn from(f: Figures) -> Self {
        InterventionFigures {
            escalation_rate: f.escalation_rate(),
            approval_rate: f.approval_rate(),
            decisions: f.decisions,
            escalated: f.escalated,
            approvals: f.approvals,
            rejections: f.rejections,
            pending: f.pending,
            time_to_approval_p50_ms: f.time_to_approval_p50_ms,
            time_to_approval_p95_ms: f.time_to_approval_p95_ms,
        }
    }
}

/// The figures of one agent's decisions.
#[derive(SimpleObject)]
struct AgentFigures {
    /// Actor id of the decisions.
    agent: String,
    stats: InterventionFigures,
}

/// The figures of the decisions citing one policy version.
#[derive(SimpleObject)]
struct PolicyFigures {
    /// Null for decisions that cite no policy.
    policy: Option<PolicyVersion>,
    stats: InterventionFigures,
}

/// A policy version: the policy record a decision cites with role `policy`.
#[derive(SimpleObject)]
struct PolicyVersion {
    /// Entity of the policy record (e.g. `policy:refunds`), when it names one.
    entity: Option<String>,
    /// Leaf index of the policy record: which version.
    index: u64,
    /// `entity@index`, as in the Prometheus `policy` label.
    label: String,
}

impl From<LedgerPolicyVersion> for PolicyVersion {
    fn from(p: LedgerPolicyVersion) -> Self {
        PolicyVersion {
            label: p.to_string(),
            entity: p.entity,
            index: p.index,
        }
    }
}

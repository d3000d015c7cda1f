//! The GraphQL schema (async-graphql): records, listings, lineage with proofs against one
//! checkpoint, proofs, and appends. Resolvers translate; `provledger-query` and the ledger do
//! the work, on the blocking pool (`spawn_blocking`), never on the executor.
//!
//! Encodings: ids are 64 lowercase hex digits; root and proof hashes, leaves and payload
//! commitments standard base64. `index`, `treeSize`, `time` and the tree-size arguments are
//! `Int`s that carry full 64-bit unsigned values (beyond the 32 bits the GraphQL spec
//! promises for `Int`): JSON numbers, exact up to 2^64 − 1 in any client that parses integers
//! as integers.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_graphql::{
    ComplexObject, Context, Enum, InputObject, Json, Object, Schema, SimpleObject, ID,
};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use provledger_ledger::{
    Ledger, LedgerError, PreparedRecord, Receipt as LedgerReceipt, RecordInput, Role, StoredRecord,
};
use provledger_query::{
    Connection, Direction, Limits, Page, PayloadState, TraceOptions, DEFAULT_MAX_NODES,
    DEFAULT_PAGE_SIZE,
};
use provledger_signer::Hash;

use crate::auth::{Caller, Denied};
use crate::error::Failure;
use crate::server::{parse_id, MAX_RECORDS_PER_REQUEST};
use crate::subscription::SubscriptionRoot;

/// Deepest selection a query may nest (fields inside fields).
pub const MAX_QUERY_DEPTH: usize = 16;
/// Most a query may cost: every field costs 1, a paginated field multiplies what it selects
/// per item by the page size it asks for (`first`, default 20), `lineage` by its node cap
/// (`maxNodes`, default 1,000), and `refs` by [`REFS_COST`].
pub const MAX_QUERY_COMPLEXITY: usize = 100_000;
/// What `refs` multiplies its selection by: a typical decision's fan-in (five inputs, a model,
/// a policy and a little more). A record may have up to 1,024 refs; page sizes and the node
/// cap bound the real work.
pub const REFS_COST: usize = 10;

/// The provledger schema.
pub type ProvSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Builds the schema over a ledger, with its depth and complexity limits.
pub fn build(ledger: Ledger) -> ProvSchema {
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        .data(ledger)
        .limit_depth(MAX_QUERY_DEPTH)
        .limit_complexity(MAX_QUERY_COMPLEXITY)
        .extension(crate::auth::FieldRules)
        .finish()
}

/// Runs one request, coding the errors async-graphql raises itself.
pub async fn execute(
    schema: &ProvSchema,
    request: async_graphql::Request,
) -> async_graphql::Response {
    let mut response = schema.execute(request).await;
    crate::error::code_library_errors(&mut response.errors);
    response
}

/// Cost of a paginated field (see [`MAX_QUERY_COMPLEXITY`]).
fn page_cost(first: Option<u32>, child: usize) -> usize {
    let first = first.map_or(DEFAULT_PAGE_SIZE, |f| f as usize);
    first.max(1).saturating_mul(child).saturating_add(1)
}

/// Runs blocking ledger work on the blocking pool.
async fn blocking<T, F>(ctx: &Context<'_>, f: F) -> Result<T, Failure>
where
    T: Send + 'static,
    F: FnOnce(&Ledger) -> Result<T, Failure> + Send + 'static,
{
    let ledger = ctx
        .data::<Ledger>()
        .map_err(|e| Failure::internal(&e.message))?
        .clone();
    tokio::task::spawn_blocking(move || f(&ledger)).await?
}

/// The caller of the request (anonymous when the server put none in the context).
fn caller<'a>(ctx: &Context<'a>) -> &'a Caller {
    static ANONYMOUS: Caller = Caller::Anonymous;
    ctx.data_opt::<Caller>().unwrap_or(&ANONYMOUS)
}

/// Refuses a kind-limited token whose kinds do not include `kind` (the fields that answer
/// only about records of that kind).
fn require_kind(ctx: &Context<'_>, kind: &str) -> Result<(), Failure> {
    if caller(ctx).may_read_kind(kind) {
        return Ok(());
    }
    Err(Denied(format!("this token may not read records of kind {kind:?}")).into())
}

/// The tenant the caller may see (`None`: every tenant), owned for blocking closures.
fn tenant_scope(ctx: &Context<'_>) -> Option<String> {
    caller(ctx).tenant_scope().map(str::to_owned)
}

fn id_arg(id: &ID) -> Result<Hash, Failure> {
    parse_id(id).ok_or_else(|| {
        Failure::bad_input(format!(
            "id {:?} must be 64 lowercase hex digits",
            id.as_str()
        ))
    })
}

fn page(first: Option<u32>, after: Option<&str>) -> Result<Page, Failure> {
    Ok(Page::new(first.map(u64::from), after)?)
}

/// Queries.
pub struct QueryRoot;

#[Object(name = "Query")]
impl QueryRoot {
    /// A record by id.
    async fn record(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Record>, Failure> {
        let hash = id_arg(&id)?;
        let tenant = tenant_scope(ctx);
        let r = blocking(ctx, move |l| Ok(l.record(&hash, tenant.as_deref())?)).await?;
        if !caller(ctx).may_read_kind(&r.leaf.kind) {
            // Like a record that does not exist: a kind limit must not leak existence.
            return Err(LedgerError::NotFound.into());
        }
        Ok(Some(Record(Arc::new(r))))
    }

    /// Records matching a filter, oldest first, read from the kind, actor (type and id), entity
    /// and time indexes. A filter no index serves (an actor type or id alone; a tenant-scoped
    /// caller filtering by time only) scans the log in order and examines at most 10,000 records
    /// per call: a page may then be short (even empty) with `hasNextPage` true and an
    /// `endCursor` to go on from.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn records(
        &self,
        ctx: &Context<'_>,
        filter: Option<RecordFilter>,
        first: Option<u32>,
        after: Option<String>,
    ) -> Result<RecordConnection, Failure> {
        let page = page(first, after.as_deref())?;
        let filter = filter.map(RecordFilter::into_query).unwrap_or_default();
        if let Caller::Token(t) = caller(ctx) {
            if t.role != Role::Admin
                && t.kinds.is_some()
                && !filter.kind.as_deref().is_some_and(|k| t.allows_kind(k))
            {
                return Err(Denied(
                    "this token is limited to some kinds: name one of them in filter.kind".into(),
                )
                .into());
            }
        }
        let tenant = tenant_scope(ctx);
        let conn = blocking(ctx, move |l| {
            Ok(provledger_query::records(
                l,
                &filter,
                &page,
                tenant.as_deref(),
            )?)
        })
        .await?;
        Ok(RecordConnection::from(conn))
    }

    /// The lineage of a record: the records it rests on (`UPSTREAM`) or that rest on it
    /// (`DOWNSTREAM`), as of tree size `asOf` (the current checkpoint when absent), with every
    /// node's inclusion proof against that one checkpoint.
    #[graphql(complexity = "lineage_cost(max_nodes, child_complexity)")]
    #[allow(clippy::too_many_arguments)] // one per GraphQL argument
    async fn lineage(
        &self,
        ctx: &Context<'_>,
        id: ID,
        direction: LineageDirection,
        #[graphql(desc = "Levels to follow: default 10, at most 50.")] depth: Option<u32>,
        #[graphql(desc = "Tree size to trace as of: only records with a lower index exist.")]
        as_of: Option<u64>,
        #[graphql(desc = "Most nodes to return: default 1,000, at most 10,000.")] max_nodes: Option<
            u32,
        >,
        #[graphql(
            desc = "Follow only records of these kinds (the start record is always returned)."
        )]
        kinds: Option<Vec<String>>,
        #[graphql(desc = "Follow only references with these roles.")] roles: Option<Vec<String>>,
    ) -> Result<Lineage, Failure> {
        let hash = id_arg(&id)?;
        let limits = Limits::new(depth.map(u64::from), max_nodes.map(u64::from))?;
        let (kinds, roles) = (kinds.unwrap_or_default(), roles.unwrap_or_default());
        let tenant = tenant_scope(ctx);
        blocking(ctx, move |l| {
            let checkpoint = Checkpoint::as_of(l, as_of)?;
            let opts = TraceOptions {
                limits,
                as_of: Some(checkpoint.tree_size),
                kinds: &kinds,
                roles: &roles,
                tenant: tenant.as_deref(),
                ..TraceOptions::new(direction.into())
            };
            let lineage = provledger_query::trace(l, &hash, &opts)?;
            let nodes = lineage
                .nodes
                .into_iter()
                .map(|n| {
                    let proof = l.inclusion_proof(n.index, Some(checkpoint.tree_size))?;
                    Ok(LineageNode {
                        proof: InclusionProof::from(proof),
                        node: n,
                    })
                })
                .collect::<Result<_, Failure>>()?;
            Ok(Lineage {
                checkpoint,
                nodes,
                edges: lineage.edges.into_iter().map(Into::into).collect(),
                hidden: lineage.hidden.iter().map(|h| ID(h.to_hex())).collect(),
                truncated: lineage.truncated,
            })
        })
        .await
    }

    /// Escalated decisions (attribute `requires_approval: true`) that no `approval` or
    /// `rejection` record cites yet, oldest first: the queue a human works through.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn pending_approvals(
        &self,
        ctx: &Context<'_>,
        first: Option<u32>,
        after: Option<String>,
    ) -> Result<RecordConnection, Failure> {
        require_kind(ctx, "decision")?;
        let page = page(first, after.as_deref())?;
        let tenant = tenant_scope(ctx);
        let conn = blocking(ctx, move |l| {
            Ok(provledger_query::pending_approvals(
                l,
                &page,
                tenant.as_deref(),
            )?)
        })
        .await?;
        Ok(RecordConnection::from(conn))
    }

    /// Intervention figures of the decisions made in `[from, to)` (ledger time, ms since the
    /// Unix epoch; open-ended when absent): escalations, approvals, rejections, time to
    /// approval, in total, per agent and per policy version. A range holding more than 100,000
    /// decisions is refused (BAD_INPUT): narrow it.
    async fn stats(
        &self,
        ctx: &Context<'_>,
        from: Option<u64>,
        to: Option<u64>,
    ) -> Result<crate::hitl::InterventionStats, Failure> {
        require_kind(ctx, "decision")?;
        let tenant = tenant_scope(ctx);
        let stats = blocking(ctx, move |l| {
            Ok(provledger_query::intervention_stats(
                l,
                from,
                to,
                tenant.as_deref(),
            )?)
        })
        .await?;
        Ok(crate::hitl::InterventionStats::new(from, to, stats))
    }

    /// The latest signed checkpoint.
    async fn checkpoint(&self, ctx: &Context<'_>) -> Result<Checkpoint, Failure> {
        blocking(ctx, |l| Checkpoint::as_of(l, None)).await
    }

    /// RFC 6962 consistency proof between two tree sizes.
    async fn consistency_proof(
        &self,
        ctx: &Context<'_>,
        from: u64,
        to: u64,
    ) -> Result<ConsistencyProof, Failure> {
        let hashes = blocking(ctx, move |l| Ok(l.consistency_proof(from, to)?)).await?;
        Ok(ConsistencyProof {
            from,
            to,
            hashes: hashes.iter().map(Hash::to_base64).collect(),
        })
    }

    /// RFC 6962 inclusion proof of a leaf index against a tree size (the current one when
    /// absent).
    async fn inclusion_proof(
        &self,
        ctx: &Context<'_>,
        index: u64,
        tree_size: Option<u64>,
    ) -> Result<InclusionProof, Failure> {
        let tenant = tenant_scope(ctx);
        let p = blocking(ctx, move |l| {
            Ok(l.tenant_inclusion_proof(index, tree_size, tenant.as_deref())?)
        })
        .await?;
        Ok(InclusionProof::from(p))
    }
}

fn lineage_cost(max_nodes: Option<u32>, child: usize) -> usize {
    let nodes = max_nodes.map_or(DEFAULT_MAX_NODES, |n| n as usize);
    nodes.max(1).saturating_mul(child).saturating_add(1)
}

/// Appends.
pub struct MutationRoot;

#[Object(name = "Mutation")]
impl MutationRoot {
    /// Appends one record; answers once it is durable and signed, with the same receipt as
    /// `POST /v1/records`.
    async fn append(&self, ctx: &Context<'_>, record: RecordInputGql) -> Result<Receipt, Failure> {
        let mut input = record.into_ledger()?;
        caller(ctx).claim_record(&mut input, "record")?;
        let prepared = prepare(ctx, input, "record")?;
        let mut receipts = append(ctx, vec![prepared]).await?;
        receipts
            .pop()
            .map(Receipt::from)
            .ok_or_else(|| Failure::internal(&"the ledger answered an append with no receipt"))
    }

    /// Appends records atomically (all or none), one receipt per record in order.
    async fn append_batch(
        &self,
        ctx: &Context<'_>,
        records: Vec<RecordInputGql>,
    ) -> Result<Vec<Receipt>, Failure> {
        if records.is_empty() {
            return Err(Failure::bad_input("records holds no records"));
        }
        if records.len() > MAX_RECORDS_PER_REQUEST {
            return Err(Failure::bad_input(format!(
                "{} records in one request, at most {MAX_RECORDS_PER_REQUEST} are allowed",
                records.len()
            )));
        }
        let prepared = records
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let field = format!("records[{i}]");
                let mut input = r.into_ledger()?;
                caller(ctx).claim_record(&mut input, &field)?;
                prepare(ctx, input, &field)
            })
            .collect::<Result<_, Failure>>()?;
        Ok(append(ctx, prepared)
            .await?
            .into_iter()
            .map(Receipt::from)
            .collect())
    }
}

/// Validates a record and scrubs its payload with the ledger's redaction policy.
fn prepare(
    ctx: &Context<'_>,
    input: provledger_ledger::RecordInput,
    field: &str,
) -> Result<PreparedRecord, Failure> {
    let ledger = ctx
        .data::<Ledger>()
        .map_err(|e| Failure::internal(&e.message))?;
    Ok(ledger.prepare(input, field)?)
}

async fn append(
    ctx: &Context<'_>,
    records: Vec<PreparedRecord>,
) -> Result<Vec<LedgerReceipt>, Failure> {
    let ledger = ctx
        .data::<Ledger>()
        .map_err(|e| Failure::internal(&e.message))?;
    Ok(ledger.append(records).await?)
}

/// A record, as stored.
#[derive(Clone)]
pub struct Record(pub(crate) Arc<StoredRecord>);

#[Object]
impl Record {
    /// Record id: the leaf hash, lowercase hex.
    async fn id(&self) -> ID {
        ID(self.0.id.to_hex())
    }

    /// Leaf index.
    async fn index(&self) -> u64 {
        self.0.index
    }

    /// The leaf bytes (canonical MessagePack), base64; SHA-256(0x00 ‖ leaf) is the id.
    async fn leaf(&self) -> String {
        B64.encode(&self.0.leaf_bytes)
    }

    /// Owning tenant.
    async fn tenant(&self) -> &str {
        &self.0.leaf.tenant
    }

    /// `input`, `model`, `policy`, `decision`, `output`, `approval`, … (open-ended).
    async fn kind(&self) -> &str {
        &self.0.leaf.kind
    }

    /// The entity this record is a version of.
    async fn entity(&self) -> Option<&str> {
        self.0.leaf.entity.as_deref()
    }

    /// Who wrote it.
    async fn actor(&self) -> Actor {
        Actor {
            kind: self.0.leaf.actor.kind.clone(),
            id: self.0.leaf.actor.id.clone(),
        }
    }

    /// Small, non-sensitive metadata.
    async fn attributes(&self) -> Json<BTreeMap<String, serde_json::Value>> {
        Json(self.0.leaf.attributes.clone())
    }

    /// The content; null when the record has none or it was erased.
    async fn payload(&self) -> Option<Json<serde_json::Value>> {
        self.0.payload.clone().map(Json)
    }

    /// SHA-256(salt ‖ RFC 8785 payload), base64; null without a payload.
    async fn commitment(&self) -> Option<String> {
        self.0.leaf.commitment.map(|c| B64.encode(c))
    }

    /// The redaction policy that scrubbed the record (leaf key `redaction`); null for leaves
    /// written before redaction policies were recorded.
    async fn redaction(&self) -> Option<Redaction> {
        self.0.leaf.redaction.as_ref().map(|r| Redaction {
            version: r.version.clone(),
            digest: hex::encode(r.digest),
            policy: r.policy.map(|p| ID(hex::encode(p))),
        })
    }

    /// Data class.
    async fn classification(&self) -> &str {
        &self.0.leaf.classification
    }

    /// Ledger integration time, milliseconds since the Unix epoch.
    async fn time(&self) -> u64 {
        self.0.leaf.time
    }

    /// The sources this record cites, in its order.
    #[graphql(complexity = "REFS_COST.saturating_mul(child_complexity).saturating_add(1)")]
    async fn refs(&self) -> Vec<Ref> {
        self.0
            .leaf
            .refs
            .iter()
            .map(|r| Ref {
                role: r.role.clone(),
                hash: Hash(r.hash),
            })
            .collect()
    }

    /// Records citing this one, oldest first.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn cited_by(
        &self,
        ctx: &Context<'_>,
        first: Option<u32>,
        after: Option<String>,
    ) -> Result<CitationConnection, Failure> {
        let page = page(first, after.as_deref())?;
        let id = self.0.id;
        let conn = blocking(ctx, move |l| {
            Ok(provledger_query::cited_by(l, &id, &page, None)?)
        })
        .await?;
        Ok(CitationConnection {
            edges: conn
                .items
                .into_iter()
                .map(|(c, (roles, r))| CitationEdge {
                    cursor: c.to_string(),
                    roles,
                    node: Record(Arc::new(r)),
                })
                .collect(),
            page_info: PageInfo {
                has_next_page: conn.has_next_page,
                end_cursor: conn.end_cursor.map(|c| c.to_string()),
            },
        })
    }

    /// Every version of this record's entity (this one included), oldest first; empty when
    /// the record names no entity.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn versions(
        &self,
        ctx: &Context<'_>,
        first: Option<u32>,
        after: Option<String>,
    ) -> Result<RecordConnection, Failure> {
        let page = page(first, after.as_deref())?;
        let Some(entity) = self.0.leaf.entity.clone() else {
            return Ok(RecordConnection::from(Connection {
                items: Vec::new(),
                end_cursor: None,
                has_next_page: false,
            }));
        };
        let tenant = self.0.leaf.tenant.clone();
        let conn = blocking(ctx, move |l| {
            Ok(provledger_query::versions(l, &tenant, &entity, &page)?)
        })
        .await?;
        Ok(RecordConnection::from(conn))
    }

    /// What changed from the previous version of this record's entity (in its tenant): null
    /// when the record names no entity or is the entity's first version.
    async fn changes(
        &self,
        ctx: &Context<'_>,
    ) -> Result<Option<crate::changes::RecordChanges>, Failure> {
        let record = Arc::clone(&self.0);
        let changes = blocking(ctx, move |l| Ok(provledger_query::changes(l, &record)?)).await?;
        Ok(changes.map(crate::changes::RecordChanges))
    }

    /// Inclusion proof of this record against a tree size (the current one when absent).
    async fn proof(
        &self,
        ctx: &Context<'_>,
        tree_size: Option<u64>,
    ) -> Result<InclusionProof, Failure> {
        let index = self.0.index;
        let p = blocking(ctx, move |l| Ok(l.inclusion_proof(index, tree_size)?)).await?;
        Ok(InclusionProof::from(p))
    }
}

/// The redaction policy that scrubbed a record.
#[derive(SimpleObject)]
pub(crate) struct Redaction {
    /// The policy's version.
    version: String,
    /// SHA-256 of the policy's canonical JSON (RFC 8785), lowercase hex.
    digest: String,
    /// Id of the `policy` record holding the policy; null for the built-in policy and for a
    /// policy record itself.
    policy: Option<ID>,
}

/// Who wrote a record.
#[derive(SimpleObject)]
pub(crate) struct Actor {
    /// `agent`, `human`, `service`, …
    #[graphql(name = "type")]
    pub(crate) kind: String,
    /// Identifier within its type.
    pub(crate) id: String,
}

/// A source a record cites.
pub(crate) struct Ref {
    pub(crate) role: String,
    pub(crate) hash: Hash,
}

#[Object]
impl Ref {
    /// `input`, `model`, `policy`, `prompt`, `tool`, `approval`, `parent`, …
    async fn role(&self) -> &str {
        &self.role
    }

    /// Id of the exact version cited.
    async fn id(&self) -> ID {
        ID(self.hash.to_hex())
    }

    /// The cited record.
    async fn record(&self, ctx: &Context<'_>) -> Result<Record, Failure> {
        let hash = self.hash;
        let r = blocking(ctx, move |l| Ok(l.record(&hash, None)?)).await?;
        Ok(Record(Arc::new(r)))
    }
}

/// Relay paging state.
#[derive(SimpleObject)]
struct PageInfo {
    /// True when a next page may hold more items.
    has_next_page: bool,
    /// Pass as `after` to get the next page.
    end_cursor: Option<String>,
}

/// A page of records (Relay connection).
#[derive(SimpleObject)]
struct RecordConnection {
    edges: Vec<RecordEdge>,
    page_info: PageInfo,
}

/// A record with its cursor.
#[derive(SimpleObject)]
struct RecordEdge {
    cursor: String,
    node: Record,
}

impl From<Connection<StoredRecord>> for RecordConnection {
    fn from(c: Connection<StoredRecord>) -> Self {
        RecordConnection {
            edges: c
                .items
                .into_iter()
                .map(|(cursor, r)| RecordEdge {
                    cursor: cursor.to_string(),
                    node: Record(Arc::new(r)),
                })
                .collect(),
            page_info: PageInfo {
                has_next_page: c.has_next_page,
                end_cursor: c.end_cursor.map(|c| c.to_string()),
            },
        }
    }
}

/// A page of citing records (Relay connection).
#[derive(SimpleObject)]
struct CitationConnection {
    edges: Vec<CitationEdge>,
    page_info: PageInfo,
}

/// A citing record, its cursor, and the roles in which it cites.
#[derive(SimpleObject)]
struct CitationEdge {
    cursor: String,
    roles: Vec<String>,
    node: Record,
}

/// Filter of `records`; every field given must match.
#[derive(InputObject)]
struct RecordFilter {
    kind: Option<String>,
    /// Versions of this entity (in the default tenant).
    entity: Option<String>,
    actor: Option<ActorFilter>,
    /// Ledger time, ms since the Unix epoch, inclusive.
    from: Option<u64>,
    /// Ledger time, ms since the Unix epoch, exclusive.
    to: Option<u64>,
}

impl RecordFilter {
    fn into_query(self) -> provledger_query::RecordFilter {
        let (actor_type, actor_id) = self.actor.map_or((None, None), |a| (a.kind, a.id));
        provledger_query::RecordFilter {
            kind: self.kind,
            entity: self.entity,
            actor_type,
            actor_id,
            from: self.from,
            to: self.to,
        }
    }
}

/// Matches actors by type and/or id.
#[derive(InputObject)]
struct ActorFilter {
    #[graphql(name = "type")]
    kind: Option<String>,
    id: Option<String>,
}

/// Which way `lineage` walks.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
enum LineageDirection {
    /// To the sources: what the record cites, transitively.
    Upstream,
    /// To the consequences: what cites the record, transitively.
    Downstream,
}

impl From<LineageDirection> for Direction {
    fn from(d: LineageDirection) -> Direction {
        match d {
            LineageDirection::Upstream => Direction::Upstream,
            LineageDirection::Downstream => Direction::Downstream,
        }
    }
}

/// A lineage answer: a subgraph of the log and the one checkpoint every proof is against.
#[derive(SimpleObject)]
struct Lineage {
    checkpoint: Checkpoint,
    /// The start record first, then breadth-first.
    nodes: Vec<LineageNode>,
    /// `from` cites `to`, whichever way the trace walked.
    edges: Vec<LineageEdge>,
    /// Ids of other tenants' records that edges point to; nothing else about them is returned.
    hidden: Vec<ID>,
    /// True when a limit stopped the trace where more records might have followed.
    truncated: bool,
}

/// A checkpoint: a tree size and its root hash, with the signed note when the server has it.
#[derive(SimpleObject)]
pub(crate) struct Checkpoint {
    pub(crate) tree_size: u64,
    /// RFC 6962 root hash, base64.
    pub(crate) root_hash: String,
    /// The C2SP signed checkpoint note. For a past tree size (`asOf`) it is the note the log
    /// signed at exactly that size when a batch ended there (every size a receipt was given
    /// for); otherwise null, and the root is recomputed from the stored tree: check it against a
    /// checkpoint you hold, or with a consistency proof to the current one.
    pub(crate) note: Option<String>,
}

impl Checkpoint {
    /// The current checkpoint, or the tree at `as_of` entries.
    fn as_of(ledger: &Ledger, as_of: Option<u64>) -> Result<Checkpoint, Failure> {
        let head = ledger.head();
        match as_of {
            Some(n) if n > head.size => Err(Failure::bad_input(format!(
                "asOf {n} is beyond the current tree size {}",
                head.size
            ))),
            Some(n) if n != head.size => Ok(Checkpoint {
                tree_size: n,
                root_hash: ledger.root_at(n)?.to_base64(),
                note: ledger.checkpoint_at(n)?,
            }),
            _ => Ok(Checkpoint {
                tree_size: head.size,
                root_hash: head.root.to_base64(),
                note: Some(head.checkpoint.clone()),
            }),
        }
    }
}

/// One record of a lineage answer.
#[derive(SimpleObject)]
#[graphql(complex)]
struct LineageNode {
    #[graphql(skip)]
    node: provledger_query::Node,
    /// Inclusion proof against the answer's checkpoint.
    proof: InclusionProof,
}

#[ComplexObject]
impl LineageNode {
    /// Record id, lowercase hex.
    async fn id(&self) -> ID {
        ID(self.node.id.to_hex())
    }

    /// Leaf index.
    async fn index(&self) -> u64 {
        self.node.index
    }

    /// Steps from the start record.
    async fn depth(&self) -> u32 {
        self.node.depth
    }

    /// Record kind.
    async fn kind(&self) -> &str {
        &self.node.kind
    }

    /// Entity the record is a version of.
    async fn entity(&self) -> Option<&str> {
        self.node.entity.as_deref()
    }

    /// Who wrote it.
    async fn actor(&self) -> Actor {
        Actor {
            kind: self.node.actor.kind.clone(),
            id: self.node.actor.id.clone(),
        }
    }

    /// Ledger integration time, ms since the Unix epoch.
    async fn time(&self) -> u64 {
        self.node.time
    }

    /// Whether the record has a payload, and whether it is still stored.
    async fn payload_state(&self) -> PayloadStateGql {
        match self.node.payload {
            PayloadState::Present => PayloadStateGql::Present,
            PayloadState::Erased => PayloadStateGql::Erased,
            _ => PayloadStateGql::None,
        }
    }

    /// The whole record.
    async fn record(&self, ctx: &Context<'_>) -> Result<Record, Failure> {
        let index = self.node.index;
        let r = blocking(ctx, move |l| Ok(l.record_at(index)?)).await?;
        Ok(Record(Arc::new(r)))
    }
}

/// A record's payload as the ledger holds it.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "PayloadState")]
enum PayloadStateGql {
    /// Written without a payload.
    None,
    /// Stored beside the tree.
    Present,
    /// Committed to by the leaf, and erased.
    Erased,
}

/// A reference in a lineage answer: `from` cites `to` in `role`.
#[derive(SimpleObject)]
struct LineageEdge {
    from: ID,
    to: ID,
    role: String,
}

impl From<provledger_query::Edge> for LineageEdge {
    fn from(e: provledger_query::Edge) -> Self {
        LineageEdge {
            from: ID(e.from.to_hex()),
            to: ID(e.to.to_hex()),
            role: e.role,
        }
    }
}

/// RFC 6962 inclusion proof.
#[derive(SimpleObject)]
pub(crate) struct InclusionProof {
    index: u64,
    tree_size: u64,
    /// SHA-256(0x00 ‖ leaf), base64.
    leaf_hash: String,
    /// Audit path, leaf side first, base64.
    hashes: Vec<String>,
}

impl From<provledger_ledger::InclusionProof> for InclusionProof {
    fn from(p: provledger_ledger::InclusionProof) -> Self {
        InclusionProof {
            index: p.index,
            tree_size: p.tree_size,
            leaf_hash: p.leaf_hash.to_base64(),
            hashes: p.hashes.iter().map(Hash::to_base64).collect(),
        }
    }
}

/// RFC 6962 consistency proof.
#[derive(SimpleObject)]
struct ConsistencyProof {
    from: u64,
    to: u64,
    /// Consistency path, base64.
    hashes: Vec<String>,
}

/// A signed receipt: the same content as the REST receipt.
#[derive(SimpleObject)]
struct Receipt {
    id: ID,
    index: u64,
    /// Leaf bytes, base64.
    leaf: String,
    tree_size: u64,
    /// Audit path against `checkpoint`, leaf side first, base64.
    inclusion_proof: Vec<String>,
    /// The C2SP signed checkpoint note.
    checkpoint: String,
}

impl From<LedgerReceipt> for Receipt {
    fn from(r: LedgerReceipt) -> Self {
        Receipt {
            id: ID(r.id.to_hex()),
            index: r.index,
            leaf: B64.encode(&r.leaf),
            tree_size: r.tree_size,
            inclusion_proof: r.inclusion_proof.iter().map(Hash::to_base64).collect(),
            checkpoint: r.checkpoint,
        }
    }
}

/// A record to append; mirrors the JSON body of `POST /v1/records`.
#[derive(InputObject)]
#[graphql(name = "RecordInput")]
struct RecordInputGql {
    kind: String,
    tenant: Option<String>,
    entity: Option<String>,
    actor: ActorInput,
    #[graphql(default)]
    refs: Vec<RefInput>,
    /// A JSON object.
    attributes: Option<Json<serde_json::Value>>,
    payload: Option<Json<serde_json::Value>>,
    classification: Option<String>,
    idempotency_key: Option<String>,
}

impl RecordInputGql {
    fn into_ledger(self) -> Result<RecordInput, Failure> {
        let attributes = match self.attributes.map(|j| j.0) {
            None | Some(serde_json::Value::Null) => BTreeMap::new(),
            Some(serde_json::Value::Object(map)) => map.into_iter().collect(),
            Some(_) => return Err(Failure::bad_input("attributes must be a JSON object")),
        };
        Ok(RecordInput {
            kind: self.kind,
            tenant: self.tenant,
            entity: self.entity,
            actor: provledger_ledger::Actor {
                kind: self.actor.kind,
                id: self.actor.id,
            },
            refs: self
                .refs
                .into_iter()
                .map(|r| provledger_ledger::RefInput {
                    role: r.role,
                    target: r.target,
                })
                .collect(),
            attributes,
            payload: self.payload.map(|j| j.0),
            classification: self.classification,
            idempotency_key: self.idempotency_key,
        })
    }
}

/// Who writes a record.
#[derive(InputObject)]
struct ActorInput {
    #[graphql(name = "type")]
    kind: String,
    id: String,
}

/// A source to cite: a record id or an entity name (its latest version).
#[derive(InputObject)]
struct RefInput {
    role: String,
    #[graphql(name = "ref")]
    target: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_keeps_the_names_clients_rely_on() {
        let sdl = build_sdl();
        for contract in [
            "record(id: ID!): Record",
            "records(filter: RecordFilter, first: Int, after: String): RecordConnection!",
            "direction: LineageDirection!",
            "depth: Int",
            "asOf: Int",
            "enum LineageDirection",
            "UPSTREAM",
            "DOWNSTREAM",
            "checkpoint: Checkpoint!",
            "consistencyProof(from: Int!, to: Int!): ConsistencyProof!",
            "inclusionProof(index: Int!, treeSize: Int): InclusionProof!",
            "append(record: RecordInput!): Receipt!",
            "appendBatch(records: [RecordInput!]!): [Receipt!]!",
            "citedBy(first: Int, after: String): CitationConnection!",
            "hasNextPage: Boolean!",
            "endCursor: String",
            "type Query {",
            "type Mutation {",
            "type Subscription {",
            "recordAppended(",
            "changes: RecordChanges",
        ] {
            assert!(sdl.contains(contract), "schema lacks {contract:?}:\n{sdl}");
        }
    }

    /// `docs/schema.graphql` is the schema as served; regenerate it with
    /// `PROVLEDGER_WRITE_SCHEMA=1 cargo test -p provledger-graphql docs_schema`.
    #[test]
    fn docs_schema_is_the_served_schema() {
        let sdl = build_sdl();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/schema.graphql");
        if std::env::var_os("PROVLEDGER_WRITE_SCHEMA").is_some() {
            std::fs::write(path, &sdl).expect("write docs/schema.graphql");
        }
        let documented = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            documented == sdl,
            "docs/schema.graphql is stale; run PROVLEDGER_WRITE_SCHEMA=1 cargo test -p provledger-graphql docs_schema"
        );
    }

    fn build_sdl() -> String {
        Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
            .finish()
            .sdl()
    }
}

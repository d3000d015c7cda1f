//! Lineage traversal: breadth-first over the hash-linked record DAG, upstream along each leaf's
//! `refs`, downstream along the ledger's reverse-reference index, as of a tree size.
//!
//! Why it terminates without a cycle check: a leaf cites its sources by leaf hash, the ledger
//! resolves every ref to a record that is already in the log (or earlier in the same batch), and
//! a leaf's hash covers its refs; so every edge points from a later index to an earlier one.
//! Traversal still visits each record at most once, which the tests check together with the
//! ordering itself.

use std::collections::{HashMap, VecDeque};

use provledger_ledger::{Actor, Leaf, LeafRef, Ledger, LedgerError, StoredRecord};
use provledger_signer::Hash;

use crate::QueryError;

/// Levels followed when the caller does not say.
pub const DEFAULT_DEPTH: u32 = 10;
/// Most levels a trace may follow.
pub const MAX_DEPTH: u32 = 50;
/// Nodes returned when the caller does not say.
pub const DEFAULT_MAX_NODES: usize = 1000;
/// Most nodes a trace may return.
pub const MAX_MAX_NODES: usize = 10_000;
/// Records a trace may read per node it is allowed to return, so that filters that reject most
/// of what they see (a kind filter downstream of a popular policy) stay bounded too.
const READS_PER_NODE: usize = 10;
/// Reverse-reference entries read per call while paging through the records citing a node.
const CITED_BY_PAGE: usize = 256;

/// Which way to walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Direction {
    /// To the sources: what a record cites, transitively.
    Upstream,
    /// To the consequences: what cites a record, transitively.
    Downstream,
}

/// Bounds of one trace, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    depth: u32,
    max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            depth: DEFAULT_DEPTH,
            max_nodes: DEFAULT_MAX_NODES,
        }
    }
}

impl Limits {
    /// Depth (default [`DEFAULT_DEPTH`], at most [`MAX_DEPTH`]; 0 returns the start record
    /// alone) and node cap (default [`DEFAULT_MAX_NODES`], 1 to [`MAX_MAX_NODES`]).
    pub fn new(depth: Option<u64>, max_nodes: Option<u64>) -> Result<Limits, QueryError> {
        let depth = match depth {
            None => DEFAULT_DEPTH,
            Some(d) => u32::try_from(d).ok().filter(|d| *d <= MAX_DEPTH).ok_or(
                QueryError::LimitTooLarge {
                    what: "depth",
                    value: d,
                    max: u64::from(MAX_DEPTH),
                },
            )?,
        };
        let max_nodes = match max_nodes {
            None => DEFAULT_MAX_NODES,
            Some(n) => usize::try_from(n)
                .ok()
                .filter(|n| *n <= MAX_MAX_NODES)
                .ok_or(QueryError::LimitTooLarge {
                    what: "max_nodes",
                    value: n,
                    max: MAX_MAX_NODES as u64,
                })?
                .max(1),
        };
        Ok(Limits { depth, max_nodes })
    }

    /// Levels followed.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Most nodes returned.
    pub fn max_nodes(&self) -> usize {
        self.max_nodes
    }
}

/// What to trace and how.
#[derive(Clone, Debug)]
pub struct TraceOptions<'a> {
    /// Which way to walk.
    pub direction: Direction,
    /// Depth and node bounds.
    pub limits: Limits,
    /// Trace the log as it was at this tree size: only records with index < `as_of` exist.
    /// The current size when `None`.
    pub as_of: Option<u64>,
    /// The caller's tenant. When given, records of other tenants are not followed: the edge to
    /// one is kept and its id listed in [`Lineage::hidden`], but nothing else about it is
    /// returned and nothing beyond it is walked. `None` sees every tenant.
    pub tenant: Option<&'a str>,
    /// Follow only records of these kinds (all when empty). A record of another kind is
    /// neither returned nor walked through; the start record is always returned.
    pub kinds: &'a [String],
    /// Follow only references with these roles (all when empty).
    pub roles: &'a [String],
}

impl<'a> TraceOptions<'a> {
    /// Default limits, current tree, every tenant, no filters.
    pub fn new(direction: Direction) -> TraceOptions<'a> {
        TraceOptions {
            direction,
            limits: Limits::default(),
            as_of: None,
            tenant: None,
            kinds: &[],
            roles: &[],
        }
    }

    fn follows_role(&self, role: &str) -> bool {
        self.roles.is_empty() || self.roles.iter().any(|r| r == role)
    }

    fn follows_kind(&self, kind: &str) -> bool {
        self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind)
    }
}

/// A subgraph of the log around one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lineage {
    /// The tree size the trace ran against; every node's index is below it.
    pub tree_size: u64,
    /// Records reached, the start record first, then in breadth-first order.
    pub nodes: Vec<Node>,
    /// References between records: `from` cites `to`, whichever way the trace walked.
    pub edges: Vec<Edge>,
    /// Ids of records of other tenants that edges point to (see [`TraceOptions::tenant`]).
    pub hidden: Vec<Hash>,
    /// True when a limit (depth, node cap or read budget) stopped the trace where more records
    /// might have followed.
    pub truncated: bool,
}

/// One record of a lineage answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Record id (leaf hash).
    pub id: Hash,
    /// Leaf index.
    pub index: u64,
    /// Steps from the start record.
    pub depth: u32,
    /// Owning tenant.
    pub tenant: String,
    /// Record kind.
    pub kind: String,
    /// Entity the record is a version of.
    pub entity: Option<String>,
    /// Writer.
    pub actor: Actor,
    /// Ledger integration time, ms since the Unix epoch.
    pub time: u64,
    /// Whether the record has a payload, and whether it is still there.
    pub payload: PayloadState,
}

/// A record's payload as the ledger holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PayloadState {
    /// The record was written without a payload.
    None,
    /// The payload is stored beside the tree.
    Present,
    /// The leaf commits to a payload that has been erased.
    Erased,
}

/// A reference between two records of a lineage answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    /// The citing record.
    pub from: Hash,
    /// The cited record.
    pub to: Hash,
    /// Role of the source, as the citing record states it.
    pub role: String,
}

impl Node {
    fn new(r: &StoredRecord, depth: u32) -> Node {
        let l = &r.leaf;
        Node {
            id: r.id,
            index: r.index,
            depth,
            tenant: l.tenant.clone(),
            kind: l.kind.clone(),
            entity: l.entity.clone(),
            actor: l.actor.clone(),
            time: l.time,
            payload: match (&l.commitment, &r.payload) {
                (None, _) => PayloadState::None,
                (Some(_), Some(_)) => PayloadState::Present,
                (Some(_), None) => PayloadState::Erased,
            },
        }
    }
}

/// Traces the lineage of record `id`. Blocking: run it off the async executor.
pub fn trace(ledger: &Ledger, id: &Hash, opts: &TraceOptions<'_>) -> Result<Lineage, QueryError> {
    let current = ledger.head().size;
    let as_of = match opts.as_of {
        Some(n) if n > current => {
            return Err(QueryError::AsOfAhead {
                as_of: n,
                tree_size: current,
            })
        }
        Some(n) => n,
        None => current,
    };
    let not_found = QueryError::NotFound {
        id: *id,
        tree_size: as_of,
    };
    let Some((index, owner)) = ledger.locate(id)? else {
        return Err(not_found);
    };
    if index >= as_of || opts.tenant.is_some_and(|t| t != owner) {
        return Err(not_found);
    }
    let start = ledger.record_at(index)?;
    let mut walk = Walk {
        ledger,
        opts,
        as_of,
        out: Lineage {
            tree_size: as_of,
            nodes: vec![Node::new(&start, 0)],
            edges: Vec::new(),
            hidden: Vec::new(),
            truncated: false,
        },
        seen: HashMap::from([(start.index, (Seen::Node, start.id))]),
        queue: VecDeque::from([Pending {
            index: start.index,
            id: start.id,
            refs: start.leaf.refs,
            depth: 0,
        }]),
        reads: 0,
        max_reads: opts.limits.max_nodes.saturating_mul(READS_PER_NODE),
    };
    walk.run()?;
    Ok(walk.out)
}

/// What a trace decided about a record it has met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// Returned as a node (and expanded, or queued to be).
    Node,
    /// Another tenant's: only its id is returned.
    Hidden,
    /// Rejected by the kind filter.
    Filtered,
}

/// What became of a record met for the first time.
enum Admit {
    /// Returned as a node; its id.
    Kept(Hash),
    /// Rejected by the kind filter.
    Filtered,
    /// The node cap is reached.
    Stop,
}

/// Whether a trace goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Continue,
    /// A limit was hit: stop the whole trace.
    Stop,
}

struct Walk<'l, 'o> {
    ledger: &'l Ledger,
    opts: &'o TraceOptions<'o>,
    as_of: u64,
    out: Lineage,
    /// Every record met, by index, with its id.
    seen: HashMap<u64, (Seen, Hash)>,
    /// Nodes to expand, breadth first.
    queue: VecDeque<Pending>,
    /// Storage reads so far, against `max_reads`.
    reads: usize,
    max_reads: usize,
}

impl Walk<'_, '_> {
    fn run(&mut self) -> Result<(), QueryError> {
        while let Some(node) = self.queue.pop_front() {
            if node.depth >= self.opts.limits.depth {
                // Not expanded: say so when there was something to expand.
                if self.has_neighbours(&node)? {
                    self.out.truncated = true;
                }
                continue;
            }
            let step = match self.opts.direction {
                Direction::Upstream => self.upstream(&node)?,
                Direction::Downstream => self.downstream(&node)?,
            };
            if step == Step::Stop {
                self.out.truncated = true;
                return Ok(());
            }
        }
        Ok(())
    }

    fn has_neighbours(&self, node: &Pending) -> Result<bool, QueryError> {
        Ok(match self.opts.direction {
            Direction::Upstream => node.refs.iter().any(|r| self.opts.follows_role(&r.role)),
            Direction::Downstream => !self
                .ledger
                .cited_by(&node.id, None, Some(self.as_of), 1)?
                .is_empty(),
        })
    }

    /// Follows a node's refs to the records it cites: one edge per ref.
    fn upstream(&mut self, node: &Pending) -> Result<Step, QueryError> {
        let opts = self.opts;
        for r in node.refs.iter().filter(|r| opts.follows_role(&r.role)) {
            let cited = Hash(r.hash);
            let located = self.ledger.locate(&cited)?;
            // A ref must name an earlier record: one that is missing or not older than its
            // citer means the store is damaged.
            let Some((index, owner)) = located.filter(|(i, _)| *i < node.index) else {
                return Err(QueryError::BrokenLink {
                    citing: node.index,
                    cited,
                });
            };
            let other = match self.seen.get(&index) {
                Some((Seen::Filtered, _)) => continue,
                Some((_, id)) => *id,
                None if opts.tenant.is_some_and(|t| t != owner) => self.hide(index, cited),
                None => {
                    if self.charge() == Step::Stop {
                        return Ok(Step::Stop);
                    }
                    let record = self.ledger.record_at(index)?;
                    if record.id != cited {
                        return Err(QueryError::Ledger(LedgerError::Corrupt(format!(
                            "the id index maps {cited} to entry {index}, whose hash is {}",
                            record.id
                        ))));
                    }
                    match self.admit(record, node.depth + 1) {
                        Admit::Kept(id) => id,
                        Admit::Filtered => continue,
                        Admit::Stop => return Ok(Step::Stop),
                    }
                }
            };
            self.out.edges.push(Edge {
                from: node.id,
                to: other,
                role: r.role.clone(),
            });
        }
        Ok(Step::Continue)
    }

    /// Pages through the reverse-reference index to the records citing a node: one edge per
    /// ref of the citing leaf that names the node (a record may cite another more than once,
    /// in different roles, and the leaf is the authority on roles).
    fn downstream(&mut self, node: &Pending) -> Result<Step, QueryError> {
        let mut after = None;
        loop {
            if self.charge() == Step::Stop {
                return Ok(Step::Stop);
            }
            let page = self
                .ledger
                .cited_by(&node.id, after, Some(self.as_of), CITED_BY_PAGE)?;
            let mut previous = None;
            for &(index, _) in &page {
                // The index lists each ref; the leaf gives all of a citer's roles at once.
                if previous.replace(index) == Some(index) {
                    continue;
                }
                if self.charge() == Step::Stop {
                    return Ok(Step::Stop);
                }
                let (other, roles) = match self.seen.get(&index) {
                    Some((Seen::Filtered, _)) => continue,
                    Some((_, id)) => {
                        let id = *id;
                        let leaf = Leaf::decode(&self.ledger.leaf(index)?)?;
                        (id, self.roles_toward(&leaf.refs, &node.id))
                    }
                    None => {
                        let record = self.ledger.record_at(index)?;
                        let roles = self.roles_toward(&record.leaf.refs, &node.id);
                        if roles.is_empty() {
                            continue;
                        }
                        let foreign = self.opts.tenant.is_some_and(|t| t != record.leaf.tenant);
                        if foreign {
                            (self.hide(index, record.id), roles)
                        } else {
                            match self.admit(record, node.depth + 1) {
                                Admit::Kept(id) => (id, roles),
                                Admit::Filtered => continue,
                                Admit::Stop => return Ok(Step::Stop),
                            }
                        }
                    }
                };
                self.out.edges.extend(roles.into_iter().map(|role| Edge {
                    from: other,
                    to: node.id,
                    role,
                }));
            }
            match page.last() {
                Some((last, _)) if page.len() == CITED_BY_PAGE => after = Some(*last),
                _ => return Ok(Step::Continue),
            }
        }
    }

    /// Roles, passing the role filter, in which `refs` cite `target`.
    fn roles_toward(&self, refs: &[LeafRef], target: &Hash) -> Vec<String> {
        refs.iter()
            .filter(|r| r.hash == target.0 && self.opts.follows_role(&r.role))
            .map(|r| r.role.clone())
            .collect()
    }

    /// Decides about a record of the caller's tenant met for the first time.
    fn admit(&mut self, record: StoredRecord, depth: u32) -> Admit {
        if !self.opts.follows_kind(&record.leaf.kind) {
            self.seen.insert(record.index, (Seen::Filtered, record.id));
            return Admit::Filtered;
        }
        if self.out.nodes.len() >= self.opts.limits.max_nodes {
            return Admit::Stop;
        }
        self.seen.insert(record.index, (Seen::Node, record.id));
        self.out.nodes.push(Node::new(&record, depth));
        let id = record.id;
        self.queue.push_back(Pending {
            index: record.index,
            id,
            refs: record.leaf.refs,
            depth,
        });
        Admit::Kept(id)
    }

    /// Records another tenant's record by id only.
    fn hide(&mut self, index: u64, id: Hash) -> Hash {
        self.seen.insert(index, (Seen::Hidden, id));
        self.out.hidden.push(id);
        id
    }

    /// Counts one storage read against the budget.
    fn charge(&mut self) -> Step {
        self.reads += 1;
        if self.reads > self.max_reads {
            Step::Stop
        } else {
            Step::Continue
        }
    }
}

/// A node waiting to be expanded.
struct Pending {
    index: u64,
    id: Hash,
    refs: Vec<LeafRef>,
    depth: u32,
}

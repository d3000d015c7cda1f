//! Listings in log order (oldest first), one page at a time: records by filter, the records
//! citing one record, the versions of an entity.
//!
//! `records(filter)` reads indexes, never the whole log: `entity` the entity version index,
//! `kind` the kind index, `actor` (type *and* id) the actor index, and a time range becomes an
//! index range by binary search (integration time never runs backwards). Several indexed fields
//! intersect by leapfrogging: each list seeks to the largest candidate so far, so the most
//! selective list drives and no list is read in full. Only filters no index serves — an actor
//! type or id alone, or a tenant with nothing but a time range — scan in index order, examining
//! at most [`SCAN_BUDGET`] records per call and handing back a cursor to go on from.

use provledger_ledger::{Leaf, Ledger, Posting, StoredRecord, DEFAULT_TENANT};
use provledger_signer::Hash;

use crate::page::{Connection, Cursor, Page};
use crate::QueryError;

/// Most records one unindexed listing call examines before it answers with what it found so
/// far; the answer then has `has_next_page` and an `end_cursor` past the last record examined.
pub const SCAN_BUDGET: usize = 10_000;
/// Candidates read from an index per storage call.
pub(crate) const BATCH: usize = 256;

/// Which records to list; every field given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordFilter {
    /// Record kind.
    pub kind: Option<String>,
    /// Entity name: the versions of that entity, in the caller's tenant (or the default tenant
    /// when the caller has none).
    pub entity: Option<String>,
    /// Actor type.
    pub actor_type: Option<String>,
    /// Actor id.
    pub actor_id: Option<String>,
    /// Ledger time, ms since the Unix epoch, inclusive.
    pub from: Option<u64>,
    /// Ledger time, ms since the Unix epoch, exclusive.
    pub to: Option<u64>,
}

impl RecordFilter {
    fn matches(&self, leaf: &Leaf, tenant: Option<&str>) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        tenant.is_none_or(|t| t == leaf.tenant)
            && eq(&self.kind, &leaf.kind)
            && self
                .entity
                .as_deref()
                .is_none_or(|e| leaf.entity.as_deref() == Some(e))
            && eq(&self.actor_type, &leaf.actor.kind)
            && eq(&self.actor_id, &leaf.actor.id)
    }
}

/// An ascending list of record indexes an index serves.
enum List<'a> {
    Posting(Posting<'a>),
    Entity { owner: &'a str, entity: &'a str },
}

impl List<'_> {
    /// Up to `limit` indexes of the list in `[from, to)`.
    fn seek(
        &self,
        ledger: &Ledger,
        tenant: Option<&str>,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<u64>, QueryError> {
        Ok(match self {
            List::Posting(p) => ledger.postings(tenant, p, from, to, limit)?,
            List::Entity { owner, entity } => ledger
                .entity_versions(owner, entity, from.checked_sub(1), limit)?
                .into_iter()
                .map(|(i, _)| i)
                .take_while(|i| *i < to)
                .collect(),
        })
    }
}

/// One page of the records matching `filter`, oldest first. `tenant`, when given, hides other
/// tenants' records. Blocking: run it off the async executor.
pub fn records(
    ledger: &Ledger,
    filter: &RecordFilter,
    page: &Page,
    tenant: Option<&str>,
) -> Result<Connection<StoredRecord>, QueryError> {
    let size = ledger.head().size;
    let lo = match filter.from {
        Some(t) => ledger.first_index_at_or_after(t, 0, size)?,
        None => 0,
    };
    let hi = match filter.to {
        Some(t) => ledger.first_index_at_or_after(t, 0, size)?,
        None => size,
    };
    let mut lists = Vec::new();
    if let Some(entity) = &filter.entity {
        lists.push(List::Entity {
            owner: tenant.unwrap_or(DEFAULT_TENANT),
            entity,
        });
    }
    if let Some(kind) = &filter.kind {
        lists.push(List::Posting(Posting::Kind(kind)));
    }
    if let (Some(kind), Some(id)) = (&filter.actor_type, &filter.actor_id) {
        lists.push(List::Posting(Posting::Actor { kind, id }));
    }
    let start = |after: Option<u64>| after.map_or(0, |a| a.saturating_add(1)).max(lo);
    let take = |index: u64, ()| {
        let r = ledger.record_at(index)?;
        Ok(filter.matches(&r.leaf, tenant).then_some(r))
    };
    let next = |after: Option<u64>| -> Result<Vec<(u64, ())>, QueryError> {
        let from = start(after);
        let found = match lists.as_slice() {
            // No index applies: every index in the range is a candidate.
            [] => (from..hi.min(from.saturating_add(BATCH as u64))).collect(),
            [one] => one.seek(ledger, tenant, from, hi, BATCH)?,
            many => leapfrog(ledger, tenant, many, from, hi, BATCH)?,
        };
        Ok(found.into_iter().map(|i| (i, ())).collect())
    };
    collect(page, next, take)
}

/// Up to `limit` indexes in `[from, to)` present in every list: each list in turn seeks to the
/// current candidate; a list that skips past it raises the candidate for all.
fn leapfrog(
    ledger: &Ledger,
    tenant: Option<&str>,
    lists: &[List<'_>],
    from: u64,
    to: u64,
    limit: usize,
) -> Result<Vec<u64>, QueryError> {
    let mut out = Vec::new();
    let mut candidate = from;
    'next: while out.len() < limit && candidate < to {
        let mut agreed = 0;
        for list in lists.iter().cycle() {
            let Some(&at) = list.seek(ledger, tenant, candidate, to, 1)?.first() else {
                break 'next;
            };
            if at == candidate {
                agreed += 1;
                if agreed == lists.len() {
                    out.push(candidate);
                    candidate += 1;
                    continue 'next;
                }
            } else {
                candidate = at;
                agreed = 1;
            }
        }
    }
    Ok(out)
}

/// One page of the records citing `id`, oldest first, each with the roles it cites `id` in.
/// Blocking: run it off the async executor.
pub fn cited_by(
    ledger: &Ledger,
    id: &Hash,
    page: &Page,
    tenant: Option<&str>,
) -> Result<Connection<(Vec<String>, StoredRecord)>, QueryError> {
    let size = ledger.head().size;
    match ledger.locate(id)? {
        Some((_, owner)) if tenant.is_none_or(|t| t == owner) => {}
        _ => {
            return Err(QueryError::NotFound {
                id: *id,
                tree_size: size,
            })
        }
    }
    let next = |after: Option<u64>| Ok(ledger.cited_by(id, after, Some(size), BATCH)?);
    let take = |index: u64, _| {
        let r = ledger.record_at(index)?;
        // The leaf, not the index, says in which roles: a record may cite another more than once.
        let roles = r
            .leaf
            .refs
            .iter()
            .filter(|x| x.hash == id.0)
            .map(|x| x.role.clone())
            .collect();
        Ok(tenant
            .is_none_or(|t| t == r.leaf.tenant)
            .then_some((roles, r)))
    };
    collect(page, next, take)
}

/// One page of the versions of `entity` in `tenant`, oldest first. Blocking.
pub fn versions(
    ledger: &Ledger,
    tenant: &str,
    entity: &str,
    page: &Page,
) -> Result<Connection<StoredRecord>, QueryError> {
    let filter = RecordFilter {
        entity: Some(entity.to_owned()),
        ..RecordFilter::default()
    };
    records(ledger, &filter, page, Some(tenant))
}

/// Collects one page from candidates in log order: `next(after)` yields the candidates after an
/// index (ascending; empty at the end), `take` turns a matching one into an item. One match
/// beyond the page is looked for to answer `has_next_page` exactly, within [`SCAN_BUDGET`].
pub(crate) fn collect<T, C>(
    page: &Page,
    mut next: impl FnMut(Option<u64>) -> Result<Vec<(u64, C)>, QueryError>,
    mut take: impl FnMut(u64, C) -> Result<Option<T>, QueryError>,
) -> Result<Connection<T>, QueryError> {
    let mut items: Vec<(Cursor, T)> = Vec::new();
    let mut examined = 0;
    let mut after = page.after().map(|c| c.0);
    let end = |items: Vec<(Cursor, T)>, has_next_page| {
        let end_cursor = items.last().map(|(c, _)| *c);
        Connection {
            items,
            end_cursor,
            has_next_page,
        }
    };
    loop {
        let batch = next(after)?;
        if batch.is_empty() {
            return Ok(end(items, false));
        }
        for (index, extra) in batch {
            if examined == SCAN_BUDGET {
                // Out of budget: go on after the last record examined, matched or not.
                let mut out = end(items, true);
                out.end_cursor = after.map(Cursor).max(out.end_cursor);
                return Ok(out);
            }
            examined += 1;
            if let Some(item) = take(index, extra)? {
                if items.len() == page.first() {
                    return Ok(end(items, true));
                }
                items.push((Cursor(index), item));
            }
            after = Some(index);
        }
    }
}

//! Listings in log order (oldest first), one page at a time: records by filter, the records
//! citing one record, the versions of an entity.
//!
//! This slice has no kind, actor or time index. An `entity` filter reads the ledger's version
//! index; a time range becomes an index range by binary search (integration time never runs
//! backwards); everything else is a scan in index order that examines at most
//! [`SCAN_BUDGET`] records per call and hands back a cursor to go on from.

use provledger_ledger::{Leaf, Ledger, StoredRecord, DEFAULT_TENANT};
use provledger_signer::Hash;

use crate::page::{Connection, Cursor, Page};
use crate::QueryError;

/// Most records one listing call examines before it answers with what it found so far; the
/// answer then has `has_next_page` and an `end_cursor` past the last record examined.
pub const SCAN_BUDGET: usize = 10_000;
/// Candidates read from an index per storage call.
const BATCH: usize = 256;

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
            && eq(&self.actor_type, &leaf.actor.kind)
            && eq(&self.actor_id, &leaf.actor.id)
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
    let start = |after: Option<u64>| after.map_or(0, |a| a.saturating_add(1)).max(lo);
    let take = |index: u64, ()| {
        let leaf = Leaf::decode(&ledger.leaf(index)?)?;
        if !filter.matches(&leaf, tenant) {
            return Ok(None);
        }
        Ok(Some(ledger.record_at(index)?))
    };
    match &filter.entity {
        Some(entity) => {
            let owner = tenant.unwrap_or(DEFAULT_TENANT);
            let next = |after: Option<u64>| {
                let from = start(after).checked_sub(1);
                Ok(ledger
                    .entity_versions(owner, entity, from, BATCH)?
                    .into_iter()
                    .filter(|(i, _)| *i < hi)
                    .map(|(i, _)| (i, ()))
                    .collect())
            };
            collect(page, next, take)
        }
        None => {
            let next = |after: Option<u64>| {
                let from = start(after);
                let to = hi.min(from.saturating_add(BATCH as u64));
                Ok((from..to).map(|i| (i, ())).collect())
            };
            collect(page, next, take)
        }
    }
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
fn collect<T, C>(
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

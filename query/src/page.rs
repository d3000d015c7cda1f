//! Cursor pagination shared by every listing: a page asks for the `first` items after a cursor,
//! and answers with the items, each with its cursor, and where to continue.

use std::fmt;
use std::str::FromStr;

use crate::QueryError;

/// Items a page holds when the caller does not say.
pub const DEFAULT_PAGE_SIZE: usize = 20;
/// Most items one page may hold.
pub const MAX_PAGE_SIZE: usize = 100;

/// A position in a listing. Every listing is in log order, so a cursor is a leaf index; clients
/// must treat its text as opaque.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor(pub u64);

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Cursor {
    type Err = QueryError;

    fn from_str(s: &str) -> Result<Cursor, QueryError> {
        // Only the canonical decimal form this module prints: no sign, no leading zeros.
        let canonical = !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit())
            && (s == "0" || !s.starts_with('0'));
        canonical
            .then(|| s.parse().ok())
            .flatten()
            .map(Cursor)
            .ok_or_else(|| QueryError::InvalidCursor(s.to_owned()))
    }
}

/// A validated page request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    first: usize,
    after: Option<Cursor>,
}

impl Page {
    /// `first` items (default [`DEFAULT_PAGE_SIZE`], at most [`MAX_PAGE_SIZE`]) after `after`
    /// (from the start when `None`).
    pub fn new(first: Option<u64>, after: Option<&str>) -> Result<Page, QueryError> {
        let first = match first {
            None => DEFAULT_PAGE_SIZE,
            Some(n) if n > MAX_PAGE_SIZE as u64 => {
                return Err(QueryError::LimitTooLarge {
                    what: "first",
                    value: n,
                    max: MAX_PAGE_SIZE as u64,
                })
            }
            Some(n) => usize::try_from(n).unwrap_or(MAX_PAGE_SIZE),
        };
        let after = after.map(str::parse).transpose()?;
        Ok(Page { first, after })
    }

    /// Items asked for.
    pub fn first(&self) -> usize {
        self.first
    }

    /// Where the page starts (exclusive).
    pub fn after(&self) -> Option<Cursor> {
        self.after
    }
}

/// One page of a listing.
#[derive(Clone, Debug)]
pub struct Connection<T> {
    /// The items with their cursors, in log order.
    pub items: Vec<(Cursor, T)>,
    /// Where the next page starts. It is the last item's cursor, or past it when the listing
    /// examined further records without finding more matches.
    pub end_cursor: Option<Cursor>,
    /// True when a next page may hold more items.
    pub has_next_page: bool,
}

impl<T> Connection<T> {
    /// Applies `f` to every item, keeping cursors and paging state.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Connection<U> {
        let mut f = f;
        Connection {
            items: self.items.into_iter().map(|(c, t)| (c, f(t))).collect(),
            end_cursor: self.end_cursor,
            has_next_page: self.has_next_page,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        for n in [0u64, 7, u64::MAX] {
            assert_eq!(
                Cursor(n).to_string().parse::<Cursor>().ok(),
                Some(Cursor(n))
            );
        }
        for bad in [
            "",
            "-1",
            "+1",
            "01",
            "1.0",
            "abc",
            "18446744073709551616",
            " 1",
        ] {
            assert!(
                matches!(bad.parse::<Cursor>(), Err(QueryError::InvalidCursor(_))),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn pages_default_and_cap_their_size() {
        assert_eq!(Page::new(None, None).ok().map(|p| p.first()), Some(20));
        assert_eq!(
            Page::new(Some(100), None).ok().map(|p| p.first()),
            Some(100)
        );
        assert!(matches!(
            Page::new(Some(101), None),
            Err(QueryError::LimitTooLarge { what: "first", .. })
        ));
        assert!(Page::new(None, Some("x")).is_err());
    }
}

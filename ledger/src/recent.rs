//! What the append pipeline's writer remembers of the records it committed lately, so that a
//! ref to one of them (an agent's decision citing the input it was just given, by name or by
//! the id in its receipt; the model and policy that every decision names) does not read an
//! index. Refs to anything else read the index as before.
//!
//! Measured with `REFS=2 append_profile 300 4` (each record citing two of 1,000 earlier
//! records): a ref by entity name cost the writer ~7.8 µs (a reverse range read over every
//! level of `entity_versions`), a ref by id ~3.2 µs (a point read past the bloom filters of
//! every segment of `ids`); `docs/benchmarks.md`, session 22.

use std::hash::Hash;

/// Entries kept per generation of a [`Recent`] map: at most twice this in all.
pub(crate) const RECENT_PER_GENERATION: usize = 16_384;

/// A bounded map of recently used entries: two generations. Inserts go to the young map; when
/// it is full, the old one is dropped and the young one takes its place. A hit in the old map
/// moves the entry back to the young one, so an entry used all the time stays however many
/// others come after it. Keys are hashed with a seeded hasher: clients choose entity names and
/// record contents, so with a fixed seed they could grind keys into one bucket.
///
/// It holds what its user puts in; the writer puts in only what the store holds (batches once
/// they are committed, and what it read from the store), and asks its overlays of batches in
/// flight first.
pub(crate) struct Recent<K, V> {
    young: crate::NameMap<K, V>,
    old: crate::NameMap<K, V>,
    per_generation: usize,
}

impl<K: Eq + Hash, V: Clone> Recent<K, V> {
    pub(crate) fn new(per_generation: usize) -> Recent<K, V> {
        Recent {
            young: Default::default(),
            old: Default::default(),
            per_generation: per_generation.max(1),
        }
    }

    /// The entry of `key`, when it is kept.
    pub(crate) fn get(&mut self, key: &K) -> Option<V> {
        if let Some(v) = self.young.get(key) {
            return Some(v.clone());
        }
        let (key, v) = self.old.remove_entry(key)?;
        self.insert(key, v.clone());
        Some(v)
    }

    /// Keeps `value` as the entry of `key`, replacing what was kept.
    pub(crate) fn insert(&mut self, key: K, value: V) {
        if self.young.len() >= self.per_generation && !self.young.contains_key(&key) {
            // The old generation goes; its table is reused for the new young one, which so
            // does not grow (and rehash) from nothing every generation.
            std::mem::swap(&mut self.old, &mut self.young);
            self.young.clear();
        }
        // An entry in the old map is shadowed by the young one and goes with its generation.
        self.young.insert(key, value);
    }

    /// How many entries are kept, counting one shadowed in the old map.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn an_entry_in_use_outlives_the_generations_and_the_size_stays_bounded() {
        let mut r = Recent::new(4);
        r.insert("policy", 1);
        for i in 0..100 {
            r.insert(format!("input:{i}").leak() as &str, i);
            // The policy is cited by every decision.
            assert_eq!(r.get(&"policy"), Some(1), "after {i}");
            assert!(r.len() <= 8);
        }
        // An entry nobody asked for since two generations is gone.
        assert_eq!(r.get(&"input:0"), None);
        assert_eq!(r.get(&"input:99"), Some(99));
    }

    #[test]
    fn the_latest_insert_wins_in_either_generation() {
        let mut r = Recent::new(2);
        r.insert("e", 1);
        r.insert("a", 0);
        r.insert("b", 0); // "e" is in the old generation now
        r.insert("e", 2);
        assert_eq!(r.get(&"e"), Some(2));
        r.insert("c", 0);
        r.insert("d", 0);
        assert_eq!(r.get(&"e"), Some(2));
    }

    proptest! {
        /// Against a plain map of everything inserted: whatever is kept is the latest value,
        /// the size stays within two generations, and the last `per_generation` keys inserted
        /// are always kept.
        #[test]
        fn kept_entries_are_the_latest_and_recent_keys_are_kept(
            ops in proptest::collection::vec((0u8..40, any::<bool>()), 1..400),
            per_generation in 1usize..16,
        ) {
            let mut r = Recent::new(per_generation);
            let mut all = std::collections::HashMap::new();
            let mut order: Vec<u8> = Vec::new();
            for (n, (key, is_insert)) in ops.into_iter().enumerate() {
                if is_insert {
                    r.insert(key, n);
                    all.insert(key, n);
                    order.retain(|k| *k != key);
                    order.push(key);
                } else if let Some(v) = r.get(&key) {
                    prop_assert_eq!(Some(&v), all.get(&key));
                    order.retain(|k| *k != key);
                    order.push(key);
                }
                prop_assert!(r.len() <= 2 * per_generation);
                // Each check is a use too: oldest first, so the order of use stays the model's.
                let last = order.len().saturating_sub(per_generation);
                for k in &order[last..] {
                    prop_assert_eq!(r.get(k), all.get(k).copied());
                }
            }
        }
    }
}

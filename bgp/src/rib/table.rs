//! The per-family prefix map of the Loc-RIB, split into shards by prefix hash.
//!
//! A hash table grows by allocating a table twice the size and moving every entry across, so
//! a single million-entry map briefly holds both the old and the new table — about 1.5x its
//! final size, which would be the process's peak memory. With 16 shards each growth step
//! moves only a sixteenth of the routes, and the transient overhead shrinks accordingly.
//! (Shards would also let two cores work on a big table, as rustybgp does; the RIB is
//! single-threaded for now.)

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

use super::decision::PathSet;
use super::hash::FoldHashBuilder;

const SHARDS: usize = 16;

#[derive(Debug)]
pub(crate) struct PrefixTable<K> {
    /// Picks the shard; seeded independently of the shards' own hashers so that the bits
    /// used here do not correlate with bucket positions inside a shard.
    selector: FoldHashBuilder,
    shards: Vec<HashMap<K, PathSet, FoldHashBuilder>>,
}

impl<K: Hash + Eq> Default for PrefixTable<K> {
    fn default() -> Self {
        let hasher = FoldHashBuilder::default();
        PrefixTable {
            selector: FoldHashBuilder::default(),
            shards: (0..SHARDS)
                .map(|_| HashMap::with_hasher(hasher.clone()))
                .collect(),
        }
    }
}

impl<K: Hash + Eq> PrefixTable<K> {
    fn shard_index(&self, key: &K) -> usize {
        (self.selector.hash_one(key) >> 60) as usize % SHARDS
    }

    pub(crate) fn shard_mut(&mut self, key: &K) -> &mut HashMap<K, PathSet, FoldHashBuilder> {
        let i = self.shard_index(key);
        &mut self.shards[i]
    }

    pub(crate) fn get(&self, key: &K) -> Option<&PathSet> {
        self.shards[self.shard_index(key)].get(key)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &PathSet)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut PathSet)> {
        self.shards.iter_mut().flat_map(|s| s.iter_mut())
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }
}

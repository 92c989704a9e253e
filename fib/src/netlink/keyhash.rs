//! A fast, per-process seeded hasher for the hot path's maps keyed by prefixes and ids.
//!
//! The hot path touches a few maps once per route (desired set, which nexthop object each
//! route uses); with std's SipHash-1-3 the hashing alone was a visible share of the user time
//! of programming 100k routes. This is a multiply-rotate hasher with a murmur3 finaliser,
//! seeded from std's `RandomState`, so that the collision sets differ per process: the keys
//! include prefixes learnt from BGP peers, and a fixed hash would let a peer pick colliding
//! prefixes. (Not a cryptographic guarantee; SipHash remains in use off the hot path.)

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

const K: u64 = 0x517c_c1b7_2722_0a95;

/// Builds [`KeyHasher`]s with this process's seed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyHash {
    seed: u64,
}

impl Default for KeyHash {
    fn default() -> Self {
        thread_local! {
            static SEED: u64 = RandomState::new().hash_one(0x5eed_u64);
        }
        Self {
            seed: SEED.with(|s| *s),
        }
    }
}

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(self.seed)
    }
}

pub(crate) struct KeyHasher(u64);

impl KeyHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // murmur3 fmix64: every input bit reaches the top bits hashbrown uses as tags.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// `HashMap` with [`KeyHash`].
pub(crate) type KeyMap<K, V> = std::collections::HashMap<K, V, KeyHash>;
/// `HashSet` with [`KeyHash`].
pub(crate) type KeySet<K> = std::collections::HashSet<K, KeyHash>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::RouteKey;

    #[test]
    fn distinct_keys_spread_and_equal_keys_agree() {
        let h = KeyHash::default();
        let keys: Vec<RouteKey> = (0..4096u32)
            .map(|i| {
                let a = std::net::Ipv4Addr::from(0x0a40_0000 + i);
                RouteKey::main(ipnet::IpNet::new(a.into(), 32).unwrap_or_default())
            })
            .collect();
        let hashes: std::collections::HashSet<u64> = keys.iter().map(|k| h.hash_one(k)).collect();
        assert_eq!(hashes.len(), keys.len());
        // The top 7 bits (hashbrown's tags) take many values for sequential prefixes.
        let tags: std::collections::HashSet<u64> = hashes.iter().map(|x| x >> 57).collect();
        assert!(tags.len() > 100, "{}", tags.len());
        assert_eq!(h.hash_one(keys[7]), h.hash_one(keys[7]));
    }
}

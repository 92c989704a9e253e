//! A fast, randomly seeded hasher for the RIB's hot maps.
//!
//! The Loc-RIB and the export caches hash a prefix (or a pointer plus two peer ids) once per
//! route; SipHash (std's default) costs a large share of the per-prefix budget there. This is
//! a folded-multiply hash in the style of foldhash/aHash's fallback: every input word is mixed
//! into the state with a 64x64->128 bit multiply whose halves are XORed. The seed comes from
//! std's `RandomState`, so a peer cannot precompute colliding prefixes (hash flooding).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

const MULTIPLIER: u64 = 0x5851_f42d_4c95_7f2d;

/// Builds [`FoldHasher`]s sharing one random seed.
#[derive(Debug, Clone)]
pub(crate) struct FoldHashBuilder {
    seed: u64,
}

impl Default for FoldHashBuilder {
    fn default() -> Self {
        FoldHashBuilder {
            seed: RandomState::new().hash_one(0x9e37_79b9_7f4a_7c15_u64) | 1,
        }
    }
}

impl BuildHasher for FoldHashBuilder {
    type Hasher = FoldHasher;

    fn build_hasher(&self) -> FoldHasher {
        FoldHasher {
            state: self.seed,
            seed: self.seed,
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct FoldHasher {
    state: u64,
    seed: u64,
}

impl FoldHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        let product = u128::from(self.state ^ word) * u128::from(MULTIPLIER ^ self.seed);
        self.state = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl Hasher for FoldHasher {
    #[inline]
    fn finish(&self) -> u64 {
        let product = u128::from(self.state) * u128::from(MULTIPLIER);
        (product as u64) ^ ((product >> 64) as u64)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }

    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.mix(i as u64);
        self.mix((i >> 64) as u64);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn distinct_prefixes_hash_apart() {
        let b = FoldHashBuilder::default();
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000u32 {
            let net = ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(i << 8), 24).unwrap();
            seen.insert(b.hash_one(net));
        }
        assert_eq!(seen.len(), 10_000);
    }
}

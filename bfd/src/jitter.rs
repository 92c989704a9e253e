//! Transmit jitter (RFC 5880 §6.8.7) from a small deterministic generator.
//!
//! Each session owns its own xorshift64 generator, seeded from its local discriminator, so a
//! session replayed with the same inputs sends at the same instants: the unit tests run in
//! virtual time and compare exact times. Jitter needs no cryptographic quality, only spread
//! (its purpose is to keep many sessions from synchronising, §6.8.7).

use std::time::Duration;

/// xorshift64 (Marsaglia, 2003): a few shifts per number, never zero once seeded non-zero.
#[derive(Debug, Clone)]
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> XorShift {
        // Spread small seeds (discriminators 1, 2, ...) over the state; zero is a fixed point.
        let s = seed ^ 0x9e37_79b9_7f4a_7c15;
        XorShift(if s == 0 { 1 } else { s })
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// The interval to the next periodic packet: `interval` reduced by a random 0-25%, or, when
/// the local Detect Mult is 1, to between 75% and 90% of it (§6.8.7: "the interval MUST be
/// reduced by a random value of 0 to 25%" and "If bfd.DetectMult is equal to 1, the interval
/// between transmitted BFD Control packets MUST be no more than 90% of the negotiated
/// transmission interval, and MUST be no less than 75%").
pub(crate) fn jittered(interval: Duration, detect_mult: u8, rng: &mut XorShift) -> Duration {
    let top: u64 = if detect_mult == 1 { 900 } else { 1000 };
    let permille = 750 + rng.next_u64() % (top - 750 + 1);
    // permille <= 1000, so the factor fits u32 and the product cannot overflow a Duration
    // for any interval a packet can carry (at most u32::MAX microseconds).
    interval * (permille as u32) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_spread() {
        let mut rng = XorShift::new(7);
        let i = Duration::from_millis(1000);
        let all: Vec<Duration> = (0..10_000).map(|_| jittered(i, 3, &mut rng)).collect();
        assert!(all
            .iter()
            .all(|d| *d >= Duration::from_millis(750) && *d <= i));
        // Spread over the whole range, not stuck at one value.
        assert!(all.iter().any(|d| *d < Duration::from_millis(760)));
        assert!(all.iter().any(|d| *d > Duration::from_millis(990)));
        let one: Vec<Duration> = (0..10_000).map(|_| jittered(i, 1, &mut rng)).collect();
        assert!(one
            .iter()
            .all(|d| *d >= Duration::from_millis(750) && *d <= Duration::from_millis(900)));
        assert!(one.iter().any(|d| *d > Duration::from_millis(890)));
    }

    #[test]
    fn deterministic_per_seed() {
        let (mut a, mut b) = (XorShift::new(42), XorShift::new(42));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(XorShift::new(1).next_u64(), XorShift::new(2).next_u64());
        // A seed equal to the mixing constant would be zero: still generates.
        assert_ne!(XorShift::new(0x9e37_79b9_7f4a_7c15).next_u64(), 0);
    }
}

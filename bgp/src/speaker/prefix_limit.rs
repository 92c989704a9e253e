//! Maximum prefixes per peer (RFC 4486 §4, Cease subcode 1): the guard against a peer that
//! leaks a full table into a node's RIB and FIB.
//!
//! The count is what the peer currently announces of one family, accepted or filtered
//! ([`Rib::received`](crate::rib::Rib::received)), as BIRD's `receive limit` and FRR's
//! `maximum-prefix` count it per channel / address family: filtering a leak away does not
//! make it cheap, since every received prefix costs memory. Crossing `warning_percent` of the
//! limit logs a warning once per session; going *above* the limit (FRR's rule) closes the
//! session with Cease/1, whose data names the family and the limit. The session then stays
//! Idle: for `restart_after` when set (FRR's `restart`, BIRD's `action restart`), else until
//! the peer is configured again (FRR's default, where `clear bgp` is the operator's move).
//! Other sessions are untouched: only this peer's routes leave the RIB.
//!
//! The rules here are pure; the speaker's core keeps one [`PrefixLimitState`] per peer and
//! asks [`PrefixLimitState::check`] after every UPDATE it hands to the RIB.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::packet::Family;

/// The default warning threshold, in percent of the limit (FRR's `maximum-prefix` default).
pub const DEFAULT_WARNING_PERCENT: u8 = 75;

/// A peer's limit, in the speaker's TOML as `[peer.max_prefixes]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixLimit {
    /// The most prefixes of one family the peer may announce; one more closes the session.
    pub limit: u32,
    /// Warn once per session when the count reaches this share of `limit` (1..=100).
    #[serde(default = "default_warning_percent")]
    pub warning_percent: u8,
    /// Seconds to stay down after closing before connecting again; absent: stay down until
    /// the peer is configured again.
    #[serde(default)]
    pub restart_after: Option<u64>,
}

fn default_warning_percent() -> u8 {
    DEFAULT_WARNING_PERCENT
}

impl PrefixLimit {
    /// Checks the ranges serde cannot; `Err` names the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.limit == 0 {
            return Err((
                "max_prefixes.limit",
                "0 would refuse every route; leave the limit out for none".into(),
            ));
        }
        if !(1..=100).contains(&self.warning_percent) {
            return Err((
                "max_prefixes.warning_percent",
                format!("{} is not within 1..=100", self.warning_percent),
            ));
        }
        if self.restart_after == Some(0) {
            return Err((
                "max_prefixes.restart_after",
                "0 would reconnect at once into the same flood; give at least 1 second".into(),
            ));
        }
        Ok(())
    }

    /// The count at which the warning is logged (at least 1).
    pub fn warning_at(&self) -> u64 {
        (u64::from(self.limit) * u64::from(self.warning_percent))
            .div_ceil(100)
            .max(1)
    }
}

/// What the core does after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixVerdict {
    /// Nothing to do.
    Within,
    /// Log a warning: `received` reached the threshold (once per session and family).
    Warn { family: Family, received: u64 },
    /// Close the session with Cease/1 for `family`.
    Exceeded { family: Family, received: u64 },
}

/// One peer's standing against its limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefixLimitState {
    /// Families warned about on the current session.
    warned: Vec<Family>,
    /// While closed for exceeding the limit: when to start again (`None` inside means
    /// "not until reconfigured").
    held_down: Option<Option<Instant>>,
}

impl PrefixLimitState {
    /// Judges `received` prefixes of `family` against `limit`.
    pub fn check(&mut self, limit: &PrefixLimit, family: Family, received: u64) -> PrefixVerdict {
        if received > u64::from(limit.limit) {
            return PrefixVerdict::Exceeded { family, received };
        }
        if received >= limit.warning_at() && !self.warned.contains(&family) {
            self.warned.push(family);
            return PrefixVerdict::Warn { family, received };
        }
        PrefixVerdict::Within
    }

    /// The session was closed for exceeding the limit at `now`.
    pub fn closed(&mut self, limit: &PrefixLimit, now: Instant) {
        self.warned.clear();
        self.held_down = Some(limit.restart_after.map(|s| now + Duration::from_secs(s)));
    }

    /// The session went down for another reason: the next one is warned afresh.
    pub fn session_down(&mut self) {
        self.warned.clear();
    }

    /// When the held-down session should start again, if it is held down with a timer.
    pub fn restart_at(&self) -> Option<Instant> {
        self.held_down.flatten()
    }

    /// Whether the session is held down after exceeding its limit.
    pub fn is_held_down(&self) -> bool {
        self.held_down.is_some()
    }

    /// Ends a hold-down (the restart time came): the caller starts the session.
    pub fn release(&mut self) {
        self.held_down = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(n: u32, restart: Option<u64>) -> PrefixLimit {
        PrefixLimit {
            limit: n,
            warning_percent: DEFAULT_WARNING_PERCENT,
            restart_after: restart,
        }
    }

    #[test]
    fn warns_once_at_the_threshold_and_closes_only_above_the_limit() {
        let l = limit(100, None);
        let mut s = PrefixLimitState::default();
        let v4 = Family::Ipv4Unicast;
        assert_eq!(s.check(&l, v4, 74), PrefixVerdict::Within);
        assert_eq!(
            s.check(&l, v4, 75),
            PrefixVerdict::Warn {
                family: v4,
                received: 75
            }
        );
        assert_eq!(s.check(&l, v4, 80), PrefixVerdict::Within, "warned once");
        // The other family has a threshold of its own.
        assert!(matches!(
            s.check(&l, Family::Ipv6Unicast, 90),
            PrefixVerdict::Warn { .. }
        ));
        assert_eq!(s.check(&l, v4, 100), PrefixVerdict::Within, "at the limit");
        assert_eq!(
            s.check(&l, v4, 101),
            PrefixVerdict::Exceeded {
                family: v4,
                received: 101
            }
        );
    }

    #[test]
    fn a_new_session_is_warned_again() {
        let l = limit(10, None);
        let mut s = PrefixLimitState::default();
        assert!(matches!(
            s.check(&l, Family::Ipv4Unicast, 9),
            PrefixVerdict::Warn { .. }
        ));
        s.session_down();
        assert!(matches!(
            s.check(&l, Family::Ipv4Unicast, 9),
            PrefixVerdict::Warn { .. }
        ));
    }

    #[test]
    fn hold_down_with_and_without_a_restart_time() {
        let now = Instant::now();
        let mut s = PrefixLimitState::default();
        s.closed(&limit(10, Some(30)), now);
        assert!(s.is_held_down());
        assert_eq!(s.restart_at(), Some(now + Duration::from_secs(30)));
        s.release();
        assert!(!s.is_held_down());

        s.closed(&limit(10, None), now);
        assert!(s.is_held_down());
        assert_eq!(s.restart_at(), None, "held until reconfigured");
    }

    #[test]
    fn small_limits_still_warn_and_bad_settings_are_refused() {
        assert_eq!(limit(1, None).warning_at(), 1);
        assert_eq!(limit(3, None).warning_at(), 3); // 2.25 rounds up
        assert!(limit(0, None).validate().is_err());
        assert!(limit(5, Some(0)).validate().is_err());
        let mut l = limit(5, None);
        l.warning_percent = 0;
        assert_eq!(
            l.validate().map_err(|e| e.0),
            Err("max_prefixes.warning_percent")
        );
        l.warning_percent = 101;
        assert!(l.validate().is_err());
        assert!(limit(5, Some(60)).validate().is_ok());
    }
}

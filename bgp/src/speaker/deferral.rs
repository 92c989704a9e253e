//! Route selection deferral of a restarting speaker (RFC 4724 §4.1), as a pure machine the
//! core drives.
//!
//! A speaker that restarted with its forwarding state kept (`restarting`, the R bit in its
//! OPENs) must not advertise before it has heard its peers: with only part of the routes in,
//! its best paths would be wrong, and what it sends would replace the (right) stale routes
//! its peers keep for it. So it defers: it sends nothing until every peer it waits for has
//! sent End-of-RIB for each family of its session, or until the Selection_Deferral_Timer
//! expires; then it sends each Established peer its whole table and End-of-RIB, which drops
//! whatever stale route of ours the peer kept and we no longer have (§4.2).
//!
//! Who is waited for (§4.1): every configured peer, except an Established one that did not
//! advertise Graceful Restart (it has no End-of-RIB duty) or that set the Restart State bit
//! itself (it is restarting too and waits for us: waiting for it would deadlock). A peer
//! that never comes up holds the deferral until the timer, as the RFC has it.

use std::time::{Duration, Instant};

use crate::packet::Family;

/// What the deferral needs to know about one configured peer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerProgress<'a> {
    pub established: bool,
    /// The peer advertised Graceful Restart on the current session.
    pub graceful_restart: bool,
    /// ... with the Restart State bit set.
    pub restarting: bool,
    /// Families of the current session.
    pub families: &'a [Family],
    /// Families whose End-of-RIB the peer sent on the current session.
    pub end_of_rib: &'a [Family],
}

impl PeerProgress<'_> {
    /// Whether the peer still holds the deferral.
    fn pending(&self) -> bool {
        if !self.established {
            return true;
        }
        if !self.graceful_restart || self.restarting {
            return false;
        }
        self.families.iter().any(|f| !self.end_of_rib.contains(f))
    }
}

/// Why a deferral ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeferralEnd {
    /// Every peer waited for sent its End-of-RIBs.
    EndOfRib,
    /// The Selection_Deferral_Timer expired first.
    Timer,
}

/// The deferral: active from start-up while restarting, until it ends once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SelectionDeferral {
    until: Option<Instant>,
}

impl SelectionDeferral {
    /// A deferral from `now` for at most `time`, if the speaker is `restarting`.
    pub(crate) fn new(restarting: bool, now: Instant, time: Duration) -> SelectionDeferral {
        SelectionDeferral {
            until: (restarting && !time.is_zero()).then(|| now + time),
        }
    }

    /// Outputs to peers are held back.
    pub(crate) fn active(&self) -> bool {
        self.until.is_some()
    }

    /// When the timer expires, while active.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.until
    }

    /// Ends the deferral if it is due at `now` with `peers` (every configured peer), and
    /// says why; `None` while it goes on (or after it ended).
    pub(crate) fn poll<'a>(
        &mut self,
        now: Instant,
        mut peers: impl Iterator<Item = PeerProgress<'a>>,
    ) -> Option<DeferralEnd> {
        let until = self.until?;
        let end = if peers.all(|p| !p.pending()) {
            DeferralEnd::EndOfRib
        } else if now >= until {
            DeferralEnd::Timer
        } else {
            return None;
        };
        self.until = None;
        Some(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: &[Family] = &[Family::Ipv4Unicast];
    const BOTH: &[Family] = &[Family::Ipv4Unicast, Family::Ipv6Unicast];

    fn up<'a>(families: &'a [Family], eor: &'a [Family]) -> PeerProgress<'a> {
        PeerProgress {
            established: true,
            graceful_restart: true,
            restarting: false,
            families,
            end_of_rib: eor,
        }
    }

    #[test]
    fn not_restarting_means_no_deferral() {
        let now = Instant::now();
        let mut d = SelectionDeferral::new(false, now, Duration::from_secs(30));
        assert!(!d.active());
        assert_eq!(d.poll(now, std::iter::empty()), None);
    }

    #[test]
    fn ends_when_every_peer_sent_end_of_rib_for_each_family() {
        let now = Instant::now();
        let mut d = SelectionDeferral::new(true, now, Duration::from_secs(30));
        assert!(d.active());
        assert_eq!(d.poll(now, [up(BOTH, V4), up(V4, V4)].into_iter()), None);
        assert_eq!(
            d.poll(now, [up(BOTH, BOTH), up(V4, V4)].into_iter()),
            Some(DeferralEnd::EndOfRib)
        );
        assert!(!d.active());
        // Once over, it stays over.
        assert_eq!(d.poll(now, [up(V4, &[])].into_iter()), None);
    }

    #[test]
    fn a_peer_that_is_down_holds_it_until_the_timer() {
        let now = Instant::now();
        let mut d = SelectionDeferral::new(true, now, Duration::from_secs(30));
        let down = PeerProgress {
            established: false,
            graceful_restart: false,
            restarting: false,
            families: &[],
            end_of_rib: &[],
        };
        assert_eq!(d.poll(now, [up(V4, V4), down].into_iter()), None);
        assert_eq!(d.deadline(), Some(now + Duration::from_secs(30)));
        assert_eq!(
            d.poll(
                now + Duration::from_secs(30),
                [up(V4, V4), down].into_iter()
            ),
            Some(DeferralEnd::Timer)
        );
    }

    #[test]
    fn peers_without_graceful_restart_or_restarting_themselves_are_not_waited_for() {
        let now = Instant::now();
        let mut d = SelectionDeferral::new(true, now, Duration::from_secs(30));
        let no_gr = PeerProgress {
            graceful_restart: false,
            ..up(V4, &[])
        };
        let restarting = PeerProgress {
            restarting: true,
            ..up(V4, &[])
        };
        assert_eq!(
            d.poll(now, [no_gr, restarting].into_iter()),
            Some(DeferralEnd::EndOfRib)
        );
    }
}

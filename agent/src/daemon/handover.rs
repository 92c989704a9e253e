//! Make-before-break for the sessions between our own nodes (pure; no I/O).
//!
//! When the cluster's topology changes (the mesh switched off for route reflectors, a
//! reflector added or removed, a node deleted while it still runs), some node-to-node sessions
//! leave the plan while others take over their routes. Removing a session withdraws its
//! routes at once (Cease, RFC 4271 §6.7; the peer drops ours too), and the replacement
//! sessions need a moment to come up and carry the same prefixes: measured in the churn test,
//! a mesh-to-reflectors switch lost about a second of traffic between untouched nodes.
//!
//! So an Established session between two of our nodes that leaves the plan is kept for
//! [`SESSION_HANDOVER`] before it is removed; both ends do the same, so neither drops the
//! other's routes before the new topology has delivered them. A session that is not
//! Established has nothing to hand over and goes at once, and so does every session to a
//! router that is not one of ours (a BGPPeer removed is a decision about that router, not a
//! topology change). A retiring session that the plan wants again simply stays. BIRD and
//! Calico have no such step (deleting a BIRD protocol withdraws its routes); this is what an
//! operator who watched a topology change cut traffic would ask for.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long a node-to-node session that left the plan is kept: enough for reflector
/// sessions to come up (connect, OPEN, the table, End-of-RIB; well under a second in the lab,
/// a few seconds with real connect timers) and reflect what the session carried.
pub const SESSION_HANDOVER: Duration = Duration::from_secs(10);

/// The sessions kept past their plan, with when each goes.
#[derive(Debug, Default)]
pub struct SessionHandover {
    retiring: BTreeMap<IpAddr, Instant>,
}

impl SessionHandover {
    /// The session to `address` left the plan at `now`: whether to keep it for now (until
    /// [`SessionHandover::due`] returns it) rather than remove it. `between_nodes`: a
    /// session of the mesh or reflector topology; `established`: it is up.
    pub fn retire(
        &mut self,
        address: IpAddr,
        between_nodes: bool,
        established: bool,
        now: Instant,
    ) -> bool {
        if let Some(at) = self.retiring.get(&address) {
            return *at > now;
        }
        if between_nodes && established {
            self.retiring.insert(address, now + SESSION_HANDOVER);
            true
        } else {
            false
        }
    }

    /// The plan wants the session to `address` (again): it is not retiring.
    pub fn keep(&mut self, address: IpAddr) {
        self.retiring.remove(&address);
    }

    /// Retiring sessions whose hand-over time is up at `now`; they leave the machine.
    pub fn due(&mut self, now: Instant) -> Vec<IpAddr> {
        let due: Vec<IpAddr> = self
            .retiring
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(a, _)| *a)
            .collect();
        for a in &due {
            self.retiring.remove(a);
        }
        due
    }

    pub fn is_retiring(&self, address: IpAddr) -> bool {
        self.retiring.contains_key(&address)
    }

    /// When the next retiring session goes.
    pub fn next_due(&self) -> Option<Instant> {
        self.retiring.values().min().copied()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_established_node_session_is_kept_for_the_handover_then_goes() {
        let mut h = SessionHandover::default();
        let t0 = Instant::now();
        assert!(h.retire(ip("10.0.0.2"), true, true, t0));
        assert!(h.is_retiring(ip("10.0.0.2")));
        assert_eq!(h.next_due(), Some(t0 + SESSION_HANDOVER));
        // Later plans still leave it out: still kept, same deadline.
        assert!(h.retire(ip("10.0.0.2"), true, true, t0 + Duration::from_secs(3)));
        assert_eq!(h.due(t0 + Duration::from_secs(9)), Vec::<IpAddr>::new());
        assert_eq!(h.due(t0 + SESSION_HANDOVER), vec![ip("10.0.0.2")]);
        assert!(!h.is_retiring(ip("10.0.0.2")));
        assert_eq!(h.next_due(), None);
    }

    #[test]
    fn sessions_down_or_to_other_routers_go_at_once() {
        let mut h = SessionHandover::default();
        let now = Instant::now();
        assert!(!h.retire(ip("10.0.0.3"), true, false, now));
        assert!(!h.retire(ip("10.0.0.254"), false, true, now));
        assert_eq!(h.next_due(), None);
    }

    #[test]
    fn a_session_wanted_again_stops_retiring() {
        let mut h = SessionHandover::default();
        let now = Instant::now();
        assert!(h.retire(ip("10.0.0.4"), true, true, now));
        h.keep(ip("10.0.0.4"));
        assert!(h.due(now + SESSION_HANDOVER).is_empty());
        // Leaving the plan again starts a new hand-over.
        let later = now + Duration::from_secs(20);
        assert!(h.retire(ip("10.0.0.4"), true, true, later));
        assert_eq!(h.next_due(), Some(later + SESSION_HANDOVER));
    }
}

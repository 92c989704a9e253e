//! The speaker's answers to the control protocol ([`control`](super::control)): session
//! status, the Loc-RIB and route lookups, as `routectl node status` / `node routes` and the
//! interop tests read them.

use std::net::IpAddr;
use std::time::Instant;

use crate::packet::{self, Family};
use crate::rib;

use super::control::{
    BfdView, ControlRequest, ControlResponse, FamilyPrefixes, PeerStatus, RouteView,
};
use super::Core;

impl Core {
    pub(super) fn control(&mut self, req: ControlRequest) -> ControlResponse {
        match req {
            ControlRequest::Peers => ControlResponse::Peers {
                peers: self.peer_status(),
            },
            ControlRequest::Routes => ControlResponse::Routes {
                routes: self.routes(),
            },
            ControlRequest::RouteLookup {
                prefix,
                longest_match,
            } => ControlResponse::Routes {
                routes: self.lookup(prefix, longest_match),
            },
            ControlRequest::Originate(o) => match self.originate(&o) {
                Ok(out) => {
                    self.dispatch(out);
                    ControlResponse::Done
                }
                Err(message) => ControlResponse::Error { message },
            },
            ControlRequest::Withdraw { prefix } => {
                let out = self.rib.withdraw_local(prefix);
                self.dispatch(out);
                ControlResponse::Done
            }
            ControlRequest::AddPeer(peer) => match self.add_peer(peer) {
                Ok(()) => ControlResponse::Done,
                Err(e) => ControlResponse::Error {
                    message: e.to_string(),
                },
            },
            ControlRequest::RemovePeer { address } => match self.remove_peer(address) {
                Ok(()) => ControlResponse::Done,
                Err(e) => ControlResponse::Error {
                    message: e.to_string(),
                },
            },
        }
    }

    fn peer_status(&self) -> Vec<PeerStatus> {
        let now = Instant::now();
        let mut v: Vec<PeerStatus> = self
            .peers
            .iter()
            .map(|(addr, p)| {
                let st = p.session.status();
                let stats = self.rib.stats(p.id).unwrap_or_default();
                let neg = st.negotiated.as_ref();
                PeerStatus {
                    address: *addr,
                    remote_as: p.config.remote_as,
                    state: st.state.as_str().to_string(),
                    since_secs: now.saturating_duration_since(st.since).as_secs(),
                    router_id: neg.map(|n| n.peer_id.to_string()),
                    hold_time: neg.map(|n| n.hold_time),
                    keepalive_time: neg.map(|n| n.keepalive_time),
                    families: neg
                        .map(|n| {
                            n.families
                                .iter()
                                .map(|f| family_name(*f).to_string())
                                .collect()
                        })
                        .unwrap_or_default(),
                    capabilities: neg
                        .map(|n| n.peer_capabilities.iter().map(capability_name).collect())
                        .unwrap_or_default(),
                    prefixes_received: stats.received,
                    prefixes_accepted: stats.accepted,
                    prefixes_advertised: stats.advertised,
                    family_prefixes: neg
                        .map(|n| {
                            n.families
                                .iter()
                                .map(|f| {
                                    let s = self.rib.family_stats(p.id, *f).unwrap_or_default();
                                    FamilyPrefixes {
                                        family: family_name(*f).to_string(),
                                        received: s.received,
                                        accepted: s.accepted,
                                        advertised: s.advertised,
                                    }
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    last_error: p
                        .last_error
                        .clone()
                        .or_else(|| st.last_error.as_ref().map(|e| e.describe())),
                    bfd: p.config.bfd.map(|_| bfd_view(p.bfd.as_ref())),
                    end_of_rib: p
                        .end_of_rib
                        .iter()
                        .map(|f| family_name(*f).to_string())
                        .collect(),
                }
            })
            .collect();
        v.sort_by_key(|p| p.address);
        v
    }

    fn routes(&self) -> Vec<RouteView> {
        let mut out = Vec::new();
        for (prefix, _) in self.rib.iter() {
            out.extend(self.prefix_routes(prefix));
        }
        out.sort_by(|a, b| a.prefix.cmp(&b.prefix).then(b.best.cmp(&a.best)));
        out
    }

    /// The paths of `prefix`, best first, each with where it stands in the decision.
    fn prefix_routes(&self, prefix: ipnet::IpNet) -> Vec<RouteView> {
        let paths = self.rib.paths(&prefix);
        let standing = self.rib.explain(&prefix);
        paths
            .iter()
            .zip(standing)
            .map(|(path, standing)| {
                route_view(prefix, path, standing, self.by_id.get(&path.peer).copied())
            })
            .collect()
    }

    /// `birdc show route <prefix>` (exact) or `show route for <address>` (longest match:
    /// the most specific prefix we hold that contains `prefix`).
    fn lookup(&self, prefix: ipnet::IpNet, longest_match: bool) -> Vec<RouteView> {
        let prefix = prefix.trunc();
        if !longest_match {
            return self.prefix_routes(prefix);
        }
        (0..=prefix.prefix_len())
            .rev()
            .filter_map(|len| {
                ipnet::IpNet::new(prefix.addr(), len)
                    .ok()
                    .map(|n| n.trunc())
            })
            .map(|candidate| self.prefix_routes(candidate))
            .find(|routes| !routes.is_empty())
            .unwrap_or_default()
    }
}

fn route_view(
    prefix: ipnet::IpNet,
    path: &rib::RibPath,
    standing: rib::PathStanding,
    peer: Option<IpAddr>,
) -> RouteView {
    let best = standing == rib::PathStanding::Best;
    let a = &path.attrs.attrs;
    let nh = path.attrs.next_hop;
    RouteView {
        prefix,
        path_id: path.path_id,
        peer: if path.peer.is_local() { None } else { peer },
        best,
        next_hop: (!nh.is_unspecified()).then_some(nh),
        as_path: a
            .as_path
            .as_ref()
            .map(|p| {
                p.segments
                    .iter()
                    .flat_map(|s| s.asns.iter().copied())
                    .collect()
            })
            .unwrap_or_default(),
        origin: match a.origin {
            Some(packet::Origin::Igp) | None => "IGP",
            Some(packet::Origin::Egp) => "EGP",
            Some(packet::Origin::Incomplete) => "Incomplete",
        }
        .to_string(),
        med: a.med,
        local_pref: a.local_pref,
        communities: a.communities.iter().map(ToString::to_string).collect(),
        large_communities: a
            .large_communities
            .iter()
            .map(ToString::to_string)
            .collect(),
        originator_id: a.originator_id.map(|i| i.to_string()),
        cluster_list: a.cluster_list.iter().map(|i| i.to_string()).collect(),
        decision: match standing {
            rib::PathStanding::Best => "best".to_string(),
            rib::PathStanding::Multipath => "multipath".to_string(),
            rib::PathStanding::Beaten(step) => format!("beaten: {}", step.describe()),
        },
    }
}

fn bfd_view(status: Option<&Result<bfd::SessionStatus, String>>) -> BfdView {
    match status {
        Some(Ok(s)) => BfdView {
            state: s.state.to_string(),
            remote_state: s.remote_state.to_string(),
            diag: s.diag.to_string(),
            tx_interval_ms: s.tx_interval.map(|d| d.as_millis() as u64),
            detection_time_ms: s.detection_time.as_millis() as u64,
            error: None,
        },
        other => BfdView {
            state: bfd::State::Down.to_string(),
            remote_state: bfd::State::Down.to_string(),
            diag: bfd::Diagnostic::NoDiagnostic.to_string(),
            tx_interval_ms: None,
            detection_time_ms: 0,
            error: match other {
                Some(Err(e)) => Some(e.clone()),
                _ => None,
            },
        },
    }
}

/// The family's name as BIRD and GoBGP print it.
pub fn family_name(f: Family) -> &'static str {
    match f {
        Family::Ipv4Unicast => "ipv4-unicast",
        Family::Ipv6Unicast => "ipv6-unicast",
    }
}

fn capability_name(c: &packet::Capability) -> String {
    use packet::Capability as C;
    match c {
        C::MultiProtocol { afi, safi } => format!("multiprotocol({}/{})", afi.code(), safi.code()),
        C::RouteRefresh => "route-refresh".into(),
        C::ExtendedMessage => "extended-message".into(),
        C::GracefulRestart { restart_time, .. } => format!("graceful-restart({restart_time}s)"),
        C::FourOctetAs(asn) => format!("4-octet-as({asn})"),
        C::AddPath(_) => "add-path".into(),
        C::EnhancedRouteRefresh => "enhanced-route-refresh".into(),
        C::Fqdn { hostname, .. } => format!("hostname({hostname})"),
        C::Unknown { code, .. } => format!("unknown({code})"),
    }
}

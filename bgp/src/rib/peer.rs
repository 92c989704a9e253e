//! Who the RIB exchanges routes with: peer identity, static configuration and the facts a
//! session learns when it reaches Established.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::packet::Family;

use super::policy::{ExportPolicy, ImportPolicy};

/// A small handle for a peer inside the RIB, cheap to store next to every path.
///
/// `PeerId::LOCAL` (0) is the pseudo-peer that owns locally originated routes; neighbours
/// get ids from [`super::Rib::add_peer`], never reused while the RIB lives, so a stale id
/// cannot silently address a different neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub(crate) u32);

impl PeerId {
    /// Owner of routes given to [`super::Rib::originate`].
    pub const LOCAL: PeerId = PeerId(0);

    pub fn is_local(self) -> bool {
        self == PeerId::LOCAL
    }

    pub(crate) fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_local() {
            f.write_str("local")
        } else {
            write!(f, "peer#{}", self.0)
        }
    }
}

/// Which next hop we advertise to a peer (BIRD's `next hop self` / `next hop keep`): one type
/// for the RIB's export and the speaker's configuration (`next_hop = "auto" | "self" | "keep"`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum NextHopMode {
    /// eBGP: our session address (RFC 4271 §5.1.3 (1)); iBGP: keep the received next hop
    /// (§5.1.3 (2)); the default, as BIRD and Calico behave.
    #[default]
    Auto,
    /// Always our own session address.
    #[serde(rename = "self")]
    SelfAddress,
    /// Always the next hop the route arrived with (locally originated routes still get our
    /// address: they have no other).
    Keep,
}

/// Static configuration of one neighbour, as the agent derives it from a BGPPeer (or the
/// node-to-node mesh).
///
/// Only the policies can change while the peer exists ([`super::Rib::set_import_policy`],
/// [`super::Rib::set_export_policy`]): everything else decides what the peer has been sent,
/// which the RIB does not store, so a change of AS, reflector-client status or next-hop
/// mode is a `remove_peer` followed by `add_peer` (the session restarts anyway).
#[derive(Debug, Clone, PartialEq)]
pub struct PeerConfig {
    /// The neighbour's address: the last decision-process tie-breaker (RFC 4271 §9.1.2.2 g).
    pub address: IpAddr,
    pub peer_as: u32,
    /// The AS we present to this peer (usually the node's AS; Calico allows a per-peer one).
    pub local_as: u32,
    /// This peer is our route-reflector client (RFC 4456 §2).
    pub route_reflector_client: bool,
    pub next_hop_mode: NextHopMode,
    /// Accept paths that contain our own AS up to this many times (BIRD `allow local as`,
    /// used by Calico for nodes that share an AS across an eBGP fabric). 0 = RFC 4271 §9.1.2
    /// loop detection.
    pub allow_local_as: u8,
    pub import: ImportPolicy,
    pub export: ExportPolicy,
}

impl PeerConfig {
    pub fn new(address: IpAddr, peer_as: u32, local_as: u32) -> PeerConfig {
        PeerConfig {
            address,
            peer_as,
            local_as,
            route_reflector_client: false,
            next_hop_mode: NextHopMode::Auto,
            allow_local_as: 0,
            import: ImportPolicy::default(),
            export: ExportPolicy::default(),
        }
    }

    /// Internal BGP: both ends in the same AS (RFC 4271 §3).
    pub fn is_ibgp(&self) -> bool {
        self.peer_as == self.local_as
    }
}

/// What an Established session tells the RIB about the peer and about our end of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSession {
    /// The peer's BGP Identifier from its OPEN: a decision tie-breaker (RFC 4271 §9.1.2.2 f)
    /// and the ORIGINATOR_ID a reflector stamps on its routes (RFC 4456 §8).
    pub router_id: Ipv4Addr,
    /// Our IPv4 address on this session: the next hop when we advertise "next hop self".
    pub local_ipv4: Option<Ipv4Addr>,
    /// Our IPv6 address on this session (global), for "next hop self" in IPv6 unicast.
    pub local_ipv6: Option<Ipv6Addr>,
    /// Families both sides negotiated (RFC 4760 §8); routes of other families are ignored.
    pub families: Vec<Family>,
    /// The subnets of our interfaces on the link to the peer, when it is one IP hop away.
    /// A next hop inside one that also holds the peer's address is reachable by the peer
    /// directly, so eBGP export keeps it instead of putting ourselves in the path: the
    /// "third party" NEXT_HOP of RFC 4271 §5.1.3, which BIRD and FRR also send.
    pub shared_subnets: Vec<ipnet::IpNet>,
    /// Families for which we send ADD-PATH path identifiers (RFC 7911 §4: we advertised
    /// Send and the peer Receive): the peer is sent every path of a prefix, each under its
    /// own identifier, instead of the best one alone.
    pub add_path_send: Vec<Family>,
}

impl PeerSession {
    /// Our own address for `family`, if the session has one.
    pub fn local_address(&self, family: Family) -> Option<IpAddr> {
        match family {
            Family::Ipv4Unicast => self.local_ipv4.map(IpAddr::V4),
            Family::Ipv6Unicast => self.local_ipv6.map(IpAddr::V6),
        }
    }

    /// Whether `next_hop` may be passed to the peer at `peer` unchanged (RFC 4271 §5.1.3):
    /// both lie in one subnet of the link we share with it.
    pub fn shares_subnet(&self, peer: IpAddr, next_hop: IpAddr) -> bool {
        self.shared_subnets
            .iter()
            .any(|net| net.contains(&peer) && net.contains(&next_hop))
    }

    /// Whether `addr` is one of our addresses on this session.
    pub fn is_local_address(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => self.local_ipv4 == Some(a),
            IpAddr::V6(a) => self.local_ipv6 == Some(a),
        }
    }
}

/// Route counts for status output (`calicoctl node status`-like and BIRD's
/// "Routes: N imported, M exported").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerStats {
    /// Prefixes the peer currently announces to us (accepted plus filtered).
    pub received: u64,
    /// Of those, the ones that passed the acceptance rules and import policy.
    pub accepted: u64,
    /// Prefixes we currently advertise to the peer.
    pub advertised: u64,
}

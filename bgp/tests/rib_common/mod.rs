//! Shared fixtures of the RIB tests: a RIB in AS 64512 with router id 10.0.0.1, and
//! shorthands for peers, attributes and UPDATEs.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bgp::packet::{Afi, Safi};
use bgp::packet::{AsPath, Family, MpReach, Origin, PathAttributes, Update};
use bgp::rib::{PeerConfig, PeerId, PeerSession, Rib, RibConfig, RibOutputs};
use ipnet::IpNet;

pub const LOCAL_AS: u32 = 64512;
pub const ROUTER_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

pub fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

pub fn rib() -> Rib {
    Rib::new(RibConfig::new(LOCAL_AS, ROUTER_ID))
}

pub fn rib_with(f: impl FnOnce(&mut RibConfig)) -> Rib {
    let mut c = RibConfig::new(LOCAL_AS, ROUTER_ID);
    f(&mut c);
    Rib::new(c)
}

/// Basic attributes: ORIGIN IGP, the given AS_PATH and IPv4 next hop.
pub fn attrs(path: &[u32], next_hop: &str) -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence(path.to_vec())),
        next_hop: Some(v4(next_hop)),
        ..PathAttributes::default()
    }
}

/// An IPv4 UPDATE announcing `prefixes` with `attrs`.
pub fn announce(attrs: PathAttributes, prefixes: &[&str]) -> Update {
    Update {
        attributes: attrs,
        nlri: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
        ..Update::default()
    }
}

/// An IPv6 UPDATE (MP_REACH_NLRI) announcing `prefixes` via `next_hop`.
pub fn announce_v6(mut attrs: PathAttributes, next_hop: &str, prefixes: &[&str]) -> Update {
    attrs.next_hop = None;
    Update {
        attributes: attrs,
        mp_reach: Some(MpReach {
            afi: Afi::Ipv6,
            safi: Safi::Unicast,
            next_hop: next_hop.parse().unwrap(),
            link_local_next_hop: None,
            nlri: prefixes.iter().map(|p| net(p)).collect(),
        }),
        ..Update::default()
    }
}

pub fn withdraw(prefixes: &[&str]) -> Update {
    Update {
        withdrawn: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
        ..Update::default()
    }
}

/// Adds a peer at `address` in `peer_as`; `configure` may adjust its config.
pub fn add(
    rib: &mut Rib,
    address: &str,
    peer_as: u32,
    configure: impl FnOnce(&mut PeerConfig),
) -> PeerId {
    let mut c = PeerConfig::new(ip(address), peer_as, LOCAL_AS);
    configure(&mut c);
    rib.add_peer(c)
}

/// Brings a peer up with `router_id`; our session addresses are 10.255.0.1 / fd00:ff::1.
pub fn up(rib: &mut Rib, peer: PeerId, router_id: &str) -> RibOutputs {
    rib.peer_up(
        peer,
        PeerSession {
            router_id: v4(router_id),
            local_ipv4: Some(v4("10.255.0.1")),
            local_ipv6: Some("fd00:ff::1".parse::<Ipv6Addr>().unwrap()),
            families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
            shared_subnets: Vec::new(),
            add_path_send: Vec::new(),
        },
    )
    .unwrap()
}

/// Adds and brings up a peer whose router id equals its address.
pub fn peer(rib: &mut Rib, address: &str, peer_as: u32) -> PeerId {
    let p = add(rib, address, peer_as, |_| {});
    up(rib, p, address);
    p
}

/// Prefixes announced to `peer`, sorted, with their attributes.
pub fn sent(out: &RibOutputs, peer: PeerId) -> Vec<(IpNet, bgp::rib::RouteAttrs)> {
    let mut v: Vec<_> = out
        .announced_to(peer)
        .map(|(p, a)| (*p, (**a).clone()))
        .collect();
    v.sort_by_key(|(p, _)| *p);
    v
}

pub fn withdrawn(out: &RibOutputs, peer: PeerId) -> Vec<IpNet> {
    let mut v: Vec<_> = out.withdrawn_from(peer).copied().collect();
    v.sort();
    v
}

//! Speakers started in the test's own process (`bgp::speaker::start`) on loopback addresses:
//! their configurations and what they learned.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bgp::speaker::config::{NextHopMode, Origination, PeerConfig, SpeakerConfig};
use bgp::speaker::control::PeerStatus;
use bgp::speaker::SpeakerHandle;
use ipnet::IpNet;

/// A TCP port free on `ip` right now.
pub fn free_port(ip: Ipv4Addr) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `prefix` originated with no attributes of its own.
pub fn origination(prefix: &str) -> Origination {
    Origination {
        prefix: prefix.parse().unwrap(),
        med: None,
        local_pref: None,
        communities: vec![],
        large_communities: vec![],
    }
}

/// A speaker listening on `id:port` only, quick to reconnect, one path per prefix.
pub fn speaker_config(id: Ipv4Addr, asn: u32, port: u16, originate: &[&str]) -> SpeakerConfig {
    SpeakerConfig {
        router_id: id,
        local_as: asn,
        listen: vec![SocketAddr::from((id, port))],
        hold_time: 90,
        connect_retry: 1,
        cluster_id: None,
        max_paths: 1,
        control_socket: None,
        shutdown_drain_time: 0,
        bfd_port: bgp::speaker::config::DEFAULT_BFD_PORT,
        restarting: false,
        selection_deferral_time: 0,
        originate: originate.iter().map(|p| origination(p)).collect(),
        peers: vec![],
        policies: vec![],
    }
}

/// A peer with every optional setting at its default.
pub fn peer_config(address: Ipv4Addr, remote_as: u32, port: Option<u16>) -> PeerConfig {
    PeerConfig {
        address: IpAddr::V4(address),
        remote_as,
        port,
        passive: false,
        route_reflector_client: false,
        next_hop: NextHopMode::Auto,
        password: None,
        ttl_security: None,
        ebgp_multihop: None,
        local_address: None,
        allow_local_as: 0,
        hold_time: None,
        keepalive_time: None,
        graceful_restart_time: None,
        max_prefixes: None,
        bfd: None,
        add_paths: None,
    }
}

pub async fn peers(h: &SpeakerHandle) -> Vec<PeerStatus> {
    h.peers().await.unwrap()
}

/// Prefixes learned from a peer (not our own), sorted.
pub async fn learned(h: &SpeakerHandle) -> Vec<IpNet> {
    let mut v: Vec<IpNet> = h
        .routes(None, false)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.peer.is_some())
        .map(|r| r.prefix)
        .collect();
    v.sort();
    v
}

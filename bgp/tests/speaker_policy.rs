//! Filters changed on a live session (`SpeakerHandle::set_policy`): the export side sends
//! the difference at once, the import side asks the peer to resend (ROUTE-REFRESH) and
//! re-filters; the session is never reset.
//!
//! Two speakers in this process, on loopback addresses only (127.0.0.1 and 127.0.0.2).
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bgp::rib::{FilterAction, FilterRule, MatchOperator, RouteFilter};
use bgp::speaker::config::{NextHopMode, Origination, PeerConfig, SpeakerConfig};
use bgp::speaker::control::{ControlRequest, ControlResponse, PeerStatus};
use bgp::speaker::{start, PeerPolicy, SpeakerHandle};
use ipnet::IpNet;

fn free_port(ip: Ipv4Addr) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn origination(prefix: &str) -> Origination {
    Origination {
        prefix: prefix.parse().unwrap(),
        med: None,
        local_pref: None,
        communities: vec![],
        large_communities: vec![],
    }
}

fn peer(address: Ipv4Addr, remote_as: u32, port: Option<u16>, passive: bool) -> PeerConfig {
    PeerConfig {
        address: IpAddr::V4(address),
        remote_as,
        port,
        passive,
        route_reflector_client: false,
        next_hop: NextHopMode::Auto,
        password: None,
        ttl_security: None,
        local_address: None,
        allow_local_as: 0,
        hold_time: None,
        graceful_restart_time: None,
    }
}

async fn peers(h: &SpeakerHandle) -> Vec<PeerStatus> {
    match h.control(ControlRequest::Peers).await.unwrap() {
        ControlResponse::Peers { peers } => peers,
        other => panic!("{other:?}"),
    }
}

/// Prefixes learned from a peer (not our own).
async fn learned(h: &SpeakerHandle) -> Vec<IpNet> {
    match h.control(ControlRequest::Routes).await.unwrap() {
        ControlResponse::Routes { routes } => {
            let mut v: Vec<IpNet> = routes
                .into_iter()
                .filter(|r| r.peer.is_some())
                .map(|r| r.prefix)
                .collect();
            v.sort();
            v
        }
        other => panic!("{other:?}"),
    }
}

async fn wait_learned(h: &SpeakerHandle, want: &[&str]) {
    let want: Vec<IpNet> = want.iter().map(|p| p.parse().unwrap()).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = learned(h).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "learned {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_change_without_resetting_the_session() {
    let a_ip = Ipv4Addr::new(127, 0, 0, 1);
    let b_ip = Ipv4Addr::new(127, 0, 0, 2);
    let (a_port, b_port) = (free_port(a_ip), free_port(b_ip));
    let config = |id: Ipv4Addr, asn: u32, port: u16, originate: Vec<Origination>| SpeakerConfig {
        router_id: id,
        local_as: asn,
        listen: vec![SocketAddr::from((id, port))],
        hold_time: 90,
        connect_retry: 1,
        cluster_id: None,
        max_paths: 1,
        control_socket: None,
        originate,
        peers: vec![],
    };
    let (a, _ta) = start(
        config(
            a_ip,
            65001,
            a_port,
            vec![origination("10.1.0.0/24"), origination("10.2.0.0/24")],
        ),
        None,
    )
    .await
    .unwrap();
    let (b, _tb) = start(config(b_ip, 65002, b_port, vec![]), None)
        .await
        .unwrap();
    let mut to_b = peer(b_ip, 65002, Some(b_port), false);
    to_b.local_address = Some(IpAddr::V4(a_ip));
    a.add_peer(to_b).await.unwrap();
    b.add_peer(peer(a_ip, 65001, None, true)).await.unwrap();
    wait_learned(&b, &["10.1.0.0/24", "10.2.0.0/24"]).await;
    let since = peers(&b).await[0].since_secs;

    // B's import filter rejects 10.2.0.0/24: B asks A to resend and drops it.
    let reject = |cidr: &str| RouteFilter {
        v4: vec![FilterRule::new(
            cidr.parse().unwrap(),
            MatchOperator::Equal,
            FilterAction::Reject,
        )],
        v6: vec![],
    };
    b.set_policy(PeerPolicy {
        address: IpAddr::V4(a_ip),
        import: reject("10.2.0.0/24"),
        export: RouteFilter::default(),
    })
    .await
    .unwrap();
    wait_learned(&b, &["10.1.0.0/24"]).await;

    // A's export filter towards B rejects 10.1.0.0/24: withdrawn at once.
    a.set_policy(PeerPolicy {
        address: IpAddr::V4(b_ip),
        import: RouteFilter::default(),
        export: reject("10.1.0.0/24"),
    })
    .await
    .unwrap();
    wait_learned(&b, &[]).await;

    // Both filters lifted: everything comes back.
    a.set_policy(PeerPolicy {
        address: IpAddr::V4(b_ip),
        import: RouteFilter::default(),
        export: RouteFilter::default(),
    })
    .await
    .unwrap();
    b.set_policy(PeerPolicy {
        address: IpAddr::V4(a_ip),
        import: RouteFilter::default(),
        export: RouteFilter::default(),
    })
    .await
    .unwrap();
    wait_learned(&b, &["10.1.0.0/24", "10.2.0.0/24"]).await;

    // The session stayed up the whole time: one Established period.
    let p = &peers(&b).await[0];
    assert_eq!(p.state, "Established");
    assert!(p.since_secs >= since, "session was reset");
    assert!(
        p.last_error.is_none(),
        "unexpected error: {:?}",
        p.last_error
    );
    assert!(b
        .set_policy(PeerPolicy {
            address: "192.0.2.1".parse().unwrap(),
            import: RouteFilter::default(),
            export: RouteFilter::default(),
        })
        .await
        .is_err());
    a.shutdown().await;
    b.shutdown().await;
}

//! The control socket's route queries (`birdc show route [for]` for `routectl node routes`)
//! and per-family counts: three speakers in this process on loopback addresses; B hears
//! 10.1.0.0/24 from both A and C and 10.1.0.0/16 from A.
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

mod in_process;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bgp::speaker::control::{ControlRequest, ControlResponse, RouteView};
use bgp::speaker::{start, SpeakerHandle};
use in_process::{free_port, peer_config, peers, speaker_config};

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 21);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 22);
const C: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 23);

async fn lookup(h: &SpeakerHandle, prefix: &str, longest_match: bool) -> Vec<RouteView> {
    let request = ControlRequest::RouteLookup {
        prefix: prefix.parse().unwrap(),
        longest_match,
    };
    match h.control(request).await.unwrap() {
        ControlResponse::Routes { routes } => routes,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_lookups_explain_the_best_path_and_counts_are_per_family() {
    let (a_port, b_port, c_port) = (free_port(A), free_port(B), free_port(C));
    let (a, _ta) = start(
        speaker_config(A, 65001, a_port, &["10.1.0.0/24", "10.1.0.0/16"]),
        None,
    )
    .await
    .unwrap();
    let (b, _tb) = start(speaker_config(B, 65002, b_port, &["10.2.0.0/24"]), None)
        .await
        .unwrap();
    let (c, _tc) = start(speaker_config(C, 65003, c_port, &["10.1.0.0/24"]), None)
        .await
        .unwrap();
    for (h, from) in [(&a, A), (&c, C)] {
        let mut to_b = peer_config(B, 65002, Some(b_port));
        // Connect from our own loopback address, which B has configured.
        to_b.local_address = Some(IpAddr::V4(from));
        h.add_peer(to_b).await.unwrap();
    }
    for (addr, asn, port) in [(A, 65001, a_port), (C, 65003, c_port)] {
        let mut p = peer_config(addr, asn, Some(port));
        p.passive = true;
        b.add_peer(p).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let routes = lookup(&b, "10.1.0.0/24", false).await;
        if routes.len() == 2 && lookup(&b, "10.1.0.0/16", false).await.len() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "paths never arrived: {routes:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Exact: both paths of the /24, best first; equal but for the router ID, which A's
    // lower one wins (RFC 4271 §9.1.2.2 (f)).
    let both = lookup(&b, "10.1.0.0/24", false).await;
    assert_eq!(both[0].peer, Some(IpAddr::V4(A)), "{both:?}");
    assert_eq!(both[0].decision, "best");
    assert!(both[0].best);
    assert_eq!(both[1].peer, Some(IpAddr::V4(C)));
    assert_eq!(both[1].decision, "beaten: lower router ID");
    assert!(!both[1].best);

    // Longest match: an address inside the /24 finds the /24, one outside it the /16.
    let inside = lookup(&b, "10.1.0.9/32", true).await;
    assert_eq!(inside.len(), 2);
    assert!(inside.iter().all(|r| r.prefix.to_string() == "10.1.0.0/24"));
    let outside = lookup(&b, "10.1.7.7/32", true).await;
    assert_eq!(outside.len(), 1);
    assert_eq!(outside[0].prefix.to_string(), "10.1.0.0/16");
    // Exact lookups do not fall back to a covering prefix; nothing covers 10.9.0.1.
    assert!(lookup(&b, "10.1.7.0/24", false).await.is_empty());
    assert!(lookup(&b, "10.9.0.1/32", true).await.is_empty());
    // Our own origination is local and best.
    let own = lookup(&b, "10.2.0.0/24", false).await;
    assert_eq!((own[0].peer, own[0].decision.as_str()), (None, "best"));

    // Per family: from A, 2 IPv4 prefixes received and none of IPv6; what we advertise to
    // A is counted per family too and adds up to the session's total.
    let towards_a = peers(&b)
        .await
        .into_iter()
        .find(|p| p.address == IpAddr::V4(A))
        .unwrap();
    let v4 = towards_a
        .family_prefixes
        .iter()
        .find(|f| f.family == "ipv4-unicast")
        .unwrap();
    assert_eq!((v4.received, v4.accepted), (2, 2), "{towards_a:?}");
    assert_eq!(v4.received, towards_a.prefixes_received);
    assert_eq!(v4.advertised, towards_a.prefixes_advertised);
    let v6 = towards_a
        .family_prefixes
        .iter()
        .find(|f| f.family == "ipv6-unicast")
        .unwrap();
    assert_eq!((v6.received, v6.advertised), (0, 0));
}

//! Peer lifecycle through the RIB: initial dump and End-of-RIB, batching of outputs,
//! peer down withdrawing its routes with best-path changes, route refresh, counters and
//! API errors.
#![allow(clippy::unwrap_used)]

mod rib_common;

use bgp::packet::Family;
use bgp::rib::{EndOfRib, FibNextHop, FibRoute, PeerId, RibError};
use rib_common::*;

#[test]
fn initial_dump_then_end_of_rib_per_family() {
    let mut rib = rib();
    let a = peer(&mut rib, "10.1.0.2", 65001);
    rib.update(
        a,
        &announce(
            attrs(&[65001], "10.1.0.2"),
            &["10.10.0.0/24", "10.10.1.0/24"],
        ),
    )
    .unwrap();
    rib.originate(net("fd00:10::/64"), None);
    let b = add(&mut rib, "10.1.0.3", 65002, |_| {});
    let out = up(&mut rib, b, "10.1.0.3");
    assert_eq!(sent(&out, b).len(), 3);
    assert_eq!(
        out.end_of_rib,
        vec![
            EndOfRib {
                peer: b,
                family: Family::Ipv4Unicast
            },
            EndOfRib {
                peer: b,
                family: Family::Ipv6Unicast
            }
        ]
    );
    // The two IPv4 prefixes share one attribute set, so one group.
    assert_eq!(
        out.updates
            .iter()
            .filter(|u| u.family == Family::Ipv4Unicast)
            .count(),
        1
    );
    assert_eq!(rib.stats(b).unwrap().advertised, 3);
    // An empty table still gets End-of-RIB.
    let mut empty = rib_common::rib();
    let c = add(&mut empty, "10.1.0.4", 65003, |_| {});
    let out = up(&mut empty, c, "10.1.0.4");
    assert!(out.updates.is_empty());
    assert_eq!(out.end_of_rib.len(), 2);
}

#[test]
fn one_update_yields_one_group_per_peer() {
    let mut rib = rib();
    let a = peer(&mut rib, "10.1.0.2", 65001);
    let b = peer(&mut rib, "10.1.0.3", 65002);
    let c = peer(&mut rib, "10.1.0.4", 65003);
    let prefixes: Vec<String> = (0..200)
        .map(|i| format!("10.{}.{}.0/24", 100 + i / 256, i % 256))
        .collect();
    let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
    let out = rib
        .update(a, &announce(attrs(&[65001], "10.1.0.2"), &refs))
        .unwrap();
    assert_eq!(out.updates.len(), 2);
    for peer in [b, c] {
        let u = out.updates.iter().find(|u| u.peer == peer).unwrap();
        assert_eq!(u.prefixes.len(), 200);
    }
    assert_eq!(out.best_changes.len(), 200);
    // A repeat of the same UPDATE changes nothing.
    let out = rib
        .update(a, &announce(attrs(&[65001], "10.1.0.2"), &refs))
        .unwrap();
    assert!(out.is_empty());
}

#[test]
fn peer_down_withdraws_its_routes_and_reports_best_path_changes() {
    let mut rib = rib();
    let a = peer(&mut rib, "10.1.0.2", 65001);
    let b = peer(&mut rib, "10.1.0.3", 65002);
    let c = peer(&mut rib, "10.1.0.4", 65003);
    // 10.10.0.0/24 only via a; 10.10.1.0/24 via a (best, shorter) and b.
    rib.update(
        a,
        &announce(
            attrs(&[65001], "10.1.0.2"),
            &["10.10.0.0/24", "10.10.1.0/24"],
        ),
    )
    .unwrap();
    rib.update(
        b,
        &announce(attrs(&[65002, 9], "10.1.0.3"), &["10.10.1.0/24"]),
    )
    .unwrap();
    assert_eq!(rib.stats(c).unwrap().advertised, 2);

    let out = rib.peer_down(a).unwrap();
    assert!(rib.best(&net("10.10.0.0/24")).is_none());
    assert_eq!(rib.best(&net("10.10.1.0/24")).unwrap().peer, b);
    let mut changes = out.best_changes.clone();
    changes.sort_by_key(|c| c.prefix);
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0].route, FibRoute::Unreachable);
    assert_eq!(
        changes[1].route,
        FibRoute::Via(vec![FibNextHop {
            next_hop: ip("10.1.0.3"),
            peer: b
        }])
    );
    // c: one withdrawal, one replacement; b: gets a withdrawal for the prefix it had
    // received from a (now its own path is best) and for the gone one.
    assert_eq!(withdrawn(&out, c), vec![net("10.10.0.0/24")]);
    assert_eq!(sent(&out, c).len(), 1);
    assert_eq!(
        withdrawn(&out, b),
        vec![net("10.10.0.0/24"), net("10.10.1.0/24")]
    );
    assert!(
        withdrawn(&out, a).is_empty() && sent(&out, a).is_empty(),
        "a is down"
    );
    assert_eq!(rib.stats(c).unwrap().advertised, 1);
    assert_eq!(rib.stats(a).unwrap(), Default::default());
    // It can come back and gets the table.
    let out = up(&mut rib, a, "10.1.0.2");
    assert_eq!(sent(&out, a).len(), 1);
}

#[test]
fn refresh_resends_the_adj_rib_out() {
    let mut rib = rib();
    let a = peer(&mut rib, "10.1.0.2", 65001);
    let b = peer(&mut rib, "10.1.0.3", 65002);
    rib.update(a, &announce(attrs(&[65001], "10.1.0.2"), &["10.10.0.0/24"]))
        .unwrap();
    let out = rib.refresh(b, Family::Ipv4Unicast).unwrap();
    assert_eq!(sent(&out, b).len(), 1);
    assert!(out.end_of_rib.is_empty());
    assert_eq!(
        rib.stats(b).unwrap().advertised,
        1,
        "a refresh is no new advertisement"
    );
    let out = rib.refresh(b, Family::Ipv6Unicast).unwrap();
    assert!(out.updates.is_empty());
}

#[test]
fn api_errors() {
    let mut rib = rib();
    let a = add(&mut rib, "10.1.0.2", 65001, |_| {});
    let upd = announce(attrs(&[65001], "10.1.0.2"), &["10.10.0.0/24"]);
    assert_eq!(rib.update(a, &upd), Err(RibError::PeerNotEstablished(a)));
    assert_eq!(rib.peer_down(a), Err(RibError::PeerNotEstablished(a)));
    assert_eq!(rib.update(PeerId::LOCAL, &upd), Err(RibError::LocalPeer));
    up(&mut rib, a, "10.1.0.2");
    rib.update(a, &upd).unwrap();
    let out = rib.remove_peer(a).unwrap();
    assert_eq!(out.best_changes.len(), 1);
    assert!(rib.is_empty());
    assert_eq!(rib.update(a, &upd), Err(RibError::UnknownPeer(a)));
}

#[test]
fn end_of_rib_and_unnegotiated_families_are_ignored() {
    let mut rib = rib();
    let a = add(&mut rib, "10.1.0.2", 65001, |_| {});
    rib.peer_up(
        a,
        bgp::rib::PeerSession {
            router_id: v4("10.1.0.2"),
            local_ipv4: Some(v4("10.255.0.1")),
            local_ipv6: None,
            families: vec![Family::Ipv4Unicast],
            shared_subnets: Vec::new(),
            add_path_send: Vec::new(),
        },
    )
    .unwrap();
    assert!(rib
        .update(a, &bgp::packet::Update::end_of_rib(Family::Ipv4Unicast))
        .unwrap()
        .is_empty());
    rib.update(
        a,
        &announce_v6(attrs(&[65001], "10.1.0.2"), "fd00:1::2", &["fd00:10::/64"]),
    )
    .unwrap();
    assert!(rib.is_empty());
}

#[test]
fn prefixes_are_keyed_without_host_bits() {
    let mut rib = rib();
    let a = peer(&mut rib, "10.1.0.2", 65001);
    rib.update(a, &announce(attrs(&[65001], "10.1.0.2"), &["10.10.0.7/24"]))
        .unwrap();
    assert!(rib.best(&net("10.10.0.0/24")).is_some());
    rib.update(a, &withdraw(&["10.10.0.0/24"])).unwrap();
    assert!(rib.is_empty());
}

#[test]
fn prefix_in_both_nlri_and_ipv4_mp_reach_is_taken_once() {
    let mut rib = rib();
    let a = peer(&mut rib, "10.1.0.2", 65001);
    let b = peer(&mut rib, "10.1.0.3", 65002);
    let mut u = announce(attrs(&[65001], "10.1.0.2"), &["10.10.0.0/24"]);
    u.mp_reach = Some(bgp::packet::MpReach {
        afi: bgp::packet::Afi::Ipv4,
        safi: bgp::packet::Safi::Unicast,
        next_hop: ip("10.1.0.9"),
        link_local_next_hop: None,
        nlri: vec![net("10.10.0.0/24")],
    });
    let out = rib.update(a, &u).unwrap();
    assert_eq!(
        rib.best(&net("10.10.0.0/24")).unwrap().attrs.next_hop,
        ip("10.1.0.9")
    );
    assert_eq!(sent(&out, b).len(), 1);
    assert_eq!(out.best_changes.len(), 1);
}

#[test]
fn graceful_restart_keeps_stale_paths_until_end_of_rib() {
    let mut rib = rib();
    let a = peer(&mut rib, "10.1.0.2", 65001);
    let c = peer(&mut rib, "10.1.0.4", 65003);
    rib.update(
        a,
        &announce(
            attrs(&[65001], "10.1.0.2"),
            &["10.10.0.0/24", "10.10.1.0/24"],
        ),
    )
    .unwrap();
    rib.update(
        a,
        &announce_v6(attrs(&[65001], "10.1.0.2"), "fd00:1::2", &["fd00:10::/64"]),
    )
    .unwrap();
    // a restarts, preserving forwarding for IPv4 only.
    let out = rib.peer_down_graceful(a, &[Family::Ipv4Unicast]).unwrap();
    assert_eq!(
        withdrawn(&out, c),
        vec![net("fd00:10::/64")],
        "IPv6 is not retained"
    );
    assert!(sent(&out, c).is_empty());
    assert_eq!(out.best_changes.len(), 1);
    assert!(rib.best(&net("10.10.0.0/24")).unwrap().stale);
    assert!(matches!(
        rib.fib_route(&net("10.10.0.0/24")),
        FibRoute::Via(_)
    ));
    // Back up; it re-sends one of the two prefixes unchanged, then End-of-RIB.
    let out = up(&mut rib, a, "10.1.0.2");
    assert!(
        out.updates.is_empty(),
        "nothing to send a: its own paths are best"
    );
    let out = rib
        .update(a, &announce(attrs(&[65001], "10.1.0.2"), &["10.10.0.0/24"]))
        .unwrap();
    assert!(
        out.is_empty(),
        "refreshing an identical path changes nothing"
    );
    assert!(!rib.best(&net("10.10.0.0/24")).unwrap().stale);
    let out = rib
        .update(a, &bgp::packet::Update::end_of_rib(Family::Ipv4Unicast))
        .unwrap();
    assert_eq!(withdrawn(&out, c), vec![net("10.10.1.0/24")]);
    assert_eq!(out.best_changes.len(), 1);
    assert_eq!(out.best_changes[0].route, FibRoute::Unreachable);
    assert!(rib.best(&net("10.10.0.0/24")).is_some());
    assert_eq!(rib.stats(a).unwrap().accepted, 1);
    assert_eq!(rib.stats(c).unwrap().advertised, 1);
}

#[test]
fn enhanced_route_refresh_drops_what_the_peer_did_not_resend() {
    // RFC 7313 §4: between BoRR and EoRR the peer re-sends its table; what it left out is
    // gone at EoRR, while its other family and the other peers are untouched.
    let mut rib = rib();
    let a = peer(&mut rib, "10.1.0.2", 65001);
    let c = peer(&mut rib, "10.1.0.4", 65003);
    rib.update(
        a,
        &announce(
            attrs(&[65001], "10.1.0.2"),
            &["10.10.0.0/24", "10.10.1.0/24"],
        ),
    )
    .unwrap();
    rib.update(
        a,
        &announce_v6(attrs(&[65001], "10.1.0.2"), "fd00:1::2", &["fd00:10::/64"]),
    )
    .unwrap();
    rib.begin_refresh(a, Family::Ipv4Unicast).unwrap();
    // Stale paths still forward and stay advertised.
    assert!(rib.best(&net("10.10.1.0/24")).unwrap().stale);
    assert!(matches!(
        rib.fib_route(&net("10.10.1.0/24")),
        FibRoute::Via(_)
    ));
    assert!(
        !rib.best(&net("fd00:10::/64")).unwrap().stale,
        "IPv6 untouched"
    );
    let out = rib
        .update(a, &announce(attrs(&[65001], "10.1.0.2"), &["10.10.0.0/24"]))
        .unwrap();
    assert!(
        out.is_empty(),
        "an identical re-announcement changes nothing"
    );
    let out = rib.end_refresh(a, Family::Ipv4Unicast).unwrap();
    assert_eq!(withdrawn(&out, c), vec![net("10.10.1.0/24")]);
    assert_eq!(out.best_changes.len(), 1);
    assert!(rib.best(&net("10.10.0.0/24")).is_some_and(|p| !p.stale));
    assert!(rib.best(&net("fd00:10::/64")).is_some());
    assert_eq!(rib.stats(a).unwrap().accepted, 2);
}

#[test]
fn stale_paths_go_when_the_restart_timer_expires_or_the_peer_is_removed() {
    let mut rib = rib();
    let a = peer(&mut rib, "10.1.0.2", 65001);
    let c = peer(&mut rib, "10.1.0.4", 65003);
    rib.update(a, &announce(attrs(&[65001], "10.1.0.2"), &["10.10.0.0/24"]))
        .unwrap();
    rib.peer_down_graceful(a, &[Family::Ipv4Unicast, Family::Ipv6Unicast])
        .unwrap();
    let out = rib.flush_stale(a).unwrap();
    assert_eq!(withdrawn(&out, c), vec![net("10.10.0.0/24")]);
    assert!(rib.is_empty());

    up(&mut rib, a, "10.1.0.2");
    rib.update(a, &announce(attrs(&[65001], "10.1.0.2"), &["10.10.0.0/24"]))
        .unwrap();
    rib.peer_down_graceful(a, &[Family::Ipv4Unicast]).unwrap();
    let out = rib.remove_peer(a).unwrap();
    assert_eq!(withdrawn(&out, c), vec![net("10.10.0.0/24")]);
    assert!(rib.is_empty());
}

#[test]
fn outputs_encode_to_wire_updates_that_decode_back() {
    use bgp::packet::{DecodeContext, Message};
    let mut rib = rib();
    let a = peer(&mut rib, "10.1.0.2", 65001);
    let b = peer(&mut rib, "10.1.0.3", 65002);
    let prefixes: Vec<String> = (0..2000)
        .map(|i| format!("10.{}.{}.0/24", 100 + i / 256, i % 256))
        .collect();
    let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
    let out = rib
        .update(a, &announce(attrs(&[65001], "10.1.0.2"), &refs))
        .unwrap();
    let ctx = DecodeContext {
        four_octet_as: true,
        ..DecodeContext::default()
    };
    let mut wire = Vec::new();
    for u in out.updates.iter().filter(|u| u.peer == b) {
        u.encode(&ctx, &mut wire).unwrap();
    }
    assert!(
        wire.len() > 1,
        "2000 prefixes need several 4096-octet UPDATEs"
    );
    let mut seen = 0;
    for bytes in &wire {
        let Message::Update(u) = Message::decode(bytes, &ctx).unwrap() else {
            panic!("not an UPDATE")
        };
        assert_eq!(u.attributes.next_hop, Some(v4("10.255.0.1")));
        seen += u.nlri.len();
    }
    assert_eq!(seen, 2000);
    let out = rib.peer_down(a).unwrap();
    let mut wire = Vec::new();
    for w in out.withdraws.iter().filter(|w| w.peer == b) {
        w.encode(&ctx, &mut wire);
    }
    let withdrawn: usize = wire
        .iter()
        .map(|bytes| match Message::decode(bytes, &ctx).unwrap() {
            Message::Update(u) => u.withdrawn.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(withdrawn, 2000);
}

#[test]
fn stale_paths_are_dropped_when_the_peer_returns_as_another_router() {
    let mut rib = rib();
    let a = peer(&mut rib, "10.1.0.2", 65001);
    let c = peer(&mut rib, "10.1.0.4", 65003);
    rib.update(a, &announce(attrs(&[65001], "10.1.0.2"), &["10.10.0.0/24"]))
        .unwrap();
    rib.peer_down_graceful(a, &[Family::Ipv4Unicast]).unwrap();
    let out = up(&mut rib, a, "10.1.0.99");
    assert_eq!(withdrawn(&out, c), vec![net("10.10.0.0/24")]);
    assert!(rib.is_empty());
    assert_eq!(out.end_of_rib.len(), 2);
}

//! Import acceptance and export rules: AS-path loops and `allow local as`, iBGP split
//! horizon, the route-reflection matrix of RFC 4456 §6 with ORIGINATOR_ID / CLUSTER_LIST,
//! eBGP/iBGP attribute transforms, well-known communities, locally originated routes.
#![allow(clippy::unwrap_used)]

mod rib_common;

use bgp::packet::attribute::flag;
use bgp::packet::{AsPath, Community, Family, RawAttribute};
use bgp::rib::{NextHopMode, PeerId, Rib};
use rib_common::*;

const P: &str = "192.168.20.0/24";

#[test]
fn path_with_our_as_is_rejected_unless_allow_local_as() {
    let mut rib = rib();
    let a = peer(&mut rib, "10.1.0.2", 65001);
    let out = rib
        .update(a, &announce(attrs(&[65001, LOCAL_AS, 7], "10.1.0.2"), &[P]))
        .unwrap();
    assert!(rib.best(&net(P)).is_none());
    assert!(out.best_changes.is_empty());
    assert_eq!(rib.stats(a).unwrap().received, 1);
    assert_eq!(rib.stats(a).unwrap().accepted, 0);

    let mut rib = rib_common::rib();
    let b = add(&mut rib, "10.1.0.3", 65001, |c| c.allow_local_as = 1);
    up(&mut rib, b, "10.1.0.3");
    rib.update(b, &announce(attrs(&[65001, LOCAL_AS, 7], "10.1.0.3"), &[P]))
        .unwrap();
    assert_eq!(rib.best(&net(P)).unwrap().peer, b);
    // Twice is still more than allowed once.
    rib.update(
        b,
        &announce(attrs(&[65001, LOCAL_AS, LOCAL_AS], "10.1.0.3"), &[P]),
    )
    .unwrap();
    assert!(
        rib.best(&net(P)).is_none(),
        "a looped re-announcement withdraws the old path"
    );
}

#[test]
fn unusable_next_hops_are_rejected() {
    let mut rib = rib();
    let a = peer(&mut rib, "10.1.0.2", 65001);
    // Our own session address, our router id, unspecified.
    for nh in ["10.255.0.1", "10.0.0.1", "0.0.0.0", "224.0.0.5"] {
        rib.update(a, &announce(attrs(&[65001], nh), &[P])).unwrap();
        assert!(rib.best(&net(P)).is_none(), "next hop {nh} accepted");
    }
    rib.update(a, &announce(attrs(&[65001], "10.1.0.2"), &[P]))
        .unwrap();
    assert!(rib.best(&net(P)).is_some());
    // An IPv6 route needs an IPv6 next hop (RFC 2545 §3).
    let v6 = announce_v6(attrs(&[65001], "10.1.0.2"), "10.1.0.2", &["fd00:20::/64"]);
    rib.update(a, &v6).unwrap();
    assert!(rib.best(&net("fd00:20::/64")).is_none());
    let v6 = announce_v6(attrs(&[65001], "10.1.0.2"), "fd00:1::2", &["fd00:20::/64"]);
    rib.update(a, &v6).unwrap();
    assert!(rib.best(&net("fd00:20::/64")).is_some());
}

#[test]
fn treat_as_withdraw_removes_the_previous_path() {
    let mut rib = rib();
    let a = peer(&mut rib, "10.1.0.2", 65001);
    rib.update(a, &announce(attrs(&[65001], "10.1.0.2"), &[P]))
        .unwrap();
    let mut bad = announce(attrs(&[65001], "10.1.0.2"), &[P]);
    bad.treat_as_withdraw = true;
    let out = rib.update(a, &bad).unwrap();
    assert!(rib.best(&net(P)).is_none());
    assert_eq!(out.best_changes.len(), 1);
    assert_eq!(
        rib.stats(a).unwrap().received,
        0,
        "a withdrawal, not a filtered route"
    );
}

/// A reflector (us) with clients c1, c2, non-clients n1, n2 and an eBGP peer e.
struct Reflector {
    rib: Rib,
    c1: PeerId,
    c2: PeerId,
    n1: PeerId,
    n2: PeerId,
    e: PeerId,
}

fn reflector() -> Reflector {
    let mut rib = rib();
    let client = |c: &mut bgp::rib::PeerConfig| c.route_reflector_client = true;
    let c1 = add(&mut rib, "10.2.0.1", LOCAL_AS, client);
    let c2 = add(&mut rib, "10.2.0.2", LOCAL_AS, client);
    let n1 = add(&mut rib, "10.2.0.3", LOCAL_AS, |_| {});
    let n2 = add(&mut rib, "10.2.0.4", LOCAL_AS, |_| {});
    let e = add(&mut rib, "10.2.0.5", 65001, |_| {});
    for (p, rid) in [
        (c1, "2.0.0.1"),
        (c2, "2.0.0.2"),
        (n1, "2.0.0.3"),
        (n2, "2.0.0.4"),
        (e, "2.0.0.5"),
    ] {
        up(&mut rib, p, rid);
    }
    Reflector {
        rib,
        c1,
        c2,
        n1,
        n2,
        e,
    }
}

fn ibgp_attrs(next_hop: &str) -> bgp::packet::PathAttributes {
    let mut a = attrs(&[64700], next_hop);
    a.local_pref = Some(100);
    a
}

fn receivers(out: &bgp::rib::RibOutputs) -> Vec<PeerId> {
    let mut v: Vec<PeerId> = out.updates.iter().map(|u| u.peer).collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn route_from_client_is_reflected_to_clients_and_non_clients() {
    let mut r = reflector();
    let out = r
        .rib
        .update(r.c1, &announce(ibgp_attrs("10.9.0.1"), &[P]))
        .unwrap();
    assert_eq!(receivers(&out), vec![r.c2, r.n1, r.n2, r.e]);
    let (_, to_n1) = &sent(&out, r.n1)[0];
    // RFC 4456 §8: ORIGINATOR_ID = the client's router id, our cluster id prepended.
    assert_eq!(to_n1.attrs.originator_id, Some(v4("2.0.0.1")));
    assert_eq!(to_n1.attrs.cluster_list, vec![ROUTER_ID]);
    assert_eq!(
        to_n1.next_hop,
        ip("10.9.0.1"),
        "reflection keeps the next hop"
    );
    assert_eq!(to_n1.attrs.local_pref, Some(100));
    // Towards eBGP, none of that leaks.
    let (_, to_e) = &sent(&out, r.e)[0];
    assert_eq!(to_e.attrs.originator_id, None);
    assert!(to_e.attrs.cluster_list.is_empty());
    assert_eq!(to_e.attrs.local_pref, None);
    assert_eq!(to_e.next_hop, ip("10.255.0.1"));
}

#[test]
fn route_from_non_client_is_reflected_to_clients_only() {
    let mut r = reflector();
    let out = r
        .rib
        .update(r.n1, &announce(ibgp_attrs("10.9.0.3"), &[P]))
        .unwrap();
    assert_eq!(receivers(&out), vec![r.c1, r.c2, r.e]);
    let (_, to_c1) = &sent(&out, r.c1)[0];
    assert_eq!(to_c1.attrs.originator_id, Some(v4("2.0.0.3")));
    assert_eq!(to_c1.attrs.cluster_list, vec![ROUTER_ID]);
}

#[test]
fn route_from_ebgp_goes_to_all_ibgp_peers_without_reflection_attributes() {
    let mut r = reflector();
    let out = r
        .rib
        .update(r.e, &announce(attrs(&[65001], "10.2.0.5"), &[P]))
        .unwrap();
    assert_eq!(receivers(&out), vec![r.c1, r.c2, r.n1, r.n2]);
    for p in [r.c1, r.n1] {
        let (_, a) = &sent(&out, p)[0];
        assert_eq!(a.attrs.originator_id, None);
        assert!(a.attrs.cluster_list.is_empty());
        assert_eq!(a.attrs.local_pref, Some(100));
        assert_eq!(
            a.next_hop,
            ip("10.2.0.5"),
            "iBGP keeps the eBGP next hop by default"
        );
        assert_eq!(a.attrs.as_path, Some(AsPath::from_sequence(vec![65001])));
    }
}

#[test]
fn existing_originator_id_is_kept_and_cluster_list_grows() {
    let mut r = reflector();
    let mut a = ibgp_attrs("10.9.0.1");
    a.originator_id = Some(v4("7.7.7.7"));
    a.cluster_list = vec![v4("10.0.0.99")];
    let out = r.rib.update(r.c1, &announce(a, &[P])).unwrap();
    let (_, to_c2) = &sent(&out, r.c2)[0];
    assert_eq!(to_c2.attrs.originator_id, Some(v4("7.7.7.7")));
    assert_eq!(to_c2.attrs.cluster_list, vec![ROUTER_ID, v4("10.0.0.99")]);
}

#[test]
fn reflection_loops_are_rejected() {
    let mut r = reflector();
    let mut ours = ibgp_attrs("10.9.0.1");
    ours.originator_id = Some(ROUTER_ID);
    r.rib.update(r.c1, &announce(ours, &[P])).unwrap();
    assert!(
        r.rib.best(&net(P)).is_none(),
        "ORIGINATOR_ID = our router id"
    );
    let mut looped = ibgp_attrs("10.9.0.1");
    looped.cluster_list = vec![v4("10.0.0.50"), ROUTER_ID];
    r.rib.update(r.c1, &announce(looped, &[P])).unwrap();
    assert!(
        r.rib.best(&net(P)).is_none(),
        "our cluster id in CLUSTER_LIST"
    );
}

#[test]
fn ibgp_split_horizon_without_clients() {
    let mut rib = rib();
    let i1 = peer(&mut rib, "10.3.0.1", LOCAL_AS);
    let i2 = peer(&mut rib, "10.3.0.2", LOCAL_AS);
    let e = peer(&mut rib, "10.3.0.3", 65001);
    let out = rib
        .update(i1, &announce(ibgp_attrs("10.9.0.1"), &[P]))
        .unwrap();
    assert_eq!(receivers(&out), vec![e]);
    assert!(sent(&out, i2).is_empty());
    // And never back to the sender, even over eBGP.
    let out = rib
        .update(
            e,
            &announce(attrs(&[65001], "10.3.0.3"), &["192.168.21.0/24"]),
        )
        .unwrap();
    assert_eq!(receivers(&out), vec![i1, i2]);
}

#[test]
fn sender_gets_a_withdrawal_when_its_own_path_becomes_best() {
    let mut rib = rib();
    let a = peer(&mut rib, "10.1.0.2", 65001);
    let b = peer(&mut rib, "10.1.0.3", 65002);
    rib.update(a, &announce(attrs(&[65001, 1, 2], "10.1.0.2"), &[P]))
        .unwrap();
    // b's shorter path wins: a now receives it (prepended), and b gets nothing of its own.
    let out = rib
        .update(b, &announce(attrs(&[65002], "10.1.0.3"), &[P]))
        .unwrap();
    assert_eq!(sent(&out, a).len(), 1);
    assert!(withdrawn(&out, a).is_empty());
    assert!(sent(&out, b).is_empty());
    assert_eq!(withdrawn(&out, b), vec![net(P)], "b had been sent a's path");
}

#[test]
fn ebgp_export_prepends_sets_next_hop_self_and_strips_ibgp_attributes() {
    let mut rib = rib();
    let i = peer(&mut rib, "10.3.0.1", LOCAL_AS);
    let e = peer(&mut rib, "10.3.0.3", 65001);
    let mut a = attrs(&[64700, 5], "10.9.0.1");
    a.local_pref = Some(250);
    a.med = Some(33);
    // A transitive route target (type 0x00) and a non-transitive one (type 0x40).
    a.ext_communities = vec![
        bgp::packet::ExtCommunity([0x00, 0x02, 0, 1, 0, 0, 0, 1]),
        bgp::packet::ExtCommunity([0x40, 0x02, 0, 1, 0, 0, 0, 2]),
    ];
    a.unknown = vec![
        RawAttribute {
            flags: flag::OPTIONAL | flag::TRANSITIVE,
            type_code: 99,
            value: vec![1, 2],
        },
        RawAttribute {
            flags: flag::OPTIONAL,
            type_code: 98,
            value: vec![3],
        },
    ];
    let out = rib.update(i, &announce(a, &[P])).unwrap();
    let (_, x) = &sent(&out, e)[0];
    assert_eq!(
        x.attrs.as_path,
        Some(AsPath::from_sequence(vec![LOCAL_AS, 64700, 5]))
    );
    assert_eq!(x.next_hop, ip("10.255.0.1"));
    assert_eq!(x.attrs.next_hop, Some(v4("10.255.0.1")));
    assert_eq!(x.attrs.local_pref, None);
    assert_eq!(
        x.attrs.med, None,
        "MED is not passed to another AS (RFC 4271 §5.1.4)"
    );
    assert_eq!(
        x.attrs.unknown.len(),
        1,
        "unknown non-transitive attribute dropped"
    );
    assert_eq!(x.attrs.unknown[0].type_code, 99);
    assert_eq!(
        x.attrs.ext_communities.len(),
        1,
        "non-transitive ext community dropped"
    );
    assert_eq!(x.attrs.ext_communities[0].0[0], 0x00);
    assert_ne!(
        x.attrs.unknown[0].flags & flag::PARTIAL,
        0,
        "Partial bit set"
    );
    // The UPDATE the driver encodes carries the same thing.
    let u = out
        .updates
        .iter()
        .find(|u| u.peer == e)
        .unwrap()
        .to_update();
    assert_eq!(u.nlri, vec![P.parse().unwrap()]);
    assert_eq!(u.attributes.next_hop, Some(v4("10.255.0.1")));
}

#[test]
fn next_hop_modes() {
    let mut rib = rib();
    let e_in = peer(&mut rib, "10.1.0.2", 65001);
    let i_self = add(&mut rib, "10.3.0.1", LOCAL_AS, |c| {
        c.next_hop_mode = NextHopMode::SelfAddress
    });
    up(&mut rib, i_self, "10.3.0.1");
    let i_auto = peer(&mut rib, "10.3.0.2", LOCAL_AS);
    let e_keep = add(&mut rib, "10.3.0.3", 65002, |c| {
        c.next_hop_mode = NextHopMode::Keep
    });
    up(&mut rib, e_keep, "10.3.0.3");
    let out = rib
        .update(e_in, &announce(attrs(&[65001], "10.1.0.2"), &[P]))
        .unwrap();
    assert_eq!(sent(&out, i_self)[0].1.next_hop, ip("10.255.0.1"));
    assert_eq!(sent(&out, i_auto)[0].1.next_hop, ip("10.1.0.2"));
    assert_eq!(sent(&out, e_keep)[0].1.next_hop, ip("10.1.0.2"));
}

#[test]
fn well_known_communities_are_honoured() {
    let mut rib = rib();
    let e_in = peer(&mut rib, "10.1.0.2", 65001);
    let i = peer(&mut rib, "10.3.0.1", LOCAL_AS);
    let e_out = peer(&mut rib, "10.3.0.3", 65002);
    let mut no_export = attrs(&[65001], "10.1.0.2");
    no_export.communities = vec![Community::NO_EXPORT];
    let out = rib.update(e_in, &announce(no_export, &[P])).unwrap();
    assert_eq!(receivers(&out), vec![i], "NO_EXPORT stays inside the AS");
    let mut no_adv = attrs(&[65001], "10.1.0.2");
    no_adv.communities = vec![Community::NO_ADVERTISE];
    let out = rib.update(e_in, &announce(no_adv, &[P])).unwrap();
    assert!(out.updates.is_empty(), "NO_ADVERTISE goes nowhere");
    assert_eq!(withdrawn(&out, i), vec![net(P)]);
    assert!(withdrawn(&out, e_out).is_empty());
    assert!(rib.best(&net(P)).is_some(), "but it is still used locally");
}

#[test]
fn locally_originated_routes_are_exported_with_own_next_hop() {
    let mut rib = rib();
    let i = peer(&mut rib, "10.3.0.1", LOCAL_AS);
    let e = peer(&mut rib, "10.3.0.3", 65001);
    let out = rib.originate(net("10.244.1.0/26"), None);
    let (_, to_i) = &sent(&out, i)[0];
    assert_eq!(to_i.next_hop, ip("10.255.0.1"));
    assert_eq!(to_i.attrs.as_path, Some(AsPath::default()));
    assert_eq!(to_i.attrs.origin, Some(bgp::packet::Origin::Igp));
    assert_eq!(to_i.attrs.local_pref, Some(100));
    let (_, to_e) = &sent(&out, e)[0];
    assert_eq!(
        to_e.attrs.as_path,
        Some(AsPath::from_sequence(vec![LOCAL_AS]))
    );
    assert_eq!(to_e.next_hop, ip("10.255.0.1"));
    // IPv6 uses the session's IPv6 address, in MP_REACH_NLRI.
    let out = rib.originate(net("fd00:244::/122"), None);
    let u = out.updates.iter().find(|u| u.peer == e).unwrap();
    assert_eq!(u.family, Family::Ipv6Unicast);
    let update = u.to_update();
    assert_eq!(update.mp_reach.unwrap().next_hop, ip("fd00:ff::1"));
    let out = rib.withdraw_local(net("10.244.1.0/26"));
    assert_eq!(withdrawn(&out, i), vec![net("10.244.1.0/26")]);
    assert_eq!(withdrawn(&out, e), vec![net("10.244.1.0/26")]);
}

#[test]
fn ipv6_routes_are_learned_and_exported() {
    let mut rib = rib();
    let a = peer(&mut rib, "10.1.0.2", 65001);
    let b = peer(&mut rib, "10.1.0.3", 65002);
    let out = rib
        .update(
            a,
            &announce_v6(attrs(&[65001], "10.1.0.2"), "fd00:1::2", &["fd00:10::/64"]),
        )
        .unwrap();
    assert_eq!(
        rib.best(&net("fd00:10::/64")).unwrap().attrs.next_hop,
        ip("fd00:1::2")
    );
    let (_, x) = &sent(&out, b)[0];
    assert_eq!(x.next_hop, ip("fd00:ff::1"));
    assert_eq!(x.attrs.next_hop, None);
}

#[test]
fn alike_peers_share_exports_but_session_addresses_are_respected() {
    let mut rib = rib();
    let src = peer(&mut rib, "10.1.0.2", 65001);
    let session = |local: &str| bgp::rib::PeerSession {
        router_id: v4("10.4.0.9"),
        local_ipv4: Some(v4(local)),
        local_ipv6: None,
        families: vec![Family::Ipv4Unicast],
        shared_subnets: Vec::new(),
        add_path_send: Vec::new(),
    };
    // Same configuration, different local addresses: different next hop self.
    let e1 = add(&mut rib, "10.4.0.1", 65010, |_| {});
    rib.peer_up(e1, session("10.4.0.100")).unwrap();
    let e2 = add(&mut rib, "10.5.0.1", 65020, |_| {});
    rib.peer_up(e2, session("10.5.0.100")).unwrap();
    // Same configuration and address as e1: the very same attribute set.
    let e3 = add(&mut rib, "10.4.0.3", 65030, |_| {});
    rib.peer_up(e3, session("10.4.0.100")).unwrap();
    let out = rib
        .update(src, &announce(attrs(&[65001], "10.1.0.2"), &[P]))
        .unwrap();
    let get = |p: PeerId| {
        out.updates
            .iter()
            .find(|u| u.peer == p)
            .unwrap()
            .attrs
            .clone()
    };
    assert_eq!(get(e1).next_hop, ip("10.4.0.100"));
    assert_eq!(get(e2).next_hop, ip("10.5.0.100"));
    assert!(std::sync::Arc::ptr_eq(&get(e1), &get(e3)));
}

#[test]
fn ebgp_export_keeps_a_third_party_next_hop_on_a_shared_subnet() {
    // RFC 4271 §5.1.3: the eBGP peer shares 10.4.0.0/24 with us; a route whose next hop is
    // also on that subnet is passed on with that next hop, so traffic does not detour through
    // us. A next hop elsewhere, and the same route to a peer on another link, get next hop self.
    let mut rib = rib();
    let mesh = add(&mut rib, "10.4.0.12", 64512, |_| {});
    up(&mut rib, mesh, "10.4.0.12");
    let session = |local: &str, subnet: &str| bgp::rib::PeerSession {
        router_id: v4("10.4.0.1"),
        local_ipv4: Some(v4(local)),
        local_ipv6: None,
        families: vec![Family::Ipv4Unicast],
        shared_subnets: vec![net(subnet)],
        add_path_send: Vec::new(),
    };
    let tor = add(&mut rib, "10.4.0.1", 65000, |_| {});
    rib.peer_up(tor, session("10.4.0.11", "10.4.0.0/24"))
        .unwrap();
    let far = add(&mut rib, "10.9.0.1", 65009, |_| {});
    rib.peer_up(far, session("10.9.0.11", "10.9.0.0/24"))
        .unwrap();

    let out = rib
        .update(mesh, &announce(attrs(&[], "10.4.0.13"), &["10.244.3.0/24"]))
        .unwrap();
    assert_eq!(sent(&out, tor)[0].1.next_hop, ip("10.4.0.13"));
    assert_eq!(sent(&out, far)[0].1.next_hop, ip("10.9.0.11"));

    let out = rib
        .update(mesh, &announce(attrs(&[], "10.7.0.5"), &["10.244.7.0/24"]))
        .unwrap();
    assert_eq!(sent(&out, tor)[0].1.next_hop, ip("10.4.0.11"));
}

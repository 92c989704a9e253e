//! The decision process end to end through the RIB: one test per tie-breaker of RFC 4271
//! §9.1.2.2 / RFC 4456 §9, each run with both arrival orders so that "first path wins" can
//! not pass, plus ECMP set formation and the local-route preference.
#![allow(clippy::unwrap_used)]

mod rib_common;

use std::sync::Arc;

use bgp::packet::{Origin, PathAttributes};
use bgp::rib::{
    compare, Candidate, DecisionOptions, DecisionStep, FibNextHop, FibRoute, PeerId, Rib,
    RouteAttrs,
};
use rib_common::*;

const PREFIX: &str = "192.168.10.0/24";

/// Sends `first` from peer `a` and `second` from peer `b`, in both orders on fresh RIBs
/// built by `setup`, and returns the best peer's index (0 = a, 1 = b) — asserting both
/// orders agree.
fn winner(
    setup: impl Fn() -> (Rib, PeerId, PeerId),
    first: &PathAttributes,
    second: &PathAttributes,
) -> usize {
    let mut results = Vec::new();
    for order in [[0usize, 1], [1, 0]] {
        let (mut rib, a, b) = setup();
        let peers = [(a, first), (b, second)];
        for i in order {
            let (p, attrs) = peers[i];
            rib.update(p, &announce(attrs.clone(), &[PREFIX])).unwrap();
        }
        assert_eq!(rib.paths(&net(PREFIX)).len(), 2);
        let best = rib.best(&net(PREFIX)).unwrap().peer;
        results.push(if best == a { 0 } else { 1 });
    }
    assert_eq!(results[0], results[1], "best path depends on arrival order");
    results[0]
}

/// Two eBGP peers in different ASes.
fn two_ebgp() -> (Rib, PeerId, PeerId) {
    let mut rib = rib();
    let a = peer(&mut rib, "10.1.0.2", 65001);
    let b = peer(&mut rib, "10.1.0.3", 65002);
    (rib, a, b)
}

/// Two eBGP peers in the same AS.
fn two_ebgp_same_as() -> (Rib, PeerId, PeerId) {
    let mut rib = rib();
    let a = peer(&mut rib, "10.1.0.2", 65001);
    let b = peer(&mut rib, "10.1.0.3", 65001);
    (rib, a, b)
}

/// Two iBGP peers with the given router ids.
fn two_ibgp(rid_a: &'static str, rid_b: &'static str) -> impl Fn() -> (Rib, PeerId, PeerId) {
    move || {
        let mut rib = rib();
        let a = add(&mut rib, "10.1.0.2", LOCAL_AS, |_| {});
        up(&mut rib, a, rid_a);
        let b = add(&mut rib, "10.1.0.3", LOCAL_AS, |_| {});
        up(&mut rib, b, rid_b);
        (rib, a, b)
    }
}

#[test]
fn highest_local_pref_wins() {
    let mut a = attrs(&[64600, 1, 2, 3], "10.1.0.2");
    a.local_pref = Some(200);
    let mut b = attrs(&[64600], "10.1.0.3");
    b.local_pref = Some(100);
    // Local pref is decided before (and overrides) the shorter AS path of b.
    assert_eq!(winner(two_ibgp("1.1.1.1", "1.1.1.2"), &a, &b), 0);
    // Absent LOCAL_PREF counts as the default 100 — 150 beats it.
    let mut c = attrs(&[64600, 1], "10.1.0.3");
    c.local_pref = Some(150);
    let d = attrs(&[64600], "10.1.0.2");
    assert_eq!(winner(two_ibgp("1.1.1.1", "1.1.1.2"), &d, &c), 1);
}

#[test]
fn import_policy_local_pref_applies_to_ebgp_routes() {
    let setup = || {
        let mut rib = rib();
        let a = add(&mut rib, "10.1.0.2", 65001, |c| {
            c.import.local_pref = Some(300)
        });
        up(&mut rib, a, "10.1.0.2");
        let b = peer(&mut rib, "10.1.0.3", 65002);
        (rib, a, b)
    };
    let a = attrs(&[65001, 1, 2], "10.1.0.2");
    let mut b = attrs(&[65002], "10.1.0.3");
    // LOCAL_PREF from an eBGP peer is ignored (RFC 4271 §5.1.5).
    b.local_pref = Some(1000);
    assert_eq!(winner(setup, &a, &b), 0);
}

#[test]
fn a_path_marked_graceful_shutdown_loses_to_any_other() {
    // RFC 8326: the sender of `a` is draining it; the longer AS path of `b` wins, over
    // eBGP (LOCAL_PREF would be the default) and over iBGP despite a higher LOCAL_PREF.
    let mut a = attrs(&[65001], "10.1.0.2");
    a.communities = vec![bgp::packet::Community::GRACEFUL_SHUTDOWN];
    let b = attrs(&[65002, 1, 2, 3], "10.1.0.3");
    assert_eq!(winner(two_ebgp, &a, &b), 1);
    let mut a = attrs(&[64600], "10.1.0.2");
    a.local_pref = Some(500);
    a.communities = vec![bgp::packet::Community::GRACEFUL_SHUTDOWN];
    let b = attrs(&[64600, 1, 2], "10.1.0.3");
    assert_eq!(winner(two_ibgp("1.1.1.1", "1.1.1.2"), &a, &b), 1);
    // Without the community, `a` wins both.
    a.communities.clear();
    assert_eq!(winner(two_ibgp("1.1.1.1", "1.1.1.2"), &a, &b), 0);
}

#[test]
fn shortest_as_path_wins() {
    let a = attrs(&[65001, 7, 8], "10.1.0.2");
    let b = attrs(&[65002, 9], "10.1.0.3");
    assert_eq!(winner(two_ebgp, &a, &b), 1);
}

#[test]
fn as_set_counts_as_one() {
    use bgp::packet::{AsPath, AsSegment, SegmentType};
    let mut a = attrs(&[], "10.1.0.2");
    a.as_path = Some(AsPath {
        segments: vec![
            AsSegment {
                kind: SegmentType::Sequence,
                asns: vec![65001],
            },
            AsSegment {
                kind: SegmentType::Set,
                asns: vec![1, 2, 3, 4],
            },
        ],
    });
    let b = attrs(&[65002, 5, 6], "10.1.0.3");
    assert_eq!(winner(two_ebgp, &a, &b), 0);
}

#[test]
fn lowest_origin_wins() {
    let mut a = attrs(&[65001, 7], "10.1.0.2");
    a.origin = Some(Origin::Incomplete);
    let mut b = attrs(&[65002, 9], "10.1.0.3");
    b.origin = Some(Origin::Egp);
    assert_eq!(winner(two_ebgp, &a, &b), 1);
    let mut c = attrs(&[65002, 9], "10.1.0.3");
    c.origin = Some(Origin::Igp);
    assert_eq!(winner(two_ebgp, &b, &c), 1);
}

#[test]
fn lowest_med_wins_between_paths_from_the_same_as() {
    let mut a = attrs(&[65001, 7], "10.1.0.2");
    a.med = Some(50);
    let mut b = attrs(&[65001, 9], "10.1.0.3");
    b.med = Some(10);
    assert_eq!(winner(two_ebgp_same_as, &a, &b), 1);
    // A missing MED is 0 (RFC 4271 §9.1.2.2 c), so it beats 10.
    let c = attrs(&[65001, 7], "10.1.0.2");
    assert_eq!(winner(two_ebgp_same_as, &c, &b), 0);
}

#[test]
fn med_is_not_compared_between_different_neighbour_ases() {
    // a has the worse MED, but comes from another AS: MED is skipped and the decision
    // falls through to the router id (a's 10.1.0.2 < b's 10.1.0.3).
    let mut a = attrs(&[65001, 7], "10.1.0.2");
    a.med = Some(500);
    let mut b = attrs(&[65002, 9], "10.1.0.3");
    b.med = Some(1);
    assert_eq!(winner(two_ebgp, &a, &b), 0);
    // With always-compare-med the MED decides.
    let setup = || {
        let mut rib = rib_with(|c| c.always_compare_med = true);
        let pa = peer(&mut rib, "10.1.0.2", 65001);
        let pb = peer(&mut rib, "10.1.0.3", 65002);
        (rib, pa, pb)
    };
    assert_eq!(winner(setup, &a, &b), 1);
}

#[test]
fn ebgp_wins_over_ibgp() {
    let setup = || {
        let mut rib = rib();
        // The iBGP peer has the lower router id and address, so only step d can pick b.
        let a = add(&mut rib, "10.1.0.2", LOCAL_AS, |_| {});
        up(&mut rib, a, "1.1.1.1");
        let b = peer(&mut rib, "10.1.0.3", 65002);
        (rib, a, b)
    };
    let mut a = attrs(&[65002, 9], "10.1.0.2");
    a.local_pref = Some(100);
    let b = attrs(&[65002, 9], "10.1.0.3");
    assert_eq!(winner(setup, &a, &b), 1);
}

#[test]
fn lowest_igp_cost_wins() {
    let setup = || {
        let (mut rib, a, b) = two_ibgp("1.1.1.1", "1.1.1.2")();
        let _ = rib.set_igp_cost(Box::new(|nh| {
            Some(if nh == ip("10.9.0.1") { 50 } else { 10 })
        }));
        (rib, a, b)
    };
    // a would win on router id; the IGP cost to its next hop is higher.
    let a = attrs(&[64600], "10.9.0.1");
    let b = attrs(&[64600], "10.9.0.2");
    assert_eq!(winner(setup, &a, &b), 1);
}

#[test]
fn lowest_router_id_wins() {
    let a = attrs(&[64600], "10.9.0.1");
    let b = attrs(&[64600], "10.9.0.2");
    // Router ids opposite to the address order, so the address cannot be what decides.
    assert_eq!(winner(two_ibgp("9.9.9.9", "1.1.1.1"), &a, &b), 1);
}

#[test]
fn originator_id_replaces_router_id() {
    // b is sent by the lower router id, but a reflected path carries ORIGINATOR_ID 1.0.0.1,
    // which is compared in place of a's sender router id (RFC 4456 §9).
    let mut a = attrs(&[64600], "10.9.0.1");
    a.originator_id = Some(v4("1.0.0.1"));
    a.cluster_list = vec![v4("10.0.0.9")];
    let b = attrs(&[64600], "10.9.0.2");
    assert_eq!(winner(two_ibgp("9.9.9.9", "2.2.2.2"), &a, &b), 0);
}

#[test]
fn shortest_cluster_list_wins() {
    let mut a = attrs(&[64600], "10.9.0.1");
    a.originator_id = Some(v4("3.3.3.3"));
    a.cluster_list = vec![v4("10.0.0.8"), v4("10.0.0.9")];
    let mut b = attrs(&[64600], "10.9.0.1");
    b.originator_id = Some(v4("3.3.3.3"));
    b.cluster_list = vec![v4("10.0.0.7")];
    assert_eq!(winner(two_ibgp("1.1.1.1", "2.2.2.2"), &a, &b), 1);
}

#[test]
fn lowest_peer_address_breaks_the_final_tie() {
    // Same router id (and same everything else): 10.1.0.2 < 10.1.0.3.
    let a = attrs(&[64600], "10.9.0.1");
    let b = attrs(&[64600], "10.9.0.1");
    assert_eq!(winner(two_ibgp("5.5.5.5", "5.5.5.5"), &a, &b), 0);
}

#[test]
fn compare_reports_the_deciding_step() {
    let route = |a: PathAttributes| {
        RouteAttrs::new(a, bgp::packet::Family::Ipv4Unicast, ip("10.9.0.1"), None)
    };
    let base = attrs(&[65001, 7], "10.9.0.1");
    fn cand<'a>(r: &'a RouteAttrs, rid: &str, ebgp: bool) -> Candidate<'a> {
        Candidate {
            attrs: r,
            resolvable: true,
            local: false,
            ebgp,
            router_id: v4(rid),
            peer_address: ip("10.1.0.2"),
            igp_cost: 0,
        }
    }
    let opts = DecisionOptions::default();
    let r1 = route(base.clone());
    let mut lp = base.clone();
    lp.local_pref = Some(101);
    let r2 = route(lp);
    let (o, step) = compare(
        &cand(&r2, "9.9.9.9", false),
        &cand(&r1, "1.1.1.1", true),
        &opts,
    );
    assert_eq!(
        (o, step),
        (std::cmp::Ordering::Less, DecisionStep::LocalPref)
    );
    let (o, step) = compare(
        &cand(&r1, "1.1.1.1", false),
        &cand(&r1, "1.1.1.1", true),
        &opts,
    );
    assert_eq!(
        (o, step),
        (std::cmp::Ordering::Greater, DecisionStep::EbgpOverIbgp)
    );
    let (o, step) = compare(
        &cand(&r1, "1.1.1.1", true),
        &cand(&r1, "1.1.1.1", true),
        &opts,
    );
    assert_eq!((o, step), (std::cmp::Ordering::Equal, DecisionStep::Equal));
}

#[test]
fn locally_originated_route_beats_learned_ones() {
    let mut rib = rib();
    let a = peer(&mut rib, "10.1.0.2", 65001);
    let mut better = attrs(&[65001], "10.1.0.2");
    better.local_pref = Some(1000);
    rib.update(a, &announce(better, &[PREFIX])).unwrap();
    let out = rib.originate(net(PREFIX), None);
    assert_eq!(rib.best(&net(PREFIX)).unwrap().peer, PeerId::LOCAL);
    assert_eq!(out.best_changes.len(), 1);
    assert_eq!(out.best_changes[0].route, FibRoute::Local);
    // Withdrawing the local route falls back to the learned one.
    let out = rib.withdraw_local(net(PREFIX));
    assert_eq!(rib.best(&net(PREFIX)).unwrap().peer, a);
    assert_eq!(
        out.best_changes[0].route,
        FibRoute::Via(vec![FibNextHop {
            next_hop: ip("10.1.0.2"),
            peer: a
        }])
    );
}

#[test]
fn ecmp_set_holds_paths_equal_through_igp_cost() {
    let mut rib = rib_with(|c| c.max_paths = 2);
    let a = peer(&mut rib, "10.1.0.2", 65001);
    let b = peer(&mut rib, "10.1.0.3", 65001);
    let c = peer(&mut rib, "10.1.0.4", 65001);
    let d = peer(&mut rib, "10.1.0.5", 65001);
    rib.update(a, &announce(attrs(&[65001, 9], "10.1.0.2"), &[PREFIX]))
        .unwrap();
    let out = rib
        .update(b, &announce(attrs(&[65001, 8], "10.1.0.3"), &[PREFIX]))
        .unwrap();
    let both = FibRoute::Via(vec![
        FibNextHop {
            next_hop: ip("10.1.0.2"),
            peer: a,
        },
        FibNextHop {
            next_hop: ip("10.1.0.3"),
            peer: b,
        },
    ]);
    assert_eq!(out.best_changes.len(), 1);
    assert_eq!(out.best_changes[0].route, both);
    // A path with a longer AS path does not join the set; nor does a different MED.
    let out = rib
        .update(c, &announce(attrs(&[65001, 8, 7], "10.1.0.4"), &[PREFIX]))
        .unwrap();
    assert!(out.best_changes.is_empty());
    let mut med = attrs(&[65001, 6], "10.1.0.5");
    med.med = Some(5);
    let out = rib.update(d, &announce(med, &[PREFIX])).unwrap();
    assert!(out.best_changes.is_empty());
    assert_eq!(rib.fib_route(&net(PREFIX)), both);
    // max_paths caps the set: a third equal path does not join.
    let e = peer(&mut rib, "10.1.0.6", 65001);
    rib.update(e, &announce(attrs(&[65001, 5], "10.1.0.6"), &[PREFIX]))
        .unwrap();
    let FibRoute::Via(hops) = rib.fib_route(&net(PREFIX)) else {
        panic!("expected next hops")
    };
    assert_eq!(hops.len(), 2);
    // Withdrawing one member shrinks the set and is reported.
    let out = rib.update(a, &withdraw(&[PREFIX])).unwrap();
    assert_eq!(out.best_changes.len(), 1);
    assert!(
        !matches!(&out.best_changes[0].route, FibRoute::Via(h) if h.iter().any(|h| h.peer == a))
    );
}

#[test]
fn ebgp_and_ibgp_paths_do_not_form_an_ecmp_set() {
    let mut rib = rib();
    let a = peer(&mut rib, "10.1.0.2", 65001);
    let b = add(&mut rib, "10.1.0.3", LOCAL_AS, |_| {});
    up(&mut rib, b, "10.1.0.3");
    rib.update(a, &announce(attrs(&[65001], "10.1.0.2"), &[PREFIX]))
        .unwrap();
    rib.update(b, &announce(attrs(&[65001], "10.9.9.9"), &[PREFIX]))
        .unwrap();
    assert_eq!(
        rib.fib_route(&net(PREFIX)),
        FibRoute::Via(vec![FibNextHop {
            next_hop: ip("10.1.0.2"),
            peer: a
        }])
    );
}

#[test]
fn attribute_sets_are_interned_and_shared() {
    let mut rib = rib();
    let a = peer(&mut rib, "10.1.0.2", 65001);
    let b = peer(&mut rib, "10.1.0.3", 65002);
    rib.update(
        a,
        &announce(
            attrs(&[65001, 7], "10.1.0.2"),
            &["10.20.0.0/24", "10.20.1.0/24"],
        ),
    )
    .unwrap();
    // The same attributes in a separate UPDATE intern to the same Arc.
    rib.update(
        a,
        &announce(attrs(&[65001, 7], "10.1.0.2"), &["10.20.2.0/24"]),
    )
    .unwrap();
    let p0 = Arc::clone(&rib.best(&net("10.20.0.0/24")).unwrap().attrs);
    let p2 = Arc::clone(&rib.best(&net("10.20.2.0/24")).unwrap().attrs);
    assert!(Arc::ptr_eq(&p0, &p2));
    // Export towards b also yields one shared set for all three prefixes.
    let _ = b;
    let sets_before = rib.attribute_sets();
    rib.update(
        a,
        &announce(attrs(&[65001, 7], "10.1.0.2"), &["10.20.3.0/24"]),
    )
    .unwrap();
    assert_eq!(rib.attribute_sets(), sets_before);
    // Unused sets go away when the peer's routes do.
    drop((p0, p2));
    rib.peer_down(a).unwrap();
    assert_eq!(rib.attribute_sets(), 0);
}

#[test]
fn non_transitive_med_comparison_never_panics() {
    // Three paths where MED comparison is intransitive (classic MED oscillation shape):
    // the linear scan must still settle on one best path.
    let mut rib = rib();
    let a = peer(&mut rib, "10.1.0.2", 65001);
    let b = peer(&mut rib, "10.1.0.3", 65001);
    let c = peer(&mut rib, "10.1.0.4", 65002);
    let mut pa = attrs(&[65001], "10.1.0.2");
    pa.med = Some(10);
    let mut pb = attrs(&[65001], "10.1.0.3");
    pb.med = Some(5);
    let mut pc = attrs(&[65002], "10.1.0.4");
    pc.med = Some(0);
    for (p, at) in [(a, pa), (b, pb), (c, pc)] {
        rib.update(p, &announce(at, &[PREFIX])).unwrap();
    }
    assert!(rib.best(&net(PREFIX)).is_some());
    assert_eq!(rib.paths(&net(PREFIX)).len(), 3);
}

#[test]
fn changing_igp_costs_reevaluates_and_reports() {
    let (mut rib, a, b) = two_ibgp("1.1.1.1", "1.1.1.2")();
    let e = peer(&mut rib, "10.1.0.9", 65009);
    rib.update(a, &announce(attrs(&[64600], "10.9.0.1"), &[PREFIX]))
        .unwrap();
    rib.update(b, &announce(attrs(&[64600], "10.9.0.2"), &[PREFIX]))
        .unwrap();
    assert_eq!(
        rib.best(&net(PREFIX)).unwrap().peer,
        a,
        "router id decides at equal cost"
    );
    let out = rib.set_igp_cost(Box::new(|nh| {
        Some(if nh == ip("10.9.0.1") { 50 } else { 10 })
    }));
    assert_eq!(rib.best(&net(PREFIX)).unwrap().peer, b);
    assert_eq!(
        out.best_changes,
        vec![bgp::rib::BestPathChange {
            prefix: net(PREFIX),
            route: FibRoute::Via(vec![FibNextHop {
                next_hop: ip("10.9.0.2"),
                peer: b
            }])
        }]
    );
    // The eBGP peer sees the same next-hop-self route either way: nothing to send.
    assert!(out.updates.iter().all(|u| u.peer != e));
    // Unchanged costs: nothing happens.
    assert!(rib.reevaluate().is_empty());
}

#[test]
fn paths_with_unresolvable_next_hops_are_not_used() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (mut rib, a, b) = two_ibgp("1.1.1.1", "1.1.1.2")();
    let e = peer(&mut rib, "10.1.0.9", 65009);
    let resolves = std::sync::Arc::new(AtomicBool::new(false));
    let r = std::sync::Arc::clone(&resolves);
    // 10.9.0.1 (a's next hop) resolves only when `resolves` is set.
    let _ = rib.set_igp_cost(Box::new(move |nh| {
        (nh != ip("10.9.0.1") || r.load(Ordering::SeqCst)).then_some(10)
    }));
    // Only a's path, unresolvable: nothing in the FIB, nothing exported.
    let out = rib
        .update(a, &announce(attrs(&[64600], "10.9.0.1"), &[PREFIX]))
        .unwrap();
    assert!(out.best_changes.is_empty() && out.updates.is_empty());
    assert_eq!(rib.fib_route(&net(PREFIX)), FibRoute::Unreachable);
    assert_eq!(rib.paths(&net(PREFIX)).len(), 1, "kept in the Adj-RIB-In");
    // b's resolvable path wins although a has the lower router id.
    rib.update(b, &announce(attrs(&[64600], "10.9.0.2"), &[PREFIX]))
        .unwrap();
    assert_eq!(rib.best(&net(PREFIX)).unwrap().peer, b);
    // The IGP learns a's next hop: a wins on router id after re-evaluation, and the FIB
    // follows; the eBGP peer's next-hop-self route does not change.
    resolves.store(true, Ordering::SeqCst);
    let out = rib.reevaluate();
    assert_eq!(rib.best(&net(PREFIX)).unwrap().peer, a);
    assert_eq!(out.best_changes.len(), 1);
    assert!(out.updates.iter().all(|u| u.peer != e));
    // And unresolvable again with b gone: the prefix leaves the FIB and is withdrawn.
    rib.update(b, &withdraw(&[PREFIX])).unwrap();
    resolves.store(false, Ordering::SeqCst);
    let out = rib.reevaluate();
    assert_eq!(out.best_changes[0].route, FibRoute::Unreachable);
    assert_eq!(out.withdrawn_from(e).count(), 1);
}

#[test]
fn ecmp_set_shrinks_when_igp_costs_diverge() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let mut rib = rib();
    let a = add(&mut rib, "10.1.0.2", LOCAL_AS, |_| {});
    up(&mut rib, a, "1.1.1.1");
    let b = add(&mut rib, "10.1.0.3", LOCAL_AS, |_| {});
    up(&mut rib, b, "1.1.1.2");
    let cost_b = std::sync::Arc::new(AtomicU32::new(10));
    let c = std::sync::Arc::clone(&cost_b);
    let _ = rib.set_igp_cost(Box::new(move |nh| {
        Some(if nh == ip("10.9.0.2") {
            c.load(Ordering::SeqCst)
        } else {
            10
        })
    }));
    rib.update(a, &announce(attrs(&[64600], "10.9.0.1"), &[PREFIX]))
        .unwrap();
    rib.update(b, &announce(attrs(&[64600], "10.9.0.2"), &[PREFIX]))
        .unwrap();
    assert!(matches!(rib.fib_route(&net(PREFIX)), FibRoute::Via(h) if h.len() == 2));
    cost_b.store(20, Ordering::SeqCst);
    let out = rib.reevaluate();
    assert_eq!(
        out.best_changes,
        vec![bgp::rib::BestPathChange {
            prefix: net(PREFIX),
            route: FibRoute::Via(vec![FibNextHop {
                next_hop: ip("10.9.0.1"),
                peer: a
            }])
        }]
    );
}

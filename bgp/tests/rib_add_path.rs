//! ADD-PATH in the RIB (RFC 7911): paths received under path identifiers are kept apart
//! and installed together (ECMP); a peer we send identifiers to gets every path of a
//! prefix, others the best one only.
#![allow(clippy::unwrap_used)]

mod rib_common;

use bgp::packet::{DecodeContext, Family, Message, PathIds, Update};
use bgp::rib::{FibRoute, PeerId, PeerSession, Rib, RibOutputs};
use rib_common::*;

/// Brings `peer` up; `add_path_send` lists the families we send it every path of.
fn up_with(rib: &mut Rib, peer: PeerId, router_id: &str, add_path_send: &[Family]) -> RibOutputs {
    rib.peer_up(
        peer,
        PeerSession {
            router_id: v4(router_id),
            local_ipv4: Some(v4("10.255.0.1")),
            local_ipv6: None,
            families: vec![Family::Ipv4Unicast],
            shared_subnets: Vec::new(),
            add_path_send: add_path_send.to_vec(),
        },
    )
    .unwrap()
}

/// An iBGP route reflector client at `address`.
fn client(rib: &mut Rib, address: &str, add_path: bool) -> PeerId {
    let p = add(rib, address, LOCAL_AS, |c| c.route_reflector_client = true);
    let send: &[Family] = if add_path {
        &[Family::Ipv4Unicast]
    } else {
        &[]
    };
    up_with(rib, p, address, send);
    p
}

/// (prefix, path id, next hop) of every announcement to `peer`, sorted.
fn sent_paths(out: &RibOutputs, peer: PeerId) -> Vec<(String, u32, String)> {
    let mut v: Vec<_> = out
        .updates
        .iter()
        .filter(|u| u.peer == peer)
        .flat_map(|u| {
            assert_eq!(u.path_ids.len(), u.prefixes.len(), "one id per prefix");
            u.prefixes
                .iter()
                .zip(&u.path_ids)
                .map(|(p, id)| (p.to_string(), *id, u.attrs.next_hop.to_string()))
        })
        .collect();
    v.sort();
    v
}

/// (prefix, path id) of every withdrawal from `peer`, sorted.
fn withdrawn_paths(out: &RibOutputs, peer: PeerId) -> Vec<(String, u32)> {
    let mut v: Vec<_> = out
        .withdraws
        .iter()
        .filter(|w| w.peer == peer)
        .flat_map(|w| {
            assert_eq!(w.path_ids.len(), w.prefixes.len(), "one id per prefix");
            w.prefixes
                .iter()
                .zip(&w.path_ids)
                .map(|(p, id)| (p.to_string(), *id))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_reflector_sends_every_path_to_an_add_path_client_and_the_best_to_others() {
    let mut rib = rib();
    let a = client(&mut rib, "10.0.0.2", false);
    let b = client(&mut rib, "10.0.0.3", false);
    let all = client(&mut rib, "10.0.0.4", true);
    let best = client(&mut rib, "10.0.0.5", false);

    let out_a = rib
        .update(a, &announce(attrs(&[], "10.0.0.2"), &["192.0.2.0/24"]))
        .unwrap();
    let out_b = rib
        .update(b, &announce(attrs(&[], "10.0.0.3"), &["192.0.2.0/24"]))
        .unwrap();
    // The ADD-PATH client has both paths, each under its own identifier ...
    let mut to_all = sent_paths(&out_a, all);
    to_all.extend(sent_paths(&out_b, all));
    assert_eq!(to_all.len(), 2, "{to_all:?}");
    assert_ne!(to_all[0].1, to_all[1].1, "distinct path identifiers");
    let mut hops: Vec<_> = to_all.iter().map(|(_, _, nh)| nh.clone()).collect();
    hops.sort();
    assert_eq!(hops, ["10.0.0.2", "10.0.0.3"]);
    // ... the other client only the best (10.0.0.2: lower ORIGINATOR_ID), without ids.
    assert_eq!(sent(&out_a, best).len(), 1);
    assert!(sent(&out_b, best).is_empty());
    assert!(out_a
        .updates
        .iter()
        .filter(|u| u.peer == best)
        .all(|u| u.path_ids.is_empty()));
    assert_eq!(rib.stats(all).unwrap().advertised, 2);
    assert_eq!(rib.stats(best).unwrap().advertised, 1);

    // The first announcer (no ADD-PATH) is sent nothing for b's path: the best is still
    // its own, which is not sent back to where it came from.
    assert_eq!(sent(&out_b, a).len(), 0);

    // A withdrawal takes exactly that path from the ADD-PATH client; the best moves at the
    // other client.
    let id_a = to_all
        .iter()
        .find(|(_, _, nh)| nh == "10.0.0.2")
        .map(|t| t.1)
        .unwrap();
    let out = rib.update(a, &withdraw(&["192.0.2.0/24"])).unwrap();
    assert_eq!(
        withdrawn_paths(&out, all),
        vec![("192.0.2.0/24".to_string(), id_a)]
    );
    assert!(sent_paths(&out, all).is_empty());
    let moved = sent(&out, best);
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].1.next_hop, ip("10.0.0.3"));
    assert_eq!(rib.stats(all).unwrap().advertised, 1);

    // A client coming up later gets the whole table, every path.
    rib.update(a, &announce(attrs(&[], "10.0.0.2"), &["192.0.2.0/24"]))
        .unwrap();
    let late = add(&mut rib, "10.0.0.6", LOCAL_AS, |c| {
        c.route_reflector_client = true
    });
    let dump = up_with(&mut rib, late, "10.0.0.6", &[Family::Ipv4Unicast]);
    assert_eq!(sent_paths(&dump, late).len(), 2);

    // What goes on the wire carries the identifiers (RFC 7911 §3).
    let send = DecodeContext {
        four_octet_as: true,
        add_path_send_ipv4: true,
        ..DecodeContext::default()
    };
    let receive = DecodeContext {
        four_octet_as: true,
        add_path_ipv4: true,
        ..DecodeContext::default()
    };
    let mut ids = Vec::new();
    for u in dump.updates.iter().filter(|u| u.peer == late) {
        let mut msgs = Vec::new();
        u.encode(&send, &mut msgs).unwrap();
        for m in msgs {
            let Message::Update(decoded) = Message::decode(&m, &receive).unwrap() else {
                panic!("not an UPDATE");
            };
            ids.extend(decoded.path_ids.nlri);
        }
    }
    ids.sort();
    let mut expected: Vec<u32> = sent_paths(&dump, late).iter().map(|t| t.1).collect();
    expected.sort();
    assert_eq!(ids, expected);
}

/// An UPDATE from a reflector that sends identifiers.
fn with_ids(mut update: Update, ids: &[u32]) -> Update {
    update.path_ids = PathIds {
        nlri: ids.to_vec(),
        ..PathIds::default()
    };
    update
}

fn reflected(next_hop: &str, originator: &str) -> bgp::packet::PathAttributes {
    let mut a = attrs(&[], next_hop);
    a.originator_id = Some(v4(originator));
    a.cluster_list = vec![v4("10.0.0.9")];
    a
}

#[test]
fn paths_received_under_identifiers_are_kept_apart_and_installed_together() {
    let mut rib = rib();
    let rr = peer(&mut rib, "10.0.0.9", LOCAL_AS);
    // A client of ours that keeps next hops (iBGP), so it sees every move of the best path.
    let downstream = client(&mut rib, "10.0.0.7", false);
    let p = "192.0.2.0/24";

    rib.update(
        rr,
        &with_ids(announce(reflected("10.0.0.2", "10.0.0.2"), &[p]), &[1]),
    )
    .unwrap();
    let out = rib
        .update(
            rr,
            &with_ids(announce(reflected("10.0.0.3", "10.0.0.3"), &[p]), &[2]),
        )
        .unwrap();
    assert_eq!(rib.paths(&net(p)).len(), 2, "both paths of one peer kept");
    let hops = match &out.best_changes[..] {
        [change] => match &change.route {
            FibRoute::Via(hops) => hops.iter().map(|h| h.next_hop).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    assert_eq!(hops, vec![ip("10.0.0.2"), ip("10.0.0.3")], "ECMP over both");
    assert_eq!(rib.stats(rr).unwrap().accepted, 2);

    // Re-announcing identifier 2 with a new next hop replaces that path only.
    let out = rib
        .update(
            rr,
            &with_ids(announce(reflected("10.0.0.4", "10.0.0.4"), &[p]), &[2]),
        )
        .unwrap();
    assert_eq!(rib.paths(&net(p)).len(), 2);
    assert!(matches!(&out.best_changes[0].route,
        FibRoute::Via(h) if h.iter().map(|h| h.next_hop).collect::<Vec<_>>() == vec![ip("10.0.0.2"), ip("10.0.0.4")]));

    // One UPDATE withdrawing identifier 1 and announcing identifier 3: the downstream peer
    // (no ADD-PATH) ends with one announcement of the prefix and no withdrawal, although
    // the best path moved twice within the message.
    let mut both = with_ids(announce(reflected("10.0.0.3", "10.0.0.3"), &[p]), &[3]);
    both.withdrawn = vec![p.parse().unwrap()];
    both.path_ids.withdrawn = vec![1];
    let out = rib.update(rr, &both).unwrap();
    assert!(withdrawn(&out, downstream).is_empty(), "{out:?}");
    let to_downstream = sent(&out, downstream);
    assert_eq!(to_downstream.len(), 1, "{to_downstream:?}");
    assert_eq!(
        to_downstream[0].1.next_hop,
        ip("10.0.0.3"),
        "the best of .4 and .3"
    );
    assert_eq!(rib.paths(&net(p)).len(), 2);
    assert!(rib.paths(&net(p)).iter().all(|x| x.path_id != 1));

    // Withdrawing an identifier the peer never sent changes nothing.
    let mut stray = withdraw(&[p]);
    stray.path_ids.withdrawn = vec![77];
    assert!(rib.update(rr, &stray).unwrap().best_changes.is_empty());
    assert_eq!(rib.paths(&net(p)).len(), 2);

    // The session goes: every path of the peer goes with it.
    let out = rib.peer_down(rr).unwrap();
    assert_eq!(
        out.best_changes.last().unwrap().route,
        FibRoute::Unreachable
    );
    assert!(rib.paths(&net(p)).is_empty());
    assert_eq!(withdrawn(&out, downstream), vec![net(p)]);
}

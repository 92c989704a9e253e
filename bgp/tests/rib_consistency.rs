//! Randomised consistency check of the RIB's incremental outputs.
//!
//! The RIB keeps no Adj-RIB-Out: it sends each peer the difference between the exports of
//! the old and the new best path. If that bookkeeping is right, then replaying every output
//! a peer was sent yields exactly what a full re-send (ROUTE-REFRESH) produces, and
//! replaying every best-path change yields exactly the RIB's current FIB view. This test
//! drives random announcements, withdrawals, session flaps (hard and graceful, with
//! End-of-RIB and stale-timer expiry), local originations, export policy changes and IGP
//! changes (next hops becoming unresolvable or dearer, then re-evaluation) (deterministic seeds, bounded op count) and checks both after every step.
#![allow(clippy::unwrap_used)]

mod rib_common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use bgp::packet::{Community, Family, PathAttributes};
use bgp::rib::{
    ExportPolicy, FibRoute, FilterAction, FilterRule, MatchOperator, PeerId, Rib, RibOutputs,
    RouteAttrs, RouteFilter,
};
use ipnet::IpNet;
use rib_common::*;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
struct Model {
    /// What each peer holds according to the outputs it was sent.
    adj_out: HashMap<PeerId, HashMap<IpNet, RouteAttrs>>,
    fib: HashMap<IpNet, FibRoute>,
}

impl Model {
    fn apply(&mut self, out: &RibOutputs) {
        for w in &out.withdraws {
            let t = self.adj_out.entry(w.peer).or_default();
            for p in &w.prefixes {
                assert!(
                    t.remove(p).is_some(),
                    "withdrawal of {p} never announced to {}",
                    w.peer
                );
            }
        }
        for u in &out.updates {
            let t = self.adj_out.entry(u.peer).or_default();
            for p in &u.prefixes {
                t.insert(*p, (*u.attrs).clone());
            }
        }
        for c in &out.best_changes {
            if c.route == FibRoute::Unreachable {
                self.fib.remove(&c.prefix);
            } else {
                self.fib.insert(c.prefix, c.route.clone());
            }
        }
    }

    fn check(&self, rib: &mut Rib, peers: &[(PeerId, bool)], prefixes: &[IpNet], step: usize) {
        for p in prefixes {
            let want = rib.fib_route(p);
            let got = self.fib.get(p).cloned().unwrap_or(FibRoute::Unreachable);
            assert_eq!(got, want, "step {step}: FIB view of {p}");
        }
        for &(peer, is_up) in peers {
            let held = self.adj_out.get(&peer).cloned().unwrap_or_default();
            if !is_up {
                continue;
            }
            let mut full: HashMap<IpNet, RouteAttrs> = HashMap::new();
            for family in [Family::Ipv4Unicast, Family::Ipv6Unicast] {
                let out = rib.refresh(peer, family).unwrap();
                for (p, a) in out.announced_to(peer) {
                    full.insert(*p, (**a).clone());
                }
            }
            assert_eq!(held, full, "step {step}: Adj-RIB-Out of {peer}");
            assert_eq!(
                rib.stats(peer).unwrap().advertised,
                held.len() as u64,
                "step {step}"
            );
        }
    }
}

fn random_attrs(rng: &mut Rng, peer_as: u32, next_hop: &str) -> PathAttributes {
    let mut path = vec![peer_as];
    for _ in 0..rng.below(3) {
        path.push(65100 + rng.below(3) as u32);
    }
    if peer_as == LOCAL_AS {
        path.remove(0);
    }
    let mut a = attrs(&path, next_hop);
    if rng.below(3) == 0 {
        a.med = Some(rng.below(3) as u32);
    }
    if rng.below(4) == 0 {
        a.local_pref = Some(100 + rng.below(2) as u32 * 50);
    }
    if rng.below(10) == 0 {
        a.communities = vec![Community::NO_EXPORT];
    }
    a
}

fn run(seed: u64) {
    let mut rng = Rng(seed);
    let mut rib = rib_with(|c| c.max_paths = 4);
    // IGP view of the next hops 10.9.N.1: bit N of the low byte makes it unresolvable,
    // bit N of the second byte doubles its cost. Flipped at random, then re-evaluated.
    let igp = std::sync::Arc::new(AtomicU64::new(0));
    let view = std::sync::Arc::clone(&igp);
    let _ = rib.set_igp_cost(Box::new(move |nh| {
        let bits = view.load(Ordering::SeqCst);
        match nh {
            std::net::IpAddr::V4(v4) if v4.octets()[..2] == [10, 9] => {
                let n = u64::from(v4.octets()[2] % 8);
                if bits & (1 << n) != 0 {
                    None
                } else {
                    Some(10 + 10 * ((bits >> (8 + n)) & 1) as u32)
                }
            }
            _ => Some(10),
        }
    }));
    let specs = [
        ("10.1.0.2", 65001u32, false),
        ("10.1.0.3", 65002, false),
        ("10.1.0.4", LOCAL_AS, true),
        ("10.1.0.5", LOCAL_AS, false),
    ];
    let mut peers: Vec<(PeerId, bool)> = Vec::new();
    let mut model = Model::default();
    for (addr, asn, client) in specs {
        let p = add(&mut rib, addr, asn, |c| c.route_reflector_client = client);
        model.apply(&up(&mut rib, p, addr));
        peers.push((p, true));
    }
    let prefixes: Vec<IpNet> = (0..24)
        .map(|i| net(&format!("10.{}.{}.0/24", 100 + i % 3, i)))
        .chain((0..6).map(|i| net(&format!("fd00:{i}::/64"))))
        .collect();
    for step in 0..1500 {
        let which = rng.below(peers.len() as u64) as usize;
        let (peer, is_up) = peers[which];
        let (addr, asn, _) = specs[which];
        let out = match rng.below(20) {
            0 => {
                if is_up {
                    peers[which].1 = false;
                    match rng.below(3) {
                        0 => rib.peer_down(peer).unwrap(),
                        1 => rib
                            .peer_down_graceful(peer, &[Family::Ipv4Unicast])
                            .unwrap(),
                        _ => rib
                            .peer_down_graceful(peer, &[Family::Ipv4Unicast, Family::Ipv6Unicast])
                            .unwrap(),
                    }
                } else {
                    peers[which].1 = true;
                    model.adj_out.remove(&peer);
                    up(&mut rib, peer, addr)
                }
            }
            1 | 2 => {
                let p = prefixes[rng.below(prefixes.len() as u64) as usize];
                if rng.below(2) == 0 {
                    rib.originate(p, None)
                } else {
                    rib.withdraw_local(p)
                }
            }
            3 => {
                let policy = if rng.below(2) == 0 {
                    ExportPolicy::default()
                } else {
                    ExportPolicy {
                        filter: RouteFilter {
                            v4: vec![FilterRule::new(
                                net("10.101.0.0/16"),
                                MatchOperator::In,
                                FilterAction::Reject,
                            )],
                            v6: Vec::new(),
                        },
                        communities: vec![Community::new(64512, 7)],
                        ..ExportPolicy::default()
                    }
                };
                rib.set_export_policy(peer, policy).unwrap()
            }
            4 => {
                if is_up {
                    let family = if rng.below(2) == 0 {
                        Family::Ipv4Unicast
                    } else {
                        Family::Ipv6Unicast
                    };
                    rib.update(peer, &bgp::packet::Update::end_of_rib(family))
                        .unwrap()
                } else {
                    rib.flush_stale(peer).unwrap()
                }
            }
            5 => {
                igp.fetch_xor(1 << rng.below(16), Ordering::SeqCst);
                rib.reevaluate()
            }
            _ if !is_up => continue,
            n => {
                let count = 1 + rng.below(5) as usize;
                let chosen: Vec<IpNet> = (0..count)
                    .map(|_| prefixes[rng.below(prefixes.len() as u64) as usize])
                    .collect();
                let v4: Vec<String> = chosen
                    .iter()
                    .filter(|p| matches!(p, IpNet::V4(_)))
                    .map(|p| p.to_string())
                    .collect();
                let v4: Vec<&str> = v4.iter().map(String::as_str).collect();
                let v6: Vec<String> = chosen
                    .iter()
                    .filter(|p| matches!(p, IpNet::V6(_)))
                    .map(|p| p.to_string())
                    .collect();
                let v6: Vec<&str> = v6.iter().map(String::as_str).collect();
                if n < 9 {
                    let mut out = rib.update(peer, &withdraw(&v4)).unwrap();
                    let w6 = bgp::packet::Update {
                        mp_unreach: Some(bgp::packet::MpUnreach {
                            afi: bgp::packet::Afi::Ipv6,
                            safi: bgp::packet::Safi::Unicast,
                            withdrawn: v6.iter().map(|p| net(p)).collect(),
                        }),
                        ..Default::default()
                    };
                    model.apply(&out);
                    out = rib.update(peer, &w6).unwrap();
                    out
                } else {
                    // Next hops differ per peer (and sometimes per announcement) so that
                    // ECMP sets form.
                    let nh = if rng.below(2) == 0 {
                        addr.to_string()
                    } else {
                        format!("10.9.{which}.1")
                    };
                    let a = random_attrs(&mut rng, asn, &nh);
                    let out = rib.update(peer, &announce(a.clone(), &v4)).unwrap();
                    model.apply(&out);
                    let v6nh = format!("fd00:9::{}", which + 1);
                    rib.update(peer, &announce_v6(a, &v6nh, &v6)).unwrap()
                }
            }
        };
        model.apply(&out);
        model.check(&mut rib, &peers, &prefixes, step);
    }
}

#[test]
fn incremental_outputs_match_full_recomputation() {
    for seed in [1, 0x9e37_79b9, 42, 7_777_777] {
        run(seed);
    }
}

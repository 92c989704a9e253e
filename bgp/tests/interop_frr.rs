//! Interop with FRR (Debian's `frr`: bgpd alone, no zebra) in network namespaces: eBGP over
//! IPv4 and IPv6 with attributes intact both ways, withdrawals, and FRR restarting with
//! Graceful Restart (RFC 4724) while we keep its routes.

#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

mod support;

use std::time::{Duration, Instant};

use bgp::speaker::control::ControlRequest;
use lab::frr::{Frr, BGPD};
use lab::{require, wait_for};
use support::{ebgp_speaker_config, expect_ebgp_routes_from_peer, ip, pair, scratch, Speaker};

const T: Duration = Duration::from_secs(40);
const POLL: Duration = Duration::from_millis(200);

/// bgpd as AS 65003 at 10.0.0.3 / fd00::3, peering with us (AS 65001) over both families,
/// originating `networks` (IPv4 ones with MED 30 and communities); `extra` goes under
/// `router bgp`.
fn frr_config(networks: &[&str], extra: &str) -> String {
    let mut s = String::from(
        "frr defaults traditional\nhostname frr\n!\n\
         route-map TAG permit 10\n set metric 30\n set community 65003:300\n set large-community 65003:5:6\n!\n\
         router bgp 65003\n bgp router-id 10.0.0.3\n no bgp ebgp-requires-policy\n no bgp network import-check\n",
    );
    s += extra;
    for n in ["10.0.0.1", "fd00::1"] {
        s += &format!(
            " neighbor {n} remote-as 65001\n neighbor {n} timers 3 9\n neighbor {n} timers connect 1\n"
        );
    }
    s += " address-family ipv4 unicast\n  no neighbor fd00::1 activate\n";
    for n in networks.iter().filter(|n| !n.contains(':')) {
        s += &format!("  network {n} route-map TAG\n");
    }
    s += " exit-address-family\n address-family ipv6 unicast\n  neighbor fd00::1 activate\n";
    for n in networks.iter().filter(|n| n.contains(':')) {
        s += &format!("  network {n}\n");
    }
    s += " exit-address-family\n!\n";
    s
}

#[test]
fn ebgp_ipv4_and_ipv6_routes_flow_both_ways_with_frr() {
    require(&["ip", "vtysh", BGPD]);
    let dir = scratch("frr-ebgp");
    let (ours, theirs) = pair("fe", 3);
    let frr = Frr::start(
        &theirs,
        &dir.join("frr"),
        &frr_config(&["10.3.0.0/24", "fd03::/64"], ""),
    )
    .unwrap();
    let speaker =
        Speaker::start(&ours, &dir.join("speaker"), &ebgp_speaker_config(3, 65003)).unwrap();
    frr.wait_established("10.0.0.1", T)
        .unwrap_or_else(|e| panic!("{e}\n{}", frr.log_tail()));
    frr.wait_established("fd00::1", T).unwrap();

    // Ours -> FRR, attributes intact.
    let p = wait_for("10.1.0.0/24 in FRR", T, POLL, || {
        frr.best_path("ipv4", "10.1.0.0/24").ok().flatten()
    })
    .unwrap();
    assert_eq!(p["aspath"]["string"], "65001", "{p}");
    assert_eq!(p["metric"], 10, "{p}");
    assert_eq!(p["community"]["string"], "65001:100", "{p}");
    assert_eq!(p["largeCommunity"]["string"], "65001:1:2", "{p}");
    assert_eq!(p["nexthops"][0]["ip"], "10.0.0.1", "{p}");
    let p6 = wait_for("fd01::/64 in FRR", T, POLL, || {
        frr.best_path("ipv6", "fd01::/64").ok().flatten()
    })
    .unwrap();
    assert_eq!(p6["aspath"]["string"], "65001", "{p6}");
    assert_eq!(p6["nexthops"][0]["ip"], "fd00::1", "{p6}");

    // FRR -> ours.
    expect_ebgp_routes_from_peer(&speaker, 3, 65003, T);

    // Withdrawals both ways.
    frr.configure(&[
        "router bgp 65003",
        "address-family ipv4 unicast",
        "no network 10.3.0.0/24 route-map TAG",
    ])
    .unwrap();
    speaker.wait_route("10.3.0.0/24", T, None).unwrap();
    speaker
        .request(&ControlRequest::Withdraw {
            prefix: "fd01::/64".parse().unwrap(),
        })
        .unwrap();
    wait_for("fd01::/64 gone from FRR", T, POLL, || {
        frr.best_path("ipv6", "fd01::/64")
            .ok()
            .filter(Option::is_none)
    })
    .unwrap();
    assert!(frr.best_path("ipv4", "10.1.0.0/24").unwrap().is_some());
}

#[test]
fn frr_restarting_gracefully_keeps_its_routes_in_our_rib() {
    require(&["ip", "vtysh", BGPD]);
    let dir = scratch("frr-gr");
    let (ours, theirs) = pair("fg", 3);
    // FRR restarts with Graceful Restart, forwarding preserved (F bit), Restart Time 30 s.
    let gr = " bgp graceful-restart\n bgp graceful-restart preserve-fw-state\n \
              bgp graceful-restart restart-time 30\n";
    let mut frr = Frr::start(
        &theirs,
        &dir.join("frr"),
        &frr_config(&["10.3.0.0/24", "10.3.1.0/24"], gr),
    )
    .unwrap();
    let speaker =
        Speaker::start(&ours, &dir.join("speaker"), &ebgp_speaker_config(3, 65003)).unwrap();
    speaker.wait_established(ip("10.0.0.3"), T).unwrap();
    for p in ["10.3.0.0/24", "10.3.1.0/24"] {
        speaker
            .wait_route(p, T, Some(&|r| r.peer.is_some()))
            .unwrap();
    }
    let caps = speaker.peer(ip("10.0.0.3")).unwrap().capabilities;
    assert!(
        caps.iter().any(|c| c == "graceful-restart(30s)"),
        "{caps:?}"
    );

    // bgpd dies: no NOTIFICATION. We keep its routes while it restarts.
    frr.kill();
    wait_for("the session to drop", T, POLL, || {
        (speaker.peer(ip("10.0.0.3")).ok()?.state != "Established").then_some(())
    })
    .unwrap();
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let learned = |p: &str| {
        speaker
            .routes()
            .unwrap()
            .iter()
            .any(|r| r.prefix.to_string() == p && r.peer.is_some())
    };
    assert!(learned("10.3.0.0/24") && learned("10.3.1.0/24"));

    // It comes back without 10.3.1.0/24: after its End-of-RIB only that one goes.
    frr.restart(&frr_config(&["10.3.0.0/24"], gr)).unwrap();
    speaker.wait_established(ip("10.0.0.3"), T).unwrap();
    speaker.wait_route("10.3.1.0/24", T, None).unwrap();
    assert!(
        down.elapsed() < Duration::from_secs(30),
        "the stale route went by the Restart Time, not by End-of-RIB"
    );
    assert!(learned("10.3.0.0/24"), "{:?}", speaker.routes());
}

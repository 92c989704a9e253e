//! The netlink FIB against a real kernel, inside network namespaces created by the test.
//!
//! Topology: namespace `ns` (the node we program) with `eth0` = 192.168.50.1/24,
//! fd00:50::1/64, veth'd to a peer namespace; a VXLAN device `vxlan.calico` over eth0 for the
//! onlink tunnel route shape (this kernel has no ipip, so no tunl0).

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fib::{Device, FibConfig, NetlinkFib, NextHop, Route, RouteFailure, RouteKey, RouteTable};
use ipnet::IpNet;
use lab::Netns;
use nix::errno::Errno;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}
fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Node {
    ns: Netns,
    _peer: Netns,
}

fn node(tag: &str) -> Node {
    lab::require(&["ip"]);
    let ns = Netns::new(tag).unwrap();
    let peer = Netns::new(&format!("{tag}p")).unwrap();
    lab::veth(&ns, "eth0", &peer, "eth1").unwrap();
    ns.ip(&["addr", "add", "192.168.50.1/24", "dev", "eth0"])
        .unwrap();
    ns.ip(&["-6", "addr", "add", "fd00:50::1/64", "dev", "eth0", "nodad"])
        .unwrap();
    peer.ip(&["addr", "add", "192.168.50.2/24", "dev", "eth1"])
        .unwrap();
    ns.ip(&[
        "link",
        "add",
        "vxlan.calico",
        "type",
        "vxlan",
        "id",
        "4096",
        "dstport",
        "4789",
        "dev",
        "eth0",
        "nolearning",
    ])
    .unwrap();
    ns.ip(&["link", "set", "vxlan.calico", "up"]).unwrap();
    Node { ns, _peer: peer }
}

fn fib_in(ns: &Netns) -> NetlinkFib {
    NetlinkFib::in_namespace(ns.path(), FibConfig::default()).unwrap()
}

/// `ip -o [-6] route show table all proto 80`, one route per line, without the `nhid <id>`
/// of routes installed over a nexthop object (`ip` prints the object's gateway and device
/// as for an inline next hop; these tests check forwarding, `nexthops.rs` the objects).
fn our_routes(ns: &Netns, v6: bool) -> Vec<String> {
    let args = vec!["-o", if v6 { "-6" } else { "-4" }];
    let mut args = args;
    args.extend(["route", "show", "table", "all", "proto", "80"]);
    ns.ip(&args).unwrap().lines().map(without_nhid).collect()
}

/// A route line with the `nhid <id>` words removed and whitespace normalised.
fn without_nhid(line: &str) -> String {
    let mut words = Vec::new();
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == "nhid" {
            it.next();
        } else {
            words.push(w);
        }
    }
    words.join(" ")
}

fn has_route(lines: &[String], prefix: &str, words: &[&str]) -> bool {
    lines
        .iter()
        .any(|l| l.starts_with(prefix) && words.iter().all(|w| l.contains(w)))
}

/// Every route shape the agent programs, IPv4 and IPv6.
fn shapes() -> Vec<Route> {
    vec![
        // The node's own block.
        Route::blackhole(net("10.65.1.0/26")),
        // A local workload.
        Route::via(net("10.65.1.5/32"), NextHop::dev("eth0")),
        // A remote block, same subnet.
        Route::via(
            net("10.65.2.0/26"),
            NextHop::via_dev(ip("192.168.50.2"), "eth0"),
        ),
        // A remote block, gateway only (the kernel picks the device).
        Route::via(net("10.65.6.0/26"), NextHop::via(ip("192.168.50.2"))),
        // A remote block over VXLAN: via the remote VTEP address, onlink, tunnel MTU.
        Route::via(
            net("10.65.3.0/26"),
            NextHop::onlink(ip("10.65.3.0"), "vxlan.calico"),
        )
        .with_mtu(1450),
        // ECMP.
        Route::unicast(
            net("10.65.4.0/26"),
            vec![
                NextHop::via_dev(ip("192.168.50.2"), "eth0"),
                NextHop::via_dev(ip("192.168.50.3"), "eth0"),
            ],
        ),
        // Other tables, one beyond the 8-bit rtm_table (carried in RTA_TABLE).
        Route::via(net("10.65.5.0/26"), NextHop::via(ip("192.168.50.2"))).with_table(100),
        Route::blackhole(net("10.65.8.0/26")).with_table(1000),
        // IPv6.
        Route::blackhole(net("fd00:65:1::/122")),
        Route::via(net("fd00:65:1::5/128"), NextHop::dev("eth0")),
        Route::via(
            net("fd00:65:2::/122"),
            NextHop::via_dev(ip("fd00:50::2"), "eth0"),
        ),
        Route::unicast(
            net("fd00:65:4::/122"),
            vec![
                NextHop::via_dev(ip("fd00:50::2"), "eth0"),
                NextHop::via_dev(ip("fd00:50::3"), "eth0"),
            ],
        ),
    ]
}

#[test]
fn every_route_shape_appears_in_ip_route() {
    let n = node("fibshape");
    let mut fib = fib_in(&n.ns);
    let report = fib.apply(shapes()).unwrap();
    assert!(report.is_clean(), "{:?}", report.failed);
    assert_eq!(report.added, shapes().len());

    let v4 = our_routes(&n.ns, false);
    let v6 = our_routes(&n.ns, true);
    println!("{}\n{}", v4.join("\n"), v6.join("\n"));
    assert!(has_route(&v4, "blackhole 10.65.1.0/26", &[]), "{v4:?}");
    assert!(
        has_route(&v4, "10.65.1.5 dev eth0", &["scope link"]),
        "{v4:?}"
    );
    assert!(
        has_route(&v4, "10.65.2.0/26 via 192.168.50.2 dev eth0", &[]),
        "{v4:?}"
    );
    assert!(
        has_route(&v4, "10.65.6.0/26 via 192.168.50.2 dev eth0", &[]),
        "{v4:?}"
    );
    assert!(
        has_route(
            &v4,
            "10.65.3.0/26 via 10.65.3.0 dev vxlan.calico",
            &["onlink", "mtu 1450"]
        ),
        "{v4:?}"
    );
    assert!(
        has_route(
            &v4,
            "10.65.4.0/26",
            &[
                "nexthop via 192.168.50.2 dev eth0",
                "nexthop via 192.168.50.3 dev eth0"
            ]
        ),
        "{v4:?}"
    );
    assert!(
        has_route(&v4, "10.65.5.0/26 via 192.168.50.2", &["table 100"]),
        "{v4:?}"
    );
    assert!(has_route(&v6, "blackhole fd00:65:1::/122", &[]), "{v6:?}");
    assert!(has_route(&v6, "fd00:65:1::5 dev eth0", &[]), "{v6:?}");
    assert!(
        has_route(&v6, "fd00:65:2::/122 via fd00:50::2 dev eth0", &[]),
        "{v6:?}"
    );
    assert!(
        has_route(
            &v6,
            "fd00:65:4::/122",
            &[
                "nexthop via fd00:50::2 dev eth0",
                "nexthop via fd00:50::3 dev eth0"
            ]
        ),
        "{v6:?}"
    );
    assert_eq!(v4.len() + v6.len(), shapes().len());

    // Reading back: every desired route is satisfied by what the kernel reports.
    let installed = fib.installed().unwrap();
    assert_eq!(installed.len(), shapes().len());
    // ... and a second apply is a no-op.
    let again = fib.apply(shapes()).unwrap();
    assert_eq!(again.unchanged, shapes().len(), "{again:?}");
    assert_eq!(again.writes(), 0);
}

#[test]
fn reconcile_removes_our_stale_routes_and_leaves_others_alone() {
    let n = node("fibstale");
    // Someone else's route, and a stale one of ours (e.g. left by a previous run).
    n.ns.ip(&[
        "route",
        "add",
        "10.70.0.0/24",
        "via",
        "192.168.50.2",
        "proto",
        "static",
    ])
    .unwrap();
    n.ns.ip(&[
        "route",
        "add",
        "10.71.0.0/24",
        "via",
        "192.168.50.2",
        "proto",
        "80",
    ])
    .unwrap();
    n.ns.ip(&[
        "-6",
        "route",
        "add",
        "fd00:71::/64",
        "via",
        "fd00:50::2",
        "proto",
        "80",
    ])
    .unwrap();
    // One of ours that has changed (different gateway than desired).
    n.ns.ip(&[
        "route",
        "add",
        "10.65.2.0/26",
        "via",
        "192.168.50.3",
        "proto",
        "80",
    ])
    .unwrap();

    let mut fib = fib_in(&n.ns);
    let desired = vec![
        Route::via(net("10.65.2.0/26"), NextHop::via(ip("192.168.50.2"))),
        Route::blackhole(net("10.65.1.0/26")),
    ];
    let report = fib.apply(desired).unwrap();
    assert!(report.is_clean(), "{:?}", report.failed);
    assert_eq!(
        (report.added, report.changed, report.deleted),
        (1, 1, 2),
        "{report:?}"
    );

    let all: String =
        n.ns.ip(&["route", "show"])
            .unwrap()
            .lines()
            .map(|l| without_nhid(l) + "\n")
            .collect();
    assert!(
        all.contains("10.70.0.0/24 via 192.168.50.2 dev eth0 proto static"),
        "{all}"
    );
    assert!(!all.contains("10.71.0.0/24"), "{all}");
    assert!(
        all.contains("10.65.2.0/26 via 192.168.50.2 dev eth0 proto 80"),
        "{all}"
    );
    assert!(
        all.contains("192.168.50.0/24 dev eth0 proto kernel"),
        "{all}"
    );
    assert!(!our_routes(&n.ns, true)
        .iter()
        .any(|l| l.contains("fd00:71::")));

    // Deleting everything of ours still leaves the static route.
    let report = fib.apply(vec![]).unwrap();
    assert_eq!(report.deleted, 2);
    assert!(our_routes(&n.ns, false).is_empty());
    let all: String =
        n.ns.ip(&["route", "show"])
            .unwrap()
            .lines()
            .map(|l| without_nhid(l) + "\n")
            .collect();
    assert!(
        all.contains("10.70.0.0/24 via 192.168.50.2 dev eth0 proto static"),
        "{all}"
    );
}

/// Lines printed by `ip monitor route` in the namespace, delivered through a channel.
struct RouteMonitor {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl RouteMonitor {
    fn start(ns: &Netns) -> Self {
        let mut child = ns
            .command(&["ip", "monitor", "route"])
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// Collects lines until one contains `marker` (bounded wait); returns the lines before it.
    /// `poke` is called every 200 ms meanwhile: it (re)writes the marker route, since the
    /// monitor may not have subscribed yet when the first write happens.
    fn until(&self, marker: &str, poke: impl Fn()) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            poke();
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(l) if l.contains(marker) => return seen,
                Ok(l) => seen.push(l),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!("ip monitor never showed {marker}; saw {seen:?}");
    }
}

impl Drop for RouteMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn restarted_programmer_does_not_flap_unchanged_routes() {
    let n = node("fibflap");
    let mut first = fib_in(&n.ns);
    let report = first.apply(shapes()).unwrap();
    assert!(report.is_clean(), "{:?}", report.failed);
    drop(first);

    let monitor = RouteMonitor::start(&n.ns);
    // Marker routes prove the monitor is listening before, and has caught up after.
    let marker = |dst: &'static str| {
        let ns = &n.ns;
        // Delete and re-add: replacing an identical IPv4 route is a silent no-op in the
        // kernel (fib_table_insert finds the exact match), so it would never be seen.
        move || {
            let _ = ns.ip(&["route", "del", dst]);
            ns.ip(&["route", "add", "blackhole", dst, "proto", "static"])
                .unwrap();
        }
    };
    monitor.until("10.250.0.1", marker("10.250.0.1/32"));

    // "Restart": a new instance with an empty desired set, handed the same routes, plus one
    // change so the monitor has something of ours to show.
    let mut second = fib_in(&n.ns);
    let mut desired = shapes();
    desired.push(Route::blackhole(net("10.65.9.0/26")));
    let report = second.apply(desired).unwrap();
    let events = monitor.until("10.250.0.2", marker("10.250.0.2/32"));
    assert_eq!(
        events.iter().filter(|l| l.contains("10.65.9.0/26")).count(),
        1,
        "{events:?}"
    );
    let flaps: Vec<_> = events
        .iter()
        .filter(|l| (l.contains("10.65.") || l.contains("fd00:65:")) && !l.contains("10.65.9.0/26"))
        .collect();
    // (The kernel notifies deletes, adds and IPv6 replaces; an IPv4 replace with an identical
    // route is silent, which is why the report is checked as well.)
    assert!(
        flaps.is_empty(),
        "unchanged routes were rewritten: {flaps:?}"
    );
    assert!(report.is_clean(), "{:?}", report.failed);
    assert_eq!(report.unchanged, shapes().len(), "{report:?}");
    assert_eq!((report.added, report.changed, report.deleted), (1, 0, 0));
}

#[test]
fn per_route_errors_are_reported_and_the_rest_installs() {
    let n = node("fiberr");
    let mut fib = fib_in(&n.ns);
    let unreachable = Route::via(net("10.65.7.0/26"), NextHop::via(ip("10.200.0.1")));
    let no_device = Route::via(net("10.65.8.5/32"), NextHop::dev("cali-gone"));
    let good = [
        Route::blackhole(net("10.65.1.0/26")),
        Route::via(net("10.65.2.0/26"), NextHop::via(ip("192.168.50.2"))),
    ];
    let mut desired = vec![good[0].clone(), unreachable.clone(), no_device.clone()];
    desired.push(good[1].clone());
    let report = fib.apply(desired).unwrap();
    assert_eq!(report.added, 2, "{report:?}");
    assert_eq!(report.failed.len(), 2, "{report:?}");
    let by_key = |k: RouteKey| report.failed.iter().find(|e| e.key == k).unwrap();
    assert_eq!(by_key(unreachable.key()).errno(), Some(Errno::ENETUNREACH));
    assert_eq!(by_key(unreachable.key()).route.as_ref(), Some(&unreachable));
    assert_eq!(
        by_key(no_device.key()).failure,
        RouteFailure::UnknownDevice("cali-gone".into())
    );
    let v4 = our_routes(&n.ns, false);
    assert_eq!(v4.len(), 2, "{v4:?}");

    // The failed routes stay desired: once the gateway is reachable and the device exists,
    // a reconcile installs them.
    n.ns.ip(&["addr", "add", "10.200.0.2/24", "dev", "eth0"])
        .unwrap();
    n.ns.ip(&[
        "link",
        "add",
        "cali-gone",
        "type",
        "veth",
        "peer",
        "name",
        "cali-peer",
    ])
    .unwrap();
    n.ns.ip(&["link", "set", "cali-gone", "up"]).unwrap();
    let report = fib.reconcile().unwrap();
    assert!(report.is_clean(), "{:?}", report.failed);
    assert_eq!((report.added, report.unchanged), (2, 2), "{report:?}");
    assert!(has_route(
        &our_routes(&n.ns, false),
        "10.65.8.5 dev cali-gone",
        &["scope link"]
    ));
}

#[test]
fn incremental_replace_and_delete() {
    let n = node("fibincr");
    let mut fib = fib_in(&n.ns);
    let r1 = Route::via(net("10.65.2.0/26"), NextHop::via(ip("192.168.50.2")));
    let r1b = Route::via(net("10.65.2.0/26"), NextHop::via(ip("192.168.50.3")));
    let report = fib.replace(vec![r1.clone()]).unwrap();
    assert_eq!(report.added, 1);
    // Replace is idempotent and changes in place.
    fib.replace(vec![r1.clone()]).unwrap();
    let report = fib.replace(vec![r1b.clone()]).unwrap();
    assert!(report.is_clean());
    let v4 = our_routes(&n.ns, false);
    assert_eq!(v4.len(), 1, "{v4:?}");
    assert!(
        has_route(&v4, "10.65.2.0/26 via 192.168.50.3", &[]),
        "{v4:?}"
    );

    // A static route with another prefix, and one with the deleted prefix in another table.
    n.ns.ip(&[
        "route",
        "add",
        "10.70.0.0/24",
        "via",
        "192.168.50.2",
        "proto",
        "static",
    ])
    .unwrap();
    let report = fib
        .delete(vec![r1.key(), RouteKey::main(net("10.70.0.0/24"))])
        .unwrap();
    // The missing-for-us 10.70 (ESRCH: not ours) and the real delete both count as done.
    assert!(report.is_clean(), "{:?}", report.failed);
    assert_eq!(report.deleted, 2);
    assert!(our_routes(&n.ns, false).is_empty());
    assert!(n
        .ns
        .ip(&["route", "show"])
        .unwrap()
        .contains("10.70.0.0/24"));
    assert!(fib.desired().is_empty());
    // Delete again: ESRCH = done, not an error.
    let report = fib.delete(vec![r1.key()]).unwrap();
    assert!(report.is_clean());
    // Devices by ifindex work too.
    let idx: u32 =
        n.ns.ip(&["-o", "link", "show", "eth0"])
            .unwrap()
            .split(':')
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    let r = Route::via(net("10.65.1.9/32"), NextHop::dev(Device::Index(idx)));
    assert!(fib.replace(vec![r]).unwrap().is_clean());
    assert!(has_route(
        &our_routes(&n.ns, false),
        "10.65.1.9 dev eth0",
        &["scope link"]
    ));
}

#[test]
fn missing_namespace_is_a_typed_error() {
    let err = NetlinkFib::in_namespace("/run/netns/rl-fib-no-such-namespace", FibConfig::default())
        .unwrap_err();
    assert!(matches!(err, fib::FibError::Namespace { .. }), "{err}");
}

#[test]
fn thousands_of_routes_in_one_apply() {
    let n = node("fibmany");
    let mut fib = fib_in(&n.ns);
    let routes: Vec<Route> = (0..5000u32)
        .map(|i| {
            let dst = IpNet::new(
                IpAddr::from([10, 100 + (i >> 16) as u8, (i >> 8) as u8, i as u8]),
                32,
            )
            .unwrap();
            Route::via(dst, NextHop::via(ip("192.168.50.2")))
        })
        .collect();
    let started = Instant::now();
    let report = fib.apply(routes.clone()).unwrap();
    assert!(
        report.is_clean(),
        "{:?}",
        &report.failed[..report.failed.len().min(3)]
    );
    assert_eq!(report.added, 5000);
    assert_eq!(our_routes(&n.ns, false).len(), 5000);
    let report = fib.apply(routes).unwrap();
    assert_eq!(report.unchanged, 5000);
    let report = fib.apply(vec![]).unwrap();
    assert_eq!(report.deleted, 5000);
    assert!(our_routes(&n.ns, false).is_empty());
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn every_failure_of_a_large_batch_is_attributed_to_its_route() {
    let n = node("fibfail");
    let mut fib = fib_in(&n.ns);
    // Alternate reachable and unreachable gateways over 6000 routes: each error must come
    // back for exactly the route that caused it, across several batches.
    let routes: Vec<Route> = (0..6000u32)
        .map(|i| {
            let dst = IpNet::new(IpAddr::from([10, 120, (i >> 8) as u8, i as u8]), 32).unwrap();
            let gw = if i % 2 == 0 {
                "192.168.50.2"
            } else {
                "10.201.0.1"
            };
            Route::via(dst, NextHop::via(ip(gw)))
        })
        .collect();
    let report = fib.apply(routes.clone()).unwrap();
    assert_eq!(report.added, 3000, "{:?}", &report.failed[..3]);
    assert_eq!(report.failed.len(), 3000);
    for e in &report.failed {
        assert_eq!(e.errno(), Some(Errno::ENETUNREACH), "{e}");
        let host = match e.key.destination.addr() {
            IpAddr::V4(a) => u32::from(a) & 0xffff,
            IpAddr::V6(_) => panic!("unexpected {e}"),
        };
        assert_eq!(host % 2, 1, "route {e} should have succeeded");
        assert_eq!(e.route.as_ref().map(Route::key), Some(e.key));
    }
    assert_eq!(our_routes(&n.ns, false).len(), 3000);
}

#[test]
fn workload_route_waits_for_its_interface_to_come_up() {
    let n = node("fibdown");
    // A workload veth that exists but is not up yet (the CNI plugin brings it up later).
    n.ns.ip(&[
        "link", "add", "cali1", "type", "veth", "peer", "name", "cali1p",
    ])
    .unwrap();
    let mut fib = fib_in(&n.ns);
    let workload = Route::via(net("10.65.1.7/32"), NextHop::dev("cali1"));
    let report = fib.apply(vec![workload.clone()]).unwrap();
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].errno(), Some(Errno::ENETDOWN));
    assert!(our_routes(&n.ns, false).is_empty());

    n.ns.ip(&["link", "set", "cali1", "up"]).unwrap();
    let report = fib.reconcile().unwrap();
    assert!(report.is_clean(), "{:?}", report.failed);
    assert_eq!(report.added, 1);
    assert!(has_route(
        &our_routes(&n.ns, false),
        "10.65.1.7 dev cali1",
        &["scope link"]
    ));
}

#[test]
fn routes_change_in_place_between_single_path_multipath_and_blackhole() {
    let n = node("fibchg");
    let mut fib = fib_in(&n.ns);
    for (dst, a, b) in [
        ("10.65.4.0/26", "192.168.50.2", "192.168.50.3"),
        ("fd00:65:4::/122", "fd00:50::2", "fd00:50::3"),
    ] {
        let v6 = dst.contains(':');
        let single = Route::via(net(dst), NextHop::via_dev(ip(a), "eth0"));
        let ecmp = Route::unicast(
            net(dst),
            vec![
                NextHop::via_dev(ip(a), "eth0"),
                NextHop::via_dev(ip(b), "eth0"),
            ],
        );
        let hole = Route::blackhole(net(dst));
        for (i, r) in [single.clone(), ecmp.clone(), single, hole, ecmp]
            .iter()
            .enumerate()
        {
            let report = fib.apply(vec![r.clone()]).unwrap();
            assert!(report.is_clean(), "{:?}", report.failed);
            assert_eq!(report.writes(), 1, "step {i} {r}: {report:?}");
            let lines = our_routes(&n.ns, v6);
            assert_eq!(lines.len(), 1, "step {i} {r}: {lines:?}");
            let installed = fib.installed().unwrap();
            assert_eq!(installed.len(), 1);
            assert_eq!(
                installed[0].next_hops().len(),
                r.next_hops().len(),
                "step {i} {r}"
            );
            assert_eq!(
                matches!(installed[0].kind, fib::RouteKind::Blackhole),
                matches!(r.kind, fib::RouteKind::Blackhole)
            );
            // And re-applying the same set writes nothing: what the kernel holds satisfies it.
            let again = fib.apply(vec![r.clone()]).unwrap();
            assert_eq!(
                (again.writes(), again.unchanged),
                (0, 1),
                "step {i} {r}: {again:?}"
            );
        }
        fib.apply(vec![]).unwrap();
    }
}

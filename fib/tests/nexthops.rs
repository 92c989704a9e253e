//! The kernel nexthop objects `NetlinkFib` installs routes over (Linux ≥ 5.3): created on
//! demand and shared, removed once unused, reconciled without touching other protocols'
//! objects, interchangeable with inline gateways (no flap either way), and an inline fallback
//! wherever an object cannot be had. Root and throw-away namespaces only.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use fib::{FibConfig, NetlinkFib, NextHop, Route, RouteFailure, RouteKey, RouteTable};
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

/// A namespace with eth0 (192.168.50.1/24, fd00:50::1/64) on a veth to a peer.
fn node(tag: &str) -> Node {
    lab::require(&["ip"]);
    let ns = Netns::new(tag).unwrap();
    let peer = Netns::new(&format!("{tag}p")).unwrap();
    lab::veth(&ns, "eth0", &peer, "eth1").unwrap();
    ns.ip(&["addr", "add", "192.168.50.1/24", "dev", "eth0"])
        .unwrap();
    ns.ip(&["-6", "addr", "add", "fd00:50::1/64", "dev", "eth0", "nodad"])
        .unwrap();
    Node { ns, _peer: peer }
}

fn fib(ns: &Netns, nexthop_objects: bool) -> NetlinkFib {
    let config = FibConfig {
        nexthop_objects,
        ..FibConfig::default()
    };
    NetlinkFib::in_namespace(ns.path(), config).unwrap()
}

/// `ip -o nexthop show`, one object per line, whitespace normalised.
fn nexthops(ns: &Netns) -> Vec<String> {
    ns.ip(&["-o", "nexthop", "show"])
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn ours(ns: &Netns) -> Vec<String> {
    nexthops(ns)
        .into_iter()
        .filter(|l| l.contains("proto 80"))
        .collect()
}

/// `ip -o [-6] route show table all proto 80`.
fn routes(ns: &Netns, v6: bool) -> Vec<String> {
    ns.ip(&[
        "-o",
        if v6 { "-6" } else { "-4" },
        "route",
        "show",
        "table",
        "all",
        "proto",
        "80",
    ])
    .unwrap()
    .lines()
    .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
    .collect()
}

/// The nexthop id a route line names.
fn nhid(line: &str) -> Option<u32> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == "nhid")?;
    words.next()?.parse().ok()
}

fn route_line(lines: &[String], prefix: &str) -> String {
    lines
        .iter()
        .find(|l| l.starts_with(prefix))
        .cloned()
        .unwrap_or_else(|| panic!("no route {prefix} in {lines:?}"))
}

#[test]
fn routes_share_one_object_per_next_hop_and_unused_objects_go() {
    let n = node("fibnhshare");
    let mut fib = fib(&n.ns, true);
    let gw2 = ip("192.168.50.2");
    let gw3 = ip("192.168.50.3");
    let report = fib
        .replace(vec![
            // Same next hop three ways: the kernel's device choice, explicit, another table.
            Route::via(net("10.65.2.0/26"), NextHop::via(gw2)),
            Route::via(net("10.65.3.0/26"), NextHop::via_dev(gw2, "eth0")),
            Route::via(net("10.65.4.0/26"), NextHop::via(gw2)).with_table(100),
            Route::via(net("10.65.5.0/26"), NextHop::via(gw3)).with_mtu(1400),
            Route::via(net("10.65.1.5/32"), NextHop::dev("eth0")),
            Route::via(
                net("fd00:65:2::/122"),
                NextHop::via_dev(ip("fd00:50::2"), "eth0"),
            ),
            // Neither ECMP nor blackholes use objects.
            Route::unicast(
                net("10.65.6.0/26"),
                vec![NextHop::via(gw2), NextHop::via(gw3)],
            ),
            Route::blackhole(net("10.65.0.0/26")),
        ])
        .unwrap();
    assert!(report.is_clean(), "{:?}", report.failed);
    assert_eq!(report.added, 8);

    let objects = ours(&n.ns);
    assert_eq!(objects.len(), 4, "{objects:?}");
    let v4 = routes(&n.ns, false);
    let v6 = routes(&n.ns, true);
    let shared = nhid(&route_line(&v4, "10.65.2.0/26")).unwrap();
    assert_eq!(nhid(&route_line(&v4, "10.65.3.0/26")), Some(shared));
    assert_eq!(nhid(&route_line(&v4, "10.65.4.0/26")), Some(shared));
    let via3 = nhid(&route_line(&v4, "10.65.5.0/26")).unwrap();
    assert_ne!(via3, shared);
    assert!(route_line(&v4, "10.65.5.0/26").contains("mtu 1400"));
    let dev = route_line(&v4, "10.65.1.5");
    assert!(nhid(&dev).is_some() && dev.contains("scope link"), "{dev}");
    assert!(
        nhid(&route_line(&v6, "fd00:65:2::/122")).is_some(),
        "{v6:?}"
    );
    assert_eq!(nhid(&route_line(&v4, "10.65.6.0/26")), None);
    assert_eq!(nhid(&route_line(&v4, "blackhole 10.65.0.0/26")), None);
    assert!(
        objects
            .iter()
            .any(|o| o.starts_with(&format!("id {shared} via 192.168.50.2 dev eth0"))),
        "{objects:?}"
    );

    // The last route via .3 goes: so does its object; the shared one stays.
    let report = fib
        .delete(vec![RouteKey::main(net("10.65.5.0/26"))])
        .unwrap();
    assert_eq!(report.deleted, 1);
    let objects = ours(&n.ns);
    assert_eq!(objects.len(), 3, "{objects:?}");
    assert!(!objects
        .iter()
        .any(|o| o.starts_with(&format!("id {via3} "))));

    // All users of the shared object move to another gateway: it goes, one for .3 appears.
    fib.replace(vec![
        Route::via(net("10.65.2.0/26"), NextHop::via(gw3)),
        Route::via(net("10.65.3.0/26"), NextHop::via_dev(gw3, "eth0")),
        Route::via(net("10.65.4.0/26"), NextHop::via(gw3)).with_table(100),
    ])
    .unwrap();
    let objects = ours(&n.ns);
    assert!(
        !objects
            .iter()
            .any(|o| o.starts_with(&format!("id {shared} "))),
        "{objects:?}"
    );
    assert!(objects
        .iter()
        .any(|o| o.contains("via 192.168.50.3 dev eth0")));
    assert_eq!(objects.len(), 3, "{objects:?}");
    // A reconcile agrees that nothing needs writing.
    let report = fib.reconcile().unwrap();
    assert_eq!(report.writes(), 0, "{report:?}");

    // Nothing of ours left: no object of ours left.
    let report = fib.apply(vec![]).unwrap();
    assert_eq!(report.deleted, 7);
    assert!(ours(&n.ns).is_empty(), "{:?}", nexthops(&n.ns));
}

#[test]
fn reconcile_removes_our_stale_objects_and_never_touches_others() {
    let n = node("fibnhstale");
    let sh = |args: &[&str]| {
        n.ns.ip(args).unwrap();
    };
    // Ours, unused (left by an earlier run).
    sh(&[
        "nexthop",
        "add",
        "id",
        "500",
        "via",
        "192.168.50.2",
        "dev",
        "eth0",
        "proto",
        "80",
    ]);
    // Ours, but another protocol's route uses it.
    sh(&[
        "nexthop",
        "add",
        "id",
        "501",
        "via",
        "192.168.50.3",
        "dev",
        "eth0",
        "proto",
        "80",
    ]);
    sh(&[
        "route",
        "add",
        "10.72.0.0/24",
        "nhid",
        "501",
        "proto",
        "static",
    ]);
    // Someone else's, unused.
    sh(&[
        "nexthop",
        "add",
        "id",
        "502",
        "via",
        "192.168.50.2",
        "dev",
        "eth0",
        "proto",
        "static",
    ]);
    // Ours, used by a route of ours that is still desired (installed by an earlier run).
    sh(&[
        "nexthop",
        "add",
        "id",
        "503",
        "via",
        "192.168.50.4",
        "dev",
        "eth0",
        "proto",
        "80",
    ]);
    sh(&["route", "add", "10.65.2.0/26", "nhid", "503", "proto", "80"]);

    let mut fib = fib(&n.ns, true);
    let desired = vec![Route::via(
        net("10.65.2.0/26"),
        NextHop::via(ip("192.168.50.4")),
    )];
    let report = fib.apply(desired).unwrap();
    assert_eq!(report.unchanged, 1, "{report:?}");
    assert_eq!(report.writes(), 0, "{report:?}");
    let ids: Vec<String> = nexthops(&n.ns);
    let has = |id: &str| ids.iter().any(|l| l.starts_with(&format!("id {id} ")));
    assert!(!has("500"), "stale object of ours kept: {ids:?}");
    assert!(has("501") && has("502") && has("503"), "{ids:?}");
    assert!(n
        .ns
        .ip(&["route", "show"])
        .unwrap()
        .contains("10.72.0.0/24"));

    // A new route via .4 reuses 503 rather than creating another object.
    let report = fib
        .replace(vec![Route::via(
            net("10.65.3.0/26"),
            NextHop::via_dev(ip("192.168.50.4"), "eth0"),
        )])
        .unwrap();
    assert!(report.is_clean());
    assert_eq!(
        nhid(&route_line(&routes(&n.ns, false), "10.65.3.0/26")),
        Some(503)
    );

    // Nothing desired: our routes and our unused objects go; the pinned one and the foreign
    // one (and the static route) stay.
    let report = fib.apply(vec![]).unwrap();
    assert_eq!(report.deleted, 2, "{report:?}");
    let ids = nexthops(&n.ns);
    let has = |id: &str| ids.iter().any(|l| l.starts_with(&format!("id {id} ")));
    assert!(!has("503"), "{ids:?}");
    assert!(has("501") && has("502"), "{ids:?}");
    assert!(n
        .ns
        .ip(&["route", "show"])
        .unwrap()
        .contains("10.72.0.0/24 nhid 501"));
}

/// Every single-next-hop shape, both families.
fn shapes() -> Vec<Route> {
    vec![
        Route::blackhole(net("10.65.1.0/26")),
        Route::via(net("10.65.1.5/32"), NextHop::dev("eth0")),
        Route::via(
            net("10.65.2.0/26"),
            NextHop::via_dev(ip("192.168.50.2"), "eth0"),
        ),
        Route::via(net("10.65.6.0/26"), NextHop::via(ip("192.168.50.2"))),
        Route::via(net("10.65.3.0/26"), NextHop::onlink(ip("10.9.9.9"), "eth0")).with_mtu(1450),
        Route::via(net("10.65.5.0/26"), NextHop::via(ip("192.168.50.3"))).with_table(100),
        Route::unicast(
            net("10.65.4.0/26"),
            vec![
                NextHop::via(ip("192.168.50.2")),
                NextHop::via(ip("192.168.50.3")),
            ],
        ),
        Route::via(net("fd00:65:1::5/128"), NextHop::dev("eth0")),
        Route::via(
            net("fd00:65:2::/122"),
            NextHop::via_dev(ip("fd00:50::2"), "eth0"),
        ),
    ]
}

#[test]
fn inline_and_object_routes_are_interchangeable_without_rewrites() {
    let n = node("fibnhupg");
    // An older version (or nexthop objects turned off) installed everything inline.
    let mut old = fib(&n.ns, false);
    let report = old.apply(shapes()).unwrap();
    assert!(report.is_clean(), "{:?}", report.failed);
    let v4 = routes(&n.ns, false);
    assert!(v4.iter().all(|l| nhid(l).is_none()), "{v4:?}");
    assert!(nexthops(&n.ns).is_empty());
    drop(old);

    // The upgraded version reads them back as what it wants: nothing written, no objects.
    let mut new = fib(&n.ns, true);
    let report = new.apply(shapes()).unwrap();
    assert_eq!(report.unchanged, shapes().len(), "{report:?}");
    assert_eq!(report.writes(), 0, "{report:?}");
    assert!(nexthops(&n.ns).is_empty(), "{:?}", nexthops(&n.ns));

    // Routes that change go over objects; a downgrade reads those back unchanged too.
    let mut changed = shapes();
    changed[3] = Route::via(net("10.65.6.0/26"), NextHop::via(ip("192.168.50.3")));
    changed[4] =
        Route::via(net("10.65.3.0/26"), NextHop::onlink(ip("10.9.9.8"), "eth0")).with_mtu(1450);
    let report = new.apply(changed.clone()).unwrap();
    assert_eq!(report.changed, 2, "{report:?}");
    let v4 = routes(&n.ns, false);
    assert!(nhid(&route_line(&v4, "10.65.6.0/26")).is_some(), "{v4:?}");
    assert!(route_line(&v4, "10.65.3.0/26").contains("onlink"), "{v4:?}");
    drop(new);
    let mut downgraded = fib(&n.ns, false);
    let report = downgraded.apply(changed).unwrap();
    assert_eq!(report.writes(), 0, "{report:?}");
    assert_eq!(downgraded.installed().unwrap().len(), shapes().len());
}

#[test]
fn an_object_the_kernel_refuses_leaves_its_routes_inline_with_their_own_errors() {
    let n = node("fibnhfail");
    let mut fib = fib(&n.ns, true);
    let report = fib
        .replace(vec![
            // No connected route to 10.202.0.1: neither an object nor an inline route works.
            Route::via(
                net("10.65.7.0/26"),
                NextHop::via_dev(ip("10.202.0.1"), "eth0"),
            ),
            // Not directly reachable (only through a gateway): inline, where the kernel
            // refuses it as it always has.
            Route::via(net("10.65.8.0/26"), NextHop::via(ip("10.202.0.2"))),
            Route::via(net("10.65.2.0/26"), NextHop::via(ip("192.168.50.2"))),
        ])
        .unwrap();
    assert_eq!(report.added, 1, "{report:?}");
    let mut failed: Vec<_> = report
        .failed
        .iter()
        .map(|e| (e.key.destination.to_string(), e.failure.clone()))
        .collect();
    failed.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        failed,
        vec![
            (
                "10.65.7.0/26".into(),
                RouteFailure::Kernel(Errno::ENETUNREACH)
            ),
            (
                "10.65.8.0/26".into(),
                RouteFailure::Kernel(Errno::ENETUNREACH)
            ),
        ]
    );
    assert_eq!(ours(&n.ns).len(), 1, "{:?}", nexthops(&n.ns));
}

#[test]
fn an_object_deleted_behind_our_back_does_not_lose_routes() {
    let n = node("fibnhgone");
    let mut fib = fib(&n.ns, true);
    let routes_via = |last: u8| {
        (0..50u8)
            .map(|i| {
                Route::via(
                    net(&format!("10.66.{last}.{i}/32")),
                    NextHop::via(ip("192.168.50.2")),
                )
            })
            .collect::<Vec<_>>()
    };
    assert!(fib.replace(routes_via(1)).unwrap().is_clean());
    let id = nhid(&routes(&n.ns, false)[0]).unwrap();
    // An operator deletes the object: the kernel takes its routes with it.
    n.ns.ip(&["nexthop", "del", "id", &id.to_string()]).unwrap();
    assert!(routes(&n.ns, false).is_empty());

    // The hot path still installs routes via that gateway (inline at first), ...
    let report = fib.replace(routes_via(2)).unwrap();
    assert!(report.is_clean(), "{:?}", report.failed);
    assert_eq!(routes(&n.ns, false).len(), 50);
    // ... and a reconcile puts back the lost ones, over a new object.
    let report = fib.reconcile().unwrap();
    assert!(report.is_clean(), "{:?}", report.failed);
    assert_eq!(report.added, 50, "{report:?}");
    let lines = routes(&n.ns, false);
    assert_eq!(lines.len(), 100);
    assert!(
        lines.iter().filter(|l| nhid(l).is_some()).count() >= 50,
        "{lines:?}"
    );
    assert_eq!(ours(&n.ns).len(), 1, "{:?}", nexthops(&n.ns));
}

//! End-to-end: pods on different "nodes" (network namespaces) reach each other natively, over
//! VXLAN, over IP-in-IP (the userspace fallback on kernels without `ipip`), and with
//! CrossSubnet encapsulating only towards the node behind a router.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;

use common::{Cluster, Subnet};
use encap::EncapMode::{Always, CrossSubnet, Never};
use encap::PoolEncap;

const TOOLS: &[&str] = &["ip", "ping", "tcpdump", "sysctl", "bridge"];

fn pool(ipip: encap::EncapMode, vxlan: encap::EncapMode) -> PoolEncap {
    PoolEncap { ipip, vxlan }
}

fn link_mtu(ns: &lab::Netns, dev: &str) -> u32 {
    let out = ns.ip(&["-o", "link", "show", dev]).unwrap();
    let mut words = out.split_whitespace();
    words.find(|w| *w == "mtu").unwrap();
    words.next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_one_subnet_reach_each_other_natively() {
    lab::require(TOOLS);
    let mut c = Cluster::new(&[Subnet::One, Subnet::One]);
    c.program(0, pool(Never, Never)).await;
    c.program(1, pool(Never, Never)).await;
    let routes = c.nodes[0]
        .ns
        .ip(&["route", "show", "10.244.2.0/26"])
        .unwrap();
    assert!(routes.contains("via 192.168.10.2 dev eth0"), "{routes}");
    assert!(c.nodes[0].ns.ip(&["link", "show", "tunl0"]).is_err());
    c.assert_pods_reach(0, 1);
    c.assert_pods_reach(1, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_each_other_over_vxlan_always() {
    lab::require(TOOLS);
    let mut c = Cluster::new(&[Subnet::One, Subnet::One]);
    c.program(0, pool(Never, Always)).await;
    c.program(1, pool(Never, Always)).await;

    let a = &c.nodes[0];
    let details = a.ns.ip(&["-d", "link", "show", "vxlan.calico"]).unwrap();
    for want in [
        "vxlan id 4096",
        "local 192.168.10.1",
        "dev eth0",
        "dstport 4789",
        "nolearning",
    ] {
        assert!(details.contains(want), "missing {want:?} in {details}");
    }
    assert_eq!(link_mtu(&a.ns, "vxlan.calico"), 1450, "parent 1500 - 50");
    let neigh = a.ns.ip(&["neigh", "show", "dev", "vxlan.calico"]).unwrap();
    assert!(
        neigh.contains("10.244.2.0 lladdr 66:ca:c0:a8:0a:02 PERMANENT"),
        "{neigh}"
    );
    let fdb =
        a.ns.exec(&["bridge", "fdb", "show", "dev", "vxlan.calico"])
            .unwrap();
    assert!(
        fdb.contains("66:ca:c0:a8:0a:02 dst 192.168.10.2 self permanent"),
        "{fdb}"
    );
    let route = a.ns.ip(&["route", "show", "10.244.2.0/26"]).unwrap();
    assert!(route.contains("via 10.244.2.0 dev vxlan.calico"), "{route}");
    assert!(route.contains("onlink"), "{route}");

    c.assert_pods_reach(0, 1);
    c.assert_pods_reach(1, 0);

    // Re-applying the same VTEPs changes nothing (level-triggered, idempotent).
    let dev = c.nodes[0].vxlan().unwrap();
    let same = vec![encap::RemoteVtep {
        node_ip: IpAddr::V4(c.nodes[1].ip),
        tunnel_ip: IpAddr::V4(c.nodes[1].tunnel_ip()),
        mac: encap::vxlan::vtep_mac(IpAddr::V4(c.nodes[1].ip)),
    }];
    let again = dev.set_remote_vteps(same).await.unwrap();
    assert!(
        again.is_empty(),
        "{again:?} on {:?}",
        dev.current_entries().await.unwrap()
    );

    // Node 2 leaves: its neighbour and FDB entries go, and the overlay to it stops working.
    let changes = dev.set_remote_vteps(Vec::new()).await.unwrap();
    assert_eq!(
        (changes.del_neighbours.len(), changes.del_fdb.len()),
        (1, 1)
    );
    let neigh = a.ns.ip(&["neigh", "show", "dev", "vxlan.calico"]).unwrap();
    assert!(!neigh.contains("10.244.2.0"), "{neigh}");
    let fdb =
        a.ns.exec(&["bridge", "fdb", "show", "dev", "vxlan.calico"])
            .unwrap();
    assert!(!fdb.contains("66:ca:c0:a8:0a:02"), "{fdb}");
    assert!(!c.pod_ping(0, 1, "1"));

    // The pool stops using VXLAN: the device goes, the route to node 2 becomes native.
    c.program(0, pool(Never, Never)).await;
    assert!(c.nodes[0].vxlan().is_none());
    assert!(c.nodes[0].ns.ip(&["link", "show", "vxlan.calico"]).is_err());
    let route = c.nodes[0]
        .ns
        .ip(&["route", "show", "10.244.2.0/26"])
        .unwrap();
    assert!(route.contains("via 192.168.10.2 dev eth0"), "{route}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_each_other_over_ipip_always() {
    lab::require(TOOLS);
    let mut c = Cluster::new(&[Subnet::One, Subnet::One]);
    c.program(0, pool(Always, Never)).await;
    c.program(1, pool(Always, Never)).await;

    let a = &c.nodes[0];
    assert_eq!(link_mtu(&a.ns, "tunl0"), 1480, "parent 1500 - 20");
    let route = a.ns.ip(&["route", "show", "10.244.2.0/26"]).unwrap();
    assert!(route.contains("via 192.168.10.2 dev tunl0"), "{route}");
    assert!(route.contains("onlink"), "{route}");

    let capture = common::Capture::start(&a.ns, "eth0", "ipip");
    c.assert_pods_reach(0, 1);
    c.assert_pods_reach(1, 0);
    let counts = capture.stop_and_count(&[
        "ip proto 4 and src 192.168.10.1 and dst 192.168.10.2",
        "ip proto 4 and src 192.168.10.2 and dst 192.168.10.1",
        "icmp and host 10.244.2.5",
    ]);
    assert!(
        counts[0] >= 3 && counts[1] >= 3,
        "IP-in-IP both ways: {counts:?}"
    );
    assert_eq!(
        counts[2], 0,
        "no pod ICMP travels unencapsulated: {counts:?}"
    );

    let kernel_has_ipip = std::path::Path::new("/sys/module/ipip").exists();
    for node in &c.nodes {
        let dp = node.ipip().unwrap();
        assert_eq!(dp.is_userspace(), !kernel_has_ipip);
        if let Some(counters) = dp.counters() {
            // Each node sent 3 requests and at least one reply (ping succeeds on one reply).
            assert!(counters.encapsulated >= 4, "{counters:?}");
            assert!(counters.decapsulated >= 4, "{counters:?}");
        }
    }

    // Node 2 forgets node 1: its IP-in-IP packets are now from an unknown source and dropped.
    if let Some(dp) = c.nodes[1].ipip().filter(|d| d.is_userspace()) {
        dp.set_remote_nodes(&[]);
        assert!(!c.pod_ping(0, 1, "1"));
        let counters = dp.counters().unwrap();
        assert!(counters.unknown_source >= 1, "{counters:?}");
    }
}

/// Three nodes, the third behind a router; only traffic to and from it is encapsulated.
async fn cross_subnet(pool: PoolEncap, encapsulated: &str) {
    lab::require(TOOLS);
    let mut c = Cluster::new(&[Subnet::One, Subnet::One, Subnet::Two]);
    for i in 0..3 {
        c.program(i, pool).await;
    }
    let a = &c.nodes[0];
    let capture = common::Capture::start(&a.ns, "eth0", "xsub");
    c.assert_pods_reach(0, 1);
    c.assert_pods_reach(0, 2);
    c.assert_pods_reach(2, 0);
    let counts = capture.stop_and_count(&[
        &format!("{encapsulated} and host 192.168.20.3"),
        &format!("{encapsulated} and host 192.168.10.2"),
        "icmp and host 10.244.2.5",
        "icmp and host 10.244.3.5",
    ]);
    assert!(
        counts[0] >= 6,
        "cross-subnet node is encapsulated: {counts:?}"
    );
    assert_eq!(
        counts[1], 0,
        "same-subnet node is not encapsulated: {counts:?}"
    );
    // Three requests and at least one reply (a ping run succeeds on one reply).
    assert!(
        counts[2] >= 4,
        "same-subnet pod traffic is native: {counts:?}"
    );
    assert_eq!(
        counts[3], 0,
        "cross-subnet pod traffic is never native: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipip_cross_subnet_encapsulates_only_to_the_remote_subnet() {
    cross_subnet(pool(CrossSubnet, Never), "ip proto 4").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vxlan_cross_subnet_encapsulates_only_to_the_remote_subnet() {
    cross_subnet(pool(Never, CrossSubnet), "udp port 4789").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_change_moves_pods_from_ipip_to_vxlan() {
    lab::require(TOOLS);
    let mut c = Cluster::new(&[Subnet::One, Subnet::One]);
    for i in 0..2 {
        c.program(i, pool(Always, Never)).await;
    }
    c.assert_pods_reach(0, 1);

    // The pool switches to VXLAN: the VXLAN device appears, the userspace tunl0 goes, and
    // the routes move over.
    for i in 0..2 {
        c.program(i, pool(Never, Always)).await;
    }
    for node in &c.nodes {
        assert!(node.ipip().is_none());
        assert!(node.vxlan().is_some());
    }
    let route = c.nodes[0]
        .ns
        .ip(&["route", "show", "10.244.2.0/26"])
        .unwrap();
    assert!(route.contains("dev vxlan.calico"), "{route}");
    if !std::path::Path::new("/sys/module/ipip").exists() {
        // The userspace tunl0 is a TUN device that vanishes with its data path.
        lab::wait_for(
            "userspace tunl0 to go",
            std::time::Duration::from_secs(5),
            std::time::Duration::from_millis(20),
            || {
                c.nodes[0]
                    .ns
                    .ip(&["link", "show", "tunl0"])
                    .is_err()
                    .then_some(())
            },
        )
        .unwrap();
    }
    c.assert_pods_reach(0, 1);
    c.assert_pods_reach(1, 0);
}

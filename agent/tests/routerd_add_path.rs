//! ADD-PATH through a routerd route reflector (RFC 7911): four routerd nodes with the mesh
//! off and node-1 a reflector (`routeReflectorClusterID`); node-2 and node-3 each learn the
//! same anycast prefix from a router of their own (BIRD) and announce it to the reflector;
//! node-4, behind the reflector, receives both paths and installs them in its kernel as one
//! ECMP route. When one announcer's router goes, node-4 falls back to the other path.
//!
//! Needs root; only namespaces this test creates are touched.
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

mod support;

use std::collections::BTreeSet;

use lab::bird::Bird;
use lab::{require, wait_for, Netns};
use support::{Cluster, POLL, T};

const ANYCAST: &str = "10.77.0.0/24";

/// The gateways of node `i`'s kernel route to [`ANYCAST`] (ours, protocol 80), whether
/// written as a multipath route or through a nexthop group.
fn gateways(c: &Cluster, i: usize) -> BTreeSet<String> {
    let ns = &c.nodes[i].ns;
    let table = ns
        .ip(&["route", "show", ANYCAST, "proto", "80"])
        .unwrap_or_default();
    let words: Vec<&str> = table.split_whitespace().collect();
    let mut out: BTreeSet<String> = words
        .windows(2)
        .filter(|w| w[0] == "via")
        .map(|w| w[1].to_string())
        .collect();
    if let Some(id) = words.windows(2).find(|w| w[0] == "nhid").map(|w| w[1]) {
        out.extend(nexthop_gateways(ns, id, 0));
    }
    out
}

/// The gateways of kernel nexthop object `id` (a group's members, recursively once).
fn nexthop_gateways(ns: &Netns, id: &str, depth: u8) -> Vec<String> {
    let text = ns
        .ip(&["-j", "nexthop", "show", "id", id])
        .unwrap_or_default();
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    let Some(nh) = v.as_array().and_then(|a| a.first()) else {
        return Vec::new();
    };
    if let Some(gw) = nh["gateway"].as_str() {
        return vec![gw.to_string()];
    }
    if depth > 0 {
        return Vec::new();
    }
    nh["group"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_u64())
        .flat_map(|m| nexthop_gateways(ns, &m.to_string(), depth + 1))
        .collect()
}

fn apply(c: &Cluster, name: &str, yaml: &str) {
    let path = c.path().join(name);
    std::fs::write(&path, yaml).unwrap();
    c.routectl(&["apply", "-f", path.to_str().unwrap()]);
}

#[test]
fn a_node_behind_our_reflector_installs_both_paths_of_an_anycast_prefix() {
    require(&["ip", "bird", "birdc"]);
    let c = Cluster::start("rap", 4, "{cidr: 10.244.0.0/16, blockSize: 26}");

    // The reflector topology: node-1 reflects, the mesh goes.
    c.routectl(&[
        "patch",
        "node",
        "node-1",
        "-p",
        r#"{"spec":{"bgp":{"routeReflectorClusterID":"244.0.0.1"}}}"#,
    ]);
    apply(
        &c,
        "bgpconfig.yaml",
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\n\
         spec:\n  nodeToNodeMeshEnabled: false\n",
    );

    // Two routers announcing the same prefix, one to node-2, one to node-3 (eBGP).
    let mut birds = Vec::new();
    for (i, (tag, addr, node)) in [("rapx", "10.0.0.101", 2), ("rapy", "10.0.0.102", 3)]
        .into_iter()
        .enumerate()
    {
        let ns = Netns::new(tag).unwrap();
        c.attach(&ns, "eth0", &format!("{addr}/24"));
        let bird = Bird::start(
            &ns,
            &c.path().join(tag),
            &format!(
                "router id {addr};\nprotocol device {{}}\n\
                 protocol static own {{ ipv4; route {ANYCAST} blackhole; }}\n\
                 protocol bgp node {{ local {addr} as 65100; neighbor 10.0.0.{node} as 64512; \
                 hold time 9; connect retry time 1; \
                 ipv4 {{ import none; export where proto = \"own\"; }}; }}\n"
            ),
        )
        .unwrap();
        apply(
            &c,
            &format!("peer-{i}.yaml"),
            &format!(
                "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: anycast-{i}\n\
                 spec:\n  node: node-{node}\n  peerIP: {addr}\n  asNumber: 65100\n"
            ),
        );
        birds.push((ns, bird));
    }
    for (_, bird) in &birds {
        bird.wait_established("node", T)
            .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    }

    // node-4 has both paths from the reflector and one kernel route over both.
    let both: BTreeSet<String> = ["10.0.0.101", "10.0.0.102"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    wait_for("node-4's ECMP route", T, POLL, || {
        (gateways(&c, 3) == both).then_some(())
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {:?}\n{}\n{}",
            gateways(&c, 3),
            c.routectl_output(&["node", "status"]).status,
            c.logs()
        )
    });
    // `routectl node routes` shows both, from the reflector, one best and one multipath.
    let text = c.routectl(&[
        "--control-socket",
        c.nodes[3].socket.to_str().unwrap(),
        "node",
        "routes",
        ANYCAST,
    ]);
    assert!(
        text.contains("[best]") && text.contains("[multipath]") && text.contains("from 10.0.0.1"),
        "node routes {ANYCAST}: {text}"
    );
    // The announcers keep their own router's path: they are not sent the other one (the
    // reflector's best is not sent back to where it came from, and iBGP-learned paths are
    // not preferred over their eBGP path).
    assert_eq!(gateways(&c, 1).len(), 1, "{:?}", gateways(&c, 1));

    // One router goes: node-4 keeps the other path only.
    drop(birds.remove(0));
    wait_for("node-4 down to one path", T, POLL, || {
        let g = gateways(&c, 3);
        (g.len() == 1 && g.contains("10.0.0.102")).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", gateways(&c, 3), c.logs()));
}

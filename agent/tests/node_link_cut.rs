//! A node's link is cut: its routes are withdrawn everywhere within the BFD detection time
//! (plus the ToR's withdrawal and the other nodes' FIB update), and come back when the link
//! returns, while pods on the untouched nodes ping each other at 10 ms without a loss.
//!
//! Three routerd nodes with the mesh off, each peering with a BIRD ToR (AS 65000) at
//! 10.0.0.254 through a global BGPPeer with `failureDetectionMode: BFDIfDirectlyConnected`
//! (BFD 300 ms x 3 on both ends; the BGP hold time is 90 s, so only BFD can be this fast;
//! BIRD waits 1 s after the failure before it takes the session again, where its default
//! `error wait time` is 60 s).
//! The ToR reflects every node's block to the others (the nodes share AS 64512 behind it:
//! `numAllowedLocalASNumbers: 1`). Node 2's switch port goes down as a pulled cable would.
//!
//! Needs root; only namespaces this test creates are touched.
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

mod support;

use std::time::{Duration, Instant};

use agent::status::query_status;
use lab::bird::Bird;
use lab::pinger::Pinger;
use lab::{require, wait_for, Netns};
use support::{Cluster, BIRD_BFD, POLL, T};

/// Whether node `i`'s kernel routes `block` through node 2 (10.0.0.2).
fn routes_via_node2(c: &Cluster, i: usize, block: &str) -> bool {
    c.nodes[i]
        .ns
        .ip(&["route", "show", block, "proto", "80"])
        .is_ok_and(|t| t.contains("via 10.0.0.2 "))
}

fn write(c: &Cluster, name: &str, text: &str) -> String {
    let path = c.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn a_cut_node_link_is_withdrawn_everywhere_within_the_bfd_time() {
    require(&["ip", "bird", "birdc", "ping"]);
    let c = Cluster::start(
        "nlc",
        3,
        "{cidr: 10.244.0.0/16, blockSize: 24, ipipMode: Never, vxlanMode: Never}",
    );
    let tor = Netns::new("nlctor").unwrap();
    c.attach(&tor, "eth0", "10.0.0.254/24");
    let neighbors: String = (1..=3)
        .map(|i| {
            format!(
                "protocol bgp n{i} {{ local 10.0.0.254 as 65000; neighbor 10.0.0.{i} as 64512; \
                 hold time 90; connect retry time 1; error wait time 1, 5; bfd on; \
                 ipv4 {{ import all; export where source = RTS_BGP; }}; }}\n"
            )
        })
        .collect();
    let bird = Bird::start(
        &tor,
        &c.path().join("tor"),
        &format!(
            "router id 10.0.0.254;\nprotocol device {{}}\n\
             {BIRD_BFD}{neighbors}"
        ),
    )
    .unwrap();
    let manifests = write(
        &c,
        "tor.yaml",
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\n\
         spec:\n  nodeToNodeMeshEnabled: false\n---\n\
         apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  \
         peerIP: 10.0.0.254\n  asNumber: 65000\n  numAllowedLocalASNumbers: 1\n  \
         failureDetectionMode: BFDIfDirectlyConnected\n",
    );
    c.routectl(&["apply", "-f", &manifests]);
    for i in 1..=3 {
        bird.wait_established(&format!("n{i}"), T).unwrap();
    }
    // Only the ToR session once the mesh sessions' hand-over is over.
    for i in 0..3 {
        wait_for(
            &format!("node {} peers with the ToR only", i + 1),
            T,
            POLL,
            || {
                let s = query_status(&c.nodes[i].socket, Duration::from_secs(5)).ok()?;
                let up: Vec<String> = s
                    .sessions
                    .iter()
                    .map(|x| format!("{} {}", x.address, x.state))
                    .collect();
                (up == ["10.0.0.254 Established"]).then_some(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    }
    let pods: Vec<(Netns, String)> = (0..3).map(|i| c.add_pod(i, &format!("nlcp{i}"))).collect();
    let block2 = query_status(&c.nodes[1].socket, Duration::from_secs(5))
        .unwrap()
        .blocks[0]
        .clone();
    for (a, b) in [(0, 2), (2, 0), (0, 1)] {
        wait_for(&format!("pod {a} -> pod {b}"), T, POLL, || {
            pods[a]
                .0
                .exec(&["ping", "-c", "1", "-W", "1", &pods[b].1])
                .ok()
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    }
    assert!(routes_via_node2(&c, 0, &block2) && routes_via_node2(&c, 2, &block2));

    let p13 = Pinger::start(&pods[0].0, &pods[0].1, &pods[2].1).unwrap();
    let p31 = Pinger::start(&pods[2].0, &pods[2].1, &pods[0].1).unwrap();
    std::thread::sleep(Duration::from_secs(1));

    // Node 2's cable is pulled.
    let cut = Instant::now();
    c.set_node_link(1, false);
    wait_for(
        "node 2's block out of nodes 1 and 3",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || (!routes_via_node2(&c, 0, &block2) && !routes_via_node2(&c, 2, &block2)).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let withdrawn = cut.elapsed();
    // BFD detects in 0.9 s (300 ms x 3); the ToR's UPDATE and the FIB write follow.
    assert!(
        withdrawn < Duration::from_millis(1900),
        "node 2's block left the other kernels only after {withdrawn:?}"
    );

    // The cable is back.
    std::thread::sleep(Duration::from_secs(1));
    let restored = Instant::now();
    c.set_node_link(1, true);
    wait_for("node 2's block back on nodes 1 and 3", T, POLL, || {
        (routes_via_node2(&c, 0, &block2) && routes_via_node2(&c, 2, &block2)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let back = restored.elapsed();
    wait_for("pod 1 -> pod 2 again", T, POLL, || {
        pods[0]
            .0
            .exec(&["ping", "-c", "1", "-W", "1", &pods[1].1])
            .ok()
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    std::thread::sleep(Duration::from_secs(1));
    let (c13, c31) = (p13.finish().unwrap(), p31.finish().unwrap());
    println!(
        "node link cut: node 2's block withdrawn from nodes 1 and 3 after {withdrawn:?}, back \
         {back:?} after the link returned; pod 1 <-> pod 3: {}/{} and {}/{} lost",
        c13.lost(),
        c13.transmitted,
        c31.lost(),
        c31.transmitted
    );
    for counts in [c13, c31] {
        assert!(counts.transmitted > 200, "{counts:?}");
        assert_eq!(counts.lost(), 0, "{counts:?}\n{}", c.logs());
    }
}

//! BFD from a BGPPeer (`failureDetectionMode: BFDIfDirectlyConnected`): two routerd nodes
//! and a BIRD top-of-rack with BFD on one segment. When the ToR's link dies, node 1's
//! session to it goes down and the ToR's route leaves node 1's kernel within a second (BFD
//! 300 ms x 3; the BGP hold time is 90 s), while the mesh session is untouched; when the
//! link returns, both come back. `routectl node status` shows BFD (the metric is tested in
//! health.rs).
//!
//! Needs root; only namespaces this test creates are touched.
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

mod support;

use std::time::{Duration, Instant};

use agent::status::{query_status, NodeStatus};
use lab::bird::Bird;
use lab::{require, wait_for, Netns};
use support::{Cluster, BIRD_BFD, POLL, T};

const TOR_ROUTE: &str = "10.99.0.0/24";

fn status(c: &Cluster, i: usize) -> Option<NodeStatus> {
    query_status(&c.nodes[i].socket, Duration::from_secs(5)).ok()
}

fn kernel_has_tor_route(c: &Cluster) -> bool {
    c.nodes[0]
        .ns
        .ip(&["route", "show", TOR_ROUTE, "proto", "80"])
        .is_ok_and(|t| t.contains("via 10.0.0.254"))
}

#[test]
fn bfd_takes_a_dead_tor_out_of_the_kernel_within_a_second() {
    require(&["ip", "bird", "birdc"]);
    let c = Cluster::start("rbf", 2, "{cidr: 10.244.0.0/16, blockSize: 26}");
    let tor = Netns::new("rbft").unwrap();
    c.attach(&tor, "eth0", "10.0.0.254/24");
    let neighbors: String = (1..=2)
        .map(|i| {
            format!(
                "protocol bgp n{i} {{ local 10.0.0.254 as 65000; neighbor 10.0.0.{i} as 64512; \
                 hold time 90; connect retry time 1; bfd on; \
                 ipv4 {{ import all; export where proto = \"own\"; }}; }}\n"
            )
        })
        .collect();
    let bird = Bird::start(
        &tor,
        &c.path().join("tor"),
        &format!(
            "router id 10.0.0.254;\nprotocol device {{}}\n\
             {BIRD_BFD}protocol static own {{ ipv4; route {TOR_ROUTE} blackhole; }}\n{neighbors}"
        ),
    )
    .unwrap();
    let manifest = c.path().join("tor-peer.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  \
         peerIP: 10.0.0.254\n  asNumber: 65000\n  failureDetectionMode: BFDIfDirectlyConnected\n",
    )
    .unwrap();
    c.routectl(&["apply", "-f", manifest.to_str().unwrap()]);
    bird.wait_established("n1", T).unwrap();
    bird.wait_established("n2", T).unwrap();
    wait_for("the ToR's route in node 1's kernel", T, POLL, || {
        kernel_has_tor_route(&c).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let s = status(&c, 0).unwrap();
    let tor_session = s
        .sessions
        .iter()
        .find(|x| x.address.to_string() == "10.0.0.254")
        .unwrap();
    assert_eq!(
        tor_session.bfd.as_ref().map(|b| b.state.as_str()),
        Some("Up"),
        "{tor_session:?}"
    );
    let mesh = s
        .sessions
        .iter()
        .find(|x| x.address.to_string() == "10.0.0.2")
        .unwrap();
    assert!(mesh.bfd.is_none(), "the mesh has no BFD: {mesh:?}");
    let mesh_since = mesh.since_unix;
    let out = c.routectl_output(&[
        "--control-socket",
        c.nodes[0].socket.to_str().unwrap(),
        "node",
        "status",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("10.0.0.254") && l.contains("| Up ")),
        "{text}"
    );

    // `since` is whole seconds computed from the session's age at each query, so it may
    // move by one between two queries: wait long enough that a reset of the mesh session
    // at the cut would move it by more than that.
    std::thread::sleep(Duration::from_secs(3));

    // The ToR's link dies.
    let cut = Instant::now();
    tor.ip(&["link", "set", "eth0", "down"]).unwrap();
    wait_for(
        "the ToR's route out of the kernel",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || (!kernel_has_tor_route(&c)).then_some(()),
    )
    .unwrap();
    let took = cut.elapsed();
    eprintln!("BFD: the ToR's route left the kernel {took:?} after the link cut");
    assert!(took < Duration::from_secs(1), "gone after {took:?}");
    let s = status(&c, 0).unwrap();
    let tor_session = s
        .sessions
        .iter()
        .find(|x| x.address.to_string() == "10.0.0.254")
        .unwrap();
    assert_ne!(tor_session.state, "Established");
    assert_eq!(
        tor_session.bfd.as_ref().map(|b| b.state.as_str()),
        Some("Down")
    );
    // The mesh session did not move.
    let mesh = s
        .sessions
        .iter()
        .find(|x| x.address.to_string() == "10.0.0.2")
        .unwrap();
    assert_eq!(mesh.state, "Established");
    assert!(
        mesh.since_unix.abs_diff(mesh_since) <= 1,
        "the mesh session was reset: since {} then {}",
        mesh_since,
        mesh.since_unix
    );

    // The link returns: BFD, BGP and the route come back.
    tor.ip(&["link", "set", "eth0", "up"]).unwrap();
    wait_for("the ToR's route back", T, POLL, || {
        kernel_has_tor_route(&c).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    bird.wait_established("n1", T).unwrap();
}

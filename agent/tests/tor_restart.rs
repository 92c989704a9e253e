//! The top-of-rack restarts (RFC 4724, receiving speaker): routerd, as graceful-restart
//! helper, keeps the routes a BIRD ToR gave it while BIRD is killed and started again, so
//! a pod's traffic through the ToR goes on: zero pings lost at 10 ms, and the ToR's route is
//! never deleted from the node's kernel (`ip monitor route` runs through it). After BIRD is
//! back the session is re-established and the route is refreshed from it.
//!
//! Two routerd nodes in a mesh, a BIRD ToR (AS 65000, `graceful restart on`) at 10.0.0.254
//! originating 198.51.100.0/24 (its loopback holds 198.51.100.1), a global BGPPeer towards
//! it; a pod on node 1 pings 198.51.100.1. BIRD is SIGKILLed (the kernel closes its
//! sessions, as when a ToR's control plane crashes) and restarted 3 s later.
//!
//! Needs root; only namespaces this test creates are touched.
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

mod support;

use std::time::{Duration, Instant};

use agent::status::query_status;
use lab::pinger::Pinger;
use lab::{require, wait_for, Netns};
use support::{Cluster, RouteMonitor, POLL, T};

const FABRIC: &str = "198.51.100.0/24";
const FABRIC_HOST: &str = "198.51.100.1";

fn tor_config() -> String {
    format!(
        "router id 10.0.0.254;\nprotocol device {{}}\n\
         protocol static fabric {{ ipv4; route {FABRIC} blackhole; }}\n\
         template bgp node {{ local 10.0.0.254 as 65000; hold time 9; connect retry time 1;\n  \
           graceful restart on; ipv4 {{ import all; export where proto = \"fabric\"; }}; }}\n\
         protocol bgp n1 from node {{ neighbor 10.0.0.1 as 64512; }}\n\
         protocol bgp n2 from node {{ neighbor 10.0.0.2 as 64512; }}\n"
    )
}

fn fabric_route(c: &Cluster) -> Option<String> {
    let table = c.nodes[0]
        .ns
        .ip(&["route", "show", FABRIC, "proto", "80"])
        .ok()?;
    table.contains("via 10.0.0.254").then_some(table)
}

/// Times node 1's session to the ToR came up, from node 1's log.
fn tor_establishments(c: &Cluster) -> usize {
    std::fs::read_to_string(c.path().join("node-1.log"))
        .unwrap_or_default()
        .matches("session established peer=10.0.0.254 ")
        .count()
}

#[test]
fn tor_restart_keeps_its_routes_on_the_nodes() {
    require(&["ip", "bird", "birdc", "ping"]);
    let c = Cluster::start(
        "grt",
        2,
        "{cidr: 10.244.0.0/16, blockSize: 24, ipipMode: Never, vxlanMode: Never}",
    );
    let tor = Netns::new("grttor").unwrap();
    c.attach(&tor, "eth0", "10.0.0.254/24");
    tor.ip(&["addr", "add", &format!("{FABRIC_HOST}/32"), "dev", "lo"])
        .unwrap();
    // The ToR's way back to the pods, outside BIRD so that its restart does not touch it.
    tor.ip(&["route", "add", "10.244.0.0/16", "via", "10.0.0.1"])
        .unwrap();
    let mut bird =
        Some(lab::bird::Bird::start(&tor, &c.path().join("tor"), &tor_config()).unwrap());
    let peer = c.path().join("tor-peer.yaml");
    std::fs::write(
        &peer,
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\n\
         spec:\n  peerIP: 10.0.0.254\n  asNumber: 65000\n",
    )
    .unwrap();
    c.routectl(&["apply", "-f", peer.to_str().unwrap()]);
    for n in ["n1", "n2"] {
        bird.as_ref().unwrap().wait_established(n, T).unwrap();
    }
    wait_for("node 1 routes the fabric via the ToR", T, POLL, || {
        fabric_route(&c)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let (pod, pod_ip) = c.add_pod(0, "grtpod");
    wait_for("the pod reaches the fabric", T, POLL, || {
        pod.exec(&["ping", "-c", "1", "-W", "1", FABRIC_HOST]).ok()
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));

    let monitor = RouteMonitor::start(&c.nodes[0].ns);
    let ups_before = tor_establishments(&c);
    let pinger = Pinger::start(&pod, &pod_ip, FABRIC_HOST).unwrap();
    std::thread::sleep(Duration::from_secs(1));

    // The ToR's control plane dies and comes back.
    drop(bird.take());
    let killed = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        fabric_route(&c).is_some(),
        "node 1 dropped the ToR's route when BIRD died\n{}",
        c.logs()
    );
    std::thread::sleep(Duration::from_millis(2500));
    bird = Some(lab::bird::Bird::start(&tor, &c.path().join("tor-again"), &tor_config()).unwrap());
    for n in ["n1", "n2"] {
        bird.as_ref().unwrap().wait_established(n, T).unwrap();
    }
    wait_for("node 1's session to the ToR again", T, POLL, || {
        (tor_establishments(&c) > ups_before).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let back = killed.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let counts = pinger.finish().unwrap();
    let events = monitor.finish();
    println!(
        "ToR restart: session back after {back:?}; pod -> fabric {} sent, {} lost",
        counts.transmitted,
        counts.lost()
    );
    let deleted: Vec<&str> = events
        .lines()
        .filter(|l| l.starts_with("Deleted") && l.contains(FABRIC))
        .collect();
    assert!(
        deleted.is_empty(),
        "node 1 deleted the ToR's route during its restart: {deleted:?}\n{}",
        c.logs()
    );
    assert!(counts.transmitted > 300, "{counts:?}");
    assert_eq!(counts.lost(), 0, "{counts:?}\n{}", c.logs());
    // The route is the new session's, and the node is in sync.
    assert!(fabric_route(&c).is_some());
    let s = query_status(&c.nodes[0].socket, Duration::from_secs(5)).unwrap();
    let tor_session = s
        .sessions
        .iter()
        .find(|x| x.address.to_string() == "10.0.0.254")
        .unwrap();
    assert_eq!(tor_session.state, "Established", "{s:?}");
}

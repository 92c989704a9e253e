//! Hitless restart (RFC 4724, restarting speaker): three routerd nodes with a pod each and a
//! BIRD top-of-rack. routerd on node 1 is SIGKILLed and started again while every pod
//! pings every other at 10 ms: no ping is lost, and node 1's kernel routes of ours are never
//! deleted meanwhile (`ip monitor route` runs through it), because the kernel keeps
//! forwarding while routerd is gone, the peers keep its routes (graceful restart), and the
//! new routerd leaves the kernel routes alone until every peer has re-sent its routes.
//!
//! Needs root; only namespaces this test creates are touched.
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

mod support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use agent::status::{query_status, DaemonState};
use lab::{require, wait_for, Netns};
use support::{Cluster, RouteMonitor, POLL, T};

/// How long the pings run: the restart happens 2 s in.
const PING_SECS: u64 = 10;

fn ping(from: &Netns, to: &str) -> Child {
    from.command(&[
        "ping",
        "-n",
        "-q",
        "-i",
        "0.01",
        "-w",
        &PING_SECS.to_string(),
        to,
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap()
}

/// (transmitted, received) from ping's summary.
fn ping_counts(out: &str) -> Option<(u64, u64)> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    Some((nums.next()?.parse().ok()?, nums.next()?.parse().ok()?))
}

#[test]
fn sigkill_and_restart_of_routerd_loses_no_packet() {
    require(&["ip", "bird", "birdc", "ping"]);
    let mut c = Cluster::start("rst", 3, "{cidr: 10.244.0.0/16, blockSize: 26}");
    let tor = Netns::new("rstt").unwrap();
    let bird = c.bird_tor(&tor, 3);
    let manifest = c.path().join("tor-peer.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  \
         peerIP: 10.0.0.254\n  asNumber: 65000\n",
    )
    .unwrap();
    c.routectl(&["apply", "-f", manifest.to_str().unwrap()]);
    for i in 1..=3 {
        bird.wait_established(&format!("n{i}"), T).unwrap();
    }
    let pods: Vec<(Netns, String)> = (0..3).map(|i| c.add_pod(i, &format!("rstp{i}"))).collect();
    // Every pod reaches every other before the test starts.
    for (a, (ns, _)) in pods.iter().enumerate() {
        for (b, (_, ip)) in pods.iter().enumerate().filter(|(b, _)| *b != a) {
            wait_for(&format!("pod {a} -> pod {b}"), T, POLL, || {
                ns.exec(&["ping", "-c", "1", "-W", "1", ip]).ok()
            })
            .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
        }
    }
    let own_block = query_status(&c.nodes[0].socket, Duration::from_secs(5))
        .unwrap()
        .blocks[0]
        .clone();

    // Watch node 1's routes through the restart.
    let monitor = RouteMonitor::start(&c.nodes[0].ns);
    let mut pings = Vec::new();
    for (a, (ns, _)) in pods.iter().enumerate() {
        for (b, (_, ip)) in pods.iter().enumerate().filter(|(b, _)| *b != a) {
            pings.push((a, b, ping(ns, ip)));
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    c.kill_routerd(0);
    let restarted = Instant::now();
    c.start_routerd(0);
    // The new routerd comes back to Running (End-of-RIB from every peer).
    wait_for("node 1 running again", T, POLL, || {
        let s = query_status(&c.nodes[0].socket, Duration::from_secs(5)).ok()?;
        (s.state == DaemonState::Running).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    eprintln!(
        "routerd on node 1 running again {:?} after the restart",
        restarted.elapsed()
    );
    // The ToR kept node 1's block throughout and has it again from the new session.
    assert!(
        bird.route(&own_block).unwrap().is_some(),
        "{:?}",
        bird.routes()
    );

    let mut lost = Vec::new();
    for (a, b, child) in pings {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let (sent, received) = ping_counts(&text).unwrap_or_else(|| panic!("{text}"));
        // Asked for every 10 ms, ping manages about 60 a second here; a few hundred fewer
        // means it stalled on send errors (no route: about 12 a second).
        if sent < PING_SECS * 40 {
            lost.push(format!(
                "pod {a} -> pod {b}: only {sent} sent (no route to send on)"
            ));
        } else if received != sent {
            lost.push(format!(
                "pod {a} -> pod {b}: {} of {sent} lost",
                sent - received
            ));
        }
    }
    let events = monitor.finish();
    let deleted: Vec<&str> = events
        .lines()
        .filter(|l| l.starts_with("Deleted") && l.contains("proto 80"))
        .collect();
    assert!(
        lost.is_empty(),
        "{lost:?}\nroute events on node 1:\n{events}\n{}",
        c.logs()
    );
    assert!(
        deleted.is_empty(),
        "node 1's routes were deleted during the restart: {deleted:?}"
    );
}

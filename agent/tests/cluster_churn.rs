//! The cluster under churn: four routerd nodes on one segment and a BIRD top-of-rack, and a
//! pod on each of node 1 and node 2 that ping each other every 10 ms, both ways, counted from
//! the first step to the last. Meanwhile, as operators change clusters:
//! 1. a node joins (node 5): the mesh grows to it and its pod is reachable;
//! 2. 50 pods are added to node 3 at once (concurrent CNI ADDs), each reachable from node 1's
//!    pod, then removed at once: none of their routes is left;
//! 3. the ToR's BGPPeer moves from global to node 1 only: node 1's session stays up, the
//!    others' go;
//! 4. the IPPool's encapsulation changes from none to VXLAN: routes move to `vxlan.calico`;
//! 5. a node leaves (node 5's routerd stops, its Node is deleted): its blocks are gone from
//!    every other node's FIB within [`LEAVE_BOUND`];
//! 6. the mesh is switched off in favour of two route reflectors (nodes 3 and 4);
//! 7. one reflector is killed: the other carries on.
//!
//! Not one ping between the two pods may be lost. Each step prints how long it took to
//! converge and what it lost.
//!
//! Needs root; only namespaces this test creates are touched.
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

mod support;

use std::time::{Duration, Instant};

use agent::status::query_status;
use lab::pinger::{PingCounts, Pinger};
use lab::{require, wait_for, Netns};
use support::{Cluster, POLL, T};

/// How long a leaving node's blocks may stay in the other nodes' FIBs.
const LEAVE_BOUND: Duration = Duration::from_secs(5);

/// The number of pods added and removed at once.
const BURST: usize = 50;

const POOL: &str = "{cidr: 10.244.0.0/16, blockSize: 28, ipipMode: Never, vxlanMode: Never}";

fn ping_once(ns: &Netns, ip: &str) -> Option<()> {
    ns.exec(&["ping", "-c", "1", "-W", "1", ip])
        .ok()
        .map(|_| ())
}

/// Node `i`'s routes of ours (`ip route`, protocol 80).
fn our_routes(c: &Cluster, i: usize) -> String {
    c.nodes[i]
        .ns
        .ip(&["route", "show", "proto", "80"])
        .unwrap_or_default()
}

fn blocks(c: &Cluster, i: usize) -> Vec<String> {
    query_status(&c.nodes[i].socket, Duration::from_secs(5))
        .unwrap()
        .blocks
}

fn write(c: &Cluster, name: &str, text: &str) -> String {
    let path = c.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The two pingers' counts at the end of a step, and what they lost during it.
struct Steps {
    pingers: Vec<Pinger>,
    last: Vec<PingCounts>,
    started: Instant,
    report: Vec<String>,
}

impl Steps {
    fn step_done(&mut self, name: &str, converged: Duration) {
        let mut lost = Vec::new();
        for (p, last) in self.pingers.iter_mut().zip(self.last.iter_mut()) {
            let now = p.counts().unwrap();
            let during = now.since(*last);
            lost.push(format!(
                "{} -> {}: {}/{} lost",
                p.from,
                p.to,
                during.lost(),
                during.transmitted
            ));
            *last = now;
        }
        let line = format!(
            "step {name}: converged in {converged:?} ({:?} into the run); {}",
            self.started.elapsed(),
            lost.join(", ")
        );
        eprintln!("{line}");
        self.report.push(line);
    }
}

#[test]
fn pods_on_untouched_nodes_lose_nothing_while_the_cluster_changes() {
    require(&["ip", "bird", "birdc", "ping"]);
    let mut c = Cluster::start("chn", 4, POOL);
    let tor = Netns::new("chnt").unwrap();
    let bird = c.bird_tor(&tor, 5);
    let peer = |scope: &str| {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  \
             peerIP: 10.0.0.254\n  asNumber: 65000\n{scope}"
        )
    };
    let global = write(&c, "tor-global.yaml", &peer(""));
    c.routectl(&["apply", "-f", &global]);
    for i in 1..=4 {
        bird.wait_established(&format!("n{i}"), T).unwrap();
    }

    let (p1, ip1) = c.add_pod(0, "chnp1");
    let (p2, ip2) = c.add_pod(1, "chnp2");
    wait_for("pod 1 -> pod 2", T, POLL, || ping_once(&p1, &ip2))
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    wait_for("pod 2 -> pod 1", T, POLL, || ping_once(&p2, &ip1))
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let pingers = vec![
        Pinger::start(&p1, "pod on node-1", &ip2).unwrap(),
        Pinger::start(&p2, "pod on node-2", &ip1).unwrap(),
    ];
    let mut steps = Steps {
        last: vec![PingCounts::default(); pingers.len()],
        pingers,
        started: Instant::now(),
        report: Vec::new(),
    };
    std::thread::sleep(Duration::from_secs(1));
    steps.step_done("baseline", Duration::ZERO);

    // 1. A node joins.
    let t = Instant::now();
    let n5 = c.add_node("chn");
    c.wait_mesh();
    bird.wait_established("n5", T).unwrap();
    let (p5, ip5) = c.add_pod(n5, "chnp5");
    wait_for("pod 1 -> the new node's pod", T, POLL, || {
        ping_once(&p1, &ip5)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    wait_for("the new node's pod -> pod 2", T, POLL, || {
        ping_once(&p5, &ip2)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    steps.step_done("1 node-5 joins", t.elapsed());

    // 2. 50 pods on node 3 at once, then gone at once.
    let t = Instant::now();
    let burst: Vec<(Netns, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..BURST)
            .map(|k| {
                let c = &c;
                s.spawn(move || c.add_pod(2, &format!("chnb{k}")))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut addresses: Vec<String> = burst.iter().map(|(_, ip)| ip.clone()).collect();
    addresses.sort_unstable();
    addresses.dedup();
    assert_eq!(addresses.len(), BURST, "every pod has its own address");
    for (_, ip) in &burst {
        wait_for(&format!("pod 1 -> burst pod {ip}"), T, POLL, || {
            ping_once(&p1, ip)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    }
    let added = t.elapsed();
    std::thread::scope(|s| {
        for k in 0..BURST {
            let c = &c;
            s.spawn(move || {
                let name = format!("chnb{k}");
                let out = c.cni(2, "routerd-cni", "DEL", &name, None);
                assert!(out.status.success(), "DEL {name}: {out:?}");
            });
        }
    });
    drop(burst);
    let node3 = c.nodes[2].ns.ip(&["route", "show"]).unwrap();
    for ip in &addresses {
        assert!(
            !node3.contains(&format!("{ip} dev")),
            "node-3 still routes {ip} to a workload:\n{node3}"
        );
    }
    let check = c.routectl(&["ipam", "check"]);
    assert!(check.contains("found 0 problems"), "{check}");
    steps.step_done(
        &format!("2 {BURST} pods added ({added:?}) and removed"),
        t.elapsed(),
    );

    // 3. The ToR's BGPPeer moves from global to node 1 only.
    let t = Instant::now();
    // Each establishment of node-1's session to the ToR is one line of its log (status's
    // `since` is in whole seconds, computed from the session's age, and may move by one).
    let tor_sessions = |c: &Cluster| {
        std::fs::read_to_string(c.path().join("node-1.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("session established peer=10.0.0.254 "))
            .count()
    };
    let before = tor_sessions(&c);
    assert_eq!(before, 1, "node-1's session to the ToR came up once");
    let node1_only = write(&c, "tor-node1.yaml", &peer("  node: node-1\n"));
    c.routectl(&["apply", "-f", &node1_only]);
    for i in 2..=5 {
        wait_for(&format!("BIRD's n{i} down"), T, POLL, || {
            (!bird.is_established(&format!("n{i}"))).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    }
    assert!(bird.is_established("n1"));
    assert_eq!(
        tor_sessions(&c),
        before,
        "node-1's session to the ToR was reset"
    );
    steps.step_done("3 the ToR peer moves to node-1", t.elapsed());

    // 4. The pool's encapsulation: none -> VXLAN.
    let t = Instant::now();
    let vxlan = write(
        &c,
        "pool-vxlan.yaml",
        &format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: pool\nspec: {}\n",
            POOL.replace("vxlanMode: Never", "vxlanMode: Always")
        ),
    );
    c.routectl(&["apply", "-f", &vxlan]);
    let remote = blocks(&c, 1);
    for i in [0, 2, 3, 4] {
        wait_for(
            &format!("node-{} routes node-2 over VXLAN", i + 1),
            T,
            POLL,
            || {
                let routes = our_routes(&c, i);
                remote
                    .iter()
                    .all(|b| {
                        routes
                            .lines()
                            .any(|l| l.starts_with(b.as_str()) && l.contains("dev vxlan.calico"))
                    })
                    .then_some(())
            },
        )
        .unwrap_or_else(|e| {
            panic!(
                "{e}: {remote:?}\n{}\n{}\n{}",
                our_routes(&c, i),
                c.routectl(&["get", "nodes", "-o", "yaml"]),
                c.logs()
            )
        });
    }
    steps.step_done("4 pool encapsulation none -> vxlan", t.elapsed());

    // 5. node-5 leaves.
    let t = Instant::now();
    let gone = blocks(&c, n5);
    drop(p5);
    let out = c.cni(n5, "routerd-cni", "DEL", "chnp5", None);
    assert!(out.status.success(), "DEL chnp5: {out:?}");
    c.stop_routerd(n5);
    c.routectl(&["delete", "node", "node-5"]);
    for i in 0..4 {
        wait_for(
            &format!("node-5's blocks gone from node-{}", i + 1),
            LEAVE_BOUND,
            Duration::from_millis(50),
            || {
                let routes = our_routes(&c, i);
                gone.iter()
                    .all(|b| !routes.lines().any(|l| l.starts_with(&format!("{b} "))))
                    .then_some(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    }
    steps.step_done("5 node-5 leaves", t.elapsed());

    // 6. The mesh off, two reflectors (nodes 3 and 4) instead.
    let t = Instant::now();
    for name in ["node-3", "node-4"] {
        let mut node: serde_json::Value =
            serde_json::from_str(&c.routectl(&["get", "node", name, "-o", "json"])).unwrap();
        node["spec"]["bgp"]["routeReflectorClusterID"] = "244.0.0.1".into();
        let path = write(&c, &format!("{name}.json"), &node.to_string());
        c.routectl(&["apply", "-f", &path]);
    }
    let mesh_off = write(
        &c,
        "mesh-off.yaml",
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\n\
         spec:\n  nodeToNodeMeshEnabled: false\n",
    );
    c.routectl(&["apply", "-f", &mesh_off]);
    for i in [0, 1] {
        wait_for(
            &format!("node-{} peers with the reflectors only", i + 1),
            T,
            POLL,
            || {
                let s = query_status(&c.nodes[i].socket, Duration::from_secs(5)).ok()?;
                let nodes: Vec<String> = s
                    .sessions
                    .iter()
                    .filter(|x| x.address.to_string() != "10.0.0.254")
                    .map(|x| format!("{} {}", x.address, x.state))
                    .collect();
                (nodes == ["10.0.0.3 Established", "10.0.0.4 Established"]).then_some(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    }
    wait_for("pod 1 -> pod 2 through the reflectors", T, POLL, || {
        ping_once(&p1, &ip2)
    })
    .unwrap();
    steps.step_done("6 mesh -> two reflectors", t.elapsed());

    // 7. One reflector dies.
    let t = Instant::now();
    c.kill_routerd(2);
    wait_for("node-1's session to node-3 down", T, POLL, || {
        let s = query_status(&c.nodes[0].socket, Duration::from_secs(5)).ok()?;
        s.sessions
            .iter()
            .any(|x| x.address.to_string() == "10.0.0.3" && x.state != "Established")
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    std::thread::sleep(Duration::from_secs(2));
    steps.step_done("7 reflector node-3 killed", t.elapsed());

    let mut lost = Vec::new();
    for p in std::mem::take(&mut steps.pingers) {
        let (from, to) = (p.from.clone(), p.to.clone());
        let total = p.finish().unwrap();
        eprintln!(
            "{from} -> {to}: {} sent, {} lost",
            total.transmitted,
            total.lost()
        );
        // Asked for every 10 ms, ping manages about 60 a second here; far fewer means it
        // stalled on send errors (no route).
        let secs = steps.started.elapsed().as_secs();
        if total.transmitted < secs * 40 || total.lost() > 0 {
            lost.push(format!(
                "{from} -> {to}: {} lost of {} in {secs} s",
                total.lost(),
                total.transmitted
            ));
        }
    }
    assert!(
        lost.is_empty(),
        "{lost:?}\n{}\n{}",
        steps.report.join("\n"),
        c.logs()
    );
}

//! routerd nodes on a real etcd cluster (three members in namespaces of their own, beside
//! the nodes on one segment), under the faults a distributed datastore has: the leader
//! killed, a member killed and restarted under a burst of address assignments, and a node
//! cut off from etcd for 30 s while the history it missed is compacted. The datastore-level behaviour (contract, TLS, compaction)
//! is in `datastore/tests/datastore_etcd.rs`.

#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use agent::status::{query_status, NodeStatus, PeerType};
use lab::{require, wait_for, Netns};
use support::{Cluster, Store, ETCD_IPS, POLL, T};

const POOL: &str = "{cidr: 10.244.0.0/16, blockSize: 26}";

fn status(c: &Cluster, i: usize) -> Option<NodeStatus> {
    query_status(&c.nodes[i].socket, Duration::from_secs(5)).ok()
}

fn pings(pod: &Netns, ip: &str) -> bool {
    pod.exec_output(&["ping", "-c1", "-W1", ip])
        .is_ok_and(|o| o.status.success())
}

fn wait_ping(c: &Cluster, pod: &Netns, ip: &str) {
    wait_for(&format!("{} reaching {ip}", pod.name()), T, POLL, || {
        pings(pod, ip).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
}

/// `count` pings at 100 ms; panics unless every one is answered.
fn ping_without_loss(c: &Cluster, pod: &Netns, ip: &str, count: u32) {
    let out = pod
        .exec_output(&["ping", "-c", &count.to_string(), "-i", "0.1", "-W", "1", ip])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(" 0% packet loss"),
        "{text}\n{}",
        c.logs()
    );
}

/// Creates a global BGPPeer (nobody answers at its address: the session stays Active),
/// retrying while etcd elects a leader.
fn create_global_peer(c: &Cluster, name: &str, ip: &str) {
    let manifest = c.path().join(format!("{name}.yaml"));
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: {name}\nspec:\n  peerIP: {ip}\n  asNumber: 65000\n"
        ),
    )
    .unwrap();
    wait_for("routectl create to succeed", T, POLL, || {
        c.routectl_output(&["create", "-f", manifest.to_str().unwrap()])
            .status
            .success()
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
}

fn has_session(c: &Cluster, i: usize, ip: &str) -> bool {
    let name = PeerType::Global.session_name(ip.parse().unwrap());
    status(c, i).is_some_and(|s| s.sessions.iter().any(|x| x.name == name))
}

#[test]
fn three_nodes_on_etcd_route_pods_and_follow_changes_after_the_leader_dies() {
    require(&["ip", "ping", "etcd", "etcdctl"]);
    let mut c = Cluster::start_on("rea", 3, POOL, Store::Etcd);
    let (p1, ip1) = c.add_pod(0, "rea-p1");
    let (p3, ip3) = c.add_pod(2, "rea-p3");
    wait_ping(&c, &p1, &ip3);
    wait_ping(&c, &p3, &ip1);

    let etcd = c.etcd.as_mut().unwrap();
    let leader = etcd.leader().unwrap();
    etcd.kill_member(leader);
    // Forwarding never depended on the datastore.
    ping_without_loss(&c, &p1, &ip3, 20);
    // A change made after the failover reaches every node, through whichever member each
    // node's client moved to.
    create_global_peer(&c, "tor", "10.0.0.250");
    for i in 0..3 {
        wait_for(
            &format!("node-{} to configure the new peer", i + 1),
            T,
            POLL,
            || has_session(&c, i, "10.0.0.250").then_some(()),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
        let s = status(&c, i).unwrap();
        assert!(s.datastore.reachable, "{:?}", s.datastore);
        assert!(
            s.datastore.address.starts_with("etcd:"),
            "{:?}",
            s.datastore
        );
    }
    ping_without_loss(&c, &p3, &ip1, 10);
}

#[test]
fn concurrent_assignments_while_an_etcd_member_restarts_are_unique_and_consistent() {
    require(&["ip", "etcd", "etcdctl"]);
    let mut c = Cluster::start_on("rei", 3, POOL, Store::Etcd);
    let mut etcd = c.etcd.take().unwrap();
    let netns = Netns::new("rei-any").unwrap(); // the IPAM plugin never enters it
    let per_node = 50;
    let victim = etcd.leader().unwrap();
    let results: Vec<(String, Result<String, String>)> = std::thread::scope(|s| {
        let c = &c;
        let netns = &netns;
        let workers: Vec<_> = (0..3 * per_node)
            .map(|k| {
                s.spawn(move || {
                    let node = k % 3;
                    let container = format!("burst-{k}");
                    // A runtime retries a failed ADD; the plugin is idempotent per container.
                    let mut last = String::new();
                    for _ in 0..20 {
                        let out =
                            c.cni(node, "routerd-ipam", "ADD", &container, Some(&netns.path()));
                        if out.status.success() {
                            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                            let ip = v["ips"][0]["address"].as_str().unwrap().to_string();
                            return (container, Ok(ip));
                        }
                        last = String::from_utf8_lossy(&out.stdout).into_owned();
                        std::thread::sleep(Duration::from_millis(300));
                    }
                    (container, Err(last))
                })
            })
            .collect();
        // While they run: kill the leader, restart it a little later.
        std::thread::sleep(Duration::from_millis(300));
        etcd.kill_member(victim);
        std::thread::sleep(Duration::from_millis(1500));
        etcd.start_member(victim).unwrap();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    c.etcd = Some(etcd);
    let failed: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(failed.is_empty(), "ADDs that never succeeded: {failed:?}");
    let addresses: BTreeSet<&str> = results.iter().map(|(_, r)| r.as_deref().unwrap()).collect();
    assert_eq!(
        addresses.len(),
        3 * per_node,
        "an address was handed out twice"
    );
    // One handle per container (plus none leaked), and the records agree with each other.
    let etcd = c.etcd.as_mut().unwrap();
    etcd.wait_healthy(Duration::from_secs(30)).unwrap();
    let keys = etcd
        .etcdctl(
            0,
            &["get", "--prefix", "--keys-only", "/routerd/v1/IPAMHandle/"],
        )
        .unwrap();
    let burst = keys.lines().filter(|k| k.contains("burst-")).count();
    assert_eq!(burst, 3 * per_node, "{keys}");
    let check = c.routectl(&["ipam", "check"]);
    assert!(check.contains("found 0 problems"), "{check}");
}

#[test]
fn a_node_cut_off_from_etcd_keeps_routing_reports_it_and_catches_up() {
    require(&["ip", "ping", "nft", "etcd", "etcdctl"]);
    let c = Cluster::start_on("rep", 3, POOL, Store::Etcd);
    let (p1, ip1) = c.add_pod(0, "rep-p1");
    let (p3, ip3) = c.add_pod(2, "rep-p3");
    wait_ping(&c, &p1, &ip3);
    let before = status(&c, 2).unwrap();
    let since: Vec<u64> = before.sessions.iter().map(|s| s.since_unix).collect();

    // Silently drop everything node-3 sends to the etcd members (a partition: no refusal,
    // no reset, the packets just vanish).
    let node3 = &c.nodes[2].ns;
    let members = ETCD_IPS.join(", ");
    node3
        .exec(&[
            "nft",
            &format!(
                "add table inet partition; add chain inet partition out {{ type filter hook output priority 0; }}; add rule inet partition out ip daddr {{ {members} }} drop"
            ),
        ])
        .unwrap();
    let cut = Instant::now();
    wait_for(
        "node-3 to report its datastore unreachable",
        T,
        POLL,
        || status(&c, 2).filter(|s| !s.datastore.reachable).map(|_| ()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    assert!(
        c.metrics(2).contains("routerd_datastore_reachable 0"),
        "{}",
        c.metrics(2)
    );
    // A change made during the partition reaches the others, not node-3.
    create_global_peer(&c, "late", "10.0.0.251");
    wait_for("node-1 to configure the new peer", T, POLL, || {
        has_session(&c, 0, "10.0.0.251").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    // And the history node-3 missed is compacted away (by hand, as an operator would), so
    // catching up cannot replay it: node-3 must relist.
    let etcd = c.etcd.as_ref().unwrap();
    let status_json = etcd
        .etcdctl(0, &["endpoint", "status", "-w", "json"])
        .unwrap();
    let revision = serde_json::from_str::<serde_json::Value>(&status_json).unwrap()[0]["Status"]
        ["header"]["revision"]
        .as_u64()
        .unwrap();
    etcd.etcdctl(0, &["compact", &revision.to_string()])
        .unwrap();
    // Routes and sessions stay for the whole 30 s.
    while cut.elapsed() < Duration::from_secs(30) {
        ping_without_loss(&c, &p1, &ip3, 10);
        ping_without_loss(&c, &p3, &ip1, 5);
    }
    let during = status(&c, 2).unwrap();
    assert!(!during.datastore.reachable);
    assert!(!has_session(&c, 2, "10.0.0.251"));
    for (s, t) in during.sessions.iter().zip(&since) {
        assert_eq!(s.state, "Established", "{s:?}");
        // `since` is whole seconds derived from the session's age at each query, so it
        // may move by one between two queries without a reset.
        assert!(
            s.since_unix.abs_diff(*t) <= 1,
            "session {} flapped: since {} then {}",
            s.name,
            t,
            s.since_unix
        );
    }

    node3.exec(&["nft", "delete table inet partition"]).unwrap();
    wait_for("node-3 to catch up", T, POLL, || {
        status(&c, 2)
            .filter(|s| s.datastore.reachable)
            .filter(|_| has_session(&c, 2, "10.0.0.251"))
            .map(|_| ())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    assert!(c.metrics(2).contains("routerd_datastore_reachable 1"));
    ping_without_loss(&c, &p1, &ip3, 10);
}

//! A real container runtime calls our CNI plugins: podman (CNI backend, runc) runs
//! containers whose network is the routerd conflist, inside the node namespaces of a
//! two-node routerd cluster. Containers on different nodes ping each other over plain
//! routing, VXLAN Always and IP-in-IP Always (the userspace fallback on this kernel);
//! `podman rm` frees the address and the route; `routectl get workloadendpoints` shows them;
//! routerd SIGKILLed and restarted leaves the containers' traffic and routes as they were;
//! 20 containers started at once get 20 addresses, all released after removal.
//!
//! Needs root, podman, runc, busybox-static (scripts/setup.sh); only namespaces made here.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use lab::podman::Podman;
use lab::{require, wait_for};
use support::{plugin_dir, Cluster, POLL, T};

fn conflist(datastore: &str, node: &str) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0", "name": "routerd",
        "plugins": [{"type": "routerd-cni", "datastore": datastore, "nodename": node,
                     "ipam": {"type": "routerd-ipam"}}]
    })
    .to_string()
}

fn runtimes(c: &Cluster) -> Vec<Podman> {
    c.nodes
        .iter()
        .map(|n| {
            Podman::new(
                &c.path().join(format!("podman-{}", n.name)),
                &n.ns,
                &plugin_dir(),
                "routerd",
                &conflist(&c.datastore, &n.name),
            )
            .unwrap()
        })
        .collect()
}

fn ping_eventually(p: &Podman, from: &str, to: &str, c: &Cluster) {
    wait_for(&format!("{from} -> {to}"), T, POLL, || {
        p.ping(from, to, 1).ok()
    })
    .unwrap_or_else(|e| {
        let routes: Vec<String> = c
            .nodes
            .iter()
            .map(|n| format!("{}:\n{}", n.name, n.ns.ip(&["route"]).unwrap_or_default()))
            .collect();
        panic!("{e}\n{}\n{}", routes.join("\n"), c.logs())
    });
}

/// `ip route` lines without the kernel's nexthop ids (`nhid N`), which are not ours to keep.
fn routes_of_text(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            let mut words: Vec<&str> = l.split_whitespace().collect();
            if let Some(i) = words.iter().position(|w| *w == "nhid") {
                words.drain(i..(i + 2).min(words.len()));
            }
            words.join(" ")
        })
        .filter(|l| !l.is_empty())
        .collect()
}

fn routes_of(c: &Cluster, node: usize) -> Vec<String> {
    routes_of_text(&c.nodes[node].ns.ip(&["route"]).unwrap())
}

/// Two containers, one per node, reach each other; removal frees address and route.
fn across_nodes(tag: &str, pool: &str, device: Option<&str>) {
    require(&["ip", "ping", "podman", "runc", "nsenter", "busybox"]);
    let c = Cluster::start(tag, 2, pool);
    let pm = runtimes(&c);
    pm[0].start("a", "routerd").unwrap();
    pm[1].start("b", "routerd").unwrap();
    let a = pm[0].ipv4("a").unwrap();
    let b = pm[1].ipv4("b").unwrap();
    assert_ne!(a, b);
    ping_eventually(&pm[0], "a", &b, &c);
    pm[1].ping("b", &a, 3).unwrap();
    if let Some(device) = device {
        let route = c.nodes[0].ns.ip(&["route", "show", "match", &b]).unwrap();
        assert!(route.contains(&format!("dev {device}")), "{route}");
    }
    let weps = c.routectl(&["get", "workloadendpoints", "-o", "wide"]);
    assert!(
        weps.contains(&format!("{a}/32")) && weps.contains(&format!("{b}/32")),
        "{weps}"
    );
    assert!(weps.contains("node-1") && weps.contains("node-2"), "{weps}");

    pm[1].remove("b").unwrap();
    let host = c.nodes[1]
        .ns
        .ip(&["route", "show", &format!("{b}/32")])
        .unwrap();
    assert!(host.trim().is_empty(), "route left behind: {host}");
    let weps = c.routectl(&["get", "workloadendpoints"]);
    assert!(!weps.contains(&format!("{b}/32")), "{weps}");
    let check = c.routectl(&["ipam", "check"]);
    assert!(check.contains("found 0 problems"), "{check}");
    pm[0].remove("a").unwrap();
}

#[test]
fn containers_reach_each_other_over_plain_routing() {
    across_nodes("cpn", "{cidr: 10.244.0.0/16, blockSize: 26}", None);
}

#[test]
fn containers_reach_each_other_over_vxlan_always() {
    across_nodes(
        "cpv",
        "{cidr: 10.244.0.0/16, blockSize: 26, vxlanMode: Always}",
        Some("vxlan.calico"),
    );
}

#[test]
fn containers_reach_each_other_over_ipip_always() {
    across_nodes(
        "cpi",
        "{cidr: 10.244.0.0/16, blockSize: 26, ipipMode: Always}",
        Some("tunl0"),
    );
}

/// SIGKILL routerd while containers run: they keep pinging; after the restart the routes
/// and endpoints are as before. A container created while routerd is down is networked.
#[test]
fn containers_keep_their_network_across_a_routerd_kill() {
    require(&["ip", "ping", "podman", "runc", "nsenter", "busybox"]);
    let mut c = Cluster::start("cpk", 2, "{cidr: 10.244.0.0/16, blockSize: 26}");
    let pm = runtimes(&c);
    pm[0].start("a", "routerd").unwrap();
    pm[1].start("b", "routerd").unwrap();
    let a = pm[0].ipv4("a").unwrap();
    let b = pm[1].ipv4("b").unwrap();
    ping_eventually(&pm[0], "a", &b, &c);
    let routes_before = c.nodes[0].ns.ip(&["route"]).unwrap();
    let weps_before = c.routectl(&["get", "workloadendpoints", "-o", "wide"]);

    c.kill_routerd(0);
    // Forwarding goes on without the daemon: the kernel keeps the routes.
    pm[0].ping("a", &b, 3).unwrap();
    pm[1].ping("b", &a, 3).unwrap();
    // A pod created while routerd is down gets its network (the plugins reach the
    // datastore themselves).
    pm[0].start("late", "routerd").unwrap();
    let late = pm[0].ipv4("late").unwrap();
    pm[0].ping("late", &a, 1).unwrap();

    c.start_routerd(0);
    c.wait_mesh();
    ping_eventually(&pm[1], "b", &late, &c);
    pm[0].ping("a", &b, 3).unwrap();
    // After the restart (and its full FIB reconcile) the node's routes are as before, plus
    // the late pod's.
    std::thread::sleep(Duration::from_secs(4));
    let routes_after = routes_of(&c, 0);
    for line in routes_of_text(&routes_before) {
        assert!(
            routes_after.contains(&line),
            "lost {line:?}:\n{routes_after:?}"
        );
    }
    assert!(
        routes_after
            .iter()
            .any(|l| l.starts_with(&format!("{late} dev cali"))),
        "{routes_after:?}"
    );
    let weps_after = c.routectl(&["get", "workloadendpoints", "-o", "wide"]);
    for line in weps_before.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            weps_after.contains(line.trim_end()),
            "lost {line:?}:\n{weps_after}"
        );
    }
}

/// 20 containers at once on one node: 20 distinct addresses; all released after removal.
#[test]
fn twenty_containers_at_once_get_distinct_addresses() {
    require(&["ip", "ping", "podman", "runc", "nsenter", "busybox"]);
    let c = Cluster::start("cp20", 1, "{cidr: 10.244.0.0/16, blockSize: 26}");
    let pm = std::sync::Arc::new(runtimes(&c).remove(0));
    let threads: Vec<_> = (0..20)
        .map(|i| {
            let pm = pm.clone();
            std::thread::spawn(move || {
                let name = format!("c{i}");
                pm.start(&name, "routerd").unwrap();
                pm.ipv4(&name).unwrap()
            })
        })
        .collect();
    let ips: std::collections::BTreeSet<String> =
        threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(ips.len(), 20, "{ips:?}");
    let weps = c.routectl(&["get", "workloadendpoints"]);
    assert_eq!(
        weps.lines().filter(|l| l.contains("/32")).count(),
        20,
        "{weps}"
    );
    for i in 0..20 {
        pm.remove(&format!("c{i}")).unwrap();
    }
    let weps = c.routectl(&["get", "workloadendpoints"]);
    assert!(!weps.contains("/32"), "{weps}");
    let show = c.routectl(&["ipam", "show"]);
    let check = c.routectl(&["ipam", "check"]);
    assert!(check.contains("found 0 problems"), "{check}");
    let handles = datastore::open(&c.datastore)
        .unwrap()
        .list("IPAMHandle")
        .unwrap()
        .records;
    assert!(
        handles.iter().all(|h| h.name.contains("tunnel-addr")),
        "handles left: {:?}\n{show}",
        handles.iter().map(|h| &h.name).collect::<Vec<_>>()
    );
}

/// The source address an echo request from `container` to `target` arrives with at
/// `outside`, seen by tcpdump there.
fn arriving_source(p: &Podman, container: &str, target: &str, outside: &lab::Netns) -> String {
    let mut capture = outside
        .command(&[
            "timeout",
            "20",
            "tcpdump",
            "-l",
            "-n",
            "-i",
            "eth0",
            "-c",
            "1",
            "icmp[icmptype] == icmp-echo",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // tcpdump is listening once it says so on stderr; ping until it has seen one.
    let mut stderr = std::io::BufReader::new(capture.stderr.take().unwrap());
    let mut said = String::new();
    for _ in 0..5 {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        said += &line;
        if line.contains("listening") {
            break;
        }
    }
    assert!(said.contains("listening"), "tcpdump: {said}");
    for _ in 0..10 {
        let _ = p.ping(container, target, 1);
        if capture.try_wait().unwrap().is_some() {
            break;
        }
    }
    let out = capture.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // "12:00:00.000000 IP 10.99.0.1 > 10.99.0.2: ICMP echo request, ..."
    text.split_whitespace()
        .skip_while(|w| *w != "IP")
        .nth(1)
        .unwrap_or_else(|| panic!("no echo request captured: {text}"))
        .to_string()
}

/// natOutgoing: a pod reaching a host outside every pool arrives with the node's address;
/// once the pool says `natOutgoing: false` (applied live) it arrives with its own.
#[test]
fn nat_outgoing_masquerades_only_traffic_leaving_the_pools() {
    require(&[
        "ip", "ping", "podman", "runc", "nsenter", "busybox", "tcpdump", "nft",
    ]);
    let c = Cluster::start(
        "cpnat",
        1,
        "{cidr: 10.244.0.0/16, blockSize: 26, natOutgoing: true}",
    );
    let outside = lab::Netns::new("cpnatout").unwrap();
    lab::veth(&c.nodes[0].ns, "out0", &outside, "eth0").unwrap();
    c.nodes[0]
        .ns
        .ip(&["addr", "add", "10.99.0.1/24", "dev", "out0"])
        .unwrap();
    outside
        .ip(&["addr", "add", "10.99.0.2/24", "dev", "eth0"])
        .unwrap();
    // The outside host can route back to the pods (for the natOutgoing: false case).
    outside
        .ip(&["route", "add", "10.244.0.0/16", "via", "10.99.0.1"])
        .unwrap();
    let pm = runtimes(&c);
    pm[0].start("a", "routerd").unwrap();
    let a = pm[0].ipv4("a").unwrap();
    wait_for("routerd's nat table", T, POLL, || {
        let t = c.nodes[0]
            .ns
            .exec(&["nft", "list", "table", "inet", "routerd-nat"])
            .ok()?;
        t.contains("masquerade").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    assert_eq!(
        arriving_source(&pm[0], "a", "10.99.0.2", &outside),
        "10.99.0.1"
    );
    // Traffic to another pod address is never masqueraded: the rule excludes the pools.
    let table = c.nodes[0]
        .ns
        .exec(&["nft", "list", "table", "inet", "routerd-nat"])
        .unwrap();
    assert!(table.contains("ip daddr != @pools-v4"), "{table}");

    let manifest = c.path().join("nonat.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: pool\n\
         spec: {cidr: 10.244.0.0/16, blockSize: 26, natOutgoing: false}\n",
    )
    .unwrap();
    c.routectl(&["apply", "-f", manifest.to_str().unwrap()]);
    wait_for("the nat table to go", T, POLL, || {
        c.nodes[0]
            .ns
            .exec(&["nft", "list", "table", "inet", "routerd-nat"])
            .is_err()
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    assert_eq!(arriving_source(&pm[0], "a", "10.99.0.2", &outside), a);
}

/// Borrowing: a pool with one /26 block per node (a /25 for two nodes) and more containers
/// on node-1 than its block holds. The 65th container's address comes from node-2's block;
/// node-1 advertises it as a /32, node-2 (the block's owner, which blackholes the block)
/// routes it to node-1, and the container is reachable from node-2's.
#[test]
fn a_borrowed_address_is_reachable_from_the_other_node() {
    require(&["ip", "ping", "podman", "runc", "nsenter", "busybox"]);
    let c = Cluster::start("cpb", 2, "{cidr: 10.244.0.0/25, blockSize: 26}");
    let mut pm = runtimes(&c);
    let node2 = pm.pop().unwrap();
    let node1 = std::sync::Arc::new(pm.pop().unwrap());
    node2.start("b", "routerd").unwrap();
    let b = node2.ipv4("b").unwrap();
    // 65 containers, eight starting at a time.
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let p = node1.clone();
            std::thread::spawn(move || {
                (0..65)
                    .filter(|i| i % 8 == w)
                    .map(|i| {
                        let name = format!("a{i}");
                        p.start(&name, "routerd").unwrap();
                        (name.clone(), p.ipv4(&name).unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let containers: Vec<(String, String)> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let distinct: std::collections::BTreeSet<&String> =
        containers.iter().map(|(_, ip)| ip).collect();
    assert_eq!(distinct.len(), 65);
    let borrowed = c.routectl(&["ipam", "show", "--show-borrowed"]);
    let lent: Vec<&(String, String)> = containers
        .iter()
        .filter(|(_, ip)| borrowed.contains(&format!("| {ip} ")))
        .collect();
    assert_eq!(lent.len(), 1, "one address is borrowed:\n{borrowed}");
    assert!(
        borrowed.contains("node-1") && borrowed.contains("node-2"),
        "{borrowed}"
    );
    let (lent_name, lent_ip) = lent[0].clone();
    // The owner routes the /32 to the borrower (longest match over its own blackhole).
    wait_for("node-2's route to the borrowed address", T, POLL, || {
        let r = c.nodes[1].ns.ip(&["route", "show", &lent_ip]).ok()?;
        r.contains("via 10.0.0.1").then_some(())
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}\n{}",
            c.nodes[1].ns.ip(&["route"]).unwrap_or_default(),
            c.logs()
        )
    });
    ping_eventually(&node2, "b", &lent_ip, &c);
    node1.ping(&lent_name, &b, 2).unwrap();
    // And a container in node-1's own block, for contrast.
    let own = &containers.iter().find(|(_, ip)| *ip != lent_ip).unwrap().1;
    node2.ping("b", own, 1).unwrap();
}

/// A plugin killed in the middle of ADD (here: its addresses assigned and its veth made,
/// nothing recorded) leaks nothing once the runtime's DEL for the container comes.
#[test]
fn a_killed_add_is_reclaimed_by_the_next_del() {
    require(&["ip", "ping", "podman", "runc", "nsenter", "busybox"]);
    let c = Cluster::start("cpx", 1, "{cidr: 10.244.0.0/16, blockSize: 26}");
    let dir = plugin_dir();
    let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "routerd", "type": "routerd-cni",
        "datastore": c.datastore, "nodename": "node-1", "ipam": {"type": "routerd-ipam"}})
    .to_string();
    let pod = lab::Netns::new("cpxpod").unwrap();
    let call = |bin: &str, command: &str| {
        use std::io::Write;
        let mut child = c.nodes[0]
            .ns
            .command(&[dir.join(bin).to_str().unwrap()])
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", "killed")
            .env("CNI_IFNAME", "eth0")
            .env("CNI_NETNS", pod.path())
            .env("CNI_PATH", &dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{bin} {command}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The state a SIGKILL after IPAM and the veth leaves: an address, a veth, no endpoint.
    let ipam: serde_json::Value = serde_json::from_str(&call("routerd-ipam", "ADD")).unwrap();
    assert!(ipam["ips"][0]["address"].is_string(), "{ipam}");
    let veth = cni::workload::WorkloadId::new(None, "killed", "eth0", "node-1").host_veth_name();
    c.nodes[0]
        .ns
        .ip(&[
            "link",
            "add",
            &veth,
            "type",
            "veth",
            "peer",
            "name",
            "tmpkilled",
        ])
        .unwrap();
    let handles = || {
        datastore::open(&c.datastore)
            .unwrap()
            .list("IPAMHandle")
            .unwrap()
            .records
            .into_iter()
            .filter(|h| h.name.contains("killed"))
            .count()
    };
    assert_eq!(handles(), 1);
    call("routerd-cni", "DEL");
    assert_eq!(handles(), 0, "the address is released");
    assert!(
        c.nodes[0].ns.ip(&["link", "show", &veth]).is_err(),
        "the veth is gone"
    );
    assert!(c.routectl(&["ipam", "check"]).contains("found 0 problems"));
}

/// A route of ours to a workload interface that no endpoint explains (a leak) is removed by
/// routerd's reconcile after a restart; the routes of real containers stay.
#[test]
fn a_leaked_workload_route_does_not_survive_a_restart() {
    require(&["ip", "ping", "podman", "runc", "nsenter", "busybox"]);
    let mut c = Cluster::start("cpl", 1, "{cidr: 10.244.0.0/16, blockSize: 26}");
    let pm = runtimes(&c);
    pm[0].start("a", "routerd").unwrap();
    let a = pm[0].ipv4("a").unwrap();
    let other = lab::Netns::new("cplother").unwrap();
    lab::veth(&c.nodes[0].ns, "calileak0000000", &other, "eth0").unwrap();
    c.nodes[0]
        .ns
        .ip(&[
            "route",
            "add",
            "10.244.9.9/32",
            "dev",
            "calileak0000000",
            "proto",
            "80",
            "scope",
            "link",
        ])
        .unwrap();
    c.kill_routerd(0);
    c.start_routerd(0);
    wait_for("the leaked route to go", T, POLL, || {
        let r = c.nodes[0].ns.ip(&["route", "show", "10.244.9.9/32"]).ok()?;
        r.trim().is_empty().then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let r = c.nodes[0]
        .ns
        .ip(&["route", "show", &format!("{a}/32")])
        .unwrap();
    assert!(r.contains("dev cali"), "the container's route stays: {r}");
    pm[0].ping("a", "10.0.0.1", 1).unwrap();
}

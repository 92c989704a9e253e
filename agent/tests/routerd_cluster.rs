//! Issue 4's acceptance: three `routerd` in three network namespaces, one embedded (file)
//! datastore, form a full iBGP mesh and program each other's blocks into their kernels; a
//! `BGPPeer` applied with `routectl` brings up a session to a BIRD top-of-rack without
//! touching the mesh sessions; `routectl get nodes --output=wide` and `routectl node status`
//! show it all; SIGTERM leaves the kernel routes in place.
//!
//! Real processes (the built `routerd` and `routectl` binaries, BIRD 2) in namespaces this
//! test creates; nothing outside them is touched.
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use agent::status::{query_status, NodeStatus, PeerType};
use lab::bird::Bird;
use lab::{lan, require, wait_for, Daemon, Netns};

const ROUTERD: &str = env!("CARGO_BIN_EXE_routerd");
const ROUTECTL: &str = env!("CARGO_BIN_EXE_routectl");
const T: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

struct Node {
    name: String,
    ip: String,
    ns: Netns,
    socket: PathBuf,
    daemon: Option<Daemon>,
}

fn routectl(datastore: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(ROUTECTL);
    c.arg("--datastore").arg(datastore).args(args);
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn routectl_ok(datastore: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = routectl(datastore, args, stdin);
    assert!(
        out.status.success(),
        "routectl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn start_routerd(node: &Node, datastore: &str, dir: &Path) -> Daemon {
    let log = File::create(dir.join(format!("{}.log", node.name))).unwrap();
    let cidr = format!("{}/24", node.ip);
    let socket = node.socket.to_string_lossy().into_owned();
    let child = node
        .ns
        .command(&[
            ROUTERD,
            "--node-name",
            &node.name,
            "--node-ip",
            &cidr,
            "--datastore",
            datastore,
            "--control-socket",
            &socket,
            "--health-listen",
            "127.0.0.1:9099",
            "--log-level",
            "debug",
        ])
        .env("ROUTERD_FIB_SETTLE", "2s")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Daemon::from_child(child)
}

fn status(node: &Node) -> Option<NodeStatus> {
    query_status(&node.socket, Duration::from_secs(5)).ok()
}

fn established(s: &NodeStatus, name: &str) -> bool {
    s.sessions
        .iter()
        .any(|x| x.name == name && x.state == "Established")
}

/// Whether `table` (`ip route` output) routes `prefix` via `gateway` (with or without a
/// kernel nexthop object: `10.244.1.0/24 nhid 12 via 10.0.0.2 dev eth0`).
fn routes_via(table: &str, prefix: &str, gateway: &str) -> bool {
    table.lines().any(|l| {
        l.split_whitespace().next() == Some(prefix) && l.contains(&format!("via {gateway} "))
    })
}

/// One HTTP GET to routerd's health server inside the node's namespace (bash's /dev/tcp:
/// no client to install).
fn http_get(node: &Node, path: &str) -> String {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/9099; printf 'GET {path} HTTP/1.1\\r\\nHost: routerd\\r\\n\\r\\n' >&3; timeout 5 cat <&3"
    );
    node.ns.exec(&["bash", "-c", &script]).unwrap_or_default()
}

fn routes(node: &Node) -> String {
    node.ns
        .ip(&["route", "show", "proto", "80"])
        .unwrap_or_default()
}

#[test]
fn three_routerd_mesh_then_a_tor_peer_applied_with_routectl() {
    require(&["ip", "bird", "birdc"]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("datastore");
    let datastore = format!("file:{}", store.display());

    // The cluster's intent, written as an operator would, before any daemon runs.
    routectl_ok(
        &datastore,
        &["create", "-f", "-"],
        Some(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: default-ipv4\n\
             spec:\n  cidr: 10.244.0.0/16\n  blockSize: 24\n  natOutgoing: true\n",
        ),
    );

    // One L2 segment: three nodes and the ToR.
    let tor_ns = Netns::new("rdtor").unwrap();
    let mut nodes: Vec<Node> = (1..=3)
        .map(|i| Node {
            name: format!("node-{i}"),
            ip: format!("10.0.0.{i}"),
            ns: Netns::new(&format!("rd{i}")).unwrap(),
            socket: dir.path().join(format!("node-{i}.ctl")),
            daemon: None,
        })
        .collect();
    let cidrs: Vec<String> = nodes.iter().map(|n| format!("{}/24", n.ip)).collect();
    let mut members: Vec<(&Netns, &str, &[&str])> = Vec::new();
    let tor_addr = ["10.0.0.254/24"];
    members.push((&tor_ns, "eth0", &tor_addr));
    let node_addrs: Vec<[&str; 1]> = cidrs.iter().map(|c| [c.as_str()]).collect();
    for (n, a) in nodes.iter().zip(&node_addrs) {
        members.push((&n.ns, "eth0", a));
    }
    let _switch = lan("rd", &members).unwrap();

    for node in &mut nodes {
        node.daemon = Some(start_routerd(node, &datastore, dir.path()));
    }

    // Full mesh: every node has an Established Mesh_ session to each other node.
    for node in &nodes {
        let others: Vec<String> = nodes
            .iter()
            .filter(|o| o.name != node.name)
            .map(|o| PeerType::NodeMesh.session_name(o.ip.parse().unwrap()))
            .collect();
        wait_for(&format!("{}'s mesh sessions", node.name), T, POLL, || {
            let s = status(node)?;
            others.iter().all(|o| established(&s, o)).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}; status: {:?}", status(node)));
    }

    // Each node blackholes its own block and routes the other two via their owners.
    let blocks: Vec<(String, String)> = nodes
        .iter()
        .map(|n| {
            let s = status(n).unwrap();
            assert_eq!(
                s.blocks.len(),
                1,
                "{} owns one block: {:?}",
                n.name,
                s.blocks
            );
            (n.ip.clone(), s.blocks[0].clone())
        })
        .collect();
    let distinct: std::collections::BTreeSet<&String> = blocks.iter().map(|(_, b)| b).collect();
    assert_eq!(distinct.len(), 3, "blocks are distinct: {blocks:?}");
    for node in &nodes {
        wait_for(&format!("{}'s kernel routes", node.name), T, POLL, || {
            let table = routes(node);
            blocks
                .iter()
                .all(|(owner, block)| {
                    if *owner == node.ip {
                        table.contains(&format!("blackhole {block}"))
                    } else {
                        routes_via(&table, block, owner)
                    }
                })
                .then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}; routes of {}: {}", node.name, routes(node)));
    }
    // Health and metrics, on each node's own loopback (127.0.0.1:9099 in its namespace).
    for node in &nodes {
        let ready = http_get(node, "/readiness");
        assert!(ready.starts_with("HTTP/1.1 200"), "{}: {ready}", node.name);
        assert!(http_get(node, "/liveness").starts_with("HTTP/1.1 200"));
        let metrics = http_get(node, "/metrics");
        for other in nodes.iter().filter(|o| o.name != node.name) {
            let line = format!(
                "routerd_bgp_session_established{{peer=\"{}\",name=\"{}\",type=\"node-to-node mesh\"}} 1",
                other.ip,
                PeerType::NodeMesh.session_name(other.ip.parse().unwrap())
            );
            assert!(
                metrics.contains(&line),
                "{}: no {line:?} in {metrics}",
                node.name
            );
        }
        assert!(metrics.contains("routerd_fib_in_sync 1"), "{metrics}");
    }
    let mesh_since: Vec<Vec<(String, u64)>> = nodes
        .iter()
        .map(|n| {
            status(n)
                .unwrap()
                .sessions
                .iter()
                .map(|s| (s.name.clone(), s.since_unix))
                .collect()
        })
        .collect();

    // `since` has one-second resolution: wait long enough that a reset during the rest of the
    // test would move it by more than the rounding.
    std::thread::sleep(Duration::from_secs(3));

    // The ToR: BIRD, AS 65000, configured for the three nodes.
    let mut conf = String::from(
        "router id 10.0.0.254;\nprotocol device {}\nprotocol direct { ipv4; }\n\
         protocol static defgw { ipv4; route 0.0.0.0/0 blackhole; }\n\
         template bgp node { local 10.0.0.254 as 65000; hold time 9; connect retry time 1;\n\
           ipv4 { import all; export all; }; }\n",
    );
    for n in &nodes {
        conf += &format!(
            "protocol bgp n{} from node {{ neighbor {} as 64512; }}\n",
            n.ip.replace('.', "_"),
            n.ip
        );
    }
    let bird = Bird::start(&tor_ns, &dir.path().join("tor"), &conf).unwrap();

    // Applied with routectl: a global BGPPeer to the ToR.
    let out = routectl_ok(
        &datastore,
        &["apply", "-f", "-"],
        Some(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: rack-tor\n\
             spec:\n  peerIP: 10.0.0.254\n  asNumber: 65000\n",
        ),
    );
    assert!(out.contains("BGPPeer"), "{out}");
    for n in &nodes {
        let name = format!("n{}", n.ip.replace('.', "_"));
        bird.wait_established(&name, T).unwrap();
        wait_for(&format!("{}'s Global_ session", n.name), T, POLL, || {
            established(&status(n)?, "Global_10_0_0_254").then_some(())
        })
        .unwrap();
    }
    // The ToR learned every block from its owner.
    for (owner, block) in &blocks {
        wait_for(&format!("ToR route to {block}"), T, POLL, || {
            let r = bird.route(block).ok()??;
            (r.attr("BGP.next_hop") == Some(owner.as_str())).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}; {:?}", bird.routes()));
    }
    // And the nodes learned the ToR's default route.
    for n in &nodes {
        wait_for(&format!("{}'s default route", n.name), T, POLL, || {
            routes_via(&routes(n), "default", "10.0.0.254").then_some(())
        })
        .unwrap();
    }
    // The ToR also advertises the shared segment; the kernel's connected route stays.
    for n in &nodes {
        let table = n.ns.ip(&["route", "show", "10.0.0.0/24"]).unwrap();
        assert!(
            table.contains("proto kernel") && !table.contains("proto 80"),
            "{}: connected route replaced: {table}",
            n.name
        );
    }
    // The mesh sessions were not touched: same sessions, same "since".
    for (n, before) in nodes.iter().zip(&mesh_since) {
        let now = status(n).unwrap();
        for (name, since) in before {
            let s = now.sessions.iter().find(|s| &s.name == name).unwrap();
            assert_eq!(s.state, "Established", "{} {name}", n.name);
            assert!(
                s.since_unix.abs_diff(*since) <= 1,
                "{} {name} was reset: since {} -> {}",
                n.name,
                since,
                s.since_unix
            );
        }
    }

    // What the operator sees.
    let wide = routectl_ok(&datastore, &["get", "nodes", "--output=wide"], None);
    for n in &nodes {
        assert!(
            wide.lines().any(|l| l.contains(&n.name)
                && l.contains("(64512)")
                && l.contains(&format!("{}/24", n.ip))),
            "get nodes -o wide lacks {}: {wide}",
            n.name
        );
    }
    let socket = nodes[0].socket.to_string_lossy().into_owned();
    let st = routectl_ok(
        &datastore,
        &["--control-socket", &socket, "node", "status"],
        None,
    );
    for needle in [
        "10.0.0.254",
        "global",
        "10.0.0.2",
        "node-to-node mesh",
        "Established",
    ] {
        assert!(st.contains(needle), "node status lacks {needle}: {st}");
    }
    // The route query, as `birdc show route for`: node 0 holds node 1's block as a path
    // from node 1 (the mesh), best, and its own block as local.
    let (owner, other_block) = &blocks[1];
    let net: ipnet::Ipv4Net = other_block.parse().unwrap();
    let address = std::net::Ipv4Addr::from(u32::from(net.network()) + 9).to_string();
    let paths = routectl_ok(
        &datastore,
        &["--control-socket", &socket, "node", "routes", &address],
        None,
    );
    assert!(
        paths.starts_with(&format!("{other_block}\n"))
            && paths.contains(&format!("from {owner} [best]")),
        "node routes {address}: {paths}"
    );
    let (_, own_block) = &blocks[0];
    let own = routectl_ok(
        &datastore,
        &["--control-socket", &socket, "node", "routes", own_block],
        None,
    );
    assert!(
        own.contains("local [best]"),
        "node routes {own_block}: {own}"
    );

    // A BGPConfiguration applied live: prefixAdvertisements tag every block the nodes
    // originate (re-advertised with the new communities, no session reset).
    routectl_ok(
        &datastore,
        &["apply", "-f", "-"],
        Some(
            "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\n\
             spec:\n  communities:\n  - name: pods\n    value: \"64512:100\"\n\
             \x20 prefixAdvertisements:\n  - cidr: 10.244.0.0/16\n    communities: [pods, \"65000:7\"]\n",
        ),
    );
    for (_, block) in &blocks {
        wait_for(
            &format!("communities on the ToR's {block}"),
            T,
            POLL,
            || {
                let r = bird.route(block).ok()??;
                let c = r.attr("BGP.community")?;
                (c.contains("(64512,100)") && c.contains("(65000,7)")).then_some(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}; {:?}", bird.routes()));
    }
    for n in &nodes {
        let name = format!("n{}", n.ip.replace('.', "_"));
        bird.wait_established(&name, T).unwrap();
    }
    for (n, before) in nodes.iter().zip(&mesh_since) {
        let now = status(n).unwrap();
        for (name, since) in before {
            let s = now.sessions.iter().find(|s| &s.name == name).unwrap();
            assert!(
                s.state == "Established" && s.since_unix.abs_diff(*since) <= 1,
                "{} {name} was reset by the BGPConfiguration: {s:?}",
                n.name
            );
        }
    }

    // SIGTERM: the daemon exits, its kernel routes stay.
    let before = routes(&nodes[0]);
    let mut d = nodes[0].daemon.take().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_for("routerd to exit", Duration::from_secs(15), POLL, || {
        (!d.is_running()).then_some(())
    })
    .unwrap();
    let after = routes(&nodes[0]);
    for (_, block) in &blocks {
        assert!(
            after.contains(block.as_str()),
            "{block} gone after SIGTERM: {after}"
        );
    }
    assert!(!before.is_empty());

    // Graceful restart (RFC 4724): the stopped node closed its sessions without a
    // NOTIFICATION, so the other nodes and the ToR keep its block (stale) meanwhile.
    let (ip0, block0) = blocks
        .iter()
        .find(|(owner, _)| *owner == nodes[0].ip)
        .cloned()
        .unwrap();
    let mesh0 = PeerType::NodeMesh.session_name(ip0.parse().unwrap());
    for n in &nodes[1..] {
        wait_for(
            &format!("{}'s session to the stopped node", n.name),
            T,
            POLL,
            || (!established(&status(n)?, &mesh0)).then_some(()),
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_secs(3));
    let kept = |n: &Node| routes_via(&routes(n), &block0, &ip0);
    for n in &nodes[1..] {
        assert!(kept(n), "{}: {block0} withdrawn: {}", n.name, routes(n));
    }
    let r = bird.route(&block0).unwrap();
    assert!(
        r.as_ref()
            .is_some_and(|r| r.attr("BGP.next_hop") == Some(ip0.as_str())),
        "the ToR dropped {block0}: {r:?}"
    );
    // It comes back: every session up again, and the block was routed throughout.
    nodes[0].daemon = Some(start_routerd(&nodes[0], &datastore, dir.path()));
    wait_for("the restarted node's sessions", T, POLL, || {
        for n in &nodes[1..] {
            assert!(kept(n), "{}: {block0} withdrawn during the restart", n.name);
        }
        let s = status(&nodes[0])?;
        (s.sessions.len() == 3 && s.sessions.iter().all(|x| x.state == "Established")).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}; {:?}", status(&nodes[0])));
    for n in &nodes[1..] {
        assert!(kept(n), "{}: {block0} gone after the restart", n.name);
    }
    let table = routes(&nodes[0]);
    assert!(table.contains(&format!("blackhole {block0}")), "{table}");
}

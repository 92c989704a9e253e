//! The lab: a cluster of `routerd` nodes in network namespaces, in the shapes operators run,
//! operated with `routectl`, with pods made by a real container runtime, and checked.
//!
//! `scripts/lab.sh [options]` (or `cargo build --release -p agent --bins --examples && cargo
//! build --release -p cni --bins && target/release/examples/lab [options]`):
//!
//! ```text
//! --topology mesh|reflectors|tor|per-node   how nodes learn routes (default mesh)
//! --encap none|ipip|vxlan                   the IPPool's encapsulation (default vxlan)
//! --crosssubnet                             encapsulate only across the router
//! --ipv6                                    dual stack: an IPv6 pool (VXLAN where the
//!                                           IPv4 pool encapsulates), pods with both families
//! --racks 1|2                               one segment, or two joined by a router (default 2)
//! --nodes N                                 routerd nodes (default 4)
//! --datastore file|etcd                     embedded, or a three-member etcd cluster
//! --keep                                    leave it up until Ctrl-C
//! ```
//!
//! See [`shape`] for the addressing and what each topology configures. The lab then checks,
//! failing with a non-zero exit when anything is off: every node has exactly its expected
//! sessions Established; each node's kernel holds exactly the expected routes of our
//! protocol (own blocks blackholed, remote blocks via the right next hop and device, pods'
//! /32s and /128s to their veths, nothing else); every pod reaches every other pod, in both
//! families (a matrix is printed); the ToR reaches every pod; and, on two racks, a capture
//! on rack 1's segment shows pod traffic encapsulated exactly where the pool says (Always:
//! everywhere; CrossSubnet: only across the router; none: nowhere). It prints what it
//! built, `routectl get nodes -o wide`, `routectl node status` and the routes of node-1.
//! A run that was killed is cleaned up by the next one. Needs root and the packages of
//! `scripts/setup.sh`; only namespaces it creates are touched.

mod earlier;
mod expect;
mod shape;

use std::collections::BTreeMap;
use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent::status::query_status;
use anyhow::{bail, Context, Result};
use lab::bird::Bird;
use lab::etcd::EtcdCluster;
use lab::podman::Podman;
use lab::{lan, require, wait_for, Daemon, Netns};

use expect::{canonical_routes, expected_routes, Assigned};
use shape::{Encap, Shape, Topology};

const TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);
/// etcd members live on rack 1's segment.
const ETCD_HOSTS: [u8; 3] = [201, 202, 203];

struct Node {
    index: usize,
    name: String,
    ns: Netns,
    socket: PathBuf,
    _daemon: Daemon,
}

struct Options {
    shape: Shape,
    keep: bool,
    on_etcd: bool,
}

fn parse_args() -> Result<Options> {
    let mut shape = Shape {
        topology: Topology::Mesh,
        encap: Encap::Vxlan,
        cross_subnet: false,
        ipv6: false,
        racks: 2,
        nodes: 4,
    };
    let (mut keep, mut on_etcd) = (false, false);
    let mut args = std::env::args().skip(1);
    let number = |v: Option<String>, flag: &str| -> Result<usize> {
        v.with_context(|| format!("{flag} needs a number"))?
            .parse()
            .with_context(|| format!("{flag} needs a number"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--topology" => shape.topology = Topology::parse(&args.next().unwrap_or_default())?,
            "--encap" => shape.encap = Encap::parse(&args.next().unwrap_or_default())?,
            "--crosssubnet" => shape.cross_subnet = true,
            "--ipv6" => shape.ipv6 = true,
            "--racks" => shape.racks = number(args.next(), "--racks")?.min(255) as u8,
            "--nodes" => shape.nodes = number(args.next(), "--nodes")?,
            "--keep" => keep = true,
            "--datastore" => match args.next().as_deref() {
                Some("file") => on_etcd = false,
                Some("etcd") => on_etcd = true,
                other => bail!("--datastore takes file or etcd, not {other:?}"),
            },
            other => bail!(
                "unknown argument {other}; usage: lab [--topology mesh|reflectors|tor|per-node] \
                 [--encap none|ipip|vxlan] [--crosssubnet] [--ipv6] [--racks 1|2] [--nodes N] \
                 [--datastore file|etcd] [--keep]"
            ),
        }
    }
    shape.validate()?;
    Ok(Options {
        shape,
        keep,
        on_etcd,
    })
}

/// The built binaries next to this example (`target/<profile>/{routerd,routectl}`).
fn binary(name: &str) -> Result<PathBuf> {
    let path = lab::target_binary(name)?;
    if !path.exists() {
        bail!(
            "{} not found: build with `cargo build --release -p agent --bins --examples` and \
             `cargo build --release -p cni --bins`",
            path.display()
        );
    }
    Ok(path)
}

/// Runs routectl against the lab's datastore (in `at` when the datastore is only reachable
/// from the namespaces).
struct Routectl<'a> {
    bin: PathBuf,
    at: Option<&'a Netns>,
    datastore: String,
}

impl Routectl<'_> {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut c = match self.at {
            Some(ns) => ns.command(&[&self.bin.to_string_lossy()]),
            None => Command::new(&self.bin),
        };
        c.arg("--datastore")
            .arg(&self.datastore)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().context("running routectl")?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use std::io::Write;
            pipe.write_all(text.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "routectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs and echoes, as an operator's terminal would show it.
    fn show(&self, args: &[&str], stdin: Option<&str>) -> Result<()> {
        let out = self.run(args, stdin)?;
        println!("$ routectl {}\n{}", args.join(" "), out.trim_end());
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let Options {
        shape,
        keep,
        on_etcd,
    } = parse_args()?;
    require(&[
        "ip", "bird", "birdc", "ping", "podman", "runc", "nsenter", "busybox", "tcpdump",
    ]);
    if on_etcd {
        require(&["etcd", "etcdctl"]);
    }
    let cleaned = earlier::clean_up();
    if cleaned > 0 {
        println!("lab: removed what {cleaned} earlier run(s) left behind");
    }
    let started = Instant::now();
    let routerd = binary("routerd")?;
    let dir = std::env::temp_dir().join(format!("routerd-lab-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let tag = earlier::TAG;

    // The underlay: the router, the racks' segments, the nodes (and etcd on rack 1).
    let router = Netns::new(&format!("{tag}rtr"))?;
    let node_ns: Vec<Netns> = (1..=shape.nodes)
        .map(|i| Netns::new(&format!("{tag}node{i}")))
        .collect::<Result<_>>()?;
    let etcd_ns: Vec<Netns> = if on_etcd {
        (1..=3)
            .map(|i| Netns::new(&format!("{tag}etcd{i}")))
            .collect::<Result<_>>()?
    } else {
        Vec::new()
    };
    let mut switches = Vec::new();
    for rack in 1..=shape.racks {
        let mut addrs: Vec<(usize, Vec<String>)> = Vec::new();
        for i in (1..=shape.nodes).filter(|&i| shape.rack_of(i) == rack) {
            let mut a = vec![format!("{}/24", shape.node_ip(i))];
            if shape.ipv6 {
                a.push(format!("{}/64", shape.node_ip6(i)));
            }
            addrs.push((i, a));
        }
        let mut router_addrs = vec![format!("{}/24", Shape::gateway(rack))];
        if shape.ipv6 {
            router_addrs.push(format!("{}/64", Shape::gateway6(rack)));
        }
        let etcd_addrs: Vec<String> = if rack == 1 {
            ETCD_HOSTS
                .iter()
                .take(etcd_ns.len())
                .map(|h| format!("10.0.1.{h}/24"))
                .collect()
        } else {
            Vec::new()
        };
        let refs: Vec<Vec<&str>> = addrs
            .iter()
            .map(|(_, a)| a.iter().map(String::as_str).collect())
            .collect();
        let router_refs: Vec<&str> = router_addrs.iter().map(String::as_str).collect();
        let router_if = format!("rack{rack}");
        let mut members: Vec<(&Netns, &str, &[&str])> = vec![(&router, &router_if, &router_refs)];
        for ((i, _), r) in addrs.iter().zip(&refs) {
            members.push((&node_ns[i - 1], "eth0", r));
        }
        let etcd_refs: Vec<[&str; 1]> = etcd_addrs.iter().map(|a| [a.as_str()]).collect();
        for (ns, a) in etcd_ns.iter().zip(&etcd_refs) {
            members.push((ns, "eth0", a));
        }
        switches.push(lan(&format!("{tag}rack{rack}"), &members)?);
    }
    router.ip(&[
        "addr",
        "add",
        &format!("{}/32", shape::TOR_LOOPBACK),
        "dev",
        "lo",
    ])?;
    router.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    if shape.ipv6 {
        router.ip(&[
            "addr",
            "add",
            &format!("{}/128", shape::TOR_LOOPBACK6),
            "dev",
            "lo",
        ])?;
        router.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
    }
    for (i, ns) in (1..=shape.nodes).zip(&node_ns) {
        let rack = shape.rack_of(i);
        ns.ip(&[
            "route",
            "add",
            "default",
            "via",
            &Shape::gateway(rack).to_string(),
        ])?;
        if shape.ipv6 {
            ns.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &Shape::gateway6(rack).to_string(),
            ])?;
        }
    }
    for ns in &etcd_ns {
        ns.ip(&["route", "add", "default", "via", "10.0.1.254"])?;
    }
    let etcd = if on_etcd {
        let members = etcd_ns
            .into_iter()
            .zip(ETCD_HOSTS)
            .map(|(ns, h)| (ns, format!("10.0.1.{h}")))
            .collect();
        Some(EtcdCluster::in_namespaces(members, false)?)
    } else {
        None
    };
    let ctl = Routectl {
        bin: binary("routectl")?,
        at: etcd.as_ref().map(|_| &router),
        datastore: match &etcd {
            Some(etcd) => format!("etcd:{}", etcd.endpoints()),
            None => format!("file:{}", dir.join("datastore").display()),
        },
    };
    println!(
        "lab: {} — {} routerd nodes on {} rack(s) (10.0.<rack>.0/24{}) joined by a router at \
         .254{}; datastore {}",
        shape.describe(),
        shape.nodes,
        shape.racks,
        if shape.ipv6 {
            ", fd00:0:<rack>::/64"
        } else {
            ""
        },
        if shape.topology.has_tor() {
            " that is also the BIRD ToR (AS 65000)"
        } else {
            ""
        },
        ctl.datastore
    );
    ctl.show(&["create", "-f", "-"], Some(&shape.base_manifests()))?;
    let tor = match shape.bird_config() {
        Some(conf) => Some(Bird::start(&router, &dir.join("tor"), &conf)?),
        None => None,
    };

    // The daemons.
    let mut nodes = Vec::new();
    for (i, ns) in (1..=shape.nodes).zip(node_ns) {
        let name = format!("node-{i}");
        let socket = dir.join(format!("{name}.ctl"));
        let log = File::create(dir.join(format!("{name}.log")))?;
        let ip = format!("{}/24", shape.node_ip(i));
        let ip6 = if shape.ipv6 {
            format!("{}/64", shape.node_ip6(i))
        } else {
            "none".into()
        };
        let child = ns
            .command(&[
                &routerd.to_string_lossy(),
                "--node-name",
                &name,
                "--node-ip",
                &ip,
                "--node-ipv6",
                &ip6,
                "--datastore",
                &ctl.datastore,
                "--control-socket",
                &socket.to_string_lossy(),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting routerd")?;
        nodes.push(Node {
            index: i,
            name,
            ns,
            socket,
            _daemon: Daemon::from_child(child),
        });
    }
    let log_of = |n: &Node| dir.join(format!("{}.log", n.name)).display().to_string();
    for n in &nodes {
        wait_for(&format!("{}'s routerd", n.name), TIMEOUT, POLL, || {
            query_status(&n.socket, Duration::from_secs(5)).ok()
        })
        .with_context(|| format!("see {}", log_of(n)))?;
    }

    // The topology's own resources, applied as an operator would.
    match shape.topology {
        Topology::Mesh | Topology::Tor => {}
        Topology::Reflectors => {
            for i in shape.reflectors() {
                let patch = format!(
                    "{{\"spec\":{{\"bgp\":{{\"routeReflectorClusterID\":\"{}\"}}}}}}",
                    shape::CLUSTER_ID
                );
                ctl.show(&["patch", "node", &format!("node-{i}"), "-p", &patch], None)?;
            }
        }
        Topology::PerNode => {
            for i in 1..=shape.nodes {
                let label = format!("rack=rack{}", shape.rack_of(i));
                ctl.show(&["label", "node", &format!("node-{i}"), &label], None)?;
            }
        }
    }
    let peers = shape.peer_manifests();
    if !peers.is_empty() {
        ctl.show(&["apply", "-f", "-"], Some(&peers))?;
    }

    // Exactly the expected sessions, Established.
    for n in &nodes {
        let want = shape.expected_sessions(n.index);
        wait_for(&format!("{}'s sessions", n.name), TIMEOUT, POLL, || {
            let s = query_status(&n.socket, Duration::from_secs(5)).ok()?;
            let mut up: Vec<IpAddr> = s
                .sessions
                .iter()
                .filter(|x| x.state == "Established")
                .map(|x| x.address)
                .collect();
            up.sort();
            (up == want && s.sessions.len() == want.len()).then_some(())
        })
        .with_context(|| {
            format!(
                "{} should have exactly {want:?} Established; see {}",
                n.name,
                log_of(n)
            )
        })?;
    }
    println!(
        "lab: every node has exactly its {} sessions Established",
        shape.topology.as_str()
    );

    // Pods, as a cluster makes them: the CNI plugins installed on each node (the step a
    // DaemonSet's init container runs), then podman starting a container on the routerd
    // network; the plugins assign its addresses from the node's blocks and plumb it.
    let plugins = binary("routerd-cni")?;
    let mut runtimes = Vec::new();
    for n in &nodes {
        let root = dir.join(format!("cni-{}", n.name));
        let (bin_dir, conf_dir) = (root.join("opt/cni/bin"), root.join("etc/cni/net.d"));
        lab::run(
            Command::new(&plugins)
                .arg("install")
                .arg("--bin-dir")
                .arg(&bin_dir)
                .arg("--conf-dir")
                .arg(&conf_dir)
                .args(["--datastore", &ctl.datastore, "--nodename", &n.name]),
        )?;
        let conflist = std::fs::read_to_string(conf_dir.join("10-routerd.conflist"))?;
        let podman = Podman::new(&root.join("podman"), &n.ns, &bin_dir, "routerd", &conflist)?;
        podman.start(&format!("pod-{}", n.name), "routerd")?;
        runtimes.push(podman);
    }
    let assigned = read_assigned(&ctl, &shape)?;
    for (i, pods) in &assigned.pods {
        let addrs: Vec<String> = pods.iter().map(|(a, _)| a.to_string()).collect();
        println!("lab: node-{i} runs pod-node-{i} at {}", addrs.join(", "));
    }
    let families = if shape.ipv6 { 2 } else { 1 };
    for n in 1..=shape.nodes {
        let got = assigned.pods.get(&n).map_or(0, Vec::len);
        if got != families {
            bail!("pod-node-{n} has {got} addresses, expected {families} (one per family)");
        }
    }

    // Exactly the expected routes in every kernel.
    for n in &nodes {
        let want = expected_routes(&shape, n.index, &assigned);
        let t = Instant::now();
        let result = wait_for(&format!("{}'s routes", n.name), TIMEOUT, POLL, || {
            (our_routes(&n.ns, shape.ipv6).ok()? == want).then_some(())
        });
        if result.is_err() {
            let got = our_routes(&n.ns, shape.ipv6)?;
            bail!(
                "{}'s kernel does not hold exactly the expected routes after {:?}\n  \
                 missing: {:?}\n  unexpected: {:?}\n  see {}",
                n.name,
                t.elapsed(),
                want.difference(&got).collect::<Vec<_>>(),
                got.difference(&want).collect::<Vec<_>>(),
                log_of(n)
            );
        }
    }
    println!("lab: every node's kernel holds exactly the expected routes (blackholed own blocks, remote blocks via their next hop and device, pods to their veths)");

    // Every pod reaches every other pod, each family.
    print_matrix(&shape, &assigned, &runtimes)?;
    if let Some(tor) = &tor {
        for pods in assigned.pods.values() {
            for (ip, _) in pods {
                let ip = ip.to_string();
                wait_for(
                    &format!("the ToR reaches {ip}"),
                    Duration::from_secs(20),
                    POLL,
                    || router.exec(&["ping", "-c", "1", "-W", "1", &ip]).ok(),
                )?;
            }
        }
        println!("lab: the ToR reaches every pod\n");
        println!("ToR (BIRD, AS 65000) routes:\n{}", tor.cmd("show route")?);
    }
    if shape.racks == 2 {
        check_encapsulation(&shape, &assigned, &runtimes, &switches[0], &dir)?;
    }

    println!(
        "\n$ routectl get nodes -o wide\n{}",
        ctl.run(&["get", "nodes", "-o", "wide"], None)?
    );
    let socket = nodes[0].socket.to_string_lossy().into_owned();
    println!(
        "$ routectl node status   # on node-1\n{}",
        ctl.run(&["--control-socket", &socket, "node", "status"], None)?
    );
    println!("node-1 kernel routes:\n{}", nodes[0].ns.ip(&["route"])?);
    if shape.ipv6 {
        println!("{}", nodes[0].ns.ip(&["-6", "route"])?);
    }
    if let Some(etcd) = &etcd {
        println!(
            "$ etcdctl endpoint status --cluster -w table\n{}",
            etcd.etcdctl(0, &["endpoint", "status", "--cluster", "-w", "table"])?
        );
    }
    println!(
        "lab: {} passed every check in {:.1} s",
        shape.describe(),
        started.elapsed().as_secs_f64()
    );

    if keep {
        println!(
            "lab: running; namespaces {} (router), {} ...; datastore {}; Ctrl-C to tear down",
            router.name(),
            nodes[0].ns.name(),
            ctl.datastore
        );
        wait_for_signal();
    }
    println!("lab: tearing down");
    drop(runtimes);
    drop(nodes);
    drop(tor);
    drop(etcd);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The pods' addresses and interfaces (their WorkloadEndpoints) and the nodes' VXLAN tunnel
/// addresses, from the datastore.
fn read_assigned(ctl: &Routectl, shape: &Shape) -> Result<Assigned> {
    let index = |name: &str| -> Option<usize> {
        name.strip_prefix("node-")?
            .parse()
            .ok()
            .filter(|i| (1..=shape.nodes).contains(i))
    };
    let mut assigned = Assigned::default();
    let weps: serde_json::Value =
        serde_json::from_str(&ctl.run(&["get", "workloadendpoints", "-o", "json"], None)?)?;
    for wep in weps["items"].as_array().into_iter().flatten() {
        let spec = &wep["spec"];
        let Some(n) = spec["node"].as_str().and_then(index) else {
            continue;
        };
        let dev = spec["interfaceName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for net in spec["ipNetworks"].as_array().into_iter().flatten() {
            let net: ipnet::IpNet = net.as_str().unwrap_or_default().parse()?;
            assigned
                .pods
                .entry(n)
                .or_default()
                .push((net.addr(), dev.clone()));
        }
    }
    let nodes: serde_json::Value =
        serde_json::from_str(&ctl.run(&["get", "nodes", "-o", "json"], None)?)?;
    for node in nodes["items"].as_array().into_iter().flatten() {
        let Some(n) = node["metadata"]["name"].as_str().and_then(index) else {
            continue;
        };
        let addr = |key: &str| node["spec"][key].as_str().and_then(|s| s.parse().ok());
        assigned.vteps.insert(
            n,
            (addr("ipv4VXLANTunnelAddr"), addr("ipv6VXLANTunnelAddr")),
        );
    }
    Ok(assigned)
}

/// The node's routes of our protocol (80), canonical, both families when `ipv6`.
fn our_routes(ns: &Netns, ipv6: bool) -> Result<std::collections::BTreeSet<String>> {
    let mut text = ns.ip(&["route", "show", "proto", "80"])?;
    if ipv6 {
        text += &ns.ip(&["-6", "route", "show", "proto", "80"])?;
    }
    Ok(canonical_routes(&text))
}

/// Pings from every pod to every other pod (each family) and prints the matrix; fails on
/// the first pair that stays unreachable for 20 s.
fn print_matrix(shape: &Shape, assigned: &Assigned, runtimes: &[Podman]) -> Result<()> {
    let mut rows: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for from in 1..=shape.nodes {
        for to in 1..=shape.nodes {
            let cell = if from == to {
                "-"
            } else {
                for (ip, _) in assigned.pods.get(&to).into_iter().flatten() {
                    let target = ip.to_string();
                    wait_for(
                        &format!("pod-node-{from} -> {target}"),
                        Duration::from_secs(20),
                        POLL,
                        || {
                            runtimes[from - 1]
                                .ping(&format!("pod-node-{from}"), &target, 1)
                                .ok()
                        },
                    )?;
                }
                if shape.ipv6 {
                    "v4+v6"
                } else {
                    "ok"
                }
            };
            rows.entry(from).or_default().push(cell);
        }
    }
    let width = 7;
    let mut out = format!("{:<14}", "from \\ to");
    for to in 1..=shape.nodes {
        out += &format!("{:<width$}", format!("pod-{to}"));
    }
    for (from, cells) in rows {
        out += &format!("\n{:<14}", format!("pod-node-{from}"));
        for c in cells {
            out += &format!("{c:<width$}");
        }
    }
    println!("lab: pod-to-pod reachability (ping from each pod to each other pod):\n{out}");
    Ok(())
}

/// Captures rack 1's segment while pods ping across it and counts, per pair, pod packets
/// sent natively and encapsulated ones (IP-in-IP is IP protocol 4, VXLAN UDP 4789): each
/// pair must show only the kind its pool asks for.
fn check_encapsulation(
    shape: &Shape,
    assigned: &Assigned,
    runtimes: &[Podman],
    rack1: &Netns,
    dir: &Path,
) -> Result<()> {
    let first_of_rack2 = (1..=shape.nodes)
        .find(|&i| shape.rack_of(i) == 2)
        .context("rack 2 has no node")?;
    let mut pairs = vec![(1, first_of_rack2)];
    if shape.rack_of(2) == 1 {
        pairs.insert(0, (1, 2));
    }
    for (a, b) in pairs {
        let file = dir.join(format!("capture-{a}-{b}.pcap"));
        let file_s = file.to_string_lossy().into_owned();
        let capture = Daemon::from_child(
            rack1
                .command(&["tcpdump", "-i", "br0", "-nn", "-U", "-q", "-w", &file_s])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting tcpdump")?,
        );
        wait_for("tcpdump to start", Duration::from_secs(10), POLL, || {
            file.exists().then_some(())
        })?;
        // The file exists a moment before the capture is attached.
        std::thread::sleep(Duration::from_secs(1));
        for (ip, _) in assigned.pods.get(&b).into_iter().flatten() {
            runtimes[a - 1].ping(&format!("pod-node-{a}"), &ip.to_string(), 3)?;
        }
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("kill")
            .args(["-INT", &capture.pid().to_string()])
            .status();
        std::thread::sleep(Duration::from_millis(300));
        drop(capture);
        // Packets, not lines: tcpdump prints a VXLAN packet's inner frame on a line of its
        // own, and only a packet's first line starts with its (epoch) timestamp.
        let count = |filter: &str| -> Result<usize> {
            let out = Command::new("tcpdump")
                .args(["-nn", "-tt", "-r", &file_s, filter])
                .stderr(Stdio::null())
                .output()?;
            Ok(String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
                .count())
        };
        let mut native_filter = format!("(ip and net {})", shape::POOL_V4);
        if shape.ipv6 {
            native_filter += &format!(" or (ip6 and net {})", shape::POOL_V6);
        }
        let native = count(&native_filter)?;
        let encapsulated = count("(ip proto 4) or (udp port 4789)")?;
        let expect_encap = shape.encapsulated(a, b);
        let where_ = if shape.rack_of(a) == shape.rack_of(b) {
            "same rack"
        } else {
            "across the router"
        };
        println!(
            "lab: capture on rack 1, pod-node-{a} <-> pod-node-{b} ({where_}): {native} native pod \
             packets, {encapsulated} encapsulated"
        );
        let ok = if expect_encap {
            native == 0 && encapsulated > 0
        } else {
            native > 0 && encapsulated == 0
        };
        if !ok {
            bail!(
                "pod-node-{a} <-> pod-node-{b} ({where_}) should be {} on the underlay (see {file_s})",
                if expect_encap {
                    "encapsulated only"
                } else {
                    "native only"
                }
            );
        }
    }
    Ok(())
}

/// Waits for SIGINT or SIGTERM.
fn wait_for_signal() {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    if set.thread_block().is_ok() {
        let _ = set.wait();
    }
}

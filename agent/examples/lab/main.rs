//! The lab: a cluster of `routerd` nodes and a BIRD top-of-rack in network namespaces,
//! operated with `routectl`, as an operator would run calico-node on real machines.
//!
//! `scripts/lab.sh` (or `cargo build --release -p agent --bins --examples &&
//! target/release/examples/lab [--nodes N] [--datastore file|etcd] [--keep]`) builds, on one
//! L2 segment 10.0.0.0/24:
//! - N nodes (default 3) `node-1..node-N` at 10.0.0.1.., each running `routerd` on one shared
//!   datastore, AS 64512 inherited from the default: the embedded one (a directory), or with
//!   `--datastore etcd` a three-member etcd cluster in namespaces of its own at
//!   10.0.0.201-203 (routectl then runs in the ToR's namespace, which reaches it);
//! - one pod per node: `routerd-cni install` puts the CNI plugins and the conflist in the
//!   node's CNI directories, then podman (CNI backend) runs a busybox container on the
//!   `routerd` network; the plugins give it an address from the node's block, its veth and
//!   host route, and record its WorkloadEndpoint;
//! - a top-of-rack router running BIRD 2, AS 65000, originating a default route.
//!
//! Then, as an operator would: `routectl create` an IPPool, start the daemons, watch the
//! mesh come up, `routectl apply` a global BGPPeer for the ToR, and check: every session
//! Established, every node routes every other block through its owner, every pod pings every
//! other pod, the ToR reaches every pod. It prints `routectl get nodes -o wide`, `routectl
//! node status` of node-1, `routectl ipam show --show-blocks` and the kernel tables, then
//! tears everything down (with `--keep`, only after Ctrl-C). Needs root and the packages of
//! `scripts/setup.sh`; only namespaces it creates are touched.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use agent::status::{query_status, PeerType};
use anyhow::{bail, Context, Result};
use lab::bird::Bird;
use lab::etcd::EtcdCluster;
use lab::podman::Podman;
use lab::{lan, require, wait_for, Daemon, Netns};

const TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

struct Node {
    name: String,
    ip: String,
    ns: Netns,
    socket: PathBuf,
    _daemon: Daemon,
}

/// The built binaries next to this example (`target/<profile>/{routerd,routectl}`).
fn binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("cannot locate the target directory")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} not found: build with `cargo build --release -p agent --bins --examples`",
            path.display()
        );
    }
    Ok(path)
}

fn routectl(
    bin: &Path,
    at: Option<&Netns>,
    datastore: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String> {
    let mut c = match at {
        Some(ns) => ns.command(&[&bin.to_string_lossy()]),
        None => Command::new(bin),
    };
    c.arg("--datastore")
        .arg(datastore)
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

fn main() -> Result<()> {
    let mut count = 3usize;
    let mut keep = false;
    let mut on_etcd = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--nodes" => {
                count = args
                    .next()
                    .context("--nodes needs a number")?
                    .parse()
                    .context("--nodes needs a number")?
            }
            "--keep" => keep = true,
            "--datastore" => match args.next().as_deref() {
                Some("file") => on_etcd = false,
                Some("etcd") => on_etcd = true,
                other => bail!("--datastore takes file or etcd, not {other:?}"),
            },
            other => bail!(
                "unknown argument {other}; usage: lab [--nodes N] [--datastore file|etcd] [--keep]"
            ),
        }
    }
    if !(2..=50).contains(&count) {
        bail!("--nodes must be 2..=50");
    }
    require(&[
        "ip", "bird", "birdc", "ping", "podman", "runc", "nsenter", "busybox",
    ]);
    if on_etcd {
        require(&["etcd", "etcdctl"]);
    }
    let routerd = binary("routerd")?;
    let routectl_bin = binary("routectl")?;
    let dir = tempdir()?;

    let tor_ns = Netns::new("tor")?;
    let node_ns: Vec<Netns> = (1..=count)
        .map(|i| Netns::new(&format!("node{i}")))
        .collect::<Result<_>>()?;
    let etcd_ns: Vec<Netns> = if on_etcd {
        (1..=3)
            .map(|i| Netns::new(&format!("etcd{i}")))
            .collect::<Result<_>>()?
    } else {
        Vec::new()
    };
    let etcd_ips = ["10.0.0.201", "10.0.0.202", "10.0.0.203"];
    let etcd_cidrs: Vec<[String; 1]> = etcd_ips.iter().map(|ip| [format!("{ip}/24")]).collect();
    let cidrs: Vec<String> = (1..=count).map(|i| format!("10.0.0.{i}/24")).collect();
    let tor_addr = ["10.0.0.254/24"];
    let node_addrs: Vec<[&str; 1]> = cidrs.iter().map(|c| [c.as_str()]).collect();
    let etcd_addrs: Vec<[&str; 1]> = etcd_cidrs.iter().map(|c| [c[0].as_str()]).collect();
    let mut members: Vec<(&Netns, &str, &[&str])> = vec![(&tor_ns, "eth0", &tor_addr)];
    for (ns, a) in node_ns.iter().zip(&node_addrs) {
        members.push((ns, "eth0", a));
    }
    for (ns, a) in etcd_ns.iter().zip(&etcd_addrs) {
        members.push((ns, "eth0", a));
    }
    let _switch = lan("lab", &members)?;
    let etcd = if on_etcd {
        let members = etcd_ns
            .into_iter()
            .zip(etcd_ips)
            .map(|(ns, ip)| (ns, ip.to_string()))
            .collect();
        Some(EtcdCluster::in_namespaces(members, false)?)
    } else {
        None
    };
    let datastore = match &etcd {
        Some(etcd) => format!("etcd:{}", etcd.endpoints()),
        None => format!("file:{}", dir.join("datastore").display()),
    };
    let ctl_ns = etcd.as_ref().map(|_| &tor_ns);
    let ctl = |args: &[&str], stdin: Option<&str>| {
        routectl(&routectl_bin, ctl_ns, &datastore, args, stdin)
    };

    println!(
        "lab: {count} routerd nodes and a BIRD ToR in network namespaces; datastore {datastore}"
    );
    print!(
        "$ routectl create -f pool.yaml\n{}",
        ctl(
            &["create", "-f", "-"],
            Some(
                "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: default-ipv4-ippool\n\
                 spec:\n  cidr: 10.244.0.0/16\n  blockSize: 24\n  ipipMode: Never\n  vxlanMode: Never\n  natOutgoing: true\n",
            ),
        )?
    );

    let mut tor_conf = String::from(
        "router id 10.0.0.254;\nprotocol device {}\nprotocol direct { ipv4; }\n\
         protocol kernel { ipv4 { export where source = RTS_BGP; }; merge paths on; }\n\
         protocol static defgw { ipv4; route 0.0.0.0/0 blackhole; }\n\
         template bgp node { local 10.0.0.254 as 65000; hold time 9; connect retry time 1;\n\
           ipv4 { import all; export all; }; }\n",
    );
    for i in 1..=count {
        tor_conf +=
            &format!("protocol bgp node{i} from node {{ neighbor 10.0.0.{i} as 64512; }}\n");
    }
    let tor = Bird::start(&tor_ns, &dir.join("tor"), &tor_conf)?;

    let mut nodes = Vec::new();
    for (i, ns) in (1..=count).zip(node_ns) {
        let name = format!("node-{i}");
        let socket = dir.join(format!("{name}.ctl"));
        let log = File::create(dir.join(format!("{name}.log")))?;
        let child = ns
            .command(&[
                &routerd.to_string_lossy(),
                "--node-name",
                &name,
                "--node-ip",
                &cidrs[i - 1],
                "--datastore",
                &datastore,
                "--control-socket",
                &socket.to_string_lossy(),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting routerd")?;
        nodes.push(Node {
            name,
            ip: format!("10.0.0.{i}"),
            ns,
            socket,
            _daemon: Daemon::from_child(child),
        });
    }

    // The mesh.
    for n in &nodes {
        let others: Vec<String> = nodes
            .iter()
            .filter(|o| o.name != n.name)
            .map(|o| PeerType::NodeMesh.session_name(o.ip.parse().unwrap_or([0u8; 4].into())))
            .collect();
        wait_for(&format!("{}'s mesh", n.name), TIMEOUT, POLL, || {
            let s = query_status(&n.socket, Duration::from_secs(5)).ok()?;
            others
                .iter()
                .all(|o| {
                    s.sessions
                        .iter()
                        .any(|x| &x.name == o && x.state == "Established")
                })
                .then_some(())
        })
        .with_context(|| format!("see {}", dir.join(format!("{}.log", n.name)).display()))?;
    }
    println!("lab: full mesh Established on every node");

    // The ToR, applied as an operator would.
    print!(
        "$ routectl apply -f tor.yaml\n{}",
        ctl(
            &["apply", "-f", "-"],
            Some(
                "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: rack-tor\n\
                 spec:\n  peerIP: 10.0.0.254\n  asNumber: 65000\n",
            ),
        )?
    );
    for i in 1..=count {
        tor.wait_established(&format!("node{i}"), TIMEOUT)?;
    }

    // Pods, as a cluster makes them: the CNI plugins installed on each node (the step a
    // DaemonSet's init container runs), then a container runtime (podman) starting a
    // container on the routerd network; the plugins assign its address from the node's
    // block and plumb it.
    let plugins = binary("routerd-cni")?;
    let mut runtimes = Vec::new();
    let mut pods = Vec::new();
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
                .args(["--datastore", &datastore, "--nodename", &n.name]),
        )?;
        let conflist = std::fs::read_to_string(conf_dir.join("10-routerd.conflist"))?;
        let podman = Podman::new(&root.join("podman"), &n.ns, &bin_dir, "routerd", &conflist)?;
        let pod_name = format!("pod-{}", n.name);
        podman.start(&pod_name, "routerd")?;
        let address: std::net::IpAddr = podman.ipv4(&pod_name)?.parse()?;
        // The lab's pool has /24 blocks.
        let block = ipnet::IpNet::new(address, 24)?.trunc();
        println!(
            "lab: {} runs container {pod_name} at {address} (block {block})",
            n.name
        );
        pods.push((runtimes.len(), pod_name, address, block));
        runtimes.push(podman);
    }
    tor_ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;

    // Every node routes every other block through its owner.
    for n in &nodes {
        wait_for(&format!("{}'s routes", n.name), TIMEOUT, POLL, || {
            let table = n.ns.ip(&["route", "show", "proto", "80"]).ok()?;
            pods.iter()
                .zip(&nodes)
                .all(|((_, _, _, block), owner)| {
                    if owner.name == n.name {
                        table.contains(&format!("blackhole {block}"))
                    } else {
                        routes_via(&table, &block.to_string(), &owner.ip)
                    }
                })
                .then_some(())
        })
        .with_context(|| {
            format!(
                "{} routes: {}; pods: {:?}",
                n.name,
                n.ns.ip(&["route"]).unwrap_or_default(),
                pods.iter().map(|(_, _, a, b)| (a, b)).collect::<Vec<_>>()
            )
        })?;
    }
    // Pod to pod across nodes, and the ToR to every pod.
    for (runtime, from, _, _) in &pods {
        for (_, _, to, _) in &pods {
            let to = to.to_string();
            wait_for(&format!("ping {to}"), Duration::from_secs(20), POLL, || {
                runtimes[*runtime].ping(from, &to, 1).ok()
            })?;
        }
    }
    for (_, _, to, _) in &pods {
        tor_ns.exec(&["ping", "-c", "1", "-W", "2", &to.to_string()])?;
    }
    println!("lab: every pod reaches every other pod across nodes; the ToR reaches every pod\n");

    println!(
        "$ routectl get nodes -o wide\n{}",
        ctl(&["get", "nodes", "-o", "wide"], None)?
    );
    println!(
        "$ routectl get bgppeer\n{}",
        ctl(&["get", "bgppeer"], None)?
    );
    let socket = nodes[0].socket.to_string_lossy().into_owned();
    println!(
        "$ routectl node status   # on {}\n{}",
        nodes[0].name,
        ctl(&["--control-socket", &socket, "node", "status"], None)?
    );
    println!(
        "$ routectl get workloadendpoints -o wide\n{}",
        ctl(&["get", "workloadendpoints", "-o", "wide"], None)?
    );
    println!(
        "$ routectl ipam show --show-blocks\n{}",
        ctl(&["ipam", "show", "--show-blocks"], None)?
    );
    for n in &nodes {
        println!(
            "{} kernel routes (ip route):\n{}",
            n.name,
            n.ns.ip(&["route"])?
        );
    }
    println!("ToR (BIRD, AS 65000):\n{}", tor.cmd("show route")?);
    if let Some(etcd) = &etcd {
        println!(
            "$ etcdctl endpoint status --cluster -w table\n{}",
            etcd.etcdctl(0, &["endpoint", "status", "--cluster", "-w", "table"])?
        );
    }

    if keep {
        println!(
            "lab: running; namespaces: {}, {} ...; datastore {datastore}; Ctrl-C to tear down",
            tor_ns.name(),
            nodes[0].ns.name()
        );
        wait_for_signal();
    }
    println!("lab: tearing down");
    drop(runtimes);
    drop(nodes);
    drop(etcd);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Whether `table` (`ip route` output) routes `prefix` via `gateway`, with or without a
/// kernel nexthop object (`10.244.1.0/24 nhid 12 via 10.0.0.2 dev eth0`).
fn routes_via(table: &str, prefix: &str, gateway: &str) -> bool {
    table.lines().any(|l| {
        l.split_whitespace().next() == Some(prefix) && l.contains(&format!("via {gateway} "))
    })
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("routerd-lab-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
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

//! A routerd cluster for end-to-end tests: N nodes on one L2 segment (10.0.0.<i>/24), each a
//! network namespace running `routerd` on one shared datastore (the embedded `file:` one, or
//! a three-member etcd cluster in namespaces of its own on the same segment, at
//! 10.0.0.201-203, or the Kubernetes API stand-in of `lab::kube_standin` listening in a
//! namespace of its own at 10.0.0.200:6443, with a Kubernetes Node per node), with an IPPool
//! created through `routectl`. Only namespaces made here are touched.

#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use agent::status::{query_status, PeerType};
use lab::etcd::EtcdCluster;
use lab::kube_standin::{ApiServerStandin, StandinOptions};
use lab::{lan, wait_for, Daemon, Netns};

pub const ROUTERD: &str = env!("CARGO_BIN_EXE_routerd");
pub const ROUTECTL: &str = env!("CARGO_BIN_EXE_routectl");
pub const T: Duration = Duration::from_secs(60);
pub const POLL: Duration = Duration::from_millis(200);

pub struct Node {
    pub name: String,
    pub ip: String,
    /// `--node-ip` when it is not the node's CIDR (an autodetection method).
    pub node_ip_source: Option<String>,
    pub ns: Netns,
    pub socket: PathBuf,
    pub daemon: Option<Daemon>,
}

/// Where the cluster keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// The embedded `file:` datastore in the test's directory.
    File,
    /// A three-member etcd cluster on the nodes' segment.
    Etcd,
    /// The Kubernetes API stand-in on the nodes' segment, at [`KUBE_API`], with Calico's
    /// CRDs and routerd's installed and a Kubernetes Node per node.
    Kubernetes,
}

/// Installs Calico's CRDs and routerd's into the stand-in, as `kubectl apply -f
/// examples/crds/` does.
#[cfg(feature = "kubernetes")]
fn install_crds(standin: &ApiServerStandin) {
    let mut crds = datastore::calico_crds();
    crds.extend(datastore::crds());
    for crd in crds {
        standin
            .create(
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                serde_json::to_value(crd).unwrap(),
            )
            .unwrap();
    }
}

#[cfg(not(feature = "kubernetes"))]
fn install_crds(_standin: &ApiServerStandin) {
    panic!("Store::Kubernetes needs the agent's `kubernetes` feature");
}

/// Where the Kubernetes API stand-in listens.
pub const KUBE_API: &str = "10.0.0.200:6443";
/// The collection of Kubernetes Nodes.
pub const KUBE_NODES: &str = "/api/v1/nodes";
/// Where Calico's custom resources are served.
pub const CALICO_API: &str = "/apis/crd.projectcalico.org/v1";

/// A Calico v3 resource as Calico's KDD keeps it: `crd.projectcalico.org/v1`, the v3
/// metadata (no labels here) in its annotation, the spec as is.
pub fn calico_object(kind: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": kind,
        "metadata": {"name": name,
                     "annotations": {"projectcalico.org/metadata": "{\"creationTimestamp\":null}"}},
        "spec": spec,
    })
}

/// The addresses of the etcd members on the segment.
pub const ETCD_IPS: [&str; 3] = ["10.0.0.201", "10.0.0.202", "10.0.0.203"];

/// Fields drop in order: the daemons and namespaces go before the datastore directory.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub etcd: Option<EtcdCluster>,
    /// The API stand-in ([`Store::Kubernetes`]), and the namespace it listens in.
    pub kube: Option<(ApiServerStandin, Netns)>,
    _switch: Netns,
    /// Ports added to the switch by [`Cluster::attach`].
    attached: std::sync::atomic::AtomicUsize,
    pub datastore: String,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` nodes with `pool_spec` (a YAML flow mapping) as the pool `pool`, and waits
    /// for the full mesh.
    pub fn start(tag: &str, n: usize, pool_spec: &str) -> Cluster {
        Self::start_on(tag, n, pool_spec, Store::File)
    }

    /// As [`Cluster::start`], on the datastore `store`.
    pub fn start_on(tag: &str, n: usize, pool_spec: &str, store: Store) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let namespaces: Vec<Netns> = (1..=n)
            .map(|i| Netns::new(&format!("{tag}{i}")).unwrap())
            .collect();
        let addrs: Vec<[String; 1]> = (1..=n).map(|i| [format!("10.0.0.{i}/24")]).collect();
        let addr_refs: Vec<[&str; 1]> = addrs.iter().map(|a| [a[0].as_str()]).collect();
        let mut members: Vec<(&Netns, &str, &[&str])> = namespaces
            .iter()
            .zip(&addr_refs)
            .map(|(ns, a)| (ns, "eth0", &a[..]))
            .collect();
        let kube_ns = match store {
            Store::Kubernetes => Some(Netns::new(&format!("{tag}k")).unwrap()),
            _ => None,
        };
        let kube_addr = format!("{}/24", KUBE_API.split(':').next().unwrap_or_default());
        let kube_addr = [kube_addr.as_str()];
        if let Some(ns) = &kube_ns {
            members.push((ns, "eth0", &kube_addr[..]));
        }
        let etcd_ns: Vec<Netns> = match store {
            Store::File | Store::Kubernetes => Vec::new(),
            Store::Etcd => (1..=ETCD_IPS.len())
                .map(|i| Netns::new(&format!("{tag}e{i}")).unwrap())
                .collect(),
        };
        let etcd_addrs: Vec<[String; 1]> = ETCD_IPS.iter().map(|ip| [format!("{ip}/24")]).collect();
        let etcd_refs: Vec<[&str; 1]> = etcd_addrs.iter().map(|a| [a[0].as_str()]).collect();
        members.extend(
            etcd_ns
                .iter()
                .zip(&etcd_refs)
                .map(|(ns, a)| (ns, "eth0", &a[..])),
        );
        let switch = lan(tag, &members).unwrap();
        let mut kube = None;
        let (datastore, etcd) = match store {
            Store::File => (format!("file:{}", dir.path().join("ds").display()), None),
            Store::Kubernetes => {
                let ns = kube_ns.unwrap();
                let standin =
                    ApiServerStandin::start_in(StandinOptions::default(), &ns.path(), KUBE_API)
                        .unwrap();
                install_crds(&standin);
                let kubeconfig = dir.path().join("kubeconfig");
                standin.write_kubeconfig(&kubeconfig).unwrap();
                kube = Some((standin, ns));
                (format!("kubernetes:{}", kubeconfig.display()), None)
            }
            Store::Etcd => {
                for ns in &etcd_ns {
                    ns.ip(&["link", "set", "lo", "up"]).unwrap();
                }
                let members = etcd_ns
                    .into_iter()
                    .zip(ETCD_IPS)
                    .map(|(ns, ip)| (ns, ip.to_string()))
                    .collect();
                let etcd = EtcdCluster::in_namespaces(members, false).unwrap();
                (format!("etcd:{}", etcd.endpoints()), Some(etcd))
            }
        };
        let nodes = namespaces
            .into_iter()
            .enumerate()
            .map(|(i, ns)| {
                let name = format!("node-{}", i + 1);
                Node {
                    socket: dir.path().join(format!("{name}.ctl")),
                    ip: format!("10.0.0.{}", i + 1),
                    node_ip_source: None,
                    name,
                    ns,
                    daemon: None,
                }
            })
            .collect();
        let mut cluster = Cluster {
            dir,
            datastore,
            nodes,
            etcd,
            kube,
            _switch: switch,
            attached: std::sync::atomic::AtomicUsize::new(0),
        };
        let manifest = cluster.dir.path().join("pool.yaml");
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: pool\nspec: {pool_spec}\n"
            ),
        )
        .unwrap();
        cluster.routectl(&["create", "-f", manifest.to_str().unwrap()]);
        for i in 0..n {
            cluster.register_kubernetes_node(i);
            cluster.start_routerd(i);
        }
        cluster.wait_mesh();
        cluster
    }

    /// Joins a new node, `node-<n+1>` at 10.0.0.<n+1>, to the segment and starts its routerd
    /// (it registers its Node, and the mesh grows to it): its index.
    pub fn add_node(&mut self, tag: &str) -> usize {
        let i = self.nodes.len();
        let ns = Netns::new(&format!("{tag}{}", i + 1)).unwrap();
        let ip = format!("10.0.0.{}", i + 1);
        self.attach(&ns, "eth0", &format!("{ip}/24"));
        let name = format!("node-{}", i + 1);
        self.nodes.push(Node {
            socket: self.dir.path().join(format!("{name}.ctl")),
            ip,
            node_ip_source: None,
            name,
            ns,
            daemon: None,
        });
        self.register_kubernetes_node(i);
        self.start_routerd(i);
        i
    }

    /// On [`Store::Kubernetes`], creates node `i`'s Kubernetes Node (what the kubelet does
    /// before a DaemonSet's pod runs on it), with its address as `InternalIP`.
    pub fn register_kubernetes_node(&self, i: usize) {
        let Some((standin, _)) = &self.kube else {
            return;
        };
        let node = &self.nodes[i];
        standin
            .create(
                KUBE_NODES,
                serde_json::json!({"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": node.name,
                                 "labels": {"kubernetes.io/hostname": node.name}},
                    "spec": {},
                    "status": {"addresses": [{"type": "InternalIP", "address": node.ip},
                                             {"type": "Hostname", "address": node.name}]}}),
            )
            .unwrap();
    }

    /// The API stand-in ([`Store::Kubernetes`] only).
    pub fn kube(&self) -> &ApiServerStandin {
        &self
            .kube
            .as_ref()
            .expect("a cluster on Store::Kubernetes")
            .0
    }

    /// (Re)starts routerd on node `i`, logging to `<dir>/<node>.log` (appended).
    pub fn start_routerd(&mut self, i: usize) {
        self.start_routerd_with(i, &[]);
    }

    /// As [`Cluster::start_routerd`], with extra environment variables (`ROUTERD_…`).
    pub fn start_routerd_with(&mut self, i: usize, env: &[(&str, &str)]) {
        let node = &self.nodes[i];
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", node.name)))
            .unwrap();
        let cidr = node
            .node_ip_source
            .clone()
            .unwrap_or_else(|| format!("{}/24", node.ip));
        let child = node
            .ns
            .command(&[
                ROUTERD,
                "--node-name",
                &node.name,
                "--node-ip",
                &cidr,
                "--datastore",
                &self.datastore,
                "--control-socket",
                node.socket.to_str().unwrap(),
                "--health-listen",
                // Each namespace has a loopback of its own.
                if self.datastore_on_segment() {
                    "127.0.0.1:9099"
                } else {
                    "none"
                },
                "--log-level",
                "debug",
            ])
            .env("ROUTERD_FIB_SETTLE", "2")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.nodes[i].daemon = Some(Daemon::from_child(child));
    }

    /// Stops routerd on node `i` as an orchestrator would (SIGTERM) and waits up to 10 s for
    /// it to exit.
    pub fn stop_routerd(&mut self, i: usize) {
        if let Some(mut d) = self.nodes[i].daemon.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &d.pid().to_string()])
                .status();
            let _ = wait_for("routerd to exit", Duration::from_secs(10), POLL, || {
                (!d.is_running()).then_some(())
            });
        }
    }

    /// SIGKILLs routerd on node `i` and waits for it to be gone.
    pub fn kill_routerd(&mut self, i: usize) {
        if let Some(d) = self.nodes[i].daemon.take() {
            let _ = Command::new("kill")
                .args(["-9", &d.pid().to_string()])
                .status();
            drop(d);
        }
        let _ = std::fs::remove_file(&self.nodes[i].socket);
    }

    pub fn logs(&self) -> String {
        let etcd = self
            .etcd
            .as_ref()
            .map(EtcdCluster::logs)
            .unwrap_or_default();
        etcd + &self
            .nodes
            .iter()
            .map(|n| {
                format!(
                    "== {}\n{}",
                    n.name,
                    std::fs::read_to_string(self.dir.path().join(format!("{}.log", n.name)))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until every node's routerd answers on its control socket (so it has registered
    /// its Node) and has every mesh session Established.
    pub fn wait_mesh(&self) {
        for n in &self.nodes {
            wait_for(&format!("{}'s routerd", n.name), T, POLL, || {
                query_status(&n.socket, Duration::from_secs(5)).ok()
            })
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
        }
        for n in &self.nodes {
            for other in self.nodes.iter().filter(|o| o.name != n.name) {
                let name = PeerType::NodeMesh.session_name(other.ip.parse().unwrap());
                wait_for(&format!("{}'s mesh session", n.name), T, POLL, || {
                    let s = query_status(&n.socket, Duration::from_secs(5)).ok()?;
                    s.sessions
                        .iter()
                        .any(|x| x.name == name && x.state == "Established")
                        .then_some(())
                })
                .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
            }
        }
    }

    /// `routectl --datastore <ours> <args>`: stdout, panicking on failure. On etcd it runs
    /// in node-1's namespace, the host having no route to the segment.
    pub fn routectl(&self, args: &[&str]) -> String {
        let out = self.routectl_output(args);
        assert!(out.status.success(), "routectl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether the datastore is etcd (whose members only the nodes can reach).
    pub fn on_etcd(&self) -> bool {
        self.datastore.starts_with("etcd:")
    }

    /// Whether the datastore is reachable only from the segment (etcd, the API stand-in).
    pub fn datastore_on_segment(&self) -> bool {
        self.on_etcd() || self.kube.is_some()
    }

    /// `routectl` as [`Cluster::routectl`], whatever its exit status.
    pub fn routectl_output(&self, args: &[&str]) -> Output {
        let mut cmd = if self.datastore_on_segment() {
            self.nodes[0].ns.command(&[ROUTECTL])
        } else {
            Command::new(ROUTECTL)
        };
        cmd.args(["--datastore", &self.datastore])
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs CNI plugin `bin` (`routerd-cni`, `routerd-ipam`) on node `i` as a runtime
    /// would: `command` for `container`, in `netns` when given, with a conf for this
    /// cluster's datastore on stdin.
    pub fn cni(
        &self,
        i: usize,
        bin: &str,
        command: &str,
        container: &str,
        netns: Option<&Path>,
    ) -> Output {
        let dir = plugin_dir();
        let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "routerd",
            "type": "routerd-cni", "datastore": self.datastore, "nodename": self.nodes[i].name,
            "ipam": {"type": "routerd-ipam"}})
        .to_string();
        lab::CniCall {
            plugin: &dir.join(bin),
            command,
            container,
            pod: container,
            netns,
            conf: conf.as_bytes(),
        }
        .run(&self.nodes[i].ns)
        .unwrap()
    }

    /// A pod on node `i` through the CNI plugin: its namespace and address.
    pub fn add_pod(&self, i: usize, name: &str) -> (Netns, String) {
        let pod = Netns::new(name).unwrap();
        let out = self.cni(i, "routerd-cni", "ADD", name, Some(&pod.path()));
        assert!(out.status.success(), "ADD {name}: {out:?}\n{}", self.logs());
        let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let cidr = result["ips"][0]["address"].as_str().unwrap().to_string();
        let ip = cidr.split('/').next().unwrap().to_string();
        (pod, ip)
    }

    /// The node's `/metrics` (etcd clusters serve health on 127.0.0.1:9099 in each node).
    pub fn metrics(&self, i: usize) -> String {
        self.nodes[i]
            .ns
            .exec(&[
                "bash",
                "-c",
                "exec 3<>/dev/tcp/127.0.0.1/9099; printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3; cat <&3",
            ])
            .unwrap_or_default()
    }

    /// Joins `ns` to the nodes' segment as `ifname` with `address` (e.g. a ToR router).
    pub fn attach(&self, ns: &Netns, ifname: &str, address: &str) {
        let port = format!(
            "x{}",
            self.attached
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        lab::veth(&self._switch, &port, ns, ifname).unwrap();
        self._switch
            .ip(&["link", "set", &port, "master", "br0"])
            .unwrap();
        ns.ip(&["addr", "add", address, "dev", ifname]).unwrap();
        ns.ip(&["link", "set", "lo", "up"]).unwrap();
    }

    /// Cuts (`up` false) or restores node `i`'s link at the switch, as a pulled cable would:
    /// the node's `eth0` loses its carrier. Only for the nodes the cluster started with
    /// (their switch ports are `p<i>`).
    pub fn set_node_link(&self, i: usize, up: bool) {
        self._switch
            .ip(&[
                "link",
                "set",
                &format!("p{i}"),
                if up { "up" } else { "down" },
            ])
            .unwrap();
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A BIRD top-of-rack at 10.0.0.254 (AS 65000) on the segment, in `tor`, with a graceful
    /// restart session `n<i>` towards each of the first `nodes` node addresses (10.0.0.<i>,
    /// AS 64512), importing everything and exporting nothing.
    pub fn bird_tor(&self, tor: &Netns, nodes: usize) -> lab::bird::Bird {
        self.attach(tor, "eth0", "10.0.0.254/24");
        let neighbors: String = (1..=nodes)
            .map(|i| {
                format!(
                    "protocol bgp n{i} {{ local 10.0.0.254 as 65000; neighbor 10.0.0.{i} as \
                     64512; hold time 90; connect retry time 1; graceful restart on; \
                     ipv4 {{ import all; export none; }}; }}\n"
                )
            })
            .collect();
        lab::bird::Bird::start(
            tor,
            &self.path().join("tor"),
            &format!("router id 10.0.0.254;\nprotocol device {{}}\n{neighbors}"),
        )
        .unwrap()
    }
}

/// BIRD's BFD protocol at 300 ms x 3 on every interface, as the BFD tests' ToRs run it.
pub const BIRD_BFD: &str = "protocol bfd { interface \"*\" { min rx interval 300 ms; \
    min tx interval 300 ms; multiplier 3; }; }\n";

/// `ip monitor route` in a namespace, for tests that must see that no route was deleted
/// while something happened.
pub struct RouteMonitor(std::process::Child);

impl RouteMonitor {
    pub fn start(ns: &Netns) -> RouteMonitor {
        RouteMonitor(
            ns.command(&["ip", "monitor", "route"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// Stops it and returns every event it printed.
    pub fn finish(mut self) -> String {
        let _ = self.0.kill();
        let out = self.0.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The plugins, built beside routerd by `cargo test --workspace` / `cargo build -p cni`.
pub fn plugin_dir() -> PathBuf {
    let dir = PathBuf::from(ROUTERD).parent().unwrap().to_path_buf();
    for b in ["routerd-cni", "routerd-ipam"] {
        assert!(
            dir.join(b).is_file(),
            "{} is missing: build the plugins (cargo build --release -p cni)",
            dir.join(b).display()
        );
    }
    dir
}

/// The repository's root (Containerfile, scripts/, examples/).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The documents of a multi-document YAML file as JSON values; empty documents (a file's
/// leading comment block) are skipped.
pub fn yaml_documents(path: &Path) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            serde_json::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The one DaemonSet of examples/kubernetes/routerd.yaml.
pub fn routerd_daemonset() -> serde_json::Value {
    let path = repo_root().join("examples/kubernetes/routerd.yaml");
    let mut sets: Vec<serde_json::Value> = yaml_documents(&path)
        .into_iter()
        .filter(|d| d["kind"] == "DaemonSet")
        .collect();
    assert_eq!(sets.len(), 1, "{} has one DaemonSet", path.display());
    sets.remove(0)
}

/// The capabilities the DaemonSet adds to its `routerd` container (it drops all others).
pub fn daemonset_capabilities() -> Vec<String> {
    let ds = routerd_daemonset();
    let containers = ds["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("the DaemonSet has containers");
    let routerd = containers
        .iter()
        .find(|c| c["name"] == "routerd")
        .expect("the DaemonSet has a container named routerd");
    let caps = &routerd["securityContext"]["capabilities"];
    assert_eq!(caps["drop"], serde_json::json!(["ALL"]), "{caps}");
    caps["add"]
        .as_array()
        .expect("capabilities.add")
        .iter()
        .map(|c| c.as_str().expect("a capability name").to_string())
        .collect()
}

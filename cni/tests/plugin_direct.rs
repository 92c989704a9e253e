//! The plugins invoked as a runtime invokes them: CNI_* environment, the configuration on
//! stdin, the result or error object on stdout. In network namespaces made here: a "node"
//! (where the plugin runs, as in a node's namespace) and one namespace per pod.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use datastore::resource::parse_manifests;
use datastore::Datastore;
use lab::Netns;
use serde_json::{json, Value};

const PLUGIN: &str = env!("CARGO_BIN_EXE_routerd-cni");

struct Cluster {
    _dir: tempfile::TempDir,
    address: String,
    ds: Arc<dyn Datastore>,
    node: Netns,
}

fn cluster(pool: &str) -> Cluster {
    lab::require(&["ip", "ping"]);
    let dir = tempfile::tempdir().unwrap();
    let address = format!("file:{}", dir.path().display());
    let ds = datastore::open(&address).unwrap();
    let manifests = format!(
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: node-1}}\nspec: {{bgp: {{ipv4Address: 10.0.0.1/24}}}}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: pods}}\nspec: {pool}\n"
    );
    for r in parse_manifests(&manifests).unwrap() {
        ds.create(r.kind().as_str(), &r.record_name(), r.to_value())
            .unwrap();
    }
    let node = Netns::new("cni-node").unwrap();
    node.ip(&["addr", "add", "10.0.0.1/32", "dev", "lo"])
        .unwrap();
    Cluster {
        _dir: dir,
        address,
        ds,
        node,
    }
}

impl Cluster {
    fn conf(&self, version: &str) -> Value {
        json!({
            "cniVersion": version, "name": "routerd", "type": "routerd-cni",
            "datastore": self.address, "nodename": "node-1",
            "ipam": {"type": "routerd-ipam"}
        })
    }

    fn invoke(&self, command: &str, container: &str, netns: Option<&Path>, stdin: &[u8]) -> Output {
        lab::CniCall {
            plugin: Path::new(PLUGIN),
            command,
            container,
            pod: &format!("pod-{container}"),
            netns,
            conf: stdin,
        }
        .run(&self.node)
        .unwrap()
    }

    fn add(&self, container: &str, pod: &Netns) -> Value {
        let out = self.invoke(
            "ADD",
            container,
            Some(&pod.path()),
            self.conf("1.0.0").to_string().as_bytes(),
        );
        assert!(
            out.status.success(),
            "ADD failed: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn del(&self, container: &str, pod: Option<&Netns>) {
        let path = pod.map(Netns::path);
        let out = self.invoke(
            "DEL",
            container,
            path.as_deref(),
            self.conf("1.0.0").to_string().as_bytes(),
        );
        assert!(
            out.status.success(),
            "DEL failed: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "DEL prints nothing on success");
    }

    fn count(&self, kind: &str) -> usize {
        self.ds.list(kind).unwrap().records.len()
    }
}

fn pod_ip(result: &Value) -> String {
    let addr = result["ips"][0]["address"].as_str().unwrap();
    addr.split('/').next().unwrap().to_string()
}

/// A pod calico-ipam addressed before the cluster switched to routerd holds Calico's handle
/// (`k8s-pod-network.<containerID>`) in the blocks routerd took over: routerd's DEL for that
/// container frees its address.
#[test]
fn del_frees_an_address_calico_ipam_assigned() {
    use datastore::ipam_store::DatastoreIpam;
    use ipam::{Allocator, AllocatorConfig, AssignRequest, IpFamily};
    let c = cluster("{cidr: 10.66.0.0/16, blockSize: 26}");
    let allocator = Allocator::new(DatastoreIpam::new(c.ds.clone()), AllocatorConfig::default());
    let calico_handle = "k8s-pod-network.c0ffee";
    let spec: ipam::IpPoolSpec =
        serde_json::from_value(json!({"cidr": "10.66.0.0/16", "blockSize": 26})).unwrap();
    let pools = [ipam::IpPool::new("pods", &spec).unwrap()];
    let assigned = allocator
        .assign(
            &pools,
            &std::collections::BTreeMap::<String, String>::new(),
            &AssignRequest::pod(calico_handle, "node-1", IpFamily::V4, "default", "old"),
        )
        .unwrap();
    assert!(
        !allocator.addresses(calico_handle).unwrap().is_empty(),
        "{assigned:?}"
    );
    c.del("c0ffee", None);
    assert!(allocator.addresses(calico_handle).unwrap().is_empty());
}

#[test]
fn add_twice_then_del_twice() {
    let c = cluster("{cidr: 10.244.0.0/16, blockSize: 26}");
    let pod = Netns::new("cni-pod").unwrap();
    let first = c.add("c1", &pod);
    assert_eq!(first["cniVersion"], "1.0.0");
    let ip = pod_ip(&first);
    assert!(ip.starts_with("10.244."), "{first}");
    assert!(first["ips"][0]["address"]
        .as_str()
        .unwrap()
        .ends_with("/32"));
    let host_veth = first["interfaces"][0]["name"].as_str().unwrap().to_string();
    assert!(
        host_veth.starts_with("cali") && host_veth.len() == 15,
        "{host_veth}"
    );
    assert_eq!(first["interfaces"][0]["mac"], "ee:ee:ee:ee:ee:ee");
    assert_eq!(first["interfaces"][1]["name"], "eth0");
    assert_eq!(first["interfaces"][1]["mtu"], 1500);

    // The kernel: the pod's address, gateway and default route; the host route, ours.
    let addr = pod.ip(&["-4", "addr", "show", "dev", "eth0"]).unwrap();
    assert!(addr.contains(&format!("{ip}/32")), "{addr}");
    let routes = pod.ip(&["-4", "route"]).unwrap();
    assert!(
        routes.contains("default via 169.254.1.1 dev eth0"),
        "{routes}"
    );
    let host = c
        .node
        .ip(&["-4", "route", "show", &format!("{ip}/32")])
        .unwrap();
    assert!(host.contains(&format!("dev {host_veth}")), "{host}");
    assert!(
        host.contains("proto 80") && host.contains("scope link"),
        "{host}"
    );
    let link = c.node.ip(&["link", "show", &host_veth]).unwrap();
    assert!(link.contains("ee:ee:ee:ee:ee:ee"), "{link}");
    // Both ways through the veth.
    c.node.exec(&["ping", "-c1", "-W2", &ip]).unwrap();
    pod.exec(&["ping", "-c1", "-W2", "10.0.0.1"]).unwrap();

    // The endpoint record, as Calico names it.
    let wep =
        c.ds.get("WorkloadEndpoint", "default.node--1-k8s-pod--c1-eth0")
            .unwrap();
    assert_eq!(wep.value["spec"]["interfaceName"], host_veth.as_str());
    assert_eq!(wep.value["spec"]["ipNetworks"][0], format!("{ip}/32"));
    assert_eq!(wep.value["spec"]["containerID"], "c1");

    // ADD again: same address, still working.
    let again = c.add("c1", &pod);
    assert_eq!(pod_ip(&again), ip);
    pod.exec(&["ping", "-c1", "-W2", "10.0.0.1"]).unwrap();
    assert_eq!(c.count("WorkloadEndpoint"), 1);

    c.del("c1", Some(&pod));
    assert_eq!(c.count("WorkloadEndpoint"), 0);
    assert_eq!(c.count("IPAMHandle"), 0, "the handle is released");
    let host = c
        .node
        .ip(&["-4", "route", "show", &format!("{ip}/32")])
        .unwrap();
    assert!(host.trim().is_empty(), "{host}");
    assert!(c.node.ip(&["link", "show", &host_veth]).is_err());
    // DEL again, and DEL of something never added: success, nothing printed.
    c.del("c1", Some(&pod));
    c.del("never-added", None);
}

#[test]
fn check_names_the_missing_route() {
    let c = cluster("{cidr: 10.245.0.0/16}");
    let pod = Netns::new("cni-pod").unwrap();
    let result = c.add("chk", &pod);
    let ip = pod_ip(&result);
    let conf = c.conf("1.0.0").to_string();
    let ok = c.invoke("CHECK", "chk", Some(&pod.path()), conf.as_bytes());
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    c.node.ip(&["route", "del", &format!("{ip}/32")]).unwrap();
    let bad = c.invoke("CHECK", "chk", Some(&pod.path()), conf.as_bytes());
    assert!(!bad.status.success());
    let err: Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert!(err["code"].as_u64().unwrap() >= 100, "{err}");
    let text = err.to_string();
    assert!(text.contains(&format!("host route {ip}/32")), "{text}");
    c.del("chk", Some(&pod));
}

#[test]
fn bad_requests_get_error_objects_and_change_nothing() {
    let c = cluster("{cidr: 10.246.0.0/16}");
    let pod = Netns::new("cni-pod").unwrap();
    let before = (
        c.count("IPAMHandle"),
        c.count("WorkloadEndpoint"),
        c.count("IPAMBlock"),
    );
    let cases: Vec<(&str, Option<PathBuf>, Vec<u8>, u64)> = vec![
        ("bad json", Some(pod.path()), b"{not json".to_vec(), 6),
        (
            "unknown version",
            Some(pod.path()),
            c.conf("9.9.9").to_string().into_bytes(),
            1,
        ),
        (
            "missing CNI_NETNS",
            None,
            c.conf("1.0.0").to_string().into_bytes(),
            0,
        ),
        (
            "unknown key",
            Some(pod.path()),
            {
                let mut v = c.conf("1.0.0");
                v["policy"] = json!({"type": "k8s"});
                v.to_string().into_bytes()
            },
            7,
        ),
    ];
    for (what, netns, stdin, code) in cases {
        let out = c.invoke("ADD", "bad", netns.as_deref(), &stdin);
        assert!(!out.status.success(), "{what}: exit 0");
        let err: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{what}: stdout is not JSON ({e}): {:?}", out.stdout));
        assert!(err["msg"].is_string(), "{what}: {err}");
        if code != 0 {
            assert_eq!(err["code"], code, "{what}: {err}");
        } else {
            assert!(err["code"].as_u64().unwrap() > 0, "{what}: {err}");
        }
    }
    let after = (
        c.count("IPAMHandle"),
        c.count("WorkloadEndpoint"),
        c.count("IPAMBlock"),
    );
    assert_eq!(before, after, "a refused request changes nothing");
    assert!(!c.node.ip(&["link"]).unwrap().contains("cali"));
}

#[test]
fn version_and_legacy_results() {
    let c = cluster("{cidr: 10.247.0.0/16}");
    let out = c.invoke("VERSION", "v", None, b"{}");
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let versions: Vec<&str> = v["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for want in ["0.3.1", "0.4.0", "1.0.0"] {
        assert!(versions.contains(&want), "{v}");
    }
    // A 0.4.0 runtime gets the 0.4.0 layout (ips[].version).
    let pod = Netns::new("cni-pod").unwrap();
    let out = c.invoke(
        "ADD",
        "old",
        Some(&pod.path()),
        c.conf("0.4.0").to_string().as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["cniVersion"], "0.4.0");
    assert_eq!(r["ips"][0]["version"], "4", "{r}");
    let out = c.invoke(
        "DEL",
        "old",
        Some(&pod.path()),
        c.conf("0.4.0").to_string().as_bytes(),
    );
    assert!(out.status.success());
}

#[test]
fn twenty_concurrent_adds_get_distinct_addresses_and_all_are_released() {
    let c = Arc::new(cluster("{cidr: 10.248.0.0/16, blockSize: 26}"));
    let pods: Vec<Netns> = (0..20).map(|_| Netns::new("cni-pod").unwrap()).collect();
    let pods = Arc::new(pods);
    let threads: Vec<_> = (0..20)
        .map(|i| {
            let c = c.clone();
            let pods = pods.clone();
            std::thread::spawn(move || pod_ip(&c.add(&format!("p{i}"), &pods[i])))
        })
        .collect();
    let ips: BTreeSet<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(ips.len(), 20, "{ips:?}");
    assert_eq!(c.count("WorkloadEndpoint"), 20);
    for (i, pod) in pods.iter().enumerate() {
        c.del(&format!("p{i}"), Some(pod));
    }
    assert_eq!(c.count("WorkloadEndpoint"), 0);
    assert_eq!(c.count("IPAMHandle"), 0);
    // No address is left allocated in any block.
    for block in c.ds.list("IPAMBlock").unwrap().records {
        let allocations = block.value["allocations"].as_array().cloned().unwrap();
        assert!(
            allocations.iter().all(Value::is_null),
            "{}: {allocations:?}",
            block.name
        );
    }
}

#[test]
fn install_writes_the_binaries_and_the_conflist() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("opt/cni/bin");
    let net = dir.path().join("etc/cni/net.d");
    let out = Command::new(PLUGIN)
        .args(["install", "--bin-dir", bin.to_str().unwrap()])
        .args(["--conf-dir", net.to_str().unwrap()])
        .args([
            "--nodename",
            "node-7",
            "--datastore",
            "file:/var/lib/routerd",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for b in ["routerd-cni", "routerd-ipam"] {
        let meta = std::fs::metadata(bin.join(b)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o111, 0o111, "{b} executable");
    }
    let conf: Value =
        serde_json::from_str(&std::fs::read_to_string(net.join("10-routerd.conflist")).unwrap())
            .unwrap();
    assert_eq!(conf["name"], "routerd");
    assert_eq!(conf["plugins"][0]["type"], "routerd-cni");
    assert_eq!(conf["plugins"][0]["nodename"], "node-7");
    assert_eq!(conf["plugins"][0]["ipam"]["type"], "routerd-ipam");
}

/// With an IPv6 pool selecting the node, the pod gets a /128 too, its default route via the
/// host veth's link-local address, and the host a /128 route to it.
#[test]
fn dual_stack_when_a_v6_pool_selects_the_node() {
    let c = cluster("{cidr: 10.249.0.0/16}");
    for r in parse_manifests(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pods6}\nspec: {cidr: 'fd00:244::/48'}\n",
    )
    .unwrap()
    {
        c.ds.create(r.kind().as_str(), &r.record_name(), r.to_value()).unwrap();
    }
    c.node
        .ip(&["-6", "addr", "add", "fd00:99::1/128", "dev", "lo"])
        .unwrap();
    let pod = Netns::new("cni-pod").unwrap();
    let result = c.add("ds", &pod);
    let ips: Vec<&str> = result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["address"].as_str().unwrap())
        .collect();
    assert_eq!(ips.len(), 2, "{result}");
    let v6 = ips.iter().find(|a| a.contains(':')).unwrap();
    assert!(v6.starts_with("fd00:244:") && v6.ends_with("/128"), "{v6}");
    let v6 = v6.trim_end_matches("/128");
    let routes = pod.ip(&["-6", "route"]).unwrap();
    assert!(
        routes.contains("default via fe80::ecee:eeff:feee:eeee dev eth0"),
        "{routes}"
    );
    let host = c
        .node
        .ip(&["-6", "route", "show", &format!("{v6}/128")])
        .unwrap();
    assert!(
        host.contains("dev cali") && host.contains("proto 80"),
        "{host}"
    );
    c.node.exec(&["ping", "-6", "-c1", "-W2", v6]).unwrap();
    pod.exec(&["ping", "-6", "-c1", "-W2", "fd00:99::1"])
        .unwrap();
    c.del("ds", Some(&pod));
    assert_eq!(c.count("IPAMHandle"), 0);
}

/// GC (spec 1.1.0): attachments the runtime no longer lists lose their addresses, their
/// endpoint and their veth; the listed ones keep everything.
#[test]
fn gc_releases_only_attachments_the_runtime_no_longer_has() {
    let c = cluster("{cidr: 10.250.0.0/16}");
    let keep = Netns::new("cni-pod").unwrap();
    let gone = Netns::new("cni-pod").unwrap();
    let kept = c.add("keep", &keep);
    let lost = c.add("gone", &gone);
    let lost_veth = lost["interfaces"][0]["name"].as_str().unwrap().to_string();
    let mut conf = c.conf("1.1.0");
    conf["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    let out = c.invoke("GC", "", None, conf.to_string().as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(c.count("WorkloadEndpoint"), 1);
    assert_eq!(c.count("IPAMHandle"), 1);
    assert!(
        c.node.ip(&["link", "show", &lost_veth]).is_err(),
        "veth of the gone one"
    );
    c.node
        .exec(&["ping", "-c1", "-W2", &pod_ip(&kept)])
        .unwrap();
    c.del("keep", Some(&keep));
}

/// `routectl ipam configure --strictaffinity=true` (the `IPAMConfig` record it writes) stops
/// the IPAM plugin from borrowing another node's addresses, as Calico's strict affinity.
#[test]
fn strict_affinity_stops_borrowing_from_another_nodes_block() {
    // One block in the whole pool.
    let c = cluster("{cidr: 10.244.0.0/26, blockSize: 26}");
    for r in parse_manifests(
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: node-2}\nspec: {bgp: {ipv4Address: 10.0.0.2/24}}\n",
    )
    .unwrap()
    {
        c.ds.create(r.kind().as_str(), &r.record_name(), r.to_value())
            .unwrap();
    }
    let ipam = Path::new(PLUGIN).parent().unwrap().join("routerd-ipam");
    let pod = Netns::new("cni-strict").unwrap();
    let add = |node: &str, container: &str| {
        let conf = json!({"cniVersion": "1.0.0", "name": "routerd", "type": "routerd-cni",
            "datastore": c.address, "nodename": node, "ipam": {"type": "routerd-ipam"}})
        .to_string();
        lab::CniCall {
            plugin: &ipam,
            command: "ADD",
            container,
            pod: container,
            netns: Some(&pod.path()),
            conf: conf.as_bytes(),
        }
        .run(&c.node)
        .unwrap()
    };
    // node-2 claims the only block; node-1 then borrows from it (the default).
    assert!(add("node-2", "on-2").status.success());
    let borrowed = add("node-1", "borrower");
    assert!(borrowed.status.success(), "{borrowed:?}");
    datastore::ipam_store::write_ipam_config(
        &*c.ds,
        &datastore::ipam_store::IpamConfig {
            strict_affinity: true,
            ..Default::default()
        },
        None,
    )
    .unwrap();
    let refused = add("node-1", "strict");
    assert!(!refused.status.success(), "{refused:?}");
    let error: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(error["msg"], "IPAM failed", "{error}");
    assert!(
        error["details"]
            .as_str()
            .unwrap_or_default()
            .contains("no free IPv4 address for node \"node-1\""),
        "{error}"
    );
}

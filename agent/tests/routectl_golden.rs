//! Golden tests of `routectl`: the real binary run against a `file:` datastore in a temporary
//! directory, its stdout, stderr and exit status compared with `tests/golden/*.txt`.
//!
//! Each golden file is a transcript: the command, its stdout, its stderr (after `[stderr]`)
//! and `[exit N]`. Every step also asserts its exit status in code. The temporary directory's
//! path is written `$TMP`. To regenerate after an intended change of format:
//! `UPDATE_GOLDEN=1 cargo test -p agent --test routectl_golden`, then review the diff by eye
//! against calicoctl's formats (see the module docs of `agent::routectl`).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::routectl::node_status::format_node_status;
use agent::status::{
    DaemonState, DatastoreStatus, FibStatus, NodeStatus, PeerType, SessionStatus, StatusResponse,
};
use bgp::speaker::control::FamilyPrefixes;
use datastore::ipam_store::{DatastoreIpam, HANDLE_KIND};
use datastore::{Datastore, FileDatastore};
use ipam::{Allocator, AllocatorConfig, AssignRequest, IpFamily, IpPool, IpPoolSpec};

/// A datastore directory and a working directory for manifests.
struct Env {
    dir: tempfile::TempDir,
    transcript: String,
}

impl Env {
    fn new() -> Self {
        Env {
            dir: tempfile::tempdir().unwrap(),
            transcript: String::new(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn datastore_address(&self) -> String {
        format!("file:{}", self.path().join("ds").display())
    }

    fn file(&self, name: &str, text: &str) {
        std::fs::write(self.path().join(name), text).unwrap();
    }

    fn open_datastore(&self) -> Arc<dyn Datastore> {
        Arc::new(FileDatastore::open(self.path().join("ds")).unwrap())
    }

    /// Runs routectl with `args` (and `stdin`) in the work directory and asserts its exit
    /// status; returns it, stdout and stderr with the temporary directory written `$TMP`.
    fn exec(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        expected_exit: i32,
    ) -> (i32, String, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_routectl"))
            .args(args)
            .current_dir(self.path())
            .env("ROUTERD_DATASTORE", self.datastore_address())
            // Never the host's routerd.
            .env("ROUTERD_CONTROL_SOCKET", self.path().join("no-routerd.ctl"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            let mut input = child.stdin.take().unwrap();
            if let Some(text) = stdin {
                input.write_all(text.as_bytes()).unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        let clean = |b: &[u8]| String::from_utf8_lossy(b).replace(&self.tmp(), "$TMP");
        let code = out.status.code().unwrap_or(-1);
        let (stdout, stderr) = (clean(&out.stdout), clean(&out.stderr));
        assert_eq!(
            code, expected_exit,
            "routectl {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        (code, stdout, stderr)
    }

    fn tmp(&self) -> String {
        self.path().display().to_string()
    }

    /// Runs routectl, asserts its exit status, and appends the step to the transcript.
    fn run_with(&mut self, args: &[&str], stdin: Option<&str>, expected_exit: i32) -> String {
        let (code, stdout, stderr) = self.exec(args, stdin, expected_exit);
        let shown: Vec<String> = args
            .iter()
            .map(|a| a.replace(&self.tmp(), "$TMP"))
            .collect();
        self.transcript
            .push_str(&format!("$ routectl {}\n", shown.join(" ")));
        self.transcript.push_str(&stdout);
        if !stderr.is_empty() {
            self.transcript.push_str("[stderr]\n");
            self.transcript.push_str(&stderr);
        }
        self.transcript.push_str(&format!("[exit {code}]\n\n"));
        stdout
    }

    /// Runs routectl and asserts its exit status, leaving the step out of the transcript;
    /// returns stdout and stderr.
    fn run_unrecorded(&self, args: &[&str], expected_exit: i32) -> (String, String) {
        let (_, stdout, stderr) = self.exec(args, None, expected_exit);
        (stdout, stderr)
    }

    fn run(&mut self, args: &[&str], expected_exit: i32) -> String {
        self.run_with(args, None, expected_exit)
    }
}

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.txt"))
}

/// Compares `actual` with the golden file (or rewrites it with `UPDATE_GOLDEN=1`).
fn assert_golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the output at line {} (UPDATE_GOLDEN=1 regenerates it)\n\
             --- expected\n{expected}\n--- actual\n{actual}",
            path.display(),
            line + 1
        );
    }
}

const NODES: &str = "\
apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: node-1
spec:
  bgp:
    ipv4Address: 10.0.0.11/24
    ipv6Address: fd00::11/64
---
apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: node-2
  labels:
    rack: r1
spec:
  bgp:
    ipv4Address: 10.0.0.12/24
    asNumber: 65002
---
apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: node-3
spec: {}
";

const PEERS: &str = "\
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: rack1-tor
spec:
  peerIP: 192.0.2.1
  asNumber: 64513
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: node1-peer
spec:
  node: node-1
  peerIP: 192.0.2.2
  asNumber: 64514
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: rack-peers
spec:
  nodeSelector: rack == 'r1'
  peerIP: 192.0.2.3:1179
  asNumber: 64515
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: mesh-by-selector
spec:
  peerSelector: has(route-reflector)
";

const POOLS: &str = "\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: default-ipv4-ippool
spec:
  cidr: 10.65.0.0/16
  blockSize: 26
  ipipMode: Always
  natOutgoing: true
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: rack-v6
spec:
  cidr: fd00:65::/48
  vxlanMode: CrossSubnet
  nodeSelector: rack == 'r1'
  disabled: true
";

#[test]
fn get_nodes_plain_wide_yaml_json() {
    let mut env = Env::new();
    env.file("nodes.yaml", NODES);
    env.run(&["create", "-f", "nodes.yaml"], 0);
    env.run(&["get", "nodes"], 0);
    // node-1 inherits the default AS 64512 (no BGPConfiguration yet), node-2 has its own,
    // node-3 runs no BGP.
    let wide = env.run(&["get", "nodes", "-o", "wide"], 0);
    assert!(wide.contains("node-1   (64512)"), "{wide}");
    env.file(
        "bgpconfig.yaml",
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  asNumber: 64600\n  nodeToNodeMeshEnabled: false\n  logSeverityScreen: Info\n",
    );
    env.run(&["apply", "-f", "bgpconfig.yaml"], 0);
    let wide = env.run(&["get", "node", "--output=wide"], 0);
    assert!(wide.contains("node-1   (64600)"), "{wide}");
    env.run(&["get", "bgpconfig"], 0);
    env.run(&["get", "node", "node-2", "-o", "wide"], 0);
    env.run(&["get", "node", "node-1", "-o", "yaml"], 0);
    env.run(&["get", "nodes", "-o", "yaml"], 0);
    env.run(&["get", "nodes", "-o", "json"], 0);
    env.run(&["get", "node", "node-9"], 1);
    env.run(&["get", "node", "node-9", "--skip-not-exists"], 0);
    assert_golden("get_nodes", &env.transcript);
}

#[test]
fn get_bgp_peers_global_node_selector_and_v1_scope() {
    let mut env = Env::new();
    env.file("peers.yaml", PEERS);
    env.run(&["create", "-f", "peers.yaml"], 0);
    env.run(&["get", "bgpPeer"], 0);
    env.run(&["get", "bgppeers", "-o", "wide"], 0);
    env.run(&["get", "bgpPeer", "--scope=global"], 0);
    env.run(&["get", "bgpPeer", "--scope=node", "--node=node-1"], 0);
    env.run(
        &[
            "get",
            "bgpPeer",
            "192.0.2.2",
            "--scope=node",
            "--node=node-1",
            "-o",
            "yaml",
        ],
        0,
    );
    env.run(&["get", "bgpPeer", "rack1-tor", "-o", "json"], 0);
    env.run(
        &[
            "delete",
            "bgpPeer",
            "192.0.2.2",
            "--scope=node",
            "--node=node-1",
        ],
        0,
    );
    env.run(
        &[
            "delete",
            "bgpPeer",
            "192.0.2.2",
            "--scope=node",
            "--node=node-1",
        ],
        1,
    );
    env.run(
        &[
            "delete",
            "bgpPeer",
            "192.0.2.2",
            "--scope=node",
            "--node=node-1",
            "--skip-not-exists",
        ],
        0,
    );
    env.run(&["delete", "bgpPeer", "192.0.2.1", "--scope=global"], 0);
    env.run(&["get", "bgpPeer", "--scope=global"], 0);
    env.run(&["get", "ippool", "--scope=global"], 1);
    env.run(&["delete", "bgpPeer", "not-an-ip", "--scope=global"], 1);
    env.run(&["get", "bgpPeer"], 0);
    assert_golden("bgp_peers", &env.transcript);
}

#[test]
fn get_ippools_and_filters() {
    let mut env = Env::new();
    env.file("pools.yaml", POOLS);
    env.file(
        "filter.yaml",
        "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: no-default\nspec:\n  exportV4:\n  - action: Reject\n    cidr: 0.0.0.0/0\n    matchOperator: Equal\n  importV4:\n  - action: Reject\n    cidr: 0.0.0.0/0\n    matchOperator: Equal\n  - action: Accept\n    cidr: 10.0.0.0/8\n    matchOperator: In\n",
    );
    env.run(&["create", "-f", "pools.yaml"], 0);
    env.run(&["get", "ippool"], 0);
    env.run(&["get", "ippool", "-o", "wide"], 0);
    env.run(&["get", "ipp", "rack-v6", "-o", "yaml"], 0);
    env.run(&["create", "-f", "filter.yaml"], 0);
    env.run(&["get", "bgpfilter"], 0);
    assert_golden("ippools", &env.transcript);
}

#[test]
fn write_commands_report_as_calicoctl() {
    let mut env = Env::new();
    env.file("peers.yaml", PEERS);
    let first_two: String = PEERS
        .split("---\n")
        .take(2)
        .collect::<Vec<_>>()
        .join("---\n");
    env.file("two-peers.yaml", &first_two);
    env.file(
        "mixed.yaml",
        &format!(
            "{}---\n{}",
            NODES.split("---\n").next().unwrap(),
            POOLS.split("---\n").next().unwrap()
        ),
    );

    env.run(&["create", "-f", "two-peers.yaml"], 0);
    env.run(&["create", "-f", "two-peers.yaml"], 1);
    env.run(&["create", "-f", "two-peers.yaml", "--skip-exists"], 0);
    // Two exist, two are new: create fails part-way, apply does both.
    env.run(&["create", "-f", "peers.yaml"], 1);
    env.run(&["apply", "-f", "peers.yaml"], 0);
    env.run(&["replace", "-f", "peers.yaml"], 0);
    // A manifest carrying an outdated resourceVersion is refused.
    env.file(
        "stale.yaml",
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: rack1-tor\n  resourceVersion: \"1\"\nspec:\n  peerIP: 192.0.2.1\n  asNumber: 65000\n",
    );
    env.run(&["replace", "-f", "stale.yaml"], 1);
    env.run(&["delete", "bgppeer", "rack1-tor"], 0);
    env.run(&["delete", "bgppeer", "rack1-tor"], 1);
    env.run(&["delete", "bgppeer", "rack1-tor", "--skip-not-exists"], 0);
    // Replace stops at the first resource that does not exist.
    env.run(&["replace", "-f", "peers.yaml"], 1);
    env.run(&["delete", "-f", "peers.yaml", "--skip-not-exists"], 0);
    env.run_with(&["apply", "-f", "-"], Some(&first_two), 0);
    env.run(&["create", "-f", "mixed.yaml"], 0);
    env.run(&["get", "bgpPeer"], 0);
    assert_golden("write_messages", &env.transcript);
}

#[test]
fn errors_name_what_failed_and_exit_non_zero() {
    let mut env = Env::new();
    env.file(
        "bad-asn.yaml",
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: rack1-tor\nspec:\n  peerIP: 192.0.2.1\n  asNumber: 0\n",
    );
    env.file(
        "typo.yaml",
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: node-1\nspec:\n  bgp:\n    ipv4Address: 10.0.0.11/24\n    asNumbr: 65001\n",
    );
    env.file(
        "bad-pool.yaml",
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: 10.65.0.0/16\n  blockSize: 33\n",
    );
    env.file("syntax.yaml", "kind: [unclosed\n");
    env.file(
        "wrong-kind.yaml",
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  name: x\n",
    );
    env.file("empty.yaml", "");
    env.run(&["create", "-f", "bad-asn.yaml"], 1);
    env.run(&["apply", "-f", "typo.yaml"], 1);
    env.run(&["create", "-f", "bad-pool.yaml"], 1);
    env.run(&["create", "-f", "syntax.yaml"], 1);
    env.run(&["create", "-f", "wrong-kind.yaml"], 1);
    env.run(&["create", "-f", "empty.yaml"], 1);
    env.run(&["create", "-f", "missing.yaml"], 1);
    env.run(&["get", "networkpolicy"], 1);
    env.run(&["get"], 1);
    env.run(&["get", "nodes", "-o", "table"], 1);
    env.run(&["delete", "node"], 1);
    // The list of supported addresses belongs to the datastore module: only our part of the
    // message is pinned here.
    let (_, stderr) = env.run_unrecorded(
        &["--datastore", "zookeeper://10.0.0.1:2181", "get", "nodes"],
        1,
    );
    assert!(
        stderr.starts_with(
            "Failed to create routerd datastore client for \"zookeeper://10.0.0.1:2181\": invalid datastore address"
        ),
        "{stderr}"
    );
    // Read commands never bring a datastore into being: a mistyped address is an error, not
    // an empty listing.
    env.run(&["get", "nodes"], 1);
    env.run(&["--datastore", "file:typo-dir", "ipam", "show"], 1);
    // An address that cannot be opened at all.
    env.file(
        "good.yaml",
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: node-1\n",
    );
    env.run(
        &[
            "--datastore",
            "file:/proc/routerd-nonexistent",
            "create",
            "-f",
            "good.yaml",
        ],
        1,
    );
    // A stored record that no longer parses is reported, the others still listed.
    env.run(&["create", "-f", "bad-asn.yaml"], 1);
    let ds = env.open_datastore();
    ds.create(
        "BGPPeer",
        "broken",
        serde_json::json!({"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": "broken"}, "spec": {"peerIP": 7}}),
    )
    .unwrap();
    env.run(&["get", "bgppeers"], 1);
    assert_golden("errors", &env.transcript);
}

fn pool(name: &str, cidr: &str, block: i64) -> IpPool {
    IpPool::new(
        name,
        &IpPoolSpec {
            cidr: cidr.into(),
            block_size: Some(block),
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn ipam_show_check_release() {
    let mut env = Env::new();
    env.file(
        "pools.yaml",
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: default-ipv4-ippool\nspec:\n  cidr: 10.65.0.0/24\n  blockSize: 26\n---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: default-ipv6-ippool\nspec:\n  cidr: fd00:65::/48\n  blockSize: 122\n",
    );
    env.run(&["create", "-f", "pools.yaml"], 0);
    // Pods on two nodes, assigned through the same datastore as routerd would.
    let ds = env.open_datastore();
    let allocator = Allocator::new(DatastoreIpam::new(ds.clone()), AllocatorConfig::default());
    let pools = [
        pool("default-ipv4-ippool", "10.65.0.0/24", 26),
        pool("default-ipv6-ippool", "fd00:65::/48", 122),
    ];
    let labels = BTreeMap::new();
    for (i, node) in ["node-1", "node-1", "node-1", "node-2"].iter().enumerate() {
        let handle = format!("pod-{i}");
        allocator
            .assign(
                &pools,
                &labels,
                &AssignRequest::pod(&handle, node, IpFamily::V4, "default", &handle),
            )
            .unwrap();
    }
    allocator
        .assign(
            &pools,
            &labels,
            &AssignRequest::pod("pod-v6", "node-1", IpFamily::V6, "default", "pod-v6"),
        )
        .unwrap();

    env.run(&["ipam", "show"], 0);
    env.run(&["ipam", "show", "--show-blocks"], 0);
    env.run(&["ipam", "show", "--ip", "10.65.0.64"], 0);
    env.run(&["ipam", "show", "--ip", "10.65.0.200"], 0);
    env.run(&["ipam", "show", "--ip", "10.65.0.1", "--show-blocks"], 2);
    env.run(&["ipam", "check"], 0);
    // Lose pod-1's handle record: its address is now leaked.
    let handle = ds.get(HANDLE_KIND, "pod-1").unwrap();
    ds.delete(HANDLE_KIND, "pod-1", Some(handle.version))
        .unwrap();
    env.run(&["ipam", "check"], 1);
    env.run(&["ipam", "release", "--ip", "10.65.0.1"], 0);
    env.run(&["ipam", "check"], 0);
    env.run(&["ipam", "release", "--ip", "10.65.0.1"], 1);
    env.run(&["ipam", "release", "--ip", "not-an-ip"], 2);
    env.run(&["ipam", "show"], 0);
    // A hand-written block overlapping node-1's, assigning 10.65.0.0 a second time to a
    // handle that does not exist: a double assignment and a leak.
    let mut allocations = vec![serde_json::Value::Null; 128];
    allocations[0] = serde_json::json!(0);
    ds.create(
        "IPAMBlock",
        "10-65-0-0-25",
        serde_json::json!({
            "cidr": "10.65.0.0/25",
            "allocations": allocations,
            "unallocated": (1..128).collect::<Vec<u32>>(),
            "attributes": [{"handle_id": "rogue"}],
        }),
    )
    .unwrap();
    env.run(&["ipam", "check"], 1);
    assert_golden("ipam", &env.transcript);
}

/// WorkloadEndpoints as the CNI plugin writes them, in every output format; a borrowed
/// address in `ipam show --show-borrowed`.
#[test]
fn workload_endpoints_and_borrowed_addresses() {
    let mut env = Env::new();
    env.file(
        "weps.yaml",
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: node--1-k8s-web--0-eth0\n  namespace: shop\n  labels:\n    projectcalico.org/namespace: shop\n    projectcalico.org/orchestrator: k8s\nspec:\n  orchestrator: k8s\n  node: node-1\n  pod: web-0\n  endpoint: eth0\n  containerID: 4f2a\n  interfaceName: cali0d1e2f3a4b5\n  mac: 52:54:00:12:34:56\n  ipNetworks: [10.65.0.5/32, 'fd00:65::5/128']\n---\napiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: node--2-cni-9c1b-eth0\nspec:\n  orchestrator: cni\n  workload: 9c1b\n  node: node-2\n  endpoint: eth0\n  containerID: 9c1b\n  interfaceName: cali9c1b0000000\n  ipNetworks: [10.65.0.70/32]\n",
    );
    env.file(
        "bad-wep.yaml",
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: n-k8s-p-eth0\nspec:\n  orchestrator: k8s\n  node: n\n  endpoint: eth0\n  ipNetworks: [10.65.0.0/26]\n",
    );
    env.run(&["create", "-f", "weps.yaml"], 0);
    env.run(&["get", "workloadendpoints"], 0);
    env.run(&["get", "wep", "-o", "wide"], 0);
    env.run(&["get", "weps", "-o", "yaml"], 0);
    env.run(&["create", "-f", "bad-wep.yaml"], 1);
    // By name: the `default` namespace, as calicoctl without -n.
    env.run(&["get", "wep", "node--2-cni-9c1b-eth0"], 0);
    env.run(&["get", "wep", "node--1-k8s-web--0-eth0"], 1);

    // Two /26 blocks, claimed by node-1 and node-3: node-2 can only borrow.
    let ds = env.open_datastore();
    let allocator = Allocator::new(DatastoreIpam::new(ds), AllocatorConfig::default());
    let pools = [pool("p", "10.66.0.0/25", 26)];
    let labels = BTreeMap::new();
    for node in ["node-1", "node-3"] {
        allocator
            .ensure_block(&pools, node, &labels, IpFamily::V4)
            .unwrap();
    }
    let a = allocator
        .assign(
            &pools,
            &labels,
            &AssignRequest::pod("lent", "node-2", IpFamily::V4, "shop", "api-1"),
        )
        .unwrap();
    assert!(a.borrowed);
    env.run(&["ipam", "show", "--show-borrowed"], 0);
    // A manifest's namespace finds its record.
    env.run(&["delete", "-f", "weps.yaml"], 0);
    env.run(&["get", "weps"], 0);
    assert_golden("workload_endpoints", &env.transcript);
}

/// A node status whose times format the same whatever the clock says: state changes older
/// than a day print as dates, 0 as `-`.
fn canned_status() -> NodeStatus {
    let session = |name: &str, addr: &str, peer_type, state: &str, since, error: Option<&str>| {
        SessionStatus {
            name: name.into(),
            address: addr.parse().unwrap(),
            peer_type,
            remote_as: 64512,
            state: state.into(),
            since_unix: since,
            families: vec!["ipv4-unicast".into()],
            prefixes_received: if state == "Established" { 12 } else { 0 },
            prefixes_accepted: if state == "Established" { 11 } else { 0 },
            prefixes_advertised: if state == "Established" { 3 } else { 0 },
            family_prefixes: Vec::new(),
            last_error: error.map(Into::into),
            bfd: None,
        }
    };
    NodeStatus {
        node: "node-1".into(),
        version: "0.1.0".into(),
        state: DaemonState::Running,
        uptime_secs: 2 * 86_400 + 3 * 3600 + 4 * 60 + 5,
        as_number: 64512,
        router_id: Ipv4Addr::new(10, 0, 0, 11),
        cluster_id: None,
        blocks: vec!["10.65.0.0/26".into()],
        sessions: vec![
            // 2024-01-02 03:04:05 UTC.
            session(
                "Mesh_10_0_0_12",
                "10.0.0.12",
                PeerType::NodeMesh,
                "Established",
                1_704_164_645,
                None,
            ),
            session(
                "Global_192_0_2_1",
                "192.0.2.1",
                PeerType::Global,
                "Active",
                1_704_164_645,
                Some("Socket: Connection refused"),
            ),
            session(
                "Node_192_0_2_2",
                "192.0.2.2",
                PeerType::NodeSpecific,
                "Connect",
                0,
                None,
            ),
            session(
                "Mesh_fd00__12",
                "fd00::12",
                PeerType::NodeMesh,
                "Established",
                1_700_000_000,
                None,
            ),
        ],
        fib: FibStatus {
            routes: 14,
            in_sync: true,
            errors: 0,
            last_reconcile_ms: Some(3),
        },
        datastore: DatastoreStatus {
            address: "etcd:http://10.0.0.201:2379,http://10.0.0.202:2379".into(),
            reachable: true,
            since_unix: 1_704_164_645,
            last_error: None,
        },
    }
}

/// Serves one status request on a Unix socket, as routerd's control socket does.
fn serve_status_once(path: &Path, status: NodeStatus) -> std::thread::JoinHandle<()> {
    serve_once(path, r#"{"cmd":"status"}"#, StatusResponse::Status(status))
}

/// Serves one request on a Unix socket: checks it is `request`, answers `response`.
fn serve_once(
    path: &Path,
    request: &'static str,
    response: StatusResponse,
) -> std::thread::JoinHandle<()> {
    let listener = UnixListener::bind(path).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "routectl never connected");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), request);
        let mut answer = serde_json::to_vec(&response).unwrap();
        answer.push(b'\n');
        (&stream).write_all(&answer).unwrap();
    })
}

#[test]
fn node_status_from_routerd_control_socket() {
    let mut env = Env::new();
    let socket = env.path().join("routerd.ctl");
    let server = serve_status_once(&socket, canned_status());
    let socket_arg = format!("--control-socket={}", socket.display());
    let out = env.run(&[&socket_arg, "node", "status"], 0);
    server.join().unwrap();
    assert!(out.starts_with("routerd process is running.\n"), "{out}");
    // Not running: calicoctl's sentence, and the cause.
    env.run(&["node", "status"], 1);
    assert_golden("node_status", &env.transcript);
}

/// Two paths to a prefix (the best one, and one that lost on the router ID), our own block,
/// and an ECMP pair, as the speaker reports them.
fn canned_routes() -> Vec<bgp::speaker::control::RouteView> {
    let path =
        |prefix: &str, peer: Option<&str>, decision: &str| bgp::speaker::control::RouteView {
            prefix: prefix.parse().unwrap(),
            peer: peer.map(|p| p.parse().unwrap()),
            best: decision == "best",
            next_hop: peer.map(|p| p.parse().unwrap()),
            as_path: if peer.is_some() {
                vec![65002, 65010]
            } else {
                vec![]
            },
            origin: "IGP".into(),
            med: peer.map(|_| 10),
            local_pref: Some(100),
            communities: peer.map_or(vec![], |_| vec!["65002:300".into()]),
            large_communities: vec![],
            originator_id: None,
            cluster_list: vec![],
            decision: decision.into(),
            path_id: 0,
        };
    let mut reflected = path("10.70.0.0/24", Some("10.0.0.13"), "beaten: lower router ID");
    reflected.originator_id = Some("10.0.0.40".into());
    reflected.cluster_list = vec!["1.0.0.1".into()];
    vec![
        path("10.65.0.0/26", None, "best"),
        path("10.70.0.0/24", Some("10.0.0.12"), "best"),
        reflected,
        path("10.80.0.0/24", Some("10.0.0.12"), "best"),
        path("10.80.0.0/24", Some("10.0.0.14"), "multipath"),
    ]
}

#[test]
fn node_routes_from_routerd_control_socket() {
    let mut env = Env::new();
    let socket = env.path().join("routerd.ctl");
    let socket_arg = format!("--control-socket={}", socket.display());
    let routes = |r: Vec<bgp::speaker::control::RouteView>| StatusResponse::Routes { routes: r };
    let server = serve_once(
        &socket,
        r#"{"cmd":"routes","prefix":null,"longest_match":false}"#,
        routes(canned_routes()),
    );
    env.run(&[&socket_arg, "node", "routes"], 0);
    server.join().unwrap();
    std::fs::remove_file(&socket).unwrap();
    let server = serve_once(
        &socket,
        r#"{"cmd":"routes","prefix":"10.70.0.9/32","longest_match":true}"#,
        routes(canned_routes()[1..3].to_vec()),
    );
    env.run(&[&socket_arg, "node", "routes", "10.70.0.9"], 0);
    server.join().unwrap();
    std::fs::remove_file(&socket).unwrap();
    let server = serve_once(
        &socket,
        r#"{"cmd":"routes","prefix":"10.99.0.0/24","longest_match":false}"#,
        routes(vec![]),
    );
    env.run(&[&socket_arg, "node", "routes", "10.99.0.0/24"], 0);
    server.join().unwrap();
    env.run(&[&socket_arg, "node", "routes", "10.99.0.1/24"], 1);
    assert_golden("node_routes", &env.transcript);
}

#[test]
fn node_status_since_within_a_day_is_a_time_of_day() {
    let mut status = canned_status();
    // now = 2026-11-22 07:56:25 UTC; state changes 1 minute and 23 hours ago.
    let now = 1_795_334_185;
    status.sessions[0].since_unix = now - 60;
    status.sessions[1].since_unix = now - 23 * 3600;
    status.sessions[3].since_unix = now - 86_400;
    status.cluster_id = Some(Ipv4Addr::new(224, 0, 0, 1));
    // BFD on two sessions: one Up, one down after missing the peer's packets.
    let bfd = |state: &str, diag: &str| bgp::speaker::control::BfdView {
        state: state.into(),
        remote_state: "Up".into(),
        diag: diag.into(),
        tx_interval_ms: Some(300),
        detection_time_ms: 900,
        error: None,
    };
    status.sessions[0].bfd = Some(bfd("Up", "No Diagnostic"));
    status.sessions[1].bfd = Some(bfd("Down", "Control Detection Time Expired"));
    // An MP-BGP session carrying both families: one row per family.
    status.sessions[0].family_prefixes = ["ipv4-unicast", "ipv6-unicast"]
        .iter()
        .zip([(10, 9, 2), (2, 2, 1)])
        .map(|(f, (received, accepted, advertised))| FamilyPrefixes {
            family: f.to_string(),
            received,
            accepted,
            advertised,
        })
        .collect();
    // A partitioned node says since when and why.
    status.datastore.reachable = false;
    status.datastore.since_unix = now - 90;
    status.datastore.last_error = Some(
        "etcd datastore: cannot reach the etcd cluster at http://10.0.0.201:2379: timed out".into(),
    );
    assert_golden("node_status_clock", &format_node_status(&status, now));
}

#[test]
fn patch_and_label_edit_stored_resources() {
    let mut env = Env::new();
    env.file("nodes.yaml", NODES);
    env.file("peers.yaml", PEERS);
    env.run_unrecorded(&["create", "-f", "nodes.yaml"], 0);
    env.run_unrecorded(&["create", "-f", "peers.yaml"], 0);
    // Merge patches (calicoctl's default type), an RFC 6902 patch, and the refusals.
    env.run(
        &[
            "patch",
            "bgppeer",
            "rack1-tor",
            "-p",
            r#"{"spec":{"asNumber":"65001"}}"#,
        ],
        0,
    );
    env.run(
        &[
            "patch",
            "node",
            "node-2",
            "--patch",
            r#"{"spec":{"bgp":{"asNumber":null}}}"#,
        ],
        0,
    );
    env.run(
        &[
            "patch",
            "bgppeer",
            "node1-peer",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/peerIP","value":"192.0.2.22"}]"#,
        ],
        0,
    );
    env.run(&["get", "bgppeers"], 0);
    env.run(
        &[
            "patch",
            "bgppeer",
            "rack1-tor",
            "-p",
            r#"{"spec":{"asNumbr":1}}"#,
        ],
        1,
    );
    env.run(
        &[
            "patch",
            "bgppeer",
            "rack1-tor",
            "-p",
            r#"{"spec":{"peerIP":"x"}}"#,
        ],
        1,
    );
    env.run(&["patch", "bgppeer", "rack1-tor", "-p", "{not json"], 1);
    env.run(
        &[
            "patch",
            "bgppeer",
            "rack1-tor",
            "-p",
            r#"{"metadata":{"name":"other"}}"#,
        ],
        1,
    );
    env.run(&["patch", "bgppeer", "nope", "-p", "{}"], 1);
    env.run(
        &[
            "patch",
            "bgppeer",
            "rack1-tor",
            "--type=strange",
            "-p",
            "{}",
        ],
        1,
    );
    env.run(&["patch", "networkpolicy", "x", "-p", "{}"], 1);
    // Labels: set, the same again, a new value with and without --overwrite, remove.
    env.run(&["label", "nodes", "node-1", "zone=a"], 0);
    env.run(&["label", "nodes", "node-1", "zone=a"], 0);
    env.run(&["label", "nodes", "node-1", "zone=b"], 1);
    env.run(&["label", "nodes", "node-1", "zone=b", "--overwrite"], 0);
    env.run(&["label", "nodes", "node-1", "zone", "--remove"], 0);
    env.run(&["label", "nodes", "node-1", "zone", "--remove"], 1);
    env.run(&["label", "nodes", "node-9", "zone=a"], 1);
    env.run(&["label", "nodes", "node-1", "zone"], 1);
    env.run(&["label", "nodes", "node-1", "bad key=a"], 1);
    env.run(&["label", "nodes", "node-1", "rack=r2", "-n", "ns1"], 1);
    env.run(&["get", "nodes", "node-1", "node-2", "-o", "yaml"], 0);
    assert_golden("patch_label", &env.transcript);
}

#[test]
fn validate_and_convert_need_no_datastore() {
    let mut env = Env::new();
    env.file("peers.yaml", PEERS);
    env.file(
        "mixed.yaml",
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: ok}\nspec: {peerIP: 192.0.2.1, asNumber: 64513}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: bad-ip}\nspec: {peerIP: 192.0.2.300, asNumber: 64513}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: bad-pool}\nspec: {cidr: 10.65.0.0/16, blockSize: 40}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: typo}\nspec: {cidr: 10.66.0.0/16, natOutgoin: true}\n",
    );
    env.file(
        "v1.yaml",
        "apiVersion: routerd.io/v1\nkind: IPPool\nmetadata: {name: pods, resourceVersion: '12'}\nspec: {cidr: 10.65.0.0/16}\n",
    );
    env.file("empty.yaml", "");
    env.run(&["validate", "-f", "peers.yaml"], 0);
    env.run(&["validate", "-f", "mixed.yaml"], 1);
    env.run(&["validate", "-f", "empty.yaml"], 1);
    env.run(&["validate", "-f", "missing.yaml"], 1);
    env.run(&["convert", "-f", "v1.yaml"], 0);
    env.run(&["convert", "-f", "v1.yaml", "-o", "json"], 0);
    env.run(&["convert", "-f", "v1.yaml", "-o", "toml"], 1);
    env.run(&["convert", "-f", "mixed.yaml"], 1);
    // Neither touched a datastore.
    assert!(!env.path().join("ds").exists());
    assert_golden("validate_convert", &env.transcript);
}

#[test]
fn get_with_custom_columns_and_go_templates() {
    let mut env = Env::new();
    env.file("nodes.yaml", NODES);
    env.file("peers.yaml", PEERS);
    env.file(
        "peers.tmpl",
        "{{range .items}}{{.metadata.name}}\t{{.spec.peerIP}}\n{{end}}",
    );
    env.run_unrecorded(&["create", "-f", "nodes.yaml"], 0);
    env.run_unrecorded(&["create", "-f", "peers.yaml"], 0);
    env.run(&["get", "nodes", "-o", "custom-columns=NAME,ASN,IPV4"], 0);
    env.run(&["get", "bgppeers", "-o", "custom-columns=PEERIP,NAME"], 0);
    env.run(&["get", "nodes", "-o", "custom-columns=NAME,PEERIP"], 1);
    env.run(&["get", "nodes", "-o", "custom-columns="], 1);
    env.run(
        &[
            "get",
            "nodes",
            "-o",
            r#"go-template={{range .items}}{{.metadata.name}} {{if .spec.bgp}}{{.spec.bgp.ipv4Address}}{{else}}-{{end}}{{"\n"}}{{end}}"#,
        ],
        0,
    );
    env.run(
        &[
            "get",
            "bgppeer",
            "rack1-tor",
            "-o",
            r#"go-template={{.spec.asNumber}}{{"\n"}}"#,
        ],
        0,
    );
    env.run(&["get", "bgppeers", "-o", "go-template-file=peers.tmpl"], 0);
    env.run(&["get", "bgppeers", "-o", "go-template={{range .items}"], 1);
    env.run(
        &["get", "bgppeers", "-o", "go-template-file=missing.tmpl"],
        1,
    );
    env.run(&["get", "bgppeers", "-o", "jsonpath={.items}"], 1);
    assert_golden("output_formats", &env.transcript);
}

#[test]
fn ipam_split_and_configure() {
    let mut env = Env::new();
    env.file("pools.yaml", POOLS);
    env.run_unrecorded(&["create", "-f", "pools.yaml"], 0);
    env.run(&["ipam", "split", "4", "--name", "default-ipv4-ippool"], 0);
    env.run(&["get", "ippools", "-o", "wide"], 0);
    env.run(&["ipam", "split", "3", "--cidr", "10.65.0.0/18"], 1);
    env.run(&["ipam", "split", "two", "--cidr", "10.65.0.0/18"], 1);
    env.run(&["ipam", "split", "2", "--cidr", "10.99.0.0/16"], 1);
    env.run(&["ipam", "split", "1024", "--cidr", "10.65.0.0/18"], 1);
    env.run(&["ipam", "show", "--show-configuration"], 0);
    env.run(&["ipam", "configure", "--strictaffinity=true"], 0);
    env.run(&["ipam", "show", "--show-configuration"], 0);
    env.run(&["ipam", "configure", "--strictaffinity=sometimes"], 1);
    env.run(&["ipam", "configure"], 1);
    env.run(&["ipam", "configure", "--max-blocks-per-host=4"], 1);
    // The setting the IPAM plugin reads.
    let (settings, _) = datastore::ipam_store::read_ipam_config(&*env.open_datastore()).unwrap();
    assert!(settings.allocator_config().strict_affinity);
    assert_golden("ipam_split_configure", &env.transcript);
}

#[test]
fn version_shows_the_client_and_this_nodes_routerd() {
    let mut env = Env::new();
    env.run(&["version", "--client"], 0);
    let socket = env.path().join("routerd.ctl");
    let server = serve_status_once(&socket, canned_status());
    let socket_arg = format!("--control-socket={}", socket.display());
    env.run(&[&socket_arg, "version"], 0);
    server.join().unwrap();
    // No routerd: the client lines, then why the cluster's are missing.
    env.run(&["version"], 1);
    let commit = agent::routectl::version::GIT_COMMIT;
    let transcript = env.transcript.replace(commit, "<commit>");
    assert_golden("version", &transcript);
}

#[test]
fn checksystem_reports_features_and_fails_only_without_what_routerd_needs() {
    use agent::routectl::checksystem::{evaluate, Facts, Feature};
    let facts = |kernel: &str, missing: &[&str], forwarding: Option<&str>| Facts {
        kernel: Some(kernel.into()),
        features: ["vxlan", "ipip", "tun", "nf_tables", "nft_masq"]
            .into_iter()
            .map(|name| Feature {
                name,
                present: !missing.contains(&name),
            })
            .collect(),
        ipv4_forwarding: forwarding.map(Into::into),
        ipv6_forwarding: None,
    };
    let mut out = String::new();
    for (title, f) in [
        (
            "this lab's kernel: no ipip, TUN covers it",
            facts("6.18.44", &["ipip"], Some("0")),
        ),
        (
            "nothing optional",
            facts(
                "5.10.0-28-amd64",
                &["vxlan", "ipip", "tun", "nf_tables", "nft_masq"],
                Some("1"),
            ),
        ),
        ("too old, no forwarding", facts("4.4.0", &[], None)),
    ] {
        let (report, ok) = evaluate(&f);
        out.push_str(&format!("== {title}: ok={ok}\n{report}\n"));
    }
    assert_golden("checksystem", &out);
}

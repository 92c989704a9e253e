//! `routectl delete node` takes the node's state with it, as Calico's node deletion does:
//! its workload endpoints and their addresses, its tunnel address, its block affinities (its
//! block, empty once those are released, is deleted), the BGPPeers scoped to it and its
//! `node.<name>` BGPConfiguration. Another node's state is untouched. On the embedded
//! datastore; no kernel involved.
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use datastore::ipam_store::DatastoreIpam;
use datastore::{Datastore, FileDatastore};
use ipam::{Allocator, AllocatorConfig, AssignRequest, IpFamily, IpPool, IpPoolSpec, TunnelKind};

const ROUTECTL: &str = env!("CARGO_BIN_EXE_routectl");

fn routectl(dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(ROUTECTL)
        .arg("--datastore")
        .arg(format!("file:{}", dir.join("ds").display()))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn names(ds: &Arc<dyn Datastore>, kind: &str) -> Vec<String> {
    let mut out: Vec<String> = ds
        .list(kind)
        .unwrap()
        .records
        .into_iter()
        .map(|r| r.name)
        .collect();
    out.sort();
    out
}

#[test]
fn deleting_a_node_releases_its_addresses_blocks_endpoints_and_scoped_config() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: pool\n\
        spec:\n  cidr: 10.244.0.0/16\n  blockSize: 24\n  vxlanMode: Always\n---\n\
        apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: node-1\n\
        spec:\n  bgp:\n    ipv4Address: 10.0.0.1/24\n---\n\
        apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: node-2\n\
        spec:\n  bgp:\n    ipv4Address: 10.0.0.2/24\n---\n\
        apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: node-2-tor\n\
        spec:\n  node: node-2\n  peerIP: 10.0.0.254\n  asNumber: 65000\n---\n\
        apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: global-tor\n\
        spec:\n  peerIP: 10.0.0.253\n  asNumber: 65000\n---\n\
        apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: node.node-2\n\
        spec:\n  listenPort: 1179\n";
    let (ok, out) = routectl(dir.path(), &["create", "-f", "-"], Some(manifests));
    assert!(ok, "{out}");

    // Node 2's IPAM: a pod address and a VXLAN tunnel address in its block; node 1 has a
    // pod too.
    let ds: Arc<dyn Datastore> = Arc::new(FileDatastore::open(dir.path().join("ds")).unwrap());
    let allocator = Allocator::new(DatastoreIpam::new(ds.clone()), AllocatorConfig::default());
    let pool = IpPool::new(
        "pool",
        &IpPoolSpec {
            cidr: "10.244.0.0/16".into(),
            block_size: Some(24),
            ipip_mode: None,
            vxlan_mode: Some("Always".into()),
            nat_outgoing: false,
            disabled: false,
            node_selector: None,
        },
    )
    .unwrap();
    let pools = std::slice::from_ref(&pool);
    let labels = BTreeMap::new();
    let assign = |handle: &str, node: &str| {
        allocator
            .assign(
                pools,
                &labels,
                &AssignRequest::pod(handle, node, IpFamily::V4, "default", handle),
            )
            .unwrap()
            .address
    };
    let pod2 = assign("pod-2", "node-2");
    let tunnel2 = allocator
        .assign_tunnel_address(pools, "node-2", &labels, TunnelKind::Vxlan)
        .unwrap()
        .address;
    let pod1 = assign("pod-1", "node-1");
    let blocks_before = allocator.affine_blocks("node-2").unwrap();
    assert_eq!(blocks_before.len(), 1, "{blocks_before:?}");
    let block2 = blocks_before[0];
    let weps = format!(
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: node--2-cni-pod2-eth0\n\
         spec:\n  node: node-2\n  orchestrator: cni\n  workload: pod2\n  endpoint: eth0\n  \
         interfaceName: cali2\n  ipNetworks:\n  - {pod2}/32\n---\n\
         apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: node--1-cni-pod1-eth0\n\
         spec:\n  node: node-1\n  orchestrator: cni\n  workload: pod1\n  endpoint: eth0\n  \
         interfaceName: cali1\n  ipNetworks:\n  - {pod1}/32\n"
    );
    let (ok, out) = routectl(dir.path(), &["create", "-f", "-"], Some(&weps));
    assert!(ok, "{out}");

    let (ok, out) = routectl(dir.path(), &["delete", "node", "node-2"], None);
    assert!(ok, "{out}");
    assert!(
        out.contains("Successfully deleted 1 'Node' resource(s)"),
        "{out}"
    );
    assert!(
        out.contains("Released node node-2's state: 1 workload endpoint(s), 2 address(es)"),
        "{out}"
    );

    // Node 2 and everything of its are gone; node 1's are not.
    assert_eq!(names(&ds, "Node"), ["node-1"]);
    assert_eq!(names(&ds, "BGPPeer"), ["global-tor"]);
    assert!(names(&ds, "BGPConfiguration").is_empty());
    assert_eq!(
        names(&ds, "WorkloadEndpoint"),
        ["default.node--1-cni-pod1-eth0"]
    );
    assert!(allocator.affine_blocks("node-2").unwrap().is_empty());
    assert!(allocator.addresses("pod-2").unwrap().is_empty());
    assert!(allocator
        .addresses(&TunnelKind::Vxlan.handle("node-2"))
        .unwrap()
        .is_empty());
    assert_eq!(allocator.addresses("pod-1").unwrap(), vec![pod1]);
    // Its block, empty now, is gone: the range is free for the next node to claim.
    assert!(tunnel2 != pod2 && block2.contains(&tunnel2));
    let (ok, out) = routectl(dir.path(), &["ipam", "show", "--show-blocks"], None);
    assert!(ok && !out.contains(&block2.to_string()), "{out}");
    let (ok, out) = routectl(dir.path(), &["ipam", "check"], None);
    assert!(ok && out.contains("found 0 problems"), "{out}");

    // Deleting it again: the node is not found, nothing else changes.
    let (ok, out) = routectl(dir.path(), &["delete", "node", "node-2"], None);
    assert!(!ok, "{out}");
    assert!(!out.contains("Released"), "{out}");
}

//! routerd on the Kubernetes datastore: the API stand-in of `lab::kube_standin` in a
//! namespace of its own on the nodes' segment, serving Calico's CRDs and Kubernetes Nodes,
//! and a BIRD ToR. Calico-shaped objects, written into the API as Calico's own datastore
//! driver writes them (the v3 examples of Calico's BGP documentation, kept as
//! `crd.projectcalico.org/v1` objects with the `projectcalico.org/metadata` annotation),
//! drive the nodes:
//!
//! 1. the nodes register on their Kubernetes Nodes (Calico's annotations) and mesh; node 2,
//!    restarted with `--node-ip kubernetes-internal-ip`, registers the Kubernetes Node's
//!    InternalIP with its interface's prefix;
//! 2. a BGPPeer towards the ToR with `nodeSelector: rack == 'rack-1'` peers no node until
//!    `kubectl label node node-1 rack=rack-1` (here: the Node replaced with the label):
//!    then node 1's session comes up and the ToR learns node 1's block and the
//!    BGPConfiguration's `serviceClusterIPs`; removing the label takes the session down;
//! 3. the Kubernetes Node of a stopped node is deleted: its blocks, affinities, handles and
//!    workload endpoints are released by the cluster after the grace period
//!    (`ROUTERD_NODE_GC_GRACE=2` on node 1), as Calico's kube-controllers does.
//!
//! Needs root, bird and birdc; only namespaces this test creates are touched.
#![cfg(feature = "kubernetes")]
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

mod support;

use std::time::Duration;

use lab::{require, wait_for, Netns};
use serde_json::json;
use support::{calico_object, Cluster, Store, CALICO_API, KUBE_NODES, POLL, T};

const SERVICES: &str = "10.96.0.0/12";

fn set_label(c: &Cluster, node: &str, key: &str, value: Option<&str>) {
    let mut object = c.kube().object(KUBE_NODES, node).unwrap();
    let labels = object["metadata"]["labels"].as_object_mut().unwrap();
    match value {
        Some(v) => labels.insert(key.into(), json!(v)),
        None => labels.remove(key),
    };
    c.kube().replace(KUBE_NODES, object).unwrap();
}

fn tor_has(tor: &lab::bird::Bird, prefix: &str) -> bool {
    tor.route(prefix).ok().flatten().is_some()
}

/// The objects of Calico's kind `plural` whose spec field `field` is `value`.
fn objects_with(c: &Cluster, plural: &str, field: &str, value: &str) -> usize {
    c.kube()
        .objects(&format!("{CALICO_API}/{plural}"))
        .iter()
        .filter(|o| o["spec"][field] == value)
        .count()
}

#[test]
fn calico_objects_drive_routerd_on_the_kubernetes_datastore() {
    require(&["ip", "bird", "birdc"]);
    let mut c = Cluster::start_on(
        "kdd",
        2,
        "{cidr: 10.244.0.0/16, blockSize: 24, ipipMode: Never, vxlanMode: Never}",
        Store::Kubernetes,
    );
    // 1. Registered on the Kubernetes Nodes, through their status subresource.
    let node1 = c.kube().object(KUBE_NODES, "node-1").unwrap();
    assert_eq!(
        node1["metadata"]["annotations"]["projectcalico.org/IPv4Address"],
        json!("10.0.0.1/24"),
        "{node1}"
    );
    assert!(c
        .kube()
        .requests()
        .iter()
        .any(|r| r.method == "PUT" && r.target.starts_with("/api/v1/nodes/node-1/status")));
    c.stop_routerd(0);
    c.start_routerd_with(0, &[("ROUTERD_NODE_GC_GRACE", "2")]);
    // Node 2 restarts with Calico's `kubernetes-internal-ip`: its address comes from the
    // Kubernetes Node's InternalIP (10.0.0.2), its prefix from the interface carrying it.
    c.stop_routerd(1);
    let mut node2 = c.kube().object(KUBE_NODES, "node-2").unwrap();
    node2["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("projectcalico.org/IPv4Address");
    c.kube().replace(KUBE_NODES, node2).unwrap();
    c.nodes[1].node_ip_source = Some("kubernetes-internal-ip".into());
    c.start_routerd(1);
    c.wait_mesh();
    assert_eq!(
        c.kube().object(KUBE_NODES, "node-2").unwrap()["metadata"]["annotations"]
            ["projectcalico.org/IPv4Address"],
        json!("10.0.0.2/24")
    );
    let (_pod1, pod1_ip) = c.add_pod(0, "kddpod1");
    let (_pod2, _) = c.add_pod(1, "kddpod2");
    let block1 = c
        .kube()
        .objects(&format!("{CALICO_API}/ipamblocks"))
        .into_iter()
        .find_map(|b| {
            (b["spec"]["affinity"] == "host:node-1")
                .then(|| b["spec"]["cidr"].as_str().unwrap().to_string())
        });
    let block1 = block1.unwrap_or_else(|| panic!("node-1 has no block\n{}", c.logs()));
    assert!(pod1_ip.starts_with("10.244."), "{pod1_ip}");

    // 2. Calico's documentation examples, adapted to this lab's addresses and AS numbers.
    let tor_ns = Netns::new("kddtor").unwrap();
    let tor = c.bird_tor(&tor_ns, 2);
    c.kube()
        .create(
            &format!("{CALICO_API}/bgpconfigurations"),
            calico_object(
                "BGPConfiguration",
                "default",
                json!({"logSeverityScreen": "Info", "nodeToNodeMeshEnabled": true,
                       "asNumber": 64512, "serviceClusterIPs": [{"cidr": SERVICES}]}),
            ),
        )
        .unwrap();
    c.kube()
        .create(
            &format!("{CALICO_API}/bgppeers"),
            calico_object(
                "BGPPeer",
                "rack1-tor",
                json!({"peerIP": "10.0.0.254", "asNumber": 65000,
                       "nodeSelector": "rack == 'rack-1'"}),
            ),
        )
        .unwrap();
    // No node has the label: no session to the ToR for a while.
    std::thread::sleep(Duration::from_secs(4));
    assert!(!tor.is_established("n1") && !tor.is_established("n2"));
    set_label(&c, "node-1", "rack", Some("rack-1"));
    tor.wait_established("n1", T)
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    wait_for(
        "the ToR learning node 1's block and the service CIDR",
        T,
        POLL,
        || (tor_has(&tor, &block1) && tor_has(&tor, SERVICES)).then_some(()),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}\n{}",
            tor.cmd("show route").unwrap_or_default(),
            c.logs()
        )
    });
    assert!(!tor.is_established("n2"), "node 2 has no rack label");
    // `kubectl label node node-1 rack-`: the peering goes.
    set_label(&c, "node-1", "rack", None);
    wait_for("node 1's ToR session to go", T, POLL, || {
        (!tor.is_established("n1") && !tor_has(&tor, &block1)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));

    // 3. Node 2 leaves the cluster: its routerd stops, its Kubernetes Node is deleted.
    assert_eq!(objects_with(&c, "blockaffinities", "node", "node-2"), 1);
    c.stop_routerd(1);
    c.kube().delete(KUBE_NODES, "node-2").unwrap();
    wait_for("node 2's blocks and addresses released", T, POLL, || {
        let affinities = objects_with(&c, "blockaffinities", "node", "node-2");
        let blocks = objects_with(&c, "ipamblocks", "affinity", "host:node-2");
        let endpoints = c
            .kube()
            .objects("/apis/routerd.io/v1/workloadendpoints")
            .iter()
            .filter(|o| o["spec"]["value"]["spec"]["node"] == "node-2")
            .count();
        (affinities + blocks + endpoints == 0).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    // Node 1 is untouched.
    assert_eq!(objects_with(&c, "blockaffinities", "node", "node-1"), 1);
    let log = std::fs::read_to_string(c.path().join("node-1.log")).unwrap();
    assert!(
        log.contains("released the state of a node that is gone") && log.contains("node=node-2")
    );
}

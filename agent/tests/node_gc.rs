//! A node whose Node record disappears without `routectl delete node` (Kubernetes' garbage
//! collector deletes it with its Kubernetes Node) has its blocks, addresses and workload
//! endpoints released by the cluster once the grace period has passed, and not before;
//! while its record exists nothing of it is touched. The collecting node is node-1 (the
//! lowest name), run here with `ROUTERD_NODE_GC_GRACE=2`.
//!
//! Needs root; only namespaces this test creates are touched.
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

mod support;

use std::time::{Duration, Instant};

use datastore::ipam_store::DatastoreIpam;
use ipam::{Allocator, AllocatorConfig};
use lab::{require, wait_for};
use support::{Cluster, POLL, T};

#[test]
fn a_gone_node_is_released_after_the_grace_period() {
    require(&["ip"]);
    let mut c = Cluster::start(
        "ngc",
        3,
        "{cidr: 10.244.0.0/16, blockSize: 24, ipipMode: Never, vxlanMode: Never}",
    );
    c.stop_routerd(0);
    c.start_routerd_with(0, &[("ROUTERD_NODE_GC_GRACE", "2")]);
    c.wait_mesh();
    let (_pod, pod_ip) = c.add_pod(2, "ngcpod");
    let ds = datastore::open(&c.datastore).unwrap();
    let allocator = Allocator::new(DatastoreIpam::new(ds.clone()), AllocatorConfig::default());
    let blocks = allocator.affine_blocks("node-3").unwrap();
    assert!(!blocks.is_empty());
    let endpoints_of_node3 = || {
        ds.list("WorkloadEndpoint")
            .unwrap()
            .records
            .iter()
            .filter(|r| r.value["spec"]["node"] == "node-3")
            .count()
    };
    assert_eq!(endpoints_of_node3(), 1);

    // Node 3's routerd stops; its record stays for longer than the grace: nothing is taken.
    c.stop_routerd(2);
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(allocator.affine_blocks("node-3").unwrap(), blocks);
    assert_eq!(endpoints_of_node3(), 1);

    // Its record is deleted behind routectl's back, as Kubernetes' garbage collector does.
    ds.delete("Node", "node-3", None).unwrap();
    let gone = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        allocator.affine_blocks("node-3").unwrap(),
        blocks,
        "released before the grace period"
    );
    wait_for("node 3's state released", T, POLL, || {
        (allocator.affine_blocks("node-3").ok()?.is_empty() && endpoints_of_node3() == 0)
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let took = gone.elapsed();
    println!(
        "node 3's blocks {blocks:?} and its pod's address released {took:?} after its record went"
    );
    let out = c.routectl(&["ipam", "show", "--ip", &pod_ip]);
    assert!(out.contains("not assigned"), "{out}");
    let log = std::fs::read_to_string(c.path().join("node-1.log")).unwrap();
    assert!(
        log.contains("released the state of a node that is gone") && log.contains("node=node-3"),
        "node-1 did not log the release"
    );
}

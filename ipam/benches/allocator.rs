//! Allocator throughput over the in-memory store (figures, not a test).
//!
//! `cargo bench -p ipam --bench allocator` simulates a cluster bring-up: N nodes each start P
//! pods (every node claims its blocks on the way), then the same with two threads racing on one
//! store, then `ipam show` / `ipam check` over the result, then every pod is deleted.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Instant;

use ipam::{Allocator, AllocatorConfig, AssignRequest, IpFamily, IpPool, IpPoolSpec, MemoryStore};

fn pools() -> Vec<IpPool> {
    vec![IpPool::new(
        "default",
        &IpPoolSpec {
            cidr: "10.0.0.0/12".into(),
            block_size: Some(26),
            ..Default::default()
        },
    )
    .unwrap()]
}

fn handle(node: usize, pod: usize) -> String {
    format!("node{node}-pod{pod}")
}

fn bring_up(
    a: &Allocator<MemoryStore>,
    pools: &[IpPool],
    nodes: std::ops::Range<usize>,
    pods: usize,
) {
    let labels = BTreeMap::new();
    for n in nodes {
        let node = format!("node{n}");
        for p in 0..pods {
            let req = AssignRequest::pod(&handle(n, p), &node, IpFamily::V4, "default", "pod");
            a.assign(pools, &labels, &req).unwrap();
        }
    }
}

fn rate(what: &str, ops: usize, start: Instant) {
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{what:<48} {ops:>7} ops in {:>7.3} s = {:>9.0} ops/s",
        secs,
        ops as f64 / secs
    );
}

fn main() {
    let pools = pools();
    for (nodes, pods) in [(100usize, 30usize), (1000, 30)] {
        println!("-- {nodes} nodes x {pods} pods, /26 blocks (each node claims 1 block)");
        let a = Allocator::new(MemoryStore::new(), AllocatorConfig::default());
        let t = Instant::now();
        bring_up(&a, &pools, 0..nodes, pods);
        rate("assign, 1 thread", nodes * pods, t);

        let t = Instant::now();
        let mut blocks = 0;
        for n in 0..nodes {
            blocks += a.affine_blocks(&format!("node{n}")).unwrap().len();
        }
        rate("affine_blocks per node", nodes, t);
        assert_eq!(blocks, nodes);

        let t = Instant::now();
        let usage = a.usage(&pools).unwrap();
        rate("usage (ipam show)", 1, t);
        assert_eq!(usage.pools[0].in_use, (nodes * pods) as u128);
        let t = Instant::now();
        let report = a.check().unwrap();
        rate("check (ipam check)", 1, t);
        assert!(report.is_clean());

        let t = Instant::now();
        for n in 0..nodes {
            for p in 0..pods {
                a.release(&handle(n, p)).unwrap();
            }
        }
        rate("release by handle, 1 thread", nodes * pods, t);

        let a = Allocator::new(MemoryStore::new(), AllocatorConfig::default());
        let t = Instant::now();
        std::thread::scope(|s| {
            let half = nodes / 2;
            let (a, pools) = (&a, &pools);
            s.spawn(move || bring_up(a, pools, 0..half, pods));
            s.spawn(move || bring_up(a, pools, half..nodes, pods));
        });
        rate("assign, 2 threads racing on one store", nodes * pods, t);
        assert!(a.check().unwrap().is_clean());
    }
}

//! routerd drives the overlay: two nodes on one segment, each running `routerd` on a shared
//! embedded datastore, an IPPool with VXLAN or IP-in-IP `Always`, and a pod per node. Each
//! node takes a tunnel address from its block and publishes it on its Node; the other node
//! routes the block `via <tunnel address> dev vxlan.calico onlink` (or `via <node ip> dev
//! tunl0 onlink`), and the pods reach each other through the tunnel (its TX counter moves).
//! On this kernel, without `ipip`, IP-in-IP runs over the userspace fallback.
//!
//! Needs root; only namespaces this test creates are touched.
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

mod support;

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use datastore::ipam_store::DatastoreIpam;
use ipam::{Allocator, AllocatorConfig, AssignRequest, IpFamily, IpPool, IpPoolSpec};
use lab::{require, wait_for, workload, Netns};
use support::{Cluster, POLL, ROUTECTL, T};

fn tx_packets(ns: &Netns, device: &str) -> u64 {
    let path = format!("/sys/class/net/{device}/statistics/tx_packets");
    ns.exec(&["cat", &path])
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// The overlay scenario for a pool spec; `device` is the tunnel device the routes use and
/// `via_tunnel_address` whether the next hop is the far node's tunnel address (VXLAN) or its
/// node address (IP-in-IP).
fn overlay(tag: &str, ipip: &str, vxlan: &str, device: &str, via_tunnel_address: bool) {
    require(&["ip", "ping"]);
    let cluster = Cluster::start(
        tag,
        2,
        &format!("{{cidr: 10.244.0.0/16, blockSize: 24, ipipMode: {ipip}, vxlanMode: {vxlan}}}"),
    );
    let (dir, datastore) = (&cluster.dir, cluster.datastore.as_str());
    let nodes = &cluster.nodes;
    let logs = |_: &Path| cluster.logs();

    // Pods, their addresses from the nodes' blocks (the CNI plugin's part).
    let ds = datastore::open(datastore).unwrap();
    let allocator = Allocator::new(DatastoreIpam::new(ds.clone()), AllocatorConfig::default());
    let pool = IpPool::new(
        "pool",
        &IpPoolSpec {
            cidr: "10.244.0.0/16".into(),
            block_size: Some(24),
            ipip_mode: Some(ipip.into()),
            vxlan_mode: Some(vxlan.into()),
            nat_outgoing: false,
            disabled: false,
            node_selector: None,
        },
    )
    .unwrap();
    let mut pods = Vec::new();
    for n in nodes {
        let pod_name = format!("pod-{}", n.name);
        let a = allocator
            .assign(
                std::slice::from_ref(&pool),
                &std::collections::BTreeMap::new(),
                &AssignRequest::pod(
                    &format!("{tag}-{pod_name}"),
                    &n.name,
                    IpFamily::V4,
                    "default",
                    &pod_name,
                ),
            )
            .unwrap();
        let pod = workload(
            &n.ns,
            "cali0",
            &format!("{tag}p{}", n.ip.replace('.', "")),
            a.address,
        )
        .unwrap();
        pods.push((pod, a.address, a.block));
    }

    // Each node publishes its tunnel address (taken from its own block) on its Node.
    let tunnel_address = |node: &str| -> Option<IpAddr> {
        let out = Command::new(ROUTECTL)
            .args(["--datastore", datastore, "get", "node", node, "-o", "json"])
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        // One resource prints as itself; several as a List.
        let spec = match v.get("items") {
            Some(items) => &items[0]["spec"],
            None => &v["spec"],
        };
        let text = if via_tunnel_address {
            spec["ipv4VXLANTunnelAddr"].as_str()?
        } else {
            spec["bgp"]["ipv4IPIPTunnelAddr"].as_str()?
        };
        text.parse().ok()
    };
    let tunnels: Vec<IpAddr> = nodes
        .iter()
        .zip(&pods)
        .map(|(n, (_, _, block))| {
            let a = wait_for(&format!("{}'s tunnel address", n.name), T, POLL, || {
                tunnel_address(&n.name)
            })
            .unwrap_or_else(|e| panic!("{e}\n{}", logs(dir.path())));
            assert!(block.contains(&a), "{a} outside {block}");
            a
        })
        .collect();

    // The remote block goes through the tunnel device.
    for (i, n) in nodes.iter().enumerate() {
        let j = 1 - i;
        let block = pods[j].2.to_string();
        let gateway = if via_tunnel_address {
            tunnels[j].to_string()
        } else {
            nodes[j].ip.clone()
        };
        wait_for(&format!("{}'s route to {block}", n.name), T, POLL, || {
            let table = n.ns.ip(&["route", "show", &block]).ok()?;
            (table.contains(&format!("via {gateway} "))
                && table.contains(&format!("dev {device} "))
                && table.contains("onlink"))
            .then_some(())
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e}: {}\n{}",
                n.ns.ip(&["route"]).unwrap_or_default(),
                logs(dir.path())
            )
        });
    }

    // Pod to pod, through the tunnel.
    let before = tx_packets(&nodes[0].ns, device);
    let to = pods[1].1.to_string();
    let state = || {
        let mut out = String::new();
        for n in nodes {
            for args in [
                &["addr"][..],
                &["route"][..],
                &["neigh"][..],
                &["-d", "link", "show", device][..],
            ] {
                out += &format!(
                    "{} ip {}:\n{}\n",
                    n.name,
                    args.join(" "),
                    n.ns.ip(args).unwrap_or_else(|e| e.to_string())
                );
            }
            out += &format!(
                "{} fdb:\n{}\n",
                n.name,
                n.ns.exec(&["bridge", "fdb", "show", "dev", device])
                    .unwrap_or_else(|e| e.to_string())
            );
        }
        out
    };
    wait_for(&format!("ping {to}"), Duration::from_secs(30), POLL, || {
        pods[0].0.exec(&["ping", "-c", "1", "-W", "1", &to]).ok()
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", state()));
    let back = pods[0].1.to_string();
    pods[1]
        .0
        .exec(&["ping", "-c", "3", "-i", "0.2", "-W", "1", &back])
        .unwrap();
    let after = tx_packets(&nodes[0].ns, device);
    assert!(
        after > before,
        "no packet left node-1 through {device}: {before} -> {after}"
    );
}

#[test]
fn routerd_routes_pods_over_vxlan_always() {
    overlay("rovx", "Never", "Always", "vxlan.calico", true);
}

#[test]
fn routerd_routes_pods_over_ipip_always() {
    overlay("roip", "Always", "Never", "tunl0", false);
}

//! A pod Calico's CNI set up before the cluster switched to routerd is routed: on the
//! Kubernetes datastore routerd derives the node's workload endpoints from its Pods as
//! Calico's datastore does (addresses from `status.podIPs` or the
//! `cni.projectcalico.org/podIP(s)` annotations, host interface `cali` + SHA-1 of
//! `<namespace>.<pod>`), not only from the endpoints its own CNI plugin recorded.
//!
//! The "Calico pod" is built here as Calico's CNI leaves it on node 1: a veth named by
//! Calico's rule with Calico's MAC and proxy ARP on the host side, the address in node 1's
//! block, the default route via 169.254.1.1 in the pod, and no host route (felix's job, now routerd's);
//! its Pod object carries Calico's annotations. Then:
//!
//! 1. node 1 routes the address to the pod's veth, and a pod routerd's CNI set up on node 2
//!    reaches it across the nodes;
//! 2. the Pod is deleted: the route goes.
//!
//! Needs root and iproute2; only namespaces this test creates are touched.
#![cfg(feature = "kubernetes")]
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

mod support;

use lab::{require, run, wait_for, Netns};
use serde_json::json;
use support::{Cluster, Store, POLL, T};

const PODS: &str = "/api/v1/namespaces/legacy/pods";

/// `ip <args>` in `ns` (`args` split at spaces).
fn ip_in(ns: &Netns, args: &str) {
    let mut all = vec!["ip"];
    all.extend(args.split(' '));
    run(&mut ns.command(&all)).unwrap_or_else(|e| panic!("ip {args}: {e}"));
}

#[test]
fn a_pod_calicos_cni_created_is_routed_from_its_pod_object() {
    require(&["ip", "ping", "sysctl"]);
    let c = Cluster::start_on(
        "kcal",
        2,
        "{cidr: 10.244.0.0/16, blockSize: 24, ipipMode: Never, vxlanMode: Never}",
        Store::Kubernetes,
    );
    c.wait_mesh();
    let block1 = c
        .kube()
        .objects("/apis/crd.projectcalico.org/v1/ipamblocks")
        .into_iter()
        .find_map(|b| {
            (b["spec"]["affinity"] == "host:node-1")
                .then(|| b["spec"]["cidr"].as_str().unwrap().to_string())
        })
        .unwrap_or_else(|| panic!("node 1 has no block\n{}", c.logs()));
    let net: ipnet::Ipv4Net = block1.parse().unwrap();
    let address = std::net::Ipv4Addr::from(u32::from(net.network()) + 200).to_string();

    // What Calico's CNI left on node 1.
    let veth = datastore::resource::calico_interface_name("legacy.web-0");
    let pod = Netns::new("kcalpod").unwrap();
    let node1 = &c.nodes[0].ns;
    let peer = format!(
        "link add {veth} type veth peer name eth0 netns {}",
        pod.name()
    );
    ip_in(node1, &peer);
    ip_in(
        node1,
        &format!("link set {veth} address ee:ee:ee:ee:ee:ee up"),
    );
    let proxy_arp = format!("net.ipv4.conf.{veth}.proxy_arp=1");
    run(&mut node1.command(&["sysctl", "-qw", &proxy_arp])).unwrap();
    ip_in(&pod, "link set lo up");
    ip_in(&pod, "link set eth0 up");
    ip_in(&pod, &format!("addr add {address}/32 dev eth0"));
    ip_in(&pod, "route add 169.254.1.1 dev eth0 scope link");
    ip_in(&pod, "route add default via 169.254.1.1 dev eth0");
    // Calico answers 169.254.1.1 by proxy ARP, which needs a default route on the host; the
    // lab's nodes have none, so the neighbour is set as routerd's CNI sets it.
    ip_in(
        &pod,
        "neigh add 169.254.1.1 lladdr ee:ee:ee:ee:ee:ee dev eth0 nud permanent",
    );
    c.kube()
        .create(
            PODS,
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web-0", "namespace": "legacy",
                             "annotations": {"cni.projectcalico.org/podIP": format!("{address}/32"),
                                             "cni.projectcalico.org/podIPs": format!("{address}/32"),
                                             "cni.projectcalico.org/containerID": "0123abcd"}},
                "spec": {"nodeName": "node-1", "containers": [{"name": "web", "image": "web"}]},
                "status": {"phase": "Running", "podIP": address, "podIPs": [{"ip": address}]},
            }),
        )
        .unwrap();

    // 1. Routed on node 1 to the pod's veth, reached from a pod on node 2.
    let route = || {
        run(&mut node1.command(&["ip", "route", "show", &format!("{address}/32")]))
            .unwrap_or_default()
    };
    wait_for("node 1 routing the Calico pod", T, POLL, || {
        route().contains(&format!("dev {veth}")).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {}\n{}", route(), c.logs()));
    let (client, _) = c.add_pod(1, "kcalcli");
    wait_for("the Calico pod answering a pod on node 2", T, POLL, || {
        run(&mut client.command(&["ping", "-c", "1", "-W", "1", &address]))
            .ok()
            .map(|_| ())
    })
    .unwrap_or_else(|e| {
        let show = |ns: &Netns, args: &[&str]| run(&mut ns.command(args)).unwrap_or_else(|e| e.to_string());
        panic!(
            "{e}\nnode 1 routes:\n{}\nnode 2 routes:\n{}\npod:\n{}\n{}\nclient:\n{}\nfrom node 1: {}",
            show(node1, &["ip", "route"]),
            show(&c.nodes[1].ns, &["ip", "route"]),
            show(&pod, &["ip", "addr"]),
            show(&pod, &["ip", "neigh"]),
            show(&client, &["ip", "addr"]),
            show(node1, &["ping", "-c", "1", "-W", "1", &address]),
        )
    });

    // 2. The Pod goes: so does its route.
    c.kube().delete(PODS, "web-0").unwrap();
    wait_for("the route of the deleted Pod to go", T, POLL, || {
        route().trim().is_empty().then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {}\n{}", route(), c.logs()));
}

//! Service advertisement as Calico does it, on the Kubernetes datastore: two nodes, a BIRD
//! ToR peering both (a global BGPPeer), the API stand-in serving Services and
//! EndpointSlices. The `default` BGPConfiguration lists `serviceLoadBalancerIPs`
//! 10.50.0.0/24, which every node originates; a LoadBalancer Service with
//! `externalTrafficPolicy: Local` and the ingress address 10.50.0.10 is advertised as
//! 10.50.0.10/32 by exactly the nodes with a ready endpoint of it:
//!
//! 1. an endpoint on node 1 only: the ToR reaches 10.50.0.10/32 through node 1 only;
//! 2. a second ready endpoint on node 2: through both nodes;
//! 3. node 1's endpoint not ready: through node 2 only;
//! 4. the EndpointSlice deleted: the /32 is withdrawn everywhere; the /24 stays.
//!
//! "Through": the BGP next hops of every path the ToR holds for the /32. A node without an
//! endpoint may pass the other node's /32 on to the ToR (it is its best path), with that
//! node as the next hop (third-party next hop, RFC 4271 §5.1.3), as BIRD does in a Calico
//! cluster: traffic is drawn only to nodes with an endpoint. The /32 learned over the mesh
//! is not installed in a node's kernel (service ranges never are, as in Calico).
//!
//! Needs root, bird and birdc; only namespaces this test creates are touched.
#![cfg(feature = "kubernetes")]
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

mod support;

use std::collections::BTreeSet;

use lab::{require, wait_for, Netns};
use serde_json::{json, Value};
use support::{calico_object, Cluster, Store, CALICO_API, POLL, T};

const SERVICES: &str = "/api/v1/namespaces/shop/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices";
const LB_RANGE: &str = "10.50.0.0/24";
const LB_HOST: &str = "10.50.0.10/32";

/// The slice of the Service `web` with one endpoint per `(node, ready)`.
fn slice(endpoints: &[(&str, bool)]) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .enumerate()
        .map(|(i, (node, ready))| {
            json!({"addresses": [format!("10.244.{}.5", i + 1)], "nodeName": node,
                   "conditions": {"ready": ready}})
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-x1", "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": endpoints,
    })
}

fn set_endpoints(c: &Cluster, endpoints: &[(&str, bool)]) {
    let mut object = slice(endpoints);
    let stored = c.kube().object(SLICES, "web-x1").unwrap();
    object["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"].clone();
    c.kube().replace(SLICES, object).unwrap();
}

/// The BGP next hops of every path the ToR holds for `prefix`.
fn tor_next_hops(tor: &lab::bird::Bird, prefix: &str) -> BTreeSet<String> {
    tor.routes()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.prefix == prefix)
        .filter_map(|r| r.attr("BGP.next_hop").map(str::to_string))
        .collect()
}

fn wait_next_hops(c: &Cluster, tor: &lab::bird::Bird, what: &str, want: &[&str]) {
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    wait_for(what, T, POLL, || {
        (tor_next_hops(tor, LB_HOST) == want).then_some(())
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}: have {:?}\n{}\n{}",
            tor_next_hops(tor, LB_HOST),
            tor.cmd("show route all").unwrap_or_default(),
            c.logs()
        )
    });
    // And it stays so (a node that should not advertise would have shown up by now).
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(tor_next_hops(tor, LB_HOST), want, "{what}: not stable");
}

#[test]
fn a_local_load_balancer_service_is_announced_by_the_nodes_with_ready_endpoints() {
    require(&["ip", "bird", "birdc"]);
    let c = Cluster::start_on(
        "ksvc",
        2,
        "{cidr: 10.244.0.0/16, blockSize: 24, ipipMode: Never, vxlanMode: Never}",
        Store::Kubernetes,
    );
    c.wait_mesh();
    let tor_ns = Netns::new("ksvctor").unwrap();
    let tor = c.bird_tor(&tor_ns, 2);
    // Calico's documentation: a BGPConfiguration advertising a LoadBalancer range, and a
    // global BGPPeer (no selector: every node peers with it).
    c.kube()
        .create(
            &format!("{CALICO_API}/bgpconfigurations"),
            calico_object(
                "BGPConfiguration",
                "default",
                json!({"nodeToNodeMeshEnabled": true, "asNumber": 64512,
                       "serviceLoadBalancerIPs": [{"cidr": LB_RANGE}]}),
            ),
        )
        .unwrap();
    c.kube()
        .create(
            &format!("{CALICO_API}/bgppeers"),
            calico_object(
                "BGPPeer",
                "my-global-peer",
                json!({"peerIP": "10.0.0.254", "asNumber": 65000}),
            ),
        )
        .unwrap();
    for n in ["n1", "n2"] {
        tor.wait_established(n, T)
            .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    }
    wait_for(
        "the ToR learning the range from both nodes",
        T,
        POLL,
        || (tor_next_hops(&tor, LB_RANGE).len() == 2).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", tor.cmd("show route all").unwrap_or_default()));

    // The Service, as the API server and a load-balancer controller leave it.
    c.kube()
        .create(
            SERVICES,
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "shop"},
                "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10",
                         "clusterIPs": ["10.96.0.10"], "ipFamilies": ["IPv4"],
                         "externalTrafficPolicy": "Local",
                         "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]},
                "status": {"loadBalancer": {"ingress": [{"ip": "10.50.0.10"}]}},
            }),
        )
        .unwrap();
    // 1. One ready endpoint, on node 1.
    c.kube().create(SLICES, slice(&[("node-1", true)])).unwrap();
    wait_next_hops(&c, &tor, "the /32 through node 1 only", &["10.0.0.1"]);
    // Node 2 holds node 1's /32 as a BGP route but not in its kernel.
    let kernel = lab::run(&mut c.nodes[1].ns.command(&["ip", "route", "show", LB_HOST])).unwrap();
    assert!(kernel.trim().is_empty(), "node 2's kernel: {kernel}");
    // The cluster address is not advertised: serviceClusterIPs is not configured.
    assert!(tor_next_hops(&tor, "10.96.0.10/32").is_empty());

    // 2. A second ready endpoint, on node 2.
    set_endpoints(&c, &[("node-1", true), ("node-2", true)]);
    wait_next_hops(
        &c,
        &tor,
        "the /32 through both nodes",
        &["10.0.0.1", "10.0.0.2"],
    );

    // 3. Node 1's endpoint is no longer ready.
    set_endpoints(&c, &[("node-1", false), ("node-2", true)]);
    wait_next_hops(&c, &tor, "the /32 through node 2 only", &["10.0.0.2"]);

    // 4. The last endpoint goes: withdrawn from every node; the range stays.
    c.kube().delete(SLICES, "web-x1").unwrap();
    wait_next_hops(&c, &tor, "the /32 withdrawn", &[]);
    assert_eq!(tor_next_hops(&tor, LB_RANGE).len(), 2);
    for node in ["node-1", "node-2"] {
        let log = std::fs::read_to_string(c.path().join(format!("{node}.log"))).unwrap();
        assert!(
            log.contains("Services and EndpointSlices listed"),
            "{node} did not follow the Services:\n{log}"
        );
    }
}

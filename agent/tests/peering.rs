//! Peer computation: which sessions each node gets from Nodes, BGPConfigurations and BGPPeers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use agent::peering::{compute, PeeringError, PeeringInput, PeeringPlan, PeeringProblem};
use agent::status::PeerType;
use bgp::speaker::config::{AddPaths, NextHopMode};
use datastore::resource::{
    AsNumberText, BgpConfiguration, BgpConfigurationSpec, BgpPeer, BgpPeerSpec, Node, NodeBgpSpec,
    NodeSpec, Object, PasswordSource, SecretKeyRef,
};
use proptest::prelude::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn node(name: &str, v4: Option<&str>, v6: Option<&str>) -> Node {
    Object::new(
        name,
        NodeSpec {
            bgp: Some(NodeBgpSpec {
                ipv4_address: v4.map(|a| format!("{a}/24")),
                ipv6_address: v6.map(|a| format!("{a}/64")),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
}

fn node4(name: &str, v4: &str) -> Node {
    node(name, Some(v4), None)
}

fn with_as(mut n: Node, asn: u32) -> Node {
    if let Some(bgp) = &mut n.spec.bgp {
        bgp.as_number = Some(AsNumberText::from(asn));
    }
    n
}

fn with_cluster(mut n: Node, cluster_id: &str) -> Node {
    if let Some(bgp) = &mut n.spec.bgp {
        bgp.route_reflector_cluster_id = Some(cluster_id.to_string());
    }
    n
}

fn with_label(mut n: Node, key: &str, value: &str) -> Node {
    n.metadata.labels.insert(key.into(), value.into());
    n
}

fn config(name: &str, spec: BgpConfigurationSpec) -> BgpConfiguration {
    Object::new(name, spec)
}

fn mesh_off() -> BgpConfiguration {
    config(
        "default",
        BgpConfigurationSpec {
            node_to_node_mesh_enabled: Some(false),
            ..Default::default()
        },
    )
}

fn peer(name: &str, spec: BgpPeerSpec) -> BgpPeer {
    Object::new(name, spec)
}

fn ip_peer(peer_ip: &str, asn: u32) -> BgpPeerSpec {
    BgpPeerSpec {
        peer_ip: Some(peer_ip.into()),
        as_number: Some(AsNumberText::from(asn)),
        ..Default::default()
    }
}

fn file_password(path: &str) -> PasswordSource {
    PasswordSource {
        secret_key_ref: None,
        file: Some(path.into()),
    }
}

fn plan(
    local: &str,
    nodes: &[Node],
    configs: &[BgpConfiguration],
    peers: &[BgpPeer],
) -> PeeringPlan {
    compute(&PeeringInput {
        local_node: local,
        nodes,
        configs,
        peers,
        filters: &[],
    })
    .unwrap()
}

fn addresses(p: &PeeringPlan) -> Vec<IpAddr> {
    p.sessions.iter().map(|s| s.peer.address).collect()
}

fn names(p: &PeeringPlan) -> Vec<&str> {
    p.sessions.iter().map(|s| s.name.as_str()).collect()
}

fn three_nodes() -> Vec<Node> {
    vec![
        node4("node-a", "10.0.0.1"),
        node4("node-b", "10.0.0.2"),
        node4("node-c", "10.0.0.3"),
    ]
}

#[test]
fn mesh_of_three_has_one_connecting_side_per_pair() {
    let nodes = three_nodes();
    let plans: BTreeMap<&str, PeeringPlan> = ["node-a", "node-b", "node-c"]
        .into_iter()
        .map(|n| (n, plan(n, &nodes, &[], &[])))
        .collect();
    let a = &plans["node-a"];
    assert_eq!(a.local.as_number, 64512);
    assert_eq!(a.local.router_id, ip("10.0.0.1"));
    assert_eq!(a.local.listen_port, 179);
    assert!(a.local.node_to_node_mesh);
    assert_eq!(a.local.cluster_id, None);
    assert_eq!(names(a), ["Mesh_10_0_0_2", "Mesh_10_0_0_3"]);
    for s in &a.sessions {
        assert_eq!(s.peer_type, PeerType::NodeMesh);
        assert_eq!(s.peer.remote_as, 64512);
        assert_eq!(s.peer.port, None);
        assert_eq!(s.peer.local_address, Some(ip("10.0.0.1")));
        assert!(!s.peer.route_reflector_client);
        assert_eq!(s.peer.next_hop, NextHopMode::Auto);
        assert_eq!(s.peer.password, None);
        assert_eq!(s.password, None);
        // node-a has the lowest address: it connects to both.
        assert!(!s.peer.passive, "{s:?}");
    }
    assert_eq!(a.sessions[0].source, "Node/node-b");
    assert_eq!(a.sessions[0].remote_node.as_deref(), Some("node-b"));
    // node-c has the highest address: it waits for both.
    assert!(plans["node-c"].sessions.iter().all(|s| s.peer.passive));
    // Every pair: both ends have the session and exactly one of them connects.
    for (x, px) in &plans {
        for s in &px.sessions {
            let y = s.remote_node.as_deref().unwrap();
            let back = plans[y].session(px.local.ipv4.addr().into()).unwrap();
            assert_ne!(s.peer.passive, back.peer.passive, "{x} <-> {y}");
        }
    }
    assert!(a.problems.is_empty(), "{:?}", a.problems);
}

#[test]
fn effective_as_and_listen_port_follow_node_then_default() {
    let nodes = vec![
        node4("node-a", "10.0.0.1"),
        with_as(node4("node-b", "10.0.0.2"), 65002),
        node4("node-c", "10.0.0.3"),
    ];
    // No configuration at all: 64512 and port 179.
    let p = plan("node-a", &nodes, &[], &[]);
    assert_eq!(p.local.as_number, 64512);
    assert_eq!(p.session(ip("10.0.0.2")).unwrap().peer.remote_as, 65002);
    assert_eq!(p.session(ip("10.0.0.3")).unwrap().peer.remote_as, 64512);

    let configs = vec![
        config(
            "default",
            BgpConfigurationSpec {
                as_number: Some(AsNumberText::from(65000)),
                listen_port: Some(2179),
                ..Default::default()
            },
        ),
        config(
            "node.node-b",
            BgpConfigurationSpec {
                listen_port: Some(1179),
                ..Default::default()
            },
        ),
    ];
    let a = plan("node-a", &nodes, &configs, &[]);
    assert_eq!(a.local.as_number, 65000);
    assert_eq!(a.local.listen_port, 2179);
    let to_b = a.session(ip("10.0.0.2")).unwrap();
    assert_eq!((to_b.peer.remote_as, to_b.peer.port), (65002, Some(1179)));
    let to_c = a.session(ip("10.0.0.3")).unwrap();
    assert_eq!((to_c.peer.remote_as, to_c.peer.port), (65000, Some(2179)));
    let b = plan("node-b", &nodes, &configs, &[]);
    assert_eq!((b.local.as_number, b.local.listen_port), (65002, 1179));

    // asNumber is "default only" in Calico: a node.<name> configuration carrying one is
    // refused as a whole, and reported.
    let mut bad = configs.clone();
    bad.push(config(
        "node.node-c",
        BgpConfigurationSpec {
            as_number: Some(AsNumberText::from(65003)),
            listen_port: Some(3179),
            ..Default::default()
        },
    ));
    let c = plan("node-c", &nodes, &bad, &[]);
    assert_eq!((c.local.as_number, c.local.listen_port), (65000, 2179));
    assert!(
        matches!(&c.problems[..], [PeeringProblem::Invalid { subject, error }]
        if subject == "BGPConfiguration/node.node-c" && error.field == "spec.asNumber")
    );
}

#[test]
fn mesh_with_per_node_as_is_ebgp() {
    let nodes = vec![
        with_as(node4("node-a", "10.0.0.1"), 65001),
        with_as(node4("node-b", "10.0.0.2"), 65002),
        with_as(node4("node-c", "10.0.0.3"), 65001),
    ];
    let a = plan("node-a", &nodes, &[], &[]);
    assert_eq!(a.local.as_number, 65001);
    let remote: Vec<u32> = a.sessions.iter().map(|s| s.peer.remote_as).collect();
    assert_eq!(remote, [65002, 65001]);
    assert!(a.sessions.iter().all(|s| s.peer_type == PeerType::NodeMesh));
    let b = plan("node-b", &nodes, &[], &[]);
    assert!(b.sessions.iter().all(|s| s.peer.remote_as == 65001));
}

fn reflector_cluster() -> Vec<Node> {
    vec![
        with_cluster(node4("rr-1", "10.0.0.1"), "1.0.0.1"),
        with_cluster(node4("rr-2", "10.0.0.2"), "1.0.0.1"),
        node4("client-1", "10.0.0.11"),
        node4("client-2", "10.0.0.12"),
        node4("client-3", "10.0.0.13"),
    ]
}

#[test]
fn mesh_disabled_reflectors_serve_clients() {
    let nodes = reflector_cluster();
    let configs = [mesh_off()];
    let rr1 = plan("rr-1", &nodes, &configs, &[]);
    assert_eq!(rr1.local.cluster_id, Some("1.0.0.1".parse().unwrap()));
    assert!(!rr1.local.node_to_node_mesh);
    assert_eq!(
        names(&rr1),
        [
            "Node_10_0_0_2",
            "Node_10_0_0_11",
            "Node_10_0_0_12",
            "Node_10_0_0_13"
        ]
    );
    let clients: Vec<bool> = rr1
        .sessions
        .iter()
        .map(|s| s.peer.route_reflector_client)
        .collect();
    assert_eq!(clients, [false, true, true, true]);
    assert!(rr1
        .sessions
        .iter()
        .all(|s| s.peer_type == PeerType::RouteReflector && s.peer.remote_as == 64512));
    // Between our nodes ADD-PATH goes both ways, so clients get every ECMP path.
    assert!(rr1
        .sessions
        .iter()
        .all(|s| s.peer.add_paths == Some(AddPaths::On)));
    // rr-1 has the lowest address: it connects everywhere.
    assert!(rr1.sessions.iter().all(|s| !s.peer.passive));

    let c2 = plan("client-2", &nodes, &configs, &[]);
    assert_eq!(c2.local.cluster_id, None);
    assert_eq!(addresses(&c2), [ip("10.0.0.1"), ip("10.0.0.2")]);
    for s in &c2.sessions {
        assert_eq!(s.peer_type, PeerType::RouteReflector);
        assert!(!s.peer.route_reflector_client);
        // The client's address is higher: the reflector connects.
        assert!(s.peer.passive);
        assert_eq!(s.peer.local_address, Some(ip("10.0.0.12")));
    }
    assert!(c2.problems.is_empty(), "{:?}", c2.problems);
}

#[test]
fn reflectors_of_different_clusters_still_peer_plainly() {
    let nodes = vec![
        with_cluster(node4("rr-1", "10.0.0.1"), "1.0.0.1"),
        with_cluster(node4("rr-2", "10.0.0.2"), "1.0.0.2"),
        node4("client-1", "10.0.0.11"),
    ];
    let rr2 = plan("rr-2", &nodes, &[mesh_off()], &[]);
    let to_rr1 = rr2.session(ip("10.0.0.1")).unwrap();
    assert!(!to_rr1.peer.route_reflector_client);
    assert!(to_rr1.peer.passive);
    assert!(
        rr2.session(ip("10.0.0.11"))
            .unwrap()
            .peer
            .route_reflector_client
    );
}

#[test]
fn reflector_clients_in_another_as_are_ebgp_not_clients() {
    let nodes = vec![
        with_cluster(node4("rr-1", "10.0.0.1"), "1.0.0.1"),
        with_as(node4("client-1", "10.0.0.11"), 65009),
    ];
    let rr = plan("rr-1", &nodes, &[mesh_off()], &[]);
    let s = rr.session(ip("10.0.0.11")).unwrap();
    assert_eq!(s.peer.remote_as, 65009);
    assert!(!s.peer.route_reflector_client);
}

#[test]
fn mesh_disabled_without_reflectors_has_no_node_sessions() {
    let p = plan("node-a", &three_nodes(), &[mesh_off()], &[]);
    assert!(p.sessions.is_empty());
}

#[test]
fn with_the_mesh_enabled_cluster_ids_change_nothing() {
    let nodes = reflector_cluster();
    let c1 = plan("client-1", &nodes, &[], &[]);
    assert_eq!(c1.sessions.len(), 4);
    assert!(c1
        .sessions
        .iter()
        .all(|s| s.peer_type == PeerType::NodeMesh && !s.peer.route_reflector_client));
    let rr1 = plan("rr-1", &nodes, &[], &[]);
    assert_eq!(rr1.local.cluster_id, Some("1.0.0.1".parse().unwrap()));
    assert_eq!(rr1.sessions.len(), 4);
    assert!(rr1
        .sessions
        .iter()
        .all(|s| s.peer_type == PeerType::NodeMesh && !s.peer.route_reflector_client));
}

#[test]
fn global_peer_applies_to_every_node() {
    let nodes = three_nodes();
    let peers = [peer("rack-tor", ip_peer("192.168.1.1", 65001))];
    for (name, address) in [("node-a", "10.0.0.1"), ("node-c", "10.0.0.3")] {
        let p = plan(name, &nodes, &[mesh_off()], &peers);
        assert_eq!(p.sessions.len(), 1);
        let s = &p.sessions[0];
        assert_eq!(s.name, "Global_192_168_1_1");
        assert_eq!(s.peer_type, PeerType::Global);
        assert_eq!(s.source, "BGPPeer/rack-tor");
        assert_eq!(s.remote_node, None);
        assert_eq!(s.peer.remote_as, 65001);
        assert_eq!(s.peer.port, None);
        assert!(!s.peer.passive);
        assert_eq!(s.peer.local_address, Some(ip(address)));
        assert_eq!(s.peer.next_hop, NextHopMode::Auto);
    }
    // Mesh on: the global peer comes on top of the mesh.
    let p = plan("node-b", &nodes, &[], &peers);
    assert_eq!(
        names(&p),
        ["Mesh_10_0_0_1", "Mesh_10_0_0_3", "Global_192_168_1_1"]
    );
}

#[test]
fn node_specific_peer_applies_to_that_node_only() {
    let nodes = three_nodes();
    let mut spec = ip_peer("192.168.2.1", 65002);
    spec.node = Some("node-b".into());
    let peers = [peer("b-tor", spec)];
    let b = plan("node-b", &nodes, &[mesh_off()], &peers);
    assert_eq!(names(&b), ["Node_192_168_2_1"]);
    assert_eq!(b.sessions[0].peer_type, PeerType::NodeSpecific);
    assert!(plan("node-a", &nodes, &[mesh_off()], &peers)
        .sessions
        .is_empty());
}

#[test]
fn node_selector_peer_applies_to_matching_nodes() {
    let nodes = vec![
        with_label(node4("node-a", "10.0.0.1"), "rack", "r1"),
        with_label(node4("node-b", "10.0.0.2"), "rack", "r2"),
        with_label(node4("node-c", "10.0.0.3"), "rack", "r1"),
    ];
    let mut spec = ip_peer("192.168.1.1", 65001);
    spec.node_selector = Some("rack == 'r1'".into());
    let peers = [peer("r1-tor", spec)];
    for (name, has) in [("node-a", true), ("node-b", false), ("node-c", true)] {
        let p = plan(name, &nodes, &[mesh_off()], &peers);
        assert_eq!(p.sessions.len(), usize::from(has), "{name}");
        if has {
            assert_eq!(p.sessions[0].name, "Node_192_168_1_1");
            assert_eq!(p.sessions[0].peer_type, PeerType::NodeSpecific);
        }
    }
    // Calico treats an empty nodeSelector as unset: a global peer.
    let mut spec = ip_peer("192.168.9.9", 65009);
    spec.node_selector = Some(String::new());
    let p = plan("node-b", &nodes, &[mesh_off()], &[peer("all", spec)]);
    assert_eq!(names(&p), ["Global_192_168_9_9"]);
}

#[test]
fn peer_selector_peers_with_other_nodes_and_they_peer_back() {
    // The usual Calico reflector recipe: every node peers with the nodes labelled as reflectors.
    let nodes = vec![
        with_label(
            with_cluster(node4("rr-1", "10.0.0.1"), "1.0.0.1"),
            "route-reflector",
            "true",
        ),
        with_label(
            with_cluster(with_as(node4("rr-2", "10.0.0.2"), 64512), "1.0.0.1"),
            "route-reflector",
            "true",
        ),
        node4("node-a", "10.0.0.11"),
        with_as(node4("node-b", "10.0.0.12"), 65012),
    ];
    let configs = [
        mesh_off(),
        config(
            "node.rr-2",
            BgpConfigurationSpec {
                listen_port: Some(1179),
                ..Default::default()
            },
        ),
    ];
    let peers = [peer(
        "peer-with-reflectors",
        BgpPeerSpec {
            node_selector: Some("all()".into()),
            peer_selector: Some("route-reflector == 'true'".into()),
            ..Default::default()
        },
    )];
    let a = plan("node-a", &nodes, &configs, &peers);
    assert_eq!(addresses(&a), [ip("10.0.0.1"), ip("10.0.0.2")]);
    let to_rr2 = a.session(ip("10.0.0.2")).unwrap();
    assert_eq!(to_rr2.name, "Node_10_0_0_2");
    assert_eq!(to_rr2.peer_type, PeerType::NodeSpecific);
    assert_eq!(to_rr2.source, "BGPPeer/peer-with-reflectors");
    assert_eq!(to_rr2.remote_node.as_deref(), Some("rr-2"));
    assert_eq!(to_rr2.peer.port, Some(1179));
    assert_eq!(to_rr2.peer.remote_as, 64512);
    assert!(to_rr2.peer.passive, "node-a's address is higher");
    assert!(!to_rr2.peer.route_reflector_client);
    // No problem: the BGPPeer's sessions shadow the automatic reflector topology's.
    assert!(a.problems.iter().all(
        |p| matches!(p, PeeringProblem::Shadowed { kept, .. } if kept.starts_with("BGPPeer/"))
    ));

    // rr-1 matches both selectors: forward to rr-2, and reverse to every node (not itself).
    let rr1 = plan("rr-1", &nodes, &configs, &peers);
    assert_eq!(
        addresses(&rr1),
        [ip("10.0.0.2"), ip("10.0.0.11"), ip("10.0.0.12")]
    );
    assert!(!rr1
        .sessions
        .iter()
        .any(|s| s.peer.address == ip("10.0.0.1")));
    let to_rr2 = rr1.session(ip("10.0.0.2")).unwrap();
    assert!(!to_rr2.peer.route_reflector_client, "same cluster");
    let to_a = rr1.session(ip("10.0.0.11")).unwrap();
    assert_eq!(to_a.name, "Node_10_0_0_11");
    assert!(to_a.peer.route_reflector_client);
    assert!(!to_a.peer.passive);
    let to_b = rr1.session(ip("10.0.0.12")).unwrap();
    assert_eq!(to_b.peer.remote_as, 65012);
    assert!(!to_b.peer.route_reflector_client, "eBGP is never a client");
}

#[test]
fn global_peer_selector_is_named_global_forward_and_node_in_reverse() {
    let nodes = vec![
        node4("node-a", "10.0.0.1"),
        with_label(node4("node-b", "10.0.0.2"), "edge", "yes"),
    ];
    let peers = [peer(
        "to-edge",
        BgpPeerSpec {
            peer_selector: Some("has(edge)".into()),
            ..Default::default()
        },
    )];
    let a = plan("node-a", &nodes, &[mesh_off()], &peers);
    assert_eq!(names(&a), ["Global_10_0_0_2"]);
    assert!(!a.sessions[0].peer.passive);
    let b = plan("node-b", &nodes, &[mesh_off()], &peers);
    assert_eq!(names(&b), ["Node_10_0_0_1"]);
    assert_eq!(b.sessions[0].peer_type, PeerType::NodeSpecific);
    assert!(b.sessions[0].peer.passive);
}

#[test]
fn peer_ip_of_a_node_is_configured_on_both_ends() {
    let nodes = three_nodes();
    // Every node peers with node-c by address: node-c peers back with all of them.
    let peers = [peer("to-c", ip_peer("10.0.0.3", 64512))];
    let a = plan("node-a", &nodes, &[mesh_off()], &peers);
    assert_eq!(names(&a), ["Global_10_0_0_3"]);
    assert_eq!(a.sessions[0].remote_node.as_deref(), Some("node-c"));
    assert!(!a.sessions[0].peer.passive);
    let c = plan("node-c", &nodes, &[mesh_off()], &peers);
    assert_eq!(names(&c), ["Node_10_0_0_1", "Node_10_0_0_2"]);
    assert!(c.sessions.iter().all(|s| s.peer.passive));
    // With another AS it is not that node's speaker: no reverse, and no passive side.
    let peers = [peer("to-c", ip_peer("10.0.0.3", 65003))];
    let a = plan("node-a", &nodes, &[mesh_off()], &peers);
    assert_eq!(a.sessions[0].remote_node, None);
    assert!(plan("node-c", &nodes, &[mesh_off()], &peers)
        .sessions
        .is_empty());
}

#[test]
fn one_session_per_address_with_reported_precedence() {
    let nodes = three_nodes();
    let mut node_b = ip_peer("192.168.1.1", 65001);
    node_b.node = Some("node-b".into());
    node_b.password = Some(file_password("/etc/routerd/b"));
    let peers = [
        peer("a-global", ip_peer("192.168.1.1", 65001)),
        peer("z-node-b", node_b),
        peer("z-global", ip_peer("192.168.1.1", 65009)),
        // An explicit peering to a mesh neighbour replaces the mesh session.
        peer("to-c", ip_peer("10.0.0.3", 64512)),
    ];
    let b = plan("node-b", &nodes, &[], &peers);
    assert_eq!(
        names(&b),
        ["Mesh_10_0_0_1", "Global_10_0_0_3", "Node_192_168_1_1"]
    );
    let tor = b.session(ip("192.168.1.1")).unwrap();
    assert_eq!(tor.source, "BGPPeer/z-node-b", "node-specific beats global");
    assert_eq!(tor.password, Some(file_password("/etc/routerd/b")));
    let shadowed: Vec<(String, String)> = b
        .problems
        .iter()
        .map(|p| match p {
            PeeringProblem::Shadowed { kept, dropped, .. } => (kept.clone(), dropped.clone()),
            other => panic!("{other}"),
        })
        .collect();
    assert_eq!(
        shadowed,
        [
            ("BGPPeer/to-c".into(), "Node/node-c".into()),
            ("BGPPeer/z-node-b".into(), "BGPPeer/a-global".into()),
            ("BGPPeer/z-node-b".into(), "BGPPeer/z-global".into()),
        ]
    );
    assert!(
        b.problems[0].to_string().contains("10.0.0.3"),
        "{}",
        b.problems[0]
    );
    // Among globals, name order decides.
    let a = plan("node-a", &nodes, &[], &peers);
    assert_eq!(
        a.session(ip("192.168.1.1")).unwrap().source,
        "BGPPeer/a-global"
    );
    assert_eq!(a.session(ip("192.168.1.1")).unwrap().peer.remote_as, 65001);
}

#[test]
fn duplicate_node_addresses_keep_the_first_node_by_name() {
    let nodes = vec![
        node4("node-a", "10.0.0.1"),
        node4("node-z", "10.0.0.2"),
        node4("node-b", "10.0.0.2"),
    ];
    let a = plan("node-a", &nodes, &[], &[]);
    assert_eq!(a.sessions.len(), 1);
    assert_eq!(a.sessions[0].remote_node.as_deref(), Some("node-b"));
    assert_eq!(
        a.problems,
        [PeeringProblem::Shadowed {
            address: ip("10.0.0.2"),
            kept: "Node/node-b".into(),
            dropped: "Node/node-z".into()
        }]
    );
    // And a node never peers with its own address, even when another node claims it.
    let b = plan("node-b", &nodes, &[], &[]);
    assert_eq!(addresses(&b), [ip("10.0.0.1")]);
}

#[test]
fn ipv6_mesh_per_shared_family() {
    let nodes = vec![
        node("node-a", Some("10.0.0.1"), Some("fd00::1")),
        node("node-b", Some("10.0.0.2"), Some("fd00::2")),
        node("node-c", Some("10.0.0.3"), None),
    ];
    let a = plan("node-a", &nodes, &[], &[]);
    assert_eq!(a.local.ipv6, Some("fd00::1/64".parse().unwrap()));
    assert_eq!(
        names(&a),
        ["Mesh_10_0_0_2", "Mesh_10_0_0_3", "Mesh_fd00__2"]
    );
    let v6 = a.session(ip("fd00::2")).unwrap();
    assert_eq!(v6.peer.local_address, Some(ip("fd00::1")));
    assert!(!v6.peer.passive);
    let b = plan("node-b", &nodes, &[], &[]);
    assert!(b.session(ip("fd00::1")).unwrap().peer.passive);
    let c = plan("node-c", &nodes, &[], &[]);
    assert_eq!(addresses(&c), [ip("10.0.0.1"), ip("10.0.0.2")]);
}

#[test]
fn passwords_are_carried_as_sources() {
    let nodes = three_nodes();
    let configs = [config(
        "default",
        BgpConfigurationSpec {
            node_mesh_password: Some(file_password("/etc/routerd/mesh")),
            node_mesh_max_restart_time: Some("5m".into()),
            ..Default::default()
        },
    )];
    let secret = PasswordSource {
        secret_key_ref: Some(SecretKeyRef {
            name: "bgp-secrets".into(),
            key: "tor".into(),
        }),
        file: None,
    };
    let mut spec = ip_peer("192.168.1.1", 65001);
    spec.password = Some(secret.clone());
    let p = plan("node-a", &nodes, &configs, &[peer("tor", spec)]);
    let mesh = p.session(ip("10.0.0.2")).unwrap();
    assert_eq!(mesh.password, Some(file_password("/etc/routerd/mesh")));
    assert_eq!(mesh.max_restart_time, Some(Duration::from_secs(300)));
    assert_eq!(mesh.peer.graceful_restart_time, Some(300));
    let tor = p.session(ip("192.168.1.1")).unwrap();
    assert_eq!(tor.password, Some(secret));
    assert_eq!(tor.max_restart_time, None);
    assert_eq!(tor.peer.graceful_restart_time, None);
    assert!(p.sessions.iter().all(|s| s.peer.password.is_none()));
    // The reflector topology replaces the mesh and uses its password too.
    let mut configs = configs;
    configs[0].spec.node_to_node_mesh_enabled = Some(false);
    let nodes = reflector_cluster();
    let c = plan("client-1", &nodes, &configs, &[]);
    assert!(c
        .sessions
        .iter()
        .all(|s| s.password == Some(file_password("/etc/routerd/mesh"))));
}

#[test]
fn port_in_peer_ip() {
    let nodes = vec![node("node-a", Some("10.0.0.1"), Some("fd00::1"))];
    let peers = [
        peer("v4", ip_peer("192.168.1.1:1179", 65001)),
        peer("v6", ip_peer("[fd00::9]:2179", 65001)),
        peer("std", ip_peer("192.168.1.2:179", 65001)),
    ];
    let p = plan("node-a", &nodes, &[], &peers);
    assert_eq!(p.session(ip("192.168.1.1")).unwrap().peer.port, Some(1179));
    assert_eq!(p.session(ip("192.168.1.2")).unwrap().peer.port, None);
    let v6 = p.session(ip("fd00::9")).unwrap();
    assert_eq!(v6.peer.port, Some(2179));
    assert_eq!(v6.name, "Global_fd00__9");
    assert_eq!(v6.peer.local_address, Some(ip("fd00::1")));
}

#[test]
fn next_hop_modes() {
    let nodes = vec![node4("node-a", "10.0.0.1")];
    let spec = |addr: &str, asn: u32, keep: Option<bool>, mode: Option<&str>| {
        let mut s = ip_peer(addr, asn);
        s.keep_original_next_hop = keep;
        s.next_hop_mode = mode.map(Into::into);
        s
    };
    let peers = [
        peer("ebgp-keep", spec("192.168.1.1", 65001, Some(true), None)),
        peer("ibgp-keep", spec("192.168.1.2", 64512, Some(true), None)),
        peer(
            "ibgp-mode-keep",
            spec("192.168.1.3", 64512, None, Some("Keep")),
        ),
        peer("self", spec("192.168.1.4", 64512, None, Some("Self"))),
        peer(
            "auto",
            spec("192.168.1.5", 65001, Some(false), Some("Auto")),
        ),
    ];
    let p = plan("node-a", &nodes, &[], &peers);
    let modes: Vec<NextHopMode> = p.sessions.iter().map(|s| s.peer.next_hop).collect();
    assert_eq!(
        modes,
        [
            NextHopMode::Keep,
            // Calico applies the legacy keepOriginalNextHop to eBGP only.
            NextHopMode::Auto,
            NextHopMode::Keep,
            NextHopMode::SelfAddress,
            NextHopMode::Auto,
        ]
    );
}

#[test]
fn per_peer_settings_are_mapped() {
    let nodes = vec![node4("node-a", "10.0.0.1")];
    let mut spec = ip_peer("192.168.1.1", 65001);
    spec.source_address = Some("None".into());
    spec.ttl_security = Some(1);
    spec.num_allowed_local_as_numbers = Some(2);
    spec.max_restart_time = Some("90s".into());
    spec.keepalive_time = Some("10s".into());
    spec.hold_time = Some("30s".into());
    spec.max_prefixes = Some(datastore::resource::MaxPrefixesSpec {
        limit: 500,
        warning_percent: Some(90),
        restart_time: Some("1m".into()),
    });
    spec.filters = vec!["export-blocks".into(), "no-default".into()];
    let mut plain = ip_peer("192.168.1.2", 65001);
    plain.source_address = Some("UseNodeIP".into());
    plain.ebgp_multihop = Some(3);
    let p = plan(
        "node-a",
        &nodes,
        &[],
        &[peer("tor", spec), peer("plain", plain)],
    );
    let s = p.session(ip("192.168.1.1")).unwrap();
    assert_eq!(s.peer.local_address, None);
    assert_eq!(s.peer.ttl_security, Some(1));
    assert_eq!(s.peer.allow_local_as, 2);
    assert_eq!(s.max_restart_time, Some(Duration::from_secs(90)));
    assert_eq!(s.peer.graceful_restart_time, Some(90));
    assert_eq!(s.peer.keepalive_time, Some(10));
    assert_eq!(s.filters, ["export-blocks", "no-default"]);
    assert_eq!(s.peer.hold_time, Some(30));
    let limit = s.peer.max_prefixes.unwrap();
    assert_eq!(
        (limit.limit, limit.warning_percent, limit.restart_after),
        (500, 90, Some(60))
    );
    let plain = p.session(ip("192.168.1.2")).unwrap();
    assert_eq!(plain.peer.local_address, Some(ip("10.0.0.1")));
    assert_eq!(plain.peer.ttl_security, None);
    assert_eq!(plain.peer.ebgp_multihop, Some(3));
    assert_eq!(s.peer.ebgp_multihop, None);
    assert_eq!(plain.peer.allow_local_as, 0);
    assert_eq!(plain.peer.hold_time, None);
    assert_eq!(plain.peer.max_prefixes, None);
    assert!(plain.filters.is_empty());
}

#[test]
fn reflector_treats_explicit_ibgp_peers_as_clients() {
    let nodes = vec![with_cluster(node4("rr-1", "10.0.0.1"), "1.0.0.1")];
    let peers = [
        peer("ibgp", ip_peer("192.168.1.1", 64512)),
        peer("ebgp", ip_peer("192.168.1.2", 65001)),
    ];
    let p = plan("rr-1", &nodes, &[], &peers);
    assert!(
        p.session(ip("192.168.1.1"))
            .unwrap()
            .peer
            .route_reflector_client
    );
    assert!(
        !p.session(ip("192.168.1.2"))
            .unwrap()
            .peer
            .route_reflector_client
    );
    // Routers outside the cluster are offered ADD-PATH receive only: we send them one
    // path per prefix, as Calico's BIRD does.
    for a in ["192.168.1.1", "192.168.1.2"] {
        assert_eq!(p.session(ip(a)).unwrap().peer.add_paths, Some(AddPaths::Rx));
    }
}

#[test]
fn invalid_peer_is_skipped_with_its_field_named() {
    let nodes = three_nodes();
    let mut bad_ttl = ip_peer("192.168.1.1", 65001);
    bad_ttl.ttl_security = Some(0);
    let mut bad_selector = BgpPeerSpec {
        peer_selector: Some("has(".into()),
        ..Default::default()
    };
    bad_selector.node = Some("node-a".into());
    let peers = [
        peer("bad-ttl", bad_ttl),
        peer("bad-selector", bad_selector),
        peer("good", ip_peer("192.168.1.2", 65001)),
    ];
    let p = plan("node-a", &nodes, &[], &peers);
    assert_eq!(
        addresses(&p),
        [ip("10.0.0.2"), ip("10.0.0.3"), ip("192.168.1.2")]
    );
    let invalid: Vec<(&str, &str)> = p
        .problems
        .iter()
        .map(|p| match p {
            PeeringProblem::Invalid { subject, error } => (subject.as_str(), error.field.as_str()),
            other => panic!("{other}"),
        })
        .collect();
    assert_eq!(
        invalid,
        [
            ("BGPPeer/bad-selector", "spec.peerSelector"),
            ("BGPPeer/bad-ttl", "spec.ttlSecurity"),
        ]
    );
    assert!(p.problems[1].to_string().contains("spec.ttlSecurity"));
}

#[test]
fn nodes_without_a_usable_address_are_skipped_and_reported() {
    let mut broken = node4("node-x", "10.0.0.9");
    broken.spec.bgp.as_mut().unwrap().ipv4_address = Some("10.0.0.9".into());
    let policy_only = Object::new("node-p", NodeSpec::default());
    let nodes = vec![
        node4("node-a", "10.0.0.1"),
        broken,
        policy_only,
        node4("node-b", "10.0.0.2"),
    ];
    let p = plan("node-a", &nodes, &[], &[]);
    assert_eq!(addresses(&p), [ip("10.0.0.2")]);
    assert!(
        matches!(&p.problems[..], [PeeringProblem::Invalid { subject, error }]
        if subject == "Node/node-x" && error.field == "spec.bgp.ipv4Address")
    );
}

#[test]
fn local_node_must_be_usable() {
    let nodes = vec![
        node4("node-a", "10.0.0.1"),
        Object::new("node-p", NodeSpec::default()),
        node("node-v6", None, Some("fd00::6")),
        with_cluster(node4("node-bad", "10.0.0.5"), "not-an-ip"),
    ];
    let err = |local: &str| {
        compute(&PeeringInput {
            local_node: local,
            nodes: &nodes,
            configs: &[],
            peers: &[],
            filters: &[],
        })
        .unwrap_err()
    };
    assert_eq!(err("node-q"), PeeringError::NodeMissing("node-q".into()));
    assert_eq!(err("node-p"), PeeringError::NoBgp("node-p".into()));
    assert_eq!(err("node-v6"), PeeringError::NoRouterId("node-v6".into()));
    assert!(
        matches!(err("node-bad"), PeeringError::InvalidNode { name, error }
        if name == "node-bad" && error.field == "spec.bgp.routeReflectorClusterID")
    );
    assert!(err("node-q").to_string().contains("node-q"));
    // For the others, the broken node is skipped and reported; the IPv6-only node is only
    // reachable over IPv6, which node-a lacks.
    let a = plan("node-a", &nodes, &[], &[]);
    assert!(a.sessions.is_empty(), "{:?}", a.sessions);
    assert!(
        matches!(&a.problems[..], [PeeringProblem::Invalid { subject, .. }]
        if subject == "Node/node-bad")
    );
}

#[test]
fn a_thousand_node_mesh_is_cheap() {
    let nodes: Vec<Node> = (0..1000u32)
        .map(|i| {
            let n = node4(
                &format!("node-{i:04}"),
                &format!("10.0.{}.{}", i / 200, i % 200 + 1),
            );
            with_label(n, "rack", &format!("r{}", i % 20))
        })
        .collect();
    let peers = [
        peer("tor", {
            let mut s = ip_peer("192.168.1.1", 65001);
            s.node_selector = Some("rack == 'r3'".into());
            s
        }),
        peer(
            "rack-mates",
            BgpPeerSpec {
                node_selector: Some("rack in {'r1', 'r2'}".into()),
                peer_selector: Some("rack == 'r3'".into()),
                ..Default::default()
            },
        ),
    ];
    let start = Instant::now();
    let p = plan("node-0003", &nodes, &[], &peers);
    let elapsed = start.elapsed();
    // 999 mesh sessions and the ToR; the selector peers replace 100 mesh sessions.
    assert_eq!(p.sessions.len(), 1000);
    assert!(
        elapsed < Duration::from_millis(500),
        "1000-node computation took {elapsed:?}"
    );
}

// ---- Property test: random clusters ----

#[derive(Debug, Clone)]
struct RandomNode {
    v4: bool,
    v6: bool,
    asn: u32,
    cluster: Option<u8>,
    rack: u8,
    port: Option<u16>,
}

#[derive(Debug, Clone)]
enum RandomPeer {
    /// nodeSelector rack == a (or global), peerSelector rack == b.
    Selector {
        scope: Option<u8>,
        target: u8,
        password: bool,
    },
    /// peerIP = node i's IPv4 address with its AS; scope rack or global.
    ToNode { scope: Option<u8>, target: usize },
    /// An external ToR.
    External { scope: Option<u8>, last: u8 },
}

fn arb_node() -> impl Strategy<Value = RandomNode> {
    (
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(64512u32), Just(65001u32)],
        proptest::option::of(0u8..2),
        0u8..3,
        proptest::option::of(prop_oneof![Just(179u16), Just(1179u16)]),
    )
        .prop_map(|(v4, v6, asn, cluster, rack, port)| RandomNode {
            v4,
            v6,
            asn,
            cluster,
            rack,
            port,
        })
}

fn arb_peer() -> impl Strategy<Value = RandomPeer> {
    let scope = proptest::option::of(0u8..3);
    prop_oneof![
        (scope.clone(), 0u8..3, any::<bool>()).prop_map(|(scope, target, password)| {
            RandomPeer::Selector {
                scope,
                target,
                password,
            }
        }),
        (scope.clone(), 0usize..12)
            .prop_map(|(scope, target)| RandomPeer::ToNode { scope, target }),
        (scope, 1u8..4).prop_map(|(scope, last)| RandomPeer::External { scope, last }),
    ]
}

fn build(
    specs: &[RandomNode],
    mesh: bool,
    random_peers: &[RandomPeer],
) -> (Vec<Node>, Vec<BgpConfiguration>, Vec<BgpPeer>) {
    let mut nodes = Vec::new();
    let mut configs = vec![config(
        "default",
        BgpConfigurationSpec {
            node_to_node_mesh_enabled: Some(mesh),
            ..Default::default()
        },
    )];
    for (i, s) in specs.iter().enumerate() {
        let name = format!("node-{i:02}");
        // Every node needs IPv4 to compute its own plan; the v4 flag decides only for
        // odd nodes, so IPv6-only peers appear too (they are not asked for a plan).
        let v4 = (s.v4 || i % 2 == 0).then(|| format!("10.0.0.{}", 200 - i));
        let v6 = s.v6.then(|| format!("fd00::{}", i + 1));
        let mut n = with_label(
            with_as(node(&name, v4.as_deref(), v6.as_deref()), s.asn),
            "rack",
            &format!("r{}", s.rack),
        );
        if let Some(c) = s.cluster {
            n = with_cluster(n, &format!("1.0.0.{}", c + 1));
        }
        if let Some(port) = s.port {
            configs.push(config(
                &format!("node.{name}"),
                BgpConfigurationSpec {
                    listen_port: Some(i64::from(port)),
                    ..Default::default()
                },
            ));
        }
        nodes.push(n);
    }
    let scope_of = |spec: &mut BgpPeerSpec, scope: &Option<u8>| {
        spec.node_selector = scope.map(|r| format!("rack == 'r{r}'"));
    };
    let mut peers = Vec::new();
    for (i, p) in random_peers.iter().enumerate() {
        let mut spec = match p {
            RandomPeer::Selector {
                target, password, ..
            } => BgpPeerSpec {
                peer_selector: Some(format!("rack == 'r{target}'")),
                password: password.then(|| file_password(&format!("/pw/{i}"))),
                ..Default::default()
            },
            RandomPeer::ToNode { target, .. } => {
                let t = target % specs.len();
                if !(specs[t].v4 || t % 2 == 0) {
                    continue;
                }
                ip_peer(&format!("10.0.0.{}", 200 - t), specs[t].asn)
            }
            RandomPeer::External { last, .. } => ip_peer(&format!("192.168.0.{last}"), 65100),
        };
        let (RandomPeer::Selector { scope, .. }
        | RandomPeer::ToNode { scope, .. }
        | RandomPeer::External { scope, .. }) = p;
        scope_of(&mut spec, scope);
        peers.push(peer(&format!("peer-{i:02}"), spec));
    }
    (nodes, configs, peers)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_clusters_agree_pairwise(
        specs in proptest::collection::vec(arb_node(), 2..10),
        mesh in any::<bool>(),
        random_peers in proptest::collection::vec(arb_peer(), 0..5),
        rotate in 0usize..10,
    ) {
        let (nodes, configs, peers) = build(&specs, mesh, &random_peers);
        let locals: Vec<&Node> = nodes
            .iter()
            .filter(|n| n.spec.bgp.as_ref().unwrap().ipv4_address.is_some())
            .collect();
        let mut plans = BTreeMap::new();
        for local in &locals {
            let name = local.metadata.name.as_str();
            let p = plan(name, &nodes, &configs, &peers);
            // Sorted, one per address, never to itself, deterministic in any input order.
            prop_assert!(p.sessions.windows(2).all(|w| w[0].peer.address < w[1].peer.address));
            let own = local.spec.bgp.as_ref().unwrap();
            for s in &p.sessions {
                prop_assert!(s.remote_node.as_deref() != Some(name));
                let prefix = format!("{}/", s.peer.address);
                let is_own = |o: &Option<String>| o.as_deref().is_some_and(|o| o.starts_with(&prefix));
                prop_assert!(!is_own(&own.ipv4_address) && !is_own(&own.ipv6_address));
                prop_assert_eq!(s.name.clone(), s.peer_type.session_name(s.peer.address));
            }
            prop_assert_eq!(&p, &plan(name, &nodes, &configs, &peers));
            let mut n2 = nodes.clone();
            n2.rotate_left(rotate % nodes.len());
            n2.reverse();
            let mut p2 = peers.clone();
            p2.reverse();
            let mut c2 = configs.clone();
            c2.reverse();
            prop_assert_eq!(&p, &plan(name, &n2, &c2, &p2));
            plans.insert(name.to_string(), p);
        }
        // Every session between two of our nodes exists on both ends, with exactly one end
        // connecting, the same originating resource for BGPPeers, and matching AS numbers.
        for (x, px) in &plans {
            for s in &px.sessions {
                let Some(y) = s.remote_node.as_deref() else { continue };
                let Some(py) = plans.get(y) else { continue };
                let back_addr = match s.peer.address {
                    IpAddr::V4(_) => IpAddr::V4(px.local.ipv4.addr()),
                    IpAddr::V6(_) => IpAddr::V6(px.local.ipv6.unwrap().addr()),
                };
                let back = py.session(back_addr);
                prop_assert!(back.is_some(), "{} has {} to {} but not the reverse", x, s.name, y);
                let back = back.unwrap();
                prop_assert_eq!(back.remote_node.as_deref(), Some(x.as_str()));
                prop_assert!(s.peer.passive != back.peer.passive, "{} <-> {}: passive {}", x, y, s.peer.passive);
                prop_assert_eq!(s.peer.remote_as, py.local.as_number);
                prop_assert_eq!(back.peer.remote_as, px.local.as_number);
                prop_assert_eq!(s.peer.port, (py.local.listen_port != 179).then_some(py.local.listen_port));
                if s.source.starts_with("BGPPeer/") || back.source.starts_with("BGPPeer/") {
                    prop_assert_eq!(&s.source, &back.source);
                    prop_assert_eq!(&s.password, &back.password);
                } else {
                    prop_assert_eq!(s.peer_type, back.peer_type);
                }
            }
        }
    }
}

#[test]
fn duplicate_and_invalid_resources_are_reported_not_fatal() {
    let nodes = three_nodes();
    let configs = [
        config(
            "default",
            BgpConfigurationSpec {
                listen_port: Some(70000),
                node_to_node_mesh_enabled: Some(false),
                ..Default::default()
            },
        ),
        config("bogus-name", BgpConfigurationSpec::default()),
    ];
    let peers = [
        peer("tor", ip_peer("192.168.1.1", 65001)),
        peer("tor", ip_peer("192.168.1.2", 65001)),
    ];
    let mut twice = nodes.clone();
    twice.push(node4("node-b", "10.0.0.9"));
    let p = plan("node-a", &twice, &configs, &peers);
    // The invalid default is ignored as a whole: the mesh stays on, port 179.
    assert!(p.local.node_to_node_mesh);
    assert_eq!(p.local.listen_port, 179);
    assert_eq!(
        addresses(&p),
        [ip("10.0.0.2"), ip("10.0.0.3"), ip("192.168.1.1")]
    );
    let text: Vec<String> = p.problems.iter().map(ToString::to_string).collect();
    assert_eq!(p.problems.len(), 4, "{text:#?}");
    assert!(p.problems.contains(&PeeringProblem::Duplicate {
        subject: "BGPPeer/tor".into()
    }));
    assert!(p.problems.contains(&PeeringProblem::Duplicate {
        subject: "Node/node-b".into()
    }));
    assert!(text
        .iter()
        .any(|t| t.starts_with("BGPConfiguration/default: spec.listenPort")));
    assert!(text
        .iter()
        .any(|t| t.starts_with("BGPConfiguration/bogus-name: metadata.name")));
}

#[test]
fn bfd_if_directly_connected_applies_to_peers_on_the_nodes_subnet_only() {
    let nodes = vec![node4("node-a", "10.0.0.1")];
    let bfd = |addr: &str| {
        let mut spec = ip_peer(addr, 65001);
        spec.failure_detection_mode = Some("BFDIfDirectlyConnected".into());
        spec
    };
    let mut tuned = bfd("10.0.0.253");
    tuned.bfd = Some(datastore::resource::BfdSpec {
        minimum_recv_interval: Some("100ms".into()),
        minimum_send_interval: Some("200ms".into()),
        multiplier: Some(5),
    });
    let p = plan(
        "node-a",
        &nodes,
        &[],
        &[
            peer("tor", bfd("10.0.0.254")),
            peer("tuned", tuned),
            peer("far", bfd("192.168.7.1")),
            peer("plain", ip_peer("10.0.0.252", 65001)),
        ],
    );
    let tor = p.session(ip("10.0.0.254")).unwrap().peer.bfd.unwrap();
    assert_eq!(
        (tor.min_rx_ms, tor.min_tx_ms, tor.multiplier),
        (300, 300, 3)
    );
    let tuned = p.session(ip("10.0.0.253")).unwrap().peer.bfd.unwrap();
    assert_eq!(
        (tuned.min_rx_ms, tuned.min_tx_ms, tuned.multiplier),
        (100, 200, 5)
    );
    // Not on 10.0.0.0/24: single-hop BFD cannot reach it, the session runs without.
    assert_eq!(p.session(ip("192.168.7.1")).unwrap().peer.bfd, None);
    assert_eq!(p.session(ip("10.0.0.252")).unwrap().peer.bfd, None);
}

/// A BGPPeer's BGPFilters are resolved with the plan, in the order it lists them; a name
/// without a BGPFilter is reported and skipped.
#[test]
fn filters_are_resolved_in_order_and_a_missing_one_is_reported() {
    let nodes = vec![node4("node-a", "10.0.0.1")];
    let filter = |name: &str, yaml: &str| {
        datastore::resource::BgpFilter::new(name, serde_norway::from_str(yaml).unwrap())
    };
    let filters = [
        filter(
            "export-blocks",
            "exportV4: [{action: Accept, matchOperator: In, cidr: 10.244.0.0/16}]",
        ),
        filter(
            "no-default",
            "importV4: [{action: Reject, matchOperator: Equal, cidr: 0.0.0.0/0}]\nexportV4: [{action: Reject, matchOperator: NotIn, cidr: 10.244.0.0/16}]",
        ),
    ];
    let mut spec = ip_peer("192.168.1.1", 65001);
    spec.filters = vec!["no-default".into(), "gone".into(), "export-blocks".into()];
    let p = compute(&PeeringInput {
        local_node: "node-a",
        nodes: &nodes,
        configs: &[],
        peers: &[peer("tor", spec)],
        filters: &filters,
    })
    .unwrap();
    let s = p.session(ip("192.168.1.1")).unwrap();
    assert_eq!(s.import.v4.len(), 1);
    // no-default's export rule first, then export-blocks'.
    let cidrs: Vec<String> = s
        .export
        .v4
        .iter()
        .map(|r| r.cidr.unwrap().to_string())
        .collect();
    assert_eq!(cidrs, ["10.244.0.0/16", "10.244.0.0/16"]);
    assert_eq!(
        s.export.v4[0].action,
        bgp::rib::FilterAction::Reject,
        "{:?}",
        s.export
    );
    assert!(
        p.problems.iter().any(|pr| matches!(pr,
            PeeringProblem::MissingFilter { subject, filter } if subject == "BGPPeer/tor" && filter == "gone")),
        "{:?}",
        p.problems
    );
}

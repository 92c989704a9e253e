//! Calico v3 manifests, written as in Calico's documentation, load unchanged; the typed values
//! are what the manifests say; YAML and JSON round trips are lossless.
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use datastore::resource::{
    parse_manifests, to_json, to_yaml, ApiVersion, BgpConfigurationScope, CidrMatch,
    CommunityValue, Kind, LargeCommunity, NextHopMode, PeerAddress, Resource, RuleAction,
    StandardCommunity,
};
use ipam::{EncapMode, IpPool, Selector};
use ipnet::IpNet;

const GLOBAL_TOR_PEER: &str = r#"
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: rack1-tor
spec:
  peerIP: 192.20.30.40
  asNumber: 64567
"#;

const NODE_PEER: &str = r#"
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: bgppeer-node-carrotwood
spec:
  peerIP: 192.168.1.1
  node: carrotwood
  asNumber: 64514
  password:
    secretKeyRef:
      name: bgp-secrets
      key: rr-password
  keepOriginalNextHop: true
  maxRestartTime: 120s
  ttlSecurity: 1
  filters:
  - my-filter
"#;

const SELECTOR_PEER: &str = r#"
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata:
  name: peer-with-route-reflectors
spec:
  nodeSelector: all()
  peerSelector: route-reflector == 'true'
"#;

const BGP_CONFIGURATION: &str = r#"
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  logSeverityScreen: Info
  nodeToNodeMeshEnabled: false
  asNumber: 63400
  listenPort: 178
  serviceClusterIPs:
  - cidr: 10.96.0.0/12
  serviceExternalIPs:
  - cidr: 104.244.42.129/32
  - cidr: 172.217.3.0/24
  serviceLoadBalancerIPs:
  - cidr: 192.0.2.0/24
  communities:
  - name: bgp-large-community
    value: 63400:300:100
  prefixAdvertisements:
  - cidr: 172.218.4.0/26
    communities:
    - bgp-large-community
    - 63400:120
  nodeMeshMaxRestartTime: 2m
"#;

const IP_POOL: &str = r#"
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: ippool-cs-1
spec:
  cidr: 192.168.0.0/16
  ipipMode: CrossSubnet
  natOutgoing: true
"#;

const NODE: &str = r#"
apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: node-hostname
  labels:
    route-reflector: "true"
    kubernetes.io/hostname: node-hostname
  resourceVersion: "1234"
spec:
  bgp:
    asNumber: 64512
    ipv4Address: 10.244.0.1/24
    ipv6Address: 2001:db8:85a3::8a2e:370:7334/120
    ipv4IPIPTunnelAddr: 192.168.0.1
    routeReflectorClusterID: 224.0.0.1
  ipv4VXLANTunnelAddr: 10.244.5.0
  vxlanTunnelMACAddr: 66:2f:d6:6d:3a:01
  orchRefs:
  - nodeName: node-hostname
    orchestrator: k8s
"#;

/// Shared with the agent's policy test, which converts it into the speaker's filters.
const BGP_FILTER: &str = include_str!("fixtures/bgp_filter.yaml");

fn all_manifests() -> String {
    [
        GLOBAL_TOR_PEER,
        NODE_PEER,
        SELECTOR_PEER,
        BGP_CONFIGURATION,
        IP_POOL,
        NODE,
        BGP_FILTER,
    ]
    .join("---\n")
}

fn one(text: &str) -> Resource {
    let mut v = parse_manifests(text).unwrap();
    assert_eq!(v.len(), 1);
    v.remove(0)
}

#[test]
fn multi_document_stream_parses_in_order() {
    let all = parse_manifests(&all_manifests()).unwrap();
    let kinds: Vec<(Kind, &str)> = all.iter().map(|r| (r.kind(), r.name())).collect();
    assert_eq!(
        kinds,
        vec![
            (Kind::BgpPeer, "rack1-tor"),
            (Kind::BgpPeer, "bgppeer-node-carrotwood"),
            (Kind::BgpPeer, "peer-with-route-reflectors"),
            (Kind::BgpConfiguration, "default"),
            (Kind::IpPool, "ippool-cs-1"),
            (Kind::Node, "node-hostname"),
            (Kind::BgpFilter, "my-filter"),
        ]
    );
    assert!(all.iter().all(|r| r.api_version() == ApiVersion::CalicoV3));
}

#[test]
fn global_peer_to_tor() {
    let Resource::BgpPeer(p) = one(GLOBAL_TOR_PEER) else {
        panic!("not a BGPPeer")
    };
    assert_eq!(
        p.spec.peer_address().unwrap(),
        Some(PeerAddress {
            ip: IpAddr::V4(Ipv4Addr::new(192, 20, 30, 40)),
            port: None
        })
    );
    assert_eq!(p.spec.as_number().unwrap(), Some(64567));
    assert_eq!(p.spec.node, None);
    assert_eq!(p.spec.node_selector().unwrap(), None);
    assert_eq!(p.spec.next_hop_mode().unwrap(), NextHopMode::Auto);
}

#[test]
fn per_node_peer() {
    let Resource::BgpPeer(p) = one(NODE_PEER) else {
        panic!("not a BGPPeer")
    };
    assert_eq!(p.spec.node.as_deref(), Some("carrotwood"));
    assert_eq!(p.spec.as_number().unwrap(), Some(64514));
    let secret = p
        .spec
        .password
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (secret.name.as_str(), secret.key.as_str()),
        ("bgp-secrets", "rr-password")
    );
    assert_eq!(p.spec.next_hop_mode().unwrap(), NextHopMode::Keep);
    assert_eq!(
        p.spec.max_restart_time().unwrap(),
        Some(Duration::from_secs(120))
    );
    assert_eq!(p.spec.ttl_security().unwrap(), Some(1));
    assert_eq!(p.spec.filters, vec!["my-filter".to_string()]);
}

#[test]
fn selector_peer() {
    let Resource::BgpPeer(p) = one(SELECTOR_PEER) else {
        panic!("not a BGPPeer")
    };
    assert_eq!(p.spec.node_selector().unwrap(), Some(Selector::All));
    let sel = p.spec.peer_selector().unwrap().unwrap();
    let rr: std::collections::BTreeMap<String, String> =
        [("route-reflector".to_string(), "true".to_string())].into();
    assert!(sel.matches(&rr));
    assert!(!sel.matches(&std::collections::BTreeMap::new()));
    assert_eq!(p.spec.as_number().unwrap(), None);
}

#[test]
fn peer_address_with_port() {
    let text = r#"
apiVersion: routerd.io/v1
kind: BGPPeer
metadata: {name: v6-tor}
spec: {peerIP: "[fd00::1]:1179", asNumber: "65000.1", password: {file: /etc/routerd/tor.key}}
"#;
    let Resource::BgpPeer(p) = one(text) else {
        panic!("not a BGPPeer")
    };
    assert_eq!(p.api_version, ApiVersion::RouterdV1);
    assert_eq!(
        p.spec.peer_address().unwrap(),
        Some(PeerAddress {
            ip: "fd00::1".parse().unwrap(),
            port: Some(1179)
        })
    );
    assert_eq!(p.spec.as_number().unwrap(), Some((65000 << 16) | 1));
    let v4 = datastore::resource::parse_peer_address("10.0.0.1:1179", "f").unwrap();
    assert_eq!(v4.port, Some(1179));
}

#[test]
fn bgp_configuration_default_with_mesh_disabled() {
    let Resource::BgpConfiguration(c) = one(BGP_CONFIGURATION) else {
        panic!("not a BGPConfiguration")
    };
    assert_eq!(
        BgpConfigurationScope::from_name(&c.metadata.name).unwrap(),
        BgpConfigurationScope::Global
    );
    assert_eq!(c.spec.node_to_node_mesh_enabled, Some(false));
    assert_eq!(c.spec.as_number().unwrap(), Some(63400));
    assert_eq!(c.spec.listen_port().unwrap(), Some(178));
    assert_eq!(c.spec.log_severity_screen.as_deref(), Some("Info"));
    let cidrs = |v: &[&str]| -> Vec<IpNet> { v.iter().map(|c| c.parse().unwrap()).collect() };
    assert_eq!(
        c.spec.service_cluster_ips().unwrap(),
        cidrs(&["10.96.0.0/12"])
    );
    assert_eq!(
        c.spec.service_external_ips().unwrap(),
        cidrs(&["104.244.42.129/32", "172.217.3.0/24"])
    );
    assert_eq!(
        c.spec.service_load_balancer_ips().unwrap(),
        cidrs(&["192.0.2.0/24"])
    );
    let named = c.spec.named_communities().unwrap();
    assert_eq!(
        named["bgp-large-community"],
        CommunityValue::Large(LargeCommunity {
            global: 63400,
            local1: 300,
            local2: 100
        })
    );
    let adv = c.spec.prefix_communities().unwrap();
    assert_eq!(adv.len(), 1);
    assert_eq!(adv[0].prefix, "172.218.4.0/26".parse::<IpNet>().unwrap());
    assert_eq!(
        adv[0].communities,
        vec![StandardCommunity {
            asn: 63400,
            value: 120
        }]
    );
    assert_eq!(
        adv[0].large_communities,
        vec![LargeCommunity {
            global: 63400,
            local1: 300,
            local2: 100
        }]
    );
    assert_eq!(
        c.spec.node_mesh_max_restart_time().unwrap(),
        Some(Duration::from_secs(120))
    );
}

#[test]
fn per_node_bgp_configuration() {
    let text = r#"
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: node.rack1-node3}
spec: {logSeverityScreen: Debug, listenPort: 1179}
"#;
    let Resource::BgpConfiguration(c) = one(text) else {
        panic!("not a BGPConfiguration")
    };
    assert_eq!(
        BgpConfigurationScope::from_name(&c.metadata.name).unwrap(),
        BgpConfigurationScope::Node("rack1-node3".into())
    );
}

#[test]
fn ip_pool_cross_subnet() {
    let Resource::IpPool(p) = one(IP_POOL) else {
        panic!("not an IPPool")
    };
    let pool = IpPool::new(&p.metadata.name, &p.spec).unwrap();
    assert_eq!(pool.ipip_mode(), EncapMode::CrossSubnet);
    assert!(pool.nat_outgoing());
    assert_eq!(pool.cidr(), "192.168.0.0/16".parse::<IpNet>().unwrap());
}

#[test]
fn node_with_bgp_addresses() {
    let r = one(NODE);
    assert_eq!(r.resource_version(), Some("1234"));
    let Resource::Node(n) = r else {
        panic!("not a Node")
    };
    assert_eq!(n.metadata.labels["route-reflector"], "true");
    let bgp = n.spec.bgp.as_ref().unwrap();
    let v4 = bgp.ipv4_address().unwrap().unwrap();
    assert_eq!(v4.addr(), Ipv4Addr::new(10, 244, 0, 1));
    assert_eq!(v4.prefix_len(), 24);
    assert_eq!(bgp.ipv6_address().unwrap().unwrap().prefix_len(), 120);
    assert_eq!(bgp.as_number().unwrap(), Some(64512));
    assert_eq!(
        bgp.route_reflector_cluster_id().unwrap(),
        Some(Ipv4Addr::new(224, 0, 0, 1))
    );
    assert_eq!(
        bgp.ipv4_ipip_tunnel_addr().unwrap(),
        Some(Ipv4Addr::new(192, 168, 0, 1))
    );
    assert_eq!(
        n.spec.ipv4_vxlan_tunnel_addr().unwrap(),
        Some(Ipv4Addr::new(10, 244, 5, 0))
    );
    assert_eq!(
        n.spec.vxlan_tunnel_mac_addr().unwrap(),
        Some([0x66, 0x2f, 0xd6, 0x6d, 0x3a, 0x01])
    );
}

#[test]
fn node_without_bgp_and_without_as_uses_global() {
    let text = r#"
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: worker-1}
spec:
  bgp: {ipv4Address: 10.0.0.11/24}
"#;
    let Resource::Node(n) = one(text) else {
        panic!("not a Node")
    };
    assert_eq!(n.spec.bgp.unwrap().as_number().unwrap(), None);
}

#[test]
fn bgp_filter_rules_are_checked_in_order() {
    let Resource::BgpFilter(f) = one(BGP_FILTER) else {
        panic!("not a BGPFilter")
    };
    let export = f.spec.export_rules().unwrap();
    assert_eq!(export.v4.len(), 2);
    assert_eq!(export.v4[0].action, RuleAction::Accept);
    assert_eq!(
        export.v4[0].cidr,
        Some(("77.0.0.0/16".parse().unwrap(), CidrMatch::In))
    );
    assert!(export.v4[1].remote_peers_only);
    let import = f.spec.import_rules().unwrap();
    assert_eq!(import.v6.len(), 1);
}

#[test]
fn yaml_round_trip_is_lossless() {
    let first = parse_manifests(&all_manifests()).unwrap();
    let yaml = to_yaml(&first).unwrap();
    let second = parse_manifests(&yaml).unwrap();
    assert_eq!(first, second);
    // And once more: the written form is a fixed point.
    assert_eq!(to_yaml(&second).unwrap(), yaml);
    // Calico spellings survive.
    for field in [
        "peerIP: 192.20.30.40",
        "routeReflectorClusterID: 224.0.0.1",
        "ipv4VXLANTunnelAddr: 10.244.5.0",
        "vxlanTunnelMACAddr: 66:2f:d6:6d:3a:01",
        "serviceClusterIPs:",
        "nodeToNodeMeshEnabled: false",
        "apiVersion: projectcalico.org/v3",
        "resourceVersion: '1234'",
    ] {
        assert!(yaml.contains(field), "{field} missing from\n{yaml}");
    }
}

#[test]
fn json_round_trip_is_lossless() {
    let first = parse_manifests(&all_manifests()).unwrap();
    let json = to_json(&first);
    assert!(json.trim_start().starts_with('['));
    assert_eq!(parse_manifests(&json).unwrap(), first);
    let single = to_json(&first[..1]);
    assert!(single.trim_start().starts_with('{'));
    assert_eq!(parse_manifests(&single).unwrap(), first[..1].to_vec());
}

#[test]
fn serde_impls_round_trip() {
    let first = parse_manifests(NODE_PEER).unwrap().remove(0);
    let text = serde_norway::to_string(&first).unwrap();
    let back: Resource = serde_norway::from_str(&text).unwrap();
    assert_eq!(back, first);
    let back: Resource = serde_json::from_str(&serde_json::to_string(&first).unwrap()).unwrap();
    assert_eq!(back, first);
}

#[test]
fn lists_and_empty_documents_are_flattened() {
    let text = format!(
        "---\n---\napiVersion: projectcalico.org/v3\nkind: BGPPeerList\nitems:\n{}\n---\n",
        [GLOBAL_TOR_PEER, SELECTOR_PEER]
            .iter()
            .map(|m| {
                let v: serde_json::Value = serde_norway::from_str(m).unwrap();
                format!("- {}", serde_json::to_string(&v).unwrap())
            })
            .collect::<Vec<_>>()
            .join("\n")
    );
    let all = parse_manifests(&text).unwrap();
    let names: Vec<&str> = all.iter().map(Resource::name).collect();
    assert_eq!(names, ["rack1-tor", "peer-with-route-reflectors"]);
    assert!(parse_manifests("").unwrap().is_empty());
}

#[test]
fn status_is_accepted_and_dropped() {
    let text = format!("{NODE}status:\n  podCIDRs: [10.244.0.0/24]\n");
    let r = one(&text);
    assert!(!to_yaml(&[r]).unwrap().contains("status"));
}

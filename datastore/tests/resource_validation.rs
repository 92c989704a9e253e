//! Every field a manifest can get wrong is refused, and the error names kind, name and field
//! path. Each case is a small manifest and the field path it must be refused on.
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

use datastore::resource::{parse_manifests, Kind, ResourceError};

/// Parses `text`, expecting it to be refused on `kind`/`name` at `field`.
#[track_caller]
fn rejected(text: &str, kind: Kind, name: &str, field: &str) -> String {
    match parse_manifests(text) {
        Ok(r) => panic!("accepted {r:?}\nfrom\n{text}"),
        Err(e @ ResourceError::Invalid { .. }) => {
            let ResourceError::Invalid {
                kind: k,
                name: n,
                error,
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(
                (*k, n.as_str(), error.field.as_str()),
                (kind, name, field),
                "{e}\nfrom\n{text}"
            );
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("{kind}/{name}: {field}: ")),
                "{msg}"
            );
            msg
        }
        Err(e) => panic!("syntax error {e} instead of {kind}/{name}: {field}\n{text}"),
    }
}

fn peer(spec: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: rack1-tor\nspec:\n{}",
        indent(spec)
    )
}

fn node(spec: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: node-a\nspec:\n{}",
        indent(spec)
    )
}

fn config(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: {name}\nspec:\n{}",
        indent(spec)
    )
}

fn filter(spec: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: f\nspec:\n{}",
        indent(spec)
    )
}

fn pool(spec: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\nspec:\n{}",
        indent(spec)
    )
}

fn indent(s: &str) -> String {
    s.trim()
        .lines()
        .map(|l| format!("  {l}\n"))
        .collect::<String>()
}

fn syntax_error(text: &str) -> String {
    match parse_manifests(text) {
        Err(e @ ResourceError::Syntax { .. }) => e.to_string(),
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

// ---- envelope and metadata -------------------------------------------------------------

#[test]
fn envelope_errors() {
    let e = syntax_error("apiVersion: projectcalico.org/v2\nkind: Node\nmetadata: {name: a}\n");
    assert!(
        e.contains("apiVersion") && e.contains("projectcalico.org/v2"),
        "{e}"
    );
    let e = syntax_error("kind: Node\nmetadata: {name: a}\n");
    assert!(e.contains("apiVersion: missing"), "{e}");
    let e = syntax_error("apiVersion: routerd.io/v1\nmetadata: {name: a}\n");
    assert!(e.contains("kind: missing"), "{e}");
    let e = syntax_error("apiVersion: routerd.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\n");
    assert!(e.contains("NetworkPolicy"), "{e}");
    let e = syntax_error("apiVersion: routerd.io/v1\nkind: Node\nspec: {}\n");
    assert!(e.contains("metadata: missing"), "{e}");
    let e = syntax_error("apiVersion: routerd.io/v1\nkind: Node\nmetadata: {labels: {}}\n");
    assert!(e.contains("metadata.name"), "{e}");
    let e = syntax_error("- just\n- a list\n");
    assert!(e.contains("mapping"), "{e}");
    let e = syntax_error("apiVersion: [unclosed\n");
    assert!(e.starts_with("document 1:"), "{e}");
    let e = syntax_error("{\"apiVersion\": ");
    assert!(e.starts_with("document 1:"), "{e}");
    // The second document is the bad one.
    let text = format!(
        "{}---\nkind: Node\n",
        peer("peerIP: 10.0.0.1\nasNumber: 65000")
    );
    assert!(syntax_error(&text).starts_with("document 2:"));
}

#[test]
fn unknown_top_level_field() {
    let text = format!("{}extra: 1\n", node("bgp: {ipv4Address: 10.0.0.11/24}"));
    rejected(&text, Kind::Node, "node-a", "extra");
}

#[test]
fn unknown_metadata_field() {
    let text = "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: node-a\n  namespce: x\nspec: {}\n";
    let msg = rejected(text, Kind::Node, "node-a", "metadata.namespce");
    assert!(msg.contains("unknown field `namespce`"), "{msg}");
}

/// Only WorkloadEndpoints are namespaced: a namespace on any other kind is refused.
#[test]
fn namespace_on_a_cluster_scoped_kind() {
    let text = "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: node-a\n  namespace: x\nspec: {}\n";
    let msg = rejected(text, Kind::Node, "node-a", "metadata.namespace");
    assert!(msg.contains("cluster-scoped"), "{msg}");
}

#[test]
fn bad_names() {
    let text = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: Rack1_TOR}\nspec: {peerIP: 10.0.0.1, asNumber: 65000}\n";
    rejected(text, Kind::BgpPeer, "Rack1_TOR", "metadata.name");
    let text = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: Pool}\nspec: {cidr: 10.0.0.0/16}\n";
    rejected(text, Kind::IpPool, "Pool", "metadata.name");
}

#[test]
fn bad_label_key() {
    let text = "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: node-a\n  labels: {\"bad key\": x}\nspec: {}\n";
    rejected(text, Kind::Node, "node-a", "metadata.labels.bad key");
}

// ---- BGPPeer -----------------------------------------------------------------------------

#[test]
fn peer_as_number_zero_message() {
    let msg = rejected(
        &peer("peerIP: 10.0.0.1\nasNumber: 0"),
        Kind::BgpPeer,
        "rack1-tor",
        "spec.asNumber",
    );
    assert_eq!(
        msg,
        "BGPPeer/rack1-tor: spec.asNumber: 0 is not a valid AS number"
    );
    for bad in ["4294967296", "-5", "\"x\"", "\"70000.1\""] {
        rejected(
            &peer(&format!("peerIP: 10.0.0.1\nasNumber: {bad}")),
            Kind::BgpPeer,
            "rack1-tor",
            "spec.asNumber",
        );
    }
}

#[test]
fn peer_unknown_field_named_with_path() {
    let msg = rejected(
        &peer("peerIp: 10.0.0.1\nasNumber: 65000"),
        Kind::BgpPeer,
        "rack1-tor",
        "spec.peerIp",
    );
    assert!(msg.contains("unknown field `peerIp`"), "{msg}");
    let msg = rejected(
        &peer("peerIP: 10.0.0.1\nasNumber: 65000\npassword: {secretKeyRef: {name: s, key: k, namespace: x}}"),
        Kind::BgpPeer,
        "rack1-tor",
        "spec.password.secretKeyRef.namespace",
    );
    assert!(msg.contains("unknown field `namespace`"), "{msg}");
}

#[test]
fn peer_wrong_type() {
    let msg = rejected(
        &peer("peerIP: 10.0.0.1\nasNumber: 65000\nkeepOriginalNextHop: maybe"),
        Kind::BgpPeer,
        "rack1-tor",
        "spec.keepOriginalNextHop",
    );
    assert!(msg.contains("invalid type"), "{msg}");
}

#[test]
fn peer_ip() {
    for bad in [
        "10.0.0",
        "10.0.0.1:",
        "10.0.0.1:0",
        "10.0.0.1:70000",
        "fd00::1:179:x",
        "[fd00::1]",
        "host.example",
    ] {
        rejected(
            &peer(&format!("peerIP: \"{bad}\"\nasNumber: 65000")),
            Kind::BgpPeer,
            "rack1-tor",
            "spec.peerIP",
        );
    }
}

#[test]
fn peer_ip_or_selector() {
    rejected(
        &peer("peerIP: 10.0.0.1\npeerSelector: rr == 'true'"),
        Kind::BgpPeer,
        "rack1-tor",
        "spec.peerSelector",
    );
    rejected(
        &peer("node: node-a"),
        Kind::BgpPeer,
        "rack1-tor",
        "spec.peerIP",
    );
}

#[test]
fn peer_as_number_rules() {
    let msg = rejected(
        &peer("peerIP: 10.0.0.1"),
        Kind::BgpPeer,
        "rack1-tor",
        "spec.asNumber",
    );
    assert!(msg.contains("required"), "{msg}");
    rejected(
        &peer("peerSelector: rr == 'true'\nasNumber: 65000"),
        Kind::BgpPeer,
        "rack1-tor",
        "spec.asNumber",
    );
}

#[test]
fn peer_node_or_node_selector() {
    rejected(
        &peer("peerIP: 10.0.0.1\nasNumber: 65000\nnode: node-a\nnodeSelector: all()"),
        Kind::BgpPeer,
        "rack1-tor",
        "spec.nodeSelector",
    );
    rejected(
        &peer("peerIP: 10.0.0.1\nasNumber: 65000\nnode: Node_A"),
        Kind::BgpPeer,
        "rack1-tor",
        "spec.node",
    );
}

#[test]
fn peer_selectors_parse() {
    let msg = rejected(
        &peer("peerIP: 10.0.0.1\nasNumber: 65000\nnodeSelector: rack = 'a'"),
        Kind::BgpPeer,
        "rack1-tor",
        "spec.nodeSelector",
    );
    assert!(msg.contains("invalid selector"), "{msg}");
    rejected(
        &peer("peerSelector: has(rr"),
        Kind::BgpPeer,
        "rack1-tor",
        "spec.peerSelector",
    );
}

#[test]
fn peer_password() {
    rejected(
        &peer("peerIP: 10.0.0.1\nasNumber: 65000\npassword: {}"),
        Kind::BgpPeer,
        "rack1-tor",
        "spec.password",
    );
    rejected(
        &peer("peerIP: 10.0.0.1\nasNumber: 65000\npassword: {file: /a, secretKeyRef: {name: s, key: k}}"),
        Kind::BgpPeer,
        "rack1-tor",
        "spec.password",
    );
    rejected(
        &peer("peerIP: 10.0.0.1\nasNumber: 65000\npassword: {file: relative/key}"),
        Kind::BgpPeer,
        "rack1-tor",
        "spec.password.file",
    );
    rejected(
        &peer("peerIP: 10.0.0.1\nasNumber: 65000\npassword: {secretKeyRef: {name: s, key: \"\"}}"),
        Kind::BgpPeer,
        "rack1-tor",
        "spec.password.secretKeyRef.key",
    );
    rejected(
        &peer("peerIP: 10.0.0.1\nasNumber: 65000\npassword: {secretKeyRef: {name: S, key: k}}"),
        Kind::BgpPeer,
        "rack1-tor",
        "spec.password.secretKeyRef.name",
    );
}

#[test]
fn peer_source_address() {
    rejected(
        &peer("peerIP: 10.0.0.1\nasNumber: 65000\nsourceAddress: useNodeIP"),
        Kind::BgpPeer,
        "rack1-tor",
        "spec.sourceAddress",
    );
}

#[test]
fn peer_next_hop() {
    rejected(
        &peer("peerIP: 10.0.0.1\nasNumber: 65000\nnextHopMode: Other"),
        Kind::BgpPeer,
        "rack1-tor",
        "spec.nextHopMode",
    );
    rejected(
        &peer("peerIP: 10.0.0.1\nasNumber: 65000\nnextHopMode: Self\nkeepOriginalNextHop: true"),
        Kind::BgpPeer,
        "rack1-tor",
        "spec.keepOriginalNextHop",
    );
}

#[test]
fn peer_max_restart_time() {
    for bad in ["120", "2 minutes", "-1s"] {
        rejected(
            &peer(&format!(
                "peerIP: 10.0.0.1\nasNumber: 65000\nmaxRestartTime: \"{bad}\""
            )),
            Kind::BgpPeer,
            "rack1-tor",
            "spec.maxRestartTime",
        );
    }
}

#[test]
fn peer_keepalive_time() {
    for bad in ["0s", "1.5s", "30", "30h", "-1s"] {
        rejected(
            &peer(&format!(
                "peerIP: 10.0.0.1\nasNumber: 65000\nkeepaliveTime: \"{bad}\""
            )),
            Kind::BgpPeer,
            "rack1-tor",
            "spec.keepaliveTime",
        );
    }
}

#[test]
fn peer_hold_time() {
    for bad in ["1s", "2s", "1.5s", "90", "65536s", "-3s"] {
        rejected(
            &peer(&format!(
                "peerIP: 10.0.0.1\nasNumber: 65000\nholdTime: \"{bad}\""
            )),
            Kind::BgpPeer,
            "rack1-tor",
            "spec.holdTime",
        );
    }
    for good in ["0s", "3s", "9s", "4m"] {
        let text = peer(&format!(
            "peerIP: 10.0.0.1\nasNumber: 65000\nholdTime: \"{good}\""
        ));
        parse_manifests(&text).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
}

#[test]
fn peer_max_prefixes() {
    for (bad, field) in [
        ("limit: 0", "spec.maxPrefixes.limit"),
        ("limit: -5", "spec.maxPrefixes.limit"),
        ("limit: 4294967296", "spec.maxPrefixes.limit"),
        (
            "limit: 10\n  warningPercent: 0",
            "spec.maxPrefixes.warningPercent",
        ),
        (
            "limit: 10\n  warningPercent: 101",
            "spec.maxPrefixes.warningPercent",
        ),
        (
            "limit: 10\n  restartTime: 0s",
            "spec.maxPrefixes.restartTime",
        ),
        (
            "limit: 10\n  restartTime: 1.5s",
            "spec.maxPrefixes.restartTime",
        ),
        (
            "limit: 10\n  restartTime: soon",
            "spec.maxPrefixes.restartTime",
        ),
    ] {
        rejected(
            &peer(&format!(
                "peerIP: 10.0.0.1\nasNumber: 65000\nmaxPrefixes:\n  {bad}"
            )),
            Kind::BgpPeer,
            "rack1-tor",
            field,
        );
    }
    let text =
        peer("peerIP: 10.0.0.1\nasNumber: 65000\nmaxPrefixes:\n  limit: 1000\n  restartTime: 5m");
    let resources = parse_manifests(&text).unwrap();
    let datastore::resource::Resource::BgpPeer(p) = &resources[0] else {
        panic!("{resources:?}")
    };
    let m = p.spec.max_prefixes().unwrap().unwrap();
    assert_eq!(
        (m.limit, m.warning_percent, m.restart_after),
        (1000, 75, Some(300))
    );
}

#[test]
fn peer_bfd() {
    let base = "peerIP: 10.0.0.1\nasNumber: 65000\n";
    for (bad, field) in [
        ("failureDetectionMode: BFD", "spec.failureDetectionMode"),
        (
            "failureDetectionMode: BFDIfDirectlyConnected\nsourceAddress: None",
            "spec.failureDetectionMode",
        ),
        ("bfd:\n  multiplier: 3", "spec.bfd"),
        (
            "failureDetectionMode: BFDIfDirectlyConnected\nbfd:\n  multiplier: 0",
            "spec.bfd.multiplier",
        ),
        (
            "failureDetectionMode: BFDIfDirectlyConnected\nbfd:\n  minimumRecvInterval: 5ms",
            "spec.bfd.minimumRecvInterval",
        ),
        (
            "failureDetectionMode: BFDIfDirectlyConnected\nbfd:\n  minimumSendInterval: 2m",
            "spec.bfd.minimumSendInterval",
        ),
        (
            "failureDetectionMode: BFDIfDirectlyConnected\nbfd:\n  minimumSendInterval: 300",
            "spec.bfd.minimumSendInterval",
        ),
        (
            "failureDetectionMode: BFDIfDirectlyConnected\nbfd:\n  echo: true",
            "spec.bfd.echo",
        ),
    ] {
        rejected(
            &peer(&format!("{base}{bad}")),
            Kind::BgpPeer,
            "rack1-tor",
            field,
        );
    }
    let ok = peer(&format!(
        "{base}failureDetectionMode: BFDIfDirectlyConnected\nbfd:\n  minimumRecvInterval: 100ms\n  multiplier: 5"
    ));
    let resources = parse_manifests(&ok).unwrap();
    let datastore::resource::Resource::BgpPeer(p) = &resources[0] else {
        panic!("{resources:?}")
    };
    let t = p.spec.bfd().unwrap().unwrap();
    assert_eq!((t.min_rx_ms, t.min_tx_ms, t.multiplier), (100, 300, 5));
}

#[test]
fn peer_num_allowed_local_as_numbers() {
    for bad in ["-1", "256"] {
        rejected(
            &peer(&format!(
                "peerIP: 10.0.0.1\nasNumber: 65000\nnumAllowedLocalASNumbers: {bad}"
            )),
            Kind::BgpPeer,
            "rack1-tor",
            "spec.numAllowedLocalASNumbers",
        );
    }
    // Calico's spelling, and the one earlier routerd versions wrote; Calico's is written.
    for field in ["numAllowedLocalASNumbers", "numAllowedLocalAsNumbers"] {
        let ok = peer(&format!("peerIP: 10.0.0.1\nasNumber: 65000\n{field}: 2"));
        let resources = parse_manifests(&ok).unwrap();
        let datastore::resource::Resource::BgpPeer(p) = &resources[0] else {
            panic!("{resources:?}")
        };
        assert_eq!(p.spec.num_allowed_local_as_numbers().unwrap(), Some(2));
        let written = resources[0].to_value().to_string();
        assert!(
            written.contains("\"numAllowedLocalASNumbers\":2"),
            "{written}"
        );
    }
}

#[test]
fn peer_ttl_security() {
    for bad in ["0", "256", "-1"] {
        rejected(
            &peer(&format!(
                "peerIP: 10.0.0.1\nasNumber: 65000\nttlSecurity: {bad}"
            )),
            Kind::BgpPeer,
            "rack1-tor",
            "spec.ttlSecurity",
        );
    }
}

#[test]
fn peer_ebgp_multihop() {
    for bad in ["0", "256", "-1"] {
        rejected(
            &peer(&format!(
                "peerIP: 10.0.0.1\nasNumber: 65000\nebgpMultihop: {bad}"
            )),
            Kind::BgpPeer,
            "rack1-tor",
            "spec.ebgpMultihop",
        );
    }
    // GTSM sends with TTL 255: the two cannot be combined.
    rejected(
        &peer("peerIP: 10.0.0.1\nasNumber: 65000\nebgpMultihop: 2\nttlSecurity: 1"),
        Kind::BgpPeer,
        "rack1-tor",
        "spec.ebgpMultihop",
    );
    assert!(datastore::resource::parse_manifests(&peer(
        "peerIP: 10.0.0.1\nasNumber: 65000\nebgpMultihop: 2"
    ))
    .is_ok());
}

#[test]
fn peer_filter_names() {
    rejected(
        &peer("peerIP: 10.0.0.1\nasNumber: 65000\nfilters: [ok, Not_OK]"),
        Kind::BgpPeer,
        "rack1-tor",
        "spec.filters[1]",
    );
}

// ---- Node --------------------------------------------------------------------------------

#[test]
fn node_ipv4_address() {
    let msg = rejected(
        &node("bgp: {ipv4Address: 10.0.0.11}"),
        Kind::Node,
        "node-a",
        "spec.bgp.ipv4Address",
    );
    assert!(msg.contains("prefix length"), "{msg}");
    let msg = rejected(
        &node("bgp: {ipv4Address: 10.0.0.0/24}"),
        Kind::Node,
        "node-a",
        "spec.bgp.ipv4Address",
    );
    assert!(msg.contains("network address"), "{msg}");
    for bad in ["fd00::1/64", "10.0.0.1/33", "banana"] {
        rejected(
            &node(&format!("bgp: {{ipv4Address: \"{bad}\"}}")),
            Kind::Node,
            "node-a",
            "spec.bgp.ipv4Address",
        );
    }
    // /31 and /32 have no network address to confuse with.
    parse_manifests(&node("bgp: {ipv4Address: 10.0.0.0/31}")).unwrap();
    parse_manifests(&node("bgp: {ipv4Address: 10.0.0.7/32}")).unwrap();
}

#[test]
fn node_ipv6_address() {
    for bad in ["10.0.0.1/24", "fd00::/64", "fd00::1"] {
        rejected(
            &node(&format!("bgp: {{ipv6Address: \"{bad}\"}}")),
            Kind::Node,
            "node-a",
            "spec.bgp.ipv6Address",
        );
    }
}

#[test]
fn node_bgp_needs_an_address() {
    rejected(
        &node("bgp: {asNumber: 65001}"),
        Kind::Node,
        "node-a",
        "spec.bgp",
    );
}

#[test]
fn node_as_number() {
    rejected(
        &node("bgp: {ipv4Address: 10.0.0.11/24, asNumber: 0}"),
        Kind::Node,
        "node-a",
        "spec.bgp.asNumber",
    );
}

#[test]
fn node_route_reflector_cluster_id() {
    for bad in ["1", "fd00::1", "224.0.0.256"] {
        rejected(
            &node(&format!(
                "bgp: {{ipv4Address: 10.0.0.11/24, routeReflectorClusterID: \"{bad}\"}}"
            )),
            Kind::Node,
            "node-a",
            "spec.bgp.routeReflectorClusterID",
        );
    }
}

#[test]
fn node_tunnel_addresses() {
    rejected(
        &node("bgp: {ipv4Address: 10.0.0.11/24, ipv4IPIPTunnelAddr: 10.0.0.0/24}"),
        Kind::Node,
        "node-a",
        "spec.bgp.ipv4IPIPTunnelAddr",
    );
    rejected(
        &node("ipv4VXLANTunnelAddr: fd00::1"),
        Kind::Node,
        "node-a",
        "spec.ipv4VXLANTunnelAddr",
    );
    rejected(
        &node("ipv6VXLANTunnelAddr: 10.0.0.1"),
        Kind::Node,
        "node-a",
        "spec.ipv6VXLANTunnelAddr",
    );
}

#[test]
fn node_mac_addresses() {
    for bad in [
        "66:2f:d6:6d:3a",
        "66:2f:d6:6d:3a:zz",
        "662fd66d3a01",
        "66:2f:d6:6d:3a:1",
    ] {
        rejected(
            &node(&format!("vxlanTunnelMACAddr: \"{bad}\"")),
            Kind::Node,
            "node-a",
            "spec.vxlanTunnelMACAddr",
        );
    }
    rejected(
        &node("vxlanTunnelMACAddrV6: x"),
        Kind::Node,
        "node-a",
        "spec.vxlanTunnelMACAddrV6",
    );
}

#[test]
fn node_addresses_list() {
    rejected(
        &node("addresses:\n- {address: 10.0.0.11, type: InternalIP}\n- {address: nope}"),
        Kind::Node,
        "node-a",
        "spec.addresses[1].address",
    );
}

#[test]
fn node_unknown_nested_field() {
    let msg = rejected(
        &node("bgp: {ipv4Address: 10.0.0.11/24, asNumbr: 65001}"),
        Kind::Node,
        "node-a",
        "spec.bgp.asNumbr",
    );
    assert!(msg.contains("unknown field `asNumbr`"), "{msg}");
}

// ---- BGPConfiguration --------------------------------------------------------------------

#[test]
fn config_name() {
    rejected(
        &config("global", "asNumber: 65000"),
        Kind::BgpConfiguration,
        "global",
        "metadata.name",
    );
    rejected(
        &config("node.Bad_Node", "listenPort: 179"),
        Kind::BgpConfiguration,
        "node.Bad_Node",
        "metadata.name",
    );
}

#[test]
fn config_as_number() {
    rejected(
        &config("default", "asNumber: 0"),
        Kind::BgpConfiguration,
        "default",
        "spec.asNumber",
    );
}

#[test]
fn config_listen_port() {
    for bad in ["0", "65536", "-1"] {
        rejected(
            &config("default", &format!("listenPort: {bad}")),
            Kind::BgpConfiguration,
            "default",
            "spec.listenPort",
        );
    }
}

#[test]
fn config_log_severity() {
    rejected(
        &config("default", "logSeverityScreen: info"),
        Kind::BgpConfiguration,
        "default",
        "spec.logSeverityScreen",
    );
}

#[test]
fn config_communities() {
    rejected(
        &config("default", "communities:\n- {name: a, value: \"65536:1\"}"),
        Kind::BgpConfiguration,
        "default",
        "spec.communities[0].value",
    );
    rejected(
        &config(
            "default",
            "communities:\n- {name: a, value: \"1:1\"}\n- {name: a, value: \"1:2\"}",
        ),
        Kind::BgpConfiguration,
        "default",
        "spec.communities[1].name",
    );
    rejected(
        &config("default", "communities:\n- {name: \"\", value: \"1:1\"}"),
        Kind::BgpConfiguration,
        "default",
        "spec.communities[0].name",
    );
}

#[test]
fn config_prefix_advertisements() {
    rejected(
        &config(
            "default",
            "prefixAdvertisements:\n- {cidr: 10.0.0.1/24, communities: [\"1:1\"]}",
        ),
        Kind::BgpConfiguration,
        "default",
        "spec.prefixAdvertisements[0].cidr",
    );
    let msg = rejected(
        &config(
            "default",
            "prefixAdvertisements:\n- {cidr: 10.0.0.0/24, communities: [undefined-name]}",
        ),
        Kind::BgpConfiguration,
        "default",
        "spec.prefixAdvertisements[0].communities[0]",
    );
    assert!(msg.contains("undefined-name"), "{msg}");
    rejected(
        &config(
            "default",
            "prefixAdvertisements:\n- {cidr: 10.0.0.0/24, communities: [\"1:2:3:4\"]}",
        ),
        Kind::BgpConfiguration,
        "default",
        "spec.prefixAdvertisements[0].communities[0]",
    );
}

#[test]
fn config_service_ips() {
    for (list, field) in [
        ("serviceClusterIPs", "spec.serviceClusterIPs[0].cidr"),
        ("serviceExternalIPs", "spec.serviceExternalIPs[0].cidr"),
        (
            "serviceLoadBalancerIPs",
            "spec.serviceLoadBalancerIPs[0].cidr",
        ),
    ] {
        rejected(
            &config("default", &format!("{list}:\n- cidr: 10.96.0.0/33")),
            Kind::BgpConfiguration,
            "default",
            field,
        );
    }
    rejected(
        &config(
            "default",
            "serviceClusterIPs:\n- cidr: 10.96.0.0/12\n  extra: 1",
        ),
        Kind::BgpConfiguration,
        "default",
        "spec.serviceClusterIPs[0].extra",
    );
}

#[test]
fn config_mesh_password_and_restart_time() {
    rejected(
        &config("default", "nodeMeshPassword: {}"),
        Kind::BgpConfiguration,
        "default",
        "spec.nodeMeshPassword",
    );
    rejected(
        &config("default", "nodeMeshMaxRestartTime: forever"),
        Kind::BgpConfiguration,
        "default",
        "spec.nodeMeshMaxRestartTime",
    );
}

#[test]
fn config_global_only_fields_on_node_config() {
    for (spec, field) in [
        ("asNumber: 65000", "spec.asNumber"),
        ("nodeToNodeMeshEnabled: false", "spec.nodeToNodeMeshEnabled"),
        ("nodeMeshPassword: {file: /k}", "spec.nodeMeshPassword"),
        ("nodeMeshMaxRestartTime: 10s", "spec.nodeMeshMaxRestartTime"),
    ] {
        let msg = rejected(
            &config("node.node-a", spec),
            Kind::BgpConfiguration,
            "node.node-a",
            field,
        );
        assert!(msg.contains("default"), "{msg}");
    }
}

// ---- IPPool ------------------------------------------------------------------------------

#[test]
fn pool_fields_from_ipam_validation() {
    rejected(&pool("cidr: 10.0.0.1/16"), Kind::IpPool, "p", "spec.cidr");
    rejected(
        &pool("cidr: 10.0.0.0/16\nblockSize: 40"),
        Kind::IpPool,
        "p",
        "spec.blockSize",
    );
    rejected(
        &pool("cidr: 10.0.0.0/16\nipipMode: sometimes"),
        Kind::IpPool,
        "p",
        "spec.ipipMode",
    );
    rejected(
        &pool("cidr: 10.0.0.0/16\nvxlanMode: sometimes"),
        Kind::IpPool,
        "p",
        "spec.vxlanMode",
    );
    rejected(
        &pool("cidr: 10.0.0.0/16\nnodeSelector: \"a ==\""),
        Kind::IpPool,
        "p",
        "spec.nodeSelector",
    );
}

#[test]
fn pool_unknown_field() {
    let msg = rejected(
        &pool("cidr: 10.0.0.0/16\nipipmode: Always"),
        Kind::IpPool,
        "p",
        "spec.ipipmode",
    );
    assert!(msg.contains("unknown field"), "{msg}");
}

// ---- BGPFilter ---------------------------------------------------------------------------

#[test]
fn filter_cidr_family_must_match_list() {
    rejected(
        &filter("exportV4:\n- {action: Accept, matchOperator: In, cidr: \"fd00::/64\"}"),
        Kind::BgpFilter,
        "f",
        "spec.exportV4[0].cidr",
    );
    rejected(
        &filter("importV6:\n- {action: Accept, matchOperator: In, cidr: 10.0.0.0/8}"),
        Kind::BgpFilter,
        "f",
        "spec.importV6[0].cidr",
    );
}

#[test]
fn filter_cidr_values() {
    rejected(
        &filter("importV4:\n- {action: Accept, matchOperator: In, cidr: 10.0.0.1/8}"),
        Kind::BgpFilter,
        "f",
        "spec.importV4[0].cidr",
    );
    rejected(
        &filter("exportV6:\n- {action: Accept}\n- {action: Accept, matchOperator: In, cidr: nope}"),
        Kind::BgpFilter,
        "f",
        "spec.exportV6[1].cidr",
    );
}

#[test]
fn filter_cidr_and_operator_go_together() {
    rejected(
        &filter("exportV4:\n- {action: Accept, matchOperator: In}"),
        Kind::BgpFilter,
        "f",
        "spec.exportV4[0].cidr",
    );
    rejected(
        &filter("exportV4:\n- {action: Accept, cidr: 10.0.0.0/8}"),
        Kind::BgpFilter,
        "f",
        "spec.exportV4[0].matchOperator",
    );
    rejected(
        &filter("exportV4:\n- {action: Accept, cidr: 10.0.0.0/8, matchOperator: Contains}"),
        Kind::BgpFilter,
        "f",
        "spec.exportV4[0].matchOperator",
    );
}

#[test]
fn filter_action() {
    rejected(
        &filter("importV4:\n- {action: Drop}"),
        Kind::BgpFilter,
        "f",
        "spec.importV4[0].action",
    );
    let msg = rejected(
        &filter("importV4:\n- {source: RemotePeers}"),
        Kind::BgpFilter,
        "f",
        "spec.importV4[0]",
    );
    assert!(msg.contains("missing field `action`"), "{msg}");
}

#[test]
fn filter_prefix_length() {
    rejected(
        &filter("importV4:\n- {action: Accept, prefixLength: {min: 25, max: 24}}"),
        Kind::BgpFilter,
        "f",
        "spec.importV4[0].prefixLength",
    );
    rejected(
        &filter("importV4:\n- {action: Accept, prefixLength: {max: 33}}"),
        Kind::BgpFilter,
        "f",
        "spec.importV4[0].prefixLength.max",
    );
    rejected(
        &filter("importV4:\n- {action: Accept, prefixLength: {min: -1}}"),
        Kind::BgpFilter,
        "f",
        "spec.importV4[0].prefixLength.min",
    );
    rejected(
        &filter("exportV6:\n- {action: Accept, prefixLength: {min: 64, max: 129}}"),
        Kind::BgpFilter,
        "f",
        "spec.exportV6[0].prefixLength.max",
    );
    parse_manifests(&filter(
        "exportV6:\n- {action: Accept, prefixLength: {min: 64, max: 128}}",
    ))
    .unwrap();
}

#[test]
fn filter_source() {
    rejected(
        &filter("exportV4:\n- {action: Reject, source: Everyone}"),
        Kind::BgpFilter,
        "f",
        "spec.exportV4[0].source",
    );
}

#[test]
fn filter_unknown_field() {
    rejected(
        &filter("exportV4:\n- {action: Reject, interface: eth0}"),
        Kind::BgpFilter,
        "f",
        "spec.exportV4[0].interface",
    );
    rejected(
        &filter("exportv4: []"),
        Kind::BgpFilter,
        "f",
        "spec.exportv4",
    );
}

#[test]
fn pool_newer_calico_fields_only_at_default() {
    // What `calicoctl get ippool -o yaml` prints on current Calico loads unchanged.
    let out = parse_manifests(&pool(
        "cidr: 10.0.0.0/16\nallowedUses: [Workload, Tunnel]\ndisableBGPExport: false\nassignmentMode: Automatic\nblockSize: 26\nipipMode: Never\nvxlanMode: Always\nnatOutgoing: true\nnodeSelector: all()",
    ))
    .unwrap();
    assert_eq!(out.len(), 1);
    rejected(
        &pool("cidr: 10.0.0.0/16\nallowedUses: [Workload]"),
        Kind::IpPool,
        "p",
        "spec.allowedUses",
    );
    rejected(
        &pool("cidr: 10.0.0.0/16\ndisableBGPExport: true"),
        Kind::IpPool,
        "p",
        "spec.disableBGPExport",
    );
    rejected(
        &pool("cidr: 10.0.0.0/16\nassignmentMode: Manual"),
        Kind::IpPool,
        "p",
        "spec.assignmentMode",
    );
}

#[test]
fn wrong_types_are_named_with_their_path() {
    rejected(
        &config("default", "nodeToNodeMeshEnabled: \"no\""),
        Kind::BgpConfiguration,
        "default",
        "spec.nodeToNodeMeshEnabled",
    );
    rejected(
        &config("default", "listenPort: \"179\""),
        Kind::BgpConfiguration,
        "default",
        "spec.listenPort",
    );
    rejected(
        &node("bgp: {ipv4Address: 10.0.0.11/24, asNumber: [1]}"),
        Kind::Node,
        "node-a",
        "spec.bgp.asNumber",
    );
    rejected(
        &filter("exportV4:\n- {action: Accept}\n- {action: Reject, prefixLength: {min: x}}"),
        Kind::BgpFilter,
        "f",
        "spec.exportV4[1].prefixLength.min",
    );
    rejected(
        &pool("cidr: 10.0.0.0/16\nnatOutgoing: 1"),
        Kind::IpPool,
        "p",
        "spec.natOutgoing",
    );
    let text = "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: node-a\n  labels: {rr: true}\nspec: {}\n";
    rejected(text, Kind::Node, "node-a", "metadata.labels.rr");
}

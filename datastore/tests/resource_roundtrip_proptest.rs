//! Property: any resource, whatever text its fields hold (including scalars YAML would read
//! as something else: `yes`, `null`, `0x10`, `1:2`, `~`), survives resource → YAML → resource
//! and resource → JSON → resource unchanged. Values are not validated here (the text is
//! arbitrary on purpose); the round trip must not depend on validity.
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

use std::collections::BTreeMap;

use datastore::resource::{
    to_json, to_yaml, ApiVersion, AsNumberText, BgpConfigurationSpec, BgpFilterRule, BgpFilterSpec,
    BgpPeerSpec, CidrEntry, MaxPrefixesSpec, NamedCommunity, NodeBgpSpec, NodeSpec, Object,
    ObjectMeta, PasswordSource, PrefixAdvertisement, PrefixLength, Resource, SecretKeyRef,
};
use ipam::IpPoolSpec;
use proptest::prelude::*;
use serde_json::Value;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("yes".to_string()),
        Just("null".to_string()),
        Just("~".to_string()),
        Just("0x10".to_string()),
        Just("1:2".to_string()),
        Just("64512".to_string()),
        Just("1e3".to_string()),
        Just("- a".to_string()),
        Just("".to_string()),
        "[ -~]{0,12}",
        "[a-z0-9.:/-]{1,20}",
    ]
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text())
}

fn asn() -> impl Strategy<Value = Option<AsNumberText>> {
    proptest::option::of(prop_oneof![
        any::<i64>().prop_map(AsNumberText::Number),
        text().prop_map(AsNumberText::Text),
    ])
}

fn meta() -> impl Strategy<Value = ObjectMeta> {
    (
        text(),
        proptest::collection::btree_map(text(), text(), 0..3),
        opt_text(),
    )
        .prop_map(|(name, labels, resource_version)| ObjectMeta {
            name,
            namespace: None,
            labels,
            annotations: BTreeMap::new(),
            resource_version,
            uid: None,
            creation_timestamp: None,
        })
}

fn password() -> impl Strategy<Value = Option<PasswordSource>> {
    proptest::option::of(
        (proptest::option::of((text(), text())), opt_text()).prop_map(|(r, file)| PasswordSource {
            secret_key_ref: r.map(|(name, key)| SecretKeyRef { name, key }),
            file,
        }),
    )
}

fn peer() -> impl Strategy<Value = Resource> {
    (
        (
            meta(),
            opt_text(),
            opt_text(),
            opt_text(),
            opt_text(),
            asn(),
        ),
        (
            password(),
            opt_text(),
            proptest::option::of(any::<bool>()),
            opt_text(),
            proptest::option::of(any::<i64>()),
            proptest::collection::vec(text(), 0..3),
        ),
        (
            opt_text(),
            proptest::option::of((any::<i64>(), proptest::option::of(any::<i64>()), opt_text())),
        ),
    )
        .prop_map(
            |(
                (metadata, node, node_selector, peer_ip, peer_selector, as_number),
                (password, source_address, keep, next_hop_mode, ttl, filters),
                (hold_time, max_prefixes),
            )| {
                Resource::BgpPeer(Object {
                    api_version: ApiVersion::RouterdV1,
                    metadata,
                    spec: BgpPeerSpec {
                        node,
                        node_selector,
                        peer_ip,
                        peer_selector,
                        as_number,
                        password,
                        source_address,
                        keep_original_next_hop: keep,
                        next_hop_mode,
                        max_restart_time: None,
                        keepalive_time: None,
                        num_allowed_local_as_numbers: ttl.map(|t| t / 2),
                        ttl_security: ttl,
                        ebgp_multihop: None,
                        hold_time,
                        failure_detection_mode: None,
                        bfd: None,
                        max_prefixes: max_prefixes.map(|(limit, warning_percent, restart_time)| {
                            MaxPrefixesSpec {
                                limit,
                                warning_percent,
                                restart_time,
                            }
                        }),
                        filters,
                    },
                })
            },
        )
}

fn node() -> impl Strategy<Value = Resource> {
    (
        meta(),
        proptest::option::of((opt_text(), opt_text(), asn(), opt_text(), opt_text())),
        opt_text(),
        opt_text(),
    )
        .prop_map(|(metadata, bgp, vx, mac)| {
            Resource::Node(Object {
                api_version: ApiVersion::CalicoV3,
                metadata,
                spec: NodeSpec {
                    bgp: bgp.map(|(v4, v6, as_number, rr, ipip)| NodeBgpSpec {
                        ipv4_address: v4,
                        ipv6_address: v6,
                        as_number,
                        route_reflector_cluster_id: rr,
                        ipv4_ipip_tunnel_addr: ipip,
                    }),
                    ipv4_vxlan_tunnel_addr: vx,
                    vxlan_tunnel_mac_addr: mac,
                    ..Default::default()
                },
            })
        })
}

fn config() -> impl Strategy<Value = Resource> {
    (
        meta(),
        asn(),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<i64>()),
        proptest::collection::vec((text(), text()), 0..3),
        proptest::collection::vec((text(), proptest::collection::vec(text(), 0..3)), 0..3),
        proptest::collection::vec(text(), 0..3),
        password(),
        opt_text(),
    )
        .prop_map(
            |(metadata, as_number, mesh, port, comms, advs, cidrs, pw, restart)| {
                Resource::BgpConfiguration(Object {
                    api_version: ApiVersion::CalicoV3,
                    metadata,
                    spec: BgpConfigurationSpec {
                        as_number,
                        node_to_node_mesh_enabled: mesh,
                        listen_port: port,
                        log_severity_screen: None,
                        communities: comms
                            .into_iter()
                            .map(|(name, value)| NamedCommunity { name, value })
                            .collect(),
                        prefix_advertisements: advs
                            .into_iter()
                            .map(|(cidr, communities)| PrefixAdvertisement { cidr, communities })
                            .collect(),
                        service_cluster_ips: cidrs
                            .iter()
                            .map(|c| CidrEntry { cidr: c.clone() })
                            .collect(),
                        service_external_ips: Vec::new(),
                        service_load_balancer_ips: cidrs
                            .into_iter()
                            .map(|cidr| CidrEntry { cidr })
                            .collect(),
                        node_mesh_password: pw,
                        node_mesh_max_restart_time: restart,
                    },
                })
            },
        )
}

fn rule() -> impl Strategy<Value = BgpFilterRule> {
    (
        opt_text(),
        opt_text(),
        proptest::option::of((
            proptest::option::of(any::<i64>()),
            proptest::option::of(any::<i64>()),
        )),
        opt_text(),
        text(),
    )
        .prop_map(|(cidr, op, pl, source, action)| BgpFilterRule {
            cidr,
            match_operator: op,
            prefix_length: pl.map(|(min, max)| PrefixLength { min, max }),
            source,
            action,
        })
}

fn filter() -> impl Strategy<Value = Resource> {
    (
        meta(),
        proptest::collection::vec(rule(), 0..3),
        proptest::collection::vec(rule(), 0..3),
    )
        .prop_map(|(metadata, a, b)| {
            Resource::BgpFilter(Object {
                api_version: ApiVersion::CalicoV3,
                metadata,
                spec: BgpFilterSpec {
                    export_v4: a.clone(),
                    import_v4: b.clone(),
                    export_v6: b,
                    import_v6: a,
                },
            })
        })
}

fn pool() -> impl Strategy<Value = Resource> {
    (
        meta(),
        text(),
        proptest::option::of(any::<i64>()),
        opt_text(),
        any::<bool>(),
        opt_text(),
    )
        .prop_map(|(metadata, cidr, block_size, mode, nat, sel)| {
            Resource::IpPool(Object {
                api_version: ApiVersion::RouterdV1,
                metadata,
                spec: IpPoolSpec {
                    cidr,
                    block_size,
                    ipip_mode: mode.clone(),
                    vxlan_mode: mode,
                    nat_outgoing: nat,
                    disabled: !nat,
                    node_selector: sel,
                },
            })
        })
}

fn any_resource() -> impl Strategy<Value = Resource> {
    prop_oneof![peer(), node(), config(), filter(), pool()]
}

/// Reads back without validation (values are arbitrary text).
fn read_yaml(text: &str) -> Vec<Resource> {
    serde_norway::Deserializer::from_str(text)
        .enumerate()
        .map(|(i, doc)| {
            let v: Value = serde::Deserialize::deserialize(doc).unwrap();
            Resource::from_value(v, i + 1).unwrap()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn yaml_round_trip(resources in proptest::collection::vec(any_resource(), 1..4)) {
        let yaml = to_yaml(&resources).unwrap();
        prop_assert_eq!(read_yaml(&yaml), resources);
    }

    #[test]
    fn json_round_trip(resources in proptest::collection::vec(any_resource(), 1..4)) {
        let json = to_json(&resources);
        let back: Vec<Resource> = match serde_json::from_str::<Value>(&json).unwrap() {
            Value::Array(items) => items
                .into_iter()
                .map(|v| Resource::from_value(v, 1).unwrap())
                .collect(),
            one => vec![Resource::from_value(one, 1).unwrap()],
        };
        prop_assert_eq!(back, resources);
    }
}

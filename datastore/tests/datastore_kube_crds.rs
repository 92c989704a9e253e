//! `examples/crds/routerd.io.yaml` and `examples/crds/crd.projectcalico.org.yaml` are exactly
//! what the code generates, so the manifests an operator applies cannot drift from the
//! resources the Kubernetes datastore uses; the Calico CRDs' schemas are structural and
//! take Calico's documentation examples.
//! `UPDATE_CRDS=1 cargo test -p datastore --test datastore_kube_crds` rewrites the files.
#![cfg(feature = "kubernetes")]
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

use std::path::PathBuf;

use datastore::resource::{BgpConfigurationSpec, BgpFilterSpec, BgpPeerSpec};
use datastore::{
    calico_crd_yaml, calico_crds, crd_yaml, crds, KubeConfigSource, KubeDatastore, KubeOptions,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use lab::kube_standin::{ApiServerStandin, StandinOptions};
use serde_json::{json, Value};

fn example_path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/crds")
        .join(file)
}

/// `file` holds `generated` (rewritten first with `UPDATE_CRDS=1`), and its documents are
/// the CRDs `expected`, in order.
fn check_committed(file: &str, generated: &str, expected: &[CustomResourceDefinition]) {
    let path = example_path(file);
    if std::env::var_os("UPDATE_CRDS").is_some() {
        std::fs::write(&path, generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale: run UPDATE_CRDS=1 cargo test -p datastore --test datastore_kube_crds",
        path.display()
    );
    // Every document parses back as the CRD it came from.
    let documents: Vec<serde_norway::Value> = serde_norway::Deserializer::from_str(&committed)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert_eq!(documents.len(), expected.len(), "{file}");
    for (document, crd) in documents.iter().zip(expected) {
        assert_eq!(
            document["metadata"]["name"].as_str(),
            crd.metadata.name.as_deref()
        );
        assert_eq!(document["spec"]["scope"].as_str(), Some("Cluster"));
        let parsed: CustomResourceDefinition = serde_norway::from_value(document.clone()).unwrap();
        assert_eq!(&parsed, crd, "{file}");
    }
}

#[test]
fn committed_crd_manifests_are_current() {
    check_committed("routerd.io.yaml", &crd_yaml().unwrap(), &crds());
    check_committed(
        "crd.projectcalico.org.yaml",
        &calico_crd_yaml().unwrap(),
        &calico_crds(),
    );
}

/// The generated CRDs are accepted by the stand-in and make their resources served.
#[test]
fn installed_crds_serve_every_kind() {
    let standin = ApiServerStandin::start(StandinOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    standin.write_kubeconfig(&kubeconfig).unwrap();
    let ds = KubeDatastore::connect(
        KubeConfigSource::Kubeconfig(kubeconfig),
        KubeOptions::default(),
    )
    .unwrap();
    ds.install_crds().unwrap();
    // Installing again replaces them (idempotent set-up).
    ds.install_crds().unwrap();
    use datastore::Datastore;
    // A record of each kind in the shape its resource holds (Calico's kinds are kept in
    // Calico's shapes; a Node is the Kubernetes Node, created as the kubelet would).
    standin
        .create(
            "/api/v1/nodes",
            serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "x"}}),
        )
        .unwrap();
    for kind in datastore::WATCHED_KINDS {
        let value = match kind {
            "IPAMBlock" => serde_json::json!({"cidr": "10.0.0.0/30", "allocations": [null],
                "unallocated": [0], "attributes": []}),
            "BlockAffinity" => {
                serde_json::json!({"node": "x", "cidr": "10.0.0.0/30", "state": "confirmed"})
            }
            "IPAMHandle" => serde_json::json!({"handleID": "x", "block": {}}),
            _ => serde_json::json!({"apiVersion": "projectcalico.org/v3", "kind": kind,
                "metadata": {"name": "x"}, "spec": {}}),
        };
        if kind != "Node" {
            ds.create(kind, "x", value).unwrap();
        }
        assert_eq!(ds.list(kind).unwrap().records.len(), 1, "{kind}");
    }
}

/// The example RBAC grants every verb the datastore uses on every resource it uses.
#[test]
fn example_rbac_covers_every_resource() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/crds/routerd-rbac.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let role: serde_norway::Value = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .next()
        .unwrap();
    // The verbs of (group, resource), over every rule.
    let verbs = |group: &str, resource: &str| -> Vec<String> {
        let strings = |v: &serde_norway::Value| -> Vec<String> {
            v.as_sequence()
                .map(|s| {
                    s.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        role["rules"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter(|rule| {
                strings(&rule["apiGroups"]).contains(&group.to_string())
                    && strings(&rule["resources"]).contains(&resource.to_string())
            })
            .flat_map(|rule| strings(&rule["verbs"]))
            .collect()
    };
    for kind in datastore::WATCHED_KINDS {
        let resource = datastore::kind_resource(kind).unwrap();
        let granted = verbs(&resource.group, &resource.plural);
        // What the datastore does with each kind: every kind is read; IPAM records and
        // endpoints are written; configuration is only deleted (a gone node's own
        // peers and settings); a Node is written through its status.
        let needed: &[&str] = match kind {
            "IPAMBlock" | "BlockAffinity" | "IPAMHandle" | "WorkloadEndpoint" => {
                &["get", "list", "watch", "create", "update", "delete"]
            }
            "Node" => &["get", "list", "watch"],
            _ => &["get", "list", "watch", "delete"],
        };
        for verb in needed {
            assert!(
                granted.contains(&verb.to_string()),
                "{verb} on {}.{} missing",
                resource.plural,
                resource.group
            );
        }
    }
    assert!(verbs("", "nodes/status").contains(&"update".to_string()));
    assert!(verbs("crd.projectcalico.org", "ipamconfigs").contains(&"get".to_string()));
    // `KubeDatastore::watch_services`: kube_runtime's watcher lists and watches.
    // `KubeDatastore::watch_pod_endpoints` too.
    for (group, resource) in [
        ("", "services"),
        ("discovery.k8s.io", "endpointslices"),
        ("", "pods"),
    ] {
        for verb in ["list", "watch"] {
            assert!(
                verbs(group, resource).contains(&verb.to_string()),
                "{verb} on {resource} missing"
            );
        }
    }
}

/// The `openAPIV3Schema` of the Calico CRD of `kind`, as JSON.
fn calico_schema(kind: &str) -> Value {
    let crd = calico_crds()
        .into_iter()
        .find(|crd| crd.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"));
    serde_json::to_value(&crd.spec.versions[0].schema).unwrap()["openAPIV3Schema"].clone()
}

/// Kubernetes' structural-schema rules (the ones a generator can break), at `node` and
/// below: every node has a `type` (or is int-or-string / preserve-unknown-fields), no
/// references or definitions, no `anyOf`/`oneOf`/`allOf`/`not`, no list of types, no
/// `additionalProperties: false` nor `additionalProperties` beside `properties`, `required`
/// names only properties, arrays say their items.
fn structural_violations(node: &Value, path: &str, out: &mut Vec<String>) {
    let Some(object) = node.as_object() else {
        out.push(format!("{path}: not a schema object"));
        return;
    };
    let flag = |key: &str| object.get(key) == Some(&Value::Bool(true));
    let int_or_string = flag("x-kubernetes-int-or-string");
    let preserve = flag("x-kubernetes-preserve-unknown-fields");
    match object.get("type") {
        Some(Value::String(t)) => {
            if int_or_string {
                out.push(format!("{path}: int-or-string with type {t}"));
            }
            let known = ["object", "array", "string", "integer", "number", "boolean"];
            if !known.contains(&t.as_str()) {
                out.push(format!("{path}: type {t}"));
            }
        }
        Some(other) => out.push(format!("{path}: type {other}")),
        None if int_or_string || preserve => {}
        None => out.push(format!("{path}: no type")),
    }
    for key in [
        "$ref",
        "$schema",
        "$defs",
        "definitions",
        "anyOf",
        "oneOf",
        "allOf",
        "not",
        "const",
        "title",
    ] {
        if object.contains_key(key) {
            out.push(format!("{path}: has {key}"));
        }
    }
    if let Some(format) = object.get("format").and_then(Value::as_str) {
        let known = [
            "int32",
            "int64",
            "date-time",
            "date",
            "byte",
            "float",
            "double",
        ];
        if !known.contains(&format) {
            out.push(format!("{path}: format {format}"));
        }
    }
    if let Some(nullable) = object.get("nullable") {
        if !nullable.is_boolean() {
            out.push(format!("{path}: nullable {nullable}"));
        }
    }
    let properties = object.get("properties").and_then(Value::as_object);
    match object.get("additionalProperties") {
        Some(Value::Bool(false)) => out.push(format!("{path}: additionalProperties: false")),
        Some(_) if properties.is_some() => {
            out.push(format!("{path}: additionalProperties beside properties"));
        }
        Some(Value::Object(_)) => {
            structural_violations(&object["additionalProperties"], &format!("{path}{{}}"), out);
        }
        Some(other) => out.push(format!("{path}: additionalProperties {other}")),
        None => {}
    }
    if let Some(properties) = properties {
        for (name, child) in properties {
            structural_violations(child, &format!("{path}.{name}"), out);
        }
    }
    for required in object
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = required.as_str().unwrap_or_default();
        if !properties.is_some_and(|p| p.contains_key(name)) {
            out.push(format!("{path}: required {required} is no property"));
        }
    }
    match object.get("items") {
        Some(items) => structural_violations(items, &format!("{path}[]"), out),
        None if object.get("type") == Some(&json!("array")) => {
            out.push(format!("{path}: array without items"));
        }
        None => {}
    }
}

#[test]
fn calico_schemas_are_structural() {
    for crd in calico_crds() {
        let kind = crd.spec.names.kind.clone();
        let schema = calico_schema(&kind);
        let mut violations = Vec::new();
        structural_violations(&schema, &kind, &mut violations);
        assert!(violations.is_empty(), "{violations:#?}");
        // metadata is the API server's; spec is a real schema, not an opaque value.
        assert_eq!(schema["properties"]["metadata"], json!({"type": "object"}));
        let spec = &schema["properties"]["spec"];
        assert_eq!(spec["type"], "object", "{kind}");
        assert!(
            spec.get("x-kubernetes-preserve-unknown-fields").is_none(),
            "{kind}: opaque spec"
        );
        assert!(
            spec["properties"].as_object().is_some_and(|p| p.len() >= 3),
            "{kind}: {spec}"
        );
        assert!(spec["description"].is_string(), "{kind}: no description");
    }
}

/// Checks `value` against a structural `schema` on what Kubernetes checks by type: types,
/// `required`, `nullable`, `properties` (an unknown field is an error here, where the API
/// server would prune it, so that an example cannot lose a field unnoticed), `items`,
/// `additionalProperties` maps, integer bounds, int-or-string.
fn check(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    let fail = |why: &str| Err(format!("{path}: {why}: {value}"));
    if value.is_null() {
        return if schema["nullable"] == true {
            Ok(())
        } else {
            fail("null, not nullable")
        };
    }
    if schema["x-kubernetes-int-or-string"] == true {
        return if value.is_i64() || value.is_u64() || value.is_string() {
            Ok(())
        } else {
            fail("neither integer nor string")
        };
    }
    let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
    match schema["type"].as_str() {
        None if preserve => Ok(()),
        None => fail("schema without type"),
        Some("object") => {
            let Some(fields) = value.as_object() else {
                return fail("not an object");
            };
            for required in schema["required"].as_array().into_iter().flatten() {
                if !fields.contains_key(required.as_str().unwrap_or_default()) {
                    return fail(&format!("missing {required}"));
                }
            }
            for (name, field) in fields {
                let path = format!("{path}.{name}");
                if let Some(property) = schema["properties"].get(name) {
                    check(property, field, &path)?;
                } else if schema["additionalProperties"].is_object() {
                    check(&schema["additionalProperties"], field, &path)?;
                } else if !preserve {
                    return Err(format!("{path}: unknown field"));
                }
            }
            Ok(())
        }
        Some("array") => {
            let Some(items) = value.as_array() else {
                return fail("not an array");
            };
            for (i, item) in items.iter().enumerate() {
                check(&schema["items"], item, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        Some("string") if value.is_string() => Ok(()),
        Some("boolean") if value.is_boolean() => Ok(()),
        Some("number") if value.is_number() => Ok(()),
        Some("integer") if value.is_i64() || value.is_u64() => {
            let n = value.as_f64().unwrap_or_default();
            if schema["minimum"].as_f64().is_some_and(|min| n < min)
                || schema["maximum"].as_f64().is_some_and(|max| n > max)
            {
                return fail("out of bounds");
            }
            Ok(())
        }
        Some(t) => fail(&format!("not {t}")),
    }
}

/// `spec` checked against the Calico CRD schema of `kind`.
fn check_spec(kind: &str, spec: &Value) -> Result<(), String> {
    check(&calico_schema(kind)["properties"]["spec"], spec, kind)
}

/// Calico's documentation examples, as `(kind, spec)`.
fn calico_examples() -> Vec<(&'static str, Value)> {
    vec![
        // Calico's BGPConfiguration example also sets `bindMode: NodeIP`, which routerd's
        // BgpConfigurationSpec does not have (it always binds the node's addresses).
        (
            "BGPConfiguration",
            json!({
                "logSeverityScreen": "Info",
                "nodeToNodeMeshEnabled": false,
                "asNumber": 63400,
                "serviceClusterIPs": [{"cidr": "10.96.0.0/12"}],
                "serviceExternalIPs": [{"cidr": "104.244.42.129/32"}],
                "listenPort": 178,
                "communities": [{"name": "bgp-large-community", "value": "63400:300:100"}],
                "prefixAdvertisements": [{
                    "cidr": "172.218.4.0/26",
                    "communities": ["bgp-large-community", "63400:120"]
                }]
            }),
        ),
        (
            "BGPPeer",
            json!({
                "peerIP": "192.168.1.1",
                "asNumber": 63400,
                "nodeSelector": "rack == 'rack-1'",
                "keepOriginalNextHop": true
            }),
        ),
        (
            "BGPPeer",
            json!({"peerSelector": "has(route-reflector)", "nodeSelector": "all()"}),
        ),
        (
            "IPPool",
            json!({
                "cidr": "10.1.0.0/16",
                "ipipMode": "CrossSubnet",
                "natOutgoing": true,
                "disabled": false,
                "nodeSelector": "all()",
                "blockSize": 26,
                "vxlanMode": "Never"
            }),
        ),
        (
            "BGPFilter",
            json!({
                "exportV4": [{"action": "Accept", "matchOperator": "In", "cidr": "77.0.0.0/16"}],
                "importV4": [{"action": "Reject", "matchOperator": "NotIn", "cidr": "44.0.0.0/16"}]
            }),
        ),
        (
            "IPAMBlock",
            json!({
                "cidr": "10.0.0.0/26",
                "affinity": "host:node-1",
                "allocations": [0, null, 1],
                "unallocated": [3, 4],
                "attributes": [{
                    "handle_id": "k8s-pod-network.abc",
                    "secondary": {
                        "namespace": "default",
                        "node": "node-1",
                        "pod": "p",
                        "timestamp": "2025-01-01 00:00:00 +0000 UTC"
                    }
                }],
                "strictAffinity": false,
                "deleted": false,
                "sequenceNumber": 0,
                "sequenceNumberForAllocation": {"0": 1}
            }),
        ),
        (
            "BlockAffinity",
            json!({
                "state": "confirmed",
                "node": "node-1",
                "cidr": "10.0.0.0/26",
                "deleted": "false",
                "type": "host"
            }),
        ),
        (
            "IPAMHandle",
            json!({
                "handleID": "k8s-pod-network.abc",
                "block": {"10.0.0.0/26": 1},
                "deleted": false
            }),
        ),
        (
            "IPAMConfig",
            json!({"strictAffinity": false, "autoAllocateBlocks": true, "maxBlocksPerHost": 0}),
        ),
    ]
}

/// The spec types routerd reads take `spec` (IPAM kinds have none here: their schemas are
/// Calico's shapes, read elsewhere).
fn serde_accepts(kind: &str, spec: &Value) -> Option<bool> {
    let spec = spec.clone();
    Some(match kind {
        "BGPConfiguration" => serde_json::from_value::<BgpConfigurationSpec>(spec).is_ok(),
        "BGPPeer" => serde_json::from_value::<BgpPeerSpec>(spec).is_ok(),
        "BGPFilter" => serde_json::from_value::<BgpFilterSpec>(spec).is_ok(),
        "IPPool" => serde_json::from_value::<ipam::IpPoolSpec>(spec).is_ok(),
        _ => return None,
    })
}

#[test]
fn calico_examples_pass_the_schemas() {
    for (kind, spec) in calico_examples() {
        check_spec(kind, &spec).unwrap();
        assert_ne!(serde_accepts(kind, &spec), Some(false), "{kind}: {spec}");
    }
}

/// The examples in `examples/manifests` (routerd's own) pass too.
#[test]
fn example_manifests_pass_the_schemas() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/manifests");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for document in serde_norway::Deserializer::from_str(&text) {
            let document: Value = serde::Deserialize::deserialize(document).unwrap();
            let kind = document["kind"].as_str().unwrap();
            check_spec(kind, &document["spec"]).unwrap();
            checked += 1;
        }
    }
    assert!(checked >= 5, "{checked} manifests");
}

/// The checker (and so the schema) refuses what our serde refuses.
#[test]
fn wrong_types_fail_the_schemas() {
    let mutations: [(&str, Value); 12] = [
        ("BGPPeer", json!({"peerIP": "10.0.0.1", "asNumber": [1]})),
        ("BGPPeer", json!({"peerIP": "10.0.0.1", "asNumber": true})),
        ("BGPPeer", json!({"keepOriginalNextHop": "yes"})),
        (
            "BGPPeer",
            json!({"password": {"secretKeyRef": {"name": "s"}}}),
        ),
        ("BGPConfiguration", json!({"asNumber": {"n": 1}})),
        (
            "BGPConfiguration",
            json!({"serviceClusterIPs": ["10.96.0.0/12"]}),
        ),
        ("BGPConfiguration", json!({"listenPort": "179"})),
        ("IPPool", json!({"blockSize": 26})),
        (
            "IPPool",
            json!({"cidr": "10.1.0.0/16", "natOutgoing": "true"}),
        ),
        ("BGPFilter", json!({"exportV4": [{"cidr": "10.0.0.0/8"}]})),
        (
            "IPAMBlock",
            json!({
                "cidr": "10.0.0.0/26", "allocations": ["x"], "unallocated": [],
                "attributes": [], "strictAffinity": false
            }),
        ),
        (
            "BlockAffinity",
            json!({"state": "confirmed", "node": "n", "cidr": "10.0.0.0/26", "deleted": false}),
        ),
    ];
    for (kind, spec) in mutations {
        assert!(check_spec(kind, &spec).is_err(), "{kind} took {spec}");
        assert_ne!(serde_accepts(kind, &spec), Some(true), "{kind}: {spec}");
    }
    // A null where the type has no `Option`: refused by the schema and by serde.
    let spec = json!({"peerIP": "10.0.0.1", "filters": null});
    assert!(check_spec("BGPPeer", &spec).is_err());
    assert_eq!(serde_accepts("BGPPeer", &spec), Some(false));
    // AS numbers as text (asdot) are what the int-or-string is for.
    let spec = json!({"peerIP": "10.0.0.1", "asNumber": "1.10"});
    check_spec("BGPPeer", &spec).unwrap();
    assert_eq!(serde_accepts("BGPPeer", &spec), Some(true));
}

/// What routerd writes passes: every field of every spec type set (a struct literal, so a
/// new field fails to compile here until it is covered).
#[test]
fn written_specs_pass_the_schemas() {
    use datastore::resource::{
        AsNumberText, BfdSpec, BgpFilterRule, CidrEntry, MaxPrefixesSpec, NamedCommunity,
        PasswordSource, PrefixAdvertisement, PrefixLength, SecretKeyRef,
    };
    let secret = PasswordSource {
        secret_key_ref: Some(SecretKeyRef {
            name: "bgp-secrets".into(),
            key: "mesh".into(),
        }),
        file: Some("/etc/routerd/pw".into()),
    };
    let cidrs = vec![CidrEntry {
        cidr: "10.96.0.0/12".into(),
    }];
    let configuration = BgpConfigurationSpec {
        as_number: Some(AsNumberText::Text("1.10".into())),
        node_to_node_mesh_enabled: Some(true),
        listen_port: Some(179),
        log_severity_screen: Some("Info".into()),
        communities: vec![NamedCommunity {
            name: "c".into(),
            value: "65000:1".into(),
        }],
        prefix_advertisements: vec![PrefixAdvertisement {
            cidr: "10.0.0.0/8".into(),
            communities: vec!["c".into()],
        }],
        service_cluster_ips: cidrs.clone(),
        service_external_ips: cidrs.clone(),
        service_load_balancer_ips: cidrs,
        node_mesh_password: Some(secret.clone()),
        node_mesh_max_restart_time: Some("120s".into()),
    };
    let peer = BgpPeerSpec {
        node: Some("node-1".into()),
        node_selector: Some("all()".into()),
        peer_ip: Some("10.0.0.1:1179".into()),
        peer_selector: Some("has(rr)".into()),
        as_number: Some(AsNumberText::Number(65000)),
        password: Some(secret),
        source_address: Some("UseNodeIP".into()),
        keep_original_next_hop: Some(true),
        next_hop_mode: Some("Keep".into()),
        max_restart_time: Some("120s".into()),
        keepalive_time: Some("10s".into()),
        hold_time: Some("30s".into()),
        max_prefixes: Some(MaxPrefixesSpec {
            limit: 1000,
            warning_percent: Some(80),
            restart_time: Some("5m".into()),
        }),
        failure_detection_mode: Some("BFDIfDirectlyConnected".into()),
        bfd: Some(BfdSpec {
            minimum_recv_interval: Some("300ms".into()),
            minimum_send_interval: Some("300ms".into()),
            multiplier: Some(3),
        }),
        num_allowed_local_as_numbers: Some(1),
        ttl_security: Some(1),
        ebgp_multihop: Some(2),
        filters: vec!["f".into()],
    };
    let rule = BgpFilterRule {
        cidr: Some("10.0.0.0/8".into()),
        match_operator: Some("In".into()),
        prefix_length: Some(PrefixLength {
            min: Some(16),
            max: Some(24),
        }),
        source: Some("RemotePeers".into()),
        action: "Accept".into(),
    };
    let filter = BgpFilterSpec {
        export_v4: vec![rule.clone()],
        import_v4: vec![rule.clone()],
        export_v6: vec![rule.clone()],
        import_v6: vec![rule],
    };
    let pool = ipam::IpPoolSpec {
        cidr: "10.244.0.0/16".into(),
        block_size: Some(26),
        ipip_mode: Some("Never".into()),
        vxlan_mode: Some("Always".into()),
        nat_outgoing: true,
        disabled: false,
        node_selector: Some("all()".into()),
    };
    let written = [
        (
            "BGPConfiguration",
            serde_json::to_value(configuration).unwrap(),
        ),
        (
            "BGPConfiguration",
            serde_json::to_value(BgpConfigurationSpec::default()).unwrap(),
        ),
        ("BGPPeer", serde_json::to_value(peer).unwrap()),
        (
            "BGPPeer",
            serde_json::to_value(BgpPeerSpec::default()).unwrap(),
        ),
        ("BGPFilter", serde_json::to_value(filter).unwrap()),
        (
            "BGPFilter",
            serde_json::to_value(BgpFilterSpec::default()).unwrap(),
        ),
        ("IPPool", serde_json::to_value(pool).unwrap()),
    ];
    for (kind, spec) in written {
        check_spec(kind, &spec).unwrap();
    }
    // Calico's newer IPPool fields at their defaults, as `calicoctl get -o yaml` prints them.
    let spec = json!({
        "cidr": "10.244.0.0/16",
        "allowedUses": ["Workload", "Tunnel"],
        "disableBGPExport": false,
        "assignmentMode": "Automatic"
    });
    check_spec("IPPool", &spec).unwrap();
}

/// What the allocator writes passes the IPAM kinds' schemas (Calico's shapes), with the
/// bookkeeping fields the Kubernetes backend adds for Calico (`strictAffinity`, `deleted`,
/// an affinity's `type`).
#[test]
fn allocator_records_pass_the_ipam_schemas() {
    use std::collections::BTreeMap;

    let with = |record: Value, extra: Value| {
        let mut record = record;
        for (k, v) in extra.as_object().unwrap() {
            record[k] = v.clone();
        }
        record
    };
    let block = ipam::AllocationBlock {
        cidr: "10.0.0.0/30".parse().unwrap(),
        affinity: Some("host:node-1".into()),
        allocations: vec![Some(0), None, Some(0), None],
        unallocated: vec![1, 3],
        attributes: vec![ipam::AllocationAttribute {
            handle_id: Some("k8s-pod-network.abc".into()),
            secondary: BTreeMap::from([("node".to_string(), "node-1".to_string())]),
        }],
    };
    let block = serde_json::to_value(block).unwrap();
    check_spec(
        "IPAMBlock",
        &with(block, json!({"strictAffinity": false, "deleted": false})),
    )
    .unwrap();
    let affinity = ipam::BlockAffinity {
        node: "node-1".into(),
        cidr: "10.0.0.0/30".parse().unwrap(),
        state: ipam::AffinityState::PendingDeletion,
    };
    let affinity = serde_json::to_value(affinity).unwrap();
    check_spec(
        "BlockAffinity",
        &with(affinity, json!({"deleted": "false", "type": "host"})),
    )
    .unwrap();
    let handle = ipam::IpamHandle {
        handle_id: "k8s-pod-network.abc".into(),
        block: BTreeMap::from([("10.0.0.0/30".to_string(), 2)]),
    };
    let handle = serde_json::to_value(handle).unwrap();
    check_spec("IPAMHandle", &with(handle, json!({"deleted": false}))).unwrap();
    let config = serde_json::to_value(datastore::ipam_store::IpamConfig::default()).unwrap();
    check_spec("IPAMConfig", &config).unwrap();
}

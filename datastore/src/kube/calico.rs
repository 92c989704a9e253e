//! How each datastore kind is kept in a Kubernetes API server: in the shapes Calico's own
//! Kubernetes datastore driver (KDD, libcalico-go `lib/backend/k8s`) writes, so a cluster's
//! existing Calico objects are read as they are and what routerd writes is what Calico
//! would have written.
//!
//! | kind | kept as | record value ⇄ object |
//! |---|---|---|
//! | `BGPConfiguration`, `BGPPeer`, `IPPool`, `BGPFilter` | `crd.projectcalico.org/v1` | [`Backing::CalicoResource`]: spec verbatim; labels and annotations in the `projectcalico.org/metadata` annotation |
//! | `IPAMBlock`, `BlockAffinity`, `IPAMHandle`, `IPAMConfig` | `crd.projectcalico.org/v1` | [`Backing::CalicoIpam`]: the allocator's record as spec, with Calico's bookkeeping fields |
//! | `Node` | core/v1 `Node` | [`Backing::KubernetesNode`]: labels, and `projectcalico.org/*` annotations |
//! | anything else (`WorkloadEndpoint`) | `routerd.io/v1` | [`Backing::RouterdRecord`]: the value verbatim under `spec.value` |
//!
//! The rules, each from Calico's code:
//!
//! - **Resources** (`resources.go`, `ConvertCalicoResourceToK8sResource`): the v1 object
//!   carries only the name, the labels and annotations whose key contains
//!   `projectcalico.org/`, and one annotation `projectcalico.org/metadata` with the v3
//!   metadata as JSON (`{"creationTimestamp":null,"labels":…,"annotations":…}`). Reading
//!   merges the v1 object's own labels and annotations with the stored ones (the stored win),
//!   so objects written by older Calico releases, or applied with `kubectl` straight to the
//!   v1 group, read too. The `apiVersion` read back is always `projectcalico.org/v3`.
//! - **IPAM** (`ipam_block.go`, `ipam_affinity_v1.go`, `ipam_handle.go`): a block also
//!   carries `strictAffinity` and `deleted`, an affinity `deleted` as the *string*
//!   `"true"`/`"false"` and `type: host`, a handle `deleted`. Calico deletes these in two
//!   steps (write `deleted: true`, then delete), so an object marked deleted reads as a
//!   [`Decoded::Tombstone`]: absent. A handle's object name is its id lower-cased.
//!   Calico's fields the allocator has no use for (`sequenceNumber`, `affinityClaimTime`,
//!   an attribute's `releasedAt`/`alternateOwnerAttrs`) are not kept when routerd rewrites
//!   a block: after a switch back to Calico its IP-reuse sequence numbers start from zero.
//! - **Nodes** (`node.go`, `K8sNodeToCalico`/`mergeCalicoNodeIntoK8sNode`): Calico has no
//!   Node CRD under KDD. A Node is the Kubernetes Node: its labels are the node's labels
//!   (plus Calico-only labels kept in the `projectcalico.org/labels` annotation), its BGP
//!   addresses, AS, route reflector cluster id and tunnel addresses are annotations
//!   (`projectcalico.org/IPv4Address`, …), `spec.addresses` lists the BGP addresses and the
//!   node's `InternalIP`/`ExternalIP`, and `spec.orchRefs` names it. Writing merges into the
//!   current Kubernetes Node and changes only those annotations. So `kubectl label node`
//!   changes the labels selectors see, and a deleted Kubernetes Node is a deleted Node.
//!   Creating a Node whose Kubernetes Node does not exist, and deleting one, are refused
//!   as Calico refuses them: the kubelet owns Nodes.

use std::collections::BTreeMap;

use ::kube::core::ApiResource;
use serde_json::{json, Map, Value};

use super::error::KubeError;

/// API group of Calico's custom resources under the Kubernetes datastore.
pub const CALICO_CRD_GROUP: &str = "crd.projectcalico.org";
/// Their one version.
pub const CALICO_CRD_VERSION: &str = "v1";

/// The annotation holding a Calico resource's v3 metadata.
const METADATA_ANNOTATION: &str = "projectcalico.org/metadata";
/// Calico-only labels of a Node (labels the Kubernetes Node does not have).
const NODE_LABELS_ANNOTATION: &str = "projectcalico.org/labels";
/// Calico annotations of a Node.
const NODE_ANNOTATIONS_ANNOTATION: &str = "projectcalico.org/annotations";

/// A Node's annotations and the `spec` field each one holds (`bgp.` for `spec.bgp`),
/// `node.go`'s constants.
const NODE_ANNOTATIONS: [(&str, &str); 9] = [
    ("projectcalico.org/IPv4Address", "bgp.ipv4Address"),
    ("projectcalico.org/IPv6Address", "bgp.ipv6Address"),
    ("projectcalico.org/ASNumber", "bgp.asNumber"),
    (
        "projectcalico.org/RouteReflectorClusterID",
        "bgp.routeReflectorClusterID",
    ),
    (
        "projectcalico.org/IPv4IPIPTunnelAddr",
        "bgp.ipv4IPIPTunnelAddr",
    ),
    (
        "projectcalico.org/IPv4VXLANTunnelAddr",
        "ipv4VXLANTunnelAddr",
    ),
    ("projectcalico.org/VXLANTunnelMACAddr", "vxlanTunnelMACAddr"),
    (
        "projectcalico.org/IPv6VXLANTunnelAddr",
        "ipv6VXLANTunnelAddr",
    ),
    (
        "projectcalico.org/VXLANTunnelMACAddrV6",
        "vxlanTunnelMACAddrV6",
    ),
];

/// The IPAM record kinds Calico keeps as custom resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpamKind {
    Block,
    Affinity,
    Handle,
    Config,
}

/// Where a kind's records live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// A Calico v3 resource as a `crd.projectcalico.org/v1` object.
    CalicoResource,
    /// An IPAM record as a `crd.projectcalico.org/v1` object.
    CalicoIpam(IpamKind),
    /// The core/v1 Node of the same name.
    KubernetesNode,
    /// A `routerd.io/v1` object holding the value verbatim under `spec.value`.
    RouterdRecord,
}

impl Backing {
    /// The backing of a datastore kind.
    pub fn of(kind: &str) -> Self {
        match kind {
            "BGPConfiguration" | "BGPPeer" | "IPPool" | "BGPFilter" => Backing::CalicoResource,
            "IPAMBlock" => Backing::CalicoIpam(IpamKind::Block),
            "BlockAffinity" => Backing::CalicoIpam(IpamKind::Affinity),
            "IPAMHandle" => Backing::CalicoIpam(IpamKind::Handle),
            "IPAMConfig" => Backing::CalicoIpam(IpamKind::Config),
            "Node" => Backing::KubernetesNode,
            _ => Backing::RouterdRecord,
        }
    }

    /// The resource type holding records of `kind` (plural as in [`super::kinds::plural`]).
    pub fn resource(self, kind: &str, plural: String) -> ApiResource {
        let (group, version) = match self {
            Backing::CalicoResource | Backing::CalicoIpam(_) => {
                (CALICO_CRD_GROUP, CALICO_CRD_VERSION)
            }
            Backing::KubernetesNode => {
                return ApiResource::erase::<k8s_openapi::api::core::v1::Node>(&());
            }
            Backing::RouterdRecord => (super::kinds::CRD_GROUP, super::kinds::CRD_VERSION),
        };
        ApiResource {
            group: group.to_string(),
            version: version.to_string(),
            api_version: format!("{group}/{version}"),
            kind: kind.to_string(),
            plural,
        }
    }

    /// The object name of record `name`: Calico lower-cases handle ids.
    pub fn object_name(self, name: &str) -> String {
        match self {
            Backing::CalicoIpam(IpamKind::Handle) => name.to_ascii_lowercase(),
            _ => name.to_string(),
        }
    }
}

/// What an object holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A record with this value.
    Live(Value),
    /// An IPAM object Calico marked deleted (the first of its two deletion steps): no
    /// record. The value is what it held.
    Tombstone(Value),
}

fn malformed(kind: &str, name: &str, reason: impl Into<String>) -> KubeError {
    KubeError::Malformed {
        resource: kind.to_string(),
        name: name.to_string(),
        reason: reason.into(),
    }
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn json_string_map(text: Option<&str>) -> Option<BTreeMap<String, String>> {
    serde_json::from_str(text?).ok()
}

fn is_ours(key: &str) -> bool {
    key.contains("projectcalico.org/") || key.contains("operator.tigera.io/")
}

fn map_value(map: &BTreeMap<String, String>) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect(),
    )
}

/// The object body (everything but `metadata.resourceVersion`, which the caller sets) that
/// stores record `name` of `kind` with `value`. `current` is the stored object, needed for a
/// [`Backing::KubernetesNode`] (the write merges into it), ignored otherwise.
pub fn encode(
    kind: &str,
    name: &str,
    value: &Value,
    current: Option<&Value>,
) -> Result<Value, KubeError> {
    let backing = Backing::of(kind);
    match backing {
        Backing::CalicoResource => encode_resource(kind, name, value),
        Backing::CalicoIpam(ipam) => encode_ipam(kind, name, ipam, value),
        Backing::KubernetesNode => {
            let current =
                current.ok_or_else(|| malformed(kind, name, "no Kubernetes Node to merge into"))?;
            encode_node(name, value, current)
        }
        Backing::RouterdRecord => Ok(json!({
            "apiVersion": format!("{}/{}", super::kinds::CRD_GROUP, super::kinds::CRD_VERSION),
            "kind": kind,
            "metadata": {"name": name},
            "spec": {"value": value},
        })),
    }
}

/// The record value an object of `kind` holds.
pub fn decode(kind: &str, object: &Value) -> Result<Decoded, KubeError> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match Backing::of(kind) {
        Backing::CalicoResource => decode_resource(kind, name, object).map(Decoded::Live),
        Backing::CalicoIpam(ipam) => decode_ipam(kind, name, ipam, object),
        Backing::KubernetesNode => Ok(Decoded::Live(decode_node(name, object))),
        Backing::RouterdRecord => match object.pointer("/spec/value") {
            Some(value) => Ok(Decoded::Live(value.clone())),
            None => Err(malformed(
                kind,
                name,
                "no spec.value (not written by a routerd datastore)",
            )),
        },
    }
}

fn encode_resource(kind: &str, name: &str, value: &Value) -> Result<Value, KubeError> {
    let metadata = value.get("metadata");
    let labels = string_map(metadata.and_then(|m| m.get("labels")));
    let annotations = string_map(metadata.and_then(|m| m.get("annotations")));
    let Some(spec) = value.get("spec") else {
        return Err(malformed(
            kind,
            name,
            "not a resource (no spec): Calico's custom resources hold resources only",
        ));
    };
    // Go's encoding of the v3 ObjectMeta without name, namespace, uid and resourceVersion:
    // struct field order, `creationTimestamp` always present, empty maps omitted.
    let mut stored = String::from("{\"creationTimestamp\":null");
    for (field, map) in [("labels", &labels), ("annotations", &annotations)] {
        if !map.is_empty() {
            stored.push_str(&format!(",\"{field}\":{}", map_value(map)));
        }
    }
    stored.push('}');
    let mut v1_annotations: BTreeMap<String, String> = annotations
        .iter()
        .filter(|(k, _)| is_ours(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    v1_annotations.insert(METADATA_ANNOTATION.into(), stored);
    let v1_labels: BTreeMap<String, String> = labels
        .iter()
        .filter(|(k, _)| is_ours(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut meta = Map::new();
    meta.insert("name".into(), Value::from(name));
    if !v1_labels.is_empty() {
        meta.insert("labels".into(), map_value(&v1_labels));
    }
    meta.insert("annotations".into(), map_value(&v1_annotations));
    Ok(json!({
        "apiVersion": format!("{CALICO_CRD_GROUP}/{CALICO_CRD_VERSION}"),
        "kind": kind,
        "metadata": meta,
        "spec": spec,
    }))
}

fn decode_resource(kind: &str, name: &str, object: &Value) -> Result<Value, KubeError> {
    let metadata = object.get("metadata");
    let mut labels = string_map(metadata.and_then(|m| m.get("labels")));
    let mut annotations = string_map(metadata.and_then(|m| m.get("annotations")));
    if let Some(text) = annotations.remove(METADATA_ANNOTATION) {
        let stored: Value = serde_json::from_str(&text).map_err(|e| {
            malformed(
                kind,
                name,
                format!("annotation {METADATA_ANNOTATION} is not JSON: {e}"),
            )
        })?;
        labels.extend(string_map(stored.get("labels")));
        annotations.extend(string_map(stored.get("annotations")));
    }
    let mut meta = Map::new();
    meta.insert("name".into(), Value::from(name));
    if !labels.is_empty() {
        meta.insert("labels".into(), map_value(&labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), map_value(&annotations));
    }
    Ok(json!({
        "apiVersion": crate::resource::CALICO_API_VERSION,
        "kind": kind,
        "metadata": meta,
        "spec": object.get("spec").cloned().unwrap_or_else(|| json!({})),
    }))
}

/// The allocator's fields of each IPAM kind (what a record value holds).
fn ipam_fields(ipam: IpamKind) -> &'static [&'static str] {
    match ipam {
        IpamKind::Block => &[
            "cidr",
            "affinity",
            "allocations",
            "unallocated",
            "attributes",
        ],
        IpamKind::Affinity => &["node", "cidr", "state"],
        IpamKind::Handle => &["handleID", "block"],
        // Every field: the settings record refuses the ones routerd does not implement.
        IpamKind::Config => &[],
    }
}

/// A block's attributes as the allocator has them: `handle_id` and `secondary`, without
/// Calico's `releasedAt`/`alternateOwnerAttrs` or null values.
fn keep_allocator_attributes(block: &mut Map<String, Value>) {
    if let Some(Value::Array(attributes)) = block.get_mut("attributes") {
        for a in attributes.iter_mut().filter_map(Value::as_object_mut) {
            a.retain(|k, v| (k == "handle_id" || k == "secondary") && !v.is_null());
        }
    }
}

fn encode_ipam(kind: &str, name: &str, ipam: IpamKind, value: &Value) -> Result<Value, KubeError> {
    let Some(fields) = value.as_object() else {
        return Err(malformed(
            kind,
            name,
            "not an IPAM record (a JSON object is expected)",
        ));
    };
    let mut spec = fields.clone();
    match ipam {
        IpamKind::Block => {
            // Required by Calico's CRD schema; routerd's affinity is per block, so the
            // deprecated per-block strict affinity is always false.
            spec.insert("strictAffinity".into(), Value::Bool(false));
            spec.insert("deleted".into(), Value::Bool(false));
            keep_allocator_attributes(&mut spec);
        }
        IpamKind::Affinity => {
            spec.insert("deleted".into(), Value::from("false"));
            spec.insert("type".into(), Value::from("host"));
        }
        IpamKind::Handle => {
            spec.insert("deleted".into(), Value::Bool(false));
        }
        IpamKind::Config => {}
    }
    Ok(json!({
        "apiVersion": format!("{CALICO_CRD_GROUP}/{CALICO_CRD_VERSION}"),
        "kind": kind,
        "metadata": {"name": Backing::CalicoIpam(ipam).object_name(name)},
        "spec": spec,
    }))
}

fn decode_ipam(
    kind: &str,
    name: &str,
    ipam: IpamKind,
    object: &Value,
) -> Result<Decoded, KubeError> {
    let Some(spec) = object.get("spec").and_then(Value::as_object) else {
        return Err(malformed(kind, name, "no spec"));
    };
    let deleted = match spec.get("deleted") {
        Some(Value::Bool(b)) => *b,
        // BlockAffinity keeps it as text ("compatibility with older releases").
        Some(Value::String(s)) => s == "true",
        _ => false,
    };
    let fields = ipam_fields(ipam);
    let mut value: Map<String, Value> = if fields.is_empty() {
        spec.clone()
    } else {
        spec.iter()
            .filter(|(k, _)| fields.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    if ipam == IpamKind::Block {
        keep_allocator_attributes(&mut value);
        if value.get("affinity").is_some_and(Value::is_null) {
            value.remove("affinity");
        }
    }
    let value = Value::Object(value);
    Ok(if deleted {
        Decoded::Tombstone(value)
    } else {
        Decoded::Live(value)
    })
}

/// Sets `path` (`bgp.x` or `x`) of a Node spec.
fn set_node_field(spec: &mut Map<String, Value>, path: &str, value: Value) {
    match path.strip_prefix("bgp.") {
        Some(field) => {
            let bgp = spec.entry("bgp").or_insert_with(|| json!({}));
            if let Some(bgp) = bgp.as_object_mut() {
                bgp.insert(field.to_string(), value);
            }
        }
        None => {
            spec.insert(path.to_string(), value);
        }
    }
}

fn node_field<'a>(spec: &'a Value, path: &str) -> Option<&'a Value> {
    match path.strip_prefix("bgp.") {
        Some(field) => spec.get("bgp")?.get(field),
        None => spec.get(path),
    }
}

fn decode_node(name: &str, object: &Value) -> Value {
    let metadata = object.get("metadata");
    let annotations = string_map(metadata.and_then(|m| m.get("annotations")));
    let k8s_labels = string_map(metadata.and_then(|m| m.get("labels")));
    // Calico-only labels first, the Kubernetes Node's win (`mergeCalicoAndK8sLabels`).
    let mut labels = json_string_map(annotations.get(NODE_LABELS_ANNOTATION).map(String::as_str))
        .unwrap_or_default();
    labels.extend(k8s_labels);
    let calico_annotations = json_string_map(
        annotations
            .get(NODE_ANNOTATIONS_ANNOTATION)
            .map(String::as_str),
    )
    .unwrap_or_default();
    let mut spec = Map::new();
    for (annotation, path) in NODE_ANNOTATIONS {
        let Some(text) = annotations.get(annotation).filter(|t| !t.is_empty()) else {
            continue;
        };
        let value = if path == "bgp.asNumber" {
            text.parse::<u64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::from(text.as_str()))
        } else {
            Value::from(text.as_str())
        };
        set_node_field(&mut spec, path, value);
    }
    let mut addresses = Vec::new();
    if let Some(bgp) = spec.get("bgp") {
        for field in ["ipv4Address", "ipv6Address"] {
            if let Some(a) = bgp.get(field).and_then(Value::as_str) {
                addresses.push(json!({"address": a, "type": "CalicoNodeIP"}));
            }
        }
    }
    let status_addresses = object
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for a in status_addresses {
        let (Some(address), Some(kind)) = (
            a.get("address").and_then(Value::as_str),
            a.get("type").and_then(Value::as_str),
        ) else {
            continue;
        };
        if kind == "InternalIP" || kind == "ExternalIP" {
            addresses.push(json!({"address": address, "type": kind}));
        }
    }
    if !addresses.is_empty() {
        spec.insert("addresses".into(), Value::Array(addresses));
    }
    spec.insert(
        "orchRefs".into(),
        json!([{"nodeName": name, "orchestrator": "k8s"}]),
    );
    let mut meta = Map::new();
    meta.insert("name".into(), Value::from(name));
    if !labels.is_empty() {
        meta.insert("labels".into(), map_value(&labels));
    }
    if !calico_annotations.is_empty() {
        meta.insert("annotations".into(), map_value(&calico_annotations));
    }
    json!({
        "apiVersion": crate::resource::CALICO_API_VERSION,
        "kind": "Node",
        "metadata": meta,
        "spec": spec,
    })
}

fn encode_node(name: &str, value: &Value, current: &Value) -> Result<Value, KubeError> {
    let mut object = current.clone();
    let spec = value.get("spec").cloned().unwrap_or_else(|| json!({}));
    let metadata = value.get("metadata");
    let labels = string_map(metadata.and_then(|m| m.get("labels")));
    let calico_annotations = string_map(metadata.and_then(|m| m.get("annotations")));
    let k8s_labels = string_map(current.pointer("/metadata/labels"));
    let mut annotations = string_map(current.pointer("/metadata/annotations"));
    for (annotation, path) in NODE_ANNOTATIONS {
        let text = match node_field(&spec, path) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        match text {
            Some(text) => annotations.insert(annotation.to_string(), text),
            None => annotations.remove(annotation),
        };
    }
    // Labels the Kubernetes Node has are its own (`restoreCalicoLabels`): only the others
    // are Calico's to keep. A label that would shadow a Kubernetes one is not written, as
    // in Calico (which logs the same warning).
    let mut calico_labels = BTreeMap::new();
    for (k, v) in labels {
        match k8s_labels.get(&k) {
            Some(k8s) if *k8s == v => {}
            Some(k8s) => tracing::warn!(
                node = %name, label = %k, value = %v, kubernetes = %k8s,
                "a Node label that shadows the Kubernetes Node's is ignored"
            ),
            None => {
                calico_labels.insert(k, v);
            }
        }
    }
    for (annotation, map) in [
        (NODE_LABELS_ANNOTATION, &calico_labels),
        (NODE_ANNOTATIONS_ANNOTATION, &calico_annotations),
    ] {
        if map.is_empty() {
            annotations.remove(annotation);
        } else {
            annotations.insert(annotation.to_string(), map_value(map).to_string());
        }
    }
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return Err(malformed(
            "Node",
            name,
            "the Kubernetes Node has no metadata",
        ));
    };
    meta.insert("annotations".into(), map_value(&annotations));
    Ok(object)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn live(d: Decoded) -> Value {
        match d {
            Decoded::Live(v) => v,
            Decoded::Tombstone(v) => panic!("tombstone {v}"),
        }
    }

    #[test]
    fn kinds_are_backed_as_calico_keeps_them() {
        let r = |kind: &str| {
            let b = Backing::of(kind);
            b.resource(kind, super::super::kinds::plural(kind))
        };
        assert_eq!(r("BGPPeer").api_version, "crd.projectcalico.org/v1");
        assert_eq!(r("BGPPeer").plural, "bgppeers");
        assert_eq!(r("BlockAffinity").plural, "blockaffinities");
        assert_eq!(r("IPAMConfig").plural, "ipamconfigs");
        let node = r("Node");
        assert_eq!((node.group.as_str(), node.api_version.as_str()), ("", "v1"));
        assert_eq!(node.plural, "nodes");
        assert_eq!(r("WorkloadEndpoint").api_version, "routerd.io/v1");
        assert_eq!(
            Backing::of("IPAMHandle").object_name("K8s-Pod-Network.ABC"),
            "k8s-pod-network.abc"
        );
    }

    /// A BGPPeer as `calicoctl apply` writes it under KDD, and back.
    #[test]
    fn resources_keep_their_metadata_in_calicos_annotation() {
        let value = json!({
            "apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
            "metadata": {"name": "rack1-tor", "labels": {"rack": "r1"},
                         "annotations": {"owner": "net"}},
            "spec": {"peerIP": "192.20.30.40", "asNumber": 64567},
        });
        let object = encode("BGPPeer", "rack1-tor", &value, None).unwrap();
        assert_eq!(
            object,
            json!({
                "apiVersion": "crd.projectcalico.org/v1", "kind": "BGPPeer",
                "metadata": {"name": "rack1-tor", "annotations": {
                    "projectcalico.org/metadata":
                        "{\"creationTimestamp\":null,\"labels\":{\"rack\":\"r1\"},\"annotations\":{\"owner\":\"net\"}}"
                }},
                "spec": {"peerIP": "192.20.30.40", "asNumber": 64567},
            })
        );
        assert_eq!(live(decode("BGPPeer", &object).unwrap()), value);
        // Applied straight to the v1 group (kubectl, older Calico): labels on the object.
        let plain = json!({
            "apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
            "metadata": {"name": "p", "labels": {"a": "1"}, "resourceVersion": "9",
                         "uid": "u", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"cidr": "10.0.0.0/16"},
        });
        assert_eq!(
            live(decode("IPPool", &plain).unwrap()),
            json!({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                   "metadata": {"name": "p", "labels": {"a": "1"}},
                   "spec": {"cidr": "10.0.0.0/16"}})
        );
        // Not a resource: refused rather than stored in a shape Calico cannot read.
        assert!(encode("BGPPeer", "x", &json!(1), None).is_err());
    }

    #[test]
    fn ipam_records_carry_calicos_bookkeeping_and_tombstones_read_as_absent() {
        let block = json!({
            "cidr": "10.0.0.0/26", "affinity": "host:node-1",
            "allocations": [0, null, 1], "unallocated": [2, 3],
            "attributes": [{"handle_id": "k8s-pod-network.abc", "secondary": {"pod": "p"}}],
        });
        let object = encode("IPAMBlock", "10-0-0-0-26", &block, None).unwrap();
        assert_eq!(object["spec"]["strictAffinity"], json!(false));
        assert_eq!(object["spec"]["deleted"], json!(false));
        assert_eq!(live(decode("IPAMBlock", &object).unwrap()), block);
        // What Calico writes: extra fields dropped, a null affinity is no affinity.
        let calico = json!({"metadata": {"name": "10-0-0-0-26"}, "spec": {
            "cidr": "10.0.0.0/26", "affinity": null, "allocations": [null],
            "unallocated": [0], "strictAffinity": false, "deleted": false,
            "sequenceNumber": 7, "sequenceNumberForAllocation": {"0": 3},
            "attributes": [{"handle_id": "h", "secondary": null, "releasedAt": null}],
        }});
        assert_eq!(
            live(decode("IPAMBlock", &calico).unwrap()),
            json!({"cidr": "10.0.0.0/26", "allocations": [null], "unallocated": [0],
                   "attributes": [{"handle_id": "h"}]})
        );
        let affinity = json!({"node": "node-1", "cidr": "10.0.0.0/26", "state": "confirmed"});
        let object = encode("BlockAffinity", "node-1-10-0-0-0-26", &affinity, None).unwrap();
        assert_eq!(object["spec"]["deleted"], json!("false"));
        assert_eq!(object["spec"]["type"], json!("host"));
        assert_eq!(live(decode("BlockAffinity", &object).unwrap()), affinity);
        let mut gone = object.clone();
        gone["spec"]["deleted"] = json!("true");
        assert!(matches!(
            decode("BlockAffinity", &gone).unwrap(),
            Decoded::Tombstone(_)
        ));
        let handle = json!({"handleID": "Mixed.Case", "block": {"10.0.0.0/26": 1}});
        let object = encode("IPAMHandle", "Mixed.Case", &handle, None).unwrap();
        assert_eq!(object["metadata"]["name"], json!("mixed.case"));
        assert_eq!(live(decode("IPAMHandle", &object).unwrap()), handle);
        // IPAMConfig passes every field, so the settings reader can refuse unknown ones.
        let config = json!({"strictAffinity": true, "autoAllocateBlocks": true,
                            "maxBlocksPerHost": 4});
        let object = encode("IPAMConfig", "default", &config, None).unwrap();
        assert_eq!(live(decode("IPAMConfig", &object).unwrap()), config);
    }

    fn k8s_node() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node-1", "resourceVersion": "5",
                         "labels": {"kubernetes.io/hostname": "node-1", "rack": "r1"},
                         "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
            "spec": {"podCIDR": "10.1.0.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"},
                                     {"type": "Hostname", "address": "node-1"}]},
        })
    }

    #[test]
    fn a_node_is_the_kubernetes_node_with_calicos_annotations() {
        let fresh = decode_node("node-1", &k8s_node());
        assert_eq!(
            fresh,
            json!({"apiVersion": "projectcalico.org/v3", "kind": "Node",
                   "metadata": {"name": "node-1", "labels":
                       {"kubernetes.io/hostname": "node-1", "rack": "r1"}},
                   "spec": {"addresses": [{"address": "10.0.0.1", "type": "InternalIP"}],
                            "orchRefs": [{"nodeName": "node-1", "orchestrator": "k8s"}]}})
        );
        // routerd registers: BGP address, AS, a tunnel address, a Calico-only label.
        let mut registered = fresh.clone();
        registered["metadata"]["labels"]["route-reflector"] = json!("true");
        registered["spec"]["bgp"] = json!({"ipv4Address": "10.0.0.1/24", "asNumber": 64512,
                                           "ipv4IPIPTunnelAddr": "10.244.0.1"});
        registered["spec"]["ipv4VXLANTunnelAddr"] = json!("10.244.0.2");
        let object = encode("Node", "node-1", &registered, Some(&k8s_node())).unwrap();
        let annotations = &object["metadata"]["annotations"];
        assert_eq!(
            annotations,
            &json!({
                "node.alpha.kubernetes.io/ttl": "0",
                "projectcalico.org/IPv4Address": "10.0.0.1/24",
                "projectcalico.org/ASNumber": "64512",
                "projectcalico.org/IPv4IPIPTunnelAddr": "10.244.0.1",
                "projectcalico.org/IPv4VXLANTunnelAddr": "10.244.0.2",
                "projectcalico.org/labels": "{\"route-reflector\":\"true\"}",
            })
        );
        // The Kubernetes Node's own labels, spec and status are untouched.
        assert_eq!(
            object["metadata"]["labels"],
            k8s_node()["metadata"]["labels"]
        );
        assert_eq!(object["spec"], k8s_node()["spec"]);
        let back = decode_node("node-1", &object);
        assert_eq!(back["metadata"]["labels"]["route-reflector"], json!("true"));
        assert_eq!(back["spec"]["bgp"], registered["spec"]["bgp"]);
        assert_eq!(
            back["spec"]["addresses"][0],
            json!({"address": "10.0.0.1/24", "type": "CalicoNodeIP"})
        );
        // `kubectl label node node-1 rack-` : the label is gone from the Node too.
        let mut relabelled = object.clone();
        relabelled["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("rack");
        assert!(decode_node("node-1", &relabelled)["metadata"]["labels"]
            .get("rack")
            .is_none());
        // Clearing a field removes its annotation; a shadowing label is not written.
        let mut cleared = back.clone();
        cleared["spec"]["ipv4VXLANTunnelAddr"] = Value::Null;
        cleared["metadata"]["labels"]["rack"] = json!("r2");
        let object = encode("Node", "node-1", &cleared, Some(&object)).unwrap();
        let annotations = object["metadata"]["annotations"].as_object().unwrap();
        assert!(!annotations.contains_key("projectcalico.org/IPv4VXLANTunnelAddr"));
        assert_eq!(
            annotations["projectcalico.org/labels"],
            json!("{\"route-reflector\":\"true\"}")
        );
    }
}

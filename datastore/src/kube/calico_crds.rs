//! The CustomResourceDefinitions of Calico's own CRD group, `crd.projectcalico.org/v1`, with
//! full structural schemas generated from routerd's types, for a cluster that has no Calico
//! installed (on a Calico cluster the CRDs are Calico's and exist already).
//!
//! Names are exactly Calico's (plural, singular, kind, listKind), every kind is
//! cluster-scoped, and each `spec` schema comes from the type routerd reads it with:
//!
//! | kind               | `spec` schema from                                          |
//! |--------------------|-------------------------------------------------------------|
//! | `BGPConfiguration` | [`BgpConfigurationSpec`]                                    |
//! | `BGPPeer`          | [`BgpPeerSpec`]                                             |
//! | `IPPool`           | [`ipam::IpPoolSpec`] and the newer Calico fields the reader accepts at their defaults |
//! | `BGPFilter`        | [`BgpFilterSpec`]                                           |
//! | `IPAMBlock`, `BlockAffinity`, `IPAMHandle`, `IPAMConfig` | schema-only mirrors of Calico's Go types (below) |
//!
//! The schemas are generated the way kube's `CustomResource` derive does it (schemars'
//! OpenAPI 3 settings with every subschema inlined, then kube's
//! [`StructuralSchemaRewriter`]), and then [`make_structural`] removes what the derive
//! leaves and Kubernetes refuses or handles differently. The derive itself is not used: it
//! must sit on the spec type's own definition (ours live in `resource` and in the `ipam`
//! crate), it sets no `listKind`, and it makes `spec` required and titles the root with the
//! wrapper's name, where Calico's CRDs do neither.
//!
//! What the schemas check is the *shape* (types, required fields, maps, lists); values
//! (addresses, modes, selectors, durations) stay text, as in Calico's Go types, and are
//! validated by routerd when it reads a resource, so that an error names the resource and
//! the field. Unknown fields are pruned by the API server, where routerd's file datastore
//! refuses them (`deny_unknown_fields`): a structural schema may not say
//! `additionalProperties: false`.
//!
//! `examples/crds/crd.projectcalico.org.yaml` is [`calico_crd_yaml`]'s output; the test
//! `datastore/tests/datastore_kube_crds.rs` fails when the committed file differs.

use std::collections::BTreeMap;

use ::kube::core::schema::StructuralSchemaRewriter;
use ipam::IpPoolSpec;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Value};

use crate::resource::{BgpConfigurationSpec, BgpFilterSpec, BgpPeerSpec};

/// Calico's CRD group.
const GROUP: &str = "crd.projectcalico.org";
/// Its only version.
const VERSION: &str = "v1";

/// One kind: its names and where its `spec` schema comes from.
struct CalicoKind {
    kind: &'static str,
    plural: &'static str,
    description: &'static str,
    spec: fn() -> Value,
}

const KINDS: [CalicoKind; 8] = [
    CalicoKind {
        kind: "BGPConfiguration",
        plural: "bgpconfigurations",
        description: "BGPConfiguration: cluster-wide BGP settings (`default`) and per-node \
                      overrides (`node.<nodename>`).",
        spec: spec_schema::<BgpConfigurationSpec>,
    },
    CalicoKind {
        kind: "BGPPeer",
        plural: "bgppeers",
        description: "BGPPeer: a BGP session to configure, on some or all nodes.",
        spec: bgp_peer_schema,
    },
    CalicoKind {
        kind: "IPPool",
        plural: "ippools",
        description: "IPPool: an address range pods draw from, cut into per-node blocks.",
        spec: spec_schema::<IpPoolCrdSpec>,
    },
    CalicoKind {
        kind: "BGPFilter",
        plural: "bgpfilters",
        description: "BGPFilter: ordered accept/reject rules per direction and family.",
        spec: spec_schema::<BgpFilterSpec>,
    },
    CalicoKind {
        kind: "IPAMBlock",
        plural: "ipamblocks",
        description: "IPAMBlock: a block of a pool's addresses and its allocations.",
        spec: spec_schema::<IpamBlockSpec>,
    },
    CalicoKind {
        kind: "BlockAffinity",
        plural: "blockaffinities",
        description: "BlockAffinity: a node's claim on an IPAM block.",
        spec: spec_schema::<BlockAffinitySpec>,
    },
    CalicoKind {
        kind: "IPAMHandle",
        plural: "ipamhandles",
        description: "IPAMHandle: the addresses allocated to one handle (a workload), per block.",
        spec: spec_schema::<IpamHandleSpec>,
    },
    CalicoKind {
        kind: "IPAMConfig",
        plural: "ipamconfigs",
        description: "IPAMConfig: cluster-wide IPAM settings (`default`).",
        spec: spec_schema::<IpamConfigSpec>,
    },
];

/// `spec` of an `IPPool`: the fields of [`IpPoolSpec`], and newer Calico fields that routerd
/// accepts only at their defaults (any other value is refused when the pool is read; in the
/// schema so that the API server keeps them for that check instead of pruning them).
#[derive(Debug, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // schema only
struct IpPoolCrdSpec {
    #[serde(flatten)]
    pool: IpPoolSpec,
    /// What the pool's addresses are for; routerd supports only `[Workload, Tunnel]` (the
    /// default).
    allowed_uses: Option<Vec<String>>,
    /// Whether the pool's routes are kept out of BGP; routerd supports only `false` (the
    /// default).
    #[serde(rename = "disableBGPExport")]
    disable_bgp_export: Option<bool>,
    /// `Automatic` (the default, the only value routerd supports) or `Manual`.
    assignment_mode: Option<String>,
}

/// [`BgpPeerSpec`]'s schema, plus the older spelling `numAllowedLocalAsNumbers` that its
/// serde still reads (a serde alias, which schemars does not see).
fn bgp_peer_schema() -> Value {
    let mut schema = spec_schema::<BgpPeerSpec>();
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        if let Some(mut alias) = properties.get("numAllowedLocalASNumbers").cloned() {
            alias["description"] = "Older spelling of numAllowedLocalASNumbers, still read.".into();
            properties.insert("numAllowedLocalAsNumbers".into(), alias);
        }
    }
    schema
}

/// `{type: string, format: date-time}`: a Kubernetes `metav1.Time` (RFC 3339).
fn date_time(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "format": "date-time",
        "nullable": true
    })
}

/// `spec` of an `IPAMBlock` (Calico's `IPAMBlockSpec`): a block's addresses and
/// allocations.
#[derive(Debug, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // schema only
struct IpamBlockSpec {
    /// The block's CIDR.
    cidr: String,
    /// Affinity of the block, if this block has one: `host:<hostname>`. Unset, the block is
    /// not affine to a host.
    affinity: Option<String>,
    /// When the affinity was claimed.
    #[serde(default)]
    #[schemars(schema_with = "date_time")]
    affinity_claim_time: Option<String>,
    /// Allocations in use within this block: entry i is null when ordinal i is free, else
    /// the index of its attributes in `attributes`.
    allocations: Vec<Option<i64>>,
    /// The free ordinals, in the order they are handed out.
    unallocated: Vec<i64>,
    /// Metadata of the allocations, indexed by the values in `allocations`.
    attributes: Vec<AllocationAttribute>,
    /// Updated each time the block is written; an allocation records the block's sequence
    /// number at its creation, so that a release cannot free a reallocated address.
    #[serde(default)]
    sequence_number: u64,
    /// Block sequence number at allocation time, per allocated ordinal (as a string: maps
    /// in Kubernetes have string keys).
    #[serde(default)]
    sequence_number_for_allocation: BTreeMap<String, u64>,
    /// Set while the block is being deleted (works around deletes not conflicting on
    /// updates); not to be set by hand.
    #[serde(default)]
    deleted: bool,
    /// Deprecated and unused; IPAMConfig's `strictAffinity` counts.
    strict_affinity: bool,
}

/// One entry of an `IPAMBlock`'s `attributes` (Calico's `AllocationAttribute`).
#[derive(Debug, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // schema only
struct AllocationAttribute {
    /// The handle that holds the allocation.
    #[serde(rename = "handle_id")]
    handle_id: Option<String>,
    /// Attributes of the active owner (the pod using the address: namespace, node, pod,
    /// timestamp).
    #[serde(rename = "secondary")]
    active_owner_attrs: Option<BTreeMap<String, String>>,
    /// Attributes of the previous or potential owner (during a live migration).
    alternate_owner_attrs: Option<BTreeMap<String, String>>,
    /// When the allocation was released (its cooldown started).
    #[serde(default)]
    #[schemars(schema_with = "date_time")]
    released_at: Option<String>,
}

/// `spec` of a `BlockAffinity` (Calico's `BlockAffinitySpec`): a node's claim on a block.
#[derive(Debug, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // schema only
struct BlockAffinitySpec {
    /// `pending`, `confirmed` or `pendingDeletion`.
    state: String,
    /// The node holding the affinity.
    node: String,
    /// The affinity's type (`host`).
    #[serde(rename = "type")]
    affinity_type: Option<String>,
    /// The block's CIDR.
    cidr: String,
    /// `"true"` while the affinity is being deleted, else `"false"`: a string, as Calico
    /// keeps it for compatibility with older releases.
    deleted: String,
}

/// `spec` of an `IPAMHandle` (Calico's `IPAMHandleSpec`).
#[derive(Debug, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // schema only
struct IpamHandleSpec {
    /// The handle's ID, e.g. `k8s-pod-network.<container id>`.
    #[serde(rename = "handleID")]
    handle_id: String,
    /// How many addresses the handle holds in each block, by block CIDR.
    block: BTreeMap<String, i64>,
    /// Set while the handle is being deleted.
    #[serde(default)]
    deleted: bool,
}

/// `spec` of an `IPAMConfig` (Calico's `IPAMConfigSpec`).
#[derive(Debug, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // schema only
struct IpamConfigSpec {
    /// Nodes assign addresses only from blocks affine to them.
    strict_affinity: bool,
    /// Nodes claim new blocks as they need them.
    auto_allocate_blocks: bool,
    /// The most blocks affine to one node; 0 or unset: no limit.
    #[serde(default)]
    #[schemars(range(min = 0, max = 2_147_483_647))]
    max_blocks_per_host: i64,
    /// `Enabled` (default) or `Disabled`: KubeVirt VMs keep their addresses when their pods
    /// are recreated (Calico; not used by routerd).
    #[serde(rename = "kubeVirtVMAddressPersistence")]
    kube_virt_vm_address_persistence: Option<String>,
    /// Minimum age of a released address before it is reused, 0..=1200 (Calico; not used
    /// by routerd).
    #[serde(rename = "ipCooldownSeconds", default)]
    #[schemars(range(min = 0, max = 1200))]
    ip_cooldown_seconds: i64,
}

/// The schema of `T` as a CRD's structural schema: inlined, `nullable` instead of null
/// types, untagged enums hoisted (kube's rewriter), then [`make_structural`].
fn spec_schema<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(StructuralSchemaRewriter)
        .into_generator();
    let mut schema = generator.into_root_schema_for::<T>().to_value();
    // A root schema is titled with the type's name; the description is its doc comment.
    if let Some(root) = schema.as_object_mut() {
        if root.get("title").and_then(Value::as_str) == Some(T::schema_name().as_ref()) {
            root.remove("title");
        }
    }
    make_structural(&mut schema);
    schema
}

/// Rewrites what schemars emits and a structural schema may not (or should not) hold, in
/// `node` and everything below it:
///
/// - `additionalProperties: false` (from `deny_unknown_fields`): refused by Kubernetes,
///   which prunes unknown fields instead;
/// - `default`: the API server would write our serde defaults into stored objects, which
///   Calico's CRDs do not;
/// - `title`: folded back into `description` (`kubectl explain` shows only that);
/// - integer formats other than `int32`/`int64` (schemars' `uint64`, `uint8`...): Kubernetes
///   warns about formats it does not know; the bounds stay as `minimum`/`maximum`.
fn make_structural(node: &mut Value) {
    let Some(object) = node.as_object_mut() else {
        return;
    };
    if object.get("additionalProperties") == Some(&Value::Bool(false)) {
        object.remove("additionalProperties");
    }
    object.remove("default");
    if let Some(Value::String(title)) = object.remove("title") {
        let description = match object.get("description").and_then(Value::as_str) {
            Some(rest) => format!("{title}\n\n{rest}"),
            None => title,
        };
        object.insert("description".into(), description.into());
    }
    if object.get("type").and_then(Value::as_str) == Some("integer") {
        if let Some(format) = object.get("format").and_then(Value::as_str) {
            let format = match format {
                "int8" | "int16" | "uint8" | "uint16" | "int32" => "int32",
                _ => "int64",
            };
            object.insert("format".into(), format.into());
        }
    }
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        properties.values_mut().for_each(make_structural);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = object.get_mut(key) {
            make_structural(child);
        }
    }
}

/// The whole object's schema around a `spec` one, as Calico's CRDs have it.
fn object_schema(description: &str, spec: Value) -> Value {
    json!({
        "description": description,
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation \
                    of an object. Servers should convert recognized schemas to the latest \
                    internal value, and may reject unrecognized values. More info: \
                    https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
                "type": "string"
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this \
                    object represents. Servers may infer this from the endpoint the client \
                    submits requests to. Cannot be updated. In CamelCase. More info: \
                    https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "type": "string"
            },
            "metadata": { "type": "object" },
            "spec": spec
        }
    })
}

fn crd(kind: &CalicoKind) -> CustomResourceDefinition {
    let singular = kind.kind.to_ascii_lowercase();
    let document = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("{}.{GROUP}", kind.plural) },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": format!("{}List", kind.kind),
                "plural": kind.plural,
                "singular": singular
            },
            "scope": "Cluster",
            "versions": [{
                "name": VERSION,
                "served": true,
                "storage": true,
                "schema": { "openAPIV3Schema": object_schema(kind.description, (kind.spec)()) }
            }]
        }
    });
    // Built here from fixed names and schemars' output; the tests cover every kind.
    serde_json::from_value(document).expect("a CustomResourceDefinition")
}

/// The CRDs of Calico's kinds that routerd uses, in group `crd.projectcalico.org`, version
/// `v1`: BGPConfiguration, BGPPeer, IPPool, BGPFilter, IPAMBlock, BlockAffinity, IPAMHandle,
/// IPAMConfig.
pub fn calico_crds() -> Vec<CustomResourceDefinition> {
    KINDS.iter().map(crd).collect()
}

/// [`calico_crds`] as one multi-document YAML stream, ready for `kubectl apply -f`.
pub fn calico_crd_yaml() -> Result<String, serde_norway::Error> {
    super::crd::yaml_stream(
        "# Calico's CustomResourceDefinitions (group crd.projectcalico.org, version v1) for the\n\
         # kinds routerd uses, with schemas generated from routerd's types, for clusters without\n\
         # Calico. Generated by datastore::calico_crd_yaml(); datastore/tests/datastore_kube_crds.rs\n\
         # checks this file is current (UPDATE_CRDS=1 rewrites it).\n",
        calico_crds(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_are_calicos() {
        let crds = calico_crds();
        assert_eq!(crds.len(), 8);
        for crd in &crds {
            let names = &crd.spec.names;
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.scope, "Cluster");
            assert_eq!(
                names.singular.as_deref(),
                Some(names.kind.to_lowercase().as_str())
            );
            assert_eq!(
                names.list_kind.as_deref(),
                Some(format!("{}List", names.kind).as_str())
            );
            assert_eq!(
                crd.metadata.name.as_deref(),
                Some(format!("{}.{GROUP}", names.plural).as_str())
            );
        }
    }

    #[test]
    fn as_numbers_are_int_or_string() {
        for spec in [spec_schema::<BgpConfigurationSpec>(), bgp_peer_schema()] {
            let asn = &spec["properties"]["asNumber"];
            assert_eq!(asn["x-kubernetes-int-or-string"], true, "{asn}");
            assert!(
                asn.get("type").is_none() && asn.get("anyOf").is_none(),
                "{asn}"
            );
        }
    }

    #[test]
    fn structural_rewrites() {
        let mut schema = json!({
            "title": "T",
            "description": "D",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "n": {"type": "integer", "format": "uint64", "minimum": 0, "default": 0},
                "l": {"type": "array", "items": {"type": "integer", "format": "uint8"}}
            }
        });
        make_structural(&mut schema);
        assert_eq!(
            schema,
            json!({
                "description": "T\n\nD",
                "type": "object",
                "properties": {
                    "n": {"type": "integer", "format": "int64", "minimum": 0},
                    "l": {"type": "array", "items": {"type": "integer", "format": "int32"}}
                }
            })
        );
    }
}

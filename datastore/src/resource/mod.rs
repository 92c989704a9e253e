//! The resources operators write, shared by every datastore.
//!
//! A manifest is a YAML or JSON document with `apiVersion`, `kind`, `metadata` and `spec`,
//! exactly as Calico's v3 API, so existing manifests carry over unchanged:
//!
//! - `apiVersion` is `projectcalico.org/v3` (Calico's) or `routerd.io/v1` (ours, same schema).
//!   The version a resource was read with is kept and written back.
//! - Kinds: `Node`, `BGPConfiguration`, `BGPPeer`, `IPPool` (spec is [`ipam::IpPoolSpec`] and
//!   validated by [`ipam::IpPool::new`]), `BGPFilter`, and `WorkloadEndpoint` (written by the
//!   CNI plugin, namespaced). A `List` (or `<Kind>List`) with `items`
//!   is flattened, as `calicoctl get -o yaml` prints lists.
//! - Field names are Calico's camelCase JSON names (`peerIP`, `routeReflectorClusterID`,
//!   `serviceClusterIPs`...). Unknown fields are refused and named, so a typo never silently
//!   drops a setting. `status` is accepted and ignored (it is observed state, not intent).
//!   Newer Calico `IPPool` fields (`allowedUses`, `disableBGPExport`, `assignmentMode`) are
//!   accepted only at their default values, which is what this project implements.
//! - Addresses, modes, durations and AS numbers are kept as text in the wire types, as in
//!   Calico's own Go types: parsing happens in `validate`/accessors, so a bad value is
//!   reported with its kind, name and field path:
//!   `BGPPeer/rack1-tor: spec.asNumber: 0 is not a valid AS number`.
//! - Extension over Calico: `password` (BGPPeer) and `nodeMeshPassword` (BGPConfiguration)
//!   also accept `file: /absolute/path`, because the embedded datastore has no Secrets.
//!
//! [`parse_manifests`] reads a stream (YAML documents separated by `---`, a JSON object or a
//! JSON array) and validates every resource; [`to_yaml`] / [`to_json`] write them back.

mod bgp_configuration;
mod bgp_filter;
mod bgp_peer;
mod field;
mod node;
mod workload_endpoint;

use std::collections::BTreeMap;
use std::fmt;

use ipam::{IpPool, IpPoolSpec};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use bgp_configuration::{
    BgpConfigurationScope, BgpConfigurationSpec, CidrEntry, NamedCommunity, PrefixAdvertisement,
    PrefixCommunities, DEFAULT_AS_NUMBER, DEFAULT_LISTEN_PORT, LOG_SEVERITIES,
};
pub use bgp_filter::{
    BgpFilterRule, BgpFilterSpec, CheckedFilter, CheckedRule, CidrMatch, PrefixLength, RuleAction,
    ACTIONS, MATCH_OPERATORS,
};
pub use bgp_peer::{
    parse_peer_address, BfdSpec, BfdTimers, BgpPeerSpec, MaxPrefixes, MaxPrefixesSpec, NextHopMode,
    PeerAddress, NEXT_HOP_MODES, SOURCE_ADDRESS_MODES,
};
pub use field::{
    is_dns_subdomain, parse_community, parse_duration, AsNumberText, CommunityValue, FieldError,
    LargeCommunity, PasswordSource, SecretKeyRef, StandardCommunity,
};
pub use node::{NodeAddress, NodeBgpSpec, NodeSpec, OrchRef};
pub use workload_endpoint::{
    calico_interface_name, endpoint_name, record_name, WorkloadEndpointSpec, DEFAULT_NAMESPACE,
};

/// Calico's API group and version.
pub const CALICO_API_VERSION: &str = "projectcalico.org/v3";
/// This project's API group and version (same schema as Calico's v3).
pub const ROUTERD_API_VERSION: &str = "routerd.io/v1";

/// Which `apiVersion` a resource was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ApiVersion {
    /// `projectcalico.org/v3`.
    #[default]
    CalicoV3,
    /// `routerd.io/v1`.
    RouterdV1,
}

impl ApiVersion {
    /// The `apiVersion` text.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::CalicoV3 => CALICO_API_VERSION,
            ApiVersion::RouterdV1 => ROUTERD_API_VERSION,
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            CALICO_API_VERSION => Some(ApiVersion::CalicoV3),
            ROUTERD_API_VERSION => Some(ApiVersion::RouterdV1),
            _ => None,
        }
    }
}

/// The kinds of resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `Node`.
    Node,
    /// `BGPConfiguration`.
    BgpConfiguration,
    /// `BGPPeer`.
    BgpPeer,
    /// `IPPool`.
    IpPool,
    /// `BGPFilter`.
    BgpFilter,
    /// `WorkloadEndpoint` (namespaced).
    WorkloadEndpoint,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 6] = [
        Kind::Node,
        Kind::BgpConfiguration,
        Kind::BgpPeer,
        Kind::IpPool,
        Kind::BgpFilter,
        Kind::WorkloadEndpoint,
    ];

    /// The `kind` text.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Node => "Node",
            Kind::BgpConfiguration => "BGPConfiguration",
            Kind::BgpPeer => "BGPPeer",
            Kind::IpPool => "IPPool",
            Kind::BgpFilter => "BGPFilter",
            Kind::WorkloadEndpoint => "WorkloadEndpoint",
        }
    }

    /// Parses the `kind` text (exact spelling, as Kubernetes).
    pub fn parse(text: &str) -> Option<Self> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `metadata`. Every kind but `WorkloadEndpoint` is cluster-scoped and has no namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// The resource's name (an RFC 1123 subdomain).
    pub name: String,
    /// The namespace (`WorkloadEndpoint` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels, matched by selectors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Opaque version set by the datastore on every write; a write carrying a stale one is
    /// refused (compare-and-swap). Empty/absent on create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Unique id set by the datastore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Set by the datastore (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
}

impl ObjectMeta {
    /// Metadata with only a name.
    pub fn named(name: impl Into<String>) -> Self {
        ObjectMeta {
            name: name.into(),
            ..Default::default()
        }
    }
}

/// One resource of a kind whose spec is `S`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Object<S> {
    /// The `apiVersion` it was written with.
    pub api_version: ApiVersion,
    /// `metadata`.
    pub metadata: ObjectMeta,
    /// `spec`.
    pub spec: S,
}

impl<S> Object<S> {
    /// A resource with the given name and spec, `projectcalico.org/v3`.
    pub fn new(name: impl Into<String>, spec: S) -> Self {
        Object {
            api_version: ApiVersion::default(),
            metadata: ObjectMeta::named(name),
            spec,
        }
    }
}

/// A `Node`.
pub type Node = Object<NodeSpec>;
/// A `BGPConfiguration`.
pub type BgpConfiguration = Object<BgpConfigurationSpec>;
/// A `BGPPeer`.
pub type BgpPeer = Object<BgpPeerSpec>;
/// An `IPPool`.
pub type IpPoolResource = Object<IpPoolSpec>;
/// A `BGPFilter`.
pub type BgpFilter = Object<BgpFilterSpec>;
/// A `WorkloadEndpoint`.
pub type WorkloadEndpoint = Object<WorkloadEndpointSpec>;

impl WorkloadEndpoint {
    /// `metadata.namespace`, or `default`.
    pub fn namespace(&self) -> &str {
        self.metadata
            .namespace
            .as_deref()
            .unwrap_or(DEFAULT_NAMESPACE)
    }
}

/// Any resource.
// A BGPPeer is the largest variant by a few hundred bytes; resources are parsed and held a
// few hundred at a time, so boxing would only add indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// `Node`.
    Node(Node),
    /// `BGPConfiguration`.
    BgpConfiguration(BgpConfiguration),
    /// `BGPPeer`.
    BgpPeer(BgpPeer),
    /// `IPPool`.
    IpPool(IpPoolResource),
    /// `BGPFilter`.
    BgpFilter(BgpFilter),
    /// `WorkloadEndpoint`.
    WorkloadEndpoint(WorkloadEndpoint),
}

/// A resource or a manifest stream was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// The text is not YAML/JSON, or a document lacks the manifest envelope.
    #[error("document {document}: {message}")]
    Syntax {
        /// 1-based index of the document in the stream.
        document: usize,
        /// The parser's message.
        message: String,
    },
    /// A field of a resource is unknown, of the wrong type, or holds a bad value.
    #[error("{kind}/{name}: {error}")]
    Invalid {
        /// The resource's kind.
        kind: Kind,
        /// `metadata.name`.
        name: String,
        /// The field and what is wrong.
        error: FieldError,
    },
}

impl ResourceError {
    /// The field path, for `Invalid`.
    pub fn field(&self) -> Option<&str> {
        match self {
            ResourceError::Invalid { error, .. } => Some(&error.field),
            ResourceError::Syntax { .. } => None,
        }
    }
}

/// The fields [`IpPoolSpec`] knows, in Calico spelling. `IpPoolSpec` (ipam crate) does not
/// refuse unknown fields itself, so they are checked here against this list; a unit test
/// keeps it in step with the struct.
const IP_POOL_FIELDS: [&str; 7] = [
    "cidr",
    "blockSize",
    "ipipMode",
    "vxlanMode",
    "natOutgoing",
    "disabled",
    "nodeSelector",
];

/// Newer Calico `IPPool` fields that `calicoctl get ippool -o yaml` prints with their default
/// values. [`IpPoolSpec`] has no place for them, so they are accepted (and dropped) only when
/// they hold the default, which is exactly what this project implements; any other value is
/// refused rather than silently ignored.
fn drop_default_pool_fields(fields: &mut serde_json::Map<String, Value>) -> Result<(), FieldError> {
    if let Some(uses) = fields.remove("allowedUses") {
        let mut names: Vec<&str> = uses
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        names.sort_unstable();
        if names != ["Tunnel", "Workload"] {
            return Err(FieldError::new(
                "spec.allowedUses",
                format!("{uses} is not supported; only [Workload, Tunnel] (the default)"),
            ));
        }
    }
    if let Some(v) = fields.remove("disableBGPExport") {
        if v != Value::Bool(false) {
            return Err(FieldError::new(
                "spec.disableBGPExport",
                format!("{v} is not supported; pool blocks are always advertised"),
            ));
        }
    }
    if let Some(v) = fields.remove("assignmentMode") {
        if v.as_str() != Some("Automatic") {
            return Err(FieldError::new(
                "spec.assignmentMode",
                format!("{v} is not supported; only Automatic (the default)"),
            ));
        }
    }
    Ok(())
}

impl Resource {
    /// `(kind, name)`: what identifies a resource in a datastore.
    pub fn key(&self) -> (Kind, &str) {
        (self.kind(), self.name())
    }

    /// The kind.
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Node(_) => Kind::Node,
            Resource::BgpConfiguration(_) => Kind::BgpConfiguration,
            Resource::BgpPeer(_) => Kind::BgpPeer,
            Resource::IpPool(_) => Kind::IpPool,
            Resource::BgpFilter(_) => Kind::BgpFilter,
            Resource::WorkloadEndpoint(_) => Kind::WorkloadEndpoint,
        }
    }

    /// `metadata`.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Resource::Node(o) => &o.metadata,
            Resource::BgpConfiguration(o) => &o.metadata,
            Resource::BgpPeer(o) => &o.metadata,
            Resource::IpPool(o) => &o.metadata,
            Resource::BgpFilter(o) => &o.metadata,
            Resource::WorkloadEndpoint(o) => &o.metadata,
        }
    }

    /// `metadata`, to set the resource version on write.
    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Resource::Node(o) => &mut o.metadata,
            Resource::BgpConfiguration(o) => &mut o.metadata,
            Resource::BgpPeer(o) => &mut o.metadata,
            Resource::IpPool(o) => &mut o.metadata,
            Resource::BgpFilter(o) => &mut o.metadata,
            Resource::WorkloadEndpoint(o) => &mut o.metadata,
        }
    }

    /// `apiVersion`.
    pub fn api_version(&self) -> ApiVersion {
        match self {
            Resource::Node(o) => o.api_version,
            Resource::BgpConfiguration(o) => o.api_version,
            Resource::BgpPeer(o) => o.api_version,
            Resource::IpPool(o) => o.api_version,
            Resource::BgpFilter(o) => o.api_version,
            Resource::WorkloadEndpoint(o) => o.api_version,
        }
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.metadata().name
    }

    /// The name of the datastore record holding it: `metadata.name`, or for a namespaced
    /// `WorkloadEndpoint` `<namespace>.<name>`.
    pub fn record_name(&self) -> String {
        match self {
            Resource::WorkloadEndpoint(o) => record_name(o.namespace(), &o.metadata.name),
            _ => self.name().to_string(),
        }
    }

    /// `metadata.resourceVersion`.
    pub fn resource_version(&self) -> Option<&str> {
        self.metadata().resource_version.as_deref()
    }

    /// Checks the name and every field; the error names kind, name and field path.
    pub fn validate(&self) -> Result<(), ResourceError> {
        let invalid = |error: FieldError| ResourceError::Invalid {
            kind: self.kind(),
            name: self.name().to_string(),
            error,
        };
        let name = self.name();
        match self.kind() {
            Kind::BgpConfiguration => {}
            // Calico's endpoint names embed a 64-digit container id: a Kubernetes object
            // name (a subdomain of at most 253 bytes, with no limit per label), which is
            // what Kubernetes itself checks.
            Kind::WorkloadEndpoint => {
                if !is_object_name(name) {
                    return Err(invalid(FieldError::new(
                        "metadata.name",
                        format!(
                            "{name:?} is not a Kubernetes object name (lowercase letters, \
                             digits, '-' and '.', at most 253 bytes)"
                        ),
                    )));
                }
            }
            _ => field::check_name(name, "metadata.name").map_err(invalid)?,
        }
        match (&self.metadata().namespace, self.kind()) {
            (Some(ns), Kind::WorkloadEndpoint) => {
                if !is_dns_label(ns) {
                    return Err(invalid(FieldError::new(
                        "metadata.namespace",
                        format!("{ns:?} is not a namespace name (a DNS label)"),
                    )));
                }
            }
            (Some(_), kind) => {
                return Err(invalid(FieldError::new(
                    "metadata.namespace",
                    format!("{kind} is cluster-scoped and has no namespace"),
                )))
            }
            (None, _) => {}
        }
        for key in self.metadata().labels.keys() {
            if !is_label_key(key) {
                return Err(invalid(FieldError::new(
                    format!("metadata.labels.{key}"),
                    format!("{key:?} is not a valid label key"),
                )));
            }
        }
        match self {
            Resource::Node(o) => o.spec.validate(),
            Resource::BgpConfiguration(o) => o.spec.validate(name),
            Resource::BgpPeer(o) => o.spec.validate(),
            Resource::IpPool(o) => IpPool::new(name, &o.spec)
                .map(|_| ())
                .map_err(|e| FieldError::new(e.field, e.message)),
            Resource::BgpFilter(o) => o.spec.validate(),
            Resource::WorkloadEndpoint(o) => o.spec.validate(),
        }
        .map_err(invalid)
    }

    /// The manifest as a JSON value (`apiVersion`, `kind`, `metadata`, `spec`).
    pub fn to_value(&self) -> Value {
        fn build<S: Serialize>(kind: Kind, o: &Object<S>) -> Value {
            let mut map = serde_json::Map::new();
            map.insert("apiVersion".into(), Value::from(o.api_version.as_str()));
            map.insert("kind".into(), Value::from(kind.as_str()));
            map.insert(
                "metadata".into(),
                serde_json::to_value(&o.metadata).unwrap_or(Value::Null),
            );
            map.insert(
                "spec".into(),
                serde_json::to_value(&o.spec).unwrap_or(Value::Null),
            );
            Value::Object(map)
        }
        let kind = self.kind();
        match self {
            Resource::Node(o) => build(kind, o),
            Resource::BgpConfiguration(o) => build(kind, o),
            Resource::BgpPeer(o) => build(kind, o),
            Resource::IpPool(o) => build(kind, o),
            Resource::BgpFilter(o) => build(kind, o),
            Resource::WorkloadEndpoint(o) => build(kind, o),
        }
    }

    /// Reads one manifest from a JSON value, refusing unknown fields, without validating
    /// field values (see [`Resource::validate`]). `document` numbers syntax errors.
    pub fn from_value(value: Value, document: usize) -> Result<Self, ResourceError> {
        let syntax = |message: String| ResourceError::Syntax { document, message };
        let Value::Object(mut map) = value else {
            return Err(syntax("a manifest must be a mapping".into()));
        };
        let api_version = match map.remove("apiVersion") {
            Some(Value::String(s)) => ApiVersion::parse(&s).ok_or_else(|| {
                syntax(format!(
                    "apiVersion: {s:?} is not {CALICO_API_VERSION} or {ROUTERD_API_VERSION}"
                ))
            })?,
            Some(_) => return Err(syntax("apiVersion: must be a string".into())),
            None => return Err(syntax("apiVersion: missing".into())),
        };
        let kind = match map.remove("kind") {
            Some(Value::String(s)) => Kind::parse(&s).ok_or_else(|| {
                let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                syntax(format!("kind: {s:?} is not one of {}", known.join(", ")))
            })?,
            Some(_) => return Err(syntax("kind: must be a string".into())),
            None => return Err(syntax("kind: missing".into())),
        };
        let metadata_value = map
            .remove("metadata")
            .ok_or_else(|| syntax(format!("{kind}: metadata: missing")))?;
        // Name first, so every later error can say which resource it is about.
        let name = metadata_value
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| syntax(format!("{kind}: metadata.name: missing or not a string")))?
            .to_string();
        let invalid = |error: FieldError| ResourceError::Invalid {
            kind,
            name: name.clone(),
            error,
        };
        let metadata: ObjectMeta = from_section(metadata_value, "metadata").map_err(invalid)?;
        let spec = map
            .remove("spec")
            .unwrap_or(Value::Object(Default::default()));
        map.remove("status");
        if let Some(extra) = map.keys().next() {
            return Err(invalid(FieldError::new(extra.clone(), "unknown field")));
        }
        fn object<S: DeserializeOwned>(
            api_version: ApiVersion,
            metadata: ObjectMeta,
            spec: Value,
        ) -> Result<Object<S>, FieldError> {
            Ok(Object {
                api_version,
                metadata,
                spec: from_section(spec, "spec")?,
            })
        }
        match kind {
            Kind::Node => object(api_version, metadata, spec).map(Resource::Node),
            Kind::BgpConfiguration => {
                object(api_version, metadata, spec).map(Resource::BgpConfiguration)
            }
            Kind::BgpPeer => object(api_version, metadata, spec).map(Resource::BgpPeer),
            Kind::IpPool => {
                let mut spec = spec;
                if let Value::Object(fields) = &mut spec {
                    drop_default_pool_fields(fields).map_err(invalid)?;
                    if let Some(extra) = fields
                        .keys()
                        .find(|k| !IP_POOL_FIELDS.contains(&k.as_str()))
                    {
                        return Err(invalid(FieldError::new(
                            format!("spec.{extra}"),
                            format!(
                                "unknown field, expected one of {}",
                                IP_POOL_FIELDS.join(", ")
                            ),
                        )));
                    }
                }
                object(api_version, metadata, spec).map(Resource::IpPool)
            }
            Kind::BgpFilter => object(api_version, metadata, spec).map(Resource::BgpFilter),
            Kind::WorkloadEndpoint => {
                object(api_version, metadata, spec).map(Resource::WorkloadEndpoint)
            }
        }
        .map_err(invalid)
    }
}

impl Serialize for Resource {
    fn serialize<Ser: serde::Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        self.to_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Resource {
    /// Reads (without validating values) one manifest.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Resource::from_value(value, 1).map_err(serde::de::Error::custom)
    }
}

/// A Kubernetes object name: dot-separated parts of lowercase alphanumerics and `-`, each
/// starting and ending alphanumeric, at most 253 bytes in all.
fn is_object_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// A DNS label (RFC 1123): what a Kubernetes namespace name is.
fn is_dns_label(name: &str) -> bool {
    is_dns_subdomain(name) && !name.contains('.')
}

/// Label keys as Kubernetes: an optional DNS-subdomain prefix and `/`, then a name of up to
/// 63 alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if !is_dns_subdomain(p) {
            return false;
        }
    }
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphanumeric)
        && name
            .as_bytes()
            .last()
            .is_some_and(u8::is_ascii_alphanumeric)
}

/// Deserialises one section (`metadata` or `spec`), turning serde's message into a
/// [`FieldError`] with a path (`spec.bgp.asNumbr`, `spec.exportV4[1].prefixLength`).
fn from_section<T: DeserializeOwned>(value: Value, section: &str) -> Result<T, FieldError> {
    match serde_json::from_value::<T>(value.clone()) {
        Ok(t) => Ok(t),
        Err(e) => {
            let message = e.to_string();
            let mut path = Vec::new();
            locate::<T>(&value, &message, &mut path);
            let mut field = section.to_string();
            for seg in path {
                match seg {
                    Seg::Key(k) => {
                        field.push('.');
                        field.push_str(&k);
                    }
                    Seg::Index(i) => field.push_str(&format!("[{i}]")),
                }
            }
            Err(FieldError::new(field, message))
        }
    }
}

/// One step of a field path.
#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

fn remove_at(value: &mut Value, path: &[Seg]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut v = value;
    for seg in parents {
        let next = match (seg, v) {
            (Seg::Key(k), Value::Object(m)) => m.get_mut(k),
            (Seg::Index(i), Value::Array(a)) => a.get_mut(*i),
            _ => None,
        };
        match next {
            Some(n) => v = n,
            None => return,
        }
    }
    match (last, v) {
        (Seg::Key(k), Value::Object(m)) => {
            m.remove(k);
        }
        (Seg::Index(i), Value::Array(a)) if *i < a.len() => {
            a.remove(*i);
        }
        _ => {}
    }
}

fn value_at<'a>(value: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, seg| match (seg, v) {
        (Seg::Key(k), Value::Object(m)) => m.get(k),
        (Seg::Index(i), Value::Array(a)) => a.get(*i),
        _ => None,
    })
}

/// serde reports what is wrong but not where. Finds where by removing one field at a time
/// (descending from the section root): the deepest field whose removal changes or clears the
/// error is the culprit. Only runs on the error path, on manifest-sized values.
fn locate<T: DeserializeOwned>(root: &Value, message: &str, path: &mut Vec<Seg>) {
    // Each round descends one level (depth is bounded by the parsers' recursion limits);
    // the trial budget bounds the work a huge hostile manifest can cause.
    let mut budget = 2048usize;
    loop {
        let children: Vec<Seg> = match value_at(root, path) {
            Some(Value::Object(m)) => m.keys().cloned().map(Seg::Key).collect(),
            Some(Value::Array(a)) => (0..a.len()).map(Seg::Index).collect(),
            _ => return,
        };
        let culprit = children.into_iter().find(|child| {
            if budget == 0 {
                return false;
            }
            budget -= 1;
            let mut trial = root.clone();
            path.push(child.clone());
            remove_at(&mut trial, path);
            path.pop();
            match serde_json::from_value::<T>(trial) {
                Ok(_) => true,
                Err(e) => e.to_string() != message,
            }
        });
        match culprit {
            Some(c) => path.push(c),
            None => return,
        }
    }
}

/// Parses a manifest stream and validates every resource. YAML documents are separated by
/// `---`; text starting with `{` or `[` is read as JSON (an object or an array of objects).
/// Empty documents are skipped; `List`/`<Kind>List` documents are flattened.
pub fn parse_manifests(text: &str) -> Result<Vec<Resource>, ResourceError> {
    check_manifests(text)?.into_iter().collect()
}

/// As [`parse_manifests`], but each resource is read and validated on its own, so that a
/// caller can name every bad one (`routectl validate`); only a stream that is not YAML or
/// JSON at all fails as a whole.
pub fn check_manifests(text: &str) -> Result<Vec<Result<Resource, ResourceError>>, ResourceError> {
    let documents = read_documents(text)?;
    let mut out = Vec::new();
    for (i, doc) in documents.into_iter().enumerate() {
        let document = i + 1;
        match flatten_list(doc, document) {
            Ok(items) => out.extend(items.into_iter().map(|item| {
                Resource::from_value(item, document).and_then(|r| r.validate().map(|()| r))
            })),
            Err(e) => out.push(Err(e)),
        }
    }
    Ok(out)
}

fn read_documents(text: &str) -> Result<Vec<Value>, ResourceError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let value: Value = serde_json::from_str(text).map_err(|e| ResourceError::Syntax {
            document: 1,
            message: e.to_string(),
        })?;
        return Ok(match value {
            Value::Array(items) => items,
            other => vec![other],
        });
    }
    let mut out = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| ResourceError::Syntax {
            document: i + 1,
            message: e.to_string(),
        })?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

fn flatten_list(doc: Value, document: usize) -> Result<Vec<Value>, ResourceError> {
    let is_list = doc
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k == "List" || k.ends_with("List"));
    if !is_list {
        return Ok(vec![doc]);
    }
    match doc.get("items") {
        Some(Value::Array(items)) => Ok(items.clone()),
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(_) => Err(ResourceError::Syntax {
            document,
            message: "items: must be a list".into(),
        }),
    }
}

/// Writes resources as a YAML stream, one document each, separated by `---`.
pub fn to_yaml(resources: &[Resource]) -> Result<String, ResourceError> {
    let mut out = String::new();
    for (i, r) in resources.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        let doc = serde_norway::to_string(&r.to_value()).map_err(|e| ResourceError::Syntax {
            document: i + 1,
            message: e.to_string(),
        })?;
        out.push_str(&doc);
    }
    Ok(out)
}

/// Writes resources as JSON: one object for a single resource, else an array.
pub fn to_json(resources: &[Resource]) -> String {
    let value = match resources {
        [one] => one.to_value(),
        many => Value::Array(many.iter().map(Resource::to_value).collect()),
    };
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ip_pool_field_list_matches_spec() {
        let full = IpPoolSpec {
            cidr: "10.0.0.0/16".into(),
            block_size: Some(26),
            ipip_mode: Some("Never".into()),
            vxlan_mode: Some("Never".into()),
            nat_outgoing: true,
            disabled: true,
            node_selector: Some("all()".into()),
        };
        let value = serde_json::to_value(full).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = IP_POOL_FIELDS.to_vec();
        expected.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, expected);
    }

    #[test]
    fn locate_names_nested_fields() {
        let v: Value = serde_json::json!({"bgp": {"ipv4Address": "10.0.0.1/24", "asNumber": true}});
        let e = from_section::<NodeSpec>(v, "spec").unwrap_err();
        assert_eq!(e.field, "spec.bgp.asNumber");
        let v: Value = serde_json::json!({"exportV4": [{"action": "Accept"}, {"action": "Reject", "prefixLength": {"min": "x"}}]});
        let e = from_section::<BgpFilterSpec>(v, "spec").unwrap_err();
        assert_eq!(e.field, "spec.exportV4[1].prefixLength.min");
        let v: Value = serde_json::json!({"importV6": [{"cidr": "fd00::/8"}]});
        let e = from_section::<BgpFilterSpec>(v, "spec").unwrap_err();
        assert_eq!(e.field, "spec.importV6[0]");
        assert!(e.message.contains("missing field `action`"), "{e}");
    }

    #[test]
    fn label_keys() {
        for ok in ["rack", "topology.kubernetes.io/zone", "a_b.c-d", "x"] {
            assert!(is_label_key(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "Bad Key", "UPPER_/x", "a/b/c/"] {
            assert!(!is_label_key(bad), "{bad}");
        }
    }
}

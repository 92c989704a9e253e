//! `get`, `create`, `apply`, `replace` and `delete` on the datastore's resources, with
//! calicoctl's semantics and messages:
//!
//! - `create` fails on a resource that exists (unless `--skip-exists`), `replace` on one that
//!   does not; `apply` creates or else updates. Updates are compare-and-swap on the stored
//!   version: a manifest carrying `metadata.resourceVersion` must match it exactly (no retry,
//!   as calicoctl: the operator edited an older copy); without one, the current version is
//!   read and the write retried a bounded number of times when another writer got in first.
//! - Metadata the datastore owns (`uid`, `creationTimestamp`) is kept across updates and
//!   dropped from manifests on create, as calicoctl's `prepareMetadataForCreate` does.
//! - `create`, `apply` and `delete` go on after a failed resource and report every error;
//!   `replace` stops at the first, as calicoctl.
//! - Listings print as calicoctl prints them: one table for a kind (`<Kind>List` in YAML and
//!   JSON), one table per named resource.
//!
//! The functions return text rather than printing, so the formats are unit-testable.

use serde_json::Value;

use crate::daemon::cluster::{record_value, resource_of};
use datastore::resource::{Kind, Resource, ResourceError, CALICO_API_VERSION, DEFAULT_AS_NUMBER};
use datastore::{Datastore, DatastoreError, Record};

use super::table::column_table;
use super::RoutectlError;

/// How many times an update without a resource version is retried after losing a
/// compare-and-swap race (calicoctl retries 5 times).
pub const UPDATE_ATTEMPTS: usize = 5;

/// `-o` of `get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputFormat {
    /// The default table (`ps`).
    Ps,
    /// The table with more columns.
    Wide,
    /// YAML manifests.
    Yaml,
    /// JSON manifests.
    Json,
    /// The table with these columns, by heading (`custom-columns=NAME,ASN`).
    CustomColumns(Vec<String>),
    /// A Go template run over what `json` prints (`go-template=...`, or the contents of
    /// `go-template-file=...`).
    GoTemplate(String),
}

impl OutputFormat {
    /// Parses `ps`, `wide`, `yaml`/`yml`, `json`, `custom-columns=A,B`, `go-template=T`,
    /// `go-template-file=PATH` (the file is read here).
    pub fn parse(text: &str) -> Result<Self, RoutectlError> {
        match text {
            "ps" => return Ok(OutputFormat::Ps),
            "wide" => return Ok(OutputFormat::Wide),
            "yaml" | "yml" => return Ok(OutputFormat::Yaml),
            "json" => return Ok(OutputFormat::Json),
            _ => {}
        }
        match text.split_once('=') {
            Some(("custom-columns", list)) => {
                let columns: Vec<String> = list
                    .split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect();
                if columns.is_empty() {
                    return Err(RoutectlError::Usage(
                        "custom-columns needs at least one heading (custom-columns=NAME,ASN)"
                            .into(),
                    ));
                }
                Ok(OutputFormat::CustomColumns(columns))
            }
            Some(("go-template", template)) => Ok(OutputFormat::GoTemplate(template.to_string())),
            Some(("go-template-file", path)) => std::fs::read_to_string(path)
                .map(OutputFormat::GoTemplate)
                .map_err(|source| RoutectlError::ReadFile {
                    path: path.to_string(),
                    source,
                }),
            _ => Err(RoutectlError::Usage(format!(
                "unrecognized output format '{text}' (expected ps, wide, yaml, json, \
                 custom-columns=..., go-template=... or go-template-file=...)"
            ))),
        }
    }
}

/// Which peers the v1 `--scope` option addresses (calicoctl v1 named peers by scope and IP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PeerScope {
    /// Peers of every node (no `node`, no `nodeSelector`).
    Global,
    /// Peers of one node (`node` set; `--node` says which).
    Node,
}

/// A resource named on the command line or in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceKey {
    /// Its kind.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// Its namespace (WorkloadEndpoints only; `default` when not given, as calicoctl).
    pub namespace: Option<String>,
    /// The version the operator last saw, when a manifest carries one.
    pub resource_version: Option<String>,
}

impl ResourceKey {
    /// A resource named on the command line.
    pub fn named(kind: Kind, name: &str) -> Self {
        ResourceKey {
            kind,
            name: name.to_string(),
            namespace: None,
            resource_version: None,
        }
    }

    /// A resource named on the command line with `-n <namespace>`, which only namespaced
    /// kinds take (calicoctl: `<Kind> is not namespaced`).
    pub fn named_in(
        kind: Kind,
        name: &str,
        namespace: Option<&str>,
    ) -> Result<Self, RoutectlError> {
        if namespace.is_some() && kind != Kind::WorkloadEndpoint {
            return Err(RoutectlError::Usage(format!("{kind} is not namespaced")));
        }
        let mut key = Self::named(kind, name);
        key.namespace = namespace.map(str::to_string);
        Ok(key)
    }

    /// The key of a manifest.
    pub fn of(r: &Resource) -> Self {
        ResourceKey {
            kind: r.kind(),
            name: r.name().to_string(),
            namespace: r.metadata().namespace.clone(),
            resource_version: r.resource_version().map(str::to_string),
        }
    }

    /// The datastore record holding it (see [`Resource::record_name`]).
    pub fn record_name(&self) -> String {
        match self.kind {
            Kind::WorkloadEndpoint => datastore::resource::record_name(
                self.namespace
                    .as_deref()
                    .unwrap_or(datastore::resource::DEFAULT_NAMESPACE),
                &self.name,
            ),
            _ => self.name.clone(),
        }
    }

    fn id(&self) -> String {
        format!("{}({})", self.kind, self.name)
    }
}

/// What a get prints: a whole kind (a `<Kind>List`) or single resources.
#[derive(Debug, Clone, PartialEq)]
pub enum Printed {
    /// Every resource of a kind, read at `revision`.
    List {
        kind: Kind,
        revision: u64,
        items: Vec<Resource>,
    },
    /// One resource.
    Single(Box<Resource>),
}

/// The outcome of a `get`: what to print, and what could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GetResult {
    pub printed: Vec<Printed>,
    pub errors: Vec<String>,
}

fn stored_error(kind: Kind, name: &str, e: ResourceError) -> RoutectlError {
    RoutectlError::Stored {
        id: format!("{kind}({name})"),
        source: Box::new(e),
    }
}

/// Reads one resource; `None` when absent.
pub fn read_resource(
    ds: &dyn Datastore,
    kind: Kind,
    name: &str,
) -> Result<Option<Resource>, RoutectlError> {
    match ds.get(kind.as_str(), name) {
        Ok(record) => resource_of(&record)
            .map(Some)
            .map_err(|e| stored_error(kind, name, e)),
        Err(DatastoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Every resource of a kind, with the listing's revision; records that no longer parse are
/// reported in the last element instead of failing the whole listing.
pub fn list_resources(
    ds: &dyn Datastore,
    kind: Kind,
) -> Result<(u64, Vec<Resource>, Vec<String>), RoutectlError> {
    let listing = ds.list(kind.as_str())?;
    let mut items = Vec::new();
    let mut problems = Vec::new();
    for record in &listing.records {
        match resource_of(record) {
            Ok(r) => items.push(r),
            Err(e) => problems.push(stored_error(kind, &record.name, e).to_string()),
        }
    }
    Ok((listing.revision, items, problems))
}

/// The cluster's default AS: the `default` BGPConfiguration's `asNumber`, else 64512.
pub fn default_as_number(ds: &dyn Datastore) -> Result<u32, RoutectlError> {
    Ok(
        match read_resource(ds, Kind::BgpConfiguration, "default")? {
            Some(Resource::BgpConfiguration(c)) => c.spec.as_number().ok().flatten(),
            _ => None,
        }
        .unwrap_or(DEFAULT_AS_NUMBER),
    )
}

/// `get <kind> [names]`, or `get -f` (resources given by key).
pub fn get(
    ds: &dyn Datastore,
    kind: Kind,
    names: &[String],
    skip_not_exists: bool,
) -> Result<GetResult, RoutectlError> {
    if names.is_empty() {
        let (revision, items, errors) = list_resources(ds, kind)?;
        return Ok(GetResult {
            printed: vec![Printed::List {
                kind,
                revision,
                items,
            }],
            errors,
        });
    }
    let keys: Vec<ResourceKey> = names.iter().map(|n| ResourceKey::named(kind, n)).collect();
    get_keys(ds, &keys, skip_not_exists)
}

/// Reads the named resources one by one.
pub fn get_keys(
    ds: &dyn Datastore,
    keys: &[ResourceKey],
    skip_not_exists: bool,
) -> Result<GetResult, RoutectlError> {
    let mut result = GetResult::default();
    for key in keys {
        match read_resource(ds, key.kind, &key.record_name()) {
            Ok(Some(r)) => result.printed.push(Printed::Single(Box::new(r))),
            Ok(None) if skip_not_exists => {}
            Ok(None) => result
                .errors
                .push(format!("resource does not exist: {}", key.id())),
            Err(e @ RoutectlError::Stored { .. }) => result.errors.push(e.to_string()),
            Err(e) => return Err(e),
        }
    }
    Ok(result)
}

/// The peers a v1-style `--scope` / `--node` selection addresses, optionally only those whose
/// `peerIP` is one of `peer_ips` (v1 named peers by address).
pub fn scoped_peers(
    ds: &dyn Datastore,
    scope: Option<PeerScope>,
    node: Option<&str>,
    peer_ips: &[String],
) -> Result<(u64, Vec<Resource>, Vec<String>), RoutectlError> {
    let scope = match (scope, node) {
        (Some(PeerScope::Global), Some(_)) => {
            return Err(RoutectlError::Usage(
                "--node cannot be used with --scope=global".into(),
            ))
        }
        (Some(s), _) => s,
        (None, _) => PeerScope::Node,
    };
    let wanted: Vec<std::net::IpAddr> = peer_ips
        .iter()
        .map(|t| {
            t.parse().map_err(|_| {
                RoutectlError::Usage(format!(
                    "{t:?} is not an IP address (with --scope, BGP peers are named by peer IP)"
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let (revision, items, problems) = list_resources(ds, Kind::BgpPeer)?;
    let items = items
        .into_iter()
        .filter(|r| {
            let Resource::BgpPeer(p) = r else {
                return false;
            };
            let in_scope = match scope {
                PeerScope::Global => p.spec.node.is_none() && p.spec.node_selector.is_none(),
                PeerScope::Node => match node {
                    Some(n) => p.spec.node.as_deref() == Some(n),
                    None => p.spec.node.is_some(),
                },
            };
            let address_matches = wanted.is_empty()
                || matches!(p.spec.peer_address(), Ok(Some(a)) if wanted.contains(&a.ip));
            in_scope && address_matches
        })
        .collect();
    Ok((revision, items, problems))
}

// ---- output ---------------------------------------------------------------------------

/// calicoctl's table headings for a kind.
pub fn headings(kind: Kind, wide: bool) -> &'static [&'static str] {
    match (kind, wide) {
        (Kind::Node, false) => &["NAME"],
        (Kind::Node, true) => &["NAME", "ASN", "IPV4", "IPV6"],
        (Kind::BgpPeer, _) => &["NAME", "PEERIP", "NODE", "ASN"],
        (Kind::IpPool, false) => &["NAME", "CIDR", "SELECTOR"],
        (Kind::IpPool, true) => &[
            "NAME",
            "CIDR",
            "NAT",
            "IPIPMODE",
            "VXLANMODE",
            "DISABLED",
            "DISABLEBGPEXPORT",
            "SELECTOR",
        ],
        (Kind::BgpConfiguration, _) => &["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"],
        (Kind::BgpFilter, _) => &["NAME", "NUMEXPORT", "NUMIMPORT"],
        (Kind::WorkloadEndpoint, false) => &["WORKLOAD", "NODE", "NETWORKS", "INTERFACE"],
        (Kind::WorkloadEndpoint, true) => &[
            "NAME",
            "WORKLOAD",
            "NODE",
            "NETWORKS",
            "INTERFACE",
            "PROFILES",
            "NATS",
        ],
    }
}

/// An AS number as calicoctl prints it: the decimal value (an asdot `"1.10"` prints as
/// `65546`); the text as written when it does not parse.
fn as_text(asn: &datastore::resource::AsNumberText) -> String {
    asn.parse("asNumber")
        .map(|n| n.to_string())
        .unwrap_or_else(|_| asn.to_string())
}

/// One table cell, as calicoctl's column templates compute it.
pub fn cell(r: &Resource, heading: &str, default_as: u32) -> String {
    match (r, heading) {
        (_, "NAME") => r.name().to_string(),
        (Resource::Node(n), "ASN") => match &n.spec.bgp {
            None => String::new(),
            Some(b) => match &b.as_number {
                Some(a) => as_text(a),
                // Inherited from the global default: calicoctl shows it in parentheses.
                None => format!("({default_as})"),
            },
        },
        (Resource::Node(n), "IPV4") => n
            .spec
            .bgp
            .as_ref()
            .and_then(|b| b.ipv4_address.clone())
            .unwrap_or_default(),
        (Resource::Node(n), "IPV6") => n
            .spec
            .bgp
            .as_ref()
            .and_then(|b| b.ipv6_address.clone())
            .unwrap_or_default(),
        (Resource::BgpPeer(p), "PEERIP") => p.spec.peer_ip.clone().unwrap_or_default(),
        (Resource::BgpPeer(p), "NODE") => match (&p.spec.node, &p.spec.node_selector) {
            (Some(node), _) => node.clone(),
            (None, Some(selector)) => selector.clone(),
            (None, None) => "(global)".into(),
        },
        // A peerSelector peer has no AS of its own; calicoctl prints the zero value.
        (Resource::BgpPeer(p), "ASN") => p.spec.as_number.as_ref().map_or("0".into(), as_text),
        (Resource::IpPool(p), "CIDR") => p.spec.cidr.clone(),
        (Resource::IpPool(p), "NAT") => p.spec.nat_outgoing.to_string(),
        (Resource::IpPool(p), "IPIPMODE") => {
            p.spec.ipip_mode.clone().unwrap_or_else(|| "Never".into())
        }
        (Resource::IpPool(p), "VXLANMODE") => {
            p.spec.vxlan_mode.clone().unwrap_or_else(|| "Never".into())
        }
        (Resource::IpPool(p), "DISABLED") => p.spec.disabled.to_string(),
        // Pool blocks are always exported here (the field is refused unless false).
        (Resource::IpPool(_), "DISABLEBGPEXPORT") => "false".into(),
        // An unset selector selects every node (Calico defaults it to `all()`).
        (Resource::IpPool(p), "SELECTOR") => p
            .spec
            .node_selector
            .clone()
            .unwrap_or_else(|| "all()".into()),
        (Resource::BgpConfiguration(c), "LOGSEVERITY") => {
            c.spec.log_severity_screen.clone().unwrap_or_default()
        }
        (Resource::BgpConfiguration(c), "MESHENABLED") => c
            .spec
            .node_to_node_mesh_enabled
            .map_or("-".into(), |b| b.to_string()),
        (Resource::BgpConfiguration(c), "ASNUMBER") => {
            c.spec.as_number.as_ref().map_or("-".into(), as_text)
        }
        (Resource::BgpFilter(f), "NUMEXPORT") => {
            (f.spec.export_v4.len() + f.spec.export_v6.len()).to_string()
        }
        (Resource::BgpFilter(f), "NUMIMPORT") => {
            (f.spec.import_v4.len() + f.spec.import_v6.len()).to_string()
        }
        // calicoctl: `{{if .Spec.Workload}}{{.Spec.Workload}}{{else}}{{.Spec.Pod}}{{end}}`.
        (Resource::WorkloadEndpoint(w), "WORKLOAD") => {
            if w.spec.workload.is_empty() {
                w.spec.pod.clone()
            } else {
                w.spec.workload.clone()
            }
        }
        (Resource::WorkloadEndpoint(w), "NODE") => w.spec.node.clone(),
        (Resource::WorkloadEndpoint(w), "NETWORKS") => w.spec.ip_networks.join(","),
        (Resource::WorkloadEndpoint(w), "INTERFACE") => w.spec.interface_name.clone(),
        (Resource::WorkloadEndpoint(w), "PROFILES") => w.spec.profiles.join(","),
        _ => String::new(),
    }
}

fn table(kind: Kind, items: &[&Resource], wide: bool, default_as: u32) -> String {
    let heads = headings(kind, wide);
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|r| heads.iter().map(|h| cell(r, h, default_as)).collect())
        .collect();
    column_table(heads, &rows)
}

/// The `<Kind>List` manifest calicoctl prints for a listing.
pub fn list_value(kind: Kind, revision: u64, items: &[Resource]) -> Value {
    let mut map = serde_json::Map::new();
    map.insert("apiVersion".into(), Value::from(CALICO_API_VERSION));
    map.insert(
        "items".into(),
        Value::Array(items.iter().map(Resource::to_value).collect()),
    );
    map.insert("kind".into(), Value::from(format!("{kind}List")));
    map.insert(
        "metadata".into(),
        serde_json::json!({ "resourceVersion": revision.to_string() }),
    );
    Value::Object(map)
}

fn printed_value(p: &Printed) -> Value {
    match p {
        Printed::List {
            kind,
            revision,
            items,
        } => list_value(*kind, *revision, items),
        Printed::Single(r) => r.to_value(),
    }
}

/// Renders what a get found in the requested format (`default_as` fills the Node ASN column).
pub fn render(
    printed: &[Printed],
    format: &OutputFormat,
    default_as: u32,
) -> Result<String, RoutectlError> {
    let value = || match printed {
        [one] => printed_value(one),
        many => Value::Array(many.iter().map(printed_value).collect()),
    };
    Ok(match format {
        OutputFormat::CustomColumns(columns) => {
            super::output::custom_columns(printed, columns, default_as)?
        }
        OutputFormat::GoTemplate(template) => super::output::go_template(template, &value())?,
        OutputFormat::Ps | OutputFormat::Wide => {
            let wide = *format == OutputFormat::Wide;
            printed
                .iter()
                .map(|p| match p {
                    Printed::List { kind, items, .. } => {
                        table(*kind, &items.iter().collect::<Vec<_>>(), wide, default_as)
                    }
                    Printed::Single(r) => table(r.kind(), &[r], wide, default_as),
                })
                .collect()
        }
        OutputFormat::Yaml | OutputFormat::Json => {
            // One object as itself, several as a sequence (calicoctl's printers).
            let value = value();
            if *format == OutputFormat::Json {
                let mut s = serde_json::to_string_pretty(&value).unwrap_or_default();
                s.push('\n');
                s
            } else {
                serde_norway::to_string(&value).unwrap_or_default()
            }
        }
    })
}

// ---- writes ---------------------------------------------------------------------------

/// A resource-changing command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteAction {
    Create,
    Apply,
    Replace,
    Delete,
}

impl WriteAction {
    fn verb(self) -> &'static str {
        match self {
            WriteAction::Create => "create",
            WriteAction::Apply => "apply",
            WriteAction::Replace => "replace",
            WriteAction::Delete => "delete",
        }
    }

    fn past(self) -> &'static str {
        match self {
            WriteAction::Create => "created",
            WriteAction::Apply => "applied",
            WriteAction::Replace => "replaced",
            WriteAction::Delete => "deleted",
        }
    }
}

/// Options of the write commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// `create --skip-exists`: an existing resource counts as done.
    pub skip_exists: bool,
    /// `delete --skip-not-exists`: a missing resource counts as done.
    pub skip_not_exists: bool,
}

/// What a write command did, to be reported as calicoctl does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteReport {
    pub action: WriteAction,
    /// Resources given.
    pub total: usize,
    /// Resources done (including skipped ones, as calicoctl counts them).
    pub handled: usize,
    /// One message per failed resource.
    pub errors: Vec<String>,
    /// The kind, when every resource is of one kind.
    pub single_kind: Option<Kind>,
}

impl WriteReport {
    /// `(stdout, stderr, success)` in calicoctl's words.
    pub fn render(&self) -> (String, String, bool) {
        let (verb, past) = (self.action.verb(), self.action.past());
        let errs = format!("[{}]", self.errors.join(" "));
        if self.total == 0 {
            return ("No resources specified\n".into(), String::new(), true);
        }
        if self.handled == 0 {
            let msg = match (self.total, self.single_kind) {
                (1, Some(k)) => format!("Failed to {verb} '{k}' resource: {errs}\n"),
                (_, Some(k)) => format!("Failed to {verb} any '{k}' resources: {errs}\n"),
                _ => format!("Failed to {verb} any resources: {errs}\n"),
            };
            return (String::new(), msg, false);
        }
        if self.errors.is_empty() {
            let out = match self.single_kind {
                Some(k) => format!("Successfully {past} {} '{k}' resource(s)\n", self.handled),
                None => format!("Successfully {past} {} resource(s)\n", self.handled),
            };
            return (out, String::new(), true);
        }
        let out = match self.single_kind {
            Some(k) => format!(
                "Partial success: {past} {} out of {} '{k}' resources:\n",
                self.handled, self.total
            ),
            None => format!(
                "Partial success: {past} {} out of {} resources:\n",
                self.handled, self.total
            ),
        };
        (out, format!("Hit error: {errs}\n"), false)
    }
}

fn single_kind(kinds: impl Iterator<Item = Kind>) -> Option<Kind> {
    let mut kinds = kinds.peekable();
    let first = *kinds.peek()?;
    kinds.all(|k| k == first).then_some(first)
}

/// Why one resource's write failed.
enum WriteError {
    Exists,
    Missing,
    Conflict { given: String, stored: u64 },
    Contended,
    Datastore(DatastoreError),
}

impl WriteError {
    fn message(&self, key: &ResourceKey) -> String {
        let id = key.id();
        match self {
            WriteError::Exists => format!("resource already exists: {id}"),
            WriteError::Missing => format!("resource does not exist: {id}"),
            WriteError::Conflict { given, stored } => format!(
                "update conflict: {id}: resource version '{given}' is out of date (latest: {stored}); \
                 update the manifest in order to make changes"
            ),
            WriteError::Contended => format!(
                "update conflict: {id}: changed by another writer {UPDATE_ATTEMPTS} times in a row"
            ),
            WriteError::Datastore(e) => format!("{id}: {e}"),
        }
    }
}

impl From<DatastoreError> for WriteError {
    fn from(e: DatastoreError) -> Self {
        match e {
            DatastoreError::NotFound { .. } => WriteError::Missing,
            DatastoreError::AlreadyExists { .. } => WriteError::Exists,
            other => WriteError::Datastore(other),
        }
    }
}

/// The manifest as stored on create: only name, labels and annotations of its metadata.
fn for_create(r: &Resource) -> Resource {
    let mut r = r.clone();
    let meta = r.metadata_mut();
    meta.resource_version = None;
    meta.uid = None;
    meta.creation_timestamp = None;
    r
}

/// The value to store on update: the manifest, keeping the metadata the datastore owns.
fn merged_value(stored: &Record, r: &Resource) -> Value {
    let mut value = record_value(&for_create(r));
    if let (Some(old), Some(Value::Object(meta))) = (
        stored.value.get("metadata").and_then(Value::as_object),
        value.get_mut("metadata"),
    ) {
        for key in ["uid", "creationTimestamp"] {
            if let Some(v) = old.get(key) {
                meta.insert(key.into(), v.clone());
            }
        }
    }
    value
}

fn create_one(ds: &dyn Datastore, r: &Resource) -> Result<(), WriteError> {
    ds.create(
        r.kind().as_str(),
        &r.record_name(),
        record_value(&for_create(r)),
    )?;
    Ok(())
}

fn update_one(ds: &dyn Datastore, r: &Resource) -> Result<(), WriteError> {
    let record_name = r.record_name();
    let (kind, name) = (r.kind().as_str(), record_name.as_str());
    let given = r.resource_version().map(str::to_string);
    for _ in 0..UPDATE_ATTEMPTS {
        let stored = ds.get(kind, name)?;
        if let Some(given) = &given {
            if *given != stored.version.to_string() {
                return Err(WriteError::Conflict {
                    given: given.clone(),
                    stored: stored.version,
                });
            }
        }
        match ds.update(kind, name, merged_value(&stored, r), stored.version) {
            Ok(_) => return Ok(()),
            Err(DatastoreError::Conflict { actual, .. }) => {
                if let Some(given) = &given {
                    return Err(WriteError::Conflict {
                        given: given.clone(),
                        stored: actual,
                    });
                }
                tracing::debug!(kind, name, "update lost a race, retrying");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(WriteError::Contended)
}

fn delete_one(ds: &dyn Datastore, key: &ResourceKey) -> Result<(), WriteError> {
    let expected = match &key.resource_version {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| WriteError::Conflict {
            given: v.clone(),
            stored: 0,
        })?),
    };
    ds.delete(key.kind.as_str(), &key.record_name(), expected)?;
    Ok(())
}

/// Runs `create`, `apply` or `replace` on manifests.
pub fn write(
    ds: &dyn Datastore,
    action: WriteAction,
    resources: &[Resource],
    options: WriteOptions,
) -> WriteReport {
    let mut report = WriteReport {
        action,
        total: resources.len(),
        handled: 0,
        errors: Vec::new(),
        single_kind: single_kind(resources.iter().map(Resource::kind)),
    };
    for r in resources {
        let result = match action {
            WriteAction::Create => create_one(ds, r),
            WriteAction::Replace => update_one(ds, r),
            WriteAction::Apply => match create_one(ds, r) {
                Err(WriteError::Exists) => update_one(ds, r),
                other => other,
            },
            WriteAction::Delete => delete_one(ds, &ResourceKey::of(r)),
        };
        match result {
            Ok(()) => report.handled += 1,
            Err(WriteError::Exists) if options.skip_exists => report.handled += 1,
            Err(WriteError::Missing) if options.skip_not_exists => report.handled += 1,
            Err(e) => {
                report.errors.push(e.message(&ResourceKey::of(r)));
                if action == WriteAction::Replace {
                    break;
                }
            }
        }
    }
    report
}

/// `delete` of resources given by key (on the command line, or by the v1 peer lookup).
pub fn delete(ds: &dyn Datastore, keys: &[ResourceKey], options: WriteOptions) -> WriteReport {
    let mut report = WriteReport {
        action: WriteAction::Delete,
        total: keys.len(),
        handled: 0,
        errors: Vec::new(),
        single_kind: single_kind(keys.iter().map(|k| k.kind)),
    };
    for key in keys {
        match delete_one(ds, key) {
            Ok(()) => report.handled += 1,
            Err(WriteError::Missing) if options.skip_not_exists => report.handled += 1,
            Err(e) => report.errors.push(e.message(key)),
        }
    }
    report
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use datastore::resource::parse_manifests;
    use datastore::MemoryDatastore;

    fn peers() -> Vec<Resource> {
        parse_manifests(
            "apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: rack1-tor}
spec: {peerIP: 192.0.2.1, asNumber: 64513}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: node1-peer}
spec: {node: node-1, peerIP: 192.0.2.2, asNumber: 64514}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: rack-peers}
spec: {nodeSelector: rack == 'r1', peerIP: 192.0.2.3, asNumber: 64515}
",
        )
        .unwrap()
    }

    #[test]
    fn create_apply_replace_delete_messages() {
        let ds = MemoryDatastore::new();
        let ps = peers();
        let r = write(&ds, WriteAction::Create, &ps, WriteOptions::default());
        assert_eq!(
            r.render().0,
            "Successfully created 3 'BGPPeer' resource(s)\n"
        );
        let r = write(&ds, WriteAction::Create, &ps[..1], WriteOptions::default());
        let (out, err, ok) = r.render();
        assert!(!ok);
        assert_eq!(out, "");
        assert_eq!(
            err,
            "Failed to create 'BGPPeer' resource: [resource already exists: BGPPeer(rack1-tor)]\n"
        );
        let r = write(
            &ds,
            WriteAction::Create,
            &ps[..1],
            WriteOptions {
                skip_exists: true,
                ..Default::default()
            },
        );
        assert!(r.render().2);
        assert_eq!(
            write(&ds, WriteAction::Apply, &ps, WriteOptions::default())
                .render()
                .0,
            "Successfully applied 3 'BGPPeer' resource(s)\n"
        );
        let keys = vec![ResourceKey::of(&ps[0])];
        assert_eq!(
            delete(&ds, &keys, WriteOptions::default()).render().0,
            "Successfully deleted 1 'BGPPeer' resource(s)\n"
        );
        let (_, err, ok) =
            write(&ds, WriteAction::Replace, &ps[..1], WriteOptions::default()).render();
        assert!(!ok);
        assert!(
            err.contains("resource does not exist: BGPPeer(rack1-tor)"),
            "{err}"
        );
    }

    #[test]
    fn replace_with_a_stale_resource_version_is_a_conflict() {
        let ds = MemoryDatastore::new();
        let ps = peers();
        write(&ds, WriteAction::Create, &ps[..1], WriteOptions::default());
        let mut stale = ps[0].clone();
        stale.metadata_mut().resource_version = Some("999".into());
        let r = write(&ds, WriteAction::Replace, &[stale], WriteOptions::default());
        assert!(
            r.errors[0].starts_with("update conflict: BGPPeer(rack1-tor)"),
            "{r:?}"
        );
        // With the current version it succeeds.
        let current = read_resource(&ds, Kind::BgpPeer, "rack1-tor")
            .unwrap()
            .unwrap();
        let r = write(
            &ds,
            WriteAction::Replace,
            &[current],
            WriteOptions::default(),
        );
        assert!(r.errors.is_empty(), "{r:?}");
    }

    #[test]
    fn peer_table_shows_global_node_and_selector() {
        let ps = peers();
        let out = render(
            &[Printed::List {
                kind: Kind::BgpPeer,
                revision: 3,
                items: ps,
            }],
            &OutputFormat::Ps,
            64512,
        )
        .unwrap();
        assert_eq!(
            out,
            "NAME         PEERIP      NODE           ASN     \n\
             rack1-tor    192.0.2.1   (global)       64513   \n\
             node1-peer   192.0.2.2   node-1         64514   \n\
             rack-peers   192.0.2.3   rack == 'r1'   64515   \n\n"
        );
    }

    #[test]
    fn scoped_lookup_finds_v1_peers() {
        let ds = MemoryDatastore::new();
        write(&ds, WriteAction::Create, &peers(), WriteOptions::default());
        let names = |scope, node, ips: &[&str]| {
            let ips: Vec<String> = ips.iter().map(|s| s.to_string()).collect();
            scoped_peers(&ds, scope, node, &ips)
                .unwrap()
                .1
                .iter()
                .map(|r| r.name().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(Some(PeerScope::Global), None, &[]), ["rack1-tor"]);
        assert_eq!(
            names(Some(PeerScope::Node), Some("node-1"), &["192.0.2.2"]),
            ["node1-peer"]
        );
        assert!(names(Some(PeerScope::Node), Some("node-2"), &["192.0.2.2"]).is_empty());
        assert!(scoped_peers(&ds, Some(PeerScope::Global), None, &["x".into()]).is_err());
    }
}

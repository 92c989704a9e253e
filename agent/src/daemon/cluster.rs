//! The cluster as routerd sees it: every resource of the datastore, typed, read in one pass;
//! and the node's own registration.
//!
//! routerd is level-triggered: on any datastore change it rereads the whole view and
//! recomputes what it wants (sessions, originations, routes) from scratch, then applies only
//! the difference. The resource kinds are small (nodes, peers, pools: hundreds to a few
//! thousand records), so a full reread is cheap and leaves no room for a missed or
//! misordered event to leave stale state behind (the lesson of confd's watch-driven
//! templates).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipam::IpPool;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tracing::{info, warn};

use datastore::resource::{
    BgpConfiguration, BgpFilter, BgpPeer, IpPoolResource, Kind, Node, NodeBgpSpec, Resource,
    ResourceError, WorkloadEndpoint, DEFAULT_AS_NUMBER,
};
use datastore::{Datastore, DatastoreError, Record, Revision};

/// How often a lost compare-and-swap on our own Node record is retried.
const REGISTER_RETRIES: usize = 16;

/// Every resource routerd acts on, typed. Resources that fail to parse or validate are left
/// out and reported in `problems` (one bad manifest must not stop the node).
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// The datastore revision the view was read at (the highest of the kinds' listings).
    pub revision: Revision,
    pub nodes: Vec<Node>,
    pub configs: Vec<BgpConfiguration>,
    pub peers: Vec<BgpPeer>,
    pub pools: Vec<IpPoolResource>,
    pub filters: Vec<BgpFilter>,
    /// Every node's workload endpoints (written by the CNI plugin).
    pub endpoints: Vec<WorkloadEndpoint>,
    /// This node's endpoints derived from its Pods, as Calico's Kubernetes datastore derives
    /// them (the pods Calico's CNI created); set by the daemon from the API server, not
    /// records of the datastore.
    pub pod_endpoints: Vec<WorkloadEndpoint>,
    pub problems: Vec<String>,
}

/// The value routerd stores for a resource: its manifest without the version, which the
/// datastore keeps alongside.
pub fn record_value(resource: &Resource) -> serde_json::Value {
    let mut value = resource.to_value();
    if let Some(meta) = value
        .get_mut("metadata")
        .and_then(serde_json::Value::as_object_mut)
    {
        meta.remove("resourceVersion");
    }
    value
}

/// A stored record as a resource, with `metadata.resourceVersion` set from the record.
pub fn resource_of(record: &Record) -> Result<Resource, ResourceError> {
    let mut resource = Resource::from_value(record.value.clone(), 1)?;
    resource.metadata_mut().resource_version = Some(record.version.to_string());
    Ok(resource)
}

impl ClusterView {
    /// Reads every kind. Fails only when the datastore itself fails.
    pub fn load(ds: &dyn Datastore) -> Result<ClusterView, DatastoreError> {
        let mut view = ClusterView::default();
        for kind in Kind::ALL {
            let listing = ds.list(kind.as_str())?;
            view.revision = view.revision.max(listing.revision);
            for record in &listing.records {
                let resource = match resource_of(record).and_then(|r| r.validate().map(|()| r)) {
                    Ok(r) => r,
                    Err(e) => {
                        view.problems.push(e.to_string());
                        continue;
                    }
                };
                match resource {
                    Resource::Node(o) => view.nodes.push(o),
                    Resource::BgpConfiguration(o) => view.configs.push(o),
                    Resource::BgpPeer(o) => view.peers.push(o),
                    Resource::IpPool(o) => view.pools.push(o),
                    Resource::BgpFilter(o) => view.filters.push(o),
                    Resource::WorkloadEndpoint(o) => view.endpoints.push(o),
                }
            }
        }
        Ok(view)
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.metadata.name == name)
    }

    /// The workload endpoints on `node`: its records, then its Pods' endpoints whose
    /// addresses no record has (a pod routerd's CNI set up has both).
    pub fn endpoints_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a WorkloadEndpoint> {
        let records = self.endpoints.iter().filter(move |w| w.spec.node == node);
        let recorded: std::collections::BTreeSet<&str> = records
            .clone()
            .flat_map(|w| w.spec.ip_networks.iter().map(String::as_str))
            .collect();
        let pods = self.pod_endpoints.iter().filter(move |w| {
            w.spec.node == node
                && !w
                    .spec
                    .ip_networks
                    .iter()
                    .any(|a| recorded.contains(a.as_str()))
        });
        records.chain(pods)
    }

    /// The `default` BGPConfiguration, if any.
    pub fn default_config(&self) -> Option<&BgpConfiguration> {
        self.configs.iter().find(|c| c.metadata.name == "default")
    }

    /// The cluster-wide default AS (`default` BGPConfiguration, else 64512).
    pub fn default_as(&self) -> u32 {
        self.default_config()
            .and_then(|c| c.spec.as_number().ok().flatten())
            .unwrap_or(DEFAULT_AS_NUMBER)
    }

    /// The enabled IP pools as the allocator uses them; invalid ones are skipped (they were
    /// validated on load, so this only drops pools the allocator itself refuses).
    pub fn ip_pools(&self) -> Vec<IpPool> {
        self.pools
            .iter()
            .filter_map(|p| IpPool::new(&p.metadata.name, &p.spec).ok())
            .collect()
    }

    /// The pool a prefix lies in, for its encapsulation.
    pub fn pool_of(&self, prefix: &IpNet) -> Option<IpPool> {
        self.ip_pools().into_iter().find(|p| {
            p.cidr().contains(&prefix.network()) && p.cidr().prefix_len() <= prefix.prefix_len()
        })
    }

    /// Node underlay addresses (IPv4 and IPv6 host addresses) by address: how a BGP next hop
    /// is recognised as another node of the cluster.
    pub fn nodes_by_address(&self) -> BTreeMap<IpAddr, &Node> {
        let mut out = BTreeMap::new();
        for node in &self.nodes {
            let Some(bgp) = &node.spec.bgp else { continue };
            if let Ok(Some(v4)) = bgp.ipv4_address() {
                out.insert(IpAddr::V4(v4.addr()), node);
            }
            if let Ok(Some(v6)) = bgp.ipv6_address() {
                out.insert(IpAddr::V6(v6.addr()), node);
            }
        }
        out
    }
}

/// What this daemon registers about its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub name: String,
    pub ipv4: Ipv4Net,
    pub ipv6: Option<Ipv6Net>,
    /// AS set on the command line (`--as`); `None` keeps what the Node says (or inherits).
    pub as_number: Option<u32>,
}

/// Creates or updates this node's `Node` resource: the BGP addresses (and the AS when given)
/// are set from the daemon's settings; everything an operator set (labels, the route
/// reflector cluster id, an AS configured on the resource) is kept. Compare-and-swap,
/// retried when another writer (routectl, a second daemon) got there first.
pub fn register_node(ds: &dyn Datastore, reg: &Registration) -> Result<Node, RegisterError> {
    let kind = Kind::Node.as_str();
    for _ in 0..REGISTER_RETRIES {
        let existing = match ds.get(kind, &reg.name) {
            Ok(record) => Some(record),
            Err(DatastoreError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let mut node = match &existing {
            Some(record) => match resource_of(record) {
                Ok(Resource::Node(n)) => n,
                Ok(_) => unreachable_kind(&reg.name)?,
                Err(e) => return Err(RegisterError::Stored(e)),
            },
            None => Node::new(reg.name.clone(), Default::default()),
        };
        let bgp = node.spec.bgp.get_or_insert_with(NodeBgpSpec::default);
        let before = bgp.clone();
        bgp.ipv4_address = Some(reg.ipv4.to_string());
        if let Some(v6) = reg.ipv6 {
            bgp.ipv6_address = Some(v6.to_string());
        }
        if let Some(asn) = reg.as_number {
            bgp.as_number = Some(asn.into());
        }
        let changed = *bgp != before;
        let resource = Resource::Node(node.clone());
        resource.validate().map_err(RegisterError::Invalid)?;
        let result = match &existing {
            None => ds.create(kind, &reg.name, record_value(&resource)),
            Some(_) if !changed => return Ok(node),
            Some(record) => ds.update(kind, &reg.name, record_value(&resource), record.version),
        };
        match result {
            Ok(version) => {
                info!(node = %reg.name, ipv4 = %reg.ipv4, created = existing.is_none(), "registered node");
                node.metadata.resource_version = Some(version.to_string());
                return Ok(node);
            }
            Err(DatastoreError::Conflict { .. }) | Err(DatastoreError::AlreadyExists { .. }) => {
                warn!(node = %reg.name, "node record changed while registering, retrying");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(RegisterError::Contended(REGISTER_RETRIES))
}

fn unreachable_kind(name: &str) -> Result<Node, RegisterError> {
    Err(RegisterError::Stored(ResourceError::Syntax {
        document: 1,
        message: format!("stored Node/{name} is not a Node"),
    }))
}

/// Registering the node failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("datastore: {0}")]
    Datastore(#[from] DatastoreError),
    #[error("the stored Node is unreadable: {0}")]
    Stored(ResourceError),
    #[error("the Node to register is invalid: {0}")]
    Invalid(ResourceError),
    #[error("the Node record kept changing under us ({0} attempts)")]
    Contended(usize),
}

/// The router id: the node's IPv4 address (as Calico's BIRD config does).
pub fn router_id(reg: &Registration) -> Ipv4Addr {
    reg.ipv4.addr()
}

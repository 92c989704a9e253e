//! `routerd-ipam`: addresses for a workload from the node's blocks.
//!
//! The allocator is routerd's own ([`ipam::Allocator`] over [`DatastoreIpam`]), so the
//! plugin and the daemon agree on blocks, affinities and handles through the datastore's
//! compare-and-swap, with no lock file and no call to routerd. Assignment is idempotent per
//! handle: a repeated ADD for the same container and interface gets the same addresses.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use datastore::ipam_store::DatastoreIpam;
use datastore::resource::{Resource, WorkloadEndpoint};
use datastore::{Datastore, DatastoreError};
use ipam::{Allocator, AllocatorConfig, AssignRequest, IpFamily, IpPool};
use ipnet::IpNet;
use rscni_plugin::cni::Cni;
use rscni_plugin::error::Error;
use rscni_plugin::types::{Args, CNIResult, IpConfig};

use crate::config::PluginConfig;
use crate::workload::{handle_id, WorkloadId};
use crate::CniError;

/// The datastore at `address`.
pub fn open_datastore(address: &str) -> Result<Arc<dyn Datastore>, CniError> {
    datastore::open(address).map_err(|e| CniError::datastore(address, e))
}

/// The IP pools, valid ones only (the same view routerd takes).
pub fn ip_pools(ds: &dyn Datastore, address: &str) -> Result<Vec<IpPool>, CniError> {
    let listing = ds
        .list("IPPool")
        .map_err(|e| CniError::datastore(address, e))?;
    Ok(listing
        .records
        .into_iter()
        .filter_map(|r| match Resource::from_value(r.value, 1) {
            Ok(Resource::IpPool(p)) => IpPool::new(&p.metadata.name, &p.spec).ok(),
            _ => None,
        })
        .collect())
}

/// The labels of the node's `Node` record; refuses a node routerd never registered.
pub fn node_labels(
    ds: &dyn Datastore,
    address: &str,
    node: &str,
) -> Result<BTreeMap<String, String>, CniError> {
    match ds.get("Node", node) {
        Ok(record) => match Resource::from_value(record.value, 1) {
            Ok(Resource::Node(n)) => Ok(n.metadata.labels),
            _ => Err(CniError::datastore(
                address,
                format!("Node/{node} is unreadable"),
            )),
        },
        Err(DatastoreError::NotFound { .. }) => Err(CniError::Ipam(format!(
            "node {node:?} is not registered in the datastore (is routerd running on it, \
             and does the configuration's nodename match?)"
        ))),
        Err(e) => Err(CniError::datastore(address, e)),
    }
}

/// The pool an address belongs to.
pub fn pool_of(pools: &[IpPool], ip: IpAddr) -> Option<&IpPool> {
    pools.iter().find(|p| p.cidr().contains(&ip))
}

/// Assigns the workload's addresses (IPv4, and IPv6 when asked or when a v6 pool selects the
/// node), each as a host prefix. On a failure nothing stays assigned to the handle.
pub fn assign(
    ds: &Arc<dyn Datastore>,
    config: &PluginConfig,
    id: &WorkloadId,
) -> Result<Vec<IpNet>, CniError> {
    let pools = ip_pools(&**ds, &config.datastore)?;
    let labels = node_labels(&**ds, &config.datastore, &config.node)?;
    // The cluster's IPAM settings (`routectl ipam configure`): strict affinity forbids
    // borrowing from other nodes' blocks.
    let (settings, _) = datastore::ipam_store::read_ipam_config(&**ds)
        .map_err(|e| CniError::datastore(&config.datastore, e))?;
    let allocator = Allocator::new(DatastoreIpam::new(ds.clone()), settings.allocator_config());
    let handle = id.handle(&config.network);
    let v6_selects = pools
        .iter()
        .any(|p| p.family() == IpFamily::V6 && p.usable_by(&labels));
    let mut families = Vec::new();
    if config.assign_ipv4 {
        families.push(IpFamily::V4);
    }
    if config.assign_ipv6.unwrap_or(v6_selects) {
        families.push(IpFamily::V6);
    }
    if families.is_empty() {
        return Err(CniError::Config(
            "ipam: assign_ipv4 and assign_ipv6 are both false".into(),
        ));
    }
    let mut out = Vec::new();
    for family in families {
        let mut req = AssignRequest::pod(&handle, &config.node, family, &id.namespace, &id.pod);
        if id.pod.is_empty() {
            req.attributes.remove("pod");
            req.attributes
                .insert("containerID".into(), id.container_id.clone());
        }
        match allocator.assign(&pools, &labels, &req) {
            Ok(a) => out.push(IpNet::from(a.address)),
            Err(e) => {
                if !out.is_empty() {
                    let _ = allocator.release(&handle);
                }
                return Err(CniError::Ipam(e.to_string()));
            }
        }
    }
    Ok(out)
}

/// The network name of Calico's conflist (`10-calico.conflist`), which calico-ipam puts in
/// its handles: pods addressed by Calico before a switch to routerd hold
/// `k8s-pod-network.<containerID>`.
pub const CALICO_NETWORK: &str = "k8s-pod-network";

/// Releases the workload's handle (and Calico's handles for the container, under this
/// network's name and under Calico's default one, so a pod calico-ipam addressed before a
/// switch is freed when it is deleted); returns what was freed. Releasing an unknown handle
/// frees nothing and succeeds.
pub fn release(
    ds: &Arc<dyn Datastore>,
    config: &PluginConfig,
    id: &WorkloadId,
) -> Result<Vec<IpAddr>, CniError> {
    let allocator = Allocator::new(DatastoreIpam::new(ds.clone()), AllocatorConfig::default());
    let mut freed = Vec::new();
    let mut handles = vec![
        id.handle(&config.network),
        id.calico_handle(&config.network),
    ];
    if config.network != CALICO_NETWORK {
        handles.push(id.calico_handle(CALICO_NETWORK));
    }
    for handle in handles {
        freed.extend(
            allocator
                .release(&handle)
                .map_err(|e| CniError::Ipam(e.to_string()))?,
        );
    }
    Ok(freed)
}

/// The identity of a call from its arguments.
pub(crate) fn workload_of(args: &Args, config: &PluginConfig) -> Result<WorkloadId, CniError> {
    let container = args
        .container_id()
        .ok_or_else(|| CniError::Environment("CNI_CONTAINERID: missing".into()))?;
    let ifname = args
        .ifname()
        .ok_or_else(|| CniError::Environment("CNI_IFNAME: missing".into()))?;
    Ok(WorkloadId::new(
        args.args(),
        container.as_ref(),
        ifname.as_ref(),
        &config.node,
    ))
}

/// The `routerd-ipam` plugin.
#[derive(Debug, Default)]
pub struct RouterdIpam;

impl Cni for RouterdIpam {
    fn add(&self, args: Args) -> Result<CNIResult, Error> {
        let config = PluginConfig::from_netconf(args.config())?;
        let id = workload_of(&args, &config)?;
        let ds = open_datastore(&config.datastore)?;
        let ips = assign(&ds, &config, &id)?;
        Ok(CNIResult {
            ips: ips
                .into_iter()
                .map(|address| IpConfig {
                    interface: None,
                    address,
                    gateway: None,
                })
                .collect(),
            ..Default::default()
        })
    }

    fn del(&self, args: Args) -> Result<(), Error> {
        let config = PluginConfig::from_netconf(args.config())?;
        let id = workload_of(&args, &config)?;
        let ds = open_datastore(&config.datastore)?;
        release(&ds, &config, &id)?;
        Ok(())
    }

    fn check(&self, args: Args) -> Result<(), Error> {
        let config = PluginConfig::from_netconf(args.config())?;
        let id = workload_of(&args, &config)?;
        let ds = open_datastore(&config.datastore)?;
        let allocator = Allocator::new(DatastoreIpam::new(ds), AllocatorConfig::default());
        let held = allocator
            .addresses(&id.handle(&config.network))
            .map_err(|e| CniError::Ipam(e.to_string()))?;
        if held.is_empty() {
            return Err(CniError::Check(format!(
                "handle {} holds no address",
                id.handle(&config.network)
            ))
            .into());
        }
        Ok(())
    }

    fn status(&self, args: Args) -> Result<(), Error> {
        let config = PluginConfig::from_netconf(args.config())?;
        let ds = open_datastore(&config.datastore)
            .map_err(|e| Error::PluginNotAvailable(e.to_string()))?;
        let pools = ip_pools(&*ds, &config.datastore)
            .map_err(|e| Error::PluginNotAvailable(e.to_string()))?;
        if pools.is_empty() {
            return Err(Error::PluginNotAvailable(
                "no IPPool in the datastore: nothing to assign from".into(),
            ));
        }
        Ok(())
    }

    fn gc(&self, args: Args) -> Result<(), Error> {
        let config = PluginConfig::from_netconf(args.config())?;
        let ds = open_datastore(&config.datastore)?;
        gc_endpoints(&ds, &config, &valid_attachments(args.config()))?;
        Ok(())
    }
}

/// The `(containerID, ifname)` pairs a GC call says are still in use.
pub(crate) fn valid_attachments(conf: &rscni_plugin::types::NetConf) -> Vec<(String, String)> {
    conf.valid_attachments
        .iter()
        .flatten()
        .map(|a| (a.container_id.clone(), a.ifname.clone()))
        .collect()
}

/// CNI GC: the node's WorkloadEndpoints whose container and interface no valid attachment
/// names lose their addresses (this network's handle) and their record. Returns the
/// endpoints removed (the main plugin removes their veths too).
pub fn gc_endpoints(
    ds: &Arc<dyn Datastore>,
    config: &PluginConfig,
    valid: &[(String, String)],
) -> Result<Vec<WorkloadEndpoint>, CniError> {
    let listing = ds
        .list("WorkloadEndpoint")
        .map_err(|e| CniError::datastore(&config.datastore, e))?;
    let allocator = Allocator::new(DatastoreIpam::new(ds.clone()), AllocatorConfig::default());
    let mut removed = Vec::new();
    for record in listing.records {
        let Ok(Resource::WorkloadEndpoint(w)) = Resource::from_value(record.value, 1) else {
            continue;
        };
        if w.spec.node != config.node {
            continue;
        }
        if valid.contains(&(w.spec.container_id.clone(), w.spec.endpoint.clone())) {
            continue;
        }
        let handle = handle_id(&config.network, &w.spec.container_id, &w.spec.endpoint);
        allocator
            .release(&handle)
            .map_err(|e| CniError::Ipam(e.to_string()))?;
        match ds.delete("WorkloadEndpoint", &record.name, Some(record.version)) {
            Ok(_) | Err(DatastoreError::NotFound { .. }) => removed.push(w),
            Err(e) => return Err(CniError::datastore(&config.datastore, e)),
        }
    }
    Ok(removed)
}

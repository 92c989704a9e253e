//! What goes with a node that leaves the cluster, as with Calico (its "decommissioning a
//! node" guide: removing a Node also removes its workload endpoints, its IP addresses and
//! the configuration scoped to it). `routectl delete node` runs it before deleting the Node
//! record, as Calico's node deletion does; routerd runs it for a node whose record went
//! away by other means (Kubernetes' garbage collector, after a Kubernetes Node is deleted),
//! as Calico's kube-controllers do ([`crate::daemon::node_gc`]). Removed:
//!
//! - its WorkloadEndpoints, and the addresses they hold;
//! - its tunnel addresses (the IP-in-IP and VXLAN handles of the node);
//! - its block affinities: an empty block is deleted (its range is free for other nodes); a
//!   block still holding addresses (another node's pod that borrowed from it) stays, without
//!   owner, until those are released;
//! - the BGPPeers scoped to it (`node: <name>`) and its `node.<name>` BGPConfiguration.
//!
//! Every step is idempotent (a second run finds nothing), so a run cut short is finished by
//! the next.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use datastore::ipam_store::DatastoreIpam;
use datastore::resource::{Kind, Resource};
use datastore::{Datastore, DatastoreError};
use ipam::{Allocator, AllocatorConfig, TunnelKind};

/// A step of the removal failed; the rest is left for the next run.
#[derive(Debug, thiserror::Error)]
pub enum NodeRemovalError {
    #[error(transparent)]
    Datastore(#[from] DatastoreError),
    #[error(transparent)]
    Ipam(#[from] ipam::IpamError),
}

/// What was removed with a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeRemoval {
    pub endpoints: usize,
    pub addresses: Vec<IpAddr>,
    pub blocks: Vec<IpNet>,
    pub peers: usize,
    pub configs: usize,
}

impl NodeRemoval {
    /// One line for the operator, or none when the node had nothing.
    pub fn summary(&self, node: &str) -> Option<String> {
        if *self == NodeRemoval::default() {
            return None;
        }
        let blocks: Vec<String> = self.blocks.iter().map(ToString::to_string).collect();
        Some(format!(
            "Released node {node}'s state: {} workload endpoint(s), {} address(es), {} block \
             affinit{} ({}), {} BGPPeer(s), {} BGPConfiguration(s)",
            self.endpoints,
            self.addresses.len(),
            self.blocks.len(),
            if self.blocks.len() == 1 { "y" } else { "ies" },
            if blocks.is_empty() {
                "none".to_string()
            } else {
                blocks.join(", ")
            },
            self.peers,
            self.configs
        ))
    }
}

/// Removes everything of `node` but its Node record (see the module docs).
pub fn remove_node_state(
    ds: &Arc<dyn Datastore>,
    node: &str,
) -> Result<NodeRemoval, NodeRemovalError> {
    let allocator = Allocator::new(DatastoreIpam::new(ds.clone()), AllocatorConfig::default());
    let mut out = NodeRemoval::default();
    for (name, resource) in records(ds, Kind::WorkloadEndpoint)? {
        let Resource::WorkloadEndpoint(wep) = resource else {
            continue;
        };
        if wep.spec.node != node {
            continue;
        }
        for net in wep.spec.addresses() {
            if allocator.release_ip(net.addr())?.is_some() {
                out.addresses.push(net.addr());
            }
        }
        delete(ds, Kind::WorkloadEndpoint, &name)?;
        out.endpoints += 1;
    }
    for kind in [TunnelKind::Ipip, TunnelKind::Vxlan, TunnelKind::VxlanV6] {
        out.addresses.extend(allocator.release(&kind.handle(node))?);
    }
    out.blocks = allocator.release_node(node)?;
    for (name, resource) in records(ds, Kind::BgpPeer)? {
        if let Resource::BgpPeer(peer) = resource {
            if peer.spec.node.as_deref() == Some(node) {
                delete(ds, Kind::BgpPeer, &name)?;
                out.peers += 1;
            }
        }
    }
    if delete(ds, Kind::BgpConfiguration, &format!("node.{node}"))? {
        out.configs += 1;
    }
    Ok(out)
}

/// Every record of `kind` that parses, with its record name.
fn records(
    ds: &Arc<dyn Datastore>,
    kind: Kind,
) -> Result<Vec<(String, Resource)>, NodeRemovalError> {
    let listing = ds.list(kind.as_str())?;
    Ok(listing
        .records
        .iter()
        .filter_map(|r| {
            let resource = Resource::from_value(r.value.clone(), 1).ok()?;
            Some((r.name.clone(), resource))
        })
        .collect())
}

/// Deletes a record whatever its version; whether it was there.
fn delete(ds: &Arc<dyn Datastore>, kind: Kind, name: &str) -> Result<bool, NodeRemovalError> {
    match ds.delete(kind.as_str(), name, None) {
        Ok(_) => Ok(true),
        Err(DatastoreError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

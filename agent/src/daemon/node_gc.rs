//! Releasing what nodes that are gone still hold, as Calico's kube-controllers do: a node
//! that has no Node record but still holds block affinities or workload endpoints (its
//! record was deleted by Kubernetes' garbage collector along with its Kubernetes Node, or by
//! hand without `routectl delete node`; or it never registered) has them released
//! ([`crate::node_removal`]) once it has been gone for the grace period, so that a node that
//! re-registers meanwhile (a re-created Kubernetes Node, a reinstall under the same name)
//! keeps its blocks and its pods keep their addresses. Never while its record exists: the
//! record is read again just before the release.
//!
//! One node does the work, the registered node with the lowest name: the others would only
//! race it for the same idempotent writes. When it goes, the next lowest takes over at its
//! next check, with a grace period of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datastore::ipam_store::DatastoreIpam;
use datastore::resource::Kind;
use datastore::{Datastore, DatastoreError};
use ipam::Allocator;
use tracing::{info, warn};

use super::cluster::ClusterView;

/// How often the collecting node looks for nodes that are gone.
pub const NODE_GC_CHECK: Duration = Duration::from_secs(10);

/// The nodes seen gone, and since when (the pure part).
#[derive(Debug, Default)]
pub struct NodeGc {
    gone_since: BTreeMap<String, Instant>,
}

impl NodeGc {
    /// Given the nodes holding IPAM state or endpoints (`holders`) and the nodes with a Node
    /// record (`registered`), the holders gone for at least `grace`. A node that came back,
    /// or holds nothing any more, is forgotten.
    pub fn due(
        &mut self,
        now: Instant,
        grace: Duration,
        holders: &BTreeSet<String>,
        registered: &BTreeSet<String>,
    ) -> Vec<String> {
        self.gone_since
            .retain(|n, _| holders.contains(n) && !registered.contains(n));
        holders
            .difference(registered)
            .filter(|n| {
                let since = *self.gone_since.entry((*n).clone()).or_insert(now);
                now.duration_since(since) >= grace
            })
            .cloned()
            .collect()
    }

    /// Forgets everything (this node stopped being the collector).
    pub fn clear(&mut self) {
        self.gone_since.clear();
    }
}

/// Whether `this_node` is the one that collects: the lowest-named registered node.
pub fn is_collector(this_node: &str, registered: &BTreeSet<String>) -> bool {
    registered.iter().next().map(String::as_str) == Some(this_node)
}

/// One check: on the collecting node, releases the state of the nodes gone for `grace`.
pub async fn check(
    gc: &mut NodeGc,
    grace: Duration,
    ds: &Arc<dyn Datastore>,
    allocator: &Arc<Allocator<DatastoreIpam>>,
    view: &ClusterView,
    this_node: &str,
) {
    let registered: BTreeSet<String> = view.nodes.iter().map(|n| n.metadata.name.clone()).collect();
    if !is_collector(this_node, &registered) {
        gc.clear();
        return;
    }
    let alloc = allocator.clone();
    let affine = match tokio::task::spawn_blocking(move || alloc.affine_nodes()).await {
        Ok(Ok(nodes)) => nodes,
        Ok(Err(e)) => {
            warn!(error = %e, "listing block affinities for gone nodes failed");
            return;
        }
        Err(_) => return,
    };
    let mut holders = affine;
    holders.extend(view.endpoints.iter().map(|w| w.spec.node.clone()));
    let due = gc.due(Instant::now(), grace, &holders, &registered);
    for node in due {
        let ds = ds.clone();
        let name = node.clone();
        let result = tokio::task::spawn_blocking(move || {
            match ds.get(Kind::Node.as_str(), &name) {
                Err(DatastoreError::NotFound { .. }) => {}
                Ok(_) => return Ok(None),
                Err(e) => return Err(crate::node_removal::NodeRemovalError::Datastore(e)),
            }
            crate::node_removal::remove_node_state(&ds, &name).map(Some)
        })
        .await;
        match result {
            Ok(Ok(Some(removed))) => info!(
                node = %node,
                summary = removed.summary(&node).unwrap_or_default(),
                grace_secs = grace.as_secs(),
                "released the state of a node that is gone"
            ),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                warn!(node = %node, error = %e, "releasing a gone node's state failed; retrying at the next check")
            }
            Err(e) => warn!(node = %node, error = %e, "releasing a gone node's state failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_node_is_due_only_after_the_grace_and_never_while_registered() {
        let grace = Duration::from_secs(60);
        let t0 = Instant::now();
        let mut gc = NodeGc::default();
        let holders = set(&["a", "b", "c"]);
        // b is gone: seen now, due a grace later.
        assert!(gc.due(t0, grace, &holders, &set(&["a", "c"])).is_empty());
        let t1 = t0 + Duration::from_secs(59);
        assert!(gc.due(t1, grace, &holders, &set(&["a", "c"])).is_empty());
        let t2 = t0 + grace;
        assert_eq!(gc.due(t2, grace, &holders, &set(&["a", "c"])), ["b"]);
        // b re-registers: forgotten; gone again, its grace starts over.
        assert!(gc
            .due(t2, grace, &holders, &set(&["a", "b", "c"]))
            .is_empty());
        let t3 = t2 + Duration::from_secs(1);
        assert!(gc.due(t3, grace, &holders, &set(&["a", "c"])).is_empty());
        assert!(gc
            .due(
                t3 + Duration::from_secs(59),
                grace,
                &holders,
                &set(&["a", "c"])
            )
            .is_empty());
        assert_eq!(
            gc.due(t3 + grace, grace, &holders, &set(&["a", "c"])),
            ["b"]
        );
        // Released (holds nothing): forgotten.
        gc.due(t3 + grace, grace, &set(&["a", "c"]), &set(&["a", "c"]));
        assert!(gc.gone_since.is_empty());
    }

    #[test]
    fn the_lowest_named_registered_node_collects() {
        let registered = set(&["node-2", "node-1", "node-3"]);
        assert!(is_collector("node-1", &registered));
        assert!(!is_collector("node-2", &registered));
        assert!(!is_collector("node-1", &set(&[])));
    }
}

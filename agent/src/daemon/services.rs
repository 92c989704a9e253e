//! The Kubernetes objects the daemon follows besides the datastore's records, on the API
//! server of the `kubernetes:` datastore:
//!
//! - the cluster's Services and EndpointSlices (`datastore::KubeDatastore::watch_services`),
//!   turned into this node's service host routes by [`crate::service_routes`] whenever
//!   they, the `default` BGPConfiguration or the node's labels change;
//! - this node's Pods (`datastore::KubeDatastore::watch_pod_endpoints`), as workload
//!   endpoints derived the way Calico's datastore derives them, so that pods Calico's CNI
//!   created are routed too ([`ClusterView::pod_endpoints`]).
//!
//! With the `file:` or `etcd:` datastore there is no API server to read Services from (as
//! with Calico, whose route generator needs the Kubernetes API): the configured CIDRs are
//! still originated, and no per-Service host route is; routerd says so once at start when
//! the BGPConfiguration asks for service advertisement.

use std::collections::BTreeSet;
use std::sync::Arc;

use datastore::resource::WorkloadEndpoint;
use datastore::services::ClusterServices;
use ipnet::IpNet;
use tracing::info;

use super::cluster::ClusterView;
use crate::service_routes::{service_routes, ServiceRanges};

/// Connects the feeds of the datastore at `address` for `node`: with `kubernetes:`, one
/// client for both; otherwise feeds that never change.
pub(super) fn kube_feeds(
    address: &str,
    node: &str,
) -> Result<(ServiceFeed, PodEndpointFeed), datastore::DatastoreError> {
    #[cfg(feature = "kubernetes")]
    if let Some(source) = datastore::KubeConfigSource::from_address(address) {
        let store = datastore::KubeDatastore::connect(source, datastore::KubeOptions::default())?;
        let services = store.watch_services();
        let pods = store.watch_pod_endpoints(node);
        let store = Arc::new(store);
        return Ok((
            ServiceFeed {
                source: Some((store.clone(), services)),
                current: Arc::default(),
            },
            PodEndpointFeed {
                source: Some((store, pods)),
            },
        ));
    }
    let _ = (address, node);
    Ok((
        ServiceFeed {
            #[cfg(feature = "kubernetes")]
            source: None,
            current: Arc::default(),
        },
        PodEndpointFeed {
            #[cfg(feature = "kubernetes")]
            source: None,
        },
    ))
}

/// This node's Pods as workload endpoints.
pub(super) struct PodEndpointFeed {
    #[cfg(feature = "kubernetes")]
    source: Option<(
        Arc<datastore::KubeDatastore>,
        datastore::PodEndpointsReceiver,
    )>,
}

impl PodEndpointFeed {
    /// Resolves with the endpoints when a new set arrived; never without a source.
    pub(super) async fn changed(&mut self) -> Arc<Vec<WorkloadEndpoint>> {
        #[cfg(feature = "kubernetes")]
        if let Some((_, rx)) = self.source.as_mut() {
            return next_set(rx).await;
        }
        std::future::pending().await
    }
}

/// The next complete set a watch publishes; pending for ever once the watch has ended
/// with its store (nothing will come any more).
#[cfg(feature = "kubernetes")]
async fn next_set<T>(rx: &mut tokio::sync::watch::Receiver<Option<Arc<T>>>) -> Arc<T> {
    while rx.changed().await.is_ok() {
        if let Some(set) = rx.borrow_and_update().clone() {
            return set;
        }
    }
    std::future::pending().await
}

/// Where the daemon's Services come from, and the latest set.
pub(super) struct ServiceFeed {
    #[cfg(feature = "kubernetes")]
    source: Option<(Arc<datastore::KubeDatastore>, datastore::ServicesReceiver)>,
    current: Arc<ClusterServices>,
}

impl ServiceFeed {
    /// Whether Services are followed at all.
    pub(super) fn follows_services(&self) -> bool {
        #[cfg(feature = "kubernetes")]
        return self.source.is_some();
        #[cfg(not(feature = "kubernetes"))]
        false
    }

    /// Resolves when a new set of Services arrived (and takes it); never without a source.
    pub(super) async fn changed(&mut self) {
        #[cfg(feature = "kubernetes")]
        if let Some((_, rx)) = self.source.as_mut() {
            self.current = next_set(rx).await;
            return;
        }
        std::future::pending::<()>().await
    }

    /// This node's service host routes for the current Services and `view`.
    pub(super) fn routes(&self, view: &ClusterView, node: &str) -> BTreeSet<IpNet> {
        let ranges = view
            .default_config()
            .map(|c| ServiceRanges::of(&c.spec))
            .unwrap_or_default();
        let labels = view
            .node(node)
            .map(|n| n.metadata.labels.clone())
            .unwrap_or_default();
        service_routes(&self.current, &ranges, node, &labels)
            .into_keys()
            .collect()
    }

    /// Says at start that per-Service routes need the Kubernetes API, when the
    /// configuration asks for service advertisement and none is followed.
    pub(super) fn explain(&self, view: &ClusterView) {
        let asked = view
            .default_config()
            .is_some_and(|c| ServiceRanges::of(&c.spec).all().next().is_some());
        if asked && !self.follows_services() {
            info!("service CIDRs are advertised; per-Service host routes (externalTrafficPolicy: Local) need the kubernetes: datastore, which has the Services");
        }
    }
}

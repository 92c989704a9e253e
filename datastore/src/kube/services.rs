//! Services and EndpointSlices of the cluster, watched for service advertisement.
//!
//! Unlike the records of the [`Datastore`](crate::Datastore) contract, these are read-only
//! and the consumer wants the whole current set, not a revision-ordered log: so the watch
//! is `kube_runtime`'s watcher (list, watch, relist by itself after `410 Gone`, back off
//! after errors), whose events keep a [`ClusterServices`] that is published whole on a
//! `tokio::sync::watch` channel after every change. A relist replaces the set only when
//! it is complete (`InitDone`), so a consumer never sees a half-listed cluster.

use std::net::IpAddr;
use std::sync::Arc;

use ::kube::runtime::watcher::{self, watcher, Event};
use ::kube::runtime::WatchStreamExt;
use ::kube::Api;
use futures::StreamExt;
use ipam::IpFamily;
use k8s_openapi::api::core::v1::Service as KubeService;
use k8s_openapi::api::discovery::v1::EndpointSlice as KubeSlice;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::backend::KubeDatastore;
use crate::services::{
    ClusterServices, Endpoint, EndpointSlice, Service, ServiceType, TrafficPolicy,
};

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The latest complete set; `None` until both kinds have been listed once.
pub type ServicesReceiver = watch::Receiver<Option<Arc<ClusterServices>>>;

impl KubeDatastore {
    /// Watches every Service and EndpointSlice of the cluster (all namespaces; RBAC:
    /// `list` and `watch` on `services` and `discovery.k8s.io/endpointslices`). The watch
    /// runs on the store's client runtime until every receiver is dropped or the store is.
    pub fn watch_services(&self) -> ServicesReceiver {
        let (tx, rx) = watch::channel(None);
        let services: Api<KubeService> = Api::all(self.client());
        let slices: Api<KubeSlice> = Api::all(self.client());
        self.spawn(async move { run(services, slices, tx).await });
        rx
    }
}

/// A watcher event of either kind, decoded as it arrives (the API objects are not kept).
enum Change {
    Service(Event<Keyed<Service>>),
    Slice(Event<Keyed<EndpointSlice>>),
}

/// One kind's half of the state: the live set and, during a relist, the one being built.
pub(super) struct Half<K> {
    pub(super) live: std::collections::BTreeMap<(String, String), K>,
    listing: Option<std::collections::BTreeMap<(String, String), K>>,
    pub(super) listed: bool,
}

impl<K: Clone> Half<K> {
    pub(super) fn new() -> Self {
        Half {
            live: Default::default(),
            listing: None,
            listed: false,
        }
    }

    /// Applies one watcher event; `true` when the live set changed.
    pub(super) fn apply(&mut self, event: Event<Keyed<K>>) -> bool {
        match event {
            Event::Init => {
                self.listing = Some(Default::default());
                false
            }
            Event::InitApply(Some((key, Some(value)))) => {
                if let Some(listing) = self.listing.as_mut() {
                    listing.insert(key, value);
                }
                false
            }
            Event::InitApply(_) => false,
            Event::InitDone => {
                if let Some(listing) = self.listing.take() {
                    self.live = listing;
                }
                self.listed = true;
                true
            }
            Event::Apply(Some((key, Some(value)))) => {
                self.live.insert(key, value);
                true
            }
            // An object that stopped being one we keep (a pod that finished) leaves the set.
            Event::Apply(Some((key, None))) => self.live.remove(&key).is_some(),
            Event::Apply(None) => false,
            Event::Delete(Some((key, _))) => self.live.remove(&key).is_some(),
            Event::Delete(None) => false,
        }
    }
}

/// An object under its `(namespace, name)` (`None` without a name), decoded (`None` when
/// it is not one we keep: a change that makes it so removes it from the set).
pub(super) type Keyed<V> = Option<((String, String), Option<V>)>;

/// `(namespace, name)` of an object; `None` without a name.
pub(super) fn object_key<K: ::kube::Resource>(object: &K) -> Option<(String, String)> {
    let meta = object.meta();
    Some((
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone()?,
    ))
}

/// A watcher event with its object decoded.
pub(super) fn decoded<K: ::kube::Resource, V>(
    event: Event<K>,
    decode: impl Fn(&K) -> Option<V>,
) -> Event<Keyed<V>> {
    let decode = |k: &K| object_key(k).map(|key| (key, decode(k)));
    match event {
        Event::Apply(k) => Event::Apply(decode(&k)),
        Event::Delete(k) => Event::Delete(decode(&k)),
        Event::Init => Event::Init,
        Event::InitApply(k) => Event::InitApply(decode(&k)),
        Event::InitDone => Event::InitDone,
    }
}

async fn run(
    services: Api<KubeService>,
    slices: Api<KubeSlice>,
    tx: watch::Sender<Option<Arc<ClusterServices>>>,
) {
    let config = watcher::Config::default();
    let service_events = watcher(services, config.clone())
        .default_backoff()
        .map(|e| e.map(|event| Change::Service(decoded(event, decode_service))));
    let slice_events = watcher(slices, config)
        .default_backoff()
        .map(|e| e.map(|event| Change::Slice(decoded(event, decode_slice))));
    let mut events = std::pin::pin!(futures::stream::select(service_events, slice_events));
    let mut service_half: Half<Service> = Half::new();
    let mut slice_half: Half<EndpointSlice> = Half::new();
    loop {
        let item = tokio::select! {
            item = events.next() => item,
            _ = tx.closed() => return,
        };
        let changed = match item {
            None => return,
            Some(Err(e)) => {
                warn!(error = %e, "watching Services and EndpointSlices failed; retrying");
                continue;
            }
            Some(Ok(Change::Service(event))) => service_half.apply(event),
            Some(Ok(Change::Slice(event))) => slice_half.apply(event),
        };
        if changed && service_half.listed && slice_half.listed {
            let first = tx.borrow().is_none();
            let snapshot = ClusterServices {
                services: service_half.live.clone(),
                slices: slice_half.live.clone(),
            };
            if first {
                info!(
                    services = snapshot.services.len(),
                    slices = snapshot.slices.len(),
                    "Services and EndpointSlices listed"
                );
            } else {
                debug!(
                    services = snapshot.services.len(),
                    slices = snapshot.slices.len(),
                    "Services or EndpointSlices changed"
                );
            }
            if tx.send(Some(Arc::new(snapshot))).is_err() {
                return;
            }
        }
    }
}

/// An address field, skipping (and reporting) one that is not an IP address: a bad entry
/// of one Service must not hide the others.
fn addresses<'a>(
    namespace: &str,
    name: &str,
    field: &str,
    values: impl IntoIterator<Item = &'a String>,
) -> Vec<IpAddr> {
    values
        .into_iter()
        .filter(|v| !v.is_empty() && v.as_str() != "None")
        .filter_map(|v| match v.parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                warn!(service = %format!("{namespace}/{name}"), field, value = %v,
                      "not an IP address; skipped");
                None
            }
        })
        .collect()
}

fn family(text: &str) -> Option<IpFamily> {
    match text {
        "IPv4" => Some(IpFamily::V4),
        "IPv6" => Some(IpFamily::V6),
        _ => None,
    }
}

/// The fields service advertisement reads; `None` for an object without a name.
pub(super) fn decode_service(object: &KubeService) -> Option<Service> {
    let name = object.metadata.name.clone()?;
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let spec = object.spec.clone().unwrap_or_default();
    let cluster_ips = match &spec.cluster_ips {
        Some(list) if !list.is_empty() => addresses(&namespace, &name, "spec.clusterIPs", list),
        _ => addresses(&namespace, &name, "spec.clusterIP", spec.cluster_ip.iter()),
    };
    let external_ips = addresses(
        &namespace,
        &name,
        "spec.externalIPs",
        spec.external_ips.iter().flatten(),
    );
    let requested_load_balancer_ip = addresses(
        &namespace,
        &name,
        "spec.loadBalancerIP",
        spec.load_balancer_ip.iter(),
    )
    .first()
    .copied();
    let ingress: Vec<String> = object
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone())
        .collect();
    let ingress_ips = addresses(
        &namespace,
        &name,
        "status.loadBalancer.ingress.ip",
        &ingress,
    );
    // `spec.ipFamilies` is set by every API server since 1.20; for an older object the
    // families of its cluster addresses stand in.
    let mut ip_families: Vec<IpFamily> = spec
        .ip_families
        .iter()
        .flatten()
        .filter_map(|f| family(f))
        .collect();
    if ip_families.is_empty() {
        ip_families = cluster_ips
            .iter()
            .map(|ip| IpFamily::of_address(*ip))
            .collect();
        ip_families.dedup();
    }
    let external_traffic_policy = match spec.external_traffic_policy.as_deref() {
        Some("Local") => TrafficPolicy::Local,
        _ => TrafficPolicy::Cluster,
    };
    Some(Service {
        namespace,
        name,
        service_type: ServiceType::parse(spec.type_.as_deref()),
        cluster_ips,
        external_ips,
        requested_load_balancer_ip,
        ingress_ips,
        external_traffic_policy,
        ip_families,
    })
}

/// The fields service advertisement reads; `None` for an object without a name.
pub(super) fn decode_slice(object: &KubeSlice) -> Option<EndpointSlice> {
    let name = object.metadata.name.clone()?;
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let service = object
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .filter(|s| !s.is_empty())
        .cloned();
    let endpoints = object
        .endpoints
        .iter()
        .flatten()
        .map(|e| Endpoint {
            ready: e.conditions.as_ref().and_then(|c| c.ready),
            node_name: e.node_name.clone(),
        })
        .collect();
    Some(EndpointSlice {
        namespace,
        name,
        service,
        family: family(&object.address_type),
        endpoints,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_service_is_read_as_the_api_server_writes_it() {
        let object: KubeService = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10",
                     "clusterIPs": ["10.96.0.10", "fd00:96::10"],
                     "externalIPs": ["192.0.2.7", "not-an-ip"],
                     "externalTrafficPolicy": "Local", "ipFamilies": ["IPv4", "IPv6"]},
            "status": {"loadBalancer": {"ingress": [{"ip": "10.50.0.10"}, {"hostname": "lb.example"}]}}
        }))
        .unwrap();
        let s = decode_service(&object).unwrap();
        assert_eq!(
            object_key(&object).unwrap(),
            ("shop".to_string(), "web".to_string())
        );
        assert_eq!(s.service_type, ServiceType::LoadBalancer);
        assert_eq!(s.cluster_ips.len(), 2);
        assert_eq!(s.external_ips, ["192.0.2.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(s.ingress_ips, ["10.50.0.10".parse::<IpAddr>().unwrap()]);
        assert_eq!(s.external_traffic_policy, TrafficPolicy::Local);
        assert_eq!(s.ip_families, [IpFamily::V4, IpFamily::V6]);

        // Headless, without ipFamilies: no addresses, no families.
        let headless: KubeService = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"clusterIP": "None"}
        }))
        .unwrap();
        let s = decode_service(&headless).unwrap();
        assert!(s.cluster_ips.is_empty() && s.ip_families.is_empty());
        assert_eq!(s.external_traffic_policy, TrafficPolicy::Cluster);
    }

    #[test]
    fn a_slice_keeps_readiness_and_node_per_endpoint() {
        let object: KubeSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.244.1.5"], "nodeName": "node-1", "conditions": {"ready": true}},
                {"addresses": ["10.244.2.5"], "nodeName": "node-2", "conditions": {"ready": false}},
                {"addresses": ["10.244.3.5"]}
            ]
        }))
        .unwrap();
        let s = decode_slice(&object).unwrap();
        assert_eq!(s.service.as_deref(), Some("web"));
        assert_eq!(s.family, Some(IpFamily::V4));
        assert_eq!(
            s.endpoints,
            [
                Endpoint {
                    ready: Some(true),
                    node_name: Some("node-1".into())
                },
                Endpoint {
                    ready: Some(false),
                    node_name: Some("node-2".into())
                },
                Endpoint {
                    ready: None,
                    node_name: None
                },
            ]
        );
    }

    #[test]
    fn a_relist_replaces_the_set_only_when_complete() {
        let mut half: Half<u32> = Half::new();
        let key = |n: &str| (String::from("ns"), n.to_string());
        assert!(!half.apply(Event::Init));
        assert!(!half.apply(Event::InitApply(Some((key("a"), Some(1))))));
        assert!(half.apply(Event::InitDone));
        assert!(half.listed);
        assert!(half.apply(Event::Apply(Some((key("b"), Some(2))))));
        // A relist after 410: until it is done, the old set stays.
        assert!(!half.apply(Event::Init));
        assert!(!half.apply(Event::InitApply(Some((key("b"), Some(3))))));
        assert_eq!(half.live.len(), 2);
        assert!(half.apply(Event::InitDone));
        assert_eq!(half.live.into_iter().collect::<Vec<_>>(), [(key("b"), 3)]);
    }
}

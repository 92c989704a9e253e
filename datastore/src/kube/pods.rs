//! Workload endpoints derived from the Pods of one node, as Calico's Kubernetes datastore
//! derives them (`libcalico-go/lib/backend/k8s/conversion/workload_endpoint_default.go`).
//!
//! Under Calico's KDD there are no WorkloadEndpoint objects: a pod's endpoint is the Pod
//! itself, its addresses from `status.podIPs` (or the `cni.projectcalico.org/podIPs` and
//! `podIP` annotations Calico's CNI writes before the kubelet reports them), its host
//! interface `cali` + SHA-1 of `<namespace>.<pod>`. Reading them is how routerd routes the
//! pods Calico's CNI created before a cluster switched. routerd's own CNI plugin still
//! records its endpoints as `routerd.io` WorkloadEndpoints (writing Pods is not done);
//! the daemon takes both. Read-only, whole-set: the same watcher as the Services
//! ([`super::services`]).

use std::net::IpAddr;
use std::sync::Arc;

use ::kube::runtime::watcher::{self, watcher};
use ::kube::runtime::WatchStreamExt;
use ::kube::Api;
use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::backend::KubeDatastore;
use super::services::{decoded, Half};
use crate::resource::{calico_interface_name, ObjectMeta, WorkloadEndpoint, WorkloadEndpointSpec};

/// Calico's CNI annotations (`libcalico-go/lib/backend/k8s/conversion/constants.go`).
pub const ANNOTATION_POD_IP: &str = "cni.projectcalico.org/podIP";
pub const ANNOTATION_POD_IPS: &str = "cni.projectcalico.org/podIPs";
pub const ANNOTATION_CONTAINER_ID: &str = "cni.projectcalico.org/containerID";

/// The latest complete set of one node's pod endpoints; `None` until listed once.
pub type PodEndpointsReceiver = watch::Receiver<Option<Arc<Vec<WorkloadEndpoint>>>>;

impl KubeDatastore {
    /// Watches the Pods scheduled to `node` (a `spec.nodeName` field selector; RBAC: `list`
    /// and `watch` on `pods`) and publishes their workload endpoints.
    pub fn watch_pod_endpoints(&self, node: &str) -> PodEndpointsReceiver {
        let (tx, rx) = watch::channel(None);
        let pods: Api<Pod> = Api::all(self.client());
        let node = node.to_string();
        self.spawn(async move { run(pods, node, tx).await });
        rx
    }
}

async fn run(pods: Api<Pod>, node: String, tx: watch::Sender<Option<Arc<Vec<WorkloadEndpoint>>>>) {
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut events = std::pin::pin!(watcher(pods, config).default_backoff());
    let mut half: Half<WorkloadEndpoint> = Half::new();
    loop {
        let item = tokio::select! {
            item = events.next() => item,
            _ = tx.closed() => return,
        };
        let changed = match item {
            None => return,
            Some(Err(e)) => {
                warn!(error = %e, node = %node, "watching the node's Pods failed; retrying");
                continue;
            }
            // The field selector is the API server's filter; the node is checked again
            // here for a server (or stand-in) that ignores it.
            Some(Ok(event)) => half.apply(decoded(event, |pod| pod_endpoint(pod, &node))),
        };
        if changed && half.listed {
            let endpoints: Vec<WorkloadEndpoint> = half.live.values().cloned().collect();
            debug!(node = %node, endpoints = endpoints.len(), "pod endpoints");
            if tx.send(Some(Arc::new(endpoints))).is_err() {
                return;
            }
        }
    }
}

/// Calico's `IsFinished`: a pod that ended (or whose network Calico's CNI removed while it
/// is being deleted) no longer owns its addresses.
fn finished(pod: &Pod) -> bool {
    let annotations = pod.metadata.annotations.as_ref();
    let deleting = pod.metadata.deletion_timestamp.is_some();
    if deleting
        && annotations
            .and_then(|a| a.get(ANNOTATION_POD_IP))
            .is_some_and(|ip| ip.is_empty())
    {
        return true;
    }
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Failed" | "Succeeded" | "Completed")
    )
}

/// Calico's `getPodIPs`: `status.podIPs`, `status.podIP`, then the plural and singular
/// annotations; each an address or a host prefix.
fn pod_addresses(pod: &Pod) -> Result<Vec<IpNet>, String> {
    let status = pod.status.as_ref();
    let annotation = |key: &str| {
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let texts: Vec<String> = match (
        status
            .and_then(|s| s.pod_ips.as_ref())
            .filter(|l| !l.is_empty()),
        status
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty()),
    ) {
        (Some(list), _) => list.iter().map(|ip| ip.ip.clone()).collect(),
        (None, Some(ip)) => vec![ip],
        (None, None) => match (
            annotation(ANNOTATION_POD_IPS),
            annotation(ANNOTATION_POD_IP),
        ) {
            (Some(list), _) => list.split(',').map(|s| s.trim().to_string()).collect(),
            (None, Some(ip)) => vec![ip],
            (None, None) => Vec::new(),
        },
    };
    texts
        .iter()
        .map(|text| {
            text.parse::<IpNet>()
                .map(|n| IpNet::from(n.addr()))
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| text.clone())
        })
        .collect()
}

/// The workload endpoint of a Pod scheduled to `node`, as Calico derives it; `None` for a
/// pod of another node, a host-network or finished pod, or one without addresses.
pub(super) fn pod_endpoint(pod: &Pod, node: &str) -> Option<WorkloadEndpoint> {
    let name = pod.metadata.name.clone()?;
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let spec = pod.spec.as_ref()?;
    if spec.node_name.as_deref() != Some(node) || spec.host_network == Some(true) || finished(pod) {
        return None;
    }
    let addresses = match pod_addresses(pod) {
        Ok(a) if !a.is_empty() => a,
        Ok(_) => return None,
        Err(bad) => {
            warn!(pod = %format!("{namespace}/{name}"), value = %bad,
                  "pod address is not an IP address; pod skipped");
            return None;
        }
    };
    let container_id = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_CONTAINER_ID))
        .cloned()
        .unwrap_or_default();
    let wep_spec = WorkloadEndpointSpec {
        orchestrator: "k8s".into(),
        node: node.to_string(),
        container_id,
        pod: name.clone(),
        endpoint: "eth0".into(),
        service_account_name: spec.service_account_name.clone().unwrap_or_default(),
        ip_networks: addresses.iter().map(|a| a.to_string()).collect(),
        interface_name: calico_interface_name(&format!("{namespace}.{name}")),
        ..Default::default()
    };
    let wep_name = wep_spec.calico_name()?;
    let endpoint = WorkloadEndpoint {
        metadata: ObjectMeta {
            name: wep_name,
            namespace: Some(namespace),
            labels: pod
                .metadata
                .labels
                .clone()
                .map(|l| l.into_iter().collect())
                .unwrap_or_default(),
            ..Default::default()
        },
        ..WorkloadEndpoint::new("", wep_spec)
    };
    Some(endpoint)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    /// A pod Calico's CNI set up: its annotations before the kubelet reports the address,
    /// then `status.podIPs` first.
    #[test]
    fn a_pod_is_an_endpoint_as_calico_derives_it() {
        let mut p = pod(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "shop", "labels": {"app": "web"},
                         "annotations": {"cni.projectcalico.org/podIP": "10.244.1.7/32",
                                         "cni.projectcalico.org/podIPs": "10.244.1.7/32,fd00:244::7/128",
                                         "cni.projectcalico.org/containerID": "abc123"}},
            "spec": {"nodeName": "node-1", "containers": []},
        }));
        let wep = pod_endpoint(&p, "node-1").unwrap();
        let (ns, name) = super::super::services::object_key(&p).unwrap();
        assert_eq!((ns.as_str(), name.as_str()), ("shop", "web-0"));
        assert_eq!(wep.metadata.name, "node--1-k8s-web--0-eth0");
        assert_eq!(wep.namespace(), "shop");
        assert_eq!(wep.spec.ip_networks, ["10.244.1.7/32", "fd00:244::7/128"]);
        // Calico: sha1("shop.web-0")[:11], the veth Calico's CNI created.
        assert_eq!(wep.spec.interface_name, calico_interface_name("shop.web-0"));
        assert!(wep.spec.interface_name.starts_with("cali") && wep.spec.interface_name.len() == 15);
        assert_eq!(wep.spec.container_id, "abc123");
        assert_eq!(wep.metadata.labels["app"], "web");
        // Another node's pod is not this node's endpoint.
        assert!(pod_endpoint(&p, "node-2").is_none());

        p.status = Some(
            serde_json::from_value(serde_json::json!({"podIPs": [{"ip": "10.244.1.8"}]})).unwrap(),
        );
        let wep = pod_endpoint(&p, "node-1").unwrap();
        assert_eq!(wep.spec.ip_networks, ["10.244.1.8/32"]);
    }

    #[test]
    fn finished_host_network_and_addressless_pods_are_not_endpoints() {
        let base = serde_json::json!({
            "metadata": {"name": "job-1", "namespace": "batch",
                         "annotations": {"cni.projectcalico.org/podIP": "10.244.1.9/32"}},
            "spec": {"nodeName": "node-1", "containers": []},
        });
        assert!(pod_endpoint(&pod(base.clone()), "node-1").is_some());
        let mut done = base.clone();
        done["status"] = serde_json::json!({"phase": "Succeeded"});
        assert!(pod_endpoint(&pod(done), "node-1").is_none());
        let mut host = base.clone();
        host["spec"]["hostNetwork"] = serde_json::json!(true);
        assert!(pod_endpoint(&pod(host), "node-1").is_none());
        // Being deleted, with the network removed by Calico's CNI (podIP set to "").
        let mut released = base.clone();
        released["metadata"]["deletionTimestamp"] = serde_json::json!("2026-12-07T00:00:00Z");
        released["metadata"]["annotations"]["cni.projectcalico.org/podIP"] = serde_json::json!("");
        assert!(pod_endpoint(&pod(released), "node-1").is_none());
        let mut bad = base;
        bad["metadata"]["annotations"]["cni.projectcalico.org/podIP"] =
            serde_json::json!("10.244.1.x");
        assert!(pod_endpoint(&pod(bad), "node-1").is_none());
    }

    /// A pod that finishes is modified, not deleted: its endpoint must leave the set then,
    /// and its deletion later (decoding to nothing) must not leave it behind either.
    #[test]
    fn a_pod_that_finishes_leaves_the_set() {
        use ::kube::runtime::watcher::Event;
        let running = pod(serde_json::json!({
            "metadata": {"name": "job-1", "namespace": "batch",
                         "annotations": {"cni.projectcalico.org/podIP": "10.244.1.9/32"}},
            "spec": {"nodeName": "node-1", "containers": []},
        }));
        let mut done = running.clone();
        done.status =
            Some(serde_json::from_value(serde_json::json!({"phase": "Succeeded"})).unwrap());
        let mut half: Half<WorkloadEndpoint> = Half::new();
        let decode = |p: &Pod| pod_endpoint(p, "node-1");
        half.apply(Event::Init);
        half.apply(decoded(Event::InitApply(running), decode));
        half.apply(Event::InitDone);
        assert_eq!(half.live.len(), 1);
        assert!(half.apply(decoded(Event::Apply(done.clone()), decode)));
        assert!(half.live.is_empty());
        assert!(!half.apply(decoded(Event::Delete(done), decode)));
    }
}

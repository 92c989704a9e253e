//! Kubernetes Services and EndpointSlices, reduced to what service advertisement reads.
//!
//! These are the cluster's own objects, not routerd's: they are read (never written) from
//! the API server of the `kubernetes:` datastore (`KubeDatastore::watch_services`), and the
//! rule that turns them into routes lives with the daemon (`agent::service_routes`), as
//! Calico keeps it in confd's route generator (`confd/pkg/backends/calico/routes.go`).
//! Only the fields that rule looks at are kept, so a snapshot of a large cluster stays
//! small and the rule is testable without a Kubernetes client.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipam::IpFamily;

/// `spec.type` of a Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceType {
    ClusterIp,
    NodePort,
    LoadBalancer,
    /// `ExternalName`, or a type this version does not know: never advertised.
    Other,
}

impl ServiceType {
    /// The API's spelling; an absent type is `ClusterIP`, the API server's default.
    pub fn parse(text: Option<&str>) -> ServiceType {
        match text {
            None | Some("ClusterIP") => ServiceType::ClusterIp,
            Some("NodePort") => ServiceType::NodePort,
            Some("LoadBalancer") => ServiceType::LoadBalancer,
            Some(_) => ServiceType::Other,
        }
    }
}

/// `spec.externalTrafficPolicy`: whether external traffic may be forwarded to another
/// node's endpoint (`Cluster`) or must reach an endpoint on the node it arrives at
/// (`Local`, which keeps the client's source address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrafficPolicy {
    /// `Cluster`, or absent (the API server's default for NodePort and LoadBalancer; a
    /// ClusterIP Service has none).
    #[default]
    Cluster,
    Local,
}

/// One Service, as service advertisement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub service_type: ServiceType,
    /// `spec.clusterIPs` (`spec.clusterIP` when the list is absent); empty for a headless
    /// Service (`None`) or one without an address yet.
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// `spec.loadBalancerIP` (deprecated, still set by some load-balancer controllers).
    pub requested_load_balancer_ip: Option<IpAddr>,
    /// `status.loadBalancer.ingress[].ip`: the addresses the load balancer assigned.
    pub ingress_ips: Vec<IpAddr>,
    pub external_traffic_policy: TrafficPolicy,
    /// `spec.ipFamilies`; EndpointSlices of other families do not count for it.
    pub ip_families: Vec<IpFamily>,
}

/// One endpoint of a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `conditions.ready`; absent means ready (the EndpointSlice API's rule).
    pub ready: Option<bool>,
    /// `nodeName`: the node the endpoint's pod runs on.
    pub node_name: Option<String>,
}

/// One EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSlice {
    pub namespace: String,
    pub name: String,
    /// The `kubernetes.io/service-name` label: the Service the slice belongs to.
    pub service: Option<String>,
    /// `addressType`; `None` for `FQDN` slices, which no IP family matches.
    pub family: Option<IpFamily>,
    pub endpoints: Vec<Endpoint>,
}

/// Every Service and EndpointSlice of the cluster, keyed by `(namespace, name)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterServices {
    pub services: BTreeMap<(String, String), Service>,
    pub slices: BTreeMap<(String, String), EndpointSlice>,
}

impl ClusterServices {
    /// The slices of `service` (same namespace, labelled with its name).
    pub fn slices_of<'a>(
        &'a self,
        service: &'a Service,
    ) -> impl Iterator<Item = &'a EndpointSlice> {
        self.slices
            .range((service.namespace.clone(), String::new())..)
            .take_while(move |((ns, _), _)| *ns == service.namespace)
            .map(|(_, slice)| slice)
            .filter(move |slice| slice.service.as_deref() == Some(service.name.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(ns: &str, name: &str, service: &str) -> EndpointSlice {
        EndpointSlice {
            namespace: ns.into(),
            name: name.into(),
            service: Some(service.into()),
            family: Some(IpFamily::V4),
            endpoints: Vec::new(),
        }
    }

    #[test]
    fn a_services_slices_are_those_of_its_namespace_with_its_label() {
        let mut cluster = ClusterServices::default();
        for s in [
            slice("a", "web-1", "web"),
            slice("a", "web-2", "web"),
            slice("a", "db-1", "db"),
            slice("b", "web-1", "web"),
            slice("aa", "web-1", "web"),
        ] {
            cluster
                .slices
                .insert((s.namespace.clone(), s.name.clone()), s);
        }
        let web = Service {
            namespace: "a".into(),
            name: "web".into(),
            service_type: ServiceType::LoadBalancer,
            cluster_ips: Vec::new(),
            external_ips: Vec::new(),
            requested_load_balancer_ip: None,
            ingress_ips: Vec::new(),
            external_traffic_policy: TrafficPolicy::Local,
            ip_families: vec![IpFamily::V4],
        };
        let names: Vec<_> = cluster
            .slices_of(&web)
            .map(|s| (s.namespace.as_str(), s.name.as_str()))
            .collect();
        assert_eq!(names, [("a", "web-1"), ("a", "web-2")]);
        assert_eq!(ServiceType::parse(None), ServiceType::ClusterIp);
        assert_eq!(ServiceType::parse(Some("ExternalName")), ServiceType::Other);
    }
}

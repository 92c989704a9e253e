//! Which Service addresses this node advertises as host routes (/32, /128), as Calico's
//! route generator decides it (`confd/pkg/backends/calico/routes.go`), pure.
//!
//! The `serviceClusterIPs`, `serviceExternalIPs` and `serviceLoadBalancerIPs` CIDRs of the
//! `default` BGPConfiguration are originated whole by every node (the daemon's
//! `originations`). On top of them, a node advertises the single addresses of a Service
//! when traffic for them must reach *this* node:
//!
//! - `externalTrafficPolicy: Local`: only from nodes with a **ready endpoint** of the
//!   Service (kube-proxy drops external traffic at a node without one, so a ToR must not
//!   send it there); withdrawn when the node's last ready endpoint goes. The CIDR still
//!   comes from every node, but the host route is longer and wins at the ToR.
//! - `externalTrafficPolicy: Cluster`: any node can forward, so the CIDR is enough; except
//!   that an address covered only by a single-address entry of the allow list (a `/32` in
//!   `serviceLoadBalancerIPs` or `serviceExternalIPs`) is advertised from every node, as
//!   Calico does, since that entry is a host route already.
//!
//! What is advertised for a Service that qualifies: its cluster addresses when
//! `serviceClusterIPs` is set, its `externalIPs` inside `serviceExternalIPs`, and its
//! load-balancer ingress addresses inside `serviceLoadBalancerIPs` (addresses outside the
//! allow lists are never advertised: the operator's BGPConfiguration says which ranges the
//! network may route to the cluster). A node labelled
//! `node.kubernetes.io/exclude-from-external-load-balancers=true` advertises none.
//!
//! Not taken from Calico: `serviceLoadBalancerAggregation: Disabled` (the field is refused
//! when a BGPConfiguration is read), so Cluster Services are always aggregated into the
//! CIDRs; an EndpointSlice's `serving`/`terminating` conditions are not read (Calico reads
//! only `ready`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use datastore::resource::BgpConfigurationSpec;
use datastore::services::{ClusterServices, Service, ServiceType, TrafficPolicy};
use ipnet::IpNet;

/// The node label that takes a node out of external load balancing (Kubernetes' own,
/// honoured by Calico for service advertisement).
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// The allow lists of the `default` BGPConfiguration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceRanges {
    pub cluster_ips: Vec<IpNet>,
    pub external_ips: Vec<IpNet>,
    pub load_balancer_ips: Vec<IpNet>,
}

impl ServiceRanges {
    /// The lists of a BGPConfiguration's spec. A bad entry (only possible through a store
    /// that skipped validation) empties its list rather than stopping the node.
    pub fn of(spec: &BgpConfigurationSpec) -> ServiceRanges {
        ServiceRanges {
            cluster_ips: spec.service_cluster_ips().unwrap_or_default(),
            external_ips: spec.service_external_ips().unwrap_or_default(),
            load_balancer_ips: spec.service_load_balancer_ips().unwrap_or_default(),
        }
    }

    /// Every range, for the rule that keeps learned service routes out of the kernel.
    pub fn all(&self) -> impl Iterator<Item = &IpNet> {
        self.cluster_ips
            .iter()
            .chain(&self.external_ips)
            .chain(&self.load_balancer_ips)
    }
}

fn allowed(ranges: &[IpNet], ip: IpAddr) -> bool {
    ranges.iter().any(|r| r.contains(&ip))
}

/// `ip` lies in an entry of `ranges` that is a single address.
fn single(ranges: &[IpNet], ip: IpAddr) -> bool {
    ranges
        .iter()
        .any(|r| r.prefix_len() == r.max_prefix_len() && r.contains(&ip))
}

/// Calico's `advertiseThisService`: whether `node` advertises `service`'s addresses.
fn advertised_here(
    service: &Service,
    cluster: &ClusterServices,
    ranges: &ServiceRanges,
    node: &str,
) -> bool {
    if !matches!(
        service.service_type,
        ServiceType::ClusterIp | ServiceType::NodePort | ServiceType::LoadBalancer
    ) || service.cluster_ips.is_empty()
    {
        return false;
    }
    if service.external_traffic_policy == TrafficPolicy::Cluster {
        let lb_single = service.service_type == ServiceType::LoadBalancer
            && service
                .requested_load_balancer_ip
                .iter()
                .chain(&service.ingress_ips)
                .any(|ip| single(&ranges.load_balancer_ips, *ip));
        let external_single = service
            .external_ips
            .iter()
            .any(|ip| single(&ranges.external_ips, *ip));
        // Aggregated otherwise: the CIDRs from every node carry it.
        return lb_single || external_single;
    }
    cluster
        .slices_of(service)
        .filter(|slice| {
            slice
                .family
                .is_some_and(|f| service.ip_families.contains(&f))
        })
        .flat_map(|slice| &slice.endpoints)
        // An absent `ready` means ready (the EndpointSlice API); a not-ready endpoint is
        // no backend in the data plane, so advertising for it would black-hole traffic.
        .any(|e| e.ready != Some(false) && e.node_name.as_deref() == Some(node))
}

/// Calico's `getAllRoutesForService`: the host routes of a Service that qualifies.
fn routes_of<'a>(
    service: &'a Service,
    ranges: &'a ServiceRanges,
) -> impl Iterator<Item = IpNet> + 'a {
    let cluster = service
        .cluster_ips
        .iter()
        .filter(|_| !ranges.cluster_ips.is_empty());
    let external = service
        .external_ips
        .iter()
        .filter(|ip| allowed(&ranges.external_ips, **ip));
    let ingress = service
        .ingress_ips
        .iter()
        .filter(|ip| allowed(&ranges.load_balancer_ips, **ip));
    cluster
        .chain(external)
        .chain(ingress)
        .map(|ip| IpNet::from(*ip))
}

/// The host routes `node` advertises for the cluster's Services, each with the Services
/// (`namespace/name`) it is advertised for.
pub fn service_routes(
    cluster: &ClusterServices,
    ranges: &ServiceRanges,
    node: &str,
    node_labels: &BTreeMap<String, String>,
) -> BTreeMap<IpNet, BTreeSet<String>> {
    let mut out: BTreeMap<IpNet, BTreeSet<String>> = BTreeMap::new();
    if node_labels.get(EXCLUDE_LABEL).map(String::as_str) == Some("true") {
        return out;
    }
    for service in cluster.services.values() {
        if advertised_here(service, cluster, ranges, node) {
            for route in routes_of(service, ranges) {
                out.entry(route)
                    .or_default()
                    .insert(format!("{}/{}", service.namespace, service.name));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use datastore::services::{Endpoint, EndpointSlice};
    use ipam::IpFamily;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ranges() -> ServiceRanges {
        ServiceRanges {
            cluster_ips: vec![net("10.96.0.0/12")],
            external_ips: vec![net("192.0.2.0/24"), net("198.51.100.7/32")],
            load_balancer_ips: vec![net("10.50.0.0/24"), net("10.60.0.1/32")],
        }
    }

    fn lb(name: &str, policy: TrafficPolicy, ingress: &str) -> Service {
        Service {
            namespace: "shop".into(),
            name: name.into(),
            service_type: ServiceType::LoadBalancer,
            cluster_ips: vec![ip("10.96.0.10")],
            external_ips: Vec::new(),
            requested_load_balancer_ip: None,
            ingress_ips: vec![ip(ingress)],
            external_traffic_policy: policy,
            ip_families: vec![IpFamily::V4],
        }
    }

    fn endpoint(node: &str, ready: Option<bool>) -> Endpoint {
        Endpoint {
            ready,
            node_name: Some(node.into()),
        }
    }

    fn cluster(
        services: Vec<Service>,
        slices: Vec<(&str, &str, Vec<Endpoint>)>,
    ) -> ClusterServices {
        let mut c = ClusterServices::default();
        for s in services {
            c.services.insert((s.namespace.clone(), s.name.clone()), s);
        }
        for (name, service, endpoints) in slices {
            c.slices.insert(
                ("shop".into(), name.into()),
                EndpointSlice {
                    namespace: "shop".into(),
                    name: name.into(),
                    service: Some(service.into()),
                    family: Some(IpFamily::V4),
                    endpoints,
                },
            );
        }
        c
    }

    fn routes(c: &ClusterServices, node: &str) -> Vec<IpNet> {
        service_routes(c, &ranges(), node, &BTreeMap::new())
            .into_keys()
            .collect()
    }

    #[test]
    fn a_local_service_is_advertised_only_where_a_ready_endpoint_runs() {
        let c = cluster(
            vec![lb("web", TrafficPolicy::Local, "10.50.0.10")],
            vec![
                ("web-a", "web", vec![endpoint("node-1", Some(true))]),
                // Not ready on node 2; ready on node 3 with `ready` absent.
                (
                    "web-b",
                    "web",
                    vec![endpoint("node-2", Some(false)), endpoint("node-3", None)],
                ),
            ],
        );
        // The cluster address (serviceClusterIPs is set) and the ingress address.
        let expected = vec![net("10.50.0.10/32"), net("10.96.0.10/32")];
        assert_eq!(routes(&c, "node-1"), expected);
        assert_eq!(routes(&c, "node-2"), Vec::<IpNet>::new());
        assert_eq!(routes(&c, "node-3"), expected);
        assert_eq!(routes(&c, "node-4"), Vec::<IpNet>::new());
        let by = service_routes(&c, &ranges(), "node-1", &BTreeMap::new());
        assert_eq!(
            by[&net("10.50.0.10/32")],
            BTreeSet::from(["shop/web".to_string()])
        );
    }

    #[test]
    fn the_exclusion_label_and_an_excluded_type_advertise_nothing() {
        let mut headless = lb("db", TrafficPolicy::Local, "10.50.0.11");
        headless.cluster_ips.clear();
        let mut external_name = lb("ext", TrafficPolicy::Local, "10.50.0.12");
        external_name.service_type = ServiceType::Other;
        let c = cluster(
            vec![
                lb("web", TrafficPolicy::Local, "10.50.0.10"),
                headless,
                external_name,
            ],
            vec![
                ("web-a", "web", vec![endpoint("node-1", Some(true))]),
                ("db-a", "db", vec![endpoint("node-1", Some(true))]),
                ("ext-a", "ext", vec![endpoint("node-1", Some(true))]),
            ],
        );
        assert_eq!(routes(&c, "node-1").len(), 2);
        let labels = BTreeMap::from([(EXCLUDE_LABEL.to_string(), "true".to_string())]);
        assert!(service_routes(&c, &ranges(), "node-1", &labels).is_empty());
    }

    #[test]
    fn addresses_outside_the_allow_lists_are_never_advertised() {
        let mut web = lb("web", TrafficPolicy::Local, "10.99.0.10");
        web.external_ips = vec![ip("192.0.2.5"), ip("203.0.113.5")];
        let c = cluster(
            vec![web],
            vec![("web-a", "web", vec![endpoint("node-1", None)])],
        );
        assert_eq!(
            routes(&c, "node-1"),
            vec![net("10.96.0.10/32"), net("192.0.2.5/32")]
        );
        // Without serviceClusterIPs the cluster address is not advertised either.
        let mut r = ranges();
        r.cluster_ips.clear();
        let got: Vec<IpNet> = service_routes(&c, &r, "node-1", &BTreeMap::new())
            .into_keys()
            .collect();
        assert_eq!(got, vec![net("192.0.2.5/32")]);
    }

    #[test]
    fn a_cluster_service_is_aggregated_unless_a_single_address_entry_covers_it() {
        let c = cluster(
            vec![
                lb("web", TrafficPolicy::Cluster, "10.50.0.10"),
                lb("pinned", TrafficPolicy::Cluster, "10.60.0.1"),
            ],
            vec![("web-a", "web", vec![endpoint("node-1", Some(true))])],
        );
        // `pinned` sits in a /32 entry: every node, endpoints or not; `web` only by its CIDR.
        assert_eq!(
            routes(&c, "node-2"),
            vec![net("10.60.0.1/32"), net("10.96.0.10/32")]
        );
        let mut external = lb("ext", TrafficPolicy::Cluster, "10.99.0.1");
        external.service_type = ServiceType::NodePort;
        external.external_ips = vec![ip("198.51.100.7")];
        let c = cluster(vec![external], Vec::new());
        assert_eq!(
            routes(&c, "node-9"),
            vec![net("10.96.0.10/32"), net("198.51.100.7/32")]
        );
    }

    #[test]
    fn only_slices_of_the_services_families_and_namespace_count() {
        let mut c = cluster(
            vec![lb("web", TrafficPolicy::Local, "10.50.0.10")],
            vec![("web-a", "web", vec![endpoint("node-1", Some(true))])],
        );
        c.slices
            .get_mut(&("shop".into(), "web-a".into()))
            .unwrap()
            .family = Some(IpFamily::V6);
        assert!(routes(&c, "node-1").is_empty());
        c.slices
            .get_mut(&("shop".into(), "web-a".into()))
            .unwrap()
            .family = None;
        assert!(routes(&c, "node-1").is_empty());
        // A slice of another namespace with the same service name.
        let mut other = cluster(
            Vec::new(),
            vec![("web-a", "web", vec![endpoint("node-1", Some(true))])],
        );
        let slice = other.slices.pop_first().unwrap().1;
        c.slices.clear();
        c.slices.insert(
            ("other".into(), "web-a".into()),
            EndpointSlice {
                namespace: "other".into(),
                ..slice
            },
        );
        assert!(routes(&c, "node-1").is_empty());
    }
}

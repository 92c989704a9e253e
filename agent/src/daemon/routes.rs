//! From BGP best paths and the cluster view to the routes the kernel must hold (pure).
//!
//! Calico splits this between BIRD (which exports learned routes to the kernel, rewriting
//! IP-in-IP pool routes to `tunl0` in its `calico_kernel_programming` filter) and felix
//! (which programs VXLAN routes from the datastore). Here one function decides every route,
//! from one input: the BGP best paths. A best path whose next hop is another node of the
//! cluster and whose prefix lies in an IP pool is a pod block: it goes to the overlay
//! planner ([`encap::plan_overlay`] through [`encap::Overlay::apply`]), which picks native,
//! IP-in-IP or VXLAN per the pool's mode and the CrossSubnet rule. Routes inside the
//! `default` BGPConfiguration's service ranges are not installed (kube-proxy answers for
//! Service addresses on every node; Calico keeps them out of the kernel the same way).
//! Everything else (routes from the top-of-rack) is installed as BGP gave it, with every
//! ECMP next hop. The node's own blocks are blackholed, so that a
//! packet for an unassigned address of the block dies here instead of looping back to the
//! fabric (Calico installs the same `blackhole` routes).
//!
//! [`plan_routes`] is that decision from scratch; the daemon keeps it up to date per change
//! with [`DesiredRoutes`](super::desired::DesiredRoutes), whose property test holds it to this.

use std::collections::BTreeMap;
use std::net::IpAddr;

use encap::{ClusterNode, EncapMode, PoolEncap};
use ipnet::IpNet;

use super::cluster::ClusterView;
use super::desired::{direct_route, Class, RouteContext};

/// The BGP best paths the FIB cares about: next hops per prefix (ECMP when several).
pub type BestPaths = BTreeMap<IpNet, Vec<IpAddr>>;

/// The routing part of the desired state, before the overlay planner runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePlan {
    /// Remote pod blocks grouped by owning node, for [`encap::Overlay::apply`].
    pub remotes: Vec<ClusterNode>,
    /// Routes installed as BGP gave them (not pod blocks of a cluster node).
    pub direct: Vec<fib::Route>,
    /// Blackholes for this node's own blocks.
    pub blackholes: Vec<fib::Route>,
}

/// The encapsulation settings of a pool, in the overlay's terms.
pub fn pool_encap(pool: &ipam::IpPool) -> PoolEncap {
    let convert =
        |mode: ipam::EncapMode| -> EncapMode { mode.as_str().parse().unwrap_or(EncapMode::Never) };
    PoolEncap {
        ipip: convert(pool.ipip_mode()),
        vxlan: convert(pool.vxlan_mode()),
    }
}

/// Splits the best paths into overlay blocks and direct routes, and adds the blackholes.
///
/// The whole plan at once, from scratch: the reference that
/// [`DesiredRoutes`](super::desired::DesiredRoutes) keeps up to date incrementally (its tests
/// check the two agree). The rule for each prefix is [`RouteContext::classify`]: a prefix equal
/// to one of the node's `connected` subnets or to one of its own blocks is skipped, a pod block
/// of another cluster node goes to the overlay, the rest is installed as learned.
pub fn plan_routes(
    view: &ClusterView,
    this_node: &str,
    own_blocks: &[IpNet],
    connected: &[IpNet],
    best: &BestPaths,
) -> RoutePlan {
    let context = RouteContext::new(view, this_node, own_blocks, connected);
    let mut plan = RoutePlan::default();
    let mut blocks = Vec::new();
    for (prefix, hops) in best {
        match context.classify(prefix, hops) {
            Class::Nothing => {}
            Class::Block { .. } => blocks.push((prefix, &hops[..])),
            Class::Direct => plan.direct.push(direct_route(*prefix, hops)),
        }
    }
    plan.remotes = context.remotes(blocks);
    plan.blackholes = own_blocks
        .iter()
        .map(|b| fib::Route::blackhole(*b))
        .collect();
    plan
}

/// The VTEP a node published (tunnel address and MAC), for the family of `underlay`.
pub(super) fn vtep_of(
    node: &datastore::resource::Node,
    underlay: IpAddr,
) -> Option<(IpAddr, [u8; 6])> {
    if underlay.is_ipv4() {
        let ip = node.spec.ipv4_vxlan_tunnel_addr().ok().flatten()?;
        let mac = node.spec.vxlan_tunnel_mac_addr().ok().flatten()?;
        Some((IpAddr::V4(ip), mac))
    } else {
        let ip = node.spec.ipv6_vxlan_tunnel_addr().ok().flatten()?;
        let mac = node.spec.vxlan_tunnel_mac_addr_v6().ok().flatten()?;
        Some((IpAddr::V6(ip), mac))
    }
}

/// The host routes to this node's workloads, from their WorkloadEndpoints (felix's job in
/// Calico): `<address> dev <cali…>`, scope link. The CNI plugin adds the same route at ADD,
/// with our protocol, so nothing changes when routerd takes it over; a route of ours to a
/// workload that has no endpoint any more is removed by the FIB reconcile.
///
/// An endpoint whose interface does not exist (`interface_exists` false: its pod is gone
/// and the record leaked) gets no route, since the kernel refuses a route to a missing
/// device.
pub fn workload_routes(
    view: &ClusterView,
    this_node: &str,
    interface_exists: impl Fn(&str) -> bool,
) -> Vec<fib::Route> {
    let mut out = Vec::new();
    for wep in view.endpoints_on(this_node) {
        let dev = wep.spec.interface_name.as_str();
        if dev.is_empty() || !interface_exists(dev) {
            continue;
        }
        for address in wep.spec.addresses() {
            out.push(fib::Route::via(address, fib::NextHop::dev(dev)));
        }
    }
    out.sort_by_key(|r| r.destination);
    out.dedup_by(|a, b| a.destination == b.destination);
    out
}

/// This node's workload addresses outside its own blocks (borrowed from another node's
/// block, or from one affine to no node): each is advertised as a host route, so the
/// longest match reaches this node while the block's owner keeps advertising the block.
pub fn borrowed_addresses(view: &ClusterView, this_node: &str, own_blocks: &[IpNet]) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = view
        .endpoints_on(this_node)
        .flat_map(|w| w.spec.addresses())
        .filter(|a| !own_blocks.iter().any(|b| b.contains(&a.addr())))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(super) mod tests {
    use super::*;
    use datastore::resource::{IpPoolResource, Node, NodeBgpSpec, NodeSpec};

    /// A node known by `v4`, for the route planning tests here and in `desired`.
    pub(in crate::daemon) fn node(name: &str, v4: &str) -> Node {
        Node::new(
            name,
            NodeSpec {
                bgp: Some(NodeBgpSpec {
                    ipv4_address: Some(v4.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
    }

    /// A pool of /24 blocks with this `ipipMode`.
    pub(in crate::daemon) fn pool(name: &str, cidr: &str, ipip: &str) -> IpPoolResource {
        IpPoolResource::new(
            name,
            ipam::IpPoolSpec {
                cidr: cidr.into(),
                block_size: Some(24),
                ipip_mode: Some(ipip.into()),
                vxlan_mode: None,
                nat_outgoing: false,
                disabled: false,
                node_selector: None,
            },
        )
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn pod_blocks_go_to_the_overlay_and_the_rest_is_installed_as_learned() {
        let view = ClusterView {
            nodes: vec![node("a", "10.0.0.1/24"), node("b", "10.0.0.2/24")],
            pools: vec![pool("p", "10.244.0.0/16", "Always")],
            ..Default::default()
        };
        let mut best = BestPaths::new();
        best.insert(net("10.244.1.0/24"), vec![ip("10.0.0.2")]);
        best.insert(
            net("192.0.2.0/24"),
            vec![ip("10.0.0.254"), ip("10.0.0.253")],
        );
        // Our own block, learned back (e.g. through a reflector): never routed away.
        best.insert(net("10.244.0.0/24"), vec![ip("10.0.0.2")]);
        // The segment itself, learned from the ToR: the kernel's connected route wins.
        best.insert(net("10.0.0.0/24"), vec![ip("10.0.0.254")]);
        let plan = plan_routes(
            &view,
            "a",
            &[net("10.244.0.0/24")],
            &[net("10.0.0.0/24")],
            &best,
        );
        assert_eq!(plan.remotes.len(), 1);
        assert_eq!(plan.remotes[0].node_ip, ip("10.0.0.2"));
        assert_eq!(
            plan.remotes[0].blocks,
            vec![(
                net("10.244.1.0/24"),
                PoolEncap {
                    ipip: EncapMode::Always,
                    vxlan: EncapMode::Never
                }
            )]
        );
        assert_eq!(
            plan.direct,
            vec![fib::Route::unicast(
                net("192.0.2.0/24"),
                vec![
                    fib::NextHop::via(ip("10.0.0.254")),
                    fib::NextHop::via(ip("10.0.0.253"))
                ]
            )]
        );
        assert_eq!(
            plan.blackholes,
            vec![fib::Route::blackhole(net("10.244.0.0/24"))]
        );
    }

    #[test]
    fn a_pool_prefix_from_a_non_node_next_hop_is_direct() {
        let view = ClusterView {
            nodes: vec![node("a", "10.0.0.1/24")],
            pools: vec![pool("p", "10.244.0.0/16", "Never")],
            ..Default::default()
        };
        let mut best = BestPaths::new();
        best.insert(net("10.244.9.0/24"), vec![ip("10.0.0.254")]);
        let plan = plan_routes(&view, "a", &[], &[], &best);
        assert!(plan.remotes.is_empty());
        assert_eq!(plan.direct.len(), 1);
    }

    #[test]
    fn routes_inside_the_service_ranges_are_advertised_never_installed() {
        let spec: datastore::resource::BgpConfigurationSpec = serde_norway::from_str(
            "serviceClusterIPs: [{cidr: 10.96.0.0/12}]\nserviceLoadBalancerIPs: [{cidr: 10.50.0.0/24}]\n",
        )
        .unwrap();
        let view = ClusterView {
            nodes: vec![node("a", "10.0.0.1/24"), node("b", "10.0.0.2/24")],
            configs: vec![datastore::resource::BgpConfiguration::new("default", spec)],
            ..Default::default()
        };
        let mut best = BestPaths::new();
        // Node b's service CIDR and the host route of a Local Service with its endpoint there.
        best.insert(net("10.96.0.0/12"), vec![ip("10.0.0.2")]);
        best.insert(net("10.50.0.10/32"), vec![ip("10.0.0.2")]);
        best.insert(net("192.0.2.0/24"), vec![ip("10.0.0.254")]);
        let plan = plan_routes(&view, "a", &[], &[], &best);
        let installed: Vec<IpNet> = plan.direct.iter().map(|r| r.destination).collect();
        assert_eq!(installed, [net("192.0.2.0/24")]);
    }

    fn wep(node: &str, dev: &str, addresses: &[&str]) -> datastore::resource::WorkloadEndpoint {
        datastore::resource::WorkloadEndpoint::new(
            format!("{node}-k8s-{dev}-eth0"),
            datastore::resource::WorkloadEndpointSpec {
                orchestrator: "k8s".into(),
                node: node.into(),
                endpoint: "eth0".into(),
                interface_name: dev.into(),
                ip_networks: addresses.iter().map(|a| a.to_string()).collect(),
                ..Default::default()
            },
        )
    }

    #[test]
    fn workload_routes_are_this_nodes_endpoints_with_an_interface() {
        let view = ClusterView {
            endpoints: vec![
                wep("a", "cali1", &["10.244.0.5/32", "fd00::5/128"]),
                wep("a", "caligone", &["10.244.0.6/32"]),
                wep("b", "cali2", &["10.244.1.5/32"]),
            ],
            ..Default::default()
        };
        let routes = workload_routes(&view, "a", |dev| dev != "caligone");
        let got: Vec<String> = routes
            .iter()
            .map(|r| format!("{} {}", r.destination, r.next_hops()[0]))
            .collect();
        assert_eq!(got, ["10.244.0.5/32 dev cali1", "fd00::5/128 dev cali1"]);
        assert!(routes.iter().all(|r| r.is_link_scope()));
    }

    #[test]
    fn addresses_outside_own_blocks_are_borrowed() {
        let view = ClusterView {
            endpoints: vec![
                wep("a", "cali1", &["10.244.0.5/32"]),
                wep("a", "cali2", &["10.244.1.7/32"]),
                wep("b", "cali3", &["10.244.2.5/32"]),
            ],
            ..Default::default()
        };
        assert_eq!(
            borrowed_addresses(&view, "a", &[net("10.244.0.0/26")]),
            vec![net("10.244.1.7/32")]
        );
    }
}

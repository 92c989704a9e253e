//! The encapsulation decision: given an IP pool's `ipipMode` / `vxlanMode`, this node's
//! address (with the prefix of its subnet) and a remote node's address, how must traffic to the
//! remote node's pod blocks travel?
//!
//! Calico semantics reproduced here:
//! - `Never`: plain routing, `<block> via <node ip>` on the underlay; this needs the nodes to be
//!   on one L2 segment (or the underlay to know the pod routes, e.g. through BGP).
//! - `Always`: every remote node is reached through the tunnel.
//! - `CrossSubnet`: only nodes outside this node's subnet are reached through the tunnel; the
//!   subnet is the prefix the node registered its address with, so a node registered as a
//!   `/32` (or `/128`) treats every other node as cross-subnet.
//!
//! All of it is pure; the result says which route the agent must hand to the FIB.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use crate::EncapError;

/// Name of the IP-in-IP device; the kernel's fallback tunnel is called this, so Calico uses it.
pub const IPIP_DEVICE: &str = "tunl0";
/// Name of Calico's IPv4 VXLAN device.
pub const VXLAN_DEVICE: &str = "vxlan.calico";
/// Name of Calico's IPv6 VXLAN device.
pub const VXLAN_V6_DEVICE: &str = "vxlan-v6.calico";

/// An IP pool's `ipipMode` or `vxlanMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EncapMode {
    /// Never encapsulate (the default when the field is absent).
    #[default]
    Never,
    /// Encapsulate towards every other node.
    Always,
    /// Encapsulate only towards nodes outside this node's subnet.
    CrossSubnet,
}

impl EncapMode {
    /// Whether traffic from `this_node` to `remote_node` must be encapsulated under this mode.
    pub fn encapsulates(self, this_node: IpNet, remote_node: IpAddr) -> bool {
        match self {
            EncapMode::Never => false,
            EncapMode::Always => true,
            EncapMode::CrossSubnet => crosses_subnet(this_node, remote_node),
        }
    }
}

impl fmt::Display for EncapMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncapMode::Never => "Never",
            EncapMode::Always => "Always",
            EncapMode::CrossSubnet => "CrossSubnet",
        })
    }
}

/// Error parsing an [`EncapMode`] from its Calico spelling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown encapsulation mode {0:?} (expected Never, Always or CrossSubnet)")]
pub struct UnknownEncapMode(pub String);

impl FromStr for EncapMode {
    type Err = UnknownEncapMode;

    /// Accepts Calico's spellings (`Never`, `Always`, `CrossSubnet`), case-insensitively, and
    /// the empty string as `Never` (an unset field).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "" | "never" => Ok(EncapMode::Never),
            "always" => Ok(EncapMode::Always),
            "crosssubnet" => Ok(EncapMode::CrossSubnet),
            _ => Err(UnknownEncapMode(s.to_string())),
        }
    }
}

/// The two encapsulation settings of one IP pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PoolEncap {
    pub ipip: EncapMode,
    pub vxlan: EncapMode,
}

/// How traffic towards one remote node travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encapsulation {
    /// Routed natively on the underlay.
    None,
    /// IPv4-in-IPv4 (IP protocol 4, RFC 2003) through `tunl0`.
    IpIp,
    /// VXLAN (RFC 7348) through `vxlan.calico`.
    Vxlan,
}

/// Whether `remote_node` lies outside the subnet of `this_node` (its address with the prefix
/// it was registered with). Addresses of different families never share a subnet.
pub fn crosses_subnet(this_node: IpNet, remote_node: IpAddr) -> bool {
    !this_node.trunc().contains(&remote_node)
}

/// Decides how traffic from `this_node` to the pod blocks of `remote_node` must travel under
/// `pool`'s settings.
///
/// Our own address never needs a tunnel (our own blocks are local or blackholed). A pool that
/// enables both tunnels is rejected, as Calico's validation does, rather than silently picking
/// one.
pub fn encapsulation(
    pool: PoolEncap,
    this_node: IpNet,
    remote_node: IpAddr,
) -> Result<Encapsulation, EncapError> {
    if pool.ipip != EncapMode::Never && pool.vxlan != EncapMode::Never {
        return Err(EncapError::ConflictingModes {
            ipip: pool.ipip,
            vxlan: pool.vxlan,
        });
    }
    if remote_node == this_node.addr() {
        return Ok(Encapsulation::None);
    }
    if pool.ipip.encapsulates(this_node, remote_node) {
        // IP-in-IP carries IPv4 only (RFC 2003); an IPv6 pair can only go natively.
        if remote_node.is_ipv4() && this_node.addr().is_ipv4() {
            return Ok(Encapsulation::IpIp);
        }
        return Ok(Encapsulation::None);
    }
    if pool.vxlan.encapsulates(this_node, remote_node) {
        return Ok(Encapsulation::Vxlan);
    }
    Ok(Encapsulation::None)
}

/// The next hop of a route towards a remote node's pod block.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NextHop {
    /// The gateway address: the remote node (native, IP-in-IP) or its VTEP tunnel address.
    pub gateway: IpAddr,
    /// The tunnel device the route must point at; `None` for native routing (the kernel picks
    /// the underlay interface from the gateway).
    pub device: Option<&'static str>,
    /// Whether the route needs `onlink`: the gateway is not in any subnet of the tunnel device,
    /// so the kernel must be told to take it as directly reachable there.
    pub onlink: bool,
}

impl NextHop {
    /// The route the FIB must hold for a remote pod `block` reached through this next hop.
    pub fn route_to(&self, block: IpNet) -> fib::Route {
        fib::Route::via(block, fib::NextHop::from(self))
    }
}

impl From<&NextHop> for fib::NextHop {
    fn from(hop: &NextHop) -> Self {
        fib::NextHop {
            gateway: Some(hop.gateway),
            device: hop.device.map(fib::Device::from),
            onlink: hop.onlink,
        }
    }
}

impl Encapsulation {
    /// The next hop for a route to a block of `remote_node`. For VXLAN it needs the remote
    /// VTEP's tunnel address; without one (the remote node has not published its VTEP yet) the
    /// block is not reachable and `None` is returned.
    pub fn next_hop(self, remote_node: IpAddr, remote_vtep: Option<IpAddr>) -> Option<NextHop> {
        match self {
            Encapsulation::None => Some(NextHop {
                gateway: remote_node,
                device: None,
                onlink: false,
            }),
            Encapsulation::IpIp => Some(NextHop {
                gateway: remote_node,
                device: Some(IPIP_DEVICE),
                onlink: true,
            }),
            Encapsulation::Vxlan => remote_vtep.map(|vtep| NextHop {
                gateway: vtep,
                device: Some(if vtep.is_ipv4() {
                    VXLAN_DEVICE
                } else {
                    VXLAN_V6_DEVICE
                }),
                onlink: true,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn pool(ipip: EncapMode, vxlan: EncapMode) -> PoolEncap {
        PoolEncap { ipip, vxlan }
    }
    use EncapMode::*;

    #[test]
    fn never_routes_natively_everywhere() {
        let p = pool(Never, Never);
        for remote in ["10.0.0.2", "10.9.0.2", "192.168.1.1"] {
            assert_eq!(
                encapsulation(p, net("10.0.0.1/24"), ip(remote)).unwrap(),
                Encapsulation::None
            );
        }
    }

    #[test]
    fn always_encapsulates_same_and_other_subnet() {
        for (p, want) in [
            (pool(Always, Never), Encapsulation::IpIp),
            (pool(Never, Always), Encapsulation::Vxlan),
        ] {
            assert_eq!(
                encapsulation(p, net("10.0.0.1/24"), ip("10.0.0.2")).unwrap(),
                want
            );
            assert_eq!(
                encapsulation(p, net("10.0.0.1/24"), ip("10.0.1.2")).unwrap(),
                want
            );
        }
    }

    #[test]
    fn cross_subnet_encapsulates_only_outside_own_prefix() {
        for (p, want) in [
            (pool(CrossSubnet, Never), Encapsulation::IpIp),
            (pool(Never, CrossSubnet), Encapsulation::Vxlan),
        ] {
            let me = net("10.0.0.1/24");
            assert_eq!(
                encapsulation(p, me, ip("10.0.0.254")).unwrap(),
                Encapsulation::None
            );
            assert_eq!(encapsulation(p, me, ip("10.0.1.1")).unwrap(), want);
            assert_eq!(encapsulation(p, me, ip("192.168.0.1")).unwrap(), want);
            // A wider prefix takes the neighbour subnet in.
            assert_eq!(
                encapsulation(p, net("10.0.0.1/16"), ip("10.0.1.1")).unwrap(),
                Encapsulation::None
            );
        }
    }

    #[test]
    fn node_registered_as_host_route_sees_everyone_cross_subnet() {
        let p = pool(CrossSubnet, Never);
        assert_eq!(
            encapsulation(p, net("10.0.0.1/32"), ip("10.0.0.2")).unwrap(),
            Encapsulation::IpIp
        );
        let p6 = pool(Never, CrossSubnet);
        assert_eq!(
            encapsulation(p6, net("fd00::1/128"), ip("fd00::2")).unwrap(),
            Encapsulation::Vxlan
        );
    }

    #[test]
    fn own_address_never_tunnels() {
        let p = pool(Always, Never);
        assert_eq!(
            encapsulation(p, net("10.0.0.1/32"), ip("10.0.0.1")).unwrap(),
            Encapsulation::None
        );
    }

    #[test]
    fn ipv6_pairs_do_not_use_ipip_but_may_use_vxlan() {
        assert_eq!(
            encapsulation(pool(Always, Never), net("fd00::1/64"), ip("fd00:1::1")).unwrap(),
            Encapsulation::None
        );
        assert_eq!(
            encapsulation(pool(Never, CrossSubnet), net("fd00::1/64"), ip("fd00::2")).unwrap(),
            Encapsulation::None
        );
        assert_eq!(
            encapsulation(pool(Never, CrossSubnet), net("fd00::1/64"), ip("fd00:1::2")).unwrap(),
            Encapsulation::Vxlan
        );
    }

    #[test]
    fn different_families_are_cross_subnet() {
        assert!(crosses_subnet(net("10.0.0.1/0"), ip("fd00::1")));
        assert!(!crosses_subnet(net("10.0.0.1/0"), ip("192.168.0.1")));
    }

    #[test]
    fn both_tunnels_enabled_is_rejected() {
        let err = encapsulation(
            pool(Always, CrossSubnet),
            net("10.0.0.1/24"),
            ip("10.0.1.1"),
        );
        assert!(matches!(err, Err(EncapError::ConflictingModes { .. })));
    }

    #[test]
    fn next_hops_match_calico_routes() {
        let node = ip("10.0.1.5");
        assert_eq!(
            Encapsulation::None.next_hop(node, None),
            Some(NextHop {
                gateway: node,
                device: None,
                onlink: false
            })
        );
        assert_eq!(
            Encapsulation::IpIp.next_hop(node, None),
            Some(NextHop {
                gateway: node,
                device: Some("tunl0"),
                onlink: true
            })
        );
        assert_eq!(Encapsulation::Vxlan.next_hop(node, None), None);
        let vtep = ip("192.168.7.0");
        assert_eq!(
            Encapsulation::Vxlan.next_hop(node, Some(vtep)),
            Some(NextHop {
                gateway: vtep,
                device: Some("vxlan.calico"),
                onlink: true
            })
        );
        assert_eq!(
            Encapsulation::Vxlan
                .next_hop(ip("fd00::5"), Some(ip("fd10::")))
                .unwrap()
                .device,
            Some("vxlan-v6.calico")
        );
    }

    #[test]
    fn next_hops_become_fib_routes() {
        let block = net("10.244.2.0/26");
        let ipip = Encapsulation::IpIp.next_hop(ip("10.0.1.5"), None).unwrap();
        assert_eq!(
            ipip.route_to(block),
            fib::Route::via(block, fib::NextHop::onlink(ip("10.0.1.5"), "tunl0"))
        );
        let native = Encapsulation::None.next_hop(ip("10.0.0.2"), None).unwrap();
        assert_eq!(
            native.route_to(block),
            fib::Route::via(block, fib::NextHop::via(ip("10.0.0.2")))
        );
    }

    #[test]
    fn modes_parse_from_calico_spelling() {
        assert_eq!("CrossSubnet".parse::<EncapMode>().unwrap(), CrossSubnet);
        assert_eq!("Always".parse::<EncapMode>().unwrap(), Always);
        assert_eq!("".parse::<EncapMode>().unwrap(), Never);
        assert!("Sometimes".parse::<EncapMode>().is_err());
        for m in [Never, Always, CrossSubnet] {
            assert_eq!(m.to_string().parse::<EncapMode>().unwrap(), m);
        }
    }
}

//! The route value type: what we want the kernel's FIB to hold for one destination.
//!
//! A [`Route`] describes *forwarding* only (destination, table, next hops, MTU). It deliberately
//! has no protocol field: every route this crate programs carries the one protocol id the
//! [`RouteTable`](crate::RouteTable) was configured with, and only routes with that id are ever
//! read back, replaced or deleted (see [`DEFAULT_PROTOCOL`]).
//!
//! The scope is not a field either: it follows from the next hops the way `ip route` derives it
//! (`ip route add 10.0.0.5/32 dev cali123` gets `scope link`). A unicast route whose next hops
//! all lack a gateway is a directly connected destination (RT_SCOPE_LINK, e.g. a /32 to a
//! workload's veth); anything via a gateway, and a blackhole, is RT_SCOPE_UNIVERSE.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// The route protocol id (`rtm_protocol`) this project stamps on its routes by default.
///
/// 80 is free in iproute2's `/etc/iproute2/rt_protos` (which reserves 0-4, 8-16, 18, 42, 99,
/// 186-192) and below 252, so it does not collide with the kernel (2), boot (3), static (4),
/// BIRD (12), Zebra/FRR (11, 186-192) or keepalived (18). It is also the value Calico's felix
/// uses for its own routes, so operators who know `proto 80` recognise it. Operators can give it
/// a name by adding a line `80 calico` to `/etc/iproute2/rt_protos` (or `rt_protos.d/`), then
/// `ip route show proto calico` lists exactly our routes.
pub const DEFAULT_PROTOCOL: u8 = 80;

/// The kernel's main routing table (RT_TABLE_MAIN), where `ip route` without `table` goes.
pub const MAIN_TABLE: u32 = 254;

/// The identity of a route in the FIB: the table and the destination prefix.
///
/// The kernel keys IPv4 routes on (table, prefix, tos, priority) and IPv6 routes on (table,
/// prefix, metric); we never set tos or priority, so within our protocol id a (table, prefix)
/// pair names at most one route, and `NLM_F_REPLACE` on that pair is idempotent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteKey {
    pub table: u32,
    /// Always truncated to its prefix length (host bits zero), as the kernel requires.
    pub destination: IpNet,
}

impl RouteKey {
    /// A key in the main table.
    pub fn main(destination: IpNet) -> Self {
        Self::new(MAIN_TABLE, destination)
    }

    pub fn new(table: u32, destination: IpNet) -> Self {
        Self {
            table,
            destination: destination.trunc(),
        }
    }
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.table == MAIN_TABLE {
            write!(f, "{}", self.destination)
        } else {
            write!(f, "{} table {}", self.destination, self.table)
        }
    }
}

/// An outgoing interface, by name (resolved against the FIB's namespace when programmed) or
/// by ifindex (as the kernel reports it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Device {
    Name(String),
    Index(u32),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Name(n) => f.write_str(n),
            Device::Index(i) => write!(f, "if#{i}"),
        }
    }
}

impl From<&str> for Device {
    fn from(name: &str) -> Self {
        Device::Name(name.to_owned())
    }
}

impl From<u32> for Device {
    fn from(index: u32) -> Self {
        Device::Index(index)
    }
}

/// One next hop of a unicast route.
///
/// * `via <node ip>` (same subnet): gateway only, or gateway + device.
/// * `via <node ip> dev tunl0 onlink` (IP-in-IP) and `via <vtep ip> dev vxlan.calico onlink`
///   (VXLAN): gateway + device + `onlink`, because the gateway is not inside any subnet of the
///   tunnel device; RTNH_F_ONLINK tells the kernel not to check that (`fib_check_nh`).
/// * `dev cali123` (a workload's /32): device only, which makes the route scope link.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NextHop {
    pub gateway: Option<IpAddr>,
    pub device: Option<Device>,
    pub onlink: bool,
}

impl NextHop {
    /// `via <gateway>`, the kernel picks the device from the connected route.
    pub fn via(gateway: IpAddr) -> Self {
        Self {
            gateway: Some(gateway),
            device: None,
            onlink: false,
        }
    }

    /// `via <gateway> dev <device>`.
    pub fn via_dev(gateway: IpAddr, device: impl Into<Device>) -> Self {
        Self {
            gateway: Some(gateway),
            device: Some(device.into()),
            onlink: false,
        }
    }

    /// `via <gateway> dev <device> onlink`, for IP-in-IP and VXLAN tunnel routes.
    pub fn onlink(gateway: IpAddr, device: impl Into<Device>) -> Self {
        Self {
            gateway: Some(gateway),
            device: Some(device.into()),
            onlink: true,
        }
    }

    /// `dev <device>` (scope link): a directly attached destination such as a workload.
    pub fn dev(device: impl Into<Device>) -> Self {
        Self {
            gateway: None,
            device: Some(device.into()),
            onlink: false,
        }
    }
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if let Some(gw) = self.gateway {
            write!(f, "via {gw}")?;
            sep = " ";
        }
        if let Some(dev) = &self.device {
            write!(f, "{sep}dev {dev}")?;
        }
        if self.onlink {
            f.write_str(" onlink")?;
        }
        Ok(())
    }
}

/// The next hops of a unicast route, shared between routes (see [`RouteKind::Unicast`]).
pub type NextHops = std::sync::Arc<[NextHop]>;

/// What the kernel does with packets to the destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// RTN_BLACKHOLE: silently drop. Used for the node's own IPAM blocks, so traffic to an
    /// unallocated address of a local block dies here instead of following the default route
    /// (and so that the block is advertised from a route that always exists).
    Blackhole,
    /// RTN_UNICAST via one next hop, or several for ECMP (RTA_MULTIPATH). Shared, so that
    /// the many routes over the same next hops hold one copy of them (a table of a million
    /// routes via one ToR has one).
    Unicast(NextHops),
}

/// A route we want in (or found in) the kernel FIB.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    /// The destination prefix; host bits are ignored (the kernel rejects them, we truncate).
    pub destination: IpNet,
    pub kind: RouteKind,
    /// Path MTU for the route (RTAX_MTU), e.g. the tunnel MTU for IP-in-IP/VXLAN routes.
    pub mtu: Option<u32>,
    /// Routing table id, [`MAIN_TABLE`] unless policy routing needs another.
    pub table: u32,
}

impl Route {
    /// `blackhole <destination>` in the main table.
    pub fn blackhole(destination: IpNet) -> Self {
        Self {
            destination: destination.trunc(),
            kind: RouteKind::Blackhole,
            mtu: None,
            table: MAIN_TABLE,
        }
    }

    /// A unicast route in the main table; several next hops make an ECMP route.
    pub fn unicast(destination: IpNet, next_hops: Vec<NextHop>) -> Self {
        Self {
            destination: destination.trunc(),
            kind: RouteKind::Unicast(next_hops.into()),
            mtu: None,
            table: MAIN_TABLE,
        }
    }

    /// A unicast route over one next hop in the main table.
    pub fn via(destination: IpNet, next_hop: NextHop) -> Self {
        Self::unicast(destination, vec![next_hop])
    }

    pub fn with_mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }

    pub fn with_table(mut self, table: u32) -> Self {
        self.table = table;
        self
    }

    pub fn key(&self) -> RouteKey {
        RouteKey::new(self.table, self.destination)
    }

    /// The next hops (empty for a blackhole).
    pub fn next_hops(&self) -> &[NextHop] {
        match &self.kind {
            RouteKind::Blackhole => &[],
            RouteKind::Unicast(nhs) => nhs,
        }
    }

    /// Whether the kernel gets this route with RT_SCOPE_LINK: unicast and no next hop has a
    /// gateway (a destination directly on the link, like `ip route add X dev Y`).
    pub fn is_link_scope(&self) -> bool {
        match &self.kind {
            RouteKind::Blackhole => false,
            RouteKind::Unicast(nhs) => nhs.iter().all(|nh| nh.gateway.is_none()),
        }
    }

    /// Checks what can be checked without the kernel: at least one next hop, each with a
    /// gateway or a device, `onlink` only with both, gateways of the destination's family
    /// (except an IPv6 gateway for an IPv4 destination, RFC 5549, sent as RTA_VIA).
    pub fn validate(&self) -> Result<(), InvalidRoute> {
        let RouteKind::Unicast(nhs) = &self.kind else {
            return Ok(());
        };
        if nhs.is_empty() {
            return Err(InvalidRoute::NoNextHop);
        }
        for nh in nhs.iter() {
            if nh.gateway.is_none() && nh.device.is_none() {
                return Err(InvalidRoute::EmptyNextHop);
            }
            if nh.onlink && (nh.gateway.is_none() || nh.device.is_none()) {
                return Err(InvalidRoute::OnlinkNeedsGatewayAndDevice);
            }
            if let Some(gw) = nh.gateway {
                if matches!((self.destination, gw), (IpNet::V6(_), IpAddr::V4(_))) {
                    return Err(InvalidRoute::GatewayFamily(gw));
                }
                if gw.is_unspecified() {
                    return Err(InvalidRoute::GatewayFamily(gw));
                }
            }
        }
        if nhs.len() > 1 && nhs.iter().any(|nh| nh.gateway.is_none()) {
            // The kernel accepts device-only multipath legs, but they make no sense for us
            // and cannot be given a single scope; refuse them early.
            return Err(InvalidRoute::MultipathWithoutGateway);
        }
        Ok(())
    }

    /// Whether the FIB's `actual` route forwards as this desired route asks.
    ///
    /// Like `canonical` equality, except that a desired next hop without a device matches an
    /// actual one on any device: the kernel fills in the outgoing interface it resolved for a
    /// plain `via <gateway>` route (RTA_OIF in dumps), and that must not count as a change,
    /// or every reconcile would rewrite (flap) such routes.
    pub fn is_satisfied_by(&self, actual: &Route) -> bool {
        if self.key() != actual.key() || self.mtu != actual.mtu {
            return false;
        }
        match (&self.kind, &actual.kind) {
            (RouteKind::Blackhole, RouteKind::Blackhole) => true,
            (RouteKind::Unicast(want), RouteKind::Unicast(have)) => {
                let leg_ok = |w: &NextHop, h: &NextHop| {
                    w.gateway == h.gateway
                        && w.onlink == h.onlink
                        && (w.device.is_none() || w.device == h.device)
                };
                match (&want[..], &have[..]) {
                    ([w], [h]) => return leg_ok(w, h),
                    _ if want.len() != have.len() => return false,
                    _ => {}
                }
                let mut used = vec![false; have.len()];
                // Exact device matches first, so a wildcard leg cannot steal a leg that a
                // device-specific one needs.
                let mut order: Vec<&NextHop> = want.iter().collect();
                order.sort_by_key(|nh| nh.device.is_none());
                order.into_iter().all(|w| {
                    let found = have
                        .iter()
                        .enumerate()
                        .position(|(i, h)| !used[i] && leg_ok(w, h));
                    found.map(|i| used[i] = true).is_some()
                })
            }
            _ => false,
        }
    }

    /// The route with next hops in a canonical order, so that two routes that forward the same
    /// way compare equal whatever order the kernel (or the caller) listed the ECMP legs in.
    pub fn canonical(&self) -> Route {
        let mut r = self.clone();
        r.destination = r.destination.trunc();
        if let RouteKind::Unicast(nhs) = &mut r.kind {
            let mut sorted = nhs.to_vec();
            sorted.sort();
            sorted.dedup();
            *nhs = sorted.into();
        }
        r
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            RouteKind::Blackhole => write!(f, "blackhole {}", self.destination)?,
            RouteKind::Unicast(nhs) => {
                write!(f, "{}", self.destination)?;
                for nh in nhs.iter() {
                    write!(f, " {nh}")?;
                }
            }
        }
        if let Some(mtu) = self.mtu {
            write!(f, " mtu {mtu}")?;
        }
        if self.table != MAIN_TABLE {
            write!(f, " table {}", self.table)?;
        }
        Ok(())
    }
}

/// Why a route was refused before reaching the kernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRoute {
    #[error("unicast route without next hops")]
    NoNextHop,
    #[error("next hop with neither gateway nor device")]
    EmptyNextHop,
    #[error("onlink next hop needs both a gateway and a device")]
    OnlinkNeedsGatewayAndDevice,
    #[error("gateway {0} does not fit the destination's address family")]
    GatewayFamily(IpAddr),
    #[error("multipath route with a next hop without gateway")]
    MultipathWithoutGateway,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn key_truncates_host_bits() {
        let r = Route::blackhole(net("10.65.1.7/26"));
        assert_eq!(r.key(), RouteKey::main(net("10.65.1.0/26")));
        assert_eq!(r.destination, net("10.65.1.0/26"));
    }

    #[test]
    fn scope_follows_gateways() {
        assert!(Route::via(net("10.65.1.5/32"), NextHop::dev("cali1")).is_link_scope());
        assert!(!Route::via(net("10.65.2.0/26"), NextHop::via(ip("192.168.1.2"))).is_link_scope());
        assert!(!Route::blackhole(net("10.65.1.0/26")).is_link_scope());
    }

    #[test]
    fn validation_rejects_nonsense() {
        let d = net("10.65.2.0/26");
        assert_eq!(
            Route::unicast(d, vec![]).validate(),
            Err(InvalidRoute::NoNextHop)
        );
        let mut nh = NextHop::dev("tunl0");
        nh.onlink = true;
        assert_eq!(
            Route::via(d, nh).validate(),
            Err(InvalidRoute::OnlinkNeedsGatewayAndDevice)
        );
        assert_eq!(
            Route::via(net("fd00:1::/64"), NextHop::via(ip("10.0.0.1"))).validate(),
            Err(InvalidRoute::GatewayFamily(ip("10.0.0.1")))
        );
        assert!(Route::via(d, NextHop::via(ip("fe80::1")))
            .validate()
            .is_ok());
        assert!(Route::via(d, NextHop::onlink(ip("192.168.9.2"), "tunl0"))
            .validate()
            .is_ok());
    }

    #[test]
    fn canonical_ignores_next_hop_order() {
        let a = Route::unicast(
            net("10.65.2.0/26"),
            vec![NextHop::via(ip("10.0.0.2")), NextHop::via(ip("10.0.0.1"))],
        );
        let b = Route::unicast(
            net("10.65.2.0/26"),
            vec![NextHop::via(ip("10.0.0.1")), NextHop::via(ip("10.0.0.2"))],
        );
        assert_ne!(a, b);
        assert_eq!(a.canonical(), b.canonical());
    }

    #[test]
    fn kernel_chosen_device_satisfies_a_gateway_only_route() {
        let want = Route::via(net("10.65.2.0/26"), NextHop::via(ip("10.0.0.2")));
        let have = Route::via(net("10.65.2.0/26"), NextHop::via_dev(ip("10.0.0.2"), 3));
        assert!(want.is_satisfied_by(&have));
        assert!(!have.is_satisfied_by(&want));
        let other = Route::via(net("10.65.2.0/26"), NextHop::via_dev(ip("10.0.0.3"), 3));
        assert!(!want.is_satisfied_by(&other));
        assert!(!want.clone().with_mtu(1400).is_satisfied_by(&have));
        let ecmp = |a: u32, b: u32| {
            Route::unicast(
                net("10.65.2.0/26"),
                vec![
                    NextHop::via_dev(ip("10.0.0.2"), a),
                    NextHop::via_dev(ip("10.0.0.2"), b),
                ],
            )
        };
        assert!(ecmp(1, 2).is_satisfied_by(&ecmp(2, 1)));
        assert!(!ecmp(1, 2).is_satisfied_by(&ecmp(1, 1)));
    }

    #[test]
    fn display_reads_like_ip_route() {
        let r = Route::via(
            net("10.65.2.0/26"),
            NextHop::onlink(ip("192.168.9.2"), "tunl0"),
        )
        .with_mtu(1440);
        assert_eq!(
            r.to_string(),
            "10.65.2.0/26 via 192.168.9.2 dev tunl0 onlink mtu 1440"
        );
    }
}

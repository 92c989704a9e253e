//! [`Route`] ↔ rtnetlink `RouteMessage` (RTM_NEWROUTE / RTM_DELROUTE / dump entries).
//!
//! Pure functions, so the mapping is unit-tested without a kernel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric, RouteNextHop,
    RouteNextHopFlags, RouteProtocol, RouteScope, RouteType, RouteVia,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{RouteMessageBuilder, RouteNextHopBuilder};

use crate::route::{Device, InvalidRoute, NextHop, Route, RouteKey, RouteKind};

/// Why a resolved route cannot be encoded (it still names a device by name, or the builder
/// refused an address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EncodeError {
    Invalid(InvalidRoute),
    UnresolvedDevice(String),
}

fn family(dst: &IpNet) -> AddressFamily {
    match dst {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    }
}

fn ifindex(
    dev: &Option<Device>,
    resolve: &impl Fn(&str) -> Option<u32>,
) -> Result<Option<u32>, EncodeError> {
    match dev {
        None => Ok(None),
        Some(Device::Index(i)) => Ok(Some(*i)),
        Some(Device::Name(n)) => resolve(n)
            .map(Some)
            .ok_or_else(|| EncodeError::UnresolvedDevice(n.clone())),
    }
}

/// RTM_NEWROUTE body for `route` with our protocol id (sent with NLM_F_CREATE|NLM_F_REPLACE).
/// Device names are turned into ifindexes by `resolve`.
pub(crate) fn replace_message(
    route: &Route,
    protocol: u8,
    resolve: impl Fn(&str) -> Option<u32>,
) -> Result<RouteMessage, EncodeError> {
    route.validate().map_err(EncodeError::Invalid)?;
    let dst = route.destination.trunc();
    let invalid = |gw| EncodeError::Invalid(InvalidRoute::GatewayFamily(gw));
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dst.addr(), dst.prefix_len())
        .map_err(|_| EncodeError::Invalid(InvalidRoute::NoNextHop))?
        .table_id(route.table)
        .protocol(RouteProtocol::from(protocol));
    match &route.kind {
        RouteKind::Blackhole => {
            b = b.kind(RouteType::BlackHole);
        }
        RouteKind::Unicast(nhs) => {
            b = b.kind(RouteType::Unicast);
            if route.is_link_scope() {
                b = b.scope(RouteScope::Link);
            }
            if let [nh] = nhs.as_slice() {
                if let Some(gw) = nh.gateway {
                    b = b.gateway(gw).map_err(|_| invalid(gw))?;
                }
                if let Some(i) = ifindex(&nh.device, &resolve)? {
                    b = b.output_interface(i);
                }
                if nh.onlink {
                    b = b.onlink();
                }
            } else {
                let mut legs = Vec::with_capacity(nhs.len());
                for nh in nhs {
                    let mut leg = RouteNextHopBuilder::new(family(&dst));
                    if let Some(gw) = nh.gateway {
                        leg = leg.via(gw).map_err(|_| invalid(gw))?;
                    }
                    if let Some(i) = ifindex(&nh.device, &resolve)? {
                        leg = leg.interface(i);
                    }
                    if nh.onlink {
                        leg = leg.onlink();
                    }
                    legs.push(leg.build());
                }
                b = b.multipath(legs);
            }
        }
    }
    let mut msg = b.build();
    if let Some(mtu) = route.mtu {
        msg.attributes
            .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
    }
    Ok(msg)
}

/// RTM_DELROUTE body that matches our route with this key and nothing else.
///
/// The kernel's delete matching (`fib_table_delete`, `ip6_route_del`) treats unset fields as
/// wildcards; we set the protocol so a route of another protocol with the same prefix never
/// matches, type RTN_UNSPEC and scope RT_SCOPE_NOWHERE so any type and scope of ours does.
pub(crate) fn delete_message(key: &RouteKey, protocol: u8) -> RouteMessage {
    let dst = key.destination.trunc();
    let mut msg = RouteMessage::default();
    msg.header.address_family = family(&dst);
    msg.header.destination_prefix_length = dst.prefix_len();
    msg.header.protocol = RouteProtocol::from(protocol);
    msg.header.scope = RouteScope::NoWhere;
    msg.header.kind = RouteType::Unspec;
    if key.table > 255 {
        msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
    } else {
        msg.header.table = key.table as u8;
    }
    msg.attributes.push(RouteAttribute::Table(key.table));
    if dst.prefix_len() > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst.addr())));
    }
    msg
}

/// RTM_GETROUTE dump request for one address family.
pub(crate) fn dump_message(v6: bool) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    msg
}

fn address(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn via(v: &RouteVia) -> Option<IpAddr> {
    match v {
        RouteVia::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteVia::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn gateway_of(attrs: &[RouteAttribute]) -> Option<IpAddr> {
    attrs.iter().find_map(|a| match a {
        RouteAttribute::Gateway(g) => address(g),
        RouteAttribute::Via(v) => via(v),
        _ => None,
    })
}

fn leg(nh: &RouteNextHop) -> NextHop {
    NextHop {
        gateway: gateway_of(&nh.attributes),
        device: (nh.interface_index != 0).then_some(Device::Index(nh.interface_index)),
        onlink: nh.flags.contains(RouteNextHopFlags::Onlink),
    }
}

/// The route a dump entry describes, if it is ours.
///
/// `None`: not our protocol (or not an IPv4/IPv6 route): invisible to us. `Some((key, None))`:
/// ours, but of a shape [`Route`] does not model (e.g. `unreachable`), so reconcile replaces
/// or deletes it. `Some((key, Some(route)))`: ours, devices as ifindex.
pub(crate) fn parse_route(msg: &RouteMessage, protocol: u8) -> Option<(RouteKey, Option<Route>)> {
    let h = &msg.header;
    if u8::from(h.protocol) != protocol {
        return None;
    }
    let unspecified = match h.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut dst_addr = unspecified;
    let mut table = u32::from(h.table);
    let mut oif = None;
    let mut legs = None;
    let mut mtu = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst_addr = address(a)?,
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::MultiPath(nhs) => legs = Some(nhs.iter().map(leg).collect()),
            RouteAttribute::Metrics(ms) => {
                mtu = ms.iter().find_map(|m| match m {
                    RouteMetric::Mtu(v) => Some(*v),
                    _ => None,
                })
            }
            _ => {}
        }
    }
    let destination = IpNet::new(dst_addr, h.destination_prefix_length).ok()?;
    let key = RouteKey::new(table, destination);
    let kind = match h.kind {
        RouteType::BlackHole => RouteKind::Blackhole,
        RouteType::Unicast => RouteKind::Unicast(legs.unwrap_or_else(|| {
            vec![NextHop {
                gateway: gateway_of(&msg.attributes),
                device: oif.filter(|i| *i != 0).map(Device::Index),
                onlink: h.flags.contains(RouteFlags::Onlink),
            }]
        })),
        _ => return Some((key, None)),
    };
    Some((
        key,
        Some(Route {
            destination: key.destination,
            kind,
            mtu,
            table,
        }),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::route::MAIN_TABLE;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn no_links(_: &str) -> Option<u32> {
        None
    }

    #[test]
    fn device_names_are_resolved_while_encoding() {
        let r = Route::via(net("10.65.1.5/32"), NextHop::dev("cali1"));
        let msg = replace_message(&r, 80, |n| (n == "cali1").then_some(9)).unwrap();
        let parsed = parse_route(&msg, 80).unwrap().1.unwrap();
        assert_eq!(parsed, Route::via(net("10.65.1.5/32"), NextHop::dev(9)));
    }

    fn round_trip(r: &Route) -> Route {
        let msg = replace_message(r, 80, no_links).unwrap();
        assert_eq!(u8::from(msg.header.protocol), 80);
        parse_route(&msg, 80).unwrap().1.unwrap()
    }

    #[test]
    fn encodes_and_parses_every_shape() {
        let routes = [
            Route::blackhole(net("10.65.1.0/26")),
            Route::via(net("10.65.1.5/32"), NextHop::dev(7)),
            Route::via(net("10.65.2.0/26"), NextHop::via_dev(ip("192.168.1.2"), 3)),
            Route::via(net("10.65.3.0/26"), NextHop::onlink(ip("192.168.9.3"), 4)).with_mtu(1440),
            Route::unicast(
                net("10.65.4.0/26"),
                vec![
                    NextHop::via_dev(ip("192.168.1.2"), 3),
                    NextHop::via_dev(ip("192.168.2.2"), 5),
                ],
            ),
            Route::via(net("fd00:65:2::/122"), NextHop::via_dev(ip("fd00::2"), 3)).with_table(1000),
            Route::blackhole(net("fd00:65:1::/122")),
        ];
        for r in &routes {
            assert_eq!(&round_trip(r), r, "{r}");
        }
    }

    #[test]
    fn link_scope_only_without_gateway() {
        let m = replace_message(
            &Route::via(net("10.65.1.5/32"), NextHop::dev(7)),
            80,
            no_links,
        )
        .unwrap();
        assert_eq!(m.header.scope, RouteScope::Link);
        let m = replace_message(&Route::blackhole(net("10.65.1.0/26")), 80, no_links).unwrap();
        assert_eq!(m.header.scope, RouteScope::Universe);
        assert_eq!(m.header.kind, RouteType::BlackHole);
    }

    #[test]
    fn unresolved_device_is_refused() {
        let r = Route::via(net("10.65.1.5/32"), NextHop::dev("cali1"));
        assert_eq!(
            replace_message(&r, 80, no_links),
            Err(EncodeError::UnresolvedDevice("cali1".into()))
        );
    }

    #[test]
    fn other_protocols_are_invisible_and_odd_shapes_are_flagged() {
        let r = Route::blackhole(net("10.65.1.0/26"));
        let msg = replace_message(&r, 4, no_links).unwrap();
        assert_eq!(parse_route(&msg, 80), None);
        let mut msg = replace_message(&r, 80, no_links).unwrap();
        msg.header.kind = RouteType::Unreachable;
        assert_eq!(parse_route(&msg, 80), Some((r.key(), None)));
    }

    #[test]
    fn delete_matches_only_our_protocol() {
        let key = RouteKey::new(MAIN_TABLE, net("10.65.1.0/26"));
        let m = delete_message(&key, 80);
        assert_eq!(u8::from(m.header.protocol), 80);
        assert_eq!(m.header.scope, RouteScope::NoWhere);
        assert_eq!(m.header.table, 254);
    }
}

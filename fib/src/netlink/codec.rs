//! [`Route`] ↔ rtnetlink `RouteMessage` (RTM_NEWROUTE / RTM_DELROUTE / dump entries).
//!
//! Pure functions, so the mapping is unit-tested without a kernel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol,
    RouteScope, RouteType,
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

// Kernel ABI constants (include/uapi/linux/rtnetlink.h, linux/socket.h) for the raw dump
// decoder below.
const RTM_NEWROUTE: u16 = 24;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_METRICS: u16 = 8;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
const RTA_VIA: u16 = 18;
const RTAX_MTU: u16 = 2;
const RTN_UNICAST: u8 = 1;
const RTN_BLACKHOLE: u8 = 6;
const RTNH_F_ONLINK: u32 = 4;
/// sizeof(struct nlmsghdr) + sizeof(struct rtmsg).
const ROUTE_HEADERS: usize = 16 + 12;
/// Strips NLA_F_NESTED and NLA_F_NET_BYTEORDER from an attribute type.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// Iterates `struct rtattr`s (type, value); stops at the first malformed one.
struct Attrs<'a>(&'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.0;
        if b.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let kind = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            self.0 = &[];
            return None;
        }
        let value = &b[4..len];
        self.0 = b.get((len + 3) & !3..).unwrap_or(&[]);
        Some((kind, value))
    }
}

fn u32_of(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?))
}

fn addr_of(v: &[u8]) -> Option<IpAddr> {
    match v.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(v).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(v).ok()?)),
        _ => None,
    }
}

/// RTA_VIA: `struct rtvia { __kernel_sa_family_t rtvia_family; __u8 rtvia_addr[]; }`.
fn via_of(v: &[u8]) -> Option<IpAddr> {
    addr_of(v.get(2..)?)
}

/// RTA_MULTIPATH: a sequence of `struct rtnexthop { len, flags, hops, ifindex }` each followed
/// by its own attributes.
fn legs_of(mut v: &[u8]) -> Vec<NextHop> {
    let mut legs = Vec::new();
    while v.len() >= 8 {
        let len = usize::from(u16::from_ne_bytes([v[0], v[1]]));
        if len < 8 || len > v.len() {
            break;
        }
        let flags = u32::from(v[2]);
        let ifindex = u32::from_ne_bytes([v[4], v[5], v[6], v[7]]);
        let mut gateway = None;
        for (kind, value) in Attrs(&v[8..len]) {
            match kind {
                RTA_GATEWAY => gateway = addr_of(value),
                RTA_VIA => gateway = via_of(value),
                _ => {}
            }
        }
        legs.push(NextHop {
            gateway,
            device: (ifindex != 0).then_some(Device::Index(ifindex)),
            onlink: flags & RTNH_F_ONLINK != 0,
        });
        v = v.get((len + 3) & !3..).unwrap_or(&[]);
    }
    legs
}

const RTM_NEWLINK: u16 = 16;
const IFLA_IFNAME: u16 = 3;
/// sizeof(struct nlmsghdr) + sizeof(struct ifinfomsg).
const LINK_HEADERS: usize = 16 + 16;

/// Name and ifindex of a raw RTM_NEWLINK dump entry. Read from the bytes so that a link
/// attribute this crate's decoder does not understand can never make a reconcile fail.
pub(crate) fn parse_link_raw(raw: &[u8]) -> Option<(String, u32)> {
    if raw.len() < LINK_HEADERS || u16::from_ne_bytes([raw[4], raw[5]]) != RTM_NEWLINK {
        return None;
    }
    let index = u32::from_ne_bytes([raw[20], raw[21], raw[22], raw[23]]);
    let name = Attrs(&raw[LINK_HEADERS..])
        .find(|(kind, _)| *kind == IFLA_IFNAME)?
        .1;
    // IFLA_IFNAME is NUL-terminated.
    let name = name.split(|b| *b == 0).next()?;
    Some((String::from_utf8_lossy(name).into_owned(), index))
}

/// The route a raw RTM_NEWROUTE dump entry (nlmsghdr included) describes, if it is ours.
///
/// Decoded straight from the bytes rather than through `RouteMessage`: a reconcile reads back
/// every route we own, and this avoids one allocation per attribute. Only the fields [`Route`]
/// models are read; the protocol byte is checked first, so other protocols' routes cost
/// nothing.
///
/// `None`: not our protocol, not IPv4/IPv6, or malformed: invisible to us. `Some((key,
/// None))`: ours, but of a shape [`Route`] does not model (e.g. `unreachable`), so reconcile
/// replaces or deletes it. `Some((key, Some(route)))`: ours, devices as ifindex.
pub(crate) fn parse_route_raw(raw: &[u8], protocol: u8) -> Option<(RouteKey, Option<Route>)> {
    if raw.len() < ROUTE_HEADERS || u16::from_ne_bytes([raw[4], raw[5]]) != RTM_NEWROUTE {
        return None;
    }
    let rtm = &raw[16..ROUTE_HEADERS];
    let (family, dst_len, header_table, proto, kind) = (rtm[0], rtm[1], rtm[4], rtm[5], rtm[7]);
    let rtm_flags = u32::from_ne_bytes([rtm[8], rtm[9], rtm[10], rtm[11]]);
    if proto != protocol {
        return None;
    }
    let mut dst = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AF_INET6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut table = u32::from(header_table);
    let (mut oif, mut gateway, mut legs, mut mtu) = (None, None, None, None);
    for (attr, value) in Attrs(&raw[ROUTE_HEADERS..]) {
        match attr {
            RTA_DST => dst = addr_of(value)?,
            RTA_TABLE => table = u32_of(value)?,
            RTA_OIF => oif = u32_of(value),
            RTA_GATEWAY => gateway = addr_of(value),
            RTA_VIA => gateway = via_of(value),
            RTA_MULTIPATH => legs = Some(legs_of(value)),
            RTA_METRICS => {
                mtu = Attrs(value)
                    .find(|(m, _)| *m == RTAX_MTU)
                    .and_then(|(_, v)| u32_of(v))
            }
            _ => {}
        }
    }
    let destination = IpNet::new(dst, dst_len).ok()?;
    let key = RouteKey::new(table, destination);
    let kind = match kind {
        RTN_BLACKHOLE => RouteKind::Blackhole,
        RTN_UNICAST => RouteKind::Unicast(legs.unwrap_or_else(|| {
            vec![NextHop {
                gateway,
                device: oif.filter(|i| *i != 0).map(Device::Index),
                onlink: rtm_flags & RTNH_F_ONLINK != 0,
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

    /// The bytes the kernel would send for `msg` in a dump.
    fn wire(msg: RouteMessage) -> Vec<u8> {
        use rtnetlink::packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
        use rtnetlink::packet_route::RouteNetlinkMessage;
        let mut m = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(msg)),
        );
        m.finalize();
        let mut buf = vec![0; m.buffer_len()];
        m.serialize(&mut buf);
        buf
    }

    fn parse_route(msg: &RouteMessage, protocol: u8) -> Option<(RouteKey, Option<Route>)> {
        parse_route_raw(&wire(msg.clone()), protocol)
    }

    #[test]
    fn link_name_and_index_from_the_wire() {
        use rtnetlink::packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
        use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
        use rtnetlink::packet_route::RouteNetlinkMessage;
        let mut link = LinkMessage::default();
        link.header.index = 42;
        link.attributes.push(LinkAttribute::Mtu(1500));
        link.attributes
            .push(LinkAttribute::IfName("cali0123".into()));
        let mut m = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)),
        );
        m.finalize();
        let mut buf = vec![0; m.buffer_len()];
        m.serialize(&mut buf);
        assert_eq!(parse_link_raw(&buf), Some(("cali0123".into(), 42)));
        assert_eq!(parse_link_raw(&buf[..20]), None);
    }

    #[test]
    fn truncated_or_garbage_entries_are_skipped() {
        let msg = replace_message(&Route::blackhole(net("10.65.1.0/26")), 80, no_links).unwrap();
        let bytes = wire(msg);
        for cut in 0..bytes.len() {
            // Must not panic; a cut inside the attributes may still yield a route.
            let _ = parse_route_raw(&bytes[..cut], 80);
        }
        assert_eq!(parse_route_raw(&[0xff; 64], 80), None);
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

//! [`Route`] ↔ rtnetlink wire format: RTM_NEWROUTE / RTM_DELROUTE requests, nexthop objects
//! (RTM_NEWNEXTHOP / RTM_DELNEXTHOP), dump requests, and dump entries.
//!
//! Requests are written straight into the socket's transmit buffer (`struct rtmsg` /
//! `struct nhmsg` followed by `struct rtattr`s, include/uapi/linux/rtnetlink.h and nexthop.h)
//! rather than built as `RouteMessage` values: a batch of 100k routes then costs no
//! allocation per route. The unit tests check the bytes against what rtnetlink's
//! `RouteMessageBuilder` produces for the same route, and parse them back with the dump
//! decoder. Pure functions throughout, tested without a kernel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};

use super::socket::Request;
use crate::route::{Device, InvalidRoute, NextHop, Route, RouteKey, RouteKind};

/// Why a resolved route cannot be encoded (it still names a device by name, or an address
/// does not fit the route's family).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EncodeError {
    Invalid(InvalidRoute),
    UnresolvedDevice(String),
}

fn family_of(dst: &IpNet) -> u8 {
    match dst {
        IpNet::V4(_) => AF_INET,
        IpNet::V6(_) => AF_INET6,
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

/// Appends one `struct rtattr` (4-byte header, value, padding to 4 bytes).
fn put_attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len() + ((4 - len % 4) % 4), 0);
}

fn put_u32(buf: &mut Vec<u8>, kind: u16, value: u32) {
    put_attr(buf, kind, &value.to_ne_bytes());
}

fn put_addr(buf: &mut Vec<u8>, kind: u16, addr: IpAddr) {
    match addr {
        IpAddr::V4(a) => put_attr(buf, kind, &a.octets()),
        IpAddr::V6(a) => put_attr(buf, kind, &a.octets()),
    }
}

/// A gateway of a route of family `family`: RTA_GATEWAY of the same family, or RTA_VIA
/// (`struct rtvia`) for an IPv6 gateway of an IPv4 route (RFC 5549).
fn put_gateway(buf: &mut Vec<u8>, family: u8, gw: IpAddr) -> Result<(), EncodeError> {
    match (family, gw) {
        (AF_INET, IpAddr::V4(_)) | (AF_INET6, IpAddr::V6(_)) => put_addr(buf, RTA_GATEWAY, gw),
        (AF_INET, IpAddr::V6(a)) => {
            let mut via = [0u8; 18];
            via[..2].copy_from_slice(&u16::from(AF_INET6).to_ne_bytes());
            via[2..].copy_from_slice(&a.octets());
            put_attr(buf, RTA_VIA, &via);
        }
        _ => return Err(EncodeError::Invalid(InvalidRoute::GatewayFamily(gw))),
    }
    Ok(())
}

/// Starts a nested attribute; [`end_nest`] fills in its length.
fn begin_nest(buf: &mut Vec<u8>, kind: u16) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&kind.to_ne_bytes());
    at
}

fn end_nest(buf: &mut [u8], at: usize) {
    let len = (buf.len() - at) as u16;
    buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
}

/// `struct rtmsg`.
#[allow(clippy::too_many_arguments)]
fn put_rtmsg(
    buf: &mut Vec<u8>,
    family: u8,
    dst_len: u8,
    table: u8,
    protocol: u8,
    scope: u8,
    kind: u8,
    flags: u32,
) {
    buf.extend_from_slice(&[family, dst_len, 0, 0, table, protocol, scope, kind]);
    buf.extend_from_slice(&flags.to_ne_bytes());
}

/// RTA_DST and, for tables beyond the 8-bit `rtm_table`, RTA_TABLE.
fn put_destination(buf: &mut Vec<u8>, dst: &IpNet, table: u32) {
    put_addr(buf, RTA_DST, dst.addr());
    if table > 255 {
        put_u32(buf, RTA_TABLE, table);
    }
}

/// `rtm_table` for `table`: the id itself, or RT_TABLE_MAIN with the real id in RTA_TABLE
/// (as rtnetlink's builder does; the kernel prefers RTA_TABLE).
fn header_table(table: u32) -> u8 {
    u8::try_from(table).unwrap_or(RT_TABLE_MAIN)
}

/// Appends the body of an RTM_NEWROUTE for `route` with our protocol id; returns the request
/// (sent with NLM_F_CREATE|NLM_F_REPLACE). Device names are turned into ifindexes by
/// `resolve`. With `nh_id`, the single next hop is the kernel nexthop object of that id
/// (RTA_NH_ID) instead of inline RTA_GATEWAY/RTA_OIF/RTNH_F_ONLINK. On error, whatever was
/// appended is garbage: the caller truncates.
pub(crate) fn encode_replace(
    buf: &mut Vec<u8>,
    route: &Route,
    protocol: u8,
    nh_id: Option<u32>,
    resolve: impl Fn(&str) -> Option<u32>,
) -> Result<Request, EncodeError> {
    route.validate().map_err(EncodeError::Invalid)?;
    let dst = route.destination.trunc();
    let family = family_of(&dst);
    let table = header_table(route.table);
    let hdr = buf.len();
    match &route.kind {
        RouteKind::Blackhole => {
            put_rtmsg(
                buf,
                family,
                dst.prefix_len(),
                table,
                protocol,
                RT_SCOPE_UNIVERSE,
                RTN_BLACKHOLE,
                0,
            );
            put_destination(buf, &dst, route.table);
        }
        RouteKind::Unicast(nhs) => {
            let scope = if route.is_link_scope() {
                RT_SCOPE_LINK
            } else {
                RT_SCOPE_UNIVERSE
            };
            put_rtmsg(
                buf,
                family,
                dst.prefix_len(),
                table,
                protocol,
                scope,
                RTN_UNICAST,
                0,
            );
            put_destination(buf, &dst, route.table);
            match (nh_id, &nhs[..]) {
                (Some(id), [_]) => put_u32(buf, RTA_NH_ID, id),
                (_, [nh]) => {
                    if let Some(gw) = nh.gateway {
                        put_gateway(buf, family, gw)?;
                    }
                    if let Some(i) = ifindex(&nh.device, &resolve)? {
                        put_u32(buf, RTA_OIF, i);
                    }
                    if nh.onlink {
                        // rtm_flags, at offset 8 of struct rtmsg.
                        buf[hdr + 8..hdr + 12].copy_from_slice(&RTNH_F_ONLINK.to_ne_bytes());
                    }
                }
                (_, legs) => {
                    let nest = begin_nest(buf, RTA_MULTIPATH);
                    for nh in legs {
                        // struct rtnexthop { len, flags, hops, ifindex } + attributes.
                        let at = buf.len();
                        let flags = if nh.onlink { RTNH_F_ONLINK as u8 } else { 0 };
                        let oif = ifindex(&nh.device, &resolve)?.unwrap_or(0);
                        buf.extend_from_slice(&[0, 0, flags, 0]);
                        buf.extend_from_slice(&oif.to_ne_bytes());
                        if let Some(gw) = nh.gateway {
                            put_gateway(buf, family, gw)?;
                        }
                        let len = (buf.len() - at) as u16;
                        buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
                    }
                    end_nest(buf, nest);
                }
            }
        }
    }
    if let Some(mtu) = route.mtu {
        let nest = begin_nest(buf, RTA_METRICS);
        put_u32(buf, RTAX_MTU, mtu);
        end_nest(buf, nest);
    }
    Ok((RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE))
}

/// Appends the body of an RTM_DELROUTE that matches our route with this key and nothing
/// else.
///
/// The kernel's delete matching (`fib_table_delete`, `ip6_route_del`) treats unset fields as
/// wildcards; we set the protocol so a route of another protocol with the same prefix never
/// matches, type RTN_UNSPEC and scope RT_SCOPE_NOWHERE so any type and scope of ours does.
pub(crate) fn encode_delete(buf: &mut Vec<u8>, key: &RouteKey, protocol: u8) -> Request {
    let dst = key.destination.trunc();
    let table = u8::try_from(key.table).unwrap_or(RT_TABLE_UNSPEC);
    put_rtmsg(
        buf,
        family_of(&dst),
        dst.prefix_len(),
        table,
        protocol,
        RT_SCOPE_NOWHERE,
        RTN_UNSPEC,
        0,
    );
    put_u32(buf, RTA_TABLE, key.table);
    if dst.prefix_len() > 0 {
        put_addr(buf, RTA_DST, dst.addr());
    }
    (RTM_DELROUTE, 0)
}

/// RTM_GETROUTE dump request for one address family.
pub(crate) fn encode_route_dump(buf: &mut Vec<u8>, v6: bool) -> Request {
    put_rtmsg(buf, if v6 { AF_INET6 } else { AF_INET }, 0, 0, 0, 0, 0, 0);
    (RTM_GETROUTE, 0)
}

/// RTM_GETLINK dump request (`struct ifinfomsg`, all zero).
pub(crate) fn encode_link_dump(buf: &mut Vec<u8>) -> Request {
    buf.extend_from_slice(&[0; 16]);
    (RTM_GETLINK, 0)
}

/// RTM_GETROUTE for one address: which route the kernel would use to reach it.
pub(crate) fn encode_lookup(buf: &mut Vec<u8>, addr: IpAddr) -> Request {
    let (family, len) = match addr {
        IpAddr::V4(_) => (AF_INET, 32),
        IpAddr::V6(_) => (AF_INET6, 128),
    };
    put_rtmsg(buf, family, len, 0, 0, 0, 0, 0);
    put_addr(buf, RTA_DST, addr);
    (RTM_GETROUTE, 0)
}

/// The outgoing interface of an RTM_GETROUTE answer, if the address is *directly* reachable
/// there (a connected route: unicast, no RTA_GATEWAY). A gateway reached through another
/// router gives `None`: no nexthop object without `onlink` could express that route.
pub(crate) fn parse_lookup_oif(raw: &[u8]) -> Option<u32> {
    if raw.len() < ROUTE_HEADERS || u16::from_ne_bytes([raw[4], raw[5]]) != RTM_NEWROUTE {
        return None;
    }
    if raw[16 + 7] != RTN_UNICAST {
        return None;
    }
    let mut oif = None;
    for (attr, value) in Attrs(&raw[ROUTE_HEADERS..]) {
        match attr {
            RTA_GATEWAY | RTA_VIA => return None,
            RTA_OIF => oif = u32_of(value),
            _ => {}
        }
    }
    oif.filter(|i| *i != 0)
}

/// What a kernel nexthop object (`ip nexthop`) forwards to: a single gateway and/or device.
/// Our nexthop objects are exactly these; the kernel's own may also be groups, blackholes or
/// FDB nexthops, which we never create and model as "not a spec".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct NexthopSpec {
    /// `nh_family`: the gateway's family, or the route's for a device-only next hop.
    pub family: u8,
    pub gateway: Option<IpAddr>,
    pub oif: u32,
    pub onlink: bool,
}

impl NexthopSpec {
    /// The next hop as [`Route`] models it (device as ifindex).
    pub fn next_hop(&self) -> NextHop {
        NextHop {
            gateway: self.gateway,
            device: Some(Device::Index(self.oif)),
            onlink: self.onlink,
        }
    }
}

/// A nexthop object from a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DumpedNexthop {
    pub id: u32,
    pub protocol: u8,
    /// `None` for groups, blackholes, FDB and encap nexthops.
    pub spec: Option<NexthopSpec>,
}

/// Appends an RTM_NEWNEXTHOP creating nexthop object `id` for `spec`, tagged with our
/// protocol. NLM_F_EXCL: an id that exists (another daemon's, or a stale one of ours we do
/// not know about) is refused with EEXIST instead of being overwritten.
pub(crate) fn encode_new_nexthop(
    buf: &mut Vec<u8>,
    id: u32,
    spec: &NexthopSpec,
    protocol: u8,
) -> Request {
    let flags = if spec.onlink { RTNH_F_ONLINK } else { 0 };
    // struct nhmsg { family, scope (must be 0), protocol, resvd, flags }.
    buf.extend_from_slice(&[spec.family, 0, protocol, 0]);
    buf.extend_from_slice(&flags.to_ne_bytes());
    put_u32(buf, NHA_ID, id);
    put_u32(buf, NHA_OIF, spec.oif);
    if let Some(gw) = spec.gateway {
        put_addr(buf, NHA_GATEWAY, gw);
    }
    (RTM_NEWNEXTHOP, NLM_F_CREATE | NLM_F_EXCL)
}

/// Appends an RTM_DELNEXTHOP for object `id`. The kernel matches on the id alone (no
/// protocol check), so callers only ever pass ids they read back as ours.
pub(crate) fn encode_del_nexthop(buf: &mut Vec<u8>, id: u32) -> Request {
    buf.extend_from_slice(&[0; 8]);
    put_u32(buf, NHA_ID, id);
    (RTM_DELNEXTHOP, 0)
}

/// RTM_GETNEXTHOP dump request (every nexthop object of the namespace).
pub(crate) fn encode_nexthop_dump(buf: &mut Vec<u8>) -> Request {
    buf.extend_from_slice(&[0; 8]);
    (RTM_GETNEXTHOP, 0)
}

/// A raw RTM_NEWNEXTHOP dump entry (nlmsghdr included).
pub(crate) fn parse_nexthop_raw(raw: &[u8]) -> Option<DumpedNexthop> {
    const NH_HEADERS: usize = 16 + 8;
    if raw.len() < NH_HEADERS || u16::from_ne_bytes([raw[4], raw[5]]) != RTM_NEWNEXTHOP {
        return None;
    }
    let (family, protocol) = (raw[16], raw[18]);
    let flags = u32::from_ne_bytes([raw[20], raw[21], raw[22], raw[23]]);
    let (mut id, mut oif, mut gateway, mut plain) = (None, None, None, true);
    for (attr, value) in Attrs(&raw[NH_HEADERS..]) {
        match attr {
            NHA_ID => id = u32_of(value),
            NHA_OIF => oif = u32_of(value),
            NHA_GATEWAY => gateway = addr_of(value),
            NHA_GROUP | NHA_BLACKHOLE | NHA_ENCAP | NHA_FDB => plain = false,
            _ => {}
        }
    }
    let id = id?;
    let spec = match (plain, oif) {
        (true, Some(oif)) if oif != 0 => Some(NexthopSpec {
            family,
            gateway,
            oif,
            onlink: flags & RTNH_F_ONLINK != 0,
        }),
        _ => None,
    };
    Some(DumpedNexthop { id, protocol, spec })
}

// Kernel ABI constants (include/uapi/linux/rtnetlink.h, linux/socket.h) for the raw dump
// decoder below.
pub(crate) const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
const RTM_GETLINK: u16 = 18;
const RTM_NEWNEXTHOP: u16 = 104;
const RTM_DELNEXTHOP: u16 = 105;
const RTM_GETNEXTHOP: u16 = 106;
pub(crate) const AF_INET: u8 = 2;
pub(crate) const AF_INET6: u8 = 10;
const RT_TABLE_UNSPEC: u8 = 0;
const RT_TABLE_MAIN: u8 = 254;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RT_SCOPE_NOWHERE: u8 = 255;
const RTN_UNSPEC: u8 = 0;
const RTA_NH_ID: u16 = 30;
const NHA_ID: u16 = 1;
const NHA_GROUP: u16 = 2;
const NHA_BLACKHOLE: u16 = 4;
const NHA_OIF: u16 = 5;
const NHA_GATEWAY: u16 = 6;
const NHA_ENCAP: u16 = 8;
const NHA_FDB: u16 = 11;
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

/// One route of a dump, as far as reconciliation cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DumpedRoute {
    pub key: RouteKey,
    /// `None`: ours, but of a shape [`Route`] does not model (e.g. `unreachable`, or a
    /// nexthop object we cannot resolve), so reconcile replaces or deletes it.
    pub route: Option<Route>,
    /// The nexthop object the route uses (RTA_NH_ID), if any.
    pub nh_id: Option<u32>,
}

/// The rtm_protocol and RTA_NH_ID of a raw RTM_NEWROUTE dump entry (any protocol's): which
/// nexthop objects other daemons' routes hold on to.
pub(crate) fn route_nexthop_raw(raw: &[u8]) -> Option<(u8, u32)> {
    if raw.len() < ROUTE_HEADERS || u16::from_ne_bytes([raw[4], raw[5]]) != RTM_NEWROUTE {
        return None;
    }
    let id = Attrs(&raw[ROUTE_HEADERS..])
        .find(|(kind, _)| *kind == RTA_NH_ID)?
        .1;
    Some((raw[16 + 5], u32_of(id)?))
}

/// The route a raw RTM_NEWROUTE dump entry (nlmsghdr included) describes, if it is ours.
///
/// Decoded straight from the bytes rather than through `RouteMessage`: a reconcile reads back
/// every route we own, and this avoids one allocation per attribute. Only the fields [`Route`]
/// models are read; the protocol byte is checked first, so other protocols' routes cost
/// nothing. A route over a nexthop object (RTA_NH_ID) gets the next hop `nexthop` gives for
/// that id, so it compares equal to the same route with an inline gateway: whichever way a
/// route was installed, an unchanged route is never rewritten. (With the kernel's default
/// `nexthop_compat_mode` such routes also carry RTA_GATEWAY/RTA_OIF; the object is the
/// authority either way.)
///
/// `None`: not our protocol, not IPv4/IPv6, or malformed: invisible to us. Devices come back
/// as ifindexes.
pub(crate) fn parse_route_raw(
    raw: &[u8],
    protocol: u8,
    nexthop: impl Fn(u32) -> Option<NextHop>,
) -> Option<DumpedRoute> {
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
    let (mut oif, mut gateway, mut legs, mut mtu, mut nh_id) = (None, None, None, None, None);
    for (attr, value) in Attrs(&raw[ROUTE_HEADERS..]) {
        match attr {
            RTA_DST => dst = addr_of(value)?,
            RTA_TABLE => table = u32_of(value)?,
            RTA_OIF => oif = u32_of(value),
            RTA_GATEWAY => gateway = addr_of(value),
            RTA_VIA => gateway = via_of(value),
            RTA_MULTIPATH => legs = Some(legs_of(value)),
            RTA_NH_ID => nh_id = u32_of(value),
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
    let kind = match (kind, nh_id) {
        (RTN_UNICAST, Some(id)) => match nexthop(id) {
            Some(nh) => RouteKind::Unicast(vec![nh].into()),
            None => {
                return Some(DumpedRoute {
                    key,
                    route: None,
                    nh_id,
                })
            }
        },
        (RTN_BLACKHOLE, None) => RouteKind::Blackhole,
        (RTN_UNICAST, None) => RouteKind::Unicast(
            legs.unwrap_or_else(|| {
                vec![NextHop {
                    gateway,
                    device: oif.filter(|i| *i != 0).map(Device::Index),
                    onlink: rtm_flags & RTNH_F_ONLINK != 0,
                }]
            })
            .into(),
        ),
        _ => {
            return Some(DumpedRoute {
                key,
                route: None,
                nh_id,
            })
        }
    };
    Some(DumpedRoute {
        key,
        route: Some(Route {
            destination: key.destination,
            kind,
            mtu,
            table,
        }),
        nh_id,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::route::MAIN_TABLE;
    use rtnetlink::packet_route::route::{
        RouteAttribute, RouteMessage, RouteMetric, RouteProtocol, RouteScope, RouteType,
    };
    use rtnetlink::packet_route::AddressFamily;
    use rtnetlink::{RouteMessageBuilder, RouteNextHopBuilder};

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn no_links(_: &str) -> Option<u32> {
        None
    }

    /// The same route built with rtnetlink's `RouteMessageBuilder`, as this crate did before
    /// encoding by hand: the reference the hand encoder is checked against.
    fn builder_message(route: &Route, protocol: u8) -> RouteMessage {
        let dst = route.destination.trunc();
        let family = match dst {
            IpNet::V4(_) => AddressFamily::Inet,
            IpNet::V6(_) => AddressFamily::Inet6,
        };
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst.addr(), dst.prefix_len())
            .unwrap()
            .table_id(route.table)
            .protocol(RouteProtocol::from(protocol));
        match &route.kind {
            RouteKind::Blackhole => b = b.kind(RouteType::BlackHole),
            RouteKind::Unicast(nhs) => {
                b = b.kind(RouteType::Unicast);
                if route.is_link_scope() {
                    b = b.scope(RouteScope::Link);
                }
                let index = |nh: &NextHop| match nh.device {
                    Some(Device::Index(i)) => Some(i),
                    _ => None,
                };
                if let [nh] = &nhs[..] {
                    if let Some(gw) = nh.gateway {
                        b = b.gateway(gw).unwrap();
                    }
                    if let Some(i) = index(nh) {
                        b = b.output_interface(i);
                    }
                    if nh.onlink {
                        b = b.onlink();
                    }
                } else {
                    let legs = nhs
                        .iter()
                        .map(|nh| {
                            let mut leg = RouteNextHopBuilder::new(family);
                            if let Some(gw) = nh.gateway {
                                leg = leg.via(gw).unwrap();
                            }
                            if let Some(i) = index(nh) {
                                leg = leg.interface(i);
                            }
                            if nh.onlink {
                                leg = leg.onlink();
                            }
                            leg.build()
                        })
                        .collect();
                    b = b.multipath(legs);
                }
            }
        }
        let mut msg = b.build();
        if let Some(mtu) = route.mtu {
            msg.attributes
                .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
        }
        msg
    }

    /// The bytes of `msg` with an nlmsghdr, as the kernel would send it in a dump.
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

    /// Our encoding of a request, behind an nlmsghdr of type `kind`, as a dump entry.
    fn framed(kind: u16, body: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut buf = vec![0; 16];
        body(&mut buf);
        let len = buf.len() as u32;
        buf[0..4].copy_from_slice(&len.to_ne_bytes());
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf
    }

    fn encoded(route: &Route, nh_id: Option<u32>) -> Vec<u8> {
        framed(RTM_NEWROUTE, |buf| {
            let (kind, flags) = encode_replace(buf, route, 80, nh_id, no_links).unwrap();
            assert_eq!((kind, flags), (RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE));
        })
    }

    fn no_objects(_: u32) -> Option<NextHop> {
        None
    }

    fn parse(raw: &[u8]) -> Option<Route> {
        parse_route_raw(raw, 80, no_objects).unwrap().route
    }

    fn shapes() -> Vec<Route> {
        vec![
            Route::blackhole(net("10.65.1.0/26")),
            Route::via(net("10.65.1.5/32"), NextHop::dev(7)),
            Route::via(net("10.65.2.0/26"), NextHop::via_dev(ip("192.168.1.2"), 3)),
            Route::via(net("10.65.6.0/26"), NextHop::via(ip("192.168.1.2"))),
            Route::via(net("10.65.3.0/26"), NextHop::onlink(ip("192.168.9.3"), 4)).with_mtu(1440),
            Route::via(net("10.65.7.0/26"), NextHop::via_dev(ip("fe80::1"), 3)),
            Route::unicast(
                net("10.65.4.0/26"),
                vec![
                    NextHop::via_dev(ip("192.168.1.2"), 3),
                    NextHop::onlink(ip("192.168.2.2"), 5),
                ],
            ),
            Route::via(net("fd00:65:2::/122"), NextHop::via_dev(ip("fd00::2"), 3)).with_table(1000),
            Route::via(net("0.0.0.0/0"), NextHop::via(ip("192.168.1.1"))).with_table(100),
            Route::blackhole(net("fd00:65:1::/122")),
        ]
    }

    #[test]
    fn hand_encoding_matches_rtnetlink_builder_byte_for_byte() {
        for r in &shapes() {
            let reference = wire(builder_message(r, 80));
            let ours = encoded(r, None);
            assert_eq!(ours[16..], reference[16..], "{r}");
        }
    }

    #[test]
    fn encodes_and_parses_every_shape() {
        for r in &shapes() {
            assert_eq!(parse(&encoded(r, None)).as_ref(), Some(r), "{r}");
        }
    }

    #[test]
    fn device_names_are_resolved_while_encoding() {
        let r = Route::via(net("10.65.1.5/32"), NextHop::dev("cali1"));
        let raw = framed(RTM_NEWROUTE, |buf| {
            encode_replace(buf, &r, 80, None, |n| (n == "cali1").then_some(9)).unwrap();
        });
        assert_eq!(
            parse(&raw),
            Some(Route::via(net("10.65.1.5/32"), NextHop::dev(9)))
        );
    }

    #[test]
    fn route_over_a_nexthop_object_reads_back_as_the_inline_route() {
        let r =
            Route::via(net("10.65.3.0/26"), NextHop::onlink(ip("192.168.9.3"), 4)).with_mtu(1440);
        let raw = encoded(&r, Some(77));
        // No inline next hop on the wire, only the object's id.
        let entry = parse_route_raw(&raw, 80, no_objects).unwrap();
        assert_eq!((entry.nh_id, entry.route), (Some(77), None));
        assert_eq!(route_nexthop_raw(&raw), Some((80, 77)));
        let object = |id| (id == 77).then(|| NextHop::onlink(ip("192.168.9.3"), 4));
        let entry = parse_route_raw(&raw, 80, object).unwrap();
        assert_eq!(entry.route, Some(r));
        // Device-only (scope link) routes over an object keep their scope.
        let w = Route::via(net("10.65.1.5/32"), NextHop::dev(7));
        assert_eq!(encoded(&w, Some(5))[16 + 6], RT_SCOPE_LINK);
    }

    #[test]
    fn nexthop_objects_encode_and_parse() {
        let specs = [
            NexthopSpec {
                family: AF_INET,
                gateway: Some(ip("192.168.9.3")),
                oif: 4,
                onlink: true,
            },
            NexthopSpec {
                family: AF_INET,
                gateway: None,
                oif: 7,
                onlink: false,
            },
            NexthopSpec {
                family: AF_INET6,
                gateway: Some(ip("fd00::2")),
                oif: 3,
                onlink: false,
            },
        ];
        for spec in specs {
            let raw = framed(RTM_NEWNEXTHOP, |buf| {
                let (kind, flags) = encode_new_nexthop(buf, 42, &spec, 80);
                assert_eq!((kind, flags), (RTM_NEWNEXTHOP, NLM_F_CREATE | NLM_F_EXCL));
            });
            let parsed = parse_nexthop_raw(&raw).unwrap();
            assert_eq!(
                parsed,
                DumpedNexthop {
                    id: 42,
                    protocol: 80,
                    spec: Some(spec)
                }
            );
            assert_eq!(raw[16 + 1], 0, "nh_scope must be 0");
        }
        // A group is not a spec we could share.
        let raw = framed(RTM_NEWNEXTHOP, |buf| {
            buf.extend_from_slice(&[AF_INET, 0, 80, 0, 0, 0, 0, 0]);
            put_u32(buf, NHA_ID, 9);
            put_attr(buf, NHA_GROUP, &[1, 0, 0, 0, 0, 0, 0, 0]);
        });
        assert_eq!(parse_nexthop_raw(&raw).unwrap().spec, None);
        let del = framed(RTM_DELNEXTHOP, |buf| {
            encode_del_nexthop(buf, 9);
        });
        assert_eq!(u32_of(&del[16 + 8 + 4..]), Some(9));
        for cut in 0..raw.len() {
            let _ = parse_nexthop_raw(&raw[..cut]);
        }
    }

    #[test]
    fn gateway_lookup_answer_gives_the_device_only_if_directly_connected() {
        let answer = |gw: Option<IpAddr>| {
            framed(RTM_NEWROUTE, |buf| {
                put_rtmsg(buf, AF_INET, 32, 254, 2, 0, RTN_UNICAST, 0);
                put_addr(buf, RTA_DST, ip("192.168.50.2"));
                put_u32(buf, RTA_OIF, 3);
                if let Some(gw) = gw {
                    put_addr(buf, RTA_GATEWAY, gw);
                }
            })
        };
        assert_eq!(parse_lookup_oif(&answer(None)), Some(3));
        assert_eq!(parse_lookup_oif(&answer(Some(ip("192.168.50.254")))), None);
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
        let bytes = encoded(&Route::blackhole(net("10.65.1.0/26")), None);
        for cut in 0..bytes.len() {
            // Must not panic; a cut inside the attributes may still yield a route.
            let _ = parse_route_raw(&bytes[..cut], 80, no_objects);
            let _ = route_nexthop_raw(&bytes[..cut]);
            let _ = parse_lookup_oif(&bytes[..cut]);
        }
        assert_eq!(parse_route_raw(&[0xff; 64], 80, no_objects), None);
    }

    #[test]
    fn link_scope_only_without_gateway() {
        let scope = |r: &Route| encoded(r, None)[16 + 6];
        assert_eq!(
            scope(&Route::via(net("10.65.1.5/32"), NextHop::dev(7))),
            RT_SCOPE_LINK
        );
        assert_eq!(
            scope(&Route::blackhole(net("10.65.1.0/26"))),
            RT_SCOPE_UNIVERSE
        );
    }

    #[test]
    fn unresolved_device_is_refused() {
        let r = Route::via(net("10.65.1.5/32"), NextHop::dev("cali1"));
        let mut buf = Vec::new();
        assert_eq!(
            encode_replace(&mut buf, &r, 80, None, no_links),
            Err(EncodeError::UnresolvedDevice("cali1".into()))
        );
    }

    #[test]
    fn other_protocols_are_invisible_and_odd_shapes_are_flagged() {
        let r = Route::blackhole(net("10.65.1.0/26"));
        let other = framed(RTM_NEWROUTE, |buf| {
            encode_replace(buf, &r, 4, None, no_links).unwrap();
        });
        assert_eq!(parse_route_raw(&other, 80, no_objects), None);
        let mut odd = encoded(&r, None);
        odd[16 + 7] = 7; // RTN_UNREACHABLE
        let entry = parse_route_raw(&odd, 80, no_objects).unwrap();
        assert_eq!((entry.key, entry.route), (r.key(), None));
    }

    #[test]
    fn delete_matches_only_our_protocol() {
        for (key, table) in [
            (RouteKey::new(MAIN_TABLE, net("10.65.1.0/26")), 254),
            (RouteKey::new(1000, net("fd00:65::/64")), 0),
        ] {
            let raw = framed(RTM_DELROUTE, |buf| {
                encode_delete(buf, &key, 80);
            });
            let rtm = &raw[16..28];
            assert_eq!(
                (rtm[4], rtm[5], rtm[6], rtm[7]),
                (table, 80, RT_SCOPE_NOWHERE, RTN_UNSPEC)
            );
            let attrs: Vec<_> = Attrs(&raw[28..]).collect();
            assert_eq!(attrs[0], (RTA_TABLE, &key.table.to_ne_bytes()[..]));
            assert_eq!(attrs[1].0, RTA_DST);
        }
    }
}

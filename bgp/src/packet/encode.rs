//! Encoding of messages and path attributes into `BytesMut`.
//!
//! Attributes are written in type-code order (RFC 4271 §5: "SHOULD"), each with the Extended
//! Length bit set exactly when its value exceeds 255 octets. Towards a 2-octet-AS peer
//! (`ctx.four_octet_as == false`) AS_PATH and AGGREGATOR carry AS_TRANS for every AS above
//! 65535 and the real numbers travel in AS4_PATH / AS4_AGGREGATOR (RFC 6793 §4.2.2).
//!
//! Encoding never fails: the types cannot express an invalid field, and the caller keeps
//! messages within 4096 octets (use [`super::encode_updates`] for bulk announcements, which
//! packs to that limit). An AS_PATH segment longer than 255 ASNs is split into several.

use std::ops::RangeInclusive;

use bytes::{BufMut, Bytes, BytesMut};

use super::attribute::{code, flag, AsPath, AsSegment, MpReach, MpUnreach, PathAttributes};
use super::capability::{Afi, Capability, Safi};
use super::message::{path_id_at, Message, MessageType, Notification, Open, RouteRefresh, Update};
use super::{nlri, DecodeContext, Family, AS_TRANS, HEADER_LEN, MAX_MESSAGE_LEN};

/// Writes the 19-octet header with a zero length, returning where the message starts so that
/// [`finish_header`] can fill the length in.
pub(crate) fn start_header(out: &mut BytesMut, kind: MessageType) -> usize {
    let start = out.len();
    out.put_slice(&[0xff; 16]);
    out.put_u16(0);
    out.put_u8(kind as u8);
    start
}

/// Fills in the length of the message that began at `start`.
pub(crate) fn finish_header(out: &mut BytesMut, start: usize) {
    let len = out.len().saturating_sub(start);
    let field = u16::try_from(len).unwrap_or(u16::MAX);
    if let Some(slot) = out.get_mut(start + 16..start + 18) {
        slot.copy_from_slice(&field.to_be_bytes());
    }
}

impl Message {
    /// Appends the wire form of this message (header included) to `out`.
    pub fn encode(&self, ctx: &DecodeContext, out: &mut BytesMut) {
        let start = start_header(out, self.message_type());
        match self {
            Message::Open(open) => encode_open(open, out),
            Message::Update(upd) => encode_update_body(upd, ctx, out),
            Message::Notification(n) => encode_notification(n, out),
            Message::Keepalive => {}
            Message::RouteRefresh(rr) => encode_route_refresh(rr, out),
        }
        finish_header(out, start);
    }

    /// The wire form of this message as one buffer.
    pub fn to_bytes(&self, ctx: &DecodeContext) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER_LEN + 64);
        self.encode(ctx, &mut out);
        out.freeze()
    }
}

/// NOTIFICATION; data that would push the message past 4096 octets is cut (it can only
/// happen for RFC 7313's "the complete ROUTE-REFRESH message" of a maximal message).
fn encode_notification(n: &Notification, out: &mut BytesMut) {
    out.put_u8(n.code);
    out.put_u8(n.subcode);
    let room = MAX_MESSAGE_LEN - HEADER_LEN - 2;
    out.put_slice(&n.data[..n.data.len().min(room)]);
}

fn encode_route_refresh(rr: &RouteRefresh, out: &mut BytesMut) {
    out.put_u16(rr.afi.code());
    out.put_u8(rr.subtype);
    out.put_u8(rr.safi.code());
}

/// OPEN with all capabilities in one Capabilities parameter (RFC 5492 §4). If they do not
/// fit the 1-octet parameter length, the extended form of RFC 9072 §2 is used.
fn encode_open(open: &Open, out: &mut BytesMut) {
    out.put_u8(open.version);
    out.put_u16(open.my_as);
    out.put_u16(open.hold_time);
    out.put_slice(&open.bgp_id.octets());
    let mut caps = BytesMut::new();
    for cap in &open.capabilities {
        encode_capability(cap, &mut caps);
    }
    if caps.is_empty() {
        out.put_u8(0);
    } else if caps.len() + 2 <= 255 {
        out.put_u8((caps.len() + 2) as u8);
        out.put_u8(2);
        out.put_u8(caps.len() as u8);
        out.put_slice(&caps);
    } else {
        // RFC 9072 §2: Non-Ext OP Len 255, Non-Ext OP Type 255, 2-octet Extended Opt. Parm.
        // Length, then parameters with 2-octet lengths.
        out.put_u8(255);
        out.put_u8(255);
        out.put_u16(u16::try_from(caps.len() + 3).unwrap_or(u16::MAX));
        out.put_u8(2);
        out.put_u16(u16::try_from(caps.len()).unwrap_or(u16::MAX));
        out.put_slice(&caps);
    }
}

/// Families per capability that fit its 1-octet length (4 octets each, after the 2-octet
/// Graceful Restart header).
const MAX_CAPABILITY_FAMILIES: usize = 63;

/// One capability TLV. A value is capped at 255 octets (the length field's range) so that the
/// OPEN stays well-formed whatever the caller put in.
fn encode_capability(cap: &Capability, out: &mut BytesMut) {
    let start = out.len();
    out.put_u8(cap.code());
    out.put_u8(0);
    match cap {
        Capability::MultiProtocol { afi, safi } => {
            out.put_u16(afi.code());
            out.put_u8(0);
            out.put_u8(safi.code());
        }
        Capability::RouteRefresh
        | Capability::ExtendedMessage
        | Capability::EnhancedRouteRefresh => {}
        Capability::GracefulRestart {
            restarting,
            notification,
            restart_time,
            families,
        } => {
            let mut word = restart_time & 0x0fff;
            if *restarting {
                word |= 0x8000;
            }
            if *notification {
                word |= 0x4000;
            }
            out.put_u16(word);
            for f in families.iter().take(MAX_CAPABILITY_FAMILIES) {
                out.put_u16(f.afi.code());
                out.put_u8(f.safi.code());
                out.put_u8(if f.forwarding_preserved { 0x80 } else { 0 });
            }
        }
        Capability::FourOctetAs(asn) => out.put_u32(*asn),
        Capability::AddPath(families) => {
            for (afi, safi, mode) in families.iter().take(MAX_CAPABILITY_FAMILIES) {
                out.put_u16(afi.code());
                out.put_u8(safi.code());
                out.put_u8(mode.code());
            }
        }
        Capability::Fqdn { hostname, domain } => {
            for s in [hostname, domain] {
                let b = &s.as_bytes()[..s.len().min(255)];
                out.put_u8(b.len() as u8);
                out.put_slice(b);
            }
        }
        Capability::Unknown { value, .. } => out.put_slice(&value[..value.len().min(255)]),
    }
    let len = out.len() - start - 2;
    out[start + 1] = u8::try_from(len).unwrap_or(u8::MAX);
}

fn encode_update_body(upd: &Update, ctx: &DecodeContext, out: &mut BytesMut) {
    let ids = &upd.path_ids;
    let v4 = ctx.add_path_send(Family::Ipv4Unicast);
    let wd_at = out.len();
    out.put_u16(0);
    for (i, p) in upd.withdrawn.iter().enumerate() {
        put_path_id(v4.then_some(&ids.withdrawn[..]), i, out);
        nlri::encode_v4(p, out);
    }
    patch_u16(out, wd_at);
    let attr_at = out.len();
    out.put_u16(0);
    encode_attributes(&upd.attributes, ctx, 0..=code::MP_REACH_NLRI - 1, out);
    if let Some(reach) = &upd.mp_reach {
        let send = mp_sends_ids(reach.afi, reach.safi, ctx);
        encode_mp_reach(reach, send.then_some(&ids.mp_reach[..]), out);
    }
    if let Some(unreach) = &upd.mp_unreach {
        let send = mp_sends_ids(unreach.afi, unreach.safi, ctx);
        encode_mp_unreach(unreach, send.then_some(&ids.mp_unreach[..]), out);
    }
    encode_attributes(&upd.attributes, ctx, code::MP_UNREACH_NLRI + 1..=255, out);
    patch_u16(out, attr_at);
    for (i, p) in upd.nlri.iter().enumerate() {
        put_path_id(v4.then_some(&ids.nlri[..]), i, out);
        nlri::encode_v4(p, out);
    }
}

/// Whether the prefixes of an MP attribute carry path identifiers (RFC 7911 §3).
fn mp_sends_ids(afi: Afi, safi: Safi, ctx: &DecodeContext) -> bool {
    Family::from_afi_safi(afi, safi).is_some_and(|f| ctx.add_path_send(f))
}

/// The path identifier of the `i`th prefix of a list, when the family sends them (`ids`).
fn put_path_id(ids: Option<&[u32]>, i: usize, out: &mut BytesMut) {
    if let Some(ids) = ids {
        out.put_u32(path_id_at(ids, i));
    }
}

/// Writes at `at` the number of octets written after the 2-octet field there.
pub(crate) fn patch_u16(out: &mut BytesMut, at: usize) {
    let len = out.len().saturating_sub(at + 2);
    let field = u16::try_from(len).unwrap_or(u16::MAX);
    if let Some(slot) = out.get_mut(at..at + 2) {
        slot.copy_from_slice(&field.to_be_bytes());
    }
}

/// Attribute header with the Extended Length bit exactly when needed (RFC 4271 §4.3).
fn attr_header(out: &mut BytesMut, flags: u8, type_code: u8, len: usize) {
    if len > 255 {
        out.put_u8(flags | flag::EXTENDED_LENGTH);
        out.put_u8(type_code);
        out.put_u16(u16::try_from(len).unwrap_or(u16::MAX));
    } else {
        out.put_u8(flags & !flag::EXTENDED_LENGTH);
        out.put_u8(type_code);
        out.put_u8(len as u8);
    }
}

const WELL_KNOWN: u8 = flag::TRANSITIVE;
const OPT_NON_TRANS: u8 = flag::OPTIONAL;
const OPT_TRANS: u8 = flag::OPTIONAL | flag::TRANSITIVE;

/// Writes the path attributes whose type code falls in `codes`, in type-code order, with the
/// unknown ones interleaved at their place. MP_REACH/MP_UNREACH are not in
/// [`PathAttributes`]; callers write them between the two ranges `..=13` and `16..`.
pub(crate) fn encode_attributes(
    attrs: &PathAttributes,
    ctx: &DecodeContext,
    codes: RangeInclusive<u8>,
    out: &mut BytesMut,
) {
    let four = ctx.four_octet_as;
    // Unknown attributes to pass on, by type code (RFC 4271 §5: optional transitive ones
    // with Partial set; optional non-transitive ones are not propagated, §9.1.3). A code we
    // interpret ourselves is never taken from `unknown`, so nothing is sent twice.
    let mut unknown: Vec<_> = attrs
        .unknown
        .iter()
        .filter(|a| {
            codes.contains(&a.type_code)
                && a.flags & flag::OPTIONAL != 0
                && a.flags & flag::TRANSITIVE != 0
                && !is_interpreted(a.type_code)
        })
        .collect();
    unknown.sort_by_key(|a| a.type_code);
    let mut unknown = unknown.into_iter().peekable();

    let needs_as4_path = !four && attrs.as_path.as_ref().is_some_and(has_wide_asn);
    let needs_as4_aggr = !four && attrs.aggregator.is_some_and(|a| a.asn > 0xffff);

    for type_code in codes.clone() {
        while let Some(a) = unknown.next_if(|a| a.type_code <= type_code) {
            attr_header(out, a.flags | flag::PARTIAL, a.type_code, a.value.len());
            out.put_slice(&a.value);
        }
        match type_code {
            code::ORIGIN => {
                if let Some(o) = attrs.origin {
                    attr_header(out, WELL_KNOWN, code::ORIGIN, 1);
                    out.put_u8(o as u8);
                }
            }
            code::AS_PATH => {
                if let Some(path) = &attrs.as_path {
                    encode_as_path(path, code::AS_PATH, WELL_KNOWN, four, true, out);
                }
            }
            code::NEXT_HOP => {
                if let Some(nh) = attrs.next_hop {
                    attr_header(out, WELL_KNOWN, code::NEXT_HOP, 4);
                    out.put_slice(&nh.octets());
                }
            }
            code::MULTI_EXIT_DISC => {
                if let Some(med) = attrs.med {
                    attr_header(out, OPT_NON_TRANS, code::MULTI_EXIT_DISC, 4);
                    out.put_u32(med);
                }
            }
            code::LOCAL_PREF => {
                if let Some(lp) = attrs.local_pref {
                    attr_header(out, WELL_KNOWN, code::LOCAL_PREF, 4);
                    out.put_u32(lp);
                }
            }
            code::ATOMIC_AGGREGATE if attrs.atomic_aggregate => {
                attr_header(out, WELL_KNOWN, code::ATOMIC_AGGREGATE, 0);
            }
            code::AGGREGATOR => {
                if let Some(a) = attrs.aggregator {
                    if four {
                        attr_header(out, OPT_TRANS, code::AGGREGATOR, 8);
                        out.put_u32(a.asn);
                    } else {
                        attr_header(out, OPT_TRANS, code::AGGREGATOR, 6);
                        out.put_u16(u16::try_from(a.asn).unwrap_or(AS_TRANS));
                    }
                    out.put_slice(&a.address.octets());
                }
            }
            code::COMMUNITIES if !attrs.communities.is_empty() => {
                attr_header(
                    out,
                    OPT_TRANS,
                    code::COMMUNITIES,
                    4 * attrs.communities.len(),
                );
                for c in &attrs.communities {
                    out.put_u32(c.0);
                }
            }
            code::ORIGINATOR_ID => {
                if let Some(id) = attrs.originator_id {
                    attr_header(out, OPT_NON_TRANS, code::ORIGINATOR_ID, 4);
                    out.put_slice(&id.octets());
                }
            }
            code::CLUSTER_LIST if !attrs.cluster_list.is_empty() => {
                attr_header(
                    out,
                    OPT_NON_TRANS,
                    code::CLUSTER_LIST,
                    4 * attrs.cluster_list.len(),
                );
                for id in &attrs.cluster_list {
                    out.put_slice(&id.octets());
                }
            }
            code::EXTENDED_COMMUNITIES if !attrs.ext_communities.is_empty() => {
                let len = 8 * attrs.ext_communities.len();
                attr_header(out, OPT_TRANS, code::EXTENDED_COMMUNITIES, len);
                for c in &attrs.ext_communities {
                    out.put_slice(&c.0);
                }
            }
            code::AS4_PATH => {
                if let (true, Some(path)) = (needs_as4_path, &attrs.as_path) {
                    encode_as_path(path, code::AS4_PATH, OPT_TRANS, true, false, out);
                }
            }
            code::AS4_AGGREGATOR => {
                if let (true, Some(a)) = (needs_as4_aggr, attrs.aggregator) {
                    attr_header(out, OPT_TRANS, code::AS4_AGGREGATOR, 8);
                    out.put_u32(a.asn);
                    out.put_slice(&a.address.octets());
                }
            }
            code::LARGE_COMMUNITY if !attrs.large_communities.is_empty() => {
                let len = 12 * attrs.large_communities.len();
                attr_header(out, OPT_TRANS, code::LARGE_COMMUNITY, len);
                for c in &attrs.large_communities {
                    out.put_u32(c.global);
                    out.put_u32(c.local1);
                    out.put_u32(c.local2);
                }
            }
            _ => {}
        }
    }
}

/// Type codes with a dedicated field in [`PathAttributes`] or [`Update`].
fn is_interpreted(type_code: u8) -> bool {
    matches!(
        type_code,
        code::ORIGIN..=code::CLUSTER_LIST
            | code::MP_REACH_NLRI..=code::AS4_AGGREGATOR
            | code::LARGE_COMMUNITY
    )
}

/// Whether a 2-octet peer needs AS4_PATH for this path: some AS in a non-confederation
/// segment does not fit in 16 bits (RFC 6793 §4.2.2).
fn has_wide_asn(path: &AsPath) -> bool {
    path.segments
        .iter()
        .filter(|s| {
            matches!(
                s.kind,
                super::SegmentType::Sequence | super::SegmentType::Set
            )
        })
        .flat_map(|s| s.asns.iter())
        .any(|&a| a > 0xffff)
}

/// Segments as written: empty segments are skipped (they are malformed on the wire, RFC 7606
/// §7.2), segments over 255 ASNs are split, and confederation segments are left out of
/// AS4_PATH (RFC 6793 §3).
fn wire_segments(path: &AsPath, with_confed: bool) -> impl Iterator<Item = (u8, &[u32])> {
    path.segments
        .iter()
        .filter(move |s| {
            with_confed
                || matches!(
                    s.kind,
                    super::SegmentType::Sequence | super::SegmentType::Set
                )
        })
        .flat_map(|s: &AsSegment| s.asns.chunks(255).map(move |c| (s.kind as u8, c)))
}

fn encode_as_path(
    path: &AsPath,
    type_code: u8,
    flags: u8,
    four: bool,
    with_confed: bool,
    out: &mut BytesMut,
) {
    let width = if four { 4 } else { 2 };
    let len: usize = wire_segments(path, with_confed)
        .map(|(_, asns)| 2 + width * asns.len())
        .sum();
    attr_header(out, flags, type_code, len);
    for (kind, asns) in wire_segments(path, with_confed) {
        out.put_u8(kind);
        out.put_u8(asns.len() as u8);
        for &asn in asns {
            if four {
                out.put_u32(asn);
            } else {
                out.put_u16(u16::try_from(asn).unwrap_or(AS_TRANS));
            }
        }
    }
}

/// Octets of the MP_REACH_NLRI value before the NLRI: AFI, SAFI, next-hop length, next hop,
/// reserved.
pub(crate) fn mp_reach_fixed_len(next_hop: &std::net::IpAddr, link_local: bool) -> usize {
    let nh = match next_hop {
        std::net::IpAddr::V4(_) => 4,
        std::net::IpAddr::V6(_) => 16,
    } + if link_local { 16 } else { 0 };
    2 + 1 + 1 + nh + 1
}

/// Writes the MP_REACH_NLRI value up to (excluding) the NLRI.
pub(crate) fn put_mp_reach_fixed(
    afi: u16,
    safi: u8,
    next_hop: &std::net::IpAddr,
    link_local: Option<&std::net::Ipv6Addr>,
    out: &mut BytesMut,
) {
    out.put_u16(afi);
    out.put_u8(safi);
    let ll = link_local.filter(|_| next_hop.is_ipv6());
    match next_hop {
        std::net::IpAddr::V4(a) => {
            out.put_u8(4);
            out.put_slice(&a.octets());
        }
        std::net::IpAddr::V6(a) => {
            out.put_u8(if ll.is_some() { 32 } else { 16 });
            out.put_slice(&a.octets());
            if let Some(ll) = ll {
                out.put_slice(&ll.octets());
            }
        }
    }
    out.put_u8(0);
}

fn encode_mp_reach(reach: &MpReach, ids: Option<&[u32]>, out: &mut BytesMut) {
    let ll = reach
        .link_local_next_hop
        .filter(|_| reach.next_hop.is_ipv6());
    let id_len = if ids.is_some() { 4 } else { 0 };
    let len = mp_reach_fixed_len(&reach.next_hop, ll.is_some())
        + reach
            .nlri
            .iter()
            .map(|p| nlri::encoded_len(p) + id_len)
            .sum::<usize>();
    attr_header(out, OPT_NON_TRANS, code::MP_REACH_NLRI, len);
    put_mp_reach_fixed(
        reach.afi.code(),
        reach.safi.code(),
        &reach.next_hop,
        ll.as_ref(),
        out,
    );
    for (i, p) in reach.nlri.iter().enumerate() {
        put_path_id(ids, i, out);
        nlri::encode(p, out);
    }
}

fn encode_mp_unreach(unreach: &MpUnreach, ids: Option<&[u32]>, out: &mut BytesMut) {
    let id_len = if ids.is_some() { 4 } else { 0 };
    let len = 3 + unreach
        .withdrawn
        .iter()
        .map(|p| nlri::encoded_len(p) + id_len)
        .sum::<usize>();
    attr_header(out, OPT_NON_TRANS, code::MP_UNREACH_NLRI, len);
    out.put_u16(unreach.afi.code());
    out.put_u8(unreach.safi.code());
    for (i, p) in unreach.withdrawn.iter().enumerate() {
        put_path_id(ids, i, out);
        nlri::encode(p, out);
    }
}

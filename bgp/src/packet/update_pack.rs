//! Packing many prefixes that share one attribute set into as few UPDATEs as fit in 4096
//! octets (RFC 4271 §4.1), the way a speaker sends a full table.
//!
//! The attribute block is encoded once per call, not per message or prefix: for IPv4 with
//! an IPv4 next hop the prefixes go into the NLRI field after a fixed attribute block with
//! NEXT_HOP (RFC 4271 §4.3); for IPv6 (or an IPv4 family with an IPv6 next hop, RFC 8950)
//! they go into MP_REACH_NLRI (RFC 4760 §3), which sits in type-code order between the
//! attributes below 14 and those above 15, so those two halves are encoded once and copied
//! around a per-message MP_REACH_NLRI. Withdrawals go into the Withdrawn Routes field (IPv4)
//! or MP_UNREACH_NLRI (IPv6, RFC 4760 §4).
//!
//! All messages of one call are cut out of one growing `BytesMut`, so each is a cheap
//! `Bytes` view.

use std::net::{IpAddr, Ipv6Addr};

use bytes::{BufMut, Bytes, BytesMut};
use ipnet::IpNet;

use super::attribute::{code, flag, PathAttributes};
use super::encode::{
    encode_attributes, finish_header, mp_reach_fixed_len, patch_u16, put_mp_reach_fixed,
    start_header,
};
use super::message::MessageType;
use super::{nlri, path_id_at, DecodeContext, Family, HEADER_LEN};

/// The next hop announced with a batch of prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NextHop {
    /// IPv4 for the NEXT_HOP attribute; IPv6 (global) for MP_REACH_NLRI.
    pub address: IpAddr,
    /// An IPv6 link-local next hop sent after the global one (RFC 2545 §3), e.g. for a
    /// directly connected peer.
    pub link_local: Option<Ipv6Addr>,
}

impl From<IpAddr> for NextHop {
    fn from(address: IpAddr) -> NextHop {
        NextHop {
            address,
            link_local: None,
        }
    }
}

/// A batch that cannot be sent as UPDATEs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The attributes alone leave no room for a single prefix in a 4096-octet message.
    #[error("path attributes take {0} octets: no room for NLRI in an UPDATE (4096 octets, 65535 with Extended Message)")]
    AttributesTooLarge(usize),
}

/// Octets before the attributes: header, Withdrawn Routes Length, Total Path Attribute Length.
const UPDATE_FIXED: usize = HEADER_LEN + 2 + 2;
/// Largest prefix encoding (an IPv6 /128): the room we must leave for one more prefix.
const MAX_PREFIX_LEN: usize = 17;
/// An ADD-PATH path identifier before a prefix (RFC 7911 §3).
const PATH_ID_LEN: usize = 4;
/// MP_REACH/MP_UNREACH attribute header, always with the extended length (RFC 4271 §4.3
/// allows it for any length; a full message needs it anyway).
const MP_ATTR_HEADER: usize = 4;

/// Appends to `out` UPDATEs announcing every prefix of `prefixes` that belongs to `family`,
/// with `attrs` and `next_hop`. `attrs.next_hop` is ignored: the NEXT_HOP attribute is
/// written from `next_hop` when IPv4 prefixes go in the NLRI field and left out otherwise
/// (RFC 4760 §3). Prefixes of another family are skipped.
pub fn encode_updates(
    attrs: &PathAttributes,
    family: Family,
    next_hop: NextHop,
    prefixes: &[IpNet],
    ctx: &DecodeContext,
    out: &mut Vec<Bytes>,
) -> Result<(), EncodeError> {
    encode_updates_with_ids(attrs, family, next_hop, prefixes, &[], ctx, out)
}

/// [`encode_updates`] with ADD-PATH path identifiers (RFC 7911 §3): when `ctx` sends them
/// for `family`, each prefix is preceded by its identifier from `path_ids` (index for index
/// with `prefixes`; 0 where missing). Without ADD-PATH send, `path_ids` is not used.
pub fn encode_updates_with_ids(
    attrs: &PathAttributes,
    family: Family,
    next_hop: NextHop,
    prefixes: &[IpNet],
    path_ids: &[u32],
    ctx: &DecodeContext,
    out: &mut Vec<Bytes>,
) -> Result<(), EncodeError> {
    let ids = ctx.add_path_send(family).then_some(path_ids);
    let mut attrs_nh = attrs.clone();
    let classic = match (family, next_hop.address) {
        (Family::Ipv4Unicast, IpAddr::V4(nh)) => {
            attrs_nh.next_hop = Some(nh);
            true
        }
        _ => {
            attrs_nh.next_hop = None;
            false
        }
    };
    let mut head = BytesMut::new();
    encode_attributes(&attrs_nh, ctx, 0..=code::MP_REACH_NLRI - 1, &mut head);
    let mut tail = BytesMut::new();
    encode_attributes(&attrs_nh, ctx, code::MP_UNREACH_NLRI + 1..=255, &mut tail);

    let link_local = next_hop.link_local.filter(|_| next_hop.address.is_ipv6());
    let mp_fixed = if classic {
        0
    } else {
        MP_ATTR_HEADER + mp_reach_fixed_len(&next_hop.address, link_local.is_some())
    };
    let overhead = UPDATE_FIXED + head.len() + tail.len() + mp_fixed;
    // 4096 octets, or 65535 with Extended Message (RFC 8654 §4).
    let max = ctx.max_message_len();
    let id_len = if ids.is_some() { PATH_ID_LEN } else { 0 };
    if overhead + MAX_PREFIX_LEN + id_len > max {
        return Err(EncodeError::AttributesTooLarge(head.len() + tail.len()));
    }
    let room = max - overhead;
    let (afi, safi) = family.afi_safi();

    let mut buf = BytesMut::with_capacity(max.min(prefixes.len() * 5 + overhead));
    let mut iter = tagged(prefixes, ids, family);
    while iter.peek().is_some() {
        let start = start_header(&mut buf, MessageType::Update);
        buf.put_u16(0); // no withdrawn routes
        let attr_len_at = buf.len();
        buf.put_u16(0);
        buf.put_slice(&head);
        if classic {
            buf.put_slice(&tail);
            patch_u16(&mut buf, attr_len_at);
            put_prefixes(&mut iter, room, &mut buf);
        } else {
            buf.put_u8(flag::OPTIONAL | flag::EXTENDED_LENGTH);
            buf.put_u8(code::MP_REACH_NLRI);
            let mp_len_at = buf.len();
            buf.put_u16(0);
            put_mp_reach_fixed(
                afi.code(),
                safi.code(),
                &next_hop.address,
                link_local.as_ref(),
                &mut buf,
            );
            put_prefixes(&mut iter, room, &mut buf);
            patch_u16(&mut buf, mp_len_at);
            buf.put_slice(&tail);
            patch_u16(&mut buf, attr_len_at);
        }
        finish_header(&mut buf, start);
        out.push(buf.split().freeze());
    }
    Ok(())
}

/// Appends to `out` UPDATEs withdrawing every prefix of `prefixes` that belongs to `family`:
/// in the Withdrawn Routes field for IPv4 unicast, in MP_UNREACH_NLRI otherwise.
pub fn encode_withdrawals(
    family: Family,
    prefixes: &[IpNet],
    ctx: &DecodeContext,
    out: &mut Vec<Bytes>,
) {
    encode_withdrawals_with_ids(family, prefixes, &[], ctx, out);
}

/// [`encode_withdrawals`] with ADD-PATH path identifiers, as [`encode_updates_with_ids`].
pub fn encode_withdrawals_with_ids(
    family: Family,
    prefixes: &[IpNet],
    path_ids: &[u32],
    ctx: &DecodeContext,
    out: &mut Vec<Bytes>,
) {
    let ids = ctx.add_path_send(family).then_some(path_ids);
    let classic = family == Family::Ipv4Unicast;
    let overhead = UPDATE_FIXED + if classic { 0 } else { MP_ATTR_HEADER + 3 };
    let max = ctx.max_message_len();
    let room = max - overhead;
    let (afi, safi) = family.afi_safi();
    let mut buf = BytesMut::with_capacity(max.min(prefixes.len() * 5 + overhead));
    let mut iter = tagged(prefixes, ids, family);
    while iter.peek().is_some() {
        let start = start_header(&mut buf, MessageType::Update);
        if classic {
            let wd_at = buf.len();
            buf.put_u16(0);
            put_prefixes(&mut iter, room, &mut buf);
            patch_u16(&mut buf, wd_at);
            buf.put_u16(0);
        } else {
            buf.put_u16(0);
            let attr_len_at = buf.len();
            buf.put_u16(0);
            buf.put_u8(flag::OPTIONAL | flag::EXTENDED_LENGTH);
            buf.put_u8(code::MP_UNREACH_NLRI);
            let mp_len_at = buf.len();
            buf.put_u16(0);
            buf.put_u16(afi.code());
            buf.put_u8(safi.code());
            put_prefixes(&mut iter, room, &mut buf);
            patch_u16(&mut buf, mp_len_at);
            patch_u16(&mut buf, attr_len_at);
        }
        finish_header(&mut buf, start);
        out.push(buf.split().freeze());
    }
}

/// A prefix to write, with its path identifier when the family sends them.
type Tagged<'a> = (&'a IpNet, Option<u32>);

/// The prefixes of `family`, each with its identifier from `ids` (if sending them).
fn tagged<'a>(
    prefixes: &'a [IpNet],
    ids: Option<&'a [u32]>,
    family: Family,
) -> std::iter::Peekable<impl Iterator<Item = Tagged<'a>>> {
    prefixes
        .iter()
        .enumerate()
        .filter(move |(_, p)| Family::of(p) == family)
        .map(move |(i, p)| (p, ids.map(|ids| path_id_at(ids, i))))
        .peekable()
}

/// Octets one tagged prefix takes.
fn tagged_len((p, id): &Tagged<'_>) -> usize {
    nlri::encoded_len(p) + if id.is_some() { PATH_ID_LEN } else { 0 }
}

/// Writes prefixes from `iter` while they fit in `room` octets.
fn put_prefixes<'a>(
    iter: &mut std::iter::Peekable<impl Iterator<Item = Tagged<'a>>>,
    room: usize,
    buf: &mut BytesMut,
) {
    let mut used = 0;
    while let Some(t) = iter.next_if(|t| used + tagged_len(t) <= room) {
        used += tagged_len(&t);
        if let Some(id) = t.1 {
            buf.put_u32(id);
        }
        nlri::encode(t.0, buf);
    }
}

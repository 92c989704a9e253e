//! UPDATE decoding (RFC 4271 §4.3, §6.3) with the revised error handling of RFC 7606.
//!
//! What each failure becomes:
//!
//! | failure | action | why |
//! |---|---|---|
//! | Withdrawn Routes Length / Total Path Attribute Length overrun the message | NOTIFICATION 3/1 | RFC 4271 §6.3; NLRI cannot be located |
//! | bad prefix in Withdrawn Routes or NLRI field | NOTIFICATION 3/10 | RFC 4271 §6.3, RFC 7606 §5.3 |
//! | attribute header or length overruns the attribute field | treat-as-withdraw, stop parsing attributes | RFC 7606 §4 |
//! | duplicate MP_REACH_NLRI / MP_UNREACH_NLRI | NOTIFICATION 3/1 | RFC 7606 §3 g |
//! | any other duplicate attribute | later copies discarded | RFC 7606 §3 h |
//! | unrecognized well-known attribute | NOTIFICATION 3/2, data = the attribute | RFC 4271 §6.3 |
//! | wrong Optional/Transitive flags | the attribute's own action below | RFC 7606 §3 c |
//! | ORIGIN, AS_PATH, NEXT_HOP, MED, LOCAL_PREF, COMMUNITIES, ORIGINATOR_ID, CLUSTER_LIST, EXTENDED_COMMUNITIES, LARGE_COMMUNITY malformed | treat-as-withdraw | RFC 7606 §7.1–7.5, 7.8–7.10, 7.14; RFC 8092 §6 |
//! | ATOMIC_AGGREGATE, AGGREGATOR, AS4_AGGREGATOR, AS4_PATH malformed | attribute discard | RFC 7606 §7.6–7.7, RFC 6793 §6 |
//! | MP_REACH_NLRI / MP_UNREACH_NLRI malformed (incl. their NLRI) | NOTIFICATION 3/9 (3/4 for bad flags), data = the attribute | RFC 4760 §7, RFC 7606 §7.11 (session reset chosen over AFI/SAFI disable) |
//! | MP attribute for a family other than IPv4/IPv6 unicast | attribute ignored | RFC 4760 §6: we did not negotiate it |
//! | ORIGIN or AS_PATH missing while NLRI is announced; NEXT_HOP missing with IPv4 NLRI field | treat-as-withdraw | RFC 7606 §3 d |
//! | NEXT_HOP 0.0.0.0, multicast or 255.255.255.255 with IPv4 NLRI | treat-as-withdraw | RFC 7606 §7.3 ("syntactically incorrect") |
//! | NEXT_HOP of a wrong length in an UPDATE without IPv4 NLRI | attribute discard | RFC 4760 §3: such a NEXT_HOP is ignored |
//! | AS4_PATH / AS4_AGGREGATOR from a 4-octet-AS peer | discarded | RFC 6793 §4.1 |
//!
//! An UPDATE that announces nothing and has an attribute error comes back with
//! `treat_as_withdraw` set and nothing to withdraw but its own withdrawals: effectively
//! ignored, as RFC 7606 §5.2 allows. Host bits in prefixes are masked (see `nlri.rs`).
//!
//! Discarded attributes and treat-as-withdraw are logged with `tracing` (RFC 7606 §3 j says to
//! log them). Unknown optional attributes are kept in [`PathAttributes::unknown`] with their
//! flags (Extended Length cleared); transitive ones are re-sent with the Partial bit set and
//! non-transitive ones are dropped by the encoder (RFC 4271 §5, §9.1.3).
//!
//! Checks that need session knowledge (peer AS as first AS_PATH element, confederation
//! segments from an eBGP peer, LOCAL_PREF from an eBGP peer, NEXT_HOP equal to our own
//! address) are left to the session and RIB.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use nom::number::complete::{be_u16, be_u8};
use nom::Parser;

use super::attribute::{
    code, flag, Aggregator, AsPath, AsSegment, Community, ExtCommunity, LargeCommunity, MpReach,
    MpUnreach, Origin, RawAttribute, SegmentType,
};
use super::capability::{Afi, Safi};
use super::decode::PResult;
use super::error::{update, DecodeError, ErrorCode};
use super::message::Update;
use super::nlri::{self, PrefixError};
use super::{DecodeContext, AS_TRANS};

fn malformed_attribute_list(reason: impl Into<String>) -> DecodeError {
    DecodeError::new(
        ErrorCode::Update,
        update::MALFORMED_ATTRIBUTE_LIST,
        Vec::new(),
        reason,
    )
}

fn invalid_network_field(what: &str, e: PrefixError) -> DecodeError {
    DecodeError::new(
        ErrorCode::Update,
        update::INVALID_NETWORK_FIELD,
        Vec::new(),
        format!("invalid prefix in {what}: {e:?}"),
    )
}

/// Decodes the body of an UPDATE (after the 19-octet header).
pub(crate) fn decode_update(body: &[u8], ctx: &DecodeContext) -> Result<Update, DecodeError> {
    let parsed: PResult<'_, &[u8]> = nom::multi::length_data(be_u16).parse(body);
    let Ok((rest, withdrawn_field)) = parsed else {
        return Err(malformed_attribute_list(
            "Withdrawn Routes Length overruns the message",
        ));
    };
    let parsed: PResult<'_, &[u8]> = nom::multi::length_data(be_u16).parse(rest);
    let Ok((nlri_field, attribute_field)) = parsed else {
        return Err(malformed_attribute_list(
            "Total Path Attribute Length overruns the message",
        ));
    };

    let mut upd = Update::default();
    let add_path = ctx.add_path_ipv4;
    let ids = &mut upd.path_ids;
    nlri::decode_v4(
        withdrawn_field,
        add_path.then_some(&mut ids.withdrawn),
        &mut upd.withdrawn,
    )
    .map_err(|e| invalid_network_field("Withdrawn Routes", e))?;
    nlri::decode_v4(nlri_field, add_path.then_some(&mut ids.nlri), &mut upd.nlri)
        .map_err(|e| invalid_network_field("NLRI", e))?;

    let mut state = AttributeParse::new(ctx);
    state.parse_all(attribute_field, &mut upd)?;
    state.finish(&mut upd);
    Ok(upd)
}

/// How RFC 7606 says to recover from one malformed attribute.
enum Recovery {
    /// §2 "treat-as-withdraw".
    Withdraw,
    /// §2 "attribute discard".
    Discard,
    /// §2 "session reset", with the NOTIFICATION to send.
    Reset(DecodeError),
}

/// Expected (Optional, Transitive) bits of each attribute we interpret.
fn expected_flags(type_code: u8) -> Option<u8> {
    const WELL_KNOWN: u8 = flag::TRANSITIVE;
    const OPT_NON_TRANS: u8 = flag::OPTIONAL;
    const OPT_TRANS: u8 = flag::OPTIONAL | flag::TRANSITIVE;
    Some(match type_code {
        code::ORIGIN
        | code::AS_PATH
        | code::NEXT_HOP
        | code::LOCAL_PREF
        | code::ATOMIC_AGGREGATE => WELL_KNOWN,
        code::MULTI_EXIT_DISC
        | code::ORIGINATOR_ID
        | code::CLUSTER_LIST
        | code::MP_REACH_NLRI
        | code::MP_UNREACH_NLRI => OPT_NON_TRANS,
        code::AGGREGATOR
        | code::COMMUNITIES
        | code::EXTENDED_COMMUNITIES
        | code::AS4_PATH
        | code::AS4_AGGREGATOR
        | code::LARGE_COMMUNITY => OPT_TRANS,
        _ => return None,
    })
}

/// The RFC 7606 §7 action for a malformed instance of an attribute we interpret.
fn recovery_for(type_code: u8, raw: &[u8], subcode: u8, reason: &str) -> Recovery {
    match type_code {
        code::ATOMIC_AGGREGATE | code::AGGREGATOR | code::AS4_AGGREGATOR | code::AS4_PATH => {
            Recovery::Discard
        }
        code::MP_REACH_NLRI | code::MP_UNREACH_NLRI => Recovery::Reset(DecodeError::new(
            ErrorCode::Update,
            subcode,
            raw.to_vec(),
            reason,
        )),
        _ => Recovery::Withdraw,
    }
}

struct AttributeParse<'c> {
    ctx: &'c DecodeContext,
    seen: [u64; 4],
    as4_path: Option<AsPath>,
    as4_aggregator: Option<Aggregator>,
}

impl<'c> AttributeParse<'c> {
    fn new(ctx: &'c DecodeContext) -> Self {
        AttributeParse {
            ctx,
            seen: [0; 4],
            as4_path: None,
            as4_aggregator: None,
        }
    }

    /// Marks `type_code` seen; false if it was already.
    fn first_sighting(&mut self, type_code: u8) -> bool {
        let (word, bit) = (usize::from(type_code >> 6), type_code & 63);
        let was = self.seen[word] & (1 << bit) != 0;
        self.seen[word] |= 1 << bit;
        !was
    }

    fn parse_all(&mut self, mut buf: &[u8], upd: &mut Update) -> Result<(), DecodeError> {
        while !buf.is_empty() {
            let header: PResult<'_, (u8, u8)> = (be_u8, be_u8).parse(buf);
            let Ok((after_type, (flags, type_code))) = header else {
                return self.overrun(upd, "attribute header truncated");
            };
            let (value_start, len) = if flags & flag::EXTENDED_LENGTH != 0 {
                match be_u16::<_, ()>(after_type) {
                    Ok((r, l)) => (r, usize::from(l)),
                    Err(_) => return self.overrun(upd, "attribute header truncated"),
                }
            } else {
                match be_u8::<_, ()>(after_type) {
                    Ok((r, l)) => (r, usize::from(l)),
                    Err(_) => return self.overrun(upd, "attribute header truncated"),
                }
            };
            let Some(value) = value_start.get(..len) else {
                return self.overrun(upd, "attribute length overruns the attribute field");
            };
            let header_len = buf.len() - value_start.len();
            let raw = &buf[..header_len + len];
            buf = &value_start[len..];

            if !self.first_sighting(type_code) {
                if matches!(type_code, code::MP_REACH_NLRI | code::MP_UNREACH_NLRI) {
                    return Err(malformed_attribute_list(format!(
                        "attribute {type_code} appears twice"
                    )));
                }
                tracing::debug!(
                    type_code,
                    "duplicate path attribute discarded (RFC 7606 §3 h)"
                );
                continue;
            }

            match self.attribute(flags, type_code, value, raw, upd) {
                Ok(()) => {}
                Err(Recovery::Reset(e)) => return Err(e),
                Err(Recovery::Withdraw) => {
                    tracing::debug!(
                        type_code,
                        "malformed attribute: treat-as-withdraw (RFC 7606)"
                    );
                    upd.treat_as_withdraw = true;
                }
                Err(Recovery::Discard) => {
                    tracing::debug!(type_code, "malformed attribute discarded (RFC 7606)");
                }
            }
        }
        Ok(())
    }

    /// RFC 7606 §4: an attribute that cannot be delimited ends attribute parsing; the Total
    /// Path Attribute Length still locates the NLRI, which is treated as withdrawn.
    fn overrun(&mut self, upd: &mut Update, why: &str) -> Result<(), DecodeError> {
        tracing::debug!(
            why,
            "attribute field overrun: treat-as-withdraw (RFC 7606 §4)"
        );
        upd.treat_as_withdraw = true;
        Ok(())
    }

    fn attribute(
        &mut self,
        flags: u8,
        type_code: u8,
        value: &[u8],
        raw: &[u8],
        upd: &mut Update,
    ) -> Result<(), Recovery> {
        let Some(expected) = expected_flags(type_code) else {
            return self.unknown(flags, type_code, value, raw, upd);
        };
        if flags & (flag::OPTIONAL | flag::TRANSITIVE) != expected {
            return Err(recovery_for(
                type_code,
                raw,
                update::ATTRIBUTE_FLAGS_ERROR,
                "attribute flags conflict with the attribute type",
            ));
        }
        let malformed =
            |reason: &str| recovery_for(type_code, raw, update::OPTIONAL_ATTRIBUTE_ERROR, reason);
        let attrs = &mut upd.attributes;
        let four = self.ctx.four_octet_as;
        match type_code {
            code::ORIGIN => {
                attrs.origin = Some(match value {
                    [0] => Origin::Igp,
                    [1] => Origin::Egp,
                    [2] => Origin::Incomplete,
                    _ => return Err(malformed("ORIGIN")),
                });
            }
            code::AS_PATH => {
                attrs.as_path =
                    Some(decode_as_path(value, four, true).ok_or_else(|| malformed("AS_PATH"))?);
            }
            code::NEXT_HOP => match ipv4(value) {
                Some(nh) => attrs.next_hop = Some(nh),
                // RFC 4760 §3: without IPv4 NLRI the attribute is to be ignored anyway.
                None if upd.nlri.is_empty() => return Err(Recovery::Discard),
                None => return Err(malformed("NEXT_HOP")),
            },
            code::MULTI_EXIT_DISC => {
                attrs.med = Some(u32_value(value).ok_or_else(|| malformed("MED"))?);
            }
            code::LOCAL_PREF => {
                attrs.local_pref = Some(u32_value(value).ok_or_else(|| malformed("LOCAL_PREF"))?);
            }
            code::ATOMIC_AGGREGATE => {
                if !value.is_empty() {
                    return Err(malformed("ATOMIC_AGGREGATE"));
                }
                attrs.atomic_aggregate = true;
            }
            code::AGGREGATOR => {
                attrs.aggregator =
                    Some(decode_aggregator(value, four).ok_or_else(|| malformed("AGGREGATOR"))?);
            }
            code::COMMUNITIES => {
                let words = chunks::<4>(value).ok_or_else(|| malformed("COMMUNITIES"))?;
                attrs.communities = words.map(|c| Community(u32::from_be_bytes(c))).collect();
            }
            code::ORIGINATOR_ID => {
                attrs.originator_id = Some(ipv4(value).ok_or_else(|| malformed("ORIGINATOR_ID"))?);
            }
            code::CLUSTER_LIST => {
                let ids = chunks::<4>(value).ok_or_else(|| malformed("CLUSTER_LIST"))?;
                attrs.cluster_list = ids.map(Ipv4Addr::from).collect();
            }
            code::EXTENDED_COMMUNITIES => {
                let cs = chunks::<8>(value).ok_or_else(|| malformed("EXTENDED_COMMUNITIES"))?;
                attrs.ext_communities = cs.map(ExtCommunity).collect();
            }
            code::LARGE_COMMUNITY => {
                let cs = chunks::<12>(value).ok_or_else(|| malformed("LARGE_COMMUNITY"))?;
                attrs.large_communities = cs
                    .map(|c| LargeCommunity {
                        global: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                        local1: u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
                        local2: u32::from_be_bytes([c[8], c[9], c[10], c[11]]),
                    })
                    .collect();
            }
            code::AS4_PATH => {
                if four {
                    // RFC 6793 §4.1: a NEW speaker never sends it to a NEW speaker.
                    return Err(Recovery::Discard);
                }
                self.as4_path =
                    Some(decode_as_path(value, true, false).ok_or_else(|| malformed("AS4_PATH"))?);
            }
            code::AS4_AGGREGATOR => {
                if four {
                    return Err(Recovery::Discard);
                }
                self.as4_aggregator = Some(
                    decode_aggregator(value, true).ok_or_else(|| malformed("AS4_AGGREGATOR"))?,
                );
            }
            code::MP_REACH_NLRI => {
                upd.mp_reach = decode_mp_reach(value, self.ctx, &mut upd.path_ids.mp_reach)
                    .map_err(|why| malformed(&format!("MP_REACH_NLRI: {why}")))?;
            }
            code::MP_UNREACH_NLRI => {
                upd.mp_unreach = decode_mp_unreach(value, self.ctx, &mut upd.path_ids.mp_unreach)
                    .map_err(|why| malformed(&format!("MP_UNREACH_NLRI: {why}")))?;
            }
            _ => return self.unknown(flags, type_code, value, raw, upd),
        }
        Ok(())
    }

    /// An attribute we do not interpret (RFC 4271 §5, §6.3).
    fn unknown(
        &mut self,
        flags: u8,
        type_code: u8,
        value: &[u8],
        raw: &[u8],
        upd: &mut Update,
    ) -> Result<(), Recovery> {
        if flags & flag::OPTIONAL == 0 {
            return Err(Recovery::Reset(DecodeError::new(
                ErrorCode::Update,
                update::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
                raw.to_vec(),
                format!("unrecognized well-known attribute {type_code}"),
            )));
        }
        upd.attributes.unknown.push(RawAttribute {
            // The low four bits are unused (RFC 4271 §4.3) and the length form is ours to pick.
            flags: flags & (flag::OPTIONAL | flag::TRANSITIVE | flag::PARTIAL),
            type_code,
            value: value.to_vec(),
        });
        Ok(())
    }

    /// Applies what can only be judged on the whole UPDATE: the AS4 merge (RFC 6793 §4.2.3),
    /// missing well-known attributes (RFC 7606 §3 d) and NEXT_HOP validity (§7.3).
    fn finish(self, upd: &mut Update) {
        let attrs = &mut upd.attributes;
        if !self.ctx.four_octet_as {
            let mut use_as4_path = true;
            if let Some(aggr) = &mut attrs.aggregator {
                if aggr.asn != u32::from(AS_TRANS) && self.as4_aggregator.is_some() {
                    // RFC 6793 §4.2.3: an old speaker aggregated after the AS4 attributes
                    // were attached; both are stale.
                    use_as4_path = false;
                } else if let Some(as4) = self.as4_aggregator {
                    *aggr = as4;
                }
            }
            if use_as4_path {
                if let (Some(path), Some(as4)) = (&mut attrs.as_path, self.as4_path) {
                    *path = merge_as4_path(path, as4);
                }
            }
        }

        let announces =
            !upd.nlri.is_empty() || upd.mp_reach.as_ref().is_some_and(|m| !m.nlri.is_empty());
        if announces {
            let mut missing = Vec::new();
            if attrs.origin.is_none() {
                missing.push(code::ORIGIN);
            }
            if attrs.as_path.is_none() {
                missing.push(code::AS_PATH);
            }
            if !upd.nlri.is_empty() && attrs.next_hop.is_none() {
                missing.push(code::NEXT_HOP);
            }
            if !missing.is_empty() && !upd.treat_as_withdraw {
                tracing::debug!(?missing, "missing well-known attribute: treat-as-withdraw");
                upd.treat_as_withdraw = true;
            }
        }
        if !upd.nlri.is_empty() {
            if let Some(nh) = attrs.next_hop {
                if nh.is_unspecified() || nh.is_multicast() || nh.is_broadcast() {
                    tracing::debug!(%nh, "invalid NEXT_HOP: treat-as-withdraw");
                    upd.treat_as_withdraw = true;
                }
            }
        }
    }
}

fn ipv4(value: &[u8]) -> Option<Ipv4Addr> {
    <[u8; 4]>::try_from(value).ok().map(Ipv4Addr::from)
}

fn u32_value(value: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(value).ok().map(u32::from_be_bytes)
}

/// The value as a non-empty sequence of `N`-octet items (RFC 7606 §7.8, 7.10, 7.14: a zero
/// length or a length not a multiple of the item size is malformed).
fn chunks<const N: usize>(value: &[u8]) -> Option<impl Iterator<Item = [u8; N]> + '_> {
    if value.is_empty() || value.len() % N != 0 {
        return None;
    }
    Some(
        value
            .chunks_exact(N)
            .filter_map(|c| <[u8; N]>::try_from(c).ok()),
    )
}

fn decode_aggregator(value: &[u8], four: bool) -> Option<Aggregator> {
    match (four, value) {
        (true, [a, b, c, d, rest @ ..]) => Some(Aggregator {
            asn: u32::from_be_bytes([*a, *b, *c, *d]),
            address: ipv4(rest)?,
        }),
        (false, [a, b, rest @ ..]) => Some(Aggregator {
            asn: u32::from(u16::from_be_bytes([*a, *b])),
            address: ipv4(rest)?,
        }),
        _ => None,
    }
}

/// AS_PATH / AS4_PATH segments (RFC 4271 §4.3, RFC 5065 §3, RFC 6793 §3). A segment of
/// unknown type, with zero ASNs (RFC 7606 §7.2) or overrunning the value is malformed; so is
/// a confederation segment in AS4_PATH (RFC 6793 §6).
pub(crate) fn decode_as_path(mut value: &[u8], four: bool, confed_ok: bool) -> Option<AsPath> {
    let width = if four { 4 } else { 2 };
    let mut segments = Vec::new();
    while let [kind, count, rest @ ..] = value {
        let kind = match kind {
            1 => SegmentType::Set,
            2 => SegmentType::Sequence,
            3 if confed_ok => SegmentType::ConfedSequence,
            4 if confed_ok => SegmentType::ConfedSet,
            _ => return None,
        };
        if *count == 0 {
            return None;
        }
        let n = usize::from(*count) * width;
        let asns = rest.get(..n)?;
        let asns = if four {
            asns.chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        } else {
            asns.chunks_exact(2)
                .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
                .collect()
        };
        segments.push(AsSegment { kind, asns });
        value = &rest[n..];
    }
    if !value.is_empty() {
        return None;
    }
    Some(AsPath { segments })
}

/// RFC 6793 §4.2.3: keep the leading ASes of AS_PATH that AS4_PATH does not cover (those
/// prepended by 2-octet speakers), then append AS4_PATH. If AS_PATH is the shorter one,
/// AS4_PATH is ignored. Counting follows §9.1.2.2 of RFC 4271: an AS_SET is one, and
/// confederation segments (never in AS4_PATH) count zero and are kept.
fn merge_as4_path(path: &AsPath, as4: AsPath) -> AsPath {
    let (len, len4) = (path.path_len(), as4.path_len());
    if len < len4 {
        return path.clone();
    }
    let mut budget = len - len4;
    let mut budget_used_in_sequence = false;
    let mut merged: Vec<AsSegment> = Vec::new();
    for seg in &path.segments {
        match seg.kind {
            SegmentType::ConfedSequence | SegmentType::ConfedSet => merged.push(seg.clone()),
            _ if budget == 0 => break,
            SegmentType::Set => {
                merged.push(seg.clone());
                budget -= 1;
            }
            SegmentType::Sequence => {
                let take = budget.min(seg.asns.len());
                budget_used_in_sequence = take < seg.asns.len();
                merged.push(AsSegment {
                    kind: SegmentType::Sequence,
                    asns: seg.asns[..take].to_vec(),
                });
                budget -= take;
            }
        }
    }
    // Drop an empty remainder (budget ran out exactly at a segment boundary).
    merged.retain(|s| !s.asns.is_empty());
    let mut as4 = as4.segments.into_iter();
    // Join the sequence cut from AS_PATH with the first AS4_PATH sequence: they were one.
    if let (Some(last), Some(first)) = (merged.last_mut(), as4.as_slice().first()) {
        if last.kind == SegmentType::Sequence
            && first.kind == SegmentType::Sequence
            && budget_used_in_sequence
            && last.asns.len() + first.asns.len() <= 255
        {
            last.asns.extend_from_slice(&first.asns);
            as4.next();
        }
    }
    merged.extend(as4);
    AsPath { segments: merged }
}

/// MP_REACH_NLRI (RFC 4760 §3). `Ok(None)` for a family we do not carry.
fn decode_mp_reach(
    value: &[u8],
    ctx: &DecodeContext,
    ids: &mut Vec<u32>,
) -> Result<Option<MpReach>, &'static str> {
    let header: PResult<'_, (u16, u8, &[u8], u8)> =
        (be_u16, be_u8, nom::multi::length_data(be_u8), be_u8).parse(value);
    let Ok((nlri_field, (afi, safi, nh, _reserved))) = header else {
        return Err("truncated header or next hop");
    };
    let (afi, safi) = (Afi::from_code(afi), Safi::from_code(safi));
    if safi != Safi::Unicast || !matches!(afi, Afi::Ipv4 | Afi::Ipv6) {
        tracing::debug!(
            ?afi,
            ?safi,
            "MP_REACH_NLRI for a family we do not carry ignored"
        );
        return Ok(None);
    }
    // Next hop: 4 octets (IPv4), 16 (a global IPv6 address; for AFI 1 the RFC 8950 form),
    // or 32 (global + link-local, RFC 2545 §3).
    let (next_hop, link_local_next_hop) = match (afi, nh.len()) {
        (Afi::Ipv4, 4) => (IpAddr::V4(ipv4(nh).ok_or("next hop")?), None),
        (_, 16) => (IpAddr::V6(ipv6(nh).ok_or("next hop")?), None),
        (_, 32) => (
            IpAddr::V6(ipv6(&nh[..16]).ok_or("next hop")?),
            Some(ipv6(&nh[16..]).ok_or("next hop")?),
        ),
        _ => return Err("next hop length does not fit the family"),
    };
    let nlri = decode_mp_prefixes(afi, nlri_field, ctx, ids)?;
    Ok(Some(MpReach {
        afi,
        safi,
        next_hop,
        link_local_next_hop,
        nlri,
    }))
}

/// MP_UNREACH_NLRI (RFC 4760 §4). `Ok(None)` for a family we do not carry.
fn decode_mp_unreach(
    value: &[u8],
    ctx: &DecodeContext,
    ids: &mut Vec<u32>,
) -> Result<Option<MpUnreach>, &'static str> {
    let header: PResult<'_, (u16, u8)> = (be_u16, be_u8).parse(value);
    let Ok((field, (afi, safi))) = header else {
        return Err("truncated header");
    };
    let (afi, safi) = (Afi::from_code(afi), Safi::from_code(safi));
    if safi != Safi::Unicast || !matches!(afi, Afi::Ipv4 | Afi::Ipv6) {
        tracing::debug!(
            ?afi,
            ?safi,
            "MP_UNREACH_NLRI for a family we do not carry ignored"
        );
        return Ok(None);
    }
    let withdrawn = decode_mp_prefixes(afi, field, ctx, ids)?;
    Ok(Some(MpUnreach {
        afi,
        safi,
        withdrawn,
    }))
}

/// The prefixes of an MP attribute; their path identifiers (ADD-PATH) replace `ids`.
fn decode_mp_prefixes(
    afi: Afi,
    field: &[u8],
    ctx: &DecodeContext,
    ids: &mut Vec<u32>,
) -> Result<Vec<IpNet>, &'static str> {
    // A repeated MP attribute is an error caught elsewhere; never mix two lists' ids.
    ids.clear();
    match afi {
        Afi::Ipv4 => {
            let mut v4 = Vec::new();
            nlri::decode_v4(field, ctx.add_path_ipv4.then_some(ids), &mut v4)
                .map_err(|_| "bad IPv4 prefix")?;
            Ok(v4.into_iter().map(IpNet::V4).collect())
        }
        _ => {
            let mut v6 = Vec::new();
            nlri::decode_v6(field, ctx.add_path_ipv6.then_some(ids), &mut v6)
                .map_err(|_| "bad IPv6 prefix")?;
            Ok(v6.into_iter().map(IpNet::V6).collect())
        }
    }
}

fn ipv6(value: &[u8]) -> Option<Ipv6Addr> {
    <[u8; 16]>::try_from(value).ok().map(Ipv6Addr::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(asns: &[u32]) -> AsSegment {
        AsSegment {
            kind: SegmentType::Sequence,
            asns: asns.to_vec(),
        }
    }

    #[test]
    fn as4_merge_keeps_prepends_of_old_speakers() {
        // An old speaker (AS 100) prepended itself to a path that carried AS4_PATH.
        let path = AsPath {
            segments: vec![seq(&[100, 23456, 200])],
        };
        let as4 = AsPath {
            segments: vec![seq(&[4_200_000_000, 200])],
        };
        assert_eq!(
            merge_as4_path(&path, as4).segments,
            vec![seq(&[100, 4_200_000_000, 200])]
        );
    }

    #[test]
    fn as4_merge_ignores_longer_as4_path() {
        let path = AsPath {
            segments: vec![seq(&[23456])],
        };
        let as4 = AsPath {
            segments: vec![seq(&[1, 2])],
        };
        assert_eq!(merge_as4_path(&path, as4), path);
    }

    #[test]
    fn as_path_segment_errors() {
        assert!(decode_as_path(&[2, 0], true, true).is_none());
        assert!(decode_as_path(&[5, 1, 0, 0, 0, 1], true, true).is_none());
        assert!(decode_as_path(&[2, 2, 0, 0, 0, 1], true, true).is_none());
        assert!(decode_as_path(&[3, 1, 0, 0, 0, 1], true, false).is_none());
        assert_eq!(
            decode_as_path(&[2, 1, 0, 100], false, true),
            Some(AsPath::from_sequence(vec![100]))
        );
        assert_eq!(decode_as_path(&[], true, true), Some(AsPath::default()));
    }
}

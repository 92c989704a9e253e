//! Property tests: decode(encode(x)) == x for every message type under both 2- and 4-octet AS
//! sessions, UPDATE packing keeps every prefix, and no input makes the decoder panic.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bgp::packet::*;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;

fn ctx(four_octet_as: bool) -> DecodeContext {
    DecodeContext {
        four_octet_as,
        ..Default::default()
    }
}

fn roundtrip(msg: &Message, ctx: &DecodeContext) -> Result<(), TestCaseError> {
    let bytes = msg.to_bytes(ctx);
    prop_assert!(bytes.len() <= MAX_MESSAGE_LEN, "{} octets", bytes.len());
    prop_assert_eq!(frame_len(&bytes).unwrap(), Some(bytes.len()));
    let back = Message::decode(&bytes, ctx).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, msg);
    Ok(())
}

// ---- strategies ----

fn afi() -> impl Strategy<Value = Afi> {
    any::<u16>().prop_map(Afi::from_code)
}

fn safi() -> impl Strategy<Value = Safi> {
    any::<u8>().prop_map(Safi::from_code)
}

fn capability() -> impl Strategy<Value = Capability> {
    prop_oneof![
        (afi(), safi()).prop_map(|(afi, safi)| Capability::MultiProtocol { afi, safi }),
        Just(Capability::RouteRefresh),
        Just(Capability::ExtendedMessage),
        Just(Capability::EnhancedRouteRefresh),
        any::<u32>().prop_map(Capability::FourOctetAs),
        (
            any::<bool>(),
            any::<bool>(),
            0u16..4096,
            prop::collection::vec((afi(), safi(), any::<bool>()), 0..4)
        )
            .prop_map(|(restarting, notification, restart_time, fams)| {
                Capability::GracefulRestart {
                    restarting,
                    notification,
                    restart_time,
                    families: fams
                        .into_iter()
                        .map(|(afi, safi, f)| GracefulRestartFamily {
                            afi,
                            safi,
                            forwarding_preserved: f,
                        })
                        .collect(),
                }
            }),
        prop::collection::vec(
            (afi(), safi(), any::<u8>().prop_map(AddPathMode::from_code)),
            0..4
        )
        .prop_map(Capability::AddPath),
        ("[a-z0-9.-]{0,40}", "[a-z0-9.-]{0,40}")
            .prop_map(|(hostname, domain)| Capability::Fqdn { hostname, domain }),
        (any::<u8>(), prop::collection::vec(any::<u8>(), 0..20))
            .prop_filter("known code", |(c, _)| !matches!(
                c,
                1 | 2 | 6 | 64 | 65 | 69 | 70 | 73
            ))
            .prop_map(|(code, value)| Capability::Unknown { code, value }),
    ]
}

fn open() -> impl Strategy<Value = Open> {
    (
        any::<u16>(),
        any::<u16>().prop_filter("1 and 2 are invalid", |h| *h != 1 && *h != 2),
        1u32..,
        // Up to 40 capabilities: more than fit in 255 octets exercises RFC 9072.
        prop::collection::vec(capability(), 0..40),
    )
        .prop_map(|(my_as, hold_time, id, capabilities)| Open {
            version: 4,
            my_as,
            hold_time,
            bgp_id: Ipv4Addr::from(id),
            capabilities,
        })
}

fn v4net() -> impl Strategy<Value = Ipv4Net> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, l)| Ipv4Net::new(Ipv4Addr::from(a), l).unwrap().trunc())
}

fn v6net() -> impl Strategy<Value = Ipv6Net> {
    (any::<u128>(), 0u8..=128)
        .prop_map(|(a, l)| Ipv6Net::new(Ipv6Addr::from(a), l).unwrap().trunc())
}

fn asn() -> impl Strategy<Value = u32> {
    // Mostly 2-octet numbers, with 4-octet ones and AS_TRANS itself mixed in.
    prop_oneof![1u32..65536, 65536u32.., Just(u32::from(AS_TRANS))]
}

fn segment(confed: bool) -> impl Strategy<Value = AsSegment> {
    let kinds: Vec<SegmentType> = if confed {
        vec![SegmentType::ConfedSequence, SegmentType::ConfedSet]
    } else {
        vec![SegmentType::Sequence, SegmentType::Set]
    };
    (
        prop::sample::select(kinds),
        prop::collection::vec(asn(), 1..8),
    )
        .prop_map(|(kind, asns)| AsSegment { kind, asns })
}

/// Confederation segments lead the path (RFC 5065 §5.3 prepends them).
fn as_path() -> impl Strategy<Value = AsPath> {
    (
        prop::collection::vec(segment(true), 0..2),
        prop::collection::vec(segment(false), 0..4),
    )
        .prop_map(|(mut confed, rest)| {
            confed.extend(rest);
            AsPath { segments: confed }
        })
}

/// A unicast address that a NEXT_HOP may carry.
fn unicast_v4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>()
        .prop_map(Ipv4Addr::from)
        .prop_filter("unicast", |a| {
            !(a.is_unspecified() || a.is_multicast() || a.is_broadcast())
        })
}

fn attributes() -> impl Strategy<Value = PathAttributes> {
    let base = (
        prop::sample::select(vec![Origin::Igp, Origin::Egp, Origin::Incomplete]),
        as_path(),
        unicast_v4(),
        any::<Option<u32>>(),
        any::<Option<u32>>(),
        any::<bool>(),
        prop::option::of((asn(), any::<u32>())),
    );
    let lists = (
        prop::collection::vec(any::<u32>().prop_map(Community), 0..10),
        prop::option::of(any::<u32>().prop_map(Ipv4Addr::from)),
        prop::collection::vec(any::<u32>().prop_map(Ipv4Addr::from), 0..4),
        prop::collection::vec(any::<[u8; 8]>().prop_map(ExtCommunity), 0..4),
        prop::collection::vec(
            (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(global, local1, local2)| {
                LargeCommunity {
                    global,
                    local1,
                    local2,
                }
            }),
            0..4,
        ),
        // Unknown optional transitive attributes, one per type code, as they come back
        // from the wire: in type-code order and with the Partial bit set.
        prop::collection::btree_map(
            prop::sample::select(vec![0u8, 11, 12, 13, 19, 22, 23, 29, 35, 40, 128, 255]),
            prop::collection::vec(any::<u8>(), 0..300),
            0..3,
        ),
    );
    (base, lists).prop_map(
        |(
            (origin, as_path, next_hop, med, local_pref, atomic_aggregate, aggregator),
            (communities, originator_id, cluster_list, ext, large, unknown),
        )| PathAttributes {
            origin: Some(origin),
            as_path: Some(as_path),
            next_hop: Some(next_hop),
            med,
            local_pref,
            atomic_aggregate,
            aggregator: aggregator.map(|(asn, a)| Aggregator {
                asn,
                address: Ipv4Addr::from(a),
            }),
            communities,
            originator_id,
            cluster_list,
            ext_communities: ext,
            large_communities: large,
            unknown: unknown_list(unknown),
        },
    )
}

fn unknown_list(m: BTreeMap<u8, Vec<u8>>) -> Vec<RawAttribute> {
    m.into_iter()
        .map(|(type_code, value)| RawAttribute {
            flags: 0xe0,
            type_code,
            value,
        })
        .collect()
}

fn mp_reach() -> impl Strategy<Value = MpReach> {
    (
        any::<u128>().prop_map(Ipv6Addr::from),
        prop::option::of(any::<u128>().prop_map(Ipv6Addr::from)),
        prop::collection::vec(v6net().prop_map(IpNet::V6), 0..30),
    )
        .prop_map(|(nh, ll, nlri)| MpReach {
            afi: Afi::Ipv6,
            safi: Safi::Unicast,
            next_hop: IpAddr::V6(nh),
            link_local_next_hop: ll,
            nlri,
        })
}

fn mp_unreach() -> impl Strategy<Value = MpUnreach> {
    prop::collection::vec(v6net().prop_map(IpNet::V6), 0..30).prop_map(|withdrawn| MpUnreach {
        afi: Afi::Ipv6,
        safi: Safi::Unicast,
        withdrawn,
    })
}

fn update() -> impl Strategy<Value = Update> {
    (
        prop::collection::vec(v4net(), 0..40),
        attributes(),
        prop::collection::vec(v4net(), 0..40),
        prop::option::of(mp_reach()),
        prop::option::of(mp_unreach()),
    )
        .prop_map(
            |(withdrawn, attributes, nlri, mp_reach, mp_unreach)| Update {
                withdrawn,
                attributes,
                nlri,
                mp_reach,
                mp_unreach,
                treat_as_withdraw: false,
                path_ids: PathIds::default(),
            },
        )
}

/// For a 2-octet session, confederation members must fit in 2 octets: AS4_PATH cannot carry
/// confederation segments (RFC 6793 §3), so a wider member is not representable.
fn for_two_octet(mut u: Update) -> Update {
    if let Some(p) = &mut u.attributes.as_path {
        for s in &mut p.segments {
            if matches!(s.kind, SegmentType::ConfedSequence | SegmentType::ConfedSet) {
                for a in &mut s.asns {
                    *a &= 0xffff;
                }
            }
        }
    }
    u
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn open_roundtrip(o in open(), four in any::<bool>()) {
        roundtrip(&Message::Open(o), &ctx(four))?;
    }

    #[test]
    fn update_roundtrip_four_octet(u in update()) {
        roundtrip(&Message::Update(u), &ctx(true))?;
    }

    #[test]
    fn update_roundtrip_two_octet(u in update().prop_map(for_two_octet)) {
        roundtrip(&Message::Update(u), &ctx(false))?;
    }

    #[test]
    fn notification_roundtrip(
        code in any::<u8>(), subcode in any::<u8>(),
        data in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        roundtrip(&Message::Notification(Notification { code, subcode, data }), &ctx(true))?;
    }

    #[test]
    fn route_refresh_roundtrip(afi in afi(), safi in safi(), subtype in any::<u8>()) {
        roundtrip(&Message::RouteRefresh(RouteRefresh { afi, safi, subtype }), &ctx(false))?;
        roundtrip(&Message::Keepalive, &ctx(true))?;
    }

    /// Packed UPDATEs stay within 4096 octets and carry every prefix with the attributes.
    #[test]
    fn packing_keeps_every_prefix(
        attrs in attributes(),
        v4 in prop::collection::vec(v4net(), 0..3000),
        v6 in prop::collection::vec(v6net(), 0..1000),
        nh4 in unicast_v4(),
        nh6 in any::<u128>().prop_map(Ipv6Addr::from),
        ll in prop::option::of(any::<u128>().prop_map(Ipv6Addr::from)),
        four in any::<bool>(),
    ) {
        let attrs = if four {
            attrs
        } else {
            for_two_octet(Update { attributes: attrs, ..Default::default() }).attributes
        };
        let v4: Vec<IpNet> = v4.into_iter().map(IpNet::V4).collect();
        let v6: Vec<IpNet> = v6.into_iter().map(IpNet::V6).collect();
        check_packing(&attrs, &v4, &v6, nh4, NextHop { address: IpAddr::V6(nh6), link_local: ll }, &ctx(four))?;
    }

    /// Arbitrary bytes, framed or not, never panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = frame_len(&bytes);
        let _ = Message::decode(&bytes, &ctx(true));
        let _ = Message::decode(&bytes, &ctx(false));
    }

    /// Arbitrary bodies behind a valid header reach deep into every decoder.
    #[test]
    fn arbitrary_bodies_never_panic(
        kind in 1u8..=5,
        body in prop::collection::vec(any::<u8>(), 0..600),
        four in any::<bool>(),
        add_path in any::<bool>(),
    ) {
        let mut m = vec![0xff; 16];
        m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
        m.push(kind);
        m.extend_from_slice(&body);
        let ctx = DecodeContext {
            four_octet_as: four,
            add_path_ipv4: add_path,
            add_path_ipv6: add_path,
            add_path_send_ipv4: false,
            add_path_send_ipv6: false,
            extended_messages: false,
        };
        if let Ok(Some(_)) = frame_len(&m) {
            // Whatever is accepted re-encodes into something accepted again (with the
            // path identifiers it was read with).
            if let Ok(msg) = Message::decode(&m, &ctx) {
                reencodes(&msg, &ctx)?;
            }
        }
    }

    /// Valid UPDATEs with a few octets flipped: mostly well-framed, malformed inside.
    #[test]
    fn mutated_updates_never_panic(
        u in update(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        four in any::<bool>(),
    ) {
        let ctx = ctx(four);
        let mut bytes = Message::Update(u).to_bytes(&ctx).to_vec();
        for (i, v) in flips {
            let i = 19 + i.index(bytes.len() - 19);
            bytes[i] = v;
        }
        if let Ok(msg) = Message::decode(&bytes, &ctx) {
            reencodes(&msg, &ctx)?;
        }
    }
}

fn reencodes(msg: &Message, ctx: &DecodeContext) -> Result<(), TestCaseError> {
    let plain = DecodeContext {
        add_path_send_ipv4: ctx.add_path_ipv4,
        add_path_send_ipv6: ctx.add_path_ipv6,
        extended_messages: false,
        ..*ctx
    };
    let bytes = msg.to_bytes(&plain);
    if bytes.len() <= MAX_MESSAGE_LEN {
        if let Err(e) = Message::decode(&bytes, &plain) {
            return Err(TestCaseError::fail(format!(
                "{msg:?} re-encoded does not decode: {e}"
            )));
        }
    }
    Ok(())
}

/// Every message of a batch but the last is full: not even the smallest-but-largest prefix
/// of the family would have fit.
fn assert_packed(msgs: &[bytes::Bytes], max_prefix: usize) -> Result<(), TestCaseError> {
    for (i, m) in msgs.iter().enumerate() {
        prop_assert!(m.len() <= MAX_MESSAGE_LEN);
        if i + 1 < msgs.len() {
            prop_assert!(
                m.len() + max_prefix > MAX_MESSAGE_LEN,
                "message {} only {} octets",
                i,
                m.len()
            );
        }
    }
    Ok(())
}

fn decode_all(msgs: &[bytes::Bytes], ctx: &DecodeContext) -> Result<Vec<Update>, TestCaseError> {
    msgs.iter()
        .map(|m| match Message::decode(m, ctx) {
            Ok(Message::Update(u)) => Ok(u),
            other => Err(TestCaseError::fail(format!("{other:?}"))),
        })
        .collect()
}

fn check_packing(
    attrs: &PathAttributes,
    v4: &[IpNet],
    v6: &[IpNet],
    nh4: Ipv4Addr,
    nh6: NextHop,
    ctx: &DecodeContext,
) -> Result<(), TestCaseError> {
    let mixed: Vec<IpNet> = v4.iter().chain(v6).copied().collect();

    // IPv4: NLRI field with NEXT_HOP; IPv6 prefixes in the input are skipped.
    let mut msgs = Vec::new();
    encode_updates(
        attrs,
        Family::Ipv4Unicast,
        IpAddr::V4(nh4).into(),
        &mixed,
        ctx,
        &mut msgs,
    )
    .unwrap();
    assert_packed(&msgs, 5)?;
    let mut got = Vec::new();
    for u in decode_all(&msgs, ctx)? {
        prop_assert!(!u.treat_as_withdraw);
        prop_assert_eq!(
            &u.attributes,
            &PathAttributes {
                next_hop: Some(nh4),
                ..attrs.clone()
            }
        );
        got.extend(u.nlri.into_iter().map(IpNet::V4));
    }
    prop_assert_eq!(&got, &v4);

    // IPv6: MP_REACH_NLRI, no NEXT_HOP attribute.
    let mut msgs = Vec::new();
    encode_updates(attrs, Family::Ipv6Unicast, nh6, &mixed, ctx, &mut msgs).unwrap();
    assert_packed(&msgs, 17)?;
    let mut got = Vec::new();
    for u in decode_all(&msgs, ctx)? {
        prop_assert!(!u.treat_as_withdraw);
        prop_assert_eq!(
            &u.attributes,
            &PathAttributes {
                next_hop: None,
                ..attrs.clone()
            }
        );
        let r = u.mp_reach.unwrap();
        prop_assert_eq!(r.next_hop, nh6.address);
        prop_assert_eq!(r.link_local_next_hop, nh6.link_local);
        got.extend(r.nlri);
    }
    prop_assert_eq!(&got, &v6);

    // Withdrawals of both families.
    for (family, want, max) in [(Family::Ipv4Unicast, v4, 5), (Family::Ipv6Unicast, v6, 17)] {
        let mut msgs = Vec::new();
        encode_withdrawals(family, &mixed, ctx, &mut msgs);
        assert_packed(&msgs, max)?;
        let got: Vec<IpNet> = decode_all(&msgs, ctx)?
            .iter()
            .flat_map(|u| u.withdrawn_all().collect::<Vec<_>>())
            .collect();
        prop_assert_eq!(&got, want);
    }
    Ok(())
}

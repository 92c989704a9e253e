//! Golden bytes, both ways: hand-assembled from the RFC layouts, decoded into the expected
//! value and re-encoded into the same bytes.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bgp::packet::*;
use bytes::BytesMut;

const FOUR: DecodeContext = DecodeContext {
    four_octet_as: true,
    add_path_ipv4: false,
    add_path_ipv6: false,
    add_path_send_ipv4: false,
    add_path_send_ipv6: false,
    extended_messages: false,
};
const TWO: DecodeContext = DecodeContext {
    four_octet_as: false,
    add_path_ipv4: false,
    add_path_ipv6: false,
    add_path_send_ipv4: false,
    add_path_send_ipv6: false,
    extended_messages: false,
};

/// Prefixes a body with the 19-octet header.
fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(kind);
    m.extend_from_slice(body);
    m
}

/// An UPDATE from its three fields.
fn update(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    body.extend_from_slice(withdrawn);
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(nlri);
    message(2, &body)
}

fn both_ways(bytes: &[u8], msg: &Message, ctx: &DecodeContext) {
    assert_eq!(frame_len(bytes).unwrap(), Some(bytes.len()));
    assert_eq!(&Message::decode(bytes, ctx).unwrap(), msg, "decode");
    let mut out = BytesMut::new();
    msg.encode(ctx, &mut out);
    assert_eq!(&out[..], bytes, "encode");
    assert_eq!(&msg.to_bytes(ctx)[..], bytes, "to_bytes");
}

fn net(s: &str) -> ipnet::IpNet {
    s.parse().unwrap()
}

/// An OPEN laid out as BIRD 2 sends it with graceful restart, ADD-PATH and hostname enabled:
/// one Capabilities parameter holding every capability.
#[test]
fn open_with_bird_capabilities() {
    #[rustfmt::skip]
    let body = [
        4,                      // version
        0xfd, 0xe9,             // my AS 65001
        0x00, 0xf0,             // hold time 240
        10, 0, 0, 1,            // BGP identifier
        46,                     // optional parameters length
        2, 44,                  // parameter type 2 (capabilities), length 44
        1, 4, 0, 1, 0, 1,       // multiprotocol IPv4 unicast
        1, 4, 0, 2, 0, 1,       // multiprotocol IPv6 unicast
        2, 0,                   // route refresh
        70, 0,                  // enhanced route refresh
        64, 6, 0x40, 120, 0, 1, 1, 0x80, // graceful restart: N bit, 120 s, IPv4 unicast F bit
        65, 4, 0, 0, 0xfd, 0xe9, // 4-octet AS 65001
        69, 4, 0, 1, 1, 3,      // ADD-PATH IPv4 unicast send/receive
        73, 6, 4, b'n', b'o', b'd', b'e', 0, // hostname "node", no domain
    ];
    let open = Open {
        version: 4,
        my_as: 65001,
        hold_time: 240,
        bgp_id: Ipv4Addr::new(10, 0, 0, 1),
        capabilities: vec![
            Capability::MultiProtocol {
                afi: Afi::Ipv4,
                safi: Safi::Unicast,
            },
            Capability::MultiProtocol {
                afi: Afi::Ipv6,
                safi: Safi::Unicast,
            },
            Capability::RouteRefresh,
            Capability::EnhancedRouteRefresh,
            Capability::GracefulRestart {
                restarting: false,
                notification: true,
                restart_time: 120,
                families: vec![GracefulRestartFamily {
                    afi: Afi::Ipv4,
                    safi: Safi::Unicast,
                    forwarding_preserved: true,
                }],
            },
            Capability::FourOctetAs(65001),
            Capability::AddPath(vec![(Afi::Ipv4, Safi::Unicast, AddPathMode::Both)]),
            Capability::Fqdn {
                hostname: "node".into(),
                domain: String::new(),
            },
        ],
    };
    assert_eq!(
        open.families(),
        vec![Family::Ipv4Unicast, Family::Ipv6Unicast]
    );
    both_ways(&message(1, &body), &Message::Open(open), &FOUR);
}

/// GoBGP puts each capability in its own parameter; all of them are read.
#[test]
fn open_with_one_parameter_per_capability() {
    #[rustfmt::skip]
    let body = [
        4, 0x5b, 0xa0, 0, 90, 192, 0, 2, 1, 16,
        2, 6, 1, 4, 0, 1, 0, 1,
        2, 6, 65, 4, 0, 1, 0x11, 0x70, // 4-octet AS 70000
    ];
    let Message::Open(open) = Message::decode(&message(1, &body), &FOUR).unwrap() else {
        panic!("not an OPEN")
    };
    assert_eq!(open.my_as, AS_TRANS);
    assert_eq!(open.asn(), 70000);
    assert_eq!(open.hold_time, 90);
    assert_eq!(open.capabilities.len(), 2);
}

#[test]
fn open_unknown_capability_kept_verbatim() {
    let body = [4, 0, 100, 0, 0, 1, 1, 1, 1, 6, 2, 4, 200, 2, 0xab, 0xcd];
    let open = Open {
        version: 4,
        my_as: 100,
        hold_time: 0,
        bgp_id: Ipv4Addr::new(1, 1, 1, 1),
        capabilities: vec![Capability::Unknown {
            code: 200,
            value: vec![0xab, 0xcd],
        }],
    };
    both_ways(&message(1, &body), &Message::Open(open), &FOUR);
}

/// RFC 9072: optional parameters length 255, type 255, then a 2-octet length and parameters
/// with 2-octet lengths.
#[test]
fn open_extended_optional_parameters() {
    let mut caps = Vec::new();
    let mut expected = Vec::new();
    for i in 0..70u8 {
        caps.extend_from_slice(&[200, 2, i, i]);
        expected.push(Capability::Unknown {
            code: 200,
            value: vec![i, i],
        });
    }
    let mut body = vec![4, 0, 100, 0, 0, 1, 1, 1, 1, 255, 255];
    body.extend_from_slice(&((caps.len() + 3) as u16).to_be_bytes());
    body.push(2);
    body.extend_from_slice(&(caps.len() as u16).to_be_bytes());
    body.extend_from_slice(&caps);
    let open = Open {
        version: 4,
        my_as: 100,
        hold_time: 0,
        bgp_id: Ipv4Addr::new(1, 1, 1, 1),
        capabilities: expected,
    };
    both_ways(&message(1, &body), &Message::Open(open), &FOUR);
}

#[test]
fn keepalive() {
    both_ways(&message(4, &[]), &Message::Keepalive, &FOUR);
    assert_eq!(message(4, &[]).len(), 19);
}

#[test]
fn notification_with_data() {
    // Cease / Administrative Shutdown with a shutdown communication (RFC 9003).
    let body = [6, 2, 5, b'h', b'e', b'l', b'l', b'o'];
    let n = Notification {
        code: 6,
        subcode: 2,
        data: vec![5, b'h', b'e', b'l', b'l', b'o'],
    };
    both_ways(&message(3, &body), &Message::Notification(n), &FOUR);
    both_ways(
        &message(3, &[4, 0]),
        &Message::Notification(Notification {
            code: 4,
            subcode: 0,
            data: vec![],
        }),
        &FOUR,
    );
}

#[test]
fn route_refresh() {
    both_ways(
        &message(5, &[0, 2, 0, 1]),
        &Message::RouteRefresh(RouteRefresh {
            afi: Afi::Ipv6,
            safi: Safi::Unicast,
            subtype: 0,
        }),
        &FOUR,
    );
    // Enhanced route refresh Begin-of-RR (RFC 7313 §3.2).
    both_ways(
        &message(5, &[0, 1, 1, 1]),
        &Message::RouteRefresh(RouteRefresh {
            afi: Afi::Ipv4,
            safi: Safi::Unicast,
            subtype: 1,
        }),
        &FOUR,
    );
}

#[test]
fn end_of_rib_markers() {
    let v4 = update(&[], &[], &[]);
    both_ways(
        &v4,
        &Message::Update(Update::end_of_rib(Family::Ipv4Unicast)),
        &FOUR,
    );
    let v6 = update(&[], &[0x80, 15, 3, 0, 2, 1], &[]);
    let msg = Message::decode(&v6, &FOUR).unwrap();
    let Message::Update(u) = &msg else { panic!() };
    assert_eq!(u.is_end_of_rib(), Some(Family::Ipv6Unicast));
    both_ways(
        &v6,
        &Message::Update(Update::end_of_rib(Family::Ipv6Unicast)),
        &FOUR,
    );
}

/// A full IPv4 UPDATE with every attribute we interpret, in type-code order.
#[test]
fn update_ipv4_all_attributes() {
    #[rustfmt::skip]
    let attrs = [
        0x40, 1, 1, 0,                                  // ORIGIN IGP
        0x40, 2, 16, 2, 2, 0, 0, 0xfd, 0xe9, 0, 0, 0xfd, 0xea, // AS_PATH SEQ 65001 65002
                     1, 1, 0, 1, 0x11, 0x70,            //         SET 70000
        0x40, 3, 4, 10, 0, 0, 1,                        // NEXT_HOP
        0x80, 4, 4, 0, 0, 0, 100,                       // MED 100
        0x40, 5, 4, 0, 0, 0, 200,                       // LOCAL_PREF 200
        0x40, 6, 0,                                     // ATOMIC_AGGREGATE
        0xc0, 7, 8, 0, 0, 0xfd, 0xe9, 10, 0, 0, 9,      // AGGREGATOR 65001 10.0.0.9
        0xc0, 8, 8, 0xfd, 0xe9, 0, 1, 0xff, 0xff, 0xff, 0x01, // COMMUNITIES 65001:1 NO_EXPORT
        0x80, 9, 4, 10, 0, 0, 2,                        // ORIGINATOR_ID
        0x80, 10, 8, 10, 0, 0, 3, 10, 0, 0, 4,          // CLUSTER_LIST
        0xc0, 16, 8, 0, 2, 0xfd, 0xe9, 0, 0, 0, 1,      // EXTENDED_COMMUNITIES rt 65001:1
        0xc0, 32, 12, 0, 0, 0xfd, 0xe9, 0, 0, 0, 1, 0, 0, 0, 2, // LARGE_COMMUNITY 65001:1:2
        0xe0, 35, 4, 0, 0, 0xfd, 0xe9,                  // unknown optional transitive (Partial)
    ];
    let withdrawn = [16, 172, 16, 0];
    let nlri = [24, 10, 1, 2, 32, 10, 0, 0, 1, 0];
    let bytes = update(&withdrawn, &attrs, &nlri);
    let expected = Update {
        withdrawn: vec![
            "172.16.0.0/16".parse().unwrap(),
            "0.0.0.0/0".parse().unwrap(),
        ],
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath {
                segments: vec![
                    AsSegment {
                        kind: SegmentType::Sequence,
                        asns: vec![65001, 65002],
                    },
                    AsSegment {
                        kind: SegmentType::Set,
                        asns: vec![70000],
                    },
                ],
            }),
            next_hop: Some(Ipv4Addr::new(10, 0, 0, 1)),
            med: Some(100),
            local_pref: Some(200),
            atomic_aggregate: true,
            aggregator: Some(Aggregator {
                asn: 65001,
                address: Ipv4Addr::new(10, 0, 0, 9),
            }),
            communities: vec![Community::new(65001, 1), Community::NO_EXPORT],
            originator_id: Some(Ipv4Addr::new(10, 0, 0, 2)),
            cluster_list: vec![Ipv4Addr::new(10, 0, 0, 3), Ipv4Addr::new(10, 0, 0, 4)],
            ext_communities: vec![ExtCommunity([0, 2, 0xfd, 0xe9, 0, 0, 0, 1])],
            large_communities: vec![LargeCommunity {
                global: 65001,
                local1: 1,
                local2: 2,
            }],
            unknown: vec![RawAttribute {
                flags: 0xe0,
                type_code: 35,
                value: vec![0, 0, 0xfd, 0xe9],
            }],
        },
        nlri: vec![
            "10.1.2.0/24".parse().unwrap(),
            "10.0.0.1/32".parse().unwrap(),
            "0.0.0.0/0".parse().unwrap(),
        ],
        mp_reach: None,
        mp_unreach: None,
        treat_as_withdraw: false,
        path_ids: PathIds::default(),
    };
    both_ways(&bytes, &Message::Update(expected), &FOUR);
}

/// One attribute at a time, each in its own UPDATE without NLRI.
#[test]
fn each_attribute_alone() {
    let cases: Vec<(Vec<u8>, PathAttributes)> = vec![
        (
            vec![0x40, 1, 1, 2],
            PathAttributes {
                origin: Some(Origin::Incomplete),
                ..Default::default()
            },
        ),
        (
            vec![0x40, 1, 1, 1],
            PathAttributes {
                origin: Some(Origin::Egp),
                ..Default::default()
            },
        ),
        // Empty AS_PATH (iBGP-originated).
        (
            vec![0x40, 2, 0],
            PathAttributes {
                as_path: Some(AsPath::default()),
                ..Default::default()
            },
        ),
        // Confederation segments (RFC 5065 §3).
        (
            vec![0x40, 2, 12, 3, 1, 0, 0, 0xfd, 0xe8, 4, 1, 0, 0, 0xfd, 0xe7],
            PathAttributes {
                as_path: Some(AsPath {
                    segments: vec![
                        AsSegment {
                            kind: SegmentType::ConfedSequence,
                            asns: vec![65000],
                        },
                        AsSegment {
                            kind: SegmentType::ConfedSet,
                            asns: vec![64999],
                        },
                    ],
                }),
                ..Default::default()
            },
        ),
        (
            vec![0x40, 3, 4, 192, 0, 2, 1],
            PathAttributes {
                next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
                ..Default::default()
            },
        ),
        (
            vec![0x80, 4, 4, 0xff, 0xff, 0xff, 0xff],
            PathAttributes {
                med: Some(u32::MAX),
                ..Default::default()
            },
        ),
        (
            vec![0x40, 5, 4, 0, 0, 0, 0],
            PathAttributes {
                local_pref: Some(0),
                ..Default::default()
            },
        ),
        (
            vec![0x40, 6, 0],
            PathAttributes {
                atomic_aggregate: true,
                ..Default::default()
            },
        ),
        (
            vec![0xc0, 7, 8, 0, 1, 0x11, 0x70, 192, 0, 2, 9],
            PathAttributes {
                aggregator: Some(Aggregator {
                    asn: 70000,
                    address: Ipv4Addr::new(192, 0, 2, 9),
                }),
                ..Default::default()
            },
        ),
        (
            vec![0xc0, 8, 4, 0xff, 0xff, 0xff, 0x02],
            PathAttributes {
                communities: vec![Community::NO_ADVERTISE],
                ..Default::default()
            },
        ),
        (
            vec![0x80, 9, 4, 1, 2, 3, 4],
            PathAttributes {
                originator_id: Some(Ipv4Addr::new(1, 2, 3, 4)),
                ..Default::default()
            },
        ),
        (
            vec![0x80, 10, 4, 5, 6, 7, 8],
            PathAttributes {
                cluster_list: vec![Ipv4Addr::new(5, 6, 7, 8)],
                ..Default::default()
            },
        ),
        (
            vec![0xc0, 16, 8, 1, 2, 3, 4, 5, 6, 7, 8],
            PathAttributes {
                ext_communities: vec![ExtCommunity([1, 2, 3, 4, 5, 6, 7, 8])],
                ..Default::default()
            },
        ),
        (
            vec![0xc0, 32, 12, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3],
            PathAttributes {
                large_communities: vec![LargeCommunity {
                    global: 1,
                    local1: 2,
                    local2: 3,
                }],
                ..Default::default()
            },
        ),
    ];
    for (attr, attrs) in cases {
        let msg = Message::Update(Update {
            attributes: attrs,
            ..Default::default()
        });
        both_ways(&update(&[], &attr, &[]), &msg, &FOUR);
    }
}

/// Values over 255 octets use the Extended Length flag (RFC 4271 §4.3) both ways.
#[test]
fn extended_length_attribute() {
    let communities: Vec<Community> = (0..100).map(Community).collect();
    let mut attr = vec![0xd0, 8, 1, 144];
    for c in &communities {
        attr.extend_from_slice(&c.0.to_be_bytes());
    }
    let msg = Message::Update(Update {
        attributes: PathAttributes {
            communities,
            ..Default::default()
        },
        ..Default::default()
    });
    both_ways(&update(&[], &attr, &[]), &msg, &FOUR);
    // A short value that a peer sent with the extended form decodes the same.
    let short = update(&[], &[0x50, 1, 0, 1, 2], &[]);
    let Message::Update(u) = Message::decode(&short, &FOUR).unwrap() else {
        panic!()
    };
    assert_eq!(u.attributes.origin, Some(Origin::Incomplete));
}

#[test]
fn unknown_transitive_gets_partial_and_non_transitive_is_dropped() {
    let attrs = [0xc0, 99, 2, 1, 2, 0x80, 100, 1, 7];
    let bytes = update(&[], &attrs, &[]);
    let Message::Update(u) = Message::decode(&bytes, &FOUR).unwrap() else {
        panic!()
    };
    assert_eq!(
        u.attributes.unknown,
        vec![
            RawAttribute {
                flags: 0xc0,
                type_code: 99,
                value: vec![1, 2]
            },
            RawAttribute {
                flags: 0x80,
                type_code: 100,
                value: vec![7]
            },
        ]
    );
    let re = Message::Update(u).to_bytes(&FOUR);
    assert_eq!(&re[..], &update(&[], &[0xe0, 99, 2, 1, 2], &[])[..]);
}

/// IPv6 announcement with global and link-local next hop (RFC 2545 §3) and a withdrawal.
#[test]
fn update_ipv6_mp_reach_and_unreach() {
    let global: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let ll: Ipv6Addr = "fe80::1".parse().unwrap();
    let mut attrs = vec![0x40, 1, 1, 0, 0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9];
    attrs.extend_from_slice(&[0x80, 14, 44, 0, 2, 1, 32]);
    attrs.extend_from_slice(&global.octets());
    attrs.extend_from_slice(&ll.octets());
    attrs.extend_from_slice(&[0, 48, 0x20, 0x01, 0x0d, 0xb8, 0, 1]);
    attrs.extend_from_slice(&[0x80, 15, 10, 0, 2, 1, 48, 0x20, 0x01, 0x0d, 0xb8, 0, 2]);
    let expected = Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::from_sequence(vec![65001])),
            ..Default::default()
        },
        mp_reach: Some(MpReach {
            afi: Afi::Ipv6,
            safi: Safi::Unicast,
            next_hop: IpAddr::V6(global),
            link_local_next_hop: Some(ll),
            nlri: vec![net("2001:db8:1::/48")],
        }),
        mp_unreach: Some(MpUnreach {
            afi: Afi::Ipv6,
            safi: Safi::Unicast,
            withdrawn: vec![net("2001:db8:2::/48")],
        }),
        ..Default::default()
    };
    both_ways(&update(&[], &attrs, &[]), &Message::Update(expected), &FOUR);
}

/// Towards a 2-octet peer: AS_TRANS in AS_PATH and AGGREGATOR, real numbers in AS4_PATH and
/// AS4_AGGREGATOR (RFC 6793 §4.2.2); decoding merges them back (§4.2.3).
#[test]
fn two_octet_peer_as4_attributes() {
    #[rustfmt::skip]
    let attrs = [
        0x40, 1, 1, 0,
        0x40, 2, 6, 2, 2, 0xfd, 0xe9, 0x5b, 0xa0,        // AS_PATH SEQ 65001 AS_TRANS
        0x40, 3, 4, 10, 0, 0, 1,
        0xc0, 7, 6, 0x5b, 0xa0, 10, 0, 0, 9,             // AGGREGATOR AS_TRANS
        0xc0, 17, 10, 2, 2, 0, 0, 0xfd, 0xe9, 0, 1, 0x11, 0x70, // AS4_PATH 65001 70000
        0xc0, 18, 8, 0, 1, 0x11, 0x70, 10, 0, 0, 9,      // AS4_AGGREGATOR 70000
    ];
    let expected = Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::from_sequence(vec![65001, 70000])),
            next_hop: Some(Ipv4Addr::new(10, 0, 0, 1)),
            aggregator: Some(Aggregator {
                asn: 70000,
                address: Ipv4Addr::new(10, 0, 0, 9),
            }),
            ..Default::default()
        },
        nlri: vec!["10.9.0.0/16".parse().unwrap()],
        ..Default::default()
    };
    both_ways(
        &update(&[], &attrs, &[16, 10, 9]),
        &Message::Update(expected),
        &TWO,
    );
}

/// Only 2-octet ASNs: no AS4_PATH is sent (RFC 6793 §4.2.2 "SHOULD NOT").
#[test]
fn two_octet_peer_small_path_has_no_as4_path() {
    let attrs = [0x40, 2, 4, 2, 1, 0xfd, 0xe9];
    let msg = Message::Update(Update {
        attributes: PathAttributes {
            as_path: Some(AsPath::from_sequence(vec![65001])),
            ..Default::default()
        },
        ..Default::default()
    });
    both_ways(&update(&[], &attrs, &[]), &msg, &TWO);
}

/// An old speaker prepended itself after the AS4_PATH was attached: its AS stays in front.
#[test]
fn two_octet_peer_prepend_by_old_speaker() {
    #[rustfmt::skip]
    let attrs = [
        0x40, 2, 8, 2, 3, 0x00, 0x64, 0xfd, 0xe9, 0x5b, 0xa0, // 100 65001 AS_TRANS
        0xc0, 17, 10, 2, 2, 0, 0, 0xfd, 0xe9, 0, 1, 0x11, 0x70,
    ];
    let Message::Update(u) = Message::decode(&update(&[], &attrs, &[]), &TWO).unwrap() else {
        panic!()
    };
    assert_eq!(
        u.attributes.as_path,
        Some(AsPath::from_sequence(vec![100, 65001, 70000]))
    );
}

/// A 4-octet peer must not send AS4_PATH; if it does, it is discarded (RFC 6793 §4.1).
#[test]
fn as4_path_from_four_octet_peer_is_discarded() {
    let attrs = [
        0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9, 0xc0, 17, 6, 2, 1, 0, 0, 0, 1,
    ];
    let Message::Update(u) = Message::decode(&update(&[], &attrs, &[]), &FOUR).unwrap() else {
        panic!()
    };
    assert_eq!(
        u.attributes.as_path,
        Some(AsPath::from_sequence(vec![65001]))
    );
    assert!(u.attributes.unknown.is_empty());
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// What BIRD 2.0.12 actually sent on an eBGP session (captured in a network namespace):
/// OPEN, KEEPALIVE, two UPDATEs and the IPv4 End-of-RIB. Each decodes to what BIRD meant and
/// re-encodes to the very same bytes.
#[test]
fn real_bird_session_capture() {
    let open = hex(concat!(
        "ffffffffffffffffffffffffffffffff00350104fde9005a0a00000118021601040001000102004002",
        "007841040000fde946004700"
    ));
    let keepalive = hex("ffffffffffffffffffffffffffffffff001304");
    let upd1 = hex(concat!(
        "ffffffffffffffffffffffffffffffff002e02000000144001010040020602010000fde94003047f00",
        "0001100a01"
    ));
    let upd2 = hex(concat!(
        "ffffffffffffffffffffffffffffffff0045020000002a4001010040020602010000fde94003047f00",
        "0001c00804fde90064c0200c0000fde90000000100000002180a0203"
    ));
    let eor = hex("ffffffffffffffffffffffffffffffff00170200000000");

    let bird_open = Open {
        version: 4,
        my_as: 65001,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(10, 0, 0, 1),
        capabilities: vec![
            Capability::MultiProtocol {
                afi: Afi::Ipv4,
                safi: Safi::Unicast,
            },
            Capability::RouteRefresh,
            Capability::GracefulRestart {
                restarting: false,
                notification: false,
                restart_time: 120,
                families: vec![],
            },
            Capability::FourOctetAs(65001),
            Capability::EnhancedRouteRefresh,
            // Long-Lived Graceful Restart (code 71), no families: kept verbatim.
            Capability::Unknown {
                code: 71,
                value: vec![],
            },
        ],
    };
    let base = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence(vec![65001])),
        next_hop: Some(Ipv4Addr::new(127, 0, 0, 1)),
        ..Default::default()
    };
    let first = Update {
        attributes: base.clone(),
        nlri: vec!["10.1.0.0/16".parse().unwrap()],
        ..Default::default()
    };
    let second = Update {
        attributes: PathAttributes {
            communities: vec![Community::new(65001, 100)],
            large_communities: vec![LargeCommunity {
                global: 65001,
                local1: 1,
                local2: 2,
            }],
            ..base
        },
        nlri: vec!["10.2.3.0/24".parse().unwrap()],
        ..Default::default()
    };
    both_ways(&open, &Message::Open(bird_open), &FOUR);
    both_ways(&keepalive, &Message::Keepalive, &FOUR);
    both_ways(&upd1, &Message::Update(first), &FOUR);
    both_ways(&upd2, &Message::Update(second), &FOUR);
    both_ways(
        &eor,
        &Message::Update(Update::end_of_rib(Family::Ipv4Unicast)),
        &FOUR,
    );

    // The same bytes as one TCP stream, cut by frame_len.
    let stream = [open, keepalive, upd1, upd2, eor].concat();
    let mut rest = &stream[..];
    let mut kinds = Vec::new();
    while let Some(len) = frame_len(rest).unwrap() {
        kinds.push(Message::decode(&rest[..len], &FOUR).unwrap().message_type());
        rest = &rest[len..];
    }
    assert!(rest.is_empty());
    assert_eq!(
        kinds,
        [
            MessageType::Open,
            MessageType::Keepalive,
            MessageType::Update,
            MessageType::Update,
            MessageType::Update
        ]
    );
}

/// What GoBGP 3 (AS 4200000001) sent on a session with IPv4 and IPv6 unicast (captured in a
/// network namespace): OPEN with AS_TRANS, hostname and Extended Next Hop capabilities, and an
/// IPv6 route whose next hop is the IPv4-mapped session address.
#[test]
fn real_gobgp_session_capture() {
    let open = hex(concat!(
        "ffffffffffffffffffffffffffffffff004101045ba0005a0a0000032402220200490402766d0001",
        "04000100010104000200014104fa56ea010506000100010002"
    ));
    let upd4 = hex(concat!(
        "ffffffffffffffffffffffffffffffff002e0200000014400101024002060201fa56ea014003047f",
        "000001100a05"
    ));
    let upd6 = hex(concat!(
        "ffffffffffffffffffffffffffffffff0043020000002c400101024002060201fa56ea01800e1c00",
        "02011000000000000000000000ffff7f000001003020010db80005"
    ));
    let gobgp_open = Open {
        version: 4,
        my_as: AS_TRANS,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(10, 0, 0, 3),
        capabilities: vec![
            Capability::RouteRefresh,
            Capability::Fqdn {
                hostname: "vm".into(),
                domain: String::new(),
            },
            Capability::MultiProtocol {
                afi: Afi::Ipv4,
                safi: Safi::Unicast,
            },
            Capability::MultiProtocol {
                afi: Afi::Ipv6,
                safi: Safi::Unicast,
            },
            Capability::FourOctetAs(4_200_000_001),
            // Extended Next Hop Encoding (RFC 8950, code 5): IPv4 unicast over IPv6.
            Capability::Unknown {
                code: 5,
                value: vec![0, 1, 0, 1, 0, 2],
            },
        ],
    };
    assert_eq!(gobgp_open.asn(), 4_200_000_001);
    let attrs = PathAttributes {
        origin: Some(Origin::Incomplete),
        as_path: Some(AsPath::from_sequence(vec![4_200_000_001])),
        ..Default::default()
    };
    let v4 = Update {
        attributes: PathAttributes {
            next_hop: Some(Ipv4Addr::new(127, 0, 0, 1)),
            ..attrs.clone()
        },
        nlri: vec!["10.5.0.0/16".parse().unwrap()],
        ..Default::default()
    };
    let v6 = Update {
        attributes: attrs,
        mp_reach: Some(MpReach {
            afi: Afi::Ipv6,
            safi: Safi::Unicast,
            next_hop: "::ffff:127.0.0.1".parse().unwrap(),
            link_local_next_hop: None,
            nlri: vec![net("2001:db8:5::/48")],
        }),
        ..Default::default()
    };
    both_ways(&open, &Message::Open(gobgp_open), &FOUR);
    both_ways(&upd4, &Message::Update(v4), &FOUR);
    both_ways(&upd6, &Message::Update(v6), &FOUR);
}

/// A segment holds at most 255 ASNs (1-octet count, RFC 4271 §4.3): longer ones are split.
#[test]
fn long_as_path_segment_is_split() {
    let asns: Vec<u32> = (1..=300).collect();
    let msg = Message::Update(Update {
        attributes: PathAttributes {
            as_path: Some(AsPath::from_sequence(asns.clone())),
            ..Default::default()
        },
        ..Default::default()
    });
    let bytes = msg.to_bytes(&FOUR);
    // Extended length: 2 + 255*4 + 2 + 45*4 = 1204 octets.
    assert_eq!(&bytes[23..27], &[0x50, 2, 0x04, 0xb4]);
    assert_eq!(&bytes[27..29], &[2, 255]);
    let Message::Update(u) = Message::decode(&bytes, &FOUR).unwrap() else {
        panic!()
    };
    let segs = u.attributes.as_path.unwrap().segments;
    assert_eq!(segs.len(), 2);
    assert_eq!(segs[0].asns, asns[..255]);
    assert_eq!(segs[1].asns, asns[255..]);
}

/// Encoding keeps every length field in range whatever the caller built.
#[test]
fn oversized_fields_are_capped_on_encode() {
    let open = Message::Open(Open::new(
        65001,
        90,
        Ipv4Addr::new(10, 0, 0, 1),
        vec![Capability::Unknown {
            code: 200,
            value: vec![7; 300],
        }],
    ));
    let Message::Open(back) = Message::decode(&open.to_bytes(&FOUR), &FOUR).unwrap() else {
        panic!()
    };
    assert_eq!(
        back.capabilities[0],
        Capability::Unknown {
            code: 200,
            value: vec![7; 255]
        }
    );
    let n = Message::Notification(Notification {
        code: 7,
        subcode: 1,
        data: vec![0; 5000],
    });
    let bytes = n.to_bytes(&FOUR);
    assert_eq!(bytes.len(), MAX_MESSAGE_LEN);
    assert!(Message::decode(&bytes, &FOUR).is_ok());
}

/// With ADD-PATH negotiated (RFC 7911 §3) every prefix carries a 4-octet path identifier:
/// the decoder reads them beside the prefixes, and the encoder writes them back.
#[test]
fn add_path_identifiers_are_read_and_written() {
    let ctx = DecodeContext {
        four_octet_as: true,
        add_path_ipv4: true,
        add_path_ipv6: true,
        add_path_send_ipv4: true,
        add_path_send_ipv6: true,
        extended_messages: false,
    };
    let mut attrs = vec![0x40, 1, 1, 0, 0x40, 2, 0, 0x40, 3, 4, 10, 0, 0, 1];
    attrs.extend_from_slice(&[
        0x80, 15, 14, 0, 2, 1, 0, 0, 0, 9, 48, 0x20, 0x01, 0x0d, 0xb8, 0, 2,
    ]);
    let bytes = update(
        &[0, 0, 0, 1, 8, 10],
        &attrs,
        &[0, 0, 0, 2, 24, 10, 1, 2, 0, 0, 0, 3, 24, 10, 1, 2],
    );
    let Message::Update(u) = Message::decode(&bytes, &ctx).unwrap() else {
        panic!()
    };
    assert_eq!(u.withdrawn, vec!["10.0.0.0/8".parse().unwrap()]);
    assert_eq!(
        u.nlri,
        vec![
            "10.1.2.0/24".parse().unwrap(),
            "10.1.2.0/24".parse().unwrap()
        ]
    );
    assert_eq!(
        u.mp_unreach.as_ref().unwrap().withdrawn,
        vec![net("2001:db8:2::/48")]
    );
    assert_eq!(u.path_ids.withdrawn, vec![1]);
    assert_eq!(u.path_ids.nlri, vec![2, 3]);
    assert_eq!(u.path_ids.mp_unreach, vec![9]);
    assert!(!u.treat_as_withdraw);
    // Encoding with ADD-PATH send gives the same bytes back.
    assert_eq!(Message::Update(u.clone()).to_bytes(&ctx), bytes);
    // Without ADD-PATH the same bytes are not valid prefixes.
    assert_eq!(
        Message::decode(&bytes, &FOUR)
            .unwrap_err()
            .notification
            .subcode,
        10
    );
}

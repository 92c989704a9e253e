//! Malformed input: each class asserts the exact NOTIFICATION (code, subcode, data) of
//! RFC 4271 §6, or the RFC 7606 recovery (treat-as-withdraw, attribute discard).
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;

use bgp::packet::*;

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

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(kind);
    m.extend_from_slice(body);
    m
}

fn update(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    body.extend_from_slice(withdrawn);
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(nlri);
    message(2, &body)
}

/// The NOTIFICATION a message earns, from frame_len or decode.
fn notification(bytes: &[u8], ctx: &DecodeContext) -> (u8, u8, Vec<u8>) {
    let err = match frame_len(bytes) {
        Err(e) => e,
        Ok(_) => Message::decode(bytes, ctx).unwrap_err(),
    };
    let n = err.notification;
    (n.code, n.subcode, n.data)
}

fn decoded_update(bytes: &[u8], ctx: &DecodeContext) -> Update {
    match Message::decode(bytes, ctx).unwrap() {
        Message::Update(u) => u,
        m => panic!("not an UPDATE: {m:?}"),
    }
}

/// ORIGIN IGP, AS_PATH [65001] (4-octet), NEXT_HOP 10.0.0.1.
fn mandatory() -> Vec<u8> {
    vec![
        0x40, 1, 1, 0, 0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9, 0x40, 3, 4, 10, 0, 0, 1,
    ]
}

const NLRI: [u8; 4] = [24, 10, 1, 2];

fn with(extra: &[u8]) -> Vec<u8> {
    let mut a = mandatory();
    a.extend_from_slice(extra);
    a
}

// ---- Message header (RFC 4271 §6.1) ----

#[test]
fn frame_len_waits_for_the_header() {
    let ka = message(4, &[]);
    for n in 0..19 {
        assert_eq!(frame_len(&ka[..n]).unwrap(), None);
    }
    assert_eq!(frame_len(&ka).unwrap(), Some(19));
    // Only the header is needed to know the length.
    let upd = update(&[], &mandatory(), &NLRI);
    assert_eq!(frame_len(&upd[..19]).unwrap(), Some(upd.len()));
}

#[test]
fn bad_marker() {
    let mut m = message(4, &[]);
    m[3] = 0xfe;
    assert_eq!(notification(&m, &FOUR), (1, 1, vec![]));
}

#[test]
fn bad_message_length() {
    let mut m = message(4, &[]);
    m[16..18].copy_from_slice(&18u16.to_be_bytes());
    assert_eq!(notification(&m, &FOUR), (1, 2, vec![0, 18]));
    m[16..18].copy_from_slice(&4097u16.to_be_bytes());
    assert_eq!(notification(&m, &FOUR), (1, 2, vec![0x10, 0x01]));
    // KEEPALIVE longer than 19.
    assert_eq!(notification(&message(4, &[0]), &FOUR), (1, 2, vec![0, 20]));
    // OPEN below 29, UPDATE below 23, NOTIFICATION below 21, ROUTE-REFRESH below 23.
    assert_eq!(
        notification(&message(1, &[4; 9]), &FOUR),
        (1, 2, vec![0, 28])
    );
    assert_eq!(
        notification(&message(2, &[0; 3]), &FOUR),
        (1, 2, vec![0, 22])
    );
    assert_eq!(notification(&message(3, &[6]), &FOUR), (1, 2, vec![0, 20]));
    assert_eq!(
        notification(&message(5, &[0, 1, 0]), &FOUR),
        (1, 2, vec![0, 22])
    );
    // A plain ROUTE-REFRESH longer than 23.
    assert_eq!(
        notification(&message(5, &[0, 1, 0, 1, 0]), &FOUR),
        (1, 2, vec![0, 24])
    );
}

#[test]
fn extended_messages_lift_the_4096_limit_except_for_open_and_keepalive() {
    // RFC 8654: a 5000-octet UPDATE is a header error unless both sides advertised the
    // capability; an OPEN stays at most 4096 even then.
    let communities: Vec<u8> = (0..1200u32)
        .flat_map(|i| (65001 << 16 | i).to_be_bytes())
        .collect();
    let mut attr = vec![0xd0, 8];
    attr.extend_from_slice(&(communities.len() as u16).to_be_bytes());
    attr.extend_from_slice(&communities);
    let big = update(&[], &with(&attr), &NLRI);
    assert!(big.len() > 4096);
    let len = (big.len() as u16).to_be_bytes().to_vec();
    let extended = DecodeContext {
        extended_messages: true,
        ..FOUR
    };
    assert_eq!(
        Message::decode(&big, &FOUR).unwrap_err().notification.data,
        len
    );
    assert_eq!(
        frame_len_within(&big, MAX_EXTENDED_MESSAGE_LEN),
        Ok(Some(big.len()))
    );
    let u = decoded_update(&big, &extended);
    assert_eq!(u.attributes.communities.len(), 1200);
    let open = message(1, &vec![0; 4200]);
    let err = Message::decode(&open, &extended).unwrap_err().notification;
    assert_eq!((err.code, err.subcode), (1, 2));
    // Our UPDATEs use the room: the same route packs into one message only when extended.
    let attrs = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::default()),
        communities: (0..1200u32).map(Community).collect(),
        ..PathAttributes::default()
    };
    let prefixes = ["10.1.2.0/24".parse().unwrap()];
    let nh = NextHop {
        address: Ipv4Addr::new(10, 0, 0, 1).into(),
        link_local: None,
    };
    let mut out = Vec::new();
    assert!(encode_updates(&attrs, Family::Ipv4Unicast, nh, &prefixes, &FOUR, &mut out).is_err());
    encode_updates(
        &attrs,
        Family::Ipv4Unicast,
        nh,
        &prefixes,
        &extended,
        &mut out,
    )
    .unwrap();
    assert_eq!(out.len(), 1);
    assert!(out[0].len() > 4096);
}

#[test]
fn enhanced_route_refresh_bad_length_returns_whole_message() {
    // RFC 7313 §5: ROUTE-REFRESH Message Error / Invalid Message Length, data = message.
    let m = message(5, &[0, 1, 2, 1, 9]);
    assert_eq!(notification(&m, &FOUR), (7, 1, m.clone()));
}

#[test]
fn bad_message_type() {
    assert_eq!(notification(&message(6, &[]), &FOUR), (1, 3, vec![6]));
    assert_eq!(notification(&message(0, &[]), &FOUR), (1, 3, vec![0]));
}

#[test]
fn decode_rejects_a_wrongly_framed_buffer() {
    let mut m = message(4, &[]);
    m.push(0);
    assert_eq!(notification(&m, &FOUR).1, 2);
}

// ---- OPEN (RFC 4271 §6.2) ----

fn open_body(version: u8, hold: u16, id: [u8; 4], params: &[u8]) -> Vec<u8> {
    let mut b = vec![version, 0xfd, 0xe9];
    b.extend_from_slice(&hold.to_be_bytes());
    b.extend_from_slice(&id);
    b.push(params.len() as u8);
    b.extend_from_slice(params);
    b
}

#[test]
fn unsupported_version() {
    let m = message(1, &open_body(3, 90, [1, 1, 1, 1], &[]));
    assert_eq!(notification(&m, &FOUR), (2, 1, vec![0, 4]));
}

#[test]
fn unacceptable_hold_time() {
    for hold in [1, 2] {
        let m = message(1, &open_body(4, hold, [1, 1, 1, 1], &[]));
        assert_eq!(notification(&m, &FOUR), (2, 6, vec![]));
    }
    for hold in [0, 3, 65535] {
        let m = message(1, &open_body(4, hold, [1, 1, 1, 1], &[]));
        assert!(Message::decode(&m, &FOUR).is_ok());
    }
}

#[test]
fn bad_bgp_identifier() {
    let m = message(1, &open_body(4, 90, [0, 0, 0, 0], &[]));
    assert_eq!(notification(&m, &FOUR), (2, 3, vec![]));
    // RFC 6286: any non-zero value is fine, even one that is not a unicast address.
    let m = message(1, &open_body(4, 90, [255, 255, 255, 255], &[]));
    assert!(Message::decode(&m, &FOUR).is_ok());
}

#[test]
fn unsupported_optional_parameter() {
    // Parameter type 1 (the deprecated Authentication parameter).
    let m = message(1, &open_body(4, 90, [1, 1, 1, 1], &[1, 2, 0, 0]));
    assert_eq!(notification(&m, &FOUR), (2, 4, vec![]));
}

#[test]
fn malformed_capabilities() {
    // Multiprotocol with 3 octets.
    let m = message(1, &open_body(4, 90, [1, 1, 1, 1], &[2, 5, 1, 3, 0, 1, 0]));
    assert_eq!(notification(&m, &FOUR), (2, 0, vec![]));
    // Capability length overruns the parameter.
    let m = message(1, &open_body(4, 90, [1, 1, 1, 1], &[2, 2, 65, 4]));
    assert_eq!(notification(&m, &FOUR), (2, 0, vec![]));
    // Optional parameters shorter than their stated length: OPEN Message Error, as BIRD and
    // FRR answer.
    let mut body = open_body(4, 90, [1, 1, 1, 1], &[2, 2, 2, 0]);
    body[9] = 5;
    let m = message(1, &body);
    assert_eq!(notification(&m, &FOUR), (2, 0, vec![]));
    // Octets after the stated parameters: the message is too long for its content.
    let mut body = open_body(4, 90, [1, 1, 1, 1], &[2, 2, 2, 0]);
    body[9] = 3;
    let m = message(1, &body);
    assert_eq!(notification(&m, &FOUR), (1, 2, vec![0, 33]));
}

// ---- UPDATE: session reset (RFC 4271 §6.3, RFC 7606 §3, §5.3) ----

#[test]
fn withdrawn_length_overrun_is_malformed_attribute_list() {
    let mut m = update(&[], &[], &[]);
    m[19..21].copy_from_slice(&10u16.to_be_bytes());
    assert_eq!(notification(&m, &FOUR), (3, 1, vec![]));
}

#[test]
fn attribute_length_overrun_is_malformed_attribute_list() {
    let mut m = update(&[], &mandatory(), &[]);
    m[21..23].copy_from_slice(&100u16.to_be_bytes());
    assert_eq!(notification(&m, &FOUR), (3, 1, vec![]));
}

#[test]
fn invalid_nlri_prefix_length() {
    let m = update(&[], &mandatory(), &[33, 10, 0, 0, 0, 0]);
    assert_eq!(notification(&m, &FOUR), (3, 10, vec![]));
    // Truncated prefix.
    let m = update(&[], &mandatory(), &[24, 10, 0]);
    assert_eq!(notification(&m, &FOUR), (3, 10, vec![]));
    // In the withdrawn routes.
    let m = update(&[40, 1, 2, 3, 4, 5], &[], &[]);
    assert_eq!(notification(&m, &FOUR), (3, 10, vec![]));
}

#[test]
fn unrecognized_well_known_attribute() {
    let attr = [0x40, 99, 2, 1, 2];
    let m = update(&[], &with(&attr), &NLRI);
    assert_eq!(notification(&m, &FOUR), (3, 2, attr.to_vec()));
}

#[test]
fn duplicate_mp_reach_resets() {
    let mp = [
        0x80, 14, 21, 0, 2, 1, 16, 0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0,
    ];
    let mut attrs = with(&mp);
    attrs.extend_from_slice(&mp);
    let m = update(&[], &attrs, &[]);
    assert_eq!(notification(&m, &FOUR), (3, 1, vec![]));
    let unreach = [0x80, 15, 3, 0, 2, 1];
    let m = update(&[], &[unreach, unreach].concat(), &[]);
    assert_eq!(notification(&m, &FOUR), (3, 1, vec![]));
}

#[test]
fn malformed_mp_reach_resets_with_optional_attribute_error() {
    // IPv6 next-hop length 8.
    let attr = [0x80, 14, 13, 0, 2, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0];
    let m = update(&[], &with(&attr), &[]);
    assert_eq!(notification(&m, &FOUR), (3, 9, attr.to_vec()));
    // Bad prefix inside MP_UNREACH_NLRI.
    let attr = [0x80, 15, 5, 0, 2, 1, 129, 0];
    let m = update(&[], &attr, &[]);
    assert_eq!(notification(&m, &FOUR), (3, 9, attr.to_vec()));
    // Truncated before the next hop.
    let attr = [0x80, 14, 2, 0, 2];
    let m = update(&[], &attr, &[]);
    assert_eq!(notification(&m, &FOUR), (3, 9, attr.to_vec()));
}

#[test]
fn mp_reach_with_wrong_flags_is_flags_error() {
    let attr = [0xc0, 15, 3, 0, 2, 1];
    let m = update(&[], &attr, &[]);
    assert_eq!(notification(&m, &FOUR), (3, 4, attr.to_vec()));
}

#[test]
fn mp_reach_for_other_families_is_ignored() {
    // AFI 25 (L2VPN), SAFI 70 (EVPN): not ours, not an error.
    let attr = [0x80, 14, 11, 0, 25, 70, 4, 1, 2, 3, 4, 0, 1, 2];
    let u = decoded_update(&update(&[], &with(&attr), &[]), &FOUR);
    assert_eq!(u.mp_reach, None);
    assert!(!u.treat_as_withdraw);
}

// ---- UPDATE: treat-as-withdraw (RFC 7606 §2, §7) ----

fn assert_withdraw(attrs: &[u8], ctx: &DecodeContext) -> Update {
    let u = decoded_update(&update(&[], attrs, &NLRI), ctx);
    assert!(u.treat_as_withdraw, "expected treat-as-withdraw: {u:?}");
    // The NLRI is kept so that the RIB can withdraw it.
    assert_eq!(u.nlri, vec!["10.1.2.0/24".parse().unwrap()]);
    u
}

#[test]
fn well_formed_update_is_not_withdrawn() {
    let u = decoded_update(&update(&[], &mandatory(), &NLRI), &FOUR);
    assert!(!u.treat_as_withdraw);
}

#[test]
fn malformed_as_path_is_treat_as_withdraw() {
    // Unknown segment type 7.
    let attrs = [
        0x40, 1, 1, 0, 0x40, 2, 6, 7, 1, 0, 0, 0xfd, 0xe9, 0x40, 3, 4, 10, 0, 0, 1,
    ];
    assert_withdraw(&attrs, &FOUR);
    // Segment count overruns the attribute.
    let attrs = [
        0x40, 1, 1, 0, 0x40, 2, 6, 2, 2, 0, 0, 0xfd, 0xe9, 0x40, 3, 4, 10, 0, 0, 1,
    ];
    assert_withdraw(&attrs, &FOUR);
    // Zero-length segment (RFC 7606 §7.2).
    let attrs = [0x40, 1, 1, 0, 0x40, 2, 2, 2, 0, 0x40, 3, 4, 10, 0, 0, 1];
    assert_withdraw(&attrs, &FOUR);
    // Odd length for a 2-octet peer.
    let attrs = [0x40, 1, 1, 0, 0x40, 2, 3, 2, 1, 0, 0x40, 3, 4, 10, 0, 0, 1];
    assert_withdraw(&attrs, &TWO);
}

#[test]
fn attribute_length_errors_are_treat_as_withdraw() {
    // ORIGIN with 2 octets, MED with 3, LOCAL_PREF with 5, NEXT_HOP with 5,
    // COMMUNITIES with 5 and 0, ORIGINATOR_ID with 3, CLUSTER_LIST with 6,
    // EXTENDED_COMMUNITIES with 4, LARGE_COMMUNITY with 8.
    let mut mp = mandatory();
    mp[2] = 2;
    mp.insert(3, 0);
    assert_withdraw(&mp, &FOUR);
    for bad in [
        &[0x80, 4, 3, 0, 0, 1][..],
        &[0x40, 5, 5, 0, 0, 0, 0, 1],
        &[0xc0, 8, 5, 0, 0, 0, 0, 1],
        &[0xc0, 8, 0],
        &[0x80, 9, 3, 1, 2, 3],
        &[0x80, 10, 6, 1, 2, 3, 4, 5, 6],
        &[0xc0, 16, 4, 1, 2, 3, 4],
        &[0xc0, 32, 8, 0, 0, 0, 1, 0, 0, 0, 2],
    ] {
        assert_withdraw(&with(bad), &FOUR);
    }
    let attrs = [
        0x40, 1, 1, 0, 0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9, 0x40, 3, 5, 10, 0, 0, 1, 1,
    ];
    assert_withdraw(&attrs, &FOUR);
}

#[test]
fn invalid_origin_value_is_treat_as_withdraw() {
    let mut attrs = mandatory();
    attrs[3] = 3;
    let u = assert_withdraw(&attrs, &FOUR);
    assert_eq!(u.attributes.origin, None);
}

#[test]
fn wrong_flags_on_well_known_attribute_is_treat_as_withdraw() {
    let mut attrs = mandatory();
    attrs[0] = 0xc0; // ORIGIN marked optional
    assert_withdraw(&attrs, &FOUR);
}

#[test]
fn attribute_overrunning_the_field_is_treat_as_withdraw() {
    // RFC 7606 §4: the last attribute claims more than what is left.
    assert_withdraw(&with(&[0x80, 4, 9, 0, 0]), &FOUR);
    // Fewer than 3 octets left for an attribute header.
    assert_withdraw(&with(&[0x80, 4]), &FOUR);
    // Extended length flag with only 3 octets left.
    assert_withdraw(&with(&[0x90, 4, 0]), &FOUR);
}

#[test]
fn missing_well_known_attributes_are_treat_as_withdraw() {
    let origin = [0x40, 1, 1, 0];
    let as_path = [0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9];
    let next_hop = [0x40, 3, 4, 10, 0, 0, 1];
    assert_withdraw(&[&as_path[..], &next_hop].concat(), &FOUR);
    assert_withdraw(&[&origin[..], &next_hop].concat(), &FOUR);
    assert_withdraw(&[&origin[..], &as_path].concat(), &FOUR);
    assert_withdraw(&[], &FOUR);
    // IPv6 announcement needs ORIGIN and AS_PATH but no NEXT_HOP (RFC 4760 §3).
    let mut mp = vec![0x80, 14, 26, 0, 2, 1, 16];
    mp.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    mp.extend_from_slice(&[0, 32, 0x20, 0x01, 0x0d, 0xb8]);
    let u = decoded_update(
        &update(&[], &[&origin[..], &as_path, &mp].concat(), &[]),
        &FOUR,
    );
    assert!(!u.treat_as_withdraw);
    let u = decoded_update(&update(&[], &[&origin[..], &mp].concat(), &[]), &FOUR);
    assert!(u.treat_as_withdraw);
    assert_eq!(u.announced().count(), 1);
    // A withdrawal-only UPDATE needs no attributes at all.
    let u = decoded_update(&update(&[8, 10], &[], &[]), &FOUR);
    assert!(!u.treat_as_withdraw);
    assert_eq!(u.withdrawn, vec!["10.0.0.0/8".parse().unwrap()]);
}

#[test]
fn invalid_next_hop_is_treat_as_withdraw() {
    for nh in [
        [0, 0, 0, 0],
        [224, 0, 0, 1],
        [239, 1, 2, 3],
        [255, 255, 255, 255],
    ] {
        let mut attrs = mandatory();
        attrs[16..20].copy_from_slice(&nh);
        let u = assert_withdraw(&attrs, &FOUR);
        assert_eq!(u.attributes.next_hop, Some(Ipv4Addr::from(nh)));
    }
}

// ---- UPDATE: attribute discard (RFC 7606 §7.6, §7.7; RFC 6793 §6) ----

fn assert_discarded(extra: &[u8], ctx: &DecodeContext) -> Update {
    let u = decoded_update(&update(&[], &with(extra), &NLRI), ctx);
    assert!(!u.treat_as_withdraw, "discard, not withdraw: {u:?}");
    u
}

#[test]
fn malformed_atomic_aggregate_and_aggregator_are_discarded() {
    let u = assert_discarded(&[0x40, 6, 1, 0], &FOUR);
    assert!(!u.attributes.atomic_aggregate);
    let u = assert_discarded(&[0xc0, 7, 6, 0xfd, 0xe9, 10, 0, 0, 1], &FOUR);
    assert_eq!(u.attributes.aggregator, None);
    // A 2-octet peer's AGGREGATOR is 6 octets; 8 is wrong there.
    let attrs = [
        0x40, 1, 1, 0, 0x40, 2, 4, 2, 1, 0xfd, 0xe9, 0x40, 3, 4, 10, 0, 0, 1, 0xc0, 7, 8, 0, 0,
        0xfd, 0xe9, 10, 0, 0, 1,
    ];
    let u = decoded_update(&update(&[], &attrs, &NLRI), &TWO);
    assert!(!u.treat_as_withdraw);
    assert_eq!(u.attributes.aggregator, None);
    // Wrong flags on AGGREGATOR: discard too.
    let u = assert_discarded(&[0x40, 7, 8, 0, 0, 0xfd, 0xe9, 10, 0, 0, 1], &FOUR);
    assert_eq!(u.attributes.aggregator, None);
}

#[test]
fn malformed_as4_path_is_discarded() {
    let path2 = [
        0x40, 1, 1, 0, 0x40, 2, 4, 2, 1, 0x5b, 0xa0, 0x40, 3, 4, 10, 0, 0, 1,
    ];
    // AS4_PATH with a confederation segment (RFC 6793 §6).
    let as4 = [0xc0, 17, 6, 3, 1, 0, 1, 0x11, 0x70];
    let u = decoded_update(&update(&[], &[&path2[..], &as4].concat(), &NLRI), &TWO);
    assert!(!u.treat_as_withdraw);
    assert_eq!(
        u.attributes.as_path,
        Some(AsPath::from_sequence(vec![23456]))
    );
    // AS4_AGGREGATOR of the wrong length.
    let u = decoded_update(
        &update(
            &[],
            &[&path2[..], &[0xc0, 18, 4, 0, 1, 0x11, 0x70]].concat(),
            &NLRI,
        ),
        &TWO,
    );
    assert!(!u.treat_as_withdraw);
}

#[test]
fn duplicate_attribute_keeps_the_first() {
    let u = decoded_update(&update(&[], &with(&[0x40, 1, 1, 2]), &NLRI), &FOUR);
    assert_eq!(u.attributes.origin, Some(Origin::Igp));
    assert!(!u.treat_as_withdraw);
}

#[test]
fn notification_describe_names_the_error() {
    let m = update(&[], &mandatory(), &[33, 10, 0, 0, 0, 0]);
    let err = Message::decode(&m, &FOUR).unwrap_err();
    assert_eq!(
        err.notification.describe(),
        "UPDATE Message Error: Invalid Network Field"
    );
}

#[test]
fn malformed_next_hop_without_ipv4_nlri_is_discarded() {
    // RFC 4760 §3: an UPDATE announcing only through MP_REACH_NLRI ignores NEXT_HOP.
    let mut attrs = vec![
        0x40, 1, 1, 0, 0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9, 0x40, 3, 5, 10, 0, 0, 1, 1,
    ];
    attrs.extend_from_slice(&[0x80, 14, 26, 0, 2, 1, 16]);
    attrs.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    attrs.extend_from_slice(&[0, 32, 0x20, 0x01, 0x0d, 0xb8]);
    let u = decoded_update(&update(&[], &attrs, &[]), &FOUR);
    assert!(!u.treat_as_withdraw);
    assert_eq!(u.attributes.next_hop, None);
    assert_eq!(u.announced().count(), 1);
}

//! Codec micro-benchmark: packs 1M IPv4 /24s (and 250k IPv6 /48s) sharing one attribute set
//! into 4096-octet UPDATEs, then frames and decodes them back, printing prefixes per second.
//!
//! Run with `cargo run --release -p bgp --example codec-bench [prefixes]`.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use bgp::packet::*;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let ctx = DecodeContext {
        four_octet_as: true,
        ..Default::default()
    };
    let attrs = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence(vec![65001, 65002, 4_200_000_000])),
        med: Some(10),
        communities: vec![Community::new(65001, 100), Community::NO_EXPORT],
        large_communities: vec![LargeCommunity {
            global: 65001,
            local1: 1,
            local2: 2,
        }],
        ..Default::default()
    };

    // 10.0.0.0/24, 10.0.1.0/24, ... wrapping through 10.0.0.0/8 and beyond.
    let v4: Vec<IpNet> = (0..n)
        .map(|i| {
            let addr = Ipv4Addr::from((10u32 << 24).wrapping_add(i << 8));
            IpNet::V4(Ipv4Net::new(addr, 24).unwrap())
        })
        .collect();
    let next_hop = NextHop::from(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    run("IPv4 /24", &attrs, Family::Ipv4Unicast, next_hop, &v4, &ctx);

    let v6: Vec<IpNet> = (0..n / 4)
        .map(|i| {
            let addr = Ipv6Addr::from((0x2001_0db8u128 << 96) | (u128::from(i) << 80));
            IpNet::V6(Ipv6Net::new(addr, 48).unwrap())
        })
        .collect();
    let next_hop = NextHop {
        address: "2001:db8::1".parse().unwrap(),
        link_local: Some("fe80::1".parse().unwrap()),
    };
    run("IPv6 /48", &attrs, Family::Ipv6Unicast, next_hop, &v6, &ctx);
}

fn run(
    label: &str,
    attrs: &PathAttributes,
    family: Family,
    next_hop: NextHop,
    prefixes: &[IpNet],
    ctx: &DecodeContext,
) {
    let t = Instant::now();
    let mut msgs = Vec::new();
    encode_updates(attrs, family, next_hop, prefixes, ctx, &mut msgs).unwrap();
    let enc = t.elapsed();
    let bytes: usize = msgs.iter().map(|m| m.len()).sum();

    // Decode as a receiver does: one contiguous stream cut by frame_len.
    let stream: Vec<u8> = msgs.iter().flat_map(|m| m.iter().copied()).collect();
    let t = Instant::now();
    let mut rest = &stream[..];
    let mut decoded = 0usize;
    while let Some(len) = frame_len(rest).unwrap() {
        match Message::decode(&rest[..len], ctx).unwrap() {
            Message::Update(u) => decoded += u.announced().count(),
            m => panic!("unexpected {m:?}"),
        }
        rest = &rest[len..];
    }
    let dec = t.elapsed();
    assert_eq!(decoded, prefixes.len());

    let t = Instant::now();
    let mut wd = Vec::new();
    encode_withdrawals(family, prefixes, ctx, &mut wd);
    let wdt = t.elapsed();

    let rate = |d: std::time::Duration| prefixes.len() as f64 / d.as_secs_f64() / 1e6;
    println!(
        "{label}: {} prefixes in {} UPDATEs ({:.1} MB): encode {:.1} ms ({:.1} M prefixes/s), \
         decode {:.1} ms ({:.1} M prefixes/s), withdraw-encode {:.1} ms ({:.1} M prefixes/s)",
        prefixes.len(),
        msgs.len(),
        bytes as f64 / 1e6,
        enc.as_secs_f64() * 1e3,
        rate(enc),
        dec.as_secs_f64() * 1e3,
        rate(dec),
        wdt.as_secs_f64() * 1e3,
        rate(wdt),
    );
}

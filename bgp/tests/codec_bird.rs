//! The codec's output judged by a real implementation: UPDATEs packed by `encode_updates` /
//! `encode_withdrawals` are streamed into BIRD 2 inside a lab namespace, which must accept
//! every prefix with the attributes we meant — for a 4-octet-AS session and for a 2-octet one
//! (AS_TRANS + AS4_PATH / AS4_AGGREGATOR, RFC 6793 §4.2.2).
//!
//! The sending side is just bytes over TCP (`bash`'s `/dev/tcp` inside the namespace): no
//! session logic of ours is involved, only the codec.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use bgp::packet::*;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use lab::bird::Bird;
use lab::{require, wait_for, Netns};

const V4: u32 = 4000;
const V6: u32 = 500;
const WITHDRAWN: usize = 100;

const BIRD_CONF: &str = r#"
router id 10.0.0.1;
protocol device {}
protocol bgp peer {
  local 127.0.0.2 as 65001;
  neighbor 127.0.0.1 as 65002;
  multihop; passive; strict bind;
  ipv4 { import all; export none; };
  ipv6 { import all; export none; };
}
"#;

/// OPEN, KEEPALIVE, the packed announcements and the withdrawal of the first prefixes.
fn session_bytes(four_octet_as: bool) -> Vec<u8> {
    let ctx = DecodeContext {
        four_octet_as,
        ..Default::default()
    };
    let mut caps = vec![
        Capability::MultiProtocol {
            afi: Afi::Ipv4,
            safi: Safi::Unicast,
        },
        Capability::MultiProtocol {
            afi: Afi::Ipv6,
            safi: Safi::Unicast,
        },
    ];
    if four_octet_as {
        caps.push(Capability::FourOctetAs(65002));
    }
    let open = Open {
        version: 4,
        my_as: 65002,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(10, 0, 0, 2),
        capabilities: caps,
    };
    let attrs = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath {
            segments: vec![
                AsSegment {
                    kind: SegmentType::Sequence,
                    asns: vec![65002, 4_200_000_000, 64512],
                },
                AsSegment {
                    kind: SegmentType::Set,
                    asns: vec![70000, 100],
                },
            ],
        }),
        med: Some(5),
        aggregator: Some(Aggregator {
            asn: 4_200_000_001,
            address: Ipv4Addr::new(10, 9, 9, 9),
        }),
        // 100 communities: a 400-octet attribute with the Extended Length bit.
        communities: (0..100).map(|i| Community::new(65002, i)).collect(),
        large_communities: vec![LargeCommunity {
            global: 4_200_000_000,
            local1: 1,
            local2: 2,
        }],
        ..Default::default()
    };
    let v4: Vec<IpNet> = (0..V4)
        .map(|i| {
            let a = Ipv4Addr::from((10u32 << 24) + (i << 8));
            IpNet::V4(Ipv4Net::new(a, 24).unwrap())
        })
        .collect();
    let v6: Vec<IpNet> = (0..V6)
        .map(|i| {
            let a = Ipv6Addr::from((0xfd00_0000u128 << 96) | (u128::from(i) << 80));
            IpNet::V6(Ipv6Net::new(a, 48).unwrap())
        })
        .collect();

    let mut msgs = Vec::new();
    let nh4 = NextHop::from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
    encode_updates(&attrs, Family::Ipv4Unicast, nh4, &v4, &ctx, &mut msgs).unwrap();
    let nh6 = NextHop {
        address: "fd00::2".parse().unwrap(),
        link_local: Some("fe80::2".parse().unwrap()),
    };
    encode_updates(&attrs, Family::Ipv6Unicast, nh6, &v6, &ctx, &mut msgs).unwrap();
    encode_withdrawals(Family::Ipv4Unicast, &v4[..WITHDRAWN], &ctx, &mut msgs);
    encode_withdrawals(Family::Ipv6Unicast, &v6[..WITHDRAWN], &ctx, &mut msgs);
    // Far fewer messages than prefixes: packing works.
    assert!(msgs.len() < 20, "{} UPDATEs", msgs.len());

    let mut out = Message::Open(open).to_bytes(&ctx).to_vec();
    out.extend_from_slice(&Message::Keepalive.to_bytes(&ctx));
    for m in msgs {
        out.extend_from_slice(&m);
    }
    out
}

/// The route BIRD holds for `prefix` (`show route <prefix> all`; birdc exits non-zero with
/// "Network not found" when there is none).
fn bird_route(bird: &Bird, prefix: &str) -> Option<lab::bird::BirdRoute> {
    let out = bird.cmd(&format!("show route {prefix} all")).ok()?;
    lab::bird::parse_routes(&out)
        .into_iter()
        .find(|r| r.prefix == prefix)
}

fn bird_accepts(four_octet_as: bool, tag: &str) {
    require(&["ip", "bird", "birdc", "bash"]);
    let ns = Netns::new(tag).unwrap();
    let dir = std::env::temp_dir().join(format!("{}-{}", ns.name(), std::process::id()));
    let bird = Bird::start(&ns, &dir.join("bird"), BIRD_CONF).unwrap();

    let stream = dir.join("updates.bin");
    std::fs::write(&stream, session_bytes(four_octet_as)).unwrap();
    // Connect from 127.0.0.1 to BIRD on 127.0.0.2, send everything, keep the session open.
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.2/179 && cat {} >&3 && sleep 60",
        stream.display()
    );
    let _sender = ns.spawn(&["bash", "-c", &script]).unwrap();

    bird.wait_established("peer", Duration::from_secs(20))
        .unwrap();
    let expected = (V4 + V6) as usize - 2 * WITHDRAWN;
    let total = format!("Total: {expected} of {expected} routes");
    wait_for(
        "BIRD to hold every announced and not withdrawn prefix",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            bird.cmd("show route count")
                .ok()
                .filter(|s| s.contains(&total))
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {}", bird.cmd("show route count").unwrap_or_default()));

    // Withdrawn ones are gone, the rest carry what we encoded.
    assert_eq!(bird_route(&bird, "10.0.0.0/24"), None);
    assert_eq!(bird_route(&bird, "fd00::/48"), None);
    assert!(bird_route(&bird, "10.0.100.0/24").is_some());
    let r4 = bird_route(&bird, "10.0.200.0/24").expect("10.0.200.0/24");
    let r6 = bird_route(&bird, "fd00:0:190::/48").expect("fd00:0:190::/48");
    for r in [&r4, &r6] {
        assert_eq!(r.attr("BGP.origin"), Some("IGP"));
        assert_eq!(
            r.attr("BGP.as_path"),
            Some("65002 4200000000 64512 {70000 100}")
        );
        assert_eq!(r.attr("BGP.med"), Some("5"));
        assert_eq!(r.attr("BGP.aggregator"), Some("10.9.9.9 AS4200000001"));
        assert_eq!(r.attr("BGP.large_community"), Some("(4200000000, 1, 2)"));
        let communities = r.attr("BGP.community").unwrap_or_default();
        assert!(
            communities.starts_with("(65002,0) (65002,1)"),
            "{communities}"
        );
        // BIRD wraps long lists over several lines; ask it for the last community instead.
        let filtered = bird
            .cmd(&format!(
                "show route {} where (65002,99) ~ bgp_community",
                r.prefix
            ))
            .unwrap();
        assert!(filtered.contains(&r.prefix), "{filtered}");
    }
    assert_eq!(r4.attr("BGP.next_hop"), Some("127.0.0.1"));
    assert_eq!(r6.attr("BGP.next_hop"), Some("fd00::2 fe80::2"));
    drop(bird);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bird_accepts_packed_updates_four_octet_as() {
    bird_accepts(true, "codec4");
}

#[test]
fn bird_accepts_packed_updates_two_octet_as() {
    bird_accepts(false, "codec2");
}

//! Interop with GoBGP (Debian's `gobgpd`) in network namespaces: eBGP over IPv4 and IPv6,
//! iBGP with LOCAL_PREF, attributes intact both ways, and withdrawals.

#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

mod support;

use std::time::Duration;

use bgp::speaker::control::ControlRequest;
use lab::gobgp::{GoBgp, GoBgpNeighbor};
use lab::{require, wait_for};
use serde_json::Value;
use support::{ebgp_speaker_config, expect_ebgp_routes_from_peer, ip, pair, scratch, Speaker};

const T: Duration = Duration::from_secs(40);

/// The attribute of `type` in GoBGP's JSON for the best path to `prefix`, if any.
fn gobgp_attr(rib: &serde_json::Map<String, Value>, prefix: &str, ty: u64) -> Option<Value> {
    rib.get(prefix)?
        .as_array()?
        .iter()
        .find(|p| p["best"].as_bool() == Some(true))?["attrs"]
        .as_array()?
        .iter()
        .find(|a| a["type"].as_u64() == Some(ty))
        .cloned()
}

#[test]
fn ebgp_ipv4_and_ipv6_routes_flow_both_ways_with_gobgp() {
    require(&["ip", "gobgpd", "gobgp"]);
    let dir = scratch("gobgp-ebgp");
    let (ours, theirs) = pair("ge", 3);
    let gobgp = GoBgp::start(
        &theirs,
        &dir.join("gobgp"),
        &GoBgp::config(
            65003,
            "10.0.0.3",
            &[
                GoBgpNeighbor {
                    address: "10.0.0.1".into(),
                    peer_as: 65001,
                    route_reflector_client: false,
                },
                GoBgpNeighbor {
                    address: "fd00::1".into(),
                    peer_as: 65001,
                    route_reflector_client: false,
                },
            ],
        ),
    )
    .unwrap();
    let speaker =
        Speaker::start(&ours, &dir.join("speaker"), &ebgp_speaker_config(3, 65003)).unwrap();
    gobgp.wait_established("10.0.0.1", T).unwrap();
    gobgp.wait_established("fd00::1", T).unwrap();
    gobgp
        .cli(&[
            "global",
            "rib",
            "add",
            "-a",
            "ipv4",
            "10.3.0.0/24",
            "med",
            "30",
            "community",
            "65003:300",
            "large-community",
            "65003:5:6",
        ])
        .unwrap();
    gobgp
        .cli(&[
            "global",
            "rib",
            "add",
            "-a",
            "ipv6",
            "fd03::/64",
            "nexthop",
            "fd00::3",
        ])
        .unwrap();

    // Ours -> GoBGP.
    let rib = wait_for(
        "10.1.0.0/24 in GoBGP",
        T,
        Duration::from_millis(200),
        || {
            gobgp
                .rib("ipv4")
                .ok()
                .filter(|r| r.contains_key("10.1.0.0/24"))
        },
    )
    .unwrap();
    let as_path = gobgp_attr(&rib, "10.1.0.0/24", 2).expect("AS_PATH");
    assert_eq!(as_path["as_paths"][0]["asns"], serde_json::json!([65001]));
    assert_eq!(
        gobgp_attr(&rib, "10.1.0.0/24", 3).expect("NEXT_HOP")["nexthop"],
        "10.0.0.1"
    );
    assert_eq!(
        gobgp_attr(&rib, "10.1.0.0/24", 4).expect("MED")["metric"],
        10
    );
    assert_eq!(
        gobgp_attr(&rib, "10.1.0.0/24", 8).expect("COMMUNITIES")["communities"],
        serde_json::json!([(65001u32 << 16) | 100])
    );
    assert_eq!(
        gobgp_attr(&rib, "10.1.0.0/24", 32).expect("LARGE_COMMUNITY")["value"],
        serde_json::json!([{"ASN": 65001, "LocalData1": 1, "LocalData2": 2}])
    );
    let rib6 = wait_for("fd01::/64 in GoBGP", T, Duration::from_millis(200), || {
        gobgp
            .rib("ipv6")
            .ok()
            .filter(|r| r.contains_key("fd01::/64"))
    })
    .unwrap();
    let mp = gobgp_attr(&rib6, "fd01::/64", 14).expect("MP_REACH_NLRI");
    assert_eq!(mp["nexthop"], "fd00::1");

    // GoBGP -> ours.
    expect_ebgp_routes_from_peer(&speaker, 3, 65003, T);

    // Withdrawals both ways.
    gobgp
        .cli(&["global", "rib", "-a", "ipv4", "del", "10.3.0.0/24"])
        .unwrap();
    speaker.wait_route("10.3.0.0/24", T, None).unwrap();
    speaker
        .request(&ControlRequest::Withdraw {
            prefix: "fd01::/64".parse().unwrap(),
        })
        .unwrap();
    wait_for(
        "fd01::/64 gone from GoBGP",
        T,
        Duration::from_millis(200),
        || {
            gobgp
                .rib("ipv6")
                .ok()
                .filter(|r| !r.contains_key("fd01::/64"))
                .map(|_| ())
        },
    )
    .unwrap();
    assert!(gobgp.rib("ipv4").unwrap().contains_key("10.1.0.0/24"));
}

#[test]
fn ibgp_local_pref_with_gobgp() {
    require(&["ip", "gobgpd", "gobgp"]);
    let dir = scratch("gobgp-ibgp");
    let (ours, theirs) = pair("gi", 3);
    let gobgp = GoBgp::start(
        &theirs,
        &dir.join("gobgp"),
        &GoBgp::config(
            65001,
            "10.0.0.3",
            &[GoBgpNeighbor {
                address: "10.0.0.1".into(),
                peer_as: 65001,
                route_reflector_client: false,
            }],
        ),
    )
    .unwrap();
    let speaker = Speaker::start(
        &ours,
        &dir.join("speaker"),
        r#"
router_id = "10.0.0.1"
local_as = 65001
hold_time = 9
connect_retry = 1
[[originate]]
prefix = "10.1.0.0/24"
local_pref = 220
[[peer]]
address = "10.0.0.3"
remote_as = 65001
"#,
    )
    .unwrap();
    gobgp.wait_established("10.0.0.1", T).unwrap();
    gobgp
        .cli(&[
            "global",
            "rib",
            "add",
            "-a",
            "ipv4",
            "10.3.0.0/24",
            "nexthop",
            "10.0.0.3",
            "local-pref",
            "250",
        ])
        .unwrap();
    let rib = wait_for(
        "10.1.0.0/24 in GoBGP",
        T,
        Duration::from_millis(200),
        || {
            gobgp
                .rib("ipv4")
                .ok()
                .filter(|r| r.contains_key("10.1.0.0/24"))
        },
    )
    .unwrap();
    assert_eq!(
        gobgp_attr(&rib, "10.1.0.0/24", 5).expect("LOCAL_PREF")["value"],
        220
    );
    let r = speaker
        .wait_route("10.3.0.0/24", T, Some(&|r| r.peer.is_some()))
        .unwrap()
        .unwrap();
    assert_eq!(r.local_pref, Some(250));
    assert_eq!(r.next_hop, Some(ip("10.0.0.3")));
    assert!(r.as_path.is_empty());
}

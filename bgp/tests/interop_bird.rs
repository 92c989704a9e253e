//! Interop with BIRD 2 (Debian's `bird2`) in network namespaces: eBGP and iBGP over IPv4 and
//! IPv6 (MP-BGP), attributes carried intact both ways, withdrawals, and route reflection in
//! both directions (our speaker reflecting between BIRD clients; a BIRD reflector reflecting
//! between two of our speakers).

#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

mod support;

use std::time::Duration;

use bgp::speaker::control::{ControlRequest, ControlResponse};
use lab::bird::Bird;
use lab::{lan, require, wait_for, Netns};
use support::{ebgp_speaker_config, ip, pair, scratch, Speaker};

const T: Duration = Duration::from_secs(40);

#[test]
fn ebgp_ipv4_and_ipv6_routes_flow_both_ways_with_bird() {
    require(&["ip", "bird", "birdc"]);
    let dir = scratch("bird-ebgp");
    let (ours, theirs) = pair("be", 2);
    let speaker =
        Speaker::start(&ours, &dir.join("speaker"), &ebgp_speaker_config(2, 65002)).unwrap();
    let bird = Bird::start(
        &theirs,
        &dir.join("bird"),
        r#"
router id 10.0.0.2;
protocol device {}
protocol direct { ipv4; ipv6; }
protocol static s4 { ipv4; route 10.2.0.0/24 blackhole; }
protocol static s6 { ipv6; route fd02::/64 blackhole; }
filter out4 { if net = 10.2.0.0/24 then { bgp_med = 50; bgp_community.add((65002,200)); bgp_large_community.add((65002,3,4)); } if proto = "s4" then accept; reject; }
protocol bgp v4 { local 10.0.0.2 as 65002; neighbor 10.0.0.1 as 65001; hold time 9; connect retry time 1;
  ipv4 { import all; export filter out4; }; }
protocol bgp v6 { local fd00::2 as 65002; neighbor fd00::1 as 65001; hold time 9; connect retry time 1;
  ipv6 { import all; export where proto = "s6"; }; }
"#,
    )
    .unwrap();

    bird.wait_established("v4", T).unwrap();
    bird.wait_established("v6", T).unwrap();
    speaker.wait_established(ip("10.0.0.2"), T).unwrap();
    speaker.wait_established(ip("fd00::2"), T).unwrap();

    // Ours -> BIRD, with AS path, MED and both kinds of communities intact.
    let r = wait_for("10.1.0.0/24 in BIRD", T, Duration::from_millis(100), || {
        bird.route("10.1.0.0/24").ok().flatten()
    })
    .unwrap();
    assert_eq!(r.attr("BGP.as_path"), Some("65001"), "{r:?}");
    assert_eq!(r.attr("BGP.next_hop"), Some("10.0.0.1"), "{r:?}");
    assert_eq!(r.attr("BGP.med"), Some("10"), "{r:?}");
    assert_eq!(r.attr("BGP.origin"), Some("IGP"), "{r:?}");
    assert_eq!(r.attr("BGP.community"), Some("(65001,100)"), "{r:?}");
    assert_eq!(
        r.attr("BGP.large_community"),
        Some("(65001, 1, 2)"),
        "{r:?}"
    );
    let r6 = wait_for("fd01::/64 in BIRD", T, Duration::from_millis(100), || {
        bird.route("fd01::/64").ok().flatten()
    })
    .unwrap();
    assert_eq!(r6.attr("BGP.as_path"), Some("65001"), "{r6:?}");
    assert!(
        r6.attr("BGP.next_hop")
            .is_some_and(|n| n.starts_with("fd00::1")),
        "{r6:?}"
    );

    // BIRD -> ours.
    let ours4 = speaker
        .wait_route("10.2.0.0/24", T, Some(&|r| r.peer == Some(ip("10.0.0.2"))))
        .unwrap()
        .unwrap();
    assert_eq!(ours4.as_path, vec![65002]);
    assert_eq!(ours4.next_hop, Some(ip("10.0.0.2")));
    assert_eq!(ours4.med, Some(50));
    assert_eq!(ours4.communities, vec!["65002:200".to_string()]);
    assert_eq!(ours4.large_communities, vec!["65002:3:4".to_string()]);
    let ours6 = speaker
        .wait_route("fd02::/64", T, Some(&|r| r.peer == Some(ip("fd00::2"))))
        .unwrap()
        .unwrap();
    assert_eq!(ours6.as_path, vec![65002]);
    assert_eq!(ours6.next_hop, Some(ip("fd00::2")));

    // Withdrawals, both directions.
    let answer = speaker
        .request(&ControlRequest::Withdraw {
            prefix: "10.1.0.0/24".parse().unwrap(),
        })
        .unwrap();
    assert_eq!(answer, ControlResponse::Done);
    wait_for(
        "10.1.0.0/24 gone from BIRD",
        T,
        Duration::from_millis(100),
        || {
            bird.route("10.1.0.0/24")
                .ok()
                .filter(Option::is_none)
                .map(|_| ())
        },
    )
    .unwrap();
    bird.cmd("disable s4").unwrap();
    speaker.wait_route("10.2.0.0/24", T, None).unwrap();
    // The IPv6 session and its routes are untouched by the IPv4 withdrawals.
    assert!(bird.route("fd01::/64").unwrap().is_some());
    assert_eq!(speaker.peer(ip("fd00::2")).unwrap().state, "Established");
}

#[test]
fn ibgp_carries_local_pref_both_ways_with_bird() {
    require(&["ip", "bird", "birdc"]);
    let dir = scratch("bird-ibgp");
    let (ours, theirs) = pair("bi", 2);
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
local_pref = 200
med = 7
[[peer]]
address = "10.0.0.2"
remote_as = 65001
"#,
    )
    .unwrap();
    let bird = Bird::start(
        &theirs,
        &dir.join("bird"),
        r#"
router id 10.0.0.2;
protocol device {}
protocol direct { ipv4; }
protocol static s4 { ipv4; route 10.2.0.0/24 blackhole; }
protocol bgp i4 { local 10.0.0.2 as 65001; neighbor 10.0.0.1 as 65001; hold time 9; connect retry time 1;
  ipv4 { import all; export filter { if proto = "s4" then { bgp_local_pref = 300; bgp_community.add((65001,5)); accept; } reject; }; }; }
"#,
    )
    .unwrap();
    bird.wait_established("i4", T).unwrap();
    let r = wait_for("10.1.0.0/24 in BIRD", T, Duration::from_millis(100), || {
        bird.route("10.1.0.0/24").ok().flatten()
    })
    .unwrap();
    assert_eq!(r.attr("BGP.local_pref"), Some("200"), "{r:?}");
    assert_eq!(r.attr("BGP.med"), Some("7"), "{r:?}");
    assert_eq!(r.attr("BGP.as_path"), Some(""), "{r:?}");
    let ours = speaker
        .wait_route("10.2.0.0/24", T, Some(&|r| r.peer.is_some()))
        .unwrap()
        .unwrap();
    assert_eq!(ours.local_pref, Some(300));
    assert!(ours.as_path.is_empty());
    assert_eq!(ours.communities, vec!["65001:5".to_string()]);
}

#[test]
fn our_route_reflector_reflects_between_two_bird_clients() {
    require(&["ip", "bird", "birdc"]);
    let dir = scratch("bird-rr");
    let rr = Netns::new("rrs").unwrap();
    let a = Netns::new("rra").unwrap();
    let c = Netns::new("rrc").unwrap();
    let _sw = lan(
        "rr",
        &[
            (&rr, "eth0", &["10.0.0.1/24"]),
            (&a, "eth0", &["10.0.0.2/24"]),
            (&c, "eth0", &["10.0.0.3/24"]),
        ],
    )
    .unwrap();
    let speaker = Speaker::start(
        &rr,
        &dir.join("speaker"),
        r#"
router_id = "10.0.0.1"
local_as = 65001
cluster_id = "10.0.0.100"
hold_time = 9
connect_retry = 1
[[peer]]
address = "10.0.0.2"
remote_as = 65001
route_reflector_client = true
[[peer]]
address = "10.0.0.3"
remote_as = 65001
route_reflector_client = true
"#,
    )
    .unwrap();
    let client = |id: &str, prefix: &str| {
        format!(
            r#"
router id {id};
protocol device {{}}
protocol direct {{ ipv4; }}
protocol static s4 {{ ipv4; route {prefix} blackhole; }}
protocol bgp reflector {{ local {id} as 65001; neighbor 10.0.0.1 as 65001; hold time 9; connect retry time 1;
  ipv4 {{ import all; export where proto = "s4"; }}; }}
"#
        )
    };
    let bird_a = Bird::start(&a, &dir.join("a"), &client("10.0.0.2", "10.11.0.0/24")).unwrap();
    let bird_c = Bird::start(&c, &dir.join("c"), &client("10.0.0.3", "10.12.0.0/24")).unwrap();
    bird_a.wait_established("reflector", T).unwrap();
    bird_c.wait_established("reflector", T).unwrap();

    for (bird, prefix, originator) in [
        (&bird_c, "10.11.0.0/24", "10.0.0.2"),
        (&bird_a, "10.12.0.0/24", "10.0.0.3"),
    ] {
        let r = wait_for(
            &format!("{prefix} reflected"),
            T,
            Duration::from_millis(100),
            || bird.route(prefix).ok().flatten(),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", speaker.log_tail()));
        assert_eq!(r.attr("BGP.originator_id"), Some(originator), "{r:?}");
        assert_eq!(r.attr("BGP.cluster_list"), Some("10.0.0.100"), "{r:?}");
        // A reflector does not change the next hop (RFC 4456 §10).
        assert_eq!(r.attr("BGP.next_hop"), Some(originator), "{r:?}");
        assert_eq!(r.attr("BGP.as_path"), Some(""), "{r:?}");
    }
    // A client's own route is not reflected back to it (BIRD would drop it on ORIGINATOR_ID
    // anyway, RFC 4456 §8): the only 10.11.0.0/24 at A is its static one.
    let at_a: Vec<_> = bird_a
        .routes()
        .unwrap()
        .into_iter()
        .filter(|r| r.prefix == "10.11.0.0/24")
        .collect();
    assert_eq!(at_a.len(), 1, "{at_a:?}");
    assert_eq!(at_a[0].protocol, "s4");
}

#[test]
fn bird_route_reflector_reflects_between_two_of_our_speakers() {
    require(&["ip", "bird", "birdc"]);
    let dir = scratch("bird-rr2");
    let rr = Netns::new("brr").unwrap();
    let s1 = Netns::new("bs1").unwrap();
    let s2 = Netns::new("bs2").unwrap();
    let _sw = lan(
        "brr",
        &[
            (&rr, "eth0", &["10.0.0.10/24"]),
            (&s1, "eth0", &["10.0.0.1/24"]),
            (&s2, "eth0", &["10.0.0.2/24"]),
        ],
    )
    .unwrap();
    let bird = Bird::start(
        &rr,
        &dir.join("bird"),
        r#"
router id 10.0.0.10;
protocol device {}
protocol direct { ipv4; }
template bgp rrc { local 10.0.0.10 as 65001; rr client; rr cluster id 10.0.0.10; hold time 9; connect retry time 1;
  ipv4 { import all; export all; }; }
protocol bgp c1 from rrc { neighbor 10.0.0.1 as 65001; }
protocol bgp c2 from rrc { neighbor 10.0.0.2 as 65001; }
"#,
    )
    .unwrap();
    let speaker = |id: &str, prefix: &str| {
        format!(
            r#"
router_id = "{id}"
local_as = 65001
hold_time = 9
connect_retry = 1
[[originate]]
prefix = "{prefix}"
communities = ["65001:42"]
[[peer]]
address = "10.0.0.10"
remote_as = 65001
"#
        )
    };
    let sp1 = Speaker::start(&s1, &dir.join("s1"), &speaker("10.0.0.1", "10.21.0.0/24")).unwrap();
    let sp2 = Speaker::start(&s2, &dir.join("s2"), &speaker("10.0.0.2", "10.22.0.0/24")).unwrap();
    bird.wait_established("c1", T).unwrap();
    bird.wait_established("c2", T).unwrap();

    for (sp, prefix, originator, next_hop) in [
        (&sp2, "10.21.0.0/24", "10.0.0.1", "10.0.0.1"),
        (&sp1, "10.22.0.0/24", "10.0.0.2", "10.0.0.2"),
    ] {
        let r = sp
            .wait_route(prefix, T, Some(&|r| r.peer.is_some()))
            .unwrap()
            .unwrap();
        assert_eq!(r.peer, Some(ip("10.0.0.10")));
        assert_eq!(r.originator_id.as_deref(), Some(originator), "{r:?}");
        assert_eq!(r.cluster_list, vec!["10.0.0.10".to_string()], "{r:?}");
        assert_eq!(r.next_hop, Some(ip(next_hop)), "{r:?}");
        assert_eq!(r.communities, vec!["65001:42".to_string()], "{r:?}");
    }
}

/// TCP MD5 (RFC 2385) and GTSM (RFC 5082) with BIRD. BIRD drops segments that are unsigned
/// or signed with another key and, with `ttl security on`, packets whose TTL is below 255, so
/// the session only comes up if both are in place on our side, for the connection we open and
/// for the one we accept. A wrong key keeps the session down.
#[test]
fn tcp_md5_and_gtsm_with_bird() {
    require(&["ip", "bird", "birdc"]);
    let dir = scratch("bird-md5");
    let (ours, theirs) = pair("bm", 2);
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
[[peer]]
address = "10.0.0.2"
remote_as = 65002
password = "s3cr3t-key"
ttl_security = 1
[[peer]]
address = "fd00::2"
remote_as = 65002
password = "not-the-same"
"#,
    )
    .unwrap();
    let bird = Bird::start(
        &theirs,
        &dir.join("bird"),
        r#"
router id 10.0.0.2;
protocol device {}
protocol bgp signed { local 10.0.0.2 as 65002; neighbor 10.0.0.1 as 65001; hold time 9; connect retry time 1;
  password "s3cr3t-key"; ttl security on; ipv4 { import all; export none; }; }
protocol bgp wrongkey { local fd00::2 as 65002; neighbor fd00::1 as 65001; hold time 9; connect retry time 1;
  password "the-real-key"; ipv6 { import all; export none; }; }
"#,
    )
    .unwrap();
    bird.wait_established("signed", T)
        .unwrap_or_else(|e| panic!("{e}\n{}", speaker.log_tail()));
    speaker.wait_established(ip("10.0.0.2"), T).unwrap();
    wait_for(
        "10.1.0.0/24 over the signed session",
        T,
        Duration::from_millis(100),
        || bird.route("10.1.0.0/24").ok().flatten(),
    )
    .unwrap();
    // The session with mismatched keys has had several connect-retry rounds meanwhile (1 s
    // each way) and must still be down.
    std::thread::sleep(Duration::from_secs(3));
    assert!(!bird.is_established("wrongkey"));
    assert_ne!(speaker.peer(ip("fd00::2")).unwrap().state, "Established");
}

/// Peers are added and removed at run time without disturbing the other sessions: the IPv4
/// session keeps its uptime and its routes while an IPv6 peer is added, changed and removed.
#[test]
fn peers_change_at_run_time_without_touching_other_sessions() {
    require(&["ip", "bird", "birdc"]);
    let dir = scratch("bird-live");
    let (ours, theirs) = pair("bl", 2);
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
[[originate]]
prefix = "fd01::/64"
[[peer]]
address = "10.0.0.2"
remote_as = 65002
"#,
    )
    .unwrap();
    let bird = Bird::start(
        &theirs,
        &dir.join("bird"),
        r#"
router id 10.0.0.2;
protocol device {}
protocol bgp v4 { local 10.0.0.2 as 65002; neighbor 10.0.0.1 as 65001; hold time 9; connect retry time 1;
  ipv4 { import all; export none; }; }
protocol bgp v6 { local fd00::2 as 65002; neighbor fd00::1 as 65001; hold time 9; connect retry time 1;
  ipv6 { import all; export none; }; }
"#,
    )
    .unwrap();
    bird.wait_established("v4", T).unwrap();
    let v4_since = |b: &Bird| {
        b.cmd("show protocols v4")
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .to_string()
    };
    // BIRD stamps "since" again when the channel follows the session up a moment later:
    // take the reference once it has stopped moving.
    let before = wait_for(
        "BIRD's v4 since to settle",
        T,
        Duration::from_millis(300),
        || {
            let first = v4_since(&bird);
            std::thread::sleep(Duration::from_millis(300));
            (v4_since(&bird) == first).then_some(first)
        },
    )
    .unwrap();
    let peer6 = |remote_as: u32| {
        serde_json::from_value::<bgp::speaker::config::PeerConfig>(serde_json::json!({
            "address": "fd00::2", "remote_as": remote_as
        }))
        .unwrap()
    };

    // A bad peer is refused with an error naming the field; nothing changes.
    let bad = speaker.request(&ControlRequest::AddPeer(peer6(0))).unwrap();
    assert!(
        matches!(&bad, ControlResponse::Error { message } if message.contains("remote_as")),
        "{bad:?}"
    );
    // Add the IPv6 peer.
    assert_eq!(
        speaker
            .request(&ControlRequest::AddPeer(peer6(65002)))
            .unwrap(),
        ControlResponse::Done
    );
    bird.wait_established("v6", T).unwrap();
    wait_for("fd01::/64 in BIRD", T, Duration::from_millis(100), || {
        bird.route("fd01::/64").ok().flatten()
    })
    .unwrap();
    // Re-applying the same settings is a no-op (the session stays up); removing the peer
    // closes its session, and removing it again is an error.
    assert_eq!(
        speaker
            .request(&ControlRequest::AddPeer(peer6(65002)))
            .unwrap(),
        ControlResponse::Done
    );
    assert!(bird.is_established("v6"));
    assert_eq!(
        speaker
            .request(&ControlRequest::RemovePeer {
                address: ip("fd00::2")
            })
            .unwrap(),
        ControlResponse::Done
    );
    wait_for("v6 session down", T, Duration::from_millis(100), || {
        (!bird.is_established("v6")).then_some(())
    })
    .unwrap();
    assert!(speaker
        .peers()
        .unwrap()
        .iter()
        .all(|p| p.address != ip("fd00::2")));
    let missing = speaker
        .request(&ControlRequest::RemovePeer {
            address: ip("fd00::2"),
        })
        .unwrap();
    assert!(
        matches!(missing, ControlResponse::Error { .. }),
        "{missing:?}"
    );

    // The IPv4 session was never reset: same "since" in BIRD, route still there.
    assert_eq!(v4_since(&bird), before);
    assert!(bird.route("10.1.0.0/24").unwrap().is_some());
    assert_eq!(speaker.peer(ip("10.0.0.2")).unwrap().state, "Established");
}

/// eBGP is single-hop by default (TTL 1, as BIRD, FRR and Cilium): with BIRD two hops away
/// (behind a router namespace) and sending with a multihop TTL itself, the session never
/// comes up, neither from our connection nor from BIRD's (our SYN-ACK dies at the router
/// too); with `ebgp_multihop = 2` it does.
#[test]
fn single_hop_ebgp_needs_multihop_for_a_peer_two_hops_away() {
    require(&["ip", "bird", "birdc"]);
    let dir = scratch("bird-ttl");
    let ours = Netns::new("ttla").unwrap();
    let router = Netns::new("ttlr").unwrap();
    let theirs = Netns::new("ttlb").unwrap();
    lab::veth(&ours, "eth0", &router, "eth0").unwrap();
    lab::veth(&router, "eth1", &theirs, "eth0").unwrap();
    ours.addr("eth0", "10.0.1.1/24").unwrap();
    router.addr("eth0", "10.0.1.2/24").unwrap();
    router.addr("eth1", "10.0.2.2/24").unwrap();
    theirs.addr("eth0", "10.0.2.1/24").unwrap();
    router
        .exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    ours.ip(&["route", "add", "default", "via", "10.0.1.2"])
        .unwrap();
    theirs
        .ip(&["route", "add", "default", "via", "10.0.2.2"])
        .unwrap();
    // The path works for ordinary traffic.
    ours.exec(&["ping", "-c1", "-W2", "10.0.2.1"]).unwrap();
    let bird = Bird::start(
        &theirs,
        &dir.join("bird"),
        r#"
router id 10.0.2.1;
protocol device {}
protocol bgp far { local 10.0.2.1 as 65002; neighbor 10.0.1.1 as 65001; multihop; hold time 9;
  connect retry time 1; ipv4 { import all; export none; }; }
"#,
    )
    .unwrap();
    let config = |multihop: &str| {
        format!(
            r#"
router_id = "10.0.1.1"
local_as = 65001
hold_time = 9
connect_retry = 1
[[originate]]
prefix = "10.1.0.0/24"
[[peer]]
address = "10.0.2.1"
remote_as = 65002
{multihop}
"#
        )
    };
    {
        let single = Speaker::start(&ours, &dir.join("single"), &config("")).unwrap();
        // Several connect-retry rounds each way (1 s).
        std::thread::sleep(Duration::from_secs(5));
        assert!(!bird.is_established("far"), "{}", single.log_tail());
        assert_ne!(single.peer(ip("10.0.2.1")).unwrap().state, "Established");
    }
    let multi = Speaker::start(&ours, &dir.join("multi"), &config("ebgp_multihop = 2")).unwrap();
    bird.wait_established("far", T)
        .unwrap_or_else(|e| panic!("{e}\n{}", multi.log_tail()));
    multi.wait_established(ip("10.0.2.1"), T).unwrap();
    wait_for("10.1.0.0/24 at BIRD", T, Duration::from_millis(100), || {
        bird.route("10.1.0.0/24").ok().flatten()
    })
    .unwrap();
}

/// The leaking BIRD of the maximum-prefix test (10.0.0.2, AS 65002): exports 10.50.i.0/24
/// for i < `leaked`. Short error wait times so that it takes our reconnection soon after we
/// close with Cease/1.
fn leaking_bird_config(leaked: usize) -> String {
    let leak: String = (0..leaked)
        .map(|i| format!("route 10.50.{i}.0/24 blackhole; "))
        .collect();
    format!(
        r#"
router id 10.0.0.2;
protocol device {{}}
protocol static leak {{ ipv4; {leak} }}
protocol bgp a {{ local 10.0.0.2 as 65002; neighbor 10.0.0.1 as 65001; hold time 9;
  connect retry time 1; error wait time 1,2; ipv4 {{ import none; export where proto = "leak"; }}; }}
"#
    )
}

fn routes_from(speaker: &Speaker, peer: &str) -> Vec<String> {
    let peer = ip(peer);
    let mut v: Vec<String> = speaker
        .routes()
        .unwrap()
        .into_iter()
        .filter(|r| r.peer == Some(peer))
        .map(|r| r.prefix.to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn a_peer_past_its_maximum_prefixes_gets_cease_1_and_the_others_are_untouched() {
    require(&["ip", "bird", "birdc"]);
    let dir = scratch("bird-maxpfx");
    let ours = Netns::new("mpa").unwrap();
    let leaker = Netns::new("mpb").unwrap();
    let other = Netns::new("mpc").unwrap();
    let _switch = lan(
        "mp",
        &[
            (&ours, "eth0", &["10.0.0.1/24"]),
            (&leaker, "eth0", &["10.0.0.2/24"]),
            (&other, "eth0", &["10.0.0.3/24"]),
        ],
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
[[peer]]
address = "10.0.0.2"
remote_as = 65002
[peer.max_prefixes]
limit = 5
restart_after = 2
[[peer]]
address = "10.0.0.3"
remote_as = 65003
"#,
    )
    .unwrap();
    let bird = Bird::start(&leaker, &dir.join("bird"), &leaking_bird_config(4)).unwrap();
    let bird_b = Bird::start(
        &other,
        &dir.join("bird-b"),
        r#"
router id 10.0.0.3;
protocol device {}
protocol static good { ipv4; route 10.60.0.0/24 blackhole; route 10.60.1.0/24 blackhole; }
protocol bgp b { local 10.0.0.3 as 65003; neighbor 10.0.0.1 as 65001; hold time 9;
  connect retry time 1; ipv4 { import none; export where proto = "good"; }; }
"#,
    )
    .unwrap();
    bird.wait_established("a", T).unwrap();
    bird_b.wait_established("b", T).unwrap();
    let good = vec!["10.60.0.0/24".to_string(), "10.60.1.0/24".to_string()];
    wait_for("4 + 2 routes", T, Duration::from_millis(100), || {
        (routes_from(&speaker, "10.0.0.2").len() == 4 && routes_from(&speaker, "10.0.0.3") == good)
            .then_some(())
    })
    .unwrap();
    // 4 of 5 is past the 75 % threshold: a warning, the session stays.
    let log = std::fs::read_to_string(&speaker.log).unwrap();
    assert!(
        log.contains("prefix count nearing the peer's maximum"),
        "{}",
        speaker.log_tail()
    );
    assert_eq!(speaker.peer(ip("10.0.0.2")).unwrap().state, "Established");

    // The leak: 8 routes from `a`, past its limit of 5.
    let b_before = speaker.peer(ip("10.0.0.3")).unwrap();
    let leak_at = std::time::Instant::now();
    std::fs::write(dir.join("bird/bird.conf"), leaking_bird_config(8)).unwrap();
    bird.cmd("configure").unwrap();
    let closed = wait_for(
        "Cease/1 towards 10.0.0.2",
        T,
        Duration::from_millis(50),
        || {
            let p = speaker.peer(ip("10.0.0.2")).ok()?;
            let cease = p
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("Cease: Maximum Number of Prefixes Reached"));
            cease.then_some(p)
        },
    )
    .unwrap();
    assert_ne!(closed.state, "Established", "{closed:?}");
    // BIRD received the NOTIFICATION: it names it as the reason its session ended.
    let bird_a = bird.cmd("show protocols all a").unwrap();
    assert!(
        bird_a
            .to_lowercase()
            .contains("received: maximum number of prefixes reached"),
        "{bird_a}"
    );
    assert!(
        routes_from(&speaker, "10.0.0.2").is_empty(),
        "the leaking peer's routes are gone"
    );
    // The other session did not move: same routes, established since before the leak.
    let b_after = speaker.peer(ip("10.0.0.3")).unwrap();
    assert_eq!(b_after.state, "Established");
    assert!(
        b_after.since_secs >= b_before.since_secs + leak_at.elapsed().as_secs(),
        "{b_before:?} -> {b_after:?}"
    );
    assert_eq!(routes_from(&speaker, "10.0.0.3"), good);

    // Leak fixed: after the 2 s hold-down the session comes back with the 3 routes.
    std::fs::write(dir.join("bird/bird.conf"), leaking_bird_config(3)).unwrap();
    bird.cmd("configure").unwrap();
    wait_for(
        "a back with 3 routes",
        T,
        Duration::from_millis(100),
        || {
            let up = speaker.peer(ip("10.0.0.2")).ok()?.state == "Established";
            (up && routes_from(&speaker, "10.0.0.2").len() == 3).then_some(())
        },
    )
    .unwrap();
    assert_eq!(routes_from(&speaker, "10.0.0.3"), good);
    assert_eq!(speaker.peer(ip("10.0.0.3")).unwrap().state, "Established");
}

#[test]
fn sigterm_without_graceful_restart_drains_with_graceful_shutdown_before_closing() {
    require(&["ip", "bird", "birdc"]);
    let dir = scratch("bird-gshut");
    let (ours, theirs) = pair("gs", 2);
    // No graceful restart towards this peer (Restart Time 0): on SIGTERM it would lose our
    // routes at once, so they are drained first.
    let mut speaker = Speaker::start(
        &ours,
        &dir.join("speaker"),
        r#"
router_id = "10.0.0.1"
local_as = 65001
hold_time = 9
connect_retry = 1
shutdown_drain_time = 3
[[originate]]
prefix = "10.1.0.0/24"
communities = ["65001:100"]
[[peer]]
address = "10.0.0.2"
remote_as = 65002
graceful_restart_time = 0
"#,
    )
    .unwrap();
    let bird = Bird::start(
        &theirs,
        &dir.join("bird"),
        r#"
router id 10.0.0.2;
protocol device {}
protocol bgp v4 { local 10.0.0.2 as 65002; neighbor 10.0.0.1 as 65001; hold time 9;
  connect retry time 1; ipv4 { import all; export none; }; }
"#,
    )
    .unwrap();
    bird.wait_established("v4", T).unwrap();
    let r = wait_for("10.1.0.0/24 in BIRD", T, Duration::from_millis(100), || {
        bird.route("10.1.0.0/24").ok().flatten()
    })
    .unwrap();
    assert_eq!(r.attr("BGP.community"), Some("(65001,100)"), "{r:?}");

    let term_at = std::time::Instant::now();
    speaker.terminate().unwrap();
    // While the session is still up, the route carries GRACEFUL_SHUTDOWN (65535,0).
    let drained = wait_for(
        "GRACEFUL_SHUTDOWN on 10.1.0.0/24 in BIRD",
        Duration::from_secs(2),
        Duration::from_millis(50),
        || {
            let r = bird.route("10.1.0.0/24").ok().flatten()?;
            r.attr("BGP.community")
                .is_some_and(|c| c.contains("(65535,0)"))
                .then_some(r)
        },
    )
    .unwrap();
    assert!(
        drained
            .attr("BGP.community")
            .is_some_and(|c| c.contains("(65001,100)")),
        "the route's own communities stay: {drained:?}"
    );
    assert!(
        bird.is_established("v4"),
        "drained before the session closes"
    );
    // Then, after the drain time, Cease and the route is gone.
    wait_for("BIRD session down", T, Duration::from_millis(100), || {
        (!bird.is_established("v4")).then_some(())
    })
    .unwrap();
    let closed_after = term_at.elapsed();
    assert!(
        closed_after >= Duration::from_secs(3),
        "closed after {closed_after:?}, before the 3 s drain"
    );
    let v4 = bird.cmd("show protocols all v4").unwrap();
    assert!(
        v4.to_lowercase().contains("administrative shutdown"),
        "{v4}"
    );
    assert!(bird.route("10.1.0.0/24").unwrap().is_none());
    wait_for("speaker exit", T, Duration::from_millis(100), || {
        (!speaker.is_running()).then_some(())
    })
    .unwrap();
}

#[test]
fn bfd_takes_the_session_down_within_a_second_and_brings_it_back() {
    require(&["ip", "bird", "birdc"]);
    let dir = scratch("bird-bfd");
    let ours = Netns::new("bfa").unwrap();
    let with_bfd = Netns::new("bfb").unwrap();
    let without = Netns::new("bfc").unwrap();
    let _switch = lan(
        "bf",
        &[
            (&ours, "eth0", &["10.0.0.1/24"]),
            (&with_bfd, "eth0", &["10.0.0.2/24"]),
            (&without, "eth0", &["10.0.0.3/24"]),
        ],
    )
    .unwrap();
    let speaker = Speaker::start(
        &ours,
        &dir.join("speaker"),
        r#"
router_id = "10.0.0.1"
local_as = 65001
hold_time = 90
connect_retry = 1
[[originate]]
prefix = "10.1.0.0/24"
[[peer]]
address = "10.0.0.2"
remote_as = 65002
local_address = "10.0.0.1"
[peer.bfd]
min_rx_ms = 300
min_tx_ms = 300
multiplier = 3
[[peer]]
address = "10.0.0.3"
remote_as = 65003
"#,
    )
    .unwrap();
    let bird_config = |id: u8, bfd: bool| {
        format!(
            r#"
router id 10.0.0.{id};
protocol device {{}}
{}
protocol static own {{ ipv4; route 10.{id}.0.0/24 blackhole; }}
protocol bgp v4 {{ local 10.0.0.{id} as 6500{id}; neighbor 10.0.0.1 as 65001; hold time 90;
  connect retry time 1; {} ipv4 {{ import all; export where proto = "own"; }}; }}
"#,
            if bfd {
                r#"protocol bfd { interface "*" { min rx interval 300 ms; min tx interval 300 ms; multiplier 3; }; }"#
            } else {
                ""
            },
            if bfd { "bfd on;" } else { "" }
        )
    };
    let bird_b = Bird::start(&with_bfd, &dir.join("bird-b"), &bird_config(2, true)).unwrap();
    let bird_c = Bird::start(&without, &dir.join("bird-c"), &bird_config(3, false)).unwrap();
    bird_b.wait_established("v4", T).unwrap();
    bird_c.wait_established("v4", T).unwrap();
    speaker.wait_established(ip("10.0.0.2"), T).unwrap();
    speaker.wait_established(ip("10.0.0.3"), T).unwrap();
    let has = |prefix: &str| {
        let want: ipnet::IpNet = prefix.parse().unwrap();
        speaker
            .routes()
            .unwrap()
            .iter()
            .any(|r| r.prefix == want && r.peer.is_some())
    };
    wait_for("both peers' routes", T, Duration::from_millis(100), || {
        (has("10.2.0.0/24") && has("10.3.0.0/24")).then_some(())
    })
    .unwrap();
    let b = speaker.peer(ip("10.0.0.2")).unwrap();
    let bfd = b.bfd.clone().unwrap();
    assert_eq!(bfd.state, "Up", "{b:?}");
    assert_eq!(bfd.detection_time_ms, 900, "{b:?}");
    assert!(speaker.peer(ip("10.0.0.3")).unwrap().bfd.is_none());
    let bird_bfd = bird_b.cmd("show bfd sessions").unwrap();
    assert!(
        bird_bfd.contains("10.0.0.1") && bird_bfd.contains("Up"),
        "{bird_bfd}"
    );
    let c_since = speaker.peer(ip("10.0.0.3")).unwrap().since_secs;

    // The link of the BFD peer dies: BGP is down (its hold time is 90 s) and its routes are
    // gone in under a second.
    let cut = std::time::Instant::now();
    with_bfd.ip(&["link", "set", "eth0", "down"]).unwrap();
    let down = wait_for(
        "BGP down with BFD",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || {
            let p = speaker.peer(ip("10.0.0.2")).ok()?;
            (p.state != "Established" && !has("10.2.0.0/24")).then_some(p)
        },
    )
    .unwrap();
    let took = cut.elapsed();
    eprintln!("BFD: BGP session down and routes gone {took:?} after the link cut");
    assert!(took < Duration::from_secs(1), "down after {took:?}");
    assert_eq!(down.bfd.as_ref().unwrap().state, "Down", "{down:?}");
    assert!(
        down.last_error
            .as_deref()
            .is_some_and(|e| e.contains("BFD Down")),
        "{down:?}"
    );
    // The other session never moved.
    let c = speaker.peer(ip("10.0.0.3")).unwrap();
    assert_eq!(c.state, "Established");
    assert!(c.since_secs >= c_since, "{c:?}");
    assert!(has("10.3.0.0/24"));
    // Still down a while later: BGP waits for BFD.
    std::thread::sleep(Duration::from_secs(2));
    assert_ne!(speaker.peer(ip("10.0.0.2")).unwrap().state, "Established");

    // The link returns: BFD, then BGP and the routes come back.
    with_bfd.ip(&["link", "set", "eth0", "up"]).unwrap();
    speaker.wait_established(ip("10.0.0.2"), T).unwrap();
    wait_for("routes back", T, Duration::from_millis(100), || {
        has("10.2.0.0/24").then_some(())
    })
    .unwrap();
    assert_eq!(
        speaker.peer(ip("10.0.0.2")).unwrap().bfd.unwrap().state,
        "Up"
    );
    assert_eq!(speaker.peer(ip("10.0.0.3")).unwrap().state, "Established");
}

#[test]
fn extended_messages_carry_updates_past_4096_octets_both_ways_with_bird() {
    require(&["ip", "bird", "birdc"]);
    let dir = scratch("bird-extmsg");
    let (ours, theirs) = pair("em", 2);
    // 1100 communities: 4400 octets of attribute, more than a 4096-octet UPDATE holds.
    let ours_communities: Vec<String> = (0..1100).map(|i| format!("\"65001:{i}\"")).collect();
    let speaker = Speaker::start(
        &ours,
        &dir.join("speaker"),
        &format!(
            r#"
router_id = "10.0.0.1"
local_as = 65001
hold_time = 9
connect_retry = 1
[[originate]]
prefix = "10.1.0.0/24"
communities = [{}]
[[peer]]
address = "10.0.0.2"
remote_as = 65002
"#,
            ours_communities.join(", ")
        ),
    )
    .unwrap();
    let adds: String = (0..1100)
        .map(|i| format!("bgp_community.add((65002,{i})); "))
        .collect();
    let bird = Bird::start(
        &theirs,
        &dir.join("bird"),
        &format!(
            r#"
router id 10.0.0.2;
protocol device {{}}
protocol static s4 {{ ipv4; route 10.2.0.0/24 blackhole; }}
filter big {{ if proto = "s4" then {{ {adds} accept; }} reject; }}
protocol bgp v4 {{ local 10.0.0.2 as 65002; neighbor 10.0.0.1 as 65001; hold time 9;
  connect retry time 1; enable extended messages on; ipv4 {{ import all; export filter big; }}; }}
"#
        ),
    )
    .unwrap();
    bird.wait_established("v4", T).unwrap();
    speaker.wait_established(ip("10.0.0.2"), T).unwrap();
    let p = speaker.peer(ip("10.0.0.2")).unwrap();
    assert!(
        p.capabilities.iter().any(|c| c == "extended-message"),
        "{p:?}"
    );
    // BIRD's 4400-octet-attribute route reaches us intact...
    let theirs = speaker
        .wait_route("10.2.0.0/24", T, Some(&|r| r.peer.is_some()))
        .unwrap()
        .unwrap();
    assert_eq!(theirs.communities.len(), 1100);
    assert!(theirs.communities.iter().any(|c| c == "65002:1099"));
    // ...and ours reaches BIRD.
    let r = wait_for("10.1.0.0/24 in BIRD", T, Duration::from_millis(100), || {
        bird.route("10.1.0.0/24").ok().flatten()
    })
    .unwrap();
    assert!(r.attr("BGP.community").is_some(), "{r:?}");
    // birdc wraps a long attribute over several lines: count in the whole output.
    let full = bird.cmd("show route 10.1.0.0/24 all").unwrap();
    assert_eq!(full.matches("(65001,").count(), 1100, "{full:.300}");
    assert!(full.contains("(65001,1099)"));
    assert_eq!(speaker.peer(ip("10.0.0.2")).unwrap().state, "Established");
}

#[test]
fn enhanced_route_refresh_with_bird_keeps_what_we_resend() {
    // BIRD's `reload in` asks us for our routes; with Enhanced Route Refresh (RFC 7313) on
    // both sides we frame the answer with BoRR and EoRR, and BIRD drops at EoRR whatever we
    // did not re-send: our routes must all still be there afterwards.
    require(&["ip", "bird", "birdc"]);
    let dir = scratch("bird-err");
    let (ours, theirs) = pair("er", 2);
    let speaker =
        Speaker::start(&ours, &dir.join("speaker"), &ebgp_speaker_config(2, 65002)).unwrap();
    let bird = Bird::start(
        &theirs,
        &dir.join("bird"),
        r#"
router id 10.0.0.2;
protocol device {}
protocol bgp v4 { local 10.0.0.2 as 65002; neighbor 10.0.0.1 as 65001; hold time 9;
  connect retry time 1; enable route refresh on; ipv4 { import all; export none; }; }
"#,
    )
    .unwrap();
    bird.wait_established("v4", T).unwrap();
    speaker.wait_established(ip("10.0.0.2"), T).unwrap();
    let p = speaker.peer(ip("10.0.0.2")).unwrap();
    assert!(
        p.capabilities.iter().any(|c| c == "enhanced-route-refresh"),
        "{p:?}"
    );
    wait_for("10.1.0.0/24 in BIRD", T, Duration::from_millis(100), || {
        bird.route("10.1.0.0/24").ok().flatten()
    })
    .unwrap();
    for _ in 0..3 {
        bird.cmd("reload in v4").unwrap();
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            bird.route("10.1.0.0/24").unwrap().is_some(),
            "{:?}",
            bird.routes()
        );
    }
    let log = std::fs::read_to_string(&speaker.log).unwrap();
    assert!(
        log.contains("route refresh answered") && log.contains("enhanced=true"),
        "{}",
        speaker.log_tail()
    );
    assert!(bird.is_established("v4"));
}

/// ADD-PATH (RFC 7911): two of our speakers announce the same prefix through our route
/// reflector; a third speaker and a BIRD client with `add paths rx` each receive both paths
/// and install them together (our speaker's decision marks the second `multipath`; BIRD's
/// kernel protocol with `merge paths` writes one multipath kernel route). A client without
/// ADD-PATH gets the best path only. When one announcer goes, only its path is withdrawn.
#[test]
fn our_reflector_passes_both_paths_to_add_path_clients_which_install_them_as_ecmp() {
    require(&["ip", "bird", "birdc"]);
    let dir = scratch("bird-addpath");
    let rr = Netns::new("aprr").unwrap();
    let s1 = Netns::new("aps1").unwrap();
    let s2 = Netns::new("aps2").unwrap();
    let s3 = Netns::new("aps3").unwrap();
    let bd = Netns::new("apbd").unwrap();
    let _sw = lan(
        "ap",
        &[
            (&rr, "eth0", &["10.0.0.10/24"]),
            (&s1, "eth0", &["10.0.0.1/24"]),
            (&s2, "eth0", &["10.0.0.2/24"]),
            (&s3, "eth0", &["10.0.0.3/24"]),
            (&bd, "eth0", &["10.0.0.4/24"]),
        ],
    )
    .unwrap();
    let reflector = Speaker::start(
        &rr,
        &dir.join("rr"),
        r#"
router_id = "10.0.0.10"
local_as = 65001
cluster_id = "10.0.0.10"
hold_time = 9
connect_retry = 1
[[peer]]
address = "10.0.0.1"
remote_as = 65001
route_reflector_client = true
[[peer]]
address = "10.0.0.2"
remote_as = 65001
route_reflector_client = true
[[peer]]
address = "10.0.0.3"
remote_as = 65001
route_reflector_client = true
add_paths = "tx"
[[peer]]
address = "10.0.0.4"
remote_as = 65001
route_reflector_client = true
add_paths = "on"
"#,
    )
    .unwrap();
    let node = |id: &str, originate: bool, add_paths: &str| {
        let mut c =
            format!("router_id = \"{id}\"\nlocal_as = 65001\nhold_time = 9\nconnect_retry = 1\n");
        if originate {
            c += "[[originate]]\nprefix = \"10.40.0.0/24\"\n";
        }
        c += "[[peer]]\naddress = \"10.0.0.10\"\nremote_as = 65001\n";
        c += add_paths;
        c
    };
    let sp1 = Speaker::start(&s1, &dir.join("s1"), &node("10.0.0.1", true, "")).unwrap();
    let sp2 = Speaker::start(&s2, &dir.join("s2"), &node("10.0.0.2", true, "")).unwrap();
    let sp3 = Speaker::start(
        &s3,
        &dir.join("s3"),
        &node("10.0.0.3", false, "add_paths = \"rx\"\n"),
    )
    .unwrap();
    let bird = Bird::start(
        &bd,
        &dir.join("bird"),
        r#"
router id 10.0.0.4;
protocol device {}
protocol direct { ipv4; }
protocol kernel { ipv4 { export where proto = "reflector"; }; merge paths on; }
protocol bgp reflector { local 10.0.0.4 as 65001; neighbor 10.0.0.10 as 65001; hold time 9; connect retry time 1;
  ipv4 { import all; export none; add paths rx; }; }
"#,
    )
    .unwrap();
    bird.wait_established("reflector", T).unwrap();
    for a in ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"] {
        reflector.wait_established(ip(a), T).unwrap();
    }

    // Our third speaker: both paths from the reflector, best and multipath, under distinct
    // path identifiers.
    let prefix: ipnet::IpNet = "10.40.0.0/24".parse().unwrap();
    let paths_at = |sp: &Speaker| -> Vec<bgp::speaker::control::RouteView> {
        let mut v: Vec<_> = sp
            .routes()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.prefix == prefix && r.peer.is_some())
            .collect();
        v.sort_by_key(|r| r.next_hop);
        v
    };
    let both = wait_for("both paths at s3", T, Duration::from_millis(100), || {
        let v = paths_at(&sp3);
        (v.len() == 2).then_some(v)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", sp3.log_tail(), reflector.log_tail()));
    assert_eq!(
        both.iter().map(|r| r.next_hop).collect::<Vec<_>>(),
        vec![Some(ip("10.0.0.1")), Some(ip("10.0.0.2"))]
    );
    assert!(both.iter().all(|r| r.peer == Some(ip("10.0.0.10"))));
    assert_ne!(both[0].path_id, both[1].path_id, "{both:?}");
    let mut decisions: Vec<&str> = both.iter().map(|r| r.decision.as_str()).collect();
    decisions.sort();
    assert_eq!(decisions, ["best", "multipath"], "{both:?}");

    // BIRD: one kernel route with both next hops.
    let kernel = |ns: &Netns| {
        ns.ip(&["route", "show", "10.40.0.0/24"])
            .unwrap_or_default()
    };
    wait_for(
        "BIRD's multipath kernel route",
        T,
        Duration::from_millis(100),
        || {
            let r = kernel(&bd);
            (r.contains("nexthop via 10.0.0.1 ") && r.contains("nexthop via 10.0.0.2 "))
                .then_some(())
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}\n{}",
            kernel(&bd),
            bird.cmd("show route all").unwrap_or_default()
        )
    });

    // A client without ADD-PATH gets the reflector's best path only: s2 is sent s1's path
    // (lower ORIGINATOR_ID); s1 nothing, as its own path is the best.
    wait_for(
        "s2 learns the best path",
        T,
        Duration::from_millis(100),
        || (paths_at(&sp2).len() == 1).then_some(()),
    )
    .unwrap();
    assert_eq!(paths_at(&sp2)[0].next_hop, Some(ip("10.0.0.1")));
    assert!(paths_at(&sp1).is_empty(), "{:?}", paths_at(&sp1));

    // One announcer goes: only its path is withdrawn, everywhere.
    sp1.terminate().unwrap();
    wait_for("s3 down to one path", T, Duration::from_millis(100), || {
        let v = paths_at(&sp3);
        (v.len() == 1 && v[0].next_hop == Some(ip("10.0.0.2"))).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", paths_at(&sp3)));
    wait_for(
        "BIRD down to one next hop",
        T,
        Duration::from_millis(100),
        || {
            let r = kernel(&bd);
            (r.contains("via 10.0.0.2 ") && !r.contains("10.0.0.1")).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {}", kernel(&bd)));
}

//! Filters changed on a live session (`SpeakerHandle::set_policy`): the export side sends
//! the difference at once, the import side asks the peer to resend (ROUTE-REFRESH) and
//! re-filters; the session is never reset.
//!
//! Two speakers in this process, on loopback addresses only (127.0.0.1 and 127.0.0.2).
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

mod in_process;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bgp::rib::{FilterAction, FilterRule, MatchOperator, RouteFilter};
use bgp::speaker::{start, PeerPolicy, SpeakerHandle};
use in_process::{free_port, learned, peer_config, peers, speaker_config};
use ipnet::IpNet;

async fn wait_learned(h: &SpeakerHandle, want: &[&str]) {
    let want: Vec<IpNet> = want.iter().map(|p| p.parse().unwrap()).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = learned(h).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "learned {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_change_without_resetting_the_session() {
    let a_ip = Ipv4Addr::new(127, 0, 0, 1);
    let b_ip = Ipv4Addr::new(127, 0, 0, 2);
    let (a_port, b_port) = (free_port(a_ip), free_port(b_ip));
    let (a, _ta) = start(
        speaker_config(a_ip, 65001, a_port, &["10.1.0.0/24", "10.2.0.0/24"]),
        None,
    )
    .await
    .unwrap();
    let (b, _tb) = start(speaker_config(b_ip, 65002, b_port, &[]), None)
        .await
        .unwrap();
    let mut to_b = peer_config(b_ip, 65002, Some(b_port));
    to_b.local_address = Some(IpAddr::V4(a_ip));
    a.add_peer(to_b).await.unwrap();
    let mut to_a = peer_config(a_ip, 65001, None);
    to_a.passive = true;
    b.add_peer(to_a).await.unwrap();
    wait_learned(&b, &["10.1.0.0/24", "10.2.0.0/24"]).await;
    let since = peers(&b).await[0].since_secs;

    // B's import filter rejects 10.2.0.0/24: B asks A to resend and drops it.
    let reject = |cidr: &str| RouteFilter {
        v4: vec![FilterRule::new(
            cidr.parse().unwrap(),
            MatchOperator::Equal,
            FilterAction::Reject,
        )],
        v6: vec![],
    };
    b.set_policy(PeerPolicy {
        address: IpAddr::V4(a_ip),
        import: reject("10.2.0.0/24"),
        export: RouteFilter::default(),
    })
    .await
    .unwrap();
    wait_learned(&b, &["10.1.0.0/24"]).await;

    // A's export filter towards B rejects 10.1.0.0/24: withdrawn at once.
    a.set_policy(PeerPolicy {
        address: IpAddr::V4(b_ip),
        import: RouteFilter::default(),
        export: reject("10.1.0.0/24"),
    })
    .await
    .unwrap();
    wait_learned(&b, &[]).await;

    // Both filters lifted: everything comes back.
    a.set_policy(PeerPolicy {
        address: IpAddr::V4(b_ip),
        import: RouteFilter::default(),
        export: RouteFilter::default(),
    })
    .await
    .unwrap();
    b.set_policy(PeerPolicy {
        address: IpAddr::V4(a_ip),
        import: RouteFilter::default(),
        export: RouteFilter::default(),
    })
    .await
    .unwrap();
    wait_learned(&b, &["10.1.0.0/24", "10.2.0.0/24"]).await;

    // The session stayed up the whole time: one Established period.
    let p = &peers(&b).await[0];
    assert_eq!(p.state, "Established");
    assert!(p.since_secs >= since, "session was reset");
    assert!(
        p.last_error.is_none(),
        "unexpected error: {:?}",
        p.last_error
    );
    assert!(b
        .set_policy(PeerPolicy {
            address: "192.0.2.1".parse().unwrap(),
            import: RouteFilter::default(),
            export: RouteFilter::default(),
        })
        .await
        .is_err());
    a.shutdown().await;
    b.shutdown().await;
}

/// Policies from the configuration (`[[policy]]`) apply from the first UPDATE: A's export
/// filter towards B drops one prefix and every prefix longer than /24; B's import filter
/// drops another. B learns exactly what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_policies_filter_from_the_start() {
    let a_ip = Ipv4Addr::new(127, 0, 0, 1);
    let b_ip = Ipv4Addr::new(127, 0, 0, 3);
    let (a_port, b_port) = (free_port(a_ip), free_port(b_ip));
    let config = |id: Ipv4Addr,
                  asn: u32,
                  port: u16,
                  originate: &str,
                  peer: Ipv4Addr,
                  peer_as: u32,
                  peer_port: String,
                  extra: &str,
                  policy: &str| {
        bgp::speaker::config::SpeakerConfig::from_toml(&format!(
            "router_id = \"{id}\"\nlocal_as = {asn}\nlisten = [\"{id}:{port}\"]\nconnect_retry = 1\n\
             max_paths = 1\nselection_deferral_time = 0\n{originate}\
             [[peer]]\naddress = \"{peer}\"\nremote_as = {peer_as}\n{peer_port}{extra}\n\
             [[policy]]\npeer = \"{peer}\"\n{policy}"
        ))
        .unwrap()
    };
    let originate: String = ["10.1.0.0/24", "10.2.0.0/24", "10.3.0.0/25", "10.4.0.0/24"]
        .iter()
        .map(|p| format!("[[originate]]\nprefix = \"{p}\"\n"))
        .collect();
    let (_a, _ta) = start(
        config(
            a_ip,
            65001,
            a_port,
            &originate,
            b_ip,
            65002,
            format!("port = {b_port}\n"),
            &format!("local_address = \"{a_ip}\"\n"),
            "export = [{ action = \"reject\", cidr = \"10.2.0.0/24\", match = \"equal\" }, \
                       { action = \"reject\", prefix_length = { min = 25 } }]\n",
        ),
        None,
    )
    .await
    .unwrap();
    let (b, _tb) = start(
        config(
            b_ip,
            65002,
            b_port,
            "",
            a_ip,
            65001,
            String::new(),
            "passive = true\n",
            "import = [{ action = \"reject\", cidr = \"10.4.0.0/16\", match = \"in\" }]\n",
        ),
        None,
    )
    .await
    .unwrap();
    wait_learned(&b, &["10.1.0.0/24"]).await;
    // And it stays so (nothing more arrives a moment later).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        learned(&b).await,
        vec!["10.1.0.0/24".parse::<IpNet>().unwrap()]
    );
}

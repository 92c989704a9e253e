//! A peer's keepalive interval (Calico BGPPeer `keepaliveTime`) reaches its session: two
//! speakers in this process on loopback addresses (127.0.0.1 and 127.0.0.2).
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

mod in_process;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bgp::speaker::start;
use in_process::{free_port, peer_config, peers, speaker_config};

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_keepalive_is_used_and_capped_at_a_third_of_the_hold_time() {
    let (a_port, b_port) = (free_port(A), free_port(B));
    let (a, _ta) = start(speaker_config(A, 65001, a_port, &[]), None)
        .await
        .unwrap();
    let (b, _tb) = start(speaker_config(B, 65002, b_port, &[]), None)
        .await
        .unwrap();
    let mut towards_b = peer_config(B, 65002, Some(b_port));
    towards_b.keepalive_time = Some(7);
    a.add_peer(towards_b).await.unwrap();
    let mut towards_a = peer_config(A, 65001, Some(a_port));
    // More than a third of the 90 s hold time: capped at 30 (RFC 4271 §10).
    towards_a.keepalive_time = Some(45);
    towards_a.passive = true;
    b.add_peer(towards_a).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (pa, pb) = (peers(&a).await, peers(&b).await);
        if pa[0].state == "Established" && pb[0].state == "Established" {
            assert_eq!(pa[0].hold_time, Some(90));
            assert_eq!(pa[0].keepalive_time, Some(7));
            assert_eq!(pb[0].keepalive_time, Some(30));
            break;
        }
        assert!(Instant::now() < deadline, "no session: {pa:?} {pb:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

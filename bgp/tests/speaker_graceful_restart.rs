//! Graceful Restart (RFC 4724) between two speakers in this process, on loopback addresses
//! only (127.0.0.1 and 127.0.0.2).
//!
//! A restarts (`shutdown_for_restart`: TCP closed, no NOTIFICATION): B keeps A's routes and
//! never tells its FIB to remove them; A comes back with fewer routes, and its End-of-RIB
//! drops the stale one. A restart that never comes back is cut off by the Restart Time A
//! advertised; a shutdown with Cease withdraws at once.
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

mod in_process;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bgp::rib::{BestPathChange, FibRoute};
use bgp::speaker::config::PeerConfig;
use bgp::speaker::control::PeerStatus;
use bgp::speaker::{start, SpeakerHandle};
use in_process::{free_port, learned, peer_config, peers, speaker_config};
use ipnet::IpNet;
use tokio::sync::mpsc;

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

async fn status(h: &SpeakerHandle) -> PeerStatus {
    peers(h).await.into_iter().next().unwrap()
}

fn peer(address: Ipv4Addr, remote_as: u32, port: Option<u16>, restart: Option<u16>) -> PeerConfig {
    let mut p = peer_config(address, remote_as, port);
    p.graceful_restart_time = restart;
    p
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|p| p.parse().unwrap()).collect()
}

/// Polls (bounded: `within`) until B's learned routes are `want`; returns how long it took.
async fn wait_learned(h: &SpeakerHandle, want: &[&str], within: Duration) -> Duration {
    let want = nets(want);
    let start = Instant::now();
    loop {
        let got = learned(h).await;
        if got == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "learned {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_state(h: &SpeakerHandle, established: bool, within: Duration) {
    let start = Instant::now();
    loop {
        let s = status(h).await;
        if (s.state == "Established") == established {
            return;
        }
        assert!(start.elapsed() < within, "peer state {}", s.state);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The prefixes the FIB was told to remove since the last call.
fn removals(rx: &mut mpsc::UnboundedReceiver<Vec<BestPathChange>>) -> Vec<IpNet> {
    let mut out = Vec::new();
    while let Ok(batch) = rx.try_recv() {
        out.extend(
            batch
                .into_iter()
                .filter(|c| c.route == FibRoute::Unreachable)
                .map(|c| c.prefix),
        );
    }
    out
}

/// Speaker A (AS 65001) with a session to B; `restart` is the Restart Time A advertises.
async fn start_a(
    a_port: u16,
    b_port: u16,
    originate: &[&str],
    restart: Option<u16>,
) -> SpeakerHandle {
    let (a, _task) = start(speaker_config(A, 65001, a_port, originate), None)
        .await
        .unwrap();
    let mut to_b = peer(B, 65002, Some(b_port), restart);
    to_b.local_address = Some(IpAddr::V4(A));
    a.add_peer(to_b).await.unwrap();
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarting_peer_keeps_its_routes_until_end_of_rib_or_restart_time() {
    let (a_port, b_port) = (free_port(A), free_port(B));
    let (fib_tx, mut fib) = mpsc::unbounded_channel();
    let (b, _tb) = start(speaker_config(B, 65002, b_port, &[]), Some(fib_tx))
        .await
        .unwrap();
    b.add_peer(peer(A, 65001, Some(a_port), None))
        .await
        .unwrap();
    let long = Duration::from_secs(20);

    // 1. A restarts gracefully and comes back with one route fewer.
    let a = start_a(a_port, b_port, &["10.1.0.0/24", "10.1.1.0/24"], None).await;
    wait_learned(&b, &["10.1.0.0/24", "10.1.1.0/24"], long).await;
    let caps = status(&b).await.capabilities;
    assert!(
        caps.iter().any(|c| c == "graceful-restart(120s)"),
        "A advertises the default Restart Time: {caps:?}"
    );
    removals(&mut fib);
    a.shutdown_for_restart().await;
    wait_state(&b, false, long).await;
    // Down, and the routes stay (stale) for longer than a withdrawal would take.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(learned(&b).await, nets(&["10.1.0.0/24", "10.1.1.0/24"]));
    assert_eq!(removals(&mut fib), Vec::<IpNet>::new());
    let a = start_a(a_port, b_port, &["10.1.0.0/24"], Some(3)).await;
    wait_state(&b, true, long).await;
    wait_learned(&b, &["10.1.0.0/24"], long).await;
    // Only the route A no longer has left the FIB; the one it re-sent never did.
    assert_eq!(removals(&mut fib), nets(&["10.1.1.0/24"]));

    // 2. A restarts (advertising a Restart Time of 3 s) and does not come back: the routes
    // go when the Restart Time runs out, not before.
    a.shutdown_for_restart().await;
    wait_state(&b, false, long).await;
    let down = Instant::now();
    wait_learned(&b, &[], long).await;
    let kept = down.elapsed();
    assert!(
        kept >= Duration::from_millis(2500) && kept < Duration::from_secs(10),
        "stale routes kept for {kept:?}, Restart Time 3 s"
    );
    assert_eq!(removals(&mut fib), nets(&["10.1.0.0/24"]));

    // 3. A shutdown with Cease (a NOTIFICATION) is no restart: withdrawn at once.
    let a = start_a(a_port, b_port, &["10.1.0.0/24"], None).await;
    wait_learned(&b, &["10.1.0.0/24"], long).await;
    a.shutdown().await;
    let took = wait_learned(&b, &[], Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(2), "withdrawal took {took:?}");

    // 4. Graceful Restart off (Restart Time 0): not advertised, so a restart withdraws too.
    let a = start_a(a_port, b_port, &["10.1.0.0/24"], Some(0)).await;
    wait_learned(&b, &["10.1.0.0/24"], long).await;
    let caps = status(&b).await.capabilities;
    assert!(
        !caps.iter().any(|c| c.starts_with("graceful-restart")),
        "{caps:?}"
    );
    a.shutdown_for_restart().await;
    let took = wait_learned(&b, &[], Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(2), "withdrawal took {took:?}");
    b.shutdown().await;
}

/// Starts A restarting (the R bit, RFC 4724 §3) with `deferral` seconds of selection
/// deferral, originating 10.1.0.0/24, with a session to B and, if `silent_peer`, to a
/// peer at 127.0.0.3 that never answers.
async fn start_restarting_a(
    a_port: u16,
    b_port: u16,
    deferral: u64,
    silent_peer: bool,
) -> SpeakerHandle {
    let mut config = speaker_config(A, 65001, a_port, &["10.1.0.0/24"]);
    config.restarting = true;
    config.selection_deferral_time = deferral;
    let (a, _task) = start(config, None).await.unwrap();
    let mut to_b = peer(B, 65002, Some(b_port), None);
    to_b.local_address = Some(IpAddr::V4(A));
    a.add_peer(to_b).await.unwrap();
    if silent_peer {
        let c = Ipv4Addr::new(127, 0, 0, 3);
        let mut to_c = peer(c, 65003, Some(free_port(c)), None);
        to_c.local_address = Some(IpAddr::V4(A));
        a.add_peer(to_c).await.unwrap();
    }
    a
}

/// Speaker B (AS 65002, not restarting) originating 10.2.0.0/24, with a session to A.
async fn start_b_with_route(a_port: u16, b_port: u16) -> SpeakerHandle {
    let (b, _task) = start(speaker_config(B, 65002, b_port, &["10.2.0.0/24"]), None)
        .await
        .unwrap();
    b.add_peer(peer(A, 65001, Some(a_port), None))
        .await
        .unwrap();
    b
}

/// RFC 4724 §4.1: a restarting speaker sends its routes only once every peer it waits for
/// has sent End-of-RIB; B's End-of-RIB alone ends A's deferral at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarting_speaker_advertises_once_every_peer_sent_end_of_rib() {
    let (a_port, b_port) = (free_port(A), free_port(B));
    let b = start_b_with_route(a_port, b_port).await;
    let started = Instant::now();
    let a = start_restarting_a(a_port, b_port, 20, false).await;
    wait_learned(&b, &["10.1.0.0/24"], Duration::from_secs(15)).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "B's End-of-RIB ended the deferral, not the 20 s timer: {:?}",
        started.elapsed()
    );
    assert_eq!(learned(&a).await, nets(&["10.2.0.0/24"]));
}

/// ... and a peer that never comes up holds the deferral until the Selection_Deferral_Timer:
/// B, though Established and done with its End-of-RIB, gets nothing from A before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarting_speaker_waits_for_a_silent_peer_until_the_deferral_timer() {
    let (a_port, b_port) = (free_port(A), free_port(B));
    let b = start_b_with_route(a_port, b_port).await;
    let started = Instant::now();
    let a = start_restarting_a(a_port, b_port, 4, true).await;
    wait_state(&b, true, Duration::from_secs(15)).await;
    // A runs its decision process meanwhile (B's route reaches A's RIB and FIB) ...
    let deadline = Instant::now() + Duration::from_secs(10);
    while learned(&a).await != nets(&["10.2.0.0/24"]) {
        assert!(Instant::now() < deadline, "A never learned B's route");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ... but advertises only when the timer runs out.
    wait_learned(&b, &["10.1.0.0/24"], Duration::from_secs(15)).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(3500) && waited < Duration::from_secs(12),
        "A advertised after {waited:?}, deferral timer 4 s"
    );
}

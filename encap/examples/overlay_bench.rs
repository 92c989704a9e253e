//! Overlay benchmark (not a test): prints figures, asserts nothing.
//!
//! `cargo run --release -p encap --example overlay_bench` (as root; builds network namespaces).
//!
//! 1. Pure data-path costs: longest-prefix lookups in a 1,000-node remote block table, and the
//!    per-packet outbound/inbound checks of the userspace IP-in-IP path.
//! 2. End to end: UDP from a pod on node 1 to a pod on node 2 for two seconds, natively, over
//!    VXLAN (kernel) and over IP-in-IP (the userspace fallback on kernels without `ipip`), with
//!    small and large datagrams; prints datagrams/s and Mbit/s received.

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Cluster, Subnet};
use encap::ipip::packet::{self, build_ipv4, IPPROTO_IPIP};
use encap::ipip::RemoteBlockTable;
use encap::EncapMode::{Always, Never};
use encap::{PoolEncap, RemoteNode};

fn pure_costs() {
    let mut nodes: Vec<RemoteNode> = (0..1000u32)
        .map(|n| RemoteNode {
            node_ip: Ipv4Addr::from(0xc0a8_0000 + n + 1),
            blocks: vec![format!(
                "10.{}.{}.{}/26",
                200 + n / 1024,
                (n / 4) % 256,
                (n % 4) * 64
            )
            .parse()
            .unwrap()],
        })
        .collect();
    // A hundred borrowed single addresses, as IPAM produces when blocks run out.
    for i in 0..100u32 {
        nodes[i as usize]
            .blocks
            .push(Ipv4Addr::from(0x0ac8_0000 + i * 97).into());
    }
    let table = RemoteBlockTable::new(&nodes);
    let n = 5_000_000u32;
    let mut x: u32 = 12345;
    let start = Instant::now();
    let mut hits = 0u32;
    for _ in 0..n {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let dst = Ipv4Addr::from(0x0ac8_0000 | (x >> 16));
        if black_box(table.lookup(dst)).is_some() {
            hits += 1;
        }
    }
    let el = start.elapsed();
    println!(
        "lpm lookup, 1000 nodes / 1100 prefixes: {:.1} ns/lookup ({:.1} M lookups/s, {hits} hits)",
        el.as_nanos() as f64 / f64::from(n),
        f64::from(n) / el.as_secs_f64() / 1e6
    );

    let inner = build_ipv4(
        Ipv4Addr::new(10, 1, 0, 5),
        Ipv4Addr::new(10, 200, 0, 9),
        17,
        &[0u8; 1372],
    );
    let outer = build_ipv4(
        Ipv4Addr::from(0xc0a8_0001),
        Ipv4Addr::new(192, 168, 255, 1),
        IPPROTO_IPIP,
        &inner,
    );
    let start = Instant::now();
    for _ in 0..n {
        black_box(packet::outbound(black_box(&inner), &table).unwrap());
        black_box(packet::inbound(black_box(&outer), &table).unwrap());
    }
    let el = start.elapsed();
    println!(
        "ipip packet handling (outbound + inbound, 1400-byte packet): {:.1} ns/packet pair",
        el.as_nanos() as f64 / f64::from(n)
    );
}

/// Sends UDP datagrams of `payload` bytes from pod 1 to pod 2 for `secs`; returns
/// (sent, received datagrams, received bytes, elapsed).
fn udp_flood(c: &Cluster, payload: usize, secs: u64) -> (u64, u64, u64, Duration) {
    let dst = SocketAddrV4::new(c.nodes[1].pod_ip(), 5001);
    let rx = encap::netns::run_in(&c.nodes[1].pod.path(), || UdpSocket::bind("0.0.0.0:5001"))
        .unwrap()
        .unwrap();
    let rx = socket2::Socket::from(rx);
    rx.set_recv_buffer_size(8 << 20).unwrap();
    let rx: UdpSocket = rx.into();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let tx = encap::netns::run_in(&c.nodes[0].pod.path(), || UdpSocket::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let receiver = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            let (mut pkts, mut bytes) = (0u64, 0u64);
            loop {
                match rx.recv(&mut buf) {
                    Ok(n) => {
                        pkts += 1;
                        bytes += n as u64;
                    }
                    Err(_) if done.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
            }
            (pkts, bytes)
        })
    };
    let buf = vec![0x5au8; payload];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        for _ in 0..64 {
            if tx.send_to(&buf, dst).is_ok() {
                sent += 1;
            }
        }
    }
    let elapsed = start.elapsed();
    done.store(true, Ordering::Relaxed);
    let (pkts, bytes) = receiver.join().unwrap();
    (sent, pkts, bytes, elapsed)
}

async fn end_to_end() {
    lab::require(&["ip", "sysctl"]);
    for (name, pool) in [
        (
            "native (Never)",
            PoolEncap {
                ipip: Never,
                vxlan: Never,
            },
        ),
        (
            "VXLAN Always (kernel)",
            PoolEncap {
                ipip: Never,
                vxlan: Always,
            },
        ),
        (
            "IP-in-IP Always",
            PoolEncap {
                ipip: Always,
                vxlan: Never,
            },
        ),
    ] {
        let mut c = Cluster::new(&[Subnet::One, Subnet::One]);
        c.program(0, pool).await;
        c.program(1, pool).await;
        c.assert_pods_reach(0, 1);
        let path = match c.nodes[0].ipip() {
            Some(dp) if dp.is_userspace() => " [userspace TUN fallback]",
            Some(_) => " [kernel ipip]",
            None => "",
        };
        for payload in [64usize, 1372] {
            let (sent, got, bytes, el) = udp_flood(&c, payload, 2);
            let secs = el.as_secs_f64();
            println!(
                "{name}{path}, UDP payload {payload:>4} B: sent {:>8.0}/s, received {:>8.0}/s \
                 ({:.0}% delivered), {:>7.1} Mbit/s",
                sent as f64 / secs,
                got as f64 / secs,
                100.0 * got as f64 / sent.max(1) as f64,
                bytes as f64 * 8.0 / secs / 1e6
            );
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    pure_costs();
    end_to_end().await;
}

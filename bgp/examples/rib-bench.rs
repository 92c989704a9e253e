//! RIB throughput benchmark (not a test): one eBGP peer announces 1,000,000 IPv4 /24s over
//! 10,000 distinct AS paths; the RIB runs import, the decision process and export to one
//! other established eBGP peer. Prints wall time and peak RSS (VmHWM).
//!
//! `cargo run --release -p bgp --example rib-bench [prefixes] [paths] [export-peers]`
//! (defaults 1000000, 10000, 1; more export peers model a node-to-node mesh).
//!
//! The input is prepared (untimed) as wire UPDATEs, packed by the codec: one attribute set
//! per UPDATE, so a set's 100 prefixes arrive in one 4096-octet message. The timed part is
//! what the speaker does per message: decode, RIB (import, decision, export), and encoding
//! the outputs into wire UPDATEs with the codec's batch packer — everything but the socket.
//! Every output is counted and dropped, as a driver would after writing it.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use bgp::packet::{
    encode_updates, AsPath, DecodeContext, Family, Message, NextHop, Origin, PathAttributes,
};
use bgp::rib::{PeerConfig, PeerSession, Rib, RibConfig};
use ipnet::{IpNet, Ipv4Net};

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time this process's main thread has run, in nanoseconds (first field of
/// /proc/self/schedstat): the machine may be shared, so wall time alone misleads.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let prefixes: u32 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let paths: u32 = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000)
        .max(1);
    let export_peers: u32 = args
        .get(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1)
        .clamp(1, 250);
    let rss_start = vm_hwm_kib();

    let local_as = 64512;
    let mut rib = Rib::new(RibConfig::new(local_as, Ipv4Addr::new(192, 0, 2, 1)));
    let upstream = rib.add_peer(PeerConfig::new(
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
        65001,
        local_as,
    ));
    let session = |local: Ipv4Addr, router_id: Ipv4Addr| PeerSession {
        router_id,
        local_ipv4: Some(local),
        local_ipv6: None,
        families: vec![Family::Ipv4Unicast],
        shared_subnets: Vec::new(),
        add_path_send: Vec::new(),
    };
    rib.peer_up(
        upstream,
        session(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)),
    )
    .map_err(|e| e.to_string())
    .unwrap_or_default();
    for i in 0..export_peers {
        let addr = Ipv4Addr::new(198, 51, 100, 2 + i as u8);
        let downstream = rib.add_peer(PeerConfig::new(IpAddr::V4(addr), 65002 + i, local_as));
        rib.peer_up(downstream, session(Ipv4Addr::new(198, 51, 100, 1), addr))
            .map_err(|e| e.to_string())
            .unwrap_or_default();
    }

    let per_path = prefixes.div_ceil(paths);
    let mut announced = 0u64;
    let mut fib_changes = 0u64;
    let mut out_groups = 0u64;
    let mut errors = 0u64;
    let ctx = DecodeContext {
        four_octet_as: true,
        ..DecodeContext::default()
    };
    let mut wire = Vec::new();
    let mut wire_bytes = 0u64;
    let mut wire_messages = 0u64;
    // The input as it arrives from the upstream: wire UPDATEs, one attribute set each,
    // packed by the codec (not timed).
    let mut input: Vec<bytes::Bytes> = Vec::new();
    let mut next_prefix = 0u32;
    for p in 0..paths {
        let attrs = PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::from_sequence(vec![
                65001,
                3000 + p % 100,
                100_000 + p,
            ])),
            med: Some(p % 7),
            ..PathAttributes::default()
        };
        let mut nlri = Vec::with_capacity(per_path as usize);
        for _ in 0..per_path {
            if next_prefix >= prefixes {
                break;
            }
            // 1.0.0.0/24, 1.0.1.0/24, ...
            let addr = Ipv4Addr::from((1u32 << 24) + (next_prefix << 8));
            if let Ok(net) = Ipv4Net::new(addr, 24) {
                nlri.push(IpNet::V4(net));
            }
            next_prefix += 1;
        }
        let next_hop = NextHop::from(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)));
        if encode_updates(
            &attrs,
            Family::Ipv4Unicast,
            next_hop,
            &nlri,
            &ctx,
            &mut input,
        )
        .is_err()
        {
            errors += 1;
        }
    }
    let input_bytes: usize = input.iter().map(|b| b.len()).sum();

    let start = Instant::now();
    let cpu_start = cpu_ns();
    for bytes in &input {
        let update = match Message::decode(bytes, &ctx) {
            Ok(Message::Update(u)) => u,
            _ => {
                errors += 1;
                continue;
            }
        };
        match rib.update(upstream, &update) {
            Ok(out) => {
                // Encode what a driver would send (4096-octet UPDATEs), then drop it.
                for u in &out.updates {
                    if u.encode(&ctx, &mut wire).is_err() {
                        errors += 1;
                    }
                }
                wire_bytes += wire.iter().map(|b| b.len() as u64).sum::<u64>();
                wire_messages += wire.len() as u64;
                wire.clear();
                announced += out
                    .updates
                    .iter()
                    .map(|u| u.prefixes.len() as u64)
                    .sum::<u64>();
                out_groups += out.updates.len() as u64;
                fib_changes += out.best_changes.len() as u64;
            }
            Err(_) => errors += 1,
        }
    }
    let load = start.elapsed();
    let load_cpu = cpu_ns().saturating_sub(cpu_start);
    let rss_loaded = vm_hwm_kib();

    let t = Instant::now();
    let cpu_down = cpu_ns();
    let withdrawn = rib
        .peer_down(upstream)
        .map(|o| o.withdraws.iter().map(|w| w.prefixes.len()).sum::<usize>())
        .unwrap_or(0);
    let down = t.elapsed();
    let down_cpu = cpu_ns().saturating_sub(cpu_down);

    println!("rib-bench: {prefixes} IPv4 /24 prefixes over {paths} AS paths, eBGP in -> decision -> eBGP out to {export_peers} peer(s)");
    println!(
        "  load: {:.3} s wall, {:.3} s CPU ({:.0} ns CPU/prefix), {announced} prefixes exported in {out_groups} UPDATE groups, {fib_changes} FIB changes, {errors} errors",
        load.as_secs_f64(),
        load_cpu as f64 / 1e9,
        load_cpu as f64 / f64::from(prefixes.max(1))
    );
    println!(
        "  wire: decoded {} UPDATE messages ({:.1} MiB) in, encoded {wire_messages} ({:.1} MiB) out",
        input.len(),
        input_bytes as f64 / (1024.0 * 1024.0),
        wire_bytes as f64 / (1024.0 * 1024.0)
    );
    println!(
        "  peak RSS (VmHWM): {:.1} MiB (at start {:.1} MiB)",
        rss_loaded as f64 / 1024.0,
        rss_start as f64 / 1024.0
    );
    println!(
        "  peer down: {:.3} s wall, {:.3} s CPU, {withdrawn} prefixes withdrawn downstream",
        down.as_secs_f64(),
        down_cpu as f64 / 1e9
    );
}

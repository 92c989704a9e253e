//! The speaker lab: a small cluster of standalone speakers in network namespaces, Calico
//! style, without routerd (the product lab is `agent/examples/lab.rs`, `scripts/lab.sh`).
//!
//! `cargo run --release -p bgp --example speaker-lab -- [--nodes N] [--keep]` builds, on one
//! L2 segment:
//! - N nodes (default 3), AS 64512, in a full iBGP mesh (the node with the lower address
//!   connects, the other is passive, as Calico's mesh does), each originating its /24 pod
//!   block 10.244.<i>.0/24;
//! - a top-of-rack router running BIRD 2, AS 65000, peering eBGP with every node and
//!   originating a default route.
//!
//! It waits for every session, checks that every node learned every other block and the
//! default route and that the ToR reaches each block through the node that owns it, prints
//! each node's sessions and routes and the ToR's table, and tears everything down (with
//! `--keep`, only after Ctrl-C). Needs root and the packages that
//! `scripts/setup.sh` installs. Only namespaces it creates are touched.

#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use lab::bird::Bird;
use lab::{lan, require, Netns};
use support::{scratch, Speaker};

fn main() -> Result<()> {
    let mut nodes = 3usize;
    let mut keep = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--nodes" => {
                nodes = args
                    .next()
                    .context("--nodes needs a number")?
                    .parse()
                    .context("--nodes needs a number")?
            }
            "--keep" => keep = true,
            other => bail!("unknown argument {other}; usage: lab [--nodes N] [--keep]"),
        }
    }
    if !(2..=50).contains(&nodes) {
        bail!("--nodes must be 2..=50");
    }
    require(&["ip", "bird", "birdc"]);
    let dir = scratch("lab");
    let t = Duration::from_secs(60);

    println!("lab: building {nodes} nodes and a ToR in network namespaces");
    let tor_ns = Netns::new("tor")?;
    let node_ns: Vec<Netns> = (1..=nodes)
        .map(|i| Netns::new(&format!("node{i}")))
        .collect::<Result<_>>()?;
    let addr = |i: usize| format!("10.0.0.{}", 10 + i);
    let cidrs: Vec<String> = (1..=nodes).map(|i| format!("{}/24", addr(i))).collect();
    let mut members: Vec<(&Netns, &str, Vec<&str>)> = vec![(&tor_ns, "eth0", vec!["10.0.0.1/24"])];
    for (i, ns) in node_ns.iter().enumerate() {
        members.push((ns, "eth0", vec![cidrs[i].as_str()]));
    }
    let members: Vec<(&Netns, &str, &[&str])> = members
        .iter()
        .map(|(n, i, a)| (*n, *i, a.as_slice()))
        .collect();
    let _switch = lan("lab", &members)?;

    let mut tor_conf = String::from(
        "router id 10.0.0.1;\nprotocol device {}\nprotocol direct { ipv4; }\n\
         protocol static defgw { ipv4; route 0.0.0.0/0 blackhole; }\n\
         template bgp node { local 10.0.0.1 as 65000; hold time 9; connect retry time 1;\n\
           ipv4 { import all; export all; }; }\n",
    );
    for i in 1..=nodes {
        tor_conf += &format!(
            "protocol bgp node{i} from node {{ neighbor {} as 64512; }}\n",
            addr(i)
        );
    }
    let tor = Bird::start(&tor_ns, &dir.join("tor"), &tor_conf)?;

    let mut speakers = Vec::new();
    for (i, ns) in (1..=nodes).zip(&node_ns) {
        let mut conf = format!(
            "router_id = \"{}\"\nlocal_as = 64512\nhold_time = 9\nconnect_retry = 1\n\
             [[originate]]\nprefix = \"10.244.{i}.0/24\"\n\
             [[peer]]\naddress = \"10.0.0.1\"\nremote_as = 65000\n",
            addr(i)
        );
        for j in (1..=nodes).filter(|&j| j != i) {
            // Mesh: the node with the higher address waits for the lower one to connect.
            conf += &format!(
                "[[peer]]\naddress = \"{}\"\nremote_as = 64512\npassive = {}\n",
                addr(j),
                j < i
            );
        }
        speakers.push(Speaker::start(ns, &dir.join(format!("node{i}")), &conf)?);
    }

    for (i, sp) in (1..=nodes).zip(&speakers) {
        for j in (0..=nodes).filter(|&j| j != i) {
            let peer: IpAddr = if j == 0 {
                "10.0.0.1".parse()?
            } else {
                addr(j).parse()?
            };
            sp.wait_established(peer, t)
                .with_context(|| format!("node{i}: session to {peer}"))?;
        }
    }
    for (i, sp) in (1..=nodes).zip(&speakers) {
        for j in (1..=nodes).filter(|&j| j != i) {
            sp.wait_route(&format!("10.244.{j}.0/24"), t, Some(&|r| r.peer.is_some()))?;
        }
        sp.wait_route("0.0.0.0/0", t, Some(&|r| r.peer.is_some()))?;
    }
    // Each node re-advertises its mesh routes to the ToR, but with the owner's address as
    // next hop (third-party next hop on the shared segment, RFC 4271 §5.1.3), so the ToR
    // forwards straight to the node that owns a block whichever path it picks.
    for j in 1..=nodes {
        let prefix = format!("10.244.{j}.0/24");
        let paths: Vec<_> = tor
            .routes()?
            .into_iter()
            .filter(|r| r.prefix == prefix)
            .collect();
        let owner = addr(j);
        if paths.is_empty()
            || paths
                .iter()
                .any(|r| r.attr("BGP.next_hop") != Some(owner.as_str()))
        {
            bail!("ToR paths for {prefix} should all use next hop {owner}: {paths:?}");
        }
    }
    println!("lab: all sessions Established, every node has every block\n");

    for (i, sp) in (1..=nodes).zip(&speakers) {
        println!("node{i} ({}) sessions:", addr(i));
        println!(
            "  {:<12} {:<8} {:<12} {:>8} {:>9} {:>11}",
            "PEER", "AS", "STATE", "RECEIVED", "ACCEPTED", "ADVERTISED"
        );
        for p in sp.peers()? {
            println!(
                "  {:<12} {:<8} {:<12} {:>8} {:>9} {:>11}",
                p.address.to_string(),
                p.remote_as,
                p.state,
                p.prefixes_received,
                p.prefixes_accepted,
                p.prefixes_advertised
            );
        }
        println!("node{i} routes:");
        for r in sp.routes()? {
            let from = r
                .peer
                .map(|p| p.to_string())
                .unwrap_or_else(|| "local".into());
            let path: Vec<String> = r.as_path.iter().map(u32::to_string).collect();
            println!(
                "  {} {:<16} from {:<12} next hop {:<12} as-path [{}]",
                if r.best { "*" } else { " " },
                r.prefix.to_string(),
                from,
                r.next_hop
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                path.join(" ")
            );
        }
        println!();
    }
    println!("ToR (BIRD, AS 65000) table:\n{}", tor.cmd("show route")?);

    if keep {
        println!(
            "lab: running; namespaces: {} and node1..node{nodes}; Ctrl-C to tear down",
            tor_ns.name()
        );
        let (tx, rx) = std::sync::mpsc::channel();
        ctrlc_wait(tx);
        let _ = rx.recv();
    }
    println!("lab: tearing down");
    Ok(())
}

/// Blocks SIGINT/SIGTERM delivery into a channel (no extra crate: a thread waiting on
/// the signals with nix).
fn ctrlc_wait(tx: std::sync::mpsc::Sender<()>) {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    let _ = set.thread_block();
    std::thread::spawn(move || {
        let _ = set.wait();
        let _ = tx.send(());
    });
}

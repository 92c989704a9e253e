//! The routes each node's kernel must hold (our protocol's, exactly), from the shape and what
//! the cluster assigned (pods, blocks, VXLAN tunnel addresses); and `ip route` output
//! reduced to the same canonical lines, so the two compare as sets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::shape::{Encap, Shape, Topology};

/// What the cluster assigned, read back from the datastore.
#[derive(Debug, Clone, Default)]
pub struct Assigned {
    /// Per node (1-based): its pods' (address, host-side interface).
    pub pods: BTreeMap<usize, Vec<(IpAddr, String)>>,
    /// Per node: its VXLAN tunnel addresses (IPv4, IPv6).
    pub vteps: BTreeMap<usize, (Option<IpAddr>, Option<IpAddr>)>,
}

impl Assigned {
    /// The blocks of node `n`: those of its pods' addresses (one pod per node and family,
    /// and the tunnel address comes from the same block).
    pub fn blocks(&self, n: usize) -> BTreeSet<IpNet> {
        self.pods
            .get(&n)
            .into_iter()
            .flatten()
            .map(|(ip, _)| block_of(*ip))
            .collect()
    }
}

pub fn block_of(ip: IpAddr) -> IpNet {
    let len = if ip.is_ipv4() {
        crate::shape::BLOCK_V4
    } else {
        crate::shape::BLOCK_V6
    };
    IpNet::new(ip, len)
        .map(|n| n.trunc())
        .unwrap_or(IpNet::from(ip))
}

/// The canonical lines node `n`'s table of our protocol must hold, both families.
pub fn expected_routes(shape: &Shape, n: usize, assigned: &Assigned) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for block in assigned.blocks(n) {
        out.insert(format!("blackhole {block}"));
    }
    for (ip, dev) in assigned.pods.get(&n).into_iter().flatten() {
        out.insert(format!("{} dev {dev}", IpNet::from(*ip)));
    }
    for o in (1..=shape.nodes).filter(|&o| o != n) {
        for block in assigned.blocks(o) {
            let v4 = block.addr().is_ipv4();
            let owner: IpAddr = if v4 {
                shape.node_ip(o).into()
            } else {
                shape.node_ip6(o).into()
            };
            let line = if shape.encapsulated(n, o) {
                match shape.encap {
                    // IPv6 blocks of an IP-in-IP shape go through VXLAN (see
                    // `Shape::vxlan_mode_v6`).
                    Encap::Ipip if v4 => format!("{block} via {owner} dev tunl0 onlink"),
                    _ => {
                        let (vtep4, vtep6) = assigned.vteps.get(&o).copied().unwrap_or_default();
                        let (vtep, dev) = if v4 {
                            (vtep4, "vxlan.calico")
                        } else {
                            (vtep6, "vxlan-v6.calico")
                        };
                        match vtep {
                            Some(vtep) => format!("{block} via {vtep} dev {dev} onlink"),
                            None => format!("{block} (node-{o} has published no VTEP)"),
                        }
                    }
                }
            } else {
                // Native: through the owner on the same segment, else through the ToR,
                // which advertises itself for another rack's block (and for every block on
                // a multihop session, where no segment is shared) unless it keeps the
                // owner's next hop for an encapsulating pool.
                let via_tor = shape.topology.has_tor()
                    && shape.encap == Encap::None
                    && (shape.topology == Topology::Tor || shape.rack_of(n) != shape.rack_of(o));
                let hop: IpAddr = match (via_tor, v4) {
                    (false, _) => owner,
                    (true, true) => Shape::gateway(shape.rack_of(n)).into(),
                    (true, false) => Shape::gateway6(shape.rack_of(n)).into(),
                };
                format!("{block} via {hop} dev eth0")
            };
            out.insert(line);
        }
    }
    out
}

/// `ip route show` / `ip -6 route show` output as canonical lines: `[blackhole ]<net>[ via
/// <gw>][ dev <dev>][ onlink]`, whatever else the kernel prints (proto, metric, pref,
/// scope, nhid).
pub fn canonical_routes(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    // Multipath routes continue on indented `nexthop` lines.
    let mut joined: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.starts_with(char::is_whitespace) {
            if let Some(last) = joined.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else if !line.trim().is_empty() {
            joined.push(line.to_string());
        }
    }
    for line in joined {
        let mut words = line.split_whitespace().peekable();
        let mut kind = "";
        if let Some(w) = words.peek() {
            if ["blackhole", "unreachable", "prohibit"].contains(w) {
                kind = w;
                words.next();
            }
        }
        let Some(dest) = words.next() else { continue };
        let dest = match dest.parse::<IpNet>() {
            Ok(net) => net.to_string(),
            Err(_) => match dest.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip).to_string(),
                Err(_) => dest.to_string(),
            },
        };
        let (mut via, mut dev, mut onlink, mut nexthops) = (Vec::new(), None, false, 0);
        while let Some(w) = words.next() {
            match w {
                "via" => {
                    let mut gw = words.next().unwrap_or_default();
                    if gw == "inet" || gw == "inet6" {
                        gw = words.next().unwrap_or_default();
                    }
                    via.push(gw.to_string());
                }
                "dev" => dev = words.next().map(str::to_string),
                "onlink" => onlink = true,
                "nexthop" => nexthops += 1,
                _ => {}
            }
        }
        let mut canon = String::new();
        if !kind.is_empty() {
            canon = format!("{kind} {dest}");
        } else {
            canon += &dest;
            for gw in &via {
                canon += &format!(" via {gw}");
            }
            if nexthops == 0 {
                if let Some(dev) = dev {
                    canon += &format!(" dev {dev}");
                }
            }
            if onlink {
                canon += " onlink";
            }
        }
        out.insert(canon);
    }
    out
}

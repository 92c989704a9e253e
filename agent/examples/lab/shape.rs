//! The shapes of cluster the lab builds, as an operator would describe them, and what each
//! one implies: addresses, pool modes, manifests, the ToR's BIRD configuration, the sessions
//! every node must have and which pod pairs are encapsulated. Pure: the lab's builder and
//! its checks both read their answers from here, so what is built and what is expected
//! cannot drift apart.
//!
//! The underlay is one or two racks, each an L2 segment `10.0.<rack>.0/24` (and
//! `fd00:0:<rack>::/64` with `--ipv6`), joined by one router namespace at `.254` (`::fe`) of
//! each: the nodes' default gateway. Node `i` (1-based) is `10.0.<rack>.<i>`; the first half
//! of the nodes is rack 1. In the `tor` and `per-node` shapes the router also runs BIRD (the
//! racks' top-of-rack, collapsed into one device with a leg in each rack), AS 65000:
//! - `tor`: one global BGPPeer towards the router's loopback `10.0.0.254` (a multihop
//!   session from every node, as Calico's BIRD makes every session);
//! - `per-node`: one BGPPeer per rack, `nodeSelector: rack == 'rackN'`, towards that rack's
//!   gateway address (a directly connected session).
//!
//! Both have the mesh off, so every node's routes come from the ToR; the nodes share AS
//! 64512 behind an eBGP ToR, so the BGPPeers allow our AS once in a path
//! (`numAllowedLocalASNumbers: 1`, what Calico operators set for this design). With an
//! encapsulation the ToR keeps the owner node's next hop (`next hop keep`) so that the
//! nodes tunnel to the owner, as they do in the mesh; without one it advertises itself for
//! other racks' blocks (BIRD's eBGP default), and forwards them natively.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Result};

/// How the nodes learn each other's blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// The node-to-node mesh (Calico's default).
    Mesh,
    /// Mesh off; two nodes carry `routeReflectorClusterID`, every other node their client.
    Reflectors,
    /// Mesh off; a global BGPPeer to the ToR.
    Tor,
    /// Mesh off; each rack's nodes peer with their own rack's ToR address.
    PerNode,
}

impl Topology {
    pub fn parse(s: &str) -> Result<Topology> {
        Ok(match s {
            "mesh" => Topology::Mesh,
            "reflectors" => Topology::Reflectors,
            "tor" => Topology::Tor,
            "per-node" => Topology::PerNode,
            other => bail!("--topology takes mesh, reflectors, tor or per-node, not {other:?}"),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Topology::Mesh => "mesh",
            Topology::Reflectors => "reflectors",
            Topology::Tor => "tor",
            Topology::PerNode => "per-node",
        }
    }

    /// Whether the router runs BIRD and the nodes peer with it.
    pub fn has_tor(self) -> bool {
        matches!(self, Topology::Tor | Topology::PerNode)
    }
}

/// The IPPool's encapsulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encap {
    None,
    Ipip,
    Vxlan,
}

impl Encap {
    pub fn parse(s: &str) -> Result<Encap> {
        Ok(match s {
            "none" => Encap::None,
            "ipip" => Encap::Ipip,
            "vxlan" => Encap::Vxlan,
            other => bail!("--encap takes none, ipip or vxlan, not {other:?}"),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Encap::None => "none",
            Encap::Ipip => "ipip",
            Encap::Vxlan => "vxlan",
        }
    }
}

/// The IPv4 pod pool and the IPv6 one (`--ipv6`).
pub const POOL_V4: &str = "10.244.0.0/16";
pub const POOL_V6: &str = "fd00:244::/48";
/// Block sizes: Calico's defaults are /26 and /122; /24 and /120 keep the lab's tables short
/// and readable, one block per node.
pub const BLOCK_V4: u8 = 24;
pub const BLOCK_V6: u8 = 120;
/// The ToR's AS and loopback (the `tor` shape's peer address).
pub const TOR_AS: u32 = 65000;
pub const TOR_LOOPBACK: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);
pub const TOR_LOOPBACK6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0xfe);
/// The cluster ID the reflectors share.
pub const CLUSTER_ID: &str = "244.0.0.1";

/// One lab cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub topology: Topology,
    pub encap: Encap,
    pub cross_subnet: bool,
    pub ipv6: bool,
    pub racks: u8,
    pub nodes: usize,
}

impl Shape {
    /// Refuses the shapes that cannot work, saying why, instead of building a cluster whose
    /// pods cannot reach each other.
    pub fn validate(&self) -> Result<()> {
        if !(2..=50).contains(&self.nodes) {
            bail!("--nodes must be 2..=50");
        }
        if !(1..=2).contains(&self.racks) {
            bail!("--racks must be 1 or 2");
        }
        if self.cross_subnet && self.encap == Encap::None {
            bail!("--crosssubnet needs --encap ipip or vxlan (it says when to encapsulate)");
        }
        if self.encap == Encap::None && self.racks == 2 && !self.topology.has_tor() {
            bail!(
                "--encap none with --topology {} across two racks: the router between them \
                 learns no pod routes in this shape, so pods of different racks cannot reach \
                 each other natively (as with Calico); use an encapsulation, --topology tor or \
                 per-node, or --racks 1",
                self.topology.as_str()
            );
        }
        Ok(())
    }

    /// A one-line description.
    pub fn describe(&self) -> String {
        format!(
            "--topology {} --encap {}{}{} --racks {} --nodes {}",
            self.topology.as_str(),
            self.encap.as_str(),
            if self.cross_subnet {
                " --crosssubnet"
            } else {
                ""
            },
            if self.ipv6 { " --ipv6" } else { "" },
            self.racks,
            self.nodes
        )
    }

    /// The rack of node `i` (1-based).
    pub fn rack_of(&self, i: usize) -> u8 {
        if self.racks == 1 || i <= self.nodes.div_ceil(2) {
            1
        } else {
            2
        }
    }

    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, self.rack_of(i), i as u8)
    }

    pub fn node_ip6(&self, i: usize) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0, self.rack_of(i).into(), 0, 0, 0, 0, i as u16)
    }

    pub fn gateway(rack: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, rack, 254)
    }

    pub fn gateway6(rack: u8) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0, rack.into(), 0, 0, 0, 0, 0xfe)
    }

    /// The nodes (1-based) that are route reflectors: the first of each rack.
    pub fn reflectors(&self) -> Vec<usize> {
        let mut out = vec![1];
        let second = (1..=self.nodes)
            .find(|&i| self.rack_of(i) == 2)
            .unwrap_or(2);
        out.push(second);
        out
    }

    /// The ipipMode and vxlanMode of the IPv4 pool.
    pub fn modes_v4(&self) -> (&'static str, &'static str) {
        let mode = if self.cross_subnet {
            "CrossSubnet"
        } else {
            "Always"
        };
        match self.encap {
            Encap::None => ("Never", "Never"),
            Encap::Ipip => (mode, "Never"),
            Encap::Vxlan => ("Never", mode),
        }
    }

    /// The vxlanMode of the IPv6 pool. IP-in-IP carries IPv4 only (RFC 2003) and Calico
    /// refuses ipipMode on IPv6 pools, so with `--encap ipip` the IPv6 pool uses VXLAN in
    /// the same mode (IPv4 through `tunl0`, IPv6 through `vxlan-v6.calico`).
    pub fn vxlan_mode_v6(&self) -> &'static str {
        match self.modes_v4() {
            ("Never", vxlan) => vxlan,
            (ipip, _) => ipip,
        }
    }

    /// Whether traffic between pods of nodes `a` and `b` is encapsulated on the underlay.
    pub fn encapsulated(&self, a: usize, b: usize) -> bool {
        self.encap != Encap::None && (!self.cross_subnet || self.rack_of(a) != self.rack_of(b))
    }

    /// The manifests created before the daemons start: the pools and the default
    /// BGPConfiguration.
    pub fn base_manifests(&self) -> String {
        let (ipip, vxlan) = self.modes_v4();
        let mut out = format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: default-ipv4-ippool\n\
             spec:\n  cidr: {POOL_V4}\n  blockSize: {BLOCK_V4}\n  ipipMode: {ipip}\n  vxlanMode: {vxlan}\n  natOutgoing: true\n"
        );
        if self.ipv6 {
            let _ = write!(
                out,
                "---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: default-ipv6-ippool\n\
                 spec:\n  cidr: {POOL_V6}\n  blockSize: {BLOCK_V6}\n  vxlanMode: {}\n  natOutgoing: false\n",
                self.vxlan_mode_v6()
            );
        }
        let _ = write!(
            out,
            "---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\n\
             spec:\n  nodeToNodeMeshEnabled: {}\n  asNumber: 64512\n",
            self.topology == Topology::Mesh
        );
        out
    }

    /// The BGPPeers of the ToR shapes (none for the mesh and the reflectors).
    pub fn peer_manifests(&self) -> String {
        let peer = |name: &str, selector: Option<String>, ip: IpAddr| {
            let selector = selector
                .map(|s| format!("  nodeSelector: {s}\n"))
                .unwrap_or_default();
            format!(
                "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: {name}\n\
                 spec:\n{selector}  peerIP: {ip}\n  asNumber: {TOR_AS}\n  numAllowedLocalASNumbers: 1\n"
            )
        };
        let mut out = String::new();
        match self.topology {
            Topology::Mesh | Topology::Reflectors => {}
            Topology::Tor => {
                out += &peer("tor", None, TOR_LOOPBACK.into());
                if self.ipv6 {
                    out += &peer("tor-v6", None, TOR_LOOPBACK6.into());
                }
            }
            Topology::PerNode => {
                for rack in 1..=self.racks {
                    let selector = Some(format!("rack == 'rack{rack}'"));
                    out += &peer(
                        &format!("rack{rack}-tor"),
                        selector.clone(),
                        Self::gateway(rack).into(),
                    );
                    if self.ipv6 {
                        out += &peer(
                            &format!("rack{rack}-tor-v6"),
                            selector,
                            Self::gateway6(rack).into(),
                        );
                    }
                }
            }
        }
        out
    }

    /// The ToR's BIRD configuration (the ToR shapes only).
    pub fn bird_config(&self) -> Option<String> {
        if !self.topology.has_tor() {
            return None;
        }
        let keep = if self.encap == Encap::None {
            ""
        } else {
            " next hop keep;"
        };
        let mut conf = format!(
            "router id {TOR_LOOPBACK};\nprotocol device {{}}\n\
             # Connected subnets, to resolve the multihop sessions' next hops.\n\
             protocol direct {{ ipv4;{} }}\n\
             protocol kernel {{ ipv4 {{ export where source = RTS_BGP; }}; merge paths on; }}\n",
            if self.ipv6 { " ipv6;" } else { "" }
        );
        if self.ipv6 {
            conf +=
                "protocol kernel { ipv6 { export where source = RTS_BGP; }; merge paths on; }\n";
        }
        conf += "template bgp node { hold time 9; connect retry time 1; graceful restart on; }\n";
        for i in 1..=self.nodes {
            let rack = self.rack_of(i);
            let (local, local6, multihop) = match self.topology {
                Topology::Tor => (
                    IpAddr::from(TOR_LOOPBACK),
                    IpAddr::from(TOR_LOOPBACK6),
                    " multihop;",
                ),
                _ => (
                    IpAddr::from(Self::gateway(rack)),
                    IpAddr::from(Self::gateway6(rack)),
                    "",
                ),
            };
            let _ = writeln!(
                conf,
                "protocol bgp node{i} from node {{ local {local} as {TOR_AS}; neighbor {} as 64512;{multihop}\n  \
                 ipv4 {{ import all; export where source = RTS_BGP; next hop address {};{keep} }}; }}",
                self.node_ip(i),
                Self::gateway(rack)
            );
            if self.ipv6 {
                let _ = writeln!(
                    conf,
                    "protocol bgp node{i}v6 from node {{ local {local6} as {TOR_AS}; neighbor {} as 64512;{multihop}\n  \
                     ipv6 {{ import all; export where source = RTS_BGP; next hop address {};{keep} }}; }}",
                    self.node_ip6(i),
                    Self::gateway6(rack)
                );
            }
        }
        Some(conf)
    }

    /// The peer addresses node `i` must have an Established session with.
    pub fn expected_sessions(&self, i: usize) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = Vec::new();
        let nodes = |others: &mut dyn Iterator<Item = usize>, out: &mut Vec<IpAddr>| {
            for o in others {
                out.push(self.node_ip(o).into());
                if self.ipv6 {
                    out.push(self.node_ip6(o).into());
                }
            }
        };
        match self.topology {
            Topology::Mesh => nodes(&mut (1..=self.nodes).filter(|&o| o != i), &mut out),
            Topology::Reflectors => {
                let rrs = self.reflectors();
                if rrs.contains(&i) {
                    nodes(&mut (1..=self.nodes).filter(|&o| o != i), &mut out);
                } else {
                    nodes(&mut rrs.into_iter(), &mut out);
                }
            }
            Topology::Tor => {
                out.push(TOR_LOOPBACK.into());
                if self.ipv6 {
                    out.push(TOR_LOOPBACK6.into());
                }
            }
            Topology::PerNode => {
                out.push(Self::gateway(self.rack_of(i)).into());
                if self.ipv6 {
                    out.push(Self::gateway6(self.rack_of(i)).into());
                }
            }
        }
        out.sort();
        out
    }
}

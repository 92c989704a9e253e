//! From the cluster view to what this node must program: routes to every remote pod block, the
//! remote VTEPs of the VXLAN device and the remote nodes of the IP-in-IP data path.
//!
//! This is the pure core the agent calls on every change (level-triggered): it gets this
//! node's address (with its subnet prefix) and every remote node with its blocks, each block
//! tagged with the encapsulation of the IP pool it comes from, and returns the complete desired
//! state. The drivers ([`crate::VxlanDevice::set_remote_vteps`],
//! [`crate::IpipDataPath::set_remote_nodes`], the FIB's `apply`) then make the kernel match.
//!
//! Per block, [`crate::encapsulation`] decides; a remote node appears among the VTEPs (or the
//! IP-in-IP nodes) only if at least one of its blocks needs that tunnel. A VXLAN block of a node
//! that has not published its VTEP yet cannot be routed and is reported, not guessed.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

use crate::vxlan::Mac;
use crate::{encapsulation, EncapError, Encapsulation, PoolEncap, RemoteNode, RemoteVtep};

/// A remote node as the datastore describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// Underlay address.
    pub node_ip: IpAddr,
    /// The node's VTEP (tunnel address, MAC), once it has published one.
    pub vtep: Option<(IpAddr, Mac)>,
    /// The node's blocks, each with the encapsulation settings of its IP pool.
    pub blocks: Vec<(IpNet, PoolEncap)>,
}

/// Why a remote block gets no route.
#[derive(Debug)]
pub enum UnroutableBlock {
    /// The block needs VXLAN but its node has not published a VTEP yet.
    NoVtep { block: IpNet, node: IpAddr },
    /// The block's family differs from its node's underlay address.
    FamilyMismatch { block: IpNet, node: IpAddr },
    /// The pool's settings are invalid (both tunnels enabled).
    InvalidPool { block: IpNet, error: EncapError },
}

/// Everything this node must program for the overlay.
#[derive(Debug, Default)]
pub struct OverlayPlan {
    /// One route per routable remote block.
    pub routes: Vec<fib::Route>,
    /// Remote VTEPs for the VXLAN device (empty: no VXLAN device needed).
    pub vteps: Vec<RemoteVtep>,
    /// Remote nodes for IP-in-IP with the blocks routed to them through `tunl0` (empty: no
    /// IP-in-IP device needed).
    pub ipip_nodes: Vec<RemoteNode>,
    pub unroutable: Vec<UnroutableBlock>,
}

impl OverlayPlan {
    pub fn needs_vxlan(&self) -> bool {
        !self.vteps.is_empty()
    }

    pub fn needs_ipip(&self) -> bool {
        !self.ipip_nodes.is_empty()
    }
}

/// Computes the overlay state of the node at `this_node` (its address with its subnet's
/// prefix) for the remote nodes `remotes`. Entries for this node itself are ignored.
pub fn plan_overlay(this_node: IpNet, remotes: &[ClusterNode]) -> OverlayPlan {
    let mut plan = OverlayPlan::default();
    let mut vteps: BTreeMap<IpAddr, RemoteVtep> = BTreeMap::new();
    let mut ipip: BTreeMap<Ipv4Addr, Vec<Ipv4Net>> = BTreeMap::new();
    for node in remotes.iter().filter(|n| n.node_ip != this_node.addr()) {
        for (block, pool) in &node.blocks {
            let block = block.trunc();
            if block.addr().is_ipv4() != node.node_ip.is_ipv4() {
                plan.unroutable.push(UnroutableBlock::FamilyMismatch {
                    block,
                    node: node.node_ip,
                });
                continue;
            }
            let how = match encapsulation(*pool, this_node, node.node_ip) {
                Ok(how) => how,
                Err(error) => {
                    plan.unroutable
                        .push(UnroutableBlock::InvalidPool { block, error });
                    continue;
                }
            };
            let Some(hop) = how.next_hop(node.node_ip, node.vtep.map(|(ip, _)| ip)) else {
                plan.unroutable.push(UnroutableBlock::NoVtep {
                    block,
                    node: node.node_ip,
                });
                continue;
            };
            match (how, node.vtep, node.node_ip, block) {
                (Encapsulation::Vxlan, Some((tunnel_ip, mac)), _, _) => {
                    vteps.insert(
                        node.node_ip,
                        RemoteVtep {
                            node_ip: node.node_ip,
                            tunnel_ip,
                            mac,
                        },
                    );
                }
                (Encapsulation::IpIp, _, IpAddr::V4(node_ip), IpNet::V4(block)) => {
                    ipip.entry(node_ip).or_default().push(block);
                }
                _ => {}
            }
            plan.routes.push(hop.route_to(block));
        }
    }
    plan.vteps = vteps.into_values().collect();
    plan.ipip_nodes = ipip
        .into_iter()
        .map(|(node_ip, blocks)| RemoteNode { node_ip, blocks })
        .collect();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EncapMode::{Always, CrossSubnet, Never};

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    const MAC: Mac = [0x66, 0xca, 0, 0, 0, 2];

    fn node(addr: &str, vtep: Option<&str>, blocks: &[(&str, PoolEncap)]) -> ClusterNode {
        ClusterNode {
            node_ip: ip(addr),
            vtep: vtep.map(|v| (ip(v), MAC)),
            blocks: blocks.iter().map(|(b, p)| (net(b), *p)).collect(),
        }
    }
    fn pool(ipip: crate::EncapMode, vxlan: crate::EncapMode) -> PoolEncap {
        PoolEncap { ipip, vxlan }
    }

    #[test]
    fn cross_subnet_ipip_splits_native_and_tunnelled() {
        let p = pool(CrossSubnet, Never);
        let plan = plan_overlay(
            net("192.168.10.1/24"),
            &[
                node("192.168.10.1", None, &[("10.244.1.0/26", p)]),
                node("192.168.10.2", None, &[("10.244.2.0/26", p)]),
                node(
                    "192.168.20.3",
                    None,
                    &[("10.244.3.0/26", p), ("10.244.4.0/26", p)],
                ),
            ],
        );
        assert_eq!(
            plan.routes,
            vec![
                fib::Route::via(net("10.244.2.0/26"), fib::NextHop::via(ip("192.168.10.2"))),
                fib::Route::via(
                    net("10.244.3.0/26"),
                    fib::NextHop::onlink(ip("192.168.20.3"), "tunl0")
                ),
                fib::Route::via(
                    net("10.244.4.0/26"),
                    fib::NextHop::onlink(ip("192.168.20.3"), "tunl0")
                ),
            ]
        );
        assert_eq!(
            plan.ipip_nodes,
            vec![RemoteNode {
                node_ip: "192.168.20.3".parse().unwrap(),
                blocks: vec![
                    "10.244.3.0/26".parse().unwrap(),
                    "10.244.4.0/26".parse().unwrap()
                ],
            }]
        );
        assert!(plan.needs_ipip() && !plan.needs_vxlan());
        assert!(plan.unroutable.is_empty());
    }

    #[test]
    fn vxlan_needs_the_remote_vtep() {
        let p = pool(Never, Always);
        let plan = plan_overlay(
            net("192.168.10.1/24"),
            &[
                node("192.168.10.2", Some("10.244.2.0"), &[("10.244.2.0/26", p)]),
                node("192.168.10.3", None, &[("10.244.3.0/26", p)]),
            ],
        );
        assert_eq!(
            plan.routes,
            vec![fib::Route::via(
                net("10.244.2.0/26"),
                fib::NextHop::onlink(ip("10.244.2.0"), "vxlan.calico")
            )]
        );
        assert_eq!(
            plan.vteps,
            vec![RemoteVtep {
                node_ip: ip("192.168.10.2"),
                tunnel_ip: ip("10.244.2.0"),
                mac: MAC
            }]
        );
        assert!(matches!(
            plan.unroutable.as_slice(),
            [UnroutableBlock::NoVtep { .. }]
        ));
    }

    #[test]
    fn blocks_follow_their_own_pool() {
        // One node with a block from an IP-in-IP pool and one from a plain pool.
        let plan = plan_overlay(
            net("192.168.10.1/24"),
            &[node(
                "192.168.10.2",
                Some("10.244.2.0"),
                &[
                    ("10.244.2.0/26", pool(Always, Never)),
                    ("10.250.2.0/26", pool(Never, Never)),
                    ("10.251.2.0/26", pool(Always, Always)),
                    ("fd00:2::/122", pool(Never, Never)),
                ],
            )],
        );
        assert_eq!(plan.routes.len(), 2);
        assert_eq!(
            plan.routes[1].next_hops()[0],
            fib::NextHop::via(ip("192.168.10.2"))
        );
        assert_eq!(plan.ipip_nodes.len(), 1);
        assert_eq!(
            plan.ipip_nodes[0].blocks.len(),
            1,
            "only the IP-in-IP block"
        );
        assert!(plan.vteps.is_empty(), "no VXLAN block, no VTEP");
        assert!(matches!(
            plan.unroutable.as_slice(),
            [
                UnroutableBlock::InvalidPool { .. },
                UnroutableBlock::FamilyMismatch { .. }
            ]
        ));
    }
}

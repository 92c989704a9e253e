//! From the cluster view to what this node must program: routes to every remote pod block, the
//! remote VTEPs of the VXLAN device and the remote nodes of the IP-in-IP data path.
//!
//! This is the pure core the agent calls on every change (level-triggered): it gets this
//! node's address (with its subnet prefix) and every remote node with its blocks, each block
//! tagged with the encapsulation of the IP pool it comes from, and returns the complete desired
//! state. The drivers ([`crate::VxlanDevice::set_remote_vteps`],
//! [`crate::IpipDataPath::set_remote_nodes`], the FIB's `apply`) then make the kernel match.
//!
//! [`Overlay`] is the thin driver an agent owns (one per node): it keeps the tunnel devices
//! that the IP pools in use call for, feeds them the plan, and hands the routes back for the
//! FIB.
//!
//! Per block, [`crate::encapsulation`] decides; a remote node appears among the VTEPs (or the
//! IP-in-IP nodes) only if at least one of its blocks needs that tunnel. A VXLAN block of a node
//! that has not published its VTEP yet cannot be tunnelled and is reported, not guessed; if
//! that node is on our own subnet, the block is routed natively meanwhile, as with no
//! encapsulation: a pool switched to VXLAN then keeps forwarding while the nodes publish their
//! VTEPs, instead of dropping every block until they have.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use ipnet::{IpNet, Ipv4Net};
use tracing::info;

use crate::ipip::IpipConfig;
use crate::vxlan::Mac;
use crate::{
    encapsulation, EncapError, EncapMode, Encapsulation, IpipDataPath, PoolEncap, RemoteNode,
    RemoteVtep, VxlanConfig, VxlanDevice,
};

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
    /// The block needs VXLAN but its node has not published a VTEP yet. `direct`: the
    /// node is on our subnet, and the block is routed natively to it meanwhile.
    NoVtep {
        block: IpNet,
        node: IpAddr,
        direct: bool,
    },
    /// The block's family differs from its node's underlay address, or this node has no
    /// address of that family.
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

/// Computes the overlay state of the node at `this_nodes` (its addresses, one per family,
/// each with its subnet's prefix) for the remote nodes `remotes`. A remote node is compared
/// with our address of its own family (CrossSubnet); entries for this node itself are
/// ignored.
pub fn plan_overlay(this_nodes: &[IpNet], remotes: &[ClusterNode]) -> OverlayPlan {
    let mut plan = OverlayPlan::default();
    let mut vteps: BTreeMap<IpAddr, RemoteVtep> = BTreeMap::new();
    let mut ipip: BTreeMap<Ipv4Addr, Vec<Ipv4Net>> = BTreeMap::new();
    for node in remotes
        .iter()
        .filter(|n| !this_nodes.iter().any(|t| t.addr() == n.node_ip))
    {
        let this_node = this_nodes
            .iter()
            .find(|t| t.addr().is_ipv4() == node.node_ip.is_ipv4());
        for (block, pool) in &node.blocks {
            let block = block.trunc();
            let Some(&this_node) =
                this_node.filter(|_| block.addr().is_ipv4() == node.node_ip.is_ipv4())
            else {
                plan.unroutable.push(UnroutableBlock::FamilyMismatch {
                    block,
                    node: node.node_ip,
                });
                continue;
            };
            let how = match encapsulation(*pool, this_node, node.node_ip) {
                Ok(how) => how,
                Err(error) => {
                    plan.unroutable
                        .push(UnroutableBlock::InvalidPool { block, error });
                    continue;
                }
            };
            let Some(hop) = how.next_hop(node.node_ip, node.vtep.map(|(ip, _)| ip)) else {
                let direct = this_node.contains(&node.node_ip);
                plan.unroutable.push(UnroutableBlock::NoVtep {
                    block,
                    node: node.node_ip,
                    direct,
                });
                if let Some(hop) = direct
                    .then(|| Encapsulation::None.next_hop(node.node_ip, None))
                    .flatten()
                {
                    plan.routes.push(hop.route_to(block));
                }
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

impl OverlayPlan {
    /// The tunnels the plan routes through, for [`crate::mtu::workload_mtu`].
    pub fn tunnels_in_use(&self) -> Vec<Encapsulation> {
        let mut used = Vec::new();
        if self.needs_ipip() {
            used.push(Encapsulation::IpIp);
        }
        if self.needs_vxlan() {
            used.push(Encapsulation::Vxlan);
        }
        used
    }
}

/// What a node's [`Overlay`] is built from.
#[derive(Debug, Clone)]
pub struct OverlayConfig {
    /// This node's underlay address with its subnet prefix (for CrossSubnet).
    pub this_node: IpNet,
    /// This node's IPv6 underlay address with its prefix, on a dual-stack node.
    pub this_node_v6: Option<IpNet>,
    /// The VXLAN device to use when a pool enables VXLAN (name, VNI, port, parent, MAC,
    /// tunnel address).
    pub vxlan: VxlanConfig,
    /// The IPv6 VXLAN device (`vxlan-v6.calico`, over the IPv6 underlay) of a dual-stack
    /// node, used when an IPv6 pool enables VXLAN, as Calico's felix does.
    pub vxlan_v6: Option<VxlanConfig>,
    /// The IP-in-IP device to use when a pool enables IP-in-IP.
    pub ipip: IpipConfig,
    /// The network namespace the rtnetlink handle is bound to, where a userspace IP-in-IP
    /// data path must create its TUN device and socket (`None`: the process's own).
    pub netns: Option<PathBuf>,
}

/// One node's overlay: owns the tunnel devices and keeps them in line with the IP pools and
/// the cluster view it is given.
#[derive(Debug)]
pub struct Overlay {
    handle: rtnetlink::Handle,
    config: OverlayConfig,
    vxlan: Option<VxlanDevice>,
    vxlan_v6: Option<VxlanDevice>,
    ipip: Option<IpipDataPath>,
}

/// This node's tunnel addresses (and VTEP MACs), assigned from its blocks when a pool uses
/// the tunnel and published on its Node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunnelAddresses {
    /// `vxlan.calico`'s address and MAC (Node `ipv4VXLANTunnelAddr`, `vxlanTunnelMACAddr`).
    pub vxlan: Option<(IpAddr, Mac)>,
    /// `vxlan-v6.calico`'s (`ipv6VXLANTunnelAddr`, `vxlanTunnelMACAddrV6`).
    pub vxlan_v6: Option<(IpAddr, Mac)>,
    /// `tunl0`'s (`ipv4IPIPTunnelAddr`).
    pub ipip: Option<Ipv4Addr>,
}

impl Overlay {
    pub fn new(handle: rtnetlink::Handle, config: OverlayConfig) -> Self {
        Overlay {
            handle,
            config,
            vxlan: None,
            vxlan_v6: None,
            ipip: None,
        }
    }

    /// Level-triggered update. A tunnel device exists while any of `pools` (the pools this
    /// cluster uses) enables it, because other nodes may send to us through it even if we
    /// route nothing into it; it is then fed the planned VTEPs / remote nodes. A VXLAN device no
    /// pool needs any more is deleted, and so is a userspace `tunl0` (the kernel's fallback
    /// `tunl0` cannot be deleted and is left alone). Returns the plan, whose routes the caller
    /// gives to the FIB together with its own (blackholes, workloads).
    pub async fn apply(
        &mut self,
        pools: &[PoolEncap],
        remotes: &[ClusterNode],
    ) -> Result<OverlayPlan, EncapError> {
        let this_nodes: Vec<IpNet> = std::iter::once(self.config.this_node)
            .chain(self.config.this_node_v6)
            .collect();
        let plan = plan_overlay(&this_nodes, remotes);
        let pools_use_vxlan = pools.iter().any(|p| p.vxlan != EncapMode::Never);
        let (vteps_v4, vteps_v6): (Vec<RemoteVtep>, Vec<RemoteVtep>) = plan
            .vteps
            .iter()
            .cloned()
            .partition(|v| v.node_ip.is_ipv4());
        // A VXLAN device exists while it routes to a remote VTEP, or while a pool uses VXLAN
        // and this node has its VTEP address of that family (given only while a pool of
        // that family uses VXLAN: an IPv6-only VXLAN pool makes no IPv4 device).
        let wanted = |config: &VxlanConfig, vteps: &[RemoteVtep]| {
            !vteps.is_empty() || (pools_use_vxlan && config.tunnel_address.is_some())
        };
        let want_ipip = plan.needs_ipip() || pools.iter().any(|p| p.ipip != EncapMode::Never);

        let v4_config = Some(&self.config.vxlan).filter(|c| wanted(c, &vteps_v4));
        sync_vxlan(&self.handle, &mut self.vxlan, v4_config, vteps_v4).await?;
        let v6_config = self
            .config
            .vxlan_v6
            .as_ref()
            .filter(|c| wanted(c, &vteps_v6));
        sync_vxlan(&self.handle, &mut self.vxlan_v6, v6_config, vteps_v6).await?;

        if want_ipip {
            if self.ipip.is_none() {
                let dp = IpipDataPath::start(
                    &self.handle,
                    self.config.netns.as_deref(),
                    &self.config.ipip,
                )
                .await?;
                self.ipip = Some(dp);
            }
            if let Some(dp) = &self.ipip {
                dp.set_remote_nodes(&plan.ipip_nodes);
            }
        } else if let Some(dp) = self.ipip.take() {
            info!(
                userspace = dp.is_userspace(),
                "no IP pool uses IP-in-IP any more"
            );
        }
        Ok(plan)
    }

    /// This node's tunnel addresses (and VTEP MAC), as assigned from its blocks when a pool
    /// came to use a tunnel. The VXLAN device takes them at the next [`Overlay::apply`]; a
    /// running IP-in-IP data path whose address changed is restarted there with the new one.
    pub fn set_tunnel_addresses(&mut self, addresses: &TunnelAddresses) {
        let TunnelAddresses {
            vxlan,
            vxlan_v6,
            ipip,
        } = *addresses;
        if let Some((address, mac)) = vxlan {
            self.config.vxlan.tunnel_address = Some(address);
            self.config.vxlan.mac = Some(mac);
        }
        if let (Some((address, mac)), Some(config)) = (vxlan_v6, self.config.vxlan_v6.as_mut()) {
            config.tunnel_address = Some(address);
            config.mac = Some(mac);
        }
        if ipip.is_some() && ipip != self.config.ipip.tunnel_address {
            self.config.ipip.tunnel_address = ipip;
            if self.ipip.take().is_some() {
                info!("IP-in-IP tunnel address changed: restarting the data path");
            }
        }
    }

    pub fn vxlan(&self) -> Option<&VxlanDevice> {
        self.vxlan.as_ref()
    }

    pub fn vxlan_v6(&self) -> Option<&VxlanDevice> {
        self.vxlan_v6.as_ref()
    }

    pub fn ipip(&self) -> Option<&IpipDataPath> {
        self.ipip.as_ref()
    }
}

/// Keeps one VXLAN device in line: created (or fixed) with `config` and fed `vteps` while
/// wanted, removed when no pool needs it any more.
async fn sync_vxlan(
    handle: &rtnetlink::Handle,
    device: &mut Option<VxlanDevice>,
    config: Option<&VxlanConfig>,
    vteps: Vec<RemoteVtep>,
) -> Result<(), EncapError> {
    if let Some(config) = config {
        let dev = VxlanDevice::ensure(handle.clone(), config).await?;
        dev.set_remote_vteps(vteps).await?;
        *device = Some(dev);
    } else if let Some(dev) = device.take() {
        info!(
            device = dev.name(),
            "no IP pool uses VXLAN any more, removing the device"
        );
        dev.remove().await?;
    }
    Ok(())
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
            &[net("192.168.10.1/24")],
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
        assert_eq!(plan.tunnels_in_use(), vec![Encapsulation::IpIp]);
        assert!(plan.unroutable.is_empty());
    }

    #[test]
    fn vxlan_needs_the_remote_vtep() {
        let p = pool(Never, Always);
        let plan = plan_overlay(
            &[net("192.168.10.1/24")],
            &[
                node("192.168.10.2", Some("10.244.2.0"), &[("10.244.2.0/26", p)]),
                node("192.168.10.3", None, &[("10.244.3.0/26", p)]),
                node("192.168.20.4", None, &[("10.244.4.0/26", p)]),
            ],
        );
        // Without its VTEP, a node on our subnet is reached natively meanwhile; one across
        // a router is not reached at all.
        assert_eq!(
            plan.routes,
            vec![
                fib::Route::via(
                    net("10.244.2.0/26"),
                    fib::NextHop::onlink(ip("10.244.2.0"), "vxlan.calico")
                ),
                fib::Route::via(net("10.244.3.0/26"), fib::NextHop::via(ip("192.168.10.3"))),
            ]
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
            [
                UnroutableBlock::NoVtep { direct: true, .. },
                UnroutableBlock::NoVtep { direct: false, .. }
            ]
        ));
    }

    #[test]
    fn dual_stack_compares_each_family_with_its_own_subnet() {
        // VXLAN CrossSubnet in both families: the IPv6 blocks of a node on our IPv6 subnet
        // go natively, those of a node outside it through vxlan-v6.calico to its IPv6 VTEP.
        let p = pool(Never, CrossSubnet);
        let plan = plan_overlay(
            &[net("192.168.10.1/24"), net("fd00:10::1/64")],
            &[
                node("fd00:10::2", Some("fd00:244::2"), &[("fd00:244::/120", p)]),
                node(
                    "fd00:20::3",
                    Some("fd00:244::301"),
                    &[("fd00:244::300/120", p)],
                ),
                node("192.168.20.3", Some("10.244.3.0"), &[("10.244.3.0/26", p)]),
            ],
        );
        assert!(plan.unroutable.is_empty(), "{:?}", plan.unroutable);
        assert_eq!(
            plan.routes,
            vec![
                fib::Route::via(net("fd00:244::/120"), fib::NextHop::via(ip("fd00:10::2"))),
                fib::Route::via(
                    net("fd00:244::300/120"),
                    fib::NextHop::onlink(ip("fd00:244::301"), "vxlan-v6.calico")
                ),
                fib::Route::via(
                    net("10.244.3.0/26"),
                    fib::NextHop::onlink(ip("10.244.3.0"), "vxlan.calico")
                ),
            ]
        );
        let vteps: Vec<IpAddr> = plan.vteps.iter().map(|v| v.node_ip).collect();
        assert_eq!(vteps, vec![ip("192.168.20.3"), ip("fd00:20::3")]);
        // A node with no IPv6 address of its own cannot route IPv6 blocks.
        let v4_only = plan_overlay(
            &[net("192.168.10.1/24")],
            &[node("fd00:10::2", None, &[("fd00:244::/120", p)])],
        );
        assert!(v4_only.routes.is_empty());
        assert!(matches!(
            v4_only.unroutable.as_slice(),
            [UnroutableBlock::FamilyMismatch { .. }]
        ));
    }

    #[test]
    fn blocks_follow_their_own_pool() {
        // One node with a block from an IP-in-IP pool and one from a plain pool.
        let plan = plan_overlay(
            &[net("192.168.10.1/24")],
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

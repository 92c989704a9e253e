//! Overlay encapsulation for pod traffic between nodes: which remote nodes need a tunnel, and
//! the tunnel devices themselves.
//!
//! Calico reaches a remote node's pod blocks in one of three ways, chosen per IP pool:
//! directly (route `via <node ip>` on the underlay), over IP-in-IP (`via <node ip> dev tunl0
//! onlink`) or over VXLAN (`via <remote VTEP tunnel ip> dev vxlan.calico onlink`). The pool's
//! `ipipMode` / `vxlanMode` is `Never`, `Always` or `CrossSubnet`; the last encapsulates only
//! towards nodes outside this node's own subnet (taken from the prefix the node registered its
//! address with).
//!
//! The crate is split the house way:
//! - [`mode`]: the pure decision (mode × this node × remote node -> [`Encapsulation`]) and the
//!   next hop a route towards a remote block must use ([`NextHop`]).
//! - [`overlay`]: the pure whole-node plan ([`plan_overlay`]): from every remote node and its
//!   blocks to the routes, remote VTEPs and IP-in-IP nodes this node must program; and
//!   [`Overlay`], the per-node driver that keeps the tunnel devices in line with it.
//! - [`mtu`]: tunnel and workload MTUs derived from the parent (underlay) link MTU.
//! - [`vxlan`]: the `vxlan.calico` device and its per-remote-node neighbour and FDB entries, as
//!   a pure diff ([`vxlan::VtepChanges`]) applied by a thin rtnetlink driver.
//! - [`ipip`]: the `tunl0` device. Where the kernel has the `ipip` module the kernel does the
//!   work; where it does not (minimal VM kernels, this project's CI machine) a userspace data
//!   path over a TUN device named `tunl0` and raw IP-protocol-4 sockets takes over
//!   ([`ipip::UserspaceIpip`]); the packet handling itself is pure ([`ipip::packet`]).
//! - [`netns`]: running socket-creating code inside a given network namespace.
//!
//! Every function that talks to the kernel takes an `rtnetlink::Handle`, so the caller decides
//! which network namespace it acts on (by opening the netlink socket there).

// Tests may unwrap (house rules); library code may not.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod error;
pub mod ipip;
mod link;
pub mod mode;
pub mod mtu;
pub mod netns;
pub mod overlay;
pub mod vxlan;

pub use error::EncapError;
pub use ipip::{IpipConfig, IpipCounters, IpipDataPath, RemoteNode, UserspaceIpip};
pub use link::link_mtu;
pub use mode::{encapsulation, EncapMode, Encapsulation, NextHop, PoolEncap};
pub use overlay::{
    plan_overlay, ClusterNode, Overlay, OverlayConfig, OverlayPlan, TunnelAddresses,
    UnroutableBlock,
};
pub use vxlan::{RemoteVtep, VtepChanges, VxlanConfig, VxlanDevice};

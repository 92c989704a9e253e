//! Tunnel and workload MTUs, derived from the parent (underlay) link rather than hard-coded, so
//! that a node on a jumbo-frame network or a cloud network with a 1460-byte MTU gets the right
//! values.
//!
//! Overheads (what the encapsulation adds in front of the inner IP packet):
//! - IP-in-IP (RFC 2003): one outer IPv4 header, 20 bytes.
//! - VXLAN (RFC 7348 §5): outer IP + UDP (8) + VXLAN (8) + inner Ethernet (14): 50 bytes over
//!   an IPv4 underlay, 70 over IPv6 (40-byte header).
//!
//! A workload's veth gets the smallest MTU of the tunnels its traffic may take, so that a pod
//! never sends a packet that cannot be encapsulated without fragmentation.

use std::net::IpAddr;

use crate::{EncapError, Encapsulation};

/// Smallest MTU an IPv4 link may have (RFC 791: every host must accept 68-byte datagrams).
pub const MIN_IPV4_MTU: u32 = 68;
/// Smallest MTU an IPv6 link may have (RFC 8200 §5).
pub const MIN_IPV6_MTU: u32 = 1280;

/// Bytes `encap` adds to each packet over an underlay of `underlay`'s family.
pub fn overhead(encap: Encapsulation, underlay: IpAddr) -> u32 {
    let outer_ip = if underlay.is_ipv4() { 20 } else { 40 };
    match encap {
        Encapsulation::None => 0,
        Encapsulation::IpIp => outer_ip,
        Encapsulation::Vxlan => outer_ip + 8 + 8 + 14,
    }
}

/// The MTU of a tunnel device whose parent link has `parent_mtu`, carrying `encap` over an
/// underlay of `underlay`'s family. Fails if what is left could not carry an IPv4 packet.
pub fn tunnel_mtu(
    parent_mtu: u32,
    encap: Encapsulation,
    underlay: IpAddr,
) -> Result<u32, EncapError> {
    let overhead = overhead(encap, underlay);
    match parent_mtu.checked_sub(overhead) {
        Some(mtu) if mtu >= MIN_IPV4_MTU => Ok(mtu),
        _ => Err(EncapError::MtuTooSmall {
            parent: parent_mtu,
            overhead,
        }),
    }
}

/// The MTU for workload (pod) interfaces: the smallest of the tunnel MTUs in use, or the parent
/// MTU when nothing is encapsulated.
pub fn workload_mtu(
    parent_mtu: u32,
    in_use: &[Encapsulation],
    underlay: IpAddr,
) -> Result<u32, EncapError> {
    let mut mtu = parent_mtu;
    for encap in in_use {
        mtu = mtu.min(tunnel_mtu(parent_mtu, *encap, underlay)?);
    }
    Ok(mtu)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const V6: IpAddr = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);

    #[test]
    fn tunnel_mtus_follow_parent() {
        assert_eq!(tunnel_mtu(1500, Encapsulation::IpIp, V4).unwrap(), 1480);
        assert_eq!(tunnel_mtu(1500, Encapsulation::Vxlan, V4).unwrap(), 1450);
        assert_eq!(tunnel_mtu(1500, Encapsulation::Vxlan, V6).unwrap(), 1430);
        assert_eq!(tunnel_mtu(9001, Encapsulation::Vxlan, V4).unwrap(), 8951);
        assert_eq!(tunnel_mtu(1460, Encapsulation::IpIp, V4).unwrap(), 1440);
        assert_eq!(tunnel_mtu(1500, Encapsulation::None, V4).unwrap(), 1500);
    }

    #[test]
    fn too_small_parent_is_an_error_not_an_underflow() {
        assert!(matches!(
            tunnel_mtu(60, Encapsulation::Vxlan, V4),
            Err(EncapError::MtuTooSmall {
                parent: 60,
                overhead: 50
            })
        ));
        assert!(tunnel_mtu(10, Encapsulation::IpIp, V4).is_err());
    }

    #[test]
    fn workload_mtu_is_the_smallest_in_use() {
        assert_eq!(workload_mtu(1500, &[], V4).unwrap(), 1500);
        assert_eq!(
            workload_mtu(1500, &[Encapsulation::IpIp], V4).unwrap(),
            1480
        );
        assert_eq!(
            workload_mtu(1500, &[Encapsulation::IpIp, Encapsulation::Vxlan], V4).unwrap(),
            1450
        );
    }
}

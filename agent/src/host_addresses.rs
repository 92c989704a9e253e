//! The addresses of this network namespace's interfaces: one walk of `getifaddrs(3)` that
//! node address autodetection, the underlay interface of the tunnels and the connected
//! subnets of route planning all read.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nix::net::if_::InterfaceFlags;

/// One address on an interface of the current network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub interface: String,
    /// Interface index: the order `first-found` and `interface=` walk interfaces in.
    pub index: u32,
    pub up: bool,
    /// The address with the prefix length of its subnet.
    pub address: IpNet,
}

/// Every IPv4/IPv6 address of the calling thread's network namespace, by interface index
/// and, within an interface, in the kernel's order (primary address first).
pub fn interface_addresses() -> Result<Vec<InterfaceAddress>, String> {
    let addrs =
        nix::ifaddrs::getifaddrs().map_err(|e| format!("listing interface addresses: {e}"))?;
    let mut out = Vec::new();
    for a in addrs {
        let (Some(addr), Some(mask)) = (a.address, a.netmask) else {
            continue;
        };
        let net = if let (Some(ip), Some(mask)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            let prefix = u32::from(mask.ip()).leading_ones() as u8;
            Ipv4Net::new(ip.ip(), prefix).ok().map(IpNet::V4)
        } else if let (Some(ip), Some(mask)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            let prefix = u128::from(mask.ip()).leading_ones() as u8;
            Ipv6Net::new(ip.ip(), prefix).ok().map(IpNet::V6)
        } else {
            None
        };
        let Some(address) = net else { continue };
        // An interface that vanished between the dump and this lookup is skipped.
        let Ok(index) = nix::net::if_::if_nametoindex(a.interface_name.as_str()) else {
            continue;
        };
        out.push(InterfaceAddress {
            interface: a.interface_name,
            index,
            up: a.flags.contains(InterfaceFlags::IFF_UP),
            address,
        });
    }
    // Stable: keeps the kernel's per-interface address order.
    out.sort_by_key(|a| a.index);
    Ok(out)
}

/// The subnets of this namespace's addresses (host bits cleared), each once: the kernel
/// holds a connected route for each, which routerd must never replace. Empty when the
/// addresses cannot be listed.
pub fn connected_networks() -> Vec<IpNet> {
    let mut out: Vec<IpNet> = interface_addresses()
        .unwrap_or_default()
        .iter()
        .map(|a| a.address.trunc())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The interface that holds `address`, if any (the parent device of the tunnels).
pub fn interface_of(address: IpAddr) -> Option<String> {
    interface_addresses()
        .ok()?
        .into_iter()
        .find(|a| a.address.addr() == address)
        .map(|a| a.interface)
}

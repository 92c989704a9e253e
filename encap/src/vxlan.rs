//! The VXLAN overlay (RFC 7348): one `vxlan.calico` device per node and, per remote node, a
//! permanent neighbour entry and a permanent FDB entry.
//!
//! Calico does not use VXLAN multicast or learning. Each node has a VTEP: the device's MAC and
//! a tunnel address taken from one of its blocks. A route to a remote block goes
//! `via <remote tunnel ip> dev vxlan.calico onlink`; the kernel resolves the gateway to the
//! remote VTEP MAC from a permanent ARP/ND entry we install, and the VXLAN driver maps that MAC
//! to the remote node's underlay address from a permanent FDB entry (`NTF_SELF`: the entry
//! lives in the VXLAN device's own table, not a bridge's). With learning off the kernel never
//! adds entries of its own, so the permanent entries on the device are exactly ours.
//!
//! [`plan`] is the pure reconciliation (desired VTEPs vs. the entries the kernel reports);
//! [`VxlanDevice`] is the thin rtnetlink driver around it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, LinkVxlan};
use tracing::{debug, info};

use crate::error::netlink_errno;
use crate::{link, mtu, EncapError, Encapsulation};

/// Calico's default VNI.
pub const DEFAULT_VNI: u32 = 4096;
/// The IANA-assigned VXLAN port (RFC 7348 §5).
pub const DEFAULT_PORT: u16 = 4789;

/// A MAC address.
pub type Mac = [u8; 6];

/// What this node's VXLAN device must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConfig {
    /// Device name (`vxlan.calico`; `vxlan-v6.calico` for an IPv6 underlay).
    pub name: String,
    pub vni: u32,
    /// UDP destination port.
    pub port: u16,
    /// The underlay link the encapsulated packets leave by; its MTU sets the device MTU.
    pub parent: String,
    /// This node's underlay address: the outer source address.
    pub local: IpAddr,
    /// The VTEP MAC other nodes put in their neighbour/FDB entries for us. `None` keeps the
    /// kernel's random MAC (read it back with [`VxlanDevice::mac`] to publish it).
    pub mac: Option<Mac>,
    /// The VTEP's tunnel address (a host address from one of our blocks). Packets the node
    /// itself sends into the overlay take it as their source.
    pub tunnel_address: Option<IpAddr>,
}

impl VxlanConfig {
    /// Calico's defaults: VNI 4096, port 4789, the device name for `local`'s family.
    pub fn new(parent: impl Into<String>, local: IpAddr) -> Self {
        VxlanConfig {
            name: if local.is_ipv4() {
                crate::mode::VXLAN_DEVICE
            } else {
                crate::mode::VXLAN_V6_DEVICE
            }
            .to_string(),
            vni: DEFAULT_VNI,
            port: DEFAULT_PORT,
            parent: parent.into(),
            local,
            mac: None,
            tunnel_address: None,
        }
    }
}

/// A deterministic, locally administered unicast VTEP MAC for a node address, so a restarted
/// agent keeps its MAC and remote entries stay valid without a datastore round trip.
pub fn vtep_mac(node: IpAddr) -> Mac {
    match node {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            [0x66, 0xca, o[0], o[1], o[2], o[3]]
        }
        IpAddr::V6(v6) => {
            // FNV-1a over the address, folded into 32 bits.
            let mut h: u32 = 0x811c_9dc5;
            for b in v6.octets() {
                h ^= u32::from(b);
                h = h.wrapping_mul(0x0100_0193);
            }
            let o = h.to_be_bytes();
            [0x66, 0xcb, o[0], o[1], o[2], o[3]]
        }
    }
}

/// A remote node's VTEP, as published by that node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteVtep {
    /// The remote node's underlay address (FDB destination).
    pub node_ip: IpAddr,
    /// The remote VTEP's tunnel address (route gateway, neighbour entry key).
    pub tunnel_ip: IpAddr,
    /// The remote VTEP's MAC.
    pub mac: Mac,
}

/// A permanent neighbour entry on the VXLAN device: tunnel address -> VTEP MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NeighbourEntry {
    pub ip: IpAddr,
    pub mac: Mac,
}

/// A permanent FDB entry on the VXLAN device: VTEP MAC -> remote node address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FdbEntry {
    pub mac: Mac,
    pub dst: IpAddr,
}

/// What to change on the device so its entries match the desired VTEPs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VtepChanges {
    /// Entries to add or replace (a changed MAC replaces the old entry for that address).
    pub set_neighbours: Vec<NeighbourEntry>,
    pub del_neighbours: Vec<NeighbourEntry>,
    pub set_fdb: Vec<FdbEntry>,
    pub del_fdb: Vec<FdbEntry>,
}

impl VtepChanges {
    pub fn is_empty(&self) -> bool {
        self.set_neighbours.is_empty()
            && self.del_neighbours.is_empty()
            && self.set_fdb.is_empty()
            && self.del_fdb.is_empty()
    }
}

/// Diffs the desired remote VTEPs against the permanent entries the kernel reports.
///
/// Neighbours are keyed by tunnel address and FDB entries by MAC (the VXLAN FDB holds one
/// destination per MAC for us). If two desired VTEPs claim one key, the later one wins.
pub fn plan(
    desired: &[RemoteVtep],
    neighbours: &[NeighbourEntry],
    fdb: &[FdbEntry],
) -> VtepChanges {
    let want_neigh: BTreeMap<IpAddr, Mac> = desired.iter().map(|v| (v.tunnel_ip, v.mac)).collect();
    let want_fdb: BTreeMap<Mac, IpAddr> = desired.iter().map(|v| (v.mac, v.node_ip)).collect();
    let mut changes = VtepChanges::default();

    for n in neighbours {
        if !want_neigh.contains_key(&n.ip) {
            changes.del_neighbours.push(*n);
        }
    }
    for (ip, mac) in &want_neigh {
        if !neighbours.iter().any(|n| n.ip == *ip && n.mac == *mac) {
            changes
                .set_neighbours
                .push(NeighbourEntry { ip: *ip, mac: *mac });
        }
    }
    for f in fdb {
        if want_fdb.get(&f.mac) != Some(&f.dst) {
            changes.del_fdb.push(*f);
        }
    }
    for (mac, dst) in &want_fdb {
        if !fdb.iter().any(|f| f.mac == *mac && f.dst == *dst) {
            changes.set_fdb.push(FdbEntry {
                mac: *mac,
                dst: *dst,
            });
        }
    }
    changes
}

/// This node's VXLAN device, created or repaired by [`VxlanDevice::ensure`].
#[derive(Debug, Clone)]
pub struct VxlanDevice {
    handle: Handle,
    name: String,
    index: u32,
    mac: Mac,
    mtu: u32,
}

impl VxlanDevice {
    /// Makes the device match `config`: creates it if missing, recreates it if its VNI, port,
    /// local address, parent or learning setting differ (the kernel cannot change those on a
    /// live device), then sets MTU (parent MTU minus the VXLAN overhead), MAC and tunnel
    /// address and brings it up. Idempotent.
    pub async fn ensure(handle: Handle, config: &VxlanConfig) -> Result<Self, EncapError> {
        let parent = link::require(&handle, &config.parent).await?;
        let parent_index = parent.header.index;
        let parent_mtu = link::mtu(&parent)
            .ok_or_else(|| EncapError::LinkNotFound(format!("{} (no MTU)", config.parent)))?;
        let mtu = mtu::tunnel_mtu(parent_mtu, Encapsulation::Vxlan, config.local)?;

        if let Some(existing) = link::by_name(&handle, &config.name).await? {
            match link::kind(&existing) {
                Some(InfoKind::Vxlan) => {}
                other => {
                    return Err(EncapError::WrongLinkKind {
                        name: config.name.clone(),
                        found: other.map_or_else(|| "unknown".into(), |k| k.to_string()),
                        wanted: "vxlan",
                    })
                }
            }
            if !matches_config(&existing, config, parent_index) {
                info!(device = %config.name, "VXLAN device parameters changed, recreating it");
                handle
                    .link()
                    .del(existing.header.index)
                    .execute()
                    .await
                    .map_err(EncapError::netlink("delete stale vxlan link"))?;
            }
        }

        if link::by_name(&handle, &config.name).await?.is_none() {
            let mut builder = LinkVxlan::new(&config.name, config.vni)
                .dev(parent_index)
                .port(config.port)
                .learning(false)
                .mtu(mtu);
            builder = match config.local {
                IpAddr::V4(v4) => builder.local(v4),
                IpAddr::V6(v6) => builder.local6(v6),
            };
            if let Some(mac) = config.mac {
                builder = builder.address(mac.to_vec());
            }
            handle
                .link()
                .add(builder.build())
                .execute()
                .await
                .map_err(EncapError::netlink("add vxlan link"))?;
            info!(device = %config.name, vni = config.vni, port = config.port,
                  parent = %config.parent, local = %config.local, mtu, "created VXLAN device");
        }

        let dev = link::require(&handle, &config.name).await?;
        let index = dev.header.index;
        let mut set = LinkUnspec::new_with_index(index).mtu(mtu).up();
        if let Some(mac) = config.mac {
            set = set.address(mac.to_vec());
        }
        handle
            .link()
            .set(set.build())
            .execute()
            .await
            .map_err(EncapError::netlink("set vxlan link"))?;
        let dev = link::require(&handle, &config.name).await?;
        let mac = link::mac(&dev)
            .ok_or_else(|| EncapError::LinkNotFound(format!("{} (no MAC)", config.name)))?;

        let device = VxlanDevice {
            handle,
            name: config.name.clone(),
            index,
            mac,
            mtu,
        };
        device.set_tunnel_address(config.tunnel_address).await?;
        Ok(device)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    /// This VTEP's MAC, to publish to the other nodes.
    pub fn mac(&self) -> Mac {
        self.mac
    }

    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// Makes `address` (as a host route) the device's only address; `None` removes all.
    async fn set_tunnel_address(&self, address: Option<IpAddr>) -> Result<(), EncapError> {
        let existing: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.index)
            .execute()
            .try_collect()
            .await
            .map_err(EncapError::netlink("dump vxlan addresses"))?;
        let mut present = false;
        for msg in existing {
            let addr = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            let Some(addr) = addr else { continue };
            let host_len = if addr.is_ipv4() { 32 } else { 128 };
            if Some(addr) == address && msg.header.prefix_len == host_len {
                present = true;
                continue;
            }
            if matches!(addr, IpAddr::V6(v6) if v6.is_unicast_link_local()) {
                continue;
            }
            self.handle
                .address()
                .del(msg)
                .execute()
                .await
                .map_err(EncapError::netlink("delete stale vxlan address"))?;
        }
        if let (Some(addr), false) = (address, present) {
            let host_len = if addr.is_ipv4() { 32 } else { 128 };
            self.handle
                .address()
                .add(self.index, addr, host_len)
                .replace()
                .execute()
                .await
                .map_err(EncapError::netlink("add vxlan tunnel address"))?;
        }
        Ok(())
    }

    /// Reconciles the device's neighbour and FDB entries with `vteps` (the full desired set:
    /// entries for nodes not in it are removed). Returns what was changed.
    pub async fn set_remote_vteps(
        &self,
        vteps: Vec<RemoteVtep>,
    ) -> Result<VtepChanges, EncapError> {
        let (neighbours, fdb) = self.current_entries().await?;
        let changes = plan(&vteps, &neighbours, &fdb);
        if changes.is_empty() {
            return Ok(changes);
        }
        // Install the FDB entry before the neighbour entry that makes traffic use it, and
        // remove in the opposite order, so the kernel never resolves to a MAC it cannot send to.
        for f in &changes.set_fdb {
            self.handle
                .neighbours()
                .add_bridge(self.index, &f.mac)
                .flags(NeighbourFlags::Own)
                .state(NeighbourState::Permanent)
                .destination(f.dst)
                .replace()
                .execute()
                .await
                .map_err(EncapError::netlink("add vxlan fdb entry"))?;
            debug!(device = %self.name, mac = %fmt_mac(&f.mac), dst = %f.dst, "set FDB entry");
        }
        for n in &changes.set_neighbours {
            self.handle
                .neighbours()
                .add(self.index, n.ip)
                .link_layer_address(&n.mac)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(EncapError::netlink("add vxlan neighbour"))?;
            debug!(device = %self.name, ip = %n.ip, mac = %fmt_mac(&n.mac), "set neighbour");
        }
        for n in &changes.del_neighbours {
            let mut msg = NeighbourMessage::default();
            msg.header.family = family_of(n.ip);
            msg.header.ifindex = self.index;
            msg.header.state = NeighbourState::Permanent;
            msg.attributes
                .push(NeighbourAttribute::Destination(neigh_addr(n.ip)));
            ignore_missing(self.handle.neighbours().del(msg).execute().await)
                .map_err(EncapError::netlink("delete vxlan neighbour"))?;
            debug!(device = %self.name, ip = %n.ip, "removed neighbour");
        }
        for f in &changes.del_fdb {
            let mut msg = NeighbourMessage::default();
            msg.header.family = AddressFamily::Bridge;
            msg.header.ifindex = self.index;
            msg.header.flags = NeighbourFlags::Own;
            msg.header.state = NeighbourState::Permanent;
            msg.attributes
                .push(NeighbourAttribute::LinkLayerAddress(f.mac.to_vec()));
            msg.attributes
                .push(NeighbourAttribute::Destination(neigh_addr(f.dst)));
            ignore_missing(self.handle.neighbours().del(msg).execute().await)
                .map_err(EncapError::netlink("delete vxlan fdb entry"))?;
            debug!(device = %self.name, mac = %fmt_mac(&f.mac), dst = %f.dst, "removed FDB entry");
        }
        info!(device = %self.name,
              neighbours_set = changes.set_neighbours.len(),
              neighbours_removed = changes.del_neighbours.len(),
              fdb_set = changes.set_fdb.len(),
              fdb_removed = changes.del_fdb.len(),
              "reconciled remote VTEPs");
        Ok(changes)
    }

    /// The permanent neighbour and FDB entries on the device, as the kernel reports them.
    pub async fn current_entries(
        &self,
    ) -> Result<(Vec<NeighbourEntry>, Vec<FdbEntry>), EncapError> {
        let mut neighbours = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let msgs: Vec<NeighbourMessage> = self
                .handle
                .neighbours()
                .get()
                .set_address_family(family)
                .execute()
                .try_collect()
                .await
                .map_err(EncapError::netlink("dump neighbours"))?;
            neighbours.extend(
                msgs.iter()
                    .filter(|m| m.header.ifindex == self.index)
                    .filter(|m| m.header.state == NeighbourState::Permanent)
                    .filter_map(|m| {
                        Some(NeighbourEntry {
                            ip: destination(m)?,
                            mac: lladdr(m)?,
                        })
                    }),
            );
        }
        let msgs: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(EncapError::netlink("dump fdb"))?;
        let fdb = msgs
            .iter()
            .filter(|m| m.header.ifindex == self.index)
            .filter(|m| m.header.state == NeighbourState::Permanent)
            .filter_map(|m| {
                Some(FdbEntry {
                    mac: lladdr(m)?,
                    dst: destination(m)?,
                })
            })
            .filter(|f| f.mac != [0; 6])
            .collect();
        Ok((neighbours, fdb))
    }

    /// Deletes the device (its neighbour and FDB entries go with it).
    pub async fn remove(self) -> Result<(), EncapError> {
        ignore_missing(self.handle.link().del(self.index).execute().await)
            .map_err(EncapError::netlink("delete vxlan link"))
    }
}

fn matches_config(link: &LinkMessage, config: &VxlanConfig, parent_index: u32) -> bool {
    let Some(data) = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Data(InfoData::Vxlan(d)) => Some(d),
            _ => None,
        }),
        _ => None,
    }) else {
        return false;
    };
    let has = |want: &InfoVxlan| data.iter().any(|d| d == want);
    let local = match config.local {
        IpAddr::V4(v4) => InfoVxlan::Local(v4),
        IpAddr::V6(v6) => InfoVxlan::Local6(v6),
    };
    has(&InfoVxlan::Id(config.vni))
        && has(&InfoVxlan::Port(config.port))
        && has(&InfoVxlan::Link(parent_index))
        && has(&InfoVxlan::Learning(false))
        && has(&local)
}

fn family_of(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn neigh_addr(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

/// The `NDA_DST` address. In an `AF_BRIDGE` (FDB) message the parser cannot know the address
/// family from the header, so it hands the raw bytes over as `Other`: 4 bytes are IPv4, 16 IPv6.
fn destination(m: &NeighbourMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        NeighbourAttribute::Destination(NeighbourAddress::Other(raw)) => {
            if let Ok(b) = <[u8; 4]>::try_from(raw.as_slice()) {
                Some(IpAddr::from(b))
            } else {
                <[u8; 16]>::try_from(raw.as_slice()).ok().map(IpAddr::from)
            }
        }
        _ => None,
    })
}

fn lladdr(m: &NeighbourMessage) -> Option<Mac> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(l) => Mac::try_from(l.as_slice()).ok(),
        _ => None,
    })
}

/// A delete of something already gone is done (ENOENT for neighbours, ENODEV for links).
fn ignore_missing(res: Result<(), rtnetlink::Error>) -> Result<(), rtnetlink::Error> {
    match res {
        Err(e) if matches!(netlink_errno(&e), Some(libc::ENOENT | libc::ENODEV)) => Ok(()),
        other => other,
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn vtep(node: &str, tun: &str, last: u8) -> RemoteVtep {
        RemoteVtep {
            node_ip: ip(node),
            tunnel_ip: ip(tun),
            mac: [0x66, 0xca, 0, 0, 0, last],
        }
    }

    #[test]
    fn empty_device_gets_all_entries() {
        let want = [
            vtep("10.0.0.2", "10.244.1.0", 2),
            vtep("10.0.0.3", "10.244.2.0", 3),
        ];
        let c = plan(&want, &[], &[]);
        assert_eq!(c.set_neighbours.len(), 2);
        assert_eq!(c.set_fdb.len(), 2);
        assert!(c.del_neighbours.is_empty() && c.del_fdb.is_empty());
        assert!(c.set_fdb.contains(&FdbEntry {
            mac: want[1].mac,
            dst: ip("10.0.0.3")
        }));
        assert!(c.set_neighbours.contains(&NeighbourEntry {
            ip: ip("10.244.1.0"),
            mac: want[0].mac
        }));
    }

    #[test]
    fn converged_device_needs_nothing() {
        let want = [vtep("10.0.0.2", "10.244.1.0", 2)];
        let n = [NeighbourEntry {
            ip: ip("10.244.1.0"),
            mac: want[0].mac,
        }];
        let f = [FdbEntry {
            mac: want[0].mac,
            dst: ip("10.0.0.2"),
        }];
        assert!(plan(&want, &n, &f).is_empty());
    }

    #[test]
    fn departed_node_is_removed() {
        let gone = vtep("10.0.0.3", "10.244.2.0", 3);
        let n = [NeighbourEntry {
            ip: gone.tunnel_ip,
            mac: gone.mac,
        }];
        let f = [FdbEntry {
            mac: gone.mac,
            dst: gone.node_ip,
        }];
        let c = plan(&[], &n, &f);
        assert_eq!(c.del_neighbours, n.to_vec());
        assert_eq!(c.del_fdb, f.to_vec());
        assert!(c.set_neighbours.is_empty() && c.set_fdb.is_empty());
    }

    #[test]
    fn changed_mac_and_moved_node_are_replaced() {
        // Node rebooted with a new MAC; another node's underlay address changed.
        let old = vtep("10.0.0.2", "10.244.1.0", 2);
        let new = vtep("10.0.0.2", "10.244.1.0", 9);
        let moved = vtep("10.0.5.5", "10.244.3.0", 4);
        let n = [
            NeighbourEntry {
                ip: old.tunnel_ip,
                mac: old.mac,
            },
            NeighbourEntry {
                ip: moved.tunnel_ip,
                mac: moved.mac,
            },
        ];
        let f = [
            FdbEntry {
                mac: old.mac,
                dst: old.node_ip,
            },
            FdbEntry {
                mac: moved.mac,
                dst: ip("10.0.0.4"),
            },
        ];
        let c = plan(&[new, moved], &n, &f);
        assert_eq!(
            c.set_neighbours,
            vec![NeighbourEntry {
                ip: new.tunnel_ip,
                mac: new.mac
            }]
        );
        assert!(
            c.del_neighbours.is_empty(),
            "a replaced neighbour is not deleted"
        );
        assert_eq!(c.del_fdb.len(), 2);
        assert!(c.set_fdb.contains(&FdbEntry {
            mac: new.mac,
            dst: new.node_ip
        }));
        assert!(c.set_fdb.contains(&FdbEntry {
            mac: moved.mac,
            dst: ip("10.0.5.5")
        }));
    }

    #[test]
    fn vtep_macs_are_unicast_local_and_stable() {
        for node in ["10.0.0.1", "192.168.3.4", "fd00::1", "fd00::2"] {
            let m = vtep_mac(ip(node));
            assert_eq!(m[0] & 0x01, 0, "unicast");
            assert_eq!(m[0] & 0x02, 0x02, "locally administered");
            assert_eq!(m, vtep_mac(ip(node)));
        }
        assert_ne!(vtep_mac(ip("fd00::1")), vtep_mac(ip("fd00::2")));
        assert_eq!(fmt_mac(&vtep_mac(ip("10.0.0.1"))), "66:ca:0a:00:00:01");
    }
}

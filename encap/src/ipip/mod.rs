//! The IP-in-IP overlay (RFC 2003) through `tunl0`, with the kernel's `ipip` module when the
//! kernel has it and a userspace data path when it does not.
//!
//! Detection: when the `ipip` module is loaded the kernel itself creates the fallback tunnel
//! `tunl0` in every network namespace (unless `net.core.fb_tunnels_only_for_init_net` says
//! otherwise), so we look it up and configure it, never add it. If there is no `tunl0`, we
//! ask the kernel to create an `ipip` link named `tunl0`: that loads the module on demand where
//! it exists (then `tunl0` appears), and fails with `EOPNOTSUPP` ("Unknown device type") where
//! it does not. In that case [`UserspaceIpip`] provides `tunl0` as a TUN device.
//!
//! Either way the routes are identical (`<block> via <node ip> dev tunl0 onlink`), so the
//! FIB does not care which data path runs; only the userspace path needs the remote block table
//! ([`IpipDataPath::set_remote_nodes`]), because a TUN device loses the route's gateway.

pub mod packet;
pub mod table;
pub mod userspace;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::InfoKind;
use rtnetlink::{Handle, LinkIpIp, LinkUnspec};
use tracing::info;

pub use table::{RemoteBlockTable, RemoteNode};
pub use userspace::{IpipCounters, UserspaceIpip};

use crate::error::netlink_errno;
use crate::{link, mtu, EncapError, Encapsulation};

/// What this node's IP-in-IP device must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpipConfig {
    /// Device name; `tunl0`, the name of the kernel's fallback tunnel.
    pub name: String,
    /// The underlay link: its MTU minus 20 is the tunnel MTU.
    pub parent: String,
    /// The tunnel address (a host address from one of our blocks), used as source by packets
    /// the node itself sends into the overlay.
    pub tunnel_address: Option<Ipv4Addr>,
}

impl IpipConfig {
    pub fn new(parent: impl Into<String>) -> Self {
        IpipConfig {
            name: crate::mode::IPIP_DEVICE.to_string(),
            parent: parent.into(),
            tunnel_address: None,
        }
    }
}

/// Which data path carries IP-in-IP on this node.
#[derive(Debug)]
pub enum IpipDataPath {
    /// The kernel's `tunl0` (the `ipip` module is present).
    Kernel { index: u32 },
    /// Our TUN-based `tunl0` and raw sockets.
    Userspace { index: u32, path: UserspaceIpip },
}

impl IpipDataPath {
    /// Sets up `tunl0` in the network namespace `handle` is bound to, which must be the one at
    /// `netns` (`None`: the caller's own), choosing the kernel device if the kernel supports it
    /// and the userspace fallback otherwise; then sets its MTU from the parent link, its tunnel
    /// address, and brings it up. Logs which data path is in use.
    pub async fn start(
        handle: &Handle,
        netns: Option<&Path>,
        config: &IpipConfig,
    ) -> Result<Self, EncapError> {
        let parent_mtu = link::link_mtu(handle, &config.parent).await?;
        let mtu = mtu::tunnel_mtu(
            parent_mtu,
            Encapsulation::IpIp,
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        )?;
        let datapath = match kernel_tunnel(handle, &config.name).await? {
            Some(index) => {
                info!(device = %config.name, mtu, "IP-in-IP data path: kernel ipip module (tunl0)");
                IpipDataPath::Kernel { index }
            }
            None => {
                let path = UserspaceIpip::start(netns, &config.name)?;
                let index = link::require(handle, &config.name).await?.header.index;
                info!(device = %config.name, mtu,
                      "IP-in-IP data path: userspace fallback (kernel has no ipip module; \
                       TUN device + raw IPPROTO_IPIP socket)");
                IpipDataPath::Userspace { index, path }
            }
        };
        let index = datapath.index();
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).mtu(mtu).up().build())
            .execute()
            .await
            .map_err(EncapError::netlink("set tunl0 up"))?;
        set_tunnel_address(handle, index, config.tunnel_address).await?;
        Ok(datapath)
    }

    pub fn index(&self) -> u32 {
        match self {
            IpipDataPath::Kernel { index } | IpipDataPath::Userspace { index, .. } => *index,
        }
    }

    pub fn is_userspace(&self) -> bool {
        matches!(self, IpipDataPath::Userspace { .. })
    }

    /// Gives the data path the remote nodes and their blocks (the full desired set). The
    /// kernel path takes the next hop from the route and needs nothing; the userspace path
    /// needs it to map inner destinations back to nodes and to vet inbound sources.
    pub fn set_remote_nodes(&self, nodes: &[RemoteNode]) {
        if let IpipDataPath::Userspace { path, .. } = self {
            path.set_remote_nodes(nodes);
        }
    }

    /// Counters of the userspace path (`None` for the kernel path).
    pub fn counters(&self) -> Option<IpipCounters> {
        match self {
            IpipDataPath::Userspace { path, .. } => Some(path.counters()),
            IpipDataPath::Kernel { .. } => None,
        }
    }
}

/// The index of the kernel's IP-in-IP device `name`, loading the module on demand; `None` if
/// the kernel has no `ipip` support.
pub async fn kernel_tunnel(handle: &Handle, name: &str) -> Result<Option<u32>, EncapError> {
    if let Some(existing) = link::by_name(handle, name).await? {
        return match link::kind(&existing) {
            Some(InfoKind::IpIp) => Ok(Some(existing.header.index)),
            other => Err(EncapError::WrongLinkKind {
                name: name.to_string(),
                found: other.map_or_else(|| "unknown".into(), |k| k.to_string()),
                wanted: "ipip",
            }),
        };
    }
    match handle
        .link()
        .add(LinkIpIp::new(name).build())
        .execute()
        .await
    {
        Ok(()) => {}
        Err(e) if netlink_errno(&e) == Some(libc::EEXIST) => {}
        Err(e) if netlink_errno(&e) == Some(libc::EOPNOTSUPP) => return Ok(None),
        Err(e) => {
            return Err(EncapError::Netlink {
                operation: "probe ipip support",
                source: e,
            })
        }
    }
    Ok(Some(link::require(handle, name).await?.header.index))
}

/// Makes `address` (a /32) the only IPv4 address of the tunnel device.
async fn set_tunnel_address(
    handle: &Handle,
    index: u32,
    address: Option<Ipv4Addr>,
) -> Result<(), EncapError> {
    let existing: Vec<_> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(EncapError::netlink("dump tunl0 addresses"))?;
    let mut present = false;
    for msg in existing {
        let addr = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        });
        let Some(addr) = addr else { continue };
        if Some(addr) == address && msg.header.prefix_len == 32 {
            present = true;
            continue;
        }
        handle
            .address()
            .del(msg)
            .execute()
            .await
            .map_err(EncapError::netlink("delete stale tunl0 address"))?;
    }
    if let (Some(addr), false) = (address, present) {
        handle
            .address()
            .add(index, IpAddr::V4(addr), 32)
            .replace()
            .execute()
            .await
            .map_err(EncapError::netlink("add tunl0 tunnel address"))?;
    }
    Ok(())
}

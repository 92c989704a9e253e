//! The kernel side of an attachment, as Calico's plugin builds it
//! (`cni-plugin/pkg/dataplane/linux`), over rtnetlink:
//!
//! - a veth; the host side `cali…` with MAC `ee:ee:ee:ee:ee:ee`, proxy ARP, `proxy_delay` 0
//!   and forwarding on (IPv6: `proxy_ndp`, forwarding, no DAD, no RAs); the pod side
//!   renamed to `CNI_IFNAME` inside the pod's namespace;
//! - in the pod: each address as a host prefix (/32, /128), `169.254.1.1/32` scope link and
//!   the default route via it, and the IPv6 default via `fe80::ecee:eeff:feee:eeee` (the host
//!   veth's link-local address, derived from its MAC). A permanent neighbour entry for
//!   169.254.1.1 is added too: Calico relies on proxy ARP alone, which answers only where the
//!   host has a route to 169.254.1.1 (a default route), and a node without one would leave
//!   its pods unreachable;
//! - on the host: `<address> dev cali… scope link proto <routerd's>` per address.
//!
//! A socket belongs to the namespace of the thread that created it, so the pod's handle is
//! made on a short-lived thread that entered the pod's namespace (`setns(2)`); sysctls of the
//! pod's interfaces are written from such a thread too.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use ipnet::IpNet;
use nix::sched::CloneFlags;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::neighbour::NeighbourState;
use rtnetlink::packet_route::route::{RouteAttribute, RouteProtocol, RouteScope};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::CniError;

/// The host veth's MAC (Calico's), so every pod sees the same gateway MAC.
pub const HOST_MAC: [u8; 6] = [0xee; 6];
/// The pod's IPv4 gateway, link-local, never on the wire as a source.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The pod's IPv6 gateway: the EUI-64 link-local address of [`HOST_MAC`].
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub host_veth: String,
    pub ifname: String,
    pub netns: PathBuf,
    pub mtu: u32,
    /// Host prefixes.
    pub addresses: Vec<IpNet>,
    pub route_protocol: u8,
}

/// What was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub host_mac: String,
    pub pod_mac: String,
}

fn mac_text(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An rtnetlink handle in the current namespace (the node's).
pub fn host_handle() -> Result<Handle, CniError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| CniError::Kernel {
        operation: "open rtnetlink socket",
        reason: e.to_string(),
    })?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Runs `f` on a thread inside the namespace at `netns`.
fn in_netns<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CniError> {
    let bad = |reason: String| CniError::Netns {
        path: netns.display().to_string(),
        reason,
    };
    let ns = File::open(netns).map_err(|e| bad(e.to_string()))?;
    let runtime = tokio::runtime::Handle::try_current().ok();
    std::thread::spawn(move || -> Result<T, String> {
        nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns: {e}"))?;
        let _guard = runtime.as_ref().map(|rt| rt.enter());
        Ok(f())
    })
    .join()
    .map_err(|_| bad("namespace thread panicked".into()))?
    .map_err(bad)
}

/// An rtnetlink handle inside the pod's namespace.
pub fn pod_handle(netns: &Path) -> Result<Handle, CniError> {
    let (conn, handle, _) =
        in_netns(netns, rtnetlink::new_connection)?.map_err(|e| CniError::Kernel {
            operation: "open rtnetlink socket in the pod",
            reason: e.to_string(),
        })?;
    tokio::spawn(conn);
    Ok(handle)
}

/// The link called `name`, if any.
pub async fn link(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, CniError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(l) => Ok(l),
        Err(rtnetlink::Error::NetlinkError(e))
            if e.raw_code() == -libc::ENODEV || e.raw_code() == libc::ENODEV =>
        {
            Ok(None)
        }
        Err(e) => Err(CniError::kernel("look up link")(e)),
    }
}

fn link_mac(l: &LinkMessage) -> Option<Vec<u8>> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(m) => Some(m.clone()),
        _ => None,
    })
}

fn write_sysctl(path: &str, value: &str) -> Result<(), CniError> {
    std::fs::write(path, value).map_err(|e| CniError::Kernel {
        operation: "write sysctl",
        reason: format!("{path}: {e}"),
    })
}

/// Deletes the host veth (its pod side and its routes go with it); nothing if absent.
pub async fn remove_host_veth(handle: &Handle, name: &str) -> Result<bool, CniError> {
    match link(handle, name).await? {
        None => Ok(false),
        Some(l) => {
            handle
                .link()
                .del(l.header.index)
                .execute()
                .await
                .map_err(CniError::kernel("delete host veth"))?;
            Ok(true)
        }
    }
}

/// Builds the attachment, replacing a previous one of the same host veth name.
pub async fn attach(a: &Attachment) -> Result<Attached, CniError> {
    let host = host_handle()?;
    remove_host_veth(&host, &a.host_veth).await?;
    // The pod side is created under a temporary name in the node's namespace (it must not
    // collide with a node interface such as eth0) and renamed once inside the pod.
    let temp = format!(
        "tmp{}",
        &a.host_veth[a.host_veth.len().saturating_sub(11)..]
    );
    host.link()
        .add(LinkVeth::new(&a.host_veth, &temp).mtu(a.mtu).build())
        .execute()
        .await
        .map_err(CniError::kernel("create veth"))?;
    let result = attach_created(&host, a, &temp).await;
    if result.is_err() {
        let _ = remove_host_veth(&host, &a.host_veth).await;
    }
    result
}

async fn attach_created(host: &Handle, a: &Attachment, temp: &str) -> Result<Attached, CniError> {
    let ns = File::open(&a.netns).map_err(|e| CniError::Netns {
        path: a.netns.display().to_string(),
        reason: e.to_string(),
    })?;
    let peer = link(host, temp).await?.ok_or_else(|| CniError::Kernel {
        operation: "create veth",
        reason: format!("peer {temp} missing"),
    })?;
    host.link()
        .set(
            LinkUnspec::new_with_index(peer.header.index)
                .setns_by_fd(ns.as_raw_fd())
                .build(),
        )
        .execute()
        .await
        .map_err(CniError::kernel("move the veth into the pod"))?;
    let host_link = link(host, &a.host_veth)
        .await?
        .ok_or_else(|| CniError::Kernel {
            operation: "create veth",
            reason: format!("{} missing", a.host_veth),
        })?;
    let host_index = host_link.header.index;

    // Host side sysctls before the link is up, so IPv6 never runs DAD on it.
    let v = &a.host_veth;
    let has_v4 = a.addresses.iter().any(|n| n.addr().is_ipv4());
    let has_v6 = a.addresses.iter().any(|n| n.addr().is_ipv6());
    if has_v4 {
        write_sysctl(&format!("/proc/sys/net/ipv4/conf/{v}/proxy_arp"), "1")?;
        write_sysctl(&format!("/proc/sys/net/ipv4/conf/{v}/forwarding"), "1")?;
        // Best effort, as Calico: answer proxy ARP at once.
        let _ = write_sysctl(&format!("/proc/sys/net/ipv4/neigh/{v}/proxy_delay"), "0");
    }
    if has_v6 {
        write_sysctl(&format!("/proc/sys/net/ipv6/conf/{v}/disable_ipv6"), "0")?;
        write_sysctl(&format!("/proc/sys/net/ipv6/conf/{v}/accept_dad"), "0")?;
        write_sysctl(&format!("/proc/sys/net/ipv6/conf/{v}/proxy_ndp"), "1")?;
        write_sysctl(&format!("/proc/sys/net/ipv6/conf/{v}/forwarding"), "1")?;
        let _ = write_sysctl(&format!("/proc/sys/net/ipv6/conf/{v}/accept_ra"), "0");
    }
    host.link()
        .set(
            LinkUnspec::new_with_index(host_index)
                .address(HOST_MAC.to_vec())
                .mtu(a.mtu)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(CniError::kernel("set up the host veth"))?;

    // The pod side.
    let pod = pod_handle(&a.netns)?;
    let pod_link = link(&pod, temp).await?.ok_or_else(|| CniError::Kernel {
        operation: "move the veth into the pod",
        reason: format!("{temp} not in the pod"),
    })?;
    let index = pod_link.header.index;
    pod.link()
        .set(
            LinkUnspec::new_with_index(index)
                .name(a.ifname.clone())
                .mtu(a.mtu)
                .build(),
        )
        .execute()
        .await
        .map_err(CniError::kernel("rename the pod interface"))?;
    if has_v6 {
        let ifname = a.ifname.clone();
        in_netns(&a.netns, move || {
            let _ = write_sysctl("/proc/sys/net/ipv6/conf/all/disable_ipv6", "0");
            write_sysctl(&format!("/proc/sys/net/ipv6/conf/{ifname}/accept_dad"), "0")
        })??;
    }
    if let Some(lo) = link(&pod, "lo").await? {
        pod.link()
            .set(LinkUnspec::new_with_index(lo.header.index).up().build())
            .execute()
            .await
            .map_err(CniError::kernel("set pod lo up"))?;
    }
    pod.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(CniError::kernel("set the pod interface up"))?;
    for net in &a.addresses {
        pod.address()
            .add(index, net.addr(), net.prefix_len())
            .replace()
            .execute()
            .await
            .map_err(CniError::kernel("add the pod address"))?;
    }
    if has_v4 {
        pod.route()
            .add(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(GATEWAY_V4, 32)
                    .output_interface(index)
                    .scope(RouteScope::Link)
                    .build(),
            )
            .replace()
            .execute()
            .await
            .map_err(CniError::kernel("add the pod's gateway route"))?;
        pod.neighbours()
            .add(index, IpAddr::V4(GATEWAY_V4))
            .link_layer_address(&HOST_MAC)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(CniError::kernel("add the pod's gateway neighbour"))?;
        pod.route()
            .add(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(GATEWAY_V4)
                    .output_interface(index)
                    .build(),
            )
            .replace()
            .execute()
            .await
            .map_err(CniError::kernel("add the pod's default route"))?;
    }
    if has_v6 {
        pod.route()
            .add(
                RouteMessageBuilder::<Ipv6Addr>::new()
                    .gateway(GATEWAY_V6)
                    .output_interface(index)
                    .build(),
            )
            .replace()
            .execute()
            .await
            .map_err(CniError::kernel("add the pod's IPv6 default route"))?;
    }
    let pod_mac = link(&pod, &a.ifname)
        .await?
        .and_then(|l| link_mac(&l))
        .map(|m| mac_text(&m))
        .unwrap_or_default();

    add_host_routes(host, host_index, &a.addresses, a.route_protocol).await?;
    Ok(Attached {
        host_mac: mac_text(&HOST_MAC),
        pod_mac,
    })
}

/// The host routes to the pod: `<address> dev <host veth> scope link proto <protocol>`.
pub async fn add_host_routes(
    host: &Handle,
    host_index: u32,
    addresses: &[IpNet],
    protocol: u8,
) -> Result<(), CniError> {
    for net in addresses {
        let msg = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(net.addr(), net.prefix_len())
            .map_err(|e| CniError::Kernel {
                operation: "build host route",
                reason: e.to_string(),
            })?
            .output_interface(host_index)
            .scope(RouteScope::Link)
            .protocol(RouteProtocol::from(protocol))
            .build();
        host.route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(CniError::kernel("add the host route to the pod"))?;
    }
    Ok(())
}

/// The destinations of the host's routes through the link `index`.
async fn routes_via(handle: &Handle, index: u32, v6: bool) -> Result<Vec<IpNet>, CniError> {
    let msg = if v6 {
        RouteMessageBuilder::<Ipv6Addr>::new().build()
    } else {
        RouteMessageBuilder::<Ipv4Addr>::new().build()
    };
    let routes: Vec<_> = handle
        .route()
        .get(msg)
        .execute()
        .try_collect()
        .await
        .map_err(CniError::kernel("dump routes"))?;
    Ok(routes
        .into_iter()
        .filter(|r| {
            r.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == index))
        })
        .filter_map(|r| {
            let len = r.header.destination_prefix_length;
            r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(d) => {
                    let ip = match d {
                        rtnetlink::packet_route::route::RouteAddress::Inet(v4) => IpAddr::V4(*v4),
                        rtnetlink::packet_route::route::RouteAddress::Inet6(v6) => IpAddr::V6(*v6),
                        _ => return None,
                    };
                    IpNet::new(ip, len).ok()
                }
                _ => None,
            })
        })
        .collect())
}

/// CHECK: the attachment is as [`attach`] built it; the error names the first thing missing.
pub async fn check(a: &Attachment) -> Result<(), CniError> {
    let host = host_handle()?;
    let host_link = link(&host, &a.host_veth)
        .await?
        .ok_or_else(|| CniError::Check(format!("host veth {} is missing", a.host_veth)))?;
    let index = host_link.header.index;
    let mut routes = Vec::new();
    for v6 in [false, true] {
        if a.addresses.iter().any(|n| n.addr().is_ipv6() == v6) {
            routes.extend(routes_via(&host, index, v6).await?);
        }
    }
    for net in &a.addresses {
        if !routes.contains(net) {
            return Err(CniError::Check(format!(
                "host route {net} dev {} is missing",
                a.host_veth
            )));
        }
    }
    let pod = pod_handle(&a.netns)?;
    let pod_link = link(&pod, &a.ifname)
        .await?
        .ok_or_else(|| CniError::Check(format!("interface {} is missing in the pod", a.ifname)))?;
    let addrs: Vec<_> = pod
        .address()
        .get()
        .set_link_index_filter(pod_link.header.index)
        .execute()
        .try_collect()
        .await
        .map_err(CniError::kernel("dump pod addresses"))?;
    let have: Vec<IpAddr> = addrs
        .iter()
        .filter_map(|m| {
            m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
        })
        .collect();
    for net in &a.addresses {
        if !have.contains(&net.addr()) {
            return Err(CniError::Check(format!(
                "address {net} is missing on {} in the pod",
                a.ifname
            )));
        }
    }
    Ok(())
}

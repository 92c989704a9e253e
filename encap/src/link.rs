//! Small rtnetlink look-ups shared by the tunnel drivers.

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::Handle;

use crate::error::netlink_errno;
use crate::EncapError;

/// The link called `name`, or `None` if there is none (the kernel answers ENODEV).
pub(crate) async fn by_name(
    handle: &Handle,
    name: &str,
) -> Result<Option<LinkMessage>, EncapError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(EncapError::Netlink {
            operation: "get link",
            source: e,
        }),
    }
}

/// The link called `name`, failing if it does not exist.
pub(crate) async fn require(handle: &Handle, name: &str) -> Result<LinkMessage, EncapError> {
    by_name(handle, name)
        .await?
        .ok_or_else(|| EncapError::LinkNotFound(name.to_string()))
}

pub(crate) fn mtu(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

pub(crate) fn kind(link: &LinkMessage) -> Option<InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k.clone()),
            _ => None,
        }),
        _ => None,
    })
}

pub(crate) fn mac(link: &LinkMessage) -> Option<[u8; 6]> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(addr) => <[u8; 6]>::try_from(addr.as_slice()).ok(),
        _ => None,
    })
}

/// The MTU of the link called `name` (the parent link of a tunnel).
pub async fn link_mtu(handle: &Handle, name: &str) -> Result<u32, EncapError> {
    let link = require(handle, name).await?;
    mtu(&link).ok_or_else(|| EncapError::LinkNotFound(format!("{name} (no MTU reported)")))
}

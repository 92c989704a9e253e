//! Errors of the encapsulation crate.

use std::net::IpAddr;

/// Everything that can go wrong setting up or running a tunnel.
#[derive(Debug, thiserror::Error)]
pub enum EncapError {
    /// A pool asked for both IP-in-IP and VXLAN; Calico rejects such a pool because a route
    /// towards a block can only take one of the two tunnels.
    #[error(
        "IP pool enables both IP-in-IP ({ipip:?}) and VXLAN ({vxlan:?}); only one may be used"
    )]
    ConflictingModes {
        ipip: crate::EncapMode,
        vxlan: crate::EncapMode,
    },
    /// The kernel answered a netlink request with an error.
    #[error("netlink {operation}: {source}")]
    Netlink {
        operation: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
    /// A link we need (parent device, tunnel device) does not exist.
    #[error("link {0} not found")]
    LinkNotFound(String),
    /// A link exists under our name but is not the kind of device we manage.
    #[error("link {name} exists but is a {found} device, not {wanted}")]
    WrongLinkKind {
        name: String,
        found: String,
        wanted: &'static str,
    },
    /// An address of the wrong family for the operation (e.g. an IPv6 node for IP-in-IP).
    #[error("address {0} is of the wrong family for this tunnel")]
    WrongFamily(IpAddr),
    /// The parent link's MTU is too small to carry the tunnel overhead.
    #[error("parent MTU {parent} is too small for an overhead of {overhead} bytes")]
    MtuTooSmall { parent: u32, overhead: u32 },
    /// A system call (TUN device, raw socket, setns) failed.
    #[error("{operation}: {source}")]
    Io {
        operation: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl EncapError {
    pub(crate) fn netlink(operation: &'static str) -> impl FnOnce(rtnetlink::Error) -> Self {
        move |source| EncapError::Netlink { operation, source }
    }

    pub(crate) fn io(operation: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| EncapError::Io { operation, source }
    }
}

/// The errno a netlink error carries, if it is one (positive, e.g. `libc::EEXIST`).
pub(crate) fn netlink_errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => Some(msg.raw_code().abs()),
        _ => None,
    }
}

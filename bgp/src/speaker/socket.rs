//! Socket options a BGP session needs beyond plain TCP: TCP MD5 signatures (RFC 2385) and the
//! Generalized TTL Security Mechanism (RFC 5082).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use ipnet::IpNet;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// `TCP_MD5SIG_MAXKEYLEN` from `<linux/tcp.h>`.
const TCP_MD5SIG_MAXKEYLEN: usize = 80;
/// `sizeof(struct tcp_md5sig)`: a 128-octet `sockaddr_storage`, flags, prefix length, key
/// length, ifindex, then the key.
const TCP_MD5SIG_LEN: usize = 128 + 1 + 1 + 2 + 4 + TCP_MD5SIG_MAXKEYLEN;

/// Installs (or, with an empty key, removes) the TCP MD5 key for connections with `peer` on
/// `socket` (RFC 2385). On a listening socket the key applies to connections it accepts from
/// that address; the kernel then drops unsigned segments from it.
pub fn set_tcp_md5(socket: &impl AsRawFd, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if key.len() > TCP_MD5SIG_MAXKEYLEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TCP MD5 key longer than {TCP_MD5SIG_MAXKEYLEN} octets"),
        ));
    }
    // struct tcp_md5sig laid out by hand: libc does not export it, and building it as bytes
    // keeps the one unsafe call below a plain setsockopt on a buffer we own.
    let mut buf = [0u8; TCP_MD5SIG_LEN];
    match peer {
        IpAddr::V4(a) => {
            buf[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            buf[4..8].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            buf[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            buf[8..24].copy_from_slice(&a.octets());
        }
    }
    buf[130..132].copy_from_slice(&(key.len() as u16).to_ne_bytes());
    buf[136..136 + key.len()].copy_from_slice(key);
    setsockopt_bytes(socket, libc::IPPROTO_TCP, libc::TCP_MD5SIG, &buf)
}

/// GTSM (RFC 5082 §3): send with TTL 255 and accept only packets whose TTL shows they came
/// from at most `hops` routers away (`255 - hops + 1`, so 1 hop = directly connected = 255).
pub fn set_ttl_security(socket: &Socket, peer: IpAddr, hops: u8) -> io::Result<()> {
    let min = 256 - u32::from(hops.max(1));
    match peer {
        IpAddr::V4(_) => {
            socket.set_ttl_v4(255)?;
            setsockopt_bytes(
                socket,
                libc::IPPROTO_IP,
                libc::IP_MINTTL,
                &(min as libc::c_int).to_ne_bytes(),
            )
        }
        IpAddr::V6(_) => {
            socket.set_unicast_hops_v6(255)?;
            setsockopt_bytes(
                socket,
                libc::IPPROTO_IPV6,
                libc::IPV6_MINHOPCOUNT,
                &(min as libc::c_int).to_ne_bytes(),
            )
        }
    }
}

#[allow(unsafe_code)]
fn setsockopt_bytes(
    socket: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &[u8],
) -> io::Result<()> {
    // SAFETY: `value` is a live buffer of exactly `value.len()` bytes for the duration of the
    // call, the kernel only reads it, and the descriptor belongs to `socket`.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Session security settings for one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionSecurity {
    /// TCP MD5 key (RFC 2385).
    pub md5_key: Option<String>,
    /// GTSM hop count (RFC 5082); `None` = ordinary TTL handling, see `ttl`.
    pub ttl_security: Option<u8>,
    /// The TTL to send with when GTSM is off: 1 (or the multihop value) for eBGP, `None`
    /// (the system's, 64) for iBGP.
    pub ttl: Option<u8>,
}

/// Sends the session's packets with this TTL (hop limit), so that an eBGP session with a
/// peer farther away than allowed never gets past the first router.
pub fn set_ttl(socket: &Socket, peer: IpAddr, ttl: u8) -> io::Result<()> {
    match peer {
        IpAddr::V4(_) => socket.set_ttl_v4(u32::from(ttl)),
        IpAddr::V6(_) => socket.set_unicast_hops_v6(u32::from(ttl)),
    }
}

/// A listening TCP socket for BGP with `SO_REUSEADDR`, ready for per-peer MD5 keys.
pub fn listener(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // One socket per family keeps the v4 and v6 MD5 keys unambiguous.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(128)?;
    Ok(socket)
}

/// An unconnected socket for an outgoing session, with the peer's security settings applied
/// before the SYN is sent (MD5 must be in place for the handshake itself).
pub fn outgoing(
    peer: SocketAddr,
    local: Option<IpAddr>,
    security: &SessionSecurity,
) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(peer), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_tcp_nodelay(true)?;
    if let Some(local) = local {
        socket.bind(&SockAddr::from(SocketAddr::new(local, 0)))?;
    }
    if let Some(key) = &security.md5_key {
        set_tcp_md5(&socket, peer.ip(), key.as_bytes())?;
    }
    if let Some(hops) = security.ttl_security {
        set_ttl_security(&socket, peer.ip(), hops)?;
    } else if let Some(ttl) = security.ttl {
        set_ttl(&socket, peer.ip(), ttl)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// The subnets of the interface address `local` (normally one): the link a session from that
/// address runs over, for the third-party next hop rule (RFC 4271 §5.1.3).
pub fn subnets_of(local: IpAddr) -> Vec<IpNet> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|ifa| {
            let (addr, mask) = (ifa.address?, ifa.netmask?);
            let (a, m) = match (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
                (Some(a), Some(m)) => (IpAddr::V4(a.ip()), IpAddr::V4(m.ip())),
                _ => match (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
                    (Some(a), Some(m)) => (IpAddr::V6(a.ip()), IpAddr::V6(m.ip())),
                    _ => return None,
                },
            };
            (a == local)
                .then(|| IpNet::with_netmask(a, m).ok().map(|n| n.trunc()))
                .flatten()
        })
        .collect()
}

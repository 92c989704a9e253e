//! The UDP sockets of single-hop BFD (RFC 5881): one receive socket per address family on
//! the well-known port, reporting each packet's TTL or hop limit, and one send socket per
//! session with TTL 255 and a source port from the dynamic range.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::jitter::XorShift;

/// RFC 5881 §4: "BFD Control packets MUST be transmitted in UDP packets with destination port
/// 3784".
pub const CONTROL_PORT: u16 = 3784;

/// RFC 5881 §4: "The source port MUST be in the range 49152 through 65535."
const SOURCE_PORT_FIRST: u16 = 49152;
const SOURCE_PORT_COUNT: u64 = 65535 - 49152 + 1;

/// RFC 5881 §5: "If BFD authentication is not in use on a session, all BFD Control packets for
/// the session MUST be sent with a Time to Live (TTL) or Hop Limit value of 255. All received
/// BFD Control packets that are demultiplexed to the session MUST be discarded if the
/// received TTL or Hop Limit is not equal to 255."
pub const SINGLE_HOP_TTL: u8 = 255;

/// How many random source ports to try before giving up (each collision is rare: 16,384
/// ports, a handful of sessions per address).
const BIND_ATTEMPTS: usize = 64;

/// The receive socket of one family: the wildcard address on `port`, IPv6 only on the IPv6
/// socket (IPv4 has its own), with the TTL / hop limit of every packet delivered as
/// ancillary data (`IP_RECVTTL`, `IPV6_RECVHOPLIMIT`).
pub(crate) fn receiver(v6: bool, port: u16) -> io::Result<UdpSocket> {
    let (domain, any) = if v6 {
        (Domain::IPV6, IpAddr::V6(Ipv6Addr::UNSPECIFIED))
    } else {
        (Domain::IPV4, IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    if v6 {
        socket.set_only_v6(true)?;
        setsockopt(&socket, sockopt::Ipv6RecvHopLimit, &true)?;
    } else {
        setsockopt(&socket, sockopt::Ipv4RecvTtl, &true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::new(any, port).into())?;
    UdpSocket::from_std(socket.into())
}

/// A session's send socket: bound to `local` and a random port of the dynamic range (the same
/// one for the session's life, RFC 5881 §4), sending with TTL / hop limit 255 (§5).
pub(crate) fn sender(local: IpAddr, rng: &mut XorShift) -> io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(SocketAddr::new(local, 0)),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    match local {
        IpAddr::V4(_) => socket.set_ttl_v4(u32::from(SINGLE_HOP_TTL))?,
        IpAddr::V6(_) => {
            socket.set_only_v6(true)?;
            socket.set_unicast_hops_v6(u32::from(SINGLE_HOP_TTL))?;
        }
    }
    socket.set_nonblocking(true)?;
    let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no free source port");
    for _ in 0..BIND_ATTEMPTS {
        // The remainder is below SOURCE_PORT_COUNT, so the sum stays within 65535.
        let port = SOURCE_PORT_FIRST + (rng.next_u64() % SOURCE_PORT_COUNT) as u16;
        match socket.bind(&SocketAddr::new(local, port).into()) {
            Ok(()) => return UdpSocket::from_std(socket.into()),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// One received datagram.
#[derive(Debug)]
pub(crate) struct Received {
    pub from: SocketAddr,
    pub len: usize,
    /// The TTL / hop limit, if the kernel reported it (it always does with the options set by
    /// [`receiver`]; a packet without is treated as not single-hop).
    pub ttl: Option<u8>,
}

/// Receives one datagram into `buf` with its TTL / hop limit.
pub(crate) async fn recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    socket
        .async_io(Interest::READABLE, || {
            let mut iov = [IoSliceMut::new(&mut *buf)];
            // Room for one int-sized control message (both options deliver an int).
            let mut cmsg = nix::cmsg_space!(i32);
            let msg = recvmsg::<SockaddrStorage>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT,
            )?;
            let mut ttl = None;
            for c in msg.cmsgs()? {
                if let ControlMessageOwned::Ipv4Ttl(t) | ControlMessageOwned::Ipv6HopLimit(t) = c {
                    ttl = u8::try_from(t).ok();
                }
            }
            let from = msg
                .address
                .as_ref()
                .and_then(std_address)
                .ok_or_else(|| io::Error::other("datagram without an IP source address"))?;
            Ok(Received {
                from,
                len: msg.bytes,
                ttl,
            })
        })
        .await
}

fn std_address(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

//! The userspace IP-in-IP data path, for kernels without the `ipip` module.
//!
//! A TUN device named `tunl0` stands in for the kernel's fallback tunnel, so the routes the
//! agent installs (`<block> via <node ip> dev tunl0 onlink`) are the same either way. Being
//! `POINTOPOINT|NOARP`, the TUN device accepts the onlink gateway without neighbour
//! resolution; the kernel hands us the inner packet on the TUN fd and we:
//! - outbound: look the inner destination up in the [`RemoteBlockTable`] (the gateway is lost
//!   on a device without L2) and send the inner packet on a raw `IPPROTO_IPIP` socket to that
//!   node; with `IP_HDRINCL` off the kernel prepends the outer header (protocol 4, source from
//!   the underlay route), exactly what RFC 2003 §3 asks for;
//! - inbound: receive protocol-4 packets on the same raw socket (raw(7): IPv4 raw sockets
//!   receive the full packet, header included), accept them only from known nodes, and write
//!   the inner packet into the TUN fd, from where the kernel routes it to the pod. Because a
//!   raw socket consumed it, the kernel sends no "protocol unreachable" for the packet.
//!
//! Both directions are tokio tasks driven by `AsyncFd` readiness. The table is swapped
//! atomically ([`ArcSwap`]) so the agent can update it without stalling the data path. The TUN
//! device and the socket are created by a thread that entered the node's network namespace, so
//! several instances run side by side in one process (one per namespace), as the tests do.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::task::JoinHandle;
use tracing::{debug, trace, warn};

use super::packet::{self, DropReason};
use super::table::{RemoteBlockTable, RemoteNode};
use crate::EncapError;

/// Largest packet a TUN read or raw receive can return (IPv4 total length is 16 bits).
const MAX_PACKET: usize = 65_536;

/// Packet counters of one userspace data path.
#[derive(Debug, Default)]
struct Counters {
    encapsulated: AtomicU64,
    decapsulated: AtomicU64,
    no_route: AtomicU64,
    unknown_source: AtomicU64,
    malformed: AtomicU64,
    io_errors: AtomicU64,
}

/// A snapshot of the userspace data path's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IpipCounters {
    /// Packets read from the TUN device and sent to a remote node.
    pub encapsulated: u64,
    /// Packets received from a known node and written to the TUN device.
    pub decapsulated: u64,
    /// Outbound packets whose inner destination matched no remote block.
    pub no_route: u64,
    /// Inbound packets from an address that is not a known node.
    pub unknown_source: u64,
    /// Packets that were not well-formed IPv4 (including IPv6 on the TUN device).
    pub malformed: u64,
    /// Reads or writes the kernel refused.
    pub io_errors: u64,
}

impl Counters {
    fn count_drop(&self, reason: DropReason) {
        let c = match reason {
            DropReason::NoRoute(_) => &self.no_route,
            DropReason::UnknownSource(_) => &self.unknown_source,
            DropReason::NotIpv4 | DropReason::Truncated | DropReason::NotIpip(_) => &self.malformed,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> IpipCounters {
        IpipCounters {
            encapsulated: self.encapsulated.load(Ordering::Relaxed),
            decapsulated: self.decapsulated.load(Ordering::Relaxed),
            no_route: self.no_route.load(Ordering::Relaxed),
            unknown_source: self.unknown_source.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            io_errors: self.io_errors.load(Ordering::Relaxed),
        }
    }
}

/// A running userspace IP-in-IP data path. Dropping it stops the tasks and closes the TUN fd,
/// which removes the (non-persistent) TUN device.
#[derive(Debug)]
pub struct UserspaceIpip {
    table: Arc<ArcSwap<RemoteBlockTable>>,
    counters: Arc<Counters>,
    tasks: Vec<JoinHandle<()>>,
}

impl UserspaceIpip {
    /// Creates the TUN device `name` and the raw socket in the network namespace at `netns`
    /// (the caller's own namespace if `None`) and starts the two forwarding tasks on the
    /// current tokio runtime. The device is left down and unaddressed: the caller configures
    /// it over rtnetlink like any other link. Fails (rather than panicking) outside a tokio
    /// runtime.
    pub fn start(netns: Option<&Path>, name: &str) -> Result<Self, EncapError> {
        tokio::runtime::Handle::try_current().map_err(|e| EncapError::Io {
            operation: "start userspace IP-in-IP (needs a tokio runtime)",
            source: std::io::Error::other(e),
        })?;
        let owned_name = name.to_string();
        let create = move || -> Result<(File, Socket), EncapError> {
            let tun = open_tun(&owned_name).map_err(EncapError::io("create TUN device"))?;
            let raw = Socket::new(
                Domain::IPV4,
                Type::RAW,
                Some(Protocol::from(libc::IPPROTO_IPIP)),
            )
            .map_err(EncapError::io("open raw IPPROTO_IPIP socket"))?;
            raw.set_nonblocking(true)
                .map_err(EncapError::io("set raw socket non-blocking"))?;
            Ok((tun, raw))
        };
        let (tun, raw) = match netns {
            Some(path) => crate::netns::run_in(path, create)??,
            None => create()?,
        };
        let tun = Arc::new(register(tun).map_err(EncapError::io("register TUN fd"))?);
        let raw = Arc::new(register(raw).map_err(EncapError::io("register raw socket"))?);
        let table = Arc::new(ArcSwap::from_pointee(RemoteBlockTable::default()));
        let counters = Arc::new(Counters::default());
        let tasks = vec![
            tokio::spawn(outbound(
                tun.clone(),
                raw.clone(),
                table.clone(),
                counters.clone(),
            )),
            tokio::spawn(inbound(tun, raw, table.clone(), counters.clone())),
        ];
        Ok(UserspaceIpip {
            table,
            counters,
            tasks,
        })
    }

    /// Replaces the remote block table (the full desired set).
    pub fn set_remote_nodes(&self, nodes: &[RemoteNode]) {
        self.table.store(Arc::new(RemoteBlockTable::new(nodes)));
    }

    pub fn counters(&self) -> IpipCounters {
        self.counters.snapshot()
    }
}

impl Drop for UserspaceIpip {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// TUN device -> raw socket.
async fn outbound(
    tun: Arc<AsyncFd<File>>,
    raw: Arc<AsyncFd<Socket>>,
    table: Arc<ArcSwap<RemoteBlockTable>>,
    counters: Arc<Counters>,
) {
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        let n = match read_ready(&tun, &mut buf, |mut f: &File, b| f.read(b)).await {
            Ok(n) => n,
            Err(e) => {
                read_error(&counters, "read from TUN device", &e).await;
                continue;
            }
        };
        let table = table.load();
        let (inner, node) = match packet::outbound(&buf[..n], &table) {
            Ok(v) => v,
            Err(reason) => {
                trace!(?reason, "dropped outbound packet");
                counters.count_drop(reason);
                continue;
            }
        };
        let to = SockAddr::from(SocketAddrV4::new(node, 0));
        match raw
            .async_io(Interest::WRITABLE, |s| s.send_to(inner, &to))
            .await
        {
            Ok(_) => {
                counters.encapsulated.fetch_add(1, Ordering::Relaxed);
            }
            // E.g. EMSGSIZE for an inner packet too big for the underlay path: the packet is
            // dropped like a router drops it; the next one must not wait.
            Err(e) => write_error(&counters, "send IP-in-IP packet", node, &e),
        }
    }
}

/// Raw socket -> TUN device.
async fn inbound(
    tun: Arc<AsyncFd<File>>,
    raw: Arc<AsyncFd<Socket>>,
    table: Arc<ArcSwap<RemoteBlockTable>>,
    counters: Arc<Counters>,
) {
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        let n = match read_ready(&raw, &mut buf, |mut s: &Socket, b| s.read(b)).await {
            Ok(n) => n,
            Err(e) => {
                read_error(&counters, "receive IP-in-IP packet", &e).await;
                continue;
            }
        };
        let table = table.load();
        let (inner, from) = match packet::inbound(&buf[..n], &table) {
            Ok(v) => v,
            Err(reason) => {
                debug!(?reason, "dropped inbound packet");
                counters.count_drop(reason);
                continue;
            }
        };
        trace!(%from, len = inner.len(), "decapsulated");
        match tun
            .async_io(Interest::WRITABLE, |mut f| f.write(inner))
            .await
        {
            Ok(_) => {
                counters.decapsulated.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => write_error(&counters, "write to TUN device", from, &e),
        }
    }
}

/// Waits until `fd` is readable and reads one packet with `read`.
async fn read_ready<T: AsRawFd>(
    fd: &AsyncFd<T>,
    buf: &mut [u8],
    read: impl Fn(&T, &mut [u8]) -> std::io::Result<usize>,
) -> std::io::Result<usize> {
    fd.async_io(Interest::READABLE, |inner| read(inner, buf))
        .await
}

/// Counts and logs a failed read, then pauses briefly so a persistently failing fd (device
/// deleted under us) cannot spin a core.
async fn read_error(counters: &Counters, what: &'static str, e: &std::io::Error) {
    counters.io_errors.fetch_add(1, Ordering::Relaxed);
    warn!(error = %e, "{what} failed");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// Counts and logs (at debug: one per packet could flood the log) a packet the kernel refused.
fn write_error(counters: &Counters, what: &'static str, peer: Ipv4Addr, e: &std::io::Error) {
    counters.io_errors.fetch_add(1, Ordering::Relaxed);
    debug!(error = %e, %peer, "{what} failed");
}

/// Types that own their file descriptor: it stays open, and `as_raw_fd` returns the same one,
/// for as long as the value lives.
trait OwnsFd: AsRawFd {}
impl OwnsFd for File {}
impl OwnsFd for Socket {}

/// Registers `inner` with the tokio reactor.
#[allow(unsafe_code)]
fn register<T: OwnsFd>(inner: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: `T: OwnsFd` owns its descriptor, which therefore stays valid and unchanged for the
    // whole life of the `AsyncFd` that takes ownership of it.
    unsafe { AsyncFd::register(inner) }.map_err(std::io::Error::from)
}

/// Opens `/dev/net/tun` and attaches it to a TUN device (`IFF_TUN`: IP packets, no Ethernet
/// header; `IFF_NO_PI`: no packet-information prefix) called `name`, created if absent.
#[allow(unsafe_code)]
fn open_tun(name: &str) -> std::io::Result<File> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("invalid interface name {name:?}"),
        ));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    // SAFETY: `ifreq` is a plain C struct (byte array + union of integers/structs) for which
    // all-zero bytes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: the fd is open for the duration of the call and TUNSETIFF reads and writes one
    // `ifreq`, which `req` is (initialised, NUL-terminated name since len < IFNAMSIZ).
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_tun_names_are_rejected_before_any_syscall() {
        for name in ["", "a-name-longer-than-15", "nul\0"] {
            let err = open_tun(name).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{name:?}");
        }
    }

    #[test]
    fn start_outside_a_runtime_is_an_error() {
        let err = UserspaceIpip::start(None, "tunl0").unwrap_err();
        assert!(matches!(err, EncapError::Io { .. }), "{err}");
    }

    #[test]
    fn drops_are_counted_by_reason() {
        let c = Counters::default();
        c.count_drop(DropReason::NoRoute(Ipv4Addr::LOCALHOST));
        c.count_drop(DropReason::UnknownSource(Ipv4Addr::LOCALHOST));
        c.count_drop(DropReason::NotIpv4);
        c.count_drop(DropReason::NotIpip(17));
        let s = c.snapshot();
        assert_eq!((s.no_route, s.unknown_source, s.malformed), (1, 1, 2));
    }
}

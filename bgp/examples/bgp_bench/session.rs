//! The two synthetic peers of the benchmark: the tester, which writes a precomputed table as
//! fast as TCP takes it, and the monitor, which counts the prefixes the daemon under test
//! passes on.
//!
//! Both are deliberately minimal BGP speakers on blocking sockets, one thread each (the
//! tester has a second one that drains what the daemon sends it), so that the daemon under
//! test, not them, is what the clock measures. They go through OPEN, KEEPALIVE and then
//! answer each KEEPALIVE they receive with one of their own, which keeps both hold timers
//! fresh (RFC 4271 §4.4) without timers of their own. Messages are built and checked with the
//! crate's codec; only the monitor's per-UPDATE work is a hand-written walk over the NLRI
//! fields, because it runs once per received prefix and must stay far cheaper than the
//! daemon's own work on that prefix.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use bytes::Bytes;
use socket2::{Domain, Socket, Type};

use bgp::packet::{
    frame_len, Afi, Capability, DecodeContext, Message, MessageType, Open, Safi, HEADER_LEN,
};

use super::workload::{EncodedTable, Workload};

/// Hold time the synthetic peers offer: long, so that no hold timer can expire during a run
/// even when a slow daemon's KEEPALIVEs queue behind a large table.
const HOLD_TIME: u16 = 240;
/// How long one blocking read may wait before the caller looks at its deadline again.
const READ_POLL: Duration = Duration::from_millis(200);
/// Socket buffers: large, so the kernel never makes the tester wait on small windows.
const SOCKET_BUFFER: usize = 4 << 20;

/// Moves the calling thread into the network namespace at `path` (a `/run/netns/<name>`
/// file). Sockets the thread creates afterwards belong to that namespace for their whole
/// life, whichever thread later uses them (see `network_namespaces(7)`).
pub fn enter_netns(path: &Path) -> Result<()> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("setns into {}", path.display()))
}

/// Who a synthetic peer is.
#[derive(Debug, Clone, Copy)]
pub struct PeerIdentity {
    pub asn: u32,
    pub address: Ipv4Addr,
}

/// An established session: the stream plus a reader that may already hold bytes the daemon
/// sent after its KEEPALIVE.
pub struct Established {
    pub reader: FrameReader,
    pub writer: TcpStream,
}

/// Connects from `me.address` to the daemon, retrying refused connections until `deadline`
/// (the daemon may still be starting), and runs the OPEN/KEEPALIVE exchange (RFC 4271 §8).
pub fn establish(me: PeerIdentity, dut: SocketAddrV4, deadline: Instant) -> Result<Established> {
    let stream = connect(me.address, dut, deadline)?;
    stream.set_read_timeout(Some(READ_POLL))?;
    // A daemon that stops reading must not block a write past the run's deadline.
    let left = deadline.saturating_duration_since(Instant::now());
    stream.set_write_timeout(Some(left.max(Duration::from_millis(1))))?;
    let mut writer = stream.try_clone()?;
    let mut reader = FrameReader::new(stream);
    let open = Open::new(
        me.asn,
        HOLD_TIME,
        me.address,
        vec![Capability::MultiProtocol {
            afi: Afi::Ipv4,
            safi: Safi::Unicast,
        }],
    );
    writer.write_all(&encode(&Message::Open(open)))?;

    let peer_open = match decode(reader.next_message(deadline)?)? {
        Message::Open(o) => o,
        other => bail!("expected the daemon's OPEN, got {}", describe(&other)),
    };
    ensure!(
        peer_open.four_octet_as().is_some(),
        "the daemon did not offer 4-octet AS numbers (RFC 6793), which the workload needs"
    );
    writer.write_all(&encode(&Message::Keepalive))?;
    match decode(reader.next_message(deadline)?)? {
        Message::Keepalive => Ok(Established { reader, writer }),
        other => bail!(
            "expected the daemon's KEEPALIVE after OPEN, got {}",
            describe(&other)
        ),
    }
}

fn connect(local: Ipv4Addr, remote: SocketAddrV4, deadline: Instant) -> Result<TcpStream> {
    loop {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        socket.set_send_buffer_size(SOCKET_BUFFER)?;
        socket.set_recv_buffer_size(SOCKET_BUFFER)?;
        socket
            .bind(&SocketAddr::from((local, 0)).into())
            .with_context(|| format!("binding {local}"))?;
        match socket.connect_timeout(&SocketAddr::V4(remote).into(), Duration::from_secs(2)) {
            Ok(()) => return Ok(socket.into()),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(%local, %remote, error = %e, "connect failed; retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                return Err(anyhow!(e).context(format!("connecting {local} -> {remote}")));
            }
        }
    }
}

fn encode(msg: &Message) -> Bytes {
    msg.to_bytes(&DecodeContext::default())
}

fn decode(bytes: &[u8]) -> Result<Message> {
    let msg = Message::decode(bytes, &DecodeContext::default())
        .map_err(|e| anyhow!("the daemon sent a message we cannot decode: {e}"))?;
    if let Message::Notification(n) = &msg {
        bail!(
            "the daemon sent NOTIFICATION {}/{} ({} data octets)",
            n.code,
            n.subcode,
            n.data.len()
        );
    }
    Ok(msg)
}

fn describe(msg: &Message) -> String {
    format!("{:?}", msg.message_type())
}

/// Reads whole messages off a stream with large reads into one reusable buffer.
pub struct FrameReader {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Octets read so far.
    pub octets: u64,
}

impl FrameReader {
    const CAPACITY: usize = 1 << 20;

    fn new(stream: TcpStream) -> FrameReader {
        FrameReader {
            stream,
            buf: vec![0; Self::CAPACITY],
            start: 0,
            end: 0,
            octets: 0,
        }
    }

    /// The next whole message (header included). Fails on EOF, on a framing error and once
    /// `deadline` has passed.
    pub fn next_message(&mut self, deadline: Instant) -> Result<&[u8]> {
        loop {
            let pending = &self.buf[self.start..self.end];
            if let Some(len) = frame_len(pending)
                .map_err(|e| anyhow!("bad message header from the daemon: {e}"))?
            {
                if pending.len() >= len {
                    let at = self.start;
                    self.start += len;
                    return Ok(&self.buf[at..at + len]);
                }
            }
            if self.buf.len() - self.end < bgp::packet::MAX_MESSAGE_LEN * 16 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if Instant::now() >= deadline {
                bail!("timed out waiting for a message from the daemon");
            }
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => bail!("the daemon closed the connection"),
                Ok(n) => {
                    self.end += n;
                    self.octets += n as u64;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(anyhow!(e).context("reading from the daemon")),
            }
        }
    }
}

/// The type octet of a whole message.
fn message_type(msg: &[u8]) -> Option<MessageType> {
    msg.get(HEADER_LEN - 1)
        .copied()
        .and_then(MessageType::from_code)
}

/// What the tester did.
#[derive(Debug)]
pub struct TesterReport {
    /// Just before the first UPDATE was written: the benchmark's time zero.
    pub first_update_at: Instant,
    /// When the kernel took the last octet of the table.
    pub last_written_at: Instant,
}

/// The tester side after the OPEN exchange: a writer shared with the thread that answers the
/// daemon's KEEPALIVEs, so that a KEEPALIVE never lands inside an UPDATE.
pub struct Tester {
    writer: Arc<Mutex<TcpStream>>,
    drain: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Tester {
    /// Starts draining what the daemon sends (it should send no routes back to their source,
    /// but a full receive buffer would stall its KEEPALIVEs) and answering its KEEPALIVEs.
    pub fn start(session: Established) -> Result<Tester> {
        let writer = Arc::new(Mutex::new(session.writer));
        let stop = Arc::new(AtomicBool::new(false));
        let mut reader = session.reader;
        let (w, s) = (writer.clone(), stop.clone());
        let drain = std::thread::Builder::new()
            .name("tester-drain".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    let far = Instant::now() + Duration::from_secs(3600);
                    let Ok(msg) = reader.next_message(far) else {
                        return;
                    };
                    match message_type(msg) {
                        Some(MessageType::Keepalive) => {
                            let ka = encode(&Message::Keepalive);
                            if let Ok(mut w) = w.lock() {
                                let _ = w.write_all(&ka);
                            }
                        }
                        Some(MessageType::Notification) => {
                            tracing::warn!("the daemon sent the tester a NOTIFICATION");
                            return;
                        }
                        _ => {}
                    }
                }
            })?;
        Ok(Tester {
            writer,
            drain: Some(drain),
            stop,
        })
    }

    /// Writes the whole table, one large write per chunk.
    pub fn send(&self, table: &EncodedTable) -> Result<TesterReport> {
        let first_update_at = Instant::now();
        for chunk in &table.chunks {
            let mut w = self
                .writer
                .lock()
                .map_err(|_| anyhow!("tester writer lock poisoned"))?;
            w.write_all(chunk)
                .context("writing the table to the daemon")?;
        }
        Ok(TesterReport {
            first_update_at,
            last_written_at: Instant::now(),
        })
    }
}

impl Drop for Tester {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(w) = self.writer.lock() {
            let _ = w.shutdown(std::net::Shutdown::Both);
        }
        if let Some(h) = self.drain.take() {
            let _ = h.join();
        }
    }
}

/// What the monitor saw.
#[derive(Debug)]
pub struct MonitorReport {
    /// When the last expected prefix arrived.
    pub last_prefix_at: Instant,
    pub updates: u64,
    pub octets: u64,
}

/// Counts distinct expected prefixes announced on `session` until all of `workload` arrived
/// or `deadline` passes. A bitmap makes duplicates (a daemon may re-announce a prefix) count
/// once; a withdrawal un-counts it.
pub fn monitor(
    mut session: Established,
    workload: Workload,
    deadline: Instant,
) -> Result<MonitorReport> {
    let expected = workload.prefixes as u64;
    let mut seen = vec![0u64; (workload.prefixes as usize).div_ceil(64)];
    let mut received = 0u64;
    let mut updates = 0u64;
    let keepalive = encode(&Message::Keepalive);
    while received < expected {
        let msg = session
            .reader
            .next_message(deadline)
            .map_err(|e| e.context(format!("monitor had {received} of {expected} prefixes")))?;
        match message_type(msg) {
            Some(MessageType::Update) => {
                updates += 1;
                walk_update(&msg[HEADER_LEN..], |network, len, announce| {
                    let Some(i) = workload.index_of(network, len) else {
                        return;
                    };
                    let (word, bit) = (i as usize / 64, 1u64 << (i % 64));
                    let was = seen[word] & bit != 0;
                    if announce && !was {
                        seen[word] |= bit;
                        received += 1;
                    } else if !announce && was {
                        seen[word] &= !bit;
                        received -= 1;
                    }
                })?;
            }
            Some(MessageType::Keepalive) => session.writer.write_all(&keepalive)?,
            Some(MessageType::Notification) => {
                decode(msg)?;
            }
            _ => {}
        }
    }
    Ok(MonitorReport {
        last_prefix_at: Instant::now(),
        updates,
        octets: session.reader.octets,
    })
}

/// Calls `f(network, length, announced)` for every IPv4 unicast prefix an UPDATE body
/// withdraws or announces, in the Withdrawn Routes and NLRI fields (RFC 4271 §4.3) and in
/// MP_REACH_NLRI / MP_UNREACH_NLRI for AFI 1 SAFI 1 (RFC 4760 §3, §4). No ADD-PATH: the
/// monitor never offers it.
fn walk_update(body: &[u8], mut f: impl FnMut(u32, u8, bool)) -> Result<()> {
    let short = || anyhow!("truncated UPDATE from the daemon");
    let wlen = u16::from_be_bytes([
        *body.first().ok_or_else(short)?,
        *body.get(1).ok_or_else(short)?,
    ]) as usize;
    let withdrawn = body.get(2..2 + wlen).ok_or_else(short)?;
    walk_prefixes(withdrawn, |n, l| f(n, l, false))?;
    let rest = &body[2 + wlen..];
    let alen = u16::from_be_bytes([
        *rest.first().ok_or_else(short)?,
        *rest.get(1).ok_or_else(short)?,
    ]) as usize;
    let mut attrs = rest.get(2..2 + alen).ok_or_else(short)?;
    let nlri = &rest[2 + alen..];
    while !attrs.is_empty() {
        let flags = attrs[0];
        let code = *attrs.get(1).ok_or_else(short)?;
        let (len, hdr) = if flags & 0x10 != 0 {
            (
                u16::from_be_bytes([
                    *attrs.get(2).ok_or_else(short)?,
                    *attrs.get(3).ok_or_else(short)?,
                ]) as usize,
                4,
            )
        } else {
            (*attrs.get(2).ok_or_else(short)? as usize, 3)
        };
        let value = attrs.get(hdr..hdr + len).ok_or_else(short)?;
        match code {
            // MP_REACH_NLRI: AFI(2) SAFI(1) NH-len(1) NH reserved(1) NLRI.
            14 if value.get(..3) == Some(&[0, 1, 1]) => {
                let nh = *value.get(3).ok_or_else(short)? as usize;
                walk_prefixes(value.get(4 + nh + 1..).ok_or_else(short)?, |n, l| {
                    f(n, l, true)
                })?;
            }
            // MP_UNREACH_NLRI: AFI(2) SAFI(1) withdrawn.
            15 if value.get(..3) == Some(&[0, 1, 1]) => {
                walk_prefixes(&value[3..], |n, l| f(n, l, false))?;
            }
            _ => {}
        }
        attrs = &attrs[hdr + len..];
    }
    walk_prefixes(nlri, |n, l| f(n, l, true))
}

/// Walks a sequence of `(length, prefix)` IPv4 prefixes (RFC 4271 §4.3).
fn walk_prefixes(mut bytes: &[u8], mut f: impl FnMut(u32, u8)) -> Result<()> {
    while let Some((&len, rest)) = bytes.split_first() {
        ensure!(len <= 32, "prefix length {len} in an IPv4 UPDATE");
        let n = usize::from(len).div_ceil(8);
        let octets = rest.get(..n).ok_or_else(|| anyhow!("truncated prefix"))?;
        let mut addr = [0u8; 4];
        addr[..n].copy_from_slice(octets);
        f(u32::from_be_bytes(addr), len);
        bytes = &rest[n..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_nlri_and_withdrawals() {
        // withdrawn 10.0.0.0/8; attrs: MP_REACH v4 with 16.0.1.0/24; NLRI 16.0.0.0/24.
        let body = [
            0, 2, 8, 10, // withdrawn
            0, 12, 0x80, 14, 9, 0, 1, 1, 0, 0, 24, 16, 0, 1, // attrs (nh len 0)
            24, 16, 0, 0,
        ];
        let mut seen = Vec::new();
        walk_update(&body, |n, l, a| seen.push((Ipv4Addr::from(n), l, a))).unwrap();
        assert_eq!(
            seen,
            vec![
                (Ipv4Addr::new(10, 0, 0, 0), 8, false),
                (Ipv4Addr::new(16, 0, 1, 0), 24, true),
                (Ipv4Addr::new(16, 0, 0, 0), 24, true),
            ]
        );
        assert!(walk_update(&body[..7], |_, _, _| {}).is_err());
    }
}

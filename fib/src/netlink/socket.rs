//! A blocking NETLINK_ROUTE socket that sends requests in batches.
//!
//! rtnetlink's request API sends one message and waits for its answer, which caps route
//! programming at roughly one kernel round trip per route. Here many requests are serialised
//! into one buffer and handed to the kernel in a single `sendmsg`; the kernel processes them
//! in order inside that call (`netlink_rcv_skb`) and queues answers on our socket. Only the
//! last request of a batch asks for an ACK (NLM_F_ACK); the kernel answers any *failing*
//! request with an NLMSG_ERROR regardless of that flag, so one ACK per batch plus one error
//! per failed route is the whole return traffic, and each error names its request by sequence
//! number, which is how failures are attributed to routes.
//!
//! If the receive queue ever overflows (ENOBUFS, answers lost), the batch is sent again, in
//! halves: every request we send (replace, delete-with-ESRCH-as-success) is idempotent, so
//! a replay is harmless.
//!
//! The socket belongs to the network namespace it was created in; [`Rtnl::open_in`] creates it
//! on a short-lived thread that has `setns`'d into the target namespace, so the caller's
//! threads (and the host namespace) are never switched.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use rtnetlink::packet_core::{
    NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket};

use crate::error::FibError;

/// Socket buffer we ask for (SO_RCVBUFFORCE, root only; otherwise capped by rmem_max). The
/// kernel accounts queued answers by skb truesize (about 1 KiB per NLMSG_ERROR), so this
/// holds thousands of per-route errors of one batch.
const SOCKET_BUFFER: usize = 8 << 20;
/// Receive buffer: large enough for any single dump datagram.
const RX_BUFFER: usize = 1 << 20;
/// Upper bound on the bytes of one batch, kept well below the send buffer limit
/// (`netlink_sendmsg` refuses a datagram larger than sk_sndbuf with EMSGSIZE).
const MAX_BATCH_BYTES: usize = 128 << 10;
/// A kernel that does not answer within this time is treated as a broken socket.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);
/// Resends of a batch whose answers were lost to receive-queue overflow (each halves the
/// batch, so 12 get from 4096 requests per write down to 1).
const OVERFLOW_RETRIES: u32 = 12;
/// Restarts of a dump that the kernel flagged NLM_F_DUMP_INTR (table changed mid-dump).
const DUMP_RETRIES: u32 = 5;

/// sizeof(struct nlmsghdr).
const NETLINK_HEADER_LEN: usize = 16;

/// One request of a batch, as the encoder wrote it: the message type (RTM_*) and the NLM_F_*
/// flags beyond REQUEST/ACK; the body is already in the buffer.
pub(crate) type Request = (u16, u16);

pub(crate) struct Rtnl {
    sock: Socket,
    seq: u32,
    tx: Vec<u8>,
    rx: Vec<u8>,
}

impl std::fmt::Debug for Rtnl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rtnl").field("seq", &self.seq).finish()
    }
}

fn sock_err(context: &'static str) -> impl FnOnce(io::Error) -> FibError {
    move |source| FibError::Socket { context, source }
}

fn nix_err(context: &'static str) -> impl FnOnce(Errno) -> FibError {
    move |e| FibError::Socket {
        context,
        source: io::Error::from(e),
    }
}

impl Rtnl {
    /// A socket in the calling thread's network namespace.
    pub(crate) fn open() -> Result<Self, FibError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(sock_err("socket"))?;
        sock.bind_auto().map_err(sock_err("bind"))?;
        sock.connect(&rtnetlink::sys::SocketAddr::new(0, 0))
            .map_err(sock_err("connect"))?;
        // Errors echo only the request header, not the whole request.
        sock.set_cap_ack(true)
            .map_err(sock_err("NETLINK_CAP_ACK"))?;
        if setsockopt(&sock, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
            setsockopt(&sock, sockopt::RcvBuf, &SOCKET_BUFFER).map_err(nix_err("SO_RCVBUF"))?;
        }
        if setsockopt(&sock, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
            setsockopt(&sock, sockopt::SndBuf, &SOCKET_BUFFER).map_err(nix_err("SO_SNDBUF"))?;
        }
        let timeout = TimeVal::new(RECV_TIMEOUT.as_secs() as i64, 0);
        setsockopt(&sock, sockopt::ReceiveTimeout, &timeout).map_err(nix_err("SO_RCVTIMEO"))?;
        Ok(Self {
            sock,
            seq: 0,
            tx: Vec::with_capacity(MAX_BATCH_BYTES + 4096),
            rx: Vec::with_capacity(RX_BUFFER),
        })
    }

    /// A socket in the network namespace bound at `path` (e.g. `/run/netns/<name>`).
    pub(crate) fn open_in(path: &Path) -> Result<Self, FibError> {
        let owned: PathBuf = path.to_owned();
        let ns_err = |source: io::Error| FibError::Namespace {
            path: path.to_owned(),
            source,
        };
        // The thread exists only to enter the namespace; the socket it creates stays bound
        // to that namespace for its whole life, whichever thread uses it afterwards.
        std::thread::Builder::new()
            .name("fib-netns".into())
            .spawn(move || -> Result<Rtnl, FibError> {
                let file = File::open(&owned).map_err(|source| FibError::Namespace {
                    path: owned.clone(),
                    source,
                })?;
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| FibError::Namespace {
                    path: owned.clone(),
                    source: io::Error::from(e),
                })?;
                Rtnl::open()
            })
            .map_err(ns_err)?
            .join()
            .map_err(|_| ns_err(io::Error::other("namespace thread panicked")))?
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Appends one request to the transmit buffer: a header, then the body `body` writes
    /// (`None`: nothing is appended). Returns the sequence number given to the request.
    ///
    /// Requests are encoded straight into the buffer, without an intermediate message value,
    /// so a batch of thousands of routes costs no allocation per route.
    fn push(&mut self, body: impl FnOnce(&mut Vec<u8>) -> Option<Request>) -> Option<u32> {
        let start = self.tx.len();
        self.tx.resize(start + NETLINK_HEADER_LEN, 0);
        let Some((kind, flags)) = body(&mut self.tx) else {
            self.tx.truncate(start);
            return None;
        };
        let len = self.tx.len() - start;
        let seq = self.next_seq();
        let header = &mut self.tx[start..start + NETLINK_HEADER_LEN];
        header[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        header[4..6].copy_from_slice(&kind.to_ne_bytes());
        header[6..8].copy_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        header[8..12].copy_from_slice(&seq.to_ne_bytes());
        header[12..16].copy_from_slice(&0u32.to_ne_bytes());
        // NLMSG_ALIGN: each message starts on a 4-byte boundary.
        self.tx.resize(start + ((len + 3) & !3), 0);
        Some(seq)
    }

    fn send_tx(&mut self) -> Result<(), FibError> {
        let sent = self.sock.send(&self.tx, 0).map_err(sock_err("send"))?;
        if sent != self.tx.len() {
            return Err(FibError::Socket {
                context: "send",
                source: io::Error::other(format!("short send {sent} of {}", self.tx.len())),
            });
        }
        Ok(())
    }

    /// Receives one datagram into `rx`; returns its length. A signal interrupting the wait
    /// is not an error.
    fn recv(&mut self) -> Result<usize, io::Error> {
        let n = loop {
            self.rx.clear();
            match self.sock.recv(&mut self.rx, libc::MSG_TRUNC) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if n > self.rx.len() {
            return Err(io::Error::other(format!(
                "netlink datagram of {n} bytes truncated to {}",
                self.rx.len()
            )));
        }
        Ok(n)
    }

    /// Throws away whatever is queued (after an overflow), without blocking.
    fn drain(&mut self) {
        loop {
            self.rx.clear();
            if self.sock.recv(&mut self.rx, libc::MSG_DONTWAIT).is_err() {
                return;
            }
        }
    }

    /// Encodes `items` with `encode` and sends them in batches of at most `batch` messages;
    /// returns, per item, the errno the kernel refused it with (`None` = done). An item
    /// `encode` cannot express is not sent and gets EINVAL.
    pub(crate) fn execute<T>(
        &mut self,
        items: &[T],
        batch: usize,
        mut encode: impl FnMut(&T, &mut Vec<u8>) -> Option<Request>,
    ) -> Result<Vec<Option<Errno>>, FibError> {
        let mut results = vec![None; items.len()];
        // Item index of each message of the current batch, in sequence-number order.
        let mut sent: Vec<usize> = Vec::with_capacity(batch.max(1));
        let mut start = 0;
        // Shrinks after a receive-queue overflow: the queue could not hold the answers of a
        // batch this size (e.g. many failures with a small SO_RCVBUF), so send less at once.
        let mut limit = batch.max(1);
        while start < items.len() {
            let mut attempt = 0;
            loop {
                // Fill the batch up to `batch` messages or MAX_BATCH_BYTES, then ask for an
                // ACK on its last message only (patching that header's flags in place).
                self.tx.clear();
                sent.clear();
                let first = self.seq.wrapping_add(1);
                let mut end = start;
                let mut last_off = None;
                while end < items.len() && end - start < limit && self.tx.len() < MAX_BATCH_BYTES {
                    let off = self.tx.len();
                    match self.push(|buf| encode(&items[end], buf)) {
                        Some(_) => {
                            last_off = Some(off);
                            sent.push(end);
                        }
                        None => results[end] = Some(Errno::EINVAL),
                    }
                    end += 1;
                }
                let Some(last_off) = last_off else {
                    start = end;
                    break;
                };
                let flags_at = last_off + 6;
                let flags = u16::from_ne_bytes([self.tx[flags_at], self.tx[flags_at + 1]]);
                self.tx[flags_at..flags_at + 2].copy_from_slice(&(flags | NLM_F_ACK).to_ne_bytes());
                let last_seq = self.seq;
                for &i in &sent {
                    results[i] = None;
                }
                self.send_tx()?;
                match self.collect_answers(first, last_seq, &sent, &mut results) {
                    Ok(()) => {
                        start = end;
                        break;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        attempt += 1;
                        limit = (end - start).div_ceil(2).max(1);
                        tracing::warn!(
                            batch = end - start,
                            attempt,
                            next_batch = limit,
                            "netlink receive queue overflowed; resending in smaller batches"
                        );
                        self.drain();
                        if attempt > OVERFLOW_RETRIES {
                            return Err(sock_err("recv")(e));
                        }
                    }
                    Err(e) => return Err(sock_err("recv")(e)),
                }
            }
        }
        Ok(results)
    }

    /// Reads answers until the ACK (or error) of `last`, recording the errors of
    /// `first..=last` in `results` at the item index `sent` gives for each sequence number.
    fn collect_answers(
        &mut self,
        first: u32,
        last: u32,
        sent: &[usize],
        results: &mut [Option<Errno>],
    ) -> Result<(), io::Error> {
        loop {
            let n = self.recv()?;
            for msg in Messages(&self.rx[..n]) {
                let msg = msg.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                if msg.kind != NLMSG_ERROR {
                    // Anything else (a stale answer of an earlier overflowed batch) is ignored.
                    continue;
                }
                let idx = msg.seq.wrapping_sub(first) as usize;
                if let Some(&item) = sent.get(idx) {
                    if let Some(errno) = msg.error() {
                        results[item] = Some(errno);
                    }
                    if msg.seq == last {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Sends one request that the kernel answers with one message (e.g. RTM_GETROUTE for an
    /// address) and hands that answer (nlmsghdr included) to `answer`. A refusal is
    /// `Ok(Err(errno))`: the question had no answer, the socket is fine.
    pub(crate) fn query_raw<R>(
        &mut self,
        body: impl FnOnce(&mut Vec<u8>) -> Option<Request>,
        answer: impl FnOnce(&[u8]) -> R,
    ) -> Result<Result<R, Errno>, FibError> {
        self.tx.clear();
        let Some(seq) = self.push(body) else {
            return Ok(Err(Errno::EINVAL));
        };
        self.send_tx()?;
        let deadline = std::time::Instant::now() + RECV_TIMEOUT;
        while std::time::Instant::now() < deadline {
            let n = self.recv().map_err(sock_err("recv"))?;
            for msg in Messages(&self.rx[..n]) {
                let msg = msg.map_err(|e| FibError::Decode(e.to_owned()))?;
                if msg.seq != seq {
                    continue;
                }
                if msg.kind == NLMSG_ERROR {
                    return Ok(Err(msg.error().unwrap_or(Errno::EIO)));
                }
                return Ok(Ok(answer(msg.raw)));
            }
        }
        Err(sock_err("recv")(io::Error::from(io::ErrorKind::TimedOut)))
    }

    /// Dumps with the request `body` writes (NLM_F_DUMP is added), handing each answer
    /// message (raw bytes, nlmsghdr included) to `each`, which folds it into the accumulator
    /// made by `init`. Raw access lets the caller skip, without decoding, entries it does not
    /// care about (other protocols' routes) and decode the rest without intermediate
    /// allocations. A dump the kernel flags as interrupted (NLM_F_DUMP_INTR: the table
    /// changed meanwhile) starts over with a fresh accumulator.
    pub(crate) fn dump_raw<C>(
        &mut self,
        body: impl Fn(&mut Vec<u8>) -> Request,
        what: &'static str,
        init: impl Fn() -> C,
        mut each: impl FnMut(&mut C, &[u8]) -> Result<(), FibError>,
    ) -> Result<C, FibError> {
        for _ in 0..DUMP_RETRIES {
            self.tx.clear();
            let Some(seq) = self.push(|buf| {
                let (kind, flags) = body(buf);
                Some((kind, flags | NLM_F_DUMP))
            }) else {
                return Err(FibError::Decode(format!("empty {what} dump request")));
            };
            self.send_tx()?;
            let mut out = init();
            let mut interrupted = false;
            'recv: loop {
                let n = self.recv().map_err(sock_err("recv dump"))?;
                for msg in Messages(&self.rx[..n]) {
                    let msg = msg.map_err(|e| FibError::Decode(e.to_owned()))?;
                    if msg.seq != seq {
                        continue;
                    }
                    interrupted |= msg.flags & NLM_F_DUMP_INTR != 0;
                    match msg.kind {
                        NLMSG_DONE => break 'recv,
                        NLMSG_ERROR => {
                            if let Some(errno) = msg.error() {
                                return Err(FibError::Dump { what, errno });
                            }
                        }
                        _ => each(&mut out, msg.raw)?,
                    }
                }
            }
            if !interrupted {
                return Ok(out);
            }
            tracing::debug!(what, "dump interrupted by a concurrent change; restarting");
        }
        Err(FibError::DumpInterrupted {
            what,
            attempts: DUMP_RETRIES,
        })
    }
}

/// One netlink message of a received datagram.
struct Message<'a> {
    kind: u16,
    flags: u16,
    seq: u32,
    /// The whole message, nlmsghdr included.
    raw: &'a [u8],
}

impl Message<'_> {
    /// The errno of an NLMSG_ERROR (`struct nlmsgerr`: a negative errno, 0 for an ACK).
    fn error(&self) -> Option<Errno> {
        let code = self.raw.get(16..20)?;
        let code = i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
        (code != 0).then(|| Errno::from_raw(code.saturating_abs()))
    }
}

/// Iterates the messages of a datagram; yields an error (and stops) on a malformed header.
struct Messages<'a>(&'a [u8]);

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.0;
        if b.len() < NETLINK_HEADER_LEN {
            return None;
        }
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < NETLINK_HEADER_LEN || len > b.len() {
            self.0 = &[];
            return Some(Err("netlink message length out of bounds"));
        }
        self.0 = b.get((len + 3) & !3..).unwrap_or(&[]);
        Some(Ok(Message {
            kind: u16::from_ne_bytes([b[4], b[5]]),
            flags: u16::from_ne_bytes([b[6], b[7]]),
            seq: u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
            raw: &b[..len],
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::netlink::codec;
    use crate::route::{NextHop, Route};

    /// With a receive buffer far too small for the answers of one batch, the kernel drops
    /// answers (ENOBUFS); the batch is resent in halves until every answer fits, and every
    /// request still gets its own result.
    #[test]
    fn receive_queue_overflow_resends_in_smaller_batches() {
        lab::require(&["ip"]);
        let ns = lab::Netns::new("fibovf").unwrap();
        let mut rtnl = Rtnl::open_in(&ns.path()).unwrap();
        setsockopt(&rtnl.sock, sockopt::RcvBuf, &2048usize).unwrap();
        // Every route fails (no route to the gateway), so every request is answered.
        let routes: Vec<Route> = (0..3000u32)
            .map(|i| {
                let dst = format!("10.130.{}.{}/32", i >> 8, i & 255).parse().unwrap();
                Route::via(dst, NextHop::via("10.202.0.1".parse().unwrap()))
            })
            .collect();
        let encode =
            |r: &Route, buf: &mut Vec<u8>| codec::encode_replace(buf, r, 80, None, |_| None).ok();
        let results = rtnl.execute(&routes, 1024, encode).unwrap();
        assert_eq!(results.len(), routes.len());
        assert!(results.iter().all(|r| *r == Some(Errno::ENETUNREACH)));
    }
}

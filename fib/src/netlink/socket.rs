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
    Emitable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable, NLMSG_DONE,
    NLMSG_ERROR, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
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

/// One request of a batch: the message body and the NLM_F_* flags beyond REQUEST/ACK.
pub(crate) type Request = (RouteNetlinkMessage, u16);

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

    /// Appends one request to the transmit buffer, returns its sequence number.
    fn push(&mut self, body: &RouteNetlinkMessage, flags: u16) -> u32 {
        let seq = self.next_seq();
        let body_len = NetlinkSerializable::buffer_len(body);
        let len = NETLINK_HEADER_LEN + body_len;
        let mut header = NetlinkHeader::default();
        header.length = len as u32;
        header.message_type = body.message_type();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let start = self.tx.len();
        // NLMSG_ALIGN: each message starts on a 4-byte boundary.
        self.tx.resize(start + ((len + 3) & !3), 0);
        header.emit(&mut self.tx[start..start + NETLINK_HEADER_LEN]);
        NetlinkSerializable::serialize(body, &mut self.tx[start + NETLINK_HEADER_LEN..start + len]);
        seq
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
        encode: impl Fn(&T) -> Option<Request>,
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
                    match encode(&items[end]) {
                        Some((body, flags)) => {
                            last_off = Some(self.tx.len());
                            self.push(&body, flags);
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
            let mut off = 0;
            while off < n {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.rx[off..n])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = msg.header.length as usize;
                if len == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "zero-length netlink message",
                    ));
                }
                off += (len + 3) & !3;
                let seq = msg.header.sequence_number;
                let idx = seq.wrapping_sub(first) as usize;
                if let NetlinkPayload::Error(err) = msg.payload {
                    if let Some(&item) = sent.get(idx) {
                        if let Some(code) = err.code {
                            results[item] = Some(Errno::from_raw(code.get().abs()));
                        }
                        if seq == last {
                            return Ok(());
                        }
                    }
                }
                // Anything else (a stale answer of an earlier overflowed batch) is ignored.
            }
        }
    }

    /// Dumps `request`, handing each answer message (raw bytes, nlmsghdr included) to `each`,
    /// which folds it into the accumulator made by `init`. Raw access lets the caller skip,
    /// without decoding, entries it does not care about (other protocols' routes) and decode
    /// the rest without intermediate allocations. A dump the kernel flags as interrupted
    /// (NLM_F_DUMP_INTR: the table changed meanwhile) starts over with a fresh accumulator.
    pub(crate) fn dump_raw<C>(
        &mut self,
        request: RouteNetlinkMessage,
        what: &'static str,
        init: impl Fn() -> C,
        mut each: impl FnMut(&mut C, &[u8]) -> Result<(), FibError>,
    ) -> Result<C, FibError> {
        for _ in 0..DUMP_RETRIES {
            self.tx.clear();
            let seq = self.push(&request, NLM_F_DUMP);
            self.send_tx()?;
            let mut out = init();
            let mut interrupted = false;
            'recv: loop {
                let n = self.recv().map_err(sock_err("recv dump"))?;
                let mut off = 0;
                while off + NETLINK_HEADER_LEN <= n {
                    let raw = &self.rx[off..n];
                    let word = |at: usize| {
                        u32::from_ne_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]])
                    };
                    let len = word(0) as usize;
                    let kind = u16::from_ne_bytes([raw[4], raw[5]]);
                    let flags = u16::from_ne_bytes([raw[6], raw[7]]);
                    let msg_seq = word(8);
                    if len < NETLINK_HEADER_LEN || len > raw.len() {
                        return Err(FibError::Decode(format!(
                            "netlink message length {len} out of bounds ({} left)",
                            raw.len()
                        )));
                    }
                    let raw = &raw[..len];
                    off += (len + 3) & !3;
                    if msg_seq != seq {
                        continue;
                    }
                    interrupted |= flags & NLM_F_DUMP_INTR != 0;
                    match kind {
                        NLMSG_DONE => break 'recv,
                        NLMSG_ERROR => {
                            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(raw)
                                .map_err(|e| FibError::Decode(e.to_string()))?;
                            if let NetlinkPayload::Error(e) = msg.payload {
                                if let Some(code) = e.code {
                                    return Err(FibError::Dump {
                                        what,
                                        errno: Errno::from_raw(code.get().abs()),
                                    });
                                }
                            }
                        }
                        _ => each(&mut out, raw)?,
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::netlink::codec;
    use crate::route::{NextHop, Route};
    use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_REPLACE};

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
        let encode = |r: &Route| {
            codec::replace_message(r, 80, |_| None).ok().map(|m| {
                (
                    RouteNetlinkMessage::NewRoute(m),
                    NLM_F_CREATE | NLM_F_REPLACE,
                )
            })
        };
        let results = rtnl.execute(&routes, 1024, encode).unwrap();
        assert_eq!(results.len(), routes.len());
        assert!(results.iter().all(|r| *r == Some(Errno::ENETUNREACH)));
    }
}

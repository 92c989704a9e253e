//! Full-table benchmark (not a test): how fast `routerd` gets N routes from a BIRD
//! top-of-rack into the kernel FIB, beside BIRD doing the same job as the node (what
//! calico-node runs), beside the kernel's own insertion floor (`ip -batch`).
//!
//! `scripts/bench-routerd.sh [options]` (or `cargo build --release -p agent --bin routerd
//! --bin routectl --example routerd-bench && target/release/examples/routerd-bench [options]`):
//!
//! ```text
//! --routes N            routes the ToR announces (default 100000)
//! --routerd PATH        the routerd under test (default: routerd beside this binary;
//!                       copied at start, so a rebuild during the run changes nothing)
//! --routectl PATH       the routectl that writes its datastore (default: beside this binary)
//! --only LIST           comma-separated subset of routerd,bird,ip (default all; ip = the
//!                       floors, ip -batch and fib batch)
//! --timeout SECS        longest wait for a table to fill or empty (default 300)
//! --steady SECS         the steady-state window (default 10)
//! --bird-scan-time S    the node BIRD's kernel `scan time` (default 2, as calico-node)
//! --runs R              measure each R times, round-robin; the table shows medians
//! --keep                keep the working directory (configs, logs) and print where it is
//! --restart             routerd only: after the steady window, SIGKILL routerd, start it
//!                       again and measure the restart (below); off by default
//! ```
//!
//! For each device under test, two fresh namespaces joined by a veth: `tor` (10.0.0.254/24)
//! runs BIRD with N `protocol static` blackholes (`bench`) exported over eBGP (AS 65000,
//! passive) to `node` (10.0.0.1/24, AS 64512). The routes are the /24s of 100.64.0.0/10
//! (16384 of them), then /32s from 100.64.0.0 upwards: outside the node's IP pool
//! (10.244.0.0/16) and its segment. The ToR holds all N before the node starts.
//!
//! * `routerd`: one node on a `file:` datastore with the IPPool 10.244.0.0/16 and a global
//!   BGPPeer to 10.0.0.254 (written with routectl before routerd starts), `--log-level info`,
//!   otherwise defaults. Its routes are counted by protocol 80.
//! * `bird`: BIRD as calico-node configures it: `protocol kernel { learn; persist; scan time
//!   2; graceful restart; merge paths on; ipv4 { import all; export all; }; }`, `protocol
//!   direct`, and calico's BGP template for the peer (`multihop; gateway recursive; graceful
//!   restart; connect delay time 2; connect retry time 5`). Its routes are `proto bird` (12).
//! * `ip`: the floor, the same N routes written into a fresh namespace (a veth at
//!   10.0.0.1/24) by `ip -batch` (`route add X via 10.0.0.254 proto 80`, one request and
//!   one ACK per route), then deleted the same way; a second run does it over one nexthop
//!   object (`nhid`), as routerd installs its routes. And `fib batch`: the same routes
//!   written from this process by routerd's own FIB layer (the `fib` crate: 1024 requests
//!   per sendmsg, one ACK per batch, over a nexthop object), which is the kernel's cost of
//!   the writes with neither BGP nor a daemon around them (`ip -batch` is not the lower
//!   bound: it pays a round trip per route).
//!
//! Measured per device: start -> the session Established (the ToR's own µs timestamp of
//! the state change, `timeformat protocol "%s.%6f"`, read with `birdc`); Established ->
//! the first route, and -> all N routes of its protocol, in the node's kernel; peak RSS
//! (VmHWM) and CPU seconds since start (utime + stime, which include the kernel's work on
//! the process's netlink writes) when the table is full; CPU seconds over the next
//! `--steady` seconds, nothing changing; then the ToR's `disable bench` -> the kernel holds
//! none of them, and the CPU seconds that took. The floors' CPU is that of `ip` (GNU time)
//! or of the writing thread; ip's RSS is that of a client holding no table (and iproute2's
//! batch mode grows by about 4 KB per line), so it is printed but not compared.
//!
//! With `--restart`, routerd (not BIRD) gets one more phase between the steady window and the
//! withdraw: a dump confirms the table, then routerd is SIGKILLed and started again as the
//! first time (same arguments, datastore, control socket; its log is appended to), and the
//! phase ends when the new process is in sync: its control socket (the request `routectl
//! node status` makes, `agent::status::query_status`; routectl has no JSON output for it)
//! answers `state` Running, `fib.in_sync` true and a `fib.last_reconcile_ms` (set by the
//! full reconcile after the sessions settled: Running alone is set just before it, and
//! `in_sync` is already true from the writes before it), polled every 100 ms within
//! `--timeout`. Measured: routes of protocol 80 that left the kernel between the kill and
//! the end of the phase ("deleted in between", expected 0: routerd keeps its kernel routes
//! across a restart and removes stale ones only after its sessions re-sent theirs), which
//! counts the RTM_DELROUTE events (and replaces by another protocol) plus the routes a dump
//! at the end finds missing without an event (a route removed silently with its nexthop
//! object and added again before the end is not seen; after a receive-queue overflow the
//! count is a lower bound, and says so), and the fewest routes the kernel held meanwhile;
//! restart -> Running, -> the ToR's session Established (its own timestamp), -> in sync; the
//! new process's peak RSS and CPU seconds then. The withdraw that follows is the new
//! process's (its CPU; the peak RSS column is the larger of the two processes').
//!
//! The kernel is watched, not polled with `ip route`: a NETLINK_ROUTE socket in the node's
//! namespace subscribed to IPv4 route notifications keeps the set of matching routes (so
//! the moment the last one arrived is known to the event, not to a poll interval), and every
//! claim of "all there" or "all gone" is confirmed by a netlink dump; a dump also resyncs
//! the set after a receive-queue overflow or 1 s without events (routes the kernel removes
//! without notifying, e.g. with their nexthop object). Every wait is bounded by
//! `--timeout`; a table that did not fill in time is reported as `>T s (k%)`, not an error.
//!
//! Needs root, `ip`, `bird`, `birdc` (and `/usr/bin/time` for the floor's CPU and RSS).
//! Only namespaces it creates are touched (named `rl-rdb…-<pid>-<n>`, removed at the end
//! and on error; those of an earlier run that was killed are removed at start).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use agent::status::{query_status, DaemonState};
use anyhow::{anyhow, bail, Context, Result};
use lab::bird::Bird;
use lab::process::{clock_ticks, cpu_seconds, is_alive, peak_rss_mib};
use lab::{require, wait_for, Daemon, Netns};
use nix::errno::Errno;
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{
    bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;
use nix::unistd::Pid;

/// Namespace tags start with this (names `rl-rdb<what>-<pid>-<n>`).
const TAG: &str = "rdb";
const TOR_IP: &str = "10.0.0.254";
const NODE_IP: &str = "10.0.0.1";
const TOR_AS: u32 = 65000;
const NODE_AS: u32 = 64512;
/// routerd's route protocol id (its default) and BIRD's (RTPROT_BIRD).
const PROTO_ROUTERD: u8 = 80;
const PROTO_BIRD: u8 = 12;
/// The announced routes: the /24s of 100.64.0.0/10, then /32s from 100.64.0.0 up.
const BASE: u32 = u32::from_be_bytes([100, 64, 0, 0]);
const BASE_MASK: u32 = 0xffc0_0000;
const SLASH24S: usize = 1 << 14;
const MAX_ROUTES: usize = SLASH24S + (1 << 22);
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);
/// No route event for this long while waiting: dump to catch silent removals.
const IDLE_RESYNC: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dut {
    Routerd,
    Bird,
    Ip,
}

#[derive(Debug)]
struct Options {
    routes: usize,
    routerd: PathBuf,
    routectl: PathBuf,
    only: Vec<Dut>,
    timeout: Duration,
    steady: Duration,
    bird_scan: u32,
    runs: usize,
    keep: bool,
    restart: bool,
}

const USAGE: &str = "usage: routerd-bench [--routes N] [--routerd PATH] [--routectl PATH] \
    [--only routerd,bird,ip] [--timeout SECS] [--steady SECS] [--bird-scan-time SECS] [--runs R] \
    [--keep] [--restart]";

fn parse_args() -> Result<Options> {
    let mut o = Options {
        routes: 100_000,
        routerd: lab::target_binary("routerd")?,
        routectl: lab::target_binary("routectl")?,
        only: vec![Dut::Routerd, Dut::Bird, Dut::Ip],
        timeout: Duration::from_secs(300),
        steady: Duration::from_secs(10),
        bird_scan: 2,
        runs: 1,
        keep: false,
        restart: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |flag: &str| -> Result<String> {
            args.next()
                .with_context(|| format!("{flag} needs a value; {USAGE}"))
        };
        let number = |text: String, flag: &str| -> Result<u64> {
            text.replace('_', "")
                .parse()
                .with_context(|| format!("{flag} needs a number, not {text:?}"))
        };
        match a.as_str() {
            "--routes" => o.routes = number(value(&a)?, &a)? as usize,
            "--routerd" => o.routerd = PathBuf::from(value(&a)?),
            "--routectl" => o.routectl = PathBuf::from(value(&a)?),
            "--timeout" => o.timeout = Duration::from_secs(number(value(&a)?, &a)?),
            "--steady" => o.steady = Duration::from_secs(number(value(&a)?, &a)?),
            "--bird-scan-time" => o.bird_scan = number(value(&a)?, &a)?.max(1) as u32,
            "--runs" => o.runs = number(value(&a)?, &a)?.clamp(1, 100) as usize,
            "--keep" => o.keep = true,
            "--restart" => o.restart = true,
            "--only" => {
                o.only = value(&a)?
                    .split(',')
                    .map(|w| match w.trim() {
                        "routerd" => Ok(Dut::Routerd),
                        "bird" => Ok(Dut::Bird),
                        "ip" => Ok(Dut::Ip),
                        other => bail!("--only takes routerd, bird, ip; not {other:?}"),
                    })
                    .collect::<Result<_>>()?
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}; {USAGE}"),
        }
    }
    if o.routes == 0 || o.routes > MAX_ROUTES {
        bail!("--routes must be 1..={MAX_ROUTES}");
    }
    if o.restart && !o.only.contains(&Dut::Routerd) {
        bail!("--restart measures routerd: --only must include routerd");
    }
    if o.only.contains(&Dut::Routerd) {
        for p in [&o.routerd, &o.routectl] {
            if !p.is_file() {
                bail!(
                    "{} not found: build with `cargo build --release -p agent --bin routerd \
                     --bin routectl --example routerd-bench`, or name it with --routerd / \
                     --routectl",
                    p.display()
                );
            }
        }
    }
    Ok(o)
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// The routes.

/// Route `i` of the announced set.
fn prefix(i: usize) -> (Ipv4Addr, u8) {
    if i < SLASH24S {
        (Ipv4Addr::from(BASE + ((i as u32) << 8)), 24)
    } else {
        (Ipv4Addr::from(BASE + (i - SLASH24S) as u32), 32)
    }
}

/// Whether a kernel route is one of ours (any of them, whatever N is).
fn in_bench_range(dst: u32, len: u8) -> bool {
    dst & BASE_MASK == BASE && len >= 10
}

/// Writes `line(prefix)` for each of the N routes, plus `head` first and `tail` last.
fn write_routes(
    path: &Path,
    n: usize,
    head: &str,
    tail: &str,
    line: impl Fn(&mut BufWriter<File>, Ipv4Addr, u8) -> std::io::Result<()>,
) -> Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    w.write_all(head.as_bytes())?;
    for i in 0..n {
        let (a, l) = prefix(i);
        line(&mut w, a, l)?;
    }
    w.write_all(tail.as_bytes())?;
    w.flush()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Watching a namespace's kernel routes over netlink.

const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_DUMP: u16 = 0x300;
const AF_INET: u8 = 2;
const RTA_DST: u16 = 1;
const RTA_PRIORITY: u16 = 6;
const RTA_TABLE: u16 = 15;

/// What identifies an IPv4 route in the kernel: table, destination, length, tos, metric.
type Key = (u32, u32, u8, u8, u32);

/// One route message: its type, netlink flags, protocol and key.
struct RouteMsg {
    kind: u16,
    flags: u16,
    protocol: u8,
    key: Key,
}

/// What a buffer of netlink messages held besides routes.
enum Tail {
    More,
    Done,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Walks the netlink messages of one datagram, handing IPv4 route messages to `f`.
fn parse_messages(buf: &[u8], mut f: impl FnMut(RouteMsg)) -> Result<Tail> {
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32_at(buf, off).unwrap_or(0) as usize;
        if len < 16 || off + len > buf.len() {
            break;
        }
        let kind = u16_at(buf, off + 4).unwrap_or(0);
        let flags = u16_at(buf, off + 6).unwrap_or(0);
        let body = &buf[off + 16..off + len];
        match kind {
            NLMSG_DONE => return Ok(Tail::Done),
            NLMSG_ERROR => {
                let code = u32_at(body, 0).unwrap_or(0) as i32;
                if code != 0 {
                    bail!("netlink error {}", Errno::from_raw(-code));
                }
            }
            RTM_NEWROUTE | RTM_DELROUTE if body.len() >= 12 && body[0] == AF_INET => {
                let (dst_len, tos, protocol) = (body[1], body[3], body[5]);
                let (mut table, mut dst, mut priority) = (u32::from(body[4]), 0u32, 0u32);
                let mut a = 12;
                while a + 4 <= body.len() {
                    let rta_len = usize::from(u16_at(body, a).unwrap_or(0));
                    let rta_type = u16_at(body, a + 2).unwrap_or(0);
                    if rta_len < 4 || a + rta_len > body.len() {
                        break;
                    }
                    let data = &body[a + 4..a + rta_len];
                    let word = data.get(..4).and_then(|d| <[u8; 4]>::try_from(d).ok());
                    match (rta_type, word) {
                        (RTA_DST, Some(w)) => dst = u32::from_be_bytes(w),
                        (RTA_PRIORITY, Some(w)) => priority = u32::from_ne_bytes(w),
                        (RTA_TABLE, Some(w)) => table = u32::from_ne_bytes(w),
                        _ => {}
                    }
                    a += (rta_len + 3) & !3;
                }
                f(RouteMsg {
                    kind,
                    flags,
                    protocol,
                    key: (table, dst, dst_len, tos, priority),
                });
            }
            _ => {}
        }
        off += (len + 3) & !3;
    }
    Ok(Tail::More)
}

/// A NETLINK_ROUTE socket in the namespace at `ns`, bound to `groups`; created on a
/// short-lived thread that entered the namespace, so no thread of ours changes namespace.
fn netlink_socket_in(ns: &Path, groups: u32) -> Result<OwnedFd> {
    let path = ns.to_owned();
    let fd = std::thread::spawn(move || -> Result<OwnedFd> {
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        setns(&file, CloneFlags::CLONE_NEWNET).context("setns")?;
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .context("netlink socket")?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups)).context("binding netlink")?;
        Ok(fd)
    })
    .join()
    .map_err(|_| anyhow!("the namespace thread panicked"))??;
    // Room for a burst of notifications while a dump holds the state (root: FORCE).
    let buffer = 256usize << 20;
    if setsockopt(&fd, sockopt::RcvBufForce, &buffer).is_err() {
        setsockopt(&fd, sockopt::RcvBuf, &buffer).context("SO_RCVBUF")?;
    }
    setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(0, 100_000)).context("SO_RCVTIMEO")?;
    Ok(fd)
}

#[derive(Debug)]
struct WatchState {
    routes: HashSet<Key>,
    /// When `routes` last changed.
    changed_at: Instant,
    /// Whether that last change was found by a dump rather than by an event.
    changed_by_dump: bool,
    /// When the first route arrived.
    first_at: Option<Instant>,
    /// How many times it changed.
    changes: u64,
    overflowed: bool,
    error: Option<String>,
    /// Routes that left the set since [`FibWatch::mark`] (the restart phase's count).
    losses: Losses,
}

/// What left the set since [`FibWatch::mark`]: removals told by an event (RTM_DELROUTE, or
/// a replace by a route of another protocol), removals found by a dump (the kernel did not
/// tell), the fewest routes the set held at once, and receive-queue overflows (events lost:
/// the counts are then lower bounds).
#[derive(Debug, Clone, Copy)]
struct Losses {
    by_event: u64,
    by_dump: u64,
    fewest: usize,
    overflows: u64,
}

impl WatchState {
    fn apply(&mut self, m: RouteMsg, protocol: u8) {
        let ours = m.protocol == protocol && in_bench_range(m.key.1, m.key.2);
        let changed = match m.kind {
            RTM_NEWROUTE if ours => self.routes.insert(m.key),
            // Replaced by a route of another protocol.
            RTM_NEWROUTE if m.flags & NLM_F_REPLACE != 0 => self.routes.remove(&m.key),
            RTM_DELROUTE if ours => self.routes.remove(&m.key),
            _ => false,
        };
        // Anything but the arrival of one of ours took a route out of the set.
        if changed && !(m.kind == RTM_NEWROUTE && ours) {
            self.losses.by_event += 1;
            self.losses.fewest = self.losses.fewest.min(self.routes.len());
        }
        if changed {
            let now = Instant::now();
            self.changed_at = now;
            self.changed_by_dump = false;
            self.changes += 1;
            if m.kind == RTM_NEWROUTE && self.first_at.is_none() {
                self.first_at = Some(now);
            }
        }
    }
}

/// The routes of one protocol inside the benchmark's range in a namespace's kernel, kept up
/// to date from route notifications by a thread of its own.
#[derive(Debug)]
struct FibWatch {
    protocol: u8,
    state: Arc<Mutex<WatchState>>,
    dump_socket: OwnedFd,
    seq: u32,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

/// How a wait for a route count ended.
#[derive(Debug, Clone, Copy)]
enum Reach {
    /// The count was reached at this moment: that of the event that made it, or (`true`)
    /// that of the dump that found it (the kernel changed without telling).
    At(Instant, bool),
    /// Not within the timeout; the count then.
    Short(usize),
}

fn lock(state: &Mutex<WatchState>) -> MutexGuard<'_, WatchState> {
    // A panic in the reader leaves the state as consistent as any event boundary.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl FibWatch {
    fn start(ns: &Netns, protocol: u8) -> Result<FibWatch> {
        let events = netlink_socket_in(&ns.path(), RTMGRP_IPV4_ROUTE)?;
        let dump_socket = netlink_socket_in(&ns.path(), 0)?;
        let state = Arc::new(Mutex::new(WatchState {
            routes: HashSet::new(),
            changed_at: Instant::now(),
            changed_by_dump: false,
            first_at: None,
            changes: 0,
            overflowed: false,
            error: None,
            losses: Losses {
                by_event: 0,
                by_dump: 0,
                fewest: 0,
                overflows: 0,
            },
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::Builder::new()
                .name("fib-watch".into())
                .spawn(move || read_events(events, &state, &stop, protocol))?
        };
        let mut w = FibWatch {
            protocol,
            state,
            dump_socket,
            seq: 0,
            stop,
            reader: Some(reader),
        };
        w.resync()?;
        Ok(w)
    }

    fn changes(&self) -> u64 {
        lock(&self.state).changes
    }

    /// Starts counting [`Losses`] afresh, from the set as it is now.
    fn mark(&self) {
        let mut st = lock(&self.state);
        st.losses = Losses {
            by_event: 0,
            by_dump: 0,
            fewest: st.routes.len(),
            overflows: 0,
        };
    }

    /// What left the set since [`Self::mark`], and how many routes it holds now.
    fn losses(&self) -> (Losses, usize) {
        let st = lock(&self.state);
        (st.losses, st.routes.len())
    }

    /// Fails with the reader's error, if it had one; resyncs after an overflow.
    fn check(&mut self) -> Result<()> {
        let (overflowed, error) = {
            let st = lock(&self.state);
            (st.overflowed, st.error.clone())
        };
        if let Some(e) = error {
            bail!("watching the kernel's routes: {e}");
        }
        if overflowed {
            self.resync()?;
        }
        Ok(())
    }

    fn first_route_at(&self) -> Option<Instant> {
        lock(&self.state).first_at
    }

    /// Replaces the set with a dump of the kernel, holding the state meanwhile (events that
    /// arrive during the dump queue on the socket and are applied after it, in order, which
    /// converges whatever the dump saw). Returns whether the set changed.
    fn resync(&mut self) -> Result<bool> {
        let state = self.state.clone();
        let mut st = lock(&state);
        st.overflowed = false;
        let found = self.dump(st.routes.len())?;
        if found == st.routes {
            return Ok(false);
        }
        let gone = st.routes.difference(&found).count() as u64;
        st.losses.by_dump += gone;
        st.losses.fewest = st.losses.fewest.min(found.len());
        let now = Instant::now();
        if st.first_at.is_none() && found.len() > st.routes.len() {
            st.first_at = Some(now);
        }
        st.routes = found;
        st.changed_at = now;
        st.changed_by_dump = true;
        st.changes += 1;
        Ok(true)
    }

    /// Our routes, by an RTM_GETROUTE dump.
    fn dump(&mut self, expect: usize) -> Result<HashSet<Key>> {
        let fd = self.dump_socket.as_raw_fd();
        let mut buf = vec![0u8; 1 << 20];
        // Throw away anything left from an earlier dump that failed half way.
        while recv(fd, &mut buf, MsgFlags::MSG_DONTWAIT).is_ok() {}
        self.seq = self.seq.wrapping_add(1);
        let mut req = [0u8; 28];
        req[0..4].copy_from_slice(&28u32.to_ne_bytes());
        req[4..6].copy_from_slice(&RTM_GETROUTE.to_ne_bytes());
        req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        req[16] = AF_INET;
        send(fd, &req, MsgFlags::empty()).context("sending the route dump request")?;
        let mut found = HashSet::with_capacity(expect);
        let deadline = Instant::now() + Duration::from_secs(60);
        let protocol = self.protocol;
        loop {
            if Instant::now() > deadline {
                bail!("a route dump took over 60 s");
            }
            let n = match recv(fd, &mut buf, MsgFlags::empty()) {
                Ok(n) => n,
                Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
                Err(e) => return Err(e).context("reading the route dump"),
            };
            let tail = parse_messages(&buf[..n], |m| {
                if m.protocol == protocol && in_bench_range(m.key.1, m.key.2) {
                    found.insert(m.key);
                }
            })?;
            if matches!(tail, Tail::Done) {
                return Ok(found);
            }
        }
    }

    /// Waits until exactly `target` routes are there (confirmed by a dump), for at most
    /// `timeout`; `check` is called every poll (e.g. fails when the daemon died).
    fn wait_count(
        &mut self,
        target: usize,
        timeout: Duration,
        check: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Reach> {
        let deadline = Instant::now() + timeout;
        let mut last_resync = Instant::now();
        loop {
            check()?;
            let (count, changed_at, by_dump, overflowed, error) = {
                let st = lock(&self.state);
                (
                    st.routes.len(),
                    st.changed_at,
                    st.changed_by_dump,
                    st.overflowed,
                    st.error.clone(),
                )
            };
            if let Some(e) = error {
                bail!("watching the kernel's routes: {e}");
            }
            let idle =
                changed_at.elapsed() >= IDLE_RESYNC && last_resync.elapsed() >= 2 * IDLE_RESYNC;
            if overflowed || count == target || idle {
                let changed = self.resync()?;
                last_resync = Instant::now();
                if !changed && count == target {
                    return Ok(Reach::At(changed_at, by_dump));
                }
            }
            if Instant::now() >= deadline {
                return Ok(Reach::Short(lock(&self.state).routes.len()));
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for FibWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// The watcher's thread: applies every route notification until told to stop (it wakes at
/// least every 100 ms, the socket's receive timeout).
fn read_events(fd: OwnedFd, state: &Mutex<WatchState>, stop: &AtomicBool, protocol: u8) {
    let mut buf = vec![0u8; 1 << 20];
    while !stop.load(Ordering::Relaxed) {
        match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) => {
                let mut st = lock(state);
                if let Err(e) = parse_messages(&buf[..n], |m| st.apply(m, protocol)) {
                    st.error = Some(e.to_string());
                }
            }
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
            Err(Errno::ENOBUFS) => {
                let mut st = lock(state);
                st.overflowed = true;
                st.losses.overflows += 1;
            }
            Err(e) => {
                lock(state).error = Some(e.to_string());
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Processes.

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The last lines of a log file, for an error message.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    format!(
        "--- last lines of {}:\n{}",
        path.display(),
        all[all.len().saturating_sub(lines)..].join("\n")
    )
}

// ---------------------------------------------------------------------------------------
// The setup: a ToR and a node.

/// The ToR and the node's namespace. Fields drop in order: BIRD, then the namespaces.
struct Rack {
    tor: Bird,
    node: Netns,
    _tor_ns: Netns,
}

fn tor_config(dir: &Path, n: usize) -> Result<String> {
    let routes = dir.join("routes.conf");
    write_routes(&routes, n, "", "", |w, a, l| {
        writeln!(w, "route {a}/{l} blackhole;")
    })?;
    Ok(format!(
        "router id {TOR_IP};\ntimeformat protocol \"%s.%6f\";\nprotocol device {{}}\n\
         protocol static bench {{\n  ipv4;\ninclude \"{}\";\n}}\n\
         protocol bgp node {{ local {TOR_IP} as {TOR_AS}; neighbor {NODE_IP} as {NODE_AS};\n  \
           passive on; hold time 90;\n  \
           ipv4 {{ import none; export where proto = \"bench\"; }}; }}\n",
        routes.display()
    ))
}

/// The ToR's session to the node: whether it is Established, and since when (epoch
/// seconds, as `timeformat protocol "%s.%6f"` prints it).
fn tor_session(tor: &Bird) -> Option<(bool, f64)> {
    let out = tor.cmd("show protocols node").ok()?;
    let line = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some("node"))?;
    // name proto table state since info
    let w: Vec<&str> = line.split_whitespace().collect();
    let since: f64 = w.get(4)?.parse().ok()?;
    Some((
        w.get(5).is_some_and(|i| i.starts_with("Established")),
        since,
    ))
}

/// The `Instant` of a wall-clock time given in epoch seconds (now, if it is in the future).
fn instant_of_epoch(epoch: f64) -> Instant {
    let now = Instant::now();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let ago = Duration::from_secs_f64((wall - epoch).clamp(0.0, 3600.0));
    now.checked_sub(ago).unwrap_or(now)
}

/// Starts a ToR holding all `n` routes (waits until its table has them) and a node beside it.
fn rack(dir: &Path, tor_conf: &str, n: usize, timeout: Duration) -> Result<Rack> {
    let tor_ns = Netns::new(&format!("{TAG}tor"))?;
    let node = Netns::new(&format!("{TAG}node"))?;
    lab::veth(&tor_ns, "eth0", &node, "eth0")?;
    tor_ns.addr("eth0", &format!("{TOR_IP}/24"))?;
    node.addr("eth0", &format!("{NODE_IP}/24"))?;
    let started = Instant::now();
    let tor = Bird::start(&tor_ns, &dir.join("tor"), tor_conf)?;
    wait_for(
        &format!("the ToR to load its {n} routes"),
        timeout,
        Duration::from_millis(250),
        || {
            let out = tor.cmd("show route count").ok()?;
            // "1000 of 1000 routes for 1000 networks in table master4"
            let count: usize = out
                .lines()
                .find(|l| l.contains(" routes for "))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|w| w.parse().ok())?;
            (count >= n).then_some(())
        },
    )?;
    println!(
        "  ToR up with {n} routes in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(Rack {
        tor,
        node,
        _tor_ns: tor_ns,
    })
}

/// A measured duration, or how far it got.
#[derive(Debug, Clone, Copy)]
enum Took {
    Done(Duration),
    /// Timed out after this long with this share (0..1) of the work done.
    Short(Duration, f64),
    None,
}

impl Took {
    fn secs(self) -> Option<f64> {
        match self {
            Took::Done(d) => Some(d.as_secs_f64()),
            _ => None,
        }
    }

    fn show(self) -> String {
        match self {
            Took::Done(d) => format!("{:.3}", d.as_secs_f64()),
            Took::Short(d, share) => format!(">{:.0} ({:.0}%)", d.as_secs_f64(), share * 100.0),
            Took::None => "-".into(),
        }
    }
}

#[derive(Debug)]
struct Row {
    name: String,
    established: Took,
    /// Established -> the first route in the kernel, s.
    first: Option<f64>,
    to_kernel: Took,
    withdraw: Took,
    rss_mb: Option<f64>,
    cpu: Option<f64>,
    steady: Option<f64>,
    withdraw_cpu: Option<f64>,
    /// The restart phase (`--restart`), when it ran.
    restart: Option<Restarted>,
    notes: Vec<String>,
}

/// What the restart phase measured (medians over runs, but the worst of the losses).
#[derive(Debug, Clone, Copy)]
struct Restarted {
    /// Restart -> the daemon state Running.
    running: Option<f64>,
    /// Restart -> the ToR's session Established (the ToR's timestamp).
    established: Option<f64>,
    /// Restart -> Running, FIB in sync, its full reconcile done.
    in_sync: Took,
    /// Routes of ours that left the kernel between the kill and the end of the phase.
    deleted: u64,
    /// The fewest of ours the kernel held meanwhile.
    fewest: usize,
    /// Whether the watch lost events (`deleted` is then a lower bound).
    overflowed: bool,
    /// The new process's peak RSS and CPU seconds when it was in sync (or at the timeout).
    rss_mb: Option<f64>,
    cpu: Option<f64>,
}

impl Row {
    fn new(name: &str) -> Row {
        Row {
            name: name.into(),
            established: Took::None,
            first: None,
            to_kernel: Took::None,
            withdraw: Took::None,
            rss_mb: None,
            cpu: None,
            steady: None,
            withdraw_cpu: None,
            restart: None,
            notes: Vec::new(),
        }
    }
}

/// The daemon on the node, however it was started; stopped when dropped.
enum NodeDaemon {
    Routerd { _daemon: Daemon },
    Bird { _bird: Bird },
}

/// Starts a daemon in the node's namespace, its files in a directory: it and its pid.
type Starter<'a> = dyn Fn(&Netns, &Path) -> Result<Started> + 'a;

/// A daemon just started: it, its pid, and when it was started (after any preparation
/// such as writing its datastore).
struct Started {
    daemon: NodeDaemon,
    pid: u32,
    at: Instant,
}

/// A daemon to measure on the node.
struct Subject<'a> {
    name: &'a str,
    /// The protocol id of its kernel routes.
    protocol: u8,
    /// Its log, quoted when it fails.
    log: PathBuf,
    /// Starts it in the node's namespace (files in the directory).
    start: &'a Starter<'a>,
    /// With `--restart`: how to start it again, and its control socket.
    restart: Option<Restart<'a>>,
}

/// How to restart a routerd that was killed: the same start without the preparation, and
/// where it answers its status.
struct Restart<'a> {
    start: &'a Starter<'a>,
    control_socket: PathBuf,
}

/// Fails when the daemon is no longer running, with its log's last lines.
fn check_alive(name: &str, pid: u32, log: &Path) -> Result<()> {
    if is_alive(pid) {
        Ok(())
    } else {
        bail!("{name} (pid {pid}) exited\n{}", tail(log, 30))
    }
}

/// Measures one daemon on a fresh rack.
fn measure(o: &Options, dir: &Path, tor_conf: &str, s: &Subject) -> Result<Row> {
    let (n, name, log) = (o.routes, s.name, s.log.as_path());
    let mut row = Row::new(name);
    let rack = rack(dir, tor_conf, n, o.timeout)?;
    let mut watch = FibWatch::start(&rack.node, s.protocol)?;
    let Started {
        daemon,
        pid,
        at: t0,
    } = (s.start)(&rack.node, dir)?;
    let mut alive = || check_alive(name, pid, log);
    // The ToR stamps the state change itself (µs, epoch): polling only finds out about it,
    // so a ToR slow to answer birdc while it sends the table costs the figure nothing.
    let since = wait_for(
        "the ToR's session to the node Established",
        ESTABLISH_TIMEOUT,
        Duration::from_millis(50),
        || match tor_session(&rack.tor) {
            _ if !is_alive(pid) => Some(None),
            Some((true, since)) => Some(Some(since)),
            _ => None,
        },
    )
    .with_context(|| tail(log, 30))?;
    alive()?;
    let established = since.map_or_else(Instant::now, instant_of_epoch);
    row.established = Took::Done(established.saturating_duration_since(t0));
    println!(
        "  {name}: Established after {:.3} s; waiting for {n} routes",
        row.established.secs().unwrap_or_default()
    );
    let reached = watch.wait_count(n, o.timeout, &mut alive)?;
    // A route can only come over an Established session (a guard: the ToR's clock is ours).
    let first = watch.first_route_at();
    let established = first.map_or(established, |f| f.min(established));
    row.established = Took::Done(established.saturating_duration_since(t0));
    row.first = first.map(|t| t.saturating_duration_since(established).as_secs_f64());
    match reached {
        Reach::At(t, by_dump) => {
            row.to_kernel = Took::Done(t.saturating_duration_since(established));
            if by_dump {
                row.notes.push(format!(
                    "{name}: the last routes were found by a dump (the kernel did not notify): \
                     time to kernel is an upper bound"
                ));
            }
        }
        Reach::Short(k) => {
            row.to_kernel = Took::Short(established.elapsed(), k as f64 / n as f64);
        }
    }
    let cpu_full = cpu_seconds(pid)?;
    row.cpu = Some(cpu_full);
    println!(
        "  {name}: {} s to the kernel; {cpu_full:.2} CPU s, {:.0} MB peak RSS",
        row.to_kernel.show(),
        peak_rss_mib(pid)?
    );
    if let Took::Done(_) = row.to_kernel {
        let changes = watch.changes();
        std::thread::sleep(o.steady);
        alive()?;
        row.steady = Some(cpu_seconds(pid)? - cpu_full);
        let moved = watch.changes() - changes;
        if moved > 0 {
            row.notes.push(format!(
                "{name}: the kernel table changed {moved} times in the steady window"
            ));
        }
    }
    let (daemon, pid, rss_before) = match (&s.restart, row.to_kernel) {
        (Some(restart), Took::Done(_)) => {
            let rss_before = peak_rss_mib(pid)?;
            let killed = Killed { daemon, pid };
            let (figures, started) = restart_phase(o, dir, &rack, &mut watch, s, restart, killed)?;
            if figures.overflowed {
                row.notes.push(format!(
                    "{name}: the watch lost events during the restart: \"deleted in between\" \
                     is a lower bound"
                ));
            }
            row.restart = Some(figures);
            (started.daemon, started.pid, Some(rss_before))
        }
        (Some(_), _) => {
            row.notes.push(format!(
                "{name}: not restarted, its table did not fill within the timeout"
            ));
            (daemon, pid, None)
        }
        (None, _) => (daemon, pid, None),
    };
    let mut alive = || check_alive(name, pid, log);
    let cpu_before = cpu_seconds(pid)?;
    let withdrawn = Instant::now();
    rack.tor.cmd("disable bench")?;
    match watch.wait_count(0, o.timeout, &mut alive)? {
        Reach::At(t, by_dump) => {
            row.withdraw = Took::Done(t.saturating_duration_since(withdrawn));
            if by_dump {
                row.notes.push(format!(
                    "{name}: the last removals were found by a dump (the kernel did not \
                     notify): withdraw time is an upper bound"
                ));
            }
        }
        Reach::Short(k) => {
            row.withdraw = Took::Short(withdrawn.elapsed(), 1.0 - k as f64 / n as f64);
        }
    }
    row.withdraw_cpu = Some(cpu_seconds(pid)? - cpu_before);
    let rss = peak_rss_mib(pid)?;
    row.rss_mb = Some(rss_before.map_or(rss, |b| b.max(rss)));
    println!(
        "  {name}: withdrawn in {} s; peak RSS {:.0} MB",
        row.withdraw.show(),
        row.rss_mb.unwrap_or_default()
    );
    drop(watch);
    drop(daemon);
    drop(rack);
    Ok(row)
}

/// The restart phase (`--restart`): confirms the table by a dump, SIGKILLs the daemon,
/// starts it again and waits until it is in sync (see the module docs). Returns the figures
/// and the new daemon.
fn restart_phase(
    o: &Options,
    dir: &Path,
    rack: &Rack,
    watch: &mut FibWatch,
    s: &Subject,
    restart: &Restart,
    old: Killed,
) -> Result<(Restarted, Started)> {
    let (n, name, log) = (o.routes, s.name, s.log.as_path());
    // The set the losses are counted from, as the kernel has it.
    watch.resync()?;
    watch.check()?;
    watch.mark();
    let (_, before) = watch.losses();
    let Killed { daemon, pid } = old;
    let killed = Instant::now();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL)
        .with_context(|| format!("SIGKILL to {name} (pid {pid})"))?;
    // Daemon's drop kills (again; it is dead or dying) and reaps it.
    drop(daemon);
    if is_alive(pid) {
        bail!("{name} (pid {pid}) still runs after SIGKILL");
    }
    let started = (restart.start)(&rack.node, dir)?;
    let (new_pid, t0) = (started.pid, started.at);
    println!(
        "  {name}: SIGKILLed with {before} routes in the kernel; restarted {:.3} s later \
         (pid {new_pid}); waiting until it is in sync",
        t0.saturating_duration_since(killed).as_secs_f64()
    );
    // Polled at a fixed cadence (each answer within 1 s), within --timeout.
    let deadline = t0 + o.timeout;
    let polls = o.timeout.as_millis() / POLL.as_millis() + 1;
    let (mut running, mut in_sync) = (None, None);
    let mut last = String::from("no answer yet");
    let mut last_routes = 0u64;
    for _ in 0..polls {
        watch.check()?;
        check_alive(name, new_pid, log)?;
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .clamp(POLL, Duration::from_secs(1));
        match query_status(&restart.control_socket, wait) {
            Ok(st) => {
                let now = Instant::now();
                let is_running = st.state == DaemonState::Running;
                if is_running && running.is_none() {
                    running = Some(now);
                }
                last_routes = st.fib.routes;
                last = format!(
                    "state {}, fib {} routes, in_sync {}, last_reconcile_ms {:?}",
                    st.state.as_str(),
                    st.fib.routes,
                    st.fib.in_sync,
                    st.fib.last_reconcile_ms
                );
                if is_running && st.fib.in_sync && st.fib.last_reconcile_ms.is_some() {
                    in_sync = Some(now);
                    break;
                }
            }
            Err(e) => last = e.to_string(),
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        // The next multiple of 100 ms since the restart (a slow answer skips polls).
        let ticks = now.saturating_duration_since(t0).as_millis() / POLL.as_millis() + 1;
        let next = t0 + POLL * u32::try_from(ticks).unwrap_or(u32::MAX / 1000);
        std::thread::sleep(next.saturating_duration_since(now).min(POLL));
    }
    // The new process's figures at that point.
    let cpu = cpu_seconds(new_pid)?;
    let rss = peak_rss_mib(new_pid)?;
    let established = match tor_session(&rack.tor) {
        Some((true, since)) => Some(
            instant_of_epoch(since)
                .saturating_duration_since(t0)
                .as_secs_f64(),
        ),
        _ => None,
    };
    // The end of the phase: a dump finds what left without an event.
    watch.resync()?;
    watch.check()?;
    let (losses, now_count) = watch.losses();
    let deleted = losses.by_event + losses.by_dump;
    let secs = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(t0).as_secs_f64());
    let figures = Restarted {
        running: secs(running),
        established,
        in_sync: match in_sync {
            Some(t) => Took::Done(t.saturating_duration_since(t0)),
            // How far it got: the routes it wants, of the N.
            None => Took::Short(
                t0.elapsed(),
                (last_routes as f64 / n.max(1) as f64).min(1.0),
            ),
        },
        deleted,
        fewest: losses.fewest,
        overflowed: losses.overflows > 0,
        rss_mb: Some(rss),
        cpu: Some(cpu),
    };
    // Why it settled when it did (End-of-RIB from every peer, or the settle time).
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let settled = text
        .rsplit_once(RESTART_MARK)
        .map_or("", |(_, after)| after)
        .lines()
        .find(|l| l.contains("sessions settled"))
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("all_up=")))
        .unwrap_or("all_up=?")
        .to_string();
    println!(
        "  {name}: restart -> Running {} s, -> Established {} s (the ToR's stamp), -> in sync \
         {} s (last status: {last}; log: {settled})",
        opt(figures.running, 3),
        opt(figures.established, 3),
        figures.in_sync.show()
    );
    println!(
        "  {name}: deleted in between: {deleted} ({} by an event, {} found missing by a dump{}); \
         fewest in the kernel meanwhile {} of {before}, now {now_count}",
        losses.by_event,
        losses.by_dump,
        if losses.overflows > 0 {
            format!(
                "; the watch overflowed {} times: a lower bound",
                losses.overflows
            )
        } else {
            String::new()
        },
        losses.fewest
    );
    println!("  {name}: restarted process at in sync: {cpu:.2} CPU s, {rss:.0} MB peak RSS");
    Ok((figures, started))
}

/// The line the benchmark writes into routerd's log before it starts it again.
const RESTART_MARK: &str = "--- routerd-bench: routerd SIGKILLed, started again ---";

/// A daemon to be killed: it and its pid.
struct Killed {
    daemon: NodeDaemon,
    pid: u32,
}

fn routerd_datastore(dir: &Path) -> String {
    format!("file:{}", dir.join("datastore").display())
}

fn routerd_control_socket(dir: &Path) -> PathBuf {
    dir.join("routerd.ctl")
}

/// Writes routerd's datastore (the IPPool and the BGPPeer, with routectl), then starts it.
fn start_routerd(o: &Options, node: &Netns, dir: &Path) -> Result<Started> {
    let datastore = routerd_datastore(dir);
    let manifest = dir.join("cluster.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: pool\n\
             spec:\n  cidr: 10.244.0.0/16\n  blockSize: 26\n  ipipMode: Never\n  \
             vxlanMode: Never\n---\n\
             apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\n\
             spec:\n  peerIP: {TOR_IP}\n  asNumber: {TOR_AS}\n"
        ),
    )?;
    lab::run(
        Command::new(&o.routectl)
            .arg("--datastore")
            .arg(&datastore)
            .arg("create")
            .arg("-f")
            .arg(&manifest),
    )
    .context("creating the IPPool and BGPPeer with routectl")?;
    spawn_routerd(o, node, dir, false)
}

/// Starts routerd on the datastore in `dir`, logging to `dir/routerd.log` (appended to when
/// `again`, a restart).
fn spawn_routerd(o: &Options, node: &Netns, dir: &Path, again: bool) -> Result<Started> {
    let datastore = routerd_datastore(dir);
    let path = dir.join("routerd.log");
    let mut log = if again {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)?;
        writeln!(f, "{RESTART_MARK}")?;
        f
    } else {
        File::create(&path)?
    };
    log.flush()?;
    let routerd = o.routerd.to_string_lossy().into_owned();
    let socket = routerd_control_socket(dir).to_string_lossy().into_owned();
    // `ip netns exec` execs routerd: the child's pid is routerd's.
    let at = Instant::now();
    let child = node
        .command(&[
            &routerd,
            "--node-name",
            "node-1",
            "--node-ip",
            &format!("{NODE_IP}/24"),
            "--datastore",
            &datastore,
            "--control-socket",
            &socket,
            "--health-listen",
            "none",
            "--metrics-listen",
            "none",
            "--log-level",
            "info",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting routerd")?;
    let daemon = Daemon::from_child(child);
    let pid = daemon.pid();
    Ok(Started {
        daemon: NodeDaemon::Routerd { _daemon: daemon },
        pid,
        at,
    })
}

fn node_bird_config(scan: u32) -> String {
    format!(
        "router id {NODE_IP};\n\
         protocol kernel {{\n  learn;\n  persist;\n  scan time {scan};\n  \
           ipv4 {{ import all; export all; }};\n  graceful restart;\n  merge paths on;\n}}\n\
         protocol device {{ scan time 2; }}\n\
         protocol direct {{ ipv4; interface -\"cali*\", \"*\"; }}\n\
         protocol bgp tor {{\n  local {NODE_IP} as {NODE_AS};\n  neighbor {TOR_IP} as {TOR_AS};\n  \
           multihop;\n  ipv4 {{ gateway recursive; import all; export none; }};\n  \
           graceful restart;\n  connect delay time 2;\n  connect retry time 5;\n  \
           error wait time 5,30;\n}}\n"
    )
}

fn start_bird(o: &Options, node: &Netns, dir: &Path) -> Result<Started> {
    let at = Instant::now();
    let bird = Bird::start(node, &dir.join("node"), &node_bird_config(o.bird_scan))?;
    // The only process in the node's namespace.
    let pids = lab::run(Command::new("ip").args(["netns", "pids", node.name()]))?;
    let pid = pids
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "bird")
        })
        .context("no bird process in the node's namespace")?;
    Ok(Started {
        daemon: NodeDaemon::Bird { _bird: bird },
        pid,
        at,
    })
}

/// A fresh namespace for a floor measurement: a veth pair with both ends in it (no dummy
/// module needed), `d0` at 10.0.0.1/24 with the "ToR" 10.0.0.254 on its subnet.
fn floor_namespace() -> Result<Netns> {
    let ns = Netns::new(&format!("{TAG}floor"))?;
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"])?;
    ns.ip(&["link", "set", "d1", "up"])?;
    ns.addr("d0", &format!("{NODE_IP}/24"))?;
    Ok(ns)
}

const FIB_ROW: &str = "fib batch";

/// CPU seconds (user + system) of the calling thread so far.
fn thread_cpu_seconds(tick: f64) -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat")?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/thread-self/stat")?;
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    if f.len() != 2 {
        bail!("no utime/stime in /proc/thread-self/stat");
    }
    Ok((f[0] + f[1]) / tick)
}

/// A second floor, batched netlink: the same routes written by routerd's own FIB layer (the
/// `fib` crate: 1024 requests per sendmsg, one ACK per batch, over a nexthop object) from
/// this process, with no BGP and no daemon: what routerd's kernel writes cost by themselves.
fn measure_fib(o: &Options, tick: f64) -> Result<Row> {
    use fib::{FibConfig, NetlinkFib, NextHop, Route, RouteTable};
    let n = o.routes;
    let mut row = Row::new(FIB_ROW);
    let ns = floor_namespace()?;
    let mut watch = FibWatch::start(&ns, PROTO_ROUTERD)?;
    let gateway: std::net::IpAddr = TOR_IP.parse()?;
    let routes: Vec<Route> = (0..n)
        .map(|i| {
            let (a, l) = prefix(i);
            Ok(Route::via(
                ipnet::IpNet::V4(ipnet::Ipv4Net::new(a, l)?),
                NextHop::via(gateway),
            ))
        })
        .collect::<Result<_>>()?;
    let keys: Vec<fib::RouteKey> = routes.iter().map(Route::key).collect();
    let mut table = NetlinkFib::in_namespace(
        ns.path(),
        FibConfig {
            protocol: PROTO_ROUTERD,
            ..FibConfig::default()
        },
    )?;
    let mut ok = || Ok(());
    let cpu = thread_cpu_seconds(tick)?;
    let t = Instant::now();
    let report = table.replace(routes)?;
    row.to_kernel = Took::Done(t.elapsed());
    row.cpu = Some(thread_cpu_seconds(tick)? - cpu);
    if !report.is_clean() {
        bail!("fib refused {} routes", report.failed.len());
    }
    if let Reach::Short(k) = watch.wait_count(n, Duration::from_secs(30), &mut ok)? {
        bail!("fib returned but the kernel holds {k} of {n} routes");
    }
    let cpu = thread_cpu_seconds(tick)?;
    let t = Instant::now();
    let report = table.delete(keys)?;
    row.withdraw = Took::Done(t.elapsed());
    row.withdraw_cpu = Some(thread_cpu_seconds(tick)? - cpu);
    if !report.is_clean() {
        bail!("fib failed to delete {} routes", report.failed.len());
    }
    if let Reach::Short(k) = watch.wait_count(0, Duration::from_secs(30), &mut ok)? {
        bail!("fib deleted, but the kernel still holds {k} routes");
    }
    println!(
        "  {FIB_ROW}: {} s to add, {} s to delete",
        row.to_kernel.show(),
        row.withdraw.show()
    );
    Ok(row)
}

/// The floor: `ip -batch` writing the routes into a fresh namespace, then deleting them.
fn measure_ip(o: &Options, dir: &Path, nhid: bool) -> Result<Row> {
    let n = o.routes;
    let mut row = Row::new(if nhid {
        "ip -batch (nhid)"
    } else {
        "ip -batch"
    });
    let ns = floor_namespace()?;
    let mut watch = FibWatch::start(&ns, PROTO_ROUTERD)?;
    let add = dir.join("add.batch");
    let del = dir.join("del.batch");
    let (head, via, tail_line) = if nhid {
        (
            format!("nexthop add id 1 via {TOR_IP} dev d0 proto {PROTO_ROUTERD}\n"),
            "nhid 1".to_string(),
            "nexthop del id 1\n",
        )
    } else {
        (String::new(), format!("via {TOR_IP}"), "")
    };
    write_routes(&add, n, &head, "", |w, a, l| {
        writeln!(w, "route add {a}/{l} {via} proto {PROTO_ROUTERD}")
    })?;
    write_routes(&del, n, "", tail_line, |w, a, l| {
        writeln!(w, "route del {a}/{l} proto {PROTO_ROUTERD}")
    })?;
    let time = Path::new("/usr/bin/time");
    let batch = |file: &Path, what: &str| -> Result<(Duration, Option<(f64, f64)>)> {
        let stats = dir.join(format!("{what}.time"));
        let mut cmd = if time.is_file() {
            let mut c = Command::new(time);
            c.arg("-f").arg("%U %S %M").arg("-o").arg(&stats).arg("ip");
            c
        } else {
            Command::new("ip")
        };
        cmd.arg("-n").arg(ns.name()).arg("-batch").arg(file);
        let t = Instant::now();
        lab::run(&mut cmd).with_context(|| format!("ip -batch ({what})"))?;
        let took = t.elapsed();
        let usage = std::fs::read_to_string(&stats).ok().and_then(|s| {
            let v: Vec<f64> = s
                .lines()
                .last()?
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            (v.len() == 3).then(|| (v[0] + v[1], v[2] / 1024.0))
        });
        Ok((took, usage))
    };
    let mut ok = || Ok(());
    let (took, usage) = batch(&add, "add")?;
    row.to_kernel = Took::Done(took);
    if let Some((cpu, rss)) = usage {
        row.cpu = Some(cpu);
        row.rss_mb = Some(rss);
    }
    match watch.wait_count(n, Duration::from_secs(30), &mut ok)? {
        Reach::At(..) => {}
        Reach::Short(k) => bail!("ip -batch returned but the kernel holds {k} of {n} routes"),
    }
    let (took, usage) = batch(&del, "del")?;
    row.withdraw = Took::Done(took);
    if let Some((cpu, rss)) = usage {
        row.withdraw_cpu = Some(cpu);
        row.rss_mb = Some(row.rss_mb.unwrap_or_default().max(rss));
    }
    match watch.wait_count(0, Duration::from_secs(30), &mut ok)? {
        Reach::At(..) => {}
        Reach::Short(k) => bail!("ip -batch deleted, but the kernel still holds {k} routes"),
    }
    println!(
        "  {}: {} s to add, {} s to delete",
        row.name,
        row.to_kernel.show(),
        row.withdraw.show()
    );
    Ok(row)
}

// ---------------------------------------------------------------------------------------
// The report.

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a / b < 0.1 => format!("{:.3}x", a / b),
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

fn table(rows: &[Row], n: usize, steady: Duration) -> String {
    let mut s = String::new();
    let steady_head = format!("steady CPU s/{} s", steady.as_secs());
    let head = [
        "",
        "start→Established s",
        "→first route s",
        "Established→all in kernel s",
        "routes/s",
        "withdraw s",
        "peak RSS MB",
        "CPU s (full)",
        &steady_head,
        "withdraw CPU s",
    ];
    let mut lines: Vec<Vec<String>> = vec![head.iter().map(|h| h.to_string()).collect()];
    for r in rows {
        lines.push(vec![
            r.name.clone(),
            r.established.show(),
            opt(r.first, 3),
            r.to_kernel.show(),
            opt(r.to_kernel.secs().map(|s| n as f64 / s.max(1e-9)), 0),
            r.withdraw.show(),
            opt(r.rss_mb, 1),
            opt(r.cpu, 2),
            opt(r.steady, 3),
            opt(r.withdraw_cpu, 2),
        ]);
    }
    let find = |name: &str| rows.iter().find(|r| r.name == name);
    let us = find("routerd");
    // ip holds no table of its own: its RSS is no yardstick for a daemon's.
    for (label, other, daemon) in [
        ("routerd / BIRD", find("BIRD as node"), true),
        ("routerd / ip -batch", find("ip -batch"), false),
        (
            "routerd / ip -batch (nhid)",
            find("ip -batch (nhid)"),
            false,
        ),
        ("routerd / fib batch", find(FIB_ROW), false),
    ] {
        if let (Some(a), Some(b)) = (us, other) {
            lines.push(vec![
                label.to_string(),
                ratio(a.established.secs(), b.established.secs()),
                "".into(),
                ratio(a.to_kernel.secs(), b.to_kernel.secs()),
                "".into(),
                ratio(a.withdraw.secs(), b.withdraw.secs()),
                if daemon {
                    ratio(a.rss_mb, b.rss_mb)
                } else {
                    "-".into()
                },
                ratio(a.cpu, b.cpu),
                ratio(a.steady, b.steady),
                ratio(a.withdraw_cpu, b.withdraw_cpu),
            ]);
        }
    }
    for (i, l) in lines.iter().enumerate() {
        let _ = writeln!(s, "| {} |", l.join(" | "));
        if i == 0 {
            let _ = writeln!(s, "|{}", " --- |".repeat(l.len()));
        }
    }
    s
}

/// The restart phase's figures (`--restart`), one line per contender that had it; empty
/// when none did.
fn restart_table(rows: &[Row], n: usize) -> String {
    let mut s = String::new();
    let mut lines: Vec<Vec<String>> = vec![[
        "after SIGKILL",
        "restart→Running s",
        "restart→Established s",
        "restart→in sync s",
        "deleted in between",
        "fewest in kernel",
        "peak RSS MB (new)",
        "CPU s (new, at in sync)",
    ]
    .iter()
    .map(|h| h.to_string())
    .collect()];
    for r in rows {
        let Some(x) = r.restart else { continue };
        lines.push(vec![
            r.name.clone(),
            opt(x.running, 3),
            opt(x.established, 3),
            x.in_sync.show(),
            format!("{}{}", x.deleted, if x.overflowed { "+" } else { "" }),
            format!("{} of {n}", x.fewest),
            opt(x.rss_mb, 1),
            opt(x.cpu, 2),
        ]);
    }
    if lines.len() == 1 {
        return s;
    }
    for (i, l) in lines.iter().enumerate() {
        let _ = writeln!(s, "| {} |", l.join(" | "));
        if i == 0 {
            let _ = writeln!(s, "|{}", " --- |".repeat(l.len()));
        }
    }
    s
}

/// Removes the namespaces of earlier runs of this benchmark whose process is gone.
fn clean_up_earlier() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&format!("rl-{TAG}")) else {
            continue;
        };
        let mut parts = rest.rsplitn(3, '-');
        let _n = parts.next();
        if let Some(pid) = parts.next().and_then(|p| p.parse::<u32>().ok()) {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                lab::delete_namespace(&name);
            }
        }
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// The median of durations that all completed; else the first that did not.
fn median_took(v: &[Took]) -> Took {
    let done: Vec<f64> = v.iter().filter_map(|t| t.secs()).collect();
    if done.len() == v.len() {
        median(done).map_or(Took::None, |m| Took::Done(Duration::from_secs_f64(m)))
    } else {
        v.iter()
            .copied()
            .find(|t| !matches!(t, Took::Done(_)))
            .unwrap_or(Took::None)
    }
}

/// One row of medians from the runs of one contender.
fn combine(runs: Vec<&Row>) -> Row {
    let mut row = Row::new(runs.first().map_or("?", |r| r.name.as_str()));
    let took =
        |f: &dyn Fn(&Row) -> Took| median_took(&runs.iter().map(|r| f(r)).collect::<Vec<_>>());
    let num = |f: &dyn Fn(&Row) -> Option<f64>| median(runs.iter().filter_map(|r| f(r)).collect());
    row.established = took(&|r| r.established);
    row.to_kernel = took(&|r| r.to_kernel);
    row.withdraw = took(&|r| r.withdraw);
    row.first = num(&|r| r.first);
    row.rss_mb = num(&|r| r.rss_mb);
    row.cpu = num(&|r| r.cpu);
    row.steady = num(&|r| r.steady);
    row.withdraw_cpu = num(&|r| r.withdraw_cpu);
    // Medians of the times and figures; the worst of the losses.
    let restarts: Vec<Restarted> = runs.iter().filter_map(|r| r.restart).collect();
    if let Some(first) = restarts.first() {
        let num =
            |f: &dyn Fn(&Restarted) -> Option<f64>| median(restarts.iter().filter_map(f).collect());
        row.restart = Some(Restarted {
            running: num(&|x| x.running),
            established: num(&|x| x.established),
            in_sync: median_took(&restarts.iter().map(|x| x.in_sync).collect::<Vec<_>>()),
            deleted: restarts
                .iter()
                .map(|x| x.deleted)
                .max()
                .unwrap_or(first.deleted),
            fewest: restarts
                .iter()
                .map(|x| x.fewest)
                .min()
                .unwrap_or(first.fewest),
            overflowed: restarts.iter().any(|x| x.overflowed),
            rss_mb: num(&|x| x.rss_mb),
            cpu: num(&|x| x.cpu),
        });
    }
    row
}

/// `path (size, modified at)`, to tell two builds apart in a report.
fn describe_binary(path: &Path) -> String {
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    let modified = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ", "-r"])
        .arg(path)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{} ({size} bytes, modified {modified})", path.display())
}

fn quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=,:+".contains(&b))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

fn run() -> Result<()> {
    let o = parse_args()?;
    require(&["ip", "bird", "birdc"]);
    clean_up_earlier();
    let command: Vec<String> = std::env::args().map(|a| quote(&a)).collect();
    let load_start = loadavg();
    let tick = clock_ticks();
    let mut workdir = tempfile::Builder::new()
        .prefix("routerd-bench-")
        .tempdir()?;
    if o.keep {
        workdir.disable_cleanup(true);
    }
    let dir = workdir.path().to_path_buf();
    let n = o.routes;
    let described = describe_binary(&o.routerd);
    // Measure copies: a rebuild during the run (cargo replaces target/ files) must not
    // change the binary between one run and the next.
    let mut o = o;
    if o.only.contains(&Dut::Routerd) {
        for (path, name) in [(&mut o.routerd, "routerd"), (&mut o.routectl, "routectl")] {
            let copy = dir.join(name);
            std::fs::copy(&*path, &copy)
                .with_context(|| format!("copying {} to {}", path.display(), copy.display()))?;
            *path = copy;
        }
    }
    println!("$ {}", command.join(" "));
    println!(
        "routerd-bench: {n} routes (/24s of 100.64.0.0/10{}), ToR BIRD AS {TOR_AS} -> node AS \
         {NODE_AS}; routerd {}; {} CPUs; load {load_start}",
        if n > SLASH24S { ", then /32s" } else { "" },
        described,
        std::thread::available_parallelism().map_or(0, |p| p.get()),
    );
    let needs_tor = o.only.iter().any(|d| *d != Dut::Ip);
    let tor_conf = if needs_tor {
        let t = Instant::now();
        let conf = tor_config(&dir, n)?;
        println!(
            "ToR configuration with {n} static routes written in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        conf
    } else {
        String::new()
    };
    // Round-robin, so that a change of the machine's load hits every contender alike.
    let mut runs: Vec<Vec<Row>> = Vec::new();
    for r in 0..o.runs {
        let mut round = Vec::new();
        if o.runs > 1 {
            println!("run {} of {}", r + 1, o.runs);
        }
        if o.only.contains(&Dut::Routerd) {
            println!("device under test: routerd");
            let run_dir = dir.join(format!("routerd-{r}"));
            std::fs::create_dir_all(&run_dir)?;
            let again = |node: &Netns, d: &Path| spawn_routerd(&o, node, d, true);
            let subject = Subject {
                name: "routerd",
                protocol: PROTO_ROUTERD,
                log: run_dir.join("routerd.log"),
                start: &|node, d| start_routerd(&o, node, d),
                restart: o.restart.then(|| Restart {
                    start: &again,
                    control_socket: routerd_control_socket(&run_dir),
                }),
            };
            round.push(measure(&o, &run_dir, &tor_conf, &subject)?);
        }
        if o.only.contains(&Dut::Bird) {
            println!("device under test: BIRD as node");
            let run_dir = dir.join(format!("bird-{r}"));
            std::fs::create_dir_all(&run_dir)?;
            let subject = Subject {
                name: "BIRD as node",
                protocol: PROTO_BIRD,
                log: run_dir.join("node").join("bird.log"),
                start: &|node, d| start_bird(&o, node, d),
                restart: None,
            };
            round.push(measure(&o, &run_dir, &tor_conf, &subject)?);
        }
        if o.only.contains(&Dut::Ip) {
            println!("floor: ip -batch, and batched netlink (the fib crate)");
            for nhid in [false, true] {
                round.push(measure_ip(&o, &dir, nhid)?);
            }
            round.push(measure_fib(&o, tick)?);
        }
        runs.push(round);
    }
    let notes: Vec<String> = runs
        .iter()
        .flatten()
        .flat_map(|r| r.notes.iter().cloned())
        .collect();
    let rows: Vec<Row> = (0..runs.first().map_or(0, Vec::len))
        .map(|k| combine(runs.iter().filter_map(|round| round.get(k)).collect()))
        .collect();
    let load_end = loadavg();
    println!();
    println!("$ {}", command.join(" "));
    println!(
        "{n} routes; routerd {described}; steady window {} s; BIRD node kernel scan time {} s",
        o.steady.as_secs(),
        o.bird_scan
    );
    if o.runs > 1 {
        println!("medians of {} runs", o.runs);
    }
    print!("{}", table(&rows, n, o.steady));
    let restarts = restart_table(&rows, n);
    if !restarts.is_empty() {
        println!();
        println!(
            "restart (--restart): SIGKILL after the steady window, started again; in sync = \
             Running, fib.in_sync and its full reconcile done; deleted = routes of protocol \
             {PROTO_ROUTERD} that left the kernel from the kill to then (+: a lower bound)"
        );
        print!("{restarts}");
    }
    if o.runs > 1 {
        for (k, row) in rows.iter().enumerate() {
            let each = |f: &dyn Fn(&Row) -> String| -> String {
                runs.iter()
                    .filter_map(|round| round.get(k).map(f))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            println!(
                "{} per run: to kernel {} s; withdraw {} s",
                row.name,
                each(&|r| r.to_kernel.show()),
                each(&|r| r.withdraw.show())
            );
            if row.restart.is_some() {
                println!(
                    "{} per run after the restart: in sync {} s; deleted in between {}",
                    row.name,
                    each(&|r| r.restart.map_or("-".into(), |x| x.in_sync.show())),
                    each(&|r| r.restart.map_or("-".into(), |x| x.deleted.to_string()))
                );
            }
        }
    }
    println!("load average at start: {load_start}; at end: {load_end}");
    for note in notes {
        println!("note: {note}");
    }
    if o.keep {
        println!("working directory kept: {}", dir.display());
    }
    Ok(())
}

//! The single-hop driver (RFC 5881): the tokio task that owns every [`Session`] and the UDP
//! sockets around them.
//!
//! One *core* task holds all sessions; nothing else touches them. A *reader* task per address
//! family receives on the well-known port and hands the core each datagram with its TTL. The
//! core checks the TTL (RFC 5881 §5), decodes, finds the session (RFC 5880 §6.3: by Your
//! Discriminator, or by the source address while that is still zero), feeds it, and sends what
//! it answers on the session's own socket. Timers are not tasks: the core sleeps until the
//! earliest [`Session::next_deadline`], as the BGP speaker's core does. The
//! [`BfdHandle`] talks to the core by messages; each session's state is published on a
//! `watch` channel for its client (the BGP speaker), and every state change is logged.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tracing::{debug, info, warn};

use crate::jitter::XorShift;
use crate::packet::ControlPacket;
use crate::session::{ConfigError, Input, Output, Session, SessionConfig, SessionStatus};
use crate::socket::{self, Received, SINGLE_HOP_TTL};

/// Why the driver refused something or stopped.
#[derive(Debug, thiserror::Error)]
pub enum BfdError {
    #[error("cannot receive BFD on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot send BFD from {local}: {source}")]
    Socket {
        local: IpAddr,
        source: std::io::Error,
    },
    #[error("peer {peer} and local address {local} are not of the same address family")]
    FamilyMismatch { peer: IpAddr, local: IpAddr },
    #[error("no {0} receive socket: the driver started without that address family")]
    FamilyUnavailable(&'static str),
    #[error("no BFD session with {0}")]
    NoSession(IpAddr),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the BFD driver has stopped")]
    Stopped,
}

/// Starts the driver.
#[derive(Debug)]
pub struct BfdDriver;

impl BfdDriver {
    /// Binds the receive sockets on `port` (RFC 5881's [`socket::CONTROL_PORT`], 3784, in
    /// production; packets are sent to the same port) and runs the core in the background.
    /// IPv4 is required; IPv6 is used when the system has it. The core ends, sending
    /// AdminDown to every peer, when every handle is dropped or on
    /// [`BfdHandle::shutdown`].
    pub async fn start(port: u16) -> Result<(BfdHandle, JoinHandle<()>), BfdError> {
        let (dgram_tx, dgram_rx) = mpsc::channel(1024);
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let v4 = socket::receiver(false, port).map_err(|source| BfdError::Listen {
            addr: SocketAddr::from(([0, 0, 0, 0], port)),
            source,
        })?;
        let mut readers = vec![tokio::spawn(read_loop(v4, dgram_tx.clone())).abort_handle()];
        let mut has_v6 = false;
        match socket::receiver(true, port) {
            Ok(v6) => {
                has_v6 = true;
                readers.push(tokio::spawn(read_loop(v6, dgram_tx)).abort_handle());
            }
            Err(e) => warn!(error = %e, port, "no IPv6 BFD receive socket; IPv4 only"),
        }
        let core = Core {
            port,
            has_v6,
            sessions: HashMap::new(),
            by_discriminator: HashMap::new(),
            rng: XorShift::new(
                std::collections::hash_map::RandomState::new()
                    .build_hasher()
                    .finish(),
            ),
            readers,
        };
        let task = tokio::spawn(core.run(cmd_rx, dgram_rx));
        Ok((BfdHandle { commands: cmd_tx }, task))
    }
}

/// The clients' handle on a running driver; cheap to clone.
#[derive(Debug, Clone)]
pub struct BfdHandle {
    commands: mpsc::Sender<Command>,
}

impl BfdHandle {
    /// Adds a session with `peer`, sending from `local` (an address of this host on the link
    /// to the peer), and returns its status channel. For an existing session from the same
    /// local address the new `config` is applied in place (through a Poll Sequence if Up,
    /// RFC 5880 §6.8.3) and a new receiver is returned; from another local address, the old
    /// session is replaced.
    pub async fn add_session(
        &self,
        peer: IpAddr,
        local: IpAddr,
        config: SessionConfig,
    ) -> Result<watch::Receiver<SessionStatus>, BfdError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Add {
            peer,
            local,
            config,
            reply,
        })
        .await?;
        rx.await.map_err(|_| BfdError::Stopped)?
    }

    /// Removes the session with `peer`: it goes AdminDown, which the peer sees for a
    /// detection time (RFC 5880 §6.8.16) before the session is dropped, so the peer's clients
    /// do not take the removal for a failure (RFC 5882 §3.2).
    pub async fn remove_session(&self, peer: IpAddr) -> Result<(), BfdError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Remove { peer, reply }).await?;
        rx.await.map_err(|_| BfdError::Stopped)?
    }

    /// Every session's status, by peer address.
    pub async fn sessions(&self) -> Result<Vec<(IpAddr, SessionStatus)>, BfdError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::List { reply }).await?;
        rx.await.map_err(|_| BfdError::Stopped)
    }

    /// Sends AdminDown to every peer and ends the core.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.send(Command::Shutdown { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }

    async fn send(&self, c: Command) -> Result<(), BfdError> {
        self.commands.send(c).await.map_err(|_| BfdError::Stopped)
    }
}

enum Command {
    Add {
        peer: IpAddr,
        local: IpAddr,
        config: SessionConfig,
        reply: oneshot::Sender<Result<watch::Receiver<SessionStatus>, BfdError>>,
    },
    Remove {
        peer: IpAddr,
        reply: oneshot::Sender<Result<(), BfdError>>,
    },
    List {
        reply: oneshot::Sender<Vec<(IpAddr, SessionStatus)>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// A datagram as a reader task hands it to the core.
struct Datagram {
    from: SocketAddr,
    ttl: Option<u8>,
    bytes: Vec<u8>,
}

/// Large enough for a Control packet with the longest Authentication Section (24 + 28).
const RECV_BUFFER: usize = 128;

async fn read_loop(socket: UdpSocket, core: mpsc::Sender<Datagram>) {
    let mut buf = [0u8; RECV_BUFFER];
    loop {
        match socket::recv(&socket, &mut buf).await {
            Ok(Received { from, len, ttl }) => {
                let bytes = buf.get(..len).unwrap_or(&buf[..]).to_vec();
                if core.send(Datagram { from, ttl, bytes }).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // Transient (e.g. a queued ICMP error); do not spin on a persistent one.
                debug!(error = %e, "BFD receive error");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

struct Entry {
    session: Session,
    local: IpAddr,
    socket: UdpSocket,
    status: watch::Sender<SessionStatus>,
    /// Removed: AdminDown until this instant, then dropped.
    retire_at: Option<Instant>,
}

struct Core {
    port: u16,
    has_v6: bool,
    sessions: HashMap<IpAddr, Entry>,
    by_discriminator: HashMap<u32, IpAddr>,
    /// Discriminators and source ports: random, so that a blind attacker cannot guess them
    /// (RFC 5880 §9, §6.8.1: "SHOULD be random").
    rng: XorShift,
    readers: Vec<AbortHandle>,
}

impl Core {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut datagrams: mpsc::Receiver<Datagram>,
    ) {
        loop {
            let deadline = self
                .sessions
                .values()
                .flat_map(|e| [e.session.next_deadline(), e.retire_at])
                .flatten()
                .min();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown { reply }) => {
                        self.shutdown();
                        let _ = reply.send(());
                        return;
                    }
                    Some(cmd) => self.on_command(cmd),
                    None => {
                        self.shutdown();
                        return;
                    }
                },
                Some(d) = datagrams.recv() => self.on_datagram(d),
                () = sleep => self.on_timers(),
            }
        }
    }

    fn shutdown(&mut self) {
        let peers: Vec<IpAddr> = self.sessions.keys().copied().collect();
        for peer in peers {
            self.feed(peer, Input::AdminDown);
        }
        for r in &self.readers {
            r.abort();
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Add {
                peer,
                local,
                config,
                reply,
            } => {
                let _ = reply.send(self.add(peer, local, config));
            }
            Command::Remove { peer, reply } => {
                let _ = reply.send(self.remove(peer));
            }
            Command::List { reply } => {
                let mut all: Vec<(IpAddr, SessionStatus)> = self
                    .sessions
                    .iter()
                    .filter(|(_, e)| e.retire_at.is_none())
                    .map(|(p, e)| (*p, e.session.status()))
                    .collect();
                all.sort_by_key(|(p, _)| *p);
                let _ = reply.send(all);
            }
            Command::Shutdown { .. } => {}
        }
    }

    fn add(
        &mut self,
        peer: IpAddr,
        local: IpAddr,
        config: SessionConfig,
    ) -> Result<watch::Receiver<SessionStatus>, BfdError> {
        config.validate()?;
        if peer.is_ipv4() != local.is_ipv4() {
            return Err(BfdError::FamilyMismatch { peer, local });
        }
        if peer.is_ipv6() && !self.has_v6 {
            return Err(BfdError::FamilyUnavailable("IPv6"));
        }
        if let Some(e) = self.sessions.get_mut(&peer) {
            if e.local == local && e.retire_at.is_none() {
                let out = e.session.set_config(Instant::now(), config)?;
                let rx = e.status.subscribe();
                self.apply(peer, out);
                return Ok(rx);
            }
            self.drop_session(peer);
        }
        let socket = socket::sender(local, &mut self.rng)
            .map_err(|source| BfdError::Socket { local, source })?;
        let discriminator = self.new_discriminator();
        let session = Session::new(config, discriminator)?;
        let (status, rx) = watch::channel(session.status());
        self.by_discriminator.insert(discriminator, peer);
        self.sessions.insert(
            peer,
            Entry {
                session,
                local,
                socket,
                status,
                retire_at: None,
            },
        );
        info!(%peer, %local, discriminator, "BFD session added");
        // The first packet goes out at once (see Session's docs).
        self.feed(peer, Input::Timeout);
        Ok(rx)
    }

    fn remove(&mut self, peer: IpAddr) -> Result<(), BfdError> {
        let Some(e) = self.sessions.get(&peer).filter(|e| e.retire_at.is_none()) else {
            return Err(BfdError::NoSession(peer));
        };
        // RFC 5880 §6.8.16: "BFD Control packets SHOULD be transmitted for at least a
        // Detection Time after transitioning to AdminDown state". The peer's detection time
        // is our multiplier times the interval we send at (at least 1 s once not Up).
        let mult = u32::from(e.session.config().detect_multiplier);
        self.feed(peer, Input::AdminDown);
        if let Some(e) = self.sessions.get_mut(&peer) {
            let interval = e
                .session
                .status()
                .tx_interval
                .unwrap_or(Duration::from_secs(1));
            e.retire_at = Some(Instant::now() + interval * mult);
        }
        info!(%peer, "BFD session removed");
        Ok(())
    }

    fn drop_session(&mut self, peer: IpAddr) {
        if let Some(e) = self.sessions.remove(&peer) {
            self.by_discriminator
                .remove(&e.session.local_discriminator());
        }
    }

    /// A random non-zero discriminator no session uses (§6.8.1: bfd.LocalDiscr "MUST be
    /// unique across all BFD sessions on this system, and nonzero").
    fn new_discriminator(&mut self) -> u32 {
        for _ in 0..64 {
            let d = (self.rng.next_u64() >> 32) as u32;
            if d != 0 && !self.by_discriminator.contains_key(&d) {
                return d;
            }
        }
        // Practically unreachable with a handful of sessions: count up from 1 instead.
        (1..=u32::MAX)
            .find(|d| !self.by_discriminator.contains_key(d))
            .unwrap_or(1)
    }

    fn on_datagram(&mut self, d: Datagram) {
        // RFC 5881 §5: discard a packet whose TTL / Hop Limit is not 255.
        if d.ttl != Some(SINGLE_HOP_TTL) {
            debug!(from = %d.from, ttl = ?d.ttl, "dropping BFD packet: TTL is not 255");
            return;
        }
        let packet = match ControlPacket::decode(&d.bytes) {
            Ok(p) => p,
            Err(e) => {
                debug!(from = %d.from, error = %e, "dropping BFD packet");
                return;
            }
        };
        let source = d.from.ip();
        // RFC 5880 §6.8.6 / §6.3: by Your Discriminator when non-zero ("If no session is
        // found, the packet MUST be discarded"), else by the source address (RFC 5881 §3:
        // single-hop sessions are identified by the peer's address). A discriminator found
        // but belonging to another peer's session is also discarded.
        let peer = if packet.your_discriminator != 0 {
            self.by_discriminator
                .get(&packet.your_discriminator)
                .copied()
        } else {
            self.sessions.contains_key(&source).then_some(source)
        };
        match peer {
            Some(p) if p == source => self.feed(p, Input::Received(packet)),
            _ => {
                debug!(from = %d.from, your = packet.your_discriminator, "dropping BFD packet: no session")
            }
        }
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        let retired: Vec<IpAddr> = self
            .sessions
            .iter()
            .filter(|(_, e)| e.retire_at.is_some_and(|at| at <= now))
            .map(|(p, _)| *p)
            .collect();
        for p in retired {
            self.drop_session(p);
        }
        let due: Vec<IpAddr> = self
            .sessions
            .iter()
            .filter(|(_, e)| e.session.next_deadline().is_some_and(|at| at <= now))
            .map(|(p, _)| *p)
            .collect();
        for p in due {
            self.feed(p, Input::Timeout);
        }
    }

    fn feed(&mut self, peer: IpAddr, input: Input) {
        let Some(e) = self.sessions.get_mut(&peer) else {
            return;
        };
        let out = e.session.handle(Instant::now(), input);
        self.apply(peer, out);
    }

    /// Carries out a session's outputs: packets out of its socket, state changes to the log,
    /// and the new status to its watchers.
    fn apply(&mut self, peer: IpAddr, outputs: Vec<Output>) {
        let Some(e) = self.sessions.get_mut(&peer) else {
            return;
        };
        let to = SocketAddr::new(peer, self.port);
        for o in outputs {
            match o {
                Output::Send(p) => {
                    if let Err(err) = e.socket.try_send_to(&p.encode(), to) {
                        // UDP: a lost packet is what BFD is built to survive.
                        debug!(%peer, error = %err, "BFD send failed");
                    }
                }
                Output::StateChange { from, to, diag } => {
                    info!(%peer, %from, %to, %diag, "BFD session state changed");
                }
            }
        }
        let now = e.session.status();
        e.status.send_if_modified(|s| {
            let changed = *s != now;
            *s = now;
            changed
        });
    }
}

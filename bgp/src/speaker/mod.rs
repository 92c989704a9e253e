//! The speaker: the thin tokio driver around the sans-IO cores.
//!
//! One *core* task owns every peer's [`Session`] (the RFC 4271 FSM) and the [`Rib`]; nothing
//! else touches them, so there are no locks on the route path. Around it:
//!
//! - a *reader* task per TCP connection cuts the byte stream into whole messages with
//!   [`packet::frame_len`] and hands them to the core in batches. The core decodes them itself,
//!   one at a time, because the decode context (4-octet AS, ADD-PATH) changes when the OPEN
//!   is handled and must apply to the very next message;
//! - a *writer* task per connection coalesces the encoded messages the core gives it into
//!   large writes;
//! - a *listener* task per listen address, *connector* tasks for outgoing connections, and a
//!   *control* task serving the JSON control socket ([`control`]).
//!
//! Timers are not separate tasks: the core sleeps until the earliest
//! [`Session::next_deadline`] and then lets each session fire what is due.
//!
//! Files: this one holds the core's event handling; `io` the socket tasks; `status` the
//! answers to control requests; `shutdown` how sessions end (graceful restart or RFC 8326
//! drain); `deferral` when a restarting speaker may advertise (RFC 4724 §4.1);
//! [`prefix_limit`] and [`bfd_link`] the per-peer guards; [`config`] and
//! [`control`] the configuration and control-protocol types.

pub mod bfd_link;
pub mod config;
pub mod control;
mod deferral;
mod io;
pub mod prefix_limit;
mod shutdown;
pub mod socket;
mod status;

use io::{accept_loop, connect, control_loop, read_loop, session_ttl, write_loop};
pub use status::family_name;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ipnet::IpNet;
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::fsm::{
    ConnectionId, DownReason, GracefulRestartConfig, Input, Output, PeerGracefulRestart, Session,
    SessionConfig, State, StopReason,
};
use crate::packet::{
    self, Community, DecodeContext, Family, LargeCommunity, Message, PathAttributes, RouteRefresh,
    Update,
};
use crate::rib::{self, BestPathChange, EndOfRib, PeerId, PeerSession, Rib, RibConfig, RibOutputs};
use config::{Origination, PeerConfig, SpeakerConfig};
use control::{ControlRequest, ControlResponse, PeerStatus, RouteView};
use prefix_limit::{PrefixLimitState, PrefixVerdict};
use socket::SessionSecurity;

/// Why the speaker could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot serve the control socket {path}: {source}")]
    Control {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{field}: {reason}")]
    Config { field: String, reason: String },
    #[error("peer {peer}: {reason}")]
    Peer { peer: IpAddr, reason: String },
    #[error("the speaker has stopped")]
    Stopped,
    /// The core refused a request, or answered it with something else than asked for.
    #[error("{0}")]
    Refused(String),
}

/// A request to the core from the handle or the control socket.
enum Command {
    AddPeer(PeerConfig, oneshot::Sender<Result<(), SpeakerError>>),
    RemovePeer(IpAddr, oneshot::Sender<Result<(), SpeakerError>>),
    Control(ControlRequest, oneshot::Sender<ControlResponse>),
    SetPolicy(Box<PeerPolicy>, oneshot::Sender<Result<(), SpeakerError>>),
    /// Stop: with Cease to every peer, or (`graceful`) for a restart, see
    /// [`SpeakerHandle::shutdown_for_restart`].
    Shutdown {
        done: oneshot::Sender<()>,
        graceful: bool,
    },
}

/// A peer's import and export filters (Calico `BGPFilter`s, already merged in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPolicy {
    pub address: IpAddr,
    pub import: rib::RouteFilter,
    pub export: rib::RouteFilter,
}

/// The agent's handle on a running speaker.
#[derive(Debug, Clone)]
pub struct SpeakerHandle {
    commands: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::AddPeer(p, _) => write!(f, "AddPeer({})", p.address),
            Command::RemovePeer(a, _) => write!(f, "RemovePeer({a})"),
            Command::Control(r, _) => write!(f, "Control({r:?})"),
            Command::SetPolicy(p, _) => write!(f, "SetPolicy({})", p.address),
            Command::Shutdown { graceful, .. } => write!(f, "Shutdown(graceful: {graceful})"),
        }
    }
}

impl SpeakerHandle {
    /// Adds a peer (or, if one with this address exists with other settings, replaces it:
    /// the old session is closed with Cease/6 "Other Configuration Change"). A peer whose
    /// settings did not change is left alone, so re-applying a full peer set is cheap.
    pub async fn add_peer(&self, peer: PeerConfig) -> Result<(), SpeakerError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::AddPeer(peer, tx)).await?;
        rx.await.map_err(|_| SpeakerError::Stopped)?
    }

    /// Removes a peer: Cease/3 "Peer De-configured", and its routes are withdrawn.
    pub async fn remove_peer(&self, address: IpAddr) -> Result<(), SpeakerError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::RemovePeer(address, tx)).await?;
        rx.await.map_err(|_| SpeakerError::Stopped)?
    }

    /// Replaces a peer's filters without resetting its session: the export side sends the
    /// peer the difference at once; the import side applies to what the peer sends from now
    /// on, and the peer is asked to resend its routes (ROUTE-REFRESH, RFC 2918) when it
    /// supports that, as BIRD's `reload in` does. Unchanged filters cost nothing.
    pub async fn set_policy(&self, policy: PeerPolicy) -> Result<(), SpeakerError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::SetPolicy(Box::new(policy), tx)).await?;
        rx.await.map_err(|_| SpeakerError::Stopped)?
    }

    /// Originates `origination` (or re-originates it with new attributes: the route is
    /// replaced, with no withdrawal between).
    pub async fn originate(&self, origination: Origination) -> Result<(), SpeakerError> {
        done(self.control(ControlRequest::Originate(origination)).await?)
    }

    /// Stops originating `prefix`.
    pub async fn withdraw(&self, prefix: IpNet) -> Result<(), SpeakerError> {
        done(self.control(ControlRequest::Withdraw { prefix }).await?)
    }

    /// Every session's status.
    pub async fn peers(&self) -> Result<Vec<PeerStatus>, SpeakerError> {
        match self.control(ControlRequest::Peers).await? {
            ControlResponse::Peers { peers } => Ok(peers),
            other => Err(unexpected(other)),
        }
    }

    /// The Loc-RIB (`prefix` `None`), or the paths to one destination (`longest_match`: the
    /// longest prefix we hold that contains `prefix`), as `birdc show route [for]`.
    pub async fn routes(
        &self,
        prefix: Option<IpNet>,
        longest_match: bool,
    ) -> Result<Vec<RouteView>, SpeakerError> {
        let request = match prefix {
            None => ControlRequest::Routes,
            Some(prefix) => ControlRequest::RouteLookup {
                prefix,
                longest_match,
            },
        };
        match self.control(request).await? {
            ControlResponse::Routes { routes } => Ok(routes),
            other => Err(unexpected(other)),
        }
    }

    /// Runs one control request as the control socket's clients send it (JSON types); the
    /// typed methods above are the in-process API.
    pub async fn control(&self, request: ControlRequest) -> Result<ControlResponse, SpeakerError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Control(request, tx)).await?;
        rx.await.map_err(|_| SpeakerError::Stopped)
    }

    /// Stops every session with Cease/2 and ends the core.
    pub async fn shutdown(&self) {
        self.stop(false).await
    }

    /// Ends the core for a restart (RFC 4724 §4.1): sessions that advertised Graceful
    /// Restart are closed without a NOTIFICATION, so the peers keep our routes as stale for
    /// the Restart Time while the kernel keeps forwarding; the others get Cease/2.
    pub async fn shutdown_for_restart(&self) {
        self.stop(true).await
    }

    async fn stop(&self, graceful: bool) {
        let (tx, rx) = oneshot::channel();
        if self
            .send(Command::Shutdown { done: tx, graceful })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    async fn send(&self, c: Command) -> Result<(), SpeakerError> {
        self.commands
            .send(c)
            .await
            .map_err(|_| SpeakerError::Stopped)
    }
}

/// `Ok` for `Done`, else the refusal.
fn done(response: ControlResponse) -> Result<(), SpeakerError> {
    match response {
        ControlResponse::Done => Ok(()),
        other => Err(unexpected(other)),
    }
}

fn unexpected(response: ControlResponse) -> SpeakerError {
    match response {
        ControlResponse::Error { message } => SpeakerError::Refused(message),
        other => SpeakerError::Refused(format!("unexpected answer: {other:?}")),
    }
}

/// Starts a speaker: binds its listeners and control socket (so start-up errors surface
/// here), then runs the core in the background. Best-path changes for the FIB are sent on
/// `best_paths` when given.
pub async fn start(
    config: SpeakerConfig,
    best_paths: Option<mpsc::UnboundedSender<Vec<BestPathChange>>>,
) -> Result<(SpeakerHandle, tokio::task::JoinHandle<()>), SpeakerError> {
    let (events_tx, events_rx) = mpsc::channel(256);
    let (cmd_tx, cmd_rx) = mpsc::channel(64);

    let mut listener_fds = Vec::new();
    let mut accept_tasks = Vec::new();
    for addr in &config.listen {
        let sock = socket::listener(*addr).map_err(|source| SpeakerError::Listen {
            addr: *addr,
            source,
        })?;
        // A duplicate of the descriptor stays with the core to install MD5 keys for peers
        // added later; the listener task owns the original.
        let dup = sock.try_clone().map_err(|source| SpeakerError::Listen {
            addr: *addr,
            source,
        })?;
        listener_fds.push((*addr, OwnedFd::from(dup)));
        let std_listener: std::net::TcpListener = sock.into();
        let listener =
            TcpListener::from_std(std_listener).map_err(|source| SpeakerError::Listen {
                addr: *addr,
                source,
            })?;
        info!(listen = %addr, "listening for BGP connections");
        accept_tasks.push(tokio::spawn(accept_loop(listener, events_tx.clone())).abort_handle());
    }

    if let Some(path) = &config.control_socket {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(|source| SpeakerError::Control {
            path: path.clone(),
            source,
        })?;
        tokio::spawn(control_loop(listener, cmd_tx.clone()));
    }

    let mut rib_config = RibConfig::new(config.local_as, config.router_id);
    rib_config.cluster_id = config.cluster_id;
    rib_config.max_paths = config.max_paths;
    let bfd_events = events_tx.clone();
    let mut core = Core {
        rib: Rib::new(rib_config),
        peers: HashMap::new(),
        by_id: HashMap::new(),
        events_tx,
        next_inbound: 0,
        best_paths,
        listener_fds,
        accept_tasks,
        draining: None,
        started: Instant::now(),
        deferral: deferral::SelectionDeferral::new(
            config.restarting,
            Instant::now(),
            Duration::from_secs(config.selection_deferral_time),
        ),
        bfd: bfd_link::BfdLink::start(config.bfd_port, bfd_events),
        config: config.clone(),
    };
    for (i, o) in config.originate.iter().enumerate() {
        let out = core.originate(o).map_err(|reason| SpeakerError::Config {
            field: format!("originate[{i}]"),
            reason,
        })?;
        core.dispatch(out);
    }
    for p in &config.peers {
        core.add_peer(p.clone())?;
    }
    for p in &config.policies {
        core.set_policy(PeerPolicy {
            address: p.peer,
            import: config::route_filter(&p.import),
            export: config::route_filter(&p.export),
        })?;
    }
    let handle = SpeakerHandle { commands: cmd_tx };
    let task = tokio::spawn(core.run(events_rx, cmd_rx));
    Ok((handle, task))
}

/// What connection tasks report to the core.
enum Event {
    Accepted(TcpStream, SocketAddr),
    Connected {
        peer: IpAddr,
        conn: ConnectionId,
        stream: TcpStream,
    },
    ConnectFailed {
        peer: IpAddr,
        conn: ConnectionId,
        error: std::io::Error,
    },
    /// Whole messages, in order.
    Frames {
        peer: IpAddr,
        conn: ConnectionId,
        frames: Vec<Bytes>,
    },
    /// A header error: the stream cannot be resynchronised (RFC 4271 §6.1).
    BadHeader {
        peer: IpAddr,
        conn: ConnectionId,
        error: packet::DecodeError,
    },
    Closed {
        peer: IpAddr,
        conn: ConnectionId,
    },
    /// A peer's BFD session changed (or could not be set up).
    Bfd {
        peer: IpAddr,
        status: Result<bfd::SessionStatus, String>,
    },
}

enum Outgoing {
    Messages(Vec<Bytes>),
    /// Flush what was queued, then close (a NOTIFICATION must reach the peer first).
    Close,
}

struct Connection {
    writer: mpsc::UnboundedSender<Outgoing>,
    local: Option<SocketAddr>,
    reader: tokio::task::AbortHandle,
    /// The longest message the reader may frame: set once the peer's OPEN is handled
    /// (65535 with Extended Message on both sides, RFC 8654; else 4096).
    max_len: tokio::sync::watch::Sender<usize>,
}

struct Peer {
    config: PeerConfig,
    /// Filters set with [`SpeakerHandle::set_policy`] (empty: accept everything).
    policy: PeerPolicy,
    id: PeerId,
    session: Session,
    connections: HashMap<ConnectionId, Connection>,
    /// The Established connection and the context to encode for it.
    established: Option<(ConnectionId, DecodeContext)>,
    last_error: Option<String>,
    /// The peer's Graceful Restart capability on the last Established session.
    peer_restart: Option<PeerGracefulRestart>,
    /// While the peer restarts or re-sends its routes: when its stale paths are dropped
    /// (RFC 4724 §4.2: the restart timer, then our stale-routes timer).
    stale_until: Option<Instant>,
    /// The peer's standing against `config.max_prefixes`.
    prefix_limit: PrefixLimitState,
    /// With `config.bfd`: the BFD session's last status, or why there is none.
    bfd: Option<Result<bfd::SessionStatus, String>>,
    /// Families whose End-of-RIB the peer sent on the current session (RFC 4724 §2).
    end_of_rib: Vec<Family>,
}

impl Peer {
    /// BFD is configured and not Up: the BGP session must wait (see [`bfd_link`]).
    fn waits_for_bfd(&self) -> bool {
        self.config.bfd.is_some() && !matches!(&self.bfd, Some(Ok(s)) if s.state == bfd::State::Up)
    }
}

/// How long a restarted peer has, once Established again, to re-send its routes and
/// End-of-RIB before the stale ones go (RFC 4724 §4.2 leaves the value local; FRR's
/// default stale-path time).
const STALE_ROUTES_TIME: Duration = Duration::from_secs(360);

struct Core {
    config: SpeakerConfig,
    rib: Rib,
    peers: HashMap<IpAddr, Peer>,
    by_id: HashMap<PeerId, IpAddr>,
    events_tx: mpsc::Sender<Event>,
    next_inbound: u64,
    best_paths: Option<mpsc::UnboundedSender<Vec<BestPathChange>>>,
    listener_fds: Vec<(SocketAddr, OwnedFd)>,
    /// The accept loops: stopped with the core, so the ports are free again at once.
    accept_tasks: Vec<tokio::task::AbortHandle>,
    /// A shutdown waiting out its drain time ([`shutdown`]).
    draining: Option<shutdown::Drain>,
    /// When the speaker started (the restart window of `config.restarting`).
    started: Instant,
    /// While restarting, nothing is sent until the peers' End-of-RIBs ([`deferral`]).
    deferral: deferral::SelectionDeferral,
    bfd: bfd_link::BfdLink,
}

impl Core {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        loop {
            let deadline = self
                .peers
                .values()
                .flat_map(|p| {
                    [
                        p.session.next_deadline().map(|(at, _)| at),
                        p.stale_until,
                        p.prefix_limit.restart_at(),
                    ]
                    .into_iter()
                    .flatten()
                })
                .chain(self.draining.as_ref().map(|d| d.until))
                .chain(self.deferral.deadline())
                .min();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(event) = events.recv() => self.on_event(event),
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown { done, graceful }) => {
                        if !self.begin_drain(graceful, done).await {
                            return;
                        }
                    }
                    Some(cmd) => self.on_command(cmd),
                    None => {
                        self.shutdown(false).await;
                        return;
                    }
                },
                () = sleep => self.on_timers(),
            }
            if self.drain_over(Instant::now()).await {
                return;
            }
        }
    }

    fn on_timers(&mut self) {
        self.check_deferral();
        let now = Instant::now();
        let due: Vec<IpAddr> = self
            .peers
            .iter()
            .filter(|(_, p)| p.session.next_deadline().is_some_and(|(at, _)| at <= now))
            .map(|(a, _)| *a)
            .collect();
        for addr in due {
            let Some(peer) = self.peers.get_mut(&addr) else {
                continue;
            };
            let before = peer.session.state();
            let outputs = peer.session.handle_timeouts(now);
            self.apply(addr, before, outputs);
        }
        let stale: Vec<(IpAddr, PeerId)> = self
            .peers
            .iter_mut()
            .filter(|(_, p)| p.stale_until.is_some_and(|at| at <= now))
            .map(|(a, p)| {
                p.stale_until = None;
                (*a, p.id)
            })
            .collect();
        for (addr, id) in stale {
            // The restart or stale-routes timer expired without End-of-RIB (RFC 4724 §4.2).
            info!(peer = %addr, "graceful restart over: dropping the peer's stale routes");
            match self.rib.flush_stale(id) {
                Ok(out) => self.dispatch(out),
                Err(e) => warn!(peer = %addr, error = %e, "flushing stale routes"),
            }
        }
        let released: Vec<IpAddr> = self
            .peers
            .iter_mut()
            .filter(|(_, p)| p.prefix_limit.restart_at().is_some_and(|at| at <= now))
            .map(|(a, p)| {
                p.prefix_limit.release();
                *a
            })
            .collect();
        for addr in released {
            if self.peers.get(&addr).is_some_and(Peer::waits_for_bfd) {
                info!(peer = %addr, "maximum-prefix hold-down over; BGP starts when BFD is Up");
                continue;
            }
            info!(peer = %addr, "maximum-prefix hold-down over: starting the session again");
            self.feed(addr, Input::ManualStart);
        }
    }

    /// A peer's BFD session changed: Up starts BGP, a failure takes it down with Cease/10
    /// (RFC 9384); a peer's AdminDown is no failure (RFC 5882 §3.2). See [`bfd_link`].
    fn on_bfd(&mut self, addr: IpAddr, status: Result<bfd::SessionStatus, String>) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        if peer.config.bfd.is_none() {
            return;
        }
        let was_waiting = peer.waits_for_bfd();
        let signalled_down = matches!(&status, Ok(s) if s.remote_state == bfd::State::AdminDown);
        if let Err(e) = &status {
            peer.last_error = Some(e.clone());
        }
        peer.bfd = Some(status);
        let waiting = peer.waits_for_bfd();
        match (was_waiting, waiting) {
            (true, false) => {
                if peer.prefix_limit.is_held_down() {
                    info!(peer = %addr, "BFD up; BGP held down by its prefix limit");
                    return;
                }
                info!(peer = %addr, "BFD up: starting BGP");
                self.feed(addr, Input::ManualStart);
            }
            (false, true) if signalled_down => {
                info!(peer = %addr, "peer's BFD went AdminDown: not a failure, BGP left as it is");
            }
            (false, true) => {
                warn!(peer = %addr, "BFD down: closing the BGP session (Cease/10)");
                self.feed(addr, Input::ManualStop(StopReason::BfdDown));
            }
            _ => {}
        }
    }

    /// After an UPDATE from `addr` reached the RIB: warn at the threshold of its prefix
    /// limit, or close the session with Cease/1 above the limit (see [`prefix_limit`]).
    fn check_prefix_limit(&mut self, addr: IpAddr) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let Some(limit) = peer.config.max_prefixes else {
            return;
        };
        for family in [Family::Ipv4Unicast, Family::Ipv6Unicast] {
            let received = self.rib.received(peer.id, family).unwrap_or(0);
            match peer.prefix_limit.check(&limit, family, received) {
                PrefixVerdict::Within => {}
                PrefixVerdict::Warn { family, received } => {
                    warn!(peer = %addr, family = family_name(family), received,
                        limit = limit.limit, "prefix count nearing the peer's maximum");
                }
                PrefixVerdict::Exceeded { family, received } => {
                    warn!(peer = %addr, family = family_name(family), received,
                        limit = limit.limit, restart_after = ?limit.restart_after,
                        "peer exceeded its maximum prefixes: closing with Cease/1");
                    peer.prefix_limit.closed(&limit, Instant::now());
                    let (afi, safi) = family.afi_safi();
                    self.feed(
                        addr,
                        Input::ManualStop(StopReason::MaximumPrefixes {
                            afi: afi.code(),
                            safi: safi.code(),
                            limit: limit.limit,
                        }),
                    );
                    return;
                }
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::AddPeer(p, reply) => {
                let _ = reply.send(self.add_peer(p));
            }
            Command::RemovePeer(addr, reply) => {
                let _ = reply.send(self.remove_peer(addr));
            }
            Command::Control(req, reply) => {
                let _ = reply.send(self.control(req));
            }
            Command::SetPolicy(policy, reply) => {
                let _ = reply.send(self.set_policy(*policy));
            }
            Command::Shutdown { .. } => {}
        }
    }

    fn add_peer(&mut self, p: PeerConfig) -> Result<(), SpeakerError> {
        p.validate().map_err(|e| SpeakerError::Peer {
            peer: p.address,
            reason: e.to_string(),
        })?;
        if let Some(existing) = self.peers.get(&p.address) {
            if existing.config == p {
                return Ok(());
            }
            let drop_bfd = existing.config.bfd.is_some() && p.bfd.is_none();
            self.drop_peer(p.address, StopReason::ConfigurationChange);
            if drop_bfd {
                self.bfd.remove(p.address);
            }
        }
        let mut sc = SessionConfig::new(
            self.config.local_as,
            Some(p.remote_as),
            self.config.router_id,
        );
        sc.hold_time = p.hold_time.unwrap_or(self.config.hold_time);
        sc.keepalive_time = p.keepalive_time;
        sc.connect_retry = Duration::from_secs(self.config.connect_retry.max(1));
        sc.passive = p.passive;
        sc.families = vec![Family::Ipv4Unicast, Family::Ipv6Unicast];
        if let Some(add_paths) = p.add_paths {
            sc.add_path = sc.families.iter().map(|f| (*f, add_paths.mode())).collect();
        }
        // Forwarding is preserved across our restart: the agent leaves its kernel routes in
        // place on shutdown and re-programs them only after the sessions are back.
        let restarting = self.config.restarting
            && self.started.elapsed() < Duration::from_secs(p.restart_time().unwrap_or(0).into());
        sc.graceful_restart = p.restart_time().map(|restart_time| GracefulRestartConfig {
            restart_time,
            forwarding_preserved: true,
            restarting,
        });
        let session = Session::new(sc, Instant::now()).map_err(|e| SpeakerError::Peer {
            peer: p.address,
            reason: e.to_string(),
        })?;
        if let Some(key) = &p.password {
            for (addr, fd) in &self.listener_fds {
                if addr.is_ipv4() == p.address.is_ipv4() {
                    socket::set_tcp_md5(fd, p.address, key.as_bytes()).map_err(|e| SpeakerError::Peer {
                        peer: p.address,
                        reason: format!("installing the TCP MD5 key: {e} (does the kernel have TCP_MD5SIG?)"),
                    })?;
                }
            }
        }
        let bfd_session = match &p.bfd {
            Some(b) => Some(b.session_config().map_err(|reason| SpeakerError::Peer {
                peer: p.address,
                reason: format!("bfd: {reason}"),
            })?),
            None => None,
        };
        let local_for_bfd = p.local_address;
        let mut rc = rib::PeerConfig::new(p.address, p.remote_as, self.config.local_as);
        rc.route_reflector_client = p.route_reflector_client;
        rc.allow_local_as = p.allow_local_as;
        rc.next_hop_mode = p.next_hop;
        let id = self.rib.add_peer(rc);
        info!(peer = %p.address, remote_as = p.remote_as, passive = p.passive, "peer added");
        self.by_id.insert(id, p.address);
        let addr = p.address;
        self.peers.insert(
            addr,
            Peer {
                config: p,
                policy: PeerPolicy {
                    address: addr,
                    import: rib::RouteFilter::default(),
                    export: rib::RouteFilter::default(),
                },
                id,
                session,
                connections: HashMap::new(),
                established: None,
                last_error: None,
                peer_restart: None,
                stale_until: None,
                prefix_limit: PrefixLimitState::default(),
                bfd: None,
                end_of_rib: Vec::new(),
            },
        );
        match (bfd_session, local_for_bfd) {
            (Some(config), Some(local)) => {
                // BGP starts when BFD is Up (Core::on_bfd).
                info!(peer = %addr, "waiting for BFD Up before starting BGP");
                self.bfd.add(addr, local, config);
            }
            _ => self.feed(addr, Input::AutomaticStart),
        }
        Ok(())
    }

    fn set_policy(&mut self, policy: PeerPolicy) -> Result<(), SpeakerError> {
        let addr = policy.address;
        let Some(peer) = self.peers.get_mut(&addr) else {
            return Err(SpeakerError::Peer {
                peer: addr,
                reason: "no such peer".into(),
            });
        };
        let id = peer.id;
        let import_changed = peer.policy.import != policy.import;
        let export_changed = peer.policy.export != policy.export;
        peer.policy = policy.clone();
        if export_changed {
            let export = rib::ExportPolicy {
                filter: policy.export,
                ..rib::ExportPolicy::default()
            };
            match self.rib.set_export_policy(id, export) {
                Ok(out) => self.dispatch(out),
                Err(e) => warn!(peer = %addr, error = %e, "export policy"),
            }
            info!(peer = %addr, "export filter changed");
        }
        if import_changed {
            let import = rib::ImportPolicy {
                filter: policy.import,
                local_pref: None,
            };
            if let Err(e) = self.rib.set_import_policy(id, import) {
                warn!(peer = %addr, error = %e, "import policy");
            }
            self.request_refresh(addr);
            info!(peer = %addr, "import filter changed");
        }
        Ok(())
    }

    /// Asks an Established peer to resend its routes (RFC 2918 §3), for every family in use,
    /// if it advertised the capability; otherwise the new import filter applies to what it
    /// sends from now on.
    fn request_refresh(&mut self, addr: IpAddr) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let Some((conn, ctx)) = &peer.established else {
            return;
        };
        let Some(neg) = peer.session.negotiated() else {
            return;
        };
        if !neg.route_refresh {
            debug!(peer = %addr, "peer lacks route refresh; new import filter applies to new routes");
            return;
        }
        let msgs: Vec<Bytes> = neg
            .families
            .iter()
            .map(|f| {
                let (afi, safi) = f.afi_safi();
                Message::RouteRefresh(RouteRefresh {
                    afi,
                    safi,
                    subtype: 0,
                })
                .to_bytes(ctx)
            })
            .collect();
        if let Some(c) = peer.connections.get(conn) {
            peer.session.record_sent(msgs.len() as u64);
            let _ = c.writer.send(Outgoing::Messages(msgs));
        }
    }

    fn remove_peer(&mut self, addr: IpAddr) -> Result<(), SpeakerError> {
        if !self.peers.contains_key(&addr) {
            return Err(SpeakerError::Peer {
                peer: addr,
                reason: "no such peer".into(),
            });
        }
        let had_bfd = self
            .peers
            .get(&addr)
            .is_some_and(|p| p.config.bfd.is_some());
        self.drop_peer(addr, StopReason::PeerDeconfigured);
        if had_bfd {
            self.bfd.remove(addr);
        }
        Ok(())
    }

    fn drop_peer(&mut self, addr: IpAddr, reason: StopReason) {
        self.feed(addr, Input::ManualStop(reason));
        if let Some(peer) = self.peers.remove(&addr) {
            for (_, c) in peer.connections {
                let _ = c.writer.send(Outgoing::Close);
            }
            self.by_id.remove(&peer.id);
            match self.rib.remove_peer(peer.id) {
                Ok(out) => self.dispatch(out),
                Err(e) => warn!(peer = %addr, error = %e, "removing peer from the RIB"),
            }
            info!(peer = %addr, "peer removed");
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Accepted(stream, remote) => {
                let addr = remote.ip();
                let Some(peer) = self.peers.get(&addr) else {
                    debug!(remote = %remote, "connection from an unconfigured address refused");
                    return;
                };
                let sref = socket2::SockRef::from(&stream);
                if let Some(hops) = peer.config.ttl_security {
                    if let Err(e) = socket::set_ttl_security(&sref, addr, hops) {
                        warn!(peer = %addr, error = %e, "GTSM on accepted connection");
                    }
                } else if let Some(ttl) = session_ttl(self.config.local_as, &peer.config) {
                    // Our answers carry the same TTL, so a peer farther away than allowed
                    // cannot establish the session from its side either.
                    if let Err(e) = socket::set_ttl(&sref, addr, ttl) {
                        warn!(peer = %addr, error = %e, "TTL on accepted connection");
                    }
                }
                self.next_inbound += 1;
                let conn = ConnectionId::inbound(self.next_inbound);
                self.attach(addr, conn, stream);
                self.feed(addr, Input::TcpAccepted(conn));
            }
            Event::Connected { peer, conn, stream } => {
                if !self.peers.contains_key(&peer) {
                    return;
                }
                self.attach(peer, conn, stream);
                self.feed(peer, Input::TcpConnected(conn));
            }
            Event::ConnectFailed { peer, conn, error } => {
                debug!(peer = %peer, error = %error, "connect failed");
                self.feed(peer, Input::TcpFailed(conn));
            }
            Event::Frames { peer, conn, frames } => {
                for frame in frames {
                    let Some(p) = self.peers.get(&peer) else {
                        return;
                    };
                    if !p.connections.contains_key(&conn) {
                        return; // closed while we were handling earlier frames
                    }
                    let ctx = p.session.decode_context(conn);
                    let input = match Message::decode(&frame, &ctx) {
                        Ok(m) => Input::Message(conn, m),
                        Err(e) => {
                            warn!(peer = %peer, error = %e, "malformed message");
                            Input::DecodeError(conn, e)
                        }
                    };
                    let is_open = matches!(input, Input::Message(_, Message::Open(_)));
                    self.feed(peer, input);
                    if is_open {
                        // The reader waits for this before framing what follows the OPEN.
                        if let Some(c) = self.peers.get(&peer).and_then(|p| {
                            p.connections
                                .get(&conn)
                                .map(|c| (c, p.session.decode_context(conn)))
                        }) {
                            let _ = c.0.max_len.send(c.1.max_message_len());
                        }
                    }
                }
            }
            Event::BadHeader { peer, conn, error } => {
                warn!(peer = %peer, error = %error, "malformed message header");
                self.feed(peer, Input::DecodeError(conn, error));
            }
            Event::Bfd { peer, status } => self.on_bfd(peer, status),
            Event::Closed { peer, conn } => {
                let known = self
                    .peers
                    .get_mut(&peer)
                    .and_then(|p| p.connections.remove(&conn))
                    .is_some();
                if known {
                    self.feed(peer, Input::TcpFailed(conn));
                }
            }
        }
    }

    /// Starts the reader and writer tasks of a new connection.
    fn attach(&mut self, addr: IpAddr, conn: ConnectionId, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let (r, w) = stream.into_split();
        let (wtx, wrx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(w, wrx));
        let (max_len, max_len_rx) = tokio::sync::watch::channel(packet::MAX_MESSAGE_LEN);
        let reader = tokio::spawn(read_loop(r, addr, conn, self.events_tx.clone(), max_len_rx))
            .abort_handle();
        if let Some(p) = self.peers.get_mut(&addr) {
            p.connections.insert(
                conn,
                Connection {
                    writer: wtx,
                    local,
                    reader,
                    max_len,
                },
            );
        }
    }

    /// Feeds one input to a peer's session and carries out what it asks for.
    fn feed(&mut self, addr: IpAddr, input: Input) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let before = peer.session.state();
        let outputs = peer.session.handle(Instant::now(), input);
        self.apply(addr, before, outputs);
    }

    fn apply(&mut self, addr: IpAddr, before: State, outputs: Vec<Output>) {
        for output in outputs {
            let Some(peer) = self.peers.get_mut(&addr) else {
                return;
            };
            match output {
                Output::Connect(conn) => {
                    let target = SocketAddr::new(addr, peer.config.port.unwrap_or(179));
                    let security = SessionSecurity {
                        md5_key: peer.config.password.clone(),
                        ttl_security: peer.config.ttl_security,
                        ttl: session_ttl(self.config.local_as, &peer.config),
                    };
                    let local = peer.config.local_address;
                    let timeout = Duration::from_secs(self.config.connect_retry.max(1));
                    tokio::spawn(connect(
                        addr,
                        conn,
                        target,
                        local,
                        security,
                        timeout,
                        self.events_tx.clone(),
                    ));
                }
                Output::Send(conn, msg) => {
                    let ctx = peer.session.decode_context(conn);
                    if let Some(c) = peer.connections.get(&conn) {
                        let _ = c.writer.send(Outgoing::Messages(vec![msg.to_bytes(&ctx)]));
                    }
                }
                Output::Close(conn) => {
                    if let Some(c) = peer.connections.remove(&conn) {
                        let _ = c.writer.send(Outgoing::Close);
                        c.reader.abort();
                    }
                }
                Output::SetTimer { .. } | Output::StopTimer(_) => {
                    // The core polls Session::next_deadline instead of keeping timers.
                }
                Output::Established(neg) => {
                    let local = peer.connections.get(&neg.connection).and_then(|c| c.local);
                    peer.established = Some((neg.connection, neg.decode));
                    peer.last_error = None;
                    peer.end_of_rib.clear();
                    info!(peer = %addr, peer_as = neg.peer_as, router_id = %neg.peer_id,
                        hold_time = neg.hold_time, families = ?neg.families, "session established");
                    let session = PeerSession {
                        router_id: neg.peer_id,
                        local_ipv4: match local.map(|l| l.ip()) {
                            Some(IpAddr::V4(a)) => Some(a),
                            _ => None,
                        },
                        local_ipv6: match local.map(|l| l.ip()) {
                            Some(IpAddr::V6(a)) => Some(a),
                            _ => None,
                        },
                        families: neg.families.clone(),
                        shared_subnets: local
                            .map(|l| socket::subnets_of(l.ip()))
                            .unwrap_or_default(),
                        add_path_send: neg
                            .families
                            .iter()
                            .copied()
                            .filter(|f| neg.add_path_send(*f))
                            .collect(),
                    };
                    let id = peer.id;
                    // Back from a graceful restart with stale paths held: the peer must
                    // still preserve forwarding (F bit) for every retained family, or its
                    // stale paths go now; else they wait for its End-of-RIB, at most the
                    // stale-routes time (RFC 4724 §4.2).
                    let flush = peer.stale_until.is_some() && {
                        let retained = peer.peer_restart.as_ref().map(|g| g.families.clone());
                        let now_preserved = neg.graceful_restart.as_ref();
                        retained.unwrap_or_default().iter().any(|(f, _)| {
                            !now_preserved.is_some_and(|g| g.families.contains(&(*f, true)))
                        })
                    };
                    if peer.stale_until.is_some() {
                        peer.stale_until = (!flush).then(|| Instant::now() + STALE_ROUTES_TIME);
                    }
                    peer.peer_restart = neg.graceful_restart.clone();
                    match self.rib.peer_up(id, session) {
                        Ok(out) => self.dispatch(out),
                        Err(e) => warn!(peer = %addr, error = %e, "RIB refused peer up"),
                    }
                    if flush {
                        info!(peer = %addr, "restarted without preserving forwarding: dropping its stale routes");
                        match self.rib.flush_stale(id) {
                            Ok(out) => self.dispatch(out),
                            Err(e) => warn!(peer = %addr, error = %e, "flushing stale routes"),
                        }
                    }
                }
                Output::SessionDown(reason) => {
                    peer.established = None;
                    peer.prefix_limit.session_down();
                    let text = reason.describe();
                    warn!(peer = %addr, reason = %text, "session down");
                    peer.last_error = Some(text);
                    let id = peer.id;
                    // RFC 4724 §4.2: when the TCP session of a peer that advertised Graceful
                    // Restart ends without a NOTIFICATION, its routes of the families in its
                    // capability are kept (stale, still forwarded) for its Restart Time. A
                    // NOTIFICATION either way is a normal session end (we do not offer the
                    // N bit of RFC 8538).
                    let restarting = match (&reason, &peer.peer_restart) {
                        (DownReason::ConnectionLost | DownReason::PeerRestarted, Some(g))
                            if g.restart_time > 0 && !g.families.is_empty() =>
                        {
                            Some(g)
                        }
                        _ => None,
                    };
                    let result = match restarting {
                        Some(g) => {
                            let retained: Vec<Family> =
                                g.families.iter().map(|(f, _)| *f).collect();
                            let until = Instant::now() + Duration::from_secs(g.restart_time.into());
                            info!(peer = %addr, restart_time = g.restart_time, families = ?retained,
                                "peer restarting gracefully: keeping its routes as stale");
                            peer.stale_until = Some(until);
                            self.rib.peer_down_graceful(id, &retained)
                        }
                        None => {
                            peer.stale_until = None;
                            self.rib.peer_down(id)
                        }
                    };
                    match result {
                        Ok(out) => self.dispatch(out),
                        Err(e) => warn!(peer = %addr, error = %e, "RIB peer down"),
                    }
                }
                Output::Update(update) => {
                    if update.treat_as_withdraw {
                        // RFC 7606 §3 (j): an error handled by treat-as-withdraw is logged.
                        warn!(peer = %addr, prefixes = update.announced().count(),
                            "malformed attribute: UPDATE treated as withdraw (RFC 7606)");
                    }
                    if let Some(family) = update.is_end_of_rib() {
                        if !peer.end_of_rib.contains(&family) {
                            debug!(peer = %addr, family = family_name(family), "End-of-RIB received");
                            peer.end_of_rib.push(family);
                        }
                    }
                    let id = peer.id;
                    match self.rib.update(id, &update) {
                        Ok(out) => self.dispatch(out),
                        Err(e) => warn!(peer = %addr, error = %e, "RIB refused update"),
                    }
                    self.check_prefix_limit(addr);
                }
                Output::RouteRefresh(rr) => self.on_route_refresh(addr, rr),
            }
        }
        if let Some(peer) = self.peers.get(&addr) {
            let after = peer.session.state();
            if after != before {
                info!(peer = %addr, from = before.as_str(), to = after.as_str(), "session state");
            }
        }
        // An End-of-RIB or a session coming up may end a restart's deferral.
        self.check_deferral();
    }

    /// A ROUTE-REFRESH from the peer: a request is answered with our routes of the family,
    /// framed by BoRR and EoRR when Enhanced Route Refresh is in use (RFC 7313 §4); the
    /// peer's own BoRR / EoRR mark its paths stale and drop those not re-sent.
    fn on_route_refresh(&mut self, addr: IpAddr, rr: RouteRefresh) {
        let Some(peer) = self.peers.get(&addr) else {
            return;
        };
        let Some(family) = Family::from_afi_safi(rr.afi, rr.safi) else {
            return;
        };
        let id = peer.id;
        let enhanced = peer
            .session
            .negotiated()
            .is_some_and(|n| n.enhanced_route_refresh);
        match rr.subtype {
            0 => {
                let out = match self.rib.refresh(id, family) {
                    Ok(out) => out,
                    Err(e) => {
                        warn!(peer = %addr, error = %e, "route refresh");
                        return;
                    }
                };
                if enhanced {
                    self.send_refresh_marker(addr, &rr, 1);
                }
                self.dispatch(out);
                if enhanced {
                    self.send_refresh_marker(addr, &rr, 2);
                }
                info!(peer = %addr, family = family_name(family), enhanced, "route refresh answered");
            }
            1 if enhanced => {
                debug!(peer = %addr, family = family_name(family), "peer began a route refresh (BoRR)");
                if let Err(e) = self.rib.begin_refresh(id, family) {
                    warn!(peer = %addr, error = %e, "BoRR");
                }
            }
            2 if enhanced => match self.rib.end_refresh(id, family) {
                Ok(out) => {
                    debug!(peer = %addr, family = family_name(family), "peer ended a route refresh (EoRR)");
                    self.dispatch(out);
                }
                Err(e) => warn!(peer = %addr, error = %e, "EoRR"),
            },
            // RFC 7313 §5: other subtypes (and markers without the capability) are ignored.
            other => debug!(peer = %addr, subtype = other, "ROUTE-REFRESH subtype ignored"),
        }
    }

    /// Sends a Beginning- (1) or End- (2) of-Route-Refresh marker (RFC 7313 §3.2).
    fn send_refresh_marker(&mut self, addr: IpAddr, rr: &RouteRefresh, subtype: u8) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let Some((conn, ctx)) = peer.established else {
            return;
        };
        let marker = Message::RouteRefresh(RouteRefresh {
            afi: rr.afi,
            safi: rr.safi,
            subtype,
        });
        if let Some(c) = peer.connections.get(&conn) {
            peer.session.record_sent(1);
            let _ = c
                .writer
                .send(Outgoing::Messages(vec![marker.to_bytes(&ctx)]));
        }
    }

    /// Ends the selection deferral of a restart when it is due ([`deferral`]): every
    /// Established peer is then sent our whole table and End-of-RIB for each family
    /// (RFC 4724 §4.1), which also drops the stale routes of ours it kept and we no longer
    /// have.
    fn check_deferral(&mut self) {
        let progress = self.peers.values().map(|p| deferral::PeerProgress {
            established: p.established.is_some(),
            graceful_restart: p.peer_restart.is_some(),
            restarting: p.peer_restart.as_ref().is_some_and(|g| g.restarting),
            families: p.session.negotiated().map_or(&[][..], |n| &n.families),
            end_of_rib: &p.end_of_rib,
        });
        let Some(end) = self.deferral.poll(Instant::now(), progress) else {
            return;
        };
        let targets: Vec<(PeerId, Vec<Family>)> = self
            .peers
            .values()
            .filter(|p| p.established.is_some())
            .filter_map(|p| Some((p.id, p.session.negotiated()?.families.clone())))
            .collect();
        info!(reason = ?end, peers = targets.len(),
            "route selection deferral over: advertising our routes (RFC 4724 §4.1)");
        for (id, families) in targets {
            for family in families {
                match self.rib.refresh(id, family) {
                    Ok(mut out) => {
                        out.end_of_rib.push(EndOfRib { peer: id, family });
                        self.dispatch(out);
                    }
                    Err(e) => warn!(peer = ?self.by_id.get(&id), error = %e,
                        "cannot send our routes after the deferral"),
                }
            }
        }
    }

    /// Encodes the RIB's outputs for each peer (withdrawals, then announcements, then
    /// End-of-RIB, as the RIB requires) and hands best-path changes to the FIB. During a
    /// restart's selection deferral only the FIB gets them ([`Core::check_deferral`]
    /// sends the peers everything at its end).
    fn dispatch(&mut self, mut out: RibOutputs) {
        if self.deferral.active() {
            out.withdraws.clear();
            out.updates.clear();
            out.end_of_rib.clear();
        }
        let mut per_peer: HashMap<PeerId, Vec<Bytes>> = HashMap::new();
        for w in &out.withdraws {
            if let Some(ctx) = self.context(w.peer) {
                w.encode(&ctx, per_peer.entry(w.peer).or_default());
            }
        }
        for u in &out.updates {
            if let Some(ctx) = self.context(u.peer) {
                if let Err(e) = u.encode(&ctx, per_peer.entry(u.peer).or_default()) {
                    warn!(peer = ?self.by_id.get(&u.peer), error = %e, "cannot encode update");
                }
            }
        }
        for eor in &out.end_of_rib {
            if let Some(ctx) = self.context(eor.peer) {
                let msg = Message::Update(Update::end_of_rib(eor.family));
                per_peer
                    .entry(eor.peer)
                    .or_default()
                    .push(msg.to_bytes(&ctx));
            }
        }
        for (id, msgs) in per_peer {
            if msgs.is_empty() {
                continue;
            }
            let Some(addr) = self.by_id.get(&id) else {
                continue;
            };
            let Some(peer) = self.peers.get_mut(addr) else {
                continue;
            };
            let Some((conn, _)) = peer.established else {
                continue;
            };
            if let Some(c) = peer.connections.get(&conn) {
                peer.session.record_sent(msgs.len() as u64);
                let _ = c.writer.send(Outgoing::Messages(msgs));
            }
        }
        if !out.best_changes.is_empty() {
            if let Some(tx) = &self.best_paths {
                let _ = tx.send(out.best_changes);
            }
        }
    }

    fn context(&self, id: PeerId) -> Option<DecodeContext> {
        let addr = self.by_id.get(&id)?;
        self.peers.get(addr)?.established.map(|(_, ctx)| ctx)
    }

    /// Originates `o`; a community that does not parse is an error naming the field (the file
    /// was validated at start-up, the control socket's requests are checked here).
    fn originate(&mut self, o: &Origination) -> Result<RibOutputs, String> {
        let communities = o
            .communities
            .iter()
            .map(|c| config::parse_community(c).map_err(|e| format!("communities: {e}")))
            .collect::<Result<Vec<Community>, String>>()?;
        let large_communities = o
            .large_communities
            .iter()
            .map(|c| {
                config::parse_large_community(c).map_err(|e| format!("large_communities: {e}"))
            })
            .collect::<Result<Vec<LargeCommunity>, String>>()?;
        let attrs = PathAttributes {
            med: o.med,
            local_pref: o.local_pref,
            communities,
            large_communities,
            ..PathAttributes::default()
        };
        Ok(self.rib.originate(o.prefix, Some(attrs)))
    }
}

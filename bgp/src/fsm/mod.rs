//! The BGP session finite state machine (RFC 4271 §8), sans-IO.
//!
//! A [`Session`] is the FSM of one configured peer. It owns no socket and reads no clock: the
//! driver feeds it [`Input`]s together with the current [`Instant`], and carries out the
//! [`Output`]s it returns (open/close connections, send messages, arm/disarm timers, hand
//! UPDATEs to the RIB). That makes every behaviour here testable synchronously and
//! deterministically, including timer expiry and connection collisions.
//!
//! # Connections
//!
//! RFC 4271 §6.8 lets a peer have two TCP connections at once: the one we initiated and the one
//! the peer initiated. Each is tracked under a [`ConnectionId`] and runs through
//! Connect/OpenSent/OpenConfirm/Established on its own; every connection-specific input and
//! output carries its id. When an OPEN arrives while the other connection is in OpenSent or
//! OpenConfirm, the BGP Identifiers decide (the connection initiated by the speaker with the
//! higher identifier survives; RFC 6286 §2.3 breaks a tie by AS number) and the loser gets
//! Cease/7 "Connection Collision Resolution" (Event 23, OpenCollisionDump). An Established
//! connection always wins: once a connection is Established every other one is closed with
//! Cease/7, and new inbound connections are refused the same way — unless Graceful Restart was
//! negotiated, in which case a new connection means the peer restarted (RFC 4724 §4.2) and
//! replaces the old session ([`DownReason::PeerRestarted`]). The peer's [`State`] is the
//! most advanced of its connections' states, or Connect/Active/Idle when none has TCP up.
//!
//! # Restarts
//!
//! After an error the session goes Idle and restarts by itself once the IdleHoldTimer fires.
//! That time doubles with each consecutive failure up to a cap and resets after a session has
//! stayed Established for a while ([`IdleHoldBackoff`]), so a flapping peer costs little
//! (RFC 4271 §8.1.1, DampPeerOscillations). A connection from the peer during the idle hold is
//! accepted as the restart; a stopped session (ManualStop) refuses connections with Cease/5
//! and does not restart until the next start event.
//!
//! # Timers
//!
//! Timers are [`Output::SetTimer`]/[`Output::StopTimer`] requests; the session also records each
//! deadline so that an expiry which raced with a restart of the timer (a KEEPALIVE arriving
//! just as the hold timer fires) is recognised as stale and ignored. A driver may instead
//! poll [`Session::next_deadline`] and call [`Session::handle_timeouts`].
//!
//! # Driving a session
//!
//! ```
//! use std::net::Ipv4Addr;
//! use std::time::Instant;
//! use bgp::fsm::{Input, Output, Session, SessionConfig, State};
//!
//! let now = Instant::now();
//! let config = SessionConfig::new(65001, Some(65002), Ipv4Addr::new(192, 0, 2, 1));
//! let mut session = Session::new(config, now)?;
//! for output in session.handle(now, Input::AutomaticStart) {
//!     match output {
//!         // Open a socket; feed Input::TcpConnected(id) or Input::TcpFailed(id).
//!         Output::Connect(id) => println!("connect {id}"),
//!         // Sleep until `at`, then feed Input::TimerExpired(timer).
//!         Output::SetTimer { timer, at, .. } => println!("{timer:?} at {at:?}"),
//!         _ => {}
//!     }
//! }
//! assert_eq!(session.state(), State::Connect);
//! # Ok::<(), bgp::fsm::ConfigError>(())
//! ```

mod config;
mod event;
mod negotiate;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::packet::error::{cease, fsm as fsm_err};
use crate::packet::{DecodeContext, ErrorCode, Family, Message, Notification, Open};

pub use config::{ConfigError, GracefulRestartConfig, IdleHoldBackoff, SessionConfig};
pub use event::{
    ConnectionId, Direction, DownReason, Event, Input, Output, State, StopReason, Timer,
};
pub use negotiate::{local_open, negotiate, AddPathFamily, Negotiated, PeerGracefulRestart};

/// One TCP connection of the session and how far it got.
#[derive(Debug, Clone)]
struct Connection {
    id: ConnectionId,
    /// Connect (outbound TCP pending), OpenSent, OpenConfirm or Established.
    state: State,
    /// Set once the peer's OPEN on this connection was accepted.
    negotiated: Option<Negotiated>,
}

/// Counters for `routectl node status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionCounters {
    pub messages_in: u64,
    pub messages_out: u64,
    pub updates_in: u64,
    /// How many times the session reached Established (RFC 4271 §8 "FSM established
    /// transitions", as in the BGP MIB).
    pub established_transitions: u64,
    /// Consecutive failed attempts since the session was last stable.
    pub consecutive_failures: u64,
}

/// A snapshot of the session for status output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStatus {
    pub state: State,
    /// When the session entered `state`.
    pub since: Instant,
    pub last_error: Option<DownReason>,
    pub counters: SessionCounters,
    pub negotiated: Option<Negotiated>,
    /// The idle hold time the next failure will wait.
    pub next_idle_hold: Duration,
}

/// The FSM of one configured peer. See the module documentation.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    local_open: Open,
    state: State,
    since: Instant,
    /// Started (ManualStart/AutomaticStart) and not stopped: restart after errors.
    enabled: bool,
    /// Idle because the IdleHoldTimer is running.
    idle_hold_pending: bool,
    connections: Vec<Connection>,
    deadlines: BTreeMap<Timer, Instant>,
    next_outbound_seq: u64,
    /// The idle hold time the next failure will use.
    backoff: Duration,
    established_at: Option<Instant>,
    negotiated: Option<Negotiated>,
    counters: SessionCounters,
    last_error: Option<DownReason>,
}

fn secs(s: u16) -> Duration {
    Duration::from_secs(u64::from(s))
}

impl Session {
    /// A session in Idle. Nothing happens until ManualStart or AutomaticStart.
    pub fn new(config: SessionConfig, now: Instant) -> Result<Session, ConfigError> {
        config.validate()?;
        let local_open = local_open(&config);
        let backoff = config.idle_hold.initial;
        Ok(Session {
            config,
            local_open,
            state: State::Idle,
            since: now,
            enabled: false,
            idle_hold_pending: false,
            connections: Vec::new(),
            deadlines: BTreeMap::new(),
            next_outbound_seq: 0,
            backoff,
            established_at: None,
            negotiated: None,
            counters: SessionCounters::default(),
            last_error: None,
        })
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The OPEN we send on every connection.
    pub fn local_open(&self) -> &Open {
        &self.local_open
    }

    /// The parameters of the Established session, if any.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// How to decode messages arriving on `connection`: the negotiated context once its OPEN
    /// was accepted, the pre-OPEN default before. It changes when the OPEN is handled, so a
    /// driver must feed each decoded message before decoding the next one from its buffer.
    pub fn decode_context(&self, connection: ConnectionId) -> DecodeContext {
        self.connection(connection)
            .and_then(|c| c.negotiated.as_ref())
            .map(|n| n.decode)
            .unwrap_or_default()
    }

    /// The connections currently tracked and their states.
    pub fn connections(&self) -> Vec<(ConnectionId, State)> {
        self.connections.iter().map(|c| (c.id, c.state)).collect()
    }

    pub fn counters(&self) -> SessionCounters {
        self.counters
    }

    pub fn last_error(&self) -> Option<&DownReason> {
        self.last_error.as_ref()
    }

    pub fn status(&self) -> SessionStatus {
        SessionStatus {
            state: self.state,
            since: self.since,
            last_error: self.last_error.clone(),
            counters: self.counters,
            negotiated: self.negotiated.clone(),
            next_idle_hold: self.backoff,
        }
    }

    /// Messages the driver sent outside the FSM (UPDATEs from the RIB), for the counters.
    pub fn record_sent(&mut self, messages: u64) {
        self.counters.messages_out += messages;
    }

    /// The earliest armed timer.
    pub fn next_deadline(&self) -> Option<(Instant, Timer)> {
        self.deadlines
            .iter()
            .map(|(t, at)| (*at, *t))
            .min_by_key(|(at, t)| (*at, *t))
    }

    /// Fires every timer whose deadline is at or before `now`, earliest first.
    pub fn handle_timeouts(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        // Bounded: each round removes one deadline, and firing a timer only arms timers in
        // the future (all durations are non-zero except a zero hold time, which arms none).
        for _ in 0..64 {
            let Some((at, timer)) = self.next_deadline() else {
                break;
            };
            if at > now {
                break;
            }
            out.extend(self.handle(now, Input::TimerExpired(timer)));
        }
        out
    }

    /// Feeds one input at time `now` and returns the actions to carry out, in order.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        if let Input::TimerExpired(timer) = input {
            match self.deadlines.get(&timer) {
                Some(at) if now >= *at => {
                    self.deadlines.remove(&timer);
                }
                _ => {
                    debug!(?timer, "stale timer expiry ignored");
                    return out;
                }
            }
        }
        if let Input::Message(_, msg) = &input {
            self.counters.messages_in += 1;
            if matches!(msg, Message::Update(_)) {
                self.counters.updates_in += 1;
            }
        }
        self.step(now, Event::from(input), &mut out);
        self.counters.messages_out +=
            out.iter().filter(|o| matches!(o, Output::Send(..))).count() as u64;
        out
    }

    /// The transition function: one `match` on (state, event), RFC 4271 §8.2.2. Events about
    /// an existing connection are matched against that connection's state, the others
    /// against the session's.
    fn step(&mut self, now: Instant, event: Event, out: &mut Vec<Output>) {
        let state = match event.connection() {
            None => self.state,
            Some(id) => match self.connection(id) {
                Some(c) => c.state,
                None => {
                    self.unknown_connection(id, &event, out);
                    return;
                }
            },
        };
        debug!(%state, event = event.name(), number = event.number(), "bgp fsm event");
        match (state, event) {
            // --- Administrative events (1-3) ---
            (State::Idle, Event::ManualStart) => {
                self.enabled = true;
                self.backoff = self.config.idle_hold.initial;
                self.counters.consecutive_failures = 0;
                self.idle_hold_pending = false;
                self.stop_timer(Timer::IdleHold, out);
                self.start(now, out);
            }
            (State::Idle, Event::AutomaticStart) => {
                self.enabled = true;
                if !self.idle_hold_pending {
                    self.start(now, out);
                }
            }
            (_, Event::ManualStart | Event::AutomaticStart) => {} // already running
            (_, Event::ManualStop(reason)) => self.stop(now, reason, out),

            // --- Session timers (9, 13) ---
            (State::Idle, Event::IdleHoldTimerExpires) => {
                self.idle_hold_pending = false;
                if self.enabled {
                    self.start(now, out);
                }
            }
            (State::Connect | State::Active, Event::ConnectRetryTimerExpires) => {
                self.retry_connect(now, out)
            }
            (_, Event::IdleHoldTimerExpires | Event::ConnectRetryTimerExpires) => {}

            // --- TCP (16-18) ---
            // A stopped session refuses all connections (RFC 4271 §8.2.2 Idle state). One that
            // is only waiting out its idle hold accepts the peer's connection as its restart,
            // as FRR does: refusing would let two speakers that each back off refuse each
            // other in turn, and the connecting peer is rate-limited by its own back-off.
            (State::Idle, Event::TcpConnectionConfirmed(id)) if !self.enabled => {
                self.refuse(id, cease::CONNECTION_REJECTED, out)
            }
            (State::Idle, Event::TcpConnectionConfirmed(id)) => {
                self.idle_hold_pending = false;
                self.stop_timer(Timer::IdleHold, out);
                self.accept(now, id, out)
            }
            // A Graceful Restart peer connecting while its session looks Established has
            // restarted (RFC 4724 §4.2, as BIRD does): the old session goes, the new one is
            // taken instead of refused.
            (State::Established, Event::TcpConnectionConfirmed(id))
                if self.peer_restart_capable() =>
            {
                let old: Vec<ConnectionId> = self.connections.iter().map(|c| c.id).collect();
                info!(new = %id, "graceful-restart peer reconnected: closing its old session");
                for c in old {
                    self.forget(c, out);
                }
                self.last_error = Some(DownReason::PeerRestarted);
                self.session_down(now, DownReason::PeerRestarted, out);
                self.accept(now, id, out)
            }
            // Otherwise a collision with an Established connection closes the new one
            // (RFC 4271 §6.8).
            (State::Established, Event::TcpConnectionConfirmed(id)) => {
                self.refuse(id, cease::CONNECTION_COLLISION_RESOLUTION, out)
            }
            (_, Event::TcpConnectionConfirmed(id)) => self.accept(now, id, out),
            (State::Connect, Event::TcpCrAcked(id)) => {
                self.stop_timer(Timer::ConnectRetry, out);
                self.send_open(now, id, out);
            }
            (State::Connect, Event::TcpConnectionFails(id)) => {
                self.forget(id, out);
                if self.connections.is_empty() && !self.config.passive {
                    // RFC 4271 §8.2.2 Connect state, Event 18: restart ConnectRetryTimer, Active.
                    self.set_timer(now, Timer::ConnectRetry, self.config.connect_retry, out);
                }
            }
            (State::OpenSent, Event::TcpConnectionFails(id)) => {
                // RFC 4271 §8.2.2 OpenSent state, Event 18: back to Active (or Connect, if an
                // attempt of ours is still in flight) with ConnectRetryTimer running again.
                self.forget(id, out);
                if !self.has_open_connection() && self.enabled && !self.config.passive {
                    self.set_timer(now, Timer::ConnectRetry, self.config.connect_retry, out);
                }
            }
            (_, Event::TcpConnectionFails(id)) => {
                self.fail(now, id, None, DownReason::ConnectionLost, true, out)
            }
            (_, Event::TcpCrAcked(id)) => debug!(%id, "duplicate Tcp_CR_Acked ignored"),

            // --- OPEN exchange (19, 23, 26) ---
            (State::OpenSent, Event::BgpOpen(id, open)) => self.receive_open(now, id, open, out),
            (State::OpenSent | State::OpenConfirm, Event::OpenCollisionDump(id)) => {
                let n = Notification::new(
                    ErrorCode::Cease,
                    cease::CONNECTION_COLLISION_RESOLUTION,
                    Vec::new(),
                );
                info!(%id, "connection collision: closing this connection");
                out.push(Output::Send(id, Message::Notification(n)));
                self.forget(id, out);
                if self.connections.is_empty() {
                    self.enter_idle(now, false, out);
                }
            }
            (State::OpenConfirm, Event::KeepAliveMsg(id)) => self.establish(now, id, out),

            // --- Established (26, 27) ---
            (State::Established, Event::KeepAliveMsg(id)) => self.restart_hold_timer(now, id, out),
            (State::Established, Event::UpdateMsg(id, update)) => {
                self.restart_hold_timer(now, id, out);
                out.push(Output::Update(update));
            }
            (State::Established, Event::RouteRefreshMsg(_, rr)) => {
                // RFC 2918 §4: ignore a refresh for a family we did not advertise.
                let family = Family::from_afi_safi(rr.afi, rr.safi);
                let negotiated = self
                    .negotiated
                    .as_ref()
                    .is_some_and(|n| family.is_some_and(|f| n.families.contains(&f)));
                if self.config.route_refresh && negotiated {
                    out.push(Output::RouteRefresh(rr));
                } else {
                    debug!(afi = ?rr.afi, safi = ?rr.safi, "ROUTE-REFRESH for a family not negotiated ignored");
                }
            }

            // --- Connection timers (10, 11) ---
            (State::OpenConfirm | State::Established, Event::KeepaliveTimerExpires(id)) => {
                out.push(Output::Send(id, Message::Keepalive));
                if let Some(k) = self.keepalive_of(id) {
                    self.set_timer(now, Timer::Keepalive(id), secs(k), out);
                }
            }
            (
                State::OpenSent | State::OpenConfirm | State::Established,
                Event::HoldTimerExpires(id),
            ) => {
                let n = Notification::new(ErrorCode::HoldTimerExpired, 0, Vec::new());
                self.fail(
                    now,
                    id,
                    Some(n.clone()),
                    DownReason::NotificationSent(n),
                    true,
                    out,
                )
            }

            // --- Errors and NOTIFICATIONs (21, 22, 24, 25, 28) ---
            (_, Event::NotifMsgVerErr(id, n)) => {
                // RFC 4271 §8.2.2: no ConnectRetryCounter increase, so no back-off growth.
                self.fail(
                    now,
                    id,
                    None,
                    DownReason::NotificationReceived(n),
                    false,
                    out,
                )
            }
            (_, Event::NotifMsg(id, n)) => self.fail(
                now,
                id,
                None,
                DownReason::NotificationReceived(n),
                true,
                out,
            ),
            (
                _,
                Event::BgpHeaderErr(id, e)
                | Event::BgpOpenMsgErr(id, e)
                | Event::UpdateMsgErr(id, e)
                | Event::RouteRefreshMsgErr(id, e),
            ) => {
                warn!(%id, reason = %e.reason, "message rejected");
                let n = e.notification;
                self.fail(
                    now,
                    id,
                    Some(n.clone()),
                    DownReason::NotificationSent(n),
                    true,
                    out,
                )
            }

            // --- Unexpected messages: FSM Error with the RFC 6608 §3 subcode ---
            (
                State::OpenSent,
                Event::KeepAliveMsg(id) | Event::UpdateMsg(id, _) | Event::RouteRefreshMsg(id, _),
            ) => self.fsm_error(now, id, fsm_err::UNEXPECTED_IN_OPENSENT, out),
            (
                State::OpenConfirm,
                Event::BgpOpen(id, _) | Event::UpdateMsg(id, _) | Event::RouteRefreshMsg(id, _),
            ) => self.fsm_error(now, id, fsm_err::UNEXPECTED_IN_OPENCONFIRM, out),
            (State::Established, Event::BgpOpen(id, _)) => {
                self.fsm_error(now, id, fsm_err::UNEXPECTED_IN_ESTABLISHED, out)
            }
            (
                _,
                Event::BgpOpen(id, _)
                | Event::KeepAliveMsg(id)
                | Event::UpdateMsg(id, _)
                | Event::RouteRefreshMsg(id, _),
            ) => self.fsm_error(now, id, fsm_err::UNSPECIFIED, out),

            // Timers or dumps that no longer apply in this state.
            (
                state,
                event @ (Event::HoldTimerExpires(_)
                | Event::KeepaliveTimerExpires(_)
                | Event::OpenCollisionDump(_)),
            ) => debug!(%state, event = event.name(), "event ignored in this state"),
        }
        self.refresh_state(now);
    }

    fn connection(&self, id: ConnectionId) -> Option<&Connection> {
        self.connections.iter().find(|c| c.id == id)
    }

    fn connection_mut(&mut self, id: ConnectionId) -> Option<&mut Connection> {
        self.connections.iter_mut().find(|c| c.id == id)
    }

    fn keepalive_of(&self, id: ConnectionId) -> Option<u16> {
        self.connection(id)
            .and_then(|c| c.negotiated.as_ref())
            .map(|n| n.keepalive_time)
            .filter(|k| *k > 0)
    }

    /// An event about a connection we no longer track (closed by us, a late TCP event).
    fn unknown_connection(&mut self, id: ConnectionId, event: &Event, out: &mut Vec<Output>) {
        debug!(%id, event = event.name(), "event for an unknown connection");
        if let Event::TcpCrAcked(_) = event {
            // A connection attempt we abandoned completed after all.
            out.push(Output::Close(id));
        }
    }

    /// The session's state is the most advanced of its connections' (see module docs).
    fn refresh_state(&mut self, now: Instant) {
        let state = match self.connections.iter().map(|c| c.state).max() {
            Some(s) => s,
            None if self.enabled && !self.idle_hold_pending => State::Active,
            None => State::Idle,
        };
        if state != self.state {
            info!(from = %self.state, to = %state, "bgp session state change");
            self.state = state;
            self.since = now;
        }
    }

    fn set_timer(&mut self, now: Instant, timer: Timer, after: Duration, out: &mut Vec<Output>) {
        let at = now + after;
        self.deadlines.insert(timer, at);
        out.push(Output::SetTimer { timer, after, at });
    }

    fn stop_timer(&mut self, timer: Timer, out: &mut Vec<Output>) {
        if self.deadlines.remove(&timer).is_some() {
            out.push(Output::StopTimer(timer));
        }
    }

    /// Starting from Idle: connect unless passive (RFC 4271 §8.2.2 Idle, Events 1/3 vs 4/5).
    fn start(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.idle_hold_pending = false;
        if !self.config.passive {
            self.connect(now, out);
        }
    }

    fn connect(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.next_outbound_seq += 1;
        let id = ConnectionId::outbound(self.next_outbound_seq);
        self.connections.push(Connection {
            id,
            state: State::Connect,
            negotiated: None,
        });
        out.push(Output::Connect(id));
        self.set_timer(now, Timer::ConnectRetry, self.config.connect_retry, out);
    }

    /// ConnectRetryTimer fired in Connect or Active: abandon a pending attempt, try again.
    fn retry_connect(&mut self, now: Instant, out: &mut Vec<Output>) {
        if self.config.passive {
            return;
        }
        let pending: Vec<ConnectionId> = self
            .connections
            .iter()
            .filter(|c| c.state == State::Connect)
            .map(|c| c.id)
            .collect();
        for id in pending {
            self.forget(id, out);
        }
        self.connect(now, out);
    }

    fn stop(&mut self, now: Instant, reason: StopReason, out: &mut Vec<Output>) {
        let n = Notification::new(
            ErrorCode::Cease,
            reason.cease_subcode(),
            reason.cease_data(),
        );
        let ids: Vec<(ConnectionId, State)> = self.connections();
        for (id, state) in ids {
            if state >= State::OpenSent {
                out.push(Output::Send(id, Message::Notification(n.clone())));
                self.last_error = Some(DownReason::NotificationSent(n.clone()));
            }
            self.forget(id, out);
            if state == State::Established {
                self.session_down(now, DownReason::NotificationSent(n.clone()), out);
            }
        }
        self.enabled = false;
        self.idle_hold_pending = false;
        self.backoff = self.config.idle_hold.initial;
        self.counters.consecutive_failures = 0;
        self.stop_timer(Timer::ConnectRetry, out);
        self.stop_timer(Timer::IdleHold, out);
    }

    fn refuse(&mut self, id: ConnectionId, subcode: u8, out: &mut Vec<Output>) {
        info!(%id, subcode, "refusing inbound connection");
        let n = Notification::new(ErrorCode::Cease, subcode, Vec::new());
        out.push(Output::Send(id, Message::Notification(n)));
        out.push(Output::Close(id));
    }

    fn accept(&mut self, now: Instant, id: ConnectionId, out: &mut Vec<Output>) {
        if id.direction != Direction::Inbound || self.connection(id).is_some() {
            warn!(%id, "TcpAccepted with an outbound or reused id ignored");
            return;
        }
        // A peer that opens a new connection has given up on its previous one (crashed or
        // timed out); keeping the old one would block the session until its hold timer.
        let stale: Vec<ConnectionId> = self
            .connections
            .iter()
            .filter(|c| c.id.direction == Direction::Inbound)
            .map(|c| c.id)
            .collect();
        for old in stale {
            info!(%old, new = %id, "peer reconnected; dropping its previous connection");
            self.forget(old, out);
        }
        self.connections.push(Connection {
            id,
            state: State::Connect,
            negotiated: None,
        });
        // RFC 4271 §8.2.2 Active/Connect state, Event 17: stop ConnectRetryTimer, send OPEN.
        self.stop_timer(Timer::ConnectRetry, out);
        self.send_open(now, id, out);
    }

    fn send_open(&mut self, now: Instant, id: ConnectionId, out: &mut Vec<Output>) {
        if let Some(c) = self.connection_mut(id) {
            c.state = State::OpenSent;
        }
        out.push(Output::Send(id, Message::Open(self.local_open.clone())));
        self.set_timer(now, Timer::Hold(id), self.config.open_hold_time, out);
    }

    fn receive_open(&mut self, now: Instant, id: ConnectionId, open: Open, out: &mut Vec<Output>) {
        let negotiated = match negotiate(&self.config, id, &open) {
            Ok(n) => n,
            Err(n) => {
                warn!(%id, error = %n.describe(), peer_as = open.asn(), peer_id = %open.bgp_id, "OPEN rejected");
                return self.fail(
                    now,
                    id,
                    Some(n.clone()),
                    DownReason::NotificationSent(n),
                    true,
                    out,
                );
            }
        };
        // Collision detection (RFC 4271 §6.8) against every other connection.
        let others: Vec<(ConnectionId, State)> = self
            .connections()
            .into_iter()
            .filter(|(other, _)| *other != id)
            .collect();
        for (other, state) in others {
            match state {
                // Our attempt has not even connected: the peer's connection will do.
                State::Connect => self.forget(other, out),
                State::Established => {
                    return self.step(now, Event::OpenCollisionDump(id), out);
                }
                _ => {
                    let keep_outbound =
                        self.collision_keeps_outbound(negotiated.peer_id, negotiated.peer_as);
                    let keep_this = (id.direction == Direction::Outbound) == keep_outbound;
                    info!(%id, %other, keep_outbound, "connection collision");
                    if keep_this {
                        self.step(now, Event::OpenCollisionDump(other), out);
                    } else {
                        return self.step(now, Event::OpenCollisionDump(id), out);
                    }
                }
            }
        }
        let hold = negotiated.hold_time;
        let keepalive = negotiated.keepalive_time;
        if let Some(c) = self.connection_mut(id) {
            c.state = State::OpenConfirm;
            c.negotiated = Some(negotiated);
        }
        out.push(Output::Send(id, Message::Keepalive));
        if hold == 0 {
            // RFC 4271 §4.4: a zero hold time means no hold timer and no KEEPALIVEs once
            // Established. Until then the OpenSent hold timer keeps running (a deviation from
            // §8.2.2, which stops it): a peer that never confirms must not pin the connection
            // in OpenConfirm forever.
        } else {
            self.set_timer(now, Timer::Hold(id), secs(hold), out);
            self.set_timer(now, Timer::Keepalive(id), secs(keepalive), out);
        }
    }

    /// RFC 4271 §6.8: keep the connection initiated by the speaker with the higher BGP
    /// Identifier; RFC 6286 §2.3: with equal identifiers, the one with the larger AS.
    fn collision_keeps_outbound(&self, peer_id: std::net::Ipv4Addr, peer_as: u32) -> bool {
        let local = u32::from(self.config.router_id);
        let remote = u32::from(peer_id);
        if local != remote {
            local > remote
        } else {
            self.config.local_as > peer_as
        }
    }

    fn establish(&mut self, now: Instant, id: ConnectionId, out: &mut Vec<Output>) {
        let Some(c) = self.connection_mut(id) else {
            return;
        };
        c.state = State::Established;
        let negotiated = c.negotiated.clone();
        // Any other connection loses to an Established one (RFC 4271 §6.8).
        let others: Vec<(ConnectionId, State)> = self
            .connections()
            .into_iter()
            .filter(|(other, _)| *other != id)
            .collect();
        for (other, state) in others {
            if state >= State::OpenSent {
                let n = Notification::new(
                    ErrorCode::Cease,
                    cease::CONNECTION_COLLISION_RESOLUTION,
                    Vec::new(),
                );
                out.push(Output::Send(other, Message::Notification(n)));
            }
            self.forget(other, out);
        }
        self.stop_timer(Timer::ConnectRetry, out);
        self.restart_hold_timer(now, id, out);
        self.established_at = Some(now);
        self.counters.established_transitions += 1;
        if let Some(n) = negotiated {
            info!(%id, peer_as = n.peer_as, peer_id = %n.peer_id, hold = n.hold_time, "bgp session established");
            self.negotiated = Some(n.clone());
            out.push(Output::Established(Box::new(n)));
        }
    }

    fn restart_hold_timer(&mut self, now: Instant, id: ConnectionId, out: &mut Vec<Output>) {
        let hold = self
            .connection(id)
            .and_then(|c| c.negotiated.as_ref())
            .map_or(0, |n| n.hold_time);
        if hold > 0 {
            self.set_timer(now, Timer::Hold(id), secs(hold), out);
        } else {
            self.stop_timer(Timer::Hold(id), out);
        }
    }

    fn fsm_error(&mut self, now: Instant, id: ConnectionId, subcode: u8, out: &mut Vec<Output>) {
        let n = Notification::new(ErrorCode::Fsm, subcode, Vec::new());
        warn!(%id, error = %n.describe(), "unexpected message");
        self.fail(
            now,
            id,
            Some(n.clone()),
            DownReason::NotificationSent(n),
            true,
            out,
        )
    }

    /// Closes a connection after an error. When it was the last one the session goes Idle
    /// (with the idle hold back-off growing if `damp`).
    fn fail(
        &mut self,
        now: Instant,
        id: ConnectionId,
        send: Option<Notification>,
        reason: DownReason,
        damp: bool,
        out: &mut Vec<Output>,
    ) {
        if let Some(n) = send {
            out.push(Output::Send(id, Message::Notification(n)));
        }
        info!(%id, reason = %reason.describe(), "bgp connection closed");
        let was_established = self
            .connection(id)
            .is_some_and(|c| c.state == State::Established);
        self.forget(id, out);
        self.last_error = Some(reason.clone());
        if was_established {
            self.session_down(now, reason, out);
        }
        // With no other exchange under way the session goes Idle; an attempt of ours still
        // connecting is abandoned too, the restart after the idle hold will make a new one.
        if !self.has_open_connection() {
            let pending: Vec<ConnectionId> = self.connections.iter().map(|c| c.id).collect();
            for other in pending {
                self.forget(other, out);
            }
            self.enter_idle(now, damp, out);
        }
    }

    /// Both sides advertised Graceful Restart on the Established session.
    fn peer_restart_capable(&self) -> bool {
        self.config.graceful_restart.is_some()
            && self
                .negotiated
                .as_ref()
                .is_some_and(|n| n.graceful_restart.is_some())
    }

    /// Whether some connection has TCP up and our OPEN sent.
    fn has_open_connection(&self) -> bool {
        self.connections.iter().any(|c| c.state >= State::OpenSent)
    }

    fn session_down(&mut self, now: Instant, reason: DownReason, out: &mut Vec<Output>) {
        // A session that stayed up long enough proves the peer healthy: forget past failures.
        if let Some(at) = self.established_at.take() {
            if now.saturating_duration_since(at) >= self.config.idle_hold.stable_after {
                self.backoff = self.config.idle_hold.initial;
                self.counters.consecutive_failures = 0;
            }
        }
        self.negotiated = None;
        out.push(Output::SessionDown(reason));
    }

    fn enter_idle(&mut self, now: Instant, damp: bool, out: &mut Vec<Output>) {
        self.stop_timer(Timer::ConnectRetry, out);
        if !self.enabled {
            return;
        }
        let wait = self.backoff;
        if damp {
            self.counters.consecutive_failures += 1;
            self.backoff = (self.backoff * 2).min(self.config.idle_hold.max);
        }
        self.idle_hold_pending = true;
        self.set_timer(now, Timer::IdleHold, wait, out);
    }

    /// Drops a connection: its timers stop and the driver closes it.
    fn forget(&mut self, id: ConnectionId, out: &mut Vec<Output>) {
        self.connections.retain(|c| c.id != id);
        self.stop_timer(Timer::Hold(id), out);
        self.stop_timer(Timer::Keepalive(id), out);
        out.push(Output::Close(id));
    }
}

//! The vocabulary of the session FSM: states, the RFC 4271 §8.1 events, the coarser inputs a
//! driver feeds, and the actions it must carry out.

use std::fmt;
use std::time::{Duration, Instant};

use crate::packet::error::cease;
use crate::packet::{DecodeError, Message, Notification, Open, RouteRefresh, Update};

use super::negotiate::Negotiated;

/// The six session states of RFC 4271 §8.2.2.
///
/// The order is the order of progress towards Established, so that the state of a peer with two
/// connections in flight (RFC 4271 §6.8) is simply the most advanced of the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// Refusing connections: not started, stopped, or waiting out the idle hold time.
    Idle,
    /// Waiting for an outbound TCP connection to complete.
    Connect,
    /// Waiting for the peer to connect to us (and, unless passive, for ConnectRetryTimer).
    Active,
    /// Our OPEN is sent; waiting for the peer's.
    OpenSent,
    /// OPENs exchanged; waiting for the KEEPALIVE that confirms ours was accepted.
    OpenConfirm,
    /// UPDATEs flow.
    Established,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who opened a TCP connection. Collision resolution (RFC 4271 §6.8) keeps "the connection
/// initiated by the BGP speaker with the higher BGP Identifier", so direction is part of a
/// connection's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// We connected to the peer's port 179.
    Outbound,
    /// The peer connected to our port 179.
    Inbound,
}

/// One TCP connection of a session. Outbound ids are allocated by the FSM (in
/// [`Output::Connect`]); inbound ids are allocated by the driver when it accepts a socket
/// ([`ConnectionId::inbound`]). The direction tag keeps the two numbering spaces apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId {
    pub direction: Direction,
    pub seq: u64,
}

impl ConnectionId {
    /// The id a driver gives a connection it accepted; `seq` must be unique per session.
    pub fn inbound(seq: u64) -> ConnectionId {
        ConnectionId {
            direction: Direction::Inbound,
            seq,
        }
    }

    /// The id the FSM gives a connection it asks the driver to open.
    pub fn outbound(seq: u64) -> ConnectionId {
        ConnectionId {
            direction: Direction::Outbound,
            seq,
        }
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.direction {
            Direction::Outbound => write!(f, "out#{}", self.seq),
            Direction::Inbound => write!(f, "in#{}", self.seq),
        }
    }
}

/// The timers of RFC 4271 §8 (DelayOpen is not implemented). Hold and keepalive timers are
/// per connection because two connections can be in OpenSent/OpenConfirm at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    ConnectRetry,
    /// The back-off before an automatic restart after an error (RFC 4271 §8.1.1, "IdleHoldTimer",
    /// used by DampPeerOscillations).
    IdleHold,
    Hold(ConnectionId),
    Keepalive(ConnectionId),
}

/// Why the session is being stopped administratively: chooses the Cease subcode (RFC 4486 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// Cease/2: the operator disabled the peer.
    AdministrativeShutdown,
    /// Cease/3: the peer was removed from the configuration.
    PeerDeconfigured,
    /// Cease/4: the operator asked for a reset (the driver restarts with ManualStart).
    AdministrativeReset,
    /// Cease/6: a configuration change that needs a new session (e.g. families changed).
    ConfigurationChange,
    /// Cease/10: the session's BFD session went down (RFC 9384).
    BfdDown,
    /// Cease/1: the peer sent more prefixes of a family than its limit allows.
    MaximumPrefixes {
        /// The family whose limit was crossed, as (AFI, SAFI).
        afi: u16,
        safi: u8,
        /// The configured limit.
        limit: u32,
    },
}

impl StopReason {
    /// The NOTIFICATION's data: for Cease/1 the AFI, SAFI and upper bound that were crossed
    /// (RFC 4486 §4 "MAY"; BIRD and FRR print them), otherwise none.
    pub fn cease_data(self) -> Vec<u8> {
        match self {
            StopReason::MaximumPrefixes { afi, safi, limit } => {
                let mut data = Vec::with_capacity(7);
                data.extend_from_slice(&afi.to_be_bytes());
                data.push(safi);
                data.extend_from_slice(&limit.to_be_bytes());
                data
            }
            _ => Vec::new(),
        }
    }

    pub fn cease_subcode(self) -> u8 {
        match self {
            StopReason::MaximumPrefixes { .. } => cease::MAX_PREFIXES,
            StopReason::BfdDown => cease::BFD_DOWN,
            StopReason::AdministrativeShutdown => cease::ADMINISTRATIVE_SHUTDOWN,
            StopReason::PeerDeconfigured => cease::PEER_DECONFIGURED,
            StopReason::AdministrativeReset => cease::ADMINISTRATIVE_RESET,
            StopReason::ConfigurationChange => cease::OTHER_CONFIGURATION_CHANGE,
        }
    }
}

/// What a driver feeds the FSM: administrative commands, timer expiries, TCP events and
/// decoded messages (or decode failures). [`Session::handle`](super::Session::handle) maps each
/// onto the RFC 4271 [`Event`] it is.
// Inputs are moved once from the driver into `handle`; boxing the UPDATE would cost an
// allocation per message for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// ManualStart (Event 1).
    ManualStart,
    /// ManualStop (Event 2).
    ManualStop(StopReason),
    /// AutomaticStart (Event 3): the peer is configured and should be brought up.
    AutomaticStart,
    /// A timer set by [`Output::SetTimer`] fired (Events 9, 10, 11, 13). Expiries of timers
    /// that were stopped or restarted since are recognised and dropped.
    TimerExpired(Timer),
    /// Our connection attempt succeeded: Tcp_CR_Acked (Event 16).
    TcpConnected(ConnectionId),
    /// The driver accepted a connection from this peer's address: TcpConnectionConfirmed
    /// (Event 17). The id must be [`Direction::Inbound`] and new.
    TcpAccepted(ConnectionId),
    /// The connection failed, was refused, or the peer closed it: TcpConnectionFails (Event 18).
    TcpFailed(ConnectionId),
    /// A message decoded on this connection (Events 19, 24-27, and ROUTE-REFRESH).
    Message(ConnectionId, Message),
    /// The codec rejected a message (Events 21, 22, 28); the error carries the NOTIFICATION.
    DecodeError(ConnectionId, DecodeError),
}

/// The FSM events of RFC 4271 §8.1 that this implementation acts on, with their numbers.
/// Optional events 4-8 (passive/damping variants of start), 12 (DelayOpen), 14-15 (TCP
/// validation) and 20 (BGPOpen with DelayOpen) are folded into configuration instead.
// Transient, like `Input`: see there.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// ManualStart (Event 1).
    ManualStart,
    /// ManualStop (Event 2).
    ManualStop(StopReason),
    /// AutomaticStart (Event 3).
    AutomaticStart,
    /// ConnectRetryTimer_Expires (Event 9).
    ConnectRetryTimerExpires,
    /// HoldTimer_Expires (Event 10).
    HoldTimerExpires(ConnectionId),
    /// KeepaliveTimer_Expires (Event 11).
    KeepaliveTimerExpires(ConnectionId),
    /// IdleHoldTimer_Expires (Event 13).
    IdleHoldTimerExpires,
    /// Tcp_CR_Acked (Event 16).
    TcpCrAcked(ConnectionId),
    /// TcpConnectionConfirmed (Event 17).
    TcpConnectionConfirmed(ConnectionId),
    /// TcpConnectionFails (Event 18).
    TcpConnectionFails(ConnectionId),
    /// BGPOpen (Event 19).
    BgpOpen(ConnectionId, Open),
    /// BGPHeaderErr (Event 21).
    BgpHeaderErr(ConnectionId, DecodeError),
    /// BGPOpenMsgErr (Event 22).
    BgpOpenMsgErr(ConnectionId, DecodeError),
    /// OpenCollisionDump (Event 23): raised internally by collision detection for the losing
    /// connection.
    OpenCollisionDump(ConnectionId),
    /// NotifMsgVerErr (Event 24): a NOTIFICATION "Unsupported Version Number".
    NotifMsgVerErr(ConnectionId, Notification),
    /// NotifMsg (Event 25).
    NotifMsg(ConnectionId, Notification),
    /// KeepAliveMsg (Event 26).
    KeepAliveMsg(ConnectionId),
    /// UpdateMsg (Event 27).
    UpdateMsg(ConnectionId, Update),
    /// UpdateMsgErr (Event 28).
    UpdateMsgErr(ConnectionId, DecodeError),
    /// A ROUTE-REFRESH message (RFC 2918; not an RFC 4271 event).
    RouteRefreshMsg(ConnectionId, RouteRefresh),
    /// A malformed ROUTE-REFRESH (RFC 7313 §5, error code 7; not an RFC 4271 event).
    RouteRefreshMsgErr(ConnectionId, DecodeError),
}

impl Event {
    /// The RFC 4271 §8.1 event number, where there is one.
    pub fn number(&self) -> Option<u8> {
        Some(match self {
            Event::ManualStart => 1,
            Event::ManualStop(_) => 2,
            Event::AutomaticStart => 3,
            Event::ConnectRetryTimerExpires => 9,
            Event::HoldTimerExpires(_) => 10,
            Event::KeepaliveTimerExpires(_) => 11,
            Event::IdleHoldTimerExpires => 13,
            Event::TcpCrAcked(_) => 16,
            Event::TcpConnectionConfirmed(_) => 17,
            Event::TcpConnectionFails(_) => 18,
            Event::BgpOpen(..) => 19,
            Event::BgpHeaderErr(..) => 21,
            Event::BgpOpenMsgErr(..) => 22,
            Event::OpenCollisionDump(_) => 23,
            Event::NotifMsgVerErr(..) => 24,
            Event::NotifMsg(..) => 25,
            Event::KeepAliveMsg(_) => 26,
            Event::UpdateMsg(..) => 27,
            Event::UpdateMsgErr(..) => 28,
            Event::RouteRefreshMsg(..) | Event::RouteRefreshMsgErr(..) => return None,
        })
    }

    /// The RFC's name of the event, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Event::ManualStart => "ManualStart",
            Event::ManualStop(_) => "ManualStop",
            Event::AutomaticStart => "AutomaticStart",
            Event::ConnectRetryTimerExpires => "ConnectRetryTimer_Expires",
            Event::HoldTimerExpires(_) => "HoldTimer_Expires",
            Event::KeepaliveTimerExpires(_) => "KeepaliveTimer_Expires",
            Event::IdleHoldTimerExpires => "IdleHoldTimer_Expires",
            Event::TcpCrAcked(_) => "Tcp_CR_Acked",
            Event::TcpConnectionConfirmed(_) => "TcpConnectionConfirmed",
            Event::TcpConnectionFails(_) => "TcpConnectionFails",
            Event::BgpOpen(..) => "BGPOpen",
            Event::BgpHeaderErr(..) => "BGPHeaderErr",
            Event::BgpOpenMsgErr(..) => "BGPOpenMsgErr",
            Event::OpenCollisionDump(_) => "OpenCollisionDump",
            Event::NotifMsgVerErr(..) => "NotifMsgVerErr",
            Event::NotifMsg(..) => "NotifMsg",
            Event::KeepAliveMsg(_) => "KeepAliveMsg",
            Event::UpdateMsg(..) => "UpdateMsg",
            Event::UpdateMsgErr(..) => "UpdateMsgErr",
            Event::RouteRefreshMsg(..) => "RouteRefreshMsg",
            Event::RouteRefreshMsgErr(..) => "RouteRefreshMsgErr",
        }
    }

    /// The existing connection the event concerns. `TcpConnectionConfirmed` names a *new*
    /// connection, so it is a session-level event here.
    pub fn connection(&self) -> Option<ConnectionId> {
        match self {
            Event::ManualStart
            | Event::ManualStop(_)
            | Event::AutomaticStart
            | Event::ConnectRetryTimerExpires
            | Event::IdleHoldTimerExpires
            | Event::TcpConnectionConfirmed(_) => None,
            Event::HoldTimerExpires(c)
            | Event::KeepaliveTimerExpires(c)
            | Event::TcpCrAcked(c)
            | Event::TcpConnectionFails(c)
            | Event::BgpOpen(c, _)
            | Event::BgpHeaderErr(c, _)
            | Event::BgpOpenMsgErr(c, _)
            | Event::OpenCollisionDump(c)
            | Event::NotifMsgVerErr(c, _)
            | Event::NotifMsg(c, _)
            | Event::KeepAliveMsg(c)
            | Event::UpdateMsg(c, _)
            | Event::UpdateMsgErr(c, _)
            | Event::RouteRefreshMsg(c, _)
            | Event::RouteRefreshMsgErr(c, _) => Some(*c),
        }
    }
}

impl From<Input> for Event {
    fn from(input: Input) -> Event {
        match input {
            Input::ManualStart => Event::ManualStart,
            Input::ManualStop(r) => Event::ManualStop(r),
            Input::AutomaticStart => Event::AutomaticStart,
            Input::TimerExpired(Timer::ConnectRetry) => Event::ConnectRetryTimerExpires,
            Input::TimerExpired(Timer::IdleHold) => Event::IdleHoldTimerExpires,
            Input::TimerExpired(Timer::Hold(c)) => Event::HoldTimerExpires(c),
            Input::TimerExpired(Timer::Keepalive(c)) => Event::KeepaliveTimerExpires(c),
            Input::TcpConnected(c) => Event::TcpCrAcked(c),
            Input::TcpAccepted(c) => Event::TcpConnectionConfirmed(c),
            Input::TcpFailed(c) => Event::TcpConnectionFails(c),
            Input::Message(c, Message::Open(o)) => Event::BgpOpen(c, o),
            // RFC 4271 §8.2.2: a NOTIFICATION with "Unsupported Version Number" (2/1) is
            // NotifMsgVerErr, every other NOTIFICATION is NotifMsg.
            Input::Message(c, Message::Notification(n)) if n.code == 2 && n.subcode == 1 => {
                Event::NotifMsgVerErr(c, n)
            }
            Input::Message(c, Message::Notification(n)) => Event::NotifMsg(c, n),
            Input::Message(c, Message::Keepalive) => Event::KeepAliveMsg(c),
            Input::Message(c, Message::Update(u)) => Event::UpdateMsg(c, u),
            Input::Message(c, Message::RouteRefresh(r)) => Event::RouteRefreshMsg(c, r),
            Input::DecodeError(c, e) => match e.notification.code {
                2 => Event::BgpOpenMsgErr(c, e),
                3 => Event::UpdateMsgErr(c, e),
                7 => Event::RouteRefreshMsgErr(c, e),
                _ => Event::BgpHeaderErr(c, e),
            },
        }
    }
}

/// Why a session left Established (or why the last attempt failed), for logs and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// We sent this NOTIFICATION and closed.
    NotificationSent(Notification),
    /// The peer sent this NOTIFICATION.
    NotificationReceived(Notification),
    /// The TCP connection failed or was closed without a NOTIFICATION.
    ConnectionLost,
    /// The peer, having negotiated Graceful Restart, connected anew while its old session
    /// looked Established: it restarted (RFC 4724 §4.2), so the old session was closed
    /// without a NOTIFICATION. Its routes are to be kept as stale, not withdrawn.
    PeerRestarted,
}

impl DownReason {
    pub fn describe(&self) -> String {
        match self {
            DownReason::NotificationSent(n) => format!("sent NOTIFICATION: {}", n.describe()),
            DownReason::NotificationReceived(n) => {
                format!("received NOTIFICATION: {}", n.describe())
            }
            DownReason::ConnectionLost => "connection lost".to_string(),
            DownReason::PeerRestarted => "peer restarted (graceful restart)".to_string(),
        }
    }

    /// The NOTIFICATION involved, whichever side sent it.
    pub fn notification(&self) -> Option<&Notification> {
        match self {
            DownReason::NotificationSent(n) | DownReason::NotificationReceived(n) => Some(n),
            DownReason::ConnectionLost | DownReason::PeerRestarted => None,
        }
    }
}

/// An action for the driver, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Open a TCP connection to the peer; report [`Input::TcpConnected`] or
    /// [`Input::TcpFailed`] with this id.
    Connect(ConnectionId),
    /// Encode and write this message on the connection.
    Send(ConnectionId, Message),
    /// Flush what was sent (a NOTIFICATION must reach the peer) and close the connection. It
    /// may already be closed (the FSM emits this for every connection it forgets).
    Close(ConnectionId),
    /// (Re)arm a timer to fire at `at` (= the `now` of this call + `after`); report
    /// [`Input::TimerExpired`] with a `now` of at least `at`.
    SetTimer {
        timer: Timer,
        after: Duration,
        at: Instant,
    },
    /// Disarm a timer.
    StopTimer(Timer),
    /// The session reached Established with these parameters; from now on decode with
    /// `negotiated.decode` and start sending the RIB.
    Established(Box<Negotiated>),
    /// The session left Established: every route learned from the peer must be withdrawn.
    SessionDown(DownReason),
    /// An UPDATE received in Established, for the RIB.
    Update(Update),
    /// The peer asked us to re-advertise a family (RFC 2918 §4, RFC 7313).
    RouteRefresh(RouteRefresh),
}

//! One BFD session as a pure state machine (RFC 5880 §6), asynchronous mode, no
//! authentication, no Echo function.
//!
//! The session holds the state variables of §6.8.1 and nothing else: no socket, no clock.
//! A driver feeds it [`Input`]s with the current instant and carries out the [`Output`]s;
//! between inputs it sleeps until [`Session::next_deadline`] and then feeds
//! [`Input::Timeout`]. A new session sends its first packet on the first call of
//! [`Session::handle`], so a driver feeds `Input::Timeout` right after creating it.
//!
//! Timers, in the RFC's terms:
//! - *transmission* (§6.8.7): every `max(bfd.DesiredMinTxInterval, bfd.RemoteMinRxInterval)`
//!   (§6.8.2), less 0-25% jitter ([`crate::jitter`]); a state change sends at once, as BIRD
//!   and FRR do, so the peer learns it without waiting for the period; a Poll is answered
//!   with a Final at once;
//! - *detection* (§6.8.4): the remote's Detect Mult times
//!   `max(bfd.RequiredMinRxInterval, the remote's Desired Min TX Interval)`, restarted by
//!   every packet that passes reception.
//!
//! Interval changes (§6.8.3, §6.5): while the session is Up, a change of the intervals we
//! advertise is announced with a Poll Sequence, and the new values take effect only when the
//! Final arrives. Until then the session uses, of old and new, whichever cannot cause a false
//! failure: the shorter transmit interval (the peer may already time us with the new one;
//! "the actual transmission interval used MUST NOT change until the Poll Sequence ... has
//! terminated" for an increase) and the longer receive interval (a reduced
//! bfd.RequiredMinRxInterval "MUST be used when calculating the Detection Time ... until the
//! Poll Sequence ... has terminated" only afterwards). A change during a Poll Sequence waits
//! for it and starts the next one (§6.5: one Poll Sequence at a time). While the session is
//! not Up the new values apply at once, and bfd.DesiredMinTxInterval is at least one second
//! (slow start, §6.8.3).

use std::cmp::{max, min};
use std::time::{Duration, Instant};

use crate::jitter::{jittered, XorShift};
use crate::packet::{ControlPacket, Diagnostic, State, VERSION};

/// The shortest interval a [`SessionConfig`] accepts: shorter ones are beyond what a
/// userspace driver on a busy node can keep.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// bfd.DesiredMinTxInterval while the session is not Up (§6.8.3: "not less than one second").
pub const SLOW_START_TX: Duration = Duration::from_secs(1);

/// bfd.RemoteMinRxInterval before the first packet (§6.8.1: "initialized to 1").
const INITIAL_REMOTE_MIN_RX: Duration = Duration::from_micros(1);

/// The timer parameters of one session (§6.8.1: bfd.DesiredMinTxInterval,
/// bfd.RequiredMinRxInterval, bfd.DetectMult). Build it with [`SessionConfig::new`] or check
/// it with [`SessionConfig::validate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// How often we would like to send once Up.
    pub desired_min_tx: Duration,
    /// How often we can receive: the peer sends no faster.
    pub required_min_rx: Duration,
    /// How many missed packets of ours the peer tolerates (the peer's detection time is our
    /// multiplier times the agreed interval).
    pub detect_multiplier: u8,
}

impl Default for SessionConfig {
    /// 300 ms both ways, multiplier 3: BIRD's and FRR's defaults, detection under a second.
    fn default() -> Self {
        SessionConfig {
            desired_min_tx: Duration::from_millis(300),
            required_min_rx: Duration::from_millis(300),
            detect_multiplier: 3,
        }
    }
}

/// A [`SessionConfig`] or discriminator that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("detect multiplier must be at least 1 (RFC 5880 §4.1: zero is invalid)")]
    ZeroDetectMultiplier,
    #[error("{field} of {value:?} is below the minimum of 10 ms")]
    IntervalTooShort {
        field: &'static str,
        value: Duration,
    },
    #[error("{field} of {value:?} does not fit the packet's 32-bit microseconds")]
    IntervalTooLong {
        field: &'static str,
        value: Duration,
    },
    #[error("the local discriminator must not be zero (RFC 5880 §6.8.1)")]
    ZeroDiscriminator,
}

impl SessionConfig {
    /// A validated configuration.
    pub fn new(
        desired_min_tx: Duration,
        required_min_rx: Duration,
        detect_multiplier: u8,
    ) -> Result<SessionConfig, ConfigError> {
        let c = SessionConfig {
            desired_min_tx,
            required_min_rx,
            detect_multiplier,
        };
        c.validate()?;
        Ok(c)
    }

    /// Refuses a zero multiplier and intervals under [`MIN_INTERVAL`] or beyond what the
    /// packet can carry.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.detect_multiplier == 0 {
            return Err(ConfigError::ZeroDetectMultiplier);
        }
        for (field, value) in [
            ("desired_min_tx", self.desired_min_tx),
            ("required_min_rx", self.required_min_rx),
        ] {
            if value < MIN_INTERVAL {
                return Err(ConfigError::IntervalTooShort { field, value });
            }
            if value.as_micros() > u128::from(u32::MAX) {
                return Err(ConfigError::IntervalTooLong { field, value });
            }
        }
        Ok(())
    }
}

/// What a session is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A Control packet that passed [`ControlPacket::decode`] and was demultiplexed to this
    /// session (§6.8.6).
    Received(ControlPacket),
    /// The instant given to [`Session::handle`] has reached [`Session::next_deadline`]
    /// (early or late calls are harmless: what is due fires, nothing else).
    Timeout,
    /// Disable the session administratively (§6.8.16), diagnostic Administratively Down.
    AdminDown,
    /// Enable it again (§6.8.16: to Down).
    AdminUp,
}

/// What a session asks its driver to do, or reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this packet to the peer now.
    Send(ControlPacket),
    /// bfd.SessionState changed; `diag` is bfd.LocalDiag after the change.
    StateChange {
        from: State,
        to: State,
        diag: Diagnostic,
    },
}

/// A snapshot of a session for display and for the session's clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionStatus {
    pub state: State,
    /// The state the peer last reported.
    pub remote_state: State,
    pub local_discriminator: u32,
    /// Zero until the peer is heard, and again after a detection time of silence.
    pub remote_discriminator: u32,
    /// The agreed transmit interval before jitter (§6.8.2); `None` while we must not send
    /// periodically (the peer asked for no packets, or runs Demand mode).
    pub tx_interval: Option<Duration>,
    /// The detection time in use (§6.8.4); zero until the peer is heard.
    pub detection_time: Duration,
    /// bfd.LocalDiag: why our session last changed state (kept after it comes Up again).
    pub diag: Diagnostic,
    /// The diagnostic in the peer's last packet.
    pub remote_diag: Diagnostic,
    /// A Poll Sequence of ours is waiting for its Final.
    pub polling: bool,
}

/// The two intervals we advertise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Intervals {
    desired_min_tx: Duration,
    required_min_rx: Duration,
}

/// One BFD session (§6.8.1's state variables plus its two timers).
#[derive(Debug, Clone)]
pub struct Session {
    config: SessionConfig,
    /// bfd.SessionState
    state: State,
    /// bfd.RemoteSessionState
    remote_state: State,
    /// bfd.LocalDiscr
    local_discr: u32,
    /// bfd.RemoteDiscr
    remote_discr: u32,
    /// bfd.LocalDiag
    local_diag: Diagnostic,
    remote_diag: Diagnostic,
    /// The intervals agreed with the peer (acknowledged by a Final, or set while not Up).
    in_use: Intervals,
    /// The intervals a running Poll Sequence announces.
    polling: Option<Intervals>,
    /// bfd.RemoteMinRxInterval
    remote_min_rx: Duration,
    /// The remote's Desired Min TX Interval, for the detection time (§6.8.4).
    remote_desired_min_tx: Duration,
    /// The remote's Detect Mult (§6.8.4); zero until heard.
    remote_detect_mult: u8,
    /// bfd.RemoteDemandMode
    remote_demand: bool,
    /// The transmit interval `next_tx` was planned with.
    tx_base: Option<Duration>,
    last_tx: Option<Instant>,
    next_tx: Option<Instant>,
    /// Send with the next call whatever the period (a state change).
    send_now: bool,
    /// When the detection time runs out.
    detect_at: Option<Instant>,
    rng: XorShift,
}

impl Session {
    /// A session in Down (§6.8.1: bfd.SessionState "MUST be initialized to Down"), with
    /// `local_discriminator` as bfd.LocalDiscr (non-zero and unique among the system's
    /// sessions: the driver's job).
    pub fn new(config: SessionConfig, local_discriminator: u32) -> Result<Session, ConfigError> {
        config.validate()?;
        if local_discriminator == 0 {
            return Err(ConfigError::ZeroDiscriminator);
        }
        let mut s = Session {
            config,
            state: State::Down,
            remote_state: State::Down,
            local_discr: local_discriminator,
            remote_discr: 0,
            local_diag: Diagnostic::NoDiagnostic,
            remote_diag: Diagnostic::NoDiagnostic,
            in_use: Intervals {
                desired_min_tx: Duration::ZERO,
                required_min_rx: Duration::ZERO,
            },
            polling: None,
            remote_min_rx: INITIAL_REMOTE_MIN_RX,
            remote_desired_min_tx: Duration::ZERO,
            remote_detect_mult: 0,
            remote_demand: false,
            tx_base: None,
            last_tx: None,
            next_tx: None,
            send_now: false,
            detect_at: None,
            rng: XorShift::new(u64::from(local_discriminator)),
        };
        s.in_use = s.wanted();
        Ok(s)
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn local_discriminator(&self) -> u32 {
        self.local_discr
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The earliest instant at which [`Input::Timeout`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.next_tx, self.detect_at) {
            (Some(a), Some(b)) => Some(min(a, b)),
            (a, b) => a.or(b),
        }
    }

    pub fn status(&self) -> SessionStatus {
        SessionStatus {
            state: self.state,
            remote_state: self.remote_state,
            local_discriminator: self.local_discr,
            remote_discriminator: self.remote_discr,
            tx_interval: self.tx_interval(),
            detection_time: self.detection_time(),
            diag: self.local_diag,
            remote_diag: self.remote_diag,
            polling: self.polling.is_some(),
        }
    }

    /// Feeds one input at `now`; returns what to send and what changed, in order.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Received(p) => self.receive(now, &p, &mut out),
            Input::Timeout => {}
            Input::AdminDown => {
                if self.state != State::AdminDown {
                    // §6.8.16: "Set bfd.SessionState to AdminDown; Set bfd.LocalDiag to an
                    // appropriate value". No detection in AdminDown (§6.8.4 applies to Init
                    // and Up); we keep sending AdminDown at the slow rate, which §6.8.16
                    // allows ("MAY be transmitted indefinitely").
                    self.detect_at = None;
                    self.set_state(
                        State::AdminDown,
                        Some(Diagnostic::AdministrativelyDown),
                        &mut out,
                    );
                }
            }
            Input::AdminUp => {
                if self.state == State::AdminDown {
                    // §6.8.16: "If enabling session, Set bfd.SessionState to Down".
                    self.set_state(State::Down, None, &mut out);
                }
            }
        }
        self.expire(now, &mut out);
        self.transmit_if_due(now, &mut out);
        out
    }

    /// Changes the timer parameters. While Up the change goes through a Poll Sequence and
    /// takes effect with its Final (§6.8.3); the multiplier applies to the next packet.
    pub fn set_config(
        &mut self,
        now: Instant,
        config: SessionConfig,
    ) -> Result<Vec<Output>, ConfigError> {
        config.validate()?;
        self.config = config;
        self.update_intervals();
        let mut out = Vec::new();
        self.transmit_if_due(now, &mut out);
        Ok(out)
    }

    /// §6.8.6, from "If the Your Discriminator field is nonzero": the packet-only checks were
    /// made by [`ControlPacket::decode`], the lookup by the driver.
    fn receive(&mut self, now: Instant, p: &ControlPacket, out: &mut Vec<Output>) {
        // §6.8.6: "If the Your Discriminator field is nonzero, it MUST be used to select the
        // session with which this BFD packet is associated. If no session is found, the
        // packet MUST be discarded." The driver demultiplexes; this is the session's own
        // guard against a packet meant for another session.
        if p.your_discriminator != 0 && p.your_discriminator != self.local_discr {
            return;
        }
        // §6.8.6: "If the A bit is set and no authentication is in use (bfd.AuthType is
        // zero), the packet MUST be discarded."
        if p.auth_present {
            return;
        }
        // §6.8.6: "Set bfd.RemoteDiscr to the value of My Discriminator", "Set
        // bfd.RemoteState to the value of the State (Sta) field", "Set bfd.RemoteDemandMode
        // to the value of the Demand (D) bit", "Set bfd.RemoteMinRxInterval to the value of
        // Required Min RX Interval". (Required Min Echo RX Interval: no Echo function here.)
        self.remote_discr = p.my_discriminator;
        self.remote_state = p.state;
        self.remote_demand = p.demand;
        self.remote_diag = p.diag;
        self.remote_min_rx = Duration::from_micros(u64::from(p.required_min_rx_us));
        self.remote_desired_min_tx = Duration::from_micros(u64::from(p.desired_min_tx_us));
        self.remote_detect_mult = p.detect_mult;
        // §6.8.6: "If a Poll Sequence is being transmitted by the local system and the Final
        // (F) bit in the received packet is set, the Poll Sequence MUST be terminated."
        // The announced values now hold (§6.8.3); a change made meanwhile starts the next
        // Poll Sequence in update_intervals.
        if p.final_ {
            if let Some(announced) = self.polling.take() {
                self.in_use = announced;
            }
        }
        // §6.8.6: "If bfd.SessionState is AdminDown, discard the packet."
        if self.state == State::AdminDown {
            self.update_intervals();
            return;
        }
        // §6.8.6, the state machine of §6.2.
        if p.state == State::AdminDown {
            // "If received state is AdminDown: If bfd.SessionState is not Down, Set
            // bfd.LocalDiag to 3 (Neighbor signaled session down), Set bfd.SessionState to
            // Down."
            if self.state != State::Down {
                self.set_state(
                    State::Down,
                    Some(Diagnostic::NeighborSignaledSessionDown),
                    out,
                );
            }
        } else {
            match (self.state, p.state) {
                // "If bfd.SessionState is Down: If received State is Down, Set
                // bfd.SessionState to Init; Else if received State is Init, Set
                // bfd.SessionState to Up."
                (State::Down, State::Down) => self.set_state(State::Init, None, out),
                (State::Down, State::Init) => self.set_state(State::Up, None, out),
                // "Else if bfd.SessionState is Init: If received State is Init or Up, Set
                // bfd.SessionState to Up."
                (State::Init, State::Init | State::Up) => self.set_state(State::Up, None, out),
                // "Else (bfd.SessionState is Up): If received State is Down, Set
                // bfd.LocalDiag to 3 (Neighbor signaled session down), Set
                // bfd.SessionState to Down."
                (State::Up, State::Down) => self.set_state(
                    State::Down,
                    Some(Diagnostic::NeighborSignaledSessionDown),
                    out,
                ),
                _ => {}
            }
        }
        self.update_intervals();
        // §6.8.6: "If the Poll (P) bit is set, send a BFD Control packet to the remote system
        // with the Poll (P) bit clear, and the Final (F) bit set"; §6.8.7: "as soon as
        // practicable, without respect to the transmission timer". It carries any new state,
        // so a pending state-change packet is not needed on top of it.
        if p.poll {
            out.push(Output::Send(self.packet(true)));
            self.send_now = false;
        }
        // §6.8.6: "If the packet was not discarded, it has been received for purposes of the
        // Detection Time expiration rules in section 6.8.4."
        self.detect_at = Some(now + self.detection_time());
    }

    /// §6.8.4: the detection time passed without a packet.
    fn expire(&mut self, now: Instant, out: &mut Vec<Output>) {
        if self.detect_at.is_none_or(|at| at > now) {
            return;
        }
        self.detect_at = None;
        match self.state {
            State::Init | State::Up => {
                // §6.8.4: "...and bfd.SessionState is Init or Up, the session has gone down --
                // the local system MUST set bfd.SessionState to Down and bfd.LocalDiag to 1
                // (Control Detection Time Expired)."
                self.forget_remote();
                self.set_state(
                    State::Down,
                    Some(Diagnostic::ControlDetectionTimeExpired),
                    out,
                );
            }
            // §6.8.1, bfd.RemoteDiscr: "MUST be set to zero if Detection Time passes without
            // the receipt of a valid, authenticated BFD packet from the remote system."
            State::Down => self.forget_remote(),
            State::AdminDown => {}
        }
    }

    /// The remote's variables back to their initial values: the peer is gone, and what it
    /// asked for (its receive interval, Demand mode) no longer binds us.
    fn forget_remote(&mut self) {
        self.remote_discr = 0;
        self.remote_state = State::Down;
        self.remote_min_rx = INITIAL_REMOTE_MIN_RX;
        self.remote_desired_min_tx = Duration::ZERO;
        self.remote_detect_mult = 0;
        self.remote_demand = false;
    }

    fn set_state(&mut self, to: State, diag: Option<Diagnostic>, out: &mut Vec<Output>) {
        let from = self.state;
        if from == to {
            return;
        }
        self.state = to;
        if let Some(d) = diag {
            self.local_diag = d;
        }
        out.push(Output::StateChange {
            from,
            to,
            diag: self.local_diag,
        });
        self.update_intervals();
        self.send_now = true;
    }

    /// The intervals we want to advertise now: the configured ones, with slow start while
    /// not Up (§6.8.3: bfd.DesiredMinTxInterval "not less than one second").
    fn wanted(&self) -> Intervals {
        let tx = if self.state == State::Up {
            self.config.desired_min_tx
        } else {
            max(self.config.desired_min_tx, SLOW_START_TX)
        };
        Intervals {
            desired_min_tx: tx,
            required_min_rx: self.config.required_min_rx,
        }
    }

    /// Brings the advertised intervals towards [`Session::wanted`]: through a Poll Sequence
    /// while Up (§6.8.3: "If either bfd.DesiredMinTxInterval is changed or
    /// bfd.RequiredMinRxInterval is changed, a Poll Sequence MUST be initiated"; §6.5: not
    /// while another one runs), at once otherwise.
    fn update_intervals(&mut self) {
        let wanted = self.wanted();
        if self.state == State::Up {
            if self.polling.is_none() && wanted != self.in_use {
                self.polling = Some(wanted);
            }
        } else {
            self.in_use = wanted;
            self.polling = None;
        }
    }

    /// The intervals in our packets: the announced ones during a Poll Sequence.
    fn advertised(&self) -> Intervals {
        self.polling.unwrap_or(self.in_use)
    }

    /// The transmit interval before jitter, or `None` when we must not send periodically.
    fn tx_interval(&self) -> Option<Duration> {
        // §6.8.7: "A system MUST NOT periodically transmit BFD Control packets if
        // bfd.RemoteMinRxInterval is zero."
        if self.remote_min_rx.is_zero() {
            return None;
        }
        // §6.8.7: "If bfd.RemoteDemandMode is 1, bfd.SessionState is Up, and
        // bfd.RemoteSessionState is Up, Demand mode is active on the remote system and the
        // local system MUST cease the periodic transmission of BFD Control packets" (other
        // than a Poll Sequence).
        if self.remote_demand
            && self.state == State::Up
            && self.remote_state == State::Up
            && self.polling.is_none()
        {
            return None;
        }
        // During a Poll Sequence the shorter of old and new (see the module docs).
        let desired = match self.polling {
            Some(p) => min(p.desired_min_tx, self.in_use.desired_min_tx),
            None => self.in_use.desired_min_tx,
        };
        // §6.8.2: "the larger of bfd.DesiredMinTxInterval and bfd.RemoteMinRxInterval".
        Some(max(desired, self.remote_min_rx))
    }

    /// §6.8.4: "the value of Detect Mult received from the remote system, multiplied by the
    /// agreed transmit interval of the remote system (the greater of
    /// bfd.RequiredMinRxInterval and the last received Desired Min TX Interval)". During a
    /// Poll Sequence the longer of the old and new receive interval (module docs).
    fn detection_time(&self) -> Duration {
        let rx = match self.polling {
            Some(p) => max(p.required_min_rx, self.in_use.required_min_rx),
            None => self.in_use.required_min_rx,
        };
        max(rx, self.remote_desired_min_tx) * u32::from(self.remote_detect_mult)
    }

    /// Sends the periodic packet when it is due (§6.8.7), or at once after a state change.
    fn transmit_if_due(&mut self, now: Instant, out: &mut Vec<Output>) {
        let interval = self.tx_interval();
        if interval != self.tx_base {
            // The agreed interval changed (§6.8.2): plan the next packet from the last one.
            self.tx_base = interval;
            self.next_tx = interval.map(|i| match self.last_tx {
                Some(last) => last + jittered(i, self.config.detect_multiplier, &mut self.rng),
                None => now,
            });
        }
        let Some(interval) = interval else {
            self.send_now = false;
            return;
        };
        if self.send_now || self.next_tx.is_some_and(|at| at <= now) {
            self.send_now = false;
            out.push(Output::Send(self.packet(false)));
            self.last_tx = Some(now);
            self.next_tx =
                Some(now + jittered(interval, self.config.detect_multiplier, &mut self.rng));
        }
    }

    /// A Control packet with the session's current values (§6.8.7, "Transmitting BFD Control
    /// Packets": P set during our Poll Sequence, never together with F; C, A, D, M clear:
    /// we share fate with the control plane, authenticate nothing and never ask for Demand
    /// mode; no Echo function, so Required Min Echo RX Interval 0).
    fn packet(&self, final_: bool) -> ControlPacket {
        let adv = self.advertised();
        ControlPacket {
            version: VERSION,
            diag: self.local_diag,
            state: self.state,
            poll: !final_ && self.polling.is_some(),
            final_,
            control_plane_independent: false,
            auth_present: false,
            demand: false,
            multipoint: false,
            detect_mult: self.config.detect_multiplier,
            my_discriminator: self.local_discr,
            your_discriminator: self.remote_discr,
            desired_min_tx_us: micros(adv.desired_min_tx),
            required_min_rx_us: micros(adv.required_min_rx),
            required_min_echo_rx_us: 0,
        }
    }
}

/// A validated interval in the packet's microseconds (saturating: validation keeps every
/// configured interval, and slow start's one second, within u32).
fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;

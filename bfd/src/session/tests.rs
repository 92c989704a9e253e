//! Two sessions wired to each other in virtual time: every packet arrives at the instant it
//! is sent, and time jumps from one deadline to the next, so every assertion is exact.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;

use super::*;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn cfg(tx: u64, rx: u64, mult: u8) -> SessionConfig {
    SessionConfig::new(ms(tx), ms(rx), mult).unwrap()
}

#[derive(Debug)]
struct Change {
    at: Duration,
    side: usize,
    from: State,
    to: State,
    diag: Diagnostic,
}

struct Wire {
    start: Instant,
    now: Instant,
    s: [Session; 2],
    /// Whether side i's packets reach the other side.
    open: [bool; 2],
    changes: Vec<Change>,
    /// Every packet sent: (time since start, sender, packet).
    sent: Vec<(Duration, usize, ControlPacket)>,
    /// When side i last had a packet delivered.
    last_rx: [Option<Instant>; 2],
}

impl Wire {
    fn new(a: SessionConfig, b: SessionConfig) -> Wire {
        let start = Instant::now();
        let mut w = Wire {
            start,
            now: start,
            s: [
                Session::new(a, 0x0a).unwrap(),
                Session::new(b, 0x0b).unwrap(),
            ],
            open: [true, true],
            changes: Vec::new(),
            sent: Vec::new(),
            last_rx: [None, None],
        };
        w.input(0, Input::Timeout);
        w.input(1, Input::Timeout);
        w
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn input(&mut self, side: usize, input: Input) {
        let out = self.s[side].handle(self.now, input);
        self.process(side, out);
    }

    fn process(&mut self, side: usize, outputs: Vec<Output>) {
        let mut queue: VecDeque<(usize, Output)> = outputs.into_iter().map(|o| (side, o)).collect();
        for _ in 0..10_000 {
            let Some((side, o)) = queue.pop_front() else {
                return;
            };
            match o {
                Output::StateChange { from, to, diag } => self.changes.push(Change {
                    at: self.elapsed(),
                    side,
                    from,
                    to,
                    diag,
                }),
                Output::Send(p) => {
                    self.sent.push((self.elapsed(), side, p));
                    if !self.open[side] {
                        continue;
                    }
                    let to = 1 - side;
                    self.last_rx[to] = Some(self.now);
                    let out = self.s[to].handle(self.now, Input::Received(p));
                    queue.extend(out.into_iter().map(|o| (to, o)));
                }
            }
        }
        panic!("packets ping-pong without end");
    }

    /// Runs the clock for `d`, firing every deadline on the way.
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..1_000_000 {
            let next = [0, 1]
                .iter()
                .filter_map(|&i| self.s[i].next_deadline())
                .min();
            match next {
                Some(at) if at <= end => {
                    self.now = at;
                    for i in 0..2 {
                        if self.s[i].next_deadline().is_some_and(|d| d <= at) {
                            self.input(i, Input::Timeout);
                        }
                    }
                }
                _ => {
                    self.now = end;
                    return;
                }
            }
        }
        panic!("too many deadlines");
    }

    /// Runs until `pred` holds, for at most `limit`; returns whether it did.
    fn run_until(&mut self, limit: Duration, pred: impl Fn(&Wire) -> bool) -> bool {
        let step = ms(1);
        let mut waited = Duration::ZERO;
        while waited < limit {
            if pred(self) {
                return true;
            }
            self.run_for(step);
            waited += step;
        }
        pred(self)
    }

    fn both_up(&self) -> bool {
        self.s.iter().all(|s| s.state() == State::Up)
    }
}

#[test]
fn two_sessions_reach_up() {
    let mut w = Wire::new(cfg(300, 300, 3), cfg(300, 300, 3));
    // Both start in Down and send at once; Down -> Init -> Up takes one exchange each way.
    assert!(w.run_until(ms(3000), Wire::both_up));
    assert!(
        w.elapsed() < ms(100),
        "immediate packets on state change bring the session up at once, took {:?}",
        w.elapsed()
    );
    let sides: Vec<(usize, State, State)> =
        w.changes.iter().map(|c| (c.side, c.from, c.to)).collect();
    assert!(
        sides.contains(&(0, State::Down, State::Init))
            || sides.contains(&(0, State::Down, State::Up))
    );
    assert!(
        sides.contains(&(1, State::Init, State::Up))
            || sides.contains(&(1, State::Down, State::Up))
    );
    // Going Up starts a Poll Sequence from slow start (1 s) to 300 ms (§6.8.3), answered at once.
    w.run_for(ms(2000));
    for s in &w.s {
        let st = s.status();
        assert!(!st.polling);
        assert_eq!(st.tx_interval, Some(ms(300)));
        assert_eq!(st.detection_time, ms(900));
        assert_ne!(st.remote_discriminator, 0);
    }
    // The sessions stay up, and packets carry each other's discriminators.
    w.run_for(ms(10_000));
    assert!(w.both_up());
    let (_, side, last) = *w.sent.last().unwrap();
    assert_eq!(last.my_discriminator, w.s[side].local_discriminator());
    assert_eq!(last.your_discriminator, w.s[1 - side].local_discriminator());
}

#[test]
fn silence_means_down_exactly_at_the_detection_time() {
    let mut w = Wire::new(cfg(300, 300, 3), cfg(300, 300, 3));
    assert!(w.run_until(ms(3000), Wire::both_up));
    w.run_for(ms(5000));
    let detect = w.s[0].status().detection_time;
    assert_eq!(detect, ms(900));
    w.open[1] = false; // B's packets no longer reach A
    assert!(w.run_until(ms(3000), |w| w.s[0].state() == State::Down));
    let down = w
        .changes
        .iter()
        .find(|c| c.side == 0 && c.to == State::Down)
        .unwrap();
    let heard = w.last_rx[0].unwrap() - w.start;
    assert_eq!(
        down.at,
        heard + detect,
        "Down exactly one detection time after the last packet"
    );
    assert_eq!(down.diag, Diagnostic::ControlDetectionTimeExpired);
    assert_eq!(
        w.s[0].status().diag,
        Diagnostic::ControlDetectionTimeExpired
    );
    // A tells B at once: B goes Down with Neighbor Signaled Session Down.
    let b_down = w
        .changes
        .iter()
        .find(|c| c.side == 1 && c.to == State::Down)
        .unwrap();
    assert_eq!(b_down.at, down.at);
    assert_eq!(b_down.diag, Diagnostic::NeighborSignaledSessionDown);
    // A forgot B (§6.8.1) and is back at the slow start rate.
    let st = w.s[0].status();
    assert_eq!(st.remote_discriminator, 0);
    assert_eq!(st.tx_interval, Some(ms(1000)));
    // Heal: both come back up.
    w.open[1] = true;
    assert!(w.run_until(ms(5000), Wire::both_up));
}

#[test]
fn peer_admin_down_signals_neighbor_down() {
    let mut w = Wire::new(cfg(300, 300, 3), cfg(300, 300, 3));
    assert!(w.run_until(ms(3000), Wire::both_up));
    w.run_for(ms(2000));
    let t = w.elapsed();
    w.input(1, Input::AdminDown);
    assert_eq!(w.s[1].state(), State::AdminDown);
    assert_eq!(w.s[1].status().diag, Diagnostic::AdministrativelyDown);
    let a = w
        .changes
        .iter()
        .find(|c| c.side == 0 && c.to == State::Down)
        .unwrap();
    assert_eq!(a.at, t);
    assert_eq!(a.diag, Diagnostic::NeighborSignaledSessionDown);
    assert_eq!(
        w.s[0].status().remote_diag,
        Diagnostic::AdministrativelyDown
    );
    // B keeps sending AdminDown (slowly); A stays Down and does not time out into anything.
    w.run_for(ms(10_000));
    assert_eq!(w.s[0].state(), State::Down);
    assert_eq!(w.s[1].state(), State::AdminDown);
    let (_, _, p) = *w.sent.iter().rev().find(|(_, side, _)| *side == 1).unwrap();
    assert_eq!(p.state, State::AdminDown);
    assert_eq!(p.diag, Diagnostic::AdministrativelyDown);
    w.input(1, Input::AdminUp);
    assert!(w.run_until(ms(5000), Wire::both_up));
}

#[test]
fn poll_final_interval_change() {
    let mut w = Wire::new(cfg(300, 600, 3), cfg(100, 300, 3));
    assert!(w.run_until(ms(3000), Wire::both_up));
    w.run_for(ms(3000));
    // A's detection time: B's mult x max(A's rx 600, B's tx 100).
    assert_eq!(w.s[0].status().detection_time, ms(1800));
    assert_eq!(w.s[0].status().tx_interval, Some(ms(300)));

    // A slows its transmissions to 1 s and lowers its receive interval to 200 ms.
    let out = w.s[0].set_config(w.now, cfg(1000, 200, 3)).unwrap();
    assert!(
        out.is_empty(),
        "the change waits for the next periodic packet: {out:?}"
    );
    let st = w.s[0].status();
    assert!(st.polling);
    // Until the Final: the old (shorter) transmit interval, the old (longer) receive interval.
    assert_eq!(st.tx_interval, Some(ms(300)));
    assert_eq!(st.detection_time, ms(1800));

    // A's next packet, by hand: it carries P and the new values.
    let at = w.s[0].next_deadline().unwrap();
    w.now = at;
    let out = w.s[0].handle(at, Input::Timeout);
    let Some(Output::Send(poll)) = out.first().cloned() else {
        panic!("expected a packet, got {out:?}")
    };
    assert!(poll.poll && !poll.final_);
    assert_eq!(poll.desired_min_tx_us, 1_000_000);
    assert_eq!(poll.required_min_rx_us, 200_000);
    // B answers at once with F (and P clear) and uses A's new Desired Min TX at once.
    let out = w.s[1].handle(at, Input::Received(poll));
    let Some(Output::Send(fin)) = out.first().cloned() else {
        panic!("expected the Final, got {out:?}")
    };
    assert!(fin.final_ && !fin.poll);
    assert_eq!(w.s[1].status().detection_time, ms(3000));
    // Still nothing changed on A's side.
    assert_eq!(w.s[0].status().tx_interval, Some(ms(300)));
    // The Final arrives: now the new values hold.
    let out = w.s[0].handle(at, Input::Received(fin));
    assert!(out.iter().all(|o| !matches!(o, Output::StateChange { .. })));
    let st = w.s[0].status();
    assert!(!st.polling);
    assert_eq!(st.tx_interval, Some(ms(1000)));
    assert_eq!(st.detection_time, ms(600));
    // A's later packets have no P and are spaced 750-1000 ms.
    let mark = w.sent.len();
    w.run_for(ms(10_000));
    assert!(w.both_up());
    let times: Vec<Duration> = w.sent[mark..]
        .iter()
        .filter(|(_, side, p)| *side == 0 && !p.final_)
        .map(|(t, _, p)| {
            assert!(!p.poll);
            *t
        })
        .collect();
    assert!(times.len() >= 9);
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= ms(750) && gap <= ms(1000), "gap {gap:?}");
    }
}

#[test]
fn a_poll_is_answered_with_final_at_once() {
    let now = Instant::now();
    let mut s = Session::new(cfg(300, 300, 3), 7).unwrap();
    let first = s.handle(now, Input::Timeout);
    assert!(matches!(first.as_slice(), [Output::Send(p)] if p.state == State::Down));
    let peer = ControlPacket {
        version: 1,
        diag: Diagnostic::NoDiagnostic,
        state: State::Down,
        poll: true,
        final_: false,
        control_plane_independent: false,
        auth_present: false,
        demand: false,
        multipoint: false,
        detect_mult: 3,
        my_discriminator: 99,
        your_discriminator: 0,
        desired_min_tx_us: 1_000_000,
        required_min_rx_us: 300_000,
        required_min_echo_rx_us: 0,
    };
    let out = s.handle(now + ms(1), Input::Received(peer));
    let sends: Vec<&ControlPacket> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(sends.len(), 1, "{out:?}");
    assert!(sends[0].final_ && !sends[0].poll);
    assert_eq!(sends[0].state, State::Init);
    assert_eq!(sends[0].your_discriminator, 99);
}

#[test]
fn your_discriminator_mismatch_is_dropped() {
    let mut w = Wire::new(cfg(300, 300, 3), cfg(300, 300, 3));
    assert!(w.run_until(ms(3000), Wire::both_up));
    w.run_for(ms(2000));
    let (_, _, from_b) = *w.sent.iter().rev().find(|(_, side, _)| *side == 1).unwrap();
    let before = w.s[0].status();
    let deadline = w.s[0].next_deadline();
    let wrong = ControlPacket {
        your_discriminator: from_b.your_discriminator + 1,
        state: State::Down,
        poll: true,
        ..from_b
    };
    assert!(w.s[0].handle(w.now, Input::Received(wrong)).is_empty());
    // An authenticated packet is dropped too: we authenticate nothing (§6.8.6).
    let auth = ControlPacket {
        auth_present: true,
        state: State::Down,
        ..from_b
    };
    assert!(w.s[0].handle(w.now, Input::Received(auth)).is_empty());
    assert_eq!(w.s[0].status(), before);
    assert_eq!(
        w.s[0].next_deadline(),
        deadline,
        "the detection timer was not restarted"
    );
}

/// Transmit times of a session with no peer: slow start (1 s) with jitter.
fn lonely_send_gaps(config: SessionConfig) -> Vec<Duration> {
    let start = Instant::now();
    let mut s = Session::new(config, 12345).unwrap();
    let mut times = Vec::new();
    let mut now = start;
    for _ in 0..500 {
        for o in s.handle(now, Input::Timeout) {
            if let Output::Send(p) = o {
                // Slow start: at least 1 s advertised while not Up (§6.8.3).
                assert_eq!(p.desired_min_tx_us, 1_000_000);
                times.push(now);
            }
        }
        now = s.next_deadline().unwrap();
    }
    assert_eq!(times[0], start, "the first packet goes out at once");
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn jitter_bounds() {
    let gaps = lonely_send_gaps(cfg(300, 300, 3));
    assert!(gaps.len() > 400);
    assert!(
        gaps.iter().all(|g| *g >= ms(750) && *g <= ms(1000)),
        "{gaps:?}"
    );
    assert!(gaps.iter().any(|g| *g < ms(800)) && gaps.iter().any(|g| *g > ms(950)));
    // Detect Mult 1: 75-90% (§6.8.7).
    let gaps = lonely_send_gaps(cfg(300, 300, 1));
    assert!(
        gaps.iter().all(|g| *g >= ms(750) && *g <= ms(900)),
        "{gaps:?}"
    );
    assert!(gaps.iter().any(|g| *g > ms(880)));
    // Deterministic: the same discriminator gives the same times.
    assert_eq!(
        lonely_send_gaps(cfg(300, 300, 3)),
        lonely_send_gaps(cfg(300, 300, 3))
    );
}

#[test]
fn config_is_validated() {
    assert_eq!(
        SessionConfig::new(ms(300), ms(300), 0),
        Err(ConfigError::ZeroDetectMultiplier)
    );
    assert!(matches!(
        SessionConfig::new(ms(9), ms(300), 3),
        Err(ConfigError::IntervalTooShort {
            field: "desired_min_tx",
            ..
        })
    ));
    assert!(matches!(
        SessionConfig::new(ms(300), Duration::ZERO, 3),
        Err(ConfigError::IntervalTooShort {
            field: "required_min_rx",
            ..
        })
    ));
    assert!(matches!(
        SessionConfig::new(Duration::from_secs(5000), ms(300), 3),
        Err(ConfigError::IntervalTooLong { .. })
    ));
    assert!(SessionConfig::new(ms(10), ms(10), 1).is_ok());
    assert_eq!(
        Session::new(SessionConfig::default(), 0).err(),
        Some(ConfigError::ZeroDiscriminator)
    );
    let bad = SessionConfig {
        detect_multiplier: 0,
        ..SessionConfig::default()
    };
    assert!(Session::new(bad, 1).is_err());
    let mut s = Session::new(SessionConfig::default(), 1).unwrap();
    assert!(s.set_config(Instant::now(), bad).is_err());
}

#[test]
fn remote_demand_mode_stops_periodic_transmission() {
    let mut w = Wire::new(cfg(300, 300, 3), cfg(300, 300, 3));
    assert!(w.run_until(ms(3000), Wire::both_up));
    w.run_for(ms(2000));
    let (_, _, from_b) = *w.sent.iter().rev().find(|(_, side, _)| *side == 1).unwrap();
    let demand = ControlPacket {
        demand: true,
        ..from_b
    };
    w.s[0].handle(w.now, Input::Received(demand));
    assert_eq!(w.s[0].status().tx_interval, None);
    // Nothing more to send; only the detection timer remains.
    assert!(w.s[0].next_deadline().is_some());
    let out = w.s[0].handle(w.now + ms(500), Input::Timeout);
    assert!(out.is_empty(), "{out:?}");
}

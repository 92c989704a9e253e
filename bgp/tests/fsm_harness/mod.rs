//! A deterministic back-to-back wiring of two sans-IO sessions: what a pair of tokio drivers
//! and a TCP connection would do, with a virtual clock. Every message crosses as bytes through
//! the codec.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bgp::fsm::{ConnectionId, Input, Output, Session, SessionConfig, State, Timer};
use bgp::packet::{Message, Notification};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// One speaker: its session, the timers its outputs armed, and everything it output.
pub struct Speaker {
    pub session: Session,
    pub timers: BTreeMap<Timer, Instant>,
    pub log: Vec<Output>,
    next_inbound: u64,
}

pub struct Pair {
    pub now: Instant,
    pub a: Speaker,
    pub b: Speaker,
    /// Connected TCP pairs: (side, its id, the other side's id).
    links: Vec<(Side, ConnectionId, ConnectionId)>,
    queue: VecDeque<(Side, Input)>,
    /// Complete `Connect` outputs at once (else they wait in `pending_connects`).
    pub auto_connect: bool,
    pub pending_connects: Vec<(Side, ConnectionId)>,
    /// Drop every message in transit (a dead link that TCP has not noticed).
    pub cut: bool,
}

pub fn config(asn: u32, remote: u32, id: [u8; 4]) -> SessionConfig {
    let mut c = SessionConfig::new(asn, Some(remote), Ipv4Addr::from(id));
    c.connect_retry = Duration::from_secs(5);
    c
}

impl Pair {
    pub fn new(a: SessionConfig, b: SessionConfig) -> Pair {
        let now = Instant::now();
        let speaker = |c| Speaker {
            session: Session::new(c, now).unwrap(),
            timers: BTreeMap::new(),
            log: Vec::new(),
            next_inbound: 0,
        };
        Pair {
            now,
            a: speaker(a),
            b: speaker(b),
            links: Vec::new(),
            queue: VecDeque::new(),
            auto_connect: true,
            pending_connects: Vec::new(),
            cut: false,
        }
    }

    pub fn speaker(&mut self, side: Side) -> &mut Speaker {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    pub fn state(&self, side: Side) -> State {
        match side {
            Side::A => self.a.session.state(),
            Side::B => self.b.session.state(),
        }
    }

    /// Feeds an input to one side now and runs the exchange to quiescence.
    pub fn input(&mut self, side: Side, input: Input) {
        self.queue.push_back((side, input));
        self.run();
    }

    fn peer_of(&self, side: Side, id: ConnectionId) -> Option<ConnectionId> {
        self.links
            .iter()
            .find(|(s, i, _)| *s == side && *i == id)
            .map(|(_, _, o)| *o)
    }

    /// Completes a pending outbound connection: the other side accepts it.
    pub fn complete_connect(&mut self, side: Side, id: ConnectionId) {
        let other = side.other();
        let sp = self.speaker(other);
        sp.next_inbound += 1;
        let inbound = ConnectionId::inbound(sp.next_inbound);
        self.links.push((side, id, inbound));
        self.links.push((other, inbound, id));
        self.queue.push_back((other, Input::TcpAccepted(inbound)));
        self.queue.push_back((side, Input::TcpConnected(id)));
    }

    /// Opens a fresh connection from `side` to the other side outside the FSM's own
    /// `Connect` (a second connection as a restarted peer would make). Returns the id the
    /// *other* side sees.
    pub fn inject_connection(&mut self, side: Side, id: ConnectionId) -> ConnectionId {
        self.complete_connect(side, id);
        let inbound = self.peer_of(side, id).unwrap();
        self.run();
        inbound
    }

    /// Fails a pending outbound connection (refused, unreachable).
    pub fn fail_connect(&mut self, side: Side, id: ConnectionId) {
        self.pending_connects
            .retain(|(s, i)| !(*s == side && *i == id));
        self.input(side, Input::TcpFailed(id));
    }

    /// The connected TCP pairs, as (side, its id, the other side's id).
    pub fn links(&self) -> Vec<(Side, ConnectionId, ConnectionId)> {
        self.links.clone()
    }

    /// The TCP connection breaks (a reset): both ends hear about it.
    pub fn break_link(&mut self, side: Side, id: ConnectionId) {
        if let Some(peer) = self.peer_of(side, id) {
            self.links.retain(|(s, i, _)| {
                !((*s == side && *i == id) || (*s == side.other() && *i == peer))
            });
            self.queue.push_back((side, Input::TcpFailed(id)));
            self.queue.push_back((side.other(), Input::TcpFailed(peer)));
            self.run();
        }
    }

    /// `side` reboots: a fresh session with the same configuration; its connections vanish
    /// without the other side hearing about it (no FIN reached it).
    pub fn reboot(&mut self, side: Side) {
        let now = self.now;
        let config = self.speaker(side).session.config().clone();
        let sp = self.speaker(side);
        sp.session = Session::new(config, now).unwrap();
        sp.timers.clear();
        self.links.clear();
        self.queue.retain(|(s, _)| *s != side);
    }

    /// Delivers raw bytes to `side` on its connection `id`, as its driver would read them.
    pub fn deliver_bytes(&mut self, side: Side, id: ConnectionId, bytes: &[u8]) {
        let ctx = self.speaker(side).session.decode_context(id);
        let input = match Message::decode(bytes, &ctx) {
            Ok(m) => Input::Message(id, m),
            Err(e) => Input::DecodeError(id, e),
        };
        self.input(side, input);
    }

    /// What a driver does with UPDATEs from the RIB: writes them on the Established connection
    /// without involving the FSM.
    pub fn send_update(&mut self, side: Side, msg: Message) {
        let id = self
            .speaker(side)
            .session
            .negotiated()
            .map(|n| n.connection);
        let id = id.expect("sending side is Established");
        self.speaker(side).session.record_sent(1);
        self.apply(side, bgp::fsm::Output::Send(id, msg));
        self.run();
    }

    pub fn run(&mut self) {
        for _ in 0..100_000 {
            let Some((side, input)) = self.queue.pop_front() else {
                return;
            };
            let now = self.now;
            let outs = self.speaker(side).session.handle(now, input);
            for o in outs {
                self.apply(side, o);
            }
        }
        panic!("exchange did not quiesce");
    }

    fn apply(&mut self, side: Side, o: Output) {
        match &o {
            Output::Connect(id) => {
                if self.auto_connect {
                    self.complete_connect(side, *id);
                } else {
                    self.pending_connects.push((side, *id));
                }
            }
            Output::Send(id, msg) => {
                if let Some(peer) = self.peer_of(side, *id) {
                    if !self.cut {
                        // Through the codec, as on a socket: the bytes the receiver would read,
                        // decoded with what the receiver negotiated on that connection.
                        let ctx = self.speaker(side.other()).session.decode_context(peer);
                        let bytes = msg.to_bytes(&ctx);
                        let input = match Message::decode(&bytes, &ctx) {
                            Ok(m) => Input::Message(peer, m),
                            Err(e) => Input::DecodeError(peer, e),
                        };
                        self.queue.push_back((side.other(), input));
                    }
                }
            }
            Output::Close(id) => {
                if let Some(peer) = self.peer_of(side, *id) {
                    self.links.retain(|(s, i, o)| {
                        !((*s == side && i == id) || (*s == side.other() && *i == peer && o == id))
                    });
                    self.queue.push_back((side.other(), Input::TcpFailed(peer)));
                }
                self.pending_connects
                    .retain(|(s, i)| !(*s == side && i == id));
            }
            Output::SetTimer { timer, at, .. } => {
                self.speaker(side).timers.insert(*timer, *at);
            }
            Output::StopTimer(timer) => {
                self.speaker(side).timers.remove(timer);
            }
            _ => {}
        }
        self.speaker(side).log.push(o);
    }

    /// Moves the clock forward by `d`, firing every timer that falls due, in order.
    pub fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        for _ in 0..100_000 {
            let next = [Side::A, Side::B]
                .into_iter()
                .flat_map(|s| {
                    let sp = match s {
                        Side::A => &self.a,
                        Side::B => &self.b,
                    };
                    sp.timers.iter().map(move |(t, at)| (*at, s, *t))
                })
                .filter(|(at, _, _)| *at <= target)
                .min_by_key(|(at, s, t)| (*at, *s == Side::B, *t));
            let Some((at, side, timer)) = next else {
                self.now = target;
                return;
            };
            self.now = self.now.max(at);
            self.speaker(side).timers.remove(&timer);
            self.input(side, Input::TimerExpired(timer));
        }
        panic!("timers did not settle");
    }

    /// Brings both sides up (A connects, B may be passive) and checks they reach Established.
    /// Both are started before any connection completes (a speaker in Idle refuses
    /// connections); only A's connection attempt completes.
    pub fn establish(&mut self) {
        let auto = self.auto_connect;
        self.auto_connect = false;
        self.input(Side::B, Input::AutomaticStart);
        self.input(Side::A, Input::AutomaticStart);
        self.auto_connect = auto;
        let pending = std::mem::take(&mut self.pending_connects);
        for (side, id) in pending {
            if side == Side::A {
                self.complete_connect(side, id);
            } else {
                self.pending_connects.push((side, id));
            }
        }
        self.run();
        assert_eq!(self.state(Side::A), State::Established);
        assert_eq!(self.state(Side::B), State::Established);
    }
}

/// Every NOTIFICATION in a list of outputs, with its connection.
pub fn notifications(outs: &[Output]) -> Vec<(ConnectionId, Notification)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Send(id, Message::Notification(n)) => Some((*id, n.clone())),
            _ => None,
        })
        .collect()
}

pub fn codes(outs: &[Output]) -> Vec<(u8, u8)> {
    notifications(outs)
        .into_iter()
        .map(|(_, n)| (n.code, n.subcode))
        .collect()
}

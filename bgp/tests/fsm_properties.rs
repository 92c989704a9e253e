//! Random input sequences against one session: whatever a peer, the network or the operator
//! does, the FSM never panics and keeps its invariants, and its timer outputs are enough for a
//! driver to track its timers exactly.

#![allow(clippy::unwrap_used)] // tests may unwrap (house rules)

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bgp::fsm::{
    ConnectionId, Direction, Input, Output, Session, SessionConfig, State, StopReason, Timer,
};
use bgp::packet::{
    Afi, Capability, DecodeError, ErrorCode, Message, Notification, Open, RouteRefresh, Safi,
    Update,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Start,
    AutoStart,
    Stop,
    Advance(u64),
    /// Our pending attempt (if any) connects.
    Connected,
    Accepted(u64),
    Failed(Target),
    Open(Target, u32, u16),
    Keepalive(Target),
    Update(Target),
    Notify(Target, u8),
    Refresh(Target),
    /// The peer's valid OPEN then KEEPALIVE on one connection.
    Handshake(Target, u16),
    Garbage(Target),
}

/// Which connection an op concerns: mostly one the session tracks (so that exchanges make
/// progress), sometimes any id at all (late or bogus events).
#[derive(Debug, Clone, Copy)]
enum Target {
    Live(usize),
    Any(ConnectionId),
}

impl Target {
    fn resolve(self, s: &Session) -> ConnectionId {
        let conns = s.connections();
        match self {
            Target::Live(i) if !conns.is_empty() => conns[i % conns.len()].0,
            Target::Live(i) => ConnectionId::inbound(i as u64),
            Target::Any(c) => c,
        }
    }
}

fn conn() -> impl Strategy<Value = Target> {
    prop_oneof![
        6 => (0usize..4).prop_map(Target::Live),
        1 => (1u64..6).prop_map(|n| Target::Any(ConnectionId::outbound(n))),
        1 => (1u64..4).prop_map(|n| Target::Any(ConnectionId::inbound(n))),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Start),
        1 => Just(Op::AutoStart),
        1 => Just(Op::Stop),
        4 => (0u64..150).prop_map(Op::Advance),
        3 => Just(Op::Connected),
        3 => (1u64..4).prop_map(Op::Accepted),
        2 => conn().prop_map(Op::Failed),
        4 => (conn(), prop_oneof![Just(65002u32), Just(65099)], prop_oneof![Just(0u16), Just(1), Just(3), Just(90)])
            .prop_map(|(c, asn, hold)| Op::Open(c, asn, hold)),
        4 => conn().prop_map(Op::Keepalive),
        2 => conn().prop_map(Op::Update),
        1 => (conn(), 1u8..7).prop_map(|(c, code)| Op::Notify(c, code)),
        1 => conn().prop_map(Op::Refresh),
        3 => (conn(), prop_oneof![Just(0u16), Just(30), Just(90)]).prop_map(|(c, hold)| Op::Handshake(c, hold)),
        1 => conn().prop_map(Op::Garbage),
    ]
}

fn peer_open(asn: u32, hold: u16) -> Open {
    Open::new(
        asn,
        hold,
        Ipv4Addr::new(10, 0, 0, 2),
        vec![Capability::MultiProtocol {
            afi: Afi::Ipv4,
            safi: Safi::Unicast,
        }],
    )
}

/// Feeds one input, keeping the driver's timer map from the outputs alone.
fn feed(
    s: &mut Session,
    timers: &mut BTreeMap<Timer, Instant>,
    now: Instant,
    input: Input,
    outs: &mut Vec<Output>,
) {
    let o = s.handle(now, input);
    for out in &o {
        match out {
            Output::SetTimer { timer, at, after } => {
                assert_eq!(*at, now + *after);
                timers.insert(*timer, *at);
            }
            Output::StopTimer(timer) => {
                timers.remove(timer);
            }
            _ => {}
        }
    }
    outs.extend(o);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn fsm_keeps_its_invariants(ops in proptest::collection::vec(op(), 1..80), passive in any::<bool>()) {
        let mut config = SessionConfig::new(65001, Some(65002), Ipv4Addr::new(10, 0, 0, 1));
        config.connect_retry = Duration::from_secs(5);
        config.passive = passive;
        let mut now = Instant::now();
        let mut s = Session::new(config, now).unwrap();
        // The driver's view of the timers, kept only from SetTimer/StopTimer.
        let mut timers: BTreeMap<Timer, Instant> = BTreeMap::new();
        let mut stopped = true;

        for op in ops {
            let before = s.state();
            let mut outs = Vec::new();
            match op {
                Op::Start => { stopped = false; feed(&mut s, &mut timers, now, Input::ManualStart, &mut outs) }
                Op::AutoStart => { stopped = false; feed(&mut s, &mut timers, now, Input::AutomaticStart, &mut outs) }
                Op::Stop => {
                    stopped = true;
                    feed(&mut s, &mut timers, now, Input::ManualStop(StopReason::AdministrativeShutdown), &mut outs)
                }
                Op::Advance(secs) => {
                    let target = now + Duration::from_secs(secs);
                    for _ in 0..1000 {
                        let Some((timer, at)) = timers.iter().map(|(t, a)| (*t, *a)).min_by_key(|(t, a)| (*a, *t)) else { break };
                        if at > target { break; }
                        now = at;
                        timers.remove(&timer);
                        feed(&mut s, &mut timers, now, Input::TimerExpired(timer), &mut outs);
                    }
                    now = target;
                }
                Op::Connected => {
                    let pending = s.connections().into_iter().find(|(c, st)| c.direction == Direction::Outbound && *st == State::Connect);
                    let id = pending.map_or(ConnectionId::outbound(1), |(c, _)| c);
                    feed(&mut s, &mut timers, now, Input::TcpConnected(id), &mut outs)
                }
                Op::Accepted(seq) => feed(&mut s, &mut timers, now, Input::TcpAccepted(ConnectionId::inbound(seq)), &mut outs),
                Op::Failed(c) => { let c = c.resolve(&s); feed(&mut s, &mut timers, now, Input::TcpFailed(c), &mut outs) }
                Op::Open(c, asn, hold) => { let c = c.resolve(&s); feed(&mut s, &mut timers, now, Input::Message(c, Message::Open(peer_open(asn, hold))), &mut outs) }
                Op::Handshake(c, hold) => {
                    let c = c.resolve(&s);
                    feed(&mut s, &mut timers, now, Input::Message(c, Message::Open(peer_open(65002, hold))), &mut outs);
                    feed(&mut s, &mut timers, now, Input::Message(c, Message::Keepalive), &mut outs);
                }
                Op::Keepalive(c) => { let c = c.resolve(&s); feed(&mut s, &mut timers, now, Input::Message(c, Message::Keepalive), &mut outs) }
                Op::Update(c) => { let c = c.resolve(&s); feed(&mut s, &mut timers, now, Input::Message(c, Message::Update(Update::default())), &mut outs) }
                Op::Notify(c, code) => { let c = c.resolve(&s); feed(&mut s, &mut timers, now, Input::Message(c, Message::Notification(Notification { code, subcode: 1, data: vec![] })), &mut outs) }
                Op::Refresh(c) => { let c = c.resolve(&s); feed(&mut s, &mut timers, now, Input::Message(c, Message::RouteRefresh(RouteRefresh { afi: Afi::Ipv4, safi: Safi::Unicast, subtype: 0 })), &mut outs) }
                Op::Garbage(c) => { let c = c.resolve(&s); feed(&mut s, &mut timers, now, Input::DecodeError(c, DecodeError::new(ErrorCode::MessageHeader, 1, vec![], "marker")), &mut outs) }
            }

            let state = s.state();
            let conns = s.connections();
            // The driver's timer map and the session's agree.
            prop_assert_eq!(
                timers.iter().map(|(t, a)| (*a, *t)).min(),
                s.next_deadline()
            );
            prop_assert!(conns.iter().filter(|(c, _)| c.direction == Direction::Outbound).count() <= 1);
            prop_assert!(conns.iter().filter(|(c, _)| c.direction == Direction::Inbound).count() <= 1);
            prop_assert_eq!(state, conns.iter().map(|(_, st)| *st).max().unwrap_or(state));
            if state == State::Established {
                prop_assert_eq!(conns.len(), 1);
                prop_assert!(s.negotiated().is_some());
            } else {
                prop_assert!(s.negotiated().is_none());
            }
            if matches!(state, State::Idle | State::Active) {
                prop_assert!(conns.is_empty());
            }
            if passive {
                prop_assert!(!outs.iter().any(|o| matches!(o, Output::Connect(_))));
            }
            if outs.iter().any(|o| matches!(o, Output::Update(_) | Output::RouteRefresh(_))) {
                prop_assert_eq!(before, State::Established);
            }
            if outs.iter().any(|o| matches!(o, Output::SessionDown(_))) {
                prop_assert_eq!(before, State::Established);
                prop_assert_ne!(state, State::Established);
            }
            if stopped {
                prop_assert_eq!(state, State::Idle);
                prop_assert!(s.next_deadline().is_none());
            }
            // A NOTIFICATION is sent before its connection is closed, never after: once a
            // batch closes a connection it sends nothing more on it.
            for (i, o) in outs.iter().enumerate() {
                if let Output::Close(c) = o {
                    prop_assert!(
                        !outs[i..].iter().any(|later| matches!(later, Output::Send(k, _) if k == c)),
                        "Send on {} after its Close", c
                    );
                }
            }
            // Every message goes to a connection that exists or has just been closed.
            for o in &outs {
                if let Output::Send(c, _) = o {
                    prop_assert!(
                        conns.iter().any(|(k, _)| k == c) || outs.contains(&Output::Close(*c)),
                        "Send on {} which is neither open nor closed", c
                    );
                }
            }
        }
    }
}

mod fsm_harness;

use fsm_harness::{Pair, Side};

/// Things that happen to a pair of speakers and the network between them.
#[derive(Debug, Clone)]
enum World {
    Advance(u64),
    /// Complete (true) or fail (false) the oldest pending connection attempt.
    ResolveConnect(bool),
    /// Resolve the newest pending attempt instead (reordering).
    ResolveNewest(bool),
    BreakLink(usize),
    Cut(bool),
    Stop(bool),
    Start(bool),
    Reboot(bool),
}

fn world() -> impl Strategy<Value = World> {
    prop_oneof![
        4 => (0u64..120).prop_map(World::Advance),
        4 => any::<bool>().prop_map(World::ResolveConnect),
        2 => any::<bool>().prop_map(World::ResolveNewest),
        1 => (0usize..4).prop_map(World::BreakLink),
        1 => any::<bool>().prop_map(World::Cut),
        1 => any::<bool>().prop_map(World::Stop),
        2 => any::<bool>().prop_map(World::Start),
        1 => any::<bool>().prop_map(World::Reboot),
    ]
}

fn side(a: bool) -> Side {
    if a {
        Side::A
    } else {
        Side::B
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    /// Liveness: whatever happened before, once the network heals and both speakers are
    /// enabled they end up Established on one shared connection (no collision livelock, no
    /// refusal ping-pong, no stuck state), within the worst-case timers.
    #[test]
    fn pair_converges_after_any_history(
        events in proptest::collection::vec(world(), 0..60),
        a_id in 1u8..4,
        b_id in 1u8..4,
        gr in any::<bool>(),
        b_passive in any::<bool>(),
    ) {
        let mut a = fsm_harness::config(65001, 65002, [10, 0, 0, a_id]);
        let mut b = fsm_harness::config(65002, 65001, [10, 0, 0, b_id]);
        b.passive = b_passive;
        if gr {
            let g = bgp::fsm::GracefulRestartConfig { restart_time: 120, forwarding_preserved: false, restarting: false };
            a.graceful_restart = Some(g);
            b.graceful_restart = Some(g);
        }
        let mut pair = Pair::new(a, b);
        pair.auto_connect = false;
        pair.input(Side::A, Input::AutomaticStart);
        pair.input(Side::B, Input::AutomaticStart);
        for e in events {
            match e {
                World::Advance(s) => pair.advance(Duration::from_secs(s)),
                World::ResolveConnect(ok) | World::ResolveNewest(ok) if !pair.pending_connects.is_empty() => {
                    let i = if matches!(e, World::ResolveConnect(_)) { 0 } else { pair.pending_connects.len() - 1 };
                    let (s, id) = pair.pending_connects.remove(i);
                    if ok {
                        pair.complete_connect(s, id);
                        pair.run();
                    } else {
                        pair.fail_connect(s, id);
                    }
                }
                World::ResolveConnect(_) | World::ResolveNewest(_) => {}
                World::BreakLink(i) => {
                    let links = pair.links();
                    if !links.is_empty() {
                        let (s, id, _) = links[i % links.len()];
                        pair.break_link(s, id);
                    }
                }
                World::Cut(c) => pair.cut = c,
                World::Stop(a) => pair.input(side(a), Input::ManualStop(StopReason::AdministrativeShutdown)),
                World::Start(a) => pair.input(side(a), Input::ManualStart),
                World::Reboot(a) => {
                    pair.reboot(side(a));
                    pair.input(side(a), Input::AutomaticStart);
                }
            }
        }
        // Heal: the network works again and both are enabled.
        pair.cut = false;
        pair.auto_connect = true;
        for (s, id) in std::mem::take(&mut pair.pending_connects) {
            pair.complete_connect(s, id);
        }
        pair.run();
        pair.input(Side::A, Input::AutomaticStart);
        pair.input(Side::B, Input::AutomaticStart);
        // Worst case: a dead connection waiting out the OpenSent hold (240 s) after a hold
        // expiry, then the largest idle hold (120 s), then the connect retry.
        for _ in 0..60 {
            if pair.state(Side::A) == State::Established && pair.state(Side::B) == State::Established {
                break;
            }
            pair.advance(Duration::from_secs(10));
        }
        prop_assert_eq!(pair.state(Side::A), State::Established);
        prop_assert_eq!(pair.state(Side::B), State::Established);
        let a_conn = pair.a.session.negotiated().unwrap().connection;
        let b_conn = pair.b.session.negotiated().unwrap().connection;
        prop_assert!(pair.links().contains(&(Side::A, a_conn, b_conn)), "A and B are Established on different connections");
        // And it stays up.
        pair.advance(Duration::from_secs(600));
        prop_assert_eq!(pair.state(Side::A), State::Established);
        prop_assert_eq!(pair.state(Side::B), State::Established);
    }
}

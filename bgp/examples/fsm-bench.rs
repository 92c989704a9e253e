//! Session FSM cost (not a test): how long the sans-IO FSM takes to bring sessions up and to
//! process the inputs of Established sessions, so that a node with many peers (a full mesh of
//! a few hundred nodes, or a route reflector with thousands of clients) knows its FSM budget.
//!
//! `cargo run --release -p bgp --example fsm-bench [sessions] [updates]`
//!
//! 1. `sessions` pairs of sessions do the OPEN exchange back to back, every message encoded and
//!    decoded by the codec, as a driver would: time per session brought up.
//! 2. One Established session takes `updates` UPDATE inputs (each restarts the hold timer and
//!    is handed on for the RIB): time per UPDATE in the FSM, excluding decoding.
//! 3. The `sessions` pairs run one simulated hour of keepalive/hold timers, woken by a heap of
//!    their `next_deadline`s as a driver would: time per KEEPALIVE sent and received.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bgp::fsm::{ConnectionId, Input, Output, Session, SessionConfig, State};
use bgp::packet::{Message, Update};

fn config(asn: u32, remote: u32, id: u32) -> SessionConfig {
    SessionConfig::new(asn, Some(remote), Ipv4Addr::from(id))
}

/// Delivers every Send in `outs` from one session to the other through the codec.
fn pump(
    now: Instant,
    a: &mut Session,
    b: &mut Session,
    a_conn: ConnectionId,
    b_conn: ConnectionId,
) {
    let mut queue: Vec<(bool, Output)> = Vec::new();
    let mut turn = a.handle(now, Input::TcpConnected(a_conn));
    queue.extend(turn.drain(..).map(|o| (true, o)));
    turn = b.handle(now, Input::TcpAccepted(b_conn));
    queue.extend(turn.drain(..).map(|o| (false, o)));
    let mut i = 0;
    while i < queue.len() && i < 1000 {
        if let (from_a, Output::Send(_, msg)) = &queue[i] {
            let (to, conn) = if *from_a {
                (&mut *b, b_conn)
            } else {
                (&mut *a, a_conn)
            };
            let ctx = to.decode_context(conn);
            let bytes = msg.to_bytes(&ctx);
            let input = match Message::decode(&bytes, &ctx) {
                Ok(m) => Input::Message(conn, m),
                Err(e) => Input::DecodeError(conn, e),
            };
            let outs = to.handle(now, input);
            let from_a = !*from_a;
            queue.extend(outs.into_iter().map(|o| (from_a, o)));
        }
        i += 1;
    }
}

fn established_pair(now: Instant, n: u32) -> (Session, Session, ConnectionId) {
    let mut a = Session::new(config(65001, 65002, 0x0a00_0001 + 2 * n), now)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut b = Session::new(config(65002, 65001, 0x0a00_0002 + 2 * n), now)
        .unwrap_or_else(|e| panic!("{e}"));
    b.handle(now, Input::AutomaticStart);
    let a_conn = match a.handle(now, Input::AutomaticStart).first() {
        Some(Output::Connect(id)) => *id,
        other => panic!("expected Connect, got {other:?}"),
    };
    let b_conn = ConnectionId::inbound(1);
    pump(now, &mut a, &mut b, a_conn, b_conn);
    assert_eq!(
        (a.state(), b.state()),
        (State::Established, State::Established)
    );
    (a, b, a_conn)
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sessions = args.first().copied().unwrap_or(10_000) as u32;
    let updates = args.get(1).copied().unwrap_or(1_000_000);
    let now = Instant::now();

    let t = Instant::now();
    let mut pairs = Vec::with_capacity(sessions as usize);
    for n in 0..sessions {
        pairs.push(established_pair(now, n));
    }
    let up = t.elapsed();
    println!(
        "open exchange: {sessions} session pairs Established in {:.3} s ({:.1} µs per pair, codec included)",
        up.as_secs_f64(),
        up.as_secs_f64() * 1e6 / f64::from(sessions.max(1))
    );

    let (a, _, conn) = &mut pairs[0];
    let update = Update {
        nlri: vec!["10.1.0.0/24".parse().unwrap_or_else(|e| panic!("{e}"))],
        ..Update::default()
    };
    let t = Instant::now();
    let mut delivered = 0u64;
    for i in 0..updates {
        let at = now + Duration::from_micros(i);
        for o in a.handle(at, Input::Message(*conn, Message::Update(update.clone()))) {
            if matches!(o, Output::Update(_)) {
                delivered += 1;
            }
        }
    }
    let el = t.elapsed();
    assert_eq!(delivered, updates);
    println!(
        "established: {updates} UPDATE inputs in {:.3} s ({:.0} ns each, {:.2} M/s)",
        el.as_secs_f64(),
        el.as_secs_f64() * 1e9 / updates.max(1) as f64,
        updates as f64 / el.as_secs_f64() / 1e6
    );

    // One simulated hour of timers on every session, driven as a driver would: sleep until
    // the earliest deadline of any session (a heap), fire it, deliver the KEEPALIVEs.
    let t = Instant::now();
    let mut events = 0u64;
    let end = now + Duration::from_secs(3600);
    let mut heap: BinaryHeap<Reverse<(Instant, usize, bool)>> = BinaryHeap::new();
    for (i, (a, b, _)) in pairs.iter().enumerate() {
        if let Some((at, _)) = a.next_deadline() {
            heap.push(Reverse((at, i, true)));
        }
        if let Some((at, _)) = b.next_deadline() {
            heap.push(Reverse((at, i, false)));
        }
    }
    let b_conn = ConnectionId::inbound(1);
    while let Some(Reverse((at, i, is_a))) = heap.pop() {
        if at > end {
            break;
        }
        let (a, b, a_conn) = &mut pairs[i];
        let (from, to, to_conn) = if is_a {
            (&mut *a, &mut *b, b_conn)
        } else {
            (&mut *b, &mut *a, *a_conn)
        };
        for o in from.handle_timeouts(at) {
            if let Output::Send(_, Message::Keepalive) = o {
                events += 1;
                to.handle(at, Input::Message(to_conn, Message::Keepalive));
            }
        }
        if let Some((next, _)) = from.next_deadline() {
            heap.push(Reverse((next, i, is_a)));
        }
    }
    let el = t.elapsed();
    let still_up = pairs
        .iter()
        .filter(|(a, b, _)| a.state() == State::Established && b.state() == State::Established)
        .count();
    assert_eq!(
        still_up,
        pairs.len(),
        "a session dropped during the keepalive hour"
    );
    println!(
        "timers: {sessions} session pairs, 1 simulated hour, {events} keepalives exchanged in {:.3} s ({:.0} ns per keepalive: timer, send, receive, hold restart)",
        el.as_secs_f64(),
        el.as_secs_f64() * 1e9 / events.max(1) as f64
    );
}

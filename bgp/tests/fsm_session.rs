//! The session FSM driven synchronously: two sessions back to back through a virtual clock,
//! and single sessions fed hand-made messages.

#![allow(clippy::unwrap_used)] // tests may unwrap (house rules)

mod fsm_harness;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bgp::fsm::{
    negotiate, ConnectionId, Direction, DownReason, IdleHoldBackoff, Input, Output, Session,
    SessionConfig, State, StopReason, Timer,
};
use bgp::packet::{
    AddPathMode, Afi, Capability, DecodeError, ErrorCode, Family, Message, Notification, Open,
    RouteRefresh, Safi, Update,
};
use fsm_harness::{codes, config, notifications, Pair, Side};

fn a_config() -> SessionConfig {
    config(65001, 65002, [10, 0, 0, 1])
}

fn b_config() -> SessionConfig {
    config(65002, 65001, [10, 0, 0, 2])
}

fn ipv4_open(asn: u32, hold: u16, id: [u8; 4]) -> Open {
    Open::new(
        asn,
        hold,
        Ipv4Addr::from(id),
        vec![Capability::MultiProtocol {
            afi: Afi::Ipv4,
            safi: Safi::Unicast,
        }],
    )
}

/// A session that connected out and sent its OPEN.
fn open_sent(config: SessionConfig) -> (Session, Instant, ConnectionId) {
    let now = Instant::now();
    let mut s = Session::new(config, now).unwrap();
    let outs = s.handle(now, Input::AutomaticStart);
    let id = match outs.first() {
        Some(Output::Connect(id)) => *id,
        other => panic!("expected Connect first, got {other:?}"),
    };
    assert_eq!(id.direction, Direction::Outbound);
    assert_eq!(s.state(), State::Connect);
    let outs = s.handle(now, Input::TcpConnected(id));
    assert!(outs
        .iter()
        .any(|o| matches!(o, Output::Send(i, Message::Open(_)) if *i == id)));
    assert_eq!(s.state(), State::OpenSent);
    (s, now, id)
}

/// A session that accepted the peer's OPEN and sent its KEEPALIVE.
fn open_confirm(config: SessionConfig, peer: Open) -> (Session, Instant, ConnectionId) {
    let (mut s, now, id) = open_sent(config);
    let outs = s.handle(now, Input::Message(id, Message::Open(peer)));
    assert!(
        outs.contains(&Output::Send(id, Message::Keepalive)),
        "{outs:?}"
    );
    assert_eq!(s.state(), State::OpenConfirm);
    (s, now, id)
}

fn established(config: SessionConfig, peer: Open) -> (Session, Instant, ConnectionId) {
    let (mut s, now, id) = open_confirm(config, peer);
    let outs = s.handle(now, Input::Message(id, Message::Keepalive));
    assert!(outs.iter().any(|o| matches!(o, Output::Established(_))));
    assert_eq!(s.state(), State::Established);
    (s, now, id)
}

fn closed(outs: &[Output], id: ConnectionId) -> bool {
    outs.contains(&Output::Close(id))
}

fn timer_set(outs: &[Output], timer: Timer) -> Option<Duration> {
    outs.iter().rev().find_map(|o| match o {
        Output::SetTimer {
            timer: t, after, ..
        } if *t == timer => Some(*after),
        _ => None,
    })
}

#[test]
fn open_exchange_reaches_established() {
    let mut b = b_config();
    b.passive = true;
    let mut pair = Pair::new(a_config(), b);
    pair.establish();

    for side in [Side::A, Side::B] {
        let sp = pair.speaker(side);
        let n = sp
            .log
            .iter()
            .find_map(|o| match o {
                Output::Established(n) => Some(n.clone()),
                _ => None,
            })
            .expect("Established output");
        assert_eq!(n.hold_time, 90);
        assert_eq!(n.keepalive_time, 30);
        assert_eq!(n.families, vec![Family::Ipv4Unicast]);
        assert!(n.four_octet_as);
        assert!(n.route_refresh);
        assert!(n.decode.four_octet_as);
        let s = &sp.session;
        assert_eq!(s.counters().established_transitions, 1);
        assert_eq!(s.negotiated(), Some(&*n));
        assert_eq!(s.connections().len(), 1);
    }
    let a = pair.a.session.negotiated().unwrap().clone();
    assert_eq!(a.peer_as, 65002);
    assert_eq!(a.peer_id, Ipv4Addr::new(10, 0, 0, 2));
    assert_eq!(a.connection.direction, Direction::Outbound);
    let b = pair.b.session.negotiated().unwrap().clone();
    assert_eq!(b.peer_as, 65001);
    assert_eq!(b.connection.direction, Direction::Inbound);
    // OPEN + KEEPALIVE each way.
    assert_eq!(pair.a.session.counters().messages_out, 2);
    assert_eq!(pair.b.session.counters().messages_in, 2);
}

#[test]
fn hold_time_negotiation_takes_the_minimum() {
    let mut b = b_config();
    b.hold_time = 30;
    let mut pair = Pair::new(a_config(), b);
    pair.establish();
    for side in [Side::A, Side::B] {
        let n = pair.speaker(side).session.negotiated().unwrap().clone();
        assert_eq!((n.hold_time, n.keepalive_time), (30, 10));
        let id = n.connection;
        assert_eq!(
            timer_set(&pair.speaker(side).log, Timer::Hold(id)),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            timer_set(&pair.speaker(side).log, Timer::Keepalive(id)),
            Some(Duration::from_secs(10))
        );
    }
}

#[test]
fn configured_keepalive_is_capped_at_a_third_of_hold() {
    let mut a = a_config();
    a.keepalive_time = Some(60);
    let n = negotiate(
        &a,
        ConnectionId::inbound(1),
        &ipv4_open(65002, 30, [10, 0, 0, 2]),
    )
    .unwrap();
    assert_eq!((n.hold_time, n.keepalive_time), (30, 10));
    a.keepalive_time = Some(5);
    let n = negotiate(
        &a,
        ConnectionId::inbound(1),
        &ipv4_open(65002, 30, [10, 0, 0, 2]),
    )
    .unwrap();
    assert_eq!(n.keepalive_time, 5);
}

#[test]
fn zero_hold_time_means_no_hold_timer_and_no_keepalives() {
    let mut a = a_config();
    a.hold_time = 0;
    let mut pair = Pair::new(a, b_config());
    pair.establish();
    for side in [Side::A, Side::B] {
        let n = pair.speaker(side).session.negotiated().unwrap().clone();
        assert_eq!((n.hold_time, n.keepalive_time), (0, 0));
        let timers: Vec<Timer> = pair.speaker(side).timers.keys().copied().collect();
        assert!(timers.is_empty(), "{side:?} still has timers {timers:?}");
    }
    let sent_before = pair.a.session.counters().messages_out;
    pair.cut = true;
    pair.advance(Duration::from_secs(3600));
    assert_eq!(pair.state(Side::A), State::Established);
    assert_eq!(pair.state(Side::B), State::Established);
    assert_eq!(pair.a.session.counters().messages_out, sent_before);
}

#[test]
fn hold_time_of_one_or_two_seconds_is_rejected_with_2_6() {
    for hold in [1, 2] {
        let (mut s, now, id) = open_sent(a_config());
        let outs = s.handle(
            now,
            Input::Message(id, Message::Open(ipv4_open(65002, hold, [10, 0, 0, 2]))),
        );
        assert_eq!(codes(&outs), vec![(2, 6)], "hold {hold}");
        assert!(closed(&outs, id));
        assert_eq!(s.state(), State::Idle);
        assert_eq!(
            s.last_error(),
            Some(&DownReason::NotificationSent(Notification::new(
                ErrorCode::Open,
                6,
                vec![]
            )))
        );
        // No SessionDown: the session never came up.
        assert!(!outs.iter().any(|o| matches!(o, Output::SessionDown(_))));
    }
    // Three seconds is the smallest acceptable non-zero value.
    let (mut s, now, id) = open_sent(a_config());
    s.handle(
        now,
        Input::Message(id, Message::Open(ipv4_open(65002, 3, [10, 0, 0, 2]))),
    );
    assert_eq!(s.state(), State::OpenConfirm);
}

#[test]
fn bad_peer_as_is_rejected_with_2_2_and_the_as_as_data() {
    let (mut s, now, id) = open_sent(a_config());
    let outs = s.handle(
        now,
        Input::Message(id, Message::Open(ipv4_open(65099, 90, [10, 0, 0, 2]))),
    );
    let sent = notifications(&outs);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, id);
    assert_eq!((sent[0].1.code, sent[0].1.subcode), (2, 2));
    assert_eq!(sent[0].1.data, 65099u32.to_be_bytes().to_vec());
    assert!(closed(&outs, id));
    assert_eq!(s.state(), State::Idle);

    // A peer without the 4-octet AS capability gets its 2-octet field back.
    let (mut s, now, id) = open_sent(a_config());
    let mut open = ipv4_open(65099, 90, [10, 0, 0, 2]);
    open.capabilities
        .retain(|c| !matches!(c, Capability::FourOctetAs(_)));
    let outs = s.handle(now, Input::Message(id, Message::Open(open)));
    assert_eq!(
        notifications(&outs)[0].1.data,
        65099u16.to_be_bytes().to_vec()
    );
}

#[test]
fn any_peer_as_is_accepted_when_remote_as_is_unset() {
    let mut c = a_config();
    c.remote_as = None;
    let (s, _, _) = open_confirm(c, ipv4_open(64512, 90, [10, 0, 0, 2]));
    assert_eq!(s.state(), State::OpenConfirm);
}

#[test]
fn same_router_id_on_ibgp_is_rejected_with_2_3() {
    let mut c = a_config();
    c.remote_as = Some(65001);
    let (mut s, now, id) = open_sent(c);
    let outs = s.handle(
        now,
        Input::Message(id, Message::Open(ipv4_open(65001, 90, [10, 0, 0, 1]))),
    );
    assert_eq!(codes(&outs), vec![(2, 3)]);
    assert_eq!(s.state(), State::Idle);

    // RFC 6286 §2.2: the same identifier is fine across ASes.
    let (s, _, _) = open_confirm(a_config(), ipv4_open(65002, 90, [10, 0, 0, 1]));
    assert_eq!(s.state(), State::OpenConfirm);

    // A zero identifier is never valid.
    let (mut s, now, id) = open_sent(a_config());
    let outs = s.handle(
        now,
        Input::Message(id, Message::Open(ipv4_open(65002, 90, [0, 0, 0, 0]))),
    );
    assert_eq!(codes(&outs), vec![(2, 3)]);
}

#[test]
fn no_common_family_is_rejected_with_2_7() {
    let mut c = a_config();
    c.families = vec![Family::Ipv6Unicast];
    let (mut s, now, id) = open_sent(c);
    let outs = s.handle(
        now,
        Input::Message(id, Message::Open(ipv4_open(65002, 90, [10, 0, 0, 2]))),
    );
    let sent = notifications(&outs);
    assert_eq!((sent[0].1.code, sent[0].1.subcode), (2, 7));
    assert_eq!(sent[0].1.data, vec![1, 4, 0, 2, 0, 1]);
}

#[test]
fn families_are_the_intersection_and_no_mp_means_ipv4_only() {
    let mut c = a_config();
    c.families = vec![Family::Ipv4Unicast, Family::Ipv6Unicast];
    let id = ConnectionId::inbound(1);
    let mut both = ipv4_open(65002, 90, [10, 0, 0, 2]);
    both.capabilities.push(Capability::MultiProtocol {
        afi: Afi::Ipv6,
        safi: Safi::Unicast,
    });
    let n = negotiate(&c, id, &both).unwrap();
    assert_eq!(n.families, vec![Family::Ipv4Unicast, Family::Ipv6Unicast]);

    let v6 = Open::new(
        65002,
        90,
        Ipv4Addr::new(10, 0, 0, 2),
        vec![Capability::MultiProtocol {
            afi: Afi::Ipv6,
            safi: Safi::Unicast,
        }],
    );
    assert_eq!(
        negotiate(&c, id, &v6).unwrap().families,
        vec![Family::Ipv6Unicast]
    );

    let no_mp = Open::new(65002, 90, Ipv4Addr::new(10, 0, 0, 2), vec![]);
    let n = negotiate(&c, id, &no_mp).unwrap();
    assert_eq!(n.families, vec![Family::Ipv4Unicast]);
    assert!(!n.route_refresh);
    assert!(
        n.four_octet_as,
        "Open::new always adds the 4-octet AS capability"
    );

    let mut old = no_mp.clone();
    old.capabilities.clear();
    let n = negotiate(&c, id, &old).unwrap();
    assert!(!n.four_octet_as);
    assert!(!n.decode.four_octet_as);
}

#[test]
fn add_path_and_graceful_restart_are_negotiated_per_family() {
    let mut c = a_config();
    c.families = vec![Family::Ipv4Unicast, Family::Ipv6Unicast];
    c.add_path = vec![
        (Family::Ipv4Unicast, AddPathMode::Both),
        (Family::Ipv6Unicast, AddPathMode::Receive),
    ];
    let mut peer = ipv4_open(65002, 90, [10, 0, 0, 2]);
    peer.capabilities.extend([
        Capability::MultiProtocol {
            afi: Afi::Ipv6,
            safi: Safi::Unicast,
        },
        Capability::AddPath(vec![
            (Afi::Ipv4, Safi::Unicast, AddPathMode::Receive),
            (Afi::Ipv6, Safi::Unicast, AddPathMode::Receive),
        ]),
        Capability::GracefulRestart {
            restarting: true,
            notification: false,
            restart_time: 120,
            families: vec![bgp::packet::GracefulRestartFamily {
                afi: Afi::Ipv4,
                safi: Safi::Unicast,
                forwarding_preserved: true,
            }],
        },
    ]);
    let n = negotiate(&c, ConnectionId::inbound(1), &peer).unwrap();
    // IPv4: we Both, peer Receive → we send, we do not receive.
    assert!(n.add_path_send(Family::Ipv4Unicast));
    assert!(!n.decode.add_path_ipv4);
    // IPv6: both Receive → nobody sends.
    assert!(!n.add_path_send(Family::Ipv6Unicast));
    assert!(!n.decode.add_path_ipv6);
    let v6 = n
        .add_path
        .iter()
        .find(|a| a.family == Family::Ipv6Unicast)
        .unwrap();
    assert_eq!(
        (v6.local, v6.peer),
        (Some(AddPathMode::Receive), Some(AddPathMode::Receive))
    );
    let gr = n.graceful_restart.unwrap();
    assert_eq!(gr.restart_time, 120);
    assert!(gr.restarting);
    assert_eq!(gr.families, vec![(Family::Ipv4Unicast, true)]);
    assert_eq!(n.peer_capabilities, peer.capabilities);
}

#[test]
fn local_open_advertises_the_configured_capabilities() {
    let mut c = a_config();
    c.local_as = 4_200_000_001;
    c.families = vec![Family::Ipv4Unicast, Family::Ipv6Unicast];
    c.graceful_restart = Some(bgp::fsm::GracefulRestartConfig {
        restart_time: 120,
        forwarding_preserved: false,
        restarting: false,
    });
    let s = Session::new(c, Instant::now()).unwrap();
    let open = s.local_open();
    assert_eq!(open.my_as, bgp::packet::AS_TRANS);
    assert_eq!(open.four_octet_as(), Some(4_200_000_001));
    assert_eq!(open.hold_time, 90);
    assert_eq!(
        open.families(),
        vec![Family::Ipv4Unicast, Family::Ipv6Unicast]
    );
    assert!(open.has_capability(2));
    assert!(open.has_capability(64));
}

#[test]
fn a_restarted_speaker_sets_the_restart_state_bit() {
    // RFC 4724 §3: R set by a speaker that restarted with its forwarding state; encoded as
    // the top bit of Restart Flags, read back by the peer's decoder.
    for restarting in [false, true] {
        let mut c = a_config();
        c.graceful_restart = Some(bgp::fsm::GracefulRestartConfig {
            restart_time: 120,
            forwarding_preserved: true,
            restarting,
        });
        let session = Session::new(c, Instant::now()).unwrap();
        let open = session.local_open();
        let bytes = bgp::packet::Message::Open(open.clone())
            .to_bytes(&bgp::packet::DecodeContext::default());
        let Ok(bgp::packet::Message::Open(back)) =
            bgp::packet::Message::decode(&bytes, &bgp::packet::DecodeContext::default())
        else {
            panic!("OPEN does not decode")
        };
        let r = back.capabilities.iter().find_map(|c| match c {
            bgp::packet::Capability::GracefulRestart { restarting, .. } => Some(*restarting),
            _ => None,
        });
        assert_eq!(r, Some(restarting));
    }
}

#[test]
fn invalid_configuration_is_refused() {
    let mut c = a_config();
    c.hold_time = 2;
    assert!(Session::new(c, Instant::now()).is_err());
    let mut c = a_config();
    c.router_id = Ipv4Addr::UNSPECIFIED;
    assert!(Session::new(c, Instant::now()).is_err());
    let mut c = a_config();
    c.families.clear();
    assert!(Session::new(c, Instant::now()).is_err());
}

#[test]
fn hold_timer_expiry_sends_4_0_and_goes_idle() {
    let mut pair = Pair::new(a_config(), b_config());
    pair.establish();
    pair.cut = true; // the link dies silently: no KEEPALIVEs get through
    let start = pair.a.log.len();
    pair.advance(Duration::from_secs(89));
    assert_eq!(pair.state(Side::A), State::Established);
    pair.advance(Duration::from_secs(1));
    let outs = pair.a.log[start..].to_vec();
    assert!(codes(&outs).contains(&(4, 0)), "{outs:?}");
    let hold_expired = Notification::new(ErrorCode::HoldTimerExpired, 0, vec![]);
    assert!(
        outs.contains(&Output::SessionDown(DownReason::NotificationSent(
            hold_expired.clone()
        )))
    );
    assert_eq!(pair.state(Side::A), State::Idle);
    assert_eq!(
        pair.a.session.last_error(),
        Some(&DownReason::NotificationSent(hold_expired))
    );
    // An automatic restart is scheduled after the idle hold time.
    assert_eq!(
        timer_set(&outs, Timer::IdleHold),
        Some(Duration::from_secs(1))
    );
}

#[test]
fn keepalives_are_sent_at_a_third_of_hold_time_and_keep_the_session_up() {
    let mut pair = Pair::new(a_config(), b_config());
    pair.establish();
    let id = pair.a.session.negotiated().unwrap().connection;
    let start = pair.a.log.len();
    pair.advance(Duration::from_secs(29));
    assert!(!pair.a.log[start..].contains(&Output::Send(id, Message::Keepalive)));
    pair.advance(Duration::from_secs(1));
    assert!(pair.a.log[start..].contains(&Output::Send(id, Message::Keepalive)));
    // Ten minutes later both are still up, having exchanged a KEEPALIVE every 30 s.
    pair.advance(Duration::from_secs(600));
    assert_eq!(pair.state(Side::A), State::Established);
    assert_eq!(pair.state(Side::B), State::Established);
    let keepalives = pair.a.log[start..]
        .iter()
        .filter(|o| **o == Output::Send(id, Message::Keepalive))
        .count();
    assert_eq!(keepalives, 630 / 30);
}

#[test]
fn updates_reach_the_rib_only_in_established_and_restart_the_hold_timer() {
    let (mut s, now, id) = established(a_config(), ipv4_open(65002, 90, [10, 0, 0, 2]));
    let later = now + Duration::from_secs(60);
    let update = Update {
        nlri: vec!["10.1.0.0/16".parse().unwrap()],
        ..Update::default()
    };
    let outs = s.handle(later, Input::Message(id, Message::Update(update.clone())));
    assert!(outs.contains(&Output::Update(update)));
    assert_eq!(
        timer_set(&outs, Timer::Hold(id)),
        Some(Duration::from_secs(90))
    );
    // The hold timer now expires 90 s after the UPDATE, not after the KEEPALIVE: the old
    // expiry is stale and ignored.
    let outs = s.handle(
        now + Duration::from_secs(90),
        Input::TimerExpired(Timer::Hold(id)),
    );
    assert!(outs.is_empty(), "{outs:?}");
    assert_eq!(s.state(), State::Established);
    let outs = s.handle(
        later + Duration::from_secs(90),
        Input::TimerExpired(Timer::Hold(id)),
    );
    assert_eq!(codes(&outs), vec![(4, 0)]);
    assert_eq!(s.counters().updates_in, 1);
}

#[test]
fn update_in_openconfirm_is_fsm_error_5_2() {
    let (mut s, now, id) = open_confirm(a_config(), ipv4_open(65002, 90, [10, 0, 0, 2]));
    let outs = s.handle(now, Input::Message(id, Message::Update(Update::default())));
    assert_eq!(codes(&outs), vec![(5, 2)]);
    assert!(!outs.iter().any(|o| matches!(o, Output::Update(_))));
    assert!(closed(&outs, id));
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn unexpected_messages_get_the_rfc_6608_subcode() {
    let (mut s, now, id) = open_sent(a_config());
    let outs = s.handle(now, Input::Message(id, Message::Keepalive));
    assert_eq!(codes(&outs), vec![(5, 1)]);

    let (mut s, now, id) = open_confirm(a_config(), ipv4_open(65002, 90, [10, 0, 0, 2]));
    let outs = s.handle(
        now,
        Input::Message(id, Message::Open(ipv4_open(65002, 90, [10, 0, 0, 2]))),
    );
    assert_eq!(codes(&outs), vec![(5, 2)]);

    let (mut s, now, id) = established(a_config(), ipv4_open(65002, 90, [10, 0, 0, 2]));
    let outs = s.handle(
        now,
        Input::Message(id, Message::Open(ipv4_open(65002, 90, [10, 0, 0, 2]))),
    );
    assert_eq!(codes(&outs), vec![(5, 3)]);
    assert!(outs.iter().any(|o| matches!(o, Output::SessionDown(_))));
}

#[test]
fn decode_errors_send_the_codecs_notification() {
    let (mut s, now, id) = established(a_config(), ipv4_open(65002, 90, [10, 0, 0, 2]));
    let err = DecodeError::new(ErrorCode::Update, 11, vec![], "AS_PATH segment overruns");
    let outs = s.handle(now, Input::DecodeError(id, err.clone()));
    assert_eq!(notifications(&outs), vec![(id, err.notification.clone())]);
    assert!(closed(&outs, id));
    assert!(
        outs.contains(&Output::SessionDown(DownReason::NotificationSent(
            err.notification
        )))
    );
    assert_eq!(s.state(), State::Idle);

    let (mut s, now, id) = open_sent(a_config());
    let err = DecodeError::new(ErrorCode::MessageHeader, 2, vec![0, 5], "length 5");
    let outs = s.handle(now, Input::DecodeError(id, err));
    assert_eq!(codes(&outs), vec![(1, 2)]);
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn notification_received_goes_idle_and_reports_it() {
    let (mut s, now, id) = established(a_config(), ipv4_open(65002, 90, [10, 0, 0, 2]));
    let n = Notification::new(ErrorCode::Cease, 4, vec![]);
    let outs = s.handle(now, Input::Message(id, Message::Notification(n.clone())));
    assert!(
        notifications(&outs).is_empty(),
        "never answer a NOTIFICATION with one"
    );
    assert!(
        outs.contains(&Output::SessionDown(DownReason::NotificationReceived(
            n.clone()
        )))
    );
    assert!(closed(&outs, id));
    assert_eq!(s.state(), State::Idle);
    let err = s.last_error().unwrap();
    assert_eq!(err.notification(), Some(&n));
    assert_eq!(
        err.describe(),
        "received NOTIFICATION: Cease: Administrative Reset"
    );
    assert!(s.negotiated().is_none());
}

#[test]
fn manual_stop_sends_cease_2_and_does_not_restart() {
    let mut pair = Pair::new(a_config(), b_config());
    pair.establish();
    let start_a = pair.a.log.len();
    let start_b = pair.b.log.len();
    pair.input(
        Side::A,
        Input::ManualStop(StopReason::AdministrativeShutdown),
    );
    let outs = pair.a.log[start_a..].to_vec();
    assert_eq!(codes(&outs), vec![(6, 2)]);
    assert!(outs.iter().any(|o| matches!(o, Output::SessionDown(_))));
    assert_eq!(pair.state(Side::A), State::Idle);
    assert!(pair.a.timers.is_empty(), "{:?}", pair.a.timers);

    // B heard the Cease and went Idle, reporting it; it restarts by itself after idle hold.
    let cease = Notification::new(ErrorCode::Cease, 2, vec![]);
    assert!(pair.b.log[start_b..].contains(&Output::SessionDown(
        DownReason::NotificationReceived(cease)
    )));
    assert_eq!(pair.state(Side::B), State::Idle);
    assert!(pair.b.timers.contains_key(&Timer::IdleHold));

    // B keeps trying; A, stopped, refuses with Cease/5 and never connects out.
    pair.advance(Duration::from_secs(30));
    assert_eq!(pair.state(Side::A), State::Idle);
    assert!(!pair.a.log[start_a..]
        .iter()
        .any(|o| matches!(o, Output::Connect(_))));
    assert!(codes(&pair.a.log[start_a..]).contains(&(6, 5)));

    // ManualStart brings it back.
    pair.input(Side::A, Input::ManualStart);
    assert_eq!(pair.state(Side::A), State::Established);
}

#[test]
fn deconfiguring_sends_cease_3() {
    let (mut s, now, _) = established(a_config(), ipv4_open(65002, 90, [10, 0, 0, 2]));
    let outs = s.handle(now, Input::ManualStop(StopReason::PeerDeconfigured));
    assert_eq!(codes(&outs), vec![(6, 3)]);
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn passive_session_never_connects() {
    let mut c = a_config();
    c.passive = true;
    let now = Instant::now();
    let mut s = Session::new(c, now).unwrap();
    let mut outs = s.handle(now, Input::AutomaticStart);
    assert_eq!(s.state(), State::Active);
    outs.extend(s.handle_timeouts(now + Duration::from_secs(3600)));
    assert!(outs.is_empty(), "{outs:?}");
    assert!(s.next_deadline().is_none());
    // It does accept the peer.
    let id = ConnectionId::inbound(7);
    let outs = s.handle(now, Input::TcpAccepted(id));
    assert!(
        matches!(&outs[..], [Output::Send(i, Message::Open(_)), Output::SetTimer { .. }] if *i == id)
    );
    assert_eq!(s.state(), State::OpenSent);
    // And when that connection drops it waits for the next one, still without connecting.
    let outs = s.handle(now, Input::TcpFailed(id));
    assert!(!outs.iter().any(|o| matches!(o, Output::Connect(_))));
    assert_eq!(s.state(), State::Active);
}

#[test]
fn connect_retry_timer_retries_failed_connections() {
    let now = Instant::now();
    let mut s = Session::new(a_config(), now).unwrap();
    let outs = s.handle(now, Input::AutomaticStart);
    let Output::Connect(first) = outs[0] else {
        panic!("{outs:?}")
    };
    assert_eq!(
        timer_set(&outs, Timer::ConnectRetry),
        Some(Duration::from_secs(5))
    );
    let outs = s.handle(now, Input::TcpFailed(first));
    assert_eq!(s.state(), State::Active);
    assert!(outs.contains(&Output::Close(first)));
    let outs = s.handle_timeouts(now + Duration::from_secs(5));
    let Output::Connect(second) = outs[0] else {
        panic!("{outs:?}")
    };
    assert_ne!(first, second);
    assert_eq!(s.state(), State::Connect);
    // A connect that hangs is abandoned when the timer fires again.
    let outs = s.handle_timeouts(now + Duration::from_secs(10));
    assert!(outs.contains(&Output::Close(second)));
    assert!(outs
        .iter()
        .any(|o| matches!(o, Output::Connect(id) if *id != second)));
    // The abandoned attempt completing late is closed, not used.
    let outs = s.handle(now + Duration::from_secs(11), Input::TcpConnected(second));
    assert_eq!(outs, vec![Output::Close(second)]);
}

/// Both sides connect at once; each accepts the other's connection; OPENs cross.
fn collide(a_id: [u8; 4], b_id: [u8; 4]) -> Pair {
    let mut a = a_config();
    a.router_id = Ipv4Addr::from(a_id);
    let mut b = b_config();
    b.router_id = Ipv4Addr::from(b_id);
    let mut pair = Pair::new(a, b);
    pair.auto_connect = false;
    pair.input(Side::A, Input::AutomaticStart);
    pair.input(Side::B, Input::AutomaticStart);
    let pending = std::mem::take(&mut pair.pending_connects);
    assert_eq!(pending.len(), 2);
    for (side, id) in pending {
        pair.complete_connect(side, id);
    }
    pair.run();
    assert_eq!(pair.state(Side::A), State::Established);
    assert_eq!(pair.state(Side::B), State::Established);
    pair
}

#[test]
fn collision_keeps_the_connection_of_the_higher_identifier() {
    // B has the higher identifier: B's outbound connection survives.
    let mut pair = collide([10, 0, 0, 1], [10, 0, 0, 2]);
    let b = pair.b.session.negotiated().unwrap().connection;
    let a = pair.a.session.negotiated().unwrap().connection;
    assert_eq!(b.direction, Direction::Outbound);
    assert_eq!(a.direction, Direction::Inbound);
    assert_eq!(pair.a.session.connections().len(), 1);
    assert_eq!(pair.b.session.connections().len(), 1);
    assert!(codes(&pair.a.log).contains(&(6, 7)) || codes(&pair.b.log).contains(&(6, 7)));
    // The surviving session carries traffic.
    pair.advance(Duration::from_secs(300));
    assert_eq!(pair.state(Side::A), State::Established);
    assert_eq!(pair.state(Side::B), State::Established);
    assert_eq!(pair.a.session.counters().established_transitions, 1);

    // The other way round: A higher, A's outbound survives.
    let mut pair = collide([10, 0, 0, 9], [10, 0, 0, 2]);
    assert_eq!(
        pair.a.session.negotiated().unwrap().connection.direction,
        Direction::Outbound
    );
    assert_eq!(
        pair.b.session.negotiated().unwrap().connection.direction,
        Direction::Inbound
    );
    assert_eq!(
        pair.speaker(Side::B)
            .session
            .counters()
            .established_transitions,
        1
    );
}

#[test]
fn collision_with_equal_identifiers_keeps_the_larger_as() {
    // eBGP peers may share an identifier (RFC 6286 §2.3): B has the larger AS.
    let pair = collide([10, 0, 0, 5], [10, 0, 0, 5]);
    assert_eq!(
        pair.b.session.negotiated().unwrap().connection.direction,
        Direction::Outbound
    );
}

#[test]
fn collision_resolution_on_a_single_session_sends_cease_7_to_the_loser() {
    // We are 10.0.0.1 (lower): the peer's connection (inbound) must win.
    let (mut s, now, out_id) = open_sent(a_config());
    let in_id = ConnectionId::inbound(1);
    let outs = s.handle(now, Input::TcpAccepted(in_id));
    assert!(outs
        .iter()
        .any(|o| matches!(o, Output::Send(i, Message::Open(_)) if *i == in_id)));
    assert_eq!(s.connections().len(), 2);
    let peer = ipv4_open(65002, 90, [10, 0, 0, 2]);
    let outs = s.handle(now, Input::Message(in_id, Message::Open(peer.clone())));
    assert_eq!(
        notifications(&outs),
        vec![(out_id, Notification::new(ErrorCode::Cease, 7, vec![]))]
    );
    assert!(closed(&outs, out_id));
    assert!(outs.contains(&Output::Send(in_id, Message::Keepalive)));
    assert_eq!(s.connections(), vec![(in_id, State::OpenConfirm)]);

    // The peer's OPEN on the losing connection would arrive later; it is for a closed
    // connection and changes nothing.
    let outs = s.handle(now, Input::Message(out_id, Message::Open(peer)));
    assert!(outs.is_empty());
    let outs = s.handle(now, Input::Message(in_id, Message::Keepalive));
    assert!(outs
        .iter()
        .any(|o| matches!(o, Output::Established(n) if n.connection == in_id)));

    // From OpenConfirm too: now we are the higher identifier and the inbound one loses.
    let mut c = a_config();
    c.router_id = Ipv4Addr::new(10, 0, 0, 9);
    let (mut s, now, out_id) = open_confirm(c, ipv4_open(65002, 90, [10, 0, 0, 2]));
    let in_id = ConnectionId::inbound(1);
    s.handle(now, Input::TcpAccepted(in_id));
    let outs = s.handle(
        now,
        Input::Message(in_id, Message::Open(ipv4_open(65002, 90, [10, 0, 0, 2]))),
    );
    assert_eq!(codes(&outs), vec![(6, 7)]);
    assert_eq!(notifications(&outs)[0].0, in_id);
    assert_eq!(s.connections(), vec![(out_id, State::OpenConfirm)]);
}

#[test]
fn established_connection_wins_over_a_new_one() {
    let mut pair = Pair::new(a_config(), b_config());
    pair.establish();
    let kept = pair.a.session.negotiated().unwrap().connection;
    // B (lower or higher id does not matter) opens a second connection to A.
    let start = pair.a.log.len();
    let seen_by_a = pair.inject_connection(Side::B, ConnectionId::outbound(99));
    let outs = pair.a.log[start..].to_vec();
    assert_eq!(
        notifications(&outs),
        vec![(seen_by_a, Notification::new(ErrorCode::Cease, 7, vec![]))]
    );
    assert!(closed(&outs, seen_by_a));
    assert_eq!(pair.state(Side::A), State::Established);
    assert_eq!(pair.a.session.negotiated().unwrap().connection, kept);

    // A connection still in OpenSent when another reaches Established is closed with Cease/7.
    let (mut s, now, out_id) = open_confirm(a_config(), ipv4_open(65002, 90, [10, 0, 0, 2]));
    let in_id = ConnectionId::inbound(1);
    s.handle(now, Input::TcpAccepted(in_id));
    assert_eq!(s.state(), State::OpenConfirm);
    let outs = s.handle(now, Input::Message(out_id, Message::Keepalive));
    assert_eq!(
        notifications(&outs),
        vec![(in_id, Notification::new(ErrorCode::Cease, 7, vec![]))]
    );
    assert_eq!(s.connections(), vec![(out_id, State::Established)]);
}

#[test]
fn idle_hold_backs_off_exponentially_and_caps() {
    let mut now = Instant::now();
    let mut s = Session::new(a_config(), now).unwrap();
    let mut outs = s.handle(now, Input::AutomaticStart);
    let mut waits = Vec::new();
    for _ in 0..10 {
        let Some(Output::Connect(id)) = outs
            .iter()
            .find(|o| matches!(o, Output::Connect(_)))
            .cloned()
        else {
            panic!("no Connect in {outs:?}");
        };
        s.handle(now, Input::TcpConnected(id));
        let peer_open = Message::Open(ipv4_open(65099, 90, [10, 0, 0, 2])); // wrong AS
        let fail = s.handle(now, Input::Message(id, peer_open));
        assert_eq!(s.state(), State::Idle);
        let wait = timer_set(&fail, Timer::IdleHold).expect("idle hold armed");
        waits.push(wait.as_secs());
        assert!(s
            .handle_timeouts(now + wait - Duration::from_millis(1))
            .is_empty());
        now += wait;
        outs = s.handle_timeouts(now);
        assert_eq!(s.state(), State::Connect);
    }
    assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 64, 120, 120, 120]);
    assert_eq!(s.counters().consecutive_failures, 10);
}

#[test]
fn idle_hold_resets_after_a_stable_session() {
    let mut c = a_config();
    c.idle_hold = IdleHoldBackoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(120),
        stable_after: Duration::from_secs(60),
    };
    let mut pair = Pair::new(c, b_config());
    pair.establish();
    // Three quick flaps: each restart waits twice as long.
    let mut waits = Vec::new();
    for _ in 0..3 {
        let id = pair.a.session.negotiated().unwrap().connection;
        let start = pair.a.log.len();
        pair.input(Side::A, Input::TcpFailed(id));
        waits.push(
            timer_set(&pair.a.log[start..], Timer::IdleHold)
                .unwrap()
                .as_secs(),
        );
        pair.advance(Duration::from_secs(waits[waits.len() - 1]));
        assert_eq!(pair.state(Side::A), State::Established);
    }
    assert_eq!(waits, vec![1, 2, 4]);
    // Up for longer than stable_after: the next failure starts again from 1 s.
    pair.advance(Duration::from_secs(61));
    let id = pair.a.session.negotiated().unwrap().connection;
    let start = pair.a.log.len();
    pair.input(Side::A, Input::TcpFailed(id));
    assert_eq!(
        timer_set(&pair.a.log[start..], Timer::IdleHold),
        Some(Duration::from_secs(1))
    );
    assert_eq!(pair.a.session.counters().established_transitions, 4);
}

#[test]
fn route_refresh_is_delivered_for_negotiated_families_only() {
    let (mut s, now, id) = established(a_config(), ipv4_open(65002, 90, [10, 0, 0, 2]));
    let v4 = RouteRefresh {
        afi: Afi::Ipv4,
        safi: Safi::Unicast,
        subtype: 0,
    };
    let outs = s.handle(now, Input::Message(id, Message::RouteRefresh(v4)));
    assert_eq!(outs, vec![Output::RouteRefresh(v4)]);
    let v6 = RouteRefresh {
        afi: Afi::Ipv6,
        ..v4
    };
    assert!(s
        .handle(now, Input::Message(id, Message::RouteRefresh(v6)))
        .is_empty());
    assert_eq!(s.state(), State::Established);
}

#[test]
fn status_tracks_state_changes() {
    let now = Instant::now();
    let mut s = Session::new(a_config(), now).unwrap();
    assert_eq!(s.status().state, State::Idle);
    let later = now + Duration::from_secs(3);
    s.handle(later, Input::AutomaticStart);
    let st = s.status();
    assert_eq!(st.state, State::Connect);
    assert_eq!(st.since, later);
    assert_eq!(st.next_idle_hold, Duration::from_secs(1));
    assert!(st.last_error.is_none());
}

#[test]
fn peer_connection_during_idle_hold_is_accepted_as_the_restart() {
    let (mut s, now, id) = established(a_config(), ipv4_open(65002, 90, [10, 0, 0, 2]));
    let outs = s.handle(now, Input::TcpFailed(id));
    assert_eq!(
        outs.iter()
            .filter(|o| matches!(o, Output::SessionDown(DownReason::ConnectionLost)))
            .count(),
        1
    );
    assert_eq!(s.state(), State::Idle);
    assert!(timer_set(&outs, Timer::IdleHold).is_some());
    let in_id = ConnectionId::inbound(1);
    let outs = s.handle(now, Input::TcpAccepted(in_id));
    assert!(outs.contains(&Output::StopTimer(Timer::IdleHold)));
    assert!(outs
        .iter()
        .any(|o| matches!(o, Output::Send(i, Message::Open(_)) if *i == in_id)));
    assert_eq!(s.state(), State::OpenSent);
    // The stale idle hold expiry does not start a second attempt.
    assert!(s
        .handle(
            now + Duration::from_secs(1),
            Input::TimerExpired(Timer::IdleHold)
        )
        .is_empty());
}

#[test]
fn update_crosses_the_codec_to_the_rib_and_garbage_resets_the_session() {
    use bgp::packet::{AsPath, Origin, PathAttributes};
    let mut pair = Pair::new(a_config(), b_config());
    pair.establish();
    let update = Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::from_sequence(vec![65002])),
            next_hop: Some(Ipv4Addr::new(192, 168, 0, 2)),
            ..PathAttributes::default()
        },
        nlri: vec!["10.2.0.0/24".parse().unwrap()],
        ..Update::default()
    };
    let start = pair.a.log.len();
    pair.send_update(Side::B, Message::Update(update.clone()));
    let got: Vec<Update> = pair.a.log[start..]
        .iter()
        .filter_map(|o| match o {
            Output::Update(u) => Some(u.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].nlri, update.nlri);
    assert_eq!(got[0].attributes.as_path, update.attributes.as_path);
    assert_eq!(pair.b.session.counters().messages_out, 3);

    // A message with a broken marker: A sends 1/1 and B hears about it.
    let id = pair.a.session.negotiated().unwrap().connection;
    let mut garbage = Message::Keepalive.to_bytes(&Default::default()).to_vec();
    garbage[0] = 0;
    let start_b = pair.b.log.len();
    pair.deliver_bytes(Side::A, id, &garbage);
    assert_eq!(codes(&pair.a.log[start..]), vec![(1, 1)]);
    assert_eq!(pair.state(Side::A), State::Idle);
    let down = pair.b.log[start_b..].iter().find_map(|o| match o {
        Output::SessionDown(r) => Some(r.clone()),
        _ => None,
    });
    assert_eq!(
        down.and_then(|r| r.notification().map(|n| (n.code, n.subcode))),
        Some((1, 1))
    );
}

#[test]
fn a_pending_attempt_is_retried_or_abandoned_when_the_peers_connection_ends() {
    // Our attempt hangs in Connect while the peer's connection gets as far as OpenSent.
    let now = Instant::now();
    let mut s = Session::new(a_config(), now).unwrap();
    let outs = s.handle(now, Input::AutomaticStart);
    let Output::Connect(pending) = outs[0] else {
        panic!("{outs:?}")
    };
    let in_id = ConnectionId::inbound(1);
    let outs = s.handle(now, Input::TcpAccepted(in_id));
    assert!(outs.contains(&Output::StopTimer(Timer::ConnectRetry)));
    assert_eq!(s.state(), State::OpenSent);
    // The peer's connection drops: ConnectRetryTimer runs again so the hung attempt is
    // replaced in time.
    let later = now + Duration::from_secs(2);
    let outs = s.handle(later, Input::TcpFailed(in_id));
    assert_eq!(
        timer_set(&outs, Timer::ConnectRetry),
        Some(Duration::from_secs(5))
    );
    assert_eq!(s.state(), State::Connect);
    let outs = s.handle_timeouts(later + Duration::from_secs(5));
    assert!(outs.contains(&Output::Close(pending)));
    assert!(outs
        .iter()
        .any(|o| matches!(o, Output::Connect(id) if *id != pending)));

    // An error on the peer's connection sends the whole session Idle, attempt included.
    let mut s = Session::new(a_config(), now).unwrap();
    let outs = s.handle(now, Input::AutomaticStart);
    let Output::Connect(pending) = outs[0] else {
        panic!("{outs:?}")
    };
    s.handle(now, Input::TcpAccepted(in_id));
    let outs = s.handle(
        now,
        Input::Message(in_id, Message::Open(ipv4_open(65099, 90, [10, 0, 0, 2]))),
    );
    assert_eq!(codes(&outs), vec![(2, 2)]);
    assert!(outs.contains(&Output::Close(pending)));
    assert_eq!(s.state(), State::Idle);
    assert!(s.connections().is_empty());
}

#[test]
fn rebooted_peer_is_refused_until_hold_expiry_without_graceful_restart() {
    let mut pair = Pair::new(a_config(), b_config());
    pair.establish();
    pair.reboot(Side::B);
    let start = pair.a.log.len();
    pair.input(Side::B, Input::AutomaticStart);
    // A still believes in the old session: the new connection is a collision with an
    // Established one and is refused.
    assert!(codes(&pair.a.log[start..]).contains(&(6, 7)));
    assert_eq!(pair.state(Side::A), State::Established);
    assert_ne!(pair.state(Side::B), State::Established);
    // A's hold timer ends the dead session; B's retries then get through.
    pair.advance(Duration::from_secs(200));
    assert!(codes(&pair.a.log[start..]).contains(&(4, 0)));
    assert_eq!(pair.state(Side::A), State::Established);
    assert_eq!(pair.state(Side::B), State::Established);
}

#[test]
fn rebooted_graceful_restart_peer_replaces_its_old_session_at_once() {
    let gr = bgp::fsm::GracefulRestartConfig {
        restart_time: 120,
        forwarding_preserved: true,
        restarting: false,
    };
    let mut a = a_config();
    a.graceful_restart = Some(gr);
    let mut b = b_config();
    b.graceful_restart = Some(gr);
    let mut pair = Pair::new(a, b);
    pair.establish();
    let gr_seen = pair
        .a
        .session
        .negotiated()
        .unwrap()
        .graceful_restart
        .clone();
    assert_eq!(gr_seen.map(|g| g.restart_time), Some(120));
    let old = pair.a.session.negotiated().unwrap().connection;
    pair.reboot(Side::B);
    let start = pair.a.log.len();
    pair.input(Side::B, Input::AutomaticStart);
    let outs = pair.a.log[start..].to_vec();
    assert!(outs.contains(&Output::SessionDown(DownReason::PeerRestarted)));
    assert!(outs.contains(&Output::Close(old)));
    assert!(
        notifications(&outs).is_empty(),
        "no NOTIFICATION on a restart: {outs:?}"
    );
    assert_eq!(pair.state(Side::A), State::Established);
    assert_eq!(pair.state(Side::B), State::Established);
    assert_ne!(pair.a.session.negotiated().unwrap().connection, old);
    assert_eq!(pair.a.session.counters().established_transitions, 2);
}

#[test]
fn zero_hold_time_peer_that_never_confirms_is_dropped() {
    let mut c = a_config();
    c.hold_time = 0;
    let (mut s, now, id) = open_confirm(c, ipv4_open(65002, 90, [10, 0, 0, 2]));
    assert!(s.decode_context(id).four_octet_as);
    // No KEEPALIVE ever comes: the OpenSent hold timer (4 minutes) still ends it.
    assert!(s.handle_timeouts(now + Duration::from_secs(239)).is_empty());
    let outs = s.handle_timeouts(now + Duration::from_secs(240));
    assert_eq!(codes(&outs), vec![(4, 0)]);
    assert_eq!(s.state(), State::Idle);
}

//! The driver's RFC 5881 checks with hand-made packets from the peer's namespace: a packet
//! that arrives with a TTL below 255 is dropped (§5), the same packet with TTL 255 is taken;
//! and our own packets leave with TTL 255 from a source port in 49152-65535 (§4).
#![allow(clippy::unwrap_used)]

mod support;

use std::net::UdpSocket;
use std::time::Duration;

use bfd::{ControlPacket, Diagnostic, SessionConfig, State};
use support::{in_netns, ip, NsDriver};

fn down_packet() -> [u8; 24] {
    ControlPacket {
        version: 1,
        diag: Diagnostic::NoDiagnostic,
        state: State::Down,
        poll: false,
        final_: false,
        control_plane_independent: false,
        auth_present: false,
        demand: false,
        multipoint: false,
        detect_mult: 3,
        my_discriminator: 0xbeef,
        your_discriminator: 0,
        desired_min_tx_us: 1_000_000,
        required_min_rx_us: 300_000,
        required_min_echo_rx_us: 0,
    }
    .encode()
}

#[test]
fn ttl_and_ports() {
    lab::require(&["ip"]);
    support::init_logging();
    let (ours, theirs) = support::pair("bfdttl");
    let driver = NsDriver::start(&ours, bfd::CONTROL_PORT).unwrap();
    // The peer side listens on 3784 to see what we send, with the TTL reported.
    let (listener_tx, listener_rx) = std::sync::mpsc::channel();
    let theirs_path = theirs.path();
    let watcher = std::thread::spawn(move || {
        let file = std::fs::File::open(&theirs_path).unwrap();
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let sock = UdpSocket::bind(("10.0.0.2", bfd::CONTROL_PORT)).unwrap();
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::Ipv4RecvTtl, &true).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let mut cmsg = nix::cmsg_space!(i32);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = nix::sys::socket::recvmsg::<nix::sys::socket::SockaddrIn>(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            &mut iov,
            Some(&mut cmsg),
            nix::sys::socket::MsgFlags::empty(),
        )
        .unwrap();
        let ttl = msg.cmsgs().unwrap().find_map(|c| match c {
            nix::sys::socket::ControlMessageOwned::Ipv4Ttl(t) => Some(t),
            _ => None,
        });
        let port = msg.address.unwrap().port();
        let _ = listener_tx.send((ttl, port, msg.bytes));
    });
    let mut status = driver
        .add(ip("10.0.0.2"), ip("10.0.0.1"), SessionConfig::default())
        .unwrap();
    let (ttl, port, len) = listener_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    watcher.join().unwrap();
    assert_eq!(ttl, Some(255), "RFC 5881 §5: sent with TTL 255");
    assert!(port >= 49152, "RFC 5881 §4: source port {port}");
    assert_eq!(len, 24);

    // A Down packet with TTL 64: dropped, the session stays Down.
    in_netns(&theirs, || {
        let s = UdpSocket::bind("10.0.0.2:0").unwrap();
        s.set_ttl(64).unwrap();
        s.send_to(&down_packet(), ("10.0.0.1", bfd::CONTROL_PORT))
            .unwrap();
    });
    assert!(driver
        .wait_state(&mut status, State::Init, Duration::from_millis(500))
        .is_err());
    assert_eq!(status.borrow().remote_discriminator, 0);

    // The same with TTL 255: taken (Down -> Init, RFC 5880 §6.8.6).
    in_netns(&theirs, || {
        let s = UdpSocket::bind("10.0.0.2:0").unwrap();
        s.set_ttl(255).unwrap();
        s.send_to(&down_packet(), ("10.0.0.1", bfd::CONTROL_PORT))
            .unwrap();
    });
    driver
        .wait_state(&mut status, State::Init, Duration::from_secs(2))
        .unwrap();
    assert_eq!(status.borrow().remote_discriminator, 0xbeef);
    // Nothing more comes: after the detection time (3 x 1 s, the peer's slow start) Down.
    driver
        .wait_state(&mut status, State::Down, Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        status.borrow().diag,
        Diagnostic::ControlDetectionTimeExpired
    );
}

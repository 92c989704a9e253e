//! Malformed input from one peer, end to end against the real speaker process: the
//! offending session gets the NOTIFICATION RFC 4271 §6 prescribes (or, for the UPDATE
//! attribute errors RFC 7606 lets a session survive, "treat-as-withdraw" and no NOTIFICATION
//! at all), while the speaker's other session (to BIRD) and the routes learned and advertised
//! over it stay untouched.
//!
//! Topology: one LAN with our speaker (10.0.0.1, AS 65001, originating 10.1.0.0/24), BIRD
//! (10.0.0.2, AS 65002, exporting 10.2.0.0/24) and a "raw" peer namespace (10.0.0.3,
//! AS 65003, configured `passive` on the speaker) in which this test opens TCP connections
//! itself and writes hand-made bytes. The sockets are created by a short-lived thread that
//! `setns`'d into the raw namespace, so the test's own thread stays in the host namespace.

#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

mod support;

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bgp::packet::error::{header, open, update};
use bgp::packet::{frame_len, DecodeContext, Message, Notification, Open};
use lab::bird::Bird;
use lab::{lan, require, wait_for, Netns};
use nix::sched::{setns, CloneFlags};
use support::{scratch, Speaker};

const T: Duration = Duration::from_secs(30);
/// How long a raw connection attempt may keep being refused or dropped before the test fails:
/// covers the speaker's idle-hold back-off after the previous case's NOTIFICATION.
const RECONNECT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

const RAW_AS: u32 = 65003;
const RAW_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
const OUR_PREFIX: &str = "10.1.0.0/24";
const BIRD_PREFIX: &str = "10.2.0.0/24";
const RAW_PREFIX: &str = "10.3.0.0/24";

/// Both sides send the 4-octet AS capability, so AS_PATH carries 4-octet ASNs.
fn ctx() -> DecodeContext {
    DecodeContext {
        four_octet_as: true,
        ..DecodeContext::default()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A header (RFC 4271 §4.1) followed by `body`, with the length field computed.
fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let len = u16::try_from(19 + body.len()).unwrap();
    let mut out = vec![0xff; 16];
    out.extend_from_slice(&len.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(body);
    out
}

fn keepalive() -> Vec<u8> {
    message(4, &[])
}

fn open_bytes(asn: u32, hold: u16, id: Ipv4Addr) -> Vec<u8> {
    Message::Open(Open::new(asn, hold, id, Vec::new()))
        .to_bytes(&ctx())
        .to_vec()
}

/// An UPDATE (RFC 4271 §4.3) with no withdrawals, the given attribute bytes and NLRI bytes.
fn update_msg(attributes: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 0];
    body.extend_from_slice(&u16::try_from(attributes.len()).unwrap().to_be_bytes());
    body.extend_from_slice(attributes);
    body.extend_from_slice(nlri);
    message(2, &body)
}

/// ORIGIN IGP (well-known mandatory, transitive flag 0x40).
const ORIGIN_IGP: [u8; 4] = [0x40, 1, 1, 0];
/// AS_PATH: one AS_SEQUENCE of AS 65003 (0x0000FDEB) in 4-octet form.
const AS_PATH_RAW: [u8; 9] = [0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xeb];
/// NEXT_HOP 10.0.0.3.
const NEXT_HOP_RAW: [u8; 7] = [0x40, 3, 4, 10, 0, 0, 3];
/// NLRI 10.3.0.0/24.
const NLRI_RAW: [u8; 4] = [24, 10, 3, 0];

fn attrs(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn valid_update() -> Vec<u8> {
    update_msg(
        &attrs(&[&ORIGIN_IGP, &AS_PATH_RAW, &NEXT_HOP_RAW]),
        &NLRI_RAW,
    )
}

/// One TCP connection from the raw peer namespace to the speaker.
struct RawSession {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// Connects to 10.0.0.1:179 from inside `ns`: the socket is made by a thread that joined the
/// namespace and stays bound to it after that thread ends.
fn connect_in(ns_path: PathBuf) -> std::io::Result<TcpStream> {
    std::thread::spawn(move || {
        let f = File::open(&ns_path)?;
        setns(&f, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
        let to = SocketAddr::from(([10, 0, 0, 1], 179));
        TcpStream::connect_timeout(&to, Duration::from_secs(2))
    })
    .join()
    .unwrap()
}

impl RawSession {
    fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream
            .write_all(bytes)
            .context("writing to the speaker")
    }

    /// Reads one whole message (framed by `frame_len`) within `timeout`.
    fn read_raw(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(len) = frame_len(&self.buf).map_err(|e| anyhow::anyhow!("{e:?}"))? {
                if self.buf.len() >= len {
                    return Ok(self.buf.drain(..len).collect());
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("no complete message from the speaker within {timeout:?}");
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => bail!("the speaker closed the connection"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(e).context("reading from the speaker"),
            }
        }
    }

    fn read(&mut self, timeout: Duration) -> Result<Message> {
        let raw = self.read_raw(timeout)?;
        Message::decode(&raw, &ctx()).map_err(|e| anyhow::anyhow!("speaker sent garbage: {e:?}"))
    }

    /// Reads until a NOTIFICATION, skipping KEEPALIVE and UPDATE (bounded in count and time),
    /// then checks that the speaker closes the connection after it (RFC 4271 §6).
    fn expect_notification(&mut self) -> Result<Notification> {
        let deadline = Instant::now() + Duration::from_secs(10);
        for _ in 0..100 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read(left)? {
                Message::Notification(n) => {
                    // End of stream or a reset are both a close; a message or silence is not.
                    match self.read_raw(Duration::from_secs(5)) {
                        Err(e) if !e.to_string().starts_with("no complete message") => {}
                        other => {
                            bail!("connection not closed after NOTIFICATION {n:?}: {other:?}")
                        }
                    }
                    return Ok(n);
                }
                Message::Keepalive | Message::Update(_) => {}
                other => bail!("expected a NOTIFICATION, got {other:?}"),
            }
        }
        bail!("no NOTIFICATION among 100 messages")
    }

    /// Tells the speaker we are going away (Cease / Administrative Shutdown, RFC 4486), so
    /// that the next case starts from a clean close.
    fn shut_down(mut self) {
        let _ = self.send(&message(3, &[6, 2]));
    }
}

/// Connects (retrying while the speaker refuses or drops us, for at most [`RECONNECT`]),
/// waits for the speaker's OPEN and answers with `our_open`.
fn open_session(ns: &Netns, our_open: &[u8]) -> Result<RawSession> {
    let deadline = Instant::now() + RECONNECT;
    let mut last = String::new();
    while Instant::now() < deadline {
        match connect_in(ns.path()) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                let mut s = RawSession {
                    stream,
                    buf: Vec::new(),
                };
                match s.read(Duration::from_secs(3)) {
                    Ok(Message::Open(o)) => {
                        assert_eq!(o.asn(), 65001, "{o:?}");
                        assert_eq!(o.bgp_id, Ipv4Addr::new(10, 0, 0, 1), "{o:?}");
                        s.send(our_open)?;
                        return Ok(s);
                    }
                    Ok(other) => last = format!("first message {other:?}"),
                    Err(e) => last = format!("{e:#}"),
                }
            }
            Err(e) => last = format!("connect: {e}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("no session with the speaker within {RECONNECT:?}: {last}")
}

/// A session from the raw peer through to Established (both KEEPALIVEs exchanged).
fn establish(ns: &Netns, speaker: &Speaker) -> Result<RawSession> {
    let mut s = open_session(ns, &open_bytes(RAW_AS, 9, RAW_ID))?;
    s.send(&keepalive())?;
    match s.read(Duration::from_secs(5))? {
        Message::Keepalive => {}
        other => bail!("expected the speaker's KEEPALIVE, got {other:?}"),
    }
    speaker.wait_established(ip("10.0.0.3"), Duration::from_secs(5))?;
    Ok(s)
}

/// The lab: speaker, BIRD and the raw peer namespace on one LAN, BIRD's session up and
/// routes exchanged. Fields are kept for their `Drop`.
struct Lab {
    speaker: Speaker,
    bird: Bird,
    raw: Netns,
    _ours: Netns,
    _theirs: Netns,
    _sw: Netns,
    /// When the BIRD session was seen Established: it must never change state afterwards.
    bird_up_since: Instant,
}

impl Lab {
    fn start() -> Lab {
        let dir = scratch("malformed");
        let ours = Netns::new("mfs").unwrap();
        let theirs = Netns::new("mfb").unwrap();
        let raw = Netns::new("mfr").unwrap();
        let sw = lan(
            "mf",
            &[
                (&ours, "eth0", &["10.0.0.1/24"]),
                (&theirs, "eth0", &["10.0.0.2/24"]),
                (&raw, "eth0", &["10.0.0.3/24"]),
            ],
        )
        .unwrap();
        let speaker = Speaker::start(
            &ours,
            &dir.join("speaker"),
            r#"
router_id = "10.0.0.1"
local_as = 65001
hold_time = 9
connect_retry = 1
[[originate]]
prefix = "10.1.0.0/24"
[[peer]]
address = "10.0.0.2"
remote_as = 65002
[[peer]]
address = "10.0.0.3"
remote_as = 65003
passive = true
"#,
        )
        .unwrap();
        let bird = Bird::start(
            &theirs,
            &dir.join("bird"),
            r#"
router id 10.0.0.2;
protocol device {}
protocol direct { ipv4; }
protocol static s4 { ipv4; route 10.2.0.0/24 blackhole; }
protocol bgp v4 { local 10.0.0.2 as 65002; neighbor 10.0.0.1 as 65001; hold time 9; connect retry time 1;
  ipv4 { import all; export where proto = "s4"; }; }
"#,
        )
        .unwrap();
        bird.wait_established("v4", T).unwrap();
        speaker.wait_established(ip("10.0.0.2"), T).unwrap();
        let bird_up_since = Instant::now();
        speaker
            .wait_route(BIRD_PREFIX, T, Some(&|r| r.peer == Some(ip("10.0.0.2"))))
            .unwrap();
        wait_for("10.1.0.0/24 in BIRD", T, POLL, || {
            bird.route(OUR_PREFIX).ok().flatten()
        })
        .unwrap();
        Lab {
            speaker,
            bird,
            raw,
            _ours: ours,
            _theirs: theirs,
            _sw: sw,
            bird_up_since,
        }
    }

    /// The BIRD session never went down and both directions' routes are still there.
    fn assert_bird_intact(&self, case: &str) {
        let p = self.speaker.peer(ip("10.0.0.2")).unwrap();
        assert_eq!(p.state, "Established", "{case}: {p:?}");
        // `since_secs` counts from the last state change: a flap would have reset it.
        let up = self.bird_up_since.elapsed().as_secs();
        assert!(
            p.since_secs + 1 >= up,
            "{case}: BIRD session changed state {}s ago, up for {up}s",
            p.since_secs
        );
        let state = self.bird.protocol_state("v4").unwrap();
        assert!(
            state.starts_with("Established"),
            "{case}: BIRD says {state}"
        );
        let routes = self.speaker.routes().unwrap();
        let want = BIRD_PREFIX.parse::<ipnet::IpNet>().unwrap();
        assert!(
            routes
                .iter()
                .any(|r| r.prefix == want && r.best && r.peer == Some(ip("10.0.0.2"))),
            "{case}: {BIRD_PREFIX} from BIRD gone: {routes:?}"
        );
        assert!(
            self.bird.route(OUR_PREFIX).unwrap().is_some(),
            "{case}: BIRD lost {OUR_PREFIX}"
        );
    }

    /// An Established raw session gets `bad`, must answer with NOTIFICATION `code/subcode`
    /// (and `data`, where the RFC fixes it).
    fn established_then_notification(&self, case: &str, bad: &[u8], want: (u8, u8, Option<&[u8]>)) {
        let mut s = establish(&self.raw, &self.speaker)
            .with_context(|| self.speaker.log_tail())
            .unwrap();
        s.send(bad).unwrap();
        let n = s
            .expect_notification()
            .with_context(|| format!("{case}: {}", self.speaker.log_tail()))
            .unwrap();
        check_notification(case, &n, want);
        self.assert_bird_intact(case);
    }

    /// The raw peer's OPEN is `bad`: the speaker answers with NOTIFICATION `code/subcode`.
    fn open_error(&self, case: &str, bad: &[u8], want: (u8, u8, Option<&[u8]>)) {
        let mut s = open_session(&self.raw, bad)
            .with_context(|| self.speaker.log_tail())
            .unwrap();
        let n = s
            .expect_notification()
            .with_context(|| format!("{case}: {}", self.speaker.log_tail()))
            .unwrap();
        check_notification(case, &n, want);
        assert_ne!(
            self.speaker.peer(ip("10.0.0.3")).unwrap().state,
            "Established",
            "{case}"
        );
        self.assert_bird_intact(case);
    }

    /// RFC 7606 treat-as-withdraw: 10.3.0.0/24 is announced validly, then re-announced by
    /// `bad`; the route must go (from our RIB and from BIRD), no NOTIFICATION may come, and
    /// the same TCP session must still carry a fresh valid announcement.
    fn treat_as_withdraw(&self, case: &str, bad: &[u8]) {
        let mut s = establish(&self.raw, &self.speaker)
            .with_context(|| self.speaker.log_tail())
            .unwrap();
        let from_raw = |r: &bgp::speaker::control::RouteView| r.peer == Some(ip("10.0.0.3"));
        s.send(&valid_update()).unwrap();
        let r = self
            .speaker
            .wait_route(RAW_PREFIX, T, Some(&from_raw))
            .unwrap()
            .unwrap();
        assert_eq!(r.as_path, vec![RAW_AS], "{case}: {r:?}");
        wait_for(&format!("{case}: {RAW_PREFIX} in BIRD"), T, POLL, || {
            self.bird.route(RAW_PREFIX).ok().flatten()
        })
        .unwrap();

        s.send(bad).unwrap();
        self.speaker
            .wait_route(RAW_PREFIX, Duration::from_secs(10), None)
            .with_context(|| format!("{case}: route not withdrawn"))
            .unwrap();
        wait_for(
            &format!("{case}: {RAW_PREFIX} gone from BIRD"),
            T,
            POLL,
            || self.bird.route(RAW_PREFIX).ok().filter(Option::is_none),
        )
        .unwrap();
        let p = self.speaker.peer(ip("10.0.0.3")).unwrap();
        assert_eq!(p.state, "Established", "{case}: {p:?}");

        // Still the same session: nothing but KEEPALIVE/UPDATE arrived, and a valid UPDATE
        // on this very connection is accepted again.
        s.send(&keepalive()).unwrap();
        s.send(&valid_update()).unwrap();
        self.speaker
            .wait_route(RAW_PREFIX, T, Some(&from_raw))
            .with_context(|| format!("{case}: re-announcement after treat-as-withdraw"))
            .unwrap();
        let deadline = Instant::now() + Duration::from_millis(300);
        while let Ok(m) = s.read(deadline.saturating_duration_since(Instant::now())) {
            assert!(
                matches!(m, Message::Keepalive | Message::Update(_)),
                "{case}: unexpected {m:?}"
            );
        }
        assert_eq!(
            self.speaker.peer(ip("10.0.0.3")).unwrap().state,
            "Established",
            "{case}"
        );
        s.shut_down();
        self.assert_bird_intact(case);
    }
}

fn check_notification(
    case: &str,
    n: &Notification,
    (code, subcode, data): (u8, u8, Option<&[u8]>),
) {
    assert_eq!((n.code, n.subcode), (code, subcode), "{case}: {n:?}");
    if let Some(d) = data {
        assert_eq!(n.data, d, "{case}: {n:?}");
    }
}

#[test]
fn malformed_input_from_one_peer_resets_only_that_session() {
    require(&["ip", "bird", "birdc"]);
    let started = Instant::now();
    let lab = Lab::start();

    // Message header errors (RFC 4271 §6.1), on an Established session.
    let mut bad_marker = keepalive();
    bad_marker[0] = 0;
    lab.established_then_notification(
        "bad marker",
        &bad_marker,
        (1, header::CONNECTION_NOT_SYNCHRONIZED, Some(&[])),
    );
    let mut bad_length = message(2, &[0, 0, 0, 0]);
    bad_length[16..18].copy_from_slice(&5000u16.to_be_bytes());
    lab.established_then_notification(
        "bad length",
        &bad_length,
        // §6.1: "the Data field MUST contain the erroneous Length field".
        (1, header::BAD_MESSAGE_LENGTH, Some(&5000u16.to_be_bytes())),
    );
    lab.established_then_notification(
        "bad type",
        &message(9, &[]),
        // §6.1: "the Data field MUST contain the erroneous Type field".
        (1, header::BAD_MESSAGE_TYPE, Some(&[9])),
    );

    // OPEN errors (RFC 4271 §6.2).
    let mut v3 = open_bytes(RAW_AS, 9, RAW_ID);
    v3[19] = 3;
    lab.open_error(
        "unsupported version",
        &v3,
        // §6.2: data = the largest locally supported version, as 2 octets.
        (2, open::UNSUPPORTED_VERSION, Some(&[0, 4])),
    );
    lab.open_error(
        "hold time 1",
        &open_bytes(RAW_AS, 1, RAW_ID),
        (2, open::UNACCEPTABLE_HOLD_TIME, None),
    );
    lab.open_error(
        "BGP identifier 0.0.0.0",
        &open_bytes(RAW_AS, 9, Ipv4Addr::UNSPECIFIED),
        (2, open::BAD_BGP_IDENTIFIER, None),
    );
    lab.open_error(
        "bad peer AS",
        &open_bytes(65099, 9, RAW_ID),
        (2, open::BAD_PEER_AS, None),
    );

    // UPDATE attribute errors that RFC 7606 resolves by treat-as-withdraw.
    lab.treat_as_withdraw(
        "malformed AS_PATH",
        // The segment claims two ASNs and carries one (RFC 7606 §7.2).
        &update_msg(
            &attrs(&[
                &ORIGIN_IGP,
                &[0x40, 2, 6, 2, 2, 0, 0, 0xfd, 0xeb],
                &NEXT_HOP_RAW,
            ]),
            &NLRI_RAW,
        ),
    );
    lab.treat_as_withdraw(
        "ORIGIN attribute length 2",
        // RFC 7606 §7.1: ORIGIN of a length other than 1.
        &update_msg(
            &attrs(&[&[0x40, 1, 2, 0, 0], &AS_PATH_RAW, &NEXT_HOP_RAW]),
            &NLRI_RAW,
        ),
    );
    lab.treat_as_withdraw(
        "missing ORIGIN",
        // RFC 7606 §3 d: a missing well-known mandatory attribute.
        &update_msg(&attrs(&[&AS_PATH_RAW, &NEXT_HOP_RAW]), &NLRI_RAW),
    );
    lab.treat_as_withdraw(
        "NEXT_HOP 0.0.0.0",
        // RFC 7606 §7.3: a syntactically incorrect NEXT_HOP.
        &update_msg(
            &attrs(&[&ORIGIN_IGP, &AS_PATH_RAW, &[0x40, 3, 4, 0, 0, 0, 0]]),
            &NLRI_RAW,
        ),
    );

    // An NLRI prefix length above 32 cannot be skipped over: the session is reset
    // (RFC 4271 §6.3, RFC 7606 §5.3).
    lab.established_then_notification(
        "NLRI prefix length 33",
        &update_msg(
            &attrs(&[&ORIGIN_IGP, &AS_PATH_RAW, &NEXT_HOP_RAW]),
            &[33, 10, 3, 0, 0, 0],
        ),
        (3, update::INVALID_NETWORK_FIELD, None),
    );

    eprintln!("all cases in {:?}", started.elapsed());
}

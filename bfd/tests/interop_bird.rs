//! Our BFD against BIRD 2's (Debian's bird2): two namespaces joined by a veth pair; sessions
//! come Up over IPv4 and IPv6, a link cut is detected within the detection time, and the
//! sessions recover when the link is back.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use bfd::{Diagnostic, SessionConfig, State};
use lab::bird::Bird;
use lab::wait_for;
use support::{ip, scratch, NsDriver};

const BIRD_CONF: &str = r#"
router id 10.0.0.2;
log stderr all;
protocol device {}
protocol bfd {
    interface "*" {
        min rx interval 300 ms;
        min tx interval 300 ms;
        multiplier 3;
    };
    neighbor 10.0.0.1;
    neighbor fd00::1;
}
"#;

/// The state column of `birdc show bfd sessions` for `peer`.
fn bird_state(bird: &Bird, peer: &str) -> Option<String> {
    let out = bird.cmd("show bfd sessions").ok()?;
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(peer))
        .and_then(|l| l.split_whitespace().nth(2))
        .map(str::to_string)
}

fn both_up(bird: &Bird) -> bool {
    bird_state(bird, "10.0.0.1").as_deref() == Some("Up")
        && bird_state(bird, "fd00::1").as_deref() == Some("Up")
}

#[test]
fn bfd_with_bird() {
    lab::require(&["ip", "bird", "birdc"]);
    support::init_logging();
    let (ours, theirs) = support::pair("bfdbird");
    let dir = scratch("bfd-bird");
    let bird = Bird::start(&theirs, &dir, BIRD_CONF).unwrap();
    let driver = NsDriver::start(&ours, bfd::CONTROL_PORT).unwrap();
    let config = SessionConfig::default(); // 300 ms / 300 ms / 3, as BIRD's side
    let mut v4 = driver.add(ip("10.0.0.2"), ip("10.0.0.1"), config).unwrap();
    let mut v6 = driver.add(ip("fd00::2"), ip("fd00::1"), config).unwrap();

    // Up on both sides (BIRD starts at its 1 s idle rate, so a few seconds at most).
    let took = driver
        .wait_state(&mut v4, State::Up, Duration::from_secs(20))
        .unwrap();
    driver
        .wait_state(&mut v6, State::Up, Duration::from_secs(20))
        .unwrap();
    wait_for(
        "BIRD's sessions Up",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || both_up(&bird).then_some(()),
    )
    .unwrap();
    eprintln!("IPv4 session Up after {took:?}");
    // The Poll Sequences of both sides are done: 300 ms agreed, 900 ms detection.
    wait_for(
        "300 ms intervals agreed",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || {
            let s = *v4.borrow();
            (!s.polling
                && s.tx_interval == Some(Duration::from_millis(300))
                && s.detection_time == Duration::from_millis(900))
            .then_some(())
        },
    )
    .unwrap();
    let sessions = driver.rt.block_on(driver.handle.sessions()).unwrap();
    assert_eq!(sessions.len(), 2);
    assert!(sessions.iter().all(|(_, s)| s.remote_discriminator != 0));
    eprintln!("{}", bird.cmd("show bfd sessions").unwrap());

    // Cut the link on BIRD's side: we stop hearing BIRD, and must notice within the
    // detection time (3 x 300 ms) plus scheduling slack.
    std::thread::sleep(Duration::from_secs(2));
    let cut = Instant::now();
    theirs.ip(&["link", "set", "eth0", "down"]).unwrap();
    driver
        .wait_state(&mut v4, State::Down, Duration::from_secs(5))
        .unwrap();
    let detected = cut.elapsed();
    eprintln!("link cut detected after {detected:?}");
    assert!(
        detected < Duration::from_secs(1),
        "detection took {detected:?}, more than 3 x 300 ms plus slack"
    );
    assert_eq!(v4.borrow().diag, Diagnostic::ControlDetectionTimeExpired);
    driver
        .wait_state(&mut v6, State::Down, Duration::from_secs(2))
        .unwrap();

    // BIRD notices too, from its side of the cut.
    wait_for(
        "BIRD's sessions not Up during the cut",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || {
            (bird_state(&bird, "10.0.0.1").as_deref() != Some("Up")
                && bird_state(&bird, "fd00::1").as_deref() != Some("Up"))
            .then_some(())
        },
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(v4.borrow().state, State::Down);

    // The link comes back: both sides Up again.
    let healed = Instant::now();
    theirs.ip(&["link", "set", "eth0", "up"]).unwrap();
    driver
        .wait_state(&mut v4, State::Up, Duration::from_secs(20))
        .unwrap();
    driver
        .wait_state(&mut v6, State::Up, Duration::from_secs(20))
        .unwrap();
    wait_for(
        "BIRD's sessions Up again",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || both_up(&bird).then_some(()),
    )
    .unwrap();
    eprintln!("Up again {:?} after the link came back", healed.elapsed());

    // Removing our session: AdminDown reaches BIRD, which goes Down (not a timeout).
    driver
        .rt
        .block_on(driver.handle.remove_session(ip("10.0.0.2")))
        .unwrap();
    wait_for(
        "BIRD's IPv4 session Down after our AdminDown",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || (bird_state(&bird, "10.0.0.1").as_deref() != Some("Up")).then_some(()),
    )
    .unwrap();
    eprintln!("{}", bird.cmd("show bfd sessions").unwrap());
}

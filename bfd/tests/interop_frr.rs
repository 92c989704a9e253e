//! Our BFD against FRR's bfdd (Debian's frr): the same checks as with BIRD. bfdd runs alone,
//! without zebra (it needs none for single-hop peers in the default VRF), as the `frr` user:
//! unlike bgpd it has no option to stay root without being in the `frrvty` group, and the
//! `frr` user is (Debian's package creates it so).
#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bfd::{Diagnostic, SessionConfig, State};
use lab::{wait_for, Daemon, Netns};
use support::{ip, scratch, NsDriver};

const BFDD: &str = "/usr/lib/frr/bfdd";

const BFDD_CONF: &str = "\
bfd
 peer 10.0.0.1 local-address 10.0.0.2
  receive-interval 300
  transmit-interval 300
  detect-multiplier 3
 !
 peer fd00::1 local-address fd00::2
  receive-interval 300
  transmit-interval 300
  detect-multiplier 3
 !
!
";

struct Bfdd<'a> {
    ns: &'a Netns,
    dir: std::path::PathBuf,
    _daemon: Daemon,
}

impl<'a> Bfdd<'a> {
    fn start(ns: &'a Netns, dir: &Path) -> Bfdd<'a> {
        // bfdd drops to the frr user: it writes its pid file and vty socket here.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(dir.join("bfdd.conf"), BFDD_CONF).unwrap();
        let d = |f: &str| dir.join(f).to_string_lossy().into_owned();
        let log = std::fs::File::create(dir.join("bfdd.out")).unwrap();
        let child = ns
            .command(&[
                BFDD,
                "-f",
                &d("bfdd.conf"),
                "-i",
                &d("bfdd.pid"),
                "-z",
                &d("zserv.api"),
                &format!("--vty_socket={}", dir.display()),
                "--bfdctl",
                &d("bfdd.sock"),
                "-u",
                "frr",
                "-g",
                "frr",
                &format!("--log=file:{}", d("bfdd.log")),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let bfdd = Bfdd {
            ns,
            dir: dir.to_path_buf(),
            _daemon: Daemon::from_child(child),
        };
        wait_for(
            "bfdd's vty",
            Duration::from_secs(10),
            Duration::from_millis(100),
            || bfdd.vtysh("show bfd peers").ok(),
        )
        .unwrap();
        bfdd
    }

    fn vtysh(&self, command: &str) -> anyhow::Result<String> {
        self.ns.exec(&[
            "vtysh",
            "--vty_socket",
            &self.dir.to_string_lossy(),
            "-d",
            "bfdd",
            "-c",
            command,
        ])
    }

    /// The `Status:` line of `show bfd peer <peer>`: `up`, `down`, `init`.
    fn status(&self, peer: &str) -> Option<String> {
        let out = self.vtysh(&format!("show bfd peer {peer}")).ok()?;
        out.lines()
            .find_map(|l| l.trim().strip_prefix("Status:"))
            .map(|s| s.trim().to_string())
    }

    fn both(&self, want_up: bool) -> bool {
        ["10.0.0.1", "fd00::1"]
            .iter()
            .all(|p| (self.status(p).as_deref() == Some("up")) == want_up)
    }
}

#[test]
fn bfd_with_frr() {
    lab::require(&["ip", "vtysh", BFDD]);
    support::init_logging();
    let (ours, theirs) = support::pair("bfdfrr");
    let dir = scratch("bfd-frr");
    let bfdd = Bfdd::start(&theirs, &dir);
    let driver = NsDriver::start(&ours, bfd::CONTROL_PORT).unwrap();
    let config = SessionConfig::default();
    let mut v4 = driver.add(ip("10.0.0.2"), ip("10.0.0.1"), config).unwrap();
    let mut v6 = driver.add(ip("fd00::2"), ip("fd00::1"), config).unwrap();

    for rx in [&mut v4, &mut v6] {
        driver
            .wait_state(rx, State::Up, Duration::from_secs(20))
            .unwrap();
    }
    wait_for(
        "bfdd's peers up",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || bfdd.both(true).then_some(()),
    )
    .unwrap();
    wait_for(
        "300 ms intervals agreed",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || {
            let s = *v4.borrow();
            (!s.polling && s.detection_time == Duration::from_millis(900)).then_some(())
        },
    )
    .unwrap();
    eprintln!("{}", bfdd.vtysh("show bfd peer 10.0.0.1").unwrap());

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
        "detection took {detected:?}"
    );
    assert_eq!(v4.borrow().diag, Diagnostic::ControlDetectionTimeExpired);
    driver
        .wait_state(&mut v6, State::Down, Duration::from_secs(2))
        .unwrap();
    wait_for(
        "bfdd's peers down during the cut",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || bfdd.both(false).then_some(()),
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));

    theirs.ip(&["link", "set", "eth0", "up"]).unwrap();
    for rx in [&mut v4, &mut v6] {
        driver
            .wait_state(rx, State::Up, Duration::from_secs(20))
            .unwrap();
    }
    wait_for(
        "bfdd's peers up again",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || bfdd.both(true).then_some(()),
    )
    .unwrap();

    // Our AdminDown on removal: bfdd goes down at once, its remote diagnostic says why.
    driver
        .rt
        .block_on(driver.handle.remove_session(ip("10.0.0.2")))
        .unwrap();
    wait_for(
        "bfdd's IPv4 peer down after our AdminDown",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || (bfdd.status("10.0.0.1").as_deref() != Some("up")).then_some(()),
    )
    .unwrap();
    let peer = bfdd.vtysh("show bfd peer 10.0.0.1").unwrap();
    eprintln!("{peer}");
    assert!(
        peer.contains("administratively down"),
        "bfdd should report our diagnostic: {peer}"
    );
}

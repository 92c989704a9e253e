//! Runs our speaker (the `speaker` example, built by `cargo test` beside the test binaries) in
//! a lab namespace and reads its state over the control socket.
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bgp::speaker::control::{
    query_blocking, ControlRequest, ControlResponse, PeerStatus, RouteView,
};
use lab::{veth, wait_for, Daemon, Netns};

/// The `speaker` example binary of the same build profile as this test.
pub fn speaker_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> -> target/<profile>/examples/speaker
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory");
    let bin = profile_dir.join("examples").join("speaker");
    assert!(
        bin.exists(),
        "{} is missing: `cargo test -p bgp` builds it with the tests",
        bin.display()
    );
    bin
}

/// A per-test scratch directory under the target directory (never /tmp of other tests).
pub fn scratch(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("lab")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Our speaker running in a namespace.
pub struct Speaker {
    ctl: PathBuf,
    pub log: PathBuf,
    daemon: Daemon,
}

impl Speaker {
    /// Starts the speaker in `ns` with `config` (TOML without `control_socket`, which this
    /// adds).
    pub fn start(ns: &Netns, dir: &Path, config: &str) -> Result<Speaker> {
        std::fs::create_dir_all(dir)?;
        let ctl = dir.join("speaker.ctl");
        let conf = dir.join("speaker.toml");
        std::fs::write(
            &conf,
            format!("control_socket = \"{}\"\n{config}", ctl.display()),
        )?;
        let log = dir.join("speaker.log");
        let logf = std::fs::File::create(&log)?;
        let bin = speaker_binary();
        let child = ns
            .command(&[
                bin.to_str().context("binary path")?,
                conf.to_str().context("conf")?,
            ])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .spawn()
            .context("spawning speaker")?;
        let mut s = Speaker {
            ctl,
            log,
            daemon: Daemon::from_child(child),
        };
        let ctl = s.ctl.clone();
        wait_for(
            "speaker control socket",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || query_blocking(&ctl, &ControlRequest::Peers).ok(),
        )
        .with_context(|| s.log_tail())?;
        if !s.daemon.is_running() {
            bail!("speaker exited: {}", s.log_tail());
        }
        Ok(s)
    }

    /// Sends SIGTERM, as a pod's termination does.
    pub fn terminate(&self) -> Result<()> {
        let pid = self.daemon.pid().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        Ok(())
    }

    /// Whether the speaker process still runs.
    pub fn is_running(&mut self) -> bool {
        self.daemon.is_running()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn request(&self, req: &ControlRequest) -> Result<ControlResponse> {
        query_blocking(&self.ctl, req).with_context(|| format!("control request {req:?}"))
    }

    pub fn peers(&self) -> Result<Vec<PeerStatus>> {
        match self.request(&ControlRequest::Peers)? {
            ControlResponse::Peers { peers } => Ok(peers),
            other => bail!("unexpected answer {other:?}"),
        }
    }

    pub fn routes(&self) -> Result<Vec<RouteView>> {
        match self.request(&ControlRequest::Routes)? {
            ControlResponse::Routes { routes } => Ok(routes),
            other => bail!("unexpected answer {other:?}"),
        }
    }

    pub fn peer(&self, address: IpAddr) -> Result<PeerStatus> {
        self.peers()?
            .into_iter()
            .find(|p| p.address == address)
            .with_context(|| format!("no peer {address}"))
    }

    pub fn wait_established(&self, address: IpAddr, timeout: Duration) -> Result<()> {
        wait_for(
            &format!("our session to {address} Established"),
            timeout,
            Duration::from_millis(100),
            || {
                self.peer(address)
                    .ok()
                    .filter(|p| p.state == "Established")
                    .map(|_| ())
            },
        )
        .with_context(|| self.log_tail())
    }

    /// Waits until the best route for `prefix` satisfies `pred` (or, with `None`, until no
    /// route for `prefix` remains).
    pub fn wait_route(
        &self,
        prefix: &str,
        timeout: Duration,
        pred: Option<&dyn Fn(&RouteView) -> bool>,
    ) -> Result<Option<RouteView>> {
        let want: ipnet::IpNet = prefix.parse()?;
        wait_for(
            &format!("route {prefix} in our speaker"),
            timeout,
            Duration::from_millis(100),
            || {
                let routes = self.routes().ok()?;
                let best = routes.into_iter().find(|r| r.prefix == want && r.best);
                match (pred, best) {
                    (Some(p), Some(r)) if p(&r) => Some(Some(r)),
                    (None, None) => Some(None),
                    _ => None,
                }
            },
        )
        .with_context(|| self.log_tail())
    }
}

/// Parses an address literal written in a test.
pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("address literal")
}

/// Two namespaces joined by a veth `eth0`: ours at 10.0.0.1/24 and fd00::1/64, the peer's at
/// 10.0.0.`peer`/24 and fd00::`peer`/64.
pub fn pair(tag: &str, peer: u8) -> (Netns, Netns) {
    let a = Netns::new(&format!("{tag}a")).expect("namespace");
    let b = Netns::new(&format!("{tag}b")).expect("namespace");
    veth(&a, "eth0", &b, "eth0").expect("veth");
    let v4 = format!("10.0.0.{peer}/24");
    let v6 = format!("fd00::{peer}/64");
    for (ns, v4, v6) in [
        (&a, "10.0.0.1/24", "fd00::1/64"),
        (&b, v4.as_str(), v6.as_str()),
    ] {
        ns.ip(&["addr", "add", v4, "dev", "eth0"])
            .expect("IPv4 address");
        ns.ip(&["addr", "add", v6, "dev", "eth0", "nodad"])
            .expect("IPv6 address");
    }
    (a, b)
}

/// Our speaker's configuration for the eBGP interop tests: AS 65001 at 10.0.0.1 / fd00::1
/// (the `a` side of [`pair`]), originating 10.1.0.0/24 (MED 10, a community and a large
/// community) and fd01::/64, peering over both families with the `b` side, 10.0.0.`peer` /
/// fd00::`peer` in `peer_as`.
pub fn ebgp_speaker_config(peer: u8, peer_as: u32) -> String {
    format!(
        r#"
router_id = "10.0.0.1"
local_as = 65001
hold_time = 9
connect_retry = 1
[[originate]]
prefix = "10.1.0.0/24"
med = 10
communities = ["65001:100"]
large_communities = ["65001:1:2"]
[[originate]]
prefix = "fd01::/64"
[[peer]]
address = "10.0.0.{peer}"
remote_as = {peer_as}
[[peer]]
address = "fd00::{peer}"
remote_as = {peer_as}
"#
    )
}

/// The eBGP interop peers' side of [`ebgp_speaker_config`]: the peer at 10.0.0.`peer` /
/// fd00::`peer` in `peer_as` originates 10.`peer`.0.0/24 with MED 30, community
/// `peer_as:300` and large community `peer_as:5:6`, and fd0`peer`::/64. Waits until our
/// speaker learned both and checks that every attribute arrived intact.
pub fn expect_ebgp_routes_from_peer(speaker: &Speaker, peer: u8, peer_as: u32, timeout: Duration) {
    let r = speaker
        .wait_route(
            &format!("10.{peer}.0.0/24"),
            timeout,
            Some(&|r| r.peer.is_some()),
        )
        .unwrap()
        .unwrap();
    assert_eq!(r.as_path, vec![peer_as]);
    assert_eq!(r.next_hop, Some(ip(&format!("10.0.0.{peer}"))));
    assert_eq!(r.med, Some(30));
    assert_eq!(r.communities, vec![format!("{peer_as}:300")]);
    assert_eq!(r.large_communities, vec![format!("{peer_as}:5:6")]);
    let r6 = speaker
        .wait_route(
            &format!("fd0{peer}::/64"),
            timeout,
            Some(&|r| r.peer.is_some()),
        )
        .unwrap()
        .unwrap();
    assert_eq!(r6.as_path, vec![peer_as]);
    assert_eq!(r6.next_hop, Some(ip(&format!("fd00::{peer}"))));
}

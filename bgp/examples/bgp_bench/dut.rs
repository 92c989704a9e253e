//! The daemons under test: for each, a configuration equivalent to the others (AS 65000 on
//! 10.0.0.1:179, two passive eBGP neighbours 10.0.0.2/AS 65010 and 10.0.0.3/AS 65020,
//! IPv4 unicast, accept and re-advertise everything, never touch a kernel FIB), how to start
//! it in the benchmark's namespace and which process to measure.
//!
//! Neighbours are passive so that each session is opened once, by the synthetic peer, with
//! no connection collision (RFC 4271 §6.8) to resolve.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use lab::{Daemon, Netns};

use super::workload::{DUT_AS, MONITOR_AS, TESTER_AS};

/// The parties' addresses, all on the namespace's `lo` (see [`add_addresses`]).
pub const DUT_ADDR: &str = "10.0.0.1";
pub const TESTER_ADDR: &str = "10.0.0.2";
pub const MONITOR_ADDR: &str = "10.0.0.3";

/// Puts the three parties' addresses on `lo` of the benchmark's namespace.
///
/// Not 127.0.0.x, although all of 127/8 is local to `lo`: a loopback next hop is a martian
/// that GoBGP and FRR reject (RFC 1122 §3.2.1.3 forbids 127/8 off the host), which would
/// turn the tester's UPDATEs into withdrawals. Private addresses on `lo` are local all the
/// same, and the /24 makes the peers' next hop a connected one for BIRD's `direct` sessions.
pub fn add_addresses(ns: &Netns) -> Result<()> {
    for a in [DUT_ADDR, TESTER_ADDR, MONITOR_ADDR] {
        ns.addr("lo", &format!("{a}/24"))?;
    }
    Ok(())
}

/// A BGP implementation the benchmark can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DutKind {
    /// This crate's `speaker` example.
    Ours,
    Bird,
    Frr,
    Gobgp,
}

impl DutKind {
    pub fn parse(name: &str) -> Result<DutKind> {
        Ok(match name.trim().to_ascii_lowercase().as_str() {
            "ours" | "speaker" => DutKind::Ours,
            "bird" | "bird2" => DutKind::Bird,
            "frr" | "bgpd" => DutKind::Frr,
            "gobgp" | "gobgpd" => DutKind::Gobgp,
            other => bail!("unknown daemon {other:?}: expected ours, bird, frr or gobgp"),
        })
    }
}

impl fmt::Display for DutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DutKind::Ours => "ours",
            DutKind::Bird => "bird",
            DutKind::Frr => "frr",
            DutKind::Gobgp => "gobgp",
        })
    }
}

/// A started daemon under test. Dropping it kills its processes.
#[derive(Debug)]
pub struct RunningDut {
    /// The process whose peak RSS is reported.
    pub pid: u32,
    /// Its log, for error messages.
    pub log: PathBuf,
    /// Kept for their drop; the measured process is among them.
    _processes: Vec<Daemon>,
}

impl RunningDut {
    /// The last lines of the daemon's log, to explain a failure.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// Whether the measured process still runs.
    pub fn is_alive(&self) -> bool {
        std::fs::metadata(format!("/proc/{}", self.pid)).is_ok()
    }
}

/// The executable for `kind`, or why it cannot run.
pub fn executable(kind: DutKind, speaker: &Path) -> Result<PathBuf> {
    match kind {
        DutKind::Ours => {
            if speaker.is_file() {
                Ok(speaker.to_path_buf())
            } else {
                bail!(
                    "{} not built: run `cargo build --release -p bgp --example speaker`",
                    speaker.display()
                )
            }
        }
        DutKind::Bird => lab::which("bird").context("bird not installed (scripts/setup.sh)"),
        DutKind::Frr => lab::which("/usr/lib/frr/bgpd")
            .context("FRR bgpd not installed at /usr/lib/frr/bgpd (scripts/setup.sh)"),
        DutKind::Gobgp => lab::which("gobgpd").context("gobgpd not installed (scripts/setup.sh)"),
    }
}

/// The daemon's version as it reports it.
pub fn version(kind: DutKind, exe: &Path) -> String {
    if kind == DutKind::Ours {
        // The crate version and, when run from a checkout, its current commit.
        let rev = Command::new("git")
            .args([
                "-C",
                env!("CARGO_MANIFEST_DIR"),
                "rev-parse",
                "--short",
                "HEAD",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| format!("-{}", String::from_utf8_lossy(&o.stdout).trim()))
            .unwrap_or_default();
        return format!("{}{rev}", env!("CARGO_PKG_VERSION"));
    }
    let Ok(out) = Command::new(exe).arg("--version").output() else {
        return "?".into();
    };
    // BIRD prints on stderr, the others on stdout; the version is the last word of the first
    // line ("BIRD version 2.0.12", "bgpd version 8.4.4", "gobgpd version 3.10.0").
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .next()
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or("?")
        .to_string()
}

/// Writes `kind`'s configuration under `dir` and starts it in `ns`.
pub fn start(kind: DutKind, exe: &Path, ns: &Netns, dir: &Path) -> Result<RunningDut> {
    std::fs::create_dir_all(dir)?;
    let log = dir.join(format!("{kind}.log"));
    let d = |p: &str| dir.join(p).to_string_lossy().into_owned();
    let exe_s = exe.to_string_lossy().into_owned();
    let (config_name, config, args): (&str, String, Vec<String>) = match kind {
        DutKind::Ours => (
            "speaker.toml",
            ours_config(&d("speaker.ctl")),
            vec![exe_s, d("speaker.toml")],
        ),
        DutKind::Bird => (
            "bird.conf",
            bird_config(),
            vec![
                exe_s,
                "-f".into(),
                "-c".into(),
                d("bird.conf"),
                "-s".into(),
                d("bird.ctl"),
                "-P".into(),
                d("bird.pid"),
            ],
        ),
        DutKind::Frr => (
            "bgpd.conf",
            frr_config(),
            vec![
                exe_s,
                "-f".into(),
                d("bgpd.conf"),
                "-i".into(),
                d("bgpd.pid"),
                "-z".into(),
                d("zserv.api"),
                format!("--vty_socket={}", dir.display()),
                // Stay root without looking for the `frr`/`frrvty` users and groups.
                "-S".into(),
                // No zebra: bgpd programs no kernel, like BIRD without a kernel protocol,
                // and takes next hops as valid. With zebra, the tester's next hop would be
                // one of the namespace's own addresses, which bgpd rejects as martian.
                "-Z".into(),
                "-l".into(),
                DUT_ADDR.into(),
                "-p".into(),
                "179".into(),
                format!("--log=file:{}", log.display()),
                // Without zebra, bgpd logs an error for every next-hop registration it
                // cannot send (once per route): only critical messages, so that the figure
                // is not one of log writing.
                "--log-level=critical".into(),
            ],
        ),
        DutKind::Gobgp => (
            "gobgpd.toml",
            gobgp_config(),
            vec![
                exe_s,
                "-f".into(),
                d("gobgpd.toml"),
                "--log-level=warn".into(),
                "--pprof-disable".into(),
                // The gRPC API on the namespace's own loopback: never collides with another
                // gobgpd on the host.
                format!("--api-hosts={DUT_ADDR}:50051"),
            ],
        ),
    };
    std::fs::write(dir.join(config_name), config)?;
    let logf = std::fs::File::create(&log)?;
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = ns.command(&args_ref);
    cmd.stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf);
    if kind == DutKind::Ours {
        cmd.env("RUST_LOG", "warn");
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", args[0]))?;
    // `ip netns exec` execs the command in place, so the child's pid is the daemon's.
    let pid = child.id();
    let dut = RunningDut {
        pid,
        log,
        _processes: vec![Daemon::from_child(child)],
    };
    // Catch an immediate exit (bad configuration) with its log rather than a connect timeout.
    let settle = Instant::now() + Duration::from_millis(300);
    while Instant::now() < settle {
        if !dut.is_alive() {
            bail!("{kind} exited at start: {}", dut.log_tail());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Make sure the figures will be the daemon's and not those of a wrapper process.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let expected: String = exe
        .file_name()
        .map(|n| n.to_string_lossy().chars().take(15).collect())
        .unwrap_or_default();
    if comm.trim() != expected {
        bail!(
            "process {pid} is {:?}, not {expected:?}: cannot measure it",
            comm.trim()
        );
    }
    Ok(dut)
}

/// Our speaker: the format of `bgp::speaker::config`.
fn ours_config(control_socket: &str) -> String {
    format!(
        r#"router_id = "{DUT_ADDR}"
local_as = {DUT_AS}
listen = ["{DUT_ADDR}:179"]
control_socket = "{control_socket}"

[[peer]]
address = "{TESTER_ADDR}"
remote_as = {TESTER_AS}
passive = true

[[peer]]
address = "{MONITOR_ADDR}"
remote_as = {MONITOR_AS}
passive = true
"#
    )
}

/// BIRD 2: no kernel protocol, so nothing reaches a FIB. BIRD finds no neighbour on a
/// loopback interface, so the sessions are `multihop`; their next hops are then resolved
/// recursively (the default for multihop), through the connected route of `lo` that the
/// `direct` protocol puts in the table.
fn bird_config() -> String {
    let neighbour = |name: &str, addr: &str, asn: u32| {
        format!(
            r#"protocol bgp {name} {{
  local {DUT_ADDR} as {DUT_AS};
  neighbor {addr} as {asn};
  multihop;
  passive on;
  hold time 240;
  ipv4 {{ import all; export all; }};
}}
"#
        )
    };
    format!(
        "router id {DUT_ADDR};\nprotocol device {{ }}\nprotocol direct {{ ipv4; interface \"lo\"; }}\n{}{}",
        neighbour("tester", TESTER_ADDR, TESTER_AS),
        neighbour("monitor", MONITOR_ADDR, MONITOR_AS)
    )
}

/// FRR bgpd 8.4: eBGP without policy needs `no bgp ebgp-requires-policy` (RFC 8212 is the
/// default); the peers are on loopback, so the connected check is off; the advertisement
/// interval is 0 as for the other daemons, which have no MRAI.
fn frr_config() -> String {
    let mut s = format!(
        "frr defaults traditional\nhostname dut\n!\nrouter bgp {DUT_AS}\n bgp router-id {DUT_ADDR}\n no bgp ebgp-requires-policy\n no bgp network import-check\n"
    );
    for (addr, asn) in [(TESTER_ADDR, TESTER_AS), (MONITOR_ADDR, MONITOR_AS)] {
        s += &format!(
            " neighbor {addr} remote-as {asn}\n neighbor {addr} passive\n neighbor {addr} disable-connected-check\n neighbor {addr} update-source {DUT_ADDR}\n neighbor {addr} timers 80 240\n neighbor {addr} advertisement-interval 0\n"
        );
    }
    s += " address-family ipv4 unicast\n";
    for addr in [TESTER_ADDR, MONITOR_ADDR] {
        s += &format!("  neighbor {addr} activate\n");
    }
    s += " exit-address-family\n!\n";
    s
}

/// GoBGP 3: two passive neighbours, IPv4 unicast, the global RIB's default policy accepts all.
fn gobgp_config() -> String {
    let mut s = format!(
        "[global.config]\n  as = {DUT_AS}\n  router-id = \"{DUT_ADDR}\"\n  port = 179\n  local-address-list = [\"{DUT_ADDR}\"]\n"
    );
    for (addr, asn) in [(TESTER_ADDR, TESTER_AS), (MONITOR_ADDR, MONITOR_AS)] {
        s += &format!(
            "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{addr}\"\n    peer-as = {asn}\n  [neighbors.transport.config]\n    passive-mode = true\n    local-address = \"{DUT_ADDR}\"\n  [neighbors.timers.config]\n    hold-time = 240\n    keepalive-interval = 80\n  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n"
        );
    }
    s
}

pub use lab::process::{cpu_seconds, peak_rss_mib};

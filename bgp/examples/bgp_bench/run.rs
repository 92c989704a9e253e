//! One benchmark run against one daemon: namespace, daemon, monitor session, tester session,
//! clock, peak RSS. Everything is bounded by one deadline.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use lab::Netns;

use super::dut::{self, DutKind, DUT_ADDR, MONITOR_ADDR, TESTER_ADDR};
use super::session::{self, enter_netns, MonitorReport, PeerIdentity, Tester};
use super::workload::{EncodedTable, Workload, MONITOR_AS, TESTER_AS};

/// How long both sessions stay idle between the last one coming up and the first UPDATE, so
/// that the daemon has finished its own session start-up work (initial table dump, which is
/// empty, timers) before the clock starts.
const SETTLE: Duration = Duration::from_secs(1);

/// A successful run.
#[derive(Debug)]
pub struct Measurement {
    pub elapsed: Duration,
    /// Time for the tester to hand the whole table to the kernel: if this is close to
    /// `elapsed`, the daemon kept up with the wire.
    pub write_time: Duration,
    pub peak_rss_mib: f64,
    /// CPU time the daemon used between the first UPDATE and the last prefix out.
    pub cpu: Duration,
    pub updates_received: u64,
    pub octets_received: u64,
}

/// What a run needs besides the daemon.
#[derive(Debug)]
pub struct RunSpec<'a> {
    pub kind: DutKind,
    pub exe: PathBuf,
    pub workload: Workload,
    pub table: &'a EncodedTable,
    pub timeout: Duration,
    pub work_dir: &'a Path,
}

/// Runs the scenario once. The namespace and every process in it are gone when it returns.
pub fn run(spec: &RunSpec<'_>) -> Result<Measurement> {
    let deadline = Instant::now() + spec.timeout;
    let ns = Netns::new("bench")?;
    dut::add_addresses(&ns)?;
    let dir = spec.work_dir.join(spec.kind.to_string());
    let daemon = dut::start(spec.kind, &spec.exe, &ns, &dir)?;
    let result = drive(spec, &ns, &daemon, deadline);
    let result = result.map_err(|e| {
        if daemon.is_alive() {
            e
        } else {
            e.context(format!("{} died; log: {}", spec.kind, daemon.log_tail()))
        }
    });
    drop(daemon);
    drop(ns);
    result
}

fn drive(
    spec: &RunSpec<'_>,
    ns: &Netns,
    daemon: &dut::RunningDut,
    deadline: Instant,
) -> Result<Measurement> {
    let dut_addr = SocketAddrV4::new(parse(DUT_ADDR)?, 179);
    let netns_path = ns.path();

    // Monitor: establish, report, then count until the whole table arrived.
    let (mon_up_tx, mon_up_rx) = mpsc::channel::<()>();
    let workload = spec.workload;
    let mon_path = netns_path.clone();
    let monitor_addr = parse(MONITOR_ADDR)?;
    let monitor = std::thread::Builder::new().name("monitor".into()).spawn(
        move || -> Result<MonitorReport> {
            enter_netns(&mon_path)?;
            let me = PeerIdentity {
                asn: MONITOR_AS,
                address: monitor_addr,
            };
            let s = session::establish(me, dut_addr, deadline).context("monitor session")?;
            let _ = mon_up_tx.send(());
            session::monitor(s, workload, deadline)
        },
    )?;
    let left = deadline.saturating_duration_since(Instant::now());
    match mon_up_rx.recv_timeout(left) {
        Ok(()) => {}
        // The thread ended before Established: its error says why.
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            return Err(match monitor.join() {
                Ok(Err(e)) => e,
                _ => anyhow!("monitor thread ended without a session"),
            })
        }
        // Past the deadline the thread gives up within a few seconds, with its reason.
        Err(mpsc::RecvTimeoutError::Timeout) => {
            return Err(match monitor.join() {
                Ok(Err(e)) => e,
                _ => anyhow!("monitor session did not come up"),
            })
        }
    }

    // Tester: establish on a netns thread, then drive it from here.
    let tester_addr = parse(TESTER_ADDR)?;
    let tester_path = netns_path.clone();
    let tester = std::thread::Builder::new()
        .name("tester".into())
        .spawn(move || -> Result<Tester> {
            enter_netns(&tester_path)?;
            let me = PeerIdentity {
                asn: TESTER_AS,
                address: tester_addr,
            };
            let s = session::establish(me, dut_addr, deadline).context("tester session")?;
            Tester::start(s)
        })?
        .join()
        .map_err(|_| anyhow!("tester thread panicked"))??;

    std::thread::sleep(SETTLE);
    if !daemon.is_alive() {
        bail!("the daemon exited after the sessions came up");
    }
    let cpu_before = dut::cpu_seconds(daemon.pid)?;
    let sent = tester.send(spec.table)?;
    let report = monitor
        .join()
        .map_err(|_| anyhow!("monitor thread panicked"))??;
    let cpu_after = dut::cpu_seconds(daemon.pid)?;
    let peak_rss_mib = dut::peak_rss_mib(daemon.pid)?;
    drop(tester);
    Ok(Measurement {
        elapsed: report.last_prefix_at.duration_since(sent.first_update_at),
        write_time: sent.last_written_at.duration_since(sent.first_update_at),
        peak_rss_mib,
        cpu: Duration::from_secs_f64((cpu_after - cpu_before).max(0.0)),
        updates_received: report.updates,
        octets_received: report.octets,
    })
}

fn parse(addr: &str) -> Result<Ipv4Addr> {
    addr.parse().with_context(|| format!("bad address {addr}"))
}

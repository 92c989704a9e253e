//! Comparative BGP benchmark: how fast, and in how much memory, a daemon takes in a large
//! table from one eBGP peer and passes it on to another.
//!
//! ```text
//! cargo run --release -p bgp --example bgp-bench -- \
//!     [--prefixes 1000000] [--paths 10000] [--daemons ours,bird,frr,gobgp] \
//!     [--gobgp-prefixes 100000] [--timeout 120]
//! ```
//! (`scripts/bench-bgp.sh` builds the speaker and this example in release mode and runs it.)
//! Needs root: everything runs in a network namespace the benchmark creates and deletes.
//!
//! # Method
//!
//! For each daemon under test (DUT), in a fresh network namespace where every party uses its
//! own address on `lo` (private addresses, not 127/8: see `dut::add_addresses`):
//!
//! ```text
//!  tester 10.0.0.2, AS 65010 ──eBGP──► DUT 10.0.0.1, AS 65000 ──eBGP──► monitor 10.0.0.3, AS 65020
//! ```
//!
//! 1. The DUT starts in its own process with both neighbours passive and no kernel FIB
//!    (BIRD without a kernel protocol, FRR bgpd without zebra, GoBGP, our `speaker`).
//! 2. The monitor, then the tester, open their sessions (threads of this process). After both
//!    are Established, one second passes so that session start-up work is over.
//! 3. The table — N /24 prefixes over P distinct AS paths, N/P consecutive prefixes per path,
//!    packed into full UPDATEs as a router sends a table — was encoded with the crate's codec
//!    before the DUT started. The clock starts just before the tester's first write; the
//!    tester writes the table in ~256 KiB writes.
//! 4. The monitor counts distinct expected prefixes (a bitmap; withdrawals un-count) and
//!    stops the clock when the last one arrives: the time covers receiving, deciding and
//!    re-advertising the whole table.
//! 5. The DUT's peak RSS (`VmHWM`) is read from `/proc/<pid>/status` at the end. For FRR this
//!    is bgpd alone (zebra is not run). The DUT's CPU time (user + system, all threads) over
//!    the timed span is reported too: on a shared machine it varies far less than wall time.
//!
//! Tester and monitor stay off the critical path: no encoding after the clock starts, large
//! writes and reads, and the monitor parses only prefix fields. The "tester wrote the table
//! in" figure shows how long the kernel took the bytes; a DUT that reads slower than that is
//! the bottleneck, as intended.
//!
//! GoBGP is an order of magnitude slower than the others, so it runs by default on a smaller
//! table (`--gobgp-prefixes`, same prefixes per path); the table compares time *per prefix*
//! against BIRD, so the ratio stays fair, and marks its memory ratio as taken at a different
//! table size. A DUT that is not installed, never establishes or runs out of time is reported
//! as FAILED with the reason, and the benchmark goes on with the next one. The machine's CPU
//! count and load are printed because other work may share the CPUs.

mod bgp_bench;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

use bgp_bench::dut::{self, DutKind, TESTER_ADDR};
use bgp_bench::report::{self, Row};
use bgp_bench::run::{self, RunSpec};
use bgp_bench::workload::{EncodedTable, Workload};

/// Comparative BGP benchmark: tester -> daemon under test -> monitor, in a private namespace.
#[derive(Debug, Parser)]
#[command(name = "bgp-bench")]
struct Args {
    /// IPv4 /24 prefixes the tester announces.
    #[arg(long, default_value_t = 1_000_000)]
    prefixes: u32,
    /// Distinct AS paths they are spread over.
    #[arg(long, default_value_t = 10_000)]
    paths: u32,
    /// Daemons to run, in order: ours, bird, frr, gobgp.
    #[arg(long, value_delimiter = ',', default_value = "ours,bird,frr,gobgp")]
    daemons: Vec<String>,
    /// Prefixes for GoBGP, which is too slow for the full table (paths are scaled alike).
    #[arg(long, default_value_t = 100_000)]
    gobgp_prefixes: u32,
    /// Upper bound for one daemon's whole run (start, sessions, table), in seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Our speaker binary; by default the `speaker` example beside this one.
    #[arg(long)]
    speaker: Option<PathBuf>,
    /// Where configurations and logs go (default: a fresh directory under /tmp).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let kinds = args
        .daemons
        .iter()
        .map(|d| DutKind::parse(d))
        .collect::<Result<Vec<_>>>()?;
    if !is_root() {
        bail!("bgp-bench needs root: it creates a network namespace and binds port 179 in it");
    }
    let main_workload = Workload::new(args.prefixes, args.paths)?;
    let gobgp_prefixes = args.gobgp_prefixes.min(args.prefixes);
    let gobgp_paths = ((u64::from(args.paths) * u64::from(gobgp_prefixes))
        / u64::from(args.prefixes))
    .max(1) as u32;
    let gobgp_workload = Workload::new(gobgp_prefixes, gobgp_paths)?;
    let speaker = match args.speaker {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("no directory for the current executable")?
            .join("speaker"),
    };
    let work_dir = args
        .work_dir
        .unwrap_or_else(|| std::env::temp_dir().join(format!("bgp-bench-{}", std::process::id())));
    std::fs::create_dir_all(&work_dir)?;

    println!("{}", machine_line());
    let mut tables: HashMap<u32, EncodedTable> = HashMap::new();
    let mut rows = Vec::new();
    for kind in kinds {
        let workload = if kind == DutKind::Gobgp {
            gobgp_workload
        } else {
            main_workload
        };
        if let std::collections::hash_map::Entry::Vacant(slot) = tables.entry(workload.prefixes) {
            let t = workload.encode_updates(TESTER_ADDR.parse()?, 256 << 10)?;
            eprintln!(
                "encoded {} prefixes over {} paths: {} UPDATEs, {:.1} MiB",
                workload.prefixes,
                workload.paths,
                t.messages,
                t.octets as f64 / (1 << 20) as f64
            );
            slot.insert(t);
        }
        let table = &tables[&workload.prefixes];
        let load_before = loadavg().first().copied().unwrap_or(f64::NAN);
        let (version, outcome) = match dut::executable(kind, &speaker) {
            Err(e) => ("-".to_string(), Err(format!("{e:#}"))),
            Ok(exe) => {
                let version = dut::version(kind, &exe);
                eprintln!(
                    "running {kind} {version} with {} prefixes ...",
                    workload.prefixes
                );
                let spec = RunSpec {
                    kind,
                    exe,
                    workload,
                    table,
                    timeout: Duration::from_secs(args.timeout),
                    work_dir: &work_dir,
                };
                (version, run::run(&spec).map_err(|e| format!("{e:#}")))
            }
        };
        match &outcome {
            Ok(m) => eprintln!(
                "  {kind}: {:.3} s, peak RSS {:.1} MiB",
                m.elapsed.as_secs_f64(),
                m.peak_rss_mib
            ),
            Err(e) => eprintln!("  {kind}: FAILED: {e}"),
        }
        rows.push(Row {
            kind,
            version,
            prefixes: workload.prefixes,
            paths: workload.paths,
            load_before,
            outcome,
        });
    }
    println!();
    print!("{}", report::render(&rows));
    println!("{}", machine_line());
    println!("configurations and logs: {}", work_dir.display());
    Ok(())
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn loadavg() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect()
}

/// CPU count and load, since other work may share the machine.
fn machine_line() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = loadavg()
        .iter()
        .map(|l| format!("{l:.2}"))
        .collect::<Vec<_>>()
        .join(" ");
    format!("machine: {cpus} CPUs, load average {load}")
}

//! Route programming throughput: `NetlinkFib` against `ip -batch`, in a namespace it creates.
//!
//! ```text
//! cargo run --release -p fib --example fib-bench -- [--routes 100000] [--runs 5] [--batch 1024]
//! ```
//!
//! Each run installs N /32 routes via a gateway on a veth, replaces them all (new gateway) and
//! removes them, once per contender, in the same namespace and the same run:
//!
//! * `fib`: the hot path (`replace` / `delete`), routes over shared nexthop objects (default);
//! * `fib inline`: the same with `nexthop_objects: false` (every route carries its gateway);
//! * `fib apply`: the level-triggered path (`apply`: dump + diff + writes);
//! * `ip -batch`: `ip -n <ns> -batch <file>` with `route add <dst> via <gw> proto 80` lines,
//!   the routes as an operator writes them — the reference of the target ratio;
//! * `ip -batch nhid`: the same routes over two `ip nexthop` objects, to show how much of the
//!   difference is the kernel's cheaper nexthop-object path rather than our code;
//! * `ip -batch spread`: the plain lines, the removals in the order fib sends a large batch of
//!   removals in (bit-reversed index), to show how much is that order rather than our code.
//!
//! Wall clock and CPU time (user and system, getrusage: our process for fib, the waited-for
//! `ip` child for ip) per phase; the medians over the runs, and the median of the per-run
//! ratios `ip -batch` time / fib time. Needs root; touches only the namespaces it creates.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use fib::{ApplyReport, FibConfig, FibError, NetlinkFib, NextHop, Route, RouteTable};
use ipnet::IpNet;
use lab::Netns;

#[derive(Parser, Debug)]
#[command(about = "Kernel route programming throughput: fib (rtnetlink, batched) vs ip -batch")]
struct Args {
    /// Number of /32 routes per phase.
    #[arg(long, default_value_t = 100_000)]
    routes: u32,
    /// Runs; medians are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Netlink requests per sendmsg for fib.
    #[arg(long, default_value_t = FibConfig::default().batch_size)]
    batch: usize,
    /// Only the fib hot path and plain `ip -batch` (the target comparison).
    #[arg(long)]
    quick: bool,
}

const GW_A: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);
const GW_B: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 3);

fn destination(i: u32) -> Ipv4Addr {
    // 10.64.0.0/10 holds 4M /32s.
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 64, 0, 0)) + i)
}

fn routes(n: u32, gw: Ipv4Addr) -> Vec<Route> {
    (0..n)
        .map(|i| {
            let dst = IpNet::new(IpAddr::V4(destination(i)), 32).unwrap_or_default();
            Route::via(dst, NextHop::via(IpAddr::V4(gw)))
        })
        .collect()
}

/// User and system CPU time of this process (`RUSAGE_SELF`) or of its waited-for children
/// (`RUSAGE_CHILDREN`, i.e. `ip`). The kernel's route processing runs inside the caller's
/// syscalls, so it is in the caller's system time.
#[allow(unsafe_code)]
fn rusage(who: libc::c_int) -> (Duration, Duration) {
    // SAFETY: getrusage only writes the struct we pass, which is plain data and zeroed.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid `who` and a valid pointer to a live rusage.
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

/// Wall-clock and CPU time of one phase.
#[derive(Clone, Copy, Default)]
struct Timing {
    wall: Duration,
    user: Duration,
    sys: Duration,
}

impl Timing {
    fn cpu(&self) -> Duration {
        self.user + self.sys
    }

    fn measure<T>(who: libc::c_int, f: impl FnOnce() -> T) -> (T, Timing) {
        let (u0, s0) = rusage(who);
        let started = Instant::now();
        let out = f();
        let wall = started.elapsed();
        let (u1, s1) = rusage(who);
        (
            out,
            Timing {
                wall,
                user: u1.saturating_sub(u0),
                sys: s1.saturating_sub(s0),
            },
        )
    }
}

impl std::ops::Add for Timing {
    type Output = Timing;
    fn add(self, o: Timing) -> Timing {
        Timing {
            wall: self.wall + o.wall,
            user: self.user + o.user,
            sys: self.sys + o.sys,
        }
    }
}

/// Times one FIB call and checks that it wrote `expect_writes` routes without failures.
fn timed(
    fib: &mut NetlinkFib,
    expect_writes: usize,
    call: impl FnOnce(&mut NetlinkFib) -> Result<ApplyReport, FibError>,
) -> Result<Timing> {
    let (report, t) = Timing::measure(libc::RUSAGE_SELF, || call(fib));
    let report = report?;
    if let Some(first) = report.failed.first() {
        bail!("{} routes failed, first: {first}", report.failed.len());
    }
    ensure!(
        report.writes() == expect_writes,
        "expected {expect_writes} writes, report says {report:?}"
    );
    Ok(t)
}

/// The indexes 0..n in bit-reversed order (the order fib sends a sorted batch of removals in).
fn spread_order(n: u32) -> Vec<u32> {
    let bits = u32::BITS - n.saturating_sub(1).leading_zeros();
    (0..1u64 << bits)
        .map(|i| {
            ((i as u32).reverse_bits())
                .checked_shr(u32::BITS - bits)
                .unwrap_or(0)
        })
        .filter(|&j| j < n)
        .collect()
}

fn ip_batch(ns: &Netns, lines: impl Fn(u32) -> String, n: u32) -> Result<Timing> {
    let path = std::env::temp_dir().join(format!("fib-bench-{}.batch", std::process::id()));
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for i in 0..n {
            writeln!(f, "{}", lines(i))?;
        }
    }
    let (out, t) = Timing::measure(libc::RUSAGE_CHILDREN, || {
        Command::new("ip")
            .args(["-n", ns.name(), "-batch"])
            .arg(&path)
            .output()
    });
    let _ = std::fs::remove_file(&path);
    let out = out.context("running ip -batch")?;
    if !out.status.success() {
        bail!("ip -batch: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(t)
}

/// The three phases of one contender in one run.
type Phases = [Timing; 3];

/// The fib hot path: `replace` N routes, `replace` them with another gateway, `delete` them.
fn fib_hot(fib: &mut NetlinkFib, count: &mut NetlinkFib, n: u32) -> Result<Phases> {
    let nu = n as usize;
    // Route lists are built before the clock starts.
    let (a, b) = (routes(n, GW_A), routes(n, GW_B));
    let keys = a.iter().map(Route::key).collect::<Vec<_>>();
    let install = timed(fib, nu, |f| f.replace(a))?;
    ensure!(count.installed()?.len() == nu);
    let replace = timed(fib, nu, |f| f.replace(b))?;
    ensure!(count.installed()?.len() == nu);
    let remove = timed(fib, nu, |f| f.delete(keys))?;
    ensure!(count.installed()?.is_empty());
    Ok([install, replace, remove])
}

/// The level-triggered path: `apply` of the N routes, of them with another gateway, of none.
fn fib_apply(fib: &mut NetlinkFib, count: &mut NetlinkFib, n: u32) -> Result<(Phases, Timing)> {
    let nu = n as usize;
    let (a, a2, b) = (routes(n, GW_A), routes(n, GW_A), routes(n, GW_B));
    let install = timed(fib, nu, |f| f.apply(a))?;
    ensure!(count.installed()?.len() == nu);
    let noop = timed(fib, 0, |f| f.apply(a2))?;
    let replace = timed(fib, nu, |f| f.apply(b))?;
    ensure!(count.installed()?.len() == nu);
    let remove = timed(fib, nu, |f| f.apply(vec![]))?;
    ensure!(count.installed()?.is_empty());
    Ok(([install, replace, remove], noop))
}

/// `ip -batch` with the same routes; over nexthop objects `nhid` (created before timing).
fn ip(ns: &Netns, count: &mut NetlinkFib, n: u32, nhid: bool, spread: bool) -> Result<Phases> {
    let nu = n as usize;
    // Removal order: as written, or spread as fib sends removals.
    let order: Vec<u32> = if spread {
        spread_order(n)
    } else {
        (0..n).collect()
    };
    let (install, replace) = if nhid {
        for (id, gw) in [(1, GW_A), (2, GW_B)] {
            ns.ip(&[
                "nexthop",
                "add",
                "id",
                &id.to_string(),
                "via",
                &gw.to_string(),
                "dev",
                "eth0",
            ])?;
        }
        let add = ip_batch(
            ns,
            |i| format!("route add {}/32 nhid 1 proto 80", destination(i)),
            n,
        )?;
        ensure!(count.installed()?.len() == nu, "ip -batch add: count");
        let replace = ip_batch(
            ns,
            |i| format!("route replace {}/32 nhid 2 proto 80", destination(i)),
            n,
        )?;
        (add, replace)
    } else {
        let add = ip_batch(
            ns,
            |i| format!("route add {}/32 via {GW_A} proto 80", destination(i)),
            n,
        )?;
        ensure!(count.installed()?.len() == nu, "ip -batch add: count");
        let replace = ip_batch(
            ns,
            |i| format!("route replace {}/32 via {GW_B} proto 80", destination(i)),
            n,
        )?;
        (add, replace)
    };
    ensure!(count.installed()?.len() == nu, "ip -batch replace: count");
    let remove = ip_batch(
        ns,
        |i| format!("route del {}/32 proto 80", destination(order[i as usize])),
        n,
    )?;
    ensure!(count.installed()?.is_empty(), "ip -batch del left routes");
    if nhid {
        for id in ["1", "2"] {
            ns.ip(&["nexthop", "del", "id", id])?;
        }
    }
    Ok([install, replace, remove])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

const PHASES: [&str; 4] = ["install", "replace", "remove", "all"];

/// Per contender, per run, the timings of install/replace/remove and their sum.
#[derive(Default)]
struct Samples {
    runs: Vec<[Timing; 4]>,
}

impl Samples {
    fn push(&mut self, p: Phases) {
        self.runs.push([p[0], p[1], p[2], p[0] + p[1] + p[2]]);
    }

    fn median_of(&self, phase: usize, f: impl Fn(&Timing) -> f64) -> f64 {
        median(self.runs.iter().map(|r| f(&r[phase])).collect())
    }
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    lab::require(&["ip"]);
    let n = args.routes;

    let ns = Netns::new("fibbench")?;
    let peer = Netns::new("fibbenchp")?;
    lab::veth(&ns, "eth0", &peer, "eth1")?;
    ns.addr("eth0", "192.168.50.1/24")?;
    let config = FibConfig {
        batch_size: args.batch,
        ..FibConfig::default()
    };
    let mut fib = NetlinkFib::in_namespace(ns.path(), config.clone())?;
    // Separate instances per contender, and one that only counts routes (its reads do not
    // touch the measured instances' state).
    let mut apply = NetlinkFib::in_namespace(ns.path(), config.clone())?;
    let mut count = NetlinkFib::in_namespace(ns.path(), config.clone())?;
    let mut inline = NetlinkFib::in_namespace(
        ns.path(),
        FibConfig {
            nexthop_objects: false,
            ..config
        },
    )?;

    println!(
        "{n} IPv4 /32 routes via a veth gateway, namespace {}, {} runs{}",
        ns.name(),
        args.runs,
        if args.quick { " (quick)" } else { "" }
    );
    let names = [
        "fib",
        "fib inline",
        "fib apply",
        "ip -batch",
        "ip -batch nhid",
        "ip -batch spread",
    ];
    let mut samples: Vec<Samples> = names.iter().map(|_| Samples::default()).collect();
    let mut noop = Vec::new();
    for run in 0..args.runs {
        // Alternate who goes first, so a drift in machine load favours neither.
        let order: Vec<usize> = if run % 2 == 0 {
            vec![0, 3, 1, 4, 2, 5]
        } else {
            vec![3, 0, 4, 1, 5, 2]
        };
        for c in order {
            if args.quick && !matches!(c, 0 | 3) {
                continue;
            }
            let phases = match c {
                0 => fib_hot(&mut fib, &mut count, n)?,
                1 => fib_hot(&mut inline, &mut count, n)?,
                2 => {
                    let (p, t) = fib_apply(&mut apply, &mut count, n)?;
                    noop.push(ms(t.wall));
                    p
                }
                3 => ip(&ns, &mut count, n, false, false)?,
                4 => ip(&ns, &mut count, n, true, false)?,
                _ => ip(&ns, &mut count, n, false, true)?,
            };
            samples[c].push(phases);
        }
        let all = |c: usize| {
            samples[c]
                .runs
                .last()
                .map(|r| r[3].wall)
                .unwrap_or_default()
        };
        eprintln!(
            "run {}: fib {:.0} ms, ip -batch {:.0} ms (3 x {n} routes)",
            run + 1,
            ms(all(0)),
            ms(all(3))
        );
    }

    println!();
    println!(
        "{:<15} {:<8} {:>9} {:>10} {:>9} {:>9} | {:>8} {:>8}",
        "medians", "phase", "wall ms", "routes/s", "user ms", "sys ms", "ip/x wall", "ip/x cpu"
    );
    for (c, name) in names.iter().enumerate() {
        if samples[c].runs.is_empty() {
            continue;
        }
        for (p, phase) in PHASES.iter().enumerate() {
            let s = &samples[c];
            let k = if p == 3 { 3 * n } else { n };
            let wall = s.median_of(p, |t| ms(t.wall));
            let ratio = |f: fn(&Timing) -> Duration| {
                median(
                    samples[3]
                        .runs
                        .iter()
                        .zip(&s.runs)
                        .map(|(ip, ours)| {
                            f(&ip[p]).as_secs_f64() / f(&ours[p]).as_secs_f64().max(1e-6)
                        })
                        .collect(),
                )
            };
            println!(
                "{:<15} {:<8} {:>9.0} {:>10.0} {:>9.0} {:>9.0} | {:>7.2}x {:>7.2}x",
                if p == 0 { name } else { "" },
                phase,
                wall,
                f64::from(k) / (wall / 1e3),
                s.median_of(p, |t| ms(t.user)),
                s.median_of(p, |t| ms(t.sys)),
                ratio(|t| t.wall),
                ratio(|t| t.cpu()),
            );
        }
    }
    println!();
    println!("ip/x: `ip -batch` (plain `via`, as an operator writes the routes) time divided by");
    println!("this contender's, median of the per-run ratios. fib: hot path (replace/delete) over");
    println!("shared nexthop objects; fib inline: same without nexthop objects; fib apply: full");
    println!("reconcile (dump + diff + writes); ip -batch nhid: ip with the routes over nexthop");
    println!("objects; ip -batch spread: plain lines, the removals in the order fib sends them");
    println!("(bit-reversed index: kinder to the kernel's FIB trie). CPU = user + system time");
    println!("(getrusage) of fib's process or of the ip child.");
    if !noop.is_empty() {
        println!(
            "apply with nothing to change ({n} routes dumped and compared): {:.1} ms (median)",
            median(noop)
        );
    }
    Ok(())
}

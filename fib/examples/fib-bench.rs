//! Route programming throughput: `NetlinkFib` against `ip -batch`, in a namespace it creates.
//!
//! ```text
//! cargo run --release -p fib --example fib-bench -- [--routes 100000] [--batch 1024]
//! ```
//!
//! Installs N /32 routes via a gateway on a veth, replaces them all (new gateway), removes
//! them; then the same three phases with `ip -n <ns> -batch <file>`; prints routes/s and the
//! ratio. Needs root; touches only the namespaces it creates.

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
    /// Netlink requests per sendmsg for fib.
    #[arg(long, default_value_t = FibConfig::default().batch_size)]
    batch: usize,
    /// Also time fib with one request per write (batch size 1), to show what batching buys.
    #[arg(long)]
    unbatched: bool,
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

fn rate(n: u32, d: Duration) -> f64 {
    f64::from(n) / d.as_secs_f64()
}

fn count_ours(fib: &mut NetlinkFib) -> Result<usize> {
    Ok(fib.installed()?.len())
}

/// This process's user and system CPU time so far (/proc/self/stat utime, stime; clock ticks
/// of 10 ms on Linux), to show how much of a phase is our code and how much the kernel's.
fn cpu_times() -> (Duration, Duration, Duration) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let tick = |i: usize| Duration::from_millis(10 * f.get(i).copied().unwrap_or(0));
    // utime, stime, and cutime + cstime (waited-for children, i.e. `ip -batch`).
    (tick(11), tick(12), tick(13) + tick(14))
}

/// Wall-clock and CPU time of one phase. The CPU time (user + system, the kernel's route
/// processing included since it runs in the caller's syscalls) is the fairer comparison on a
/// busy machine, where the wall clock also counts time spent waiting for a core.
#[derive(Clone, Copy)]
struct Timing {
    wall: Duration,
    cpu: Duration,
}

/// Times one FIB call and checks that it wrote `expect_writes` routes without failures.
fn timed(
    fib: &mut NetlinkFib,
    expect_writes: usize,
    call: impl FnOnce(&mut NetlinkFib) -> Result<ApplyReport, FibError>,
) -> Result<Timing> {
    let started = Instant::now();
    let (u0, s0, _) = cpu_times();
    let report = call(fib)?;
    let took = started.elapsed();
    let (u1, s1, _) = cpu_times();
    tracing::info!(
        wall_ms = took.as_millis() as u64,
        user_ms = (u1 - u0).as_millis() as u64,
        sys_ms = (s1 - s0).as_millis() as u64,
        writes = report.writes(),
        "phase"
    );
    if let Some(first) = report.failed.first() {
        bail!("{} routes failed, first: {first}", report.failed.len());
    }
    ensure!(
        report.writes() == expect_writes,
        "expected {expect_writes} writes, report says {report:?}"
    );
    Ok(Timing {
        wall: took,
        cpu: (u1 - u0) + (s1 - s0),
    })
}

fn ip_batch(ns: &Netns, verb: &str, n: u32, gw: Option<Ipv4Addr>) -> Result<Timing> {
    let path = std::env::temp_dir().join(format!("fib-bench-{}-{verb}.batch", std::process::id()));
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for i in 0..n {
            match gw {
                Some(gw) => writeln!(f, "route {verb} {}/32 via {gw} proto 80", destination(i))?,
                None => writeln!(f, "route {verb} {}/32 proto 80", destination(i))?,
            }
        }
    }
    let started = Instant::now();
    let (_, _, c0) = cpu_times();
    let out = Command::new("ip")
        .args(["-n", ns.name(), "-batch"])
        .arg(&path)
        .output()
        .context("running ip -batch")?;
    let took = started.elapsed();
    let (_, _, c1) = cpu_times();
    let _ = std::fs::remove_file(&path);
    if !out.status.success() {
        bail!("ip -batch {verb}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(Timing {
        wall: took,
        cpu: c1 - c0,
    })
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
    let mut fib = NetlinkFib::in_namespace(ns.path(), config)?;
    let nu = n as usize;

    println!(
        "{n} IPv4 /32 routes via a veth gateway, namespace {}",
        ns.name()
    );

    // Hot path: replace()/delete(), no dump. Route lists are built before the clock starts.
    let (a, b) = (routes(n, GW_A), routes(n, GW_B));
    let keys = a.iter().map(Route::key).collect::<Vec<_>>();
    let install = timed(&mut fib, nu, |f| f.replace(a))?;
    ensure!(count_ours(&mut fib)? == nu);
    let replace = timed(&mut fib, nu, |f| f.replace(b))?;
    ensure!(count_ours(&mut fib)? == nu);
    let remove = timed(&mut fib, nu, |f| f.delete(keys))?;
    ensure!(count_ours(&mut fib)? == 0);

    // Level-triggered path: apply() = dump of our routes + diff + writes.
    let (a, a2, b) = (routes(n, GW_A), routes(n, GW_A), routes(n, GW_B));
    let a_install = timed(&mut fib, nu, |f| f.apply(a))?;
    ensure!(count_ours(&mut fib)? == nu);
    let a_noop = timed(&mut fib, 0, |f| f.apply(a2))?;
    let a_replace = timed(&mut fib, nu, |f| f.apply(b))?;
    ensure!(count_ours(&mut fib)? == nu);
    let a_remove = timed(&mut fib, nu, |f| f.apply(vec![]))?;
    ensure!(count_ours(&mut fib)? == 0);

    let ip_add = ip_batch(&ns, "add", n, Some(GW_A))?;
    ensure!(
        count_ours(&mut fib)? == nu,
        "ip -batch add left a different count"
    );
    let ip_replace = ip_batch(&ns, "replace", n, Some(GW_B))?;
    let ip_del = ip_batch(&ns, "del", n, None)?;
    ensure!(
        count_ours(&mut fib)? == 0,
        "ip -batch del left routes behind"
    );

    let phases = [
        ("install", install, a_install, ip_add),
        ("replace", replace, a_replace, ip_replace),
        ("remove", remove, a_remove, ip_del),
    ];
    println!();
    println!(
        "{:<8} {:>13} {:>6} {:>6} | {:>13} {:>6} {:>6} | {:>13}",
        "", "hot path", "ratio", "ratio", "apply", "ratio", "ratio", "ip -batch"
    );
    println!(
        "{:<8} {:>13} {:>6} {:>6} | {:>13} {:>6} {:>6} | {:>13}",
        "phase", "routes/s", "wall", "cpu", "routes/s", "wall", "cpu", "routes/s"
    );
    let ratio = |ip: Duration, ours: Duration| ip.as_secs_f64() / ours.as_secs_f64().max(1e-3);
    let row = |name: &str, hot: Timing, apply: Timing, ip: Timing, k: u32| {
        println!(
            "{:<8} {:>13.0} {:>5.1}x {:>5.1}x | {:>13.0} {:>5.1}x {:>5.1}x | {:>13.0}",
            name,
            rate(k, hot.wall),
            ratio(ip.wall, hot.wall),
            ratio(ip.cpu, hot.cpu),
            rate(k, apply.wall),
            ratio(ip.wall, apply.wall),
            ratio(ip.cpu, apply.cpu),
            rate(k, ip.wall),
        )
    };
    for (name, hot, apply, ip) in phases {
        row(name, hot, apply, ip, n);
    }
    let total = |f: fn(&(&str, Timing, Timing, Timing)) -> Timing| Timing {
        wall: phases.iter().map(|p| f(p).wall).sum(),
        cpu: phases.iter().map(|p| f(p).cpu).sum(),
    };
    row("all", total(|p| p.1), total(|p| p.2), total(|p| p.3), 3 * n);
    println!();
    println!("replace/delete: the incremental hot path (no dump); apply: full reconcile (dump of");
    println!("our routes + diff + writes); ratio: ip -batch time / fib time, by wall clock and by");
    println!("CPU time (user + system; 10 ms resolution).");
    println!(
        "apply with nothing to change ({n} routes dumped and compared): {:.1} ms",
        a_noop.wall.as_secs_f64() * 1e3
    );

    if args.unbatched {
        let mut one = NetlinkFib::in_namespace(
            ns.path(),
            FibConfig {
                batch_size: 1,
                ..FibConfig::default()
            },
        )?;
        let a = routes(n, GW_A);
        let keys = a.iter().map(Route::key).collect::<Vec<_>>();
        let t = timed(&mut one, nu, |f| f.replace(a))?;
        let d = timed(&mut one, nu, |f| f.delete(keys))?;
        println!(
            "\nfib with 1 request per write: install {:.0} routes/s, remove {:.0} routes/s",
            rate(n, t.wall),
            rate(n, d.wall)
        );
    }
    Ok(())
}

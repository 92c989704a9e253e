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

/// Times one FIB call and checks that it wrote `expect_writes` routes without failures.
fn timed(
    fib: &mut NetlinkFib,
    expect_writes: usize,
    call: impl FnOnce(&mut NetlinkFib) -> Result<ApplyReport, FibError>,
) -> Result<Duration> {
    let started = Instant::now();
    let report = call(fib)?;
    let took = started.elapsed();
    if let Some(first) = report.failed.first() {
        bail!("{} routes failed, first: {first}", report.failed.len());
    }
    ensure!(
        report.writes() == expect_writes,
        "expected {expect_writes} writes, report says {report:?}"
    );
    Ok(took)
}

fn ip_batch(ns: &Netns, verb: &str, n: u32, gw: Option<Ipv4Addr>) -> Result<Duration> {
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
    let out = Command::new("ip")
        .args(["-n", ns.name(), "-batch"])
        .arg(&path)
        .output()
        .context("running ip -batch")?;
    let took = started.elapsed();
    let _ = std::fs::remove_file(&path);
    if !out.status.success() {
        bail!("ip -batch {verb}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(took)
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
        "{:<9} {:>16} {:>7} {:>16} {:>7} {:>15}",
        "phase", "replace/delete/s", "ratio", "apply routes/s", "ratio", "ip -batch rt/s"
    );
    let row = |name: &str, hot: Duration, apply: Duration, ip: Duration, k: u32| {
        println!(
            "{:<9} {:>16.0} {:>6.1}x {:>16.0} {:>6.1}x {:>15.0}",
            name,
            rate(k, hot),
            ip.as_secs_f64() / hot.as_secs_f64(),
            rate(k, apply),
            ip.as_secs_f64() / apply.as_secs_f64(),
            rate(k, ip),
        )
    };
    for (name, hot, apply, ip) in phases {
        row(name, hot, apply, ip, n);
    }
    let hot: Duration = phases.iter().map(|p| p.1).sum();
    let apply: Duration = phases.iter().map(|p| p.2).sum();
    let ip: Duration = phases.iter().map(|p| p.3).sum();
    row("all", hot, apply, ip, 3 * n);
    println!();
    println!("replace/delete: the incremental hot path (no dump); apply: full reconcile (dump of");
    println!("our routes + diff + writes); ratio: ip -batch time / fib time.");
    println!(
        "apply with nothing to change ({n} routes dumped and compared): {:.1} ms",
        a_noop.as_secs_f64() * 1e3
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
            rate(n, t),
            rate(n, d)
        );
    }
    Ok(())
}

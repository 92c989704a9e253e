//! `routerd`: the node daemon (see [`agent::daemon`]). Settings come from flags, `ROUTERD_*`
//! environment variables and an optional TOML file ([`agent::settings`]); a start-up failure
//! ends the process with one line on stderr and exit status 1.

use std::time::Duration;

use std::sync::Arc;

use agent::daemon::{run, DaemonConfig, LogSeverityControl};
use agent::settings::{LogFormat, Settings, SettingsError};
use anyhow::{Context, Result};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The longest the first full FIB reconcile waits for sessions after start-up, unless
/// `ROUTERD_FIB_SETTLE` (seconds, e.g. `2` or `2s`) says otherwise.
const DEFAULT_FIB_SETTLE: Duration = Duration::from_secs(30);

/// How long a node must be gone (its Node record deleted) before its blocks, addresses and
/// endpoints are released, unless `ROUTERD_NODE_GC_GRACE` (seconds) says otherwise.
const DEFAULT_NODE_GC_GRACE: Duration = Duration::from_secs(300);

/// A duration in seconds (`2` or `2s`) from the environment variable `name`.
fn seconds_from_env(name: &str, default: Duration) -> Result<Duration> {
    match std::env::var(name) {
        Ok(text) if !text.is_empty() => {
            let secs: u64 = text
                .trim_end_matches('s')
                .parse()
                .with_context(|| format!("{name}: {text:?} is not a number of seconds"))?;
            Ok(Duration::from_secs(secs))
        }
        _ => Ok(default),
    }
}

fn config() -> Result<(DaemonConfig, tracing::Level, bool, LogFormat)> {
    let settings = match Settings::from_process() {
        Ok(s) => s,
        Err(SettingsError::Usage(e)) => e.exit(),
        Err(e) => return Err(e.into()),
    };
    let internal_ips = if settings.needs_internal_ips() {
        internal_ips(&settings.datastore, &settings.node_name)?
    } else {
        Vec::new()
    };
    let node_ipv4 = settings.node_ipv4_with(&internal_ips)?;
    let node_ipv6 = settings.node_ipv6_with(&internal_ips)?;
    Ok((
        DaemonConfig {
            node_name: settings.node_name.clone(),
            node_ipv4,
            node_ipv6,
            as_number: settings.as_number,
            datastore: settings.datastore.clone(),
            control_socket: settings.control_socket.clone(),
            health_listen: settings.health_listen,
            metrics_listen: settings.metrics_listen,
            route_protocol: settings.route_protocol,
            fib_settle: seconds_from_env("ROUTERD_FIB_SETTLE", DEFAULT_FIB_SETTLE)?,
            node_gc_grace: seconds_from_env("ROUTERD_NODE_GC_GRACE", DEFAULT_NODE_GC_GRACE)?,
            shutdown_drain: settings.shutdown_drain_time,
            log_severity: None,
        },
        settings.log_level.as_tracing(),
        settings.log_level_from_datastore,
        settings.log_format,
    ))
}

/// The node's `InternalIP`s, for `kubernetes-internal-ip`: its Node record's
/// `spec.addresses` of type `InternalIP`, which the Kubernetes datastore fills from the
/// Kubernetes Node's `status.addresses` (Calico's method reads the same).
fn internal_ips(address: &str, node: &str) -> Result<Vec<std::net::IpAddr>> {
    let ds = datastore::open(address)
        .with_context(|| format!("kubernetes-internal-ip: opening the datastore {address}"))?;
    let record = ds.get("Node", node).with_context(|| {
        format!(
            "kubernetes-internal-ip: reading Node {node} (with the Kubernetes datastore it \
             is the Kubernetes Node the kubelet registers)"
        )
    })?;
    let addresses = record.value["spec"]["addresses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Ok(addresses
        .iter()
        .filter(|a| a["type"] == "InternalIP")
        .filter_map(|a| a["address"].as_str()?.parse().ok())
        .collect())
}

/// What an operator should do about the usual start-up failures, found by the OS error at
/// the bottom of the chain.
fn hint(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut current = Some(e);
    while let Some(err) = current {
        let kind = err
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| {
                err.downcast_ref::<nix::Error>()
                    .map(|n| std::io::Error::from(*n).kind())
            });
        match kind {
            Some(std::io::ErrorKind::PermissionDenied) => {
                return Some("routerd needs root, or CAP_NET_ADMIN and CAP_NET_BIND_SERVICE")
            }
            Some(std::io::ErrorKind::AddrInUse) => {
                return Some(
                    "another BGP speaker (BIRD, FRR, a second routerd) holds the port on this node",
                )
            }
            _ => {}
        }
        current = err.source();
    }
    None
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            // Without signal handlers the daemon still runs; it just cannot stop cleanly.
            std::future::pending::<()>().await;
        }
    }
}

fn main() {
    // `routerd health --ready|--live`: the DaemonSet's exec probe (calico-node's
    // `-felix-ready` / `-felix-live`), asking the running daemon's health server.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("health") {
        std::process::exit(agent::health::probe_command(&args[2..]));
    }
    let (mut config, level, from_datastore, format) = match config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("routerd: {e:#}");
            std::process::exit(1);
        }
    };
    // ROUTERD_LOG (a full tracing filter) wins; else the level set by a flag, variable or
    // file; else the BGPConfiguration's logSeverityScreen, applied live through a reload
    // handle.
    let custom = EnvFilter::try_from_env("ROUTERD_LOG").ok();
    let datastore_governs = from_datastore && custom.is_none();
    let filter = custom.unwrap_or_else(|| EnvFilter::new(level.as_str().to_lowercase()));
    let (filter, reload) = tracing_subscriber::reload::Layer::new(filter);
    let json = format == LogFormat::Json;
    tracing_subscriber::registry()
        .with(filter)
        .with((!json).then(|| {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colours only for a terminal: logs go to files and `kubectl logs`.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        }))
        .with(json.then(|| {
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr)
        }))
        .init();
    if datastore_governs {
        config.log_severity = Some(LogSeverityControl(Arc::new(
            move |level: tracing::Level| {
                let _ = reload.modify(|f| *f = EnvFilter::new(level.as_str().to_lowercase()));
            },
        )));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("routerd: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(config, shutdown_signal())) {
        match hint(&e) {
            Some(h) => eprintln!("routerd: {e} ({h})"),
            None => eprintln!("routerd: {e}"),
        }
        std::process::exit(1);
    }
}

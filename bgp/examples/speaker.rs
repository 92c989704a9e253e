//! A standalone BGP speaker: `cargo run --release -p bgp --example speaker -- <file.toml>`.
//!
//! Peers with the routers in the file, originates its prefixes, and logs session changes.
//! See `bgp::speaker::config` for the file format. Stops on SIGINT or SIGTERM, closing every
//! session with Cease/2 (Administrative Shutdown).

use std::path::PathBuf;
use std::process::ExitCode;

use bgp::speaker::{self, config::SpeakerConfig};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: speaker <config.toml>");
        return ExitCode::from(2);
    };
    let config = match SpeakerConfig::from_file(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("speaker: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("speaker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let (handle, core) = match speaker::start(config, None).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("speaker: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("speaker: cannot watch SIGTERM: {e}");
                    return ExitCode::FAILURE;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = core => {
                eprintln!("speaker: core stopped unexpectedly");
                return ExitCode::FAILURE;
            }
        }
        tracing::info!("shutting down");
        handle.shutdown().await;
        ExitCode::SUCCESS
    })
}

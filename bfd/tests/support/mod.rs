//! Runs our BFD driver inside a lab namespace and waits on its sessions from the test thread.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bfd::{BfdDriver, BfdHandle, SessionStatus, State};
use lab::Netns;
use tokio::sync::watch;

/// Log to stderr (shown for failing tests), `RUST_LOG` or info.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "bfd=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A per-test scratch directory under the target directory.
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

/// Our driver running on a thread of its own that entered `ns` (setns(2) on the namespace's
/// file) before building its runtime, so every socket the driver opens, then and later,
/// lives in `ns`. The test thread talks to it through the handle on a runtime of its own.
pub struct NsDriver {
    pub handle: BfdHandle,
    pub rt: tokio::runtime::Runtime,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsDriver {
    pub fn start(ns: &Netns, port: u16) -> Result<NsDriver> {
        let path = ns.path();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = (|| -> Result<tokio::runtime::Runtime> {
                let f = std::fs::File::open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
                Ok(tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?)
            })();
            let rt = match rt {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                match BfdDriver::start(port).await {
                    Ok((handle, task)) => {
                        let _ = tx.send(Ok(handle));
                        let _ = task.await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.into()));
                    }
                }
            });
        });
        let handle = rx
            .recv_timeout(Duration::from_secs(10))
            .context("the driver thread did not start")??;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(NsDriver {
            handle,
            rt,
            thread: Some(thread),
        })
    }

    pub fn add(
        &self,
        peer: IpAddr,
        local: IpAddr,
        config: bfd::SessionConfig,
    ) -> Result<watch::Receiver<SessionStatus>> {
        Ok(self
            .rt
            .block_on(self.handle.add_session(peer, local, config))?)
    }

    /// Waits until the session's state is `state`, for at most `timeout`; returns how long
    /// it took (measured from the call).
    pub fn wait_state(
        &self,
        rx: &mut watch::Receiver<SessionStatus>,
        state: State,
        timeout: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        let r = self.rt.block_on(async {
            tokio::time::timeout(timeout, rx.wait_for(|s| s.state == state))
                .await
                .map(|r| r.map(|_| ()))
        });
        match r {
            Ok(Ok(_)) => Ok(start.elapsed()),
            Ok(Err(_)) => bail!("the driver stopped"),
            Err(_) => bail!(
                "timed out after {timeout:?} waiting for {state}; status {:?}",
                *rx.borrow()
            ),
        }
    }
}

impl Drop for NsDriver {
    fn drop(&mut self) {
        self.rt.block_on(self.handle.shutdown());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("address literal")
}

/// Two fresh namespaces joined by a veth `eth0`: ours at 10.0.0.1/24 and fd00::1/64, the
/// peer's at 10.0.0.2/24 and fd00::2/64. The peer's IPv6 addresses survive its link being
/// set down (Linux drops them otherwise), so a cut and a heal need no re-addressing.
pub fn pair(tag: &str) -> (Netns, Netns) {
    let ours = Netns::new(&format!("{tag}a")).unwrap();
    let theirs = Netns::new(&format!("{tag}b")).unwrap();
    lab::veth(&ours, "eth0", &theirs, "eth0").unwrap();
    for (ns, v4, v6) in [
        (&ours, "10.0.0.1/24", "fd00::1/64"),
        (&theirs, "10.0.0.2/24", "fd00::2/64"),
    ] {
        ns.ip(&["addr", "add", v4, "dev", "eth0"]).unwrap();
        ns.ip(&["addr", "add", v6, "dev", "eth0", "nodad"]).unwrap();
    }
    theirs
        .exec(&["sysctl", "-qw", "net.ipv6.conf.eth0.keep_addr_on_down=1"])
        .unwrap();
    (ours, theirs)
}

/// Runs `f` on a thread that entered `ns` first, and returns its result.
pub fn in_netns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = ns.path();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

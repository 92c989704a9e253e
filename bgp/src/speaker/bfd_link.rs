//! BFD for BGP sessions (RFC 5882): the link between the speaker's core and the [`bfd`]
//! driver.
//!
//! A peer with `bfd` configured gets one single-hop BFD session (RFC 5881) from its
//! `local_address`. The rules the core applies (`Core::on_bfd` in the speaker):
//!
//! - BGP starts only once BFD is Up, and a BFD session that goes Down takes the BGP session
//!   down at once with Cease/10 "BFD Down" (RFC 9384, as BIRD sends it), its routes leaving
//!   the RIB and the FIB; it stays down until BFD is Up again. BIRD and FRR wait for the
//!   hold timer without BFD; this is what lets a node whose link died be noticed in
//!   detect-multiplier x interval (0.9 s at 300 ms x 3) instead of 90 s.
//! - A peer that signals AdminDown is not a failure (RFC 5882 §3.2): the driver reports
//!   Down with diagnostic "Neighbor Signaled Session Down" and remote state AdminDown, and
//!   the BGP session is left to BGP.
//!
//! The driver binds UDP 3784 (or the configured port) the first time a peer asks for BFD,
//! so a speaker without BFD peers opens no BFD socket. One task here serialises the
//! driver's operations in the order the core issued them (an add after a remove of the same
//! peer must not overtake it) and forwards each session's status changes to the core as
//! events.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::warn;

use super::Event;

/// A peer's BFD settings (the speaker's `[peer.bfd]`; Calico Enterprise's
/// `minimumRecvInterval`, `minimumSendInterval`, `multiplier`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BfdConfig {
    /// Required Min RX Interval, milliseconds: how often we can take the peer's packets.
    #[serde(default = "default_interval")]
    pub min_rx_ms: u32,
    /// Desired Min TX Interval, milliseconds: how often we would like to send.
    #[serde(default = "default_interval")]
    pub min_tx_ms: u32,
    /// Detect Mult: packets missed before the session is declared down.
    #[serde(default = "default_multiplier")]
    pub multiplier: u8,
}

fn default_interval() -> u32 {
    300
}
fn default_multiplier() -> u8 {
    3
}

impl Default for BfdConfig {
    /// 300 ms x 3: FRR's defaults, detection within 0.9 s.
    fn default() -> Self {
        BfdConfig {
            min_rx_ms: default_interval(),
            min_tx_ms: default_interval(),
            multiplier: default_multiplier(),
        }
    }
}

impl BfdConfig {
    /// The driver's session configuration; `Err` says what is out of range.
    pub fn session_config(&self) -> Result<bfd::SessionConfig, String> {
        bfd::SessionConfig::new(
            Duration::from_millis(self.min_tx_ms.into()),
            Duration::from_millis(self.min_rx_ms.into()),
            self.multiplier,
        )
        .map_err(|e| e.to_string())
    }
}

/// What the core asks of BFD, in order.
#[derive(Debug)]
enum BfdOp {
    Add {
        peer: IpAddr,
        local: IpAddr,
        config: bfd::SessionConfig,
    },
    Remove {
        peer: IpAddr,
    },
}

/// The core's side of the link.
#[derive(Debug, Clone)]
pub(super) struct BfdLink {
    ops: mpsc::UnboundedSender<BfdOp>,
}

impl BfdLink {
    /// Starts the task that owns the driver (started on first use, on UDP `port`).
    pub(super) fn start(port: u16, events: mpsc::Sender<Event>) -> BfdLink {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(port, rx, events));
        BfdLink { ops: tx }
    }

    /// Starts (or reconfigures) the session with `peer`; its status arrives as
    /// [`Event::Bfd`].
    pub(super) fn add(&self, peer: IpAddr, local: IpAddr, config: bfd::SessionConfig) {
        let _ = self.ops.send(BfdOp::Add {
            peer,
            local,
            config,
        });
    }

    /// Ends the session with `peer` (AdminDown first, so the peer does not see a failure).
    pub(super) fn remove(&self, peer: IpAddr) {
        let _ = self.ops.send(BfdOp::Remove { peer });
    }
}

async fn run(port: u16, mut ops: mpsc::UnboundedReceiver<BfdOp>, events: mpsc::Sender<Event>) {
    let mut driver: Option<bfd::BfdHandle> = None;
    let mut watchers: HashMap<IpAddr, tokio::task::AbortHandle> = HashMap::new();
    while let Some(op) = ops.recv().await {
        match op {
            BfdOp::Add {
                peer,
                local,
                config,
            } => {
                if driver.is_none() {
                    match bfd::BfdDriver::start(port).await {
                        Ok((handle, _task)) => driver = Some(handle),
                        Err(e) => {
                            warn!(peer = %peer, error = %e, "cannot start BFD");
                            let _ = events
                                .send(Event::Bfd {
                                    peer,
                                    status: Err(format!("cannot start BFD: {e}")),
                                })
                                .await;
                            continue;
                        }
                    }
                }
                let Some(handle) = &driver else { continue };
                if let Some(w) = watchers.remove(&peer) {
                    w.abort();
                }
                match handle.add_session(peer, local, config).await {
                    Ok(mut rx) => {
                        let events = events.clone();
                        let watcher = tokio::spawn(async move {
                            loop {
                                let status = *rx.borrow_and_update();
                                let event = Event::Bfd {
                                    peer,
                                    status: Ok(status),
                                };
                                if events.send(event).await.is_err() || rx.changed().await.is_err()
                                {
                                    return;
                                }
                            }
                        });
                        watchers.insert(peer, watcher.abort_handle());
                    }
                    Err(e) => {
                        warn!(peer = %peer, error = %e, "BFD session refused");
                        let _ = events
                            .send(Event::Bfd {
                                peer,
                                status: Err(format!("BFD: {e}")),
                            })
                            .await;
                    }
                }
            }
            BfdOp::Remove { peer } => {
                if let Some(w) = watchers.remove(&peer) {
                    w.abort();
                }
                if let Some(handle) = &driver {
                    let _ = handle.remove_session(peer).await;
                }
            }
        }
    }
    // The core is gone (shutdown): every peer hears AdminDown, not a failure.
    if let Some(handle) = driver {
        handle.shutdown().await;
    }
}

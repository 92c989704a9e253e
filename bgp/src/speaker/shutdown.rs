//! How the speaker stops: a graceful restart where the peer keeps our routes, else a
//! graceful shutdown (RFC 8326) that lets traffic move away before the session closes.
//!
//! For each peer, at a [`SpeakerHandle::shutdown_for_restart`](super::SpeakerHandle):
//!
//! - **Graceful restart negotiated** (we advertise a Restart Time and the peer advertised
//!   the capability on the Established session): the TCP connection is closed without a
//!   NOTIFICATION, which starts the peer's restart procedure (RFC 4724 §4.2): it keeps our
//!   routes, stale, for the Restart Time while our kernel keeps forwarding.
//! - **Otherwise**, the peer is about to lose our routes. With a drain time configured
//!   (`shutdown_drain_time`), every route we advertise to it is first re-advertised with the
//!   GRACEFUL_SHUTDOWN community 65535:0 (RFC 8326 §4.1), so that the peer's routers move
//!   to other paths (they give such routes LOCAL_PREF 0, §4.2) while ours still forward;
//!   after the drain time the session closes with Cease/2. Without a drain time it closes at
//!   once, as BIRD and FRR do by default.
//!
//! [`SpeakerHandle::shutdown`](super::SpeakerHandle::shutdown) (not for a restart) drains the
//! same way and then closes every session with Cease/2.
//!
//! The core keeps running during the drain (keepalives, UPDATEs, the control socket), so a
//! drain longer than the hold time does not end the sessions by hold-timer expiry first.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::info;

use crate::fsm::{Input, StopReason};
use crate::packet::Community;
use crate::rib;

use super::{Core, Outgoing};

/// A shutdown waiting for its drain time to pass.
#[derive(Debug)]
pub(super) struct Drain {
    pub(super) until: Instant,
    graceful: bool,
    done: oneshot::Sender<()>,
}

impl Core {
    /// Whether the peer at `addr` keeps our routes across a restart: both sides advertised
    /// Graceful Restart on the Established session (RFC 4724 §4.2).
    fn keeps_routes_across_restart(&self, addr: IpAddr) -> bool {
        self.peers.get(&addr).is_some_and(|p| {
            p.config.restart_time().is_some() && p.established.is_some() && p.peer_restart.is_some()
        })
    }

    /// Starts a shutdown. Returns `true` when the core should keep running: the drain time
    /// of [`Drain`] is running, and [`Core::drain_over`] finishes the shutdown when it ends.
    /// Returns `false` once the shutdown is complete (no drain needed).
    pub(super) async fn begin_drain(&mut self, graceful: bool, done: oneshot::Sender<()>) -> bool {
        if self.draining.is_some() {
            // A second request while draining: stop now.
            self.finish_shutdown(graceful, done).await;
            return false;
        }
        let drain = Duration::from_secs(self.config.shutdown_drain_time);
        let drained = if drain.is_zero() {
            Vec::new()
        } else {
            self.announce_graceful_shutdown(graceful)
        };
        if drained.is_empty() {
            self.finish_shutdown(graceful, done).await;
            return false;
        }
        info!(peers = ?drained, drain_secs = drain.as_secs(),
            "graceful shutdown: routes re-advertised with GRACEFUL_SHUTDOWN, closing after the drain time");
        self.draining = Some(Drain {
            until: Instant::now() + drain,
            graceful,
            done,
        });
        true
    }

    /// Re-advertises what we send each Established peer that will lose our routes, with
    /// GRACEFUL_SHUTDOWN added (RFC 8326 §4.1). Returns those peers.
    fn announce_graceful_shutdown(&mut self, graceful: bool) -> Vec<IpAddr> {
        let addrs: Vec<IpAddr> = self
            .peers
            .iter()
            .filter(|(_, p)| p.established.is_some())
            .map(|(a, _)| *a)
            .filter(|a| !(graceful && self.keeps_routes_across_restart(*a)))
            .collect();
        let mut drained = Vec::new();
        for addr in addrs {
            let Some(peer) = self.peers.get(&addr) else {
                continue;
            };
            let export = rib::ExportPolicy {
                filter: peer.policy.export.clone(),
                communities: vec![Community::GRACEFUL_SHUTDOWN],
                ..rib::ExportPolicy::default()
            };
            match self.rib.set_export_policy(peer.id, export) {
                Ok(out) => {
                    self.dispatch(out);
                    drained.push(addr);
                }
                Err(e) => tracing::warn!(peer = %addr, error = %e, "graceful shutdown export"),
            }
        }
        drained
    }

    /// Called after every turn of the core's loop: finishes a shutdown whose drain time is
    /// over. Returns `true` when the core must end.
    pub(super) async fn drain_over(&mut self, now: Instant) -> bool {
        match self.draining.take() {
            Some(d) if d.until <= now => {
                self.finish_shutdown(d.graceful, d.done).await;
                true
            }
            other => {
                self.draining = other;
                false
            }
        }
    }

    async fn finish_shutdown(&mut self, graceful: bool, done: oneshot::Sender<()>) {
        self.shutdown(graceful).await;
        let _ = done.send(());
    }

    /// Closes every session (see the module docs) and stops listening.
    pub(super) async fn shutdown(&mut self, graceful: bool) {
        let addrs: Vec<IpAddr> = self.peers.keys().copied().collect();
        for a in addrs {
            if graceful && self.keeps_routes_across_restart(a) {
                // No NOTIFICATION: a NOTIFICATION ends the peer's graceful restart
                // procedure (RFC 4724 §4.2), a bare TCP close starts it.
                if let Some(peer) = self.peers.get_mut(&a) {
                    for (_, c) in peer.connections.drain() {
                        let _ = c.writer.send(Outgoing::Close);
                        c.reader.abort();
                    }
                }
                info!(peer = %a, "closing for a graceful restart");
            } else {
                self.feed(a, Input::ManualStop(StopReason::AdministrativeShutdown));
            }
        }
        for task in &self.accept_tasks {
            task.abort();
        }
        self.listener_fds.clear();
        // Give the writers a moment to flush their NOTIFICATIONs.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

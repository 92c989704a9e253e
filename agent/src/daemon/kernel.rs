//! The kernel side of the daemon: the routes it wants ([`DesiredRoutes`]), the overlay's
//! devices and the FIB owner, fed by the loop in `run`. Glue: which route a prefix gets is
//! decided in [`super::desired`] and [`super::routes`], how it is written in the fib crate.

use std::time::Instant;

use encap::{Overlay, TunnelAddresses};
use fib::{FibCommand, FibHandle, Route};
use ipnet::IpNet;
use tracing::{debug, warn};

use super::cluster::ClusterView;
use super::desired::{DesiredRoutes, RouteContext, RouteDelta};
use super::routes::{pool_encap, workload_routes};
use crate::health::HealthState;
use crate::host_addresses::connected_networks;
use crate::status::FibStatus;

/// The routes of this node in the kernel, and the tunnels they go over.
#[derive(Debug)]
pub(super) struct KernelRoutes {
    desired: DesiredRoutes,
    overlay: Overlay,
    fib: FibHandle,
    state: FibState,
    node: String,
    /// The view changed since the node routes and the overlay were last computed.
    view_changed: bool,
}

impl KernelRoutes {
    /// Starts with the node's own routes (the blackholes of its blocks, its workloads) in
    /// the kernel at once; learned routes follow as the sessions bring them.
    pub async fn start(
        fib: FibHandle,
        overlay: Overlay,
        view: &ClusterView,
        node: &str,
        blocks: &[IpNet],
        health: &HealthState,
    ) -> Self {
        let context = RouteContext::new(view, node, blocks, &connected_networks());
        let mut kernel = KernelRoutes {
            desired: DesiredRoutes::new(context),
            overlay,
            fib,
            state: FibState::default(),
            node: node.to_string(),
            view_changed: true,
        };
        kernel
            .desired
            .set_node_routes(node_routes(blocks, view, node));
        let delta = kernel.desired.take_delta();
        kernel.state.send(&kernel.fib, health, delta).await;
        kernel
    }

    /// Folds in a batch of the speaker's best-path changes (written at the next [`Self::flush`]).
    pub fn best_changed(&mut self, batch: Vec<bgp::rib::BestPathChange>) {
        self.desired.apply_best(batch);
    }

    /// The cluster view was read again: node routes and overlay are recomputed at the next flush.
    pub fn view_changed(&mut self) {
        self.view_changed = true;
    }

    pub fn set_tunnel_addresses(&mut self, tunnels: &TunnelAddresses) {
        self.overlay.set_tunnel_addresses(tunnels);
    }

    /// Brings the kernel up to date with everything folded in since the last flush. After
    /// the sessions `settled`, the first flush also reconciles, which removes what an earlier
    /// run left behind. Returns false when the overlay could not be applied (retry later).
    pub async fn flush(
        &mut self,
        view: &ClusterView,
        blocks: &[IpNet],
        settled: bool,
        health: &HealthState,
    ) -> bool {
        let mut done = true;
        // Costs nothing unless the pools, the nodes, our blocks or the connected subnets
        // changed; the best paths were folded in as they came.
        self.desired.set_context(RouteContext::new(
            view,
            &self.node,
            blocks,
            &connected_networks(),
        ));
        if self.view_changed {
            self.desired
                .set_node_routes(node_routes(blocks, view, &self.node));
        }
        if self.view_changed || self.desired.overlay_dirty() {
            let pools: Vec<encap::PoolEncap> = view.ip_pools().iter().map(pool_encap).collect();
            match self.overlay.apply(&pools, &self.desired.remotes()).await {
                Ok(o) => {
                    for u in &o.unroutable {
                        debug!(?u, "block not routable yet");
                    }
                    self.desired.set_overlay_routes(o.routes);
                    self.view_changed = false;
                }
                Err(e) => {
                    // The overlay's earlier routes stay until it succeeds.
                    warn!(error = %e, "tunnel update failed; retrying");
                    done = false;
                }
            }
        }
        let delta = self.desired.take_delta();
        self.state.send(&self.fib, health, delta).await;
        if settled && !self.state.full_applied {
            // Every change went to the FIB, so its desired set is ours: this first reconcile
            // removes what an earlier run left and nobody wants any more (a full apply would
            // do the same, from a copy of the whole table).
            self.state.settle(&self.fib, health).await;
        }
        done
    }

    /// Reconciles the kernel with the desired set again (drift, failed routes).
    pub async fn reconcile(&mut self, health: &HealthState) {
        self.state.reconcile(&self.fib, health).await;
    }

    pub fn status(&self) -> FibStatus {
        self.state.status(self.desired.len())
    }
}

/// Whether this namespace has an interface called `name`.
fn interface_exists(name: &str) -> bool {
    nix::net::if_::if_nametoindex(name).is_ok()
}

/// The routes this node programs for itself: its blocks blackholed (a packet for an
/// unassigned address of a block dies here instead of looping back to the fabric) and its
/// workloads' host routes.
fn node_routes(blocks: &[IpNet], view: &ClusterView, node: &str) -> Vec<Route> {
    let mut routes: Vec<Route> = blocks.iter().map(|b| Route::blackhole(*b)).collect();
    routes.extend(workload_routes(view, node, interface_exists));
    routes
}

/// The FIB calls routerd made and how they went. What is desired is
/// [`DesiredRoutes`]'s, and the fib crate's copy of it; none is kept here.
#[derive(Debug, Default)]
struct FibState {
    full_applied: bool,
    errors: u64,
    in_sync: bool,
    last_reconcile_ms: Option<u64>,
}

impl FibState {
    /// Sends the writes of `delta` (no deletion of routes of ours that routerd did not
    /// send itself: that is the first full apply's job).
    async fn send(&mut self, fib: &FibHandle, health: &HealthState, delta: RouteDelta) {
        let mut clean = true;
        if !delta.delete.is_empty() {
            clean &= self
                .call(fib, health, FibCommand::Delete(delta.delete), "delete")
                .await;
        }
        if !delta.replace.is_empty() {
            clean &= self
                .call(fib, health, FibCommand::Replace(delta.replace), "replace")
                .await;
        }
        if !clean || !self.in_sync {
            self.in_sync = clean;
        }
        health.set_fib_in_sync(self.in_sync);
    }

    /// The first reconcile after the sessions settled: our stale routes go.
    async fn settle(&mut self, fib: &FibHandle, health: &HealthState) {
        self.reconcile(fib, health).await;
        self.full_applied = true;
    }

    async fn reconcile(&mut self, fib: &FibHandle, health: &HealthState) {
        let started = Instant::now();
        let clean = self
            .call(fib, health, FibCommand::Reconcile, "reconcile")
            .await;
        self.in_sync = clean;
        self.last_reconcile_ms = Some(started.elapsed().as_millis() as u64);
        health.record_reconcile(started.elapsed());
        health.set_fib_in_sync(clean);
    }

    async fn call(
        &mut self,
        fib: &FibHandle,
        health: &HealthState,
        command: FibCommand,
        op: &'static str,
    ) -> bool {
        match fib.call(command).await {
            Ok(report) => {
                health.record_fib_ops(
                    report.added as u64,
                    report.changed as u64,
                    report.deleted as u64,
                );
                let failed = report.failed.len() as u64;
                if failed > 0 {
                    self.errors += failed;
                    health.record_fib_errors(failed);
                    for f in report.failed.iter().take(5) {
                        warn!(op, error = %f, "route refused by the kernel; will retry");
                    }
                }
                report.is_clean()
            }
            Err(e) => {
                self.errors += 1;
                health.record_fib_errors(1);
                warn!(op, error = %e, "FIB call failed");
                false
            }
        }
    }

    fn status(&self, routes: usize) -> FibStatus {
        FibStatus {
            routes: routes as u64,
            in_sync: self.in_sync,
            errors: self.errors,
            last_reconcile_ms: self.last_reconcile_ms,
        }
    }
}

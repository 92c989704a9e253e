//! `routerd`: the node daemon. It turns the datastore's intent into a running BGP speaker,
//! kernel routes and tunnels, calico-node style (confd + BIRD + felix's route programming,
//! in one process).
//!
//! Start-up, in order (each step's failure ends the daemon with one clear line):
//! 1. open the datastore and register this node's `Node` (addresses, AS);
//! 2. claim a block in each IP pool that selects the node ([`ipam::Allocator::ensure_block`]);
//! 3. compute the sessions ([`crate::peering`]) and start the speaker (listening port, the
//!    node's blocks and the service ranges as originations);
//! 4. open the FIB and the overlay; install the blackholes of our blocks.
//!
//! Then one loop: any datastore change rereads the cluster view and recomputes sessions,
//! originations and the node's own routes; best-path changes from the speaker are folded
//! into the desired kernel routes as they come ([`desired::DesiredRoutes`], work per change,
//! none per tick; the kernel side is `kernel.rs`). Only differences reach the speaker (a
//! session whose settings did not change is never reset) and the kernel (replace / delete of
//! single routes).
//!
//! Graceful restart of the forwarding plane: on SIGTERM routerd closes its sessions but
//! leaves its kernel routes in place, so pods keep their connectivity while it restarts. At
//! the next start-up it installs what it knows at once but removes stale routes of its own
//! only after its sessions have come up and converged (or after `fib_settle`), as BIRD's
//! kernel protocol does with graceful restart, so a restart never flaps a route.

pub mod cluster;
pub mod control;
pub mod desired;
pub mod feed;
pub mod handover;
mod kernel;
pub mod nat;
pub mod node_gc;
pub mod routes;
mod run;
mod services;

pub use run::{log_severity, run, DaemonConfig, DaemonError, LogSeverityControl};

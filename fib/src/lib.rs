//! Programming the kernel FIB (forwarding information base) from a desired set of routes.
//!
//! # Design
//!
//! The agent decides *what* should be routed where (its own IPAM blocks as blackholes, remote
//! blocks via the owning node, directly or over IP-in-IP / VXLAN, workload /32s to their veth)
//! and hands this crate a set of [`Route`] values. This crate makes the FIB match that set and
//! nothing else:
//!
//! * **Our routes are marked.** Every route carries one route protocol id
//!   ([`DEFAULT_PROTOCOL`] = 80 unless configured), so reading the FIB back yields exactly
//!   the routes we own; kernel, `proto static`, BIRD's and other daemons' routes are never
//!   listed, replaced on reconcile, or deleted.
//! * **Level-triggered.** [`RouteTable::apply`] takes the complete desired set, reads our routes
//!   back, and programs only the [`diff`]: missing routes added, changed ones replaced, stale
//!   ones deleted, identical ones untouched. A restarted agent applying the same set therefore
//!   causes no route flap.
//! * **Hot path.** [`RouteTable::replace`] / [`RouteTable::delete`] program single changes
//!   without reading the FIB; they also update the desired set, so the next reconcile agrees.
//! * **Per-route errors are data.** A route the kernel refuses (unreachable gateway, missing
//!   device) is reported in [`ApplyReport::failed`] as a [`RouteError`] with the route and the
//!   errno; the rest of the batch is still programmed, and the route stays desired so the
//!   next reconcile retries it. Only a broken socket or namespace is a [`FibError`].
//! * **Two implementations.** [`MemoryFib`] (shared in-memory state, for simulating many nodes
//!   in one process) and the kernel FIB over rtnetlink ([`NetlinkFib`]), which opens its socket
//!   inside a given network namespace and batches many netlink requests per `sendmsg` for
//!   throughput; routes with one next hop share kernel nexthop objects (RTA_NH_ID, an
//!   internal detail, with an inline fallback), which the kernel installs more cheaply.
//!
//! The diff is a pure function; the netlink code is a thin driver around it. Async code
//! talks to a table through [`spawn_owner`]: one thread owns it and serves [`FibCommand`]s.
//!
//! ```
//! use fib::{MemoryFib, NextHop, Route, RouteTable};
//!
//! let mut fib = MemoryFib::default();
//! let block = Route::blackhole("10.65.1.0/26".parse().unwrap());
//! let remote = Route::via(
//!     "10.65.2.0/26".parse().unwrap(),
//!     NextHop::onlink("192.168.9.2".parse().unwrap(), "tunl0"),
//! );
//! let report = fib.apply(vec![block.clone(), remote]).unwrap();
//! assert_eq!(report.added, 2);
//! // Same set again (or from a restarted agent): nothing is written.
//! let report = fib.restart().apply(vec![block]).unwrap();
//! assert_eq!((report.unchanged, report.deleted), (1, 1));
//! ```

mod error;
mod memory;
mod netlink;
mod owner;
mod route;
mod table;

pub use error::{FibError, RouteError, RouteFailure, RouteOp};
pub use memory::MemoryFib;
pub use netlink::{FibConfig, NetlinkFib};
pub use owner::{spawn_owner, FibCommand, FibHandle};
pub use route::{
    Device, InvalidRoute, NextHop, Route, RouteKey, RouteKind, DEFAULT_PROTOCOL, MAIN_TABLE,
};
pub use table::{diff, ApplyReport, RouteDiff, RouteTable};

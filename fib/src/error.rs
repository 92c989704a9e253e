//! Errors: per-route failures (reported, never fatal) and FIB-wide failures (the socket or
//! the namespace is unusable).
//!
//! The split matters to the agent: a [`RouteError`] is data in an
//! [`ApplyReport`](crate::ApplyReport) — the other routes of the same batch were still
//! programmed, and the next reconcile retries the failed one — whereas a [`FibError`] means
//! nothing could be done this round.

use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

use crate::route::{InvalidRoute, Route, RouteKey};

/// What we asked the kernel to do with a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteOp {
    /// RTM_NEWROUTE with NLM_F_CREATE | NLM_F_REPLACE (idempotent add or change).
    Replace,
    /// RTM_DELROUTE restricted to our protocol id.
    Delete,
}

impl std::fmt::Display for RouteOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RouteOp::Replace => "replace",
            RouteOp::Delete => "delete",
        })
    }
}

/// Why one route could not be programmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteFailure {
    /// The kernel refused it, e.g. ENETUNREACH for a gateway outside every connected subnet
    /// (without `onlink`), ENETDOWN for a device route whose device is not up yet (a
    /// workload's veth), ENODEV for a device that went away, EINVAL for an onlink route in a
    /// namespace whose `lo` is down.
    #[error("kernel: {0}")]
    Kernel(Errno),
    /// Refused before reaching the kernel.
    #[error("invalid route: {0}")]
    Invalid(#[from] InvalidRoute),
    /// A next hop names a device that does not exist in the FIB's namespace.
    #[error("no such device {0:?}")]
    UnknownDevice(String),
}

/// One route that failed, with what we tried and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op} {key}: {failure}")]
pub struct RouteError {
    pub op: RouteOp,
    pub key: RouteKey,
    /// The full route for a failed replace (and for a delete of a route read from the kernel).
    pub route: Option<Route>,
    pub failure: RouteFailure,
}

impl RouteError {
    /// The kernel's errno, if the kernel is who refused.
    pub fn errno(&self) -> Option<Errno> {
        match self.failure {
            RouteFailure::Kernel(e) => Some(e),
            _ => None,
        }
    }
}

/// The FIB as a whole is unusable this round (socket, namespace, malformed kernel answer).
#[derive(Debug, thiserror::Error)]
pub enum FibError {
    #[error("netlink socket ({context}): {source}")]
    Socket {
        context: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("entering network namespace {path:?}: {source}")]
    Namespace {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("malformed netlink message from the kernel: {0}")]
    Decode(String),
    #[error("kernel refused a {what} dump: {errno}")]
    Dump { what: &'static str, errno: Errno },
    #[error("a {what} dump was interrupted by concurrent changes {attempts} times in a row")]
    DumpInterrupted { what: &'static str, attempts: u32 },
    /// The FIB owner thread is gone (it panicked, or was never started).
    #[error("the FIB owner thread is gone")]
    OwnerGone,
}

//! The kernel FIB through rtnetlink: [`NetlinkFib`].
//!
//! A thin driver: [`codec`] encodes routes as `RouteMessage`s (built with rtnetlink's
//! `RouteMessageBuilder`, through the `rtnetlink::packet_route` re-export) and decodes dump
//! entries straight from the wire, [`socket`] moves batches of requests through one
//! NETLINK_ROUTE socket, and the decision of what to write is the pure [`diff`](crate::diff).
//!
//! Kernel behaviour this relies on:
//! * RTM_NEWROUTE with NLM_F_CREATE|NLM_F_REPLACE adds or overwrites the route with the same
//!   (table, prefix, tos, priority) — idempotent, so replaying a batch is harmless.
//! * RTM_DELROUTE with our protocol id only matches routes of that protocol; deleting a route
//!   that is already gone answers ESRCH, which we count as done.
//! * Dumps (RTM_GETROUTE with NLM_F_DUMP) list every table; we keep the entries whose
//!   `rtm_protocol` is ours.

mod codec;
mod socket;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use nix::errno::Errno;
use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::packet_route::RouteNetlinkMessage;

use crate::error::{FibError, RouteError, RouteFailure, RouteOp};
use crate::route::{Device, Route, RouteKey, RouteKind, DEFAULT_PROTOCOL};
use crate::table::{diff, ApplyReport, RouteTable};
use socket::{Request, Rtnl};

/// Tuning and identity of a [`NetlinkFib`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FibConfig {
    /// Route protocol id stamped on our routes ([`DEFAULT_PROTOCOL`] = 80).
    pub protocol: u8,
    /// Requests per `sendmsg`. Larger batches mean fewer syscalls; the kernel processes them
    /// one by one either way. 1 gives one request per write, like rtnetlink's request API.
    pub batch_size: usize,
    /// How often a route refused with a transient errno (ENOBUFS, EAGAIN, EBUSY, ENOMEM,
    /// EINTR) is retried within one call before it is reported as failed.
    pub retries: u32,
}

impl Default for FibConfig {
    fn default() -> Self {
        Self {
            protocol: DEFAULT_PROTOCOL,
            batch_size: 1024,
            retries: 3,
        }
    }
}

fn is_transient(e: Errno) -> bool {
    matches!(
        e,
        Errno::ENOBUFS | Errno::EAGAIN | Errno::EBUSY | Errno::ENOMEM | Errno::EINTR
    )
}

/// One write we intend. Requests are encoded from it batch by batch, straight into the
/// socket's transmit buffer, so a call for 100k routes never holds 100k encoded messages.
struct Item<'a> {
    op: RouteOp,
    key: RouteKey,
    /// The route to install (replace), or the kernel's route being deleted (reconcile).
    route: Option<&'a Route>,
    /// For reconcile: whether the key was absent (counts as added) or present (changed).
    was_present: bool,
}

/// The kernel FIB of one network namespace, programmed over rtnetlink.
#[derive(Debug)]
pub struct NetlinkFib {
    config: FibConfig,
    rtnl: Rtnl,
    desired: BTreeMap<RouteKey, Route>,
    /// Interface name → ifindex, refreshed on every reconcile and on a cache miss.
    links: HashMap<String, u32>,
}

impl NetlinkFib {
    /// The FIB of the calling thread's network namespace.
    pub fn open(config: FibConfig) -> Result<Self, FibError> {
        Ok(Self::with_socket(config, Rtnl::open()?))
    }

    /// The FIB of the namespace bound at `path` (e.g. `/run/netns/<name>`). The netlink
    /// socket is created on a helper thread that `setns`'d into it; no thread of the caller
    /// changes namespace.
    pub fn in_namespace(path: impl AsRef<Path>, config: FibConfig) -> Result<Self, FibError> {
        Ok(Self::with_socket(config, Rtnl::open_in(path.as_ref())?))
    }

    fn with_socket(config: FibConfig, rtnl: Rtnl) -> Self {
        Self {
            config,
            rtnl,
            desired: BTreeMap::new(),
            links: HashMap::new(),
        }
    }

    pub fn config(&self) -> &FibConfig {
        &self.config
    }

    /// Re-reads the interface names of the namespace.
    fn refresh_links(&mut self) -> Result<(), FibError> {
        let request = RouteNetlinkMessage::GetLink(LinkMessage::default());
        self.links = self
            .rtnl
            .dump_raw(request, "link", HashMap::new, |links, raw| {
                if let Some((name, index)) = codec::parse_link_raw(raw) {
                    links.insert(name, index);
                }
                Ok(())
            })?;
        Ok(())
    }

    /// The route with device names replaced by ifindexes from the link cache.
    fn resolve(&self, route: &Route) -> Result<Route, RouteFailure> {
        route.validate()?;
        let mut r = route.clone();
        if let RouteKind::Unicast(nhs) = &mut r.kind {
            for nh in nhs {
                if let Some(Device::Name(name)) = &nh.device {
                    let index = self
                        .links
                        .get(name)
                        .ok_or_else(|| RouteFailure::UnknownDevice(name.clone()))?;
                    nh.device = Some(Device::Index(*index));
                }
            }
        }
        Ok(r)
    }

    /// Our routes in the kernel, by key (`None` for shapes we do not model).
    fn dump_ours(&mut self) -> Result<HashMap<RouteKey, Option<Route>>, FibError> {
        let protocol = self.config.protocol;
        let mut out = HashMap::new();
        for v6 in [false, true] {
            let request = RouteNetlinkMessage::GetRoute(codec::dump_message(v6));
            let found = self
                .rtnl
                .dump_raw(request, "route", Vec::new, |found, raw| {
                    if let Some(entry) = codec::parse_route_raw(raw, protocol) {
                        found.push(entry);
                    }
                    Ok(())
                })?;
            out.extend(found);
        }
        Ok(out)
    }

    /// Sends the writes, retrying transient refusals, and tallies them into `report`.
    /// `original` gives the caller's form of a route (device names) for error reports.
    fn program(
        &mut self,
        mut items: Vec<Item<'_>>,
        report: &mut ApplyReport,
        original: impl Fn(&RouteKey) -> Option<Route>,
    ) -> Result<(), FibError> {
        let protocol = self.config.protocol;
        let links = &self.links;
        let encode = |item: &Item<'_>| -> Option<Request> {
            match (item.op, item.route) {
                (RouteOp::Replace, Some(route)) => {
                    let resolve = |name: &str| links.get(name).copied();
                    let msg = codec::replace_message(route, protocol, resolve).ok()?;
                    Some((
                        RouteNetlinkMessage::NewRoute(msg),
                        NLM_F_CREATE | NLM_F_REPLACE,
                    ))
                }
                (RouteOp::Replace, None) => None,
                (RouteOp::Delete, _) => Some((
                    RouteNetlinkMessage::DelRoute(codec::delete_message(&item.key, protocol)),
                    0,
                )),
            }
        };
        let mut attempt = 0;
        while !items.is_empty() {
            let results = self.rtnl.execute(&items, self.config.batch_size, encode)?;
            let mut again = Vec::new();
            for (item, result) in items.into_iter().zip(results) {
                match (item.op, result) {
                    (RouteOp::Delete, None | Some(Errno::ESRCH)) => report.deleted += 1,
                    (RouteOp::Replace, None) if item.was_present => report.changed += 1,
                    (RouteOp::Replace, None) => report.added += 1,
                    (_, Some(e)) if is_transient(e) && attempt < self.config.retries => {
                        again.push(item);
                    }
                    (op, Some(errno)) => {
                        tracing::warn!(%op, key = %item.key, %errno, "kernel refused route");
                        let route = original(&item.key).or_else(|| item.route.cloned());
                        report.failed.push(RouteError {
                            op,
                            key: item.key,
                            route,
                            failure: RouteFailure::Kernel(errno),
                        });
                    }
                }
            }
            attempt += 1;
            items = again;
        }
        Ok(())
    }

    /// Checks that `route` can be encoded: valid, and every device name known.
    fn check(&self, route: &Route) -> Result<(), RouteFailure> {
        route.validate()?;
        for nh in route.next_hops() {
            if let Some(Device::Name(name)) = &nh.device {
                if !self.links.contains_key(name) {
                    return Err(RouteFailure::UnknownDevice(name.clone()));
                }
            }
        }
        Ok(())
    }
}

impl RouteTable for NetlinkFib {
    fn protocol(&self) -> u8 {
        self.config.protocol
    }

    fn apply(&mut self, desired: Vec<Route>) -> Result<ApplyReport, FibError> {
        self.desired = desired.into_iter().map(|r| (r.key(), r)).collect();
        self.reconcile()
    }

    fn reconcile(&mut self) -> Result<ApplyReport, FibError> {
        let started = std::time::Instant::now();
        self.refresh_links()?;
        let mut report = ApplyReport::default();
        let mut resolved = BTreeMap::new();
        // Keys whose desired route cannot be programmed right now: their current kernel
        // route (if any) is left alone rather than deleted, since it is still wanted.
        let mut unresolvable = Vec::new();
        for (key, route) in &self.desired {
            match self.resolve(route) {
                Ok(r) => {
                    resolved.insert(*key, r);
                }
                Err(failure) => {
                    unresolvable.push(*key);
                    report.failed.push(RouteError {
                        op: RouteOp::Replace,
                        key: *key,
                        route: Some(route.clone()),
                        failure,
                    });
                }
            }
        }
        let mut actual = self.dump_ours()?;
        for key in &unresolvable {
            actual.remove(key);
        }
        let dumped = started.elapsed();
        let d = diff(&resolved, &actual);
        let diffed = started.elapsed();
        report.unchanged = d.unchanged;
        let mut items = Vec::with_capacity(d.add.len() + d.change.len() + d.delete.len());
        for key in &d.delete {
            items.push(Item {
                op: RouteOp::Delete,
                key: *key,
                route: actual.get(key).and_then(Option::as_ref),
                was_present: true,
            });
        }
        for (routes, was_present) in [(&d.add, false), (&d.change, true)] {
            items.extend(routes.iter().map(|r| Item {
                op: RouteOp::Replace,
                key: r.key(),
                route: Some(r),
                was_present,
            }));
        }
        let desired = std::mem::take(&mut self.desired);
        let result = self.program(items, &mut report, |k| desired.get(k).cloned());
        self.desired = desired;
        result?;
        tracing::debug!(
            added = report.added,
            changed = report.changed,
            deleted = report.deleted,
            unchanged = report.unchanged,
            failed = report.failed.len(),
            dump_ms = dumped.as_millis() as u64,
            diff_ms = (diffed - dumped).as_millis() as u64,
            write_ms = (started.elapsed() - diffed).as_millis() as u64,
            "reconciled kernel FIB"
        );
        Ok(report)
    }

    fn replace(&mut self, routes: Vec<Route>) -> Result<ApplyReport, FibError> {
        let mut report = ApplyReport::default();
        if routes.iter().any(|r| self.check(r).is_err()) {
            // A device we do not know yet may simply be new: re-read the links once.
            self.refresh_links()?;
        }
        let mut ok = Vec::with_capacity(routes.len());
        for route in routes {
            match self.check(&route) {
                Ok(()) => ok.push(route),
                Err(failure) => {
                    report.failed.push(RouteError {
                        op: RouteOp::Replace,
                        key: route.key(),
                        route: Some(route.clone()),
                        failure,
                    });
                    // Still desired: the next reconcile retries it.
                    self.desired.insert(route.key(), route);
                }
            }
        }
        let items = ok
            .iter()
            .map(|r| Item {
                op: RouteOp::Replace,
                key: r.key(),
                route: Some(r),
                was_present: false,
            })
            .collect();
        self.program(items, &mut report, |_| None)?;
        for route in ok {
            self.desired.insert(route.key(), route);
        }
        Ok(report)
    }

    fn delete(&mut self, keys: Vec<RouteKey>) -> Result<ApplyReport, FibError> {
        let mut report = ApplyReport::default();
        let mut items = Vec::with_capacity(keys.len());
        for k in keys {
            let key = RouteKey::new(k.table, k.destination);
            if !self.desired.is_empty() {
                self.desired.remove(&key);
            }
            items.push(Item {
                op: RouteOp::Delete,
                key,
                route: None,
                was_present: true,
            });
        }
        self.program(items, &mut report, |_| None)?;
        Ok(report)
    }

    fn installed(&mut self) -> Result<Vec<Route>, FibError> {
        Ok(self.dump_ours()?.into_values().flatten().collect())
    }

    fn desired(&self) -> Vec<Route> {
        self.desired.values().cloned().collect()
    }
}

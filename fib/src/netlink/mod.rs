//! The kernel FIB through rtnetlink: [`NetlinkFib`].
//!
//! A thin driver: [`codec`] encodes requests straight into the transmit buffer and decodes
//! dump entries straight from the wire, [`socket`] moves batches of requests through one
//! NETLINK_ROUTE socket, [`nexthop`] keeps the books of the shared kernel nexthop objects
//! our routes point at, and the decision of what to write is the pure [`diff`](crate::diff).
//!
//! Kernel behaviour this relies on:
//! * RTM_NEWROUTE with NLM_F_CREATE|NLM_F_REPLACE adds or overwrites the route with the same
//!   (table, prefix, tos, priority) — idempotent, so replaying a batch is harmless.
//! * RTM_DELROUTE with our protocol id only matches routes of that protocol; deleting a route
//!   that is already gone answers ESRCH, which we count as done.
//! * Dumps (RTM_GETROUTE with NLM_F_DUMP) list every table; we keep the entries whose
//!   `rtm_protocol` is ours.
//! * A route over a nexthop object (RTA_NH_ID, Linux ≥ 5.3) forwards exactly like the same
//!   route with that gateway inline, and is cheaper for the kernel to install (see
//!   [`nexthop`]); routes with one next hop use them unless the kernel refuses.

mod codec;
mod keyhash;
mod nexthop;
mod socket;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use nix::errno::Errno;

use crate::error::{FibError, RouteError, RouteFailure, RouteOp};
use crate::route::{Device, NextHop, NextHops, Route, RouteKey, RouteKind, DEFAULT_PROTOCOL};
use crate::table::{ApplyReport, DiffStream, RouteTable, Verdict};
use codec::{NexthopSpec, AF_INET, AF_INET6};
use keyhash::{KeyMap, KeySet};
use nexthop::{NexthopTable, Support};
use socket::Rtnl;

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
    /// Install single-next-hop routes over shared kernel nexthop objects (RTA_NH_ID) rather
    /// than with inline gateways: same forwarding, less kernel work per route. Falls back to
    /// inline gateways by itself where the kernel refuses them; `false` never creates any
    /// (routes of ours installed over objects are still read back correctly).
    pub nexthop_objects: bool,
}

impl Default for FibConfig {
    fn default() -> Self {
        Self {
            protocol: DEFAULT_PROTOCOL,
            batch_size: 1024,
            retries: 3,
            nexthop_objects: true,
        }
    }
}

/// Below this many writes, the order they are sent in is not worth changing.
const SPREAD_MIN: usize = 256;

/// The writes in an order the kernel's FIB trie handles faster: sorted by key (deletes
/// first, as reconcile has always sent them), the deletes taken in bit-reversed index order,
/// so that consecutive removals land in far-apart parts of the trie instead of emptying one
/// subtree after another.
///
/// Why: an IPv4 table is an LC-trie (net/ipv4/fib_trie.c) whose internal nodes are resized
/// after every removal (`resize`: halve when sparse, each time allocating a new node and
/// freeing the old one through RCU). Emptying one subtree at a time drives its nodes through
/// every intermediate size; spread removals let each node shrink fewer times. Measured on
/// 100k /32s: about 45% less kernel time to remove them (`fib-bench`). Installs and replaces
/// stay in key order: spreading them saved little on installs and cost more on replaces
/// (lookups lose cache locality). The requests of one call are independent (distinct keys),
/// so their order has no other effect. A call that names a key twice is only sorted (stably:
/// that key's writes keep the caller's order, the last one wins).
fn spread(mut items: Vec<Item<'_>>) -> Vec<Item<'_>> {
    if items.len() < SPREAD_MIN {
        return items;
    }
    items.sort_by_key(|i| i.key);
    if items.windows(2).any(|w| w[0].key == w[1].key) {
        return items;
    }
    let (deletes, replaces): (Vec<Item<'_>>, Vec<Item<'_>>) =
        items.into_iter().partition(|i| i.op == RouteOp::Delete);
    let n = deletes.len();
    if n < SPREAD_MIN {
        let mut out = deletes;
        out.extend(replaces);
        return out;
    }
    let bits = usize::BITS - (n - 1).leading_zeros();
    let order = (0..1usize << bits)
        .map(|i| i.reverse_bits() >> (usize::BITS - bits))
        .filter(|&j| j < n);
    let mut slots: Vec<Option<Item<'_>>> = deletes.into_iter().map(Some).collect();
    let mut out: Vec<Item<'_>> = Vec::with_capacity(n + replaces.len());
    out.extend(order.filter_map(|j| slots[j].take()));
    out.extend(replaces);
    out
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
    /// The nexthop object to install the route over, instead of its inline next hop.
    nh: Option<u32>,
}

/// The kernel FIB of one network namespace, programmed over rtnetlink.
#[derive(Debug)]
pub struct NetlinkFib {
    config: FibConfig,
    rtnl: Rtnl,
    /// The desired set, in key order. A B-tree rather than the hash maps of the hot path:
    /// at a million routes a hash table's power-of-two slots cost about twice the entries
    /// (153 MB against about 80 MB measured for 1M routes), and the ordered walk is the order
    /// the writes of a reconcile go in.
    desired: BTreeMap<RouteKey, Route>,
    /// One copy of each set of next hops the desired routes use (see [`NextHops`]).
    next_hop_sets: std::collections::HashSet<NextHops>,
    /// Interface name → ifindex, refreshed on every reconcile and on a cache miss.
    links: KeyMap<String, u32>,
    nexthops: NexthopTable,
    /// Gateway → the device it is directly reachable on (RTM_GETROUTE), for next hops given
    /// without a device; `None` if it is not directly reachable. Cleared on reconcile.
    gateway_devices: KeyMap<IpAddr, Option<u32>>,
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
            nexthops: NexthopTable::new(config.protocol, config.nexthop_objects),
            config,
            rtnl,
            desired: BTreeMap::new(),
            next_hop_sets: Default::default(),
            links: KeyMap::default(),
            gateway_devices: KeyMap::default(),
        }
    }

    pub fn config(&self) -> &FibConfig {
        &self.config
    }

    /// Re-reads the interface names of the namespace.
    fn refresh_links(&mut self) -> Result<(), FibError> {
        self.links = self.rtnl.dump_raw(
            codec::encode_link_dump,
            "link",
            KeyMap::default,
            |links, raw| {
                if let Some((name, index)) = codec::parse_link_raw(raw) {
                    links.insert(name, index);
                }
                Ok(())
            },
        )?;
        Ok(())
    }

    /// Records `route` as desired, its next hops shared with the routes that have the same.
    fn desire(&mut self, mut route: Route) {
        if let RouteKind::Unicast(hops) = &mut route.kind {
            match self.next_hop_sets.get(hops) {
                Some(shared) => *hops = shared.clone(),
                None => {
                    self.next_hop_sets.insert(hops.clone());
                }
            }
        }
        self.desired.insert(route.key(), route);
    }

    /// The route with device names replaced by ifindexes from the link cache.
    fn resolve(&self, route: &Route) -> Result<Route, RouteFailure> {
        route.validate()?;
        let mut r = route.clone();
        if let RouteKind::Unicast(nhs) = &mut r.kind {
            let mut resolved = nhs.to_vec();
            for nh in &mut resolved {
                if let Some(Device::Name(name)) = &nh.device {
                    let index = self
                        .links
                        .get(name)
                        .ok_or_else(|| RouteFailure::UnknownDevice(name.clone()))?;
                    nh.device = Some(Device::Index(*index));
                }
            }
            *nhs = resolved.into();
        }
        Ok(r)
    }

    /// Every nexthop object of the namespace as (id, protocol, spec). A kernel without
    /// nexthop objects answers the dump with an error: no objects, and none will be created.
    fn dump_nexthops(&mut self) -> Result<Vec<(u32, u8, Option<NexthopSpec>)>, FibError> {
        // Read even when creating them is turned off by configuration, so routes of ours
        // installed over objects (by an earlier configuration) are still recognised.
        let found = self.rtnl.dump_raw(
            codec::encode_nexthop_dump,
            "nexthop",
            Vec::new,
            |found, raw| {
                if let Some(nh) = codec::parse_nexthop_raw(raw) {
                    found.push((nh.id, nh.protocol, nh.spec));
                }
                Ok(())
            },
        );
        match found {
            Ok(found) => Ok(found),
            Err(FibError::Dump { errno, .. })
                if matches!(
                    errno,
                    Errno::EOPNOTSUPP | Errno::EINVAL | Errno::EAFNOSUPPORT
                ) =>
            {
                self.refuse_nexthops(errno);
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }

    /// The kernel has no nexthop objects: routes carry their gateways inline from now on.
    fn refuse_nexthops(&mut self, errno: Errno) {
        if self.nexthops.support != Support::No {
            tracing::warn!(
                %errno,
                "kernel refuses nexthop objects (Linux < 5.3?); installing routes with inline gateways"
            );
        }
        self.nexthops.support = Support::No;
    }

    /// Our routes of both families, as a map (what [`RouteTable::installed`] reports).
    fn dump_ours(&mut self, expect: usize) -> Result<KeyMap<RouteKey, Option<Route>>, FibError> {
        let mut out = KeyMap::with_capacity_and_hasher(expect, Default::default());
        for found in self.dump_ours_with(Vec::new, |found, key, route| found.push((key, route)))? {
            out.extend(found);
        }
        Ok(out)
    }

    /// Dumps our routes (`None`: one of ours that [`Route`] cannot describe), handing each to
    /// `each` with an accumulator made by `init`, one per family (made afresh when the kernel
    /// interrupts a dump and it is read again); returns the accumulators. Reloads the
    /// nexthop objects' users on the way.
    fn dump_ours_with<C>(
        &mut self,
        init: impl Fn() -> C,
        mut each: impl FnMut(&mut C, RouteKey, Option<Route>),
    ) -> Result<Vec<C>, FibError> {
        let protocol = self.config.protocol;
        let objects = self.dump_nexthops()?;
        let by_id: KeyMap<u32, (u8, NextHop)> = objects
            .iter()
            .filter_map(|(id, proto, spec)| spec.map(|s| (*id, (*proto, s.next_hop()))))
            .collect();
        let ours_ids: KeySet<u32> = objects
            .iter()
            .filter(|(_, proto, _)| *proto == protocol)
            .map(|(id, _, _)| *id)
            .collect();
        let mut out = Vec::with_capacity(2);
        let mut users = Vec::new();
        let mut pins = Vec::new();
        for v6 in [false, true] {
            let (found, used, pinned) = self.rtnl.dump_raw(
                |buf| codec::encode_route_dump(buf, v6),
                "route",
                || (init(), Vec::new(), Vec::new()),
                |(found, used, pinned), raw| {
                    let nexthop = |id| by_id.get(&id).map(|(_, nh)| nh.clone());
                    match codec::parse_route_raw(raw, protocol, nexthop) {
                        Some(entry) => {
                            if let Some(id) = entry.nh_id {
                                used.push((entry.key, id));
                            }
                            each(found, entry.key, entry.route);
                        }
                        None if !ours_ids.is_empty() => {
                            // Another protocol's route over one of our objects pins it.
                            if let Some((_, id)) = codec::route_nexthop_raw(raw) {
                                if ours_ids.contains(&id) {
                                    pinned.push(id);
                                }
                            }
                        }
                        None => {}
                    }
                    Ok(())
                },
            )?;
            out.push(found);
            users.extend(used);
            pins.extend(pinned);
        }
        self.nexthops.load(objects, users, pins);
        Ok(out)
    }

    /// The nexthop object a route with a single next hop can be installed over, if any:
    /// (gateway, device, onlink), the device resolved to an ifindex — for a next hop without
    /// a device, the one the kernel reaches the gateway on directly.
    fn spec_for(&mut self, route: &Route) -> Result<Option<NexthopSpec>, FibError> {
        if !self.nexthops.enabled() {
            return Ok(None);
        }
        let [nh] = route.next_hops() else {
            return Ok(None);
        };
        let oif = match &nh.device {
            Some(Device::Index(i)) => *i,
            Some(Device::Name(name)) => match self.links.get(name) {
                Some(i) => *i,
                None => return Ok(None),
            },
            None => {
                let Some(gw) = nh.gateway else {
                    return Ok(None);
                };
                match self.gateway_device(gw)? {
                    Some(i) => i,
                    None => return Ok(None),
                }
            }
        };
        let family = match (nh.gateway, route.destination) {
            (Some(IpAddr::V4(_)), _) | (None, ipnet::IpNet::V4(_)) => AF_INET,
            (Some(IpAddr::V6(_)), _) | (None, ipnet::IpNet::V6(_)) => AF_INET6,
        };
        Ok(Some(NexthopSpec {
            family,
            gateway: nh.gateway,
            oif,
            onlink: nh.onlink,
        }))
    }

    /// The device `gateway` is directly reachable on (cached until the next reconcile).
    fn gateway_device(&mut self, gateway: IpAddr) -> Result<Option<u32>, FibError> {
        if let Some(known) = self.gateway_devices.get(&gateway) {
            return Ok(*known);
        }
        let oif = self
            .rtnl
            .query_raw(
                |buf| Some(codec::encode_lookup(buf, gateway)),
                codec::parse_lookup_oif,
            )?
            .ok()
            .flatten();
        self.gateway_devices.insert(gateway, oif);
        Ok(oif)
    }

    /// Makes sure a nexthop object of ours exists for every spec in `wanted`; returns the id
    /// for each spec that has one. Specs the kernel refuses (e.g. a gateway that is not
    /// reachable) get none: their routes go inline, where the kernel reports the error per
    /// route.
    fn ensure_nexthops(
        &mut self,
        wanted: impl IntoIterator<Item = NexthopSpec>,
    ) -> Result<KeyMap<NexthopSpec, u32>, FibError> {
        let mut ids = KeyMap::default();
        if !self.nexthops.enabled() {
            return Ok(ids);
        }
        if !self.nexthops.loaded {
            // Share the objects an earlier instance left, rather than duplicating them.
            let objects = self.dump_nexthops()?;
            self.nexthops.adopt(objects);
            if !self.nexthops.enabled() {
                return Ok(ids);
            }
        }
        let mut missing = Vec::new();
        let mut seen = KeySet::default();
        for spec in wanted {
            if !seen.insert(spec) {
                continue;
            }
            match self.nexthops.id_for(&spec) {
                Some(id) => {
                    ids.insert(spec, id);
                }
                None => missing.push(spec),
            }
        }
        // A few rounds: an id someone else holds (EEXIST) is skipped and the spec retried.
        for _ in 0..8 {
            if missing.is_empty() {
                break;
            }
            let batch: Vec<(u32, NexthopSpec)> = missing
                .iter()
                .map(|spec| (self.nexthops.reserve_id(), *spec))
                .collect();
            let protocol = self.config.protocol;
            let results =
                self.rtnl
                    .execute(&batch, self.config.batch_size, |(id, spec), buf| {
                        Some(codec::encode_new_nexthop(buf, *id, spec, protocol))
                    })?;
            missing.clear();
            for ((id, spec), result) in batch.into_iter().zip(results) {
                match result {
                    None => {
                        self.nexthops.support = Support::Yes;
                        self.nexthops.created(id, spec);
                        ids.insert(spec, id);
                    }
                    Some(Errno::EEXIST) => {
                        self.nexthops.taken(id);
                        missing.push(spec);
                    }
                    Some(Errno::EOPNOTSUPP) => {
                        self.refuse_nexthops(Errno::EOPNOTSUPP);
                        return Ok(KeyMap::default());
                    }
                    Some(errno) => {
                        tracing::debug!(?spec, %errno, "nexthop object refused; its routes go inline");
                    }
                }
            }
        }
        Ok(ids)
    }

    /// Deletes our nexthop objects that no route uses any more.
    fn collect_garbage(&mut self) -> Result<(), FibError> {
        let unused = self.nexthops.unused();
        if unused.is_empty() {
            return Ok(());
        }
        let results = self
            .rtnl
            .execute(&unused, self.config.batch_size, |id, buf| {
                Some(codec::encode_del_nexthop(buf, *id))
            })?;
        for (id, result) in unused.into_iter().zip(results) {
            match result {
                None | Some(Errno::ENOENT) => self.nexthops.forget(id),
                Some(errno) => tracing::warn!(id, %errno, "could not delete unused nexthop object"),
            }
        }
        Ok(())
    }

    /// Items replacing `routes`, each over its nexthop object where one can be had.
    fn replace_items<'a>(
        &mut self,
        routes: impl IntoIterator<Item = (&'a Route, bool)>,
    ) -> Result<Vec<Item<'a>>, FibError> {
        let routes = routes.into_iter();
        let mut items = Vec::with_capacity(routes.size_hint().0);
        let mut specs = Vec::with_capacity(routes.size_hint().0);
        let mut distinct = Vec::new();
        // Consecutive routes mostly share their next hop (thousands of routes via a few
        // nodes): reuse the previous route's spec instead of resolving it again.
        // (A device-only spec also depends on the route's family.)
        let mut last: Option<(&NextHop, bool, Option<NexthopSpec>)> = None;
        for (route, was_present) in routes {
            let v4 = matches!(route.destination, ipnet::IpNet::V4(_));
            let spec = match (route.next_hops(), last) {
                ([nh], Some((prev, prev_v4, spec)))
                    if prev == nh && (nh.gateway.is_some() || prev_v4 == v4) =>
                {
                    spec
                }
                _ => self.spec_for(route)?,
            };
            if let [nh] = route.next_hops() {
                last = Some((nh, v4, spec));
            }
            if let Some(s) = spec {
                if distinct.last() != Some(&s) {
                    distinct.push(s);
                }
            }
            specs.push(spec);
            items.push(Item {
                op: RouteOp::Replace,
                key: route.key(),
                route: Some(route),
                was_present,
                nh: None,
            });
        }
        let ids = self.ensure_nexthops(distinct)?;
        if !ids.is_empty() {
            let mut memo: Option<(NexthopSpec, Option<u32>)> = None;
            for (item, spec) in items.iter_mut().zip(&specs) {
                let Some(spec) = spec else { continue };
                item.nh = match memo {
                    Some((m, id)) if m == *spec => id,
                    _ => {
                        let id = ids.get(spec).copied();
                        memo = Some((*spec, id));
                        id
                    }
                };
            }
        }
        Ok(items)
    }

    /// Sends the writes, retrying transient refusals, and tallies them into `report`.
    /// `original` gives the caller's form of a route (device names) for error reports.
    fn program(
        &mut self,
        mut items: Vec<Item<'_>>,
        report: &mut ApplyReport,
        original: impl Fn(&RouteKey) -> Option<Route>,
    ) -> Result<(), FibError> {
        items = spread(items);
        let protocol = self.config.protocol;
        let links = &self.links;
        let encode = |item: &Item<'_>, buf: &mut Vec<u8>| match (item.op, item.route) {
            (RouteOp::Replace, Some(route)) => {
                let resolve = |name: &str| links.get(name).copied();
                codec::encode_replace(buf, route, protocol, item.nh, resolve).ok()
            }
            (RouteOp::Replace, None) => None,
            (RouteOp::Delete, _) => Some(codec::encode_delete(buf, &item.key, protocol)),
        };
        let replaces = items.iter().filter(|i| i.nh.is_some()).count();
        self.nexthops.reserve(replaces);
        let mut attempt = 0;
        while !items.is_empty() {
            let results = self.rtnl.execute(&items, self.config.batch_size, encode)?;
            let mut again = Vec::new();
            for (mut item, result) in items.into_iter().zip(results) {
                match (item.op, result) {
                    (RouteOp::Delete, None | Some(Errno::ESRCH)) => {
                        self.nexthops.route_removed(&item.key);
                        report.deleted += 1;
                    }
                    (RouteOp::Replace, None) => {
                        self.nexthops.route_installed(item.key, item.nh);
                        if item.was_present {
                            report.changed += 1;
                        } else {
                            report.added += 1;
                        }
                    }
                    (_, Some(e)) if is_transient(e) && attempt < self.config.retries => {
                        again.push(item);
                    }
                    (RouteOp::Replace, Some(errno)) if item.nh.is_some() => {
                        // Whatever the kernel holds against the object (it may have gone
                        // with its device, or been deleted behind our back), the route
                        // itself is what matters: retry it inline, which installs it or
                        // yields the route's own error. The object is no longer offered to
                        // new routes; the next reconcile re-reads what exists.
                        tracing::debug!(key = %item.key, %errno, nh = ?item.nh, "route over nexthop object refused; retrying inline");
                        if let Some(id) = item.nh.take() {
                            self.nexthops.suspect(id);
                        }
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

    /// [`RouteTable::reconcile`] against `desired` (the desired set, taken out of `self`).
    fn reconcile_with(
        &mut self,
        desired: &BTreeMap<RouteKey, Route>,
    ) -> Result<ApplyReport, FibError> {
        let started = std::time::Instant::now();
        self.refresh_links()?;
        self.gateway_devices.clear();
        let mut report = ApplyReport::default();
        // Desired routes as the kernel reports them (device names as ifindexes). Only routes
        // that name a device are copied; the rest are compared as they are.
        let mut renamed: KeyMap<RouteKey, Route> = KeyMap::default();
        // Keys whose desired route cannot be programmed right now: their current kernel
        // route (if any) is left alone rather than deleted, since it is still wanted.
        let mut unresolvable: KeySet<RouteKey> = KeySet::default();
        for (key, route) in desired {
            let names_device = route
                .next_hops()
                .iter()
                .any(|nh| matches!(nh.device, Some(Device::Name(_))));
            let checked = if names_device {
                self.resolve(route).map(Some)
            } else {
                route.validate().map(|()| None).map_err(RouteFailure::from)
            };
            match checked {
                Ok(Some(r)) => {
                    renamed.insert(*key, r);
                }
                Ok(None) => {}
                Err(failure) => {
                    unresolvable.insert(*key);
                    report.failed.push(RouteError {
                        op: RouteOp::Replace,
                        key: *key,
                        route: Some(route.clone()),
                        failure,
                    });
                }
            }
        }
        // Key order: the writes reach the kernel sorted, as `diff` would order them.
        let mut wanted: Vec<(&RouteKey, &Route)> = desired
            .iter()
            .filter(|(k, _)| !unresolvable.contains(*k))
            .map(|(k, r)| (k, renamed.get(k).unwrap_or(r)))
            .collect();
        wanted.sort_unstable_by_key(|(k, _)| **k);
        // The kernel's routes are compared as the dump yields them; only those to delete
        // are kept (see `DiffStream`).
        let mut streams = self.dump_ours_with(
            || (DiffStream::new(&wanted), Vec::new()),
            |(stream, stale), key, have| {
                let verdict = stream.observe(&key, have.as_ref(), |k| desired.contains_key(k));
                if verdict == Verdict::Delete {
                    stale.push((key, have));
                }
            },
        )?;
        let dumped = started.elapsed();
        let (mut stream, mut stale) = streams
            .pop()
            .ok_or_else(|| FibError::Decode("route dump returned no family".into()))?;
        for (other, more) in streams {
            stream.absorb(other);
            stale.extend(more);
        }
        stale.sort_unstable_by_key(|(k, _)| *k);
        let d = stream.finish();
        let diffed = started.elapsed();
        report.unchanged = d.unchanged;
        let mut items = Vec::with_capacity(d.add.len() + d.change.len() + stale.len());
        for (key, route) in &stale {
            items.push(Item {
                op: RouteOp::Delete,
                key: *key,
                route: route.as_ref(),
                was_present: true,
                nh: None,
            });
        }
        let writes = d.add.iter().map(|r| (*r, false));
        items.extend(self.replace_items(writes.chain(d.change.iter().map(|r| (*r, true))))?);
        self.program(items, &mut report, |k| desired.get(k).cloned())?;
        self.collect_garbage()?;
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
        self.desired.clear();
        for route in desired {
            self.desire(route);
        }
        self.reconcile()
    }

    fn reconcile(&mut self) -> Result<ApplyReport, FibError> {
        // The desired set is only read; taken out so the writes can borrow its routes while
        // `self` is borrowed mutably, and put back whatever happens.
        let desired = std::mem::take(&mut self.desired);
        let result = self.reconcile_with(&desired);
        self.desired = desired;
        // Next-hop sets no desired route uses any more.
        self.next_hop_sets
            .retain(|set| std::sync::Arc::strong_count(set) > 1);
        result
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
                    self.desire(route);
                }
            }
        }
        let items = self.replace_items(ok.iter().map(|r| (r, false)))?;
        self.program(items, &mut report, |_| None)?;
        self.collect_garbage()?;
        for route in ok {
            self.desire(route);
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
                nh: None,
            });
        }
        self.program(items, &mut report, |_| None)?;
        self.collect_garbage()?;
        Ok(report)
    }

    fn installed(&mut self) -> Result<Vec<Route>, FibError> {
        Ok(self
            .dump_ours(self.desired.len())?
            .into_values()
            .flatten()
            .collect())
    }

    fn desired(&self) -> Vec<Route> {
        self.desired.values().cloned().collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn item(i: u32, route: Option<&Route>) -> Item<'_> {
        let dst = std::net::Ipv4Addr::from(0x0a40_0000 + i);
        Item {
            op: RouteOp::Delete,
            key: RouteKey::main(ipnet::IpNet::new(dst.into(), 32).unwrap()),
            route,
            was_present: true,
            nh: None,
        }
    }

    #[test]
    fn spread_is_a_permutation_that_scatters_neighbouring_removals() {
        let n = 1000;
        let route = Route::blackhole("10.64.0.0/32".parse().unwrap());
        let mut items: Vec<Item<'_>> = (0..n).rev().map(|i| item(i, None)).collect();
        // Replaces come after the removals, in key order.
        items.extend((n..n + 300).rev().map(|i| Item {
            op: RouteOp::Replace,
            ..item(i, Some(&route))
        }));
        let out = spread(items);
        assert_eq!(out.len(), n as usize + 300);
        let keys: Vec<RouteKey> = out.iter().map(|i| i.key).collect();
        // Neighbours in key order are far apart in the sent order.
        assert_eq!(keys[0], item(0, None).key);
        assert_eq!(keys[1], item(512, None).key);
        assert!(out[..n as usize].iter().all(|i| i.op == RouteOp::Delete));
        assert!(keys[n as usize..].windows(2).all(|w| w[0] < w[1]));
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), keys.len());
        // Small batches are left as they are.
        let few: Vec<Item<'_>> = (0..10).rev().map(|i| item(i, None)).collect();
        assert_eq!(spread(few)[0].key, item(9, None).key);
    }

    #[test]
    fn a_key_written_twice_keeps_the_callers_order() {
        let first = Route::blackhole("10.64.0.5/32".parse().unwrap());
        let last = Route::blackhole("10.64.0.5/32".parse().unwrap()).with_mtu(1400);
        let mut items: Vec<Item<'_>> = (0..300).map(|i| item(i, None)).collect();
        items.push(item(5, Some(&first)));
        items.push(item(5, Some(&last)));
        let out = spread(items);
        let fives: Vec<_> = out.iter().filter(|i| i.key == item(5, None).key).collect();
        assert_eq!(fives.len(), 3);
        assert!(fives[0].route.is_none());
        assert_eq!(fives[2].route, Some(&last));
    }
}

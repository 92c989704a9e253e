//! Bookkeeping of the kernel nexthop objects our routes share (sans-IO).
//!
//! Since Linux 5.3 a route can point at a *nexthop object* (`ip nexthop`, RTM_NEWNEXTHOP)
//! by id (RTA_NH_ID) instead of carrying its own gateway. The kernel then skips the work it
//! otherwise repeats for every route with an inline gateway — allocating and validating a
//! `fib_nh` (per-CPU route caches included, `fib_nh_common_init`), looking the gateway up
//! (`fib_check_nh`) — only to find that an identical `fib_info` already exists and throw the
//! new one away. Thousands of routes via a handful of nodes are exactly that case, so routes
//! with a single next hop are installed over one shared object per distinct (gateway, device,
//! onlink) tuple.
//!
//! The objects are an internal detail of [`NetlinkFib`](super::NetlinkFib):
//! * created on demand, tagged with our route protocol id, with ids from our own range
//!   (NLM_F_EXCL: an id someone else uses is skipped, never overwritten);
//! * shared: one object per [`NexthopSpec`], whichever routes need it;
//! * reference-counted by the routes of ours we know use them, and deleted once unused.
//!   Deleting a nexthop object deletes every route that still uses it, so an object is
//!   only deleted when its count is *known*: either we created it in this instance (all its
//!   users are routes we installed), or a reconcile has read back every route of the
//!   namespace — those of other protocols included, which pin an object of ours for as long
//!   as they use it;
//! * reconciled: objects of our protocol that no route uses are removed; other protocols'
//!   objects are never touched.
//!
//! A kernel without nexthop objects (EOPNOTSUPP) is detected once; routes then carry their
//! gateways inline, as they also do for ECMP and whenever an object cannot be created.

use super::codec::NexthopSpec;
use super::keyhash::{KeyMap as HashMap, KeySet as HashSet};
use crate::route::RouteKey;

/// The first id of ours: the protocol id in the top byte keeps our range apart from the ids
/// `ip nexthop` and FRR's zebra hand out from the bottom.
fn id_base(protocol: u8) -> u32 {
    (u32::from(protocol) << 24).max(1)
}

/// Whether the kernel has nexthop objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Support {
    /// Not tried yet.
    Unknown,
    Yes,
    /// The kernel refused them (or configuration turned them off): inline gateways only.
    No,
}

/// Our nexthop objects and which of our routes use them.
#[derive(Debug)]
pub(crate) struct NexthopTable {
    pub support: Support,
    protocol: u8,
    /// Our objects by what they forward to (one per spec; duplicates left by an earlier
    /// instance are known in `specs` only, and removed once unused).
    by_spec: HashMap<NexthopSpec, u32>,
    /// Every object of ours we know of.
    specs: HashMap<u32, NexthopSpec>,
    /// Routes of ours using each object (absent = 0).
    refs: HashMap<u32, usize>,
    /// Objects of ours that other protocols' routes use (never deleted).
    pinned: HashSet<u32>,
    /// Which object each route of ours uses.
    route_nh: HashMap<RouteKey, u32>,
    /// Objects we created in this instance: their users are all routes we installed.
    fresh: HashSet<u32>,
    /// Whether `refs` covers every route in the namespace (set by [`load`](Self::load)).
    complete: bool,
    /// Whether our existing objects have been read from the kernel at least once.
    pub loaded: bool,
    /// Ids that exist but are not ours.
    foreign: HashSet<u32>,
    next_id: u32,
}

impl NexthopTable {
    pub fn new(protocol: u8, enabled: bool) -> Self {
        Self {
            support: if enabled {
                Support::Unknown
            } else {
                Support::No
            },
            protocol,
            by_spec: HashMap::default(),
            specs: HashMap::default(),
            refs: HashMap::default(),
            pinned: HashSet::default(),
            route_nh: HashMap::default(),
            fresh: HashSet::default(),
            complete: false,
            loaded: false,
            foreign: HashSet::default(),
            next_id: id_base(protocol),
        }
    }

    pub fn enabled(&self) -> bool {
        self.support != Support::No
    }

    /// The object of ours for `spec`, if one exists.
    pub fn id_for(&self, spec: &NexthopSpec) -> Option<u32> {
        self.by_spec.get(spec).copied()
    }

    /// An id for a new object: ours, and not known to be in use.
    pub fn reserve_id(&mut self) -> u32 {
        let base = id_base(self.protocol);
        loop {
            let id = self.next_id;
            self.next_id = match self.next_id.checked_add(1) {
                // Wrap within our range; ids are only reused once free.
                Some(n) if n < base.saturating_add(1 << 24) => n,
                _ => base,
            };
            if !self.specs.contains_key(&id) && !self.foreign.contains(&id) {
                return id;
            }
        }
    }

    /// The kernel refused to create `id` because it exists (EEXIST): it is not ours to use.
    pub fn taken(&mut self, id: u32) {
        self.foreign.insert(id);
    }

    /// We created object `id` for `spec`.
    pub fn created(&mut self, id: u32, spec: NexthopSpec) {
        self.specs.insert(id, spec);
        self.by_spec.insert(spec, id);
        self.fresh.insert(id);
    }

    /// A route over object `id` was refused: stop offering it to new routes (it may be
    /// gone). Its bookkeeping stays until a reconcile re-reads the kernel, so it is never
    /// deleted on a guess.
    pub fn suspect(&mut self, id: u32) {
        if let Some(spec) = self.specs.get(&id) {
            if self.by_spec.get(spec) == Some(&id) {
                self.by_spec.remove(spec);
            }
        }
        self.fresh.remove(&id);
    }

    /// Object `id` is gone from the kernel (we deleted it, or it was found missing).
    pub fn forget(&mut self, id: u32) {
        if let Some(spec) = self.specs.remove(&id) {
            if self.by_spec.get(&spec) == Some(&id) {
                self.by_spec.remove(&spec);
            }
        }
        self.refs.remove(&id);
        self.fresh.remove(&id);
        self.pinned.remove(&id);
    }

    /// Room for `n` routes over objects when none are tracked yet (a first bulk install: one
    /// allocation instead of repeated growth; later calls mostly revisit known routes).
    pub fn reserve(&mut self, n: usize) {
        if self.route_nh.is_empty() {
            self.route_nh.reserve(n);
        }
    }

    /// The kernel now holds our route `key` over object `nh` (`None`: inline next hops).
    pub fn route_installed(&mut self, key: RouteKey, nh: Option<u32>) {
        let old = match nh {
            Some(id) => {
                *self.refs.entry(id).or_default() += 1;
                self.route_nh.insert(key, id)
            }
            None if self.route_nh.is_empty() => None,
            None => self.route_nh.remove(&key),
        };
        if let Some(old) = old {
            self.release(old);
        }
    }

    /// Our route `key` is no longer in the kernel.
    pub fn route_removed(&mut self, key: &RouteKey) {
        if self.route_nh.is_empty() {
            return;
        }
        if let Some(old) = self.route_nh.remove(key) {
            self.release(old);
        }
    }

    fn release(&mut self, id: u32) {
        if let Some(n) = self.refs.get_mut(&id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.refs.remove(&id);
            }
        }
    }

    /// Replaces everything we know with what a dump read: `objects` = every nexthop object
    /// of the namespace as (id, protocol, spec), `ours` = which object each of our routes
    /// uses, `pins` = objects used by routes of other protocols.
    pub fn load(
        &mut self,
        objects: impl IntoIterator<Item = (u32, u8, Option<NexthopSpec>)>,
        ours: impl IntoIterator<Item = (RouteKey, u32)>,
        pins: impl IntoIterator<Item = u32>,
    ) {
        self.by_spec.clear();
        self.specs.clear();
        self.foreign.clear();
        let mut objects: Vec<_> = objects.into_iter().collect();
        // Lowest id first, so the same spec always maps to the same object.
        objects.sort_unstable_by_key(|o| std::cmp::Reverse(o.0));
        for (id, protocol, spec) in objects {
            match spec {
                Some(spec) if protocol == self.protocol => {
                    self.specs.insert(id, spec);
                    self.by_spec.insert(spec, id);
                }
                // Other protocols' objects, and groups/blackholes with our id that we never
                // create (someone else made them): left alone.
                _ => {
                    self.foreign.insert(id);
                }
            }
        }
        self.fresh.retain(|id| self.specs.contains_key(id));
        self.route_nh = ours.into_iter().collect();
        self.refs.clear();
        for id in self.route_nh.values() {
            *self.refs.entry(*id).or_default() += 1;
        }
        self.pinned = pins.into_iter().collect();
        self.complete = true;
        self.loaded = true;
    }

    /// Adopts our existing objects (read from the kernel) without knowing their users yet:
    /// they can be shared, but not deleted until a full [`load`](Self::load).
    pub fn adopt(&mut self, objects: impl IntoIterator<Item = (u32, u8, Option<NexthopSpec>)>) {
        let mut objects: Vec<_> = objects.into_iter().collect();
        objects.sort_unstable_by_key(|o| std::cmp::Reverse(o.0));
        for (id, protocol, spec) in objects {
            match spec {
                Some(spec) if protocol == self.protocol => {
                    self.specs.insert(id, spec);
                    self.by_spec.insert(spec, id);
                }
                _ => {
                    self.foreign.insert(id);
                }
            }
        }
        self.loaded = true;
    }

    /// Objects of ours that no route uses and that are safe to delete (see the module
    /// docs), lowest id first.
    pub fn unused(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .specs
            .keys()
            .filter(|id| !self.refs.contains_key(id) && !self.pinned.contains(id))
            .filter(|id| self.complete || self.fresh.contains(id))
            .copied()
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Number of our routes using `id`.
    #[cfg(test)]
    pub fn users(&self, id: u32) -> usize {
        self.refs.get(&id).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::codec::AF_INET;

    fn spec(gw: u8, oif: u32) -> NexthopSpec {
        NexthopSpec {
            family: AF_INET,
            gateway: Some(std::net::IpAddr::from([192, 168, 50, gw])),
            oif,
            onlink: false,
        }
    }

    fn key(i: u8) -> RouteKey {
        RouteKey::main(format!("10.70.0.{i}/32").parse().unwrap_or_default())
    }

    #[test]
    fn shared_objects_are_freed_when_their_last_route_goes() {
        let mut t = NexthopTable::new(80, true);
        let id = t.reserve_id();
        assert_eq!(id, 80 << 24);
        t.created(id, spec(2, 3));
        assert_eq!(t.id_for(&spec(2, 3)), Some(id));
        t.route_installed(key(1), Some(id));
        t.route_installed(key(2), Some(id));
        assert_eq!(t.users(id), 2);
        // Replacing a route over the same object again does not double count.
        t.route_installed(key(2), Some(id));
        assert_eq!(t.users(id), 2);
        t.route_removed(&key(1));
        assert!(t.unused().is_empty());
        // A route moved to inline next hops releases its object too.
        t.route_installed(key(2), None);
        assert_eq!(t.unused(), vec![id]);
        t.forget(id);
        assert_eq!(t.id_for(&spec(2, 3)), None);
    }

    #[test]
    fn adopted_objects_are_never_deleted_before_a_full_load() {
        let mut t = NexthopTable::new(80, true);
        t.adopt([(7, 80, Some(spec(2, 3))), (8, 12, Some(spec(3, 3)))]);
        assert_eq!(t.id_for(&spec(2, 3)), Some(7));
        // Someone else's object with the same shape is never reused.
        assert_eq!(t.id_for(&spec(3, 3)), None);
        assert!(t.unused().is_empty(), "users of 7 are not known yet");
        t.load(
            [
                (7, 80, Some(spec(2, 3))),
                (8, 12, Some(spec(3, 3))),
                (9, 80, Some(spec(4, 3))),
            ],
            [(key(1), 7)],
            [9],
        );
        // 7 has a user, 9 is pinned by another protocol's route, 8 is not ours.
        assert!(t.unused().is_empty());
        t.route_removed(&key(1));
        assert_eq!(t.unused(), vec![7]);
    }

    #[test]
    fn ids_skip_taken_ones_and_stay_in_our_range() {
        let mut t = NexthopTable::new(80, true);
        let a = t.reserve_id();
        t.taken(a + 1);
        let b = t.reserve_id();
        assert_eq!(b, a + 2);
        t.next_id = (81 << 24) - 1;
        assert_eq!(t.reserve_id(), (81 << 24) - 1);
        assert_eq!(t.reserve_id(), 80 << 24, "wraps within the range");
        assert!(!NexthopTable::new(80, false).enabled());
    }
}

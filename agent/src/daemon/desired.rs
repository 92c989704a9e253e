//! The routes routerd wants in the kernel, kept incrementally: work per change, not per tick.
//!
//! [`plan_routes`](super::routes::plan_routes) says what the kernel must hold for a set of
//! best paths; this module keeps that answer up to date as the inputs change, and hands out
//! only the differences ([`RouteDelta`]), so that a full table from the top-of-rack costs one
//! classification and one kernel write per route, and nothing at all while nothing changes.
//! (Measured before: the daemon rebuilt and diffed the whole desired set every 200 ms during a
//! load, and kept three copies of it; 1M routes took 45 s and about 1 KB per route.)
//!
//! The inputs, and what each change costs:
//! - **best paths** from the speaker ([`DesiredRoutes::apply_best`]): per changed prefix, the
//!   route it gives under the current [`RouteContext`] before and after; a pod block of a
//!   cluster node marks the overlay dirty instead (the overlay planner works on whole nodes);
//! - the **context** (pools, cluster nodes, this node's blocks, connected subnets;
//!   [`DesiredRoutes::set_context`]): nothing if equal, else one pass over the best paths
//!   (a pool or node change, rare);
//! - the **node routes** (blackholes of own blocks, workload host routes) and the **overlay
//!   routes** ([`DesiredRoutes::set_node_routes`], [`DesiredRoutes::set_overlay_routes`]):
//!   cluster-sized sets, diffed whole.
//!
//! The one copy of each learned route is its next hops in `best`; the kernel route is derived
//! from it when it is sent. When a node or overlay route and a learned route have the same key
//! the node's own wins (a workload /32 reflected back to us stays on its veth), as it did when
//! the desired set was a map filled in that order.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use bgp::rib::{BestPathChange, FibRoute};
use encap::{ClusterNode, PoolEncap};
use fib::{Route, RouteKey, MAIN_TABLE};
use ipnet::IpNet;

use super::cluster::ClusterView;
use super::routes::pool_encap;

/// A cluster node as route planning sees it: its name, and the VTEP it published for the
/// family of the address it is known by.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeEntry {
    name: String,
    vtep: Option<(IpAddr, [u8; 6])>,
}

/// Everything besides the best paths that decides which route a prefix gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteContext {
    this_node: String,
    /// Each pool's CIDR and encapsulation, in the view's order (the first match wins).
    pools: Vec<(IpNet, PoolEncap)>,
    /// Cluster nodes by underlay address (IPv4 and IPv6).
    nodes: BTreeMap<IpAddr, NodeEntry>,
    own_blocks: Vec<IpNet>,
    connected: Vec<IpNet>,
    /// The `default` BGPConfiguration's service ranges: nothing inside them is installed.
    service_ranges: Vec<IpNet>,
}

/// What a best path becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    /// No kernel route: no next hop, one of our own blocks, a connected subnet, or inside a
    /// service range.
    Nothing,
    /// A pod block of another cluster node: the overlay planner routes it.
    Block { owner: IpAddr, encap: PoolEncap },
    /// Installed as BGP gave it, with every ECMP next hop.
    Direct,
}

impl RouteContext {
    pub fn new(
        view: &ClusterView,
        this_node: &str,
        own_blocks: &[IpNet],
        connected: &[IpNet],
    ) -> Self {
        let pools = view
            .ip_pools()
            .iter()
            .map(|p| (p.cidr(), pool_encap(p)))
            .collect();
        let nodes = view
            .nodes_by_address()
            .into_iter()
            .map(|(address, node)| {
                let entry = NodeEntry {
                    name: node.metadata.name.clone(),
                    vtep: super::routes::vtep_of(node, address),
                };
                (address, entry)
            })
            .collect();
        let mut own_blocks = own_blocks.to_vec();
        own_blocks.sort();
        let mut connected = connected.to_vec();
        connected.sort();
        connected.dedup();
        let service_ranges = view
            .default_config()
            .map(|c| crate::service_routes::ServiceRanges::of(&c.spec))
            .unwrap_or_default()
            .all()
            .copied()
            .collect();
        RouteContext {
            this_node: this_node.to_string(),
            pools,
            nodes,
            own_blocks,
            connected,
            service_ranges,
        }
    }

    /// The rule of [`plan_routes`](super::routes::plan_routes), for one prefix.
    ///
    /// A prefix equal to a connected subnet gets no route: the kernel's own connected route is
    /// the better one (BIRD prefers its `direct` routes, preference 240, over BGP for the same
    /// reason), and ours with the same key would replace the kernel's, which routerd must never
    /// touch. A pod block has one owner: with ECMP towards several nodes (a block re-claimed
    /// while the old owner still advertises it) the first node among the next hops is kept,
    /// as the overlay needs one tunnel endpoint.
    ///
    /// Routes inside the service ranges (another node's service CIDR or Service host route)
    /// are advertised, never installed: kube-proxy on every node answers for Service
    /// addresses, and a kernel route would only send a node's own traffic for them to
    /// another node (Calico's `/rejectcidrs`, kept out of `calico_kernel_programming`).
    pub(super) fn classify(&self, prefix: &IpNet, hops: &[IpAddr]) -> Class {
        if hops.is_empty()
            || self.own_blocks.contains(prefix)
            || self.connected.contains(prefix)
            || self.service_ranges.iter().any(|r| r.contains(prefix))
        {
            return Class::Nothing;
        }
        let pool = self.pools.iter().find(|(cidr, _)| {
            cidr.prefix_len() <= prefix.prefix_len() && cidr.contains(&prefix.network())
        });
        let owner = hops
            .iter()
            .find_map(|hop| self.nodes.get(hop).map(|node| (*hop, node)));
        match (pool, owner) {
            (Some((_, encap)), Some((hop, node))) if node.name != self.this_node => Class::Block {
                owner: hop,
                encap: *encap,
            },
            _ => Class::Direct,
        }
    }

    /// The remote nodes owning `blocks` (prefixes classified [`Class::Block`]), each with its
    /// blocks, for [`encap::Overlay::apply`]; in underlay address order.
    pub(super) fn remotes<'a>(
        &self,
        blocks: impl IntoIterator<Item = (&'a IpNet, &'a [IpAddr])>,
    ) -> Vec<ClusterNode> {
        let mut remotes: BTreeMap<IpAddr, ClusterNode> = BTreeMap::new();
        for (prefix, hops) in blocks {
            let Class::Block { owner, encap } = self.classify(prefix, hops) else {
                continue;
            };
            let vtep = self.nodes.get(&owner).and_then(|n| n.vtep);
            remotes
                .entry(owner)
                .or_insert_with(|| ClusterNode {
                    node_ip: owner,
                    vtep,
                    blocks: Vec::new(),
                })
                .blocks
                .push((*prefix, encap));
        }
        remotes.into_values().collect()
    }
}

/// The kernel route a best path gives when it is [`Class::Direct`].
pub(super) fn direct_route(prefix: IpNet, hops: &[IpAddr]) -> Route {
    Route::unicast(prefix, hops.iter().map(|h| fib::NextHop::via(*h)).collect())
}

/// Writes that bring the kernel from the last delta to the current desired set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteDelta {
    pub replace: Vec<Route>,
    pub delete: Vec<RouteKey>,
}

impl RouteDelta {
    pub fn is_empty(&self) -> bool {
        self.replace.is_empty() && self.delete.is_empty()
    }
}

/// The desired kernel routes and the changes not yet handed out. See the module docs.
#[derive(Debug, Default)]
pub struct DesiredRoutes {
    context: RouteContext,
    /// Next hops of every best path with any (the one copy of a learned route).
    best: BTreeMap<IpNet, Box<[IpAddr]>>,
    /// The prefixes of `best` that are [`Class::Block`] under `context`.
    blocks: BTreeSet<IpNet>,
    node_routes: Vec<Route>,
    overlay_routes: Vec<Route>,
    /// `node_routes` then `overlay_routes` by key (the later wins), which shadow learned routes.
    local: BTreeMap<RouteKey, Route>,
    /// Prefixes of `best` that are [`Class::Direct`] (shadowed or not).
    direct: usize,
    /// Keys whose route may have changed since the last [`Self::take_delta`]; what to write
    /// is read from the current state then (a key, not a route: a bulk load between two
    /// deltas would otherwise hold a second copy of every route).
    pending: BTreeSet<RouteKey>,
    overlay_dirty: bool,
}

impl DesiredRoutes {
    pub fn new(context: RouteContext) -> Self {
        DesiredRoutes {
            context,
            ..Default::default()
        }
    }

    /// Folds a batch of the speaker's best-path changes in.
    pub fn apply_best(&mut self, batch: Vec<BestPathChange>) {
        for change in batch {
            let hops: Option<Box<[IpAddr]>> = match change.route {
                FibRoute::Via(hops) if !hops.is_empty() => {
                    Some(hops.iter().map(|h| h.next_hop).collect())
                }
                FibRoute::Via(_) | FibRoute::Unreachable | FibRoute::Local => None,
            };
            let prefix = change.prefix;
            let before = match &hops {
                Some(hops) => self.best.insert(prefix, hops.clone()),
                None => self.best.remove(&prefix),
            };
            let after = hops.as_deref().unwrap_or(&[]);
            let context = &self.context;
            let was = before
                .as_deref()
                .map_or(Class::Nothing, |h| context.classify(&prefix, h));
            let now = context.classify(&prefix, after);
            self.reclassified(prefix, was, before.as_deref(), now, after);
        }
    }

    /// Makes `context` current; returns whether it changed (then every best path is
    /// classified again, and the overlay is dirty).
    pub fn set_context(&mut self, context: RouteContext) -> bool {
        if context == self.context {
            return false;
        }
        let old = std::mem::replace(&mut self.context, context);
        let best = std::mem::take(&mut self.best);
        for (prefix, hops) in &best {
            let was = old.classify(prefix, hops);
            let now = self.context.classify(prefix, hops);
            self.reclassified(*prefix, was, Some(hops), now, hops);
        }
        self.best = best;
        self.overlay_dirty = true;
        true
    }

    /// Records a prefix's move from `was` (with `before`'s hops) to `now` (with `after`'s):
    /// the block index, the direct count and the kernel writes.
    fn reclassified(
        &mut self,
        prefix: IpNet,
        was: Class,
        before: Option<&[IpAddr]>,
        now: Class,
        after: &[IpAddr],
    ) {
        let was_block = matches!(was, Class::Block { .. });
        let is_block = matches!(now, Class::Block { .. });
        if was_block || is_block {
            self.overlay_dirty = true;
            if is_block {
                self.blocks.insert(prefix);
            } else {
                self.blocks.remove(&prefix);
            }
        }
        let was_direct = was == Class::Direct;
        let is_direct = now == Class::Direct;
        match (was_direct, is_direct) {
            (false, true) => self.direct += 1,
            (true, false) => self.direct -= 1,
            _ => {}
        }
        let key = RouteKey::main(prefix);
        if self.local.contains_key(&key) {
            return;
        }
        let old = was_direct
            .then(|| before.map(|h| direct_route(prefix, h)))
            .flatten();
        let new = is_direct.then(|| direct_route(prefix, after));
        if old != new {
            self.pending.insert(key);
        }
    }

    /// The blackholes of this node's blocks and its workload routes (cluster-sized).
    pub fn set_node_routes(&mut self, routes: Vec<Route>) {
        self.node_routes = routes;
        self.rebuild_local();
    }

    /// The overlay's routes to remote blocks, from [`encap::Overlay::apply`] of [`Self::remotes`].
    pub fn set_overlay_routes(&mut self, routes: Vec<Route>) {
        self.overlay_routes = routes;
        self.overlay_dirty = false;
        self.rebuild_local();
    }

    fn rebuild_local(&mut self) {
        let local: BTreeMap<RouteKey, Route> = self
            .node_routes
            .iter()
            .chain(&self.overlay_routes)
            .map(|r| (r.key(), r.clone()))
            .collect();
        for key in self.local.keys() {
            if !local.contains_key(key) {
                // A learned route with this key, if any, comes out from under it.
                self.pending.insert(*key);
            }
        }
        for (key, route) in &local {
            if self.local.get(key) != Some(route) {
                self.pending.insert(*key);
            }
        }
        self.local = local;
    }

    /// The route desired for `key` now: the node's or overlay's, else the learned one.
    fn current(&self, key: &RouteKey) -> Option<Route> {
        match self.local.get(key) {
            Some(route) => Some(route.clone()),
            None => self.learned_route(key),
        }
    }

    /// The direct route of the best path with this key, if it is one.
    fn learned_route(&self, key: &RouteKey) -> Option<Route> {
        if key.table != MAIN_TABLE {
            return None;
        }
        let hops = self.best.get(&key.destination)?;
        (self.context.classify(&key.destination, hops) == Class::Direct)
            .then(|| direct_route(key.destination, hops))
    }

    /// Whether a pod block changed since the overlay routes were last set.
    pub fn overlay_dirty(&self) -> bool {
        self.overlay_dirty
    }

    /// The remote nodes and their blocks, for [`encap::Overlay::apply`].
    pub fn remotes(&self) -> Vec<ClusterNode> {
        let blocks = self
            .blocks
            .iter()
            .filter_map(|p| self.best.get(p).map(|h| (p, &h[..])));
        self.context.remotes(blocks)
    }

    /// The writes since the last call.
    pub fn take_delta(&mut self) -> RouteDelta {
        let mut delta = RouteDelta::default();
        for key in std::mem::take(&mut self.pending) {
            match self.current(&key) {
                Some(route) => delta.replace.push(route),
                None => delta.delete.push(key),
            }
        }
        delta
    }

    /// The whole desired set, in key order (what was pending is in it). Only the tests use
    /// it, to hold the deltas to the from-scratch plan: the daemon's first reconcile replaced
    /// the full apply, so no copy of a full table is ever made.
    #[cfg(test)]
    pub fn take_full(&mut self) -> Vec<Route> {
        self.pending.clear();
        let learned = self.best.iter().filter_map(|(prefix, hops)| {
            let key = RouteKey::main(*prefix);
            (!self.local.contains_key(&key) && self.context.classify(prefix, hops) == Class::Direct)
                .then(|| (key, direct_route(*prefix, hops)))
        });
        let mut all: BTreeMap<RouteKey, Route> = learned.collect();
        all.extend(self.local.iter().map(|(k, r)| (*k, r.clone())));
        all.into_values().collect()
    }

    /// How many routes are desired.
    pub fn len(&self) -> usize {
        let shadowed = self
            .local
            .keys()
            .filter(|k| self.learned_route(k).is_some())
            .count();
        self.local.len() + self.direct - shadowed
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::daemon::routes::tests::{node, pool};
    use crate::daemon::routes::{plan_routes, BestPaths};
    use bgp::rib::{FibNextHop, PeerId};
    use proptest::prelude::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn change(prefix: IpNet, hops: &[IpAddr]) -> BestPathChange {
        BestPathChange {
            prefix,
            route: if hops.is_empty() {
                FibRoute::Unreachable
            } else {
                FibRoute::Via(
                    hops.iter()
                        .map(|h| FibNextHop {
                            next_hop: *h,
                            peer: PeerId::LOCAL,
                        })
                        .collect(),
                )
            },
        }
    }

    /// What a test overlay makes of the remote nodes: each block via its node.
    fn overlay(remotes: &[ClusterNode]) -> Vec<Route> {
        remotes
            .iter()
            .flat_map(|n| {
                n.blocks
                    .iter()
                    .map(|(b, _)| Route::via(*b, fib::NextHop::onlink(n.node_ip, "tunl0")))
            })
            .collect()
    }

    /// A kernel that applies deltas, to compare with the from-scratch plan.
    #[derive(Default)]
    struct Kernel(BTreeMap<RouteKey, Route>);

    impl Kernel {
        fn apply(&mut self, delta: RouteDelta) {
            for key in delta.delete {
                self.0.remove(&key);
            }
            for route in delta.replace {
                self.0.insert(route.key(), route);
            }
        }
    }

    /// The whole desired set from scratch, in the order the daemon used to fill its map.
    fn reference(
        view: &ClusterView,
        own: &[IpNet],
        connected: &[IpNet],
        best: &BestPaths,
        node_routes: &[Route],
    ) -> BTreeMap<RouteKey, Route> {
        let plan = plan_routes(view, "a", own, connected, best);
        plan.blackholes
            .into_iter()
            .chain(plan.direct)
            .chain(node_routes.iter().cloned())
            .chain(overlay(&plan.remotes))
            .map(|r| (r.key(), r))
            .collect()
    }

    #[test]
    fn a_learned_route_is_written_once_and_nothing_while_nothing_changes() {
        let view = ClusterView {
            nodes: vec![node("a", "10.0.0.1/24"), node("b", "10.0.0.2/24")],
            pools: vec![pool("p", "10.244.0.0/16", "Always")],
            ..Default::default()
        };
        let context = RouteContext::new(&view, "a", &[net("10.244.0.0/24")], &[]);
        let mut desired = DesiredRoutes::new(context.clone());
        desired.apply_best(vec![change(net("192.0.2.0/24"), &[ip("10.0.0.254")])]);
        let delta = desired.take_delta();
        assert_eq!(
            delta.replace,
            vec![direct_route(net("192.0.2.0/24"), &[ip("10.0.0.254")])]
        );
        assert!(!desired.overlay_dirty(), "a ToR route is not a pod block");
        // The same context again (the daemon's tick), and no change: no work, no writes.
        assert!(!desired.set_context(context));
        assert!(desired.take_delta().is_empty());
        // A pod block of node b: the overlay is dirty, nothing is written directly.
        desired.apply_best(vec![change(net("10.244.1.0/24"), &[ip("10.0.0.2")])]);
        assert!(desired.overlay_dirty());
        assert!(desired.take_delta().is_empty());
        assert_eq!(desired.remotes().len(), 1);
        // Withdrawn: deleted.
        desired.apply_best(vec![change(net("192.0.2.0/24"), &[])]);
        assert_eq!(
            desired.take_delta().delete,
            vec![RouteKey::main(net("192.0.2.0/24"))]
        );
        assert_eq!(desired.len(), 0);
    }

    #[test]
    fn a_node_route_shadows_a_learned_one_and_uncovers_it_when_it_goes() {
        let mut desired = DesiredRoutes::default();
        let prefix = net("10.244.0.5/32");
        desired.apply_best(vec![change(prefix, &[ip("10.0.0.2")])]);
        desired.take_delta();
        let workload = Route::via(prefix, fib::NextHop::dev("cali1"));
        desired.set_node_routes(vec![workload.clone()]);
        assert_eq!(desired.take_delta().replace, vec![workload]);
        assert_eq!(desired.len(), 1);
        desired.set_node_routes(Vec::new());
        assert_eq!(
            desired.take_delta().replace,
            vec![direct_route(prefix, &[ip("10.0.0.2")])]
        );
    }

    /// One step of the daemon's inputs.
    #[derive(Debug, Clone)]
    enum Step {
        Best(Vec<(usize, Vec<usize>)>),
        OwnBlock(bool),
        Connected(bool),
        PoolMode(bool),
        NodeB(bool),
        Workload(bool),
    }

    const PREFIXES: [&str; 8] = [
        "10.244.0.0/24", // own block (when owned)
        "10.244.1.0/24", // a block of node b
        "10.244.2.0/24",
        "10.244.0.5/32", // the workload's address
        "192.0.2.0/24",
        "198.51.100.0/24",
        "10.0.0.0/24", // the connected segment (when connected)
        "0.0.0.0/0",
    ];
    const HOPS: [&str; 4] = ["10.0.0.2", "10.0.0.254", "10.0.0.253", "10.0.0.1"];

    fn step() -> impl Strategy<Value = Step> {
        let hops = proptest::collection::vec(0..HOPS.len(), 0..3);
        prop_oneof![
            4 => proptest::collection::vec((0..PREFIXES.len(), hops), 1..6).prop_map(Step::Best),
            1 => any::<bool>().prop_map(Step::OwnBlock),
            1 => any::<bool>().prop_map(Step::Connected),
            1 => any::<bool>().prop_map(Step::PoolMode),
            1 => any::<bool>().prop_map(Step::NodeB),
            1 => any::<bool>().prop_map(Step::Workload),
        ]
    }

    proptest! {
        /// Whatever the order of inputs, the kernel fed only the deltas holds exactly what the
        /// from-scratch plan says, and a full apply would write the same set.
        #[test]
        fn deltas_keep_the_kernel_equal_to_the_plan_from_scratch(
            steps in proptest::collection::vec(step(), 1..40)
        ) {
            let mut best = BestPaths::new();
            let (mut own, mut connected, mut always, mut node_b, mut workload) =
                (false, false, true, true, false);
            let mut desired = DesiredRoutes::default();
            let mut kernel = Kernel::default();
            for step in steps {
                match step {
                    Step::Best(changes) => {
                        let batch = changes
                            .into_iter()
                            .map(|(p, hops)| {
                                let mut hops: Vec<IpAddr> = hops.into_iter().map(|h| ip(HOPS[h])).collect();
                                hops.sort();
                                hops.dedup();
                                let prefix = net(PREFIXES[p]);
                                if hops.is_empty() {
                                    best.remove(&prefix);
                                } else {
                                    best.insert(prefix, hops.clone());
                                }
                                change(prefix, &hops)
                            })
                            .collect();
                        desired.apply_best(batch);
                    }
                    Step::OwnBlock(v) => own = v,
                    Step::Connected(v) => connected = v,
                    Step::PoolMode(v) => always = v,
                    Step::NodeB(v) => node_b = v,
                    Step::Workload(v) => workload = v,
                }
                let mut nodes = vec![node("a", "10.0.0.1/24")];
                if node_b {
                    nodes.push(node("b", "10.0.0.2/24"));
                }
                let view = ClusterView {
                    nodes,
                    pools: vec![pool("p", "10.244.0.0/16", if always { "Always" } else { "Never" })],
                    ..Default::default()
                };
                let own_blocks: Vec<IpNet> = own.then(|| net("10.244.0.0/24")).into_iter().collect();
                let connected_nets: Vec<IpNet> = connected.then(|| net("10.0.0.0/24")).into_iter().collect();
                let node_routes: Vec<Route> = own_blocks
                    .iter()
                    .map(|b| Route::blackhole(*b))
                    .chain(workload.then(|| Route::via(net("10.244.0.5/32"), fib::NextHop::dev("cali1"))))
                    .collect();
                desired.set_context(RouteContext::new(&view, "a", &own_blocks, &connected_nets));
                desired.set_node_routes(node_routes.clone());
                if desired.overlay_dirty() {
                    let routes = overlay(&desired.remotes());
                    desired.set_overlay_routes(routes);
                }
                kernel.apply(desired.take_delta());
                let want = reference(&view, &own_blocks, &connected_nets, &best, &node_routes);
                prop_assert_eq!(&kernel.0, &want);
                prop_assert_eq!(desired.len(), want.len());
                let full: Vec<Route> = want.values().cloned().collect();
                prop_assert_eq!(desired.take_full(), full);
            }
        }
    }
}

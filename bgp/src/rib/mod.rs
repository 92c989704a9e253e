//! Routing Information Bases and the decision process (RFC 4271 §3.2, §9), with route
//! reflection (RFC 4456) and Calico-style import/export policy — sans-IO.
//!
//! The speaker driver feeds the [`Rib`] with what sessions deliver (`peer_up`, `update`,
//! `peer_down` / `peer_down_graceful`, `refresh`), what the node originates (`originate`,
//! `withdraw_local`) and timer expiries it tracks itself (`flush_stale`), and gets back a
//! [`RibOutputs`]: UPDATE material per peer, grouped by shared attribute set so
//! that the codec can pack many prefixes in one message, End-of-RIB markers, and best-path
//! changes for the FIB. Nothing here does I/O or keeps time.
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use bgp::packet::{AsPath, Family, Origin, PathAttributes, Update};
//! use bgp::rib::{FibRoute, PeerConfig, PeerSession, Rib, RibConfig};
//!
//! let mut rib = Rib::new(RibConfig::new(64512, Ipv4Addr::new(10, 0, 0, 1)));
//! let upstream = rib.add_peer(PeerConfig::new(IpAddr::from([10, 0, 1, 2]), 65001, 64512));
//! let mesh = rib.add_peer(PeerConfig::new(IpAddr::from([10, 0, 0, 2]), 64512, 64512));
//! for (peer, local, id) in [(upstream, [10, 0, 1, 1], [10, 0, 1, 2]), (mesh, [10, 0, 0, 1], [10, 0, 0, 2])] {
//!     let session = PeerSession {
//!         router_id: Ipv4Addr::from(id),
//!         local_ipv4: Some(Ipv4Addr::from(local)),
//!         local_ipv6: None,
//!         families: vec![Family::Ipv4Unicast],
//!         shared_subnets: Vec::new(),
//!         add_path_send: Vec::new(),
//!     };
//!     let out = rib.peer_up(peer, session).unwrap();
//!     assert_eq!(out.end_of_rib.len(), 1); // empty table, then End-of-RIB
//! }
//! let update = Update {
//!     attributes: PathAttributes {
//!         origin: Some(Origin::Igp),
//!         as_path: Some(AsPath::from_sequence(vec![65001])),
//!         next_hop: Some(Ipv4Addr::new(10, 0, 1, 2)),
//!         ..PathAttributes::default()
//!     },
//!     nlri: vec!["192.0.2.0/24".parse().unwrap()],
//!     ..Update::default()
//! };
//! let out = rib.update(upstream, &update).unwrap();
//! // The iBGP mesh peer gets the route (send withdraws, then updates, then End-of-RIB) ...
//! let to_mesh = out.updates.iter().find(|u| u.peer == mesh).unwrap();
//! assert_eq!(to_mesh.attrs.attrs.local_pref, Some(100));
//! let _wire: Update = to_mesh.to_update();
//! // ... and the FIB a route via the upstream.
//! assert!(matches!(&out.best_changes[0].route, FibRoute::Via(hops) if hops[0].peer == upstream));
//! ```
//!
//! # Layout, and why
//! A full table is a million prefixes, so memory per prefix dominates:
//! - Attribute sets are interned ([`AttrTable`]): every path holds an `Arc<RouteAttrs>`, and
//!   the thousands of distinct sets are stored once.
//! - The Loc-RIB is one hash map per family (sharded by prefix hash, see `table.rs`) from
//!   prefix to the candidate paths of every peer, best first. This *is* the post-policy Adj-RIB-In of every peer (RFC 4271
//!   §3.2 allows any implementation that behaves as if the three RIBs existed); a peer's
//!   Adj-RIB-In is the paths tagged with its [`PeerId`]. A single path is stored inline.
//! - There is no stored Adj-RIB-Out. What a peer was sent for a prefix is a pure function of
//!   the best path and that peer's configuration ([`export::export_attrs`]); when the best
//!   path changes, the RIB evaluates the function for the old and the new best and sends the
//!   difference (BIRD 2 works the same way by default). Export results are cached per
//!   (attribute set, source peer, destination peer), so a full table costs one export
//!   computation per distinct attribute set. A change of export policy re-evaluates the whole
//!   table with the old and the new policy ([`Rib::set_export_policy`]).
//!
//! # Outputs
//! Within one [`RibOutputs`] a prefix can appear in a withdrawal and, later, an
//! announcement for the same peer (an UPDATE that withdraws and re-announces it); the driver
//! must send `withdraws` before `updates`, and `end_of_rib` last.
//!
//! # Decision process and ECMP
//! See [`decision`]. The FIB gets the ECMP set: up to [`RibConfig::max_paths`] paths equal
//! through the IGP-cost step. The default is 16, because Calico runs BIRD's kernel protocol
//! with `merge paths on` (whose default limit is 16); set 1 for a single best path.
//!
//! # Graceful restart (RFC 4724 §4.2, receiving side)
//! [`Rib::peer_down_graceful`] keeps a restarting peer's paths of the families it preserves,
//! marked stale and still forwarded; each re-announcement refreshes one, its End-of-RIB
//! drops the rest of that family, and [`Rib::flush_stale`] drops them all when the driver's
//! restart or stale timer expires.
//!
//! # Import acceptance (before policy)
//! A path is excluded — and any previous path from the same peer for the prefix withdrawn —
//! when our AS appears in AS_PATH more than `allow_local_as` times (RFC 4271 §9.1.2), its
//! ORIGINATOR_ID is our router id or CLUSTER_LIST holds our cluster id (RFC 4456 §8), its
//! next hop is unusable ([`export::next_hop_usable`]), or the codec marked the UPDATE
//! treat-as-withdraw (RFC 7606 §2).

pub mod attrs;
pub mod decision;
pub mod error;
pub mod export;
mod hash;
mod output;
pub mod peer;
pub mod policy;
mod table;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tracing::debug;

use crate::packet::{path_id_at, Family, Origin, PathAttributes, Update};

pub use attrs::{AttrTable, RouteAttrs};
pub use decision::{compare, multipath_equal, Candidate, DecisionOptions, DecisionStep, RibPath};

/// Where one path of a prefix stands in the decision ([`Rib::explain`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathStanding {
    /// The best path.
    Best,
    /// Not the best, but installed beside it (ECMP, `max_paths`).
    Multipath,
    /// The best path won at this step.
    Beaten(DecisionStep),
}
pub use error::RibError;
pub use export::{export_attrs, reflection_allowed, ExportContext, PathSource};
pub use peer::{NextHopMode, PeerConfig, PeerId, PeerSession, PeerStats};
pub use policy::{
    ExportPolicy, FilterAction, FilterRule, ImportPolicy, MatchOperator, PrefixCommunities,
    PrefixLengthRange, RouteFilter, RouteSourceMatch,
};

use decision::{select_best, CandidateView, PathSet, Upsert};
use hash::FoldHashBuilder;
use output::OutputBuilder;
pub use output::{
    BestPathChange, EndOfRib, FibNextHop, FibRoute, OutUpdate, OutWithdraw, RibOutputs,
};
use table::PrefixTable;

/// Interior cost to reach a next hop (RFC 4271 §9.1.2.2 e), supplied by whoever knows the
/// IGP/kernel routes; `None` when the next hop does not resolve at all (§9.1.2.1: such
/// paths are not used). Without a function, every next hop resolves at cost 0.
pub type IgpCostFn = dyn Fn(IpAddr) -> Option<u32> + Send + Sync;

/// Router-wide settings of the RIB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RibConfig {
    /// Our BGP Identifier: ORIGINATOR_ID loop check (RFC 4456 §8) and default cluster id.
    pub router_id: Ipv4Addr,
    /// Our AS, for AS-path loop detection in addition to each peer's `local_as`.
    pub local_as: u32,
    /// CLUSTER_ID when acting as route reflector; defaults to `router_id` (RFC 4456 §7).
    pub cluster_id: Option<Ipv4Addr>,
    /// Most paths installed together in the FIB (ECMP); at least 1. See the module docs.
    pub max_paths: usize,
    pub always_compare_med: bool,
    /// LOCAL_PREF given to eBGP-learned routes and assumed where absent.
    pub default_local_pref: u32,
}

impl RibConfig {
    pub fn new(local_as: u32, router_id: Ipv4Addr) -> RibConfig {
        RibConfig {
            router_id,
            local_as,
            cluster_id: None,
            max_paths: 16,
            always_compare_med: false,
            default_local_pref: 100,
        }
    }

    pub fn cluster_id(&self) -> Ipv4Addr {
        self.cluster_id.unwrap_or(self.router_id)
    }

    fn decision(&self) -> DecisionOptions {
        DecisionOptions {
            default_local_pref: self.default_local_pref,
            always_compare_med: self.always_compare_med,
        }
    }

    fn export(&self) -> ExportContext {
        ExportContext {
            cluster_id: self.cluster_id(),
            default_local_pref: self.default_local_pref,
        }
    }
}

/// Why a received path was excluded before policy (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportReject {
    AsLoop,
    OriginatorIsUs,
    ClusterLoop,
    UnusableNextHop,
    TreatAsWithdraw,
    MissingNextHop,
}

impl fmt::Display for ImportReject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImportReject::AsLoop => "own AS in AS_PATH",
            ImportReject::OriginatorIsUs => "ORIGINATOR_ID is our router id",
            ImportReject::ClusterLoop => "our cluster id in CLUSTER_LIST",
            ImportReject::UnusableNextHop => "unusable next hop",
            ImportReject::TreatAsWithdraw => "treat-as-withdraw",
            ImportReject::MissingNextHop => "NLRI without NEXT_HOP",
        })
    }
}

/// The acceptance rules of the module docs, for a path received from `peer`.
pub fn import_check(
    config: &RibConfig,
    peer: &PeerConfig,
    session: &PeerSession,
    attrs: &PathAttributes,
    next_hop: IpAddr,
) -> Option<ImportReject> {
    if let Some(path) = &attrs.as_path {
        let allowed = usize::from(peer.allow_local_as);
        if path.count(peer.local_as) > allowed
            || (config.local_as != peer.local_as && path.count(config.local_as) > allowed)
        {
            return Some(ImportReject::AsLoop);
        }
    }
    if attrs.originator_id == Some(config.router_id) {
        return Some(ImportReject::OriginatorIsUs);
    }
    if attrs.cluster_list.contains(&config.cluster_id()) {
        return Some(ImportReject::ClusterLoop);
    }
    if !export::next_hop_usable(next_hop, session, config.router_id) {
        return Some(ImportReject::UnusableNextHop);
    }
    None
}

#[derive(Debug)]
struct PeerState {
    config: PeerConfig,
    /// Kept until the peer's paths are gone after it goes down (their export needs its
    /// router id), hence separate from `up`.
    session: Option<PeerSession>,
    up: bool,
    /// The export class (see [`ExportClassKey`]) while up; part of the export cache key.
    class: u32,
    /// Paths of the peer in the Loc-RIB candidates, per family ([`family_slot`]).
    accepted: [u64; 2],
    /// Prefixes we advertise to the peer, per family ([`family_slot`]).
    advertised: [u64; 2],
    /// Prefixes the peer announced that import rules or policy rejected (for `received`).
    filtered: HashSet<IpNet, FoldHashBuilder>,
    /// `filtered` counted per family, so that [`Rib::received`] costs nothing.
    filtered_count: [u64; 2],
}

/// The index of a prefix's family in the per-family counters.
fn family_slot(prefix: &IpNet) -> usize {
    match prefix {
        IpNet::V4(_) => 0,
        IpNet::V6(_) => 1,
    }
}

impl PeerState {
    fn unfilter(&mut self, prefix: &IpNet) {
        if !self.filtered.is_empty() && self.filtered.remove(prefix) {
            self.filtered_count[family_slot(prefix)] -= 1;
        }
    }

    fn filter(&mut self, prefix: IpNet) {
        let slot = family_slot(&prefix);
        if self.filtered.insert(prefix) {
            self.filtered_count[slot] += 1;
        }
    }

    fn clear_filtered(&mut self) {
        self.filtered = HashSet::default();
        self.filtered_count = [0; 2];
    }
}

impl PeerState {
    fn source(&self) -> Option<PathSource> {
        let session = self.session.as_ref()?;
        Some(PathSource::Peer {
            ibgp: self.config.is_ibgp(),
            rr_client: self.config.route_reflector_client,
            router_id: session.router_id,
        })
    }

    fn carries(&self, family: Family) -> bool {
        self.up
            && self
                .session
                .as_ref()
                .is_some_and(|s| s.families.contains(&family))
    }

    /// The peer is sent every path of `family`'s prefixes with ADD-PATH identifiers.
    fn sends_paths(&self, family: Family) -> bool {
        self.carries(family)
            && self
                .session
                .as_ref()
                .is_some_and(|s| s.add_path_send.contains(&family))
    }
}

/// Everything about a destination peer that [`export_attrs`] depends on. Peers with equal
/// keys receive identical attributes for the same path ("update groups"), so the export
/// cache is keyed by the class number of this key rather than by peer: a route reflector
/// with a thousand alike clients computes each reflected attribute set once, not a thousand
/// times. (Export filters and per-prefix communities depend on the prefix and are applied
/// outside the cache.)
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ExportClassKey {
    ibgp: bool,
    rr_client: bool,
    next_hop_mode: NextHopMode,
    local_as: u32,
    local_ipv4: Option<Ipv4Addr>,
    local_ipv6: Option<Ipv6Addr>,
    communities: Vec<crate::packet::Community>,
    large_communities: Vec<crate::packet::LargeCommunity>,
}

impl ExportClassKey {
    fn new(config: &PeerConfig, session: &PeerSession) -> ExportClassKey {
        ExportClassKey {
            ibgp: config.is_ibgp(),
            rr_client: config.route_reflector_client,
            next_hop_mode: config.next_hop_mode,
            local_as: config.local_as,
            local_ipv4: session.local_ipv4,
            local_ipv6: session.local_ipv6,
            communities: config.export.communities.clone(),
            large_communities: config.export.large_communities.clone(),
        }
    }
}

/// Numbers export classes; grows with distinct peer configurations only.
#[derive(Debug, Default)]
struct ExportClasses(HashMap<ExportClassKey, u32>);

impl ExportClasses {
    fn class(&mut self, key: ExportClassKey) -> u32 {
        let next = self.0.len() as u32 + 1;
        *self.0.entry(key).or_insert(next)
    }
}

/// (source attribute set's address, source peer, destination export class, family).
type ExportKey = (usize, PeerId, u32, Family);

/// Memoised [`export_attrs`] results, with a one-entry front cache per destination peer
/// because consecutive prefixes of an UPDATE share everything but the prefix.
#[derive(Debug, Default)]
struct ExportCache {
    map: HashMap<ExportKey, Option<Arc<RouteAttrs>>, FoldHashBuilder>,
    /// Indexed by destination `PeerId`.
    last: Vec<Option<(ExportKey, Option<Arc<RouteAttrs>>)>>,
}

impl ExportCache {
    fn clear(&mut self) {
        self.map.clear();
        self.last.clear();
    }
}

/// A change to one prefix's candidate paths. A removal takes every path it selects in one
/// step, so that each prefix is changed (and its outputs produced) once per call.
enum Change {
    Upsert(RibPath),
    Remove(Removal),
}

/// Which of a prefix's paths a [`Change::Remove`] takes.
#[derive(Debug, Clone, Copy)]
enum Removal {
    /// The peer's path with this ADD-PATH identifier (0 without ADD-PATH).
    Path(PeerId, u32),
    /// Every path of the peer.
    AllOf(PeerId),
    /// The peer's stale paths (End-of-RIB after a graceful restart, RFC 4724 §4.2).
    StaleOf(PeerId),
}

impl Removal {
    fn peer(self) -> PeerId {
        match self {
            Removal::Path(p, _) | Removal::AllOf(p) | Removal::StaleOf(p) => p,
        }
    }

    fn selects(self, path: &RibPath) -> bool {
        match self {
            Removal::Path(p, id) => path.peer == p && path.path_id == id,
            Removal::AllOf(p) => path.peer == p,
            Removal::StaleOf(p) => path.peer == p && path.stale,
        }
    }
}

/// Our ADD-PATH identifiers for paths learned with one (see [`Env::tx_id`]).
type TxIds = HashMap<(PeerId, u32), u32, FoldHashBuilder>;

/// The first identifier [`TxIds`] hands out: above every `PeerId`, which are the
/// identifiers of paths learned without one.
const FIRST_TX_ID: u32 = 1 << 31;

/// The RIB. See the module docs.
pub struct Rib {
    config: RibConfig,
    /// Indexed by `PeerId`; slot 0 (the local pseudo-peer) stays `None`.
    peers: Vec<Option<PeerState>>,
    table: AttrTable,
    v4: PrefixTable<Ipv4Net>,
    v6: PrefixTable<Ipv6Net>,
    cache: ExportCache,
    classes: ExportClasses,
    igp_cost: Option<Box<IgpCostFn>>,
    /// Identifiers we send (ADD-PATH) for paths that arrived with one.
    tx_ids: TxIds,
    next_tx_id: u32,
    /// Per family ([`family_slot`]): some up peer is sent ADD-PATH identifiers, so changes
    /// must keep the prefix's old paths to compare against.
    add_path_senders: [bool; 2],
}

impl fmt::Debug for Rib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rib")
            .field("config", &self.config)
            .field("peers", &self.peers.iter().flatten().count())
            .field("ipv4_prefixes", &self.v4.len())
            .field("ipv6_prefixes", &self.v6.len())
            .field("attribute_sets", &self.table.len())
            .finish()
    }
}

/// The RIB split for one pass over its tables: the read-only settings and peers, and
/// the tables that the pass changes.
struct Split<'a> {
    env: Env<'a>,
    table: &'a mut AttrTable,
    v4: &'a mut PrefixTable<Ipv4Net>,
    v6: &'a mut PrefixTable<Ipv6Net>,
    cache: &'a mut ExportCache,
}

/// Borrowed, read-only view used while one prefix's path set is mutably borrowed.
struct Env<'a> {
    config: &'a RibConfig,
    peers: &'a [Option<PeerState>],
    igp_cost: Option<&'a IgpCostFn>,
    tx_ids: &'a TxIds,
    add_path_senders: [bool; 2],
}

impl CandidateView for Env<'_> {
    fn candidate<'p>(&self, path: &'p RibPath) -> Option<Candidate<'p>> {
        if path.peer.is_local() {
            return Some(Candidate {
                attrs: &path.attrs,
                resolvable: true,
                local: true,
                ebgp: false,
                router_id: self.config.router_id,
                peer_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                igp_cost: 0,
            });
        }
        let peer = self.peers.get(path.peer.index())?.as_ref()?;
        let router_id = peer
            .session
            .as_ref()
            .map_or(Ipv4Addr::UNSPECIFIED, |s| s.router_id);
        Some(Candidate {
            attrs: &path.attrs,
            resolvable: !path.unresolved,
            local: false,
            ebgp: !peer.config.is_ibgp(),
            router_id,
            peer_address: peer.config.address,
            igp_cost: self
                .igp_cost
                .map_or(0, |f| f(path.attrs.next_hop).unwrap_or(u32::MAX)),
        })
    }
}

impl Env<'_> {
    /// The ADD-PATH identifier under which `path` is sent (RFC 7911 §3): unique among a
    /// prefix's paths and stable while the path exists, so that a later announcement
    /// replaces it and a withdrawal names it. A path learned without an identifier (the
    /// common case: one per peer) is sent under its peer's number, local routes under 0;
    /// one learned with an identifier under a number handed out for (peer, identifier).
    fn tx_id(&self, path: &RibPath) -> u32 {
        if path.path_id == 0 {
            return path.peer.0;
        }
        self.tx_ids
            .get(&(path.peer, path.path_id))
            .copied()
            .unwrap_or(path.peer.0)
    }

    /// Whether some up peer is sent every path of `family` (ADD-PATH).
    fn add_path(&self, family: Family) -> bool {
        self.add_path_senders[family as usize]
    }

    /// Whether the cost function fails to resolve `path`'s next hop (local paths always
    /// resolve).
    fn unresolved(&self, path: &RibPath) -> bool {
        !path.peer.is_local()
            && self
                .igp_cost
                .is_some_and(|f| f(path.attrs.next_hop).is_none())
    }

    fn fib_route(&self, set: Option<&PathSet>) -> FibRoute {
        let Some(set) = set else {
            return FibRoute::Unreachable;
        };
        let paths = set.as_slice();
        let best = set.best();
        if best.peer.is_local() {
            return FibRoute::Local;
        }
        if best.unresolved {
            // The best is unresolvable only when all are.
            return FibRoute::Unreachable;
        }
        let mut hops = vec![FibNextHop {
            next_hop: best.attrs.next_hop,
            peer: best.peer,
        }];
        if paths.len() > 1 && self.config.max_paths > 1 {
            let opts = self.config.decision();
            if let Some(b) = self.candidate(best) {
                for p in &paths[1..] {
                    if hops.len() >= self.config.max_paths {
                        break;
                    }
                    if hops.iter().any(|h| h.next_hop == p.attrs.next_hop) {
                        continue;
                    }
                    if let Some(c) = self.candidate(p) {
                        if multipath_equal(&b, &c, &opts) {
                            hops.push(FibNextHop {
                                next_hop: p.attrs.next_hop,
                                peer: p.peer,
                            });
                        }
                    }
                }
            }
            hops.sort();
        }
        FibRoute::Via(hops)
    }

    /// What `dst` is sent for `prefix` when `path` is the best path, under `dst_config`.
    #[allow(clippy::too_many_arguments)]
    fn export_for<'c>(
        &self,
        table: &mut AttrTable,
        cache: &'c mut ExportCache,
        prefix: &IpNet,
        family: Family,
        path: &RibPath,
        dst: PeerId,
        dst_state: &PeerState,
        dst_config: &PeerConfig,
        class: u32,
    ) -> Option<Exported<'c>> {
        if path.peer == dst || path.unresolved {
            return None;
        }
        let filter = &dst_config.export.filter;
        if !filter.is_empty() && !filter.accepts(prefix, !path.peer.is_local()) {
            return None;
        }
        let key = (Arc::as_ptr(&path.attrs) as usize, path.peer, class, family);
        let slot = dst.index();
        if cache.last.len() <= slot {
            cache.last.resize(slot + 1, None);
        }
        let hit = matches!(&cache.last[slot], Some((k, _)) if *k == key);
        if !hit {
            let v = match cache.map.get(&key) {
                Some(v) => v.clone(),
                None => {
                    let v = self.compute_export(table, family, path, dst_state, dst_config);
                    cache.map.insert(key, v.clone());
                    v
                }
            };
            cache.last[slot] = Some((key, v));
        }
        let exported = cache.last[slot].as_ref().and_then(|(_, v)| v.as_ref())?;
        if dst_config.export.prefix_communities.is_empty() {
            return Some(Exported::Cached(exported));
        }
        match export::prefix_communities(dst_config, prefix, exported) {
            Some(extended) => Some(Exported::Owned(table.intern(extended))),
            None => Some(Exported::Cached(exported)),
        }
    }

    fn compute_export(
        &self,
        table: &mut AttrTable,
        family: Family,
        path: &RibPath,
        dst_state: &PeerState,
        dst_config: &PeerConfig,
    ) -> Option<Arc<RouteAttrs>> {
        let session = dst_state.session.as_ref()?;
        let source = if path.peer.is_local() {
            PathSource::Local
        } else {
            self.peers.get(path.peer.index())?.as_ref()?.source()?
        };
        let attrs = export_attrs(
            &self.config.export(),
            dst_config,
            session,
            source,
            &path.attrs,
            family,
        )?;
        Some(table.intern(attrs))
    }
}

/// Applies `change` to `key`'s path set and emits FIB and peer outputs.
/// Returns how the number of paths from the changing peer moved.
fn apply<K>(
    map: &mut HashMap<K, PathSet, FoldHashBuilder>,
    key: K,
    change: Change,
    env: &Env<'_>,
    table: &mut AttrTable,
    cache: &mut ExportCache,
    out: &mut OutputBuilder,
) -> i64
where
    K: Hash + Eq + Copy + Into<IpNet>,
{
    let opts = env.config.decision();
    let prefix: IpNet = key.into();
    // Peers sent every path (ADD-PATH) get the difference between the old and the new
    // set, so the old one is kept, only when there are such peers.
    let keep_old = env.add_path(Family::of(&prefix));
    let mut outputs = Outputs {
        env,
        table,
        cache,
        out,
    };
    let change = match change {
        Change::Upsert(mut path) => {
            path.unresolved = env.unresolved(&path);
            Change::Upsert(path)
        }
        other => other,
    };
    match (map.entry(key), change) {
        (Entry::Vacant(v), Change::Upsert(path)) => {
            let set = v.insert(PathSet::One(path));
            let old_paths = keep_old.then(Vec::new);
            outputs.emit(prefix, None, FibRoute::Unreachable, Some(set), old_paths);
            1
        }
        (Entry::Vacant(_), Change::Remove(_)) => 0,
        (Entry::Occupied(o), Change::Upsert(path)) => {
            let set = o.into_mut();
            let old_best = set.best().clone();
            let old_fib = reported_fib(set);
            let old_paths = keep_old.then(|| set.as_slice().to_vec());
            let delta = match set.upsert(path) {
                Upsert::Unchanged => return 0,
                Upsert::Replaced => 0,
                Upsert::Inserted => 1,
            };
            select_best(set.as_mut_slice(), env, &opts);
            outputs.emit(prefix, Some(old_best), old_fib, Some(set), old_paths);
            delta
        }
        (Entry::Occupied(o), Change::Remove(removal)) => {
            let removed = o
                .get()
                .as_slice()
                .iter()
                .filter(|p| removal.selects(p))
                .count();
            if removed == 0 {
                return 0;
            }
            let old_fib = reported_fib(o.get());
            let old_paths = keep_old.then(|| o.get().as_slice().to_vec());
            if removed == o.get().len() {
                let old_best = o.get().best().clone();
                o.remove();
                outputs.emit(prefix, Some(old_best), old_fib, None, old_paths);
            } else {
                let set = o.into_mut();
                let old_best = set.best().clone();
                set.remove_some(|p| removal.selects(p));
                select_best(set.as_mut_slice(), env, &opts);
                outputs.emit(prefix, Some(old_best), old_fib, Some(set), old_paths);
            }
            -(removed as i64)
        }
    }
}

/// The forwarding entry last reported for a prefix, from the paths' `in_fib` marks.
fn reported_fib(set: &PathSet) -> FibRoute {
    let paths = set.as_slice();
    if paths.iter().any(|p| p.in_fib && p.peer.is_local()) {
        return FibRoute::Local;
    }
    let mut hops: Vec<FibNextHop> = paths
        .iter()
        .filter(|p| p.in_fib)
        .map(|p| FibNextHop {
            next_hop: p.attrs.next_hop,
            peer: p.peer,
        })
        .collect();
    if hops.is_empty() {
        return FibRoute::Unreachable;
    }
    hops.sort();
    // Two paths of one peer (ADD-PATH) with the same next hop are one forwarding path.
    hops.dedup();
    FibRoute::Via(hops)
}

/// Everything needed to turn one prefix's change into outputs.
struct Outputs<'e, 'a> {
    env: &'e Env<'a>,
    table: &'e mut AttrTable,
    cache: &'e mut ExportCache,
    out: &'e mut OutputBuilder,
}

impl Outputs<'_, '_> {
    /// Reports a FIB change if the ECMP set moved, and sends every up peer the difference
    /// between what it had for `prefix` and what it should have now: the export of the old
    /// and of the new best path, or, for a peer sent every path (ADD-PATH), the exports of
    /// `old_paths` (the whole set before the change; given whenever such a peer exists)
    /// and of the set now.
    fn emit(
        &mut self,
        prefix: IpNet,
        old: Option<RibPath>,
        old_fib: FibRoute,
        mut set: Option<&mut PathSet>,
        old_paths: Option<Vec<RibPath>>,
    ) {
        let env = self.env;
        let new_fib = env.fib_route(set.as_deref());
        if let Some(set) = set.as_deref_mut() {
            for p in set.as_mut_slice() {
                p.in_fib = match &new_fib {
                    FibRoute::Unreachable => false,
                    FibRoute::Local => p.peer.is_local(),
                    FibRoute::Via(hops) => hops
                        .iter()
                        .any(|h| h.peer == p.peer && h.next_hop == p.attrs.next_hop),
                };
            }
        }
        let set = set.as_deref();
        if new_fib != old_fib {
            self.out.out.best_changes.push(BestPathChange {
                prefix,
                route: new_fib,
            });
        }
        let new = set.map(|s| s.best());
        let best_unchanged = match (&old, new) {
            (Some(a), Some(b)) => a.same_as(b),
            (None, None) => true,
            _ => false,
        };
        if best_unchanged && old_paths.is_none() {
            return;
        }
        let family = Family::of(&prefix);
        for (i, slot) in env.peers.iter().enumerate() {
            let Some(dst_state) = slot else { continue };
            if !dst_state.carries(family) {
                continue;
            }
            let dst = PeerId(i as u32);
            if let Some(old_paths) = old_paths.as_deref() {
                if dst_state.sends_paths(family) {
                    let now = set.map_or(&[][..], |s| s.as_slice());
                    self.emit_paths(prefix, family, dst, dst_state, old_paths, now);
                    continue;
                }
            }
            if best_unchanged {
                continue;
            }
            let g = dst_state.class;
            let cfg = &dst_state.config;
            let before = old.as_ref().and_then(|p| {
                env.export_for(
                    self.table, self.cache, &prefix, family, p, dst, dst_state, cfg, g,
                )
                .map(|e| e.ptr())
            });
            let after = new.and_then(|p| {
                env.export_for(
                    self.table, self.cache, &prefix, family, p, dst, dst_state, cfg, g,
                )
            });
            send_difference(self.out, dst, family, prefix, None, before, after);
        }
    }

    /// Sends `dst`, a peer that gets every path (RFC 7911), the difference between the
    /// exports of `old` and `now`, path by path under each path's identifier.
    fn emit_paths(
        &mut self,
        prefix: IpNet,
        family: Family,
        dst: PeerId,
        dst_state: &PeerState,
        old: &[RibPath],
        now: &[RibPath],
    ) {
        let env = self.env;
        let (g, cfg) = (dst_state.class, &dst_state.config);
        for n in now {
            let before = old.iter().find(|o| o.same_source(n));
            if before.is_some_and(|o| o.same_as(n)) {
                continue;
            }
            let before = before.and_then(|o| {
                env.export_for(
                    self.table, self.cache, &prefix, family, o, dst, dst_state, cfg, g,
                )
                .map(|e| e.ptr())
            });
            let after = env.export_for(
                self.table, self.cache, &prefix, family, n, dst, dst_state, cfg, g,
            );
            let id = Some(env.tx_id(n));
            send_difference(self.out, dst, family, prefix, id, before, after);
        }
        for o in old {
            if now.iter().any(|n| n.same_source(o)) {
                continue;
            }
            let before = env
                .export_for(
                    self.table, self.cache, &prefix, family, o, dst, dst_state, cfg, g,
                )
                .map(|e| e.ptr());
            let id = Some(env.tx_id(o));
            send_difference(self.out, dst, family, prefix, id, before, None);
        }
    }
}

/// Sends `dst` the difference for `prefix` (for one of its paths, under `id`, to a peer
/// sent every path) between what it was sent (`before`, the address of the exported
/// attribute set) and what it should have now (`after`), and keeps its count right.
fn send_difference(
    out: &mut OutputBuilder,
    dst: PeerId,
    family: Family,
    prefix: IpNet,
    id: Option<u32>,
    before: Option<usize>,
    after: Option<Exported<'_>>,
) {
    match (before, after) {
        (None, None) => {}
        (Some(a), Some(b)) if a == b.ptr() => {}
        (Some(_), Some(b)) => out.announce_path(dst, family, b.get(), prefix, id),
        (None, Some(b)) => {
            out.announce_path(dst, family, b.get(), prefix, id);
            out.count(dst, family, 1);
        }
        (Some(_), None) => {
            out.withdraw_path(dst, family, prefix, id);
            out.count(dst, family, -1);
        }
    }
}

/// An export result: usually borrowed from the export cache (no reference-count traffic in
/// the per-prefix path), owned when per-prefix communities made a new set.
enum Exported<'c> {
    Cached(&'c Arc<RouteAttrs>),
    Owned(Arc<RouteAttrs>),
}

impl Exported<'_> {
    fn get(&self) -> &Arc<RouteAttrs> {
        match self {
            Exported::Cached(a) => a,
            Exported::Owned(a) => a,
        }
    }

    fn ptr(&self) -> usize {
        Arc::as_ptr(self.get()) as usize
    }
}

impl Rib {
    /// Borrows the RIB as [`Split`] (one place for the split borrow every pass needs).
    fn split(&mut self) -> Split<'_> {
        let Rib {
            config,
            peers,
            table,
            v4,
            v6,
            cache,
            igp_cost,
            tx_ids,
            add_path_senders,
            ..
        } = self;
        Split {
            env: Env {
                config,
                peers,
                igp_cost: igp_cost.as_deref(),
                tx_ids,
                add_path_senders: *add_path_senders,
            },
            table,
            v4,
            v6,
            cache,
        }
    }

    fn env(&self) -> Env<'_> {
        Env {
            config: &self.config,
            peers: &self.peers,
            igp_cost: self.igp_cost.as_deref(),
            tx_ids: &self.tx_ids,
            add_path_senders: self.add_path_senders,
        }
    }

    /// Recomputes [`Rib::add_path_senders`] after a peer went up or down.
    fn count_add_path_senders(&mut self) {
        for family in [Family::Ipv4Unicast, Family::Ipv6Unicast] {
            self.add_path_senders[family as usize] =
                self.peers.iter().flatten().any(|p| p.sends_paths(family));
        }
    }

    pub fn new(config: RibConfig) -> Rib {
        Rib {
            config,
            peers: vec![None],
            table: AttrTable::default(),
            v4: PrefixTable::default(),
            v6: PrefixTable::default(),
            cache: ExportCache::default(),
            classes: ExportClasses::default(),
            igp_cost: None,
            tx_ids: TxIds::default(),
            next_tx_id: FIRST_TX_ID,
            add_path_senders: [false; 2],
        }
    }

    /// Installs the IGP cost function for decision step §9.1.2.2 e and re-runs the decision
    /// process with it ([`Rib::reevaluate`]).
    pub fn set_igp_cost(&mut self, cost: Box<IgpCostFn>) -> RibOutputs {
        self.igp_cost = Some(cost);
        self.reevaluate()
    }

    /// Re-runs the decision process for every prefix that has a choice or whose next hops
    /// changed resolvability, and emits what changed — for when IGP costs or reachability
    /// moved (the cost function answers differently now).
    pub fn reevaluate(&mut self) -> RibOutputs {
        let Split {
            env,
            table,
            v4,
            v6,
            cache,
        } = self.split();
        let opts = env.config.decision();
        let mut out = OutputBuilder::default();
        let mut outputs = Outputs {
            env: &env,
            table,
            cache,
            out: &mut out,
        };
        let mut redo = |prefix: IpNet, set: &mut PathSet| {
            let resolution_moved = set
                .as_slice()
                .iter()
                .any(|p| p.unresolved != env.unresolved(p));
            if set.len() < 2 && !resolution_moved {
                return;
            }
            let old_best = set.best().clone();
            let old_fib = reported_fib(set);
            let old_paths = (resolution_moved && env.add_path(Family::of(&prefix)))
                .then(|| set.as_slice().to_vec());
            if resolution_moved {
                for p in set.as_mut_slice() {
                    p.unresolved = env.unresolved(p);
                }
            }
            select_best(set.as_mut_slice(), &env, &opts);
            outputs.emit(prefix, Some(old_best), old_fib, Some(set), old_paths);
        };
        v4.iter_mut().for_each(|(k, s)| redo(IpNet::V4(*k), s));
        v6.iter_mut().for_each(|(k, s)| redo(IpNet::V6(*k), s));
        self.apply_advertised(&out);
        out.out
    }

    pub fn config(&self) -> &RibConfig {
        &self.config
    }

    /// Registers a neighbour (down until [`Rib::peer_up`]).
    pub fn add_peer(&mut self, config: PeerConfig) -> PeerId {
        let id = PeerId(self.peers.len() as u32);
        self.peers.push(Some(PeerState {
            config,
            session: None,
            up: false,
            class: 0,
            accepted: [0; 2],
            advertised: [0; 2],
            filtered: HashSet::default(),
            filtered_count: [0; 2],
        }));
        id
    }

    pub fn peer_config(&self, peer: PeerId) -> Option<&PeerConfig> {
        self.peer(peer).ok().map(|p| &p.config)
    }

    fn peer(&self, peer: PeerId) -> Result<&PeerState, RibError> {
        if peer.is_local() {
            return Err(RibError::LocalPeer);
        }
        self.peers
            .get(peer.index())
            .and_then(|p| p.as_ref())
            .ok_or(RibError::UnknownPeer(peer))
    }

    fn peer_mut(&mut self, peer: PeerId) -> Result<&mut PeerState, RibError> {
        if peer.is_local() {
            return Err(RibError::LocalPeer);
        }
        self.peers
            .get_mut(peer.index())
            .and_then(|p| p.as_mut())
            .ok_or(RibError::UnknownPeer(peer))
    }

    /// The session reached Established: send it the whole table, then End-of-RIB for each
    /// negotiated family (RFC 4724 §4).
    pub fn peer_up(&mut self, peer: PeerId, session: PeerSession) -> Result<RibOutputs, RibError> {
        let key = ExportClassKey::new(&self.peer(peer)?.config, &session);
        let class = self.classes.class(key);
        let state = self.peer(peer)?;
        if state.up {
            return Err(RibError::PeerAlreadyEstablished(peer));
        }
        // Paths kept from a graceful restart were exported with the old BGP Identifier as
        // ORIGINATOR_ID; a peer that comes back as a different router restarts from scratch.
        let identity_changed = state
            .session
            .as_ref()
            .is_some_and(|old| old.router_id != session.router_id);
        let flushed = if identity_changed {
            self.remove_stale(peer, None)
        } else {
            RibOutputs::default()
        };
        let state = self.peer_mut(peer)?;
        state.class = class;
        let families = session.families.clone();
        state.session = Some(session);
        state.up = true;
        state.advertised = [0; 2];
        self.count_add_path_senders();
        let mut out = OutputBuilder::default();
        out.out.withdraws = flushed.withdraws;
        out.out.updates = flushed.updates;
        out.out.best_changes = flushed.best_changes;
        for family in families {
            self.dump(peer, family, &mut out);
            out.out.end_of_rib.push(EndOfRib { peer, family });
        }
        self.apply_advertised(&out);
        let advertised: usize = out.out.updates.iter().map(|u| u.prefixes.len()).sum();
        debug!(%peer, advertised, "initial table dump");
        Ok(out.out)
    }

    /// Re-sends `family` to `peer` (ROUTE-REFRESH, RFC 2918 §4).
    pub fn refresh(&mut self, peer: PeerId, family: Family) -> Result<RibOutputs, RibError> {
        let state = self.peer(peer)?;
        if !state.up {
            return Err(RibError::PeerNotEstablished(peer));
        }
        let mut out = OutputBuilder::default();
        if state.carries(family) {
            self.dump(peer, family, &mut out);
        }
        Ok(out.out)
    }

    fn dump(&mut self, peer: PeerId, family: Family, out: &mut OutputBuilder) {
        let Split {
            env,
            table,
            v4,
            v6,
            cache,
        } = self.split();
        let Some(Some(dst_state)) = env.peers.get(peer.index()) else {
            return;
        };
        if !dst_state.carries(family) {
            return;
        }
        let cfg = &dst_state.config;
        let g = dst_state.class;
        // A peer we send path identifiers gets every path, else the best one (RFC 7911 §1).
        let all_paths = dst_state.sends_paths(family);
        let mut each = |prefix: IpNet, set: &PathSet| {
            let paths = if all_paths {
                set.as_slice()
            } else {
                std::slice::from_ref(set.best())
            };
            for path in paths {
                if let Some(a) =
                    env.export_for(table, cache, &prefix, family, path, peer, dst_state, cfg, g)
                {
                    let id = all_paths.then(|| env.tx_id(path));
                    out.announce_path(peer, family, a.get(), prefix, id);
                    out.count(peer, family, 1);
                }
            }
        };
        match family {
            Family::Ipv4Unicast => v4.iter().for_each(|(k, s)| each(IpNet::V4(*k), s)),
            Family::Ipv6Unicast => v6.iter().for_each(|(k, s)| each(IpNet::V6(*k), s)),
        }
    }

    fn apply_advertised(&mut self, out: &OutputBuilder) {
        for (i, deltas) in out.advertised.iter().enumerate() {
            if let Some(Some(p)) = self.peers.get_mut(i) {
                for (count, delta) in p.advertised.iter_mut().zip(deltas) {
                    *count = count.saturating_add_signed(*delta);
                }
            }
        }
    }

    /// Applies one change and keeps the per-peer counters right.
    fn change(&mut self, prefix: IpNet, change: Change, out: &mut OutputBuilder) {
        let source = match &change {
            Change::Upsert(p) => {
                if p.path_id != 0 {
                    // Hand out our identifier for a path learned with one (see `Env::tx_id`).
                    let next = &mut self.next_tx_id;
                    self.tx_ids.entry((p.peer, p.path_id)).or_insert_with(|| {
                        let id = *next;
                        *next = next.wrapping_add(1).max(FIRST_TX_ID);
                        id
                    });
                }
                p.peer
            }
            Change::Remove(r) => r.peer(),
        };
        let Split {
            env,
            table,
            v4,
            v6,
            cache,
        } = self.split();
        let delta = match prefix {
            IpNet::V4(k) => apply(v4.shard_mut(&k), k, change, &env, table, cache, out),
            IpNet::V6(k) => apply(v6.shard_mut(&k), k, change, &env, table, cache, out),
        };
        if delta != 0 {
            if let Some(Some(p)) = self.peers.get_mut(source.index()) {
                let slot = family_slot(&prefix);
                p.accepted[slot] = p.accepted[slot].saturating_add_signed(delta);
            }
        }
    }

    /// Processes an UPDATE from an established peer.
    pub fn update(&mut self, peer: PeerId, update: &Update) -> Result<RibOutputs, RibError> {
        let state = self.peer(peer)?;
        if !state.up {
            return Err(RibError::PeerNotEstablished(peer));
        }
        if let Some(family) = update.is_end_of_rib() {
            // RFC 4724 §4.2: the restarted peer has re-sent everything of this family;
            // whatever it did not refresh is gone.
            return Ok(self.remove_stale(peer, Some(family)));
        }
        // With path identifiers one UPDATE can change a prefix more than once (withdraw
        // one of its paths, announce another): see `OutputBuilder::ordered`.
        let mut out = if update.path_ids.is_empty() {
            OutputBuilder::default()
        } else {
            OutputBuilder::ordered()
        };
        // Prefixes are keyed in canonical form (host bits cleared): a peer that sends
        // 10.0.0.1/24 means 10.0.0.0/24.
        for (prefix, id) in update.withdrawn_paths() {
            self.withdraw_from_peer(Removal::Path(peer, id), prefix.trunc(), &mut out);
        }
        if !update.nlri.is_empty() {
            let next_hop = update.attributes.next_hop.map(IpAddr::V4);
            // A prefix announced both in the NLRI field and in an IPv4 MP_REACH_NLRI of the
            // same UPDATE is taken from MP_REACH only: processing it twice with different
            // next hops would put it in two UPDATE groups whose send order is not the order
            // of processing. (Legal but unheard of, so the set is only built then.)
            let in_mp: HashSet<IpNet> = match &update.mp_reach {
                Some(mp) if Family::from_afi_safi(mp.afi, mp.safi) == Some(Family::Ipv4Unicast) => {
                    mp.nlri.iter().map(|p| p.trunc()).collect()
                }
                _ => HashSet::new(),
            };
            let ids = &update.path_ids.nlri;
            let prefixes = update
                .nlri
                .iter()
                .enumerate()
                .map(|(i, p)| (IpNet::V4(*p), path_id_at(ids, i)))
                .filter(|(p, _)| in_mp.is_empty() || !in_mp.contains(&p.trunc()));
            self.announce_group(
                peer,
                update,
                Some(Family::Ipv4Unicast),
                next_hop,
                None,
                prefixes,
                &mut out,
            );
        }
        if let Some(mp) = &update.mp_reach {
            let family = Family::from_afi_safi(mp.afi, mp.safi);
            self.announce_group(
                peer,
                update,
                family,
                Some(mp.next_hop),
                mp.link_local_next_hop,
                mp.nlri
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (*p, path_id_at(&update.path_ids.mp_reach, i))),
                &mut out,
            );
        }
        out.finish();
        self.apply_advertised(&out);
        self.maybe_sweep();
        Ok(out.out)
    }

    fn withdraw_from_peer(&mut self, removal: Removal, prefix: IpNet, out: &mut OutputBuilder) {
        if let Some(Some(state)) = self.peers.get_mut(removal.peer().index()) {
            state.unfilter(&prefix);
        }
        self.change(prefix, Change::Remove(removal), out);
    }

    #[allow(clippy::too_many_arguments)]
    fn announce_group(
        &mut self,
        peer: PeerId,
        update: &Update,
        family: Option<Family>,
        next_hop: Option<IpAddr>,
        link_local: Option<Ipv6Addr>,
        prefixes: impl Iterator<Item = (IpNet, u32)>,
        out: &mut OutputBuilder,
    ) {
        let Some(family) = family else {
            debug!(%peer, "ignoring MP_REACH_NLRI of an unsupported family");
            return;
        };
        let Ok(state) = self.peer(peer) else { return };
        let Some(session) = state.session.as_ref() else {
            return;
        };
        if !session.families.contains(&family) {
            debug!(%peer, ?family, "ignoring NLRI of a family not negotiated");
            return;
        }
        let reject = if update.treat_as_withdraw {
            Some(ImportReject::TreatAsWithdraw)
        } else {
            match next_hop {
                None => Some(ImportReject::MissingNextHop),
                // The next hop must be of the route's family: RFC 2545 §3 for IPv6; an IPv6
                // next hop for IPv4 routes needs the Extended Next Hop capability (RFC 8950),
                // which we do not negotiate.
                Some(nh) if Family::of(&IpNet::from(nh)) != family => {
                    Some(ImportReject::UnusableNextHop)
                }
                Some(nh) => {
                    import_check(&self.config, &state.config, session, &update.attributes, nh)
                }
            }
        };
        let import_local_pref = state.config.import.local_pref;
        let ibgp = state.config.is_ibgp();
        let import_filter_empty = state.config.import.filter.is_empty();
        let attrs = match (reject, next_hop) {
            (None, Some(nh)) => {
                let mut attrs = update.attributes.clone();
                if let Some(lp) = import_local_pref {
                    attrs.local_pref = Some(lp);
                } else if !ibgp {
                    // RFC 4271 §5.1.5: LOCAL_PREF from an external peer is ignored.
                    attrs.local_pref = Some(self.config.default_local_pref);
                }
                if attrs
                    .communities
                    .contains(&crate::packet::Community::GRACEFUL_SHUTDOWN)
                {
                    // RFC 8326 §4.1: the sender is draining the path before it goes; every
                    // other path wins (LOCAL_PREF 0, the lowest, as BIRD's and FRR's
                    // graceful-shutdown filters set it).
                    attrs.local_pref = Some(0);
                }
                Some(
                    self.table
                        .intern(RouteAttrs::new(attrs, family, nh, link_local)),
                )
            }
            _ => None,
        };
        if let Some(reason) = reject {
            debug!(%peer, %reason, "excluding received paths");
        }
        for (prefix, path_id) in prefixes.map(|(p, id)| (p.trunc(), id)) {
            if Family::of(&prefix) != family {
                continue;
            }
            let accepted = match &attrs {
                None => None,
                Some(a) => {
                    let ok = import_filter_empty || {
                        let Ok(state) = self.peer(peer) else { return };
                        state.config.import.filter.accepts(&prefix, true)
                    };
                    ok.then(|| Arc::clone(a))
                }
            };
            match accepted {
                Some(a) => {
                    if let Ok(state) = self.peer_mut(peer) {
                        state.unfilter(&prefix);
                    }
                    self.change(
                        prefix,
                        Change::Upsert(RibPath {
                            peer,
                            path_id,
                            attrs: a,
                            stale: false,
                            unresolved: false,
                            in_fib: false,
                        }),
                        out,
                    );
                }
                // RFC 7606 §2: treat-as-withdraw is a withdrawal, not a received route.
                None if reject == Some(ImportReject::TreatAsWithdraw) => {
                    self.withdraw_from_peer(Removal::Path(peer, path_id), prefix, out);
                }
                None => {
                    if let Ok(state) = self.peer_mut(peer) {
                        state.filter(prefix);
                    }
                    self.change(prefix, Change::Remove(Removal::Path(peer, path_id)), out);
                }
            }
        }
    }

    /// The session went down: its paths leave the Loc-RIB, and what they carried is
    /// withdrawn from (or replaced at) the other peers.
    pub fn peer_down(&mut self, peer: PeerId) -> Result<RibOutputs, RibError> {
        let state = self.peer_mut(peer)?;
        if !state.up {
            return Err(RibError::PeerNotEstablished(peer));
        }
        state.up = false;
        state.advertised = [0; 2];
        state.clear_filtered();
        let mut out = OutputBuilder::default();
        let affected: Vec<IpNet> = self
            .v4
            .iter()
            .filter(|(_, s)| s.contains(peer))
            .map(|(k, _)| IpNet::V4(*k))
            .chain(
                self.v6
                    .iter()
                    .filter(|(_, s)| s.contains(peer))
                    .map(|(k, _)| IpNet::V6(*k)),
            )
            .collect();
        let removed = affected.len();
        // Most removed paths change the FIB: size that output once instead of by doubling.
        out.out.best_changes.reserve_exact(removed);
        self.count_add_path_senders();
        for prefix in affected {
            self.withdraw_from_peer(Removal::AllOf(peer), prefix, &mut out);
        }
        self.apply_advertised(&out);
        debug!(%peer, prefixes = removed, "peer down: its paths removed");
        if let Ok(state) = self.peer_mut(peer) {
            state.session = None;
            state.accepted = [0; 2];
        }
        self.tx_ids.retain(|(p, _), _| *p != peer);
        self.cache.clear();
        self.table.sweep();
        Ok(out.out)
    }

    /// The session went down, but the peer is restarting gracefully (it advertised the
    /// Graceful Restart capability, RFC 4724 §3, and preserves forwarding for `retained`):
    /// its paths of the retained families stay in use, marked stale, until it re-sends them
    /// and End-of-RIB, or the driver's restart/stale timer gives up ([`Rib::flush_stale`]).
    /// Paths of other families go at once, as on [`Rib::peer_down`].
    pub fn peer_down_graceful(
        &mut self,
        peer: PeerId,
        retained: &[Family],
    ) -> Result<RibOutputs, RibError> {
        let state = self.peer_mut(peer)?;
        if !state.up {
            return Err(RibError::PeerNotEstablished(peer));
        }
        state.up = false;
        state.advertised = [0; 2];
        state.clear_filtered();
        let mark = |set: &mut PathSet| {
            for p in set.as_mut_slice() {
                if p.peer == peer {
                    p.stale = true;
                }
            }
        };
        if retained.contains(&Family::Ipv4Unicast) {
            self.v4.iter_mut().for_each(|(_, s)| mark(s));
        }
        if retained.contains(&Family::Ipv6Unicast) {
            self.v6.iter_mut().for_each(|(_, s)| mark(s));
        }
        let mut out = OutputBuilder::default();
        let gone: Vec<IpNet> = self
            .iter()
            .filter(|(p, paths)| {
                !retained.contains(&Family::of(p)) && paths.iter().any(|x| x.peer == peer)
            })
            .map(|(p, _)| p)
            .collect();
        self.count_add_path_senders();
        for prefix in gone {
            self.withdraw_from_peer(Removal::AllOf(peer), prefix, &mut out);
        }
        self.apply_advertised(&out);
        Ok(out.out)
    }

    /// The peer began an enhanced route refresh of `family` (BoRR, RFC 7313 §4): its paths
    /// of the family become stale, still used, until re-announced; [`Rib::end_refresh`]
    /// drops those that were not.
    pub fn begin_refresh(&mut self, peer: PeerId, family: Family) -> Result<(), RibError> {
        if !self.peer(peer)?.up {
            return Err(RibError::PeerNotEstablished(peer));
        }
        let mark = |set: &mut PathSet| {
            for p in set.as_mut_slice() {
                if p.peer == peer {
                    p.stale = true;
                }
            }
        };
        match family {
            Family::Ipv4Unicast => self.v4.iter_mut().for_each(|(_, s)| mark(s)),
            Family::Ipv6Unicast => self.v6.iter_mut().for_each(|(_, s)| mark(s)),
        }
        Ok(())
    }

    /// The peer ended the refresh of `family` (EoRR, RFC 7313 §4): what it did not
    /// re-announce is gone.
    pub fn end_refresh(&mut self, peer: PeerId, family: Family) -> Result<RibOutputs, RibError> {
        if !self.peer(peer)?.up {
            return Err(RibError::PeerNotEstablished(peer));
        }
        Ok(self.remove_stale(peer, Some(family)))
    }

    /// Drops the peer's stale paths (all families): its restart or stale-routes timer expired
    /// without End-of-RIB (RFC 4724 §4.2).
    pub fn flush_stale(&mut self, peer: PeerId) -> Result<RibOutputs, RibError> {
        self.peer(peer)?;
        Ok(self.remove_stale(peer, None))
    }

    fn remove_stale(&mut self, peer: PeerId, family: Option<Family>) -> RibOutputs {
        let stale: Vec<IpNet> = self
            .iter()
            .filter(|(p, paths)| {
                family.is_none_or(|f| f == Family::of(p))
                    && paths.iter().any(|x| x.peer == peer && x.stale)
            })
            .map(|(p, _)| p)
            .collect();
        let mut out = OutputBuilder::default();
        for prefix in stale {
            self.change(prefix, Change::Remove(Removal::StaleOf(peer)), &mut out);
        }
        self.apply_advertised(&out);
        self.maybe_sweep();
        out.out
    }

    /// Forgets a peer (deconfigured); takes it down first if it is up, and drops paths it
    /// left behind in a graceful restart.
    pub fn remove_peer(&mut self, peer: PeerId) -> Result<RibOutputs, RibError> {
        let mut out = if self.peer(peer)?.up {
            self.peer_down(peer)?
        } else {
            RibOutputs::default()
        };
        let stale = self.remove_stale(peer, None);
        out.withdraws.extend(stale.withdraws);
        out.updates.extend(stale.updates);
        out.best_changes.extend(stale.best_changes);
        if let Some(slot) = self.peers.get_mut(peer.index()) {
            *slot = None;
        }
        self.tx_ids.retain(|(p, _), _| *p != peer);
        Ok(out)
    }

    /// Originates `prefix` from this router (Calico: the node's IPAM blocks). `attrs` may
    /// carry communities or a MED; ORIGIN defaults to IGP and AS_PATH to empty (eBGP export
    /// prepends our AS).
    pub fn originate(&mut self, prefix: IpNet, attrs: Option<PathAttributes>) -> RibOutputs {
        let prefix = prefix.trunc();
        let family = Family::of(&prefix);
        let mut attrs = attrs.unwrap_or_default();
        attrs.origin.get_or_insert(Origin::Igp);
        attrs.as_path.get_or_insert_with(Default::default);
        let route = RouteAttrs::new(
            attrs,
            family,
            RouteAttrs::unspecified_next_hop(family),
            None,
        );
        let attrs = self.table.intern(route);
        let mut out = OutputBuilder::default();
        self.change(
            prefix,
            Change::Upsert(RibPath {
                peer: PeerId::LOCAL,
                path_id: 0,
                attrs,
                stale: false,
                unresolved: false,
                in_fib: false,
            }),
            &mut out,
        );
        self.apply_advertised(&out);
        self.maybe_sweep();
        out.out
    }

    /// Stops originating `prefix`.
    pub fn withdraw_local(&mut self, prefix: IpNet) -> RibOutputs {
        let prefix = prefix.trunc();
        let mut out = OutputBuilder::default();
        self.change(
            prefix,
            Change::Remove(Removal::AllOf(PeerId::LOCAL)),
            &mut out,
        );
        self.apply_advertised(&out);
        out.out
    }

    /// Replaces a peer's import policy. It applies to paths received from now on: we keep no
    /// pre-policy Adj-RIB-In, so the driver should ask the peer to resend (ROUTE-REFRESH,
    /// RFC 2918) when the session supports it, as BIRD does on `reload in`.
    pub fn set_import_policy(
        &mut self,
        peer: PeerId,
        import: ImportPolicy,
    ) -> Result<(), RibError> {
        self.peer_mut(peer)?.config.import = import;
        Ok(())
    }

    /// Replaces a peer's export policy and sends it the difference.
    pub fn set_export_policy(
        &mut self,
        peer: PeerId,
        export: ExportPolicy,
    ) -> Result<RibOutputs, RibError> {
        let state = self.peer(peer)?;
        let old_config = state.config.clone();
        let old_class = state.class;
        let mut new_config = old_config.clone();
        new_config.export = export;
        let new_key = match &state.session {
            Some(session) if state.up => Some(ExportClassKey::new(&new_config, session)),
            _ => None,
        };
        let new_class = new_key.map(|k| self.classes.class(k));
        let state = self.peer_mut(peer)?;
        state.config = new_config;
        let mut out = OutputBuilder::default();
        let Some(new_class) = new_class else {
            return Ok(out.out);
        };
        state.class = new_class;
        let Split {
            env,
            table,
            v4,
            v6,
            cache,
        } = self.split();
        let Some(Some(dst_state)) = env.peers.get(peer.index()) else {
            return Ok(out.out);
        };
        let mut each = |prefix: IpNet, set: &PathSet| {
            let family = Family::of(&prefix);
            if !dst_state.carries(family) {
                return;
            }
            let all_paths = dst_state.sends_paths(family);
            let paths = if all_paths {
                set.as_slice()
            } else {
                std::slice::from_ref(set.best())
            };
            for path in paths {
                let before = env
                    .export_for(
                        table,
                        cache,
                        &prefix,
                        family,
                        path,
                        peer,
                        dst_state,
                        &old_config,
                        old_class,
                    )
                    .map(|e| e.ptr());
                let after = env.export_for(
                    table,
                    cache,
                    &prefix,
                    family,
                    path,
                    peer,
                    dst_state,
                    &dst_state.config,
                    dst_state.class,
                );
                let id = all_paths.then(|| env.tx_id(path));
                send_difference(&mut out, peer, family, prefix, id, before, after);
            }
        };
        v4.iter().for_each(|(k, s)| each(IpNet::V4(*k), s));
        v6.iter().for_each(|(k, s)| each(IpNet::V6(*k), s));
        self.apply_advertised(&out);
        Ok(out.out)
    }

    /// Drops attribute sets no route uses any more. The RIB sweeps by itself when the intern
    /// table has doubled and when a peer goes down; a driver may also call this from a
    /// timer so that a table that only shrinks gives memory back.
    pub fn sweep(&mut self) {
        self.cache.clear();
        self.table.sweep();
    }

    fn maybe_sweep(&mut self) {
        if self.table.wants_sweep() {
            // The cache holds Arcs too and is keyed by pointers that a sweep may free.
            self.cache.clear();
            self.table.sweep();
        }
    }

    /// Route counts of a peer.
    pub fn stats(&self, peer: PeerId) -> Result<PeerStats, RibError> {
        let p = self.peer(peer)?;
        let accepted = p.accepted.iter().sum();
        Ok(PeerStats {
            received: accepted + p.filtered.len() as u64,
            accepted,
            advertised: p.advertised.iter().sum(),
        })
    }

    /// A peer's route counts for one family (as BIRD's per-channel "Routes: N imported,
    /// M filtered, K exported").
    pub fn family_stats(&self, peer: PeerId, family: Family) -> Result<PeerStats, RibError> {
        let p = self.peer(peer)?;
        let slot = family as usize;
        Ok(PeerStats {
            received: p.accepted[slot] + p.filtered_count[slot],
            accepted: p.accepted[slot],
            advertised: p.advertised[slot],
        })
    }

    /// Prefixes of `family` the peer currently announces to us, accepted or filtered: what a
    /// maximum-prefix limit counts (BIRD's `receive limit`, FRR's `maximum-prefix`).
    pub fn received(&self, peer: PeerId, family: Family) -> Result<u64, RibError> {
        Ok(self.family_stats(peer, family)?.received)
    }

    /// The best path for `prefix`.
    pub fn best(&self, prefix: &IpNet) -> Option<&RibPath> {
        self.set(prefix).map(|s| s.best())
    }

    /// All candidate paths for `prefix`, best first.
    pub fn paths(&self, prefix: &IpNet) -> &[RibPath] {
        self.set(prefix).map_or(&[], |s| s.as_slice())
    }

    /// How each path of `prefix` (in [`Rib::paths`] order, best first) stands against the
    /// best: [`PathStanding::Best`], [`PathStanding::Multipath`] when it shares the FIB entry
    /// (ECMP), else the step of the decision process (RFC 4271 §9.1.2.2) at which the best
    /// path beat it, as `birdc show route all` and FRR's `show bgp` explain the choice.
    pub fn explain(&self, prefix: &IpNet) -> Vec<PathStanding> {
        let paths = self.paths(prefix);
        let env = self.env();
        let opts = self.config.decision();
        let Some(best) = paths.first().and_then(|p| env.candidate(p)) else {
            return paths.iter().map(|_| PathStanding::Best).collect();
        };
        // The same rule as the FIB entry's (see `fib_route`): equal paths up to max_paths,
        // one per next hop.
        let mut hops = vec![paths[0].attrs.next_hop];
        std::iter::once(PathStanding::Best)
            .chain(paths[1..].iter().map(|p| match env.candidate(p) {
                None => PathStanding::Beaten(DecisionStep::Equal),
                Some(c) => {
                    let ecmp = !best.attrs.next_hop.is_unspecified()
                        && hops.len() < self.config.max_paths
                        && !hops.contains(&p.attrs.next_hop)
                        && decision::multipath_equal(&best, &c, &opts);
                    if ecmp {
                        hops.push(p.attrs.next_hop);
                        PathStanding::Multipath
                    } else {
                        PathStanding::Beaten(compare(&best, &c, &opts).1)
                    }
                }
            }))
            .collect()
    }

    /// What the FIB should hold for `prefix` under the current IGP costs (for
    /// resynchronising a FIB). Equals what the outputs last reported unless the cost
    /// function answers differently since the last [`Rib::reevaluate`].
    pub fn fib_route(&self, prefix: &IpNet) -> FibRoute {
        let env = self.env();
        env.fib_route(self.set(prefix))
    }

    fn set(&self, prefix: &IpNet) -> Option<&PathSet> {
        match prefix.trunc() {
            IpNet::V4(k) => self.v4.get(&k),
            IpNet::V6(k) => self.v6.get(&k),
        }
    }

    /// A peer's Adj-RIB-In after import policy: the paths it sent that were accepted.
    pub fn adj_rib_in(&self, peer: PeerId) -> impl Iterator<Item = (IpNet, &RibPath)> {
        self.iter().flat_map(move |(prefix, paths)| {
            paths
                .iter()
                .filter(move |p| p.peer == peer)
                .map(move |p| (prefix, p))
        })
    }

    /// The Loc-RIB: every prefix with its paths, best first, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &[RibPath])> {
        self.v4
            .iter()
            .map(|(k, s)| (IpNet::V4(*k), s.as_slice()))
            .chain(self.v6.iter().map(|(k, s)| (IpNet::V6(*k), s.as_slice())))
    }

    /// Prefixes in the Loc-RIB.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Distinct attribute sets held (interning effectiveness, for status and tests).
    pub fn attribute_sets(&self) -> usize {
        self.table.len()
    }
}

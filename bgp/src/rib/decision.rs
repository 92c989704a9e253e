//! The BGP decision process (RFC 4271 §9.1.2) with the route-reflection tie-breakers of
//! RFC 4456 §9, and the rule for which paths are equal enough to share the FIB (ECMP).
//!
//! Paths are compared pairwise and the best one found by a linear scan rather than by
//! sorting: the MED step is not transitive (MEDs are only compared between paths from the
//! same neighbouring AS, RFC 4271 §9.1.2.2 c), and std's sort may panic on a comparator that
//! is not a total order — a peer must never be able to make us panic.
//!
//! Order of the steps (lower/first is better):
//! 1. a path whose next hop resolves wins over one whose next hop does not; the latter is
//!    never used (RFC 4271 §9.1.2.1 excludes it; keeping it, last, lets it come back when
//!    the IGP changes without the peer re-sending it);
//! 2. locally originated routes win over learned ones (like BIRD, whose static/device routes
//!    carry a higher protocol preference than BGP's);
//! 3. highest LOCAL_PREF (absent = the configured default, 100) — §9.1.1;
//! 4. shortest AS_PATH (an AS_SET counts 1) — §9.1.2.2 a;
//! 5. lowest ORIGIN (IGP < EGP < INCOMPLETE) — §9.1.2.2 b;
//! 6. lowest MED, only between paths from the same neighbour AS unless `always_compare_med`;
//!    a missing MED is 0 — §9.1.2.2 c;
//! 7. eBGP-learned over iBGP-learned — §9.1.2.2 d;
//! 8. lowest IGP cost to the next hop (0 where no cost function is configured) — §9.1.2.2 e;
//! 9. lowest ORIGINATOR_ID, or BGP Identifier of the sender when there is none — §9.1.2.2 f
//!    with RFC 4456 §9;
//! 10. shortest CLUSTER_LIST — RFC 4456 §9;
//! 11. lowest peer address — §9.1.2.2 g.
//!
//! ECMP ("multipath", as BIRD's `merge paths` and FRR's `maximum-paths`): resolvable paths
//! that tie through step 8 (IGP cost) and also have equal MEDs form the set the FIB installs; locally
//! originated routes never merge with learned ones.

use std::cmp::Ordering;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use super::attrs::RouteAttrs;
use super::peer::PeerId;

/// One path for a prefix in the Loc-RIB: who it came from and its interned attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RibPath {
    pub peer: PeerId,
    /// The ADD-PATH path identifier the peer sent it with (RFC 7911 §3), 0 from a peer
    /// that sends none: with `peer` the path's identity, so that one peer can hold several
    /// paths for a prefix (a route reflector passing on every ECMP path).
    pub path_id: u32,
    pub attrs: Arc<RouteAttrs>,
    /// Retained from a peer that is restarting (RFC 4724 §4.2) and not yet re-announced:
    /// still used for forwarding, removed at its End-of-RIB unless refreshed.
    pub stale: bool,
    /// The IGP cost function could not resolve the next hop when the path was stored or
    /// last re-evaluated: the path stays in the Adj-RIB-In but is excluded from selection
    /// (RFC 4271 §9.1.2.1).
    pub unresolved: bool,
    /// Part of the forwarding entry last reported for the prefix (a member of the ECMP set,
    /// or the local route): the old side of the next FIB comparison, kept so that a change
    /// of IGP costs cannot make the RIB misremember what the FIB holds.
    pub in_fib: bool,
}

impl RibPath {
    /// The same path (peer and path identifier), whatever its attributes now.
    pub fn same_source(&self, other: &RibPath) -> bool {
        self.peer == other.peer && self.path_id == other.path_id
    }

    /// Same source, the same interned attributes (a pointer comparison) and the same
    /// resolvability: everything its export depends on.
    pub fn same_as(&self, other: &RibPath) -> bool {
        self.same_source(other)
            && Arc::ptr_eq(&self.attrs, &other.attrs)
            && self.unresolved == other.unresolved
    }
}

/// The step of the decision process that separated two paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DecisionStep {
    Resolvable,
    Local,
    LocalPref,
    AsPathLength,
    Origin,
    Med,
    EbgpOverIbgp,
    IgpCost,
    RouterId,
    ClusterListLength,
    PeerAddress,
    /// Nothing separates them (the same path from the same peer).
    Equal,
}

impl DecisionStep {
    /// What the winning path had, in the words `birdc` and FRR's `show bgp ... bestpath`
    /// reasons use.
    pub fn describe(self) -> &'static str {
        match self {
            DecisionStep::Resolvable => "its next hop resolves",
            DecisionStep::Local => "locally originated",
            DecisionStep::LocalPref => "higher LOCAL_PREF",
            DecisionStep::AsPathLength => "shorter AS_PATH",
            DecisionStep::Origin => "lower ORIGIN",
            DecisionStep::Med => "lower MED",
            DecisionStep::EbgpOverIbgp => "eBGP over iBGP",
            DecisionStep::IgpCost => "lower IGP cost to the next hop",
            DecisionStep::RouterId => "lower router ID",
            DecisionStep::ClusterListLength => "shorter CLUSTER_LIST",
            DecisionStep::PeerAddress => "lower peer address",
            DecisionStep::Equal => "equal (kept first)",
        }
    }
}

/// Knobs of the decision process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecisionOptions {
    /// LOCAL_PREF assumed when a path has none (RFC 4271 §5.1.5 leaves it to configuration;
    /// 100 is the universal default).
    pub default_local_pref: u32,
    /// Compare MED between paths from different neighbour ASes too (Cisco/FRR
    /// `always-compare-med`, BIRD `med metric`).
    pub always_compare_med: bool,
}

impl Default for DecisionOptions {
    fn default() -> Self {
        DecisionOptions {
            default_local_pref: 100,
            always_compare_med: false,
        }
    }
}

/// What the decision process needs to know about one path.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub attrs: &'a RouteAttrs,
    /// The next hop resolves (see [`RibPath::unresolved`]).
    pub resolvable: bool,
    /// Originated by this router.
    pub local: bool,
    /// Learned over an eBGP session.
    pub ebgp: bool,
    /// BGP Identifier of the peer that sent the path.
    pub router_id: Ipv4Addr,
    pub peer_address: IpAddr,
    /// Interior cost to reach the next hop.
    pub igp_cost: u32,
}

impl Candidate<'_> {
    fn local_pref(&self, opts: &DecisionOptions) -> u32 {
        self.attrs
            .attrs
            .local_pref
            .unwrap_or(opts.default_local_pref)
    }

    fn as_path_len(&self) -> usize {
        self.attrs
            .attrs
            .as_path
            .as_ref()
            .map_or(0, |p| p.path_len())
    }

    fn origin(&self) -> crate::packet::Origin {
        self.attrs
            .attrs
            .origin
            .unwrap_or(crate::packet::Origin::Incomplete)
    }

    fn med(&self) -> u32 {
        self.attrs.attrs.med.unwrap_or(0)
    }

    fn neighbor_as(&self) -> Option<u32> {
        self.attrs
            .attrs
            .as_path
            .as_ref()
            .and_then(|p| p.neighbor_as())
    }

    fn effective_router_id(&self) -> u32 {
        u32::from(self.attrs.attrs.originator_id.unwrap_or(self.router_id))
    }
}

/// Compares two paths: `Less` means `a` is preferred. Also returns the deciding step.
pub fn compare(
    a: &Candidate<'_>,
    b: &Candidate<'_>,
    opts: &DecisionOptions,
) -> (Ordering, DecisionStep) {
    // Better = Less throughout, so "higher wins" steps compare b to a.
    let steps: [(DecisionStep, Ordering); 11] = [
        (DecisionStep::Resolvable, b.resolvable.cmp(&a.resolvable)),
        (DecisionStep::Local, b.local.cmp(&a.local)),
        (
            DecisionStep::LocalPref,
            b.local_pref(opts).cmp(&a.local_pref(opts)),
        ),
        (
            DecisionStep::AsPathLength,
            a.as_path_len().cmp(&b.as_path_len()),
        ),
        (DecisionStep::Origin, a.origin().cmp(&b.origin())),
        (DecisionStep::Med, {
            if opts.always_compare_med || a.neighbor_as() == b.neighbor_as() {
                a.med().cmp(&b.med())
            } else {
                Ordering::Equal
            }
        }),
        (DecisionStep::EbgpOverIbgp, b.ebgp.cmp(&a.ebgp)),
        (DecisionStep::IgpCost, a.igp_cost.cmp(&b.igp_cost)),
        (
            DecisionStep::RouterId,
            a.effective_router_id().cmp(&b.effective_router_id()),
        ),
        (
            DecisionStep::ClusterListLength,
            a.attrs
                .attrs
                .cluster_list
                .len()
                .cmp(&b.attrs.attrs.cluster_list.len()),
        ),
        (
            DecisionStep::PeerAddress,
            a.peer_address.cmp(&b.peer_address),
        ),
    ];
    steps
        .into_iter()
        .find(|(_, o)| o.is_ne())
        .map_or((Ordering::Equal, DecisionStep::Equal), |(s, o)| (o, s))
}

/// Whether `other` may share the FIB entry with the best path `best` (see module docs).
pub fn multipath_equal(
    best: &Candidate<'_>,
    other: &Candidate<'_>,
    opts: &DecisionOptions,
) -> bool {
    if best.local
        || other.local
        || !best.resolvable
        || !other.resolvable
        || best.med() != other.med()
    {
        return false;
    }
    let (_, step) = compare(best, other, opts);
    step > DecisionStep::IgpCost
}

/// The paths of one prefix, best first. One path (the overwhelmingly common case) is stored
/// inline so that a full table costs no allocation per prefix.
///
/// `Many` is boxed so that the enum stays as small as one path (three words, checked by a
/// test): the Loc-RIB holds a million of these, and the rare multi-path prefix can afford
/// the extra indirection.
#[derive(Debug, Clone)]
#[allow(clippy::box_collection)]
pub(crate) enum PathSet {
    One(RibPath),
    Many(Box<Vec<RibPath>>),
}

/// What [`PathSet::upsert`] did.
pub(crate) enum Upsert {
    Inserted,
    Replaced,
    Unchanged,
}

impl PathSet {
    pub(crate) fn as_slice(&self) -> &[RibPath] {
        match self {
            PathSet::One(p) => std::slice::from_ref(p),
            PathSet::Many(v) => v.as_slice(),
        }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [RibPath] {
        match self {
            PathSet::One(p) => std::slice::from_mut(p),
            PathSet::Many(v) => v.as_mut_slice(),
        }
    }

    pub(crate) fn best(&self) -> &RibPath {
        match self {
            PathSet::One(p) => p,
            // A Many set always holds at least two paths (see `remove`).
            PathSet::Many(v) => &v[0],
        }
    }

    pub(crate) fn contains(&self, peer: PeerId) -> bool {
        self.as_slice().iter().any(|p| p.peer == peer)
    }

    /// Adds `path`, replacing the one from the same peer with the same path identifier (an
    /// implicit withdraw, RFC 4271 §3.1, RFC 7911 §5).
    pub(crate) fn upsert(&mut self, path: RibPath) -> Upsert {
        if let Some(slot) = self
            .as_mut_slice()
            .iter_mut()
            .find(|p| p.same_source(&path))
        {
            if Arc::ptr_eq(&slot.attrs, &path.attrs) {
                // A re-announcement refreshes a stale path (RFC 4724 §4.2). Resolvability
                // is left as stored: it changes only through re-evaluation, which reports
                // what that changes.
                slot.stale = false;
                return Upsert::Unchanged;
            }
            *slot = path;
            return Upsert::Replaced;
        }
        match self {
            PathSet::One(p) => {
                let first = p.clone();
                *self = PathSet::Many(Box::new(vec![first, path]));
            }
            PathSet::Many(v) => v.push(path),
        }
        Upsert::Inserted
    }

    /// Removes the paths `remove` selects from a set that keeps at least one path (the
    /// caller drops the whole entry when every path goes), keeping `Many` at two or more.
    pub(crate) fn remove_some(&mut self, remove: impl Fn(&RibPath) -> bool) {
        let PathSet::Many(v) = self else {
            return;
        };
        v.retain(|p| !remove(p));
        if v.len() == 1 {
            if let Some(last) = v.pop() {
                *self = PathSet::One(last);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.as_slice().len()
    }
}

/// Turns a stored path into what the decision process compares (needs the sending peer's
/// facts and the IGP cost of the next hop, which live outside the path).
pub(crate) trait CandidateView {
    fn candidate<'a>(&self, path: &'a RibPath) -> Option<Candidate<'a>>;
}

/// Moves the best path of `paths` to the front, by a linear scan with `compare`.
pub(crate) fn select_best(
    paths: &mut [RibPath],
    view: &impl CandidateView,
    opts: &DecisionOptions,
) {
    if paths.len() < 2 {
        return;
    }
    let mut best = 0;
    for i in 1..paths.len() {
        let (Some(c), Some(b)) = (view.candidate(&paths[i]), view.candidate(&paths[best])) else {
            continue;
        };
        if compare(&c, &b, opts).0 == Ordering::Less {
            best = i;
        }
    }
    paths.swap(0, best);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_set_is_three_words() {
        // Peer, ADD-PATH identifier, flags and the attribute pointer: 24 octets inline.
        assert_eq!(std::mem::size_of::<PathSet>(), 24);
    }
}

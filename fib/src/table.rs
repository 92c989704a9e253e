//! The [`RouteTable`] trait every FIB implements, and the pure diff at the heart of
//! reconciliation.
//!
//! Reconciliation is level-triggered (see DESIGN-NOTES): the owner hands over the complete
//! desired set, the table reads what the FIB holds *under our protocol id*, and [`diff`] says
//! which routes to replace and which to delete. Everything else in the FIB (kernel connected
//! routes, `proto static`, BIRD's routes) is invisible to the diff and therefore never touched.

use std::collections::{BTreeMap, HashMap};

use crate::error::{FibError, RouteError};
use crate::route::{Route, RouteKey};

/// A FIB we program: the kernel's (through rtnetlink) or an in-memory one.
///
/// The API is synchronous and `&mut self`: one owner task holds the table and calls it with
/// whole batches. The netlink implementation blocks for about as long as the kernel takes to
/// process a batch (milliseconds for thousands of routes); async owners call it from
/// `spawn_blocking` or a dedicated thread.
///
/// Every method updates the *desired* set first and then programs the difference, so a later
/// [`reconcile`](RouteTable::reconcile) neither undoes an incremental change nor forgets a
/// route that failed: failed routes stay desired and are retried by the next reconcile.
pub trait RouteTable: Send + std::fmt::Debug {
    /// The route protocol id stamped on, and used to recognise, our routes.
    fn protocol(&self) -> u8;

    /// Makes `desired` the complete set of our routes and reconciles the FIB with it:
    /// routes of ours not in the set are deleted, missing ones added, changed ones replaced,
    /// identical ones left alone (no flap). Duplicate keys: the last one wins.
    fn apply(&mut self, desired: Vec<Route>) -> Result<ApplyReport, FibError>;

    /// Reconciles the FIB with the current desired set again: retries routes that failed,
    /// repairs drift (someone deleted or changed one of our routes).
    fn reconcile(&mut self) -> Result<ApplyReport, FibError>;

    /// Hot path: adds or replaces these routes (idempotent) without reading the FIB, and
    /// records them as desired.
    fn replace(&mut self, routes: Vec<Route>) -> Result<ApplyReport, FibError>;

    /// Hot path: deletes our routes with these keys (a missing route counts as deleted) and
    /// removes them from the desired set. Routes of other protocols are never deleted.
    fn delete(&mut self, keys: Vec<RouteKey>) -> Result<ApplyReport, FibError>;

    /// Our routes as the FIB holds them now (devices as ifindex for the kernel FIB).
    fn installed(&mut self) -> Result<Vec<Route>, FibError>;

    /// The current desired set.
    fn desired(&self) -> Vec<Route>;
}

/// What one call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Routes the FIB did not have (for `replace`: every route acknowledged).
    pub added: usize,
    /// Routes the FIB had in a different form and now has as desired.
    pub changed: usize,
    /// Routes of ours deleted.
    pub deleted: usize,
    /// Routes that already matched and were not touched.
    pub unchanged: usize,
    /// Routes that could not be programmed; the rest of the batch was.
    pub failed: Vec<RouteError>,
}

impl ApplyReport {
    pub fn is_clean(&self) -> bool {
        self.failed.is_empty()
    }

    /// Number of routes written (added + changed + deleted).
    pub fn writes(&self) -> usize {
        self.added + self.changed + self.deleted
    }
}

/// The writes that turn `actual` into `desired`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteDiff {
    /// Desired routes absent from the FIB.
    pub add: Vec<Route>,
    /// Desired routes present in a different form (including unmodelled routes of ours).
    pub change: Vec<Route>,
    /// Keys of our routes that are not desired.
    pub delete: Vec<RouteKey>,
    pub unchanged: usize,
}

/// Computes the difference between the desired routes and the FIB's routes of our protocol.
///
/// `actual` maps each key of ours found in the FIB to the route, or to `None` when the FIB
/// holds something under our protocol id that [`Route`] cannot describe (e.g. an
/// `unreachable` route someone added with our id): such an entry is replaced if desired,
/// deleted otherwise. Both sides must name devices the same way (the netlink FIB resolves
/// names to ifindexes first). Comparison is [`Route::is_satisfied_by`]: ECMP next-hop order
/// is ignored and a desired next hop without a device accepts the kernel's choice.
pub fn diff(
    desired: &BTreeMap<RouteKey, Route>,
    actual: &HashMap<RouteKey, Option<Route>>,
) -> RouteDiff {
    let wanted: Vec<(&RouteKey, &Route)> = desired.iter().collect();
    let mut stream = DiffStream::new(&wanted);
    let mut delete = Vec::new();
    for (key, have) in actual {
        if stream.observe(key, have.as_ref(), |k| desired.contains_key(k)) == Verdict::Delete {
            delete.push(*key);
        }
    }
    // Deterministic order (the FIB's listing is a hash map): tests and logs stay stable.
    delete.sort_unstable();
    let d = stream.finish();
    RouteDiff {
        add: d.add.into_iter().cloned().collect(),
        change: d.change.into_iter().cloned().collect(),
        delete,
        unchanged: d.unchanged,
    }
}

/// The writes [`DiffStream`] found, borrowing the desired routes, in key order.
#[derive(Debug, Default)]
pub(crate) struct RouteDiffRefs<'a> {
    pub add: Vec<&'a Route>,
    pub change: Vec<&'a Route>,
    pub unchanged: usize,
}

/// What becomes of a route the FIB holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Desired and as desired.
    Unchanged,
    /// Desired in another form: replaced.
    Change,
    /// Desired but left out of the wanted routes (e.g. its device is missing): neither
    /// written nor deleted.
    Hold,
    /// Not desired: deleted.
    Delete,
}

/// The core of [`diff`], fed the FIB's routes one at a time as a dump yields them, so that
/// a reconcile keeps no copy of the FIB: for a million routes the kernel's routes as a map
/// were about 240 MB at the peak of every reconcile; this keeps a flag per wanted route.
///
/// `wanted` are the desired routes to program, sorted by key (the order the writes go in);
/// the caller keeps the routes it must delete as [`Verdict::Delete`] says.
#[derive(Debug)]
pub(crate) struct DiffStream<'w, 'a> {
    wanted: &'w [(&'a RouteKey, &'a Route)],
    seen: Vec<bool>,
    change: Vec<usize>,
    unchanged: usize,
}

impl<'w, 'a> DiffStream<'w, 'a> {
    pub fn new(wanted: &'w [(&'a RouteKey, &'a Route)]) -> Self {
        debug_assert!(wanted.windows(2).all(|w| w[0].0 < w[1].0));
        DiffStream {
            wanted,
            seen: vec![false; wanted.len()],
            change: Vec::new(),
            unchanged: 0,
        }
    }

    /// One route of ours the FIB holds (`None`: something [`Route`] cannot describe);
    /// `is_desired` says whether a key missing from `wanted` is still wanted.
    pub fn observe(
        &mut self,
        key: &RouteKey,
        have: Option<&Route>,
        is_desired: impl Fn(&RouteKey) -> bool,
    ) -> Verdict {
        match self.wanted.binary_search_by(|(k, _)| (*k).cmp(key)) {
            Ok(i) if self.seen[i] => Verdict::Hold,
            Ok(i) => {
                self.seen[i] = true;
                if have.is_some_and(|have| self.wanted[i].1.is_satisfied_by(have)) {
                    self.unchanged += 1;
                    Verdict::Unchanged
                } else {
                    self.change.push(i);
                    Verdict::Change
                }
            }
            Err(_) if is_desired(key) => Verdict::Hold,
            Err(_) => Verdict::Delete,
        }
    }

    /// Takes in what another stream over the same `wanted` saw (the dump of the other family).
    pub fn absorb(&mut self, other: DiffStream<'w, 'a>) {
        for (mine, theirs) in self.seen.iter_mut().zip(other.seen) {
            *mine |= theirs;
        }
        self.change.extend(other.change);
        self.unchanged += other.unchanged;
    }

    /// The wanted routes the FIB lacks, and those it holds in another form, in key order.
    pub fn finish(mut self) -> RouteDiffRefs<'a> {
        self.change.sort_unstable();
        let add = self
            .wanted
            .iter()
            .zip(&self.seen)
            .filter(|(_, seen)| !**seen)
            .map(|((_, r), _)| *r)
            .collect();
        RouteDiffRefs {
            add,
            change: self.change.iter().map(|i| self.wanted[*i].1).collect(),
            unchanged: self.unchanged,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::route::NextHop;

    fn r(dst: &str, gw: &str) -> Route {
        Route::via(dst.parse().unwrap(), NextHop::via(gw.parse().unwrap()))
    }

    #[test]
    fn diff_adds_changes_deletes_and_leaves_equal_alone() {
        let desired: BTreeMap<_, _> = [
            r("10.65.1.0/26", "10.0.0.1"),
            r("10.65.2.0/26", "10.0.0.2"),
            r("10.65.3.0/26", "10.0.0.3"),
            r("10.65.5.0/26", "10.0.0.5"),
        ]
        .into_iter()
        .map(|r| (r.key(), r))
        .collect();
        let actual: HashMap<_, _> = [
            r("10.65.1.0/26", "10.0.0.1"),  // same
            r("10.65.2.0/26", "10.0.0.99"), // changed
            r("10.65.4.0/26", "10.0.0.4"),  // stale
        ]
        .into_iter()
        .map(|r| (r.key(), Some(r)))
        .chain([(RouteKey::main("10.65.5.0/26".parse().unwrap()), None)])
        .collect();
        let d = diff(&desired, &actual);
        assert_eq!(d.unchanged, 1);
        assert_eq!(d.add, vec![r("10.65.3.0/26", "10.0.0.3")]);
        assert_eq!(
            d.change,
            vec![r("10.65.2.0/26", "10.0.0.2"), r("10.65.5.0/26", "10.0.0.5")]
        );
        assert_eq!(
            d.delete,
            vec![RouteKey::main("10.65.4.0/26".parse().unwrap())]
        );
    }

    #[test]
    fn diff_of_identical_sets_is_empty() {
        let set: BTreeMap<_, _> = (0..50u8)
            .map(|i| r(&format!("10.66.{i}.0/24"), "10.0.0.1"))
            .map(|r| (r.key(), r))
            .collect();
        let actual = set.iter().map(|(k, v)| (*k, Some(v.clone()))).collect();
        let d = diff(&set, &actual);
        assert_eq!(d.unchanged, 50);
        assert!(d.add.is_empty() && d.change.is_empty() && d.delete.is_empty());
    }
}

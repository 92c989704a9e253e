//! The [`RouteTable`] trait every FIB implements, and the pure diff at the heart of
//! reconciliation.
//!
//! Reconciliation is level-triggered (see DESIGN-NOTES): the owner hands over the complete
//! desired set, the table reads what the FIB holds *under our protocol id*, and [`diff`] says
//! which routes to replace and which to delete. Everything else in the FIB (kernel connected
//! routes, `proto static`, BIRD's routes) is invisible to the diff and therefore never touched.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

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
    let d = diff_refs(desired.iter(), actual, |k| desired.contains_key(k));
    RouteDiff {
        add: d.add.into_iter().cloned().collect(),
        change: d.change.into_iter().cloned().collect(),
        delete: d.delete,
        unchanged: d.unchanged,
    }
}

/// [`RouteDiff`] borrowing the desired routes.
#[derive(Debug, Default)]
pub(crate) struct RouteDiffRefs<'a> {
    pub add: Vec<&'a Route>,
    pub change: Vec<&'a Route>,
    pub delete: Vec<RouteKey>,
    pub unchanged: usize,
}

/// The core of [`diff`] without copying routes (a reconcile of 100k routes would otherwise
/// clone each one): `wanted` in the order the writes should go (key order), `actual` the
/// FIB's routes of ours in any map, `is_desired` whether a key is wanted at all (a wanted
/// key left out of `wanted`, e.g. because its device is missing, is then neither written nor
/// deleted).
pub(crate) fn diff_refs<'a, S: BuildHasher>(
    wanted: impl IntoIterator<Item = (&'a RouteKey, &'a Route)>,
    actual: &HashMap<RouteKey, Option<Route>, S>,
    is_desired: impl Fn(&RouteKey) -> bool,
) -> RouteDiffRefs<'a> {
    let mut d = RouteDiffRefs::default();
    for (key, want) in wanted {
        match actual.get(key) {
            None => d.add.push(want),
            Some(Some(have)) if want.is_satisfied_by(have) => d.unchanged += 1,
            Some(_) => d.change.push(want),
        }
    }
    d.delete = actual.keys().filter(|k| !is_desired(k)).copied().collect();
    // Deterministic order (the FIB's listing is a hash map): tests and logs stay stable.
    d.delete.sort_unstable();
    d
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

//! An in-memory FIB implementing [`RouteTable`], for simulating many nodes in one process.
//!
//! It behaves like the kernel FIB as far as our programming is concerned: routes are keyed by
//! (table, prefix); a replace overwrites whatever route has that key, whichever protocol put it
//! there (as NLM_F_REPLACE does); deletes only remove routes of our protocol; other protocols'
//! routes ("foreign" routes, e.g. the connected subnet) can be seeded and are otherwise left
//! alone. It does not resolve devices or check gateway reachability; per-route kernel refusals
//! can be injected with [`MemoryFib::refuse`] to exercise callers' error paths.
//!
//! The FIB state is shared between clones (like the kernel's, shared by every process in a
//! namespace), while the desired set belongs to each instance: [`MemoryFib::restart`] models
//! a restarted agent that finds its old routes in the FIB.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;

use crate::error::{FibError, RouteError, RouteFailure, RouteOp};
use crate::route::{Route, RouteKey, DEFAULT_PROTOCOL, MAIN_TABLE};
use crate::table::{diff, ApplyReport, RouteTable};

#[derive(Debug, Default)]
struct FibState {
    /// Every route in the FIB with the protocol id that installed it.
    routes: BTreeMap<RouteKey, (u8, Route)>,
    /// Injected refusals: a replace of this key fails with this errno.
    refusals: HashMap<RouteKey, Errno>,
    /// Writes performed (replace + delete), to let tests prove that nothing flapped.
    writes: u64,
}

/// The in-memory FIB. Cloning yields another handle on the same FIB (and a copy of the
/// desired set).
#[derive(Debug, Clone)]
pub struct MemoryFib {
    protocol: u8,
    state: Arc<Mutex<FibState>>,
    desired: BTreeMap<RouteKey, Route>,
}

impl Default for MemoryFib {
    fn default() -> Self {
        Self::new(DEFAULT_PROTOCOL)
    }
}

impl MemoryFib {
    /// An empty FIB whose routes we program with protocol id `protocol`.
    pub fn new(protocol: u8) -> Self {
        Self {
            protocol,
            state: Arc::default(),
            desired: BTreeMap::new(),
        }
    }

    /// A new programming instance (empty desired set) on the same FIB: what a restarted agent
    /// sees.
    pub fn restart(&self) -> Self {
        Self {
            protocol: self.protocol,
            state: Arc::clone(&self.state),
            desired: BTreeMap::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, FibState> {
        // A poisoned lock only means another handle panicked mid-update; the maps are still
        // structurally valid, so keep going rather than propagate the panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seeds a route of another protocol (e.g. 2 = kernel for a connected subnet, 4 = static).
    pub fn insert_foreign(&self, protocol: u8, route: Route) {
        self.state().routes.insert(route.key(), (protocol, route));
    }

    /// Makes every replace of `key` fail with `errno` until [`MemoryFib::accept`] is called.
    pub fn refuse(&self, key: RouteKey, errno: Errno) {
        self.state().refusals.insert(key, errno);
    }

    /// Lifts a refusal set with [`MemoryFib::refuse`].
    pub fn accept(&self, key: &RouteKey) {
        self.state().refusals.remove(key);
    }

    /// Every route in the FIB, any protocol, with its protocol id.
    pub fn all_routes(&self) -> Vec<(u8, Route)> {
        self.state().routes.values().cloned().collect()
    }

    /// The number of writes (replaces and deletes that changed something) so far.
    pub fn writes(&self) -> u64 {
        self.state().writes
    }

    /// Longest-prefix match in the main table, any protocol: where would a packet to `addr`
    /// go. Linear in the table size, which is fine for simulations.
    pub fn lookup(&self, addr: IpAddr) -> Option<Route> {
        self.state()
            .routes
            .iter()
            .filter(|(k, _)| k.table == MAIN_TABLE && k.destination.contains(&addr))
            .max_by_key(|(k, _)| k.destination.prefix_len())
            .map(|(_, (_, r))| r.clone())
    }

    fn ours(&self, st: &FibState) -> HashMap<RouteKey, Option<Route>> {
        st.routes
            .iter()
            .filter(|(_, (p, _))| *p == self.protocol)
            .map(|(k, (_, r))| (*k, Some(r.clone())))
            .collect()
    }

    fn write_replace(&self, st: &mut FibState, route: &Route) -> Result<(), RouteError> {
        let key = route.key();
        let fail = |failure| RouteError {
            op: RouteOp::Replace,
            key,
            route: Some(route.clone()),
            failure,
        };
        route.validate().map_err(|e| fail(e.into()))?;
        if let Some(errno) = st.refusals.get(&key) {
            return Err(fail(RouteFailure::Kernel(*errno)));
        }
        st.routes.insert(key, (self.protocol, route.clone()));
        st.writes += 1;
        Ok(())
    }

    fn write_delete(&self, st: &mut FibState, key: RouteKey) {
        if matches!(st.routes.get(&key), Some((p, _)) if *p == self.protocol) {
            st.routes.remove(&key);
            st.writes += 1;
        }
    }

    fn reconcile_locked(&self, st: &mut FibState) -> ApplyReport {
        let d = diff(&self.desired, &self.ours(st));
        let mut report = ApplyReport {
            unchanged: d.unchanged,
            ..ApplyReport::default()
        };
        for key in d.delete {
            self.write_delete(st, key);
            report.deleted += 1;
        }
        for (routes, counter) in [(d.add, 0), (d.change, 1)] {
            for route in routes {
                match self.write_replace(st, &route) {
                    Ok(()) if counter == 0 => report.added += 1,
                    Ok(()) => report.changed += 1,
                    Err(e) => report.failed.push(e),
                }
            }
        }
        report
    }
}

impl RouteTable for MemoryFib {
    fn protocol(&self) -> u8 {
        self.protocol
    }

    fn apply(&mut self, desired: Vec<Route>) -> Result<ApplyReport, FibError> {
        self.desired = desired.into_iter().map(|r| (r.key(), r)).collect();
        self.reconcile()
    }

    fn reconcile(&mut self) -> Result<ApplyReport, FibError> {
        let state = Arc::clone(&self.state);
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        Ok(self.reconcile_locked(&mut st))
    }

    fn replace(&mut self, routes: Vec<Route>) -> Result<ApplyReport, FibError> {
        let state = Arc::clone(&self.state);
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        let mut report = ApplyReport::default();
        for route in routes {
            self.desired.insert(route.key(), route.clone());
            match self.write_replace(&mut st, &route) {
                Ok(()) => report.added += 1,
                Err(e) => report.failed.push(e),
            }
        }
        Ok(report)
    }

    fn delete(&mut self, keys: Vec<RouteKey>) -> Result<ApplyReport, FibError> {
        let state = Arc::clone(&self.state);
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        let mut report = ApplyReport::default();
        for key in keys {
            let key = RouteKey::new(key.table, key.destination);
            self.desired.remove(&key);
            self.write_delete(&mut st, key);
            report.deleted += 1;
        }
        Ok(report)
    }

    fn installed(&mut self) -> Result<Vec<Route>, FibError> {
        let st = self.state();
        Ok(st
            .routes
            .values()
            .filter(|(p, _)| *p == self.protocol)
            .map(|(_, r)| r.clone())
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
    use crate::route::NextHop;

    fn via(dst: &str, gw: &str) -> Route {
        Route::via(dst.parse().unwrap(), NextHop::via(gw.parse().unwrap()))
    }

    #[test]
    fn reconcile_removes_only_our_stale_routes() {
        let mut fib = MemoryFib::default();
        fib.insert_foreign(4, via("10.99.0.0/24", "192.168.1.1"));
        fib.apply(vec![
            via("10.65.1.0/26", "192.168.1.2"),
            via("10.65.2.0/26", "192.168.1.3"),
        ])
        .unwrap();
        let report = fib.apply(vec![via("10.65.1.0/26", "192.168.1.2")]).unwrap();
        assert_eq!((report.deleted, report.unchanged, report.added), (1, 1, 0));
        let all = fib.all_routes();
        assert_eq!(all.len(), 2);
        assert!(all.contains(&(4, via("10.99.0.0/24", "192.168.1.1"))));
    }

    #[test]
    fn restart_with_same_desired_set_writes_nothing() {
        let mut fib = MemoryFib::default();
        let routes = vec![
            via("10.65.1.0/26", "192.168.1.2"),
            Route::blackhole("10.65.0.0/26".parse().unwrap()),
        ];
        fib.apply(routes.clone()).unwrap();
        let writes = fib.writes();
        let mut restarted = fib.restart();
        assert!(restarted.desired().is_empty());
        let report = restarted.apply(routes).unwrap();
        assert_eq!(report.unchanged, 2);
        assert_eq!(fib.writes(), writes);
    }

    #[test]
    fn refused_route_is_reported_and_retried_by_reconcile() {
        let mut fib = MemoryFib::default();
        let bad = via("10.65.9.0/26", "192.168.1.9");
        fib.refuse(bad.key(), Errno::ENETUNREACH);
        let report = fib
            .apply(vec![bad.clone(), via("10.65.1.0/26", "192.168.1.2")])
            .unwrap();
        assert_eq!(report.added, 1);
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.failed[0].errno(), Some(Errno::ENETUNREACH));
        assert_eq!(report.failed[0].key, bad.key());
        fib.accept(&bad.key());
        let report = fib.reconcile().unwrap();
        assert_eq!((report.added, report.unchanged), (1, 1));
    }

    #[test]
    fn incremental_ops_update_desired_set() {
        let mut fib = MemoryFib::default();
        fib.replace(vec![via("10.65.1.0/26", "192.168.1.2")])
            .unwrap();
        fib.delete(vec![RouteKey::main("10.65.1.0/26".parse().unwrap())])
            .unwrap();
        fib.replace(vec![via("10.65.3.0/26", "192.168.1.2")])
            .unwrap();
        let report = fib.reconcile().unwrap();
        assert_eq!(report.unchanged, 1);
        assert_eq!(report.writes(), 0);
        assert_eq!(
            fib.lookup("10.65.3.7".parse().unwrap()),
            Some(via("10.65.3.0/26", "192.168.1.2"))
        );
        assert_eq!(fib.lookup("10.65.1.7".parse().unwrap()), None);
    }

    #[test]
    fn tables_are_interchangeable_behind_the_trait() {
        let tables: Vec<Box<dyn RouteTable>> = vec![Box::new(MemoryFib::default())];
        for mut t in tables {
            t.apply(vec![via("10.65.1.0/26", "192.168.1.2")]).unwrap();
            assert_eq!(t.installed().unwrap().len(), 1);
        }
    }

    #[test]
    fn delete_never_touches_foreign_routes() {
        let mut fib = MemoryFib::default();
        let foreign = via("10.99.0.0/24", "192.168.1.1");
        fib.insert_foreign(4, foreign.clone());
        fib.delete(vec![foreign.key()]).unwrap();
        assert_eq!(fib.all_routes(), vec![(4, foreign)]);
    }
}

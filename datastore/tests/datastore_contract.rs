//! The datastore contract, run against every implementation (file, memory, Kubernetes
//! through the in-process API server stand-in of `lab::kube_standin`, and a real etcd
//! started by `lab::etcd`): CRUD,
//! compare-and-swap on versions, watches in revision order, resumption and expiry.
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

use std::time::Duration;

use datastore::{
    Datastore, DatastoreError, Event, EventType, FileDatastore, FileOptions, MemoryDatastore,
    Watch, WatchFrom,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(5);

/// The kinds the contract stores: its own, so that the values are arbitrary JSON (the
/// Kubernetes backend keeps Calico's kinds in Calico's shapes, `datastore_kube.rs`).
#[cfg(feature = "kubernetes")]
const KINDS: [&str; 3] = ["Peering", "Router", "Pool"];

/// Receives exactly `n` events (bounded in time), failing on an error or timeout.
fn take(watch: &mut Watch, n: usize) -> Vec<Event> {
    let mut events = Vec::new();
    while events.len() < n {
        match watch.next_timeout(WAIT) {
            Ok(Some(e)) => events.push(e),
            Ok(None) => panic!("timed out after {} of {n} events: {events:?}", events.len()),
            Err(e) => panic!("watch error after {events:?}: {e}"),
        }
    }
    events
}

/// The `(requested, oldest)` of an expired watch. The trait allows the expiry either as the
/// answer of `watch` or as the watch's first item (an API server sends it as an `ERROR`
/// event of an accepted watch, and the client cannot know before reading it).
fn expect_expired(result: Result<Watch, DatastoreError>) -> (u64, u64) {
    let first = match result {
        Err(e) => e,
        Ok(mut watch) => match watch.next_timeout(WAIT) {
            Err(e) => e,
            Ok(item) => panic!("expected Expired, got {item:?}"),
        },
    };
    match first {
        DatastoreError::Expired { requested, oldest } => (requested, oldest),
        e => panic!("expected Expired, got {e}"),
    }
}

/// Asserts nothing more arrives for a while (longer than the file store's poll interval).
fn assert_quiet(watch: &mut Watch) {
    match watch.next_timeout(Duration::from_millis(200)) {
        Ok(None) => {}
        other => panic!("unexpected extra watch item: {other:?}"),
    }
}

fn summary(events: &[Event]) -> Vec<(u64, EventType, String)> {
    events
        .iter()
        .map(|e| (e.revision(), e.event_type, e.record.name.clone()))
        .collect()
}

macro_rules! contract {
    ($module:ident, $factory:expr) => {
        mod $module {
            use super::*;

            /// A fresh store keeping `capacity` events, plus whatever keeps it alive.
            fn store(capacity: usize) -> (Box<dyn Datastore>, Box<dyn std::any::Any>) {
                #[allow(clippy::redundant_closure_call)]
                ($factory)(capacity)
            }

            #[test]
            fn crud_round_trip() {
                let (ds, _g) = store(100);
                assert!(ds.list("Peering").unwrap().records.is_empty());
                let v1 = ds.create("Peering", "tor-a", json!({"peerIP": "10.0.0.1"})).unwrap();
                let v2 = ds.create("Peering", "tor-b", json!({"peerIP": "10.0.0.2"})).unwrap();
                assert!(v2 > v1);
                let got = ds.get("Peering", "tor-a").unwrap();
                assert_eq!(got.version, v1);
                assert_eq!(got.value, json!({"peerIP": "10.0.0.1"}));
                let v3 = ds
                    .update("Peering", "tor-a", json!({"peerIP": "10.0.0.9"}), v1)
                    .unwrap();
                assert!(v3 > v2);
                let listing = ds.list("Peering").unwrap();
                assert_eq!(listing.revision, v3);
                let names: Vec<_> = listing.records.iter().map(|r| r.name.as_str()).collect();
                assert_eq!(names, ["tor-a", "tor-b"]);
                assert_eq!(listing.records[0].value, json!({"peerIP": "10.0.0.9"}));
                assert_eq!(listing.records[0].version, v3);
                // Other kinds are separate namespaces.
                assert!(ds.list("Router").unwrap().records.is_empty());
                assert!(matches!(
                    ds.get("Router", "tor-a"),
                    Err(DatastoreError::NotFound { .. })
                ));
                let v4 = ds.delete("Peering", "tor-a", Some(v3)).unwrap();
                assert!(v4 > v3);
                assert!(matches!(
                    ds.get("Peering", "tor-a"),
                    Err(DatastoreError::NotFound { .. })
                ));
                ds.delete("Peering", "tor-b", None).unwrap();
                assert!(ds.list("Peering").unwrap().records.is_empty());
                // A deleted name can be created again.
                ds.create("Peering", "tor-a", json!(1)).unwrap();
            }

            #[test]
            fn update_with_stale_version_conflicts() {
                let (ds, _g) = store(100);
                let v1 = ds.create("Router", "n1", json!({"asn": 64512})).unwrap();
                let v2 = ds.update("Router", "n1", json!({"asn": 64513}), v1).unwrap();
                match ds.update("Router", "n1", json!({"asn": 1}), v1) {
                    Err(DatastoreError::Conflict {
                        kind,
                        name,
                        expected,
                        actual,
                    }) => {
                        assert_eq!((kind.as_str(), name.as_str()), ("Router", "n1"));
                        assert_eq!((expected, actual), (v1, v2));
                    }
                    other => panic!("expected conflict, got {other:?}"),
                }
                assert_eq!(ds.get("Router", "n1").unwrap().value, json!({"asn": 64513}));
                assert!(matches!(
                    ds.update("Router", "absent", json!(1), v2),
                    Err(DatastoreError::NotFound { .. })
                ));
            }

            #[test]
            fn create_existing_is_already_exists() {
                let (ds, _g) = store(100);
                ds.create("Pool", "default", json!({"cidr": "10.244.0.0/16"})).unwrap();
                let err = ds.create("Pool", "default", json!({})).unwrap_err();
                assert!(matches!(err, DatastoreError::AlreadyExists { .. }), "{err}");
                assert!(err.to_string().contains("Pool"), "{err}");
                assert!(err.to_string().contains("default"), "{err}");
                assert_eq!(
                    ds.get("Pool", "default").unwrap().value,
                    json!({"cidr": "10.244.0.0/16"})
                );
            }

            #[test]
            fn delete_with_wrong_version_conflicts() {
                let (ds, _g) = store(100);
                let v1 = ds.create("Pool", "f", json!({})).unwrap();
                let v2 = ds.update("Pool", "f", json!({"a": 1}), v1).unwrap();
                assert!(matches!(
                    ds.delete("Pool", "f", Some(v1)),
                    Err(DatastoreError::Conflict { .. })
                ));
                assert_eq!(ds.get("Pool", "f").unwrap().version, v2);
                assert!(matches!(
                    ds.delete("Pool", "g", None),
                    Err(DatastoreError::NotFound { .. })
                ));
                ds.delete("Pool", "f", Some(v2)).unwrap();
            }

            #[test]
            fn invalid_names_are_rejected() {
                let (ds, _g) = store(100);
                for bad in ["", "a/b", "..", "x..y", ".hidden", "a\\b", "nul\0"] {
                    assert!(
                        matches!(
                            ds.create("Router", bad, json!(1)),
                            Err(DatastoreError::InvalidName { .. })
                        ),
                        "name {bad:?}"
                    );
                    assert!(
                        matches!(ds.list(bad), Err(DatastoreError::InvalidName { .. })),
                        "kind {bad:?}"
                    );
                }
                // Dotted names (common in Calico) are fine.
                ds.create("Peering", "rack1.tor", json!(1)).unwrap();
                assert_eq!(ds.list("Peering").unwrap().records.len(), 1);
            }

            #[test]
            fn watch_delivers_one_event_per_change_in_revision_order() {
                let (ds, _g) = store(100);
                let mut watch = ds.watch(None, WatchFrom::Now).unwrap();
                let a = ds.create("Router", "a", json!({"n": 0})).unwrap();
                let b = ds.create("Peering", "b", json!({"n": 0})).unwrap();
                let a2 = ds.update("Router", "a", json!({"n": 1}), a).unwrap();
                let d = ds.delete("Peering", "b", Some(b)).unwrap();
                let events = take(&mut watch, 4);
                assert_eq!(
                    summary(&events),
                    vec![
                        (a, EventType::Added, "a".to_string()),
                        (b, EventType::Added, "b".to_string()),
                        (a2, EventType::Modified, "a".to_string()),
                        (d, EventType::Deleted, "b".to_string()),
                    ]
                );
                assert_eq!(events[2].record.value, json!({"n": 1}));
                assert_eq!(events[2].record.kind, "Router");
                // A deletion carries the last value.
                assert_eq!(events[3].record.value, json!({"n": 0}));
                assert_quiet(&mut watch);
            }

            #[test]
            fn watch_of_one_kind_skips_others() {
                let (ds, _g) = store(100);
                let mut watch = ds.watch(Some("Router"), WatchFrom::Now).unwrap();
                ds.create("Peering", "p", json!(1)).unwrap();
                let n = ds.create("Router", "n", json!(1)).unwrap();
                ds.create("Pool", "i", json!(1)).unwrap();
                let events = take(&mut watch, 1);
                assert_eq!(summary(&events), vec![(n, EventType::Added, "n".to_string())]);
                assert_quiet(&mut watch);
            }

            #[test]
            fn watch_from_revision_replays_later_events() {
                let (ds, _g) = store(100);
                let v1 = ds.create("Router", "a", json!(1)).unwrap();
                let v2 = ds.create("Router", "b", json!(2)).unwrap();
                let v3 = ds.update("Router", "a", json!(3), v1).unwrap();
                let mut watch = ds.watch(Some("Router"), WatchFrom::Revision(v1)).unwrap();
                let v4 = ds.delete("Router", "b", None).unwrap();
                let events = take(&mut watch, 3);
                assert_eq!(
                    events.iter().map(Event::revision).collect::<Vec<_>>(),
                    vec![v2, v3, v4]
                );
                assert_quiet(&mut watch);
                // From zero on a store that never compacted: everything.
                let mut all = ds.watch(None, WatchFrom::Revision(0)).unwrap();
                assert_eq!(take(&mut all, 4).len(), 4);
                assert_quiet(&mut all);
            }

            #[test]
            fn list_then_watch_from_list_revision_misses_nothing() {
                let (ds, _g) = store(100);
                ds.create("Router", "a", json!(1)).unwrap();
                let listing = ds.list("Router").unwrap();
                let later = ds.create("Router", "b", json!(2)).unwrap();
                let mut watch = ds
                    .watch(Some("Router"), WatchFrom::Revision(listing.revision))
                    .unwrap();
                let events = take(&mut watch, 1);
                assert_eq!(summary(&events), vec![(later, EventType::Added, "b".into())]);
                assert_quiet(&mut watch);
            }

            #[test]
            fn watch_from_compacted_revision_expires() {
                let capacity = 4;
                let (ds, _g) = store(capacity);
                let mut version = ds.create("Router", "counter", json!(0)).unwrap();
                for i in 1..20 {
                    version = ds.update("Router", "counter", json!(i), version).unwrap();
                }
                let (requested, oldest) = expect_expired(ds.watch(None, WatchFrom::Revision(0)));
                assert_eq!(requested, 0);
                assert!(oldest > 0 && oldest < version, "oldest {oldest}");
                // The last `capacity` changes are always resumable.
                let from = version - capacity as u64;
                let mut watch = ds.watch(None, WatchFrom::Revision(from)).unwrap();
                let events = take(&mut watch, capacity);
                assert_eq!(events.last().unwrap().revision(), version);
                assert_quiet(&mut watch);
            }

            #[test]
            fn restarted_watch_from_last_seen_revision_misses_nothing() {
                let (ds, _g) = store(1000);
                let mut expected = Vec::new();
                let mut watch = ds.watch(Some("Router"), WatchFrom::Now).unwrap();
                for i in 0..5 {
                    expected.push(ds.create("Router", &format!("n{i}"), json!(i)).unwrap());
                }
                let mut seen: Vec<u64> =
                    take(&mut watch, 3).iter().map(Event::revision).collect();
                // The consumer goes away after 3 events; more changes happen meanwhile.
                drop(watch);
                for i in 5..8 {
                    expected.push(ds.create("Router", &format!("n{i}"), json!(i)).unwrap());
                }
                let last = *seen.last().unwrap();
                let mut watch = ds.watch(Some("Router"), WatchFrom::Revision(last)).unwrap();
                expected.push(ds.delete("Router", "n0", None).unwrap());
                seen.extend(take(&mut watch, 6).iter().map(Event::revision));
                assert_eq!(seen, expected);
                assert_quiet(&mut watch);
            }

            #[test]
            fn async_watch_yields_events() {
                let (ds, _g) = store(100);
                let mut watch = ds.watch(None, WatchFrom::Now).unwrap();
                let v = ds.create("Router", "a", json!(1)).unwrap();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .unwrap();
                let event = rt.block_on(async {
                    tokio::time::timeout(WAIT, watch.next()).await
                });
                let event = event.expect("timed out").expect("watch ended").unwrap();
                assert_eq!(event.revision(), v);
                assert_eq!(event.event_type, EventType::Added);
            }
        }
    };
}

contract!(
    memory,
    |capacity| -> (Box<dyn Datastore>, Box<dyn std::any::Any>) {
        (
            Box::new(MemoryDatastore::with_event_log_capacity(capacity)),
            Box::new(()),
        )
    }
);

contract!(
    file,
    |capacity| -> (Box<dyn Datastore>, Box<dyn std::any::Any>) {
        let dir = tempfile::tempdir().unwrap();
        let ds = FileDatastore::open_with(
            dir.path(),
            FileOptions {
                event_log_capacity: capacity,
                poll_interval: Duration::from_millis(10),
            },
        )
        .unwrap();
        (Box::new(ds), Box::new(dir))
    }
);

// The Kubernetes backend against the stand-in API server, which keeps `capacity` past
// changes for watches (like the API server's watch cache) and reports older revisions with
// an `ERROR` event carrying `410 Gone`. The client reads a kubeconfig pointing at the
// stand-in and installs CRDs of the contract's kinds first.
#[cfg(feature = "kubernetes")]
contract!(kubernetes, |capacity| -> (
    Box<dyn Datastore>,
    Box<dyn std::any::Any>
) {
    use datastore::{KubeConfigSource, KubeDatastore, KubeOptions};
    use lab::kube_standin::{ApiServerStandin, ExpiredAs, StandinOptions};
    let standin = ApiServerStandin::start(StandinOptions {
        event_window: capacity,
        expired_as: ExpiredAs::ErrorEvent,
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    standin.write_kubeconfig(&kubeconfig).unwrap();
    let ds = KubeDatastore::connect(
        KubeConfigSource::Kubeconfig(kubeconfig),
        KubeOptions {
            watch_kinds: KINDS.iter().map(|k| k.to_string()).collect(),
            ..KubeOptions::default()
        },
    )
    .unwrap();
    ds.install_record_crds(&KINDS).unwrap();
    (Box::new(ds), Box::new((standin, dir)))
});

// The etcd backend against a real single-member etcd on loopback, one per test. etcd keeps
// every revision until compaction, so the store is wrapped to compact after each write,
// keeping the last `capacity` revisions (what `--auto-compaction-mode=revision` does);
// a watch from before that then expires as the contract says.
#[cfg(feature = "etcd")]
contract!(
    etcd,
    |capacity| -> (Box<dyn Datastore>, Box<dyn std::any::Any>) {
        use datastore::{EtcdDatastore, EtcdOptions};
        use lab::etcd::EtcdCluster;
        let cluster = EtcdCluster::on_loopback(1, false).unwrap();
        let ds = EtcdDatastore::connect(EtcdOptions::new(vec![cluster.endpoint(0)])).unwrap();
        (
            Box::new(CompactingEtcd {
                inner: ds,
                keep: capacity as u64,
            }),
            Box::new(cluster),
        )
    }
);

/// An etcd store that compacts its history after every write to its last `keep` revisions.
#[cfg(feature = "etcd")]
struct CompactingEtcd {
    inner: datastore::EtcdDatastore,
    keep: u64,
}

#[cfg(feature = "etcd")]
impl CompactingEtcd {
    fn compacted(&self, revision: u64) -> datastore::Result<u64> {
        if revision > self.keep {
            self.inner.compact(revision - self.keep + 1)?;
        }
        Ok(revision)
    }
}

#[cfg(feature = "etcd")]
impl Datastore for CompactingEtcd {
    fn list(&self, kind: &str) -> datastore::Result<datastore::Listing> {
        self.inner.list(kind)
    }
    fn get(&self, kind: &str, name: &str) -> datastore::Result<datastore::Record> {
        self.inner.get(kind, name)
    }
    fn create(&self, kind: &str, name: &str, value: serde_json::Value) -> datastore::Result<u64> {
        let r = self.inner.create(kind, name, value)?;
        self.compacted(r)
    }
    fn update(
        &self,
        kind: &str,
        name: &str,
        value: serde_json::Value,
        expected: u64,
    ) -> datastore::Result<u64> {
        let r = self.inner.update(kind, name, value, expected)?;
        self.compacted(r)
    }
    fn delete(&self, kind: &str, name: &str, expected: Option<u64>) -> datastore::Result<u64> {
        let r = self.inner.delete(kind, name, expected)?;
        self.compacted(r)
    }
    fn watch(&self, kind: Option<&str>, from: WatchFrom) -> datastore::Result<Watch> {
        self.inner.watch(kind, from)
    }
}

#[test]
fn open_parses_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let ds = datastore::open(&format!("file:{}", dir.path().display())).unwrap();
    ds.create("Router", "a", json!(1)).unwrap();
    assert!(dir.path().join("Router").join("a.json").exists());
    let mem = datastore::open("memory:").unwrap();
    mem.create("Router", "a", json!(1)).unwrap();
    assert!(matches!(
        datastore::open("etcd3://x"),
        Err(DatastoreError::InvalidAddress(_))
    ));
    // An etcd address is checked before any connection is tried, naming what is wrong.
    match datastore::open("etcd:10.0.0.1:2379") {
        Err(e @ DatastoreError::Etcd(_)) => assert!(e.to_string().contains("http://"), "{e}"),
        Err(e) => panic!("expected an etcd configuration error, got {e}"),
        Ok(_) => panic!("opened an etcd datastore from an endpoint without scheme"),
    }
    // A kubeconfig that does not exist is a configuration error naming the file (and
    // without the feature, an error saying the backend is not built).
    match datastore::open("kubernetes:/nonexistent/kubeconfig") {
        #[cfg(feature = "kubernetes")]
        Err(e @ DatastoreError::Kubernetes(_)) => {
            assert!(e.to_string().contains("/nonexistent/kubeconfig"), "{e}")
        }
        #[cfg(not(feature = "kubernetes"))]
        Err(DatastoreError::Kubernetes(datastore::KubeError::NotBuilt)) => {}
        Err(e) => panic!("expected a Kubernetes configuration error, got {e}"),
        Ok(_) => panic!("opened a datastore from a missing kubeconfig"),
    }
}

/// `kubernetes:<kubeconfig>` reaches the API server the kubeconfig names.
#[cfg(feature = "kubernetes")]
#[test]
fn open_kubernetes_address_uses_the_kubeconfig() {
    use lab::kube_standin::{ApiServerStandin, StandinOptions};
    let standin = ApiServerStandin::start(StandinOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    standin.write_kubeconfig(&kubeconfig).unwrap();
    let ds = datastore::open(&format!("kubernetes:{}", kubeconfig.display())).unwrap();
    // No CRDs installed yet: the error says so instead of "not found".
    match ds.list("Peering") {
        Err(e @ DatastoreError::Kubernetes(_)) => {
            assert!(e.to_string().contains("peerings.routerd.io"), "{e}");
            assert!(e.to_string().contains("CRD"), "{e}");
        }
        other => panic!("expected a not-served error, got {other:?}"),
    }
    assert!(standin
        .requests()
        .iter()
        .any(|r| r.method == "GET" && r.target.starts_with("/apis/routerd.io/v1/peerings")));
}

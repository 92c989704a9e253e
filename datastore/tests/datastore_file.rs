//! File-datastore specifics: several instances (standing in for several daemons) on one
//! directory, atomic writes, corruption reporting, event-log compaction.
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

use std::time::Duration;

use datastore::{
    Datastore, DatastoreError, EventType, FileDatastore, FileOptions, Watch, WatchFrom,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

fn instance(dir: &std::path::Path, capacity: usize, poll_ms: u64) -> FileDatastore {
    FileDatastore::open_with(
        dir,
        FileOptions {
            event_log_capacity: capacity,
            poll_interval: Duration::from_millis(poll_ms),
        },
    )
    .unwrap()
}

fn next(watch: &mut Watch) -> datastore::Event {
    match watch.next_timeout(WAIT) {
        Ok(Some(e)) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Several instances on one directory, each used by its own threads, increment one counter
/// with compare-and-swap and retry on conflict: the flock around read-check-write makes
/// every increment count exactly once, and the event log has one event per increment.
#[test]
fn concurrent_cas_increments_across_instances_never_lose_an_update() {
    const THREADS: u64 = 4;
    const INCREMENTS: u64 = 25;
    let dir = tempfile::tempdir().unwrap();
    let first = instance(dir.path(), 10_000, 10);
    let created = first.create("Counter", "c", json!({"n": 0})).unwrap();
    let mut watch = first
        .watch(Some("Counter"), WatchFrom::Revision(created))
        .unwrap();
    let conflicts = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let path = dir.path().to_path_buf();
                scope.spawn(move || {
                    let ds = instance(&path, 10_000, 10);
                    let mut conflicts = 0u64;
                    for _ in 0..INCREMENTS {
                        let mut done = false;
                        for _attempt in 0..10_000 {
                            let record = ds.get("Counter", "c").unwrap();
                            let n = record.value["n"].as_u64().unwrap();
                            match ds.update("Counter", "c", json!({"n": n + 1}), record.version) {
                                Ok(_) => {
                                    done = true;
                                    break;
                                }
                                Err(DatastoreError::Conflict { .. }) => conflicts += 1,
                                Err(e) => panic!("{e}"),
                            }
                        }
                        assert!(done, "increment never succeeded");
                    }
                    conflicts
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    let record = first.get("Counter", "c").unwrap();
    assert_eq!(record.value["n"], json!(THREADS * INCREMENTS));
    assert_eq!(record.version, created + THREADS * INCREMENTS);
    eprintln!("conflicts retried: {conflicts}");
    // One Modified event per successful increment, consecutive revisions, values 1..=N.
    for i in 1..=THREADS * INCREMENTS {
        let event = next(&mut watch);
        assert_eq!(event.event_type, EventType::Modified);
        assert_eq!(event.revision(), created + i);
        assert_eq!(event.record.value["n"], json!(i));
    }
}

#[test]
fn watcher_on_one_instance_sees_writes_of_another() {
    let dir = tempfile::tempdir().unwrap();
    let a = instance(dir.path(), 100, 10);
    let b = instance(dir.path(), 100, 10);
    let mut watch = b.watch(None, WatchFrom::Now).unwrap();
    let v1 = a
        .create("BGPPeer", "tor", json!({"asNumber": 65000}))
        .unwrap();
    let v2 = a
        .update("BGPPeer", "tor", json!({"asNumber": 65001}), v1)
        .unwrap();
    let e1 = next(&mut watch);
    let e2 = next(&mut watch);
    assert_eq!((e1.revision(), e1.event_type), (v1, EventType::Added));
    assert_eq!((e2.revision(), e2.event_type), (v2, EventType::Modified));
    assert_eq!(e2.record.value, json!({"asNumber": 65001}));
    // B's CAS uses what A wrote.
    assert!(matches!(
        b.update("BGPPeer", "tor", json!({}), v1),
        Err(DatastoreError::Conflict { .. })
    ));
    b.update("BGPPeer", "tor", json!({"asNumber": 65002}), v2)
        .unwrap();
    assert_eq!(
        a.get("BGPPeer", "tor").unwrap().value,
        json!({"asNumber": 65002})
    );
}

#[test]
fn writes_leave_no_temp_files_and_list_ignores_leftover_ones() {
    let dir = tempfile::tempdir().unwrap();
    let ds = instance(dir.path(), 100, 10);
    let v = ds.create("Node", "n1", json!({"a": 1})).unwrap();
    ds.update("Node", "n1", json!({"a": 2}), v).unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path().join("Node"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["n1.json"]);
    // A writer that died mid-write leaves a partial hidden temp file: never a record.
    std::fs::write(
        dir.path().join("Node").join(".n2.json.tmp.999.0"),
        b"{\"kind\":",
    )
    .unwrap();
    let listing = ds.list("Node").unwrap();
    assert_eq!(listing.records.len(), 1);
    assert_eq!(listing.records[0].value, json!({"a": 2}));
    assert!(matches!(
        ds.get("Node", "n2"),
        Err(DatastoreError::NotFound { .. })
    ));
}

#[test]
fn corrupted_record_file_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let ds = instance(dir.path(), 100, 10);
    let v = ds.create("Node", "n1", json!({"a": 1})).unwrap();
    let path = ds.record_path("Node", "n1");
    std::fs::write(&path, b"{not json").unwrap();
    for err in [
        ds.get("Node", "n1").unwrap_err(),
        ds.list("Node").unwrap_err(),
        ds.update("Node", "n1", json!({}), v).unwrap_err(),
    ] {
        match &err {
            DatastoreError::Corrupt { path: p, .. } => assert_eq!(p, &path),
            other => panic!("expected Corrupt, got {other}"),
        }
        assert!(err.to_string().contains("n1.json"), "{err}");
    }
    // A record file holding another record is also corrupt, not silently accepted.
    let other = ds.create("Node", "n2", json!(2)).unwrap();
    assert!(other > v);
    std::fs::copy(ds.record_path("Node", "n2"), &path).unwrap();
    assert!(matches!(
        ds.get("Node", "n1"),
        Err(DatastoreError::Corrupt { .. })
    ));
    // A corrupt revision counter stops writes with a clear error.
    std::fs::write(dir.path().join(".revision"), b"many\n").unwrap();
    let err = ds.create("Node", "n3", json!(3)).unwrap_err();
    assert!(err.to_string().contains(".revision"), "{err}");
}

#[test]
fn event_log_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let capacity = 10;
    let ds = instance(dir.path(), capacity, 10);
    let mut version = ds.create("Node", "n", json!(0)).unwrap();
    for i in 1..200 {
        version = ds.update("Node", "n", json!(i), version).unwrap();
        let log = std::fs::read_to_string(dir.path().join(".events")).unwrap();
        assert!(
            log.lines().count() <= 2 * capacity,
            "log grew to {}",
            log.lines().count()
        );
    }
    // Reopening (a daemon restart) continues the same revision sequence.
    let reopened = instance(dir.path(), capacity, 10);
    assert_eq!(reopened.list("Node").unwrap().revision, version);
    assert_eq!(reopened.create("Node", "m", json!(0)).unwrap(), version + 1);
}

#[test]
fn watcher_falling_behind_compaction_is_told_to_relist() {
    let dir = tempfile::tempdir().unwrap();
    let writer = instance(dir.path(), 2, 10);
    // A slow watcher: its first poll comes after compactions (the first one at revision 5).
    let slow = instance(dir.path(), 2, 1000);
    let mut watch = slow.watch(None, WatchFrom::Revision(0)).unwrap();
    let mut version = writer.create("Node", "n", json!(0)).unwrap();
    for i in 1..20 {
        version = writer.update("Node", "n", json!(i), version).unwrap();
    }
    match watch.next_timeout(WAIT) {
        Err(DatastoreError::Expired { requested, .. }) => assert_eq!(requested, 0),
        other => panic!("expected Expired, got {other:?}"),
    }
    // Relist and resume from the list's revision: a later change arrives.
    let listing = slow.list("Node").unwrap();
    assert_eq!(listing.records[0].value, json!(19));
    let mut watch = slow
        .watch(None, WatchFrom::Revision(listing.revision))
        .unwrap();
    let v = writer.update("Node", "n", json!(20), version).unwrap();
    let event = next(&mut watch);
    assert_eq!(event.revision(), v);
}

const WORKER_DIR_ENV: &str = "ROUTERD_DATASTORE_WORKER_DIR";
const WORKER_INCREMENTS: u64 = 20;

/// `WORKER_INCREMENTS` compare-and-swap increments of `Counter/c` in `dir`, retrying on
/// conflict (bounded).
fn increment_counter(dir: &std::path::Path) {
    let ds = instance(dir, 10_000, 10);
    for _ in 0..WORKER_INCREMENTS {
        let mut done = false;
        for _attempt in 0..10_000 {
            let record = ds.get("Counter", "c").unwrap();
            let n = record.value["n"].as_u64().unwrap();
            match ds.update("Counter", "c", json!({"n": n + 1}), record.version) {
                Ok(_) => {
                    done = true;
                    break;
                }
                Err(DatastoreError::Conflict { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert!(done, "increment never succeeded");
    }
}

/// Run as a child process by `separate_processes_never_lose_an_update` (the directory comes
/// from the environment); run directly, it checks the increments alone on a fresh store.
#[test]
fn counter_increment_worker() {
    match std::env::var_os(WORKER_DIR_ENV) {
        Some(dir) => increment_counter(std::path::Path::new(&dir)),
        None => {
            let dir = tempfile::tempdir().unwrap();
            instance(dir.path(), 100, 10)
                .create("Counter", "c", json!({"n": 0}))
                .unwrap();
            increment_counter(dir.path());
            let record = instance(dir.path(), 100, 10).get("Counter", "c").unwrap();
            assert_eq!(record.value["n"], json!(WORKER_INCREMENTS));
        }
    }
}

/// Real separate processes (this test binary re-run as `counter_increment_worker`), as
/// several daemons on one host would be: the flock and the revision file are shared
/// through the filesystem only, and no increment is lost.
#[test]
fn separate_processes_never_lose_an_update() {
    const PROCESSES: u64 = 3;
    let dir = tempfile::tempdir().unwrap();
    let ds = instance(dir.path(), 10_000, 10);
    let created = ds.create("Counter", "c", json!({"n": 0})).unwrap();
    let mut watch = ds.watch(Some("Counter"), WatchFrom::Now).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(["counter_increment_worker", "--exact", "--test-threads=1"])
                .env(WORKER_DIR_ENV, dir.path())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for child in &mut children {
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("worker process did not finish in time");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "worker failed: {status}");
    }
    let record = ds.get("Counter", "c").unwrap();
    assert_eq!(record.value["n"], json!(PROCESSES * WORKER_INCREMENTS));
    assert_eq!(record.version, created + PROCESSES * WORKER_INCREMENTS);
    // This process's watcher saw every other process's change, in order.
    for i in 1..=PROCESSES * WORKER_INCREMENTS {
        let event = next(&mut watch);
        assert_eq!(event.revision(), created + i);
        assert_eq!(event.record.value["n"], json!(i));
    }
}

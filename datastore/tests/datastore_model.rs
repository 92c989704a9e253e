//! Model check: random sequences of writes give the same results (versions, error kinds,
//! final listings and event streams) on the file datastore as on the in-memory one.
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

use std::time::Duration;

use datastore::{
    Datastore, DatastoreError, FileDatastore, FileOptions, MemoryDatastore, Revision, WatchFrom,
};
use proptest::prelude::*;
use serde_json::json;

#[derive(Debug, Clone)]
enum Op {
    Create(usize, u8),
    /// Update with the stored version (`None`) or a guessed one.
    Update(usize, u8, Option<Revision>),
    Delete(usize, Option<Option<Revision>>),
}

const NAMES: [&str; 3] = ["a", "b", "c.d"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..NAMES.len(), any::<u8>()).prop_map(|(n, v)| Op::Create(n, v)),
        (0..NAMES.len(), any::<u8>(), proptest::option::of(0u64..40))
            .prop_map(|(n, v, e)| Op::Update(n, v, e)),
        (
            0..NAMES.len(),
            proptest::option::of(proptest::option::of(0u64..40))
        )
            .prop_map(|(n, e)| Op::Delete(n, e)),
    ]
}

/// The outcome of one operation, comparable across implementations.
fn outcome(result: Result<Revision, DatastoreError>) -> Result<Revision, &'static str> {
    result.map_err(|e| match e {
        DatastoreError::NotFound { .. } => "not found",
        DatastoreError::AlreadyExists { .. } => "already exists",
        DatastoreError::Conflict { .. } => "conflict",
        _ => "other",
    })
}

fn apply(ds: &dyn Datastore, op: &Op) -> Result<Revision, &'static str> {
    let current = |name| ds.get("Node", name).map(|r| r.version).unwrap_or(0);
    outcome(match *op {
        Op::Create(n, v) => ds.create("Node", NAMES[n], json!(v)),
        Op::Update(n, v, expected) => {
            let expected = expected.unwrap_or_else(|| current(NAMES[n]));
            ds.update("Node", NAMES[n], json!(v), expected)
        }
        Op::Delete(n, expected) => {
            let expected = expected.map(|e| e.unwrap_or_else(|| current(NAMES[n])));
            ds.delete("Node", NAMES[n], expected)
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn file_store_behaves_like_memory_store(ops in proptest::collection::vec(op(), 1..25)) {
        let dir = tempfile::tempdir().unwrap();
        let file = FileDatastore::open_with(
            dir.path(),
            FileOptions { event_log_capacity: 100, poll_interval: Duration::from_millis(5) },
        )
        .unwrap();
        let memory = MemoryDatastore::with_event_log_capacity(100);
        let mut memory_watch = memory.watch(None, WatchFrom::Now).unwrap();
        let mut file_watch = file.watch(None, WatchFrom::Now).unwrap();
        let mut changes = 0;
        for op in &ops {
            let expected = apply(&memory, op);
            prop_assert_eq!(apply(&file, op), expected, "op {:?}", op);
            changes += usize::from(expected.is_ok());
        }
        prop_assert_eq!(file.list("Node").unwrap(), memory.list("Node").unwrap());
        for _ in 0..changes {
            let m = memory_watch.next_timeout(Duration::from_secs(5)).unwrap().unwrap();
            let f = file_watch.next_timeout(Duration::from_secs(5)).unwrap().unwrap();
            prop_assert_eq!(f, m);
        }
    }
}

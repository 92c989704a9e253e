//! Lost compare-and-swap races: a store wrapper makes chosen writes fail exactly as a
//! concurrent writer would (it really changes the record first, then answers `Conflict`), and
//! the allocator must re-read, retry, and leave the records consistent.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use common::{no_labels, pool};
use ipam::{
    AffinityState, AllocationBlock, Allocator, AllocatorConfig, AssignRequest, BlockAffinity,
    IpFamily, IpamError, IpamStore, MemoryStore, Record, RecordKind, Revision, StoreError,
    Versioned,
};
use ipnet::IpNet;

/// Which writes to sabotage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    BlockUpdates,
    HandleWrites,
    /// Block creation: another node creates the same block first.
    BlockCreates,
}

#[derive(Debug)]
struct ConflictInjectingStore {
    inner: MemoryStore,
    target: Target,
    /// Writes still to sabotage.
    remaining: AtomicUsize,
    /// Conflicts actually injected.
    injected: AtomicUsize,
    /// Blocks another "node" grabbed (for BlockCreates).
    stolen: Mutex<Vec<IpNet>>,
}

impl ConflictInjectingStore {
    fn new(target: Target, conflicts: usize) -> Self {
        ConflictInjectingStore {
            inner: MemoryStore::new(),
            target,
            remaining: AtomicUsize::new(conflicts),
            injected: AtomicUsize::new(0),
            stolen: Mutex::new(Vec::new()),
        }
    }

    fn take(&self) -> bool {
        let took = self
            .remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if took {
            self.injected.fetch_add(1, Ordering::SeqCst);
        }
        took
    }

    /// A concurrent writer rewrites the current version (bumping its revision), so the
    /// caller's expected revision is now stale.
    fn interfere(&self, kind: RecordKind, name: &str) -> StoreError {
        if let Ok(Some(cur)) = self.inner.get(kind, name) {
            self.inner.update(cur.value, &cur.revision).unwrap();
        }
        StoreError::Conflict {
            kind,
            name: name.to_string(),
        }
    }
}

impl IpamStore for ConflictInjectingStore {
    fn get(&self, kind: RecordKind, name: &str) -> Result<Option<Versioned<Record>>, StoreError> {
        self.inner.get(kind, name)
    }
    fn list(&self, kind: RecordKind) -> Result<Vec<Versioned<Record>>, StoreError> {
        self.inner.list(kind)
    }
    fn create(&self, record: Record) -> Result<Revision, StoreError> {
        match (&record, self.target) {
            (Record::Block(b), Target::BlockCreates) if self.take() => {
                let theirs = AllocationBlock {
                    affinity: Some("host:other".into()),
                    ..b.clone()
                };
                self.stolen.lock().unwrap().push(b.cidr);
                self.inner.create(Record::Block(theirs)).unwrap();
                self.inner
                    .create(Record::Affinity(BlockAffinity {
                        node: "other".into(),
                        cidr: b.cidr,
                        state: AffinityState::Confirmed,
                    }))
                    .unwrap();
                self.inner.create(record)
            }
            (Record::Handle(h), Target::HandleWrites) if self.take() => {
                // Someone else created this handle meanwhile: make it exist with no count.
                let _ = self.inner.create(Record::Handle(ipam::IpamHandle {
                    handle_id: h.handle_id.clone(),
                    block: Default::default(),
                }));
                Err(StoreError::Conflict {
                    kind: RecordKind::Handle,
                    name: h.handle_id.clone(),
                })
            }
            _ => self.inner.create(record),
        }
    }
    fn update(&self, record: Record, expected: &Revision) -> Result<Revision, StoreError> {
        let hit = match (&record, self.target) {
            (Record::Block(_), Target::BlockUpdates)
            | (Record::Handle(_), Target::HandleWrites) => self.take(),
            _ => false,
        };
        if hit {
            return Err(self.interfere(record.kind(), &record.name()));
        }
        self.inner.update(record, expected)
    }
    fn delete(&self, kind: RecordKind, name: &str, expected: &Revision) -> Result<(), StoreError> {
        let hit = match (kind, self.target) {
            (RecordKind::Block, Target::BlockUpdates)
            | (RecordKind::Handle, Target::HandleWrites) => self.take(),
            _ => false,
        };
        if hit {
            return Err(self.interfere(kind, name));
        }
        self.inner.delete(kind, name, expected)
    }
}

fn req(handle: &str, node: &str) -> AssignRequest {
    AssignRequest::pod(handle, node, IpFamily::V4, "ns", handle)
}

fn allocator(target: Target, conflicts: usize) -> Allocator<ConflictInjectingStore> {
    Allocator::new(
        ConflictInjectingStore::new(target, conflicts),
        AllocatorConfig {
            strict_affinity: false,
            max_conflict_retries: 5,
        },
    )
}

#[test]
fn assign_retries_lost_block_updates() {
    let a = allocator(Target::BlockUpdates, 0);
    let pools = [pool("p", "10.0.0.0/24", 29)];
    a.assign(&pools, &no_labels(), &req("c0", "n1")).unwrap();
    // The next three block writes lose their race.
    a.store().remaining.store(3, Ordering::SeqCst);
    let got = a.assign(&pools, &no_labels(), &req("c1", "n1")).unwrap();
    assert_eq!(a.store().injected.load(Ordering::SeqCst), 3);
    assert_eq!(got.address.to_string(), "10.0.0.1");
    assert_eq!(a.addresses("c1").unwrap(), vec![got.address]);
    // Every undone handle increment was undone: the books balance.
    assert!(a.check().unwrap().is_clean(), "{:?}", a.check().unwrap());
}

#[test]
fn assign_gives_up_after_the_retry_bound_without_leaking() {
    let a = allocator(Target::BlockUpdates, 0);
    let pools = [pool("p", "10.0.0.0/24", 29)];
    a.assign(&pools, &no_labels(), &req("c0", "n1")).unwrap();
    a.store().remaining.store(100, Ordering::SeqCst);
    let err = a
        .assign(&pools, &no_labels(), &req("c1", "n1"))
        .unwrap_err();
    assert!(
        matches!(err, IpamError::TooManyConflicts { attempts: 6, .. }),
        "{err}"
    );
    assert_eq!(a.store().injected.load(Ordering::SeqCst), 6);
    a.store().remaining.store(0, Ordering::SeqCst);
    assert!(a.addresses("c1").unwrap().is_empty());
    assert!(a.store().get(RecordKind::Handle, "c1").unwrap().is_none());
    assert!(a.check().unwrap().is_clean());
}

#[test]
fn assign_and_release_retry_lost_handle_writes() {
    let a = allocator(Target::HandleWrites, 2);
    let pools = [pool("p", "10.0.0.0/24", 29)];
    let got = a.assign(&pools, &no_labels(), &req("c0", "n1")).unwrap();
    assert_eq!(a.store().injected.load(Ordering::SeqCst), 2);
    assert_eq!(a.addresses("c0").unwrap(), vec![got.address]);
    assert!(a.check().unwrap().is_clean());
    a.store().remaining.store(2, Ordering::SeqCst);
    assert_eq!(a.release("c0").unwrap(), vec![got.address]);
    assert_eq!(a.store().injected.load(Ordering::SeqCst), 4);
    assert!(a.store().get(RecordKind::Handle, "c0").unwrap().is_none());
    assert!(a.check().unwrap().is_clean());
}

#[test]
fn release_retries_lost_block_writes() {
    let a = allocator(Target::BlockUpdates, 0);
    let pools = [pool("p", "10.0.0.0/24", 29)];
    let got = a.assign(&pools, &no_labels(), &req("c0", "n1")).unwrap();
    a.store().remaining.store(4, Ordering::SeqCst);
    assert_eq!(a.release("c0").unwrap(), vec![got.address]);
    assert_eq!(a.store().injected.load(Ordering::SeqCst), 4);
    a.store().remaining.store(2, Ordering::SeqCst);
    let other = a.assign(&pools, &no_labels(), &req("c1", "n1")).unwrap();
    a.store().remaining.store(2, Ordering::SeqCst);
    assert!(a.release_ip(other.address).unwrap().is_some());
    assert!(a.check().unwrap().is_clean());
}

#[test]
fn losing_a_block_claim_moves_on_to_the_next_free_block() {
    let a = allocator(Target::BlockCreates, 2);
    let pools = [pool("p", "10.0.0.0/24", 29)];
    let got = a.assign(&pools, &no_labels(), &req("c0", "n1")).unwrap();
    let stolen = a.store().stolen.lock().unwrap().clone();
    assert_eq!(
        stolen,
        vec![
            "10.0.0.0/29".parse::<IpNet>().unwrap(),
            "10.0.0.8/29".parse().unwrap()
        ]
    );
    assert_eq!(got.block.to_string(), "10.0.0.16/29");
    assert!(!got.borrowed);
    assert_eq!(a.affine_blocks("n1").unwrap(), vec![got.block]);
    assert_eq!(a.affine_blocks("other").unwrap(), stolen);
    // The losing claims left no pending affinity behind.
    let affinities = a.store().inner.list(RecordKind::Affinity).unwrap();
    assert_eq!(affinities.len(), 3);
    for v in affinities {
        let Record::Affinity(aff) = v.value else {
            panic!()
        };
        assert_eq!(aff.state, AffinityState::Confirmed);
    }
    assert!(a.check().unwrap().is_clean());
}

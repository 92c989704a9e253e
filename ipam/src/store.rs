//! The datastore boundary: a small compare-and-swap record store.
//!
//! Every IPAM decision is made by reading records, computing a new version and writing it back
//! *only if nobody changed it meanwhile* (the Kubernetes `resourceVersion` / etcd mod-revision
//! pattern Calico relies on). Two nodes racing for the same block, or for the last address of a
//! block, both write against the revision they read; the datastore accepts one and answers
//! [`StoreError::Conflict`] to the other, which re-reads and tries again. Uniqueness of addresses
//! therefore rests on this one primitive, and the agent's datastores (a file directory, Kubernetes
//! CRDs) only have to implement these five operations faithfully. Two listing shortcuts
//! ([`IpamStore::list_block_cidrs`], [`IpamStore::list_node_affinities`]) have default
//! implementations on top of `list`; a store overrides them when it can answer more cheaply.
//!
//! [`MemoryStore`] is a thread-safe in-memory implementation for tests and simulations.

use std::collections::{BTreeMap, HashMap};

use ipnet::IpNet;
use std::fmt;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::block::{AllocationBlock, BlockAffinity, IpamHandle};

/// Which kind of record (one collection / CRD per kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RecordKind {
    /// [`AllocationBlock`] records, named by [`crate::cidr_record_name`].
    Block,
    /// [`BlockAffinity`] records, named `<node>-<block name>`.
    Affinity,
    /// [`IpamHandle`] records, named by handle id.
    Handle,
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordKind::Block => "ipamblocks",
            RecordKind::Affinity => "blockaffinities",
            RecordKind::Handle => "ipamhandles",
        })
    }
}

/// One stored record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "spec")]
pub enum Record {
    /// An address block.
    Block(AllocationBlock),
    /// A node's claim on a block.
    Affinity(BlockAffinity),
    /// A handle's address index.
    Handle(IpamHandle),
}

impl Record {
    /// The record's kind.
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Block(_) => RecordKind::Block,
            Record::Affinity(_) => RecordKind::Affinity,
            Record::Handle(_) => RecordKind::Handle,
        }
    }

    /// The record's name within its kind.
    pub fn name(&self) -> String {
        match self {
            Record::Block(b) => b.name(),
            Record::Affinity(a) => a.name(),
            Record::Handle(h) => h.handle_id.clone(),
        }
    }
}

/// Opaque version of a stored record (a Kubernetes `resourceVersion`, a file generation…).
/// Only compared for equality.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Revision(pub String);

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A record with the revision it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// Revision to pass to `update` / `delete`.
    pub revision: Revision,
    /// The record.
    pub value: T,
}

/// Datastore failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The record changed (or was created/deleted) since it was read: re-read and retry.
    #[error("conflict on {kind}/{name}: changed since read")]
    Conflict {
        /// Record kind.
        kind: RecordKind,
        /// Record name.
        name: String,
    },
    /// Update or delete of a record that does not exist.
    #[error("{kind}/{name} not found")]
    NotFound {
        /// Record kind.
        kind: RecordKind,
        /// Record name.
        name: String,
    },
    /// Any other datastore failure (I/O, API server unavailable, undecodable record).
    #[error("datastore: {0}")]
    Backend(String),
}

/// The operations the allocator needs from a datastore. Implementations must make `create`,
/// `update` and `delete` atomic with respect to each other for the same record.
pub trait IpamStore: Send + Sync {
    /// Reads one record.
    fn get(&self, kind: RecordKind, name: &str) -> Result<Option<Versioned<Record>>, StoreError>;
    /// Reads every record of a kind.
    fn list(&self, kind: RecordKind) -> Result<Vec<Versioned<Record>>, StoreError>;
    /// Creates a record; [`StoreError::Conflict`] if one with the same kind and name exists.
    fn create(&self, record: Record) -> Result<Revision, StoreError>;
    /// Replaces a record if its current revision is `expected`; [`StoreError::Conflict`]
    /// otherwise, [`StoreError::NotFound`] if it is gone.
    fn update(&self, record: Record, expected: &Revision) -> Result<Revision, StoreError>;
    /// Deletes a record if its current revision is `expected`; [`StoreError::Conflict`]
    /// otherwise, [`StoreError::NotFound`] if it is gone.
    fn delete(&self, kind: RecordKind, name: &str, expected: &Revision) -> Result<(), StoreError>;

    /// The prefixes of all stored blocks: what a claimer needs to find a free block. The
    /// default reads every block; a store that can answer without decoding whole blocks
    /// (from record names or an index) should override it, as claims call it often.
    fn list_block_cidrs(&self) -> Result<Vec<IpNet>, StoreError> {
        Ok(self
            .list(RecordKind::Block)?
            .into_iter()
            .filter_map(|v| match v.value {
                Record::Block(b) => Some(b.cidr),
                _ => None,
            })
            .collect())
    }

    /// The affinity records of one node (Calico lists them with a label selector on the
    /// host). The default reads every affinity; stores with an index should override it.
    fn list_node_affinities(&self, node: &str) -> Result<Vec<Versioned<Record>>, StoreError> {
        Ok(self
            .list(RecordKind::Affinity)?
            .into_iter()
            .filter(|v| matches!(&v.value, Record::Affinity(a) if a.node == node))
            .collect())
    }
}

impl<S: IpamStore + ?Sized> IpamStore for &S {
    fn get(&self, kind: RecordKind, name: &str) -> Result<Option<Versioned<Record>>, StoreError> {
        (**self).get(kind, name)
    }
    fn list(&self, kind: RecordKind) -> Result<Vec<Versioned<Record>>, StoreError> {
        (**self).list(kind)
    }
    fn create(&self, record: Record) -> Result<Revision, StoreError> {
        (**self).create(record)
    }
    fn update(&self, record: Record, expected: &Revision) -> Result<Revision, StoreError> {
        (**self).update(record, expected)
    }
    fn delete(&self, kind: RecordKind, name: &str, expected: &Revision) -> Result<(), StoreError> {
        (**self).delete(kind, name, expected)
    }
    fn list_block_cidrs(&self) -> Result<Vec<IpNet>, StoreError> {
        (**self).list_block_cidrs()
    }
    fn list_node_affinities(&self, node: &str) -> Result<Vec<Versioned<Record>>, StoreError> {
        (**self).list_node_affinities(node)
    }
}

impl<S: IpamStore + ?Sized> IpamStore for std::sync::Arc<S> {
    fn get(&self, kind: RecordKind, name: &str) -> Result<Option<Versioned<Record>>, StoreError> {
        (**self).get(kind, name)
    }
    fn list(&self, kind: RecordKind) -> Result<Vec<Versioned<Record>>, StoreError> {
        (**self).list(kind)
    }
    fn create(&self, record: Record) -> Result<Revision, StoreError> {
        (**self).create(record)
    }
    fn update(&self, record: Record, expected: &Revision) -> Result<Revision, StoreError> {
        (**self).update(record, expected)
    }
    fn delete(&self, kind: RecordKind, name: &str, expected: &Revision) -> Result<(), StoreError> {
        (**self).delete(kind, name, expected)
    }
    fn list_block_cidrs(&self) -> Result<Vec<IpNet>, StoreError> {
        (**self).list_block_cidrs()
    }
    fn list_node_affinities(&self, node: &str) -> Result<Vec<Versioned<Record>>, StoreError> {
        (**self).list_node_affinities(node)
    }
}

#[derive(Debug, Default)]
struct MemoryState {
    next_revision: u64,
    /// One map per kind, ordered by name (a listing is then a plain in-order walk).
    records: HashMap<RecordKind, BTreeMap<String, (u64, Record)>>,
}

/// In-memory [`IpamStore`]: one mutex around per-kind maps, revisions from a global counter
/// (like etcd's). Cheap enough to simulate a thousand-node cluster in one process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<MemoryState>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A panic in another thread while holding the lock cannot leave a half-written record
        // (every mutation is a single map operation), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of stored records of a kind.
    pub fn count(&self, kind: RecordKind) -> usize {
        self.lock().records.get(&kind).map_or(0, BTreeMap::len)
    }
}

fn parse_revision(r: &Revision) -> Option<u64> {
    r.0.parse().ok()
}

fn versioned(rev: u64, rec: &Record) -> Versioned<Record> {
    Versioned {
        revision: Revision(rev.to_string()),
        value: rec.clone(),
    }
}

impl IpamStore for MemoryStore {
    fn get(&self, kind: RecordKind, name: &str) -> Result<Option<Versioned<Record>>, StoreError> {
        let s = self.lock();
        Ok(s.records
            .get(&kind)
            .and_then(|m| m.get(name))
            .map(|(rev, rec)| versioned(*rev, rec)))
    }

    fn list(&self, kind: RecordKind) -> Result<Vec<Versioned<Record>>, StoreError> {
        let s = self.lock();
        Ok(s.records.get(&kind).map_or_else(Vec::new, |m| {
            m.values().map(|(rev, rec)| versioned(*rev, rec)).collect()
        }))
    }

    fn list_block_cidrs(&self) -> Result<Vec<IpNet>, StoreError> {
        let s = self.lock();
        Ok(s.records
            .get(&RecordKind::Block)
            .map_or_else(Vec::new, |m| {
                m.values()
                    .filter_map(|(_, rec)| match rec {
                        Record::Block(b) => Some(b.cidr),
                        _ => None,
                    })
                    .collect()
            }))
    }

    fn list_node_affinities(&self, node: &str) -> Result<Vec<Versioned<Record>>, StoreError> {
        // Records are named `<node>-<block>`: scan that name prefix, then drop other nodes
        // whose name merely starts with `<node>-`.
        let s = self.lock();
        let prefix = format!("{node}-");
        Ok(s.records
            .get(&RecordKind::Affinity)
            .map_or_else(Vec::new, |m| {
                m.range(prefix.clone()..)
                    .take_while(|(name, _)| name.starts_with(&prefix))
                    .filter(|(_, (_, rec))| matches!(rec, Record::Affinity(a) if a.node == node))
                    .map(|(_, (rev, rec))| versioned(*rev, rec))
                    .collect()
            }))
    }

    fn create(&self, record: Record) -> Result<Revision, StoreError> {
        let mut s = self.lock();
        let (kind, name) = (record.kind(), record.name());
        s.next_revision += 1;
        let rev = s.next_revision;
        let map = s.records.entry(kind).or_default();
        if map.contains_key(&name) {
            return Err(StoreError::Conflict { kind, name });
        }
        map.insert(name, (rev, record));
        Ok(Revision(rev.to_string()))
    }

    fn update(&self, record: Record, expected: &Revision) -> Result<Revision, StoreError> {
        let mut s = self.lock();
        let (kind, name) = (record.kind(), record.name());
        s.next_revision += 1;
        let rev = s.next_revision;
        match s.records.entry(kind).or_default().get_mut(&name) {
            None => Err(StoreError::NotFound { kind, name }),
            Some((cur, _)) if Some(*cur) != parse_revision(expected) => {
                Err(StoreError::Conflict { kind, name })
            }
            Some(slot) => {
                *slot = (rev, record);
                Ok(Revision(rev.to_string()))
            }
        }
    }

    fn delete(&self, kind: RecordKind, name: &str, expected: &Revision) -> Result<(), StoreError> {
        let mut s = self.lock();
        let map = s.records.entry(kind).or_default();
        let name = name.to_string();
        match map.get(&name) {
            None => Err(StoreError::NotFound { kind, name }),
            Some((cur, _)) if Some(*cur) != parse_revision(expected) => {
                Err(StoreError::Conflict { kind, name })
            }
            Some(_) => {
                map.remove(&name);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn handle(id: &str, n: u32) -> Record {
        Record::Handle(IpamHandle {
            handle_id: id.into(),
            block: BTreeMap::from([("10.0.0.0/26".to_string(), n)]),
        })
    }

    #[test]
    fn compare_and_swap_semantics() {
        let s = MemoryStore::new();
        let r1 = s.create(handle("h", 1)).unwrap();
        assert!(matches!(
            s.create(handle("h", 2)),
            Err(StoreError::Conflict { .. })
        ));
        let r2 = s.update(handle("h", 2), &r1).unwrap();
        assert!(matches!(
            s.update(handle("h", 3), &r1),
            Err(StoreError::Conflict { .. })
        ));
        assert_eq!(
            s.get(RecordKind::Handle, "h").unwrap().unwrap().value,
            handle("h", 2)
        );
        assert!(matches!(
            s.delete(RecordKind::Handle, "h", &r1),
            Err(StoreError::Conflict { .. })
        ));
        s.delete(RecordKind::Handle, "h", &r2).unwrap();
        assert!(matches!(
            s.delete(RecordKind::Handle, "h", &r2),
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            s.update(handle("h", 1), &r2),
            Err(StoreError::NotFound { .. })
        ));
        assert!(s.get(RecordKind::Handle, "h").unwrap().is_none());
    }

    #[test]
    fn node_affinities_do_not_include_nodes_with_a_longer_name() {
        let s = MemoryStore::new();
        for node in ["n1", "n1-x", "n10", "n"] {
            s.create(Record::Affinity(BlockAffinity {
                node: node.into(),
                cidr: "10.0.0.0/26".parse().unwrap(),
                state: crate::block::AffinityState::Confirmed,
            }))
            .unwrap();
        }
        let got = s.list_node_affinities("n1").unwrap();
        assert_eq!(got.len(), 1);
        assert!(matches!(&got[0].value, Record::Affinity(a) if a.node == "n1"));
    }

    #[test]
    fn list_is_per_kind_and_sorted() {
        let s = MemoryStore::new();
        s.create(handle("b", 1)).unwrap();
        s.create(handle("a", 1)).unwrap();
        let names: Vec<String> = s
            .list(RecordKind::Handle)
            .unwrap()
            .into_iter()
            .map(|v| v.value.name())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert!(s.list(RecordKind::Block).unwrap().is_empty());
        assert_eq!(s.count(RecordKind::Handle), 2);
    }
}

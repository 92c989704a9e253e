//! In-memory datastore: the same contract as the file store, for tests and simulations.
//!
//! One mutex guards records, the bounded event log and the watcher list, so replaying past
//! events and subscribing to future ones happen atomically (no gap, no duplicate).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::mpsc;

use super::{
    check_resumable, validate_name, Datastore, DatastoreError, Event, EventType, Listing, Record,
    Result, Revision, Watch, WatchFrom, DEFAULT_EVENT_LOG_CAPACITY,
};

struct Watcher {
    kind: Option<String>,
    tx: mpsc::UnboundedSender<Result<Event>>,
}

struct State {
    revision: Revision,
    records: BTreeMap<(String, String), Record>,
    log: VecDeque<Event>,
    watchers: Vec<Watcher>,
}

/// A datastore held in process memory.
pub struct MemoryDatastore {
    capacity: usize,
    state: Mutex<State>,
}

impl std::fmt::Debug for MemoryDatastore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryDatastore")
            .field("capacity", &self.capacity)
            .field("revision", &self.lock().revision)
            .finish()
    }
}

impl Default for MemoryDatastore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryDatastore {
    pub fn new() -> Self {
        Self::with_event_log_capacity(DEFAULT_EVENT_LOG_CAPACITY)
    }

    /// Keeps the last `capacity` events (at least one) for watches to resume from.
    pub fn with_event_log_capacity(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            state: Mutex::new(State {
                revision: 0,
                records: BTreeMap::new(),
                log: VecDeque::new(),
                watchers: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters more than losing the whole store, so keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn commit(&self, state: &mut State, event_type: EventType, record: Record) -> Revision {
        let revision = record.version;
        state.revision = revision;
        let event = Event { event_type, record };
        state.watchers.retain(|w| {
            if w.kind.as_deref().is_some_and(|k| k != event.record.kind) {
                return !w.tx.is_closed();
            }
            w.tx.send(Ok(event.clone())).is_ok()
        });
        state.log.push_back(event);
        while state.log.len() > self.capacity {
            state.log.pop_front();
        }
        revision
    }
}

impl Datastore for MemoryDatastore {
    fn list(&self, kind: &str) -> Result<Listing> {
        validate_name("kind", kind)?;
        let state = self.lock();
        let records = state
            .records
            .values()
            .filter(|r| r.kind == kind)
            .cloned()
            .collect();
        Ok(Listing {
            revision: state.revision,
            records,
        })
    }

    fn get(&self, kind: &str, name: &str) -> Result<Record> {
        validate_name("kind", kind)?;
        validate_name("name", name)?;
        self.lock()
            .records
            .get(&(kind.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| DatastoreError::NotFound {
                kind: kind.to_string(),
                name: name.to_string(),
            })
    }

    fn create(&self, kind: &str, name: &str, value: serde_json::Value) -> Result<Revision> {
        validate_name("kind", kind)?;
        validate_name("name", name)?;
        let mut state = self.lock();
        let key = (kind.to_string(), name.to_string());
        if state.records.contains_key(&key) {
            return Err(DatastoreError::AlreadyExists {
                kind: key.0,
                name: key.1,
            });
        }
        let record = Record {
            kind: key.0.clone(),
            name: key.1.clone(),
            version: state.revision + 1,
            value,
        };
        state.records.insert(key, record.clone());
        Ok(self.commit(&mut state, EventType::Added, record))
    }

    fn update(
        &self,
        kind: &str,
        name: &str,
        value: serde_json::Value,
        expected: Revision,
    ) -> Result<Revision> {
        validate_name("kind", kind)?;
        validate_name("name", name)?;
        let mut state = self.lock();
        let key = (kind.to_string(), name.to_string());
        let version = state.revision + 1;
        let Some(stored) = state.records.get_mut(&key) else {
            return Err(DatastoreError::NotFound {
                kind: key.0,
                name: key.1,
            });
        };
        if stored.version != expected {
            return Err(DatastoreError::Conflict {
                kind: key.0,
                name: key.1,
                expected,
                actual: stored.version,
            });
        }
        stored.version = version;
        stored.value = value;
        let record = stored.clone();
        Ok(self.commit(&mut state, EventType::Modified, record))
    }

    fn delete(&self, kind: &str, name: &str, expected: Option<Revision>) -> Result<Revision> {
        validate_name("kind", kind)?;
        validate_name("name", name)?;
        let mut state = self.lock();
        let key = (kind.to_string(), name.to_string());
        let Some(stored) = state.records.get(&key) else {
            return Err(DatastoreError::NotFound {
                kind: key.0,
                name: key.1,
            });
        };
        if let Some(expected) = expected {
            if stored.version != expected {
                return Err(DatastoreError::Conflict {
                    kind: key.0,
                    name: key.1,
                    expected,
                    actual: stored.version,
                });
            }
        }
        let mut record = state.records.remove(&key).ok_or(DatastoreError::NotFound {
            kind: key.0,
            name: key.1,
        })?;
        record.version = state.revision + 1;
        Ok(self.commit(&mut state, EventType::Deleted, record))
    }

    fn watch(&self, kind: Option<&str>, from: WatchFrom) -> Result<Watch> {
        if let Some(kind) = kind {
            validate_name("kind", kind)?;
        }
        let mut state = self.lock();
        let (tx, rx) = mpsc::unbounded_channel();
        if let WatchFrom::Revision(from) = from {
            check_resumable(from, state.log.front().map(Event::revision))?;
            for event in state
                .log
                .iter()
                .filter(|e| e.revision() > from && kind.is_none_or(|k| k == e.record.kind))
            {
                // The receiver is still held by us, so this cannot fail.
                let _ = tx.send(Ok(event.clone()));
            }
        }
        state.watchers.push(Watcher {
            kind: kind.map(str::to_string),
            tx,
        });
        Ok(Watch::new(rx))
    }
}

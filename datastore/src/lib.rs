//! The cluster's shared state: the resources operators write and the stores that hold them.
//!
//! This crate is what `routerd`, `routectl` and the CNI plugins all read and write, and it
//! links no BGP speaker, FIB or overlay code, so that a plugin binary stays small and a new
//! backend is added without touching the daemon.
//!
//! - [`resource`]: the Calico v3 kinds (Node, BGPConfiguration, BGPPeer, IPPool, BGPFilter,
//!   WorkloadEndpoint), with validation that names the field.
//! - [`Datastore`]: one trait over where records live, with the backends below.
//! - [`ipam_store`]: IPAM records (blocks, affinities, handles) kept in a datastore.
//! - [`services`]: Kubernetes Services and EndpointSlices as service advertisement reads
//!   them (read from the API server, never stored by routerd).
//!
//! # Datastores: where resources live, behind one trait
//!
//! The datastore is deliberately generic: it stores opaque [`Record`]s identified by
//! `(kind, name)` with a JSON value, so it does not depend on the resource types (which
//! convert to and from `serde_json::Value` on their side).
//!
//! The model follows the Kubernetes API server, which is what Calico's own datastore
//! drivers rely on:
//!
//! - every change bumps one global, monotonically increasing **revision**; a record's
//!   `version` is the revision of its last change (like `metadata.resourceVersion`);
//! - writes are compare-and-swap on that version ([`Datastore::update`],
//!   [`Datastore::delete`]), so two writers never silently overwrite each other;
//! - [`Datastore::list`] returns the records *and* the revision they were read at, and
//!   [`Datastore::watch`] resumes from a revision, so "list then watch from the list's
//!   revision" misses nothing;
//! - only a bounded window of past events is kept; a watch asking for a revision older than
//!   that window gets [`DatastoreError::Expired`] (Kubernetes' `410 Gone`) and must relist.
//!
//! Implementations: [`FileDatastore`] (an embedded directory shared by several daemons on
//! one host), [`MemoryDatastore`] (tests, simulations) and, with the `kubernetes` feature,
//! `KubeDatastore` (custom resources of group `routerd.io` in a Kubernetes API server; see
//! the `kube` module) and, with the `etcd` feature, `EtcdDatastore` (keys of an etcd v3
//! cluster; see the `etcd` module). The trait is synchronous because
//! the file backend does small local blocking I/O; async callers use
//! `tokio::task::spawn_blocking` for writes and [`Watch::next`] (async) for events.

pub mod ipam_store;
pub mod resource;
pub mod services;

#[cfg(any(feature = "kubernetes", feature = "etcd"))]
mod client_runtime;
mod etcd;
mod file;
mod kube;
mod memory;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[cfg(feature = "etcd")]
pub use self::etcd::EtcdDatastore;
pub use self::etcd::{EtcdError, EtcdOptions, EtcdTls, ETCD_DEFAULT_PREFIX};
pub use self::kube::KubeError;
#[cfg(feature = "kubernetes")]
pub use self::kube::{calico_crd_yaml, calico_crds};
#[cfg(feature = "kubernetes")]
pub use self::kube::{
    crd_yaml, crds, kind_resource, KubeConfigSource, KubeDatastore, KubeOptions,
    PodEndpointsReceiver, ServicesReceiver, CRD_GROUP, CRD_VERSION, WATCHED_KINDS,
};
pub use file::{FileDatastore, FileOptions};
pub use memory::MemoryDatastore;

/// Default directory of the embedded datastore (`file:/var/lib/routerd`).
pub const DEFAULT_DIR: &str = "/var/lib/routerd";

/// Default number of past events kept for watches to resume from.
pub const DEFAULT_EVENT_LOG_CAPACITY: usize = 1000;

/// A global revision of the datastore; also the version of a record.
pub type Revision = u64;

/// One stored object: an opaque JSON value under `(kind, name)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub kind: String,
    pub name: String,
    /// Revision of the last change of this record (its resource version).
    pub version: Revision,
    pub value: serde_json::Value,
}

/// What a list returns: the records of a kind and the revision they were read at, from
/// which a watch can resume without gap.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    pub revision: Revision,
    pub records: Vec<Record>,
}

/// The kind of change an [`Event`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change. `record.version` is the revision of the change; for `Deleted`,
/// `record.value` is the last value before deletion.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_type: EventType,
    pub record: Record,
}

impl Event {
    pub fn revision(&self) -> Revision {
        self.record.version
    }
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFrom {
    /// Only changes made after the watch is established.
    Now,
    /// Every change with a revision strictly greater than this one (a list's revision, or
    /// the last revision a previous watch delivered).
    Revision(Revision),
}

/// Errors of the datastores, naming the kind/name or file concerned.
#[derive(Debug, thiserror::Error)]
pub enum DatastoreError {
    #[error("{kind} {name:?} not found")]
    NotFound { kind: String, name: String },
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: String, name: String },
    #[error(
        "{kind} {name:?}: version conflict, expected {expected} but stored version is {actual}"
    )]
    Conflict {
        kind: String,
        name: String,
        expected: Revision,
        actual: Revision,
    },
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    /// The requested revision is older than the retained events: relist, then watch from
    /// the list's revision (Kubernetes `410 Gone`).
    #[error(
        "watch from revision {requested} expired (oldest resumable revision is {oldest}); relist"
    )]
    Expired {
        requested: Revision,
        oldest: Revision,
    },
    #[error("corrupt datastore file {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot lock {path}: {errno}")]
    Lock { path: PathBuf, errno: nix::Error },
    #[error("cannot encode {kind} {name:?}: {source}")]
    Encode {
        kind: String,
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "invalid datastore address {0:?}: expected file:<dir>, memory:, kubernetes:, \
         kubernetes:<kubeconfig path>, etcd: or etcd:<endpoint>[,<endpoint>...]"
    )]
    InvalidAddress(String),
    /// The Kubernetes datastore failed in a way none of the variants above describes
    /// (API server unreachable, CRD not installed, a non-numeric resourceVersion, …).
    #[error("kubernetes datastore: {0}")]
    Kubernetes(#[from] KubeError),
    /// The etcd datastore failed in a way none of the variants above describes (cluster
    /// unreachable, bad certificates, a prefix holding foreign data, …).
    #[error("etcd datastore: {0}")]
    Etcd(#[from] EtcdError),
}

pub type Result<T, E = DatastoreError> = std::result::Result<T, E>;

/// Where resources live: CRUD with compare-and-swap on versions, plus watches.
pub trait Datastore: Send + Sync {
    /// All records of `kind`, sorted by name, with the revision they were read at.
    fn list(&self, kind: &str) -> Result<Listing>;
    /// One record; [`DatastoreError::NotFound`] if absent.
    fn get(&self, kind: &str, name: &str) -> Result<Record>;
    /// Creates a record; [`DatastoreError::AlreadyExists`] if present. Returns its version.
    fn create(&self, kind: &str, name: &str, value: serde_json::Value) -> Result<Revision>;
    /// Replaces a record if its stored version is `expected`
    /// ([`DatastoreError::Conflict`] otherwise). Returns the new version.
    fn update(
        &self,
        kind: &str,
        name: &str,
        value: serde_json::Value,
        expected: Revision,
    ) -> Result<Revision>;
    /// Deletes a record, checking its version when `expected` is given. Returns the
    /// revision of the deletion.
    fn delete(&self, kind: &str, name: &str, expected: Option<Revision>) -> Result<Revision>;
    /// Changes of `kind` (or of every kind when `None`) in revision order, one event per
    /// change. Fails with [`DatastoreError::Expired`] if `from` is older than the retained
    /// events; the same error may later arrive on the watch if it falls behind.
    fn watch(&self, kind: Option<&str>, from: WatchFrom) -> Result<Watch>;
}

/// Opens a datastore from its address: `file:<dir>`, `memory:`, `kubernetes:` (`$KUBECONFIG`
/// or `~/.kube/config`, else the in-cluster service account), `kubernetes:<kubeconfig>`,
/// or `etcd:<endpoints>` (`etcd:` alone reads `ETCD_ENDPOINTS`; see [`EtcdOptions`]).
pub fn open(address: &str) -> Result<Arc<dyn Datastore>> {
    if let Some(dir) = address.strip_prefix("file:") {
        let dir = if dir.is_empty() { DEFAULT_DIR } else { dir };
        Ok(Arc::new(FileDatastore::open(dir)?))
    } else if address == "memory:" {
        Ok(Arc::new(MemoryDatastore::new()))
    } else if address.starts_with("kubernetes:") {
        open_kubernetes(address)
    } else if let Some(options) = EtcdOptions::from_address(address) {
        open_etcd(options?)
    } else {
        Err(DatastoreError::InvalidAddress(address.to_string()))
    }
}

/// The address Calico's `DATASTORE_TYPE` names, for operators who set it as they did for
/// calico-node: `etcdv3` is `etcd:` (the endpoints in `ETCD_ENDPOINTS`), `kubernetes` is
/// `kubernetes:`. An explicit address (`--datastore`, `ROUTERD_DATASTORE`) wins over it.
pub fn address_of_datastore_type(datastore_type: &str) -> std::result::Result<String, String> {
    match datastore_type.trim() {
        "etcdv3" => Ok("etcd:".into()),
        "kubernetes" => Ok("kubernetes:".into()),
        other => Err(format!(
            "`{other}` is not a datastore type (etcdv3, kubernetes)"
        )),
    }
}

#[cfg(feature = "kubernetes")]
fn open_kubernetes(address: &str) -> Result<Arc<dyn Datastore>> {
    let source = KubeConfigSource::from_address(address)
        .ok_or_else(|| DatastoreError::InvalidAddress(address.to_string()))?;
    Ok(Arc::new(KubeDatastore::connect(
        source,
        KubeOptions::default(),
    )?))
}

#[cfg(not(feature = "kubernetes"))]
fn open_kubernetes(_address: &str) -> Result<Arc<dyn Datastore>> {
    Err(KubeError::NotBuilt.into())
}

#[cfg(feature = "etcd")]
fn open_etcd(options: EtcdOptions) -> Result<Arc<dyn Datastore>> {
    Ok(Arc::new(EtcdDatastore::connect(options)?))
}

#[cfg(not(feature = "etcd"))]
fn open_etcd(_options: EtcdOptions) -> Result<Arc<dyn Datastore>> {
    Err(EtcdError::NotBuilt.into())
}

/// A stream of events. Dropping it stops the watch.
#[derive(Debug)]
pub struct Watch {
    rx: mpsc::UnboundedReceiver<Result<Event>>,
}

impl Watch {
    fn new(rx: mpsc::UnboundedReceiver<Result<Event>>) -> Self {
        Self { rx }
    }

    /// Next event; `None` when the datastore side ended. An `Err(Expired)` means the
    /// watch fell behind compaction: relist and start a new watch.
    pub async fn next(&mut self) -> Option<Result<Event>> {
        self.rx.recv().await
    }

    /// Blocking variant for synchronous callers: waits at most `timeout`, returning
    /// `Ok(None)` when nothing arrived. Must not be called from an async task.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Event>> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.rx.try_recv() {
                Ok(Ok(event)) => return Ok(Some(event)),
                Ok(Err(e)) => return Err(e),
                Err(mpsc::error::TryRecvError::Disconnected) => return Ok(None),
                Err(mpsc::error::TryRecvError::Empty) => {
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }
}

/// Kinds and names become directory and file names, so they must not be able to escape the
/// datastore directory nor collide with its hidden bookkeeping files (`.lock`, temp files).
pub(crate) fn validate_name(what: &'static str, value: &str) -> Result<()> {
    let reason = if value.is_empty() {
        Some("empty")
    } else if value.len() > 253 {
        Some("longer than 253 bytes")
    } else if value.contains('/') || value.contains('\\') {
        Some("contains a path separator")
    } else if value.contains("..") {
        Some("contains '..'")
    } else if value.starts_with('.') {
        Some("starts with '.'")
    } else if value.chars().any(|c| c.is_control()) {
        Some("contains a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(DatastoreError::InvalidName {
            what,
            value: value.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The oldest `from` a watch can resume at, given the first retained event revision:
/// events after `from` must all be retained.
pub(crate) fn check_resumable(from: Revision, first_retained: Option<Revision>) -> Result<()> {
    match first_retained {
        Some(first) if from + 1 < first => Err(DatastoreError::Expired {
            requested: from,
            oldest: first - 1,
        }),
        _ => Ok(()),
    }
}

//! Failures of the etcd datastore that the generic
//! [`DatastoreError`](super::super::DatastoreError) variants do not describe.
//!
//! Like `KubeError`, this file does not depend on the client crate, so the
//! [`DatastoreError::Etcd`](super::super::DatastoreError) variant exists in every build;
//! transport errors are kept as text for the same reason.

/// Why the etcd datastore could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    /// This build has no etcd support (feature `etcd` off).
    #[error("this build has no etcd datastore (cargo feature \"etcd\" is off)")]
    NotBuilt,
    /// A setting is missing or wrong; `setting` names it as the operator wrote it
    /// (`ETCD_ENDPOINTS`, `ETCD_CERT_FILE`, …).
    #[error("{setting}: {reason}")]
    Config {
        setting: &'static str,
        reason: String,
    },
    /// No member answered (refused, timed out, TLS handshake failed).
    #[error("cannot reach the etcd cluster at {endpoints}: {reason}")]
    Unreachable { endpoints: String, reason: String },
    /// A request reached the cluster and failed there (no leader, permission denied, …).
    #[error("etcd {op} {key:?}: {reason}")]
    Request {
        op: &'static str,
        key: String,
        reason: String,
    },
    /// The key prefix holds keys routerd did not write there: refusing to mix our records
    /// with somebody else's (or to read theirs as ours).
    #[error(
        "etcd key prefix {prefix:?} holds data that is not routerd's (for example {key:?}); \
         choose an empty prefix with ROUTERD_ETCD_PREFIX"
    )]
    ForeignPrefix { prefix: String, key: String },
    /// A key under our prefix whose value is not a record routerd wrote.
    #[error("etcd key {key:?} is not a routerd record: {reason}")]
    Corrupt { key: String, reason: String },
    /// The backend's own runtime thread is gone (it could not start, or it panicked).
    #[error("the etcd datastore's client runtime has stopped")]
    Stopped,
}

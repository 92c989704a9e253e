//! The etcd v3 datastore: records as keys of an etcd cluster (Calico's `etcdv3` mode), for
//! clusters of machines without Kubernetes.
//!
//! The contract maps onto etcd's own model directly, which is why it was shaped after it:
//!
//! | contract                        | etcd v3                                                |
//! |---------------------------------|--------------------------------------------------------|
//! | record `(kind, name)`           | key `<prefix><kind>/<name>` (prefix `/routerd/v1/`), JSON value |
//! | version of a record             | the key's `mod_revision`                               |
//! | revision of the store           | the cluster's revision (response header)               |
//! | `list`                          | range over `<prefix><kind>/`, paged at one revision    |
//! | `create`, `AlreadyExists`       | txn: `create_revision == 0` then put                   |
//! | `update(expected)`, `Conflict`  | txn: `mod_revision == expected` then put, else get     |
//! | `delete(expected)`              | txn: `mod_revision == expected` (or exists) then delete |
//! | `watch(from)`                   | watch the range from `from + 1`, with `prev_kv`        |
//! | `Expired`                       | a watch canceled with `compact_revision`               |
//!
//! Details worth knowing:
//!
//! - **Writes that must not race** (block claims, affinities, handles, addresses: the
//!   `ipam_store` records) are exactly these compare-and-swap transactions; a lost race is a
//!   [`Conflict`](super::DatastoreError::Conflict) with the stored version, which the IPAM
//!   layer retries after re-reading. No lock is held across a network call: etcd's txn is
//!   the only serialisation point.
//! - **The prefix is ours.** Connecting writes a marker key `<prefix>.routerd` into an
//!   empty prefix, in the same transaction that checks it is empty; a prefix holding other
//!   keys and no marker is refused ([`EtcdError::ForeignPrefix`]), so routerd never mixes
//!   its records with Calico's `/calico/` tree or anybody else's.
//! - **Watches survive.** A broken stream is re-opened from the last revision delivered (a
//!   progress notification advances it too), on whichever member the client reaches; the
//!   consumer sees nothing but a log line. A stream that cannot be re-established for
//!   five seconds ends with the transport error, so the consumer knows the datastore is
//!   down; a compacted revision ends it with `Expired`, after which the consumer relists
//!   (level-triggered, the same for every backend).
//! - **Failover.** The client balances over every endpoint given; HTTP/2 keepalive gives
//!   up a member that stops answering within a few seconds, also under an idle watch, and
//!   `require leader` makes a member that lost the leader refuse requests instead of
//!   serving stale reads.
//! - **Client.** [`etcd-client`](https://crates.io/crates/etcd-client) (tonic + prost, the
//!   maintained v3 client), on the store's own runtime thread (`client_runtime`).
//!
//! [`EtcdError`] is compiled without the `etcd` feature too, so the
//! [`DatastoreError::Etcd`](super::DatastoreError::Etcd) variant exists in every build.

mod error;
mod options;

pub use error::EtcdError;
pub use options::{EtcdOptions, EtcdTls, DEFAULT_PREFIX as ETCD_DEFAULT_PREFIX};

#[cfg(feature = "etcd")]
mod backend;
#[cfg(feature = "etcd")]
mod watch;

#[cfg(feature = "etcd")]
pub use backend::EtcdDatastore;

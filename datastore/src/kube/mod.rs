//! The Kubernetes datastore: records as custom resources in an API server.
//!
//! Calico's Kubernetes datastore driver (KDD) keeps its resources as CRDs and relies on the
//! API server's optimistic concurrency; this backend keeps routerd's records in the same
//! objects, in Calico's shapes ([`calico`]: Calico's kinds as `crd.projectcalico.org/v1`
//! objects, a Node as the Kubernetes Node, routerd's own kinds as `routerd.io/v1`), so a
//! Calico cluster's objects are used as they are, and the
//! [`Datastore`](super::Datastore) contract maps onto the API almost one to one:
//!
//! | contract                          | Kubernetes                                             |
//! |-----------------------------------|--------------------------------------------------------|
//! | kind `BGPPeer`                    | cluster-scoped `bgppeers.crd.projectcalico.org/v1` ([`kind_resource`]) |
//! | record value                      | the object, as [`calico`] encodes it                   |
//! | version / revision                | `metadata.resourceVersion` (etcd's revision, decimal)  |
//! | `list` revision                   | the list's `metadata.resourceVersion`                  |
//! | `create`, `AlreadyExists`         | `POST`, `409 AlreadyExists`                            |
//! | `update(expected)`, `Conflict`    | `PUT` carrying `resourceVersion: expected`, `409 Conflict` |
//! | `delete(expected)`                | `DELETE` with `preconditions.resourceVersion`          |
//! | `watch(from)`                     | `GET ?watch=true&resourceVersion=from`                  |
//! | `Expired`                         | `410 Gone`, as an HTTP status or as a watch `ERROR` event |
//!
//! Details worth knowing:
//!
//! - **Versions.** `resourceVersion` is opaque in the API, but every real API server sends
//!   etcd's revision, one global decimal counter, which is exactly the contract's revision;
//!   a non-numeric one is refused with [`KubeError::ResourceVersion`]. `WatchFrom::Revision(0)`
//!   becomes `resourceVersion=1`, because `0` means "any, starting with synthetic ADDED
//!   events" to an API server, and etcd's first write is revision 2.
//! - **Conflicts.** A `409` does not say which version is stored, so the backend reads the
//!   object once to fill [`Conflict::actual`](super::DatastoreError::Conflict).
//! - **Watches.** `WatchFrom::Now` lists once to learn the current revision and watches from
//!   it, so a change made right after `watch` returns is never missed. A watch stream the
//!   server ends (its `timeoutSeconds`, a restart) is re-established from the last revision
//!   delivered (bookmarks included), invisibly to the consumer; a `410 Gone` ends the watch
//!   with [`Expired`](super::DatastoreError::Expired), after which the caller relists.
//!   `kube_runtime::watcher` is not used because it hides exactly that: it relists by
//!   itself, whereas the contract makes the caller relist, the same for every backend.
//!   A real API server reports an expired revision as the first item of a watch (an
//!   `ERROR` event), not as a failed request, so `watch` may return `Ok` and the first
//!   item be `Err(Expired)`; the trait allows both.
//! - **Watching every kind.** An API server has no watch across resource types, so
//!   `watch(None, ..)` runs one watch per kind of [`WATCHED_KINDS`] and merges them. Each
//!   stream is in revision order; across streams, the merge holds every event for
//!   [`KubeOptions::merge_window`] and releases held events lowest revision first, so the
//!   merged stream is in revision order unless two streams' deliveries are skewed by more
//!   than that window (nothing is ever dropped; within one kind the order is always exact).
//! - **Nodes.** A `Node` record is the Kubernetes Node of the same name ([`calico`]): a
//!   write merges Calico's annotations into the Node as it is now, through the `status`
//!   subresource, conditional on the version the caller read; deleting the Kubernetes Node
//!   deletes the record, which is how a node that left is found and released.
//! - **Secrets.** [`KubeDatastore::secret_value`] reads one key of a core/v1 Secret through
//!   the same client: how a `BGPPeer`'s `password.secretKeyRef` is resolved (Calico reads
//!   them in the namespace calico-node runs in; the namespace is the caller's choice).
//! - **Services.** [`KubeDatastore::watch_services`] watches the cluster's Services and
//!   EndpointSlices (read, never written) for service advertisement ([`services`]): the
//!   whole current set, kept by `kube_runtime`'s watcher, which relists by itself.
//! - **Pods.** [`KubeDatastore::watch_pod_endpoints`] derives one node's workload endpoints
//!   from its Pods as Calico's KDD does ([`pods`]): how pods Calico's CNI created are routed.
//! - **Threads.** The trait is synchronous and the kube client asynchronous: the client
//!   lives on the store's own runtime thread (`client_runtime`, shared with the etcd
//!   backend); calling the store directly on an async task blocks that worker like any
//!   blocking call. Dropping the store stops the thread and ends its watches.
//!
//! [`KubeError`] lives in [`error`] and is compiled without the feature too, so the
//! [`DatastoreError::Kubernetes`](super::DatastoreError::Kubernetes) variant exists in every
//! build; everything else here needs the `kubernetes` feature.

mod error;

pub use error::KubeError;

#[cfg(feature = "kubernetes")]
mod backend;
#[cfg(feature = "kubernetes")]
mod calico;
#[cfg(feature = "kubernetes")]
mod calico_crds;
#[cfg(feature = "kubernetes")]
mod crd;
#[cfg(feature = "kubernetes")]
mod kinds;
#[cfg(feature = "kubernetes")]
mod pods;
#[cfg(feature = "kubernetes")]
mod services;
#[cfg(feature = "kubernetes")]
mod watch;

#[cfg(feature = "kubernetes")]
pub use backend::{KubeConfigSource, KubeDatastore, KubeOptions};
#[cfg(feature = "kubernetes")]
pub use calico_crds::{calico_crd_yaml, calico_crds};
#[cfg(feature = "kubernetes")]
pub use crd::{crd_yaml, crds};
#[cfg(feature = "kubernetes")]
pub use kinds::{kind_resource, CRD_GROUP, CRD_VERSION, WATCHED_KINDS};
#[cfg(feature = "kubernetes")]
pub use pods::PodEndpointsReceiver;
#[cfg(feature = "kubernetes")]
pub use services::ServicesReceiver;

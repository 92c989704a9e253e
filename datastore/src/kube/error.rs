//! Failures of the Kubernetes datastore that have no equivalent in the generic
//! [`DatastoreError`](super::super::DatastoreError) variants.
//!
//! This file does not depend on the `kube` crate, so it is compiled with or without the
//! `kubernetes` feature: the [`DatastoreError::Kubernetes`](super::super::DatastoreError)
//! variant exists in every build and code matching on it does not depend on features.
//! Transport errors are kept as text for the same reason.

/// Why the Kubernetes datastore could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeError {
    /// This build of the agent has no Kubernetes support (feature `kubernetes` off).
    #[error("this build has no Kubernetes datastore (cargo feature \"kubernetes\" is off)")]
    NotBuilt,
    /// Neither the kubeconfig nor the in-cluster service account gave a usable client.
    #[error("cannot configure the Kubernetes client from {source_name}: {reason}")]
    Config { source_name: String, reason: String },
    /// The backend's own runtime thread is gone (it could not start, or it panicked).
    #[error("the Kubernetes datastore's client runtime has stopped")]
    Stopped,
    /// The API server does not serve this resource type: its CRD is not installed
    /// (`kubectl apply -f examples/crds/`).
    #[error("the API server does not serve {resource} (is its CRD installed?)")]
    NotServed { resource: String },
    /// The API server answered with an error status the datastore contract has no
    /// variant for (403 Forbidden, 422 Invalid, 500, …).
    #[error("{verb} {resource} {name:?}: API server answered {code} {reason}: {message}")]
    Api {
        verb: &'static str,
        resource: String,
        name: String,
        code: u16,
        reason: String,
        message: String,
    },
    /// The request did not get an answer (connection refused, TLS, timeout, bad body).
    #[error("{verb} {resource} {name:?}: {reason}")]
    Transport {
        verb: &'static str,
        resource: String,
        name: String,
        reason: String,
    },
    /// `metadata.resourceVersion` is opaque in the API, but every etcd-backed API server
    /// sends etcd's decimal revision; the datastore's versions are those revisions, so a
    /// server sending anything else cannot back this datastore.
    #[error(
        "{resource} {name:?}: resourceVersion {value:?} is not a decimal revision \
         (only etcd-backed API servers are supported)"
    )]
    ResourceVersion {
        resource: String,
        name: String,
        value: String,
    },
    /// An object of one of our resources lacks what the datastore wrote into it (for
    /// example `spec.value`, written by something other than routerd).
    #[error("{resource} {name:?} is malformed: {reason}")]
    Malformed {
        resource: String,
        name: String,
        reason: String,
    },
    /// With the Kubernetes datastore a Node is the Kubernetes Node of that name (as in
    /// Calico's KDD), so a Node cannot be created for a name the cluster has no Node of.
    #[error(
        "there is no Kubernetes Node {name:?}: with the Kubernetes datastore a node must be a \
         Kubernetes Node (the kubelet registers it; routerd then adds its BGP settings)"
    )]
    NodeNotInCluster { name: String },
    /// An operation the Kubernetes datastore does not do for this kind, and why.
    #[error("{verb} {kind} {name:?} is not supported with the Kubernetes datastore: {reason}")]
    Unsupported {
        verb: &'static str,
        kind: String,
        name: String,
        reason: &'static str,
    },
    /// The Secret does not exist in that namespace.
    #[error("secret {namespace}/{name} not found")]
    SecretNotFound { namespace: String, name: String },
    /// The Secret exists but has no such key in `data`.
    #[error("secret {namespace}/{name} has no key {key:?}")]
    SecretKeyMissing {
        namespace: String,
        name: String,
        key: String,
    },
    /// The Secret's value is not UTF-8 text (a BGP password must be text).
    #[error("secret {namespace}/{name} key {key:?} is not UTF-8 text")]
    SecretNotText {
        namespace: String,
        name: String,
        key: String,
    },
}

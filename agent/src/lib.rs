//! The node agent (`routerd`) and the operator's CLI (`routectl`).
//!
//! - [`resource`]: the resources operators write (Node, BGPConfiguration, BGPPeer, IPPool,
//!   BGPFilter), with Calico v3 field names so existing manifests carry over.
//! - [`datastore`]: one trait over where resources live (an embedded directory, Kubernetes),
//!   with resource-version compare-and-swap and watches.
//! - [`status`]: what routerd reports on its control socket (`routectl node status`).
pub mod datastore;
pub mod resource;
pub mod status;

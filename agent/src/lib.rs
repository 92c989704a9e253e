//! The node agent (`routerd`) and the operator's CLI (`routectl`).
//!
//! - [`resource`]: the resources operators write (Node, BGPConfiguration, BGPPeer, IPPool,
//!   BGPFilter), with Calico v3 field names so existing manifests carry over.
//! - [`datastore`]: one trait over where resources live (an embedded directory, Kubernetes),
//!   with resource-version compare-and-swap and watches.
//! - [`ipam_store`]: IPAM records (blocks, affinities, handles) kept in a datastore.
//! - [`peering`]: which BGP sessions a node has (mesh, reflectors, global/node/selector peers).
//! - [`settings`]: routerd's settings (flags > environment > file > defaults).
//! - [`daemon`]: routerd itself, driving the BGP speaker, the FIB and the overlay.
//! - [`health`]: `/readiness`, `/liveness`, `/metrics`.
//! - [`status`]: what routerd reports on its control socket (`routectl node status`).
//! - [`routectl`]: the operator's CLI.
pub mod daemon;
pub mod datastore;
pub mod health;
pub mod ipam_store;
pub mod peering;
pub mod resource;
pub mod routectl;
pub mod settings;
pub mod status;

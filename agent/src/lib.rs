//! The node agent (`routerd`) and the operator's CLI (`routectl`).
//!
//! The resources, the datastores and the IPAM records live in the `datastore` crate, which
//! the CNI plugins share; this crate is what runs on the node and the operator's CLI.
//!
//! - [`peering`]: which BGP sessions a node has (mesh, reflectors, global/node/selector peers).
//! - [`policy`]: BGPFilter rules and prefixAdvertisements in the speaker's types.
//! - [`settings`]: routerd's settings (flags > environment > file > defaults).
//! - [`daemon`]: routerd itself, driving the BGP speaker, the FIB and the overlay.
//! - [`health`]: `/readiness`, `/liveness`, `/metrics`.
//! - [`node_removal`]: what goes with a node that leaves (endpoints, addresses, blocks).
//! - [`service_routes`]: which Service addresses a node advertises (`externalTrafficPolicy`).
//! - [`status`]: what routerd reports on its control socket (`routectl node status`).
//! - [`routectl`]: the operator's CLI.
pub mod daemon;
pub mod health;
pub mod host_addresses;
pub mod node_removal;
pub mod peering;
pub mod policy;
pub mod routectl;
pub mod service_routes;
pub mod settings;
pub mod status;

//! The CNI plugins that put a pod on routerd's network, as Calico's `calico` and
//! `calico-ipam` do for calico-node.
//!
//! - `routerd-ipam` ([`ipam_plugin`]): an address per family from the node's affine block,
//!   through the same [`ipam::Allocator`] and datastore routerd uses, under a handle per
//!   container and interface (`<network>.<containerID>.<ifname>`); DEL releases exactly that
//!   handle (and Calico's `<network>.<containerID>`, for pods addressed before a switch).
//! - `routerd-cni` ([`plugin`]): runs the IPAM plugin named in the config (delegation, as the
//!   CNI spec describes), builds the veth (host side `cali…` with MAC `ee:ee:ee:ee:ee:ee`,
//!   proxy ARP and forwarding; pod side a /32 and /128 with a default route via 169.254.1.1
//!   and fe80::ecee:eeff:feee:eeee on link: [`dataplane`]), records the
//!   [`WorkloadEndpoint`](datastore::resource::WorkloadEndpoint) and adds the host route to
//!   the veth with routerd's route protocol, so that the route survives until routerd, which
//!   owns workload routes from then on, reconciles it.
//! - `routerd-cni install` ([`install`]): what a DaemonSet's init container runs.
//!
//! The plugins reach the datastore themselves (as Calico's do), never routerd, so a pod is
//! networked while routerd restarts. The CNI protocol (version negotiation, the 0.3.x/0.4.0
//! result layouts, error objects on stdout) is `rscni-plugin`'s; the work here is the
//! [`config`], the [`workload`] identity and what the commands do.

pub mod config;
pub mod dataplane;
pub mod delegate;
pub mod error;
pub mod install;
pub mod ipam_plugin;
pub mod plugin;
pub mod workload;

pub use error::CniError;

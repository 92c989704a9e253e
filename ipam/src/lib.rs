//! IP address management for pods: pools, per-node blocks, block affinity, borrowing.
//!
//! This reproduces Calico's IPAM model, because the routing design depends on it:
//!
//! - An **IP pool** ([`IpPool`], Calico `IPPool`) is a range pods may draw from, such as
//!   `10.244.0.0/16`, with a **block size** (default /24 here, /122 for IPv6), an encapsulation
//!   mode (`ipipMode` / `vxlanMode`), `natOutgoing`, `disabled` and a `nodeSelector` choosing the
//!   nodes allowed to use it.
//! - A pool is cut into **blocks** ([`AllocationBlock`], Calico `IPAMBlock`) of `2^(32 -
//!   blockSize)` addresses. A node **claims** a free block: the block record is created with
//!   `affinity: host:<node>` and a [`BlockAffinity`] record notes the claim. The node assigns
//!   its pods' addresses from its own blocks and, crucially for routing, **advertises each block
//!   as one aggregate route** (and installs a blackhole for it locally) instead of one /32 per
//!   pod. When its blocks are full it claims another one.
//! - A **handle** ([`IpamHandle`]) names the owner of addresses (a container id, or
//!   `ipip-tunnel-addr-<node>` for the node's tunnel address) and records which blocks hold
//!   them, so releasing a pod frees exactly its addresses.
//! - When a pool has no free block left, a node **borrows** an address from a block affine to
//!   another node (Calico's default). The owner still advertises the whole block, so the
//!   borrowing node must advertise a /32 (/128) for the borrowed address: longest-prefix match
//!   then delivers it correctly. [`AllocatorConfig::strict_affinity`] forbids borrowing, for
//!   fabrics that only accept per-block routes.
//!
//! Everything is stored through the [`IpamStore`] trait, a compare-and-swap record store that
//! the agent's datastores (a directory of files, Kubernetes CRDs) implement; [`MemoryStore`] is
//! the in-memory one. Uniqueness of every address handed out rests on that single primitive:
//! see the [`store`] module. The [`selector`] module is the Calico label-selector language,
//! also used by the agent for `BGPPeer` selectors.
//!
//! The crate does no I/O of its own and never touches the kernel.
//!
//! ```
//! use std::collections::BTreeMap;
//! use ipam::{Allocator, AllocatorConfig, AssignRequest, IpFamily, IpPool, IpPoolSpec, MemoryStore};
//!
//! let pool = IpPool::new("default", &IpPoolSpec { cidr: "10.244.0.0/16".into(), ..Default::default() })?;
//! let ipam = Allocator::new(MemoryStore::new(), AllocatorConfig::default());
//! let labels = BTreeMap::new();
//! let req = AssignRequest::pod("container-1", "node-a", IpFamily::V4, "default", "web-0");
//! let a = ipam.assign(&[pool], &labels, &req)?;
//! assert_eq!(a.address.to_string(), "10.244.0.0");
//! assert_eq!(ipam.affine_blocks("node-a")?, vec!["10.244.0.0/24".parse()?]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod allocator;
pub mod block;
pub mod pool;
pub mod report;
pub mod selector;
pub mod store;

pub use allocator::{Allocator, AllocatorConfig, AssignRequest, Assignment, IpamError, TunnelKind};
pub use block::{
    cidr_record_name, AffinityState, AllocationAttribute, AllocationBlock, BlockAffinity,
    IpamHandle,
};
pub use pool::{check_pool_overlaps, EncapMode, IpFamily, IpPool, IpPoolSpec, PoolValidationError};
pub use report::{CheckReport, PoolUsage, UsageReport};
pub use selector::{Labels, Selector, SelectorError};
pub use store::{IpamStore, MemoryStore, Record, RecordKind, Revision, StoreError, Versioned};

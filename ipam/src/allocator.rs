//! The allocator: block claims, address assignment and release over an [`IpamStore`].
//!
//! Every operation is a read–modify–compare-and-swap loop. A write that loses a race
//! ([`StoreError::Conflict`]) makes the operation re-read and try again, at most
//! [`AllocatorConfig::max_conflict_retries`] times; losing a race for a *free block* does not
//! count, the claimer simply moves on to the next free block (progress was made: one fewer
//! candidate).
//!
//! Write order follows Calico's so that a crash between two writes leaves something
//! `ipam check` reports and nothing that hands an address out twice:
//! - assign: handle count first, block second (a crash leaves a handle counting an address it
//!   does not have: a *dangling handle*, harmless);
//! - release: block first, handle second (same residue);
//! - claim: affinity `pending`, block create (the atomic claim), affinity `confirmed`;
//! - release affinity: affinity `pendingDeletion`, block delete or un-affine, affinity delete.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::block::{
    affinity_record_name, cidr_record_name, ip_to_u128, net_size, u128_to_ip, AffinityState,
    AllocationAttribute, AllocationBlock, BlockAffinity, IpamHandle, ATTR_NAMESPACE, ATTR_NODE,
    ATTR_POD, ATTR_TYPE,
};
use crate::pool::{IpFamily, IpPool};
use crate::selector::Labels;
use crate::store::{IpamStore, Record, RecordKind, StoreError, Versioned};

/// Allocator behaviour switches (Calico's `IPAMConfiguration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatorConfig {
    /// Never assign from another node's block: when a node's blocks are full and no free block
    /// is left, assignment fails instead of borrowing (Calico `strictAffinity`, needed where
    /// the fabric only learns per-block routes, e.g. Windows nodes or route reflectors that
    /// filter /32s).
    pub strict_affinity: bool,
    /// How many lost compare-and-swap races one operation tolerates before giving up.
    pub max_conflict_retries: usize,
}

impl Default for AllocatorConfig {
    fn default() -> Self {
        AllocatorConfig {
            strict_affinity: false,
            max_conflict_retries: 16,
        }
    }
}

/// Allocator failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// No enabled pool of the family selects the node.
    #[error("no enabled {family} pool selects node {node:?}")]
    NoPool {
        /// The node.
        node: String,
        /// The requested family.
        family: IpFamily,
    },
    /// Every eligible pool is full (or, with strict affinity, the node's blocks are full and
    /// no free block is left).
    #[error("no free {family} address for node {node:?} in pools {pools:?}")]
    Exhausted {
        /// The node.
        node: String,
        /// The requested family.
        family: IpFamily,
        /// Pools that were tried.
        pools: Vec<String>,
    },
    /// Lost too many compare-and-swap races in a row.
    #[error("gave up after {attempts} datastore conflicts while {operation}")]
    TooManyConflicts {
        /// What was being done.
        operation: &'static str,
        /// Conflicts seen.
        attempts: usize,
    },
    /// The request itself is unusable (empty handle or node name).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A stored record is damaged or of the wrong kind; it is never written back.
    #[error("datastore record {kind}/{name} is unusable: {reason}")]
    Corrupt {
        /// Record kind.
        kind: RecordKind,
        /// Record name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The datastore failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One address wanted for one handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignRequest {
    /// Identifies the owner of the address (CNI: the container id); releases go by handle.
    pub handle: String,
    /// The node the address will be used on.
    pub node: String,
    /// Address family.
    pub family: IpFamily,
    /// Attributes stored with the allocation (namespace, pod...). `node` is always added.
    pub attributes: BTreeMap<String, String>,
}

impl AssignRequest {
    /// A request for a pod's address, with Calico's `namespace` / `pod` attributes.
    pub fn pod(handle: &str, node: &str, family: IpFamily, namespace: &str, pod: &str) -> Self {
        AssignRequest {
            handle: handle.to_string(),
            node: node.to_string(),
            family,
            attributes: BTreeMap::from([
                (ATTR_NAMESPACE.to_string(), namespace.to_string()),
                (ATTR_POD.to_string(), pod.to_string()),
            ]),
        }
    }
}

/// Which tunnel device an address is for; decides the pools (those with that encapsulation
/// enabled), the handle name and the `type` attribute, as Calico's node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum TunnelKind {
    /// `tunl0` (IPv4 only).
    Ipip,
    /// `vxlan.calico` (IPv4).
    Vxlan,
    /// `vxlan-v6.calico`.
    VxlanV6,
}

impl TunnelKind {
    /// Calico's handle id for this node's tunnel address.
    pub fn handle(self, node: &str) -> String {
        match self {
            TunnelKind::Ipip => format!("ipip-tunnel-addr-{node}"),
            TunnelKind::Vxlan => format!("vxlan-tunnel-addr-{node}"),
            TunnelKind::VxlanV6 => format!("vxlan-v6-tunnel-addr-{node}"),
        }
    }

    fn attribute_type(self) -> &'static str {
        match self {
            TunnelKind::Ipip => "ipipTunnelAddress",
            TunnelKind::Vxlan => "vxlanTunnelAddress",
            TunnelKind::VxlanV6 => "vxlanV6TunnelAddress",
        }
    }

    fn family(self) -> IpFamily {
        match self {
            TunnelKind::Ipip | TunnelKind::Vxlan => IpFamily::V4,
            TunnelKind::VxlanV6 => IpFamily::V6,
        }
    }

    fn pool_uses_it(self, pool: &IpPool) -> bool {
        match self {
            TunnelKind::Ipip => pool.ipip_mode().is_enabled(),
            TunnelKind::Vxlan | TunnelKind::VxlanV6 => pool.vxlan_mode().is_enabled(),
        }
    }
}

/// An assigned address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assignment {
    /// The address.
    pub address: IpAddr,
    /// The block it came from.
    pub block: IpNet,
    /// True when the block is affine to another node (or to none): the using node must then
    /// advertise a host route for the address, since the block's route points elsewhere.
    pub borrowed: bool,
}

/// A block from a listing: usable, or its prefix and what makes it unusable.
pub(crate) type ListedBlock = Result<Versioned<AllocationBlock>, (IpNet, IpamError)>;

/// Result of one attempt; `Retry` means a compare-and-swap was lost.
enum Attempt<T> {
    Done(T),
    Retry,
}

/// Turns a lost race into `Attempt::Retry` and passes any other error up.
fn cas<T>(r: Result<T, StoreError>) -> Result<Attempt<T>, IpamError> {
    match r {
        Ok(v) => Ok(Attempt::Done(v)),
        Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound { .. }) => Ok(Attempt::Retry),
        Err(e) => Err(e.into()),
    }
}

/// Runs `f` until it completes, allowing `max` lost races.
fn with_retries<T>(
    max: usize,
    operation: &'static str,
    mut f: impl FnMut() -> Result<Attempt<T>, IpamError>,
) -> Result<T, IpamError> {
    for attempt in 0..=max {
        match f()? {
            Attempt::Done(v) => return Ok(v),
            Attempt::Retry => debug!(operation, attempt, "datastore conflict, retrying"),
        }
    }
    Err(IpamError::TooManyConflicts {
        operation,
        attempts: max + 1,
    })
}

/// Disjoint, sorted address ranges already covered by blocks (merged on build, so nested or
/// overlapping records from a damaged store are still excluded as a whole).
struct TakenRanges(Vec<(u128, u128)>);

impl TakenRanges {
    fn new(mut ranges: Vec<(u128, u128)>) -> Self {
        ranges.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
        for (s, e) in ranges {
            match merged.last_mut() {
                Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        TakenRanges(merged)
    }

    /// End of the taken range overlapping `[s, e]`, if any.
    fn overlap(&self, s: u128, e: u128) -> Option<u128> {
        let idx = self.0.partition_point(|r| r.0 <= e);
        let r = self.0.get(idx.checked_sub(1)?)?;
        (r.1 >= s).then_some(r.1)
    }

    fn insert(&mut self, s: u128, e: u128) {
        let mut all = std::mem::take(&mut self.0);
        all.push((s, e));
        *self = TakenRanges::new(all);
    }
}

fn block_range(cidr: &IpNet) -> (u128, u128) {
    let s = ip_to_u128(cidr.network());
    (s, s.saturating_add(net_size(cidr) - 1))
}

/// Claims blocks for nodes and assigns addresses from them. Cheap to share between threads
/// (`&self` everywhere): all coordination happens in the store.
#[derive(Debug)]
pub struct Allocator<S> {
    store: S,
    config: AllocatorConfig,
}

impl<S: IpamStore> Allocator<S> {
    /// An allocator over `store`.
    pub fn new(store: S, config: AllocatorConfig) -> Self {
        Allocator { store, config }
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> AllocatorConfig {
        self.config
    }

    // ---- typed record access -------------------------------------------------------------

    pub(crate) fn get_block(
        &self,
        cidr: &IpNet,
    ) -> Result<Option<Versioned<AllocationBlock>>, IpamError> {
        let name = cidr_record_name(cidr);
        match self.store.get(RecordKind::Block, &name)? {
            None => Ok(None),
            Some(v) => Ok(Some(checked_block(v, &name)?)),
        }
    }

    /// All blocks, each either usable or the error that makes it unusable.
    pub(crate) fn list_blocks(&self) -> Result<Vec<ListedBlock>, IpamError> {
        let mut out = Vec::new();
        for v in self.store.list(RecordKind::Block)? {
            match v.value {
                Record::Block(b) => {
                    let cidr = b.cidr;
                    let name = b.name();
                    out.push(
                        checked_block(
                            Versioned {
                                revision: v.revision,
                                value: Record::Block(b),
                            },
                            &name,
                        )
                        .map_err(|e| (cidr, e)),
                    );
                }
                other => {
                    return Err(IpamError::Corrupt {
                        kind: RecordKind::Block,
                        name: other.name(),
                        reason: format!("listed as a block but is a {:?}", other.kind()),
                    })
                }
            }
        }
        // Address order, whatever order the store lists names in ("10-0-0-16-29" sorts
        // before "10-0-0-8-29" as text): borrowing and reports are then deterministic.
        out.sort_by_key(|b| match b {
            Ok(b) => b.value.cidr,
            Err((cidr, _)) => *cidr,
        });
        Ok(out)
    }

    fn get_handle(&self, handle: &str) -> Result<Option<Versioned<IpamHandle>>, IpamError> {
        match self.store.get(RecordKind::Handle, handle)? {
            None => Ok(None),
            Some(Versioned {
                revision,
                value: Record::Handle(h),
            }) => Ok(Some(Versioned { revision, value: h })),
            Some(v) => Err(wrong_kind(RecordKind::Handle, handle, &v.value)),
        }
    }

    pub(crate) fn list_handles(&self) -> Result<Vec<Versioned<IpamHandle>>, IpamError> {
        self.store
            .list(RecordKind::Handle)?
            .into_iter()
            .map(|v| match v.value {
                Record::Handle(h) => Ok(Versioned {
                    revision: v.revision,
                    value: h,
                }),
                other => Err(wrong_kind(RecordKind::Handle, &other.name(), &other)),
            })
            .collect()
    }

    fn get_affinity(
        &self,
        node: &str,
        cidr: &IpNet,
    ) -> Result<Option<Versioned<BlockAffinity>>, IpamError> {
        let name = affinity_record_name(node, cidr);
        match self.store.get(RecordKind::Affinity, &name)? {
            None => Ok(None),
            Some(Versioned {
                revision,
                value: Record::Affinity(a),
            }) => Ok(Some(Versioned { revision, value: a })),
            Some(v) => Err(wrong_kind(RecordKind::Affinity, &name, &v.value)),
        }
    }

    pub(crate) fn list_affinities(&self) -> Result<Vec<Versioned<BlockAffinity>>, IpamError> {
        self.store
            .list(RecordKind::Affinity)?
            .into_iter()
            .map(|v| match v.value {
                Record::Affinity(a) => Ok(Versioned {
                    revision: v.revision,
                    value: a,
                }),
                other => Err(wrong_kind(RecordKind::Affinity, &other.name(), &other)),
            })
            .collect()
    }

    /// Writes a block back, deleting it instead when it is empty and nobody owns it (Calico
    /// does the same: an un-owned empty block is free space again).
    fn write_block(&self, b: &Versioned<AllocationBlock>) -> Result<Attempt<()>, IpamError> {
        if b.value.affinity.is_none() && b.value.is_empty() {
            debug!(block = %b.value.cidr, "deleting empty unowned block");
            return cas(self
                .store
                .delete(RecordKind::Block, &b.value.name(), &b.revision));
        }
        cas(self
            .store
            .update(Record::Block(b.value.clone()), &b.revision)
            .map(|_| ()))
    }

    /// Adds `delta` to the handle's count for `block`, creating or deleting the handle record
    /// as needed. `Retry` on a lost race.
    fn adjust_handle(
        &self,
        handle: &str,
        block: &IpNet,
        delta: i64,
    ) -> Result<Attempt<()>, IpamError> {
        let key = block.to_string();
        match self.get_handle(handle)? {
            None if delta > 0 => {
                let rec = IpamHandle {
                    handle_id: handle.to_string(),
                    block: BTreeMap::from([(key, delta as u32)]),
                };
                cas(self.store.create(Record::Handle(rec)).map(|_| ()))
            }
            None => Ok(Attempt::Done(())),
            Some(mut h) => {
                let cur = i64::from(h.value.block.get(&key).copied().unwrap_or(0));
                let new = (cur + delta).max(0);
                if new == 0 {
                    h.value.block.remove(&key);
                } else {
                    h.value
                        .block
                        .insert(key, new.min(i64::from(u32::MAX)) as u32);
                }
                if h.value.block.is_empty() {
                    cas(self.store.delete(RecordKind::Handle, handle, &h.revision))
                } else {
                    cas(self
                        .store
                        .update(Record::Handle(h.value), &h.revision)
                        .map(|_| ()))
                }
            }
        }
    }

    /// Best-effort undo of a handle increment after the block write lost its race.
    fn undo_handle(&self, handle: &str, block: &IpNet) {
        let r = with_retries(
            self.config.max_conflict_retries,
            "undoing a handle count",
            || self.adjust_handle(handle, block, -1),
        );
        if let Err(e) = r {
            warn!(handle, block = %block, error = %e, "handle count left too high; `ipam check` reports it");
        }
    }

    // ---- assignment ----------------------------------------------------------------------

    /// Assigns one address of `req.family` to `req.handle` on `req.node`.
    ///
    /// Idempotent per handle and family: if the handle already holds an address of the family,
    /// that address is returned. Otherwise the address comes from, in order: a block affine to
    /// the node; a newly claimed free block of an eligible pool; unless
    /// [`AllocatorConfig::strict_affinity`] is set, any block of an eligible pool with room
    /// (borrowing, as Calico does). Eligible pools are those of the family that are enabled and
    /// whose `nodeSelector` matches `node_labels`, tried in the order given.
    pub fn assign<L: Labels + ?Sized>(
        &self,
        pools: &[IpPool],
        node_labels: &L,
        req: &AssignRequest,
    ) -> Result<Assignment, IpamError> {
        let eligible: Vec<&IpPool> = pools
            .iter()
            .filter(|p| p.family() == req.family && p.usable_by(node_labels))
            .collect();
        self.assign_from(&eligible, req, false)
    }

    /// Assigns (or returns the existing) tunnel address of `node` for `kind`: the lowest free
    /// address of a block affine to the node, from the pools that use that encapsulation and
    /// select the node. The handle is Calico's (`ipip-tunnel-addr-<node>`, ...).
    pub fn assign_tunnel_address<L: Labels + ?Sized>(
        &self,
        pools: &[IpPool],
        node: &str,
        node_labels: &L,
        kind: TunnelKind,
    ) -> Result<Assignment, IpamError> {
        let family = kind.family();
        let eligible: Vec<&IpPool> = pools
            .iter()
            .filter(|p| p.family() == family && kind.pool_uses_it(p) && p.usable_by(node_labels))
            .collect();
        let req = AssignRequest {
            handle: kind.handle(node),
            node: node.to_string(),
            family,
            attributes: BTreeMap::from([(ATTR_TYPE.to_string(), kind.attribute_type().into())]),
        };
        self.assign_from(&eligible, &req, true)
    }

    fn assign_from(
        &self,
        eligible: &[&IpPool],
        req: &AssignRequest,
        lowest: bool,
    ) -> Result<Assignment, IpamError> {
        if req.handle.is_empty() || req.node.is_empty() {
            return Err(IpamError::InvalidRequest(
                "handle and node must not be empty".into(),
            ));
        }
        if let Some(existing) = self.existing_assignment(&req.handle, &req.node, req.family)? {
            debug!(handle = %req.handle, address = %existing.address, "handle already assigned");
            return Ok(existing);
        }
        if eligible.is_empty() {
            return Err(IpamError::NoPool {
                node: req.node.clone(),
                family: req.family,
            });
        }
        let mut attrs = req.attributes.clone();
        attrs.insert(ATTR_NODE.to_string(), req.node.clone());
        let a = with_retries(
            self.config.max_conflict_retries,
            "assigning an address",
            || self.try_assign(eligible, req, &attrs, lowest),
        )?;
        match a {
            Some(a) => {
                info!(handle = %req.handle, node = %req.node, address = %a.address,
                      block = %a.block, borrowed = a.borrowed, "assigned address");
                Ok(a)
            }
            None => Err(IpamError::Exhausted {
                node: req.node.clone(),
                family: req.family,
                pools: eligible.iter().map(|p| p.name().to_string()).collect(),
            }),
        }
    }

    /// The handle's current address of `family`, if any.
    fn existing_assignment(
        &self,
        handle: &str,
        node: &str,
        family: IpFamily,
    ) -> Result<Option<Assignment>, IpamError> {
        let Some(h) = self.get_handle(handle)? else {
            return Ok(None);
        };
        for key in h.value.block.keys() {
            let Ok(cidr) = key.parse::<IpNet>() else {
                continue;
            };
            if IpFamily::of(&cidr) != family {
                continue;
            }
            if let Some(b) = self.get_block(&cidr)? {
                if let Some(&o) = b.value.ordinals_of(handle).first() {
                    return Ok(Some(Assignment {
                        address: b.value.address(o),
                        block: b.value.cidr,
                        borrowed: b.value.affine_node() != Some(node),
                    }));
                }
            }
        }
        Ok(None)
    }

    /// One pass of the assignment algorithm. `Done(None)`: nothing free anywhere.
    fn try_assign(
        &self,
        eligible: &[&IpPool],
        req: &AssignRequest,
        attrs: &BTreeMap<String, String>,
        lowest: bool,
    ) -> Result<Attempt<Option<Assignment>>, IpamError> {
        let in_eligible = |c: &IpNet| eligible.iter().any(|p| p.contains_block(c));
        // 1. Blocks the node already owns.
        let mut tried = Vec::new();
        for b in self.node_blocks(&req.node, false)? {
            if !in_eligible(&b.value.cidr) {
                continue;
            }
            tried.push(b.value.cidr);
            if b.value.free() == 0 {
                continue;
            }
            return self.assign_in_block(b, req, attrs, lowest, false);
        }
        // 2. A new block.
        let taken = self.store.list_block_cidrs()?;
        for pool in eligible {
            if let Some(b) = self.claim_block(pool, &req.node, &taken)? {
                return self.assign_in_block(b, req, attrs, lowest, false);
            }
        }
        // 3. Borrow.
        if self.config.strict_affinity {
            return Ok(Attempt::Done(None));
        }
        for b in self.list_blocks()?.into_iter().flatten() {
            if tried.contains(&b.value.cidr) || !in_eligible(&b.value.cidr) || b.value.free() == 0 {
                continue;
            }
            let borrowed = b.value.affine_node() != Some(req.node.as_str());
            return self.assign_in_block(b, req, attrs, lowest, borrowed);
        }
        Ok(Attempt::Done(None))
    }

    /// Blocks affine to `node` according to its affinity records and to the blocks
    /// themselves; blocks being released only with `include_releasing`.
    fn node_blocks(
        &self,
        node: &str,
        include_releasing: bool,
    ) -> Result<Vec<Versioned<AllocationBlock>>, IpamError> {
        let mut out = Vec::new();
        for v in self.store.list_node_affinities(node)? {
            let a = match v.value {
                Record::Affinity(a) => Versioned {
                    revision: v.revision,
                    value: a,
                },
                other => return Err(wrong_kind(RecordKind::Affinity, &other.name(), &other)),
            };
            if a.value.node != node
                || (a.value.state == AffinityState::PendingDeletion && !include_releasing)
            {
                continue;
            }
            match self.get_block(&a.value.cidr) {
                Ok(Some(b)) if b.value.affine_node() == Some(node) => out.push(b),
                Ok(_) => {}
                Err(e @ IpamError::Corrupt { .. }) => {
                    warn!(node, block = %a.value.cidr, error = %e, "skipping unusable block");
                }
                Err(e) => return Err(e),
            }
        }
        out.sort_by_key(|b| b.value.cidr);
        Ok(out)
    }

    fn assign_in_block(
        &self,
        mut b: Versioned<AllocationBlock>,
        req: &AssignRequest,
        attrs: &BTreeMap<String, String>,
        lowest: bool,
        borrowed: bool,
    ) -> Result<Attempt<Option<Assignment>>, IpamError> {
        let cidr = b.value.cidr;
        let Some(address) = b.value.assign(&req.handle, attrs, lowest) else {
            return Ok(Attempt::Retry);
        };
        if let Attempt::Retry = self.adjust_handle(&req.handle, &cidr, 1)? {
            return Ok(Attempt::Retry);
        }
        match self.write_block(&b) {
            Ok(Attempt::Done(())) => Ok(Attempt::Done(Some(Assignment {
                address,
                block: cidr,
                borrowed,
            }))),
            Ok(Attempt::Retry) => {
                self.undo_handle(&req.handle, &cidr);
                Ok(Attempt::Retry)
            }
            Err(e) => {
                self.undo_handle(&req.handle, &cidr);
                Err(e)
            }
        }
    }

    /// Claims the first free block of `pool` for `node`; `None` if the pool has no free block.
    /// Losing the race for a candidate moves on to the next one.
    fn claim_block(
        &self,
        pool: &IpPool,
        node: &str,
        blocks: &[IpNet],
    ) -> Result<Option<Versioned<AllocationBlock>>, IpamError> {
        let mut taken = TakenRanges::new(blocks.iter().map(block_range).collect());
        let pool_net = pool.cidr();
        let (pool_start, pool_end) = block_range(&pool_net);
        let host_bits = u32::from(pool_net.max_prefix_len() - pool.block_size());
        let step = 1u128 << host_bits;
        let mut cand = pool_start;
        while cand <= pool_end {
            let cand_end = cand + (step - 1);
            if let Some(end) = taken.overlap(cand, cand_end) {
                // Jump past the taken range to the next aligned candidate.
                let Some(next) = end.checked_add(1) else {
                    return Ok(None);
                };
                let Some(aligned) = next.checked_add(step - 1) else {
                    return Ok(None);
                };
                cand = aligned & !(step - 1);
                continue;
            }
            let cidr = IpNet::new(u128_to_ip(&pool_net, cand), pool.block_size()).map_err(|e| {
                IpamError::InvalidRequest(format!("block prefix for pool {}: {e}", pool.name()))
            })?;
            if let Some(b) = self.try_claim(node, cidr)? {
                info!(node, pool = pool.name(), block = %cidr, "claimed block");
                return Ok(Some(b));
            }
            taken.insert(cand, cand_end);
            match cand.checked_add(step) {
                Some(n) => cand = n,
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Claims `cidr` for `node`: affinity `pending`, create the block, affinity `confirmed`.
    /// `None` if another node created the block first.
    fn try_claim(
        &self,
        node: &str,
        cidr: IpNet,
    ) -> Result<Option<Versioned<AllocationBlock>>, IpamError> {
        let pending = BlockAffinity {
            node: node.to_string(),
            cidr,
            state: AffinityState::Pending,
        };
        match self.store.create(Record::Affinity(pending)) {
            // Already there: a previous claim of ours was interrupted; carry on with it.
            Ok(_) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let block = AllocationBlock::new(cidr, Some(node));
        match self.store.create(Record::Block(block.clone())) {
            Ok(revision) => {
                self.settle_affinity(node, &cidr)?;
                Ok(Some(Versioned {
                    revision,
                    value: block,
                }))
            }
            Err(StoreError::Conflict { .. }) => {
                debug!(node, block = %cidr, "lost the race for a free block");
                // Drops our pending record, or confirms it if the winner is another thread
                // of this same node (whose claim it also is).
                self.settle_affinity(node, &cidr)?;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Brings `node`'s affinity record for `cidr` in line with the block, the source of truth:
    /// `confirmed` if the block exists and is affine to the node, absent otherwise.
    ///
    /// Both a claimer (after creating the block) and a releaser (after deleting or un-owning
    /// it) end with this step, and it re-reads the block each time, so whichever runs last
    /// writes what the block says. Writing blindly instead (a claimer confirming, a releaser
    /// deleting) lets a claim and a release of the same node interleave into a `confirmed`
    /// record for a deleted block, or a block without its record.
    fn settle_affinity(&self, node: &str, cidr: &IpNet) -> Result<(), IpamError> {
        let name = affinity_record_name(node, cidr);
        with_retries(
            self.config.max_conflict_retries,
            "settling a block affinity",
            || {
                let record = self.get_affinity(node, cidr)?;
                let owned = match self.get_block(cidr) {
                    Ok(Some(b)) => b.value.affine_node() == Some(node),
                    Ok(None) => false,
                    // A damaged block is not handed out; its claim stays as it is.
                    Err(IpamError::Corrupt { .. }) => return Ok(Attempt::Done(())),
                    Err(e) => return Err(e),
                };
                let confirmed = BlockAffinity {
                    node: node.to_string(),
                    cidr: *cidr,
                    state: AffinityState::Confirmed,
                };
                match (record, owned) {
                    (None, false) => Ok(Attempt::Done(())),
                    (None, true) => cas(self.store.create(Record::Affinity(confirmed)).map(|_| ())),
                    (Some(a), false) => {
                        cas(self.store.delete(RecordKind::Affinity, &name, &a.revision))
                    }
                    (Some(a), true) if a.value.state == AffinityState::Confirmed => {
                        Ok(Attempt::Done(()))
                    }
                    (Some(a), true) => cas(self
                        .store
                        .update(Record::Affinity(confirmed), &a.revision)
                        .map(|_| ())),
                }
            },
        )
    }

    // ---- release -------------------------------------------------------------------------

    /// Releases every address of `handle`; returns them. Releasing an unknown (or already
    /// released) handle is not an error and returns nothing.
    pub fn release(&self, handle: &str) -> Result<Vec<IpAddr>, IpamError> {
        let mut released = Vec::new();
        with_retries(
            self.config.max_conflict_retries,
            "releasing a handle",
            || {
                let Some(h) = self.get_handle(handle)? else {
                    return Ok(Attempt::Done(()));
                };
                for key in h.value.block.keys() {
                    let Ok(cidr) = key.parse::<IpNet>() else {
                        continue;
                    };
                    let Some(mut b) = self.get_block(&cidr)? else {
                        continue;
                    };
                    let ordinals = b.value.ordinals_of(handle);
                    if ordinals.is_empty() {
                        continue;
                    }
                    let addrs: Vec<IpAddr> = ordinals.iter().map(|o| b.value.address(*o)).collect();
                    for o in ordinals {
                        b.value.release_ordinal(o);
                    }
                    if let Attempt::Retry = self.write_block(&b)? {
                        return Ok(Attempt::Retry);
                    }
                    released.extend(addrs);
                }
                cas(self.store.delete(RecordKind::Handle, handle, &h.revision))
            },
        )?;
        if !released.is_empty() {
            info!(handle, addresses = ?released, "released handle");
        }
        Ok(released)
    }

    /// Releases one address whatever its handle (`calicoctl ipam release --ip`). Returns what
    /// it was assigned to (handle and attributes), or `None` if it was not assigned.
    pub fn release_ip(&self, ip: IpAddr) -> Result<Option<AllocationAttribute>, IpamError> {
        let released = with_retries(
            self.config.max_conflict_retries,
            "releasing an address",
            || {
                let Some(mut b) = self
                    .list_blocks()?
                    .into_iter()
                    .flatten()
                    .find(|b| b.value.cidr.contains(&ip))
                else {
                    return Ok(Attempt::Done(None));
                };
                let Some(ordinal) = b.value.ordinal(ip) else {
                    return Ok(Attempt::Done(None));
                };
                let Some(attr) = b.value.release_ordinal(ordinal) else {
                    return Ok(Attempt::Done(None));
                };
                let cidr = b.value.cidr;
                Ok(match self.write_block(&b)? {
                    Attempt::Done(()) => Attempt::Done(Some((attr, cidr))),
                    Attempt::Retry => Attempt::Retry,
                })
            },
        )?;
        let Some((attr, cidr)) = released else {
            return Ok(None);
        };
        if let Some(h) = &attr.handle_id {
            with_retries(
                self.config.max_conflict_retries,
                "decrementing a handle",
                || self.adjust_handle(h, &cidr, -1),
            )?;
        }
        info!(address = %ip, handle = ?attr.handle_id, "released address");
        Ok(Some(attr))
    }

    /// Gives up `node`'s claim on `block`. An empty block is deleted (its range is free
    /// again); a non-empty one is kept, un-owned, unless `require_empty` is set, in which case
    /// nothing changes. Returns whether the affinity was released.
    pub fn release_affinity(
        &self,
        node: &str,
        block: IpNet,
        require_empty: bool,
    ) -> Result<bool, IpamError> {
        let retries = self.config.max_conflict_retries;
        // Mark the affinity as going away so this node stops assigning from the block.
        with_retries(retries, "marking an affinity for deletion", || {
            match self.get_affinity(node, &block)? {
                None => Ok(Attempt::Done(())),
                Some(a) if a.value.state == AffinityState::PendingDeletion => Ok(Attempt::Done(())),
                Some(mut a) => {
                    a.value.state = AffinityState::PendingDeletion;
                    cas(self
                        .store
                        .update(Record::Affinity(a.value), &a.revision)
                        .map(|_| ()))
                }
            }
        })?;
        let released = with_retries(retries, "releasing a block affinity", || {
            let Some(mut b) = self.get_block(&block)? else {
                return Ok(Attempt::Done(true));
            };
            if b.value.affine_node() != Some(node) {
                return Ok(Attempt::Done(true));
            }
            if !b.value.is_empty() && require_empty {
                return Ok(Attempt::Done(false));
            }
            b.value.affinity = None;
            Ok(match self.write_block(&b)? {
                Attempt::Done(()) => Attempt::Done(true),
                Attempt::Retry => Attempt::Retry,
            })
        })?;
        // Delete the record, or restore it to `confirmed` if the block stayed ours.
        self.settle_affinity(node, &block)?;
        if released {
            info!(node, block = %block, "released block affinity");
        }
        Ok(released)
    }

    /// Releases every empty block affine to `node` (a node gives back blocks it no longer
    /// needs so other nodes can claim them). Returns the released blocks.
    pub fn release_empty_blocks(&self, node: &str) -> Result<Vec<IpNet>, IpamError> {
        let mut out = Vec::new();
        for b in self.node_blocks(node, true)? {
            if b.value.is_empty() && self.release_affinity(node, b.value.cidr, true)? {
                out.push(b.value.cidr);
            }
        }
        Ok(out)
    }

    /// The nodes holding a block: by an affinity record, or as a block's affine node (for
    /// finding the state of nodes that are gone).
    pub fn affine_nodes(&self) -> Result<std::collections::BTreeSet<String>, IpamError> {
        let mut out: std::collections::BTreeSet<String> = self
            .list_affinities()?
            .into_iter()
            .map(|a| a.value.node)
            .collect();
        out.extend(
            self.list_blocks()?
                .into_iter()
                .flatten()
                .filter_map(|b| b.value.affine_node().map(str::to_string)),
        );
        Ok(out)
    }

    /// Releases all of `node`'s affinities (node removed from the cluster): empty blocks are
    /// deleted, the others stay without owner until their addresses are released. Also
    /// removes stale affinity records of the node. Returns the blocks it owned.
    pub fn release_node(&self, node: &str) -> Result<Vec<IpNet>, IpamError> {
        let mut cidrs: Vec<IpNet> = self
            .list_blocks()?
            .into_iter()
            .flatten()
            .filter(|b| b.value.affine_node() == Some(node))
            .map(|b| b.value.cidr)
            .collect();
        for a in self.list_affinities()? {
            if a.value.node == node && !cidrs.contains(&a.value.cidr) {
                cidrs.push(a.value.cidr);
            }
        }
        cidrs.sort();
        for c in &cidrs {
            self.release_affinity(node, *c, false)?;
        }
        Ok(cidrs)
    }

    // ---- queries -------------------------------------------------------------------------

    /// Ensures `node` owns at least one block in each eligible pool of `family` (enabled,
    /// selecting the node), claiming a free block where it owns none, and returns the node's
    /// blocks in those pools.
    ///
    /// Calico claims a block lazily, on the first pod assignment (and for the tunnel address);
    /// libcalico-go's `EnsureBlock` does it eagerly. A routing daemon wants the eager form:
    /// the node can advertise its block (and install its blackhole) before the first pod, so
    /// the first pod is reachable the moment it starts. A pool with no free block is skipped
    /// (the node will borrow), not an error; no eligible pool at all is [`IpamError::NoPool`].
    pub fn ensure_block<L: Labels + ?Sized>(
        &self,
        pools: &[IpPool],
        node: &str,
        node_labels: &L,
        family: IpFamily,
    ) -> Result<Vec<IpNet>, IpamError> {
        if node.is_empty() {
            return Err(IpamError::InvalidRequest("node must not be empty".into()));
        }
        let eligible: Vec<&IpPool> = pools
            .iter()
            .filter(|p| p.family() == family && p.usable_by(node_labels))
            .collect();
        if eligible.is_empty() {
            return Err(IpamError::NoPool {
                node: node.to_string(),
                family,
            });
        }
        for pool in &eligible {
            with_retries(self.config.max_conflict_retries, "claiming a block", || {
                let owned = self.node_blocks(node, false)?;
                if owned.iter().any(|b| pool.contains_block(&b.value.cidr)) {
                    return Ok(Attempt::Done(()));
                }
                let taken = self.store.list_block_cidrs()?;
                match self.claim_block(pool, node, &taken)? {
                    Some(b) => {
                        info!(node, pool = pool.name(), block = %b.value.cidr, "claimed block");
                        Ok(Attempt::Done(()))
                    }
                    None => {
                        warn!(
                            node,
                            pool = pool.name(),
                            "pool has no free block; the node will borrow"
                        );
                        Ok(Attempt::Done(()))
                    }
                }
            })?;
        }
        Ok(self
            .node_blocks(node, false)?
            .into_iter()
            .map(|b| b.value.cidr)
            .filter(|c| eligible.iter().any(|p| p.contains_block(c)))
            .collect())
    }

    /// Blocks affine to `node`: the prefixes it originates (as aggregate routes to itself and
    /// blackholes for the unassigned rest).
    ///
    /// Found through the node's affinity records, as Calico does, so the cost does not grow
    /// with the number of blocks in the cluster.
    pub fn affine_blocks(&self, node: &str) -> Result<Vec<IpNet>, IpamError> {
        Ok(self
            .node_blocks(node, true)?
            .into_iter()
            .map(|b| b.value.cidr)
            .collect())
    }

    /// Addresses used on `node` from blocks it does not own: each needs a host route from
    /// this node, since the block's aggregate route leads to the owner.
    pub fn borrowed_addresses(&self, node: &str) -> Result<Vec<IpAddr>, IpamError> {
        let mut out = Vec::new();
        for b in self.list_blocks()?.into_iter().flatten() {
            if b.value.affine_node() == Some(node) {
                continue;
            }
            for (o, attr) in b.value.assigned() {
                if attr.secondary.get(ATTR_NODE).map(String::as_str) == Some(node) {
                    out.push(b.value.address(o));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Addresses currently assigned to `handle`.
    pub fn addresses(&self, handle: &str) -> Result<Vec<IpAddr>, IpamError> {
        let mut out = Vec::new();
        if let Some(h) = self.get_handle(handle)? {
            for key in h.value.block.keys() {
                let Ok(cidr) = key.parse::<IpNet>() else {
                    continue;
                };
                if let Some(b) = self.get_block(&cidr)? {
                    out.extend(
                        b.value
                            .ordinals_of(handle)
                            .into_iter()
                            .map(|o| b.value.address(o)),
                    );
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

fn wrong_kind(kind: RecordKind, name: &str, got: &Record) -> IpamError {
    IpamError::Corrupt {
        kind,
        name: name.to_string(),
        reason: format!("stored record is a {:?}", got.kind()),
    }
}

fn checked_block(
    v: Versioned<Record>,
    name: &str,
) -> Result<Versioned<AllocationBlock>, IpamError> {
    let Versioned { revision, value } = v;
    let Record::Block(b) = value else {
        return Err(wrong_kind(RecordKind::Block, name, &value));
    };
    b.check_shape().map_err(|e| IpamError::Corrupt {
        kind: RecordKind::Block,
        name: name.to_string(),
        reason: e.reason,
    })?;
    Ok(Versioned { revision, value: b })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn taken_ranges_merge_nested_and_adjacent_ranges() {
        let mut t = TakenRanges::new(vec![(0, 255), (64, 127), (256, 511), (1024, 1087)]);
        assert_eq!(t.0, vec![(0, 511), (1024, 1087)]);
        assert_eq!(t.overlap(128, 191), Some(511));
        assert_eq!(t.overlap(512, 575), None);
        assert_eq!(t.overlap(1000, 1024), Some(1087));
        assert_eq!(t.overlap(1088, 2000), None);
        t.insert(512, 1023);
        assert_eq!(t.0, vec![(0, 1087)]);
        let empty = TakenRanges::new(Vec::new());
        assert_eq!(empty.overlap(0, u128::MAX), None);
        let top = TakenRanges::new(vec![(u128::MAX - 3, u128::MAX)]);
        assert_eq!(top.overlap(u128::MAX, u128::MAX), Some(u128::MAX));
    }
}

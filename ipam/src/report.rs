//! Read-only reports for operators: `ipam show` (usage per pool and block) and `ipam check`
//! (inconsistencies between blocks, handles and affinities).
//!
//! Both read a snapshot record by record without locking, so on a busy cluster they can show a
//! transient mismatch (an assignment between its handle write and its block write); run
//! `check` again before acting on a finding, as with `calicoctl ipam check`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::allocator::{Allocator, IpamError};
use crate::block::{net_size, AffinityState};
use crate::pool::IpPool;
use crate::store::IpamStore;

/// Usage of one block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockUsage {
    /// The block's prefix.
    pub cidr: IpNet,
    /// Owning node, if any.
    pub node: Option<String>,
    /// Addresses in the block.
    pub total: u128,
    /// Assigned addresses.
    pub in_use: u128,
    /// Unassigned addresses.
    pub free: u128,
}

/// Usage of one pool (`calicoctl ipam show --show-blocks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolUsage {
    /// Pool name.
    pub pool: String,
    /// Pool prefix.
    pub cidr: IpNet,
    /// Addresses in the pool (saturating at `u128::MAX`).
    pub total: u128,
    /// Assigned addresses.
    pub in_use: u128,
    /// `total - in_use`: addresses in claimed blocks' free slots plus unclaimed space.
    pub free: u128,
    /// Blocks carved out of the pool so far, by prefix.
    pub blocks: Vec<BlockUsage>,
}

/// `ipam show` for every pool, plus blocks that lie in no pool (left behind by a deleted pool).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    /// Per pool, in the order given.
    pub pools: Vec<PoolUsage>,
    /// Blocks outside every pool.
    pub blocks_outside_pools: Vec<BlockUsage>,
}

/// Why an allocation is counted as leaked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum LeakReason {
    /// The allocation carries no handle id: nothing can release it by handle.
    NoHandle,
    /// Its handle record does not exist.
    HandleMissing,
    /// The handle record exists but counts fewer addresses in this block than it has.
    NotCountedByHandle,
}

/// An assigned address that release-by-handle would not free.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeakedAllocation {
    /// The address.
    pub address: IpAddr,
    /// Its block.
    pub block: IpNet,
    /// The handle recorded on the allocation.
    pub handle: Option<String>,
    /// Why it is leaked.
    pub reason: LeakReason,
}

/// A handle that counts more addresses in a block than the block assigns to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DanglingHandle {
    /// Handle id.
    pub handle: String,
    /// The block key as recorded in the handle.
    pub block: String,
    /// Count recorded in the handle.
    pub recorded: u32,
    /// Addresses actually assigned to the handle in that block.
    pub found: u32,
}

/// One address assigned in more than one block record (overlapping blocks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DoubleAssignment {
    /// The address.
    pub address: IpAddr,
    /// Every block assigning it.
    pub blocks: Vec<IpNet>,
}

/// Findings of `ipam check`. Empty lists mean consistent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    /// Blocks read.
    pub blocks: usize,
    /// Handles read.
    pub handles: usize,
    /// Assigned addresses found in blocks.
    pub allocations: usize,
    /// Assigned addresses no handle accounts for.
    pub leaked_allocations: Vec<LeakedAllocation>,
    /// Handles counting addresses that are not assigned to them.
    pub dangling_handles: Vec<DanglingHandle>,
    /// Addresses assigned by more than one block.
    pub double_assignments: Vec<DoubleAssignment>,
    /// Blocks that fail their invariants (`name: reason`); the allocator never writes them.
    pub corrupt_blocks: Vec<String>,
    /// Affinity records whose block is missing or owned by another node.
    pub orphaned_affinities: Vec<String>,
    /// Blocks affine to a node that has no confirmed affinity record for them (the node still
    /// uses them, but only finds them by scanning all blocks).
    pub unrecorded_affinities: Vec<IpNet>,
}

impl CheckReport {
    /// True when nothing was found.
    pub fn is_clean(&self) -> bool {
        self.leaked_allocations.is_empty()
            && self.dangling_handles.is_empty()
            && self.double_assignments.is_empty()
            && self.corrupt_blocks.is_empty()
            && self.orphaned_affinities.is_empty()
            && self.unrecorded_affinities.is_empty()
    }
}

fn block_usage(b: &crate::block::AllocationBlock) -> BlockUsage {
    let in_use = b.in_use() as u128;
    let total = b.size() as u128;
    BlockUsage {
        cidr: b.cidr,
        node: b.affine_node().map(str::to_string),
        total,
        in_use,
        free: total - in_use,
    }
}

impl<S: IpamStore> Allocator<S> {
    /// Usage per pool and per block.
    pub fn usage(&self, pools: &[IpPool]) -> Result<UsageReport, IpamError> {
        let mut report = UsageReport {
            pools: pools
                .iter()
                .map(|p| PoolUsage {
                    pool: p.name().to_string(),
                    cidr: p.cidr(),
                    total: net_size(&p.cidr()),
                    in_use: 0,
                    free: 0,
                    blocks: Vec::new(),
                })
                .collect(),
            blocks_outside_pools: Vec::new(),
        };
        for b in self.list_blocks()?.into_iter().flatten() {
            let u = block_usage(&b.value);
            match report.pools.iter_mut().find(|p| p.cidr.contains(&u.cidr)) {
                Some(p) => {
                    p.in_use += u.in_use;
                    p.blocks.push(u);
                }
                None => report.blocks_outside_pools.push(u),
            }
        }
        for p in &mut report.pools {
            p.free = p.total.saturating_sub(p.in_use);
            p.blocks.sort_by_key(|b| b.cidr);
        }
        report.blocks_outside_pools.sort_by_key(|b| b.cidr);
        Ok(report)
    }

    /// Cross-checks blocks, handles and affinities (`calicoctl ipam check`).
    pub fn check(&self) -> Result<CheckReport, IpamError> {
        let mut report = CheckReport::default();
        let handles: HashMap<String, BTreeMap<String, u32>> = self
            .list_handles()?
            .into_iter()
            .map(|h| (h.value.handle_id, h.value.block))
            .collect();
        report.handles = handles.len();

        let mut owners: HashMap<IpAddr, Vec<IpNet>> = HashMap::new();
        // (handle, block key) -> addresses assigned to it there.
        let mut found: HashMap<(String, String), u32> = HashMap::new();
        let mut blocks = BTreeMap::new();
        for entry in self.list_blocks()? {
            let b = match entry {
                Ok(b) => b.value,
                Err((cidr, e)) => {
                    report.blocks += 1;
                    report.corrupt_blocks.push(format!("{cidr}: {e}"));
                    continue;
                }
            };
            report.blocks += 1;
            let key = b.cidr.to_string();
            let mut per_handle: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
            for (o, attr) in b.assigned() {
                let addr = b.address(o);
                report.allocations += 1;
                owners.entry(addr).or_default().push(b.cidr);
                match &attr.handle_id {
                    None => report.leaked_allocations.push(LeakedAllocation {
                        address: addr,
                        block: b.cidr,
                        handle: None,
                        reason: LeakReason::NoHandle,
                    }),
                    Some(h) => per_handle.entry(h.clone()).or_default().push(addr),
                }
            }
            for (h, addrs) in per_handle {
                let recorded = handles.get(&h).map(|m| m.get(&key).copied().unwrap_or(0));
                let n = addrs.len() as u32;
                let reason = match recorded {
                    None => Some(LeakReason::HandleMissing),
                    Some(r) if r < n => Some(LeakReason::NotCountedByHandle),
                    Some(_) => None,
                };
                if let Some(reason) = reason {
                    report
                        .leaked_allocations
                        .extend(addrs.iter().map(|a| LeakedAllocation {
                            address: *a,
                            block: b.cidr,
                            handle: Some(h.clone()),
                            reason,
                        }));
                }
                found.insert((h, key.clone()), n);
            }
            blocks.insert(b.cidr, b.affine_node().map(str::to_string));
        }

        for (h, per_block) in &handles {
            for (key, &recorded) in per_block {
                let n = found.get(&(h.clone(), key.clone())).copied().unwrap_or(0);
                if recorded > n {
                    report.dangling_handles.push(DanglingHandle {
                        handle: h.clone(),
                        block: key.clone(),
                        recorded,
                        found: n,
                    });
                }
            }
        }

        for (address, mut bs) in owners {
            if bs.len() > 1 {
                bs.sort();
                report.double_assignments.push(DoubleAssignment {
                    address,
                    blocks: bs,
                });
            }
        }

        let mut recorded = std::collections::HashSet::new();
        for a in self.list_affinities()? {
            // A pending claim or release is work in progress, not an inconsistency.
            if a.value.state != AffinityState::Confirmed {
                continue;
            }
            let owner = blocks.get(&a.value.cidr);
            if owner == Some(&Some(a.value.node.clone())) {
                recorded.insert(a.value.cidr);
            } else {
                report.orphaned_affinities.push(a.value.name());
            }
        }
        for (cidr, owner) in &blocks {
            if owner.is_some() && !recorded.contains(cidr) {
                report.unrecorded_affinities.push(*cidr);
            }
        }

        report.leaked_allocations.sort_by_key(|l| l.address);
        report
            .dangling_handles
            .sort_by(|a, b| (&a.handle, &a.block).cmp(&(&b.handle, &b.block)));
        report.double_assignments.sort_by_key(|d| d.address);
        report.orphaned_affinities.sort();
        Ok(report)
    }
}

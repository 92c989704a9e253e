//! The three IPAM records kept in the datastore, shaped like Calico's (`AllocationBlock`,
//! `BlockAffinity`, `IPAMHandle`), plus the address arithmetic on blocks.
//!
//! A block stores one slot per address (`allocations[ordinal]` is `None` when free, otherwise
//! the index of an [`AllocationAttribute`]) and the free ordinals in `unallocated`, in the order
//! they will be handed out. As in Calico, a released ordinal goes to the *back* of that list, so
//! an address just freed is the last one reused: a pod that gets a recently used address could
//! otherwise receive traffic (conntrack, ARP caches, other nodes' stale /32s) meant for the old
//! one.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Prefix of a block's `affinity` field and of node names in Calico (`host:<node>`).
pub const HOST_AFFINITY_PREFIX: &str = "host:";

/// Secondary attribute key: the pod's namespace (as written by Calico's CNI plugin).
pub const ATTR_NAMESPACE: &str = "namespace";
/// Secondary attribute key: the pod's name.
pub const ATTR_POD: &str = "pod";
/// Secondary attribute key: the node the address is used on (tells a borrowed address's node).
pub const ATTR_NODE: &str = "node";
/// Secondary attribute key: what kind of address this is (e.g. `ipipTunnelAddress`).
pub const ATTR_TYPE: &str = "type";

/// Calico's record name for a CIDR: `10.244.1.0/24` becomes `10-244-1-0-24`, `fd00::/122`
/// becomes `fd00---122` (dots, colons and the slash replaced by dashes; Kubernetes object names
/// cannot contain them).
pub fn cidr_record_name(cidr: &IpNet) -> String {
    cidr.to_string().replace(['.', ':', '/'], "-")
}

/// `host:<node>`, the value of a block's `affinity` field when `node` owns it.
pub fn host_affinity(node: &str) -> String {
    format!("{HOST_AFFINITY_PREFIX}{node}")
}

pub(crate) fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// Builds an address of the same family as `like` from its integer value (truncating to the
/// family's width; callers only pass values derived from addresses of that family).
pub(crate) fn u128_to_ip(like: &IpNet, v: u128) -> IpAddr {
    match like {
        IpNet::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from(v as u32)),
        IpNet::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(v)),
    }
}

/// Number of addresses in `net`, saturating at `u128::MAX` for `::/0`.
pub(crate) fn net_size(net: &IpNet) -> u128 {
    let host_bits = u32::from(net.max_prefix_len() - net.prefix_len());
    1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
}

/// A (`handle_id`, attributes) pair shared by the addresses of one assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AllocationAttribute {
    /// The handle the address was assigned to (Calico: `handle_id`).
    #[serde(rename = "handle_id", default, skip_serializing_if = "Option::is_none")]
    pub handle_id: Option<String>,
    /// Free-form attributes (namespace, pod, node, type).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secondary: BTreeMap<String, String>,
}

/// A contiguous, power-of-two range of a pool, the unit a node claims and routes as one prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocationBlock {
    /// The block's prefix, e.g. `10.244.1.0/26`.
    pub cidr: IpNet,
    /// `host:<node>` when a node owns the block, `None` once the affinity was released while
    /// addresses were still in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<String>,
    /// One slot per address: index into `attributes` when assigned.
    pub allocations: Vec<Option<usize>>,
    /// Free ordinals, in hand-out order.
    pub unallocated: Vec<u32>,
    /// Attributes referenced from `allocations`.
    #[serde(default)]
    pub attributes: Vec<AllocationAttribute>,
}

/// Why a stored block cannot be used (corrupt or hand-edited datastore content).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("block {cidr}: {reason}")]
pub struct BlockShapeError {
    /// The block's prefix.
    pub cidr: IpNet,
    /// What is inconsistent.
    pub reason: String,
}

impl AllocationBlock {
    /// A new, empty block owned by `node` (or by nobody).
    ///
    /// The caller guarantees `cidr` has at most 2^12 addresses (validated pools guarantee
    /// this: block sizes are /20../32 and /116../128).
    pub(crate) fn new(cidr: IpNet, node: Option<&str>) -> Self {
        let cidr = cidr.trunc();
        let size = net_size(&cidr).min(1 << 12) as u32;
        AllocationBlock {
            cidr,
            affinity: node.map(host_affinity),
            allocations: vec![None; size as usize],
            unallocated: (0..size).collect(),
            attributes: Vec::new(),
        }
    }

    /// Record name (`10-244-1-0-26`).
    pub fn name(&self) -> String {
        cidr_record_name(&self.cidr)
    }

    /// The node this block is affine to, if any.
    pub fn affine_node(&self) -> Option<&str> {
        self.affinity
            .as_deref()
            .and_then(|a| a.strip_prefix(HOST_AFFINITY_PREFIX))
    }

    /// Number of addresses.
    pub fn size(&self) -> usize {
        self.allocations.len()
    }

    /// Number of assigned addresses.
    pub fn in_use(&self) -> usize {
        self.allocations.iter().filter(|a| a.is_some()).count()
    }

    /// Number of addresses available for assignment.
    pub fn free(&self) -> usize {
        self.unallocated.len()
    }

    /// True when nothing is assigned.
    pub fn is_empty(&self) -> bool {
        self.allocations.iter().all(Option::is_none)
    }

    /// The address at `ordinal`.
    pub fn address(&self, ordinal: u32) -> IpAddr {
        u128_to_ip(
            &self.cidr,
            ip_to_u128(self.cidr.network()) + u128::from(ordinal),
        )
    }

    /// The ordinal of `ip`, if it lies in the block.
    pub fn ordinal(&self, ip: IpAddr) -> Option<u32> {
        if !self.cidr.contains(&ip) {
            return None;
        }
        u32::try_from(ip_to_u128(ip) - ip_to_u128(self.cidr.network())).ok()
    }

    /// Checks the invariants the allocator relies on, so that a damaged record from the
    /// datastore yields an error instead of a panic or a double assignment.
    pub fn check_shape(&self) -> Result<(), BlockShapeError> {
        let err = |reason: String| BlockShapeError {
            cidr: self.cidr,
            reason,
        };
        if self.cidr.trunc() != self.cidr {
            return Err(err("cidr has host bits set".into()));
        }
        let expected = net_size(&self.cidr);
        if expected > 1 << 12 || self.allocations.len() as u128 != expected {
            return Err(err(format!(
                "{} allocation slots for {} addresses",
                self.allocations.len(),
                expected
            )));
        }
        let mut listed = vec![false; self.allocations.len()];
        for &o in &self.unallocated {
            match listed.get_mut(o as usize) {
                None => return Err(err(format!("unallocated ordinal {o} out of range"))),
                Some(true) => return Err(err(format!("ordinal {o} listed twice as free"))),
                Some(seen) => *seen = true,
            }
        }
        for (o, slot) in self.allocations.iter().enumerate() {
            match (slot, listed[o]) {
                (Some(_), true) => {
                    return Err(err(format!("ordinal {o} both assigned and free")));
                }
                (None, false) => return Err(err(format!("ordinal {o} neither assigned nor free"))),
                (Some(a), false) if *a >= self.attributes.len() => {
                    return Err(err(format!("ordinal {o} refers to missing attribute {a}")));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Assigns the next free ordinal (or the lowest one when `lowest` is set) to `handle`.
    /// Returns `None` when the block is full. The block must have passed [`check_shape`].
    ///
    /// [`check_shape`]: AllocationBlock::check_shape
    pub(crate) fn assign(
        &mut self,
        handle: &str,
        secondary: &BTreeMap<String, String>,
        lowest: bool,
    ) -> Option<IpAddr> {
        let pos = if lowest {
            self.unallocated
                .iter()
                .enumerate()
                .min_by_key(|(_, o)| **o)
                .map(|(i, _)| i)?
        } else if self.unallocated.is_empty() {
            return None;
        } else {
            0
        };
        let ordinal = self.unallocated.remove(pos);
        let attr = AllocationAttribute {
            handle_id: Some(handle.to_string()),
            secondary: secondary.clone(),
        };
        let idx = match self.attributes.iter().position(|a| *a == attr) {
            Some(i) => i,
            None => {
                self.attributes.push(attr);
                self.attributes.len() - 1
            }
        };
        self.allocations[ordinal as usize] = Some(idx);
        Some(self.address(ordinal))
    }

    /// Frees `ordinal`; returns the attribute it was assigned with (`None` if it was free).
    pub(crate) fn release_ordinal(&mut self, ordinal: u32) -> Option<AllocationAttribute> {
        let slot = self.allocations.get_mut(ordinal as usize)?;
        let idx = slot.take()?;
        self.unallocated.push(ordinal);
        let attr = self.attributes.get(idx).cloned().unwrap_or_default();
        self.compact_attributes();
        Some(attr)
    }

    /// Ordinals assigned to `handle`.
    pub fn ordinals_of(&self, handle: &str) -> Vec<u32> {
        self.allocations
            .iter()
            .enumerate()
            .filter_map(|(o, a)| {
                let attr = self.attributes.get((*a)?)?;
                (attr.handle_id.as_deref() == Some(handle)).then_some(o as u32)
            })
            .collect()
    }

    /// The attribute of an assigned ordinal.
    pub fn attribute(&self, ordinal: u32) -> Option<&AllocationAttribute> {
        let idx = (*self.allocations.get(ordinal as usize)?)?;
        self.attributes.get(idx)
    }

    /// Iterates over assigned `(ordinal, attribute)` pairs.
    pub fn assigned(&self) -> impl Iterator<Item = (u32, &AllocationAttribute)> + '_ {
        self.allocations.iter().enumerate().filter_map(|(o, a)| {
            let attr = self.attributes.get((*a)?)?;
            Some((o as u32, attr))
        })
    }

    /// Drops attributes no longer referenced and renumbers the references (Calico does the
    /// same so that blocks do not grow without bound).
    fn compact_attributes(&mut self) {
        let mut used = vec![false; self.attributes.len()];
        for a in self.allocations.iter().flatten() {
            if let Some(u) = used.get_mut(*a) {
                *u = true;
            }
        }
        if used.iter().all(|u| *u) {
            return;
        }
        let mut remap = vec![0usize; self.attributes.len()];
        let mut kept = Vec::new();
        for (i, attr) in std::mem::take(&mut self.attributes).into_iter().enumerate() {
            if used[i] {
                remap[i] = kept.len();
                kept.push(attr);
            }
        }
        self.attributes = kept;
        for a in self.allocations.iter_mut().flatten() {
            *a = remap[*a];
        }
    }
}

/// Life cycle of a [`BlockAffinity`], as in Calico: a claim is written `pending` before the
/// block exists and `confirmed` after; a release goes through `pendingDeletion`, during which
/// the node no longer assigns from the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AffinityState {
    /// Claim in progress.
    Pending,
    /// The node owns the block.
    Confirmed,
    /// Release in progress.
    PendingDeletion,
}

/// "Node N owns block B": lets a node find its blocks without reading every block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockAffinity {
    /// The node name.
    pub node: String,
    /// The block's prefix.
    pub cidr: IpNet,
    /// Claim / release progress.
    pub state: AffinityState,
}

impl BlockAffinity {
    /// Record name, as Calico's Kubernetes datastore names it: `<node>-<block name>`.
    pub fn name(&self) -> String {
        affinity_record_name(&self.node, &self.cidr)
    }
}

/// `<node>-<block name>`.
pub fn affinity_record_name(node: &str, cidr: &IpNet) -> String {
    format!("{node}-{}", cidr_record_name(cidr))
}

/// Which blocks hold the addresses of one handle (a pod's container id, a tunnel address…),
/// so release by handle touches only those blocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamHandle {
    /// The handle id (Calico: `handleID`).
    #[serde(rename = "handleID")]
    pub handle_id: String,
    /// Block cidr (as text) -> number of addresses of this handle in it.
    pub block: BTreeMap<String, u32>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn names_follow_calico() {
        assert_eq!(cidr_record_name(&net("10.244.1.0/24")), "10-244-1-0-24");
        assert_eq!(cidr_record_name(&net("fd00::1:0/122")), "fd00--1-0-122");
        assert_eq!(host_affinity("node-1"), "host:node-1");
        let aff = BlockAffinity {
            node: "n1".into(),
            cidr: net("10.0.0.0/26"),
            state: AffinityState::Confirmed,
        };
        assert_eq!(aff.name(), "n1-10-0-0-0-26");
        assert_eq!(
            serde_json::to_value(&aff).unwrap(),
            serde_json::json!({"node": "n1", "cidr": "10.0.0.0/26", "state": "confirmed"})
        );
    }

    #[test]
    fn assign_in_order_and_reuse_released_last() {
        let mut b = AllocationBlock::new(net("10.0.0.0/30"), Some("n1"));
        assert_eq!(b.affine_node(), Some("n1"));
        let none = BTreeMap::new();
        let a0 = b.assign("h0", &none, false).unwrap();
        let a1 = b.assign("h1", &none, false).unwrap();
        assert_eq!(a0.to_string(), "10.0.0.0");
        assert_eq!(a1.to_string(), "10.0.0.1");
        assert_eq!(
            b.release_ordinal(0).unwrap().handle_id.as_deref(),
            Some("h0")
        );
        assert_eq!(b.release_ordinal(0), None, "second release is a no-op");
        assert_eq!(
            b.assign("h2", &none, false).unwrap().to_string(),
            "10.0.0.2"
        );
        assert_eq!(
            b.assign("h3", &none, false).unwrap().to_string(),
            "10.0.0.3"
        );
        assert_eq!(
            b.assign("h4", &none, false).unwrap().to_string(),
            "10.0.0.0"
        );
        assert_eq!(b.assign("h5", &none, false), None);
        b.check_shape().unwrap();
    }

    #[test]
    fn lowest_picks_smallest_free_ordinal() {
        let mut b = AllocationBlock::new(net("10.0.0.0/29"), None);
        let none = BTreeMap::new();
        for h in ["a", "b", "c"] {
            b.assign(h, &none, false);
        }
        b.release_ordinal(1);
        assert_eq!(b.assign("t", &none, true).unwrap().to_string(), "10.0.0.1");
    }

    #[test]
    fn attributes_are_compacted_on_release() {
        let mut b = AllocationBlock::new(net("fd00::/126"), None);
        let none = BTreeMap::new();
        b.assign("a", &none, false);
        b.assign("b", &none, false);
        b.assign("a", &none, false);
        assert_eq!(b.attributes.len(), 2);
        b.release_ordinal(1);
        assert_eq!(b.attributes.len(), 1);
        assert_eq!(b.ordinals_of("a"), vec![0, 2]);
        b.check_shape().unwrap();
        assert_eq!(b.address(2).to_string(), "fd00::2");
        assert_eq!(b.ordinal("fd00::3".parse().unwrap()), Some(3));
        assert_eq!(b.ordinal("fd00::4".parse().unwrap()), None);
    }

    #[test]
    fn check_shape_rejects_damaged_blocks() {
        let good = AllocationBlock::new(net("10.0.0.0/30"), None);
        let mut b = good.clone();
        b.unallocated.push(0);
        assert!(b.check_shape().unwrap_err().reason.contains("twice"));
        let mut b = good.clone();
        b.unallocated.push(9);
        assert!(b.check_shape().is_err());
        let mut b = good.clone();
        b.allocations.pop();
        assert!(b.check_shape().is_err());
        let mut b = good.clone();
        b.unallocated.retain(|o| *o != 2);
        assert!(b.check_shape().is_err());
        let mut b = good.clone();
        b.allocations[1] = Some(0);
        b.unallocated.retain(|o| *o != 1);
        assert!(b.check_shape().unwrap_err().reason.contains("attribute"));
        let mut b = good;
        b.cidr = net("10.0.0.1/30");
        assert!(b.check_shape().is_err());
    }

    #[test]
    fn block_serialises_with_calico_field_names() {
        let mut b = AllocationBlock::new(net("10.0.0.0/31"), Some("n"));
        let mut attrs = BTreeMap::new();
        attrs.insert(ATTR_POD.to_string(), "p".to_string());
        b.assign("h", &attrs, false);
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "cidr": "10.0.0.0/31",
                "affinity": "host:n",
                "allocations": [0, null],
                "unallocated": [1],
                "attributes": [{"handle_id": "h", "secondary": {"pod": "p"}}]
            })
        );
        let back: AllocationBlock = serde_json::from_value(v).unwrap();
        assert_eq!(back, b);
    }
}

//! The userspace IP-in-IP next-hop table: remote pod block -> remote node.
//!
//! A TUN device has no link layer, so the gateway of the route that sent a packet to `tunl0`
//! (`<block> via <node ip> dev tunl0 onlink`) is lost by the time the packet reaches us. We
//! recover it from the inner destination with a longest-prefix match over the same blocks the
//! agent routes to `tunl0`. The table also answers "is this outer source one of our nodes?",
//! the check that keeps arbitrary hosts from injecting packets into the overlay.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// A remote node reached over IP-in-IP, with the pod blocks it hosts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteNode {
    /// The node's underlay address: the outer destination, and the outer source we accept.
    pub node_ip: Ipv4Addr,
    /// The blocks (CIDRs) whose addresses live on the node.
    pub blocks: Vec<Ipv4Net>,
}

/// A fast hasher for the table's `u32` network keys (Fibonacci hashing). SipHash's protection
/// against hash flooding is not needed: the keys come from the agent's configuration, and
/// lookups of attacker-chosen destinations never insert.
#[derive(Debug, Default, Clone, Copy)]
pub struct NetworkHasher(u64);

impl Hasher for NetworkHasher {
    /// The product's high half is the well-mixed one (block keys end in zero bits, which
    /// multiplication keeps in the low half); the hash table indexes by the low bits, so swap.
    fn finish(&self) -> u64 {
        self.0.rotate_left(32)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type NetworkMap<V> = HashMap<u32, V, BuildHasherDefault<NetworkHasher>>;

/// Longest-prefix-match table from inner destination to remote node.
///
/// One hash map per prefix length present, probed from the longest length down: a lookup
/// costs at most one probe per distinct length (a handful: typically only /26 blocks plus a
/// few /32 borrowed addresses), independent of the number of nodes.
#[derive(Debug, Clone, Default)]
pub struct RemoteBlockTable {
    /// `(prefix length, network bits -> node)`, longest length first.
    by_len: Vec<(u8, NetworkMap<Ipv4Addr>)>,
    nodes: HashSet<Ipv4Addr>,
}

impl RemoteBlockTable {
    /// Builds the table. If two nodes claim the same block, the later one wins (a block moving
    /// between nodes is a transient the agent resolves on its next update).
    pub fn new(nodes: &[RemoteNode]) -> Self {
        let mut lens: HashMap<u8, NetworkMap<Ipv4Addr>> = HashMap::new();
        let mut known = HashSet::new();
        for node in nodes {
            known.insert(node.node_ip);
            for block in &node.blocks {
                let block = block.trunc();
                lens.entry(block.prefix_len())
                    .or_default()
                    .insert(u32::from(block.network()), node.node_ip);
            }
        }
        let mut by_len: Vec<_> = lens.into_iter().collect();
        by_len.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        RemoteBlockTable {
            by_len,
            nodes: known,
        }
    }

    /// The node hosting `dst`, by longest prefix match.
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        let dst = u32::from(dst);
        self.by_len.iter().find_map(|(len, map)| {
            let mask = if *len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(*len))
            };
            map.get(&(dst & mask)).copied()
        })
    }

    /// Whether `ip` is the underlay address of a node we exchange IP-in-IP traffic with.
    pub fn is_known_node(&self, ip: Ipv4Addr) -> bool {
        self.nodes.contains(&ip)
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(ip: &str, blocks: &[&str]) -> RemoteNode {
        RemoteNode {
            node_ip: ip.parse().unwrap(),
            blocks: blocks.iter().map(|b| b.parse().unwrap()).collect(),
        }
    }
    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let t = RemoteBlockTable::new(&[
            node("10.0.0.2", &["10.244.1.0/26"]),
            // An address borrowed from node 2's block by node 3.
            node("10.0.0.3", &["10.244.1.7/32", "10.244.2.0/26"]),
            node("10.0.0.4", &["10.244.0.0/16"]),
        ]);
        assert_eq!(t.lookup(a("10.244.1.5")), Some(a("10.0.0.2")));
        assert_eq!(t.lookup(a("10.244.1.7")), Some(a("10.0.0.3")));
        assert_eq!(t.lookup(a("10.244.2.63")), Some(a("10.0.0.3")));
        assert_eq!(t.lookup(a("10.244.2.64")), Some(a("10.0.0.4")));
        assert_eq!(t.lookup(a("10.245.0.1")), None);
    }

    #[test]
    fn unaligned_blocks_are_truncated_and_default_route_works() {
        let t = RemoteBlockTable::new(&[node("10.0.0.2", &["10.244.1.9/26"])]);
        assert_eq!(t.lookup(a("10.244.1.0")), Some(a("10.0.0.2")));
        let d = RemoteBlockTable::new(&[node("10.0.0.9", &["0.0.0.0/0"])]);
        assert_eq!(d.lookup(a("8.8.8.8")), Some(a("10.0.0.9")));
    }

    #[test]
    fn known_nodes_include_nodes_without_blocks() {
        let t = RemoteBlockTable::new(&[node("10.0.0.2", &[]), node("10.0.0.3", &["10.1.0.0/26"])]);
        assert!(t.is_known_node(a("10.0.0.2")));
        assert!(t.is_known_node(a("10.0.0.3")));
        assert!(!t.is_known_node(a("10.0.0.4")));
        assert_eq!(t.node_count(), 2);
        assert!(RemoteBlockTable::default().lookup(a("10.1.0.1")).is_none());
    }
}

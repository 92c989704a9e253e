//! Path attributes (RFC 4271 §4.3, §5) in decoded form.
//!
//! AS numbers are always held in their 4-octet form: when a 2-octet peer sends AS_PATH with
//! AS4_PATH (or AGGREGATOR with AS4_AGGREGATOR), the decoder merges them as RFC 6793 §4.2.3
//! says, and the encoder splits them again for such a peer. So nothing past the codec ever
//! sees AS_TRANS where a real AS number is known.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

use super::capability::{Afi, Safi};

/// Attribute type codes (IANA "BGP Path Attributes").
pub mod code {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MULTI_EXIT_DISC: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const ORIGINATOR_ID: u8 = 9;
    pub const CLUSTER_LIST: u8 = 10;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const EXTENDED_COMMUNITIES: u8 = 16;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const LARGE_COMMUNITY: u8 = 32;
}

/// Attribute flag bits (RFC 4271 §4.3).
pub mod flag {
    pub const OPTIONAL: u8 = 0x80;
    pub const TRANSITIVE: u8 = 0x40;
    pub const PARTIAL: u8 = 0x20;
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

/// ORIGIN (RFC 4271 §5.1.1). Ordered as the decision process prefers them (§9.1.2.2 c):
/// IGP < EGP < INCOMPLETE, lower is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Origin {
    #[default]
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

/// AS_PATH segment types (RFC 4271 §4.3; confederation types from RFC 5065 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegmentType {
    Set = 1,
    Sequence = 2,
    ConfedSequence = 3,
    ConfedSet = 4,
}

/// One AS_PATH segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AsSegment {
    pub kind: SegmentType,
    pub asns: Vec<u32>,
}

/// AS_PATH (RFC 4271 §5.1.2), 4-octet AS numbers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AsPath {
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    /// A path of one AS_SEQUENCE.
    pub fn from_sequence(asns: impl Into<Vec<u32>>) -> AsPath {
        let asns = asns.into();
        if asns.is_empty() {
            return AsPath::default();
        }
        AsPath {
            segments: vec![AsSegment {
                kind: SegmentType::Sequence,
                asns,
            }],
        }
    }

    /// Path length as the decision process counts it (RFC 4271 §9.1.2.2 a): an AS_SET counts
    /// as 1 whatever its size, and confederation segments do not count (RFC 5065 §5.3).
    pub fn path_len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                SegmentType::Sequence => s.asns.len(),
                SegmentType::Set => 1,
                SegmentType::ConfedSequence | SegmentType::ConfedSet => 0,
            })
            .sum()
    }

    /// How often `asn` appears in the path (for loop detection with `allow local as N`).
    pub fn count(&self, asn: u32) -> usize {
        self.segments
            .iter()
            .flat_map(|s| s.asns.iter())
            .filter(|&&a| a == asn)
            .count()
    }

    /// The AS of the neighbour the route was learned from: the first AS of a leading
    /// AS_SEQUENCE (RFC 4271 §9.1.2.2 c: MED is only compared between routes from the same
    /// neighbouring AS). `None` for an empty path (a route originated inside our AS).
    pub fn neighbor_as(&self) -> Option<u32> {
        match self.segments.first() {
            Some(AsSegment {
                kind: SegmentType::Sequence,
                asns,
            }) => asns.first().copied(),
            _ => None,
        }
    }

    /// The originating AS: the last AS of a trailing AS_SEQUENCE.
    pub fn origin_as(&self) -> Option<u32> {
        match self.segments.last() {
            Some(AsSegment {
                kind: SegmentType::Sequence,
                asns,
            }) => asns.last().copied(),
            _ => None,
        }
    }

    /// Prepends `asn` as an eBGP speaker must when advertising (RFC 4271 §5.1.2 b): into the
    /// leading AS_SEQUENCE, or a new one if the path starts with a set or the sequence is full
    /// (a segment holds at most 255 AS numbers).
    pub fn prepend(&mut self, asn: u32) {
        match self.segments.first_mut() {
            Some(seg) if seg.kind == SegmentType::Sequence && seg.asns.len() < 255 => {
                seg.asns.insert(0, asn);
            }
            _ => self.segments.insert(
                0,
                AsSegment {
                    kind: SegmentType::Sequence,
                    asns: vec![asn],
                },
            ),
        }
    }
}

/// AGGREGATOR (RFC 4271 §5.1.7), with a 4-octet AS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Aggregator {
    pub asn: u32,
    pub address: Ipv4Addr,
}

/// A standard community (RFC 1997): high 16 bits an AS, low 16 bits a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Community(pub u32);

impl Community {
    pub const NO_EXPORT: Community = Community(0xFFFF_FF01);
    pub const NO_ADVERTISE: Community = Community(0xFFFF_FF02);
    pub const NO_EXPORT_SUBCONFED: Community = Community(0xFFFF_FF03);
    /// GRACEFUL_SHUTDOWN (RFC 8326 §3): the path is about to go; prefer any other.
    pub const GRACEFUL_SHUTDOWN: Community = Community(0xFFFF_0000);

    pub fn new(asn: u16, value: u16) -> Community {
        Community((u32::from(asn) << 16) | u32::from(value))
    }
}

/// `ASN:VALUE`, as BIRD, FRR and Calico's manifests write it.
impl std::fmt::Display for Community {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.0 >> 16, self.0 & 0xffff)
    }
}

/// An extended community (RFC 4360), kept as its 8 octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExtCommunity(pub [u8; 8]);

/// A large community (RFC 8092): global administrator, local data 1, local data 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    pub global: u32,
    pub local1: u32,
    pub local2: u32,
}

/// `GLOBAL:LOCAL1:LOCAL2` (RFC 8092 §3 canonical form).
impl std::fmt::Display for LargeCommunity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.global, self.local1, self.local2)
    }
}

/// MP_REACH_NLRI (RFC 4760 §3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MpReach {
    pub afi: Afi,
    pub safi: Safi,
    /// The next hop: for IPv6 a global address, optionally followed by a link-local one
    /// (RFC 2545 §3: next-hop length 32).
    pub next_hop: IpAddr,
    pub link_local_next_hop: Option<std::net::Ipv6Addr>,
    pub nlri: Vec<IpNet>,
}

/// MP_UNREACH_NLRI (RFC 4760 §4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MpUnreach {
    pub afi: Afi,
    pub safi: Safi,
    pub withdrawn: Vec<IpNet>,
}

/// An attribute we do not interpret, kept with its flags and value as received.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawAttribute {
    pub flags: u8,
    pub type_code: u8,
    pub value: Vec<u8>,
}

/// The path attributes of one UPDATE that describe a path (everything but the NLRI carried in
/// MP_REACH/MP_UNREACH, which [`super::Update`] holds separately so that the attribute set can
/// be interned and shared by all prefixes that use it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PathAttributes {
    pub origin: Option<Origin>,
    pub as_path: Option<AsPath>,
    /// NEXT_HOP for IPv4 NLRI in the UPDATE's own NLRI field (RFC 4271 §5.1.3).
    pub next_hop: Option<Ipv4Addr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub aggregator: Option<Aggregator>,
    pub communities: Vec<Community>,
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Vec<Ipv4Addr>,
    pub ext_communities: Vec<ExtCommunity>,
    pub large_communities: Vec<LargeCommunity>,
    /// Unknown optional transitive attributes (passed on with the Partial bit set,
    /// RFC 4271 §5) and, on the receive side only, unknown non-transitive ones (dropped on
    /// export, §9.1.3).
    pub unknown: Vec<RawAttribute>,
}

/// The withdrawn routes and NLRI fields of an IPv4 UPDATE (RFC 4271 §4.3).
pub type Ipv4Prefixes = Vec<Ipv4Net>;

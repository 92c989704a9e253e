//! BGP messages (RFC 4271 §4) in decoded form.

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};

use super::attribute::{MpReach, MpUnreach, PathAttributes};
use super::capability::{Afi, Capability, Safi};
use super::{Family, AS_TRANS};

/// The message type octet of the header (RFC 4271 §4.1; ROUTE-REFRESH from RFC 2918 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    Open = 1,
    Update = 2,
    Notification = 3,
    Keepalive = 4,
    RouteRefresh = 5,
}

/// One BGP message.
///
/// UPDATE is by far the most frequent message, so it is not boxed to save an allocation
/// per message; the size difference to the other variants is accepted.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

impl Message {
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Open(_) => MessageType::Open,
            Message::Update(_) => MessageType::Update,
            Message::Notification(_) => MessageType::Notification,
            Message::Keepalive => MessageType::Keepalive,
            Message::RouteRefresh(_) => MessageType::RouteRefresh,
        }
    }
}

/// OPEN (RFC 4271 §4.2).
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+
/// |    Version    |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |     My Autonomous System      |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |           Hold Time           |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                         BGP Identifier                        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// | Opt Parm Len  |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |             Optional Parameters (variable)                    |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// Only the Capabilities optional parameter (type 2, RFC 5492) is understood; any other
/// parameter is an "Unsupported Optional Parameter" error at decode time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub version: u8,
    /// The 2-octet "My Autonomous System" field: AS_TRANS when the real AS does not fit.
    pub my_as: u16,
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// An OPEN for `asn`, always with the 4-octet AS capability (RFC 6793 §3) and
    /// `my_as` set to AS_TRANS where the AS needs four octets.
    pub fn new(
        asn: u32,
        hold_time: u16,
        bgp_id: Ipv4Addr,
        mut capabilities: Vec<Capability>,
    ) -> Open {
        if !capabilities
            .iter()
            .any(|c| matches!(c, Capability::FourOctetAs(_)))
        {
            capabilities.push(Capability::FourOctetAs(asn));
        }
        Open {
            version: 4,
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_time,
            bgp_id,
            capabilities,
        }
    }

    /// The sender's AS: from the 4-octet AS capability when present (RFC 6793 §4.1).
    pub fn asn(&self) -> u32 {
        self.four_octet_as().unwrap_or(u32::from(self.my_as))
    }

    /// The AS carried in the 4-octet AS capability, if the sender supports it.
    pub fn four_octet_as(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAs(asn) => Some(*asn),
            _ => None,
        })
    }

    /// The families the sender advertised with the multiprotocol capability. A speaker that
    /// sends no multiprotocol capability at all implicitly carries IPv4 unicast only
    /// (RFC 4760 §8 and common practice).
    pub fn families(&self) -> Vec<Family> {
        let mut mp = false;
        let mut out = Vec::new();
        for c in &self.capabilities {
            if let Capability::MultiProtocol { afi, safi } = c {
                mp = true;
                if let Some(f) = Family::from_afi_safi(*afi, *safi) {
                    if !out.contains(&f) {
                        out.push(f);
                    }
                }
            }
        }
        if !mp {
            out.push(Family::Ipv4Unicast);
        }
        out
    }

    pub fn has_capability(&self, code: u8) -> bool {
        self.capabilities.iter().any(|c| c.code() == code)
    }
}

/// UPDATE (RFC 4271 §4.3), with the MP extensions of RFC 4760 split out.
///
/// ```text
/// +-----------------------------------------------------+
/// |   Withdrawn Routes Length (2 octets)                |
/// +-----------------------------------------------------+
/// |   Withdrawn Routes (variable)                       |
/// +-----------------------------------------------------+
/// |   Total Path Attribute Length (2 octets)            |
/// +-----------------------------------------------------+
/// |   Path Attributes (variable)                        |
/// +-----------------------------------------------------+
/// |   Network Layer Reachability Information (variable) |
/// +-----------------------------------------------------+
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    /// IPv4 unicast prefixes from the Withdrawn Routes field.
    pub withdrawn: Vec<Ipv4Net>,
    /// Path attributes other than MP_REACH_NLRI / MP_UNREACH_NLRI.
    pub attributes: PathAttributes,
    /// IPv4 unicast prefixes from the NLRI field (next hop in `attributes.next_hop`).
    pub nlri: Vec<Ipv4Net>,
    pub mp_reach: Option<MpReach>,
    pub mp_unreach: Option<MpUnreach>,
    /// Set by the decoder when an attribute error was recovered from by "treat-as-withdraw"
    /// (RFC 7606 §2): every prefix this UPDATE announces must be handled as withdrawn.
    pub treat_as_withdraw: bool,
    /// ADD-PATH path identifiers (RFC 7911 §3), when the session carries them.
    pub path_ids: PathIds,
}

/// The ADD-PATH path identifiers of an UPDATE's prefixes (RFC 7911 §3), one list per prefix
/// list, index for index. A list is empty when its prefixes carry no identifiers (ADD-PATH
/// not negotiated for the family in that direction); a missing identifier reads as 0.
///
/// Kept beside the prefix lists rather than in them so that the common case, a session
/// without ADD-PATH, pays nothing and the prefix lists stay plain `IpNet`s.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct PathIds {
    /// For [`Update::withdrawn`].
    pub withdrawn: Vec<u32>,
    /// For [`Update::nlri`].
    pub nlri: Vec<u32>,
    /// For the NLRI of [`Update::mp_reach`].
    pub mp_reach: Vec<u32>,
    /// For the withdrawn routes of [`Update::mp_unreach`].
    pub mp_unreach: Vec<u32>,
}

impl PathIds {
    /// No identifiers at all.
    pub fn is_empty(&self) -> bool {
        self.withdrawn.is_empty()
            && self.nlri.is_empty()
            && self.mp_reach.is_empty()
            && self.mp_unreach.is_empty()
    }
}

/// The identifier of the `i`th prefix of a list (0 when the list carries none).
pub(crate) fn path_id_at(ids: &[u32], i: usize) -> u32 {
    ids.get(i).copied().unwrap_or(0)
}

impl Update {
    /// End-of-RIB for a family (RFC 4724 §2): for IPv4 unicast an empty UPDATE, for other
    /// families an UPDATE with only an empty MP_UNREACH_NLRI.
    pub fn end_of_rib(family: Family) -> Update {
        match family {
            Family::Ipv4Unicast => Update::default(),
            f => {
                let (afi, safi) = f.afi_safi();
                Update {
                    mp_unreach: Some(MpUnreach {
                        afi,
                        safi,
                        withdrawn: Vec::new(),
                    }),
                    ..Update::default()
                }
            }
        }
    }

    /// If this UPDATE is an End-of-RIB marker, the family it closes.
    pub fn is_end_of_rib(&self) -> Option<Family> {
        let attrs_empty = self.attributes == PathAttributes::default();
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() || self.mp_reach.is_some() {
            return None;
        }
        match &self.mp_unreach {
            None if attrs_empty => Some(Family::Ipv4Unicast),
            Some(u) if u.withdrawn.is_empty() && attrs_empty => {
                Family::from_afi_safi(u.afi, u.safi)
            }
            _ => None,
        }
    }

    /// All prefixes this UPDATE announces, of every family.
    pub fn announced(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.nlri
            .iter()
            .map(|p| IpNet::V4(*p))
            .chain(self.mp_reach.iter().flat_map(|m| m.nlri.iter().copied()))
    }

    /// All prefixes this UPDATE withdraws, of every family, with their path identifiers
    /// (0 without ADD-PATH).
    pub fn withdrawn_paths(&self) -> impl Iterator<Item = (IpNet, u32)> + '_ {
        let ids = &self.path_ids;
        let v4 = self
            .withdrawn
            .iter()
            .enumerate()
            .map(|(i, p)| (IpNet::V4(*p), path_id_at(&ids.withdrawn, i)));
        let mp = self.mp_unreach.iter().flat_map(|m| {
            m.withdrawn
                .iter()
                .enumerate()
                .map(|(i, p)| (*p, path_id_at(&ids.mp_unreach, i)))
        });
        v4.chain(mp)
    }

    /// All prefixes this UPDATE withdraws, of every family.
    pub fn withdrawn_all(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.withdrawn.iter().map(|p| IpNet::V4(*p)).chain(
            self.mp_unreach
                .iter()
                .flat_map(|m| m.withdrawn.iter().copied()),
        )
    }
}

/// NOTIFICATION (RFC 4271 §4.5): error code, subcode and data; the session closes after it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

/// ROUTE-REFRESH (RFC 2918 §3; subtype from RFC 7313 §3.2, 0 for a plain refresh).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteRefresh {
    pub afi: Afi,
    pub safi: Safi,
    pub subtype: u8,
}

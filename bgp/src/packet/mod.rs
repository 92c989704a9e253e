//! The BGP-4 wire format: typed messages, path attributes and capabilities, and their codec.
//!
//! The types in this module are the *decoded* form of what crosses the wire; they carry no
//! session state. Decoding takes a [`DecodeContext`] holding what the session negotiated
//! (4-octet AS numbers, ADD-PATH, ...) because the same bytes mean different things under
//! different capabilities (RFC 6793 §4, RFC 7911 §3). Every decode failure is a
//! [`error::DecodeError`] that maps one-to-one onto the NOTIFICATION the RFCs prescribe, or,
//! for UPDATE attribute errors, onto the RFC 7606 action (treat-as-withdraw, attribute discard)
//! that keeps the session up.
//!
//! Unknown codepoints are data, never a panic: an unknown capability is kept as
//! [`Capability::Unknown`], an unknown optional transitive attribute is carried in
//! [`PathAttributes::unknown`] and passed on with its Partial bit set.
//!
//! Codec entry points: [`frame_len`] finds message boundaries in a TCP byte stream,
//! [`Message::decode`] / [`Message::encode`] convert one message, and [`encode_updates`] /
//! [`encode_withdrawals`] pack a table's worth of prefixes into 4096-octet UPDATEs. The
//! RFC 7606 error-handling choices are listed in `update_decode.rs`.

pub mod attribute;
pub mod capability;
pub mod error;
pub mod message;

mod decode;
mod encode;
mod nlri;
mod update_decode;
mod update_pack;

pub use attribute::{
    Aggregator, AsPath, AsSegment, Community, ExtCommunity, LargeCommunity, MpReach, MpUnreach,
    Origin, PathAttributes, RawAttribute, SegmentType,
};
pub use capability::{AddPathMode, Afi, Capability, GracefulRestartFamily, Safi};
pub use error::{DecodeError, ErrorCode};
pub(crate) use message::path_id_at;
pub use message::{Message, MessageType, Notification, Open, PathIds, RouteRefresh, Update};

pub use decode::{frame_len, frame_len_within};
pub use update_pack::{
    encode_updates, encode_updates_with_ids, encode_withdrawals, encode_withdrawals_with_ids,
    EncodeError, NextHop,
};

/// Length of the fixed message header: 16-octet marker, 2-octet length, 1-octet type (RFC 4271 §4.1).
pub const HEADER_LEN: usize = 19;
/// Largest message a speaker may send without the Extended Message capability (RFC 4271 §4.1).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Largest message with the Extended Message capability on both sides (RFC 8654 §4).
pub const MAX_EXTENDED_MESSAGE_LEN: usize = 65535;
/// AS_TRANS, the 2-octet stand-in for a 4-octet AS number (RFC 6793 §9).
pub const AS_TRANS: u16 = 23456;

/// What a session negotiated that changes how bytes are read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecodeContext {
    /// Both sides advertised the 4-octet AS capability: AS_PATH and AGGREGATOR carry 4-octet
    /// AS numbers and AS4_PATH/AS4_AGGREGATOR are not used (RFC 6793 §4.1).
    pub four_octet_as: bool,
    /// We may receive ADD-PATH path identifiers for IPv4 unicast (RFC 7911 §3).
    pub add_path_ipv4: bool,
    /// We may receive ADD-PATH path identifiers for IPv6 unicast (RFC 7911 §3).
    pub add_path_ipv6: bool,
    /// We send ADD-PATH path identifiers for IPv4 unicast (we advertised Send and the peer
    /// Receive, RFC 7911 §4): every prefix we write is preceded by one.
    pub add_path_send_ipv4: bool,
    /// We send ADD-PATH path identifiers for IPv6 unicast.
    pub add_path_send_ipv6: bool,
    /// Both sides advertised Extended Message (RFC 8654): UPDATE, NOTIFICATION and
    /// ROUTE-REFRESH may be up to 65535 octets.
    pub extended_messages: bool,
}

impl DecodeContext {
    /// Whether prefixes of `family` we send carry path identifiers.
    pub fn add_path_send(&self, family: Family) -> bool {
        match family {
            Family::Ipv4Unicast => self.add_path_send_ipv4,
            Family::Ipv6Unicast => self.add_path_send_ipv6,
        }
    }

    /// The longest message this session may carry (OPEN and KEEPALIVE excepted).
    pub fn max_message_len(&self) -> usize {
        if self.extended_messages {
            MAX_EXTENDED_MESSAGE_LEN
        } else {
            MAX_MESSAGE_LEN
        }
    }
}

/// An address family the speaker carries routes for (AFI/SAFI pairs we implement).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Ipv4Unicast,
    Ipv6Unicast,
}

impl Family {
    pub fn afi_safi(self) -> (Afi, Safi) {
        match self {
            Family::Ipv4Unicast => (Afi::Ipv4, Safi::Unicast),
            Family::Ipv6Unicast => (Afi::Ipv6, Safi::Unicast),
        }
    }

    pub fn from_afi_safi(afi: Afi, safi: Safi) -> Option<Family> {
        match (afi, safi) {
            (Afi::Ipv4, Safi::Unicast) => Some(Family::Ipv4Unicast),
            (Afi::Ipv6, Safi::Unicast) => Some(Family::Ipv6Unicast),
            _ => None,
        }
    }

    pub fn of(prefix: &ipnet::IpNet) -> Family {
        match prefix {
            ipnet::IpNet::V4(_) => Family::Ipv4Unicast,
            ipnet::IpNet::V6(_) => Family::Ipv6Unicast,
        }
    }
}

//! Capabilities advertised in OPEN (RFC 5492) and the AFI/SAFI codepoints they name.

/// Address Family Identifier (IANA "Address Family Numbers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Afi {
    Ipv4,
    Ipv6,
    /// Any other codepoint, kept so that it can be logged and re-encoded.
    Unknown(u16),
}

impl Afi {
    pub fn code(self) -> u16 {
        match self {
            Afi::Ipv4 => 1,
            Afi::Ipv6 => 2,
            Afi::Unknown(c) => c,
        }
    }

    pub fn from_code(code: u16) -> Afi {
        match code {
            1 => Afi::Ipv4,
            2 => Afi::Ipv6,
            c => Afi::Unknown(c),
        }
    }
}

/// Subsequent Address Family Identifier (IANA "SAFI Values").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Safi {
    Unicast,
    Multicast,
    Unknown(u8),
}

impl Safi {
    pub fn code(self) -> u8 {
        match self {
            Safi::Unicast => 1,
            Safi::Multicast => 2,
            Safi::Unknown(c) => c,
        }
    }

    pub fn from_code(code: u8) -> Safi {
        match code {
            1 => Safi::Unicast,
            2 => Safi::Multicast,
            c => Safi::Unknown(c),
        }
    }
}

/// Per-family ADD-PATH direction (RFC 7911 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddPathMode {
    Receive,
    Send,
    Both,
    /// A Send/Receive value outside 1..=3, kept as received.
    Unknown(u8),
}

impl AddPathMode {
    pub fn code(self) -> u8 {
        match self {
            AddPathMode::Receive => 1,
            AddPathMode::Send => 2,
            AddPathMode::Both => 3,
            AddPathMode::Unknown(c) => c,
        }
    }

    pub fn from_code(code: u8) -> AddPathMode {
        match code {
            1 => AddPathMode::Receive,
            2 => AddPathMode::Send,
            3 => AddPathMode::Both,
            c => AddPathMode::Unknown(c),
        }
    }
}

/// One family in the Graceful Restart capability (RFC 4724 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GracefulRestartFamily {
    pub afi: Afi,
    pub safi: Safi,
    /// The "Forwarding State" (F) bit: forwarding was preserved across the restart.
    pub forwarding_preserved: bool,
}

/// A capability from the Capabilities optional parameter of OPEN (RFC 5492 §4).
///
/// Codes (IANA "Capability Codes"): 1 multiprotocol, 2 route refresh, 6 extended message,
/// 64 graceful restart,
/// 65 4-octet AS, 69 ADD-PATH, 70 enhanced route refresh, 73 FQDN.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Multiprotocol Extensions (RFC 4760 §8), code 1.
    MultiProtocol { afi: Afi, safi: Safi },
    /// Route Refresh (RFC 2918 §3), code 2.
    RouteRefresh,
    /// Extended Message (RFC 8654 §3), code 6: messages other than OPEN and KEEPALIVE may be
    /// up to 65535 octets once both sides advertise it.
    ExtendedMessage,
    /// Graceful Restart (RFC 4724 §3), code 64.
    GracefulRestart {
        /// The Restart State (R) bit.
        restarting: bool,
        /// The Graceful Notification (N) bit (RFC 8538 §2).
        notification: bool,
        /// Restart Time in seconds (12 bits).
        restart_time: u16,
        families: Vec<GracefulRestartFamily>,
    },
    /// Support for 4-octet AS numbers (RFC 6793 §3), code 65, carrying our real AS.
    FourOctetAs(u32),
    /// ADD-PATH (RFC 7911 §4), code 69.
    AddPath(Vec<(Afi, Safi, AddPathMode)>),
    /// Enhanced Route Refresh (RFC 7313 §3.1), code 70.
    EnhancedRouteRefresh,
    /// Hostname (draft-walton-bgp-hostname-capability), code 73, as FRR and GoBGP send it.
    Fqdn { hostname: String, domain: String },
    /// Any other capability, kept verbatim so that it can be shown and re-encoded.
    Unknown { code: u8, value: Vec<u8> },
}

impl Capability {
    /// The IANA capability code.
    pub fn code(&self) -> u8 {
        match self {
            Capability::MultiProtocol { .. } => 1,
            Capability::RouteRefresh => 2,
            Capability::ExtendedMessage => 6,
            Capability::GracefulRestart { .. } => 64,
            Capability::FourOctetAs(_) => 65,
            Capability::AddPath(_) => 69,
            Capability::EnhancedRouteRefresh => 70,
            Capability::Fqdn { .. } => 73,
            Capability::Unknown { code, .. } => *code,
        }
    }
}

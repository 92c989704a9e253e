//! The BFD Control packet (RFC 5880 §4.1): its fields, encoding, and the reception checks of
//! §6.8.6 that need nothing but the packet itself.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Vers |  Diag   |Sta|P|F|C|A|D|M|  Detect Mult  |    Length     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       My Discriminator                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      Your Discriminator                       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Desired Min TX Interval                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                   Required Min RX Interval                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Required Min Echo RX Interval                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! An optional Authentication Section follows when A is set (§4.2); this crate implements no
//! authentication, so it never writes one and the session discards packets that carry one.
//! ```
//!
//! The intervals are in microseconds on the wire, as here. Unknown diagnostic codes are data
//! ([`Diagnostic::Unknown`]); the two-bit state field has no unknown values.

use std::fmt;

/// The length of a Control packet without an Authentication Section (§4.1, "Length").
pub const CONTROL_PACKET_LEN: usize = 24;

/// The smallest Authentication Section: Auth Type and Auth Len (§4.2).
const MIN_AUTH_SECTION_LEN: usize = 2;

/// The protocol version this crate speaks (§4.1, "Version").
pub const VERSION: u8 = 1;

/// Why a received datagram is not a usable Control packet (§6.8.6: "the packet MUST be
/// discarded").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("datagram of {0} octets is shorter than a BFD Control packet (24)")]
    Truncated(usize),
    #[error("unsupported BFD version {0} (only version 1)")]
    Version(u8),
    #[error("Length field {length} is invalid for a datagram of {datagram} octets")]
    Length { length: u8, datagram: usize },
    #[error("Detect Mult is zero")]
    ZeroDetectMult,
    #[error("Multipoint (M) bit is set")]
    Multipoint,
    #[error("My Discriminator is zero")]
    ZeroMyDiscriminator,
    #[error("Your Discriminator is zero in state {0}")]
    ZeroYourDiscriminator(State),
}

/// The session state field (§4.1 "Sta", §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    AdminDown,
    Down,
    Init,
    Up,
}

impl State {
    fn from_bits(v: u8) -> State {
        match v & 0b11 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }

    fn bits(self) -> u8 {
        match self {
            State::AdminDown => 0,
            State::Down => 1,
            State::Init => 2,
            State::Up => 3,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::AdminDown => "AdminDown",
            State::Down => "Down",
            State::Init => "Init",
            State::Up => "Up",
        })
    }
}

/// The diagnostic code (§4.1 "Diag"): why the sender's session last changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Diagnostic {
    /// 0
    NoDiagnostic,
    /// 1
    ControlDetectionTimeExpired,
    /// 2
    EchoFunctionFailed,
    /// 3
    NeighborSignaledSessionDown,
    /// 4
    ForwardingPlaneReset,
    /// 5
    PathDown,
    /// 6
    ConcatenatedPathDown,
    /// 7
    AdministrativelyDown,
    /// 8
    ReverseConcatenatedPathDown,
    /// 9-31, reserved for future use: kept as received.
    Unknown(u8),
}

impl Diagnostic {
    /// The five-bit code; only the low five bits of `Unknown` go on the wire.
    pub fn code(self) -> u8 {
        match self {
            Diagnostic::NoDiagnostic => 0,
            Diagnostic::ControlDetectionTimeExpired => 1,
            Diagnostic::EchoFunctionFailed => 2,
            Diagnostic::NeighborSignaledSessionDown => 3,
            Diagnostic::ForwardingPlaneReset => 4,
            Diagnostic::PathDown => 5,
            Diagnostic::ConcatenatedPathDown => 6,
            Diagnostic::AdministrativelyDown => 7,
            Diagnostic::ReverseConcatenatedPathDown => 8,
            Diagnostic::Unknown(c) => c & 0x1f,
        }
    }

    pub fn from_code(code: u8) -> Diagnostic {
        match code & 0x1f {
            0 => Diagnostic::NoDiagnostic,
            1 => Diagnostic::ControlDetectionTimeExpired,
            2 => Diagnostic::EchoFunctionFailed,
            3 => Diagnostic::NeighborSignaledSessionDown,
            4 => Diagnostic::ForwardingPlaneReset,
            5 => Diagnostic::PathDown,
            6 => Diagnostic::ConcatenatedPathDown,
            7 => Diagnostic::AdministrativelyDown,
            8 => Diagnostic::ReverseConcatenatedPathDown,
            c => Diagnostic::Unknown(c),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Diagnostic::NoDiagnostic => f.write_str("No Diagnostic"),
            Diagnostic::ControlDetectionTimeExpired => {
                f.write_str("Control Detection Time Expired")
            }
            Diagnostic::EchoFunctionFailed => f.write_str("Echo Function Failed"),
            Diagnostic::NeighborSignaledSessionDown => {
                f.write_str("Neighbor Signaled Session Down")
            }
            Diagnostic::ForwardingPlaneReset => f.write_str("Forwarding Plane Reset"),
            Diagnostic::PathDown => f.write_str("Path Down"),
            Diagnostic::ConcatenatedPathDown => f.write_str("Concatenated Path Down"),
            Diagnostic::AdministrativelyDown => f.write_str("Administratively Down"),
            Diagnostic::ReverseConcatenatedPathDown => {
                f.write_str("Reverse Concatenated Path Down")
            }
            Diagnostic::Unknown(c) => write!(f, "Unknown ({c})"),
        }
    }
}

/// One BFD Control packet (§4.1). Field names follow the RFC; intervals are microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlPacket {
    /// Always [`VERSION`] in packets that passed [`ControlPacket::decode`].
    pub version: u8,
    pub diag: Diagnostic,
    pub state: State,
    /// P: the sender asks for verification of a connectivity or parameter change (§6.5).
    pub poll: bool,
    /// F: the answer to a Poll.
    pub final_: bool,
    /// C: the sender's BFD does not share fate with its control plane.
    pub control_plane_independent: bool,
    /// A: an Authentication Section follows (never written by [`ControlPacket::encode`]).
    pub auth_present: bool,
    /// D: the sender wishes to run Demand mode (§6.6).
    pub demand: bool,
    /// M: reserved for point-to-multipoint; always 0 after decode.
    pub multipoint: bool,
    pub detect_mult: u8,
    pub my_discriminator: u32,
    pub your_discriminator: u32,
    pub desired_min_tx_us: u32,
    pub required_min_rx_us: u32,
    pub required_min_echo_rx_us: u32,
}

impl ControlPacket {
    /// The 24 octets of the packet, Length 24: no Authentication Section, whatever
    /// `auth_present` says (this crate sends none; sessions never set A).
    pub fn encode(&self) -> [u8; CONTROL_PACKET_LEN] {
        let mut b = [0u8; CONTROL_PACKET_LEN];
        b[0] = (self.version & 0b111) << 5 | self.diag.code();
        b[1] = self.state.bits() << 6
            | u8::from(self.poll) << 5
            | u8::from(self.final_) << 4
            | u8::from(self.control_plane_independent) << 3
            | u8::from(self.auth_present) << 2
            | u8::from(self.demand) << 1
            | u8::from(self.multipoint);
        b[2] = self.detect_mult;
        b[3] = CONTROL_PACKET_LEN as u8;
        b[4..8].copy_from_slice(&self.my_discriminator.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_discriminator.to_be_bytes());
        b[12..16].copy_from_slice(&self.desired_min_tx_us.to_be_bytes());
        b[16..20].copy_from_slice(&self.required_min_rx_us.to_be_bytes());
        b[20..24].copy_from_slice(&self.required_min_echo_rx_us.to_be_bytes());
        b
    }

    /// Parses one received datagram and applies the checks of §6.8.6 that concern the
    /// packet alone, in the RFC's order. The checks that need the session (discriminator
    /// lookup, authentication in use) are the session's and the driver's.
    pub fn decode(datagram: &[u8]) -> Result<ControlPacket, PacketError> {
        let Some(b) = datagram.get(..CONTROL_PACKET_LEN) else {
            return Err(PacketError::Truncated(datagram.len()));
        };
        let word = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        // §6.8.6: "If the version number is not correct (1), the packet MUST be discarded."
        let version = b[0] >> 5;
        if version != VERSION {
            return Err(PacketError::Version(version));
        }
        let auth_present = b[1] & 0b100 != 0;
        // §6.8.6: "If the Length field is less than the minimum correct value (24 if the A bit
        // is clear, or 26 if the A bit is set), the packet MUST be discarded." and "If the
        // Length field is greater than the payload of the encapsulating protocol, the packet
        // MUST be discarded."
        let length = b[3];
        let min = if auth_present {
            CONTROL_PACKET_LEN + MIN_AUTH_SECTION_LEN
        } else {
            CONTROL_PACKET_LEN
        };
        if usize::from(length) < min || usize::from(length) > datagram.len() {
            return Err(PacketError::Length {
                length,
                datagram: datagram.len(),
            });
        }
        let packet = ControlPacket {
            version,
            diag: Diagnostic::from_code(b[0]),
            state: State::from_bits(b[1] >> 6),
            poll: b[1] & 0b10_0000 != 0,
            final_: b[1] & 0b1_0000 != 0,
            control_plane_independent: b[1] & 0b1000 != 0,
            auth_present,
            demand: b[1] & 0b10 != 0,
            multipoint: b[1] & 0b1 != 0,
            detect_mult: b[2],
            my_discriminator: word(4),
            your_discriminator: word(8),
            desired_min_tx_us: word(12),
            required_min_rx_us: word(16),
            required_min_echo_rx_us: word(20),
        };
        // §6.8.6: "If the Detect Mult field is zero, the packet MUST be discarded."
        if packet.detect_mult == 0 {
            return Err(PacketError::ZeroDetectMult);
        }
        // §6.8.6: "If the Multipoint (M) bit is nonzero, the packet MUST be discarded."
        if packet.multipoint {
            return Err(PacketError::Multipoint);
        }
        // §6.8.6: "If the My Discriminator field is zero, the packet MUST be discarded."
        if packet.my_discriminator == 0 {
            return Err(PacketError::ZeroMyDiscriminator);
        }
        // §6.8.6: "If the Your Discriminator field is zero and the State field is not Down or
        // AdminDown, the packet MUST be discarded."
        if packet.your_discriminator == 0 && !matches!(packet.state, State::Down | State::AdminDown)
        {
            return Err(PacketError::ZeroYourDiscriminator(packet.state));
        }
        Ok(packet)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    /// BIRD's first packet of a session: Down, no diagnostic, multiplier 3, 1 s slow start
    /// (§6.8.3), 300 ms required receive interval, Your Discriminator still unknown.
    const DOWN: [u8; 24] = [
        0x20, 0x40, 0x03, 0x18, // v1, diag 0, Down, mult 3, length 24
        0x12, 0x34, 0x56, 0x78, // my discriminator
        0x00, 0x00, 0x00, 0x00, // your discriminator
        0x00, 0x0f, 0x42, 0x40, // desired min tx 1,000,000 us
        0x00, 0x04, 0x93, 0xe0, // required min rx 300,000 us
        0x00, 0x00, 0x00, 0x00, // required min echo rx 0
    ];

    fn down() -> ControlPacket {
        ControlPacket {
            version: 1,
            diag: Diagnostic::NoDiagnostic,
            state: State::Down,
            poll: false,
            final_: false,
            control_plane_independent: false,
            auth_present: false,
            demand: false,
            multipoint: false,
            detect_mult: 3,
            my_discriminator: 0x1234_5678,
            your_discriminator: 0,
            desired_min_tx_us: 1_000_000,
            required_min_rx_us: 300_000,
            required_min_echo_rx_us: 0,
        }
    }

    #[test]
    fn golden_down_both_ways() {
        assert_eq!(ControlPacket::decode(&DOWN).unwrap(), down());
        assert_eq!(down().encode(), DOWN);
    }

    #[test]
    fn golden_up_with_poll_and_diag() {
        // Up (3 << 6), Poll, diag 1 (detection time expired), discriminators both known.
        let bytes: [u8; 24] = [
            0x21, 0xe0, 0x05, 0x18, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01,
            0x86, 0xa0, 0x00, 0x01, 0x86, 0xa0, 0x00, 0x00, 0x00, 0x00,
        ];
        let p = ControlPacket {
            diag: Diagnostic::ControlDetectionTimeExpired,
            state: State::Up,
            poll: true,
            detect_mult: 5,
            my_discriminator: 1,
            your_discriminator: 2,
            desired_min_tx_us: 100_000,
            required_min_rx_us: 100_000,
            ..down()
        };
        assert_eq!(ControlPacket::decode(&bytes).unwrap(), p);
        assert_eq!(p.encode(), bytes);
        // Final and C bits.
        let mut f = bytes;
        f[1] = 0xd8;
        let q = ControlPacket::decode(&f).unwrap();
        assert!(q.final_ && q.control_plane_independent && !q.poll);
    }

    #[test]
    fn unknown_diagnostic_is_data() {
        let mut b = DOWN;
        b[0] = 0x20 | 0x1f;
        let p = ControlPacket::decode(&b).unwrap();
        assert_eq!(p.diag, Diagnostic::Unknown(31));
        assert_eq!(p.encode(), b);
    }

    #[test]
    fn reception_checks() {
        let with = |f: &dyn Fn(&mut [u8; 24])| {
            let mut b = DOWN;
            f(&mut b);
            ControlPacket::decode(&b)
        };
        assert_eq!(
            ControlPacket::decode(&DOWN[..23]),
            Err(PacketError::Truncated(23))
        );
        assert_eq!(with(&|b| b[0] = 0x40), Err(PacketError::Version(2)));
        assert!(matches!(
            with(&|b| b[3] = 23),
            Err(PacketError::Length { length: 23, .. })
        ));
        // Length beyond the datagram.
        assert!(matches!(
            with(&|b| b[3] = 25),
            Err(PacketError::Length { length: 25, .. })
        ));
        // A set needs at least 26 octets.
        assert!(matches!(
            with(&|b| b[1] |= 0b100),
            Err(PacketError::Length { length: 24, .. })
        ));
        assert_eq!(with(&|b| b[2] = 0), Err(PacketError::ZeroDetectMult));
        assert_eq!(with(&|b| b[1] |= 1), Err(PacketError::Multipoint));
        assert_eq!(
            with(&|b| b[4..8].fill(0)),
            Err(PacketError::ZeroMyDiscriminator)
        );
        assert_eq!(
            with(&|b| b[1] = 0x80),
            Err(PacketError::ZeroYourDiscriminator(State::Init))
        );
        // Your Discriminator zero is fine in AdminDown.
        assert_eq!(with(&|b| b[1] = 0).unwrap().state, State::AdminDown);
        // Trailing octets beyond Length (padding) are ignored.
        let mut long = DOWN.to_vec();
        long.extend_from_slice(&[0xff; 8]);
        assert_eq!(ControlPacket::decode(&long).unwrap(), down());
    }

    #[test]
    fn authentication_section_is_accepted_by_the_codec() {
        // A set, Length 28 with a 4-octet section: the codec takes it, the session drops it.
        let mut b = DOWN.to_vec();
        b[1] |= 0b100;
        b[3] = 28;
        b.extend_from_slice(&[1, 4, 0, 0]);
        assert!(ControlPacket::decode(&b).unwrap().auth_present);
    }

    fn state() -> impl Strategy<Value = State> {
        prop_oneof![
            Just(State::AdminDown),
            Just(State::Down),
            Just(State::Init),
            Just(State::Up)
        ]
    }

    prop_compose! {
        fn valid_packet()(
            diag in 0u8..32,
            state in state(),
            poll: bool, final_: bool, cpi: bool, demand: bool,
            detect_mult in 1u8..,
            my in 1u32..,
            your in 1u32..,
            your_zero: bool,
            tx: u32, rx: u32, echo: u32,
        ) -> ControlPacket {
            let down = matches!(state, State::Down | State::AdminDown);
            ControlPacket {
                version: 1,
                diag: Diagnostic::from_code(diag),
                state,
                poll,
                final_,
                control_plane_independent: cpi,
                auth_present: false,
                demand,
                multipoint: false,
                detect_mult,
                my_discriminator: my,
                your_discriminator: if your_zero && down { 0 } else { your },
                desired_min_tx_us: tx,
                required_min_rx_us: rx,
                required_min_echo_rx_us: echo,
            }
        }
    }

    proptest! {
        #[test]
        fn round_trip(p in valid_packet()) {
            prop_assert_eq!(ControlPacket::decode(&p.encode()), Ok(p));
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = ControlPacket::decode(&bytes);
        }
    }
}

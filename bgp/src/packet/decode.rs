//! Decoding of whole messages: header checks (RFC 4271 §6.1), OPEN with capabilities
//! (§6.2, RFC 5492, RFC 9072), NOTIFICATION, KEEPALIVE and ROUTE-REFRESH (RFC 2918, RFC 7313).
//! UPDATE bodies are in [`super::update_decode`].
//!
//! OPEN checks that need configuration — Bad Peer AS (2/2), Unsupported Capability (2/7), an
//! unacceptable hold time by local policy, collision detection — are the session's; the
//! codec only rejects what is wrong whoever the peer is. ROUTE-REFRESH subtypes other than
//! 0..=2 are returned as received (RFC 7313 §5 says to ignore such a message).
//!
//! nom does the field-level reading; its errors never leave this module: every failure is
//! turned at the point of detection into the [`DecodeError`] whose NOTIFICATION the RFCs
//! prescribe for that field.

use std::net::Ipv4Addr;

use nom::bytes::complete::take;
use nom::number::complete::{be_u16, be_u32, be_u8};
use nom::Parser;

use super::capability::{AddPathMode, Afi, Capability, GracefulRestartFamily, Safi};
use super::error::{header, open, DecodeError, ErrorCode};
use super::message::{Message, MessageType, Notification, Open, RouteRefresh};
use super::{update_decode, DecodeContext, HEADER_LEN, MAX_MESSAGE_LEN};

/// nom result with the unit error: the codec maps failures itself, so nom need not build
/// error values.
pub(crate) type PResult<'a, T> = nom::IResult<&'a [u8], T, ()>;

/// Largest BGP version we speak, sent in "Unsupported Version Number" (RFC 4271 §6.2).
const BGP_VERSION: u8 = 4;

/// Minimum message length per type (RFC 4271 §4.2–4.5, RFC 2918 §3).
fn min_len(kind: MessageType) -> usize {
    match kind {
        MessageType::Open => 29,
        MessageType::Update => 23,
        MessageType::Notification => 21,
        MessageType::Keepalive => 19,
        MessageType::RouteRefresh => 23,
    }
}

impl MessageType {
    pub fn from_code(code: u8) -> Option<MessageType> {
        match code {
            1 => Some(MessageType::Open),
            2 => Some(MessageType::Update),
            3 => Some(MessageType::Notification),
            4 => Some(MessageType::Keepalive),
            5 => Some(MessageType::RouteRefresh),
            _ => None,
        }
    }
}

fn bad_length(len: u16, why: &str) -> DecodeError {
    DecodeError::new(
        ErrorCode::MessageHeader,
        header::BAD_MESSAGE_LENGTH,
        len.to_be_bytes().to_vec(),
        format!("bad message length {len}: {why}"),
    )
}

/// Checks the header at the start of a byte stream and says how long the message is.
///
/// Returns `Ok(None)` until the 19 header octets are there. Then it validates the marker
/// (all ones, else Connection Not Synchronized), the length (19..=4096 and the per-type
/// minimum, else Bad Message Length carrying the length field) and the type (1..=5, else Bad
/// Message Type carrying the type octet), in that order (RFC 4271 §6.1), and returns the
/// length of the whole message including the header.
///
/// KEEPALIVE must be exactly 19 octets. ROUTE-REFRESH must be at least 23 here; a longer one
/// is reported by [`Message::decode`], because RFC 7313 §5 gives a different error for the
/// enhanced subtypes.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    frame_len_within(buf, MAX_MESSAGE_LEN)
}

/// [`frame_len`] for a session whose messages may be up to `max` octets: 4096, or 65535
/// with the Extended Message capability on both sides (RFC 8654 §4), except that OPEN and
/// KEEPALIVE never exceed 4096 (§4: "MUST NOT").
pub fn frame_len_within(buf: &[u8], max: usize) -> Result<Option<usize>, DecodeError> {
    let Ok((_, (marker, len, kind))) = (take::<_, _, ()>(16usize), be_u16, be_u8).parse(buf) else {
        return Ok(None);
    };
    if marker.iter().any(|&b| b != 0xff) {
        return Err(DecodeError::new(
            ErrorCode::MessageHeader,
            header::CONNECTION_NOT_SYNCHRONIZED,
            Vec::new(),
            "marker is not all ones",
        ));
    }
    let length = usize::from(len);
    if length < HEADER_LEN || length > max.max(MAX_MESSAGE_LEN) {
        return Err(bad_length(
            len,
            if length < HEADER_LEN {
                "shorter than the 19-octet header"
            } else {
                "outside 19..=4096 (no Extended Message capability, RFC 8654)"
            },
        ));
    }
    let Some(message_type) = MessageType::from_code(kind) else {
        return Err(DecodeError::new(
            ErrorCode::MessageHeader,
            header::BAD_MESSAGE_TYPE,
            vec![kind],
            format!("unknown message type {kind}"),
        ));
    };
    if length < min_len(message_type) {
        return Err(bad_length(len, "shorter than the minimum for its type"));
    }
    if length > MAX_MESSAGE_LEN && message_type == MessageType::Open {
        return Err(bad_length(
            len,
            "an OPEN is at most 4096 octets (RFC 8654 §4)",
        ));
    }
    if message_type == MessageType::Keepalive && length != HEADER_LEN {
        return Err(bad_length(len, "KEEPALIVE is exactly 19 octets"));
    }
    Ok(Some(length))
}

impl Message {
    /// Decodes one whole message (header included), as delimited by [`frame_len`].
    ///
    /// An `Err` carries the NOTIFICATION to send before closing the session. UPDATE
    /// attribute errors that RFC 7606 lets the session survive come back as `Ok` with
    /// [`super::Update::treat_as_withdraw`] set, or with the bad attribute discarded.
    pub fn decode(msg: &[u8], ctx: &DecodeContext) -> Result<Message, DecodeError> {
        let Some(length) = frame_len_within(msg, ctx.max_message_len())? else {
            return Err(bad_length(
                u16::try_from(msg.len()).unwrap_or(u16::MAX),
                "shorter than the header",
            ));
        };
        if msg.len() != length {
            // The caller framed wrongly; the length field disagrees with what we were given.
            return Err(bad_length(
                u16::try_from(length).unwrap_or(u16::MAX),
                "length field disagrees with the message",
            ));
        }
        let body = &msg[HEADER_LEN..];
        match MessageType::from_code(msg[HEADER_LEN - 1]) {
            Some(MessageType::Open) => decode_open(body, length).map(Message::Open),
            Some(MessageType::Update) => {
                update_decode::decode_update(body, ctx).map(Message::Update)
            }
            Some(MessageType::Notification) => Ok(Message::Notification(Notification {
                code: body.first().copied().unwrap_or(0),
                subcode: body.get(1).copied().unwrap_or(0),
                data: body.get(2..).unwrap_or(&[]).to_vec(),
            })),
            Some(MessageType::Keepalive) => Ok(Message::Keepalive),
            Some(MessageType::RouteRefresh) => decode_route_refresh(msg, body),
            // frame_len already rejected unknown types.
            None => Err(DecodeError::new(
                ErrorCode::MessageHeader,
                header::BAD_MESSAGE_TYPE,
                vec![msg[HEADER_LEN - 1]],
                "unknown message type",
            )),
        }
    }
}

/// ROUTE-REFRESH (RFC 2918 §3): AFI, subtype (RFC 7313 §3.2, "Reserved" in RFC 2918), SAFI.
/// Subtypes other than 0..=2 are returned as is: RFC 7313 §5 says to ignore such a message,
/// which is the session's decision.
fn decode_route_refresh(msg: &[u8], body: &[u8]) -> Result<Message, DecodeError> {
    let parsed: PResult<'_, (u16, u8, u8)> = (be_u16, be_u8, be_u8).parse(body);
    let Ok((rest, (afi, subtype, safi))) = parsed else {
        return Err(bad_length(
            u16::try_from(msg.len()).unwrap_or(u16::MAX),
            "ROUTE-REFRESH shorter than 23 octets",
        ));
    };
    if !rest.is_empty() {
        if matches!(subtype, 1 | 2) {
            // RFC 7313 §5: Invalid Message Length, data = the complete message.
            return Err(DecodeError::new(
                ErrorCode::RouteRefresh,
                1,
                msg.to_vec(),
                "enhanced ROUTE-REFRESH longer than 23 octets",
            ));
        }
        return Err(bad_length(
            u16::try_from(msg.len()).unwrap_or(u16::MAX),
            "ROUTE-REFRESH is exactly 23 octets",
        ));
    }
    Ok(Message::RouteRefresh(RouteRefresh {
        afi: Afi::from_code(afi),
        safi: Safi::from_code(safi),
        subtype,
    }))
}

fn open_error(subcode: u8, data: Vec<u8>, reason: impl Into<String>) -> DecodeError {
    DecodeError::new(ErrorCode::Open, subcode, data, reason)
}

/// A malformed optional parameter or capability: RFC 4271 and RFC 5492 name no subcode for
/// it, so like BIRD and GoBGP we send OPEN Message Error / unspecific (0).
fn malformed_open(reason: impl Into<String>) -> DecodeError {
    open_error(0, Vec::new(), reason)
}

/// OPEN (RFC 4271 §4.2, checks of §6.2).
fn decode_open(body: &[u8], length: usize) -> Result<Open, DecodeError> {
    let fixed: PResult<'_, (u8, u16, u16, u32, u8)> =
        (be_u8, be_u16, be_u16, be_u32, be_u8).parse(body);
    let Ok((params, (version, my_as, hold_time, bgp_id, opt_len))) = fixed else {
        return Err(bad_length(
            u16::try_from(length).unwrap_or(u16::MAX),
            "OPEN shorter than 29 octets",
        ));
    };
    if version != BGP_VERSION {
        return Err(open_error(
            open::UNSUPPORTED_VERSION,
            u16::from(BGP_VERSION).to_be_bytes().to_vec(),
            format!("unsupported BGP version {version}"),
        ));
    }
    if hold_time == 1 || hold_time == 2 {
        return Err(open_error(
            open::UNACCEPTABLE_HOLD_TIME,
            Vec::new(),
            format!("hold time {hold_time} is neither 0 nor at least 3"),
        ));
    }
    // RFC 6286 §2.1: the identifier is any non-zero 4-octet value.
    if bgp_id == 0 {
        return Err(open_error(
            open::BAD_BGP_IDENTIFIER,
            Vec::new(),
            "BGP identifier 0.0.0.0",
        ));
    }
    let capabilities = decode_optional_parameters(params, opt_len, length)?;
    Ok(Open {
        version,
        my_as,
        hold_time,
        bgp_id: Ipv4Addr::from(bgp_id),
        capabilities,
    })
}

/// The optional parameters: the classic form (1-octet length, 1-octet parameter lengths) or,
/// when the length octet and the first parameter type are both 255, the extended form of
/// RFC 9072 §2 (2-octet lengths throughout).
fn decode_optional_parameters(
    params: &[u8],
    opt_len: u8,
    length: usize,
) -> Result<Vec<Capability>, DecodeError> {
    let extended = opt_len == 255 && params.first() == Some(&255);
    let (params, wide) = if extended {
        let header: PResult<'_, (u8, u16)> = (be_u8, be_u16).parse(params);
        let Ok((rest, (_, ext_len))) = header else {
            return Err(malformed_open(
                "truncated extended optional parameters length",
            ));
        };
        if rest.len() < usize::from(ext_len) {
            return Err(malformed_open(
                "extended optional parameters shorter than their stated length",
            ));
        }
        if rest.len() != usize::from(ext_len) {
            return Err(bad_length(
                u16::try_from(length).unwrap_or(u16::MAX),
                "data after the extended optional parameters",
            ));
        }
        (rest, true)
    } else {
        // Parameters shorter than their stated length: OPEN Message Error / unspecific, as
        // BIRD (`bgp_read_options`) and FRR (`bgp_open_option_parse`) answer. Octets after
        // the stated parameters make the message itself too long: Bad Message Length
        // (RFC 4271 §6.1), where BIRD ignores them.
        if params.len() < usize::from(opt_len) {
            return Err(malformed_open(
                "optional parameters shorter than their stated length",
            ));
        }
        if params.len() != usize::from(opt_len) {
            return Err(bad_length(
                u16::try_from(length).unwrap_or(u16::MAX),
                "data after the optional parameters",
            ));
        }
        (params, false)
    };

    let mut capabilities = Vec::new();
    let mut rest = params;
    while !rest.is_empty() {
        let parsed: PResult<'_, (u8, &[u8])> = if wide {
            (be_u8, nom::multi::length_data(be_u16)).parse(rest)
        } else {
            (be_u8, nom::multi::length_data(be_u8)).parse(rest)
        };
        let Ok((next, (kind, value))) = parsed else {
            return Err(malformed_open("truncated optional parameter"));
        };
        rest = next;
        // RFC 5492 §4: only parameter type 2 (Capabilities) exists today.
        if kind != 2 {
            return Err(open_error(
                open::UNSUPPORTED_OPTIONAL_PARAMETER,
                Vec::new(),
                format!("unsupported optional parameter type {kind}"),
            ));
        }
        decode_capabilities(value, &mut capabilities)?;
    }
    Ok(capabilities)
}

/// The capability TLVs of one Capabilities parameter (RFC 5492 §4).
fn decode_capabilities(mut buf: &[u8], out: &mut Vec<Capability>) -> Result<(), DecodeError> {
    while !buf.is_empty() {
        let parsed: PResult<'_, (u8, &[u8])> = (be_u8, nom::multi::length_data(be_u8)).parse(buf);
        let Ok((next, (code, value))) = parsed else {
            return Err(malformed_open("truncated capability"));
        };
        buf = next;
        out.push(decode_capability(code, value)?);
    }
    Ok(())
}

fn decode_capability(code: u8, value: &[u8]) -> Result<Capability, DecodeError> {
    let malformed = || malformed_open(format!("malformed capability {code}"));
    Ok(match code {
        1 => {
            let parsed: PResult<'_, (u16, u8, u8)> = (be_u16, be_u8, be_u8).parse(value);
            match parsed {
                Ok(([], (afi, _reserved, safi))) => Capability::MultiProtocol {
                    afi: Afi::from_code(afi),
                    safi: Safi::from_code(safi),
                },
                _ => return Err(malformed()),
            }
        }
        // RFC 2918 §3: length 0; anything after is ignored, as BIRD does.
        2 => Capability::RouteRefresh,
        // RFC 8654 §3: length 0; likewise.
        6 => Capability::ExtendedMessage,
        64 => {
            let parsed: PResult<'_, u16> = be_u16(value);
            let Ok((mut rest, flags_time)) = parsed else {
                return Err(malformed());
            };
            if rest.len() % 4 != 0 {
                return Err(malformed());
            }
            let mut families = Vec::with_capacity(rest.len() / 4);
            while let Ok((next, (afi, safi, flags))) = (be_u16::<_, ()>, be_u8, be_u8).parse(rest) {
                families.push(GracefulRestartFamily {
                    afi: Afi::from_code(afi),
                    safi: Safi::from_code(safi),
                    forwarding_preserved: flags & 0x80 != 0,
                });
                rest = next;
            }
            Capability::GracefulRestart {
                restarting: flags_time & 0x8000 != 0,
                notification: flags_time & 0x4000 != 0,
                restart_time: flags_time & 0x0fff,
                families,
            }
        }
        65 => match be_u32::<_, ()>(value) {
            Ok(([], asn)) => Capability::FourOctetAs(asn),
            _ => return Err(malformed()),
        },
        69 => {
            if value.len() % 4 != 0 {
                return Err(malformed());
            }
            let mut families = Vec::with_capacity(value.len() / 4);
            let mut rest = value;
            while let Ok((next, (afi, safi, mode))) = (be_u16::<_, ()>, be_u8, be_u8).parse(rest) {
                families.push((
                    Afi::from_code(afi),
                    Safi::from_code(safi),
                    AddPathMode::from_code(mode),
                ));
                rest = next;
            }
            Capability::AddPath(families)
        }
        70 => Capability::EnhancedRouteRefresh,
        73 => {
            let parsed: PResult<'_, (&[u8], &[u8])> = (
                nom::multi::length_data(be_u8),
                nom::multi::length_data(be_u8),
            )
                .parse(value);
            match parsed {
                Ok((_, (host, domain))) => Capability::Fqdn {
                    hostname: String::from_utf8_lossy(host).into_owned(),
                    domain: String::from_utf8_lossy(domain).into_owned(),
                },
                // A hostname we cannot read is not worth a session: keep it verbatim.
                Err(_) => Capability::Unknown {
                    code,
                    value: value.to_vec(),
                },
            }
        }
        _ => Capability::Unknown {
            code,
            value: value.to_vec(),
        },
    })
}

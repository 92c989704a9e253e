//! Prefix encoding shared by the Withdrawn Routes and NLRI fields (RFC 4271 §4.3) and by
//! MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 4760 §5): a length octet in bits followed by the
//! fewest octets that hold that many bits.
//!
//! Host bits (bits past the prefix length in the last octet) are *masked* on decode, as BIRD
//! does, rather than rejected: RFC 4271 §4.3 says only that trailing bits are "irrelevant",
//! so a speaker that leaves garbage there still sends a well-formed prefix.
//!
//! With ADD-PATH (RFC 7911 §3) each prefix is preceded by a 4-octet Path Identifier; the
//! decoder collects them into a list beside the prefixes ([`super::PathIds`]) and the
//! encoders write them from one.

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::BufMut;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Why a prefix list could not be read; the caller picks the NOTIFICATION (RFC 4271 §6.3
/// Invalid Network Field for the plain fields, RFC 4760 §7 Optional Attribute Error for the
/// MP attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrefixError {
    /// The length octet exceeds the address width.
    TooLong(u8),
    /// The field ends in the middle of a prefix (or of its path identifier).
    Truncated,
}

/// Octets needed for `bits` bits of prefix.
#[inline]
pub(crate) fn prefix_octets(bits: u8) -> usize {
    usize::from(bits).div_ceil(8)
}

/// Reads every prefix in `buf` as IPv4, appending to `out`; with `ids` (ADD-PATH), each
/// prefix's path identifier is appended there.
pub(crate) fn decode_v4(
    mut buf: &[u8],
    mut ids: Option<&mut Vec<u32>>,
    out: &mut Vec<Ipv4Net>,
) -> Result<(), PrefixError> {
    while !buf.is_empty() {
        if let Some(ids) = ids.as_deref_mut() {
            let (id, rest) = buf.split_first_chunk::<4>().ok_or(PrefixError::Truncated)?;
            ids.push(u32::from_be_bytes(*id));
            buf = rest;
        }
        let (&bits, rest) = buf.split_first().ok_or(PrefixError::Truncated)?;
        if bits > 32 {
            return Err(PrefixError::TooLong(bits));
        }
        let n = prefix_octets(bits);
        let body = rest.get(..n).ok_or(PrefixError::Truncated)?;
        let mut octets = [0u8; 4];
        octets[..n].copy_from_slice(body);
        let raw = u32::from_be_bytes(octets);
        let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
        let net = Ipv4Net::new(Ipv4Addr::from(raw & mask), bits)
            .map_err(|_| PrefixError::TooLong(bits))?;
        out.push(net);
        buf = &rest[n..];
    }
    Ok(())
}

/// Reads every prefix in `buf` as IPv6, appending to `out` (and identifiers to `ids`).
pub(crate) fn decode_v6(
    mut buf: &[u8],
    mut ids: Option<&mut Vec<u32>>,
    out: &mut Vec<Ipv6Net>,
) -> Result<(), PrefixError> {
    while !buf.is_empty() {
        if let Some(ids) = ids.as_deref_mut() {
            let (id, rest) = buf.split_first_chunk::<4>().ok_or(PrefixError::Truncated)?;
            ids.push(u32::from_be_bytes(*id));
            buf = rest;
        }
        let (&bits, rest) = buf.split_first().ok_or(PrefixError::Truncated)?;
        if bits > 128 {
            return Err(PrefixError::TooLong(bits));
        }
        let n = prefix_octets(bits);
        let body = rest.get(..n).ok_or(PrefixError::Truncated)?;
        let mut octets = [0u8; 16];
        octets[..n].copy_from_slice(body);
        let raw = u128::from_be_bytes(octets);
        let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
        let net = Ipv6Net::new(Ipv6Addr::from(raw & mask), bits)
            .map_err(|_| PrefixError::TooLong(bits))?;
        out.push(net);
        buf = &rest[n..];
    }
    Ok(())
}

/// Octets one prefix takes on the wire (without path identifier).
#[inline]
pub(crate) fn encoded_len(prefix: &IpNet) -> usize {
    1 + prefix_octets(prefix.prefix_len())
}

/// Writes one IPv4 prefix; host bits are cleared so that what we send is canonical.
#[inline]
pub(crate) fn encode_v4(prefix: &Ipv4Net, out: &mut impl BufMut) {
    let bits = prefix.prefix_len();
    out.put_u8(bits);
    let octets = prefix.network().octets();
    out.put_slice(&octets[..prefix_octets(bits)]);
}

/// Writes one IPv6 prefix; host bits are cleared so that what we send is canonical.
#[inline]
pub(crate) fn encode_v6(prefix: &Ipv6Net, out: &mut impl BufMut) {
    let bits = prefix.prefix_len();
    out.put_u8(bits);
    let octets = prefix.network().octets();
    out.put_slice(&octets[..prefix_octets(bits)]);
}

/// Writes one prefix of either family.
#[inline]
pub(crate) fn encode(prefix: &IpNet, out: &mut impl BufMut) {
    match prefix {
        IpNet::V4(p) => encode_v4(p, out),
        IpNet::V6(p) => encode_v6(p, out),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn host_bits_are_masked() {
        let mut out = Vec::new();
        // 10.1.2.3/24 with a stray host octet is not possible (3 octets), but /23 with the
        // low bit of the third octet set is.
        decode_v4(&[23, 10, 1, 3], None, &mut out).unwrap();
        assert_eq!(out, vec!["10.1.2.0/23".parse::<Ipv4Net>().unwrap()]);
    }

    #[test]
    fn default_route_and_host_routes() {
        let mut out = Vec::new();
        decode_v4(&[0, 32, 192, 0, 2, 1], None, &mut out).unwrap();
        assert_eq!(
            out,
            vec![
                "0.0.0.0/0".parse::<Ipv4Net>().unwrap(),
                "192.0.2.1/32".parse().unwrap()
            ]
        );
        let mut v6 = Vec::new();
        decode_v6(&[128; 17], None, &mut v6).unwrap();
        assert_eq!(v6[0].prefix_len(), 128);
    }

    #[test]
    fn errors() {
        let mut out = Vec::new();
        assert_eq!(
            decode_v4(&[33, 1, 2, 3, 4, 5], None, &mut out),
            Err(PrefixError::TooLong(33))
        );
        assert_eq!(
            decode_v4(&[24, 10, 1], None, &mut out),
            Err(PrefixError::Truncated)
        );
        assert_eq!(
            decode_v4(&[0, 0, 0], Some(&mut Vec::new()), &mut out),
            Err(PrefixError::Truncated)
        );
        let mut v6 = Vec::new();
        assert_eq!(
            decode_v6(&[129], None, &mut v6),
            Err(PrefixError::TooLong(129))
        );
    }

    #[test]
    fn add_path_identifiers_are_read_beside_the_prefixes() {
        let mut out = Vec::new();
        let mut ids = Vec::new();
        decode_v4(
            &[0, 0, 0, 7, 8, 10, 0, 0, 1, 0, 8, 10],
            Some(&mut ids),
            &mut out,
        )
        .unwrap();
        let ten: Ipv4Net = "10.0.0.0/8".parse().unwrap();
        assert_eq!(out, vec![ten, ten]);
        assert_eq!(ids, vec![7, 256]);
        let mut v6 = Vec::new();
        let mut ids = Vec::new();
        decode_v6(&[0, 0, 0, 9, 0], Some(&mut ids), &mut v6).unwrap();
        assert_eq!((v6.len(), ids), (1, vec![9]));
    }
}

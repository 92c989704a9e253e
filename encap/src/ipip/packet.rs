//! Pure packet handling of the userspace IP-in-IP data path (RFC 2003).
//!
//! Outbound, the packet the kernel hands us on the TUN device is the inner IPv4 packet; we only
//! pick the outer destination (the raw socket's kernel side builds the outer header, protocol
//! 4, with the source address the underlay route selects). Inbound, a raw socket of protocol 4
//! delivers the whole outer packet, header included (raw(7)); we check it, check that it comes
//! from a known node and hand back the inner packet for the TUN device.
//!
//! Nothing here trusts the bytes: every length is checked and a bad packet is a [`DropReason`],
//! never a panic.

use std::net::Ipv4Addr;

use super::table::RemoteBlockTable;

/// IANA protocol number of IP-in-IP ("IPv4 encapsulation", RFC 2003 §3).
pub const IPPROTO_IPIP: u8 = 4;
/// Size of an IPv4 header without options.
pub const IPV4_MIN_HEADER: usize = 20;

/// Why a packet was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not an IPv4 packet (IPv6 neighbour discovery on the TUN device, garbage).
    NotIpv4,
    /// Shorter than its headers claim.
    Truncated,
    /// Outbound: no remote block covers the inner destination.
    NoRoute(Ipv4Addr),
    /// Inbound: the outer protocol is not 4.
    NotIpip(u8),
    /// Inbound: the outer source is not a node we know.
    UnknownSource(Ipv4Addr),
}

/// A checked view of an IPv4 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header {
    pub header_len: usize,
    pub total_len: usize,
    pub protocol: u8,
    pub source: Ipv4Addr,
    pub destination: Ipv4Addr,
}

/// Parses and checks the IPv4 header at the start of `pkt` (RFC 791 §3.1).
pub fn parse_ipv4(pkt: &[u8]) -> Result<Ipv4Header, DropReason> {
    let first = *pkt.first().ok_or(DropReason::Truncated)?;
    if first >> 4 != 4 {
        return Err(DropReason::NotIpv4);
    }
    if pkt.len() < IPV4_MIN_HEADER {
        return Err(DropReason::Truncated);
    }
    let header_len = usize::from(first & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
    if header_len < IPV4_MIN_HEADER || total_len < header_len || total_len > pkt.len() {
        return Err(DropReason::Truncated);
    }
    Ok(Ipv4Header {
        header_len,
        total_len,
        protocol: pkt[9],
        source: Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]),
        destination: Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]),
    })
}

/// Outbound: the inner packet read from the TUN device and the remote node to send it to.
/// Returns the packet trimmed to its IPv4 total length.
pub fn outbound<'a>(
    inner: &'a [u8],
    table: &RemoteBlockTable,
) -> Result<(&'a [u8], Ipv4Addr), DropReason> {
    let hdr = parse_ipv4(inner)?;
    let node = table
        .lookup(hdr.destination)
        .ok_or(DropReason::NoRoute(hdr.destination))?;
    Ok((&inner[..hdr.total_len], node))
}

/// Inbound: the outer packet read from the raw socket; returns the inner packet for the TUN
/// device and the node it came from.
pub fn inbound<'a>(
    outer: &'a [u8],
    table: &RemoteBlockTable,
) -> Result<(&'a [u8], Ipv4Addr), DropReason> {
    let hdr = parse_ipv4(outer)?;
    if hdr.protocol != IPPROTO_IPIP {
        return Err(DropReason::NotIpip(hdr.protocol));
    }
    if !table.is_known_node(hdr.source) {
        return Err(DropReason::UnknownSource(hdr.source));
    }
    let inner = &outer[hdr.header_len..hdr.total_len];
    let inner_hdr = parse_ipv4(inner)?;
    Ok((&inner[..inner_hdr.total_len], hdr.source))
}

/// Builds an IPv4 header (no options, DF clear, TTL 64) in front of `payload`, with its
/// checksum (RFC 1071). Used by tests and benchmarks to fabricate packets; the data path lets
/// the kernel build outer headers.
pub fn build_ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let total = IPV4_MIN_HEADER + payload.len();
    let total16 = u16::try_from(total).unwrap_or(u16::MAX);
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&total16.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 64, protocol, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let sum = checksum(&p);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::super::table::RemoteNode;
    use super::*;

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn table() -> RemoteBlockTable {
        RemoteBlockTable::new(&[RemoteNode {
            node_ip: a("10.0.0.2"),
            blocks: vec!["10.244.1.0/26".parse().unwrap()],
        }])
    }
    fn icmp_echo(src: &str, dst: &str) -> Vec<u8> {
        build_ipv4(a(src), a(dst), 1, &[8, 0, 0xf7, 0xff, 0, 0, 0, 0])
    }

    #[test]
    fn outbound_picks_node_by_inner_destination() {
        let inner = icmp_echo("10.244.0.5", "10.244.1.9");
        let mut padded = inner.clone();
        padded.extend_from_slice(&[0; 7]);
        let (pkt, node) = outbound(&padded, &table()).unwrap();
        assert_eq!(node, a("10.0.0.2"));
        assert_eq!(
            pkt,
            &inner[..],
            "trailing bytes beyond total length are cut"
        );
        assert_eq!(
            outbound(&icmp_echo("10.244.0.5", "10.99.0.1"), &table()),
            Err(DropReason::NoRoute(a("10.99.0.1")))
        );
    }

    #[test]
    fn inbound_unwraps_from_known_node_only() {
        let inner = icmp_echo("10.244.1.9", "10.244.0.5");
        let outer = build_ipv4(a("10.0.0.2"), a("10.0.0.1"), IPPROTO_IPIP, &inner);
        let (got, from) = inbound(&outer, &table()).unwrap();
        assert_eq!(got, &inner[..]);
        assert_eq!(from, a("10.0.0.2"));

        let spoofed = build_ipv4(a("10.0.0.66"), a("10.0.0.1"), IPPROTO_IPIP, &inner);
        assert_eq!(
            inbound(&spoofed, &table()),
            Err(DropReason::UnknownSource(a("10.0.0.66")))
        );
        let udp = build_ipv4(a("10.0.0.2"), a("10.0.0.1"), 17, &inner);
        assert_eq!(inbound(&udp, &table()), Err(DropReason::NotIpip(17)));
    }

    #[test]
    fn malformed_packets_are_dropped_not_panicked_on() {
        let t = table();
        assert_eq!(parse_ipv4(&[]), Err(DropReason::Truncated));
        assert_eq!(parse_ipv4(&[0x60; 40]), Err(DropReason::NotIpv4));
        assert_eq!(parse_ipv4(&[0x45; 10]), Err(DropReason::Truncated));
        // IHL below 5.
        let mut bad = icmp_echo("10.244.0.5", "10.244.1.9");
        bad[0] = 0x44;
        assert_eq!(parse_ipv4(&bad), Err(DropReason::Truncated));
        // Total length beyond the buffer.
        let mut long = icmp_echo("10.244.0.5", "10.244.1.9");
        long[2] = 0xff;
        assert_eq!(outbound(&long, &t), Err(DropReason::Truncated));
        // Outer fine, inner truncated.
        let outer = build_ipv4(a("10.0.0.2"), a("10.0.0.1"), IPPROTO_IPIP, &[0x45, 0, 0]);
        assert_eq!(inbound(&outer, &t), Err(DropReason::Truncated));
        // Every prefix of a valid packet parses or is dropped.
        let outer = build_ipv4(
            a("10.0.0.2"),
            a("10.0.0.1"),
            IPPROTO_IPIP,
            &icmp_echo("10.244.1.9", "10.244.0.5"),
        );
        for n in 0..outer.len() {
            assert!(inbound(&outer[..n], &t).is_err());
        }
    }

    /// Deterministic fuzzing: random buffers and single-byte mutations of valid packets never
    /// panic, and whatever is accepted lies within the input and is itself well-formed.
    #[test]
    fn random_and_mutated_packets_never_panic() {
        let t = table();
        let valid = build_ipv4(
            a("10.0.0.2"),
            a("10.0.0.1"),
            IPPROTO_IPIP,
            &icmp_echo("10.244.1.9", "10.244.0.5"),
        );
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..50_000 {
            let len = (next() % 80) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if next() % 2 == 0 && !buf.is_empty() {
                buf[0] = 0x45;
            }
            let _ = outbound(&buf, &t);
            if let Ok((inner, _)) = inbound(&buf, &t) {
                assert!(inner.len() <= buf.len());
                assert!(parse_ipv4(inner).is_ok());
            }

            let mut m = valid.clone();
            let i = (next() as usize) % m.len();
            m[i] = next() as u8;
            if let Ok((inner, from)) = inbound(&m, &t) {
                assert_eq!(from, a("10.0.0.2"));
                assert!(parse_ipv4(inner).is_ok());
            }
            let _ = outbound(&m, &t);
        }
    }

    #[test]
    fn header_checksum_verifies() {
        let p = icmp_echo("10.244.0.5", "10.244.1.9");
        assert_eq!(checksum(&p[..IPV4_MIN_HEADER]), 0);
    }
}

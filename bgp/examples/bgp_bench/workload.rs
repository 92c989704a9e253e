//! The routes the tester announces, and their UPDATE messages encoded once, before the clock
//! starts.
//!
//! Prefix `i` is the /24 `16.0.0.0 + (i << 8)`: a million /24s need a /4 of address space,
//! which no private range offers, so the prefixes come from 16.0.0.0/4. They are only data in
//! the RIBs of a daemon inside a throw-away namespace: no daemon under test programs a kernel
//! (BIRD has no kernel protocol, bgpd runs without zebra, GoBGP and ours have no FIB here).
//!
//! Path `j` is `[65010, 1000 + j, 100000 + j % 1000]`: distinct for every `j`, three ASes long
//! like a typical Internet path, and its third AS needs the 4-octet AS capability (RFC 6793),
//! which every daemon under test negotiates. Prefixes are dealt to paths in contiguous runs
//! (`N / P` consecutive prefixes per path), and each run is packed into as few UPDATEs as the
//! 4096-octet message limit allows (RFC 4271 §4.3), as a router does when it sends a table.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{ensure, Context, Result};
use bytes::BytesMut;
use ipnet::{IpNet, Ipv4Net};

use bgp::packet::{
    encode_updates, AsPath, DecodeContext, Family, NextHop, Origin, PathAttributes, MAX_MESSAGE_LEN,
};

/// The tester's AS.
pub const TESTER_AS: u32 = 65010;
/// The AS of the daemon under test.
pub const DUT_AS: u32 = 65000;
/// The monitor's AS.
pub const MONITOR_AS: u32 = 65020;

/// First address of the announced prefixes.
const PREFIX_BASE: u32 = u32::from_be_bytes([16, 0, 0, 0]);
/// How many /24s fit in 16.0.0.0/4.
pub const MAX_PREFIXES: u32 = 1 << 20;

/// How many prefixes, over how many distinct AS paths.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub prefixes: u32,
    pub paths: u32,
}

impl Workload {
    pub fn new(prefixes: u32, paths: u32) -> Result<Workload> {
        ensure!(
            (1..=MAX_PREFIXES).contains(&prefixes),
            "--prefixes must be 1..={MAX_PREFIXES} (the /24s of 16.0.0.0/4)"
        );
        ensure!(
            (1..=prefixes).contains(&paths),
            "--paths must be 1..=prefixes ({prefixes})"
        );
        Ok(Workload { prefixes, paths })
    }

    /// The `i`-th announced prefix.
    pub fn prefix(i: u32) -> Ipv4Net {
        // Cannot fail: the length is a constant 24.
        Ipv4Net::new(Ipv4Addr::from(PREFIX_BASE + (i << 8)), 24).unwrap_or_default()
    }

    /// The index of `prefix` if it is one of ours (any /24 of the range), for the monitor's
    /// bitmap. `network` is the prefix's address in host order.
    pub fn index_of(&self, network: u32, len: u8) -> Option<u32> {
        if len != 24 {
            return None;
        }
        let i = network.wrapping_sub(PREFIX_BASE) >> 8;
        (network >= PREFIX_BASE && i < self.prefixes).then_some(i)
    }

    /// The AS path of path number `j` (as the tester sends it, its own AS first).
    pub fn as_path(j: u32) -> Vec<u32> {
        vec![TESTER_AS, 1000 + j, 100_000 + j % 1000]
    }

    /// The prefixes carried by path `j`: a contiguous run, the first `N % P` runs one longer.
    fn run_of(&self, j: u32) -> std::ops::Range<u32> {
        let base = self.prefixes / self.paths;
        let extra = self.prefixes % self.paths;
        let start = j * base + j.min(extra);
        let len = base + u32::from(j < extra);
        start..start + len
    }

    /// Every UPDATE of the table, packed by the codec's batch encoder for a session that
    /// negotiated 4-octet AS numbers, joined into chunks of about `chunk` octets that end on
    /// message boundaries so that each chunk is one large `write`.
    pub fn encode_updates(&self, next_hop: Ipv4Addr, chunk: usize) -> Result<EncodedTable> {
        let ctx = DecodeContext {
            four_octet_as: true,
            ..DecodeContext::default()
        };
        let mut chunks = Vec::new();
        let mut buf = BytesMut::with_capacity(chunk + MAX_MESSAGE_LEN);
        let mut messages = 0usize;
        let mut octets = 0usize;
        let mut updates = Vec::new();
        for j in 0..self.paths {
            let attributes = PathAttributes {
                origin: Some(Origin::Igp),
                as_path: Some(AsPath::from_sequence(Self::as_path(j))),
                ..PathAttributes::default()
            };
            let run: Vec<IpNet> = self.run_of(j).map(|i| IpNet::V4(Self::prefix(i))).collect();
            updates.clear();
            encode_updates(
                &attributes,
                Family::Ipv4Unicast,
                NextHop::from(IpAddr::V4(next_hop)),
                &run,
                &ctx,
                &mut updates,
            )
            .context("encoding the tester's UPDATEs")?;
            for msg in &updates {
                ensure!(
                    msg.len() <= MAX_MESSAGE_LEN,
                    "codec produced a {}-octet UPDATE",
                    msg.len()
                );
                messages += 1;
                octets += msg.len();
                buf.extend_from_slice(msg);
                if buf.len() >= chunk {
                    chunks.push(buf.split().freeze());
                }
            }
        }
        if !buf.is_empty() {
            chunks.push(buf.split().freeze());
        }
        Ok(EncodedTable {
            chunks,
            messages,
            octets,
        })
    }
}

/// The encoded table: what the tester writes once the clock has started.
#[derive(Debug)]
pub struct EncodedTable {
    pub chunks: Vec<bytes::Bytes>,
    pub messages: usize,
    pub octets: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_cover_every_prefix_once() {
        let w = Workload::new(1003, 10).unwrap();
        let mut next = 0;
        for j in 0..10 {
            let r = w.run_of(j);
            assert_eq!(r.start, next);
            next = r.end;
        }
        assert_eq!(next, 1003);
    }

    #[test]
    fn index_round_trips() {
        let w = Workload::new(MAX_PREFIXES, 1).unwrap();
        for i in [0, 1, 77, MAX_PREFIXES - 1] {
            let p = Workload::prefix(i);
            assert_eq!(w.index_of(u32::from(p.network()), 24), Some(i));
        }
        assert_eq!(w.index_of(u32::from(Ipv4Addr::new(127, 0, 0, 0)), 24), None);
        assert_eq!(w.index_of(PREFIX_BASE, 25), None);
    }
}

//! Interned path attributes.
//!
//! A full table has about a million prefixes but only thousands of distinct attribute sets
//! (one per AS path and community combination), so every path in the RIB points at a shared
//! [`RouteAttrs`] through an `Arc`. The [`AttrTable`] hands out one `Arc` per distinct value;
//! equality of two interned sets is then a pointer comparison, which the decision and
//! export code use to skip work, and the export side groups prefixes into UPDATEs by that
//! pointer.
//!
//! Entries are dropped by [`AttrTable::sweep`]: an `Arc` whose only owner is the table is
//! unused. Sweeps run when the table has doubled since the last one, so their cost is
//! amortised over the insertions that grew it.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::packet::{Family, PathAttributes};

use super::hash::FoldHashBuilder;

/// A path's attributes together with its next hop: the unit the RIB stores and interns.
///
/// The next hop is kept here for every family because IPv6 (and any MP_REACH) routes carry
/// it in MP_REACH_NLRI rather than in [`PathAttributes::next_hop`] (RFC 4760 §3). For IPv4
/// routes with an IPv4 next hop, `attrs.next_hop` holds the same address so that the
/// attributes can be encoded as they are.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteAttrs {
    pub attrs: PathAttributes,
    pub next_hop: IpAddr,
    /// IPv6 link-local next hop (RFC 2545 §3), when the peer sent one.
    pub link_local_next_hop: Option<Ipv6Addr>,
}

impl RouteAttrs {
    /// Builds the stored form, normalising `attrs.next_hop` as described on the type.
    pub fn new(
        mut attrs: PathAttributes,
        family: Family,
        next_hop: IpAddr,
        link_local_next_hop: Option<Ipv6Addr>,
    ) -> RouteAttrs {
        attrs.next_hop = match (family, next_hop) {
            (Family::Ipv4Unicast, IpAddr::V4(v4)) => Some(v4),
            _ => None,
        };
        RouteAttrs {
            attrs,
            next_hop,
            link_local_next_hop,
        }
    }

    /// The placeholder next hop of a locally originated route ("this router"); export
    /// replaces it with the session's own address.
    pub fn unspecified_next_hop(family: Family) -> IpAddr {
        match family {
            Family::Ipv4Unicast => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Family::Ipv6Unicast => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }
}

/// The intern table. See the module docs.
#[derive(Debug, Default)]
pub struct AttrTable {
    set: HashSet<Arc<RouteAttrs>, FoldHashBuilder>,
    len_after_sweep: usize,
}

impl AttrTable {
    /// The shared `Arc` for `attrs`, inserting it if it is new.
    pub fn intern(&mut self, attrs: RouteAttrs) -> Arc<RouteAttrs> {
        if let Some(existing) = self.set.get(&attrs) {
            return Arc::clone(existing);
        }
        let shared = Arc::new(attrs);
        self.set.insert(Arc::clone(&shared));
        shared
    }

    /// Distinct attribute sets currently held (used or not yet swept).
    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// True when enough has been inserted since the last sweep to make one worthwhile.
    pub fn wants_sweep(&self) -> bool {
        self.set.len() > 2 * self.len_after_sweep + 1024
    }

    /// Drops every entry nobody but the table refers to.
    pub fn sweep(&mut self) {
        self.set.retain(|a| Arc::strong_count(a) > 1);
        self.len_after_sweep = self.set.len();
    }
}

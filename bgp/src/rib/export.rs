//! Export rules: which best paths a peer may receive, and how their attributes change on
//! the way out. Pure functions of (path, where it came from, the receiving peer), which is
//! what lets the RIB keep no per-peer Adj-RIB-Out copy (see the [`super`] docs).

use std::net::{IpAddr, Ipv4Addr};

use crate::packet::attribute::flag;
use crate::packet::{Community, Family};

use super::attrs::RouteAttrs;
use super::peer::{NextHopMode, PeerConfig, PeerSession};

/// Where a path came from, as far as export rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathSource {
    /// Originated by this router.
    Local,
    Peer {
        ibgp: bool,
        /// The sender is one of our route-reflector clients.
        rr_client: bool,
        /// The sender's BGP Identifier (becomes ORIGINATOR_ID when we reflect).
        router_id: Ipv4Addr,
    },
}

/// RFC 4456 §6: a route from a client is reflected to all clients and non-clients; a route
/// from a non-client only to clients. Without clients this is plain iBGP split horizon
/// (RFC 4271 §9.2: iBGP-learned routes are not sent to iBGP peers).
pub fn reflection_allowed(from_client: bool, to_client: bool) -> bool {
    from_client || to_client
}

/// Settings of this router that export needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportContext {
    /// Our CLUSTER_ID (RFC 4456 §7), prepended to CLUSTER_LIST when reflecting.
    pub cluster_id: Ipv4Addr,
    /// LOCAL_PREF sent to iBGP peers for paths that have none (RFC 4271 §5.1.5 requires the
    /// attribute on iBGP).
    pub default_local_pref: u32,
}

/// The attributes `route` is advertised to `dst` with, or `None` when it must not be sent.
/// The caller has already excluded sending a path back to the peer it came from (BIRD does
/// not, and the peer would drop it by AS-path or ORIGINATOR_ID loop detection anyway).
pub fn export_attrs(
    ctx: &ExportContext,
    dst: &PeerConfig,
    dst_session: &PeerSession,
    src: PathSource,
    route: &RouteAttrs,
    family: Family,
) -> Option<RouteAttrs> {
    let to_ibgp = dst.is_ibgp();
    let communities = &route.attrs.communities;
    // RFC 1997: NO_ADVERTISE goes to no peer; NO_EXPORT (and NO_EXPORT_SUBCONFED, as we run
    // no confederation) stay inside the AS.
    if communities.contains(&Community::NO_ADVERTISE) {
        return None;
    }
    if !to_ibgp
        && (communities.contains(&Community::NO_EXPORT)
            || communities.contains(&Community::NO_EXPORT_SUBCONFED))
    {
        return None;
    }

    let mut reflecting = false;
    if let PathSource::Peer {
        ibgp: true,
        rr_client,
        ..
    } = src
    {
        if to_ibgp {
            if !reflection_allowed(rr_client, dst.route_reflector_client) {
                return None;
            }
            reflecting = true;
        }
    }

    let local_nh = dst_session.local_address(family);
    let next_hop_self = match (src, dst.next_hop_mode) {
        (PathSource::Local, _) => true,
        (_, NextHopMode::SelfAddress) => true,
        (_, NextHopMode::Keep) => false,
        // eBGP: ourselves, unless the peer shares a subnet with the next hop we use
        // (third-party next hop, RFC 4271 §5.1.3); iBGP: keep (§5.1.3 (2)).
        (_, NextHopMode::Auto) => {
            !to_ibgp && !dst_session.shares_subnet(dst.address, route.next_hop)
        }
    };
    let (next_hop, link_local) = if next_hop_self {
        (local_nh?, None)
    } else {
        (route.next_hop, route.link_local_next_hop)
    };
    if next_hop.is_unspecified() {
        return None;
    }

    let mut attrs = route.attrs.clone();
    if to_ibgp {
        // RFC 4271 §5.1.5: LOCAL_PREF is carried on every iBGP advertisement.
        attrs.local_pref = Some(attrs.local_pref.unwrap_or(ctx.default_local_pref));
        if reflecting {
            if let PathSource::Peer { router_id, .. } = src {
                // RFC 4456 §8: set ORIGINATOR_ID once, at the first reflection.
                attrs.originator_id.get_or_insert(router_id);
            }
            attrs.cluster_list.insert(0, ctx.cluster_id);
        }
    } else {
        // RFC 4271 §5.1.2: prepend our AS towards an external peer.
        attrs
            .as_path
            .get_or_insert_with(Default::default)
            .prepend(dst.local_as);
        // §5.1.5: no LOCAL_PREF to external peers.
        attrs.local_pref = None;
        // §5.1.4: a MED learned from a neighbouring AS is not propagated to other ASes;
        // only a MED we set ourselves on our own routes goes out.
        if src != PathSource::Local {
            attrs.med = None;
        }
        // RFC 4456 §8: ORIGINATOR_ID and CLUSTER_LIST are iBGP-only.
        attrs.originator_id = None;
        attrs.cluster_list.clear();
        // RFC 4360 §6: extended communities whose type has the Transitive bit (0x40) set
        // to 1 are non-transitive and must not cross an AS boundary.
        attrs.ext_communities.retain(|c| c.0[0] & 0x40 == 0);
    }
    // RFC 4271 §5 and §9.1.3: unrecognised non-transitive attributes are dropped; unrecognised
    // transitive ones are passed on with the Partial bit set.
    attrs.unknown.retain(|a| a.flags & flag::TRANSITIVE != 0);
    for a in &mut attrs.unknown {
        a.flags |= flag::PARTIAL;
    }
    for c in &dst.export.communities {
        if !attrs.communities.contains(c) {
            attrs.communities.push(*c);
        }
    }
    for c in &dst.export.large_communities {
        if !attrs.large_communities.contains(c) {
            attrs.large_communities.push(*c);
        }
    }
    Some(RouteAttrs::new(attrs, family, next_hop, link_local))
}

/// Adds the communities of `dst`'s per-prefix rules that cover `prefix`; `None` when no
/// rule applies (the common case, which then keeps the shared attributes).
pub fn prefix_communities(
    dst: &PeerConfig,
    prefix: &ipnet::IpNet,
    route: &RouteAttrs,
) -> Option<RouteAttrs> {
    let mut out: Option<RouteAttrs> = None;
    for rule in &dst.export.prefix_communities {
        if !rule.prefix.contains(prefix) {
            continue;
        }
        let attrs = &mut out.get_or_insert_with(|| route.clone()).attrs;
        for c in &rule.communities {
            if !attrs.communities.contains(c) {
                attrs.communities.push(*c);
            }
        }
        for c in &rule.large_communities {
            if !attrs.large_communities.contains(c) {
                attrs.large_communities.push(*c);
            }
        }
    }
    out
}

/// Whether a received next hop can be used: not unspecified, multicast or broadcast, and not
/// one of our own addresses (RFC 4271 §6.3: a NEXT_HOP that is the receiving speaker's own
/// address is semantically incorrect).
pub fn next_hop_usable(next_hop: IpAddr, session: &PeerSession, router_id: Ipv4Addr) -> bool {
    if next_hop.is_unspecified() || next_hop.is_multicast() {
        return false;
    }
    if let IpAddr::V4(v4) = next_hop {
        if v4.is_broadcast() || v4 == router_id {
            return false;
        }
    }
    !session.is_local_address(next_hop)
}

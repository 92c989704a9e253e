//! Building our OPEN and checking the peer's (RFC 4271 §6.2, RFC 6286, RFC 5492): the
//! session-level half of OPEN validation. The codec has already rejected what is malformed;
//! what is left here needs the configuration (peer AS, our identifier, our families).

use std::net::Ipv4Addr;

use crate::packet::error::open as open_err;
use crate::packet::{
    AddPathMode, Capability, DecodeContext, ErrorCode, Family, GracefulRestartFamily, Notification,
    Open,
};

use super::config::SessionConfig;
use super::event::ConnectionId;

/// What the two OPENs of a session agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The connection that carried the exchange (the survivor of any collision).
    pub connection: ConnectionId,
    pub peer_as: u32,
    pub peer_id: Ipv4Addr,
    /// The smaller of the two offered hold times, seconds; 0 means no hold timer and no
    /// keepalives (RFC 4271 §4.2).
    pub hold_time: u16,
    /// Seconds between our KEEPALIVEs: at most a third of `hold_time`; 0 when `hold_time` is 0.
    pub keepalive_time: u16,
    /// Families both sides advertised (in our configured order).
    pub families: Vec<Family>,
    /// Both sides speak 4-octet AS numbers (RFC 6793).
    pub four_octet_as: bool,
    /// The peer accepts ROUTE-REFRESH from us (RFC 2918 §2).
    pub route_refresh: bool,
    /// Both sides advertised Enhanced Route Refresh (RFC 7313 §3.1).
    pub enhanced_route_refresh: bool,
    /// ADD-PATH per family where either side advertised it (RFC 7911 §4).
    pub add_path: Vec<AddPathFamily>,
    /// The peer's Graceful Restart capability, if sent (RFC 4724 §3).
    pub graceful_restart: Option<PeerGracefulRestart>,
    /// Everything the peer advertised, for status output.
    pub peer_capabilities: Vec<Capability>,
    /// How to decode the peer's messages from now on.
    pub decode: DecodeContext,
}

impl Negotiated {
    /// Whether we may send ADD-PATH path identifiers for `family`.
    pub fn add_path_send(&self, family: Family) -> bool {
        self.add_path.iter().any(|a| a.family == family && a.send)
    }
}

/// ADD-PATH for one family: what each side advertised and what follows (RFC 7911 §4: we may
/// send path ids if we advertised Send and the peer Receive, and vice versa).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddPathFamily {
    pub family: Family,
    pub local: Option<AddPathMode>,
    pub peer: Option<AddPathMode>,
    pub send: bool,
    pub receive: bool,
}

/// The peer's Graceful Restart capability (RFC 4724 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerGracefulRestart {
    pub restart_time: u16,
    pub restarting: bool,
    pub notification: bool,
    /// Families with preserved state, and whether forwarding was preserved for each.
    pub families: Vec<(Family, bool)>,
}

/// Our OPEN for this configuration: a multiprotocol capability per family, route refresh,
/// graceful restart, ADD-PATH and any extra capabilities, and always 4-octet AS.
pub fn local_open(config: &SessionConfig) -> Open {
    let mut caps: Vec<Capability> = config
        .families
        .iter()
        .map(|f| {
            let (afi, safi) = f.afi_safi();
            Capability::MultiProtocol { afi, safi }
        })
        .collect();
    if config.route_refresh {
        caps.push(Capability::RouteRefresh);
        if config.enhanced_route_refresh {
            caps.push(Capability::EnhancedRouteRefresh);
        }
    }
    if config.extended_messages {
        caps.push(Capability::ExtendedMessage);
    }
    if let Some(gr) = &config.graceful_restart {
        caps.push(Capability::GracefulRestart {
            restarting: gr.restarting,
            notification: false,
            restart_time: gr.restart_time,
            families: config
                .families
                .iter()
                .map(|f| {
                    let (afi, safi) = f.afi_safi();
                    GracefulRestartFamily {
                        afi,
                        safi,
                        forwarding_preserved: gr.forwarding_preserved,
                    }
                })
                .collect(),
        });
    }
    if !config.add_path.is_empty() {
        caps.push(Capability::AddPath(
            config
                .add_path
                .iter()
                .map(|(f, mode)| {
                    let (afi, safi) = f.afi_safi();
                    (afi, safi, *mode)
                })
                .collect(),
        ));
    }
    caps.extend(config.extra_capabilities.iter().cloned());
    Open::new(config.local_as, config.hold_time, config.router_id, caps)
}

fn may_send(mode: AddPathMode) -> bool {
    matches!(mode, AddPathMode::Send | AddPathMode::Both)
}

fn may_receive(mode: AddPathMode) -> bool {
    matches!(mode, AddPathMode::Receive | AddPathMode::Both)
}

/// Validates the peer's OPEN against our configuration and works out the session
/// parameters, or returns the NOTIFICATION to send (RFC 4271 §6.2).
pub fn negotiate(
    config: &SessionConfig,
    connection: ConnectionId,
    peer: &Open,
) -> Result<Negotiated, Notification> {
    // RFC 4271 §6.2: the data is the largest version we support, as 2 octets.
    if peer.version != 4 {
        return Err(Notification::new(
            ErrorCode::Open,
            open_err::UNSUPPORTED_VERSION,
            vec![0, 4],
        ));
    }
    let peer_as = peer.asn();
    if let Some(expected) = config.remote_as {
        if peer_as != expected {
            // As FRR does: echo the AS we were given, in the width the peer used.
            let data = match peer.four_octet_as() {
                Some(asn) => asn.to_be_bytes().to_vec(),
                None => peer.my_as.to_be_bytes().to_vec(),
            };
            return Err(Notification::new(
                ErrorCode::Open,
                open_err::BAD_PEER_AS,
                data,
            ));
        }
    }
    // RFC 6286 §2.2: the identifier must be non-zero, and an internal peer must not use ours.
    if peer.bgp_id.is_unspecified()
        || (peer_as == config.local_as && peer.bgp_id == config.router_id)
    {
        return Err(Notification::new(
            ErrorCode::Open,
            open_err::BAD_BGP_IDENTIFIER,
            Vec::new(),
        ));
    }
    // RFC 4271 §4.2: "MUST reject Hold Time values of one or two seconds".
    if matches!(peer.hold_time, 1 | 2) {
        return Err(Notification::new(
            ErrorCode::Open,
            open_err::UNACCEPTABLE_HOLD_TIME,
            Vec::new(),
        ));
    }
    let hold_time = config.hold_time.min(peer.hold_time);
    let keepalive_time = if hold_time == 0 {
        0
    } else {
        let cap = hold_time / 3;
        config.keepalive_time.map_or(cap, |k| k.min(cap)).max(1)
    };

    let peer_families = peer.families();
    let families: Vec<Family> = config
        .families
        .iter()
        .copied()
        .filter(|f| peer_families.contains(f))
        .collect();
    if families.is_empty() {
        // RFC 5492 §5: Unsupported Capability, data = the capabilities we need (our MP ones,
        // encoded as code 1, length 4, AFI, reserved, SAFI).
        let mut data = Vec::new();
        for f in &config.families {
            let (afi, safi) = f.afi_safi();
            data.extend_from_slice(&[1, 4]);
            data.extend_from_slice(&afi.code().to_be_bytes());
            data.extend_from_slice(&[0, safi.code()]);
        }
        return Err(Notification::new(
            ErrorCode::Open,
            open_err::UNSUPPORTED_CAPABILITY,
            data,
        ));
    }

    let four_octet_as = peer.four_octet_as().is_some();
    let route_refresh = peer.has_capability(2);
    // RFC 7313 §3.1: in use when both sides advertised it (ours may also come as an extra
    // capability, as the conformance harness sends it).
    let enhanced_route_refresh = peer.has_capability(70)
        && ((config.route_refresh && config.enhanced_route_refresh)
            || config
                .extra_capabilities
                .iter()
                .any(|c| matches!(c, Capability::EnhancedRouteRefresh)));

    let peer_add_path: Vec<(Family, AddPathMode)> = peer
        .capabilities
        .iter()
        .filter_map(|c| match c {
            Capability::AddPath(entries) => Some(entries),
            _ => None,
        })
        .flatten()
        .filter_map(|(afi, safi, mode)| Family::from_afi_safi(*afi, *safi).map(|f| (f, *mode)))
        .collect();
    let add_path: Vec<AddPathFamily> = families
        .iter()
        .filter_map(|&family| {
            let local = config
                .add_path
                .iter()
                .find(|(f, _)| *f == family)
                .map(|(_, m)| *m);
            let peer = peer_add_path
                .iter()
                .find(|(f, _)| *f == family)
                .map(|(_, m)| *m);
            if local.is_none() && peer.is_none() {
                return None;
            }
            let both = |a: fn(AddPathMode) -> bool, b: fn(AddPathMode) -> bool| {
                local.is_some_and(a) && peer.is_some_and(b)
            };
            Some(AddPathFamily {
                family,
                local,
                peer,
                send: both(may_send, may_receive),
                receive: both(may_receive, may_send),
            })
        })
        .collect();
    let receives = |family: Family| add_path.iter().any(|a| a.family == family && a.receive);
    let sends = |family: Family| add_path.iter().any(|a| a.family == family && a.send);
    let decode = DecodeContext {
        four_octet_as,
        add_path_ipv4: receives(Family::Ipv4Unicast),
        add_path_ipv6: receives(Family::Ipv6Unicast),
        add_path_send_ipv4: sends(Family::Ipv4Unicast),
        add_path_send_ipv6: sends(Family::Ipv6Unicast),
        // RFC 8654 §3: only when both sides advertised it.
        extended_messages: config.extended_messages && peer.has_capability(6),
    };

    let graceful_restart = peer.capabilities.iter().find_map(|c| match c {
        Capability::GracefulRestart {
            restarting,
            notification,
            restart_time,
            families,
        } => Some(PeerGracefulRestart {
            restart_time: *restart_time,
            restarting: *restarting,
            notification: *notification,
            families: families
                .iter()
                .filter_map(|gf| {
                    Family::from_afi_safi(gf.afi, gf.safi).map(|f| (f, gf.forwarding_preserved))
                })
                .collect(),
        }),
        _ => None,
    });

    Ok(Negotiated {
        connection,
        peer_as,
        peer_id: peer.bgp_id,
        hold_time,
        keepalive_time,
        families,
        four_octet_as,
        route_refresh,
        enhanced_route_refresh,
        add_path,
        graceful_restart,
        peer_capabilities: peer.capabilities.clone(),
        decode,
    })
}

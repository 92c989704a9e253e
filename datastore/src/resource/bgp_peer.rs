//! `BGPPeer`: a BGP session to configure, on some or all nodes.
//!
//! Which nodes: `node` (one node), `nodeSelector` (matching nodes) or neither (every node, a
//! "global" peer). With whom: `peerIP` (an address, with `asNumber`) or `peerSelector` (other
//! nodes whose labels match; their own address and AS are used). As in Calico, each pair is
//! mutually exclusive, and `asNumber` belongs with `peerIP` only.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipam::Selector;
use serde::{Deserialize, Serialize};

use super::field::{
    check_name, check_one_of, parse_duration, parse_selector, AsNumberText, FieldError,
    PasswordSource,
};

/// Values of `sourceAddress`.
pub const SOURCE_ADDRESS_MODES: [&str; 2] = ["UseNodeIP", "None"];
/// Values of `failureDetectionMode` (Calico Enterprise's names).
pub const FAILURE_DETECTION_MODES: [&str; 2] = ["None", "BFDIfDirectlyConnected"];
/// Values of `nextHopMode`.
pub const NEXT_HOP_MODES: [&str; 3] = ["Auto", "Self", "Keep"];

/// `spec` of a `BGPPeer`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "kubernetes", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpPeerSpec {
    /// The one node this peering applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The nodes this peering applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
    /// The peer's address, optionally with a port: `10.0.0.1`, `10.0.0.1:1179`,
    /// `[fd00::1]:1179`.
    #[serde(default, rename = "peerIP", skip_serializing_if = "Option::is_none")]
    pub peer_ip: Option<String>,
    /// Peer with the nodes matching this selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_selector: Option<String>,
    /// The peer's AS (with `peerIP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumberText>,
    /// TCP MD5 key (RFC 2385).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<PasswordSource>,
    /// `UseNodeIP` (default: bind the session to the node's address) or `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,
    /// Do not rewrite NEXT_HOP on eBGP export (Calico's older spelling of `nextHopMode: Keep`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_original_next_hop: Option<bool>,
    /// `Auto` (default), `Self`, `Keep`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_mode: Option<String>,
    /// Graceful-restart time (RFC 4724) for this session, e.g. `120s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restart_time: Option<String>,
    /// Seconds between our KEEPALIVEs on this session, e.g. `10s` (Calico `keepaliveTime`);
    /// unset: a third of the negotiated hold time (RFC 4271 §10). Never more than that third.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<String>,
    /// The hold time offered on this session, e.g. `9s`: 0 (no keepalives) or 3s..=65535s
    /// (RFC 4271 §4.2); unset, BGPConfiguration's (90 s by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<String>,
    /// The most prefixes of one family this peer may announce (RFC 4486 §4, Cease/1): FRR's
    /// `maximum-prefix`, BIRD's `receive limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_prefixes: Option<MaxPrefixesSpec>,
    /// `BFDIfDirectlyConnected`: run BFD (RFC 5880/5881) with the peer when it is on the
    /// node's own subnet, so a dead link takes the session down in `multiplier` x interval
    /// (Calico Enterprise's field and value); `None` (default): no BFD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_detection_mode: Option<String>,
    /// BFD timers with `failureDetectionMode: BFDIfDirectlyConnected` (names of Calico
    /// Enterprise's `BFDConfiguration`); default 300 ms x 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BfdSpec>,
    /// How many times our own AS may appear in a received AS_PATH (0 = RFC 4271 loop check).
    /// Calico spells it `numAllowedLocalASNumbers`; the camel-case `numAllowedLocalAsNumbers`
    /// that earlier versions of routerd accepted is still read.
    #[serde(
        default,
        rename = "numAllowedLocalASNumbers",
        alias = "numAllowedLocalAsNumbers",
        skip_serializing_if = "Option::is_none"
    )]
    pub num_allowed_local_as_numbers: Option<i64>,
    /// GTSM (RFC 5082): the peer is at most this many hops away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_security: Option<i64>,
    /// The TTL of an eBGP session (Cilium's `ebgpMultihop`, FRR's `ebgp-multihop`): unset,
    /// 1, i.e. the peer must be directly connected; up to 255 hops. Not with `ttlSecurity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ebgp_multihop: Option<i64>,
    /// Names of `BGPFilter`s applied to this session, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
}

/// A duration field in whole seconds that fit 16 bits and satisfy `ok` (`range` says
/// which, for the message).
fn whole_seconds(
    text: Option<&str>,
    field: &str,
    ok: fn(u16) -> bool,
    range: &str,
) -> Result<Option<u16>, FieldError> {
    let Some(text) = text else {
        return Ok(None);
    };
    let d = parse_duration(text, field)?;
    if d.subsec_nanos() != 0 {
        return Err(FieldError::new(
            field,
            format!("{text:?} is not a whole number of seconds"),
        ));
    }
    match u16::try_from(d.as_secs()) {
        Ok(s) if ok(s) => Ok(Some(s)),
        _ => Err(FieldError::new(field, format!("{text:?} is {range}"))),
    }
}

/// `bfd` of a `BGPPeer`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "kubernetes", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BfdSpec {
    /// How often we can take the peer's packets, e.g. `300ms` (RFC 5880 Required Min RX).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_recv_interval: Option<String>,
    /// How often we would like to send, e.g. `300ms` (RFC 5880 Desired Min TX).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_send_interval: Option<String>,
    /// Packets missed before the session is declared down, 1..=255.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<i64>,
}

/// BFD settings of a `BGPPeer`, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdTimers {
    pub min_rx_ms: u32,
    pub min_tx_ms: u32,
    pub multiplier: u8,
}

/// `maxPrefixes` of a `BGPPeer`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "kubernetes", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaxPrefixesSpec {
    /// Prefixes of one family the peer may announce; one more closes the session.
    pub limit: i64,
    /// Warn when the count reaches this share of the limit, 1..=100 (default 75, FRR's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning_percent: Option<i64>,
    /// How long the session stays down after closing, e.g. `5m`; unset: until the BGPPeer
    /// changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_time: Option<String>,
}

/// `maxPrefixes` parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPrefixes {
    pub limit: u32,
    pub warning_percent: u8,
    /// Whole seconds, at least 1.
    pub restart_after: Option<u64>,
}

/// Where the session goes, from `peerIP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddress {
    /// The peer's address.
    pub ip: IpAddr,
    /// A non-standard port, when given.
    pub port: Option<u16>,
}

/// Parses `10.0.0.1`, `fd00::1`, `10.0.0.1:1179` or `[fd00::1]:1179`.
pub fn parse_peer_address(text: &str, field: &str) -> Result<PeerAddress, FieldError> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(PeerAddress { ip, port: None });
    }
    match text.parse::<SocketAddr>() {
        Ok(sa) if sa.port() != 0 => Ok(PeerAddress {
            ip: sa.ip(),
            port: Some(sa.port()),
        }),
        _ => Err(FieldError::new(
            field,
            format!("{text:?} is not an IP address (optionally ip:port or [ipv6]:port)"),
        )),
    }
}

/// How the peer's NEXT_HOP is set on routes we send (`nextHopMode`), as the resource says it.
/// The resource model's own type, since this crate links no BGP code; `agent::peering` maps it
/// to the speaker's `bgp::rib::NextHopMode` (with the rule for `Keep` on iBGP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NextHopMode {
    /// Self for eBGP, unchanged for iBGP (RFC 4271 §5.1.3).
    #[default]
    Auto,
    /// Always our address.
    Self_,
    /// Never rewritten.
    Keep,
}

impl BgpPeerSpec {
    /// `peerIP` parsed.
    pub fn peer_address(&self) -> Result<Option<PeerAddress>, FieldError> {
        self.peer_ip
            .as_deref()
            .map(|t| parse_peer_address(t, "spec.peerIP"))
            .transpose()
    }

    /// `asNumber` parsed.
    pub fn as_number(&self) -> Result<Option<u32>, FieldError> {
        self.as_number
            .as_ref()
            .map(|a| a.parse("spec.asNumber"))
            .transpose()
    }

    /// `nodeSelector` parsed; `None` when unset.
    pub fn node_selector(&self) -> Result<Option<Selector>, FieldError> {
        self.node_selector
            .as_deref()
            .map(|t| parse_selector(t, "spec.nodeSelector"))
            .transpose()
    }

    /// `peerSelector` parsed; `None` when unset.
    pub fn peer_selector(&self) -> Result<Option<Selector>, FieldError> {
        self.peer_selector
            .as_deref()
            .map(|t| parse_selector(t, "spec.peerSelector"))
            .transpose()
    }

    /// The effective next-hop mode (`keepOriginalNextHop: true` means `Keep`).
    pub fn next_hop_mode(&self) -> Result<NextHopMode, FieldError> {
        let mode = match self.next_hop_mode.as_deref() {
            None => None,
            Some(t) => {
                check_one_of(t, &NEXT_HOP_MODES, "spec.nextHopMode")?;
                Some(match t {
                    "Self" => NextHopMode::Self_,
                    "Keep" => NextHopMode::Keep,
                    _ => NextHopMode::Auto,
                })
            }
        };
        match (self.keep_original_next_hop, mode) {
            (Some(true), Some(NextHopMode::Self_)) => Err(FieldError::new(
                "spec.keepOriginalNextHop",
                "contradicts spec.nextHopMode Self",
            )),
            (Some(true), _) => Ok(NextHopMode::Keep),
            (_, m) => Ok(m.unwrap_or_default()),
        }
    }

    /// `maxRestartTime`, if set.
    pub fn max_restart_time(&self) -> Result<Option<Duration>, FieldError> {
        self.max_restart_time
            .as_deref()
            .map(|t| parse_duration(t, "spec.maxRestartTime"))
            .transpose()
    }

    /// `keepaliveTime` in whole seconds, if set: 1..=21845 (a third of the largest hold
    /// time, RFC 4271 §4.2), since a keepalive interval of 0 would disable keepalives, which
    /// only a hold time of 0 may do.
    pub fn keepalive_time(&self) -> Result<Option<u16>, FieldError> {
        whole_seconds(
            self.keepalive_time.as_deref(),
            "spec.keepaliveTime",
            |s| (1..=21845).contains(&s),
            "outside 1s..=21845s",
        )
    }

    /// `holdTime` in whole seconds, if set: 0 or 3..=65535 (RFC 4271 §4.2).
    pub fn hold_time(&self) -> Result<Option<u16>, FieldError> {
        whole_seconds(
            self.hold_time.as_deref(),
            "spec.holdTime",
            |s| s == 0 || s >= 3,
            "neither 0 nor within 3s..=65535s (RFC 4271 §4.2)",
        )
    }

    /// `maxPrefixes`, if set.
    pub fn max_prefixes(&self) -> Result<Option<MaxPrefixes>, FieldError> {
        let Some(spec) = &self.max_prefixes else {
            return Ok(None);
        };
        let limit = u32::try_from(spec.limit)
            .ok()
            .filter(|l| *l > 0)
            .ok_or_else(|| {
                FieldError::new(
                    "spec.maxPrefixes.limit",
                    format!("{} is outside 1..=4294967295", spec.limit),
                )
            })?;
        let warning_percent = match spec.warning_percent {
            None => 75,
            Some(p) => u8::try_from(p)
                .ok()
                .filter(|p| (1..=100).contains(p))
                .ok_or_else(|| {
                    FieldError::new(
                        "spec.maxPrefixes.warningPercent",
                        format!("{p} is outside 1..=100"),
                    )
                })?,
        };
        let restart_after = match spec.restart_time.as_deref() {
            None => None,
            Some(text) => {
                let field = "spec.maxPrefixes.restartTime";
                let d = parse_duration(text, field)?;
                if d < Duration::from_secs(1) || d.subsec_nanos() != 0 {
                    return Err(FieldError::new(
                        field,
                        format!("{text:?} is not a whole number of seconds, at least 1s"),
                    ));
                }
                Some(d.as_secs())
            }
        };
        Ok(Some(MaxPrefixes {
            limit,
            warning_percent,
            restart_after,
        }))
    }

    /// BFD timers when `failureDetectionMode` asks for BFD, else `None`.
    pub fn bfd(&self) -> Result<Option<BfdTimers>, FieldError> {
        let mode = self.failure_detection_mode.as_deref().unwrap_or("None");
        check_one_of(mode, &FAILURE_DETECTION_MODES, "spec.failureDetectionMode")?;
        if mode == "None" {
            if self.bfd.is_some() {
                return Err(FieldError::new(
                    "spec.bfd",
                    "has no effect without failureDetectionMode: BFDIfDirectlyConnected",
                ));
            }
            return Ok(None);
        }
        if self.source_address.as_deref() == Some("None") {
            return Err(FieldError::new(
                "spec.failureDetectionMode",
                "BFD needs sourceAddress UseNodeIP: its packets are sent from the node's address",
            ));
        }
        let spec = self.bfd.clone().unwrap_or_default();
        let interval = |text: Option<&str>, field: &str| -> Result<u32, FieldError> {
            let Some(text) = text else { return Ok(300) };
            let d = parse_duration(text, field)?;
            let ms = d.as_millis();
            if d.subsec_nanos() % 1_000_000 != 0 || !(10..=60_000).contains(&ms) {
                return Err(FieldError::new(
                    field,
                    format!("{text:?} is not a whole number of milliseconds within 10ms..=1m"),
                ));
            }
            Ok(ms as u32)
        };
        let multiplier = match spec.multiplier {
            None => 3,
            Some(m) => u8::try_from(m).ok().filter(|m| *m > 0).ok_or_else(|| {
                FieldError::new("spec.bfd.multiplier", format!("{m} is outside 1..=255"))
            })?,
        };
        Ok(Some(BfdTimers {
            min_rx_ms: interval(
                spec.minimum_recv_interval.as_deref(),
                "spec.bfd.minimumRecvInterval",
            )?,
            min_tx_ms: interval(
                spec.minimum_send_interval.as_deref(),
                "spec.bfd.minimumSendInterval",
            )?,
            multiplier,
        }))
    }

    /// `numAllowedLocalASNumbers`, if set.
    pub fn num_allowed_local_as_numbers(&self) -> Result<Option<u8>, FieldError> {
        self.num_allowed_local_as_numbers
            .map(|n| {
                u8::try_from(n).map_err(|_| {
                    FieldError::new(
                        "spec.numAllowedLocalASNumbers",
                        format!("{n} is outside 0..=255"),
                    )
                })
            })
            .transpose()
    }

    /// `ttlSecurity` hops, if set (1..=255; GTSM expects TTL 256 - hops, RFC 5082 §3).
    pub fn ttl_security(&self) -> Result<Option<u8>, FieldError> {
        self.ttl_security
            .map(|n| match u8::try_from(n) {
                Ok(h) if h >= 1 => Ok(h),
                _ => Err(FieldError::new(
                    "spec.ttlSecurity",
                    format!("{n} hops is outside 1..=255"),
                )),
            })
            .transpose()
    }

    /// `ebgpMultihop`, if set (1..=255, and not with `ttlSecurity`).
    pub fn ebgp_multihop(&self) -> Result<Option<u8>, FieldError> {
        let Some(n) = self.ebgp_multihop else {
            return Ok(None);
        };
        let ttl = u8::try_from(n).ok().filter(|t| *t >= 1).ok_or_else(|| {
            FieldError::new("spec.ebgpMultihop", format!("{n} is outside 1..=255"))
        })?;
        if self.ttl_security.is_some() {
            return Err(FieldError::new(
                "spec.ebgpMultihop",
                "cannot be combined with spec.ttlSecurity (GTSM sends with TTL 255)",
            ));
        }
        Ok(Some(ttl))
    }

    /// Checks every field and the exclusivity rules.
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(node) = &self.node {
            check_name(node, "spec.node")?;
        }
        let node_selector = self.node_selector()?;
        if self.node.is_some() && node_selector.is_some() {
            return Err(FieldError::new(
                "spec.nodeSelector",
                "cannot be combined with spec.node",
            ));
        }
        let peer = self.peer_address()?;
        let peer_selector = self.peer_selector()?;
        let asn = self.as_number()?;
        match (peer, peer_selector) {
            (Some(_), Some(_)) => {
                return Err(FieldError::new(
                    "spec.peerSelector",
                    "cannot be combined with spec.peerIP",
                ))
            }
            (None, None) => {
                return Err(FieldError::new(
                    "spec.peerIP",
                    "one of spec.peerIP or spec.peerSelector is required",
                ))
            }
            (Some(_), None) if asn.is_none() => {
                return Err(FieldError::new(
                    "spec.asNumber",
                    "is required with spec.peerIP",
                ))
            }
            (None, Some(_)) if asn.is_some() => {
                return Err(FieldError::new(
                    "spec.asNumber",
                    "must not be set with spec.peerSelector (the selected nodes' own AS is used)",
                ))
            }
            _ => {}
        }
        if let Some(p) = &self.password {
            p.validate("spec.password")?;
        }
        if let Some(s) = &self.source_address {
            check_one_of(s, &SOURCE_ADDRESS_MODES, "spec.sourceAddress")?;
        }
        self.next_hop_mode()?;
        self.max_restart_time()?;
        self.keepalive_time()?;
        self.num_allowed_local_as_numbers()?;
        self.ttl_security()?;
        self.ebgp_multihop()?;
        self.hold_time()?;
        self.max_prefixes()?;
        self.bfd()?;
        for (i, f) in self.filters.iter().enumerate() {
            check_name(f, &format!("spec.filters[{i}]"))?;
        }
        Ok(())
    }
}

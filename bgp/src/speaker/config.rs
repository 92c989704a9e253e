//! The standalone speaker's configuration (TOML), also the shape the agent fills in
//! programmatically.
//!
//! ```toml
//! router_id = "10.0.0.1"
//! local_as = 64512
//! listen = ["0.0.0.0:179", "[::]:179"]     # optional; default both families on port 179
//! hold_time = 90                           # optional
//! connect_retry = 5                        # seconds, optional
//! cluster_id = "10.0.0.1"                  # optional; route reflector cluster id
//! max_paths = 8                            # optional; ECMP paths per prefix
//! control_socket = "/run/speaker.ctl"      # optional; JSON status/route queries
//! shutdown_drain_time = 0                  # seconds; >0: GRACEFUL_SHUTDOWN (RFC 8326) first
//! bfd_port = 3784                          # optional; UDP port of single-hop BFD (RFC 5881)
//! restarting = false                       # optional; true: R bit for the first Restart Time
//! selection_deferral_time = 30             # optional; while restarting, wait this long at most for End-of-RIBs before advertising
//!
//! [[originate]]
//! prefix = "10.244.1.0/24"
//! med = 10                                 # optional attributes
//! local_pref = 200
//! communities = ["64512:100"]
//! large_communities = ["64512:1:2"]
//!
//! [[peer]]
//! address = "10.0.0.2"
//! remote_as = 64513
//! port = 179                               # optional
//! passive = false                          # optional
//! route_reflector_client = false           # optional
//! next_hop = "auto"                        # auto | self | keep
//! password = "secret"                      # optional, TCP MD5
//! ttl_security = 1                         # optional, GTSM hops
//! ebgp_multihop = 2                        # optional, eBGP TTL (default 1: directly connected)
//! local_address = "10.0.0.1"               # optional
//! allow_local_as = 0                       # optional
//! hold_time = 9                            # optional; the speaker-wide value otherwise
//! keepalive_time = 3                       # optional; a third of the negotiated hold time otherwise (and at most that)
//! graceful_restart_time = 120              # optional; Restart Time we advertise, 0 = off
//! add_paths = "rx"                         # optional; ADD-PATH (RFC 7911): rx | tx | on
//!
//! [peer.max_prefixes]                      # optional; Cease/1 above the limit (RFC 4486)
//! limit = 1000                             # per family
//! warning_percent = 75                     # optional; log a warning from this share on
//! restart_after = 60                       # optional seconds; absent: down until reconfigured
//!
//! [peer.bfd]                               # optional; BFD (RFC 5880/5881), needs local_address
//! min_rx_ms = 300                          # optional, 300 ms x 3 by default
//! min_tx_ms = 300
//! multiplier = 3
//!
//! [[policy]]                               # optional; a configured peer's filters
//! peer = "10.0.0.2"
//! import = [{ action = "reject", cidr = "10.99.0.0/16", match = "in" }]
//! export = [{ action = "reject" }]         # a route server's tester: `export none`
//! ```
//!
//! A policy's rules have the model of routerd's `BGPFilter` (Calico's), evaluated per address
//! family in order: the first rule that matches decides, and a route no rule matches is
//! accepted. A rule matches when all of its conditions hold: `cidr` with `match` (`equal`,
//! `not_equal`, `in`, `not_in`; default `in`), `prefix_length = { min, max }`, and
//! `source = "remote_peers"` (only routes learned from peers, not our own). A rule with a
//! `cidr` belongs to that family; one without applies to both.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::packet::{Community, LargeCommunity};

use super::bfd_link::BfdConfig;
use super::prefix_limit::PrefixLimit;

/// Errors reading a speaker configuration; each names the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(#[from] toml::de::Error),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

pub use crate::rib::NextHopMode;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeakerConfig {
    pub router_id: Ipv4Addr,
    pub local_as: u32,
    #[serde(default = "default_listen")]
    pub listen: Vec<SocketAddr>,
    #[serde(default = "default_hold_time")]
    pub hold_time: u16,
    #[serde(default = "default_connect_retry")]
    pub connect_retry: u64,
    #[serde(default)]
    pub cluster_id: Option<Ipv4Addr>,
    #[serde(default = "default_max_paths")]
    pub max_paths: usize,
    #[serde(default)]
    pub control_socket: Option<PathBuf>,
    /// Seconds between re-advertising our routes with GRACEFUL_SHUTDOWN and closing, when a
    /// shutdown will make a peer lose them (see `speaker::shutdown`); 0: close at once.
    #[serde(default)]
    pub shutdown_drain_time: u64,
    /// The UDP port BFD listens on and sends to (RFC 5881 §4: 3784; another only for tests).
    #[serde(default = "default_bfd_port")]
    pub bfd_port: u16,
    /// This speaker has just restarted with its forwarding state kept (the kernel still has
    /// its routes): sessions opened within a peer's Restart Time of the start set the
    /// Restart State bit (RFC 4724 §3), so the peer keeps our stale routes until our
    /// End-of-RIB instead of ending its graceful-restart procedure at our OPEN.
    #[serde(default)]
    pub restarting: bool,
    /// While `restarting`: at most this many seconds (the Selection_Deferral_Timer of
    /// RFC 4724 §4.1) we send nothing, waiting for End-of-RIB from every peer before
    /// advertising (see [`super::deferral`]); 0 advertises at once.
    #[serde(default = "default_selection_deferral_time")]
    pub selection_deferral_time: u64,
    #[serde(default)]
    pub originate: Vec<Origination>,
    #[serde(default, rename = "peer")]
    pub peers: Vec<PeerConfig>,
    /// Import and export filters of configured peers (absent: accept everything).
    #[serde(default, rename = "policy")]
    pub policies: Vec<PolicyConfig>,
}

/// One peer's filters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The peer's address, as in its `[[peer]]`.
    pub peer: IpAddr,
    /// Rules for the routes the peer sends us.
    #[serde(default)]
    pub import: Vec<RuleConfig>,
    /// Rules for the routes we advertise to the peer.
    #[serde(default)]
    pub export: Vec<RuleConfig>,
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    Accept,
    Reject,
}

/// How a rule's `cidr` is compared with a route's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleMatch {
    Equal,
    NotEqual,
    In,
    NotIn,
}

/// Which routes a rule applies to by where they came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleSource {
    /// Only routes learned from peers.
    RemotePeers,
}

/// Inclusive prefix-length bounds; an absent bound does not constrain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleLength {
    #[serde(default)]
    pub min: Option<u8>,
    #[serde(default)]
    pub max: Option<u8>,
}

/// One filter rule (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub action: RuleAction,
    #[serde(default)]
    pub cidr: Option<IpNet>,
    #[serde(default, rename = "match")]
    pub match_operator: Option<RuleMatch>,
    #[serde(default)]
    pub prefix_length: Option<RuleLength>,
    #[serde(default)]
    pub source: Option<RuleSource>,
}

impl RuleConfig {
    /// The rule in the RIB's terms.
    pub fn to_rule(&self) -> crate::rib::FilterRule {
        use crate::rib::{FilterAction, FilterRule, MatchOperator, RouteSourceMatch};
        let action = match self.action {
            RuleAction::Accept => FilterAction::Accept,
            RuleAction::Reject => FilterAction::Reject,
        };
        let mut rule = match self.cidr {
            Some(cidr) => FilterRule::new(
                cidr,
                match self.match_operator.unwrap_or(RuleMatch::In) {
                    RuleMatch::Equal => MatchOperator::Equal,
                    RuleMatch::NotEqual => MatchOperator::NotEqual,
                    RuleMatch::In => MatchOperator::In,
                    RuleMatch::NotIn => MatchOperator::NotIn,
                },
                action,
            ),
            None => FilterRule::any(action),
        };
        if let Some(len) = self.prefix_length {
            rule = rule.with_prefix_length(len.min, len.max);
        }
        if let Some(RuleSource::RemotePeers) = self.source {
            rule = rule.with_source(RouteSourceMatch::RemotePeers);
        }
        rule
    }

    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.match_operator.is_some() && self.cidr.is_none() {
            return Err(invalid(
                format!("{field}.match"),
                "needs a cidr to compare with",
            ));
        }
        if let Some(RuleLength { min, max }) = self.prefix_length {
            let most = match self.cidr {
                Some(IpNet::V6(_)) => 128,
                Some(IpNet::V4(_)) => 32,
                None => 128,
            };
            for (name, v) in [("min", min), ("max", max)] {
                if v.is_some_and(|v| v > most) {
                    return Err(invalid(
                        format!("{field}.prefix_length.{name}"),
                        format!("must be at most {most}"),
                    ));
                }
            }
            if let (Some(a), Some(b)) = (min, max) {
                if a > b {
                    return Err(invalid(
                        format!("{field}.prefix_length"),
                        "min is above max",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Rules as a per-family filter: a rule with a `cidr` in its family, one without in both.
pub fn route_filter(rules: &[RuleConfig]) -> crate::rib::RouteFilter {
    let mut filter = crate::rib::RouteFilter::default();
    for r in rules {
        let rule = r.to_rule();
        match r.cidr {
            Some(IpNet::V4(_)) => filter.v4.push(rule),
            Some(IpNet::V6(_)) => filter.v6.push(rule),
            None => {
                filter.v4.push(rule.clone());
                filter.v6.push(rule);
            }
        }
    }
    filter
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origination {
    pub prefix: IpNet,
    #[serde(default)]
    pub med: Option<u32>,
    #[serde(default)]
    pub local_pref: Option<u32>,
    /// Standard communities as `ASN:VALUE`.
    #[serde(default)]
    pub communities: Vec<String>,
    /// Large communities as `GLOBAL:LOCAL1:LOCAL2`.
    #[serde(default)]
    pub large_communities: Vec<String>,
}

/// ADD-PATH on a session (RFC 7911), in BIRD's words (`add paths rx|tx|on`), for both
/// unicast families: what we advertise; each direction is used where the peer offers the
/// other side of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddPaths {
    /// Receive several paths per prefix from the peer, each under its path identifier.
    Rx,
    /// Send the peer every path of a prefix (as a route reflector passing on every ECMP
    /// path), instead of only the best.
    Tx,
    /// Both.
    On,
}

impl AddPaths {
    /// The mode of the ADD-PATH capability (RFC 7911 §4).
    pub fn mode(self) -> crate::packet::AddPathMode {
        match self {
            AddPaths::Rx => crate::packet::AddPathMode::Receive,
            AddPaths::Tx => crate::packet::AddPathMode::Send,
            AddPaths::On => crate::packet::AddPathMode::Both,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub address: IpAddr,
    pub remote_as: u32,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub passive: bool,
    #[serde(default)]
    pub route_reflector_client: bool,
    #[serde(default)]
    pub next_hop: NextHopMode,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub ttl_security: Option<u8>,
    /// The TTL of an eBGP session's packets (FRR's `ebgp-multihop`, BIRD's `multihop`):
    /// absent, 1, so an eBGP peer must be directly connected (RFC 4271 §5.1.3's usual case,
    /// the default of BIRD, FRR and Cilium); a number lets it be that many hops away.
    /// Ignored for iBGP (the system's TTL) and refused together with `ttl_security` (GTSM
    /// sends with TTL 255).
    #[serde(default)]
    pub ebgp_multihop: Option<u8>,
    #[serde(default)]
    pub local_address: Option<IpAddr>,
    #[serde(default)]
    pub allow_local_as: u8,
    /// Hold time offered to this peer; the speaker-wide value when absent.
    #[serde(default)]
    pub hold_time: Option<u16>,
    /// Seconds between our KEEPALIVEs; absent: a third of the negotiated hold time, which
    /// also caps it (RFC 4271 §10).
    #[serde(default)]
    pub keepalive_time: Option<u16>,
    /// The Restart Time we advertise in the Graceful Restart capability (RFC 4724 §3): how
    /// long the peer keeps our routes while we restart (BIRD's `graceful restart time`,
    /// Calico's `maxRestartTime`). Absent: [`DEFAULT_RESTART_TIME`]; 0: the capability is
    /// not advertised and a shutdown sends Cease, so the peer withdraws our routes at once.
    #[serde(default)]
    pub graceful_restart_time: Option<u16>,
    /// The most prefixes of one family the peer may announce (see [`super::prefix_limit`]).
    #[serde(default)]
    pub max_prefixes: Option<PrefixLimit>,
    /// BFD on this session (see [`super::bfd_link`]): BGP waits for BFD Up and goes down
    /// with it.
    #[serde(default)]
    pub bfd: Option<BfdConfig>,
    /// ADD-PATH (RFC 7911) on this session; absent, none (one path per prefix each way).
    #[serde(default)]
    pub add_paths: Option<AddPaths>,
}

/// The Restart Time advertised when a peer's configuration has none: 120 s, as BIRD.
pub const DEFAULT_RESTART_TIME: u16 = 120;

fn default_listen() -> Vec<SocketAddr> {
    vec![
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 179)),
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 179)),
    ]
}
fn default_selection_deferral_time() -> u64 {
    30
}
fn default_hold_time() -> u16 {
    90
}
fn default_connect_retry() -> u64 {
    5
}
/// The single-hop BFD port (RFC 5881 §4).
pub const DEFAULT_BFD_PORT: u16 = bfd::CONTROL_PORT;

fn default_bfd_port() -> u16 {
    DEFAULT_BFD_PORT
}
fn default_max_paths() -> usize {
    8
}

impl SpeakerConfig {
    pub fn from_file(path: &std::path::Path) -> Result<SpeakerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        SpeakerConfig::from_toml(&text)
    }

    pub fn from_toml(text: &str) -> Result<SpeakerConfig, ConfigError> {
        let c: SpeakerConfig = toml::from_str(text)?;
        c.validate()?;
        Ok(c)
    }

    /// Checks what serde cannot: value ranges and cross-field rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.router_id.is_unspecified() {
            return Err(invalid(
                "router_id",
                "0.0.0.0 is not a valid BGP identifier (RFC 6286 §2.1)",
            ));
        }
        if self.local_as == 0 {
            return Err(invalid("local_as", "AS 0 is reserved (RFC 7607)"));
        }
        if self.hold_time == 1 || self.hold_time == 2 {
            return Err(invalid(
                "hold_time",
                "must be 0 or at least 3 seconds (RFC 4271 §4.2)",
            ));
        }
        if self.max_paths == 0 {
            return Err(invalid("max_paths", "must be at least 1"));
        }
        for (i, o) in self.originate.iter().enumerate() {
            if o.prefix.trunc() != o.prefix {
                return Err(invalid(
                    format!("originate[{i}].prefix"),
                    format!("{} has host bits set", o.prefix),
                ));
            }
            for (j, c) in o.communities.iter().enumerate() {
                parse_community(c)
                    .map_err(|e| invalid(format!("originate[{i}].communities[{j}]"), e))?;
            }
            for (j, c) in o.large_communities.iter().enumerate() {
                parse_large_community(c)
                    .map_err(|e| invalid(format!("originate[{i}].large_communities[{j}]"), e))?;
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            p.validate().map_err(|e| match e {
                ConfigError::Invalid { field, reason } => {
                    invalid(format!("peer[{i}].{field}"), reason)
                }
                other => other,
            })?;
            if !seen.insert(p.address) {
                return Err(invalid(
                    format!("peer[{i}].address"),
                    format!("{} is configured twice", p.address),
                ));
            }
        }
        let mut with_policy = std::collections::HashSet::new();
        for (i, policy) in self.policies.iter().enumerate() {
            if !seen.contains(&policy.peer) {
                return Err(invalid(
                    format!("policy[{i}].peer"),
                    format!("{} is not a configured peer", policy.peer),
                ));
            }
            if !with_policy.insert(policy.peer) {
                return Err(invalid(
                    format!("policy[{i}].peer"),
                    format!("{} has a policy already", policy.peer),
                ));
            }
            for (side, rules) in [("import", &policy.import), ("export", &policy.export)] {
                for (j, rule) in rules.iter().enumerate() {
                    rule.validate(&format!("policy[{i}].{side}[{j}]"))?;
                }
            }
        }
        Ok(())
    }
}

impl PeerConfig {
    /// The Restart Time to advertise, or `None` when Graceful Restart is off for this peer.
    pub fn restart_time(&self) -> Option<u16> {
        match self.graceful_restart_time.unwrap_or(DEFAULT_RESTART_TIME) {
            0 => None,
            t => Some(t),
        }
    }

    /// Checks one peer's settings; errors name the field relative to the peer.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.remote_as == 0 {
            return Err(invalid("remote_as", "AS 0 is reserved (RFC 7607)"));
        }
        if let Some(h) = self.hold_time {
            if h == 1 || h == 2 {
                return Err(invalid("hold_time", "must be 0 or at least 3 seconds"));
            }
        }
        if self.keepalive_time == Some(0) {
            // Only a hold time of 0 turns keepalives off (RFC 4271 §4.4).
            return Err(invalid("keepalive_time", "must be at least 1 second"));
        }
        if self.password.as_ref().is_some_and(|k| k.len() > 80) {
            return Err(invalid("password", "TCP MD5 keys are at most 80 octets"));
        }
        if self.ttl_security == Some(0) {
            return Err(invalid("ttl_security", "hop count must be 1..=255"));
        }
        if self.ebgp_multihop == Some(0) {
            return Err(invalid("ebgp_multihop", "TTL must be 1..=255"));
        }
        if self.ebgp_multihop.is_some() && self.ttl_security.is_some() {
            return Err(invalid(
                "ebgp_multihop",
                "cannot be combined with ttl_security (GTSM sends with TTL 255)",
            ));
        }
        if self.graceful_restart_time.is_some_and(|t| t > 4095) {
            // The capability carries the Restart Time in 12 bits (RFC 4724 §3).
            return Err(invalid(
                "graceful_restart_time",
                "must be at most 4095 seconds (12 bits, RFC 4724 §3)",
            ));
        }
        if let Some(b) = &self.bfd {
            b.session_config()
                .map_err(|reason| invalid("bfd", reason))?;
            if self.local_address.is_none() {
                return Err(invalid(
                    "bfd",
                    "needs local_address: single-hop BFD sends from the address on the peer's link (RFC 5881 §4)",
                ));
            }
        }
        if let Some(limit) = &self.max_prefixes {
            limit
                .validate()
                .map_err(|(field, reason)| invalid(field, reason))?;
        }
        Ok(())
    }
}

/// Parses a standard community written `ASN:VALUE` (both 16-bit), or a well-known name.
pub fn parse_community(s: &str) -> Result<Community, String> {
    match s {
        "no-export" => return Ok(Community::NO_EXPORT),
        "no-advertise" => return Ok(Community::NO_ADVERTISE),
        "graceful-shutdown" => return Ok(Community::GRACEFUL_SHUTDOWN),
        _ => {}
    }
    let (a, v) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not ASN:VALUE"))?;
    let a: u16 = a
        .parse()
        .map_err(|_| format!("{a:?} is not a 16-bit AS number"))?;
    let v: u16 = v
        .parse()
        .map_err(|_| format!("{v:?} is not a 16-bit value"))?;
    Ok(Community::new(a, v))
}

/// Parses a large community written `GLOBAL:LOCAL1:LOCAL2` (RFC 8092 §3: 32 bits each).
pub fn parse_large_community(s: &str) -> Result<LargeCommunity, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let [g, l1, l2] = parts.as_slice() else {
        return Err(format!("{s:?} is not GLOBAL:LOCAL1:LOCAL2"));
    };
    let num = |x: &str| {
        x.parse::<u32>()
            .map_err(|_| format!("{x:?} is not a 32-bit number"))
    };
    Ok(LargeCommunity {
        global: num(g)?,
        local1: num(l1)?,
        local2: num(l2)?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn communities_print_as_they_parse() {
        for text in ["65001:100", "0:0", "65535:65281"] {
            assert_eq!(parse_community(text).unwrap().to_string(), text);
        }
        assert_eq!(
            parse_community("no-export").unwrap().to_string(),
            "65535:65281"
        );
        let large = "4200000000:1:4294967295";
        assert_eq!(parse_large_community(large).unwrap().to_string(), large);
    }

    #[test]
    fn parses_full_example() {
        let c = SpeakerConfig::from_toml(
            r#"
router_id = "10.0.0.1"
local_as = 64512
listen = ["127.0.0.1:1179"]
[[originate]]
prefix = "10.244.1.0/24"
med = 10
communities = ["64512:100"]
large_communities = ["64512:1:2"]
[[peer]]
address = "10.0.0.2"
remote_as = 64513
next_hop = "self"
password = "s3cret"
ttl_security = 1
"#,
        )
        .unwrap();
        assert_eq!(c.peers[0].next_hop, NextHopMode::SelfAddress);
        assert_eq!(c.hold_time, 90);
        assert_eq!(c.originate[0].med, Some(10));
    }

    #[test]
    fn rejects_bad_fields_naming_them() {
        let base = "router_id = \"10.0.0.1\"\nlocal_as = 1\n";
        let cases = [
            ("router_id = \"0.0.0.0\"\nlocal_as = 1\n", "router_id"),
            ("router_id = \"10.0.0.1\"\nlocal_as = 0\n", "local_as"),
            (&format!("{base}hold_time = 2\n"), "hold_time"),
            (&format!("{base}[[originate]]\nprefix = \"10.0.0.1/24\"\n"), "originate[0].prefix"),
            (&format!("{base}[[originate]]\nprefix = \"10.0.0.0/24\"\ncommunities = [\"x\"]\n"), "originate[0].communities[0]"),
            (&format!("{base}[[peer]]\naddress = \"10.0.0.2\"\nremote_as = 0\n"), "peer[0].remote_as"),
            (&format!("{base}[[peer]]\naddress = \"10.0.0.2\"\nremote_as = 2\n[[peer]]\naddress = \"10.0.0.2\"\nremote_as = 3\n"), "peer[1].address"),
            (&format!("{base}[[peer]]\naddress = \"10.0.0.2\"\nremote_as = 2\nttl_security = 0\n"), "peer[0].ttl_security"),
            (&format!("{base}[[peer]]\naddress = \"10.0.0.2\"\nremote_as = 2\nebgp_multihop = 0\n"), "peer[0].ebgp_multihop"),
            (&format!("{base}[[peer]]\naddress = \"10.0.0.2\"\nremote_as = 2\nebgp_multihop = 2\nttl_security = 1\n"), "peer[0].ebgp_multihop"),
        ];
        for (text, field) in cases {
            let err = SpeakerConfig::from_toml(text).unwrap_err().to_string();
            assert!(err.starts_with(field), "{field}: {err}");
        }
        let err = SpeakerConfig::from_toml(&format!("{base}bogus = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn policies_parse_into_per_family_filters_and_bad_ones_are_named() {
        use crate::rib::{FilterAction, FilterRule, MatchOperator, RouteSourceMatch};
        let base = "router_id = \"10.0.0.1\"\nlocal_as = 1\n\
                    [[peer]]\naddress = \"10.0.0.2\"\nremote_as = 2\n";
        let c = SpeakerConfig::from_toml(&format!(
            "{base}[[policy]]\npeer = \"10.0.0.2\"\n\
             import = [{{ action = \"reject\", cidr = \"10.99.0.0/16\" }}, \
                       {{ action = \"accept\", cidr = \"fd00::/8\", match = \"not_in\", prefix_length = {{ max = 64 }} }}]\n\
             export = [{{ action = \"reject\", source = \"remote_peers\" }}]\n"
        ))
        .unwrap();
        let p = &c.policies[0];
        let import = route_filter(&p.import);
        assert_eq!(
            import.v4,
            vec![FilterRule::new(
                "10.99.0.0/16".parse().unwrap(),
                MatchOperator::In,
                FilterAction::Reject
            )]
        );
        assert_eq!(
            import.v6,
            vec![FilterRule::new(
                "fd00::/8".parse().unwrap(),
                MatchOperator::NotIn,
                FilterAction::Accept
            )
            .with_prefix_length(None, Some(64))]
        );
        let export = route_filter(&p.export);
        let reject_learned =
            FilterRule::any(FilterAction::Reject).with_source(RouteSourceMatch::RemotePeers);
        assert_eq!(export.v4, vec![reject_learned.clone()]);
        assert_eq!(export.v6, vec![reject_learned]);

        for (policy, field) in [
            ("peer = \"10.0.0.9\"\n", "policy[0].peer"),
            (
                "peer = \"10.0.0.2\"\nimport = [{ action = \"reject\", match = \"in\" }]\n",
                "policy[0].import[0].match",
            ),
            (
                "peer = \"10.0.0.2\"\nexport = [{ action = \"accept\", cidr = \"10.0.0.0/8\", prefix_length = { min = 33 } }]\n",
                "policy[0].export[0].prefix_length.min",
            ),
            (
                "peer = \"10.0.0.2\"\nexport = [{ action = \"accept\", prefix_length = { min = 24, max = 16 } }]\n",
                "policy[0].export[0].prefix_length",
            ),
        ] {
            let err = SpeakerConfig::from_toml(&format!("{base}[[policy]]\n{policy}"))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(field), "{field}: {err}");
        }
        let twice =
            format!("{base}[[policy]]\npeer = \"10.0.0.2\"\n[[policy]]\npeer = \"10.0.0.2\"\n");
        let err = SpeakerConfig::from_toml(&twice).unwrap_err().to_string();
        assert!(err.starts_with("policy[1].peer"), "{err}");
        let err = SpeakerConfig::from_toml(&format!(
            "{base}[[policy]]\npeer = \"10.0.0.2\"\nimport = [{{ action = \"drop\" }}]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("drop"), "{err}");
    }

    #[test]
    fn communities_parse() {
        assert_eq!(parse_community("65000:7"), Ok(Community::new(65000, 7)));
        assert!(parse_community("70000:1").is_err());
        assert_eq!(
            parse_large_community("4200000000:1:2"),
            Ok(LargeCommunity {
                global: 4_200_000_000,
                local1: 1,
                local2: 2
            })
        );
        assert!(parse_large_community("1:2").is_err());
    }
}

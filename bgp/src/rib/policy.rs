//! Import and export policy with Calico `BGPFilter` semantics, plus the few route
//! modifications Calico configures (communities on export, local preference on import).
//!
//! A [`RouteFilter`] is an ordered list of rules per address family. The first rule that
//! matches decides; if none matches the route is accepted (Calico docs, "BGP filter": "If an
//! address does not match any explicit BGP filter rule, the default action is Accept").

use ipnet::IpNet;

use crate::packet::{Community, LargeCommunity};

/// How a rule's `cidr` is compared with the route's prefix (Calico `matchOperator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOperator {
    /// The prefix is exactly `cidr`.
    Equal,
    /// The prefix is anything but `cidr`.
    NotEqual,
    /// The prefix lies within `cidr` (equal or more specific).
    In,
    /// The prefix does not lie within `cidr`.
    NotIn,
}

/// What a matching rule does (Calico `action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterAction {
    Accept,
    Reject,
}

/// Bounds on the prefix length (Calico `prefixLength {min, max}`), both inclusive. A bound
/// left out does not constrain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrefixLengthRange {
    pub min: Option<u8>,
    pub max: Option<u8>,
}

impl PrefixLengthRange {
    pub fn contains(&self, len: u8) -> bool {
        self.min.is_none_or(|m| len >= m) && self.max.is_none_or(|m| len <= m)
    }
}

/// Which routes a rule applies to by where they came from (Calico `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteSourceMatch {
    /// Only routes learned from BGP peers (Calico `source: RemotePeers`), not our own.
    RemotePeers,
}

/// One filter rule. A rule matches when every condition it has holds: the cidr condition
/// (if `cidr` is set), the prefix-length range (if set) and the source (if set). A rule with
/// no condition at all matches every route (Calico's trailing `- action: Reject`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterRule {
    pub cidr: Option<IpNet>,
    pub match_operator: MatchOperator,
    pub prefix_length: Option<PrefixLengthRange>,
    pub source: Option<RouteSourceMatch>,
    pub action: FilterAction,
}

impl FilterRule {
    /// A rule matching prefixes by `op` against `cidr`.
    pub fn new(cidr: IpNet, op: MatchOperator, action: FilterAction) -> FilterRule {
        FilterRule {
            cidr: Some(cidr),
            match_operator: op,
            prefix_length: None,
            source: None,
            action,
        }
    }

    /// A rule that matches everything.
    pub fn any(action: FilterAction) -> FilterRule {
        FilterRule {
            cidr: None,
            match_operator: MatchOperator::In,
            prefix_length: None,
            source: None,
            action,
        }
    }

    pub fn with_prefix_length(mut self, min: Option<u8>, max: Option<u8>) -> FilterRule {
        self.prefix_length = Some(PrefixLengthRange { min, max });
        self
    }

    pub fn with_source(mut self, source: RouteSourceMatch) -> FilterRule {
        self.source = Some(source);
        self
    }

    /// Whether this rule applies to `prefix`; `learned` says the route came from a BGP peer.
    pub fn matches(&self, prefix: &IpNet, learned: bool) -> bool {
        if let Some(cidr) = &self.cidr {
            let hit = match self.match_operator {
                MatchOperator::Equal => prefix == cidr,
                MatchOperator::NotEqual => prefix != cidr,
                MatchOperator::In => cidr.contains(prefix),
                MatchOperator::NotIn => !cidr.contains(prefix),
            };
            if !hit {
                return false;
            }
        }
        if let Some(range) = &self.prefix_length {
            if !range.contains(prefix.prefix_len()) {
                return false;
            }
        }
        match self.source {
            Some(RouteSourceMatch::RemotePeers) if !learned => return false,
            _ => {}
        }
        true
    }
}

/// Ordered filter rules per family (Calico `importV4`/`importV6` or `exportV4`/`exportV6`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteFilter {
    pub v4: Vec<FilterRule>,
    pub v6: Vec<FilterRule>,
}

impl RouteFilter {
    /// True when the filter has no rules, so every route passes: lets the hot path skip it.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// First match wins; no match accepts.
    pub fn evaluate(&self, prefix: &IpNet, learned: bool) -> FilterAction {
        let rules = match prefix {
            IpNet::V4(_) => &self.v4,
            IpNet::V6(_) => &self.v6,
        };
        rules
            .iter()
            .find(|r| r.matches(prefix, learned))
            .map_or(FilterAction::Accept, |r| r.action)
    }

    pub fn accepts(&self, prefix: &IpNet, learned: bool) -> bool {
        self.evaluate(prefix, learned) == FilterAction::Accept
    }
}

/// What happens to routes a peer sends us, after the RFC acceptance rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImportPolicy {
    pub filter: RouteFilter,
    /// Overrides LOCAL_PREF on every accepted route (for eBGP-learned routes, which carry
    /// none we may use, RFC 4271 §5.1.5, the RIB's default applies when this is unset).
    pub local_pref: Option<u32>,
}

/// Communities attached to advertisements of routes within `prefix` (Calico
/// `BGPConfiguration.prefixAdvertisements`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixCommunities {
    pub prefix: IpNet,
    pub communities: Vec<Community>,
    pub large_communities: Vec<LargeCommunity>,
}

/// What we send a peer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExportPolicy {
    pub filter: RouteFilter,
    /// Added to every route advertised to this peer.
    pub communities: Vec<Community>,
    pub large_communities: Vec<LargeCommunity>,
    /// Added to routes within a prefix, on top of the per-peer ones.
    pub prefix_communities: Vec<PrefixCommunities>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_length_range_bounds_are_inclusive() {
        let r = PrefixLengthRange {
            min: Some(24),
            max: Some(26),
        };
        assert!(!r.contains(23));
        assert!(r.contains(24));
        assert!(r.contains(26));
        assert!(!r.contains(27));
        assert!(PrefixLengthRange::default().contains(0));
    }
}

//! BGP policy from the resources, in the speaker's terms: `BGPFilter` rules as
//! [`RouteFilter`]s and `prefixAdvertisements` as [`PrefixCommunities`]. The resources are
//! checked in the `datastore` crate (which links no BGP code); this is the one place where
//! their checked form meets the speaker's types.

use bgp::packet::{Community, LargeCommunity};
use bgp::rib::{FilterAction, FilterRule, MatchOperator, RouteFilter, RouteSourceMatch};
use datastore::resource::{
    BgpConfigurationSpec, BgpFilterSpec, CheckedFilter, CheckedRule, CidrMatch, FieldError,
    RuleAction,
};

fn rule(r: &CheckedRule) -> FilterRule {
    let mut out = FilterRule::any(match r.action {
        RuleAction::Accept => FilterAction::Accept,
        RuleAction::Reject => FilterAction::Reject,
    });
    if let Some((cidr, op)) = r.cidr {
        out.cidr = Some(cidr);
        out.match_operator = match op {
            CidrMatch::Equal => MatchOperator::Equal,
            CidrMatch::NotEqual => MatchOperator::NotEqual,
            CidrMatch::In => MatchOperator::In,
            CidrMatch::NotIn => MatchOperator::NotIn,
        };
    }
    if let Some((min, max)) = r.prefix_length {
        out = out.with_prefix_length(min, max);
    }
    if r.remote_peers_only {
        out = out.with_source(RouteSourceMatch::RemotePeers);
    }
    out
}

fn route_filter(f: &CheckedFilter) -> RouteFilter {
    RouteFilter {
        v4: f.v4.iter().map(rule).collect(),
        v6: f.v6.iter().map(rule).collect(),
    }
}

/// The filter for routes received from a peer.
pub fn import_filter(spec: &BgpFilterSpec) -> Result<RouteFilter, FieldError> {
    spec.import_rules().map(|f| route_filter(&f))
}

/// The filter for routes advertised to a peer.
pub fn export_filter(spec: &BgpFilterSpec) -> Result<RouteFilter, FieldError> {
    spec.export_rules().map(|f| route_filter(&f))
}

/// `prefixAdvertisements` as the speaker's export modification.
pub fn prefix_communities(
    spec: &BgpConfigurationSpec,
) -> Result<Vec<bgp::rib::PrefixCommunities>, FieldError> {
    Ok(spec
        .prefix_communities()?
        .into_iter()
        .map(|p| bgp::rib::PrefixCommunities {
            prefix: p.prefix,
            communities: p
                .communities
                .iter()
                .map(|c| Community::new(c.asn, c.value))
                .collect(),
            large_communities: p
                .large_communities
                .iter()
                .map(|c| LargeCommunity {
                    global: c.global,
                    local1: c.local1,
                    local2: c.local2,
                })
                .collect(),
        })
        .collect())
}

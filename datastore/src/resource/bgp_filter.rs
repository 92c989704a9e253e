//! `BGPFilter`: ordered accept/reject rules per direction and family, converted into the
//! speaker's [`bgp::rib::RouteFilter`].
//!
//! First matching rule decides; no match accepts (Calico docs, "BGP filter"). A rule's
//! `cidr` and `matchOperator` go together (one without the other is refused, as Calico);
//! a rule with neither matches by prefix length / source alone, or everything.

use bgp::rib::{FilterAction, FilterRule, MatchOperator, RouteFilter, RouteSourceMatch};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::field::{check_one_of, FieldError};

/// Values of `matchOperator`.
pub const MATCH_OPERATORS: [&str; 4] = ["Equal", "NotEqual", "In", "NotIn"];
/// Values of `action`.
pub const ACTIONS: [&str; 2] = ["Accept", "Reject"];
/// Values of `source`.
pub const SOURCES: [&str; 1] = ["RemotePeers"];

/// `spec` of a `BGPFilter`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpFilterSpec {
    /// Rules for IPv4 routes we advertise.
    #[serde(default, rename = "exportV4", skip_serializing_if = "Vec::is_empty")]
    pub export_v4: Vec<BgpFilterRule>,
    /// Rules for IPv4 routes we receive.
    #[serde(default, rename = "importV4", skip_serializing_if = "Vec::is_empty")]
    pub import_v4: Vec<BgpFilterRule>,
    /// Rules for IPv6 routes we advertise.
    #[serde(default, rename = "exportV6", skip_serializing_if = "Vec::is_empty")]
    pub export_v6: Vec<BgpFilterRule>,
    /// Rules for IPv6 routes we receive.
    #[serde(default, rename = "importV6", skip_serializing_if = "Vec::is_empty")]
    pub import_v6: Vec<BgpFilterRule>,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpFilterRule {
    /// The prefix compared with the route's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// `Equal`, `NotEqual`, `In`, `NotIn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_operator: Option<String>,
    /// Bounds on the route's prefix length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_length: Option<PrefixLength>,
    /// `RemotePeers`: only routes learned from BGP peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `Accept` or `Reject`.
    pub action: String,
}

/// `prefixLength`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixLength {
    /// Shortest accepted length, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    /// Longest accepted length, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl BgpFilterRule {
    fn to_rule(&self, family: Family, path: &str) -> Result<FilterRule, FieldError> {
        let (max_len, fam_name) = match family {
            Family::V4 => (32i64, "IPv4"),
            Family::V6 => (128i64, "IPv6"),
        };
        check_one_of(&self.action, &ACTIONS, &format!("{path}.action"))?;
        let action = if self.action == "Accept" {
            FilterAction::Accept
        } else {
            FilterAction::Reject
        };
        let mut rule = FilterRule::any(action);
        match (&self.cidr, &self.match_operator) {
            (Some(text), Some(op)) => {
                let field = format!("{path}.cidr");
                let cidr: IpNet = text
                    .parse()
                    .map_err(|_| FieldError::new(&field, format!("{text:?} is not a CIDR")))?;
                let same_family = matches!(
                    (family, cidr),
                    (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_))
                );
                if !same_family {
                    return Err(FieldError::new(
                        field,
                        format!("{cidr} is not an {fam_name} prefix"),
                    ));
                }
                if cidr.trunc() != cidr {
                    return Err(FieldError::new(
                        field,
                        format!("{cidr} has host bits set; the network is {}", cidr.trunc()),
                    ));
                }
                check_one_of(op, &MATCH_OPERATORS, &format!("{path}.matchOperator"))?;
                rule.cidr = Some(cidr);
                rule.match_operator = match op.as_str() {
                    "Equal" => MatchOperator::Equal,
                    "NotEqual" => MatchOperator::NotEqual,
                    "In" => MatchOperator::In,
                    _ => MatchOperator::NotIn,
                };
            }
            (Some(_), None) => {
                return Err(FieldError::new(
                    format!("{path}.matchOperator"),
                    "is required with cidr",
                ))
            }
            (None, Some(_)) => {
                return Err(FieldError::new(
                    format!("{path}.cidr"),
                    "is required with matchOperator",
                ))
            }
            (None, None) => {}
        }
        if let Some(pl) = &self.prefix_length {
            let bound = |v: Option<i64>, name: &str| -> Result<Option<u8>, FieldError> {
                v.map(|n| match u8::try_from(n) {
                    Ok(b) if i64::from(b) <= max_len => Ok(b),
                    _ => Err(FieldError::new(
                        format!("{path}.prefixLength.{name}"),
                        format!("{n} is outside 0..={max_len} for {fam_name}"),
                    )),
                })
                .transpose()
            };
            let min = bound(pl.min, "min")?;
            let max = bound(pl.max, "max")?;
            if let (Some(lo), Some(hi)) = (min, max) {
                if lo > hi {
                    return Err(FieldError::new(
                        format!("{path}.prefixLength"),
                        format!("min {lo} is greater than max {hi}"),
                    ));
                }
            }
            rule = rule.with_prefix_length(min, max);
        }
        if let Some(src) = &self.source {
            check_one_of(src, &SOURCES, &format!("{path}.source"))?;
            rule = rule.with_source(RouteSourceMatch::RemotePeers);
        }
        Ok(rule)
    }
}

fn convert(
    rules: &[BgpFilterRule],
    family: Family,
    list: &str,
) -> Result<Vec<FilterRule>, FieldError> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| r.to_rule(family, &format!("spec.{list}[{i}]")))
        .collect()
}

impl BgpFilterSpec {
    /// The filter for routes received from a peer.
    pub fn import_filter(&self) -> Result<RouteFilter, FieldError> {
        Ok(RouteFilter {
            v4: convert(&self.import_v4, Family::V4, "importV4")?,
            v6: convert(&self.import_v6, Family::V6, "importV6")?,
        })
    }

    /// The filter for routes advertised to a peer.
    pub fn export_filter(&self) -> Result<RouteFilter, FieldError> {
        Ok(RouteFilter {
            v4: convert(&self.export_v4, Family::V4, "exportV4")?,
            v6: convert(&self.export_v6, Family::V6, "exportV6")?,
        })
    }

    /// Checks every rule.
    pub fn validate(&self) -> Result<(), FieldError> {
        self.export_filter()?;
        self.import_filter()?;
        Ok(())
    }
}

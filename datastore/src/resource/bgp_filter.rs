//! `BGPFilter`: ordered accept/reject rules per direction and family, checked into
//! [`CheckedFilter`]s (the agent turns those into the speaker's route filters; this crate
//! links no BGP code).
//!
//! First matching rule decides; no match accepts (Calico docs, "BGP filter"). A rule's
//! `cidr` and `matchOperator` go together (one without the other is refused, as Calico);
//! a rule with neither matches by prefix length / source alone, or everything.

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
#[cfg_attr(feature = "kubernetes", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "kubernetes", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "kubernetes", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PrefixLength {
    /// Shortest accepted length, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    /// Longest accepted length, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleAction {
    Accept,
    Reject,
}

/// How a rule's `cidr` is compared with the route's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CidrMatch {
    /// The prefix is exactly the cidr.
    Equal,
    /// Anything but the cidr.
    NotEqual,
    /// Within the cidr (equal or more specific).
    In,
    /// Not within the cidr.
    NotIn,
}

/// One rule, every field checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedRule {
    pub action: RuleAction,
    pub cidr: Option<(IpNet, CidrMatch)>,
    /// `prefixLength`, when given: (min, max), each inclusive when set.
    pub prefix_length: Option<(Option<u8>, Option<u8>)>,
    /// `source: RemotePeers`: only routes learned from BGP peers.
    pub remote_peers_only: bool,
}

/// The rules of one direction, per family, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckedFilter {
    pub v4: Vec<CheckedRule>,
    pub v6: Vec<CheckedRule>,
}

use ipam::IpFamily as Family;

impl BgpFilterRule {
    fn checked(&self, family: Family, path: &str) -> Result<CheckedRule, FieldError> {
        let (max_len, fam_name) = (i64::from(family.max_prefix_len()), family.to_string());
        check_one_of(&self.action, &ACTIONS, &format!("{path}.action"))?;
        let action = if self.action == "Accept" {
            RuleAction::Accept
        } else {
            RuleAction::Reject
        };
        let mut rule = CheckedRule {
            action,
            cidr: None,
            prefix_length: None,
            remote_peers_only: false,
        };
        match (&self.cidr, &self.match_operator) {
            (Some(text), Some(op)) => {
                let field = format!("{path}.cidr");
                let cidr: IpNet = text
                    .parse()
                    .map_err(|_| FieldError::new(&field, format!("{text:?} is not a CIDR")))?;
                let same_family = Family::of(&cidr) == family;
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
                let op = match op.as_str() {
                    "Equal" => CidrMatch::Equal,
                    "NotEqual" => CidrMatch::NotEqual,
                    "In" => CidrMatch::In,
                    _ => CidrMatch::NotIn,
                };
                rule.cidr = Some((cidr, op));
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
            rule.prefix_length = Some((min, max));
        }
        if let Some(src) = &self.source {
            check_one_of(src, &SOURCES, &format!("{path}.source"))?;
            rule.remote_peers_only = true;
        }
        Ok(rule)
    }
}

fn convert(
    rules: &[BgpFilterRule],
    family: Family,
    list: &str,
) -> Result<Vec<CheckedRule>, FieldError> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| r.checked(family, &format!("spec.{list}[{i}]")))
        .collect()
}

impl BgpFilterSpec {
    /// The rules for routes received from a peer.
    pub fn import_rules(&self) -> Result<CheckedFilter, FieldError> {
        Ok(CheckedFilter {
            v4: convert(&self.import_v4, Family::V4, "importV4")?,
            v6: convert(&self.import_v6, Family::V6, "importV6")?,
        })
    }

    /// The rules for routes advertised to a peer.
    pub fn export_rules(&self) -> Result<CheckedFilter, FieldError> {
        Ok(CheckedFilter {
            v4: convert(&self.export_v4, Family::V4, "exportV4")?,
            v6: convert(&self.export_v6, Family::V6, "exportV6")?,
        })
    }

    /// Checks every rule.
    pub fn validate(&self) -> Result<(), FieldError> {
        self.export_rules()?;
        self.import_rules()?;
        Ok(())
    }
}

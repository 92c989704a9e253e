//! `BGPConfiguration`: cluster-wide BGP settings (`default`) and per-node overrides
//! (`node.<nodename>`).
//!
//! Settings that only make sense for the whole cluster (the node-to-node mesh, its password
//! and restart time, and the default AS, which is per node on `Node.spec.bgp.asNumber`
//! instead) are refused on a `node.*` configuration, as Calico's documentation marks them
//! "default only".

use std::collections::BTreeMap;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::field::{
    check_name, check_one_of, parse_community, parse_duration, AsNumberText, CommunityValue,
    FieldError, LargeCommunity, PasswordSource, StandardCommunity,
};

/// The communities `prefixAdvertisements` attach to the routes inside one cidr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixCommunities {
    pub prefix: IpNet,
    pub communities: Vec<StandardCommunity>,
    pub large_communities: Vec<LargeCommunity>,
}

/// The AS used when no configuration sets one (Calico's default, a private AS, RFC 6996).
pub const DEFAULT_AS_NUMBER: u32 = 64512;
/// The BGP port (RFC 4271 §8.2.1).
pub const DEFAULT_LISTEN_PORT: u16 = 179;
/// Values of `logSeverityScreen`.
pub const LOG_SEVERITIES: [&str; 5] = ["Debug", "Info", "Warning", "Error", "Fatal"];

/// `spec` of a `BGPConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "kubernetes", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpConfigurationSpec {
    /// Default AS of every node (default 64512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumberText>,
    /// Whether every node peers with every other node (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_to_node_mesh_enabled: Option<bool>,
    /// TCP port the speaker listens on (default 179).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<i64>,
    /// `Debug`, `Info` (default), `Warning`, `Error`, `Fatal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_screen: Option<String>,
    /// Named communities, referred to by `prefixAdvertisements`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<NamedCommunity>,
    /// Communities attached to routes within a prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix_advertisements: Vec<PrefixAdvertisement>,
    /// Kubernetes service cluster IP ranges to advertise.
    #[serde(
        default,
        rename = "serviceClusterIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_cluster_ips: Vec<CidrEntry>,
    /// Service external IP ranges to advertise.
    #[serde(
        default,
        rename = "serviceExternalIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_external_ips: Vec<CidrEntry>,
    /// Service LoadBalancer IP ranges to advertise.
    #[serde(
        default,
        rename = "serviceLoadBalancerIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_load_balancer_ips: Vec<CidrEntry>,
    /// TCP MD5 password of the node-to-node mesh sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_password: Option<PasswordSource>,
    /// Graceful-restart time (RFC 4724) of mesh sessions, e.g. `120s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_max_restart_time: Option<String>,
}

/// `communities[]`: a name for a community value.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "kubernetes", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct NamedCommunity {
    /// The name `prefixAdvertisements` uses.
    pub name: String,
    /// `aa:nn` or `aa:nn:mm`.
    pub value: String,
}

/// `prefixAdvertisements[]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "kubernetes", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PrefixAdvertisement {
    /// Routes within this prefix get the communities.
    pub cidr: String,
    /// Names from `communities` or literal `aa:nn` / `aa:nn:mm` values.
    #[serde(default)]
    pub communities: Vec<String>,
}

/// A `{cidr: ...}` list entry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "kubernetes", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CidrEntry {
    /// A prefix.
    pub cidr: String,
}

/// Which configuration a `BGPConfiguration` name denotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BgpConfigurationScope {
    /// `default`: the cluster-wide settings.
    Global,
    /// `node.<name>`: overrides for one node.
    Node(String),
}

impl BgpConfigurationScope {
    /// Interprets `metadata.name`.
    pub fn from_name(name: &str) -> Result<Self, FieldError> {
        if name == "default" {
            return Ok(BgpConfigurationScope::Global);
        }
        match name.strip_prefix("node.") {
            Some(node) => {
                check_name(node, "metadata.name")?;
                Ok(BgpConfigurationScope::Node(node.to_string()))
            }
            None => Err(FieldError::new(
                "metadata.name",
                format!("{name:?} must be \"default\" or \"node.<nodename>\""),
            )),
        }
    }
}

fn parse_cidr(text: &str, field: &str) -> Result<IpNet, FieldError> {
    let net: IpNet = text
        .parse()
        .map_err(|_| FieldError::new(field, format!("{text:?} is not a CIDR")))?;
    if net.trunc() != net {
        return Err(FieldError::new(
            field,
            format!("{net} has host bits set; the network is {}", net.trunc()),
        ));
    }
    Ok(net)
}

impl BgpConfigurationSpec {
    /// The configured AS, if any.
    pub fn as_number(&self) -> Result<Option<u32>, FieldError> {
        self.as_number
            .as_ref()
            .map(|a| a.parse("spec.asNumber"))
            .transpose()
    }

    /// `listenPort`, if set.
    pub fn listen_port(&self) -> Result<Option<u16>, FieldError> {
        self.listen_port
            .map(|p| match u16::try_from(p) {
                Ok(p) if p != 0 => Ok(p),
                _ => Err(FieldError::new(
                    "spec.listenPort",
                    format!("{p} is not a port (1..=65535)"),
                )),
            })
            .transpose()
    }

    /// `nodeMeshMaxRestartTime`, if set.
    pub fn node_mesh_max_restart_time(&self) -> Result<Option<Duration>, FieldError> {
        self.node_mesh_max_restart_time
            .as_deref()
            .map(|t| parse_duration(t, "spec.nodeMeshMaxRestartTime"))
            .transpose()
    }

    /// The named communities.
    pub fn named_communities(&self) -> Result<BTreeMap<String, CommunityValue>, FieldError> {
        let mut out = BTreeMap::new();
        for (i, c) in self.communities.iter().enumerate() {
            if c.name.is_empty() {
                return Err(FieldError::new(
                    format!("spec.communities[{i}].name"),
                    "must not be empty",
                ));
            }
            let value = parse_community(&c.value, &format!("spec.communities[{i}].value"))?;
            if out.insert(c.name.clone(), value).is_some() {
                return Err(FieldError::new(
                    format!("spec.communities[{i}].name"),
                    format!("{:?} is defined twice", c.name),
                ));
            }
        }
        Ok(out)
    }

    /// `prefixAdvertisements` resolved: names looked up, values parsed.
    pub fn prefix_communities(&self) -> Result<Vec<PrefixCommunities>, FieldError> {
        let named = self.named_communities()?;
        let mut out = Vec::new();
        for (i, adv) in self.prefix_advertisements.iter().enumerate() {
            let prefix = parse_cidr(&adv.cidr, &format!("spec.prefixAdvertisements[{i}].cidr"))?;
            let mut entry = PrefixCommunities {
                prefix,
                communities: Vec::new(),
                large_communities: Vec::new(),
            };
            for (j, c) in adv.communities.iter().enumerate() {
                let field = format!("spec.prefixAdvertisements[{i}].communities[{j}]");
                let value = match named.get(c) {
                    Some(v) => *v,
                    None if c.contains(':') => parse_community(c, &field)?,
                    None => {
                        return Err(FieldError::new(
                            field,
                            format!(
                            "{c:?} is neither a name from spec.communities nor aa:nn / aa:nn:mm"
                        ),
                        ))
                    }
                };
                match value {
                    CommunityValue::Standard(s) => entry.communities.push(s),
                    CommunityValue::Large(l) => entry.large_communities.push(l),
                }
            }
            out.push(entry);
        }
        Ok(out)
    }

    fn cidrs(list: &[CidrEntry], name: &str) -> Result<Vec<IpNet>, FieldError> {
        list.iter()
            .enumerate()
            .map(|(i, e)| parse_cidr(&e.cidr, &format!("spec.{name}[{i}].cidr")))
            .collect()
    }

    /// `serviceClusterIPs` parsed.
    pub fn service_cluster_ips(&self) -> Result<Vec<IpNet>, FieldError> {
        Self::cidrs(&self.service_cluster_ips, "serviceClusterIPs")
    }
    /// `serviceExternalIPs` parsed.
    pub fn service_external_ips(&self) -> Result<Vec<IpNet>, FieldError> {
        Self::cidrs(&self.service_external_ips, "serviceExternalIPs")
    }
    /// `serviceLoadBalancerIPs` parsed.
    pub fn service_load_balancer_ips(&self) -> Result<Vec<IpNet>, FieldError> {
        Self::cidrs(&self.service_load_balancer_ips, "serviceLoadBalancerIPs")
    }

    /// Checks every field; `name` is `metadata.name` (decides which fields are allowed).
    pub fn validate(&self, name: &str) -> Result<(), FieldError> {
        let scope = BgpConfigurationScope::from_name(name)?;
        self.as_number()?;
        self.listen_port()?;
        if let Some(sev) = &self.log_severity_screen {
            check_one_of(sev, &LOG_SEVERITIES, "spec.logSeverityScreen")?;
        }
        self.prefix_communities()?;
        self.service_cluster_ips()?;
        self.service_external_ips()?;
        self.service_load_balancer_ips()?;
        if let Some(p) = &self.node_mesh_password {
            p.validate("spec.nodeMeshPassword")?;
        }
        self.node_mesh_max_restart_time()?;
        if let BgpConfigurationScope::Node(_) = scope {
            let global_only = [
                ("spec.asNumber", self.as_number.is_some()),
                (
                    "spec.nodeToNodeMeshEnabled",
                    self.node_to_node_mesh_enabled.is_some(),
                ),
                ("spec.nodeMeshPassword", self.node_mesh_password.is_some()),
                (
                    "spec.nodeMeshMaxRestartTime",
                    self.node_mesh_max_restart_time.is_some(),
                ),
            ];
            for (field, set) in global_only {
                if set {
                    return Err(FieldError::new(
                        field,
                        "may only be set in the \"default\" BGPConfiguration",
                    ));
                }
            }
        }
        Ok(())
    }
}

//! `IPPool`: the address range pods draw from, with Calico v3's fields and validation rules.
//!
//! [`IpPoolSpec`] is the wire form (`spec:` of a `projectcalico.org/v3` `IPPool`, camelCase
//! field names). Like Calico's own API types, modes and the selector are kept as text there, so
//! that a bad value is reported by [`IpPool::new`] with the field it came from
//! (`spec.ipipMode: ...`) rather than as an anonymous deserialisation error. [`IpPool`] is the
//! validated form the allocator uses; it cannot be built without passing validation.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::selector::Selector;

/// Allowed IPv4 block sizes (as Calico: 20..=32).
pub const IPV4_BLOCK_SIZES: std::ops::RangeInclusive<u8> = 20..=32;
/// Allowed IPv6 block sizes (Calico: 116..=128).
pub const IPV6_BLOCK_SIZES: std::ops::RangeInclusive<u8> = 116..=128;
/// Default IPv4 block size: /24, one block per node for typical pod densities (this project's
/// choice; upstream Calico defaults to /26 and relies on nodes claiming further blocks).
pub const DEFAULT_IPV4_BLOCK_SIZE: u8 = 24;
/// Default IPv6 block size (Calico's).
pub const DEFAULT_IPV6_BLOCK_SIZE: u8 = 122;

/// Address family of a pool or of a requested address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    /// Both families, IPv4 first.
    pub const ALL: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

    /// The family of a prefix.
    pub fn of(net: &IpNet) -> Self {
        Self::of_address(net.addr())
    }

    /// The family of an address.
    pub fn of_address(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// Whether `address` is of this family.
    pub fn holds(self, address: IpAddr) -> bool {
        Self::of_address(address) == self
    }

    /// The longest prefix length of the family (32 or 128).
    pub fn max_prefix_len(self) -> u8 {
        match self {
            IpFamily::V4 => 32,
            IpFamily::V6 => 128,
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        })
    }
}

/// When traffic to a pool's addresses on other nodes is encapsulated (Calico `ipipMode` /
/// `vxlanMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum EncapMode {
    /// Plain routed (BGP-distributed) traffic.
    #[default]
    Never,
    /// Always encapsulate between nodes.
    Always,
    /// Encapsulate only towards nodes in another subnet.
    CrossSubnet,
}

impl EncapMode {
    /// True unless `Never`.
    pub fn is_enabled(self) -> bool {
        self != EncapMode::Never
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "" | "Never" => Some(EncapMode::Never),
            "Always" => Some(EncapMode::Always),
            "CrossSubnet" => Some(EncapMode::CrossSubnet),
            _ => None,
        }
    }

    /// The Calico spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EncapMode::Never => "Never",
            EncapMode::Always => "Always",
            EncapMode::CrossSubnet => "CrossSubnet",
        }
    }
}

impl fmt::Display for EncapMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `spec` of a Calico v3 `IPPool`, as read from a datastore (JSON/YAML, camelCase).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct IpPoolSpec {
    /// The pool's prefix, e.g. `10.244.0.0/16`; must be a network address.
    pub cidr: String,
    /// Prefix length of the blocks nodes claim; defaults per family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<i64>,
    /// `Never` (default), `Always` or `CrossSubnet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipip_mode: Option<String>,
    /// `Never` (default), `Always` or `CrossSubnet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_mode: Option<String>,
    /// Masquerade traffic from the pool leaving the cluster.
    #[serde(default)]
    pub nat_outgoing: bool,
    /// No new addresses are assigned from a disabled pool (existing ones stay valid).
    #[serde(default)]
    pub disabled: bool,
    /// Which nodes may assign from this pool; empty means `all()`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
}

/// A pool definition was rejected; `field` is the path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PoolValidationError {
    /// The pool's name.
    pub pool: String,
    /// Field path, e.g. `spec.blockSize`.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

/// A validated pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpPool {
    name: String,
    cidr: IpNet,
    block_size: u8,
    ipip_mode: EncapMode,
    vxlan_mode: EncapMode,
    nat_outgoing: bool,
    disabled: bool,
    node_selector: Selector,
}

/// Ranges Calico refuses as pools: their addresses are never routed between hosts.
const RESERVED: [(&str, &str); 5] = [
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
];

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl IpPool {
    /// Validates `spec` as the pool named `name`.
    pub fn new(name: &str, spec: &IpPoolSpec) -> Result<Self, PoolValidationError> {
        let err = |field: &'static str, message: String| PoolValidationError {
            pool: name.to_string(),
            field,
            message,
        };
        if !is_dns_subdomain(name) {
            return Err(err(
                "metadata.name",
                format!("{name:?} is not a lowercase DNS subdomain name"),
            ));
        }
        let cidr: IpNet = spec.cidr.trim().parse().map_err(|_| {
            err(
                "spec.cidr",
                format!("{:?} is not a CIDR (address/prefix length)", spec.cidr),
            )
        })?;
        if cidr.trunc() != cidr {
            return Err(err(
                "spec.cidr",
                format!(
                    "{cidr} has host bits set; the network address is {}",
                    cidr.trunc()
                ),
            ));
        }
        for (reserved, what) in RESERVED {
            let reserved: IpNet = reserved.parse().map_err(|_| {
                err(
                    "spec.cidr",
                    format!("internal: bad reserved range {reserved}"),
                )
            })?;
            if reserved.contains(&cidr.network()) || cidr.contains(&reserved.network()) {
                return Err(err(
                    "spec.cidr",
                    format!("{cidr} overlaps the {what} range {reserved}"),
                ));
            }
        }
        let family = IpFamily::of(&cidr);
        let (allowed, default) = match family {
            IpFamily::V4 => (IPV4_BLOCK_SIZES, DEFAULT_IPV4_BLOCK_SIZE),
            IpFamily::V6 => (IPV6_BLOCK_SIZES, DEFAULT_IPV6_BLOCK_SIZE),
        };
        let block_size = match spec.block_size {
            None => default,
            Some(b) => match u8::try_from(b) {
                Ok(b) if allowed.contains(&b) => b,
                _ => {
                    return Err(err(
                        "spec.blockSize",
                        format!(
                            "{b} is outside {}..={} for an {family} pool",
                            allowed.start(),
                            allowed.end()
                        ),
                    ))
                }
            },
        };
        if block_size < cidr.prefix_len() {
            return Err(err(
                "spec.blockSize",
                format!("a /{block_size} block does not fit in the pool {cidr}"),
            ));
        }
        let mode = |field: &'static str, text: &Option<String>| {
            let text = text.as_deref().unwrap_or("");
            EncapMode::parse(text).ok_or_else(|| {
                err(
                    field,
                    format!("{text:?} is not one of Never, Always, CrossSubnet"),
                )
            })
        };
        let ipip_mode = mode("spec.ipipMode", &spec.ipip_mode)?;
        let vxlan_mode = mode("spec.vxlanMode", &spec.vxlan_mode)?;
        if ipip_mode.is_enabled() && family == IpFamily::V6 {
            return Err(err(
                "spec.ipipMode",
                format!("{ipip_mode} is not supported for an IPv6 pool (IP-in-IP carries IPv4)"),
            ));
        }
        if ipip_mode.is_enabled() && vxlan_mode.is_enabled() {
            return Err(err(
                "spec.vxlanMode",
                format!("{vxlan_mode} cannot be combined with spec.ipipMode {ipip_mode}"),
            ));
        }
        let node_selector = Selector::parse(spec.node_selector.as_deref().unwrap_or(""))
            .map_err(|e| err("spec.nodeSelector", e.to_string()))?;
        Ok(IpPool {
            name: name.to_string(),
            cidr,
            block_size,
            ipip_mode,
            vxlan_mode,
            nat_outgoing: spec.nat_outgoing,
            disabled: spec.disabled,
            node_selector,
        })
    }

    /// The spec this pool was built from, normalised (defaults filled in).
    pub fn to_spec(&self) -> IpPoolSpec {
        IpPoolSpec {
            cidr: self.cidr.to_string(),
            block_size: Some(i64::from(self.block_size)),
            ipip_mode: Some(self.ipip_mode.to_string()),
            vxlan_mode: Some(self.vxlan_mode.to_string()),
            nat_outgoing: self.nat_outgoing,
            disabled: self.disabled,
            node_selector: Some(self.node_selector.to_string()),
        }
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The pool's prefix.
    pub fn cidr(&self) -> IpNet {
        self.cidr
    }
    /// Address family.
    pub fn family(&self) -> IpFamily {
        IpFamily::of(&self.cidr)
    }
    /// Prefix length of the pool's blocks.
    pub fn block_size(&self) -> u8 {
        self.block_size
    }
    /// IP-in-IP mode.
    pub fn ipip_mode(&self) -> EncapMode {
        self.ipip_mode
    }
    /// VXLAN mode.
    pub fn vxlan_mode(&self) -> EncapMode {
        self.vxlan_mode
    }
    /// Whether traffic leaving the cluster from this pool is masqueraded.
    pub fn nat_outgoing(&self) -> bool {
        self.nat_outgoing
    }
    /// Whether new assignments from this pool are refused.
    pub fn disabled(&self) -> bool {
        self.disabled
    }
    /// Which nodes may use the pool.
    pub fn node_selector(&self) -> &Selector {
        &self.node_selector
    }

    /// Whether a node with these labels may be given new addresses from this pool.
    pub fn usable_by<L: crate::selector::Labels + ?Sized>(&self, node_labels: &L) -> bool {
        !self.disabled && self.node_selector.matches(node_labels)
    }

    /// Whether a block prefix belongs to this pool.
    pub fn contains_block(&self, block: &IpNet) -> bool {
        self.cidr.contains(block)
    }
}

/// Rejects overlapping pools (Calico refuses to create one): two pools handing out the same
/// addresses would defeat block uniqueness. The error names the later pool's `spec.cidr`.
pub fn check_pool_overlaps(pools: &[IpPool]) -> Result<(), PoolValidationError> {
    for (i, later) in pools.iter().enumerate() {
        for earlier in &pools[..i] {
            if earlier.cidr.contains(&later.cidr.network())
                || later.cidr.contains(&earlier.cidr.network())
            {
                return Err(PoolValidationError {
                    pool: later.name.clone(),
                    field: "spec.cidr",
                    message: format!(
                        "{} overlaps pool {:?} ({})",
                        later.cidr, earlier.name, earlier.cidr
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(cidr: &str) -> IpPoolSpec {
        IpPoolSpec {
            cidr: cidr.into(),
            ..Default::default()
        }
    }

    fn reject(name: &str, s: IpPoolSpec) -> PoolValidationError {
        IpPool::new(name, &s).unwrap_err()
    }

    #[test]
    fn defaults_per_family() {
        let p = IpPool::new("v4", &spec("10.244.0.0/16")).unwrap();
        assert_eq!(p.block_size(), 24);
        assert_eq!(p.ipip_mode(), EncapMode::Never);
        assert_eq!(p.vxlan_mode(), EncapMode::Never);
        assert_eq!(*p.node_selector(), Selector::All);
        assert!(!p.disabled() && !p.nat_outgoing());
        let p = IpPool::new("v6", &spec("fd00:10:244::/64")).unwrap();
        assert_eq!(p.block_size(), 122);
        assert_eq!(p.family(), IpFamily::V6);
    }

    #[test]
    fn deserialises_calico_v3_spec() {
        let s: IpPoolSpec = serde_json::from_str(
            r#"{"cidr":"10.11.0.0/16","blockSize":26,"ipipMode":"CrossSubnet",
                "natOutgoing":true,"disabled":false,"nodeSelector":"rack == 'a'"}"#,
        )
        .unwrap();
        let p = IpPool::new("project1", &s).unwrap();
        assert_eq!(p.block_size(), 26);
        assert_eq!(p.ipip_mode(), EncapMode::CrossSubnet);
        assert!(p.nat_outgoing());
        let labels: std::collections::BTreeMap<String, String> =
            [("rack".to_string(), "a".to_string())].into();
        assert!(p.usable_by(&labels));
        assert!(!p.usable_by(&std::collections::BTreeMap::new()));
        let round = IpPool::new("project1", &p.to_spec()).unwrap();
        assert_eq!(round, p);
        let json = serde_json::to_value(p.to_spec()).unwrap();
        assert_eq!(json["blockSize"], 26);
        assert_eq!(json["ipipMode"], "CrossSubnet");
        assert_eq!(json["vxlanMode"], "Never");
        assert_eq!(json["natOutgoing"], true);
        assert_eq!(json["nodeSelector"], "rack == 'a'");
    }

    #[test]
    fn disabled_pool_is_not_usable() {
        let mut s = spec("10.0.0.0/16");
        s.disabled = true;
        let p = IpPool::new("p", &s).unwrap();
        assert!(!p.usable_by(&std::collections::BTreeMap::new()));
    }

    #[test]
    fn rejects_bad_name() {
        for name in ["", "Upper", "a_b", "-a", "a..b"] {
            assert_eq!(reject(name, spec("10.0.0.0/16")).field, "metadata.name");
        }
    }

    #[test]
    fn rejects_unparsable_cidr() {
        for c in ["", "10.0.0.0", "10.0.0.0/33", "banana/8", "fd00::/129"] {
            let e = reject("p", spec(c));
            assert_eq!(e.field, "spec.cidr", "{c}");
        }
    }

    #[test]
    fn rejects_cidr_with_host_bits() {
        let e = reject("p", spec("10.244.1.0/16"));
        assert_eq!(e.field, "spec.cidr");
        assert_eq!(
            e.to_string(),
            "spec.cidr: 10.244.1.0/16 has host bits set; the network address is 10.244.0.0/16"
        );
        assert_eq!(reject("p", spec("fd00::1/64")).field, "spec.cidr");
    }

    #[test]
    fn rejects_reserved_ranges() {
        for c in [
            "127.0.0.0/16",
            "169.254.0.0/16",
            "224.0.0.0/8",
            "fe80::/64",
            "0.0.0.0/0",
        ] {
            let e = reject("p", spec(c));
            assert_eq!(e.field, "spec.cidr", "{c}");
            assert!(e.message.contains("overlaps"), "{c}: {e}");
        }
    }

    #[test]
    fn rejects_block_size_out_of_range() {
        let mut s = spec("10.0.0.0/16");
        s.block_size = Some(33);
        let e = reject("p", s.clone());
        assert_eq!(
            e.to_string(),
            "spec.blockSize: 33 is outside 20..=32 for an IPv4 pool"
        );
        for b in [19, -1, 300, 122] {
            s.block_size = Some(b);
            assert_eq!(reject("p", s.clone()).field, "spec.blockSize");
        }
        for b in [20, 32] {
            s.block_size = Some(b);
            IpPool::new("p", &s).unwrap();
        }
        let mut s = spec("fd00::/64");
        for b in [115, 129, 26] {
            s.block_size = Some(b);
            let e = reject("p", s.clone());
            assert_eq!(e.field, "spec.blockSize");
            assert!(e.message.contains("116..=128 for an IPv6 pool"), "{e}");
        }
        for b in [116, 128] {
            s.block_size = Some(b);
            IpPool::new("p", &s).unwrap();
        }
    }

    #[test]
    fn rejects_block_larger_than_pool() {
        let mut s = spec("10.0.0.0/26");
        s.block_size = Some(24);
        let e = reject("p", s);
        assert_eq!(e.field, "spec.blockSize");
        assert!(e.message.contains("does not fit"));
    }

    #[test]
    fn rejects_unknown_modes() {
        let mut s = spec("10.0.0.0/16");
        s.ipip_mode = Some("always".into());
        assert_eq!(reject("p", s).field, "spec.ipipMode");
        let mut s = spec("10.0.0.0/16");
        s.vxlan_mode = Some("Sometimes".into());
        assert_eq!(reject("p", s).field, "spec.vxlanMode");
    }

    #[test]
    fn rejects_ipip_on_ipv6() {
        let mut s = spec("fd00::/64");
        s.ipip_mode = Some("Always".into());
        assert_eq!(reject("p", s.clone()).field, "spec.ipipMode");
        s.ipip_mode = Some("Never".into());
        s.vxlan_mode = Some("Always".into());
        IpPool::new("p", &s).unwrap();
    }

    #[test]
    fn rejects_both_encapsulations() {
        let mut s = spec("10.0.0.0/16");
        s.ipip_mode = Some("CrossSubnet".into());
        s.vxlan_mode = Some("Always".into());
        let e = reject("p", s);
        assert_eq!(e.field, "spec.vxlanMode");
        assert!(e.message.contains("spec.ipipMode"));
    }

    #[test]
    fn rejects_bad_node_selector() {
        let mut s = spec("10.0.0.0/16");
        s.node_selector = Some("rack = 'a'".into());
        let e = reject("p", s);
        assert_eq!(e.field, "spec.nodeSelector");
        assert!(e
            .to_string()
            .starts_with("spec.nodeSelector: invalid selector"));
    }

    #[test]
    fn rejects_overlapping_pools() {
        let a = IpPool::new("a", &spec("10.0.0.0/16")).unwrap();
        let b = IpPool::new("b", &spec("10.0.128.0/17")).unwrap();
        let c = IpPool::new("c", &spec("10.1.0.0/16")).unwrap();
        check_pool_overlaps(&[a.clone(), c.clone()]).unwrap();
        let e = check_pool_overlaps(&[a, c, b]).unwrap_err();
        assert_eq!((e.pool.as_str(), e.field), ("b", "spec.cidr"));
    }
}

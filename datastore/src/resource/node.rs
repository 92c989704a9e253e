//! `Node`: one machine of the cluster, with the addresses its BGP speaker and tunnels use.
//!
//! `spec.bgp.ipv4Address` carries a prefix length on purpose (Calico does the same): the
//! prefix tells which nodes share a subnet, which is what `CrossSubnet` encapsulation decides
//! on. So it must be a host address with its subnet's length (`10.0.0.11/24`), not a network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use super::field::{AsNumberText, FieldError};

/// `spec` of a `Node`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    /// BGP settings; a node without them runs no BGP speaker (policy-only node in Calico).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<NodeBgpSpec>,
    /// The node's VXLAN tunnel device address (IPv4, no prefix).
    #[serde(
        default,
        rename = "ipv4VXLANTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_vxlan_tunnel_addr: Option<String>,
    /// The node's VXLAN tunnel device MAC address.
    #[serde(
        default,
        rename = "vxlanTunnelMACAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_tunnel_mac_addr: Option<String>,
    /// The node's IPv6 VXLAN tunnel device address.
    #[serde(
        default,
        rename = "ipv6VXLANTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_vxlan_tunnel_addr: Option<String>,
    /// The node's IPv6 VXLAN tunnel device MAC address.
    #[serde(
        default,
        rename = "vxlanTunnelMACAddrV6",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_tunnel_mac_addr_v6: Option<String>,
    /// Addresses of the node as Kubernetes reports them (`calicoctl get node -o yaml` prints
    /// them; kept so such output loads unchanged).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NodeAddress>,
    /// Which orchestrator objects this node corresponds to (informational, as Calico).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orch_refs: Vec<OrchRef>,
}

/// `spec.bgp` of a `Node`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeBgpSpec {
    /// Host address with its subnet's prefix length, e.g. `10.0.0.11/24`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
    /// Host address with its subnet's prefix length, e.g. `fd00::11/64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
    /// This node's AS; unset means the global `BGPConfiguration` AS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumberText>,
    /// When set this node is a route reflector (RFC 4456) with this cluster ID.
    #[serde(
        default,
        rename = "routeReflectorClusterID",
        skip_serializing_if = "Option::is_none"
    )]
    pub route_reflector_cluster_id: Option<String>,
    /// The node's IP-in-IP tunnel address (IPv4, no prefix).
    #[serde(
        default,
        rename = "ipv4IPIPTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_ipip_tunnel_addr: Option<String>,
}

/// One entry of `spec.addresses`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeAddress {
    /// An address or CIDR.
    pub address: String,
    /// `InternalIP`, `ExternalIP`, `CalicoNodeIP`...
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// One entry of `spec.orchRefs`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrchRef {
    /// The orchestrator's name for the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// e.g. `k8s`.
    pub orchestrator: String,
}

fn host_prefix(text: &str, field: &str) -> Result<IpNet, FieldError> {
    let net: IpNet = text.parse().map_err(|_| {
        let why = if text.parse::<IpAddr>().is_ok() {
            "needs the subnet's prefix length, e.g. 10.0.0.11/24"
        } else {
            "is not an address with prefix length"
        };
        FieldError::new(field, format!("{text:?} {why}"))
    })?;
    let max = net.max_prefix_len();
    // /31 and /32 (/127, /128) have no network address to confuse with (RFC 3021).
    if net.prefix_len() + 1 < max && net.addr() == net.network() {
        return Err(FieldError::new(
            field,
            format!(
                "{text} is a network address; give the node's own address with the prefix length"
            ),
        ));
    }
    Ok(net)
}

fn mac(text: &str, field: &str) -> Result<[u8; 6], FieldError> {
    let bad = || {
        FieldError::new(
            field,
            format!("{text:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"),
        )
    };
    let mut out = [0u8; 6];
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    for (o, p) in out.iter_mut().zip(parts) {
        if p.len() != 2 {
            return Err(bad());
        }
        *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

impl NodeBgpSpec {
    /// `ipv4Address` parsed (host address and subnet length).
    pub fn ipv4_address(&self) -> Result<Option<Ipv4Net>, FieldError> {
        const F: &str = "spec.bgp.ipv4Address";
        self.ipv4_address
            .as_deref()
            .map(|t| match host_prefix(t, F)? {
                IpNet::V4(n) => Ok(n),
                IpNet::V6(_) => Err(FieldError::new(F, format!("{t} is not an IPv4 address"))),
            })
            .transpose()
    }

    /// `ipv6Address` parsed.
    pub fn ipv6_address(&self) -> Result<Option<Ipv6Net>, FieldError> {
        const F: &str = "spec.bgp.ipv6Address";
        self.ipv6_address
            .as_deref()
            .map(|t| match host_prefix(t, F)? {
                IpNet::V6(n) => Ok(n),
                IpNet::V4(_) => Err(FieldError::new(F, format!("{t} is not an IPv6 address"))),
            })
            .transpose()
    }

    /// `asNumber` parsed; `None` means the global AS applies.
    pub fn as_number(&self) -> Result<Option<u32>, FieldError> {
        self.as_number
            .as_ref()
            .map(|a| a.parse("spec.bgp.asNumber"))
            .transpose()
    }

    /// The RFC 4456 CLUSTER_ID, when this node is a route reflector. Calico writes it as an
    /// IPv4 dotted quad.
    pub fn route_reflector_cluster_id(&self) -> Result<Option<Ipv4Addr>, FieldError> {
        self.route_reflector_cluster_id
            .as_deref()
            .map(|t| {
                t.parse().map_err(|_| {
                    FieldError::new(
                        "spec.bgp.routeReflectorClusterID",
                        format!("{t:?} is not an IPv4 dotted quad, e.g. 224.0.0.1"),
                    )
                })
            })
            .transpose()
    }

    /// `ipv4IPIPTunnelAddr` parsed.
    pub fn ipv4_ipip_tunnel_addr(&self) -> Result<Option<Ipv4Addr>, FieldError> {
        parse_opt(
            &self.ipv4_ipip_tunnel_addr,
            "spec.bgp.ipv4IPIPTunnelAddr",
            "IPv4 address",
        )
    }

    fn validate(&self) -> Result<(), FieldError> {
        let v4 = self.ipv4_address()?;
        let v6 = self.ipv6_address()?;
        if v4.is_none() && v6.is_none() {
            return Err(FieldError::new(
                "spec.bgp",
                "needs ipv4Address or ipv6Address for the BGP speaker to use",
            ));
        }
        self.as_number()?;
        self.route_reflector_cluster_id()?;
        self.ipv4_ipip_tunnel_addr()?;
        Ok(())
    }
}

fn parse_opt<T: std::str::FromStr>(
    text: &Option<String>,
    field: &str,
    what: &str,
) -> Result<Option<T>, FieldError> {
    text.as_deref()
        .map(|t| {
            t.parse()
                .map_err(|_| FieldError::new(field, format!("{t:?} is not an {what}")))
        })
        .transpose()
}

impl NodeSpec {
    /// `ipv4VXLANTunnelAddr` parsed.
    pub fn ipv4_vxlan_tunnel_addr(&self) -> Result<Option<Ipv4Addr>, FieldError> {
        parse_opt(
            &self.ipv4_vxlan_tunnel_addr,
            "spec.ipv4VXLANTunnelAddr",
            "IPv4 address",
        )
    }

    /// `ipv6VXLANTunnelAddr` parsed.
    pub fn ipv6_vxlan_tunnel_addr(&self) -> Result<Option<Ipv6Addr>, FieldError> {
        parse_opt(
            &self.ipv6_vxlan_tunnel_addr,
            "spec.ipv6VXLANTunnelAddr",
            "IPv6 address",
        )
    }

    /// `vxlanTunnelMACAddr` parsed.
    pub fn vxlan_tunnel_mac_addr(&self) -> Result<Option<[u8; 6]>, FieldError> {
        self.vxlan_tunnel_mac_addr
            .as_deref()
            .map(|t| mac(t, "spec.vxlanTunnelMACAddr"))
            .transpose()
    }

    /// `vxlanTunnelMACAddrV6` parsed.
    pub fn vxlan_tunnel_mac_addr_v6(&self) -> Result<Option<[u8; 6]>, FieldError> {
        self.vxlan_tunnel_mac_addr_v6
            .as_deref()
            .map(|t| mac(t, "spec.vxlanTunnelMACAddrV6"))
            .transpose()
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(bgp) = &self.bgp {
            bgp.validate()?;
        }
        self.ipv4_vxlan_tunnel_addr()?;
        self.ipv6_vxlan_tunnel_addr()?;
        self.vxlan_tunnel_mac_addr()?;
        self.vxlan_tunnel_mac_addr_v6()?;
        for (i, a) in self.addresses.iter().enumerate() {
            if a.address.parse::<IpAddr>().is_err() && a.address.parse::<IpNet>().is_err() {
                return Err(FieldError::new(
                    format!("spec.addresses[{i}].address"),
                    format!("{:?} is not an address or CIDR", a.address),
                ));
            }
        }
        Ok(())
    }
}

//! `WorkloadEndpoint`: one interface of one pod (or container) on one node, as Calico's CNI
//! plugin records it and felix programs it.
//!
//! The CNI plugin writes it on ADD and deletes it on DEL; routerd reads the endpoints of its
//! node and owns their host routes from then on (felix's job in Calico). Field names and the
//! name rule are Calico's (`libcalico-go/lib/names/workloadendpoint.go`):
//! `<node>-<orchestrator>-<pod or container id>-<endpoint>`, each segment with its `-`
//! doubled, so `my-node`, `k8s`, `web-0`, `eth0` is `my--node-k8s-web--0-eth0`.
//!
//! Unlike the other kinds a `WorkloadEndpoint` is namespaced (`metadata.namespace`, default
//! `default`), as in Calico; its datastore record is named `<namespace>.<name>`
//! ([`record_name`]), which is unambiguous because a namespace is a DNS label (no dot).

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::field::FieldError;

/// The namespace of a workload without one (Calico's `cni` orchestrator uses `default`).
pub const DEFAULT_NAMESPACE: &str = "default";

/// The host side of a workload's veth as Calico names it (`VethNameForWorkload`):
/// `cali` + the first 11 hex digits of the SHA-1 of `hashed` (`<namespace>.<pod>` for a
/// pod), so the name is the same whichever plugin created the interface.
pub fn calico_interface_name(hashed: &str) -> String {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(hashed.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("cali{}", &hex[..11])
}

/// `spec` of a `WorkloadEndpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEndpointSpec {
    /// `k8s` for a Kubernetes pod, `cni` for any other CNI runtime (podman, containerd alone).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub orchestrator: String,
    /// The workload name for orchestrators other than `k8s` (Calico leaves it empty for pods).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workload: String,
    /// The node the workload runs on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// The container (sandbox) id the runtime passed as `CNI_CONTAINERID`.
    #[serde(
        default,
        rename = "containerID",
        skip_serializing_if = "String::is_empty"
    )]
    pub container_id: String,
    /// The pod name (`k8s`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod: String,
    /// The interface name inside the workload (`CNI_IFNAME`, normally `eth0`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    /// The pod's service account (`k8s`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_name: String,
    /// The workload's addresses, each a /32 or /128.
    #[serde(default, rename = "ipNetworks", skip_serializing_if = "Vec::is_empty")]
    pub ip_networks: Vec<String>,
    /// Profiles (policy); kept for Calico compatibility, routerd applies no policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// The host side of the veth (`cali…`): where routerd routes the addresses.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface_name: String,
    /// The MAC address of the workload's interface.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// Floating IPs (Calico `ipNATs`): not implemented, so only an empty list is accepted.
    #[serde(default, rename = "ipNATs", skip_serializing_if = "Vec::is_empty")]
    pub ip_nats: Vec<serde_json::Value>,
    /// Not implemented (no source-address policy here), so only an empty list is accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_spoofed_source_prefixes: Vec<String>,
}

impl WorkloadEndpointSpec {
    /// The addresses, parsed. Only valid after [`WorkloadEndpointSpec::validate`].
    pub fn addresses(&self) -> Vec<IpNet> {
        self.ip_networks
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect()
    }

    /// Checks every field; the error names it.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.node.is_empty() {
            return Err(FieldError::new("spec.node", "is required"));
        }
        if self.orchestrator.is_empty() {
            return Err(FieldError::new("spec.orchestrator", "is required"));
        }
        if self.endpoint.is_empty() {
            return Err(FieldError::new("spec.endpoint", "is required"));
        }
        for (i, text) in self.ip_networks.iter().enumerate() {
            let field = format!("spec.ipNetworks[{i}]");
            let net: IpNet = text
                .parse()
                .map_err(|_| FieldError::new(&field, format!("{text:?} is not a CIDR")))?;
            if net.prefix_len() != net.max_prefix_len() {
                return Err(FieldError::new(
                    field,
                    format!("{net} is not a single address (/32 or /128)"),
                ));
            }
        }
        if !self.interface_name.is_empty() && !is_interface_name(&self.interface_name) {
            return Err(FieldError::new(
                "spec.interfaceName",
                format!(
                    "{:?} is not a Linux interface name (1-15 bytes, no '/', ':' or space)",
                    self.interface_name
                ),
            ));
        }
        if !self.mac.is_empty() && !is_mac(&self.mac) {
            return Err(FieldError::new(
                "spec.mac",
                format!("{:?} is not a MAC address (aa:bb:cc:dd:ee:ff)", self.mac),
            ));
        }
        if !self.ip_nats.is_empty() {
            return Err(FieldError::new(
                "spec.ipNATs",
                "floating IPs are not supported; leave ipNATs empty",
            ));
        }
        if !self.allow_spoofed_source_prefixes.is_empty() {
            return Err(FieldError::new(
                "spec.allowSpoofedSourcePrefixes",
                "is not supported; leave it empty",
            ));
        }
        Ok(())
    }

    /// The name Calico gives this endpoint (see the module docs); `None` when a segment is
    /// empty or starts or ends with `-`, which Calico refuses too.
    pub fn calico_name(&self) -> Option<String> {
        let workload = match self.orchestrator.as_str() {
            "k8s" => &self.pod,
            "cni" => &self.container_id,
            _ => &self.workload,
        };
        endpoint_name(&[&self.node, &self.orchestrator, workload, &self.endpoint])
    }
}

/// Joins name segments as Calico does: `-` inside a segment is doubled, segments are joined
/// with a single `-`.
pub fn endpoint_name(segments: &[&str]) -> Option<String> {
    let mut out = Vec::with_capacity(segments.len());
    for s in segments {
        if s.is_empty() || s.starts_with('-') || s.ends_with('-') {
            return None;
        }
        out.push(s.replace('-', "--"));
    }
    Some(out.join("-"))
}

/// The datastore record name of the endpoint `name` in `namespace`.
pub fn record_name(namespace: &str, name: &str) -> String {
    format!("{namespace}.{name}")
}

fn is_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace())
}

fn is_mac(text: &str) -> bool {
    let parts: Vec<&str> = text.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec() -> WorkloadEndpointSpec {
        WorkloadEndpointSpec {
            orchestrator: "k8s".into(),
            node: "my-node".into(),
            pod: "web-0".into(),
            endpoint: "eth0".into(),
            container_id: "abc".into(),
            ip_networks: vec!["10.244.1.5/32".into()],
            interface_name: "cali0123456789a".into(),
            mac: "ee:ee:ee:ee:ee:ee".into(),
            ..Default::default()
        }
    }

    #[test]
    fn names_double_dashes_inside_segments() {
        assert_eq!(
            spec().calico_name().as_deref(),
            Some("my--node-k8s-web--0-eth0")
        );
        let cni = WorkloadEndpointSpec {
            orchestrator: "cni".into(),
            ..spec()
        };
        assert_eq!(cni.calico_name().as_deref(), Some("my--node-cni-abc-eth0"));
        assert_eq!(endpoint_name(&["a", "-b"]), None);
        assert_eq!(endpoint_name(&["a", ""]), None);
    }

    #[test]
    fn validation_names_the_field() {
        assert!(spec().validate().is_ok());
        type Change = fn(&mut WorkloadEndpointSpec);
        let cases: [(&str, Change); 7] = [
            ("spec.node", |s| s.node.clear()),
            ("spec.ipNetworks[0]", |s| {
                s.ip_networks = vec!["10.0.0.0/24".into()]
            }),
            ("spec.ipNetworks[0]", |s| {
                s.ip_networks = vec!["nope".into()]
            }),
            ("spec.interfaceName", |s| s.interface_name = "a/b".into()),
            ("spec.mac", |s| s.mac = "ee:ee".into()),
            ("spec.ipNATs", |s| s.ip_nats = vec![serde_json::json!({})]),
            ("spec.allowSpoofedSourcePrefixes", |s| {
                s.allow_spoofed_source_prefixes = vec!["10.0.0.0/8".into()]
            }),
        ];
        for (field, change) in cases {
            let mut s = spec();
            change(&mut s);
            assert_eq!(s.validate().unwrap_err().field, field);
        }
    }
}

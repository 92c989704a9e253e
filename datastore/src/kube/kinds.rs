//! Datastore kinds as Kubernetes resource types, and record names as object names.
//!
//! Calico's kinds map to Calico's own resource types ([`super::calico`]: `BGPPeer` →
//! `bgppeers.crd.projectcalico.org`, `BlockAffinity` → `blockaffinities.crd.projectcalico.org`,
//! `Node` → core `nodes`); any other kind to a custom resource of group [`CRD_GROUP`],
//! version [`CRD_VERSION`], with the kind itself as the Kubernetes `kind` and its English
//! plural, lower-cased, as the resource (`WorkloadEndpoint` →
//! `workloadendpoints.routerd.io`), so a new kind needs only a CRD, not code here. The kinds
//! routerd itself stores are [`WATCHED_KINDS`].

use ::kube::core::ApiResource;

use crate::{validate_name, DatastoreError, Result};

/// API group of routerd's own custom resources (kinds Calico keeps elsewhere).
pub const CRD_GROUP: &str = "routerd.io";
/// The one served (and stored) version of every routerd custom resource.
pub const CRD_VERSION: &str = "v1";

/// The kinds a watch of every kind (`watch(None, ..)`) covers: the resource kinds and the
/// IPAM record kinds. The file and memory stores watch literally every kind; an API server
/// has no watch across resource types, so this backend watches each of these.
pub const WATCHED_KINDS: [&str; 9] = [
    "Node",
    "BGPConfiguration",
    "BGPPeer",
    "IPPool",
    "BGPFilter",
    "WorkloadEndpoint",
    "IPAMBlock",
    "BlockAffinity",
    "IPAMHandle",
];

/// The resource type holding records of `kind`; refuses a kind that is not a valid
/// Kubernetes kind (ASCII letters and digits, starting with an upper-case letter).
pub fn kind_resource(kind: &str) -> Result<ApiResource> {
    validate_name("kind", kind)?;
    let mut chars = kind.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_alphanumeric())
        && kind.len() <= 63;
    if !valid {
        return Err(DatastoreError::InvalidName {
            what: "kind",
            value: kind.to_string(),
            reason: "not a Kubernetes kind (up to 63 ASCII letters and digits, \
                     starting with an upper-case letter)",
        });
    }
    Ok(super::calico::Backing::of(kind).resource(kind, plural(kind)))
}

/// `bgppeers.crd.projectcalico.org`, `nodes`: how errors and `kubectl` name the resource type.
pub fn resource_name(resource: &ApiResource) -> String {
    if resource.group.is_empty() {
        resource.plural.clone()
    } else {
        format!("{}.{}", resource.plural, resource.group)
    }
}

/// The English plural of a kind, lower-cased, as Kubernetes resource names are spelled
/// (the same rule kube's `CustomResource` derive applies when no plural is given).
pub fn plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let n = bytes.len();
    if n >= 2 && bytes[n - 1] == b'y' && !b"aeiou".contains(&bytes[n - 2]) {
        format!("{}ies", &lower[..n - 1])
    } else if lower.ends_with('s')
        || lower.ends_with('x')
        || lower.ends_with('z')
        || lower.ends_with("ch")
        || lower.ends_with("sh")
    {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    }
}

/// Record names become `metadata.name`, which the API server requires to be a DNS-1123
/// subdomain: lower-case letters, digits, `-` and `.`, starting and ending alphanumeric.
/// Calico's names (node names, `10-65-0-0-24`, `rack1.tor`) all are.
pub fn validate_object_name(name: &str) -> Result<()> {
    validate_name("name", name)?;
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let valid = name.chars().all(|c| alnum(c) || c == '-' || c == '.')
        && name.starts_with(alnum)
        && name.ends_with(alnum)
        // Kubernetes' IsDNS1123Subdomain: 253 bytes in all (checked above), no limit per
        // label, so Calico's endpoint names with a 64-digit container id fit.
        && name.split('.').all(|label| !label.is_empty() && !label.ends_with('-') && !label.starts_with('-'));
    if valid {
        Ok(())
    } else {
        Err(DatastoreError::InvalidName {
            what: "name",
            value: name.to_string(),
            reason: "not a Kubernetes object name (a DNS-1123 subdomain: lower-case \
                     letters, digits, '-' and '.', starting and ending alphanumeric)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_match_calico_resource_names() {
        for (kind, want) in [
            ("Node", "nodes"),
            ("BGPConfiguration", "bgpconfigurations"),
            ("BGPPeer", "bgppeers"),
            ("IPPool", "ippools"),
            ("BGPFilter", "bgpfilters"),
            ("WorkloadEndpoint", "workloadendpoints"),
            ("IPAMBlock", "ipamblocks"),
            ("BlockAffinity", "blockaffinities"),
            ("IPAMHandle", "ipamhandles"),
            ("Gateway", "gateways"),
            ("Address", "addresses"),
        ] {
            assert_eq!(plural(kind), want, "{kind}");
        }
    }

    #[test]
    fn watched_kinds_are_the_resource_and_ipam_kinds() {
        let mut expected: Vec<&str> = crate::resource::Kind::ALL
            .iter()
            .map(|k| k.as_str())
            .collect();
        expected.extend([
            crate::ipam_store::BLOCK_KIND,
            crate::ipam_store::AFFINITY_KIND,
            crate::ipam_store::HANDLE_KIND,
        ]);
        assert_eq!(WATCHED_KINDS.to_vec(), expected);
    }

    #[test]
    fn kinds_and_names_are_checked() {
        assert!(kind_resource("BGPPeer").is_ok());
        for bad in ["bgppeer", "BGP-Peer", "", "A/B"] {
            assert!(kind_resource(bad).is_err(), "{bad}");
        }
        for ok in ["tor-a", "rack1.tor", "10-65-0-0-24", "n0"] {
            assert!(validate_object_name(ok).is_ok(), "{ok}");
        }
        // A WorkloadEndpoint record named after a 64-digit container id.
        let long = format!("default.node--1-cni-{}-eth0", "a".repeat(64));
        assert!(validate_object_name(&long).is_ok());
        assert!(validate_object_name("a.-b").is_err());
        for bad in ["Tor", "-a", "a-", "a_b", "a..b", "", "a%2fb"] {
            assert!(validate_object_name(bad).is_err(), "{bad}");
        }
    }
}

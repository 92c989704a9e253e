//! Kind names on the command line: calicoctl's spellings (case-insensitive, singular, plural
//! and short forms) mapped to [`Kind`].

use datastore::resource::Kind;

/// Every accepted spelling of each kind, lower case, as calicoctl registers them (`bgppeer`,
/// `bgppeers`, `bgpp`, `bp`...).
const ALIASES: [(Kind, &[&str]); 6] = [
    (Kind::Node, &["node", "nodes", "no", "nos"]),
    (
        Kind::BgpConfiguration,
        &[
            "bgpconfiguration",
            "bgpconfigurations",
            "bgpconfig",
            "bgpconfigs",
        ],
    ),
    (
        Kind::BgpPeer,
        &["bgppeer", "bgppeers", "bgpp", "bgpps", "bp", "bps"],
    ),
    (
        Kind::IpPool,
        &["ippool", "ippools", "ipp", "ipps", "pool", "pools"],
    ),
    (
        Kind::BgpFilter,
        &["bgpfilter", "bgpfilters", "bgpf", "bgpfs", "bf", "bfs"],
    ),
    (
        Kind::WorkloadEndpoint,
        &["workloadendpoint", "workloadendpoints", "wep", "weps"],
    ),
];

/// The kind a command-line word names, if any (`bgpPeer`, `BGPPeers`, `ippool`, `bgpconfig`).
pub fn parse_kind(word: &str) -> Option<Kind> {
    let lower = word.to_ascii_lowercase();
    ALIASES
        .iter()
        .find(|(_, names)| names.contains(&lower.as_str()))
        .map(|(k, _)| *k)
}

/// The accepted kind words, for error messages.
pub fn known_kinds() -> String {
    ALIASES
        .iter()
        .map(|(k, names)| format!("{} ({})", k.as_str(), names.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calicoctl_spellings() {
        assert_eq!(parse_kind("bgpPeer"), Some(Kind::BgpPeer));
        assert_eq!(parse_kind("BGPPeers"), Some(Kind::BgpPeer));
        assert_eq!(parse_kind("nodes"), Some(Kind::Node));
        assert_eq!(parse_kind("ippool"), Some(Kind::IpPool));
        assert_eq!(parse_kind("bgpconfig"), Some(Kind::BgpConfiguration));
        assert_eq!(parse_kind("BGPConfiguration"), Some(Kind::BgpConfiguration));
        assert_eq!(parse_kind("bgpfilter"), Some(Kind::BgpFilter));
        assert_eq!(parse_kind("IPPool"), Some(Kind::IpPool));
        assert_eq!(parse_kind("policy"), None);
        // Every kind's canonical name is accepted.
        for k in Kind::ALL {
            assert_eq!(parse_kind(k.as_str()), Some(k));
        }
    }
}

//! `routectl node routes [PREFIX|ADDRESS]`: the speaker's paths as `birdc show route all`
//! shows them, with where each stands in the decision process.
//!
//! `PREFIX` (`10.65.0.0/26`) asks for exactly that prefix, as `birdc show route <prefix>`;
//! a bare `ADDRESS` asks for the longest prefix that contains it, as `birdc show route for
//! <address>`; nothing lists every path. Each path prints its next hop, the peer it came
//! from (or `local` for our own blocks), whether it is the best path, installed beside it
//! (ECMP, `multipath`), or which step of RFC 4271 §9.1.2.2 the best path won on, and then its
//! attributes, one per line, only those it carries.

use std::fmt::Write;
use std::net::IpAddr;

use bgp::speaker::control::RouteView;
use ipnet::IpNet;

/// What the operator asked for, parsed from the optional argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteQuery {
    pub prefix: Option<IpNet>,
    pub longest_match: bool,
}

/// Parses `10.65.0.0/26` (exact), `10.65.0.7` (longest match) or nothing (all).
pub fn parse_query(text: Option<&str>) -> Result<RouteQuery, String> {
    let Some(text) = text.map(str::trim) else {
        return Ok(RouteQuery {
            prefix: None,
            longest_match: false,
        });
    };
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Ok(RouteQuery {
            prefix: Some(IpNet::from(addr)),
            longest_match: true,
        });
    }
    match text.parse::<IpNet>() {
        Ok(net) if net.trunc() == net => Ok(RouteQuery {
            prefix: Some(net),
            longest_match: false,
        }),
        Ok(net) => Err(format!(
            "{text:?} has host bits set: did you mean {}?",
            net.trunc()
        )),
        Err(_) => Err(format!(
            "{text:?} is neither a prefix (10.65.0.0/26) nor an address (10.65.0.7)"
        )),
    }
}

/// The text report: one block per prefix, its paths best first.
pub fn format_routes(routes: &[RouteView], query: &RouteQuery) -> String {
    let mut out = String::new();
    if routes.is_empty() {
        match query.prefix {
            Some(p) if query.longest_match => {
                let _ = writeln!(out, "No route for {}.", p.addr());
            }
            Some(p) => {
                let _ = writeln!(out, "No route for {p}.");
            }
            None => out.push_str("No routes.\n"),
        }
        return out;
    }
    let mut current: Option<IpNet> = None;
    for r in routes {
        if current != Some(r.prefix) {
            if current.is_some() {
                out.push('\n');
            }
            let _ = writeln!(out, "{}", r.prefix);
            current = Some(r.prefix);
        }
        let from = match r.peer {
            Some(peer) => format!("from {peer}"),
            None => "local".to_string(),
        };
        let via = r
            .next_hop
            .map_or_else(String::new, |nh| format!("via {nh} "));
        let _ = writeln!(out, "  {via}{from} [{}]", r.decision);
        let as_path = if r.as_path.is_empty() {
            "(empty)".to_string()
        } else {
            r.as_path
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(out, "    as_path: {as_path}");
        let mut line = format!("    origin: {}", r.origin);
        if let Some(lp) = r.local_pref {
            let _ = write!(line, "  local_pref: {lp}");
        }
        if let Some(med) = r.med {
            let _ = write!(line, "  med: {med}");
        }
        let _ = writeln!(out, "{line}");
        if !r.communities.is_empty() {
            let _ = writeln!(out, "    communities: {}", r.communities.join(" "));
        }
        if !r.large_communities.is_empty() {
            let _ = writeln!(
                out,
                "    large_communities: {}",
                r.large_communities.join(" ")
            );
        }
        if let Some(id) = &r.originator_id {
            let _ = writeln!(out, "    originator_id: {id}");
        }
        if !r.cluster_list.is_empty() {
            let _ = writeln!(out, "    cluster_list: {}", r.cluster_list.join(" "));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a failed step is a failed test
mod tests {
    use super::*;

    #[test]
    fn queries_parse_as_birdc_reads_them() {
        let q = parse_query(Some("10.65.0.7")).unwrap();
        assert!(q.longest_match);
        assert_eq!(
            q.prefix.map(|p| p.to_string()).as_deref(),
            Some("10.65.0.7/32")
        );
        let q = parse_query(Some("fd00:65::/64")).unwrap();
        assert!(!q.longest_match);
        assert!(parse_query(Some("10.65.0.7/26"))
            .unwrap_err()
            .contains("did you mean 10.65.0.0/26"));
        assert!(parse_query(Some("tor")).is_err());
        assert_eq!(parse_query(None).map(|q| q.prefix), Ok(None));
    }
}

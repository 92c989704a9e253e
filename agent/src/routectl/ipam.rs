//! `routectl ipam show | check | release`: the allocator's reports ([`ipam::UsageReport`],
//! [`ipam::CheckReport`]) over the datastore's IPAM records, printed as calicoctl prints them.

use std::net::IpAddr;

use ipam::report::{BlockUsage, LeakReason};
use ipam::{Allocator, CheckReport, IpPool, IpamStore, Record, RecordKind, UsageReport};

use datastore::resource::{Kind, Resource};
use datastore::Datastore;

use super::resources::list_resources;
use super::table::{boxed_table, format_g5};
use super::RoutectlError;

/// The IP pools of the datastore as the allocator sees them; pools it refuses are reported.
pub fn pools(ds: &dyn Datastore) -> Result<(Vec<IpPool>, Vec<String>), RoutectlError> {
    let (_, items, mut problems) = list_resources(ds, Kind::IpPool)?;
    let mut pools = Vec::new();
    for r in items {
        if let Resource::IpPool(p) = r {
            match IpPool::new(&p.metadata.name, &p.spec) {
                Ok(pool) => pools.push(pool),
                Err(e) => problems.push(format!("IPPool/{}: {e}", p.metadata.name)),
            }
        }
    }
    Ok((pools, problems))
}

fn usage_row(grouping: &str, cidr: String, in_use: u128, total: u128) -> Vec<String> {
    let (in_use, total) = (in_use as f64, total as f64);
    let free = (total - in_use).max(0.0);
    let percent = |n: f64| {
        if total > 0.0 {
            100.0 * n / total
        } else {
            0.0
        }
    };
    vec![
        grouping.to_string(),
        cidr,
        format_g5(total),
        format!("{} ({:.0}%)", format_g5(in_use), percent(in_use)),
        format!("{} ({:.0}%)", format_g5(free), percent(free)),
    ]
}

fn block_row(b: &BlockUsage) -> Vec<String> {
    usage_row("Block", b.cidr.to_string(), b.in_use, b.total)
}

/// `ipam show [--show-blocks]`: one `IP Pool` row per pool (then its `Block` rows), and with
/// `--show-blocks` the blocks no pool contains any more.
pub fn format_usage(report: &UsageReport, show_blocks: bool) -> String {
    let mut rows = Vec::new();
    for p in &report.pools {
        rows.push(usage_row("IP Pool", p.cidr.to_string(), p.in_use, p.total));
        if show_blocks {
            rows.extend(p.blocks.iter().map(block_row));
        }
    }
    if show_blocks {
        rows.extend(report.blocks_outside_pools.iter().map(block_row));
    }
    boxed_table(
        &["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"],
        &rows,
    )
}

/// `ipam show --show-borrowed`: every address assigned to a node other than the owner of
/// its block (calicoctl's columns). `TYPE` is `pod` for workloads, else the allocation's
/// `type` attribute (a tunnel address); `ALLOCATED-TO` is `<namespace>/<pod>`, or the
/// container id for a runtime without pods.
pub fn format_borrowed<S: IpamStore>(store: &S) -> Result<String, RoutectlError> {
    let blocks = store
        .list(RecordKind::Block)
        .map_err(::ipam::IpamError::from)?;
    let mut rows = Vec::new();
    for v in &blocks {
        let Record::Block(b) = &v.value else { continue };
        let owner = b
            .affinity
            .as_deref()
            .map(|a| a.strip_prefix("host:").unwrap_or(a))
            .unwrap_or("");
        for (ordinal, slot) in b.allocations.iter().enumerate() {
            let Some(attr) = slot.and_then(|i| b.attributes.get(i)) else {
                continue;
            };
            let node = attr.secondary.get("node").map(String::as_str).unwrap_or("");
            if node.is_empty() || node == owner {
                continue;
            }
            let Ok(ordinal) = u32::try_from(ordinal) else {
                continue;
            };
            let get = |k: &str| attr.secondary.get(k).cloned().unwrap_or_default();
            let kind = match attr.secondary.get("type") {
                Some(t) => t.clone(),
                None => "pod".to_string(),
            };
            let to = match (get("namespace"), get("pod"), get("containerID")) {
                (ns, pod, _) if !pod.is_empty() => format!("{ns}/{pod}"),
                (_, _, cid) => cid,
            };
            rows.push(vec![
                b.address(ordinal).to_string(),
                node.to_string(),
                b.cidr.to_string(),
                if owner.is_empty() {
                    "<none>".into()
                } else {
                    owner.to_string()
                },
                kind,
                to,
            ]);
        }
    }
    Ok(boxed_table(
        &[
            "IP",
            "BORROWING-NODE",
            "BLOCK",
            "BLOCK OWNER",
            "TYPE",
            "ALLOCATED-TO",
        ],
        &rows,
    ))
}

fn leak_reason(r: LeakReason) -> &'static str {
    match r {
        LeakReason::NoHandle => "allocation has no handle",
        LeakReason::HandleMissing => "its handle record is missing",
        LeakReason::NotCountedByHandle => "its handle does not count it",
    }
}

/// Number of findings of a check.
pub fn problem_count(r: &CheckReport) -> usize {
    r.leaked_allocations.len()
        + r.dangling_handles.len()
        + r.double_assignments.len()
        + r.corrupt_blocks.len()
        + r.orphaned_affinities.len()
        + r.unrecorded_affinities.len()
}

/// `ipam check`: what was read, each kind of finding with its items, and the total, in the
/// manner of `calicoctl ipam check`.
pub fn format_check(r: &CheckReport) -> String {
    let mut out = String::from("Checking IPAM for inconsistencies...\n\n");
    out.push_str(&format!(
        "Loading all IPAM blocks...\nFound {} IPAM blocks.\n",
        r.blocks
    ));
    out.push_str(&format!(
        "Loading all IPAM handles...\nFound {} IPAM handles.\n",
        r.handles
    ));
    out.push_str(&format!("Found {} allocated IPs.\n\n", r.allocations));

    out.push_str("Scanning for allocated IPs that no handle accounts for (leaks)...\n");
    out.push_str(&format!(
        "Found {} leaked IPs.\n",
        r.leaked_allocations.len()
    ));
    for l in &r.leaked_allocations {
        let handle = l.handle.as_deref().unwrap_or("<none>");
        out.push_str(&format!(
            "  {} in block {} (handle {handle}): {}\n",
            l.address,
            l.block,
            leak_reason(l.reason)
        ));
    }
    out.push_str("Scanning for handles counting IPs their blocks do not assign to them...\n");
    out.push_str(&format!(
        "Found {} dangling handles.\n",
        r.dangling_handles.len()
    ));
    for d in &r.dangling_handles {
        out.push_str(&format!(
            "  handle {} in block {}: counts {}, block assigns {}\n",
            d.handle, d.block, d.recorded, d.found
        ));
    }
    out.push_str("Scanning for IPs assigned by more than one block...\n");
    out.push_str(&format!(
        "Found {} IPs assigned more than once.\n",
        r.double_assignments.len()
    ));
    for d in &r.double_assignments {
        let blocks: Vec<String> = d.blocks.iter().map(ToString::to_string).collect();
        out.push_str(&format!(
            "  {} assigned by blocks {}\n",
            d.address,
            blocks.join(", ")
        ));
    }
    out.push_str("Scanning blocks and block affinities...\n");
    out.push_str(&format!(
        "Found {} corrupt blocks.\n",
        r.corrupt_blocks.len()
    ));
    for b in &r.corrupt_blocks {
        out.push_str(&format!("  {b}\n"));
    }
    out.push_str(&format!(
        "Found {} affinities whose block is missing or owned by another node.\n",
        r.orphaned_affinities.len()
    ));
    for a in &r.orphaned_affinities {
        out.push_str(&format!("  {a}\n"));
    }
    out.push_str(&format!(
        "Found {} blocks without an affinity record for their node.\n",
        r.unrecorded_affinities.len()
    ));
    for b in &r.unrecorded_affinities {
        out.push_str(&format!("  {b}\n"));
    }
    out.push_str(&format!(
        "Check complete; found {} problems.\n",
        problem_count(r)
    ));
    out
}

/// `ipam show --ip`: whether an address is assigned, and to what (handle and attributes), in
/// calicoctl's words.
pub fn show_ip<S: IpamStore>(store: &S, ip: IpAddr) -> Result<String, RoutectlError> {
    let blocks = store
        .list(RecordKind::Block)
        .map_err(::ipam::IpamError::from)?;
    let attribute = blocks.iter().find_map(|v| match &v.value {
        Record::Block(b) => b.attribute(b.ordinal(ip)?),
        _ => None,
    });
    let Some(attr) = attribute else {
        return Ok(format!("{ip} is not assigned\n"));
    };
    let mut out = format!("IP {ip} is in use\n");
    out.push_str(&format!(
        "Handle ID: {}\n",
        attr.handle_id.as_deref().unwrap_or("<none>")
    ));
    if attr.secondary.is_empty() {
        out.push_str("No attributes defined\n");
    } else {
        out.push_str("Attributes:\n");
        for (k, v) in &attr.secondary {
            out.push_str(&format!("  {k}: {v}\n"));
        }
    }
    Ok(out)
}

/// `ipam release --ip`: frees one address whatever its handle (an operator's repair after
/// `ipam check` found a leak).
pub fn release<S: IpamStore>(
    allocator: &Allocator<S>,
    ip: IpAddr,
) -> Result<String, RoutectlError> {
    match allocator.release_ip(ip)? {
        Some(_) => Ok(format!("Successfully released IP address {ip}\n")),
        None => Err(RoutectlError::Usage(format!(
            "IP address {ip} is not assigned"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_rows_follow_calicoctl() {
        assert_eq!(
            usage_row("IP Pool", "10.65.0.0/16".into(), 5, 65536),
            ["IP Pool", "10.65.0.0/16", "65536", "5 (0%)", "65531 (100%)"]
        );
        assert_eq!(
            usage_row("Block", "10.65.0.0/26".into(), 32, 64),
            ["Block", "10.65.0.0/26", "64", "32 (50%)", "32 (50%)"]
        );
        assert_eq!(
            usage_row("IP Pool", "fd00::/48".into(), 3, 1u128 << 80)[2],
            "1.2089e+24"
        );
    }
}

//! `routectl ipam split | configure`: changing the cluster's IPAM set-up, as calicoctl's
//! commands of the same names do.
//!
//! - `split NUMBER (--cidr=CIDR | --name=NAME)` replaces an IP pool by NUMBER (a power of
//!   two) pools covering the same range, named `split-<name>-<i>`, with the same settings.
//!   As calicoctl, it disables the old pool first (no new block is cut from it), creates the
//!   new ones and deletes the old one; the IPAM blocks are not touched, since every block
//!   lies inside exactly one of the new pools (a split into pools smaller than a block is
//!   refused). calicoctl demands a locked datastore (`datastore migrate lock`) and checks
//!   NUMBER only after disabling the pool; routectl has no lock to take, and checks
//!   everything before it changes anything.
//! - `configure --strictaffinity=true|false` writes the `IPAMConfig` record `default`
//!   ([`datastore::ipam_store::IpamConfig`]): the IPAM plugin reads it at every assignment,
//!   routerd at start. calicoctl's other settings (`--max-blocks-per-host`, KubeVirt, the
//!   cool-down) have no equivalent in routerd's allocator and are refused by name.

use ipnet::IpNet;
use serde_json::Value;

use datastore::ipam_store::{read_ipam_config, write_ipam_config};
use datastore::resource::{Kind, Resource};
use datastore::{Datastore, DatastoreError};

use super::edit::modify;
use super::resources::list_resources;
use super::RoutectlError;

/// Which pool `split` splits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolRef {
    Name(String),
    Cidr(String),
}

/// The `count` equal parts of `cidr`, in address order, each at least `block_size` long
/// (a prefix length no longer than the block size).
pub fn split_cidr(cidr: IpNet, count: u32, block_size: u8) -> Result<Vec<IpNet>, String> {
    if count < 2 || !count.is_power_of_two() {
        return Err(format!(
            "number to split CIDR into is not a valid power of 2: {count}"
        ));
    }
    let bits = count.trailing_zeros() as u8;
    let prefix = cidr.prefix_len() + bits;
    if prefix > block_size || prefix > cidr.max_prefix_len() {
        return Err(format!(
            "the CIDR {cidr} is not large enough to be split into {count} parts of at least \
             one /{block_size} block each"
        ));
    }
    cidr.subnets(prefix)
        .map(|s| s.collect())
        .map_err(|e| e.to_string())
}

/// `ipam split`: returns what it prints.
pub fn split(ds: &dyn Datastore, count: &str, pool: &PoolRef) -> Result<String, RoutectlError> {
    let count: u32 = count.parse().map_err(|e| {
        RoutectlError::Usage(format!(
            "error reading number to split IP pools into. {count} is not a valid number: {e}"
        ))
    })?;
    let (_, pools, _) = list_resources(ds, Kind::IpPool)?;
    let found = pools.into_iter().find_map(|r| match (r, pool) {
        (Resource::IpPool(p), PoolRef::Name(n)) if &p.metadata.name == n => Some(p),
        (Resource::IpPool(p), PoolRef::Cidr(c)) if &p.spec.cidr == c => Some(p),
        _ => None,
    });
    let old = found.ok_or_else(|| {
        RoutectlError::Usage(match pool {
            PoolRef::Name(n) => format!("unable to find IP pool with name {n}"),
            PoolRef::Cidr(c) => format!("unable to find IP pool covering the specified CIDR {c}"),
        })
    })?;
    let name = old.metadata.name.clone();
    let pool_net: IpNet = old.spec.cidr.parse().map_err(|e| {
        RoutectlError::Usage(format!("IPPool {name}: spec.cidr {:?}: {e}", old.spec.cidr))
    })?;
    let block_size = ::ipam::IpPool::new(&name, &old.spec)
        .map_err(|e| RoutectlError::Usage(format!("IPPool {name}: {e}")))?
        .block_size();
    let parts = split_cidr(pool_net, count, block_size).map_err(|e| {
        RoutectlError::Usage(format!(
            "error splitting the CIDR {pool_net} into {count} CIDRs: {e}"
        ))
    })?;
    // Every new pool is checked before anything is written.
    let template = Resource::IpPool(old.clone()).to_value();
    let mut new_pools = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let mut v = template.clone();
        let base = if name.len() > 245 {
            &name[..245]
        } else {
            &name
        };
        // A new object: only the name and the old pool's labels carry over.
        let mut meta = serde_json::Map::new();
        meta.insert("name".into(), Value::from(format!("split-{base}-{i}")));
        if let Some(labels) = v["metadata"].get("labels") {
            meta.insert("labels".into(), labels.clone());
        }
        v["metadata"] = Value::Object(meta);
        v["spec"]["cidr"] = Value::from(part.to_string());
        if let Some(spec) = v["spec"].as_object_mut() {
            spec.remove("disabled");
        }
        let r = Resource::from_value(v, 1)
            .and_then(|r| r.validate().map(|()| r))
            .map_err(|e| RoutectlError::Usage(format!("split pool {part}: {e}")))?;
        new_pools.push(r);
    }
    modify(ds, Kind::IpPool, &name, |mut v| {
        v["spec"]["disabled"] = Value::Bool(true);
        Ok((v, ()))
    })
    .map_err(|e| RoutectlError::Usage(format!("error disabling IP pool {name}: {e}")))?;
    let mut out = format!("IP Pool {name} was successfully split into {count} smaller pools.\n");
    for r in &new_pools {
        ds.create(
            Kind::IpPool.as_str(),
            r.name(),
            crate::daemon::cluster::record_value(r),
        )
        .map_err(|e| {
            RoutectlError::Usage(format!("error creating split pool {}: {e}", r.name()))
        })?;
        let cidr = match r {
            Resource::IpPool(p) => p.spec.cidr.clone(),
            _ => String::new(),
        };
        out.push_str(&format!("Created {} with CIDR {cidr}.\n", r.name()));
    }
    ds.delete(Kind::IpPool.as_str(), &name, None).map_err(|e| {
        RoutectlError::Usage(format!(
            "error removing the IP pool that was split {name}: {e}"
        ))
    })?;
    out.push_str("Please refer to the documentation for final steps.\n");
    Ok(out)
}

/// `ipam configure`: sets strict affinity; returns what it prints.
pub fn configure(ds: &dyn Datastore, strict_affinity: &str) -> Result<String, RoutectlError> {
    let strict = match strict_affinity {
        "true" | "True" | "TRUE" | "t" | "T" | "1" => true,
        "false" | "False" | "FALSE" | "f" | "F" | "0" => false,
        _ => {
            return Err(RoutectlError::Usage(
                "invalid value. Use true or false to set strictaffinity".into(),
            ))
        }
    };
    for _ in 0..super::resources::UPDATE_ATTEMPTS {
        let (mut config, version) = read_ipam_config(ds)?;
        if config.strict_affinity == strict && version.is_some() {
            break;
        }
        config.strict_affinity = strict;
        match write_ipam_config(ds, &config, version) {
            Ok(_) => break,
            Err(DatastoreError::Conflict { .. } | DatastoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(format!("Successfully set StrictAffinity to: {strict}\n"))
}

/// `ipam show --show-configuration`.
pub fn show_configuration(ds: &dyn Datastore) -> Result<String, RoutectlError> {
    let (config, _) = read_ipam_config(ds)?;
    Ok(super::table::boxed_table(
        &["PROPERTY", "VALUE"],
        &[
            vec!["StrictAffinity".into(), config.strict_affinity.to_string()],
            vec![
                "AutoAllocateBlocks".into(),
                config.auto_allocate_blocks.to_string(),
            ],
        ],
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_splits_into_equal_parts_no_smaller_than_a_block() {
        let net: IpNet = "10.244.0.0/16".parse().unwrap();
        let parts = split_cidr(net, 4, 26).unwrap();
        let texts: Vec<String> = parts.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            [
                "10.244.0.0/18",
                "10.244.64.0/18",
                "10.244.128.0/18",
                "10.244.192.0/18"
            ]
        );
        assert!(split_cidr(net, 3, 26).unwrap_err().contains("power of 2"));
        assert!(split_cidr(net, 1, 26).unwrap_err().contains("power of 2"));
        let small: IpNet = "10.244.0.0/24".parse().unwrap();
        assert!(split_cidr(small, 4, 24)
            .unwrap_err()
            .contains("not large enough"));
        let v6: IpNet = "fd00::/120".parse().unwrap();
        assert_eq!(split_cidr(v6, 2, 122).unwrap().len(), 2);
    }
}

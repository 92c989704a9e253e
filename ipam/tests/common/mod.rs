//! Shared fixtures for the allocator tests.
#![allow(clippy::unwrap_used)]
#![allow(dead_code)]

use std::collections::BTreeMap;

use ipam::{IpPool, IpPoolSpec};

pub fn pool(name: &str, cidr: &str, block_size: i64) -> IpPool {
    IpPool::new(
        name,
        &IpPoolSpec {
            cidr: cidr.into(),
            block_size: Some(block_size),
            ..Default::default()
        },
    )
    .unwrap()
}

pub fn pool_with(
    name: &str,
    cidr: &str,
    block_size: i64,
    f: impl FnOnce(&mut IpPoolSpec),
) -> IpPool {
    let mut spec = IpPoolSpec {
        cidr: cidr.into(),
        block_size: Some(block_size),
        ..Default::default()
    };
    f(&mut spec);
    IpPool::new(name, &spec).unwrap()
}

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn no_labels() -> BTreeMap<String, String> {
    BTreeMap::new()
}

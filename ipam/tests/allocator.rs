//! Claim / assign / release / borrow behaviour of the allocator over the in-memory store.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;

use common::{labels, no_labels, pool, pool_with};
use ipam::report::LeakReason;
use ipam::{
    AffinityState, AllocationBlock, Allocator, AllocatorConfig, AssignRequest, BlockAffinity,
    IpFamily, IpamError, IpamHandle, IpamStore, MemoryStore, Record, RecordKind, TunnelKind,
};
use ipnet::IpNet;

fn allocator() -> Allocator<MemoryStore> {
    Allocator::new(MemoryStore::new(), AllocatorConfig::default())
}

fn req(handle: &str, node: &str) -> AssignRequest {
    AssignRequest::pod(handle, node, IpFamily::V4, "default", handle)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn block(a: &Allocator<MemoryStore>, cidr: &str) -> AllocationBlock {
    match a
        .store()
        .get(RecordKind::Block, &ipam::cidr_record_name(&net(cidr)))
        .unwrap()
        .unwrap()
        .value
    {
        Record::Block(b) => b,
        other => panic!("not a block: {other:?}"),
    }
}

#[test]
fn first_assignment_claims_a_block_with_calico_records() {
    let a = allocator();
    let pools = [pool("default", "10.244.0.0/16", 24)];
    let got = a
        .assign(&pools, &no_labels(), &req("c1", "node-a"))
        .unwrap();
    assert_eq!(got.address, ip("10.244.0.0"));
    assert_eq!(got.block, net("10.244.0.0/24"));
    assert!(!got.borrowed);

    let b = block(&a, "10.244.0.0/24");
    assert_eq!(b.affinity.as_deref(), Some("host:node-a"));
    assert_eq!(b.in_use(), 1);
    let attr = b.attribute(0).unwrap();
    assert_eq!(attr.handle_id.as_deref(), Some("c1"));
    assert_eq!(attr.secondary["namespace"], "default");
    assert_eq!(attr.secondary["pod"], "c1");
    assert_eq!(attr.secondary["node"], "node-a");

    let aff = a
        .store()
        .get(RecordKind::Affinity, "node-a-10-244-0-0-24")
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(
        aff,
        Record::Affinity(BlockAffinity {
            node: "node-a".into(),
            cidr: net("10.244.0.0/24"),
            state: AffinityState::Confirmed
        })
    );
    let h = a
        .store()
        .get(RecordKind::Handle, "c1")
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(
        h,
        Record::Handle(IpamHandle {
            handle_id: "c1".into(),
            block: BTreeMap::from([("10.244.0.0/24".into(), 1)])
        })
    );
    assert_eq!(
        a.affine_blocks("node-a").unwrap(),
        vec![net("10.244.0.0/24")]
    );
    assert!(a.affine_blocks("node-b").unwrap().is_empty());
    assert!(a.check().unwrap().is_clean());
}

#[test]
fn assign_is_idempotent_per_handle_and_family() {
    let a = allocator();
    let pools = [
        pool("v4", "10.244.0.0/16", 24),
        pool("v6", "fd00:10:244::/64", 122),
    ];
    let first = a.assign(&pools, &no_labels(), &req("c1", "n1")).unwrap();
    let again = a.assign(&pools, &no_labels(), &req("c1", "n1")).unwrap();
    assert_eq!(first, again);
    let mut r6 = req("c1", "n1");
    r6.family = IpFamily::V6;
    let v6 = a.assign(&pools, &no_labels(), &r6).unwrap();
    assert_eq!(v6.address, ip("fd00:10:244::"));
    assert_eq!(a.assign(&pools, &no_labels(), &r6).unwrap(), v6);
    let other = a.assign(&pools, &no_labels(), &req("c2", "n1")).unwrap();
    assert_eq!(other.address, ip("10.244.0.1"));
    assert_eq!(
        a.addresses("c1").unwrap(),
        vec![ip("10.244.0.0"), ip("fd00:10:244::")]
    );
    assert!(a.check().unwrap().is_clean());
}

#[test]
fn release_by_handle_frees_addresses_and_twice_is_fine() {
    let a = allocator();
    let pools = [
        pool("v4", "10.244.0.0/16", 24),
        pool("v6", "fd00:10:244::/64", 122),
    ];
    a.assign(&pools, &no_labels(), &req("c1", "n1")).unwrap();
    let mut r6 = req("c1", "n1");
    r6.family = IpFamily::V6;
    a.assign(&pools, &no_labels(), &r6).unwrap();
    a.assign(&pools, &no_labels(), &req("c2", "n1")).unwrap();

    let mut released = a.release("c1").unwrap();
    released.sort();
    assert_eq!(released, vec![ip("10.244.0.0"), ip("fd00:10:244::")]);
    assert!(a.release("c1").unwrap().is_empty());
    assert!(a.release("never-existed").unwrap().is_empty());
    assert!(a.store().get(RecordKind::Handle, "c1").unwrap().is_none());
    assert!(a.addresses("c1").unwrap().is_empty());
    // The block stays with the node (it still holds c2) and the freed address is reused last.
    assert_eq!(block(&a, "10.244.0.0/24").in_use(), 1);
    let c3 = a.assign(&pools, &no_labels(), &req("c3", "n1")).unwrap();
    assert_eq!(c3.address, ip("10.244.0.2"));
    assert!(a.check().unwrap().is_clean());
}

#[test]
fn second_block_when_the_first_is_full() {
    let a = allocator();
    let pools = [pool("p", "10.0.0.0/24", 29)]; // 8 addresses per block
    for i in 0..8 {
        let got = a
            .assign(&pools, &no_labels(), &req(&format!("c{i}"), "n1"))
            .unwrap();
        assert_eq!(got.block, net("10.0.0.0/29"));
    }
    let ninth = a.assign(&pools, &no_labels(), &req("c8", "n1")).unwrap();
    assert_eq!(ninth.block, net("10.0.0.8/29"));
    assert_eq!(ninth.address, ip("10.0.0.8"));
    assert_eq!(
        a.affine_blocks("n1").unwrap(),
        vec![net("10.0.0.0/29"), net("10.0.0.8/29")]
    );
    // A second node gets its own, next free block.
    let other = a.assign(&pools, &no_labels(), &req("d0", "n2")).unwrap();
    assert_eq!(other.block, net("10.0.0.16/29"));
    // Affine blocks are filled in prefix order, freed space before anything new.
    a.release("c3").unwrap();
    let reuse = a.assign(&pools, &no_labels(), &req("c9", "n1")).unwrap();
    assert_eq!(reuse.address, ip("10.0.0.3"));
    let next = a.assign(&pools, &no_labels(), &req("c10", "n1")).unwrap();
    assert_eq!(next.address, ip("10.0.0.9"));
    assert_eq!(a.affine_blocks("n1").unwrap().len(), 2);
    assert!(a.check().unwrap().is_clean());
}

#[test]
fn empty_blocks_are_released_with_their_affinity() {
    let a = allocator();
    let pools = [pool("p", "10.0.0.0/24", 29)];
    for i in 0..10 {
        a.assign(&pools, &no_labels(), &req(&format!("c{i}"), "n1"))
            .unwrap();
    }
    for i in 8..10 {
        a.release(&format!("c{i}")).unwrap();
    }
    // Only the empty second block goes.
    assert_eq!(
        a.release_empty_blocks("n1").unwrap(),
        vec![net("10.0.0.8/29")]
    );
    assert_eq!(a.affine_blocks("n1").unwrap(), vec![net("10.0.0.0/29")]);
    assert!(a
        .store()
        .get(RecordKind::Affinity, "n1-10-0-0-8-29")
        .unwrap()
        .is_none());
    assert!(a.release_empty_blocks("n1").unwrap().is_empty());
    // require_empty keeps a block in use.
    assert!(!a.release_affinity("n1", net("10.0.0.0/29"), true).unwrap());
    assert_eq!(a.affine_blocks("n1").unwrap(), vec![net("10.0.0.0/29")]);
    let aff = a
        .store()
        .get(RecordKind::Affinity, "n1-10-0-0-0-29")
        .unwrap()
        .unwrap()
        .value;
    assert!(matches!(
        aff,
        Record::Affinity(BlockAffinity {
            state: AffinityState::Confirmed,
            ..
        })
    ));
    // The released range can be claimed by another node.
    let got = a.assign(&pools, &no_labels(), &req("d0", "n2")).unwrap();
    assert_eq!(got.block, net("10.0.0.8/29"));
    assert!(a.check().unwrap().is_clean());
}

#[test]
fn releasing_a_non_empty_affinity_leaves_an_unowned_block_until_empty() {
    let a = allocator();
    let pools = [pool("p", "10.0.0.0/24", 29)];
    a.assign(&pools, &no_labels(), &req("c0", "n1")).unwrap();
    a.assign(&pools, &no_labels(), &req("c1", "n1")).unwrap();
    assert_eq!(a.release_node("n1").unwrap(), vec![net("10.0.0.0/29")]);
    assert!(a.affine_blocks("n1").unwrap().is_empty());
    let b = block(&a, "10.0.0.0/29");
    assert_eq!(b.affinity, None);
    assert_eq!(b.in_use(), 2);
    assert!(a.check().unwrap().is_clean());
    a.release("c0").unwrap();
    a.release("c1").unwrap();
    // The last release deletes the unowned empty block.
    assert_eq!(a.store().count(RecordKind::Block), 0);
    assert!(a.check().unwrap().is_clean());
}

#[test]
fn borrows_from_another_nodes_block_when_no_block_is_free() {
    let a = allocator();
    let pools = [pool("p", "10.0.0.0/28", 29)]; // two blocks of 8
    a.assign(&pools, &no_labels(), &req("a0", "n1")).unwrap();
    a.assign(&pools, &no_labels(), &req("b0", "n2")).unwrap();
    for i in 1..8 {
        a.assign(&pools, &no_labels(), &req(&format!("b{i}"), "n2"))
            .unwrap();
    }
    // n2's block is full and the pool has no free block: n2 borrows from n1's block.
    let got = a.assign(&pools, &no_labels(), &req("b8", "n2")).unwrap();
    assert!(got.borrowed);
    assert_eq!(got.block, net("10.0.0.0/29"));
    assert_eq!(got.address, ip("10.0.0.1"));
    assert_eq!(a.borrowed_addresses("n2").unwrap(), vec![ip("10.0.0.1")]);
    assert!(a.borrowed_addresses("n1").unwrap().is_empty());
    // Ownership is unchanged: n1 still originates its block.
    assert_eq!(a.affine_blocks("n1").unwrap(), vec![net("10.0.0.0/29")]);
    assert_eq!(a.affine_blocks("n2").unwrap(), vec![net("10.0.0.8/29")]);
    // Idempotent assign reports the borrow again.
    assert!(
        a.assign(&pools, &no_labels(), &req("b8", "n2"))
            .unwrap()
            .borrowed
    );
    assert!(a.check().unwrap().is_clean());
}

#[test]
fn strict_affinity_disables_borrowing() {
    let a = Allocator::new(
        MemoryStore::new(),
        AllocatorConfig {
            strict_affinity: true,
            ..Default::default()
        },
    );
    let pools = [pool("p", "10.0.0.0/28", 29)];
    a.assign(&pools, &no_labels(), &req("a0", "n1")).unwrap();
    for i in 0..8 {
        a.assign(&pools, &no_labels(), &req(&format!("b{i}"), "n2"))
            .unwrap();
    }
    let err = a
        .assign(&pools, &no_labels(), &req("b8", "n2"))
        .unwrap_err();
    assert_eq!(
        err,
        IpamError::Exhausted {
            node: "n2".into(),
            family: IpFamily::V4,
            pools: vec!["p".into()]
        }
    );
    // n1 still has room in its own block.
    a.assign(&pools, &no_labels(), &req("a1", "n1")).unwrap();
}

#[test]
fn exhausted_when_every_address_is_taken() {
    let a = allocator();
    let pools = [pool("p", "10.0.0.0/29", 30)];
    for i in 0..8 {
        a.assign(
            &pools,
            &no_labels(),
            &req(&format!("c{i}"), &format!("n{}", i % 3)),
        )
        .unwrap();
    }
    let err = a
        .assign(&pools, &no_labels(), &req("c8", "n0"))
        .unwrap_err();
    assert!(matches!(err, IpamError::Exhausted { .. }), "{err}");
    let u = a.usage(&pools).unwrap();
    assert_eq!(
        (u.pools[0].total, u.pools[0].in_use, u.pools[0].free),
        (8, 8, 0)
    );
}

#[test]
fn tunnel_address_is_the_first_address_of_the_nodes_block() {
    let a = allocator();
    let pools = [
        pool_with("ipip", "10.0.0.0/24", 26, |s| {
            s.ipip_mode = Some("Always".into())
        }),
        pool_with("vx", "10.1.0.0/24", 26, |s| {
            s.vxlan_mode = Some("CrossSubnet".into())
        }),
        pool_with("vx6", "fd00::/120", 122, |s| {
            s.vxlan_mode = Some("Always".into())
        }),
    ];
    let t = a
        .assign_tunnel_address(&pools, "n1", &no_labels(), TunnelKind::Ipip)
        .unwrap();
    assert_eq!(t.address, ip("10.0.0.0"));
    let again = a
        .assign_tunnel_address(&pools, "n1", &no_labels(), TunnelKind::Ipip)
        .unwrap();
    assert_eq!(again, t);
    assert_eq!(
        a.addresses("ipip-tunnel-addr-n1").unwrap(),
        vec![ip("10.0.0.0")]
    );
    let b = block(&a, "10.0.0.0/26");
    assert_eq!(
        b.attribute(0).unwrap().secondary["type"],
        "ipipTunnelAddress"
    );
    assert_eq!(b.attribute(0).unwrap().secondary["node"], "n1");

    let vx = a
        .assign_tunnel_address(&pools, "n1", &no_labels(), TunnelKind::Vxlan)
        .unwrap();
    assert_eq!(vx.address, ip("10.1.0.0"));
    assert_eq!(
        a.addresses("vxlan-tunnel-addr-n1").unwrap(),
        vec![vx.address]
    );
    let vx6 = a
        .assign_tunnel_address(&pools, "n1", &no_labels(), TunnelKind::VxlanV6)
        .unwrap();
    assert_eq!(vx6.address, ip("fd00::"));
    assert_eq!(
        a.addresses("vxlan-v6-tunnel-addr-n1").unwrap(),
        vec![vx6.address]
    );

    // With pods already in the block, the tunnel takes the lowest free address.
    for i in 0..3 {
        a.assign(&pools, &no_labels(), &req(&format!("p{i}"), "n2"))
            .unwrap();
    }
    a.release("p0").unwrap();
    let t2 = a
        .assign_tunnel_address(&pools, "n2", &no_labels(), TunnelKind::Ipip)
        .unwrap();
    assert_eq!(t2.address, ip("10.0.0.64"));
    assert!(a.check().unwrap().is_clean());
}

#[test]
fn tunnel_address_needs_a_pool_with_that_encapsulation() {
    let a = allocator();
    let pools = [pool("plain", "10.0.0.0/24", 26)];
    let err = a
        .assign_tunnel_address(&pools, "n1", &no_labels(), TunnelKind::Vxlan)
        .unwrap_err();
    assert_eq!(
        err,
        IpamError::NoPool {
            node: "n1".into(),
            family: IpFamily::V4
        }
    );
}

#[test]
fn pool_selection_honours_node_selector_disabled_and_family() {
    let a = allocator();
    let pools = [
        pool_with("off", "10.9.0.0/24", 26, |s| s.disabled = true),
        pool_with("rack-a", "10.1.0.0/24", 26, |s| {
            s.node_selector = Some("rack == 'a'".into())
        }),
        pool_with("not-a", "10.2.0.0/24", 26, |s| {
            s.node_selector = Some("!has(rack) || rack != 'a'".into())
        }),
        pool("v6", "fd00::/120", 122),
    ];
    let on_a = a
        .assign(&pools, &labels(&[("rack", "a")]), &req("x", "na"))
        .unwrap();
    assert!(net("10.1.0.0/24").contains(&on_a.address));
    let on_b = a
        .assign(&pools, &labels(&[("rack", "b")]), &req("y", "nb"))
        .unwrap();
    assert!(net("10.2.0.0/24").contains(&on_b.address));
    let bare = a.assign(&pools, &no_labels(), &req("z", "nc")).unwrap();
    assert!(net("10.2.0.0/24").contains(&bare.address));

    // Only the disabled pool selects the node: no pool.
    let only_off = [pools[0].clone()];
    assert!(matches!(
        a.assign(&only_off, &no_labels(), &req("w", "nd")),
        Err(IpamError::NoPool { .. })
    ));
    // A disabled pool's existing addresses stay assigned and idempotent lookups still work.
    let enabled = [pool("p", "10.9.0.0/24", 26)];
    let got = a.assign(&enabled, &no_labels(), &req("v", "ne")).unwrap();
    assert_eq!(
        a.assign(&only_off, &no_labels(), &req("v", "ne")).unwrap(),
        got
    );
    // Family filter.
    let mut r6 = req("q", "na");
    r6.family = IpFamily::V6;
    let v6 = a.assign(&pools, &labels(&[("rack", "a")]), &r6).unwrap();
    assert_eq!(v6.address, ip("fd00::"));
}

#[test]
fn a_node_outside_a_pools_selector_does_not_reuse_its_old_block() {
    let a = allocator();
    let open = [pool("p", "10.0.0.0/24", 26)];
    a.assign(&open, &no_labels(), &req("c0", "n1")).unwrap();
    let restricted = [
        pool_with("p", "10.0.0.0/24", 26, |s| {
            s.node_selector = Some("has(gpu)".into())
        }),
        pool("q", "10.5.0.0/24", 26),
    ];
    let got = a
        .assign(&restricted, &no_labels(), &req("c1", "n1"))
        .unwrap();
    assert_eq!(got.block, net("10.5.0.0/26"));
}

#[test]
fn usage_per_pool_and_block() {
    let a = allocator();
    let pools = [pool("p", "10.0.0.0/24", 29), pool("q", "10.1.0.0/24", 26)];
    for i in 0..10 {
        a.assign(&pools, &no_labels(), &req(&format!("c{i}"), "n1"))
            .unwrap();
    }
    a.assign(&pools, &no_labels(), &req("d", "n2")).unwrap();
    let u = a.usage(&pools).unwrap();
    let p = &u.pools[0];
    assert_eq!((p.total, p.in_use, p.free), (256, 11, 245));
    assert_eq!(p.blocks.len(), 3);
    assert_eq!(p.blocks[0].cidr, net("10.0.0.0/29"));
    assert_eq!(p.blocks[0].node.as_deref(), Some("n1"));
    assert_eq!(
        (p.blocks[0].total, p.blocks[0].in_use, p.blocks[0].free),
        (8, 8, 0)
    );
    assert_eq!((p.blocks[1].in_use, p.blocks[2].in_use), (2, 1));
    assert_eq!(p.blocks[2].node.as_deref(), Some("n2"));
    assert_eq!((u.pools[1].total, u.pools[1].in_use), (256, 0));
    // A block left from a pool that no longer exists is listed separately.
    let u = a.usage(&pools[1..]).unwrap();
    assert_eq!(u.blocks_outside_pools.len(), 3);
    let json = serde_json::to_value(&u).unwrap();
    assert_eq!(json["pools"][0]["inUse"], 0);
}

#[test]
fn release_by_ip() {
    let a = allocator();
    let pools = [pool("p", "10.0.0.0/24", 29)];
    a.assign(&pools, &no_labels(), &req("c0", "n1")).unwrap();
    a.assign(&pools, &no_labels(), &req("c1", "n1")).unwrap();
    let attr = a.release_ip(ip("10.0.0.1")).unwrap().unwrap();
    assert_eq!(attr.handle_id.as_deref(), Some("c1"));
    assert_eq!(attr.secondary["pod"], "c1");
    assert!(a.store().get(RecordKind::Handle, "c1").unwrap().is_none());
    assert_eq!(a.release_ip(ip("10.0.0.1")).unwrap(), None);
    assert_eq!(a.release_ip(ip("10.0.0.5")).unwrap(), None);
    assert_eq!(a.release_ip(ip("192.168.0.1")).unwrap(), None);
    assert!(a.check().unwrap().is_clean());
    // Releasing the handle afterwards is harmless.
    assert!(a.release("c1").unwrap().is_empty());
}

#[test]
fn rejects_empty_handle_or_node() {
    let a = allocator();
    let pools = [pool("p", "10.0.0.0/24", 29)];
    assert!(matches!(
        a.assign(&pools, &no_labels(), &req("", "n1")),
        Err(IpamError::InvalidRequest(_))
    ));
    assert!(matches!(
        a.assign(&pools, &no_labels(), &req("h", "")),
        Err(IpamError::InvalidRequest(_))
    ));
}

#[test]
fn check_finds_leaks_dangling_handles_double_assignments_and_orphans() {
    let a = allocator();
    let pools = [pool("p", "10.0.0.0/24", 29)];
    a.assign(&pools, &no_labels(), &req("c0", "n1")).unwrap();
    a.assign(&pools, &no_labels(), &req("c1", "n1")).unwrap();
    let s = a.store();

    // Leak: delete c0's handle behind the allocator's back.
    let h = s.get(RecordKind::Handle, "c0").unwrap().unwrap();
    s.delete(RecordKind::Handle, "c0", &h.revision).unwrap();
    // Dangling: a handle pointing at a block with nothing of it.
    s.create(Record::Handle(IpamHandle {
        handle_id: "ghost".into(),
        block: BTreeMap::from([("10.0.0.0/29".into(), 1)]),
    }))
    .unwrap();
    // Double assignment: an overlapping /30 block assigning 10.0.0.1 again.
    let mut overlap = serde_json::from_value::<AllocationBlock>(serde_json::json!({
        "cidr": "10.0.0.0/30", "allocations": [null, 0, null, null],
        "unallocated": [0, 2, 3], "attributes": [{"handle_id": "dup"}]
    }))
    .unwrap();
    overlap.affinity = None;
    s.create(Record::Block(overlap)).unwrap();
    s.create(Record::Handle(IpamHandle {
        handle_id: "dup".into(),
        block: BTreeMap::from([("10.0.0.0/30".into(), 1)]),
    }))
    .unwrap();
    // Orphaned affinity: confirmed claim on a block that does not exist.
    s.create(Record::Affinity(BlockAffinity {
        node: "n9".into(),
        cidr: net("10.0.0.64/29"),
        state: AffinityState::Confirmed,
    }))
    .unwrap();
    // Corrupt block.
    let mut bad = serde_json::from_value::<AllocationBlock>(serde_json::json!({
        "cidr": "10.0.0.128/30", "allocations": [null, null, null, null],
        "unallocated": [0, 0, 1, 2, 3]
    }))
    .unwrap();
    bad.affinity = Some("host:n5".into());
    s.create(Record::Block(bad)).unwrap();

    let r = a.check().unwrap();
    assert!(!r.is_clean());
    assert_eq!(r.leaked_allocations.len(), 1);
    assert_eq!(r.leaked_allocations[0].address, ip("10.0.0.0"));
    assert_eq!(r.leaked_allocations[0].reason, LeakReason::HandleMissing);
    assert_eq!(r.dangling_handles.len(), 1);
    assert_eq!(r.dangling_handles[0].handle, "ghost");
    assert_eq!(r.double_assignments.len(), 1);
    assert_eq!(r.double_assignments[0].address, ip("10.0.0.1"));
    assert_eq!(
        r.double_assignments[0].blocks,
        vec![net("10.0.0.0/29"), net("10.0.0.0/30")]
    );
    assert_eq!(r.orphaned_affinities, vec!["n9-10-0-0-64-29".to_string()]);
    assert_eq!(r.corrupt_blocks.len(), 1);
    assert!(
        r.corrupt_blocks[0].contains("twice"),
        "{:?}",
        r.corrupt_blocks
    );
    assert_eq!((r.blocks, r.allocations), (3, 3));

    // The allocator keeps working around the damage and never assigns inside the corrupt or
    // overlapping ranges when claiming.
    for i in 0..20 {
        let got = a
            .assign(&pools, &no_labels(), &req(&format!("n{i}"), "n2"))
            .unwrap();
        assert!(!net("10.0.0.128/30").contains(&got.address));
        assert!(!net("10.0.0.0/29").contains(&got.address));
    }
}

#[test]
fn release_ip_counts_a_handle_with_an_unlisted_allocation_as_leak() {
    let a = allocator();
    let pools = [pool("p", "10.0.0.0/24", 29)];
    a.assign(&pools, &no_labels(), &req("c0", "n1")).unwrap();
    // Handle says 0 addresses in the block... by rewriting it to another block.
    let h = a.store().get(RecordKind::Handle, "c0").unwrap().unwrap();
    a.store()
        .update(
            Record::Handle(IpamHandle {
                handle_id: "c0".into(),
                block: BTreeMap::from([("10.0.0.8/29".into(), 1)]),
            }),
            &h.revision,
        )
        .unwrap();
    let r = a.check().unwrap();
    assert_eq!(
        r.leaked_allocations[0].reason,
        LeakReason::NotCountedByHandle
    );
    assert_eq!(r.dangling_handles.len(), 1);
}

#[test]
fn claims_skip_blocks_of_an_older_block_size() {
    let a = allocator();
    let old = [pool("p", "10.0.0.0/24", 26)];
    a.assign(&old, &no_labels(), &req("c0", "n1")).unwrap(); // 10.0.0.0/26
    a.assign(&old, &no_labels(), &req("c1", "n2")).unwrap(); // 10.0.0.64/26
                                                             // The pool is re-created with smaller blocks: new claims avoid the old /26 ranges.
    let new = [pool("p", "10.0.0.0/24", 28)];
    let got = a.assign(&new, &no_labels(), &req("d0", "n3")).unwrap();
    assert_eq!(got.block, net("10.0.0.128/28"));
    let got = a.assign(&new, &no_labels(), &req("d1", "n4")).unwrap();
    assert_eq!(got.block, net("10.0.0.144/28"));
    // n1 keeps using its old block.
    let got = a.assign(&new, &no_labels(), &req("c2", "n1")).unwrap();
    assert_eq!(got.block, net("10.0.0.0/26"));
    assert!(a.check().unwrap().is_clean());
}

#[test]
fn ipv6_blocks_and_names() {
    let a = allocator();
    let pools = [pool("v6", "fd00:10:244::/64", 122)];
    let mut r = req("c0", "n1");
    r.family = IpFamily::V6;
    let got = a.assign(&pools, &no_labels(), &r).unwrap();
    assert_eq!(got.block, net("fd00:10:244::/122"));
    let mut r = req("c1", "n2");
    r.family = IpFamily::V6;
    let got = a.assign(&pools, &no_labels(), &r).unwrap();
    assert_eq!(got.block, net("fd00:10:244::40/122"));
    assert_eq!(got.address, ip("fd00:10:244::40"));
    assert!(a
        .store()
        .get(RecordKind::Block, "fd00-10-244--40-122")
        .unwrap()
        .is_some());
    let u = a.usage(&pools).unwrap();
    assert_eq!(u.pools[0].total, 1u128 << 64);
    assert_eq!(u.pools[0].in_use, 2);
}

#[test]
fn ensure_block_claims_once_per_pool_and_is_idempotent() {
    let a = allocator();
    let pools = [
        pool("a", "10.244.0.0/16", 24),
        pool("b", "10.245.0.0/16", 26),
    ];
    let first = a
        .ensure_block(&pools, "node-a", &no_labels(), IpFamily::V4)
        .unwrap();
    assert_eq!(first, vec![net("10.244.0.0/24"), net("10.245.0.0/26")]);
    // Idempotent: no second block while the node owns one in each pool.
    let again = a
        .ensure_block(&pools, "node-a", &no_labels(), IpFamily::V4)
        .unwrap();
    assert_eq!(again, first);
    // Another node gets the next blocks, and pod assignment uses the ensured block.
    let other = a
        .ensure_block(&pools, "node-b", &no_labels(), IpFamily::V4)
        .unwrap();
    assert_eq!(other, vec![net("10.244.1.0/24"), net("10.245.0.64/26")]);
    let got = a
        .assign(&pools[..1], &no_labels(), &req("c1", "node-a"))
        .unwrap();
    assert_eq!(got.block, net("10.244.0.0/24"));
    assert_eq!(a.affine_blocks("node-a").unwrap(), first);
}

#[test]
fn ensure_block_needs_an_eligible_pool_and_skips_a_full_one() {
    let a = allocator();
    assert!(matches!(
        a.ensure_block(&[], "node-a", &no_labels(), IpFamily::V4),
        Err(IpamError::NoPool { .. })
    ));
    // A /24 pool cut into one /24 block: the second node finds it taken and owns nothing.
    let pools = [pool("tiny", "10.9.0.0/24", 24)];
    assert_eq!(
        a.ensure_block(&pools, "node-a", &no_labels(), IpFamily::V4)
            .unwrap(),
        vec![net("10.9.0.0/24")]
    );
    assert!(a
        .ensure_block(&pools, "node-b", &no_labels(), IpFamily::V4)
        .unwrap()
        .is_empty());
}

//! The ipam allocator running on the datastores through `DatastoreIpam`: the records
//! it writes (kinds, names, JSON), claim / assign / release / borrow, the compare-and-swap
//! error mapping, concurrent claimers in one process, and two file datastores on one
//! directory (two routerd on one host) never claiming the same block.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Barrier};

use datastore::ipam_store::{DatastoreIpam, AFFINITY_KIND, BLOCK_KIND, HANDLE_KIND};
use datastore::{Datastore, FileDatastore, MemoryDatastore};
use ipam::{
    AffinityState, Allocator, AllocatorConfig, AssignRequest, BlockAffinity, IpFamily, IpPool,
    IpPoolSpec, IpamHandle, IpamStore, Record, RecordKind, Revision, StoreError,
};
use ipnet::IpNet;

fn pool(cidr: &str, block_size: i64) -> IpPool {
    IpPool::new(
        "default-ipv4-ippool",
        &IpPoolSpec {
            cidr: cidr.into(),
            block_size: Some(block_size),
            ..Default::default()
        },
    )
    .unwrap()
}

fn req(handle: &str, node: &str) -> AssignRequest {
    AssignRequest::pod(handle, node, IpFamily::V4, "default", handle)
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn allocator(ds: Arc<dyn Datastore>) -> Allocator<DatastoreIpam> {
    Allocator::new(
        DatastoreIpam::new(ds),
        AllocatorConfig {
            // These tests are about uniqueness under contention, not about the retry budget.
            max_conflict_retries: 200,
            ..AllocatorConfig::default()
        },
    )
}

/// Both backends, so every scenario runs on each.
fn backends() -> Vec<(&'static str, Arc<dyn Datastore>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let file: Arc<dyn Datastore> = Arc::new(FileDatastore::open(dir.path()).unwrap());
    vec![
        ("memory", Arc::new(MemoryDatastore::new()), None),
        ("file", file, Some(dir)),
    ]
}

#[test]
fn claim_assign_release_borrow_on_both_backends() {
    for (backend, ds, _dir) in backends() {
        let a = allocator(ds.clone());
        let pools = [pool("10.65.0.0/28", 29)]; // two blocks of 8

        // Claim + assign: Calico's three records, under Calico's kinds and names.
        let got = a.assign(&pools, &labels(), &req("pod-a0", "n1")).unwrap();
        assert_eq!(got.address, ip("10.65.0.0"), "{backend}");
        assert_eq!(got.block, net("10.65.0.0/29"), "{backend}");
        assert!(!got.borrowed, "{backend}");
        let block = ds.get(BLOCK_KIND, "10-65-0-0-29").unwrap();
        assert_eq!(block.value["cidr"], "10.65.0.0/29", "{backend}");
        assert_eq!(block.value["affinity"], "host:n1", "{backend}");
        let aff = ds.get(AFFINITY_KIND, "n1-10-65-0-0-29").unwrap();
        assert_eq!(aff.value["state"], "confirmed", "{backend}");
        assert_eq!(aff.value["node"], "n1", "{backend}");
        let handle = ds.get(HANDLE_KIND, "pod-a0").unwrap();
        assert_eq!(handle.value["block"]["10.65.0.0/29"], 1, "{backend}");
        assert_eq!(a.affine_blocks("n1").unwrap(), vec![net("10.65.0.0/29")]);

        // n2 claims the other block and fills it.
        for i in 0..8 {
            let g = a
                .assign(&pools, &labels(), &req(&format!("pod-b{i}"), "n2"))
                .unwrap();
            assert_eq!(g.block, net("10.65.0.8/29"), "{backend}");
        }
        // No free block left: n2 borrows from n1's block.
        let borrowed = a.assign(&pools, &labels(), &req("pod-b8", "n2")).unwrap();
        assert!(borrowed.borrowed, "{backend}");
        assert_eq!(borrowed.address, ip("10.65.0.1"), "{backend}");
        assert_eq!(a.borrowed_addresses("n2").unwrap(), vec![ip("10.65.0.1")]);
        assert!(a.check().unwrap().is_clean(), "{backend}");

        // Release by handle and by address.
        assert_eq!(a.release("pod-a0").unwrap(), vec![ip("10.65.0.0")]);
        assert!(matches!(
            ds.get(HANDLE_KIND, "pod-a0"),
            Err(datastore::DatastoreError::NotFound { .. })
        ));
        assert!(a.release_ip(ip("10.65.0.1")).unwrap().is_some());
        assert!(a.release_ip(ip("10.65.0.1")).unwrap().is_none());
        assert!(a.check().unwrap().is_clean(), "{backend}");
        let usage = a.usage(&pools).unwrap();
        assert_eq!(usage.pools[0].in_use, 8, "{backend}");

        // Releasing the node's empty blocks removes block and affinity records.
        assert_eq!(
            a.release_empty_blocks("n1").unwrap(),
            vec![net("10.65.0.0/29")]
        );
        assert!(
            ds.list(AFFINITY_KIND).unwrap().records.len() == 1,
            "{backend}"
        );
        assert!(a.affine_blocks("n1").unwrap().is_empty(), "{backend}");
    }
}

#[test]
fn compare_and_swap_outcomes_map_to_store_errors() {
    for (backend, ds, _dir) in backends() {
        let s = DatastoreIpam::new(ds.clone());
        let h = |n: u32| {
            Record::Handle(IpamHandle {
                handle_id: "h".into(),
                block: BTreeMap::from([("10.0.0.0/26".to_string(), n)]),
            })
        };
        let r1 = s.create(h(1)).unwrap();
        assert!(
            matches!(s.create(h(2)), Err(StoreError::Conflict { .. })),
            "{backend}"
        );
        let r2 = s.update(h(2), &r1).unwrap();
        assert!(
            matches!(s.update(h(3), &r1), Err(StoreError::Conflict { .. })),
            "{backend}"
        );
        assert!(
            matches!(
                s.update(h(3), &Revision("not-a-number".into())),
                Err(StoreError::Conflict { .. })
            ),
            "{backend}"
        );
        assert_eq!(
            s.get(RecordKind::Handle, "h").unwrap().unwrap().value,
            h(2),
            "{backend}"
        );
        assert!(matches!(
            s.delete(RecordKind::Handle, "h", &r1),
            Err(StoreError::Conflict { .. })
        ));
        s.delete(RecordKind::Handle, "h", &r2).unwrap();
        assert!(matches!(
            s.delete(RecordKind::Handle, "h", &r2),
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            s.update(h(1), &r2),
            Err(StoreError::NotFound { .. })
        ));
        assert!(s.get(RecordKind::Handle, "h").unwrap().is_none());
    }
}

#[test]
fn handle_ids_the_datastore_would_refuse_are_stored_encoded() {
    for (backend, ds, _dir) in backends() {
        let s = DatastoreIpam::new(ds.clone());
        for id in ["ns/pod", "..", ".hidden", "a%2Fb"] {
            let rec = Record::Handle(IpamHandle {
                handle_id: id.into(),
                block: BTreeMap::new(),
            });
            s.create(rec.clone()).unwrap();
            assert_eq!(
                s.get(RecordKind::Handle, id).unwrap().unwrap().value,
                rec,
                "{backend} {id}"
            );
        }
        // `a%2Fb` and `a/b` are different handles.
        assert!(s.get(RecordKind::Handle, "a/b").unwrap().is_none());
        let ids: BTreeSet<String> = s
            .list(RecordKind::Handle)
            .unwrap()
            .into_iter()
            .map(|v| v.value.name())
            .collect();
        assert_eq!(
            ids,
            BTreeSet::from(["ns/pod", "..", ".hidden", "a%2Fb"].map(String::from))
        );
    }
}

#[test]
fn listing_shortcuts_agree_with_full_listings() {
    for (backend, ds, _dir) in backends() {
        let s = DatastoreIpam::new(ds.clone());
        for (node, cidr) in [
            ("n1", "10.0.0.0/26"),
            ("n1-x", "10.0.0.64/26"),
            ("n10", "10.0.0.128/26"),
            ("n1", "10.0.0.192/26"),
        ] {
            s.create(Record::Affinity(BlockAffinity {
                node: node.into(),
                cidr: net(cidr),
                state: AffinityState::Confirmed,
            }))
            .unwrap();
        }
        let mine: Vec<IpNet> = s
            .list_node_affinities("n1")
            .unwrap()
            .into_iter()
            .map(|v| match v.value {
                Record::Affinity(a) => a.cidr,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            mine,
            vec![net("10.0.0.0/26"), net("10.0.0.192/26")],
            "{backend}"
        );

        let a = allocator(ds.clone());
        let pools = [pool("10.66.0.0/24", 26)];
        for (i, node) in ["a", "b", "c"].iter().enumerate() {
            a.assign(&pools, &labels(), &req(&format!("h{i}"), node))
                .unwrap();
        }
        let mut cidrs = s.list_block_cidrs().unwrap();
        cidrs.sort();
        let mut full: Vec<IpNet> = s
            .list(RecordKind::Block)
            .unwrap()
            .into_iter()
            .map(|v| match v.value {
                Record::Block(b) => b.cidr,
                other => panic!("{other:?}"),
            })
            .collect();
        full.sort();
        assert_eq!(cidrs, full, "{backend}");
        assert_eq!(cidrs.len(), 3, "{backend}");
    }
}

#[test]
fn an_undecodable_record_is_a_backend_error_naming_it() {
    for (backend, ds, _dir) in backends() {
        ds.create(
            BLOCK_KIND,
            "10-1-0-0-24",
            serde_json::json!({"cidr": "nonsense"}),
        )
        .unwrap();
        let s = DatastoreIpam::new(ds.clone());
        for r in [
            s.list(RecordKind::Block).map(|_| ()),
            s.list_block_cidrs().map(|_| ()),
            s.get(RecordKind::Block, "10-1-0-0-24").map(|_| ()),
        ] {
            match r {
                Err(StoreError::Backend(msg)) => {
                    assert!(msg.contains("IPAMBlock/10-1-0-0-24"), "{backend}: {msg}")
                }
                other => panic!("{backend}: {other:?}"),
            }
        }
    }
}

/// Threads assigning concurrently (several per node, like concurrent CNI ADDs) from a pool
/// small enough that block claims collide and nodes end up borrowing.
fn concurrent_assignments(make: impl Fn() -> Arc<dyn Datastore>, backend: &str) {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 7;
    let pools = Arc::new([pool("10.70.0.0/27", 29)]); // 4 blocks of 8 = 32 addresses
    let start = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let a = allocator(make());
            let (pools, start) = (pools.clone(), start.clone());
            std::thread::spawn(move || {
                let node = format!("node-{}", t % 2);
                start.wait();
                (0..PER_THREAD)
                    .map(|i| {
                        a.assign(&pools[..], &labels(), &req(&format!("t{t}-{i}"), &node))
                            .unwrap()
                            .address
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for w in workers {
        for addr in w.join().unwrap() {
            assert!(seen.insert(addr), "{backend}: {addr} handed out twice");
        }
    }
    assert_eq!(seen.len(), THREADS * PER_THREAD);
    let a = allocator(make());
    let report = a.check().unwrap();
    assert!(report.is_clean(), "{backend}: {report:?}");
    assert_eq!(report.allocations, THREADS * PER_THREAD, "{backend}");
    // Every block has at most one owner, and owners agree with the affinity records.
    let n0: BTreeSet<IpNet> = a.affine_blocks("node-0").unwrap().into_iter().collect();
    let n1: BTreeSet<IpNet> = a.affine_blocks("node-1").unwrap().into_iter().collect();
    assert!(n0.is_disjoint(&n1), "{backend}: {n0:?} {n1:?}");
}

#[test]
fn concurrent_claimers_never_hand_out_an_address_twice_memory() {
    let ds: Arc<dyn Datastore> = Arc::new(MemoryDatastore::new());
    concurrent_assignments(|| ds.clone(), "memory");
}

#[test]
fn concurrent_claimers_never_hand_out_an_address_twice_file() {
    let dir = tempfile::tempdir().unwrap();
    let ds: Arc<dyn Datastore> = Arc::new(FileDatastore::open(dir.path()).unwrap());
    concurrent_assignments(|| ds.clone(), "file");
}

#[test]
fn two_file_datastores_on_one_directory_never_double_claim() {
    // Each thread opens its own FileDatastore on the same directory, as two routerd
    // processes on one host would: only the directory's lock coordinates them.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    concurrent_assignments(
        || Arc::new(FileDatastore::open(&path).unwrap()) as Arc<dyn Datastore>,
        "file, one instance per thread",
    );

    // Eager claims racing for the same free blocks: each instance claims a block for its
    // own node at the same moment, several rounds, on a pool with exactly enough blocks.
    let dir = tempfile::tempdir().unwrap();
    let pools = Arc::new([pool("10.71.0.0/28", 30)]); // 4 blocks of 4
    for round in 0..2 {
        let start = Arc::new(Barrier::new(2));
        let claimers: Vec<_> = (0..2)
            .map(|i| {
                let a = allocator(Arc::new(FileDatastore::open(dir.path()).unwrap()));
                let (pools, start) = (pools.clone(), start.clone());
                std::thread::spawn(move || {
                    let node = format!("r{round}-n{i}");
                    start.wait();
                    a.ensure_block(&pools[..], &node, &labels(), IpFamily::V4)
                        .unwrap()
                })
            })
            .collect();
        let got: Vec<Vec<IpNet>> = claimers.into_iter().map(|c| c.join().unwrap()).collect();
        assert_eq!(got[0].len(), 1, "round {round}: {got:?}");
        assert_eq!(got[1].len(), 1, "round {round}: {got:?}");
        assert_ne!(got[0], got[1], "round {round}: both claimed {:?}", got[0]);
    }
    let a = allocator(Arc::new(FileDatastore::open(dir.path()).unwrap()));
    let report = a.check().unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.blocks, 4);
    // The pool is now fully claimed: a fifth node gets no block (it will borrow).
    assert!(a
        .ensure_block(&pools[..], "late", &labels(), IpFamily::V4)
        .unwrap()
        .is_empty());
}

/// The IPAM settings round-trip; one the allocator cannot honour is refused, not ignored.
#[test]
fn ipam_settings_round_trip_and_unsupported_ones_are_refused() {
    use datastore::ipam_store::{read_ipam_config, write_ipam_config, IpamConfig};
    let ds = datastore::MemoryDatastore::new();
    assert_eq!(
        read_ipam_config(&ds).unwrap(),
        (IpamConfig::default(), None)
    );
    let strict = IpamConfig {
        strict_affinity: true,
        ..Default::default()
    };
    let v = write_ipam_config(&ds, &strict, None).unwrap();
    assert_eq!(read_ipam_config(&ds).unwrap(), (strict, Some(v)));
    assert!(strict.allocator_config().strict_affinity);
    let off = IpamConfig {
        auto_allocate_blocks: false,
        ..strict
    };
    write_ipam_config(&ds, &off, Some(v)).unwrap();
    let e = read_ipam_config(&ds).unwrap_err().to_string();
    assert!(e.contains("autoAllocateBlocks"), "{e}");
}

//! The etcd datastore against real etcd (Debian's 3.4, started by `lab::etcd`): what the
//! shared contract (`datastore_contract.rs`) does not cover. TLS with client certificates
//! and the errors of bad ones, an unreachable cluster, a prefix holding foreign data, a
//! value that is not ours, a compacted watch that relists and converges, compare-and-swap
//! between two clients, and a watch that survives the failure of its member.
#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

use std::time::{Duration, Instant};

use datastore::{
    Datastore, DatastoreError, EtcdDatastore, EtcdError, EtcdOptions, EtcdTls, EventType, WatchFrom,
};
use lab::etcd::{EtcdCluster, TlsFiles};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

fn plain(cluster: &EtcdCluster) -> EtcdOptions {
    EtcdOptions::new(cluster.endpoints().split(',').map(String::from).collect())
}

fn with_tls(cluster: &EtcdCluster, tls: EtcdTls) -> EtcdOptions {
    let mut options = plain(cluster);
    options.tls = Some(tls);
    options
}

fn client_tls(files: &TlsFiles) -> EtcdTls {
    EtcdTls {
        ca_cert: Some(files.ca.clone()),
        client_cert: Some(files.client_cert.clone()),
        client_key: Some(files.client_key.clone()),
    }
}

fn connect_error(options: EtcdOptions) -> String {
    match EtcdDatastore::connect(options) {
        Ok(_) => panic!("connected where it must not"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn tls_with_a_client_certificate_works_and_bad_certificates_are_refused_clearly() {
    let cluster = EtcdCluster::on_loopback(1, true).unwrap();
    let files = cluster.tls().unwrap().clone();
    let ds = EtcdDatastore::connect(with_tls(&cluster, client_tls(&files))).unwrap();
    let v = ds
        .create("IPPool", "default", json!({"cidr": "10.244.0.0/16"}))
        .unwrap();
    assert_eq!(ds.get("IPPool", "default").unwrap().version, v);

    // The members' certificates signed by a CA we do not trust.
    let other = TlsFiles::generate(cluster.dir(), "other", &["127.0.0.1"]).unwrap();
    let e = connect_error(with_tls(
        &cluster,
        EtcdTls {
            ca_cert: Some(other.ca.clone()),
            ..client_tls(&files)
        },
    ));
    assert!(e.contains("cannot reach the etcd cluster"), "{e}");
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // A client certificate the members do not trust, and none at all.
    for tls in [
        EtcdTls {
            client_cert: Some(other.client_cert.clone()),
            client_key: Some(other.client_key.clone()),
            ..client_tls(&files)
        },
        EtcdTls {
            ca_cert: Some(files.ca.clone()),
            client_cert: None,
            client_key: None,
        },
    ] {
        let e = connect_error(with_tls(&cluster, tls));
        assert!(e.contains(&cluster.endpoint(0)), "{e}");
    }
    // A file that cannot be read is named.
    let e = connect_error(with_tls(
        &cluster,
        EtcdTls {
            ca_cert: Some("/nonexistent/ca.pem".into()),
            ..client_tls(&files)
        },
    ));
    assert!(
        e.contains("ETCD_CA_CERT_FILE") && e.contains("/nonexistent/ca.pem"),
        "{e}"
    );
}

#[test]
fn an_unreachable_cluster_is_a_clear_error_within_the_timeouts() {
    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let e = connect_error(EtcdOptions::new(vec![endpoint.clone()]));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(e.contains("cannot reach the etcd cluster"), "{e}");
    assert!(e.contains(&endpoint), "{e}");
}

#[test]
fn a_prefix_holding_foreign_data_is_refused_and_foreign_values_are_named() {
    let cluster = EtcdCluster::on_loopback(1, false).unwrap();
    cluster
        .etcdctl(0, &["put", "/calico/resources/v3/x", "{}"])
        .unwrap();
    let mut options = plain(&cluster);
    options.prefix = "/calico/".into();
    match EtcdDatastore::connect(options) {
        Err(DatastoreError::Etcd(EtcdError::ForeignPrefix { prefix, key })) => {
            assert_eq!(prefix, "/calico/");
            assert_eq!(key, "/calico/resources/v3/x");
        }
        other => panic!("expected ForeignPrefix, got {other:?}"),
    }
    // Our own prefix is claimed once and accepted by every later client.
    let a = EtcdDatastore::connect(plain(&cluster)).unwrap();
    a.create("Node", "n1", json!({"asn": 64512})).unwrap();
    let b = EtcdDatastore::connect(plain(&cluster)).unwrap();
    assert_eq!(b.list("Node").unwrap().records.len(), 1);
    // Somebody writes a non-JSON value among our records: reads name the key.
    cluster
        .etcdctl(0, &["put", "/routerd/v1/Node/n2", "not json"])
        .unwrap();
    let e = b.list("Node").unwrap_err().to_string();
    assert!(
        e.contains("/routerd/v1/Node/n2") && e.contains("not JSON"),
        "{e}"
    );
}

#[test]
fn two_clients_compare_and_swap_and_the_loser_sees_the_winners_version() {
    let cluster = EtcdCluster::on_loopback(1, false).unwrap();
    let (a, b) = (
        EtcdDatastore::connect(plain(&cluster)).unwrap(),
        EtcdDatastore::connect(plain(&cluster)).unwrap(),
    );
    let v1 = a
        .create("IPAMBlock", "10-65-0-0-24", json!({"n": 0}))
        .unwrap();
    let v2 = a
        .update("IPAMBlock", "10-65-0-0-24", json!({"n": 1}), v1)
        .unwrap();
    match b.update("IPAMBlock", "10-65-0-0-24", json!({"n": 2}), v1) {
        Err(DatastoreError::Conflict {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (v1, v2)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    b.update("IPAMBlock", "10-65-0-0-24", json!({"n": 2}), v2)
        .unwrap();
    // 8 threads x 25 increments of one counter, each a read and a CAS retried on conflict:
    // no increment is lost.
    a.create("IPAMHandle", "counter", json!(0)).unwrap();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let ds = EtcdDatastore::connect(plain(&cluster)).unwrap();
                for _ in 0..25 {
                    for attempt in 0.. {
                        assert!(attempt < 1000, "no progress");
                        let r = ds.get("IPAMHandle", "counter").unwrap();
                        let n = r.value.as_u64().unwrap();
                        match ds.update("IPAMHandle", "counter", json!(n + 1), r.version) {
                            Ok(_) => break,
                            Err(DatastoreError::Conflict { .. }) => continue,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            });
        }
    });
    assert_eq!(a.get("IPAMHandle", "counter").unwrap().value, json!(200));
}

#[test]
fn a_watch_from_a_compacted_revision_expires_and_a_relist_converges() {
    let cluster = EtcdCluster::on_loopback(1, false).unwrap();
    let ds = EtcdDatastore::connect(plain(&cluster)).unwrap();
    let first = ds
        .create("BGPPeer", "tor-a", json!({"peerIP": "10.0.0.1"}))
        .unwrap();
    let mut v = first;
    for i in 0..5 {
        v = ds
            .update(
                "BGPPeer",
                "tor-a",
                json!({"peerIP": format!("10.0.0.{}", i + 2)}),
                v,
            )
            .unwrap();
    }
    ds.create("BGPPeer", "tor-b", json!({"peerIP": "10.0.1.1"}))
        .unwrap();
    // By hand, as an operator (or etcd's auto-compaction) would.
    let revision = ds.revision().unwrap();
    cluster
        .etcdctl(0, &["compact", &revision.to_string()])
        .unwrap();
    let expired = match ds.watch(None, WatchFrom::Revision(first)) {
        Err(e) => e,
        Ok(mut w) => w.next_timeout(WAIT).unwrap_err(),
    };
    match expired {
        DatastoreError::Expired { requested, oldest } => {
            assert_eq!(requested, first);
            assert_eq!(oldest, revision - 1);
        }
        e => panic!("expected Expired, got {e}"),
    }
    // Level-triggered: relist, then watch from the list's revision; nothing is missed.
    let listing = ds.list("BGPPeer").unwrap();
    let state: Vec<_> = listing
        .records
        .iter()
        .map(|r| (r.name.as_str(), r.value["peerIP"].as_str().unwrap()))
        .collect();
    assert_eq!(state, [("tor-a", "10.0.0.6"), ("tor-b", "10.0.1.1")]);
    let mut watch = ds
        .watch(None, WatchFrom::Revision(listing.revision))
        .unwrap();
    let d = ds.delete("BGPPeer", "tor-b", None).unwrap();
    let e = watch.next_timeout(WAIT).unwrap().unwrap();
    assert_eq!((e.event_type, e.revision()), (EventType::Deleted, d));
    assert_eq!(e.record.value, json!({"peerIP": "10.0.1.1"}));
}

#[test]
fn a_watch_survives_the_death_of_members_and_misses_no_change() {
    let mut cluster = EtcdCluster::on_loopback(3, false).unwrap();
    let ds = EtcdDatastore::connect(plain(&cluster)).unwrap();
    let mut watch = ds.watch(Some("Node"), WatchFrom::Now).unwrap();
    let mut written = Vec::new();
    // Kill the leader, then restart it, twice (new leaders each time); write throughout.
    for round in 0..2 {
        let leader = cluster.leader().unwrap();
        cluster.kill_member(leader);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut n = 0;
        while n < 5 {
            assert!(
                Instant::now() < deadline,
                "writes did not resume: {}",
                cluster.logs()
            );
            match ds.create("Node", &format!("r{round}-{n}"), json!(n)) {
                Ok(v) => {
                    written.push(v);
                    n += 1;
                }
                Err(DatastoreError::Etcd(e)) => {
                    eprintln!("write during failover: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("{e}"),
            }
        }
        cluster.start_member(leader).unwrap();
        cluster.wait_healthy(Duration::from_secs(30)).unwrap();
    }
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    while seen.len() < written.len() && Instant::now() < deadline {
        match watch.next_timeout(Duration::from_millis(500)) {
            Ok(Some(e)) => seen.push(e.revision()),
            Ok(None) => {}
            Err(e) => panic!("the watch failed instead of failing over: {e}"),
        }
    }
    assert_eq!(seen, written);
}

//! The Kubernetes datastore against the in-process API server stand-in
//! (`lab::kube_standin`, which speaks the REST and watch protocol over HTTP; it is not a
//! Kubernetes implementation). The shared contract runs in `datastore_contract.rs`; these
//! are the Kubernetes-specific behaviours: what goes over the wire on a conflict, `410 Gone`
//! on a live watch and on a resumed one, the transparent restart of a watch the server
//! ends, Nodes as Kubernetes Nodes, Calico's shapes on the wire, Secrets, and the thread
//! bridge.
#![cfg(feature = "kubernetes")]
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

use std::time::Duration;

use datastore::resource::{parse_manifests, Resource};
use datastore::{
    Datastore, DatastoreError, EventType, KubeConfigSource, KubeDatastore, KubeError, KubeOptions,
    WatchFrom,
};
use lab::kube_standin::{ApiServerStandin, ExpiredAs, StandinOptions};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(5);
const CORE_NODES: &str = "/api/v1/nodes";

struct Cluster {
    standin: ApiServerStandin,
    _dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
}

impl Cluster {
    fn start(event_window: usize, expired_as: ExpiredAs) -> Self {
        let standin = ApiServerStandin::start(StandinOptions {
            event_window,
            expired_as,
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        standin.write_kubeconfig(&kubeconfig).unwrap();
        let cluster = Self {
            standin,
            _dir: dir,
            kubeconfig,
        };
        cluster.client().install_crds().unwrap();
        cluster
    }

    /// A new client (as another routerd on another node would have).
    fn client(&self) -> KubeDatastore {
        KubeDatastore::connect(
            KubeConfigSource::Kubeconfig(self.kubeconfig.clone()),
            KubeOptions::default(),
        )
        .unwrap()
    }
}

fn next_event(watch: &mut datastore::Watch) -> datastore::Event {
    match watch.next_timeout(WAIT) {
        Ok(Some(e)) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[test]
fn concurrent_update_gets_409_and_a_retry_with_the_fresh_version_succeeds() {
    let cluster = Cluster::start(100, ExpiredAs::ErrorEvent);
    let (a, b) = (cluster.client(), cluster.client());
    let v1 = a
        .create("WorkloadEndpoint", "10-65-0-0-24", json!({"n": 0}))
        .unwrap();
    // Both read version v1; a writes first.
    assert_eq!(
        b.get("WorkloadEndpoint", "10-65-0-0-24").unwrap().version,
        v1
    );
    let v2 = a
        .update("WorkloadEndpoint", "10-65-0-0-24", json!({"n": 1}), v1)
        .unwrap();
    match b.update("WorkloadEndpoint", "10-65-0-0-24", json!({"n": 2}), v1) {
        Err(DatastoreError::Conflict {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (v1, v2)),
        other => panic!("expected Conflict, got {other:?}"),
    }
    // The conflict is the API server's 409 on a PUT carrying the stale resourceVersion.
    let requests = cluster.standin.requests();
    assert!(
        requests.iter().any(|r| r.method == "PUT"
            && r.target
                .starts_with("/apis/routerd.io/v1/workloadendpoints/10-65-0-0-24")
            && r.status == 409),
        "{requests:?}"
    );
    // b re-reads and retries with the fresh version.
    let fresh = b.get("WorkloadEndpoint", "10-65-0-0-24").unwrap();
    assert_eq!(fresh.value, json!({"n": 1}));
    let v3 = b
        .update(
            "WorkloadEndpoint",
            "10-65-0-0-24",
            json!({"n": fresh.value["n"].as_i64().unwrap() + 1}),
            fresh.version,
        )
        .unwrap();
    assert!(v3 > v2);
    assert_eq!(
        a.get("WorkloadEndpoint", "10-65-0-0-24").unwrap().value,
        json!({"n": 2})
    );
    // A delete with a stale precondition is a 409 too, and a create of an existing name
    // a 409 AlreadyExists.
    assert!(matches!(
        a.delete("WorkloadEndpoint", "10-65-0-0-24", Some(v2)),
        Err(DatastoreError::Conflict { .. })
    ));
    assert!(matches!(
        a.create("WorkloadEndpoint", "10-65-0-0-24", json!({})),
        Err(DatastoreError::AlreadyExists { .. })
    ));
    let statuses: Vec<_> = cluster
        .standin
        .requests()
        .iter()
        .filter(|r| r.status == 409)
        .map(|r| r.method.clone())
        .collect();
    assert!(statuses.contains(&"DELETE".into()), "{statuses:?}");
    assert!(statuses.contains(&"POST".into()), "{statuses:?}");
}

/// A live watch that the API server expires (`ERROR` event, `410`) reports `Expired`;
/// the consumer relists and watches from the list's revision, and misses nothing.
#[test]
fn live_watch_expired_by_the_server_relists_and_resumes_without_gap() {
    let cluster = Cluster::start(100, ExpiredAs::ErrorEvent);
    let ds = cluster.client();
    let writer = cluster.client();
    let mut watch = ds.watch(Some("WorkloadEndpoint"), WatchFrom::Now).unwrap();
    let v1 = writer.create("WorkloadEndpoint", "p1", json!(1)).unwrap();
    assert_eq!(next_event(&mut watch).revision(), v1);
    cluster.standin.expire_watches();
    match watch.next_timeout(WAIT) {
        Err(DatastoreError::Expired { requested, .. }) => assert_eq!(requested, v1),
        other => panic!("expected Expired, got {other:?}"),
    }
    // Changes made while the consumer has no watch.
    writer.create("WorkloadEndpoint", "p2", json!(2)).unwrap();
    writer.delete("WorkloadEndpoint", "p1", None).unwrap();
    let listing = ds.list("WorkloadEndpoint").unwrap();
    let names: Vec<_> = listing.records.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["p2"]);
    let mut watch = ds
        .watch(
            Some("WorkloadEndpoint"),
            WatchFrom::Revision(listing.revision),
        )
        .unwrap();
    let v4 = writer.create("WorkloadEndpoint", "p3", json!(3)).unwrap();
    let event = next_event(&mut watch);
    assert_eq!(
        (
            event.revision(),
            event.event_type,
            event.record.name.as_str()
        ),
        (v4, EventType::Added, "p3")
    );
    assert!(matches!(
        watch.next_timeout(Duration::from_millis(200)),
        Ok(None)
    ));
}

/// Resuming from a revision older than the server's window: `410` both as the real
/// server's `ERROR` event and as an HTTP `410` status; the relist then resumes.
#[test]
fn resuming_from_a_compacted_revision_expires_in_both_forms() {
    for expired_as in [ExpiredAs::ErrorEvent, ExpiredAs::HttpStatus] {
        let cluster = Cluster::start(3, expired_as);
        let ds = cluster.client();
        let mut version = ds.create("WorkloadEndpoint", "counter", json!(0)).unwrap();
        let start = version;
        for i in 1..10 {
            version = ds
                .update("WorkloadEndpoint", "counter", json!(i), version)
                .unwrap();
        }
        let err = match ds.watch(Some("WorkloadEndpoint"), WatchFrom::Revision(start)) {
            Err(e) => e,
            Ok(mut w) => w.next_timeout(WAIT).unwrap_err(),
        };
        match err {
            DatastoreError::Expired { requested, oldest } => {
                assert_eq!(requested, start, "{expired_as:?}");
                assert_eq!(oldest, version - 3, "{expired_as:?}");
            }
            e => panic!("{expired_as:?}: expected Expired, got {e}"),
        }
        let status = if expired_as == ExpiredAs::HttpStatus {
            410
        } else {
            200
        };
        assert!(cluster
            .standin
            .requests()
            .iter()
            .any(|r| r.target.contains("watch=true") && r.status == status));
        let listing = ds.list("WorkloadEndpoint").unwrap();
        assert_eq!(listing.records[0].value, json!(9));
        let mut watch = ds
            .watch(
                Some("WorkloadEndpoint"),
                WatchFrom::Revision(listing.revision),
            )
            .unwrap();
        let next = ds
            .update("WorkloadEndpoint", "counter", json!(10), version)
            .unwrap();
        assert_eq!(next_event(&mut watch).revision(), next);
    }
}

/// A watch stream the server ends (timeout, restart) is resumed from the last delivered
/// revision without the consumer seeing anything but the events.
#[test]
fn watch_ended_by_the_server_resumes_invisibly() {
    let cluster = Cluster::start(100, ExpiredAs::ErrorEvent);
    let ds = cluster.client();
    let mut watch = ds.watch(Some("WorkloadEndpoint"), WatchFrom::Now).unwrap();
    let v1 = ds.create("WorkloadEndpoint", "a", json!(1)).unwrap();
    assert_eq!(next_event(&mut watch).revision(), v1);
    cluster.standin.end_watches();
    let v2 = ds.create("WorkloadEndpoint", "b", json!(2)).unwrap();
    let v3 = ds.update("WorkloadEndpoint", "a", json!(3), v1).unwrap();
    assert_eq!(next_event(&mut watch).revision(), v2);
    assert_eq!(next_event(&mut watch).revision(), v3);
    let watches: Vec<_> = cluster
        .standin
        .requests()
        .into_iter()
        .filter(|r| {
            r.target
                .starts_with("/apis/routerd.io/v1/workloadendpoints?")
                && r.target.contains("watch=true")
        })
        .collect();
    assert_eq!(watches.len(), 2, "{watches:?}");
    assert!(
        watches[1].target.contains(&format!("resourceVersion={v1}")),
        "{watches:?}"
    );
}

/// A Node is the Kubernetes Node (Calico's KDD): reading one gives its labels, addresses
/// and `orchRefs`; writing adds Calico's annotations through the status subresource and
/// leaves the Node's spec alone; a relabel is a change of the record; deleting the
/// Kubernetes Node deletes the record; creating a Node the cluster lacks, or deleting one,
/// is refused with the reason.
#[test]
fn a_node_is_the_kubernetes_node() {
    let cluster = Cluster::start(100, ExpiredAs::ErrorEvent);
    cluster
        .standin
        .create(
            CORE_NODES,
            json!({"apiVersion": "v1", "kind": "Node",
                   "metadata": {"name": "worker-1", "labels": {"rack": "r1"}},
                   "spec": {"podCIDR": "10.1.0.0/24"},
                   "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}}),
        )
        .unwrap();
    let ds = cluster.client();
    let record = ds.get("Node", "worker-1").unwrap();
    let mut node = match Resource::from_value(record.value.clone(), 0).unwrap() {
        Resource::Node(n) => n,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        node.metadata.labels.get("rack").map(String::as_str),
        Some("r1")
    );
    assert_eq!(node.spec.addresses[0].address, "10.0.0.1");
    node.spec.bgp = Some(datastore::resource::NodeBgpSpec {
        ipv4_address: Some("10.0.0.1/24".into()),
        as_number: Some(64512.into()),
        ..Default::default()
    });
    let mut watch = ds.watch(Some("Node"), WatchFrom::Now).unwrap();
    let v2 = ds
        .update(
            "Node",
            "worker-1",
            Resource::Node(node).to_value(),
            record.version,
        )
        .unwrap();
    let stored = cluster.standin.object(CORE_NODES, "worker-1").unwrap();
    assert_eq!(
        stored["metadata"]["annotations"],
        json!({"projectcalico.org/IPv4Address": "10.0.0.1/24",
               "projectcalico.org/ASNumber": "64512"})
    );
    assert_eq!(stored["spec"], json!({"podCIDR": "10.1.0.0/24"}));
    assert!(cluster
        .standin
        .requests()
        .iter()
        .any(|r| r.method == "PUT" && r.target.starts_with("/api/v1/nodes/worker-1/status")));
    let event = next_event(&mut watch);
    assert_eq!(
        (event.event_type, event.record.version),
        (EventType::Modified, v2)
    );
    // A stale version conflicts like any other write.
    assert!(matches!(
        ds.update("Node", "worker-1", record.value.clone(), record.version),
        Err(DatastoreError::Conflict { .. })
    ));
    // `kubectl label node worker-1 rack=r2`.
    let mut relabelled = stored.clone();
    relabelled["metadata"]["labels"]["rack"] = json!("r2");
    cluster.standin.replace(CORE_NODES, relabelled).unwrap();
    let event = next_event(&mut watch);
    assert_eq!(
        event.record.value["metadata"]["labels"]["rack"],
        json!("r2")
    );
    assert_eq!(
        event.record.value["spec"]["bgp"]["ipv4Address"],
        json!("10.0.0.1/24")
    );
    // The kubelet owns Nodes.
    match ds.create("Node", "tor-router", json!({})) {
        Err(DatastoreError::Kubernetes(KubeError::NodeNotInCluster { name })) => {
            assert_eq!(name, "tor-router")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        ds.create("Node", "worker-1", json!({})),
        Err(DatastoreError::AlreadyExists { .. })
    ));
    let e = ds.delete("Node", "worker-1", None).unwrap_err();
    assert!(e.to_string().contains("kubectl delete node"), "{e}");
    // Deleting the Kubernetes Node deletes the record, and a watch sees it.
    cluster.standin.delete(CORE_NODES, "worker-1").unwrap();
    let event = next_event(&mut watch);
    assert_eq!(
        (event.event_type, event.record.name.as_str()),
        (EventType::Deleted, "worker-1")
    );
    assert!(matches!(
        ds.get("Node", "worker-1"),
        Err(DatastoreError::NotFound { .. })
    ));
}

/// Calico's custom resources on the wire: a BGPPeer with its metadata annotation, IPAM
/// objects with Calico's bookkeeping; objects Calico wrote are read, and one it marked
/// deleted reads as absent, is reported deleted by a watch, and can be created again.
#[test]
fn calico_objects_are_read_and_written_in_calicos_shapes() {
    let cluster = Cluster::start(100, ExpiredAs::ErrorEvent);
    let ds = cluster.client();
    let peers = "/apis/crd.projectcalico.org/v1/bgppeers";
    let peer = parse_manifests(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: rack1-tor\n  \
         labels:\n    rack: r1\nspec:\n  peerIP: 192.20.30.40\n  asNumber: 64567\n",
    )
    .unwrap()
    .remove(0);
    ds.create("BGPPeer", "rack1-tor", peer.to_value()).unwrap();
    let object = cluster.standin.object(peers, "rack1-tor").unwrap();
    assert_eq!(object["apiVersion"], json!("crd.projectcalico.org/v1"));
    assert_eq!(
        object["spec"],
        json!({"peerIP": "192.20.30.40", "asNumber": 64567})
    );
    assert_eq!(
        object["metadata"]["annotations"]["projectcalico.org/metadata"],
        json!("{\"creationTimestamp\":null,\"labels\":{\"rack\":\"r1\"}}")
    );
    // Written by Calico (or `kubectl apply` to the v1 group).
    let blocks = "/apis/crd.projectcalico.org/v1/ipamblocks";
    cluster
        .standin
        .create(
            blocks,
            json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMBlock",
                   "metadata": {"name": "10-65-0-0-26"},
                   "spec": {"cidr": "10.65.0.0/26", "affinity": "host:node-1",
                            "allocations": [0, null], "unallocated": [1],
                            "attributes": [{"handle_id": "k8s-pod-network.abc",
                                            "secondary": {"pod": "p"}}],
                            "strictAffinity": false, "deleted": false,
                            "sequenceNumber": 3, "sequenceNumberForAllocation": {"0": 2}}}),
        )
        .unwrap();
    let block = ds.get("IPAMBlock", "10-65-0-0-26").unwrap();
    assert_eq!(block.value["affinity"], json!("host:node-1"));
    assert!(block.value.get("sequenceNumber").is_none());
    // Marked deleted (step one of Calico's deletion): gone for readers and watchers.
    let mut watch = ds.watch(Some("IPAMBlock"), WatchFrom::Now).unwrap();
    let mut marked = cluster.standin.object(blocks, "10-65-0-0-26").unwrap();
    marked["spec"]["deleted"] = json!(true);
    cluster.standin.replace(blocks, marked).unwrap();
    assert_eq!(next_event(&mut watch).event_type, EventType::Deleted);
    assert!(matches!(
        ds.get("IPAMBlock", "10-65-0-0-26"),
        Err(DatastoreError::NotFound { .. })
    ));
    assert!(ds.list("IPAMBlock").unwrap().records.is_empty());
    // Creating it again finishes Calico's deletion first.
    let fresh = json!({"cidr": "10.65.0.0/26", "affinity": "host:node-2",
                       "allocations": [null, null], "unallocated": [0, 1], "attributes": []});
    ds.create("IPAMBlock", "10-65-0-0-26", fresh.clone())
        .unwrap();
    assert_eq!(ds.get("IPAMBlock", "10-65-0-0-26").unwrap().value, fresh);
    let stored = cluster.standin.object(blocks, "10-65-0-0-26").unwrap();
    assert_eq!(stored["spec"]["deleted"], json!(false));
    assert_eq!(stored["spec"]["strictAffinity"], json!(false));
}

#[test]
fn secret_values_are_read_from_the_given_namespace() {
    let cluster = Cluster::start(100, ExpiredAs::ErrorEvent);
    let secrets = "/api/v1/namespaces/kube-system/secrets";
    cluster
        .standin
        .create(
            secrets,
            json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "bgp-secrets", "namespace": "kube-system"},
                // base64 of "s3cret" and of the bytes ff fe
                "data": {"rr-password": "czNjcmV0", "binary": "//4="},
            }),
        )
        .unwrap();
    let ds = cluster.client();
    assert_eq!(
        ds.secret_value("kube-system", "bgp-secrets", "rr-password")
            .unwrap(),
        "s3cret"
    );
    let kube_error = |r: Result<String, DatastoreError>| match r {
        Err(DatastoreError::Kubernetes(e)) => e,
        other => panic!("expected a Kubernetes error, got {other:?}"),
    };
    assert!(matches!(
        kube_error(ds.secret_value("kube-system", "bgp-secrets", "other")),
        KubeError::SecretKeyMissing { .. }
    ));
    assert!(matches!(
        kube_error(ds.secret_value("kube-system", "bgp-secrets", "binary")),
        KubeError::SecretNotText { .. }
    ));
    assert!(matches!(
        kube_error(ds.secret_value("calico-system", "bgp-secrets", "rr-password")),
        KubeError::SecretNotFound { .. }
    ));
}

/// Records round-trip exactly: a Calico resource as routerd stores it, and odd JSON.
#[test]
fn values_round_trip_exactly() {
    let cluster = Cluster::start(100, ExpiredAs::ErrorEvent);
    let ds = cluster.client();
    let peer = parse_manifests(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: rack1.tor\n  \
         labels:\n    rack: r1\nspec:\n  peerIP: 192.20.30.40\n  asNumber: 64567\n  \
         nodeSelector: rack == 'r1'\n",
    )
    .unwrap()
    .remove(0);
    ds.create("BGPPeer", "rack1.tor", peer.to_value()).unwrap();
    let stored = ds.get("BGPPeer", "rack1.tor").unwrap();
    assert_eq!(Resource::from_value(stored.value, 0).unwrap(), peer);
    for (i, value) in [
        json!(null),
        json!(-7),
        json!(1.5),
        json!("text ü"),
        json!([1, "two", {"three": [null, false]}]),
        json!({"nested": {"empty": {}, "list": [], "u64": 18446744073709551615u64}}),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("v{i}");
        ds.create("WorkloadEndpoint", &name, value.clone()).unwrap();
        assert_eq!(ds.get("WorkloadEndpoint", &name).unwrap().value, value);
    }
    // Names the API server would refuse are refused before any request.
    assert!(matches!(
        ds.create("WorkloadEndpoint", "Upper_Case", json!(1)),
        Err(DatastoreError::InvalidName { .. })
    ));
}

/// The synchronous store works from `spawn_blocking` inside another runtime, its watch
/// from async code, and dropping it inside that runtime is fine.
#[test]
fn usable_from_spawn_blocking_and_async_code_of_another_runtime() {
    let cluster = Cluster::start(100, ExpiredAs::ErrorEvent);
    let ds = std::sync::Arc::new(cluster.client());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let d = ds.clone();
        let mut watch = tokio::task::spawn_blocking(move || d.watch(None, WatchFrom::Now))
            .await
            .unwrap()
            .unwrap();
        let d = ds.clone();
        let (a, b) = tokio::task::spawn_blocking(move || {
            let a = d
                .create("WorkloadEndpoint", "default", json!({"asn": 1}))
                .unwrap();
            let filter = json!({"apiVersion": "projectcalico.org/v3", "kind": "BGPFilter",
                                "metadata": {"name": "f"}, "spec": {}});
            let b = d.create("BGPFilter", "f", filter).unwrap();
            (a, b)
        })
        .await
        .unwrap();
        for expected in [a, b] {
            let event = tokio::time::timeout(WAIT, watch.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(event.revision(), expected);
        }
        drop(ds);
    });
}

/// The TLS stack is usable (a crypto provider is compiled in): a client for an `https`
/// server is built, and an unreachable server is a transport error, not a panic.
#[test]
fn https_client_is_built_and_unreachable_server_is_an_error() {
    let config = kube::Config::new("https://127.0.0.1:9".parse().unwrap());
    let ds = KubeDatastore::connect(
        KubeConfigSource::Config(Box::new(config)),
        KubeOptions::default(),
    )
    .unwrap();
    match ds.list("BGPPeer") {
        Err(DatastoreError::Kubernetes(KubeError::Transport { verb, resource, .. })) => {
            assert_eq!(
                (verb, resource.as_str()),
                ("list", "bgppeers.crd.projectcalico.org")
            )
        }
        other => panic!("expected a transport error, got {other:?}"),
    }
}

/// The newest set the Services watch published that satisfies `done`, within [`WAIT`].
fn wait_services(
    rx: &mut datastore::ServicesReceiver,
    rt: &tokio::runtime::Runtime,
    what: &str,
    done: impl Fn(&datastore::services::ClusterServices) -> bool,
) -> std::sync::Arc<datastore::services::ClusterServices> {
    rt.block_on(async {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(set) = rx.borrow_and_update().clone() {
                    if done(&set) {
                        return set;
                    }
                }
                rx.changed().await.unwrap();
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}: {:?}", rx.borrow()))
    })
}

fn endpoint_slice(
    ns: &str,
    name: &str,
    service: &str,
    node: &str,
    ready: bool,
) -> serde_json::Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.1.5"], "nodeName": node,
                       "conditions": {"ready": ready}}],
    })
}

/// Services and EndpointSlices of every namespace reach the consumer as one set; a change
/// of readiness and a deletion follow; after the server expires the watch (410) the set is
/// relisted and changes keep coming.
#[test]
fn services_and_endpoint_slices_of_all_namespaces_are_followed() {
    let cluster = Cluster::start(100, ExpiredAs::ErrorEvent);
    let store = cluster.client();
    let api = &cluster.standin;
    let service = |ns: &str, name: &str| {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10",
                     "externalTrafficPolicy": "Local", "ipFamilies": ["IPv4"]},
            "status": {"loadBalancer": {"ingress": [{"ip": "10.50.0.10"}]}},
        })
    };
    api.create("/api/v1/namespaces/shop/services", service("shop", "web"))
        .unwrap();
    api.create(
        "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices",
        endpoint_slice("shop", "web-1", "web", "node-1", true),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rx = store.watch_services();
    let set = wait_services(&mut rx, &rt, "the first list", |s| {
        s.services.len() == 1 && s.slices.len() == 1
    });
    let web = &set.services[&("shop".to_string(), "web".to_string())];
    assert_eq!(
        web.ingress_ips,
        ["10.50.0.10".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(set.slices_of(web).count(), 1);

    // A Service in another namespace, and the endpoint going not ready.
    api.create("/api/v1/namespaces/blog/services", service("blog", "web"))
        .unwrap();
    let mut slice = api
        .object(
            "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices",
            "web-1",
        )
        .unwrap();
    slice["endpoints"][0]["conditions"]["ready"] = json!(false);
    api.replace(
        "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices",
        slice,
    )
    .unwrap();
    wait_services(&mut rx, &rt, "the second Service and the readiness", |s| {
        s.services.len() == 2 && s.slices.values().next().unwrap().endpoints[0].ready == Some(false)
    });

    // 410 on the live watches: relisted, and what changed meanwhile is seen.
    api.expire_watches();
    api.delete("/api/v1/namespaces/shop/services", "web")
        .unwrap();
    let set = wait_services(&mut rx, &rt, "the deletion after the relist", |s| {
        s.services.len() == 1
    });
    assert!(set
        .services
        .contains_key(&("blog".to_string(), "web".to_string())));
}

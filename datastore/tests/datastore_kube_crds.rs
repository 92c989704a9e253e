//! `examples/crds/routerd.io.yaml` is exactly what the code generates, so the manifests an
//! operator applies cannot drift from the resources the Kubernetes datastore uses.
//! `UPDATE_CRDS=1 cargo test -p datastore --test datastore_kube_crds` rewrites the file.
#![cfg(feature = "kubernetes")]
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

use std::path::PathBuf;

use datastore::{crd_yaml, crds, KubeConfigSource, KubeDatastore, KubeOptions};
use lab::kube_standin::{ApiServerStandin, StandinOptions};

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/crds/routerd.io.yaml")
}

#[test]
fn committed_crd_manifests_are_current() {
    let generated = crd_yaml().unwrap();
    let path = committed_path();
    if std::env::var_os("UPDATE_CRDS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale: run UPDATE_CRDS=1 cargo test -p datastore --test datastore_kube_crds",
        path.display()
    );
    // Every document parses back as the CRD it came from.
    let documents: Vec<serde_norway::Value> = serde_norway::Deserializer::from_str(&committed)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert_eq!(documents.len(), crds().len());
    for (document, crd) in documents.iter().zip(crds()) {
        assert_eq!(
            document["metadata"]["name"].as_str(),
            crd.metadata.name.as_deref()
        );
        assert_eq!(document["spec"]["scope"].as_str(), Some("Cluster"));
    }
}

/// The generated CRDs are accepted by the stand-in and make their resources served.
#[test]
fn installed_crds_serve_every_kind() {
    let standin = ApiServerStandin::start(StandinOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    standin.write_kubeconfig(&kubeconfig).unwrap();
    let ds = KubeDatastore::connect(
        KubeConfigSource::Kubeconfig(kubeconfig),
        KubeOptions::default(),
    )
    .unwrap();
    ds.install_crds().unwrap();
    // Installing again replaces them (idempotent set-up).
    ds.install_crds().unwrap();
    use datastore::Datastore;
    for kind in datastore::WATCHED_KINDS {
        ds.create(kind, "x", serde_json::json!({"kind": kind}))
            .unwrap();
        assert_eq!(ds.list(kind).unwrap().records.len(), 1, "{kind}");
    }
}

/// The example RBAC grants every verb the datastore uses on every resource it uses.
#[test]
fn example_rbac_covers_every_resource() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/crds/routerd-rbac.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let role: serde_norway::Value = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .next()
        .unwrap();
    let rule = &role["rules"][0];
    assert_eq!(rule["apiGroups"][0].as_str(), Some(datastore::CRD_GROUP));
    let listed = |key: &str| -> Vec<String> {
        rule[key]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let resources = listed("resources");
    for kind in datastore::WATCHED_KINDS {
        let plural = datastore::kind_resource(kind).unwrap().plural;
        assert!(resources.contains(&plural), "{plural} missing");
    }
    let verbs = listed("verbs");
    for verb in ["get", "list", "watch", "create", "update", "delete"] {
        assert!(verbs.contains(&verb.to_string()), "{verb} missing");
    }
}

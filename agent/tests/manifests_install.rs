//! The DaemonSet of examples/kubernetes/routerd.yaml, checked by running what it says: its
//! install init container's command, arguments and environment (with `spec.nodeName` filled
//! in as the kubelet would) run the built `routerd-cni install`, with the container's
//! hostPath mounts remapped into a temporary root; the host directories must then hold both
//! plugin binaries (executable, the same bytes as built) and a conflist that parses, names
//! our plugins, the node and the datastore, and nothing else.
//!
//! Also: the manifest's CRDs are examples/crds/routerd.io.yaml's, and its RBAC rules
//! examples/crds/routerd-rbac.yaml's, so the one file operators apply cannot go stale.
//! No root, no cluster: files only.
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{plugin_dir, repo_root, routerd_daemonset, yaml_documents};

const NODE: &str = "node-test-1";

/// The pod spec's hostPath volumes by name.
fn host_paths(pod: &Value) -> BTreeMap<String, String> {
    pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| {
            Some((
                v["name"].as_str()?.to_string(),
                v["hostPath"]["path"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Rewrites a path inside the container to where it lands in `root` (the host's file system
/// in miniature): a path under a hostPath mount becomes `<root>/<host path>/<rest>`.
fn remap(value: &str, mounts: &[(String, String)], root: &Path) -> String {
    for (mount_path, host_path) in mounts {
        if let Some(rest) = value.strip_prefix(mount_path.as_str()) {
            if rest.is_empty() || rest.starts_with('/') {
                let host = root.join(host_path.trim_start_matches('/'));
                return format!("{}{rest}", host.display());
            }
        }
    }
    value.to_string()
}

#[test]
fn the_install_init_container_installs_the_plugins_and_the_conflist() {
    let ds = routerd_daemonset();
    let pod = &ds["spec"]["template"]["spec"];
    let init: Vec<&Value> = pod["initContainers"].as_array().unwrap().iter().collect();
    let install = init
        .iter()
        .find(|c| c["name"] == "install-cni")
        .expect("an init container named install-cni");
    let volumes = host_paths(pod);
    let mounts: Vec<(String, String)> = install["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let name = m["name"].as_str().unwrap();
            let host = volumes
                .get(name)
                .unwrap_or_else(|| panic!("mount {name} is not a hostPath volume"));
            (m["mountPath"].as_str().unwrap().to_string(), host.clone())
        })
        .collect();
    // The runtime's directories on the host.
    let mut hosts: Vec<&str> = mounts.iter().map(|(_, h)| h.as_str()).collect();
    hosts.sort();
    assert_eq!(hosts, ["/etc/cni/net.d", "/opt/cni/bin"], "{mounts:?}");

    let root = tempfile::tempdir().unwrap();
    let words: Vec<String> = install["command"]
        .as_array()
        .unwrap()
        .iter()
        .chain(install["args"].as_array().into_iter().flatten())
        .map(|w| remap(w.as_str().unwrap(), &mounts, root.path()))
        .collect();
    assert_eq!(words[0], "routerd-cni", "{words:?}");
    assert_eq!(
        words.get(1).map(String::as_str),
        Some("install"),
        "{words:?}"
    );

    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for e in install["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = if let Some(v) = e["value"].as_str() {
            remap(v, &mounts, root.path())
        } else {
            // The kubelet fills in the downward API; only spec.nodeName is expected here.
            let field = e["valueFrom"]["fieldRef"]["fieldPath"].as_str();
            assert_eq!(field, Some("spec.nodeName"), "{name}: {e}");
            NODE.to_string()
        };
        env.insert(name, value);
    }
    assert_eq!(
        env.get("NODENAME").map(String::as_str),
        Some(NODE),
        "{env:?}"
    );
    // What the kubelet gives every container of a pod: the API server's address and the
    // service account's token and CA (mounted at /var/run/secrets/...; here in the root).
    let sa = root.path().join("serviceaccount");
    std::fs::create_dir_all(&sa).unwrap();
    std::fs::write(sa.join("token"), "eyJ-test-token\n").unwrap();
    std::fs::write(sa.join("ca.crt"), "-----BEGIN CERTIFICATE-----\ntest\n").unwrap();
    env.insert("KUBERNETES_SERVICE_HOST".into(), "10.96.0.1".into());
    env.insert("KUBERNETES_SERVICE_PORT".into(), "443".into());
    env.insert("SERVICE_ACCOUNT_DIR".into(), sa.display().to_string());

    // The image's binary: the one this workspace built (routerd-cni copies itself and
    // routerd-ipam from its own directory, as from /usr/local/bin in the image).
    let bins = plugin_dir();
    let out = Command::new(bins.join(&words[0]))
        .args(&words[1..])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(&env)
        .output()
        .unwrap();
    assert!(out.status.success(), "{words:?} with {env:?}: {out:?}");

    let bin_dir: PathBuf = root.path().join("opt/cni/bin");
    let conf_dir: PathBuf = root.path().join("etc/cni/net.d");
    let listing = |d: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(listing(&bin_dir), ["routerd-cni", "routerd-ipam"]);
    assert_eq!(
        listing(&conf_dir),
        ["10-routerd.conflist", "routerd-kubeconfig"]
    );
    // The plugins' kubeconfig, where the conflist's datastore names it on the host, from the
    // service account: the API server, its CA, the token; readable by root only.
    let kubeconfig = conf_dir.join("routerd-kubeconfig");
    assert_eq!(
        std::fs::metadata(&kubeconfig).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let kc: Value = serde_json::from_str(&std::fs::read_to_string(&kubeconfig).unwrap()).unwrap();
    assert_eq!(
        kc["clusters"][0]["cluster"]["server"],
        "https://10.96.0.1:443"
    );
    assert_eq!(kc["users"][0]["user"]["token"], "eyJ-test-token");
    assert_eq!(
        kc["clusters"][0]["cluster"]["certificate-authority-data"],
        "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCnRlc3QK"
    );
    assert_eq!(kc["current-context"], "routerd-cni");
    for b in ["routerd-cni", "routerd-ipam"] {
        let installed = bin_dir.join(b);
        let mode = std::fs::metadata(&installed).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "{} mode {mode:o}", installed.display());
        assert!(
            std::fs::read(&installed).unwrap() == std::fs::read(bins.join(b)).unwrap(),
            "{} differs from the built binary",
            installed.display()
        );
    }

    let text = std::fs::read_to_string(conf_dir.join("10-routerd.conflist")).unwrap();
    let conf: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(conf["name"], "routerd", "{conf}");
    assert!(conf["cniVersion"].as_str().is_some(), "{conf}");
    let plugins = conf["plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 1, "{conf}");
    let p = &plugins[0];
    assert_eq!(p["type"], "routerd-cni", "{conf}");
    assert_eq!(p["ipam"]["type"], "routerd-ipam", "{conf}");
    assert_eq!(p["nodename"], NODE, "{conf}");
    assert_eq!(
        p["datastore"].as_str(),
        env.get("ROUTERD_DATASTORE").map(String::as_str)
    );
    assert_eq!(
        p["mtu"].as_u64().map(|m| m.to_string()),
        env.get("CNI_MTU").cloned()
    );
    // Every plugin the runtime will look up by `type` is in the bin directory.
    for t in [&p["type"], &p["ipam"]["type"]] {
        assert!(bin_dir.join(t.as_str().unwrap()).is_file(), "{t}");
    }
}

#[test]
fn the_daemonset_runs_routerd_as_the_issue_asks() {
    let ds = routerd_daemonset();
    let spec = &ds["spec"];
    let pod = &spec["template"]["spec"];
    assert_eq!(spec["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(spec["updateStrategy"]["rollingUpdate"]["maxUnavailable"], 1);
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(
        pod["tolerations"],
        serde_json::json!([{"operator": "Exists"}])
    );
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() > 0);
    let routerd = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "routerd")
        .unwrap();
    assert_ne!(routerd["securityContext"]["privileged"], true);
    let env: BTreeMap<&str, &Value> = routerd["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    assert_eq!(
        env["ROUTERD_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(env["DATASTORE_TYPE"]["value"], "kubernetes");
    // Exec probes ask the health server on loopback, where it stays (its default).
    assert!(!env.contains_key("ROUTERD_HEALTH_LISTEN"));
    for (probe, flag) in [("livenessProbe", "--live"), ("readinessProbe", "--ready")] {
        assert_eq!(
            routerd[probe]["exec"]["command"],
            serde_json::json!(["routerd", "health", flag]),
            "{probe}"
        );
    }
    // Metrics are scraped on felix's port.
    assert!(routerd["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["containerPort"] == 9091));
    assert!(routerd["resources"]["requests"]["cpu"].is_string());
    assert!(routerd["resources"]["requests"]["memory"].is_string());
}

#[test]
fn the_manifest_carries_the_current_crds_and_rbac_rules() {
    let all = yaml_documents(&repo_root().join("examples/kubernetes/routerd.yaml"));
    let of_kind = |docs: &[Value], kind: &str| -> Vec<Value> {
        docs.iter().filter(|d| d["kind"] == kind).cloned().collect()
    };
    let crds = yaml_documents(&repo_root().join("examples/crds/routerd.io.yaml"));
    assert!(!crds.is_empty());
    assert_eq!(
        of_kind(&all, "CustomResourceDefinition"),
        crds,
        "examples/kubernetes/routerd.yaml's CRDs differ from examples/crds/routerd.io.yaml: \
         copy that file's content into it"
    );
    let rbac = yaml_documents(&repo_root().join("examples/crds/routerd-rbac.yaml"));
    for kind in ["ClusterRole", "Role"] {
        let rules = |docs: &[Value]| -> Vec<Value> {
            of_kind(docs, kind)
                .iter()
                .map(|d| d["rules"].clone())
                .collect()
        };
        assert_eq!(
            rules(&all),
            rules(&rbac),
            "the {kind} rules of examples/kubernetes/routerd.yaml and \
             examples/crds/routerd-rbac.yaml differ"
        );
    }
}

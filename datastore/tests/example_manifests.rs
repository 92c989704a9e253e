//! The manifests under `examples/manifests/` are what operators copy: each one loads and
//! validates, and says what its comments say.
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

use std::path::PathBuf;

use datastore::resource::{parse_manifests, Resource};

fn examples() -> Vec<(String, Vec<Resource>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/manifests");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let resources = parse_manifests(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!resources.is_empty(), "{name} holds no resource");
        for r in &resources {
            r.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        out.push((name, resources));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn every_example_manifest_loads_and_validates() {
    let all = examples();
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "bgpconfiguration.yaml",
            "bgpfilter.yaml",
            "bgppeer-tor.yaml",
            "ippool.yaml",
            "route-reflectors.yaml"
        ]
    );
}

#[test]
fn the_examples_mean_what_their_comments_say() {
    let all: Vec<Resource> = examples().into_iter().flat_map(|(_, r)| r).collect();
    let tor = all
        .iter()
        .find_map(|r| match r {
            Resource::BgpPeer(p) if p.metadata.name == "rack-tor" => Some(p),
            _ => None,
        })
        .unwrap();
    // A global peer: neither node nor nodeSelector.
    assert!(tor.spec.node.is_none() && tor.spec.node_selector.is_none());
    assert_eq!(tor.spec.as_number().unwrap(), Some(65000));
    // The BGPFilter and the prefixAdvertisements are checked where they become the
    // speaker's filters and communities: agent/tests/policy.rs.
}

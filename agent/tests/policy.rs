//! BGPFilter rules and prefixAdvertisements as the speaker applies them: the checked
//! resources (datastore crate) converted into route filters and export communities.
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

use agent::policy::{export_filter, import_filter, prefix_communities};
use bgp::packet::{Community, LargeCommunity};
use bgp::rib::FilterAction;
use datastore::resource::{parse_manifests, Resource};
use ipnet::IpNet;

fn one(text: &str) -> Resource {
    let mut all = parse_manifests(text).unwrap();
    assert_eq!(all.len(), 1);
    all.remove(0)
}

fn example(name: &str) -> Vec<Resource> {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/manifests")
        .join(name);
    parse_manifests(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn bgp_filter_converts_to_rib_filters() {
    let Resource::BgpFilter(f) = one(include_str!(
        "../../datastore/tests/fixtures/bgp_filter.yaml"
    )) else {
        panic!("not a BGPFilter")
    };
    let net = |s: &str| s.parse::<IpNet>().unwrap();
    let export = export_filter(&f.spec).unwrap();
    assert_eq!(export.v4.len(), 2);
    // In 77.0.0.0/16 → Accept; anything else learned from peers → Reject; own routes pass.
    assert_eq!(
        export.evaluate(&net("77.0.1.0/24"), true),
        FilterAction::Accept
    );
    assert_eq!(
        export.evaluate(&net("10.0.0.0/24"), true),
        FilterAction::Reject
    );
    assert_eq!(
        export.evaluate(&net("10.0.0.0/24"), false),
        FilterAction::Accept
    );
    assert_eq!(
        export.evaluate(&net("9000::/64"), true),
        FilterAction::Accept
    );
    assert_eq!(
        export.evaluate(&net("9001::/64"), true),
        FilterAction::Reject
    );
    let import = import_filter(&f.spec).unwrap();
    // NotIn 44.0.0.0/16 with length 17..=24 → Reject.
    assert_eq!(
        import.evaluate(&net("10.0.0.0/24"), true),
        FilterAction::Reject
    );
    assert_eq!(
        import.evaluate(&net("10.0.0.0/16"), true),
        FilterAction::Accept
    );
    assert_eq!(
        import.evaluate(&net("44.0.1.0/24"), true),
        FilterAction::Accept
    );
    assert_eq!(
        import.evaluate(&net("5000::/64"), true),
        FilterAction::Accept
    );
    assert_eq!(import.v6.len(), 1);
}

#[test]
fn the_example_filter_and_communities_do_what_their_comments_say() {
    let all: Vec<Resource> = ["bgpfilter.yaml", "bgpconfiguration.yaml"]
        .iter()
        .flat_map(|n| example(n))
        .collect();
    let filter = all
        .iter()
        .find_map(|r| match r {
            Resource::BgpFilter(f) if f.metadata.name == "only-pod-blocks" => Some(f),
            _ => None,
        })
        .unwrap();
    let export = export_filter(&filter.spec).unwrap();
    let import = import_filter(&filter.spec).unwrap();
    assert_eq!(
        export.evaluate(&"10.244.3.0/26".parse().unwrap(), false),
        FilterAction::Accept
    );
    assert_eq!(
        export.evaluate(&"192.0.2.0/24".parse().unwrap(), true),
        FilterAction::Reject
    );
    assert_eq!(
        import.evaluate(&"0.0.0.0/0".parse().unwrap(), true),
        FilterAction::Accept
    );
    assert_eq!(
        import.evaluate(&"10.0.0.0/8".parse().unwrap(), true),
        FilterAction::Reject
    );
    let config = all
        .iter()
        .find_map(|r| match r {
            Resource::BgpConfiguration(c) if c.spec.prefix_advertisements.len() == 1 => Some(c),
            _ => None,
        })
        .unwrap();
    let tags = prefix_communities(&config.spec).unwrap();
    assert_eq!(tags[0].communities.len(), 1);
    assert_eq!(tags[0].large_communities.len(), 1);
}

#[test]
fn communities_become_the_speakers() {
    let Resource::BgpConfiguration(c) = one(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\n\
         spec:\n  communities: [{name: big, value: '63400:300:100'}]\n  \
         prefixAdvertisements: [{cidr: 172.218.4.0/26, communities: [big, '63400:120']}]\n",
    ) else {
        panic!("not a BGPConfiguration")
    };
    let tags = prefix_communities(&c.spec).unwrap();
    assert_eq!(tags[0].prefix, "172.218.4.0/26".parse::<IpNet>().unwrap());
    assert_eq!(tags[0].communities, vec![Community::new(63400, 120)]);
    assert_eq!(
        tags[0].large_communities,
        vec![LargeCommunity {
            global: 63400,
            local1: 300,
            local2: 100
        }]
    );
}

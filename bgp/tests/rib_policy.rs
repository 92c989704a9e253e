//! Calico BGPFilter semantics for import and export, and export community settings.
#![allow(clippy::unwrap_used)]

mod rib_common;

use bgp::packet::{Community, LargeCommunity};
use bgp::rib::{
    ExportPolicy, FilterAction, FilterRule, MatchOperator, PrefixCommunities, RouteFilter,
    RouteSourceMatch,
};
use rib_common::*;

fn v4_filter(rules: Vec<FilterRule>) -> RouteFilter {
    RouteFilter {
        v4: rules,
        v6: Vec::new(),
    }
}

fn accepts(rules: Vec<FilterRule>, prefix: &str) -> bool {
    v4_filter(rules).accepts(&net(prefix), true)
}

#[test]
fn each_match_operator() {
    use FilterAction::Reject;
    let cidr = net("10.0.0.0/16");
    let rule = |op| vec![FilterRule::new(cidr, op, Reject)];
    // Equal: only the exact prefix.
    assert!(!accepts(rule(MatchOperator::Equal), "10.0.0.0/16"));
    assert!(accepts(rule(MatchOperator::Equal), "10.0.1.0/24"));
    // NotEqual: everything else.
    assert!(accepts(rule(MatchOperator::NotEqual), "10.0.0.0/16"));
    assert!(!accepts(rule(MatchOperator::NotEqual), "10.0.1.0/24"));
    // In: the cidr and anything more specific inside it.
    assert!(!accepts(rule(MatchOperator::In), "10.0.0.0/16"));
    assert!(!accepts(rule(MatchOperator::In), "10.0.1.0/24"));
    assert!(accepts(rule(MatchOperator::In), "10.1.0.0/24"));
    assert!(
        accepts(rule(MatchOperator::In), "10.0.0.0/8"),
        "less specific is not In"
    );
    // NotIn: the complement.
    assert!(accepts(rule(MatchOperator::NotIn), "10.0.1.0/24"));
    assert!(!accepts(rule(MatchOperator::NotIn), "10.1.0.0/24"));
}

#[test]
fn prefix_length_range() {
    let rules = vec![
        FilterRule::new(net("10.0.0.0/16"), MatchOperator::In, FilterAction::Accept)
            .with_prefix_length(Some(24), Some(26)),
        FilterRule::any(FilterAction::Reject),
    ];
    assert!(!accepts(rules.clone(), "10.0.0.0/23"));
    assert!(accepts(rules.clone(), "10.0.0.0/24"));
    assert!(accepts(rules.clone(), "10.0.0.64/26"));
    assert!(!accepts(rules.clone(), "10.0.0.64/27"));
    assert!(
        !accepts(rules, "10.1.0.0/24"),
        "length fits but not In the cidr"
    );
}

#[test]
fn first_match_wins_and_no_match_accepts() {
    let rules = vec![
        FilterRule::new(
            net("10.0.1.0/24"),
            MatchOperator::Equal,
            FilterAction::Accept,
        ),
        FilterRule::new(net("10.0.0.0/16"), MatchOperator::In, FilterAction::Reject),
    ];
    assert!(accepts(rules.clone(), "10.0.1.0/24"));
    assert!(!accepts(rules.clone(), "10.0.2.0/24"));
    assert!(accepts(rules, "172.16.0.0/24"), "no rule matches: accept");
    // Rules are per family: a v4 rule does not touch v6 prefixes.
    let f = v4_filter(vec![FilterRule::any(FilterAction::Reject)]);
    assert!(f.accepts(&net("fd00::/64"), true));
    assert!(!f.accepts(&net("10.0.0.0/8"), true));
}

#[test]
fn source_remote_peers_matches_learned_routes_only() {
    let f = v4_filter(vec![
        FilterRule::any(FilterAction::Reject).with_source(RouteSourceMatch::RemotePeers)
    ]);
    assert!(!f.accepts(&net("10.0.0.0/24"), true));
    assert!(f.accepts(&net("10.0.0.0/24"), false));
}

#[test]
fn import_filter_rejects_before_the_decision_process() {
    let mut rib = rib();
    let a = add(&mut rib, "10.1.0.2", 65001, |c| {
        c.import.filter = v4_filter(vec![FilterRule::new(
            net("10.50.0.0/16"),
            MatchOperator::NotIn,
            FilterAction::Reject,
        )]);
    });
    up(&mut rib, a, "10.1.0.2");
    rib.update(
        a,
        &announce(
            attrs(&[65001], "10.1.0.2"),
            &["10.50.1.0/24", "10.60.0.0/24"],
        ),
    )
    .unwrap();
    assert!(rib.best(&net("10.50.1.0/24")).is_some());
    assert!(rib.best(&net("10.60.0.0/24")).is_none());
    let s = rib.stats(a).unwrap();
    assert_eq!((s.received, s.accepted), (2, 1));
    // Withdrawing the filtered prefix lowers `received`.
    rib.update(a, &withdraw(&["10.60.0.0/24"])).unwrap();
    assert_eq!(rib.stats(a).unwrap().received, 1);
}

#[test]
fn export_filter_and_communities() {
    let mut rib = rib();
    let src = peer(&mut rib, "10.1.0.2", 65001);
    let dst = add(&mut rib, "10.1.0.3", 65002, |c| {
        c.export = ExportPolicy {
            filter: v4_filter(vec![FilterRule::new(
                net("10.70.0.0/16"),
                MatchOperator::In,
                FilterAction::Reject,
            )]),
            communities: vec![Community::new(64512, 100)],
            large_communities: vec![LargeCommunity {
                global: 64512,
                local1: 1,
                local2: 2,
            }],
            prefix_communities: vec![PrefixCommunities {
                prefix: net("10.80.0.0/16"),
                communities: vec![Community::new(64512, 200)],
                large_communities: Vec::new(),
            }],
        };
    });
    up(&mut rib, dst, "10.1.0.3");
    let out = rib
        .update(
            src,
            &announce(
                attrs(&[65001], "10.1.0.2"),
                &["10.70.1.0/24", "10.80.1.0/24", "10.90.1.0/24"],
            ),
        )
        .unwrap();
    let got = sent(&out, dst);
    let prefixes: Vec<_> = got.iter().map(|(p, _)| *p).collect();
    assert_eq!(prefixes, vec![net("10.80.1.0/24"), net("10.90.1.0/24")]);
    assert_eq!(
        got[0].1.attrs.communities,
        vec![Community::new(64512, 100), Community::new(64512, 200)]
    );
    assert_eq!(got[1].1.attrs.communities, vec![Community::new(64512, 100)]);
    assert_eq!(got[1].1.attrs.large_communities.len(), 1);
    // Different attribute sets: two UPDATE groups for this peer.
    assert_eq!(out.updates.iter().filter(|u| u.peer == dst).count(), 2);
}

#[test]
fn changing_export_policy_sends_the_difference() {
    let mut rib = rib();
    let src = peer(&mut rib, "10.1.0.2", 65001);
    let dst = peer(&mut rib, "10.1.0.3", 65002);
    rib.update(
        src,
        &announce(
            attrs(&[65001], "10.1.0.2"),
            &["10.70.1.0/24", "10.90.1.0/24"],
        ),
    )
    .unwrap();
    assert_eq!(rib.stats(dst).unwrap().advertised, 2);
    let policy = ExportPolicy {
        filter: v4_filter(vec![FilterRule::new(
            net("10.70.0.0/16"),
            MatchOperator::In,
            FilterAction::Reject,
        )]),
        ..ExportPolicy::default()
    };
    let out = rib.set_export_policy(dst, policy).unwrap();
    assert_eq!(withdrawn(&out, dst), vec![net("10.70.1.0/24")]);
    assert!(out.updates.is_empty(), "unchanged routes are not re-sent");
    assert_eq!(rib.stats(dst).unwrap().advertised, 1);
    let out = rib.set_export_policy(dst, ExportPolicy::default()).unwrap();
    assert_eq!(sent(&out, dst).len(), 1);
    assert_eq!(rib.stats(dst).unwrap().advertised, 2);
}

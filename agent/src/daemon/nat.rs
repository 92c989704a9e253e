//! `natOutgoing`: traffic from a pool's addresses to destinations outside every pool leaves
//! the node masqueraded to the node's address (felix's `cali-nat-outgoing`), and only that
//! traffic.
//!
//! The rules live in a table of our own, `inet routerd-nat`, rebuilt whole in one nft
//! transaction whenever the wanted rules change and once at start (so a restart reconciles
//! whatever an earlier run or a hand left there); nothing outside the table is touched.
//! Felix's shape, in nftables:
//!
//! ```text
//! table inet routerd-nat {
//!   set masq-v4 { type ipv4_addr; flags interval; elements = { <pools with natOutgoing> } }
//!   set pools-v4 { type ipv4_addr; flags interval; elements = { <every pool> } }
//!   chain postrouting { type nat hook postrouting priority srcnat;
//!     ip saddr @masq-v4 ip daddr != @pools-v4 masquerade }
//!   (the same for IPv6)
//! }
//! ```
//!
//! The rule set is built with the `nftables` crate (the JSON schema of libnftables, applied
//! by `nft -j -f -`, one atomic transaction; netavark uses it the same way): the netlink
//! crates cannot express interval sets with a negated lookup. A pool with `natOutgoing:
//! false` is in the pools set only, so its pods keep their source address and NAT pools'
//! traffic to it is not masqueraded, as in Calico. Disabled pools count too (their
//! addresses may still be in use).

use std::collections::HashSet;

use ipnet::IpNet;
use nftables::batch::Batch;
use nftables::expr::{Expression, NamedExpression, Payload, PayloadField, Prefix};
use nftables::schema::{
    Chain, NfListObject, Nftables, Rule, Set, SetFlag, SetType, SetTypeValue, Table,
};
use nftables::stmt::{Match, Operator, Statement};
use nftables::types::{NfChainType, NfFamily, NfHook};

/// Our table.
pub const TABLE: &str = "routerd-nat";
/// The nft binary (Debian's `nftables` package).
pub const NFT: &str = "/usr/sbin/nft";

/// The prefixes the rules are made of, per family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatPlan {
    pub masq_v4: Vec<IpNet>,
    pub pools_v4: Vec<IpNet>,
    pub masq_v6: Vec<IpNet>,
    pub pools_v6: Vec<IpNet>,
}

impl NatPlan {
    /// From the pools: `(cidr, natOutgoing)`. Prefixes are aggregated, since an interval set
    /// refuses overlapping elements.
    pub fn new(pools: &[(IpNet, bool)]) -> NatPlan {
        let pick = |v6: bool, masq_only: bool| -> Vec<IpNet> {
            let nets: Vec<IpNet> = pools
                .iter()
                .filter(|(n, masq)| n.addr().is_ipv6() == v6 && (*masq || !masq_only))
                .map(|(n, _)| n.trunc())
                .collect();
            IpNet::aggregate(&nets)
        };
        NatPlan {
            masq_v4: pick(false, true),
            pools_v4: pick(false, false),
            masq_v6: pick(true, true),
            pools_v6: pick(true, false),
        }
    }

    /// Whether any pool masquerades (otherwise there is nothing to program).
    pub fn is_empty(&self) -> bool {
        self.masq_v4.is_empty() && self.masq_v6.is_empty()
    }
}

fn field(protocol: &'static str, name: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: name.into(),
        },
    )))
}

fn prefix(n: &IpNet) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(Expression::String(n.network().to_string().into())),
        len: u32::from(n.prefix_len()),
    }))
}

fn set(name: &'static str, v6: bool, nets: &[IpNet]) -> NfListObject<'static> {
    NfListObject::Set(Box::new(Set {
        family: NfFamily::INet,
        table: TABLE.into(),
        name: name.into(),
        set_type: SetTypeValue::Single(if v6 {
            SetType::Ipv6Addr
        } else {
            SetType::Ipv4Addr
        }),
        flags: Some(HashSet::from([SetFlag::Interval])),
        elem: (!nets.is_empty()).then(|| nets.iter().map(prefix).collect::<Vec<_>>().into()),
        ..Default::default()
    }))
}

fn table() -> Table<'static> {
    Table {
        family: NfFamily::INet,
        name: TABLE.into(),
        handle: None,
    }
}

/// The whole table for `plan`, replacing whatever is there: add (so the delete cannot fail
/// on a missing table), delete, add again, fill, all in one transaction.
pub fn ruleset(plan: &NatPlan) -> Nftables<'static> {
    let mut b = Batch::new();
    b.add(NfListObject::Table(table()));
    b.delete(NfListObject::Table(table()));
    b.add(NfListObject::Table(table()));
    b.add(set("masq-v4", false, &plan.masq_v4));
    b.add(set("pools-v4", false, &plan.pools_v4));
    b.add(set("masq-v6", true, &plan.masq_v6));
    b.add(set("pools-v6", true, &plan.pools_v6));
    b.add(NfListObject::Chain(Chain {
        family: NfFamily::INet,
        table: TABLE.into(),
        name: "postrouting".into(),
        _type: Some(NfChainType::NAT),
        hook: Some(NfHook::Postrouting),
        // srcnat.
        prio: Some(100),
        ..Default::default()
    }));
    for (proto, masq, pools, any) in [
        ("ip", "@masq-v4", "@pools-v4", !plan.masq_v4.is_empty()),
        ("ip6", "@masq-v6", "@pools-v6", !plan.masq_v6.is_empty()),
    ] {
        if !any {
            continue;
        }
        b.add(NfListObject::Rule(Rule {
            family: NfFamily::INet,
            table: TABLE.into(),
            chain: "postrouting".into(),
            expr: vec![
                Statement::Match(Match {
                    left: field(proto, "saddr"),
                    right: Expression::String(masq.into()),
                    op: Operator::EQ,
                }),
                Statement::Match(Match {
                    left: field(proto, "daddr"),
                    right: Expression::String(pools.into()),
                    op: Operator::NEQ,
                }),
                Statement::Masquerade(None),
            ]
            .into(),
            comment: Some("routerd natOutgoing".into()),
            ..Default::default()
        }));
    }
    b.to_nftables()
}

/// Removes our table (nothing if absent).
pub fn removal() -> Nftables<'static> {
    let mut b = Batch::new();
    b.add(NfListObject::Table(table()));
    b.delete(NfListObject::Table(table()));
    b.to_nftables()
}

/// Programs `plan`: the table when a pool masquerades, no table otherwise. Blocking (runs
/// `nft`).
pub fn apply(plan: &NatPlan) -> Result<(), String> {
    let nft = if plan.is_empty() {
        // Without nft installed there is nothing of ours to remove either.
        if !std::path::Path::new(NFT).exists() {
            return Ok(());
        }
        removal()
    } else {
        ruleset(plan)
    };
    nftables::helper::apply_ruleset_with_args(&nft, Some(NFT), nftables::helper::DEFAULT_ARGS)
        .map_err(|e| format!("{e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn only_nat_pools_masquerade_and_every_pool_is_inside() {
        let plan = NatPlan::new(&[
            (net("10.244.0.0/16"), true),
            (net("10.245.0.0/16"), false),
            (net("fd00::/48"), false),
        ]);
        assert_eq!(plan.masq_v4, vec![net("10.244.0.0/16")]);
        assert_eq!(plan.pools_v4, vec![net("10.244.0.0/15")]);
        assert!(plan.masq_v6.is_empty());
        assert_eq!(plan.pools_v6, vec![net("fd00::/48")]);
        assert!(!plan.is_empty());
        assert!(NatPlan::new(&[(net("10.244.0.0/16"), false)]).is_empty());
    }

    #[test]
    fn the_ruleset_replaces_our_table_and_masquerades_outside_the_pools() {
        let plan = NatPlan::new(&[(net("10.244.0.0/16"), true)]);
        let json = serde_json::to_string(&ruleset(&plan)).unwrap();
        assert!(json.contains("\"delete\":{\"table\""), "{json}");
        assert!(json.contains("\"masquerade\""), "{json}");
        assert!(
            json.contains("\"@pools-v4\"") && json.contains("\"!=\""),
            "{json}"
        );
        // No IPv6 rule without an IPv6 NAT pool.
        assert!(!json.contains("\"@masq-v6\""), "{json}");
    }
}

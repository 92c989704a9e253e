//! What a RIB call asks the outside world to do, and how it is accumulated: announcements
//! grouped by (peer, family, exported attribute set) so that each group packs into as few
//! UPDATEs as fit, withdrawals per (peer, family), End-of-RIB markers, FIB changes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use ipnet::IpNet;

use crate::packet::{
    encode_updates_with_ids, encode_withdrawals_with_ids, DecodeContext, EncodeError, Family,
    MpReach, MpUnreach, NextHop, PathIds, Update,
};

use super::attrs::RouteAttrs;
use super::hash::FoldHashBuilder;
use super::peer::PeerId;

/// Prefixes to announce to one peer with one (export-transformed) attribute set.
#[derive(Debug, Clone, PartialEq)]
pub struct OutUpdate {
    pub peer: PeerId,
    pub family: Family,
    pub attrs: Arc<RouteAttrs>,
    pub prefixes: Vec<IpNet>,
    /// The ADD-PATH path identifier of each prefix, index for index, for a peer we send
    /// them to; empty otherwise.
    pub path_ids: Vec<u32>,
}

impl OutUpdate {
    /// The next hop in the form the codec's batch encoder takes.
    pub fn next_hop(&self) -> NextHop {
        NextHop {
            address: self.attrs.next_hop,
            link_local: self.attrs.link_local_next_hop,
        }
    }

    /// Packs this group into as few UPDATEs as fit ([`crate::packet::encode_updates`]),
    /// appending them to `out`.
    pub fn encode(&self, ctx: &DecodeContext, out: &mut Vec<Bytes>) -> Result<(), EncodeError> {
        encode_updates_with_ids(
            &self.attrs.attrs,
            self.family,
            self.next_hop(),
            &self.prefixes,
            &self.path_ids,
            ctx,
            out,
        )
    }

    /// The UPDATE carrying all of `prefixes` (the driver splits it to fit the message size):
    /// IPv4 unicast with an IPv4 next hop in the classic NLRI field, anything else in
    /// MP_REACH_NLRI (RFC 4760 §3).
    pub fn to_update(&self) -> Update {
        let attributes = self.attrs.attrs.clone();
        match (self.family, self.attrs.next_hop) {
            (Family::Ipv4Unicast, IpAddr::V4(_)) => Update {
                attributes,
                nlri: self
                    .prefixes
                    .iter()
                    .filter_map(|p| match p {
                        IpNet::V4(v4) => Some(*v4),
                        IpNet::V6(_) => None,
                    })
                    .collect(),
                path_ids: PathIds {
                    nlri: self.path_ids.clone(),
                    ..PathIds::default()
                },
                ..Update::default()
            },
            (family, next_hop) => {
                let (afi, safi) = family.afi_safi();
                Update {
                    attributes,
                    mp_reach: Some(MpReach {
                        afi,
                        safi,
                        next_hop,
                        link_local_next_hop: self.attrs.link_local_next_hop,
                        nlri: self.prefixes.clone(),
                    }),
                    path_ids: PathIds {
                        mp_reach: self.path_ids.clone(),
                        ..PathIds::default()
                    },
                    ..Update::default()
                }
            }
        }
    }
}

/// Prefixes to withdraw from one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutWithdraw {
    pub peer: PeerId,
    pub family: Family,
    pub prefixes: Vec<IpNet>,
    /// ADD-PATH path identifiers, as in [`OutUpdate::path_ids`].
    pub path_ids: Vec<u32>,
}

impl OutWithdraw {
    /// Packs these withdrawals into UPDATEs ([`crate::packet::encode_withdrawals`]),
    /// appending them to `out`.
    pub fn encode(&self, ctx: &DecodeContext, out: &mut Vec<Bytes>) {
        encode_withdrawals_with_ids(self.family, &self.prefixes, &self.path_ids, ctx, out);
    }

    pub fn to_update(&self) -> Update {
        match self.family {
            Family::Ipv4Unicast => Update {
                withdrawn: self
                    .prefixes
                    .iter()
                    .filter_map(|p| match p {
                        IpNet::V4(v4) => Some(*v4),
                        IpNet::V6(_) => None,
                    })
                    .collect(),
                path_ids: PathIds {
                    withdrawn: self.path_ids.clone(),
                    ..PathIds::default()
                },
                ..Update::default()
            },
            family => {
                let (afi, safi) = family.afi_safi();
                Update {
                    mp_unreach: Some(MpUnreach {
                        afi,
                        safi,
                        withdrawn: self.prefixes.clone(),
                    }),
                    path_ids: PathIds {
                        mp_unreach: self.path_ids.clone(),
                        ..PathIds::default()
                    },
                    ..Update::default()
                }
            }
        }
    }
}

/// The initial table dump of `family` to `peer` is complete (RFC 4724 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndOfRib {
    pub peer: PeerId,
    pub family: Family,
}

/// One forwarding path of a learned route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FibNextHop {
    pub next_hop: IpAddr,
    pub peer: PeerId,
}

/// What the FIB should do for a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FibRoute {
    /// No path: remove the route.
    Unreachable,
    /// Our own route wins: the FIB has nothing to install from BGP (the owner of the
    /// originated prefix, e.g. IPAM's blackhole for a block, programs it).
    Local,
    /// Forward over these next hops (ECMP when more than one), sorted.
    Via(Vec<FibNextHop>),
}

/// The FIB-relevant outcome for a prefix changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BestPathChange {
    pub prefix: IpNet,
    pub route: FibRoute,
}

/// Everything one RIB call asks the outside world to do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RibOutputs {
    pub withdraws: Vec<OutWithdraw>,
    pub updates: Vec<OutUpdate>,
    pub end_of_rib: Vec<EndOfRib>,
    pub best_changes: Vec<BestPathChange>,
}

impl RibOutputs {
    pub fn is_empty(&self) -> bool {
        self.withdraws.is_empty()
            && self.updates.is_empty()
            && self.end_of_rib.is_empty()
            && self.best_changes.is_empty()
    }

    /// Prefixes announced to `peer` in these outputs, in order.
    pub fn announced_to(&self, peer: PeerId) -> impl Iterator<Item = (&IpNet, &Arc<RouteAttrs>)> {
        self.updates
            .iter()
            .filter(move |u| u.peer == peer)
            .flat_map(|u| u.prefixes.iter().map(move |p| (p, &u.attrs)))
    }

    /// Prefixes withdrawn from `peer` in these outputs.
    pub fn withdrawn_from(&self, peer: PeerId) -> impl Iterator<Item = &IpNet> {
        self.withdraws
            .iter()
            .filter(move |w| w.peer == peer)
            .flat_map(|w| w.prefixes.iter())
    }
}

/// An UPDATE group: destination, family and the exported attribute set's address.
type GroupKey = (PeerId, Family, usize);

/// One announcement or withdrawal as it was produced, for [`OutputBuilder::ordered`].
#[derive(Debug)]
enum Op {
    Announce(PeerId, Family, Arc<RouteAttrs>, IpNet, Option<u32>),
    Withdraw(PeerId, Family, IpNet, Option<u32>),
}

/// Accumulates outputs, grouping announcements by (peer, family, attribute set).
///
/// Grouping loses the order in which things were produced: the driver sends all
/// withdrawals, then the groups in the order they were opened. That is right as long as a
/// call changes each (peer, prefix, path identifier) at most once, which holds for every
/// call but an UPDATE with ADD-PATH identifiers: it can withdraw one path of a prefix and
/// announce another, and the best path for the prefix can move twice. Such a call uses an
/// [`OutputBuilder::ordered`] builder, which logs every operation and keeps only the last
/// one for each (peer, prefix, identifier) when it is grouped at the end.
#[derive(Debug, Default)]
pub(crate) struct OutputBuilder {
    pub(crate) out: RibOutputs,
    updates: HashMap<GroupKey, usize, FoldHashBuilder>,
    withdraws: HashMap<(PeerId, Family), usize, FoldHashBuilder>,
    /// Per destination `PeerId`: the last group appended to (front cache of `updates`).
    last_update: Vec<Option<(GroupKey, usize)>>,
    /// Change of each peer's `advertised` count per family (indexed by `PeerId`, then
    /// IPv4, IPv6), applied at the end of the call because peers are borrowed immutably
    /// while outputs are produced.
    pub(crate) advertised: Vec<[i64; 2]>,
    /// Operations in production order, for an ordered builder; `None` groups at once.
    log: Option<Vec<Op>>,
}

impl OutputBuilder {
    /// A builder whose output keeps, for every (peer, prefix, path identifier), only the
    /// last thing produced (see the type's docs); [`OutputBuilder::finish`] groups it.
    pub(crate) fn ordered() -> OutputBuilder {
        OutputBuilder {
            log: Some(Vec::new()),
            ..OutputBuilder::default()
        }
    }

    /// Groups an ordered builder's log (a no-op for an ordinary builder).
    pub(crate) fn finish(&mut self) {
        let Some(log) = self.log.take() else {
            return;
        };
        let key = |op: &Op| match op {
            Op::Announce(peer, _, _, prefix, id) | Op::Withdraw(peer, _, prefix, id) => {
                (*peer, *prefix, *id)
            }
        };
        let mut last: HashMap<(PeerId, IpNet, Option<u32>), usize, FoldHashBuilder> =
            HashMap::default();
        for (i, op) in log.iter().enumerate() {
            last.insert(key(op), i);
        }
        for (i, op) in log.into_iter().enumerate() {
            if last.get(&key(&op)) != Some(&i) {
                continue;
            }
            match op {
                Op::Announce(peer, family, attrs, prefix, id) => {
                    self.group_announce(peer, family, &attrs, prefix, id)
                }
                Op::Withdraw(peer, family, prefix, id) => {
                    self.group_withdraw(peer, family, prefix, id)
                }
            }
        }
    }

    pub(crate) fn count(&mut self, peer: PeerId, family: Family, delta: i64) {
        let i = peer.index();
        if self.advertised.len() <= i {
            self.advertised.resize(i + 1, [0; 2]);
        }
        self.advertised[i][family as usize] += delta;
    }

    /// Announces `prefix` to `peer`, under `path_id` when it is `Some` (a peer we send
    /// ADD-PATH identifiers to).
    pub(crate) fn announce_path(
        &mut self,
        peer: PeerId,
        family: Family,
        attrs: &Arc<RouteAttrs>,
        prefix: IpNet,
        path_id: Option<u32>,
    ) {
        match &mut self.log {
            Some(log) => log.push(Op::Announce(
                peer,
                family,
                Arc::clone(attrs),
                prefix,
                path_id,
            )),
            None => self.group_announce(peer, family, attrs, prefix, path_id),
        }
    }

    fn group_announce(
        &mut self,
        peer: PeerId,
        family: Family,
        attrs: &Arc<RouteAttrs>,
        prefix: IpNet,
        path_id: Option<u32>,
    ) {
        let key = (peer, family, Arc::as_ptr(attrs) as usize);
        let slot = peer.index();
        if self.last_update.len() <= slot {
            self.last_update.resize(slot + 1, None);
        }
        let index = match self.last_update[slot] {
            Some((k, i)) if k == key => i,
            _ => {
                let next = self.out.updates.len();
                let i = *self.updates.entry(key).or_insert(next);
                if i == next {
                    self.out.updates.push(OutUpdate {
                        peer,
                        family,
                        attrs: Arc::clone(attrs),
                        prefixes: Vec::new(),
                        path_ids: Vec::new(),
                    });
                }
                self.last_update[slot] = Some((key, i));
                i
            }
        };
        if let Some(u) = self.out.updates.get_mut(index) {
            u.prefixes.push(prefix);
            if let Some(id) = path_id {
                u.path_ids.push(id);
            }
        }
    }

    /// Withdraws `prefix` (under `path_id`, as [`OutputBuilder::announce_path`]).
    pub(crate) fn withdraw_path(
        &mut self,
        peer: PeerId,
        family: Family,
        prefix: IpNet,
        path_id: Option<u32>,
    ) {
        match &mut self.log {
            Some(log) => log.push(Op::Withdraw(peer, family, prefix, path_id)),
            None => self.group_withdraw(peer, family, prefix, path_id),
        }
    }

    fn group_withdraw(&mut self, peer: PeerId, family: Family, prefix: IpNet, id: Option<u32>) {
        let next = self.out.withdraws.len();
        let i = *self.withdraws.entry((peer, family)).or_insert(next);
        if i == next {
            self.out.withdraws.push(OutWithdraw {
                peer,
                family,
                prefixes: Vec::new(),
                path_ids: Vec::new(),
            });
        }
        if let Some(w) = self.out.withdraws.get_mut(i) {
            w.prefixes.push(prefix);
            if let Some(id) = id {
                w.path_ids.push(id);
            }
        }
    }
}

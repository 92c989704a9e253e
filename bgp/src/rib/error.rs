//! Errors of the RIB API. Routes a peer sends are never errors here: a route that fails an
//! acceptance rule is counted and logged ([`super::ImportReject`]), never propagated, because
//! RFC 4271 §9.1.2 says such a route is simply excluded from the decision process.

use super::peer::PeerId;

/// A call into the [`super::Rib`] that names something the RIB does not know, or that
/// cannot apply in the peer's current state. These are driver bugs or races with
/// configuration changes, so they are reported instead of silently ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RibError {
    #[error("unknown peer {0}")]
    UnknownPeer(PeerId),
    #[error("peer {0} is not established")]
    PeerNotEstablished(PeerId),
    #[error("peer {0} is already established")]
    PeerAlreadyEstablished(PeerId),
    #[error("the local pseudo-peer cannot be used as a BGP neighbour")]
    LocalPeer,
}

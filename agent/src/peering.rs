//! Peer computation: which BGP sessions a node has, from Nodes, BGPConfigurations and BGPPeers (pure; no I/O).

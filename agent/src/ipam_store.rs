//! The IPAM store (ipam::IpamStore) over a datastore: blocks, affinities and handles as records.

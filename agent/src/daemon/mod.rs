//! routerd: the node daemon that drives bgp, fib and encap from the datastore.

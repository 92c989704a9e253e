//! bgp (filled in by its issue)

//! encap (filled in by its issue)

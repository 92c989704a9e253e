//! ipam (filled in by its issue)

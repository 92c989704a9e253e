//! Resources (being written).

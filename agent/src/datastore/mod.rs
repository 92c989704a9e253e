//! Datastores (being written).

//! routectl: the operator CLI (commands, table formats).

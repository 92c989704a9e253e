//! A BGP-4 speaker (RFC 4271) built as sans-IO cores with thin tokio drivers.
//!
//! - [`packet`]: the wire format — typed messages, attributes, capabilities and their codec.
pub mod fsm;
pub mod packet;
pub mod rib;
pub mod speaker;

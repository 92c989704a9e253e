//! BFD, Bidirectional Forwarding Detection (RFC 5880), asynchronous mode over single-hop
//! UDP (RFC 5881), without authentication.

pub mod packet;

pub use packet::{ControlPacket, Diagnostic, PacketError, State};

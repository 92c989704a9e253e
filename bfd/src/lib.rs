//! BFD, Bidirectional Forwarding Detection (RFC 5880), asynchronous mode over single-hop
//! UDP (RFC 5881), without authentication.

mod jitter;
pub mod packet;
pub mod session;

pub use packet::{ControlPacket, Diagnostic, PacketError, State};
pub use session::{ConfigError, Input, Output, Session, SessionConfig, SessionStatus};

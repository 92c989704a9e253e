//! BFD, Bidirectional Forwarding Detection (RFC 5880), asynchronous mode over single-hop
//! UDP (RFC 5881), without authentication.

mod driver;
mod jitter;
pub mod packet;
pub mod session;
mod socket;

pub use driver::{BfdDriver, BfdError, BfdHandle};
pub use packet::{ControlPacket, Diagnostic, PacketError, State};
pub use session::{ConfigError, Input, Output, Session, SessionConfig, SessionStatus};
pub use socket::CONTROL_PORT;

//! BFD, Bidirectional Forwarding Detection (RFC 5880), in asynchronous mode over single-hop
//! IPv4 and IPv6 (RFC 5881), without authentication: it tells the BGP speaker within a
//! second that a directly connected peer is gone, where BGP's hold timer takes 90.
//!
//! # Design
//!
//! Sans-IO core, thin driver, as the rest of the workspace:
//!
//! - [`packet`]: the Control packet (§4.1) as a plain struct, `encode` to 24 octets and
//!   `decode` with the reception checks of §6.8.6 that need only the packet. Unknown
//!   diagnostic codes are data.
//! - [`session`]: one session as a pure state machine: [`Session::handle`] takes an
//!   [`Input`] (a received packet, a timeout, admin down/up) and the current instant, and
//!   returns [`Output`]s (packets to send, state changes); [`Session::next_deadline`] says
//!   when to call it next. The state machine (§6.2, §6.8.6), detection time (§6.8.4),
//!   jittered transmission (§6.8.7) with a per-session deterministic generator, slow start
//!   (§6.8.3) and Poll/Final parameter changes (§6.5) all live here and are tested in
//!   virtual time, two sessions wired to each other.
//! - the driver ([`BfdDriver`], [`BfdHandle`]): one tokio task owns every session and sleeps
//!   until the earliest deadline; a reader task per address family receives on UDP 3784 and
//!   reports each packet's TTL / hop limit (dropped unless 255, RFC 5881 §5); each session
//!   sends from its own socket, bound to the local address and a random source port of
//!   49152-65535 (§4), with TTL 255. Packets are demultiplexed by Your Discriminator, or by
//!   the source address while that is zero (RFC 5880 §6.3). Clients get each session's
//!   [`SessionStatus`] on a `tokio::sync::watch` channel; state changes are logged with
//!   `peer`, `from`, `to` and `diag` fields.
//!
//! ```no_run
//! # async fn f() -> Result<(), bfd::BfdError> {
//! let (bfd, _task) = bfd::BfdDriver::start(bfd::CONTROL_PORT).await?;
//! let mut status = bfd
//!     .add_session("10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap(), Default::default())
//!     .await?;
//! status.wait_for(|s| s.state == bfd::State::Up).await.ok();
//! # Ok(()) }
//! ```
//!
//! # Tested against
//!
//! - BIRD 2.0.12 (`tests/interop_bird.rs`) and FRR 8.4's bfdd (`tests/interop_frr.rs`, bfdd
//!   alone, without zebra, as the `frr` user), IPv4 and IPv6, 300 ms x 3: both sides Up;
//!   a link cut on the peer's side is detected in 0.65-0.9 s over repeated runs (under the 3 x 300 ms
//!   detection time, since the last packet came before the cut); both Up again when the
//!   link returns; removing a session sends AdminDown, which the peer reports as such.
//! - `tests/driver_ttl.rs`: hand-made packets with TTL 64 are dropped, with TTL 255 taken;
//!   our packets leave with TTL 255 from a port of the dynamic range.
//!
//! # Not implemented
//!
//! Authentication (§6.7; packets with the A bit are discarded), the Echo function, Demand
//! mode on our side (the peer's Demand mode is honoured: we stop periodic transmission,
//! §6.8.7), multihop BFD (RFC 5883), IPv6 link-local peers (the send socket has no scope
//! id), and passive sessions (we are always active, §6.1).

mod driver;
mod jitter;
pub mod packet;
pub mod session;
mod socket;

pub use driver::{BfdDriver, BfdError, BfdHandle};
pub use packet::{ControlPacket, Diagnostic, PacketError, State};
pub use session::{ConfigError, Input, Output, Session, SessionConfig, SessionStatus};
pub use socket::CONTROL_PORT;

//! Per-peer session configuration: what we put in our OPEN and how patient we are.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::packet::{AddPathMode, Capability, Family};

/// Everything the FSM needs to know about one configured peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Our AS; always advertised with the 4-octet AS capability (RFC 6793 §3).
    pub local_as: u32,
    /// The AS the peer must present; `None` accepts any (dynamic/unnumbered peers).
    pub remote_as: Option<u32>,
    /// Our BGP Identifier (RFC 6286): non-zero, unique within our AS.
    pub router_id: Ipv4Addr,
    /// Hold Time we offer in OPEN, seconds: 0 or at least 3 (RFC 4271 §4.2). The session uses
    /// the smaller of ours and the peer's.
    pub hold_time: u16,
    /// Keepalive interval in seconds; it is always capped at a third of the negotiated hold time
    /// (RFC 4271 §10). `None` means exactly a third.
    pub keepalive_time: Option<u16>,
    /// ConnectRetryTimer (RFC 4271 §10 suggests 120 s).
    pub connect_retry: Duration,
    /// Hold timer while waiting for the peer's OPEN (RFC 4271 §8.2.2 suggests 4 minutes).
    pub open_hold_time: Duration,
    /// Never initiate connections; wait for the peer (RFC 4271 §8.1.1 PassiveTcpEstablishment).
    pub passive: bool,
    /// Families offered with the multiprotocol capability (RFC 4760 §8).
    pub families: Vec<Family>,
    /// Advertise the Route Refresh capability (RFC 2918).
    pub route_refresh: bool,
    /// Advertise Enhanced Route Refresh (RFC 7313): with the peer's too, a refresh is framed
    /// by Beginning- and End-of-Route-Refresh markers, so the receiver can drop what the
    /// sender no longer has.
    pub enhanced_route_refresh: bool,
    /// Advertise the Extended Message capability (RFC 8654): with the peer's too, UPDATEs
    /// (and NOTIFICATION, ROUTE-REFRESH) may be up to 65535 octets.
    pub extended_messages: bool,
    /// Advertise the Graceful Restart capability (RFC 4724) with these parameters.
    pub graceful_restart: Option<GracefulRestartConfig>,
    /// ADD-PATH modes to advertise per family (RFC 7911).
    pub add_path: Vec<(Family, AddPathMode)>,
    /// Further capabilities to advertise verbatim (e.g. hostname).
    pub extra_capabilities: Vec<Capability>,
    /// How long to stay Idle before an automatic restart after an error.
    pub idle_hold: IdleHoldBackoff,
}

impl SessionConfig {
    /// A configuration with the RFC 4271 §10 defaults: hold time 90 s, connect retry 120 s,
    /// IPv4 unicast, route refresh on.
    pub fn new(local_as: u32, remote_as: Option<u32>, router_id: Ipv4Addr) -> SessionConfig {
        SessionConfig {
            local_as,
            remote_as,
            router_id,
            hold_time: 90,
            keepalive_time: None,
            connect_retry: Duration::from_secs(120),
            open_hold_time: Duration::from_secs(240),
            passive: false,
            families: vec![Family::Ipv4Unicast],
            route_refresh: true,
            enhanced_route_refresh: true,
            extended_messages: true,
            graceful_restart: None,
            add_path: Vec::new(),
            extra_capabilities: Vec::new(),
            idle_hold: IdleHoldBackoff::default(),
        }
    }

    /// Rejects settings that would make us send an OPEN the RFCs forbid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if matches!(self.hold_time, 1 | 2) {
            return Err(ConfigError::HoldTime(self.hold_time));
        }
        if self.router_id.is_unspecified() {
            return Err(ConfigError::RouterId);
        }
        if self.local_as == 0 {
            return Err(ConfigError::LocalAs);
        }
        if self.families.is_empty() {
            return Err(ConfigError::NoFamilies);
        }
        if let Some(gr) = &self.graceful_restart {
            if gr.restart_time > 4095 {
                return Err(ConfigError::RestartTime(gr.restart_time));
            }
        }
        if self.connect_retry.is_zero() || self.idle_hold.initial.is_zero() {
            return Err(ConfigError::ZeroTimer);
        }
        Ok(())
    }
}

/// Graceful Restart parameters we advertise (RFC 4724 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestartConfig {
    /// Restart Time, seconds (12 bits).
    pub restart_time: u16,
    /// Whether we claim to have preserved forwarding state for our families (F bit).
    pub forwarding_preserved: bool,
    /// The Restart State bit (R, RFC 4724 §3): we have restarted and come back with our
    /// forwarding state, so the peer must not wait for our End-of-RIB before sending its
    /// routes, and keeps our stale routes until our End-of-RIB.
    pub restarting: bool,
}

/// Exponential back-off of the idle hold time (RFC 4271 §8.1.1 DampPeerOscillations): a peer
/// that keeps failing is retried after `initial`, then twice that, ... up to `max`, so a
/// flapping peer cannot make the daemon spin. The back-off resets once a session has stayed
/// Established for `stable_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleHoldBackoff {
    pub initial: Duration,
    pub max: Duration,
    pub stable_after: Duration,
}

impl Default for IdleHoldBackoff {
    fn default() -> Self {
        IdleHoldBackoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(120),
            stable_after: Duration::from_secs(60),
        }
    }
}

/// A configuration the FSM refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("hold time {0} s is not allowed: it must be 0 or at least 3 (RFC 4271 §4.2)")]
    HoldTime(u16),
    #[error("router id 0.0.0.0 is not a valid BGP Identifier (RFC 6286 §2.1)")]
    RouterId,
    #[error("local AS 0 is reserved (RFC 7607)")]
    LocalAs,
    #[error("no address family configured")]
    NoFamilies,
    #[error("graceful restart time {0} s does not fit in 12 bits (RFC 4724 §3)")]
    RestartTime(u16),
    #[error("connect-retry and idle-hold times must be non-zero")]
    ZeroTimer,
}

//! The speaker's control protocol: one JSON request per line on a Unix socket, one JSON
//! response line back. Used by the interop tests, the benchmark and `routectl node status`.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::config::{Origination, PeerConfig};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Per-peer session status.
    Peers,
    /// The Loc-RIB: every path we hold, best ones marked.
    Routes,
    /// The paths to one destination, as `birdc show route <prefix>` (`longest_match`
    /// false: exactly that prefix) or `birdc show route for <address>` (true: the longest
    /// prefix we hold that contains it).
    RouteLookup {
        prefix: IpNet,
        #[serde(default)]
        longest_match: bool,
    },
    /// Originate (or re-originate with new attributes) a local prefix.
    Originate(Origination),
    /// Stop originating a local prefix.
    Withdraw { prefix: IpNet },
    /// Add a peer, or replace one whose settings changed; other sessions are not touched.
    AddPeer(PeerConfig),
    /// Remove a peer (Cease/3 "Peer De-configured"); other sessions are not touched.
    RemovePeer { address: IpAddr },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ControlResponse {
    Peers { peers: Vec<PeerStatus> },
    Routes { routes: Vec<RouteView> },
    Done,
    Error { message: String },
}

/// What `routectl node status` shows for one session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub address: IpAddr,
    pub remote_as: u32,
    /// RFC 4271 state name: Idle, Connect, Active, OpenSent, OpenConfirm, Established.
    pub state: String,
    /// Seconds since the last state change.
    pub since_secs: u64,
    pub router_id: Option<String>,
    pub hold_time: Option<u16>,
    /// Seconds between our KEEPALIVEs on the established session.
    #[serde(default)]
    pub keepalive_time: Option<u16>,
    /// Families in use on the session, e.g. `ipv4-unicast`.
    pub families: Vec<String>,
    /// Capabilities the peer advertised, by name.
    pub capabilities: Vec<String>,
    pub prefixes_received: u64,
    pub prefixes_accepted: u64,
    pub prefixes_advertised: u64,
    /// The same counts per family in use.
    #[serde(default)]
    pub family_prefixes: Vec<FamilyPrefixes>,
    pub last_error: Option<String>,
    /// The session's BFD, when configured.
    #[serde(default)]
    pub bfd: Option<BfdView>,
    /// Families whose End-of-RIB the peer has sent on this session: its initial routes of
    /// those are all in (RFC 4724 §2).
    #[serde(default)]
    pub end_of_rib: Vec<String>,
}

/// A BFD session as `birdc show bfd sessions` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BfdView {
    /// RFC 5880 state: AdminDown, Down, Init, Up.
    pub state: String,
    /// The state the peer reports.
    pub remote_state: String,
    /// Why our session last changed state (RFC 5880 §4.1 Diag), e.g. `Control Detection
    /// Time Expired`.
    pub diag: String,
    /// The agreed transmit interval, milliseconds.
    pub tx_interval_ms: Option<u64>,
    /// The detection time in use, milliseconds (0 until the peer is heard).
    pub detection_time_ms: u64,
    /// Why there is no session (e.g. the local address cannot be bound).
    pub error: Option<String>,
}

/// One family's route counts on a session (BIRD's per-channel "Routes:" line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyPrefixes {
    /// e.g. `ipv4-unicast`.
    pub family: String,
    /// What the peer announces, accepted or filtered.
    pub received: u64,
    /// Of those, what passed the import rules and filters.
    pub accepted: u64,
    /// What we advertise to it.
    pub advertised: u64,
}

/// One path of the Loc-RIB, with its attributes written as operators read them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteView {
    pub prefix: IpNet,
    /// The peer it was learned from; `None` for a locally originated route.
    pub peer: Option<IpAddr>,
    pub best: bool,
    pub next_hop: Option<IpAddr>,
    pub as_path: Vec<u32>,
    pub origin: String,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub communities: Vec<String>,
    pub large_communities: Vec<String>,
    pub originator_id: Option<String>,
    pub cluster_list: Vec<String>,
    /// Where the path stands in the decision: `best`, `multipath` (installed with the best,
    /// ECMP), or `beaten: <the step of RFC 4271 §9.1.2.2 at which the best won>`.
    #[serde(default)]
    pub decision: String,
    /// The ADD-PATH path identifier the peer sent the path under (RFC 7911); 0 (and not
    /// shown) without ADD-PATH.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub path_id: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// Sends one request to a speaker's control socket and reads the answer.
pub async fn query(socket: &Path, request: &ControlRequest) -> std::io::Result<ControlResponse> {
    let stream = UnixStream::connect(socket).await?;
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    let mut reader = BufReader::new(r);
    let mut answer = String::new();
    reader.read_line(&mut answer).await?;
    serde_json::from_str(&answer).map_err(std::io::Error::other)
}

/// Blocking variant of [`query`] for tests and command-line tools without a runtime.
pub fn query_blocking(socket: &Path, request: &ControlRequest) -> std::io::Result<ControlResponse> {
    use std::io::{BufRead, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    std::io::BufReader::new(stream).read_line(&mut answer)?;
    serde_json::from_str(&answer).map_err(std::io::Error::other)
}

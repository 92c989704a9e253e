//! What `routerd` reports about itself on its control socket, and what `routectl node
//! status` prints from it.
//!
//! The protocol is the same as the BGP speaker's: one JSON request per line on a Unix socket
//! (default [`DEFAULT_CONTROL_SOCKET`]), one JSON response line back. It is routerd's own
//! socket rather than the speaker's because an operator's view needs agent-level facts the
//! speaker does not have: which resource produced a session (its [`PeerType`] and Calico-style
//! name `Mesh_10_0_0_2`), the node's name, and the FIB's state.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use bgp::speaker::control::{BfdView, FamilyPrefixes, RouteView};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Where routerd listens for control requests unless told otherwise.
pub const DEFAULT_CONTROL_SOCKET: &str = "/var/run/routerd/routerd.ctl";

/// A request on routerd's control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum StatusRequest {
    /// The daemon's state and every BGP session ([`NodeStatus`]).
    Status,
    /// The speaker's paths: all of them, or those of one destination (`birdc show route
    /// <prefix>`, or with `longest_match` `birdc show route for <address>`).
    Routes {
        #[serde(default)]
        prefix: Option<IpNet>,
        #[serde(default)]
        longest_match: bool,
    },
}

/// The answer to a [`StatusRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum StatusResponse {
    Status(NodeStatus),
    Routes { routes: Vec<RouteView> },
    Error { message: String },
}

/// Where the daemon is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DaemonState {
    /// Registering the node, claiming blocks, reconciling the FIB.
    Starting,
    /// Serving: sessions are being driven from the datastore.
    Running,
    /// SIGTERM received; sessions are closing, kernel routes are kept.
    Stopping,
}

impl DaemonState {
    /// The text `routectl node status` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            DaemonState::Starting => "starting",
            DaemonState::Running => "running",
            DaemonState::Stopping => "stopping",
        }
    }
}

/// Why a session exists, as `calicoctl node status` names it in its PEER TYPE column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerType {
    /// Full iBGP mesh between nodes (`Mesh_<ip>`).
    NodeMesh,
    /// A `BGPPeer` with neither `node` nor `nodeSelector` (`Global_<ip>`).
    Global,
    /// A `BGPPeer` scoped to this node by `node` or `nodeSelector` (`Node_<ip>`).
    NodeSpecific,
    /// A session of the reflector topology derived from `routeReflectorClusterID` when the
    /// mesh is disabled: reflector to reflector, reflector to client, client to reflector.
    RouteReflector,
}

impl PeerType {
    /// The text of the PEER TYPE column.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerType::NodeMesh => "node-to-node mesh",
            PeerType::Global => "global",
            PeerType::NodeSpecific => "node specific",
            PeerType::RouteReflector => "route reflector",
        }
    }

    /// The session name prefix Calico uses (`Mesh_`, `Global_`, `Node_`); reflector-topology
    /// sessions are named as node-specific ones, as Calico names its reflector peerings.
    pub fn name_prefix(self) -> &'static str {
        match self {
            PeerType::NodeMesh => "Mesh_",
            PeerType::Global => "Global_",
            PeerType::NodeSpecific | PeerType::RouteReflector => "Node_",
        }
    }

    /// The session name for a peer address: the prefix, then the address with `.` and `:`
    /// written as `_` (`Mesh_10_0_0_2`, `Global_fd00__1`), as Calico's BIRD templates do.
    pub fn session_name(self, address: IpAddr) -> String {
        let mut name = String::from(self.name_prefix());
        name.extend(
            address
                .to_string()
                .chars()
                .map(|c| if c == '.' || c == ':' { '_' } else { c }),
        );
        name
    }
}

/// Everything `routectl node status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The Node resource this daemon registered.
    pub node: String,
    /// routerd's version (the crate version).
    pub version: String,
    pub state: DaemonState,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    pub as_number: u32,
    pub router_id: Ipv4Addr,
    /// Set when this node is a route reflector.
    pub cluster_id: Option<Ipv4Addr>,
    /// Blocks this node owns and originates.
    pub blocks: Vec<String>,
    /// Every configured session, sorted by name.
    pub sessions: Vec<SessionStatus>,
    pub fib: FibStatus,
    /// Whether the datastore answers (absent in answers of older daemons).
    #[serde(default)]
    pub datastore: DatastoreStatus,
}

/// The datastore as routerd sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DatastoreStatus {
    /// The address routerd opened (`file:…`, `kubernetes:…`, `etcd:…`).
    pub address: String,
    /// False while reads or the watch fail; routerd keeps its sessions and routes meanwhile.
    pub reachable: bool,
    /// Unix time (seconds) of the last change of `reachable`.
    pub since_unix: u64,
    /// Why it is unreachable (the last error), while it is.
    pub last_error: Option<String>,
}

/// One BGP session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStatus {
    /// Calico-style name, e.g. `Mesh_10_0_0_2` ([`PeerType::session_name`]).
    pub name: String,
    pub address: IpAddr,
    pub peer_type: PeerType,
    pub remote_as: u32,
    /// RFC 4271 state name: Idle, Connect, Active, OpenSent, OpenConfirm, Established.
    pub state: String,
    /// Unix time (seconds) of the last state change.
    pub since_unix: u64,
    /// Families in use on the session, e.g. `ipv4-unicast`.
    pub families: Vec<String>,
    pub prefixes_received: u64,
    pub prefixes_accepted: u64,
    pub prefixes_advertised: u64,
    /// The same counts per family in use (empty while the session is down).
    #[serde(default)]
    pub family_prefixes: Vec<FamilyPrefixes>,
    /// The last NOTIFICATION or connection error, as an operator reads it.
    pub last_error: Option<String>,
    /// The session's BFD, when the BGPPeer asks for it (`failureDetectionMode`).
    #[serde(default)]
    pub bfd: Option<BfdView>,
}

impl SessionStatus {
    /// BIRD's protocol state as `calicoctl node status` shows it in STATE: `up` when
    /// Established, `start` otherwise.
    pub fn bird_state(&self) -> &'static str {
        if self.state == "Established" {
            "up"
        } else {
            "start"
        }
    }

    /// The INFO column: the FSM state, with the last error when the session is not up
    /// (as BIRD prints `Active        Socket: Connection refused`).
    pub fn info(&self) -> String {
        match (&self.last_error, self.state.as_str()) {
            (Some(error), state) if state != "Established" => format!("{state} {error}"),
            (_, state) => state.to_string(),
        }
    }
}

/// The kernel FIB as routerd programs it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FibStatus {
    /// Routes of ours routerd wants installed.
    pub routes: u64,
    /// True when the last apply or reconcile left nothing failed or pending.
    pub in_sync: bool,
    /// Route operations that failed since start (each is retried).
    pub errors: u64,
    /// Duration of the last full reconcile, milliseconds.
    pub last_reconcile_ms: Option<u64>,
}

/// Errors talking to routerd's control socket.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot reach routerd at {path}: {source} (is routerd running on this node?)")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("routerd at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("routerd at {path} sent an unreadable answer: {reason}")]
    Decode { path: String, reason: String },
    #[error("routerd: {0}")]
    Daemon(String),
}

/// Sends one request to routerd and reads its answer (blocking; for `routectl` and tests).
pub fn query(
    socket: &Path,
    request: &StatusRequest,
    timeout: Duration,
) -> Result<StatusResponse, StatusError> {
    use std::io::{BufRead, Write};
    let path = socket.display().to_string();
    let io = |source| StatusError::Io {
        path: path.clone(),
        source,
    };
    let mut stream =
        std::os::unix::net::UnixStream::connect(socket).map_err(|source| StatusError::Connect {
            path: path.clone(),
            source,
        })?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_vec(request).map_err(|e| StatusError::Decode {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(io)?;
    match serde_json::from_str(&answer) {
        Ok(StatusResponse::Error { message }) => Err(StatusError::Daemon(message)),
        Ok(response) => Ok(response),
        Err(e) => Err(StatusError::Decode {
            path,
            reason: e.to_string(),
        }),
    }
}

fn unexpected(socket: &Path, response: &StatusResponse) -> StatusError {
    StatusError::Decode {
        path: socket.display().to_string(),
        reason: format!("unexpected answer {response:?}"),
    }
}

/// Asks routerd for its status (blocking; for `routectl` and tests).
pub fn query_status(socket: &Path, timeout: Duration) -> Result<NodeStatus, StatusError> {
    match query(socket, &StatusRequest::Status, timeout)? {
        StatusResponse::Status(status) => Ok(status),
        other => Err(unexpected(socket, &other)),
    }
}

/// Asks routerd for its paths ([`StatusRequest::Routes`]).
pub fn query_routes(
    socket: &Path,
    prefix: Option<IpNet>,
    longest_match: bool,
    timeout: Duration,
) -> Result<Vec<RouteView>, StatusError> {
    let request = StatusRequest::Routes {
        prefix,
        longest_match,
    };
    match query(socket, &request, timeout)? {
        StatusResponse::Routes { routes } => Ok(routes),
        other => Err(unexpected(socket, &other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_follow_calico() {
        assert_eq!(
            PeerType::NodeMesh.session_name("10.0.0.2".parse().unwrap_or(IpAddr::from([0; 4]))),
            "Mesh_10_0_0_2"
        );
        assert_eq!(
            PeerType::Global.session_name("fd00::1".parse().unwrap_or(IpAddr::from([0; 4]))),
            "Global_fd00__1"
        );
        assert_eq!(
            PeerType::RouteReflector
                .session_name("192.168.1.1".parse().unwrap_or(IpAddr::from([0; 4]))),
            "Node_192_168_1_1"
        );
    }

    #[test]
    fn info_shows_the_error_only_when_down() {
        let mut s = SessionStatus {
            name: "Mesh_10_0_0_2".into(),
            address: IpAddr::from([10, 0, 0, 2]),
            peer_type: PeerType::NodeMesh,
            remote_as: 64512,
            state: "Active".into(),
            since_unix: 0,
            families: vec![],
            prefixes_received: 0,
            prefixes_accepted: 0,
            prefixes_advertised: 0,
            family_prefixes: Vec::new(),
            last_error: Some("Socket: Connection refused".into()),
            bfd: None,
        };
        assert_eq!(s.info(), "Active Socket: Connection refused");
        assert_eq!(s.bird_state(), "start");
        s.state = "Established".into();
        assert_eq!(s.info(), "Established");
        assert_eq!(s.bird_state(), "up");
    }
}

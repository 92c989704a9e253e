//! routerd settings: flags > environment > TOML file > defaults; node address autodetection.
//!
//! # Layers
//!
//! Every setting can be given in four places; the first one that sets it wins:
//!
//! 1. a command-line flag (`--node-ip 10.0.0.5/24`),
//! 2. an environment variable named `ROUTERD_` + the flag in upper case with `-` as `_`
//!    (`ROUTERD_NODE_IP`, `ROUTERD_AS`),
//! 3. the TOML file named by `--config` / `ROUTERD_CONFIG`, whose keys are spelled exactly as
//!    the flags (kebab-case: `node-ip = "10.0.0.5/24"`, `as = 64512`); unknown keys are
//!    refused so that a typo cannot silently fall back to a default,
//! 4. the built-in default.
//!
//! clap could read the environment itself, but it then merges flag and environment into one
//! value and the file could no longer sit between them. So [`Flags`] is parsed from argv
//! alone and the environment is read here, from a map the caller passes in: the same code
//! resolves the process's real environment ([`Settings::from_process`]) and a test's map
//! ([`Settings::from_sources`]). An environment variable set to the empty string counts as
//! unset (Kubernetes manifests often carry `value: ""`); `ROUTERD_*` names that are not
//! settings are ignored, because Kubernetes injects `ROUTERD_SERVICE_HOST`-style variables
//! for a Service named `routerd`.
//!
//! A complete file (every key optional):
//!
//! ```toml
//! node-name = "node-1"
//! node-ip = "can-reach=10.0.0.1"      # or "10.0.0.5/24", "first-found", "interface=eth.*"
//! node-ipv6 = "none"
//! as = 64512                          # or "1.10"
//! datastore = "file:/var/lib/routerd"
//! control-socket = "/var/run/routerd/routerd.ctl"
//! health-listen = "127.0.0.1:9099"    # or "none"
//! metrics-listen = "0.0.0.0:9091"     # or "none"
//! log-level = "info"
//! log-format = "text"                # or "json"
//! route-protocol = 80
//! shutdown-drain-time = "10s"         # or 10; 0: no graceful-shutdown drain
//! ```
//!
//! Every refused value is reported on one line naming where it came from: `--node-ip: ...`,
//! `ROUTERD_AS: ...`, `/etc/routerd/routerd.toml: line 3: node-ip: ...`.
//!
//! # The node's address
//!
//! [`NodeAddressSource`] takes Calico's `IP` / `IP_AUTODETECTION_METHOD` forms in one setting:
//! an explicit `10.0.0.5/24` (or a bare `10.0.0.5`, whose prefix length is then looked up on
//! the interface carrying it), `first-found` (also spelled `autodetect`, Calico's `IP` value),
//! `interface=<regex>[,<regex>...]`, `skip-interface=<regex>[,...]` (first-found, skipping
//! those too), `cidr=<cidr>[,...]` (the first address within one) and `can-reach=<ip>`;
//! and `kubernetes-internal-ip` (the node's `InternalIP` from its Kubernetes Node, found on
//! the interface carrying it; [`autodetect_with`]). [`autodetect`] resolves it against
//! the interfaces of the *calling thread's* network namespace and keeps the prefix length,
//! which CrossSubnet encapsulation needs to tell whether a peer is on the same subnet.
//!
//! # Use
//!
//! ```no_run
//! use agent::settings::{Settings, SettingsError};
//!
//! let settings = match Settings::from_process() {
//!     Ok(s) => s,
//!     Err(SettingsError::Usage(e)) => e.exit(), // also --help and --version
//!     Err(e) => {
//!         eprintln!("routerd: {e}");
//!         std::process::exit(2);
//!     }
//! };
//! // In the host's network namespace, before anything enters another one:
//! let ipv4 = settings.node_ipv4();
//! let ipv6 = settings.node_ipv6();
//! ```

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

use crate::status::DEFAULT_CONTROL_SOCKET;

/// Where routerd keeps its resources unless told otherwise.
pub const DEFAULT_DATASTORE: &str = "file:/var/lib/routerd";

/// Calico's variable naming the datastore kind (`etcdv3`, `kubernetes`), read when no
/// address is given.
pub const DATASTORE_TYPE: &str = "DATASTORE_TYPE";

/// The health/metrics listen address unless told otherwise: calico-node's health port, on
/// loopback only (a kubelet probe runs in the host's namespace, where routerd runs too).
pub const DEFAULT_HEALTH_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9099);

/// Where Prometheus scrapes routerd unless told otherwise: every address, felix's port.
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9091);

/// The rtnetlink protocol id routerd marks its kernel routes with unless told otherwise.
pub const DEFAULT_ROUTE_PROTOCOL: u8 = 80;

/// Prefix of every environment variable routerd reads.
pub const ENV_PREFIX: &str = "ROUTERD_";

/// Interfaces `first-found` never picks, as Calico's `DEFAULT_INTERFACES_TO_EXCLUDE`: loopback,
/// container bridges and veths, tunnels and overlay devices (ours and other CNIs'). Their
/// addresses are not the node's underlay address.
pub const EXCLUDED_INTERFACES: &[&str] = &[
    r"^docker.*",
    r"^cbr.*",
    r"^dummy.*",
    r"^virbr.*",
    r"^lxcbr.*",
    r"^veth.*",
    r"^lo",
    r"^cali.*",
    r"^tunl.*",
    r"^flannel.*",
    r"^kube-ipvs.*",
    r"^cni.*",
    r"^vxlan\.calico.*",
    r"^vxlan-v6\.calico.*",
    r"^wireguard\.cali.*",
    r"^wg-v6\.cali.*",
    r"^nodelocaldns.*",
];

/// routerd's command line. Values stay text here: they are checked in
/// [`Settings::resolve`], the same way whichever layer they come from.
///
/// Each flag's environment equivalent is `ROUTERD_<FLAG>` ([`env_name`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Parser)]
#[command(
    name = "routerd",
    version,
    about = "Node agent: BGP speaker, kernel routes and tunnels for a container cluster",
    after_help = "Every flag can also be set by the environment variable ROUTERD_<FLAG> \
                  (ROUTERD_NODE_IP, ROUTERD_AS, ...) or by the same key in the TOML file \
                  given by --config (node-ip = \"10.0.0.5/24\"). Flags win over the \
                  environment, the environment over the file, the file over defaults."
)]
pub struct Flags {
    /// TOML file with settings (keys as the flags: `node-ip`, `as`, ...). [env: ROUTERD_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's name (the Node resource). [default: the hostname] [env: ROUTERD_NODE_NAME]
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// IPv4 address: CIDR, address, `first-found`/`autodetect`, `interface=<regex>`,
    /// `can-reach=<ip>`, `cidr=<cidr>[,...]`, `skip-interface=<regex>[,...]`.
    /// [default: first-found] [env: ROUTERD_NODE_IP]
    #[arg(long, value_name = "SOURCE")]
    pub node_ip: Option<String>,
    /// IPv6 address, as --node-ip, or `none`. [default: none] [env: ROUTERD_NODE_IPV6]
    #[arg(long, value_name = "SOURCE")]
    pub node_ipv6: Option<String>,
    /// AS number (plain or asdot `1.10`); overrides the Node resource's. [env: ROUTERD_AS]
    #[arg(long = "as", value_name = "ASN")]
    pub as_number: Option<String>,
    /// `file:<dir>`, `memory:` or `kubernetes:[<kubeconfig>]`.
    /// [default: file:/var/lib/routerd] [env: ROUTERD_DATASTORE]
    #[arg(long, value_name = "ADDRESS")]
    pub datastore: Option<String>,
    /// Unix socket for `routectl node status`.
    /// [default: /var/run/routerd/routerd.ctl] [env: ROUTERD_CONTROL_SOCKET]
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<String>,
    /// `<ip>:<port>` of /readiness, /liveness and /metrics, or `none`.
    /// [default: 127.0.0.1:9099] [env: ROUTERD_HEALTH_LISTEN]
    #[arg(long, value_name = "ADDRESS")]
    pub health_listen: Option<String>,
    /// `<ip>:<port>` of Prometheus /metrics for scrapers off the node (felix's port), or
    /// `none`. [default: 0.0.0.0:9091] [env: ROUTERD_METRICS_LISTEN]
    #[arg(long, value_name = "ADDRESS")]
    pub metrics_listen: Option<String>,
    /// error, warn, info, debug or trace. [default: info] [env: ROUTERD_LOG_LEVEL]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// `text` (one human line per event) or `json` (one object per line, the structured
    /// fields as JSON fields, for log shippers). [default: text] [env: ROUTERD_LOG_FORMAT]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// rtnetlink protocol id of routerd's routes, 5-255 minus other daemons' ids.
    /// [default: 80] [env: ROUTERD_ROUTE_PROTOCOL]
    #[arg(long, value_name = "ID")]
    pub route_protocol: Option<String>,
    /// On SIGTERM, how long peers that will lose our routes (no graceful restart) see them
    /// with the GRACEFUL_SHUTDOWN community (RFC 8326) before the sessions close, e.g.
    /// `10s`; 0 closes at once. [default: 0] [env: ROUTERD_SHUTDOWN_DRAIN_TIME]
    #[arg(long, value_name = "DURATION")]
    pub shutdown_drain_time: Option<String>,
}

/// The environment variable of a flag: `node-ip` -> `ROUTERD_NODE_IP`.
pub fn env_name(flag: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        flag.to_ascii_uppercase().replace('-', "_")
    )
}

/// The settings file as written. Keys are kebab-case, spelled as the flags; every value
/// keeps its position so a refused value can be reported with its line.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileSettings {
    pub node_name: Option<Spanned<String>>,
    pub node_ip: Option<Spanned<String>>,
    pub node_ipv6: Option<Spanned<String>>,
    /// An integer (`as = 64512`) or a string (`as = "1.10"`).
    #[serde(rename = "as")]
    pub as_number: Option<Spanned<FileNumber>>,
    pub datastore: Option<Spanned<String>>,
    pub control_socket: Option<Spanned<String>>,
    pub health_listen: Option<Spanned<String>>,
    pub metrics_listen: Option<Spanned<String>>,
    pub log_level: Option<Spanned<String>>,
    pub log_format: Option<Spanned<String>>,
    pub route_protocol: Option<Spanned<FileNumber>>,
    /// A number of seconds or a duration string (`"10s"`).
    pub shutdown_drain_time: Option<Spanned<FileNumber>>,
    /// The file's path, for messages.
    #[serde(skip)]
    path: PathBuf,
    /// Byte offsets at which each line starts, to turn spans into line numbers.
    #[serde(skip)]
    line_starts: Vec<usize>,
}

/// A numeric setting in the file, written as a TOML integer or as a string.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum FileNumber {
    Integer(i64),
    Text(String),
}

impl fmt::Display for FileNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileNumber::Integer(i) => write!(f, "{i}"),
            FileNumber::Text(s) => f.write_str(s),
        }
    }
}

impl FileSettings {
    /// Parses a settings file's text; `path` only names it in messages.
    pub fn parse(path: &Path, text: &str) -> Result<FileSettings, SettingsError> {
        let line_starts = line_starts(text);
        let mut settings: FileSettings = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().replace('\n', " ");
            SettingsError::File {
                path: path.to_path_buf(),
                message: match e.span() {
                    Some(span) => format!("line {}: {message}", line_of(&line_starts, span.start)),
                    None => message,
                },
            }
        })?;
        settings.path = path.to_path_buf();
        settings.line_starts = line_starts;
        Ok(settings)
    }

    /// Reads and parses a settings file.
    pub fn load(path: &Path) -> Result<FileSettings, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|e| SettingsError::File {
            path: path.to_path_buf(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(path, &text)
    }

    fn origin(&self, key: &'static str, span: std::ops::Range<usize>) -> Origin {
        Origin::File {
            path: self.path.clone(),
            line: line_of(&self.line_starts, span.start),
            key,
        }
    }
}

fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

fn line_of(line_starts: &[usize], offset: usize) -> usize {
    line_starts.partition_point(|&start| start <= offset).max(1)
}

/// Where a value came from, as error messages name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag(&'static str),
    Env(String),
    File {
        path: PathBuf,
        line: usize,
        key: &'static str,
    },
    /// A built-in default derived from the system (the hostname for `node-name`).
    Default(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "--{flag}"),
            Origin::Env(name) => f.write_str(name),
            Origin::File { path, line, key } => {
                write!(f, "{}: line {line}: {key}", path.display())
            }
            Origin::Default(what) => write!(f, "{what} (default)"),
        }
    }
}

/// Why routerd's settings could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The command line itself is wrong, or `--help` / `--version` was asked for: the caller
    /// prints it with `clap::Error::exit`.
    #[error("{0}")]
    Usage(#[from] clap::Error),
    /// A value is refused; `origin` names the flag, variable or file line.
    #[error("{origin}: {message}")]
    Invalid { origin: Origin, message: String },
    /// The settings file cannot be read or is not valid TOML / has unknown keys.
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    /// No node name was given and the hostname cannot be read.
    #[error("node-name: not set and the hostname cannot be read: {0}")]
    Hostname(std::io::Error),
    /// The node's address could not be determined from its source.
    #[error("{setting} ({source_text}): {message}")]
    Autodetect {
        setting: &'static str,
        source_text: String,
        message: String,
    },
}

/// How to find one of the node's addresses (Calico's `IP` + `IP_AUTODETECTION_METHOD`).
#[derive(Debug, Clone)]
pub enum NodeAddressSource {
    /// Given with its prefix length: used as is.
    Cidr(IpNet),
    /// Given without prefix length: the prefix is that of the interface carrying it.
    Address(IpAddr),
    /// The first address of the family on the first up interface (in interface-index order)
    /// that is not in [`EXCLUDED_INTERFACES`].
    FirstFound,
    /// The first address of the family on the first up interface (interface-index order)
    /// whose whole name matches one of the regexes.
    Interface(Vec<Regex>),
    /// The source address the kernel picks to reach this destination.
    CanReach(IpAddr),
    /// The first address of the family, on an up interface in index order, that lies within
    /// one of these networks (Calico's `cidr=`).
    Within(Vec<IpNet>),
    /// As [`NodeAddressSource::FirstFound`], also skipping interfaces whose whole name
    /// matches one of the regexes (Calico's `skip-interface=`).
    SkipInterface(Vec<Regex>),
    /// The first `InternalIP` of the family the Kubernetes Node reports (its Node record's
    /// `spec.addresses`), with the prefix length of the interface carrying it.
    KubernetesInternalIp,
}

impl PartialEq for NodeAddressSource {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl fmt::Display for NodeAddressSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeAddressSource::Cidr(net) => write!(f, "{net}"),
            NodeAddressSource::Address(ip) => write!(f, "{ip}"),
            NodeAddressSource::FirstFound => f.write_str("first-found"),
            NodeAddressSource::Interface(res) => {
                let names: Vec<&str> = res.iter().map(|r| user_regex(r.as_str())).collect();
                write!(f, "interface={}", names.join(","))
            }
            NodeAddressSource::CanReach(ip) => write!(f, "can-reach={ip}"),
            NodeAddressSource::Within(nets) => {
                let nets: Vec<String> = nets.iter().map(ToString::to_string).collect();
                write!(f, "cidr={}", nets.join(","))
            }
            NodeAddressSource::SkipInterface(res) => {
                let names: Vec<&str> = res.iter().map(|r| user_regex(r.as_str())).collect();
                write!(f, "skip-interface={}", names.join(","))
            }
            NodeAddressSource::KubernetesInternalIp => f.write_str("kubernetes-internal-ip"),
        }
    }
}

/// The regex as the user wrote it, without the anchoring we add.
fn user_regex(anchored: &str) -> &str {
    anchored
        .strip_prefix("^(?:")
        .and_then(|s| s.strip_suffix(")$"))
        .unwrap_or(anchored)
}

impl FromStr for NodeAddressSource {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "first-found" || text == "autodetect" {
            return Ok(NodeAddressSource::FirstFound);
        }
        if let Some(list) = text.strip_prefix("interface=") {
            return Ok(NodeAddressSource::Interface(interface_regexes(text, list)?));
        }
        if let Some(list) = text.strip_prefix("skip-interface=") {
            return Ok(NodeAddressSource::SkipInterface(interface_regexes(
                text, list,
            )?));
        }
        if let Some(list) = text.strip_prefix("cidr=") {
            let nets = list
                .split(',')
                .map(|c| {
                    c.trim()
                        .parse::<IpNet>()
                        .map(|n| n.trunc())
                        .map_err(|_| format!("`{text}`: `{c}` is not a CIDR"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(NodeAddressSource::Within(nets));
        }
        if text == "kubernetes-internal-ip" {
            return Ok(NodeAddressSource::KubernetesInternalIp);
        }
        if let Some(dest) = text.strip_prefix("can-reach=") {
            let ip = dest.parse::<IpAddr>().map_err(|_| {
                format!("can-reach needs an IP address (host names are not resolved), got `{dest}`")
            })?;
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(format!("can-reach={ip}: not a unicast destination"));
            }
            return Ok(NodeAddressSource::CanReach(ip));
        }
        if let Ok(net) = text.parse::<IpNet>() {
            check_node_address(net.addr())?;
            return Ok(NodeAddressSource::Cidr(net));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            check_node_address(ip)?;
            return Ok(NodeAddressSource::Address(ip));
        }
        Err(format!(
            "`{text}` is neither an address (10.0.0.5/24) nor first-found, \
             interface=<regex>, skip-interface=<regex>, cidr=<cidr> or can-reach=<ip>"
        ))
    }
}

/// `eth.*,ens[0-9]+` as regexes anchored on the whole interface name.
fn interface_regexes(text: &str, list: &str) -> Result<Vec<Regex>, String> {
    let mut regexes = Vec::new();
    for re in list.split(',') {
        if re.is_empty() {
            return Err(format!("`{text}`: empty interface regex"));
        }
        // Anchored on the whole name: Calico matches anywhere in it, so its
        // `interface=eth.*` also picks `veth1234`; here it picks only `eth*`.
        let anchored = format!("^(?:{re})$");
        regexes.push(
            Regex::new(&anchored)
                .map_err(|e| format!("`{re}` is not a valid regex: {}", one_line(&e)))?,
        );
    }
    Ok(regexes)
}

/// The regex crate's syntax errors span several lines (pattern, caret, message); keep the
/// message so errors stay on one line.
fn one_line(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    last.trim().trim_start_matches("error: ").to_string()
}

fn check_node_address(ip: IpAddr) -> Result<(), String> {
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
        return Err(format!("{ip} cannot be a node's address"));
    }
    if let IpAddr::V4(v4) = ip {
        if v4.is_broadcast() {
            return Err(format!("{ip} cannot be a node's address"));
        }
    }
    Ok(())
}

/// How much routerd logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The level as `tracing` names it.
    pub fn as_tracing(self) -> tracing::Level {
        match self {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Trace => tracing::Level::TRACE,
        }
    }

    /// The lower-case name, as an `EnvFilter` directive takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "error" => Ok(LogLevel::Error),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            "trace" => Ok(LogLevel::Trace),
            _ => Err(format!(
                "`{text}` is not a log level (error, warn, info, debug, trace)"
            )),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (`tracing-subscriber`'s JSON layer): timestamp, level, target
    /// and the event's structured fields (peer, prefix, state...) as JSON fields.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("`{text}` is not a log format (text, json)")),
        }
    }
}

/// routerd's resolved settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The Node resource this daemon registers and reads.
    pub node_name: String,
    /// Where the node's IPv4 address comes from; [`Settings::node_ipv4`] resolves it.
    pub node_ip: NodeAddressSource,
    /// Where the node's IPv6 address comes from; `None` for no IPv6.
    pub node_ipv6: Option<NodeAddressSource>,
    /// Overrides the AS of the Node resource when set.
    pub as_number: Option<u32>,
    /// Datastore address for `datastore::open`.
    pub datastore: String,
    pub control_socket: PathBuf,
    /// `None`: no health/metrics server.
    pub health_listen: Option<SocketAddr>,
    /// `None`: no metrics server of its own (the health server still has /metrics).
    pub metrics_listen: Option<SocketAddr>,
    pub log_level: LogLevel,
    /// No flag, variable or file line set the log level: the datastore's BGPConfiguration
    /// `logSeverityScreen` governs it (as calico-node's), from the default Info.
    pub log_level_from_datastore: bool,
    pub log_format: LogFormat,
    /// rtnetlink protocol id of routerd's routes ([`parse_route_protocol`] says which ids).
    pub route_protocol: u8,
    /// The graceful-shutdown drain on SIGTERM (`shutdown-drain-time`); zero: none.
    pub shutdown_drain_time: Duration,
    /// The settings file that was read, if any.
    pub config_file: Option<PathBuf>,
}

/// One setting's value as found in some layer, not yet checked.
struct Found {
    text: String,
    origin: Origin,
}

impl Settings {
    /// Resolves the process's own command line and `ROUTERD_*` environment (and the file they
    /// name). On `Err(SettingsError::Usage(e))` call `e.exit()` (it also covers `--help`).
    pub fn from_process() -> Result<Settings, SettingsError> {
        let env: HashMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) || k == DATASTORE_TYPE)
            .collect();
        Self::from_sources(std::env::args_os(), &env)
    }

    /// Resolves an explicit argv (program name first) and environment map, reading the
    /// settings file named by `--config` or `ROUTERD_CONFIG`.
    pub fn from_sources<I, T>(
        argv: I,
        env: &HashMap<String, String>,
    ) -> Result<Settings, SettingsError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let flags = Flags::try_parse_from(argv)?;
        let config = match &flags.config {
            Some(path) => Some(path.clone()),
            None => env_value(env, "config").map(|(text, _)| PathBuf::from(text)),
        };
        let file = match &config {
            Some(path) => Some(FileSettings::load(path)?),
            None => None,
        };
        let mut settings = Self::resolve(&flags, env, file.as_ref())?;
        settings.config_file = config;
        Ok(settings)
    }

    /// Combines the layers: `flags` over `env` (full variable names, e.g. `ROUTERD_AS`) over
    /// `file` over the defaults, checking each value where it was found.
    pub fn resolve(
        flags: &Flags,
        env: &HashMap<String, String>,
        file: Option<&FileSettings>,
    ) -> Result<Settings, SettingsError> {
        let pick = |flag: &'static str,
                    from_flags: &Option<String>,
                    from_file: Option<(String, std::ops::Range<usize>)>|
         -> Option<Found> {
            if let Some(text) = from_flags {
                return Some(Found {
                    text: text.clone(),
                    origin: Origin::Flag(flag),
                });
            }
            if let Some((text, name)) = env_value(env, flag) {
                return Some(Found {
                    text,
                    origin: Origin::Env(name),
                });
            }
            let (text, span) = from_file?;
            let origin = file.map(|f| f.origin(flag, span))?;
            Some(Found { text, origin })
        };
        let s = |v: &Option<Spanned<String>>| v.as_ref().map(|v| (v.get_ref().clone(), v.span()));
        let n = |v: &Option<Spanned<FileNumber>>| {
            v.as_ref().map(|v| (v.get_ref().to_string(), v.span()))
        };
        let f = file.cloned().unwrap_or_default();

        let node_ip = match pick("node-ip", &flags.node_ip, s(&f.node_ip)) {
            Some(found) => check(found, |t| parse_address_source(t, Family::V4))?,
            None => NodeAddressSource::FirstFound,
        };
        let node_ipv6 = match pick("node-ipv6", &flags.node_ipv6, s(&f.node_ipv6)) {
            Some(found) => check(found, |t| {
                if t.trim() == "none" {
                    Ok(None)
                } else {
                    parse_address_source(t, Family::V6).map(Some)
                }
            })?,
            None => None,
        };
        let as_number = pick("as", &flags.as_number, n(&f.as_number))
            .map(|found| check(found, parse_as_number))
            .transpose()?;
        let datastore = match pick("datastore", &flags.datastore, s(&f.datastore)) {
            Some(found) => check(found, parse_datastore)?,
            None => match env.get(DATASTORE_TYPE).filter(|t| !t.is_empty()) {
                Some(t) => check(
                    Found {
                        text: t.clone(),
                        origin: Origin::Env(DATASTORE_TYPE.into()),
                    },
                    datastore::address_of_datastore_type,
                )?,
                None => DEFAULT_DATASTORE.to_string(),
            },
        };
        let control_socket = match pick(
            "control-socket",
            &flags.control_socket,
            s(&f.control_socket),
        ) {
            Some(found) => check(found, parse_socket_path)?,
            None => PathBuf::from(DEFAULT_CONTROL_SOCKET),
        };
        let health_listen = match pick("health-listen", &flags.health_listen, s(&f.health_listen)) {
            Some(found) => check(found, parse_health_listen)?,
            None => Some(DEFAULT_HEALTH_LISTEN),
        };
        let metrics_listen = match pick(
            "metrics-listen",
            &flags.metrics_listen,
            s(&f.metrics_listen),
        ) {
            Some(found) => check(found, parse_health_listen)?,
            None => Some(DEFAULT_METRICS_LISTEN),
        };
        let (log_level, log_level_from_datastore) =
            match pick("log-level", &flags.log_level, s(&f.log_level)) {
                Some(found) => (check(found, |t| t.parse())?, false),
                None => (LogLevel::Info, true),
            };
        let log_format = match pick("log-format", &flags.log_format, s(&f.log_format)) {
            Some(found) => check(found, |t| t.parse())?,
            None => LogFormat::Text,
        };
        let node_name = pick("node-name", &flags.node_name, s(&f.node_name))
            .map(|found| check(found, parse_node_name))
            .transpose()?;
        let route_protocol = match pick(
            "route-protocol",
            &flags.route_protocol,
            n(&f.route_protocol),
        ) {
            Some(found) => check(found, parse_route_protocol)?,
            None => DEFAULT_ROUTE_PROTOCOL,
        };
        let shutdown_drain_time = match pick(
            "shutdown-drain-time",
            &flags.shutdown_drain_time,
            n(&f.shutdown_drain_time),
        ) {
            Some(found) => check(found, parse_drain_time)?,
            None => Duration::ZERO,
        };
        // Last, so that a refused value is reported before a hostname problem.
        let node_name = match node_name {
            Some(name) => name,
            None => default_node_name()?,
        };
        Ok(Settings {
            node_name,
            node_ip,
            node_ipv6,
            as_number,
            datastore,
            control_socket,
            health_listen,
            metrics_listen,
            log_level,
            log_level_from_datastore,
            log_format,
            route_protocol,
            shutdown_drain_time,
            config_file: file.map(|f| f.path.clone()),
        })
    }

    /// The node's IPv4 address with its prefix length, from [`Settings::node_ip`], looked up
    /// in the calling thread's network namespace.
    pub fn node_ipv4(&self) -> Result<Ipv4Net, SettingsError> {
        self.node_ipv4_with(&[])
    }

    /// Whether an address setting is `kubernetes-internal-ip`, so the caller must read the
    /// node's `InternalIP`s (see [`Settings::node_ipv4_with`]).
    pub fn needs_internal_ips(&self) -> bool {
        self.node_ip == NodeAddressSource::KubernetesInternalIp
            || self.node_ipv6.as_ref() == Some(&NodeAddressSource::KubernetesInternalIp)
    }

    /// As [`Settings::node_ipv4`], with the node's `InternalIP`s for
    /// `kubernetes-internal-ip`.
    pub fn node_ipv4_with(&self, internal_ips: &[IpAddr]) -> Result<Ipv4Net, SettingsError> {
        match autodetect_with(&self.node_ip, Family::V4, internal_ips).map_err(|message| {
            SettingsError::Autodetect {
                setting: "node-ip",
                source_text: self.node_ip.to_string(),
                message,
            }
        })? {
            IpNet::V4(net) => Ok(net),
            IpNet::V6(net) => Err(SettingsError::Autodetect {
                setting: "node-ip",
                source_text: self.node_ip.to_string(),
                message: format!("{net} is not an IPv4 address"),
            }),
        }
    }

    /// The node's IPv6 address, if one is configured (see [`Settings::node_ipv4`]).
    pub fn node_ipv6(&self) -> Result<Option<Ipv6Net>, SettingsError> {
        self.node_ipv6_with(&[])
    }

    /// As [`Settings::node_ipv6`], with the node's `InternalIP`s.
    pub fn node_ipv6_with(
        &self,
        internal_ips: &[IpAddr],
    ) -> Result<Option<Ipv6Net>, SettingsError> {
        let Some(source) = &self.node_ipv6 else {
            return Ok(None);
        };
        let error = |message| SettingsError::Autodetect {
            setting: "node-ipv6",
            source_text: source.to_string(),
            message,
        };
        match autodetect_with(source, Family::V6, internal_ips).map_err(error)? {
            IpNet::V6(net) => Ok(Some(net)),
            IpNet::V4(net) => Err(error(format!("{net} is not an IPv6 address"))),
        }
    }
}

/// The value of `ROUTERD_<FLAG>` in `env`, with the variable's name; empty counts as unset.
fn env_value(env: &HashMap<String, String>, flag: &str) -> Option<(String, String)> {
    let name = env_name(flag);
    let value = env.get(&name)?;
    (!value.is_empty()).then(|| (value.clone(), name))
}

fn check<T>(
    found: Found,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, SettingsError> {
    parse(&found.text).map_err(|message| SettingsError::Invalid {
        origin: found.origin,
        message,
    })
}

/// An address family: IPAM's, the one family type of the project.
pub use ipam::IpFamily as Family;

fn parse_address_source(text: &str, family: Family) -> Result<NodeAddressSource, String> {
    if family == Family::V4 && text.trim() == "none" {
        return Err("routerd needs an IPv4 address (IPv6-only nodes are not supported)".into());
    }
    let source: NodeAddressSource = text.parse()?;
    let explicit = match &source {
        NodeAddressSource::Cidr(net) => Some(net.addr()),
        NodeAddressSource::Address(ip) | NodeAddressSource::CanReach(ip) => Some(*ip),
        _ => None,
    };
    if let Some(ip) = explicit {
        if !family.holds(ip) {
            return Err(format!("{ip} is not an {} address", family));
        }
    }
    Ok(source)
}

/// A node name must be usable as a Kubernetes object name (RFC 1123 subdomain): lower-case
/// letters, digits, `-` and `.`, starting and ending alphanumeric, at most 253 bytes.
pub fn parse_node_name(text: &str) -> Result<String, String> {
    let name = text.trim();
    if name.is_empty() {
        return Err("empty node name".into());
    }
    if name.len() > 253 {
        return Err(format!(
            "node name is {} bytes long, the limit is 253",
            name.len()
        ));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !name.chars().all(ok_char)
        || !name.starts_with(alnum)
        || !name.ends_with(alnum)
        || name.contains("..")
    {
        return Err(format!(
            "`{name}` is not a valid node name (lower-case letters, digits, '-' and '.', \
             starting and ending with a letter or digit)"
        ));
    }
    Ok(name.to_string())
}

/// The default node name: the kernel's hostname (of our UTS namespace), lower-cased as
/// Calico does.
fn default_node_name() -> Result<String, SettingsError> {
    let host =
        std::fs::read_to_string("/proc/sys/kernel/hostname").map_err(SettingsError::Hostname)?;
    parse_node_name(&host.trim().to_ascii_lowercase()).map_err(|message| SettingsError::Invalid {
        origin: Origin::Default("node-name from the hostname"),
        message,
    })
}

/// An AS number: plain (`64512`) or asdot (`1.10` = 65546, RFC 5396). 0 (RFC 7607) and
/// AS_TRANS 23456 (RFC 6793, the 2-byte stand-in for 4-byte ASes) are refused.
pub fn parse_as_number(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let asn = match t.split_once('.') {
        Some((high, low)) => {
            let high: u16 = high
                .parse()
                .map_err(|_| format!("`{t}` is not an AS number"))?;
            let low: u16 = low
                .parse()
                .map_err(|_| format!("`{t}` is not an AS number"))?;
            (u32::from(high) << 16) | u32::from(low)
        }
        None => t
            .parse::<u32>()
            .map_err(|_| format!("`{t}` is not an AS number (1-4294967295 or asdot like 1.10)"))?,
    };
    match asn {
        0 => Err("AS 0 is reserved (RFC 7607)".into()),
        23456 => Err("AS 23456 is AS_TRANS (RFC 6793), not a real AS".into()),
        asn => Ok(asn),
    }
}

/// A datastore address: `file:<dir>` (empty dir = the default directory), `memory:`, or
/// `kubernetes:` optionally followed by a kubeconfig path. Opening it is the datastore's job.
pub fn parse_datastore(text: &str) -> Result<String, String> {
    let t = text.trim();
    let ok = t.starts_with("file:")
        || t == "memory:"
        || t.starts_with("kubernetes:")
        || t.starts_with("etcd:");
    if ok {
        Ok(t.to_string())
    } else {
        Err(format!(
            "`{t}` is not a datastore address (file:<dir>, memory:, kubernetes:[<kubeconfig>], \
             etcd:[<endpoint>,...])"
        ))
    }
}

fn parse_socket_path(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err("empty path".into());
    }
    // sockaddr_un's sun_path holds 108 bytes including the terminating NUL.
    if text.len() > 107 {
        return Err(format!(
            "`{text}` is {} bytes long; a Unix socket path holds at most 107",
            text.len()
        ));
    }
    Ok(PathBuf::from(text))
}

/// `<ip>:<port>` (`[fd00::1]:9099` for IPv6) or `none` for no health server.
pub fn parse_health_listen(text: &str) -> Result<Option<SocketAddr>, String> {
    let t = text.trim();
    if t == "none" {
        return Ok(None);
    }
    t.parse::<SocketAddr>()
        .map(Some)
        .map_err(|_| format!("`{t}` is not <ip>:<port> (e.g. 127.0.0.1:9099, [::1]:9099) or none"))
}

/// rtnetlink protocol ids other routing software on a node may own (linux/rtnetlink.h
/// RTPROT_GATED..RTPROT_KEEPALIVED, BABEL, OPENR, BGP, ISIS, OSPF, RIP, EIGRP).
const FOREIGN_PROTOCOLS: &[(u8, &str)] = &[
    (8, "gated"),
    (9, "ra"),
    (10, "mrt"),
    (11, "zebra"),
    (12, "bird"),
    (13, "dnrouted"),
    (14, "xorp"),
    (15, "ntk"),
    (16, "dhcp"),
    (17, "mrouted"),
    (18, "keepalived"),
    (42, "babel"),
    (99, "openr"),
    (186, "bgp"),
    (187, "isis"),
    (188, "ospf"),
    (189, "rip"),
    (192, "eigrp"),
];

/// The protocol id routerd marks its routes with.
///
/// routerd treats every route with its id as its own: on start-up it deletes those it does
/// not want. So the id must not be one the kernel or other software uses: 0-4 are the
/// kernel's (RTPROT_UNSPEC, REDIRECT, KERNEL, BOOT, STATIC: ICMP redirects, connected
/// routes, `ip route add` without `proto`), and rtnetlink.h assigns ids to other daemons
/// (BIRD 12, zebra/FRR 11 and 186-192, DHCP clients 16, keepalived 18, ...); taking theirs
/// would delete their routes. Every other id (5-255; the kernel passes values above
/// RTPROT_STATIC through uninterpreted) is accepted.
/// The drain time: whole seconds, bare (`10`) or as a duration (`10s`, `1m`); at most an
/// hour, since the pod's termination grace period must cover it.
pub fn parse_drain_time(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let d = match t.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            datastore::resource::parse_duration(t, "shutdown-drain-time").map_err(|e| e.message)?
        }
    };
    if d.subsec_nanos() != 0 || d > Duration::from_secs(3600) {
        return Err(format!(
            "`{t}` is not a whole number of seconds between 0 and 1h"
        ));
    }
    Ok(d)
}

pub fn parse_route_protocol(text: &str) -> Result<u8, String> {
    let t = text.trim();
    let id: u8 = t
        .parse()
        .map_err(|_| format!("`{t}` is not a protocol id (5-255)"))?;
    if id <= 4 {
        return Err(format!(
            "{id} is the kernel's own (RTPROT_UNSPEC/REDIRECT/KERNEL/BOOT/STATIC); use 5-255"
        ));
    }
    if let Some((_, owner)) = FOREIGN_PROTOCOLS.iter().find(|(p, _)| *p == id) {
        return Err(format!(
            "{id} is the protocol id of `{owner}` (linux/rtnetlink.h); routerd would delete its routes"
        ));
    }
    Ok(id)
}

pub use crate::host_addresses::{interface_addresses, InterfaceAddress};

/// Whether an address can be a node's underlay address: not loopback, link-local,
/// multicast or unspecified.
fn usable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback() || v4.is_link_local() || v4.is_multicast() || v4.is_unspecified())
        }
        IpAddr::V6(v6) => {
            let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
            !(v6.is_loopback() || link_local || v6.is_multicast() || v6.is_unspecified())
        }
    }
}

/// Resolves a [`NodeAddressSource`] to an address of `family` with its prefix length, from
/// the interfaces of the calling thread's network namespace. Only up interfaces count; the
/// message says what was looked for when nothing fits.
pub fn autodetect(source: &NodeAddressSource, family: Family) -> Result<IpNet, String> {
    autodetect_with(source, family, &[])
}

/// As [`autodetect`]; `internal_ips` are the node's `InternalIP`s (its Kubernetes Node's
/// `status.addresses`), which `kubernetes-internal-ip` picks from: the first of the family,
/// with the prefix length of the interface carrying it (a host prefix, with a warning, when
/// no interface does), as Calico's method.
pub fn autodetect_with(
    source: &NodeAddressSource,
    family: Family,
    internal_ips: &[IpAddr],
) -> Result<IpNet, String> {
    if let NodeAddressSource::Cidr(net) = source {
        return Ok(*net);
    }
    let all = interface_addresses()?;
    let candidates = all
        .iter()
        .filter(|a| a.up && family.holds(a.address.addr()) && usable(a.address.addr()));
    match source {
        NodeAddressSource::Cidr(net) => Ok(*net),
        NodeAddressSource::Address(ip) => Ok(all
            .iter()
            .find(|a| a.address.addr() == *ip)
            .map(|a| a.address)
            .unwrap_or_else(|| {
                tracing::warn!(address = %ip, "no interface carries the node address; using a host prefix");
                IpNet::from(*ip)
            })),
        NodeAddressSource::FirstFound | NodeAddressSource::SkipInterface(_) => {
            let mut excluded: Vec<Regex> = EXCLUDED_INTERFACES
                .iter()
                .filter_map(|re| Regex::new(re).ok())
                .collect();
            if let NodeAddressSource::SkipInterface(skip) = source {
                excluded.extend(skip.iter().cloned());
            }
            candidates
                .filter(|a| !excluded.iter().any(|re| re.is_match(&a.interface)))
                .map(|a| a.address)
                .next()
                .ok_or_else(|| {
                    format!(
                        "no up interface has a usable {} address (loopback, link-local and \
                         container/tunnel interfaces such as docker*, veth*, cali*, tunl* \
                         are skipped)",
                        family
                    )
                })
        }
        NodeAddressSource::Interface(regexes) => candidates
            .filter(|a| regexes.iter().any(|re| re.is_match(&a.interface)))
            .map(|a| a.address)
            .next()
            .ok_or_else(|| {
                let names: Vec<&str> = all
                    .iter()
                    .map(|a| a.interface.as_str())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                format!(
                    "no up interface whose name matches has a usable {} address (interfaces \
                     with addresses: {})",
                    family,
                    names.join(", ")
                )
            }),
        NodeAddressSource::Within(nets) => candidates
            .filter(|a| nets.iter().any(|n| n.contains(&a.address.addr())))
            .map(|a| a.address)
            .next()
            .ok_or_else(|| {
                let nets: Vec<String> = nets.iter().map(ToString::to_string).collect();
                format!(
                    "no up interface has a usable {} address within {}",
                    family,
                    nets.join(", ")
                )
            }),
        NodeAddressSource::KubernetesInternalIp => {
            let ip = internal_ips
                .iter()
                .copied()
                .find(|ip| family.holds(*ip))
                .ok_or_else(|| {
                    format!(
                        "the node's Kubernetes Node reports no {family} InternalIP (its \
                         status.addresses; kubernetes-internal-ip needs the Kubernetes \
                         datastore and a registered Node)"
                    )
                })?;
            Ok(all
                .iter()
                .find(|a| a.address.addr() == ip)
                .map(|a| a.address)
                .unwrap_or_else(|| {
                    tracing::warn!(address = %ip, "no interface carries the node's InternalIP; using a host prefix");
                    IpNet::from(ip)
                }))
        }
        NodeAddressSource::CanReach(dest) => {
            if !family.holds(*dest) {
                return Err(format!("{dest} is not an {} address", family));
            }
            let local = source_address_towards(*dest)?;
            all.iter()
                .find(|a| a.address.addr() == local)
                .map(|a| a.address)
                .ok_or_else(|| format!("the kernel picks {local} to reach {dest}, but no interface carries it"))
        }
    }
}

/// The source address the kernel would use to reach `dest`: connecting a UDP socket runs
/// the route lookup and source selection (RFC 6724 for IPv6) without sending anything.
fn source_address_towards(dest: IpAddr) -> Result<IpAddr, String> {
    let bind: SocketAddr = match dest {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(bind).map_err(|e| format!("opening a UDP socket: {e}"))?;
    // The port does not matter: connect() on UDP only selects the route.
    socket
        .connect(SocketAddr::new(dest, 9))
        .map_err(|e| format!("no route to {dest}: {e}"))?;
    socket
        .local_addr()
        .map(|a| a.ip())
        .map_err(|e| format!("reading the chosen source address: {e}"))
}

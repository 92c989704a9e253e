//! `routectl`, the operator's CLI: calicoctl's commands and output formats over routerd's
//! datastore and control socket, so an operator (or a script) used to calicoctl finds the
//! same words and the same tables.
//!
//! - `get | create | apply | replace | delete` on every kind ([`resources`]), with calicoctl's
//!   kind aliases ([`kinds`]), `-f file|-`, `--skip-exists` / `--skip-not-exists`, `-o
//!   ps|wide|yaml|json`, and calicoctl v1's `--scope=global|node --node=<name>` addressing of
//!   BGP peers by IP.
//!   `-o custom-columns=...` and `-o go-template=...` are in [`output`].
//! - `patch` and `label` ([`edit`]), `validate` and `convert` ([`manifests`]), `version`
//!   ([`version`]).
//! - `node status` ([`node_status`]): routerd's report from its control socket;
//!   `node checksystem` ([`checksystem`]) and `node diags` ([`diags`]).
//! - `ipam show [--show-blocks | --show-borrowed | --ip | --show-configuration] | check |
//!   release --ip` ([`ipam`]), `ipam split | configure` ([`ipam_admin`]).
//!
//! Every command is a function from its inputs (datastore, parsed manifests, a status, a
//! clock) to text and an exit status; [`run`] only wires them to the streams, so the formats
//! are unit- and golden-testable and the binary (`src/bin/routectl.rs`) stays a few lines.
//! Failures print one line naming what failed (`BGPPeer/rack1-tor: spec.asNumber: ...`) and
//! exit with status 1; nothing a user types or a datastore holds makes it panic.

pub mod checksystem;
pub mod diags;
pub mod edit;
pub mod ipam;
pub mod ipam_admin;
pub mod kinds;
pub mod manifests;
pub mod node_status;
pub mod output;
pub mod resources;
pub mod routes;
pub mod table;
pub mod version;

use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};

use crate::status::{self, StatusError, DEFAULT_CONTROL_SOCKET};
use datastore::ipam_store::DatastoreIpam;
use datastore::resource::{parse_manifests, Kind, Resource, ResourceError};
use datastore::{Datastore, DatastoreError};

use self::resources::{
    OutputFormat, PeerScope, Printed, ResourceKey, WriteAction, WriteOptions, WriteReport,
};

/// How long `node status` waits for routerd's answer.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Failures of a routectl command; each displays as the one line the operator sees.
#[derive(Debug, thiserror::Error)]
pub enum RoutectlError {
    #[error("Failed to create routerd datastore client for {address:?}: {source}")]
    OpenDatastore {
        address: String,
        #[source]
        source: Box<DatastoreError>,
    },
    #[error("datastore: {0}")]
    Datastore(#[source] Box<DatastoreError>),
    #[error("Failed to execute command: cannot read {path}: {source}")]
    ReadFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Failed to execute command: {0}")]
    Manifest(#[source] Box<ResourceError>),
    #[error("resource type '{word}' is not supported; valid resource types are: {known}")]
    UnknownKind { word: String, known: String },
    #[error("{0}")]
    Usage(String),
    #[error("stored {id} is unreadable: {source}")]
    Stored {
        id: String,
        #[source]
        source: Box<ResourceError>,
    },
    #[error("IPAM: {0}")]
    Ipam(#[source] Box<::ipam::IpamError>),
    #[error("Error querying routerd: {0}")]
    Status(#[source] Box<StatusError>),
}

// Errors are boxed so that every `Result` of the CLI stays small.
impl From<crate::node_removal::NodeRemovalError> for RoutectlError {
    fn from(e: crate::node_removal::NodeRemovalError) -> Self {
        match e {
            crate::node_removal::NodeRemovalError::Datastore(e) => e.into(),
            crate::node_removal::NodeRemovalError::Ipam(e) => RoutectlError::Ipam(Box::new(e)),
        }
    }
}

impl From<DatastoreError> for RoutectlError {
    fn from(e: DatastoreError) -> Self {
        RoutectlError::Datastore(Box::new(e))
    }
}

impl From<ResourceError> for RoutectlError {
    fn from(e: ResourceError) -> Self {
        RoutectlError::Manifest(Box::new(e))
    }
}

impl From<::ipam::IpamError> for RoutectlError {
    fn from(e: ::ipam::IpamError) -> Self {
        RoutectlError::Ipam(Box::new(e))
    }
}

/// routectl's command line.
#[derive(Debug, Parser)]
#[command(
    name = "routectl",
    version,
    about = "Manage routerd's resources and IPAM, and show a node's BGP status (calicoctl's commands)"
)]
pub struct Cli {
    /// Where resources live: `file:<dir>` (the embedded datastore shared with routerd),
    /// `kubernetes:[<kubeconfig>]` or `etcd:[<endpoint>,...]` [default: file:/var/lib/routerd,
    /// or what Calico's DATASTORE_TYPE names]
    #[arg(long, global = true, env = "ROUTERD_DATASTORE")]
    pub datastore: Option<String>,

    /// routerd's control socket, for `node status`.
    #[arg(long, global = true, env = "ROUTERD_CONTROL_SOCKET", default_value = DEFAULT_CONTROL_SOCKET)]
    pub control_socket: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Display resources by kind and name, or from a file.
    Get(GetArgs),
    /// Create resources from a file; fails for any that exist.
    Create(CreateArgs),
    /// Create or update resources from a file.
    Apply(FileArgs),
    /// Update existing resources from a file; fails for any that do not exist.
    Replace(FileArgs),
    /// Delete resources by kind and name, or from a file.
    Delete(DeleteArgs),
    /// Patch a pre-existing resource in place (a merge patch of its manifest).
    Patch(PatchArgs),
    /// Add, update or remove a label of a resource.
    Label(LabelArgs),
    /// Check manifests without a datastore, naming each bad field.
    Validate(FileArgs),
    /// Rewrite manifests as normalised projectcalico.org/v3 YAML or JSON.
    Convert(ConvertArgs),
    /// routectl's version, and the version of this node's routerd.
    Version(VersionArgs),
    /// Commands about this node's routerd.
    #[command(subcommand)]
    Node(NodeCommand),
    /// IP address management.
    #[command(subcommand)]
    Ipam(IpamCommand),
}

/// `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The kind (node, bgpPeer, ippool, bgpConfiguration, bgpFilter; plural and short forms).
    pub kind: Option<String>,
    /// Names (peer IPs with --scope); all resources of the kind when omitted.
    pub names: Vec<String>,
    /// Manifest file of the resources to get (`-` for stdin).
    #[arg(short = 'f', long = "filename")]
    pub filename: Option<String>,
    /// Output format: ps, wide, yaml, json.
    #[arg(short = 'o', long = "output", default_value = "ps")]
    pub output: String,
    /// A named resource that does not exist is not an error.
    #[arg(long)]
    pub skip_not_exists: bool,
    /// calicoctl v1: which BGP peers (global, or node with --node); names are then peer IPs.
    #[arg(long, value_enum)]
    pub scope: Option<PeerScope>,
    /// calicoctl v1: the node of node-scoped BGP peers.
    #[arg(long)]
    pub node: Option<String>,
}

/// `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub file: FileArgs,
    /// A resource that already exists counts as created.
    #[arg(long)]
    pub skip_exists: bool,
}

/// A manifest file argument.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// Manifest file (YAML or JSON, several documents allowed; `-` for stdin).
    #[arg(short = 'f', long = "filename")]
    pub filename: String,
}

/// `delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The kind.
    pub kind: Option<String>,
    /// Names (a peer IP with --scope).
    pub names: Vec<String>,
    /// Manifest file of the resources to delete (`-` for stdin).
    #[arg(short = 'f', long = "filename")]
    pub filename: Option<String>,
    /// A resource that does not exist counts as deleted.
    #[arg(long)]
    pub skip_not_exists: bool,
    /// calicoctl v1: the scope of the BGP peer named by its IP (global, or node with --node).
    #[arg(long, value_enum)]
    pub scope: Option<PeerScope>,
    /// calicoctl v1: the node of a node-scoped BGP peer.
    #[arg(long)]
    pub node: Option<String>,
}

/// `patch`.
#[derive(Debug, Args)]
pub struct PatchArgs {
    /// The kind.
    pub kind: String,
    /// The resource's name.
    pub name: String,
    /// The change: a partial resource (JSON or YAML), e.g. `{"spec":{"asNumber":"65001"}}`.
    #[arg(short = 'p', long = "patch")]
    pub patch: String,
    /// Patch type: strategic (calicoctl's default, applied as a merge patch), merge (RFC
    /// 7386) or json (RFC 6902 operations).
    #[arg(short = 't', long = "type", default_value = "strategic")]
    pub patch_type: String,
    /// Namespace of a namespaced resource (WorkloadEndpoint).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

/// `label`.
#[derive(Debug, Args)]
pub struct LabelArgs {
    /// The kind.
    pub kind: String,
    /// The resource's name.
    pub name: String,
    /// `key=value`, or `key` with --remove.
    pub label: String,
    /// Replace the value of a key that is already present.
    #[arg(long)]
    pub overwrite: bool,
    /// Remove the key.
    #[arg(long)]
    pub remove: bool,
    /// Namespace of a namespaced resource (WorkloadEndpoint).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

/// `convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    #[command(flatten)]
    pub file: FileArgs,
    /// Output format: yaml or json.
    #[arg(short = 'o', long = "output", default_value = "yaml")]
    pub output: String,
}

/// `version`.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Only this routectl's version.
    #[arg(long)]
    pub client: bool,
}

/// `node ...`.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// routerd's state and its BGP sessions.
    Status,
    /// The BGP paths routerd holds, with the best one and why (as `birdc show route all`):
    /// a PREFIX for exactly that prefix, an ADDRESS for the longest prefix containing it.
    Routes {
        /// `10.65.0.0/26`, or `10.65.0.7`; all paths when left out.
        target: Option<String>,
        /// `json` for the control socket's answer as it is.
        #[arg(short = 'o', long)]
        output: Option<String>,
    },
    /// Verify the host is able to run routerd (kernel, encapsulations, NAT, forwarding).
    Checksystem,
    /// Gather a diagnostics bundle of this node (routerd's status, the kernel's tables, logs).
    Diags {
        /// The directory holding routerd's logs.
        #[arg(long, default_value = diags::DEFAULT_LOG_DIR)]
        log_dir: PathBuf,
    },
}

/// `ipam ...`.
#[derive(Debug, Subcommand)]
pub enum IpamCommand {
    /// Address usage per pool (and per block).
    Show {
        /// Also show each block.
        #[arg(long)]
        show_blocks: bool,
        /// Report whether this address is assigned, and to what.
        #[arg(long, conflicts_with = "show_blocks")]
        ip: Option<IpAddr>,
        /// List the addresses nodes borrowed from blocks other nodes own.
        #[arg(long, conflicts_with_all = ["show_blocks", "ip"])]
        show_borrowed: bool,
        /// Show the IPAM settings (`ipam configure`).
        #[arg(long, conflicts_with_all = ["show_blocks", "ip", "show_borrowed"])]
        show_configuration: bool,
    },
    /// Split an IP pool into the specified number of smaller IP pools.
    Split {
        /// How many pools (a power of 2).
        number: String,
        /// CIDR of the IP pool to split.
        #[arg(long, conflicts_with = "name", required_unless_present = "name")]
        cidr: Option<String>,
        /// Name of the IP pool to split.
        #[arg(long)]
        name: Option<String>,
    },
    /// Configure IPAM.
    Configure {
        /// Set StrictAffinity to true/false (never borrow from other nodes' blocks).
        #[arg(long)]
        strictaffinity: Option<String>,
        /// calicoctl's; routerd's allocator has no such limit (refused).
        #[arg(long, hide = true)]
        max_blocks_per_host: Option<String>,
    },
    /// Look for leaked, dangling and doubly assigned addresses; exit status 1 if any.
    Check,
    /// Release one address.
    Release {
        /// The address.
        #[arg(long)]
        ip: IpAddr,
    },
}

/// The streams a command reads and writes.
pub struct Streams<'a> {
    pub stdin: &'a mut dyn Read,
    pub stdout: &'a mut dyn Write,
    pub stderr: &'a mut dyn Write,
}

impl std::fmt::Debug for Streams<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams").finish_non_exhaustive()
    }
}

/// Runs a command line; returns the process exit status (0 success, 1 failure).
pub fn run(cli: &Cli, io: &mut Streams<'_>) -> i32 {
    match execute(cli, io) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(io.stderr, "{e}");
            1
        }
    }
}

/// Opens the datastore at `address`. Only commands that write new resources (`create`,
/// `apply`) may bring a `file:` datastore's directory into being: for the others a missing
/// directory is almost always a mistyped address, and an empty listing would hide it.
fn open_datastore(cli: &Cli, may_create: bool) -> Result<Arc<dyn Datastore>, RoutectlError> {
    let address = &cli.datastore_address()?;
    if let Some(dir) = address.strip_prefix("file:") {
        let dir = if dir.is_empty() {
            datastore::DEFAULT_DIR
        } else {
            dir
        };
        if !may_create && !std::path::Path::new(dir).is_dir() {
            return Err(RoutectlError::Usage(format!(
                "Failed to create routerd datastore client for {address:?}: directory {dir} does not exist \
                 (routerd, or routectl create/apply, makes it)"
            )));
        }
    }
    datastore::open(address).map_err(|source| RoutectlError::OpenDatastore {
        address: address.to_string(),
        source: Box::new(source),
    })
}

fn parse_kind(word: &str) -> Result<Kind, RoutectlError> {
    kinds::parse_kind(word).ok_or_else(|| RoutectlError::UnknownKind {
        word: word.to_string(),
        known: kinds::known_kinds(),
    })
}

/// Reads and validates the manifests of `-f` (`-` is stdin). An empty file is an error, as
/// with calicoctl.
/// Prints an edit's success line, or its error after calicoctl's `prefix`; the exit status.
fn edit_outcome(io: &mut Streams<'_>, done: Result<String, edit::EditError>, prefix: &str) -> i32 {
    match done {
        Ok(line) => {
            write_out(io, &line, "");
            0
        }
        Err(e) => {
            write_out(io, "", &format!("{prefix}{e}\n"));
            1
        }
    }
}

fn read_text(path: &str, stdin: &mut dyn Read) -> Result<String, RoutectlError> {
    let read_err = |source| RoutectlError::ReadFile {
        path: path.to_string(),
        source,
    };
    if path == "-" {
        let mut s = String::new();
        stdin.read_to_string(&mut s).map_err(read_err)?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).map_err(read_err)
    }
}

fn read_manifests(path: &str, stdin: &mut dyn Read) -> Result<Vec<Resource>, RoutectlError> {
    let text = read_text(path, stdin)?;
    let resources = parse_manifests(&text)?;
    if resources.is_empty() {
        return Err(RoutectlError::Usage(format!(
            "No resources specified in file {path}"
        )));
    }
    Ok(resources)
}

fn write_out(io: &mut Streams<'_>, stdout: &str, stderr: &str) {
    let _ = io.stdout.write_all(stdout.as_bytes());
    let _ = io.stderr.write_all(stderr.as_bytes());
}

/// Removes what each existing node of `names` takes with it ([`crate::node_removal`]) before the
/// Node records are deleted; one summary line per node that had something.
fn remove_nodes_state(ds: &Arc<dyn Datastore>, names: &[String]) -> Result<String, RoutectlError> {
    let mut out = String::new();
    for name in names {
        match ds.get(Kind::Node.as_str(), name) {
            Ok(_) => {}
            Err(DatastoreError::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
        if let Some(line) = crate::node_removal::remove_node_state(ds, name)?.summary(name) {
            out += &line;
            out.push('\n');
        }
    }
    Ok(out)
}

fn report(io: &mut Streams<'_>, report: &WriteReport) -> i32 {
    let (out, err, ok) = report.render();
    write_out(io, &out, &err);
    i32::from(!ok)
}

fn check_scope_kind(
    kind: Kind,
    scope: Option<PeerScope>,
    node: Option<&String>,
) -> Result<bool, RoutectlError> {
    let scoped = scope.is_some() || node.is_some();
    if scoped && kind != Kind::BgpPeer {
        return Err(RoutectlError::Usage(format!(
            "--scope and --node apply to bgpPeer only, not {kind}"
        )));
    }
    Ok(scoped)
}

impl Cli {
    /// The datastore address: `--datastore` or `ROUTERD_DATASTORE`, else Calico's
    /// `DATASTORE_TYPE` (`etcdv3`, `kubernetes`), else the embedded default.
    pub fn datastore_address(&self) -> Result<String, RoutectlError> {
        if let Some(address) = &self.datastore {
            return Ok(address.clone());
        }
        match std::env::var("DATASTORE_TYPE") {
            Ok(t) if !t.is_empty() => datastore::address_of_datastore_type(&t)
                .map_err(|e| RoutectlError::Usage(format!("DATASTORE_TYPE: {e}"))),
            _ => Ok(format!("file:{}", datastore::DEFAULT_DIR)),
        }
    }
}

fn execute(cli: &Cli, io: &mut Streams<'_>) -> Result<i32, RoutectlError> {
    match &cli.command {
        Command::Get(args) => get(cli, args, io),
        Command::Create(args) => {
            let resources = read_manifests(&args.file.filename, io.stdin)?;
            let ds = open_datastore(cli, true)?;
            let options = WriteOptions {
                skip_exists: args.skip_exists,
                ..Default::default()
            };
            Ok(report(
                io,
                &resources::write(&*ds, WriteAction::Create, &resources, options),
            ))
        }
        Command::Apply(args) | Command::Replace(args) => {
            let action = if matches!(cli.command, Command::Apply(_)) {
                WriteAction::Apply
            } else {
                WriteAction::Replace
            };
            let resources = read_manifests(&args.filename, io.stdin)?;
            let ds = open_datastore(cli, action == WriteAction::Apply)?;
            Ok(report(
                io,
                &resources::write(&*ds, action, &resources, WriteOptions::default()),
            ))
        }
        Command::Delete(args) => delete(cli, args, io),
        Command::Patch(args) => {
            let kind = parse_kind(&args.kind)?;
            let patch_type = edit::PatchType::parse(&args.patch_type)?;
            let ds = open_datastore(cli, false)?;
            let name =
                resources::ResourceKey::named_in(kind, &args.name, args.namespace.as_deref())?
                    .record_name();
            let done = edit::patch(&*ds, kind, &name, &args.patch, patch_type);
            Ok(edit_outcome(io, done, "hit error: "))
        }
        Command::Label(args) => {
            let kind = parse_kind(&args.kind)?;
            let change = edit::LabelChange::parse(&args.label, args.overwrite, args.remove)?;
            let ds = open_datastore(cli, false)?;
            let name =
                resources::ResourceKey::named_in(kind, &args.name, args.namespace.as_deref())?
                    .record_name();
            let done = edit::label(&*ds, kind, &args.kind, &name, &change);
            Ok(edit_outcome(io, done, ""))
        }
        Command::Validate(args) => {
            let text = read_text(&args.filename, io.stdin)?;
            let (out, err, ok) = manifests::validate(&text, &args.filename)?;
            write_out(io, &out, &err);
            Ok(i32::from(!ok))
        }
        Command::Convert(args) => {
            let resources = read_manifests(&args.file.filename, io.stdin)?;
            write_out(io, &manifests::convert(&resources, &args.output)?, "");
            Ok(0)
        }
        Command::Version(args) => {
            let client = version::client_lines(env!("CARGO_PKG_VERSION"), version::GIT_COMMIT);
            if args.client {
                write_out(io, &client, "");
                return Ok(0);
            }
            match status::query_status(&cli.control_socket, STATUS_TIMEOUT) {
                Ok(s) => {
                    write_out(io, &(client + &version::cluster_lines(&s)), "");
                    Ok(0)
                }
                Err(e) => {
                    write_out(
                        io,
                        &client,
                        &format!("unable to retrieve Cluster Version or Type: {e}\n"),
                    );
                    Ok(1)
                }
            }
        }
        Command::Node(NodeCommand::Status) => node_status(cli, io),
        Command::Node(NodeCommand::Routes { target, output }) => {
            node_routes(cli, target.as_deref(), output.as_deref(), io)
        }
        Command::Node(NodeCommand::Checksystem) => {
            let (report, ok) = checksystem::evaluate(&checksystem::probe());
            let err = if ok {
                String::new()
            } else {
                format!("{}\n", checksystem::NOT_MET)
            };
            write_out(io, &report, &err);
            Ok(i32::from(!ok))
        }
        Command::Node(NodeCommand::Diags { log_dir }) => {
            let (out, _) = diags::gather(&cli.control_socket, log_dir)?;
            write_out(io, &out, "");
            Ok(0)
        }
        Command::Ipam(cmd) => ipam_command(cli, cmd, io),
    }
}

fn get(cli: &Cli, args: &GetArgs, io: &mut Streams<'_>) -> Result<i32, RoutectlError> {
    let format = OutputFormat::parse(&args.output)?;
    let (result, ds) = if let Some(path) = &args.filename {
        if args.kind.is_some() {
            return Err(RoutectlError::Usage(
                "give either a kind and names or --filename, not both".into(),
            ));
        }
        let keys: Vec<ResourceKey> = read_manifests(path, io.stdin)?
            .iter()
            .map(ResourceKey::of)
            .collect();
        let ds = open_datastore(cli, false)?;
        (resources::get_keys(&*ds, &keys, args.skip_not_exists)?, ds)
    } else {
        let word = args.kind.as_deref().ok_or_else(|| {
            RoutectlError::Usage("get needs a resource kind or --filename".into())
        })?;
        let kind = parse_kind(word)?;
        let scoped = check_scope_kind(kind, args.scope, args.node.as_ref())?;
        let ds = open_datastore(cli, false)?;
        let result = if scoped {
            let (revision, items, errors) =
                resources::scoped_peers(&*ds, args.scope, args.node.as_deref(), &args.names)?;
            resources::GetResult {
                printed: vec![Printed::List {
                    kind,
                    revision,
                    items,
                }],
                errors,
            }
        } else {
            resources::get(&*ds, kind, &args.names, args.skip_not_exists)?
        };
        (result, ds)
    };
    let needs_default_as = matches!(format, OutputFormat::Wide | OutputFormat::CustomColumns(_))
        && result.printed.iter().any(|p| match p {
            Printed::List { kind, .. } => *kind == Kind::Node,
            Printed::Single(r) => r.kind() == Kind::Node,
        });
    let default_as = if needs_default_as {
        resources::default_as_number(&*ds)?
    } else {
        datastore::resource::DEFAULT_AS_NUMBER
    };
    let out = resources::render(&result.printed, &format, default_as)?;
    let err: String = result.errors.iter().map(|e| format!("{e}\n")).collect();
    write_out(io, &out, &err);
    Ok(i32::from(!result.errors.is_empty()))
}

fn delete(cli: &Cli, args: &DeleteArgs, io: &mut Streams<'_>) -> Result<i32, RoutectlError> {
    let options = WriteOptions {
        skip_not_exists: args.skip_not_exists,
        ..Default::default()
    };
    if let Some(path) = &args.filename {
        if args.kind.is_some() {
            return Err(RoutectlError::Usage(
                "give either a kind and names or --filename, not both".into(),
            ));
        }
        let resources = read_manifests(path, io.stdin)?;
        let ds = open_datastore(cli, false)?;
        let nodes: Vec<String> = resources
            .iter()
            .filter(|r| r.kind() == Kind::Node)
            .map(|r| r.name().to_string())
            .collect();
        let removed = remove_nodes_state(&ds, &nodes)?;
        let code = report(
            io,
            &resources::write(&*ds, WriteAction::Delete, &resources, options),
        );
        write_out(io, &removed, "");
        return Ok(code);
    }
    let word = args
        .kind
        .as_deref()
        .ok_or_else(|| RoutectlError::Usage("delete needs a resource kind or --filename".into()))?;
    let kind = parse_kind(word)?;
    if args.names.is_empty() {
        return Err(RoutectlError::Usage(
            "delete needs the name of the resource".into(),
        ));
    }
    let scoped = check_scope_kind(kind, args.scope, args.node.as_ref())?;
    if kind == Kind::Node && cli.datastore_address()?.starts_with("kubernetes:") {
        // Checked before anything is released: the node's state must not go while its
        // Node (the Kubernetes Node, as in Calico's datastore) stays.
        return Err(RoutectlError::Usage(format!(
            "with the Kubernetes datastore a Node is the Kubernetes Node: delete it with \
             `kubectl delete node {}`, and routerd releases its addresses, blocks and \
             endpoints after the grace period (ROUTERD_NODE_GC_GRACE)",
            args.names.join(" ")
        )));
    }
    let ds = open_datastore(cli, false)?;
    if !scoped {
        let keys: Vec<ResourceKey> = args
            .names
            .iter()
            .map(|name| ResourceKey::named(kind, name))
            .collect();
        let removed = if kind == Kind::Node {
            remove_nodes_state(&ds, &args.names)?
        } else {
            String::new()
        };
        let code = report(io, &resources::delete(&*ds, &keys, options));
        write_out(io, &removed, "");
        return Ok(code);
    }
    // v1: each argument is a peer IP; it must name exactly one peer in the scope.
    let mut keys = Vec::new();
    let mut errors = Vec::new();
    for ip in &args.names {
        let (_, found, _) = resources::scoped_peers(
            &*ds,
            args.scope,
            args.node.as_deref(),
            std::slice::from_ref(ip),
        )?;
        match found.as_slice() {
            [one] => keys.push(ResourceKey::named(kind, one.name())),
            [] if args.skip_not_exists => {}
            [] => errors.push(format!(
                "resource does not exist: BGPPeer(peerIP={ip}, scope={}{})",
                match args.scope {
                    Some(PeerScope::Global) => "global",
                    _ => "node",
                },
                args.node
                    .as_deref()
                    .map(|n| format!(", node={n}"))
                    .unwrap_or_default()
            )),
            many => errors.push(format!(
                "peer IP {ip} matches several BGPPeers ({}); delete by name",
                many.iter()
                    .map(Resource::name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
    let skipped = args.names.len() - keys.len() - errors.len();
    let mut result = resources::delete(&*ds, &keys, options);
    result.total = args.names.len();
    result.handled += skipped;
    result.single_kind = Some(Kind::BgpPeer);
    errors.extend(result.errors);
    result.errors = errors;
    Ok(report(io, &result))
}

fn node_status(cli: &Cli, io: &mut Streams<'_>) -> Result<i32, RoutectlError> {
    match status::query_status(&cli.control_socket, STATUS_TIMEOUT) {
        Ok(status) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            write_out(io, &node_status::format_node_status(&status, now), "");
            Ok(0)
        }
        Err(e @ StatusError::Connect { .. }) => {
            write_out(io, "", &format!("{}\n{e}\n", node_status::NOT_RUNNING));
            Ok(1)
        }
        Err(e) => Err(RoutectlError::Status(Box::new(e))),
    }
}

fn node_routes(
    cli: &Cli,
    target: Option<&str>,
    output: Option<&str>,
    io: &mut Streams<'_>,
) -> Result<i32, RoutectlError> {
    let query = match routes::parse_query(target) {
        Ok(q) => q,
        Err(message) => {
            write_out(io, "", &format!("{message}\n"));
            return Ok(1);
        }
    };
    if output.is_some_and(|o| o != "json") {
        write_out(io, "", "--output: only `json` (or nothing for text)\n");
        return Ok(1);
    }
    match status::query_routes(
        &cli.control_socket,
        query.prefix,
        query.longest_match,
        STATUS_TIMEOUT,
    ) {
        Ok(paths) => {
            let text = if output.is_some() {
                let mut json = serde_json::to_string_pretty(&paths).unwrap_or_default();
                json.push('\n');
                json
            } else {
                routes::format_routes(&paths, &query)
            };
            write_out(io, &text, "");
            Ok(0)
        }
        Err(e @ StatusError::Connect { .. }) => {
            write_out(io, "", &format!("{}\n{e}\n", node_status::NOT_RUNNING));
            Ok(1)
        }
        Err(e) => Err(RoutectlError::Status(Box::new(e))),
    }
}

fn ipam_command(cli: &Cli, cmd: &IpamCommand, io: &mut Streams<'_>) -> Result<i32, RoutectlError> {
    let ds = open_datastore(cli, false)?;
    let allocator = ::ipam::Allocator::new(
        DatastoreIpam::new(ds.clone()),
        ::ipam::AllocatorConfig::default(),
    );
    match cmd {
        IpamCommand::Show { ip: Some(ip), .. } => {
            write_out(io, &ipam::show_ip(allocator.store(), *ip)?, "");
            Ok(0)
        }
        IpamCommand::Show {
            show_configuration: true,
            ..
        } => {
            write_out(io, &ipam_admin::show_configuration(&*ds)?, "");
            Ok(0)
        }
        IpamCommand::Split { number, cidr, name } => {
            let pool = match (cidr, name) {
                (Some(c), _) => ipam_admin::PoolRef::Cidr(c.clone()),
                (None, Some(n)) => ipam_admin::PoolRef::Name(n.clone()),
                (None, None) => {
                    return Err(RoutectlError::Usage(
                        "no name or CIDR provided. Provide a name or CIDR to denote the IP pool to split"
                            .into(),
                    ))
                }
            };
            write_out(io, &ipam_admin::split(&*ds, number, &pool)?, "");
            Ok(0)
        }
        IpamCommand::Configure {
            strictaffinity,
            max_blocks_per_host,
        } => {
            if max_blocks_per_host.is_some() {
                return Err(RoutectlError::Usage(
                    "--max-blocks-per-host is not supported: routerd's allocator has no limit on \
                     the blocks a node may claim"
                        .into(),
                ));
            }
            let Some(value) = strictaffinity else {
                return Err(RoutectlError::Usage(
                    "at least one configuration option must be specified".into(),
                ));
            };
            write_out(io, &ipam_admin::configure(&*ds, value)?, "");
            Ok(0)
        }
        IpamCommand::Show {
            show_borrowed: true,
            ..
        } => {
            write_out(io, &ipam::format_borrowed(allocator.store())?, "");
            Ok(0)
        }
        IpamCommand::Show {
            show_blocks,
            ip: None,
            ..
        } => {
            let (pools, problems) = ipam::pools(&*ds)?;
            let usage = allocator.usage(&pools)?;
            let err: String = problems.iter().map(|p| format!("{p}\n")).collect();
            write_out(io, &ipam::format_usage(&usage, *show_blocks), &err);
            Ok(i32::from(!problems.is_empty()))
        }
        IpamCommand::Check => {
            let report = allocator.check()?;
            write_out(io, &ipam::format_check(&report), "");
            Ok(i32::from(!report.is_clean()))
        }
        IpamCommand::Release { ip } => {
            let out = ipam::release(&allocator, *ip)?;
            write_out(io, &out, "");
            Ok(0)
        }
    }
}

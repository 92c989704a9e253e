//! The daemon's start-up and main loop (see the module docs of [`super`]).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bgp::speaker::config::{Origination, SpeakerConfig};
use bgp::speaker::control::PeerStatus;
use bgp::speaker::{PeerPolicy, SpeakerHandle};
use ipam::{Allocator, IpFamily, IpamError, TunnelKind};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::cluster::{register_node, resource_of, ClusterView, Registration};
use super::feed::FeedSignal;
use super::handover::{SessionHandover, SESSION_HANDOVER};
use super::nat::NatPlan;
use super::routes::borrowed_addresses;
use crate::health::HealthState;
use crate::host_addresses::interface_of;
use crate::peering::{self, DesiredSession, PeeringInput, PeeringPlan};
use crate::status::PeerType;
use crate::status::{DaemonState, DatastoreStatus, FibStatus, NodeStatus, SessionStatus};
use datastore::ipam_store::DatastoreIpam;
use datastore::resource::{Kind, PasswordSource, Resource, WorkloadEndpoint};
use datastore::{Datastore, DatastoreError, WatchFrom};

/// What routerd runs with (resolved from flags, environment and file by [`crate::settings`]).
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub node_name: String,
    /// The node's underlay address with its subnet's prefix (CrossSubnet keys off it).
    pub node_ipv4: Ipv4Net,
    pub node_ipv6: Option<Ipv6Net>,
    /// Overrides the AS of the Node resource.
    pub as_number: Option<u32>,
    /// Datastore address (`file:<dir>`, `memory:`, `kubernetes:`).
    pub datastore: String,
    pub control_socket: PathBuf,
    /// `None`: no health/metrics server.
    pub health_listen: Option<SocketAddr>,
    /// `None`: no metrics server of its own.
    pub metrics_listen: Option<SocketAddr>,
    /// Route protocol id of our kernel routes.
    pub route_protocol: u8,
    /// The longest the first full FIB reconcile (which removes stale routes of ours) waits
    /// for the sessions to come up after start-up.
    pub fib_settle: Duration,
    /// How long a node must be gone (no Node record) before the collecting node releases
    /// its blocks, addresses and endpoints ([`super::node_gc`]).
    pub node_gc_grace: Duration,
    /// On shutdown, how long peers that lose our routes see them with GRACEFUL_SHUTDOWN
    /// before the sessions close (`bgp::speaker::config::SpeakerConfig::shutdown_drain_time`).
    pub shutdown_drain: Duration,
    /// Set when no setting fixed the log level: the BGPConfiguration's `logSeverityScreen`
    /// (`node.<name>`, else `default`, else Info) then sets it, live, as it sets BIRD's
    /// logging in calico-node.
    pub log_severity: Option<LogSeverityControl>,
}

/// Changes the daemon's log level (the binary holds the subscriber's reload handle).
#[derive(Clone)]
pub struct LogSeverityControl(pub Arc<dyn Fn(tracing::Level) + Send + Sync>);

impl std::fmt::Debug for LogSeverityControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogSeverityControl")
    }
}

/// The log level the BGPConfigurations ask of `node`: its `node.<name>` configuration's
/// `logSeverityScreen`, else the `default` one's, else Info (Calico's default). Calico's
/// Fatal has no tracing level of its own: Error.
pub fn log_severity(view: &ClusterView, node: &str) -> tracing::Level {
    let own = format!("node.{node}");
    let pick = |name: &str| {
        view.configs
            .iter()
            .find(|c| c.metadata.name == name)
            .and_then(|c| c.spec.log_severity_screen.clone())
    };
    match pick(&own).or_else(|| pick("default")).as_deref() {
        Some("Debug") => tracing::Level::DEBUG,
        Some("Warning") => tracing::Level::WARN,
        Some("Error" | "Fatal") => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    }
}

/// Applies [`log_severity`] when it changed since `last`.
fn apply_log_severity(
    config: &DaemonConfig,
    view: &ClusterView,
    last: &mut Option<tracing::Level>,
) {
    let Some(control) = &config.log_severity else {
        return;
    };
    let level = log_severity(view, &config.node_name);
    if *last != Some(level) {
        // Logged at the old level and the new one alike: WARN passes both unless Error.
        if last.is_some() {
            warn!(level = %level, "log level changed by BGPConfiguration logSeverityScreen");
        }
        (control.0)(level);
        *last = Some(level);
    }
}

/// Why routerd could not start (or had to stop).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("datastore {address}: {source}")]
    Datastore {
        address: String,
        #[source]
        source: Box<DatastoreError>,
    },
    #[error("registering node {node}: {source}")]
    Register {
        node: String,
        #[source]
        source: Box<super::cluster::RegisterError>,
    },
    #[error("claiming blocks for node {node}: {source}")]
    Ipam {
        node: String,
        #[source]
        source: IpamError,
    },
    #[error("peering: {0}")]
    Peering(String),
    #[error("BGP: {0}")]
    Speaker(#[from] bgp::speaker::SpeakerError),
    #[error("kernel routing table: {0}")]
    Fib(#[from] fib::FibError),
    #[error("tunnels: {0}")]
    Encap(#[from] encap::EncapError),
    #[error("{0}")]
    Control(#[from] super::control::ControlError),
    #[error("{0}")]
    Health(String),
    #[error("internal task failed: {0}")]
    Task(String),
}

/// Runs `f` (blocking datastore work) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, DaemonError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DaemonError::Task(e.to_string()))
}

/// What the status socket reports, updated by the main loop.
#[derive(Debug, Clone)]
struct Snapshot {
    state: DaemonState,
    as_number: u32,
    router_id: Ipv4Addr,
    cluster_id: Option<Ipv4Addr>,
    blocks: Vec<IpNet>,
    /// Session identity by peer address (name, type) from the peering plan.
    sessions: BTreeMap<IpAddr, DesiredSession>,
    fib: FibStatus,
    datastore: DatastoreStatus,
}

/// Pause before a failed read of the cluster view is tried again.
const VIEW_RETRY: Duration = Duration::from_secs(1);

/// Records whether the datastore answers (`error` is why not), logging each transition once.
fn mark_datastore(snapshot: &Mutex<Snapshot>, health: &HealthState, error: Option<String>) {
    health.set_datastore_reachable(error.is_none());
    let Ok(mut s) = snapshot.lock() else { return };
    let ds = &mut s.datastore;
    match (&error, ds.reachable) {
        (None, true) => return,
        (None, false) => info!(datastore = %ds.address, "datastore reachable again; rereading it"),
        (Some(e), true) => warn!(datastore = %ds.address, error = %e,
            "datastore unreachable; keeping sessions and routes, retrying"),
        (Some(_), false) => {
            ds.last_error = error;
            return;
        }
    }
    ds.reachable = error.is_none();
    ds.since_unix = unix_now();
    ds.last_error = error;
}

/// Runs the daemon until `shutdown` resolves.
pub async fn run(
    config: DaemonConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let started = Instant::now();
    // First, so that a second routerd for this node stops before touching anything.
    let listener = super::control::bind(&config.control_socket)?;
    let health = HealthState::new();
    let _health_server = match config.health_listen {
        Some(listen) => Some(
            crate::health::serve(listen, health.clone())
                .await
                .map_err(|e| DaemonError::Health(e.to_string()))?,
        ),
        None => None,
    };
    // Metrics on a port of their own, reachable off the node, while health stays on
    // loopback for the exec probes (`routerd health`). The same read-only endpoints.
    let _metrics_server = match config.metrics_listen {
        Some(listen) if Some(listen) != config.health_listen => Some(
            crate::health::serve(listen, health.clone())
                .await
                .map_err(|e| DaemonError::Health(format!("metrics: {e}")))?,
        ),
        _ => None,
    };

    // 1. Datastore and node registration.
    let address = config.datastore.clone();
    let ds = blocking(move || datastore::open(&address))
        .await?
        .map_err(|source| DaemonError::Datastore {
            address: config.datastore.clone(),
            source: Box::new(source),
        })?;
    let reg = Registration {
        name: config.node_name.clone(),
        ipv4: config.node_ipv4,
        ipv6: config.node_ipv6,
        as_number: config.as_number,
    };
    {
        let ds = ds.clone();
        let reg = reg.clone();
        blocking(move || register_node(&*ds, &reg))
            .await?
            .map_err(|source| DaemonError::Register {
                node: config.node_name.clone(),
                source: Box::new(source),
            })?;
    }
    // Watch before the first read, so no change between the read and the watch is missed.
    let watch = {
        let ds = ds.clone();
        blocking(move || ds.watch(None, WatchFrom::Now))
            .await?
            .map_err(|source| DaemonError::Datastore {
                address: config.datastore.clone(),
                source: Box::new(source),
            })?
    };
    let view = load_view(&ds, &config.datastore).await?;
    let mut feed = super::feed::spawn(ds.clone(), watch);
    let mut log_level = None;
    apply_log_severity(&config, &view, &mut log_level);
    let secrets = {
        let address = config.datastore.clone();
        blocking(move || SecretReader::for_datastore(&address)).await??
    };
    let (mut services, mut pods) = {
        let (address, node) = (config.datastore.clone(), config.node_name.clone());
        blocking(move || super::services::kube_feeds(&address, &node))
            .await?
            .map_err(|source| DaemonError::Datastore {
                address: config.datastore.clone(),
                source: Box::new(source),
            })?
    };
    services.explain(&view);

    // 2. Blocks. The IPAM settings (strict affinity) are read once, at start: routerd
    // itself only claims blocks and tunnel addresses; pods' addresses come from the IPAM
    // plugin, which reads them at every assignment.
    let ipam_settings = {
        let ds = ds.clone();
        blocking(move || datastore::ipam_store::read_ipam_config(&*ds))
            .await?
            .map(|(settings, _)| settings)
            .unwrap_or_else(|e| {
                warn!(error = %e, "cannot read the IPAM settings; using the defaults");
                datastore::ipam_store::IpamConfig::default()
            })
    };
    let allocator = Arc::new(Allocator::new(
        DatastoreIpam::new(ds.clone()),
        ipam_settings.allocator_config(),
    ));
    let blocks = claim_blocks(&allocator, &view, &config).await?;

    // 3. Sessions and the speaker.
    let plan = compute_peering(&view, &config.node_name)?;
    // Routes of ours already in the kernel: an earlier routerd ran here and its forwarding
    // state survived (a restart, or a crash). The peers are told (the Restart State bit,
    // RFC 4724 §3) and the routes stay until the sessions are back with all their routes.
    let mut table = fib::NetlinkFib::open(fib::FibConfig {
        protocol: config.route_protocol,
        ..fib::FibConfig::default()
    })?;
    let kept_routes = fib::RouteTable::installed(&mut table).map_or(0, |r| r.len());
    if kept_routes > 0 {
        info!(routes = kept_routes, "restarting with forwarding state kept: the kernel routes stay until the sessions re-send theirs");
    }
    let speaker_config = SpeakerConfig {
        router_id: plan.local.router_id,
        local_as: plan.local.as_number,
        listen: vec![
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, plan.local.listen_port)),
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, plan.local.listen_port)),
        ],
        hold_time: 90,
        connect_retry: 5,
        cluster_id: plan.local.cluster_id,
        // Calico's BIRD config merges up to 16 equal paths into one kernel route.
        max_paths: 16,
        control_socket: None,
        shutdown_drain_time: config.shutdown_drain.as_secs(),
        bfd_port: bgp::speaker::config::DEFAULT_BFD_PORT,
        restarting: kept_routes > 0,
        // Advertise after the peers' End-of-RIBs, at most as long as the FIB waits for them.
        selection_deferral_time: config.fib_settle.as_secs().max(1),
        originate: originations(&blocks, &view, &config.node_name, &BTreeSet::new()),
        peers: Vec::new(),
        // Per-peer filters come from BGPFilters, set live with `set_policy`.
        policies: Vec::new(),
    };
    let (best_tx, mut best_rx) = mpsc::unbounded_channel();
    let (speaker, speaker_task) = bgp::speaker::start(speaker_config, Some(best_tx)).await?;
    let mut sessions = ConfiguredSessions::default();
    apply_sessions(&speaker, &mut sessions, &plan, &secrets).await;
    let mut originated: BTreeMap<IpNet, Origination> =
        originations(&blocks, &view, &config.node_name, &BTreeSet::new())
            .into_iter()
            .map(|o| (o.prefix, o))
            .collect();

    // 4. Forwarding, the FIB and the overlay.
    enable_forwarding(config.node_ipv6.is_some());
    let (fib, _fib_thread) = fib::spawn_owner(Box::new(table))?;
    // Our own namespace: the daemon runs in the node's network namespace (opened without
    // setns, so the container needs no CAP_SYS_ADMIN).
    let handle = encap::netns::rtnetlink_handle_here()?;
    let parent =
        interface_of(IpAddr::V4(config.node_ipv4.addr())).unwrap_or_else(|| "eth0".to_string());
    let vxlan_v6 = config.node_ipv6.map(|v6| {
        let parent = interface_of(IpAddr::V6(v6.addr())).unwrap_or_else(|| parent.clone());
        encap::VxlanConfig::new(parent, IpAddr::V6(v6.addr()))
    });
    let overlay_config = encap::OverlayConfig {
        this_node: IpNet::V4(config.node_ipv4),
        this_node_v6: config.node_ipv6.map(IpNet::V6),
        vxlan: encap::VxlanConfig::new(parent.clone(), IpAddr::V4(config.node_ipv4.addr())),
        vxlan_v6,
        ipip: encap::IpipConfig::new(parent),
        netns: None,
    };
    let mut overlay = encap::Overlay::new(handle, overlay_config);
    // What the pools want of tunnels, once this node has its addresses for it (the loop
    // assigns them again when it changes, or until an assignment succeeds).
    let mut tunnels_wanted = TunnelsWanted::by(&view, &config);
    let tunnels = publish_tunnels(&ds, &allocator, &view, &config, tunnels_wanted).await;
    if !tunnels_wanted.met_by(&tunnels) {
        tunnels_wanted = TunnelsWanted::default();
    }
    overlay.set_tunnel_addresses(&tunnels);
    // The routes wanted in the kernel, kept up to date per change (not rebuilt per tick).
    let mut kernel = super::kernel::KernelRoutes::start(
        fib,
        overlay,
        &view,
        &config.node_name,
        &blocks,
        &health,
    )
    .await;

    let snapshot = Arc::new(Mutex::new(Snapshot {
        state: DaemonState::Starting,
        as_number: plan.local.as_number,
        router_id: plan.local.router_id,
        cluster_id: plan.local.cluster_id,
        blocks: blocks.clone(),
        sessions: sessions.by_address.clone(),
        fib: FibStatus::default(),
        datastore: DatastoreStatus {
            address: config.datastore.clone(),
            reachable: true,
            since_unix: unix_now(),
            last_error: None,
        },
    }));
    let control_task = tokio::spawn(super::control::serve(
        listener,
        status_source(
            snapshot.clone(),
            speaker.clone(),
            config.node_name.clone(),
            started,
        ),
        speaker.clone(),
    ));
    info!(node = %config.node_name, as_number = plan.local.as_number,
          router_id = %plan.local.router_id, blocks = ?blocks, sessions = sessions.by_address.len(),
          "routerd started");

    // The loop.
    let mut view = view;
    let mut blocks = blocks;
    let mut view_dirty = false;
    let mut feed_lost = false;
    let mut view_retry_at: Option<Instant> = None;
    let mut routes_dirty = true;
    let mut settled = false;
    // The natOutgoing rules follow the pools: recomputed with the view, applied when they
    // differ from what was last programmed (retried every 5 s after a failure).
    let mut nat_wanted = nat_plan(&view);
    let mut nat_applied: Option<NatPlan> = None;
    let mut nat_failed_at: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    // A few best-path changes (a session lost, a route withdrawn) reach the kernel within
    // FAST_ROUTES instead of at the next tick; a bulk load (more than FAST_ROUTE_CHANGES
    // since the last apply) waits for the tick, so that the route set is not rebuilt for
    // every UPDATE. Measured: with BFD at 300 ms x 3 the tick's up to 200 ms made a dead
    // router's routes leave the kernel after 1.08 s instead of under 1 s.
    let mut fast_routes: Option<tokio::time::Instant> = None;
    let mut changes_since_apply: usize = 0;
    let mut reconcile = tokio::time::interval(Duration::from_secs(300));
    reconcile.tick().await;
    let mut node_gc = super::node_gc::NodeGc::default();
    let mut node_gc_tick = tokio::time::interval(super::node_gc::NODE_GC_CHECK);
    // Originations are to be recomputed (the view or the Services changed: a ready endpoint
    // came or went): at the next tick, with the view as it is then.
    let mut originations_dirty = false;
    // This node's Pods as endpoints (Kubernetes datastore), kept across view reloads.
    let mut pod_endpoints: Arc<Vec<WorkloadEndpoint>> = Arc::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            batch = best_rx.recv() => {
                let Some(batch) = batch else {
                    warn!("the BGP speaker stopped");
                    break;
                };
                changes_since_apply += batch.len();
                kernel.best_changed(batch);
                routes_dirty = true;
                if settled && changes_since_apply <= FAST_ROUTE_CHANGES && fast_routes.is_none() {
                    fast_routes = Some(tokio::time::Instant::now() + FAST_ROUTES);
                }
            }
            () = async {
                if let Some(at) = fast_routes {
                    tokio::time::sleep_until(at).await;
                }
            }, if fast_routes.is_some() => {
                fast_routes = None;
                tick.reset_immediately();
            }
            signal = feed.recv() => {
                match signal {
                    Some(FeedSignal::Changed | FeedSignal::Resync) => view_dirty = true,
                    Some(FeedSignal::Restored) => {
                        feed_lost = false;
                        view_dirty = true;
                        view_retry_at = None;
                        mark_datastore(&snapshot, &health, None);
                    }
                    Some(FeedSignal::Lost(error)) => {
                        feed_lost = true;
                        view_dirty = true;
                        mark_datastore(&snapshot, &health, Some(error));
                    }
                    None => {
                        warn!("the datastore feed stopped");
                        break;
                    }
                }
            }
            () = services.changed() => originations_dirty = true,
            endpoints = pods.changed() => {
                pod_endpoints = endpoints;
                view.pod_endpoints = pod_endpoints.to_vec();
                kernel.view_changed();
                routes_dirty = true;
                originations_dirty = true;
            }
            _ = reconcile.tick() => {
                if settled {
                    kernel.reconcile(&health).await;
                }
            }
            _ = node_gc_tick.tick() => {
                if !feed_lost {
                    super::node_gc::check(&mut node_gc, config.node_gc_grace, &ds, &allocator, &view, &config.node_name).await;
                }
            }
            _ = tick.tick() => {
                health.heartbeat();
                // While the feed reports the datastore lost, reads would only wait out their
                // timeouts: the view is reread when the feed is restored. A failed read is
                // retried after a pause, not at every tick.
                let retry_due = view_retry_at.is_none_or(|t: Instant| Instant::now() >= t);
                if view_dirty && !feed_lost && retry_due {
                    view_dirty = false;
                    match load_view(&ds, &config.datastore).await {
                        Ok(v) => {
                            view_retry_at = None;
                            mark_datastore(&snapshot, &health, None);
                            view = v;
                            view.pod_endpoints = pod_endpoints.to_vec();
                            nat_wanted = nat_plan(&view);
                            apply_log_severity(&config, &view, &mut log_level);
                            match refresh(&config, &view, &allocator, &speaker, &mut sessions, &secrets).await {
                                Ok(new_blocks) => {
                                    blocks = new_blocks;
                                    originations_dirty = true;
                                }
                                Err(e) => warn!(error = %e, "applying the datastore change failed; will retry on the next change"),
                            }
                            // A pool came to use a tunnel: take and publish our tunnel
                            // address now (retried at the next change until it is had).
                            let wanted = TunnelsWanted::by(&view, &config);
                            if wanted != tunnels_wanted {
                                let tunnels = publish_tunnels(&ds, &allocator, &view, &config, wanted).await;
                                if wanted.met_by(&tunnels) {
                                    tunnels_wanted = wanted;
                                }
                                kernel.set_tunnel_addresses(&tunnels);
                            }
                            if let Ok(mut s) = snapshot.lock() {
                                s.sessions = sessions.by_address.clone();
                                s.blocks = blocks.clone();
                            }
                            kernel.view_changed();
                            routes_dirty = true;
                        }
                        Err(e) => {
                            view_dirty = true;
                            view_retry_at = Some(Instant::now() + VIEW_RETRY);
                            mark_datastore(&snapshot, &health, Some(e.to_string()));
                        }
                    }
                }
                // The originations: after a datastore change (blocks, service ranges, the
                // node's labels) or a Services change.
                if originations_dirty {
                    originations_dirty = false;
                    let service_hosts = services.routes(&view, &config.node_name);
                    let wanted = originations(&blocks, &view, &config.node_name, &service_hosts);
                    apply_originations(&speaker, &mut originated, wanted).await;
                }
                let peers = peer_statuses(&speaker).await;
                // Sessions kept for a topology hand-over go when their time is up.
                if retire_due_sessions(&speaker, &mut sessions).await {
                    if let Ok(mut s) = snapshot.lock() {
                        s.sessions = sessions.by_address.clone();
                    }
                }
                update_session_health(&health, &sessions.by_address, &peers);
                if !settled {
                    // RFC 4724 §4.1: the stale routes go once every peer has re-sent its
                    // routes (End-of-RIB for each family of the session), not at the first
                    // OPEN: until then a kernel route may still be waiting for its UPDATE.
                    let all_up = peers.iter().all(|p| {
                        p.state == "Established"
                            && p.families.iter().all(|f| p.end_of_rib.contains(f))
                    });
                    if all_up || started.elapsed() >= config.fib_settle {
                        // The speaker sent the best paths of those routes before it saw the
                        // End-of-RIBs just read; some may still be queued here, and the full
                        // apply below must not take their kernel routes for stale.
                        while let Ok(batch) = best_rx.try_recv() {
                            kernel.best_changed(batch);
                        }
                        settled = true;
                        routes_dirty = true;
                        if let Ok(mut s) = snapshot.lock() {
                            s.state = DaemonState::Running;
                        }
                        health.set_started(true);
                        info!(sessions = peers.len(), all_up, "sessions settled (End-of-RIB from every peer, or the settle time); reconciling the FIB fully");
                    }
                }
                let due = nat_failed_at.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(5));
                if nat_applied.as_ref() != Some(&nat_wanted) && due {
                    let plan = nat_wanted.clone();
                    let applied = blocking(move || super::nat::apply(&plan))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r);
                    match applied {
                        Ok(()) => {
                            info!(masquerade_v4 = ?nat_wanted.masq_v4, masquerade_v6 = ?nat_wanted.masq_v6,
                                  "natOutgoing rules programmed");
                            nat_applied = Some(nat_wanted.clone());
                            nat_failed_at = None;
                        }
                        Err(e) => {
                            warn!(error = %e, "programming natOutgoing failed; retrying in 5 s");
                            nat_failed_at = Some(Instant::now());
                        }
                    }
                }
                if routes_dirty {
                    routes_dirty = false;
                    changes_since_apply = 0;
                    if !kernel.flush(&view, &blocks, settled, &health).await {
                        routes_dirty = true;
                    }
                }
                if let Ok(mut s) = snapshot.lock() {
                    s.fib = kernel.status();
                }
            }
        }
    }

    // Shutdown: sessions close, kernel routes stay (forwarding continues across a restart).
    if let Ok(mut s) = snapshot.lock() {
        s.state = DaemonState::Stopping;
    }
    // Sessions with graceful restart close without a NOTIFICATION (RFC 4724 §4.1), so the
    // peers keep our routes for the Restart Time, as the kernel keeps forwarding with ours;
    // the others see GRACEFUL_SHUTDOWN for the drain time first (RFC 8326), then Cease.
    info!(
        drain_secs = config.shutdown_drain.as_secs(),
        "shutting down: closing BGP sessions, keeping kernel routes"
    );
    speaker.shutdown_for_restart().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), speaker_task).await;
    control_task.abort();
    let _ = std::fs::remove_file(&config.control_socket);
    Ok(())
}

async fn load_view(ds: &Arc<dyn Datastore>, address: &str) -> Result<ClusterView, DaemonError> {
    let ds = ds.clone();
    let view = blocking(move || ClusterView::load(&*ds))
        .await?
        .map_err(|source| DaemonError::Datastore {
            address: address.to_string(),
            source: Box::new(source),
        })?;
    for problem in &view.problems {
        warn!(problem = %problem, "ignoring an invalid resource");
    }
    Ok(view)
}

fn compute_peering(view: &ClusterView, node: &str) -> Result<PeeringPlan, DaemonError> {
    let plan = peering::compute(&PeeringInput {
        local_node: node,
        nodes: &view.nodes,
        configs: &view.configs,
        peers: &view.peers,
        filters: &view.filters,
    })
    .map_err(|e| DaemonError::Peering(e.to_string()))?;
    for p in &plan.problems {
        warn!(problem = %p, "peering problem");
    }
    Ok(plan)
}

/// Ensures the node owns a block of every pool that selects it, per family it has an
/// address of. A family without pools is not an error (nothing to claim).
async fn claim_blocks(
    allocator: &Arc<Allocator<DatastoreIpam>>,
    view: &ClusterView,
    config: &DaemonConfig,
) -> Result<Vec<IpNet>, DaemonError> {
    let pools = view.ip_pools();
    let labels = view
        .node(&config.node_name)
        .map(|n| n.metadata.labels.clone())
        .unwrap_or_default();
    let mut families = vec![IpFamily::V4];
    if config.node_ipv6.is_some() {
        families.push(IpFamily::V6);
    }
    let allocator = allocator.clone();
    let node = config.node_name.clone();
    blocking(move || {
        let mut out = Vec::new();
        for family in families {
            match allocator.ensure_block(&pools, &node, &labels, family) {
                Ok(blocks) => out.extend(blocks),
                Err(IpamError::NoPool { .. }) => {
                    debug!(node = %node, ?family, "no IP pool selects this node")
                }
                Err(source) => return Err(DaemonError::Ipam { node, source }),
            }
        }
        Ok(out)
    })
    .await?
}

/// The node's blocks, the service ranges of the `default` BGPConfiguration and this node's
/// service host routes (`service_hosts`, [`crate::service_routes`]), as the prefixes the
/// speaker originates (blocks aggregated: never the addresses inside them).
///
/// `prefixAdvertisements` communities are attached here, at the origin, to every originated
/// prefix inside the entry's CIDR (BIRD's `net ~ cidr` in Calico's export filter); the other
/// nodes pass them on unchanged, so the ToR sees them whichever node it learns a block from.
fn originations(
    blocks: &[IpNet],
    view: &ClusterView,
    node: &str,
    service_hosts: &BTreeSet<IpNet>,
) -> Vec<Origination> {
    let mut prefixes: BTreeSet<IpNet> = blocks.iter().copied().collect();
    prefixes.extend(service_hosts);
    prefixes.extend(borrowed_addresses(view, node, blocks));
    let mut tags = Vec::new();
    if let Some(config) = view.default_config() {
        prefixes.extend(crate::service_routes::ServiceRanges::of(&config.spec).all());
        // Validated when the resource was stored; a bad entry (only possible through a
        // store that skipped validation) tags nothing rather than stopping the node.
        tags = crate::policy::prefix_communities(&config.spec).unwrap_or_else(|e| {
            warn!(error = %e, "BGPConfiguration default: prefixAdvertisements ignored");
            Vec::new()
        });
    }
    prefixes
        .into_iter()
        .map(|prefix| {
            let mut communities = Vec::new();
            let mut large_communities = Vec::new();
            for tag in tags.iter().filter(|t| t.prefix.contains(&prefix)) {
                for c in &tag.communities {
                    let text = c.to_string();
                    if !communities.contains(&text) {
                        communities.push(text);
                    }
                }
                for c in &tag.large_communities {
                    let text = c.to_string();
                    if !large_communities.contains(&text) {
                        large_communities.push(text);
                    }
                }
            }
            Origination {
                prefix,
                med: None,
                local_pref: None,
                communities,
                large_communities,
            }
        })
        .collect()
}

/// Where `secretKeyRef` passwords are read: Kubernetes Secrets in the namespace routerd runs
/// in (`POD_NAMESPACE`, set through the downward API; `kube-system` otherwise, where
/// Calico's node reads them), through the API server of the `kubernetes:` datastore.
#[derive(Clone, Default)]
pub struct SecretReader {
    #[cfg(feature = "kubernetes")]
    kube: Option<(Arc<datastore::KubeDatastore>, String)>,
}

impl std::fmt::Debug for SecretReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretReader")
    }
}

impl SecretReader {
    /// A reader for the datastore at `address` (only `kubernetes:` has Secrets).
    fn for_datastore(address: &str) -> Result<SecretReader, DaemonError> {
        #[cfg(feature = "kubernetes")]
        if let Some(source) = datastore::KubeConfigSource::from_address(address) {
            let kube = datastore::KubeDatastore::connect(source, datastore::KubeOptions::default())
                .map_err(|source| DaemonError::Datastore {
                    address: address.to_string(),
                    source: Box::new(source),
                })?;
            let namespace =
                std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "kube-system".to_string());
            return Ok(SecretReader {
                kube: Some((Arc::new(kube), namespace)),
            });
        }
        let _ = address;
        Ok(SecretReader::default())
    }

    /// Reads a password from its source (blocking: a Secret is an API call).
    fn password(&self, source: &PasswordSource) -> Result<String, String> {
        if let Some(file) = &source.file {
            return std::fs::read_to_string(file)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| format!("password file {file}: {e}"));
        }
        if let Some(secret) = &source.secret_key_ref {
            #[cfg(feature = "kubernetes")]
            if let Some((kube, namespace)) = &self.kube {
                return kube
                    .secret_value(namespace, &secret.name, &secret.key)
                    .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                    .map_err(|e| format!("password secret {namespace}/{}: {e}", secret.name));
            }
            return Err(format!(
                "password secret {}/{}: Secrets are read only with the kubernetes datastore \
                 (use `password: {{file: ...}}` with the embedded one)",
                secret.name, secret.key
            ));
        }
        Err("empty password source".into())
    }
}

/// The sessions configured in the speaker: the plan's, and those kept past it for a
/// topology hand-over ([`SessionHandover`]).
#[derive(Debug, Default)]
struct ConfiguredSessions {
    by_address: BTreeMap<IpAddr, DesiredSession>,
    handover: SessionHandover,
}

/// Removes the sessions whose hand-over time is up; whether any went.
async fn retire_due_sessions(speaker: &SpeakerHandle, sessions: &mut ConfiguredSessions) -> bool {
    let due = sessions.handover.due(Instant::now());
    for address in &due {
        if let Some(old) = sessions.by_address.remove(address) {
            info!(session = %old.name, peer = %address, "hand-over over: removing session");
            if let Err(e) = speaker.remove_peer(*address).await {
                warn!(peer = %address, error = %e, "removing a session failed");
            }
        }
    }
    !due.is_empty()
}

/// Brings the speaker's peers in line with the plan: adds new and changed sessions (the
/// speaker leaves an unchanged one alone), removes the ones no longer wanted, except that an
/// Established session between our own nodes stays for the hand-over time ([`handover`]).
///
/// [`handover`]: super::handover
async fn apply_sessions(
    speaker: &SpeakerHandle,
    sessions: &mut ConfiguredSessions,
    plan: &PeeringPlan,
    secrets: &SecretReader,
) {
    let mut wanted: BTreeMap<IpAddr, DesiredSession> = BTreeMap::new();
    for session in &plan.sessions {
        let mut session = session.clone();
        if let Some(source) = session.password.clone() {
            let reader = secrets.clone();
            let resolved = tokio::task::spawn_blocking(move || reader.password(&source))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            match resolved {
                Ok(p) => session.peer.password = Some(p),
                Err(e) => {
                    warn!(session = %session.name, error = %e, "session skipped: no password");
                    continue;
                }
            }
        }
        wanted.insert(session.peer.address, session);
    }
    let current = &mut sessions.by_address;
    let handover = &mut sessions.handover;
    let leaving = current.keys().any(|a| !wanted.contains_key(a));
    let established: Vec<IpAddr> = if leaving {
        peer_statuses(speaker)
            .await
            .into_iter()
            .filter(|p| p.state == "Established")
            .map(|p| p.address)
            .collect()
    } else {
        Vec::new()
    };
    let now = Instant::now();
    let mut retained = BTreeMap::new();
    for (address, old) in current.iter() {
        if wanted.contains_key(address) {
            handover.keep(*address);
            continue;
        }
        let between_nodes = matches!(old.peer_type, PeerType::NodeMesh | PeerType::RouteReflector);
        let up = established.contains(address);
        let was_retiring = handover.is_retiring(*address);
        if handover.retire(*address, between_nodes, up, now) {
            if !was_retiring {
                info!(session = %old.name, peer = %address, secs = SESSION_HANDOVER.as_secs(),
                      "session between nodes left the plan: kept until the new topology carries its routes");
            }
            retained.insert(*address, old.clone());
            continue;
        }
        info!(session = %old.name, peer = %address, "removing session");
        if let Err(e) = speaker.remove_peer(*address).await {
            warn!(peer = %address, error = %e, "removing a session failed");
        }
    }
    for (address, session) in &wanted {
        if current.get(address).map(|s| &s.peer) == Some(&session.peer) {
            continue;
        }
        info!(session = %session.name, peer = %address, remote_as = session.peer.remote_as,
              passive = session.peer.passive, "configuring session");
        if let Err(e) = speaker.add_peer(session.peer.clone()).await {
            warn!(session = %session.name, error = %e, "configuring a session failed");
        }
    }
    // Filters change without a session reset; an unchanged policy costs nothing.
    for (address, session) in &wanted {
        let policy = PeerPolicy {
            address: *address,
            import: session.import.clone(),
            export: session.export.clone(),
        };
        if let Err(e) = speaker.set_policy(policy).await {
            warn!(session = %session.name, error = %e, "setting the session's filters failed");
        }
    }
    *current = wanted;
    current.extend(retained);
}

/// A datastore change: recompute sessions and blocks (the originations follow, with the
/// Services, in the same tick).
async fn refresh(
    config: &DaemonConfig,
    view: &ClusterView,
    allocator: &Arc<Allocator<DatastoreIpam>>,
    speaker: &SpeakerHandle,
    sessions: &mut ConfiguredSessions,
    secrets: &SecretReader,
) -> Result<Vec<IpNet>, DaemonError> {
    let blocks = claim_blocks(allocator, view, config).await?;
    let plan = compute_peering(view, &config.node_name)?;
    apply_sessions(speaker, sessions, &plan, secrets).await;
    Ok(blocks)
}

/// Tells the speaker what changed between `originated` and `wanted`: withdrawals, then new
/// or changed originations.
async fn apply_originations(
    speaker: &SpeakerHandle,
    originated: &mut BTreeMap<IpNet, Origination>,
    wanted: Vec<Origination>,
) {
    let wanted: BTreeMap<IpNet, Origination> = wanted.into_iter().map(|o| (o.prefix, o)).collect();
    for prefix in originated.keys().filter(|p| !wanted.contains_key(p)) {
        info!(prefix = %prefix, "withdrawing");
        if let Err(e) = speaker.withdraw(*prefix).await {
            warn!(prefix = %prefix, error = %e, "withdrawing failed");
        }
    }
    for (prefix, o) in &wanted {
        // A changed origination (new communities) is originated again: the speaker
        // replaces its route and sends the new attributes, with no withdrawal between.
        if originated.get(prefix) != Some(o) {
            info!(prefix = %prefix, communities = ?o.communities, "originating");
            if let Err(e) = speaker.originate(o.clone()).await {
                warn!(prefix = %prefix, error = %e, "originating failed");
            }
        }
    }
    *originated = wanted;
}

/// The tunnels the pools ask this node for: when this changes, the tunnel addresses are
/// assigned and published again ([`publish_tunnels`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct TunnelsWanted {
    /// An IPv4 pool uses VXLAN.
    vxlan: bool,
    /// An IPv6 pool uses VXLAN and this node has an IPv6 address.
    vxlan_v6: bool,
    /// A pool uses IP-in-IP.
    ipip: bool,
}

impl TunnelsWanted {
    fn by(view: &ClusterView, config: &DaemonConfig) -> TunnelsWanted {
        let pools = view.ip_pools();
        let vxlan_in = |family| {
            pools
                .iter()
                .any(|p| p.family() == family && p.vxlan_mode().is_enabled())
        };
        TunnelsWanted {
            vxlan: vxlan_in(IpFamily::V4),
            vxlan_v6: config.node_ipv6.is_some() && vxlan_in(IpFamily::V6),
            ipip: pools.iter().any(|p| p.ipip_mode().is_enabled()),
        }
    }

    /// Whether `tunnels` holds every address wanted.
    fn met_by(&self, tunnels: &encap::TunnelAddresses) -> bool {
        (!self.vxlan || tunnels.vxlan.is_some())
            && (!self.vxlan_v6 || tunnels.vxlan_v6.is_some())
            && (!self.ipip || tunnels.ipip.is_some())
    }
}

/// When a pool uses a tunnel, the node takes a tunnel address from its block and publishes
/// it (with its VTEP MAC for VXLAN) on its Node, where the other nodes read it. Called at
/// start and whenever the pools come to use a tunnel (`wanted`, calico-node's tunnel
/// address allocation follows the pools the same way); returns the addresses for the
/// overlay.
async fn publish_tunnels(
    ds: &Arc<dyn Datastore>,
    allocator: &Arc<Allocator<DatastoreIpam>>,
    view: &ClusterView,
    config: &DaemonConfig,
    wanted: TunnelsWanted,
) -> encap::TunnelAddresses {
    let pools = view.ip_pools();
    let labels = view
        .node(&config.node_name)
        .map(|n| n.metadata.labels.clone())
        .unwrap_or_default();
    if wanted == TunnelsWanted::default() {
        return encap::TunnelAddresses::default();
    }
    let node = config.node_name.clone();
    let alloc = allocator.clone();
    let pools2 = pools.clone();
    let assigned = blocking(move || {
        [
            (TunnelKind::Vxlan, wanted.vxlan),
            (TunnelKind::VxlanV6, wanted.vxlan_v6),
            (TunnelKind::Ipip, wanted.ipip),
        ]
        .into_iter()
        .filter(|(_, w)| *w)
        .map(|(kind, _)| {
            (
                kind,
                alloc.assign_tunnel_address(&pools2, &node, &labels, kind),
            )
        })
        .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let mac = encap::vxlan::vtep_mac(IpAddr::V4(config.node_ipv4.addr()));
    let mac_v6 = config
        .node_ipv6
        .map(|v6| encap::vxlan::vtep_mac(IpAddr::V6(v6.addr())));
    let mut tunnels = encap::TunnelAddresses::default();
    for (kind, result) in assigned {
        match (kind, result) {
            (TunnelKind::Vxlan, Ok(a)) if a.address.is_ipv4() => {
                tunnels.vxlan = Some((a.address, mac));
            }
            (TunnelKind::VxlanV6, Ok(a)) if a.address.is_ipv6() => {
                tunnels.vxlan_v6 = mac_v6.map(|m| (a.address, m));
            }
            (TunnelKind::Ipip, Ok(a)) => {
                if let IpAddr::V4(v4) = a.address {
                    tunnels.ipip = Some(v4);
                }
            }
            (kind, Err(e)) => warn!(?kind, error = %e, "no tunnel address"),
            _ => {}
        }
    }
    let ds = ds.clone();
    let name = config.node_name.clone();
    let result = blocking(move || {
        for _ in 0..16 {
            let record = ds.get(Kind::Node.as_str(), &name)?;
            let Ok(Resource::Node(mut node)) = resource_of(&record) else {
                return Ok(());
            };
            let before = node.spec.clone();
            if let Some((a, mac)) = tunnels.vxlan {
                node.spec.ipv4_vxlan_tunnel_addr = Some(a.to_string());
                node.spec.vxlan_tunnel_mac_addr = Some(encap::vxlan::fmt_mac(&mac));
            }
            if let Some((a, mac)) = tunnels.vxlan_v6 {
                node.spec.ipv6_vxlan_tunnel_addr = Some(a.to_string());
                node.spec.vxlan_tunnel_mac_addr_v6 = Some(encap::vxlan::fmt_mac(&mac));
            }
            if let (Some(a), Some(bgp)) = (tunnels.ipip, node.spec.bgp.as_mut()) {
                bgp.ipv4_ipip_tunnel_addr = Some(a.to_string());
            }
            if node.spec == before {
                return Ok(());
            }
            let value = super::cluster::record_value(&Resource::Node(node));
            match ds.update(Kind::Node.as_str(), &name, value, record.version) {
                Ok(_) => return Ok(()),
                Err(DatastoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
    .await;
    let (vxlan, vxlan_v6, ipip) = (
        tunnels.vxlan.map(|t| t.0),
        tunnels.vxlan_v6.map(|t| t.0),
        tunnels.ipip,
    );
    match result {
        Ok(Ok(())) => info!(?vxlan, ?vxlan_v6, ?ipip, "published tunnel addresses"),
        Ok(Err(e)) => warn!(error = %e, "publishing tunnel addresses failed"),
        Err(e) => warn!(error = %e, "publishing tunnel addresses failed"),
    }
    tunnels
}

/// The subnets of the node's interface addresses (the kernel's connected routes).
/// Turns IP forwarding on in routerd's namespace, as calico-node does: a node forwards its
/// pods' traffic, and packets coming back arrive on the underlay interface, whose forwarding
/// flag the kernel checks (`net.ipv4.ip_forward` sets it on every interface).
fn enable_forwarding(ipv6: bool) {
    let mut knobs = vec!["/proc/sys/net/ipv4/ip_forward"];
    if ipv6 {
        knobs.push("/proc/sys/net/ipv6/conf/all/forwarding");
    }
    for knob in knobs {
        match std::fs::read_to_string(knob) {
            Ok(v) if v.trim() == "1" => {}
            _ => match std::fs::write(knob, "1") {
                Ok(()) => info!(sysctl = knob, "enabled IP forwarding"),
                Err(e) => {
                    warn!(sysctl = knob, error = %e, "cannot enable IP forwarding; pods will not be reachable")
                }
            },
        }
    }
}

/// The natOutgoing rules the pools ask for (every pool, disabled ones included: their
/// addresses may still be in use).
fn nat_plan(view: &ClusterView) -> NatPlan {
    let pools: Vec<(IpNet, bool)> = view
        .pools
        .iter()
        .filter_map(|p| Some((p.spec.cidr.parse().ok()?, p.spec.nat_outgoing)))
        .collect();
    NatPlan::new(&pools)
}

/// See `fast_routes` in [`run`].
const FAST_ROUTES: Duration = Duration::from_millis(20);
const FAST_ROUTE_CHANGES: usize = 1000;

async fn peer_statuses(speaker: &SpeakerHandle) -> Vec<PeerStatus> {
    speaker.peers().await.unwrap_or_default()
}

fn update_session_health(
    health: &HealthState,
    sessions: &BTreeMap<IpAddr, DesiredSession>,
    peers: &[PeerStatus],
) {
    let rows: Vec<SessionStatus> = peers
        .iter()
        .filter_map(|p| session_status(sessions.get(&p.address)?, p))
        .collect();
    health.set_sessions(rows);
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn session_status(session: &DesiredSession, p: &PeerStatus) -> Option<SessionStatus> {
    Some(SessionStatus {
        name: session.name.clone(),
        address: p.address,
        peer_type: session.peer_type,
        remote_as: p.remote_as,
        state: p.state.clone(),
        since_unix: unix_now().saturating_sub(p.since_secs),
        families: p.families.clone(),
        prefixes_received: p.prefixes_received,
        prefixes_accepted: p.prefixes_accepted,
        prefixes_advertised: p.prefixes_advertised,
        family_prefixes: p.family_prefixes.clone(),
        bfd: p.bfd.clone(),
        last_error: p.last_error.clone(),
    })
}

fn status_source(
    snapshot: Arc<Mutex<Snapshot>>,
    speaker: SpeakerHandle,
    node: String,
    started: Instant,
) -> super::control::StatusSource {
    Arc::new(move || {
        let snapshot = snapshot.clone();
        let speaker = speaker.clone();
        let node = node.clone();
        Box::pin(async move {
            let peers = peer_statuses(&speaker).await;
            let snap = snapshot
                .lock()
                .map_err(|_| "status lock poisoned".to_string())?
                .clone();
            let mut sessions: Vec<SessionStatus> = peers
                .iter()
                .filter_map(|p| session_status(snap.sessions.get(&p.address)?, p))
                .collect();
            sessions.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(NodeStatus {
                node,
                version: env!("CARGO_PKG_VERSION").to_string(),
                state: snap.state,
                uptime_secs: started.elapsed().as_secs(),
                as_number: snap.as_number,
                router_id: snap.router_id,
                cluster_id: snap.cluster_id,
                blocks: snap.blocks.iter().map(|b| b.to_string()).collect(),
                sessions,
                fib: snap.fib,
                datastore: snap.datastore,
            })
        })
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use datastore::resource::SecretKeyRef;

    fn secret_ref(name: &str, key: &str) -> PasswordSource {
        PasswordSource {
            secret_key_ref: Some(SecretKeyRef {
                name: name.into(),
                key: key.into(),
            }),
            file: None,
        }
    }

    #[test]
    fn prefix_advertisements_tag_the_originated_prefixes_inside_their_cidr() {
        let spec: datastore::resource::BgpConfigurationSpec = serde_norway::from_str(
            r#"
communities:
  - name: pods
    value: "64512:100"
  - name: big
    value: "64512:1:2"
serviceClusterIPs:
  - cidr: 10.96.0.0/12
prefixAdvertisements:
  - cidr: 10.244.0.0/16
    communities: [pods, big, "65000:7"]
  - cidr: 10.244.1.0/24
    communities: [pods, "65000:8"]
"#,
        )
        .unwrap();
        let view = ClusterView {
            configs: vec![datastore::resource::BgpConfiguration::new("default", spec)],
            ..Default::default()
        };
        let blocks: Vec<IpNet> = vec!["10.244.1.0/24".parse().unwrap()];
        let out = originations(&blocks, &view, "node-1", &BTreeSet::new());
        let by_prefix: BTreeMap<String, &Origination> =
            out.iter().map(|o| (o.prefix.to_string(), o)).collect();
        assert_eq!(by_prefix.len(), 2, "{out:?}");
        let block = by_prefix["10.244.1.0/24"];
        // Both entries cover the block; a community named twice is attached once.
        assert_eq!(block.communities, ["64512:100", "65000:7", "65000:8"]);
        assert_eq!(block.large_communities, ["64512:1:2"]);
        // The service range lies outside every entry: no tags.
        let service = by_prefix["10.96.0.0/12"];
        assert!(service.communities.is_empty() && service.large_communities.is_empty());
    }

    #[test]
    fn log_severity_is_the_nodes_configuration_then_the_default_then_info() {
        let config = |name: &str, severity: Option<&str>| {
            datastore::resource::BgpConfiguration::new(
                name,
                datastore::resource::BgpConfigurationSpec {
                    log_severity_screen: severity.map(String::from),
                    ..Default::default()
                },
            )
        };
        let mut view = ClusterView::default();
        assert_eq!(log_severity(&view, "a"), tracing::Level::INFO);
        view.configs = vec![config("default", Some("Warning"))];
        assert_eq!(log_severity(&view, "a"), tracing::Level::WARN);
        view.configs.push(config("node.a", Some("Debug")));
        assert_eq!(log_severity(&view, "a"), tracing::Level::DEBUG);
        assert_eq!(log_severity(&view, "b"), tracing::Level::WARN);
        // A node configuration without the field leaves the default in force.
        view.configs.push(config("node.b", None));
        assert_eq!(log_severity(&view, "b"), tracing::Level::WARN);
        view.configs[0] = config("default", Some("Fatal"));
        assert_eq!(log_severity(&view, "b"), tracing::Level::ERROR);
    }

    #[test]
    fn passwords_come_from_files_and_only_kubernetes_has_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let reader = SecretReader::for_datastore("memory:").unwrap();
        let from_file = PasswordSource {
            secret_key_ref: None,
            file: Some(file.to_string_lossy().into_owned()),
        };
        assert_eq!(reader.password(&from_file).unwrap(), "from-file");
        let e = reader.password(&secret_ref("bgp", "pw")).unwrap_err();
        assert!(e.contains("kubernetes datastore"), "{e}");
    }

    #[cfg(feature = "kubernetes")]
    #[test]
    fn secret_passwords_are_read_from_the_pods_namespace() {
        use lab::kube_standin::{ApiServerStandin, StandinOptions};
        let standin = ApiServerStandin::start(StandinOptions::default()).unwrap();
        standin
            .create(
                "/api/v1/namespaces/kube-system/secrets",
                serde_json::json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "bgp-secrets", "namespace": "kube-system"},
                    "data": {"tor-password": "czNjcmV0"}, // "s3cret"
                }),
            )
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        standin.write_kubeconfig(&kubeconfig).unwrap();
        let reader =
            SecretReader::for_datastore(&format!("kubernetes:{}", kubeconfig.display())).unwrap();
        assert_eq!(
            reader
                .password(&secret_ref("bgp-secrets", "tor-password"))
                .unwrap(),
            "s3cret"
        );
        let e = reader
            .password(&secret_ref("bgp-secrets", "missing"))
            .unwrap_err();
        assert!(e.contains("kube-system/bgp-secrets"), "{e}");
    }
}

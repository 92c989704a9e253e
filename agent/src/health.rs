//! routerd health and metrics over HTTP: /readiness, /liveness, Prometheus /metrics.
//!
//! The daemon owns a [`HealthState`] (a cheap clone of an `Arc`) and updates it from its main
//! loop; [`serve`] answers probes and scrapes from the latest values, so a probe never waits
//! on the daemon and never blocks it.
//!
//! # Semantics
//!
//! - **Readiness** (`GET /readiness`, 200 or 503): the daemon has finished start-up
//!   ([`HealthState::set_started`]: node registered, sessions settled, first full FIB apply
//!   requested), the FIB is in sync (the last apply/reconcile left nothing failed), the
//!   datastore answers (as felix is not ready without its datastore connection), and at
//!   least one configured BGP session is Established, or none is configured (a single-node
//!   cluster). calico-node's `-bird-ready` instead wants *every* peer Established, which
//!   makes every node unready as soon as one node of a full mesh is down; one session is
//!   enough to show this node routes. The 503 body says why, listing the sessions that are
//!   not Established as calico-node does (`BGP not established with 10.0.0.2,10.0.0.3`).
//! - **Liveness** (`GET /liveness`, 200 or 503): the main loop called
//!   [`HealthState::heartbeat`] within the liveness timeout (default
//!   [`DEFAULT_LIVENESS_TIMEOUT`]); creating the state counts as the first heartbeat, so a slow
//!   start-up has one timeout's grace. A wedged loop stops the heartbeat and the kubelet
//!   restarts the pod, as with calico-node's `-felix-live`.
//! - **Metrics** (`GET /metrics`): Prometheus text format 0.0.4, see [`HealthState::render_metrics`].
//!
//! # The server
//!
//! A deliberately small HTTP/1.1 server: one request per connection (`Connection: close`),
//! request line and headers read up to [`MAX_REQUEST_BYTES`] within [`REQUEST_TIMEOUT`], GET
//! only, no request body. Anything else gets a 4xx answer and the connection is closed; at
//! most [`MAX_CONNECTIONS`] are served at once, so a flood of idle connections cannot grow
//! memory without bound.
//!
//! # Use
//!
//! ```no_run
//! # async fn daemon() -> Result<(), agent::health::HealthError> {
//! use agent::health::{serve, HealthState};
//!
//! let health = HealthState::new();
//! let _server = serve("127.0.0.1:9099".parse().unwrap(), health.clone()).await?;
//! // From the main loop:
//! health.heartbeat();
//! health.set_fib_in_sync(true);
//! health.set_started(true);
//! # Ok(())
//! # }
//! ```

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::status::SessionStatus;

/// How long the main loop may go without a heartbeat before liveness fails.
pub const DEFAULT_LIVENESS_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest request line plus headers accepted (431 beyond).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How long a client has to send its request and read the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;

/// Upper bounds (seconds) of the reconcile-duration histogram's buckets.
const RECONCILE_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0];

/// Why the health server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("health listen address {address} is in use")]
    InUse { address: SocketAddr },
    #[error("health listen address {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What the probes and /metrics report; cloned freely, updated by the daemon.
#[derive(Debug, Clone)]
pub struct HealthState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    created: Instant,
    liveness_timeout: Duration,
    started: AtomicBool,
    fib_in_sync: AtomicBool,
    datastore_reachable: AtomicBool,
    /// Milliseconds after `created` of the last heartbeat.
    heartbeat_ms: AtomicU64,
    fib_added: AtomicU64,
    fib_replaced: AtomicU64,
    fib_deleted: AtomicU64,
    fib_errors: AtomicU64,
    reconcile: Mutex<Histogram>,
    sessions: Mutex<Vec<SessionStatus>>,
}

#[derive(Debug, Default)]
struct Histogram {
    /// Non-cumulative count per bucket of [`RECONCILE_BUCKETS`] (the +Inf bucket is `count`).
    buckets: [u64; RECONCILE_BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
    last_seconds: Option<f64>,
}

impl Default for HealthState {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthState {
    /// A fresh state: not started, FIB not in sync, no sessions, heartbeat now.
    pub fn new() -> Self {
        Self::with_liveness_timeout(DEFAULT_LIVENESS_TIMEOUT)
    }

    /// As [`HealthState::new`] with another liveness timeout.
    pub fn with_liveness_timeout(liveness_timeout: Duration) -> Self {
        HealthState {
            inner: Arc::new(Inner {
                created: Instant::now(),
                liveness_timeout,
                started: AtomicBool::new(false),
                fib_in_sync: AtomicBool::new(false),
                datastore_reachable: AtomicBool::new(true),
                heartbeat_ms: AtomicU64::new(0),
                fib_added: AtomicU64::new(0),
                fib_replaced: AtomicU64::new(0),
                fib_deleted: AtomicU64::new(0),
                fib_errors: AtomicU64::new(0),
                reconcile: Mutex::new(Histogram::default()),
                sessions: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Start-up is over (or, with `false`, the daemon is stopping).
    pub fn set_started(&self, started: bool) {
        self.inner.started.store(started, Ordering::Relaxed);
    }

    /// Whether the kernel FIB holds what routerd wants (last apply/reconcile clean).
    pub fn set_fib_in_sync(&self, in_sync: bool) {
        self.inner.fib_in_sync.store(in_sync, Ordering::Relaxed);
    }

    /// Whether the datastore answers (reads and the watch); routerd keeps routing without it.
    pub fn set_datastore_reachable(&self, reachable: bool) {
        self.inner
            .datastore_reachable
            .store(reachable, Ordering::Relaxed);
    }

    /// The main loop is alive; call it every tick.
    pub fn heartbeat(&self) {
        let ms = self.inner.created.elapsed().as_millis();
        self.inner
            .heartbeat_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Counts FIB route operations done: added, replaced (changed), deleted.
    pub fn record_fib_ops(&self, added: u64, replaced: u64, deleted: u64) {
        self.inner.fib_added.fetch_add(added, Ordering::Relaxed);
        self.inner
            .fib_replaced
            .fetch_add(replaced, Ordering::Relaxed);
        self.inner.fib_deleted.fetch_add(deleted, Ordering::Relaxed);
    }

    /// Counts FIB route operations that failed.
    pub fn record_fib_errors(&self, failed: u64) {
        self.inner.fib_errors.fetch_add(failed, Ordering::Relaxed);
    }

    /// Records how long one full FIB reconcile took.
    pub fn record_reconcile(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let mut h = lock(&self.inner.reconcile);
        if let Some(i) = RECONCILE_BUCKETS.iter().position(|&le| seconds <= le) {
            h.buckets[i] += 1;
        }
        h.count += 1;
        h.sum_seconds += seconds;
        h.last_seconds = Some(seconds);
    }

    /// Replaces the configured sessions' states (all of them, each time).
    pub fn set_sessions(&self, sessions: Vec<SessionStatus>) {
        *lock(&self.inner.sessions) = sessions;
    }

    /// `Ok` when ready, else why not (one line).
    pub fn readiness(&self) -> Result<(), String> {
        let mut reasons = Vec::new();
        if !self.inner.started.load(Ordering::Relaxed) {
            reasons.push("start-up not finished".to_string());
        }
        if !self.inner.fib_in_sync.load(Ordering::Relaxed) {
            reasons.push("FIB not in sync".to_string());
        }
        if !self.inner.datastore_reachable.load(Ordering::Relaxed) {
            reasons.push("datastore unreachable".to_string());
        }
        {
            let sessions = lock(&self.inner.sessions);
            let down: Vec<String> = sessions
                .iter()
                .filter(|s| s.state != "Established")
                .map(|s| s.address.to_string())
                .collect();
            if !sessions.is_empty() && down.len() == sessions.len() {
                reasons.push(format!("BGP not established with {}", down.join(",")));
            }
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons.join("; "))
        }
    }

    /// `Ok` when the main loop ticked within the liveness timeout, else how long ago it did.
    pub fn liveness(&self) -> Result<(), String> {
        let age = self.heartbeat_age();
        if age <= self.inner.liveness_timeout {
            Ok(())
        } else {
            Err(format!(
                "main loop last ticked {:.1}s ago (limit {:.1}s)",
                age.as_secs_f64(),
                self.inner.liveness_timeout.as_secs_f64()
            ))
        }
    }

    fn heartbeat_age(&self) -> Duration {
        let last = Duration::from_millis(self.inner.heartbeat_ms.load(Ordering::Relaxed));
        self.inner.created.elapsed().saturating_sub(last)
    }

    /// The Prometheus text exposition (format 0.0.4) of the current state:
    ///
    /// - `routerd_ready`, `routerd_live`, `routerd_fib_in_sync`,
    ///   `routerd_datastore_reachable` (gauges, 0/1),
    /// - `routerd_fib_operations_total{op="add|replace|delete"}`, `routerd_fib_errors_total`,
    /// - `routerd_reconcile_duration_seconds` (histogram) and
    ///   `routerd_reconcile_last_duration_seconds`,
    /// - per session, labelled `peer`, `name` (`Mesh_10_0_0_2`) and `type`
    ///   (`node-to-node mesh`): `routerd_bgp_session_established` (0/1) and
    ///   `routerd_bgp_prefixes_{received,accepted,advertised}`.
    pub fn render_metrics(&self) -> String {
        let i = &self.inner;
        let mut out = String::new();
        let flag = |b: bool| u8::from(b);
        gauge(
            &mut out,
            "routerd_ready",
            "Whether routerd is ready (see /readiness).",
            flag(self.readiness().is_ok()),
        );
        gauge(
            &mut out,
            "routerd_live",
            "Whether routerd's main loop ticked within the liveness timeout.",
            flag(self.liveness().is_ok()),
        );
        gauge(
            &mut out,
            "routerd_fib_in_sync",
            "Whether the kernel FIB holds the routes routerd wants.",
            flag(i.fib_in_sync.load(Ordering::Relaxed)),
        );
        gauge(
            &mut out,
            "routerd_datastore_reachable",
            "Whether the datastore answers routerd's reads and watch.",
            flag(i.datastore_reachable.load(Ordering::Relaxed)),
        );
        header(
            &mut out,
            "routerd_fib_operations_total",
            "Kernel route operations done, by operation.",
            "counter",
        );
        for (op, n) in [
            ("add", &i.fib_added),
            ("replace", &i.fib_replaced),
            ("delete", &i.fib_deleted),
        ] {
            let _ = writeln!(
                out,
                "routerd_fib_operations_total{{op=\"{op}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        header(
            &mut out,
            "routerd_fib_errors_total",
            "Kernel route operations that failed (each is retried).",
            "counter",
        );
        let _ = writeln!(
            out,
            "routerd_fib_errors_total {}",
            i.fib_errors.load(Ordering::Relaxed)
        );
        {
            let h = lock(&i.reconcile);
            header(
                &mut out,
                "routerd_reconcile_duration_seconds",
                "Duration of full FIB reconciles.",
                "histogram",
            );
            let mut cumulative = 0;
            for (le, n) in RECONCILE_BUCKETS.iter().zip(h.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "routerd_reconcile_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "routerd_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "routerd_reconcile_duration_seconds_sum {}",
                h.sum_seconds
            );
            let _ = writeln!(out, "routerd_reconcile_duration_seconds_count {}", h.count);
            header(
                &mut out,
                "routerd_reconcile_last_duration_seconds",
                "Duration of the last full FIB reconcile.",
                "gauge",
            );
            let _ = writeln!(
                out,
                "routerd_reconcile_last_duration_seconds {}",
                h.last_seconds.unwrap_or(0.0)
            );
        }
        let sessions = lock(&i.sessions).clone();
        type Field = fn(&SessionStatus) -> u64;
        let per_session: [(&str, &str, Field); 4] = [
            (
                "routerd_bgp_session_established",
                "Whether the BGP session is Established.",
                |s| u64::from(s.state == "Established"),
            ),
            (
                "routerd_bgp_prefixes_received",
                "Prefixes received from the peer.",
                |s| s.prefixes_received,
            ),
            (
                "routerd_bgp_prefixes_accepted",
                "Prefixes received from the peer and accepted by import policy.",
                |s| s.prefixes_accepted,
            ),
            (
                "routerd_bgp_prefixes_advertised",
                "Prefixes advertised to the peer.",
                |s| s.prefixes_advertised,
            ),
        ];
        for (name, help, value) in per_session {
            header(&mut out, name, help, "gauge");
            for s in &sessions {
                let _ = writeln!(
                    out,
                    "{name}{{peer=\"{}\",name=\"{}\",type=\"{}\"}} {}",
                    escape_label(&s.address.to_string()),
                    escape_label(&s.name),
                    escape_label(s.peer_type.as_str()),
                    value(s)
                );
            }
        }
        // Only sessions with BFD configured have the series (as BIRD's `show bfd sessions`).
        header(
            &mut out,
            "routerd_bfd_session_up",
            "Whether the BGP session's BFD session is Up (sessions with BFD only).",
            "gauge",
        );
        for s in sessions.iter().filter(|s| s.bfd.is_some()) {
            let up = s.bfd.as_ref().is_some_and(|b| b.state == "Up");
            let _ = writeln!(
                out,
                "routerd_bfd_session_up{{peer=\"{}\",name=\"{}\",type=\"{}\"}} {}",
                escape_label(&s.address.to_string()),
                escape_label(&s.name),
                escape_label(s.peer_type.as_str()),
                u8::from(up)
            );
        }
        out
    }
}

/// Locks a mutex, taking the data even if a holder panicked (the values stay meaningful).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: u8) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {value}");
}

/// Escapes a label value as the exposition format requires: `\` `"` and newline.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A running health server. Dropping it leaves the server running (the daemon serves until
/// it exits); [`HealthServer::abort`] stops it.
#[derive(Debug)]
pub struct HealthServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl HealthServer {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections.
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// Binds `listen` and serves /readiness, /liveness and /metrics from `state` on the current
/// tokio runtime. A bind failure is returned (`health listen address ... is in use`).
pub async fn serve(listen: SocketAddr, state: HealthState) -> Result<HealthServer, HealthError> {
    let listener = TcpListener::bind(listen).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            HealthError::InUse { address: listen }
        } else {
            HealthError::Bind {
                address: listen,
                source,
            }
        }
    })?;
    let local_addr = listener.local_addr().map_err(|source| HealthError::Bind {
        address: listen,
        source,
    })?;
    tracing::info!(address = %local_addr, "health and metrics server listening");
    let task = tokio::spawn(accept_loop(listener, state));
    Ok(HealthServer { local_addr, task })
}

async fn accept_loop(listener: TcpListener, state: HealthState) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin.
                warn!(error = %e, "health server accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "health server busy; closing connection");
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if tokio::time::timeout(REQUEST_TIMEOUT, handle(stream, &state))
                .await
                .is_err()
            {
                debug!(%peer, "health request timed out");
            }
        });
    }
}

/// One HTTP answer.
struct Answer {
    status: u16,
    content_type: &'static str,
    body: String,
    allow_get: bool,
}

impl Answer {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            allow_get: false,
        }
    }
}

async fn handle(mut stream: TcpStream, state: &HealthState) {
    let answer = match read_request(&mut stream).await {
        Ok(head) => route(&head, state),
        Err(RequestError::Closed) => return,
        Err(RequestError::TooLarge) => Answer::text(431, "request header too large\n"),
        Err(RequestError::Malformed) => Answer::text(400, "bad request\n"),
    };
    let reason = match answer.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        answer.status,
        answer.content_type,
        answer.body.len()
    );
    if answer.allow_get {
        head.push_str("Allow: GET\r\n");
    }
    head.push_str("\r\n");
    // The client may already be gone; nothing to do about it then.
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(answer.body.as_bytes()).await;
    let _ = stream.shutdown().await;
    // Closing with unread input makes the kernel send a RST, which may destroy the answer
    // before the client reads it (a 431 is sent before the request is fully read). So drain
    // what the client still sends, bounded in bytes and time, as HTTP servers' "lingering
    // close" does.
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    let deadline = tokio::time::Instant::now() + LINGER;
    while drained < MAX_LINGER_BYTES {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}

/// How long, and how much, a closing connection drains from the client.
const LINGER: Duration = Duration::from_secs(1);
const MAX_LINGER_BYTES: usize = 256 * 1024;

enum RequestError {
    /// The client closed without sending a request.
    Closed,
    TooLarge,
    Malformed,
}

/// Reads up to the blank line ending the headers; returns the request line.
async fn read_request(stream: &mut TcpStream) -> Result<String, RequestError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| RequestError::Malformed)?;
        if n == 0 {
            return Err(if buf.is_empty() {
                RequestError::Closed
            } else {
                RequestError::Malformed
            });
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = header_end(&buf) {
            buf.truncate(end);
            break;
        }
        if buf.len() > MAX_REQUEST_BYTES {
            return Err(RequestError::TooLarge);
        }
    }
    if buf.len() > MAX_REQUEST_BYTES {
        return Err(RequestError::TooLarge);
    }
    let head = std::str::from_utf8(&buf).map_err(|_| RequestError::Malformed)?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    // Each header must at least look like `name: value`.
    for line in lines.filter(|l| !l.is_empty()) {
        match line.split_once(':') {
            Some((name, _)) if !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()) => {}
            _ => return Err(RequestError::Malformed),
        }
    }
    Ok(request_line.to_string())
}

/// Offset of the end of the header block (`\r\n\r\n`, or a bare `\n\n`), if complete.
fn header_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn route(request_line: &str, state: &HealthState) -> Answer {
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Answer::text(400, "bad request line\n");
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') || method.is_empty() {
        return Answer::text(400, "bad request line\n");
    }
    if method != "GET" {
        let mut a = Answer::text(405, "only GET is served\n");
        a.allow_get = true;
        return a;
    }
    let path = target.split('?').next().unwrap_or(target);
    match path {
        "/readiness" => match state.readiness() {
            Ok(()) => Answer::text(200, "ready\n"),
            Err(why) => Answer::text(503, format!("not ready: {why}\n")),
        },
        "/liveness" => match state.liveness() {
            Ok(()) => Answer::text(200, "live\n"),
            Err(why) => Answer::text(503, format!("not live: {why}\n")),
        },
        "/metrics" => Answer {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: state.render_metrics(),
            allow_get: false,
        },
        _ => Answer::text(404, "not found (try /readiness, /liveness, /metrics)\n"),
    }
}

/// `routerd health --ready|--live [--health-listen ADDR]`: asks the running daemon's health
/// server (`ADDR`, else `ROUTERD_HEALTH_LISTEN`, else [`DEFAULT_HEALTH_LISTEN`]) and returns
/// the exit status: 0 when it answers 200, 1 otherwise (the reason on stderr), 2 for a usage
/// error. Blocking and bounded by [`PROBE_TIMEOUT`]: a kubelet exec probe.
///
/// [`DEFAULT_HEALTH_LISTEN`]: crate::settings::DEFAULT_HEALTH_LISTEN
pub fn probe_command(args: &[String]) -> i32 {
    const USAGE: &str = "usage: routerd health --ready|--live [--health-listen <ip>:<port>]";
    let mut path = None;
    let mut listen = std::env::var("ROUTERD_HEALTH_LISTEN")
        .ok()
        .filter(|v| !v.is_empty());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--ready" => path = Some("/readiness"),
            "--live" => path = Some("/liveness"),
            "--health-listen" => listen = it.next().cloned(),
            other => match other.strip_prefix("--health-listen=") {
                Some(v) => listen = Some(v.to_string()),
                None => {
                    eprintln!("routerd health: unknown argument {other:?}\n{USAGE}");
                    return 2;
                }
            },
        }
    }
    let Some(path) = path else {
        eprintln!("{USAGE}");
        return 2;
    };
    let address = match listen.as_deref().map(crate::settings::parse_health_listen) {
        None => crate::settings::DEFAULT_HEALTH_LISTEN,
        Some(Ok(Some(a))) => a,
        Some(Ok(None)) => {
            eprintln!("routerd health: the health server is off (health-listen none)");
            return 1;
        }
        Some(Err(e)) => {
            eprintln!("routerd health: --health-listen: {e}");
            return 2;
        }
    };
    // The daemon listens on every address: ask it on loopback.
    let address = if address.ip().is_unspecified() {
        let lo: std::net::IpAddr = if address.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(lo, address.port())
    } else {
        address
    };
    match probe(address, path) {
        Ok((200, _)) => 0,
        Ok((status, body)) => {
            eprintln!("routerd health: {path}: {status} {}", body.trim_end());
            1
        }
        Err(e) => {
            eprintln!("routerd health: cannot reach routerd at {address}: {e}");
            1
        }
    }
}

/// How long `routerd health` waits for the daemon.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// One `GET path` to the health server at `address`: the status code and the body.
pub fn probe(address: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&address, PROBE_TIMEOUT)?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: routerd\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {text:.80}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    Ok((status, body))
}

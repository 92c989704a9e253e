//! routerd's health/metrics server against a real listener on 127.0.0.1:0: readiness and
//! liveness follow the state, exact metrics lines, label escaping, and a server that
//! survives bad clients.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use agent::health::{escape_label, serve, HealthError, HealthServer, HealthState};
use agent::status::{PeerType, SessionStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ANY_PORT: &str = "127.0.0.1:0";

async fn start(state: &HealthState) -> HealthServer {
    serve(ANY_PORT.parse().unwrap(), state.clone())
        .await
        .unwrap()
}

/// Sends raw bytes, returns (status code, headers, body); the server closes after answering.
async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("server answered in time")
        .unwrap();
    let text = String::from_utf8(answer).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (status, head.to_string(), body.to_string())
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: kube-probe/1.30\r\n\r\n");
    let (status, head, body) = raw(addr, req.as_bytes()).await;
    assert!(head.contains("Connection: close"), "{head}");
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{head}"
    );
    (status, body)
}

fn session(ip: &str, peer_type: PeerType, state: &str, counts: [u64; 3]) -> SessionStatus {
    let address: IpAddr = ip.parse().unwrap();
    SessionStatus {
        name: peer_type.session_name(address),
        address,
        peer_type,
        remote_as: 64512,
        state: state.to_string(),
        since_unix: 0,
        families: vec!["ipv4-unicast".into()],
        prefixes_received: counts[0],
        prefixes_accepted: counts[1],
        prefixes_advertised: counts[2],
        family_prefixes: Vec::new(),
        last_error: None,
        bfd: None,
    }
}

#[tokio::test]
async fn readiness_follows_startup_fib_and_sessions() {
    let state = HealthState::new();
    let server = start(&state).await;
    let addr = server.local_addr();

    let (code, body) = get(addr, "/readiness").await;
    assert_eq!(code, 503);
    assert_eq!(body, "not ready: start-up not finished; FIB not in sync\n");

    state.set_started(true);
    let (code, body) = get(addr, "/readiness").await;
    assert_eq!((code, body.as_str()), (503, "not ready: FIB not in sync\n"));

    // No sessions configured: ready once the FIB is in sync.
    state.set_fib_in_sync(true);
    assert_eq!(get(addr, "/readiness").await, (200, "ready\n".into()));

    // Sessions configured, none up: not ready, listing them.
    state.set_sessions(vec![
        session("10.0.0.2", PeerType::NodeMesh, "Active", [0; 3]),
        session("10.0.0.3", PeerType::NodeMesh, "Connect", [0; 3]),
    ]);
    assert_eq!(
        get(addr, "/readiness").await,
        (
            503,
            "not ready: BGP not established with 10.0.0.2,10.0.0.3\n".into()
        )
    );
    // One up is enough.
    state.set_sessions(vec![
        session("10.0.0.2", PeerType::NodeMesh, "Established", [0; 3]),
        session("10.0.0.3", PeerType::NodeMesh, "Connect", [0; 3]),
    ]);
    assert_eq!(get(addr, "/readiness").await.0, 200);

    // A FIB error makes it unready again; the query string is ignored.
    state.set_fib_in_sync(false);
    assert_eq!(get(addr, "/readiness?verbose=1").await.0, 503);
    // Stopping.
    state.set_fib_in_sync(true);
    state.set_started(false);
    assert_eq!(get(addr, "/readiness").await.0, 503);
    server.abort();
}

#[tokio::test]
async fn liveness_goes_stale_without_heartbeats() {
    let state = HealthState::with_liveness_timeout(Duration::from_millis(1000));
    let server = start(&state).await;
    let addr = server.local_addr();
    // Creation counts as a heartbeat.
    assert_eq!(get(addr, "/liveness").await, (200, "live\n".into()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, body) = get(addr, "/liveness").await;
    assert_eq!(code, 503);
    assert!(
        body.starts_with("not live: main loop last ticked") && body.ends_with("(limit 1.0s)\n"),
        "{body}"
    );
    state.heartbeat();
    assert_eq!(get(addr, "/liveness").await.0, 200);
    // Liveness does not depend on readiness.
    assert_eq!(get(addr, "/readiness").await.0, 503);
}

#[tokio::test]
async fn the_exec_probe_answers_as_the_http_endpoints() {
    // `routerd health --ready|--live`, as the DaemonSet's exec probes run it.
    let state = HealthState::new();
    let server = start(&state).await;
    let addr = server.local_addr().to_string();
    let run = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        agent::health::probe_command(&args)
    };
    let (live, ready) = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || {
            (
                run(&["--live", "--health-listen", &addr]),
                run(&["--ready", &format!("--health-listen={addr}")]),
            )
        }
    })
    .await
    .unwrap();
    assert_eq!((live, ready), (0, 1), "live, not ready before start-up");
    state.set_started(true);
    state.set_fib_in_sync(true);
    let ready = tokio::task::spawn_blocking(move || run(&["--ready", "--health-listen", &addr]))
        .await
        .unwrap();
    assert_eq!(ready, 0);
    assert_eq!(run(&["--bogus"]), 2);
    assert_eq!(run(&[]), 2);
    // Nobody listening: not healthy, and quickly.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = closed.local_addr().unwrap().to_string();
    drop(closed);
    assert_eq!(run(&["--live", "--health-listen", &gone]), 1);
}

#[tokio::test]
async fn metrics_report_the_known_state_exactly() {
    let state = HealthState::new();
    state.set_started(true);
    state.set_fib_in_sync(true);
    state.record_fib_ops(3, 2, 1);
    state.record_fib_ops(1, 0, 0);
    state.record_fib_errors(2);
    state.record_reconcile(Duration::from_millis(20));
    state.record_reconcile(Duration::from_millis(2));
    state.record_reconcile(Duration::from_secs(40));
    let mut tor = session("192.168.1.1", PeerType::Global, "Active", [0, 0, 0]);
    tor.bfd = Some(bgp::speaker::control::BfdView {
        state: "Down".into(),
        remote_state: "Down".into(),
        diag: "Control Detection Time Expired".into(),
        tx_interval_ms: Some(1000),
        detection_time_ms: 0,
        error: None,
    });
    state.set_sessions(vec![
        session("10.0.0.2", PeerType::NodeMesh, "Established", [5, 4, 3]),
        tor,
    ]);
    let server = start(&state).await;
    let (status, head, body) = raw(
        server.local_addr(),
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    let lines: Vec<&str> = body.lines().collect();
    for expected in [
        "# HELP routerd_ready Whether routerd is ready (see /readiness).",
        "# TYPE routerd_ready gauge",
        "routerd_ready 1",
        "routerd_live 1",
        "routerd_fib_in_sync 1",
        "# TYPE routerd_fib_operations_total counter",
        r#"routerd_fib_operations_total{op="add"} 4"#,
        r#"routerd_fib_operations_total{op="replace"} 2"#,
        r#"routerd_fib_operations_total{op="delete"} 1"#,
        "# TYPE routerd_fib_errors_total counter",
        "routerd_fib_errors_total 2",
        "# TYPE routerd_reconcile_duration_seconds histogram",
        r#"routerd_reconcile_duration_seconds_bucket{le="0.001"} 0"#,
        r#"routerd_reconcile_duration_seconds_bucket{le="0.005"} 1"#,
        r#"routerd_reconcile_duration_seconds_bucket{le="0.01"} 1"#,
        r#"routerd_reconcile_duration_seconds_bucket{le="0.025"} 2"#,
        r#"routerd_reconcile_duration_seconds_bucket{le="30"} 2"#,
        r#"routerd_reconcile_duration_seconds_bucket{le="+Inf"} 3"#,
        "routerd_reconcile_duration_seconds_sum 40.022",
        "routerd_reconcile_duration_seconds_count 3",
        "routerd_reconcile_last_duration_seconds 40",
        "# TYPE routerd_bgp_session_established gauge",
        r#"routerd_bgp_session_established{peer="10.0.0.2",name="Mesh_10_0_0_2",type="node-to-node mesh"} 1"#,
        r#"routerd_bgp_session_established{peer="192.168.1.1",name="Global_192_168_1_1",type="global"} 0"#,
        r#"routerd_bgp_prefixes_received{peer="10.0.0.2",name="Mesh_10_0_0_2",type="node-to-node mesh"} 5"#,
        r#"routerd_bgp_prefixes_accepted{peer="10.0.0.2",name="Mesh_10_0_0_2",type="node-to-node mesh"} 4"#,
        r#"routerd_bgp_prefixes_advertised{peer="10.0.0.2",name="Mesh_10_0_0_2",type="node-to-node mesh"} 3"#,
        r#"routerd_bgp_prefixes_received{peer="192.168.1.1",name="Global_192_168_1_1",type="global"} 0"#,
        "# TYPE routerd_bfd_session_up gauge",
        r#"routerd_bfd_session_up{peer="192.168.1.1",name="Global_192_168_1_1",type="global"} 0"#,
    ] {
        assert!(lines.contains(&expected), "missing {expected:?} in\n{body}");
    }
    // Only sessions with BFD have the BFD series.
    assert!(
        !body.contains(r#"routerd_bfd_session_up{peer="10.0.0.2""#),
        "{body}"
    );
    // Every sample line is `name{labels} value` with a numeric value, and every metric
    // name has exactly one HELP and one TYPE line, before its samples.
    let mut typed = std::collections::HashSet::new();
    for line in &lines {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap();
            assert!(typed.insert(name.to_string()), "duplicate TYPE {name}");
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
        let name = series.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "{line} before its TYPE");
    }
    server.abort();
}

#[tokio::test]
async fn label_values_are_escaped() {
    assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
    assert_eq!(escape_label("x\ny"), r"x\ny");
    let state = HealthState::new();
    let mut s = session("10.0.0.9", PeerType::NodeSpecific, "Established", [1, 1, 1]);
    s.name = "odd\"name\\with\nnewline".into();
    state.set_sessions(vec![s]);
    let server = start(&state).await;
    let (code, body) = get(server.local_addr(), "/metrics").await;
    assert_eq!(code, 200);
    let expected = r#"routerd_bgp_session_established{peer="10.0.0.9",name="odd\"name\\with\nnewline",type="node specific"} 1"#;
    assert!(body.lines().any(|l| l == expected), "{body}");
}

#[tokio::test]
async fn unknown_paths_and_methods_are_refused() {
    let state = HealthState::new();
    let server = start(&state).await;
    let addr = server.local_addr();
    assert_eq!(get(addr, "/").await.0, 404);
    assert_eq!(get(addr, "/readinessx").await.0, 404);
    let (code, head, _) = raw(
        addr,
        b"POST /readiness HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(code, 405);
    assert!(head.contains("Allow: GET"), "{head}");
}

#[tokio::test]
async fn malformed_requests_get_400_and_the_server_keeps_serving() {
    let state = HealthState::new();
    let server = start(&state).await;
    let addr = server.local_addr();
    let garbage: &[&[u8]] = &[
        b"\x00\xff\xfe garbage\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /metrics\r\n\r\n",
        b"GET /metrics HTTP/1.1 extra\r\n\r\n",
        b"GET metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics SPDY/3\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\n: empty name\r\n\r\n",
    ];
    for g in garbage {
        let (code, _, _) = raw(addr, g).await;
        assert_eq!(code, 400, "{:?}", String::from_utf8_lossy(g));
    }
    // A request cut short, and a client that connects and leaves without a word.
    {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metr").await.unwrap();
        s.shutdown().await.unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.unwrap();
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 400"));
    }
    drop(TcpStream::connect(addr).await.unwrap());
    // Still serving.
    assert_eq!(get(addr, "/liveness").await.0, 200);
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let state = HealthState::new();
    let server = start(&state).await;
    let addr = server.local_addr();
    let mut req = b"GET /metrics HTTP/1.1\r\n".to_vec();
    for i in 0..200 {
        req.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(60)).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    assert!(req.len() > agent::health::MAX_REQUEST_BYTES);
    // The server answers before reading everything; the write may fail after the answer.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(&req).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 431 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // A header block without an end, sent slowly, is cut at the limit too.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut answer = Vec::new();
    for _ in 0..20 {
        if s.write_all(&[b'a'; 1024]).await.is_err() {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 431 "));
    assert_eq!(get(addr, "/liveness").await.0, 200);
}

#[tokio::test]
async fn an_idle_client_does_not_block_others() {
    let state = HealthState::new();
    let server = start(&state).await;
    let addr = server.local_addr();
    let idle: Vec<TcpStream> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(TcpStream::connect(addr).await.unwrap());
        }
        v
    };
    let started = std::time::Instant::now();
    assert_eq!(get(addr, "/liveness").await.0, 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(idle);
}

#[tokio::test]
async fn a_taken_address_is_a_one_line_error() {
    let taken = std::net::TcpListener::bind(ANY_PORT).unwrap();
    let addr = taken.local_addr().unwrap();
    let err = serve(addr, HealthState::new()).await.unwrap_err();
    assert!(matches!(err, HealthError::InUse { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("health listen address {addr} is in use")
    );
}

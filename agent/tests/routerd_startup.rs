//! routerd's start-up failures end the process with exit status 1 and one clear line on
//! stderr (issue 4: "start-up errors ... exit with one clear line"), and it shuts down
//! cleanly on SIGTERM. Each case runs the real binary in a namespace this test creates.
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

use std::fs::File;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use agent::status::query_status;
use lab::{require, wait_for, Daemon, Netns};

const ROUTERD: &str = env!("CARGO_BIN_EXE_routerd");

/// Runs routerd to completion (bounded: it must fail fast).
fn run_to_exit(ns: &Netns, args: &[&str], uid: Option<u32>) -> Output {
    let mut argv: Vec<String> = Vec::new();
    if let Some(uid) = uid {
        argv.extend(
            [
                "setpriv",
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
            ]
            .map(String::from),
        );
    }
    argv.push(ROUTERD.into());
    argv.extend(args.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut child = ns
        .command(&argv)
        .env("ROUTERD_FIB_SETTLE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "routerd {args:?} did not exit: {:?}",
                child.wait_with_output()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Exit status 1 and exactly one stderr line starting `routerd:` containing `needle`.
fn assert_one_line_failure(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("routerd:"))
        .collect();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(lines.len(), 1, "one error line expected: {stderr}");
    assert!(
        lines[0].contains(needle),
        "{needle:?} not in {:?} (stderr: {stderr})",
        lines[0]
    );
}

fn node_ns(tag: &str) -> Netns {
    let ns = Netns::new(tag).unwrap();
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ])
    .unwrap();
    ns.ip(&["link", "set", "eth0", "up"]).unwrap();
    ns.ip(&["link", "set", "eth1", "up"]).unwrap();
    ns.ip(&["addr", "add", "10.0.0.1/24", "dev", "eth0"])
        .unwrap();
    ns
}

fn base_args<'a>(datastore: &'a str, socket: &'a str) -> Vec<&'a str> {
    vec![
        "--node-name",
        "node-a",
        "--node-ip",
        "10.0.0.1/24",
        "--datastore",
        datastore,
        "--control-socket",
        socket,
        "--health-listen",
        "none",
    ]
}

/// Starts routerd with [`base_args`] (no log settings of its own: no `ROUTERD_LOG*` from the
/// test's environment either), its output to `log`, and waits until its control socket answers.
fn start_serving(ns: &Netns, datastore: &str, socket: &Path, log: File) -> Daemon {
    start_serving_with(ns, datastore, socket, log, &[])
}

/// [`start_serving`] with extra arguments.
fn start_serving_with(
    ns: &Netns,
    datastore: &str,
    socket: &Path,
    log: File,
    extra: &[&str],
) -> Daemon {
    let mut args = base_args(datastore, socket.to_str().unwrap());
    args.insert(0, ROUTERD);
    args.extend_from_slice(extra);
    let daemon = Daemon::from_child(
        ns.command(&args)
            .env_remove("ROUTERD_LOG")
            .env_remove("ROUTERD_LOG_LEVEL")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_for(
        "routerd's control socket",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || query_status(socket, Duration::from_secs(2)).ok(),
    )
    .unwrap();
    daemon
}

#[test]
fn unknown_datastore_is_one_line() {
    require(&["ip"]);
    let ns = node_ns("rsds");
    let out = run_to_exit(
        &ns,
        &base_args("etcd://10.0.0.9:2379", "/tmp/routerd-unused.ctl"),
        None,
    );
    assert_one_line_failure(&out, "datastore");
}

#[test]
fn invalid_setting_is_one_line() {
    require(&["ip"]);
    let ns = node_ns("rsset");
    let out = run_to_exit(
        &ns,
        &[
            "--node-name",
            "node-a",
            "--node-ip",
            "10.0.0.1/24",
            "--as",
            "0",
        ],
        None,
    );
    assert_one_line_failure(&out, "--as");
}

#[test]
fn port_in_use_is_one_line_and_sigterm_stops_cleanly() {
    require(&["ip"]);
    let dir = tempfile::tempdir().unwrap();
    let datastore = format!("file:{}", dir.path().join("ds").display());
    let ns = node_ns("rsport");
    let first_socket = dir.path().join("first.ctl");
    let log = File::create(dir.path().join("first.log")).unwrap();
    let mut first = start_serving(&ns, &datastore, &first_socket, log);

    // A second daemon on the same node: BGP port taken.
    let second_socket = dir.path().join("second.ctl");
    let out = run_to_exit(
        &ns,
        &base_args(&datastore, second_socket.to_str().unwrap()),
        None,
    );
    assert_one_line_failure(&out, "in use");

    // The first one's control socket cannot be stolen either.
    let out = run_to_exit(
        &ns,
        &base_args(&datastore, first_socket.to_str().unwrap()),
        None,
    );
    assert_one_line_failure(&out, "another routerd");

    // SIGTERM: exit status 0, control socket removed.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_for(
        "routerd to exit",
        Duration::from_secs(15),
        Duration::from_millis(50),
        || (!first.is_running()).then_some(()),
    )
    .unwrap();
    assert!(!Path::new(&first_socket).exists());
}

#[test]
fn no_privileges_is_one_line_with_a_hint() {
    require(&["ip", "setpriv"]);
    let dir = tempfile::tempdir().unwrap();
    // The datastore and socket are usable by the unprivileged user: what fails is the
    // privileged part (binding the BGP port).
    let open = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    };
    open(dir.path());
    let ds = dir.path().join("ds");
    std::fs::create_dir(&ds).unwrap();
    open(&ds);
    let datastore = format!("file:{}", ds.display());
    let socket = dir.path().join("n.ctl");
    let ns = node_ns("rspriv");
    let out = run_to_exit(
        &ns,
        &base_args(&datastore, socket.to_str().unwrap()),
        Some(65534),
    );
    assert_one_line_failure(&out, "needs root");
}

/// Applies a manifest with routectl (the way an operator changes the cluster).
fn apply(datastore: &str, dir: &Path, manifest: &str) {
    let file = dir.join("manifest.yaml");
    std::fs::write(&file, manifest).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_routectl"))
        .args(["--datastore", datastore, "apply", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "routectl apply: {out:?}");
}

#[test]
fn log_level_follows_the_bgp_configuration_when_no_setting_fixes_it() {
    require(&["ip"]);
    let dir = tempfile::tempdir().unwrap();
    let datastore = format!("file:{}", dir.path().join("ds").display());
    // Calico's cluster-wide setting: warnings and errors only.
    apply(
        &datastore,
        dir.path(),
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\n\
         spec:\n  logSeverityScreen: Warning\n",
    );
    let ns = node_ns("rslog");
    let socket = dir.path().join("routerd.ctl");
    let log_path = dir.path().join("routerd.log");
    let log = File::create(&log_path).unwrap();
    let _daemon = start_serving(&ns, &datastore, &socket, log);
    let read = || std::fs::read_to_string(&log_path).unwrap();
    let quiet = read();
    // The speaker starts after the configuration was read: its INFO lines are not there.
    assert!(
        !quiet.contains("listening for BGP connections") && !quiet.contains(" DEBUG "),
        "INFO/DEBUG logged under logSeverityScreen Warning:\n{quiet}"
    );

    // The node's own configuration overrides the default, live.
    apply(
        &datastore,
        dir.path(),
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: node.node-a\n\
         spec:\n  logSeverityScreen: Debug\n",
    );
    wait_for(
        "DEBUG lines after logSeverityScreen Debug",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let text = read();
            text[quiet.len()..].contains(" DEBUG ").then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}:\n{}", read()));
    assert!(read()[quiet.len()..].contains("log level changed by BGPConfiguration"));
}

/// `--log-format json`: every line routerd writes is one JSON object, the structured fields
/// of an event kept as JSON fields.
#[test]
fn json_log_lines_keep_the_structured_fields() {
    require(&["ip"]);
    let dir = tempfile::tempdir().unwrap();
    let datastore = format!("file:{}", dir.path().join("ds").display());
    let ns = node_ns("rsjson");
    let socket = dir.path().join("routerd.ctl");
    let log_path = dir.path().join("routerd.log");
    let log = File::create(&log_path).unwrap();
    let _daemon = start_serving_with(&ns, &datastore, &socket, log, &["--log-format", "json"]);
    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let started = lines
        .iter()
        .find(|l| l["fields"]["message"] == "routerd started")
        .unwrap_or_else(|| panic!("no start line in {text}"));
    assert_eq!(started["level"], "INFO");
    assert_eq!(started["fields"]["node"], "node-a");
    assert!(started["fields"]["as_number"].is_number(), "{started}");
}

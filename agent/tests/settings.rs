//! routerd settings: the four layers (flags > environment > file > defaults), refused values
//! naming their origin, and node address autodetection inside test-made network namespaces.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use agent::settings::{
    autodetect, env_name, Family, FileSettings, Flags, LogFormat, LogLevel, NodeAddressSource,
    Settings, SettingsError, DEFAULT_DATASTORE, DEFAULT_HEALTH_LISTEN, DEFAULT_ROUTE_PROTOCOL,
};
use agent::status::DEFAULT_CONTROL_SOCKET;
use clap::Parser;
use ipnet::IpNet;
use lab::Netns;
use nix::sched::CloneFlags;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn argv(args: &[&str]) -> Vec<String> {
    std::iter::once("routerd")
        .chain(args.iter().copied())
        .map(String::from)
        .collect()
}

fn write_file(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("routerd.toml");
    File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path
}

/// Resolves exactly the given argv and environment.
fn resolve_exact(args: &[&str], vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    Settings::from_sources(argv(args), &env(vars))
}

/// As [`resolve_exact`], with a node name in the environment unless the arguments or the
/// variables set one, so that tests of other settings do not depend on the machine's
/// hostname being a valid node name.
fn resolve(args: &[&str], vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    let names_node = args.iter().any(|a| a.starts_with("--node-name"))
        || vars.iter().any(|(k, _)| *k == "ROUTERD_NODE_NAME");
    let mut vars = vars.to_vec();
    if !names_node {
        vars.push(("ROUTERD_NODE_NAME", "test-node"));
    }
    resolve_exact(args, &vars)
}

fn err(args: &[&str], vars: &[(&str, &str)]) -> String {
    match resolve(args, vars) {
        Ok(s) => panic!("{args:?} {vars:?} accepted: {s:?}"),
        Err(e) => e.to_string(),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_ascii_lowercase()
}

#[test]
fn defaults_apply_when_nothing_is_set() {
    let s = match resolve_exact(&[], &[]) {
        Ok(s) => s,
        // A machine whose hostname is no valid node name (e.g. `build_01`) must say so.
        Err(e) => {
            let e = e.to_string();
            assert!(
                e.starts_with("node-name from the hostname (default): ") && !e.contains('\n'),
                "{e}"
            );
            resolve(&[], &[]).unwrap()
        }
    };
    if s.node_name != "test-node" {
        assert_eq!(s.node_name, hostname());
    }
    assert_eq!(s.node_ip, NodeAddressSource::FirstFound);
    assert_eq!(s.node_ipv6, None);
    assert_eq!(s.as_number, None);
    assert_eq!(s.datastore, DEFAULT_DATASTORE);
    assert_eq!(s.datastore, "file:/var/lib/routerd");
    assert_eq!(s.control_socket, PathBuf::from(DEFAULT_CONTROL_SOCKET));
    assert_eq!(s.health_listen, Some(DEFAULT_HEALTH_LISTEN));
    assert_eq!(
        s.health_listen,
        Some("127.0.0.1:9099".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(
        s.metrics_listen,
        Some("0.0.0.0:9091".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(s.log_level, LogLevel::Info);
    assert!(s.log_level_from_datastore, "no layer set the log level");
    assert_eq!(s.log_format, LogFormat::Text);
    assert_eq!(s.route_protocol, DEFAULT_ROUTE_PROTOCOL);
    assert_eq!(s.route_protocol, 80);
    assert_eq!(s.shutdown_drain_time, std::time::Duration::ZERO);
    assert_eq!(s.config_file, None);
}

/// Every setting, once per layer, with a distinct value per layer.
const SETTINGS: &[(&str, [&str; 3])] = &[
    // (flag, [flag value, env value, file value])
    ("node-name", ["flag-node", "env-node", "file-node"]),
    ("node-ip", ["10.0.0.1/24", "10.0.1.1/24", "10.0.2.1/24"]),
    ("node-ipv6", ["fd00::1/64", "fd00:1::1/64", "fd00:2::1/64"]),
    ("as", ["64512", "64513", "64514"]),
    ("datastore", ["file:/tmp/flag", "file:/tmp/env", "memory:"]),
    (
        "control-socket",
        ["/run/flag.ctl", "/run/env.ctl", "/run/file.ctl"],
    ),
    (
        "health-listen",
        ["127.0.0.1:9101", "127.0.0.1:9102", "127.0.0.1:9103"],
    ),
    (
        "metrics-listen",
        ["0.0.0.0:9191", "127.0.0.1:9192", "[::]:9193"],
    ),
    ("log-level", ["debug", "warn", "trace"]),
    ("route-protocol", ["81", "82", "83"]),
    ("shutdown-drain-time", ["5s", "10", "2m"]),
];

/// The value of `flag` in resolved settings, as text.
fn value_of(s: &Settings, flag: &str) -> String {
    match flag {
        "node-name" => s.node_name.clone(),
        "node-ip" => s.node_ip.to_string(),
        "node-ipv6" => s.node_ipv6.as_ref().unwrap().to_string(),
        "as" => s.as_number.unwrap().to_string(),
        "datastore" => s.datastore.clone(),
        "control-socket" => s.control_socket.display().to_string(),
        "health-listen" => s.health_listen.unwrap().to_string(),
        "metrics-listen" => s.metrics_listen.unwrap().to_string(),
        "log-level" => s.log_level.as_str().to_string(),
        "route-protocol" => s.route_protocol.to_string(),
        "shutdown-drain-time" => match s.shutdown_drain_time.as_secs() {
            5 => "5s".into(),
            10 => "10".into(),
            120 => "2m".into(),
            other => other.to_string(),
        },
        other => panic!("unknown setting {other}"),
    }
}

fn file_line(flag: &str, value: &str) -> String {
    if flag == "as" || flag == "route-protocol" {
        format!("{flag} = {value}\n")
    } else {
        format!("{flag} = \"{value}\"\n")
    }
}

/// For every setting and every pair of layers, the higher layer wins; each layer alone is
/// taken over the default.
#[test]
fn each_layer_overrides_the_ones_below() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, [in_flag, in_env, in_file]) in SETTINGS {
        let file = write_file(&dir, &file_line(flag, in_file));
        let config = file.to_str().unwrap();
        let flag_arg = format!("--{flag}={in_flag}");
        let var = env_name(flag);
        // (flags?, env?, file?) -> expected
        let cases: [(bool, bool, bool, &str); 7] = [
            (true, true, true, in_flag),
            (true, false, true, in_flag),
            (true, true, false, in_flag),
            (false, true, true, in_env),
            (false, true, false, in_env),
            (false, false, true, in_file),
            (true, false, false, in_flag),
        ];
        for (use_flag, use_env, use_file, expected) in cases {
            let mut args = vec![];
            if use_flag {
                args.push(flag_arg.as_str());
            }
            let mut vars = vec![];
            if use_env {
                vars.push((var.as_str(), *in_env));
            }
            if use_file {
                vars.push(("ROUTERD_CONFIG", config));
            }
            // `resolve` adds a node name in the environment, which would mask the
            // node-name rows.
            let s = if *flag == "node-name" {
                resolve_exact(&args, &vars).unwrap()
            } else {
                resolve(&args, &vars).unwrap()
            };
            assert_eq!(
                value_of(&s, flag),
                *expected,
                "{flag}: flag={use_flag} env={use_env} file={use_file}"
            );
        }
    }
}

#[test]
fn config_flag_wins_over_config_env_and_empty_env_counts_as_unset() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.toml");
    let b = dir.path().join("b.toml");
    std::fs::write(&a, "as = 65001\n").unwrap();
    std::fs::write(&b, "as = 65002\n").unwrap();
    let s = resolve(
        &["--config", a.to_str().unwrap()],
        &[("ROUTERD_CONFIG", b.to_str().unwrap())],
    )
    .unwrap();
    assert_eq!(s.as_number, Some(65001));
    assert_eq!(s.config_file.as_deref(), Some(a.as_path()));
    // An empty variable does not hide the file's value.
    let s = resolve(
        &[],
        &[("ROUTERD_CONFIG", b.to_str().unwrap()), ("ROUTERD_AS", "")],
    )
    .unwrap();
    assert_eq!(s.as_number, Some(65002));
    // Unrelated ROUTERD_* variables (Kubernetes service links) are ignored.
    let s = resolve(&[], &[("ROUTERD_SERVICE_HOST", "10.96.0.10")]).unwrap();
    assert_eq!(s.as_number, None);
}

#[test]
fn the_full_file_form_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(
        &dir,
        r#"
# routerd settings
node-name = "node-1"
node-ip = "interface=eth.*,ens[0-9]+"
node-ipv6 = "can-reach=fd00::1"
as = "1.10"
datastore = "kubernetes:"
control-socket = "/run/routerd.ctl"
health-listen = "none"
log-level = "WARN"
route-protocol = "201"
"#,
    );
    let s = resolve_exact(&["--config", path.to_str().unwrap()], &[]).unwrap();
    assert_eq!(s.node_name, "node-1");
    assert_eq!(s.node_ip.to_string(), "interface=eth.*,ens[0-9]+");
    assert_eq!(
        s.node_ipv6,
        Some(NodeAddressSource::CanReach("fd00::1".parse().unwrap()))
    );
    assert_eq!(s.as_number, Some(65546));
    assert_eq!(s.datastore, "kubernetes:");
    assert_eq!(s.health_listen, None);
    assert_eq!(s.log_level, LogLevel::Warn);
    assert!(!s.log_level_from_datastore);
    assert_eq!(s.route_protocol, 201);
}

#[test]
fn address_sources_parse_as_calico_writes_them() {
    let cases = [
        ("first-found", "first-found"),
        ("autodetect", "first-found"),
        ("interface=eth0", "interface=eth0"),
        ("can-reach=10.0.0.1", "can-reach=10.0.0.1"),
        (
            "cidr=10.0.0.0/8,192.168.0.5/16",
            "cidr=10.0.0.0/8,192.168.0.0/16",
        ),
        ("skip-interface=eth1,ens.*", "skip-interface=eth1,ens.*"),
        ("10.0.0.5/24", "10.0.0.5/24"),
        ("10.0.0.5", "10.0.0.5"),
    ];
    for (text, shown) in cases {
        let s = resolve(&["--node-ip", text], &[]).unwrap();
        assert_eq!(s.node_ip.to_string(), shown, "{text}");
    }
    let s = resolve(&[], &[("ROUTERD_NODE_IPV6", "none")]).unwrap();
    assert_eq!(s.node_ipv6, None);
}

#[test]
fn invalid_values_are_refused_naming_their_origin() {
    // (flag, bad value, words the message must contain)
    let cases: &[(&str, &str, &str)] = &[
        ("node-name", "Node_1", "not a valid node name"),
        ("node-name", "-node", "not a valid node name"),
        ("node-ip", "eth0", "neither an address"),
        ("node-ip", "none", "needs an IPv4 address"),
        ("node-ip", "fd00::1/64", "not an IPv4 address"),
        ("node-ip", "127.0.0.1/8", "cannot be a node's address"),
        ("node-ip", "interface=eth(", "not a valid regex"),
        ("node-ip", "interface=", "empty interface regex"),
        ("node-ip", "can-reach=example.com", "needs an IP address"),
        ("node-ip", "cidr=10.0.0.0/33", "is not a CIDR"),
        ("node-ip", "skip-interface=", "empty interface regex"),
        ("node-ipv6", "10.0.0.1/24", "not an IPv6 address"),
        ("as", "0", "reserved"),
        ("as", "23456", "AS_TRANS"),
        ("as", "4294967296", "not an AS number"),
        ("as", "65536.1", "not an AS number"),
        ("as", "sixty", "not an AS number"),
        ("datastore", "zookeeper:x", "not a datastore address"),
        ("datastore", "/var/lib/routerd", "not a datastore address"),
        ("health-listen", "9099", "not <ip>:<port>"),
        ("health-listen", "localhost:9099", "not <ip>:<port>"),
        ("metrics-listen", "9091", "not <ip>:<port>"),
        ("log-level", "verbose", "not a log level"),
        ("log-format", "yaml", "not a log format"),
        ("route-protocol", "4", "kernel's own"),
        ("route-protocol", "0", "kernel's own"),
        ("route-protocol", "12", "`bird`"),
        ("route-protocol", "186", "`bgp`"),
        ("route-protocol", "256", "not a protocol id"),
        ("shutdown-drain-time", "2h", "between 0 and 1h"),
        ("shutdown-drain-time", "1500ms", "whole number of seconds"),
        ("shutdown-drain-time", "soon", "not a duration"),
        ("control-socket", &"/x".repeat(60), "at most 107"),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (flag, bad, why) in cases {
        let by_flag = err(&[&format!("--{flag}={bad}")], &[]);
        assert!(
            by_flag.starts_with(&format!("--{flag}: ")) && by_flag.contains(why),
            "{flag}={bad}: {by_flag}"
        );
        assert!(!by_flag.contains('\n'), "{by_flag}");
        let var = env_name(flag);
        let by_env = err(&[], &[(&var, bad)]);
        assert!(
            by_env.starts_with(&format!("{var}: ")) && by_env.contains(why),
            "{var}={bad}: {by_env}"
        );
        // In the file, on line 3 after a comment and a blank line.
        let path = write_file(&dir, &format!("# routerd\n\n{flag} = \"{bad}\"\n"));
        let config = [("ROUTERD_CONFIG", path.to_str().unwrap())];
        let by_file = if *flag == "node-name" {
            resolve_exact(&[], &config).unwrap_err().to_string()
        } else {
            err(&[], &config)
        };
        assert!(
            by_file.starts_with(&format!("{}: line 3: {flag}: ", path.display()))
                && by_file.contains(why),
            "file {flag}={bad}: {by_file}"
        );
    }
    // ROUTERD_AS as the issue spells it.
    assert!(err(&[], &[("ROUTERD_AS", "x")]).starts_with("ROUTERD_AS: "));
}

#[test]
fn file_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "as = 1\nnode-ipp = \"10.0.0.1\"\n",
            "line 2",
            "unknown field",
        ),
        ("as = 1\nlog-level = \n", "line 2", ""),
        ("as = 1\n\nnode-name = 5\n", "line 3", "invalid type"),
        ("as = -1\n", "line 1", "not an AS number"),
    ];
    for (text, line, why) in cases {
        let path = write_file(&dir, text);
        let e = err(&["--config", path.to_str().unwrap()], &[]);
        assert!(
            e.starts_with(&format!("{}: {line}", path.display())) && e.contains(why),
            "{text:?}: {e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }
    let missing = dir.path().join("missing.toml");
    let e = err(&["--config", missing.to_str().unwrap()], &[]);
    assert!(
        e.starts_with(&format!("{}: cannot read", missing.display())),
        "{e}"
    );
}

#[test]
fn resolve_takes_already_parsed_layers() {
    let flags = Flags::try_parse_from(argv(&["--as", "65010"])).unwrap();
    let file = FileSettings::parse(
        Path::new("inline.toml"),
        "as = 65030\nlog-level = \"debug\"\nnode-name = \"inline\"\n",
    )
    .unwrap();
    let s = Settings::resolve(&flags, &env(&[("ROUTERD_AS", "65020")]), Some(&file)).unwrap();
    assert_eq!(s.as_number, Some(65010));
    assert_eq!(s.log_level, LogLevel::Debug);
    assert_eq!(s.config_file.as_deref(), Some(Path::new("inline.toml")));
}

#[test]
fn unknown_flags_and_help_are_usage_errors() {
    assert!(matches!(
        resolve(&["--node-ipp", "x"], &[]),
        Err(SettingsError::Usage(_))
    ));
    match resolve(&["--help"], &[]) {
        Err(SettingsError::Usage(e)) => {
            let help = e.to_string();
            assert!(help.contains("--node-ip"), "{help}");
            for (flag, _) in SETTINGS {
                assert!(help.contains(&format!("--{flag} <")), "{flag}: {help}");
                assert!(
                    help.contains(&format!("[env: {}]", env_name(flag))),
                    "{flag}: {help}"
                );
            }
        }
        other => panic!("{other:?}"),
    }
}

// ---- autodetection in network namespaces ----

/// Runs `f` on a thread that entered `ns` (so getifaddrs and sockets see that namespace).
fn in_netns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = File::open(ns.path()).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

fn detect(ns: &Netns, source: &str, family: Family) -> Result<IpNet, String> {
    let source: NodeAddressSource = source.parse().unwrap();
    in_netns(ns, move || autodetect(&source, family))
}

/// A namespace whose interfaces (by creation = index order) are: lo, docker0, veth-a,
/// cali1234, eth1, eth0, with addresses on each (veth ends point into `peer`).
fn node_namespace(peer: &Netns) -> Netns {
    let ns = Netns::new("set").unwrap();
    let link = |local: &str, remote: &str, cidr: &str| {
        lab::veth(&ns, local, peer, remote).unwrap();
        ns.addr(local, cidr).unwrap();
    };
    link("docker0", "p0", "172.17.0.1/16");
    link("veth-a", "p1", "10.99.0.1/24");
    link("cali1234", "p2", "10.98.0.1/32");
    link("eth1", "p3", "192.168.50.10/24");
    link("eth0", "p4", "10.0.0.5/24");
    peer.addr("p3", "192.168.50.1/24").unwrap();
    peer.addr("p4", "10.0.0.1/24").unwrap();
    ns.ip(&["addr", "add", "fd00:50::10/64", "dev", "eth1", "nodad"])
        .unwrap();
    ns
}

#[test]
fn first_found_skips_excluded_interfaces_and_loopback() {
    lab::require(&["ip"]);
    let peer = Netns::new("setp").unwrap();
    let ns = node_namespace(&peer);
    // docker0, veth-a and cali1234 come first by index but are excluded; eth1 precedes
    // eth0 by index.
    assert_eq!(
        detect(&ns, "first-found", Family::V4).unwrap(),
        "192.168.50.10/24".parse::<IpNet>().unwrap()
    );
    assert_eq!(
        detect(&ns, "first-found", Family::V6).unwrap(),
        "fd00:50::10/64".parse::<IpNet>().unwrap()
    );
    // A down interface does not count.
    ns.ip(&["link", "set", "eth1", "down"]).unwrap();
    assert_eq!(
        detect(&ns, "autodetect", Family::V4).unwrap(),
        "10.0.0.5/24".parse::<IpNet>().unwrap()
    );
}

/// `kubernetes-internal-ip`: the Node's first InternalIP of the family, with the prefix of
/// the interface carrying it; none of the family is an error naming what is missing.
#[test]
fn kubernetes_internal_ip_takes_the_prefix_of_its_interface() {
    lab::require(&["ip"]);
    let peer = Netns::new("setp").unwrap();
    let ns = node_namespace(&peer);
    let internal: Vec<std::net::IpAddr> = vec![
        "fd00:50::10".parse().unwrap(),
        "10.0.0.5".parse().unwrap(),
        "192.168.50.10".parse().unwrap(),
    ];
    let with = |family: Family, ips: Vec<std::net::IpAddr>| {
        let source: NodeAddressSource = "kubernetes-internal-ip".parse().unwrap();
        assert_eq!(source.to_string(), "kubernetes-internal-ip");
        in_netns(&ns, move || {
            agent::settings::autodetect_with(&source, family, &ips)
        })
    };
    assert_eq!(
        with(Family::V4, internal.clone()).unwrap().to_string(),
        "10.0.0.5/24"
    );
    assert_eq!(
        with(Family::V6, internal).unwrap().to_string(),
        "fd00:50::10/64"
    );
    // Not on any interface here: a host prefix (as for a bare address).
    assert_eq!(
        with(Family::V4, vec!["10.7.7.7".parse().unwrap()])
            .unwrap()
            .to_string(),
        "10.7.7.7/32"
    );
    let e = with(Family::V4, vec![]).unwrap_err();
    assert!(e.contains("no IPv4 InternalIP"), "{e}");
    // Without InternalIPs (no Kubernetes Node read) `autodetect` says so too.
    let source: NodeAddressSource = "kubernetes-internal-ip".parse().unwrap();
    let e = in_netns(&ns, move || autodetect(&source, Family::V4)).unwrap_err();
    assert!(e.contains("InternalIP"), "{e}");
}

#[test]
fn interface_regex_matches_whole_names_in_index_order() {
    lab::require(&["ip"]);
    let peer = Netns::new("setp").unwrap();
    let ns = node_namespace(&peer);
    let v4 = |s: &str| detect(&ns, s, Family::V4);
    assert_eq!(v4("interface=eth0").unwrap().to_string(), "10.0.0.5/24");
    assert_eq!(
        v4("interface=eth.*").unwrap().to_string(),
        "192.168.50.10/24"
    );
    // Explicitly named, an excluded interface is taken.
    assert_eq!(v4("interface=veth.*").unwrap().to_string(), "10.99.0.1/24");
    assert_eq!(
        v4("interface=nope,eth0").unwrap().to_string(),
        "10.0.0.5/24"
    );
    // Whole-name match: `th0` is not `eth0`.
    let e = v4("interface=th0").unwrap_err();
    assert!(e.contains("no up interface whose name matches"), "{e}");
    assert!(e.contains("eth0"), "{e}");
}

#[test]
fn cidr_and_skip_interface_choose_as_calico_does() {
    lab::require(&["ip"]);
    let peer = Netns::new("setp").unwrap();
    let ns = node_namespace(&peer);
    let v4 = |s: &str| detect(&ns, s, Family::V4);
    // cidr=: the first address (index order) within one of the networks.
    assert_eq!(v4("cidr=10.0.0.0/16").unwrap().to_string(), "10.0.0.5/24");
    assert_eq!(
        v4("cidr=10.0.0.0/8").unwrap().to_string(),
        "10.99.0.1/24",
        "veth-a comes first by index and cidr= does not exclude interfaces"
    );
    let e = v4("cidr=172.31.0.0/16").unwrap_err();
    assert!(e.contains("within 172.31.0.0/16"), "{e}");
    // skip-interface=: first-found without eth1 (first-found's own exclusions still apply).
    assert_eq!(
        v4("skip-interface=eth1").unwrap().to_string(),
        "10.0.0.5/24"
    );
    let e = v4("skip-interface=eth.*").unwrap_err();
    assert!(e.contains("no up interface"), "{e}");
}

#[test]
fn can_reach_picks_the_interface_towards_the_destination() {
    lab::require(&["ip"]);
    let peer = Netns::new("setp").unwrap();
    let ns = node_namespace(&peer);
    assert_eq!(
        detect(&ns, "can-reach=10.0.0.1", Family::V4)
            .unwrap()
            .to_string(),
        "10.0.0.5/24"
    );
    assert_eq!(
        detect(&ns, "can-reach=192.168.50.1", Family::V4)
            .unwrap()
            .to_string(),
        "192.168.50.10/24"
    );
    // Via a route: 10.200.0.0/16 is reached through eth1's gateway.
    ns.ip(&["route", "add", "10.200.0.0/16", "via", "192.168.50.1"])
        .unwrap();
    assert_eq!(
        detect(&ns, "can-reach=10.200.3.4", Family::V4)
            .unwrap()
            .to_string(),
        "192.168.50.10/24"
    );
    assert_eq!(
        detect(&ns, "can-reach=fd00:50::1", Family::V6)
            .unwrap()
            .to_string(),
        "fd00:50::10/64"
    );
    let e = detect(&ns, "can-reach=10.201.0.1", Family::V4).unwrap_err();
    assert!(e.contains("no route to 10.201.0.1"), "{e}");
}

#[test]
fn explicit_address_takes_its_prefix_from_the_interface() {
    lab::require(&["ip"]);
    let peer = Netns::new("setp").unwrap();
    let ns = node_namespace(&peer);
    assert_eq!(
        detect(&ns, "10.0.0.5", Family::V4).unwrap().to_string(),
        "10.0.0.5/24"
    );
    // Not on any interface: a host prefix.
    assert_eq!(
        detect(&ns, "10.0.9.9", Family::V4).unwrap().to_string(),
        "10.0.9.9/32"
    );
    assert_eq!(
        detect(&ns, "10.0.9.9/20", Family::V4).unwrap().to_string(),
        "10.0.9.9/20"
    );
}

#[test]
fn nothing_found_is_a_clear_error() {
    lab::require(&["ip"]);
    // Only lo, and an excluded interface.
    let ns = Netns::new("sete").unwrap();
    let peer = Netns::new("setp").unwrap();
    lab::veth(&ns, "docker0", &peer, "p0").unwrap();
    ns.addr("docker0", "172.17.0.1/16").unwrap();
    let e = detect(&ns, "first-found", Family::V4).unwrap_err();
    assert!(
        e.contains("no up interface has a usable IPv4 address"),
        "{e}"
    );
    // Through Settings: the setting and its source are named.
    let settings = resolve(&["--node-ipv6", "first-found"], &[]).unwrap();
    let e = in_netns(&ns, move || settings.node_ipv6().unwrap_err().to_string());
    assert!(
        e.starts_with("node-ipv6 (first-found): no up interface has a usable IPv6 address"),
        "{e}"
    );
    let settings = resolve(&["--node-ip", "can-reach=10.1.2.3"], &[]).unwrap();
    let e = in_netns(&ns, move || settings.node_ipv4().unwrap_err().to_string());
    assert!(
        e.starts_with("node-ip (can-reach=10.1.2.3): no route to 10.1.2.3"),
        "{e}"
    );
}

#[test]
fn settings_resolve_the_node_addresses() {
    lab::require(&["ip"]);
    let peer = Netns::new("setp").unwrap();
    let ns = node_namespace(&peer);
    let settings = resolve(
        &["--node-ip", "interface=eth0", "--node-ipv6", "autodetect"],
        &[],
    )
    .unwrap();
    let (v4, v6) = in_netns(&ns, move || {
        (settings.node_ipv4().unwrap(), settings.node_ipv6().unwrap())
    });
    assert_eq!(v4.to_string(), "10.0.0.5/24");
    assert_eq!(v6.unwrap().to_string(), "fd00:50::10/64");
}

/// `log-format` has two values only, so its layers are checked pairwise here rather than in
/// [`SETTINGS`]: each layer alone sets it, and a higher layer wins over a lower one.
#[test]
fn log_format_comes_from_each_layer() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        resolve(&["--log-format", "json"], &[]).unwrap().log_format,
        LogFormat::Json
    );
    assert_eq!(
        resolve(&[], &[("ROUTERD_LOG_FORMAT", "JSON")])
            .unwrap()
            .log_format,
        LogFormat::Json
    );
    let file = write_file(&dir, "log-format = \"json\"\n");
    let f = file.to_str().unwrap();
    assert_eq!(
        resolve(&["--config", f], &[]).unwrap().log_format,
        LogFormat::Json
    );
    assert_eq!(
        resolve(&["--config", f], &[("ROUTERD_LOG_FORMAT", "text")])
            .unwrap()
            .log_format,
        LogFormat::Text
    );
    assert_eq!(
        resolve(&["--log-format", "text"], &[("ROUTERD_LOG_FORMAT", "json")])
            .unwrap()
            .log_format,
        LogFormat::Text
    );
}

/// Calico's `DATASTORE_TYPE` names the datastore when no address is given; an address wins.
#[test]
fn datastore_type_selects_etcd_or_kubernetes_unless_an_address_is_given() {
    let s = resolve(&[], &[("DATASTORE_TYPE", "etcdv3")]).unwrap();
    assert_eq!(s.datastore, "etcd:");
    let s = resolve(&[], &[("DATASTORE_TYPE", "kubernetes")]).unwrap();
    assert_eq!(s.datastore, "kubernetes:");
    let s = resolve(
        &["--datastore=etcd:http://10.0.0.9:2379"],
        &[("DATASTORE_TYPE", "kubernetes")],
    )
    .unwrap();
    assert_eq!(s.datastore, "etcd:http://10.0.0.9:2379");
    let e = err(&[], &[("DATASTORE_TYPE", "consul")]);
    assert!(e.contains("DATASTORE_TYPE") && e.contains("consul"), "{e}");
    assert_eq!(resolve(&[], &[]).unwrap().datastore, DEFAULT_DATASTORE);
}

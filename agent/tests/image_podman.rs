//! Issue 10's image acceptance: the container image is built with podman from local material
//! (scripts/image-base.sh: busybox, `ip` and the libraries the binaries link, imported as
//! `localhost/routerd-base:local`) through the repository's Containerfile, and routerd runs
//! FROM THAT IMAGE, with host network inside a lab network namespace (as a DaemonSet's
//! hostNetwork pod runs on a node), on a file datastore mounted from a temporary directory,
//! against a BIRD top-of-rack in another namespace: the BGP session comes up and the node's
//! block is announced to BIRD. routectl and iproute2 from the image are used too.
//!
//! Podman state (`--root`, `--runroot`, containers.conf) lives under the test's temporary
//! directory and is removed at the end; no registry is used; only namespaces made here are
//! touched, and the image's RUN steps get no network (`--network none`).
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agent::status::query_status;
use lab::bird::Bird;
use lab::{lan, require, wait_for, Netns};
use support::{daemonset_capabilities, plugin_dir, repo_root, POLL, ROUTECTL, T};

const IMAGE: &str = "localhost/routerd:image-test";
const BASE: &str = "localhost/routerd-base:local";
/// Every podman call is bounded: a hung build or run fails the test instead of hanging CI.
const PODMAN_TIMEOUT: &str = "300";

/// Podman with its own state under a temporary directory; removes its containers, then the
/// state, when dropped.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        let dir = tempfile::tempdir().unwrap();
        // The flags REAL-RUNTIME.md names, as containers.conf: runc, cgroupfs, ulimits within
        // the hard limits here.
        std::fs::write(
            dir.path().join("containers.conf"),
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n\
             [network]\nnetwork_backend = \"cni\"\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .unwrap();
        Podman { dir }
    }

    /// podman's global flags for this state.
    fn global_flags(&self) -> Vec<String> {
        let d = self.dir.path();
        vec![
            "--root".into(),
            d.join("root").display().to_string(),
            "--runroot".into(),
            d.join("runroot").display().to_string(),
        ]
    }

    /// `timeout … podman <global flags> <args>`, in `netns` when given (nsenter --net, not
    /// `ip netns exec`: see REAL-RUNTIME.md).
    fn command(&self, netns: Option<&Netns>, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.arg(PODMAN_TIMEOUT);
        if let Some(ns) = netns {
            c.arg("nsenter")
                .arg(format!("--net={}", ns.path().display()));
        }
        c.arg("podman")
            .args(self.global_flags())
            .args(args)
            .env("CONTAINERS_CONF", self.dir.path().join("containers.conf"));
        c
    }

    fn run(&self, netns: Option<&Netns>, args: &[&str]) -> String {
        let out = self.command(netns, args).output().unwrap();
        assert!(
            out.status.success(),
            "podman {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.command(None, &["rm", "-af", "-t", "0"]).output();
        let _ = self.command(None, &["rmi", "-af"]).output();
    }
}

/// A build context holding only what Containerfile copies (the four binaries, at the paths
/// it names) and .containerignore: the binaries this test run built, stripped of debug
/// information as scripts/build-image.sh does (the image layers hold a copy each, and CI's
/// disk is shared).
fn build_context(dir: &Path) -> PathBuf {
    let context = dir.join("context");
    let release = context.join("target/release");
    std::fs::create_dir_all(&release).unwrap();
    let bins = plugin_dir();
    for b in ["routerd", "routectl", "routerd-cni", "routerd-ipam"] {
        let from = bins.join(b);
        assert!(from.is_file(), "{} is missing", from.display());
        let out = Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(release.join(b))
            .arg(&from)
            .output()
            .expect("strip (binutils) runs");
        assert!(out.status.success(), "strip {}: {out:?}", from.display());
    }
    std::fs::copy(
        repo_root().join(".containerignore"),
        context.join(".containerignore"),
    )
    .unwrap();
    context
}

fn routectl_ok(datastore: &str, args: &[&str]) {
    let out = Command::new(ROUTECTL)
        .arg("--datastore")
        .arg(datastore)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "routectl {args:?}: {out:?}");
}

#[test]
fn routerd_from_the_image_peers_with_a_bird_tor_and_announces_its_block() {
    require(&[
        "ip", "podman", "bird", "birdc", "nsenter", "runc", "busybox", "tar", "timeout",
    ]);
    let started = Instant::now();
    let podman = Podman::new();
    let tmp = podman.dir.path().to_path_buf();

    // 1. The base from this machine's files, imported into this test's podman store.
    let base_tar = tmp.join("routerd-base.tar");
    let mut base = Command::new(repo_root().join("scripts/image-base.sh"));
    base.arg(&base_tar)
        .arg("--bins")
        .arg(plugin_dir())
        .arg("--")
        .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
        .args(podman.global_flags())
        .env("CONTAINERS_CONF", tmp.join("containers.conf"));
    let out = base.output().unwrap();
    assert!(out.status.success(), "image-base.sh: {out:?}");

    // 2. The image, through the repository's Containerfile, with the local base.
    let context = build_context(&tmp);
    let containerfile = repo_root().join("Containerfile");
    podman.run(
        None,
        &[
            "build",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=4096:4096",
            "--build-arg",
            &format!("BASE={BASE}"),
            "-t",
            IMAGE,
            "-f",
            containerfile.to_str().unwrap(),
            context.to_str().unwrap(),
        ],
    );
    let labels = podman.run(
        None,
        &[
            "image",
            "inspect",
            "--format",
            "{{index .Labels \"org.opencontainers.image.title\"}} {{.Config.Entrypoint}}",
            IMAGE,
        ],
    );
    assert_eq!(labels.trim(), "routerd [routerd]", "{labels}");
    let built = started.elapsed();

    // 3. The cluster's intent in a file datastore the container gets mounted: a pool and the
    // ToR as a global BGPPeer, as an operator applies them with routectl.
    let state = tmp.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let datastore = format!("file:{}", state.join("ds").display());
    let manifest = tmp.join("intent.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: pool\n\
         spec:\n  cidr: 10.244.0.0/16\n  blockSize: 26\n---\n\
         apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: rack-tor\n\
         spec:\n  peerIP: 10.0.0.254\n  asNumber: 65000\n",
    )
    .unwrap();
    routectl_ok(&datastore, &["create", "-f", manifest.to_str().unwrap()]);

    // 4. The node and the ToR on one segment.
    let node = Netns::new("imgn").unwrap();
    let tor = Netns::new("imgt").unwrap();
    let _switch = lan(
        "img",
        &[
            (&node, "eth0", &["10.0.0.1/24"][..]),
            (&tor, "eth0", &["10.0.0.254/24"][..]),
        ],
    )
    .unwrap();
    let bird = Bird::start(
        &tor,
        &tmp.join("tor"),
        "router id 10.0.0.254;\nprotocol device {}\n\
         protocol bgp node1 { local 10.0.0.254 as 65000; neighbor 10.0.0.1 as 64512;\n\
           hold time 9; connect retry time 1; ipv4 { import all; export none; }; }\n",
    )
    .unwrap();

    // 5. routerd from the image: host network (the node's namespace), exactly the
    // capabilities examples/kubernetes/routerd.yaml gives its container (all others
    // dropped), settings from the environment as the DaemonSet sets them.
    let capabilities = daemonset_capabilities().join(",");
    let mount = format!("{}:/state", state.display());
    podman.run(
        Some(&node),
        &[
            "run",
            "-d",
            "--name",
            "routerd",
            "--network",
            "host",
            "--cap-drop",
            "ALL",
            "--cap-add",
            &capabilities,
            "-v",
            &mount,
            "-e",
            "ROUTERD_NODE_NAME=node-1",
            "-e",
            "ROUTERD_NODE_IP=10.0.0.1/24",
            "-e",
            "ROUTERD_DATASTORE=file:/state/ds",
            "-e",
            "ROUTERD_CONTROL_SOCKET=/state/routerd.ctl",
            "-e",
            "ROUTERD_FIB_SETTLE=2",
            IMAGE,
            "--log-level",
            "debug",
        ],
    );
    let logs = || {
        String::from_utf8_lossy(
            &podman
                .command(None, &["logs", "routerd"])
                .output()
                .map(|o| [o.stdout, o.stderr].concat())
                .unwrap_or_default(),
        )
        .into_owned()
    };

    // The session comes up on both sides.
    let socket = state.join("routerd.ctl");
    wait_for("routerd's Global_ session", T, POLL, || {
        let s = query_status(&socket, Duration::from_secs(5)).ok()?;
        s.sessions
            .iter()
            .any(|x| x.name == "Global_10_0_0_254" && x.state == "Established")
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    bird.wait_established("node1", T)
        .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    let status = query_status(&socket, Duration::from_secs(5)).unwrap();
    assert_eq!(status.node, "node-1");
    assert_eq!(status.blocks.len(), 1, "{:?}", status.blocks);
    let block = status.blocks[0].clone();
    assert!(block.starts_with("10.244."), "{block}");

    // The block is announced to BIRD, next hop the node.
    wait_for(&format!("BIRD's route to {block}"), T, POLL, || {
        let r = bird.route(&block).ok()??;
        (r.attr("BGP.next_hop") == Some("10.0.0.1")).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    let announced = started.elapsed();

    // The image's own tools: routectl over the control socket, iproute2 on the node's
    // kernel, which has routerd's blackhole. `podman exec` runs in the namespace of its
    // caller for a host-network container, so in the node's.
    let node_status = podman.run(
        Some(&node),
        &[
            "exec",
            "routerd",
            "routectl",
            "--control-socket",
            "/state/routerd.ctl",
            "node",
            "status",
        ],
    );
    assert!(
        node_status.contains("10.0.0.254") && node_status.contains("Established"),
        "{node_status}"
    );
    wait_for("routerd's blackhole for its block", T, POLL, || {
        let routes = podman
            .command(
                Some(&node),
                &["exec", "routerd", "ip", "route", "show", "proto", "80"],
            )
            .output()
            .ok()?;
        let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
        routes
            .lines()
            .any(|l| l.starts_with(&format!("blackhole {block}")))
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    // The DaemonSet's exec probes, run in the container as the kubelet runs them.
    // In the node's namespace: with host networking the container has no network namespace
    // of its own, and an exec joins its caller's (the kubelet's, the host's).
    podman.run(
        Some(&node),
        &["exec", "routerd", "routerd", "health", "--live"],
    );
    wait_for("routerd health --ready", T, POLL, || {
        podman
            .command(
                Some(&node),
                &["exec", "routerd", "routerd", "health", "--ready"],
            )
            .output()
            .ok()
            .filter(|o| o.status.success())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    // Metrics on the node's address, felix's port, for a scraper off the node.
    let metrics = node
        .exec(&[
            "bash",
            "-c",
            "exec 3<>/dev/tcp/10.0.0.1/9091; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; timeout 5 cat <&3",
        ])
        .unwrap_or_default();
    assert!(
        metrics.starts_with("HTTP/1.1 200") && metrics.contains("routerd_bgp_session_established"),
        "{metrics}"
    );

    // A graceful stop: SIGTERM to routerd, the container's PID 1.
    podman.run(None, &["stop", "-t", "20", "routerd"]);
    podman.run(None, &["rm", "routerd"]);
    eprintln!(
        "image built in {:.1} s; session up and block announced {:.1} s after the start \
         of the test; whole test {:.1} s",
        built.as_secs_f64(),
        announced.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

//! The lab's shapes, end to end: each run builds a cluster (two racks joined by a router,
//! or one segment), starts routerd on every node, makes pods with podman through our CNI
//! plugins, and checks the sessions, every kernel's exact routes, pod-to-pod reachability
//! in each family and, on two racks, where the underlay carries pod traffic encapsulated
//! (see agent/examples/lab). Here a representative subset runs: each topology, each
//! encapsulation, CrossSubnet and dual stack at least once; `scripts/lab-matrix.sh` runs
//! every combination.
//!
//! Needs root, podman, BIRD and tcpdump (scripts/setup.sh); only namespaces the lab creates
//! are touched.
#![allow(clippy::unwrap_used)] // tests: a failed step is a failed test

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// The lab example, built by `cargo test` beside the binaries.
fn lab() -> PathBuf {
    let bin = PathBuf::from(support::ROUTERD);
    let lab = bin.parent().unwrap().join("examples/lab");
    assert!(
        lab.is_file(),
        "{} is missing: build it with `cargo build --release -p agent --examples`",
        lab.display()
    );
    support::plugin_dir();
    lab
}

fn run(args: &[&str]) {
    lab::require(&[
        "ip", "bird", "podman", "runc", "nsenter", "busybox", "tcpdump",
    ]);
    let t = Instant::now();
    let out = Command::new(lab()).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("lab: capture") || l.contains("passed every check"))
        .collect();
    println!(
        "lab {}: {:.1} s\n{}",
        args.join(" "),
        t.elapsed().as_secs_f64(),
        summary.join("\n")
    );
    assert!(
        out.status.success(),
        "lab {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn mesh_vxlan_crosssubnet_dual_stack() {
    run(&[
        "--topology",
        "mesh",
        "--encap",
        "vxlan",
        "--crosssubnet",
        "--ipv6",
    ]);
}

#[test]
fn per_node_vxlan_always() {
    run(&["--topology", "per-node", "--encap", "vxlan"]);
}

#[test]
fn reflectors_ipip_always() {
    run(&["--topology", "reflectors", "--encap", "ipip"]);
}

#[test]
fn tor_none_dual_stack() {
    run(&["--topology", "tor", "--encap", "none", "--ipv6"]);
}

#[test]
fn per_node_ipip_crosssubnet() {
    run(&["--topology", "per-node", "--encap", "ipip", "--crosssubnet"]);
}

#[test]
fn mesh_none_one_segment_dual_stack() {
    run(&[
        "--topology",
        "mesh",
        "--encap",
        "none",
        "--racks",
        "1",
        "--ipv6",
    ]);
}

/// A shape that cannot work is refused before anything is built, saying why.
#[test]
fn impossible_shapes_are_refused() {
    for (args, says) in [
        (
            &["--topology", "mesh", "--encap", "none"][..],
            "learns no pod routes",
        ),
        (&["--encap", "ipip", "--ipv6"][..], "IPv4 only"),
        (
            &["--encap", "none", "--crosssubnet"][..],
            "--crosssubnet needs",
        ),
        (&["--topology", "ring"][..], "--topology takes"),
    ] {
        let out = Command::new(lab()).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

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
    // What an operator reads: what was built, the nodes, one node's status and routes, the
    // reachability matrix.
    for section in [
        "lab: --topology",
        "pod-to-pod reachability",
        "$ routectl get nodes -o wide",
        "$ routectl node status   # on node-1",
        "node-1 kernel routes:",
    ] {
        assert!(stdout.contains(section), "no {section:?} in:\n{stdout}");
    }
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
fn per_node_ipip_crosssubnet_dual_stack() {
    run(&[
        "--topology",
        "per-node",
        "--encap",
        "ipip",
        "--crosssubnet",
        "--ipv6",
    ]);
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

/// The lab's namespaces of run `pid`.
fn namespaces_of(pid: u32) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("rl-lab") && n.contains(&format!("-{pid}-")))
                .collect()
        })
        .unwrap_or_default()
}

/// A lab killed while it runs leaves its namespaces, its containers and its directory
/// behind; the next run removes them (whichever run of this test binary starts first).
#[test]
fn a_killed_run_is_cleaned_up_by_the_next() {
    use std::io::BufRead;
    use std::process::Stdio;
    use std::time::Duration;
    let small = ["--racks", "1", "--encap", "none", "--nodes", "2"];
    let mut first = Command::new(lab())
        .args(small)
        .arg("--keep")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = first.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("lab: running") => break,
            Ok(line) => seen.push(line),
            Err(e) => panic!("the lab did not come up ({e}):\n{}", seen.join("\n")),
        }
    }
    let pid = first.id();
    let dir = std::env::temp_dir().join(format!("routerd-lab-{pid}"));
    let containers = lab::podman::containers_under(&dir);
    let namespaces = namespaces_of(pid);
    assert!(
        !containers.is_empty() && !namespaces.is_empty(),
        "{containers:?} {namespaces:?}"
    );
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    first.wait().unwrap();
    // The dying process cleans nothing up; the next run does (this one, or another test's
    // run that starts first).
    run(&small);
    assert!(!dir.exists(), "{} is left", dir.display());
    assert_eq!(namespaces_of(pid), Vec::<String>::new());
    for (process, ns) in containers {
        assert!(
            !std::path::Path::new(&format!("/proc/{process}")).exists(),
            "container process {process} is left"
        );
        if let Some(ns) = ns {
            assert!(
                !std::path::Path::new("/run/netns").join(&ns).exists(),
                "container namespace {ns} is left"
            );
        }
    }
}

//! `routectl node checksystem` and `node diags` run for real, in a network namespace made
//! here (they read the kernel of the namespace they run in; checksystem probes features in
//! scratch namespaces of its own).

#![allow(clippy::unwrap_used)]

use std::process::Command;

use lab::{require, Netns};

const ROUTECTL: &str = env!("CARGO_BIN_EXE_routectl");

/// Whether this kernel can make an `ipip` link, asked independently of routectl.
fn kernel_has_ipip(ns: &Netns) -> bool {
    ns.exec_output(&[
        "ip",
        "link",
        "add",
        "probe0",
        "type",
        "ipip",
        "local",
        "192.0.2.1",
        "remote",
        "192.0.2.2",
    ])
    .unwrap()
    .status
    .success()
}

#[test]
fn checksystem_in_a_namespace_reports_ipip_and_the_tun_fallback() {
    require(&["ip", "unshare", "nft"]);
    let ns = Netns::new("chk").unwrap();
    let out = ns.exec_output(&[ROUTECTL, "node", "checksystem"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // routerd needs no encapsulation module to run: exit 0 either way.
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("System meets minimum system requirements to run routerd!"),
        "{text}"
    );
    let ipip_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("ipip"))
        .unwrap();
    if kernel_has_ipip(&ns) {
        assert!(ipip_line.ends_with("OK"), "{text}");
    } else {
        // This lab's kernel (no ipip module): reported, and covered by the TUN fallback.
        assert!(ipip_line.ends_with("FAIL"), "{text}");
        assert!(
            text.contains("IP-in-IP pools use routerd's userspace TUN fallback (tun OK)"),
            "{text}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("tun") && l.ends_with("OK")),
        "{text}"
    );
    // The host's own interfaces are untouched by the probes: the namespace has only lo.
    let links = ns.ip(&["-o", "link", "show"]).unwrap();
    assert_eq!(links.lines().count(), 1, "{links}");
}

#[test]
fn diags_bundles_status_kernel_tables_and_logs() {
    require(&["ip", "tar", "nft", "ss"]);
    let ns = Netns::new("diag").unwrap();
    ns.ip(&["link", "set", "lo", "up"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::fs::write(logs.join("routerd.log"), "routerd started\n").unwrap();
    let socket = dir.path().join("no-routerd.ctl");
    let out = ns
        .exec_output(&[
            ROUTECTL,
            "--control-socket",
            socket.to_str().unwrap(),
            "node",
            "diags",
            "--log-dir",
            logs.to_str().unwrap(),
        ])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    let archive = text
        .lines()
        .find_map(|l| l.strip_prefix("Diags saved to "))
        .unwrap()
        .to_string();
    let listing = Command::new("tar")
        .args(["-tzf", &archive])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for file in [
        "diagnostics/routerd_status.json",
        "diagnostics/date",
        "diagnostics/hostname",
        "diagnostics/ipv4_route",
        "diagnostics/ipv6_route",
        "diagnostics/nexthops",
        "diagnostics/rules",
        "diagnostics/links",
        "diagnostics/ipv4_addr",
        "diagnostics/neighbours",
        "diagnostics/nft_ruleset",
        "diagnostics/ss",
        "diagnostics/logs/routerd.log",
    ] {
        assert!(
            listing.lines().any(|l| l == file),
            "{file} missing from:\n{listing}"
        );
    }
    // No routerd on that socket: the status file says so instead of being left out.
    let status = Command::new("tar")
        .args(["-xzOf", &archive, "diagnostics/routerd_status.json"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&status.stdout).contains("cannot reach routerd"));
    let bundle_dir = std::path::Path::new(&archive)
        .parent()
        .unwrap()
        .to_path_buf();
    std::fs::remove_dir_all(bundle_dir).unwrap();
}

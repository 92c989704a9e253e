//! `routectl node diags`: a tarball of what a routing problem on this node is debugged
//! with, as calicoctl's `node diags` gathers one for calico-node.
//!
//! Into `diagnostics/` of a fresh temporary directory go routerd's own report (its status
//! over the control socket, as JSON, or why it could not be had), the kernel's view (routes
//! of every table and family, nexthop objects, rules, links with details, addresses,
//! neighbours, the nftables ruleset, sockets), `date` and `hostname`, and the logs of
//! `--log-dir`; `tar -zcf` packs it as `diags-<YYYYMMDD_HHMMSS>.tar.gz` beside it. A
//! command that fails is reported and skipped (the bundle is still made), as calicoctl does.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::status;

use super::RoutectlError;

/// Where routerd's logs are looked for by default.
pub const DEFAULT_LOG_DIR: &str = "/var/log/routerd";

/// The commands run, the file each one's output goes to, and the line printed before it.
const COMMANDS: &[(&str, &[&str], &str)] = &[
    ("", &["date"], "date"),
    ("", &["hostname"], "hostname"),
    (
        "Dumping routes (IPv4)",
        &["ip", "-4", "route", "show", "table", "all"],
        "ipv4_route",
    ),
    (
        "Dumping routes (IPv6)",
        &["ip", "-6", "route", "show", "table", "all"],
        "ipv6_route",
    ),
    ("Dumping nexthops", &["ip", "nexthop", "show"], "nexthops"),
    ("Dumping rules", &["ip", "rule", "show"], "rules"),
    (
        "Dumping interface info",
        &["ip", "-d", "link", "show"],
        "links",
    ),
    (
        "Dumping interface info (IPv4)",
        &["ip", "-4", "addr"],
        "ipv4_addr",
    ),
    (
        "Dumping interface info (IPv6)",
        &["ip", "-6", "addr"],
        "ipv6_addr",
    ),
    ("Dumping neighbours", &["ip", "neigh", "show"], "neighbours"),
    (
        "Dumping nftables",
        &["nft", "-n", "-a", "list", "ruleset"],
        "nft_ruleset",
    ),
    ("Dumping ss", &["ss", "-a", "-n"], "ss"),
];

/// The archive's name for the time `unix`: `diags-YYYYMMDD_HHMMSS.tar.gz` (UTC).
pub fn archive_name(unix: u64) -> String {
    let (y, m, d) = super::node_status::civil_from_days((unix / 86_400) as i64);
    let s = unix % 86_400;
    format!(
        "diags-{y:04}{m:02}{d:02}_{:02}{:02}{:02}.tar.gz",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// Gathers the bundle; returns what it prints and the archive's path.
pub fn gather(control_socket: &Path, log_dir: &Path) -> Result<(String, PathBuf), RoutectlError> {
    let mut out = String::from("Collecting diagnostics\n");
    let io = |what: &str, e: std::io::Error| RoutectlError::Usage(format!("{what}: {e}"));
    let temp = tempdir().map_err(|e| io("error creating temp directory to dump logs", e))?;
    out.push_str(&format!("Using temp dir: {}\n", temp.display()));
    let diag = temp.join("diagnostics");
    std::fs::create_dir(&diag).map_err(|e| io("error creating diagnostics directory", e))?;

    out.push_str("Dumping routerd status\n");
    let report = match status::query_status(control_socket, Duration::from_secs(5)) {
        Ok(s) => serde_json::to_string_pretty(&s).unwrap_or_default() + "\n",
        Err(e) => format!("{e}\n"),
    };
    std::fs::write(diag.join("routerd_status.json"), report)
        .map_err(|e| io("error writing routerd_status.json", e))?;
    for (info, argv, file) in COMMANDS {
        if !info.is_empty() {
            out.push_str(&format!("{info}\n"));
        }
        match Command::new(argv[0]).args(&argv[1..]).output() {
            Ok(o) if o.status.success() => {
                let _ = std::fs::write(diag.join(file), &o.stdout);
            }
            Ok(o) => out.push_str(&format!(
                "Failed to run command: {}\nError: {}\n",
                argv.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => out.push_str(&format!(
                "Failed to run command: {}\nError: {e}\n",
                argv.join(" ")
            )),
        }
    }
    if log_dir.is_dir() {
        out.push_str("Copying routerd logs\n");
        if let Err(e) = copy_tree(log_dir, &diag.join("logs")) {
            out.push_str(&format!("Error copying log files: {e}\n"));
        }
    } else {
        out.push_str(&format!(
            "No logs found in {}; skipping log copying\n",
            log_dir.display()
        ));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let archive = temp.join(archive_name(now));
    match Command::new("tar")
        .arg("-C")
        .arg(&temp)
        .arg("-zcf")
        .arg(&archive)
        .arg("diagnostics")
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => out.push_str(&format!(
            "Error compressing the diagnostics: {}\n",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => out.push_str(&format!("Error compressing the diagnostics: {e}\n")),
    }
    out.push_str(&format!("\nDiags saved to {}\n", archive.display()));
    out.push_str("If required, you can upload the diagnostics bundle to a file sharing service.\n");
    Ok((out, archive))
}

/// A new directory `/tmp/routerd-diags-<pid>-<n>` (kept: it holds the bundle).
fn tempdir() -> std::io::Result<PathBuf> {
    let base = std::env::temp_dir();
    for n in 0..1000 {
        let dir = base.join(format!("routerd-diags-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free temporary directory name"))
}

/// Copies the regular files of `from` (recursively) into `to`.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_archive_is_named_after_the_utc_time() {
        // 2024-01-02 03:04:05 UTC.
        assert_eq!(
            super::archive_name(1_704_164_645),
            "diags-20240102_030405.tar.gz"
        );
    }
}

//! Clean-up after a lab run that did not end (killed, or Ctrl-C before `--keep`): its
//! namespaces, its containers' processes, mounts and namespaces, and its directory. Only
//! what a lab run made is touched: namespaces named `rl-lab…-<pid>-…` and directories
//! `routerd-lab-<pid>` whose process `<pid>` is gone.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The prefix of every namespace tag the lab uses, and of its directory.
pub const TAG: &str = "lab";

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid in a lab namespace name `rl-lab<tag>-<pid>-<n>`.
fn namespace_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(&format!("rl-{TAG}"))?;
    let mut parts = rest.rsplitn(3, '-');
    let _n = parts.next()?;
    parts.next()?.parse().ok()
}

fn kill_in_namespace(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
}

fn delete_namespace(name: &str) {
    kill_in_namespace(name);
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(Stdio::null())
        .status();
}

/// The namespaces podman made for the containers of the state under `podman_dir`.
fn container_namespaces(podman_dir: &Path) -> Vec<String> {
    let podman = |args: &[&str]| {
        Command::new("podman")
            .arg("--root")
            .arg(podman_dir.join("root"))
            .arg("--runroot")
            .arg(podman_dir.join("runroot"))
            .args(args)
            .env("CONTAINERS_CONF", podman_dir.join("containers.conf"))
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let ids = podman(&["ps", "-aq"]);
    ids.split_whitespace()
        .flat_map(|id| {
            podman(&["inspect", "--format", "{{.NetworkSettings.SandboxKey}}", id])
                .lines()
                .filter_map(|l| l.trim().strip_prefix("/run/netns/").map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Removes what earlier, dead lab runs left behind; returns how many runs it cleaned.
pub fn clean_up() -> usize {
    let mut dead_runs = std::collections::BTreeSet::new();
    // Directories first: their podman state names the containers' namespaces.
    let tmp = std::env::temp_dir();
    let dirs: Vec<(u32, PathBuf)> = std::fs::read_dir(&tmp)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid: u32 = name.strip_prefix("routerd-lab-")?.parse().ok()?;
            (!alive(pid)).then(|| (pid, e.path()))
        })
        .collect();
    for (pid, dir) in &dirs {
        dead_runs.insert(*pid);
        // The containers' processes run with their root inside the run's storage.
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            if let Ok(root) = std::fs::read_link(entry.path().join("root")) {
                if root.starts_with(dir) {
                    let _ = Command::new("kill")
                        .args(["-9", &entry.file_name().to_string_lossy()])
                        .status();
                }
            }
        }
        for sub in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let podman_dir = sub.path().join("podman");
            if podman_dir.is_dir() {
                for ns in container_namespaces(&podman_dir) {
                    delete_namespace(&ns);
                }
            }
        }
        // Overlay and shm mounts of the storage, deepest first.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| Path::new(m).starts_with(dir))
            .collect();
        under.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in under {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        let _ = std::fs::remove_dir_all(dir);
    }
    let namespaces = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned());
    for name in namespaces {
        if let Some(pid) = namespace_pid(&name) {
            if !alive(pid) {
                dead_runs.insert(pid);
                delete_namespace(&name);
            }
        }
    }
    dead_runs.len()
}

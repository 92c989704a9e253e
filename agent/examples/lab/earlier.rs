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

/// The processes of containers whose storage is under `dir` (their root mount is an
/// overlay with its upper directory there; `/proc/<pid>/root` cannot say, as it reads `/`
/// from another mount namespace), each with the network namespace podman made for it.
pub fn containers_under(dir: &Path) -> Vec<(String, Option<String>)> {
    let upper = format!("upperdir={}/", dir.display());
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(mounts) = std::fs::read_to_string(entry.path().join("mountinfo")) else {
            continue;
        };
        let root_in_dir = mounts
            .lines()
            .any(|l| l.split_whitespace().nth(4) == Some("/") && l.contains(&upper));
        if root_in_dir {
            let ns = Command::new("ip")
                .args(["netns", "identify", &pid])
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .filter(|n| !n.is_empty());
            out.push((pid, ns));
        }
    }
    out
}

/// The processes whose command line names `dir` (podman's monitors and helpers of a run).
fn processes_mentioning(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let own = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().into_owned();
            if pid == own || !pid.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(&needle)
                .then_some(pid)
        })
        .collect()
}

fn kill_all(pids: &[String]) {
    for pid in pids {
        let _ = Command::new("kill").args(["-9", pid]).status();
    }
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
        // The containers' monitors first (conmon, and the `podman container cleanup` a
        // monitor starts when its container dies, which would write into the directory while
        // it is removed), then the containers and the namespaces podman made for them.
        kill_all(&processes_mentioning(dir));
        for (process, ns) in containers_under(dir) {
            kill_all(std::slice::from_ref(&process));
            if let Some(ns) = ns {
                delete_namespace(&ns);
            }
        }
        kill_all(&processes_mentioning(dir));
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
        for _ in 0..5 {
            if std::fs::remove_dir_all(dir).is_ok() || !dir.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
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

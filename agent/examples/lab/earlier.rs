//! Clean-up after a lab run that did not end (killed, or Ctrl-C before `--keep`): its
//! namespaces, its containers' processes, mounts and namespaces, and its directory. Only
//! what a lab run made is touched: namespaces named `rl-lab…-<pid>-…` and directories
//! `routerd-lab-<pid>` whose process `<pid>` is gone.

use std::path::{Path, PathBuf};
use std::process::Command;

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
        for (process, ns) in lab::podman::containers_under(dir) {
            kill_all(std::slice::from_ref(&process));
            if let Some(ns) = ns {
                lab::delete_namespace(&ns);
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
                lab::delete_namespace(&name);
            }
        }
    }
    dead_runs.len()
}

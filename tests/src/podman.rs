//! Podman as the container runtime that calls our CNI plugins (see
//! `../shared/REAL-RUNTIME.md`): Debian's podman 4.3 with its CNI backend and runc, run
//! inside a node's network namespace with `nsenter --net` (not `ip netns exec`, which
//! remounts /sys and leaves runc without a cgroup mount).
//!
//! Each [`Podman`] has its own root, run root, network config directory and
//! `containers.conf` under a directory of the caller's, so tests never share podman state;
//! the image is a busybox rootfs imported from a tarball (no registry is reachable).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{run, Netns};

/// The image every container runs.
pub const IMAGE: &str = "localhost/routerd-bb:1";

/// One podman instance bound to a node namespace.
#[derive(Debug)]
pub struct Podman {
    dir: PathBuf,
    netns: PathBuf,
}

impl Podman {
    /// Sets up podman state under `dir` for containers in `node`'s namespace, with CNI
    /// plugins from `plugin_dir` and the network `conflist` (a JSON text) named `network`.
    pub fn new(
        dir: &Path,
        node: &Netns,
        plugin_dir: &Path,
        network: &str,
        conflist: &str,
    ) -> Result<Podman> {
        std::fs::create_dir_all(dir.join("net.d"))?;
        std::fs::write(
            dir.join("net.d").join(format!("{network}.conflist")),
            conflist,
        )?;
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n\
                 [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\n\
                 [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
                plugin_dir.display()
            ),
        )?;
        let p = Podman {
            dir: dir.to_path_buf(),
            netns: node.path(),
        };
        p.import_image()?;
        Ok(p)
    }

    fn import_image(&self) -> Result<()> {
        let rootfs = self.dir.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin"))?;
        let busybox = crate::which("busybox").context("busybox-static is not installed")?;
        std::fs::copy(&busybox, rootfs.join("bin/busybox"))?;
        for applet in ["sh", "ping", "sleep", "ip", "cat", "nc", "true"] {
            let link = rootfs.join("bin").join(applet);
            if !link.exists() {
                std::os::unix::fs::symlink("busybox", link)?;
            }
        }
        let tar = self.dir.join("bb.tar");
        run(Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg("."))?;
        self.run(&["import", tar.to_str().unwrap_or_default(), IMAGE])?;
        Ok(())
    }

    /// A podman command in the node's namespace.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.netns.display()))
            .arg("podman")
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .arg("--network-config-dir")
            .arg(self.dir.join("net.d"))
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"));
        c
    }

    /// Runs podman; stdout, or an error with stderr.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        run(&mut self.command(args))
    }

    /// Starts a detached container `name` on `network` that sleeps.
    pub fn start(&self, name: &str, network: &str) -> Result<()> {
        self.run(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            network,
            IMAGE,
            "sleep",
            "3600",
        ])?;
        Ok(())
    }

    /// The container's IPv4 address on eth0.
    pub fn ipv4(&self, name: &str) -> Result<String> {
        let out = self.run(&["exec", name, "ip", "-4", "-o", "addr", "show", "eth0"])?;
        out.split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .map(str::to_string)
            .with_context(|| format!("no IPv4 address on {name}'s eth0: {out}"))
    }

    /// `ping -c <count>` from the container; Ok when every echo was answered.
    pub fn ping(&self, name: &str, target: &str, count: u32) -> Result<()> {
        let n = count.to_string();
        let out = self
            .command(&["exec", name, "ping", "-c", &n, "-W", "2", target])
            .output()?;
        if !out.status.success() {
            bail!(
                "{name} -> {target}: {}",
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        Ok(())
    }

    /// Stops and removes the container (podman calls CNI DEL).
    pub fn remove(&self, name: &str) -> Result<()> {
        self.run(&["rm", "-f", "-t", "0", name])?;
        Ok(())
    }
}

/// The processes of containers whose storage is under `dir` (their root mount is an
/// overlay with its upper directory there; `/proc/<pid>/root` cannot say, as it reads `/`
/// from another mount namespace), each with the network namespace podman made for it (its
/// name under /run/netns).
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

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.command(&["rm", "-af", "-t", "0"]).output();
    }
}

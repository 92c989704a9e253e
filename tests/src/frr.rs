//! FRR's `bgpd` in a lab namespace, alone (no zebra: it programs no kernel and takes next hops
//! as valid), driven with `vtysh` over its own vty socket directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::{wait_for, Daemon, Netns};

/// Where Debian installs the daemon.
pub const BGPD: &str = "/usr/lib/frr/bgpd";

/// A running bgpd; stopped when dropped.
#[derive(Debug)]
pub struct Frr<'a> {
    ns: &'a Netns,
    dir: PathBuf,
    daemon: Option<Daemon>,
}

impl<'a> Frr<'a> {
    /// Starts bgpd in `ns` with `config` (frr.conf syntax); its files live in `dir`.
    pub fn start(ns: &'a Netns, dir: &Path, config: &str) -> Result<Frr<'a>> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("bgpd.conf"), config)?;
        let mut frr = Frr {
            ns,
            dir: dir.to_path_buf(),
            daemon: None,
        };
        frr.run()?;
        Ok(frr)
    }

    fn run(&mut self) -> Result<()> {
        let d = |f: &str| self.dir.join(f).to_string_lossy().into_owned();
        let log = std::fs::File::create(self.dir.join("bgpd.out"))?;
        let child = self
            .ns
            .command(&[
                BGPD,
                "-f",
                &d("bgpd.conf"),
                "-i",
                &d("bgpd.pid"),
                "-z",
                &d("zserv.api"),
                &format!("--vty_socket={}", self.dir.display()),
                // Stay root without looking for the frr/frrvty users and groups.
                "-S",
                // No zebra.
                "-Z",
                &format!("--log=file:{}", d("bgpd.log")),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting bgpd")?;
        self.daemon = Some(Daemon::from_child(child));
        wait_for(
            "bgpd's vty",
            Duration::from_secs(10),
            Duration::from_millis(100),
            || self.vtysh("show bgp summary json").ok(),
        )?;
        Ok(())
    }

    /// Kills bgpd at once (SIGKILL): the kernel closes its sessions without a NOTIFICATION,
    /// as when the router crashes or restarts.
    pub fn kill(&mut self) {
        self.daemon = None;
    }

    /// Starts bgpd again with `config`.
    pub fn restart(&mut self, config: &str) -> Result<()> {
        self.kill();
        std::fs::write(self.dir.join("bgpd.conf"), config)?;
        self.run()
    }

    /// Runs one vtysh command against this bgpd.
    pub fn vtysh(&self, command: &str) -> Result<String> {
        self.ns.exec(&[
            "vtysh",
            "--vty_socket",
            &self.dir.to_string_lossy(),
            "-d",
            "bgpd",
            "-c",
            command,
        ])
    }

    /// Changes the running configuration: `lines` as typed after `configure terminal`.
    pub fn configure(&self, lines: &[&str]) -> Result<String> {
        let dir = self.dir.to_string_lossy().into_owned();
        let mut args = vec![
            "vtysh",
            "--vty_socket",
            &dir,
            "-d",
            "bgpd",
            "-c",
            "configure terminal",
        ];
        for l in lines {
            args.push("-c");
            args.push(l);
        }
        self.ns.exec(&args)
    }

    fn json(&self, command: &str) -> Result<Value> {
        let text = self.vtysh(command)?;
        serde_json::from_str(text.trim()).with_context(|| format!("{command}: {text}"))
    }

    /// The neighbour's state as bgpd names it (`Established`, `Active`, ...).
    pub fn neighbor_state(&self, address: &str) -> Result<String> {
        let v = self.json(&format!("show bgp neighbors {address} json"))?;
        Ok(v[address]["bgpState"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    pub fn wait_established(&self, address: &str, timeout: Duration) -> Result<()> {
        wait_for(
            &format!("FRR neighbour {address} Established"),
            timeout,
            Duration::from_millis(200),
            || (self.neighbor_state(address).ok()? == "Established").then_some(()),
        )
    }

    /// The best path to `prefix` in `family` (`ipv4` or `ipv6`), as `show bgp ... json`
    /// prints one path (`aspath`, `metric`, `community`, `largeCommunity`, `nexthops`...).
    pub fn best_path(&self, family: &str, prefix: &str) -> Result<Option<Value>> {
        let v = self.json(&format!("show bgp {family} unicast {prefix} json"))?;
        Ok(v["paths"].as_array().and_then(|paths| {
            paths
                .iter()
                .find(|p| p["bestpath"]["overall"].as_bool() == Some(true))
                .cloned()
        }))
    }

    /// The last lines of bgpd's log, for a failing test's message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("bgpd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

//! GoBGP in a lab namespace: generate gobgpd's TOML, run it, drive it with the `gobgp` CLI.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::{wait_for, Daemon, Netns};

/// A running gobgpd; stopped when dropped. Its gRPC API listens on the namespace's own
/// loopback, so several instances in different namespaces never collide.
#[derive(Debug)]
pub struct GoBgp<'a> {
    ns: &'a Netns,
    _daemon: Daemon,
}

/// A neighbour for [`GoBgp::config`].
#[derive(Debug, Clone)]
pub struct GoBgpNeighbor {
    pub address: String,
    pub peer_as: u32,
    pub route_reflector_client: bool,
}

impl<'a> GoBgp<'a> {
    /// gobgpd's configuration with the given neighbours, each carrying the unicast family of its
    /// address.
    pub fn config(asn: u32, router_id: &str, neighbors: &[GoBgpNeighbor]) -> String {
        let mut s = format!("[global.config]\n  as = {asn}\n  router-id = \"{router_id}\"\n");
        for n in neighbors {
            s += &format!(
                "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{}\"\n    peer-as = {}\n  [neighbors.timers.config]\n    connect-retry = 1\n    hold-time = 9\n    keepalive-interval = 3\n",
                n.address, n.peer_as
            );
            if n.route_reflector_client {
                s += &format!(
                    "  [neighbors.route-reflector.config]\n    route-reflector-client = true\n    route-reflector-cluster-id = \"{router_id}\"\n"
                );
            }
            // One family per session, from the neighbour's address, as BIRD and Calico do.
            let fam = if n.address.contains(':') {
                "ipv6-unicast"
            } else {
                "ipv4-unicast"
            };
            s += &format!(
                "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{fam}\"\n"
            );
        }
        s
    }

    pub fn start(ns: &'a Netns, dir: &Path, config: &str) -> Result<GoBgp<'a>> {
        std::fs::create_dir_all(dir)?;
        let conf = dir.join("gobgpd.toml");
        std::fs::write(&conf, config)?;
        let log = std::fs::File::create(dir.join("gobgpd.log"))?;
        let child = ns
            .command(&["gobgpd", "-f", &conf.to_string_lossy(), "--log-level=info"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting gobgpd")?;
        let g = GoBgp {
            ns,
            _daemon: Daemon::from_child(child),
        };
        wait_for(
            "gobgpd API",
            Duration::from_secs(10),
            Duration::from_millis(100),
            || g.cli(&["global"]).ok(),
        )?;
        Ok(g)
    }

    /// Runs `gobgp <args>` against this instance.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let mut a = vec!["gobgp"];
        a.extend_from_slice(args);
        self.ns.exec(&a)
    }

    /// The session state of a neighbour as gobgp reports it (e.g. "ESTABLISHED").
    pub fn neighbor_state(&self, address: &str) -> Result<String> {
        let j: serde_json::Value = serde_json::from_str(&self.cli(&["neighbor", address, "-j"])?)?;
        Ok(j["state"]["session_state"]
            .as_str()
            .map(str::to_string)
            .or_else(|| j["state"]["session_state"].as_i64().map(|n| n.to_string()))
            .unwrap_or_default())
    }

    pub fn wait_established(&self, address: &str, timeout: Duration) -> Result<()> {
        wait_for(
            &format!("GoBGP neighbour {address} established"),
            timeout,
            Duration::from_millis(200),
            || {
                self.neighbor_state(address)
                    .ok()
                    .filter(|s| s.eq_ignore_ascii_case("established") || s == "6")
                    .map(|_| ())
            },
        )
    }

    /// The global RIB of one family (`ipv4` or `ipv6`) as GoBGP's JSON: prefix -> paths.
    pub fn rib(&self, family: &str) -> Result<serde_json::Map<String, serde_json::Value>> {
        let text = self.cli(&["global", "rib", "-a", family, "-j"])?;
        let v: serde_json::Value =
            serde_json::from_str(text.trim()).with_context(|| format!("gobgp rib JSON: {text}"))?;
        Ok(v.as_object().cloned().unwrap_or_default())
    }
}

//! BIRD 2 in a lab namespace: write a config, run it in the foreground, query it with birdc.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{run, wait_for, Daemon, Netns};

/// A running BIRD instance; stopped when dropped.
#[derive(Debug)]
pub struct Bird {
    ctl: PathBuf,
    _daemon: Daemon,
}

/// One route as `birdc show route all` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdRoute {
    pub prefix: String,
    /// The protocol that installed it (e.g. the BGP session name).
    pub protocol: String,
    /// Whether BIRD marked it as the best route (`*`).
    pub best: bool,
    /// Attribute lines such as `BGP.as_path` -> `65001 65002`.
    pub attrs: BTreeMap<String, String>,
}

impl BirdRoute {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.get(name).map(String::as_str)
    }
}

impl Bird {
    /// Starts BIRD in `ns` with `config`; files live in `dir` (a per-test directory).
    pub fn start(ns: &Netns, dir: &Path, config: &str) -> Result<Bird> {
        std::fs::create_dir_all(dir)?;
        let conf = dir.join("bird.conf");
        let ctl = dir.join("bird.ctl");
        std::fs::write(&conf, config)?;
        let conf_s = conf.to_string_lossy().into_owned();
        let ctl_s = ctl.to_string_lossy().into_owned();
        // Check the configuration first so a syntax error is reported as such.
        let out = ns.exec_output(&["bird", "-p", "-c", &conf_s])?;
        if !out.status.success() {
            bail!(
                "BIRD rejected its configuration: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let log = std::fs::File::create(dir.join("bird.log"))?;
        let child = ns
            .command(&["bird", "-f", "-c", &conf_s, "-s", &ctl_s])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting bird")?;
        let daemon = Daemon::from_child(child);
        let bird = Bird {
            ctl,
            _daemon: daemon,
        };
        wait_for(
            "BIRD control socket",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || bird.cmd("show status").ok(),
        )?;
        Ok(bird)
    }

    /// Runs one birdc command and returns its output.
    pub fn cmd(&self, command: &str) -> Result<String> {
        let mut c = Command::new("birdc");
        c.arg("-s").arg(&self.ctl);
        c.args(command.split_whitespace());
        run(&mut c)
    }

    /// The state column and info of a protocol, e.g. `("up", "Established")`.
    pub fn protocol_state(&self, name: &str) -> Result<String> {
        let out = self.cmd(&format!("show protocols {name}"))?;
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .with_context(|| format!("no protocol {name} in: {out}"))?;
        Ok(line
            .split_whitespace()
            .skip(5)
            .collect::<Vec<_>>()
            .join(" "))
    }

    pub fn is_established(&self, name: &str) -> bool {
        self.protocol_state(name)
            .map(|s| s.starts_with("Established"))
            .unwrap_or(false)
    }

    /// Waits for a BGP protocol to reach Established.
    pub fn wait_established(&self, name: &str, timeout: Duration) -> Result<()> {
        wait_for(
            &format!("BIRD protocol {name} Established"),
            timeout,
            Duration::from_millis(100),
            || self.is_established(name).then_some(()),
        )
    }

    /// All routes of all tables (`show route all`).
    pub fn routes(&self) -> Result<Vec<BirdRoute>> {
        Ok(parse_routes(&self.cmd("show route all")?))
    }

    /// The best route for `prefix`, if BIRD has one.
    pub fn route(&self, prefix: &str) -> Result<Option<BirdRoute>> {
        Ok(self
            .routes()?
            .into_iter()
            .find(|r| r.prefix == prefix && r.best))
    }
}

/// Parses `birdc show route all`. A route starts with a prefix at column 0 (or, for further
/// routes to the same prefix, with whitespace then `unicast`/`blackhole`... and the prefix
/// omitted); attribute lines are tab-indented `Name: value`.
pub fn parse_routes(text: &str) -> Vec<BirdRoute> {
    let mut out: Vec<BirdRoute> = Vec::new();
    let mut last_prefix = String::new();
    for line in text.lines() {
        if line.starts_with("BIRD ") || line.starts_with("Table ") || line.trim().is_empty() {
            continue;
        }
        if line.starts_with('\t') {
            // `Name: value`; the value may be empty (an iBGP route's `BGP.as_path:`).
            if let (Some(r), Some((k, v))) = (out.last_mut(), line.trim().split_once(':')) {
                r.attrs.insert(k.to_string(), v.trim().to_string());
            }
            continue;
        }
        let mut words = line.split_whitespace();
        let first = match words.next() {
            Some(w) => w,
            None => continue,
        };
        let (prefix, rest): (String, Vec<&str>) = if line.starts_with(' ') {
            (
                last_prefix.clone(),
                std::iter::once(first).chain(words).collect(),
            )
        } else {
            (first.to_string(), words.collect())
        };
        last_prefix = prefix.clone();
        let protocol = rest
            .iter()
            .find(|w| w.starts_with('['))
            .map(|w| w.trim_start_matches('[').to_string())
            .unwrap_or_default();
        let best = rest.contains(&"*");
        out.push(BirdRoute {
            prefix,
            protocol,
            best,
            attrs: BTreeMap::new(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_show_route_all() {
        let text = "BIRD 2.0.12 ready.\nTable master4:\n10.30.0.0/24         unicast [b 04:29:38.076] * (100) [AS65002?]\n\tvia 10.0.0.2 on v0\n\tType: BGP univ\n\tBGP.origin: Incomplete\n\tBGP.as_path: \n\tBGP.med: 10\n                     unicast [c 04:29:39.000] (100) [AS65003i]\n\tBGP.as_path: 65003\n";
        let r = parse_routes(text);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].prefix, "10.30.0.0/24");
        assert!(r[0].best);
        assert_eq!(r[0].protocol, "b");
        assert_eq!(r[0].attr("BGP.med"), Some("10"));
        assert_eq!(r[0].attr("BGP.as_path"), Some(""));
        assert_eq!(r[1].prefix, "10.30.0.0/24");
        assert!(!r[1].best);
        assert_eq!(r[1].attr("BGP.as_path"), Some("65003"));
    }
}

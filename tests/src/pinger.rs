//! Counted pings: `ping -i 0.01` from one namespace to an address for as long as a test
//! changes the cluster, with the counts read at any moment.
//!
//! iputils `ping` prints `<received>/<transmitted> packets, <n>% loss, …` on stderr when it
//! gets SIGQUIT, and keeps going; [`Pinger::counts`] sends one and reads that line, so a test
//! can report the loss of each step of a sequence from one ping process. [`Pinger::finish`]
//! stops it with SIGINT and reads the final summary, which also counts send errors ("no
//! route": ping counts those as transmitted and not received, so they are losses too).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::Netns;

/// One ping process.
#[derive(Debug)]
pub struct Pinger {
    pub from: String,
    pub to: String,
    child: Child,
    stderr: Receiver<String>,
    stdout: Option<std::thread::JoinHandle<String>>,
}

/// Packets sent and answered so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PingCounts {
    pub transmitted: u64,
    pub received: u64,
}

impl PingCounts {
    pub fn lost(&self) -> u64 {
        self.transmitted.saturating_sub(self.received)
    }

    /// The packets of `self` that were not yet in `earlier`.
    pub fn since(&self, earlier: PingCounts) -> PingCounts {
        PingCounts {
            transmitted: self.transmitted.saturating_sub(earlier.transmitted),
            received: self.received.saturating_sub(earlier.received),
        }
    }
}

impl Pinger {
    /// Starts pinging `to` from `ns` every 10 ms (1 s timeout per reply, at most 360,000
    /// packets: an hour). `from` names the source in reports. No deadline (`-w`): with one,
    /// ping stops at the first ICMP error ("no route"), and losses must be counted through.
    pub fn start(ns: &Netns, from: &str, to: &str) -> Result<Pinger> {
        let mut child = ns
            .command(&[
                "ping", "-n", "-i", "0.01", "-W", "1", "-c", "360000", "-q", to,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting ping {from} -> {to}"))?;
        let stderr = child.stderr.take().context("ping's stderr")?;
        let stdout = child.stdout.take().context("ping's stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(stdout), &mut text);
            text
        });
        Ok(Pinger {
            from: from.to_string(),
            to: to.to_string(),
            child,
            stderr: rx,
            stdout: Some(stdout),
        })
    }

    /// The counts so far (SIGQUIT; ping reports and carries on). A reply in flight at that
    /// moment counts as not yet received.
    pub fn counts(&mut self) -> Result<PingCounts> {
        signal(self.child.id(), "QUIT")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut other = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(line) => match parse_quit_line(&line) {
                    Some(c) => return Ok(c),
                    None if other.len() < 20 => other.push(line),
                    None => {}
                },
                Err(_) => break,
            }
        }
        let status = self.child.try_wait().ok().flatten();
        bail!(
            "ping {} -> {} printed no counts (exit status {status:?}); it printed: {other:?}",
            self.from,
            self.to
        )
    }

    /// Stops pinging and returns the final counts (ping's summary).
    pub fn finish(mut self) -> Result<PingCounts> {
        signal(self.child.id(), "INT")?;
        let status = self.child.wait().context("waiting for ping")?;
        let out = self
            .stdout
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        parse_summary(&out).with_context(|| {
            format!(
                "ping {} -> {} ({status}) printed no summary: {out}",
                self.from, self.to
            )
        })
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, sig: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{sig} {pid}: {status}");
    }
    Ok(())
}

/// `12/13 packets, 7% loss, min/avg/ewma/max = …` (SIGQUIT) → received 12, transmitted 13.
fn parse_quit_line(line: &str) -> Option<PingCounts> {
    let (counts, _) = line.split_once(" packets")?;
    let (received, transmitted) = counts.trim().split_once('/')?;
    Some(PingCounts {
        transmitted: transmitted.parse().ok()?,
        received: received.parse().ok()?,
    })
}

/// `N packets transmitted, M received, …` from ping's final summary.
fn parse_summary(out: &str) -> Option<PingCounts> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    Some(PingCounts {
        transmitted: nums.next()?.parse().ok()?,
        received: nums.next()?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quit_and_summary_lines_are_read() {
        assert_eq!(
            parse_quit_line(
                "12/13 packets, 7% loss, min/avg/ewma/max = 0.030/0.050/0.045/0.100 ms"
            ),
            Some(PingCounts {
                transmitted: 13,
                received: 12
            })
        );
        assert_eq!(
            parse_quit_line("PING 10.0.0.1 (10.0.0.1) 56(84) bytes"),
            None
        );
        let summary = "--- 10.244.0.2 ping statistics ---\n\
                       500 packets transmitted, 498 received, +2 errors, 0.4% packet loss, time 5010ms\n";
        assert_eq!(
            parse_summary(summary),
            Some(PingCounts {
                transmitted: 500,
                received: 498
            })
        );
        assert_eq!(
            PingCounts {
                transmitted: 500,
                received: 498
            }
            .since(PingCounts {
                transmitted: 100,
                received: 100
            })
            .lost(),
            2
        );
    }
}

//! Real etcd clusters for the etcd datastore's tests: Debian's `etcd` (3.4), one or three
//! members, on the host's loopback (for a test process that talks to it directly) or one
//! member per network namespace on a lab LAN (for routerd nodes beside it, where members
//! can be killed, restarted and partitioned).
//!
//! Every member gets a data directory of its own under a temporary directory, removed on
//! drop; members run as [`Daemon`]s, killed on drop. With TLS, a CA, member certificates
//! (valid for the members' addresses) and a client certificate are made with the `openssl`
//! command, and the members require client certificates.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{run, wait_for, Daemon, Netns};

/// Certificates for a TLS cluster (PEM files).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TlsFiles {
    /// A fresh CA in `dir` (file names prefixed with `tag`), a member certificate for `ips`
    /// and a client certificate, all signed by it.
    pub fn generate(dir: &Path, tag: &str, ips: &[&str]) -> Result<TlsFiles> {
        let p = |name: &str| dir.join(format!("{tag}-{name}"));
        let files = TlsFiles {
            ca: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server.key"),
            client_cert: p("client.pem"),
            client_key: p("client.key"),
        };
        let ca_key = p("ca.key");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(Command::new("openssl")
            .args(["req", "-x509"])
            .args(ec)
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&files.ca)
            .args(["-days", "2", "-subj", &format!("/CN={tag}-ca")])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]))?;
        let sans: Vec<String> = ips.iter().map(|ip| format!("IP:{ip}")).collect();
        let sign = |cn: &str, key: &Path, cert: &Path, ext: String| -> Result<()> {
            let csr = cert.with_extension("csr");
            let extfile = cert.with_extension("ext");
            std::fs::write(&extfile, ext)?;
            run(Command::new("openssl")
                .arg("req")
                .args(ec)
                .arg("-keyout")
                .arg(key)
                .arg("-out")
                .arg(&csr)
                .args(["-subj", &format!("/CN={cn}")]))?;
            run(Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-in"])
                .arg(&csr)
                .arg("-CA")
                .arg(&files.ca)
                .arg("-CAkey")
                .arg(&ca_key)
                .args(["-CAcreateserial", "-out"])
                .arg(cert)
                .arg("-extfile")
                .arg(&extfile))?;
            Ok(())
        };
        sign(
            "etcd",
            &files.server_key,
            &files.server_cert,
            format!(
                "subjectAltName={}\nextendedKeyUsage=serverAuth,clientAuth\n",
                sans.join(",")
            ),
        )?;
        sign(
            "routerd",
            &files.client_key,
            &files.client_cert,
            "extendedKeyUsage=clientAuth\n".to_string(),
        )?;
        Ok(files)
    }
}

/// Where the members run.
enum Place {
    /// The host's 127.0.0.1, each member on ports of its own.
    Loopback,
    /// Member `i` in `namespaces[i]`, on the address given, ports 2379/2380.
    Namespaces(Vec<Netns>),
}

/// One member's identity.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub ip: String,
    pub client_port: u16,
    pub peer_port: u16,
}

impl Member {
    fn scheme(tls: bool) -> &'static str {
        if tls {
            "https"
        } else {
            "http"
        }
    }
}

/// A running etcd cluster; its members are killed and their data removed on drop.
pub struct EtcdCluster {
    members: Vec<Member>,
    daemons: Vec<Option<Daemon>>,
    place: Place,
    tls: Option<TlsFiles>,
    dir: tempfile::TempDir,
    token: String,
}

impl std::fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCluster")
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; etcd binds it right after).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

impl EtcdCluster {
    /// `n` members on the host's loopback, started and healthy.
    pub fn on_loopback(n: usize, tls: bool) -> Result<EtcdCluster> {
        let mut members = Vec::new();
        for i in 1..=n {
            members.push(Member {
                name: format!("m{i}"),
                ip: "127.0.0.1".into(),
                client_port: free_port()?,
                peer_port: free_port()?,
            });
        }
        Self::start(members, Place::Loopback, tls)
    }

    /// One member in each namespace of `members` (already on a LAN), at the address
    /// given, started and healthy.
    pub fn in_namespaces(members: Vec<(Netns, String)>, tls: bool) -> Result<EtcdCluster> {
        let (namespaces, ips): (Vec<Netns>, Vec<String>) = members.into_iter().unzip();
        let members = ips
            .into_iter()
            .enumerate()
            .map(|(i, ip)| Member {
                name: format!("m{}", i + 1),
                ip,
                client_port: 2379,
                peer_port: 2380,
            })
            .collect();
        Self::start(members, Place::Namespaces(namespaces), tls)
    }

    fn start(members: Vec<Member>, place: Place, tls: bool) -> Result<EtcdCluster> {
        crate::require(&["etcd", "etcdctl", "openssl"]);
        let dir = tempfile::Builder::new().prefix("rl-etcd-").tempdir()?;
        let tls = if tls {
            let ips: Vec<&str> = members.iter().map(|m| m.ip.as_str()).collect();
            Some(TlsFiles::generate(dir.path(), "cluster", &ips)?)
        } else {
            None
        };
        let token = format!(
            "rl-{}-{}",
            std::process::id(),
            dir.path().display().to_string().len()
        );
        let mut cluster = EtcdCluster {
            daemons: members.iter().map(|_| None).collect(),
            members,
            place,
            tls,
            dir,
            token,
        };
        for i in 0..cluster.members.len() {
            cluster.start_member(i)?;
        }
        cluster.wait_healthy(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// The client URLs, as a datastore address takes them (comma-separated).
    pub fn endpoints(&self) -> String {
        self.member_urls()
            .into_iter()
            .map(|(client, _)| client)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client URL of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        self.member_urls()[i].0.clone()
    }

    fn member_urls(&self) -> Vec<(String, String)> {
        let scheme = Member::scheme(self.tls.is_some());
        self.members
            .iter()
            .map(|m| {
                (
                    format!("{scheme}://{}:{}", m.ip, m.client_port),
                    format!("http://{}:{}", m.ip, m.peer_port),
                )
            })
            .collect()
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The temporary directory the members' data and logs live in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The namespace member `i` runs in (`None` on loopback).
    pub fn namespace(&self, i: usize) -> Option<&Netns> {
        match &self.place {
            Place::Loopback => None,
            Place::Namespaces(ns) => ns.get(i),
        }
    }

    /// A command run where member `i` runs (its namespace, or the host).
    fn command_at(&self, i: usize, args: &[&str]) -> Command {
        match self.namespace(i) {
            Some(ns) => ns.command(args),
            None => {
                let mut c = Command::new(args[0]);
                c.args(&args[1..]);
                c
            }
        }
    }

    /// (Re)starts member `i` with its data directory (a restarted member rejoins).
    pub fn start_member(&mut self, i: usize) -> Result<()> {
        let urls = self.member_urls();
        let initial: Vec<String> = self
            .members
            .iter()
            .zip(&urls)
            .map(|(m, (_, peer))| format!("{}={peer}", m.name))
            .collect();
        let m = &self.members[i];
        let (client, peer) = &urls[i];
        let data = self.dir.path().join(format!("{}.etcd", m.name));
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", m.name)))?;
        let mut args: Vec<String> = vec![
            "etcd".into(),
            format!("--name={}", m.name),
            format!("--data-dir={}", data.display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster={}", initial.join(",")),
            "--initial-cluster-state=new".into(),
            format!("--initial-cluster-token={}", self.token),
            "--heartbeat-interval=100".into(),
            "--election-timeout=1000".into(),
            "--logger=zap".into(),
            "--log-outputs=stderr".into(),
        ];
        if let Some(tls) = &self.tls {
            args.push(format!("--cert-file={}", tls.server_cert.display()));
            args.push(format!("--key-file={}", tls.server_key.display()));
            args.push(format!("--trusted-ca-file={}", tls.ca.display()));
            args.push("--client-cert-auth".into());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = self
            .command_at(i, &refs)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting etcd member {}", m.name))?;
        self.daemons[i] = Some(Daemon::from_child(child));
        Ok(())
    }

    /// SIGKILLs member `i` (its data stays for a restart).
    pub fn kill_member(&mut self, i: usize) {
        self.daemons[i] = None;
    }

    pub fn is_running(&mut self, i: usize) -> bool {
        self.daemons[i].as_mut().is_some_and(Daemon::is_running)
    }

    /// `etcdctl` against member `i`'s endpoint (with the client certificate under TLS),
    /// run where the member runs. Returns stdout.
    pub fn etcdctl(&self, i: usize, args: &[&str]) -> Result<String> {
        let mut full: Vec<String> = vec![
            "etcdctl".into(),
            format!("--endpoints={}", self.endpoint(i)),
            "--command-timeout=3s".into(),
        ];
        if let Some(tls) = &self.tls {
            full.push(format!("--cacert={}", tls.ca.display()));
            full.push(format!("--cert={}", tls.client_cert.display()));
            full.push(format!("--key={}", tls.client_key.display()));
        }
        full.extend(args.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        let mut cmd = self.command_at(i, &refs);
        cmd.env("ETCDCTL_API", "3");
        run(&mut cmd)
    }

    /// The index of the member that is leader now, asking the running members.
    pub fn leader(&mut self) -> Option<usize> {
        for i in 0..self.members.len() {
            if !self.is_running(i) {
                continue;
            }
            let Ok(out) = self.etcdctl(i, &["endpoint", "status", "-w", "json"]) else {
                continue;
            };
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&out) else {
                continue;
            };
            let status = &json[0]["Status"];
            let (leader, me) = (
                status["leader"].as_u64(),
                status["header"]["member_id"].as_u64(),
            );
            if let (Some(leader), Some(me)) = (leader, me) {
                if leader == me {
                    return Some(i);
                }
            }
        }
        None
    }

    /// Waits until every running member answers `endpoint health` and a leader exists.
    pub fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let running: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.is_running(i))
            .collect();
        if running.is_empty() {
            bail!("no etcd member is running: {}", self.logs());
        }
        let found = wait_for(
            "etcd members healthy",
            timeout,
            Duration::from_millis(200),
            || {
                running
                    .iter()
                    .all(|&i| self.etcdctl(i, &["endpoint", "health"]).is_ok())
                    .then_some(())
            },
        );
        if let Err(e) = found {
            bail!("{e}: {}", self.logs());
        }
        wait_for(
            "an etcd leader",
            timeout,
            Duration::from_millis(200),
            || self.leader(),
        )
        .map(|_| ())
        .with_context(|| self.logs())
    }

    /// The members' logs (last lines), for failure messages.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let text = std::fs::read_to_string(self.dir.path().join(format!("{}.log", m.name)))
                    .unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "== etcd {}\n{}",
                    m.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            *d = None;
        }
    }
}

//! A routerd cluster for end-to-end tests: N nodes on one L2 segment (10.0.0.<i>/24), each a
//! network namespace running `routerd` on one shared embedded datastore, with an IPPool
//! created through `routectl`. Only namespaces made here are touched.

#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use agent::status::{query_status, PeerType};
use lab::{lan, wait_for, Daemon, Netns};

pub const ROUTERD: &str = env!("CARGO_BIN_EXE_routerd");
pub const ROUTECTL: &str = env!("CARGO_BIN_EXE_routectl");
pub const T: Duration = Duration::from_secs(60);
pub const POLL: Duration = Duration::from_millis(200);

pub struct Node {
    pub name: String,
    pub ip: String,
    pub ns: Netns,
    pub socket: PathBuf,
    pub daemon: Option<Daemon>,
}

/// Fields drop in order: the daemons and namespaces go before the datastore directory.
pub struct Cluster {
    pub nodes: Vec<Node>,
    _switch: Netns,
    pub datastore: String,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` nodes with `pool_spec` (a YAML flow mapping) as the pool `pool`, and waits
    /// for the full mesh.
    pub fn start(tag: &str, n: usize, pool_spec: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let datastore = format!("file:{}", dir.path().join("ds").display());
        let manifest = dir.path().join("pool.yaml");
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: pool\nspec: {pool_spec}\n"
            ),
        )
        .unwrap();
        let out = Command::new(ROUTECTL)
            .args(["--datastore", &datastore, "create", "-f"])
            .arg(&manifest)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let namespaces: Vec<Netns> = (1..=n)
            .map(|i| Netns::new(&format!("{tag}{i}")).unwrap())
            .collect();
        let addrs: Vec<[String; 1]> = (1..=n).map(|i| [format!("10.0.0.{i}/24")]).collect();
        let addr_refs: Vec<[&str; 1]> = addrs.iter().map(|a| [a[0].as_str()]).collect();
        let members: Vec<(&Netns, &str, &[&str])> = namespaces
            .iter()
            .zip(&addr_refs)
            .map(|(ns, a)| (ns, "eth0", &a[..]))
            .collect();
        let switch = lan(tag, &members).unwrap();
        let nodes = namespaces
            .into_iter()
            .enumerate()
            .map(|(i, ns)| {
                let name = format!("node-{}", i + 1);
                Node {
                    socket: dir.path().join(format!("{name}.ctl")),
                    ip: format!("10.0.0.{}", i + 1),
                    name,
                    ns,
                    daemon: None,
                }
            })
            .collect();
        let mut cluster = Cluster {
            dir,
            datastore,
            nodes,
            _switch: switch,
        };
        for i in 0..n {
            cluster.start_routerd(i);
        }
        cluster.wait_mesh();
        cluster
    }

    /// (Re)starts routerd on node `i`, logging to `<dir>/<node>.log` (appended).
    pub fn start_routerd(&mut self, i: usize) {
        let node = &self.nodes[i];
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", node.name)))
            .unwrap();
        let cidr = format!("{}/24", node.ip);
        let child = node
            .ns
            .command(&[
                ROUTERD,
                "--node-name",
                &node.name,
                "--node-ip",
                &cidr,
                "--datastore",
                &self.datastore,
                "--control-socket",
                node.socket.to_str().unwrap(),
                "--health-listen",
                "none",
                "--log-level",
                "debug",
            ])
            .env("ROUTERD_FIB_SETTLE", "2")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.nodes[i].daemon = Some(Daemon::from_child(child));
    }

    /// SIGKILLs routerd on node `i` and waits for it to be gone.
    pub fn kill_routerd(&mut self, i: usize) {
        if let Some(d) = self.nodes[i].daemon.take() {
            let _ = Command::new("kill")
                .args(["-9", &d.pid().to_string()])
                .status();
            drop(d);
        }
        let _ = std::fs::remove_file(&self.nodes[i].socket);
    }

    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "== {}\n{}",
                    n.name,
                    std::fs::read_to_string(self.dir.path().join(format!("{}.log", n.name)))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until every node's routerd answers on its control socket (so it has registered
    /// its Node) and has every mesh session Established.
    pub fn wait_mesh(&self) {
        for n in &self.nodes {
            wait_for(&format!("{}'s routerd", n.name), T, POLL, || {
                query_status(&n.socket, Duration::from_secs(5)).ok()
            })
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
        }
        for n in &self.nodes {
            for other in self.nodes.iter().filter(|o| o.name != n.name) {
                let name = PeerType::NodeMesh.session_name(other.ip.parse().unwrap());
                wait_for(&format!("{}'s mesh session", n.name), T, POLL, || {
                    let s = query_status(&n.socket, Duration::from_secs(5)).ok()?;
                    s.sessions
                        .iter()
                        .any(|x| x.name == name && x.state == "Established")
                        .then_some(())
                })
                .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
            }
        }
    }

    /// `routectl --datastore <ours> <args>`: stdout, panicking on failure.
    pub fn routectl(&self, args: &[&str]) -> String {
        let out = Command::new(ROUTECTL)
            .args(["--datastore", &self.datastore])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "routectl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

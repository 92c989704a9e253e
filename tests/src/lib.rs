//! The test lab: network namespaces, veth links and peer daemons for tests that need a real
//! kernel or a real BGP implementation.
//!
//! Everything here only touches namespaces it creates itself. Each [`Netns`] gets a name unique
//! to this process (`rl-<tag>-<pid>-<n>`), veth pairs are created directly inside those
//! namespaces (never in the host's own), and dropping a [`Netns`] kills what runs in it and
//! deletes it. There is deliberately no "skip": a test that needs root or a daemon calls
//! [`require`], which fails the test when the prerequisite is missing, so that a missing
//! package shows up as a red CI run rather than a silently green one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub mod bird;
pub mod etcd;
pub mod frr;
pub mod gobgp;
pub mod kube_standin;
pub mod pinger;
pub mod podman;
pub mod process;

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// Fails (panics) unless we run as root and every named command is on `PATH`.
///
/// The project's setup script (`scripts/setup.sh`) installs all of them; CI runs as root.
pub fn require(commands: &[&str]) {
    assert!(
        nix_is_root(),
        "this test needs root (network namespaces); run it as root as CI does"
    );
    for cmd in commands {
        assert!(
            which(cmd).is_some(),
            "this test needs `{cmd}` on PATH: run scripts/setup.sh to install the prerequisites"
        );
    }
}

fn nix_is_root() -> bool {
    // /proc/self/status "Uid:" line: real, effective, saved, fs.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// The full path of `cmd` if it is an executable on `PATH` (or an absolute path that exists).
pub fn which(cmd: &str) -> Option<PathBuf> {
    if cmd.contains('/') {
        let p = PathBuf::from(cmd);
        return p.exists().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/lib/frr"].iter().map(PathBuf::from))
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

/// A network namespace owned by the test that created it; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a fresh namespace with `lo` up. `tag` only makes the name readable.
    pub fn new(tag: &str) -> Result<Self> {
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("rl-{tag}-{}-{n}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]))
            .with_context(|| format!("creating network namespace {name}"))?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file, for `setns(2)`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n <ns> <args>`; returns stdout, fails with stderr on a non-zero exit.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// Runs `args` inside the namespace and waits for it.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        run(&mut self.command(args))
    }

    /// Runs `args` inside the namespace and returns its full output whatever the exit status.
    pub fn exec_output(&self, args: &[&str]) -> Result<Output> {
        self.command(args)
            .output()
            .with_context(|| format!("running {args:?} in {}", self.name))
    }

    /// A `Command` that runs `args` inside the namespace, for callers that need to set it up
    /// further (environment, stdio) before spawning.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    /// Starts `args` inside the namespace in the background. The child is killed when the
    /// namespace is dropped (and by [`Daemon`] on its own drop).
    pub fn spawn(&self, args: &[&str]) -> Result<Daemon> {
        let child = self
            .command(args)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {args:?} in {}", self.name))?;
        Ok(Daemon { child })
    }

    /// Adds an address to an interface and brings it up.
    pub fn addr(&self, dev: &str, cidr: &str) -> Result<()> {
        self.ip(&["addr", "add", cidr, "dev", dev])?;
        self.ip(&["link", "set", dev, "up"])?;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete_namespace(&self.name);
    }
}

/// Kills whatever runs in the named namespace, then deletes it. Errors are ignored: the
/// namespace may already be gone, and a panic in a drop would hide a test's own failure.
pub fn delete_namespace(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(Stdio::null())
        .status();
}

/// A background process started in a namespace; killed on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
}

impl Daemon {
    /// Takes ownership of an already spawned child.
    pub fn from_child(child: Child) -> Daemon {
        Daemon { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a veth pair with one end (`a_if`) in `a` and the other (`b_if`) in `b`, both up.
/// The pair is created inside `a`, so the host's namespace is never touched.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<()> {
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

/// The link-local gateway every pod routes through, as in Calico.
pub const POD_GATEWAY: &str = "169.254.1.1";

/// A pod on `node`, plumbed as Calico's CNI plugin does it: a namespace (tagged `tag`) with
/// `eth0` at `address/32`, a veth to the node's `host_if`, a default route via
/// [`POD_GATEWAY`]; on the node, proxy ARP on `host_if`, forwarding on, and a /32 route to
/// the pod. The pod's neighbour entry for the gateway is written directly (the node's proxy
/// ARP answers only when the node has a route to the gateway, i.e. a default route, which a
/// lab node may lack).
pub fn workload(
    node: &Netns,
    host_if: &str,
    tag: &str,
    address: std::net::IpAddr,
) -> Result<Netns> {
    let pod = Netns::new(tag)?;
    veth(node, host_if, &pod, "eth0")?;
    let addr = format!("{address}/32");
    pod.ip(&["addr", "add", &addr, "dev", "eth0"])?;
    let mac = node.exec(&["cat", &format!("/sys/class/net/{host_if}/address")])?;
    pod.ip(&[
        "neigh",
        "replace",
        POD_GATEWAY,
        "lladdr",
        mac.trim(),
        "dev",
        "eth0",
        "nud",
        "permanent",
    ])?;
    pod.ip(&["route", "add", POD_GATEWAY, "dev", "eth0", "scope", "link"])?;
    pod.ip(&["route", "add", "default", "via", POD_GATEWAY, "dev", "eth0"])?;
    node.exec(&[
        "sysctl",
        "-qw",
        &format!("net.ipv4.conf.{host_if}.proxy_arp=1"),
        "net.ipv4.ip_forward=1",
    ])?;
    node.ip(&["route", "add", &addr, "dev", host_if, "scope", "link"])?;
    Ok(pod)
}

/// One L2 segment: a bridge in a namespace of its own (the "switch"), with a veth to each
/// member. Returned namespace owns the bridge; keep it alive as long as the segment is used.
///
/// Each member is `(namespace, interface name in that namespace, addresses to put on it)`.
pub fn lan(tag: &str, members: &[(&Netns, &str, &[&str])]) -> Result<Netns> {
    let sw = Netns::new(&format!("{tag}sw"))?;
    sw.ip(&["link", "add", "br0", "type", "bridge"])?;
    sw.ip(&["link", "set", "br0", "up"])?;
    for (i, (ns, ifname, addrs)) in members.iter().enumerate() {
        let port = format!("p{i}");
        veth(&sw, &port, ns, ifname)?;
        sw.ip(&["link", "set", &port, "master", "br0"])?;
        for a in addrs.iter() {
            if a.contains(':') {
                // No duplicate address detection: the lab's addresses are unique by
                // construction and DAD would delay the first BGP connection by seconds.
                ns.ip(&["addr", "add", a, "dev", ifname, "nodad"])?;
            } else {
                ns.ip(&["addr", "add", a, "dev", ifname])?;
            }
        }
    }
    Ok(sw)
}

/// Polls `check` every `every` until it returns `Some`, for at most `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}

/// A binary of this workspace built beside the running example or benchmark:
/// `target/<profile>/<name>`, since examples run from `target/<profile>/examples/`.
pub fn target_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("cannot locate the target directory")?;
    Ok(dir.join(name))
}

/// Runs a command, returning stdout; a non-zero exit becomes an error carrying stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One CNI plugin call as a container runtime makes it, run in `node`: `CNI_COMMAND`,
/// `CNI_CONTAINERID`, `CNI_IFNAME=eth0`, `CNI_PATH` (where the delegated IPAM plugin is),
/// Kubernetes-style `CNI_ARGS` naming pod `pod` in namespace `default`, `CNI_NETNS` when
/// given, and `conf` on stdin. Returns the whole output whatever the exit status.
#[derive(Debug)]
pub struct CniCall<'a> {
    pub plugin: &'a Path,
    pub command: &'a str,
    pub container: &'a str,
    pub pod: &'a str,
    pub netns: Option<&'a Path>,
    pub conf: &'a [u8],
}

impl CniCall<'_> {
    pub fn run(&self, node: &Netns) -> Result<Output> {
        let cni_path = self
            .plugin
            .parent()
            .context("plugin path has no directory")?;
        let mut cmd = node.command(&[&self.plugin.to_string_lossy()]);
        cmd.env("CNI_COMMAND", self.command)
            .env("CNI_CONTAINERID", self.container)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", cni_path)
            .env(
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={}",
                    self.pod
                ),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(ns) = self.netns {
            cmd.env("CNI_NETNS", ns);
        }
        let mut child = cmd.spawn().context("starting the CNI plugin")?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            stdin.write_all(self.conf)?;
        }
        Ok(child.wait_with_output()?)
    }
}

//! A small cluster in network namespaces for the overlay tests.
//!
//! Node `n` (1-based) owns the pod block `10.244.n.0/26`, runs one pod `10.244.n.5` behind a
//! veth `cali0` (pod side `eth0`, default route via Calico's link-local gateway 169.254.1.1
//! `onlink`, answered by proxy ARP on the node's `cali0`, MAC ee:ee:ee:ee:ee:ee) and uses
//! `10.244.n.0` as its tunnel address. Each node's default route points at the router.
//! Underlay: nodes on subnet 1 share one L2 segment `192.168.10.0/24` (node n = .n, router
//! .254); nodes on subnet 2 sit behind the router namespace on `192.168.20.0/24`.
//!
//! [`Cluster::program`] plays the agent: its `encap::Overlay` plans the overlay towards every
//! other node and sets up the tunnel devices, and it installs the routes Calico
//! would (own block blackholed, pod /32 scope link, remote blocks per the decision) through
//! the fib crate's `NetlinkFib`.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use encap::ipip::IpipConfig;
use encap::vxlan::vtep_mac;
use encap::{
    ClusterNode, IpipDataPath, Overlay, OverlayConfig, PoolEncap, VxlanConfig, VxlanDevice,
};
use ipnet::{IpNet, Ipv4Net};
use lab::Netns;

pub const POD_GATEWAY: &str = "169.254.1.1";
pub const CALI_MAC: &str = "ee:ee:ee:ee:ee:ee";

/// Where a node's underlay address lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subnet {
    /// 192.168.10.0/24, the shared segment.
    One,
    /// 192.168.20.0/24, behind the router.
    Two,
}

#[derive(Debug)]
pub struct Node {
    pub n: u8,
    pub ns: Netns,
    pub pod: Netns,
    pub ip: Ipv4Addr,
    /// The node's address with the prefix it registered (its subnet).
    pub registered: IpNet,
    pub handle: Option<rtnetlink::Handle>,
    pub overlay: Option<Overlay>,
}

impl Node {
    pub fn block(&self) -> Ipv4Net {
        Ipv4Net::new(Ipv4Addr::new(10, 244, self.n, 0), 26).unwrap()
    }
    pub fn pod_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, self.n, 5)
    }
    pub fn tunnel_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, self.n, 0)
    }
    pub fn handle(&self) -> &rtnetlink::Handle {
        self.handle.as_ref().unwrap()
    }
    pub fn vxlan(&self) -> Option<&VxlanDevice> {
        self.overlay.as_ref().and_then(Overlay::vxlan)
    }
    pub fn ipip(&self) -> Option<&IpipDataPath> {
        self.overlay.as_ref().and_then(Overlay::ipip)
    }
}

/// The namespaces of one test cluster; dropping it removes them all.
#[derive(Debug)]
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub router: Netns,
    pub switch: Netns,
}

impl Cluster {
    /// Builds nodes 1..=len with the given subnets. Must be called inside a tokio runtime
    /// (each node gets an rtnetlink handle bound to its namespace).
    pub fn new(subnets: &[Subnet]) -> Cluster {
        let router = Netns::new("enrt").unwrap();
        router
            .exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])
            .unwrap();
        let mut nodes = Vec::new();
        for (i, subnet) in subnets.iter().enumerate() {
            let n = u8::try_from(i + 1).unwrap();
            let ns = Netns::new(&format!("ennode{n}")).unwrap();
            ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])
                .unwrap();
            let (ip, registered) = match subnet {
                Subnet::One => {
                    let ip = Ipv4Addr::new(192, 168, 10, n);
                    (ip, IpNet::new(IpAddr::V4(ip), 24).unwrap())
                }
                Subnet::Two => {
                    let ip = Ipv4Addr::new(192, 168, 20, n);
                    lab::veth(&ns, "eth0", &router, &format!("r{n}")).unwrap();
                    ns.addr("eth0", &format!("{ip}/24")).unwrap();
                    router
                        .addr(&format!("r{n}"), "192.168.20.254/24")
                        .unwrap_or_else(|_| {
                            // The router's address on subnet 2 exists once; later members
                            // of subnet 2 would need a bridge. One is enough for the tests.
                            panic!("only one node on subnet 2 is supported")
                        });
                    ns.ip(&["route", "add", "default", "via", "192.168.20.254"])
                        .unwrap();
                    (ip, IpNet::new(IpAddr::V4(ip), 24).unwrap())
                }
            };
            let pod = Netns::new(&format!("enpod{n}")).unwrap();
            lab::veth(&ns, "cali0", &pod, "eth0").unwrap();
            ns.ip(&["link", "set", "cali0", "address", CALI_MAC])
                .unwrap();
            pod.addr("eth0", &format!("10.244.{n}.5/32")).unwrap();
            // Calico's trick: the node answers the pod's ARP for the link-local gateway by proxy
            // ARP on the workload interface (it has a route to 169.254.1.1, its default route,
            // through another interface), without delay.
            ns.exec(&[
                "sysctl",
                "-qw",
                "net.ipv4.conf.cali0.proxy_arp=1",
                "net.ipv4.neigh.cali0.proxy_delay=0",
            ])
            .unwrap();
            pod.ip(&[
                "route",
                "add",
                "default",
                "via",
                POD_GATEWAY,
                "dev",
                "eth0",
                "onlink",
            ])
            .unwrap();
            let handle = encap::netns::rtnetlink_handle(&ns.path()).unwrap();
            nodes.push(Node {
                n,
                ns,
                pod,
                ip,
                registered,
                handle: Some(handle),
                overlay: None,
            });
        }
        // Subnet 1: one L2 segment with the router.
        let ones: Vec<&Node> = nodes.iter().filter(|n| n.ip.octets()[2] == 10).collect();
        let addrs: Vec<String> = ones.iter().map(|n| format!("{}/24", n.ip)).collect();
        let mut members: Vec<(&Netns, &str, Vec<&str>)> = ones
            .iter()
            .zip(&addrs)
            .map(|(n, a)| (&n.ns, "eth0", vec![a.as_str()]))
            .collect();
        members.push((&router, "r0", vec!["192.168.10.254/24"]));
        let members: Vec<(&Netns, &str, &[&str])> = members
            .iter()
            .map(|(ns, i, a)| (*ns, *i, a.as_slice()))
            .collect();
        let switch = lab::lan("en", &members).unwrap();
        router.ip(&["link", "set", "r0", "up"]).unwrap();
        for n in &ones {
            n.ns.ip(&["link", "set", "eth0", "up"]).unwrap();
            n.ns.ip(&["route", "add", "default", "via", "192.168.10.254"])
                .unwrap();
        }
        Cluster {
            nodes,
            router,
            switch,
        }
    }

    /// Plays the agent on node `i` (0-based) for an IP pool with `pool`'s encapsulation: its
    /// `encap::Overlay` plans the overlay and keeps the tunnel devices, and the planned routes
    /// plus the node's own (block blackhole, pod /32) go to the FIB.
    pub async fn program(&mut self, i: usize, pool: PoolEncap) {
        let cluster: Vec<ClusterNode> = self
            .nodes
            .iter()
            .map(|n| ClusterNode {
                node_ip: IpAddr::V4(n.ip),
                vtep: Some((IpAddr::V4(n.tunnel_ip()), vtep_mac(IpAddr::V4(n.ip)))),
                blocks: vec![(IpNet::V4(n.block()), pool)],
            })
            .collect();
        let me = &mut self.nodes[i];
        if me.overlay.is_none() {
            let mut vxlan = VxlanConfig::new("eth0", IpAddr::V4(me.ip));
            vxlan.mac = Some(vtep_mac(IpAddr::V4(me.ip)));
            vxlan.tunnel_address = Some(IpAddr::V4(me.tunnel_ip()));
            let mut ipip = IpipConfig::new("eth0");
            ipip.tunnel_address = Some(me.tunnel_ip());
            let config = OverlayConfig {
                this_node: me.registered,
                this_node_v6: None,
                vxlan,
                vxlan_v6: None,
                ipip,
                netns: Some(me.ns.path()),
            };
            me.overlay = Some(Overlay::new(me.handle().clone(), config));
        }
        let overlay = me.overlay.as_mut().unwrap();
        let plan = overlay.apply(&[pool], &cluster).await.unwrap();
        assert!(plan.unroutable.is_empty(), "{:?}", plan.unroutable);
        let mut routes = vec![
            fib::Route::blackhole(IpNet::V4(me.block())),
            fib::Route::via(
                IpNet::V4(Ipv4Net::new(me.pod_ip(), 32).unwrap()),
                fib::NextHop::dev("cali0"),
            ),
        ];
        routes.extend(plan.routes.iter().cloned());
        install_routes(&me.ns, &routes);
        eprintln!("node {} routes: {:?}", me.n, plan.routes);
    }

    /// Whether the pod of node `from` can ping the pod of node `to` (0-based indices).
    pub fn pod_ping(&self, from: usize, to: usize, count: &str) -> bool {
        let dst = self.nodes[to].pod_ip().to_string();
        self.nodes[from]
            .pod
            .exec_output(&[
                "ping", "-n", "-q", "-c", count, "-W", "1", "-i", "0.2", &dst,
            ])
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Waits (bounded) until the pod of node `from` reaches the pod of node `to`.
    pub fn assert_pods_reach(&self, from: usize, to: usize) {
        lab::wait_for(
            &format!("pod {} -> pod {}", from + 1, to + 1),
            Duration::from_secs(8),
            Duration::from_millis(100),
            || self.pod_ping(from, to, "3").then_some(()),
        )
        .unwrap();
    }
}

/// Installs `routes` in `ns` through the fib crate's kernel FIB (level-triggered: the full
/// desired set, our protocol id), failing on any route the kernel refuses.
pub fn install_routes(ns: &Netns, routes: &[fib::Route]) {
    use fib::RouteTable;
    let mut table = fib::NetlinkFib::in_namespace(ns.path(), fib::FibConfig::default()).unwrap();
    let report = table.apply(routes.to_vec()).unwrap();
    assert!(report.is_clean(), "FIB refused routes: {report:?}");
    assert_eq!(
        report.added + report.changed + report.unchanged,
        routes.len(),
        "{report:?}"
    );
}

/// Captures on `dev` in `ns` into a pcap file until [`Capture::stop`].
#[derive(Debug)]
pub struct Capture {
    child: std::process::Child,
    file: std::path::PathBuf,
}

impl Capture {
    pub fn start(ns: &Netns, dev: &str, tag: &str) -> Capture {
        let file = std::env::temp_dir().join(format!(
            "encap-{tag}-{}-{}.pcap",
            std::process::id(),
            ns.name()
        ));
        let _ = std::fs::remove_file(&file);
        let path = file.to_string_lossy().into_owned();
        let child = ns
            .command(&[
                "tcpdump",
                "-i",
                dev,
                "-n",
                "-U",
                "--immediate-mode",
                "-w",
                &path,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        lab::wait_for(
            "tcpdump to open its capture",
            Duration::from_secs(5),
            Duration::from_millis(20),
            || file.exists().then_some(()),
        )
        .unwrap();
        // The file exists once the capture is open; give the filter a moment to attach.
        std::thread::sleep(Duration::from_millis(200));
        Capture { child, file }
    }

    /// Stops the capture and returns how many captured packets match each tcpdump `filter`.
    pub fn stop_and_count(mut self, filters: &[&str]) -> Vec<usize> {
        std::thread::sleep(Duration::from_millis(200));
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let _ = self.child.wait();
        let path = self.file.to_string_lossy().into_owned();
        // Shown when the test fails, to see what actually crossed the link.
        if let Ok(all) = std::process::Command::new("tcpdump")
            .args(["-n", "-r", &path])
            .output()
        {
            let text = String::from_utf8_lossy(&all.stdout);
            for line in text.lines().take(80) {
                eprintln!("captured: {line}");
            }
        }
        let counts = filters
            .iter()
            .map(|f| {
                let out = std::process::Command::new("tcpdump")
                    .args(["-n", "-r", &path, f])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).lines().count()
            })
            .collect();
        let _ = std::fs::remove_file(&self.file);
        counts
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.file);
    }
}

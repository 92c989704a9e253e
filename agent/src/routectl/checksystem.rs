//! `routectl node checksystem`: whether this host's kernel gives routerd what it needs, in
//! calicoctl's layout (`\t\t<name, 20 wide>\t\t\t\t\t<OK|FAIL|SKIP>`).
//!
//! calicoctl checks the modules its iptables data plane uses; routerd needs others, and
//! needs few of them: it routes with nothing but rtnetlink. What a feature needs is probed
//! the way routerd will use it: a link of that type (or an nftables table) is created in a
//! scratch network namespace (`unshare --net`, discarded at once), so a module that is
//! loadable on demand, built in, or missing is told apart without reading `/lib/modules`
//! (which containers often lack). Only what routerd cannot run without fails the check
//! (exit 1); a missing encapsulation or NAT feature is a warning naming what it costs, and
//! the missing `ipip` module is reported with the userspace TUN fallback that covers it.
//!
//! [`evaluate`] is pure (facts in, report out), so the report is golden-tested; [`probe`]
//! gathers the facts on the host.

use std::process::{Command, Stdio};

/// The oldest kernel routerd supports: rtnetlink route protocols, VXLAN with `dstport`,
/// nftables NAT.
pub const MIN_KERNEL: (u32, u32) = (4, 19);

/// One kernel feature and whether the probe found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feature {
    pub name: &'static str,
    pub present: bool,
}

/// What [`probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// `uname -r`, if readable.
    pub kernel: Option<String>,
    /// vxlan, ipip, tun, nf_tables, nft_masq, in that order.
    pub features: Vec<Feature>,
    /// `net.ipv4.ip_forward`, if the sysctl exists.
    pub ipv4_forwarding: Option<String>,
    /// `net.ipv6.conf.all.forwarding`, if IPv6 is there.
    pub ipv6_forwarding: Option<String>,
}

fn line(out: &mut String, name: &str, result: &str) {
    out.push_str(&format!("\t\t{name:<20}\t\t\t\t\t{result}\n"));
}

fn kernel_ok(release: &str) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= MIN_KERNEL
}

/// The report, and whether routerd can run here.
pub fn evaluate(facts: &Facts) -> (String, bool) {
    let mut out = String::from("Checking kernel version...\n");
    let mut ok = true;
    match &facts.kernel {
        Some(release) if kernel_ok(release) => line(&mut out, release, "OK"),
        Some(release) => {
            line(&mut out, release, "FAIL");
            out.push_str(&format!(
                "Minimum kernel version to run routerd is {}.{}. Detected kernel version: {release}\n",
                MIN_KERNEL.0, MIN_KERNEL.1
            ));
            ok = false;
        }
        None => {
            line(&mut out, "", "FAIL");
            out.push_str("Error executing command: cannot read the kernel release\n");
            ok = false;
        }
    }
    out.push_str("Checking kernel modules...\n");
    let has = |name: &str| facts.features.iter().any(|f| f.name == name && f.present);
    for f in &facts.features {
        if f.present {
            line(&mut out, f.name, "OK");
            continue;
        }
        let cost = match f.name {
            "ipip" if has("tun") => {
                "no ipip module: IP-in-IP pools use routerd's userspace TUN fallback (tun OK)"
            }
            "ipip" => "no ipip module and no TUN device: pools with ipipMode cannot be routed",
            "vxlan" => "no vxlan module: pools with vxlanMode cannot be routed",
            "tun" if has("ipip") => "no TUN device: not needed, the kernel's ipip module is used",
            "tun" => "no TUN device: no userspace IP-in-IP fallback",
            "nf_tables" | "nft_masq" => "no nftables masquerade: natOutgoing cannot be programmed",
            _ => "not found",
        };
        out.push_str(&format!("WARNING: {cost}\n"));
        line(
            &mut out,
            f.name,
            if f.name == "tun" && has("ipip") {
                "SKIP"
            } else {
                "FAIL"
            },
        );
    }
    out.push_str("Checking sysctls...\n");
    match &facts.ipv4_forwarding {
        Some(v) => line(
            &mut out,
            "net.ipv4.ip_forward",
            &if v == "1" {
                "OK".to_string()
            } else {
                format!("OK ({v}: routerd turns it on)")
            },
        ),
        None => {
            line(&mut out, "net.ipv4.ip_forward", "FAIL");
            out.push_str("WARNING: no IPv4 forwarding sysctl: this kernel cannot route\n");
            ok = false;
        }
    }
    match &facts.ipv6_forwarding {
        Some(v) if v == "1" => line(&mut out, "net.ipv6.forwarding", "OK"),
        Some(v) => line(
            &mut out,
            "net.ipv6.forwarding",
            &format!("OK ({v}: routerd turns it on)"),
        ),
        None => {
            out.push_str("WARNING: no IPv6: IPv6 pools cannot be used\n");
            line(&mut out, "net.ipv6.forwarding", "SKIP");
        }
    }
    if ok {
        out.push_str("System meets minimum system requirements to run routerd!\n");
    }
    (out, ok)
}

/// The line of the failed check, as calicoctl returns it.
pub const NOT_MET: &str =
    "system doesn't meet one or more minimum systems requirements to run routerd";

/// Whether `script` (an `sh -c` line) succeeds in a scratch network namespace.
fn in_scratch_netns(script: &str) -> bool {
    Command::new("unshare")
        .args(["--net", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Gathers the facts of this host (needs root, for the scratch namespaces).
pub fn probe() -> Facts {
    let probes: [(&'static str, &str); 5] = [
        (
            "vxlan",
            "ip link add rtchk0 type vxlan id 1 dstport 4789 local 192.0.2.1",
        ),
        (
            "ipip",
            "ip link add rtchk1 type ipip local 192.0.2.1 remote 192.0.2.2",
        ),
        ("tun", "ip tuntap add dev rtchk2 mode tun"),
        ("nf_tables", "nft add table inet rtchk"),
        (
            "nft_masq",
            "nft add table inet rtchk && nft 'add chain inet rtchk post { type nat hook postrouting priority 100 ; }' && nft add rule inet rtchk post masquerade",
        ),
    ];
    Facts {
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        features: probes
            .iter()
            .map(|(name, script)| Feature {
                name,
                present: in_scratch_netns(script),
            })
            .collect(),
        ipv4_forwarding: read_trimmed("/proc/sys/net/ipv4/ip_forward"),
        ipv6_forwarding: read_trimmed("/proc/sys/net/ipv6/conf/all/forwarding"),
    }
}

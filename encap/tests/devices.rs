//! The tunnel devices against a real kernel, one network namespace each: created from the
//! parent link's parameters, repaired when they drift, recreated when an immutable parameter
//! changes, and removed with the data path.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use encap::ipip::IpipConfig;
use encap::vxlan::vtep_mac;
use encap::{EncapError, IpipDataPath, RemoteVtep, VxlanConfig, VxlanDevice};
use lab::Netns;

const NODE: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 30, 1));

/// A namespace whose `eth0` (one end of a veth pair) has MTU 9000 and the node address.
fn node_with_jumbo_parent(tag: &str) -> Netns {
    let ns = Netns::new(tag).unwrap();
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ])
    .unwrap();
    ns.ip(&["link", "set", "eth0", "mtu", "9000"]).unwrap();
    ns.ip(&["link", "set", "eth0p", "up"]).unwrap();
    ns.addr("eth0", "192.168.30.1/24").unwrap();
    ns
}

fn show(ns: &Netns, args: &[&str]) -> String {
    ns.ip(args).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vxlan_device_is_created_repaired_and_recreated() {
    lab::require(&["ip", "bridge"]);
    let ns = node_with_jumbo_parent("envx");
    let handle = encap::netns::rtnetlink_handle(&ns.path()).unwrap();
    let mut cfg = VxlanConfig::new("eth0", NODE);
    cfg.mac = Some(vtep_mac(NODE));
    cfg.tunnel_address = Some("10.244.9.0".parse().unwrap());

    let dev = VxlanDevice::ensure(handle.clone(), &cfg).await.unwrap();
    assert_eq!(dev.mtu(), 8950, "parent 9000 - 50");
    assert_eq!(dev.mac(), vtep_mac(NODE));
    let details = show(&ns, &["-d", "link", "show", "vxlan.calico"]);
    assert!(details.contains("mtu 8950"), "{details}");
    assert!(details.contains("66:ca:c0:a8:1e:01"), "{details}");
    assert!(
        details.contains("state UNKNOWN") || details.contains(",UP"),
        "{details}"
    );
    let addrs = show(&ns, &["-4", "addr", "show", "dev", "vxlan.calico"]);
    assert!(addrs.contains("10.244.9.0/32"), "{addrs}");

    // Idempotent: the same config leaves the same device.
    let again = VxlanDevice::ensure(handle.clone(), &cfg).await.unwrap();
    assert_eq!(again.index(), dev.index());

    // Drift (someone changed the MTU, added an address) is repaired in place.
    ns.ip(&["link", "set", "vxlan.calico", "mtu", "1000"])
        .unwrap();
    ns.ip(&["addr", "add", "10.99.0.1/24", "dev", "vxlan.calico"])
        .unwrap();
    let repaired = VxlanDevice::ensure(handle.clone(), &cfg).await.unwrap();
    assert_eq!(repaired.index(), dev.index());
    assert!(show(&ns, &["link", "show", "vxlan.calico"]).contains("mtu 8950"));
    let addrs = show(&ns, &["-4", "addr", "show", "dev", "vxlan.calico"]);
    assert!(!addrs.contains("10.99.0.1"), "{addrs}");
    assert!(addrs.contains("10.244.9.0/32"), "{addrs}");

    // A new VNI cannot be changed on a live device: it is recreated.
    cfg.vni = 4097;
    let recreated = VxlanDevice::ensure(handle.clone(), &cfg).await.unwrap();
    assert_ne!(recreated.index(), dev.index());
    assert!(show(&ns, &["-d", "link", "show", "vxlan.calico"]).contains("vxlan id 4097"));

    // Remote VTEPs: full desired set in, entries of departed nodes out.
    let vtep = |n: u8| RemoteVtep {
        node_ip: IpAddr::V4(Ipv4Addr::new(192, 168, 30, n)),
        tunnel_ip: IpAddr::V4(Ipv4Addr::new(10, 244, n, 0)),
        mac: vtep_mac(IpAddr::V4(Ipv4Addr::new(192, 168, 30, n))),
    };
    let c = recreated
        .set_remote_vteps(vec![vtep(2), vtep(3)])
        .await
        .unwrap();
    assert_eq!((c.set_neighbours.len(), c.set_fdb.len()), (2, 2));
    let c = recreated.set_remote_vteps(vec![vtep(3)]).await.unwrap();
    assert_eq!((c.del_neighbours.len(), c.del_fdb.len()), (1, 1));
    assert!(c.set_neighbours.is_empty() && c.set_fdb.is_empty());
    let (neigh, fdb) = recreated.current_entries().await.unwrap();
    assert_eq!(neigh.len(), 1);
    assert_eq!(neigh[0].ip, vtep(3).tunnel_ip);
    assert_eq!(fdb.len(), 1);
    assert_eq!(fdb[0].dst, vtep(3).node_ip);
    let fdb_text = ns
        .exec(&["bridge", "fdb", "show", "dev", "vxlan.calico"])
        .unwrap();
    assert!(
        fdb_text.contains("66:ca:c0:a8:1e:03 dst 192.168.30.3 self permanent"),
        "{fdb_text}"
    );
    assert!(!fdb_text.contains("66:ca:c0:a8:1e:02"), "{fdb_text}");

    recreated.remove().await.unwrap();
    assert!(ns.ip(&["link", "show", "vxlan.calico"]).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vxlan_refuses_foreign_link_and_missing_parent() {
    lab::require(&["ip"]);
    let ns = node_with_jumbo_parent("envxerr");
    let handle = encap::netns::rtnetlink_handle(&ns.path()).unwrap();

    let mut cfg = VxlanConfig::new("eth0", NODE);
    cfg.name = "eth0p".into(); // a veth we do not own
    let err = VxlanDevice::ensure(handle.clone(), &cfg).await.unwrap_err();
    assert!(matches!(err, EncapError::WrongLinkKind { .. }), "{err}");
    assert!(
        show(&ns, &["link", "show", "eth0p"]).contains("eth0p"),
        "left alone"
    );

    let cfg = VxlanConfig::new("nosuchlink", NODE);
    let err = VxlanDevice::ensure(handle, &cfg).await.unwrap_err();
    assert!(matches!(err, EncapError::LinkNotFound(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipip_device_follows_parent_and_goes_with_the_data_path() {
    lab::require(&["ip"]);
    let ns = node_with_jumbo_parent("enip");
    let handle = encap::netns::rtnetlink_handle(&ns.path()).unwrap();
    let mut cfg = IpipConfig::new("eth0");
    cfg.tunnel_address = Some("10.244.9.0".parse().unwrap());

    let dp = IpipDataPath::start(&handle, Some(&ns.path()), &cfg)
        .await
        .unwrap();
    let link = show(&ns, &["-d", "link", "show", "tunl0"]);
    assert!(link.contains("mtu 8980"), "parent 9000 - 20: {link}");
    assert!(link.contains(",UP") || link.contains("<UP"), "{link}");
    if dp.is_userspace() {
        assert!(link.contains("tun type tun"), "{link}");
    }
    let addrs = show(&ns, &["-4", "addr", "show", "dev", "tunl0"]);
    assert!(addrs.contains("10.244.9.0/32"), "{addrs}");

    if dp.is_userspace() {
        // Only one data path per namespace: tunl0 now exists and is not an ipip device.
        let err = IpipDataPath::start(&handle, Some(&ns.path()), &cfg)
            .await
            .unwrap_err();
        assert!(matches!(err, EncapError::WrongLinkKind { .. }), "{err}");

        // Dropping the data path closes the TUN fd, which removes the device.
        drop(dp);
        lab::wait_for(
            "tunl0 to disappear",
            Duration::from_secs(5),
            Duration::from_millis(20),
            || ns.ip(&["link", "show", "tunl0"]).is_err().then_some(()),
        )
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vxlan_over_ipv6_underlay() {
    lab::require(&["ip", "bridge"]);
    let ns = node_with_jumbo_parent("envx6");
    ns.ip(&["addr", "add", "fd00:30::1/64", "dev", "eth0", "nodad"])
        .unwrap();
    let handle = encap::netns::rtnetlink_handle(&ns.path()).unwrap();
    let local: IpAddr = "fd00:30::1".parse().unwrap();
    let mut cfg = VxlanConfig::new("eth0", local);
    cfg.mac = Some(vtep_mac(local));
    cfg.tunnel_address = Some("fd10:244:9::".parse().unwrap());

    let dev = VxlanDevice::ensure(handle.clone(), &cfg).await.unwrap();
    assert_eq!(dev.name(), "vxlan-v6.calico");
    assert_eq!(dev.mtu(), 8930, "parent 9000 - 70 over IPv6");
    let details = show(&ns, &["-d", "link", "show", "vxlan-v6.calico"]);
    assert!(details.contains("local fd00:30::1"), "{details}");
    let addrs = show(&ns, &["-6", "addr", "show", "dev", "vxlan-v6.calico"]);
    assert!(addrs.contains("fd10:244:9::/128"), "{addrs}");
    // Idempotent over IPv6 too (the local6 attribute is compared, not just local).
    assert_eq!(
        VxlanDevice::ensure(handle.clone(), &cfg)
            .await
            .unwrap()
            .index(),
        dev.index()
    );

    let remote = RemoteVtep {
        node_ip: "fd00:30::2".parse().unwrap(),
        tunnel_ip: "fd10:244:2::".parse().unwrap(),
        mac: vtep_mac("fd00:30::2".parse().unwrap()),
    };
    dev.set_remote_vteps(vec![remote]).await.unwrap();
    let (neigh, fdb) = dev.current_entries().await.unwrap();
    assert_eq!(neigh.len(), 1);
    assert_eq!(neigh[0].ip, remote.tunnel_ip);
    assert_eq!(
        fdb.len(),
        1,
        "16-byte NDA_DST of the FDB entry is read back"
    );
    assert_eq!(fdb[0].dst, remote.node_ip);
    assert!(dev.set_remote_vteps(vec![remote]).await.unwrap().is_empty());
    let gone = dev.set_remote_vteps(Vec::new()).await.unwrap();
    assert_eq!((gone.del_neighbours.len(), gone.del_fdb.len()), (1, 1));
    let (neigh, fdb) = dev.current_entries().await.unwrap();
    assert!(neigh.is_empty() && fdb.is_empty());
}

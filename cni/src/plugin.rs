//! `routerd-cni`: a pod's network, from the IPAM plugin's addresses to the host route.
//!
//! ADD: delegate to the IPAM plugin, build the veth ([`dataplane::attach`]), record the
//! WorkloadEndpoint, return the result (host and pod interfaces, the addresses on the pod's).
//! A failure after IPAM releases the addresses and removes the veth, so a failed ADD leaves
//! nothing behind; a plugin killed midway leaves what the next ADD (idempotent: same handle,
//! same addresses, the veth rebuilt) or DEL of the container reclaims.
//!
//! DEL: remove the endpoint (unless it belongs to another container of the same pod, as
//! Calico checks), the veth, and the addresses (IPAM DEL). Every step treats "already gone"
//! as done, so DEL of something unknown succeeds, as the spec requires.

use std::path::PathBuf;
use std::sync::Arc;

use datastore::resource::{
    record_name, Object, ObjectMeta, Resource, WorkloadEndpoint, WorkloadEndpointSpec,
};
use datastore::{Datastore, DatastoreError};
use ipam::EncapMode;
use ipnet::IpNet;
use rscni_plugin::cni::Cni;
use rscni_plugin::error::Error;
use rscni_plugin::types::{Args, CNIResult, Interface, IpConfig};

use crate::config::PluginConfig;
use crate::dataplane::{self, Attachment};
use crate::ipam_plugin::{self, open_datastore, workload_of};
use crate::workload::WorkloadId;
use crate::{delegate, CniError};

/// IP-in-IP header: 20 bytes.
const IPIP_OVERHEAD: u32 = 20;
/// VXLAN: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14.
const VXLAN_OVERHEAD: u32 = 50;
const BASE_MTU: u32 = 1500;

/// The pod MTU: the configured one, else 1500 less the largest overhead of the pools the
/// addresses come from.
pub fn pod_mtu(configured: u32, pools: &[ipam::IpPool], addresses: &[IpNet]) -> u32 {
    if configured != 0 {
        return configured;
    }
    let overhead = addresses
        .iter()
        .filter_map(|a| ipam_plugin::pool_of(pools, a.addr()))
        .map(|p| {
            if p.vxlan_mode() != EncapMode::Never {
                VXLAN_OVERHEAD
            } else if p.ipip_mode() != EncapMode::Never {
                IPIP_OVERHEAD
            } else {
                0
            }
        })
        .max()
        .unwrap_or(0);
    BASE_MTU - overhead
}

fn runtime() -> Result<tokio::runtime::Runtime, CniError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::Kernel {
            operation: "start the runtime",
            reason: e.to_string(),
        })
}

fn netns_of(args: &Args) -> Result<PathBuf, CniError> {
    match args.netns() {
        Some(p) if !p.as_os_str().is_empty() => Ok(p.clone()),
        _ => Err(CniError::Environment("CNI_NETNS: missing".into())),
    }
}

fn ipam_binary(args: &Args, config: &PluginConfig) -> Result<PathBuf, CniError> {
    let plugin = config
        .ipam_type
        .as_deref()
        .ok_or_else(|| CniError::Config("ipam: missing (type routerd-ipam)".into()))?;
    delegate::find(plugin, args.path())
}

/// The stored endpoint of `id`, with its record version.
fn stored_endpoint(
    ds: &dyn Datastore,
    config: &PluginConfig,
    id: &WorkloadId,
) -> Result<Option<(WorkloadEndpoint, u64)>, CniError> {
    let Some(name) = id.endpoint_name() else {
        return Ok(None);
    };
    match ds.get("WorkloadEndpoint", &record_name(&id.namespace, &name)) {
        Ok(r) => match Resource::from_value(r.value, 1) {
            Ok(Resource::WorkloadEndpoint(w)) => Ok(Some((w, r.version))),
            _ => Ok(None),
        },
        Err(DatastoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(CniError::datastore(&config.datastore, e)),
    }
}

/// Creates or replaces the endpoint record (retried on a lost race).
fn write_endpoint(
    ds: &dyn Datastore,
    config: &PluginConfig,
    wep: &WorkloadEndpoint,
) -> Result<(), CniError> {
    let resource = Resource::WorkloadEndpoint(wep.clone());
    resource
        .validate()
        .map_err(|e| CniError::Config(e.to_string()))?;
    let name = resource.record_name();
    let value = resource.to_value();
    for _ in 0..8 {
        let result = match ds.get("WorkloadEndpoint", &name) {
            Ok(r) => ds
                .update("WorkloadEndpoint", &name, value.clone(), r.version)
                .map(|_| ()),
            Err(DatastoreError::NotFound { .. }) => ds
                .create("WorkloadEndpoint", &name, value.clone())
                .map(|_| ()),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => return Ok(()),
            Err(DatastoreError::Conflict { .. }) | Err(DatastoreError::AlreadyExists { .. }) => {
                continue
            }
            Err(e) => return Err(CniError::datastore(&config.datastore, e)),
        }
    }
    Err(CniError::datastore(
        &config.datastore,
        format!("WorkloadEndpoint {name}: too many concurrent writers"),
    ))
}

/// The endpoint record for an attachment.
pub fn endpoint(
    id: &WorkloadId,
    host_veth: &str,
    pod_mac: &str,
    addresses: &[IpNet],
) -> Result<WorkloadEndpoint, CniError> {
    let name = id.endpoint_name().ok_or_else(|| {
        CniError::Environment(format!(
            "cannot name the endpoint of node {:?}, workload {:?}, interface {:?} \
             (a part is empty or starts or ends with '-')",
            id.node, id.container_id, id.ifname
        ))
    })?;
    let mut metadata = ObjectMeta::named(name);
    metadata.namespace = Some(id.namespace.clone());
    metadata
        .labels
        .insert("projectcalico.org/namespace".into(), id.namespace.clone());
    metadata.labels.insert(
        "projectcalico.org/orchestrator".into(),
        id.orchestrator.into(),
    );
    Ok(Object {
        metadata,
        spec: WorkloadEndpointSpec {
            ip_networks: addresses.iter().map(IpNet::to_string).collect(),
            interface_name: host_veth.to_string(),
            mac: pod_mac.to_string(),
            ..id.endpoint_spec()
        },
        ..Default::default()
    })
}

/// The `routerd-cni` plugin.
#[derive(Debug, Default)]
pub struct RouterdCni;

impl RouterdCni {
    fn add_inner(&self, args: &Args) -> Result<CNIResult, CniError> {
        let config = PluginConfig::from_netconf(args.config())?;
        let id = workload_of(args, &config)?;
        let netns = netns_of(args)?;
        std::fs::metadata(&netns).map_err(|e| CniError::Netns {
            path: netns.display().to_string(),
            reason: e.to_string(),
        })?;
        let ipam = ipam_binary(args, &config)?;
        let ds = open_datastore(&config.datastore)?;
        let pools = ipam_plugin::ip_pools(&*ds, &config.datastore)?;
        let result = delegate::run(&ipam, "ADD", args.config())?.unwrap_or_default();
        let addresses: Vec<IpNet> = result
            .ips
            .iter()
            .map(|ip| IpNet::new(ip.address.addr(), ip.address.max_prefix_len()))
            .collect::<Result<_, _>>()
            .map_err(|e| CniError::Ipam(e.to_string()))?;
        if addresses.is_empty() {
            return Err(CniError::Ipam("the IPAM plugin returned no address".into()));
        }
        let attachment = Attachment {
            host_veth: id.host_veth_name(),
            ifname: id.ifname.clone(),
            netns: netns.clone(),
            mtu: pod_mtu(config.mtu, &pools, &addresses),
            addresses: addresses.clone(),
            route_protocol: config.route_protocol,
        };
        let built = runtime()?
            .block_on(dataplane::attach(&attachment))
            .and_then(|attached| {
                let wep = endpoint(&id, &attachment.host_veth, &attached.pod_mac, &addresses)?;
                write_endpoint(&*ds, &config, &wep)?;
                Ok(attached)
            });
        let attached = match built {
            Ok(a) => a,
            Err(e) => {
                // Nothing of a failed ADD stays: the addresses go back, the veth goes.
                let _ = delegate::run(&ipam, "DEL", args.config());
                let _ = runtime().map(|rt| {
                    rt.block_on(async {
                        if let Ok(h) = dataplane::host_handle() {
                            let _ = dataplane::remove_host_veth(&h, &attachment.host_veth).await;
                        }
                    })
                });
                return Err(e);
            }
        };
        Ok(CNIResult {
            interfaces: vec![
                Interface {
                    name: attachment.host_veth.clone(),
                    mac: attached.host_mac,
                    mtu: None,
                    sandbox: None,
                    socket_path: None,
                    pci_id: None,
                },
                Interface {
                    name: attachment.ifname.clone(),
                    mac: attached.pod_mac,
                    mtu: Some(attachment.mtu),
                    sandbox: Some(netns.display().to_string()),
                    socket_path: None,
                    pci_id: None,
                },
            ],
            ips: addresses
                .iter()
                .map(|a| IpConfig {
                    interface: Some(1),
                    address: *a,
                    gateway: None,
                })
                .collect(),
            ..Default::default()
        })
    }

    fn del_inner(&self, args: &Args) -> Result<(), CniError> {
        let config = PluginConfig::from_netconf(args.config())?;
        let id = workload_of(args, &config)?;
        let ds = open_datastore(&config.datastore)?;
        let stored = stored_endpoint(&*ds, &config, &id)?;
        // A newer sandbox of the same pod owns the endpoint: leave it and its veth (Calico
        // does the same), but still free this container's addresses. Without a record (a
        // killed ADD, or nothing at all) the veth of this workload's name goes.
        let ours = stored.as_ref().is_none_or(|(w, _)| {
            w.spec.container_id.is_empty() || w.spec.container_id == id.container_id
        });
        if ours {
            let mut host_veth = id.host_veth_name();
            if let Some((wep, version)) = stored {
                if !wep.spec.interface_name.is_empty() {
                    host_veth = wep.spec.interface_name.clone();
                }
                let name = Resource::WorkloadEndpoint(wep).record_name();
                match ds.delete("WorkloadEndpoint", &name, Some(version)) {
                    Ok(_) | Err(DatastoreError::NotFound { .. }) => {}
                    Err(e) => return Err(CniError::datastore(&config.datastore, e)),
                }
            }
            runtime()?.block_on(async {
                let h = dataplane::host_handle()?;
                dataplane::remove_host_veth(&h, &host_veth).await
            })?;
        }
        match ipam_binary(args, &config) {
            Ok(ipam) => {
                delegate::run(&ipam, "DEL", args.config())?;
            }
            // Without the IPAM binary, release directly: DEL must not leak addresses.
            Err(_) => {
                ipam_plugin::release(&ds, &config, &id)?;
            }
        }
        Ok(())
    }

    fn check_inner(&self, args: &Args) -> Result<(), CniError> {
        let config = PluginConfig::from_netconf(args.config())?;
        let id = workload_of(args, &config)?;
        let netns = netns_of(args)?;
        let ds = open_datastore(&config.datastore)?;
        let (wep, _) = stored_endpoint(&*ds, &config, &id)?.ok_or_else(|| {
            CniError::Check(format!(
                "WorkloadEndpoint {} is missing",
                id.endpoint_name().unwrap_or_default()
            ))
        })?;
        let attachment = Attachment {
            host_veth: wep.spec.interface_name.clone(),
            ifname: id.ifname.clone(),
            netns,
            mtu: 0,
            addresses: wep.spec.addresses(),
            route_protocol: config.route_protocol,
        };
        runtime()?.block_on(dataplane::check(&attachment))?;
        let ipam = ipam_binary(args, &config)?;
        delegate::run(&ipam, "CHECK", args.config())?;
        Ok(())
    }
}

impl Cni for RouterdCni {
    fn add(&self, args: Args) -> Result<CNIResult, Error> {
        Ok(self.add_inner(&args)?)
    }

    fn del(&self, args: Args) -> Result<(), Error> {
        Ok(self.del_inner(&args)?)
    }

    fn check(&self, args: Args) -> Result<(), Error> {
        Ok(self.check_inner(&args)?)
    }

    fn status(&self, args: Args) -> Result<(), Error> {
        crate::ipam_plugin::RouterdIpam.status(args)
    }

    fn gc(&self, args: Args) -> Result<(), Error> {
        let config = PluginConfig::from_netconf(args.config())?;
        let ds: Arc<dyn Datastore> = open_datastore(&config.datastore)?;
        let valid = ipam_plugin::valid_attachments(args.config());
        let removed = ipam_plugin::gc_endpoints(&ds, &config, &valid)?;
        runtime()?.block_on(async {
            let h = dataplane::host_handle()?;
            for wep in removed.iter().filter(|w| !w.spec.interface_name.is_empty()) {
                dataplane::remove_host_veth(&h, &wep.spec.interface_name).await?;
            }
            Ok::<(), CniError>(())
        })?;
        Ok(())
    }
}

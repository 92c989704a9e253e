//! The plugins' keys in the network configuration, beside the spec's own.
//!
//! ```json
//! { "cniVersion": "1.0.0", "name": "routerd", "type": "routerd-cni",
//!   "datastore": "file:/var/lib/routerd", "nodename": "node-1", "mtu": 0,
//!   "ipam": { "type": "routerd-ipam", "assign_ipv6": "true" } }
//! ```
//!
//! - `datastore`: routerd's `--datastore` address (default `file:/var/lib/routerd`).
//! - `nodename`: the node's name in the datastore; else the file named by `nodename_file`
//!   (default `/var/lib/routerd/nodename`, as Calico's `/var/lib/calico/nodename`); else the
//!   host name. `routerd-cni install` writes `nodename` into the conflist it generates.
//! - `mtu`: the pod interface's MTU; 0 or absent means from the pool's encapsulation
//!   (1480 under IP-in-IP, 1450 under VXLAN, 1500 otherwise).
//! - `route_protocol`: the kernel route protocol of the host routes (routerd's, default 80).
//! - `ipam.assign_ipv4` / `ipam.assign_ipv6`: `"true"`/`"false"` (Calico's strings) or
//!   booleans; IPv4 by default, IPv6 when a v6 pool selects the node unless `"false"`.
//!
//! Both plugins read the top-level keys (the runtime hands the IPAM plugin the whole
//! configuration). A key neither plugin knows is refused with its name, so a setting is
//! never silently ignored.

use std::collections::HashMap;
use std::path::PathBuf;

use rscni_plugin::types::NetConf;
use serde_json::Value;

use crate::CniError;

/// Default datastore address, routerd's.
pub const DEFAULT_DATASTORE: &str = "file:/var/lib/routerd";
/// Where routerd writes its node name.
pub const DEFAULT_NODENAME_FILE: &str = "/var/lib/routerd/nodename";
/// routerd's route protocol id.
pub const DEFAULT_ROUTE_PROTOCOL: u8 = 80;

const KNOWN_KEYS: [&str; 5] = [
    "datastore",
    "nodename",
    "nodename_file",
    "mtu",
    "route_protocol",
];
const KNOWN_IPAM_KEYS: [&str; 2] = ["assign_ipv4", "assign_ipv6"];

/// The plugins' settings, read from one network configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    /// The network's name (handles and endpoint records carry it).
    pub network: String,
    pub datastore: String,
    pub node: String,
    /// 0: from the pool's encapsulation.
    pub mtu: u32,
    pub route_protocol: u8,
    /// The IPAM plugin's `type`, when there is an `ipam` section.
    pub ipam_type: Option<String>,
    pub assign_ipv4: bool,
    /// `None`: when a v6 pool selects the node.
    pub assign_ipv6: Option<bool>,
}

fn string(map: &HashMap<String, Value>, key: &str, path: &str) -> Result<Option<String>, CniError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(CniError::Config(format!(
            "{path}{key}: {other} is not a string"
        ))),
    }
}

fn flag(map: &HashMap<String, Value>, key: &str) -> Result<Option<bool>, CniError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" => Ok(Some(false)),
        Some(other) => Err(CniError::Config(format!(
            "ipam.{key}: {other} is not \"true\" or \"false\""
        ))),
    }
}

fn unknown(map: &HashMap<String, Value>, known: &[&str], path: &str) -> Result<(), CniError> {
    let mut extra: Vec<&String> = map
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .collect();
    extra.sort();
    match extra.first() {
        None => Ok(()),
        Some(k) => Err(CniError::Config(format!(
            "{path}{k}: unknown key (known: {})",
            known.join(", ")
        ))),
    }
}

impl PluginConfig {
    /// Reads the settings; `hostname` is the fallback node name.
    pub fn from_netconf(conf: &NetConf) -> Result<PluginConfig, CniError> {
        Self::from_netconf_with(conf, || {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
    }

    /// As [`PluginConfig::from_netconf`], with the host-name look-up given (tests).
    pub fn from_netconf_with(
        conf: &NetConf,
        hostname: impl FnOnce() -> Option<String>,
    ) -> Result<PluginConfig, CniError> {
        unknown(&conf.custom, &KNOWN_KEYS, "")?;
        if conf.name.is_empty() {
            return Err(CniError::Config("name: missing".into()));
        }
        let datastore =
            string(&conf.custom, "datastore", "")?.unwrap_or_else(|| DEFAULT_DATASTORE.into());
        let node = match string(&conf.custom, "nodename", "")? {
            Some(n) if !n.is_empty() => n,
            _ => {
                let file = string(&conf.custom, "nodename_file", "")?
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_NODENAME_FILE));
                match std::fs::read_to_string(&file) {
                    Ok(text) if !text.trim().is_empty() => text.trim().to_string(),
                    _ => hostname().ok_or_else(|| {
                        CniError::Config(format!(
                            "nodename: not set, {} unreadable, and no host name",
                            file.display()
                        ))
                    })?,
                }
            }
        };
        let mtu = match conf.custom.get("mtu") {
            None | Some(Value::Null) => 0,
            Some(v) => match v.as_u64() {
                Some(m) if m == 0 || (576..=65535).contains(&m) => m as u32,
                _ => {
                    return Err(CniError::Config(format!(
                        "mtu: {v} is not 0 (automatic) or 576..=65535"
                    )))
                }
            },
        };
        let route_protocol = match conf.custom.get("route_protocol") {
            None | Some(Value::Null) => DEFAULT_ROUTE_PROTOCOL,
            Some(v) => match v.as_u64().and_then(|p| u8::try_from(p).ok()) {
                Some(p) if p > 4 => p,
                _ => {
                    return Err(CniError::Config(format!(
                        "route_protocol: {v} is not a route protocol id in 5..=255"
                    )))
                }
            },
        };
        let (ipam_type, assign_ipv4, assign_ipv6) = match &conf.ipam {
            None => (None, true, None),
            Some(ipam) => {
                unknown(&ipam.custom, &KNOWN_IPAM_KEYS, "ipam.")?;
                (
                    Some(ipam.r#type.clone()),
                    flag(&ipam.custom, "assign_ipv4")?.unwrap_or(true),
                    flag(&ipam.custom, "assign_ipv6")?,
                )
            }
        };
        Ok(PluginConfig {
            network: conf.name.clone(),
            datastore,
            node,
            mtu,
            route_protocol,
            ipam_type,
            assign_ipv4,
            assign_ipv6,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn conf(json: Value) -> NetConf {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn defaults_and_calico_strings() {
        let c = PluginConfig::from_netconf_with(
            &conf(
                serde_json::json!({"cniVersion": "1.0.0", "name": "net", "type": "routerd-cni",
                "nodename": "n1", "ipam": {"type": "routerd-ipam", "assign_ipv6": "false"}}),
            ),
            || None,
        )
        .unwrap();
        assert_eq!(c.datastore, DEFAULT_DATASTORE);
        assert_eq!(c.node, "n1");
        assert_eq!(c.mtu, 0);
        assert_eq!(c.route_protocol, 80);
        assert_eq!(c.ipam_type.as_deref(), Some("routerd-ipam"));
        assert_eq!(c.assign_ipv6, Some(false));
    }

    #[test]
    fn unknown_and_bad_keys_are_named() {
        for (json, want) in [
            (serde_json::json!({"policy": {"type": "k8s"}}), "policy"),
            (serde_json::json!({"mtu": 10}), "mtu"),
            (serde_json::json!({"route_protocol": 2}), "route_protocol"),
            (serde_json::json!({"datastore": 5}), "datastore"),
            (
                serde_json::json!({"ipam": {"type": "x", "assign_ipv4": "yes"}}),
                "ipam.assign_ipv4",
            ),
            (
                serde_json::json!({"ipam": {"type": "x", "subnet": "a"}}),
                "ipam.subnet",
            ),
        ] {
            let mut v = serde_json::json!({"cniVersion": "1.0.0", "name": "net", "type": "routerd-cni", "nodename": "n"});
            for (k, val) in json.as_object().unwrap() {
                v[k] = val.clone();
            }
            let err = PluginConfig::from_netconf_with(&conf(v), || None).unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
        }
    }

    #[test]
    fn node_name_falls_back_to_the_file_then_the_host_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nodename");
        std::fs::write(&file, "from-file\n").unwrap();
        let v = serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "routerd-cni",
            "nodename_file": file.to_str().unwrap()});
        let c = PluginConfig::from_netconf_with(&conf(v), || Some("host".into())).unwrap();
        assert_eq!(c.node, "from-file");
        let v = serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "routerd-cni",
            "nodename_file": dir.path().join("none").to_str().unwrap()});
        let c = PluginConfig::from_netconf_with(&conf(v), || Some("host".into())).unwrap();
        assert_eq!(c.node, "host");
    }
}

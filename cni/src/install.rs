//! `routerd-cni install`: the step a DaemonSet's init container runs (Calico's
//! `install-cni`): copy the plugin binaries into the host's CNI bin directory and write the
//! network configuration list the runtime reads.
//!
//! Binaries are copied to a temporary name and renamed, so a runtime calling the plugin
//! during an upgrade never runs a half-written file. The conflist is written the same way.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::config::DEFAULT_DATASTORE;

/// The plugin binaries installed, by file name.
pub const BINARIES: [&str; 2] = ["routerd-cni", "routerd-ipam"];
/// The conflist's file name (sorted before most others, as Calico's `10-calico.conflist`).
pub const CONFLIST_NAME: &str = "10-routerd.conflist";

/// What to install where.
#[derive(Debug, Clone, clap::Args)]
pub struct InstallOptions {
    /// Where the binaries are copied (the runtime's CNI_PATH).
    #[arg(long, env = "CNI_BIN_DIR", default_value = "/opt/cni/bin")]
    pub bin_dir: PathBuf,
    /// Where the conflist is written.
    #[arg(long, env = "CNI_NET_DIR", default_value = "/etc/cni/net.d")]
    pub conf_dir: PathBuf,
    /// The directory holding routerd-cni and routerd-ipam (default: this binary's).
    #[arg(long)]
    pub source_dir: Option<PathBuf>,
    /// The network name.
    #[arg(long, default_value = "routerd")]
    pub network: String,
    /// The datastore address the plugins use (routerd's --datastore).
    #[arg(long, env = "ROUTERD_DATASTORE", default_value = DEFAULT_DATASTORE)]
    pub datastore: String,
    /// The node name (a DaemonSet passes spec.nodeName as NODENAME).
    #[arg(long, env = "NODENAME")]
    pub nodename: Option<String>,
    /// The pod MTU; 0 = from the pool's encapsulation.
    #[arg(long, env = "CNI_MTU", default_value_t = 0)]
    pub mtu: u32,
    /// The CNI spec version the conflist declares.
    #[arg(long, default_value = "1.0.0")]
    pub cni_version: String,
}

/// The conflist for these options.
pub fn conflist(o: &InstallOptions) -> serde_json::Value {
    let mut plugin = json!({
        "type": "routerd-cni",
        "datastore": o.datastore,
        "mtu": o.mtu,
        "ipam": { "type": "routerd-ipam" },
    });
    if let Some(n) = &o.nodename {
        plugin["nodename"] = json!(n);
    }
    json!({
        "cniVersion": o.cni_version,
        "name": o.network,
        "plugins": [plugin],
    })
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("routerd-tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path)
}

/// Installs; returns the files written.
pub fn install(o: &InstallOptions) -> Result<Vec<PathBuf>, String> {
    let source = match &o.source_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find this binary: {e}"))?
            .parent()
            .map(Path::to_path_buf)
            .ok_or("this binary has no directory")?,
    };
    std::fs::create_dir_all(&o.bin_dir).map_err(|e| format!("{}: {e}", o.bin_dir.display()))?;
    std::fs::create_dir_all(&o.conf_dir).map_err(|e| format!("{}: {e}", o.conf_dir.display()))?;
    let mut written = Vec::new();
    for name in BINARIES {
        let from = source.join(name);
        let bytes = std::fs::read(&from).map_err(|e| format!("{}: {e}", from.display()))?;
        let to = o.bin_dir.join(name);
        write_atomically(&to, &bytes, 0o755).map_err(|e| format!("{}: {e}", to.display()))?;
        written.push(to);
    }
    let text = serde_json::to_string_pretty(&conflist(o)).map_err(|e| e.to_string())?;
    let to = o.conf_dir.join(CONFLIST_NAME);
    write_atomically(&to, text.as_bytes(), 0o600).map_err(|e| format!("{}: {e}", to.display()))?;
    written.push(to);
    Ok(written)
}

//! `routerd-cni install`: the step a DaemonSet's init container runs (Calico's
//! `install-cni`): copy the plugin binaries into the host's CNI bin directory and write the
//! network configuration list the runtime reads.
//!
//! Binaries are copied to a temporary name and renamed, so a runtime calling the plugin
//! during an upgrade never runs a half-written file. The conflist is written the same way.
//!
//! With the Kubernetes datastore the plugins run on the host, outside any pod, so they have
//! no service account of their own: when the datastore is `kubernetes:<kubeconfig>` and the
//! install step runs in a pod, it writes that kubeconfig into the CNI config directory from
//! its own service account (API server from `KUBERNETES_SERVICE_HOST`/`_PORT`, the account's
//! CA and token), as Calico's install-cni writes `calico-kubeconfig`. The token is the one
//! mounted when the step ran: the kubelet rotates the pod's copy, not the host's, so the
//! DaemonSet's next start (an upgrade, a reboot) refreshes it.

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
    /// The pod's service account (token, ca.crt) for the plugins' kubeconfig.
    #[arg(
        long,
        env = "SERVICE_ACCOUNT_DIR",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount"
    )]
    pub service_account_dir: PathBuf,
    /// The API server's in-cluster address, as the kubelet sets it in every pod.
    #[arg(long, env = "KUBERNETES_SERVICE_HOST")]
    pub kubernetes_service_host: Option<String>,
    #[arg(long, env = "KUBERNETES_SERVICE_PORT", default_value = "443")]
    pub kubernetes_service_port: u16,
}

/// The kubeconfig the plugins use to reach the API server with the service account in `sa`
/// (its `token` and `ca.crt`), at `https://host:port`.
pub fn kubeconfig(host: &str, port: u16, sa: &Path) -> Result<String, String> {
    use base64::Engine as _;
    let read = |name: &str| {
        let path = sa.join(name);
        std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let token = String::from_utf8(read("token")?)
        .map_err(|_| "the service account token is not text".to_string())?;
    let ca = base64::engine::general_purpose::STANDARD.encode(read("ca.crt")?);
    let server = if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    };
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kubernetes", "cluster": {
            "server": server, "certificate-authority-data": ca}}],
        "users": [{"name": "routerd-cni", "user": {"token": token.trim()}}],
        "contexts": [{"name": "routerd-cni", "context": {
            "cluster": "kubernetes", "user": "routerd-cni"}}],
        "current-context": "routerd-cni",
    });
    // JSON is YAML: any kubeconfig reader takes it.
    serde_json::to_string_pretty(&config).map_err(|e| e.to_string())
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
    if let Some(path) = o
        .datastore
        .strip_prefix("kubernetes:")
        .filter(|p| !p.is_empty())
    {
        if o.service_account_dir.join("token").exists() {
            let host = o.kubernetes_service_host.as_deref().ok_or(
                "KUBERNETES_SERVICE_HOST is not set: cannot write the plugins' kubeconfig",
            )?;
            let name = Path::new(path)
                .file_name()
                .ok_or_else(|| format!("ROUTERD_DATASTORE: {path:?} names no file"))?;
            let text = kubeconfig(host, o.kubernetes_service_port, &o.service_account_dir)?;
            // The path is the host's; the file goes into the CNI config directory as
            // mounted here.
            let to = o.conf_dir.join(name);
            write_atomically(&to, text.as_bytes(), 0o600)
                .map_err(|e| format!("{}: {e}", to.display()))?;
            written.push(to);
        } else {
            eprintln!(
                "routerd-cni install: no service account at {}: not writing {path} (provide it on the node)",
                o.service_account_dir.display()
            );
        }
    }
    Ok(written)
}

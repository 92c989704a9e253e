//! Running the IPAM plugin the configuration names, as the CNI spec's delegation describes
//! (§"Delegated plugins"): found in `CNI_PATH`, called with the same environment and the same
//! configuration on stdin, its result read from stdout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rscni_plugin::types::{CNIResult, NetConf};

use crate::CniError;

/// The executable `plugin` in the first directory of `paths` that has it.
pub fn find(plugin: &str, paths: &[PathBuf]) -> Result<PathBuf, CniError> {
    if plugin.is_empty() || plugin.contains('/') {
        return Err(CniError::Config(format!(
            "ipam.type: {plugin:?} is not a plugin name"
        )));
    }
    paths
        .iter()
        .map(|dir| dir.join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| CniError::Delegate {
            plugin: plugin.to_string(),
            message: format!(
                "not found in CNI_PATH ({})",
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":")
            ),
        })
}

/// Runs `binary` for `command` (`ADD`, `DEL`, `CHECK`) with `conf` on stdin; the result of
/// an ADD, `None` for the others.
pub fn run(binary: &Path, command: &str, conf: &NetConf) -> Result<Option<CNIResult>, CniError> {
    let name = binary
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let failed = |message: String| CniError::Delegate {
        plugin: name.clone(),
        message,
    };
    let input = serde_json::to_vec(conf).map_err(|e| failed(e.to_string()))?;
    let mut child = Command::new(binary)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("cannot run {}: {e}", binary.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&input)
            .map_err(|e| failed(format!("writing its stdin: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(format!("waiting for it: {e}")))?;
    if !out.status.success() {
        let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let msg = error.get("msg").and_then(|v| v.as_str()).unwrap_or("");
        let details = error.get("details").and_then(|v| v.as_str()).unwrap_or("");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let text = [msg, details, stderr.trim()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(": ");
        return Err(failed(format!("{command} failed ({}): {text}", out.status)));
    }
    if command != "ADD" {
        return Ok(None);
    }
    serde_json::from_slice(&out.stdout)
        .map(Some)
        .map_err(|e| failed(format!("unreadable result: {e}")))
}

//! The plugins' failures, and their CNI error codes (spec §"Error"): codes below 100 are
//! the spec's, 100 and above are ours.

use rscni_plugin::error::Error;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// A field of the network configuration is missing or wrong; the message names it.
    #[error("network configuration: {0}")]
    Config(String),
    /// A CNI_* variable is missing or wrong.
    #[error("{0}")]
    Environment(String),
    /// The container's network namespace cannot be entered.
    #[error("network namespace {path}: {reason}")]
    Netns { path: String, reason: String },
    /// The datastore failed or is unreachable.
    #[error("datastore {address}: {reason}")]
    Datastore { address: String, reason: String },
    /// No address could be assigned.
    #[error("IPAM: {0}")]
    Ipam(String),
    /// A kernel operation failed.
    #[error("{operation}: {reason}")]
    Kernel {
        operation: &'static str,
        reason: String,
    },
    /// CHECK found the attachment different from what ADD made.
    #[error("check failed: {0}")]
    Check(String),
    /// The delegated IPAM plugin failed (its own message).
    #[error("IPAM plugin {plugin}: {message}")]
    Delegate { plugin: String, message: String },
}

impl CniError {
    pub(crate) fn kernel(operation: &'static str) -> impl FnOnce(rtnetlink::Error) -> CniError {
        move |e| CniError::Kernel {
            operation,
            reason: e.to_string(),
        }
    }

    pub(crate) fn datastore(address: &str, reason: impl std::fmt::Display) -> CniError {
        CniError::Datastore {
            address: address.to_string(),
            reason: reason.to_string(),
        }
    }
}

impl From<CniError> for Error {
    fn from(e: CniError) -> Error {
        let msg = e.to_string();
        match e {
            CniError::Config(_) => Error::InvalidNetworkConfig(msg),
            CniError::Environment(_) => Error::InvalidEnvValue(msg),
            CniError::Netns { .. } => Error::InvalidNetNS(msg),
            // The runtime may retry: the datastore may be back on the next attempt.
            CniError::Datastore { .. } => Error::TryAgainLater(msg),
            CniError::Ipam(_) => Error::Custom(100, "IPAM failed".into(), msg),
            CniError::Kernel { .. } => Error::Custom(101, "kernel operation failed".into(), msg),
            CniError::Check(_) => Error::Custom(102, "CHECK failed".into(), msg),
            CniError::Delegate { .. } => Error::Custom(103, "IPAM plugin failed".into(), msg),
        }
    }
}

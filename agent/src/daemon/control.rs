//! routerd's control socket: answers [`StatusRequest`]s (`routectl node status`, and
//! `routectl node routes`, which the speaker answers).
//!
//! The socket is created at start-up (its directory too); a stale socket file left by a
//! daemon that died is replaced, but a live one (another routerd answering on it) is an
//! error, so two daemons never fight over one node's socket.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, warn};

use bgp::speaker::SpeakerHandle;

use crate::status::{NodeStatus, StatusRequest, StatusResponse};

/// Longest request line accepted; a status request is a few bytes.
const MAX_REQUEST: u64 = 4096;

/// How a request is answered: the daemon builds a fresh [`NodeStatus`].
pub type StatusSource =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<NodeStatus, String>> + Send>> + Send + Sync>;

/// Binding the control socket failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: another routerd is answering on it")]
    InUse { path: PathBuf },
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the control socket at `path`.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ControlError::InUse {
                path: path.to_path_buf(),
            });
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    UnixListener::bind(path).map_err(io)
}

/// Serves connections until the task is dropped.
pub async fn serve(listener: UnixListener, status: StatusSource, speaker: SpeakerHandle) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let status = status.clone();
                let speaker = speaker.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, status, speaker).await {
                        debug!(error = %e, "control connection ended with an error");
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(
    stream: UnixStream,
    status: StatusSource,
    speaker: SpeakerHandle,
) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r.take(MAX_REQUEST));
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line)).await;
    let response = match read {
        Err(_) => return Ok(()),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(_)) => match serde_json::from_str::<StatusRequest>(line.trim()) {
            Ok(StatusRequest::Status) => match status().await {
                Ok(s) => StatusResponse::Status(s),
                Err(message) => StatusResponse::Error { message },
            },
            Ok(StatusRequest::Routes {
                prefix,
                longest_match,
            }) => routes(&speaker, prefix, longest_match).await,
            Err(e) => StatusResponse::Error {
                message: format!("bad request: {e}"),
            },
        },
    };
    let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
    out.push(b'\n');
    w.write_all(&out).await?;
    w.shutdown().await
}

/// The speaker's paths, all or for one destination.
async fn routes(
    speaker: &SpeakerHandle,
    prefix: Option<ipnet::IpNet>,
    longest_match: bool,
) -> StatusResponse {
    match speaker.routes(prefix, longest_match).await {
        Ok(routes) => StatusResponse::Routes { routes },
        Err(e) => StatusResponse::Error {
            message: e.to_string(),
        },
    }
}

//! Creating sockets and devices inside a given network namespace.
//!
//! A socket (netlink, raw IP) and a TUN device belong to the network namespace of the thread
//! that created them, for their whole life, whichever thread later uses them. So to act on a
//! namespace we spawn a short-lived thread, `setns(2)` it into the namespace, create what we
//! need there and hand it back; the process's other threads never leave their namespace.

use std::fs::File;
use std::path::Path;

use nix::sched::CloneFlags;

use crate::EncapError;

/// Runs `f` on a fresh thread that has entered the network namespace at `netns` (e.g.
/// `/run/netns/<name>` or `/proc/<pid>/ns/net`) and returns its result.
///
/// If called from within a tokio runtime, the thread enters that runtime too, so `f` may
/// create tokio-registered sockets (an rtnetlink connection, an `AsyncFd`).
pub fn run_in<T, F>(netns: &Path, f: F) -> Result<T, EncapError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let ns = File::open(netns).map_err(EncapError::io("open network namespace"))?;
    let runtime = tokio::runtime::Handle::try_current().ok();
    let thread = std::thread::Builder::new()
        .name("encap-netns".into())
        .spawn(move || -> Result<T, EncapError> {
            nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| EncapError::Io {
                operation: "setns into network namespace",
                source: e.into(),
            })?;
            let _guard = runtime.as_ref().map(|rt| rt.enter());
            Ok(f())
        })
        .map_err(EncapError::io("spawn network-namespace thread"))?;
    thread.join().map_err(|_| EncapError::Io {
        operation: "network-namespace thread",
        source: std::io::Error::other("thread panicked"),
    })?
}

/// Opens an rtnetlink connection bound to the network namespace at `netns`, spawns its driver
/// on the current tokio runtime and returns the handle. Must be called within a runtime.
pub fn rtnetlink_handle(netns: &Path) -> Result<rtnetlink::Handle, EncapError> {
    let (connection, handle, _) = run_in(netns, rtnetlink::new_connection)?
        .map_err(EncapError::io("open rtnetlink socket"))?;
    tokio::spawn(connection);
    Ok(handle)
}

/// Opens an rtnetlink connection in the calling thread's own network namespace (no
/// `setns`, so no CAP_SYS_ADMIN: what a daemon running in the node's namespace uses), spawns
/// its driver on the current tokio runtime and returns the handle.
pub fn rtnetlink_handle_here() -> Result<rtnetlink::Handle, EncapError> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(EncapError::io("open rtnetlink socket"))?;
    tokio::spawn(connection);
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_namespace_is_an_error() {
        let err = run_in(Path::new("/run/netns/encap-no-such-namespace"), || ()).unwrap_err();
        assert!(matches!(err, EncapError::Io { .. }), "{err}");
    }
}

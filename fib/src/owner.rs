//! The FIB as an owner thread that async tasks talk to with typed messages.
//!
//! [`RouteTable`] is synchronous: a netlink batch blocks for as long as the kernel takes to
//! process it. Rather than sprinkle `spawn_blocking` over the agent, one dedicated thread owns
//! the table (the one-owner-per-subsystem rule of the design notes) and serves
//! [`FibCommand`]s in arrival order; callers `await` the [`ApplyReport`]. Commands are plain
//! data, so a sequence of them can be recorded and replayed against a
//! [`MemoryFib`](crate::MemoryFib) in a test.

use tokio::sync::{mpsc, oneshot};

use crate::error::FibError;
use crate::route::{Route, RouteKey};
use crate::table::{ApplyReport, RouteTable};

/// One request to the FIB owner; each maps to the [`RouteTable`] method of the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FibCommand {
    Apply(Vec<Route>),
    Reconcile,
    Replace(Vec<Route>),
    Delete(Vec<RouteKey>),
}

type Envelope = (FibCommand, oneshot::Sender<Result<ApplyReport, FibError>>);

/// Commands queued before senders wait: enough to absorb a burst of BGP updates.
const QUEUE: usize = 256;

/// A cloneable handle on a FIB owner thread. The thread exits when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct FibHandle {
    tx: mpsc::Sender<Envelope>,
}

impl FibHandle {
    /// Sends `command` to the owner and waits for its report.
    pub async fn call(&self, command: FibCommand) -> Result<ApplyReport, FibError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((command, reply))
            .await
            .map_err(|_| FibError::OwnerGone)?;
        answer.await.map_err(|_| FibError::OwnerGone)?
    }
}

/// Moves `table` onto a new thread that serves commands until every [`FibHandle`] is gone.
pub fn spawn_owner(
    mut table: Box<dyn RouteTable>,
) -> Result<(FibHandle, std::thread::JoinHandle<()>), FibError> {
    let (tx, mut rx) = mpsc::channel::<Envelope>(QUEUE);
    let thread = std::thread::Builder::new()
        .name("fib-owner".into())
        .spawn(move || {
            while let Some((command, reply)) = rx.blocking_recv() {
                let result = match command {
                    FibCommand::Apply(routes) => table.apply(routes),
                    FibCommand::Reconcile => table.reconcile(),
                    FibCommand::Replace(routes) => table.replace(routes),
                    FibCommand::Delete(keys) => table.delete(keys),
                };
                if let Err(e) = &result {
                    tracing::warn!(error = %e, "FIB command failed");
                }
                // The caller may have given up waiting; the work is done either way.
                let _ = reply.send(result);
            }
        })
        .map_err(|source| FibError::Socket {
            context: "spawning the FIB owner thread",
            source,
        })?;
    Ok((FibHandle { tx }, thread))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::memory::MemoryFib;
    use crate::route::NextHop;

    #[tokio::test]
    async fn commands_are_served_in_order_and_the_thread_ends_with_the_handles() {
        let fib = MemoryFib::default();
        let (handle, thread) = spawn_owner(Box::new(fib.clone())).unwrap();
        let route = Route::via(
            "10.65.2.0/26".parse().unwrap(),
            NextHop::via("192.168.1.2".parse().unwrap()),
        );
        let report = handle
            .call(FibCommand::Apply(vec![route.clone()]))
            .await
            .unwrap();
        assert_eq!(report.added, 1);
        let other = handle.clone();
        let report = other
            .call(FibCommand::Delete(vec![route.key()]))
            .await
            .unwrap();
        assert_eq!(report.deleted, 1);
        assert!(fib.all_routes().is_empty());
        drop((handle, other));
        thread.join().unwrap();
    }
}

//! The thread bridge of the network datastores (Kubernetes, etcd): their clients are
//! asynchronous, the [`Datastore`](crate::Datastore) trait is synchronous.
//!
//! Each store owns one single-threaded tokio runtime on a dedicated thread; a call sends
//! the runtime a future and waits on a std channel for its result. So a store works from
//! plain threads and from `spawn_blocking` inside another runtime (never `block_on` in an
//! async context), and dropping the store stops the thread and every watch it drives.

use std::future::Future;
use std::sync::mpsc as std_mpsc;

use tokio::sync::oneshot;

/// A runtime thread driving one store's client futures and watches.
pub(crate) struct ClientRuntime {
    handle: tokio::runtime::Handle,
    /// Dropping it ends the runtime thread (its receiver resolves).
    _stop: oneshot::Sender<()>,
}

impl ClientRuntime {
    /// Starts the thread `name`; `Err` says why the thread or its runtime could not start.
    pub(crate) fn start(name: &str) -> Result<Self, String> {
        let (handle_tx, handle_rx) = std_mpsc::sync_channel(1);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(runtime.handle().clone()));
                runtime.block_on(async {
                    let _ = stop_rx.await;
                });
            })
            .map_err(|e| e.to_string())?;
        let handle = handle_rx
            .recv()
            .map_err(|_| "the runtime thread ended at start".to_string())??;
        Ok(Self {
            handle,
            _stop: stop_tx,
        })
    }

    /// Runs `fut` on the runtime and waits for its output; `None` when the runtime thread
    /// is gone (it panicked).
    pub(crate) fn run<T, F>(&self, fut: F) -> Option<T>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let (tx, rx) = std_mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().ok()
    }

    /// Starts `fut` on the runtime without waiting (a watch's task).
    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(fut);
    }
}

//! The daemon's feed from the datastore: one task keeps a watch of every kind open and
//! tells the main loop what it needs to know, never blocking it.
//!
//! The main loop is level-triggered (any change rereads the whole cluster view), so it does
//! not need the events themselves, only that something changed, that it must resynchronise
//! (the watch expired: relist), or that the datastore became unreachable or reachable
//! again. Re-establishing a watch can take as long as the datastore's request timeout; here
//! it happens on this task with a bounded back-off, while the main loop goes on serving BGP
//! best-path changes and the FIB, so a partitioned node keeps forwarding and reports its
//! datastore down.

use std::sync::Arc;
use std::time::Duration;

use datastore::{Datastore, DatastoreError, Watch, WatchFrom};
use tokio::sync::mpsc;
use tracing::debug;

/// First pause before re-establishing a failed watch; doubled per failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the feed tells the main loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedSignal {
    /// A record changed: reread the view.
    Changed,
    /// The watch fell behind the datastore's history (expired): reread the view; the
    /// datastore itself is fine and a new watch is already open.
    Resync,
    /// The datastore cannot be reached (the error, as an operator reads it); the feed keeps
    /// trying.
    Lost(String),
    /// A new watch is open after [`FeedSignal::Lost`]: the datastore is reachable again and
    /// the view must be reread (changes may have been missed meanwhile).
    Restored,
}

/// Starts the feed with the watch opened at start-up (before the first read, so nothing is
/// missed between the read and the watch). It ends when the receiver is dropped.
pub fn spawn(ds: Arc<dyn Datastore>, first: Watch) -> mpsc::UnboundedReceiver<FeedSignal> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(ds, first, tx));
    rx
}

async fn run(ds: Arc<dyn Datastore>, first: Watch, tx: mpsc::UnboundedSender<FeedSignal>) {
    let mut watch = first;
    loop {
        let lost = forward(&mut watch, &tx).await;
        let Some(lost) = lost else { return };
        let expired = matches!(lost, DatastoreError::Expired { .. });
        if !expired && tx.send(FeedSignal::Lost(lost.to_string())).is_err() {
            return;
        }
        let mut delay = FIRST_BACKOFF;
        let mut reported_down = !expired;
        watch = loop {
            let d = ds.clone();
            let opened = tokio::task::spawn_blocking(move || d.watch(None, WatchFrom::Now)).await;
            match opened {
                Ok(Ok(w)) => break w,
                Ok(Err(e)) => {
                    debug!(error = %e, "cannot watch the datastore yet");
                    if !reported_down {
                        reported_down = true;
                        if tx.send(FeedSignal::Lost(e.to_string())).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => debug!(error = %e, "datastore watch task failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = tx.closed() => return,
            }
            delay = (delay * 2).min(MAX_BACKOFF);
        };
        let signal = if reported_down {
            FeedSignal::Restored
        } else {
            FeedSignal::Resync
        };
        if tx.send(signal).is_err() {
            return;
        }
    }
}

/// Forwards changes until the watch fails (its error) or the main loop is gone (`None`).
async fn forward(
    watch: &mut Watch,
    tx: &mpsc::UnboundedSender<FeedSignal>,
) -> Option<DatastoreError> {
    loop {
        let item = tokio::select! {
            item = watch.next() => item,
            () = tx.closed() => return None,
        };
        match item {
            Some(Ok(event)) => {
                debug!(kind = %event.record.kind, name = %event.record.name, "datastore change");
                if tx.send(FeedSignal::Changed).is_err() {
                    return None;
                }
            }
            Some(Err(e)) => return Some(e),
            None => {
                return Some(DatastoreError::Io {
                    path: "the datastore watch".into(),
                    source: std::io::Error::other("ended"),
                })
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use datastore::{Listing, MemoryDatastore, Record, Revision};
    use serde_json::json;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A memory store whose watches fail while `down` is set.
    struct Flaky {
        inner: MemoryDatastore,
        down: AtomicBool,
    }

    impl Datastore for Flaky {
        fn list(&self, kind: &str) -> datastore::Result<Listing> {
            self.inner.list(kind)
        }
        fn get(&self, kind: &str, name: &str) -> datastore::Result<Record> {
            self.inner.get(kind, name)
        }
        fn create(&self, k: &str, n: &str, v: serde_json::Value) -> datastore::Result<Revision> {
            self.inner.create(k, n, v)
        }
        fn update(
            &self,
            k: &str,
            n: &str,
            v: serde_json::Value,
            e: Revision,
        ) -> datastore::Result<Revision> {
            self.inner.update(k, n, v, e)
        }
        fn delete(&self, k: &str, n: &str, e: Option<Revision>) -> datastore::Result<Revision> {
            self.inner.delete(k, n, e)
        }
        fn watch(&self, kind: Option<&str>, from: WatchFrom) -> datastore::Result<Watch> {
            if self.down.load(Ordering::SeqCst) {
                return Err(DatastoreError::Etcd(datastore::EtcdError::Unreachable {
                    endpoints: "http://192.0.2.1:2379".into(),
                    reason: "partitioned".into(),
                }));
            }
            self.inner.watch(kind, from)
        }
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<FeedSignal>) -> FeedSignal {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn changes_are_signalled_a_lost_watch_is_reported_once_and_restored() {
        let flaky = Arc::new(Flaky {
            inner: MemoryDatastore::new(),
            down: AtomicBool::new(false),
        });
        let ds: Arc<dyn Datastore> = flaky.clone();
        // The first watch comes from a store that then goes away: the watch ends.
        let doomed = MemoryDatastore::new();
        let first = doomed.watch(None, WatchFrom::Now).unwrap();
        let mut rx = spawn(ds.clone(), first);
        doomed.create("Node", "a", json!(1)).unwrap();
        assert_eq!(next(&mut rx).await, FeedSignal::Changed);
        flaky.down.store(true, Ordering::SeqCst);
        drop(doomed);
        assert!(matches!(next(&mut rx).await, FeedSignal::Lost(_)));
        // Retries fail quietly (no second Lost) until the store answers again.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(rx.try_recv().is_err());
        flaky.down.store(false, Ordering::SeqCst);
        assert_eq!(next(&mut rx).await, FeedSignal::Restored);
        // The new watch is live.
        ds.create("Node", "b", json!(1)).unwrap();
        assert_eq!(next(&mut rx).await, FeedSignal::Changed);
    }
}

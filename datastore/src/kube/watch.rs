//! Watch streams: one API watch per kind, restarted from the last revision when the server
//! ends it, `410 Gone` turned into [`DatastoreError::Expired`], and several kinds merged
//! in revision order (see the module docs of `kube` for the merge window).

use std::collections::BTreeMap;
use std::pin::pin;
use std::time::Duration;

use ::kube::api::{Api, DynamicObject, WatchEvent, WatchParams};
use ::kube::core::{ApiResource, Status};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::backend::{object_record, parse_revision, request_error};
use super::error::KubeError;
use super::kinds::resource_name;
use crate::{DatastoreError, Event, EventType, Result, Revision};

/// Consecutive failed (re)connections before the watch reports the failure and ends.
const MAX_FAILURES: u32 = 5;
/// First back-off after a failure; doubled each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// A stream the server ends sooner than this without delivering anything counts as a
/// failure (so a server that closes watches at once is not hammered).
const MIN_HEALTHY_STREAM: Duration = Duration::from_secs(1);

type Sender = mpsc::UnboundedSender<Result<Event>>;

/// What one per-kind watch needs.
pub(super) struct KindStream {
    pub(super) api: Api<DynamicObject>,
    pub(super) kind: String,
    pub(super) resource: ApiResource,
}

/// Runs the watch of `streams` from revision `from` until the consumer drops its end or
/// the watch fails.
pub(super) async fn run(
    mut streams: Vec<KindStream>,
    from: Revision,
    window: Duration,
    tx: Sender,
) {
    if streams.len() == 1 {
        if let Some(stream) = streams.pop() {
            watch_kind(stream, from, tx).await;
        }
        return;
    }
    let (merge_tx, merge_rx) = mpsc::unbounded_channel();
    for stream in streams {
        tokio::spawn(watch_kind(stream, from, merge_tx.clone()));
    }
    drop(merge_tx);
    merge(merge_rx, tx, window).await;
}

/// The revision a `410` says is the oldest resumable one: API servers word it
/// `too old resource version: <requested> (<oldest>)`; 0 when the message says nothing.
pub(super) fn oldest_from_message(message: &str) -> Revision {
    message
        .split_once("too old resource version:")
        .and_then(|(_, rest)| rest.split_once('('))
        .and_then(|(_, rest)| rest.split_once(')'))
        .and_then(|(oldest, _)| oldest.trim().parse().ok())
        .unwrap_or(0)
}

fn expired(requested: Revision, status: &Status) -> DatastoreError {
    DatastoreError::Expired {
        requested,
        oldest: oldest_from_message(&status.message),
    }
}

/// One kind's watch, resumed from the last delivered revision whenever the server ends
/// the stream; ends on `410`, on another error status, after [`MAX_FAILURES`] failed
/// connections in a row, or when the receiver is gone.
async fn watch_kind(stream: KindStream, from: Revision, tx: Sender) {
    let KindStream {
        api,
        kind,
        resource,
    } = stream;
    let name = resource_name(&resource);
    let params = WatchParams::default();
    let mut last = from;
    let mut failures = 0u32;
    loop {
        // `0` would mean "any revision, with synthetic ADDED events" to an API server;
        // etcd's first write is revision 2, so "after 1" is "after 0".
        let rv = last.max(1).to_string();
        let started = Instant::now();
        let mut delivered = false;
        let opened = tokio::select! {
            opened = api.watch(&params, &rv) => opened,
            _ = tx.closed() => return,
        };
        let failure = match opened {
            Err(::kube::Error::Api(status)) if status.code == 410 => {
                let _ = tx.send(Err(expired(last, &status)));
                return;
            }
            Err(e @ ::kube::Error::Api(_)) => {
                let _ = tx.send(Err(not_served_or(e, &name).into()));
                return;
            }
            Err(e) => Some(request_error("watch", &name, "", e)),
            Ok(events) => {
                let mut events = pin!(events);
                loop {
                    let item = tokio::select! {
                        item = events.next() => item,
                        _ = tx.closed() => return,
                    };
                    let event = match item {
                        None => break None,
                        Some(Ok(event)) => event,
                        // The HTTP-status form of an error (the body is a Status).
                        Some(Err(::kube::Error::Api(status))) if status.code == 410 => {
                            let _ = tx.send(Err(expired(last, &status)));
                            return;
                        }
                        Some(Err(e @ ::kube::Error::Api(_))) => {
                            let _ = tx.send(Err(not_served_or(e, &name).into()));
                            return;
                        }
                        Some(Err(e)) => break Some(request_error("watch", &name, "", e)),
                    };
                    let (event_type, object) = match event {
                        WatchEvent::Added(o) => (EventType::Added, o),
                        WatchEvent::Modified(o) => (EventType::Modified, o),
                        WatchEvent::Deleted(o) => (EventType::Deleted, o),
                        WatchEvent::Bookmark(bookmark) => {
                            match parse_revision(
                                &resource,
                                "",
                                Some(&bookmark.metadata.resource_version),
                            ) {
                                Ok(revision) => last = last.max(revision),
                                Err(e) => {
                                    let _ = tx.send(Err(e.into()));
                                    return;
                                }
                            }
                            continue;
                        }
                        WatchEvent::Error(status) if status.code == 410 => {
                            let _ = tx.send(Err(expired(last, &status)));
                            return;
                        }
                        WatchEvent::Error(status) => {
                            let _ = tx.send(Err(KubeError::Api {
                                verb: "watch",
                                resource: name.clone(),
                                name: String::new(),
                                code: status.code,
                                reason: status.reason,
                                message: status.message,
                            }
                            .into()));
                            return;
                        }
                    };
                    match object_record(&kind, &resource, &object) {
                        Ok((record, live)) => {
                            last = last.max(record.version);
                            delivered = true;
                            // An IPAM object Calico marked deleted is gone from then on:
                            // its marking is the deletion, its actual removal is not news.
                            let event_type = match (event_type, live) {
                                (event_type, true) => event_type,
                                (EventType::Modified, false) => EventType::Deleted,
                                (_, false) => continue,
                            };
                            if tx.send(Ok(Event { event_type, record })).is_err() {
                                return;
                            }
                        }
                        Err(e @ KubeError::Malformed { .. }) => {
                            warn!(error = %e, "skipping an object routerd cannot read")
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e.into()));
                            return;
                        }
                    }
                }
            }
        };
        let failure = match failure {
            Some(e) => Some(e),
            None if !delivered && started.elapsed() < MIN_HEALTHY_STREAM => {
                Some(KubeError::Transport {
                    verb: "watch",
                    resource: name.clone(),
                    name: String::new(),
                    reason: "the API server ended the watch at once".into(),
                })
            }
            None => None,
        };
        match failure {
            None => {
                failures = 0;
                debug!(resource = %name, revision = last, "watch ended by the server; resuming");
            }
            Some(e) => {
                failures = if delivered { 1 } else { failures + 1 };
                if failures >= MAX_FAILURES {
                    let _ = tx.send(Err(e.into()));
                    return;
                }
                warn!(resource = %name, error = %e, failures, "watch failed; resuming");
                let backoff = FIRST_BACKOFF * 2u32.pow(failures - 1);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = tx.closed() => return,
                }
            }
        }
    }
}

/// A `404` on a watch means the resource type is not served.
fn not_served_or(e: ::kube::Error, resource: &str) -> KubeError {
    match &e {
        ::kube::Error::Api(status) if status.code == 404 => KubeError::NotServed {
            resource: resource.to_string(),
        },
        _ => request_error("watch", resource, "", e),
    }
}

/// Merges per-kind streams: every event is held for `window` after it arrives, and held
/// events leave lowest revision first. An error ends the merged watch after the events
/// held before it.
async fn merge(mut rx: mpsc::UnboundedReceiver<Result<Event>>, tx: Sender, window: Duration) {
    // (revision, arrival sequence) -> (release time, event)
    let mut held: BTreeMap<(Revision, u64), (Instant, Event)> = BTreeMap::new();
    let mut sequence = 0u64;
    loop {
        let next_release = held.first_key_value().map(|(_, (at, _))| *at);
        tokio::select! {
            item = rx.recv() => match item {
                Some(Ok(event)) => {
                    sequence += 1;
                    held.insert((event.revision(), sequence), (Instant::now() + window, event));
                }
                Some(Err(e)) => {
                    for (_, (_, event)) in std::mem::take(&mut held) {
                        let _ = tx.send(Ok(event));
                    }
                    let _ = tx.send(Err(e));
                    return;
                }
                None => {
                    for (_, (_, event)) in std::mem::take(&mut held) {
                        let _ = tx.send(Ok(event));
                    }
                    return;
                }
            },
            _ = sleep_until(next_release), if next_release.is_some() => {
                let now = Instant::now();
                while let Some(entry) = held.first_entry() {
                    if entry.get().0 > now {
                        break;
                    }
                    let (_, event) = entry.remove();
                    if tx.send(Ok(event)).is_err() {
                        return;
                    }
                }
            }
            _ = tx.closed() => return,
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::Record;

    fn event(revision: Revision) -> Event {
        Event {
            event_type: EventType::Added,
            record: Record {
                kind: "Node".into(),
                name: format!("n{revision}"),
                version: revision,
                value: serde_json::Value::Null,
            },
        }
    }

    /// Events of two streams arriving out of order within the window leave in revision
    /// order; an error is delivered after the events held before it, and ends the merge.
    #[test]
    fn merge_orders_by_revision_within_the_window() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let (in_tx, in_rx) = mpsc::unbounded_channel();
            let (out_tx, mut out_rx) = mpsc::unbounded_channel();
            let merged = tokio::spawn(merge(in_rx, out_tx, Duration::from_millis(500)));
            in_tx.send(Ok(event(5))).unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
            in_tx.send(Ok(event(3))).unwrap();
            in_tx.send(Ok(event(4))).unwrap();
            let mut got = Vec::new();
            for _ in 0..3 {
                got.push(out_rx.recv().await.unwrap().unwrap().revision());
            }
            assert_eq!(got, [3, 4, 5]);
            // Held events go out before the error that follows them.
            in_tx.send(Ok(event(7))).unwrap();
            in_tx.send(Ok(event(6))).unwrap();
            in_tx
                .send(Err(DatastoreError::Expired {
                    requested: 7,
                    oldest: 9,
                }))
                .unwrap();
            assert_eq!(out_rx.recv().await.unwrap().unwrap().revision(), 6);
            assert_eq!(out_rx.recv().await.unwrap().unwrap().revision(), 7);
            assert!(matches!(
                out_rx.recv().await,
                Some(Err(DatastoreError::Expired { .. }))
            ));
            merged.await.unwrap();
            assert!(out_rx.recv().await.is_none());
        });
    }

    #[test]
    fn oldest_revision_is_read_from_the_status_message() {
        assert_eq!(oldest_from_message("too old resource version: 1 (16)"), 16);
        assert_eq!(
            oldest_from_message("Expired: too old resource version: 5 (1234567)"),
            1234567
        );
        assert_eq!(oldest_from_message("The resourceVersion is too old."), 0);
        assert_eq!(oldest_from_message("too old resource version: 1 (x)"), 0);
    }
}

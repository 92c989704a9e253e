//! Watch streams: one etcd watch over a key range, resumed from the last delivered revision
//! whenever its stream breaks (a member dies, the client moves to another endpoint), ended
//! with [`DatastoreError::Expired`] when that revision has been compacted away, and ended
//! with the transport error when no member has answered for [`GIVE_UP_AFTER`].

use std::time::Duration;

use etcd_client::{Client, EventType as EtcdEventType, WatchOptions};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::backend::{classify, decode, from_etcd, lossy_key, to_etcd};
use super::error::EtcdError;
use super::options::EtcdOptions;
use crate::{DatastoreError, Event, EventType, Record, Result, Revision};

/// First pause after a broken stream; doubled per failure, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A watch that has failed to re-establish for this long reports the failure and ends, so
/// the consumer learns that the datastore is down (it rewatches, and relists, when it is
/// back). A failover to another member takes one reconnection, well within this.
pub(super) const GIVE_UP_AFTER: Duration = Duration::from_secs(5);

type Sender = mpsc::UnboundedSender<Result<Event>>;

/// What one watch covers.
pub(super) struct Target {
    pub(super) client: Client,
    pub(super) options: EtcdOptions,
    /// The key prefix watched: the store's prefix, or one kind's under it.
    pub(super) range: String,
}

/// How one stream ended.
enum Ended {
    /// The consumer dropped its end.
    ConsumerGone,
    /// The revision to resume from is compacted; the oldest resumable one is given.
    Compacted(Revision),
    /// A record that is not ours: reported, the watch ends.
    Fatal(DatastoreError),
    /// The stream broke (or could not be opened); `delivered` if it delivered anything.
    Lost { reason: EtcdError, delivered: bool },
}

/// Runs the watch from revision `from` (exclusive) until the consumer drops its end or the
/// watch fails for good.
pub(super) async fn run(mut target: Target, mut from: Revision, tx: Sender) {
    let mut backoff = FIRST_BACKOFF;
    let mut failing_since: Option<Instant> = None;
    loop {
        match stream(&mut target, &mut from, &tx).await {
            Ended::ConsumerGone => return,
            Ended::Compacted(compact_revision) => {
                debug!(from, compact_revision, "etcd watch revision compacted");
                let _ = tx.send(Err(DatastoreError::Expired {
                    requested: from,
                    oldest: compact_revision.saturating_sub(1),
                }));
                return;
            }
            Ended::Fatal(e) => {
                let _ = tx.send(Err(e));
                return;
            }
            Ended::Lost { reason, delivered } => {
                if delivered {
                    failing_since = None;
                    backoff = FIRST_BACKOFF;
                }
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= GIVE_UP_AFTER {
                    warn!(error = %reason, from, "etcd watch cannot be re-established; giving up");
                    let _ = tx.send(Err(reason.into()));
                    return;
                }
                warn!(error = %reason, from, "etcd watch lost; resuming from the last revision");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = tx.closed() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// One watch stream from `from + 1`, advancing `from` past every response delivered.
async fn stream(target: &mut Target, from: &mut Revision, tx: &Sender) -> Ended {
    let options = WatchOptions::new()
        .with_prefix()
        .with_prev_key()
        .with_progress_notify()
        .with_start_revision(to_etcd(*from + 1));
    let lost = |options: &EtcdOptions, range: &str, e, delivered| Ended::Lost {
        reason: classify(options, "watch", range, e),
        delivered,
    };
    let opened = tokio::select! {
        opened = target.client.watch(target.range.clone(), Some(options)) => opened,
        () = tx.closed() => return Ended::ConsumerGone,
    };
    let mut stream = match opened {
        Ok(stream) => stream,
        Err(e) => return lost(&target.options, &target.range, e, false),
    };
    let mut delivered = false;
    loop {
        let message = tokio::select! {
            message = stream.message() => message,
            () = tx.closed() => return Ended::ConsumerGone,
        };
        let response = match message {
            Ok(Some(response)) => response,
            Ok(None) => {
                return Ended::Lost {
                    reason: EtcdError::Unreachable {
                        endpoints: target.options.endpoint_list(),
                        reason: "the member ended the watch stream".into(),
                    },
                    delivered,
                }
            }
            Err(e) => return lost(&target.options, &target.range, e, delivered),
        };
        if response.canceled() {
            if response.compact_revision() > 0 {
                return Ended::Compacted(from_etcd(response.compact_revision()));
            }
            return Ended::Lost {
                reason: EtcdError::Request {
                    op: "watch",
                    key: target.range.clone(),
                    reason: format!("canceled by the member: {}", response.cancel_reason()),
                },
                delivered,
            };
        }
        let mut last = *from;
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let key = lossy_key(kv);
            let Some((kind, name)) = split_key(&target.options.prefix, &key) else {
                continue; // the prefix's marker
            };
            let revision = from_etcd(kv.mod_revision());
            let record = match event.event_type() {
                EtcdEventType::Put => decode(kind, name, kv).map(|r| {
                    let added = kv.create_revision() == kv.mod_revision();
                    let event_type = if added {
                        EventType::Added
                    } else {
                        EventType::Modified
                    };
                    (event_type, r)
                }),
                EtcdEventType::Delete => {
                    // A deletion carries the last value (prev_kv), its revision the
                    // deletion's.
                    let last_value = match event.prev_kv() {
                        Some(prev) => decode(kind, name, prev).map(|r| r.value),
                        None => Ok(serde_json::Value::Null),
                    };
                    last_value.map(|value| {
                        (
                            EventType::Deleted,
                            Record {
                                kind: kind.to_string(),
                                name: name.to_string(),
                                version: revision,
                                value,
                            },
                        )
                    })
                }
            };
            let (event_type, record) = match record {
                Ok(r) => r,
                Err(e) => return Ended::Fatal(e),
            };
            if tx.send(Ok(Event { event_type, record })).is_err() {
                return Ended::ConsumerGone;
            }
            delivered = true;
            last = last.max(revision);
        }
        // A progress notification says nothing happened in the range up to its revision,
        // so a later resumption need not go back further (nor hit compaction needlessly).
        if response.events().is_empty() && !response.created() {
            if let Some(header) = response.header() {
                last = last.max(from_etcd(header.revision()));
            }
        }
        *from = last;
    }
}

/// `(kind, name)` of a record key `<prefix><kind>/<name>`; `None` for anything else.
fn split_key<'a>(prefix: &str, key: &'a str) -> Option<(&'a str, &'a str)> {
    let (kind, name) = key.strip_prefix(prefix)?.split_once('/')?;
    (!kind.is_empty() && !name.is_empty() && !name.contains('/')).then_some((kind, name))
}

#[cfg(test)]
mod tests {
    use super::split_key;

    #[test]
    fn record_keys_split_into_kind_and_name() {
        let p = "/routerd/v1/";
        assert_eq!(
            split_key(p, "/routerd/v1/Node/node-1"),
            Some(("Node", "node-1"))
        );
        assert_eq!(split_key(p, "/routerd/v1/.routerd"), None);
        assert_eq!(split_key(p, "/routerd/v1/Node/"), None);
        assert_eq!(split_key(p, "/other/Node/a"), None);
        assert_eq!(split_key(p, "/routerd/v1/Node/a/b"), None);
    }
}

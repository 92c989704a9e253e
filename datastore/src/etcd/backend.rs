//! [`EtcdDatastore`]: the synchronous [`Datastore`] over the asynchronous etcd v3 client.

use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions,
    GetOptions, Identity, KeyValue, TlsOptions, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use tokio::sync::mpsc;
use tracing::debug;

use super::error::EtcdError;
use super::options::EtcdOptions;
use super::watch;
use crate::client_runtime::ClientRuntime;
use crate::{
    validate_name, Datastore, DatastoreError, Listing, Record, Result, Revision, Watch, WatchFrom,
};

/// The key, directly under the prefix, that says the prefix is routerd's (a record key
/// always has a `/` after the prefix, and kinds cannot start with `.`, so it never
/// collides with one).
const MARKER: &str = ".routerd";
/// What the marker holds: the layout version of the keys under the prefix.
const MARKER_VALUE: &str = r#"{"format":1}"#;
/// Records per range request of a list (etcd's and gRPC's message limits stay far away).
const LIST_PAGE: i64 = 500;
/// Times a list is restarted when its revision is compacted between two pages.
const LIST_ATTEMPTS: usize = 3;

/// Records as keys of an etcd v3 cluster, `<prefix><kind>/<name>` holding the JSON value.
pub struct EtcdDatastore {
    client: Client,
    runtime: ClientRuntime,
    options: EtcdOptions,
}

impl std::fmt::Debug for EtcdDatastore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdDatastore")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl EtcdDatastore {
    /// Connects and checks the prefix: an empty one is claimed (its marker written), one
    /// that holds keys without our marker is refused ([`EtcdError::ForeignPrefix`]). So an
    /// unreachable cluster or bad certificates are reported here, at start.
    pub fn connect(options: EtcdOptions) -> Result<Self> {
        let connect = connect_options(&options)?;
        let runtime =
            ClientRuntime::start("etcd-datastore").map_err(|reason| EtcdError::Config {
                setting: "the client runtime",
                reason,
            })?;
        let endpoints = options.endpoints.clone();
        let client = runtime
            .run(async move { Client::connect(endpoints, Some(connect)).await })
            .ok_or(EtcdError::Stopped)?
            .map_err(|e| EtcdError::Config {
                setting: "the datastore address",
                reason: e.to_string(),
            })?;
        let store = Self {
            client,
            runtime,
            options,
        };
        store.claim_prefix()?;
        debug!(endpoints = %store.options.endpoint_list(), prefix = %store.options.prefix,
               "etcd datastore connected");
        Ok(store)
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &EtcdOptions {
        &self.options
    }

    /// Compacts the cluster's history up to `revision` (what `etcdctl compact` does):
    /// watches from before it then expire. For tests and maintenance tools.
    pub fn compact(&self, revision: Revision) -> Result<()> {
        let mut client = self.client.clone();
        let rev = to_etcd(revision);
        self.run(async move {
            client
                .compact(rev, Some(CompactionOptions::new().with_physical()))
                .await
        })
        .map_err(|e| self.error("compact", &revision.to_string(), e))?;
        Ok(())
    }

    /// The cluster's current revision.
    pub fn revision(&self) -> Result<Revision> {
        let mut client = self.client.clone();
        let key = self.marker_key();
        let response = self
            .run(async move {
                client
                    .get(key, Some(GetOptions::new().with_count_only()))
                    .await
            })
            .map_err(|e| self.error("get", &self.marker_key(), e))?;
        Ok(header_revision(response.header()))
    }

    fn marker_key(&self) -> String {
        format!("{}{MARKER}", self.options.prefix)
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}/{name}", self.options.prefix)
    }

    fn kind_prefix(&self, kind: &str) -> String {
        format!("{}{kind}/", self.options.prefix)
    }

    /// Runs a client future on the store's runtime.
    fn run<T, F>(&self, fut: F) -> std::result::Result<T, etcd_client::Error>
    where
        T: Send + 'static,
        F: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>
            + Send
            + 'static,
    {
        self.runtime
            .run(fut)
            .unwrap_or_else(|| Err(etcd_client::Error::Internal("runtime stopped".into())))
    }

    fn error(&self, op: &'static str, key: &str, e: etcd_client::Error) -> DatastoreError {
        classify(&self.options, op, key, e).into()
    }

    /// Writes the marker into an empty prefix, accepts ours, refuses a foreign one.
    fn claim_prefix(&self) -> Result<()> {
        let marker = self.marker_key();
        let mut client = self.client.clone();
        let (key, prefix) = (marker.clone(), self.options.prefix.clone());
        // The marker is created only if no key at all exists under the prefix, in one txn.
        let txn = Txn::new()
            .when([Compare::create_revision(prefix.clone(), CompareOp::Equal, 0).with_prefix()])
            .and_then([TxnOp::put(key.clone(), MARKER_VALUE, None)])
            .or_else([
                TxnOp::get(key, None),
                TxnOp::get(
                    prefix,
                    Some(
                        GetOptions::new()
                            .with_prefix()
                            .with_keys_only()
                            .with_limit(1),
                    ),
                ),
            ]);
        let response = self
            .run(async move { client.txn(txn).await })
            .map_err(|e| self.error("claim", &marker, e))?;
        if response.succeeded() {
            return Ok(());
        }
        let mut gets = gets(&response);
        let ours = gets
            .first()
            .and_then(|kvs| kvs.first())
            .map(|kv| kv.value().to_vec());
        match ours {
            Some(value) if value == MARKER_VALUE.as_bytes() => Ok(()),
            Some(value) => Err(EtcdError::Corrupt {
                key: marker,
                reason: format!(
                    "holds {:?}, not routerd's format marker {MARKER_VALUE}",
                    String::from_utf8_lossy(&value)
                ),
            }
            .into()),
            None => {
                let example = gets
                    .pop()
                    .and_then(|kvs| kvs.first().map(lossy_key))
                    .unwrap_or_default();
                Err(EtcdError::ForeignPrefix {
                    prefix: self.options.prefix.clone(),
                    key: example,
                }
                .into())
            }
        }
    }

    /// The record of `kv`, stored under `kind`.
    fn record(&self, kind: &str, kv: &KeyValue) -> Result<Record> {
        let key = lossy_key(kv);
        let name = key
            .strip_prefix(&self.kind_prefix(kind))
            .filter(|n| !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| EtcdError::Corrupt {
                key: key.clone(),
                reason: format!("not a {kind} record key"),
            })?;
        decode(kind, name, kv)
    }
}

/// A record from a key-value pair already split into kind and name.
pub(super) fn decode(kind: &str, name: &str, kv: &KeyValue) -> Result<Record> {
    let value = serde_json::from_slice(kv.value()).map_err(|e| EtcdError::Corrupt {
        key: lossy_key(kv),
        reason: format!("value is not JSON: {e}"),
    })?;
    Ok(Record {
        kind: kind.to_string(),
        name: name.to_string(),
        version: from_etcd(kv.mod_revision()),
        value,
    })
}

pub(super) fn lossy_key(kv: &KeyValue) -> String {
    String::from_utf8_lossy(kv.key()).into_owned()
}

/// An etcd error as the contract's: a member that cannot be reached (transport error,
/// `Unavailable`, a deadline) is [`EtcdError::Unreachable`], anything the cluster answered
/// is [`EtcdError::Request`].
pub(super) fn classify(
    options: &EtcdOptions,
    op: &'static str,
    key: &str,
    e: etcd_client::Error,
) -> EtcdError {
    let unreachable = match &e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        // tonic reports a connection that failed (refused, TLS handshake) as a status
        // `Unknown` whose source is the transport error.
        etcd_client::Error::GRpcStatus(s) => {
            matches!(
                s.code() as i32,
                grpc_code::UNAVAILABLE | grpc_code::DEADLINE_EXCEEDED | grpc_code::CANCELLED
            ) || (s.code() as i32 == grpc_code::UNKNOWN && std::error::Error::source(s).is_some())
        }
        _ => false,
    };
    if unreachable {
        EtcdError::Unreachable {
            endpoints: options.endpoint_list(),
            reason: error_text(&e),
        }
    } else {
        EtcdError::Request {
            op,
            key: key.to_string(),
            reason: error_text(&e),
        }
    }
}

/// The error with its sources: tonic's transport errors say what failed (the TLS handshake,
/// a refused connection) only in their source chain.
fn error_text(e: &etcd_client::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    if let etcd_client::Error::TransportError(t) = e {
        source = std::error::Error::source(t);
    }
    if let etcd_client::Error::GRpcStatus(s) = e {
        source = std::error::Error::source(s);
    }
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// gRPC status codes (the protocol's numbers, so tonic need not be a direct dependency).
mod grpc_code {
    pub(super) const CANCELLED: i32 = 1;
    pub(super) const UNKNOWN: i32 = 2;
    pub(super) const DEADLINE_EXCEEDED: i32 = 4;
    pub(super) const UNAVAILABLE: i32 = 14;
}

fn connect_options(options: &EtcdOptions) -> Result<ConnectOptions> {
    let mut connect = ConnectOptions::new()
        .with_timeout(options.request_timeout)
        .with_connect_timeout(options.connect_timeout)
        .with_keep_alive(options.keepalive, options.keepalive)
        .with_keep_alive_while_idle(true)
        .with_tcp_keepalive(Duration::from_secs(10))
        // A member cut off from the leader refuses requests and cancels watches instead of
        // serving stale data (clientv3's WithRequireLeader), so the client moves on.
        .with_require_leader(true);
    if let Some(tls) = &options.tls {
        let read = |setting: &'static str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| EtcdError::Config {
                setting,
                reason: format!("cannot read {}: {e}", path.display()),
            })
        };
        let mut config = TlsOptions::new();
        if let Some(ca) = &tls.ca_cert {
            config = config.ca_certificate(Certificate::from_pem(read("ETCD_CA_CERT_FILE", ca)?));
        }
        if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
            config = config.identity(Identity::from_pem(
                read("ETCD_CERT_FILE", cert)?,
                read("ETCD_KEY_FILE", key)?,
            ));
        }
        connect = connect.with_tls(config);
    }
    Ok(connect)
}

/// The `Get` results of a transaction's branch, in order.
fn gets(response: &TxnResponse) -> Vec<Vec<KeyValue>> {
    response
        .op_responses()
        .into_iter()
        .filter_map(|op| match op {
            TxnOpResponse::Get(mut get) => Some(get.take_kvs()),
            _ => None,
        })
        .collect()
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    header.map_or(0, |h| from_etcd(h.revision()))
}

pub(super) fn from_etcd(revision: i64) -> Revision {
    Revision::try_from(revision).unwrap_or(0)
}

pub(super) fn to_etcd(revision: Revision) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}

/// The first key after every key starting with `prefix` (etcd's range end of a prefix).
pub(super) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Datastore for EtcdDatastore {
    fn list(&self, kind: &str) -> Result<Listing> {
        validate_name("kind", kind)?;
        let prefix = self.kind_prefix(kind);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match retry_unreachable(|| self.list_once(kind, &prefix)) {
                Err(DatastoreError::Etcd(EtcdError::Request { reason, .. }))
                    if reason.contains("compacted") && attempt < LIST_ATTEMPTS =>
                {
                    debug!(kind, "list revision compacted between pages; listing again");
                }
                other => return other,
            }
        }
    }

    fn get(&self, kind: &str, name: &str) -> Result<Record> {
        validate_name("kind", kind)?;
        validate_name("name", name)?;
        let key = self.key(kind, name);
        let current = retry_unreachable(|| self.read_key(&key))?;
        match current.1 {
            Some(kv) => self.record(kind, &kv),
            None => Err(DatastoreError::NotFound {
                kind: kind.into(),
                name: name.into(),
            }),
        }
    }

    fn create(&self, kind: &str, name: &str, value: serde_json::Value) -> Result<Revision> {
        validate_name("kind", kind)?;
        validate_name("name", name)?;
        let bytes = encode(kind, name, &value)?;
        self.write(kind, name, Write::Create(&bytes))
    }

    fn update(
        &self,
        kind: &str,
        name: &str,
        value: serde_json::Value,
        expected: Revision,
    ) -> Result<Revision> {
        validate_name("kind", kind)?;
        validate_name("name", name)?;
        let bytes = encode(kind, name, &value)?;
        self.write(kind, name, Write::Update(&bytes, expected))
    }

    fn delete(&self, kind: &str, name: &str, expected: Option<Revision>) -> Result<Revision> {
        validate_name("kind", kind)?;
        validate_name("name", name)?;
        self.write(kind, name, Write::Delete(expected))
    }

    fn watch(&self, kind: Option<&str>, from: WatchFrom) -> Result<Watch> {
        if let Some(kind) = kind {
            validate_name("kind", kind)?;
        }
        let from = match from {
            WatchFrom::Revision(revision) => revision,
            WatchFrom::Now => self.revision()?,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let range = match kind {
            Some(kind) => self.kind_prefix(kind),
            None => self.options.prefix.clone(),
        };
        self.runtime.spawn(watch::run(
            watch::Target {
                client: self.client.clone(),
                options: self.options.clone(),
                range,
            },
            from,
            tx,
        ));
        Ok(Watch::new(rx))
    }
}

impl EtcdDatastore {
    fn list_once(&self, kind: &str, prefix: &str) -> Result<Listing> {
        let end = prefix_end(prefix);
        let mut start = prefix.as_bytes().to_vec();
        let mut revision = 0i64;
        let mut records = Vec::new();
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let mut client = self.client.clone();
            let key = start.clone();
            let mut page = self
                .run(async move { client.get(key, Some(options)).await })
                .map_err(|e| self.error("list", prefix, e))?;
            if revision == 0 {
                revision = page.header().map_or(0, |h| h.revision());
            }
            let more = page.more();
            let kvs = page.take_kvs();
            for kv in &kvs {
                records.push(self.record(kind, kv)?);
            }
            match kvs.last() {
                Some(last) if more => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok(Listing {
            revision: from_etcd(revision),
            records,
        })
    }

    /// The key's current value (if any) and the revision it was read at.
    fn read_key(&self, key: &str) -> Result<(Revision, Option<KeyValue>)> {
        let mut client = self.client.clone();
        let k = key.to_string();
        let mut response = self
            .run(async move { client.get(k, None).await })
            .map_err(|e| self.error("get", key, e))?;
        let revision = header_revision(response.header());
        Ok((revision, response.take_kvs().into_iter().next()))
    }

    /// One compare-and-swap write. When the cluster cannot be reached mid-request the
    /// outcome is unknown (the member may have committed it before dying), so the key is
    /// read back, from whichever member answers: if the write is visible it succeeded, if
    /// not it is sent again, the comparison still guarding it. So a failover never turns a
    /// committed write into an error, which for IPAM would leak an address on the retry.
    fn write(&self, kind: &str, name: &str, write: Write<'_>) -> Result<Revision> {
        let key = self.key(kind, name);
        let deadline = Instant::now() + self.options.request_timeout * 2;
        loop {
            let outcome = self.txn(&key, write.txn(&key));
            match outcome {
                Ok(response) if response.succeeded() => {
                    return Ok(header_revision(response.header()))
                }
                Ok(response) => return Err(self.refused(kind, name, &write, &response)),
                Err(e @ DatastoreError::Etcd(EtcdError::Unreachable { .. })) => {
                    if Instant::now() >= deadline {
                        return Err(e);
                    }
                    debug!(key = %key, error = %e, "write outcome unknown; reading it back");
                    std::thread::sleep(RETRY_PAUSE);
                    match self.read_key(&key) {
                        Ok((revision, current)) => {
                            if let Some(done) = write.visible(revision, current.as_ref()) {
                                return Ok(done);
                            }
                        }
                        Err(e) => debug!(key = %key, error = %e, "cannot read the key back yet"),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Why the comparison of `write` failed, from the `Get` of the transaction's else branch.
    fn refused(
        &self,
        kind: &str,
        name: &str,
        write: &Write<'_>,
        response: &TxnResponse,
    ) -> DatastoreError {
        let current = gets(response)
            .into_iter()
            .next()
            .and_then(|kvs| kvs.into_iter().next());
        match (write, current) {
            (Write::Create(_), _) => DatastoreError::AlreadyExists {
                kind: kind.into(),
                name: name.into(),
            },
            (_, None) => DatastoreError::NotFound {
                kind: kind.into(),
                name: name.into(),
            },
            (Write::Update(_, expected), Some(kv)) | (Write::Delete(Some(expected)), Some(kv)) => {
                DatastoreError::Conflict {
                    kind: kind.into(),
                    name: name.into(),
                    expected: *expected,
                    actual: from_etcd(kv.mod_revision()),
                }
            }
            (Write::Delete(None), Some(kv)) => DatastoreError::Conflict {
                kind: kind.into(),
                name: name.into(),
                expected: 0,
                actual: from_etcd(kv.mod_revision()),
            },
        }
    }

    fn txn(&self, key: &str, txn: Txn) -> Result<TxnResponse> {
        let mut client = self.client.clone();
        self.run(async move { client.txn(txn).await })
            .map_err(|e| self.error("txn", key, e))
    }
}

/// Pause before a request is tried again after the cluster could not be reached (the client
/// moves to another member meanwhile).
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Runs a read, once more after [`RETRY_PAUSE`] if the cluster could not be reached: reads
/// are always safe to repeat, and one repetition covers a failover to another member.
fn retry_unreachable<T>(mut read: impl FnMut() -> Result<T>) -> Result<T> {
    match read() {
        Err(DatastoreError::Etcd(EtcdError::Unreachable { .. })) => {
            std::thread::sleep(RETRY_PAUSE);
            read()
        }
        other => other,
    }
}

/// A compare-and-swap write of one key.
enum Write<'a> {
    /// Only if the key does not exist.
    Create(&'a [u8]),
    /// Only if the key's mod revision is the given one.
    Update(&'a [u8], Revision),
    /// If the key exists (and has the given mod revision, when given).
    Delete(Option<Revision>),
}

impl Write<'_> {
    fn txn(&self, key: &str) -> Txn {
        let key = key.to_string();
        match self {
            Write::Create(bytes) => Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key, bytes.to_vec(), None)]),
            Write::Update(bytes, expected) => Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    to_etcd(*expected),
                )])
                .and_then([TxnOp::put(key.clone(), bytes.to_vec(), None)])
                .or_else([TxnOp::get(key, None)]),
            Write::Delete(expected) => {
                let compare = match expected {
                    Some(v) => Compare::mod_revision(key.clone(), CompareOp::Equal, to_etcd(*v)),
                    None => Compare::create_revision(key.clone(), CompareOp::Greater, 0),
                };
                Txn::new()
                    .when([compare])
                    .and_then([TxnOp::delete(key.clone(), None::<DeleteOptions>)])
                    .or_else([TxnOp::get(key, None)])
            }
        }
    }

    /// The revision of this write if the key, read at `revision`, shows it applied; `None`
    /// if it shows it was not (so sending it again is safe).
    fn visible(&self, revision: Revision, current: Option<&KeyValue>) -> Option<Revision> {
        match (self, current) {
            (Write::Create(bytes), Some(kv)) if kv.value() == *bytes => {
                Some(from_etcd(kv.mod_revision()))
            }
            (Write::Update(bytes, expected), Some(kv))
                if kv.value() == *bytes && from_etcd(kv.mod_revision()) != *expected =>
            {
                Some(from_etcd(kv.mod_revision()))
            }
            // Gone: deleted by us (or by somebody else, which leaves the same state); the
            // deletion happened at or before the read.
            (Write::Delete(_), None) => Some(revision),
            _ => None,
        }
    }
}

fn encode(kind: &str, name: &str, value: &serde_json::Value) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|source| DatastoreError::Encode {
        kind: kind.into(),
        name: name.into(),
        source,
    })
}

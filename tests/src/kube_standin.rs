//! A **stand-in** for a Kubernetes API server, in process, for tests of the Kubernetes
//! datastore. It is not a Kubernetes implementation: it speaks just enough of the REST and
//! watch protocol over plain HTTP/1.1 for the `kube` client, with the behaviour a datastore
//! relies on taken from the real API server:
//!
//! - one global revision counter, starting at 1 like etcd (the first write is revision 2),
//!   used as every `metadata.resourceVersion` and as a list's `resourceVersion`;
//! - `POST` (create; `409 AlreadyExists`), `GET` (one object, or a list), `PUT` (replace;
//!   `409 Conflict` when `metadata.resourceVersion` is stale), `DELETE` (with
//!   `preconditions.resourceVersion`/`uid`, `409 Conflict` on mismatch; answers the object
//!   at the deletion's revision);
//! - `GET ?watch=true&resourceVersion=N`: a chunked stream of JSON lines
//!   (`{"type":"ADDED","object":…}`) of every change after `N`, then live changes; only the
//!   last [`StandinOptions::event_window`] changes are kept, and a watch from before them
//!   gets `410 Gone` (reason `Expired`, message `too old resource version: N (oldest)`),
//!   as an `ERROR` event in a `200` stream like the real server's watch cache, or as an
//!   HTTP `410` status ([`ExpiredAs`]); `resourceVersion` absent or `0` starts with
//!   synthetic `ADDED` events of the current objects; `timeoutSeconds` ends the stream;
//! - resource types: core `nodes` (cluster; `PUT` of `nodes/<name>/status` keeps the
//!   stored spec), the namespaced `secrets`, `pods`, `services` and `discovery.k8s.io`
//!   `endpointslices` (`namespaces/<ns>/<resource>`, and the all-namespaces list and
//!   watch, e.g. `/api/v1/pods`; a field selector is ignored, as a label selector), and
//!   `customresourcedefinitions`; creating a cluster-scoped CRD makes its resource served
//!   (`/apis/<group>/<version>/<plural>`), anything else answers `404`;
//! - the garbage collector's background cascade: deleting an object deletes the objects
//!   whose `ownerReferences` name its uid.
//!
//! It listens on loopback ([`ApiServerStandin::start`]) or on an address inside a network
//! namespace of the test ([`ApiServerStandin::start_in`]), where daemons in the test's
//! namespaces reach it as nodes reach their API server.
//!
//! Not implemented (and not needed by the datastore): authentication, TLS, discovery,
//! label/field selectors, pagination (`limit` is ignored, which servers may do), patch,
//! admission, validation against the CRD schema, namespaced custom resources, bookmarks.
//! Every request is recorded ([`ApiServerStandin::requests`]) so tests can show that, for
//! example, a `409` really went over the wire.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

const CRD_COLLECTION: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
/// The namespaced resources served: (all-namespaces collection, namespaced prefix and
/// resource), e.g. `/api/v1/services` for `/api/v1/namespaces/<ns>/services`.
const NAMESPACED: [(&str, (&str, &str)); 4] = [
    ("/api/v1/secrets", ("/api/v1", "secrets")),
    ("/api/v1/pods", ("/api/v1", "pods")),
    ("/api/v1/services", ("/api/v1", "services")),
    (
        "/apis/discovery.k8s.io/v1/endpointslices",
        ("/apis/discovery.k8s.io/v1", "endpointslices"),
    ),
];

/// The all-namespaces collection of a namespaced one (`<prefix>/namespaces/<ns>/<resource>`),
/// with the namespace; `None` when `collection` is not one.
fn namespace_of(collection: &str) -> Option<(&'static str, &str)> {
    NAMESPACED.iter().find_map(|(all, (prefix, resource))| {
        let rest = collection
            .strip_prefix(prefix)?
            .strip_prefix("/namespaces/")?;
        let (ns, r) = rest.split_once('/')?;
        (r == *resource && !ns.is_empty() && !ns.contains('/')).then_some((*all, ns))
    })
}

fn all_namespaces(collection: &str) -> Option<String> {
    namespace_of(collection).map(|(all, _)| all.to_string())
}
const NODE_COLLECTION: &str = "/api/v1/nodes";
/// Largest request head or body accepted (a test never comes close).
const MAX_REQUEST: usize = 4 << 20;

/// How an expired watch revision is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiredAs {
    /// `200 OK` and one `ERROR` event carrying a `410` Status (what the real API server's
    /// watch cache does).
    ErrorEvent,
    /// An HTTP `410 Gone` answer with a Status body.
    HttpStatus,
}

/// Behaviour of the stand-in.
#[derive(Debug, Clone)]
pub struct StandinOptions {
    /// How many past changes are kept for watches to resume from.
    pub event_window: usize,
    /// How an expired watch revision is reported.
    pub expired_as: ExpiredAs,
}

impl Default for StandinOptions {
    fn default() -> Self {
        Self {
            event_window: 1000,
            expired_as: ExpiredAs::ErrorEvent,
        }
    }
}

/// One request the stand-in answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub status: u16,
}

struct LoggedChange {
    revision: u64,
    collection: String,
    event_type: &'static str,
    object: Value,
}

struct Watcher {
    collection: String,
    tx: mpsc::UnboundedSender<String>,
}

struct State {
    options: StandinOptions,
    revision: u64,
    next_uid: u64,
    /// Custom resource collections registered by CRDs: path -> (kind, CRD name).
    custom: BTreeMap<String, (String, String)>,
    objects: BTreeMap<String, BTreeMap<String, Value>>,
    log: VecDeque<LoggedChange>,
    watchers: Vec<Watcher>,
    requests: Vec<RecordedRequest>,
}

/// A running stand-in API server on `127.0.0.1`; stops when dropped.
pub struct ApiServerStandin {
    address: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ApiServerStandin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServerStandin")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Drop for ApiServerStandin {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl ApiServerStandin {
    /// Starts a stand-in on an ephemeral loopback port, on its own thread and runtime.
    pub fn start(options: StandinOptions) -> Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .context("binding the stand-in API server")?;
        Self::serve(options, listener)
    }

    /// Starts a stand-in listening on `address` (port 0: any) inside the network namespace
    /// at `netns` (a `/run/netns/<name>` file), so that daemons in namespaces of a test
    /// reach it there as a node reaches its API server. The socket is made on a short-lived
    /// thread that entered the namespace; the server itself runs on threads of the caller's.
    pub fn start_in(options: StandinOptions, netns: &Path, address: &str) -> Result<Self> {
        let netns = netns.to_path_buf();
        let address = address.to_string();
        let listener = std::thread::spawn(move || -> Result<std::net::TcpListener> {
            let file = std::fs::File::open(&netns)
                .with_context(|| format!("opening {}", netns.display()))?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering {}", netns.display()))?;
            std::net::TcpListener::bind(&address)
                .with_context(|| format!("binding the stand-in API server to {address}"))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))??;
        Self::serve(options, listener)
    }

    fn serve(options: StandinOptions, std_listener: std::net::TcpListener) -> Result<Self> {
        let state = Arc::new(Mutex::new(State {
            options,
            revision: 1,
            next_uid: 1,
            custom: BTreeMap::new(),
            objects: BTreeMap::new(),
            log: VecDeque::new(),
            watchers: Vec::new(),
            requests: Vec::new(),
        }));
        std_listener.set_nonblocking(true)?;
        let address = std_listener.local_addr()?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("stand-in runtime")?;
        let served = state.clone();
        let thread = std::thread::Builder::new()
            .name("kube-standin".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(std_listener) else {
                        return;
                    };
                    let accept = async {
                        while let Ok((stream, _)) = listener.accept().await {
                            tokio::spawn(serve_connection(stream, served.clone()));
                        }
                    };
                    tokio::select! {
                        _ = accept => {}
                        _ = stop_rx => {}
                    }
                    // Ends the watch streams still open.
                    lock(&served).watchers.clear();
                });
            })?;
        Ok(Self {
            address,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A kubeconfig whose current context points at this stand-in (no TLS, no user).
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    \
             server: {}\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    \
             user: standin\ncurrent-context: standin\nusers:\n- name: standin\n  user: {{}}\n",
            self.url()
        )
    }

    /// Writes [`Self::kubeconfig`] to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.kubeconfig())
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).requests.clone()
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        lock(&self.state).revision
    }

    /// The object `name` of the collection at `collection` (e.g. `/api/v1/nodes`).
    pub fn object(&self, collection: &str, name: &str) -> Option<Value> {
        lock(&self.state)
            .objects
            .get(collection)
            .and_then(|objects| objects.get(name))
            .cloned()
    }

    /// Every object of the collection at `collection`, by name.
    pub fn objects(&self, collection: &str) -> Vec<Value> {
        lock(&self.state)
            .objects
            .get(collection)
            .map(|objects| objects.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Creates an object directly (as another client would), e.g. a core Node or a
    /// Secret. Returns the stored object or the error Status.
    pub fn create(&self, collection: &str, object: Value) -> Result<Value, Value> {
        let mut state = lock(&self.state);
        if !state.serves(collection) {
            return Err(status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
        state
            .create(collection, object)
            .map(|(_, o)| o)
            .map_err(|(_, s)| s)
    }

    /// Replaces an object directly (as another client would: `kubectl label node`), at
    /// whatever version is stored. Returns the stored object or the error Status.
    pub fn replace(&self, collection: &str, mut object: Value) -> Result<Value, Value> {
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        lock(&self.state)
            .replace(collection, &name, object, false)
            .map(|(_, o)| o)
            .map_err(|(_, s)| s)
    }

    /// Deletes an object directly (as another client would), with the garbage
    /// collector's cascade to its dependents.
    pub fn delete(&self, collection: &str, name: &str) -> Result<Value, Value> {
        lock(&self.state)
            .delete(collection, name, &Value::Null)
            .map(|(_, o)| o)
            .map_err(|(_, s)| s)
    }

    /// Ends every open watch stream, as an API server does at `timeoutSeconds` or when it
    /// restarts; clients are expected to resume from the last revision they saw.
    pub fn end_watches(&self) {
        lock(&self.state).watchers.clear();
    }

    /// Ends every open watch stream with an `ERROR` event carrying `410 Gone`, as the API
    /// server does to a watcher that fell too far behind its watch cache.
    pub fn expire_watches(&self) {
        let mut state = lock(&self.state);
        let oldest = state.log.front().map_or(state.revision, |c| c.revision - 1);
        let message = format!("too old resource version: {} ({oldest})", state.revision);
        let line = json!({ "type": "ERROR", "object": status(410, "Expired", &message) });
        for watcher in state.watchers.drain(..) {
            let _ = watcher.tx.send(line.to_string());
        }
    }

    /// How many watch streams are open.
    pub fn open_watches(&self) -> usize {
        let mut state = lock(&self.state);
        state.watchers.retain(|w| !w.tx.is_closed());
        state.watchers.len()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// A Kubernetes `Status` object (the body of every error answer).
fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

type Answer = Result<(u16, Value), (u16, Value)>;

fn fail(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (code, status(code, reason, message))
}

/// `group` and plural of a collection path, for messages (`bgppeers.routerd.io`).
fn qualified(collection: &str) -> String {
    let parts: Vec<&str> = collection.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["apis", group, _, plural] => format!("{plural}.{group}"),
        [.., plural] => plural.to_string(),
        [] => String::new(),
    }
}

fn resource_version(object: &Value) -> Option<&str> {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
}

impl State {
    fn serves(&self, collection: &str) -> bool {
        if collection == CRD_COLLECTION
            || collection == NODE_COLLECTION
            || collection == "/api/v1/namespaces"
            || self.custom.contains_key(collection)
        {
            return true;
        }
        if NAMESPACED.iter().any(|(all, _)| *all == collection) {
            return true;
        }
        all_namespaces(collection).is_some()
    }

    /// Whether a watch or list of `watched` sees changes in `collection`: the same
    /// collection, or `watched` is the all-namespaces view of it.
    fn sees(watched: &str, collection: &str) -> bool {
        watched == collection || all_namespaces(collection).as_deref() == Some(watched)
    }

    /// Records a change at a new revision and sends it to the watchers of its collection.
    fn commit(&mut self, collection: &str, event_type: &'static str, object: Value) {
        let line = json!({ "type": event_type, "object": object }).to_string();
        self.watchers.retain(|w| {
            if !State::sees(&w.collection, collection) {
                return !w.tx.is_closed();
            }
            w.tx.send(line.clone()).is_ok()
        });
        self.log.push_back(LoggedChange {
            revision: self.revision,
            collection: collection.to_string(),
            event_type,
            object,
        });
        while self.log.len() > self.options.event_window.max(1) {
            self.log.pop_front();
        }
    }

    fn create(&mut self, collection: &str, mut object: Value) -> Answer {
        let Some(name) = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return Err(fail(
                422,
                "Invalid",
                "metadata.name: Required value (the stand-in does not generate names)",
            ));
        };
        if resource_version(&object).is_some_and(|rv| !rv.is_empty()) {
            return Err(fail(
                422,
                "Invalid",
                "metadata.resourceVersion: Invalid value: must not be set on create",
            ));
        }
        if self
            .objects
            .get(collection)
            .is_some_and(|o| o.contains_key(&name))
        {
            let mut s = status(
                409,
                "AlreadyExists",
                &format!("{} \"{name}\" already exists", qualified(collection)),
            );
            s["details"] = json!({ "name": name, "kind": qualified(collection) });
            return Err((409, s));
        }
        if collection == CRD_COLLECTION {
            self.register_crd(&object)?;
        }
        if let Some((_, ns)) = namespace_of(collection) {
            object["metadata"]["namespace"] = json!(ns);
        }
        self.revision += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", self.next_uid);
        self.next_uid += 1;
        object["metadata"]["uid"] = json!(uid);
        object["metadata"]["resourceVersion"] = json!(self.revision.to_string());
        self.objects
            .entry(collection.to_string())
            .or_default()
            .insert(name, object.clone());
        self.commit(collection, "ADDED", object.clone());
        Ok((201, object))
    }

    /// Serves the resource a cluster-scoped CRD defines.
    fn register_crd(&mut self, crd: &Value) -> Result<(), (u16, Value)> {
        let spec = &crd["spec"];
        let (Some(group), Some(plural), Some(kind)) = (
            spec["group"].as_str(),
            spec.pointer("/names/plural").and_then(Value::as_str),
            spec.pointer("/names/kind").and_then(Value::as_str),
        ) else {
            return Err(fail(
                422,
                "Invalid",
                "spec.group, spec.names.plural and spec.names.kind are required",
            ));
        };
        if spec["scope"].as_str() != Some("Cluster") {
            return Err(fail(
                422,
                "Invalid",
                "the stand-in serves cluster-scoped custom resources only",
            ));
        }
        let crd_name = format!("{plural}.{group}");
        if crd["metadata"]["name"].as_str() != Some(crd_name.as_str()) {
            return Err(fail(
                422,
                "Invalid",
                &format!("metadata.name must be {crd_name}"),
            ));
        }
        let versions = spec["versions"].as_array().cloned().unwrap_or_default();
        for version in versions {
            if version["served"].as_bool() == Some(true) {
                if let Some(v) = version["name"].as_str() {
                    self.custom.insert(
                        format!("/apis/{group}/{v}/{plural}"),
                        (kind.to_string(), crd_name.clone()),
                    );
                }
            }
        }
        Ok(())
    }

    fn get(&self, collection: &str, name: &str) -> Answer {
        match self.objects.get(collection).and_then(|o| o.get(name)) {
            Some(object) => Ok((200, object.clone())),
            None => Err(not_found(collection, name)),
        }
    }

    fn list(&self, collection: &str) -> Answer {
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|(c, _)| State::sees(collection, c))
            .flat_map(|(_, o)| o.values().cloned())
            .collect();
        Ok((
            200,
            json!({
                "kind": "List",
                "apiVersion": "v1",
                "metadata": { "resourceVersion": self.revision.to_string() },
                "items": items,
            }),
        ))
    }

    /// `PUT`; with `status` the `/status` subresource's, which keeps the stored `spec` (a
    /// Node's annotations and status change, its spec does not).
    fn replace(
        &mut self,
        collection: &str,
        name: &str,
        mut object: Value,
        status_only: bool,
    ) -> Answer {
        let Some(stored) = self
            .objects
            .get(collection)
            .and_then(|o| o.get(name))
            .cloned()
        else {
            return Err(not_found(collection, name));
        };
        if object.pointer("/metadata/name").and_then(Value::as_str) != Some(name) {
            return Err(fail(
                400,
                "BadRequest",
                "the name of the object does not match the name on the URL",
            ));
        }
        if let Some(rv) = resource_version(&object).filter(|rv| !rv.is_empty()) {
            if Some(rv) != resource_version(&stored) {
                return Err(conflict(&format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been \
                     modified; please apply your changes to the latest version and try again",
                    qualified(collection)
                )));
            }
        }
        if collection == CRD_COLLECTION {
            self.register_crd(&object)?;
        }
        if status_only {
            object["spec"] = stored["spec"].clone();
        }
        self.revision += 1;
        object["metadata"]["uid"] = stored["metadata"]["uid"].clone();
        object["metadata"]["resourceVersion"] = json!(self.revision.to_string());
        self.objects
            .entry(collection.to_string())
            .or_default()
            .insert(name.to_string(), object.clone());
        self.commit(collection, "MODIFIED", object.clone());
        Ok((200, object))
    }

    fn delete(&mut self, collection: &str, name: &str, options: &Value) -> Answer {
        let Some(stored) = self
            .objects
            .get(collection)
            .and_then(|o| o.get(name))
            .cloned()
        else {
            return Err(not_found(collection, name));
        };
        if let Some(rv) = options
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
        {
            let actual = resource_version(&stored).unwrap_or_default();
            if rv != actual {
                return Err(conflict(&format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, \
                     ResourceVersion in object meta: {actual}"
                )));
            }
        }
        if let Some(uid) = options
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
        {
            let actual = stored["metadata"]["uid"].as_str().unwrap_or_default();
            if uid != actual {
                return Err(conflict(&format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                )));
            }
        }
        let deleted = self.remove(collection, name, stored);
        // The garbage collector: dependents of a deleted owner go too (background cascade).
        let mut owners: Vec<String> = deleted["metadata"]["uid"]
            .as_str()
            .map(str::to_string)
            .into_iter()
            .collect();
        while let Some(uid) = owners.pop() {
            let dependents: Vec<(String, String, Value)> = self
                .objects
                .iter()
                .flat_map(|(c, objects)| objects.iter().map(move |(n, o)| (c, n, o)))
                .filter(|(_, _, o)| {
                    o.pointer("/metadata/ownerReferences")
                        .and_then(Value::as_array)
                        .is_some_and(|refs| {
                            refs.iter().any(|r| r["uid"].as_str() == Some(uid.as_str()))
                        })
                })
                .map(|(c, n, o)| (c.clone(), n.clone(), o.clone()))
                .collect();
            for (c, n, o) in dependents {
                let gone = self.remove(&c, &n, o);
                owners.extend(gone["metadata"]["uid"].as_str().map(str::to_string));
            }
        }
        Ok((200, deleted))
    }

    /// Removes an object at a new revision; returns it as deleted (at that revision).
    fn remove(&mut self, collection: &str, name: &str, mut object: Value) -> Value {
        if let Some(objects) = self.objects.get_mut(collection) {
            objects.remove(name);
        }
        if collection == CRD_COLLECTION {
            self.custom.retain(|_, (_, crd)| crd != name);
        }
        self.revision += 1;
        object["metadata"]["resourceVersion"] = json!(self.revision.to_string());
        self.commit(collection, "DELETED", object.clone());
        object
    }

    /// Registers a watch from `rv`, with the replayed changes; `Err` if expired.
    fn watch(
        &mut self,
        collection: &str,
        rv: Option<u64>,
    ) -> Result<mpsc::UnboundedReceiver<String>, (u64, u64)> {
        let (tx, rx) = mpsc::unbounded_channel();
        match rv {
            None | Some(0) => {
                for object in self
                    .objects
                    .iter()
                    .filter(|(c, _)| State::sees(collection, c))
                    .flat_map(|(_, o)| o.values())
                {
                    let _ = tx.send(json!({ "type": "ADDED", "object": object }).to_string());
                }
            }
            Some(from) => {
                if let Some(first) = self.log.front().map(|c| c.revision) {
                    if from + 1 < first {
                        return Err((from, first - 1));
                    }
                }
                for change in self
                    .log
                    .iter()
                    .filter(|c| c.revision > from && State::sees(collection, &c.collection))
                {
                    let line = json!({ "type": change.event_type, "object": change.object });
                    let _ = tx.send(line.to_string());
                }
            }
        }
        self.watchers.push(Watcher {
            collection: collection.to_string(),
            tx,
        });
        Ok(rx)
    }
}

fn not_found(collection: &str, name: &str) -> (u16, Value) {
    let mut s = status(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", qualified(collection)),
    );
    s["details"] = json!({ "name": name, "kind": qualified(collection) });
    (404, s)
}

fn conflict(message: &str) -> (u16, Value) {
    fail(409, "Conflict", message)
}

struct Request {
    method: String,
    target: String,
    path: String,
    query: BTreeMap<String, String>,
    body: Vec<u8>,
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn read_request(stream: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    stream.read_line(&mut line).await.ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut length = 0usize;
    let mut head = line.len();
    loop {
        let mut header = String::new();
        if stream.read_line(&mut header).await.ok()? == 0 {
            return None;
        }
        head += header.len();
        if head > MAX_REQUEST {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    if length > MAX_REQUEST {
        return None;
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.ok()?;
    let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    Some(Request {
        method,
        path: path.trim_end_matches('/').to_string(),
        target,
        query,
        body,
    })
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        422 => "Unprocessable Entity",
        _ => "Error",
    }
}

async fn write_answer(stream: &mut BufReader<TcpStream>, code: u16, body: &Value) {
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        reason_phrase(code),
        body.len()
    );
    let stream = stream.get_mut();
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// One request per connection (`Connection: close`), which the client handles.
async fn serve_connection(stream: TcpStream, state: Arc<Mutex<State>>) {
    let mut stream = BufReader::new(stream);
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    let record = |status: u16| {
        lock(&state).requests.push(RecordedRequest {
            method: request.method.clone(),
            target: request.target.clone(),
            status,
        });
    };
    let body: Value = if request.body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&request.body) {
            Ok(v) => v,
            Err(e) => {
                let (code, s) = fail(400, "BadRequest", &format!("invalid JSON body: {e}"));
                record(code);
                write_answer(&mut stream, code, &s).await;
                return;
            }
        }
    };
    let is_watch = matches!(
        request.query.get("watch").map(String::as_str),
        Some("true") | Some("1")
    );
    // A collection path, or a collection path and a name; Nodes' `/status` subresource.
    let (path, status_subresource) = match request.path.strip_suffix("/status") {
        Some(object) if object.starts_with(NODE_COLLECTION) => (object.to_string(), true),
        _ => (request.path.clone(), false),
    };
    let (collection, name) = {
        let s = lock(&state);
        if s.serves(&path) && !status_subresource {
            (Some(path.clone()), None)
        } else {
            match path.rsplit_once('/') {
                Some((c, n)) if s.serves(c) && !n.is_empty() => {
                    (Some(c.to_string()), Some(n.to_string()))
                }
                _ => (None, None),
            }
        }
    };
    let Some(collection) = collection else {
        let (code, s) = fail(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
        record(code);
        write_answer(&mut stream, code, &s).await;
        return;
    };
    if is_watch && request.method == "GET" && name.is_none() {
        let rv = match request.query.get("resourceVersion").map(String::as_str) {
            None | Some("") => None,
            Some(v) => match v.parse::<u64>() {
                Ok(v) => Some(v),
                Err(_) => {
                    let (code, s) =
                        fail(400, "BadRequest", &format!("invalid resourceVersion {v:?}"));
                    record(code);
                    write_answer(&mut stream, code, &s).await;
                    return;
                }
            },
        };
        let timeout = request
            .query
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(1800));
        let registered = lock(&state).watch(&collection, rv);
        let expired_as = lock(&state).options.expired_as;
        let mut events = match registered {
            Ok(rx) => rx,
            Err((from, oldest)) => {
                let message = format!("too old resource version: {from} ({oldest})");
                let s = status(410, "Expired", &message);
                if expired_as == ExpiredAs::HttpStatus {
                    record(410);
                    write_answer(&mut stream, 410, &s).await;
                    return;
                }
                let (tx, rx) = mpsc::unbounded_channel();
                let _ = tx.send(json!({ "type": "ERROR", "object": s }).to_string());
                rx
            }
        };
        record(200);
        let stream = stream.get_mut();
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                    Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let line = tokio::select! {
                line = events.recv() => line,
                _ = tokio::time::sleep_until(deadline) => None,
            };
            let Some(line) = line else { break };
            let chunk = format!("{:x}\r\n{line}\n\r\n", line.len() + 1);
            if stream.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
        }
        let _ = stream.write_all(b"0\r\n\r\n").await;
        let _ = stream.shutdown().await;
        return;
    }
    let answer = {
        let mut s = lock(&state);
        match (request.method.as_str(), name) {
            ("GET", None) => s.list(&collection),
            ("POST", None) => s.create(&collection, body),
            ("GET", Some(n)) => s.get(&collection, &n),
            ("PUT", Some(n)) => s.replace(&collection, &n, body, status_subresource),
            ("DELETE", Some(n)) => s.delete(&collection, &n, &body),
            _ => Err(fail(
                405,
                "MethodNotAllowed",
                "the stand-in does not serve this method here",
            )),
        }
    };
    let (code, body) = match answer {
        Ok(a) | Err(a) => a,
    };
    record(code);
    write_answer(&mut stream, code, &body).await;
}

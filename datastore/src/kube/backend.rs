//! [`KubeDatastore`]: the synchronous [`Datastore`] over an asynchronous kube client.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use ::kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams, Preconditions};
use ::kube::config::{KubeConfigOptions, Kubeconfig};
use ::kube::core::ApiResource;
use ::kube::{Client, Config};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::calico::{self, Backing, Decoded};
use super::crd::{crds, record_crd};
use super::error::KubeError;
use super::kinds::{kind_resource, resource_name, validate_object_name, WATCHED_KINDS};
use super::watch;
use crate::client_runtime::ClientRuntime;
use crate::{
    validate_name, Datastore, DatastoreError, Listing, Record, Result, Revision, Watch, WatchFrom,
};

/// Where the client's configuration comes from.
#[derive(Debug, Clone)]
pub enum KubeConfigSource {
    /// `$KUBECONFIG` or `~/.kube/config`, else the in-cluster service account
    /// (`KUBERNETES_SERVICE_HOST` and the mounted token), as kube's `Config::infer`.
    Infer,
    /// This kubeconfig file (its current context).
    Kubeconfig(PathBuf),
    /// A configuration built by the caller.
    Config(Box<Config>),
}

impl KubeConfigSource {
    /// The source a datastore address names: `kubernetes:` is [`Self::Infer`],
    /// `kubernetes:<path>` a kubeconfig file; `None` for other addresses. routerd uses it
    /// to open the [`KubeDatastore`] itself when it needs more than the trait (Secrets).
    pub fn from_address(address: &str) -> Option<Self> {
        let kubeconfig = address.strip_prefix("kubernetes:")?;
        Some(if kubeconfig.is_empty() {
            Self::Infer
        } else {
            Self::Kubeconfig(PathBuf::from(kubeconfig))
        })
    }
}

/// Tunables of the Kubernetes datastore.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// The kinds `watch(None, ..)` covers.
    pub watch_kinds: Vec<String>,
    /// How long a watch of several kinds holds each event so that an event of another
    /// kind with a lower revision, delivered on its own stream a little later, still comes
    /// out first (see the module docs).
    pub merge_window: Duration,
}

impl Default for KubeOptions {
    fn default() -> Self {
        Self {
            watch_kinds: WATCHED_KINDS.iter().map(|k| k.to_string()).collect(),
            merge_window: Duration::from_millis(30),
        }
    }
}

/// Records as Calico's custom resources, Kubernetes Nodes and `routerd.io` custom resources
/// in a Kubernetes API server ([`super::calico`] says which kind is which).
pub struct KubeDatastore {
    client: Client,
    runtime: ClientRuntime,
    options: KubeOptions,
}

impl std::fmt::Debug for KubeDatastore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeDatastore")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl KubeDatastore {
    /// Starts the client runtime and configures the client. Does not contact the API
    /// server yet: the first call does (and reports an unreachable server).
    pub fn connect(source: KubeConfigSource, options: KubeOptions) -> Result<Self> {
        let runtime =
            ClientRuntime::start("kube-datastore").map_err(|reason| KubeError::Config {
                source_name: "the client runtime".into(),
                reason,
            })?;
        let client = runtime
            .run(async move { make_client(source).await })
            .ok_or(KubeError::Stopped)??;
        Ok(Self {
            client,
            runtime,
            options,
        })
    }

    /// The client, for watches of this crate that are not records (Services).
    pub(super) fn client(&self) -> Client {
        self.client.clone()
    }

    /// Starts `fut` on the client runtime without waiting for it.
    pub(super) fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.runtime.spawn(fut);
    }

    /// Runs `fut` on the client runtime and waits for its result.
    fn run<T, F>(&self, fut: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        self.runtime.run(fut).ok_or(KubeError::Stopped)?
    }

    /// The value under `key` of the Secret `namespace/name`, as text (a BGP password).
    pub fn secret_value(&self, namespace: &str, name: &str, key: &str) -> Result<String> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let (namespace, name, key) = (namespace.to_string(), name.to_string(), key.to_string());
        self.run(async move {
            let secret = api
                .get_opt(&name)
                .await
                .map_err(|e| request_error("get", "secrets", &name, e))?
                .ok_or_else(|| KubeError::SecretNotFound {
                    namespace: namespace.clone(),
                    name: name.clone(),
                })?;
            let bytes = secret
                .data
                .as_ref()
                .and_then(|data| data.get(&key))
                .map(|b| b.0.clone())
                .or_else(|| {
                    secret
                        .string_data
                        .as_ref()
                        .and_then(|data| data.get(&key))
                        .map(|s| s.clone().into_bytes())
                })
                .ok_or_else(|| KubeError::SecretKeyMissing {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    key: key.clone(),
                })?;
            String::from_utf8(bytes).map_err(|_| {
                KubeError::SecretNotText {
                    namespace,
                    name,
                    key,
                }
                .into()
            })
        })
    }

    /// Creates the CRDs of [`WATCHED_KINDS`] (replacing existing ones): Calico's
    /// (`crd.projectcalico.org`) and routerd's own, as `kubectl apply -f examples/crds/`
    /// would. Needs the right to manage CRDs, which a node agent normally does not have:
    /// meant for tests and set-up tools.
    pub fn install_crds(&self) -> Result<()> {
        let mut all = super::calico_crds();
        all.extend(crds());
        self.install(all)
    }

    /// Creates `routerd.io` CRDs for these kinds (tests of kinds of their own).
    pub fn install_record_crds(&self, kinds: &[&str]) -> Result<()> {
        self.install(kinds.iter().map(|k| record_crd(k)).collect())
    }

    fn install(&self, crds: Vec<CustomResourceDefinition>) -> Result<()> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        self.run(async move {
            for mut crd in crds {
                let name = crd.metadata.name.clone().unwrap_or_default();
                match api.create(&PostParams::default(), &crd).await {
                    Ok(_) => {}
                    Err(::kube::Error::Api(e)) if e.code == 409 => {
                        let current = api.get(&name).await.map_err(|e| {
                            request_error("get", "customresourcedefinitions", &name, e)
                        })?;
                        crd.metadata.resource_version = current.metadata.resource_version;
                        api.replace(&name, &PostParams::default(), &crd)
                            .await
                            .map_err(|e| {
                                request_error("replace", "customresourcedefinitions", &name, e)
                            })?;
                    }
                    Err(e) => {
                        return Err(
                            request_error("create", "customresourcedefinitions", &name, e).into(),
                        )
                    }
                }
            }
            Ok(())
        })
    }

    fn api(&self, resource: &ApiResource) -> Api<DynamicObject> {
        Api::all_with(self.client.clone(), resource)
    }
}

async fn make_client(source: KubeConfigSource) -> Result<Client> {
    let (source_name, config) = match source {
        KubeConfigSource::Infer => (
            "$KUBECONFIG, ~/.kube/config or the in-cluster service account".to_string(),
            Config::infer().await.map_err(|e| e.to_string()),
        ),
        KubeConfigSource::Kubeconfig(path) => {
            let config = match Kubeconfig::read_from(&path) {
                Ok(kubeconfig) => {
                    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                        .await
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            (format!("kubeconfig {}", path.display()), config)
        }
        KubeConfigSource::Config(config) => ("the given configuration".into(), Ok(*config)),
    };
    let config = config.map_err(|reason| KubeError::Config {
        source_name: source_name.clone(),
        reason,
    })?;
    debug!(cluster = %config.cluster_url, "kubernetes datastore client");
    Client::try_from(config).map_err(|e| {
        KubeError::Config {
            source_name,
            reason: e.to_string(),
        }
        .into()
    })
}

/// An error status or transport failure the contract has no variant for.
pub(super) fn request_error(
    verb: &'static str,
    resource: &str,
    name: &str,
    err: ::kube::Error,
) -> KubeError {
    match err {
        ::kube::Error::Api(e) => KubeError::Api {
            verb,
            resource: resource.to_string(),
            name: name.to_string(),
            code: e.code,
            reason: e.reason,
            message: e.message,
        },
        other => KubeError::Transport {
            verb,
            resource: resource.to_string(),
            name: name.to_string(),
            reason: other.to_string(),
        },
    }
}

/// The status code of an API error, if the server answered one.
fn status_code(err: &::kube::Error) -> Option<u16> {
    match err {
        ::kube::Error::Api(e) => Some(e.code),
        _ => None,
    }
}

/// `metadata.resourceVersion` as a revision (see [`KubeError::ResourceVersion`]).
pub(super) fn parse_revision(
    resource: &ApiResource,
    name: &str,
    value: Option<&str>,
) -> Result<Revision, KubeError> {
    let value = value.unwrap_or_default();
    value.parse().map_err(|_| KubeError::ResourceVersion {
        resource: resource_name(resource),
        name: name.to_string(),
        value: value.to_string(),
    })
}

/// The record an object holds, as [`calico::decode`] reads it: `None` for an IPAM object
/// Calico marked deleted (see [`Decoded::Tombstone`]).
pub(super) fn object_record(
    kind: &str,
    resource: &ApiResource,
    object: &DynamicObject,
) -> Result<(Record, bool), KubeError> {
    let Some(name) = object.metadata.name.clone() else {
        return Err(KubeError::Malformed {
            resource: resource_name(resource),
            name: String::new(),
            reason: "no metadata.name".into(),
        });
    };
    let version = parse_revision(resource, &name, object.metadata.resource_version.as_deref())?;
    let body = serde_json::to_value(object).map_err(|e| KubeError::Malformed {
        resource: resource_name(resource),
        name: name.clone(),
        reason: e.to_string(),
    })?;
    let (value, live) = match calico::decode(kind, &body).map_err(|e| named(e, resource))? {
        Decoded::Live(value) => (value, true),
        Decoded::Tombstone(value) => (value, false),
    };
    Ok((
        Record {
            kind: kind.to_string(),
            name,
            version,
            value,
        },
        live,
    ))
}

/// A codec error names the resource type the object came from.
fn named(e: KubeError, resource: &ApiResource) -> KubeError {
    match e {
        KubeError::Malformed { name, reason, .. } => KubeError::Malformed {
            resource: resource_name(resource),
            name,
            reason,
        },
        other => other,
    }
}

/// The object that stores `value` under `name` ([`calico::encode`]).
fn record_object(
    kind: &str,
    resource: &ApiResource,
    name: &str,
    value: &Value,
    version: Option<Revision>,
    current: Option<&Value>,
) -> Result<DynamicObject, KubeError> {
    let body = calico::encode(kind, name, value, current).map_err(|e| named(e, resource))?;
    let mut object: DynamicObject =
        serde_json::from_value(body).map_err(|e| KubeError::Malformed {
            resource: resource_name(resource),
            name: name.to_string(),
            reason: e.to_string(),
        })?;
    object.metadata.resource_version = version.map(|v| v.to_string());
    Ok(object)
}

/// After a `409` on update or delete: the stored version (or `NotFound` if it is gone).
async fn conflict(
    api: Api<DynamicObject>,
    resource: ApiResource,
    kind: String,
    name: String,
    expected: Revision,
) -> DatastoreError {
    match api.get_opt(&name).await {
        Ok(Some(object)) => {
            match parse_revision(
                &resource,
                &name,
                object.metadata.resource_version.as_deref(),
            ) {
                Ok(actual) => DatastoreError::Conflict {
                    kind,
                    name,
                    expected,
                    actual,
                },
                Err(e) => e.into(),
            }
        }
        Ok(None) => DatastoreError::NotFound { kind, name },
        Err(e) => request_error("get", &resource_name(&resource), &name, e).into(),
    }
}

/// The object name of record `name` of `kind`, checked as the API server would.
fn object_name(kind: &str, name: &str) -> Result<String> {
    validate_name("name", name)?;
    let object = Backing::of(kind).object_name(name);
    validate_object_name(&object)?;
    Ok(object)
}

/// Finishes Calico's two-step deletion of a tombstoned IPAM object (`deleted` set, object
/// not yet deleted: its writer stopped in between), as Calico's own `Get` does, so the
/// name can be created again. Deleting at the tombstone's version never removes a newer
/// object.
async fn finish_deletion(api: &Api<DynamicObject>, name: &str, version: &str) {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: Some(version.to_string()),
            uid: None,
        }),
        ..DeleteParams::default()
    };
    if let Err(e) = api.delete(name, &params).await {
        debug!(object = %name, error = %e, "finishing a deletion Calico started");
    }
}

impl Datastore for KubeDatastore {
    fn list(&self, kind: &str) -> Result<Listing> {
        let resource = kind_resource(kind)?;
        let api = self.api(&resource);
        let kind = kind.to_string();
        self.run(async move {
            let list = api.list(&ListParams::default()).await.map_err(|e| {
                if status_code(&e) == Some(404) {
                    KubeError::NotServed {
                        resource: resource_name(&resource),
                    }
                } else {
                    request_error("list", &resource_name(&resource), "", e)
                }
            })?;
            let revision =
                parse_revision(&resource, "", list.metadata.resource_version.as_deref())?;
            let mut records = Vec::with_capacity(list.items.len());
            for object in &list.items {
                match object_record(&kind, &resource, object) {
                    Ok((record, true)) => records.push(record),
                    Ok((_, false)) => {}
                    Err(e @ KubeError::Malformed { .. }) => {
                        warn!(error = %e, "skipping an object routerd cannot read")
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            records.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(Listing { revision, records })
        })
    }

    fn get(&self, kind: &str, name: &str) -> Result<Record> {
        let resource = kind_resource(kind)?;
        let object_name = object_name(kind, name)?;
        let api = self.api(&resource);
        let (kind, name) = (kind.to_string(), name.to_string());
        self.run(async move {
            match api.get(&object_name).await {
                Ok(object) => match object_record(&kind, &resource, &object)? {
                    (record, true) => Ok(Record { name, ..record }),
                    (_, false) => Err(DatastoreError::NotFound { kind, name }),
                },
                Err(e) if status_code(&e) == Some(404) => {
                    Err(DatastoreError::NotFound { kind, name })
                }
                Err(e) => Err(request_error("get", &resource_name(&resource), &name, e).into()),
            }
        })
    }

    fn create(&self, kind: &str, name: &str, value: Value) -> Result<Revision> {
        let resource = kind_resource(kind)?;
        let object_name = object_name(kind, name)?;
        let api = self.api(&resource);
        let (kind, name) = (kind.to_string(), name.to_string());
        self.run(async move {
            if Backing::of(&kind) == Backing::KubernetesNode {
                // The kubelet creates Nodes; routerd only adds its settings to one.
                return match api.get_opt(&object_name).await {
                    Ok(Some(_)) => Err(DatastoreError::AlreadyExists { kind, name }),
                    Ok(None) => Err(KubeError::NodeNotInCluster { name }.into()),
                    Err(e) => Err(request_error("get", "nodes", &name, e).into()),
                };
            }
            let object = record_object(&kind, &resource, &object_name, &value, None, None)?;
            // At most twice: once more after finishing a deletion Calico left half done.
            for _ in 0..2 {
                match api.create(&PostParams::default(), &object).await {
                    Ok(created) => {
                        return Ok(parse_revision(
                            &resource,
                            &name,
                            created.metadata.resource_version.as_deref(),
                        )?)
                    }
                    Err(e) if status_code(&e) == Some(409) => {
                        let stored = api.get_opt(&object_name).await.ok().flatten();
                        let tombstone = stored.as_ref().and_then(|o| {
                            match object_record(&kind, &resource, o) {
                                Ok((_, false)) => o.metadata.resource_version.clone(),
                                _ => None,
                            }
                        });
                        match tombstone {
                            Some(version) => finish_deletion(&api, &object_name, &version).await,
                            None => return Err(DatastoreError::AlreadyExists { kind, name }),
                        }
                    }
                    Err(e) if status_code(&e) == Some(404) => {
                        return Err(KubeError::NotServed {
                            resource: resource_name(&resource),
                        }
                        .into())
                    }
                    Err(e) => {
                        return Err(
                            request_error("create", &resource_name(&resource), &name, e).into()
                        )
                    }
                }
            }
            Err(DatastoreError::AlreadyExists { kind, name })
        })
    }

    fn update(&self, kind: &str, name: &str, value: Value, expected: Revision) -> Result<Revision> {
        let resource = kind_resource(kind)?;
        let object_name = object_name(kind, name)?;
        let api = self.api(&resource);
        let (kind, name) = (kind.to_string(), name.to_string());
        self.run(async move {
            let node = Backing::of(&kind) == Backing::KubernetesNode;
            // A Node write merges into the Kubernetes Node as it is now; the version the
            // caller read is what the write is conditional on.
            let current =
                if node {
                    match api.get_opt(&object_name).await {
                        Ok(Some(current)) => Some(serde_json::to_value(&current).map_err(|e| {
                            KubeError::Malformed {
                                resource: "nodes".into(),
                                name: name.clone(),
                                reason: e.to_string(),
                            }
                        })?),
                        Ok(None) => return Err(DatastoreError::NotFound { kind, name }),
                        Err(e) => return Err(request_error("get", "nodes", &name, e).into()),
                    }
                } else {
                    None
                };
            let object = record_object(
                &kind,
                &resource,
                &object_name,
                &value,
                Some(expected),
                current.as_ref(),
            )?;
            let written = if node {
                // As calico-node does: through the status subresource, which lets a node
                // agent change a Node's annotations without the right to change its spec.
                api.replace_status(&object_name, &PostParams::default(), &object)
                    .await
            } else {
                api.replace(&object_name, &PostParams::default(), &object)
                    .await
            };
            match written {
                Ok(replaced) => Ok(parse_revision(
                    &resource,
                    &name,
                    replaced.metadata.resource_version.as_deref(),
                )?),
                Err(e) if status_code(&e) == Some(409) => {
                    Err(conflict(api, resource, kind, name, expected).await)
                }
                Err(e) if status_code(&e) == Some(404) => {
                    Err(DatastoreError::NotFound { kind, name })
                }
                Err(e) => Err(request_error("replace", &resource_name(&resource), &name, e).into()),
            }
        })
    }

    fn delete(&self, kind: &str, name: &str, expected: Option<Revision>) -> Result<Revision> {
        let resource = kind_resource(kind)?;
        let object_name = object_name(kind, name)?;
        if Backing::of(kind) == Backing::KubernetesNode {
            return Err(KubeError::Unsupported {
                verb: "delete",
                kind: kind.to_string(),
                name: name.to_string(),
                reason: "a Node is the Kubernetes Node: `kubectl delete node` it, and routerd \
                         releases its addresses after the grace period",
            }
            .into());
        }
        let api = self.api(&resource);
        let (kind, name) = (kind.to_string(), name.to_string());
        self.run(async move {
            let params = DeleteParams {
                preconditions: expected.map(|v| Preconditions {
                    resource_version: Some(v.to_string()),
                    uid: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&object_name, &params).await {
                // The API server returns the object as deleted, at the deletion's revision.
                Ok(answer) => answer.either(
                    |deleted| {
                        parse_revision(
                            &resource,
                            &name,
                            deleted.metadata.resource_version.as_deref(),
                        )
                        .map_err(DatastoreError::from)
                    },
                    |status| {
                        Err(KubeError::Api {
                            verb: "delete",
                            resource: resource_name(&resource),
                            name: name.clone(),
                            code: status.code,
                            reason: "StatusInsteadOfObject".into(),
                            message: format!(
                                "the API server answered a Status ({}) instead of the deleted \
                                 object, so the deletion's revision is unknown",
                                status.message
                            ),
                        }
                        .into())
                    },
                ),
                Err(e) if status_code(&e) == Some(409) => match expected {
                    Some(expected) => Err(conflict(api, resource, kind, name, expected).await),
                    None => {
                        Err(request_error("delete", &resource_name(&resource), &name, e).into())
                    }
                },
                Err(e) if status_code(&e) == Some(404) => {
                    Err(DatastoreError::NotFound { kind, name })
                }
                Err(e) => Err(request_error("delete", &resource_name(&resource), &name, e).into()),
            }
        })
    }

    fn watch(&self, kind: Option<&str>, from: WatchFrom) -> Result<Watch> {
        let kinds: Vec<String> = match kind {
            Some(kind) => vec![kind.to_string()],
            None => self.options.watch_kinds.clone(),
        };
        let mut streams = Vec::with_capacity(kinds.len());
        for kind in kinds {
            let resource = kind_resource(&kind)?;
            streams.push(watch::KindStream {
                api: self.api(&resource),
                kind,
                resource,
            });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let Some(first) = streams.first() else {
            // Nothing to watch: a watch that ends at once.
            return Ok(Watch::new(rx));
        };
        let from = match from {
            WatchFrom::Revision(revision) => revision,
            WatchFrom::Now => {
                let (api, resource) = (first.api.clone(), first.resource.clone());
                self.run(async move { current_revision(api, resource).await })?
            }
        };
        self.runtime
            .spawn(watch::run(streams, from, self.options.merge_window, tx));
        Ok(Watch::new(rx))
    }
}

/// The store's current revision: a list's `resourceVersion` (with `limit`, an API server
/// reads it from etcd, so it is the global revision, not a cache's).
async fn current_revision(api: Api<DynamicObject>, resource: ApiResource) -> Result<Revision> {
    let list = api
        .list(&ListParams::default().limit(1))
        .await
        .map_err(|e| {
            if status_code(&e) == Some(404) {
                KubeError::NotServed {
                    resource: resource_name(&resource),
                }
            } else {
                request_error("list", &resource_name(&resource), "", e)
            }
        })?;
    Ok(parse_revision(
        &resource,
        "",
        list.metadata.resource_version.as_deref(),
    )?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn resource_versions_must_be_decimal_revisions() {
        let resource = kind_resource("BGPPeer").unwrap();
        assert_eq!(
            parse_revision(&resource, "p", Some("12345")).unwrap(),
            12345
        );
        for bad in [Some("abc"), Some(""), Some("-1"), Some("1.5"), None] {
            let err = parse_revision(&resource, "p", bad).unwrap_err();
            assert!(matches!(err, KubeError::ResourceVersion { .. }), "{bad:?}");
            assert!(
                err.to_string().contains("bgppeers.crd.projectcalico.org"),
                "{err}"
            );
        }
    }

    #[test]
    fn records_of_routerd_kinds_come_from_spec_value_only() {
        let resource = kind_resource("WorkloadEndpoint").unwrap();
        let value = serde_json::json!({"anything": [1]});
        let mut object =
            record_object("WorkloadEndpoint", &resource, "wep", &value, Some(7), None).unwrap();
        let (record, live) = object_record("WorkloadEndpoint", &resource, &object).unwrap();
        assert_eq!((record.version, record.value, live), (7, value, true));
        object.data = serde_json::json!({"spec": {"cidr": "10.0.0.0/8"}});
        assert!(matches!(
            object_record("WorkloadEndpoint", &resource, &object),
            Err(KubeError::Malformed { .. })
        ));
    }
}

//! `patch` and `label`: read-modify-write of one stored resource, as calicoctl does them.
//!
//! Both read the resource, change its manifest, validate the result as `apply` would and
//! write it back with compare-and-swap on the version they read, retrying (a few times)
//! when another writer got there first, so two operators labelling one node at once both
//! land.
//!
//! calicoctl's `patch` applies a Kubernetes strategic merge patch whatever `--type` says;
//! Calico's v3 types carry almost no patch-strategy tags, so it behaves as a JSON merge
//! patch (RFC 7386: objects merge, lists and scalars are replaced, `null` deletes), which
//! is what routectl applies for `--type=strategic` (the default) and `--type=merge` (the
//! `json-patch` crate's `merge`); `--type=json` applies an RFC 6902 operation list (where
//! calicoctl ignores `--type` altogether).

use serde_json::Value;

use crate::daemon::cluster::resource_of;
use datastore::resource::{Kind, Resource};
use datastore::{Datastore, DatastoreError};

use super::resources::UPDATE_ATTEMPTS;
use super::RoutectlError;

/// Why an edit failed; each displays as calicoctl's line.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("resource does not exist: {kind}({name})")]
    Missing { kind: Kind, name: String },
    #[error("{0}")]
    Refused(String),
    #[error("update conflict: {kind}({name}): changed by another writer {UPDATE_ATTEMPTS} times in a row")]
    Contended { kind: Kind, name: String },
    #[error(transparent)]
    Datastore(#[from] DatastoreError),
}

impl From<EditError> for RoutectlError {
    fn from(e: EditError) -> Self {
        RoutectlError::Usage(e.to_string())
    }
}

/// Applies `change` to the stored manifest of `kind`/`record_name` and writes it back.
/// `change` gets the manifest (without the datastore's metadata) and returns the new one.
pub(super) fn modify<T>(
    ds: &dyn Datastore,
    kind: Kind,
    record_name: &str,
    change: impl Fn(Value) -> Result<(Value, T), EditError>,
) -> Result<T, EditError> {
    for _ in 0..UPDATE_ATTEMPTS {
        let stored = match ds.get(kind.as_str(), record_name) {
            Ok(r) => r,
            Err(DatastoreError::NotFound { .. }) => {
                return Err(EditError::Missing {
                    kind,
                    name: record_name.to_string(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        let current = resource_of(&stored)
            .map_err(|e| EditError::Refused(format!("stored {kind}({record_name}): {e}")))?;
        let mut manifest = current.to_value();
        if let Some(Value::Object(meta)) = manifest.get_mut("metadata") {
            meta.remove("resourceVersion");
        }
        let (changed, out) = change(manifest)?;
        let resource = Resource::from_value(changed, 1)
            .and_then(|r| r.validate().map(|()| r))
            .map_err(|e| EditError::Refused(e.to_string()))?;
        if resource.kind() != kind || resource.record_name() != record_name {
            return Err(EditError::Refused(
                "a patch may not change the kind, name or namespace of a resource".into(),
            ));
        }
        let mut value = crate::daemon::cluster::record_value(&resource);
        // Keep what the datastore owns (uid, creation time) as stored.
        if let (Some(Value::Object(old)), Some(Value::Object(meta))) =
            (stored.value.get("metadata"), value.get_mut("metadata"))
        {
            for key in ["uid", "creationTimestamp"] {
                match old.get(key) {
                    Some(v) => meta.insert(key.into(), v.clone()),
                    None => meta.remove(key),
                };
            }
            meta.remove("resourceVersion");
        }
        match ds.update(kind.as_str(), record_name, value, stored.version) {
            Ok(_) => return Ok(out),
            Err(DatastoreError::Conflict { .. }) => {
                tracing::debug!(%kind, name = record_name, "edit lost a race, retrying");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(EditError::Contended {
        kind,
        name: record_name.to_string(),
    })
}

/// `patch`'s `--type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// calicoctl's default; applied as a merge patch (see the module docs).
    Strategic,
    /// RFC 7386.
    Merge,
    /// RFC 6902: a list of operations (`[{"op":"replace","path":"/spec/asNumber",...}]`).
    Json,
}

impl PatchType {
    pub fn parse(text: &str) -> Result<Self, RoutectlError> {
        match text {
            "strategic" => Ok(PatchType::Strategic),
            "merge" => Ok(PatchType::Merge),
            "json" => Ok(PatchType::Json),
            other => Err(RoutectlError::Usage(format!(
                "unknown patch type '{other}' (strategic, merge, json)"
            ))),
        }
    }
}

/// `patch KIND NAME --patch=PATCH`: returns calicoctl's success line.
pub fn patch(
    ds: &dyn Datastore,
    kind: Kind,
    record_name: &str,
    patch_text: &str,
    patch_type: PatchType,
) -> Result<String, EditError> {
    let what = match patch_type {
        PatchType::Json => "performing JSON patch",
        _ => "performing strategic merge patch",
    };
    let patch: Value = serde_json::from_str(patch_text)
        .or_else(|_| serde_norway::from_str(patch_text))
        .map_err(|e| EditError::Refused(format!("{what}: {e}")))?;
    let operations = match patch_type {
        PatchType::Json => Some(
            serde_json::from_value::<json_patch::Patch>(patch.clone())
                .map_err(|e| EditError::Refused(format!("{what}: {e}")))?,
        ),
        _ if !patch.is_object() => {
            return Err(EditError::Refused(format!(
                "{what}: the patch must be a mapping (a partial resource)"
            )))
        }
        _ => None,
    };
    modify(ds, kind, record_name, |mut manifest| {
        match &operations {
            Some(ops) => json_patch::patch(&mut manifest, ops)
                .map_err(|e| EditError::Refused(format!("{what}: {e}")))?,
            None => json_patch::merge(&mut manifest, &patch),
        }
        Ok((manifest, ()))
    })?;
    Ok(format!("Successfully patched 1 '{kind}' resource\n"))
}

/// What `label` does to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelChange {
    /// Set `key=value`; an existing different value only with `overwrite`.
    Set {
        key: String,
        value: String,
        overwrite: bool,
    },
    /// Remove `key`, which must exist.
    Remove { key: String },
}

impl LabelChange {
    /// From calicoctl's arguments: `key=value`, or `key` with `--remove`.
    pub fn parse(arg: &str, overwrite: bool, remove: bool) -> Result<Self, RoutectlError> {
        if remove {
            return Ok(LabelChange::Remove { key: arg.into() });
        }
        match arg.split_once('=') {
            Some((key, value)) => Ok(LabelChange::Set {
                key: key.into(),
                value: value.into(),
                overwrite,
            }),
            None => Err(RoutectlError::Usage(format!("invalid label {arg}"))),
        }
    }
}

/// `label KIND NAME ...`: `typed` is the kind as the operator typed it (calicoctl's messages
/// echo it). Returns the success line.
pub fn label(
    ds: &dyn Datastore,
    kind: Kind,
    typed: &str,
    record_name: &str,
    change: &LabelChange,
) -> Result<String, EditError> {
    let done = modify(ds, kind, record_name, |mut manifest| {
        let labels = manifest
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .map(|meta| {
                meta.entry("labels")
                    .or_insert_with(|| Value::Object(Default::default()))
            })
            .and_then(Value::as_object_mut)
            .ok_or_else(|| EditError::Refused(format!("{typed} {record_name} has no metadata")))?;
        let line = match change {
            LabelChange::Remove { key } => {
                if labels.remove(key).is_none() {
                    return Err(EditError::Refused(format!(
                        "cannot remove label of {typed} {record_name}, key {key} does not exist"
                    )));
                }
                format!("Successfully removed label {key} from {typed} {record_name}\n")
            }
            LabelChange::Set {
                key,
                value,
                overwrite,
            } => match labels.get(key).and_then(Value::as_str) {
                Some(old) if old != value && !overwrite => {
                    return Err(EditError::Refused(format!(
                        "failed to update label of {typed} {record_name}, key {key} is already \
                         present. please use '--overwrite' to set a new value"
                    )))
                }
                Some(_) => {
                    labels.insert(key.clone(), Value::from(value.as_str()));
                    format!("Successfully updated label {key} on {typed} {record_name}\n")
                }
                None => {
                    labels.insert(key.clone(), Value::from(value.as_str()));
                    format!("Successfully set label {key} on {typed} {record_name}\n")
                }
            },
        };
        Ok((manifest, line))
    });
    match done {
        Err(EditError::Missing { .. }) => Err(EditError::Refused(format!(
            "{typed} {record_name} not found"
        ))),
        other => other,
    }
}

//! `validate` and `convert`: manifests checked or rewritten without a datastore.
//!
//! `validate -f` reads every resource of the stream on its own and names each bad one with
//! its field, exactly as `apply` would refuse it, so a CI job can check manifests before
//! they reach a cluster. `convert -f` rewrites manifests (any `apiVersion` routectl reads:
//! `projectcalico.org/v3`, `routerd.io/v1`) as normalised `projectcalico.org/v3` YAML or
//! JSON, without the metadata a datastore owns; calicoctl's own `convert` (v1 to v3) was
//! removed upstream in 2025, so this keeps the name for the conversion routectl can do.

use serde_json::Value;

use datastore::resource::{check_manifests, Resource, ResourceError, CALICO_API_VERSION};

use super::RoutectlError;

/// `validate`'s report: stdout, stderr, and whether everything was valid.
pub fn validate(text: &str, path: &str) -> Result<(String, String, bool), RoutectlError> {
    let results = check_manifests(text)?;
    if results.is_empty() {
        return Err(RoutectlError::Usage(format!(
            "no resources specified in file {path}"
        )));
    }
    let good: Vec<&Resource> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let bad: Vec<&ResourceError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    if bad.is_empty() {
        let first = good[0].kind();
        let out = if good.iter().all(|r| r.kind() == first) {
            format!(
                "Successfully validated {} '{first}' resource(s)\n",
                good.len()
            )
        } else {
            format!("Successfully validated {} resource(s)\n", good.len())
        };
        return Ok((out, String::new(), true));
    }
    let mut err = format!(
        "failed to validate {} of {} resource(s):\n",
        bad.len(),
        results.len()
    );
    for e in bad {
        err.push_str(&format!("  {e}\n"));
    }
    Ok((String::new(), err, false))
}

/// `convert`'s output in `format` (`yaml` or `json`).
pub fn convert(resources: &[Resource], format: &str) -> Result<String, RoutectlError> {
    let values: Vec<Value> = resources.iter().map(converted).collect();
    match format {
        "yaml" | "yml" => {
            let mut out = String::new();
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    out.push_str("---\n");
                }
                out.push_str(&serde_norway::to_string(v).map_err(|e| {
                    RoutectlError::Usage(format!("cannot write resource {}: {e}", i + 1))
                })?);
            }
            Ok(out)
        }
        "json" => {
            let value = match values.as_slice() {
                [one] => one.clone(),
                many => Value::Array(many.to_vec()),
            };
            Ok(serde_json::to_string_pretty(&value).unwrap_or_default() + "\n")
        }
        other => Err(RoutectlError::Usage(format!(
            "unrecognized output format '{other}' (yaml, json)"
        ))),
    }
}

/// A resource as a `projectcalico.org/v3` manifest with only operator-written metadata.
fn converted(r: &Resource) -> Value {
    let mut v = r.to_value();
    if let Some(map) = v.as_object_mut() {
        map.insert("apiVersion".into(), Value::from(CALICO_API_VERSION));
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            for key in ["resourceVersion", "uid", "creationTimestamp"] {
                meta.remove(key);
            }
        }
    }
    v
}

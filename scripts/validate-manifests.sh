#!/usr/bin/env bash
# Offline validation of the Kubernetes manifests under examples/ (no API server needed):
#   - every built-in kind (ServiceAccount, RBAC, CustomResourceDefinition, DaemonSet, ...)
#     against the OpenAPI schema of Kubernetes $KUBE_VERSION, strictly (unknown fields are
#     errors), with kubernetes-validate from PyPI (installed by scripts/setup.sh into
#     target/validate-venv);
#   - every custom resource against the openAPIV3Schema of its CustomResourceDefinition
#     found among the same files (group, kind and served version must match); each CRD's
#     schema must itself be a valid JSON schema;
#   - a kind that is neither is an error, not a warning.
# Files: examples/kubernetes/*.yaml and examples/crds/*.yaml (examples/manifests/ holds
# projectcalico.org/v3 resources, which `routectl validate` checks).
#
#   scripts/validate-manifests.sh [FILE...]
set -euo pipefail
cd "$(dirname "$0")/.."

KUBE_VERSION=${KUBE_VERSION:-1.37.0}
venv=target/validate-venv
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import kubernetes_validate' 2>/dev/null; then
  echo "validate-manifests: $venv lacks kubernetes-validate: run scripts/setup.sh" >&2
  exit 1
fi
if (($#)); then files=("$@"); else files=(examples/kubernetes/*.yaml examples/crds/*.yaml); fi

exec "$venv/bin/python" - "$KUBE_VERSION" "${files[@]}" <<'PY'
import sys

import jsonschema
import kubernetes_validate.utils as kv

version, files = sys.argv[1], sys.argv[2:]
docs = [(f, d) for f in files for d in kv.resources_from_file(f)]
errors = 0


def name(d):
    return "%s/%s" % (d.get("kind", "?"), d.get("metadata", {}).get("name", "?"))


def openapi_to_jsonschema(s):
    """An OpenAPI v3 (structural) schema as JSON schema: `nullable` allows null; the
    x-kubernetes-* extensions are annotations jsonschema ignores."""
    if isinstance(s, list):
        return [openapi_to_jsonschema(x) for x in s]
    if not isinstance(s, dict):
        return s
    out = {k: openapi_to_jsonschema(v) for k, v in s.items() if k != "nullable"}
    if s.get("nullable"):
        t = out.get("type")
        if isinstance(t, str):
            out["type"] = [t, "null"]
        elif t is None:
            pass  # untyped: anything, null included
    if s.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


# The CRDs among the files: (group, version, kind) -> JSON schema.
crds = {}
for f, d in docs:
    if d.get("kind") == "CustomResourceDefinition" and d.get("apiVersion", "").startswith("apiextensions.k8s.io/"):
        spec = d["spec"]
        for v in spec.get("versions", []):
            raw = v.get("schema", {}).get("openAPIV3Schema")
            if raw is None:
                print("ERROR %s %s version %s has no openAPIV3Schema" % (f, name(d), v.get("name")))
                errors += 1
                continue
            schema = openapi_to_jsonschema(raw)
            try:
                jsonschema.Draft202012Validator.check_schema(schema)
            except jsonschema.SchemaError as e:
                print("ERROR %s %s version %s: not a valid schema: %s" % (f, name(d), v["name"], e.message))
                errors += 1
                continue
            if v.get("served", False):
                crds[(spec["group"], v["name"], spec["names"]["kind"])] = schema

checked = {"built-in": 0, "custom": 0}
for f, d in docs:
    api, kind = d.get("apiVersion", ""), d.get("kind", "")
    group, _, ver = api.rpartition("/")
    if (group, ver, kind) in crds:
        try:
            jsonschema.Draft202012Validator(crds[(group, ver, kind)]).validate(d)
            checked["custom"] += 1
        except jsonschema.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            print("ERROR %s %s against its CRD: %s: %s" % (f, name(d), path, e.message))
            errors += 1
        continue
    try:
        kv.validate(d, version, strict=True)
        checked["built-in"] += 1
    except kv.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        print("ERROR %s %s against Kubernetes %s: %s: %s" % (f, name(d), e.version, path, e.message))
        errors += 1
    except kv.SchemaNotFoundError as e:
        print("ERROR %s %s: neither a Kubernetes %s kind nor defined by a CRD here (%s)" % (f, name(d), version, e.message))
        errors += 1

print("validate-manifests: %d files, %d built-in resources (Kubernetes %s, strict), %d custom resources, %d CRD versions: %s"
      % (len(files), checked["built-in"], version, checked["custom"], len(crds), "FAILED" if errors else "ok"))
sys.exit(1 if errors else 0)
PY

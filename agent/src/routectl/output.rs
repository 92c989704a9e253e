//! `get -o custom-columns=...` and `-o go-template=...` / `go-template-file=...`.
//!
//! - **custom-columns** picks columns of the kind's tables by their headings, as calicoctl
//!   does (`-o custom-columns=NAME,ASN`); a heading the kind has no column for is refused
//!   with the valid ones listed.
//! - **go-template** runs a Go text/template (the `gtmpl` crate, the Rust implementation of
//!   Go's template language) once over what `-o json` would print: one resource, a
//!   `<Kind>List` with `items`, or an array of them. As with kubectl's go-template (and
//!   unlike calicoctl, which exposes its Go structs), fields are the manifest's JSON names:
//!   `{{range .items}}{{.metadata.name}} {{.spec.peerIP}}{{"\n"}}{{end}}`.

use std::collections::HashMap;

use serde_json::Value;

use super::resources::{cell, headings, Printed};
use super::table::column_table;
use super::RoutectlError;

/// The table of `columns` for every resource printed.
pub fn custom_columns(
    printed: &[Printed],
    columns: &[String],
    default_as: u32,
) -> Result<String, RoutectlError> {
    let mut out = String::new();
    for p in printed {
        let (kind, items): (_, Vec<&datastore::resource::Resource>) = match p {
            Printed::List { kind, items, .. } => (*kind, items.iter().collect()),
            Printed::Single(r) => (r.kind(), vec![&**r]),
        };
        let mut known: Vec<&str> = headings(kind, true).to_vec();
        for h in headings(kind, false) {
            if !known.contains(h) {
                known.push(h);
            }
        }
        for c in columns {
            if !known.contains(&c.as_str()) {
                return Err(RoutectlError::Usage(format!(
                    "unknown heading {c}, valid values are: {}",
                    known.join(", ")
                )));
            }
        }
        let heads: Vec<&str> = columns.iter().map(String::as_str).collect();
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|r| heads.iter().map(|h| cell(r, h, default_as)).collect())
            .collect();
        out.push_str(&column_table(&heads, &rows));
    }
    Ok(out)
}

/// Runs `template` over `data` (what `-o json` prints).
pub fn go_template(template: &str, data: &Value) -> Result<String, RoutectlError> {
    gtmpl::template(template, to_template_value(data))
        .map_err(|e| RoutectlError::Usage(format!("error executing template {template:?}: {e}")))
}

fn to_template_value(v: &Value) -> gtmpl::Value {
    match v {
        Value::Null => gtmpl::Value::Nil,
        Value::Bool(b) => gtmpl::Value::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => gtmpl::Value::from(u),
            (None, Some(i), _) => gtmpl::Value::from(i),
            (None, None, Some(f)) => gtmpl::Value::from(f),
            _ => gtmpl::Value::Nil,
        },
        Value::String(s) => gtmpl::Value::String(s.clone()),
        Value::Array(items) => gtmpl::Value::Array(items.iter().map(to_template_value).collect()),
        Value::Object(map) => gtmpl::Value::Map(
            map.iter()
                .map(|(k, v)| (k.clone(), to_template_value(v)))
                .collect::<HashMap<_, _>>(),
        ),
    }
}

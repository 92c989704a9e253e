//! Parsers for the value formats several kinds share (AS numbers, communities, durations,
//! secret references, names), each returning a [`FieldError`] that names the field path.
//!
//! Wire types keep these values as text (or "number or text") like Calico's own API types, so
//! a bad value is reported here, against its field, instead of as an anonymous serde error.

use std::fmt;
use std::time::Duration;

use ipam::Selector;
use serde::{Deserialize, Serialize};

/// A field of a resource holds a bad value; `field` is its path, e.g. `spec.asNumber`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Dotted path with list indices, e.g. `spec.exportV4[1].cidr`.
    pub field: String,
    /// What is wrong with the value.
    pub message: String,
}

impl FieldError {
    /// An error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An AS number as written in a manifest. Calico's `numorstring.ASNumber` accepts a plain
/// number (`64512`), the same as a string (`"64512"`) and RFC 5396 asdot (`"1.10"`).
///
/// Its schema (Kubernetes CRDs) is `x-kubernetes-int-or-string`: Calico writes the number as
/// an integer, and the text forms must pass too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "kubernetes",
    derive(schemars::JsonSchema),
    schemars(schema_with = "as_number_schema")
)]
#[serde(untagged)]
pub enum AsNumberText {
    /// `64512`.
    Number(i64),
    /// `"64512"` or `"1.10"`.
    Text(String),
}

/// An integer or a string, the one shape a structural schema allows for an untagged
/// number-or-text enum (`anyOf` with types inside is not structural).
#[cfg(feature = "kubernetes")]
fn as_number_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "An AS number: an integer (64512), or a string holding one (\"64512\") or in asdot (\"1.10\").",
        "x-kubernetes-int-or-string": true
    })
}

impl From<u32> for AsNumberText {
    fn from(asn: u32) -> Self {
        AsNumberText::Number(i64::from(asn))
    }
}

impl fmt::Display for AsNumberText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AsNumberText::Number(n) => write!(f, "{n}"),
            AsNumberText::Text(t) => write!(f, "{t:?}"),
        }
    }
}

impl AsNumberText {
    /// The 32-bit AS number (RFC 6793). AS 0 is reserved and may not be used in a session
    /// (RFC 7607), so it is refused like any value outside 1..=4294967295.
    pub fn parse(&self, field: &str) -> Result<u32, FieldError> {
        let bad = || FieldError::new(field, format!("{self} is not a valid AS number"));
        let value = match self {
            AsNumberText::Number(n) => u32::try_from(*n).map_err(|_| bad())?,
            AsNumberText::Text(t) => match t.split_once('.') {
                Some((hi, lo)) => {
                    let hi: u16 = hi.parse().map_err(|_| bad())?;
                    let lo: u16 = lo.parse().map_err(|_| bad())?;
                    (u32::from(hi) << 16) | u32::from(lo)
                }
                None => t.parse().map_err(|_| bad())?,
            },
        };
        if value == 0 {
            return Err(bad());
        }
        Ok(value)
    }
}

/// Where a BGP password (the TCP MD5 key, RFC 2385) comes from.
///
/// `secretKeyRef` is Calico's form: a key of a Kubernetes Secret in the calico-system
/// namespace. `file` is this project's addition for the embedded datastore, which has no
/// Secrets: the path of a file holding the key (trailing newline stripped by the reader).
/// Exactly one of the two must be set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "kubernetes", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordSource {
    /// A key of a Kubernetes Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    /// A file holding the password (embedded datastore only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// A key within a Kubernetes Secret.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "kubernetes", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SecretKeyRef {
    /// The Secret's name.
    pub name: String,
    /// The key within the Secret.
    pub key: String,
}

impl PasswordSource {
    /// Checks exactly one source is given and it is complete.
    pub fn validate(&self, field: &str) -> Result<(), FieldError> {
        match (&self.secret_key_ref, &self.file) {
            (Some(_), Some(_)) => Err(FieldError::new(
                field,
                "set either secretKeyRef or file, not both",
            )),
            (None, None) => Err(FieldError::new(field, "needs secretKeyRef or file")),
            (Some(r), None) => {
                if !is_dns_subdomain(&r.name) {
                    return Err(FieldError::new(
                        format!("{field}.secretKeyRef.name"),
                        format!("{:?} is not a valid Secret name", r.name),
                    ));
                }
                if r.key.is_empty()
                    || !r
                        .key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                {
                    return Err(FieldError::new(
                        format!("{field}.secretKeyRef.key"),
                        format!("{:?} is not a valid Secret key", r.key),
                    ));
                }
                Ok(())
            }
            (None, Some(path)) => {
                if !path.starts_with('/') {
                    return Err(FieldError::new(
                        format!("{field}.file"),
                        format!("{path:?} is not an absolute path"),
                    ));
                }
                Ok(())
            }
        }
    }
}

/// A community as configured: a standard one (`aa:nn`, RFC 1997, each part 16 bits) or a
/// large one (`aa:nn:mm`, RFC 8092, each part 32 bits), as Calico's `communities[].value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommunityValue {
    /// RFC 1997.
    Standard(StandardCommunity),
    /// RFC 8092.
    Large(LargeCommunity),
}

/// `aa:nn` (RFC 1997): the AS and a value, 16 bits each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StandardCommunity {
    pub asn: u16,
    pub value: u16,
}

/// `aa:nn:mm` (RFC 8092): global administrator and two local parts, 32 bits each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LargeCommunity {
    pub global: u32,
    pub local1: u32,
    pub local2: u32,
}

/// Parses `aa:nn` or `aa:nn:mm`.
pub fn parse_community(text: &str, field: &str) -> Result<CommunityValue, FieldError> {
    let bad = |why: &str| {
        FieldError::new(
            field,
            format!("{text:?} is not a community ({why}; expected aa:nn or aa:nn:mm)"),
        )
    };
    let parts: Vec<&str> = text.split(':').collect();
    match parts.as_slice() {
        [a, n] => {
            let a: u16 = a.parse().map_err(|_| bad("parts must be 0..=65535"))?;
            let n: u16 = n.parse().map_err(|_| bad("parts must be 0..=65535"))?;
            Ok(CommunityValue::Standard(StandardCommunity {
                asn: a,
                value: n,
            }))
        }
        [a, n, m] => {
            let p = |s: &str| {
                s.parse::<u32>()
                    .map_err(|_| bad("parts must be 0..=4294967295"))
            };
            Ok(CommunityValue::Large(LargeCommunity {
                global: p(a)?,
                local1: p(n)?,
                local2: p(m)?,
            }))
        }
        _ => Err(bad("wrong number of parts")),
    }
}

/// Parses a Go `time.Duration` string as Calico writes them (`120s`, `2m`, `1h30m`,
/// `500ms`). Negative and fractional values are refused: they make no sense for restart
/// timers.
pub fn parse_duration(text: &str, field: &str) -> Result<Duration, FieldError> {
    let bad = || {
        FieldError::new(
            field,
            format!("{text:?} is not a duration (e.g. 120s, 2m, 1h30m, 500ms)"),
        )
    };
    if text.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| !b.is_ascii_digit()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "h" => value.checked_mul(3600).map(Duration::from_secs),
            "m" => value.checked_mul(60).map(Duration::from_secs),
            "s" => Some(Duration::from_secs(value)),
            "ms" => Some(Duration::from_millis(value)),
            "us" | "µs" => Some(Duration::from_micros(value)),
            "ns" => Some(Duration::from_nanos(value)),
            _ => None,
        }
        .ok_or_else(bad)?;
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    Ok(total)
}

/// Parses a label selector (Calico syntax, [`ipam::Selector`]).
pub fn parse_selector(text: &str, field: &str) -> Result<Selector, FieldError> {
    Selector::parse(text).map_err(|e| FieldError::new(field, e.to_string()))
}

/// RFC 1123 subdomain: what Kubernetes (and Calico) accept as a cluster-scoped name.
pub fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Refuses a name Kubernetes would refuse.
pub fn check_name(name: &str, field: &str) -> Result<(), FieldError> {
    if is_dns_subdomain(name) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("{name:?} is not a lowercase RFC 1123 DNS subdomain name"),
        ))
    }
}

/// Checks `text` is one of `allowed`, for enum-valued text fields.
pub fn check_one_of(text: &str, allowed: &[&str], field: &str) -> Result<(), FieldError> {
    if allowed.contains(&text) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("{text:?} is not one of {}", allowed.join(", ")),
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn as_numbers() {
        assert_eq!(AsNumberText::Number(64512).parse("f"), Ok(64512));
        assert_eq!(AsNumberText::Text("64512".into()).parse("f"), Ok(64512));
        assert_eq!(AsNumberText::Text("1.10".into()).parse("f"), Ok(65546));
        assert_eq!(AsNumberText::Number(4_294_967_295).parse("f"), Ok(u32::MAX));
        for bad in [
            AsNumberText::Number(0),
            AsNumberText::Number(-1),
            AsNumberText::Number(4_294_967_296),
            AsNumberText::Text("x".into()),
            AsNumberText::Text("65536.1".into()),
            AsNumberText::Text("0".into()),
        ] {
            let e = bad.parse("spec.asNumber").unwrap_err();
            assert_eq!(e.field, "spec.asNumber");
        }
        assert_eq!(
            AsNumberText::Number(0)
                .parse("spec.asNumber")
                .unwrap_err()
                .to_string(),
            "spec.asNumber: 0 is not a valid AS number"
        );
    }

    #[test]
    fn communities() {
        assert_eq!(
            parse_community("65001:100", "f"),
            Ok(CommunityValue::Standard(StandardCommunity {
                asn: 65001,
                value: 100
            }))
        );
        assert_eq!(
            parse_community("4200000000:1:2", "f"),
            Ok(CommunityValue::Large(LargeCommunity {
                global: 4_200_000_000,
                local1: 1,
                local2: 2
            }))
        );
        for bad in [
            "",
            "1",
            "65536:1",
            "1:2:3:4",
            "a:b",
            "1:-2",
            "1:2:4294967296",
        ] {
            assert_eq!(parse_community(bad, "v").unwrap_err().field, "v", "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("120s", "f"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m", "f"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms", "f"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0s", "f"), Ok(Duration::ZERO));
        for bad in [
            "",
            "120",
            "s",
            "-1s",
            "1.5s",
            "10x",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad, "f").is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords() {
        let ok = PasswordSource {
            secret_key_ref: Some(SecretKeyRef {
                name: "bgp-secrets".into(),
                key: "rack1".into(),
            }),
            file: None,
        };
        ok.validate("spec.password").unwrap();
        let both = PasswordSource {
            file: Some("/etc/routerd/pw".into()),
            ..ok.clone()
        };
        assert_eq!(
            both.validate("spec.password").unwrap_err().field,
            "spec.password"
        );
        assert!(PasswordSource::default().validate("p").is_err());
        let rel = PasswordSource {
            secret_key_ref: None,
            file: Some("pw".into()),
        };
        assert_eq!(rel.validate("p").unwrap_err().field, "p.file");
        let bad_name = PasswordSource {
            secret_key_ref: Some(SecretKeyRef {
                name: "Bad_Name".into(),
                key: "k".into(),
            }),
            file: None,
        };
        assert_eq!(
            bad_name.validate("p").unwrap_err().field,
            "p.secretKeyRef.name"
        );
        let bad_key = PasswordSource {
            secret_key_ref: Some(SecretKeyRef {
                name: "s".into(),
                key: "a/b".into(),
            }),
            file: None,
        };
        assert_eq!(
            bad_key.validate("p").unwrap_err().field,
            "p.secretKeyRef.key"
        );
    }
}

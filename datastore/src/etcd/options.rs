//! Where the etcd cluster is and how to talk to it: `etcd:<endpoints>` plus Calico's
//! `ETCD_*` variables.

use std::path::PathBuf;
use std::time::Duration;

use super::error::EtcdError;

/// The key prefix routerd's records live under unless `ROUTERD_ETCD_PREFIX` says otherwise
/// (Calico's own etcd mode uses `/calico/`; ours must never be mistaken for it).
pub const DEFAULT_PREFIX: &str = "/routerd/v1/";

/// Client certificate and trust for a TLS-secured cluster (Calico's `ETCD_CA_CERT_FILE`,
/// `ETCD_CERT_FILE`, `ETCD_KEY_FILE`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA that signed the members' certificates; the system roots are not used.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate and key, both or neither.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// Tunables of the etcd datastore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// Client URLs of the members (`http://10.0.0.1:2379`); any one that answers will do.
    pub endpoints: Vec<String>,
    /// `Some` for `https://` endpoints.
    pub tls: Option<EtcdTls>,
    /// Every key routerd writes starts with this (ends with `/`).
    pub prefix: String,
    /// Deadline of one request (a read or a compare-and-swap).
    pub request_timeout: Duration,
    /// Deadline of a TCP (and TLS) connection to one member.
    pub connect_timeout: Duration,
    /// HTTP/2 keepalive: a member that stops answering pings for this long is given up and
    /// another one used, also when the connection only carries an idle watch.
    pub keepalive: Duration,
}

impl EtcdOptions {
    /// Options for `endpoints` with the defaults (no TLS, [`DEFAULT_PREFIX`]).
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            tls: None,
            prefix: DEFAULT_PREFIX.to_string(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            keepalive: Duration::from_secs(2),
        }
    }

    /// The options of a datastore address, `etcd:<endpoint>[,<endpoint>…]`, or `etcd:` with
    /// the endpoints in `ETCD_ENDPOINTS`; TLS files from `ETCD_CA_CERT_FILE`,
    /// `ETCD_CERT_FILE` and `ETCD_KEY_FILE`, the prefix from `ROUTERD_ETCD_PREFIX`.
    /// `None` when the address is not an etcd one.
    pub fn from_address(address: &str) -> Option<Result<Self, EtcdError>> {
        let list = address.strip_prefix("etcd:")?;
        Some(Self::from_parts(list, &|name| std::env::var(name).ok()))
    }

    /// [`Self::from_address`] with the environment given as a lookup (tests).
    pub fn from_parts(list: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, EtcdError> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let (setting, list) = if list.trim().is_empty() {
            ("ETCD_ENDPOINTS", env("ETCD_ENDPOINTS").unwrap_or_default())
        } else {
            ("the datastore address", list.to_string())
        };
        let endpoints = parse_endpoints(setting, &list)?;
        let file = |name: &'static str| env(name).map(PathBuf::from);
        let tls = EtcdTls {
            ca_cert: file("ETCD_CA_CERT_FILE"),
            client_cert: file("ETCD_CERT_FILE"),
            client_key: file("ETCD_KEY_FILE"),
        };
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            let missing = if tls.client_cert.is_some() {
                "ETCD_KEY_FILE"
            } else {
                "ETCD_CERT_FILE"
            };
            return Err(EtcdError::Config {
                setting: missing,
                reason: "a client certificate needs both ETCD_CERT_FILE and ETCD_KEY_FILE".into(),
            });
        }
        let https = endpoints
            .iter()
            .filter(|e| e.starts_with("https://"))
            .count();
        if https != 0 && https != endpoints.len() {
            return Err(EtcdError::Config {
                setting,
                reason: "mixes http:// and https:// endpoints".into(),
            });
        }
        let uses_tls = tls != EtcdTls::default();
        if uses_tls && https == 0 {
            return Err(EtcdError::Config {
                setting,
                reason: "ETCD_CA_CERT_FILE/ETCD_CERT_FILE/ETCD_KEY_FILE are set, so the \
                         endpoints must be https://"
                    .into(),
            });
        }
        let mut options = Self::new(endpoints);
        options.tls = (https > 0).then_some(tls);
        if let Some(prefix) = env("ROUTERD_ETCD_PREFIX") {
            options.prefix = parse_prefix(&prefix)?;
        }
        Ok(options)
    }

    /// The endpoints as one line, for messages.
    pub fn endpoint_list(&self) -> String {
        self.endpoints.join(",")
    }
}

fn parse_endpoints(setting: &'static str, list: &str) -> Result<Vec<String>, EtcdError> {
    let endpoints: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect();
    if endpoints.is_empty() {
        return Err(EtcdError::Config {
            setting,
            reason: "no endpoint given (etcd:http://<host>:2379[,…] or ETCD_ENDPOINTS)".into(),
        });
    }
    for e in &endpoints {
        let rest = e
            .strip_prefix("http://")
            .or_else(|| e.strip_prefix("https://"))
            .ok_or_else(|| EtcdError::Config {
                setting,
                reason: format!("endpoint {e:?} must start with http:// or https://"),
            })?;
        let host_port = rest.trim_end_matches('/');
        if host_port.contains('/') || !host_port.contains(':') {
            return Err(EtcdError::Config {
                setting,
                reason: format!("endpoint {e:?} must be scheme://host:port"),
            });
        }
    }
    Ok(endpoints)
}

fn parse_prefix(prefix: &str) -> Result<String, EtcdError> {
    let p = prefix.trim();
    if !p.starts_with('/') || p.chars().any(char::is_control) {
        return Err(EtcdError::Config {
            setting: "ROUTERD_ETCD_PREFIX",
            reason: format!("{p:?} must be a key path starting with '/'"),
        });
    }
    Ok(if p.ends_with('/') {
        p.to_string()
    } else {
        format!("{p}/")
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a failed step is a failed test
mod tests {
    use super::*;

    /// `(address list, environment, text the error must contain)`.
    type BadCase<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn endpoints_come_from_the_address_or_etcd_endpoints() {
        let o = EtcdOptions::from_parts("http://10.0.0.1:2379, http://10.0.0.2:2379", &env(&[]))
            .unwrap();
        assert_eq!(
            o.endpoints,
            ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(o.prefix, DEFAULT_PREFIX);
        assert_eq!(o.tls, None);
        let o = EtcdOptions::from_parts(
            "",
            &env(&[
                ("ETCD_ENDPOINTS", "http://a:2379"),
                ("ROUTERD_ETCD_PREFIX", "/x"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (o.endpoints[0].as_str(), o.prefix.as_str()),
            ("http://a:2379", "/x/")
        );
    }

    #[test]
    fn bad_settings_name_the_setting() {
        let cases: &[BadCase] = &[
            ("", &[], "ETCD_ENDPOINTS"),
            ("10.0.0.1:2379", &[], "http://"),
            ("http://a", &[], "scheme://host:port"),
            ("http://a:1,https://b:1", &[], "mixes"),
            (
                "http://a:1",
                &[("ETCD_CA_CERT_FILE", "/ca.pem")],
                "https://",
            ),
            (
                "https://a:1",
                &[("ETCD_CERT_FILE", "/c.pem")],
                "ETCD_KEY_FILE",
            ),
            (
                "http://a:1",
                &[("ROUTERD_ETCD_PREFIX", "routerd")],
                "ROUTERD_ETCD_PREFIX",
            ),
        ];
        for (list, vars, needle) in cases {
            let e = EtcdOptions::from_parts(list, &env(vars))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{list:?} {vars:?}: {e}");
        }
    }

    #[test]
    fn https_endpoints_carry_the_tls_files() {
        let o = EtcdOptions::from_parts(
            "https://a:2379",
            &env(&[
                ("ETCD_CA_CERT_FILE", "/ca.pem"),
                ("ETCD_CERT_FILE", "/c.pem"),
                ("ETCD_KEY_FILE", "/k.pem"),
            ]),
        )
        .unwrap();
        let tls = o.tls.unwrap();
        assert_eq!(tls.ca_cert.unwrap(), PathBuf::from("/ca.pem"));
        assert_eq!(tls.client_key.unwrap(), PathBuf::from("/k.pem"));
    }
}

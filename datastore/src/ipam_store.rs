//! IPAM records (blocks, affinities, handles) kept in a [`Datastore`].
//!
//! [`DatastoreIpam`] implements the allocator's compare-and-swap boundary
//! ([`ipam::IpamStore`]) over the agent's generic datastore, so the same directory (or API
//! server) that holds the operator's resources also holds address assignments, and every
//! routerd sharing it sees one consistent IPAM state.
//!
//! Records are stored as JSON under the kinds Calico's Kubernetes datastore uses for its CRDs:
//! [`BLOCK_KIND`] (`IPAMBlock`), [`AFFINITY_KIND`] (`BlockAffinity`) and [`HANDLE_KIND`]
//! (`IPAMHandle`). Record names are Calico's: a block `10.65.0.0/24` is `10-65-0-0-24`, an
//! affinity `<node>-10-65-0-0-24`, a handle its id. The value is the record itself (the
//! allocator's serde shape: `cidr`, `affinity`, `allocations`, `unallocated`, `attributes`
//! for a block), so `routectl` and tests can read it without the allocator.
//!
//! Uniqueness of addresses rests on the mapping of outcomes, which is why it is spelled out
//! here rather than folded into a generic "error":
//!
//! | datastore answer                      | [`StoreError`]  | allocator reaction          |
//! |---------------------------------------|-----------------|-----------------------------|
//! | `AlreadyExists` on create             | `Conflict`      | another node won the block  |
//! | `Conflict` on update/delete           | `Conflict`      | re-read, retry              |
//! | `NotFound` on update/delete           | `NotFound`      | re-read, retry              |
//! | `NotFound` on get                     | `Ok(None)`      |                             |
//! | anything else (I/O, corrupt, names)   | `Backend`       | operation fails             |
//!
//! Names the datastore would refuse (a handle id with `/`, `..`, a leading `.`) are
//! percent-encoded (`%` itself too, so the encoding is reversible and cannot collide with a
//! name that needed none); Calico's names never need it.

use std::sync::Arc;

use ipam::{
    AllocationBlock, BlockAffinity, IpamHandle, IpamStore, Record, RecordKind, Revision,
    StoreError, Versioned,
};
use ipnet::IpNet;

use crate::{Datastore, DatastoreError};

/// Datastore kind of [`AllocationBlock`] records (Calico CRD `IPAMBlock`).
pub const BLOCK_KIND: &str = "IPAMBlock";
/// Datastore kind of [`BlockAffinity`] records (Calico CRD `BlockAffinity`).
pub const AFFINITY_KIND: &str = "BlockAffinity";
/// Datastore kind of [`IpamHandle`] records (Calico CRD `IPAMHandle`).
pub const HANDLE_KIND: &str = "IPAMHandle";

/// Datastore kind of the cluster's IPAM settings (Calico CRD `IPAMConfig`), one record named
/// [`IPAM_CONFIG_NAME`].
pub const IPAM_CONFIG_KIND: &str = "IPAMConfig";
/// The name of the one IPAM settings record (Calico's `default`).
pub const IPAM_CONFIG_NAME: &str = "default";

/// The cluster's IPAM settings, as Calico's `IPAMConfig` spec (`calicoctl ipam configure`).
/// Only `strictAffinity` is a setting routerd's allocator has; the record keeps Calico's
/// shape so that its other fields can be added without a migration. Calico's other fields
/// (`maxBlocksPerHost`, `ipCooldownSeconds`, …, which Calico omits at their defaults) are
/// refused by name rather than ignored, so a setting taken over from Calico is never
/// silently dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpamConfig {
    /// Never borrow addresses from other nodes' blocks.
    pub strict_affinity: bool,
    /// Calico's default `true`: nodes claim blocks as they need them (the only mode here).
    pub auto_allocate_blocks: bool,
}

impl Default for IpamConfig {
    fn default() -> Self {
        Self {
            strict_affinity: false,
            auto_allocate_blocks: true,
        }
    }
}

impl IpamConfig {
    /// The allocator's configuration under these settings.
    pub fn allocator_config(&self) -> ipam::AllocatorConfig {
        ipam::AllocatorConfig {
            strict_affinity: self.strict_affinity,
            ..ipam::AllocatorConfig::default()
        }
    }
}

/// The stored settings with their version, or the defaults (version `None`) when none are.
pub fn read_ipam_config(
    ds: &dyn Datastore,
) -> Result<(IpamConfig, Option<crate::Revision>), DatastoreError> {
    match ds.get(IPAM_CONFIG_KIND, IPAM_CONFIG_NAME) {
        Ok(record) => {
            let corrupt = |reason: String| DatastoreError::Corrupt {
                path: format!("{IPAM_CONFIG_KIND}/{IPAM_CONFIG_NAME}").into(),
                reason,
            };
            let config: IpamConfig =
                serde_json::from_value(record.value).map_err(|e| corrupt(e.to_string()))?;
            // A setting written by hand that the allocator would silently ignore is refused.
            if !config.auto_allocate_blocks {
                return Err(corrupt(
                    "autoAllocateBlocks: false is not supported: routerd's nodes always \
                     claim blocks as they need them"
                        .into(),
                ));
            }
            Ok((config, Some(record.version)))
        }
        Err(DatastoreError::NotFound { .. }) => Ok((IpamConfig::default(), None)),
        Err(e) => Err(e),
    }
}

/// Writes the settings, compare-and-swap on the version [`read_ipam_config`] gave.
pub fn write_ipam_config(
    ds: &dyn Datastore,
    config: &IpamConfig,
    version: Option<crate::Revision>,
) -> Result<crate::Revision, DatastoreError> {
    let value = serde_json::to_value(config).map_err(|source| DatastoreError::Encode {
        kind: IPAM_CONFIG_KIND.into(),
        name: IPAM_CONFIG_NAME.into(),
        source,
    })?;
    match version {
        Some(v) => ds.update(IPAM_CONFIG_KIND, IPAM_CONFIG_NAME, value, v),
        None => ds.create(IPAM_CONFIG_KIND, IPAM_CONFIG_NAME, value),
    }
}

/// The datastore kind holding records of `kind`.
pub fn datastore_kind(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Block => BLOCK_KIND,
        RecordKind::Affinity => AFFINITY_KIND,
        RecordKind::Handle => HANDLE_KIND,
    }
}

/// [`IpamStore`] over a shared [`Datastore`]: `Allocator::new(DatastoreIpam::new(ds), ..)`.
#[derive(Clone)]
pub struct DatastoreIpam {
    datastore: Arc<dyn Datastore>,
}

impl std::fmt::Debug for DatastoreIpam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatastoreIpam").finish_non_exhaustive()
    }
}

impl DatastoreIpam {
    /// IPAM records in `datastore`.
    pub fn new(datastore: Arc<dyn Datastore>) -> Self {
        DatastoreIpam { datastore }
    }

    /// The underlying datastore.
    pub fn datastore(&self) -> &Arc<dyn Datastore> {
        &self.datastore
    }
}

/// The datastore name of an IPAM record name: unchanged unless it contains something a
/// datastore name may not (see [`crate`]'s name rules), in which case those
/// characters, and every `%`, are percent-encoded.
pub fn encode_name(name: &str) -> String {
    let needs = name.is_empty()
        || name.contains(['/', '\\', '%'])
        || name.contains("..")
        || name.starts_with('.')
        || name.chars().any(char::is_control);
    if !needs {
        return name.to_string();
    }
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        let dot_risky = c == '.'
            && (i == 0
                || chars.get(i + 1) == Some(&'.')
                || (i > 0 && chars.get(i - 1) == Some(&'.')));
        if c == '/' || c == '\\' || c == '%' || c.is_control() || dot_risky {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    // The empty name stays empty: no encoding is accepted, the datastore reports it.
    out
}

fn backend(kind: RecordKind, name: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("{}/{name}: {e}", datastore_kind(kind)))
}

/// Maps a datastore failure of a write to the allocator's vocabulary (see the module table).
fn write_error(kind: RecordKind, name: &str, e: DatastoreError) -> StoreError {
    match e {
        DatastoreError::AlreadyExists { .. } | DatastoreError::Conflict { .. } => {
            StoreError::Conflict {
                kind,
                name: name.to_string(),
            }
        }
        DatastoreError::NotFound { .. } => StoreError::NotFound {
            kind,
            name: name.to_string(),
        },
        other => StoreError::Backend(other.to_string()),
    }
}

fn revision(version: crate::Revision) -> Revision {
    Revision(version.to_string())
}

/// The datastore version a [`Revision`] stands for. A revision that is no number was not
/// issued by this store; it can match nothing, which the caller reports as a conflict.
fn expected_version(r: &Revision) -> Option<crate::Revision> {
    r.0.parse().ok()
}

fn encode_value(record: &Record) -> Result<serde_json::Value, serde_json::Error> {
    match record {
        Record::Block(b) => serde_json::to_value(b),
        Record::Affinity(a) => serde_json::to_value(a),
        Record::Handle(h) => serde_json::to_value(h),
    }
}

fn decode(kind: RecordKind, rec: crate::Record) -> Result<Versioned<Record>, StoreError> {
    let value = match kind {
        RecordKind::Block => {
            serde_json::from_value::<AllocationBlock>(rec.value).map(Record::Block)
        }
        RecordKind::Affinity => {
            serde_json::from_value::<BlockAffinity>(rec.value).map(Record::Affinity)
        }
        RecordKind::Handle => serde_json::from_value::<IpamHandle>(rec.value).map(Record::Handle),
    }
    .map_err(|e| backend(kind, &rec.name, format!("undecodable record: {e}")))?;
    Ok(Versioned {
        revision: revision(rec.version),
        value,
    })
}

impl IpamStore for DatastoreIpam {
    fn get(&self, kind: RecordKind, name: &str) -> Result<Option<Versioned<Record>>, StoreError> {
        match self.datastore.get(datastore_kind(kind), &encode_name(name)) {
            Ok(rec) => decode(kind, rec).map(Some),
            Err(DatastoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(backend(kind, name, e)),
        }
    }

    fn list(&self, kind: RecordKind) -> Result<Vec<Versioned<Record>>, StoreError> {
        let listing = self
            .datastore
            .list(datastore_kind(kind))
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        listing
            .records
            .into_iter()
            .map(|rec| decode(kind, rec))
            .collect()
    }

    fn create(&self, record: Record) -> Result<Revision, StoreError> {
        let (kind, name) = (record.kind(), record.name());
        let value = encode_value(&record).map_err(|e| backend(kind, &name, e))?;
        self.datastore
            .create(datastore_kind(kind), &encode_name(&name), value)
            .map(revision)
            .map_err(|e| write_error(kind, &name, e))
    }

    fn update(&self, record: Record, expected: &Revision) -> Result<Revision, StoreError> {
        let (kind, name) = (record.kind(), record.name());
        let Some(expected) = expected_version(expected) else {
            return Err(StoreError::Conflict { kind, name });
        };
        let value = encode_value(&record).map_err(|e| backend(kind, &name, e))?;
        self.datastore
            .update(datastore_kind(kind), &encode_name(&name), value, expected)
            .map(revision)
            .map_err(|e| write_error(kind, &name, e))
    }

    fn delete(&self, kind: RecordKind, name: &str, expected: &Revision) -> Result<(), StoreError> {
        let Some(expected) = expected_version(expected) else {
            return Err(StoreError::Conflict {
                kind,
                name: name.to_string(),
            });
        };
        self.datastore
            .delete(datastore_kind(kind), &encode_name(name), Some(expected))
            .map(|_| ())
            .map_err(|e| write_error(kind, name, e))
    }

    /// Reads only each block's `cidr` field instead of decoding whole blocks (claims call this
    /// for every block they consider).
    fn list_block_cidrs(&self) -> Result<Vec<IpNet>, StoreError> {
        let listing = self
            .datastore
            .list(BLOCK_KIND)
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        listing
            .records
            .iter()
            .map(|rec| {
                rec.value
                    .get("cidr")
                    .and_then(serde_json::Value::as_str)
                    .and_then(|s| s.parse::<IpNet>().ok())
                    .ok_or_else(|| backend(RecordKind::Block, &rec.name, "missing or invalid cidr"))
            })
            .collect()
    }

    /// Decodes only the affinities whose record name starts with `<node>-` (Calico's naming),
    /// then keeps those whose `node` really is `node` (another node's name may merely start
    /// with `<node>-`).
    fn list_node_affinities(&self, node: &str) -> Result<Vec<Versioned<Record>>, StoreError> {
        let listing = self
            .datastore
            .list(AFFINITY_KIND)
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let prefix = format!("{}-", encode_name(node));
        let mut out = Vec::new();
        for rec in listing.records {
            if !rec.name.starts_with(&prefix) {
                continue;
            }
            let v = decode(RecordKind::Affinity, rec)?;
            if matches!(&v.value, Record::Affinity(a) if a.node == node) {
                out.push(v);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn calicos_ipam_settings_routerd_lacks_are_refused_by_name() {
        let ds = crate::MemoryDatastore::new();
        let calico = serde_json::json!({"strictAffinity": true, "autoAllocateBlocks": true});
        ds.create(IPAM_CONFIG_KIND, IPAM_CONFIG_NAME, calico)
            .unwrap();
        assert!(read_ipam_config(&ds).unwrap().0.strict_affinity);
        let more = serde_json::json!({"strictAffinity": false, "autoAllocateBlocks": true,
                                      "maxBlocksPerHost": 4});
        let version = ds.get(IPAM_CONFIG_KIND, IPAM_CONFIG_NAME).unwrap().version;
        ds.update(IPAM_CONFIG_KIND, IPAM_CONFIG_NAME, more, version)
            .unwrap();
        let e = read_ipam_config(&ds).unwrap_err();
        assert!(e.to_string().contains("maxBlocksPerHost"), "{e}");
    }

    #[test]
    fn calico_names_are_kept() {
        for n in [
            "10-65-0-0-24",
            "node-1-10-65-0-0-24",
            "k8s-pod-network.0123abcd",
            "ipip-tunnel-addr-node-1",
            "fd00---122",
        ] {
            assert_eq!(encode_name(n), n);
        }
    }

    #[test]
    fn risky_names_are_encoded_reversibly() {
        assert_eq!(encode_name("a/b"), "a%2Fb");
        assert_eq!(encode_name(".hidden"), "%2Ehidden");
        assert_eq!(encode_name("a..b"), "a%2E%2Eb");
        assert_eq!(encode_name("50%"), "50%25");
        // The encoding of a risky name never equals another name left unchanged.
        assert_ne!(encode_name("a/b"), encode_name("a%2Fb"));
        for n in ["a/b", ".x", "a..b", "%", "x\ny", "..", "."] {
            let e = encode_name(n);
            assert!(crate::validate_name("name", &e).is_ok(), "{n:?} -> {e:?}");
        }
    }
}

//! The snapshot file format: what one prefix's file holds, how it is encoded, checked and
//! named. Pure functions of bytes and names; writing and reading files is the parent's.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::config::raw::{RawValue, RawValues};

/// The `format` of every snapshot file: a file without it is not one of ours.
pub(super) const FORMAT: &str = "coord-live-snapshot";
/// The layout this code writes and reads: 2 records the cluster (1 did not).
pub(super) const VERSION: u32 = 2;

/// A prefix's values as read back from its file.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DiskSnapshot {
    /// The store revision the values were current at when saved.
    pub revision: i64,
    /// Full key → raw value.
    pub values: RawValues,
    /// The etcd cluster ID the values were read from.
    pub cluster_id: u64,
}

/// Why a snapshot file was not used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unusable {
    #[error("not JSON, or cut short: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a coord snapshot (format `{0}`)")]
    Format(String),
    #[error("snapshot format version {0}, this coord reads {VERSION}")]
    Version(u32),
    #[error("holds the prefix `{found}`, not `{expected}`")]
    Prefix { expected: String, found: String },
    #[error("holds the snapshot of cluster key `{found}`, not `{expected}`")]
    Cluster { expected: String, found: String },
    #[error(
        "saved from etcd cluster {file:x}, but the endpoints answer for cluster {live:x}: \
         another cluster's values (an etcd rebuilt behind the same endpoints, or two clusters \
         under one cluster_name); replaced at the next save"
    )]
    OtherCluster { file: u64, live: u64 },
    #[error("the cluster ID `{0}` is not 16 hex digits")]
    ClusterId(String),
    #[error("holds `{0}`, which is not under its prefix")]
    ForeignKey(String),
    #[error("the value of `{key}` is not base64: {source}")]
    Value {
        key: String,
        source: base64::DecodeError,
    },
    #[error("checksum mismatch: the file is corrupt")]
    Checksum,
}

/// The file as stored.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    format: String,
    version: u32,
    cluster: String,
    cluster_id: String,
    prefix: String,
    revision: i64,
    checksum: String,
    values: BTreeMap<String, String>,
}

/// Whose snapshot a file is: the cluster key it is found by, and the etcd cluster ID its
/// values were read from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SnapshotOrigin<'a> {
    pub cluster: &'a str,
    pub cluster_id: u64,
}

/// The file's bytes for `prefix`'s `values` at `revision`, read from `origin`.
pub(crate) fn encode(
    origin: SnapshotOrigin<'_>,
    prefix: &str,
    revision: i64,
    values: &RawValues,
) -> Vec<u8> {
    let base64 = base64::engine::general_purpose::STANDARD;
    let file = File {
        format: FORMAT.to_owned(),
        version: VERSION,
        cluster: origin.cluster.to_owned(),
        cluster_id: format!("{:016x}", origin.cluster_id),
        prefix: prefix.to_owned(),
        revision,
        checksum: format!(
            "{:016x}",
            checksum(
                origin,
                prefix,
                revision,
                values.iter().map(|(k, v)| (k, &v[..]))
            )
        ),
        values: values
            .iter()
            .map(|(key, value)| (key.clone(), base64.encode(&value[..])))
            .collect(),
    };
    // A struct of strings, integers and a string map always serializes.
    serde_json::to_vec(&file).unwrap_or_default()
}

/// Reads back a file written by [`encode`] for `prefix` under the cluster key `cluster`;
/// rejects anything else, and a file saved from another cluster than `live` (the cluster etcd
/// answers for, if known).
pub(crate) fn decode(
    cluster: &str,
    live: Option<u64>,
    prefix: &str,
    bytes: &[u8],
) -> Result<DiskSnapshot, Unusable> {
    // The marker first, from a loose parse: a file of another program says so rather than
    // "missing field".
    #[derive(Deserialize)]
    struct Marker {
        format: Option<String>,
        version: Option<u32>,
    }
    let marker: Marker = serde_json::from_slice(bytes)?;
    match marker.format.as_deref() {
        Some(FORMAT) => {}
        other => return Err(Unusable::Format(other.unwrap_or("none").to_owned())),
    }
    if let Some(version) = marker.version.filter(|v| *v != VERSION) {
        return Err(Unusable::Version(version));
    }
    let file: File = serde_json::from_slice(bytes)?;
    if file.cluster != cluster {
        return Err(Unusable::Cluster {
            expected: cluster.to_owned(),
            found: file.cluster,
        });
    }
    if file.prefix != prefix {
        return Err(Unusable::Prefix {
            expected: prefix.to_owned(),
            found: file.prefix,
        });
    }
    let cluster_id = match u64::from_str_radix(&file.cluster_id, 16) {
        Ok(id) if file.cluster_id.len() == 16 => id,
        _ => return Err(Unusable::ClusterId(file.cluster_id)),
    };
    let under = format!("{prefix}/");
    let base64 = base64::engine::general_purpose::STANDARD;
    let mut values = BTreeMap::new();
    for (key, text) in file.values {
        if !key.starts_with(&under) {
            return Err(Unusable::ForeignKey(key));
        }
        let value = base64
            .decode(text.as_bytes())
            .map_err(|source| Unusable::Value {
                key: key.clone(),
                source,
            })?;
        values.insert(key, value);
    }
    let origin = SnapshotOrigin {
        cluster,
        cluster_id,
    };
    let sum = checksum(
        origin,
        prefix,
        file.revision,
        values.iter().map(|(k, v)| (k, &v[..])),
    );
    if format!("{sum:016x}") != file.checksum {
        return Err(Unusable::Checksum);
    }
    // After the checksum: a corrupt ID is corruption, not another cluster.
    if let Some(live) = live.filter(|live| *live != cluster_id) {
        return Err(Unusable::OtherCluster {
            file: cluster_id,
            live,
        });
    }
    Ok(DiskSnapshot {
        cluster_id,
        revision: file.revision,
        values: values
            .into_iter()
            // The file keeps no mod revisions: 0 says unknown until the store is read.
            .map(|(key, value)| (key, RawValue::new(value, 0)))
            .collect(),
    })
}

/// FNV-1a, 64 bits: stable across builds and platforms (std's hasher is not), and enough to
/// catch a flipped byte or a value cut short. Every field is length-prefixed, so moving
/// bytes from one field to the next changes the sum.
pub(super) fn checksum<'a>(
    origin: SnapshotOrigin<'_>,
    prefix: &str,
    revision: i64,
    values: impl Iterator<Item = (&'a String, &'a [u8])>,
) -> u64 {
    let mut hash = Fnv::default();
    hash.field(origin.cluster.as_bytes());
    hash.field(&origin.cluster_id.to_le_bytes());
    hash.field(prefix.as_bytes());
    hash.field(&revision.to_le_bytes());
    for (key, value) in values {
        hash.field(key.as_bytes());
        hash.field(value);
    }
    hash.0
}

pub(super) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn bytes(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn field(&mut self, bytes: &[u8]) {
        self.bytes(&(bytes.len() as u64).to_le_bytes());
        self.bytes(bytes);
    }
}

/// The cluster key snapshot files are found by (see [Which cluster](self#which-cluster)):
/// `name {cluster_name}` if one is configured, else `endpoints {e1},{e2}` with the endpoints
/// trimmed, lower-cased, without a trailing `/`, sorted and deduplicated.
pub(crate) fn cluster_key(cluster_name: Option<&str>, endpoints: &[String]) -> String {
    if let Some(name) = cluster_name {
        return format!("name {}", name.trim());
    }
    let mut endpoints: Vec<String> = endpoints
        .iter()
        .map(|e| e.trim().trim_end_matches('/').to_lowercase())
        .collect();
    endpoints.sort();
    endpoints.dedup();
    format!("endpoints {}", endpoints.join(","))
}

/// The file name of `prefix`'s snapshot under the cluster key `cluster`: the prefix's
/// letters, digits, `-`, `_` and `.` (others become `_`, at most 48 kept) for whoever lists
/// the directory, then a hash of the cluster key and one of the whole prefix (32 hex digits),
/// so two prefixes or clusters never share a name in practice (and if they did, the cluster
/// key and prefix inside tell).
pub(crate) fn file_name(cluster: &str, prefix: &str) -> String {
    let readable: String = prefix
        .trim_start_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    let mut of_cluster = Fnv::default();
    of_cluster.bytes(cluster.as_bytes());
    let mut of_prefix = Fnv::default();
    of_prefix.bytes(prefix.as_bytes());
    format!("{readable}-{:016x}{:016x}.json", of_cluster.0, of_prefix.0)
}

/// True for the name of a version 1 file: one 16-digit hash after the last `-`, where
/// version 2 names have 32.
pub(super) fn is_v1_name(name: &str) -> bool {
    !name.starts_with('.')
        && name.strip_suffix(".json").is_some_and(|stem| {
            stem.rsplit_once('-').is_some_and(|(_, hash)| {
                hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit())
            })
        })
}

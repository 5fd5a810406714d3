//! State for kdeploy: the model of what has been deployed, the versioned file format with its
//! upgrade path, the [`StateStore`] abstraction and the local file store with locking, atomic
//! writes and backups.
//!
//! This crate deliberately knows nothing about HCL or providers: resources are stored as plain
//! JSON attributes together with the attribute paths that are sensitive.
//!
//! Sensitive values are stored in the state (later runs need them), so every `Debug`/`Display`
//! implementation in this crate hides attribute and output values.
#![deny(clippy::arithmetic_side_effects)]

#[cfg(any(feature = "s3", feature = "kubernetes"))]
mod bridge;
pub mod crypt;
pub mod error;
pub mod file;
pub mod guard;
pub mod journal;
#[cfg(feature = "kubernetes")]
pub mod kube;
pub mod local;
pub mod lock;
pub mod model;
pub mod partition;
#[cfg(feature = "s3")]
pub mod s3;
pub mod store;

pub use crypt::{CryptStore, StateKey};
pub use error::StateError;
pub use file::{decode, encode};
pub use guard::{Locked, PushError, push};
pub use journal::{Record, Recorder};
pub use local::LocalStore;
pub use lock::LockInfo;
pub use model::{OutputState, PendingKind, PendingOp, PendingTarget, ResourceState, STATE_VERSION, State, address_matcher, address_matches};
pub use partition::{DEFAULT_PARTITION, PartitionedStore, partition_name, partition_of, resource_partition};
pub use store::{Append, StateStore};

/// The backends this build has: `local`, and `s3`/`kubernetes` when their features are on.
pub fn backend_kinds() -> Vec<&'static str> {
    let mut kinds = vec!["local"];
    if cfg!(feature = "s3") {
        kinds.push("s3");
    }
    if cfg!(feature = "kubernetes") {
        kinds.push("kubernetes");
    }
    kinds
}

/// Opens the store of a backend from its configuration (every value as a string). `base_dir`
/// anchors relative paths (the stack directory). The error says what is wrong with the
/// configuration, or that this build lacks the backend.
pub fn open_backend(kind: &str, config: &std::collections::BTreeMap<String, String>, base_dir: &std::path::Path) -> Result<Box<dyn StateStore>, String> {
    match kind {
        "local" => {
            if let Some(k) = config.keys().find(|k| k.as_str() != "path") {
                return Err(format!("backend \"local\" has no setting {k:?}; it takes path"));
            }
            let path = match config.get("path").filter(|p| !p.is_empty()) {
                Some(p) => base_dir.join(p),
                None => base_dir.join(".kdeploy").join("state.json"),
            };
            Ok(Box::new(LocalStore::new(path)))
        }
        #[cfg(feature = "s3")]
        "s3" => {
            let cfg = s3::S3Config::from_map(config)?;
            Ok(Box::new(s3::S3Store::new(cfg).map_err(|e| e.to_string())?))
        }
        #[cfg(feature = "kubernetes")]
        "kubernetes" => {
            let mut cfg = kube::KubeConfig::from_map(config)?;
            if let Some(p) = &cfg.kubeconfig {
                cfg.kubeconfig = Some(base_dir.join(p).display().to_string());
            }
            Ok(Box::new(kube::KubeStore::new(cfg).map_err(|e| e.to_string())?))
        }
        other => Err(format!("the {other:?} backend is not available in this build; it has: {}", backend_kinds().join(", "))),
    }
}

/// The partitions stored next to the unpartitioned state of a backend (see
/// [`partition::with_partition`] and [`partition::partition_suffix`]), found by listing: the
/// local backend's directory, the S3 objects under the key's stem, the Kubernetes state Secrets
/// of the namespace. The error says what could not be listed.
pub fn stored_partitions(kind: &str, config: &std::collections::BTreeMap<String, String>, base_dir: &std::path::Path) -> Result<Vec<String>, String> {
    match kind {
        "local" => local_partitions(config, base_dir),
        #[cfg(feature = "s3")]
        "s3" => s3::S3Store::new(s3::S3Config::from_map(config)?).and_then(|s| s.stored_partitions()).map_err(|e| e.to_string()),
        #[cfg(feature = "kubernetes")]
        "kubernetes" => {
            let mut cfg = kube::KubeConfig::from_map(config)?;
            if let Some(p) = &cfg.kubeconfig {
                cfg.kubeconfig = Some(base_dir.join(p).display().to_string());
            }
            kube::KubeStore::new(cfg).and_then(|s| s.stored_partitions()).map_err(|e| e.to_string())
        }
        _ => Ok(Vec::new()),
    }
}

/// The local backend's partitions: `state.NAME.json` files next to `state.json`.
fn local_partitions(config: &std::collections::BTreeMap<String, String>, base_dir: &std::path::Path) -> Result<Vec<String>, String> {
    let path = base_dir.join(config.get("path").filter(|p| !p.is_empty()).map_or(".kdeploy/state.json", String::as_str));
    let (Some(parent), Some(file)) = (path.parent(), path.file_name().and_then(|f| f.to_str())) else { return Ok(Vec::new()) };
    let entries = match std::fs::read_dir(parent) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot list {} to find the stored partitions: {e}", parent.display())),
    };
    Ok(entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter_map(|f| partition::partition_in(file, &f)).collect())
}

/// The current time as an RFC 3339 timestamp in UTC, e.g. `2024-05-01T12:00:00Z`.
pub(crate) fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        // Formatting only fails for years outside 0..=9999, which the system clock never yields;
        // fall back to the Unix timestamp rather than failing an operation over a timestamp.
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

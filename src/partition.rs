//! State partitions of a stack with `stack { partition = "cluster" }`: which partitions it has,
//! where each one's state lives on its backend, and the store that reads and writes them
//! ([`kdeploy_state::PartitionedStore`]).

use std::collections::BTreeMap;
use std::path::Path;

use kdeploy_provider::Kind;
use kdeploy_state::{DEFAULT_PARTITION, PartitionedStore, State, StateStore, partition_name, resource_partition};

use crate::addr::Address;
use crate::diag::Diagnostic;
use crate::engine::{BackendOptions, Loaded, open_store};

/// The stack's partitions by name: one per cluster (with its address) and `default` (none).
/// Two clusters whose names come out the same, or a cluster named `default`, are an error.
pub fn partitions(loaded: &Loaded) -> Result<BTreeMap<String, Option<Address>>, Diagnostic> {
    let mut out: BTreeMap<String, Option<Address>> = BTreeMap::new();
    out.insert(DEFAULT_PARTITION.to_string(), None);
    for cluster in loaded.expanded.clusters() {
        let name = partition_name(&cluster);
        if let Some(prev) = out.get(&name) {
            let other = prev.as_ref().map_or_else(|| "the partition of components bound to no cluster".to_string(), |a| a.to_string());
            let span = loaded.expanded.decl(&loaded.stack, &cluster).map(|d| d.span.clone());
            return Err(Diagnostic::error("Duplicate partition name", format!("{cluster} gets the state partition name {name:?}, which is already {other}."))
                .at(span)
                .hint("rename the cluster (or its key) so that each cluster has its own partition name"));
        }
        out.insert(name, Some(cluster));
    }
    Ok(out)
}

/// The partition of a planned component: a cluster's own, else its cluster's, else `default`.
pub fn component_partition(addr: &Address, cluster: Option<&Address>) -> String {
    if addr.kind == Kind::Cluster {
        return partition_name(addr);
    }
    cluster.map_or_else(|| DEFAULT_PARTITION.to_string(), partition_name)
}

/// Only the resources and pending operations of partition `name` (what a run of that partition
/// refreshes, plans, deletes and checks).
pub fn restrict(state: &State, name: &str) -> State {
    let mut own = state.clone();
    own.resources.retain(|r| resource_partition(r) == name);
    let owned = |a: &Address| state.resource(a).map(resource_partition);
    own.pending.retain(|p| {
        let target = p.target.as_ref().and_then(|t| kdeploy_state::partition_of(&p.address, &t.attributes));
        target.or_else(|| owned(&p.address)).unwrap_or_else(|| DEFAULT_PARTITION.to_string()) == name
    });
    own
}

/// A file or key name with the partition before its extension: `state.json` → `state.NAME.json`.
fn with_partition(path: &str, name: &str) -> String {
    match path.rsplit_once('.') {
        Some((stem, ext)) if !ext.contains('/') && !stem.is_empty() && !stem.ends_with('/') => format!("{stem}.{name}.{ext}"),
        _ => format!("{path}.{name}"),
    }
}

/// The Kubernetes `secret_suffix` of a partition: `SUFFIX-NAME`, kept within the backend's 40
/// characters by 8 hex digits of its SHA-256 when longer.
fn kube_suffix(suffix: &str, name: &str) -> String {
    use sha2::{Digest, Sha256};
    let full = format!("{suffix}-{name}");
    if full.len() <= 40 {
        return full;
    }
    let hash = format!("{:x}", Sha256::digest(full.as_bytes()));
    let head: String = full.chars().take(31).collect();
    format!("{}-{}", head.trim_end_matches('-'), &hash[..8])
}

/// The backend settings of partition `name`: the local file and the S3 key get `.NAME` before
/// their extension, the Kubernetes Secrets and Lease the suffix `-NAME`.
pub fn partition_config(kind: &str, config: &BTreeMap<String, String>, name: &str) -> BTreeMap<String, String> {
    let mut out = config.clone();
    match kind {
        "local" => {
            let path = config.get("path").filter(|p| !p.is_empty()).cloned().unwrap_or_else(|| ".kdeploy/state.json".to_string());
            out.insert("path".into(), with_partition(&path, name));
        }
        "s3" => {
            if let Some(key) = config.get("key") {
                out.insert("key".into(), with_partition(key, name));
            }
        }
        "kubernetes" => {
            if let Some(suffix) = config.get("secret_suffix") {
                out.insert("secret_suffix".into(), kube_suffix(suffix, name));
            }
        }
        _ => {}
    }
    out
}

/// The partitions the local backend has files of (`state.NAME.json` next to `state.json`):
/// those of clusters no longer in the stack are read too, so that a whole apply deletes what
/// they recorded. Other backends: none (only the stack's clusters are read).
fn stored_partitions(kind: &str, config: &BTreeMap<String, String>, dir: &Path) -> Vec<String> {
    if kind != "local" {
        return Vec::new();
    }
    let path = dir.join(config.get("path").filter(|p| !p.is_empty()).map_or(".kdeploy/state.json", String::as_str));
    let (Some(parent), Some(file)) = (path.parent(), path.file_name().and_then(|f| f.to_str())) else { return Vec::new() };
    let Some((stem, ext)) = file.rsplit_once('.') else { return Vec::new() };
    let Ok(entries) = std::fs::read_dir(parent) else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|f| Some(f.strip_prefix(stem)?.strip_prefix('.')?.strip_suffix(ext)?.strip_suffix('.')?.to_string()))
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
        .collect()
}

/// The partitioned store of `loaded`: every partition's store (encrypted as any store), the
/// unpartitioned state for the split, and `opts.partition` as the one partition written, if
/// given (an unknown name is an error listing the known ones).
pub fn open_partitioned(
    loaded: &Loaded,
    kind: &str,
    config: &BTreeMap<String, String>,
    dir: &Path,
    opts: &BackendOptions,
) -> Result<Box<dyn StateStore>, Diagnostic> {
    let mut names = partitions(loaded)?;
    for found in stored_partitions(kind, config, dir) {
        names.entry(found).or_insert(None);
    }
    if let Some(p) = &opts.partition
        && !names.contains_key(p)
    {
        let known: Vec<&str> = names.keys().map(String::as_str).collect();
        return Err(Diagnostic::error("Unknown partition", format!("-partition {p:?} is not a state partition of this stack; it has: {}.", known.join(", ")))
            .hint("a cluster's partition is its address without `cluster.` and with its key after a dash: cluster.site[\"a\"] is site-a"));
    }
    let mut parts = BTreeMap::new();
    for name in names.keys() {
        parts.insert(name.clone(), open_store(kind, &partition_config(kind, config, name), dir, &opts.env)?);
    }
    let legacy = open_store(kind, config, dir, &opts.env)?;
    Ok(Box::new(PartitionedStore::new(parts, opts.partition.as_deref(), Some(legacy))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_files_keys_and_suffixes() {
        let cfg = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert_eq!(partition_config("local", &BTreeMap::new(), "site-a")["path"], ".kdeploy/state.site-a.json");
        assert_eq!(partition_config("local", &cfg("path", "st/x"), "central")["path"], "st/x.central");
        assert_eq!(partition_config("s3", &cfg("key", "edge/state.json"), "site-a")["key"], "edge/state.site-a.json");
        assert_eq!(partition_config("kubernetes", &cfg("secret_suffix", "edge"), "site-a")["secret_suffix"], "edge-site-a");
        let long = partition_config("kubernetes", &cfg("secret_suffix", "a-rather-long-suffix-here"), "and-a-long-partition")["secret_suffix"].clone();
        assert!(long.len() <= 40, "{long}");
    }

    #[test]
    fn names_of_partitions() {
        let a = |s: &str| s.parse::<Address>().unwrap();
        assert_eq!(component_partition(&a("cluster.central"), None), "central");
        assert_eq!(component_partition(&a("agent.cam"), Some(&a("cluster.site[\"a\"]"))), "site-a");
        assert_eq!(component_partition(&a("object_storage.s3"), None), "default");
    }
}

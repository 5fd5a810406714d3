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

/// The backend settings of partition `name`: the local file and the S3 key get `.NAME` before
/// their extension, the Kubernetes Secrets and Lease the suffix `-NAME`.
pub fn partition_config(kind: &str, config: &BTreeMap<String, String>, name: &str) -> BTreeMap<String, String> {
    let mut out = config.clone();
    match kind {
        "local" => {
            let path = config.get("path").filter(|p| !p.is_empty()).cloned().unwrap_or_else(|| ".kdeploy/state.json".to_string());
            out.insert("path".into(), kdeploy_state::partition::with_partition(&path, name));
        }
        "s3" => {
            if let Some(key) = config.get("key") {
                out.insert("key".into(), kdeploy_state::partition::with_partition(key, name));
            }
        }
        "kubernetes" => {
            if let Some(suffix) = config.get("secret_suffix") {
                out.insert("secret_suffix".into(), kdeploy_state::partition::partition_suffix(suffix, name));
                out.insert("partition".into(), name.to_string());
            }
        }
        _ => {}
    }
    out
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
    let stored = kdeploy_state::stored_partitions(kind, config, dir).map_err(|m| {
        Diagnostic::error("Cannot find the stored partitions", m)
            .hint("a run reads every partition the backend has, also those of clusters no longer in the stack (a whole apply deletes what they recorded); grant list access to the backend's state")
    })?;
    for found in stored {
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

//! State partitions (`stack { partition = "cluster" }`): one state, and one lock, per cluster.
//!
//! [`PartitionedStore`] owns one inner store per partition and shows the engine one state:
//! reads merge the partitions, writes and journal groups are split by the partition of each
//! resource (see [`resource_partition`]), and the lock is the lock of every partition the run
//! writes, taken in name order (two runs never wait on each other in a cycle). Partitions the
//! run only reads (another site's, the central one's) are read without their lock and never
//! written.
//!
//! A partition's name comes from its cluster's address ([`partition_name`]): `cluster.central` is
//! `central`, `cluster.site["a"]` is `site-a`. Components bound to no cluster (external
//! components, cloud buckets) and the root outputs are in the partition [`DEFAULT_PARTITION`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kdeploy_provider::Kind;
use kdeploy_provider::addr::Address;

use crate::StateError;
use crate::journal::{Record, sha256_hex};
use crate::lock::LockInfo;
use crate::model::{PendingOp, ResourceState, State};
use crate::store::{Append, StateStore};

/// The partition of what is bound to no cluster, and of the root outputs.
pub const DEFAULT_PARTITION: &str = "default";

/// Longest partition name: it ends up in S3 keys, file names, Secret names and in the label
/// value (at most 63 characters) of the Kubernetes journal.
const MAX_NAME: usize = 40;

/// The partition of a cluster: its address as lowercase letters, digits and single dashes,
/// without the `module.`/`cluster.` markers (`module.east.cluster.site["a"]` → `east-site-a`);
/// names longer than 40 characters keep 31 and end with 8 hex digits of the address's SHA-256.
pub fn partition_name(cluster: &Address) -> String {
    let text = cluster.to_string();
    let name = kdeploy_provider::names::from_address(&text);
    if name.len() <= MAX_NAME {
        return name;
    }
    let head: String = name.chars().take(31).collect();
    format!("{}-{}", head.trim_end_matches('-'), &sha256_hex(text.as_bytes())[..8])
}

/// Whether `name` can be a stored partition's name: lowercase letters, digits and dashes.
fn is_partition_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The stem and extension `with_partition` puts the name between, if `path` has them.
fn stem_ext(path: &str) -> Option<(&str, &str)> {
    path.rsplit_once('.').filter(|(stem, ext)| !ext.contains('/') && !stem.is_empty() && !stem.ends_with('/'))
}

/// A file or key name with the partition before its extension: `state.json` → `state.NAME.json`
/// (`state` → `state.NAME`).
pub fn with_partition(path: &str, name: &str) -> String {
    match stem_ext(path) {
        Some((stem, ext)) => format!("{stem}.{name}.{ext}"),
        None => format!("{path}.{name}"),
    }
}

/// What every file or key of a partition of `base` starts with: `state.` for `state.json`.
pub(crate) fn partitions_prefix(base: &str) -> String {
    format!("{}.", stem_ext(base).map_or(base, |(stem, _)| stem))
}

/// The partition whose file or key `candidate` is, next to the unpartitioned `base`: the
/// inverse of [`with_partition`] (`state.json`, `state.site-a.json` → `site-a`). Lock and
/// journal files or objects, and names with other characters, are none.
pub fn partition_in(base: &str, candidate: &str) -> Option<String> {
    let name = match stem_ext(base) {
        Some((stem, ext)) => candidate.strip_prefix(stem)?.strip_prefix('.')?.strip_suffix(ext)?.strip_suffix('.')?,
        None => candidate.strip_prefix(base)?.strip_prefix('.')?,
    };
    is_partition_name(name).then(|| name.to_string())
}

/// The Kubernetes `secret_suffix` of a partition: `SUFFIX-NAME`, kept within the backend's 40
/// characters by 8 hex digits of its SHA-256 when longer.
pub fn partition_suffix(suffix: &str, name: &str) -> String {
    let full = format!("{suffix}-{name}");
    if full.len() <= MAX_NAME {
        return full;
    }
    let head: String = full.chars().take(31).collect();
    format!("{}-{}", head.trim_end_matches('-'), &sha256_hex(full.as_bytes())[..8])
}

/// The partition of a component: a cluster's own, else that of the cluster it records
/// (`cluster` attribute), else [`DEFAULT_PARTITION`].
pub fn partition_of(address: &Address, attributes: &serde_json::Value) -> Option<String> {
    if address.kind == Kind::Cluster {
        return Some(partition_name(address));
    }
    let cluster: Address = attributes.get("cluster")?.as_str()?.parse().ok()?;
    Some(partition_name(&cluster))
}

/// The partition a recorded resource belongs to.
pub fn resource_partition(r: &ResourceState) -> String {
    partition_of(&r.address, &r.attributes).unwrap_or_else(|| DEFAULT_PARTITION.to_string())
}

/// One partition's store and what this run knows of it.
struct Part {
    store: Box<dyn StateStore>,
    /// The run writes (and locks) it; otherwise it is only read.
    writable: bool,
    /// The partition's state as stored, kept up to date by every write and group routed to it.
    known: Option<State>,
    /// A journal over the last checkpoint is open.
    journal: bool,
    /// Groups were appended to that journal since.
    appended: bool,
    locked: bool,
}

/// One state per partition behind one [`StateStore`]; see the module documentation.
pub struct PartitionedStore {
    parts: BTreeMap<String, Part>,
    /// The stack's state from before it was partitioned: read while the `default` partition has
    /// no state, and split into the partitions by the first write (see [`PartitionedStore::new`]).
    legacy: Option<Box<dyn StateStore>>,
    /// The state read came from `legacy`: the next write writes every partition.
    migrating: bool,
    /// What new partitions start from: the lineage and version of the state read or written
    /// last, serial 0.
    template: State,
}

impl PartitionedStore {
    /// `parts`: every partition's store (the `default` one included); `writable`: the one
    /// partition this run writes and locks, or all of them. `legacy`: the unpartitioned state
    /// of the same backend. While the `default` partition has no state, an unpartitioned state
    /// is the stack's state: a run that writes every partition splits it into them (the
    /// `default` partition last, so a run cut short before it starts over from the
    /// unpartitioned state), and a run of one partition is refused until then.
    pub fn new(parts: BTreeMap<String, Box<dyn StateStore>>, writable: Option<&str>, legacy: Option<Box<dyn StateStore>>) -> PartitionedStore {
        let parts = parts
            .into_iter()
            .map(|(name, store)| {
                let writable = writable.is_none_or(|w| w == name);
                (name, Part { store, writable, known: None, journal: false, appended: false, locked: false })
            })
            .collect();
        PartitionedStore { parts, legacy, migrating: false, template: State::new("") }
    }

    /// The partitions' names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.parts.keys().cloned().collect()
    }

    fn writes_all(&self) -> bool {
        self.parts.values().all(|p| p.writable)
    }

    /// Reads every partition (with `stored`: as stored, sealed values kept) and merges them, or
    /// the unpartitioned state while it has not been split.
    fn read_with(&mut self, stored: bool) -> Result<Option<State>, StateError> {
        let get = |s: &mut Box<dyn StateStore>| if stored { s.read_stored() } else { s.read() };
        for part in self.parts.values_mut() {
            part.known = get(&mut part.store)?;
            part.journal = false;
            part.appended = false;
        }
        self.migrating = false;
        let split = self.parts.get(DEFAULT_PARTITION).is_some_and(|p| p.known.is_some());
        let writes_all = self.writes_all();
        if !split
            && let Some(legacy) = self.legacy.as_mut()
            && let Some(old) = get(legacy)?
        {
            if !writes_all {
                return Err(StateError::Partition { message: unsplit_message(&legacy.describe()) });
            }
            self.migrating = true;
            self.remember(&old);
            return Ok(Some(old));
        }
        let merged = merge(&self.parts);
        if let Some(m) = &merged {
            self.remember(m);
        }
        Ok(merged)
    }

    /// New partitions get `state`'s lineage and version.
    fn remember(&mut self, state: &State) {
        self.template = State { serial: 0, ..empty_like(state) };
    }

    /// Splits `state` by partition; a resource of a partition this store does not have is an
    /// error (it would be lost).
    fn split(&self, state: &State) -> Result<BTreeMap<String, State>, StateError> {
        let mut subs: BTreeMap<String, State> = BTreeMap::new();
        let empty = || empty_like(state);
        for r in &state.resources {
            subs.entry(resource_partition(r)).or_insert_with(empty).resources.push(r.clone());
        }
        for p in &state.pending {
            subs.entry(pending_partition(p, |a| state.resource(a).map(resource_partition))).or_insert_with(empty).pending.push(p.clone());
        }
        subs.entry(DEFAULT_PARTITION.to_string()).or_insert_with(empty).outputs = state.outputs.clone();
        if let Some(name) = subs.keys().find(|n| !self.parts.contains_key(*n)) {
            return Err(StateError::Partition {
                message: format!(
                    "the state has components of partition {name:?}, which this stack does not have (it has {}); this is a bug in kdeploy, please report it",
                    self.names().join(", ")
                ),
            });
        }
        Ok(subs)
    }

    /// Writes every partition whose content `state` changes (all of them while migrating), the
    /// `default` one last; with `checkpoint`, also folds the journals groups were appended to.
    fn write_parts(&mut self, state: &State, checkpoint: bool) -> Result<bool, StateError> {
        let mut subs = self.split(state)?;
        let mut order: Vec<String> = self.parts.keys().filter(|n| *n != DEFAULT_PARTITION).cloned().collect();
        order.push(DEFAULT_PARTITION.to_string());
        for name in order {
            let Some(part) = self.parts.get_mut(&name) else { continue };
            let sub = subs.remove(&name).unwrap_or_else(|| empty_like(state));
            let dirty = self.migrating || !same_content(part.known.as_ref(), &sub);
            if !part.writable {
                if dirty && !same_content_but_outputs(part.known.as_ref(), &sub) {
                    return Err(read_only_changed(&name));
                }
                continue;
            }
            // Unchanged, and no journal to fold: nothing to write.
            let fold = checkpoint && part.appended;
            if !(dirty || fold) {
                continue;
            }
            let next = next_state(part.known.as_ref(), sub, dirty)?;
            if checkpoint {
                part.journal = part.store.checkpoint(&next)?;
            } else {
                part.store.write(&next)?;
                part.journal = false;
            }
            part.appended = false;
            part.known = Some(next);
        }
        self.migrating = false;
        Ok(true)
    }

    /// The partition a journal record belongs to, from what the run knows of every partition.
    fn route(&self, record: &Record) -> String {
        let recorded = |a: &Address| self.parts.iter().find(|(_, p)| p.known.as_ref().is_some_and(|s| s.resource(a).is_some())).map(|(n, _)| n.clone());
        match record {
            Record::Begin { pending, .. } => pending_partition(pending, recorded),
            Record::Finish { id } => self
                .parts
                .iter()
                .find(|(_, p)| p.known.as_ref().is_some_and(|s| s.pending.iter().any(|o| o.id == *id)))
                .map(|(n, _)| n.clone())
                .unwrap_or_else(|| DEFAULT_PARTITION.to_string()),
            Record::Upsert { resource } => resource_partition(resource),
            Record::Remove { address } => recorded(address).unwrap_or_else(|| DEFAULT_PARTITION.to_string()),
            Record::Output { .. } => DEFAULT_PARTITION.to_string(),
        }
    }

    /// Applies `record` to what the run knows of partition `name`; false when the record is
    /// dropped: an output recorded by a run that does not write the `default` partition.
    fn take(&mut self, name: &str, record: &Record) -> Result<bool, StateError> {
        let template = empty_like(&self.template);
        let Some(part) = self.parts.get_mut(name) else {
            return Err(StateError::Partition {
                message: format!("a record for partition {name:?}, which this stack does not have; this is a bug in kdeploy, please report it"),
            });
        };
        if !part.writable {
            return if matches!(record, Record::Output { .. }) { Ok(false) } else { Err(read_only_changed(name)) };
        }
        let known = part.known.get_or_insert(template);
        record.apply(known).map_err(|reason| StateError::InvalidState { reason })?;
        Ok(true)
    }

    /// Appends one partition's records (already in what the run knows of it) as one group of its
    /// journal, or writes its whole state when it has no journal open or the journal declines
    /// them or asks for a fold.
    fn append_part(&mut self, name: &str, records: &[Record]) -> Result<(), StateError> {
        let Some(part) = self.parts.get_mut(name) else { return Ok(()) };
        let Some(known) = part.known.as_mut() else { return Ok(()) };
        known.bump_serial()?;
        let fold = if part.journal {
            match part.store.append(known.serial, records)? {
                Append::Recorded { fold: false } => {
                    part.appended = true;
                    false
                }
                Append::Recorded { fold: true } | Append::Declined => true,
            }
        } else {
            true
        };
        if fold {
            part.journal = part.store.checkpoint(known)?;
            part.appended = false;
        }
        Ok(())
    }
}

/// An empty state with `state`'s format, lineage, serial and version.
fn empty_like(state: &State) -> State {
    State {
        version: state.version,
        serial: state.serial,
        lineage: state.lineage.clone(),
        kdeploy_version: state.kdeploy_version.clone(),
        outputs: BTreeMap::new(),
        resources: Vec::new(),
        pending: Vec::new(),
        encryption: None,
    }
}

/// The message that refuses a run of one partition before the state was split.
fn unsplit_message(location: &str) -> String {
    format!(
        "this stack's state is still one state ({location}), not yet split into partitions: run `kdeploy apply` once without -partition (it writes every partition and then uses them), then run partitions on their own"
    )
}

fn read_only_changed(name: &str) -> StateError {
    StateError::Partition {
        message: format!(
            "this run changed the state of partition {name:?}, which it only reads (it writes only the partition given with -partition); this is a bug in kdeploy, please report it"
        ),
    }
}

/// A pending operation's partition: its target's cluster, else where its resource is recorded.
fn pending_partition(p: &PendingOp, recorded: impl Fn(&Address) -> Option<String>) -> String {
    p.target
        .as_ref()
        .and_then(|t| if t.kind == Kind::Cluster { Some(partition_name(&p.address)) } else { partition_of(&p.address, &t.attributes) })
        .or_else(|| recorded(&p.address))
        .or_else(|| (p.address.kind == Kind::Cluster).then(|| partition_name(&p.address)))
        .unwrap_or_else(|| DEFAULT_PARTITION.to_string())
}

/// The partitions' states as one: resources and pending operations of all, the outputs of the
/// `default` partition, the lineage of the first partition (by name) that has a state and the
/// sum of the serials (it grows whenever any partition is written, so a saved plan is stale
/// when any partition it read changed).
fn merge(parts: &BTreeMap<String, Part>) -> Option<State> {
    let mut present = parts.iter().filter_map(|(n, p)| p.known.as_ref().map(|s| (n, s)));
    let (_, first) = present.next()?;
    let mut merged = State { encryption: None, outputs: BTreeMap::new(), ..first.clone() };
    for (_, s) in present {
        merged.serial = merged.serial.saturating_add(s.serial);
        merged.resources.extend(s.resources.iter().cloned());
        merged.pending.extend(s.pending.iter().cloned());
    }
    // The state's order: by printed address (see `State::upsert`).
    merged.resources.sort_by_cached_key(|r| r.address.to_string());
    merged.resources.dedup_by(|a, b| a.address == b.address);
    if let Some(d) = parts.get(DEFAULT_PARTITION).and_then(|p| p.known.as_ref()) {
        merged.outputs = d.outputs.clone();
    }
    Some(merged)
}

fn same_content(known: Option<&State>, sub: &State) -> bool {
    match known {
        Some(k) => k.resources == sub.resources && k.pending == sub.pending && k.outputs == sub.outputs,
        None => sub.resources.is_empty() && sub.pending.is_empty() && sub.outputs.is_empty(),
    }
}

fn same_content_but_outputs(known: Option<&State>, sub: &State) -> bool {
    match known {
        Some(k) => k.resources == sub.resources && k.pending == sub.pending,
        None => sub.resources.is_empty() && sub.pending.is_empty(),
    }
}

/// The state to store for a partition: `sub`'s content with the partition's lineage and
/// encryption header, one serial more than stored when the content changed (the same serial
/// folds a journal).
fn next_state(known: Option<&State>, mut sub: State, dirty: bool) -> Result<State, StateError> {
    match known {
        Some(k) => {
            sub.lineage = k.lineage.clone();
            sub.encryption = k.encryption.clone();
            sub.serial = k.serial;
            if dirty {
                sub.bump_serial()?;
            }
        }
        None => {
            sub.encryption = None;
            sub.serial = 1;
        }
    }
    Ok(sub)
}

impl StateStore for PartitionedStore {
    fn describe(&self) -> String {
        let first = self.parts.values().next().map(|p| p.store.describe()).unwrap_or_default();
        format!("state partitions {} ({first}, ...)", self.names().join(", "))
    }

    fn read(&mut self) -> Result<Option<State>, StateError> {
        self.read_with(false)
    }

    fn read_stored(&mut self) -> Result<Option<State>, StateError> {
        self.read_with(true)
    }

    fn write(&mut self, state: &State) -> Result<(), StateError> {
        self.remember(state);
        self.write_parts(state, false).map(|_| ())
    }

    fn checkpoint(&mut self, state: &State) -> Result<bool, StateError> {
        self.remember(state);
        self.write_parts(state, true)
    }

    fn append(&mut self, _serial: u64, records: &[Record]) -> Result<Append, StateError> {
        let mut groups: BTreeMap<String, Vec<Record>> = BTreeMap::new();
        for r in records {
            // Applied as routed: later records of the group route by what earlier ones did (a
            // begin, then its finish).
            let name = self.route(r);
            if self.take(&name, r)? {
                groups.entry(name).or_default().push(r.clone());
            }
        }
        for (name, group) in groups {
            self.append_part(&name, &group)?;
        }
        Ok(Append::Recorded { fold: false })
    }

    fn lock(&mut self, info: LockInfo, timeout: Duration) -> Result<(), StateError> {
        let deadline = Instant::now().checked_add(timeout);
        let names: Vec<String> = self.parts.iter().filter(|(_, p)| p.writable).map(|(n, _)| n.clone()).collect();
        for name in names {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now())).unwrap_or(timeout);
            let Some(part) = self.parts.get_mut(&name) else { continue };
            if let Err(e) = part.store.lock(info.clone(), left) {
                let _ = self.unlock();
                return Err(e);
            }
            part.locked = true;
        }
        Ok(())
    }

    fn unlock(&mut self) -> Result<(), StateError> {
        let mut first = None;
        let mut any = false;
        for part in self.parts.values_mut().filter(|p| p.locked) {
            any = true;
            part.locked = false;
            if let Err(e) = part.store.unlock() {
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => Err(e),
            None if any => Ok(()),
            None => Err(StateError::NotLocked { path: self.describe() }),
        }
    }

    fn lock_info(&mut self) -> Result<Option<LockInfo>, StateError> {
        for part in self.parts.values_mut().filter(|p| p.writable) {
            if let Some(info) = part.store.lock_info()? {
                return Ok(Some(info));
            }
        }
        Ok(None)
    }

    fn force_unlock(&mut self, id: &str) -> Result<(), StateError> {
        self.force_unlock_with(id, false)
    }

    fn force_unlock_running(&mut self, id: &str) -> Result<(), StateError> {
        self.force_unlock_with(id, true)
    }

    fn take_warnings(&mut self) -> Vec<String> {
        self.parts.values_mut().flat_map(|p| p.store.take_warnings()).collect()
    }
}

impl PartitionedStore {
    /// Breaks the locks with `id` of the partitions the run writes; when none has it, the error
    /// of the first locked partition names its holder.
    fn force_unlock_with(&mut self, id: &str, running: bool) -> Result<(), StateError> {
        let mut broke = false;
        let mut other = None;
        for part in self.parts.values_mut().filter(|p| p.writable) {
            match part.store.lock_info()? {
                Some(info) if info.id == id => {
                    if running {
                        part.store.force_unlock_running(id)?
                    } else {
                        part.store.force_unlock(id)?
                    }
                    broke = true;
                }
                Some(_) if other.is_none() => other = Some(part.store.force_unlock(id)),
                _ => {}
            }
        }
        match other {
            _ if broke => Ok(()),
            Some(result) => result,
            None => Err(StateError::NotLocked { path: self.describe() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalStore;
    use crate::model::tests::res;
    use serde_json::json;

    #[test]
    fn stored_files_and_keys_name_their_partition() {
        assert_eq!(partition_in("edge/state.json", &with_partition("edge/state.json", "site-a")).as_deref(), Some("site-a"));
        assert_eq!(partition_in("st/x", &with_partition("st/x", "central")).as_deref(), Some("central"));
        for other in ["edge/state.json", "edge/state.site-a.json.lock", "edge/state.site-a.json.journal/1/2", "edge/state.a.b.json", "edge/state.A.json"] {
            assert_eq!(partition_in("edge/state.json", other), None, "{other}");
        }
        assert_eq!(partitions_prefix("edge/state.json"), "edge/state.");
        assert_eq!(partition_suffix("edge", "site-a"), "edge-site-a");
        assert!(partition_suffix("a-rather-long-suffix-here", "and-a-long-partition").len() <= 40);
    }

    fn on(addr: &str, cluster: &str) -> ResourceState {
        let mut r = res(addr);
        r.attributes = json!({"name": addr, "cluster": cluster});
        r
    }

    fn store(dir: &std::path::Path, writable: Option<&str>) -> PartitionedStore {
        let parts = ["central", "default", "site-a"]
            .iter()
            .map(|n| (n.to_string(), Box::new(LocalStore::new(dir.join(format!("state.{n}.json")))) as Box<dyn StateStore>))
            .collect();
        PartitionedStore::new(parts, writable, Some(Box::new(LocalStore::new(dir.join("state.json")))))
    }

    fn read(dir: &std::path::Path, name: &str) -> State {
        crate::decode(&std::fs::read(dir.join(format!("state.{name}.json"))).unwrap(), name).unwrap()
    }

    fn fleet() -> State {
        let mut s = State::new("t");
        for r in [
            res("cluster.central"),
            on("vault.main", "cluster.central"),
            res("cluster.site[\"a\"]"),
            on("agent.cam[\"a\"]", "cluster.site[\"a\"]"),
            res("object_storage.ext"),
        ] {
            s.upsert(r);
        }
        s
    }

    #[test]
    fn names_come_from_cluster_addresses() {
        let a = |s: &str| s.parse::<Address>().unwrap();
        assert_eq!(partition_name(&a("cluster.central")), "central");
        assert_eq!(partition_name(&a("cluster.site[\"North_1\"]")), "site-north-1");
        assert_eq!(partition_name(&a("module.site[\"a\"].cluster.edge")), "site-a-edge");
        let long = partition_name(&a(&format!("cluster.site[\"{}\"]", "x".repeat(60))));
        assert!(long.len() <= 40 && long.starts_with("site-xxx"), "{long}");
        assert_eq!(resource_partition(&res("object_storage.ext")), DEFAULT_PARTITION);
    }

    #[test]
    fn writes_split_by_partition_and_reads_merge() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), None);
        s.lock(LockInfo::new("apply", "t"), Duration::ZERO).unwrap();
        assert!(s.read().unwrap().is_none());
        let mut state = fleet();
        state.bump_serial().unwrap();
        s.write(&state).unwrap();
        let names = |st: State| st.resources.iter().map(|r| r.address.to_string()).collect::<Vec<_>>();
        assert_eq!(names(read(dir.path(), "central")), ["cluster.central", "vault.main"]);
        assert_eq!(names(read(dir.path(), "site-a")), ["agent.cam[\"a\"]", "cluster.site[\"a\"]"]);
        assert_eq!(names(read(dir.path(), "default")), ["object_storage.ext"]);
        assert_eq!(read(dir.path(), "central").lineage, state.lineage);
        let merged = s.read().unwrap().unwrap();
        assert_eq!(merged.resources, state.resources);
        s.unlock().unwrap();
    }

    #[test]
    fn journal_groups_go_to_the_partitions_they_touch() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), None);
        s.lock(LockInfo::new("apply", "t"), Duration::ZERO).unwrap();
        let mut state = fleet();
        state.bump_serial().unwrap();
        assert!(s.checkpoint(&state).unwrap());
        let central = read(dir.path(), "central").serial;
        let mut cam = on("agent.cam[\"a\"]", "cluster.site[\"a\"]");
        cam.fingerprint = Some("new".into());
        let p = PendingOp::start(&cam.address, crate::PendingKind::Update, None);
        let records =
            vec![Record::Begin { pending: p.clone(), sensitive_paths: vec![] }, Record::Upsert { resource: cam.clone() }, Record::Finish { id: p.id }];
        s.append(state.serial.saturating_add(1), &records).unwrap();
        for r in &records {
            r.apply(&mut state).unwrap();
        }
        state.bump_serial().unwrap();
        s.checkpoint(&state).unwrap();
        assert_eq!(read(dir.path(), "central").serial, central, "untouched");
        let site = read(dir.path(), "site-a");
        assert_eq!(site.resource(&cam.address).unwrap().fingerprint.as_deref(), Some("new"));
        assert!(site.pending.is_empty());
        s.unlock().unwrap();
    }

    #[test]
    fn one_partition_locks_and_writes_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let mut all = store(dir.path(), None);
        all.lock(LockInfo::new("apply", "t"), Duration::ZERO).unwrap();
        let mut state = fleet();
        state.bump_serial().unwrap();
        all.write(&state).unwrap();
        all.unlock().unwrap();

        let mut central = LocalStore::new(dir.path().join("state.central.json"));
        central.lock(LockInfo::new("apply", "other"), Duration::ZERO).unwrap();
        let mut site = store(dir.path(), Some("site-a"));
        site.lock(LockInfo::new("apply", "t"), Duration::ZERO).unwrap();
        let mut merged = site.read().unwrap().unwrap();
        merged.resource_mut(&"agent.cam[\"a\"]".parse().unwrap()).unwrap().fingerprint = Some("x".into());
        merged.bump_serial().unwrap();
        site.write(&merged).unwrap();
        merged.resource_mut(&"vault.main".parse().unwrap()).unwrap().fingerprint = Some("x".into());
        merged.bump_serial().unwrap();
        assert!(matches!(site.write(&merged), Err(StateError::Partition { .. })), "the central partition is read-only here");
        site.unlock().unwrap();
        assert!(all.lock(LockInfo::new("apply", "t"), Duration::ZERO).is_err(), "the whole fleet needs the central lock too");
    }

    #[test]
    fn a_single_state_is_split_by_the_first_whole_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut single = LocalStore::new(dir.path().join("state.json"));
        let mut state = fleet();
        state.bump_serial().unwrap();
        single.write(&state).unwrap();

        let mut site = store(dir.path(), Some("site-a"));
        assert!(matches!(site.read(), Err(StateError::Partition { .. })));
        let mut all = store(dir.path(), None);
        let read_back = all.read().unwrap().unwrap();
        assert_eq!(read_back.resources, state.resources);
        let mut next = read_back.clone();
        next.bump_serial().unwrap();
        all.write(&next).unwrap();
        for name in ["central", "default", "site-a"] {
            assert_eq!(read(dir.path(), name).lineage, state.lineage, "{name}");
        }
        assert_eq!(all.read().unwrap().unwrap().resources, state.resources, "now read from the partitions");
    }
}

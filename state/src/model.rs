//! The state model: what kdeploy has deployed, as last recorded.

use std::collections::BTreeMap;
use std::fmt;

use kdeploy_provider::addr::{Address, ModulePath, Target};
use kdeploy_provider::{AttrPath, Kind};
use serde::{Deserialize, Serialize};

use crate::error::StateError;

/// The state format version this build writes (and the newest it reads).
pub const STATE_VERSION: u32 = 2;

/// The recorded state of one stack.
///
/// Resources are kept sorted by address; use [`State::upsert`], [`State::remove`] and friends
/// rather than editing `resources` directly so that the order and uniqueness hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Format version; [`STATE_VERSION`] when written by this build.
    pub version: u32,
    /// Strictly increasing with every write of the state.
    pub serial: u64,
    /// UUID v4 fixed when the state is created; a store refuses to overwrite another lineage.
    pub lineage: String,
    /// Version of kdeploy that wrote the state.
    pub kdeploy_version: String,
    /// Root module outputs.
    #[serde(default)]
    pub outputs: BTreeMap<String, OutputState>,
    /// Managed resources, sorted by address.
    #[serde(default)]
    pub resources: Vec<ResourceState>,
    /// Operations that were started but not recorded as finished (e.g. the run was killed).
    #[serde(default)]
    pub pending: Vec<PendingOp>,
    /// How sensitive values are encrypted, when they are (see [`crate::crypt`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<crate::crypt::EncryptionHeader>,
}

/// One root module output.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputState {
    /// The output's value (always known).
    #[serde(serialize_with = "canonical::serialize")]
    pub value: serde_json::Value,
    /// Whether the value must be redacted when displayed.
    #[serde(default)]
    pub sensitive: bool,
}

/// One managed resource (one instance of a component).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceState {
    /// Full address, e.g. `agent.cam["front"]` or `module.site.vault.main`.
    pub address: Address,
    /// Component kind: `cluster`, `vault`, `agent`, ...
    pub kind: Kind,
    /// Implementation of the component: `docker`, `minio`, ...
    #[serde(rename = "type")]
    pub type_name: String,
    /// Provider that manages the resource.
    pub provider: String,
    /// Object holding the inputs and the computed outputs; only known values.
    #[serde(serialize_with = "canonical::serialize")]
    pub attributes: serde_json::Value,
    /// Paths inside `attributes` whose values are sensitive.
    #[serde(default)]
    pub sensitive_paths: Vec<AttrPath>,
    /// Addresses of the resources this one depends on.
    #[serde(default)]
    pub dependencies: Vec<Address>,
    /// Provider-defined hash of the live object, used to detect drift cheaply.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// Whether replacements create the new object before destroying the old one.
    #[serde(default)]
    pub create_before_destroy: bool,
}

/// The kind of a pending operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PendingKind {
    Create,
    Update,
    Delete,
}

impl fmt::Display for PendingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PendingKind::Create => "create",
            PendingKind::Update => "update",
            PendingKind::Delete => "delete",
        })
    }
}

/// An operation that was started but not recorded as finished. A pending operation left in the
/// state means a run died mid-operation and the live object may differ from the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingOp {
    /// Unique id (UUID v4) returned by [`State::begin_pending`].
    pub id: String,
    /// Address of the resource being operated on.
    pub address: Address,
    pub operation: PendingKind,
    /// When the operation started (RFC 3339).
    pub started_at: String,
    /// What is needed to find (and delete) the object later should the operation be
    /// interrupted, even when the component has left the stack meanwhile. Set for creates and
    /// replacements (format version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<PendingTarget>,
}

/// The object a pending operation works on, as far as it is known when the operation starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTarget {
    pub kind: Kind,
    #[serde(rename = "type")]
    pub type_name: String,
    pub provider: String,
    /// The planned attributes that are known (inputs such as the cluster and namespace).
    #[serde(serialize_with = "canonical::serialize")]
    pub attributes: serde_json::Value,
    #[serde(default)]
    pub dependencies: Vec<Address>,
}

impl PendingOp {
    /// A pending operation on `address` starting now, with a new id.
    pub fn start(address: &Address, op: PendingKind, target: Option<PendingTarget>) -> PendingOp {
        PendingOp { id: uuid::Uuid::new_v4().to_string(), address: address.clone(), operation: op, started_at: crate::now_rfc3339(), target }
    }
}

impl ResourceState {
    /// What a stored resource must satisfy: attributes that are an object, and no unknown
    /// value. The error says which.
    pub(crate) fn check(&self) -> Result<(), String> {
        if !self.attributes.is_object() {
            return Err(format!("the attributes of `{}` are not an object", self.address));
        }
        if let Some(path) = find_unknown(&self.attributes) {
            return Err(format!("attribute `{path}` of `{}` is unknown; only known values may be stored", self.address));
        }
        Ok(())
    }
}

impl OutputState {
    /// What a stored output must satisfy: a known value.
    pub(crate) fn check(&self, name: &str) -> Result<(), String> {
        match find_unknown(&self.value) {
            Some(path) => {
                let at = if path.is_empty() { String::new() } else { format!(" at `{path}`") };
                Err(format!("output `{name}` is unknown{at}; only known values may be stored"))
            }
            None => Ok(()),
        }
    }
}

impl State {
    /// A fresh, empty state with a new lineage and serial 0.
    pub fn new(kdeploy_version: &str) -> State {
        State {
            version: STATE_VERSION,
            serial: 0,
            lineage: uuid::Uuid::new_v4().to_string(),
            kdeploy_version: kdeploy_version.to_string(),
            outputs: BTreeMap::new(),
            resources: Vec::new(),
            pending: Vec::new(),
            encryption: None,
        }
    }

    /// Increments the serial; call once before each write of a changed state. A serial at its
    /// maximum cannot increase: nothing can be written after it (an error, never a wrap).
    pub fn bump_serial(&mut self) -> Result<u64, StateError> {
        self.serial = self.serial.checked_add(1).ok_or(StateError::SerialExhausted { serial: self.serial })?;
        Ok(self.serial)
    }

    /// The resource at exactly `addr`.
    pub fn resource(&self, addr: &Address) -> Option<&ResourceState> {
        self.position(addr).ok().map(|i| &self.resources[i])
    }

    /// Mutable access to the resource at exactly `addr`. Do not change its address.
    pub fn resource_mut(&mut self, addr: &Address) -> Option<&mut ResourceState> {
        self.position(addr).ok().map(|i| &mut self.resources[i])
    }

    /// Inserts `r`, replacing any resource with the same address, keeping the sort order.
    pub fn upsert(&mut self, r: ResourceState) {
        match self.position(&r.address) {
            Ok(i) => self.resources[i] = r,
            Err(i) => self.resources.insert(i, r),
        }
    }

    /// Removes and returns the resource at exactly `addr`.
    pub fn remove(&mut self, addr: &Address) -> Option<ResourceState> {
        self.position(addr).ok().map(|i| self.resources.remove(i))
    }

    /// Removes every resource at `pattern` or under it (see [`address_matches`]):
    /// `agent.cam` removes `agent.cam`, `agent.cam["a"]` and `agent.cam[0]` but not
    /// `agent.camera`; `module.site` removes everything in that module. A pattern that is not an
    /// address removes nothing. Returns the removed resources in address order.
    pub fn remove_matching(&mut self, pattern: &str) -> Vec<ResourceState> {
        let matches = address_matcher(pattern);
        let (removed, kept) = std::mem::take(&mut self.resources).into_iter().partition(|r| matches(&r.address));
        self.resources = kept;
        removed
    }

    /// Moves every resource at `from` or under it (same matching as
    /// [`State::remove_matching`]) to `to`: a component (`agent.cam` → `agent.cams`, keeping
    /// each instance's key), one instance (`agent.cam["a"]` → `agent.solo`) or a module
    /// (`module.site` → `module.eu`, keeping what lies under it). Dependencies of all resources
    /// that name a moved address are rewritten too.
    ///
    /// Nothing changes on error: it fails when nothing matched, when `to` is not an address of
    /// the same sort as `from`, or when a destination address is already taken by a resource
    /// that is not itself being moved. Returns how many resources moved.
    pub fn mv(&mut self, from: &str, to: &str) -> Result<usize, StateError> {
        self.mv_checked(from, to, &|_, _| Ok(())).map(|moved| moved.len())
    }

    /// [`State::mv`], with `check` asked about every (resource, new address) first: the first
    /// refusal stops the move with nothing changed. Returns the moves, (old, new), in order.
    pub fn mv_checked(
        &mut self,
        from: &str,
        to: &str,
        check: &dyn Fn(&ResourceState, &Address) -> Result<(), StateError>,
    ) -> Result<Vec<(Address, Address)>, StateError> {
        let source = from.parse::<Target>().map_err(|_| StateError::NothingMatched { pattern: from.to_string() })?;
        let invalid = |reason: String| StateError::InvalidAddress { address: to.to_string(), reason };
        if to.is_empty() {
            return Err(invalid("the destination address is empty".to_string()));
        }
        let matched: Vec<&ResourceState> = self.resources.iter().filter(|r| r.address.matches(&source)).collect();
        if matched.is_empty() {
            return Err(StateError::NothingMatched { pattern: source.to_string() });
        }
        let destination = to.parse::<Target>().map_err(|e| invalid(e.to_string()))?;
        let mut renames: BTreeMap<Address, Address> = BTreeMap::new();
        for r in matched {
            let new = moved(&r.address, &source, &destination).map_err(invalid)?;
            if let Some((old, _)) = renames.iter().find(|(_, taken)| **taken == new) {
                return Err(invalid(format!("both {old} and {} would move to {new}", r.address)));
            }
            renames.insert(r.address.clone(), new);
        }
        for (old, new) in &renames {
            if !renames.contains_key(new) && self.resource(new).is_some() {
                return Err(StateError::DestinationExists { from: old.to_string(), to: new.to_string() });
            }
            if let Some(r) = self.resource(old) {
                check(r, new)?;
            }
        }
        for r in &mut self.resources {
            if let Some(new) = renames.get(&r.address) {
                r.address = new.clone();
            }
            for dep in &mut r.dependencies {
                if let Some(new) = renames.get(dep) {
                    *dep = new.clone();
                }
            }
        }
        self.sort_resources();
        let mut moves: Vec<(Address, Address)> = renames.into_iter().collect();
        moves.sort_by(|a, b| printed_cmp(&a.0, &b.0));
        Ok(moves)
    }

    /// Records that an operation on `address` starts; returns its id for
    /// [`State::finish_pending`].
    pub fn begin_pending(&mut self, address: &Address, op: PendingKind, target: Option<PendingTarget>) -> String {
        let p = PendingOp::start(address, op, target);
        let id = p.id.clone();
        self.pending.push(p);
        id
    }

    /// Records that the operation `id` finished (successfully or not). Unknown ids are ignored.
    pub fn finish_pending(&mut self, id: &str) {
        self.pending.retain(|p| p.id != id);
    }

    /// Checks the invariants a written state must satisfy: resources sorted by unique
    /// addresses, attributes are objects, and no value is unknown (no `{"$unknown": ...}`
    /// placeholder from a plan).
    pub fn validate(&self) -> Result<(), StateError> {
        let invalid = |reason: String| Err(StateError::InvalidState { reason });
        for pair in self.resources.windows(2) {
            if printed_cmp(&pair[0].address, &pair[1].address).is_ge() {
                return invalid(format!("resources are not sorted by unique address (`{}` before `{}`)", pair[0].address, pair[1].address));
            }
        }
        for r in &self.resources {
            r.check().or_else(invalid)?;
        }
        for (name, output) in &self.outputs {
            output.check(name).or_else(invalid)?;
        }
        Ok(())
    }

    /// Restores the sort order of `resources` (stable, by printed address).
    pub(crate) fn sort_resources(&mut self) {
        self.resources.sort_by_cached_key(|r| r.address.to_string());
    }

    fn position(&self, addr: &Address) -> Result<usize, usize> {
        let printed = addr.to_string();
        self.resources.binary_search_by(|r| cmp_printed(&r.address, &printed))
    }
}

/// The order of `a`'s printed form against `printed`, without printing `a` into a string (a
/// lookup compares a dozen addresses; printing each allocated).
fn cmp_printed(a: &Address, printed: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering::{Equal, Greater, Less};
    use std::fmt::Write as _;
    /// Compares what is written with what is left of `rest`, up to the first difference.
    struct Cmp<'a> {
        rest: &'a [u8],
        ord: std::cmp::Ordering,
    }
    impl fmt::Write for Cmp<'_> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            if self.ord != Equal {
                return Ok(());
            }
            let (head, tail) = self.rest.split_at(s.len().min(self.rest.len()));
            let written = s.as_bytes();
            self.ord = written.get(..head.len()).unwrap_or(written).cmp(head);
            if self.ord == Equal && written.len() > head.len() {
                self.ord = Greater;
            }
            self.rest = tail;
            Ok(())
        }
    }
    let mut c = Cmp { rest: printed.as_bytes(), ord: Equal };
    let _ = write!(c, "{a}");
    if c.ord == Equal && !c.rest.is_empty() { Less } else { c.ord }
}

/// Resources are kept in the order of their printed addresses (the order of the state file
/// since its first version), not in the order of the [`Address`] fields.
fn printed_cmp(a: &Address, b: &Address) -> std::cmp::Ordering {
    a.to_string().cmp(&b.to_string())
}

/// Where `address`, which lies at or under `from`, goes when `from` moves to `to`.
fn moved(address: &Address, from: &Target, to: &Target) -> Result<Address, String> {
    match (from, to) {
        (Target::Component(f), Target::Component(t)) if f.key.is_some() || t.key.is_some() => {
            if f.key.is_none() && address.key.is_some() {
                return Err(format!("{address} is one of several instances of {f}; move the instances one by one, or to a component without a key"));
            }
            Ok(t.clone())
        }
        (Target::Component(_), Target::Component(t)) => Ok(Address { key: address.key.clone(), ..t.clone() }),
        (Target::Module(f), Target::Module(t)) => Ok(Address { module: moved_module(&address.module, f, t), ..address.clone() }),
        (Target::Module(_), Target::Component(_)) => Err(format!("{from} is a module; it can only move to another module (module.NAME)")),
        (Target::Component(_), Target::Module(_)) => Err(format!("{from} is a component; it can only move to another component address")),
    }
}

/// `module` with the steps `from` matched replaced by `to`; an instance key the pattern left
/// open is kept where the destination leaves it open too (`module.site` → `module.eu` moves
/// `module.site["a"]` to `module.eu["a"]`).
fn moved_module(module: &ModulePath, from: &ModulePath, to: &ModulePath) -> ModulePath {
    let n = from.0.len();
    let last = to.0.len().checked_sub(1);
    let mut steps = to.0.clone();
    for (i, step) in steps.iter_mut().enumerate() {
        // Step by step when both paths have the same length; else only the last steps pair up.
        let at = if to.0.len() == n {
            Some(i)
        } else if Some(i) == last {
            n.checked_sub(1)
        } else {
            None
        };
        let open = at.and_then(|at| Some((from.0.get(at)?, module.0.get(at)?)));
        if let Some((pattern, have)) = open
            && step.key.is_none()
            && pattern.key.is_none()
        {
            step.key = have.key.clone();
        }
    }
    steps.extend(module.0.iter().skip(n).cloned());
    ModulePath(steps)
}

/// True when `address` is `pattern` or lies under it, with the one matcher `-target` uses
/// ([`Address::matches`]): `agent.cam` matches `agent.cam["a"]` and `agent.cam[0]` but not
/// `agent.camera`, and `module.site` matches `module.site.vault.main` and
/// `module.site["eu"].vault.main`. A pattern that is not an address matches nothing.
pub fn address_matches(address: &Address, pattern: &str) -> bool {
    address_matcher(pattern)(address)
}

/// [`address_matches`] for one `pattern` and many addresses: the pattern is parsed once.
pub fn address_matcher(pattern: &str) -> impl Fn(&Address) -> bool + use<> {
    let target = pattern.parse::<Target>().ok();
    move |address| target.as_ref().is_some_and(|t| address.matches(t))
}

/// The path (rendered like `a.b[0]`) of the first `{"$unknown": ...}` placeholder in `v`.
fn find_unknown(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Object(map) => {
            if map.len() == 1 && map.contains_key("$unknown") {
                return Some(String::new());
            }
            map.iter().find_map(|(k, item)| {
                find_unknown(item).map(|rest| {
                    let sep = if rest.is_empty() || rest.starts_with('[') { "" } else { "." };
                    format!("{k}{sep}{rest}")
                })
            })
        }
        serde_json::Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            find_unknown(item).map(|rest| {
                let sep = if rest.is_empty() || rest.starts_with('[') { "" } else { "." };
                format!("[{i}]{sep}{rest}")
            })
        }),
        _ => None,
    }
}

/// A short description of a JSON value that reveals nothing of its content.
fn shape(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "null".to_string(),
        serde_json::Value::Bool(_) => "<bool>".to_string(),
        serde_json::Value::Number(_) => "<number>".to_string(),
        serde_json::Value::String(_) => "<string>".to_string(),
        serde_json::Value::Array(a) => format!("<list of {}>", a.len()),
        serde_json::Value::Object(o) => {
            let keys: Vec<&str> = o.keys().map(String::as_str).collect();
            format!("<object with keys {keys:?}>")
        }
    }
}

/// Shows the shape of the value, never the value itself.
impl fmt::Debug for OutputState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputState").field("value", &format_args!("{}", shape(&self.value))).field("sensitive", &self.sensitive).finish()
    }
}

/// Shows attribute names, never attribute values.
impl fmt::Debug for ResourceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceState")
            .field("address", &self.address)
            .field("kind", &self.kind)
            .field("type_name", &self.type_name)
            .field("provider", &self.provider)
            .field("attributes", &format_args!("{}", shape(&self.attributes)))
            .field("sensitive_paths", &self.sensitive_paths)
            .field("dependencies", &self.dependencies)
            .field("fingerprint", &self.fingerprint)
            .field("create_before_destroy", &self.create_before_destroy)
            .finish()
    }
}

/// Serializes JSON values with object keys sorted, so that encoding is deterministic whatever
/// order the attributes were built in.
mod canonical {
    use serde::ser::{SerializeMap, SerializeSeq};
    use serde::{Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &serde_json::Value, s: S) -> Result<S::Ok, S::Error> {
        Sorted(v).serialize(s)
    }

    struct Sorted<'a>(&'a serde_json::Value);

    impl Serialize for Sorted<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self.0 {
                serde_json::Value::Object(map) => {
                    let mut entries: Vec<_> = map.iter().collect();
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                    let mut m = s.serialize_map(Some(entries.len()))?;
                    for (k, v) in entries {
                        m.serialize_entry(k, &Sorted(v))?;
                    }
                    m.end()
                }
                serde_json::Value::Array(items) => {
                    let mut seq = s.serialize_seq(Some(items.len()))?;
                    for item in items {
                        seq.serialize_element(&Sorted(item))?;
                    }
                    seq.end()
                }
                other => other.serialize(s),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    fn a(addr: &str) -> Address {
        addr.parse().unwrap()
    }

    /// A Docker resource at `addr` whose only attribute is its name (the state crate's tests share it).
    pub(crate) fn res(addr: &str) -> ResourceState {
        let address = a(addr);
        ResourceState {
            kind: address.kind,
            address,
            type_name: "docker".into(),
            provider: "docker".into(),
            attributes: json!({"name": addr}),
            sensitive_paths: vec![],
            dependencies: vec![],
            fingerprint: None,
            create_before_destroy: false,
        }
    }

    fn state_with(addrs: &[&str]) -> State {
        let mut s = State::new("0.1.0");
        for a in addrs {
            s.upsert(res(a));
        }
        s
    }

    fn addrs(s: &State) -> Vec<String> {
        s.resources.iter().map(|r| r.address.to_string()).collect()
    }

    #[test]
    fn new_state_has_fresh_lineage_and_serial_zero() {
        let a = State::new("0.1.0");
        let b = State::new("0.1.0");
        assert_eq!(a.serial, 0);
        assert_eq!(a.version, STATE_VERSION);
        assert_ne!(a.lineage, b.lineage);
        assert_eq!(uuid::Uuid::parse_str(&a.lineage).unwrap().get_version_num(), 4);
    }

    #[test]
    fn upsert_keeps_sorted_and_replaces() {
        let mut s = state_with(&["vault.main", "agent.cam[\"b\"]", "agent.cam[\"a\"]"]);
        assert_eq!(addrs(&s), ["agent.cam[\"a\"]", "agent.cam[\"b\"]", "vault.main"]);
        let mut r = res("vault.main");
        r.fingerprint = Some("f".into());
        s.upsert(r);
        assert_eq!(s.resources.len(), 3);
        assert_eq!(s.resource(&a("vault.main")).unwrap().fingerprint.as_deref(), Some("f"));
        assert!(s.remove(&a("vault.main")).is_some());
        assert!(s.resource(&a("vault.main")).is_none());
        assert!(s.remove(&a("vault.main")).is_none());
    }

    #[test]
    fn address_matching_respects_boundaries() {
        assert!(address_matches(&a("agent.cam"), "agent.cam"));
        assert!(address_matches(&a("agent.cam[\"a\"]"), "agent.cam"));
        assert!(address_matches(&a("agent.cam[0]"), "agent.cam"));
        assert!(!address_matches(&a("agent.camera"), "agent.cam"));
        assert!(!address_matches(&a("agent.camera[\"a\"]"), "agent.cam"));
        assert!(address_matches(&a("module.site.vault.main"), "module.site"));
        assert!(address_matches(&a("module.site[\"eu\"].vault.main"), "module.site"));
        assert!(!address_matches(&a("module.site2.vault.main"), "module.site"));
        assert!(!address_matches(&a("agent.cam"), ""));
    }

    #[test]
    fn remove_matching_prefix_semantics() {
        let mut s = state_with(&[
            "agent.cam",
            "agent.cam[\"a\"]",
            "agent.cam[0]",
            "agent.camera",
            "module.site.vault.main",
            "module.site.agent.x[\"y\"]",
            "module.site2.vault.main",
        ]);
        let removed = s.remove_matching("agent.cam");
        let removed: Vec<String> = removed.iter().map(|r| r.address.to_string()).collect();
        assert_eq!(removed, ["agent.cam", "agent.cam[\"a\"]", "agent.cam[0]"]);
        assert_eq!(addrs(&s), ["agent.camera", "module.site.agent.x[\"y\"]", "module.site.vault.main", "module.site2.vault.main"]);
        assert_eq!(s.remove_matching("module.site").len(), 2);
        assert_eq!(addrs(&s), ["agent.camera", "module.site2.vault.main"]);
        assert!(s.remove_matching("agent.cam").is_empty());
    }

    #[test]
    fn mv_prefix_semantics_and_dependencies() {
        let mut s = state_with(&["agent.cam[\"a\"]", "agent.cam[\"b\"]", "agent.camera", "vault.main"]);
        s.resources[3].dependencies = vec![a("agent.cam[\"a\"]"), a("agent.camera")];
        assert_eq!(s.mv("agent.cam", "agent.cams").unwrap(), 2);
        assert_eq!(addrs(&s), ["agent.camera", "agent.cams[\"a\"]", "agent.cams[\"b\"]", "vault.main"]);
        assert_eq!(s.resource(&a("vault.main")).unwrap().dependencies, [a("agent.cams[\"a\"]"), a("agent.camera")]);

        // Into a module.
        assert_eq!(s.mv("vault.main", "module.site.vault.main").unwrap(), 1);
        assert!(s.resource(&a("module.site.vault.main")).is_some());
        assert_eq!(s.mv("module.site", "module.eu").unwrap(), 1);
        assert!(s.resource(&a("module.eu.vault.main")).is_some());
    }

    #[test]
    fn mv_errors_leave_state_unchanged() {
        let mut s = state_with(&["agent.cam[\"a\"]", "agent.cam[\"b\"]", "agent.dog[\"b\"]"]);
        let before = s.clone();
        match s.mv("agent.cam", "agent.dog") {
            Err(StateError::DestinationExists { from, to }) => {
                assert_eq!(from, "agent.cam[\"b\"]");
                assert_eq!(to, "agent.dog[\"b\"]");
            }
            other => panic!("expected DestinationExists, got {other:?}"),
        }
        assert_eq!(s, before);
        assert!(matches!(s.mv("agent.ca", "x.y"), Err(StateError::NothingMatched { .. })));
        assert!(matches!(s.mv("agent.cam", ""), Err(StateError::InvalidAddress { .. })));
        assert_eq!(s, before);
        // A single instance to a plain address.
        assert_eq!(s.mv("agent.cam[\"a\"]", "agent.solo").unwrap(), 1);
        assert!(s.resource(&a("agent.solo")).is_some());
    }

    #[test]
    fn mv_keeps_open_module_keys_and_refuses_ambiguous_moves() {
        let mut s = state_with(&["module.site[\"a\"].agent.cam", "module.site[\"b\"].vault.main", "agent.cam[0]", "agent.cam[1]"]);
        s.resource_mut(&a("module.site[\"a\"].agent.cam")).unwrap().dependencies = vec![a("module.site[\"b\"].vault.main")];
        let moves = s.mv_checked("module.site", "module.eu", &|_, _| Ok(())).unwrap();
        let printed: Vec<(String, String)> = moves.iter().map(|(o, n)| (o.to_string(), n.to_string())).collect();
        assert_eq!(
            printed,
            [
                ("module.site[\"a\"].agent.cam".to_string(), "module.eu[\"a\"].agent.cam".to_string()),
                ("module.site[\"b\"].vault.main".to_string(), "module.eu[\"b\"].vault.main".to_string()),
            ]
        );
        assert_eq!(s.resource(&a("module.eu[\"a\"].agent.cam")).unwrap().dependencies, [a("module.eu[\"b\"].vault.main")]);
        // One instance of a module to a keyed module.
        assert_eq!(s.mv("module.eu[\"a\"]", "module.site[\"x\"]").unwrap(), 1);
        assert!(s.resource(&a("module.site[\"x\"].agent.cam")).is_some());

        let before = s.clone();
        let err = s.mv("agent.cam", "agent.solo[\"k\"]").unwrap_err().to_string();
        assert!(err.contains("move the instances one by one"), "{err}");
        let err = s.mv("module.eu", "agent.solo").unwrap_err().to_string();
        assert!(err.contains("can only move to another module"), "{err}");
        let err = s.mv("agent.cam", "module.x").unwrap_err().to_string();
        assert!(err.contains("can only move to another component"), "{err}");
        assert!(matches!(s.mv("agent.cam", "agent.cam["), Err(StateError::InvalidAddress { .. })));
        assert_eq!(s, before);
    }

    #[test]
    fn pending_ops() {
        let mut s = State::new("0.1.0");
        let first = s.begin_pending(&a("vault.main"), PendingKind::Create, None);
        let b = s.begin_pending(&a("agent.cam"), PendingKind::Delete, None);
        assert_ne!(first, b);
        assert_eq!(s.pending.len(), 2);
        assert!(time::OffsetDateTime::parse(&s.pending[0].started_at, &time::format_description::well_known::Rfc3339).is_ok());
        s.finish_pending(&first);
        assert_eq!(s.pending.len(), 1);
        assert_eq!(s.pending[0].id, b);
        assert_eq!(serde_json::to_value(&s.pending[0]).unwrap()["operation"], "delete");
    }

    #[test]
    fn debug_never_prints_values() {
        let mut s = State::new("0.1.0");
        let mut r = res("vault.main");
        r.attributes = json!({"password": "hunter2-secret", "nested": {"token": "tok-secret"}});
        s.upsert(r);
        s.outputs.insert("key".into(), OutputState { value: json!("out-secret"), sensitive: true });
        let dbg = format!("{s:?} {:#?}", s);
        assert!(!dbg.contains("hunter2-secret"), "{dbg}");
        assert!(!dbg.contains("tok-secret"), "{dbg}");
        assert!(!dbg.contains("out-secret"), "{dbg}");
        assert!(dbg.contains("password"));
    }

    #[test]
    fn validate_rejects_unknowns_and_bad_order() {
        let mut s = state_with(&["agent.b"]);
        assert!(s.validate().is_ok());
        s.resources[0].attributes = json!({"endpoint": {"$unknown": "vault.main.endpoint"}});
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("`endpoint`"), "{err}");
        s.resources[0].attributes = json!({"x": 1});
        s.resources.push(res("agent.a"));
        assert!(s.validate().is_err());
        s.sort_resources();
        assert!(s.validate().is_ok());
        s.resources[0].attributes = json!([1]);
        assert!(s.validate().is_err());
    }

    #[test]
    fn printed_addresses_compare_without_printing_as_they_print() {
        let addrs = [
            "agent.cam",
            "agent.cam[\"a\"]",
            "agent.cam[\"b\"]",
            "agent.c",
            "agent.camera",
            "module.site[\"n\"].agent.cam",
            "vault.main",
            "agent.cam[0]",
            "agent.cam[10]",
        ];
        for a in addrs {
            for b in addrs {
                let (pa, pb): (Address, Address) = (a.parse().unwrap(), b.parse().unwrap());
                assert_eq!(cmp_printed(&pa, &pb.to_string()), pa.to_string().cmp(&pb.to_string()), "{a} vs {b}");
            }
        }
    }
}

//! State in Kubernetes Secrets, locked with a coordination.k8s.io/v1 Lease.
//!
//! Objects, in `namespace`, for `secret_suffix = "edge"`:
//!
//! - Secret `kdeploy-state-edge`: the state, gzip-compressed, in `data.state`. A state whose
//!   compressed form exceeds 512 KiB (Kubernetes objects are limited to 1 MiB, and Secret data
//!   is stored base64-encoded) is split: the first chunk stays in this Secret and the others go
//!   to `kdeploy-state-edge-<generation>-<n>`; annotations `kdeploy.io/chunks`,
//!   `kdeploy.io/generation` and `kdeploy.io/sha256` (of the whole compressed state) tie them
//!   together. A write creates the new chunk Secrets first, then replaces the head Secret with
//!   `metadata.resourceVersion` set to the version this store last read or wrote (a
//!   compare-and-swap: a stale writer gets 409 Conflict and changes nothing), and finally
//!   deletes the previous generation's chunks.
//! - Lease `kdeploy-lock-edge`: `spec.holderIdentity` is the lock id, `leaseDurationSeconds` the
//!   lease, `acquireTime`/`renewTime` as usual, and the annotation `kdeploy.io/lock-info` the
//!   holder's [`LockInfo`]. It is renewed every third of the lease while held; every update
//!   carries `metadata.resourceVersion`. A lease not renewed for `leaseDurationSeconds` is taken
//!   over (the PUT's resourceVersion makes sure only one run wins); unlock deletes it with a
//!   resourceVersion precondition.
//!
//! - Secrets `kdeploy-state-edge-j<base serial>-<serial>`, labelled `kdeploy.io/journal: edge`:
//!   the journal of an apply in progress (see [`crate::journal`]), one Secret per group of
//!   records, written while this store holds the lock. `data.journal` is the gzip-compressed
//!   entry `{"kdeploy_journal":1,"lineage":"...","base_serial":12,"base":"<resourceVersion of
//!   the head Secret it follows>","serial":13,"records":[...]}`; the annotations
//!   `kdeploy.io/base-serial` and `kdeploy.io/serial` repeat the serials. Before each entry is
//!   created (a create fails when it exists), the head Secret's resourceVersion is checked
//!   against the checkpoint's (a metadata-only GET, as `kubectl get` does: its data is not
//!   transferred), so a run whose state was replaced appends nothing more. A reader lists the
//!   journal Secrets (one request) and replays those that follow the head it read. A whole
//!   write first checks that no entry it has not read follows the state it replaces, and after
//!   it deletes every journal Secret (highest serial first); the end of an apply folds the
//!   journal so, and so does the next read under the lock after a crash. An entry too large
//!   for one Secret is not appended: the whole state is written instead.
//!
//! Configuration keys: `secret_suffix` (required), `namespace` (default `default`),
//! `kubeconfig` (default `$KUBECONFIG`, then `~/.kube/config`), `context` (default the current
//! context), `lock_ttl` (lease length: seconds or a Go duration such as `90s`, default 60).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value as Json, json};
use sha2::Digest;

use crate::bridge::{Bridge, parse_ttl, passed};
use crate::error::StateError;
use crate::file::{decode, encode};
use crate::journal::{Entry, Group, Record, RemoteJournal, parse_entry, replay};
use crate::lock::LockInfo;
use crate::model::State;
use crate::store::{Append, StateStore};

const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Compressed bytes per Secret: base64 makes 683 KiB of it, well under the 1 MiB object limit.
pub const CHUNK: usize = 512 * 1024;
const LOCK_ANNOTATION: &str = "kdeploy.io/lock-info";

/// The Kubernetes backend's settings.
#[derive(Debug, Clone)]
pub struct KubeConfig {
    pub namespace: String,
    pub secret_suffix: String,
    pub kubeconfig: Option<String>,
    pub context: Option<String>,
    pub lock_ttl: Duration,
    /// The partition this store holds (set by kdeploy for `stack { partition = ... }`), kept in
    /// the head Secret's annotation `kdeploy.io/partition` so that it is found by name even when
    /// the Secret's name is hashed.
    pub partition: Option<String>,
}

impl KubeConfig {
    pub fn from_map(m: &BTreeMap<String, String>) -> Result<KubeConfig, String> {
        const KNOWN: &[&str] = &["namespace", "secret_suffix", "kubeconfig", "config_path", "context", "config_context", "lock_ttl", "partition"];
        if let Some(k) = m.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(format!("backend \"kubernetes\" has no setting {k:?}; it takes namespace, secret_suffix, kubeconfig, context, lock_ttl"));
        }
        let opt = |k: &str| m.get(k).filter(|v| !v.is_empty()).cloned();
        let suffix =
            opt("secret_suffix").ok_or("backend \"kubernetes\" needs secret_suffix = \"...\" (in the backend block or -backend-config secret_suffix=...)")?;
        if suffix.len() > 40
            || !suffix.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            || suffix.starts_with('-')
            || suffix.ends_with('-')
        {
            return Err(format!(
                "backend \"kubernetes\": secret_suffix {suffix:?} must be at most 40 lowercase letters, digits and inner dashes (it becomes part of object names)"
            ));
        }
        let lock_ttl = match opt("lock_ttl") {
            None => DEFAULT_TTL,
            Some(v) => parse_ttl("kubernetes", &v)?,
        };
        Ok(KubeConfig {
            namespace: opt("namespace").unwrap_or_else(|| "default".into()),
            secret_suffix: suffix,
            kubeconfig: opt("kubeconfig").or_else(|| opt("config_path")),
            context: opt("context").or_else(|| opt("config_context")),
            lock_ttl,
            partition: opt("partition"),
        })
    }
}

#[derive(Debug, Clone)]
enum Seen {
    NotRead,
    Absent,
    /// `serial` counts the journal read or appended; `stored` is the head Secret's own.
    Present {
        rv: String,
        lineage: String,
        serial: u64,
        stored: u64,
        parts: Vec<String>,
    },
}

const JOURNAL_LABEL: &str = "kdeploy.io/journal";
const STATE_LABEL: &str = "kdeploy.io/state";
const PARTITION_ANNOTATION: &str = "kdeploy.io/partition";

struct LockShared {
    info: LockInfo,
    rv: String,
    lost: Option<String>,
    released: bool,
}

struct Held {
    shared: Arc<tokio::sync::Mutex<LockShared>>,
    renewer: tokio::task::JoinHandle<()>,
}

/// A [`StateStore`] in Kubernetes.
pub struct KubeStore {
    cfg: KubeConfig,
    client: kube::Client,
    server: String,
    bridge: Bridge,
    seen: Seen,
    held: Option<Held>,
    warnings: Vec<String>,
    journal: RemoteJournal,
}

#[derive(Debug)]
enum ApiErr {
    Status(u16, String),
    Transport(String),
}

impl ApiErr {
    fn text(&self) -> String {
        match self {
            ApiErr::Status(c, m) => format!("the API server answered {c}: {m}"),
            ApiErr::Transport(m) => format!("cannot reach the API server: {m}"),
        }
    }
}

async fn send(client: &kube::Client, method: &str, path: &str, body: Option<&Json>) -> Result<Json, ApiErr> {
    send_accepting(client, method, path, body, "application/json").await
}

/// The `Accept` of a GET that wants an object's metadata only: a Table of one row whose object
/// is the metadata (what `kubectl get` asks for), then plain JSON.
const METADATA_ONLY: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

async fn send_accepting(client: &kube::Client, method: &str, path: &str, body: Option<&Json>, accept: &str) -> Result<Json, ApiErr> {
    let mut b = http::Request::builder().method(method).uri(path).header("Accept", accept);
    if body.is_some() {
        b = b.header("Content-Type", "application/json");
    }
    let bytes = body.map(|v| serde_json::to_vec(v).unwrap_or_default()).unwrap_or_default();
    let req = b.body(bytes).map_err(|e| ApiErr::Transport(e.to_string()))?;
    client.request::<Json>(req).await.map_err(|e| match e {
        kube::Error::Api(s) => ApiErr::Status(s.code, s.message.clone()),
        other => ApiErr::Transport(other.to_string()),
    })
}

fn micro_time(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute(), t.second(), t.microsecond())
}

/// The lock described by a Lease, with `expires` from its spec; `None` when nobody holds it.
fn lease_holder(lease: &Json, describe: &str) -> Option<LockInfo> {
    let id = lease["spec"]["holderIdentity"].as_str().filter(|s| !s.is_empty())?;
    let mut info: LockInfo =
        lease["metadata"]["annotations"][LOCK_ANNOTATION].as_str().and_then(|s| serde_json::from_str(s).ok()).unwrap_or_else(|| LockInfo::unknown(describe));
    info.id = id.to_string();
    let renew = lease["spec"]["renewTime"].as_str().or(lease["spec"]["acquireTime"].as_str());
    let secs = lease["spec"]["leaseDurationSeconds"].as_i64();
    if let (Some(renew), Some(secs)) = (renew, secs)
        && let Ok(t) = time::OffsetDateTime::parse(renew, &time::format_description::well_known::Rfc3339)
    {
        info.expires = crate::bridge::rfc3339_plus(t, secs as f64);
    }
    Some(info)
}

/// The journal entry in a journal Secret.
fn decode_entry(secret: &Json) -> Result<Entry, String> {
    let gz = B64.decode(secret["data"]["journal"].as_str().unwrap_or_default()).map_err(|_| "data.journal is not base64".to_string())?;
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut json).map_err(|e| format!("cannot decompress data.journal: {e}"))?;
    parse_entry(&json)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("writing to memory");
    e.finish().expect("writing to memory")
}

/// The partition of `suffix` whose head Secret has the metadata `meta`, if it is one.
fn stored_partition(suffix: &str, meta: &Json) -> Option<String> {
    let label = meta["labels"][STATE_LABEL].as_str()?;
    if meta["name"].as_str()? != format!("kdeploy-state-{label}") {
        return None; // a chunk Secret
    }
    let name = match meta["annotations"][PARTITION_ANNOTATION].as_str() {
        Some(name) => name.to_string(),
        None if !looks_hashed(label) => label.strip_prefix(suffix)?.strip_prefix('-')?.to_string(),
        None => return None,
    };
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    (valid && crate::partition::partition_suffix(suffix, &name) == label).then_some(name)
}

/// Whether a Secret suffix may be a hashed `SUFFIX-NAME` (longer than 40 characters, cut to 31
/// and 8 hex digits): its partition name cannot be read back from it.
fn looks_hashed(label: &str) -> bool {
    let Some((head, hash)) = label.rsplit_once('-') else { return false };
    head.len() >= 22 && hash.len() == 8 && hash.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

impl KubeStore {
    pub fn new(cfg: KubeConfig) -> Result<KubeStore, StateError> {
        // kube uses rustls with ring; when the AWS SDK is linked too, rustls cannot pick a
        // provider on its own. Installing fails harmlessly when one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let describe = format!("Kubernetes state secret {}/kdeploy-state-{}", cfg.namespace, cfg.secret_suffix);
        let bridge = Bridge::new(&describe)?;
        let path = cfg.kubeconfig.clone().unwrap_or_else(|| {
            std::env::var("KUBECONFIG")
                .ok()
                .and_then(|k| k.split(':').find(|s| !s.is_empty()).map(str::to_string))
                .unwrap_or_else(|| format!("{}/.kube/config", std::env::var("HOME").unwrap_or_else(|_| ".".into())))
        });
        let context = cfg.context.clone();
        let d = describe.clone();
        let (client, server) = bridge.run(async move {
            let err = |m: String| StateError::Backend { backend: d.clone(), message: m };
            let kc = kube::config::Kubeconfig::read_from(&path)
                .map_err(|e| err(format!("cannot read the kubeconfig {path}: {e}. Set kubeconfig = \"...\" in the backend block or KUBECONFIG")))?;
            let options = kube::config::KubeConfigOptions { context: context.clone(), cluster: None, user: None };
            let mut config = kube::Config::from_custom_kubeconfig(kc, &options).await.map_err(|e| {
                err(format!("cannot use {} of {path}: {e}", context.as_deref().map_or("the current context".to_string(), |c| format!("context {c:?}"))))
            })?;
            config.connect_timeout = Some(Duration::from_secs(10));
            config.read_timeout = Some(Duration::from_secs(60));
            let server = config.cluster_url.to_string();
            let client = kube::Client::try_from(config).map_err(|e| err(format!("cannot build a client for {server}: {e}")))?;
            Ok((client, server))
        })?;
        Ok(KubeStore { cfg, client, server, bridge, seen: Seen::NotRead, held: None, warnings: Vec::new(), journal: RemoteJournal::Off })
    }

    fn head_name(&self) -> String {
        format!("kdeploy-state-{}", self.cfg.secret_suffix)
    }

    fn lease_name(&self) -> String {
        format!("kdeploy-lock-{}", self.cfg.secret_suffix)
    }

    fn secrets_path(&self) -> String {
        format!("/api/v1/namespaces/{}/secrets", self.cfg.namespace)
    }

    fn lease_path(&self) -> String {
        format!("/apis/coordination.k8s.io/v1/namespaces/{}/leases/{}", self.cfg.namespace, self.lease_name())
    }

    fn lock_location(&self) -> String {
        format!("Lease {}/{} on {}", self.cfg.namespace, self.lease_name(), self.server)
    }

    fn backend_err(&self, what: &str, e: &ApiErr) -> StateError {
        let hint = match e {
            ApiErr::Status(401, _) => ". Refresh the kubeconfig credentials",
            ApiErr::Status(403, _) => ". Grant this user get/create/update/delete on secrets and coordination.k8s.io leases in the namespace",
            ApiErr::Status(404, _) => ". Check that the namespace exists",
            _ => "",
        };
        StateError::Backend { backend: self.describe(), message: format!("{what}: {}{hint}", e.text()) }
    }

    /// One request on the bridge.
    fn call(&self, method: &'static str, path: String, body: Option<Json>) -> Result<Result<Json, ApiErr>, StateError> {
        let client = self.client.clone();
        self.bridge.run(async move { Ok(send(&client, method, &path, body.as_ref()).await) })
    }

    fn get_secret(&self, name: &str) -> Result<Option<Json>, StateError> {
        match self.call("GET", format!("{}/{name}", self.secrets_path()), None)? {
            Ok(v) => Ok(Some(v)),
            Err(ApiErr::Status(404, _)) => Ok(None),
            Err(e) => Err(self.backend_err(&format!("cannot read Secret {name}"), &e)),
        }
    }

    /// Reads the state (all chunks) and replays its journal, into `seen`: the state and how many
    /// journal entries were replayed. A writer folding the journal meanwhile (the head changed
    /// under the read) makes it read again.
    fn load(&mut self) -> Result<Option<(State, usize)>, StateError> {
        let mut attempt = 0u32;
        loop {
            let Some((mut state, rv, parts)) = self.read_head()? else {
                self.seen = Seen::Absent;
                return Ok(None);
            };
            let stored = state.serial;
            match self.replay_journal(&mut state, &rv) {
                Ok(replayed) => {
                    self.seen = Seen::Present { rv, lineage: state.lineage.clone(), serial: state.serial, stored, parts };
                    return Ok(Some((state, replayed)));
                }
                Err(e) => {
                    attempt = attempt.saturating_add(1);
                    if attempt > 3 || self.head_rv()?.as_deref() == Some(rv.as_str()) {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// The state in the head Secret and its chunks, with the head's resourceVersion and the
    /// chunk Secrets' names.
    fn read_head(&self) -> Result<Option<(State, String, Vec<String>)>, StateError> {
        // A writer may delete the chunks of the generation we are reading: read again.
        for attempt in 0.. {
            let Some(head) = self.get_secret(&self.head_name())? else {
                return Ok(None);
            };
            let ann = &head["metadata"]["annotations"];
            let chunks: usize = ann["kdeploy.io/chunks"].as_str().and_then(|c| c.parse().ok()).unwrap_or(1);
            let generation = ann["kdeploy.io/generation"].as_str().unwrap_or_default().to_string();
            let damaged = |m: &str| StateError::Decode { source_name: self.describe(), line: 0, column: 0, message: m.to_string() };
            let mut gz = B64.decode(head["data"]["state"].as_str().unwrap_or_default()).map_err(|_| damaged("data.state is not base64"))?;
            let mut parts = Vec::new();
            let mut missing = false;
            for i in 1..chunks {
                let name = format!("{}-{generation}-{i}", self.head_name());
                match self.get_secret(&name)? {
                    Some(p) => gz.extend(B64.decode(p["data"]["state"].as_str().unwrap_or_default()).map_err(|_| damaged("a chunk Secret is not base64"))?),
                    None => {
                        missing = true;
                        break;
                    }
                }
                parts.push(name);
            }
            if missing {
                if attempt < 3 {
                    continue;
                }
                return Err(damaged("a chunk Secret of the state is missing"));
            }
            if let Some(sum) = ann["kdeploy.io/sha256"].as_str()
                && format!("{:x}", sha2::Sha256::digest(&gz)) != sum
            {
                if attempt < 3 {
                    continue;
                }
                return Err(damaged("the state's chunks do not match their checksum"));
            }
            let mut json = Vec::new();
            flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut json).map_err(|e| damaged(&format!("cannot decompress the state: {e}")))?;
            let state = decode(&json, &self.describe())?;
            let rv = head["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string();
            return Ok(Some((state, rv, parts)));
        }
        unreachable!()
    }

    /// The head Secret's resourceVersion now, without its data; `None` when it is absent.
    fn head_rv(&self) -> Result<Option<String>, StateError> {
        let client = self.client.clone();
        let path = format!("{}/{}", self.secrets_path(), self.head_name());
        match self.bridge.run(async move { Ok(send_accepting(&client, "GET", &path, None, METADATA_ONLY).await) })? {
            Ok(v) => {
                let meta = if v["kind"] == "Table" { &v["rows"][0]["object"]["metadata"] } else { &v["metadata"] };
                Ok(meta["resourceVersion"].as_str().map(str::to_string))
            }
            Err(ApiErr::Status(404, _)) => Ok(None),
            Err(e) => Err(self.backend_err(&format!("cannot read Secret {}", self.head_name()), &e)),
        }
    }

    /// Every journal Secret: (base serial, serial, name, the Secret).
    fn journal_secrets(&self) -> Result<Vec<(u64, u64, String, Json)>, StateError> {
        let path = format!("{}?labelSelector={JOURNAL_LABEL}%3D{}", self.secrets_path(), self.cfg.secret_suffix);
        let list = match self.call("GET", path, None)? {
            Ok(v) => v,
            Err(e) => return Err(self.backend_err("cannot list the journal Secrets", &e)),
        };
        let mut out: Vec<(u64, u64, String, Json)> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| {
                let ann = &o["metadata"]["annotations"];
                let base = ann["kdeploy.io/base-serial"].as_str()?.parse().ok()?;
                let serial = ann["kdeploy.io/serial"].as_str()?.parse().ok()?;
                Some((base, serial, o["metadata"]["name"].as_str()?.to_string(), o.clone()))
            })
            .collect();
        out.sort_by_key(|(base, serial, _, _)| (*base, *serial));
        Ok(out)
    }

    /// The partitions stored next to this store's Secret: head Secrets labelled
    /// `kdeploy.io/state: SUFFIX-NAME` (metadata only, one list request). NAME is the
    /// `kdeploy.io/partition` annotation; a Secret written without it is recognized by its name,
    /// except a hashed one (see [`looks_hashed`]).
    pub fn stored_partitions(&self) -> Result<Vec<String>, StateError> {
        let client = self.client.clone();
        let path = format!("{}?labelSelector={STATE_LABEL}", self.secrets_path());
        let list = match self.bridge.run(async move { Ok(send_accepting(&client, "GET", &path, None, METADATA_ONLY).await) })? {
            Ok(v) => v,
            Err(e) => return Err(self.backend_err("cannot list the state Secrets to find the stored partitions", &e)),
        };
        let metas: Vec<&Json> = match list["kind"].as_str() {
            Some("Table") => list["rows"].as_array().into_iter().flatten().map(|r| &r["object"]["metadata"]).collect(),
            _ => list["items"].as_array().into_iter().flatten().map(|o| &o["metadata"]).collect(),
        };
        let mut names: Vec<String> = metas.into_iter().filter_map(|m| stored_partition(&self.cfg.secret_suffix, m)).collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Replays the journal Secrets that follow `state` (the head of resourceVersion `rv`).
    fn replay_journal(&self, state: &mut State, rv: &str) -> Result<usize, StateError> {
        let entries: Vec<(String, Json)> = self.journal_secrets()?.into_iter().filter(|(base, ..)| *base == state.serial).map(|(_, _, n, o)| (n, o)).collect();
        if entries.is_empty() {
            return Ok(0);
        }
        let location = format!("{} (journal Secrets labelled {JOURNAL_LABEL}={})", self.describe(), self.cfg.secret_suffix);
        let mut groups = Vec::with_capacity(entries.len());
        for (name, secret) in entries {
            let entry = decode_entry(&secret).map_err(|message| StateError::Journal { location: format!("Secret {}/{name}", self.cfg.namespace), message })?;
            // An entry over another state of that serial (another lineage) is not this one's.
            if entry.lineage == state.lineage && entry.base == rv && entry.base_serial == state.serial {
                groups.push(Group { serial: entry.serial, records: entry.records });
            }
        }
        replay(state, groups).map_err(|message| StateError::Journal { location, message })
    }

    /// Deletes every journal Secret (the state just written supersedes them), highest serial
    /// first; what cannot be deleted is ignored by readers and named in a warning.
    fn clear_journal(&mut self) {
        let secrets = match self.journal_secrets() {
            Ok(s) => s,
            Err(e) => {
                self.warnings.push(format!("the journal of {} could not be listed to be removed (readers ignore it): {e}", self.describe()));
                return;
            }
        };
        let mut failed = Vec::new();
        for (_, _, name, _) in secrets.into_iter().rev() {
            match self.call("DELETE", format!("{}/{name}", self.secrets_path()), None) {
                Ok(Ok(_)) | Ok(Err(ApiErr::Status(404, _))) => {}
                _ => failed.push(name),
            }
        }
        if let Some(first) = failed.first() {
            self.warnings.push(format!(
                "{} journal Secret(s) such as {}/{first} could not be deleted; readers ignore them, and the next write tries again",
                failed.len(),
                self.cfg.namespace
            ));
        }
    }

    /// Fails unless this run's lock is still its own (as the renewal task last saw it).
    fn check_lock_kept(&self) -> Result<(), StateError> {
        if let Some(held) = &self.held {
            let shared = held.shared.clone();
            if let Some(reason) = self.bridge.run(async move { Ok(shared.lock().await.lost.clone()) })? {
                return Err(StateError::WriteConflict { location: self.describe(), reason: format!(" (this run's lock was lost: {reason})") });
            }
        }
        Ok(())
    }

    /// Creates one journal Secret, once the head is still the checkpoint `base_rv`.
    /// `Ok(false)`: the entry is too large for a Secret, nothing was written.
    fn put_entry(&self, base_rv: &str, base_serial: u64, serial: u64, body: &[u8]) -> Result<bool, StateError> {
        let location = self.describe();
        let gz = gzip(body);
        if gz.len() > CHUNK {
            return Ok(false);
        }
        if self.head_rv()?.as_deref() != Some(base_rv) {
            return Err(StateError::WriteConflict { location, reason: " (the head Secret was replaced since this run's last write)".into() });
        }
        let name = format!("{}-j{base_serial}-{serial}", self.head_name());
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": self.cfg.namespace,
                "annotations": {"kdeploy.io/base-serial": base_serial.to_string(), "kdeploy.io/serial": serial.to_string()},
                "labels": {"app.kubernetes.io/managed-by": "kdeploy", JOURNAL_LABEL: self.cfg.secret_suffix}},
            "data": {"journal": B64.encode(&gz)},
        });
        match self.call("POST", self.secrets_path(), Some(secret))? {
            Ok(_) => Ok(true),
            Err(ApiErr::Status(409, _)) => {
                Err(StateError::WriteConflict { location, reason: " (its journal entry exists already: another run appended to it)".into() })
            }
            Err(e) => Err(self.backend_err(&format!("cannot create Secret {name}"), &e)),
        }
    }

    fn secret(&self, name: &str, data: &[u8], annotations: Json) -> Json {
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": self.cfg.namespace, "annotations": annotations,
                "labels": {"app.kubernetes.io/managed-by": "kdeploy", "kdeploy.io/state": self.cfg.secret_suffix}},
            "data": {"state": B64.encode(data)},
        })
    }

    fn delete_secrets(&self, names: &[String]) {
        for n in names {
            // Best effort: a leftover chunk is never read once the head points elsewhere.
            let _ = self.call("DELETE", format!("{}/{n}", self.secrets_path()), None);
        }
    }

    /// What a whole write checks first: the lock is still this run's, the lineage and serial
    /// fit (`fold`: `state` has the serial of the stored state with its journal), and no journal
    /// entry this run has not read follows the stored state. Returns the head's resourceVersion
    /// (the compare-and-swap) and the chunk Secrets it replaces.
    fn write_precheck(&mut self, state: &State, check_lineage: bool, fold: bool) -> Result<(Option<String>, Vec<String>), StateError> {
        state.validate()?;
        let location = self.describe();
        self.check_lock_kept()?;
        if matches!(self.seen, Seen::NotRead) || !check_lineage {
            self.load()?;
        }
        match &self.seen {
            Seen::NotRead => unreachable!("refreshed above"),
            Seen::Absent => Ok((None, Vec::new())),
            Seen::Present { rv, lineage, serial, stored, parts } => {
                if check_lineage && *lineage != state.lineage {
                    return Err(StateError::LineageMismatch { location, existing: lineage.clone(), ours: state.lineage.clone() });
                }
                if *serial > state.serial || (*serial == state.serial && !fold) {
                    return Err(StateError::SerialNotIncreasing { location, existing: *serial, attempted: state.serial });
                }
                let (read, stored, rv, parts) = (*serial, *stored, rv.clone(), parts.clone());
                // Entries appended since this run read the state (by a run that holds the lock,
                // when this one writes without it) would be lost.
                if self.journal_secrets()?.iter().any(|(base, serial, ..)| *base == stored && *serial > read) {
                    return Err(StateError::WriteConflict { location, reason: " (its journal holds operations recorded since this run read it)".into() });
                }
                Ok((Some(rv), parts))
            }
        }
    }

    /// A whole write (see the module docs); the journal it supersedes is deleted after it.
    /// Returns the size of the encoded state.
    fn put_state(&mut self, state: &State, check_lineage: bool, fold: bool) -> Result<usize, StateError> {
        let location = self.describe();
        let (rv, old_parts) = self.write_precheck(state, check_lineage, fold)?;
        let encoded = encode(state);
        let len = encoded.len();
        let gz = gzip(&encoded);
        let chunks: Vec<&[u8]> = gz.chunks(CHUNK).collect();
        let generation = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        let mut new_parts = Vec::new();
        for (i, chunk) in chunks.iter().enumerate().skip(1) {
            let name = format!("{}-{generation}-{i}", self.head_name());
            let body = self.secret(&name, chunk, json!({"kdeploy.io/generation": generation}));
            if let Err(e) = self.call("POST", self.secrets_path(), Some(body))? {
                self.delete_secrets(&new_parts);
                return Err(self.backend_err(&format!("cannot create Secret {name}"), &e));
            }
            new_parts.push(name);
        }
        let annotations = json!({
            "kdeploy.io/chunks": chunks.len().max(1).to_string(),
            "kdeploy.io/generation": generation,
            "kdeploy.io/sha256": format!("{:x}", sha2::Sha256::digest(&gz)),
            "kdeploy.io/lineage": state.lineage,
            "kdeploy.io/serial": state.serial.to_string(),
        });
        let mut annotations = annotations;
        if let Some(p) = &self.cfg.partition {
            annotations[PARTITION_ANNOTATION] = json!(p);
        }
        let mut head = self.secret(&self.head_name(), chunks.first().copied().unwrap_or_default(), annotations);
        let result = match &rv {
            None => self.call("POST", self.secrets_path(), Some(head))?,
            Some(rv) => {
                head["metadata"]["resourceVersion"] = json!(rv);
                self.call("PUT", format!("{}/{}", self.secrets_path(), self.head_name()), Some(head))?
            }
        };
        match result {
            Ok(v) => {
                self.delete_secrets(&old_parts);
                let rv = v["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string();
                self.seen = Seen::Present { rv, lineage: state.lineage.clone(), serial: state.serial, stored: state.serial, parts: new_parts };
                self.journal = RemoteJournal::Off;
                self.clear_journal();
                Ok(len)
            }
            Err(e) => {
                self.delete_secrets(&new_parts);
                match e {
                    ApiErr::Status(409, _) => Err(StateError::WriteConflict { location, reason: " (its resourceVersion changed)".into() }),
                    e => Err(self.backend_err(&format!("cannot write Secret {}", self.head_name()), &e)),
                }
            }
        }
    }

    fn lease_body(&self, info: &LockInfo, acquire: &str, rv: Option<&str>) -> Json {
        let now = time::OffsetDateTime::now_utc();
        let ttl = self.cfg.lock_ttl.as_secs().max(1);
        let mut info = info.clone();
        info.expires = crate::bridge::rfc3339_plus(now, ttl as f64);
        let mut body = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": self.lease_name(), "namespace": self.cfg.namespace,
                "labels": {"app.kubernetes.io/managed-by": "kdeploy", "kdeploy.io/state": self.cfg.secret_suffix},
                "annotations": {LOCK_ANNOTATION: serde_json::to_string(&info).expect("lock info serializes")}},
            "spec": {"holderIdentity": info.id, "leaseDurationSeconds": ttl, "acquireTime": acquire, "renewTime": micro_time(now)},
        });
        if let Some(rv) = rv {
            body["metadata"]["resourceVersion"] = json!(rv);
        }
        body
    }

    fn try_lock(&mut self, info: &LockInfo) -> Result<Option<LockInfo>, StateError> {
        let now = micro_time(time::OffsetDateTime::now_utc());
        let current = match self.call("GET", self.lease_path(), None)? {
            Ok(v) => Some(v),
            Err(ApiErr::Status(404, _)) => None,
            Err(e) => return Err(self.backend_err("cannot read the lock Lease", &e)),
        };
        let (result, took_over) = match &current {
            None => {
                let body = self.lease_body(info, &now, None);
                let path = format!("/apis/coordination.k8s.io/v1/namespaces/{}/leases", self.cfg.namespace);
                (self.call("POST", path, Some(body))?, None)
            }
            Some(lease) => {
                let rv = lease["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string();
                let holder = lease_holder(lease, &self.describe());
                match holder {
                    Some(h) if h.expires.is_empty() || !passed(&h.expires) => return Ok(Some(h)),
                    h => {
                        let body = self.lease_body(info, &now, Some(&rv));
                        (self.call("PUT", self.lease_path(), Some(body))?, h)
                    }
                }
            }
        };
        match result {
            Ok(v) => {
                if let Some(old) = took_over {
                    self.warnings.push(format!(
                        "took over the expired lock {} on {}: it was held by {} for {} since {} and expired at {} (that run stopped renewing it: it was killed or lost its connection)",
                        old.id, self.lock_location(), old.who, old.operation, old.created, old.expires
                    ));
                }
                let rv = v["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string();
                let mut ours = info.clone();
                ours.expires = lease_holder(&v, "").map(|h| h.expires).unwrap_or_default();
                self.start_held(ours, rv, now);
                Ok(None)
            }
            // Someone else created or updated it first: look again.
            Err(ApiErr::Status(409, _)) => match self.call("GET", self.lease_path(), None)? {
                Ok(v) => Ok(Some(lease_holder(&v, &self.describe()).unwrap_or_else(|| LockInfo::unknown(&self.describe())))),
                Err(_) => Ok(Some(LockInfo::unknown(&self.describe()))),
            },
            Err(e) => Err(self.backend_err("cannot take the lock Lease", &e)),
        }
    }

    fn start_held(&mut self, info: LockInfo, rv: String, acquire: String) {
        let shared = Arc::new(tokio::sync::Mutex::new(LockShared { info, rv, lost: None, released: false }));
        let task_shared = shared.clone();
        let client = self.client.clone();
        let ttl = self.cfg.lock_ttl;
        let path = self.lease_path();
        // A copy of the store's naming for the body, without borrowing the store in the task.
        let template = KubeLeaseTemplate {
            name: self.lease_name(),
            namespace: self.cfg.namespace.clone(),
            suffix: self.cfg.secret_suffix.clone(),
            ttl: ttl.as_secs().max(1),
        };
        let renewer = self.bridge.spawn(async move {
            loop {
                tokio::time::sleep(ttl.checked_div(3).unwrap_or_default()).await;
                let mut s = task_shared.lock().await;
                if s.released || s.lost.is_some() {
                    return;
                }
                let (body, expires) = template.body(&s.info, &acquire, &s.rv);
                match send(&client, "PUT", &path, Some(&body)).await {
                    Ok(v) => {
                        s.rv = v["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string();
                        s.info.expires = expires;
                    }
                    Err(ApiErr::Status(409 | 404, _)) => {
                        s.lost = Some("another run took it over or force-unlocked it".into());
                        return;
                    }
                    Err(_) => {
                        if passed(&s.info.expires) {
                            s.lost = Some(format!("it expired at {} while it could not be renewed", s.info.expires));
                            return;
                        }
                    }
                }
            }
        });
        self.held = Some(Held { shared, renewer });
    }

    fn release(&mut self, held: Held) -> Result<(), StateError> {
        let client = self.client.clone();
        let path = self.lease_path();
        let describe = self.describe();
        self.bridge.run(async move {
            let mut s = held.shared.lock().await;
            s.released = true;
            held.renewer.abort();
            if s.lost.is_some() {
                return Ok(());
            }
            let body = json!({"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"resourceVersion": s.rv}});
            match send(&client, "DELETE", &path, Some(&body)).await {
                Ok(_) | Err(ApiErr::Status(404 | 409, _)) => Ok(()),
                Err(e) => Err(StateError::Backend {
                    backend: describe,
                    message: format!("cannot release the lock Lease: {}. Release it with `kdeploy force-unlock {}` once this is fixed", e.text(), s.info.id),
                }),
            }
        })
    }
}

/// What the renewal task needs to build Lease bodies.
struct KubeLeaseTemplate {
    name: String,
    namespace: String,
    suffix: String,
    ttl: u64,
}

impl KubeLeaseTemplate {
    fn body(&self, info: &LockInfo, acquire: &str, rv: &str) -> (Json, String) {
        let now = time::OffsetDateTime::now_utc();
        let mut info = info.clone();
        info.expires = crate::bridge::rfc3339_plus(now, self.ttl as f64);
        let body = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace, "resourceVersion": rv,
                "labels": {"app.kubernetes.io/managed-by": "kdeploy", "kdeploy.io/state": self.suffix},
                "annotations": {LOCK_ANNOTATION: serde_json::to_string(&info).expect("lock info serializes")}},
            "spec": {"holderIdentity": info.id, "leaseDurationSeconds": self.ttl, "acquireTime": acquire, "renewTime": micro_time(now)},
        });
        (body, info.expires)
    }
}

impl StateStore for KubeStore {
    fn describe(&self) -> String {
        format!("Kubernetes state secret {}/{} on {}", self.cfg.namespace, self.head_name(), self.server)
    }

    /// Reads the state and replays its journal; under the lock, a replayed journal is folded
    /// into the head at once (best effort: a failure is a warning).
    fn read(&mut self) -> Result<Option<State>, StateError> {
        let Some((state, replayed)) = self.load()? else { return Ok(None) };
        if replayed > 0
            && self.held.is_some()
            && let Err(e) = self.put_state(&state, true, true)
        {
            self.warnings.push(format!("the journal of an apply that did not finish could not be folded into {}, and stays: {e}", self.describe()));
        }
        Ok(Some(state))
    }

    fn write(&mut self, state: &State) -> Result<(), StateError> {
        self.put_state(state, true, false).map(|_| ())
    }

    fn force_write(&mut self, state: &State) -> Result<(), StateError> {
        self.put_state(state, false, false).map(|_| ())
    }

    fn checkpoint(&mut self, state: &State) -> Result<bool, StateError> {
        let fold = self.journal.folded_by(state);
        let len = self.put_state(state, true, fold)?;
        let Seen::Present { rv, .. } = &self.seen else { return Ok(false) };
        if self.held.is_none() {
            return Ok(false);
        }
        self.journal = RemoteJournal::open(state, rv.clone(), len);
        Ok(true)
    }

    fn append(&mut self, serial: u64, records: &[Record]) -> Result<Append, StateError> {
        let backend = self.describe();
        let open = self.journal.take(serial, &backend)?;
        self.check_lock_kept()?;
        let body = open.entry(serial, records)?;
        if !self.put_entry(&open.base, open.base_serial, serial, &body)? {
            // Too large for one Secret: the caller writes the whole state instead.
            let (journal, append) = open.declined();
            self.journal = journal;
            return Ok(append);
        }
        if let Seen::Present { serial: seen, .. } = &mut self.seen {
            *seen = serial;
        }
        let (journal, append) = open.stored(serial, body.len());
        self.journal = journal;
        Ok(append)
    }

    fn lock(&mut self, mut info: LockInfo, timeout: Duration) -> Result<(), StateError> {
        if let Some(held) = &self.held {
            let shared = held.shared.clone();
            let id = self.bridge.run(async move { Ok(shared.lock().await.info.id.clone()) })?;
            return Err(StateError::AlreadyLocked { path: self.lock_location(), id });
        }
        if info.path.is_empty() {
            info.path = self.describe();
        }
        let deadline = Instant::now().checked_add(timeout);
        loop {
            match self.try_lock(&info)? {
                None => return Ok(()),
                Some(holder) => {
                    let remaining = deadline.map_or(Duration::from_millis(500), |d| d.saturating_duration_since(Instant::now()));
                    if remaining.is_zero() {
                        return Err(StateError::Locked { holder: Box::new(holder), path: self.lock_location() });
                    }
                    std::thread::sleep(remaining.min(Duration::from_millis(500)));
                }
            }
        }
    }

    fn unlock(&mut self) -> Result<(), StateError> {
        match self.held.take() {
            Some(held) => self.release(held),
            None => Err(StateError::NotLocked { path: self.lock_location() }),
        }
    }

    fn lock_info(&mut self) -> Result<Option<LockInfo>, StateError> {
        if let Some(held) = &self.held {
            let shared = held.shared.clone();
            return self.bridge.run(async move { Ok(Some(shared.lock().await.info.clone())) });
        }
        match self.call("GET", self.lease_path(), None)? {
            Ok(v) => Ok(lease_holder(&v, &self.describe())),
            Err(ApiErr::Status(404, _)) => Ok(None),
            Err(e) => Err(self.backend_err("cannot read the lock Lease", &e)),
        }
    }

    fn force_unlock(&mut self, id: &str) -> Result<(), StateError> {
        let path = self.lock_location();
        if self.held.is_some() {
            let current = self.lock_info()?.expect("held");
            if current.id != id {
                return Err(StateError::LockIdMismatch { given: id.to_string(), holder: Box::new(current), path });
            }
            return self.unlock();
        }
        let lease = match self.call("GET", self.lease_path(), None)? {
            Ok(v) => v,
            Err(ApiErr::Status(404, _)) => return Err(StateError::NotLocked { path }),
            Err(e) => return Err(self.backend_err("cannot read the lock Lease", &e)),
        };
        let Some(holder) = lease_holder(&lease, &self.describe()) else { return Err(StateError::NotLocked { path }) };
        if holder.id != id {
            return Err(StateError::LockIdMismatch { given: id.to_string(), holder: Box::new(holder), path });
        }
        let rv = lease["metadata"]["resourceVersion"].as_str().unwrap_or_default();
        let body = json!({"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"resourceVersion": rv}});
        match self.call("DELETE", self.lease_path(), Some(body))? {
            Ok(_) | Err(ApiErr::Status(404, _)) => Ok(()),
            Err(e) => Err(self.backend_err("cannot delete the lock Lease", &e)),
        }
    }

    fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }
}

impl Drop for KubeStore {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            let _ = self.release(held);
        }
    }
}

#[cfg(test)]
mod partition_tests {
    use super::*;

    fn meta(name: &str, label: &str, partition: Option<&str>) -> Json {
        let mut m = json!({"name": name, "labels": {STATE_LABEL: label}, "annotations": {}});
        if let Some(p) = partition {
            m["annotations"][PARTITION_ANNOTATION] = json!(p);
        }
        m
    }

    #[test]
    fn head_secrets_name_their_partition() {
        assert_eq!(stored_partition("edge", &meta("kdeploy-state-edge-site-a", "edge-site-a", None)).as_deref(), Some("site-a"));
        assert_eq!(stored_partition("edge", &meta("kdeploy-state-edge-site-a-0123abcd-1", "edge-site-a", None)), None, "a chunk");
        assert_eq!(stored_partition("edge", &meta("kdeploy-state-edge", "edge", None)), None, "the unpartitioned state");
        assert_eq!(stored_partition("edge", &meta("kdeploy-state-other-x", "other-x", None)), None);
        let long = crate::partition::partition_suffix("a-rather-long-suffix-here", "and-a-long-partition");
        let hashed = meta(&format!("kdeploy-state-{long}"), &long, None);
        assert_eq!(stored_partition("a-rather-long-suffix-here", &hashed), None, "hashed, written without the annotation");
        let hashed = meta(&format!("kdeploy-state-{long}"), &long, Some("and-a-long-partition"));
        assert_eq!(stored_partition("a-rather-long-suffix-here", &hashed).as_deref(), Some("and-a-long-partition"));
    }
}

//! State in S3 or an S3-compatible store (MinIO, moto), with a lease lock.
//!
//! Objects, for `key = "stacks/edge.json"`:
//!
//! - `stacks/edge.json`: the state. Every write is a compare-and-swap: `If-Match` the ETag this
//!   store last read or wrote (`If-None-Match: *` when there was no state), so a writer that
//!   lost its lock, or that read an older state, can never overwrite a newer state.
//! - `stacks/edge.json.lock`: the lock, the holder's [`LockInfo`] as JSON including `expires`.
//!   It is created with `If-None-Match: *` (only one creator wins), renewed by a background task
//!   every third of the lease (`If-Match` its ETag) while the store holds it, and deleted
//!   (`If-Match` its ETag) on unlock. A lock whose `expires` has passed (its holder was killed
//!   or lost the network) is taken over with `If-Match` on the ETag that was read, so two
//!   runs taking over at once cannot both win.
//!
//! - `stacks/edge.json.journal/<base serial>/<serial>` (serials as 20 digits): the journal of an
//!   apply in progress (see [`crate::journal`]), one object per group of records, written while
//!   this store holds the lock: `{"kdeploy_journal":1,"lineage":"...","base_serial":12,
//!   "base":"<ETag of the state object it follows>","serial":13,"records":[...]}`. Each is
//!   created with `If-None-Match: *`, after a `HEAD` of the state object `If-Match` the ETag of
//!   the checkpoint it follows (a run whose state was replaced appends nothing more). A reader
//!   replays the entries under the state's serial whose lineage and base ETag match. A whole
//!   write first checks that no entry it has not read follows the state it replaces, and after
//!   it deletes every journal object (highest serial first); the end of an apply folds the
//!   journal so, and so does the next read under the lock after a crash.
//!
//! Configuration keys: `bucket`, `key`, `region` (required), `endpoint` (S3-compatible
//! stores; path-style addressing is then used unless `force_path_style = false`),
//! `access_key`/`secret_key`/`session_token` (else the usual AWS credential chain),
//! `profile`, `lock_ttl` (lease length: seconds or a Go duration such as `90s`, default 60),
//! `timeout` (how long one S3 call may take, all attempts included, default `30s`: a frozen
//! endpoint fails within it, with a message naming the setting).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;

use crate::bridge::{Bridge, parse_ttl, passed, rfc3339_in};
use crate::error::StateError;
use crate::file::{decode, encode};
use crate::journal::{Group, Record, RemoteJournal, parse_entry, replay};
use crate::lock::LockInfo;
use crate::model::State;
use crate::store::{Append, StateStore};

const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// The S3 backend's settings.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    pub key: String,
    pub region: String,
    pub endpoint: Option<String>,
    pub force_path_style: bool,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    pub session_token: Option<String>,
    pub profile: Option<String>,
    pub lock_ttl: Duration,
    /// How long one S3 call may take, all attempts included (`timeout`, default 30s).
    pub timeout: Duration,
}

/// The default of the `timeout` setting.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl S3Config {
    /// From backend configuration keys (see the module docs).
    pub fn from_map(m: &BTreeMap<String, String>) -> Result<S3Config, String> {
        const KNOWN: &[&str] =
            &["bucket", "key", "region", "endpoint", "force_path_style", "access_key", "secret_key", "session_token", "profile", "lock_ttl", "timeout"];
        if let Some(k) = m.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(format!("backend \"s3\" has no setting {k:?}; it takes {}", KNOWN.join(", ")));
        }
        let req = |k: &str| {
            m.get(k)
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or_else(|| format!("backend \"s3\" needs {k} = \"...\" (in the backend block or -backend-config {k}=...)"))
        };
        let opt = |k: &str| m.get(k).filter(|v| !v.is_empty()).cloned();
        let endpoint = opt("endpoint");
        let force_path_style = match opt("force_path_style").as_deref() {
            None => endpoint.is_some(),
            Some("true") => true,
            Some("false") => false,
            Some(o) => return Err(format!("backend \"s3\": force_path_style must be true or false, not {o:?}")),
        };
        let lock_ttl = match opt("lock_ttl") {
            None => DEFAULT_TTL,
            Some(v) => parse_ttl("s3", &v)?,
        };
        let timeout = match opt("timeout") {
            None => DEFAULT_TIMEOUT,
            Some(v) => {
                kdeploy_provider::Duration::parse_or_seconds(&v).map_err(|e| format!("backend \"s3\": timeout: {e}"))?.as_std().max(Duration::from_secs(1))
            }
        };
        Ok(S3Config {
            bucket: req("bucket")?,
            key: req("key")?,
            region: req("region")?,
            endpoint,
            force_path_style,
            access_key: opt("access_key"),
            secret_key: opt("secret_key"),
            session_token: opt("session_token"),
            profile: opt("profile"),
            lock_ttl,
            timeout,
        })
    }
}

#[derive(Debug, Clone)]
enum Seen {
    NotRead,
    Absent,
    /// `serial` counts the journal read or appended; `stored` is the state object's own.
    Present {
        etag: String,
        lineage: String,
        serial: u64,
        stored: u64,
    },
}

/// How many S3 requests of a journal read or cleanup run at once.
const JOURNAL_CONCURRENCY: usize = 16;

/// The held lock, shared with the renewal task.
struct LockShared {
    info: LockInfo,
    etag: String,
    /// Set when renewal found the lock taken by someone else, or on release.
    lost: Option<String>,
    released: bool,
}

struct Held {
    shared: Arc<tokio::sync::Mutex<LockShared>>,
    renewer: tokio::task::JoinHandle<()>,
}

/// A [`StateStore`] in S3.
pub struct S3Store {
    cfg: S3Config,
    client: Client,
    bridge: Bridge,
    seen: Seen,
    held: Option<Held>,
    warnings: Vec<String>,
    journal: RemoteJournal,
}

/// What an S3 call can fail with, classified.
enum S3Err {
    NotFound,
    Precondition,
    Other(String),
}

fn classify<E: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata + Send + Sync + 'static>(
    e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> S3Err {
    let status = e.raw_response().map(|r| r.status().as_u16());
    match status {
        Some(404) => S3Err::NotFound,
        // 409 ConditionalRequestConflict: a concurrent conditional write won.
        Some(412) | Some(409) => S3Err::Precondition,
        _ => {
            let detail = match &e {
                SdkError::TimeoutError(_) => {
                    "no answer within the backend's timeout (setting `timeout`, default 30s: raise it in the backend block or with -backend-config timeout=...; check that the endpoint is reachable)".to_string()
                }
                SdkError::ServiceError(s) => {
                    let err = s.err();
                    let meta = aws_sdk_s3::error::ProvideErrorMetadata::meta(err);
                    format!("{} ({})", meta.message().unwrap_or("no message"), meta.code().unwrap_or("no code"))
                }
                other => format!("{}", aws_sdk_s3::error::DisplayErrorContext(other)),
            };
            S3Err::Other(match status {
                Some(s) => format!("S3 answered {s}: {detail}"),
                None => detail,
            })
        }
    }
}

/// The bytes of an object, `None` when it is absent; the error is a message.
async fn get_bytes(client: &Client, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
    match client.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => Ok(Some(out.body.collect().await.map_err(|e| e.to_string())?.into_bytes().to_vec())),
        Err(e) => match classify(e) {
            S3Err::NotFound => Ok(None),
            S3Err::Precondition => Err("unexpected precondition failure".into()),
            S3Err::Other(m) => Err(m),
        },
    }
}

impl S3Store {
    /// Connects (lazily: nothing is sent until the first call).
    pub fn new(cfg: S3Config) -> Result<S3Store, StateError> {
        let describe = format!("S3 state s3://{}/{}", cfg.bucket, cfg.key);
        let bridge = Bridge::new(&describe)?;
        let c = cfg.clone();
        let client = bridge.run(async move {
            let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).region(aws_config::Region::new(c.region.clone()));
            if let (Some(a), Some(s)) = (&c.access_key, &c.secret_key) {
                loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(a, s, c.session_token.clone(), None, "kdeploy-backend-config"));
            }
            if let Some(p) = &c.profile {
                loader = loader.profile_name(p);
            }
            // Bounded: a frozen endpoint fails within `timeout` (all attempts), not minutes.
            let attempt = c.timeout.checked_div(3).unwrap_or_default().max(Duration::from_millis(500));
            let timeouts = aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(attempt.min(Duration::from_secs(10)))
                .read_timeout(attempt)
                .operation_attempt_timeout(attempt)
                .operation_timeout(c.timeout)
                .build();
            loader = loader.timeout_config(timeouts).retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3));
            let sdk = loader.load().await;
            let mut b = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(c.force_path_style);
            if let Some(ep) = &c.endpoint {
                b = b.endpoint_url(ep);
            }
            Ok(Client::from_conf(b.build()))
        })?;
        Ok(S3Store { cfg, client, bridge, seen: Seen::NotRead, held: None, warnings: Vec::new(), journal: RemoteJournal::Off })
    }

    fn lock_key(&self) -> String {
        format!("{}.lock", self.cfg.key)
    }

    /// GET of an object: its bytes and ETag, `None` when absent.
    fn get(&self, key: String) -> Result<Option<(Vec<u8>, String)>, StateError> {
        let (client, bucket) = (self.client.clone(), self.cfg.bucket.clone());
        let what = format!("cannot read s3://{bucket}/{key}");
        let describe = self.describe();
        self.bridge.run(async move {
            match client.get_object().bucket(&bucket).key(&key).send().await {
                Ok(out) => {
                    let etag = out.e_tag().unwrap_or_default().to_string();
                    let bytes = out
                        .body
                        .collect()
                        .await
                        .map_err(|e| StateError::Backend { backend: describe.clone(), message: format!("{what}: {e}") })?
                        .into_bytes()
                        .to_vec();
                    Ok(Some((bytes, etag)))
                }
                Err(e) => match classify(e) {
                    S3Err::NotFound => Ok(None),
                    S3Err::Precondition => Err(StateError::Backend { backend: describe, message: format!("{what}: unexpected precondition failure") }),
                    S3Err::Other(m) => {
                        Err(StateError::Backend { backend: describe, message: format!("{what}: {m}. Check the bucket, region, endpoint and credentials") })
                    }
                },
            }
        })
    }

    /// Reads the current state object and replays its journal, into `seen`: the state and how
    /// many journal entries were replayed. A writer folding the journal meanwhile (the state
    /// object changed under the read) makes it read again.
    fn load(&mut self) -> Result<Option<(State, usize)>, StateError> {
        let mut attempt = 0u32;
        loop {
            let Some((bytes, etag)) = self.get(self.cfg.key.clone())? else {
                self.seen = Seen::Absent;
                return Ok(None);
            };
            let mut state = decode(&bytes, &self.describe())?;
            let stored = state.serial;
            match self.replay_journal(&mut state, &etag) {
                Ok(replayed) => {
                    self.seen = Seen::Present { etag, lineage: state.lineage.clone(), serial: state.serial, stored };
                    return Ok(Some((state, replayed)));
                }
                Err(e) => {
                    attempt = attempt.saturating_add(1);
                    if attempt > 3 || self.head_etag()?.as_deref() == Some(etag.as_str()) {
                        return Err(e);
                    }
                }
            }
        }
    }

    fn journal_prefix(&self) -> String {
        format!("{}.journal/", self.cfg.key)
    }

    /// Where the entries over the state of serial `base` are.
    fn entry_prefix(&self, base: u64) -> String {
        format!("{}{base:020}/", self.journal_prefix())
    }

    /// Replays the journal entries that follow `state` (the object of ETag `etag`).
    fn replay_journal(&self, state: &mut State, etag: &str) -> Result<usize, StateError> {
        let prefix = self.entry_prefix(state.serial);
        let keys = self.list(prefix.clone())?;
        if keys.is_empty() {
            return Ok(0);
        }
        let location = format!("s3://{}/{prefix}", self.cfg.bucket);
        let mut groups = Vec::with_capacity(keys.len());
        for (key, body) in keys.iter().zip(self.get_many(keys.clone())?) {
            let Some(body) = body else {
                return Err(StateError::Journal { location, message: format!("the entry {key} disappeared while it was read") });
            };
            let entry = parse_entry(&body).map_err(|message| StateError::Journal { location: format!("s3://{}/{key}", self.cfg.bucket), message })?;
            // An entry over another state of that serial (another lineage) is not this one's.
            if entry.lineage == state.lineage && entry.base == etag && entry.base_serial == state.serial {
                groups.push(Group { serial: entry.serial, records: entry.records });
            }
        }
        replay(state, groups).map_err(|message| StateError::Journal { location, message })
    }

    /// The keys under `prefix`, sorted.
    fn list(&self, prefix: String) -> Result<Vec<String>, StateError> {
        let (client, bucket) = (self.client.clone(), self.cfg.bucket.clone());
        let describe = self.describe();
        self.bridge.run(async move {
            let mut keys = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let mut req = client.list_objects_v2().bucket(&bucket).prefix(&prefix);
                if let Some(t) = token.take() {
                    req = req.continuation_token(t);
                }
                let out = req.send().await.map_err(|e| {
                    let m = match classify(e) {
                        S3Err::NotFound => "the bucket does not exist".to_string(),
                        S3Err::Precondition => "unexpected precondition failure".to_string(),
                        S3Err::Other(m) => m,
                    };
                    StateError::Backend { backend: describe.clone(), message: format!("cannot list s3://{bucket}/{prefix}: {m}") }
                })?;
                keys.extend(out.contents().iter().filter_map(|o| o.key().map(str::to_string)));
                token = out.next_continuation_token().map(str::to_string);
                if out.is_truncated() != Some(true) || token.is_none() {
                    break;
                }
            }
            keys.sort();
            Ok(keys)
        })
    }

    /// The partitions stored next to this store's key (`edge/state.NAME.json` next to
    /// `edge/state.json`), found by listing the objects under the key's stem.
    pub fn stored_partitions(&self) -> Result<Vec<String>, StateError> {
        let key = &self.cfg.key;
        let keys = self.list(crate::partition::partitions_prefix(key))?;
        Ok(keys.iter().filter_map(|k| crate::partition::partition_in(key, k)).collect())
    }

    /// GETs of `keys`, a few at a time: `None` for an object that is gone.
    fn get_many(&self, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        let (client, bucket) = (self.client.clone(), self.cfg.bucket.clone());
        let describe = self.describe();
        self.bridge.run(async move {
            let mut out: Vec<Option<Vec<u8>>> = vec![None; keys.len()];
            let mut set = tokio::task::JoinSet::new();
            let mut pending = keys.into_iter().enumerate();
            loop {
                while set.len() < JOURNAL_CONCURRENCY {
                    let Some((i, key)) = pending.next() else { break };
                    let (client, bucket) = (client.clone(), bucket.clone());
                    set.spawn(async move { (i, get_bytes(&client, &bucket, &key).await.map_err(|m| format!("cannot read s3://{bucket}/{key}: {m}"))) });
                }
                let Some(joined) = set.join_next().await else { break };
                let (i, got) = joined.map_err(|e| StateError::Backend { backend: describe.clone(), message: format!("a journal read failed: {e}") })?;
                let got = got.map_err(|message| StateError::Backend { backend: describe.clone(), message })?;
                if let Some(slot) = out.get_mut(i) {
                    *slot = got;
                }
            }
            Ok(out)
        })
    }

    /// Deletes `keys`, a few at a time, best effort: what could not be deleted is returned.
    fn delete_many(&self, keys: Vec<String>) -> Vec<String> {
        let (client, bucket) = (self.client.clone(), self.cfg.bucket.clone());
        let result = self.bridge.run(async move {
            let mut failed = Vec::new();
            let mut set = tokio::task::JoinSet::new();
            let mut pending = keys.into_iter();
            loop {
                while set.len() < JOURNAL_CONCURRENCY {
                    let Some(key) = pending.next() else { break };
                    let (client, bucket) = (client.clone(), bucket.clone());
                    set.spawn(async move {
                        let ok = match client.delete_object().bucket(&bucket).key(&key).send().await {
                            Ok(_) => true,
                            Err(e) => matches!(classify(e), S3Err::NotFound),
                        };
                        (key, ok)
                    });
                }
                let Some(joined) = set.join_next().await else { break };
                if let Ok((key, false)) = joined {
                    failed.push(key);
                }
            }
            Ok(failed)
        });
        result.unwrap_or_default()
    }

    /// The ETag of the state object now (`HEAD`), `None` when it is absent.
    fn head_etag(&self) -> Result<Option<String>, StateError> {
        let (client, bucket, key) = (self.client.clone(), self.cfg.bucket.clone(), self.cfg.key.clone());
        let describe = self.describe();
        self.bridge.run(async move {
            match client.head_object().bucket(&bucket).key(&key).send().await {
                Ok(out) => Ok(Some(out.e_tag().unwrap_or_default().to_string())),
                Err(e) => match classify(e) {
                    S3Err::NotFound => Ok(None),
                    S3Err::Precondition => Ok(None),
                    S3Err::Other(m) => Err(StateError::Backend { backend: describe, message: format!("cannot read s3://{bucket}/{key}: {m}") }),
                },
            }
        })
    }

    /// Fails unless this run's lock is still its own (as the renewal task last saw it).
    fn check_lock_kept(&self) -> Result<(), StateError> {
        if let Some(held) = &self.held {
            let lost = self.bridge.run({
                let shared = held.shared.clone();
                async move { Ok(shared.lock().await.lost.clone()) }
            })?;
            if let Some(reason) = lost {
                return Err(StateError::WriteConflict { location: self.describe(), reason: format!(" (this run's lock was lost: {reason})") });
            }
        }
        Ok(())
    }

    /// Deletes every journal object (the state just written supersedes them), highest serial
    /// first; what cannot be deleted is ignored by readers and named in a warning.
    fn clear_journal(&mut self) {
        let keys = match self.list(self.journal_prefix()) {
            Ok(k) => k,
            Err(e) => {
                self.warnings.push(format!("the journal of {} could not be listed to be removed (readers ignore it): {e}", self.describe()));
                return;
            }
        };
        let failed = self.delete_many(keys.into_iter().rev().collect());
        if let Some(first) = failed.first() {
            self.warnings.push(format!(
                "{} journal object(s) such as s3://{}/{first} could not be deleted; readers ignore them, and the next write tries again",
                failed.len(),
                self.cfg.bucket
            ));
        }
    }

    fn put_state(&mut self, state: &State, check_lineage: bool, fold: bool) -> Result<usize, StateError> {
        state.validate()?;
        let location = self.describe();
        self.check_lock_kept()?;
        if matches!(self.seen, Seen::NotRead) || !check_lineage {
            self.load()?;
        }
        let condition = match &self.seen {
            Seen::NotRead => unreachable!("refreshed above"),
            Seen::Absent => None,
            Seen::Present { etag, lineage, serial, stored } => {
                if check_lineage && *lineage != state.lineage {
                    return Err(StateError::LineageMismatch { location, existing: lineage.clone(), ours: state.lineage.clone() });
                }
                if *serial > state.serial || (*serial == state.serial && !fold) {
                    return Err(StateError::SerialNotIncreasing { location, existing: *serial, attempted: state.serial });
                }
                // Entries appended since this run read the state (by a run that holds the lock,
                // when this one writes without it) would be lost.
                let (read, stored) = (*serial, *stored);
                let etag = etag.clone();
                let newer = self.list(self.entry_prefix(stored))?.iter().filter_map(|k| k.rsplit('/').next()?.parse::<u64>().ok()).any(|s| s > read);
                if newer {
                    return Err(StateError::WriteConflict { location, reason: " (its journal holds operations recorded since this run read it)".into() });
                }
                Some(etag)
            }
        };
        let (client, bucket, key) = (self.client.clone(), self.cfg.bucket.clone(), self.cfg.key.clone());
        let body = encode(state);
        let len = body.len();
        let loc = location.clone();
        let etag = self.bridge.run(async move {
            let mut req = client.put_object().bucket(&bucket).key(&key).body(ByteStream::from(body)).content_type("application/json");
            req = match &condition {
                Some(etag) => req.if_match(etag),
                None => req.if_none_match("*"),
            };
            match req.send().await {
                Ok(out) => Ok(out.e_tag().unwrap_or_default().to_string()),
                Err(e) => match classify(e) {
                    S3Err::Precondition => Err(StateError::WriteConflict { location: loc, reason: " (its ETag no longer matches)".into() }),
                    S3Err::NotFound => {
                        Err(StateError::Backend { backend: loc, message: format!("cannot write s3://{bucket}/{key}: the bucket does not exist") })
                    }
                    S3Err::Other(m) => Err(StateError::Backend { backend: loc, message: format!("cannot write s3://{bucket}/{key}: {m}") }),
                },
            }
        })?;
        self.seen = Seen::Present { etag, lineage: state.lineage.clone(), serial: state.serial, stored: state.serial };
        self.journal = RemoteJournal::Off;
        self.clear_journal();
        Ok(len)
    }

    /// Appends one entry: the state object must still be the checkpoint (`HEAD` `If-Match`),
    /// and the entry must not exist yet (`If-None-Match: *`).
    fn put_entry(&self, base_etag: &str, key: String, body: Vec<u8>) -> Result<(), StateError> {
        let (client, bucket, state_key) = (self.client.clone(), self.cfg.bucket.clone(), self.cfg.key.clone());
        let location = self.describe();
        let base_etag = base_etag.to_string();
        self.bridge.run(async move {
            let conflict = |reason: &str| StateError::WriteConflict { location: location.clone(), reason: reason.to_string() };
            let other = |what: String, m: String| StateError::Backend { backend: location.clone(), message: format!("{what}: {m}") };
            match client.head_object().bucket(&bucket).key(&state_key).if_match(&base_etag).send().await {
                Ok(_) => {}
                Err(e) => {
                    return Err(match classify(e) {
                        S3Err::Precondition | S3Err::NotFound => conflict(" (the state object was replaced since this run's last write)"),
                        S3Err::Other(m) => other(format!("cannot read s3://{bucket}/{state_key}"), m),
                    });
                }
            }
            let req = client.put_object().bucket(&bucket).key(&key).body(ByteStream::from(body)).content_type("application/json").if_none_match("*");
            match req.send().await {
                Ok(_) => Ok(()),
                Err(e) => Err(match classify(e) {
                    S3Err::Precondition => conflict(" (its journal entry exists already: another run appended to it)"),
                    S3Err::NotFound => other(format!("cannot write s3://{bucket}/{key}"), "the bucket does not exist".into()),
                    S3Err::Other(m) => other(format!("cannot write s3://{bucket}/{key}"), m),
                }),
            }
        })
    }

    /// One attempt: `Ok(None)` when taken, `Ok(Some(holder))` when someone else holds it.
    fn try_lock(&mut self, info: &LockInfo) -> Result<Option<LockInfo>, StateError> {
        let lock_key = self.lock_key();
        let ttl = self.cfg.lock_ttl;
        let mut ours = info.clone();
        ours.expires = rfc3339_in(ttl.as_secs_f64());
        let put = |condition: Result<String, ()>, body: Vec<u8>| {
            let (client, bucket, key) = (self.client.clone(), self.cfg.bucket.clone(), lock_key.clone());
            let describe = self.describe();
            self.bridge.run(async move {
                let req = client.put_object().bucket(&bucket).key(&key).body(ByteStream::from(body)).content_type("application/json");
                let req = match condition {
                    Ok(etag) => req.if_match(etag),
                    Err(()) => req.if_none_match("*"),
                };
                match req.send().await {
                    Ok(out) => Ok(Some(out.e_tag().unwrap_or_default().to_string())),
                    Err(e) => match classify(e) {
                        S3Err::Precondition => Ok(None),
                        S3Err::NotFound => Err(StateError::Backend {
                            backend: describe,
                            message: format!("cannot create the lock s3://{bucket}/{key}: the bucket does not exist"),
                        }),
                        S3Err::Other(m) => Err(StateError::Backend { backend: describe, message: format!("cannot create the lock s3://{bucket}/{key}: {m}") }),
                    },
                }
            })
        };
        let body = serde_json::to_vec_pretty(&ours).expect("lock info serializes");
        if let Some(etag) = put(Err(()), body.clone())? {
            self.start_held(ours, etag);
            return Ok(None);
        }
        let Some((bytes, etag)) = self.get(lock_key.clone())? else {
            // Released between our attempt and the read: try again at once.
            return self.try_lock(info);
        };
        let holder: LockInfo = serde_json::from_slice(&bytes).unwrap_or_else(|_| LockInfo::unknown(&self.describe()));
        if !holder.expires.is_empty() && passed(&holder.expires) {
            if let Some(new_etag) = put(Ok(etag), body)? {
                self.warnings.push(format!(
                    "took over the expired lock {} on {}: it was held by {} for {} since {} and expired at {} (that run stopped renewing it: it was killed or lost its connection)",
                    holder.id, self.describe(), holder.who, holder.operation, holder.created, holder.expires
                ));
                self.start_held(ours, new_etag);
                return Ok(None);
            }
            // Someone else took it over first.
            return Ok(Some(holder));
        }
        Ok(Some(holder))
    }

    fn start_held(&mut self, info: LockInfo, etag: String) {
        let shared = Arc::new(tokio::sync::Mutex::new(LockShared { info, etag, lost: None, released: false }));
        let (client, bucket, key) = (self.client.clone(), self.cfg.bucket.clone(), self.lock_key());
        let ttl = self.cfg.lock_ttl;
        let task_shared = shared.clone();
        let renewer = self.bridge.spawn(async move {
            loop {
                tokio::time::sleep(ttl.checked_div(3).unwrap_or_default()).await;
                let mut s = task_shared.lock().await;
                if s.released || s.lost.is_some() {
                    return;
                }
                let mut info = s.info.clone();
                info.expires = rfc3339_in(ttl.as_secs_f64());
                let body = serde_json::to_vec_pretty(&info).expect("lock info serializes");
                match client.put_object().bucket(&bucket).key(&key).body(ByteStream::from(body)).if_match(&s.etag).send().await {
                    Ok(out) => {
                        s.etag = out.e_tag().unwrap_or_default().to_string();
                        s.info = info;
                    }
                    Err(e) => match classify(e) {
                        S3Err::Precondition | S3Err::NotFound => {
                            s.lost = Some("another run took it over or force-unlocked it".into());
                            return;
                        }
                        // Transient: try again at the next tick; once the lease has run out the
                        // precondition check above will tell.
                        S3Err::Other(_) => {
                            if passed(&s.info.expires) {
                                s.lost = Some(format!("it expired at {} while it could not be renewed", s.info.expires));
                                return;
                            }
                        }
                    },
                }
            }
        });
        self.held = Some(Held { shared, renewer });
    }

    fn release(&mut self, held: Held) -> Result<(), StateError> {
        let (client, bucket, key) = (self.client.clone(), self.cfg.bucket.clone(), self.lock_key());
        let describe = self.describe();

        self.bridge.run(async move {
            let mut s = held.shared.lock().await;
            s.released = true;
            held.renewer.abort();
            if s.lost.is_some() {
                return Ok(());
            }
            match client.delete_object().bucket(&bucket).key(&key).if_match(&s.etag).send().await {
                Ok(_) => Ok(()),
                Err(e) => match classify(e) {
                    // Gone or replaced: it is no longer ours to delete.
                    S3Err::NotFound | S3Err::Precondition => Ok(()),
                    S3Err::Other(m) => Err(StateError::Backend {
                        backend: describe,
                        message: format!(
                            "cannot release the lock s3://{bucket}/{key}: {m}. Release it with `kdeploy force-unlock {}` once this is fixed",
                            s.info.id
                        ),
                    }),
                },
            }
        })
    }
}

impl StateStore for S3Store {
    fn describe(&self) -> String {
        format!("S3 state s3://{}/{}", self.cfg.bucket, self.cfg.key)
    }

    /// Reads the state and replays its journal; under the lock, a replayed journal is folded
    /// into the state object at once (best effort: a failure is a warning).
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
        let Seen::Present { etag, .. } = &self.seen else { return Ok(false) };
        if self.held.is_none() {
            return Ok(false);
        }
        self.journal = RemoteJournal::open(state, etag.clone(), len);
        Ok(true)
    }

    fn append(&mut self, serial: u64, records: &[Record]) -> Result<Append, StateError> {
        let backend = self.describe();
        let open = self.journal.take(serial, &backend)?;
        self.check_lock_kept()?;
        let body = open.entry(serial, records)?;
        let len = body.len();
        self.put_entry(&open.base, format!("{}{serial:020}", self.entry_prefix(open.base_serial)), body)?;
        if let Seen::Present { serial: seen, .. } = &mut self.seen {
            *seen = serial;
        }
        let (journal, append) = open.stored(serial, len);
        self.journal = journal;
        Ok(append)
    }

    fn lock(&mut self, mut info: LockInfo, timeout: Duration) -> Result<(), StateError> {
        if let Some(held) = &self.held {
            let id = self.bridge.run({
                let shared = held.shared.clone();
                async move { Ok(shared.lock().await.info.id.clone()) }
            })?;
            return Err(StateError::AlreadyLocked { path: self.describe(), id });
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
                        return Err(StateError::Locked { holder: Box::new(holder), path: format!("s3://{}/{}", self.cfg.bucket, self.lock_key()) });
                    }
                    std::thread::sleep(remaining.min(Duration::from_millis(500)));
                }
            }
        }
    }

    fn unlock(&mut self) -> Result<(), StateError> {
        match self.held.take() {
            Some(held) => self.release(held),
            None => Err(StateError::NotLocked { path: format!("s3://{}/{}", self.cfg.bucket, self.lock_key()) }),
        }
    }

    fn lock_info(&mut self) -> Result<Option<LockInfo>, StateError> {
        if let Some(held) = &self.held {
            let shared = held.shared.clone();
            return self.bridge.run(async move { Ok(Some(shared.lock().await.info.clone())) });
        }
        Ok(self.get(self.lock_key())?.map(|(bytes, _)| serde_json::from_slice(&bytes).unwrap_or_else(|_| LockInfo::unknown(&self.describe()))))
    }

    fn force_unlock(&mut self, id: &str) -> Result<(), StateError> {
        let path = format!("s3://{}/{}", self.cfg.bucket, self.lock_key());
        if self.held.is_some() {
            let current = self.lock_info()?.expect("held");
            if current.id != id {
                return Err(StateError::LockIdMismatch { given: id.to_string(), holder: Box::new(current), path });
            }
            return self.unlock();
        }
        let Some((bytes, etag)) = self.get(self.lock_key())? else { return Err(StateError::NotLocked { path }) };
        let holder: LockInfo = serde_json::from_slice(&bytes).unwrap_or_else(|_| LockInfo::unknown(&self.describe()));
        if holder.id != id {
            return Err(StateError::LockIdMismatch { given: id.to_string(), holder: Box::new(holder), path });
        }
        let (client, bucket, key) = (self.client.clone(), self.cfg.bucket.clone(), self.lock_key());
        let describe = self.describe();
        self.bridge.run(async move {
            match client.delete_object().bucket(&bucket).key(&key).if_match(&etag).send().await {
                Ok(_) => Ok(()),
                Err(e) => match classify(e) {
                    S3Err::NotFound => Ok(()),
                    S3Err::Precondition => Err(StateError::Backend {
                        backend: describe,
                        message:
                            "the lock changed while it was being released (its holder renewed it or another run took it); check `kdeploy force-unlock` again"
                                .into(),
                    }),
                    S3Err::Other(m) => Err(StateError::Backend { backend: describe, message: format!("cannot delete the lock: {m}") }),
                },
            }
        })
    }

    fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }
}

impl Drop for S3Store {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            // Best effort; an unreleased lock expires with its lease.
            let _ = self.release(held);
        }
    }
}

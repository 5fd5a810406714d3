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
use crate::lock::LockInfo;
use crate::model::State;
use crate::store::StateStore;

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
    Present { etag: String, lineage: String, serial: u64 },
}

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
        Ok(S3Store { cfg, client, bridge, seen: Seen::NotRead, held: None, warnings: Vec::new() })
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

    /// Reads the current state object into `seen`.
    fn refresh_seen(&mut self) -> Result<Option<State>, StateError> {
        match self.get(self.cfg.key.clone())? {
            None => {
                self.seen = Seen::Absent;
                Ok(None)
            }
            Some((bytes, etag)) => {
                let state = decode(&bytes, &self.describe())?;
                self.seen = Seen::Present { etag, lineage: state.lineage.clone(), serial: state.serial };
                Ok(Some(state))
            }
        }
    }

    fn put_state(&mut self, state: &State, check_lineage: bool) -> Result<(), StateError> {
        state.validate()?;
        let location = self.describe();
        if let Some(held) = &self.held {
            let lost = self.bridge.run({
                let shared = held.shared.clone();
                async move { Ok(shared.lock().await.lost.clone()) }
            })?;
            if let Some(reason) = lost {
                return Err(StateError::WriteConflict { location, reason: format!(" (this run's lock was lost: {reason})") });
            }
        }
        if matches!(self.seen, Seen::NotRead) || !check_lineage {
            self.refresh_seen()?;
        }
        let condition = match &self.seen {
            Seen::NotRead => unreachable!("refreshed above"),
            Seen::Absent => None,
            Seen::Present { etag, lineage, serial } => {
                if check_lineage && *lineage != state.lineage {
                    return Err(StateError::LineageMismatch { location, existing: lineage.clone(), ours: state.lineage.clone() });
                }
                if *serial >= state.serial {
                    return Err(StateError::SerialNotIncreasing { location, existing: *serial, attempted: state.serial });
                }
                Some(etag.clone())
            }
        };
        let (client, bucket, key) = (self.client.clone(), self.cfg.bucket.clone(), self.cfg.key.clone());
        let body = encode(state);
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
        self.seen = Seen::Present { etag, lineage: state.lineage.clone(), serial: state.serial };
        Ok(())
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

    fn read(&mut self) -> Result<Option<State>, StateError> {
        self.refresh_seen()
    }

    fn write(&mut self, state: &State) -> Result<(), StateError> {
        self.put_state(state, true)
    }

    fn force_write(&mut self, state: &State) -> Result<(), StateError> {
        self.put_state(state, false)
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

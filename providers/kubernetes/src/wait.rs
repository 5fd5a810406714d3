//! Readiness waits that share requests: every object waiting in one (API server, kind,
//! namespace) is served by one LIST and then one WATCH of kdeploy's objects of that kind there,
//! so a thousand agents become ready with a handful of requests instead of one poll each.
//!
//! A [`Waits`] keeps, per group, the readiness fields of each object (nothing else of it) as
//! the watch reports them; a waiter states what it waits for as a predicate over
//! `Option<&Workload>` (None: absent) and is woken only by events of its own object. The caller
//! puts the timeout around [`Waits::until`] with `tokio::time::timeout`.
//!
//! A group's watch ends when the server closes it (after [`WATCH_SECONDS`]) with nobody
//! waiting; it resumes from the last resource version otherwise, lists again when that version
//! expired (410), and falls back to one LIST per poll where the server refuses to watch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kube::core::WatchEvent;
use serde::Deserialize;
use tokio::sync::Notify;

use crate::api::{ApiError, Conn};
use crate::render::MANAGED_BY;

/// How long the server keeps one WATCH open; below the client's read timeout (60 s), which a
/// quiet watch would otherwise hit.
pub const WATCH_SECONDS: u32 = 45;
/// Between two LISTs where the server does not serve watches.
const POLL: Duration = Duration::from_secs(1);
/// Failed requests in a row before the waiters get the error.
const ATTEMPTS: u32 = 3;

/// What readiness needs of a workload; LIST items and watch events are decoded into this and
/// nothing else of them is kept.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Workload {
    #[serde(deserialize_with = "null_as_default")]
    pub metadata: Meta,
    #[serde(deserialize_with = "null_as_default")]
    pub spec: Spec,
    #[serde(deserialize_with = "null_as_default")]
    pub status: Status,
}

/// `null` reads as the default, as Go's decoder does.
fn null_as_default<'de, D: serde::Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Meta {
    #[serde(deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(deserialize_with = "null_as_default")]
    pub uid: String,
    pub generation: Option<i64>,
    #[serde(deserialize_with = "null_as_default")]
    pub resource_version: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Spec {
    pub replicas: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Status {
    pub observed_generation: Option<i64>,
    pub updated_replicas: Option<i64>,
    pub available_replicas: Option<i64>,
    pub ready_replicas: Option<i64>,
    pub conditions: Option<Vec<Condition>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Condition {
    #[serde(rename = "type", deserialize_with = "null_as_default")]
    pub type_: String,
    #[serde(deserialize_with = "null_as_default")]
    pub status: String,
}

/// Whether a workload of `kind` is ready (Deployments available, StatefulSets ready, Jobs
/// complete), or None when `kind` has no readiness.
pub fn ready(kind: &str, w: &Workload) -> Option<bool> {
    let generation = w.metadata.generation.unwrap_or(0);
    let observed = w.status.observed_generation.unwrap_or(0);
    let want = w.spec.replicas.unwrap_or(1);
    match kind {
        "Deployment" => Some(observed >= generation && w.status.updated_replicas.unwrap_or(0) >= want && w.status.available_replicas.unwrap_or(0) >= want),
        "StatefulSet" => Some(observed >= generation && w.status.ready_replicas.unwrap_or(0) >= want),
        "Job" => Some(w.status.conditions.iter().flatten().any(|c| c.type_ == "Complete" && c.status == "True")),
        _ => None,
    }
}

/// The object kdeploy wrote (`uid`, at `generation` or later) is there and ready. An object of
/// the same name but another uid (the one a replacement deleted) does not count.
pub fn is_ready(kind: &str, uid: &str, generation: i64) -> impl Fn(Option<&Workload>) -> bool + use<> {
    let (kind, uid) = (kind.to_string(), uid.to_string());
    move |w| w.is_some_and(|w| (uid.is_empty() || w.metadata.uid == uid) && w.metadata.generation.unwrap_or(0) >= generation && ready(&kind, w) == Some(true))
}

/// The object is gone.
pub fn is_gone(w: Option<&Workload>) -> bool {
    w.is_none()
}

/// One (API server, kind, namespace).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    server: String,
    context: String,
    api_version: String,
    kind: String,
    namespace: Option<String>,
}

#[derive(Default)]
struct Group {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The objects have been listed: an object absent from `objects` is absent.
    synced: bool,
    objects: HashMap<String, Workload>,
    /// Waiters by object name.
    notify: HashMap<String, Arc<Notify>>,
    /// The watch failed for good; waiters get this.
    failed: Option<ApiError>,
    waiters: usize,
    /// The group's task has ended: a new waiter starts a new group.
    done: bool,
}

impl Group {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn wake(&self, name: &str) {
        if let Some(n) = self.notify.get(name) {
            n.notify_waiters();
        }
    }

    fn wake_all(&self) {
        for n in self.notify.values() {
            n.notify_waiters();
        }
    }
}

type Groups = Arc<Mutex<HashMap<Key, Arc<Group>>>>;

/// The shared watches of one provider.
#[derive(Default)]
pub struct Waits {
    groups: Groups,
}

/// Counts a waiter in its group while it waits.
struct Waiting(Arc<Group>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.lock().waiters -= 1;
    }
}

fn lock(groups: &Groups) -> MutexGuard<'_, HashMap<Key, Arc<Group>>> {
    groups.lock().unwrap_or_else(|e| e.into_inner())
}

impl Waits {
    /// Waits until `done` holds for the object `name` (of `kind`, in `namespace`, labelled as
    /// kdeploy's), as the group's watch sees it. Never times out: the caller does.
    pub async fn until(
        &self,
        conn: &Conn,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        done: impl Fn(Option<&Workload>) -> bool,
    ) -> Result<(), ApiError> {
        let key = Key {
            server: conn.server.clone(),
            context: conn.context.clone(),
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            namespace: namespace.map(str::to_string),
        };
        let group = {
            let mut groups = lock(&self.groups);
            let group = match groups.get(&key).filter(|g| !g.lock().done) {
                Some(g) => g.clone(),
                None => {
                    let g = Arc::new(Group::default());
                    groups.insert(key.clone(), g.clone());
                    tokio::spawn(watch(self.groups.clone(), key, g.clone(), conn.clone()));
                    g
                }
            };
            group.lock().waiters += 1;
            group
        };
        let _waiting = Waiting(group.clone());
        loop {
            let notify = group.lock().notify.entry(name.to_string()).or_default().clone();
            let notified = notify.notified();
            tokio::pin!(notified);
            // Registered before looking, so that no event between the look and the sleep is lost.
            notified.as_mut().enable();
            {
                let inner = group.lock();
                if let Some(e) = &inner.failed {
                    return Err(e.clone());
                }
                if inner.synced && done(inner.objects.get(name)) {
                    return Ok(());
                }
            }
            notified.await;
        }
    }
}

/// Ends the group when nobody waits (true), or when it failed (with the error for its
/// waiters); removes it from the provider's groups either way.
fn retire(groups: &Groups, key: &Key, group: &Arc<Group>, failed: Option<ApiError>) -> bool {
    let mut all = lock(groups);
    let mut inner = group.lock();
    if failed.is_none() && inner.waiters > 0 {
        return false;
    }
    inner.done = true;
    if failed.is_some() {
        inner.failed = failed;
        inner.wake_all();
    }
    if all.get(key).is_some_and(|g| Arc::ptr_eq(g, group)) {
        all.remove(key);
    }
    true
}

/// The group's task: LIST, then WATCH from the listed version for as long as anyone waits.
async fn watch(groups: Groups, key: Key, group: Arc<Group>, conn: Conn) {
    let selector = format!("{MANAGED_BY}=kdeploy");
    let ns = key.namespace.as_deref();
    let mut version: Option<String> = None;
    // The server refuses to watch (RBAC without `watch`): one LIST per poll instead.
    let mut poll = false;
    let mut failures = 0;
    loop {
        if version.is_none() || poll {
            match conn.list_as::<Workload>(&key.api_version, &key.kind, ns, &selector).await {
                Ok((items, rv)) => {
                    failures = 0;
                    let mut inner = group.lock();
                    inner.objects = items.into_iter().map(|w| (w.metadata.name.clone(), w)).collect();
                    inner.synced = true;
                    inner.wake_all();
                    version = Some(rv);
                }
                Err(e) => {
                    failures += 1;
                    if failures >= ATTEMPTS || matches!(e, ApiError::Status { code: 400..500, .. }) {
                        retire(&groups, &key, &group, Some(e));
                        return;
                    }
                    tokio::time::sleep(POLL).await;
                    continue;
                }
            }
        }
        let round = Instant::now();
        if poll {
            tokio::time::sleep(POLL).await;
        } else {
            let rv = version.clone().unwrap_or_default();
            match conn.watch::<Workload>(&key.api_version, &key.kind, ns, &selector, &rv, WATCH_SECONDS).await {
                Ok(events) => {
                    tokio::pin!(events);
                    let mut seen = false;
                    while let Some(event) = events.next().await {
                        seen = true;
                        match event {
                            Ok(WatchEvent::Added(w) | WatchEvent::Modified(w)) => {
                                version = Some(w.metadata.resource_version.clone());
                                let mut inner = group.lock();
                                let name = w.metadata.name.clone();
                                inner.objects.insert(name.clone(), w);
                                inner.wake(&name);
                            }
                            Ok(WatchEvent::Deleted(w)) => {
                                version = Some(w.metadata.resource_version.clone());
                                let mut inner = group.lock();
                                inner.objects.remove(&w.metadata.name);
                                inner.wake(&w.metadata.name);
                            }
                            Ok(WatchEvent::Bookmark(b)) => version = Some(b.metadata.resource_version),
                            // 410 Gone: the version is too old to resume from; anything else
                            // also starts over from a fresh LIST.
                            Ok(WatchEvent::Error(_)) | Err(ApiError::Status { .. }) => {
                                version = None;
                                break;
                            }
                            // A broken connection: resume from the last version.
                            Err(ApiError::Transport(_)) => break,
                        }
                    }
                    failures = if seen { 0 } else { failures + 1 };
                }
                Err(ApiError::Status { code: 410, .. }) => version = None,
                Err(ApiError::Status { code: 403 | 405, .. }) => poll = true,
                Err(e) => {
                    failures += 1;
                    if failures >= ATTEMPTS {
                        retire(&groups, &key, &group, Some(e));
                        return;
                    }
                }
            }
            // A watch that ends at once, again and again, must not spin.
            if round.elapsed() < POLL {
                tokio::time::sleep(POLL.saturating_sub(round.elapsed()).max(Duration::from_millis(100)) * failures.max(1)).await;
            }
        }
        if retire(&groups, &key, &group, None) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn workload(v: serde_json::Value) -> Workload {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn readiness_by_kind() {
        let dep = |observed: i64, available: i64| {
            workload(json!({"metadata": {"name": "a", "uid": "u1", "generation": 2}, "spec": {"replicas": 1},
                "status": {"observedGeneration": observed, "updatedReplicas": 1, "availableReplicas": available}}))
        };
        assert_eq!(ready("Deployment", &dep(2, 1)), Some(true));
        assert_eq!(ready("Deployment", &dep(1, 1)), Some(false), "status of an older generation");
        assert_eq!(ready("Deployment", &dep(2, 0)), Some(false));
        let job = workload(json!({"metadata": {"name": "j"}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}));
        assert_eq!(ready("Job", &job), Some(true));
        assert_eq!(ready("Job", &Workload::default()), Some(false));
        assert_eq!(ready("ConfigMap", &job), None);
    }

    #[test]
    fn predicates_want_the_written_object() {
        let w = workload(json!({"metadata": {"name": "a", "uid": "u1", "generation": 2}, "spec": {"replicas": 1},
            "status": {"observedGeneration": 2, "updatedReplicas": 1, "availableReplicas": 1}}));
        assert!(is_ready("Deployment", "u1", 2)(Some(&w)));
        assert!(!is_ready("Deployment", "u1", 3)(Some(&w)), "an event from before the write");
        assert!(!is_ready("Deployment", "u2", 1)(Some(&w)), "the object a replacement deleted");
        assert!(!is_ready("Deployment", "u1", 1)(None));
        assert!(is_gone(None));
        assert!(!is_gone(Some(&w)));
    }

    #[test]
    fn null_and_missing_fields_decode() {
        let w = workload(json!({"metadata": {"name": "a", "uid": null}, "spec": {"replicas": null}, "status": null}));
        assert_eq!(w.spec.replicas, None);
        assert_eq!(ready("StatefulSet", &w), Some(false));
    }
}

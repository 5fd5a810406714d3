//! The Kubernetes provider: the Kerberos stack on MicroK8s and any conformant cluster.
//!
//! Every component becomes a set of objects rendered by kdeploy itself ([`render`]), written by
//! server-side apply with field manager `kdeploy`. The component's state records, per object,
//! a digest of the fields kdeploy owns ([`fields`]); reads LIST each kind once per namespace
//! (label-selected), so a plan's request count does not grow with the number of cameras, and
//! plans only dry-run what changed. Apply writes, then returns what to wait for; the waits of
//! all components share one LIST and WATCH per kind and namespace ([`wait`]).

pub mod api;
pub mod balancer;
pub mod chart;
pub mod exposure;
pub mod fields;
pub mod hub;
pub mod ingress;
pub mod node;
pub mod render;
pub mod wait;

mod data;
mod discover;
mod import;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use kdeploy_provider::{
    ApplyRequest, ApplyResponse, Check, ComponentRef, DataRequest, DataResult, DeleteRequest, ErrorKind, ImportRequest, Imported, Kind, PlanRequest,
    PlanResponse, Preflight, Provider, ProviderError, ReadRequest, ReadResult, Reference, Value, Wait, WaitRequest, components, default_plan,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use api::{ApiError, Conn, Pool, path};
use chart::CHART_DIGEST;
use kdeploy_provider::components::{kafka, mqtt, turn, vault};
use node::Tree;
use render::{Input, MANAGED_BY, namespace, object_base, object_key};

/// The field manager kdeploy writes as.
pub const FIELD_MANAGER: &str = "kdeploy";
const OBJECTS: &str = "objects";
const DIGEST: &str = "manifest_digest";
const CREATED_BY: &str = "kdeploy.io/created-by";
/// The digest recorded for a live object kdeploy owns no field of (imported, not yet applied).
const UNMANAGED: &str = "unmanaged";

#[derive(Default)]
pub struct KubernetesProvider {
    pool: Pool,
    /// Namespaces this run has seen or created, by API server and context: one GET per
    /// namespace per run, not one per component. Held while a namespace is checked, so that
    /// components applied at once do not all check it.
    namespaces: tokio::sync::Mutex<std::collections::HashSet<(String, String, String)>>,
    /// Readiness and deletion waits, sharing one watch per kind and namespace.
    waits: wait::Waits,
    /// What each cluster (API server and context) shows of a load-balancer implementation,
    /// read once per run when a plan writes a LoadBalancer Service there.
    balancers: tokio::sync::Mutex<HashMap<(String, String), balancer::Facts>>,
}

impl KubernetesProvider {
    pub fn new() -> KubernetesProvider {
        KubernetesProvider::default()
    }

    /// Registers a source of bearer tokens for managed clusters whose attributes say
    /// `token_source = NAME` (e.g. "eks"), next to `endpoint` and `certificate_authority`.
    pub fn with_token_source(mut self, name: &str, source: std::sync::Arc<dyn kdeploy_provider::TokenSource>) -> KubernetesProvider {
        self.pool.token_sources.insert(name.to_string(), source);
        self
    }
}

fn map_of(v: Option<&Value>) -> BTreeMap<String, Value> {
    map_ref(v).clone()
}

/// [`map_of`] without the copy: a plan reads the cluster's, the recorded and the live attributes
/// of every component, and copies of them were a measurable part of a plan's CPU.
fn map_ref(v: Option<&Value>) -> &BTreeMap<String, Value> {
    static EMPTY: BTreeMap<String, Value> = BTreeMap::new();
    v.and_then(Value::as_map).unwrap_or(&EMPTY)
}

/// LISTs a read keeps in flight at once.
const LISTS_IN_FLIGHT: usize = 4;

/// Fills the computed attributes: generated secrets (new ones only when `generate`), the names
/// and endpoints that follow from Kubernetes naming (service DNS names, NodePort URLs), then
/// what every runtime derives alike (a vault's configuration, an agent's upload folder).
fn fill_computed(
    c: &ComponentRef,
    attrs: &mut BTreeMap<String, Value>,
    refs: &BTreeMap<String, Reference>,
    cluster: &BTreeMap<String, Value>,
    generate: bool,
) -> Result<(), ProviderError> {
    components::secrets::fill(c.kind, &c.type_name, &c.address.to_string(), attrs, &BTreeMap::new(), generate);
    let ns = namespace(c, attrs);
    // Host names are the Service's.
    let base = render::service_name(&c.address, attrs);
    let set = |attrs: &mut BTreeMap<String, Value>, k: &str, v: Value| {
        attrs.insert(k.to_string(), v);
    };
    let uri = |attrs: &BTreeMap<String, Value>, scheme: &str, host: &str, port: u16, path: &str| match (attrs.get("username"), attrs.get("admin_password")) {
        (Some(Value::String(u)), Some(Value::String(p))) => Value::String(format!("{scheme}://{u}:{p}@{host}:{port}{path}")),
        _ => Value::Unknown(format!("{}.uri", c.address)),
    };
    // From outside the cluster (a NodePort, a LoadBalancer's address), else from inside.
    let outside = |attrs: &BTreeMap<String, Value>| exposure::outside_url(attrs, cluster, &c.address, attrs.get("url"));
    match (c.kind, c.type_name.as_str()) {
        (Kind::ObjectStorage, "minio") => set(attrs, "endpoint", Value::String(format!("{base}.{ns}:9000"))),
        (Kind::Database, "mongodb") => {
            let host = format!("{base}.{ns}");
            let u = uri(attrs, "mongodb", &host, 27017, "/admin");
            set(attrs, "host", Value::String(host));
            set(attrs, "port", Value::from_i64(27017));
            set(attrs, "uri", u);
        }
        (Kind::Broker, "rabbitmq") => {
            let host = format!("{base}.{ns}");
            let u = uri(attrs, "amqp", &host, 5672, "");
            set(attrs, "host", Value::String(host));
            set(attrs, "port", Value::from_i64(5672));
            set(attrs, "uri", u);
        }
        (Kind::Broker, "kafka") => {
            let host = format!("{base}.{ns}");
            set(attrs, "brokers", Value::String(format!("{host}:{}", kafka::PORT)));
            set(attrs, "host", Value::String(host));
            set(attrs, "port", Value::from_i64(i64::from(kafka::PORT)));
        }
        (Kind::Broker, "mosquitto" | "vernemq") => {
            let host = format!("{base}.{ns}");
            set(attrs, "host", Value::String(host.clone()));
            set(attrs, "port", Value::from_i64(i64::from(mqtt::MQTT_PORT)));
            set(attrs, "uri", Value::String(format!("tcp://{host}:{}", mqtt::MQTT_PORT)));
            set(attrs, "websocket_uri", Value::String(format!("ws://{host}:{}", mqtt::WEBSOCKET_PORT)));
            let (tcp, ws) = exposure::outside_mqtt(attrs, cluster, &c.address);
            set(attrs, "external_uri", tcp);
            set(attrs, "external_websocket_uri", ws);
        }
        (Kind::Turn, "coturn") => {
            let host = format!("{base}.{ns}");
            set(attrs, "host", Value::String(host.clone()));
            set(attrs, "uri", Value::String(turn::uri(&host, turn::TURN_PORT)));
            let external = exposure::outside_turn(attrs, cluster, &c.address);
            set(attrs, "external_uri", external);
        }
        (Kind::Vault, _) => {
            let endpoint = format!("http://{base}.{ns}:80/api");
            let (url, external) = match outside(attrs) {
                Some(Value::String(u)) => (Value::String(u.clone()), Value::String(format!("{u}/api"))),
                Some(_) => (Value::Unknown(format!("{}.url", c.address)), Value::Unknown(format!("{}.external_url", c.address))),
                None => (Value::String(endpoint.clone()), Value::Null),
            };
            set(attrs, "endpoint", Value::String(endpoint));
            set(attrs, "url", url);
            set(attrs, "external_url", external);
        }
        (Kind::Hub, _) => {
            set(attrs, "endpoint", Value::String(format!("http://hub-api-svc.{ns}:8081")));
            let external = hub::external_url(attrs, cluster, &c.address.to_string());
            set(attrs, "external_url", external);
        }
        (Kind::Factory, _) => {
            let url = outside(attrs).unwrap_or_else(|| Value::String(format!("http://{base}.{ns}:80")));
            set(attrs, "url", url);
        }
        _ => {}
    }
    components::fill_derived(c, attrs, refs).map_err(|m| ProviderError::new(ErrorKind::Invalid, m))
}

/// What a component waits for after apply ([`Wait`]'s content): its workloads that were not
/// ready in the answer to their write, and until when.
#[derive(Debug, Serialize, Deserialize)]
struct Awaited {
    timeout_ms: u64,
    objects: Vec<AwaitedObject>,
}

/// One workload as written: readiness counts for this object (uid) at this generation or later.
#[derive(Debug, Serialize, Deserialize)]
struct AwaitedObject {
    api_version: String,
    kind: String,
    namespace: Option<String>,
    name: String,
    uid: String,
    generation: i64,
    /// The component's instance label, to find its pods when explaining a timeout.
    instance: String,
}

impl Awaited {
    /// The workloads among the answers to a component's writes that are not ready yet; None
    /// when there are none.
    fn of(applied: &[Json], timeout: Duration) -> Option<Awaited> {
        let objects: Vec<AwaitedObject> = applied
            .iter()
            .filter_map(|obj| {
                let kind = obj["kind"].as_str()?;
                let w = wait::Workload::deserialize(obj).ok()?;
                (!wait::ready(kind, &w)?).then(|| AwaitedObject {
                    api_version: obj["apiVersion"].as_str().unwrap_or_default().to_string(),
                    kind: kind.to_string(),
                    namespace: obj["metadata"]["namespace"].as_str().map(str::to_string),
                    name: w.metadata.name,
                    uid: w.metadata.uid,
                    generation: w.metadata.generation.unwrap_or(0),
                    instance: obj["metadata"]["labels"]["app.kubernetes.io/instance"].as_str().unwrap_or_default().to_string(),
                })
            })
            .collect();
        (!objects.is_empty()).then(|| Awaited { timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX), objects })
    }
}

impl KubernetesProvider {
    async fn conn(&self, cluster: Option<&Value>) -> Result<Conn, ProviderError> {
        self.pool.connect(map_ref(cluster)).await
    }

    /// Creates the namespace when absent, marked as created by kdeploy.
    async fn ensure_namespace(&self, conn: &Conn, ns: &str) -> Result<(), ProviderError> {
        let key = (conn.server.clone(), conn.context.clone(), ns.to_string());
        let mut known = self.namespaces.lock().await;
        if known.contains(&key) {
            return Ok(());
        }
        self.create_namespace(conn, ns).await?;
        known.insert(key);
        Ok(())
    }

    async fn create_namespace(&self, conn: &Conn, ns: &str) -> Result<(), ProviderError> {
        let p = path("v1", "Namespace", None, Some(ns));
        match conn.get(&p).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => {
                let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {MANAGED_BY: "kdeploy"}, "annotations": {CREATED_BY: "kdeploy"}}});
                match conn.send("POST", &path("v1", "Namespace", None, None), Some("application/json"), Some(&obj)).await {
                    Ok(_) => Ok(()),
                    Err(ApiError::Status { code: 409, .. }) => Ok(()),
                    Err(e) => Err(e.into_provider(&format!("creating namespace {ns}"), conn)),
                }
            }
            Err(e) => Err(e.into_provider(&format!("reading namespace {ns}"), conn)),
        }
    }

    /// Waits until every awaited workload is ready, in order, within one timeout; on timeout
    /// explains why the first that is not ready is not.
    async fn wait_ready(&self, conn: &Conn, awaited: &Awaited) -> Result<(), ProviderError> {
        let timeout = Duration::from_millis(awaited.timeout_ms);
        let deadline = tokio::time::Instant::now() + timeout;
        for o in &awaited.objects {
            let ns = o.namespace.as_deref();
            let ready = wait::is_ready(&o.kind, &o.uid, o.generation);
            match tokio::time::timeout_at(deadline, self.waits.until(conn, &o.api_version, &o.kind, ns, &o.name, ready)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e.into_provider(&format!("waiting for {} {}", o.kind, o.name), conn)),
                Err(_) => {
                    let why = self.explain(conn, ns, &o.instance).await;
                    let what = match o.kind.as_str() {
                        "Deployment" => "available",
                        "StatefulSet" => "ready",
                        _ => "complete",
                    };
                    return Err(ProviderError::new(
                        ErrorKind::Timeout,
                        format!("{} {}/{} was not {what} after {}s (readiness_timeout).{why}", o.kind, ns.unwrap_or_default(), o.name, timeout.as_secs()),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Pod phases, container waiting reasons and the latest events of a component's pods.
    async fn explain(&self, conn: &Conn, ns: Option<&str>, instance: &str) -> String {
        let selector = format!("app.kubernetes.io/instance={instance}");
        let Ok(pods) = conn.list("v1", "Pod", ns, &selector).await else { return String::new() };
        if pods.is_empty() {
            return "\n  no pods were created (check the controller and quotas)".into();
        }
        let mut out = String::new();
        for pod in pods.iter().take(3) {
            let name = pod["metadata"]["name"].as_str().unwrap_or_default();
            let phase = pod["status"]["phase"].as_str().unwrap_or("Unknown");
            out.push_str(&format!("\n  pod {name}: {phase}"));
            for cs in pod["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(pod["status"]["initContainerStatuses"].as_array().into_iter().flatten())
            {
                if let Some(w) = cs["state"]["waiting"].as_object() {
                    out.push_str(&format!(
                        "\n    container {} waiting: {}{}",
                        cs["name"].as_str().unwrap_or_default(),
                        w.get("reason").and_then(|r| r.as_str()).unwrap_or("?"),
                        w.get("message").and_then(|m| m.as_str()).map(|m| format!(" ({m})")).unwrap_or_default()
                    ));
                }
            }
            // The last log lines of a container that stopped (a crash loop says why here).
            let log_path = |previous: bool| format!("{}/log?tailLines=10{}", path("v1", "Pod", ns, Some(name)), if previous { "&previous=true" } else { "" });
            let mut logs = String::new();
            for previous in [true, false] {
                if let Ok((200, text)) = conn.raw("GET", &log_path(previous), &[], Vec::new()).await
                    && !text.trim().is_empty()
                {
                    logs = text;
                    break;
                }
            }
            if !logs.trim().is_empty() {
                out.push_str("\n    last log lines:");
                for line in logs.lines().rev().take(10).collect::<Vec<_>>().into_iter().rev() {
                    out.push_str(&format!("\n      {line}"));
                }
            }
            let p = format!("{}?fieldSelector={}", path("v1", "Event", ns, None), api::encode(&format!("involvedObject.name={name}")));
            if let Ok(ev) = conn.send("GET", &p, None, None).await {
                let mut events: Vec<Json> = ev["items"].as_array().cloned().unwrap_or_default();
                events.sort_by_key(|e| e["lastTimestamp"].as_str().or(e["metadata"]["creationTimestamp"].as_str()).unwrap_or_default().to_string());
                for e in events.iter().rev().take(3) {
                    out.push_str(&format!(
                        "\n    event {} {}: {}",
                        e["type"].as_str().unwrap_or_default(),
                        e["reason"].as_str().unwrap_or_default(),
                        e["message"].as_str().unwrap_or_default()
                    ));
                }
            }
        }
        out
    }

    /// Renders the component with its computed values filled; None while one it needs is
    /// known only after apply.
    fn rendered(
        &self,
        c: &ComponentRef,
        attrs: &BTreeMap<String, Value>,
        refs: &BTreeMap<String, Reference>,
        cluster: &BTreeMap<String, Value>,
    ) -> Result<Option<Vec<Json>>, ProviderError> {
        render::render(&Input { component: c, attrs, refs, cluster }).map_err(|e| ProviderError::new(ErrorKind::Invalid, e))
    }
}

/// One LIST: (connection, apiVersion, kind, namespace).
type ListKey = (String, String, String, String);

/// Every kind kdeploy renders, namespaced and cluster-scoped: where a component that was never
/// recorded may have objects.
const NAMESPACED_KINDS: &[(&str, &str)] = &[
    ("v1", "Secret"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("v1", "PersistentVolumeClaim"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
];
const CLUSTER_KINDS: &[(&str, &str)] = &[("rbac.authorization.k8s.io/v1", "ClusterRole"), ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding")];

/// `apps/v1/Deployment/ns/name` → (apiVersion, kind, namespace, name); the namespace is empty
/// for cluster-scoped objects.
fn split_key(key: &str) -> Option<(&str, &str, &str, &str)> {
    let mut parts = key.rsplitn(4, '/');
    let name = parts.next()?;
    let ns = parts.next()?;
    let kind = parts.next()?;
    let api_version = parts.next()?;
    Some((api_version, kind, ns, name))
}

/// The value with a placeholder string for each unknown part.
fn placeholders(v: &Value) -> Value {
    match v {
        Value::Unknown(_) => Value::string("known-after-apply"),
        Value::List(items) => Value::List(items.iter().map(placeholders).collect()),
        Value::Map(m) => Value::Map(m.iter().map(|(k, v)| (k.clone(), placeholders(v))).collect()),
        other => other.clone(),
    }
}

/// Whether every value a rendering needs is known.
fn all_known(kind: Kind, attrs: &BTreeMap<String, Value>, refs: &BTreeMap<String, Reference>) -> bool {
    attrs.iter().filter(|(k, _)| k.as_str() != OBJECTS && k.as_str() != DIGEST).all(|(_, v)| !v.contains_unknown())
        && refs.values().all(|r| ref_known(kind, attrs, r))
}

/// Whether what a rendering reads of a referenced component is known. Never its objects and
/// digest (bookkeeping); an agent reads of a Vault only its own account, not the Vault's
/// configuration: adding a site generates the new account's keys at apply, and must not make
/// every other site's agents "known after apply".
fn ref_known(kind: Kind, attrs: &BTreeMap<String, Value>, r: &Reference) -> bool {
    let Some(m) = r.attributes.as_map() else { return !r.attributes.contains_unknown() };
    let own_account = attrs.get("account").and_then(Value::as_str).filter(|_| kind == Kind::Agent && r.component.kind == Kind::Vault);
    m.iter().all(|(k, v)| match (k.as_str(), own_account) {
        (OBJECTS | DIGEST, _) => true,
        (vault::CONFIG_ATTR, Some(_)) => true,
        (vault::ACCOUNTS_ATTR, Some(account)) => match v {
            Value::Map(accounts) => accounts.get(account).is_none_or(|a| !a.contains_unknown()),
            other => !other.contains_unknown(),
        },
        _ => !v.contains_unknown(),
    })
}

/// The owned-field digest each object would have after apply, by server-side dry run.
async fn dry_run(conn: &Conn, c: &ComponentRef, objects: &[Json], force_conflicts: bool) -> Result<BTreeMap<String, Value>, ProviderError> {
    let mut digests = BTreeMap::new();
    for obj in objects {
        let key = object_key(obj);
        let dry_run = match conn.apply(obj, true, force_conflicts).await {
            // Another manager owns some of these fields (an out-of-band edit): plan what
            // taking them back would give; apply still refuses without --force-conflicts.
            Err(ApiError::Status { code: 409, .. }) if !force_conflicts => conn.apply(obj, true, true).await,
            other => other,
        };
        match dry_run {
            Ok(result) => {
                digests.insert(key, Value::String(fields::owned_digest(&result, FIELD_MANAGER).unwrap_or_default()));
            }
            // The namespace was deleted out of band (apply recreates it and the object), or the
            // kind is defined by a CRD apply writes first.
            Err(e) if e.is_not_found() => {
                digests.insert(key.clone(), Value::Unknown(format!("{}.{OBJECTS}", c.address)));
            }
            Err(e) => return Err(e.into_provider(&format!("planning {key}"), conn)),
        }
    }
    Ok(digests)
}

/// Waits until the cluster serves an object's kind: a custom resource right after the CRD that
/// defines it was applied (the API server establishes a new CRD within moments).
async fn await_served(conn: &Conn, obj: &Json, deadline: tokio::time::Instant) -> Result<(), ApiError> {
    let (api_version, kind) = (obj["apiVersion"].as_str().unwrap_or_default(), obj["kind"].as_str().unwrap_or_default());
    loop {
        if conn.discover(api_version, kind).await?.is_some() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            // Let the write report the kind as not served.
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The chart a chart or hub component renders.
fn chart_of(c: &ComponentRef, attrs: &BTreeMap<String, Value>, refs: &BTreeMap<String, Reference>) -> Result<chart::Chart, ProviderError> {
    if c.kind == Kind::Hub {
        return hub::chart(c, attrs, refs);
    }
    Ok(chart::Chart::of(&c.address.to_string(), &c.address.instance_name(), attrs)?)
}

impl KubernetesProvider {
    /// Hub's prerequisite, checked at every plan (even before its values are known): the
    /// cluster serves ServiceMonitor, or a chart component (`monitoring`) will install it.
    async fn check_monitoring(&self, req: &PlanRequest<'_>) -> Result<(), ProviderError> {
        if req.refs.contains_key("monitoring") {
            return Ok(());
        }
        let conn = match self.conn(req.cluster).await {
            Ok(conn) => conn,
            // A cluster created by this apply (its endpoint known after apply): checked at apply.
            Err(_) if req.cluster.is_some_and(Value::contains_unknown) => return Ok(()),
            Err(e) => return Err(e),
        };
        let address = req.component.address.to_string();
        let served = conn
            .discover("monitoring.coreos.com/v1", "ServiceMonitor")
            .await
            .map_err(|e| e.into_provider(&format!("{address}: looking up ServiceMonitor"), &conn))?;
        if served.is_some() {
            return Ok(());
        }
        Err(ProviderError::new(
            ErrorKind::Invalid,
            hub::monitoring_hint(
                &address,
                &format!("{address}: the cluster (context {}) does not serve ServiceMonitor (monitoring.coreos.com/v1).", conn.context),
            ),
        ))
    }

    /// What the cluster shows of a load-balancer implementation, read once per run.
    async fn balancer_facts(&self, conn: &Conn) -> balancer::Facts {
        let mut known = self.balancers.lock().await;
        let key = (conn.server.clone(), conn.context.clone());
        if let Some(facts) = known.get(&key) {
            return facts.clone();
        }
        let facts = balancer::gather(conn).await;
        known.insert(key, facts.clone());
        facts
    }

    /// The warning of a plan that writes LoadBalancer Services (`what`) on a cluster where
    /// they would stay pending.
    async fn balancer_warning(&self, conn: &Conn, what: &str, fix: &str) -> Option<String> {
        balancer::warning(&balancer::judge(&self.balancer_facts(conn).await), what, fix)
    }

    /// A served component (Vault, Factory, a broker, TURN) exposed by a LoadBalancer that has
    /// no address yet: created, changed to LoadBalancer, or left pending by an earlier apply.
    async fn exposure_warning(&self, req: &PlanRequest<'_>, planned: &BTreeMap<String, Value>, objects: Option<&[Json]>) -> Option<String> {
        if exposure::Exposure::of(planned) != exposure::Exposure::LoadBalancer {
            return None;
        }
        let prior = map_ref(req.prior);
        if ["url", "external_uri"].iter().any(|k| matches!(prior.get(*k), Some(Value::String(_)))) {
            return None;
        }
        // A cluster created by this apply cannot be asked yet.
        let conn = self.conn(req.cluster).await.ok()?;
        // Named as rendering would name it, also when it cannot render yet.
        let services = objects.map(balancer::balancers).filter(|s| !s.is_empty());
        let what = balancer::named(
            &services.unwrap_or_else(|| vec![format!("{}/{}", namespace(&req.component, planned), render::service_name(&req.component.address, planned))]),
        );
        self.balancer_warning(&conn, &what, exposure::SERVICE_TYPE_FIX).await
    }

    /// A component behind an Ingress (`ingress_host`): what the Ingress needs from the cluster,
    /// checked when it is created or its Ingress settings change.
    async fn ingress_warnings(&self, req: &PlanRequest<'_>, planned: &BTreeMap<String, Value>) -> Vec<String> {
        const SETTINGS: [&str; 4] = ["ingress_host", "ingress_class", "cert_issuer", "ingress_tls_secret"];
        if exposure::Exposure::of(planned) != exposure::Exposure::Ingress {
            return Vec::new();
        }
        let prior = map_ref(req.prior);
        let setting = |m: &BTreeMap<String, Value>, k: &str| m.get(k).cloned().unwrap_or_default();
        if req.prior.is_some() && SETTINGS.iter().all(|k| setting(prior, k).same_as(&setting(planned, k))) {
            return Vec::new();
        }
        // A cluster created by this apply cannot be asked yet.
        let Ok(conn) = self.conn(req.cluster).await else { return Vec::new() };
        let text = |k: &str| planned.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        let wanted = ingress::Wanted {
            host: text("ingress_host").unwrap_or_default(),
            namespace: render::namespace(&req.component, planned),
            class: text("ingress_class"),
            issuer: text("cert_issuer"),
            tls_secret: text("ingress_tls_secret"),
        };
        ingress::problems(&wanted, &ingress::gather(&conn, &wanted).await)
    }

    /// A rendered chart's LoadBalancer Services; a chart that installs a load-balancer
    /// implementation is remembered, so the components planned after it (those that depend on
    /// it) are not warned.
    async fn chart_balancers(&self, conn: &Conn, c: &ComponentRef, objects: &[Json]) -> Option<String> {
        if let Some(name) = balancer::installed_by(objects) {
            let mut facts = self.balancer_facts(conn).await;
            facts.installed_by = Some((c.address.to_string(), name));
            self.balancers.lock().await.insert((conn.server.clone(), conn.context.clone()), facts);
        }
        let services = balancer::balancers(objects);
        if services.is_empty() {
            return None;
        }
        let fix = if c.kind == Kind::Hub { hub::BALANCER_FIX } else { chart::BALANCER_FIX };
        self.balancer_warning(conn, &balancer::named(&services), fix).await
    }

    /// What a rendered chart's Ingresses need from the cluster; a problem several of them share
    /// (no ingress controller) is told once.
    async fn chart_ingresses(&self, conn: &Conn, objects: &[Json]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for wanted in objects.iter().filter_map(ingress::Wanted::of_object) {
            for p in ingress::problems(&wanted, &ingress::gather(conn, &wanted).await) {
                let first = |w: &str| w.split(": ").next().unwrap_or_default().to_string();
                if !out.iter().any(|o| first(o) == first(&p)) {
                    out.push(p);
                }
            }
        }
        out
    }

    /// A chart created with values only apply will know (Hub's Vault keys): rendered with
    /// placeholders for them, only to see which LoadBalancer Services and Ingresses it writes.
    /// Nothing when that rendering fails (apply reports what is wrong) or the cluster cannot be
    /// asked yet.
    async fn sketch_warnings(&self, req: &PlanRequest<'_>, planned: &BTreeMap<String, Value>) -> Option<Vec<String>> {
        let conn = self.conn(req.cluster).await.ok()?;
        let attrs = map_of(Some(&placeholders(&Value::Map(planned.clone()))));
        let refs: BTreeMap<String, Reference> = req
            .refs
            .iter()
            .map(|(k, r)| (k.clone(), Reference { component: r.component.clone(), attributes: std::sync::Arc::new(placeholders(&r.attributes)) }))
            .collect();
        let ch = chart_of(&req.component, &attrs, &refs).ok()?;
        let objects = self.chart_objects(&conn, &ch, &req.component, &refs).await.ok()?;
        let mut warnings: Vec<String> = self.chart_balancers(&conn, &req.component, &objects).await.into_iter().collect();
        warnings.extend(self.chart_ingresses(&conn, &objects).await);
        Some(warnings)
    }

    /// A chart's objects: `helm template`, then made kdeploy's ([`chart::adopt`]), the scope of
    /// each kind from the chart's CRDs or the cluster's discovery.
    async fn chart_objects(&self, conn: &Conn, ch: &chart::Chart, c: &ComponentRef, refs: &BTreeMap<String, Reference>) -> Result<Vec<Json>, ProviderError> {
        let helm = chart::helm_binary(ch, std::env::var(chart::HELM_ENV).ok(), std::env::var_os("PATH"))?;
        let job = ch.clone();
        let text = tokio::task::spawn_blocking(move || chart::template(&helm, &job))
            .await
            .map_err(|e| ProviderError::other(format!("{}: helm template did not finish: {e}", ch.address)))??;
        let mut objects = chart::parse(&ch.address, &text)?;
        objects.extend(ch.extra.iter().cloned());
        let defined = chart::defined_kinds(&objects);
        // A Hub whose monitoring chart installs the prometheus-operator CRDs: its ServiceMonitors
        // are served once that chart is applied (apply waits for the kind).
        let monitoring_later = c.kind == Kind::Hub && refs.contains_key("monitoring");
        let mut scopes: BTreeMap<(String, String), Option<bool>> = BTreeMap::new();
        for o in &objects {
            let key = (o["apiVersion"].as_str().unwrap_or_default().to_string(), o["kind"].as_str().unwrap_or_default().to_string());
            if scopes.contains_key(&key) {
                continue;
            }
            let scope = match defined.get(&key) {
                Some(namespaced) => Some(*namespaced),
                None => {
                    let found = conn.discover(&key.0, &key.1).await.map_err(|e| e.into_provider(&format!("{}: looking up {}", ch.address, key.1), conn))?;
                    found.map(|(_, n)| n).or_else(|| (monitoring_later && key.0.starts_with(hub::MONITORING_GROUP)).then_some(true))
                }
            };
            scopes.insert(key, scope);
        }
        chart::adopt(ch, objects, |av, k| scopes.get(&(av.to_string(), k.to_string())).copied().flatten()).map_err(|e| {
            let e = ProviderError::from(e);
            if c.kind == Kind::Hub && e.message.contains(hub::MONITORING_GROUP) {
                ProviderError::new(e.kind, hub::monitoring_hint(&ch.address, &e.message))
            } else {
                e
            }
        })
    }

    /// A chart's plan. While what its rendering depends on is unchanged and nothing drifted, the
    /// recorded objects stand (no helm, no network); otherwise helm renders it and the API
    /// server dry-runs the objects, as for kdeploy's own.
    async fn plan_chart(&self, req: &PlanRequest<'_>, mut resp: PlanResponse) -> Result<PlanResponse, ProviderError> {
        let c = &req.component;
        let Value::Map(planned) = &mut resp.planned else { return Ok(resp) };
        let unknown = |planned: &mut BTreeMap<String, Value>, keys: &[&str]| {
            for k in keys {
                planned.insert(k.to_string(), Value::Unknown(format!("{}.{k}", c.address)));
            }
        };
        planned.remove(CHART_DIGEST);
        if !all_known(c.kind, planned, req.refs) {
            if req.prior.is_none()
                && let Some(w) = self.sketch_warnings(req, planned).await
            {
                resp.warnings.extend(w);
            }
            unknown(planned, &[OBJECTS, DIGEST, CHART_DIGEST]);
            return Ok(resp);
        }
        let ch = chart_of(c, planned, req.refs)?;
        let inputs = ch.inputs_digest()?;
        planned.insert(CHART_DIGEST.into(), Value::String(inputs.clone()));
        let recorded = map_ref(req.recorded);
        if let Some(prior) = req.prior.and_then(Value::as_map)
            && recorded.get(CHART_DIGEST).and_then(Value::as_str) == Some(inputs.as_str())
            && recorded.get(OBJECTS) == prior.get(OBJECTS)
        {
            planned.insert(OBJECTS.into(), prior.get(OBJECTS).cloned().unwrap_or_default());
            planned.insert(DIGEST.into(), recorded.get(DIGEST).cloned().unwrap_or_default());
            return Ok(resp);
        }
        // Rendered at plan time even for a create, so a missing helm or a chart error shows now.
        let conn = self.conn(req.cluster).await?;
        let objects = self.chart_objects(&conn, &ch, c, req.refs).await?;
        if let Some(w) = self.chart_balancers(&conn, c, &objects).await {
            resp.warnings.push(w);
        }
        resp.warnings.extend(self.chart_ingresses(&conn, &objects).await);
        if req.prior.is_none() {
            unknown(planned, &[OBJECTS, DIGEST]);
            return Ok(resp);
        }
        let digests = dry_run(&conn, c, &objects, req.force_conflicts).await?;
        planned.insert(OBJECTS.into(), Value::Map(digests));
        planned.insert(DIGEST.into(), Value::String(fields::digest_all(&objects)));
        Ok(resp)
    }
}

#[async_trait]
impl Provider for KubernetesProvider {
    fn name(&self) -> &str {
        "kubernetes"
    }

    async fn preflight(&self, clusters: &[(ComponentRef, Value)]) -> Preflight {
        let mut out = Preflight::default();
        for (c, attrs) in clusters {
            let attrs = map_ref(Some(attrs));
            let conn = match self.pool.connect(attrs).await {
                Ok(c) => c,
                Err(e) => {
                    out.errors.push(e.message);
                    continue;
                }
            };
            if let Err(e) = conn.send("GET", "/version", None, None).await {
                out.errors.push(e.into_provider("checking the cluster", &conn).message);
                continue;
            }
            let sc = attrs.get("storage_class").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
            match c.type_name.as_str() {
                "microk8s" => {
                    let mut missing = Vec::new();
                    if let Ok(None) = conn.get("/api/v1/namespaces/kube-system/services/kube-dns").await {
                        missing.push("dns");
                    }
                    let sc = sc.unwrap_or_else(|| "microk8s-hostpath".into());
                    if let Ok(None) = conn.get(&path("storage.k8s.io/v1", "StorageClass", None, Some(&sc))).await {
                        missing.push("hostpath-storage");
                    }
                    if matches!(attrs.get("gpu"), Some(Value::Bool(true))) {
                        let gpu = conn.send("GET", "/api/v1/nodes", None, None).await.ok().is_some_and(|n| {
                            n["items"].as_array().into_iter().flatten().any(|node| node["status"]["allocatable"]["nvidia.com/gpu"].is_string())
                        });
                        if !gpu {
                            missing.push("nvidia");
                        }
                    }
                    if !missing.is_empty() {
                        out.errors.push(format!(
                            "MicroK8s add-ons missing on context {}: {}. Run `microk8s enable {}` on the node, then plan again.",
                            conn.context,
                            missing.join(", "),
                            missing.join(" ")
                        ));
                    }
                }
                _ => match sc {
                    Some(sc) => {
                        if let Ok(None) = conn.get(&path("storage.k8s.io/v1", "StorageClass", None, Some(&sc))).await {
                            out.errors.push(format!("storage class {sc:?} does not exist on context {}. Set storage_class to one of the cluster's classes (kubectl get storageclass).", conn.context));
                        }
                    }
                    None => match conn.send("GET", &path("storage.k8s.io/v1", "StorageClass", None, None), None, None).await {
                        Ok(list) => {
                            let has_default = list["items"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .any(|s| s["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true");
                            if !has_default {
                                out.errors.push("the cluster has no default StorageClass, so volumes would never bind. Set storage_class = \"...\" on the cluster block, or mark a class as default.".to_string());
                            }
                        }
                        Err(e) => out.warnings.push(format!("could not list storage classes: {}", e.into_provider("checking storage", &conn).message)),
                    },
                },
            }
        }
        out
    }

    async fn health(&self, requests: &[ReadRequest]) -> Vec<Check> {
        let mut out = Vec::new();
        for r in requests.iter().filter(|r| r.component.kind == Kind::Vault) {
            let address = &r.component.address;
            let Ok(conn) = self.conn(r.cluster.as_ref()).await else { continue };
            let attrs = map_ref(Some(&r.recorded));
            let ns = namespace(&r.component, attrs);
            let svc = render::service_name(&r.component.address, attrs);
            // Through the API server's service proxy: works from wherever kdeploy runs.
            let proxy = format!("/api/v1/namespaces/{ns}/services/{svc}:80/proxy");
            let url = attrs.get("url").and_then(Value::as_str).unwrap_or_default().to_string();
            match conn.raw("GET", &format!("{proxy}/api/health"), &[], Vec::new()).await {
                Ok((code, _)) if (200..300).contains(&code) => {
                    out.push(Check { address: address.clone(), ok: true, message: format!("{address}: Vault answers /api/health ({url}).") })
                }
                answer => {
                    let why = match answer {
                        Ok((code, body)) => {
                            // The API server's own answer (no endpoints, ...) is a Status object.
                            let message = serde_json::from_str::<Json>(&body).ok().and_then(|s| s["message"].as_str().map(str::to_string));
                            format!("HTTP {code}: {}", message.unwrap_or_else(|| body.trim().chars().take(200).collect()))
                        }
                        Err(ApiError::Status { code, message, .. }) => format!("HTTP {code}: {message}"),
                        Err(ApiError::Transport(t)) => t,
                    };
                    out.push(Check {
                        address: address.clone(),
                        ok: false,
                        message: format!("{address}: Vault does not answer /api/health ({why}). Its pods may still be starting: kubectl -n {ns} get pods -l app.kubernetes.io/instance={svc}"),
                    });
                    continue;
                }
            }
            let image = attrs.get("image").and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or(kdeploy_provider::images::VAULT).to_string();
            for check in vault::account_checks(attrs) {
                let headers = [(vault::ACCESS_KEY_HEADER, check.access_key.as_str()), (vault::SECRET_KEY_HEADER, check.secret_key.as_str())];
                let answer = match conn.raw("POST", &format!("{proxy}{}", vault::PING_PATH), &headers, Vec::new()).await {
                    Ok((code, _)) => Ok(code),
                    Err(ApiError::Status { code, .. }) => Ok(code),
                    Err(ApiError::Transport(t)) => Err(t),
                };
                out.push(vault::ping_check(address, &check.account, &image, &url, answer));
            }
        }
        out
    }

    async fn read(&self, requests: Vec<ReadRequest>) -> Result<Vec<ReadResult>, ProviderError> {
        /// What one LIST has to answer: recorded objects by name, and the objects of components
        /// that were never recorded by their address annotation.
        #[derive(Default)]
        struct Wanted {
            conn: Option<Conn>,
            names: HashSet<String>,
            addresses: HashSet<String>,
        }
        enum Todo {
            Done(ReadResult),
            /// Read the recorded objects, from the LISTs of this connection.
            Recorded(String),
            /// An interrupted create may have written objects without recording them: find them
            /// by their address annotation.
            Discover(String),
        }
        // (connection, apiVersion, kind, namespace) → what is wanted of it: one LIST each.
        let mut lists: BTreeMap<ListKey, Wanted> = BTreeMap::new();
        let mut todo = Vec::with_capacity(requests.len());
        let none = BTreeMap::new();
        for r in &requests {
            let conn = self.conn(if r.component.kind == Kind::Cluster { Some(&r.recorded) } else { r.cluster.as_ref() }).await?;
            if r.component.kind == Kind::Cluster {
                conn.send("GET", "/version", None, None).await.map_err(|e| e.into_provider(&format!("reading {}", r.component.address), &conn))?;
                todo.push(Todo::Done(ReadResult::Found { attributes: r.recorded.clone(), fingerprint: None }));
                continue;
            }
            let ckey = format!("{}|{}", conn.server, conn.context);
            let recorded = r.recorded.as_map().unwrap_or(&none);
            let mut want = |api_version: &str, kind: &str, ns: &str, name: Option<&str>| {
                let w = lists.entry((ckey.clone(), api_version.to_string(), kind.to_string(), ns.to_string())).or_default();
                w.conn.get_or_insert_with(|| conn.clone());
                match name {
                    Some(name) => w.names.insert(name.to_string()),
                    None => w.addresses.insert(r.component.address.to_string()),
                };
            };
            match recorded.get(OBJECTS).and_then(Value::as_map).filter(|m| !m.is_empty()) {
                Some(objects) => {
                    for key in objects.keys() {
                        if let Some((api_version, kind, ns, name)) = split_key(key) {
                            want(api_version, kind, ns, Some(name));
                        }
                    }
                    todo.push(Todo::Recorded(ckey));
                }
                None => {
                    let ns = namespace(&r.component, recorded);
                    for (scope, kinds) in [(ns.as_str(), NAMESPACED_KINDS), ("", CLUSTER_KINDS)] {
                        for (api_version, kind) in kinds {
                            want(api_version, kind, scope, None);
                        }
                    }
                    todo.push(Todo::Discover(ckey));
                }
            }
        }
        // The digests of the objects wanted, computed as each LIST arrives; the rest of it is
        // dropped at once (a LIST of a thousand Deployments is megabytes).
        let mut digests: HashMap<(ListKey, String), String> = HashMap::new();
        let mut found: HashMap<(String, String), BTreeMap<String, Value>> = HashMap::new();
        // A few LISTs in flight at once (the API server answers them in parallel); each is
        // digested when it arrives, one at a time.
        let selector = format!("{MANAGED_BY}=kdeploy");
        let mut queue = lists.into_iter().filter_map(|(lk, w)| w.conn.clone().map(|c| (lk, w, c)));
        let mut inflight = tokio::task::JoinSet::new();
        let spawn = |set: &mut tokio::task::JoinSet<_>, (lk, wanted, conn): (ListKey, Wanted, Conn)| {
            let selector = selector.clone();
            set.spawn(async move {
                let (_, api_version, kind, ns) = &lk;
                let listed = conn.list_raw(api_version, kind, if ns.is_empty() { None } else { Some(ns) }, &selector).await;
                (lk, wanted, conn, listed)
            });
        };
        for next in queue.by_ref().take(LISTS_IN_FLIGHT) {
            spawn(&mut inflight, next);
        }
        while let Some(joined) = inflight.join_next().await {
            let (lk, wanted, conn, listed) = joined.map_err(|e| ProviderError::other(format!("a LIST task failed: {e}")))?;
            if let Some(next) = queue.next() {
                spawn(&mut inflight, next);
            }
            let (ckey, api_version, kind, ns) = &lk;
            let listed = match listed {
                Ok(listed) => listed,
                // The namespace was never created (or is gone): nothing of it either.
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into_provider(&format!("listing {kind} in {ns}"), &conn)),
            };
            let each = listed.each(|obj| {
                let name = obj.pointer(&["metadata", "name"]).and_then(Tree::as_str).unwrap_or_default();
                let address =
                    obj.pointer(&["metadata", "annotations", render::ADDRESS_ANNOTATION]).and_then(Tree::as_str).filter(|a| wanted.addresses.contains(*a));
                if !wanted.names.contains(name) && address.is_none() {
                    return;
                }
                let digest = fields::owned_digest(&obj, FIELD_MANAGER).unwrap_or_else(|| UNMANAGED.into());
                if let Some(address) = address {
                    // Items of a LIST carry no apiVersion and kind: the key is made from the query.
                    let key = format!("{api_version}/{kind}/{}/{name}", obj.pointer(&["metadata", "namespace"]).and_then(Tree::as_str).unwrap_or_default());
                    found.entry((ckey.clone(), address.to_string())).or_default().insert(key, Value::String(digest.clone()));
                }
                if wanted.names.contains(name) {
                    digests.insert((lk.clone(), name.to_string()), digest);
                }
            });
            each.map_err(|e| e.into_provider(&format!("listing {kind} in {ns}"), &conn))?;
        }
        let mut results = Vec::with_capacity(requests.len());
        for (r, todo) in requests.into_iter().zip(todo) {
            let live = match todo {
                Todo::Done(result) => {
                    results.push(result);
                    continue;
                }
                Todo::Discover(ckey) => found.remove(&(ckey, r.component.address.to_string())).unwrap_or_default(),
                Todo::Recorded(ckey) => {
                    let objects = r.recorded.as_map().and_then(|m| m.get(OBJECTS)).and_then(Value::as_map);
                    let mut live = BTreeMap::new();
                    for key in objects.into_iter().flat_map(BTreeMap::keys) {
                        let Some((api_version, kind, ns, name)) = split_key(key) else { continue };
                        let lk = (ckey.clone(), api_version.to_string(), kind.to_string(), ns.to_string());
                        if let Some(d) = digests.get(&(lk, name.to_string())) {
                            live.insert(key.clone(), Value::String(d.clone()));
                        }
                    }
                    live
                }
            };
            results.push(if live.is_empty() {
                ReadResult::Missing
            } else {
                let mut attrs = match r.recorded {
                    Value::Map(m) => m,
                    _ => BTreeMap::new(),
                };
                attrs.insert(OBJECTS.into(), Value::Map(live));
                ReadResult::Found { attributes: Value::Map(attrs), fingerprint: None }
            });
        }
        Ok(results)
    }

    async fn plan(&self, req: PlanRequest<'_>) -> Result<PlanResponse, ProviderError> {
        let c = &req.component;
        let mut resp = default_plan(&req);
        if c.kind == Kind::Cluster {
            return Ok(resp);
        }
        if c.kind == Kind::Chart {
            return self.plan_chart(&req, resp).await;
        }
        if c.kind == Kind::Hub {
            if let Value::Map(planned) = &mut resp.planned {
                fill_computed(c, planned, req.refs, map_ref(req.cluster), false)?;
            }
            self.check_monitoring(&req).await?;
            return self.plan_chart(&req, resp).await;
        }
        let cluster = map_ref(req.cluster);
        let Value::Map(planned) = &mut resp.planned else { return Ok(resp) };
        // A LoadBalancer keeps the address its previous apply found, unless the exposure changed.
        let prior_exposure = req.prior.and_then(Value::as_map).map(exposure::Exposure::of);
        if prior_exposure.is_some_and(|e| e != exposure::Exposure::of(planned)) {
            planned.remove("url");
            planned.remove("external_uri");
        }
        // Computed values that follow from the inputs (a changed password input, a new node port).
        fill_computed(c, planned, req.refs, cluster, false)?;
        let unknown_objects = |planned: &mut BTreeMap<String, Value>| {
            planned.insert(OBJECTS.into(), Value::Unknown(format!("{}.{OBJECTS}", c.address)));
            planned.insert(DIGEST.into(), Value::Unknown(format!("{}.{DIGEST}", c.address)));
        };
        // Rendering now reports a wrong stack at plan time, even for a create.
        let objects = if all_known(c.kind, planned, req.refs) { self.rendered(c, planned, req.refs, cluster)? } else { None };
        if let Some(w) = self.exposure_warning(&req, planned, objects.as_deref()).await {
            resp.warnings.push(w);
        }
        resp.warnings.extend(self.ingress_warnings(&req, planned).await);
        let (Some(prior), Some(objects)) = (req.prior, objects) else {
            unknown_objects(planned);
            return Ok(resp);
        };
        let prior_map = map_ref(Some(prior));
        let digest = fields::digest_all(&objects);
        let recorded = map_ref(req.recorded);
        // An object kdeploy owns nothing of (imported, not applied yet) is taken over by apply.
        let owned = map_ref(prior_map.get(OBJECTS)).values().all(|d| d.as_str() != Some(UNMANAGED));
        let unchanged = owned && recorded.get(DIGEST).and_then(Value::as_str) == Some(digest.as_str()) && recorded.get(OBJECTS) == prior_map.get(OBJECTS);
        if unchanged {
            planned.insert(OBJECTS.into(), prior_map.get(OBJECTS).cloned().unwrap_or_default());
            planned.insert(DIGEST.into(), Value::String(digest));
            return Ok(resp);
        }
        // Something changed or drifted: ask the API server what applying would produce.
        let conn = self.conn(req.cluster).await?;
        let digests = dry_run(&conn, c, &objects, req.force_conflicts).await?;
        planned.insert(OBJECTS.into(), Value::Map(digests));
        planned.insert(DIGEST.into(), Value::String(digest));
        Ok(resp)
    }

    async fn apply(&self, req: ApplyRequest) -> Result<ApplyResponse, ProviderError> {
        let c = &req.component;
        let conn = self.conn(if c.kind == Kind::Cluster { Some(&req.planned) } else { req.cluster.as_ref() }).await?;
        let mut attrs = map_of(Some(&req.planned));
        if c.kind == Kind::Cluster {
            conn.send("GET", "/version", None, None).await.map_err(|e| e.into_provider(&format!("connecting {}", c.address), &conn))?;
            attrs.insert("server".into(), Value::String(conn.server.clone()));
            return Ok(ApplyResponse::ready(Value::Map(attrs), None));
        }
        let cluster = map_ref(req.cluster.as_ref());
        fill_computed(c, &mut attrs, &req.refs, cluster, true)?;
        let objects = if matches!(c.kind, Kind::Chart | Kind::Hub) {
            let ch = chart_of(c, &attrs, &req.refs)?;
            attrs.insert(CHART_DIGEST.into(), Value::String(ch.inputs_digest()?));
            self.chart_objects(&conn, &ch, c, &req.refs).await?
        } else {
            self.rendered(c, &attrs, &req.refs, cluster)?.ok_or_else(|| {
                ProviderError::new(
                    ErrorKind::Invalid,
                    format!("{}: a value its objects need is still unknown at apply (a referenced component was not applied)", c.address),
                )
            })?
        };
        let mut namespaces: BTreeSet<String> = BTreeSet::new();
        for obj in &objects {
            if let Some(ns) = obj["metadata"]["namespace"].as_str() {
                namespaces.insert(ns.to_string());
            }
        }
        for ns in &namespaces {
            self.ensure_namespace(&conn, ns).await?;
        }
        let mut digests = BTreeMap::new();
        let mut applied = Vec::new();
        // A chart's custom resources wait for the kinds its CRDs (applied first) define.
        let served_by = tokio::time::Instant::now() + components::readiness_timeout(&attrs).as_std();
        for obj in &objects {
            let key = object_key(obj);
            await_served(&conn, obj, served_by).await.map_err(|e| e.into_provider(&format!("applying {key}"), &conn))?;
            let result = conn.apply(obj, false, req.force_conflicts).await.map_err(|e| e.into_provider(&format!("applying {key}"), &conn))?;
            digests.insert(key, Value::String(fields::owned_digest(&result, FIELD_MANAGER).unwrap_or_default()));
            applied.push(result);
        }
        // Objects this component no longer renders (an old bucket job, a dropped volume claim).
        if let Some(prior) = &req.prior {
            for key in map_ref(map_ref(Some(prior)).get(OBJECTS)).keys() {
                if digests.contains_key(key) {
                    continue;
                }
                let parts: Vec<&str> = key.rsplitn(4, '/').collect();
                if parts.len() == 4 && parts[2] != "PersistentVolumeClaim" {
                    let ns = if parts[1].is_empty() { None } else { Some(parts[1]) };
                    conn.delete(parts[3], parts[2], ns, parts[0]).await.map_err(|e| e.into_provider(&format!("deleting {key}"), &conn))?;
                }
            }
        }
        // Readiness is waited for apart from the writes (`wait` below), with the waits of every
        // other component.
        let timeout = render::readiness_timeout(&objects).unwrap_or_else(|| components::readiness_timeout(&attrs)).as_std();
        let wait = match Awaited::of(&applied, timeout) {
            Some(a) => Some(Wait(serde_json::to_value(a).map_err(|e| ProviderError::other(format!("{}: {e}", c.address)))?)),
            None => None,
        };
        if matches!(c.kind, Kind::Vault | Kind::Factory) && exposure::Exposure::of(&attrs) == exposure::Exposure::LoadBalancer {
            let url = exposure::balancer_url(&conn, &applied, timeout, &c.address).await?;
            if c.kind == Kind::Vault {
                attrs.insert("external_url".into(), Value::String(format!("{url}/api")));
            }
            attrs.insert("url".into(), Value::String(url));
        }
        if c.kind == Kind::Hub {
            exposure::balancers_ready(&conn, &applied, timeout, hub::BALANCER_FIX)
                .await
                .map_err(|e| ProviderError::new(e.kind, format!("{}: {}", c.address, e.message)))?;
        }
        if c.kind == Kind::Broker && mqtt::is_mqtt(&attrs) && exposure::Exposure::of(&attrs) == exposure::Exposure::LoadBalancer {
            let url = exposure::balancer_url(&conn, &applied, timeout, &c.address).await?;
            let host = exposure::server_host(&url);
            attrs.insert("external_uri".into(), Value::String(format!("tcp://{host}:{}", mqtt::MQTT_PORT)));
            attrs.insert("external_websocket_uri".into(), Value::String(format!("ws://{host}:{}", mqtt::WEBSOCKET_PORT)));
        }
        if c.kind == Kind::Turn && exposure::Exposure::of(&attrs) == exposure::Exposure::LoadBalancer {
            let url = exposure::balancer_url(&conn, &applied, timeout, &c.address).await?;
            attrs.insert("external_uri".into(), Value::String(turn::uri(&exposure::server_host(&url), turn::TURN_PORT)));
        }
        attrs.insert(DIGEST.into(), Value::String(fields::digest_all(&objects)));
        attrs.insert(OBJECTS.into(), Value::Map(digests));
        Ok(ApplyResponse { attributes: Value::Map(attrs), fingerprint: None, wait })
    }

    async fn import(&self, req: ImportRequest<'_>) -> Result<Imported, ProviderError> {
        self.import_existing(req).await
    }

    async fn read_data(&self, req: DataRequest<'_>) -> Result<DataResult, ProviderError> {
        self.read_secret(req).await
    }

    async fn discover(&self, cluster: &Value) -> Result<Vec<kdeploy_provider::Running>, ProviderError> {
        self.discover_workloads(cluster).await
    }

    async fn wait(&self, req: WaitRequest) -> Result<(), ProviderError> {
        let c = &req.component;
        let awaited: Awaited =
            serde_json::from_value(req.wait.0).map_err(|e| ProviderError::other(format!("{}: not a wait of this provider: {e}", c.address)))?;
        let conn = self.conn(req.cluster.as_ref()).await?;
        self.wait_ready(&conn, &awaited).await.map_err(|mut e| {
            if c.kind == Kind::Vault && e.kind == ErrorKind::Timeout {
                e.message.push_str(vault::NOT_STARTED_HINT);
            }
            e
        })
    }

    async fn delete(&self, req: DeleteRequest) -> Result<(), ProviderError> {
        let c = &req.component;
        if c.kind == Kind::Cluster {
            return Ok(());
        }
        let conn = self.conn(req.cluster.as_ref()).await?;
        let prior = map_ref(Some(&req.prior));
        let keys: Vec<String> = map_ref(prior.get(OBJECTS)).keys().cloned().collect();
        let mut namespaces = BTreeSet::new();
        // Workloads first, then what they use; CRDs last, after the custom resources of them
        // (a real API server deletes those only eventually).
        let rank = |k: &str| match k {
            _ if k.contains("/Deployment/") || k.contains("/StatefulSet/") || k.contains("/Job/") => 0,
            _ if k.contains("/CustomResourceDefinition/") => 2,
            _ => 1,
        };
        let mut ordered = keys.clone();
        ordered.sort_by_key(|k| rank(k));
        for key in &ordered {
            let parts: Vec<&str> = key.rsplitn(4, '/').collect();
            if parts.len() != 4 {
                continue;
            }
            let (name, ns, kind, api_version) = (parts[0], parts[1], parts[2], parts[3]);
            if kind == "PersistentVolumeClaim" && !req.delete_data {
                continue;
            }
            let ns_opt = if ns.is_empty() { None } else { Some(ns) };
            if let Some(ns) = ns_opt {
                namespaces.insert(ns.to_string());
            }
            conn.delete(api_version, kind, ns_opt, name).await.map_err(|e| e.into_provider(&format!("deleting {key}"), &conn))?;
        }
        // Volume claims made from StatefulSet templates are kept unless --delete-data.
        let instance = object_base(&c.address, prior);
        for ns in &namespaces {
            if req.delete_data {
                let claims = conn
                    .list("v1", "PersistentVolumeClaim", Some(ns), &format!("app.kubernetes.io/instance={instance}"))
                    .await
                    .map_err(|e| e.into_provider("listing volume claims", &conn))?;
                for claim in claims {
                    let name = claim["metadata"]["name"].as_str().unwrap_or_default();
                    conn.delete("v1", "PersistentVolumeClaim", Some(ns), name)
                        .await
                        .map_err(|e| e.into_provider(&format!("deleting volume claim {name}"), &conn))?;
                }
            }
        }
        // Wait until the workloads are gone, so dependencies are deleted after dependants (with
        // the waits of every other component: one watch per kind and namespace).
        let deadline = tokio::time::Instant::now() + components::readiness_timeout(prior).as_std();
        for key in ordered.iter().filter(|k| rank(k) == 0) {
            let parts: Vec<&str> = key.rsplitn(4, '/').collect();
            let ns = if parts[1].is_empty() { None } else { Some(parts[1]) };
            // Past the deadline the delete goes on, as it always did.
            let gone = self.waits.until(&conn, parts[3], parts[2], ns, parts[0], wait::is_gone);
            if let Ok(Err(e)) = tokio::time::timeout_at(deadline, gone).await {
                return Err(e.into_provider(&format!("waiting for {key} to go"), &conn));
            }
        }
        // Namespaces kdeploy created go when nothing of kdeploy's (and no kept data) is left.
        for ns in namespaces {
            let Ok(Some(n)) = conn.get(&path("v1", "Namespace", None, Some(&ns))).await else { continue };
            if n["metadata"]["annotations"][CREATED_BY] != "kdeploy" {
                continue;
            }
            let mut empty = true;
            for (av, kind) in
                [("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("v1", "Service"), ("v1", "Secret"), ("v1", "ConfigMap"), ("batch/v1", "Job")]
            {
                if conn.list(av, kind, Some(&ns), &format!("{MANAGED_BY}=kdeploy")).await.map(|l| !l.is_empty()).unwrap_or(true) {
                    empty = false;
                    break;
                }
            }
            if empty && conn.list("v1", "PersistentVolumeClaim", Some(&ns), "").await.map(|l| !l.is_empty()).unwrap_or(true) {
                empty = false;
            }
            if empty {
                conn.delete("v1", "Namespace", None, &ns).await.map_err(|e| e.into_provider(&format!("deleting namespace {ns}"), &conn))?;
            }
        }
        Ok(())
    }
}

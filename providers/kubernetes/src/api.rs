//! A thin layer over kube's client: raw JSON requests by path, connection from the cluster
//! component's attributes (kubeconfig + context), and API errors turned into provider errors
//! that say what to do.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kdeploy_provider::{ErrorKind, ProviderError, TokenSource, Value};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value as Json;

use crate::node::Node;

/// One API server connection.
#[derive(Clone)]
pub struct Conn {
    pub client: kube::Client,
    /// Without retries (see [`clients`]).
    pub once: kube::Client,
    pub server: String,
    pub context: String,
    /// Kinds learnt from the API server's discovery (a chart's custom resources, kinds kdeploy
    /// does not render itself): (apiVersion, kind) → (plural, namespaced). Shared by clones.
    kinds: Arc<Mutex<Discovered>>,
}

/// (apiVersion, kind) → (plural, namespaced), as discovery answered.
type Discovered = HashMap<(String, String), (String, bool)>;

/// Where the cluster's kubeconfig is: the `kubeconfig` attribute, $KUBECONFIG, ~/.kube/config.
pub fn kubeconfig_path(cluster: &BTreeMap<String, Value>) -> String {
    if let Some(Value::String(p)) = cluster.get("kubeconfig")
        && !p.is_empty()
    {
        return p.clone();
    }
    if let Ok(k) = std::env::var("KUBECONFIG")
        && let Some(first) = k.split(':').find(|s| !s.is_empty())
    {
        return first.to_string();
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    format!("{home}/.kube/config")
}

/// Connections cached per (kubeconfig, context) or per endpoint.
#[derive(Default)]
pub struct Pool {
    conns: Mutex<HashMap<(String, String), Conn>>,
    /// Token-authenticated connections with their age (tokens are short-lived).
    direct: Mutex<HashMap<String, (Conn, std::time::Instant)>>,
    pub token_sources: HashMap<String, Arc<dyn TokenSource>>,
}

/// Tokens from cloud token sources are valid for 15 minutes; reconnect well before that.
const TOKEN_LIFETIME: Duration = Duration::from_secs(10 * 60);

impl Pool {
    /// A connection from the cluster's `endpoint`, `certificate_authority` (base64 PEM) and a
    /// bearer token from the token source named by `token_source` — no kubeconfig file needed.
    async fn connect_direct(&self, cluster: &BTreeMap<String, Value>, endpoint: &str) -> Result<Conn, ProviderError> {
        if let Some((c, at)) = self.direct.lock().unwrap_or_else(|e| e.into_inner()).get(endpoint)
            && at.elapsed() < TOKEN_LIFETIME
        {
            return Ok(c.clone());
        }
        let source = cluster.get("token_source").and_then(Value::as_str).unwrap_or_default();
        let token = match self.token_sources.get(source) {
            Some(s) => s.token(&Value::Map(cluster.clone())).await?,
            None if source.is_empty() => String::new(),
            None => {
                return Err(ProviderError::new(
                    ErrorKind::Invalid,
                    format!("this kdeploy build cannot issue {source} tokens for {endpoint}; build it with the matching cloud feature"),
                ));
            }
        };
        let ca = cluster.get("certificate_authority").and_then(Value::as_str).unwrap_or_default();
        // An in-memory kubeconfig, so kube's own TLS and auth handling applies unchanged.
        let mut cluster_entry = serde_json::json!({"server": endpoint});
        if !ca.is_empty() {
            cluster_entry["certificate-authority-data"] = serde_json::json!(ca);
        }
        let mut user = serde_json::json!({});
        if !token.is_empty() {
            user["token"] = serde_json::json!(token);
        }
        let kc = serde_json::json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "kdeploy",
            "clusters": [{"name": "kdeploy", "cluster": cluster_entry}],
            "users": [{"name": "kdeploy", "user": user}],
            "contexts": [{"name": "kdeploy", "context": {"cluster": "kdeploy", "user": "kdeploy"}}],
        });
        let kc: Kubeconfig = serde_json::from_value(kc).map_err(|e| ProviderError::other(format!("internal kubeconfig for {endpoint}: {e}")))?;
        let options = KubeConfigOptions { context: Some("kdeploy".into()), cluster: None, user: None };
        let mut config = kube::Config::from_custom_kubeconfig(kc, &options)
            .await
            .map_err(|e| ProviderError::new(ErrorKind::Invalid, format!("cannot use the endpoint {endpoint}: {e}")))?;
        config.connect_timeout = Some(Duration::from_secs(10));
        config.read_timeout = Some(Duration::from_secs(60));
        let (client, once) = clients(config).map_err(|e| ProviderError::new(ErrorKind::Invalid, format!("cannot build a client for {endpoint}: {e}")))?;
        let conn = Conn { client, once, server: endpoint.trim_end_matches('/').to_string(), context: format!("{source} endpoint"), kinds: Default::default() };
        self.direct.lock().unwrap_or_else(|e| e.into_inner()).insert(endpoint.to_string(), (conn.clone(), std::time::Instant::now()));
        Ok(conn)
    }

    pub async fn connect(&self, cluster: &BTreeMap<String, Value>) -> Result<Conn, ProviderError> {
        if let Some(endpoint) = cluster.get("endpoint").and_then(Value::as_str).filter(|e| e.starts_with("http")) {
            return self.connect_direct(cluster, endpoint).await;
        }
        let path = kubeconfig_path(cluster);
        let wanted = match cluster.get("context") {
            Some(Value::String(c)) if !c.is_empty() => Some(c.clone()),
            _ => None,
        };
        let key = (path.clone(), wanted.clone().unwrap_or_default());
        if let Some(c) = self.conns.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(c.clone());
        }
        let kc = Kubeconfig::read_from(&path).map_err(|e| {
            ProviderError::new(
                ErrorKind::Unreachable,
                format!("cannot read the kubeconfig {path}: {e}. Set `kubeconfig = \"...\"` on the cluster block or KUBECONFIG."),
            )
        })?;
        let context = match &wanted {
            Some(c) => {
                if !kc.contexts.iter().any(|n| n.name == *c) {
                    let names: Vec<&str> = kc.contexts.iter().map(|n| n.name.as_str()).collect();
                    return Err(ProviderError::new(
                        ErrorKind::Invalid,
                        format!(
                            "the kubeconfig {path} has no context {c:?}; its contexts are: {}. Fix `context` on the cluster block.",
                            if names.is_empty() { "(none)".to_string() } else { names.join(", ") }
                        ),
                    ));
                }
                c.clone()
            }
            None => kc.current_context.clone().ok_or_else(|| {
                ProviderError::new(ErrorKind::Invalid, format!("the kubeconfig {path} has no current context; set `context` on the cluster block"))
            })?,
        };
        let options = KubeConfigOptions { context: Some(context.clone()), cluster: None, user: None };
        let mut config = kube::Config::from_custom_kubeconfig(kc, &options)
            .await
            .map_err(|e| ProviderError::new(ErrorKind::Invalid, format!("cannot use context {context:?} of {path}: {e}")))?;
        config.connect_timeout = Some(Duration::from_secs(10));
        config.read_timeout = Some(Duration::from_secs(60));
        let server = config.cluster_url.to_string().trim_end_matches('/').to_string();
        let (client, once) = clients(config).map_err(|e| ProviderError::new(ErrorKind::Invalid, format!("cannot build a client for {server}: {e}")))?;
        let conn = Conn { client, once, server, context, kinds: Default::default() };
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).insert(key, conn.clone());
        Ok(conn)
    }
}

/// The API client (which retries 429/503/504, as kube does by default), and one that does not,
/// for requests to services behind the API server's proxy: a Vault that is not up answers 503,
/// which must be reported at once, not retried for minutes.
fn clients(mut config: kube::Config) -> Result<(kube::Client, kube::Client), kube::Error> {
    // A plain-HTTP API server (`kubectl proxy`, a local test server) never uses TLS; without a CA
    // in the kubeconfig kube would still load the system's root certificates, twice per cluster
    // (two clients): 38% of a no-op plan's CPU for a fleet of 100 such clusters.
    if config.cluster_url.scheme_str() == Some("http") && config.root_cert.is_none() {
        config.root_cert = Some(Vec::new());
    }
    let mut once = config.clone();
    once.default_retry = false;
    Ok((kube::Client::try_from(config)?, kube::Client::try_from(once)?))
}

/// The REST path of a resource type: (plural, namespaced).
pub fn resource(api_version: &str, kind: &str) -> Option<(&'static str, bool)> {
    Some(match (api_version, kind) {
        ("v1", "Secret") => ("secrets", true),
        ("v1", "ConfigMap") => ("configmaps", true),
        ("v1", "Service") => ("services", true),
        ("v1", "PersistentVolumeClaim") => ("persistentvolumeclaims", true),
        ("v1", "ServiceAccount") => ("serviceaccounts", true),
        ("v1", "Pod") => ("pods", true),
        ("v1", "Event") => ("events", true),
        ("v1", "Namespace") => ("namespaces", false),
        ("v1", "Node") => ("nodes", false),
        ("apps/v1", "Deployment") => ("deployments", true),
        ("apps/v1", "StatefulSet") => ("statefulsets", true),
        ("batch/v1", "Job") => ("jobs", true),
        ("batch/v1", "CronJob") => ("cronjobs", true),
        ("rbac.authorization.k8s.io/v1", "Role") => ("roles", true),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => ("rolebindings", true),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => ("clusterroles", false),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => ("clusterrolebindings", false),
        ("storage.k8s.io/v1", "StorageClass") => ("storageclasses", false),
        ("networking.k8s.io/v1", "Ingress") => ("ingresses", true),
        ("networking.k8s.io/v1", "IngressClass") => ("ingressclasses", false),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => ("customresourcedefinitions", false),
        _ => return None,
    })
}

/// The collection path (`name` None) or item path of a resource kdeploy knows (see
/// [`resource`]; [`Conn::path_of`] also knows the kinds the cluster serves).
pub fn path(api_version: &str, kind: &str, namespace: Option<&str>, name: Option<&str>) -> String {
    let (plural, namespaced) = resource(api_version, kind).unwrap_or(("unknown", true));
    rest_path(api_version, plural, namespaced, namespace, name)
}

fn rest_path(api_version: &str, plural: &str, namespaced: bool, namespace: Option<&str>, name: Option<&str>) -> String {
    let root = if api_version == "v1" { "/api/v1".to_string() } else { format!("/apis/{api_version}") };
    let mut p = root;
    if namespaced && let Some(ns) = namespace {
        p.push_str(&format!("/namespaces/{ns}"));
    }
    p.push('/');
    p.push_str(plural);
    if let Some(n) = name {
        p.push('/');
        p.push_str(n);
    }
    p
}

/// An API failure, kept structured so callers can react to codes.
#[derive(Debug, Clone)]
pub enum ApiError {
    Status { code: u16, reason: String, message: String },
    Transport(String),
}

impl ApiError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ApiError::Status { code: 404, .. })
    }

    /// The kind is not served by the cluster (its CRD is not installed), as a 404.
    fn not_served(api_version: &str, kind: &str) -> ApiError {
        ApiError::Status {
            code: 404,
            reason: "NotFound".into(),
            message: format!("the cluster does not serve {kind} ({api_version}); is the CustomResourceDefinition that defines it installed?"),
        }
    }

    /// A provider error saying what failed and what to do.
    pub fn into_provider(self, what: &str, conn: &Conn) -> ProviderError {
        match self {
            ApiError::Transport(e) => ProviderError::new(
                ErrorKind::Unreachable,
                format!(
                    "{what}: cannot reach the Kubernetes API server at {} (context {}): {e}. Check that the cluster is running and that the kubeconfig and context point at it.",
                    conn.server, conn.context
                ),
            ),
            ApiError::Status { code: 401, message, .. } => ProviderError::new(
                ErrorKind::Unauthorized,
                format!("{what}: the API server rejected the credentials of context {}: {message}. Refresh the kubeconfig credentials.", conn.context),
            ),
            ApiError::Status { code: 403, message, .. } => ProviderError::new(
                ErrorKind::Unauthorized,
                format!(
                    "{what}: forbidden: {message}. Grant the user of context {} this permission (a Role or ClusterRole binding), or use a context with more rights.",
                    conn.context
                ),
            ),
            ApiError::Status { code: 409, reason, message } if reason == "Conflict" && message.contains("conflict") => ProviderError::new(
                ErrorKind::Conflict,
                format!(
                    "{what}: {message}. Another field manager owns these fields; run with --force-conflicts to take them over (their changes will be overwritten)."
                ),
            ),
            ApiError::Status { code: 409, message, .. } => ProviderError::new(ErrorKind::Conflict, format!("{what}: {message}")),
            ApiError::Status { code: 422 | 400, message, .. } => {
                ProviderError::new(ErrorKind::Invalid, format!("{what}: the API server rejected it: {message}"))
            }
            ApiError::Status { code, message, .. } => ProviderError::other(format!("{what}: the API server answered {code}: {message}")),
        }
    }
}

fn from_kube(e: kube::Error) -> ApiError {
    match e {
        kube::Error::Api(s) => ApiError::Status { code: s.code, reason: s.reason.clone(), message: s.message.clone() },
        other => ApiError::Transport(other.to_string()),
    }
}

/// The items of a LIST and the resource version it was read at.
#[derive(serde::Deserialize)]
struct List<T> {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default = "Vec::new")]
    items: Vec<T>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ListMeta {
    #[serde(default)]
    resource_version: String,
}

impl Conn {
    /// The plural and scope of a kind: kdeploy's own table, else the API server's discovery
    /// document of its group version (cached for the connection; a kind it does not serve is
    /// asked again next time, as a CRD may have been applied meanwhile). None: not served.
    pub async fn discover(&self, api_version: &str, kind: &str) -> Result<Option<(String, bool)>, ApiError> {
        if let Some((plural, namespaced)) = resource(api_version, kind) {
            return Ok(Some((plural.to_string(), namespaced)));
        }
        let key = (api_version.to_string(), kind.to_string());
        if let Some(hit) = self.kinds.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(Some(hit.clone()));
        }
        let root = if api_version == "v1" { "/api/v1".to_string() } else { format!("/apis/{api_version}") };
        let list = match self.send("GET", &root, None, None).await {
            Ok(list) => list,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        for r in list["resources"].as_array().into_iter().flatten() {
            let (Some(plural), Some(k)) = (r["name"].as_str(), r["kind"].as_str()) else { continue };
            // Subresources (`widgets/status`) share the kind.
            if !plural.contains('/') {
                kinds.insert((api_version.to_string(), k.to_string()), (plural.to_string(), r["namespaced"].as_bool().unwrap_or(true)));
            }
        }
        Ok(kinds.get(&key).cloned())
    }

    /// [`path`] for any kind the cluster serves (see [`Conn::discover`]); a 404 when it serves
    /// no such kind.
    pub async fn path_of(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: Option<&str>) -> Result<String, ApiError> {
        let (plural, namespaced) = self.discover(api_version, kind).await?.ok_or_else(|| ApiError::not_served(api_version, kind))?;
        Ok(rest_path(api_version, &plural, namespaced, namespace, name))
    }

    /// One request; the body of a successful answer.
    async fn request_bytes(&self, method: &str, path: &str, content_type: Option<&str>, body: Option<&Json>) -> Result<bytes::Bytes, ApiError> {
        let mut b = http::Request::builder().method(method).uri(path).header("Accept", "application/json");
        if let Some(ct) = content_type {
            b = b.header("Content-Type", ct);
        }
        let bytes = body.map(|v| serde_json::to_vec(v).unwrap_or_default()).unwrap_or_default();
        let req = b.body(kube::client::Body::from(bytes)).map_err(|e| ApiError::Transport(e.to_string()))?;
        let resp = self.client.send(req).await.map_err(from_kube)?;
        let status = resp.status();
        let bytes = resp.into_body().collect_bytes().await.map_err(from_kube)?;
        if !status.is_success() {
            // The API server's Status object, as kube reports it.
            let s: kube::core::Status = serde_json::from_slice(&bytes).unwrap_or_default();
            let message = if s.message.is_empty() { String::from_utf8_lossy(&bytes).trim().to_string() } else { s.message };
            return Err(ApiError::Status { code: status.as_u16(), reason: s.reason, message });
        }
        Ok(bytes)
    }

    /// One request; its answer decoded straight from the response bytes into `T` (no copy of
    /// the body into a string first, and only what `T` keeps of it).
    async fn request_as<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&Json>,
    ) -> Result<T, ApiError> {
        let bytes = self.request_bytes(method, path, content_type, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| undecodable(method, path, e))
    }

    pub async fn send(&self, method: &str, path: &str, content_type: Option<&str>, body: Option<&Json>) -> Result<Json, ApiError> {
        self.request_as(method, path, content_type, body).await
    }

    /// A request whose answer is not a Kubernetes object (a service behind the API server's
    /// proxy): the HTTP status and body, whatever the status.
    pub async fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Result<(u16, String), ApiError> {
        let mut b = http::Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(kube::client::Body::from(body)).map_err(|e| ApiError::Transport(e.to_string()))?;
        let resp = self.once.send(req).await.map_err(from_kube)?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect_bytes().await.map_err(from_kube)?;
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }

    pub async fn get(&self, path: &str) -> Result<Option<Json>, ApiError> {
        match self.send("GET", path, None, None).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Server-side apply of one object as field manager `kdeploy`.
    pub async fn apply(&self, obj: &Json, dry_run: bool, force: bool) -> Result<Json, ApiError> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let ns = obj["metadata"]["namespace"].as_str();
        let name = obj["metadata"]["name"].as_str();
        let mut p = format!("{}?fieldManager=kdeploy", self.path_of(api_version, kind, ns, name).await?);
        if force {
            p.push_str("&force=true");
        }
        if dry_run {
            p.push_str("&dryRun=All");
        }
        self.send("PATCH", &p, Some("application/apply-patch+yaml"), Some(obj)).await
    }

    pub async fn list(&self, api_version: &str, kind: &str, namespace: Option<&str>, selector: &str) -> Result<Vec<Json>, ApiError> {
        Ok(self.list_as(api_version, kind, namespace, selector).await?.0)
    }

    /// The undecoded answer to a LIST: several can be in flight, each decoded when it arrives.
    pub async fn list_raw(&self, api_version: &str, kind: &str, namespace: Option<&str>, selector: &str) -> Result<Listed, ApiError> {
        let path = format!("{}?labelSelector={}", self.path_of(api_version, kind, namespace, None).await?, encode(selector));
        let bytes = self.request_bytes("GET", &path, None, None).await?;
        Ok(Listed { path, bytes })
    }

    /// A LIST decoded into `T` per item (only the fields `T` keeps), with the resource version
    /// it was read at (to WATCH from).
    pub async fn list_as<T: serde::de::DeserializeOwned>(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        selector: &str,
    ) -> Result<(Vec<T>, String), ApiError> {
        let p = format!("{}?labelSelector={}", self.path_of(api_version, kind, namespace, None).await?, encode(selector));
        let list: List<T> = self.request_as("GET", &p, None, None).await?;
        Ok((list.items, list.metadata.resource_version))
    }

    /// A WATCH from `resource_version`, ended by the server after `timeout_secs`: the events
    /// decoded into `T`.
    pub async fn watch<T: Clone + serde::de::DeserializeOwned>(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        selector: &str,
        resource_version: &str,
        timeout_secs: u32,
    ) -> Result<impl futures_util::Stream<Item = Result<kube::core::WatchEvent<T>, ApiError>> + use<T>, ApiError> {
        use futures_util::StreamExt;
        let p = format!(
            "{}?watch=1&labelSelector={}&resourceVersion={}&timeoutSeconds={timeout_secs}&allowWatchBookmarks=true",
            path(api_version, kind, namespace, None),
            encode(selector),
            encode(resource_version)
        );
        let req = http::Request::builder()
            .method("GET")
            .uri(p)
            .header("Accept", "application/json")
            .body(Vec::new())
            .map_err(|e| ApiError::Transport(e.to_string()))?;
        let events = self.client.request_events::<T>(req).await.map_err(from_kube)?;
        Ok(events.map(|e| e.map_err(from_kube)))
    }

    pub async fn delete(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Result<(), ApiError> {
        let body = serde_json::json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"});
        let p = match self.path_of(api_version, kind, namespace, Some(name)).await {
            Ok(p) => p,
            // A kind no longer served (its CRD was deleted) took its objects with it.
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        match self.send("DELETE", &p, Some("application/json"), Some(&body)).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn undecodable(method: &str, path: &str, e: serde_json::Error) -> ApiError {
    ApiError::Transport(format!("cannot decode the answer to {method} {path}: {e}"))
}

/// Percent-encoding for query values.
/// See [`Conn::list_raw`].
pub struct Listed {
    path: String,
    bytes: bytes::Bytes,
}

impl Listed {
    /// Decodes the items one at a time, borrowed from the answer (see [`Node`]), each dropped
    /// after `each` saw it.
    pub fn each(&self, mut each: impl FnMut(Node<'_>)) -> Result<(), ApiError> {
        let list: List<&serde_json::value::RawValue> = serde_json::from_slice(&self.bytes).map_err(|e| undecodable("GET", &self.path, e))?;
        for item in list.items {
            each(Node::parse(item.get()).map_err(|e| undecodable("GET", &self.path, e))?);
        }
        Ok(())
    }
}

pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

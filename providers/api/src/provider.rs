//! The provider contract: batched reads, planning, apply and delete of one component.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::addr::Address;
use crate::schema::{ComponentSchema, Kind};
use crate::value::{AttrPath, Value};

/// Which component a request is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentRef {
    /// The component's address, e.g. `agent.cam["front"]` (a string in JSON).
    pub address: Address,
    pub kind: Kind,
    #[serde(rename = "type")]
    pub type_name: String,
}

/// A component that another one references (`storage = object_storage.rec`): what it is and its
/// attributes (inputs and computed values; unknown where only apply can tell).
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub component: ComponentRef,
    /// Shared, not copied per request: a central Vault is referenced by every agent of a
    /// fleet, and its value holds every site's account.
    pub attributes: Arc<Value>,
}

/// Read the live object behind one recorded component.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    pub component: ComponentRef,
    /// The attributes recorded in state (known values only).
    pub recorded: Value,
    /// The cluster's recorded attributes for in-cluster components.
    pub cluster: Option<Value>,
}

/// Take over an object that already runs (an `import` block, `kdeploy import`): find it by
/// `id` and describe it as a [`ReadResult`] of the component, so that the plan compares it with
/// the stack like any live object. The id's format is the provider's (Kubernetes:
/// `NAMESPACE/NAME` of the component's workload; Docker: the container's name).
#[derive(Debug, Clone)]
pub struct ImportRequest<'a> {
    pub component: ComponentRef,
    pub id: &'a str,
    /// Desired attributes from the stack (inputs; may contain unknowns).
    pub desired: &'a Value,
    pub cluster: Option<&'a Value>,
    pub refs: &'a BTreeMap<String, Reference>,
    /// `--force-conflicts`: fields other managers own will be taken, no need to warn.
    pub force_conflicts: bool,
}

/// Read a data source (`data "kubernetes_secret" "x" { ... }`): a value held by an object
/// kdeploy does not manage. `source.address` is `data.TYPE.NAME`, `source.type_name` the TYPE.
#[derive(Debug, Clone)]
pub struct DataRequest<'a> {
    pub source: ComponentRef,
    /// The block's arguments (known).
    pub args: &'a Value,
    /// The cluster's planned (or applied) attributes.
    pub cluster: Option<&'a Value>,
}

/// What a data source read found: the arguments and the computed attributes (`data`, `env`),
/// or `Missing` when the object it names does not exist.
#[derive(Debug, Clone, PartialEq)]
pub enum DataResult {
    Found(Value),
    /// The object is not there; the text names it (`Secret mongodb/mongodb`), without values.
    Missing(String),
}

/// A workload found running on a cluster (`kdeploy adopt`): what kdeploy needs to recognise a
/// Kerberos component and write it into a stack. Providers list; kdeploy decides what it is.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Running {
    /// Its import id (Kubernetes: `NAMESPACE/NAME` of the workload; Docker: the container's name).
    pub id: String,
    pub name: String,
    /// Its Kubernetes namespace.
    pub namespace: Option<String>,
    /// `Deployment`, `StatefulSet`, `container`.
    pub kind: String,
    /// The images of its containers.
    pub images: Vec<String>,
    /// The environment of its containers: each value inline, or the Secret key it is read from.
    pub env: BTreeMap<String, EnvSource>,
    /// What manages it when something does (`Helm`, an operator's owner kind such as `Tenant`,
    /// `kdeploy`): kdeploy does not take over what another controller manages.
    pub managed_by: Option<String>,
    /// The Services in front of it (name, first port), by name.
    pub services: Vec<(String, u16)>,
}

/// Where a variable's value is.
#[derive(Debug, Clone, PartialEq)]
pub enum EnvSource {
    Value(String),
    /// `valueFrom.secretKeyRef`: the Secret's namespace and name, and the key.
    Secret {
        namespace: String,
        name: String,
        key: String,
    },
}

/// What an import found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Imported {
    /// The live object as the component's attributes (with [`ADOPTED`]); None when nothing has
    /// that id.
    pub attributes: Option<Value>,
    /// What the user should know before taking it over (fields other managers own), one line
    /// each, starting with the address.
    pub warnings: Vec<String>,
}

/// The attribute an import records: which existing objects the component took over (their
/// names, and what of them cannot change, such as a Deployment's selector). Its content is the
/// provider's; plans carry it over from the live attributes like a computed value.
pub const ADOPTED: &str = "adopted";

/// The result of one health check of a component.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub address: Address,
    pub ok: bool,
    /// One line for the user, starting with the address; for a failure, what to do.
    pub message: String,
}

/// What a read found.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadResult {
    /// The object exists; `attributes` use the same shape as the recorded attributes.
    Found { attributes: Value, fingerprint: Option<String> },
    /// The object is gone (deleted out of band).
    Missing,
}

/// Plan one create or update: the provider may fill computed attributes and say which changed
/// attributes force a replacement. [`default_plan`] does this from the schema.
#[derive(Debug, Clone)]
pub struct PlanRequest<'a> {
    pub component: ComponentRef,
    pub schema: &'a ComponentSchema,
    /// Live attributes after refresh, None for a create.
    pub prior: Option<&'a Value>,
    /// The attributes recorded by the previous apply (before refresh), None when never applied.
    /// Comparing them with `prior` tells a provider whether the live object drifted.
    pub recorded: Option<&'a Value>,
    /// Desired attributes from the stack (inputs only; may contain unknowns).
    pub desired: &'a Value,
    pub cluster: Option<&'a Value>,
    /// The components this one references, by the attribute that names them (`storage`, or
    /// `providers.archive.storage` inside a block).
    pub refs: &'a BTreeMap<String, Reference>,
    /// Take ownership of fields another manager owns (`--force-conflicts`).
    pub force_conflicts: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlanResponse {
    /// Inputs plus computed attributes; unknown where only apply can tell.
    pub planned: Value,
    /// Changed attributes that cannot be updated in place.
    pub requires_replace: Vec<AttrPath>,
    /// What the user should know before applying (a LoadBalancer Service that would stay
    /// pending), one sentence each: the plan shows them, as Terraform shows a provider's
    /// warning diagnostics; they do not stop it.
    pub warnings: Vec<String>,
}

/// Create (prior None) or update a component to `planned` (inputs are known at this point).
#[derive(Debug, Clone)]
pub struct ApplyRequest {
    pub component: ComponentRef,
    pub prior: Option<Value>,
    pub planned: Value,
    pub cluster: Option<Value>,
    /// The components this one references, by the attribute that names them.
    pub refs: BTreeMap<String, Reference>,
    /// Take ownership of fields another manager owns (`--force-conflicts`).
    pub force_conflicts: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApplyResponse {
    /// The new attributes, fully known.
    pub attributes: Value,
    pub fingerprint: Option<String>,
    /// What the component still has to wait for once written (workloads becoming ready), when
    /// the provider waits apart from writing; None when it is ready once `apply` returns. The
    /// engine passes it back to [`Provider::wait`] after giving back the parallelism slot the
    /// writes held, and records the component, and starts what depends on it, only after that.
    pub wait: Option<Wait>,
}

impl ApplyResponse {
    /// A component that is ready once written.
    pub fn ready(attributes: Value, fingerprint: Option<String>) -> ApplyResponse {
        ApplyResponse { attributes, fingerprint, wait: None }
    }
}

/// What a written component waits for: the provider's own description (which objects, until
/// when), opaque to the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Wait(pub serde_json::Value);

/// Wait until what [`ApplyResponse::wait`] names is ready.
#[derive(Debug, Clone)]
pub struct WaitRequest {
    pub component: ComponentRef,
    pub cluster: Option<Value>,
    pub wait: Wait,
}

#[derive(Debug, Clone)]
pub struct DeleteRequest {
    pub component: ComponentRef,
    pub prior: Value,
    pub cluster: Option<Value>,
    /// Also delete volumes/PVCs/buckets with data (`destroy --delete-data`).
    pub delete_data: bool,
}

/// What a provider reports about the target before anything is planned (missing add-ons,
/// unreachable engine, wrong context): errors stop the plan with the provider's message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Preflight {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// Issues short-lived bearer tokens for a managed cluster's API server (EKS, AKS, GKE): the
/// cloud provider implements it, the Kubernetes provider calls it with the cluster component's
/// attributes whenever it needs a fresh token.
#[async_trait]
pub trait TokenSource: Send + Sync {
    async fn token(&self, cluster: &Value) -> Result<String, ProviderError>;
}

/// Categories of provider failure, so that callers can react (retry, explain, skip).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The target cannot be reached (network, daemon down).
    Unreachable,
    /// Credentials missing, expired or insufficient.
    Unauthorized,
    /// The request conflicts with the live object (another owner, already exists).
    Conflict,
    /// The target rejected the request as invalid.
    Invalid,
    /// Waiting for readiness timed out.
    Timeout,
    /// Anything else.
    Other,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    pub kind: ErrorKind,
    /// What went wrong and what to do; must never contain sensitive values.
    pub message: String,
}

impl ProviderError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ProviderError {
        ProviderError { kind, message: message.into() }
    }
    pub fn other(message: impl Into<String>) -> ProviderError {
        ProviderError::new(ErrorKind::Other, message)
    }
}

/// An error and its sources, each once, joined with ": " (no Debug dumps): for messages built
/// from client-library errors (SDK, HTTP) whose top level alone says too little.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !t.is_empty() && !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// One provider: a platform (docker, kubernetes, aws, ...) serving several kinds and types.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The provider's name, as recorded in state.
    fn name(&self) -> &str;

    /// Checks the target before planning. `clusters` are the desired cluster attributes served
    /// by this provider.
    async fn preflight(&self, _clusters: &[(ComponentRef, Value)]) -> Preflight {
        Preflight::default()
    }

    /// Reads many components in one call, so that a provider can batch (one LIST per kind).
    /// Returns one result per request, in the same order.
    async fn read(&self, requests: Vec<ReadRequest>) -> Result<Vec<ReadResult>, ProviderError>;

    /// Whether recorded components do their job (Vault answers `/api/health`, each of its
    /// accounts answers `/api/ping`): shown with the plan, reported by `drift`, and checked
    /// after apply (a failed check fails the apply). Checks nothing by default.
    async fn health(&self, _requests: &[ReadRequest]) -> Vec<Check> {
        Vec::new()
    }

    /// Plans a create or update. The default derives it from the schema.
    async fn plan(&self, request: PlanRequest<'_>) -> Result<PlanResponse, ProviderError> {
        Ok(default_plan(&request))
    }

    /// Writes a component. A provider whose components take time to become ready after the
    /// write returns what to wait for in [`ApplyResponse::wait`] instead of waiting here, so
    /// that waiting does not hold one of the `--parallelism` slots, which bound writes.
    async fn apply(&self, request: ApplyRequest) -> Result<ApplyResponse, ProviderError>;

    /// Waits for what an apply returned in [`ApplyResponse::wait`] (its timeout included; a
    /// timeout is an [`ErrorKind::Timeout`] error that says why it is not ready). Providers
    /// that never return a wait keep the default.
    async fn wait(&self, _request: WaitRequest) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn delete(&self, request: DeleteRequest) -> Result<(), ProviderError>;

    /// Finds an existing object to take over ([`ImportRequest`]). Providers that cannot import
    /// keep the default, which says so.
    async fn import(&self, request: ImportRequest<'_>) -> Result<Imported, ProviderError> {
        Err(ProviderError::new(ErrorKind::Invalid, format!("{}: the {} provider cannot import existing objects", request.component.address, self.name())))
    }

    /// Lists what runs on a cluster (`kdeploy adopt`), given the cluster's attributes. Providers
    /// that cannot keep the default, which says so.
    async fn discover(&self, _cluster: &Value) -> Result<Vec<Running>, ProviderError> {
        Err(ProviderError::new(ErrorKind::Invalid, format!("the {} provider cannot list what runs on a cluster", self.name())))
    }

    /// Reads a data source ([`DataRequest`]). Providers without data sources keep the default,
    /// which says so.
    async fn read_data(&self, request: DataRequest<'_>) -> Result<DataResult, ProviderError> {
        Err(ProviderError::new(ErrorKind::Invalid, format!("{}: the {} provider has no data sources", request.source.address, self.name())))
    }
}

/// The schema-driven plan: computed attributes keep their prior value (or become unknown on
/// create), and every changed `force_new` input requires replacement.
pub fn default_plan(request: &PlanRequest<'_>) -> PlanResponse {
    let mut planned = match request.desired {
        Value::Map(m) => m.clone(),
        _ => BTreeMap::new(),
    };
    let prior = request.prior.and_then(Value::as_map);
    // What an import took over stays taken over.
    if let Some(adopted) = prior.and_then(|p| p.get(ADOPTED)).filter(|v| !v.is_null()) {
        planned.insert(ADOPTED.to_string(), adopted.clone());
    }
    for attr in request.schema.computed() {
        let prior_value = prior.and_then(|p| p.get(attr.name)).filter(|v| !v.is_null());
        let value = match prior_value {
            Some(v) => v.clone(),
            None => Value::Unknown(format!("{}.{}", request.component.address, attr.name)),
        };
        planned.insert(attr.name.to_string(), value);
    }
    let mut requires_replace = Vec::new();
    if let Some(prior) = prior {
        for attr in request.schema.inputs().filter(|a| a.force_new) {
            let before = prior.get(attr.name).unwrap_or(&Value::Null);
            let after = planned.get(attr.name).unwrap_or(&Value::Null);
            if before != after {
                requires_replace.push(AttrPath::attr(attr.name));
            }
        }
    }
    PlanResponse { planned: Value::Map(planned), requires_replace, warnings: Vec::new() }
}

/// The provider for `external` components: data only, nothing to create. Reads return what was
/// recorded; apply records the inputs (plus derived attributes).
pub struct ExternalProvider;

#[async_trait]
impl Provider for ExternalProvider {
    fn name(&self) -> &str {
        "external"
    }

    async fn read(&self, requests: Vec<ReadRequest>) -> Result<Vec<ReadResult>, ProviderError> {
        Ok(requests.into_iter().map(|r| ReadResult::Found { attributes: r.recorded, fingerprint: None }).collect())
    }

    async fn plan(&self, request: PlanRequest<'_>) -> Result<PlanResponse, ProviderError> {
        let mut planned = request.desired.clone();
        if let Value::Map(m) = &mut planned {
            for attr in request.schema.computed() {
                m.insert(attr.name.to_string(), external_computed(attr.name, request.desired));
            }
        }
        Ok(PlanResponse { planned, requires_replace: Vec::new(), warnings: Vec::new() })
    }

    async fn apply(&self, request: ApplyRequest) -> Result<ApplyResponse, ProviderError> {
        Ok(ApplyResponse::ready(request.planned, None))
    }

    async fn delete(&self, _request: DeleteRequest) -> Result<(), ProviderError> {
        Ok(())
    }
}

/// A provider compiled into this build that could not be set up (bad configuration in the
/// environment): every call answers with the set-up error, so that stacks that never use it run,
/// and stacks that do fail with the reason instead of "unknown provider".
pub struct UnavailableProvider {
    pub name: String,
    pub error: ProviderError,
}

#[async_trait]
impl Provider for UnavailableProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn preflight(&self, _clusters: &[(ComponentRef, Value)]) -> Preflight {
        Preflight { errors: vec![self.error.message.clone()], warnings: vec![] }
    }

    async fn read(&self, _requests: Vec<ReadRequest>) -> Result<Vec<ReadResult>, ProviderError> {
        Err(self.error.clone())
    }

    async fn plan(&self, _request: PlanRequest<'_>) -> Result<PlanResponse, ProviderError> {
        Err(self.error.clone())
    }

    async fn apply(&self, _request: ApplyRequest) -> Result<ApplyResponse, ProviderError> {
        Err(self.error.clone())
    }

    async fn delete(&self, _request: DeleteRequest) -> Result<(), ProviderError> {
        Err(self.error.clone())
    }
}

/// Computed attributes of external components derive from their inputs.
fn external_computed(name: &str, desired: &Value) -> Value {
    let get = |k: &str| desired.as_map().and_then(|m| m.get(k)).cloned().unwrap_or(Value::Null);
    match name {
        "host" => match get("uri") {
            Value::String(uri) => Value::String(host_of_uri(&uri)),
            other => other,
        },
        "uri" => match get("host") {
            Value::String(h) => Value::String(format!("amqp://{h}")),
            other => other,
        },
        _ => Value::Null,
    }
}

fn host_of_uri(uri: &str) -> String {
    let rest = uri.split_once("://").map(|(_, r)| r).unwrap_or(uri);
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    rest.split(['/', '?']).next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::schema;

    fn cref() -> ComponentRef {
        ComponentRef { address: "database.main".parse().unwrap(), kind: Kind::Database, type_name: "mongodb".into() }
    }

    #[test]
    fn default_plan_marks_computed_unknown_on_create_and_keeps_them_on_update() {
        let s = schema(Kind::Database, "mongodb").unwrap();
        let desired = Value::Map([("version".to_string(), Value::string("8.0.13"))].into());
        let create = default_plan(&PlanRequest {
            component: cref(),
            schema: &s,
            prior: None,
            recorded: None,
            desired: &desired,
            cluster: None,
            refs: &BTreeMap::new(),
            force_conflicts: false,
        });
        let host = create.planned.as_map().unwrap().get("host").unwrap();
        assert_eq!(host, &Value::Unknown("database.main.host".into()));
        assert!(create.requires_replace.is_empty());

        let mut prior = desired.as_map().unwrap().clone();
        prior.insert("host".into(), Value::string("mongo"));
        prior.insert("namespace".into(), Value::string("old"));
        let prior = Value::Map(prior);
        let update = default_plan(&PlanRequest {
            component: cref(),
            schema: &s,
            prior: Some(&prior),
            recorded: Some(&prior),
            desired: &desired,
            cluster: None,
            refs: &BTreeMap::new(),
            force_conflicts: false,
        });
        assert_eq!(update.planned.as_map().unwrap().get("host"), Some(&Value::string("mongo")));
        // namespace is force_new and changed from "old" to null.
        assert_eq!(update.requires_replace, vec![AttrPath::attr("namespace")]);
    }

    #[test]
    fn external_hosts_come_from_the_uri() {
        assert_eq!(host_of_uri("mongodb://u:p@db.example.com:27017/admin?tls=true"), "db.example.com:27017");
    }
}

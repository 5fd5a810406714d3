//! kdeploy's Docker provider: the Kerberos stack (MongoDB, MinIO, RabbitMQ, Vault, one agent per
//! camera) as containers on one Docker engine, through bollard.
//!
//! Objects: one user-defined bridge network per cluster (created by the `cluster` component),
//! named volumes for data, and one container per component. Every object carries the labels
//! `managed-by=kdeploy`, `kdeploy.cluster` and `kdeploy.address`; containers also carry
//! `kdeploy.config-hash`, the hash of their rendered configuration. Containers are immutable: a
//! changed hash plans a replacement.
//!
//! Provider-specific computed attributes of container components: `config_hash`, `running` and
//! `container_id`.

pub mod engine;
pub mod spec;
pub mod tar;
/// Test helpers (images, inspection); only the workspace's dev-dependencies enable them.
#[cfg(feature = "test-hooks")]
pub mod testing;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use bollard::Docker;
use kdeploy_provider::{
    ADOPTED, ApplyRequest, ApplyResponse, AttrPath, Check, ComponentRef, DataRequest, DataResult, DeleteRequest, ErrorKind, ImportRequest, Imported, Kind,
    PlanRequest, PlanResponse, Preflight, Provider, ProviderError, ReadRequest, ReadResult, Reference, Value, components, default_plan,
};

use engine::Endpoint;
use kdeploy_provider::components::vault;
use spec::{ATTR_HASH, ATTR_ID, ATTR_RUNNING};

/// The Docker provider. Engine clients are cached per endpoint for the life of the provider.
#[derive(Default)]
pub struct DockerProvider {
    clients: tokio::sync::Mutex<BTreeMap<Endpoint, Docker>>,
    /// Generated secrets last seen per address (from state or a prior plan), so that a
    /// replacement or a recreation after an out-of-band delete keeps them: the data volumes
    /// were initialised with them.
    secrets: Mutex<HashMap<String, BTreeMap<String, Value>>>,
}

impl DockerProvider {
    pub fn new() -> DockerProvider {
        DockerProvider::default()
    }

    async fn client(&self, ep: &Endpoint) -> Result<Docker, ProviderError> {
        let mut clients = self.clients.lock().await;
        if let Some(d) = clients.get(ep) {
            return Ok(d.clone());
        }
        let d = engine::connect(ep).await?;
        clients.insert(ep.clone(), d.clone());
        Ok(d)
    }

    fn remember(&self, component: &ComponentRef, attrs: &Value) {
        let Some(m) = attrs.as_map() else { return };
        let known: BTreeMap<String, Value> = spec::generated_attrs(component)
            .iter()
            .filter_map(|a| m.get(*a).filter(|v| !v.is_null() && !v.contains_unknown()).map(|v| (a.to_string(), v.clone())))
            .collect();
        if !known.is_empty() {
            self.secrets.lock().unwrap_or_else(|e| e.into_inner()).insert(component.address.to_string(), known);
        }
    }

    fn remembered(&self, address: &str) -> BTreeMap<String, Value> {
        self.secrets.lock().unwrap_or_else(|e| e.into_inner()).get(address).cloned().unwrap_or_default()
    }

    /// Generated secrets (explicit input, prior, remembered, else new when `generate`), the
    /// names and endpoints of the Docker network, then what every runtime derives alike.
    fn fill_computed(
        &self,
        component: &ComponentRef,
        attrs: &mut BTreeMap<String, Value>,
        refs: &BTreeMap<String, Reference>,
        ep: &Endpoint,
        generate: bool,
    ) -> Result<(), ProviderError> {
        let remembered = self.remembered(&component.address.to_string());
        components::secrets::fill(component.kind, &component.type_name, &component.address.to_string(), attrs, &remembered, generate);
        let cname = cluster_of(attrs);
        let derived = spec::derived_attrs(component, &cname, &spec::engine_hostname(&ep.host), attrs);
        attrs.extend(derived);
        components::fill_derived(component, attrs, refs).map_err(|m| ProviderError::new(ErrorKind::Invalid, m))
    }
}

impl DockerProvider {
    /// The generated secrets (passwords, keys) the adopted container was started with, instead
    /// of new ones: its data was set up with them (a MongoDB volume keeps its root password).
    fn keep_live_secrets(
        &self,
        c: &ComponentRef,
        attrs: &mut BTreeMap<String, Value>,
        refs: &BTreeMap<String, Reference>,
        ep: &Endpoint,
        live: &BTreeMap<String, String>,
    ) -> Result<(), ProviderError> {
        let mut filled = attrs.clone();
        self.fill_computed(c, &mut filled, refs, ep, false)?;
        let (_, vars) = components::secret_variables(&components::Spec { component: c, attrs: &filled, refs, namespace: None }, attrs);
        for (attr, var) in vars {
            if let Some(v) = live.get(&var).filter(|v| !v.is_empty()) {
                attrs.insert(attr.to_string(), Value::String(v.clone()));
            }
        }
        Ok(())
    }
}

fn str_attr<'a>(m: &'a BTreeMap<String, Value>, k: &str) -> Option<&'a str> {
    m.get(k).and_then(Value::as_str)
}

/// The cluster name of a container component, from its `cluster` attribute (an address).
fn cluster_of(attrs: &BTreeMap<String, Value>) -> String {
    spec::cluster_name(str_attr(attrs, "cluster").unwrap_or("cluster.default"))
}

#[async_trait]
impl Provider for DockerProvider {
    fn name(&self) -> &str {
        "docker"
    }

    async fn preflight(&self, clusters: &[(ComponentRef, Value)]) -> Preflight {
        let mut p = Preflight::default();
        for (c, attrs) in clusters {
            let ep = Endpoint::from_cluster(Some(attrs));
            if let Err(e) = self.client(&ep).await {
                let _ = c;
                p.errors.push(e.message);
            }
        }
        p
    }

    /// Each account of a vault answers `POST /api/ping` with its keys, on the published port.
    async fn health(&self, requests: &[ReadRequest]) -> Vec<Check> {
        let mut out = Vec::new();
        let client = match reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build() {
            Ok(c) => c,
            Err(_) => return out,
        };
        for r in requests.iter().filter(|r| r.component.kind == Kind::Vault) {
            let address = &r.component.address;
            let Some(attrs) = r.recorded.as_map() else { continue };
            let url = str_attr(attrs, "url").unwrap_or_default().trim_end_matches('/').to_string();
            let image = str_attr(attrs, "image").filter(|s| !s.is_empty()).unwrap_or(kdeploy_provider::images::VAULT).to_string();
            for check in vault::account_checks(attrs) {
                let answer = client
                    .post(format!("{url}{}", vault::PING_PATH))
                    .header(vault::ACCESS_KEY_HEADER, &check.access_key)
                    .header(vault::SECRET_KEY_HEADER, &check.secret_key)
                    .send()
                    .await
                    .map(|resp| resp.status().as_u16())
                    .map_err(|e| kdeploy_provider::error_chain(&e));
                out.push(vault::ping_check(address, &check.account, &image, &url, answer));
            }
        }
        out
    }

    async fn read(&self, requests: Vec<ReadRequest>) -> Result<Vec<ReadResult>, ProviderError> {
        // Group by engine: one list call per kind per engine.
        let mut by_ep: BTreeMap<Endpoint, Vec<usize>> = BTreeMap::new();
        for (i, r) in requests.iter().enumerate() {
            let cluster = if r.component.kind == Kind::Cluster { Some(&r.recorded) } else { r.cluster.as_ref() };
            by_ep.entry(Endpoint::from_cluster(cluster)).or_default().push(i);
            self.remember(&r.component, &r.recorded);
        }
        let mut results: Vec<ReadResult> = vec![ReadResult::Missing; requests.len()];
        for (ep, idx) in by_ep {
            let docker = self.client(&ep).await?;
            let containers = engine::list_containers(&docker, &ep, None).await?;
            let networks =
                if idx.iter().any(|&i| requests[i].component.kind == Kind::Cluster) { engine::list_networks(&docker, &ep, None).await? } else { Vec::new() };
            let by_name: HashMap<&str, &engine::LiveContainer> = containers.iter().map(|c| (c.name.as_str(), c)).collect();
            for i in idx {
                let r = &requests[i];
                let Some(recorded) = r.recorded.as_map() else { continue };
                if r.component.kind == Kind::Cluster {
                    let net = spec::network_name(&spec::cluster_name(&r.component.address.to_string()), Some(&r.recorded));
                    if networks.contains(&net) {
                        let mut attrs = recorded.clone();
                        attrs.insert("api_version".into(), Value::string(engine::api_version(&docker)));
                        results[i] = ReadResult::Found { attributes: Value::Map(attrs), fingerprint: None };
                    }
                    continue;
                }
                let name = spec::container_name(&cluster_of(recorded), &r.component.address);
                if let Some(c) = by_name.get(name.as_str()) {
                    let mut attrs = recorded.clone();
                    attrs.insert(ATTR_RUNNING.into(), Value::Bool(c.running));
                    attrs.insert(ATTR_HASH.into(), c.labels.get(spec::LABEL_HASH).map(Value::string).unwrap_or(Value::Null));
                    attrs.insert(ATTR_ID.into(), Value::string(&c.id));
                    results[i] = ReadResult::Found { attributes: Value::Map(attrs), fingerprint: None };
                }
            }
        }
        Ok(results)
    }

    async fn plan(&self, request: PlanRequest<'_>) -> Result<PlanResponse, ProviderError> {
        let kind = request.component.kind;
        let address = request.component.address.to_string();
        spec::check_supported(kind, &request.component.type_name, &address)?;
        let mut resp = default_plan(&request);
        if kind == Kind::Cluster {
            return Ok(resp);
        }
        let Value::Map(planned) = &mut resp.planned else { return Ok(resp) };
        let prior = request.prior.and_then(Value::as_map);
        if let Some(p) = request.prior {
            self.remember(&request.component, p);
        }
        let cluster = request.cluster.cloned();
        let ep = Endpoint::from_cluster(cluster.as_ref());
        self.fill_computed(&request.component, planned, request.refs, &ep, false)?;
        let cname = cluster_of(planned);
        let network = spec::network_name(&cname, cluster.as_ref());
        let ctx = spec::RenderCtx { component: &request.component, cluster_name: &cname, network: &network, attrs: planned, refs: request.refs };
        let hash = spec::render(&ctx)?.map(|s| s.hash());
        planned.insert(ATTR_RUNNING.into(), Value::Bool(true));
        let prior_hash = prior.and_then(|p| str_attr(p, ATTR_HASH)).map(str::to_string);
        let mut requires_replace = resp.requires_replace.clone();
        let same = matches!((&hash, &prior_hash), (Some(a), Some(b)) if a == b);
        match &hash {
            Some(h) => planned.insert(ATTR_HASH.into(), Value::string(h)),
            None => planned.insert(ATTR_HASH.into(), Value::Unknown(format!("{address}.{ATTR_HASH}"))),
        };
        let prior_id = prior.and_then(|p| p.get(ATTR_ID)).filter(|v| matches!(v, Value::String(_))).cloned();
        match prior_id {
            Some(id) if same || hash.is_none() => planned.insert(ATTR_ID.into(), id),
            _ => planned.insert(ATTR_ID.into(), Value::Unknown(format!("{address}.{ATTR_ID}"))),
        };
        if let (Some(p), Some(h), Some(ph)) = (prior, &hash, &prior_hash)
            && h != ph
            && requires_replace.is_empty()
        {
            let mut paths: Vec<AttrPath> = request
                .schema
                .inputs()
                .filter(|a| !matches!(a.name, "readiness_timeout"))
                .filter(|a| p.get(a.name).unwrap_or(&Value::Null) != planned.get(a.name).unwrap_or(&Value::Null))
                .map(|a| AttrPath::attr(a.name))
                .collect();
            if paths.is_empty() {
                paths.push(AttrPath::attr(ATTR_HASH));
            }
            requires_replace = paths;
        }
        // A container started by someone else has no config hash label, and labels cannot
        // change on a container: adopting it is a replacement that keeps its data.
        if prior.is_some_and(|p| spec::adopted_name(p).is_some()) && prior_hash.is_none() && requires_replace.is_empty() {
            requires_replace = vec![AttrPath::attr("labels")];
        }
        resp.requires_replace = requires_replace;
        Ok(resp)
    }

    async fn apply(&self, request: ApplyRequest) -> Result<ApplyResponse, ProviderError> {
        let kind = request.component.kind;
        let address = request.component.address.to_string();
        spec::check_supported(kind, &request.component.type_name, &address)?;
        let Value::Map(mut attrs) = request.planned.clone() else {
            return Err(ProviderError::new(ErrorKind::Invalid, format!("{address}: planned attributes are not a map")));
        };
        if kind == Kind::Cluster {
            let ep = Endpoint::from_cluster(Some(&request.planned));
            let docker = self.client(&ep).await?;
            let cname = spec::cluster_name(&address);
            let network = spec::network_name(&cname, Some(&request.planned));
            engine::ensure_network(&docker, &ep, &network, &cname, &address).await?;
            attrs.insert("api_version".into(), Value::string(engine::api_version(&docker)));
            return Ok(ApplyResponse::ready(Value::Map(attrs), None));
        }
        let cluster = request.cluster.clone();
        let ep = Endpoint::from_cluster(cluster.as_ref());
        let docker = self.client(&ep).await?;
        self.fill_computed(&request.component, &mut attrs, &request.refs, &ep, true)?;
        let cname = cluster_of(&attrs);
        let network = spec::network_name(&cname, cluster.as_ref());
        let ctx = spec::RenderCtx { component: &request.component, cluster_name: &cname, network: &network, attrs: &attrs, refs: &request.refs };
        let Some(spec) = spec::render(&ctx)? else {
            return Err(ProviderError::new(
                ErrorKind::Invalid,
                format!("{address}: a value its container needs is still unknown at apply (a referenced component was not applied)"),
            ));
        };
        let hash = spec.hash();
        let secrets = spec.secret_values();
        engine::ensure_image(&docker, &ep, &spec.image).await.map_err(|mut e| {
            e.message = format!("{address}: {}", engine::redact(&e.message, &secrets));
            e
        })?;
        engine::ensure_network(&docker, &ep, &network, &cname, &format!("cluster.{cname}")).await?;
        for (v, _) in spec.volumes.iter().filter(|(v, _)| !spec::is_adopted_source(&attrs, v)) {
            engine::ensure_volume(&docker, &ep, v, &cname, &address).await?;
        }
        let mut id = None;
        let mut created = false;
        if let Some((live_id, running, live_hash)) = engine::inspect(&docker, &ep, &spec.name).await? {
            if live_hash.as_deref() == Some(hash.as_str()) && request.prior.is_some() {
                if !running {
                    engine::start_container(&docker, &ep, &live_id, &spec.name, &address).await?;
                }
                id = Some(live_id);
            } else {
                engine::remove_container(&docker, &ep, &live_id).await?;
            }
        }
        let id = match id {
            Some(id) => id,
            None => {
                let id = engine::create_container(&docker, &ep, &spec, &cname, &address, &hash).await.map_err(|mut e| {
                    e.message = engine::redact(&e.message, &secrets);
                    e
                })?;
                let started = async {
                    engine::copy_files(&docker, &ep, &id, &spec.name, &spec.files).await?;
                    engine::start_container(&docker, &ep, &id, &spec.name, &address).await
                };
                if let Err(mut e) = started.await {
                    // Leave nothing half-made behind: the state does not record it.
                    let _ = engine::remove_container(&docker, &ep, &id).await;
                    e.message = engine::redact(&e.message, &secrets);
                    return Err(e);
                }
                created = true;
                id
            }
        };
        let timeout = spec.wait;
        engine::wait_ready(&docker, &ep, &id, &spec.name, &address, timeout, &secrets).await.map_err(|mut e| {
            if kind == Kind::Vault && e.kind == ErrorKind::Timeout {
                e.message.push_str(components::vault::NOT_STARTED_HINT);
            }
            e
        })?;
        // The steps that complete the component (its bucket, its queue), once per container.
        if created {
            for job in &spec.jobs {
                engine::ensure_image(&docker, &ep, &job.image).await.map_err(|mut e| {
                    e.message = format!("{address}: {}", engine::redact(&e.message, &secrets));
                    e
                })?;
                engine::run_once(&docker, &ep, job, &network, &cname, &address, timeout, &secrets).await?;
            }
        }
        attrs.insert(ATTR_HASH.into(), Value::string(&hash));
        attrs.insert(ATTR_RUNNING.into(), Value::Bool(true));
        attrs.insert(ATTR_ID.into(), Value::string(&id));
        let attributes = Value::Map(attrs);
        self.remember(&request.component, &attributes);
        Ok(ApplyResponse::ready(attributes, None))
    }

    /// Docker containers are imported by name (`docker run --name camera1`): the id is the
    /// container's name. The container is recorded as found, with its mounts in `adopted`; since
    /// its labels cannot change, the plan proposes a replacement that re-attaches them.
    async fn import(&self, req: ImportRequest<'_>) -> Result<Imported, ProviderError> {
        let c = &req.component;
        let address = c.address.to_string();
        let invalid = |m: String| ProviderError::new(ErrorKind::Invalid, format!("{address}: {m}"));
        if c.kind == Kind::Cluster {
            return Err(invalid("a cluster is not imported: declare it, and import the components that run on it".into()));
        }
        spec::check_supported(c.kind, &c.type_name, &address)?;
        if req.id.is_empty() || req.id.contains('/') {
            return Err(invalid(format!("{:?} is not an import id of the Docker provider, which takes the container's name (e.g. \"camera1\")", req.id)));
        }
        let ep = Endpoint::from_cluster(req.cluster);
        let docker = self.client(&ep).await?;
        let Some(found) = engine::find_by_name(&docker, &ep, req.id).await? else { return Ok(Imported::default()) };
        let mut attrs = req.desired.as_map().cloned().unwrap_or_default();
        attrs.retain(|_, v| !v.contains_unknown());
        self.keep_live_secrets(c, &mut attrs, req.refs, &ep, &found.env)?;
        attrs.insert(ADOPTED.into(), spec::adopted(req.id, &found.mounts));
        attrs.insert(ATTR_RUNNING.into(), Value::Bool(found.running));
        attrs.insert(ATTR_ID.into(), Value::string(&found.id));
        attrs.insert(ATTR_HASH.into(), found.hash.map(Value::String).unwrap_or(Value::Null));
        Ok(Imported { attributes: Some(Value::Map(attrs)), warnings: Vec::new() })
    }

    /// `data "docker_container_env" "x" { container = "mongodb" }`: the environment a container
    /// was started with (`docker run -e`), so a stack refers to its passwords.
    async fn read_data(&self, req: DataRequest<'_>) -> Result<DataResult, ProviderError> {
        let address = req.source.address.to_string();
        if req.source.type_name != "docker_container_env" {
            return Err(ProviderError::new(ErrorKind::Invalid, format!("{address}: the docker provider has no data source {:?}", req.source.type_name)));
        }
        let mut args = req.args.as_map().cloned().unwrap_or_default();
        let name = args.get("container").and_then(Value::as_str).unwrap_or_default().to_string();
        let ep = Endpoint::from_cluster(req.cluster);
        let docker = self.client(&ep).await?;
        let Some(found) = engine::find_by_name(&docker, &ep, &name).await? else { return Ok(DataResult::Missing(format!("container {name:?}"))) };
        args.insert("env".into(), Value::Map(found.env.into_iter().map(|(k, v)| (k, Value::String(v))).collect()));
        Ok(DataResult::Found(Value::Map(args)))
    }

    /// `kdeploy adopt`: the containers kdeploy did not create, with their images and environments.
    async fn discover(&self, cluster: &Value) -> Result<Vec<kdeploy_provider::Running>, ProviderError> {
        let ep = Endpoint::from_cluster(Some(cluster));
        let docker = self.client(&ep).await?;
        let mut out = Vec::new();
        for (name, image) in engine::list_unmanaged(&docker, &ep).await? {
            let Some(found) = engine::find_by_name(&docker, &ep, &name).await? else { continue };
            out.push(kdeploy_provider::Running {
                id: name.clone(),
                name,
                kind: "container".into(),
                images: vec![image],
                env: found.env.into_iter().map(|(k, v)| (k, kdeploy_provider::EnvSource::Value(v))).collect(),
                ..Default::default()
            });
        }
        Ok(out)
    }

    async fn delete(&self, request: DeleteRequest) -> Result<(), ProviderError> {
        let kind = request.component.kind;
        let address = request.component.address.to_string();
        let prior = request.prior.as_map().cloned().unwrap_or_default();
        if kind == Kind::Cluster {
            let ep = Endpoint::from_cluster(Some(&request.prior));
            let docker = self.client(&ep).await?;
            let cname = spec::cluster_name(&address);
            engine::remove_network(&docker, &ep, &spec::network_name(&cname, Some(&request.prior))).await?;
            if request.delete_data {
                for v in engine::list_volumes(&docker, &ep, Some(&cname)).await? {
                    engine::remove_volume(&docker, &ep, &v).await?;
                }
            }
            return Ok(());
        }
        let cluster = request.cluster.clone();
        let ep = Endpoint::from_cluster(cluster.as_ref());
        let docker = self.client(&ep).await?;
        let cname = cluster_of(&prior);
        let name = spec::container_name(&cname, &request.component.address);
        remove_adopted(&docker, &ep, &prior).await?;
        if let Some((live_id, _, _)) = engine::inspect(&docker, &ep, &name).await? {
            // Only the generation the caller saw (create_before_destroy creates the new one first).
            let expected = str_attr(&prior, ATTR_ID);
            if expected.is_none_or(|e| e == live_id) {
                engine::remove_container(&docker, &ep, &live_id).await?;
            }
        }
        if request.delete_data {
            for suffix in ["data", "config", "recordings"] {
                engine::remove_volume(&docker, &ep, &spec::volume_name(&name, suffix)).await?;
            }
        }
        Ok(())
    }
}

/// Removes the container an import adopted, when it is still the one recorded (its volumes and
/// bind mounts are never removed: the replacement re-attaches them).
async fn remove_adopted(docker: &Docker, ep: &Endpoint, prior: &BTreeMap<String, Value>) -> Result<(), ProviderError> {
    let Some(name) = spec::adopted_name(prior) else { return Ok(()) };
    if let Some((live_id, _, _)) = engine::inspect(docker, ep, name).await?
        && str_attr(prior, ATTR_ID) == Some(live_id.as_str())
    {
        engine::remove_container(docker, ep, &live_id).await?;
    }
    Ok(())
}

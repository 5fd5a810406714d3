//! Pure functions: object names, the rendered container configuration of each component, its
//! hash, and the computed attributes. No engine access here, so everything is unit-tested.

use std::collections::BTreeMap;

use kdeploy_provider::addr::Address;
use kdeploy_provider::components::{self, EnvVar, FileSource, Protocol, Spec, WorkloadError, kafka, mqtt, turn};
use kdeploy_provider::{ComponentRef, ErrorKind, Kind, ProviderError, Reference, Value};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Label every kdeploy object carries.
pub const MANAGED_BY: &str = "managed-by";
pub const MANAGED_BY_VALUE: &str = "kdeploy";
pub const LABEL_CLUSTER: &str = "kdeploy.cluster";
pub const LABEL_ADDRESS: &str = "kdeploy.address";
pub const LABEL_HASH: &str = "kdeploy.config-hash";

/// The provider-specific computed attributes of every container component.
pub const ATTR_HASH: &str = "config_hash";
pub const ATTR_RUNNING: &str = "running";
pub const ATTR_ID: &str = "container_id";

/// Lower-case, `[a-z0-9-]` only, no leading/trailing or doubled dashes (the one slug of
/// kdeploy's names).
pub use kdeploy_provider::names::slug as sanitize;

/// The name of a cluster from its address: `cluster.edge` → `edge`.
pub fn cluster_name(cluster_address: &str) -> String {
    let cleaned = cluster_address.replace("module.", "").replace("cluster.", "");
    let s = sanitize(&cleaned);
    if s.is_empty() { "default".to_string() } else { s }
}

/// The stack network: the cluster's `network` attribute or `kdeploy-<cluster name>`.
pub fn network_name(cluster_name: &str, cluster_attrs: Option<&Value>) -> String {
    match cluster_attrs.and_then(|c| c.as_map()).and_then(|m| m.get("network")).and_then(Value::as_str) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => format!("kdeploy-{cluster_name}"),
    }
}

/// `kdeploy-<cluster>-<address slug>`, e.g. `kdeploy-edge-agent-cam-front`.
pub fn container_name(cluster_name: &str, address: &Address) -> String {
    format!("kdeploy-{cluster_name}-{}", address.slug())
}

pub fn volume_name(container: &str, suffix: &str) -> String {
    format!("{container}-{suffix}")
}

/// Whether this provider can run the kind/type on a Docker cluster.
pub fn check_supported(kind: Kind, type_name: &str, address: &str) -> Result<(), ProviderError> {
    let ok = matches!(
        (kind, type_name),
        (Kind::Cluster, "docker")
            | (Kind::Database, "mongodb")
            | (Kind::ObjectStorage, "minio")
            | (Kind::Broker, "rabbitmq" | "kafka" | "mosquitto" | "vernemq")
            | (Kind::Turn, "coturn")
            | (Kind::Vault, "kerberos")
            | (Kind::Agent, "kerberos")
    );
    if ok {
        return Ok(());
    }
    let why = match (kind, type_name) {
        (Kind::Hub, _) => "Kerberos Hub needs Kubernetes (Helm chart, prometheus-operator CRDs); deploy it on a kubernetes/microk8s/eks/aks/gke cluster",
        (Kind::Factory, _) => "Kerberos Factory creates agents through the Kubernetes API; on Docker declare one agent block per camera instead",
        (Kind::Chart, _) => "a Helm chart renders Kubernetes objects; put it on a kubernetes/microk8s/eks/aks/gke cluster",
        _ => "this component type is not supported on a Docker cluster",
    };
    Err(ProviderError::new(ErrorKind::Invalid, format!("{address} ({kind} type {type_name:?}) cannot run on a Docker cluster: {why}.")))
}

/// The container an import took over: the `adopted` attribute, `{ name, mounts = { DESTINATION = SOURCE } }`.
pub fn adopted(name: &str, mounts: &[(String, String)]) -> Value {
    let mounts = mounts.iter().map(|(source, dest)| (dest.clone(), Value::string(source))).collect();
    Value::Map(BTreeMap::from([("name".to_string(), Value::string(name)), ("mounts".to_string(), Value::Map(mounts))]))
}

/// The adopted container's name, if the component took one over.
pub fn adopted_name(attrs: &BTreeMap<String, Value>) -> Option<&str> {
    attrs.get(kdeploy_provider::ADOPTED).and_then(Value::as_map).and_then(|a| a.get("name")).and_then(Value::as_str)
}

/// The volumes of a container that replaces an adopted one: the adopted container's volumes and
/// bind mounts, at their paths, instead of new volumes (its data is kept), and the rendered ones
/// at the other paths.
fn adopted_mounts(rendered: Vec<(String, String)>, attrs: &BTreeMap<String, Value>) -> Vec<(String, String)> {
    let Some(mounts) = attrs.get(kdeploy_provider::ADOPTED).and_then(Value::as_map).and_then(|a| a.get("mounts")).and_then(Value::as_map) else {
        return rendered;
    };
    let kept: Vec<(String, String)> = mounts.iter().filter_map(|(dest, src)| Some((src.as_str()?.to_string(), dest.clone()))).collect();
    let mut out: Vec<(String, String)> = rendered.into_iter().filter(|(_, path)| !mounts.contains_key(path)).collect();
    out.extend(kept);
    out
}

/// Whether a volume source belongs to an adopted container (created by someone else, kept as it is).
pub fn is_adopted_source(attrs: &BTreeMap<String, Value>, source: &str) -> bool {
    source.starts_with('/')
        || attrs
            .get(kdeploy_provider::ADOPTED)
            .and_then(Value::as_map)
            .and_then(|a| a.get("mounts"))
            .and_then(Value::as_map)
            .is_some_and(|m| m.values().any(|v| v.as_str() == Some(source)))
}

/// A one-shot container run to completion once the component is healthy (create the bucket,
/// declare the queue), on the component's network.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OneShot {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// A container port published on the host: `container/protocol` (Docker's key, e.g. `3478/udp`)
/// bound to `host`. Hashed as the pair `[container, host]` for TCP (as before UDP existed, so
/// existing containers keep their hash) and `[container, host, "udp"]` for UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub container: u16,
    pub host: u16,
    pub protocol: Protocol,
}

impl Published {
    /// Docker's key for the container side, e.g. `3478/udp`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.container, self.protocol.docker())
    }
}

impl Serialize for Published {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.protocol {
            Protocol::Tcp => (self.container, self.host).serialize(s),
            Protocol::Udp => (self.container, self.host, "udp").serialize(s),
        }
    }
}

/// The desired container, as far as it decides the container's identity (hashed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerSpec {
    pub name: String,
    pub hostname: String,
    pub image: String,
    pub command: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    /// Ports published on the host.
    pub ports: Vec<Published>,
    /// (volume name, mount path).
    pub volumes: Vec<(String, String)>,
    pub healthcheck: Option<Vec<String>>,
    /// User labels (the fixed kdeploy labels are added when creating).
    pub labels: BTreeMap<String, String>,
    pub network: String,
    pub memory: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub restart: String,
    /// The uid the process runs as (None: the image's user).
    pub user: Option<String>,
    /// Supplemental groups of the process (the group owning the volumes).
    pub group_add: Vec<String>,
    /// Files copied into the container before it starts: (path, content).
    pub files: Vec<(String, String)>,
    pub jobs: Vec<OneShot>,
    /// Values that must never appear in messages (passwords, keys); not part of the hash.
    #[serde(skip)]
    pub secrets: Vec<String>,
    /// How long apply waits for the container to be healthy; not part of the hash.
    #[serde(skip)]
    pub wait: std::time::Duration,
}

impl ContainerSpec {
    /// Short, stable hash of the whole desired configuration (env values included, so a
    /// changed password or key rolls the container).
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let digest = Sha256::digest(&json);
        digest.iter().take(10).map(|b| format!("{b:02x}")).collect()
    }

    /// Values that must never appear in messages (passwords, keys).
    pub fn secret_values(&self) -> Vec<String> {
        self.secrets.clone()
    }
}

/// Everything rendering needs besides the component's own attributes.
pub struct RenderCtx<'a> {
    pub component: &'a ComponentRef,
    pub cluster_name: &'a str,
    pub network: &'a str,
    /// The component's attributes: inputs plus computed (generated secrets).
    pub attrs: &'a BTreeMap<String, Value>,
    pub refs: &'a BTreeMap<String, Reference>,
}

/// Kubernetes-style quantity to bytes: `512Mi`, `1Gi`, `100M`, `1048576`.
pub fn parse_memory(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.trim().parse().ok()?;
    let mult: f64 = match unit {
        "" => 1.0,
        "k" | "K" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = n * mult;
    (bytes.is_finite() && (0.0..9.0e18).contains(&bytes)).then_some(bytes as i64)
}

/// CPU quantity to nano CPUs: `1000m` → 1e9, `0.5` → 5e8.
pub fn parse_cpu(s: &str) -> Option<i64> {
    let s = s.trim();
    let nanos = match s.strip_suffix('m') {
        Some(m) => m.trim().parse::<f64>().ok()? * 1e6,
        None => s.parse::<f64>().ok()? * 1e9,
    };
    (nanos.is_finite() && (0.0..9.0e18).contains(&nanos)).then_some(nanos as i64)
}

fn env_map(env: &[EnvVar]) -> BTreeMap<String, String> {
    env.iter().map(|e| (e.name.clone(), e.value.clone())).collect()
}

/// Renders the container of a component from its workload. `Ok(None)` when something it needs
/// is still unknown (a generated secret of a component created in the same apply).
pub fn render(ctx: &RenderCtx<'_>) -> Result<Option<ContainerSpec>, ProviderError> {
    let address = &ctx.component.address;
    check_supported(ctx.component.kind, &ctx.component.type_name, &address.to_string())?;
    let spec = Spec { component: ctx.component, attrs: ctx.attrs, refs: ctx.refs, namespace: None };
    let w = match components::workload(&spec) {
        Ok(w) => w,
        Err(WorkloadError::Unknown) => return Ok(None),
        Err(WorkloadError::Invalid(m)) => return Err(ProviderError::new(ErrorKind::Invalid, m)),
    };
    let name = container_name(ctx.cluster_name, address);
    let mut files = Vec::new();
    for f in &w.files {
        match &f.source {
            FileSource::Inline(text) => files.push((f.path.clone(), text.clone())),
            FileSource::Secret { name, .. } => {
                return Err(ProviderError::new(
                    ErrorKind::Invalid,
                    format!(
                        "{address}: the file {} comes from the Kubernetes Secret {name:?}, which a Docker cluster does not have; give its content instead (e.g. tls_ca = file(\"ca.pem\")).",
                        f.path
                    ),
                ));
            }
        }
    }
    let jobs = w
        .jobs
        .iter()
        .map(|j| OneShot { name: format!("{name}-{}", j.name), image: j.image.clone(), command: j.command.clone(), env: env_map(&j.env) })
        .collect();
    let user_labels: BTreeMap<String, String> = match ctx.attrs.get("labels") {
        Some(Value::Map(m)) => m.iter().map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.render_inline()))).collect(),
        _ => BTreeMap::new(),
    };
    Ok(Some(ContainerSpec {
        hostname: name.clone(),
        image: w.image.clone(),
        command: w.args.clone(),
        env: env_map(&w.env),
        ports: w.ports.iter().filter_map(|p| p.published.map(|host| Published { container: p.port, host, protocol: p.protocol })).collect(),
        volumes: adopted_mounts(w.mounts.iter().map(|m| (volume_name(&name, m.volume_suffix()), m.path.clone())).collect(), ctx.attrs),
        healthcheck: w.probe.as_ref().map(|p| std::iter::once("CMD".to_string()).chain(p.as_command()).collect()),
        labels: user_labels,
        network: ctx.network.to_string(),
        memory: w.resources.as_ref().and_then(|r| parse_memory(&r.memory)),
        nano_cpus: w.resources.as_ref().and_then(|r| parse_cpu(&r.cpu)),
        restart: "unless-stopped".into(),
        user: w.security.run_as_user.map(|u| u.to_string()),
        group_add: w.security.fs_group.map(|g| g.to_string()).into_iter().collect(),
        files,
        jobs,
        secrets: w.secret_values(),
        wait: w.readiness_timeout.as_std(),
        name,
    }))
}

/// Names of the attributes kdeploy generates for a component (kept across recreations), plus
/// a vault's account keys.
pub fn generated_attrs(component: &ComponentRef) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = components::secrets::generated(component.kind, &component.type_name).iter().map(|g| g.attr).collect();
    if component.kind == Kind::Vault {
        out.extend(["access_key", "secret_key", components::vault::ACCOUNTS_ATTR]);
    }
    out
}

/// The host the engine's published ports are reached on: the tcp host, else localhost.
pub fn engine_hostname(host: &str) -> String {
    if let Some(rest) = host.strip_prefix("tcp://").or_else(|| host.strip_prefix("https://")).or_else(|| host.strip_prefix("http://")) {
        let h = rest.split('/').next().unwrap_or(rest);
        let h = h.rsplit_once(':').map(|(h, _)| h).unwrap_or(h);
        if !h.is_empty() {
            return h.to_string();
        }
    }
    "localhost".to_string()
}

/// The deterministic computed attributes (host, port, endpoint, uri, url, provider), given
/// the component's attributes (with secrets, possibly unknown).
pub fn derived_attrs(component: &ComponentRef, cluster_name: &str, engine_host: &str, attrs: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    let address = &component.address;
    let name = container_name(cluster_name, address);
    let mut out = BTreeMap::new();
    let s = |k: &str| attrs.get(k).cloned().unwrap_or(Value::Null);
    let with_pw = |pw: Value, f: &dyn Fn(&str) -> String| -> Value {
        match pw {
            Value::String(p) => Value::String(f(&p)),
            Value::Unknown(u) => Value::Unknown(u),
            _ => Value::Unknown(format!("{address}.uri")),
        }
    };
    match component.kind {
        Kind::Broker if component.type_name == "mosquitto" || component.type_name == "vernemq" => {
            let published = |k: &str, default: i64| attrs.get(k).and_then(Value::as_i64).unwrap_or(default);
            out.insert("host".into(), Value::string(&name));
            out.insert("port".into(), Value::from_i64(i64::from(mqtt::MQTT_PORT)));
            out.insert("uri".into(), Value::string(format!("tcp://{name}:{}", mqtt::MQTT_PORT)));
            out.insert("websocket_uri".into(), Value::string(format!("ws://{name}:{}", mqtt::WEBSOCKET_PORT)));
            // Published on the engine's host: reachable from other clusters and browsers.
            out.insert("external_uri".into(), Value::string(format!("tcp://{engine_host}:{}", published("node_port", 31883))));
            out.insert("external_websocket_uri".into(), Value::string(format!("ws://{engine_host}:{}", published("websocket_node_port", 31080))));
        }
        Kind::Turn => {
            let published = attrs.get("node_port").and_then(Value::as_i64).unwrap_or(30478);
            out.insert("host".into(), Value::string(&name));
            out.insert("uri".into(), Value::string(turn::uri(&name, turn::TURN_PORT)));
            out.insert("external_uri".into(), Value::string(turn::uri(engine_host, published)));
        }
        Kind::Broker if component.type_name == "kafka" => {
            out.insert("host".into(), Value::string(&name));
            out.insert("port".into(), Value::from_i64(i64::from(kafka::PORT)));
            out.insert("brokers".into(), Value::string(format!("{name}:{}", kafka::PORT)));
        }
        Kind::Database => {
            let user = s("username").as_str().unwrap_or("root").to_string();
            out.insert("host".into(), Value::string(&name));
            out.insert("port".into(), Value::from_i64(27017));
            out.insert("uri".into(), with_pw(s("admin_password"), &|p| format!("mongodb://{user}:{p}@{name}:27017/admin")));
        }
        Kind::Broker => {
            let user = s("username").as_str().unwrap_or("kerberos").to_string();
            out.insert("host".into(), Value::string(&name));
            out.insert("port".into(), Value::from_i64(5672));
            out.insert("uri".into(), with_pw(s("admin_password"), &|p| format!("amqp://{user}:{p}@{name}:5672")));
        }
        Kind::ObjectStorage => {
            out.insert("endpoint".into(), Value::string(format!("{name}:9000")));
        }
        Kind::Vault => {
            let port = attrs.get("node_port").and_then(Value::as_i64).unwrap_or(30080);
            out.insert("endpoint".into(), Value::string(format!("http://{name}:80/api")));
            out.insert("url".into(), Value::string(format!("http://{engine_host}:{port}")));
            // The port is published on the engine's host: reachable from other clusters.
            out.insert("external_url".into(), Value::string(format!("http://{engine_host}:{port}/api")));
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kdeploy_provider::components::secrets;

    #[test]
    fn an_adopted_containers_mounts_replace_the_rendered_volumes_at_their_paths() {
        let rendered = vec![("kdeploy-e-database-meta-data".to_string(), "/data/db".to_string()), ("kdeploy-e-x-config".to_string(), "/config".to_string())];
        assert_eq!(adopted_mounts(rendered.clone(), &BTreeMap::new()), rendered);
        let mounts = [("mongo-data".to_string(), "/data/db".to_string()), ("/srv/backup".to_string(), "/backup".to_string())];
        let attrs = BTreeMap::from([(kdeploy_provider::ADOPTED.to_string(), adopted("mongodb", &mounts))]);
        let out = adopted_mounts(rendered, &attrs);
        assert_eq!(
            out,
            vec![
                ("kdeploy-e-x-config".to_string(), "/config".to_string()),
                ("/srv/backup".to_string(), "/backup".to_string()),
                ("mongo-data".to_string(), "/data/db".to_string())
            ]
        );
        assert!(is_adopted_source(&attrs, "mongo-data") && is_adopted_source(&attrs, "/srv/backup") && !is_adopted_source(&attrs, "kdeploy-e-x-config"));
        assert_eq!(adopted_name(&attrs), Some("mongodb"));
    }

    fn m(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    fn cref(address: &str, kind: Kind) -> ComponentRef {
        ComponentRef { address: address.parse().unwrap(), kind, type_name: "kerberos".into() }
    }

    #[test]
    fn a_tcp_port_hashes_as_before_udp_and_a_udp_port_says_so() {
        let tcp = Published { container: 80, host: 30080, protocol: Protocol::Tcp };
        let udp = Published { container: 3478, host: 30478, protocol: Protocol::Udp };
        assert_eq!(serde_json::to_string(&tcp).unwrap(), "[80,30080]", "existing containers keep their hash");
        assert_eq!(serde_json::to_string(&udp).unwrap(), "[3478,30478,\"udp\"]");
        assert_eq!((tcp.key(), udp.key()), ("80/tcp".to_string(), "3478/udp".to_string()));
    }

    #[test]
    fn names_are_sanitized_and_prefixed_with_the_cluster() {
        assert_eq!(cluster_name("cluster.edge"), "edge");
        assert_eq!(cluster_name("module.site.cluster.Edge_1"), "site-edge-1");
        assert_eq!(container_name("edge", &"agent.cam[\"front\"]".parse().unwrap()), "kdeploy-edge-agent-cam-front");
        assert_eq!(container_name("edge", &"module.site.vault.main".parse().unwrap()), "kdeploy-edge-site-vault-main");
        assert_eq!(container_name("edge", &"agent.cam[\"Yard Cam/2\"]".parse().unwrap()), "kdeploy-edge-agent-cam-yard-cam-2");
        assert_eq!(volume_name("kdeploy-edge-database-meta", "data"), "kdeploy-edge-database-meta-data");
        assert_eq!(network_name("edge", None), "kdeploy-edge");
        let c = Value::Map(m(&[("network", Value::string("cams"))]));
        assert_eq!(network_name("edge", Some(&c)), "cams");
    }

    #[test]
    fn quantities_parse_with_checked_ranges() {
        assert_eq!(parse_memory("512Mi"), Some(512 * 1024 * 1024));
        assert_eq!(parse_memory("1G"), Some(1_000_000_000));
        assert_eq!(parse_memory("1e30Gi"), None, "too large is refused, not wrapped");
        assert_eq!(parse_cpu("1000m"), Some(1_000_000_000));
        assert_eq!(parse_cpu("0.5"), Some(500_000_000));
        assert_eq!(parse_cpu("-1"), None);
        assert_eq!(engine_hostname("tcp://10.0.0.5:2376"), "10.0.0.5");
        assert_eq!(engine_hostname("unix:///var/run/docker.sock"), "localhost");
    }

    fn vault_ref(directory: &str) -> BTreeMap<String, Reference> {
        let mut v = m(&[
            ("storage", Value::string("object_storage.rec")),
            ("directory", Value::string(directory)),
            ("endpoint", Value::string("http://kdeploy-edge-vault-main:80/api")),
        ]);
        let mut n = 0;
        components::vault::fill_accounts("vault.main", &mut v, &mut |k| {
            n += 1;
            Some(format!("{k}-{n}-value"))
        });
        [("vault".to_string(), Reference { component: cref("vault.main", Kind::Vault), attributes: Value::Map(v).into() })].into()
    }

    fn agent_attrs(rtsp: &str) -> BTreeMap<String, Value> {
        let mut a = m(&[
            ("rtsp_url", Value::string(rtsp)),
            ("timezone", Value::string("UTC")),
            ("directory", Value::string("edge")),
            ("login_username", Value::string("admin")),
            ("continuous", Value::Bool(false)),
            ("memory", Value::string("512Mi")),
            ("cpu", Value::string("1000m")),
            ("persistence", Value::Bool(true)),
            ("storage_size", Value::string("1Gi")),
            ("fs_group", Value::from_i64(101)),
        ]);
        secrets::fill(Kind::Agent, "kerberos", "agent.cam[\"front\"]", &mut a, &BTreeMap::new(), true);
        a
    }

    #[test]
    fn an_agent_container_from_the_shared_model() {
        let attrs = agent_attrs("rtsp://u:p@10.0.0.1/s1");
        let refs = vault_ref("*");
        let c = cref("agent.cam[\"front\"]", Kind::Agent);
        let ctx = RenderCtx { component: &c, cluster_name: "edge", network: "kdeploy-edge", attrs: &attrs, refs: &refs };
        let spec = render(&ctx).unwrap().unwrap();
        assert_eq!(spec.name, "kdeploy-edge-agent-cam-front");
        assert_eq!(spec.env["AGENT_KERBEROSVAULT_DIRECTORY"], "edge", "the agent's folder, never *");
        assert_eq!(spec.env["AGENT_KERBEROSVAULT_PROVIDER"], "rec");
        assert_eq!(spec.env["AGENT_MQTT_URI"], "", "explicit, never the public default");
        assert_eq!(spec.image, kdeploy_provider::images::AGENT);
        assert_eq!(spec.memory, Some(512 * 1024 * 1024));
        assert_eq!(spec.group_add, vec!["101".to_string()]);
        assert_eq!(
            spec.volumes,
            vec![
                ("kdeploy-edge-agent-cam-front-config".to_string(), "/home/agent/data/config".to_string()),
                ("kdeploy-edge-agent-cam-front-recordings".to_string(), "/home/agent/data/recordings".to_string())
            ]
        );
        assert!(spec.secret_values().contains(&"rtsp://u:p@10.0.0.1/s1".to_string()));
        assert!(spec.secret_values().contains(&attrs["admin_password"].as_str().unwrap().to_string()));
        let h1 = spec.hash();
        assert_eq!(h1, render(&ctx).unwrap().unwrap().hash(), "stable");
        let attrs2 = agent_attrs("rtsp://10.0.0.2/s1");
        assert_ne!(render(&RenderCtx { attrs: &attrs2, ..ctx }).unwrap().unwrap().hash(), h1);
        // A concrete account directory wins over the agent's own.
        let refs = vault_ref("site-a");
        let spec = render(&RenderCtx { refs: &refs, ..ctx }).unwrap().unwrap();
        assert_eq!(spec.env["AGENT_KERBEROSVAULT_DIRECTORY"], "site-a");
    }

    #[test]
    fn minio_has_a_bucket_job_and_helpers_are_refused_where_docker_cannot_run_them() {
        let attrs = m(&[
            ("bucket", Value::string("recs")),
            ("endpoint", Value::string("kdeploy-edge-object-storage-rec:9000")),
            ("access_key", Value::string("AKAK")),
            ("secret_key", Value::string("SKSK")),
            ("region", Value::string("na")),
            ("size", Value::string("1Gi")),
        ]);
        let c = ComponentRef { address: "object_storage.rec".parse().unwrap(), kind: Kind::ObjectStorage, type_name: "minio".into() };
        let spec = render(&RenderCtx { component: &c, cluster_name: "edge", network: "n", attrs: &attrs, refs: &BTreeMap::new() }).unwrap().unwrap();
        assert_eq!(spec.jobs.len(), 1);
        assert_eq!(spec.jobs[0].name, "kdeploy-edge-object-storage-rec-create-bucket");
        assert!(spec.jobs[0].command[2].contains("local/recs"));
        assert_eq!(spec.jobs[0].env["MINIO_ROOT_PASSWORD"], "SKSK");
        assert!(check_supported(Kind::Hub, "kerberos", "hub.main").unwrap_err().message.contains("Kubernetes"));
        assert!(check_supported(Kind::Chart, "helm", "chart.monitoring").unwrap_err().message.contains("Helm chart renders Kubernetes objects"));
        assert!(check_supported(Kind::Broker, "kafka", "broker.k").is_ok());
    }

    #[test]
    fn derived_attributes() {
        let attrs = m(&[("username", Value::string("root")), ("admin_password", Value::string("pw"))]);
        let d = derived_attrs(
            &ComponentRef { address: "database.meta".parse().unwrap(), kind: Kind::Database, type_name: "mongodb".into() },
            "edge",
            "localhost",
            &attrs,
        );
        assert_eq!(d["host"], Value::string("kdeploy-edge-database-meta"));
        assert_eq!(d["uri"], Value::string("mongodb://root:pw@kdeploy-edge-database-meta:27017/admin"));
        let unknown = m(&[("admin_password", Value::Unknown("x".into()))]);
        assert!(
            derived_attrs(
                &ComponentRef { address: "database.meta".parse().unwrap(), kind: Kind::Database, type_name: "mongodb".into() },
                "edge",
                "localhost",
                &unknown
            )["uri"]
                .is_unknown()
        );
        let mqtt = ComponentRef { address: "broker.live".parse().unwrap(), kind: Kind::Broker, type_name: "mosquitto".into() };
        let b = derived_attrs(&mqtt, "edge", "10.0.0.5", &m(&[("node_port", Value::from_i64(1883)), ("websocket_node_port", Value::from_i64(9001))]));
        assert_eq!(b["uri"], Value::string("tcp://kdeploy-edge-broker-live:1883"));
        assert_eq!(b["external_uri"], Value::string("tcp://10.0.0.5:1883"));
        assert_eq!(b["external_websocket_uri"], Value::string("ws://10.0.0.5:9001"));
        let v = derived_attrs(&cref("vault.main", Kind::Vault), "edge", "10.0.0.5", &m(&[("node_port", Value::from_i64(31000))]));
        assert_eq!(v["url"], Value::string("http://10.0.0.5:31000"));
    }
}

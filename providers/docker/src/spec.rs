//! Pure functions: object names, the rendered container configuration of each component, its
//! hash, and the computed attributes. No engine access here, so everything is unit-tested.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::Duration;

use kdeploy_provider::{ErrorKind, Kind, ProviderError, Value};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Label every kdeploy object carries.
pub const MANAGED_BY: &str = "managed-by";
pub const MANAGED_BY_VALUE: &str = "kdeploy";
pub const LABEL_CLUSTER: &str = "kdeploy.cluster";
pub const LABEL_ADDRESS: &str = "kdeploy.address";
pub const LABEL_HASH: &str = "kdeploy.config-hash";

/// Pinned default images (real names, pinned tags).
pub const MONGODB_IMAGE: &str = "mongo"; // + ":" + version (default 8.0.13)
pub const MINIO_IMAGE: &str = "quay.io/minio/minio:RELEASE.2024-11-07T00-52-20Z";
pub const RABBITMQ_IMAGE: &str = "rabbitmq"; // + ":" + version (default 3.13-management)
pub const VAULT_IMAGE: &str = "ghcr.io/uug-ai/vault:v1.4.9";
pub const AGENT_IMAGE: &str = "kerberos/agent:v3.5.0";

/// The provider-specific computed attributes of every container component.
pub const ATTR_HASH: &str = "config_hash";
pub const ATTR_RUNNING: &str = "running";
pub const ATTR_ID: &str = "container_id";

/// Lower-case, `[a-z0-9-]` only, no leading/trailing or doubled dashes.
pub fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// An address without `module.` and the kind keyword's `cluster.` marker, sanitized:
/// `agent.cam["front"]` → `agent-cam-front`, `module.site.vault.main` → `site-vault-main`.
pub fn address_slug(address: &str) -> String {
    let cleaned = address.replace("module.", "");
    sanitize(&cleaned)
}

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
pub fn container_name(cluster_name: &str, address: &str) -> String {
    format!("kdeploy-{cluster_name}-{}", address_slug(address))
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
            | (Kind::Broker, "rabbitmq")
            | (Kind::Vault, "kerberos")
            | (Kind::Agent, "kerberos")
    );
    if ok {
        return Ok(());
    }
    let why = match (kind, type_name) {
        (Kind::Hub, _) => "Kerberos Hub needs Kubernetes (Helm chart, prometheus-operator CRDs); deploy it on a kubernetes/microk8s/eks/aks/gke cluster",
        (Kind::Factory, _) => "Kerberos Factory creates agents through the Kubernetes API; on Docker declare one agent block per camera instead",
        (Kind::Broker, "kafka" | "vernemq") => "only broker type \"rabbitmq\" (or \"external\") is supported on Docker",
        _ => "this component type is not supported on a Docker cluster",
    };
    Err(ProviderError::new(ErrorKind::Invalid, format!("{address} ({kind} type {type_name:?}) cannot run on a Docker cluster: {why}.")))
}

/// The desired container, as far as it decides the container's identity (hashed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerSpec {
    pub name: String,
    pub hostname: String,
    pub image: String,
    pub command: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    /// (container port, host port) published on the host.
    pub ports: Vec<(u16, u16)>,
    /// (volume name, mount path).
    pub volumes: Vec<(String, String)>,
    pub healthcheck: Option<Vec<String>>,
    /// User labels (the fixed kdeploy labels are added when creating).
    pub labels: BTreeMap<String, String>,
    pub network: String,
    pub memory: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub restart: String,
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
        self.env
            .iter()
            .filter(|(k, v)| v.len() >= 4 && ["PASS", "SECRET", "KEY", "TOKEN", "URI"].iter().any(|p| k.contains(p)) && looks_secret(k, v))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

fn looks_secret(key: &str, value: &str) -> bool {
    // URIs are only secret when they carry credentials.
    if key.ends_with("URI") { value.contains('@') } else { true }
}

/// Reads attribute values, remembering whether anything needed was unknown.
struct Get<'a> {
    m: Option<&'a BTreeMap<String, Value>>,
    unknown: &'a Cell<bool>,
}

impl Get<'_> {
    fn value(&self, k: &str) -> Option<&Value> {
        self.m.and_then(|m| m.get(k))
    }
    fn s(&self, k: &str) -> String {
        self.opt(k).unwrap_or_default()
    }
    fn opt(&self, k: &str) -> Option<String> {
        match self.value(k) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(Value::Bool(b)) => Some(b.to_string()),
            Some(Value::Unknown(_)) => {
                self.unknown.set(true);
                None
            }
            _ => None,
        }
    }
    fn b(&self, k: &str) -> bool {
        match self.value(k) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s == "true",
            Some(Value::Unknown(_)) => {
                self.unknown.set(true);
                false
            }
            _ => false,
        }
    }
    fn list(&self, k: &str) -> Option<Vec<String>> {
        match self.value(k) {
            Some(Value::List(l)) => Some(
                l.iter()
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        Value::Unknown(_) => {
                            self.unknown.set(true);
                            String::new()
                        }
                        other => other.render_inline(),
                    })
                    .collect(),
            ),
            Some(Value::Unknown(_)) => {
                self.unknown.set(true);
                None
            }
            _ => None,
        }
    }
    fn map(&self, k: &str) -> BTreeMap<String, String> {
        match self.value(k) {
            Some(Value::Map(m)) => m
                .iter()
                .filter(|(k, _)| k.as_str() != "address")
                .map(|(k, v)| {
                    let s = match v {
                        Value::String(s) => s.clone(),
                        Value::Unknown(_) => {
                            self.unknown.set(true);
                            String::new()
                        }
                        other => other.render_inline(),
                    };
                    (k.clone(), s)
                })
                .collect(),
            Some(Value::Unknown(_)) => {
                self.unknown.set(true);
                BTreeMap::new()
            }
            _ => BTreeMap::new(),
        }
    }
}

/// Everything rendering needs besides the component's own attributes.
pub struct RenderCtx<'a> {
    pub address: &'a str,
    pub kind: Kind,
    pub cluster_name: &'a str,
    pub network: &'a str,
    /// The component's attributes: inputs plus computed (generated secrets).
    pub attrs: &'a BTreeMap<String, Value>,
    pub refs: &'a BTreeMap<String, Value>,
}

/// The instance key of an address (`agent.cam["front"]` → `front`), else the block label.
pub fn instance_name(address: &str) -> String {
    if let Some(start) = address.rfind('[') {
        let inner = address[start + 1..].trim_end_matches(']');
        return inner.trim_matches('"').to_string();
    }
    address.rsplit('.').next().unwrap_or(address).to_string()
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
    Some((n * mult) as i64)
}

/// CPU quantity to nano CPUs: `1000m` → 1e9, `0.5` → 5e8.
pub fn parse_cpu(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Some(m) = s.strip_suffix('m') {
        return m.trim().parse::<f64>().ok().map(|v| (v * 1e6) as i64);
    }
    s.parse::<f64>().ok().map(|v| (v * 1e9) as i64)
}

/// `30s`, `5m`, `1h`, `1m30s`, or plain seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(n) = s.parse::<u64>() {
        return Some(Duration::from_secs(n));
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        total += match c {
            's' => n,
            'm' => n * 60,
            'h' => n * 3600,
            _ => return None,
        };
    }
    if !num.is_empty() {
        return None;
    }
    Some(Duration::from_secs(total))
}

fn default_health(kind: Kind) -> Vec<String> {
    let v: &[&str] = match kind {
        Kind::Database => &["CMD", "mongosh", "--quiet", "--eval", "db.adminCommand('ping').ok"],
        Kind::ObjectStorage => &["CMD", "mc", "ready", "local"],
        Kind::Broker => &["CMD", "rabbitmq-diagnostics", "-q", "ping"],
        Kind::Vault => &["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:80/api/health || curl -fsS -o /dev/null http://127.0.0.1:80/api/health"],
        _ => &["CMD-SHELL", "curl -fsS -o /dev/null http://127.0.0.1:80/ || wget -q -O /dev/null http://127.0.0.1:80/"],
    };
    v.iter().map(|s| s.to_string()).collect()
}

/// Renders the container of a component. `Ok(None)` when something it needs is still unknown
/// (a generated secret of a component created in the same apply).
pub fn render(ctx: &RenderCtx<'_>) -> Result<Option<ContainerSpec>, ProviderError> {
    let unknown = Cell::new(false);
    let a = Get { m: Some(ctx.attrs), unknown: &unknown };
    let r = |name: &str| Get { m: ctx.refs.get(name).and_then(Value::as_map), unknown: &unknown };
    let name = container_name(ctx.cluster_name, ctx.address);
    let vol = |suffix: &str, path: &str| (volume_name(&name, suffix), path.to_string());
    let mut env = BTreeMap::new();
    let mut ports = Vec::new();
    let mut volumes = Vec::new();
    let mut command: Option<Vec<String>> = None;
    let version = a.opt("version");
    let image = match ctx.kind {
        Kind::Database => {
            env.insert("MONGO_INITDB_ROOT_USERNAME".into(), a.s("username"));
            env.insert("MONGO_INITDB_ROOT_PASSWORD".into(), a.s("admin_password"));
            volumes.push(vol("data", "/data/db"));
            format!("{MONGODB_IMAGE}:{}", version.unwrap_or_else(|| "8.0.13".into()))
        }
        Kind::ObjectStorage => {
            env.insert("MINIO_ROOT_USER".into(), a.s("access_key"));
            env.insert("MINIO_ROOT_PASSWORD".into(), a.s("secret_key"));
            env.insert("MINIO_REGION".into(), a.s("region"));
            env.insert("KDEPLOY_BUCKET".into(), a.s("bucket"));
            command = Some(vec!["server".into(), "/data".into(), "--console-address".into(), ":9090".into()]);
            volumes.push(vol("data", "/data"));
            MINIO_IMAGE.to_string()
        }
        Kind::Broker => {
            env.insert("RABBITMQ_DEFAULT_USER".into(), a.s("username"));
            env.insert("RABBITMQ_DEFAULT_PASS".into(), a.s("admin_password"));
            volumes.push(vol("data", "/var/lib/rabbitmq"));
            format!("{RABBITMQ_IMAGE}:{}", version.unwrap_or_else(|| "3.13-management".into()))
        }
        Kind::Vault => {
            let db = r("database");
            env.insert("GIN_MODE".into(), "release".into());
            env.insert("KERBEROS_LOGIN_USERNAME".into(), a.s("login_username"));
            env.insert("KERBEROS_LOGIN_PASSWORD".into(), a.s("admin_password"));
            match db.opt("admin_password") {
                Some(pw) => {
                    env.insert("MONGODB_HOST".into(), db.s("host"));
                    env.insert("MONGODB_PORT".into(), db.opt("port").unwrap_or_else(|| "27017".into()));
                    env.insert("MONGODB_USERNAME".into(), db.s("username"));
                    env.insert("MONGODB_PASSWORD".into(), pw);
                    env.insert("MONGODB_DATABASE_CREDENTIALS".into(), "admin".into());
                }
                None if !unknown.get() => {
                    // An external database: the connection string.
                    env.insert("MONGODB_URI".into(), db.s("uri"));
                    if db.s("flavor") == "documentdb" {
                        env.insert("MONGODB_FLAVOR".into(), "documentdb".into());
                    }
                }
                None => {}
            }
            env.insert("MONGODB_DATABASE_STORAGE".into(), "KerberosStorage".into());
            env.insert("MQTTURI".into(), a.s("mqtt_uri"));
            env.insert("MQTT_USERNAME".into(), String::new());
            env.insert("MQTT_PASSWORD".into(), String::new());
            env.insert("CONTINUOUS_FORWARDING".into(), "false".into());
            let port = a.value("node_port").and_then(Value::as_i64).unwrap_or(30080);
            let port = u16::try_from(port).map_err(|_| ProviderError::new(ErrorKind::Invalid, format!("{}: node_port {port} is not a valid host port (1-65535).", ctx.address)))?;
            ports.push((80, port));
            VAULT_IMAGE.to_string()
        }
        Kind::Agent => {
            let v = r("vault");
            let name_default = instance_name(ctx.address);
            env.insert("AGENT_NAME".into(), a.opt("camera_name").filter(|s| !s.is_empty()).unwrap_or(name_default));
            env.insert("AGENT_KEY".into(), a.s("key"));
            env.insert("AGENT_CAPTURE_IPCAMERA_RTSP".into(), a.s("rtsp_url"));
            env.insert("AGENT_CAPTURE_IPCAMERA_SUB_RTSP".into(), a.s("sub_rtsp_url"));
            env.insert("AGENT_CAPTURE_CONTINUOUS".into(), a.b("continuous").to_string());
            env.insert("AGENT_TIMEZONE".into(), a.s("timezone"));
            env.insert("AGENT_CLOUD".into(), "kstorage".into());
            env.insert("AGENT_KERBEROSVAULT_URI".into(), v.s("endpoint"));
            env.insert("AGENT_KERBEROSVAULT_ACCESS_KEY".into(), v.s("access_key"));
            env.insert("AGENT_KERBEROSVAULT_SECRET_KEY".into(), v.s("secret_key"));
            env.insert("AGENT_KERBEROSVAULT_PROVIDER".into(), v.s("provider"));
            env.insert("AGENT_KERBEROSVAULT_DIRECTORY".into(), v.opt("directory").unwrap_or_else(|| "*".into()));
            for (k, attr) in [
                ("AGENT_MQTT_URI", "mqtt_uri"),
                ("AGENT_MQTT_USERNAME", "mqtt_username"),
                ("AGENT_MQTT_PASSWORD", "mqtt_password"),
                ("AGENT_TURN_URI", "turn_uri"),
                ("AGENT_TURN_USERNAME", "turn_username"),
                ("AGENT_TURN_PASSWORD", "turn_password"),
                ("AGENT_STUN_URI", "stun_uri"),
                ("AGENT_HUB_URI", "hub_uri"),
                ("AGENT_HUB_KEY", "hub_key"),
                ("AGENT_HUB_PRIVATE_KEY", "hub_private_key"),
            ] {
                env.insert(k.into(), a.s(attr));
            }
            for (k, v) in a.map("env") {
                env.insert(k, v);
            }
            if a.b("persistence") {
                volumes.push(vol("config", "/home/agent/data/config"));
                volumes.push(vol("recordings", "/home/agent/data/recordings"));
            }
            AGENT_IMAGE.to_string()
        }
        _ => {
            check_supported(ctx.kind, "?", ctx.address)?;
            unreachable!()
        }
    };
    let image = a.opt("image").filter(|s| !s.is_empty()).unwrap_or(image);
    if let Some(c) = a.list("command") {
        command = Some(c);
    }
    let healthcheck = a.list("healthcheck").or_else(|| Some(default_health(ctx.kind)));
    let (memory, nano_cpus) = if ctx.kind == Kind::Agent {
        (a.opt("memory").and_then(|m| parse_memory(&m)), a.opt("cpu").and_then(|c| parse_cpu(&c)))
    } else {
        (None, None)
    };
    let spec = ContainerSpec {
        hostname: name.clone(),
        name,
        image,
        command,
        env,
        ports,
        volumes,
        healthcheck,
        labels: a.map("labels"),
        network: ctx.network.to_string(),
        memory,
        nano_cpus,
        restart: "unless-stopped".into(),
    };
    if unknown.get() { Ok(None) } else { Ok(Some(spec)) }
}

/// Names of the generated (sensitive or not) computed attributes of a kind.
pub fn generated_attrs(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Database | Kind::Broker => &["admin_password"],
        Kind::ObjectStorage => &["access_key", "secret_key"],
        Kind::Vault => &["access_key", "secret_key", "admin_password"],
        Kind::Agent => &["key"],
        _ => &[],
    }
}

/// The input that, when set, decides a generated attribute (`password` → `admin_password`).
pub fn explicit_input(kind: Kind, attr: &str) -> Option<&'static str> {
    match (kind, attr) {
        (Kind::Database | Kind::Broker, "admin_password") => Some("password"),
        (Kind::Vault, "admin_password") => Some("login_password"),
        _ => None,
    }
}

/// A fresh secret from the OS CSPRNG (UUID v4 = 122 random bits).
pub fn generate_secret(attr: &str) -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    match attr {
        // Access keys: an identifier-looking, shorter value.
        "access_key" => format!("kd{}", &a[..18]),
        _ => {
            let b = uuid::Uuid::new_v4().simple().to_string();
            format!("{a}{}", &b[..8])
        }
    }
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
pub fn derived_attrs(kind: Kind, address: &str, cluster_name: &str, engine_host: &str, attrs: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
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
    match kind {
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
            out.insert("provider".into(), Value::string("minio"));
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn names_are_sanitized_and_prefixed_with_the_cluster() {
        assert_eq!(cluster_name("cluster.edge"), "edge");
        assert_eq!(cluster_name("module.site.cluster.Edge_1"), "site-edge-1");
        assert_eq!(container_name("edge", "agent.cam[\"front\"]"), "kdeploy-edge-agent-cam-front");
        assert_eq!(container_name("edge", "module.site.vault.main"), "kdeploy-edge-site-vault-main");
        assert_eq!(container_name("edge", "agent.cam[\"Yard Cam/2\"]"), "kdeploy-edge-agent-cam-yard-cam-2");
        assert_eq!(volume_name("kdeploy-edge-database-meta", "data"), "kdeploy-edge-database-meta-data");
        assert_eq!(network_name("edge", None), "kdeploy-edge");
        let c = Value::Map(m(&[("network", Value::string("cams"))]));
        assert_eq!(network_name("edge", Some(&c)), "cams");
        assert_eq!(instance_name("agent.cam[\"front\"]"), "front");
        assert_eq!(instance_name("agent.door"), "door");
    }

    #[test]
    fn quantities_and_durations_parse() {
        assert_eq!(parse_memory("512Mi"), Some(512 * 1024 * 1024));
        assert_eq!(parse_memory("1G"), Some(1_000_000_000));
        assert_eq!(parse_cpu("1000m"), Some(1_000_000_000));
        assert_eq!(parse_cpu("0.5"), Some(500_000_000));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("45"), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("5 minutes"), None);
        assert_eq!(engine_hostname("tcp://10.0.0.5:2376"), "10.0.0.5");
        assert_eq!(engine_hostname("unix:///var/run/docker.sock"), "localhost");
    }

    fn agent_attrs(rtsp: &str) -> BTreeMap<String, Value> {
        m(&[
            ("rtsp_url", Value::string(rtsp)),
            ("timezone", Value::string("UTC")),
            ("mqtt_uri", Value::string("")),
            ("turn_uri", Value::string("")),
            ("stun_uri", Value::string("")),
            ("key", Value::string("k1")),
            ("continuous", Value::Bool(false)),
            ("memory", Value::string("512Mi")),
            ("cpu", Value::string("1000m")),
        ])
    }

    fn vault_ref(secret: Value) -> BTreeMap<String, Value> {
        let v = m(&[
            ("endpoint", Value::string("http://kdeploy-edge-vault-main:80/api")),
            ("access_key", Value::string("ak")),
            ("secret_key", secret),
            ("provider", Value::string("minio")),
            ("directory", Value::string("*")),
            ("address", Value::string("vault.main")),
        ]);
        m(&[("vault", Value::Map(v))])
    }

    #[test]
    fn agent_env_is_explicit_and_hash_follows_env() {
        let attrs = agent_attrs("rtsp://10.0.0.1/s1");
        let refs = vault_ref(Value::string("s3cr3t-value"));
        let ctx = RenderCtx { address: "agent.cam[\"front\"]", kind: Kind::Agent, cluster_name: "edge", network: "kdeploy-edge", attrs: &attrs, refs: &refs };
        let spec = render(&ctx).unwrap().unwrap();
        assert_eq!(spec.name, "kdeploy-edge-agent-cam-front");
        assert_eq!(spec.env["AGENT_NAME"], "front");
        assert_eq!(spec.env["AGENT_CLOUD"], "kstorage");
        assert_eq!(spec.env["AGENT_KERBEROSVAULT_URI"], "http://kdeploy-edge-vault-main:80/api");
        assert_eq!(spec.env["AGENT_KERBEROSVAULT_SECRET_KEY"], "s3cr3t-value");
        // Never the public kerberos.io defaults: explicitly empty.
        assert_eq!(spec.env["AGENT_MQTT_URI"], "");
        assert_eq!(spec.env["AGENT_TURN_URI"], "");
        assert_eq!(spec.env["AGENT_STUN_URI"], "");
        assert_eq!(spec.image, AGENT_IMAGE);
        assert_eq!(spec.memory, Some(512 * 1024 * 1024));
        assert!(spec.secret_values().contains(&"s3cr3t-value".to_string()));
        let h1 = spec.hash();
        assert_eq!(h1, render(&ctx).unwrap().unwrap().hash(), "stable");

        let attrs2 = agent_attrs("rtsp://10.0.0.2/s1");
        let ctx2 = RenderCtx { attrs: &attrs2, ..ctx };
        assert_ne!(render(&ctx2).unwrap().unwrap().hash(), h1);
        // A changed vault key rolls the agent too.
        let refs3 = vault_ref(Value::string("other"));
        let ctx3 = RenderCtx { address: "agent.cam[\"front\"]", kind: Kind::Agent, cluster_name: "edge", network: "kdeploy-edge", attrs: &attrs, refs: &refs3 };
        assert_ne!(render(&ctx3).unwrap().unwrap().hash(), h1);
        // Unknown inputs: no hash yet.
        let refs4 = vault_ref(Value::Unknown("vault.main.secret_key".into()));
        let ctx4 = RenderCtx { refs: &refs4, ..ctx3 };
        assert_eq!(render(&ctx4).unwrap(), None);
    }

    #[test]
    fn vault_gets_mongodb_env_from_the_database_reference() {
        let attrs = m(&[
            ("node_port", Value::from_i64(30080)),
            ("login_username", Value::string("root")),
            ("admin_password", Value::string("uipw")),
            ("image", Value::string("busybox:1")),
        ]);
        let db = m(&[("host", Value::string("kdeploy-edge-database-meta")), ("port", Value::from_i64(27017)), ("username", Value::string("root")), ("admin_password", Value::string("dbpw"))]);
        let refs = m(&[("database", Value::Map(db))]);
        let ctx = RenderCtx { address: "vault.main", kind: Kind::Vault, cluster_name: "edge", network: "n", attrs: &attrs, refs: &refs };
        let spec = render(&ctx).unwrap().unwrap();
        assert_eq!(spec.env["MONGODB_HOST"], "kdeploy-edge-database-meta");
        assert_eq!(spec.env["MONGODB_PORT"], "27017");
        assert_eq!(spec.env["MONGODB_PASSWORD"], "dbpw");
        assert_eq!(spec.env["MQTTURI"], "");
        assert_eq!(spec.ports, vec![(80, 30080)]);
        assert_eq!(spec.image, "busybox:1");
        let mut secrets = spec.secret_values();
        secrets.sort();
        assert_eq!(secrets, ["dbpw", "uipw"]);
    }

    #[test]
    fn derived_attributes_and_secrets() {
        let attrs = m(&[("username", Value::string("root")), ("admin_password", Value::string("pw"))]);
        let d = derived_attrs(Kind::Database, "database.meta", "edge", "localhost", &attrs);
        assert_eq!(d["host"], Value::string("kdeploy-edge-database-meta"));
        assert_eq!(d["uri"], Value::string("mongodb://root:pw@kdeploy-edge-database-meta:27017/admin"));
        let unknown = m(&[("admin_password", Value::Unknown("x".into()))]);
        assert!(derived_attrs(Kind::Database, "database.meta", "edge", "localhost", &unknown)["uri"].is_unknown());
        let v = derived_attrs(Kind::Vault, "vault.main", "edge", "10.0.0.5", &m(&[("node_port", Value::from_i64(31000))]));
        assert_eq!(v["url"], Value::string("http://10.0.0.5:31000"));
        let a = generate_secret("secret_key");
        let b = generate_secret("secret_key");
        assert_ne!(a, b);
        assert_eq!(a.len(), 40);
        assert!(check_supported(Kind::Hub, "kerberos", "hub.main").unwrap_err().message.contains("Kubernetes"));
        assert!(check_supported(Kind::Broker, "kafka", "broker.k").is_err());
        assert!(check_supported(Kind::Agent, "kerberos", "agent.a").is_ok());
    }
}

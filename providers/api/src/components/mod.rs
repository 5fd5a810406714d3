//! What each Kerberos component needs to run, written once for every runtime: image pins, the
//! environment (and which of it is secret), ports, the readiness probe, volumes, the user and
//! group, what it waits for, the one-shot steps that complete it (a bucket, a queue) and how
//! long to wait for it. The Docker and Kubernetes providers render a [`Workload`] into
//! containers or objects; neither decides any of this on its own.
//!
//! Names and endpoints are runtime matters (a container name on Docker, a service DNS name on
//! Kubernetes): they arrive as the computed attributes of the component and of the components
//! it references (`host`, `endpoint`, ...), which each runtime fills in.

pub mod kafka;
pub mod mqtt;
pub mod secrets;
pub mod turn;
pub mod vault;

use std::cell::Cell;
use std::collections::BTreeMap;

use crate::attrs::Attrs;
use crate::duration::Duration;
use crate::images;
use crate::provider::{ComponentRef, Reference};
use crate::schema::Kind;
use crate::value::Value;

/// One environment variable. Secret ones go into a Kubernetes Secret (Docker has only the
/// container environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
    pub secret: bool,
}

/// A container port, optionally published: the NodePort on Kubernetes, the host port on Docker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// Unique among the workload's ports (Kubernetes: at most 15 characters).
    pub name: String,
    pub port: u16,
    pub published: Option<u16>,
    pub protocol: Protocol,
}

impl Port {
    /// A TCP port.
    pub fn tcp(name: &str, port: u16, published: Option<u16>) -> Port {
        Port { name: name.into(), port, published, protocol: Protocol::Tcp }
    }

    /// A UDP port.
    pub fn udp(name: &str, port: u16, published: Option<u16>) -> Port {
        Port { name: name.into(), port, published, protocol: Protocol::Udp }
    }
}

/// The transport of a [`Port`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// As Kubernetes spells it (`TCP`, `UDP`).
    pub fn kubernetes(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }

    /// As Docker spells it in `3478/udp`.
    pub fn docker(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// How readiness is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// An HTTP GET answering 2xx. Runtimes without HTTP probes (Docker) run `command` inside
    /// the container, or `wget`/`curl` against the path when it is None.
    Http { path: String, port: u16, command: Option<Vec<String>> },
    /// A command inside the container that exits 0 when ready.
    Exec(Vec<String>),
}

impl Probe {
    /// The probe as a command run inside the container.
    pub fn as_command(&self) -> Vec<String> {
        match self {
            Probe::Exec(argv) => argv.clone(),
            Probe::Http { command: Some(c), .. } => c.clone(),
            Probe::Http { path, port, command: None } => {
                let url = format!("http://127.0.0.1:{port}{path}");
                vec!["/bin/sh".into(), "-c".into(), format!("wget -q -O /dev/null {url} || curl -fsS -o /dev/null {url}")]
            }
        }
    }

    pub const PERIOD_SECS: u32 = 5;
}

/// What a client (an agent) connects to a served component with: an MQTT broker, a TURN server.
#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    pub uri: String,
    pub username: String,
    pub password: String,
}

/// A volume mounted into the container. Several mounts of one volume use sub-paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The volume's name within the component (`data`).
    pub volume: &'static str,
    pub path: String,
    pub sub_path: Option<&'static str>,
    /// Requested size (Kubernetes quantity, e.g. `8Gi`).
    pub size: String,
}

impl Mount {
    /// The name of the volume a runtime without sub-paths (Docker) uses for this mount.
    pub fn volume_suffix(&self) -> &'static str {
        self.sub_path.unwrap_or(self.volume)
    }
}

/// Where a mounted file's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    /// Written by kdeploy (kept in a Secret on Kubernetes).
    Inline(String),
    /// An existing Kubernetes Secret's key (Kubernetes only).
    Secret { name: String, key: String },
}

/// A file placed into the container before it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: String,
    pub source: FileSource,
}

/// Who the main process runs as. None keeps the image's user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    pub run_as_user: Option<i64>,
    /// A supplemental group of the process that owns the volumes (group-writable).
    pub fs_group: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub cpu: String,
    pub memory: String,
}

/// A one-shot container run to completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: &'static str,
    pub image: String,
    pub command: Vec<String>,
    pub env: Vec<EnvVar>,
    pub run_as_root: bool,
    pub mounts: Vec<Mount>,
}

/// How the workload is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    /// One replica with stable storage (a StatefulSet; a container with named volumes).
    Stateful,
    /// One replica, replaced (not rolled) when its pod changes.
    Recreate,
    /// One replica, rolled.
    Rolling,
}

/// Everything a runtime needs to run one component.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// The container's name inside its pod.
    pub container: &'static str,
    pub image: String,
    /// Arguments after the image's entrypoint (`command` attribute overrides them).
    pub args: Option<Vec<String>>,
    pub env: Vec<EnvVar>,
    pub ports: Vec<Port>,
    pub probe: Option<Probe>,
    pub mounts: Vec<Mount>,
    pub files: Vec<File>,
    pub security: Security,
    pub resources: Option<Resources>,
    /// TCP endpoints that must answer before the container starts. Kubernetes renders an init
    /// container; Docker starts components in dependency order and waits for their health, so
    /// there the wait is already met.
    pub waits: Vec<(String, u16)>,
    /// Prepares volumes before the container starts. Only Kubernetes needs it: Docker fills a
    /// new named volume from the image.
    pub seed: Vec<Step>,
    /// Run once the container is ready (create the bucket, declare the queue), on every runtime.
    pub jobs: Vec<Step>,
    pub controller: Controller,
    pub min_ready_seconds: u32,
    pub readiness_timeout: Duration,
    /// `NodePort`, `LoadBalancer` or `ClusterIP` (Kubernetes); Docker publishes `published` ports.
    pub service_type: String,
    /// Other components connect to it (a Kubernetes Service; on Docker its container name).
    pub serves: bool,
}

impl Workload {
    pub fn env_value(&self, name: &str) -> Option<&str> {
        self.env.iter().find(|e| e.name == name).map(|e| e.value.as_str())
    }

    /// Every secret value, to redact from messages.
    pub fn secret_values(&self) -> Vec<String> {
        self.env.iter().chain(self.jobs.iter().flat_map(|j| j.env.iter())).filter(|e| e.secret && e.value.len() >= 4).map(|e| e.value.clone()).collect()
    }
}

pub use vault::Problem;

/// A component's own rules on its desired inputs (component references are addresses) and on
/// what it references (`referenced`: attribute → the referenced component's attributes), so
/// that `validate` reports mistakes with their location: a vault's provider, queue and account
/// names, the account an agent uploads with.
pub fn check(kind: Kind, inputs: &Attrs, referenced: &BTreeMap<String, &Attrs>, cluster_type: Option<&str>) -> Vec<Problem> {
    match kind {
        Kind::Vault => {
            let mut out = vault::check(inputs, referenced.get("broker").copied());
            out.extend(mqtt::check_agent(inputs, referenced.get("mqtt").copied()));
            out.extend(ingress_on_docker(inputs, cluster_type));
            out
        }
        Kind::Hub => mqtt::check_agent(inputs, referenced.get("mqtt").copied()),
        Kind::Agent => {
            let mut out = referenced.get("vault").map(|v| vault::check_agent(inputs, v)).unwrap_or_default();
            out.extend(mqtt::check_agent(inputs, referenced.get("mqtt").copied()));
            out.extend(turn::check_agent(inputs));
            out
        }
        Kind::Turn => turn::check(inputs, cluster_type),
        _ => Vec::new(),
    }
}

/// The Ingress attributes are Kubernetes': on a Docker cluster nothing would read them, and the
/// external URL would not be the host they name.
fn ingress_on_docker(inputs: &Attrs, cluster_type: Option<&str>) -> Vec<Problem> {
    if cluster_type != Some("docker") {
        return Vec::new();
    }
    ["ingress_host", "ingress_class", "ingress_tls_secret", "cert_issuer"]
        .iter()
        .filter(|k| inputs.get(**k).and_then(Value::as_str).is_some_and(|v| !v.is_empty()))
        .map(|k| Problem {
            path: crate::value::AttrPath::attr(k),
            message: format!("{k} configures a Kubernetes Ingress, but this component runs on a Docker cluster, which has none."),
            hint: "remove it: on Docker the component is reached on its published node_port (external_url http://HOST:node_port); put a reverse proxy of your own in front for a host name, or run it on a Kubernetes cluster".into(),
        })
        .collect()
}

type UploadOf = fn(&Attrs, &Attrs, &str) -> Result<vault::Upload, vault::Unresolved>;

/// The folder a component uploads under in its `vault` (`upload` finds the account), set as
/// `attr`: unknown while the account is, nothing without a vault.
fn upload_folder(component: &ComponentRef, attrs: &mut Attrs, refs: &BTreeMap<String, Reference>, attr: &str, upload: UploadOf) -> Result<(), String> {
    let Some(v) = refs.get("vault") else { return Ok(()) };
    let none = Attrs::new();
    let folder = match upload(attrs, v.attributes.as_map().unwrap_or(&none), &v.component.address.to_string()) {
        Ok(up) => Value::String(up.directory),
        Err(vault::Unresolved::Unknown) => Value::Unknown(format!("{}.{attr}", component.address)),
        Err(vault::Unresolved::Invalid(m)) => return Err(format!("{}: {m}.", component.address)),
    };
    attrs.insert(attr.into(), folder);
    Ok(())
}

/// Computed attributes every runtime derives the same way, after its own (names, endpoints)
/// and the generated secrets: a vault's `vault_configuration`, an agent's `upload_directory`,
/// a hub's `hub_username`.
/// Unknown while something they need is; an error when the stack is wrong.
pub fn fill_derived(component: &ComponentRef, attrs: &mut Attrs, refs: &BTreeMap<String, Reference>) -> Result<(), String> {
    let unknown = |attr: &str| Value::Unknown(format!("{}.{attr}", component.address));
    match component.kind {
        Kind::Vault => {
            let v = match vault::resolve(attrs, refs) {
                Ok(config) => config.to_value(),
                Err(vault::Unresolved::Unknown) => unknown(vault::CONFIG_ATTR),
                Err(vault::Unresolved::Invalid(m)) => return Err(format!("{}: {m}.", component.address)),
            };
            attrs.insert(vault::CONFIG_ATTR.into(), v);
        }
        Kind::Agent => upload_folder(component, attrs, refs, "upload_directory", vault::upload_for)?,
        Kind::Hub => upload_folder(component, attrs, refs, "hub_username", vault::hub_upload)?,
        _ => {}
    }
    Ok(())
}

/// What building a workload reads.
pub struct Spec<'a> {
    pub component: &'a ComponentRef,
    /// Inputs and computed attributes.
    pub attrs: &'a Attrs,
    pub refs: &'a BTreeMap<String, Reference>,
    /// The Kubernetes namespace, where the component needs to know it (Factory).
    pub namespace: Option<&'a str>,
}

/// Why a workload cannot be built.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkloadError {
    /// A value it needs is known only after apply.
    Unknown,
    /// The stack is wrong (or asks for something this runtime cannot do); the message says what.
    Invalid(String),
}

/// The default readiness timeout.
pub const DEFAULT_READINESS_TIMEOUT: Duration = Duration::from_secs(300);

/// The default supplemental group for agent volumes: the `kerberosio` group of the Alpine-based
/// agent images (gid 101). Any gid works for images whose user differs: the volume is made
/// group-writable and the process gets the group.
pub const AGENT_FS_GROUP: i64 = 101;

/// Reads attributes, remembering whether anything needed was unknown.
struct Get<'a> {
    m: &'a Attrs,
    unknown: &'a Cell<bool>,
}

impl<'a> Get<'a> {
    fn of(v: Option<&'a Value>, unknown: &'a Cell<bool>) -> Get<'a> {
        static EMPTY: std::sync::OnceLock<Attrs> = std::sync::OnceLock::new();
        match v {
            Some(Value::Map(m)) => Get { m, unknown },
            Some(Value::Unknown(_)) => {
                unknown.set(true);
                Get { m: EMPTY.get_or_init(Attrs::new), unknown }
            }
            _ => Get { m: EMPTY.get_or_init(Attrs::new), unknown },
        }
    }
    fn value(&self, k: &str) -> Option<&'a Value> {
        match self.m.get(k) {
            Some(Value::Unknown(_)) => {
                self.unknown.set(true);
                None
            }
            other => other,
        }
    }
    fn opt(&self, k: &str) -> Option<String> {
        match self.value(k)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    fn s(&self, k: &str) -> String {
        self.opt(k).unwrap_or_default()
    }
    fn b(&self, k: &str) -> bool {
        matches!(self.value(k), Some(Value::Bool(true))) || matches!(self.value(k), Some(Value::String(s)) if s == "true")
    }
    fn n(&self, k: &str) -> Option<i64> {
        self.value(k).and_then(Value::as_i64)
    }
    fn list(&self, k: &str) -> Option<Vec<String>> {
        let l = self.value(k)?.as_list()?;
        Some(
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
        )
    }
    fn map(&self, k: &str) -> Vec<(String, String)> {
        match self.value(k) {
            Some(Value::Map(m)) => m
                .iter()
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
            _ => Vec::new(),
        }
    }
}

fn plain(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: value.into(), secret: false }
}

fn secret(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: value.into(), secret: true }
}

/// Parses a `readiness_timeout`-like attribute (validated by the language already).
pub fn readiness_timeout(attrs: &Attrs) -> Duration {
    attrs.get("readiness_timeout").and_then(Value::as_str).and_then(|s| Duration::parse(s).ok()).unwrap_or(DEFAULT_READINESS_TIMEOUT)
}

/// A user-given health check in Docker's form (`["CMD", ...]`, `["CMD-SHELL", "..."]`) as argv.
fn healthcheck_argv(words: Vec<String>) -> Vec<String> {
    match words.first().map(String::as_str) {
        Some("CMD") => words[1..].to_vec(),
        Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), words[1..].join(" ")],
        _ => words,
    }
}

fn port(v: Option<i64>, what: &str, address: &str) -> Result<Option<u16>, WorkloadError> {
    match v {
        None => Ok(None),
        Some(p) => u16::try_from(p)
            .ok()
            .filter(|p| *p > 0)
            .map(Some)
            .ok_or_else(|| WorkloadError::Invalid(format!("{address}: {what} {p} is not a valid port (1-65535)."))),
    }
}

/// The host of a `mongodb://` or `mongodb+srv://` URI and whether a TCP wait on it makes sense
/// (an SRV host has only SRV records: a wait on it would never succeed).
pub fn mongodb_wait_target(uri: &str) -> Option<(String, u16)> {
    if uri.starts_with("mongodb+srv://") {
        return None;
    }
    let rest = uri.split_once("://").map(|(_, r)| r).unwrap_or(uri);
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    let hosts = rest.split(['/', '?']).next().unwrap_or_default();
    let first = hosts.split(',').next().unwrap_or_default();
    if first.is_empty() {
        return None;
    }
    match first.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((first.to_string(), 27017)),
    }
}

/// Builds the workload of a component. `Err(Unknown)` while a value it needs is known only
/// after apply.
/// Where a running container keeps the generated secrets (passwords, keys) of a component that
/// `attrs` does not have yet: the container's name and, per generated attribute, the
/// environment variable holding it. An import reads them there instead of generating new ones,
/// since the data and the clients were set up with them. Found by rendering the workload with a
/// marker in each secret's place (`spec.attrs` has everything else filled in, as for rendering).
pub fn secret_variables(spec: &Spec<'_>, known: &Attrs) -> (&'static str, Vec<(&'static str, String)>) {
    let c = spec.component;
    let marker = |attr: &str| format!("kdeploy-import-{attr}");
    let wanted: Vec<&'static str> = secrets::generated(c.kind, &c.type_name).iter().map(|g| g.attr).filter(|a| !known.contains_key(*a)).collect();
    let mut probe = spec.attrs.clone();
    for attr in &wanted {
        probe.insert(attr.to_string(), Value::String(marker(attr)));
    }
    let Ok(w) = workload(&Spec { attrs: &probe, ..*spec }) else { return ("", Vec::new()) };
    let vars = w.env.iter().filter_map(|e| wanted.iter().find(|a| e.value == marker(a)).map(|a| (*a, e.name.clone()))).collect();
    (w.container, vars)
}

pub fn workload(spec: &Spec<'_>) -> Result<Workload, WorkloadError> {
    let unknown = Cell::new(false);
    let a = Get { m: spec.attrs, unknown: &unknown };
    let address = &spec.component.address.to_string();
    let mut w = match (spec.component.kind, spec.component.type_name.as_str()) {
        (Kind::Database, "mongodb") => mongodb(&a),
        (Kind::ObjectStorage, "minio") => minio(&a),
        (Kind::Broker, "rabbitmq") => rabbitmq(&a),
        (Kind::Broker, "kafka") => kafka::kafka(&a, spec.component)?,
        (Kind::Broker, "mosquitto") => mqtt::mosquitto(&a, address)?,
        (Kind::Broker, "vernemq") => mqtt::vernemq(&a, address)?,
        (Kind::Turn, "coturn") => turn::coturn(&a, address)?,
        (Kind::Vault, _) => vault_workload(spec, &a, &unknown)?,
        (Kind::Agent, _) => agent(spec, &a, &unknown)?,
        (Kind::Factory, _) => factory(spec, &a),
        (kind, t) => return Err(WorkloadError::Invalid(format!("{address}: a {kind} of type {t:?} does not run as a container in this kdeploy version."))),
    };
    if let Some(image) = a.opt("image") {
        w.image = image;
    }
    if let Some(args) = a.list("command") {
        w.args = Some(args);
    }
    if let Some(check) = a.list("healthcheck").filter(|c| !c.is_empty()) {
        w.probe = Some(Probe::Exec(healthcheck_argv(check)));
    }
    // `Some(0)`: the port published on the component's `node_port`.
    for p in &mut w.ports {
        if p.published == Some(0) {
            p.published = port(a.n("node_port"), "node_port", address)?;
        }
    }
    for step in &mut w.seed {
        if step.image.is_empty() {
            step.image = w.image.clone();
        }
    }
    w.readiness_timeout = readiness_timeout(spec.attrs);
    if unknown.get() {
        return Err(WorkloadError::Unknown);
    }
    Ok(w)
}

fn base(container: &'static str, image: String) -> Workload {
    Workload {
        container,
        image,
        args: None,
        env: Vec::new(),
        ports: Vec::new(),
        probe: None,
        mounts: Vec::new(),
        files: Vec::new(),
        security: Security::default(),
        resources: None,
        waits: Vec::new(),
        seed: Vec::new(),
        jobs: Vec::new(),
        controller: Controller::Rolling,
        min_ready_seconds: 0,
        readiness_timeout: DEFAULT_READINESS_TIMEOUT,
        service_type: "ClusterIP".into(),
        serves: true,
    }
}

fn versioned(a: &Get<'_>, repo: &str, pinned: &str) -> String {
    match a.opt("version") {
        Some(v) => format!("{repo}:{v}"),
        None => pinned.to_string(),
    }
}

fn mongodb(a: &Get<'_>) -> Workload {
    let mut w = base("mongodb", versioned(a, "mongo", images::MONGODB));
    w.env = vec![plain("MONGO_INITDB_ROOT_USERNAME", a.s("username")), secret("MONGO_INITDB_ROOT_PASSWORD", a.s("admin_password"))];
    w.ports = vec![Port::tcp("mongodb", 27017, None)];
    w.probe = Some(Probe::Exec(vec!["mongosh".into(), "--quiet".into(), "--eval".into(), "db.adminCommand('ping').ok".into()]));
    w.mounts = vec![Mount { volume: "data", path: "/data/db".into(), sub_path: None, size: a.s("storage_size") }];
    w.controller = Controller::Stateful;
    w
}

fn minio(a: &Get<'_>) -> Workload {
    let mut w = base("minio", images::MINIO.to_string());
    let creds = vec![secret("MINIO_ROOT_USER", a.s("access_key")), secret("MINIO_ROOT_PASSWORD", a.s("secret_key"))];
    w.env = creds.clone();
    w.env.push(plain("MINIO_REGION", a.s("region")));
    w.args = Some(vec!["server".into(), "/data".into(), "--console-address".into(), ":9090".into()]);
    w.ports = vec![Port::tcp("api", 9000, None), Port::tcp("console", 9090, None)];
    w.probe = Some(Probe::Http { path: "/minio/health/ready".into(), port: 9000, command: Some(vec!["mc".into(), "ready".into(), "local".into()]) });
    w.mounts = vec![Mount { volume: "data", path: "/data".into(), sub_path: None, size: a.s("size") }];
    w.controller = Controller::Stateful;
    let endpoint = a.s("endpoint");
    let bucket = a.s("bucket");
    w.jobs = vec![Step {
        name: "create-bucket",
        image: a.opt("client_image").unwrap_or_else(|| images::MINIO_CLIENT.to_string()),
        command: vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("mc alias set local http://{endpoint} \"$MINIO_ROOT_USER\" \"$MINIO_ROOT_PASSWORD\" && mc mb --ignore-existing local/{bucket}"),
        ],
        env: creds,
        run_as_root: false,
        mounts: Vec::new(),
    }];
    w
}

fn rabbitmq(a: &Get<'_>) -> Workload {
    let image = versioned(a, "rabbitmq", images::RABBITMQ);
    let mut w = base("rabbitmq", image.clone());
    let creds = vec![plain("RABBITMQ_DEFAULT_USER", a.s("username")), secret("RABBITMQ_DEFAULT_PASS", a.s("admin_password"))];
    w.env = creds.clone();
    w.ports = vec![Port::tcp("amqp", 5672, None), Port::tcp("management", 15672, None)];
    w.probe = Some(Probe::Exec(vec!["rabbitmq-diagnostics".into(), "-q".into(), "ping".into()]));
    w.mounts = vec![Mount { volume: "data", path: "/var/lib/rabbitmq".into(), sub_path: None, size: a.s("storage_size") }];
    w.controller = Controller::Stateful;
    let host = a.s("host");
    let queue = a.s("queue");
    w.jobs = vec![Step {
        name: "declare-queue",
        image: a.opt("image").unwrap_or(image),
        command: vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("rabbitmqadmin -H {host} -u \"$RABBITMQ_DEFAULT_USER\" -p \"$RABBITMQ_DEFAULT_PASS\" declare queue name={queue} durable=true"),
        ],
        env: creds,
        run_as_root: false,
        mounts: Vec::new(),
    }];
    w
}

/// The MongoDB settings of Vault (and later Hub): a MongoDB kdeploy runs, or an external one
/// (MongoDB, DocumentDB or Atlas) with its TLS settings (`shared/docs/vault-config.md` §4).
fn mongodb_env(db: &Reference, unknown: &Cell<bool>) -> (Vec<EnvVar>, Vec<File>, Vec<(String, u16)>) {
    let d = Get::of(Some(&db.attributes), unknown);
    let mut env = Vec::new();
    let mut files = Vec::new();
    let mut waits = Vec::new();
    if db.component.type_name == "external" {
        let uri = d.s("uri");
        env.push(secret("MONGODB_URI", uri.clone()));
        let flavor = d.opt("flavor").unwrap_or_else(|| "mongodb".into());
        let documentdb = flavor == "documentdb";
        env.push(plain("MONGODB_FLAVOR", flavor));
        let retry = match d.value("retry_writes") {
            Some(Value::Bool(b)) => Some(*b),
            _ => documentdb.then_some(false),
        };
        if let Some(r) = retry {
            env.push(plain("MONGODB_RETRY_WRITES", r.to_string()));
        }
        let ca = d.opt("tls_ca");
        let ca_secret = d.opt("tls_ca_secret");
        let tls = match d.value("tls") {
            Some(Value::Bool(b)) => *b,
            _ => documentdb || ca.is_some() || ca_secret.is_some(),
        };
        env.push(plain("MONGODB_TLS", tls.to_string()));
        if d.b("tls_insecure_skip_verify") {
            env.push(plain("MONGODB_TLS_INSECURE_SKIP_VERIFY", "true"));
        }
        let ca_path = "/certs/ca.pem";
        if let Some(pem) = ca {
            files.push(File { path: ca_path.into(), source: FileSource::Inline(pem) });
            env.push(plain("MONGODB_TLS_CA_FILE", ca_path));
        } else if let Some(name) = ca_secret {
            let key = d.opt("tls_ca_secret_key").unwrap_or_else(|| "ca.pem".into());
            files.push(File { path: ca_path.into(), source: FileSource::Secret { name, key } });
            env.push(plain("MONGODB_TLS_CA_FILE", ca_path));
        }
        waits.extend(mongodb_wait_target(&uri));
    } else {
        let host = d.s("host");
        let port = d.n("port").unwrap_or(27017);
        env.push(plain("MONGODB_HOST", host.clone()));
        env.push(plain("MONGODB_PORT", port.to_string()));
        env.push(plain("MONGODB_USERNAME", d.s("username")));
        env.push(secret("MONGODB_PASSWORD", d.s("admin_password")));
        env.push(plain("MONGODB_DATABASE_CREDENTIALS", "admin"));
        if !host.is_empty() {
            waits.push((host, u16::try_from(port).unwrap_or(27017)));
        }
    }
    (env, files, waits)
}

fn vault_workload(spec: &Spec<'_>, a: &Get<'_>, unknown: &Cell<bool>) -> Result<Workload, WorkloadError> {
    let mut w = base("vault", images::VAULT.to_string());
    let mut env =
        vec![plain("GIN_MODE", "release"), plain("KERBEROS_LOGIN_USERNAME", a.s("login_username")), secret("KERBEROS_LOGIN_PASSWORD", a.s("admin_password"))];
    if let Some(db) = spec.refs.get("database") {
        let (db_env, files, waits) = mongodb_env(db, unknown);
        env.extend(db_env);
        w.files = files;
        w.waits = waits;
    }
    env.push(plain("MONGODB_DATABASE_STORAGE", "KerberosStorage"));
    // Explicit, so that the image's public MQTT default is never used.
    let mqtt = match spec.refs.get("mqtt") {
        Some(broker) => match mqtt::client(spec.attrs.get("cluster"), broker) {
            Ok(c) => c,
            Err(vault::Unresolved::Unknown) => {
                unknown.set(true);
                Client { uri: String::new(), username: String::new(), password: String::new() }
            }
            Err(vault::Unresolved::Invalid(m)) => return Err(WorkloadError::Invalid(format!("{}: {m}.", spec.component.address))),
        },
        None => Client { uri: a.s("mqtt_uri"), username: String::new(), password: String::new() },
    };
    env.push(plain("MQTTURI", mqtt.uri));
    env.push(plain("MQTT_USERNAME", mqtt.username));
    // A password only with a broker: the variable stays plain (unchanged) without one.
    env.push(if mqtt.password.is_empty() { plain("MQTT_PASSWORD", "") } else { secret("MQTT_PASSWORD", mqtt.password) });
    let forwards = matches!(spec.attrs.get("forwards"), Some(Value::Map(m)) if !m.is_empty());
    env.push(plain("CONTINUOUS_FORWARDING", forwards.to_string()));
    match vault::resolve(spec.attrs, spec.refs) {
        Ok(config) => env.extend(config.env().into_iter().map(|(k, v)| secret(k, v))),
        Err(vault::Unresolved::Unknown) => unknown.set(true),
        Err(vault::Unresolved::Invalid(m)) => return Err(WorkloadError::Invalid(format!("{}: {m}.", spec.component.address))),
    }
    w.env = env;
    let service_type = a.opt("service_type").unwrap_or_else(|| "NodePort".into());
    w.ports = vec![Port::tcp("http", 80, Some(0))];
    w.service_type = service_type;
    w.probe = Some(Probe::Http { path: "/api/health".into(), port: 80, command: None });
    w.resources = Some(Resources { cpu: "1000m".into(), memory: "512Mi".into() });
    w.min_ready_seconds = 10;
    w.controller = Controller::Rolling;
    Ok(w)
}

/// Where an agent uploads: Vault's in-cluster endpoint on the same cluster, its external URL
/// from another cluster (the agents of a site next to their cameras, Vault central).
fn upload_endpoint(spec: &Spec<'_>, vault: &Reference, unknown: &Cell<bool>) -> Result<String, WorkloadError> {
    match vault::reach(spec.attrs.get("cluster"), vault) {
        Ok(Value::String(url)) => Ok(url),
        Ok(_) => {
            unknown.set(true);
            Ok(String::new())
        }
        Err(there) => Err(WorkloadError::Invalid(format!(
            "{} runs on {} and uploads to {}, which runs on {there} and is not exposed outside it: set service_type = \"NodePort\" or \"LoadBalancer\" on {} (a Docker cluster publishes its node_port on the host), or run both on one cluster",
            spec.component.address,
            spec.attrs.get("cluster").and_then(Value::as_str).unwrap_or_default(),
            vault.component.address,
            vault.component.address
        ))),
    }
}

fn agent(spec: &Spec<'_>, a: &Get<'_>, unknown: &Cell<bool>) -> Result<Workload, WorkloadError> {
    let mut w = base("agent", images::AGENT.to_string());
    let address = &spec.component.address.to_string();
    let name = a.opt("camera_name").unwrap_or_else(|| spec.component.address.instance_name());
    let mut env = vec![
        plain("AGENT_NAME", name),
        plain("AGENT_KEY", a.s("key")),
        plain("AGENT_USERNAME", a.s("login_username")),
        secret("AGENT_PASSWORD", a.s("admin_password")),
        secret("AGENT_CAPTURE_IPCAMERA_RTSP", a.s("rtsp_url")),
        secret("AGENT_CAPTURE_IPCAMERA_SUB_RTSP", a.s("sub_rtsp_url")),
        plain("AGENT_CAPTURE_CONTINUOUS", a.b("continuous").to_string()),
        plain("AGENT_TIMEZONE", a.s("timezone")),
        plain("AGENT_CLOUD", "kstorage"),
    ];
    match spec.refs.get("vault") {
        Some(v) => {
            let none = Attrs::new();
            let vault_attrs = v.attributes.as_map().unwrap_or(&none);
            let endpoint = upload_endpoint(spec, v, unknown)?;
            match vault::upload_for(spec.attrs, vault_attrs, &v.component.address.to_string()) {
                Ok(up) => {
                    let key = |v: &Value| match v {
                        Value::String(s) => s.clone(),
                        _ => {
                            unknown.set(true);
                            String::new()
                        }
                    };
                    env.push(plain("AGENT_KERBEROSVAULT_URI", endpoint));
                    env.push(secret("AGENT_KERBEROSVAULT_ACCESS_KEY", key(&up.access_key)));
                    env.push(secret("AGENT_KERBEROSVAULT_SECRET_KEY", key(&up.secret_key)));
                    env.push(plain("AGENT_KERBEROSVAULT_PROVIDER", up.provider));
                    env.push(plain("AGENT_KERBEROSVAULT_DIRECTORY", up.directory));
                }
                Err(vault::Unresolved::Unknown) => unknown.set(true),
                Err(vault::Unresolved::Invalid(m)) => return Err(WorkloadError::Invalid(format!("{address}: {m}."))),
            }
        }
        None => return Err(WorkloadError::Invalid(format!("{address}: an agent needs vault = vault.NAME."))),
    }
    let resolved = |r: Result<Client, vault::Unresolved>| match r {
        Ok(c) => Ok(Some(c)),
        Err(vault::Unresolved::Unknown) => {
            unknown.set(true);
            Ok(None)
        }
        Err(vault::Unresolved::Invalid(m)) => Err(WorkloadError::Invalid(format!("{address}: {m}."))),
    };
    let from = spec.attrs.get("cluster");
    let broker = match spec.refs.get("mqtt") {
        Some(b) => resolved(mqtt::client(from, b))?,
        None => None,
    };
    let relay = match spec.refs.get("turn") {
        Some(t) => resolved(turn::client(from, t))?,
        None => None,
    };
    // Explicit, so that the image's public defaults (mqtt.kerberos.io, turn-fra1) are never used.
    for (var, attr, is_secret) in [
        ("AGENT_MQTT_URI", "mqtt_uri", false),
        ("AGENT_MQTT_USERNAME", "mqtt_username", false),
        ("AGENT_MQTT_PASSWORD", "mqtt_password", true),
        ("AGENT_TURN_URI", "turn_uri", false),
        ("AGENT_TURN_USERNAME", "turn_username", false),
        ("AGENT_TURN_PASSWORD", "turn_password", true),
        ("AGENT_STUN_URI", "stun_uri", false),
        ("AGENT_HUB_URI", "hub_uri", false),
        ("AGENT_HUB_KEY", "hub_key", false),
        ("AGENT_HUB_PRIVATE_KEY", "hub_private_key", true),
    ] {
        env.push(EnvVar { name: var.into(), value: a.s(attr), secret: is_secret });
    }
    // A referenced broker or TURN server takes the place of the explicit settings.
    for (given, prefix) in [(broker, "AGENT_MQTT"), (relay, "AGENT_TURN")] {
        let Some(c) = given else { continue };
        for (suffix, value) in [("URI", c.uri), ("USERNAME", c.username), ("PASSWORD", c.password)] {
            if let Some(e) = env.iter_mut().find(|e| e.name == format!("{prefix}_{suffix}")) {
                e.value = value;
            }
        }
    }
    for (k, v) in a.map("env") {
        env.retain(|e| e.name != k);
        env.push(plain(&k, v));
    }
    w.env = env;
    w.ports = vec![Port::tcp("http", 80, None)];
    w.probe = Some(Probe::Http { path: "/".into(), port: 80, command: None });
    w.resources = Some(Resources { cpu: a.opt("cpu").unwrap_or_else(|| "1000m".into()), memory: a.opt("memory").unwrap_or_else(|| "512Mi".into()) });
    w.controller = Controller::Recreate;
    // Nothing connects to an agent: it uploads to Vault and publishes to MQTT.
    w.serves = false;
    w.security = Security { run_as_user: a.n("run_as_user"), fs_group: Some(a.n("fs_group").unwrap_or(AGENT_FS_GROUP)) };
    if a.b("persistence") {
        let size = a.s("storage_size");
        let data = |path: &str, sub: &'static str| Mount { volume: "data", path: path.into(), sub_path: Some(sub), size: size.clone() };
        w.mounts = vec![data("/home/agent/data/config", "config"), data("/home/agent/data/recordings", "recordings")];
        let group = w.security.fs_group.unwrap_or(AGENT_FS_GROUP);
        let owner = match w.security.run_as_user {
            Some(u) => format!(" && chown -R {u} /seed"),
            None => String::new(),
        };
        // An empty config volume needs the template config (kerberos-io/agent#44, #80, #94),
        // writable by the agent's group whatever the image's user is.
        w.seed = vec![Step {
            name: "seed-config",
            image: String::new(),
            command: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!(
                    "mkdir -p /seed/config /seed/recordings && ([ -f /seed/config/config.json ] || cp /home/agent/data/config.template.json /seed/config/config.json) && chgrp -R {group} /seed && chmod -R g+rwX /seed{owner}"
                ),
            ],
            env: Vec::new(),
            run_as_root: true,
            mounts: vec![Mount { volume: "data", path: "/seed".into(), sub_path: None, size }],
        }];
    }
    Ok(w)
}

fn factory(spec: &Spec<'_>, a: &Get<'_>) -> Workload {
    let mut w = base("factory", images::FACTORY.to_string());
    w.env = vec![
        plain("GIN_MODE", "release"),
        plain("KERBEROS_LOGIN_USERNAME", "root"),
        secret("KERBEROS_LOGIN_PASSWORD", a.s("admin_password")),
        plain("KERBEROS_AGENT_IMAGE", a.opt("agent_image").unwrap_or_else(|| images::AGENT.to_string())),
        plain("KERBEROS_AGENT_MEMORY_LIMIT", "256Mi"),
        plain("NAMESPACE", spec.namespace.unwrap_or_default()),
        plain("FACTORY_CONFIGURATION", "configmap"),
        plain("FACTORY_ENGINE", "kubernetes"),
        plain("FACTORY_ENVIRONMENT", "kubernetes"),
        plain("K8S_PROXY", "http://localhost:80"),
    ];
    w.ports = vec![Port::tcp("http", 80, Some(0))];
    w.service_type = a.opt("service_type").unwrap_or_else(|| "NodePort".into());
    w.resources = Some(Resources { cpu: "500m".into(), memory: "256Mi".into() });
    w
}

#[cfg(test)]
mod tests;

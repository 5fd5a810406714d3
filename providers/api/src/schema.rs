//! Component kinds, their implementations (`type = ...`) and the typed attribute schemas that
//! the language checks a component block against.
//!
//! The schemas are the single source of truth for which attributes exist, which are required,
//! which are sensitive, which force a replacement when they change, and which are only known
//! after apply (computed by the provider).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::value::Value;

/// The component kinds a stack can declare, one block keyword each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Cluster,
    ObjectStorage,
    Database,
    Broker,
    /// A TURN server for the WebRTC live view of agents and Hub.
    Turn,
    Vault,
    Agent,
    Hub,
    Factory,
    /// A scheduled in-cluster `kdeploy drift` run (a CronJob with read-only access).
    DriftSchedule,
    /// A Helm chart rendered by `helm template`, its objects applied by kdeploy.
    Chart,
    /// A data source (`data "kubernetes_secret" "NAME" { ... }`): a value read from an object
    /// kdeploy does not manage, at plan (or at apply when its cluster is created then). Its
    /// address is `data.TYPE.NAME`; the block's two labels are kept as the name `TYPE.NAME`.
    Data,
}

/// The data source types (`data "TYPE" "NAME"`), in documentation order.
pub const DATA_TYPES: [&str; 2] = ["kubernetes_secret", "docker_container_env"];

impl Kind {
    pub const ALL: [Kind; 12] = [
        Kind::Cluster,
        Kind::ObjectStorage,
        Kind::Database,
        Kind::Broker,
        Kind::Turn,
        Kind::Vault,
        Kind::Agent,
        Kind::Hub,
        Kind::Factory,
        Kind::DriftSchedule,
        Kind::Chart,
        Kind::Data,
    ];

    /// The block keyword, which is also the first part of the component's address.
    pub fn keyword(self) -> &'static str {
        match self {
            Kind::Cluster => "cluster",
            Kind::ObjectStorage => "object_storage",
            Kind::Database => "database",
            Kind::Broker => "broker",
            Kind::Turn => "turn",
            Kind::Vault => "vault",
            Kind::Agent => "agent",
            Kind::Hub => "hub",
            Kind::Factory => "factory",
            Kind::DriftSchedule => "drift_schedule",
            Kind::Chart => "chart",
            Kind::Data => "data",
        }
    }

    pub fn from_keyword(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.keyword() == s)
    }

    /// The implementations a `type` attribute may select, in documentation order.
    pub fn types(self) -> &'static [&'static str] {
        match self {
            Kind::Cluster => &["docker", "microk8s", "kubernetes", "eks", "aks", "gke"],
            Kind::ObjectStorage => &["minio", "s3", "azure_blob", "gcs", "external"],
            Kind::Database => &["mongodb", "external"],
            Kind::Broker => &["rabbitmq", "kafka", "mosquitto", "vernemq", "external"],
            Kind::Turn => &["coturn", "external"],
            Kind::Vault | Kind::Agent | Kind::Hub | Kind::Factory => &["kerberos"],
            Kind::DriftSchedule => &["kubernetes"],
            Kind::Chart => &["helm"],
            Kind::Data => &DATA_TYPES,
        }
    }

    /// The type used when a block has no `type` attribute, for kinds with a single implementation.
    pub fn default_type(self) -> Option<&'static str> {
        match self.types() {
            [only] => Some(only),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.keyword())
    }
}

/// The type of an attribute, as checked by the language.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrType {
    String,
    Number,
    Bool,
    /// A string in Go's duration syntax (`90s`, `1m30s`, `2h`), see [`crate::Duration`].
    Duration,
    /// A string that must be one of these.
    Enum(&'static [&'static str]),
    List(Box<AttrType>),
    Map(Box<AttrType>),
    /// An object with these fields (a nested block's attributes): unknown fields are refused,
    /// defaults filled, required fields checked.
    Object(Vec<AttrSchema>),
    /// A reference to another component of the given kind (the value is that component's
    /// attributes; the reference is a dependency edge).
    Component(Kind),
    Any,
}

impl fmt::Display for AttrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrType::String => f.write_str("string"),
            AttrType::Number => f.write_str("number"),
            AttrType::Bool => f.write_str("bool"),
            AttrType::Duration => f.write_str("duration"),
            AttrType::Enum(values) => write!(f, "one of {}", values.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(", ")),
            AttrType::List(t) => write!(f, "list({t})"),
            AttrType::Map(t) => write!(f, "map({t})"),
            AttrType::Object(_) => f.write_str("object"),
            AttrType::Component(k) => write!(f, "a reference to a {k} component"),
            AttrType::Any => f.write_str("any"),
        }
    }
}

impl AttrType {
    /// Checks a (known part of a) value against this type, converting where the language
    /// converts implicitly (number/bool to string, numeric string to number). Unknown values
    /// conform to every type. Returns the converted value or a description of the mismatch.
    pub fn conform(&self, value: &Value) -> Result<Value, String> {
        match (self, value) {
            (_, Value::Unknown(_)) | (_, Value::Null) | (AttrType::Any, _) => Ok(value.clone()),
            (AttrType::String, Value::String(_)) => Ok(value.clone()),
            (AttrType::String, Value::Number(n)) => Ok(Value::String(n.to_string())),
            (AttrType::String, Value::Bool(b)) => Ok(Value::String(b.to_string())),
            (AttrType::Number, Value::Number(_)) => Ok(value.clone()),
            (AttrType::Number, Value::String(s)) => {
                s.trim().parse::<f64>().map(Value::from_f64).map_err(|_| format!("a number is required, got the string {s:?}"))
            }
            (AttrType::Bool, Value::Bool(_)) => Ok(value.clone()),
            (AttrType::Bool, Value::String(s)) if s == "true" || s == "false" => Ok(Value::Bool(s == "true")),
            (AttrType::List(inner), Value::List(items)) => {
                items.iter().enumerate().map(|(i, v)| inner.conform(v).map_err(|e| format!("element {i}: {e}"))).collect::<Result<Vec<_>, _>>().map(Value::List)
            }
            (AttrType::Map(inner), Value::Map(items)) => items
                .iter()
                .map(|(k, v)| inner.conform(v).map(|v| (k.clone(), v)).map_err(|e| format!("key {k:?}: {e}")))
                .collect::<Result<_, _>>()
                .map(Value::Map),
            (AttrType::Duration, Value::String(s)) => crate::Duration::parse(s).map(|_| value.clone()).map_err(|e| e.to_string()),
            (AttrType::Enum(values), Value::String(s)) if values.contains(&s.as_str()) => Ok(value.clone()),
            (AttrType::Enum(values), Value::String(s)) => {
                Err(format!("{s:?} is not valid here; use one of {}", values.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(", ")))
            }
            (AttrType::Object(fields), Value::Map(items)) => conform_object(fields, items).map(Value::Map),
            (AttrType::Component(_), Value::Map(_)) => Ok(value.clone()),
            (expected, got) => Err(format!("{expected} is required, got {}", got.type_name())),
        }
    }
}

/// Checks an object's fields against their schemas: unknown fields are refused (naming the
/// valid ones), required ones must be set, defaults fill the rest.
fn conform_object(fields: &[AttrSchema], items: &BTreeMap<String, Value>) -> Result<BTreeMap<String, Value>, String> {
    let mut out = BTreeMap::new();
    for (k, v) in items {
        let Some(f) = fields.iter().find(|f| f.name == k) else {
            let valid: Vec<&str> = fields.iter().filter(|f| !f.computed).map(|f| f.name).collect();
            return Err(format!("unknown field {k:?}; valid fields: {}", valid.join(", ")));
        };
        if !matches!(f.ty, AttrType::Component(_)) {
            out.insert(k.clone(), f.ty.conform(v).map_err(|e| format!("field {k:?}: {e}"))?);
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    for f in fields.iter().filter(|f| !f.computed) {
        if out.get(f.name).is_none_or(Value::is_null) {
            if f.required {
                return Err(format!("field {:?} is required ({})", f.name, f.description));
            }
            out.insert(f.name.to_string(), f.default.clone().unwrap_or(Value::Null));
        }
    }
    Ok(out)
}

/// A default that is not a constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DerivedDefault {
    /// The stack's name (`stack "NAME" {}`, else the stack directory's name).
    StackName,
    /// The Kubernetes namespaces of the stack's components on the component's cluster, sorted:
    /// each one's `namespace`, else its kind's (see [`crate::names::default_namespace`]).
    StackNamespaces,
}

/// One attribute of a component schema.
#[derive(Debug, Clone, PartialEq)]
pub struct AttrSchema {
    pub name: &'static str,
    pub ty: AttrType,
    pub required: bool,
    /// Value used when the attribute is not set (absent means null).
    pub default: Option<Value>,
    /// A default the language computes (applies when `default` is None).
    pub derived_default: Option<DerivedDefault>,
    pub sensitive: bool,
    /// A change to this attribute replaces the component instead of updating it.
    pub force_new: bool,
    /// Set by the provider (an endpoint, a generated key): known after apply, not settable.
    pub computed: bool,
    pub description: &'static str,
}

/// A nested block a component accepts (`account "NAME" { ... }` inside a vault): each block is
/// one entry of the object-typed attribute `attr`, keyed by its label (or by `unlabeled_name`
/// when the block has no label), so `account "a" {}` and `accounts = { a = {} }` mean the same.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockSchema {
    /// The block keyword.
    pub name: &'static str,
    /// The map attribute the blocks fill.
    pub attr: &'static str,
    /// The key of a block written without a label; None: the label is required.
    pub unlabeled_name: Option<&'static str>,
}

impl AttrSchema {
    /// The sensitive paths of this attribute's value: the attribute itself when it is
    /// sensitive, else the sensitive fields of each entry of a block map.
    pub fn sensitive_paths(&self, value: &Value) -> Vec<crate::AttrPath> {
        let at = crate::AttrPath::attr(self.name);
        if self.sensitive {
            return vec![at];
        }
        let (AttrType::Map(inner), Value::Map(entries)) = (&self.ty, value) else { return Vec::new() };
        let AttrType::Object(fields) = inner.as_ref() else { return Vec::new() };
        entries.keys().flat_map(|k| fields.iter().filter(|f| f.sensitive).map(move |f| (k, f))).map(|(k, f)| at.child_key(k).child_key(f.name)).collect()
    }
}

/// The schema of one `kind` + `type` pair.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentSchema {
    pub kind: Kind,
    pub type_name: &'static str,
    pub attributes: Vec<AttrSchema>,
    pub blocks: Vec<BlockSchema>,
}

impl ComponentSchema {
    pub fn attr(&self, name: &str) -> Option<&AttrSchema> {
        self.attributes.iter().find(|a| a.name == name)
    }

    pub fn inputs(&self) -> impl Iterator<Item = &AttrSchema> {
        self.attributes.iter().filter(|a| !a.computed)
    }

    pub fn computed(&self) -> impl Iterator<Item = &AttrSchema> {
        self.attributes.iter().filter(|a| a.computed)
    }

    pub fn block(&self, name: &str) -> Option<&BlockSchema> {
        self.blocks.iter().find(|b| b.name == name)
    }

    /// The fields of a nested block (the object type of its attribute).
    pub fn block_fields(&self, block: &BlockSchema) -> &[AttrSchema] {
        match self.attr(block.attr).map(|a| &a.ty) {
            Some(AttrType::Map(inner)) => match inner.as_ref() {
                AttrType::Object(fields) => fields,
                _ => &[],
            },
            _ => &[],
        }
    }
}

struct B(Vec<AttrSchema>, Vec<BlockSchema>);

impl B {
    fn new() -> B {
        B(Vec::new(), Vec::new())
    }
    fn push(mut self, name: &'static str, ty: AttrType, description: &'static str) -> B {
        self.0.push(AttrSchema {
            name,
            ty,
            required: false,
            default: None,
            derived_default: None,
            sensitive: false,
            force_new: false,
            computed: false,
            description,
        });
        self
    }
    fn derived_default(mut self, d: DerivedDefault) -> B {
        self.last().derived_default = Some(d);
        self
    }
    fn one_of(self, name: &'static str, values: &'static [&'static str], description: &'static str) -> B {
        self.push(name, AttrType::Enum(values), description)
    }
    fn duration(self, name: &'static str, description: &'static str) -> B {
        self.push(name, AttrType::Duration, description)
    }
    /// Nested blocks `name "LABEL" { fields }`, kept in the map attribute `attr`.
    fn blocks(mut self, name: &'static str, attr: &'static str, unlabeled_name: Option<&'static str>, fields: B, description: &'static str) -> B {
        self = self.push(attr, AttrType::Map(Box::new(AttrType::Object(fields.0))), description);
        self.1.push(BlockSchema { name, attr, unlabeled_name });
        self
    }
    fn last(&mut self) -> &mut AttrSchema {
        self.0.last_mut().expect("an attribute was pushed")
    }
    fn required(mut self) -> B {
        self.last().required = true;
        self
    }
    fn default(mut self, v: impl Into<Value>) -> B {
        self.last().default = Some(v.into());
        self
    }
    fn sensitive(mut self) -> B {
        self.last().sensitive = true;
        self
    }

    fn force_new(mut self) -> B {
        self.last().force_new = true;
        self
    }
    fn computed(mut self, name: &'static str, ty: AttrType, description: &'static str) -> B {
        self = self.push(name, ty, description);
        self.last().computed = true;
        self
    }
    fn s(self, name: &'static str, description: &'static str) -> B {
        self.push(name, AttrType::String, description)
    }
    fn n(self, name: &'static str, description: &'static str) -> B {
        self.push(name, AttrType::Number, description)
    }
    fn b(self, name: &'static str, description: &'static str) -> B {
        self.push(name, AttrType::Bool, description)
    }
    fn map(self, name: &'static str, description: &'static str) -> B {
        self.push(name, AttrType::Map(Box::new(AttrType::String)), description)
    }
    fn list(self, name: &'static str, description: &'static str) -> B {
        self.push(name, AttrType::List(Box::new(AttrType::String)), description)
    }
    fn comp(self, name: &'static str, kind: Kind, description: &'static str) -> B {
        self.push(name, AttrType::Component(kind), description)
    }
    /// Attributes every component that runs inside a cluster has.
    fn workload(self) -> B {
        self.comp("cluster", Kind::Cluster, "The cluster this runs on; optional when the stack has one cluster.")
            .s("namespace", "Kubernetes namespace (default: one per component kind).")
            .force_new()
            .s("image", "Container image override; the default image is pinned by kdeploy.")
            .map("labels", "Extra labels on every object.")
            .duration("readiness_timeout", "How long to wait for readiness after apply, e.g. \"5m\" or \"1m30s\".")
            .default("5m")
            .push("command", AttrType::List(Box::new(AttrType::String)), "Override the container command (arguments after the entrypoint).")
            .push(
                "healthcheck",
                AttrType::List(Box::new(AttrType::String)),
                "Override the health check, Docker style: [\"CMD\", \"wget\", \"-q\", \"http://127.0.0.1/\"].",
            )
    }
    fn done(self, kind: Kind, type_name: &'static str) -> ComponentSchema {
        ComponentSchema { kind, type_name, attributes: self.0, blocks: self.1 }
    }
}

/// An MQTT broker kdeploy runs (Mosquitto or VerneMQ): one user for the agents and Hub, MQTT
/// over TCP and over websockets (for Hub's browser live view), published like Vault's API.
fn mqtt_broker(version: &'static str, default_version: &'static str) -> B {
    B::new()
        .workload()
        .s("version", version)
        .default(default_version)
        .s("username", "The MQTT user agents and Hub connect as.")
        .default("kerberos")
        .s("password", "Its password (default: generated once and kept in state).")
        .sensitive()
        .one_of("service_type", &["NodePort", "LoadBalancer", "ClusterIP"], "NodePort, LoadBalancer or ClusterIP: how agents on other clusters and browsers (Hub's live view) reach it.")
        .default("NodePort")
        .n("node_port", "NodePort of MQTT over TCP (or host port on Docker).")
        .default(31883i64)
        .n("websocket_node_port", "NodePort of MQTT over websockets (or host port on Docker).")
        .default(31080i64)
        .computed("host", AttrType::String, "Host inside the cluster/network.")
        .computed("port", AttrType::Number, "MQTT port (1883).")
        .computed("uri", AttrType::String, "tcp:// MQTT URI inside the cluster/network.")
        .computed("websocket_uri", AttrType::String, "ws:// MQTT URI inside the cluster/network.")
        .computed(
            "external_uri",
            AttrType::String,
            "tcp:// MQTT URI from outside: the NodePort on the cluster's node address, the LoadBalancer's address, or the Docker host's published port; null when not exposed (ClusterIP).",
        )
        .computed("external_websocket_uri", AttrType::String, "ws:// MQTT URI from outside (browsers), like external_uri.")
        .computed("admin_password", AttrType::String, "The password in effect: `password`, or generated once.")
        .sensitive()
}

/// Fields of a vault's `account "NAME" { ... }` block.
fn account_fields() -> B {
    B::new()
        .s("directory", "A folder, or \"*\": each agent uploads under its own directory.")
        .default("*")
        .n("retention_days", "Retention in days (default: the vault's retention_days).")
        .s("provider", "The storage provider recordings go to (default: the vault's default provider).")
        .list("secondary_providers", "Providers recordings are copied to as well.")
        .list("queues", "Integrations that get this account's events (default: all of the vault's).")
        .b("enabled", "Whether agents may upload with it.")
        .default(true)
        .s("access_key", "Access key (default: generated once).")
        .sensitive()
        .s("secret_key", "Secret key (default: generated once).")
        .sensitive()
}

/// Fields of a vault's `provider "NAME" { ... }` block.
fn provider_fields() -> B {
    B::new()
        .comp("storage", Kind::ObjectStorage, "An object_storage component of the stack to derive the provider from.")
        .one_of("type", &["minio", "aws", "gcp", "azure"], "Vault provider type, when storage is not given: minio (any S3-compatible store), aws, gcp, azure.")
        .s("bucket", "Bucket (minio, aws, gcp).")
        .s("region", "Region (minio, aws).")
        .s("host", "host:port without a scheme (minio).")
        .s("access_key", "Access key (minio, aws).")
        .sensitive()
        .s("secret_key", "Secret key (minio, aws).")
        .sensitive()
        .b("use_ssl", "HTTPS (minio).")
        .default(false)
        .s("service_key", "Service account key JSON (gcp).")
        .sensitive()
        .s("account_name", "Storage account (azure).")
        .s("account_key", "Storage account key (azure).")
        .sensitive()
        .s("container", "Blob container (azure).")
}

/// Fields of a vault's `forward { ... }` block.
fn forward_fields() -> B {
    B::new()
        .comp(
            "vault",
            Kind::Vault,
            "The other Vault, when the stack has it: the URL (its external_url from another cluster), provider and keys follow from it and `account`.",
        )
        .s("account", "With vault: the account on the other Vault to forward with (default: its default account).")
        .s("vault_url", "The other Vault's API URL, e.g. https://vault.example.com/api (required without vault).")
        .s("provider", "A storage provider name on the other Vault (required without vault).")
        .s("access_key", "An account's access key on the other Vault (required without vault).")
        .sensitive()
        .s("secret_key", "That account's secret key (required without vault).")
        .sensitive()
        .one_of("forward_type", &["continuous", "ondemand"], "continuous (every recording), or ondemand (the recordings Kerberos Hub asks for; needs hub, or hub_url, hub_key and hub_username).")
        .default("continuous")
        .comp(
            "hub",
            Kind::Hub,
            "On demand: the hub of the stack that asks for recordings; its API URL (its external_url from another cluster), cloud key (hub_key) and user name (hub_username) follow from it.",
        )
        .s("hub_url", "On demand: Hub's API URL, when Hub is not in the stack (or to override it).")
        .s("hub_key", "On demand: Hub's cloud key (its first user's public key, as agents' hub_key).")
        .sensitive()
        .s("hub_username", "On demand: the Hub user the recordings belong to (the agents' upload folder).")
}

/// The schema for `kind` + `type_name`, or None when the type is not valid for the kind.
pub fn schema(kind: Kind, type_name: &str) -> Option<ComponentSchema> {
    schema_ref(kind, type_name).cloned()
}

/// Like [`schema`], without a copy: every schema is built once per process.
pub fn schema_ref(kind: Kind, type_name: &str) -> Option<&'static ComponentSchema> {
    static ALL: std::sync::OnceLock<Vec<ComponentSchema>> = std::sync::OnceLock::new();
    let all = ALL.get_or_init(|| Kind::ALL.iter().flat_map(|k| k.types().iter().filter_map(move |t| build_schema(*k, t))).collect());
    all.iter().find(|s| s.kind == kind && s.type_name == type_name)
}

fn build_schema(kind: Kind, type_name: &str) -> Option<ComponentSchema> {
    use Kind::*;
    let s = match (kind, type_name) {
        (Cluster, "docker") => B::new()
            .s("host", "Engine address: unix:///var/run/docker.sock (default, or DOCKER_HOST), tcp://host:2376.")
            .b("tls_verify", "Verify the engine's TLS certificate (tcp hosts).")
            .s("cert_path", "Directory with ca.pem, cert.pem, key.pem for TLS.")
            .s("network", "Name of the stack's bridge network (default: kdeploy-<stack>).")
            .force_new()
            .computed("api_version", AttrType::String, "Docker API version negotiated with the engine."),
        (Cluster, "microk8s") => B::new()
            .s("kubeconfig", "Path to the kubeconfig (default: KUBECONFIG or ~/.kube/config).")
            .s("context", "Kubeconfig context (default: the current context).")
            .s("storage_class", "Storage class for volumes.")
            .default("microk8s-hostpath")
            .b("gpu", "Require the nvidia add-on.")
            .default(false)
            .computed("server", AttrType::String, "API server URL."),
        (Cluster, "kubernetes") => B::new()
            .s("kubeconfig", "Path to the kubeconfig (default: KUBECONFIG or ~/.kube/config).")
            .s("context", "Kubeconfig context (default: the current context).")
            .s("storage_class", "Storage class for volumes (default: the cluster's default StorageClass).")
            .computed("server", AttrType::String, "API server URL."),
        (Cluster, "eks") => B::new()
            .s("region", "AWS region (default: from the environment).")
            .force_new()
            .s("name", "EKS cluster name (default: the block label).")
            .force_new()
            .s("version", "Kubernetes version, e.g. \"1.31\".")
            .s("role_arn", "Cluster IAM role (default: created by kdeploy).")
            .force_new()
            .list("subnet_ids", "Subnets (default: a VPC with subnets created by kdeploy).")
            .force_new()
            .s("vpc_cidr", "CIDR of the VPC kdeploy creates when subnet_ids is empty.")
            .default("10.20.0.0/16")
            .force_new()
            .b("endpoint_public_access", "Expose the API endpoint publicly.")
            .default(true)
            .list("instance_types", "Node group instance types.")
            .n("min_size", "Node group minimum size.")
            .default(1i64)
            .n("max_size", "Node group maximum size.")
            .default(3i64)
            .n("desired_size", "Node group desired size.")
            .default(2i64)
            .s("ami_type", "Node AMI type, e.g. AL2023_x86_64_STANDARD or AL2023_ARM_64_STANDARD.")
            .force_new()
            .s("node_role_arn", "Node group IAM role (default: created by kdeploy).")
            .force_new()
            .map("tags", "Tags on every AWS resource.")
            .computed("endpoint", AttrType::String, "API server endpoint.")
            .computed("certificate_authority", AttrType::String, "Cluster CA (base64).")
            .computed("arn", AttrType::String, "Cluster ARN.")
            .computed("cluster_name", AttrType::String, "The EKS cluster name in effect: `name`, or derived from the block label.")
            .computed("cluster_region", AttrType::String, "The AWS region in effect: `region`, or the environment's.")
            .computed("token_source", AttrType::String, "Where the Kubernetes provider gets bearer tokens for this cluster (\"eks\").")
            .computed("node_group_arn", AttrType::String, "Managed node group ARN.")
            .computed("vpc_id", AttrType::String, "The VPC kdeploy created (null when subnet_ids are given)."),
        (Cluster, "aks") => B::new()
            .s("resource_group", "Resource group (created when absent).")
            .force_new()
            .s("location", "Azure region.")
            .required()
            .force_new()
            .s("name", "AKS cluster name (default: the block label).")
            .force_new()
            .s("version", "Kubernetes version.")
            .n("node_count", "System node pool size.")
            .default(2i64)
            .s("vm_size", "Node VM size.")
            .default("Standard_D2s_v3")
            .force_new()
            .map("tags", "Tags on every Azure resource.")
            .computed("endpoint", AttrType::String, "API server endpoint.")
            .computed("id", AttrType::String, "ARM resource id.")
            .computed("certificate_authority", AttrType::String, "Cluster CA (base64).")
            .computed("token_source", AttrType::String, "Where the Kubernetes provider gets bearer tokens for this cluster (\"aks\")."),
        (Cluster, "gke") => B::new()
            .s("project", "GCP project id.")
            .required()
            .force_new()
            .s("location", "Region or zone.")
            .required()
            .force_new()
            .s("name", "GKE cluster name (default: the block label).")
            .force_new()
            .s("version", "Kubernetes version.")
            .s("machine_type", "Node machine type.")
            .default("e2-standard-2")
            .force_new()
            .n("node_count", "Node pool size.")
            .default(2i64)
            .n("min_nodes", "Autoscaling minimum.")
            .n("max_nodes", "Autoscaling maximum.")
            .computed("endpoint", AttrType::String, "API server endpoint.")
            .computed("certificate_authority", AttrType::String, "Cluster CA (base64).")
            .computed("cluster_name", AttrType::String, "The GKE cluster name in effect: `name`, or derived from the block label.")
            .computed("token_source", AttrType::String, "Where the Kubernetes provider gets bearer tokens for this cluster (\"gke\")."),
        (ObjectStorage, "minio") => B::new()
            .workload()
            .s("bucket", "Recordings bucket created in MinIO.")
            .default("recordings")
            .s("size", "Volume size for MinIO data.")
            .default("10Gi")
            .s("region", "Region name Vault uses for the provider.")
            .default("na")
            .s("client_image", "Image of the one-shot container that creates the bucket (the MinIO client, mc).")
            .computed("endpoint", AttrType::String, "host:port of the S3 API inside the cluster.")
            .computed("access_key", AttrType::String, "Generated root access key.")
            .sensitive()
            .computed("secret_key", AttrType::String, "Generated root secret key.")
            .sensitive(),
        (ObjectStorage, "s3") => B::new()
            .s("bucket", "Bucket name.")
            .required()
            .force_new()
            .s("region", "AWS region (default: from the environment).")
            .force_new()
            .b("versioning", "Keep object versions.")
            .default(false)
            .n("retention_days", "Expire recordings after this many days (lifecycle rule).")
            .default(30i64)
            .map("tags", "Tags.")
            .computed("endpoint", AttrType::String, "S3 endpoint host.")
            .computed("arn", AttrType::String, "Bucket ARN.")
            .computed("bucket_region", AttrType::String, "The AWS region in effect: `region`, or the environment's.")
            .computed("iam_user", AttrType::String, "The IAM user whose inline policy allows this bucket only.")
            .computed("access_key", AttrType::String, "Access key of the bucket-scoped IAM user.")
            .sensitive()
            .computed("secret_key", AttrType::String, "Secret key of the bucket-scoped IAM user.")
            .sensitive(),
        (ObjectStorage, "azure_blob") => B::new()
            .s("account_name", "Storage account name.")
            .required()
            .force_new()
            .s("container", "Blob container.")
            .default("recordings")
            .force_new()
            .s("resource_group", "Resource group.")
            .force_new()
            .s("location", "Azure region.")
            .force_new()
            .n("retention_days", "Lifecycle rule: delete after this many days.")
            .default(30i64)
            .computed("endpoint", AttrType::String, "Blob endpoint.")
            .computed("access_key", AttrType::String, "Storage account name for Vault.")
            .computed("secret_key", AttrType::String, "Storage account key for Vault.")
            .sensitive(),
        (ObjectStorage, "gcs") => B::new()
            .s("bucket", "Bucket name.")
            .required()
            .force_new()
            .s("project", "GCP project id.")
            .required()
            .force_new()
            .s("location", "Bucket location.")
            .default("EU")
            .force_new()
            .n("retention_days", "Lifecycle rule: delete after this many days.")
            .default(30i64)
            .computed("endpoint", AttrType::String, "GCS endpoint.")
            .s("service_account_key", "A service account key (JSON) for Vault's gcp provider type; without it Vault uses the bucket's S3-compatible endpoint with the HMAC key kdeploy creates (many organisations forbid service account keys).")
            .sensitive()
            .computed("access_key", AttrType::String, "HMAC access id for Vault.")
            .computed("secret_key", AttrType::String, "HMAC secret for Vault.")
            .sensitive(),
        (ObjectStorage, "external") => B::new()
            .s("endpoint", "host:port of an S3-compatible store kdeploy does not run (Ceph RGW, an existing MinIO, ...), without a scheme.")
            .required()
            .s("bucket", "The recordings bucket (must exist).")
            .required()
            .s("region", "The store's region.")
            .default("us-east-1")
            .s("access_key", "Access key with read/write access to the bucket.")
            .required()
            .sensitive()
            .s("secret_key", "Secret key.")
            .required()
            .sensitive()
            .b("use_ssl", "Reach the store over HTTPS.")
            .default(false),
        (Database, "mongodb") => B::new()
            .workload()
            .s("version", "MongoDB version (image tag).")
            .default("8.0.13")
            .s("storage_size", "Volume size.")
            .default("8Gi")
            .s("username", "Root user.")
            .default("root")
            .s("password", "Root password (default: generated once and kept in state).")
            .sensitive()
            .computed("host", AttrType::String, "Host name inside the cluster/network.")
            .computed("port", AttrType::Number, "Port.")
            .computed("uri", AttrType::String, "Connection string.")
            .sensitive()
            .computed("admin_password", AttrType::String, "The root password in effect: `password`, or generated once.")
            .sensitive(),
        (Database, "external") => B::new()
            .s("uri", "Connection string of an existing MongoDB/DocumentDB/Atlas (mongodb:// or mongodb+srv://).")
            .required()
            .sensitive()
            .one_of("flavor", &["mongodb", "documentdb"], "mongodb or documentdb.")
            .default("mongodb")
            .b("tls", "Connect with TLS (default: on for DocumentDB or when a CA is given).")
            .b("retry_writes", "Retryable writes (default: off for DocumentDB, which does not support them).")
            .s("tls_ca", "PEM CA bundle for the server certificate, e.g. file(\"global-bundle.pem\") for Amazon RDS/DocumentDB.")
            .s("tls_ca_secret", "Kubernetes only: an existing Secret in the component's namespace holding the CA bundle.")
            .s("tls_ca_secret_key", "The key of the CA bundle in tls_ca_secret.")
            .default("ca.pem")
            .b("tls_insecure_skip_verify", "Do not verify the server certificate (testing only).")
            .default(false)
            .computed("host", AttrType::String, "Host parsed from the URI."),
        (Broker, "rabbitmq") => B::new()
            .workload()
            .s("version", "RabbitMQ version (image tag).")
            .default("3.13.7-management")
            .s("queue", "Queue the Vault integration publishes to.")
            .default("data-filtering")
            .s("username", "User.")
            .default("kerberos")
            .s("password", "Password (default: generated).")
            .sensitive()
            .s("storage_size", "Volume size.")
            .default("8Gi")
            .computed("host", AttrType::String, "Host inside the cluster/network.")
            .computed("port", AttrType::Number, "AMQP port.")
            .computed("uri", AttrType::String, "amqp:// URI.")
            .sensitive()
            .computed("admin_password", AttrType::String, "The password in effect: `password`, or generated once.")
            .sensitive(),
        (Broker, "kafka") => B::new()
            .workload()
            .s("version", "Apache Kafka version (apache/kafka image tag).")
            .default("3.9.1")
            .s("topic", "Topic for Vault events.")
            .default("kcloud-event-queue")
            .s("username", "SASL PLAIN user.")
            .default("kerberos")
            .s("password", "Its password (default: generated once and kept in state).")
            .sensitive()
            .s("storage_size", "Volume size.")
            .default("8Gi")
            .computed("host", AttrType::String, "Host inside the cluster/network.")
            .computed("port", AttrType::Number, "Kafka port (9092, SASL_PLAINTEXT).")
            .computed("brokers", AttrType::String, "Bootstrap servers (host:port).")
            .computed("admin_password", AttrType::String, "The password in effect: `password`, or generated once.")
            .sensitive(),
        (Broker, "mosquitto") => mqtt_broker("Mosquitto version (image tag).", "2.0.21"),
        (Broker, "vernemq") => mqtt_broker("VerneMQ version (image tag).", "2.0.1-alpine"),
        (Broker, "external") => B::new()
            .s("host", "Broker host:port.")
            .required()
            .one_of("protocol", &["amqp", "kafka", "mqtt"], "What the broker speaks: amqp (RabbitMQ) and kafka brokers become a Vault integration; mqtt brokers serve agents and Hub.")
            .s("exchange", "AMQP exchange Vault publishes to (default: the default exchange).")
            .s("username", "User.")
            .s("password", "Password.")
            .sensitive()
            .s("queue", "Queue.")
            .default("data-filtering")
            .computed("uri", AttrType::String, "URI."),
        (Turn, "coturn") => B::new()
            .workload()
            .s("version", "coturn version (image tag).")
            .default("4.6.3")
            .s("username", "The TURN user agents and Hub authenticate as (long-term credentials).")
            .default("kerberos")
            .s("password", "Its password (default: generated once and kept in state).")
            .sensitive()
            .s("realm", "The TURN realm.")
            .default("kerberos")
            .s("external_ip", "The address coturn advertises for relayed traffic: the address clients reach (a node's or the LoadBalancer's public address), when it is not the container's own.")
            .s("relay_ports", "The UDP ports coturn relays media on, \"MIN-MAX\" (at most 100), each exposed as itself: node port, LoadBalancer port or Docker host port; inside 30000-32767 with a NodePort Service.")
            .default(crate::components::turn::DEFAULT_RELAY_PORTS)
            .one_of("service_type", &["NodePort", "LoadBalancer", "ClusterIP"], "NodePort, LoadBalancer or ClusterIP: how agents on other clusters and browsers reach it.")
            .default("NodePort")
            .n("node_port", "NodePort of TURN over TCP and UDP (or host port on Docker).")
            .default(30478i64)
            .computed("host", AttrType::String, "Host inside the cluster/network.")
            .computed("uri", AttrType::String, "turn: URI inside the cluster/network (UDP; TCP on the same port).")
            .computed("external_uri", AttrType::String, "turn: URI from outside: the NodePort on the cluster's node address, the LoadBalancer's address, or the Docker host's published port; null when not exposed.")
            .computed("admin_password", AttrType::String, "The password in effect: `password`, or generated once.")
            .sensitive(),
        (Turn, "external") => B::new()
            .s("uri", "turn: or turns: URI of a TURN server kdeploy does not run, e.g. \"turn:turn.example.com:3478\".")
            .required()
            .s("username", "TURN user.")
            .s("password", "TURN password.")
            .sensitive(),
        (Vault, "kerberos") => B::new()
            .workload()
            .comp("database", Kind::Database, "MongoDB Vault keeps its metadata in.")
            .required()
            .comp("storage", Kind::ObjectStorage, "Where recordings are written.")
            .required()
            .comp("broker", Kind::Broker, "Broker Vault publishes recording events to (an integration when it is a queue: RabbitMQ, Kafka, or an external amqp/kafka broker).")
            .one_of("service_type", &["NodePort", "LoadBalancer", "ClusterIP"], "NodePort, LoadBalancer or ClusterIP.")
            .default("NodePort")
            .n("node_port", "NodePort (or host port on Docker).")
            .default(30080i64)
            .s("ingress_host", "Host name of an Ingress in front of Vault's API and UI (Kubernetes): the external URL becomes https://HOST (http without TLS).")
            .s("ingress_class", "IngressClass of that Ingress (default: the cluster's default class).")
            .s("ingress_tls_secret", "TLS Secret (certificate and key) for ingress_host.")
            .s("cert_issuer", "cert-manager ClusterIssuer that issues the certificate for ingress_host into the Secret <name>-tls (when ingress_tls_secret is not given).")
            .n("retention_days", "Retention in days of the default account (and of accounts that do not set their own).")
            .default(30i64)
            .s("account", "Name of the default account agents upload with.")
            .default("kdeploy")
            .s("directory", "The default account's directory: a folder, or \"*\" (each agent uploads under its own directory).")
            .default("*")
            .s("login_username", "UI user.")
            .default("root")
            .s("login_password", "UI password (default: generated).")
            .sensitive()
            .comp("mqtt", Kind::Broker, "MQTT broker Vault listens on for Hub's on-demand forwarding requests (mosquitto, vernemq, or external with protocol = \"mqtt\"): sets MQTTURI, MQTT_USERNAME and MQTT_PASSWORD (instead of mqtt_uri).")
            .s("mqtt_uri", "MQTT broker for on-demand forwarding (explicit; no public default).")
            .blocks("account", "accounts", None, account_fields(), "Accounts besides the default one, as account \"NAME\" { ... } blocks or a map (a block named like the default account sets its settings).")
            .blocks("provider", "providers", None, provider_fields(), "Storage providers besides the one derived from storage, as provider \"NAME\" { ... } blocks or a map.")
            .blocks("forward", "forwards", Some("forward"), forward_fields(), "Forwarding to other Vaults (integrations of type kerberosvault), continuous or on demand, as forward [\"NAME\"] { ... } blocks or a map.")
            .computed("endpoint", AttrType::String, "API URI inside the cluster/network.")
            .computed("url", AttrType::String, "URL from outside (NodePort/LoadBalancer/host port).")
            .computed(
                "external_url",
                AttrType::String,
                "URL agents on other clusters upload to: https://ingress_host/api with an Ingress, else the NodePort on the cluster's node address, the address a LoadBalancer Service was given (apply waits for it), or the Docker host's published port; null when Vault is not exposed (ClusterIP).",
            )
            .computed("access_key", AttrType::String, "The default account's access key (generated).")
            .sensitive()
            .computed("secret_key", AttrType::String, "The default account's secret key (generated).")
            .sensitive()
            .computed("provider", AttrType::String, "Name of the default storage provider (the storage component's name).")
            .computed("vault_accounts", AttrType::Map(Box::new(AttrType::Any)), "Every account with its directory, provider and keys (generated once unless given).")
            .sensitive()
            .computed("vault_configuration", AttrType::Map(Box::new(AttrType::String)), "The VAULT_STORAGE_PROVIDERS, VAULT_INTEGRATIONS and VAULT_ACCOUNTS Vault is started with.")
            .sensitive()
            .computed("admin_password", AttrType::String, "The UI password in effect: `login_password`, or generated once.")
            .sensitive(),
        (Agent, "kerberos") => B::new()
            .workload()
            .comp("vault", Kind::Vault, "Vault the agent uploads to.")
            .required()
            .s("account", "The vault account to upload with (default: the vault's default account).")
            .s("directory", "The folder recordings go to when the account's directory is \"*\" (default: the stack name). Hub shows recordings when it equals the Hub user name.")
            .derived_default(DerivedDefault::StackName)
            .s("camera_name", "Agent name (default: the instance key or block label).")
            .s("rtsp_url", "Main stream RTSP URL.")
            .required()
            .s("login_username", "The agent's web UI user.")
            .default("admin")
            .s("login_password", "The agent's web UI password (default: generated).")
            .sensitive()
            .n("run_as_user", "Run the agent as this uid (default: the image's user).")
            .n("fs_group", "Group that owns the agent's volumes; the agent runs with it as a supplemental group.")
            .default(101i64)
            .s("sub_rtsp_url", "Sub stream RTSP URL.")
            .b("continuous", "Record continuously instead of on motion.")
            .default(false)
            .s("timezone", "Agent timezone.")
            .default("UTC")
            .comp("mqtt", Kind::Broker, "MQTT broker the agent connects to (mosquitto, vernemq, or external with protocol = \"mqtt\"): sets its MQTT URI, user and password (instead of mqtt_uri, mqtt_username and mqtt_password).")
            .s("mqtt_uri", "MQTT broker (explicit; never the public default).")
            .default("")
            .s("mqtt_username", "MQTT user.")
            .s("mqtt_password", "MQTT password.")
            .sensitive()
            .comp("turn", Kind::Turn, "TURN server for the WebRTC live view: sets its URI, user and password (instead of turn_uri, turn_username and turn_password).")
            .s("turn_uri", "TURN server (explicit; never the public default).")
            .default("")
            .s("turn_username", "TURN user.")
            .s("turn_password", "TURN password.")
            .sensitive()
            .s("stun_uri", "STUN server (explicit; never the public default).")
            .default("")
            .s("hub_uri", "Hub API URI.")
            .s("hub_key", "Hub public key.")
            .s("hub_private_key", "Hub private key.")
            .sensitive()
            .b("persistence", "Keep config and recordings on a volume.")
            .default(false)
            .s("storage_size", "Volume size when persistence is on.")
            .default("1Gi")
            .s("cpu", "CPU limit.")
            .default("1000m")
            .s("memory", "Memory limit.")
            .default("512Mi")
            .map("env", "Extra environment variables.")
            .computed("key", AttrType::String, "Generated agent key.")
            .computed("admin_password", AttrType::String, "The web UI password in effect: `login_password`, or generated once.")
            .sensitive()
            .computed("upload_directory", AttrType::String, "The folder the agent uploads under: its account's directory, or its own when that is \"*\"."),
        (Hub, "kerberos") => B::new()
            .comp("cluster", Kind::Cluster, "The cluster Hub runs on; optional when the stack has one cluster.")
            .s("namespace", "Namespace of Hub's objects.")
            .default("kerberos-hub")
            .force_new()
            .map("labels", "Extra labels on every object.")
            .duration("readiness_timeout", "How long to wait for Hub's Deployments and its seed Job after apply.")
            .default("10m")
            .comp("database", Kind::Database, "MongoDB Hub keeps its data in (kdeploy seeds its first user and settings there).")
            .required()
            .comp("broker", Kind::Broker, "Pipeline queue broker (RabbitMQ or Kafka): queueProvider and rabbitmq.* / kafka.* of the chart.")
            .required()
            .comp("vault", Kind::Vault, "Vault Hub reads recordings from (kerberosvault.* with the account's keys).")
            .required()
            .comp("mqtt", Kind::Broker, "MQTT broker of the live view (mosquitto, vernemq, or external with protocol = \"mqtt\"): the chart's mqtt.* are its websocket endpoint from outside the cluster (browsers connect to it) and its user.")
            .comp("turn", Kind::Turn, "TURN server of the WebRTC live view: the chart's turn.* are its URI from outside the cluster and its user.")
            .comp("monitoring", Kind::Chart, "A chart component that installs the prometheus-operator CRDs Hub's ServiceMonitors need, when the cluster does not serve them yet.")
            .s("account", "The vault account Hub reads with (default: the vault's default account).")
            .s("username", "Hub's first user. Hub shows an agent's recordings when this equals the folder the agent uploads under: the account's directory, or when that is \"*\", this name (default: the stack name, as agents' directory).")
            .derived_default(DerivedDefault::StackName)
            .s("login_password", "The first user's password (default: generated).")
            .sensitive()
            .s("license", "Hub license (pass it as a sensitive variable); empty: the chart's built-in evaluation license (8 cameras).")
            .sensitive()
            .s("repository", "Chart repository.")
            .default("https://charts.kerberos.io")
            .s("chart", "Chart name.")
            .default("hub")
            .s("version", "Chart version (pinned).")
            .default("0.130.0")
            .s("path", "A local copy of the chart (directory or archive, absolute, e.g. \"${path.module}/charts/hub\") instead of the repository, for air-gapped sites.")
            .s("helm", "Path of the helm binary (default: KDEPLOY_HELM, else helm on PATH).")
            .s("ingress", "The chart's ingress class (nginx or traefik); empty: no Ingress, reach Hub by its NodePorts.")
            .default("")
            .s("api_url", "Public API host (kerberoshub.api.url).")
            .s("frontend_url", "Public frontend host (kerberoshub.frontend.url).")
            .n("frontend_node_port", "NodePort of Hub's frontend when there is no ingress.")
            .default(32080i64)
            .n("api_node_port", "NodePort of Hub's API when there is no ingress.")
            .default(32081i64)
            .push("values", AttrType::Any, "Chart values merged over the ones kdeploy derives from the stack (an escape hatch).")
            .computed("chart_digest", AttrType::String, "Digest of what the rendering depends on.")
            .computed("endpoint", AttrType::String, "Hub API URI inside the cluster.")
            .computed("external_url", AttrType::String, "Hub API URL from outside the cluster: https://api_url with an ingress, else the API's NodePort on the cluster's node address.")
            .computed("hub_username", AttrType::String, "The first user's name: the folder the agents of Hub's vault account upload under.")
            .computed("admin_password", AttrType::String, "The first user's password in effect: `login_password`, or generated once.")
            .sensitive()
            .computed("hub_key", AttrType::String, "The first user's public key (agents' hub_key).")
            .computed("hub_private_key", AttrType::String, "The first user's private key (agents' hub_private_key).")
            .sensitive()
            .computed("jwt_secret", AttrType::String, "The secret Hub's API signs its tokens with (generated once).")
            .sensitive(),
        (Factory, "kerberos") => B::new()
            .workload()
            .one_of("service_type", &["NodePort", "LoadBalancer", "ClusterIP"], "NodePort, LoadBalancer or ClusterIP.")
            .default("NodePort")
            .n("node_port", "NodePort.")
            .default(30079i64)
            .s("ingress_host", "Host name of an Ingress in front of Factory's UI (Kubernetes): the external URL becomes https://HOST (http without TLS).")
            .s("ingress_class", "IngressClass of that Ingress (default: the cluster's default class).")
            .s("ingress_tls_secret", "TLS Secret (certificate and key) for ingress_host.")
            .s("cert_issuer", "cert-manager ClusterIssuer that issues the certificate for ingress_host into the Secret <name>-tls (when ingress_tls_secret is not given).")
            .s("agent_image", "Agent image Factory starts (v3.6.29 or later: it reads the GLOBAL_AGENT_* settings Factory hands over).")
            .s("login_password", "UI password (default: generated).")
            .sensitive()
            .computed("url", AttrType::String, "URL from outside.")
            .computed("admin_password", AttrType::String, "The UI password in effect: `login_password`, or generated once.")
            .sensitive(),
        (DriftSchedule, "kubernetes") => B::new()
            .comp("cluster", Kind::Cluster, "The Kubernetes cluster the CronJob runs in; optional when the stack has one cluster.")
            .s("namespace", "Namespace of the CronJob.")
            .default("kdeploy")
            .force_new()
            .s("schedule", "Cron schedule, e.g. \"17 3 * * *\".")
            .required()
            .s("image", "An image with the kdeploy binary as its entrypoint (default: the release image of the running kdeploy version, as `kdeploy version --json` shows).")
            .default(crate::images::kdeploy())
            .push("files", AttrType::Map(Box::new(AttrType::String)), "Stack files to mount at /stack, e.g. { \"main.hcl\" = file(\"main.hcl\") }. The stack must use a shared state backend.")
            .required()
            .push(
                "namespaces",
                AttrType::List(Box::new(AttrType::String)),
                "Namespaces the job may read (default: those of the stack's components on its cluster, as far as the stack tells without applying).",
            )
            .derived_default(DerivedDefault::StackNamespaces)
            .s("notify", "Webhook for drift reports (kdeploy drift --notify).")
            .sensitive()
            .map("labels", "Extra labels on every object.")
            .duration("readiness_timeout", "How long to wait after apply.")
            .default("1m"),
        (Chart, "helm") => B::new()
            .comp("cluster", Kind::Cluster, "The Kubernetes cluster the chart's objects go to; optional when the stack has one cluster.")
            .s("repository", "URL of the chart repository (helm template --repo); with it, chart and version are required.")
            .s("path", "A chart directory or archive on this machine instead of a repository, e.g. \"${path.module}/charts/monitoring\" (relative paths are refused: they would depend on where kdeploy runs).")
            .s("chart", "The chart's name in the repository.")
            .s("version", "The chart version (required with repository: an unpinned chart could change under an unchanged plan).")
            .s("release", "The release name the templates see as .Release.Name (default: the block label).")
            .s("namespace", "Namespace of the chart's namespaced objects (created when absent).")
            .default("default")
            .force_new()
            .push("values", AttrType::Any, "Values for the chart, as an HCL object (passed to helm template as a values file).")
            .s("helm", "Path of the helm binary (default: KDEPLOY_HELM, else helm on PATH).")
            .map("labels", "Extra labels on every object.")
            .duration("readiness_timeout", "How long to wait for the chart's Deployments, StatefulSets and Jobs after apply.")
            .default("5m")
            .computed("chart_digest", AttrType::String, "Digest of what the rendering depends on (source, version, values, a local chart's files): unchanged, the chart is not rendered again."),
        (Data, "kubernetes_secret") => B::new()
            .comp("cluster", Kind::Cluster, "The Kubernetes cluster the Secret is on; optional when the stack has one cluster.")
            .s("namespace", "The Secret's namespace.")
            .required()
            .s("name", "The Secret's name.")
            .required()
            .computed("data", AttrType::Map(Box::new(AttrType::String)), "The Secret's keys and their values (decoded from base64), e.g. data[\"mongodb-root-password\"].")
            .sensitive(),
        (Data, "docker_container_env") => B::new()
            .comp("cluster", Kind::Cluster, "The Docker cluster (host) the container runs on; optional when the stack has one cluster.")
            .s("container", "The container's name (docker run --name).")
            .required()
            .computed("env", AttrType::Map(Box::new(AttrType::String)), "The container's environment variables, e.g. env[\"MONGO_INITDB_ROOT_PASSWORD\"].")
            .sensitive(),
        _ => return None,
    };
    Some(s.done(kind, kind.types().iter().find(|t| **t == type_name).copied()?))
}

/// Which provider implements a component: cluster types map to their platform, cloud storage to
/// its cloud, and in-cluster components to the provider that serves their cluster (Docker, or
/// Kubernetes for every Kubernetes flavour, managed or not). `external` types are data only.
pub fn provider_for(kind: Kind, type_name: &str, cluster_type: Option<&str>) -> &'static str {
    match (kind, type_name) {
        (Kind::Data, "kubernetes_secret") => "kubernetes",
        (Kind::Data, "docker_container_env") => "docker",
        (Kind::Cluster, "docker") => "docker",
        (Kind::Cluster, "microk8s" | "kubernetes") => "kubernetes",
        (Kind::Cluster, "eks") | (Kind::ObjectStorage, "s3") => "aws",
        (Kind::Cluster, "aks") | (Kind::ObjectStorage, "azure_blob") => "azure",
        (Kind::Cluster, "gke") | (Kind::ObjectStorage, "gcs") => "gcp",
        (_, "external") => "external",
        _ => match cluster_type {
            Some("docker") => "docker",
            _ => "kubernetes",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_and_type_has_a_schema() {
        for kind in Kind::ALL {
            for t in kind.types() {
                let s = schema(kind, t).unwrap_or_else(|| panic!("{kind} {t}"));
                assert_eq!(s.type_name, *t);
                let mut names: Vec<_> = s.attributes.iter().map(|a| a.name).collect();
                let n = names.len();
                names.sort();
                names.dedup();
                assert_eq!(names.len(), n, "duplicate attribute in {kind} {t}");
            }
        }
        assert!(schema(Kind::Cluster, "nomad").is_none());
    }

    #[test]
    fn routing_follows_the_cluster() {
        assert_eq!(provider_for(Kind::Vault, "kerberos", Some("docker")), "docker");
        assert_eq!(provider_for(Kind::Vault, "kerberos", Some("eks")), "kubernetes");
        assert_eq!(provider_for(Kind::ObjectStorage, "s3", Some("eks")), "aws");
        assert_eq!(provider_for(Kind::Database, "external", None), "external");
    }

    #[test]
    fn conform_converts_like_the_language() {
        assert_eq!(AttrType::String.conform(&Value::from_i64(3)), Ok(Value::string("3")));
        assert_eq!(AttrType::Number.conform(&Value::string("4")), Ok(Value::from_i64(4)));
        assert_eq!(AttrType::Number.conform(&Value::string("x")), Err("a number is required, got the string \"x\"".to_string()));
        assert!(AttrType::Bool.conform(&Value::List(vec![])).is_err());
    }
}

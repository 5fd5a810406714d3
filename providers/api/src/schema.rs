//! Component kinds, their implementations (`type = ...`) and the typed attribute schemas that
//! the language checks a component block against.
//!
//! The schemas are the single source of truth for which attributes exist, which are required,
//! which are sensitive, which force a replacement when they change, and which are only known
//! after apply (computed by the provider).

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
    Vault,
    Agent,
    Hub,
    Factory,
    /// A scheduled in-cluster `kdeploy drift` run (a CronJob with read-only access).
    DriftSchedule,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Cluster,
        Kind::ObjectStorage,
        Kind::Database,
        Kind::Broker,
        Kind::Vault,
        Kind::Agent,
        Kind::Hub,
        Kind::Factory,
        Kind::DriftSchedule,
    ];

    /// The block keyword, which is also the first part of the component's address.
    pub fn keyword(self) -> &'static str {
        match self {
            Kind::Cluster => "cluster",
            Kind::ObjectStorage => "object_storage",
            Kind::Database => "database",
            Kind::Broker => "broker",
            Kind::Vault => "vault",
            Kind::Agent => "agent",
            Kind::Hub => "hub",
            Kind::Factory => "factory",
            Kind::DriftSchedule => "drift_schedule",
        }
    }

    pub fn from_keyword(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.keyword() == s)
    }

    /// The implementations a `type` attribute may select, in documentation order.
    pub fn types(self) -> &'static [&'static str] {
        match self {
            Kind::Cluster => &["docker", "microk8s", "kubernetes", "eks", "aks", "gke"],
            Kind::ObjectStorage => &["minio", "s3", "azure_blob", "gcs"],
            Kind::Database => &["mongodb", "external"],
            Kind::Broker => &["rabbitmq", "kafka", "vernemq", "external"],
            Kind::Vault | Kind::Agent | Kind::Hub | Kind::Factory => &["kerberos"],
            Kind::DriftSchedule => &["kubernetes"],
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttrType {
    String,
    Number,
    Bool,
    List(Box<AttrType>),
    Map(Box<AttrType>),
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
            AttrType::List(t) => write!(f, "list({t})"),
            AttrType::Map(t) => write!(f, "map({t})"),
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
            (AttrType::Number, Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .map(Value::from_f64)
                .map_err(|_| format!("a number is required, got the string {s:?}")),
            (AttrType::Bool, Value::Bool(_)) => Ok(value.clone()),
            (AttrType::Bool, Value::String(s)) if s == "true" || s == "false" => {
                Ok(Value::Bool(s == "true"))
            }
            (AttrType::List(inner), Value::List(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| inner.conform(v).map_err(|e| format!("element {i}: {e}")))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::List),
            (AttrType::Map(inner), Value::Map(items)) => items
                .iter()
                .map(|(k, v)| {
                    inner.conform(v).map(|v| (k.clone(), v)).map_err(|e| format!("key {k:?}: {e}"))
                })
                .collect::<Result<_, _>>()
                .map(Value::Map),
            (AttrType::Component(_), Value::Map(_)) => Ok(value.clone()),
            (expected, got) => Err(format!("{expected} is required, got {}", got.type_name())),
        }
    }
}

/// One attribute of a component schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttrSchema {
    pub name: &'static str,
    pub ty: AttrType,
    pub required: bool,
    /// Value used when the attribute is not set (absent means null).
    pub default: Option<Value>,
    pub sensitive: bool,
    /// A change to this attribute replaces the component instead of updating it.
    pub force_new: bool,
    /// Set by the provider (an endpoint, a generated key): known after apply, not settable.
    pub computed: bool,
    pub description: &'static str,
}

/// The schema of one `kind` + `type` pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentSchema {
    pub kind: Kind,
    pub type_name: &'static str,
    pub attributes: Vec<AttrSchema>,
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
}

struct B(Vec<AttrSchema>);

impl B {
    fn new() -> B {
        B(Vec::new())
    }
    fn push(mut self, name: &'static str, ty: AttrType, description: &'static str) -> B {
        self.0.push(AttrSchema {
            name,
            ty,
            required: false,
            default: None,
            sensitive: false,
            force_new: false,
            computed: false,
            description,
        });
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
            .s("readiness_timeout", "How long to wait for readiness after apply, e.g. \"5m\".")
            .default("5m")
            .push("command", AttrType::List(Box::new(AttrType::String)), "Override the container command (arguments after the entrypoint).")
            .push("healthcheck", AttrType::List(Box::new(AttrType::String)), "Override the health check, Docker style: [\"CMD\", \"wget\", \"-q\", \"http://127.0.0.1/\"].")
    }
    fn done(self, kind: Kind, type_name: &'static str) -> ComponentSchema {
        ComponentSchema { kind, type_name, attributes: self.0 }
    }
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
            .computed("access_key", AttrType::String, "HMAC access id for Vault.")
            .computed("secret_key", AttrType::String, "HMAC secret for Vault.")
            .sensitive(),
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
            .s("uri", "Connection string of an existing MongoDB/DocumentDB.")
            .required()
            .sensitive()
            .s("flavor", "mongodb or documentdb.")
            .default("mongodb")
            .computed("host", AttrType::String, "Host parsed from the URI."),
        (Broker, "rabbitmq") => B::new()
            .workload()
            .s("version", "RabbitMQ version (image tag).")
            .default("3.13-management")
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
            .s("topic", "Topic for Vault events.")
            .default("kcloud-event-queue")
            .computed("brokers", AttrType::String, "Bootstrap servers."),
        (Broker, "vernemq") => B::new()
            .workload()
            .s("username", "MQTT user.")
            .default("kerberos")
            .s("password", "MQTT password (default: generated).")
            .sensitive()
            .computed("uri", AttrType::String, "tcp:// MQTT URI.")
            .computed("admin_password", AttrType::String, "The password in effect: `password`, or generated once.")
            .sensitive(),
        (Broker, "external") => B::new()
            .s("host", "Broker host:port.")
            .required()
            .s("username", "User.")
            .s("password", "Password.")
            .sensitive()
            .s("queue", "Queue.")
            .default("data-filtering")
            .computed("uri", AttrType::String, "URI."),
        (Vault, "kerberos") => B::new()
            .workload()
            .comp("database", Kind::Database, "MongoDB Vault keeps its metadata in.")
            .required()
            .comp("storage", Kind::ObjectStorage, "Where recordings are written.")
            .required()
            .comp("broker", Kind::Broker, "Optional integration broker.")
            .s("service_type", "NodePort, LoadBalancer or ClusterIP.")
            .default("NodePort")
            .n("node_port", "NodePort (or host port on Docker).")
            .default(30080i64)
            .n("retention_days", "Account day limit.")
            .default(30i64)
            .s("account", "Account name agents upload with.")
            .default("kdeploy")
            .s("directory", "Account directory.")
            .default("*")
            .s("login_username", "UI user.")
            .default("root")
            .s("login_password", "UI password (default: generated).")
            .sensitive()
            .s("mqtt_uri", "MQTT broker for on-demand forwarding (explicit; no public default).")
            .computed("endpoint", AttrType::String, "API URI inside the cluster/network.")
            .computed("url", AttrType::String, "URL from outside (NodePort/LoadBalancer/host port).")
            .computed("access_key", AttrType::String, "Account access key agents use (generated).")
            .sensitive()
            .computed("secret_key", AttrType::String, "Account secret key agents use (generated).")
            .sensitive()
            .computed("provider", AttrType::String, "Name of the storage provider to create in the UI.")
            .computed("admin_password", AttrType::String, "The UI password in effect: `login_password`, or generated once.")
            .sensitive(),
        (Agent, "kerberos") => B::new()
            .workload()
            .comp("vault", Kind::Vault, "Vault the agent uploads to.")
            .required()
            .s("camera_name", "Agent name (default: the instance key or block label).")
            .s("rtsp_url", "Main stream RTSP URL.")
            .required()
            .s("sub_rtsp_url", "Sub stream RTSP URL.")
            .b("continuous", "Record continuously instead of on motion.")
            .default(false)
            .s("timezone", "Agent timezone.")
            .default("UTC")
            .s("mqtt_uri", "MQTT broker (explicit; never the public default).")
            .default("")
            .s("mqtt_username", "MQTT user.")
            .s("mqtt_password", "MQTT password.")
            .sensitive()
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
            .computed("key", AttrType::String, "Generated agent key."),
        (Hub, "kerberos") => B::new()
            .workload()
            .comp("database", Kind::Database, "MongoDB for Hub.")
            .required()
            .comp("broker", Kind::Broker, "Pipeline queue broker.")
            .required()
            .comp("vault", Kind::Vault, "Vault Hub reads recordings from.")
            .required()
            .s("license", "Hub license.")
            .required()
            .sensitive()
            .s("api_url", "Public API URL.")
            .s("frontend_url", "Public frontend URL.")
            .computed("endpoint", AttrType::String, "Hub API URI inside the cluster."),
        (Factory, "kerberos") => B::new()
            .workload()
            .s("service_type", "NodePort, LoadBalancer or ClusterIP.")
            .default("NodePort")
            .n("node_port", "NodePort.")
            .default(30079i64)
            .s("agent_image", "Agent image Factory starts.")
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
            .s("image", "An image containing the kdeploy binary (as its entrypoint).")
            .required()
            .push("files", AttrType::Map(Box::new(AttrType::String)), "Stack files to mount at /stack, e.g. { \"main.hcl\" = file(\"main.hcl\") }. The stack must use a shared state backend.")
            .required()
            .push("namespaces", AttrType::List(Box::new(AttrType::String)), "Namespaces the job may read (the stack's).")
            .default(Value::List(["kerberos-vault", "kerberos-agent", "kerberos-factory", "mongodb", "minio", "rabbitmq"].iter().map(|n| Value::string(*n)).collect()))
            .s("notify", "Webhook for drift reports (kdeploy drift --notify).")
            .sensitive()
            .map("labels", "Extra labels on every object.")
            .s("readiness_timeout", "How long to wait after apply.")
            .default("1m"),
        _ => return None,
    };
    Some(s.done(kind, kind.types().iter().find(|t| **t == type_name).copied()?))
}

/// Which provider implements a component: cluster types map to their platform, cloud storage to
/// its cloud, and in-cluster components to the provider that serves their cluster (Docker, or
/// Kubernetes for every Kubernetes flavour, managed or not). `external` types are data only.
pub fn provider_for(kind: Kind, type_name: &str, cluster_type: Option<&str>) -> &'static str {
    match (kind, type_name) {
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
        assert_eq!(
            AttrType::Number.conform(&Value::string("x")),
            Err("a number is required, got the string \"x\"".to_string())
        );
        assert!(AttrType::Bool.conform(&Value::List(vec![])).is_err());
    }
}

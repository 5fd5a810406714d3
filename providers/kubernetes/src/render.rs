//! Rendering a component into the Kubernetes objects kdeploy owns: plain JSON manifests, built
//! from the component's attributes (inputs and computed values), the attributes of the
//! components it references, and the cluster's. Pure functions: no API calls here.

use std::collections::BTreeMap;

use kdeploy_provider::{images, Kind, Value};
use serde_json::{json, Value as Json};

use crate::fields::digest;

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const ADDRESS_ANNOTATION: &str = "kdeploy.io/address";
pub const DIGEST_ANNOTATION: &str = "kdeploy.io/config-digest";

/// What rendering needs about one component.
pub struct Input<'a> {
    pub address: &'a str,
    pub kind: Kind,
    pub type_name: &'a str,
    /// Inputs and computed attributes, all known.
    pub attrs: &'a BTreeMap<String, Value>,
    pub refs: &'a BTreeMap<String, Value>,
    pub cluster: &'a BTreeMap<String, Value>,
}

impl Input<'_> {
    fn s(&self, k: &str) -> String {
        str_of(self.attrs.get(k))
    }
    fn opt(&self, k: &str) -> Option<String> {
        match self.attrs.get(k) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        }
    }
    fn r(&self, reference: &str, k: &str) -> String {
        str_of(self.refs.get(reference).and_then(|v| v.as_map()).and_then(|m| m.get(k)))
    }
    fn image(&self) -> String {
        self.opt("image").or_else(|| images::default_image(self.kind, self.type_name).map(str::to_string)).unwrap_or_default()
    }
}

fn str_of(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

/// A DNS-1123 label (also a valid DNS-1035 service name) for an address, at most 45
/// characters so that suffixes like `-bucket-0123abcd` still fit in 63.
pub fn base_name(address: &str) -> String {
    let mut out = String::new();
    for c in address.replace("module.", "").chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut out = out.trim_matches('-').to_string();
    if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out = format!("k-{out}");
    }
    if out.len() > 45 {
        let h = digest(&json!(address));
        out = format!("{}-{}", out[..36].trim_end_matches('-'), &h[..8]);
    }
    out
}

/// The namespace a component lives in: its `namespace` attribute or one per kind.
pub fn namespace(kind: Kind, attrs: &BTreeMap<String, Value>) -> String {
    match attrs.get("namespace") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => match kind {
            Kind::ObjectStorage => "minio",
            Kind::Database => "mongodb",
            Kind::Broker => "rabbitmq",
            Kind::Vault => "kerberos-vault",
            Kind::Agent => "kerberos-agent",
            Kind::Hub => "kerberos-hub",
            Kind::Factory => "kerberos-factory",
            Kind::DriftSchedule => "kdeploy",
            Kind::Cluster => "default",
        }
        .to_string(),
    }
}

fn kind_label(kind: Kind) -> String {
    kind.keyword().replace('_', "-")
}

/// Labels on every object: ownership, component identity, and the user's labels.
pub fn labels(inp: &Input<'_>) -> Json {
    let mut m = serde_json::Map::new();
    if let Some(Value::Map(user)) = inp.attrs.get("labels") {
        for (k, v) in user {
            m.insert(k.clone(), json!(str_of(Some(v))));
        }
    }
    m.insert(MANAGED_BY.into(), json!("kdeploy"));
    m.insert("app.kubernetes.io/name".into(), json!(kind_label(inp.kind)));
    m.insert("app.kubernetes.io/instance".into(), json!(base_name(inp.address)));
    m.insert("app.kubernetes.io/part-of".into(), json!("kerberos"));
    Json::Object(m)
}

fn selector(inp: &Input<'_>) -> Json {
    json!({"app.kubernetes.io/name": kind_label(inp.kind), "app.kubernetes.io/instance": base_name(inp.address)})
}

fn meta(inp: &Input<'_>, name: &str, ns: Option<&str>) -> Json {
    let mut m = json!({"name": name, "labels": labels(inp), "annotations": {ADDRESS_ANNOTATION: inp.address}});
    if let Some(ns) = ns {
        m["namespace"] = json!(ns);
    }
    m
}

/// Secrets carry base64 `data` (not `stringData`, which the API server does not keep), so the
/// fields kdeploy owns include the values and a changed value shows as drift.
fn secret(inp: &Input<'_>, name: &str, ns: &str, data: &[(&str, String)]) -> Json {
    use base64::Engine as _;
    let data: serde_json::Map<String, Json> = data.iter().map(|(k, v)| (k.to_string(), json!(base64::engine::general_purpose::STANDARD.encode(v)))).collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta(inp, name, Some(ns)), "type": "Opaque", "data": data})
}

fn config_map(inp: &Input<'_>, name: &str, ns: &str, data: &[(&str, String)]) -> Json {
    let data: serde_json::Map<String, Json> = data.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(inp, name, Some(ns)), "data": data})
}

fn service(inp: &Input<'_>, name: &str, ns: &str, ports: &[(&str, i64)], service_type: &str, node_port: Option<i64>, headless: bool) -> Json {
    let ports: Vec<Json> = ports
        .iter()
        .enumerate()
        .map(|(i, (n, p))| {
            let mut port = json!({"name": n, "port": p, "targetPort": p, "protocol": "TCP"});
            if i == 0 && service_type == "NodePort" {
                if let Some(np) = node_port {
                    port["nodePort"] = json!(np);
                }
            }
            port
        })
        .collect();
    let mut spec = json!({"type": service_type, "selector": selector(inp), "ports": ports});
    if headless {
        spec["clusterIP"] = json!("None");
    }
    json!({"apiVersion": "v1", "kind": "Service", "metadata": meta(inp, name, Some(ns)), "spec": spec})
}

fn resources(inp: &Input<'_>, default_cpu: &str, default_mem: &str) -> Json {
    let cpu = inp.opt("cpu").unwrap_or_else(|| default_cpu.to_string());
    let mem = inp.opt("memory").unwrap_or_else(|| default_mem.to_string());
    json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": cpu, "memory": mem}})
}

fn command_override(inp: &Input<'_>, container: &mut Json) {
    if let Some(Value::List(args)) = inp.attrs.get("command") {
        container["args"] = json!(args.iter().map(|a| str_of(Some(a))).collect::<Vec<_>>());
    }
}

/// A pod template whose annotation changes when `config` changes, so pods roll when a
/// referenced password or key changes.
fn pod_template(inp: &Input<'_>, config: &Json, spec: Json) -> Json {
    json!({
        "metadata": {"labels": labels(inp), "annotations": {DIGEST_ANNOTATION: digest(config)}},
        "spec": spec,
    })
}

fn storage_class(inp: &Input<'_>) -> Option<String> {
    match inp.cluster.get("storage_class") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn pvc_template(inp: &Input<'_>, name: &str, size: &str) -> Json {
    let mut spec = json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}});
    if let Some(sc) = storage_class(inp) {
        spec["storageClassName"] = json!(sc);
    }
    json!({"metadata": {"name": name, "labels": labels(inp)}, "spec": spec})
}

fn stateful_set(inp: &Input<'_>, name: &str, ns: &str, headless: &str, container: Json, volume: (&str, &str, &str), config: &Json) -> Json {
    let (vol, mount, size) = volume;
    let mut c = container;
    c["volumeMounts"] = json!([{"name": vol, "mountPath": mount}]);
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta(inp, name, Some(ns)),
        "spec": {
            "serviceName": headless, "replicas": 1, "selector": {"matchLabels": selector(inp)},
            "template": pod_template(inp, config, json!({"containers": [c]})),
            "volumeClaimTemplates": [pvc_template(inp, vol, size)],
        }
    })
}

fn job(inp: &Input<'_>, prefix: &str, ns: &str, container: Json) -> Json {
    // Jobs are immutable: a changed job gets a new name (the digest of its spec).
    let name = format!("{prefix}-{}", &digest(&container)[..8]);
    json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": meta(inp, &name, Some(ns)),
        "spec": {"backoffLimit": 6, "template": {"metadata": {"labels": labels(inp)}, "spec": {"restartPolicy": "OnFailure", "containers": [container]}}}
    })
}

fn healthcheck_probe(inp: &Input<'_>, default: Json) -> Json {
    match inp.attrs.get("healthcheck") {
        Some(Value::List(items)) if !items.is_empty() => {
            let words: Vec<String> = items.iter().map(|v| str_of(Some(v))).collect();
            let cmd: Vec<String> = match words.first().map(String::as_str) {
                Some("CMD") => words[1..].to_vec(),
                Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), words[1..].join(" ")],
                _ => words,
            };
            json!({"exec": {"command": cmd}, "periodSeconds": 5})
        }
        _ => default,
    }
}

/// Objects for one component, in apply order (configuration before workloads).
pub fn render(inp: &Input<'_>) -> Result<Vec<Json>, String> {
    let ns = namespace(inp.kind, inp.attrs);
    let base = base_name(inp.address);
    let ns = ns.as_str();
    Ok(match (inp.kind, inp.type_name) {
        (Kind::ObjectStorage, "minio") => {
            let root = format!("{base}-root");
            let config = json!([inp.s("access_key"), inp.s("secret_key")]);
            let mut c = json!({
                "name": "minio", "image": inp.image(), "args": ["server", "/data", "--console-address", ":9090"],
                "envFrom": [{"secretRef": {"name": root}}],
                "ports": [{"name": "api", "containerPort": 9000, "protocol": "TCP"}, {"name": "console", "containerPort": 9090, "protocol": "TCP"}],
                "readinessProbe": healthcheck_probe(inp, json!({"httpGet": {"path": "/minio/health/ready", "port": 9000}, "periodSeconds": 5})),
            });
            command_override(inp, &mut c);
            let endpoint = format!("{base}.{ns}:9000");
            let bucket = inp.s("bucket");
            vec![
                secret(inp, &root, ns, &[("MINIO_ROOT_USER", inp.s("access_key")), ("MINIO_ROOT_PASSWORD", inp.s("secret_key"))]),
                service(inp, &format!("{base}-hl"), ns, &[("api", 9000)], "ClusterIP", None, true),
                service(inp, &base, ns, &[("api", 9000), ("console", 9090)], "ClusterIP", None, false),
                stateful_set(inp, &base, ns, &format!("{base}-hl"), c, ("data", "/data", &inp.s("size")), &config),
                job(inp, &format!("{base}-bucket"), ns, json!({
                    "name": "create-bucket", "image": images::MINIO_CLIENT,
                    "command": ["/bin/sh", "-c", format!("mc alias set local http://{endpoint} \"$MINIO_ROOT_USER\" \"$MINIO_ROOT_PASSWORD\" && mc mb --ignore-existing local/{bucket}")],
                    "envFrom": [{"secretRef": {"name": root}}],
                })),
            ]
        }
        (Kind::Database, "mongodb") => {
            let user = inp.s("username");
            let pass = inp.s("admin_password");
            let mut c = json!({
                "name": "mongodb", "image": inp.opt("image").unwrap_or_else(|| format!("mongo:{}", inp.s("version"))),
                "envFrom": [{"secretRef": {"name": base}}],
                "ports": [{"name": "mongodb", "containerPort": 27017, "protocol": "TCP"}],
                "readinessProbe": healthcheck_probe(inp, json!({"exec": {"command": ["mongosh", "--quiet", "--eval", "db.adminCommand('ping')"]}, "periodSeconds": 10})),
            });
            command_override(inp, &mut c);
            let config = json!([user, pass]);
            vec![
                secret(inp, &base, ns, &[("MONGO_INITDB_ROOT_USERNAME", user.clone()), ("MONGO_INITDB_ROOT_PASSWORD", pass)]),
                service(inp, &base, ns, &[("mongodb", 27017)], "ClusterIP", None, false),
                stateful_set(inp, &base, ns, &base, c, ("data", "/data/db", &inp.s("storage_size")), &config),
            ]
        }
        (Kind::Broker, "rabbitmq") => {
            let user = inp.s("username");
            let pass = inp.s("admin_password");
            let mut c = json!({
                "name": "rabbitmq", "image": inp.opt("image").unwrap_or_else(|| format!("rabbitmq:{}", inp.s("version"))),
                "envFrom": [{"secretRef": {"name": base}}],
                "ports": [{"name": "amqp", "containerPort": 5672, "protocol": "TCP"}, {"name": "management", "containerPort": 15672, "protocol": "TCP"}],
                "readinessProbe": healthcheck_probe(inp, json!({"exec": {"command": ["rabbitmq-diagnostics", "-q", "ping"]}, "periodSeconds": 10})),
            });
            command_override(inp, &mut c);
            let config = json!([user, pass]);
            let host = format!("{base}.{ns}");
            let queue = inp.s("queue");
            vec![
                secret(inp, &base, ns, &[("RABBITMQ_DEFAULT_USER", user.clone()), ("RABBITMQ_DEFAULT_PASS", pass)]),
                service(inp, &base, ns, &[("amqp", 5672), ("management", 15672)], "ClusterIP", None, false),
                stateful_set(inp, &base, ns, &base, c, ("data", "/var/lib/rabbitmq", &inp.s("storage_size")), &config),
                job(inp, &format!("{base}-queue"), ns, json!({
                    "name": "declare-queue", "image": inp.opt("image").unwrap_or_else(|| format!("rabbitmq:{}", inp.s("version"))),
                    "command": ["/bin/sh", "-c", format!("rabbitmqadmin -H {host} -u \"$RABBITMQ_DEFAULT_USER\" -p \"$RABBITMQ_DEFAULT_PASS\" declare queue name={queue} durable=true")],
                    "envFrom": [{"secretRef": {"name": base}}],
                })),
            ]
        }
        (Kind::Vault, _) => {
            let db_host = inp.r("database", "host");
            let db_port = match inp.r("database", "port") { p if p.is_empty() => "27017".to_string(), p => p };
            let mut secret_data = vec![
                ("KERBEROS_LOGIN_PASSWORD", inp.s("admin_password")),
                ("MONGODB_PASSWORD", inp.r("database", "admin_password")),
                ("STORAGE_ACCESS_KEY", inp.r("storage", "access_key")),
                ("STORAGE_SECRET_KEY", inp.r("storage", "secret_key")),
                ("ACCOUNT_ACCESS_KEY", inp.s("access_key")),
                ("ACCOUNT_SECRET_KEY", inp.s("secret_key")),
            ];
            let external_uri = inp.r("database", "uri");
            if inp.r("database", "admin_password").is_empty() && !external_uri.is_empty() {
                secret_data.push(("MONGODB_URI", external_uri));
            }
            let cm = [
                ("MONGODB_HOST", db_host.split(':').next().unwrap_or_default().to_string()),
                ("MONGODB_DATABASE_CREDENTIALS", "admin".to_string()),
                ("MONGODB_USERNAME", inp.r("database", "username")),
                ("MONGODB_DATABASE_STORAGE", "KerberosStorage".to_string()),
            ];
            let config = json!({"secret": secret_data.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<BTreeMap<_, _>>(), "cm": cm.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<BTreeMap<_, _>>()});
            let mut c = json!({
                "name": "vault", "image": inp.image(),
                "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                "envFrom": [{"configMapRef": {"name": format!("{base}-mongodb")}}, {"secretRef": {"name": base}}],
                "env": [
                    {"name": "GIN_MODE", "value": "release"},
                    {"name": "KERBEROS_LOGIN_USERNAME", "value": inp.s("login_username")},
                    {"name": "MQTTURI", "value": inp.s("mqtt_uri")},
                    {"name": "CONTINUOUS_FORWARDING", "value": "false"},
                ],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1000m", "memory": "512Mi"}},
                "readinessProbe": healthcheck_probe(inp, json!({"httpGet": {"path": "/api/health", "port": 80}, "periodSeconds": 10})),
            });
            command_override(inp, &mut c);
            let wait_host = db_host.split(':').next().unwrap_or_default().to_string();
            let mut pod = json!({"containers": [c]});
            if !wait_host.is_empty() {
                pod["initContainers"] = json!([{
                    "name": "wait-for-database", "image": images::BUSYBOX,
                    "command": ["/bin/sh", "-c", format!("until nc -z {wait_host} {db_port}; do echo waiting for {wait_host}:{db_port}; sleep 2; done")],
                }]);
            }
            let service_type = inp.s("service_type");
            let node_port = inp.attrs.get("node_port").and_then(Value::as_i64);
            vec![
                config_map(inp, &format!("{base}-mongodb"), ns, &cm),
                secret(inp, &base, ns, &secret_data),
                json!({
                    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(inp, &base, Some(ns)),
                    "spec": {"replicas": 1, "minReadySeconds": 10, "selector": {"matchLabels": selector(inp)}, "template": pod_template(inp, &config, pod)}
                }),
                service(inp, &base, ns, &[("http", 80)], &service_type, node_port, false),
            ]
        }
        (Kind::Agent, _) => {
            let name = inp.opt("camera_name").unwrap_or_else(|| instance_name(inp.address));
            let secret_data = vec![
                ("AGENT_CAPTURE_IPCAMERA_RTSP", inp.s("rtsp_url")),
                ("AGENT_CAPTURE_IPCAMERA_SUB_RTSP", inp.s("sub_rtsp_url")),
                ("AGENT_KERBEROSVAULT_ACCESS_KEY", inp.r("vault", "access_key")),
                ("AGENT_KERBEROSVAULT_SECRET_KEY", inp.r("vault", "secret_key")),
                ("AGENT_MQTT_PASSWORD", inp.s("mqtt_password")),
                ("AGENT_TURN_PASSWORD", inp.s("turn_password")),
                ("AGENT_HUB_PRIVATE_KEY", inp.s("hub_private_key")),
            ];
            let mut env = vec![
                ("AGENT_NAME", name),
                ("AGENT_KEY", inp.s("key")),
                ("AGENT_CLOUD", "kstorage".to_string()),
                ("AGENT_KERBEROSVAULT_URI", inp.r("vault", "endpoint")),
                ("AGENT_KERBEROSVAULT_PROVIDER", inp.r("vault", "provider")),
                ("AGENT_KERBEROSVAULT_DIRECTORY", inp.r("vault", "directory")),
                ("AGENT_CAPTURE_CONTINUOUS", inp.s("continuous")),
                ("AGENT_TIMEZONE", inp.s("timezone")),
                // Explicit, so that the image's public defaults (mqtt.kerberos.io, turn-fra1) are never used.
                ("AGENT_MQTT_URI", inp.s("mqtt_uri")),
                ("AGENT_MQTT_USERNAME", inp.s("mqtt_username")),
                ("AGENT_TURN_URI", inp.s("turn_uri")),
                ("AGENT_TURN_USERNAME", inp.s("turn_username")),
                ("AGENT_STUN_URI", inp.s("stun_uri")),
                ("AGENT_HUB_URI", inp.s("hub_uri")),
                ("AGENT_HUB_KEY", inp.s("hub_key")),
            ];
            let mut extra: Vec<(String, String)> = Vec::new();
            if let Some(Value::Map(m)) = inp.attrs.get("env") {
                for (k, v) in m {
                    extra.push((k.clone(), str_of(Some(v))));
                }
            }
            env.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
            let mut env_json: Vec<Json> = env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect();
            env_json.extend(extra.iter().map(|(k, v)| json!({"name": k, "value": v})));
            let config = json!({"secret": secret_data.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<BTreeMap<_, _>>()});
            let mut c = json!({
                "name": "agent", "image": inp.image(), "env": env_json, "envFrom": [{"secretRef": {"name": base}}],
                "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                "resources": resources(inp, "1000m", "512Mi"),
            });
            command_override(inp, &mut c);
            if inp.attrs.contains_key("healthcheck") && !matches!(inp.attrs.get("healthcheck"), Some(Value::Null) | None) {
                c["readinessProbe"] = healthcheck_probe(inp, Json::Null);
            }
            let persistence = matches!(inp.attrs.get("persistence"), Some(Value::Bool(true)));
            let mut pod = json!({"containers": [c]});
            let mut objects = vec![secret(inp, &base, ns, &secret_data)];
            if persistence {
                let claim = format!("{base}-data");
                pod["containers"][0]["volumeMounts"] = json!([
                    {"name": "data", "mountPath": "/home/agent/data/config", "subPath": "config"},
                    {"name": "data", "mountPath": "/home/agent/data/recordings", "subPath": "recordings"},
                ]);
                pod["volumes"] = json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]);
                // An empty config volume needs the template config, owned by the agent user
                // (kerberos-io/agent#44, #80, #94).
                pod["initContainers"] = json!([{
                    "name": "seed-config", "image": inp.image(), "securityContext": {"runAsUser": 0},
                    "command": ["/bin/sh", "-c", "mkdir -p /seed/config /seed/recordings && ([ -f /seed/config/config.json ] || cp /home/agent/data/config.template.json /seed/config/config.json) && chown -R 100:101 /seed"],
                    "volumeMounts": [{"name": "data", "mountPath": "/seed"}],
                }]);
                let mut spec = json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": inp.s("storage_size")}}});
                if let Some(sc) = storage_class(inp) {
                    spec["storageClassName"] = json!(sc);
                }
                objects.push(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta(inp, &claim, Some(ns)), "spec": spec}));
            }
            objects.push(json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(inp, &base, Some(ns)),
                "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": selector(inp)}, "template": pod_template(inp, &config, pod)}
            }));
            objects
        }
        (Kind::Factory, _) => {
            let secret_data = vec![("KERBEROS_LOGIN_PASSWORD", inp.s("admin_password"))];
            let config = json!(secret_data.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<BTreeMap<_, _>>());
            let agent_image = inp.opt("agent_image").unwrap_or_else(|| images::AGENT.to_string());
            let mut c = json!({
                "name": "factory", "image": inp.image(),
                "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                "envFrom": [{"secretRef": {"name": base}}],
                "env": [
                    {"name": "GIN_MODE", "value": "release"},
                    {"name": "KERBEROS_LOGIN_USERNAME", "value": "root"},
                    {"name": "KERBEROS_AGENT_IMAGE", "value": agent_image},
                    {"name": "KERBEROS_AGENT_MEMORY_LIMIT", "value": "256Mi"},
                    {"name": "NAMESPACE", "value": ns},
                    {"name": "FACTORY_CONFIGURATION", "value": "configmap"},
                    {"name": "FACTORY_ENGINE", "value": "kubernetes"},
                    {"name": "FACTORY_ENVIRONMENT", "value": "kubernetes"},
                    {"name": "K8S_PROXY", "value": "http://localhost:80"},
                ],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
            });
            command_override(inp, &mut c);
            let service_type = inp.s("service_type");
            let node_port = inp.attrs.get("node_port").and_then(Value::as_i64);
            let role = json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta(inp, &format!("{ns}-{base}"), None),
                "rules": [{
                    "apiGroups": ["", "apps"],
                    "resources": ["pods", "pods/log", "deployments", "services", "services/proxy", "endpoints", "nodes", "configmaps"],
                    "verbs": ["get", "list", "create", "update", "delete", "watch", "patch"],
                }]
            });
            let binding = json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": meta(inp, &format!("{ns}-{base}"), None),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("{ns}-{base}")},
                "subjects": [{"kind": "ServiceAccount", "name": base, "namespace": ns}],
            });
            let mut pod = json!({"serviceAccountName": base, "containers": [c]});
            pod["automountServiceAccountToken"] = json!(true);
            vec![
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(inp, &base, Some(ns))}),
                role,
                binding,
                secret(inp, &base, ns, &secret_data),
                json!({
                    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(inp, &base, Some(ns)),
                    "spec": {"replicas": 1, "selector": {"matchLabels": selector(inp)}, "template": pod_template(inp, &config, pod)}
                }),
                service(inp, &base, ns, &[("http", 80)], &service_type, node_port, false),
            ]
        }
        (Kind::DriftSchedule, _) => {
            // Read-only access to what `kdeploy drift` reads, and nothing else.
            let read_rules = json!([
                {"apiGroups": [""], "resources": ["secrets", "configmaps", "services", "services/proxy", "persistentvolumeclaims", "serviceaccounts", "pods", "events"], "verbs": ["get", "list"]},
                {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets"], "verbs": ["get", "list"]},
                {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": ["get", "list"]},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list"]},
            ]);
            let mut objects = vec![json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(inp, &base, Some(ns))})];
            let files: BTreeMap<String, String> = match inp.attrs.get("files") {
                Some(Value::Map(m)) => m.iter().map(|(k, v)| (k.clone(), str_of(Some(v)))).collect(),
                _ => BTreeMap::new(),
            };
            objects.push(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(inp, &format!("{base}-stack"), Some(ns)), "data": files}));
            let notify = inp.opt("notify");
            if let Some(url) = &notify {
                objects.push(secret(inp, &base, ns, &[("NOTIFY_URL", url.clone())]));
            }
            let mut namespaces: Vec<String> = match inp.attrs.get("namespaces") {
                Some(Value::List(l)) => l.iter().map(|v| str_of(Some(v))).filter(|n| !n.is_empty()).collect(),
                _ => Vec::new(),
            };
            namespaces.sort();
            namespaces.dedup();
            for target in &namespaces {
                let name = format!("{base}-read");
                objects.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta(inp, &name, Some(target)), "rules": read_rules}));
                objects.push(json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta(inp, &name, Some(target)),
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                    "subjects": [{"kind": "ServiceAccount", "name": base, "namespace": ns}],
                }));
            }
            let cluster_name = format!("{ns}-{base}-read");
            objects.push(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta(inp, &cluster_name, None),
                "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles", "clusterrolebindings"], "verbs": ["get", "list"]}],
            }));
            objects.push(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": meta(inp, &cluster_name, None),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_name},
                "subjects": [{"kind": "ServiceAccount", "name": base, "namespace": ns}],
            }));
            let mut args = vec!["-C".to_string(), "/stack".into(), "drift".into(), "--detailed-exitcode".into()];
            let mut env = vec![json!({"name": "NO_COLOR", "value": "1"})];
            if notify.is_some() {
                args.extend(["--notify".to_string(), "$(NOTIFY_URL)".into()]);
                env.push(json!({"name": "NOTIFY_URL", "valueFrom": {"secretKeyRef": {"name": base, "key": "NOTIFY_URL"}}}));
            }
            objects.push(json!({
                "apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta(inp, &base, Some(ns)),
                "spec": {
                    "schedule": inp.s("schedule"), "concurrencyPolicy": "Forbid", "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 5,
                    "jobTemplate": {"spec": {"backoffLimit": 0, "template": {"metadata": {"labels": labels(inp)}, "spec": {
                        "serviceAccountName": base, "restartPolicy": "Never",
                        "containers": [{
                            "name": "drift", "image": inp.s("image"), "args": args, "env": env,
                            "volumeMounts": [{"name": "stack", "mountPath": "/stack", "readOnly": true}],
                            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
                        }],
                        "volumes": [{"name": "stack", "configMap": {"name": format!("{base}-stack")}}],
                    }}}},
                }
            }));
            objects
        }
        (kind, t) => return Err(format!("{kind} of type {t:?} is not supported on Kubernetes by this kdeploy version")),
    })
}

/// The instance key of an address (`front` for `agent.cam["front"]`), else its name.
pub fn instance_name(address: &str) -> String {
    if let (Some(open), true) = (address.rfind('['), address.ends_with(']')) {
        let key = &address[open + 1..address.len() - 1];
        return key.trim_matches('"').to_string();
    }
    address.rsplit('.').next().unwrap_or(address).to_string()
}

/// `apiVersion/Kind/namespace/name`, the key of an object in the `objects` attribute.
pub fn object_key(obj: &Json) -> String {
    format!(
        "{}/{}/{}/{}",
        obj["apiVersion"].as_str().unwrap_or_default(),
        obj["kind"].as_str().unwrap_or_default(),
        obj["metadata"]["namespace"].as_str().unwrap_or_default(),
        obj["metadata"]["name"].as_str().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn names_are_dns_labels() {
        assert_eq!(base_name("agent.cam[\"Front Door\"]"), "agent-cam-front-door");
        assert_eq!(base_name("module.site[\"a\"].vault.main"), "site-a-vault-main");
        let long = base_name(&format!("agent.cam[\"{}\"]", "x".repeat(80)));
        assert!(long.len() <= 45 && long.starts_with("agent-cam-xxx"), "{long}");
        assert_eq!(instance_name("agent.cam[\"front\"]"), "front");
        assert_eq!(instance_name("agent.gate"), "gate");
    }

    #[test]
    fn agent_env_is_explicit_and_secrets_stay_in_the_secret() {
        let a = attrs(&[
            ("rtsp_url", Value::string("rtsp://u:p@10.0.0.1/s1")),
            ("key", Value::string("k1")),
            ("timezone", Value::string("UTC")),
            ("mqtt_uri", Value::string("")),
            ("continuous", Value::Bool(false)),
        ]);
        let refs: BTreeMap<String, Value> = [("vault".to_string(), Value::Map(attrs(&[("endpoint", Value::string("http://vault-main.kerberos-vault:80/api")), ("access_key", Value::string("AK")), ("secret_key", Value::string("SK")), ("provider", Value::string("minio")), ("directory", Value::string("*"))])))].into();
        let inp = Input { address: "agent.cam[\"front\"]", kind: Kind::Agent, type_name: "kerberos", attrs: &a, refs: &refs, cluster: &BTreeMap::new() };
        let objs = render(&inp).unwrap();
        assert_eq!(objs.iter().map(|o| o["kind"].as_str().unwrap()).collect::<Vec<_>>(), ["Secret", "Deployment"]);
        let dep = &objs[1];
        assert_eq!(dep["metadata"]["namespace"], "kerberos-agent");
        assert_eq!(dep["metadata"]["labels"][MANAGED_BY], "kdeploy");
        let env = dep["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap();
        let get = |n: &str| env.iter().find(|e| e["name"] == n).map(|e| e["value"].clone());
        assert_eq!(get("AGENT_MQTT_URI"), Some(json!("")), "explicit, never the public default");
        assert_eq!(get("AGENT_NAME"), Some(json!("front")));
        assert_eq!(get("AGENT_CLOUD"), Some(json!("kstorage")));
        assert_eq!(get("AGENT_KERBEROSVAULT_URI"), Some(json!("http://vault-main.kerberos-vault:80/api")));
        let text = dep.to_string();
        assert!(!text.contains("SK") && !text.contains("u:p@") && !text.contains("U0s="), "secrets only in the Secret: {text}");
        assert_eq!(objs[0]["data"]["AGENT_KERBEROSVAULT_SECRET_KEY"], "U0s=");
    }

    #[test]
    fn a_changed_referenced_secret_rolls_the_pods() {
        let a = attrs(&[("service_type", Value::string("NodePort")), ("node_port", Value::from_i64(30080)), ("admin_password", Value::string("x"))]);
        let db = |pw: &str| -> BTreeMap<String, Value> { [("database".to_string(), Value::Map(attrs(&[("host", Value::string("mongodb-meta.mongodb")), ("admin_password", Value::string(pw))])))].into() };
        let r1 = db("one");
        let r2 = db("two");
        let c = BTreeMap::new();
        let d1 = render(&Input { address: "vault.main", kind: Kind::Vault, type_name: "kerberos", attrs: &a, refs: &r1, cluster: &c }).unwrap();
        let d2 = render(&Input { address: "vault.main", kind: Kind::Vault, type_name: "kerberos", attrs: &a, refs: &r2, cluster: &c }).unwrap();
        let ann = |objs: &[Json]| objs.iter().find(|o| o["kind"] == "Deployment").unwrap()["spec"]["template"]["metadata"]["annotations"][DIGEST_ANNOTATION].clone();
        assert_ne!(ann(&d1), ann(&d2));
        let svc = d1.iter().find(|o| o["kind"] == "Service").unwrap();
        assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30080);
        let init = &d1.iter().find(|o| o["kind"] == "Deployment").unwrap()["spec"]["template"]["spec"]["initContainers"][0]["command"][2];
        assert!(init.as_str().unwrap().contains("nc -z mongodb-meta.mongodb 27017"), "waits on the real database endpoint: {init}");
    }
}

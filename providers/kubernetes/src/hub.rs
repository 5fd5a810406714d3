//! Kerberos Hub: the public Hub chart, rendered and applied through the chart mechanism
//! ([`crate::chart`]), with values derived from the stack (MongoDB, the queue broker, the Vault
//! account's keys, the MQTT broker and TURN server browsers use for the live view, the license), and the seed of its database, which the chart does not do:
//! a Job kdeploy renders that upserts the first user, its subscription and the settings with
//! mongosh (idempotent, so re-running it is harmless).
//!
//! The Hub user's name is the folder the agents upload under (the account's directory, or the
//! Hub's `username` when that is `*`, by default the stack name as for agents): Hub shows the
//! recordings of the user whose name is the recording's folder.
//!
//! This module decides; it does no API calls.

use std::collections::BTreeMap;

use kdeploy_provider::components::{mqtt, turn, vault};
use kdeploy_provider::{ComponentRef, ErrorKind, ProviderError, Reference, Value};
use serde_json::{Value as Json, json};

use crate::chart::Chart;
use crate::fields::digest;

/// The API group of the prometheus-operator kinds Hub's chart renders (ServiceMonitor).
pub const MONITORING_GROUP: &str = "monitoring.coreos.com/";
/// The release name: the chart's object names (`hub-api`, `mongodb-config`) do not depend on it.
const RELEASE: &str = "hub";
const SEED: &str = "hub-seed";
/// The image the seed Job runs mongosh from, and the one that makes the password's bcrypt hash.
const MONGOSH_IMAGE: &str = "mongo:7.0";
const HTPASSWD_IMAGE: &str = "httpd:2.4-alpine";

/// The hint of a plan whose Hub chart renders ServiceMonitors the cluster does not serve.
pub fn monitoring_hint(address: &str, message: &str) -> String {
    format!(
        "{message}\nHint: Kerberos Hub's chart always renders ServiceMonitors (monitoring.coreos.com/v1), so the prometheus-operator CRDs must exist before {address} is applied: install them (e.g. the prometheus-operator-crds chart) as a chart component and set monitoring = chart.NAME on {address}, or install kube-prometheus-stack on the cluster first."
    )
}

/// What else to change when a LoadBalancer Service of Hub's chart gets no address.
pub const BALANCER_FIX: &str = "change the values that ask for it (Hub's chart renders vault-proxy-svc of type LoadBalancer in mode \"all\", an ingress controller its controller Service): without ingress Hub is reached by the NodePorts kdeploy adds";

fn invalid(address: &str, m: impl std::fmt::Display) -> ProviderError {
    ProviderError::new(ErrorKind::Invalid, format!("{address}: {m}"))
}

fn text(m: &BTreeMap<String, Value>, k: &str) -> String {
    m.get(k).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn ref_attrs<'a>(address: &str, refs: &'a BTreeMap<String, Reference>, k: &str) -> Result<(&'a Reference, &'a BTreeMap<String, Value>), ProviderError> {
    let r = refs.get(k).ok_or_else(|| invalid(address, format!("Hub needs {k} = ...")))?;
    Ok((r, r.attributes.as_map().ok_or_else(|| invalid(address, format!("{} has no attributes yet", r.component.address)))?))
}

/// What Hub and its seed read of the vault: the account's provider and keys, and the folder
/// that is the Hub user's name.
struct VaultAccount {
    uri: String,
    provider: String,
    access_key: String,
    secret_key: String,
    username: String,
}

fn vault_account(address: &str, attrs: &BTreeMap<String, Value>, refs: &BTreeMap<String, Reference>) -> Result<VaultAccount, ProviderError> {
    let (r, v) = ref_attrs(address, refs, "vault")?;
    let up = vault::hub_upload(attrs, v, &r.component.address.to_string()).map_err(|e| match e {
        vault::Unresolved::Invalid(m) => invalid(address, m),
        vault::Unresolved::Unknown => invalid(address, "the vault's account is not known yet"),
    })?;
    let key = |k: &Value| k.as_str().map(str::to_string).ok_or_else(|| invalid(address, "the vault account's keys are not known yet"));
    // Browsers fetch recordings through Hub from Vault: its external URL when it has one.
    let uri = match v.get("external_url") {
        Some(Value::String(u)) if !u.is_empty() => u.clone(),
        _ => text(v, "endpoint"),
    };
    Ok(VaultAccount { uri, provider: up.provider, access_key: key(&up.access_key)?, secret_key: key(&up.secret_key)?, username: up.directory })
}

/// The chart's queue values of the broker reference: queueProvider, queueName, rabbitmq.* or kafka.*.
fn queue_values(address: &str, refs: &BTreeMap<String, Reference>) -> Result<Json, ProviderError> {
    let (r, b) = ref_attrs(address, refs, "broker")?;
    let password = |b: &BTreeMap<String, Value>| if b.contains_key("admin_password") { text(b, "admin_password") } else { text(b, "password") };
    let protocol = vault::broker_protocol(r);
    let host = match r.component.type_name.as_str() {
        "rabbitmq" => format!("{}:{}", text(b, "host"), b.get("port").and_then(Value::as_i64).unwrap_or(5672)),
        "kafka" => text(b, "brokers"),
        _ => text(b, "host"),
    };
    match protocol.as_deref() {
        Some("amqp") => Ok(json!({
            "queueProvider": "RABBITMQ",
            "queueName": text(b, "queue"),
            "rabbitmq": {"host": host, "username": text(b, "username"), "password": password(b), "exchange": text(b, "exchange")},
        })),
        Some("kafka") => Ok(json!({
            "queueProvider": "KAFKA",
            "queueName": text(b, "topic"),
            "kafka": {"broker": host, "username": text(b, "username"), "password": password(b), "mechanism": "PLAIN", "security": "SASL_PLAINTEXT"},
        })),
        _ => Err(invalid(
            address,
            format!(
                "broker = {} is not a queue: Hub's pipeline needs a RabbitMQ or Kafka broker (type rabbitmq or kafka, or external with protocol amqp or kafka)",
                r.component.address
            ),
        )),
    }
}

/// The chart's live-view values of the `mqtt` and `turn` references: what browsers connect to,
/// so their endpoints from outside the cluster.
fn live_view_values(address: &str, refs: &BTreeMap<String, Reference>) -> Result<Json, ProviderError> {
    let unresolved = |e: vault::Unresolved| match e {
        vault::Unresolved::Invalid(m) => invalid(address, m),
        vault::Unresolved::Unknown => invalid(address, "an MQTT or TURN endpoint is not known yet"),
    };
    let mut v = json!({});
    if let Some(broker) = refs.get("mqtt") {
        let b = mqtt::browser(broker).map_err(unresolved)?;
        v["mqtt"] = json!({"host": b.host, "port": b.port, "protocol": b.protocol, "username": b.username, "password": b.password});
    }
    if let Some(turn) = refs.get("turn") {
        let t = turn::browser(turn).map_err(unresolved)?;
        v["turn"] = json!({"host": t.uri, "username": t.username, "password": t.password});
    }
    Ok(v)
}

fn mongodb_values(address: &str, refs: &BTreeMap<String, Reference>) -> Result<Json, ProviderError> {
    let (_, d) = ref_attrs(address, refs, "database")?;
    let password = if d.contains_key("admin_password") { text(d, "admin_password") } else { text(d, "password") };
    let mut m = json!({"host": text(d, "host"), "adminDatabase": "admin", "username": text(d, "username"), "password": password});
    if let Some(uri) = d.get("uri").and_then(Value::as_str).filter(|u| !u.is_empty()) {
        m["uri"] = json!(uri);
    }
    Ok(m)
}

/// Hub's API URL from outside its cluster: `https://api_url` behind the chart's ingress, else
/// the API's NodePort on the cluster's address (unknown while that is); null when neither.
pub fn external_url(attrs: &BTreeMap<String, Value>, cluster: &BTreeMap<String, Value>, address: &str) -> Value {
    let api_url = text(attrs, "api_url");
    if !text(attrs, "ingress").is_empty() {
        return match api_url.as_str() {
            "" => Value::Null,
            u if u.contains("://") => Value::String(u.to_string()),
            u => Value::String(format!("https://{u}")),
        };
    }
    match (attrs.get("api_node_port").and_then(Value::as_i64), cluster.get("server")) {
        (Some(port), Some(Value::String(server))) => Value::String(format!("http://{}:{port}", crate::exposure::server_host(server))),
        (Some(_), Some(Value::Unknown(_))) => Value::Unknown(format!("{address}.external_url")),
        _ => Value::Null,
    }
}

/// Merges `over` into `base`: objects key by key, anything else replaced.
pub fn merge(base: &mut Json, over: &Json) {
    match (base, over) {
        (Json::Object(b), Json::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Json::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// The chart's values: derived from the stack, then the `values` escape hatch on top.
pub fn values(address: &str, attrs: &BTreeMap<String, Value>, refs: &BTreeMap<String, Reference>) -> Result<Json, ProviderError> {
    let acc = vault_account(address, attrs, refs)?;
    let triple = |access: &str, secret: &str| json!({"provider": acc.provider, access: acc.access_key, secret: acc.secret_key});
    let mut kerberosvault = json!({"uri": acc.uri, "provider": acc.provider, "accesskey": acc.access_key, "secretkey": acc.secret_key});
    kerberosvault["archive"] = triple("accesskey", "secretkey");
    kerberosvault["thumbnail"] = triple("accessKey", "secretKey");
    kerberosvault["sprite"] = triple("accessKey", "secretKey");
    let mut api = json!({"jwtSecret": text(attrs, "jwt_secret")});
    let mut frontend = json!({});
    for (obj, attr) in [(&mut api, "api_url"), (&mut frontend, "frontend_url")] {
        if let Some(u) = attrs.get(attr).and_then(Value::as_str).filter(|u| !u.is_empty()) {
            obj["url"] = json!(u);
        }
    }
    let mut v = json!({
        "isPrivate": true,
        "ingress": text(attrs, "ingress"),
        "mongodb": mongodb_values(address, refs)?,
        "kerberosvault": kerberosvault,
        "kerberoshub": {"api": api, "frontend": frontend},
    });
    if let Some(license) = attrs.get("license").and_then(Value::as_str).filter(|l| !l.is_empty()) {
        v["license"] = json!(license);
    }
    merge(&mut v, &queue_values(address, refs)?);
    merge(&mut v, &live_view_values(address, refs)?);
    match attrs.get("values") {
        None | Some(Value::Null) => {}
        Some(over @ Value::Map(_)) => merge(&mut v, &over.to_json()),
        Some(other) => return Err(invalid(address, format!("values must be an object (values = {{ key = ... }}), not a {}", other.type_name()))),
    }
    Ok(v)
}

/// The chart component Hub is: the public chart (or a local copy), its values, and the objects
/// kdeploy adds (the seed, the NodePorts).
pub fn chart(c: &ComponentRef, attrs: &BTreeMap<String, Value>, refs: &BTreeMap<String, Reference>) -> Result<Chart, ProviderError> {
    let address = c.address.to_string();
    let mut source: BTreeMap<String, Value> =
        ["path", "helm", "labels", "namespace"].iter().filter_map(|k| Some((k.to_string(), attrs.get(*k)?.clone()))).collect();
    if text(attrs, "path").is_empty() {
        for k in ["repository", "chart", "version"] {
            source.insert(k.into(), attrs.get(k).cloned().unwrap_or(Value::Null));
        }
    }
    source.insert("values".into(), Value::from_json(&values(&address, attrs, refs)?));
    let mut ch = Chart::of(&address, RELEASE, &source)?;
    let acc = vault_account(&address, attrs, refs)?;
    let (_, d) = ref_attrs(&address, refs, "database")?;
    // The database's own `uri` (credentials of admin; given for an external one, computed by
    // this provider for one it runs), as every other client of it connects.
    let mut extra = seed(attrs, &acc.username, &text(d, "uri"));
    if text(attrs, "ingress").is_empty() {
        extra.extend(node_ports(attrs));
    }
    ch.extra = extra;
    Ok(ch)
}

/// The seed script: reads the user from the environment (the Secret), the bcrypt hash from the
/// file the init container wrote; every write an upsert.
const SEED_SCRIPT: &str = r#"// Written by kdeploy: the first Hub user, its subscription and settings (idempotent upserts).
const fs = require("fs");
const env = process.env;
const hash = fs.readFileSync("/seed/hash", "utf8").trim().split(":").slice(1).join(":");
const kerberos = db.getSiblingDB("Kerberos");
const now = new Date();
kerberos.users.updateOne(
  { username: env.HUB_USERNAME },
  {
    $set: {
      username: env.HUB_USERNAME,
      email: env.HUB_USERNAME + "@kdeploy.local",
      password: hash,
      role: "owner",
      amazon_access_key_id: env.HUB_KEY,
      amazon_secret_access_key: env.HUB_PRIVATE_KEY,
      kerberosvault: { uri: env.VAULT_URI, provider: env.VAULT_PROVIDER, access_key: env.VAULT_ACCESS_KEY, secret_key: env.VAULT_SECRET_KEY },
    },
    $setOnInsert: { created_at: now },
  },
  { upsert: true },
);
kerberos.subscriptions.updateOne(
  { username: env.HUB_USERNAME },
  { $set: { username: env.HUB_USERNAME, plan: "enterprise", status: "active" }, $setOnInsert: { created_at: now } },
  { upsert: true },
);
for (const key of ["plan", "classifications", "sequence", "throttler", "analysis"]) {
  kerberos.settings.updateOne({ key: key }, { $setOnInsert: { key: key, map: {} } }, { upsert: true });
}
kerberos.settings.updateOne({ key: "plan" }, { $set: { "map.enterprise": { level: 4, uploadLimit: 100000000, videoLimit: 100000000, dayLimit: 30 } } });
print("seeded Hub user " + env.HUB_USERNAME);
"#;

/// The seed: a Secret with the user, its keys and the database URI, a ConfigMap with the
/// script, and a Job (named by the digest of both: Jobs are immutable, a changed seed is a new
/// Job) whose init container makes the password's bcrypt hash.
pub fn seed(attrs: &BTreeMap<String, Value>, username: &str, mongo_uri: &str) -> Vec<Json> {
    use base64::Engine as _;
    let ns = text(attrs, "namespace");
    let data: BTreeMap<&str, String> = [
        ("HUB_USERNAME", username.to_string()),
        ("HUB_PASSWORD", text(attrs, "admin_password")),
        ("HUB_KEY", text(attrs, "hub_key")),
        ("HUB_PRIVATE_KEY", text(attrs, "hub_private_key")),
        ("MONGODB_URI", mongo_uri.to_string()),
    ]
    .into_iter()
    .collect();
    let encoded: serde_json::Map<String, Json> =
        data.iter().map(|(k, v)| (k.to_string(), json!(base64::engine::general_purpose::STANDARD.encode(v)))).collect();
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": SEED, "namespace": ns}, "data": encoded});
    let script = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": SEED, "namespace": ns}, "data": {"seed.js": SEED_SCRIPT}});
    let from_secret = |name: &str| json!({"name": name, "valueFrom": {"secretKeyRef": {"name": SEED, "key": name}}});
    let env: Vec<Json> = data.keys().map(|k| from_secret(k)).collect();
    let hash = json!({
        "name": "hash", "image": HTPASSWD_IMAGE,
        "command": ["sh", "-c", "htpasswd -nbBC 10 \"$HUB_USERNAME\" \"$HUB_PASSWORD\" > /seed/hash"],
        "env": [from_secret("HUB_USERNAME"), from_secret("HUB_PASSWORD")],
        "volumeMounts": [{"name": "seed", "mountPath": "/seed"}],
    });
    let upsert = json!({
        "name": "seed", "image": MONGOSH_IMAGE,
        "command": ["sh", "-c", "mongosh --quiet \"$MONGODB_URI\" --file /script/seed.js"],
        "env": env,
        "volumeMounts": [{"name": "seed", "mountPath": "/seed"}, {"name": "script", "mountPath": "/script"}],
    });
    let pod = json!({
        "restartPolicy": "OnFailure",
        "initContainers": [hash],
        "containers": [upsert],
        "volumes": [{"name": "seed", "emptyDir": {}}, {"name": "script", "configMap": {"name": SEED}}],
    });
    let name = format!("{SEED}-{}", &digest(&json!([pod, encoded, SEED_SCRIPT]))[..8]);
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": ns},
        "spec": {"backoffLimit": 6, "template": {"metadata": {"labels": {"app.kubernetes.io/instance": SEED}}, "spec": pod}},
    });
    vec![secret, script, job]
}

/// NodePort Services in front of Hub's frontend and API when there is no ingress (the chart
/// renders none; Kerberos' edge overlay adds the same two).
fn node_ports(attrs: &BTreeMap<String, Value>) -> Vec<Json> {
    let ns = text(attrs, "namespace");
    let port = |k: &str, default: i64| attrs.get(k).and_then(Value::as_i64).unwrap_or(default);
    [("hub-frontend-nodeport", "hub-frontend", 80, port("frontend_node_port", 32080)), ("hub-api-nodeport", "hub-api", 8081, port("api_node_port", 32081))]
        .into_iter()
        .map(|(name, app, target, node_port)| {
            json!({
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
                "spec": {"type": "NodePort", "selector": {"app": app}, "ports": [{"name": "http", "port": 80, "targetPort": target, "nodePort": node_port, "protocol": "TCP"}]},
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn the_api_is_reached_from_outside_by_its_ingress_host_or_its_node_port() {
        let cluster = attrs(&[("server", Value::string("https://10.0.0.5:16443"))]);
        let node_port = attrs(&[("ingress", Value::string("")), ("api_url", Value::string("api.hub.example.com")), ("api_node_port", Value::from_i64(32081))]);
        assert_eq!(external_url(&node_port, &cluster, "hub.main"), Value::string("http://10.0.0.5:32081"));
        let pending = attrs(&[("server", Value::Unknown("cluster.c.server".into()))]);
        assert!(external_url(&node_port, &pending, "hub.main").is_unknown());
        let mut ingress = node_port.clone();
        ingress.insert("ingress".into(), Value::string("nginx"));
        assert_eq!(external_url(&ingress, &cluster, "hub.main"), Value::string("https://api.hub.example.com"));
        ingress.remove("api_url");
        assert_eq!(external_url(&ingress, &cluster, "hub.main"), Value::Null, "an ingress without a host is not reachable by URL");
    }
}

//! `kdeploy adopt`: what runs on a cluster, listed for kdeploy to recognise. Every Deployment
//! and StatefulSet (kube-system excepted), with its images, its containers' environment (inline
//! values, and the Secret keys values are read from) and the Services in front of it.

use std::collections::BTreeMap;

use kdeploy_provider::{EnvSource, ProviderError, Running, Value};
use serde_json::Value as Json;

use crate::KubernetesProvider;
use crate::api::Conn;

/// Namespaces of the cluster itself, never a Kerberos site's.
const SYSTEM: &[&str] = &["kube-system", "kube-public", "kube-node-lease"];

impl KubernetesProvider {
    pub(crate) async fn discover_workloads(&self, cluster: &Value) -> Result<Vec<Running>, ProviderError> {
        let conn = self.conn(Some(cluster)).await?;
        let services = list(&conn, "v1", "Service").await?;
        let mut out = Vec::new();
        for kind in ["Deployment", "StatefulSet"] {
            for w in list(&conn, "apps/v1", kind).await? {
                if let Some(r) = running(kind, &w, &services) {
                    out.push(r);
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

async fn list(conn: &Conn, api_version: &str, kind: &str) -> Result<Vec<Json>, ProviderError> {
    conn.list(api_version, kind, None, "").await.map_err(|e| e.into_provider(&format!("listing {kind}s"), conn))
}

/// One workload as kdeploy sees it; None for the cluster's own.
fn running(kind: &str, w: &Json, services: &[Json]) -> Option<Running> {
    let meta = &w["metadata"];
    let (ns, name) = (meta["namespace"].as_str()?, meta["name"].as_str()?);
    if SYSTEM.contains(&ns) {
        return None;
    }
    let pod = &w["spec"]["template"];
    let containers = pod["spec"]["containers"].as_array().cloned().unwrap_or_default();
    let mut env = BTreeMap::new();
    for c in &containers {
        for e in c["env"].as_array().into_iter().flatten() {
            let Some(var) = e["name"].as_str() else { continue };
            let r = &e["valueFrom"]["secretKeyRef"];
            let source = match (e["value"].as_str(), r["name"].as_str(), r["key"].as_str()) {
                (Some(v), _, _) => EnvSource::Value(v.to_string()),
                (None, Some(secret), Some(key)) => EnvSource::Secret { namespace: ns.to_string(), name: secret.to_string(), key: key.to_string() },
                _ => continue,
            };
            env.entry(var.to_string()).or_insert(source);
        }
    }
    let labels = &meta["labels"];
    let managed_by = labels["app.kubernetes.io/managed-by"]
        .as_str()
        .map(str::to_string)
        .or_else(|| meta["ownerReferences"].as_array().and_then(|o| o.first()).and_then(|o| o["kind"].as_str()).map(str::to_string));
    Some(Running {
        id: format!("{ns}/{name}"),
        name: name.to_string(),
        namespace: Some(ns.to_string()),
        kind: kind.to_string(),
        images: containers.iter().filter_map(|c| c["image"].as_str().map(str::to_string)).collect(),
        env,
        managed_by,
        services: services_of(ns, &pod["metadata"]["labels"], services),
    })
}

/// The Services of `ns` whose selector matches the pod labels, by name, with their first port.
fn services_of(ns: &str, labels: &Json, services: &[Json]) -> Vec<(String, u16)> {
    let mut out: Vec<(String, u16)> = services
        .iter()
        .filter(|s| s["metadata"]["namespace"] == ns)
        .filter(|s| s["spec"]["selector"].as_object().is_some_and(|sel| !sel.is_empty() && sel.iter().all(|(k, v)| labels[k] == *v)))
        .filter_map(|s| {
            let port = s["spec"]["ports"][0]["port"].as_u64().and_then(|p| u16::try_from(p).ok()).unwrap_or(0);
            Some((s["metadata"]["name"].as_str()?.to_string(), port))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_workload_is_described_with_its_secrets_and_services() {
        let w = json!({
            "metadata": {"name": "mongodb", "namespace": "mongodb", "labels": {"app.kubernetes.io/managed-by": "Helm"}},
            "spec": {"template": {"metadata": {"labels": {"app": "mongodb"}}, "spec": {"containers": [{"image": "bitnami/mongodb:8", "env": [
                {"name": "MONGODB_ROOT_USER", "value": "root"},
                {"name": "MONGODB_ROOT_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "mongodb", "key": "mongodb-root-password"}}},
            ]}]}}},
        });
        let services = vec![
            json!({"metadata": {"name": "mongodb", "namespace": "mongodb"}, "spec": {"selector": {"app": "mongodb"}, "ports": [{"port": 27017}]}}),
            json!({"metadata": {"name": "other", "namespace": "mongodb"}, "spec": {"selector": {"app": "x"}, "ports": [{"port": 1}]}}),
        ];
        let r = running("Deployment", &w, &services).unwrap();
        assert_eq!(r.id, "mongodb/mongodb");
        assert_eq!(r.managed_by.as_deref(), Some("Helm"));
        assert_eq!(r.services, vec![("mongodb".to_string(), 27017)]);
        assert_eq!(r.env["MONGODB_ROOT_USER"], EnvSource::Value("root".into()));
        assert_eq!(
            r.env["MONGODB_ROOT_PASSWORD"],
            EnvSource::Secret { namespace: "mongodb".into(), name: "mongodb".into(), key: "mongodb-root-password".into() }
        );
        let system = json!({"metadata": {"name": "coredns", "namespace": "kube-system"}});
        assert!(running("Deployment", &system, &services).is_none());
    }
}

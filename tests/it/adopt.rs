//! `kdeploy adopt`: a site installed from the deployment guide is found on the test API server
//! and written as a stack that validates, is formatted, plans its imports and, once applied,
//! plans no changes.

use serde_json::json;

use crate::import::{guide_deployment, guide_vault_standin, kdeploy, reference_layout, site};

/// What Helm (the Bitnami MongoDB chart) and the MinIO operator (a Tenant) leave next to the
/// guide's manifests: a MongoDB whose root password is in its Secret, and a Tenant's pool.
fn helm_and_operator(server: &kdeploy_kube_testserver::TestServer) {
    use base64::Engine as _;
    for ns in ["mongodb", "minio-tenant"] {
        server.put_object(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    }
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    server.put_object(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mongodb", "namespace": "mongodb"},
        "data": {"mongodb-root-password": b64("yourpassword")},
    }));
    let mongo_env = json!([
        {"name": "MONGODB_ROOT_USER", "value": "root"},
        {"name": "MONGODB_ROOT_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "mongodb", "key": "mongodb-root-password"}}},
    ]);
    server.put_object(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "mongodb", "namespace": "mongodb", "labels": {"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/name": "mongodb"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "mongodb"}},
            "template": {"metadata": {"labels": {"app.kubernetes.io/name": "mongodb"}},
                "spec": {"containers": [{"name": "mongodb", "image": "bitnamilegacy/mongodb:8.0.13-debian-12-r0", "env": mongo_env}]}}},
    }));
    server.put_object(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "mongodb", "namespace": "mongodb"},
        "spec": {"selector": {"app.kubernetes.io/name": "mongodb"}, "ports": [{"port": 27017}]},
    }));
    server.put_object(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "myminio-pool-0", "namespace": "minio-tenant", "ownerReferences": [{"apiVersion": "minio.min.io/v2", "kind": "Tenant", "name": "myminio", "uid": "1"}]},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"v1.min.io/tenant": "myminio"}},
            "template": {"metadata": {"labels": {"v1.min.io/tenant": "myminio", "v1.min.io/pool": "pool-0"}},
                "spec": {"containers": [{"name": "minio", "image": "quay.io/minio/minio:RELEASE.2024-11-07T00-52-20Z"}]}}},
    }));
    for (name, port) in [("myminio-console", 9090), ("myminio-hl", 9000)] {
        server.put_object(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "minio-tenant"},
            "spec": {"selector": {"v1.min.io/tenant": "myminio"}, "ports": [{"port": port}]},
        }));
    }
}

/// The guide's Factory (`kubectl apply` of `base/factory`: inline UI password, agents created in
/// its own namespace) and a Hub installed by its Helm chart.
fn guide_factory_and_hub(server: &kdeploy_kube_testserver::TestServer) {
    for ns in ["kerberos-factory", "kerberos-hub"] {
        server.put_object(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    }
    let env = json!([
        {"name": "GIN_MODE", "value": "release"},
        {"name": "KERBEROS_LOGIN_USERNAME", "value": "root"},
        {"name": "KERBEROS_LOGIN_PASSWORD", "value": "guide-factory-password"},
        {"name": "KERBEROS_AGENT_IMAGE", "value": "kerberos/agent:latest"},
        {"name": "KERBEROS_AGENT_MEMORY_LIMIT", "value": "256Mi"},
        {"name": "NAMESPACE", "value": "kerberos-factory"},
        {"name": "FACTORY_CONFIGURATION", "value": "configmap"},
        {"name": "FACTORY_ENGINE", "value": "kubernetes"},
        {"name": "FACTORY_ENVIRONMENT", "value": "kubernetes"},
        {"name": "K8S_PROXY", "value": "http://localhost:80"},
    ]);
    server.put_object(guide_deployment("kerberos-factory", "factory", "factory", "ghcr.io/uug-ai/factory:v2.0.4", env));
    server.put_object(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "factory-nodeport", "namespace": "kerberos-factory"},
        "spec": {"type": "NodePort", "selector": {"app": "factory"}, "ports": [{"port": 80, "targetPort": 80, "nodePort": 30079, "protocol": "TCP"}]},
    }));
    // A camera added in Factory's UI: Factory made its Deployment, and manages it.
    let camera = json!([{"name": "AGENT_NAME", "value": "camera1"}, {"name": "AGENT_CAPTURE_IPCAMERA_RTSP", "value": "rtsp://10.0.0.9/s1"}]);
    server.put_object(guide_deployment("kerberos-factory", "camera1", "agent", "kerberos/agent:latest", camera));
    server.put_object(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "hub-api", "namespace": "kerberos-hub", "labels": {"app.kubernetes.io/managed-by": "Helm", "app": "hub-api"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "hub-api"}},
            "template": {"metadata": {"labels": {"app": "hub-api"}},
                "spec": {"containers": [{"name": "hub-api", "image": "uugai/hub-api:v1.0.0"}]}}},
    }));
}

#[test]
fn the_reference_layout_is_discovered_written_and_adopted() {
    let site = site();
    reference_layout(&site.server);
    helm_and_operator(&site.server);
    guide_factory_and_hub(&site.server);
    guide_vault_standin(&site.server);
    site.s.write(
        "main.hcl",
        &format!("cluster \"k8s\" {{\n  type       = \"kubernetes\"\n  kubeconfig = \"{}\"\n  context    = \"test\"\n}}\n", site.kubeconfig),
    );

    let adopt = kdeploy(&site, &["adopt", "--cluster", "k8s", "-out", "adopted.hcl"]);
    assert_eq!(adopt.code, 0, "{}", adopt.text());
    for line in [
        "Found kerberos-vault/vault -> vault.vault (imported)",
        "Found mongodb/mongodb -> database.mongodb (external: managed by Helm)",
        "Found kerberos-factory/factory -> factory.factory (imported)",
        "Skipped kerberos-factory/camera1 (agent): created by Factory kerberos-factory/factory, which manages it",
        "Skipped kerberos-hub/hub-api (hub): installed by Helm, and kdeploy does not import a Helm release; declare a `hub` block",
    ] {
        assert!(adopt.stderr.contains(line), "{line}\n{}", adopt.text());
    }
    let hcl = std::fs::read_to_string(site.s.path().join("adopted.hcl")).unwrap();
    for password in ["yourpassword", "guide-factory-password"] {
        assert!(!hcl.contains(password), "a password was copied:\n{hcl}");
    }
    insta::assert_snapshot!("adopt_reference_layout", hcl);
    // Formatted as `kdeploy fmt` formats, and valid.
    let fmt = kdeploy(&site, &["fmt", "-check"]);
    assert_eq!(fmt.code, 0, "{}", fmt.text());
    let valid = kdeploy(&site, &["validate"]);
    assert_eq!(valid.code, 0, "{}", valid.text());
    // Not over an existing file.
    let again = kdeploy(&site, &["adopt", "--cluster", "k8s", "-out", "adopted.hcl"]);
    assert_eq!(again.code, 1, "{}", again.text());

    // The MinIO keys are the operator's (in its config file): asked for, not guessed.
    let vars = ["-var", "myminio_pool_0_access_key=minio", "-var", "myminio_pool_0_secret_key=minio123"];
    let plan = kdeploy(&site, &[&["plan"][..], &vars].concat());
    assert_eq!(plan.code, 0, "{}", plan.text());
    // The UI password the import read from the running Factory is shown as sensitive.
    assert!(!plan.text().contains("guide-factory-password"), "{}", plan.text());
    for line in ["# vault.vault will be imported", "# agent.agent1 will be imported", "# factory.factory will be imported", "Plan: 3 to import,"] {
        assert!(plan.stdout.contains(line), "{line}\n{}", plan.text());
    }
    let applied = kdeploy(&site, &[&["apply", "-auto-approve", "--force-conflicts"][..], &vars].concat());
    assert_eq!(applied.code, 0, "{}", applied.text());
    // Factory was taken over in place: its name and Service kept, its UI password the guide's.
    let env = site.server.workload_env("apps/v1", "Deployment", "kerberos-factory", "factory").expect("the Deployment factory");
    assert_eq!(env.get("KERBEROS_LOGIN_PASSWORD").map(String::as_str), Some("guide-factory-password"), "{env:?}");
    assert_eq!(env.get("KERBEROS_AGENT_IMAGE").map(String::as_str), Some("kerberos/agent:latest"), "{env:?}");
    assert!(site.server.object("v1", "Service", Some("kerberos-factory"), "factory-nodeport").is_some());
    assert!(site.server.object("v1", "Service", Some("kerberos-factory"), "factory").is_none(), "a second Service was created next to the guide's");
    assert!(site.server.object("apps/v1", "Deployment", Some("kerberos-factory"), "camera1").is_some(), "Factory's camera was touched");
    let after = kdeploy(&site, &[&["plan", "-detailed-exitcode"][..], &vars].concat());
    assert_eq!(after.code, 0, "{}", after.text());
    assert!(after.stdout.contains("No changes."), "{}", after.text());
    // Adopted workloads are kdeploy's now: a second adopt finds nothing more to take over.
    let none = kdeploy(&site, &["adopt", "--cluster", "k8s"]);
    assert_eq!(none.code, 0, "{}", none.text());
    assert!(none.stdout.trim_end().lines().all(|l| l.starts_with('#')), "{}", none.text());
    for line in ["mongodb/mongodb: already declared as database.mongodb", "kerberos-factory/camera1 (agent): created by Factory"] {
        assert!(none.stderr.contains(line), "{line}\n{}", none.text());
    }
}

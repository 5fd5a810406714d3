//! Adopting what already runs: `import` blocks and `kdeploy import`, against the test API server
//! holding objects laid out as the deployment guide installs them (namespaces kerberos-vault and
//! kerberos-agent, a Deployment `vault` and a Deployment `agent1` selected by `app: ...`, put
//! there by `kubectl apply`), through the `kdeploy` binary.

use kdeploy_kube_testserver::{Options, TestServer};
use serde_json::{Value, json};

use crate::support::{Out, TestStack, run_binary};

pub(crate) struct Site {
    pub server: TestServer,
    pub s: TestStack,
    pub kubeconfig: String,
}

pub(crate) fn site() -> Site {
    let server = TestServer::start(Options::default());
    let s = TestStack::new(&[]);
    let kubeconfig = server.write_kubeconfig(s.path(), "test").display().to_string();
    Site { server, s, kubeconfig }
}

pub(crate) fn kdeploy(site: &Site, args: &[&str]) -> Out {
    run_binary(site.s.path(), &[], args)
}

/// What `kubectl apply` (client side) leaves: the manager `kubectl-client-side-apply` owns the
/// fields it wrote, as an Update.
fn by_kubectl(fields: Value) -> Value {
    json!([{"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "apps/v1", "fieldsType": "FieldsV1", "fieldsV1": fields}])
}

/// A Deployment of the guide: `app: NAME` labels and selector, one container.
pub(crate) fn guide_deployment(ns: &str, name: &str, container: &str, image: &str, env: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name},
            "managedFields": by_kubectl(json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {format!("k:{{\"name\":\"{container}\"}}"): {"f:image": {}}}}}}}))},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": container, "image": image, "env": env, "ports": [{"containerPort": 80}]}]}},
        },
    })
}

/// The guide's Vault and one agent, as `kubectl apply` of its manifests leaves them.
pub(crate) fn reference_layout(server: &TestServer) {
    for ns in ["kerberos-vault", "kerberos-agent"] {
        server.put_object(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    }
    let vault_env = json!([{"name": "GIN_MODE", "value": "release"}, {"name": "KERBEROS_LOGIN_USERNAME", "value": "root"}]);
    server.put_object(guide_deployment("kerberos-vault", "vault", "vault", "ghcr.io/uug-ai/vault:v1.4.0", vault_env));
    server.put_object(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "vault-nodeport", "namespace": "kerberos-vault"},
        "spec": {"type": "NodePort", "selector": {"app": "vault"}, "ports": [{"port": 80, "targetPort": 80, "nodePort": 30080, "protocol": "TCP"}]},
    }));
    let agent_env = json!([{"name": "AGENT_NAME", "value": "agent1"}, {"name": "AGENT_CAPTURE_IPCAMERA_RTSP", "value": "rtsp://10.0.0.1/s1"}]);
    server.put_object(guide_deployment("kerberos-agent", "agent1", "agent", "kerberos/agent:latest", agent_env));
}

/// The cluster, an external database and Vault.
fn base(kubeconfig: &str) -> String {
    format!(
        r#"cluster "k8s" {{
  type       = "kubernetes"
  kubeconfig = "{kubeconfig}"
  context    = "test"
}}

database "meta" {{
  type = "external"
  uri  = "mongodb://root:yourpassword@mongodb.mongodb:27017/admin"
}}

object_storage "minio" {{
  type       = "external"
  endpoint   = "myminio-hl.minio-tenant:9000"
  bucket     = "mybucket"
  access_key = "minio"
  secret_key = "minio123"
}}

vault "main" {{
  database          = database.meta
  storage           = object_storage.minio
  readiness_timeout = "20s"
}}
"#
    )
}

/// [`base`] and one agent per camera.
fn agents(kubeconfig: &str, cams: &[(&str, &str)]) -> String {
    let cams: Vec<String> = cams.iter().map(|(k, v)| format!("    {k} = \"{v}\"")).collect();
    format!(
        r#"{base}
agent "cam" {{
  for_each = {{
{cams}
  }}
  vault             = vault.main
  rtsp_url          = each.value
  readiness_timeout = "20s"
}}
"#,
        base = base(kubeconfig),
        cams = cams.join("\n")
    )
}

/// [`agents`] and the imports of the guide's Vault and agent1.
fn stack(kubeconfig: &str, cams: &[(&str, &str)]) -> String {
    let imports =
        "\nimport {\n  to = vault.main\n  id = \"kerberos-vault/vault\"\n}\n\nimport {\n  to = agent.cam[\"front\"]\n  id = \"kerberos-agent/agent1\"\n}\n";
    format!("{}{imports}", agents(kubeconfig, cams))
}

/// The Vault stand-in behind the guide's Service `vault-nodeport`, configured from the
/// Deployment `vault` (as [`crate::support::vault_standin`] for kdeploy's names).
pub(crate) fn guide_vault_standin(server: &TestServer) {
    let handle = server.handle();
    let env =
        std::sync::Arc::new(move || handle.workload_env("apps/v1", "Deployment", "kerberos-vault", "vault").ok_or_else(|| "no Deployment vault".to_string()));
    let addr = kdeploy_standins::spawn_vault("127.0.0.1:0", env, Default::default()).expect("start the Vault stand-in");
    server.register_proxy("kerberos-vault", "vault-nodeport", 80, &format!("http://{addr}"));
}

fn deployment(server: &TestServer, ns: &str, name: &str) -> Value {
    server.object("apps/v1", "Deployment", Some(ns), name).unwrap_or_else(|| panic!("Deployment {ns}/{name}"))
}

fn managers(obj: &Value) -> Vec<String> {
    obj["metadata"]["managedFields"].as_array().into_iter().flatten().filter_map(|m| m["manager"].as_str().map(str::to_string)).collect()
}

#[test]
fn the_reference_layout_is_adopted_in_place_then_managed() {
    let site = site();
    reference_layout(&site.server);
    guide_vault_standin(&site.server);
    site.s.write("main.hcl", &stack(&site.kubeconfig, &[("front", "rtsp://10.0.0.1/s1")]));
    let before = ["vault", "agent1"].map(|n| deployment(&site.server, if n == "vault" { "kerberos-vault" } else { "kerberos-agent" }, n));

    // The plan imports both workloads and updates them to what the stack renders.
    let plan = kdeploy(&site, &["plan"]);
    assert_eq!(plan.code, 0, "{}", plan.text());
    for line in [
        "# vault.main will be imported and updated in place",
        "# (imported from \"kerberos-vault/vault\")",
        "# agent.cam[\"front\"] will be imported and updated in place",
        "Plan: 2 to import, 3 to add, 2 to change, 0 to destroy.",
    ] {
        assert!(plan.stdout.contains(line), "{line}\n{}", plan.text());
    }
    let json = kdeploy(&site, &["plan", "-json"]);
    let json: Value = serde_json::from_str(&json.stdout).unwrap();
    let vault = json["resource_changes"].as_array().unwrap().iter().find(|c| c["address"] == "vault.main").unwrap().clone();
    assert_eq!(vault["change"]["importing"]["id"], "kerberos-vault/vault");
    assert_eq!(vault["change"]["actions"], json!(["update"]));
    assert_eq!(json["summary"]["import"], 2);

    // kubectl owns the images kdeploy pins: without --force-conflicts they are not taken.
    let refused = kdeploy(&site, &["apply", "-auto-approve"]);
    assert_ne!(refused.code, 0, "{}", refused.text());
    assert!(refused.stderr.contains("conflict"), "{}", refused.text());
    let applied = kdeploy(&site, &["apply", "-auto-approve", "--force-conflicts"]);
    assert_eq!(applied.code, 0, "{}", applied.text());
    assert!(applied.stdout.contains("Resources: 2 imported,"), "{}", applied.text());

    // The same objects, taken over in place: same uid, the guide's selector, kdeploy a manager;
    // nothing rendered under kdeploy's own names.
    for (old, ns) in before.iter().zip(["kerberos-vault", "kerberos-agent"]) {
        let name = old["metadata"]["name"].as_str().unwrap();
        let now = deployment(&site.server, ns, name);
        assert_eq!(now["metadata"]["uid"], old["metadata"]["uid"], "{ns}/{name} was recreated");
        assert_eq!(now["spec"]["selector"], old["spec"]["selector"], "{ns}/{name}");
        assert!(managers(&now).contains(&"kdeploy".to_string()), "{:?}", managers(&now));
        assert_eq!(now["metadata"]["labels"]["app.kubernetes.io/managed-by"], "kdeploy");
    }
    assert!(site.server.object("apps/v1", "Deployment", Some("kerberos-vault"), "vault-main").is_none());
    assert!(site.server.object("apps/v1", "Deployment", Some("kerberos-agent"), "agent-cam-front").is_none());
    // The guide's Service is the component's: agents reach Vault through it.
    let service = site.server.object("v1", "Service", Some("kerberos-vault"), "vault-nodeport").unwrap();
    assert!(managers(&service).contains(&"kdeploy".to_string()), "{service}");
    assert_eq!(service["spec"]["ports"][0]["nodePort"], 30080);
    assert!(site.server.object("v1", "Service", Some("kerberos-vault"), "vault").is_none());
    assert_eq!(site.s.attr("vault.main", "adopted")["name"], "vault");
    assert_eq!(site.s.attr("vault.main", "endpoint"), "http://vault-nodeport.kerberos-vault:80/api");

    let again = kdeploy(&site, &["plan", "-detailed-exitcode"]);
    assert_eq!(again.code, 0, "{}", again.text());
    assert!(again.stdout.contains("No changes."), "{}", again.text());

    // Managed from now on: a camera is added, the adopted one is not touched.
    let agent1 = deployment(&site.server, "kerberos-agent", "agent1");
    site.s.write("main.hcl", &stack(&site.kubeconfig, &[("front", "rtsp://10.0.0.1/s1"), ("back", "rtsp://10.0.0.2/s1")]));
    let more = kdeploy(&site, &["apply", "-auto-approve"]);
    assert_eq!(more.code, 0, "{}", more.text());
    assert!(more.stdout.contains("Resources: 1 added,"), "{}", more.text());
    assert!(site.server.object("apps/v1", "Deployment", Some("kerberos-agent"), "agent-cam-back").is_some());
    let agent1_now = deployment(&site.server, "kerberos-agent", "agent1");
    assert_eq!(agent1_now["metadata"]["generation"], agent1["metadata"]["generation"]);
}

#[test]
fn kdeploy_import_records_a_lost_component_without_touching_it() {
    let site = site();
    site.server.put_object(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kerberos-vault"}}));
    crate::support::vault_standin(&site.server, "kerberos-vault", "vault-main", Default::default());
    site.s.write("main.hcl", &agents(&site.kubeconfig, &[("front", "rtsp://10.0.0.1/s1")]));
    let first = kdeploy(&site, &["apply", "-auto-approve"]);
    assert_eq!(first.code, 0, "{}", first.text());
    let agent = deployment(&site.server, "kerberos-agent", "agent-cam-front");

    // The state loses it (a restored backup, a state rm); the plan would create it again.
    let rm = kdeploy(&site, &["state", "rm", "agent.cam[\"front\"]"]);
    assert_eq!(rm.code, 0, "{}", rm.text());
    let missing = kdeploy(&site, &["import", "agent.cam[\"front\"]", "kerberos-agent/nothing"]);
    assert_eq!(missing.code, 1, "{}", missing.text());
    assert!(missing.stderr.contains("Cannot import non-existent object"), "{}", missing.text());
    let bad = kdeploy(&site, &["import", "agent.cam[\"side\"]", "kerberos-agent/agent-cam-front"]);
    assert_eq!(bad.code, 1, "{}", bad.text());
    assert!(bad.stderr.contains("Configuration for import target does not exist"), "{}", bad.text());

    let imported = kdeploy(&site, &["import", "agent.cam[\"front\"]", "kerberos-agent/agent-cam-front"]);
    assert_eq!(imported.code, 0, "{}", imported.text());
    assert!(imported.stdout.contains("Import successful!"), "{}", imported.text());
    let again = kdeploy(&site, &["import", "agent.cam[\"front\"]", "kerberos-agent/agent-cam-front"]);
    assert_eq!(again.code, 1, "{}", again.text());
    assert!(again.stderr.contains("already in state"), "{}", again.text());

    // It was kdeploy's already, with the key and password it runs with (read from its Secret,
    // not generated again): nothing to do, nothing rewritten.
    let plan = kdeploy(&site, &["plan"]);
    assert_eq!(plan.code, 0, "{}", plan.text());
    assert!(plan.stdout.contains("No changes."), "{}", plan.text());
    let now = deployment(&site.server, "kerberos-agent", "agent-cam-front");
    assert_eq!((&now["metadata"]["uid"], &now["metadata"]["generation"]), (&agent["metadata"]["uid"], &agent["metadata"]["generation"]));
}

/// Wrong import blocks, each reported at its line with what to write instead.
const BAD_IMPORTS: &str = r#"
import {
  to = vault.mian
  id = "kerberos-vault/vault"
}

import {
  to = "vault.main"
  id = "kerberos-vault/vault"
}

import {
  to = vault.main
}

import {
  to = vault.main
  id = "kerberos-vault/vault"
  name = "vault"
}

import {
  to = vault.main
  id = "kerberos-vault/other"
}
"#;

#[test]
fn bad_import_blocks_are_reported_where_they_are_written() {
    let s = TestStack::new(&[("main.hcl", &crate::support::basic_stack(&[("front", "rtsp://cam/1")])), ("imports.hcl", BAD_IMPORTS)]);
    let out = run_binary(s.path(), &[], &["validate"]);
    let snap = crate::support::Run { code: out.code, stdout: out.stdout, stderr: out.stderr }.snapshot(s.path());
    insta::assert_snapshot!("import_blocks_invalid", snap);
}

#[test]
fn import_ids_must_be_known_strings_and_importable() {
    let world = kdeploy_provider::fake::FakeWorld::new();
    let s = TestStack::new(&[("main.hcl", &crate::support::basic_stack(&[("front", "rtsp://cam/1")]))]);
    s.write("imports.hcl", "import {\n  to = agent.cam[\"front\"]\n  id = vault.main.url\n}\n\nimport {\n  to = vault.main\n  id = 42\n}\n");
    let r = crate::support::run(s.path(), &world, &["plan"]);
    insta::assert_snapshot!("import_ids_invalid", r.snapshot(s.path()));
    // A provider that cannot import says so, at the block.
    s.write("imports.hcl", "import {\n  to = vault.main\n  id = \"vault\"\n}\n");
    let r = crate::support::run(s.path(), &world, &["plan"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("Cannot import") && r.stderr.contains("cannot import existing objects") && r.stderr.contains("imports.hcl:1"), "{}", r.stderr);
}

//! Data sources: values read from objects kdeploy does not manage (an existing Secret), through
//! the `kdeploy` binary against the test API server.

use kdeploy_kube_testserver::{Options, TestServer};
use serde_json::{Value, json};

use crate::support::{TestStack, run_binary};

const PASSWORD: &str = "guide-root-password";

/// The Secret the deployment guide's MongoDB chart creates (`mongodb/mongodb`).
fn mongodb_secret(server: &TestServer, password: &str) {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    server.put_object(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mongodb"}}));
    server.put_object(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "mongodb", "namespace": "mongodb"},
        "data": {"mongodb-root-password": b64(password), "mongodb-passwords": b64("other")},
    }));
}

/// A cluster, the Secret as a data source, and an external database whose uri uses it.
fn stack(kubeconfig: &str, key: &str) -> String {
    format!(
        r#"cluster "k8s" {{
  type       = "kubernetes"
  kubeconfig = "{kubeconfig}"
  context    = "test"
}}

data "kubernetes_secret" "mongo" {{
  namespace = "mongodb"
  name      = "mongodb"
}}

database "meta" {{
  type = "external"
  uri  = "mongodb://root:${{data.kubernetes_secret.mongo.data["{key}"]}}@mongodb.mongodb:27017/admin"
}}
"#
    )
}

fn site() -> (TestServer, TestStack, String) {
    let server = TestServer::start(Options::default());
    let s = TestStack::new(&[]);
    let kubeconfig = server.write_kubeconfig(s.path(), "test").display().to_string();
    (server, s, kubeconfig)
}

#[test]
fn a_secret_is_read_into_an_input_and_never_shown() {
    let (server, s, kubeconfig) = site();
    mongodb_secret(&server, PASSWORD);
    s.write("main.hcl", &stack(&kubeconfig, "mongodb-root-password"));

    let plan = run_binary(s.path(), &[], &["plan"]);
    assert_eq!(plan.code, 0, "{}", plan.text());
    assert!(plan.stdout.contains("# database.meta will be created"), "{}", plan.text());
    assert!(plan.stdout.contains("uri") && plan.stdout.contains("(sensitive value)"), "{}", plan.text());
    // A data source read at plan is not a change.
    assert!(!plan.stdout.contains("data.kubernetes_secret"), "{}", plan.text());
    assert!(!plan.text().contains(PASSWORD), "{}", plan.text());
    let json = run_binary(s.path(), &[], &["plan", "-json"]);
    assert_eq!(json.code, 0, "{}", json.text());
    assert!(!json.stdout.contains(PASSWORD), "{}", json.stdout);
    let parsed: Value = serde_json::from_str(&json.stdout).unwrap();
    let changes = parsed["resource_changes"].as_array().unwrap();
    assert!(changes.iter().all(|c| c["address"] != "data.kubernetes_secret.mongo"), "read at plan, as in Terraform's JSON: {changes:?}");
    assert!(changes.iter().any(|c| c["address"] == "database.meta"), "{changes:?}");

    // The graph: the database depends on the data source, which runs on the cluster.
    let graph = run_binary(s.path(), &[], &["graph", "--format", "text"]);
    assert_eq!(graph.code, 0, "{}", graph.text());
    assert!(graph.stdout.contains("database.meta\n  depends on: data.kubernetes_secret.mongo"), "{}", graph.stdout);

    // A saved plan does not hold the Secret's value; apply reads it again.
    let saved = run_binary(s.path(), &[], &["plan", "-out=tf.plan"]);
    assert_eq!(saved.code, 0, "{}", saved.text());
    let planfile = std::fs::read_to_string(s.path().join("tf.plan")).unwrap();
    assert!(!planfile.contains("mongodb-passwords") && !planfile.contains("\"other\""), "the plan file holds the Secret's data");
    let applied = run_binary(s.path(), &[], &["apply", "tf.plan"]);
    assert_eq!(applied.code, 0, "{}", applied.text());
    assert!(!applied.text().contains(PASSWORD), "{}", applied.text());
    let uri = s.attr("database.meta", "uri");
    assert_eq!(uri, json!(format!("mongodb://root:{PASSWORD}@mongodb.mongodb:27017/admin")));
    let state = s.state();
    assert!(state.resources.iter().all(|r| r.kind != kdeploy_provider::Kind::Data), "a data source was recorded in state");
    assert!(!std::fs::read_to_string(s.state_path()).unwrap().contains("mongodb-passwords"), "the Secret's data is in state");

    let again = run_binary(s.path(), &[], &["plan", "-detailed-exitcode"]);
    assert_eq!(again.code, 0, "{}", again.text());
    assert!(again.stdout.contains("No changes."), "{}", again.text());

    // The Secret changes (a rotated password): the database's uri follows, still hidden.
    mongodb_secret(&server, "rotated-password");
    let rotated = run_binary(s.path(), &[], &["plan", "-detailed-exitcode"]);
    assert_eq!(rotated.code, 2, "{}", rotated.text());
    assert!(rotated.stdout.contains("# database.meta will be updated in place"), "{}", rotated.text());
    assert!(!rotated.text().contains("rotated-password"), "{}", rotated.text());
}

#[test]
fn a_missing_secret_or_key_is_reported_at_its_line() {
    let (server, s, kubeconfig) = site();
    s.write("main.hcl", &stack(&kubeconfig, "mongodb-root-password"));
    let missing = run_binary(s.path(), &[], &["plan"]);
    assert_eq!(missing.code, 1, "{}", missing.text());
    for text in ["Data source not found", "data.kubernetes_secret.mongo reads Secret mongodb/mongodb, which does not exist on cluster.k8s", "main.hcl:7"] {
        assert!(missing.stderr.contains(text), "{text}\n{}", missing.text());
    }

    mongodb_secret(&server, PASSWORD);
    s.write("main.hcl", &stack(&kubeconfig, "mongodb-root-pasword"));
    let key = run_binary(s.path(), &[], &["plan"]);
    assert_eq!(key.code, 1, "{}", key.text());
    for text in ["Invalid index", "The key \"mongodb-root-pasword\" does not exist", "main.hcl:14", "did you mean \"mongodb-root-password\"?"] {
        assert!(key.stderr.contains(text), "{text}\n{}", key.text());
    }
    assert!(!key.text().contains(PASSWORD), "{}", key.text());
}

/// Mistakes in data blocks, found by `validate` without reading anything.
#[test]
fn bad_data_blocks_are_reported_where_they_are_written() {
    let s = TestStack::new(&[(
        "main.hcl",
        r#"cluster "k8s" {
  type = "kubernetes"
}

data "kubernetes_secrets" "a" {
  namespace = "mongodb"
  name      = "mongodb"
}

data "kubernetes_secret" "b" {
  namespace = "mongodb"
}

data "kubernetes_secret" {
  name = "x"
}

locals {
  p = data.kubernetes_secret.c.data["x"]
}
"#,
    )]);
    let out = run_binary(s.path(), &[], &["validate"]);
    let snap = crate::support::Run { code: out.code, stdout: out.stdout, stderr: out.stderr }.snapshot(s.path());
    insta::assert_snapshot!("data_blocks_invalid", snap);
}

/// On a cluster another provider creates in the same plan (EKS), a data source is read at
/// apply, once the cluster exists, and what refers to it waits for it.
#[test]
fn a_data_source_on_a_cluster_created_by_the_plan_is_read_at_apply() {
    use kdeploy_provider::Value;
    let world = kdeploy_provider::fake::FakeWorld::new();
    let s = TestStack::new(&[(
        "main.hcl",
        r#"cluster "eks" {
  type   = "eks"
  region = "eu-west-1"
}

data "kubernetes_secret" "mongo" {
  namespace = "mongodb"
  name      = "mongodb"
}

database "meta" {
  type = "external"
  uri  = "mongodb://root:${data.kubernetes_secret.mongo.data["mongodb-root-password"]}@mongodb.mongodb:27017/admin"
}
"#,
    )]);
    let plan = crate::support::run(s.path(), &world, &["plan"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(plan.stdout.contains("# data.kubernetes_secret.mongo will be read during apply (deferred until cluster.eks exists)"), "{}", plan.stdout);
    assert!(plan.stdout.contains("# database.meta will be created"), "{}", plan.stdout);
    assert!(world.calls().iter().all(|c| c.op != "read_data"), "read at plan");
    let json = crate::support::run(s.path(), &world, &["plan", "-json"]);
    let parsed: serde_json::Value = serde_json::from_str(&json.stdout).unwrap_or_else(|e| panic!("{e}: {}", json.stdout));
    let read =
        parsed["resource_changes"].as_array().unwrap().iter().find(|c| c["address"] == "data.kubernetes_secret.mongo").cloned().expect("a read at apply");
    assert_eq!(read["change"]["actions"], json!(["read"]), "{read}");
    assert_eq!((read["deferred"].clone(), read["action_reason"].clone()), (json!(true), json!("read_because_dependency_pending")), "{read}");

    let secret = Value::Map([("mongodb-root-password".to_string(), Value::string(PASSWORD))].into_iter().collect());
    world.put("data.kubernetes_secret.mongo", Value::Map([("data".to_string(), secret)].into_iter().collect()));
    let apply = crate::support::run(s.path(), &world, &["apply", "-auto-approve"]);
    assert_eq!(apply.code, 0, "{}{}", apply.stdout, apply.stderr);
    assert!(!apply.stdout.contains(PASSWORD), "{}", apply.stdout);
    assert_eq!(s.attr("database.meta", "uri"), json!(format!("mongodb://root:{PASSWORD}@mongodb.mongodb:27017/admin")));
    // Read after the cluster was created (the database, data only, got the value read).
    let ops: Vec<(String, &str)> = world.calls().iter().map(|c| (c.address.clone(), c.op)).collect();
    let at = |addr: &str, op: &str| ops.iter().position(|(a, o)| a == addr && *o == op).unwrap_or_else(|| panic!("{addr} {op}: {ops:?}"));
    assert!(at("cluster.eks", "apply") < at("data.kubernetes_secret.mongo", "read_data"), "{ops:?}");
}

#[test]
fn a_source_whose_arguments_only_apply_knows_is_shown_as_read_during_apply() {
    let (_server, s, kubeconfig) = site();
    // The Secret's name follows a value the storage gets at apply.
    s.write(
        "main.hcl",
        &format!(
            r#"cluster "k8s" {{
  type       = "kubernetes"
  kubeconfig = "{kubeconfig}"
  context    = "test"
}}

object_storage "rec" {{
  type = "minio"
}}

data "kubernetes_secret" "keys" {{
  namespace = "minio"
  name      = "keys-${{object_storage.rec.manifest_digest}}"
}}
"#
        ),
    );
    let plan = run_binary(s.path(), &[], &["plan", "-no-color"]);
    assert_eq!(plan.code, 0, "{}", plan.text());
    assert!(
        plan.stdout.contains("# data.kubernetes_secret.keys will be read during apply\n  # (because its arguments are known only after apply)"),
        "{}",
        plan.stdout
    );
    let json = run_binary(s.path(), &[], &["plan", "-json"]);
    let parsed: Value = serde_json::from_str(&json.stdout).unwrap_or_else(|e| panic!("{e}: {}", json.stdout));
    let read = parsed["resource_changes"].as_array().unwrap().iter().find(|c| c["address"] == "data.kubernetes_secret.keys").cloned().expect("a read at apply");
    assert_eq!((read["change"]["actions"].clone(), read["action_reason"].clone()), (json!(["read"]), json!("read_because_config_unknown")), "{read}");
    assert!(read.get("deferred").is_none(), "its cluster exists: {read}");
}

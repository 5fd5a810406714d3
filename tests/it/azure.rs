//! The Azure provider end to end: the real `kdeploy` binary, run as a child process with
//! AZURE_RESOURCE_MANAGER_ENDPOINT at the local Azure Resource Manager mock (tests/cloud-mocks,
//! documented request/response shapes and long-running-operation protocol), and for the
//! in-cluster phase at the Kubernetes test API server through the test-only
//! KDEPLOY_TEST_AKS_ENDPOINT. Both doubles run in this process, so nothing is skipped.
#![cfg(feature = "azure")]

use base64::Engine;
use kdeploy_cloud_mocks::azure::{Mock, SUB, TOKEN, fixture};
use kdeploy_kube_testserver::{Options, TestServer};

use crate::support::{Out, TestStack, assert_stack_in_cluster, run_binary, stack_on_cloud};

const RG: &str = "kdeploy-it";

fn kdeploy(s: &TestStack, mock: &Mock, extra: &[(&str, &str)], args: &[&str]) -> Out {
    let mut env = vec![("AZURE_RESOURCE_MANAGER_ENDPOINT", mock.base.as_str()), ("AZURE_SUBSCRIPTION_ID", SUB), ("AZURE_ACCESS_TOKEN", TOKEN)];
    env.extend_from_slice(extra);
    run_binary(s.path(), &env, args)
}

fn cloud_stack(location: &str, node_count: i64) -> String {
    format!(
        r#"cluster "cloud" {{
  type           = "aks"
  resource_group = "{RG}"
  location       = "{location}"
  version        = "1.30"
  node_count     = {node_count}
  tags           = {{ team = "video" }}
}}

object_storage "recordings" {{
  type           = "azure_blob"
  account_name   = "kdeployitrec"
  resource_group = "{RG}"
  location       = "westeurope"
  retention_days = 14
}}
"#
    )
}

fn cluster_key() -> String {
    format!("/subscriptions/{SUB}/resourcegroups/{RG}/providers/microsoft.containerservice/managedclusters/cloud").to_lowercase()
}

fn account_key() -> String {
    format!("/subscriptions/{SUB}/resourcegroups/{RG}/providers/microsoft.storage/storageaccounts/kdeployitrec").to_lowercase()
}

fn live(mock: &Mock, key: &str) -> Option<serde_json::Value> {
    mock.state.lock().unwrap().resources.get(key).cloned()
}

#[test]
fn aks_and_blob_lifecycle_against_the_arm_mock() {
    let mock = Mock::start_in_thread();
    let s = TestStack::new(&[("main.hcl", &cloud_stack("westeurope", 2))]);
    let run = |args: &[&str]| kdeploy(&s, &mock, &[], args);

    // From empty: resource group, cluster (followed through Azure-AsyncOperation), storage
    // account (followed through Location), container, lifecycle rule, keys.
    let r = run(&["plan"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("Plan: 2 to add, 0 to change, 0 to destroy."), "{}", r.text());
    let r = run(&["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("Apply complete! Resources: 2 added, 0 changed, 0 destroyed."), "{}", r.text());
    let c = live(&mock, &cluster_key()).expect("the managed cluster exists");
    assert_eq!(c["location"], "westeurope");
    assert_eq!(c["properties"]["provisioningState"], "Succeeded", "the operation was followed to its end");
    assert_eq!(c["properties"]["agentPoolProfiles"][0]["count"], 2);
    assert_eq!(c["tags"]["team"], "video");
    assert!(live(&mock, &account_key()).is_some());
    let policy = live(&mock, &format!("{}/managementpolicies/default", account_key())).expect("lifecycle rule");
    let rule = &policy["properties"]["policy"]["rules"][0]["definition"]["actions"]["baseBlob"]["delete"];
    assert_eq!(rule["daysAfterModificationGreaterThan"], 14, "{policy}");
    assert!(live(&mock, &format!("{}/blobservices/default/containers/recordings", account_key())).is_some());
    let key = fixture("list_keys.json");
    let key: serde_json::Value = serde_json::from_str(&key).unwrap();
    let secret = key["keys"][0]["value"].as_str().unwrap();
    assert_eq!(s.attr("object_storage.recordings", "secret_key"), secret);
    assert!(!r.stdout.contains(secret) && !r.stderr.contains(secret), "the account key is never printed");
    let st = s.state();
    let storage = st.resources.iter().find(|r| r.address.to_string() == "object_storage.recordings").unwrap();
    assert!(storage.sensitive_paths.iter().any(|p| p.to_string().contains("secret_key")), "{:?}", storage.sensitive_paths);
    assert_eq!(s.attr("cluster.cloud", "token_source"), "aks");
    assert!(s.attr("cluster.cloud", "endpoint").as_str().unwrap().ends_with(".azmk8s.io:443"));

    // Again: no changes.
    let r = run(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("No changes."), "{}", r.text());

    // Throttled reads are retried after Retry-After, and the plan still answers.
    mock.error("GET", "/managedclusters/cloud", 429, "error_429.json", &[("Retry-After", "1")], 2);
    let r = run(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(mock.state.lock().unwrap().inject.is_empty(), "both 429 answers were consumed by retries");

    // Node count: an in-place update of the same cluster.
    s.write("main.hcl", &cloud_stack("westeurope", 3));
    let r = run(&["plan"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("Plan: 0 to add, 1 to change, 0 to destroy."), "{}", r.text());
    assert!(!r.stdout.contains("must be replaced"), "{}", r.text());
    let r = run(&["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert_eq!(live(&mock, &cluster_key()).unwrap()["properties"]["agentPoolProfiles"][0]["count"], 3);
    let r = run(&["drift", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "no false positives right after apply: {}", r.text());

    // Location: a replacement (ARM refuses to move a cluster), shown as such.
    s.write("main.hcl", &cloud_stack("northeurope", 3));
    let r = run(&["plan"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("# cluster.cloud must be replaced"), "{}", r.text());
    assert!(r.stdout.contains("Plan: 1 to add, 0 to change, 1 to destroy."), "{}", r.text());
    let r = run(&["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert_eq!(live(&mock, &cluster_key()).unwrap()["location"], "northeurope");
    assert!(mock.state.lock().unwrap().count_containing("DELETE", "/managedclusters/cloud") >= 1, "the old cluster was deleted");
    let r = run(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.text());

    // The storage account deleted out of band: drift, and apply recreates it.
    mock.remove("/storageaccounts/kdeployitrec");
    let r = run(&["drift", "--detailed-exitcode", "--json"]);
    assert_eq!(r.code, 2, "{}", r.text());
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["drift"][0]["address"], "object_storage.recordings", "{}", r.stdout);
    let r = run(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(r.stdout.contains("object_storage.recordings has been deleted"), "{}", r.text());
    assert!(r.stdout.contains("Plan: 1 to add, 0 to change, 0 to destroy."), "{}", r.text());
    let r = run(&["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(live(&mock, &account_key()).is_some());

    // Destroy: recordings are only deleted with --delete-data (the Blob service says whether
    // the container holds any).
    mock.state.lock().unwrap().blobs.insert("kdeployitrec/recordings".into(), vec!["cam/1.mp4".into()]);
    let r = run(&["destroy", "--auto-approve"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.text().contains("container recordings holds recordings") && r.text().contains("--delete-data"), "{}", r.text());
    assert!(live(&mock, &account_key()).is_some(), "the account with its recordings is kept");
    let r = run(&["destroy", "--auto-approve", "--delete-data"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(live(&mock, &cluster_key()).is_none());
    assert!(live(&mock, &account_key()).is_none());
    assert!(s.state().resources.is_empty());
}

#[test]
fn expired_azure_credentials_are_reported_before_any_change() {
    let mock = Mock::start_in_thread();
    let s = TestStack::new(&[("main.hcl", &cloud_stack("westeurope", 2))]);
    mock.error("GET", "/subscriptions/", 401, "error_401_expired.json", &[], 100);
    let r = kdeploy(&s, &mock, &[], &["apply", "--auto-approve"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("expired"), "{}", r.text());
    assert!(r.stderr.contains("az account get-access-token"), "says how to get a fresh token: {}", r.text());
    let log = mock.state.lock().unwrap().log.clone();
    assert!(!log.iter().any(|l| l.starts_with("PUT")), "nothing was created: {log:?}");

    // No credentials at all: a clear message naming the ways to sign in.
    let r = kdeploy(&s, &mock, &[("AZURE_ACCESS_TOKEN", "")], &["plan"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("AZURE_CLIENT_ID"), "{}", r.text());
}

fn whole_stack() -> String {
    stack_on_cloud(
        r#"cluster "cloud" {
  type     = "aks"
  location = "westeurope"
}

object_storage "recordings" {
  type           = "azure_blob"
  account_name   = "kdeploywhole"
  location       = "westeurope"
  retention_days = var.retention_days
}
"#,
        "mongodb://kerberos:secret@cosmos.example.com:10255/admin",
    )
}

#[test]
fn one_apply_creates_the_aks_cluster_then_the_stack_inside_it() {
    let mock = Mock::start_in_thread();
    let server = TestServer::start(Options::default());
    crate::support::vault_standin(&server, "kerberos-vault", "vault-main", Default::default());
    let url = server.url();
    let s = TestStack::new(&[("main.hcl", &whole_stack())]);
    let env = [("KDEPLOY_TEST_AKS_ENDPOINT", url.as_str())];
    let run = |args: &[&str]| kdeploy(&s, &mock, &env, args);

    let r = run(&["plan"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("vault.main") && r.stdout.contains("agent.cam"), "{}", r.text());
    assert!(server.requests().is_empty(), "planning creates did not need the cluster: {:?}", server.requests());

    let r = run(&["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("Apply complete! Resources: 5 added"), "{}", r.text());
    let secret = assert_stack_in_cluster(&server);
    // Vault writes to the storage account with its key.
    let key: serde_json::Value = serde_json::from_str(&fixture("list_keys.json")).unwrap();
    let providers = base64::engine::general_purpose::STANDARD.decode(secret["data"]["VAULT_STORAGE_PROVIDERS"].as_str().unwrap()).unwrap();
    let providers: serde_json::Value = serde_json::from_slice(&providers).unwrap();
    assert_eq!(providers[0]["provider"], "azure", "{providers}");
    assert_eq!(providers[0]["account_key"].as_str(), key["keys"][0]["value"].as_str(), "the account key reaches Vault: {providers}");
    // The in-cluster calls carried the cluster-user token from listClusterUserCredential.
    let log = mock.state.lock().unwrap().log.clone();
    assert!(log.iter().any(|l| l.to_lowercase().contains("/listclusterusercredential")), "{log:?}");
    let policy = live(
        &mock,
        &format!(
            "/subscriptions/{SUB}/resourcegroups/kdeploy-kdeploywhole/providers/microsoft.storage/storageaccounts/kdeploywhole/managementpolicies/default"
        )
        .to_lowercase(),
    )
    .expect("lifecycle rule");
    assert_eq!(
        policy["properties"]["policy"]["rules"][0]["definition"]["actions"]["baseBlob"]["delete"]["daysAfterModificationGreaterThan"], 30,
        "expiry = the Vault retention"
    );

    let r = run(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("No changes."), "{}", r.text());

    // Destroy: the stack inside the cluster first, then the cloud resources.
    let r = run(&["destroy", "--auto-approve", "--delete-data"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(server.object("apps/v1", "Deployment", Some("kerberos-vault"), "vault-main").is_none());
    let left: Vec<String> = mock.state.lock().unwrap().resources.keys().filter(|k| k.contains("/providers/")).cloned().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// The example stack itself, applied through the ARM mock and the test API server, with Vault's
/// account verified.
#[test]
fn the_example_records_after_one_apply() {
    let mock = Mock::start_in_thread();
    let server = crate::support::managed_cluster();
    crate::support::vault_standin(&server, "kerberos-vault", "vault-main", Default::default());
    let url = server.url();
    let s = crate::support::example("azure-aks");
    let env = [("KDEPLOY_TEST_AKS_ENDPOINT", url.as_str())];
    let run = |cmd: &[&str]| kdeploy(&s, &mock, &env, cmd);
    let r = run(&["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("vault.main: account \"kdeploy\" verified (POST /api/ping answered 200"), "{}", r.text());
    let lb = format!("http://{}:80", crate::support::CLOUD_LB_IP);
    assert_eq!(s.attr("vault.main", "url"), lb.as_str(), "Vault's URL is its load balancer's address");
    let env = server.workload_env("apps/v1", "Deployment", "kerberos-vault", "vault-main").unwrap();
    let providers: serde_json::Value = serde_json::from_str(&env["VAULT_STORAGE_PROVIDERS"]).unwrap();
    assert_eq!(providers[0]["provider"], "azure", "{providers}");
    assert_eq!(run(&["plan", "-detailed-exitcode"]).code, 0);
    let r = run(&["destroy", "-auto-approve", "-delete-data"]);
    assert_eq!(r.code, 0, "{}", r.text());
}

/// Every way to sign in that the environment selects reaches the binary, and the error names the
/// credential that was tried (and never the secret), within seconds rather than the SDK's
/// minute of retries.
#[test]
fn service_principal_and_workload_identity_sign_in_from_the_cli() {
    let mock = Mock::start_in_thread();
    let s = TestStack::new(&[("main.hcl", &cloud_stack("westeurope", 2))]);
    let dead = "https://127.0.0.1:1/";
    let secret = "kd-test-client-secret-0123456789";
    let base = [("AZURE_ACCESS_TOKEN", ""), ("AZURE_AUTHORITY_HOST", dead)];
    let plan = |extra: &[(&str, &str)]| {
        let mut env = base.to_vec();
        env.extend_from_slice(extra);
        kdeploy(&s, &mock, &env, &["plan"])
    };

    let r = plan(&[("AZURE_TENANT_ID", "t1"), ("AZURE_CLIENT_ID", "c1"), ("AZURE_CLIENT_SECRET", secret)]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("service principal c1 (tenant t1"), "names the service principal: {}", r.text());
    assert!(r.stderr.contains("127.0.0.1:1"), "used AZURE_AUTHORITY_HOST: {}", r.text());
    assert!(!r.text().contains(secret), "the secret is never printed: {}", r.text());
    // A (wrong) one-letter secret does not turn every "s" of the message into "***".
    let r = plan(&[("AZURE_TENANT_ID", "t1"), ("AZURE_CLIENT_ID", "c1"), ("AZURE_CLIENT_SECRET", "s")]);
    assert!(r.stderr.contains("AZURE_AUTHORITY_HOST for sovereign clouds"), "message intact: {}", r.text());

    let token = s.path().join("federated-token");
    std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln").unwrap();
    let token = token.to_string_lossy().into_owned();
    let r = plan(&[("AZURE_TENANT_ID", "t2"), ("AZURE_CLIENT_ID", "c2"), ("AZURE_FEDERATED_TOKEN_FILE", &token)]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("workload identity (client c2, tenant t2"), "names workload identity: {}", r.text());
    assert!(r.stderr.contains("federated-token"), "names the token file: {}", r.text());
    assert!(r.stderr.contains("127.0.0.1:1"), "used AZURE_AUTHORITY_HOST: {}", r.text());

    let r = plan(&[("AZURE_TENANT_ID", "t2"), ("AZURE_CLIENT_ID", "c2"), ("AZURE_FEDERATED_TOKEN_FILE", "/nonexistent/token")]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("/nonexistent/token"), "names the missing token file: {}", r.text());

    let r = plan(&[
        ("AZURE_USE_MANAGED_IDENTITY", "true"),
        ("AZURE_CLIENT_ID", "c3"),
        ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token"),
        ("IDENTITY_HEADER", "h"),
    ]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("user-assigned managed identity c3"), "names the managed identity: {}", r.text());
    let log = mock.state.lock().unwrap().log.clone();
    assert!(log.is_empty(), "no request reached Resource Manager without a token: {log:?}");
}

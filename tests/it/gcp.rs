//! The GCP provider end to end: the real `kdeploy` binary, run as a child process with the
//! KDEPLOY_GCP_*_URL variables at the local GKE/GCS/IAM mock (tests/cloud-mocks: documented
//! request/response shapes, GKE operations, google.rpc error bodies), and for the in-cluster
//! phase at the Kubernetes test API server through the test-only KDEPLOY_TEST_GKE_ENDPOINT.
//! Both doubles run in this process, so nothing is skipped.
#![cfg(feature = "gcp")]

use base64::Engine;
use kdeploy_cloud_mocks::gcp::{Fault, Mock, TOKEN, fixture};
use kdeploy_kube_testserver::{Options, TestServer};

use crate::support::{Out, TestStack, assert_stack_in_cluster, run_binary, stack_on_cloud};

const PROJECT: &str = "kdeploy-it";

fn kdeploy(s: &TestStack, mock: &Mock, extra: &[(&str, &str)], args: &[&str]) -> Out {
    let mut env = vec![
        ("KDEPLOY_GCP_CONTAINER_URL", mock.url.as_str()),
        ("KDEPLOY_GCP_STORAGE_URL", mock.url.as_str()),
        ("KDEPLOY_GCP_IAM_URL", mock.url.as_str()),
        ("KDEPLOY_GCP_POLL_INTERVAL", "0.05"),
        ("GOOGLE_OAUTH_ACCESS_TOKEN", TOKEN),
    ];
    env.extend_from_slice(extra);
    run_binary(s.path(), &env, args)
}

fn cloud_stack(location: &str, node_count: i64) -> String {
    format!(
        r#"cluster "cloud" {{
  type         = "gke"
  project      = "{PROJECT}"
  location     = "{location}"
  version      = "1.31"
  machine_type = "e2-standard-4"
  node_count   = {node_count}
}}

object_storage "recordings" {{
  type           = "gcs"
  project        = "{PROJECT}"
  bucket         = "kdeploy-it-recordings"
  location       = "europe-west1"
  retention_days = 14
}}
"#
    )
}

fn cluster(mock: &Mock, location: &str) -> Option<serde_json::Value> {
    mock.st().clusters.get(&format!("{PROJECT}/{location}/cloud")).cloned()
}

#[test]
fn gke_and_gcs_lifecycle_against_the_mock_apis() {
    let mock = Mock::start();
    let s = TestStack::new(&[("main.hcl", &cloud_stack("europe-west1-b", 2))]);
    let run = |args: &[&str]| kdeploy(&s, &mock, &[], args);

    // From empty: cluster with its node pool (an operation followed to DONE), bucket with the
    // lifecycle rule, service account and HMAC key.
    let r = run(&["plan"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("Plan: 2 to add, 0 to change, 0 to destroy."), "{}", r.text());
    let r = run(&["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("Apply complete! Resources: 2 added, 0 changed, 0 destroyed."), "{}", r.text());
    let c = cluster(&mock, "europe-west1-b").expect("the GKE cluster exists");
    assert_eq!(c["nodePools"][0]["initialNodeCount"], 2);
    assert_eq!(c["nodePools"][0]["config"]["machineType"], "e2-standard-4");
    assert!(mock.st().count("GET /v1/projects/kdeploy-it/locations/europe-west1-b/operations/") >= 2, "the create operation was polled to DONE");
    let bucket = mock.st().buckets.get("kdeploy-it-recordings").cloned().expect("the bucket exists");
    assert_eq!(bucket["lifecycle"]["rule"][0]["condition"]["age"], 14, "{bucket}");
    assert_eq!(bucket["lifecycle"]["rule"][0]["action"]["type"], "Delete", "{bucket}");
    let secret = fixture("hmac_key.json")["secret"].as_str().unwrap().to_string();
    assert_eq!(s.attr("object_storage.recordings", "secret_key"), secret.as_str());
    assert!(!r.stdout.contains(&secret) && !r.stderr.contains(&secret), "the HMAC secret is never printed");
    assert_eq!(s.attr("cluster.cloud", "token_source"), "gke");
    assert_eq!(s.attr("cluster.cloud", "endpoint"), "https://34.76.12.34");

    // Again: no changes.
    let r = run(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("No changes."), "{}", r.text());

    // Rate limited reads are retried after Retry-After, and the plan still answers.
    mock.fault(Fault { method: "GET", path_contains: "/clusters/cloud", status: 429, retry_after: Some(1), fixture: "error_429.json", times: 2 });
    let r = run(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(mock.st().faults.iter().all(|f| f.times == 0), "both 429 answers were consumed by retries");

    // Node count: an in-place resize of the node pool.
    s.write("main.hcl", &cloud_stack("europe-west1-b", 3));
    let r = run(&["plan"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("Plan: 0 to add, 1 to change, 0 to destroy."), "{}", r.text());
    assert!(!r.stdout.contains("must be replaced"), "{}", r.text());
    let r = run(&["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(
        mock.st().count("POST /v1/projects/kdeploy-it/locations/europe-west1-b/clusters/cloud/nodePools/") >= 1,
        "{:?}",
        mock.st().log.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>()
    );
    assert_eq!(cluster(&mock, "europe-west1-b").unwrap()["currentNodeCount"], 3);
    let r = run(&["drift", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "no false positives right after apply: {}", r.text());

    // Location: a replacement, shown as such.
    s.write("main.hcl", &cloud_stack("europe-west4-a", 3));
    let r = run(&["plan"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("# cluster.cloud must be replaced"), "{}", r.text());
    assert!(r.stdout.contains("Plan: 1 to add, 0 to change, 1 to destroy."), "{}", r.text());
    let r = run(&["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(cluster(&mock, "europe-west1-b").is_none(), "the old cluster is gone");
    assert!(cluster(&mock, "europe-west4-a").is_some());
    let r = run(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.text());

    // The bucket deleted out of band: drift, and apply recreates it.
    mock.st().buckets.remove("kdeploy-it-recordings");
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
    assert!(mock.st().buckets.contains_key("kdeploy-it-recordings"));

    // Destroy: a bucket with recordings is refused without --delete-data, and Vault's key stays.
    mock.st().objects.insert("kdeploy-it-recordings".into(), vec!["cam/1.mp4".into()]);
    let hmac_before = mock.st().hmac.len();
    let r = run(&["destroy", "--auto-approve"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.text().contains("--delete-data"), "{}", r.text());
    assert!(mock.st().buckets.contains_key("kdeploy-it-recordings"), "the bucket is kept");
    assert_eq!(mock.st().hmac.len(), hmac_before, "the HMAC key Vault uses is kept with the bucket");
    let r = run(&["destroy", "--auto-approve", "--delete-data"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(mock.st().clusters.is_empty());
    assert!(mock.st().buckets.is_empty());
    assert!(mock.st().service_accounts.is_empty());
    assert!(s.state().resources.is_empty());
}

#[test]
fn expired_google_credentials_are_reported_before_any_change() {
    let mock = Mock::start();
    let s = TestStack::new(&[("main.hcl", &cloud_stack("europe-west1-b", 2))]);
    let r = kdeploy(&s, &mock, &[("GOOGLE_OAUTH_ACCESS_TOKEN", "ya29.expired")], &["apply", "--auto-approve"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("401") && r.stderr.contains("expired"), "{}", r.text());
    assert!(r.stderr.contains("gcloud auth application-default login"), "says how to refresh them: {}", r.text());
    assert!(mock.st().clusters.is_empty() && mock.st().buckets.is_empty(), "nothing was created");

    // A bad setting is named.
    let r = kdeploy(&s, &mock, &[("KDEPLOY_GCP_POLL_INTERVAL", "soon")], &["plan"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("KDEPLOY_GCP_POLL_INTERVAL"), "{}", r.text());
}

fn whole_stack() -> String {
    stack_on_cloud(
        &format!(
            r#"cluster "cloud" {{
  type     = "gke"
  project  = "{PROJECT}"
  location = "europe-west1-b"
}}

object_storage "recordings" {{
  type           = "gcs"
  project        = "{PROJECT}"
  bucket         = "kdeploy-it-whole"
  retention_days = var.retention_days
}}
"#
        ),
        "mongodb://kerberos:secret@mongo.example.com:27017/admin",
    )
}

#[test]
fn one_apply_creates_the_gke_cluster_then_the_stack_inside_it() {
    let mock = Mock::start();
    let server = TestServer::start(Options::default());
    crate::support::vault_standin(&server, "kerberos-vault", "vault-main", Default::default());
    let url = server.url();
    let s = TestStack::new(&[("main.hcl", &whole_stack())]);
    let env = [("KDEPLOY_TEST_GKE_ENDPOINT", url.as_str())];
    let run = |args: &[&str]| kdeploy(&s, &mock, &env, args);

    let r = run(&["plan"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("vault.main") && r.stdout.contains("agent.cam"), "{}", r.text());
    assert!(server.requests().is_empty(), "planning creates did not need the cluster: {:?}", server.requests());

    let r = run(&["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("Apply complete! Resources: 5 added"), "{}", r.text());
    let secret = assert_stack_in_cluster(&server);
    // Vault writes to the bucket with the HMAC key.
    let access_id = s.attr("object_storage.recordings", "access_key").as_str().unwrap().to_string();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&access_id);
    let providers = base64::engine::general_purpose::STANDARD.decode(secret["data"]["VAULT_STORAGE_PROVIDERS"].as_str().unwrap()).unwrap();
    let providers: serde_json::Value = serde_json::from_slice(&providers).unwrap();
    assert_eq!(providers[0]["access_key"].as_str(), Some(access_id.as_str()), "{secret}");
    let _ = b64;
    let bucket = mock.st().buckets.get("kdeploy-it-whole").cloned().unwrap();
    assert_eq!(bucket["lifecycle"]["rule"][0]["condition"]["age"], 30, "expiry = the Vault retention");

    let r = run(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("No changes."), "{}", r.text());

    let r = run(&["destroy", "--auto-approve", "--delete-data"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(server.object("apps/v1", "Deployment", Some("kerberos-vault"), "vault-main").is_none());
    assert!(mock.st().clusters.is_empty() && mock.st().buckets.is_empty());
}

#[test]
fn workload_identity_federation_credentials_from_ci_drive_the_apply() {
    let mock = Mock::start();
    let s = TestStack::new(&[("main.hcl", &cloud_stack("europe-west1-b", 1))]);
    // What google-github-actions/auth writes: a token file and an external_account config.
    std::fs::write(s.path().join("oidc-token"), kdeploy_cloud_mocks::gcp::SUBJECT_TOKEN).unwrap();
    let config = serde_json::json!({
        "type": "external_account",
        "audience": kdeploy_cloud_mocks::gcp::AUDIENCE,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": format!("{}/v1/token", mock.url),
        "service_account_impersonation_url": format!("{}/v1/projects/-/serviceAccounts/deploy@{PROJECT}.iam.gserviceaccount.com:generateAccessToken", mock.url),
        "credential_source": {"file": s.path().join("oidc-token")},
    });
    let creds = s.path().join("gha-creds.json");
    std::fs::write(&creds, config.to_string()).unwrap();
    let creds = creds.to_string_lossy().into_owned();
    let env = [("GOOGLE_OAUTH_ACCESS_TOKEN", ""), ("GOOGLE_APPLICATION_CREDENTIALS", creds.as_str())];
    let r = kdeploy(&s, &mock, &env, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(cluster(&mock, "europe-west1-b").is_some());
    assert!(mock.st().count("POST /v1/token") >= 1, "the CI token was exchanged at STS");

    // The pool refuses the job's token: a clear error, nothing changed.
    std::fs::write(s.path().join("oidc-token"), "token-of-another-repository").unwrap();
    s.write("main.hcl", &cloud_stack("europe-west1-b", 2));
    let r = kdeploy(&s, &mock, &env, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("workload identity federation") && r.stderr.contains("does not match the expected audience"), "{}", r.text());
    assert_eq!(cluster(&mock, "europe-west1-b").unwrap()["currentNodeCount"], 1);
}

/// The example stack itself, applied through the GKE/GCS mock and the test API server, with
/// Vault's account verified (GCS through its S3-compatible endpoint with the HMAC key).
#[test]
fn the_example_records_after_one_apply() {
    let mock = Mock::start();
    let server = crate::support::managed_cluster();
    crate::support::vault_standin(&server, "kerberos-vault", "vault-main", Default::default());
    let url = server.url();
    let s = crate::support::example("gcp-gke");
    let env = [("KDEPLOY_TEST_GKE_ENDPOINT", url.as_str())];
    let run = |cmd: &[&str]| kdeploy(&s, &mock, &env, cmd);
    let r = run(&["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("vault.main: account \"kdeploy\" verified (POST /api/ping answered 200"), "{}", r.text());
    let lb = format!("http://{}:80", crate::support::CLOUD_LB_IP);
    assert_eq!(s.attr("vault.main", "url"), lb.as_str(), "Vault's URL is its load balancer's address");
    let env = server.workload_env("apps/v1", "Deployment", "kerberos-vault", "vault-main").unwrap();
    let providers: serde_json::Value = serde_json::from_str(&env["VAULT_STORAGE_PROVIDERS"]).unwrap();
    assert_eq!(providers[0]["provider"], "minio", "{providers}");
    assert_eq!(providers[0]["host"], "storage.googleapis.com:443");
    assert_eq!(run(&["plan", "-detailed-exitcode"]).code, 0);
    let r = run(&["destroy", "-auto-approve", "-delete-data"]);
    assert_eq!(r.code, 0, "{}", r.text());
}

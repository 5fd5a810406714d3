//! Real credentials through gcp_auth: a service account key whose token_uri is the mock.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]
#![cfg(feature = "adc")]

use kdeploy_cloud_mocks::gcp as mock;

use std::collections::BTreeMap;
use std::sync::Arc;

use kdeploy_provider::{ComponentRef, ErrorKind, Kind, Provider, ReadRequest, ReadResult, Value};
use kdeploy_provider_gcp::auth::{AccessTokens, AdcTokens};
use kdeploy_provider_gcp::{Config, GcpProvider};
use mock::{Mock, TOKEN};

fn key_json(m: &Mock) -> String {
    let raw = std::fs::read_to_string(format!("{}/gcp/service_account_key.json", kdeploy_cloud_mocks::FIXTURES)).unwrap();
    raw.replace("MOCK_URL", &m.url)
}

#[tokio::test]
async fn service_account_key_tokens_reach_the_apis() {
    let m = Mock::start();
    let tokens = AdcTokens::from_service_account_json(&key_json(&m)).unwrap();
    assert_eq!(tokens.project_id().await.as_deref(), Some("p1"));
    assert_eq!(tokens.access_token().await.unwrap(), TOKEN);
    let p = GcpProvider::new(Arc::new(tokens), Config::with_base_url(&m.url)).unwrap();
    let recorded = Value::Map(BTreeMap::from([
        ("project".to_string(), Value::string("p1")),
        ("location".to_string(), Value::string("europe-west1-b")),
        ("cluster_name".to_string(), Value::string("cloud")),
    ]));
    let c = ComponentRef { address: "cluster.cloud".parse().unwrap(), kind: Kind::Cluster, type_name: "gke".into() };
    let r = p.read(vec![ReadRequest { component: c, recorded, cluster: None }]).await.unwrap();
    assert_eq!(r, vec![ReadResult::Missing]);
    let st = m.st();
    let assertion_posts = st.count("POST /token");
    assert_eq!(assertion_posts, 1, "the token is cached");
}

#[tokio::test]
async fn revoked_keys_are_reported_as_unauthorized() {
    let m = Mock::start();
    m.st().reject_token_requests = true;
    let tokens = AdcTokens::from_service_account_json(&key_json(&m)).unwrap();
    let e = tokens.access_token().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unauthorized);
    assert!(e.message.contains("expired or revoked"), "{}", e.message);
}

fn federation_config(m: &Mock, source: serde_json::Value, impersonate: bool) -> serde_json::Value {
    let mut c = serde_json::json!({
        "type": "external_account",
        "audience": mock::AUDIENCE,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": format!("{}/v1/token", m.url),
        "credential_source": source,
    });
    if impersonate {
        c["service_account_impersonation_url"] =
            format!("{}/v1/projects/-/serviceAccounts/deploy@p1.iam.gserviceaccount.com:generateAccessToken", m.url).into();
    }
    c
}

#[tokio::test]
async fn workload_identity_federation_from_a_token_file_with_impersonation() {
    let m = Mock::start();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("oidc-token");
    std::fs::write(&token_file, format!("{}\n", mock::SUBJECT_TOKEN)).unwrap();
    let config = federation_config(&m, serde_json::json!({"file": token_file}), true);
    let tokens = AdcTokens::from_external_account_json(&config, "ci-credentials.json").unwrap();
    assert_eq!(tokens.access_token().await.unwrap(), TOKEN, "the impersonated service account's token");
    assert_eq!(tokens.access_token().await.unwrap(), TOKEN);
    let st = m.st();
    assert_eq!(st.count("POST /v1/token"), 1, "exchanged once, then cached");
    assert_eq!(st.count("POST /v1/projects/-/serviceAccounts/deploy@p1.iam.gserviceaccount.com:generateAccessToken"), 1);
}

#[tokio::test]
async fn workload_identity_federation_from_a_url_source_without_impersonation() {
    let m = Mock::start();
    let source = serde_json::json!({
        "url": format!("{}/oidc-token?audience=https://iam.googleapis.com/x", m.url),
        "headers": {"Authorization": format!("Bearer {}", mock::OIDC_REQUEST_TOKEN)},
        "format": {"type": "json", "subject_token_field_name": "value"}
    });
    let tokens = AdcTokens::from_external_account_json(&federation_config(&m, source, false), "ci.json").unwrap();
    assert_eq!(tokens.access_token().await.unwrap(), mock::FEDERATED_TOKEN, "the federated token itself");
    assert_eq!(m.st().count("GET /oidc-token"), 1);
}

#[tokio::test]
async fn a_refused_federation_says_what_to_check() {
    let m = Mock::start();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("oidc-token");
    std::fs::write(&token_file, "a-token-for-another-audience").unwrap();
    let config = federation_config(&m, serde_json::json!({"file": token_file}), true);
    let tokens = AdcTokens::from_external_account_json(&config, "ci.json").unwrap();
    let e = tokens.access_token().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unauthorized);
    assert!(
        e.message.contains("ci.json") && e.message.contains("invalid_grant") && e.message.contains("does not match the expected audience"),
        "{}",
        e.message
    );
    assert!(e.message.contains(mock::AUDIENCE), "names the pool provider: {}", e.message);
    assert_eq!(m.st().count("POST /v1/projects/"), 0, "no impersonation without a federated token");

    // A missing token file is named.
    std::fs::remove_file(&token_file).unwrap();
    let e = tokens.access_token().await.unwrap_err();
    assert!(e.message.contains("reading the subject token file"), "{}", e.message);
}

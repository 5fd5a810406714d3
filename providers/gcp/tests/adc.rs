//! Real credentials through gcp_auth: a service account key whose token_uri is the mock.
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
    let c = ComponentRef {
        address: "cluster.cloud".into(),
        kind: Kind::Cluster,
        type_name: "gke".into(),
    };
    let r = p
        .read(vec![ReadRequest {
            component: c,
            recorded,
            cluster: None,
        }])
        .await
        .unwrap();
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

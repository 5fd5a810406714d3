//! GKE against the local mock API: create with LRO polling, no-op re-plan, in-place updates,
//! replacement, out-of-band deletion, delete, retries and credential errors.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use kdeploy_cloud_mocks::gcp as mock;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kdeploy_provider::{
    ApplyRequest, AttrPath, ComponentRef, DeleteRequest, ErrorKind, Kind, PlanRequest, PlanResponse, Provider, ReadRequest, ReadResult, Value, schema,
};
use kdeploy_provider_gcp::{Config, GcpProvider, StaticToken};
use mock::{Fault, Mock, TOKEN};

fn provider(m: &Mock, token: &str) -> GcpProvider {
    let mut config = Config::with_base_url(&m.url);
    config.poll_interval = Duration::from_millis(5);
    config.retry.base_backoff = Duration::from_millis(10);
    GcpProvider::new(Arc::new(StaticToken(token.into())), config).unwrap()
}

fn cref() -> ComponentRef {
    ComponentRef { address: "cluster.cloud".parse().unwrap(), kind: Kind::Cluster, type_name: "gke".into() }
}

fn desired(location: &str, count: i64, auto: Option<(i64, i64)>) -> Value {
    let mut m = BTreeMap::new();
    m.insert("project".to_string(), Value::string("p1"));
    m.insert("location".to_string(), Value::string(location));
    m.insert("name".to_string(), Value::Null);
    m.insert("version".to_string(), Value::string("1.31"));
    m.insert("machine_type".to_string(), Value::string("e2-standard-2"));
    m.insert("node_count".to_string(), Value::from_i64(count));
    m.insert("min_nodes".to_string(), auto.map(|a| Value::from_i64(a.0)).unwrap_or(Value::Null));
    m.insert("max_nodes".to_string(), auto.map(|a| Value::from_i64(a.1)).unwrap_or(Value::Null));
    Value::Map(m)
}

async fn plan(p: &GcpProvider, desired: &Value, prior: Option<&Value>) -> PlanResponse {
    let s = schema(Kind::Cluster, "gke").unwrap();
    let refs = BTreeMap::new();
    p.plan(PlanRequest { component: cref(), schema: &s, prior, recorded: prior, desired, cluster: None, refs: &refs, force_conflicts: false }).await.unwrap()
}

async fn apply(p: &GcpProvider, planned: Value, prior: Option<Value>) -> Result<Value, kdeploy_provider::ProviderError> {
    p.apply(ApplyRequest { component: cref(), prior, planned, cluster: None, refs: BTreeMap::new(), force_conflicts: false }).await.map(|r| r.attributes)
}

async fn read(p: &GcpProvider, recorded: &Value) -> Result<ReadResult, kdeploy_provider::ProviderError> {
    p.read(vec![ReadRequest { component: cref(), recorded: recorded.clone(), cluster: None }]).await.map(|mut r| r.remove(0))
}

fn get<'a>(v: &'a Value, k: &str) -> &'a Value {
    v.as_map().unwrap().get(k).unwrap_or(&Value::Null)
}

async fn create(p: &GcpProvider, d: &Value) -> Value {
    let planned = plan(p, d, None).await.planned;
    apply(p, planned, None).await.unwrap()
}

#[tokio::test]
async fn create_from_empty_waits_for_the_operation_and_fills_kubernetes_access() {
    let m = Mock::start();
    let p = provider(&m, TOKEN);
    let first = plan(&p, &desired("europe-west1-b", 2, Some((1, 4))), None).await;
    assert!(get(&first.planned, "endpoint").is_unknown());
    assert_eq!(get(&first.planned, "token_source"), &Value::string("gke"));
    let live = apply(&p, first.planned, None).await.unwrap();
    assert_eq!(get(&live, "endpoint"), &Value::string("https://34.76.12.34"));
    assert_eq!(get(&live, "certificate_authority"), &Value::string(mock::fixture("cluster.json")["masterAuth"]["clusterCaCertificate"].as_str().unwrap()));
    assert_eq!(get(&live, "token_source"), &Value::string("gke"));
    assert_eq!(get(&live, "cluster_name"), &Value::string("cloud"));
    assert_eq!(get(&live, "version"), &Value::string("1.31"), "the stack's version prefix is kept");
    assert!(!live.contains_unknown());
    {
        let st = m.st();
        let body = &st.bodies("POST /v1/projects/p1/locations/europe-west1-b/clusters")[0];
        let pool = &body["cluster"]["nodePools"][0];
        assert_eq!(pool["name"], "default");
        assert_eq!(pool["initialNodeCount"], 2);
        assert_eq!(pool["config"]["machineType"], "e2-standard-2");
        assert_eq!(pool["autoscaling"], serde_json::json!({"enabled": true, "minNodeCount": 1, "maxNodeCount": 4}));
        assert_eq!(body["cluster"]["initialClusterVersion"], "1.31");
        assert_eq!(st.count("GET /v1/projects/p1/locations/europe-west1-b/operations/operation-1-CREATE_CLUSTER"), 2, "polled until DONE");
    }
    // The token source hands the same credentials to the Kubernetes provider.
    assert_eq!(p.token_source().token(&live).await.unwrap(), TOKEN);
}

#[tokio::test]
async fn replan_of_an_unchanged_cluster_is_a_no_op() {
    let m = Mock::start();
    let p = provider(&m, TOKEN);
    let d = desired("europe-west1-b", 2, None);
    let applied = create(&p, &d).await;
    let ReadResult::Found { attributes, .. } = read(&p, &applied).await.unwrap() else { panic!("missing") };
    assert_eq!(attributes, applied);
    let again = plan(&p, &d, Some(&attributes)).await;
    assert_eq!(again.planned, attributes);
    assert!(again.requires_replace.is_empty());
}

#[tokio::test]
async fn node_count_and_autoscaling_change_in_place() {
    let m = Mock::start();
    let p = provider(&m, TOKEN);
    let applied = create(&p, &desired("europe-west1-b", 2, None)).await;
    let scaled = plan(&p, &desired("europe-west1-b", 3, None), Some(&applied)).await;
    assert!(scaled.requires_replace.is_empty());
    let live = apply(&p, scaled.planned, Some(applied)).await.unwrap();
    assert_eq!(
        m.st().bodies("POST /v1/projects/p1/locations/europe-west1-b/clusters/cloud/nodePools/default:setSize"),
        vec![serde_json::json!({"nodeCount": 3})]
    );
    let ReadResult::Found { attributes, .. } = read(&p, &live).await.unwrap() else { panic!() };
    assert_eq!(get(&attributes, "node_count"), &Value::from_i64(3));

    let auto = plan(&p, &desired("europe-west1-b", 3, Some((1, 5))), Some(&attributes)).await;
    assert!(auto.requires_replace.is_empty());
    let live = apply(&p, auto.planned, Some(attributes)).await.unwrap();
    assert_eq!(get(&live, "max_nodes"), &Value::from_i64(5));
    let st = m.st();
    assert_eq!(
        st.bodies("POST /v1/projects/p1/locations/europe-west1-b/clusters/cloud/nodePools/default:setAutoscaling")[0]["autoscaling"],
        serde_json::json!({"enabled": true, "minNodeCount": 1, "maxNodeCount": 5})
    );
    assert_eq!(
        st.count("POST /v1/projects/p1/locations/europe-west1-b/clusters/cloud/nodePools/default:setSize"),
        1,
        "no resize when only autoscaling changed"
    );
    assert_eq!(st.log.iter().filter(|(l, _)| l == "POST /v1/projects/p1/locations/europe-west1-b/clusters").count(), 1, "updated, not recreated");
}

#[tokio::test]
async fn version_upgrade_updates_control_plane_then_nodes() {
    let m = Mock::start();
    let p = provider(&m, TOKEN);
    let applied = create(&p, &desired("europe-west1-b", 2, None)).await;
    let mut d = desired("europe-west1-b", 2, None);
    if let Value::Map(x) = &mut d {
        x.insert("version".into(), Value::string("1.32"));
    }
    let up = plan(&p, &d, Some(&applied)).await;
    assert!(up.requires_replace.is_empty());
    let live = apply(&p, up.planned, Some(applied)).await.unwrap();
    assert_eq!(get(&live, "version"), &Value::string("1.32"));
    let st = m.st();
    assert_eq!(st.bodies("PUT /v1/projects/p1/locations/europe-west1-b/clusters/cloud")[0]["update"]["desiredMasterVersion"], "1.32");
    assert_eq!(
        st.bodies("PUT /v1/projects/p1/locations/europe-west1-b/clusters/cloud/nodePools/default")[0],
        serde_json::json!({"nodeVersion": "1.32", "imageType": "COS_CONTAINERD"})
    );
}

#[tokio::test]
async fn location_change_replaces_the_cluster() {
    let m = Mock::start();
    let p = provider(&m, TOKEN);
    let applied = create(&p, &desired("europe-west1-b", 2, None)).await;
    let moved = plan(&p, &desired("us-central1", 2, None), Some(&applied)).await;
    assert_eq!(moved.requires_replace, vec![AttrPath::attr("location")]);
    assert!(get(&moved.planned, "endpoint").is_unknown());
}

#[tokio::test]
async fn deleted_out_of_band_reads_missing_and_delete_is_idempotent() {
    let m = Mock::start();
    let p = provider(&m, TOKEN);
    let applied = create(&p, &desired("europe-west1-b", 2, None)).await;
    m.st().clusters.clear();
    assert_eq!(read(&p, &applied).await.unwrap(), ReadResult::Missing);
    p.delete(DeleteRequest { component: cref(), prior: applied, cluster: None, delete_data: false }).await.unwrap();
}

#[tokio::test]
async fn delete_waits_for_the_operation() {
    let m = Mock::start();
    let p = provider(&m, TOKEN);
    let applied = create(&p, &desired("europe-west1-b", 2, None)).await;
    p.delete(DeleteRequest { component: cref(), prior: applied.clone(), cluster: None, delete_data: false }).await.unwrap();
    assert!(m.st().clusters.is_empty());
    assert_eq!(m.st().count("GET /v1/projects/p1/locations/europe-west1-b/operations/operation-2-DELETE_CLUSTER"), 1);
    assert_eq!(read(&p, &applied).await.unwrap(), ReadResult::Missing);
}

#[tokio::test]
async fn failed_operation_fails_the_apply_with_its_message() {
    let m = Mock::start();
    let p = provider(&m, TOKEN);
    m.st().fail_next_operation = Some(serde_json::json!({"code": 8, "message": "Insufficient regional quota to satisfy request: resource \"CPUS\"."}));
    let planned = plan(&p, &desired("europe-west1-b", 2, None), None).await.planned;
    let e = apply(&p, planned, None).await.unwrap_err();
    assert!(e.message.contains("Insufficient regional quota"), "{}", e.message);
    assert!(e.message.contains("operation-1-CREATE_CLUSTER failed"), "{}", e.message);
}

#[tokio::test]
async fn rate_limits_are_retried_honouring_retry_after() {
    let m = Mock::start();
    let p = provider(&m, TOKEN);
    let applied = create(&p, &desired("europe-west1-b", 2, None)).await;
    m.fault(Fault { method: "GET", path_contains: "/clusters/cloud", status: 429, retry_after: Some(1), fixture: "error_429.json", times: 1 });
    let before = m.st().count("GET /v1/projects/p1/locations/europe-west1-b/clusters/cloud");
    let start = Instant::now();
    assert!(matches!(read(&p, &applied).await.unwrap(), ReadResult::Found { .. }));
    assert!(start.elapsed() >= Duration::from_secs(1), "waited for Retry-After");
    assert_eq!(m.st().count("GET /v1/projects/p1/locations/europe-west1-b/clusters/cloud") - before, 2);

    // Three 429s in a row: give up after 3 attempts with the API's message.
    m.fault(Fault { method: "GET", path_contains: "/clusters/cloud", status: 429, retry_after: None, fixture: "error_429.json", times: 5 });
    let before = m.st().count("GET /v1/projects/p1/locations/europe-west1-b/clusters/cloud");
    let e = read(&p, &applied).await.unwrap_err();
    assert!(e.message.contains("RESOURCE_EXHAUSTED") && e.message.contains("after 3 attempts"), "{}", e.message);
    assert_eq!(m.st().count("GET /v1/projects/p1/locations/europe-west1-b/clusters/cloud") - before, 3);
}

#[tokio::test]
async fn other_client_errors_are_not_retried_and_credentials_are_reported_clearly() {
    let m = Mock::start();
    // Expired token: 401 UNAUTHENTICATED, once.
    let expired = provider(&m, "ya29.expired");
    let planned = plan(&expired, &desired("europe-west1-b", 2, None), None).await.planned;
    let e = apply(&expired, planned.clone(), None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unauthorized);
    assert!(e.message.contains("HTTP 401 UNAUTHENTICATED") && e.message.contains("expired"), "{}", e.message);
    assert_eq!(m.st().log.len(), 1, "401 is not retried");

    // Missing permission: 403 PERMISSION_DENIED on create.
    let p = provider(&m, TOKEN);
    m.fault(Fault { method: "POST", path_contains: "/clusters", status: 403, retry_after: None, fixture: "error_403.json", times: 3 });
    let e = apply(&p, planned, None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unauthorized);
    assert!(e.message.contains("container.clusters.create") && e.message.contains("IAM roles"), "{}", e.message);
    assert_eq!(m.st().count("POST /v1/projects/p1/locations/europe-west1-b/clusters"), 1, "403 is not retried");
}

#[tokio::test]
async fn an_unreachable_endpoint_fails_at_once_instead_of_retrying() {
    // A server that accepts connections and closes them without answering (a dead proxy).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(conn);
        }
    });
    let p = GcpProvider::new(Arc::new(StaticToken(TOKEN.into())), Config::with_base_url(&url)).unwrap();
    let recorded = Value::Map(BTreeMap::from([
        ("project".to_string(), Value::string("p1")),
        ("location".to_string(), Value::string("europe-west1-b")),
        ("cluster_name".to_string(), Value::string("cloud")),
    ]));
    let e = p.read(vec![ReadRequest { component: cref(), recorded, cluster: None }]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unreachable, "{}", e.message);
    assert!(e.message.contains("Check the network"), "{}", e.message);
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "transport failures are not retried");

    // Nothing listening at all: the same, without waiting for a timeout.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let p = GcpProvider::new(Arc::new(StaticToken(TOKEN.into())), Config::with_base_url(&format!("http://{closed}"))).unwrap();
    let recorded = Value::Map(BTreeMap::from([
        ("project".to_string(), Value::string("p1")),
        ("location".to_string(), Value::string("europe-west1-b")),
        ("cluster_name".to_string(), Value::string("cloud")),
    ]));
    let e = p.read(vec![ReadRequest { component: cref(), recorded, cluster: None }]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unreachable, "{}", e.message);
}

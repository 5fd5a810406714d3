//! The Azure provider against a local mock of Azure Resource Manager (see `mock`).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use kdeploy_cloud_mocks::azure as mock;

mod identity;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kdeploy_provider::{
    ApplyRequest, AttrPath, ComponentRef, DeleteRequest, ErrorKind, Kind, PlanRequest, PlanResponse, Provider, ReadRequest, ReadResult, Value, schema,
};
use kdeploy_provider_azure::{Arm, AzureProvider, StaticToken};
use mock::{Mock, SUB, TOKEN};

struct Env {
    mock: Mock,
    provider: AzureProvider,
    progress: Arc<Mutex<Vec<String>>>,
}

async fn env_with_token(token: &str) -> Env {
    let mock = Mock::start().await;
    let progress = Arc::new(Mutex::new(Vec::new()));
    let mut arm = Arm::new(&mock.base, SUB, Arc::new(StaticToken(token.into())));
    arm.poll_interval = Duration::from_millis(5);
    arm.max_wait = Duration::from_millis(20);
    arm.lro_timeout = Duration::from_secs(20);
    let p = progress.clone();
    arm.progress = Arc::new(move |line| p.lock().unwrap().push(line.to_string()));
    Env { mock, provider: AzureProvider::new(arm), progress }
}

async fn env() -> Env {
    env_with_token(TOKEN).await
}

impl Env {
    fn progress(&self) -> Vec<String> {
        self.progress.lock().unwrap().clone()
    }
    fn log(&self) -> Vec<String> {
        self.mock.state.lock().unwrap().log.clone()
    }
    fn count(&self, method: &str, fragment: &str) -> usize {
        self.mock.state.lock().unwrap().count_containing(method, fragment)
    }
}

fn map(pairs: &[(&str, Value)]) -> Value {
    Value::Map(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
}

fn aks() -> ComponentRef {
    ComponentRef { address: "cluster.cloud".parse().unwrap(), kind: Kind::Cluster, type_name: "aks".into() }
}

fn blob() -> ComponentRef {
    ComponentRef { address: "object_storage.recordings".parse().unwrap(), kind: Kind::ObjectStorage, type_name: "azure_blob".into() }
}

fn aks_desired(location: &str, nodes: i64) -> Value {
    map(&[
        ("resource_group", Value::string("rg-video")),
        ("location", Value::string(location)),
        ("name", Value::Null),
        ("version", Value::string("1.30")),
        ("node_count", Value::from_i64(nodes)),
        ("vm_size", Value::string("Standard_D2s_v3")),
        ("tags", Value::Null),
    ])
}

fn blob_desired(days: i64) -> Value {
    map(&[
        ("account_name", Value::string("kdrecordings1")),
        ("container", Value::string("recordings")),
        ("resource_group", Value::string("rg-video")),
        ("location", Value::string("westeurope")),
        ("retention_days", Value::from_i64(days)),
    ])
}

async fn plan(p: &AzureProvider, c: &ComponentRef, desired: &Value, prior: Option<&Value>) -> PlanResponse {
    let s = schema(c.kind, &c.type_name).unwrap();
    p.plan(PlanRequest { component: c.clone(), schema: &s, prior, recorded: prior, desired, cluster: None, refs: &BTreeMap::new(), force_conflicts: false })
        .await
        .unwrap()
}

async fn apply(p: &AzureProvider, c: &ComponentRef, planned: &Value, prior: Option<&Value>) -> Value {
    p.apply(ApplyRequest {
        component: c.clone(),
        prior: prior.cloned(),
        planned: planned.clone(),
        cluster: None,
        refs: BTreeMap::new(),
        force_conflicts: false,
    })
    .await
    .unwrap_or_else(|e| panic!("apply failed: {e}"))
    .attributes
}

async fn read(p: &AzureProvider, c: &ComponentRef, recorded: &Value) -> Result<ReadResult, kdeploy_provider::ProviderError> {
    p.read(vec![ReadRequest { component: c.clone(), recorded: recorded.clone(), cluster: None }]).await.map(|mut r| r.remove(0))
}

fn found(r: ReadResult) -> Value {
    match r {
        ReadResult::Found { attributes, .. } => attributes,
        ReadResult::Missing => panic!("expected Found, got Missing"),
    }
}

fn get<'a>(v: &'a Value, k: &str) -> &'a Value {
    v.as_map().unwrap().get(k).unwrap_or(&Value::Null)
}

/// Plan + apply from empty; returns the recorded attributes.
async fn create_cluster(e: &Env) -> Value {
    let p = plan(&e.provider, &aks(), &aks_desired("westeurope", 2), None).await;
    assert!(p.requires_replace.is_empty());
    assert!(p.planned.unknown_paths().iter().any(|(path, _)| *path == AttrPath::attr("endpoint")));
    apply(&e.provider, &aks(), &p.planned, None).await
}

#[tokio::test]
async fn aks_create_from_empty_follows_the_operation_and_replans_as_no_op() {
    let e = env().await;
    let a = create_cluster(&e).await;
    assert_eq!(get(&a, "endpoint"), &Value::string("https://cloud-abcd1234.hcp.westeurope.azmk8s.io:443"));
    assert_eq!(
        get(&a, "id"),
        &Value::string(format!("/subscriptions/{SUB}/resourceGroups/rg-video/providers/Microsoft.ContainerService/managedClusters/cloud"))
    );
    assert!(get(&a, "certificate_authority").as_str().unwrap().starts_with("LS0tLS1CRUdJTi"));
    assert_eq!(get(&a, "token_source"), &Value::string("aks"));
    assert!(!a.contains_unknown());

    // The resource group was created, the cluster PUT once with the documented shape, and the
    // Azure-AsyncOperation URL polled until Succeeded.
    assert_eq!(e.count("PUT", "/resourcegroups/rg-video?api-version=2021-04-01"), 1);
    assert_eq!(e.count("PUT", "/managedClusters/cloud?api-version=2024-05-01"), 1);
    assert_eq!(e.count("GET", "/operations/"), 3, "{:#?}", e.log());
    assert_eq!(e.count("POST", "/listClusterUserCredential?api-version=2024-05-01"), 1);
    let body = e.mock.state.lock().unwrap().put_bodies.iter().find(|(k, _)| k.ends_with("/managedclusters/cloud")).unwrap().1.clone();
    assert_eq!(body["identity"]["type"], "SystemAssigned");
    assert_eq!(body["properties"]["kubernetesVersion"], "1.30");
    assert_eq!(body["properties"]["agentPoolProfiles"][0]["count"], 2);
    assert_eq!(body["properties"]["agentPoolProfiles"][0]["vmSize"], "Standard_D2s_v3");
    assert_eq!(body["properties"]["agentPoolProfiles"][0]["mode"], "System");
    assert_eq!(body["tags"]["kdeploy-component"], "cluster.cloud");
    let progress = e.progress();
    assert!(progress.iter().any(|l| l.contains("cluster.cloud") && l.contains("InProgress")), "{progress:#?}");

    // Refresh and re-plan: nothing changes.
    let live = found(read(&e.provider, &aks(), &a).await.unwrap());
    assert_eq!(live, a);
    let again = plan(&e.provider, &aks(), &aks_desired("westeurope", 2), Some(&live)).await;
    assert_eq!(again.planned, live);
    assert!(again.requires_replace.is_empty());

    // A second apply with an existing resource group does not recreate it.
    apply(&e.provider, &aks(), &again.planned, Some(&live)).await;
    assert_eq!(e.count("PUT", "/resourcegroups/rg-video?"), 1);
}

#[tokio::test]
async fn aks_node_count_is_updated_in_place_and_location_change_replaces() {
    let e = env().await;
    let a = create_cluster(&e).await;
    let scaled = plan(&e.provider, &aks(), &aks_desired("westeurope", 3), Some(&a)).await;
    assert!(scaled.requires_replace.is_empty());
    assert_eq!(get(&scaled.planned, "endpoint"), get(&a, "endpoint"));
    let b = apply(&e.provider, &aks(), &scaled.planned, Some(&a)).await;
    assert_eq!(e.count("PUT", "/managedClusters/cloud?"), 2);
    let body = e.mock.state.lock().unwrap().put_bodies.iter().find(|(k, _)| k.ends_with("/managedclusters/cloud")).unwrap().1.clone();
    assert_eq!(body["properties"]["agentPoolProfiles"][0]["count"], 3);
    let live = found(read(&e.provider, &aks(), &b).await.unwrap());
    assert_eq!(get(&live, "node_count"), &Value::from_i64(3));

    let moved = plan(&e.provider, &aks(), &aks_desired("northeurope", 3), Some(&live)).await;
    assert_eq!(moved.requires_replace, vec![AttrPath::attr("location")]);
    assert!(get(&moved.planned, "endpoint").is_unknown());
    // "West Europe" is the same region as "westeurope".
    let spelled = plan(&e.provider, &aks(), &aks_desired("West Europe", 3), Some(&live)).await;
    assert!(spelled.requires_replace.is_empty());
}

#[tokio::test]
async fn aks_node_count_changed_out_of_band_is_seen_by_read() {
    let e = env().await;
    let a = create_cluster(&e).await;
    {
        let mut st = e.mock.state.lock().unwrap();
        let key = st.resources.keys().find(|k| k.ends_with("/managedclusters/cloud")).unwrap().clone();
        st.resources.get_mut(&key).unwrap()["properties"]["agentPoolProfiles"][0]["count"] = 5.into();
    }
    let live = found(read(&e.provider, &aks(), &a).await.unwrap());
    assert_eq!(get(&live, "node_count"), &Value::from_i64(5));
    let p = plan(&e.provider, &aks(), &aks_desired("westeurope", 2), Some(&live)).await;
    assert!(p.requires_replace.is_empty());
    assert_eq!(get(&p.planned, "node_count"), &Value::from_i64(2));
}

#[tokio::test]
async fn aks_deleted_out_of_band_reads_missing_and_delete_waits() {
    let e = env().await;
    let a = create_cluster(&e).await;
    e.mock.remove("/managedclusters/cloud");
    assert_eq!(read(&e.provider, &aks(), &a).await.unwrap(), ReadResult::Missing);
    // Deleting what is already gone is fine.
    e.provider.delete(DeleteRequest { component: aks(), prior: a.clone(), cluster: None, delete_data: false }).await.unwrap();

    let a = create_cluster(&e).await;
    e.provider.delete(DeleteRequest { component: aks(), prior: a.clone(), cluster: None, delete_data: false }).await.unwrap();
    assert_eq!(e.count("DELETE", "/managedClusters/cloud?api-version=2024-05-01"), 2);
    assert_eq!(read(&e.provider, &aks(), &a).await.unwrap(), ReadResult::Missing);
    assert!(e.progress().iter().any(|l| l.contains("deleting AKS cluster cloud")));
}

#[tokio::test]
async fn throttled_requests_are_retried_after_retry_after() {
    let e = env().await;
    let a = create_cluster(&e).await;
    e.mock.error("GET", "/managedclusters/cloud", 429, "error_429.json", &[("Retry-After", "7")], 2);
    let live = found(read(&e.provider, &aks(), &a).await.unwrap());
    assert_eq!(live, a);
    let progress = e.progress();
    assert_eq!(progress.iter().filter(|l| l.contains("throttled by Azure (429), retrying in 7s")).count(), 2, "{progress:#?}");

    // Three 429s in a row: give up with a clear message.
    e.mock.error("GET", "/managedclusters/cloud", 429, "error_429.json", &[("Retry-After", "1")], 3);
    let err = read(&e.provider, &aks(), &a).await.unwrap_err();
    assert!(err.message.contains("429 TooManyRequests") && err.message.contains("kept throttling"), "{}", err.message);
}

#[tokio::test]
async fn expired_or_foreign_tokens_are_reported_clearly() {
    let e = env().await;
    e.mock.error("GET", "/managedclusters/", 401, "error_401_expired.json", &[], 1);
    let recorded = map(&[("resource_group", Value::string("rg-video")), ("location", Value::string("westeurope"))]);
    let err = read(&e.provider, &aks(), &recorded).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized);
    assert!(err.message.contains("ExpiredAuthenticationToken") && err.message.contains("expired: get a fresh one"), "{}", err.message);
    assert!(!err.message.contains(TOKEN));

    e.mock.error("GET", "/resourcegroups", 401, "error_401_tenant.json", &[], 1);
    let pf = e.provider.preflight(&[(aks(), aks_desired("westeurope", 2))]).await;
    assert_eq!(pf.errors.len(), 1, "{pf:?}");
    assert!(pf.errors[0].contains("InvalidAuthenticationTokenTenant") && pf.errors[0].contains("different tenant"), "{}", pf.errors[0]);
    // Without injected failures the preflight passes.
    assert!(e.provider.preflight(&[(aks(), aks_desired("westeurope", 2))]).await.errors.is_empty());

    // A token the mock does not accept at all.
    let bad = env_with_token("wrong").await;
    let err = read(&bad.provider, &aks(), &recorded).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized);
    assert!(!err.message.contains("wrong"));
}

#[tokio::test]
async fn forbidden_conflict_and_failed_operations_are_errors() {
    let e = env().await;
    e.mock.error("PUT", "/managedclusters/cloud", 403, "error_403.json", &[], 1);
    let p = plan(&e.provider, &aks(), &aks_desired("westeurope", 2), None).await;
    let err = e
        .provider
        .apply(ApplyRequest { component: aks(), prior: None, planned: p.planned.clone(), cluster: None, refs: BTreeMap::new(), force_conflicts: false })
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized);
    assert!(err.message.contains("AuthorizationFailed") && err.message.contains("Contributor"), "{}", err.message);

    e.mock.error("PUT", "/managedclusters/cloud", 409, "error_409.json", &[], 1);
    let err = e
        .provider
        .apply(ApplyRequest { component: aks(), prior: None, planned: p.planned.clone(), cluster: None, refs: BTreeMap::new(), force_conflicts: false })
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);

    e.mock.state.lock().unwrap().fail_next_op = true;
    let err = e
        .provider
        .apply(ApplyRequest { component: aks(), prior: None, planned: p.planned.clone(), cluster: None, refs: BTreeMap::new(), force_conflicts: false })
        .await
        .unwrap_err();
    assert!(err.message.contains("the operation failed: ReconcileVMSSAgentPoolFailed") && err.message.contains("quota"), "{}", err.message);
}

#[tokio::test]
async fn aks_token_source_returns_the_cluster_user_token() {
    let e = env().await;
    let a = create_cluster(&e).await;
    let token = e.provider.token_source().token(&a).await.unwrap();
    assert_eq!(token, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    let err = e.provider.token_source().token(&map(&[])).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Invalid);
}

#[tokio::test]
async fn blob_create_read_update_and_delete() {
    let e = env().await;
    let p = plan(&e.provider, &blob(), &blob_desired(30), None).await;
    assert_eq!(get(&p.planned, "access_key"), &Value::string("kdrecordings1"));
    assert!(get(&p.planned, "secret_key").is_unknown());
    let a = apply(&e.provider, &blob(), &p.planned, None).await;
    // The account's primaryEndpoints.blob (the mock serves the Blob service itself).
    assert_eq!(get(&a, "endpoint"), &Value::string(format!("{}/blobdata/kdrecordings1/", e.mock.base)));
    assert_eq!(get(&a, "access_key"), &Value::string("kdrecordings1"));
    assert_eq!(get(&a, "secret_key"), &Value::string("c2VjcmV0LWtleS1vbmUtZm9yLXZhdWx0LXRlc3Qtb25seQ=="));
    // The account creation answered 202 + Location, polled until 200.
    assert_eq!(e.count("GET", "/asyncoperations/"), 3, "{:#?}", e.log());
    assert_eq!(e.count("PUT", "/blobServices/default/containers/recordings?api-version=2023-05-01"), 1);
    assert_eq!(e.count("POST", "/storageAccounts/kdrecordings1/listKeys?api-version=2023-05-01"), 1);
    let policy = e.mock.state.lock().unwrap().put_bodies.iter().find(|(k, _)| k.ends_with("/managementpolicies/default")).unwrap().1.clone();
    assert_eq!(policy["properties"]["policy"]["rules"][0]["definition"]["actions"]["baseBlob"]["delete"]["daysAfterModificationGreaterThan"], 30);
    let account = e.mock.state.lock().unwrap().put_bodies.iter().find(|(k, _)| k.ends_with("/storageaccounts/kdrecordings1")).unwrap().1.clone();
    assert_eq!(account["properties"]["allowBlobPublicAccess"], false);
    assert_eq!(account["kind"], "StorageV2");

    let live = found(read(&e.provider, &blob(), &a).await.unwrap());
    assert_eq!(live, a);
    let again = plan(&e.provider, &blob(), &blob_desired(30), Some(&live)).await;
    assert_eq!(again.planned, live);

    let shorter = plan(&e.provider, &blob(), &blob_desired(7), Some(&live)).await;
    assert!(shorter.requires_replace.is_empty());
    let b = apply(&e.provider, &blob(), &shorter.planned, Some(&live)).await;
    assert_eq!(get(&found(read(&e.provider, &blob(), &b).await.unwrap()), "retention_days"), &Value::from_i64(7));

    // The container deleted out of band: Missing (apply recreates it).
    e.mock.remove("/containers/recordings");
    assert_eq!(read(&e.provider, &blob(), &b).await.unwrap(), ReadResult::Missing);
    apply(&e.provider, &blob(), &shorter.planned, None).await;

    // Deleting keeps recordings unless asked: the Blob service (Shared Key signed) says whether
    // the container holds any.
    e.mock.state.lock().unwrap().blobs.insert("kdrecordings1/recordings".into(), vec!["cam1/2026-11-25/0001.mp4".into()]);
    let err = e.provider.delete(DeleteRequest { component: blob(), prior: b.clone(), cluster: None, delete_data: false }).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert!(err.message.contains("container recordings holds recordings") && err.message.contains("--delete-data"), "{}", err.message);
    assert!(found(read(&e.provider, &blob(), &b).await.unwrap()) == b, "the account is kept");
    assert!(e.mock.state.lock().unwrap().log.iter().any(|l| l.starts_with("GET /blobdata/kdrecordings1/recordings?restype=container&comp=list")));
    e.provider.delete(DeleteRequest { component: blob(), prior: b.clone(), cluster: None, delete_data: true }).await.unwrap();
    assert_eq!(read(&e.provider, &blob(), &b).await.unwrap(), ReadResult::Missing);
    // A missing account is already deleted.
    e.provider.delete(DeleteRequest { component: blob(), prior: b.clone(), cluster: None, delete_data: false }).await.unwrap();
}

#[tokio::test]
async fn an_account_without_recordings_is_deleted_without_delete_data() {
    let e = env().await;
    let planned = plan(&e.provider, &blob(), &blob_desired(30), None).await.planned;
    let a = apply(&e.provider, &blob(), &planned, None).await;
    e.provider.delete(DeleteRequest { component: blob(), prior: a.clone(), cluster: None, delete_data: false }).await.unwrap();
    assert_eq!(read(&e.provider, &blob(), &a).await.unwrap(), ReadResult::Missing);

    // When the Blob service cannot be asked (a firewall, a wrong key), the account is kept.
    let a = apply(&e.provider, &blob(), &planned, None).await;
    e.mock.inject(mock::Inject {
        method: "GET",
        path_contains: "/blobdata/".into(),
        status: 403,
        headers: vec![("x-ms-error-code".into(), "AuthorizationFailure".into())],
        body: String::new(),
        times: 1,
    });
    let err = e.provider.delete(DeleteRequest { component: blob(), prior: a.clone(), cluster: None, delete_data: false }).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert!(err.message.contains("could not check") && err.message.contains("403") && err.message.contains("AuthorizationFailure"), "{}", err.message);
    assert!(matches!(read(&e.provider, &blob(), &a).await.unwrap(), ReadResult::Found { .. }));
}

#[tokio::test]
async fn service_principal_tokens_come_from_the_client_credentials_grant() {
    use kdeploy_provider_azure::credential::from_lookup;
    let mock = Mock::start().await;
    // azure_identity's ClientSecretCredential, its requests to https://login.test sent to the mock.
    let login = identity::FakeLogin::forwarding_to(&mock.base);
    let sp = |secret: &str| {
        from_lookup(
            identity::vars(&[
                ("AZURE_TENANT_ID", "tenant-1"),
                ("AZURE_CLIENT_ID", "client-1"),
                ("AZURE_CLIENT_SECRET", secret),
                ("AZURE_AUTHORITY_HOST", identity::LOGIN),
            ]),
            login.options(),
        )
        .unwrap()
    };
    let good = sp("s3cret+");
    assert!(good.describe().contains("service principal client-1"), "{}", good.describe());
    assert_eq!(good.token().await.unwrap(), TOKEN);
    assert_eq!(good.token().await.unwrap(), TOKEN);
    assert_eq!(mock.state.lock().unwrap().count("POST /tenant-1/oauth2/v2.0/token"), 1, "cached");
    let (url, body) = login.requests()[0].clone();
    assert_eq!(url, "https://login.test/tenant-1/oauth2/v2.0/token");
    let f = identity::form(&body);
    assert_eq!(f["grant_type"], "client_credentials");
    assert_eq!(f["client_id"], "client-1");
    assert_eq!(f["scope"], "https%3A%2F%2Fmanagement.azure.com%2F.default");

    // A wrong secret: Unauthorized, with Entra ID's reason and what to check, never the secret.
    let bad = sp("not-the-s3cret!");
    let err = bad.token().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized);
    assert!(err.message.contains("AADSTS7000215: Invalid client secret provided (HTTP 401)"), "{}", err.message);
    assert!(err.message.contains("service principal client-1") && err.message.contains("tenant-1"), "{}", err.message);
    assert!(err.message.contains("AZURE_CLIENT_SECRET"), "{}", err.message);
    assert!(!err.message.contains("not-the-s3cret"), "{}", err.message);
    assert!(!err.message.contains("Trace ID"), "one line, no trace ids: {}", err.message);

    // The provider signs in with it, then talks to ARM.
    let mut arm = Arm::new(&mock.base, SUB, sp("s3cret+"));
    arm.poll_interval = Duration::from_millis(5);
    arm.max_wait = Duration::from_millis(20);
    arm.progress = Arc::new(|_| {});
    let p = AzureProvider::new(arm);
    assert!(p.preflight(&[(aks(), aks_desired("westeurope", 2))]).await.errors.is_empty());
    assert_eq!(mock.state.lock().unwrap().count("GET /subscriptions/"), 1);
}

#[tokio::test]
async fn polling_urls_outside_the_arm_endpoint_get_no_token() {
    let e = env().await;
    e.mock.inject(mock::Inject {
        method: "PUT",
        path_contains: "/resourcegroups/rg-video".into(),
        status: 202,
        headers: vec![("Azure-AsyncOperation".into(), format!("{}.attacker.example/op", e.mock.base))],
        body: String::new(),
        times: 1,
    });
    let p = plan(&e.provider, &aks(), &aks_desired("westeurope", 2), None).await;
    let err = e
        .provider
        .apply(ApplyRequest { component: aks(), prior: None, planned: p.planned, cluster: None, refs: BTreeMap::new(), force_conflicts: false })
        .await
        .unwrap_err();
    assert!(err.message.contains("not sending credentials"), "{}", err.message);
}

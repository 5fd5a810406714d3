//! GCS against the local mock API: bucket with lifecycle, service account, bucket IAM binding
//! and HMAC key; no-op re-plan, retention update in place, out-of-band deletion, delete.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use kdeploy_cloud_mocks::gcp as mock;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kdeploy_provider::{
    ApplyRequest, AttrPath, ComponentRef, DeleteRequest, ErrorKind, Kind, PlanRequest, PlanResponse, Provider, ReadRequest, ReadResult, Value, schema,
};
use kdeploy_provider_gcp::{Config, GcpProvider, StaticToken};
use mock::{Fault, Mock, TOKEN};
use serde_json::json;

fn provider(m: &Mock) -> GcpProvider {
    let mut config = Config::with_base_url(&m.url);
    config.poll_interval = Duration::from_millis(5);
    config.retry.base_backoff = Duration::from_millis(10);
    GcpProvider::new(Arc::new(StaticToken(TOKEN.into())), config).unwrap()
}

fn cref() -> ComponentRef {
    ComponentRef { address: "object_storage.recordings".parse().unwrap(), kind: Kind::ObjectStorage, type_name: "gcs".into() }
}

fn desired(bucket: &str, retention: i64) -> Value {
    Value::Map(
        [
            ("bucket".to_string(), Value::string(bucket)),
            ("project".to_string(), Value::string("p1")),
            ("location".to_string(), Value::string("EU")),
            ("retention_days".to_string(), Value::from_i64(retention)),
        ]
        .into(),
    )
}

async fn plan(p: &GcpProvider, desired: &Value, prior: Option<&Value>) -> PlanResponse {
    let s = schema(Kind::ObjectStorage, "gcs").unwrap();
    let refs = BTreeMap::new();
    p.plan(PlanRequest { component: cref(), schema: &s, prior, recorded: prior, desired, cluster: None, refs: &refs, force_conflicts: false }).await.unwrap()
}

async fn apply(p: &GcpProvider, planned: Value, prior: Option<Value>) -> Result<Value, kdeploy_provider::ProviderError> {
    p.apply(ApplyRequest { component: cref(), prior, planned, cluster: None, refs: BTreeMap::new(), force_conflicts: false }).await.map(|r| r.attributes)
}

async fn read(p: &GcpProvider, recorded: &Value) -> ReadResult {
    p.read(vec![ReadRequest { component: cref(), recorded: recorded.clone(), cluster: None }]).await.unwrap().remove(0)
}

fn get<'a>(v: &'a Value, k: &str) -> &'a Value {
    v.as_map().unwrap().get(k).unwrap_or(&Value::Null)
}

#[tokio::test]
async fn bucket_lifecycle_account_binding_and_hmac_key() {
    let m = Mock::start();
    let p = provider(&m);
    let first = plan(&p, &desired("recordings-p1", 30), None).await;
    assert!(get(&first.planned, "access_key").is_unknown() && get(&first.planned, "secret_key").is_unknown());
    let live = apply(&p, first.planned, None).await.unwrap();
    assert_eq!(get(&live, "endpoint"), &Value::string("storage.googleapis.com"));
    assert_eq!(get(&live, "access_key"), &Value::string("GOOG1KEY1"));
    assert_eq!(get(&live, "secret_key"), &Value::string(mock::fixture("hmac_key.json")["secret"].as_str().unwrap()));
    {
        let st = m.st();
        let created = &st.bodies("POST /storage/v1/b?project=p1")[0];
        assert_eq!(created["lifecycle"], json!({"rule": [{"action": {"type": "Delete"}, "condition": {"age": 30}}]}));
        assert_eq!(created["iamConfiguration"]["publicAccessPrevention"], "enforced");
        let binding = st.policies["recordings-p1"]["bindings"].as_array().unwrap().iter().find(|b| b["role"] == "roles/storage.objectAdmin").cloned().unwrap();
        assert_eq!(binding["members"], json!(["serviceAccount:kd-recordings-p1@p1.iam.gserviceaccount.com"]));
        assert_eq!(st.count("POST /storage/v1/projects/p1/hmacKeys?serviceAccountEmail=kd-recordings-p1%40p1.iam.gserviceaccount.com"), 1);
    }

    // Unchanged: read gives back what was applied, and the plan is a no-op.
    let ReadResult::Found { attributes, .. } = read(&p, &live).await else { panic!("missing") };
    assert_eq!(attributes, live);
    let again = plan(&p, &desired("recordings-p1", 30), Some(&attributes)).await;
    assert_eq!(again.planned, attributes);
    assert!(again.requires_replace.is_empty());

    // Retention is updated in place; the key survives.
    let shorter = plan(&p, &desired("recordings-p1", 7), Some(&attributes)).await;
    assert!(shorter.requires_replace.is_empty());
    let live2 = apply(&p, shorter.planned, Some(attributes)).await.unwrap();
    assert_eq!(get(&live2, "access_key"), &Value::string("GOOG1KEY1"));
    assert_eq!(
        m.st().bodies("PATCH /storage/v1/b/recordings-p1")[0],
        json!({"lifecycle": {"rule": [{"action": {"type": "Delete"}, "condition": {"age": 7}}]}})
    );
    assert_eq!(m.st().count("POST /storage/v1/projects/p1/hmacKeys"), 1, "no second key");
    let ReadResult::Found { attributes, .. } = read(&p, &live2).await else { panic!() };
    assert_eq!(get(&attributes, "retention_days"), &Value::from_i64(7));

    // A new bucket name or location replaces it.
    let renamed = plan(&p, &desired("recordings-p2", 7), Some(&attributes)).await;
    assert_eq!(renamed.requires_replace, vec![AttrPath::attr("bucket")]);
    assert!(get(&renamed.planned, "secret_key").is_unknown());

    // Delete: key deactivated then deleted, bucket and service account gone.
    p.delete(DeleteRequest { component: cref(), prior: attributes.clone(), cluster: None, delete_data: false }).await.unwrap();
    let st = m.st();
    assert!(st.buckets.is_empty() && st.hmac.is_empty() && st.service_accounts.is_empty());
    assert_eq!(st.bodies("PUT /storage/v1/projects/p1/hmacKeys/GOOG1KEY1")[0], json!({"state": "INACTIVE"}));
}

#[tokio::test]
async fn out_of_band_changes_are_seen() {
    let m = Mock::start();
    let p = provider(&m);
    let live = apply(&p, plan(&p, &desired("recordings-p1", 30), None).await.planned, None).await.unwrap();
    // A revoked key reads as null, so the plan shows a new one and apply creates it.
    m.st().hmac.clear();
    let ReadResult::Found { attributes, .. } = read(&p, &live).await else { panic!() };
    assert_eq!(get(&attributes, "access_key"), &Value::Null);
    let replan = plan(&p, &desired("recordings-p1", 30), Some(&attributes)).await;
    assert!(get(&replan.planned, "access_key").is_unknown());
    let fixed = apply(&p, replan.planned, Some(attributes)).await.unwrap();
    assert_eq!(get(&fixed, "access_key"), &Value::string("GOOG1KEY1"));
    // The bucket deleted out of band reads Missing.
    m.st().buckets.clear();
    assert_eq!(read(&p, &fixed).await, ReadResult::Missing);
}

#[tokio::test]
async fn taken_bucket_names_and_503s() {
    let m = Mock::start();
    let p = provider(&m);
    m.fault(Fault { method: "POST", path_contains: "/storage/v1/b?", status: 409, retry_after: None, fixture: "error_409.json", times: 1 });
    let planned = plan(&p, &desired("recordings-p1", 30), None).await.planned;
    let e = apply(&p, planned.clone(), None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert!(e.message.contains("not available") && e.message.contains("choose another `bucket`"), "{}", e.message);
    assert_eq!(m.st().count("POST /storage/v1/b?"), 1, "409 is not retried");
    // A 503 is retried like a 429.
    m.fault(Fault { method: "POST", path_contains: "/storage/v1/b?", status: 503, retry_after: None, fixture: "error_429.json", times: 1 });
    apply(&p, planned, None).await.unwrap();
    assert_eq!(m.st().count("POST /storage/v1/b?"), 3);
}

//! GCS: the recordings bucket (uniform access, public access prevented, lifecycle Delete at
//! age = retention_days) through storage.googleapis.com/storage/v1, a service account that
//! may use only that bucket (iam.googleapis.com/v1 + the bucket's IAM policy), and its HMAC
//! key (`projects.hmacKeys`), which Vault uses through the S3-compatible XML API.

use kdeploy_provider::{ErrorKind, ProviderError, Value};
use reqwest::Method;
use serde_json::{Value as Json, json};

use crate::Shared;
use crate::plan::{GCS_ENDPOINT, service_account_id};
use crate::util::{Attrs, enc, n, s};

/// The role the bucket's service account gets on that bucket only.
pub const BUCKET_ROLE: &str = "roles/storage.objectAdmin";

fn need(address: &str, a: &Attrs, k: &str) -> Result<String, ProviderError> {
    s(a, k).ok_or_else(|| ProviderError::new(ErrorKind::Invalid, format!("{address}: `{k}` must be known")))
}

fn bucket_url(sh: &Shared, bucket: &str) -> String {
    format!("{}/storage/v1/b/{}", sh.config.storage_url, enc(bucket))
}

fn hmac_url(sh: &Shared, project: &str, access_id: &str) -> String {
    format!("{}/storage/v1/projects/{}/hmacKeys/{}", sh.config.storage_url, enc(project), enc(access_id))
}

pub fn service_account_email(project: &str, bucket: &str) -> String {
    format!("{}@{project}.iam.gserviceaccount.com", service_account_id(bucket))
}

/// The lifecycle kdeploy sets: one Delete rule at the retention age, none without retention.
pub fn lifecycle(retention_days: Option<i64>) -> Json {
    match retention_days {
        Some(d) => json!({"rule": [{"action": {"type": "Delete"}, "condition": {"age": d}}]}),
        None => json!({"rule": []}),
    }
}

/// The retention in a live bucket's lifecycle: the age of its (age-only) Delete rule.
pub fn retention_of(bucket: &Json) -> Option<i64> {
    bucket["lifecycle"]["rule"].as_array()?.iter().find_map(|r| {
        let cond = r["condition"].as_object()?;
        (r["action"]["type"] == "Delete" && cond.len() == 1).then(|| cond.get("age")?.as_i64()).flatten()
    })
}

/// Reads one recorded bucket; None when it is gone. A recorded HMAC key that is gone or no
/// longer ACTIVE reads as null, so that the plan shows a new one.
pub async fn read(sh: &Shared, address: &str, recorded: &Attrs) -> Result<Option<Attrs>, ProviderError> {
    let bucket = need(address, recorded, "bucket")?;
    let what = format!("{address}: reading GCS bucket {bucket}");
    let Some(live) = sh.api.get_opt(&bucket_url(sh, &bucket)).await.map_err(|e| e.into_provider(&what))? else {
        return Ok(None);
    };
    let mut a = recorded.clone();
    if let Some(l) = live["location"].as_str()
        && !s(recorded, "location").is_some_and(|r| r.eq_ignore_ascii_case(l))
    {
        a.insert("location".into(), Value::string(l.to_ascii_uppercase()));
    }
    a.insert("retention_days".into(), retention_of(&live).map(Value::from_i64).unwrap_or(Value::Null));
    a.insert("endpoint".into(), Value::string(GCS_ENDPOINT));
    if let (Some(project), Some(id)) = (s(recorded, "project"), s(recorded, "access_key")) {
        let key = sh.api.get_opt(&hmac_url(sh, &project, &id)).await.map_err(|e| e.into_provider(&format!("{address}: reading HMAC key {id}")))?;
        if key.is_none_or(|k| k["state"] != "ACTIVE") {
            a.insert("access_key".into(), Value::Null);
            a.insert("secret_key".into(), Value::Null);
        }
    }
    Ok(Some(a))
}

/// Creates or updates the bucket, its service account, IAM binding and HMAC key.
pub async fn apply(sh: &Shared, address: &str, planned: &Attrs) -> Result<Attrs, ProviderError> {
    let bucket = need(address, planned, "bucket")?;
    let project = need(address, planned, "project")?;
    let location = s(planned, "location").unwrap_or_else(|| "EU".into());
    let retention = n(planned, "retention_days");
    let what = |action: &str| format!("{address}: {action} GCS bucket {bucket}");
    let url = bucket_url(sh, &bucket);
    let live = sh.api.get_opt(&url).await.map_err(|e| e.into_provider(&what("reading")))?;
    match live {
        None => {
            let body = json!({
                "name": bucket,
                "location": location,
                "storageClass": "STANDARD",
                "lifecycle": lifecycle(retention),
                "iamConfiguration": {"uniformBucketLevelAccess": {"enabled": true}, "publicAccessPrevention": "enforced"},
                "labels": {"managed-by": "kdeploy"},
            });
            let create = format!("{}/storage/v1/b?project={}", sh.config.storage_url, enc(&project));
            sh.api.call(Method::POST, &create, Some(&body)).await.map_err(|e| {
                let mut err = e.clone().into_provider(&what("creating"));
                if e.is_conflict() {
                    err.message.push_str(". Bucket names are global: choose another `bucket`");
                }
                err
            })?;
        }
        Some(b) if retention_of(&b) != retention => {
            sh.api
                .call(Method::PATCH, &url, Some(&json!({"lifecycle": lifecycle(retention)})))
                .await
                .map_err(|e| e.into_provider(&what("updating the lifecycle of")))?;
        }
        Some(_) => {}
    }
    let email = ensure_service_account(sh, address, &project, &bucket).await?;
    ensure_binding(sh, address, &bucket, &email).await?;
    let mut out = planned.clone();
    out.insert("location".into(), Value::string(location));
    out.insert("endpoint".into(), Value::string(GCS_ENDPOINT));
    let have_key = matches!((planned.get("access_key"), planned.get("secret_key")), (Some(Value::String(_)), Some(Value::String(_))));
    if !have_key {
        let url = format!("{}/storage/v1/projects/{}/hmacKeys?serviceAccountEmail={}", sh.config.storage_url, enc(&project), enc(&email));
        let key = sh.api.call(Method::POST, &url, None).await.map_err(|e| e.into_provider(&format!("{address}: creating an HMAC key for {email}")))?;
        let (Some(id), Some(secret)) = (key["metadata"]["accessId"].as_str(), key["secret"].as_str()) else {
            return Err(ProviderError::other(format!("{address}: the HMAC key answer lacks metadata.accessId or secret")));
        };
        out.insert("access_key".into(), Value::string(id));
        out.insert("secret_key".into(), Value::string(secret));
    }
    Ok(out)
}

async fn ensure_service_account(sh: &Shared, address: &str, project: &str, bucket: &str) -> Result<String, ProviderError> {
    let url = format!("{}/v1/projects/{}/serviceAccounts", sh.config.iam_url, enc(project));
    let body = json!({"accountId": service_account_id(bucket), "serviceAccount": {"displayName": format!("kdeploy recordings bucket {bucket}")}});
    match sh.api.call(Method::POST, &url, Some(&body)).await {
        Ok(sa) => Ok(sa["email"].as_str().map(str::to_string).unwrap_or_else(|| service_account_email(project, bucket))),
        Err(e) if e.is_conflict() => Ok(service_account_email(project, bucket)),
        Err(e) => Err(e.into_provider(&format!("{address}: creating service account {}", service_account_id(bucket)))),
    }
}

async fn ensure_binding(sh: &Shared, address: &str, bucket: &str, email: &str) -> Result<(), ProviderError> {
    let url = format!("{}/iam", bucket_url(sh, bucket));
    let what = format!("{address}: granting {email} {BUCKET_ROLE} on bucket {bucket}");
    let mut policy = sh.api.get(&url).await.map_err(|e| e.into_provider(&what))?;
    let member = format!("serviceAccount:{email}");
    if !policy["bindings"].is_array() {
        policy["bindings"] = json!([]);
    }
    let bindings = policy["bindings"].as_array_mut().expect("an array");
    let has = bindings.iter().any(|b| b["role"] == BUCKET_ROLE && b["members"].as_array().is_some_and(|m| m.iter().any(|x| *x == member)));
    if has {
        return Ok(());
    }
    match bindings.iter_mut().find(|b| b["role"] == BUCKET_ROLE && b["condition"].is_null()) {
        Some(b) => b["members"].as_array_mut().map(|m| m.push(json!(member))).unwrap_or_else(|| b["members"] = json!([member])),
        None => bindings.push(json!({"role": BUCKET_ROLE, "members": [member]})),
    }
    sh.api.call(Method::PUT, &url, Some(&policy)).await.map_err(|e| e.into_provider(&what))?;
    Ok(())
}

/// Deletes the HMAC key, the service account and the bucket (emptied first with
/// `delete_data`; otherwise a bucket with objects is left, with a Conflict error).
pub async fn delete(sh: &Shared, address: &str, prior: &Attrs, delete_data: bool) -> Result<(), ProviderError> {
    let bucket = need(address, prior, "bucket")?;
    let project = need(address, prior, "project")?;
    // Refuse before anything is deleted: Vault keeps its HMAC key when the bucket stays.
    if !delete_data && holds_objects(sh, address, &bucket).await? {
        return Err(kept_recordings(address, &bucket));
    }
    if let Some(id) = s(prior, "access_key") {
        let url = hmac_url(sh, &project, &id);
        let what = format!("{address}: deleting HMAC key {id}");
        // Only INACTIVE keys can be deleted.
        match sh.api.call(Method::PUT, &url, Some(&json!({"state": "INACTIVE"}))).await {
            Ok(_) => match sh.api.call(Method::DELETE, &url, None).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into_provider(&what)),
            },
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into_provider(&what)),
        }
    }
    let url = bucket_url(sh, &bucket);
    if delete_data {
        empty_bucket(sh, address, &bucket).await?;
    }
    match sh.api.call(Method::DELETE, &url, None).await {
        Ok(_) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) if e.is_conflict() => return Err(kept_recordings(address, &bucket)),
        Err(e) => return Err(e.into_provider(&format!("{address}: deleting GCS bucket {bucket}"))),
    }
    let email = service_account_email(&project, &bucket);
    let sa = format!("{}/v1/projects/{}/serviceAccounts/{}", sh.config.iam_url, enc(&project), enc(&email));
    match sh.api.call(Method::DELETE, &sa, None).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.into_provider(&format!("{address}: deleting service account {email}"))),
    }
}

fn kept_recordings(address: &str, bucket: &str) -> ProviderError {
    ProviderError::new(
        ErrorKind::Conflict,
        format!("{address}: GCS bucket {bucket} still holds recordings and was kept; destroy with --delete-data to delete them too"),
    )
}

/// Whether the bucket holds at least one object (a missing bucket holds none).
async fn holds_objects(sh: &Shared, address: &str, bucket: &str) -> Result<bool, ProviderError> {
    let url = format!("{}/o?maxResults=1&versions=true&fields=items(name)", bucket_url(sh, bucket));
    match sh.api.get(&url).await {
        Ok(list) => Ok(list["items"].as_array().is_some_and(|i| !i.is_empty())),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e.into_provider(&format!("{address}: listing the objects of GCS bucket {bucket}"))),
    }
}

async fn empty_bucket(sh: &Shared, address: &str, bucket: &str) -> Result<(), ProviderError> {
    let what = format!("{address}: deleting the objects of GCS bucket {bucket}");
    let mut page: Option<String> = None;
    loop {
        let mut url = format!("{}/o?versions=true&fields=items(name,generation),nextPageToken", bucket_url(sh, bucket));
        if let Some(p) = &page {
            url.push_str(&format!("&pageToken={}", enc(p)));
        }
        let list = match sh.api.get(&url).await {
            Ok(l) => l,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e.into_provider(&what)),
        };
        for item in list["items"].as_array().into_iter().flatten() {
            let name = item["name"].as_str().unwrap_or_default();
            let mut o = format!("{}/o/{}", bucket_url(sh, bucket), enc(name));
            if let Some(g) = item["generation"].as_str() {
                o.push_str(&format!("?generation={g}"));
            }
            match sh.api.call(Method::DELETE, &o, None).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into_provider(&what)),
            }
        }
        match list["nextPageToken"].as_str() {
            Some(t) if !t.is_empty() => page = Some(t.to_string()),
            _ => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_round_trips() {
        let b = json!({"lifecycle": lifecycle(Some(30))});
        assert_eq!(retention_of(&b), Some(30));
        assert_eq!(retention_of(&json!({"lifecycle": lifecycle(None)})), None);
        let other = json!({"lifecycle": {"rule": [{"action": {"type": "Delete"}, "condition": {"age": 5, "isLive": false}}]}});
        assert_eq!(retention_of(&other), None);
    }
}

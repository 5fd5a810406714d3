//! Blob storage for recordings: the storage account (StorageV2, HTTPS only, TLS 1.2, no public
//! blob access), the container, a lifecycle management policy deleting blobs older than
//! `retention_days`, and the account key Vault writes with (`access_key` = account name,
//! `secret_key` = key1, sensitive).

use kdeploy_provider::{AttrPath, ErrorKind, PlanResponse, ProviderError, Value};
use serde_json::{Value as Json, json};

use crate::aks::ensure_resource_group;
use crate::arm::{API_STORAGE, Arm};
use crate::util::{Attrs, arm_tags, attrs, invalid, keep, n, s, same, same_location};

/// Inputs that replace the account when changed.
pub const BLOB_REPLACE: &[&str] = &["account_name", "container", "resource_group", "location"];
/// The lifecycle rule kdeploy owns in the account's management policy.
pub const RULE: &str = "kdeploy-retention";

/// The resource group in effect: `resource_group`, or `kdeploy-<account>`.
pub fn resource_group(m: &Attrs) -> String {
    s(m, "resource_group").unwrap_or_else(|| format!("kdeploy-{}", s(m, "account_name").unwrap_or_default()))
}

pub fn container_name(m: &Attrs) -> String {
    s(m, "container").unwrap_or_else(|| "recordings".into())
}

pub fn account_path(arm: &Arm, rg: &str, account: &str) -> String {
    format!("{}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{account}", arm.sub())
}

pub fn plan(address: &str, desired: &Value, prior: Option<&Value>) -> Result<PlanResponse, ProviderError> {
    let mut planned = attrs(Some(desired));
    let prior_map = prior.map(|p| attrs(Some(p)));
    let prior = prior_map.as_ref();
    if let Some(a) = s(&planned, "account_name")
        && !(a.len() >= 3 && a.len() <= 24 && a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()))
    {
        return Err(invalid(address, format!("account_name must be 3-24 lowercase letters and digits (it is a global DNS name), got {a:?}")));
    }
    if let Some(c) = s(&planned, "container")
        && !(c.len() >= 3
            && c.len() <= 63
            && c.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !c.starts_with('-')
            && !c.contains("--"))
    {
        return Err(invalid(address, format!("container must be 3-63 lowercase letters, digits and single hyphens, got {c:?}")));
    }
    if let Some(d) = n(&planned, "retention_days")
        && !(1..=36500).contains(&d)
    {
        return Err(invalid(address, format!("retention_days must be between 1 and 36500, got {d}")));
    }
    if prior.is_none() && planned.get("location").is_none_or(Value::is_null) {
        return Err(invalid(address, "location is required to create the storage account"));
    }
    let mut requires_replace = Vec::new();
    if let Some(p) = prior {
        for k in BLOB_REPLACE {
            let changed = match (p.get(*k).and_then(Value::as_str), planned.get(*k).and_then(Value::as_str)) {
                (Some(a), Some(b)) if *k == "location" => !same_location(a, b),
                _ => !same(p.get(*k), planned.get(*k)),
            };
            if changed {
                requires_replace.push(AttrPath::attr(k));
            }
        }
    }
    let fresh = prior.is_none() || !requires_replace.is_empty();
    for k in ["endpoint", "secret_key"] {
        let v = if fresh { Value::Unknown(format!("{address}.{k}")) } else { keep(prior, address, k) };
        planned.insert(k.into(), v);
    }
    let access = planned.get("account_name").cloned().unwrap_or(Value::Null);
    planned.insert("access_key".into(), access);
    Ok(PlanResponse { planned: Value::Map(planned), requires_replace, warnings: Vec::new() })
}

/// Reads the account, container and retention rule; `None` when the account or the container
/// is gone (apply recreates what is missing).
pub async fn read(arm: &Arm, address: &str, recorded: &Attrs) -> Result<Option<Attrs>, ProviderError> {
    let Some(account) = s(recorded, "account_name") else { return Ok(None) };
    let rg = resource_group(recorded);
    let path = account_path(arm, &rg, &account);
    let what = format!("{address}: reading storage account {account}");
    let Some(live) = arm.get(&path, API_STORAGE, &what).await? else { return Ok(None) };
    let container = container_name(recorded);
    if arm.get(&format!("{path}/blobServices/default/containers/{container}"), API_STORAGE, &what).await?.is_none() {
        return Ok(None);
    }
    let mut a = recorded.clone();
    if let Some(loc) = live["location"].as_str()
        && !s(recorded, "location").is_some_and(|r| same_location(&r, loc))
    {
        a.insert("location".into(), Value::string(loc));
    }
    let policy = arm.get(&format!("{path}/managementPolicies/default"), API_STORAGE, &what).await?;
    a.insert("retention_days".into(), policy.as_ref().and_then(retention_of).map(Value::from_i64).unwrap_or(Value::Null));
    if let Some(e) = live["properties"]["primaryEndpoints"]["blob"].as_str() {
        a.insert("endpoint".into(), Value::string(e));
    }
    a.insert("access_key".into(), Value::string(&account));
    Ok(Some(a))
}

/// The days of kdeploy's rule in a management policy.
pub fn retention_of(policy: &Json) -> Option<i64> {
    let rules = policy["properties"]["policy"]["rules"].as_array()?;
    let rule = rules.iter().find(|r| r["name"] == RULE && r["enabled"] != false)?;
    rule["definition"]["actions"]["baseBlob"]["delete"]["daysAfterModificationGreaterThan"].as_f64().map(|d| d as i64)
}

pub fn policy_body(container: &str, days: i64) -> Json {
    json!({ "properties": { "policy": { "rules": [{
        "enabled": true,
        "name": RULE,
        "type": "Lifecycle",
        "definition": {
            "actions": { "baseBlob": { "delete": { "daysAfterModificationGreaterThan": days } } },
            "filters": { "blobTypes": ["blockBlob"], "prefixMatch": [format!("{container}/")] },
        },
    }] } } })
}

pub fn account_body(address: &str, planned: &Attrs, location: &str) -> Json {
    json!({
        "location": location,
        "kind": "StorageV2",
        "sku": { "name": "Standard_LRS" },
        "tags": arm_tags(planned, address),
        "properties": {
            "minimumTlsVersion": "TLS1_2",
            "allowBlobPublicAccess": false,
            "supportsHttpsTrafficOnly": true,
            "accessTier": "Hot",
        },
    })
}

pub async fn apply(arm: &Arm, address: &str, planned: &Attrs) -> Result<Attrs, ProviderError> {
    let account = s(planned, "account_name").ok_or_else(|| invalid(address, "account_name is required"))?;
    let location = s(planned, "location").ok_or_else(|| invalid(address, "location is required"))?;
    let rg = resource_group(planned);
    ensure_resource_group(arm, address, &rg, &location, planned).await?;
    let path = account_path(arm, &rg, &account);
    let what = format!("{address}: storage account {account}");
    let live = arm.put(&path, API_STORAGE, &account_body(address, planned, &location), &what).await?;
    let container = container_name(planned);
    arm.put(
        &format!("{path}/blobServices/default/containers/{container}"),
        API_STORAGE,
        &json!({ "properties": { "publicAccess": "None" } }),
        &format!("{what}: container {container}"),
    )
    .await?;
    let days = n(planned, "retention_days").unwrap_or(30);
    arm.put(&format!("{path}/managementPolicies/default"), API_STORAGE, &policy_body(&container, days), &format!("{what}: lifecycle policy")).await?;
    let keys = arm.post(&format!("{path}/listKeys"), API_STORAGE, &format!("{what}: listKeys")).await?;
    let key = keys["keys"]
        .as_array()
        .and_then(|k| k.iter().find(|k| k["keyName"] == "key1").or_else(|| k.first()))
        .and_then(|k| k["value"].as_str())
        .ok_or_else(|| ProviderError::other(format!("{what}: listKeys returned no key (is shared-key access disabled on the account?)")))?;
    let mut a = planned.clone();
    let endpoint =
        live["properties"]["primaryEndpoints"]["blob"].as_str().map(str::to_string).unwrap_or_else(|| format!("https://{account}.blob.core.windows.net/"));
    a.insert("endpoint".into(), Value::string(endpoint));
    a.insert("access_key".into(), Value::string(&account));
    a.insert("secret_key".into(), Value::string(key));
    Ok(a)
}

/// Deletes the storage account. Without `delete_data` only an account whose containers hold no
/// blob is deleted: the containers come from ARM, their contents from the Blob service (one
/// List Blobs call each, signed with the account key).
pub async fn delete(arm: &Arm, address: &str, prior: &Attrs, delete_data: bool) -> Result<(), ProviderError> {
    let Some(account) = s(prior, "account_name") else { return Ok(()) };
    let path = account_path(arm, &resource_group(prior), &account);
    if !delete_data {
        let what = format!("{address}: storage account {account}");
        let Some(live) = arm.get(&path, API_STORAGE, &format!("{what}: reading")).await? else {
            return Ok(());
        };
        let containers =
            arm.get(&format!("{path}/blobServices/default/containers"), API_STORAGE, &format!("{what}: listing containers")).await?.unwrap_or_default();
        let names: Vec<String> = containers["value"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str().map(str::to_string)).collect();
        if !names.is_empty() {
            let keys = arm.post(&format!("{path}/listKeys"), API_STORAGE, &format!("{what}: listKeys")).await?;
            let key = keys["keys"][0]["value"].as_str().ok_or_else(|| ProviderError::other(format!("{what}: listKeys returned no key")))?.to_string();
            let endpoint = live["properties"]["primaryEndpoints"]["blob"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("https://{account}.blob.core.windows.net/"));
            for c in &names {
                if crate::blobdata::container_has_blobs(arm.http(), &endpoint, &account, &key, c, &what).await? {
                    return Err(ProviderError::new(
                        ErrorKind::Conflict,
                        format!(
                            "{what}: container {c} holds recordings, so the account was kept; kdeploy does not delete data unless asked. Run `kdeploy destroy --delete-data` to delete the account with its contents, or keep it (`kdeploy state rm {address}`)"
                        ),
                    ));
                }
            }
        }
    }
    arm.delete(&path, API_STORAGE, &format!("{address}: deleting storage account {account}")).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(account: &str, days: i64) -> Value {
        Value::Map(
            [
                ("account_name", Value::string(account)),
                ("container", Value::string("recordings")),
                ("resource_group", Value::Null),
                ("location", Value::string("westeurope")),
                ("retention_days", Value::from_i64(days)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        )
    }

    #[test]
    fn plan_rules() {
        let r = plan("object_storage.rec", &desired("kdrec1", 30), None).unwrap();
        let p = r.planned.as_map().unwrap();
        assert_eq!(p["access_key"], Value::string("kdrec1"));
        assert!(p["secret_key"].is_unknown() && p["endpoint"].is_unknown());
        let mut live = p.clone();
        live.insert("secret_key".into(), Value::string("k"));
        live.insert("endpoint".into(), Value::string("https://kdrec1.blob.core.windows.net/"));
        let live = Value::Map(live);
        assert_eq!(plan("object_storage.rec", &desired("kdrec1", 30), Some(&live)).unwrap().planned, live);
        let shorter = plan("object_storage.rec", &desired("kdrec1", 7), Some(&live)).unwrap();
        assert!(shorter.requires_replace.is_empty());
        assert_eq!(shorter.planned.as_map().unwrap()["secret_key"], Value::string("k"));
        let renamed = plan("object_storage.rec", &desired("kdrec2", 30), Some(&live)).unwrap();
        assert_eq!(renamed.requires_replace, vec![AttrPath::attr("account_name")]);
        assert!(plan("object_storage.rec", &desired("Bad_Name", 30), None).is_err());
        assert!(plan("object_storage.rec", &desired("kdrec1", 0), None).is_err());
    }

    #[test]
    fn retention_rule_round_trips() {
        assert_eq!(retention_of(&policy_body("recordings", 14)), Some(14));
        assert_eq!(retention_of(&json!({})), None);
    }
}
